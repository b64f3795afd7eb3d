//! Warnings for names a model binds and never reads: a model input its output does not depend
//! on, a value computed and then forgotten (or bound again before it is read). Layers applied
//! only there take no part in the output, so their parameters would be saved but never learn,
//! where PyTorch would leave an unused module out of its forward pass altogether. A name that
//! starts with `_` is kept on purpose and not reported.

use crate::diag::Diag;
use crate::syntax::ast::{Expr, ExprKind, Ident, Model, Stmt};
use std::collections::HashMap;

/// The warnings for `model`'s unread inputs and bindings, in source order.
pub fn unused(model: &Model) -> Vec<Diag> {
    let mut names = Names::default();
    for input in &model.inputs {
        names.bind(&input.name, Kind::Input);
    }
    for s in &model.body {
        match s {
            Stmt::Let { name, value, .. } => {
                names.read(value);
                names.bind(name, Kind::Let);
            }
            Stmt::Return { value, .. } => names.read(value),
        }
    }
    let mut out = names.unread;
    out.extend(names.live.into_values().filter_map(|b| warn(b, None)));
    out.sort_by_key(|d| d.span.start);
    out
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Input,
    Let,
}

struct Binding<'a> {
    name: &'a Ident,
    kind: Kind,
    read: bool,
}

#[derive(Default)]
struct Names<'a> {
    /// The binding each name refers to now.
    live: HashMap<&'a str, Binding<'a>>,
    /// Warnings for bindings already replaced unread.
    unread: Vec<Diag>,
}

impl<'a> Names<'a> {
    fn bind(&mut self, name: &'a Ident, kind: Kind) {
        let new = Binding {
            name,
            kind,
            read: false,
        };
        if let Some(old) = self.live.insert(&name.name, new) {
            self.unread.extend(warn(old, Some(name)));
        }
    }

    /// Marks every name `e` reads. The stage of a pipe (`x |> relu`, `x |> Encoder`) names a
    /// layer or a model, not a value, but its arguments are read.
    fn read(&mut self, e: &'a Expr) {
        match &e.kind {
            ExprKind::Path(p) if p.len() == 1 => {
                if let Some(b) = self.live.get_mut(p[0].name.as_str()) {
                    b.read = true;
                }
            }
            ExprKind::Pipe { input, stage, .. } => {
                self.read(input);
                if let ExprKind::Call { args, .. } = &stage.kind {
                    for a in args {
                        self.read(&a.value);
                    }
                }
            }
            ExprKind::Call { args, .. } => {
                for a in args {
                    self.read(&a.value);
                }
            }
            ExprKind::Binary { lhs, rhs, .. } => {
                self.read(lhs);
                self.read(rhs);
            }
            ExprKind::Neg(a) => self.read(a),
            ExprKind::List(items) => {
                for i in items {
                    self.read(i);
                }
            }
            ExprKind::Map(entries) => {
                for (_, v) in entries {
                    self.read(v);
                }
            }
            ExprKind::Every { count, .. } => self.read(count),
            ExprKind::Path(_) | ExprKind::Number { .. } | ExprKind::Str(_) => {}
        }
    }
}

/// The warning for `b` if it was never read (and is not named `_…`); `replaced_by` is the
/// binding of the same name that replaced it.
fn warn(b: Binding<'_>, replaced_by: Option<&Ident>) -> Option<Diag> {
    let name = &b.name.name;
    if b.read || name.starts_with('_') {
        return None;
    }
    let d = match b.kind {
        Kind::Input => Diag::new(
            "nnc::unused",
            format!("input `{name}` is never used"),
            b.name.span,
            "the output does not depend on it",
        )
        .help(format!(
            "compute the output from `{name}` (e.g. `return {name} |> dense(10)`), \
             or name it `_{name}` if it is meant to be ignored"
        )),
        Kind::Let => Diag::new(
            "nnc::unused",
            format!("`{name}` is computed but never used"),
            b.name.span,
            if replaced_by.is_some() {
                "replaced before it is read"
            } else {
                "never read after this"
            },
        )
        .help(format!(
            "layers applied only here take no part in the output, so their parameters would \
             never learn; use `{name}`, remove this line, or name it `_{name}` to keep it"
        )),
    };
    Some(
        match replaced_by {
            Some(new) => d.also(new.span, "bound again here"),
            None => d,
        }
        .warning(),
    )
}
