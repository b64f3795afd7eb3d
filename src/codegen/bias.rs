//! `BiasAdd` and `BiasGrad`: a bias along one axis, and its gradient (a sum over every other
//! axis, always in the same order so results are bit-identical run to run).
//!
//! A tensor is viewed as `[outer, C, inner]` around the bias axis.

use cranelift_codegen::ir::{types, InstBuilder, Type as ClifType, Value};

use super::kernel::{Kb, F32X4};
use crate::ir::Type;

/// `(outer per batch or total, batched, C, inner)` of `ty` around full-shape `axis`.
fn split(ty: &Type, axis: usize) -> (usize, bool, usize, usize) {
    let shape = ty.shape(1);
    let outer: usize = shape[..axis].iter().product();
    (
        outer,
        ty.batched,
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// What is applied to each sum before it is stored: the identity for a plain `BiasAdd`, the
/// activations of an `Op::Fused` chain (lane value and lane type in, lane value out).
pub type Epilogue<'e> = dyn Fn(&mut Kb, Value, ClifType) -> Value + 'e;

/// `out = then(x + b)` along `axis`.
pub fn bias_add(
    kb: &mut Kb,
    ty: &Type,
    axis: usize,
    out: usize,
    x: usize,
    bias: usize,
    then: &Epilogue,
) {
    let (outer, batched, c, inner) = split(ty, axis);
    let outer = kb.rows(batched, outer);
    let (o, xp, bp) = (kb.ptr(out), kb.ptr(x), kb.ptr(bias));
    let zero = kb.int(0);
    if inner == 1 {
        let cv = kb.int(c as i64);
        kb.for_range(zero, outer, |kb, r| {
            let base = kb.b.ins().imul_imm_s(r, c as i64);
            kb.vec_loop(zero, cv, |kb, j, lane| {
                let idx = kb.b.ins().iadd(base, j);
                let v = kb.ld(lane, xp, idx);
                let bb = kb.ld(lane, bp, j);
                let s = kb.b.ins().fadd(v, bb);
                let s = then(kb, s, lane);
                kb.st(s, o, idx);
            });
        });
    } else {
        let iv = kb.int(inner as i64);
        kb.for_range(zero, outer, |kb, r| {
            kb.for_n(c, |kb, ch| {
                let bs = kb.ld(types::F32, bp, ch);
                let row = kb.b.ins().imul_imm_s(r, c as i64);
                let row = kb.b.ins().iadd(row, ch);
                let base = kb.b.ins().imul_imm_s(row, inner as i64);
                kb.vec_loop(zero, iv, |kb, j, lane| {
                    let idx = kb.b.ins().iadd(base, j);
                    let v = kb.ld(lane, xp, idx);
                    let bb = kb.splat(lane, bs);
                    let s = kb.b.ins().fadd(v, bb);
                    let s = then(kb, s, lane);
                    kb.st(s, o, idx);
                });
            });
        });
    }
}

/// The channels along `axis` and the values of one channel a row (`inner`). [`bias_grad`]
/// sums each channel alone and can compute a part of them.
pub fn channels(ty: &Type, axis: usize) -> (usize, usize) {
    let (_, _, c, inner) = split(ty, axis);
    (c, inner)
}

/// `out[c] = Σ dy[…, c, …]`, summed over rows in order (and, when `inner > 1`, each row's
/// `inner` block into four f32x4 partial sums by 16-value groups, the tail into the first,
/// then the four pairwise and the lanes in order). The kernel sums the first `part` channels
/// (of the slots as given: moved to a later part by [`super::lower::Step::Parts`]).
pub fn bias_grad(kb: &mut Kb, ty: &Type, axis: usize, part: usize, out: usize, dy: usize) {
    let (outer, batched, c, inner) = split(ty, axis);
    let outer = kb.rows(batched, outer);
    let (o, dp) = (kb.ptr(out), kb.ptr(dy));
    let zero = kb.int(0);
    if inner == 1 {
        // Columns by 16, their sums held in four f32x4 registers down the rows; the last
        // `part mod 16` summed in `out` row by row. Either way each column is `0 + dy[0] +
        // dy[1] + …` in row order.
        let by16 = part / 16 * 16;
        let end16 = kb.int(by16 as i64);
        kb.for_step(zero, end16, 16, |kb, j| {
            let z4 = kb.cst(F32X4, 0.0);
            let acc: [_; 4] = std::array::from_fn(|_| kb.var(F32X4, z4));
            kb.for_range(zero, outer, |kb, r| {
                let base = kb.b.ins().imul_imm_s(r, c as i64);
                let base = kb.b.ins().iadd(base, j);
                for (q, &var) in acc.iter().enumerate() {
                    let idx = kb.b.ins().iadd_imm_s(base, 4 * q as i64);
                    let v = kb.ld(F32X4, dp, idx);
                    let a = kb.b.use_var(var);
                    let s = kb.b.ins().fadd(a, v);
                    kb.b.def_var(var, s);
                }
            });
            for (q, &var) in acc.iter().enumerate() {
                let a = kb.b.use_var(var);
                let idx = kb.b.ins().iadd_imm_s(j, 4 * q as i64);
                kb.st(a, o, idx);
            }
        });
        let pv = kb.int(part as i64);
        kb.vec_loop(end16, pv, |kb, j, lane| {
            let z = kb.cst(lane, 0.0);
            kb.st(z, o, j);
        });
        kb.for_range(zero, outer, |kb, r| {
            let base = kb.b.ins().imul_imm_s(r, c as i64);
            kb.vec_loop(end16, pv, |kb, j, lane| {
                let idx = kb.b.ins().iadd(base, j);
                let v = kb.ld(lane, dp, idx);
                let acc = kb.ld_rw(lane, o, j);
                let s = kb.b.ins().fadd(acc, v);
                kb.st(s, o, j);
            });
        });
    } else {
        // Four f32x4 partial sums, so that four additions are in flight instead of one
        // waiting for the last (a convolution's bias gradient sums ~10⁶ values per step).
        let iv = kb.int(inner as i64);
        let by16 = kb.int((inner / 16 * 16) as i64);
        kb.for_n(part, |kb, ch| {
            let z4 = kb.cst(F32X4, 0.0);
            let acc4: [_; 4] = std::array::from_fn(|_| kb.var(F32X4, z4));
            let z1 = kb.cst(types::F32, 0.0);
            let acc1 = kb.var(types::F32, z1);
            let add = |kb: &mut Kb, var, v| {
                let a = kb.b.use_var(var);
                let s = kb.b.ins().fadd(a, v);
                kb.b.def_var(var, s);
            };
            kb.for_range(zero, outer, |kb, r| {
                let row = kb.b.ins().imul_imm_s(r, c as i64);
                let row = kb.b.ins().iadd(row, ch);
                let base = kb.b.ins().imul_imm_s(row, inner as i64);
                kb.for_step(zero, by16, 16, |kb, j| {
                    for (q, &var) in acc4.iter().enumerate() {
                        let idx = kb.b.ins().iadd(base, j);
                        let idx = kb.b.ins().iadd_imm_s(idx, 4 * q as i64);
                        let v = kb.ld(F32X4, dp, idx);
                        add(kb, var, v);
                    }
                });
                kb.vec_loop(by16, iv, |kb, j, lane| {
                    let idx = kb.b.ins().iadd(base, j);
                    let v = kb.ld(lane, dp, idx);
                    add(kb, if lane == F32X4 { acc4[0] } else { acc1 }, v);
                });
            });
            let [a, b, c4, d] = acc4.map(|v| kb.b.use_var(v));
            let ab = kb.b.ins().fadd(a, b);
            let cd = kb.b.ins().fadd(c4, d);
            let a4 = kb.b.ins().fadd(ab, cd);
            let h = kb.hsum(a4, F32X4);
            let a1 = kb.b.use_var(acc1);
            let s = kb.b.ins().fadd(h, a1);
            kb.st(s, o, ch);
        });
    }
}
