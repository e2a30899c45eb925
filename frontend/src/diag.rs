//! The frontend's single error type: a message, optional labelled spans in the model source,
//! optional help, rendered with miette.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use miette::{
    Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError,
    MietteSpanContents, SourceCode, SourceSpan, SpanContents,
};

/// A byte range in the model source.
pub type Span = Range<usize>;

/// A labelled span: where, and what to say there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    pub span: Span,
    pub text: String,
}

/// Everything that can go wrong while loading a model: I/O, syntax, names, attributes,
/// shapes, weights. Errors found in the source carry its text so they render on their own.
#[derive(Clone)]
pub struct Error {
    // Boxed: keeps `Result<_, Error>` small on the happy path.
    inner: Box<Inner>,
}

#[derive(Clone)]
struct Inner {
    message: String,
    primary: Option<Label>,
    secondary: Vec<Label>,
    help: Option<String>,
    source: Option<ModelSource>,
    /// 1-based line and column (in characters) of the primary span, once the source is known.
    line_col: Option<(usize, usize)>,
}

impl Error {
    /// An error without a location in the source (e.g. the model file cannot be read).
    pub fn new(message: impl Into<String>) -> Error {
        Error {
            inner: Box::new(Inner {
                message: message.into(),
                primary: None,
                secondary: Vec::new(),
                help: None,
                source: None,
                line_col: None,
            }),
        }
    }

    /// An error at `span`, with `label` written under it.
    pub fn at(span: Span, message: impl Into<String>, label: impl Into<String>) -> Error {
        let mut e = Error::new(message);
        e.inner.primary = Some(Label {
            span,
            text: label.into(),
        });
        e
    }

    /// Adds a secondary label (e.g. "first defined here").
    pub fn with_label(mut self, span: Span, text: impl Into<String>) -> Error {
        self.inner.secondary.push(Label {
            span,
            text: text.into(),
        });
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Error {
        self.inner.help = Some(help.into());
        self
    }

    /// Attaches the source text the spans refer to; spans are clamped into it so rendering
    /// can never go out of bounds.
    pub(crate) fn with_source(mut self, file_name: &str, source: Arc<str>) -> Error {
        let clamp = |span: &mut Span| {
            let len = source.len();
            let mut start = span.start.min(len);
            while !source.is_char_boundary(start) {
                start -= 1;
            }
            let mut end = span.end.clamp(start, len);
            while !source.is_char_boundary(end) {
                end += 1;
            }
            *span = start..end;
        };
        if let Some(p) = &mut self.inner.primary {
            clamp(&mut p.span);
        }
        for l in &mut self.inner.secondary {
            clamp(&mut l.span);
        }
        self.inner.line_col = self
            .inner
            .primary
            .as_ref()
            .map(|p| line_col(&source, p.span.start));
        self.inner.source = Some(ModelSource {
            name: file_name.to_string(),
            text: source,
        });
        self
    }

    /// The one-line message, without location.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    pub fn help_text(&self) -> Option<&str> {
        self.inner.help.as_deref()
    }

    /// The primary label: its span and text.
    pub fn primary_label(&self) -> Option<&Label> {
        self.inner.primary.as_ref()
    }

    pub fn secondary_labels(&self) -> &[Label] {
        &self.inner.secondary
    }

    /// `(file, line, column)` of the primary span, 1-based, column counted in characters.
    pub fn location(&self) -> Option<(String, usize, usize)> {
        let (line, col) = self.inner.line_col?;
        let file = self.inner.source.as_ref()?.name.clone();
        Some((file, line, col))
    }

    /// The full report: message, `file:line:col`, the source lines with the labels
    /// underlined, and the help.
    pub fn render(&self, color: bool) -> String {
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme)
            .with_links(false)
            .with_width(100);
        let mut out = String::new();
        if handler.render_report(&mut out, self).is_err() {
            // Rendering only fails on a formatter error; fall back to the plain form.
            out = self.plain();
        }
        out
    }

    /// `file:line:col: message` (or just the message without a location).
    pub fn plain(&self) -> String {
        match self.location() {
            Some((file, line, col)) => format!("{file}:{line}:{col}: {}", self.inner.message),
            None => self.inner.message.clone(),
        }
    }
}

/// 1-based line and character column of byte `offset` in `text`. Lines end at `\n`, `\r\n`
/// or a lone `\r`, as miette counts them.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text.as_bytes()[..offset];
    let mut line = 1;
    let mut line_start = 0;
    for (i, &b) in before.iter().enumerate() {
        let breaks = b == b'\n' || (b == b'\r' && text.as_bytes().get(i + 1) != Some(&b'\n'));
        if breaks {
            line += 1;
            line_start = i + 1;
        }
    }
    let col = 1 + text
        .get(line_start..offset)
        .map_or(0, |s| s.chars().count());
    (line, col)
}

/// The model text under its file name, for miette. Unlike `miette::NamedSource` it reports
/// columns in characters, so the rendered `file:line:col` matches [`Error::location`].
#[derive(Clone)]
struct ModelSource {
    name: String,
    text: Arc<str>,
}

impl SourceCode for ModelSource {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let inner = self
            .text
            .read_span(span, context_lines_before, context_lines_after)?;
        // Without context lines the contents start at the span, and the column is the span's.
        let column = if context_lines_before == 0 {
            line_col(&self.text, span.offset()).1 - 1
        } else {
            inner.column()
        };
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.clone(),
            inner.data(),
            *inner.span(),
            inner.line(),
            column,
            inner.line_count(),
        )))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.plain())
    }
}

impl std::error::Error for Error {}

impl Diagnostic for Error {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.inner
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.inner.source.as_ref().map(|s| s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        // Labels only make sense against the source they point into.
        self.inner.source.as_ref()?;
        let primary = self.inner.primary.as_ref()?;
        let first = LabeledSpan::new_primary_with_span(
            non_empty(&primary.text),
            primary.span.start..primary.span.end,
        );
        let rest = self
            .inner
            .secondary
            .iter()
            .map(|l| LabeledSpan::new_with_span(non_empty(&l.text), l.span.start..l.span.end));
        Some(Box::new(std::iter::once(first).chain(rest)))
    }
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        let text = "ab\nçé x\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 3), (2, 1));
        // `x` is after two 2-byte characters and a space.
        assert_eq!(line_col(text, 8), (2, 4));
        assert_eq!(line_col(text, 1000), (3, 1));
    }

    #[test]
    fn render_shows_location_and_line() {
        let src: Arc<str> = Arc::from("model m {\n  oops\n}\n");
        let e = Error::at(12..16, "bad thing", "here").with_source("m.nn", src);
        assert_eq!(e.location(), Some(("m.nn".to_string(), 2, 3)));
        let r = e.render(false);
        assert!(r.contains("m.nn:2:3"), "{r}");
        assert!(r.contains("  oops"), "{r}");
        assert!(r.contains("bad thing"), "{r}");
    }

    #[test]
    fn rendered_column_counts_characters() {
        let src: Arc<str> = Arc::from("a\r\n/* éé */ q\rz");
        let at = src.find('q').unwrap();
        let e = Error::at(at..at + 1, "bad", "here").with_source("m.nn", src.clone());
        assert_eq!(e.location(), Some(("m.nn".to_string(), 2, 10)));
        assert!(e.render(false).contains("m.nn:2:10"), "{}", e.render(false));
        // A lone `\r` ends a line, as in miette.
        let e = Error::at(src.len() - 1..src.len(), "bad", "z").with_source("m.nn", src);
        assert_eq!(e.location(), Some(("m.nn".to_string(), 3, 1)));
        assert!(e.render(false).contains("m.nn:3:1"), "{}", e.render(false));
    }

    #[test]
    fn error_without_source_renders() {
        let e = Error::new("cannot read `x.nn`");
        assert_eq!(e.location(), None);
        assert!(e.render(false).contains("cannot read"));
    }
}
