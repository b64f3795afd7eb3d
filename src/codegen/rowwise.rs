//! Ops over the last axis, row by row: softmax, log-softmax, layer normalization, their
//! gradients, and the softmax-based losses (cross-entropy with labels or soft targets, KL
//! divergence) with theirs.
//!
//! Every row subtracts its maximum before `exp` (numerically stable). Losses sum the rows in
//! order in f64 and divide by the row count, so they are deterministic and accurate.

use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Value};

use super::elementwise::clamp_index;
use super::kernel::{Kb, F32X4};
use super::math;
use crate::ir::{Op, Type};

/// Row geometry of a tensor: number of rows (batch-dependent) and row length.
fn rows(kb: &mut Kb, ty: &Type) -> (Value, usize) {
    let c = ty.last();
    (kb.rows(ty.batched, ty.per_sample() / c.max(1)), c)
}

/// Reduces `f(j)` over `j < c` with f32x4 partial results then lanes in order (sum or max).
fn reduce(
    kb: &mut Kb,
    c: usize,
    max: bool,
    mut f: impl FnMut(&mut Kb, Value, types::Type) -> Value,
) -> Value {
    let init = if max { f32::NEG_INFINITY } else { 0.0 };
    let i4 = kb.cst(F32X4, init);
    let acc4 = kb.var(F32X4, i4);
    let i1 = kb.cst(types::F32, init);
    let acc1 = kb.var(types::F32, i1);
    let zero = kb.int(0);
    let cv = kb.int(c as i64);
    kb.vec_loop(zero, cv, |kb, j, lane| {
        let v = f(kb, j, lane);
        let var = if lane == F32X4 { acc4 } else { acc1 };
        let a = kb.b.use_var(var);
        let r = if max {
            kb.b.ins().fmax(a, v)
        } else {
            kb.b.ins().fadd(a, v)
        };
        kb.b.def_var(var, r);
    });
    let a4 = kb.b.use_var(acc4);
    let a1 = kb.b.use_var(acc1);
    let r = if max {
        let h = kb.hmax(a4, F32X4);
        kb.b.ins().fmax(h, a1)
    } else {
        let h = kb.hsum(a4, F32X4);
        kb.b.ins().fadd(h, a1)
    };
    // Computed once per row: the shuffles of the horizontal max or sum take constant masks,
    // so the e-graph pass would place them in the loops that use the result (the row's max
    // in the `exp` loop that follows: four NaN-aware maxes per f32x4 of the row).
    kb.materialize(r)
}

/// `(max, Σ exp(x − max))` of the row at element offset `base` of `p`.
fn max_sumexp(kb: &mut Kb, p: Value, base: Value, c: usize) -> (Value, Value) {
    let mx = reduce(kb, c, true, |kb, j, lane| {
        let i = kb.b.ins().iadd(base, j);
        kb.ld(lane, p, i)
    });
    let s = reduce(kb, c, false, |kb, j, lane| {
        let i = kb.b.ins().iadd(base, j);
        let x = kb.ld(lane, p, i);
        let m = kb.splat(lane, mx);
        let d = kb.b.ins().fsub(x, m);
        math::emit_exp(&mut kb.b, d)
    });
    (mx, s)
}

/// log Σ exp(row) = max + log Σ exp(x − max), as its two terms `(max, log Σ exp(x − max))`.
/// They are kept apart: `x − lse` is computed as `(x − max) − log Σ…`, exact where `x` is the
/// maximum; with `(x − (max + log Σ…))` a large max absorbs the logarithm (logits of 1e8 gave a
/// cross-entropy of 0 for a uniform row of 3 classes instead of ln 3).
fn logsumexp(kb: &mut Kb, p: Value, base: Value, c: usize) -> (Value, Value) {
    let (mx, s) = max_sumexp(kb, p, base, c);
    (mx, math::emit_log(&mut kb.b, s))
}

/// `x − logsumexp` (lanes of `x`) from the two terms of [`logsumexp`]: `(x − max) − log Σ…`.
fn minus_lse(kb: &mut Kb, x: Value, lane: types::Type, (mx, l): (Value, Value)) -> Value {
    let m = kb.splat(lane, mx);
    let d = kb.b.ins().fsub(x, m);
    let l = kb.splat(lane, l);
    kb.b.ins().fsub(d, l)
}

/// `out[base + j] = f(j)` over the row.
fn write_row(
    kb: &mut Kb,
    out: Value,
    base: Value,
    c: usize,
    mut f: impl FnMut(&mut Kb, Value, Value, types::Type) -> Value,
) {
    let zero = kb.int(0);
    let cv = kb.int(c as i64);
    kb.vec_loop(zero, cv, |kb, j, lane| {
        let i = kb.b.ins().iadd(base, j);
        let v = f(kb, i, j, lane);
        kb.st(v, out, i);
    });
}

/// Softmax of the row of `p` at `base` (lanes of `lane`), given `(max, Σexp)`.
fn softmax_at(kb: &mut Kb, p: Value, i: Value, lane: types::Type, mx: Value, inv: Value) -> Value {
    let x = kb.ld(lane, p, i);
    let m = kb.splat(lane, mx);
    let d = kb.b.ins().fsub(x, m);
    let e = math::emit_exp(&mut kb.b, d);
    let s = kb.splat(lane, inv);
    kb.b.ins().fmul(e, s)
}

fn recip(kb: &mut Kb, s: Value) -> Value {
    let one = kb.b.ins().f32const(1.0);
    let r = kb.b.ins().fdiv(one, s);
    kb.materialize(r)
}

/// Loads label `r` (i32) as an i64 clamped into `0..c` (the executor rejects bad labels first).
fn label(kb: &mut Kb, ids: Value, r: Value, c: usize) -> Value {
    let a = kb.addr(ids, r, 4);
    let id =
        kb.b.ins()
            .sload32(MemFlagsData::trusted().with_readonly(), a, 0);
    clamp_index(kb, id, c).0
}

/// `Softmax`, `LogSoftmax`, `SoftmaxGrad`, `LogSoftmaxGrad`: `ins` are the node's input slots.
pub fn normalize(kb: &mut Kb, op: &Op, ty: &Type, out: usize, ins: &[usize]) {
    let (r, c) = rows(kb, ty);
    let o = kb.ptr(out);
    let p: Vec<Value> = ins.iter().map(|s| kb.ptr(*s)).collect();
    let zero = kb.int(0);
    kb.for_range(zero, r, |kb, row| {
        let base = kb.b.ins().imul_imm_s(row, c as i64);
        match op {
            Op::Softmax => {
                let (mx, s) = max_sumexp(kb, p[0], base, c);
                let inv = recip(kb, s);
                write_row(kb, o, base, c, |kb, i, _, lane| {
                    softmax_at(kb, p[0], i, lane, mx, inv)
                });
            }
            Op::LogSoftmax => {
                let lse = logsumexp(kb, p[0], base, c);
                write_row(kb, o, base, c, |kb, i, _, lane| {
                    let x = kb.ld(lane, p[0], i);
                    minus_lse(kb, x, lane, lse)
                });
            }
            Op::SoftmaxGrad => {
                let s = reduce(kb, c, false, |kb, j, lane| {
                    let i = kb.b.ins().iadd(base, j);
                    let y = kb.ld(lane, p[0], i);
                    let d = kb.ld(lane, p[1], i);
                    kb.b.ins().fmul(y, d)
                });
                write_row(kb, o, base, c, |kb, i, _, lane| {
                    let y = kb.ld(lane, p[0], i);
                    let d = kb.ld(lane, p[1], i);
                    let sv = kb.splat(lane, s);
                    let t = kb.b.ins().fsub(d, sv);
                    kb.b.ins().fmul(y, t)
                });
            }
            _ => {
                // LogSoftmaxGrad: dx = dy − exp(y)·Σdy
                let s = reduce(kb, c, false, |kb, j, lane| {
                    let i = kb.b.ins().iadd(base, j);
                    kb.ld(lane, p[1], i)
                });
                write_row(kb, o, base, c, |kb, i, _, lane| {
                    let y = kb.ld(lane, p[0], i);
                    let d = kb.ld(lane, p[1], i);
                    let e = math::emit_exp(&mut kb.b, y);
                    let sv = kb.splat(lane, s);
                    let t = kb.b.ins().fmul(e, sv);
                    kb.b.ins().fsub(d, t)
                });
            }
        }
    });
}

/// The mean of the row of `x` at `base` and 1/σ, σ = √(var + eps) with the biased variance.
/// Three passes over the row: its sum, whose mean m₀ is off by the f32 rounding of a large sum
/// (3e-4 of σ for 1,024 values of mean 1,000σ); the deviations from m₀, whose mean corrects it
/// to the rounding of the mean itself, as PyTorch's; then the squared deviations.
fn mean_inv_std(kb: &mut Kb, x: Value, base: Value, c: usize, eps: f32) -> (Value, Value) {
    let inv_c = 1.0 / c as f32;
    let s = reduce(kb, c, false, |kb, j, lane| {
        let i = kb.b.ins().iadd(base, j);
        kb.ld(lane, x, i)
    });
    let m0 = times(kb, s, inv_c);
    let m0 = kb.materialize(m0);
    let d = reduce(kb, c, false, |kb, j, lane| {
        let i = kb.b.ins().iadd(base, j);
        let v = kb.ld(lane, x, i);
        let m = kb.splat(lane, m0);
        kb.b.ins().fsub(v, m)
    });
    let d = times(kb, d, inv_c);
    let mean = kb.b.ins().fadd(m0, d);
    let mean = kb.materialize(mean);
    let ss = reduce(kb, c, false, |kb, j, lane| {
        let i = kb.b.ins().iadd(base, j);
        let v = kb.ld(lane, x, i);
        let m = kb.splat(lane, mean);
        let d = kb.b.ins().fsub(v, m);
        kb.b.ins().fmul(d, d)
    });
    let var = times(kb, ss, inv_c);
    let e = kb.b.ins().f32const(eps);
    let ve = kb.b.ins().fadd(var, e);
    let sd = kb.b.ins().sqrt(ve);
    (mean, recip(kb, sd))
}

/// `v · k` for a constant `k`.
fn times(kb: &mut Kb, v: Value, k: f32) -> Value {
    let k = kb.b.ins().f32const(k);
    kb.b.ins().fmul(v, k)
}

/// x̂ = (x − mean)/σ at element `i` of `x` (lanes of `lane`).
fn x_hat(kb: &mut Kb, x: Value, i: Value, lane: types::Type, (mean, inv): (Value, Value)) -> Value {
    let v = kb.ld(lane, x, i);
    let m = kb.splat(lane, mean);
    let d = kb.b.ins().fsub(v, m);
    let s = kb.splat(lane, inv);
    kb.b.ins().fmul(d, s)
}

/// `LayerNorm` (`ins`: x, weight, bias) and `LayerNormGrad` (`ins`: x, weight, dy) of the
/// value `ty`, row by row.
pub fn layer_norm(kb: &mut Kb, op: &Op, ty: &Type, out: usize, ins: &[usize], eps: f32) {
    let (r, c) = rows(kb, ty);
    let o = kb.ptr(out);
    let [x, w, z] = [0, 1, 2].map(|k| kb.ptr(ins[k]));
    let zero = kb.int(0);
    let inv_c = 1.0 / c as f32;
    kb.for_range(zero, r, |kb, row| {
        let base = kb.b.ins().imul_imm_s(row, c as i64);
        let stats = mean_inv_std(kb, x, base, c, eps);
        if matches!(op, Op::LayerNorm { .. }) {
            write_row(kb, o, base, c, |kb, i, j, lane| {
                let h = x_hat(kb, x, i, lane, stats);
                let wv = kb.ld(lane, w, j);
                let bv = kb.ld(lane, z, j);
                let s = kb.b.ins().fmul(h, wv);
                kb.b.ins().fadd(s, bv)
            });
            return;
        }
        // g = dy ⊙ w; dx = (g − mean(g) − x̂·mean(g ⊙ x̂)) / σ.
        let g = |kb: &mut Kb, i: Value, j: Value, lane| {
            let d = kb.ld(lane, z, i);
            let wv = kb.ld(lane, w, j);
            kb.b.ins().fmul(d, wv)
        };
        let sg = reduce(kb, c, false, |kb, j, lane| {
            let i = kb.b.ins().iadd(base, j);
            g(kb, i, j, lane)
        });
        let sgx = reduce(kb, c, false, |kb, j, lane| {
            let i = kb.b.ins().iadd(base, j);
            let gv = g(kb, i, j, lane);
            let h = x_hat(kb, x, i, lane, stats);
            kb.b.ins().fmul(gv, h)
        });
        let mg = times(kb, sg, inv_c);
        let mgx = times(kb, sgx, inv_c);
        let (mg, mgx) = (kb.materialize(mg), kb.materialize(mgx));
        write_row(kb, o, base, c, |kb, i, j, lane| {
            let gv = g(kb, i, j, lane);
            let h = x_hat(kb, x, i, lane, stats);
            let m = kb.splat(lane, mg);
            let t = kb.b.ins().fsub(gv, m);
            let mx = kb.splat(lane, mgx);
            let hx = kb.b.ins().fmul(h, mx);
            let t = kb.b.ins().fsub(t, hx);
            let s = kb.splat(lane, stats.1);
            kb.b.ins().fmul(t, s)
        });
    });
}

/// `LayerNormWeightGrad` (`ins`: x of type `x_ty`, dy): Σ over the rows of dy ⊙ x̂ into `out`,
/// row after row (one thread: the sums are over the batch).
pub fn layer_norm_weight_grad(kb: &mut Kb, x_ty: &Type, out: usize, ins: &[usize], eps: f32) {
    let (r, c) = rows(kb, x_ty);
    let o = kb.ptr(out);
    let (x, dy) = (kb.ptr(ins[0]), kb.ptr(ins[1]));
    let zero = kb.int(0);
    let cv = kb.int(c as i64);
    kb.vec_loop(zero, cv, |kb, j, lane| {
        let z = kb.cst(lane, 0.0);
        kb.st(z, o, j);
    });
    kb.for_range(zero, r, |kb, row| {
        let base = kb.b.ins().imul_imm_s(row, c as i64);
        let stats = mean_inv_std(kb, x, base, c, eps);
        kb.vec_loop(zero, cv, |kb, j, lane| {
            let i = kb.b.ins().iadd(base, j);
            let h = x_hat(kb, x, i, lane, stats);
            let d = kb.ld(lane, dy, i);
            let p = kb.b.ins().fmul(h, d);
            let acc = kb.ld_rw(lane, o, j);
            let s = kb.b.ins().fadd(acc, p);
            kb.st(s, o, j);
        });
    });
}

/// `CrossEntropy`, `SoftCrossEntropy`, `KlDiv`, first kernel: each sample's sum of its rows'
/// terms, in f64 in row order, into `partial` (one f64 a sample). Samples are independent, so
/// the kernel runs on slices of the batch; [`loss_mean`] then adds them up in order. `x` is the
/// logits' type; `ins` the node's two input slots.
pub fn loss_per_sample(kb: &mut Kb, op: &Op, x: &Type, partial: usize, ins: &[usize]) {
    let c = x.last();
    let per = x.per_sample() / c.max(1);
    let samples = kb.rows(x.batched, 1);
    let o = kb.ptr(partial);
    let (a, b) = (kb.ptr(ins[0]), kb.ptr(ins[1]));
    let zero = kb.int(0);
    kb.for_range(zero, samples, |kb, sample| {
        let z = kb.b.ins().f64const(0.0);
        let total = kb.var(types::F64, z);
        let first = kb.b.ins().imul_imm_s(sample, per as i64);
        let end = kb.b.ins().iadd_imm_s(first, per as i64);
        kb.for_range(first, end, |kb, row| {
            let t = term(kb, op, (a, b), row, c);
            let t = kb.b.ins().fpromote(types::F64, t);
            let cur = kb.b.use_var(total);
            let cur = kb.b.ins().fadd(cur, t);
            kb.b.def_var(total, cur);
        });
        let sum = kb.b.use_var(total);
        // An f64 is two f32 slots of `partial`.
        let at = kb.b.ins().iadd(sample, sample);
        kb.st(sum, o, at);
    });
}

/// The loss's second kernel: the samples' sums of [`loss_per_sample`] added in order, over the
/// number of rows, into `out`.
pub fn loss_mean(kb: &mut Kb, x: &Type, partial: usize, out: usize) {
    let (r, _) = rows(kb, x);
    let samples = kb.rows(x.batched, 1);
    let (p, o) = (kb.ptr(partial), kb.ptr(out));
    let zero = kb.int(0);
    let z = kb.b.ins().f64const(0.0);
    let total = kb.var(types::F64, z);
    kb.for_range(zero, samples, |kb, sample| {
        let at = kb.b.ins().iadd(sample, sample);
        let v = kb.ld(types::F64, p, at);
        let cur = kb.b.use_var(total);
        let cur = kb.b.ins().fadd(cur, v);
        kb.b.def_var(total, cur);
    });
    let sum = kb.b.use_var(total);
    let rf = kb.b.ins().fcvt_from_uint(types::F64, r);
    let mean = kb.b.ins().fdiv(sum, rf);
    let m32 = kb.b.ins().fdemote(types::F32, mean);
    kb.st(m32, o, zero);
}

/// The loss term of row `row` (of `c` logits at `a`; labels or targets at `b`).
fn term(kb: &mut Kb, op: &Op, (a, b): (Value, Value), row: Value, c: usize) -> Value {
    let base = kb.b.ins().imul_imm_s(row, c as i64);
    match op {
        Op::CrossEntropy => {
            let lse = logsumexp(kb, a, base, c);
            let l = label(kb, b, row, c);
            let i = kb.b.ins().iadd(base, l);
            let xl = kb.ld(types::F32, a, i);
            let d = minus_lse(kb, xl, types::F32, lse);
            kb.b.ins().fneg(d)
        }
        Op::SoftCrossEntropy => {
            // Σ t_j·(lse − x_j)
            let lse = logsumexp(kb, a, base, c);
            reduce(kb, c, false, |kb, j, lane| {
                let i = kb.b.ins().iadd(base, j);
                let x = kb.ld(lane, a, i);
                let t = kb.ld(lane, b, i);
                let d = minus_lse(kb, x, lane, lse);
                let d = kb.b.ins().fneg(d);
                kb.b.ins().fmul(t, d)
            })
        }
        _ => {
            // KL(P‖Q) = Σ P_j·((p_j − lse_p) − (q_j − lse_q))
            let lp = logsumexp(kb, a, base, c);
            let lq = logsumexp(kb, b, base, c);
            reduce(kb, c, false, |kb, j, lane| {
                let i = kb.b.ins().iadd(base, j);
                let p = kb.ld(lane, a, i);
                let q = kb.ld(lane, b, i);
                let logp = minus_lse(kb, p, lane, lp);
                let logq = minus_lse(kb, q, lane, lq);
                let pp = math::emit_exp(&mut kb.b, logp);
                let d = kb.b.ins().fsub(logp, logq);
                kb.b.ins().fmul(pp, d)
            })
        }
    }
}

/// One row of `CrossEntropyGrad`: `out[base + j] = softmax(x[base..base + c])_j · scale`, less
/// `scale` at the row's label, `label.0[label.1]` (also the loss epilogue of a classifier's
/// product, [`super::epilogue`], on each row of C as the GEMM finishes it).
pub fn cross_entropy_grad_row(
    kb: &mut Kb,
    x: Value,
    out: Value,
    base: Value,
    c: usize,
    label_at: (Value, Value),
    scale: Value,
) {
    let (mx, s) = max_sumexp(kb, x, base, c);
    let inv = recip(kb, s);
    write_row(kb, out, base, c, |kb, i, _, lane| {
        let sm = softmax_at(kb, x, i, lane, mx, inv);
        let sc = kb.splat(lane, scale);
        kb.b.ins().fmul(sm, sc)
    });
    let l = label(kb, label_at.0, label_at.1, c);
    let i = kb.b.ins().iadd(base, l);
    let v = kb.ld_rw(types::F32, out, i);
    let d = kb.b.ins().fsub(v, scale);
    kb.st(d, out, i);
}

/// `CrossEntropyGrad`, `SoftCrossEntropyGrad`, `KlDivGrad`: `(softmax(x) − target)·dl/R` where
/// x is the logits (the second input for KL, whose first input gives the target distribution).
pub fn loss_grad(kb: &mut Kb, op: &Op, x: &Type, out: usize, ins: &[usize]) {
    let (r, c) = rows(kb, x);
    let o = kb.ptr(out);
    let (a, b, dl) = (kb.ptr(ins[0]), kb.ptr(ins[1]), kb.ptr(ins[2]));
    let zero = kb.int(0);
    let dlv = kb.ld(types::F32, dl, zero);
    let rf = kb.b.ins().fcvt_from_uint(types::F32, r);
    let scale = kb.b.ins().fdiv(dlv, rf);
    let scale = kb.materialize(scale);
    kb.for_range(zero, r, |kb, row| {
        let base = kb.b.ins().imul_imm_s(row, c as i64);
        match op {
            Op::CrossEntropyGrad => cross_entropy_grad_row(kb, a, o, base, c, (b, row), scale),
            Op::SoftCrossEntropyGrad => {
                let (mx, s) = max_sumexp(kb, a, base, c);
                let inv = recip(kb, s);
                write_row(kb, o, base, c, |kb, i, _, lane| {
                    let sm = softmax_at(kb, a, i, lane, mx, inv);
                    let t = kb.ld(lane, b, i);
                    let d = kb.b.ins().fsub(sm, t);
                    let sc = kb.splat(lane, scale);
                    kb.b.ins().fmul(d, sc)
                });
            }
            _ => {
                let (mp, sp) = max_sumexp(kb, a, base, c);
                let ip = recip(kb, sp);
                let (mq, sq) = max_sumexp(kb, b, base, c);
                let iq = recip(kb, sq);
                write_row(kb, o, base, c, |kb, i, _, lane| {
                    let p = softmax_at(kb, a, i, lane, mp, ip);
                    let q = softmax_at(kb, b, i, lane, mq, iq);
                    let d = kb.b.ins().fsub(q, p);
                    let sc = kb.splat(lane, scale);
                    kb.b.ins().fmul(d, sc)
                });
            }
        }
    });
}
