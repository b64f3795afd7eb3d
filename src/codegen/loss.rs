//! Elementwise losses (`Mse`, `Bce`, `SumSquares`) and their gradients.
//!
//! Reductions run in a fixed order (interleaved f64 partial sums, see [`loss`]): deterministic
//! and accurate for large tensors. Gradients are f32x4 elementwise loops.

use cranelift_codegen::ir::types::{self, F64X2};
use cranelift_codegen::ir::{InstBuilder, Value};

use super::elementwise::{map, Operand};
use super::kernel::{Kb, F32X4};
use super::math;
use crate::ir::{Op, Type};

const EPS: f32 = 1e-7;

/// `p` clamped to `[1e-7, 1 − 1e-7]` (lanes of `lane`).
fn clamp(kb: &mut Kb, p: Value, lane: types::Type) -> Value {
    let lo = kb.cst(lane, EPS);
    let hi = kb.cst(lane, 1.0 - EPS);
    let p = kb.b.ins().fmax(p, lo);
    kb.b.ins().fmin(p, hi)
}

/// `Mse`, `Bce` (`ins = [a, b]`) and `SumSquares` (`ins = [x]`): a scalar, summed in f64 in a
/// fixed order ([`sum_f64`]): `Mse` and `SumSquares` the squares of f32 differences (or
/// values), `Bce` its f32 terms −(y·log p + (1 − y)·log(1 − p)), each computed four lanes at a
/// time.
pub fn loss(kb: &mut Kb, op: &Op, x: &Type, out: usize, ins: &[usize]) {
    let n = kb.numel(x);
    let o = kb.ptr(out);
    let p: Vec<Value> = ins.iter().map(|s| kb.ptr(*s)).collect();
    let mut r = match op {
        Op::Bce => sum_f64(kb, n, false, |kb, lane, i| bce_term(kb, lane, &p, i)),
        _ => sum_f64(kb, n, true, |kb, lane, i| {
            let x = kb.ld(lane, p[0], i);
            match p.get(1) {
                Some(&b) => {
                    let y = kb.ld(lane, b, i);
                    kb.b.ins().fsub(x, y)
                }
                None => x,
            }
        }),
    };
    if !matches!(op, Op::SumSquares) {
        let nf = kb.b.ins().fcvt_from_uint(types::F64, n);
        r = kb.b.ins().fdiv(r, nf);
    }
    let r = kb.b.ins().fdemote(types::F32, r);
    let zero = kb.int(0);
    kb.st(r, o, zero);
}

/// `Σ term(i)` (`square`: `Σ term(i)²`) over `n` elements, in f64, where `term` computes
/// the f32 values of the elements from `i` in lanes of its type (`F32X4` or `F32`): each is
/// promoted to f64 before it is squared, so that the square is exact. Eight partial sums (four
/// f64x2 accumulators over groups of eight elements, so that four additions are in flight)
/// take the elements `i ≡ r (mod 8)`; a scalar sum takes the last `n mod 8`; then
/// `((s0 + s1) + (s2 + s3))` lane by lane, the two lanes, and the tail.
fn sum_f64(
    kb: &mut Kb,
    n: Value,
    square: bool,
    term: impl Fn(&mut Kb, types::Type, Value) -> Value,
) -> Value {
    let zero = kb.int(0);
    let z2 = kb.b.ins().f64const(0.0);
    let z2 = kb.b.ins().splat(F64X2, z2);
    let acc: [_; 4] = std::array::from_fn(|_| kb.var(F64X2, z2));
    let z1 = kb.b.ins().f64const(0.0);
    let tail = kb.var(types::F64, z1);
    let add = |kb: &mut Kb, var, v: Value| {
        let v = if square { kb.b.ins().fmul(v, v) } else { v };
        let cur = kb.b.use_var(var);
        let cur = kb.b.ins().fadd(cur, v);
        kb.b.def_var(var, cur);
    };
    let n8 = kb.b.ins().band_imm_s(n, !7);
    kb.for_step(zero, n8, 8, |kb, i| {
        for g in 0..2 {
            let ig = kb.b.ins().iadd_imm_s(i, 4 * g);
            let d = term(kb, F32X4, ig);
            let lo = kb.b.ins().fvpromote_low(d);
            let hi = kb.shuffle(d, d, [2, 3, 2, 3]);
            let hi = kb.b.ins().fvpromote_low(hi);
            add(kb, acc[2 * g as usize], lo);
            add(kb, acc[2 * g as usize + 1], hi);
        }
    });
    kb.for_range(n8, n, |kb, i| {
        let d = term(kb, types::F32, i);
        let d = kb.b.ins().fpromote(types::F64, d);
        add(kb, tail, d);
    });
    let [s0, s1, s2, s3] = acc.map(|v| kb.b.use_var(v));
    let s01 = kb.b.ins().fadd(s0, s1);
    let s23 = kb.b.ins().fadd(s2, s3);
    let s = kb.b.ins().fadd(s01, s23);
    let l0 = kb.b.ins().extractlane(s, 0);
    let l1 = kb.b.ins().extractlane(s, 1);
    let s = kb.b.ins().fadd(l0, l1);
    let t = kb.b.use_var(tail);
    kb.b.ins().fadd(s, t)
}

/// `−(y·log p + (1 − y)·log(1 − p))` for the elements at `i` of `p` and `y` (`ins`), in lanes
/// of `lane`, p clamped to [1e-7, 1 − 1e-7].
fn bce_term(kb: &mut Kb, lane: types::Type, ins: &[Value], i: Value) -> Value {
    let a = kb.ld(lane, ins[0], i);
    let y = kb.ld(lane, ins[1], i);
    let pc = clamp(kb, a, lane);
    let one = kb.cst(lane, 1.0);
    let q = kb.b.ins().fsub(one, pc);
    let lp = math::emit_log(&mut kb.b, pc);
    let lq = math::emit_log(&mut kb.b, q);
    let omy = kb.b.ins().fsub(one, y);
    let t1 = kb.b.ins().fmul(y, lp);
    let t2 = kb.b.ins().fmul(omy, lq);
    let s = kb.b.ins().fadd(t1, t2);
    kb.b.ins().fneg(s)
}

/// `MeanToSum`: the scalar mean `ins[0]` times the number of terms, numel(`x`)/`per`, in f32
/// (the count is exact up to 2²⁴ terms; with dl = 1 a loss gradient's dl·count/count is 1).
pub fn mean_to_sum(kb: &mut Kb, per: usize, x: &Type, out: usize, ins: &[usize]) {
    let n = kb.numel(x);
    let terms = kb.b.ins().udiv_imm_u(n, per as i64);
    let count = kb.b.ins().fcvt_from_uint(types::F32, terms);
    let zero = kb.int(0);
    let m = kb.ptr(ins[0]);
    let m = kb.ld(types::F32, m, zero);
    let sum = kb.b.ins().fmul(m, count);
    let o = kb.ptr(out);
    kb.st(sum, o, zero);
}

/// `MseGrad` = 2(a − b)·dl/N and `BceGrad` = (p − y)/(p(1 − p))·dl/N; `ins` = [a, b, dl].
pub fn loss_grad(kb: &mut Kb, op: &Op, x: &Type, out: usize, ins: &[usize]) {
    let n = kb.numel(x);
    let zero = kb.int(0);
    let dl = kb.ptr(ins[2]);
    let dlv = kb.ld(types::F32, dl, zero);
    let nf = kb.b.ins().fcvt_from_uint(types::F32, n);
    let scale = kb.b.ins().fdiv(dlv, nf);
    let bce = matches!(op, Op::BceGrad);
    let operands = [Operand::each(ins[0]), Operand::each(ins[1])];
    map(kb, x, out, &operands, &|kb: &mut Kb, v: &[Value], lane| {
        let s = kb.splat(lane, scale);
        if bce {
            let p = clamp(kb, v[0], lane);
            let one = kb.cst(lane, 1.0);
            let d = kb.b.ins().fsub(p, v[1]);
            let q = kb.b.ins().fsub(one, p);
            let den = kb.b.ins().fmul(p, q);
            let g = kb.b.ins().fdiv(d, den);
            kb.b.ins().fmul(g, s)
        } else {
            mse_grad(kb, v[0], v[1], s)
        }
    });
}

/// `MseGrad` of one lane group: `2(a − b)·scale`, `scale` = dl/N splatted (also the loss
/// epilogue of a regressor's product, [`super::epilogue`]).
pub fn mse_grad(kb: &mut Kb, a: Value, b: Value, scale: Value) -> Value {
    let d = kb.b.ins().fsub(a, b);
    let d = kb.b.ins().fadd(d, d);
    kb.b.ins().fmul(d, scale)
}
