//! Binding call arguments (`conv2d(32, kernel: 3, padding: 1)`) to a signature, with errors for
//! unknown, repeated, missing and surplus arguments.

use super::names::did_you_mean;
use crate::diag::Diag;
use crate::syntax::ast::{Arg, Expr, Ident, Span};

/// What a callee accepts.
pub struct Sig {
    /// The accepted positional forms, shortest first: `dense` has `[["out"], ["in", "out"]]`.
    pub forms: &'static [&'static [&'static str]],
    /// Arguments that can only be named.
    pub named: &'static [&'static str],
    /// Arguments that must be given (positionally or by name).
    pub required: &'static [&'static str],
    /// How to write a call, for help lines: `conv2d(out, kernel: k)`.
    pub usage: &'static str,
}

/// Arguments bound to parameter names.
pub struct Bound<'a> {
    pub span: Span,
    args: Vec<(&'static str, &'a Expr)>,
}

impl<'a> Bound<'a> {
    pub fn get(&self, name: &str) -> Option<&'a Expr> {
        self.args.iter().find(|(n, _)| *n == name).map(|(_, e)| *e)
    }
}

/// Binds `args` of a call to `callee` (spanning `span`) to `sig`; all problems are reported.
pub fn bind<'a>(
    callee: &Ident,
    args: &'a [Arg],
    span: Span,
    sig: &Sig,
) -> Result<Bound<'a>, Vec<Diag>> {
    let mut diags = Vec::new();
    let positional: Vec<&Expr> = args
        .iter()
        .filter(|a| a.name.is_none())
        .map(|a| &a.value)
        .collect();
    let max = sig.forms.iter().map(|f| f.len()).max().unwrap_or(0);
    let mut bound: Vec<(&'static str, &'a Expr)> = Vec::new();
    if positional.len() > max {
        let extra = positional[max]
            .span
            .to(positional[positional.len() - 1].span);
        let takes = match sig
            .forms
            .iter()
            .map(|f| f.len())
            .collect::<Vec<_>>()
            .as_slice()
        {
            [] | [0] => "no positional arguments".to_string(),
            [n] => super::names::plural(*n, "positional argument"),
            ns => format!(
                "{} positional arguments",
                ns.iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        };
        diags.push(
            Diag::new(
                "nnc::arg",
                format!("{} takes {takes}, found {}", callee.name, positional.len()),
                extra,
                if positional.len() - max == 1 {
                    "unexpected argument"
                } else {
                    "unexpected arguments"
                },
            )
            .help(format!("write it as {}", sig.usage)),
        );
    } else {
        let names: &[&'static str] = sig
            .forms
            .iter()
            .find(|f| f.len() >= positional.len())
            .copied()
            .unwrap_or(&[]);
        for (n, e) in names.iter().zip(&positional) {
            bound.push((n, e));
        }
    }
    let all: Vec<&'static str> = sig
        .forms
        .iter()
        .flat_map(|f| f.iter().copied())
        .chain(sig.named.iter().copied())
        .collect();
    for a in args {
        let Some(name) = &a.name else { continue };
        let Some(known) = all.iter().find(|n| **n == name.name) else {
            let mut d = Diag::new(
                "nnc::arg",
                format!("{} has no argument `{}`", callee.name, name.name),
                name.span,
                "unknown argument",
            );
            let hint = did_you_mean(&name.name, all.iter().copied());
            d = d.help(match hint {
                Some(h) => format!("{h} ({} is written {})", callee.name, sig.usage),
                None => format!("{} is written {}", callee.name, sig.usage),
            });
            diags.push(d);
            continue;
        };
        if let Some((_, prev)) = bound.iter().find(|(n, _)| n == known) {
            diags.push(
                Diag::new(
                    "nnc::arg",
                    format!("argument `{known}` is given twice"),
                    name.span,
                    "given again here",
                )
                .also(prev.span, "first given here"),
            );
            continue;
        }
        bound.push((known, &a.value));
    }
    if diags.is_empty() {
        let missing: Vec<&str> = sig
            .required
            .iter()
            .copied()
            .filter(|r| !bound.iter().any(|(n, _)| n == r))
            .collect();
        if !missing.is_empty() {
            let list = missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(" and ");
            diags.push(
                Diag::new(
                    "nnc::arg",
                    format!("{} needs {list}", callee.name),
                    span,
                    format!("missing {list}"),
                )
                .help(format!("write it as {}", sig.usage)),
            );
        }
    }
    if diags.is_empty() {
        Ok(Bound { span, args: bound })
    } else {
        Err(diags)
    }
}
