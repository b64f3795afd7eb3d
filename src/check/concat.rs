//! `concat(a, b, …, axis: -1)`: tensors joined along one axis of the sample shape (Keras'
//! `Concatenate(axis=-1)`, `torch.cat`). Axes count the sample's dimensions only: the batch is
//! implicit in nnc and never written, so PyTorch's `dim=1` on images is `axis: 0` here.

use super::consts::{self, MAX_ELEMENTS};
use super::lower::{Lower, V};
use super::names::show;
use crate::diag::Diag;
use crate::ir::{DType, Op, Type, ValueId};
use crate::syntax::ast::{Arg, Expr, ExprKind, Ident, Span};

/// How `concat` is written, for its diagnostics.
const USAGE: &str = "write `concat(a, b, axis: -1)`: two tensors or more, then the axis of the \
                     sample shape (without the batch) to join them along, -1 (the last) by \
                     default";

/// `concat(args)` spanning `span`, in a model body.
pub(super) fn concat(l: &mut Lower, callee: &Ident, args: &[Arg], span: Span) -> V {
    let mut axis: Option<&Expr> = None;
    for a in args {
        let Some(name) = &a.name else { continue };
        match name.name.as_str() {
            "axis" => axis = Some(&a.value),
            "dim" => return l.err(torch_dim(name, &a.value)),
            other => {
                return l.err(
                    Diag::new(
                        "nnc::arg",
                        format!("concat has no argument `{other}`"),
                        name.span,
                        "unknown argument",
                    )
                    .help(USAGE),
                )
            }
        }
    }
    let Some(values) = operands(l, callee, args, span) else {
        return V::Bad;
    };
    let mut tensors = Vec::with_capacity(values.len());
    for e in values {
        match tensor(l, e) {
            Some(v) => tensors.push((v, e.span)),
            None => return V::Bad,
        }
    }
    let first = l.g.ty(tensors[0].0).clone();
    let Some(k) = sample_axis(l, axis, &first, tensors[0].1) else {
        return V::Bad;
    };
    for &(v, at) in &tensors[1..] {
        if let Some(d) = mismatch(&first, tensors[0].1, l.g.ty(v), at, k) {
            return l.err(d);
        }
    }
    let size: u64 = tensors
        .iter()
        .map(|&(v, _)| l.g.ty(v).per_sample() as u64)
        .sum();
    if size > MAX_ELEMENTS {
        return l.err(
            Diag::new(
                "nnc::shape",
                format!("this concatenation would have {size} elements per sample"),
                span,
                "too large",
            )
            .help("nnc supports tensors of up to 2^31 elements; check the sizes"),
        );
    }
    let inputs: Vec<ValueId> = tensors.iter().map(|&(v, _)| v).collect();
    // The IR's axes count the batch.
    let op = Op::Concat {
        axis: k + first.batched as usize,
    };
    l.push(op, inputs, "concat", span)
}

/// The tensors joined: the positional arguments, or the items of a list given alone
/// (`concat([a, b])`, as `torch.cat` takes them); two or more.
fn operands<'e>(
    l: &mut Lower,
    callee: &Ident,
    args: &'e [Arg],
    span: Span,
) -> Option<Vec<&'e Expr>> {
    let positional: Vec<&Expr> = args
        .iter()
        .filter(|a| a.name.is_none())
        .map(|a| &a.value)
        .collect();
    let values: Vec<&Expr> = match positional[..] {
        [Expr {
            kind: ExprKind::List(items),
            ..
        }] => items.iter().collect(),
        _ => positional,
    };
    if values.len() >= 2 {
        return Some(values);
    }
    let found = match values.len() {
        0 => "no tensor".to_string(),
        _ => "one tensor".to_string(),
    };
    l.err(
        Diag::new(
            "nnc::arg",
            "concat joins two tensors or more",
            if values.is_empty() { callee.span } else { span },
            found,
        )
        .help(USAGE),
    );
    None
}

/// Argument `e` as an f32 tensor of the model; a diagnostic for anything else (`None` too when
/// an earlier error poisoned it).
fn tensor(l: &mut Lower, e: &Expr) -> Option<ValueId> {
    match l.expr(e) {
        V::T(v) if l.g.ty(v).dtype == DType::F32 => Some(v),
        V::T(v) => {
            let d = Diag::new(
                "nnc::shape",
                format!(
                    "concat needs f32 values, found integer ids {}",
                    show(l.g.ty(v))
                ),
                e.span,
                "integer ids",
            )
            .help("token ids must go through `embedding` or `one_hot` first");
            l.err(d);
            None
        }
        V::N(n) => {
            let d = Diag::new(
                "nnc::shape",
                format!("`{n}` is a number, not a tensor"),
                e.span,
                "a number",
            )
            .help("concat joins tensors of the model");
            l.err(d);
            None
        }
        V::Bad => None,
    }
}

/// The sample axis `axis` names (−1 when not given) on values of type `t` (the first, at
/// `first`), counted from 0; a diagnostic when it is out of range.
fn sample_axis(l: &mut Lower, axis: Option<&Expr>, t: &Type, first: Span) -> Option<usize> {
    let rank = t.dims.len() as i64;
    let a = match axis.map(|e| consts::integer(e, "the axis")) {
        None => -1,
        Some(Ok(a)) => a,
        Some(Err(d)) => {
            l.err(d);
            return None;
        }
    };
    if (-rank..rank).contains(&a) {
        return Some(a.rem_euclid(rank.max(1)) as usize);
    }
    let span = axis.map_or(first, |e| e.span);
    let range = match rank {
        0 => "none: a value of one number has no axis to join along".to_string(),
        _ => format!("0 to {} (or −{rank} to −1 from the end)", rank - 1),
    };
    l.err(
        Diag::new(
            "nnc::shape",
            format!("axis {a} is out of range for {}", show(t)),
            span,
            format!("the axes are {range}"),
        )
        .also(first, format!("this is {}", show(t)))
        .help("nnc's axes count the sample's dimensions, without the batch"),
    );
    None
}

/// Why a tensor of type `t` (at `at`) cannot be joined to the first, of type `first` (at
/// `first_at`), along sample axis `k`: another rank, or a dimension other than `k` that differs.
fn mismatch(first: &Type, first_at: Span, t: &Type, at: Span, k: usize) -> Option<Diag> {
    let what = if t.dims.len() != first.dims.len() {
        format!(
            "concat needs tensors of the same rank: this is {} (rank {}), the first {} (rank {})",
            show(t),
            t.dims.len(),
            show(first),
            first.dims.len()
        )
    } else {
        let d = (0..t.dims.len()).find(|&d| d != k && t.dims[d] != first.dims[d])?;
        format!(
            "concat along axis {k} needs every other axis equal: axis {d} is {}, expected {}",
            t.dims[d], first.dims[d]
        )
    };
    Some(
        Diag::new("nnc::shape", what, at, format!("this is {}", show(t)))
            .also(first_at, format!("the first is {}", show(first)))
            .help(format!(
                "only axis {k} (the joined one) may differ; nnc's axes count the sample's \
                 dimensions, without the batch"
            )),
    )
}

/// `dim:` is PyTorch's name for the axis, which counts the batch: the axis nnc counts.
fn torch_dim(name: &Ident, value: &Expr) -> Diag {
    let help = match consts::integer(value, "dim") {
        Ok(1) => "nnc's axes leave out the batch: PyTorch's `dim=1` is `axis: 0` here (the \
                  channels of `[C, H, W]` images)"
            .to_string(),
        Ok(d) if d > 1 => format!(
            "nnc's axes leave out the batch: PyTorch's `dim={d}` is `axis: {}` here",
            d - 1
        ),
        _ => "nnc's axes leave out the batch: PyTorch's `dim=1` is `axis: 0` here (the \
              channels of `[C, H, W]` images); negative axes count from the end in both"
            .to_string(),
    };
    Diag::new(
        "nnc::arg",
        "concat takes `axis:`, not `dim:`",
        name.span,
        "PyTorch's name",
    )
    .help(help)
}
