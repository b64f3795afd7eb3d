//! The vector-Jacobian product of every op: given forward node `v` and the gradient `dy` of the
//! loss with respect to its value, add each input's share to that input's gradient.

use super::Backward;
use crate::ir::{BinaryOp, Op, Type, UnaryOp, ValueId};

/// Propagates `dy` (the complete gradient of `v`) to `v`'s inputs that need a gradient.
pub(super) fn vjp(b: &mut Backward, v: ValueId, dy: ValueId) -> Result<(), String> {
    let node = b.g.node(v).clone();
    let ins = node.inputs.clone();
    let x = |k: usize| ins[k];
    if let Some(target) = node.op.loss_target() {
        no_gradient_into(b, &node.op, x(target))?;
    }
    match node.op {
        Op::Input { .. } | Op::Param(_) | Op::Const(_) => {}
        Op::Unary(u) => {
            let at = if u.grad_uses_output() { v } else { x(0) };
            let d = b.push(x(0), Op::UnaryGrad(u), vec![at, dy])?;
            b.accumulate(x(0), d)?;
        }
        Op::Binary(op) => binary(b, op, v, x(0), x(1), dy)?,
        Op::MatMul { ta, tb } => {
            let (a, w) = (x(0), x(1));
            // c = a·w: da = dc·wᵀ, dw = aᵀ·dc; c = a·wᵀ: da = dc·w, dw = dcᵀ·a;
            // c = aᵀ·w: da = w·dcᵀ, dw = a·dc.
            let (da, dw) = match (ta, tb) {
                (false, false) => ((dy, w, false, true), (a, dy, true, false)),
                (false, true) => ((dy, w, false, false), (dy, a, true, false)),
                (true, false) => ((w, dy, false, true), (a, dy, false, false)),
                (true, true) => return Err("matmul with both ta and tb has no gradient".into()),
            };
            for (target, (l, r, ta, tb)) in [(a, da), (w, dw)] {
                if b.wants(target) {
                    let d = b.push(target, Op::MatMul { ta, tb }, vec![l, r])?;
                    b.accumulate(target, d)?;
                }
            }
        }
        Op::BiasAdd { axis } => {
            b.accumulate(x(0), dy)?;
            if b.wants(x(1)) {
                let d = b.push(x(1), Op::BiasGrad { axis }, vec![dy])?;
                b.accumulate(x(1), d)?;
            }
        }
        Op::Conv2d(w) => {
            if b.wants(x(0)) {
                let ty = b.g.ty(x(0)).clone();
                let d = b.push_typed(x(0), Op::Conv2dGradInput(w), vec![dy, x(1)], ty);
                b.accumulate(x(0), d)?;
            }
            if b.wants(x(1)) {
                let d = b.push(x(1), Op::Conv2dGradWeight(w), vec![x(0), dy])?;
                b.accumulate(x(1), d)?;
            }
        }
        Op::Conv2dGradInput(w) => {
            // A transposed convolution (`conv_transpose2d`): y = conv2d_grad_input(x, k), x in
            // the role of a convolution's output gradient and k (`[in, out, kh, kw]`) in that
            // of its weight. So dx is that convolution of dy, and dk its weight gradient with
            // dy in the role of the convolution's input and x in that of its output gradient.
            if b.wants(x(0)) {
                let d = b.push(x(0), Op::Conv2d(w), vec![dy, x(1)])?;
                b.accumulate(x(0), d)?;
            }
            if b.wants(x(1)) {
                let d = b.push(x(1), Op::Conv2dGradWeight(w), vec![dy, x(0)])?;
                b.accumulate(x(1), d)?;
            }
        }
        Op::MaxPool(w) => {
            let d = b.push(x(0), Op::MaxPoolGrad(w), vec![x(0), dy])?;
            b.accumulate(x(0), d)?;
        }
        Op::AvgPool(w) => {
            let ty = b.g.ty(x(0)).clone();
            let d = b.push_typed(x(0), Op::AvgPoolGrad(w), vec![dy], ty);
            b.accumulate(x(0), d)?;
        }
        Op::AvgPoolGrad(w) => {
            // Spreading each value over its window (`upsample` is this times k·k): its
            // gradient is the window's mean.
            let d = b.push(x(0), Op::AvgPool(w), vec![dy])?;
            b.accumulate(x(0), d)?;
        }
        Op::GlobalMaxPool => {
            let d = b.push(x(0), Op::GlobalMaxPoolGrad, vec![x(0), dy])?;
            b.accumulate(x(0), d)?;
        }
        Op::GlobalAvgPool => {
            let ty = b.g.ty(x(0)).clone();
            let d = b.push_typed(x(0), Op::GlobalAvgPoolGrad, vec![dy], ty);
            b.accumulate(x(0), d)?;
        }
        Op::Reshape => {
            let ty = b.g.ty(x(0)).clone();
            let d = b.push_typed(x(0), Op::Reshape, vec![dy], ty);
            b.accumulate(x(0), d)?;
        }
        Op::Concat { axis } => concat(b, &ins, axis, dy)?,
        Op::Reverse { axis } => {
            let d = b.push(x(0), Op::Reverse { axis }, vec![dy])?;
            b.accumulate(x(0), d)?;
        }
        Op::Embedding => {
            let ty = b.g.ty(x(1)).clone();
            let d = b.push_typed(x(1), Op::EmbeddingGrad, vec![x(0), dy], ty);
            b.accumulate(x(1), d)?;
        }
        Op::RnnScan { act } => {
            // da = ∂loss/∂(pre-activations); xp enters each pre-activation directly, and
            // dw_hh = Σ_t h_{t−1}ᵀ·da_t.
            let da = b.push(x(0), Op::RnnScanGrad { act }, vec![v, x(1), dy])?;
            b.accumulate(x(0), da)?;
            if b.wants(x(1)) {
                let prev = b.push(x(1), Op::TimeShift, vec![v])?;
                let d = b.push(
                    x(1),
                    Op::MatMul {
                        ta: true,
                        tb: false,
                    },
                    vec![prev, da],
                )?;
                b.accumulate(x(1), d)?;
            }
        }
        Op::GruScan => gru(b, v, [x(0), x(1), x(2)], dy)?,
        Op::LstmHidden => lstm(b, v, x(0), dy)?,
        Op::LstmScan => {
            return Err(format!(
                "lstm_scan (%{}) is read by another op than lstm_hidden: its state has no \
                 gradient of its own",
                v.0
            ));
        }
        Op::Dropout { p, salt } => {
            let d = b.push(x(0), Op::DropoutGrad { p, salt }, vec![dy])?;
            b.accumulate(x(0), d)?;
        }
        Op::Softmax => {
            let d = b.push(x(0), Op::SoftmaxGrad, vec![v, dy])?;
            b.accumulate(x(0), d)?;
        }
        Op::LogSoftmax => {
            let d = b.push(x(0), Op::LogSoftmaxGrad, vec![v, dy])?;
            b.accumulate(x(0), d)?;
        }
        Op::LayerNorm { eps } => {
            layer_norm(b, [x(0), x(1), x(2)], dy, eps)?;
        }
        Op::BatchNorm { eps } => batch_norm(b, [x(0), x(1), x(2), x(3)], dy, eps)?,
        Op::BatchNormEval { eps } => {
            // Only a frozen batch norm runs on its running statistics in a training graph:
            // its weight and bias take no gradient, its input dy·weight/√(running_var + eps).
            let (xs, w, bias, var) = (x(0), x(1), x(2), x(4));
            if b.wants(w) || b.wants(bias) {
                return Err(
                    "batch_norm_eval has no gradient for its weight and bias (a batch norm \
                     uses its running statistics in training only when frozen)"
                        .into(),
                );
            }
            if b.wants(xs) {
                let d = b.push(xs, Op::BatchNormEvalGrad { eps }, vec![dy, w, var])?;
                b.accumulate(xs, d)?;
            }
        }
        Op::CrossEntropy => {
            let d = b.push(x(0), Op::CrossEntropyGrad, vec![x(0), x(1), dy])?;
            b.accumulate(x(0), d)?;
        }
        Op::SoftCrossEntropy => {
            let d = b.push(x(0), Op::SoftCrossEntropyGrad, vec![x(0), x(1), dy])?;
            b.accumulate(x(0), d)?;
        }
        Op::KlDiv => {
            if b.wants(x(1)) {
                let d = b.push(x(1), Op::KlDivGrad, vec![x(0), x(1), dy])?;
                b.accumulate(x(1), d)?;
            }
        }
        Op::Mse => {
            let d = b.push(x(0), Op::MseGrad, vec![x(0), x(1), dy])?;
            b.accumulate(x(0), d)?;
            if b.wants(x(1)) {
                // mse is symmetric up to sign: d/db = −d/da.
                let nd = b.push(x(1), Op::Unary(UnaryOp::Neg), vec![d])?;
                b.accumulate(x(1), nd)?;
            }
        }
        Op::Bce => {
            let d = b.push(x(0), Op::BceGrad, vec![x(0), x(1), dy])?;
            b.accumulate(x(0), d)?;
        }
        Op::SumSquares => {
            // d Σx² = 2x·dl.
            let xd = b.push(x(0), Op::Binary(BinaryOp::Mul), vec![x(0), dy])?;
            let two = b.constant(x(0), 2.0);
            let d = b.push(x(0), Op::Binary(BinaryOp::Mul), vec![xd, two])?;
            b.accumulate(x(0), d)?;
        }
        Op::MeanToSum { per } => {
            // The sum is the mean times the count; the counted value gets no gradient.
            let d = b.push(x(0), Op::MeanToSum { per }, vec![dy, x(1)])?;
            b.accumulate(x(0), d)?;
        }
        Op::OneHot { .. } => {} // its input is integer ids
        Op::UnaryGrad(_)
        | Op::Fused(_)
        | Op::WithEpilogue { .. }
        | Op::EpilogueGrad
        | Op::BiasGrad { .. }
        | Op::Conv2dGradWeight(_)
        | Op::Conv2dGradWeightUnpool { .. }
        | Op::UnpoolBiasGrad
        | Op::PoolBeside(_)
        | Op::MaxPoolGrad(_)
        | Op::GlobalMaxPoolGrad
        | Op::GlobalAvgPoolGrad
        | Op::EmbeddingGrad
        | Op::RnnScanGrad { .. }
        | Op::TimeShift
        | Op::Slice { .. }
        | Op::GruGates
        | Op::GruScanGrad
        | Op::GruRecurGrad
        | Op::LstmScanGrad
        | Op::Lstm
        | Op::DropoutGrad { .. }
        | Op::SoftmaxGrad
        | Op::LogSoftmaxGrad
        | Op::LayerNormGrad { .. }
        | Op::LayerNormWeightGrad { .. }
        | Op::BatchNormGrad { .. }
        | Op::BatchNormEvalGrad { .. }
        | Op::BatchNormWeightGrad { .. }
        | Op::BatchStats { .. }
        | Op::CrossEntropyGrad
        | Op::SoftCrossEntropyGrad
        | Op::KlDivGrad
        | Op::MseGrad
        | Op::BceGrad => {
            return Err(format!(
                "{} (%{}) has no gradient rule (it belongs to backward graphs)",
                node.op.name(),
                v.0
            ));
        }
    }
    Ok(())
}

/// The gradients of a `concat` of `ins` along `axis`: each input's is the slice of `dy` where
/// its entries went.
fn concat(b: &mut Backward, ins: &[ValueId], axis: usize, dy: ValueId) -> Result<(), String> {
    let mut start = 0;
    for &x in ins {
        let len = b.g.ty(x).around(axis).1;
        if b.wants(x) {
            let d = b.push(x, Op::Slice { axis, start, len }, vec![dy])?;
            b.accumulate(x, d)?;
        }
        start += len;
    }
    Ok(())
}

/// The gradients of an LSTM's inputs, taken at its output `h` = [`Op::LstmHidden`] of the
/// scan's state `s` (read by nothing else): dz = ∂loss/∂(gate pre-activations) by
/// [`Op::LstmScanGrad`]; xp enters each pre-activation directly, and dw_hh = Σ_t h_{t−1}ᵀ·dz_t.
fn lstm(b: &mut Backward, h: ValueId, s: ValueId, dh: ValueId) -> Result<(), String> {
    let scan = b.g.node(s).clone();
    let (Op::LstmScan, &[xp, w_hh]) = (&scan.op, &scan.inputs[..]) else {
        return Err(format!(
            "lstm_hidden (%{}) reads {} (%{}), not an lstm_scan",
            h.0,
            scan.op.name(),
            s.0
        ));
    };
    let dz = b.push(xp, Op::LstmScanGrad, vec![s, w_hh, dh])?;
    b.accumulate(xp, dz)?;
    if b.wants(w_hh) {
        let prev = b.push(w_hh, Op::TimeShift, vec![h])?;
        let mm = Op::MatMul {
            ta: true,
            tb: false,
        };
        let d = b.push(w_hh, mm, vec![prev, dz])?;
        b.accumulate(w_hh, d)?;
    }
    Ok(())
}

/// The gradients of a GRU `v` = `gru_scan(xp, w_hh, b_hh)`: dxp from [`Op::GruScanGrad`],
/// given the gates the forward scan saved ([`Op::GruGates`]); the recurrent parameters through
/// dhp ([`Op::GruRecurGrad`]), the gradient of hp_t = h_{t−1}·w_hh + b_hh:
/// dw_hh = Σ_t h_{t−1}ᵀ·dhp_t and db_hh = Σ_t dhp_t.
fn gru(
    b: &mut Backward,
    v: ValueId,
    [xp, w, bias]: [ValueId; 3],
    dy: ValueId,
) -> Result<(), String> {
    // The gates are a forward value (the scan writes them): labelled as the layer.
    let label = b.g.node(v).label.clone();
    let gates = b.g.push(Op::GruGates, vec![v], label)?;
    let dxp = b.push(xp, Op::GruScanGrad, vec![v, gates, w, dy])?;
    b.accumulate(xp, dxp)?;
    if !b.wants(w) && !b.wants(bias) {
        return Ok(());
    }
    let dhp = b.push(w, Op::GruRecurGrad, vec![dxp])?;
    if b.wants(w) {
        let prev = b.push(w, Op::TimeShift, vec![v])?;
        let mm = Op::MatMul {
            ta: true,
            tb: false,
        };
        let d = b.push(w, mm, vec![prev, dhp])?;
        b.accumulate(w, d)?;
    }
    if b.wants(bias) {
        let d = b.push(bias, Op::BiasGrad { axis: 2 }, vec![dhp])?;
        b.accumulate(bias, d)?;
    }
    Ok(())
}

/// The gradients of a layer norm `[x, weight, bias] -> y` over the last axis: `dx` and
/// `dweight` by its two gradient ops ([x, weight, dy] and [x, dy]), `dbias` a [`Op::BiasGrad`]
/// of `dy` along that axis.
fn layer_norm(
    b: &mut Backward,
    [xs, w, bias]: [ValueId; 3],
    dy: ValueId,
    eps: f32,
) -> Result<(), String> {
    if b.wants(xs) {
        let d = b.push(xs, Op::LayerNormGrad { eps }, vec![xs, w, dy])?;
        b.accumulate(xs, d)?;
    }
    if b.wants(w) {
        let d = b.push(w, Op::LayerNormWeightGrad { eps }, vec![xs, dy])?;
        b.accumulate(w, d)?;
    }
    if b.wants(bias) {
        let axis = b.g.ty(xs).rank() - 1;
        let d = b.push(bias, Op::BiasGrad { axis }, vec![dy])?;
        b.accumulate(bias, d)?;
    }
    Ok(())
}

/// The gradients of a batch norm in training, `[x, stats, weight, bias] -> y`: the weight's,
/// Σ dy ⊙ x̂, and the bias's, Σ dy, are the two sums per channel that the input's needs, so
/// they are computed first, once, and dx reads them. The batch statistics take no gradient of
/// their own: [`Op::BatchNormGrad`] accounts for them.
fn batch_norm(
    b: &mut Backward,
    [xs, stats, w, bias]: [ValueId; 4],
    dy: ValueId,
    eps: f32,
) -> Result<(), String> {
    let dx = b.wants(xs);
    let dw = (dx || b.wants(w))
        .then(|| b.push(w, Op::BatchNormWeightGrad { eps }, vec![xs, stats, dy]))
        .transpose()?;
    let db = (dx || b.wants(bias))
        .then(|| b.push(bias, Op::BiasGrad { axis: 1 }, vec![dy]))
        .transpose()?;
    if let (true, Some(dw), Some(db)) = (dx, dw, db) {
        let d = b.push(
            xs,
            Op::BatchNormGrad { eps },
            vec![xs, stats, w, dy, dw, db],
        )?;
        b.accumulate(xs, d)?;
    }
    for (p, d) in [(w, dw), (bias, db)] {
        if let (true, Some(d)) = (b.wants(p), d) {
            b.accumulate(p, d)?;
        }
    }
    Ok(())
}

fn no_gradient_into(b: &Backward, op: &Op, target: ValueId) -> Result<(), String> {
    if b.wants(target) {
        return Err(format!(
            "{}: no gradient flows into its target, which depends on a trainable parameter",
            op.name()
        ));
    }
    Ok(())
}

/// Elementwise a op b, with a scalar operand broadcast (its gradient is then summed).
fn binary(
    b: &mut Backward,
    op: BinaryOp,
    y: ValueId,
    a: ValueId,
    c: ValueId,
    dy: ValueId,
) -> Result<(), String> {
    if b.wants(a) {
        let d = match op {
            BinaryOp::Add | BinaryOp::Sub => dy,
            BinaryOp::Mul => b.push(a, Op::Binary(BinaryOp::Mul), vec![dy, c])?,
            BinaryOp::Div => b.push(a, Op::Binary(BinaryOp::Div), vec![dy, c])?,
        };
        let d = reduce_to(b, a, d)?;
        b.accumulate(a, d)?;
    }
    if b.wants(c) {
        let d = match op {
            BinaryOp::Add => dy,
            BinaryOp::Sub => b.push(c, Op::Unary(UnaryOp::Neg), vec![dy])?,
            BinaryOp::Mul => b.push(c, Op::Binary(BinaryOp::Mul), vec![dy, a])?,
            BinaryOp::Div => {
                // d(a/c)/dc = −(a/c)/c = −y/c.
                let t = b.push(c, Op::Binary(BinaryOp::Mul), vec![dy, y])?;
                let t = b.push(c, Op::Binary(BinaryOp::Div), vec![t, c])?;
                b.push(c, Op::Unary(UnaryOp::Neg), vec![t])?
            }
        };
        let d = reduce_to(b, c, d)?;
        b.accumulate(c, d)?;
    }
    Ok(())
}

/// `d` summed to a scalar when `target` is a scalar that was broadcast; else `d` as is.
/// The sum is a `BiasGrad` over a trailing unit axis: `[…, N, 1] -> f32[1]`, then reshaped to `f32[]`.
fn reduce_to(b: &mut Backward, target: ValueId, d: ValueId) -> Result<ValueId, String> {
    let dt = b.g.ty(d).clone();
    if !b.g.ty(target).is_scalar() || dt.is_scalar() {
        return Ok(d);
    }
    let column = Type::f32(dt.batched, vec![dt.per_sample(), 1]);
    let axis = column.rank() - 1;
    let col = b.push_typed(target, Op::Reshape, vec![d], column);
    let sum = b.push(target, Op::BiasGrad { axis }, vec![col])?;
    Ok(b.push_typed(target, Op::Reshape, vec![sum], Type::scalar()))
}
