//! Recurrences over `B×T×H` sequences: `RnnScan` (the forward scan), `RnnScanGrad`
//! (backpropagation through time) and `TimeShift`.
//!
//! One kernel walks every sequence of the batch step by step; each step is a vector–matrix
//! product with the `H×H` recurrent weight (f32x4 over the output units), fused with the
//! activation and its derivative.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder};

use super::elementwise::{unary, unary_grad};
use super::kernel::{Kb, F32X4};
use super::math;
use crate::ir::{Type, UnaryOp};

fn dims(ty: &Type) -> (usize, usize) {
    (ty.dims[0], ty.dims[1])
}

/// `h_t = act(xp_t + h_{t−1}·w)`, `ins` = [xp, w].
pub fn scan(kb: &mut Kb, act: UnaryOp, ty: &Type, out: usize, ins: &[usize]) {
    let (t_len, h) = dims(ty);
    let (o, xp, w) = (kb.ptr(out), kb.ptr(ins[0]), kb.ptr(ins[1]));
    let batch = kb.batch;
    let zero = kb.int(0);
    let hv = kb.int(h as i64);
    kb.for_range(zero, batch, |kb, b| {
        kb.for_n(t_len, |kb, t| {
            let row = kb.b.ins().imul_imm_s(b, t_len as i64);
            let row = kb.b.ins().iadd(row, t);
            let base = kb.b.ins().imul_imm_s(row, h as i64);
            let prev = kb.b.ins().iadd_imm_s(base, -(h as i64));
            let first = kb.b.ins().icmp_imm_s(IntCC::Equal, t, 0);
            let kend = kb.b.ins().select(first, zero, hv);
            kb.vec_loop(zero, hv, |kb, j, lane| {
                let i = kb.b.ins().iadd(base, j);
                let x = kb.ld(lane, xp, i);
                let acc = kb.var(lane, x);
                kb.for_range(zero, kend, |kb, k| {
                    let pi = kb.b.ins().iadd(prev, k);
                    let hp = kb.ld_rw(types::F32, o, pi);
                    let hp = kb.splat(lane, hp);
                    let wi = kb.b.ins().imul_imm_s(k, h as i64);
                    let wi = kb.b.ins().iadd(wi, j);
                    let wv = kb.ld(lane, w, wi);
                    let p = kb.b.ins().fmul(hp, wv);
                    let a = kb.b.use_var(acc);
                    let a = kb.b.ins().fadd(a, p);
                    kb.b.def_var(acc, a);
                });
                let a = kb.b.use_var(acc);
                let y = unary(kb, act, a, lane);
                kb.st(y, o, i);
            });
        });
    });
}

/// `da_t = act'(h_t) ⊙ (dh_t + da_{t+1}·wᵀ)`, `ins` = [h, w, dh], walking t backwards.
pub fn scan_grad(kb: &mut Kb, act: UnaryOp, ty: &Type, out: usize, ins: &[usize]) {
    let (t_len, h) = dims(ty);
    let (o, hp, w, dh) = (kb.ptr(out), kb.ptr(ins[0]), kb.ptr(ins[1]), kb.ptr(ins[2]));
    let batch = kb.batch;
    let zero = kb.int(0);
    let hv = kb.int(h as i64);
    kb.for_range(zero, batch, |kb, b| {
        kb.for_n(t_len, |kb, tt| {
            let last = (t_len - 1) as i64;
            let lv = kb.int(last);
            let t = kb.b.ins().isub(lv, tt);
            let row = kb.b.ins().imul_imm_s(b, t_len as i64);
            let row = kb.b.ins().iadd(row, t);
            let base = kb.b.ins().imul_imm_s(row, h as i64);
            let next = kb.b.ins().iadd_imm_s(base, h as i64);
            let is_last = kb.b.ins().icmp_imm_s(IntCC::Equal, tt, 0);
            let kend = kb.b.ins().select(is_last, zero, hv);
            kb.for_range(zero, hv, |kb, j| {
                let wrow = kb.b.ins().imul_imm_s(j, h as i64);
                // Σ_k da[t+1, k]·w[j, k], f32x4 partial sums then lanes in order.
                let z4 = kb.cst(F32X4, 0.0);
                let acc4 = kb.var(F32X4, z4);
                let z1 = kb.cst(types::F32, 0.0);
                let acc1 = kb.var(types::F32, z1);
                kb.vec_loop(zero, kend, |kb, k, lane| {
                    let di = kb.b.ins().iadd(next, k);
                    let d = kb.ld_rw(lane, o, di);
                    let wi = kb.b.ins().iadd(wrow, k);
                    let wv = kb.ld(lane, w, wi);
                    let p = kb.b.ins().fmul(d, wv);
                    let var = if lane == F32X4 { acc4 } else { acc1 };
                    let a = kb.b.use_var(var);
                    let a = kb.b.ins().fadd(a, p);
                    kb.b.def_var(var, a);
                });
                let a4 = kb.b.use_var(acc4);
                let s = kb.hsum(a4, F32X4);
                let a1 = kb.b.use_var(acc1);
                let s = kb.b.ins().fadd(s, a1);
                let i = kb.b.ins().iadd(base, j);
                let d = kb.ld(types::F32, dh, i);
                let g = kb.b.ins().fadd(d, s);
                let hval = kb.ld(types::F32, hp, i);
                // act' through the output h (relu: h > 0 iff a > 0); for log, through a = exp(h).
                let v = if act == UnaryOp::Log {
                    math::emit_exp(&mut kb.b, hval)
                } else {
                    hval
                };
                let r = unary_grad(kb, act, v, g, types::F32);
                kb.st(r, o, i);
            });
        });
    });
}

/// `out[b, t] = t == 0 ? 0 : h[b, t − 1]`.
pub fn time_shift(kb: &mut Kb, ty: &Type, out: usize, input: usize) {
    let (t_len, h) = dims(ty);
    let (o, x) = (kb.ptr(out), kb.ptr(input));
    let batch = kb.batch;
    let zero = kb.int(0);
    kb.for_range(zero, batch, |kb, b| {
        let base = kb.b.ins().imul_imm_s(b, (t_len * h) as i64);
        let hv0 = kb.int(h as i64);
        kb.vec_loop(zero, hv0, |kb, j, lane| {
            let i = kb.b.ins().iadd(base, j);
            let z = kb.cst(lane, 0.0);
            kb.st(z, o, i);
        });
        let rest = kb.int(((t_len - 1) * h) as i64);
        kb.vec_loop(zero, rest, |kb, j, lane| {
            let src = kb.b.ins().iadd(base, j);
            let dst = kb.b.ins().iadd(src, hv0);
            let v = kb.ld(lane, x, src);
            kb.st(v, o, dst);
        });
    });
}
