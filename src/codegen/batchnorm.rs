//! Batch normalization (`BatchNorm`, `BatchNormEval` and their gradients, `BatchStats`): each
//! channel's statistics run over the whole batch, so these kernels run on one thread, channel
//! after channel. Sums and the normalization are in f64 (then rounded to f32), so that the
//! results follow the reference interpreter closely whatever the batch.

use cranelift_codegen::ir::{types, InstBuilder, Value};

use super::kernel::Kb;
use crate::ir::{Op, Type};

/// Geometry of a batch norm's input: channels and values per channel per sample (H·W or 1).
fn geometry(x: &Type) -> (usize, usize) {
    let c = x.dims.first().copied().unwrap_or(1);
    (c, x.per_sample() / c.max(1))
}

/// `body(kb, i)` at every element index `i` of channel `ch` (batch then spatial order).
fn each(kb: &mut Kb, (c, s): (usize, usize), ch: Value, body: &mut dyn FnMut(&mut Kb, Value)) {
    let batch = kb.rows(true, 1);
    let zero = kb.int(0);
    kb.for_range(zero, batch, |kb, b| {
        let row = kb.b.ins().imul_imm_s(b, c as i64);
        let row = kb.b.ins().iadd(row, ch);
        let first = kb.b.ins().imul_imm_s(row, s as i64);
        let end = kb.b.ins().iadd_imm_s(first, s as i64);
        kb.for_range(first, end, |kb, i| body(kb, i));
    });
}

/// The f64 value of f32 element `i` of `p`.
fn ld64(kb: &mut Kb, p: Value, i: Value) -> Value {
    let v = kb.ld(types::F32, p, i);
    kb.b.ins().fpromote(types::F64, v)
}

/// Σ f(i) over channel `ch`'s elements, in f64.
fn sum(
    kb: &mut Kb,
    d: (usize, usize),
    ch: Value,
    mut f: impl FnMut(&mut Kb, Value) -> Value,
) -> Value {
    let z = kb.b.ins().f64const(0.0);
    let acc = kb.var(types::F64, z);
    each(kb, d, ch, &mut |kb, i| {
        let t = f(kb, i);
        let cur = kb.b.use_var(acc);
        let cur = kb.b.ins().fadd(cur, t);
        kb.b.def_var(acc, cur);
    });
    kb.b.use_var(acc)
}

/// Channel statistics in f64: the mean, the biased variance, 1/√(var + eps) and N.
struct Stats {
    mean: Value,
    var: Value,
    inv: Value,
    n: Value,
}

fn stats(kb: &mut Kb, x: Value, d: (usize, usize), ch: Value, eps: f32) -> Stats {
    let batch = kb.rows(true, d.1);
    let n = kb.b.ins().fcvt_from_sint(types::F64, batch);
    let s = sum(kb, d, ch, |kb, i| ld64(kb, x, i));
    let mean = kb.b.ins().fdiv(s, n);
    let ss = sum(kb, d, ch, |kb, i| {
        let v = ld64(kb, x, i);
        let dv = kb.b.ins().fsub(v, mean);
        kb.b.ins().fmul(dv, dv)
    });
    let var = kb.b.ins().fdiv(ss, n);
    let inv = inv_std(kb, var, eps);
    Stats { mean, var, inv, n }
}

/// 1/√(var + eps) in f64.
fn inv_std(kb: &mut Kb, var: Value, eps: f32) -> Value {
    let e = kb.b.ins().f64const(eps as f64);
    let ve = kb.b.ins().fadd(var, e);
    let sd = kb.b.ins().sqrt(ve);
    let one = kb.b.ins().f64const(1.0);
    kb.b.ins().fdiv(one, sd)
}

/// x̂ = (x[i] − mean)·inv in f64.
fn x_hat(kb: &mut Kb, x: Value, i: Value, st: &Stats) -> Value {
    let v = ld64(kb, x, i);
    let dv = kb.b.ins().fsub(v, st.mean);
    kb.b.ins().fmul(dv, st.inv)
}

/// Stores the f64 `v` as f32 element `i` of `p`.
fn st32(kb: &mut Kb, v: Value, p: Value, i: Value) {
    let v = kb.b.ins().fdemote(types::F32, v);
    kb.st(v, p, i);
}

/// One batch norm node: `op` with the input slots `ins` (input 0 of type `x_ty`), writing slot
/// `out`.
pub fn batch_norm(kb: &mut Kb, op: &Op, x_ty: &Type, out: usize, ins: &[usize]) {
    let d = geometry(x_ty);
    let o = kb.ptr(out);
    let p: Vec<Value> = ins.iter().map(|&s| kb.ptr(s)).collect();
    let op = op.clone();
    kb.for_n(d.0, |kb, ch| match op {
        Op::BatchNorm { eps } => {
            let st = stats(kb, p[0], d, ch, eps);
            let w = ld64(kb, p[1], ch);
            let b = ld64(kb, p[2], ch);
            each(kb, d, ch, &mut |kb, i| {
                let h = x_hat(kb, p[0], i, &st);
                let y = kb.b.ins().fmul(h, w);
                let y = kb.b.ins().fadd(y, b);
                st32(kb, y, o, i);
            });
        }
        Op::BatchNormEval { eps } => {
            let [w, b, mean, var] = [1, 2, 3, 4].map(|k| ld64(kb, p[k], ch));
            let inv = inv_std(kb, var, eps);
            let scale = kb.b.ins().fmul(inv, w);
            each(kb, d, ch, &mut |kb, i| {
                let v = ld64(kb, p[0], i);
                let dv = kb.b.ins().fsub(v, mean);
                let y = kb.b.ins().fmul(dv, scale);
                let y = kb.b.ins().fadd(y, b);
                st32(kb, y, o, i);
            });
        }
        Op::BatchNormEvalGrad { eps } => {
            // ins: dy, weight, running_var.
            let [w, var] = [1, 2].map(|k| ld64(kb, p[k], ch));
            let inv = inv_std(kb, var, eps);
            let scale = kb.b.ins().fmul(inv, w);
            each(kb, d, ch, &mut |kb, i| {
                let g = ld64(kb, p[0], i);
                let y = kb.b.ins().fmul(g, scale);
                st32(kb, y, o, i);
            });
        }
        Op::BatchNormGrad { eps } => {
            // ins: x, weight, dy.
            let st = stats(kb, p[0], d, ch, eps);
            let sg = sum(kb, d, ch, |kb, i| ld64(kb, p[2], i));
            let sgx = sum(kb, d, ch, |kb, i| {
                let h = x_hat(kb, p[0], i, &st);
                let g = ld64(kb, p[2], i);
                kb.b.ins().fmul(h, g)
            });
            let mg = kb.b.ins().fdiv(sg, st.n);
            let mgx = kb.b.ins().fdiv(sgx, st.n);
            let w = ld64(kb, p[1], ch);
            let scale = kb.b.ins().fmul(w, st.inv);
            each(kb, d, ch, &mut |kb, i| {
                let h = x_hat(kb, p[0], i, &st);
                let g = ld64(kb, p[2], i);
                let t = kb.b.ins().fsub(g, mg);
                let hx = kb.b.ins().fmul(h, mgx);
                let t = kb.b.ins().fsub(t, hx);
                let y = kb.b.ins().fmul(scale, t);
                st32(kb, y, o, i);
            });
        }
        Op::BatchNormWeightGrad { eps } => {
            // ins: x, dy.
            let st = stats(kb, p[0], d, ch, eps);
            let s = sum(kb, d, ch, |kb, i| {
                let h = x_hat(kb, p[0], i, &st);
                let g = ld64(kb, p[1], i);
                kb.b.ins().fmul(h, g)
            });
            st32(kb, s, o, ch);
        }
        Op::BatchStats { .. } => {
            // The unbiased variance: N/(N − 1) times the biased one (N > 1, checked before).
            let st = stats(kb, p[0], d, ch, 1.0);
            st32(kb, st.mean, o, ch);
            let one = kb.b.ins().f64const(1.0);
            let n1 = kb.b.ins().fsub(st.n, one);
            let v = kb.b.ins().fmul(st.var, st.n);
            let v = kb.b.ins().fdiv(v, n1);
            let at = kb.b.ins().iadd_imm_s(ch, d.0 as i64);
            st32(kb, v, o, at);
        }
        _ => unreachable!("batch_norm kernels are built for the batch norm ops only"),
    });
}
