//! Diagnostics: every user-facing error about a `.nn` file is a [`Diag`] with a span, a label and
//! a help line; a [`Report`] bundles all the independent errors found in one file so that miette
//! renders them together, each pointing into the source.

use crate::syntax::ast::Span;
use miette::{Diagnostic, LabeledSpan, NamedSource, Severity, SourceCode};
use std::fmt;
use std::sync::Arc;

/// One error at one place in the file.
#[derive(Clone, Debug, PartialEq)]
pub struct Diag {
    /// The headline, e.g. "dense expects 3136 inputs, found 2304".
    pub message: String,
    pub span: Span,
    /// Text under the span, e.g. "expected 3136 = 64×7×7".
    pub label: String,
    /// A hint on how to fix it.
    pub help: Option<String>,
    /// A stable code such as `nnc::shape`, `nnc::syntax`, `nnc::name`.
    pub code: &'static str,
    /// Further spans with their labels (e.g. "first defined here").
    pub related: Vec<(Span, String)>,
    /// Whether this is only a warning (the file still checks, e.g. a value never used).
    pub warning: bool,
}

impl Diag {
    pub fn new(
        code: &'static str,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Diag {
        Diag {
            message: message.into(),
            span,
            label: label.into(),
            help: None,
            code,
            related: Vec::new(),
            warning: false,
        }
    }
    /// This diagnostic as a warning: shown, but the file still checks.
    pub fn warning(mut self) -> Diag {
        self.warning = true;
        self
    }
    pub fn help(mut self, help: impl Into<String>) -> Diag {
        self.help = Some(help.into());
        self
    }
    pub fn also(mut self, span: Span, label: impl Into<String>) -> Diag {
        self.related.push((span, label.into()));
        self
    }
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diag {}

impl Diagnostic for Diag {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn severity(&self) -> Option<Severity> {
        Some(if self.warning {
            Severity::Warning
        } else {
            Severity::Error
        })
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let main = LabeledSpan::new_primary_with_span(Some(self.label.clone()), self.span);
        let rest = self
            .related
            .iter()
            .map(|(s, l)| LabeledSpan::new_with_span(Some(l.clone()), *s));
        Some(Box::new(std::iter::once(main).chain(rest)))
    }
}

/// All the errors of one file, with its name and text, ready for miette to render.
#[derive(Debug)]
pub struct Report {
    pub source: Arc<NamedSource<String>>,
    pub diags: Vec<Diag>,
}

impl Report {
    pub fn new(file_name: &str, text: &str, diags: Vec<Diag>) -> Report {
        Report {
            source: Arc::new(NamedSource::new(file_name, text.to_string())),
            diags,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.diags.len() {
            1 => write!(f, "{}", self.diags[0].message),
            n => write!(f, "{n} errors"),
        }
    }
}

impl std::error::Error for Report {}

/// Columns beyond which a diagnostic is printed with its line and column instead of a snippet.
/// miette pads a label with a formatting width, which Rust caps at 65,535 (a label further right
/// panics); no line a person writes comes near this, and a snippet that wide would not be read.
const MAX_SNIPPET_COLUMN: usize = 10_000;

/// A single diagnostic attached to its source, so that it renders with the code snippet, or,
/// where a span reaches past [`MAX_SNIPPET_COLUMN`], with its position (`at`) in the headline.
#[derive(Debug)]
struct WithSource<'a> {
    diag: &'a Diag,
    source: &'a NamedSource<String>,
    at: Option<(usize, usize)>,
}

impl fmt::Display for WithSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.diag.fmt(f)?;
        match self.at {
            Some((line, col)) => write!(f, " (at {}:{line}:{col})", self.source.name()),
            None => Ok(()),
        }
    }
}
impl std::error::Error for WithSource<'_> {}
impl Diagnostic for WithSource<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diag.code()
    }
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diag.help()
    }
    fn severity(&self) -> Option<Severity> {
        self.diag.severity()
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.at.is_none().then(|| self.diag.labels()).flatten()
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.at.is_none().then_some(self.source as &dyn SourceCode)
    }
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..text.floor_char_boundary(offset.min(text.len()))];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    (line, before[line_start..].chars().count() + 1)
}

/// Where `d` is to be shown without a snippet: the position of its main span, if any of its
/// spans ends past [`MAX_SNIPPET_COLUMN`].
fn too_wide(d: &Diag, text: &str) -> Option<(usize, usize)> {
    let spans = std::iter::once(d.span).chain(d.related.iter().map(|(s, _)| *s));
    spans
        .map(|s| line_col(text, s.end).1)
        .any(|col| col > MAX_SNIPPET_COLUMN)
        .then(|| line_col(text, d.span.start))
}

impl Report {
    /// Renders every diagnostic, one after the other, with miette's graphical handler.
    /// `color: false` gives plain text (used by the tests/ui expectations).
    pub fn render(&self, color: bool) -> String {
        use miette::{GraphicalReportHandler, GraphicalTheme};
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme).with_wrap_lines(false);
        let mut out = String::new();
        for d in &self.diags {
            let w = WithSource {
                diag: d,
                source: &self.source,
                at: too_wide(d, self.source.inner()),
            };
            let _ = handler.render_report(&mut out, &w);
        }
        let errors = self.diags.iter().filter(|d| !d.warning).count();
        if errors > 1 {
            out.push_str(&format!("error: aborting due to {errors} errors\n"));
        }
        out
    }
}

/// An error that points at no place in a `.nn` file (a data file, a checkpoint, a step that
/// went non-finite), rendered like the diagnostics: `× message`, one line per line of the
/// message.
pub fn render_message(message: &str, color: bool) -> String {
    #[derive(Debug)]
    struct Message<'a>(&'a str);
    impl fmt::Display for Message<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Message<'_> {}
    impl Diagnostic for Message<'_> {}
    use miette::{GraphicalReportHandler, GraphicalTheme};
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let mut out = String::new();
    let handler = GraphicalReportHandler::new_themed(theme).with_wrap_lines(false);
    match handler.render_report(&mut out, &Message(message)) {
        Ok(()) => out,
        Err(_) => format!("error: {message}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_far_right_on_its_line_is_shown_by_position() {
        let text = format!(
            "model A(x: [2]) -> [2] {{\n  return {}y\n}}\n",
            " ".repeat(70_000)
        );
        let at = text.find('y').unwrap();
        let d = Diag::new(
            "nnc::name",
            "unknown name `y`",
            Span::new(at, at + 1),
            "here",
        );
        let out = Report::new("t.nn", &text, vec![d.clone()]).render(false);
        assert!(out.contains("unknown name `y` (at t.nn:2:70010)"), "{out}");
        assert!(!out.contains("here"), "no snippet: {out}");
        // Near the start of a line the snippet and its label are drawn as usual.
        let text = "model A(x: [2]) -> [2] {\n  return y\n}\n";
        let at = text.find('y').unwrap();
        let d = Diag {
            span: Span::new(at, at + 1),
            ..d
        };
        let out = Report::new("t.nn", text, vec![d]).render(false);
        assert!(
            out.contains("unknown name `y`\n") && out.contains("here"),
            "{out}"
        );
        assert!(out.contains("t.nn:2:10"), "{out}");
    }

    #[test]
    fn a_message_without_a_place_renders_line_by_line() {
        let out = render_message(
            "run `M`, step 3: the loss is NaN\nthe gradient of `w` is not finite",
            false,
        );
        assert_eq!(
            out.trim_end(),
            "  × run `M`, step 3: the loss is NaN\n  │ the gradient of `w` is not finite"
        );
    }
}
