//! Elementwise ops, and the bias ops: an addition broadcast along an axis (alone, or first in
//! a fused chain of activations) and its gradient, sums over the other axes.

use super::{channel_parts, Built, Cx, Step, PARALLEL_BIAS_COLUMNS};
use crate::codegen::elementwise::{self, Operand};
use crate::codegen::kernel::Kb;
use crate::codegen::{bias, CodegenError};
use crate::ir::{BinaryOp, Chain, UnaryOp};

/// `Unary`: one map over the input.
pub(super) fn unary(cx: &Cx, out: &mut Built, u: UnaryOp) -> Result<Step, CodegenError> {
    cx.arity(1)?;
    let (i, ins, ty) = (cx.i, &cx.ins, cx.ty);
    out.kernel(cx.header, |kb| {
        elementwise::map(kb, ty, i, &[Operand::each(ins[0])], &|kb, v, lane| {
            elementwise::unary(kb, u, v[0], lane)
        })
    })
}

/// `UnaryGrad`: one map over the two inputs.
pub(super) fn unary_grad(cx: &Cx, out: &mut Built, u: UnaryOp) -> Result<Step, CodegenError> {
    cx.arity(2)?;
    let (i, ins, ty) = (cx.i, &cx.ins, cx.ty);
    let ops = [Operand::each(ins[0]), Operand::each(ins[1])];
    out.kernel(cx.header, |kb| {
        elementwise::map(kb, ty, i, &ops, &|kb, v, lane| {
            elementwise::unary_grad(kb, u, v[0], v[1], lane)
        })
    })
}

/// `Binary`: one map over the two inputs, a scalar one broadcast.
pub(super) fn binary(cx: &Cx, out: &mut Built, b: BinaryOp) -> Result<Step, CodegenError> {
    cx.arity(2)?;
    let (i, ins, ty) = (cx.i, &cx.ins, cx.ty);
    let ops = [
        Operand {
            slot: ins[0],
            scalar: cx.ity(0).is_scalar() && !ty.is_scalar(),
        },
        Operand {
            slot: ins[1],
            scalar: cx.ity(1).is_scalar() && !ty.is_scalar(),
        },
    ];
    out.kernel(cx.header, |kb| {
        elementwise::map(kb, ty, i, &ops, &|kb, v, _| {
            elementwise::binary(kb, b, v[0], v[1])
        })
    })
}

/// `Dropout` and its gradient: the mask hashed from the seed and step in the step context.
pub(super) fn dropout(cx: &Cx, out: &mut Built, p: f32, salt: u32) -> Result<Step, CodegenError> {
    cx.arity(1)?;
    let (i, ins, ty) = (cx.i, &cx.ins, cx.ty);
    out.kernel(cx.header, |kb| {
        elementwise::dropout(kb, ty, i, ins[0], cx.ctx, p, salt)
    })
}

/// `BiasAdd`: the bias added along `axis`.
pub(super) fn bias_add(cx: &Cx, out: &mut Built, axis: usize) -> Result<Step, CodegenError> {
    cx.arity(2)?;
    let (i, ins, ty) = (cx.i, &cx.ins, cx.ty);
    out.kernel(cx.header, |kb| {
        bias::bias_add(kb, ty, axis, i, ins[0], ins[1], &|_, v, _| v)
    })
}

/// `Fused`: a chain of activations, after a bias added when it has one, in one loop.
pub(super) fn fused(cx: &Cx, out: &mut Built, chain: &Chain) -> Result<Step, CodegenError> {
    cx.arity(if chain.bias.is_some() { 2 } else { 1 })?;
    let (i, ins, ty) = (cx.i, &cx.ins, cx.ty);
    let acts = chain.acts.clone();
    let then = move |kb: &mut Kb, mut v: cranelift_codegen::ir::Value, lane| {
        for &u in &acts {
            v = elementwise::unary(kb, u, v, lane);
        }
        v
    };
    match chain.bias {
        Some(axis) => out.kernel(cx.header, |kb| {
            bias::bias_add(kb, ty, axis, i, ins[0], ins[1], &then)
        }),
        None => out.kernel(cx.header, |kb| {
            let x = Operand::each(ins[0]);
            elementwise::map(kb, ty, i, &[x], &|kb, v, lane| then(kb, v[0], lane))
        }),
    }
}

/// `BiasGrad`: the sums of `dy` over all axes but `axis`, cut into parts of the channels for
/// the threads when they are a pass over a whole convolution's or wide layer's gradient.
pub(super) fn bias_grad(cx: &Cx, out: &mut Built, axis: usize) -> Result<Step, CodegenError> {
    cx.arity(1)?;
    let (i, ins, header) = (cx.i, &cx.ins, cx.header);
    let x = cx.ity(0);
    let (c, inner) = bias::channels(&x, axis);
    if x.batched && (inner > 1 || c >= PARALLEL_BIAS_COLUMNS) {
        // A convolution's bias gradient or a wide layer's (a pass over all of dy):
        // parts of the channels on the threads.
        let parts = channel_parts(c, 8);
        let part = c / parts;
        let title = format!("{header}\n; by parts of {part} channels");
        let k = out
            .km
            .kernel(&title, |kb| bias::bias_grad(kb, &x, axis, part, i, ins[0]))?;
        return Ok(Step::Parts {
            k,
            parts,
            moves: vec![(ins[0], 4 * part * inner), (i, 4 * part)],
            min_batch: 0,
        });
    }
    out.kernel(header, |kb| bias::bias_grad(kb, &x, axis, c, i, ins[0]))
}
