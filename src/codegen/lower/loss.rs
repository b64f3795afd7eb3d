//! Softmaxes and losses, and their gradients: the row-wise ones ([`rowwise`]) and the
//! elementwise ones ([`loss`]).

use super::{add_scratch, Built, Cx, RowSplit, Scratch, Step, PARALLEL_ELEMENTS};
use crate::codegen::{batchnorm, loss, rowwise, CodegenError};
use crate::ir::{Op, UnaryOp};

/// `Softmax` and `LogSoftmax`, row by row.
pub(super) fn softmax(cx: &Cx, out: &mut Built) -> Result<Step, CodegenError> {
    cx.arity(1)?;
    let (i, ins, ty) = (cx.i, &cx.ins, cx.ty);
    out.kernel(cx.header, |kb| rowwise::normalize(kb, &cx.n.op, ty, i, ins))
}

/// `SoftmaxGrad` and `LogSoftmaxGrad`, row by row.
pub(super) fn softmax_grad(cx: &Cx, out: &mut Built) -> Result<Step, CodegenError> {
    cx.arity(2)?;
    let (i, ins, ty) = (cx.i, &cx.ins, cx.ty);
    out.kernel(cx.header, |kb| rowwise::normalize(kb, &cx.n.op, ty, i, ins))
}

/// `LayerNorm` and `LayerNormGrad`, row by row.
pub(super) fn layer_norm(cx: &Cx, out: &mut Built, eps: f32) -> Result<Step, CodegenError> {
    cx.arity(3)?;
    let (i, ins, ty) = (cx.i, &cx.ins, cx.ty);
    out.kernel(cx.header, |kb| {
        rowwise::layer_norm(kb, &cx.n.op, ty, i, ins, eps)
    })
}

/// `BatchNormEval` and `BatchNormEvalGrad` (`op`, of `eps`), the activations `acts` applied to
/// the result: sample by sample, their rows split over the threads.
pub(super) fn batch_norm_eval(
    cx: &Cx,
    out: &mut Built,
    (op, eps): (&Op, f32),
    acts: &[UnaryOp],
) -> Result<Step, CodegenError> {
    let (i, ins, x) = (cx.i, &cx.ins, cx.ity(0));
    out.kernel(cx.header, |kb| {
        batchnorm::eval_rows(kb, op, &x, (i, ins), eps, acts)
    })
}

/// The batch norm ops: a kernel for a group of channels, run once per group (on the threads).
pub(super) fn batch_norm(
    cx: &Cx,
    out: &mut Built,
    op: &Op,
    acts: &[UnaryOp],
) -> Result<Step, CodegenError> {
    let (i, ins, x) = (cx.i, &cx.ins, cx.ity(0));
    let (c, s) = batchnorm::geometry(&x);
    // At most 16 parts: each costs a dispatch, which a [C] vector's channel does not repay.
    // A [C] vector's groups are of four channels where they can be: a step of the kernel's.
    let parts = match s == 1 && c.is_multiple_of(4) {
        true => super::channel_parts(c / 4, 16),
        false => super::channel_parts(c, 16),
    };
    let group = c / parts;
    let title = format!("{}\n; by parts of {group} channels", cx.header);
    let k = out.km.kernel(&title, |kb| {
        batchnorm::batch_norm(kb, op, &x, (i, ins), group, acts)
    })?;
    Ok(Step::Parts {
        k,
        parts,
        moves: batchnorm::moves(op, &x, i, ins, group),
        // A few operations a value, as the other light kernels: on the threads from a batch of
        // `PARALLEL_ELEMENTS` values. The MLP's [128] vectors (batch 64, 8,192 values), four
        // channels a step, took 41–62 µs a kernel in 16 parts on two threads of a busy machine,
        // 7–17 µs on the calling thread.
        min_batch: PARALLEL_ELEMENTS.div_ceil(x.per_sample().max(1)),
    })
}

/// `LayerNormWeightGrad`: a sum over the rows, on one thread.
pub(super) fn layer_norm_weight_grad(
    cx: &Cx,
    out: &mut Built,
    eps: f32,
) -> Result<Step, CodegenError> {
    cx.arity(2)?;
    let (i, ins, x) = (cx.i, &cx.ins, cx.ity(0));
    out.kernel(cx.header, |kb| {
        rowwise::layer_norm_weight_grad(kb, &x, i, ins, eps)
    })
}

/// `CrossEntropy`, `SoftCrossEntropy` and `KlDiv`: each sample's sum into a scratch buffer (a
/// kernel split over the threads by samples), then their mean (a second kernel, this step).
pub(super) fn cross_entropy(cx: &Cx, out: &mut Built) -> Result<Step, CodegenError> {
    cx.arity(2)?;
    let (i, ins, header) = (cx.i, &cx.ins, cx.header);
    let (x, y) = (cx.ity(0), cx.ity(1));
    // Each sample's sum (on the threads), then the samples' sums in order: the same
    // bits for any thread count. On one thread the char-RNN's loss (2,048 rows of 65
    // logits) took 320 µs of a 5 ms step.
    let s = Scratch {
        per: 2,
        batched: x.batched,
        per_thread: false,
    };
    let partial = add_scratch(&mut out.scratch, cx.scratch_base, s);
    let title = format!("{header}\n; each sample's sum");
    let k = out.km.kernel(&title, |kb| {
        rowwise::loss_per_sample(kb, &cx.n.op, &x, partial, ins)
    })?;
    let rows = (x.batched && y.batched).then(|| RowSplit {
        batched: vec![
            (ins[0], x.per_sample()),
            (ins[1], y.per_sample()),
            (partial, 2),
        ],
        min_batch: PARALLEL_ELEMENTS.div_ceil(x.per_sample().max(1)).max(2),
        ..RowSplit::default()
    });
    out.steps.push(Step::Kernel { k, rows });
    out.kernel(header, |kb| rowwise::loss_mean(kb, &x, partial, i))
}

/// `CrossEntropyGrad`, `SoftCrossEntropyGrad` and `KlDivGrad`, row by row.
pub(super) fn cross_entropy_grad(cx: &Cx, out: &mut Built) -> Result<Step, CodegenError> {
    cx.arity(3)?;
    let (i, ins, ty) = (cx.i, &cx.ins, cx.ty);
    out.kernel(cx.header, |kb| rowwise::loss_grad(kb, &cx.n.op, ty, i, ins))
}

/// `Mse` and `Bce` of two values.
pub(super) fn mse_bce(cx: &Cx, out: &mut Built) -> Result<Step, CodegenError> {
    cx.arity(2)?;
    let (i, ins) = (cx.i, &cx.ins);
    let x = cx.ity(0);
    out.kernel(cx.header, |kb| loss::loss(kb, &cx.n.op, &x, i, ins))
}

/// `SumSquares` of one value.
pub(super) fn sum_squares(cx: &Cx, out: &mut Built) -> Result<Step, CodegenError> {
    cx.arity(1)?;
    let (i, ins) = (cx.i, &cx.ins);
    let x = cx.ity(0);
    out.kernel(cx.header, |kb| loss::loss(kb, &cx.n.op, &x, i, ins))
}

/// `MeanToSum` of a loss's mean, counting the terms of its second input.
pub(super) fn mean_to_sum(cx: &Cx, out: &mut Built, per: usize) -> Result<Step, CodegenError> {
    cx.arity(2)?;
    let (i, ins) = (cx.i, &cx.ins);
    let x = cx.ity(1);
    out.kernel(cx.header, |kb| loss::mean_to_sum(kb, per, &x, i, ins))
}

/// `MseGrad` and `BceGrad`, element by element.
pub(super) fn mse_bce_grad(cx: &Cx, out: &mut Built) -> Result<Step, CodegenError> {
    cx.arity(3)?;
    let (i, ins, ty) = (cx.i, &cx.ins, cx.ty);
    out.kernel(cx.header, |kb| loss::loss_grad(kb, &cx.n.op, ty, i, ins))
}
