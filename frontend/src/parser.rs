//! Recursive-descent parser for `.nn` files. The grammar has no nesting beyond flat number
//! lists, so the parser never recurses and its stack use does not depend on the input. It
//! stops at the first error.

use crate::ast::{
    Attr, Binding, Ident, InputItem, IntLit, Item, Model, Number, OutputItem, Spanned, Value,
    WeightsItem, WeightsSpec,
};
use crate::diag::{Error, Span};
use crate::lexer::{Lexer, Token, TokenKind, unescape};

/// Parses a whole file. Errors carry spans but no source; the caller attaches it.
pub fn parse_model(source: &str) -> Result<Model, Error> {
    let mut parser = Parser::new(source)?;
    parser.model()
}

/// `text` cut to a readable length (on a character boundary).
pub fn shorten(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

struct Parser<'src> {
    source: &'src str,
    lexer: Lexer<'src>,
    /// The current token.
    tok: Token,
    /// The token after it, once looked at.
    peeked: Option<Token>,
}

impl<'src> Parser<'src> {
    fn new(source: &'src str) -> Result<Parser<'src>, Error> {
        let mut lexer = Lexer::new(source);
        let tok = lexer.next_token()?;
        Ok(Parser {
            source,
            lexer,
            tok,
            peeked: None,
        })
    }

    fn bump(&mut self) -> Result<Token, Error> {
        let next = match self.peeked.take() {
            Some(t) => t,
            None => self.lexer.next_token()?,
        };
        Ok(std::mem::replace(&mut self.tok, next))
    }

    fn peek(&mut self) -> Result<&Token, Error> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lexer.next_token()?);
        }
        // Just filled above.
        Ok(self.peeked.as_ref().unwrap_or(&self.tok))
    }

    fn text(&self, span: &Span) -> &'src str {
        self.source.get(span.clone()).unwrap_or("")
    }

    fn at(&self, kind: TokenKind) -> bool {
        self.tok.kind == kind
    }

    /// Is the current token the identifier `word`?
    fn at_word(&self, word: &str) -> bool {
        self.tok.kind == TokenKind::Ident && self.text(&self.tok.span) == word
    }

    /// How the current token reads in a "found ..." message.
    fn found(&self) -> String {
        let text = self.text(&self.tok.span);
        match self.tok.kind {
            TokenKind::Eof => "end of file".to_string(),
            TokenKind::Str => format!("string {}", shorten(text)),
            _ => format!("`{}`", shorten(text)),
        }
    }

    /// An "expected X, found Y" error at the current token.
    fn expected(&self, what: &str) -> Error {
        Error::at(
            self.tok.span.clone(),
            format!("expected {what}, found {}", self.found()),
            format!("expected {what}"),
        )
    }

    fn expect(&mut self, kind: TokenKind, what: &str) -> Result<Token, Error> {
        if self.at(kind) {
            self.bump()
        } else {
            Err(self.expected(what))
        }
    }

    fn ident(&mut self, what: &str) -> Result<Ident, Error> {
        let tok = self.expect(TokenKind::Ident, what)?;
        Ok(Ident {
            name: self.text(&tok.span).to_string(),
            span: tok.span,
        })
    }

    fn keyword(&mut self, word: &str) -> Result<Token, Error> {
        if self.at_word(word) {
            self.bump()
        } else {
            Err(self.expected(&format!("`{word}`")))
        }
    }

    fn model(&mut self) -> Result<Model, Error> {
        if self.at(TokenKind::Eof) {
            return Err(Error::at(
                0..0,
                "empty file: expected `model NAME { ... }`",
                "the file has no model",
            ));
        }
        let start = self.keyword("model")?.span.start;
        let name = self.ident("a model name after `model`")?;
        let open = self.expect(TokenKind::LBrace, "`{` after the model name")?;
        let mut items = Vec::new();
        let close = loop {
            match self.tok.kind {
                TokenKind::RBrace => break self.bump()?,
                TokenKind::Eof => {
                    return Err(self
                        .expected(&format!("`}}` to close model `{}`", name.name))
                        .with_label(open.span, "model opened here"));
                }
                _ => items.push(self.item()?),
            }
        };
        if !self.at(TokenKind::Eof) {
            return Err(self.expected("end of file after the model's closing `}`"));
        }
        Ok(Model {
            name,
            items,
            span: start..close.span.end,
        })
    }

    fn item(&mut self) -> Result<Item, Error> {
        if !self.at(TokenKind::Ident) {
            return Err(self.expected("an item (`weights`, `input`, `output` or `NAME = op(...)`)"));
        }
        // Keywords are keywords only when not followed by `=`, so layers may be named `input`.
        if self.peek()?.kind == TokenKind::Eq {
            return self.binding().map(Item::Binding);
        }
        match self.text(&self.tok.span) {
            "weights" => self.weights().map(Item::Weights),
            "input" => self.input().map(Item::Input),
            "output" => self.output().map(Item::Output),
            word => {
                let word = shorten(word);
                let tok = self.bump()?;
                Err(Error::at(
                    self.tok.span.clone(),
                    format!("expected `=` after `{word}`, found {}", self.found()),
                    "expected `=`",
                )
                .with_label(tok.span, "this starts an item")
                .with_help(
                    "items are `weights ...`, `input ...`, `output ...` or `NAME = op(...)`",
                ))
            }
        }
    }

    fn weights(&mut self) -> Result<WeightsItem, Error> {
        let start = self.bump()?.span.start;
        if self.at(TokenKind::Str) {
            let tok = self.bump()?;
            let path = unescape(self.text(&tok.span));
            return Ok(WeightsItem {
                source: WeightsSpec::File {
                    path,
                    span: tok.span.clone(),
                },
                span: start..tok.span.end,
            });
        }
        if !self.at_word("random") {
            return Err(self.expected("a file name string or `random(seed = N)` after `weights`"));
        }
        self.bump()?;
        self.expect(TokenKind::LParen, "`(` after `random`")?;
        self.keyword("seed")?;
        self.expect(TokenKind::Eq, "`=` after `seed`")?;
        let seed_tok = self.expect(TokenKind::Int, "an integer seed")?;
        let seed = self.int(&seed_tok.span)?;
        let close = self.expect(TokenKind::RParen, "`)` after the seed")?;
        Ok(WeightsItem {
            source: WeightsSpec::Random {
                seed,
                span: seed_tok.span,
            },
            span: start..close.span.end,
        })
    }

    fn input(&mut self) -> Result<InputItem, Error> {
        let start = self.bump()?.span.start;
        let name = self.ident("an input name after `input`")?;
        self.expect(TokenKind::Colon, "`:` after the input name")?;
        let dtype = self.ident("the element type `f32`")?;
        if dtype.name != "f32" {
            return Err(Error::at(
                dtype.span,
                format!(
                    "unsupported element type `{}`: inputs are `f32`",
                    shorten(&dtype.name)
                ),
                "expected `f32`",
            ));
        }
        self.expect(TokenKind::LBracket, "`[` after `f32`")?;
        let mut dims = Vec::new();
        let close = loop {
            let tok = self.expect(TokenKind::Int, "an integer dimension")?;
            dims.push(Spanned {
                node: self.int(&tok.span)?,
                span: tok.span,
            });
            match self.tok.kind {
                TokenKind::Comma => {
                    self.bump()?;
                }
                TokenKind::RBracket => break self.bump()?,
                _ => return Err(self.expected("`,` or `]` after a dimension")),
            }
        };
        Ok(InputItem {
            name,
            dtype,
            dims,
            span: start..close.span.end,
        })
    }

    fn output(&mut self) -> Result<OutputItem, Error> {
        let start = self.bump()?.span.start;
        let mut names = vec![self.ident("a name after `output`")?];
        while self.at(TokenKind::Comma) {
            self.bump()?;
            names.push(self.ident("a name after `,`")?);
        }
        let end = names.last().map_or(start, |n| n.span.end);
        Ok(OutputItem {
            names,
            span: start..end,
        })
    }

    fn binding(&mut self) -> Result<Binding, Error> {
        let name = self.ident("a binding name")?;
        self.expect(TokenKind::Eq, "`=`")?;
        let op = self.ident("an operator name after `=`")?;
        let open = self.expect(TokenKind::LParen, "`(` after the operator name")?;
        let mut args: Vec<Ident> = Vec::new();
        let mut attrs: Vec<Attr> = Vec::new();
        let close = loop {
            let what = if attrs.is_empty() {
                "an input name"
            } else {
                "an attribute name"
            };
            let id = self.ident(what)?;
            if self.at(TokenKind::Eq) {
                if args.is_empty() {
                    return Err(Error::at(
                        id.span,
                        format!("expected an input name, found attribute `{}`", id.name),
                        "attributes come after the inputs",
                    )
                    .with_help("every operator takes at least one input: `op(x, key = value)`"));
                }
                self.bump()?;
                let value = self.value()?;
                attrs.push(Attr { key: id, value });
            } else if let Some(first) = attrs.first() {
                return Err(Error::at(
                    id.span.clone(),
                    format!(
                        "input `{}` after attributes: expected `{} = value`",
                        id.name, id.name
                    ),
                    "inputs come before attributes",
                )
                .with_label(first.key.span.clone(), "first attribute here"));
            } else {
                args.push(id);
            }
            match self.tok.kind {
                TokenKind::Comma => {
                    self.bump()?;
                }
                TokenKind::RParen => break self.bump()?,
                _ => return Err(self.expected("`)` or `,` after argument")),
            }
        };
        Ok(Binding {
            span: name.span.start..close.span.end,
            args_span: open.span.start..close.span.end,
            name,
            op,
            args,
            attrs,
        })
    }

    fn value(&mut self) -> Result<Spanned<Value>, Error> {
        let span = self.tok.span.clone();
        let node = match self.tok.kind {
            TokenKind::Int => Value::Int(self.int(&span)?),
            TokenKind::Float => {
                let (v, text) = self.float(&span)?;
                Value::Float(v, text)
            }
            TokenKind::Str => Value::Str(unescape(self.text(&span))),
            TokenKind::Ident => match self.text(&span) {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "inf" => Value::Float(f64::INFINITY, "inf".to_string()),
                word => {
                    return Err(self.expected("a value").with_help(format!(
                        "values are numbers, `true`, `false`, strings or lists; \
                         a name is written as a string: \"{}\"",
                        shorten(word)
                    )));
                }
            },
            TokenKind::LBracket => return self.list(),
            _ => {
                return Err(self.expected("a value (number, `true`, `false`, string or `[...]`)"));
            }
        };
        self.bump()?;
        Ok(Spanned { node, span })
    }

    /// `[ number (, number)* ]`, flat.
    fn list(&mut self) -> Result<Spanned<Value>, Error> {
        let open = self.bump()?;
        let mut items = Vec::new();
        let close = loop {
            let span = self.tok.span.clone();
            let number = match self.tok.kind {
                TokenKind::Int => Number::Int(self.int(&span)?),
                TokenKind::Float => {
                    let (v, text) = self.float(&span)?;
                    Number::Float(v, text)
                }
                TokenKind::Ident if self.text(&span) == "inf" => {
                    Number::Float(f64::INFINITY, "inf".to_string())
                }
                _ => return Err(self.expected("a number")),
            };
            self.bump()?;
            items.push(Spanned { node: number, span });
            match self.tok.kind {
                TokenKind::Comma => {
                    self.bump()?;
                }
                TokenKind::RBracket => break self.bump()?,
                _ => {
                    return Err(self
                        .expected("`,` or `]` in a list")
                        .with_label(open.span, "list opened here"));
                }
            }
        };
        Ok(Spanned {
            node: Value::List(items),
            span: open.span.start..close.span.end,
        })
    }

    fn int(&self, span: &Span) -> Result<IntLit, Error> {
        let text = self.text(span);
        let (negative, digits) = match text.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, text),
        };
        match digits.parse::<u64>() {
            Ok(magnitude) => Ok(IntLit {
                negative,
                magnitude,
            }),
            Err(_) => Err(Error::at(
                span.clone(),
                format!(
                    "integer literal `{}` is too large (the maximum is {})",
                    shorten(text),
                    u64::MAX
                ),
                "does not fit in 64 bits",
            )),
        }
    }

    fn float(&self, span: &Span) -> Result<(f64, String), Error> {
        let text = self.text(span);
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() || text == "-inf" => Ok((v, text.to_string())),
            _ => Err(Error::at(
                span.clone(),
                format!("float literal `{}` is out of range", shorten(text)),
                "too large for a 64-bit float",
            )
            .with_help("write `inf` or `-inf` for infinity")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_items_and_spans() {
        let src = "model m {\n weights random(seed = 3)\n input x: f32[1, 2]\n \
                   input = relu(x)\n y = f(input, a = [1, 2.5], b = true, c = \"s\", d = -inf)\n \
                   output y, input\n}";
        let m = parse_model(src).expect("parses");
        assert_eq!(m.name.name, "m");
        assert_eq!(m.items.len(), 5);
        let Item::Binding(b) = &m.items[2] else {
            panic!("binding expected")
        };
        assert_eq!(b.name.name, "input");
        let Item::Binding(b) = &m.items[3] else {
            panic!("binding expected")
        };
        assert_eq!(&src[b.op.span.clone()], "f");
        assert_eq!(&src[b.args[0].span.clone()], "input");
        assert_eq!(&src[b.attrs[0].key.span.clone()], "a");
        assert_eq!(&src[b.attrs[0].value.span.clone()], "[1, 2.5]");
        assert_eq!(
            b.attrs[3].value.node,
            Value::Float(f64::NEG_INFINITY, "-inf".into())
        );
        assert_eq!(
            &src[b.span.clone()],
            &src[b.name.span.start..b.args_span.end]
        );
    }

    #[test]
    fn argument_error_message() {
        let e = parse_model("model m { y = relu(x foo) }").unwrap_err();
        assert_eq!(
            e.message(),
            "expected `)` or `,` after argument, found `foo`"
        );
    }

    #[test]
    fn shorten_cuts_long_text() {
        let long = "é".repeat(100);
        let s = shorten(&long);
        assert!(s.ends_with("...") && s.chars().count() == 43);
    }
}
