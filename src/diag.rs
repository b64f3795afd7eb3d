//! Diagnostics: every user-facing error about a `.nn` file is a [`Diag`] with a span, a label and
//! a help line; a [`Report`] bundles all the independent errors found in one file so that miette
//! renders them together, each pointing into the source.

use crate::syntax::ast::Span;
use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};
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
        }
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

/// A single diagnostic attached to its source, so that it renders with the code snippet.
#[derive(Debug)]
struct WithSource<'a> {
    diag: &'a Diag,
    source: &'a NamedSource<String>,
}

impl fmt::Display for WithSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.diag.fmt(f)
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
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.diag.labels()
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(self.source)
    }
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
            };
            let _ = handler.render_report(&mut out, &w);
        }
        if self.diags.len() > 1 {
            out.push_str(&format!(
                "error: aborting due to {} errors\n",
                self.diags.len()
            ));
        }
        out
    }
}
