//! Tokens of the `.nn` language, produced lazily by a `logos` lexer so that a parse error
//! stops the work early even on a huge input.

use logos::{FilterResult, Logos};

use crate::diag::{Error, Span};

/// What went wrong while forming a token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LexError {
    /// No token starts here.
    #[default]
    UnexpectedChar,
    UnterminatedComment,
    UnterminatedString,
    /// A `\` in a string not followed by `"` or `\`; the offset is from the token start.
    InvalidEscape(usize),
}

#[derive(Logos, Clone, Copy, Debug, PartialEq, Eq)]
#[logos(error = LexError)]
#[logos(skip r"[ \t\r\n\f]+")]
#[logos(skip(r"(#|//)[^\n]*", allow_greedy = true))]
pub enum TokenKind {
    /// `[A-Za-z_][A-Za-z0-9_]*` followed by `.part`s, e.g. `layer1.0.conv1`. Keywords
    /// (`model`, `true`, `inf`, ...) are identifiers too; the parser gives them meaning.
    #[regex(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")]
    Ident,
    #[regex(r"-?[0-9]+")]
    Int,
    #[regex(r"-?[0-9]+\.[0-9]+([eE][+-]?[0-9]+)?")]
    #[regex(r"-?[0-9]+[eE][+-]?[0-9]+")]
    #[token("-inf")]
    Float,
    /// A string literal, quotes included; escapes are checked here and resolved by the parser.
    #[token("\"", lex_string)]
    Str,
    #[token("/*", lex_block_comment)]
    BlockComment,
    #[token("{")]
    LBrace,
    #[token("}")]
    RBrace,
    #[token("(")]
    LParen,
    #[token(")")]
    RParen,
    #[token("[")]
    LBracket,
    #[token("]")]
    RBracket,
    #[token(",")]
    Comma,
    #[token("=")]
    Eq,
    #[token(":")]
    Colon,
    /// End of input (never produced by logos; added by [`Lexer`]).
    Eof,
}

/// Skips a `/* ... */` comment, or reports it unterminated.
fn lex_block_comment(lex: &mut logos::Lexer<TokenKind>) -> FilterResult<(), LexError> {
    match lex.remainder().find("*/") {
        Some(i) => {
            lex.bump(i + 2);
            FilterResult::Skip
        }
        None => FilterResult::Error(LexError::UnterminatedComment),
    }
}

/// Scans a string literal on one line after its opening quote.
fn lex_string(lex: &mut logos::Lexer<TokenKind>) -> Result<(), LexError> {
    let rest = lex.remainder().as_bytes();
    let mut i = 0;
    while i < rest.len() {
        match rest[i] {
            b'"' => {
                lex.bump(i + 1);
                return Ok(());
            }
            b'\\' => match rest.get(i + 1) {
                Some(b'"' | b'\\') => i += 2,
                Some(b'\n') | None => return Err(LexError::UnterminatedString),
                // Offset from the opening quote to the escaped character.
                Some(_) => return Err(LexError::InvalidEscape(i + 2)),
            },
            b'\n' => return Err(LexError::UnterminatedString),
            _ => i += 1,
        }
    }
    Err(LexError::UnterminatedString)
}

/// A token and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub span: Span,
}

/// Pulls tokens on demand; comments and whitespace are skipped.
pub struct Lexer<'src> {
    inner: logos::Lexer<'src, TokenKind>,
    source: &'src str,
}

impl<'src> Lexer<'src> {
    pub fn new(source: &'src str) -> Lexer<'src> {
        Lexer {
            inner: TokenKind::lexer(source),
            source,
        }
    }

    /// The next token, `Eof` at the end (repeatedly), or a lexical error.
    pub fn next_token(&mut self) -> Result<Token, Error> {
        match self.inner.next() {
            None => {
                // Point just after the last token or comment, where something is missing,
                // rather than past trailing blank lines.
                let end = self
                    .source
                    .trim_end_matches([' ', '\t', '\r', '\n', '\x0c'])
                    .len();
                Ok(Token {
                    kind: TokenKind::Eof,
                    span: end..end,
                })
            }
            Some(Ok(kind)) => Ok(Token {
                kind,
                span: self.inner.span(),
            }),
            Some(Err(e)) => Err(self.error(e, self.inner.span())),
        }
    }

    fn error(&self, e: LexError, span: Span) -> Error {
        let start = span.start;
        match e {
            LexError::UnexpectedChar => {
                let c = self
                    .source
                    .get(start..)
                    .and_then(|s| s.chars().next())
                    .unwrap_or('\u{FFFD}');
                let end = start + c.len_utf8();
                Error::at(
                    start..end,
                    format!("unexpected character {}", describe_char(c)),
                    "not part of any token",
                )
            }
            LexError::UnterminatedComment => Error::at(
                start..start + 2,
                "unterminated block comment",
                "this `/*` has no matching `*/`",
            )
            .with_help("block comments do not nest; close this one with `*/`"),
            LexError::UnterminatedString => Error::at(
                start..start + 1,
                "unterminated string",
                "this string is not closed on its line",
            )
            .with_help("close the string with `\"` before the end of the line"),
            LexError::InvalidEscape(offset) => {
                let at = start + offset;
                let c = self
                    .source
                    .get(at..)
                    .and_then(|s| s.chars().next())
                    .unwrap_or('\u{FFFD}');
                Error::at(
                    at - 1..at + c.len_utf8(),
                    format!("invalid escape `\\{}` in string", c.escape_debug()),
                    "unknown escape",
                )
                .with_help("only `\\\"` and `\\\\` are escapes")
            }
        }
    }
}

/// `` `@` `` for printable characters, `U+0000` style otherwise.
fn describe_char(c: char) -> String {
    if c.is_control() || c == '\u{FFFD}' || c.is_whitespace() {
        format!("U+{:04X}", c as u32)
    } else {
        format!("`{c}`")
    }
}

/// The text of a string literal token (quotes included) with its escapes resolved.
pub fn unescape(literal: &str) -> String {
    let inner = literal
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(literal);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<TokenKind> {
        let mut lexer = Lexer::new(src);
        let mut out = Vec::new();
        loop {
            let t = lexer.next_token().expect("lexes");
            if t.kind == TokenKind::Eof {
                return out;
            }
            out.push(t.kind);
        }
    }

    fn first_error(src: &str) -> Error {
        let mut lexer = Lexer::new(src);
        loop {
            match lexer.next_token() {
                Ok(t) if t.kind == TokenKind::Eof => panic!("no error in {src:?}"),
                Ok(_) => {}
                Err(e) => return e,
            }
        }
    }

    #[test]
    fn tokens() {
        use TokenKind::*;
        assert_eq!(
            kinds("layer1.0.conv1 = f(x, a = [1, -2], b = 1e-5, c = -inf, d = \"s\\\"\") # c"),
            vec![
                Ident, Eq, Ident, LParen, Ident, Comma, Ident, Eq, LBracket, Int, Comma, Int,
                RBracket, Comma, Ident, Eq, Float, Comma, Ident, Eq, Float, Comma, Ident, Eq, Str,
                RParen
            ]
        );
        assert_eq!(
            kinds("1.5 2.5E+3 3e7 inf // x\n /* a * b\n */ :"),
            vec![Float, Float, Float, Ident, Colon]
        );
    }

    #[test]
    fn unescape_resolves_escapes() {
        assert_eq!(unescape(r#""a\"b\\c""#), "a\"b\\c");
    }

    #[test]
    fn errors() {
        let e = first_error("a /* never closed");
        assert_eq!(e.message(), "unterminated block comment");
        assert_eq!(e.primary_label().map(|l| l.span.clone()), Some(2..4));
        let e = first_error("a \"open\nb");
        assert_eq!(e.message(), "unterminated string");
        let e = first_error("a @ b");
        assert_eq!(e.message(), "unexpected character `@`");
        let e = first_error("a \u{0} b");
        assert_eq!(e.message(), "unexpected character U+0000");
        let e = first_error("\"bad \\n escape\"");
        assert_eq!(e.message(), "invalid escape `\\n` in string");
        // `a.` is not an identifier: the lexer backs off to `a` and stops at the dot.
        let e = first_error("a. b");
        assert_eq!(e.message(), "unexpected character `.`");
        assert_eq!(e.primary_label().map(|l| l.span.clone()), Some(1..2));
        let e = first_error("1.x");
        assert_eq!(e.primary_label().map(|l| l.span.clone()), Some(1..2));
        let e = first_error("x é");
        assert_eq!(e.primary_label().map(|l| l.span.clone()), Some(2..4));
    }
}
