//! Warnings for what a model binds and its output does not depend on: an input, a value computed
//! and then forgotten (or bound again before it is read), and a value read only by such values.
//! Layers applied only there take no part in the output, so their parameters would be saved but
//! never learn, where PyTorch would leave an unused module out of its forward pass altogether.
//! A name that starts with `_` is kept on purpose: it is not reported, nor what it reads.
//!
//! Two passes over the statements: forward, each name read is resolved to the binding it sees
//! (a name may be bound again); backward from `return`, a binding is live when a live statement
//! reads it.

use crate::diag::Diag;
use crate::syntax::ast::{Expr, ExprKind, Ident, Model, Stmt};
use std::collections::HashMap;

/// The warnings for `model`'s inputs and bindings that do not reach its output, in source order.
pub fn unused(model: &Model) -> Vec<Diag> {
    let mut scan = Scan::default();
    for input in &model.inputs {
        scan.bind(&input.name, Kind::Input, Vec::new());
    }
    let mut live = Vec::new();
    for s in &model.body {
        match s {
            Stmt::Let { name, value, .. } => {
                let reads = scan.resolve(value);
                scan.bind(name, Kind::Let, reads);
            }
            Stmt::Return { value, .. } => live = scan.resolve(value),
        }
    }
    // Backward: a binding is live when `return`, a live binding or one kept on purpose (`_x`)
    // reads it; each reads only bindings before it, so one pass from the end suffices.
    let bindings = scan.bindings;
    let mut is_live: Vec<bool> = bindings
        .iter()
        .map(|b| b.name.name.starts_with('_'))
        .collect();
    for i in live {
        is_live[i] = true;
    }
    for i in (0..bindings.len()).rev() {
        if is_live[i] {
            for &r in &bindings[i].reads {
                is_live[r] = true;
            }
        }
    }
    let mut out: Vec<Diag> = bindings
        .iter()
        .zip(is_live)
        .filter(|(_, live)| !live)
        .map(|(b, _)| warn(b))
        .collect();
    out.sort_by_key(|d| d.span.start);
    out
}

/// The forward pass: every binding in order, and the one each name refers to now.
#[derive(Default)]
struct Scan<'a> {
    bindings: Vec<Binding<'a>>,
    current: HashMap<&'a str, usize>,
}

impl<'a> Scan<'a> {
    fn bind(&mut self, name: &'a Ident, kind: Kind, reads: Vec<usize>) {
        self.bindings.push(Binding {
            name,
            kind,
            reads,
            read: false,
            replaced_by: None,
        });
        if let Some(old) = self.current.insert(&name.name, self.bindings.len() - 1) {
            self.bindings[old].replaced_by = Some(name);
        }
    }

    /// The bindings `e` reads, marked as read.
    fn resolve(&mut self, e: &'a Expr) -> Vec<usize> {
        let mut names = Vec::new();
        reads(e, &mut names);
        let ids: Vec<usize> = names
            .iter()
            .filter_map(|n| self.current.get(n).copied())
            .collect();
        for &i in &ids {
            self.bindings[i].read = true;
        }
        ids
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Input,
    Let,
}

struct Binding<'a> {
    name: &'a Ident,
    kind: Kind,
    /// The bindings its value reads.
    reads: Vec<usize>,
    /// Whether any statement reads it.
    read: bool,
    /// The binding of the same name that replaced it.
    replaced_by: Option<&'a Ident>,
}

/// The names `e` reads. The stage of a pipe (`x |> relu`, `x |> Encoder`) names a layer or a
/// model, not a value, but its arguments are read.
fn reads<'a>(e: &'a Expr, out: &mut Vec<&'a str>) {
    match &e.kind {
        ExprKind::Path(p) if p.len() == 1 => out.push(&p[0].name),
        ExprKind::Pipe { input, stage, .. } => {
            reads(input, out);
            if let ExprKind::Call { args, .. } = &stage.kind {
                args.iter().for_each(|a| reads(&a.value, out));
            }
        }
        ExprKind::Call { args, .. } => args.iter().for_each(|a| reads(&a.value, out)),
        ExprKind::Binary { lhs, rhs, .. } => {
            reads(lhs, out);
            reads(rhs, out);
        }
        ExprKind::Neg(a) => reads(a, out),
        ExprKind::List(items) => items.iter().for_each(|i| reads(i, out)),
        ExprKind::Map(entries) => entries.iter().for_each(|(_, v)| reads(v, out)),
        ExprKind::Every { count, .. } => reads(count, out),
        ExprKind::Path(_) | ExprKind::Number { .. } | ExprKind::Str(_) => {}
    }
}

/// The warning for `b`, which does not reach the output.
fn warn(b: &Binding<'_>) -> Diag {
    let name = &b.name.name;
    let (message, label) = match (b.kind, b.read, b.replaced_by) {
        (Kind::Input, false, _) => (
            format!("input `{name}` is never used"),
            "the output does not depend on it",
        ),
        (Kind::Input, true, _) => (
            format!("input `{name}` does not reach the output"),
            "read only by values the output does not use",
        ),
        (Kind::Let, false, None) => (
            format!("`{name}` is computed but never used"),
            "never read after this",
        ),
        (Kind::Let, false, Some(_)) => (
            format!("`{name}` is computed but never used"),
            "replaced before it is read",
        ),
        (Kind::Let, true, _) => (
            format!("`{name}` does not reach the output"),
            "read only by values the output does not use",
        ),
    };
    let mut d = Diag::new("nnc::unused", message, b.name.span, label);
    if let (false, Some(new)) = (b.read, b.replaced_by) {
        d = d.also(new.span, "bound again here");
    }
    d.help(match b.kind {
        Kind::Input => format!(
            "compute the output from `{name}` (e.g. `return {name} |> dense(10)`), or name it \
             `_{name}` if it is meant to be ignored"
        ),
        Kind::Let => format!(
            "layers applied only here take no part in the output, so their parameters would \
             never learn; use `{name}`, remove this line, or name it `_{name}` to keep it"
        ),
    })
    .warning()
}
