//! Elementwise losses (`Mse`, `Bce`, `SumSquares`) and their gradients.
//!
//! Reductions run in a fixed order (four interleaved f64 partial sums, see [`loss`]):
//! deterministic and accurate for large tensors. Gradients are f32x4 elementwise loops.

use cranelift_codegen::ir::{types, InstBuilder, Value};

use super::elementwise::{map, Operand};
use super::kernel::Kb;
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

/// `Mse`, `Bce` (`ins` = [a, b]) and `SumSquares` (`ins` = [x]): a scalar. Four f64 partial
/// sums take the elements in turn (so that four additions are in flight, not one waiting for
/// the last), the tail goes to the first, and they are added pairwise at the end.
pub fn loss(kb: &mut Kb, op: &Op, x: &Type, out: usize, ins: &[usize]) {
    let n = kb.numel(x);
    let o = kb.ptr(out);
    let p: Vec<Value> = ins.iter().map(|s| kb.ptr(*s)).collect();
    let zero = kb.int(0);
    let z = kb.b.ins().f64const(0.0);
    let totals: [_; 4] = std::array::from_fn(|_| kb.var(types::F64, z));
    let term = |kb: &mut Kb, i: Value| -> Value {
        let a = kb.ld(types::F32, p[0], i);
        match op {
            Op::Mse => {
                let b = kb.ld(types::F32, p[1], i);
                let d = kb.b.ins().fsub(a, b);
                let d = kb.b.ins().fpromote(types::F64, d);
                kb.b.ins().fmul(d, d)
            }
            Op::Bce => {
                // −(y·log p + (1 − y)·log(1 − p))
                let y = kb.ld(types::F32, p[1], i);
                let pc = clamp(kb, a, types::F32);
                let one = kb.b.ins().f32const(1.0);
                let q = kb.b.ins().fsub(one, pc);
                let lp = math::emit_log(&mut kb.b, pc);
                let lq = math::emit_log(&mut kb.b, q);
                let omy = kb.b.ins().fsub(one, y);
                let t1 = kb.b.ins().fmul(y, lp);
                let t2 = kb.b.ins().fmul(omy, lq);
                let s = kb.b.ins().fadd(t1, t2);
                let s = kb.b.ins().fneg(s);
                kb.b.ins().fpromote(types::F64, s)
            }
            _ => {
                let a = kb.b.ins().fpromote(types::F64, a);
                kb.b.ins().fmul(a, a)
            }
        }
    };
    let add = |kb: &mut Kb, var, t| {
        let cur = kb.b.use_var(var);
        let cur = kb.b.ins().fadd(cur, t);
        kb.b.def_var(var, cur);
    };
    let n4 = kb.b.ins().band_imm_s(n, !3);
    kb.for_step(zero, n4, 4, |kb, i| {
        for (q, &var) in totals.iter().enumerate() {
            let iq = kb.b.ins().iadd_imm_s(i, q as i64);
            let t = term(kb, iq);
            add(kb, var, t);
        }
    });
    kb.for_range(n4, n, |kb, i| {
        let t = term(kb, i);
        add(kb, totals[0], t);
    });
    let [t0, t1, t2, t3] = totals.map(|v| kb.b.use_var(v));
    let t01 = kb.b.ins().fadd(t0, t1);
    let t23 = kb.b.ins().fadd(t2, t3);
    let mut r = kb.b.ins().fadd(t01, t23);
    if !matches!(op, Op::SumSquares) {
        let nf = kb.b.ins().fcvt_from_uint(types::F64, n);
        r = kb.b.ins().fdiv(r, nf);
    }
    let r = kb.b.ins().fdemote(types::F32, r);
    kb.st(r, o, zero);
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
    let operands = [
        Operand {
            slot: ins[0],
            scalar: false,
        },
        Operand {
            slot: ins[1],
            scalar: false,
        },
    ];
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
