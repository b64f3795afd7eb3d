//! The table of models: declared input types, which models use which, cycles, and the order in
//! which to check them (a sub-model before the models that use it).

use super::consts;
use crate::diag::Diag;
use crate::ir::{DType, Type};
use crate::syntax::ast::{Expr, ExprKind, Model, Span, Stmt, TypeExpr};
use std::collections::HashMap;

/// A model's interface, once its body has been checked.
#[derive(Clone, Debug)]
pub struct Signature {
    pub input_name: String,
    pub input: Type,
    /// `None` when the body has errors (users of the model then stay silent).
    pub output: Option<Type>,
    /// The vocabulary of its first `embedding` / `one_hot`, with that layer's span.
    pub vocab: Option<(usize, Span)>,
}

/// Whether `e`, first in a declared shape, is a batch axis written as Keras (`None`), as a
/// letter (`B`, `N`, `batch`) or as PyTorch's `-1`.
fn batch_axis(e: &Expr) -> bool {
    match e.as_name().map(|i| i.name.as_str()) {
        Some(n) => matches!(n, "None" | "B" | "N" | "batch" | "batch_size"),
        None => consts::number(e).is_ok_and(|v| v == -1.0),
    }
}

/// A declared tensor type, batched: `[1, 28, 28]` → `f32[B,1,28,28]`.
pub fn tensor_type(t: &TypeExpr) -> Result<Type, Vec<Diag>> {
    let mut diags = Vec::new();
    let dtype = match t.dtype.as_ref().map(|d| d.name.as_str()) {
        None | Some("f32") => DType::F32,
        Some("i32") => DType::I32,
        Some(other) => {
            let d = t.dtype.as_ref().map(|d| d.span).unwrap_or(t.span);
            diags.push(
                Diag::new("nnc::name", format!("unknown element type `{other}`"), d, "not a type")
                    .help("inputs are `[dims]` or `f32[dims]` (values) or `i32[dims]` (token or class ids)"),
            );
            DType::F32
        }
    };
    let mut dims = Vec::new();
    // `None` past u128 (a few dimensions near 2^31 overflow u64: the sum said 2^64 − 1).
    let mut total: Option<u128> = Some(1);
    for (i, e) in t.dims.iter().enumerate() {
        match consts::size(e, "a dimension") {
            Ok(d) => {
                total = total.and_then(|t| t.checked_mul(d as u128));
                dims.push(d);
            }
            // `[None, 784]`, `[B, 784]`, `[-1, 784]`: a batch axis written out.
            Err(d) if i == 0 && t.dims.len() > 1 && batch_axis(e) => {
                let rest: Result<Vec<String>, _> = t.dims[1..]
                    .iter()
                    .map(|e| consts::size(e, "a dimension").map(|n| n.to_string()))
                    .collect();
                diags.push(d.help(match rest {
                    Ok(rest) => format!(
                        "the batch axis is implicit: declare one sample, `[{}]`",
                        rest.join(", ")
                    ),
                    Err(_) => "the batch axis is implicit: declare the shape of one sample".into(),
                }))
            }
            Err(d) => diags.push(d),
        }
    }
    if diags.is_empty() && total.is_none_or(|t| t > consts::MAX_ELEMENTS as u128) {
        let total = total.map_or("at least 2^128".into(), |t| t.to_string());
        diags.push(
            Diag::new(
                "nnc::shape",
                format!("a sample of this type has {total} elements"),
                t.span,
                "more than 2^31 elements",
            )
            .help("nnc supports tensors of up to 2^31 elements"),
        );
    }
    if diags.is_empty() {
        Ok(Type {
            dtype,
            batched: true,
            dims,
        })
    } else {
        Err(diags)
    }
}

/// Names of models used as stages in `e`, with the span of each use.
pub fn uses<'a>(e: &'a Expr, models: &HashMap<&str, &Model>, out: &mut Vec<(&'a str, Span)>) {
    match &e.kind {
        ExprKind::Pipe { input, stage, .. } => {
            uses(input, models, out);
            let name = match &stage.kind {
                ExprKind::Call { callee, .. } => Some(callee),
                _ => stage.as_name(),
            };
            if let Some(n) = name.filter(|n| models.contains_key(n.name.as_str())) {
                out.push((n.name.as_str(), n.span));
            }
            uses(stage, models, out);
        }
        ExprKind::Binary { lhs, rhs, .. } => {
            uses(lhs, models, out);
            uses(rhs, models, out);
        }
        ExprKind::Neg(a) => uses(a, models, out),
        ExprKind::Call { callee, args } => {
            if models.contains_key(callee.name.as_str()) {
                out.push((callee.name.as_str(), callee.span));
            }
            for a in args {
                uses(&a.value, models, out);
            }
        }
        _ => {}
    }
}

/// The models each model uses, in source order.
pub fn dependencies<'a>(
    models: &HashMap<&'a str, &'a Model>,
) -> HashMap<&'a str, Vec<(&'a str, Span)>> {
    models
        .iter()
        .map(|(name, m)| {
            let mut out = Vec::new();
            for s in &m.body {
                let (Stmt::Let { value, .. } | Stmt::Return { value, .. }) = s;
                uses(value, models, &mut out);
            }
            (*name, out)
        })
        .collect()
}

/// Orders models so that every model comes after the models it uses. Models on a cycle are left
/// out and reported, one diagnostic per cycle, at the use that closes it.
pub fn order<'a>(
    names_in_source_order: &[&'a str],
    deps: &HashMap<&'a str, Vec<(&'a str, Span)>>,
    diags: &mut Vec<Diag>,
) -> Vec<&'a str> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Fresh,
        Active,
        Done,
        Cyclic,
    }
    let mut mark: HashMap<&str, Mark> = names_in_source_order
        .iter()
        .map(|n| (*n, Mark::Fresh))
        .collect();
    let mut order = Vec::new();
    // Iterative DFS would be overkill: model nesting is shallow.
    fn visit<'a>(
        n: &'a str,
        deps: &HashMap<&'a str, Vec<(&'a str, Span)>>,
        mark: &mut HashMap<&'a str, Mark>,
        stack: &mut Vec<(&'a str, Span)>,
        order: &mut Vec<&'a str>,
        diags: &mut Vec<Diag>,
    ) -> bool {
        match mark[n] {
            Mark::Done => return true,
            Mark::Cyclic => return false,
            Mark::Active => {
                // The cycle starts where `n` was entered (the root when it is not on the stack).
                let last = stack.len() - 1;
                let start = stack[..last]
                    .iter()
                    .position(|(m, _)| *m == n)
                    .map(|i| i + 1)
                    .unwrap_or(0);
                let edges = &stack[start..];
                let names: Vec<&str> = std::iter::once(n)
                    .chain(edges.iter().map(|(m, _)| *m))
                    .collect();
                let msg = if edges.len() == 1 {
                    format!("model `{n}` uses itself")
                } else {
                    let via: Vec<String> = names[1..names.len() - 1]
                        .iter()
                        .map(|m| format!("`{m}`"))
                        .collect();
                    format!("model `{n}` uses itself through {}", via.join(", "))
                };
                let closer = names[names.len() - 2];
                let mut d = Diag::new(
                    "nnc::name",
                    msg,
                    edges[edges.len() - 1].1,
                    format!("`{closer}` uses `{n}` here: {}", names.join(" → ")),
                )
                .help("a model cannot contain itself: its size would be infinite");
                for (i, (m, span)) in edges[..edges.len() - 1].iter().enumerate() {
                    d = d.also(*span, format!("`{}` uses `{m}` here", names[i]));
                }
                diags.push(d);
                for m in names {
                    mark.insert(m, Mark::Cyclic);
                }
                return false;
            }
            Mark::Fresh => {}
        }
        mark.insert(n, Mark::Active);
        let mut ok = true;
        for (d, span) in deps.get(n).map(Vec::as_slice).unwrap_or(&[]) {
            stack.push((d, *span));
            let fine = visit(d, deps, mark, stack, order, diags);
            stack.pop();
            ok &= fine;
            if mark[n] == Mark::Cyclic {
                return false;
            }
        }
        mark.insert(n, if ok { Mark::Done } else { Mark::Cyclic });
        if ok {
            order.push(n);
        }
        ok
    }
    for n in names_in_source_order {
        let mut stack = Vec::new();
        visit(n, deps, &mut mark, &mut stack, &mut order, diags);
    }
    order
}
