//! A product with what follows it fused ([`Op::WithEpilogue`]): a routed max-pooling gradient
//! with its activation's gradient, a small matrix product with its epilogue in one kernel, a
//! direct or Winograd convolution applying its chain as it stores, or else the product's step
//! with the epilogue as a second function called per block of the product ([`EpiStep`]).

use super::conv::{direct_forward, direct_geom};
use super::matmul::matmul_dims;
use super::{emit, loss, Built, Cx, Step};
use crate::codegen::epilogue::{self, EpiStep};
use crate::codegen::glue::ConvKind;
use crate::codegen::{conv, masked, pool, small_matmul, CodegenError};
use crate::ir::{Chain, Epilogue, Node, Op, Producer, UnaryOp, Window};

/// `WithEpilogue`: the step of `producer` with `epi` fused, or `None` when that step is pushed
/// already (the epilogue attached to it).
pub(super) fn with_epilogue(
    cx: &Cx,
    out: &mut Built,
    producer: Producer,
    epi: &Epilogue,
) -> Result<Option<Step>, CodegenError> {
    cx.arity(producer.arity() + epi.extra_inputs())?;
    // A loss epilogue's second result, if anything reads it.
    let grad = cx.second_result(|op| matches!(op, Op::EpilogueGrad));
    if let (Producer::MaxPoolGrad(w), Epilogue::Grad(op)) = (producer, epi) {
        return max_pool_grad(cx, out, &w, *op).map(Some);
    }
    // A batch norm's kernels apply the activations as they store.
    match (producer, epi) {
        (Producer::BatchNorm { .. }, Epilogue::Chain(c)) => {
            return loss::batch_norm(cx, out, &producer.op(), &c.acts).map(Some)
        }
        (Producer::BatchNormEval { eps }, Epilogue::Chain(c)) => {
            return loss::batch_norm_eval(cx, out, (&producer.op(), eps), &c.acts).map(Some)
        }
        _ => {}
    }
    if let Producer::MatMul { ta, tb } = producer {
        if let Some(step) = small_matmul_with(cx, out, (ta, tb), epi, grad)? {
            return Ok(Some(step));
        }
    }
    let conv_chain = match (producer, epi) {
        (Producer::Conv2d(w), Epilogue::Chain(c)) => Some((w, c, false)),
        (Producer::Conv2d(w), Epilogue::Pool(c, _)) => Some((w, c, true)),
        _ => None,
    };
    if let Some((w, chain, pooled)) = conv_chain {
        if let Some(geom) = direct_geom(&cx.ity(0), &w) {
            let epi = Some((chain, cx.ins.get(2).copied()));
            return direct_forward(cx, out, &geom, (epi, pooled)).map(Some);
        }
        if convolve_applying(cx, out, producer, &w, chain, pooled)? {
            return Ok(None);
        }
    } else {
        emit_product(cx, out, producer)?;
    }
    attach(cx, out, producer, epi, grad)?;
    Ok(None)
}

/// A max pooling's gradient with the activation's gradient `op` applied to each element as it
/// is written: one kernel.
fn max_pool_grad(cx: &Cx, out: &mut Built, w: &Window, op: UnaryOp) -> Result<Step, CodegenError> {
    let (i, ins) = (cx.i, &cx.ins);
    let (x, y) = (cx.ity(0), cx.ity(1));
    let epi = pool::PoolEpi { op, aux: ins[2] };
    out.kernel(cx.header, |kb| {
        pool::max_pool(kb, w, &x, &y, i, ins, true, Some(epi))
    })
}

/// A small matrix product ([`small_matmul::is_small`]) with its epilogue in one kernel (a
/// loss's gradient written to `grad` when it has one), or `None` for a larger one.
fn small_matmul_with(
    cx: &Cx,
    out: &mut Built,
    (ta, tb): (bool, bool),
    epi: &Epilogue,
    grad: Option<usize>,
) -> Result<Option<Step>, CodegenError> {
    let (i, ins, ty) = (cx.i, &cx.ins, cx.ty);
    let extra = &cx.n.inputs[2..];
    let (m, nn, k) = matmul_dims(ta, tb, &cx.ity(0), &cx.ity(1), ty)?;
    if !small_matmul::is_small(m, nn, k) {
        return Ok(None);
    }
    let step = out.kernel(cx.header, |kb| {
        let ab = (ins[0], ins[1]);
        epilogue::small_matmul(kb, ta, tb, (m, nn, k), i, ab, epi, extra, (ty, grad))
    })?;
    Ok(Some(step))
}

/// Pushes the step of a convolution by `w` followed by `chain` (and a 2×2 max pooling when
/// `pooled`) on Winograd or im2col; whether it applies the chain itself, as Winograd's output
/// transform does before it stores. Else the chain is left to [`attach`].
fn convolve_applying(
    cx: &Cx,
    out: &mut Built,
    producer: Producer,
    w: &Window,
    chain: &Chain,
    pooled: bool,
) -> Result<bool, CodegenError> {
    let chain = Some((chain, cx.ins.get(2).copied()));
    let (op, (t0, t1)) = (producer.op(), (cx.ity(0), cx.ity(1)));
    let conv_ty = if pooled {
        crate::ir::shape::infer(&op, &[&t0, &t1], &cx.g.params).map_err(CodegenError::Graph)?
    } else {
        cx.ty.clone()
    };
    let step = conv::step(
        &mut out.km,
        cx.header,
        &op,
        w,
        &t0,
        &t1,
        &conv_ty,
        cx.i,
        &cx.ins,
        cx.scratch_base,
        &mut out.scratch,
        chain,
        pooled,
    )?;
    let applied = matches!(step, Step::Winograd(_));
    out.steps.push(step);
    Ok(applied)
}

/// Pushes the step of the product alone (its first two inputs), as [`emit`] lowers it, for
/// [`attach`] to attach the epilogue to.
fn emit_product(cx: &Cx, out: &mut Built, producer: Producer) -> Result<(), CodegenError> {
    let product = Node {
        op: producer.op(),
        inputs: cx.n.inputs[..2].to_vec(),
        ty: cx.ty.clone(),
        label: cx.n.label.clone(),
    };
    emit(&Cx::new(cx.g, cx.seconds, cx.i, &product, cx.header), out)
}

/// Compiles `epi` (writing a loss's gradient to `grad` when it has one) and attaches it to the
/// last step, the GEMM (matrix product or convolution) computing `producer`.
fn attach(
    cx: &Cx,
    out: &mut Built,
    producer: Producer,
    epi: &Epilogue,
    grad: Option<usize>,
) -> Result<(), CodegenError> {
    let header = cx.header;
    let extra = &cx.n.inputs[2..];
    let e = EpiStep::compile(&mut out.km, header, producer, epi, extra, (cx.ty, grad))?;
    if let (Some(Step::MatMul(s)), Some(_)) = (out.steps.last(), e.relu_mask()) {
        if s.tb && !s.ta && !s.k.batched && s.k.per >= masked::MIN_K {
            out.km.note(&format!(
                "{header}\n; or, when at most {}% of relu's output is positive, only \
                 those entries (masked product)\n",
                (masked::MAX_DENSITY * 100.0).round()
            ));
        }
    }
    match out.steps.last_mut() {
        Some(Step::MatMul(s)) => s.epi = Some(e),
        Some(Step::Conv(s)) => s.epi = Some(e),
        Some(Step::Winograd(s)) if s.kind == ConvKind::Forward => s.epi = Some(e),
        _ => {
            return Err(CodegenError::Graph(format!(
                "%{}: {} did not compile to a GEMM step",
                cx.i,
                cx.n.op.name()
            )))
        }
    }
    Ok(())
}
