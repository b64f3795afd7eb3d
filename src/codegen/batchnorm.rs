//! Batch normalization (`BatchNorm`, `BatchNormEval` and their gradients, `BatchStats`): each
//! channel's statistics run over the whole batch, so a kernel computes a group of channels over
//! every sample, channel after channel, and the groups are the parts of a `Step::Parts` step,
//! spread over the threads (each channel is computed whole by one thread: the results do not
//! depend on how many there are). Every slot is moved to the group's first channel; a
//! channel's H·W values of each sample are contiguous, `C·H·W` apart from one sample to the
//! next.
//!
//! Element-wise passes run in f32x4 steps over each sample's H·W values; sums add each
//! sample's f32x4 partial sums into an f64 total, so that a channel of many values (a batch of
//! images) is summed accurately. `[C]` vectors (H·W = 1) take four adjacent channels a step
//! instead, a channel a lane ([`Chans`]): each sample's value of each channel goes into that
//! channel's f64 sum, the same additions in the same order as one channel at a time.
//!
//! The evaluation ops (`BatchNormEval`, `BatchNormEvalGrad`) use no batch statistics: each
//! element is a channel's affine function of its own value, so they run sample by sample in
//! memory order instead ([`eval_rows`]), and a split of the batch over the threads changes no
//! bits. Walking channel by channel through a large batch read each channel's H·W values of
//! every sample, a short run every C·H·W floats, several times slower than a stream.

use std::cell::Cell;

use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::Variable;

use super::elementwise::chain;
use super::kernel::{Kb, F32X4};
use crate::ir::{Op, Type, UnaryOp};

/// Geometry of a batch norm's input: channels and values per channel per sample (H·W or 1).
pub fn geometry(x: &Type) -> (usize, usize) {
    let c = x.dims.first().copied().unwrap_or(1);
    (c, x.per_sample() / c.max(1))
}

/// The channels a kernel computes at once, from channel `ch`: one (`lane` f32), or four
/// adjacent channels of a `[C]` vector (`lane` f32x4, a channel a lane).
#[derive(Clone, Copy)]
struct Chans {
    ch: Value,
    lane: types::Type,
}

impl Chans {
    /// How many channels: the lanes of `lane`.
    fn width(self) -> usize {
        if self.lane == F32X4 {
            4
        } else {
            1
        }
    }

    /// The index of the `k`th channel.
    fn at(self, kb: &mut Kb, k: usize) -> Value {
        match k {
            0 => self.ch,
            _ => kb.b.ins().iadd_imm_s(self.ch, k as i64),
        }
    }
}

/// The f32 `f(kb, k, index)` of each channel `k` of `chs`, in its lanes, kept out of the
/// loops.
fn per_channel(
    kb: &mut Kb,
    chs: Chans,
    mut f: impl FnMut(&mut Kb, usize, Value) -> Value,
) -> Value {
    let mut v = f(kb, 0, chs.ch);
    if chs.width() > 1 {
        v = kb.b.ins().splat(F32X4, v);
        for k in 1..chs.width() {
            let at = chs.at(kb, k);
            let x = f(kb, k, at);
            v = kb.b.ins().insertlane(v, x, k as u8);
        }
    }
    kb.materialize(v)
}

/// `body(kb, i, lane)` over the values of the channels `chs`: each sample's `s` contiguous
/// values, in f32x4 steps and a scalar tail (one at a time, in lanes of `chs.lane`, when `s` <
/// 4: `[C]` vectors).
fn each(
    kb: &mut Kb,
    (c, s): (usize, usize),
    chs: Chans,
    body: &mut dyn FnMut(&mut Kb, Value, types::Type),
) {
    let batch = kb.rows(true, 1);
    let zero = kb.int(0);
    let at = kb.b.ins().imul_imm_s(chs.ch, s as i64);
    kb.for_range(zero, batch, |kb, b| {
        let first = kb.b.ins().imul_imm_s(b, (c * s) as i64);
        let first = kb.b.ins().iadd(first, at);
        if s < 4 {
            for k in 0..s {
                let i = kb.b.ins().iadd_imm_s(first, k as i64);
                body(kb, i, chs.lane);
            }
            return;
        }
        let end = kb.b.ins().iadd_imm_s(first, s as i64);
        kb.vec_loop(first, end, |kb, i, lane| body(kb, i, lane));
    });
}

/// The f64 sums of the `K` terms `f(i, lane)` over the values of the channels `chs`, each
/// channel's (`chs.width()` of them) a term: per sample in f32 lanes, then added in f64.
fn sums<const K: usize>(
    kb: &mut Kb,
    d: (usize, usize),
    chs: Chans,
    mut f: impl FnMut(&mut Kb, Value, types::Type) -> [Value; K],
) -> [Vec<Value>; K] {
    let wide = chs.lane == F32X4;
    let z64 = kb.b.ins().f64const(0.0);
    // Four channels' sums are two f64x2, of lanes 0–1 and 2–3.
    let (t64, halves) = if wide {
        (types::F64X2, 2)
    } else {
        (types::F64, 1)
    };
    let z = if wide {
        kb.b.ins().splat(t64, z64)
    } else {
        z64
    };
    let totals: [Vec<Variable>; K] = [(); K].map(|_| (0..halves).map(|_| kb.var(t64, z)).collect());
    let add = |kb: &mut Kb, a: Variable, t: Value| {
        let cur = kb.b.use_var(a);
        let next = kb.b.ins().fadd(cur, t);
        kb.b.def_var(a, next);
    };
    let batch = kb.rows(true, 1);
    let zero = kb.int(0);
    let (c, s) = d;
    let at = kb.b.ins().imul_imm_s(chs.ch, s as i64);
    if s < 4 {
        // [C] vectors (or maps of fewer than 4 values): each term straight into the f64 sums,
        // each channel's in a lane of its own: the same additions, in the same order, whether
        // the channels come one or four at a time.
        kb.for_range(zero, batch, |kb, b| {
            let first = kb.b.ins().imul_imm_s(b, (c * s) as i64);
            let first = kb.b.ins().iadd(first, at);
            for k in 0..s {
                let i = kb.b.ins().iadd_imm_s(first, k as i64);
                let terms = f(kb, i, chs.lane);
                for (t, a) in terms.iter().zip(&totals) {
                    if wide {
                        let lo = kb.b.ins().fvpromote_low(*t);
                        let high = kb.shuffle(*t, *t, [2, 3, 2, 3]);
                        let hi = kb.b.ins().fvpromote_low(high);
                        add(kb, a[0], lo);
                        add(kb, a[1], hi);
                    } else {
                        let t = kb.b.ins().fpromote(types::F64, *t);
                        add(kb, a[0], t);
                    }
                }
            }
        });
    } else {
        kb.for_range(zero, batch, |kb, b| {
            let z4 = kb.cst(F32X4, 0.0);
            let z1 = kb.cst(types::F32, 0.0);
            let acc4 = [(); K].map(|_| kb.var(F32X4, z4));
            let acc1 = [(); K].map(|_| kb.var(types::F32, z1));
            let first = kb.b.ins().imul_imm_s(b, (c * s) as i64);
            let first = kb.b.ins().iadd(first, at);
            let end = kb.b.ins().iadd_imm_s(first, s as i64);
            kb.vec_loop(first, end, |kb, i, lane| {
                let terms = f(kb, i, lane);
                let accs = if lane == F32X4 { &acc4 } else { &acc1 };
                for (t, a) in terms.iter().zip(accs) {
                    add(kb, *a, *t);
                }
            });
            for k in 0..K {
                let a4 = kb.b.use_var(acc4[k]);
                let h = kb.hsum(a4, F32X4);
                let a1 = kb.b.use_var(acc1[k]);
                let row = kb.b.ins().fadd(h, a1);
                let row = kb.b.ins().fpromote(types::F64, row);
                add(kb, totals[k][0], row);
            }
        });
    }
    totals.map(|a| {
        (0..chs.width())
            .map(|k| {
                let v = kb.b.use_var(a[k / 2]);
                match wide {
                    true => kb.b.ins().extractlane(v, (k % 2) as u8),
                    false => v,
                }
            })
            .collect()
    })
}

/// The statistics of the channels `chs` as their normalization uses them: the means,
/// 1/√(var + eps) (f32, in lanes of `chs.lane`) and N, the number of values a channel (f64).
struct Stats {
    mean: Value,
    inv: Value,
    n: Value,
}

/// The batch means (f64), biased variances (f64) of the channels `chs` (one each), and N
/// (f64), from their values in `x` (two passes: the means, then the squares of the deviations
/// from them).
fn measure(
    kb: &mut Kb,
    x: Value,
    d: (usize, usize),
    chs: Chans,
) -> (Vec<Value>, Vec<Value>, Value) {
    let count = kb.rows(true, d.1);
    let n = kb.b.ins().fcvt_from_sint(types::F64, count);
    let [s] = sums(kb, d, chs, |kb, i, lane| [kb.ld(lane, x, i)]);
    let mean64: Vec<Value> = s.iter().map(|&s| kb.b.ins().fdiv(s, n)).collect();
    let mean = per_channel(kb, chs, |kb, k, _| {
        kb.b.ins().fdemote(types::F32, mean64[k])
    });
    let [ss] = sums(kb, d, chs, |kb, i, lane| {
        let v = kb.ld(lane, x, i);
        let m = kb.splat(lane, mean);
        let dv = kb.b.ins().fsub(v, m);
        [kb.b.ins().fmul(dv, dv)]
    });
    let var = ss.iter().map(|&ss| kb.b.ins().fdiv(ss, n)).collect();
    (mean64, var, n)
}

/// The statistics of the channels `chs` read from the `BatchStats` value at `p` (`[2, C]`: the
/// means, then the unbiased variances C elements further, of a batch of N values a channel):
/// the biased variance that normalizes is (N − 1)/N times the unbiased one, in f64.
fn stored(kb: &mut Kb, p: Value, d: (usize, usize), chs: Chans, eps: f32) -> Stats {
    let count = kb.rows(true, d.1);
    let n = kb.b.ins().fcvt_from_sint(types::F64, count);
    let mean = scalar(kb, p, chs);
    let inv = per_channel(kb, chs, |kb, _, ch| {
        let at = kb.b.ins().iadd_imm_s(ch, d.0 as i64);
        let unbiased = kb.ld(types::F32, p, at);
        let unbiased = kb.b.ins().fpromote(types::F64, unbiased);
        let one = kb.b.ins().f64const(1.0);
        let n1 = kb.b.ins().fsub(n, one);
        let var = kb.b.ins().fmul(unbiased, n1);
        let var = kb.b.ins().fdiv(var, n);
        inv_std(kb, var, eps)
    });
    Stats { mean, inv, n }
}

/// 1/√(var + eps), computed in f64 from an f64 variance, as an f32.
fn inv_std(kb: &mut Kb, var: Value, eps: f32) -> Value {
    let e = kb.b.ins().f64const(eps as f64);
    let ve = kb.b.ins().fadd(var, e);
    let sd = kb.b.ins().sqrt(ve);
    let one = kb.b.ins().f64const(1.0);
    let inv = kb.b.ins().fdiv(one, sd);
    kb.b.ins().fdemote(types::F32, inv)
}

/// x̂ = (`x[i]` − mean)·inv in lanes of `lane`.
fn x_hat(kb: &mut Kb, x: Value, i: Value, lane: types::Type, st: &Stats) -> Value {
    let v = kb.ld(lane, x, i);
    let m = kb.splat(lane, st.mean);
    let dv = kb.b.ins().fsub(v, m);
    let s = kb.splat(lane, st.inv);
    kb.b.ins().fmul(dv, s)
}

/// The elements of the channels `chs` of the f32 slot `p`, in lanes of `chs.lane`, kept out
/// of the loops.
fn scalar(kb: &mut Kb, p: Value, chs: Chans) -> Value {
    let v = kb.ld(chs.lane, p, chs.ch);
    kb.materialize(v)
}

/// A value kept out of the loops.
fn kept(kb: &mut Kb, v: Value) -> Value {
    kb.materialize(v)
}

/// `BatchNormEval` (`[x, weight, bias, running_mean, running_var]`: y = (x − mean)·k + bias)
/// and `BatchNormEvalGrad` (`[dy, weight, running_var]`: dx = dy·k), k = weight/√(var + eps)
/// per channel, over this call's samples in memory order. Images take each channel's k once
/// per sample and stream its H·W values in f32x4 steps; `[C]` vectors (H·W = 1) take four
/// channels a step, their k in the lanes. k is computed in f32 either way (one rounding more
/// than an f64 square root would leave), so both give the same bits.
/// `acts` are applied to y before it is stored (an epilogue: `batch_norm_eval → relu`).
pub fn eval_rows(
    kb: &mut Kb,
    op: &Op,
    x_ty: &Type,
    (out, ins): (usize, &[usize]),
    eps: f32,
    acts: &[UnaryOp],
) {
    let (c, s) = geometry(x_ty);
    let eval = matches!(op, Op::BatchNormEval { .. });
    let o = kb.ptr(out);
    let p: Vec<Value> = ins.iter().map(|&s| kb.ptr(s)).collect();
    let (w, var) = (p[1], p[if eval { 4 } else { 2 }]);
    // k, and with `eval` the mean and the bias, of the channel(s) at `ch`, in lanes of `lane`.
    let coefficients = |kb: &mut Kb, ch: Value, lane: types::Type| {
        let v = kb.ld(lane, var, ch);
        let e = kb.cst(lane, eps);
        let ve = kb.b.ins().fadd(v, e);
        let sd = kb.b.ins().sqrt(ve);
        let wv = kb.ld(lane, w, ch);
        let k = kb.b.ins().fdiv(wv, sd);
        let mb = eval.then(|| (kb.ld(lane, p[3], ch), kb.ld(lane, p[2], ch)));
        (k, mb)
    };
    // y at `i` from the coefficients, in lanes of `lane`.
    let apply =
        |kb: &mut Kb, i: Value, lane: types::Type, (k, mb): (Value, Option<(Value, Value)>)| {
            let x = kb.ld(lane, p[0], i);
            let y = match mb {
                Some((m, b)) => {
                    let dv = kb.b.ins().fsub(x, m);
                    let y = kb.b.ins().fmul(dv, k);
                    kb.b.ins().fadd(y, b)
                }
                None => kb.b.ins().fmul(x, k),
            };
            let y = chain(kb, acts, None, y, lane);
            kb.st(y, o, i);
        };
    let rows = kb.rows(true, 1);
    let zero = kb.int(0);
    kb.for_range(zero, rows, |kb, b| {
        let first = kb.b.ins().imul_imm_s(b, (c * s) as i64);
        if s == 1 {
            let end = kb.b.ins().iadd_imm_s(first, c as i64);
            kb.vec_loop(first, end, |kb, i, lane| {
                let ch = kb.b.ins().isub(i, first);
                let cf = coefficients(kb, ch, lane);
                apply(kb, i, lane, cf);
            });
            return;
        }
        let zero = kb.int(0);
        let channels = kb.int(c as i64);
        kb.for_range(zero, channels, |kb, ch| {
            let (k, mb) = coefficients(kb, ch, types::F32);
            let k = kept(kb, k);
            let mb = mb.map(|(m, b)| (kept(kb, m), kept(kb, b)));
            let at = kb.b.ins().imul_imm_s(ch, s as i64);
            let at = kb.b.ins().iadd(first, at);
            let end = kb.b.ins().iadd_imm_s(at, s as i64);
            kb.vec_loop(at, end, |kb, i, lane| {
                let k = kb.splat(lane, k);
                let mb = mb.map(|(m, b)| (kb.splat(lane, m), kb.splat(lane, b)));
                apply(kb, i, lane, (k, mb));
            });
        });
    });
}

thread_local! {
    /// Set while [`with_scalar_channels`] runs.
    static SCALAR_CHANNELS: Cell<bool> = const { Cell::new(false) };
}

/// `f()` with the batch norm kernels of `[C]` vectors compiled one channel at a time, as they
/// were before four channels a step: for the tests that compare the bits of both.
#[doc(hidden)]
pub fn with_scalar_channels<R>(f: impl FnOnce() -> R) -> R {
    SCALAR_CHANNELS.set(true);
    let r = f();
    SCALAR_CHANNELS.set(false);
    r
}

/// `group` channels of a batch norm node, one after the other: `op` with the input slots `ins`
/// (input 0 of type `x_ty`), writing slot `out`, every slot moved to the group's first channel
/// ([`moves`]). A `BatchNorm` applies `acts` to y before it stores it (an epilogue:
/// `batch_norm → relu`).
///
/// `[C]` vectors (H·W = 1) take four adjacent channels a step while four remain, a channel
/// a lane: each sample's four values are contiguous, and each channel's terms are added into
/// its own f64 sum in the same order as one channel at a time would (the same bits).
pub fn batch_norm(
    kb: &mut Kb,
    op: &Op,
    x_ty: &Type,
    (out, ins): (usize, &[usize]),
    group: usize,
    acts: &[UnaryOp],
) {
    let d = geometry(x_ty);
    let o = kb.ptr(out);
    let p: Vec<Value> = ins.iter().map(|&s| kb.ptr(s)).collect();
    let quads = match d.1 == 1 && !SCALAR_CHANNELS.get() {
        true => group / 4,
        false => 0,
    };
    let run = |kb: &mut Kb, ch, lane| channel(kb, op, d, (o, &p), Chans { ch, lane }, acts);
    let zero = kb.int(0);
    let mid = kb.int(4 * quads as i64);
    if quads > 0 {
        kb.for_step(zero, mid, 4, |kb, ch| run(kb, ch, F32X4));
    }
    if 4 * quads < group {
        let end = kb.int(group as i64);
        kb.for_range(mid, end, |kb, ch| run(kb, ch, types::F32));
    }
}

/// The channels `chs` (of the group) of a batch norm node, its slots at `o` and `p`.
fn channel(
    kb: &mut Kb,
    op: &Op,
    d: (usize, usize),
    (o, p): (Value, &[Value]),
    chs: Chans,
    acts: &[UnaryOp],
) {
    let ch = chs.ch;
    match *op {
        Op::BatchNorm { eps } => {
            // ins: x, stats, weight, bias.
            let st = stored(kb, p[1], d, chs, eps);
            let (w, b) = (scalar(kb, p[2], chs), scalar(kb, p[3], chs));
            each(kb, d, chs, &mut |kb, i, lane| {
                let h = x_hat(kb, p[0], i, lane, &st);
                let (w, b) = (kb.splat(lane, w), kb.splat(lane, b));
                let y = kb.b.ins().fmul(h, w);
                let y = kb.b.ins().fadd(y, b);
                let y = chain(kb, acts, None, y, lane);
                kb.st(y, o, i);
            });
        }
        Op::BatchNormGrad { eps } => {
            // ins: x, stats, weight, dy, Σ dy⊙x̂, Σ dy (the weight's and the bias's gradients).
            let st = stored(kb, p[1], d, chs, eps);
            let mean_of = |kb: &mut Kb, sum: Value| {
                per_channel(kb, chs, |kb, _, ch| {
                    let s = kb.ld(types::F32, sum, ch);
                    let s = kb.b.ins().fpromote(types::F64, s);
                    let m = kb.b.ins().fdiv(s, st.n);
                    kb.b.ins().fdemote(types::F32, m)
                })
            };
            let mgx = mean_of(kb, p[4]);
            let mg = mean_of(kb, p[5]);
            let w = kb.ld(chs.lane, p[2], ch);
            let scale = kb.b.ins().fmul(w, st.inv);
            let scale = kept(kb, scale);
            each(kb, d, chs, &mut |kb, i, lane| {
                let h = x_hat(kb, p[0], i, lane, &st);
                let g = kb.ld(lane, p[3], i);
                let m = kb.splat(lane, mg);
                let t = kb.b.ins().fsub(g, m);
                let mx = kb.splat(lane, mgx);
                let hx = kb.b.ins().fmul(h, mx);
                let t = kb.b.ins().fsub(t, hx);
                let s = kb.splat(lane, scale);
                let y = kb.b.ins().fmul(s, t);
                kb.st(y, o, i);
            });
        }
        Op::BatchNormWeightGrad { eps } => {
            // ins: x, stats, dy.
            let st = stored(kb, p[1], d, chs, eps);
            let [s] = sums(kb, d, chs, |kb, i, lane| {
                let h = x_hat(kb, p[0], i, lane, &st);
                let g = kb.ld(lane, p[2], i);
                [kb.b.ins().fmul(h, g)]
            });
            for (k, s) in s.into_iter().enumerate() {
                let s = kb.b.ins().fdemote(types::F32, s);
                let at = chs.at(kb, k);
                kb.st(s, o, at);
            }
        }
        Op::BatchStats { .. } => {
            // The mean, then the unbiased variance N/(N − 1) times the biased one (N > 1:
            // checked before), C elements further.
            let (mean, var, n) = measure(kb, p[0], d, chs);
            for (k, (mean, var)) in mean.into_iter().zip(var).enumerate() {
                let at = chs.at(kb, k);
                let m = kb.b.ins().fdemote(types::F32, mean);
                kb.st(m, o, at);
                let one = kb.b.ins().f64const(1.0);
                let n1 = kb.b.ins().fsub(n, one);
                let v = kb.b.ins().fmul(var, n);
                let v = kb.b.ins().fdiv(v, n1);
                let v = kb.b.ins().fdemote(types::F32, v);
                let at = kb.b.ins().iadd_imm_s(at, d.0 as i64);
                kb.st(v, o, at);
            }
        }
        _ => unreachable!("batch_norm kernels are built for the batch norm ops only"),
    }
}

/// How far each of `op`'s slots moves from one group of `group` channels to the next, in bytes: the batched
/// values (input 0, and dy) by the channel's H·W values, the per-channel ones by one f32. `x`
/// is input 0's type, `out` and `ins` the node's slots.
pub fn moves(op: &Op, x: &Type, out: usize, ins: &[usize], group: usize) -> Vec<(usize, usize)> {
    let (_, s) = geometry(x);
    let batched = |k: usize| match op {
        Op::BatchNormGrad { .. } => k == 0 || k == 3,
        Op::BatchNormWeightGrad { .. } => k == 0 || k == 2,
        _ => k == 0,
    };
    let out_batched = !matches!(op, Op::BatchNormWeightGrad { .. } | Op::BatchStats { .. });
    ins.iter()
        .enumerate()
        .map(|(k, &slot)| (slot, group * if batched(k) { 4 * s } else { 4 }))
        .chain([(out, group * if out_batched { 4 * s } else { 4 })])
        .collect()
}
