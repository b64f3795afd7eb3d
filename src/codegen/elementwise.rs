//! Elementwise kernels: `Unary`, `Binary`, `UnaryGrad`, `Dropout`, `DropoutGrad`.
//!
//! Each op is an expression over lane values ([`ElemExpr`]), evaluated by one f32x4 loop with a
//! scalar tail. Keeping the expression separate from the loop is what lets a fused chain of
//! elementwise ops later become a single kernel: compose the expressions, keep one loop.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, Type as ClifType, Value};

use super::activation;
use super::kernel::{Kb, I64};
use super::math;
use crate::ir::{BinaryOp, Type, UnaryOp};

/// One operand of an elementwise loop: a buffer slot, read per element or broadcast (a scalar).
#[derive(Clone, Copy)]
pub struct Operand {
    pub slot: usize,
    pub scalar: bool,
}

impl Operand {
    /// The buffer in `slot`, read element by element.
    pub fn each(slot: usize) -> Operand {
        Operand {
            slot,
            scalar: false,
        }
    }
}

/// A fused chain on `v` (lanes of `ty`): `+ bias` (one f32 for all lanes, when given), then the
/// activations in order, as the separate `Fused` kernel computes it (a convolution's epilogue
/// applied before the store).
pub fn chain(
    kb: &mut Kb,
    acts: &[UnaryOp],
    bias: Option<Value>,
    mut v: Value,
    ty: ClifType,
) -> Value {
    if let Some(b) = bias {
        let b = kb.splat(ty, b);
        v = kb.b.ins().fadd(v, b);
    }
    for &u in acts {
        v = unary(kb, u, v, ty);
    }
    v
}

/// `f(x)` for a unary op on lanes of type `ty`.
pub fn unary(kb: &mut Kb, op: UnaryOp, x: Value, ty: ClifType) -> Value {
    match op {
        UnaryOp::Neg => kb.b.ins().fneg(x),
        UnaryOp::Relu => {
            // `0 < x ? x : 0` (0 for NaN and −0), in the form Cranelift lowers to `maxps`.
            let z = kb.cst(ty, 0.0);
            let c = kb.b.ins().fcmp(FloatCC::LessThan, z, x);
            kb.select(ty, c, x, z)
        }
        UnaryOp::Sigmoid => math::emit_sigmoid(&mut kb.b, x),
        UnaryOp::Tanh => math::emit_tanh(&mut kb.b, x),
        UnaryOp::Exp => math::emit_exp(&mut kb.b, x),
        UnaryOp::Log => math::emit_log(&mut kb.b, x),
        _ => activation::forward(&mut kb.b, op, x),
    }
}

/// The derivative factor of a unary op: `f'` expressed through `v`, which is the forward output
/// for relu, sigmoid, tanh and exp (and leaky_relu, elu with a positive slope, alpha) and the
/// forward input otherwise ([`UnaryOp::grad_uses_output`]).
pub fn unary_grad(kb: &mut Kb, op: UnaryOp, v: Value, dy: Value, ty: ClifType) -> Value {
    match op {
        UnaryOp::Neg => kb.b.ins().fneg(dy),
        UnaryOp::Relu => {
            let z = kb.cst(ty, 0.0);
            let c = kb.b.ins().fcmp(FloatCC::GreaterThan, v, z);
            kb.select(ty, c, dy, z)
        }
        UnaryOp::Sigmoid => {
            let one = kb.cst(ty, 1.0);
            let omv = kb.b.ins().fsub(one, v);
            let d = kb.b.ins().fmul(v, omv);
            kb.b.ins().fmul(dy, d)
        }
        UnaryOp::Tanh => {
            let one = kb.cst(ty, 1.0);
            let v2 = kb.b.ins().fmul(v, v);
            let d = kb.b.ins().fsub(one, v2);
            kb.b.ins().fmul(dy, d)
        }
        UnaryOp::Exp => kb.b.ins().fmul(dy, v),
        UnaryOp::Log => kb.b.ins().fdiv(dy, v),
        _ => activation::grad(&mut kb.b, op, v, dy),
    }
}

pub fn binary(kb: &mut Kb, op: BinaryOp, a: Value, b: Value) -> Value {
    match op {
        BinaryOp::Add => kb.b.ins().fadd(a, b),
        BinaryOp::Sub => kb.b.ins().fsub(a, b),
        BinaryOp::Mul => kb.b.ins().fmul(a, b),
        BinaryOp::Div => kb.b.ins().fdiv(a, b),
    }
}

/// An elementwise expression: lane values of the operands (in order) → the result lane.
pub type ElemExpr<'e> = dyn Fn(&mut Kb, &[Value], ClifType) -> Value + 'e;

/// `out[i] = f(ins[0][i], ins[1][i], …)` for `i < numel(ty)`, f32x4 lanes and a scalar tail.
pub fn map(kb: &mut Kb, ty: &Type, out: usize, ins: &[Operand], f: &ElemExpr) {
    let n = kb.numel(ty);
    let o = kb.ptr(out);
    let ptrs: Vec<Value> = ins.iter().map(|x| kb.ptr(x.slot)).collect();
    let zero = kb.int(0);
    let scalars: Vec<Option<Value>> = ins
        .iter()
        .zip(&ptrs)
        .map(|(x, p)| x.scalar.then(|| kb.ld(types::F32, *p, zero)))
        .collect();
    kb.vec_loop(zero, n, |kb, i, lane| {
        let vals: Vec<Value> = ptrs
            .iter()
            .zip(&scalars)
            .map(|(p, s)| match s {
                Some(s) => kb.splat(lane, *s),
                None => kb.ld(lane, *p, i),
            })
            .collect();
        let r = f(kb, &vals, lane);
        kb.st(r, o, i);
    });
}

/// `ir::dropout_keep` in CLIF: whether flat element `idx` survives, as an i8 truth value.
/// `seed_mix` is [`crate::ir::dropout_mix`], computed once per kernel.
fn keep(kb: &mut Kb, seed_mix: Value, idx: Value, p: f32) -> Value {
    let b = &mut kb.b;
    let mut x = b.ins().bxor(seed_mix, idx);
    for (shift, mul) in [
        (30, Some(0xBF58_476D_1CE4_E5B9u64)),
        (27, Some(0x94D0_49BB_1331_11EB)),
        (31, None),
    ] {
        let s = b.ins().ushr_imm_u(x, shift);
        x = b.ins().bxor(x, s);
        if let Some(m) = mul {
            x = b.ins().imul_imm_s(x, m as i64);
        }
    }
    let top = b.ins().ushr_imm_u(x, 40);
    let f = b.ins().fcvt_from_uint(types::F32, top);
    let inv = b.ins().f32const(1.0 / (1u32 << 24) as f32);
    let u = b.ins().fmul(f, inv);
    let pc = b.ins().f32const(p);
    b.ins().fcmp(FloatCC::GreaterThanOrEqual, u, pc)
}

/// `Dropout`/`DropoutGrad`: `out[i] = keep(first + i) ? x[i] / (1 − p) : 0` with the step
/// context in table slot `ctx` (`[seed, step, first sample]` as u64; `first` is that sample's
/// first element when the tensor is batched, else 0). Scalar loop: the hash works on 64-bit
/// integers. `salt` numbers the dropout layer ([`crate::ir::Op::Dropout`]).
pub fn dropout(kb: &mut Kb, ty: &Type, out: usize, x: usize, ctx: usize, p: f32, salt: u32) {
    let n = kb.numel(ty);
    let o = kb.ptr(out);
    let xp = kb.ptr(x);
    let c = kb.ptr(ctx);
    let seed = kb.b.ins().load(I64, super::kernel::ro(), c, 0);
    let step = kb.b.ins().load(I64, super::kernel::ro(), c, 8);
    let first = if ty.batched {
        let sample = kb.b.ins().load(I64, super::kernel::ro(), c, 16);
        kb.b.ins().imul_imm_s(sample, ty.per_sample() as i64)
    } else {
        kb.int(0)
    };
    let s1 = kb.b.ins().imul_imm_s(seed, 0x9E37_79B9_7F4A_7C15u64 as i64);
    let s2 = kb.b.ins().imul_imm_s(step, 0xBF58_476D_1CE4_E5B9u64 as i64);
    let mix = kb.b.ins().bxor(s1, s2);
    let salted = (salt as u64).wrapping_mul(0x94D0_49BB_1331_11EB);
    let mix = kb.b.ins().bxor_imm_s(mix, salted as i64);
    let zero = kb.int(0);
    let scale = 1.0 / (1.0 - p);
    kb.for_range(zero, n, |kb, i| {
        let at = kb.b.ins().iadd(first, i);
        let k = keep(kb, mix, at, p);
        let v = kb.ld(types::F32, xp, i);
        let sc = kb.b.ins().f32const(scale);
        let y = kb.b.ins().fmul(v, sc);
        let z = kb.b.ins().f32const(0.0);
        let r = kb.b.ins().select(k, y, z);
        kb.st(r, o, i);
    });
}

/// Clamp of an i64 index into `0..n`, returning (clamped, in-range flag).
pub fn clamp_index(kb: &mut Kb, id: Value, n: usize) -> (Value, Value) {
    let nv = kb.int(n as i64);
    let ok = kb.b.ins().icmp(IntCC::UnsignedLessThan, id, nv);
    let zero = kb.int(0);
    (kb.b.ins().select(ok, id, zero), ok)
}
