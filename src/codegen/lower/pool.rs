//! Max and average pooling, and their gradients.

use super::{channel_parts, Built, ChannelSplit, Cx, Step};
use crate::codegen::{pool, CodegenError};
use crate::ir::{Op, Type, Window};

/// `MaxPool` and `MaxPoolGrad` by window `w`; for the forward pooling, kernels over parts of
/// the channels of one image too, pushed to `channels`.
pub(super) fn max_pool(
    cx: &Cx,
    out: &mut Built,
    w: &Window,
    channels: &mut Vec<ChannelSplit>,
) -> Result<Step, CodegenError> {
    let grad = matches!(cx.n.op, Op::MaxPoolGrad(_));
    cx.arity(1 + grad as usize)?;
    let (i, ins) = (cx.i, &cx.ins);
    let x = cx.ity(0);
    let y = if grad { cx.ity(1) } else { cx.ty.clone() };
    // Up to 4 parts (on 2 threads the CNN's first pooling took 3.6 µs, not 6.4).
    let parts = match x.dims[..] {
        [c, _, _] if !grad => channel_parts(c, 4),
        _ => 1,
    };
    if let (true, &[c, _, _]) = (parts > 1, &x.dims[..]) {
        channels.push(max_pool_part(cx, out, w, (&x, &y), c / parts, parts)?);
    }
    out.kernel(cx.header, |kb| {
        pool::max_pool(kb, w, &x, &y, i, ins, grad, None)
    })
}

/// The max pooling of one image `x` into `y` in `parts` parts of `part` channels, each pooled
/// on its own: the convolution before it ran on the threads, and one core would read its
/// output, half of it from the other's cache.
fn max_pool_part(
    cx: &Cx,
    out: &mut Built,
    w: &Window,
    (x, y): (&Type, &Type),
    part: usize,
    parts: usize,
) -> Result<ChannelSplit, CodegenError> {
    let (i, ins) = (cx.i, &cx.ins);
    let c = x.dims[0];
    let cut = |t: &Type| {
        let mut t = t.clone();
        t.dims[0] = part;
        t
    };
    let (xp, yp) = (cut(x), cut(y));
    let title = format!("{}\n; max pooling, {part} of {c} channels", cx.header);
    let k = out.km.kernel(&title, |kb| {
        pool::max_pool(kb, w, &xp, &yp, i, ins, false, None)
    })?;
    let moves = vec![(ins[0], 4 * xp.per_sample()), (i, 4 * yp.per_sample())];
    Ok(ChannelSplit { k, parts, moves })
}

/// `AvgPool` and `AvgPoolGrad` by window `w`, once the types are checked to pool into each
/// other.
pub(super) fn avg_pool(cx: &Cx, out: &mut Built, w: &Window) -> Result<Step, CodegenError> {
    cx.arity(1)?;
    let (i, ins, ty) = (cx.i, &cx.ins, cx.ty);
    let grad = matches!(cx.n.op, Op::AvgPoolGrad(_));
    let (x, y) = if grad {
        (ty.clone(), cx.ity(0))
    } else {
        (cx.ity(0), ty.clone())
    };
    // The gradient's type is given, not inferred: check it pools to dy's shape.
    let fits = x.batched
        && x.dims.len() == 3
        && y.dims.len() == 3
        && x.dims[0] == y.dims[0]
        && w.out_len(x.dims[1]) == Some(y.dims[1])
        && w.out_len(x.dims[2]) == Some(y.dims[2]);
    if !fits {
        return Err(CodegenError::Graph(format!(
            "%{i}: avg_pool of {x} does not give {y}"
        )));
    }
    out.kernel(cx.header, |kb| pool::avg_pool(kb, w, &x, &y, i, ins, grad))
}

/// `GlobalMaxPool`, `GlobalMaxPoolGrad`, `GlobalAvgPool` and `GlobalAvgPoolGrad`, once the
/// types are checked to pool into each other.
pub(super) fn global_pool(cx: &Cx, out: &mut Built) -> Result<Step, CodegenError> {
    let (max, grad) = match cx.n.op {
        Op::GlobalMaxPool => (true, false),
        Op::GlobalMaxPoolGrad => (true, true),
        Op::GlobalAvgPool => (false, false),
        _ => (false, true),
    };
    cx.arity(1 + (max && grad) as usize)?;
    let (i, ins, ty) = (cx.i, &cx.ins, cx.ty);
    let (x, y) = match (max, grad) {
        (_, false) => (cx.ity(0), ty.clone()),
        (true, true) => (cx.ity(0), cx.ity(1)),
        (false, true) => (ty.clone(), cx.ity(0)),
    };
    // The average's gradient has its type given, not inferred: check it pools to dy's shape.
    let fits = x.batched && y.batched && x.dims.len() == 3 && y.dims == x.dims[..1];
    if !fits {
        return Err(CodegenError::Graph(format!(
            "%{i}: {} of {x} does not give {y}",
            cx.n.op.name()
        )));
    }
    out.kernel(cx.header, |kb| pool::global_pool(kb, &x, i, ins, max, grad))
}
