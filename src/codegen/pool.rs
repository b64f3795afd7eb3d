//! Max and average pooling over NCHW images, and their gradients.
//!
//! Loops run over planes (image × channel), output rows and columns; the k×k window is unrolled
//! at compile time. Padded positions are skipped (max pooling) or count as zeros (average
//! pooling: the divisor is always k·k). Gradients zero `dx` first, then add window by window
//! in a fixed order.
//!
//! Max pooling over 2×2 windows with stride 2 and no padding (the CNN's) takes four outputs of
//! a row at a time in f32x4 ([`max_pool_pairs`]): two rows of eight inputs, split by shuffles
//! into the four taps of four windows. The forward pass takes their max as a tree of `maxps`
//! ([`max4`]: the scalar loop's value, NaN included, up to the sign of a zero); the gradient
//! routes dy to the first tap greater than those before it and not less than those after (the
//! scalar loop's routing, so the same bits, but for windows holding a NaN: a NaN tap never
//! takes dy, and does not keep a later maximum from it) and interleaves it back.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, Value};

use super::elementwise::unary_grad;
use super::kernel::{Kb, F32X4};
use crate::ir::{Type, UnaryOp, Window};

/// Geometry: planes per sample (C), input H×W, output OH×OW.
struct Geo {
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
}

fn geo(x: &Type, y: &Type) -> Geo {
    Geo {
        c: x.dims[0],
        h: x.dims[1],
        w: x.dims[2],
        oh: y.dims[1],
        ow: y.dims[2],
    }
}

/// Windows wider than this are looped over, not unrolled: unrolled, the k·k taps of a global
/// pooling (`maxpool(128)` after a convolution on a 128×128 map, 16,384 taps in each of the
/// forward and gradient kernels) took minutes to compile.
const UNROLL: usize = 8;

/// Calls `body` with the index and in-image flag ([`tap`]) of every tap of the window at output
/// `(oy, ox)`, row by row (ky outer, kx inner): unrolled at compile time up to [`UNROLL`] taps a
/// side, else in two loops. The taps come in the same order either way.
fn each_tap(
    kb: &mut Kb,
    g: &Geo,
    win: &Window,
    (oy, ox): (Value, Value),
    mut body: impl FnMut(&mut Kb, Value, Option<Value>),
) {
    let k = win.kernel;
    if k <= UNROLL {
        for ky in 0..k {
            for kx in 0..k {
                let (t, ok) = tap(kb, g, win, oy, ox, ky, kx);
                body(kb, t, ok);
            }
        }
        return;
    }
    let s = win.stride as i64;
    let pad = -(win.pad as i64);
    kb.for_n(k, |kb, ky| {
        let iy = kb.b.ins().imul_imm_s(oy, s);
        let iy = kb.b.ins().iadd(iy, ky);
        let iy = kb.b.ins().iadd_imm_s(iy, pad);
        kb.for_n(k, |kb, kx| {
            let ix = kb.b.ins().imul_imm_s(ox, s);
            let ix = kb.b.ins().iadd(ix, kx);
            let ix = kb.b.ins().iadd_imm_s(ix, pad);
            let (t, ok) = tap_at(kb, g, win, iy, ix);
            body(kb, t, ok);
        });
    });
}

/// Index within the input plane of window tap (ky, kx) at output (oy, ox), and whether it lies
/// inside the image (`None` when there is no padding: always inside). Out-of-image indices are
/// replaced by 0 so that loads stay in bounds.
fn tap(
    kb: &mut Kb,
    g: &Geo,
    win: &Window,
    oy: Value,
    ox: Value,
    ky: usize,
    kx: usize,
) -> (Value, Option<Value>) {
    let s = win.stride as i64;
    let iy = kb.b.ins().imul_imm_s(oy, s);
    let iy = kb.b.ins().iadd_imm_s(iy, ky as i64 - win.pad as i64);
    let ix = kb.b.ins().imul_imm_s(ox, s);
    let ix = kb.b.ins().iadd_imm_s(ix, kx as i64 - win.pad as i64);
    tap_at(kb, g, win, iy, ix)
}

/// [`tap`] of the input row `iy` and column `ix` (either may be outside the image).
fn tap_at(kb: &mut Kb, g: &Geo, win: &Window, iy: Value, ix: Value) -> (Value, Option<Value>) {
    let row = kb.b.ins().imul_imm_s(iy, g.w as i64);
    let idx = kb.b.ins().iadd(row, ix);
    if win.pad == 0 {
        return (idx, None);
    }
    let hv = kb.int(g.h as i64);
    let wv = kb.int(g.w as i64);
    let oky = kb.b.ins().icmp(IntCC::UnsignedLessThan, iy, hv);
    let okx = kb.b.ins().icmp(IntCC::UnsignedLessThan, ix, wv);
    let ok = kb.b.ins().band(oky, okx);
    let zero = kb.int(0);
    (kb.b.ins().select(ok, idx, zero), Some(ok))
}

/// Loops over planes and output positions: `body(in_plane_base, out_index, oy, ox)`.
fn each_output(
    kb: &mut Kb,
    g: &Geo,
    batched: bool,
    mut body: impl FnMut(&mut Kb, Value, Value, Value, Value),
) {
    let planes = kb.rows(batched, g.c);
    let zero = kb.int(0);
    let (h, w, oh, ow) = (g.h, g.w, g.oh, g.ow);
    kb.for_range(zero, planes, |kb, pl| {
        let ib = kb.b.ins().imul_imm_s(pl, (h * w) as i64);
        let ob = kb.b.ins().imul_imm_s(pl, (oh * ow) as i64);
        kb.for_n(oh, |kb, oy| {
            kb.for_n(ow, |kb, ox| {
                let o = kb.b.ins().imul_imm_s(oy, ow as i64);
                let o = kb.b.ins().iadd(o, ox);
                let o = kb.b.ins().iadd(ob, o);
                body(kb, ib, o, oy, ox);
            });
        });
    });
}

/// Zeroes the value of type `ty` at `slot`.
fn zero_fill(kb: &mut Kb, ty: &Type, slot: Value) {
    let n = kb.numel(ty);
    kb.zero_fill(slot, n);
}

/// The gradient of an activation that a max-pool gradient applies to `dx` as it writes it:
/// `dx[i] = unary_grad(op, aux[i], dx[i])` ([`crate::ir::Producer::MaxPoolGrad`]), `aux` the
/// table slot of the activation's value (the pool's input).
#[derive(Clone, Copy)]
pub struct PoolEpi {
    pub op: UnaryOp,
    pub aux: usize,
}

/// `MaxPool` (`grad = false`: `ins = [x]`) or `MaxPoolGrad` (`ins = [x, dy]`, routing each dy to
/// the first maximum of its window, then `epi`). `x`/`y` are the input and pooled types.
#[allow(clippy::too_many_arguments)]
pub fn max_pool(
    kb: &mut Kb,
    win: &Window,
    x: &Type,
    y: &Type,
    out: usize,
    ins: &[usize],
    grad: bool,
    epi: Option<PoolEpi>,
) {
    let g = geo(x, y);
    let o = kb.ptr(out);
    let xp = kb.ptr(ins[0]);
    let dyp = if grad { Some(kb.ptr(ins[1])) } else { None };
    let epi = epi.map(|e| (e.op, kb.ptr(e.aux)));
    let pairs = win.kernel == 2 && win.stride == 2 && win.pad == 0;
    // 2×2 windows of stride 2 tiling the image write every element of dx once, in its final
    // value: no zeroing first, and the epilogue applied as they are written.
    let tiled = pairs && g.h == 2 * g.oh && g.w == 2 * g.ow;
    if grad && !tiled {
        zero_fill(kb, x, o);
    }
    if pairs {
        max_pool_pairs(kb, &g, x.batched, o, xp, dyp, tiled, epi.filter(|_| tiled));
    } else {
        each_output(kb, &g, x.batched, |kb, ib, oi, oy, ox| {
            max_window(kb, &g, win, ib, oi, oy, ox, [o, xp], dyp)
        });
    }
    if let (Some((u, aux)), false) = (epi, tiled) {
        // Windows that overlap or leave elements out accumulate into dx: the epilogue after.
        let n = kb.numel(x);
        let zero = kb.int(0);
        kb.vec_loop(zero, n, |kb, i, lane| {
            let v = kb.ld(lane, aux, i);
            let d = kb.ld_rw(lane, o, i);
            let d = unary_grad(kb, u, v, d, lane);
            kb.st(d, o, i);
        });
    }
}

/// One window of max pooling at output `(oy, ox)` (element `oi`), plane base `ib`: the max into
/// `o`, or (with `dyp`) `dx[arg] += dy` for the first maximum `arg`. `ox` is the output column.
#[allow(clippy::too_many_arguments)]
fn max_window(
    kb: &mut Kb,
    g: &Geo,
    win: &Window,
    ib: Value,
    oi: Value,
    oy: Value,
    ox: Value,
    [o, xp]: [Value; 2],
    dyp: Option<Value>,
) {
    let ninf = kb.b.ins().f32const(f32::NEG_INFINITY);
    let best_var = kb.var(types::F32, ninf);
    let minus_one = kb.int(-1);
    let arg_var = kb.var(types::I64, minus_one);
    each_tap(kb, g, win, (oy, ox), |kb, t, ok| {
        let (best, arg) = (kb.b.use_var(best_var), kb.b.use_var(arg_var));
        let idx = kb.b.ins().iadd(ib, t);
        let v = kb.ld(types::F32, xp, idx);
        let mut better = kb.b.ins().fcmp(FloatCC::GreaterThan, v, best);
        if let Some(ok) = ok {
            better = kb.b.ins().band(better, ok);
        }
        // Without padding every tap counts: fmax avoids a (badly predicted) branch.
        let best = if ok.is_none() {
            kb.b.ins().fmax(best, v)
        } else {
            kb.b.ins().select(better, v, best)
        };
        let arg = kb.b.ins().select(better, idx, arg);
        kb.b.def_var(best_var, best);
        kb.b.def_var(arg_var, arg);
    });
    let (best, arg) = (kb.b.use_var(best_var), kb.b.use_var(arg_var));
    match dyp {
        None => kb.st(best, o, oi),
        Some(dyp) => {
            // dx[arg] += dy (skipped when the window saw no element, arg = −1).
            let has =
                kb.b.ins()
                    .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, arg, 0);
            let zero = kb.int(0);
            let at = kb.b.ins().select(has, arg, zero);
            let d = kb.ld(types::F32, dyp, oi);
            let z = kb.b.ins().f32const(0.0);
            let d = kb.b.ins().select(has, d, z);
            let cur = kb.ld_rw(types::F32, o, at);
            let s = kb.b.ins().fadd(cur, d);
            kb.st(s, o, at);
        }
    }
}

/// Max pooling (or its gradient, `dyp`) over 2×2 windows with stride 2 and no padding: four
/// outputs of a row per step in f32x4. The last `ow mod 4` of a row at least four long take one
/// more f32x4 step over its last four outputs, where writing an output twice is harmless (the
/// forward pass, and a gradient whose windows tile the image, `tiled`, which writes dx without
/// zeroing it first). Otherwise they go through [`max_window`], or, tiled rows shorter than
/// four, [`tail_window_grad`], which writes the whole window like the f32x4 steps. `epi` is
/// applied to each element of dx as it is written.
#[allow(clippy::too_many_arguments)]
fn max_pool_pairs(
    kb: &mut Kb,
    g: &Geo,
    batched: bool,
    o: Value,
    xp: Value,
    dyp: Option<Value>,
    tiled: bool,
    epi: Option<(UnaryOp, Value)>,
) {
    let win = Window {
        kernel: 2,
        stride: 2,
        pad: 0,
    };
    let planes = kb.rows(batched, g.c);
    let zero = kb.int(0);
    let (h, w, oh, ow) = (g.h, g.w, g.oh, g.ow);
    let ow4 = (ow / 4 * 4) as i64;
    kb.for_range(zero, planes, |kb, pl| {
        let ib = kb.b.ins().imul_imm_s(pl, (h * w) as i64);
        let ob = kb.b.ins().imul_imm_s(pl, (oh * ow) as i64);
        kb.for_n(oh, |kb, oy| {
            let r0 = kb.b.ins().imul_imm_s(oy, (2 * w) as i64);
            let r0 = kb.b.ins().iadd(ib, r0);
            let r1 = kb.b.ins().iadd_imm_s(r0, w as i64);
            let orow = kb.b.ins().imul_imm_s(oy, ow as i64);
            let orow = kb.b.ins().iadd(ob, orow);
            let Some(dyp) = dyp else {
                return max_pool_row(kb, xp, [r0, r1], (o, orow), ow);
            };
            if tiled {
                return max_pool_grad_row(kb, xp, [r0, r1], (dyp, orow), (o, [r0, r1]), ow, epi);
            }
            let (lo, hi) = (kb.int(0), kb.int(ow4));
            kb.for_step(lo, hi, 4, |kb, ox| {
                grad_step(kb, xp, [r0, r1], (dyp, orow), (o, [r0, r1]), ox, epi)
            });
            let (lo, hi) = (kb.int(ow4), kb.int(ow as i64));
            kb.for_range(lo, hi, |kb, ox| {
                let oi = kb.b.ins().iadd(orow, ox);
                max_window(kb, g, &win, ib, oi, oy, ox, [o, xp], Some(dyp))
            });
        });
    });
}

/// One output row of the gradient of a 2×2 stride-2 max pooling whose windows tile the image:
/// the `ow` windows on the input rows at elements `r0`, `r1` of `xp` route `dy` (from element
/// `orow` of `dyp`) to their first maximum, and write their four elements of dx (`0 + dy` there,
/// 0 elsewhere, each through `epi`'s gradient when given) at the rows starting at elements
/// `d0`, `d1` of `o`. Four windows per f32x4 step; the last `ow mod 4` of a row at least four
/// long by one more step over its last four (writing their elements again, with the same
/// values), a shorter row window by window ([`tail_window_grad`], the same comparisons).
pub(super) fn max_pool_grad_row(
    kb: &mut Kb,
    xp: Value,
    [r0, r1]: [Value; 2],
    (dyp, orow): (Value, Value),
    (o, [d0, d1]): (Value, [Value; 2]),
    ow: usize,
    epi: Option<(UnaryOp, Value)>,
) {
    let ow4 = (ow / 4 * 4) as i64;
    let (lo, hi) = (kb.int(0), kb.int(ow4));
    kb.for_step(lo, hi, 4, |kb, ox| {
        grad_step(kb, xp, [r0, r1], (dyp, orow), (o, [d0, d1]), ox, epi)
    });
    if ow4 > 0 && ow4 < ow as i64 {
        // The last four outputs of the row again, overlapping the steps before: each
        // window's dx is written again, with the same values.
        let last = kb.int(ow as i64 - 4);
        grad_step(kb, xp, [r0, r1], (dyp, orow), (o, [d0, d1]), last, epi);
        return;
    }
    let (lo, hi) = (kb.int(ow4), kb.int(ow as i64));
    kb.for_range(lo, hi, |kb, ox| {
        let oi = kb.b.ins().iadd(orow, ox);
        tail_window_grad(kb, [r0, r1], ox, oi, [xp, dyp], (o, [d0, d1]), epi)
    });
}

/// Four windows of the gradient of a 2×2 stride-2 max pooling, from output column `ox` (see
/// [`max_pool_grad_row`]).
fn grad_step(
    kb: &mut Kb,
    xp: Value,
    [r0, r1]: [Value; 2],
    (dyp, orow): (Value, Value),
    (o, [d0, d1]): (Value, [Value; 2]),
    ox: Value,
    epi: Option<(UnaryOp, Value)>,
) {
    let ([i0, i0b, i1, i1b], d) = route_pairs(kb, xp, [r0, r1], (dyp, orow), ox, &|_, dy, _| dy);
    let c = kb.b.ins().imul_imm_s(ox, 2);
    let (j0, j1) = (kb.b.ins().iadd(d0, c), kb.b.ins().iadd(d1, c));
    let (j0b, j1b) = (kb.b.ins().iadd_imm_s(j0, 4), kb.b.ins().iadd_imm_s(j1, 4));
    let row0 = [
        kb.shuffle(d[0], d[1], [0, 4, 1, 5]),
        kb.shuffle(d[0], d[1], [2, 6, 3, 7]),
    ];
    let row1 = [
        kb.shuffle(d[2], d[3], [0, 4, 1, 5]),
        kb.shuffle(d[2], d[3], [2, 6, 3, 7]),
    ];
    for (v, at, to) in [
        (row0[0], i0, j0),
        (row0[1], i0b, j0b),
        (row1[0], i1, j1),
        (row1[1], i1b, j1b),
    ] {
        let v = match epi {
            Some((u, aux)) => {
                let a = kb.ld(F32X4, aux, at);
                unary_grad(kb, u, a, v, F32X4)
            }
            None => v,
        };
        kb.st(v, o, to);
    }
}

/// The routing of [`grad_step`]: for the four windows from output column `ox` on the input
/// rows at elements `r0`, `r1` of `xp`, the elements of `xp` where their inputs lie (each
/// row's eight, loaded as two f32x4: row 0's first four, its next four, then row 1's), and the
/// share of `dy` (from element `orow + ox` of `dyp`) each of their taps (0,0), (0,1), (1,0),
/// (1,1) gets, an f32x4 of the four windows' each: `0 + dy` at the window's first maximum, 0
/// elsewhere. `dy` first goes through `dy_at(kb, dy, max)`, given the
/// windows' maxima (where a window's gradient goes, the input is its maximum).
pub(super) fn route_pairs(
    kb: &mut Kb,
    xp: Value,
    [r0, r1]: [Value; 2],
    (dyp, orow): (Value, Value),
    ox: Value,
    dy_at: &dyn Fn(&mut Kb, Value, Value) -> Value,
) -> ([Value; 4], [Value; 4]) {
    let c = kb.b.ins().imul_imm_s(ox, 2);
    let (i0, i1) = (kb.b.ins().iadd(r0, c), kb.b.ins().iadd(r1, c));
    let (i0b, i1b) = (kb.b.ins().iadd_imm_s(i0, 4), kb.b.ins().iadd_imm_s(i1, 4));
    let a0 = kb.ld(F32X4, xp, i0);
    let a1 = kb.ld(F32X4, xp, i0b);
    let b0 = kb.ld(F32X4, xp, i1);
    let b1 = kb.ld(F32X4, xp, i1b);
    // The taps (0,0), (0,1), (1,0), (1,1) of the four windows, in the scalar order.
    let taps = [
        kb.shuffle(a0, a1, [0, 2, 4, 6]),
        kb.shuffle(a0, a1, [1, 3, 5, 7]),
        kb.shuffle(b0, b1, [0, 2, 4, 6]),
        kb.shuffle(b0, b1, [1, 3, 5, 7]),
    ];
    let oi = kb.b.ins().iadd(orow, ox);
    let mut best = kb.cst(F32X4, f32::NEG_INFINITY);
    let mut better = Vec::with_capacity(4);
    for &t in &taps {
        let b = kb.b.ins().fcmp(FloatCC::GreaterThan, t, best);
        better.push(b);
        best = kb.select(F32X4, b, t, best);
    }
    // The first maximum wins: tap k when it beat the taps before it and no later tap beat it.
    let dy = kb.ld(F32X4, dyp, oi);
    let dy = dy_at(kb, dy, best);
    let z = kb.cst(F32X4, 0.0);
    let mut later = None;
    let mut d = [z; 4];
    for k in (0..4).rev() {
        let wins = match later {
            None => better[k],
            Some(l) => {
                let not = kb.b.ins().bnot(l);
                kb.b.ins().band(better[k], not)
            }
        };
        later = Some(match later {
            None => better[k],
            Some(l) => kb.b.ins().bor(l, better[k]),
        });
        let v = kb.select(F32X4, wins, dy, z);
        // 0 + dy, as the scalar loop adds into a zeroed dx (−0 becomes +0).
        d[k] = kb.b.ins().fadd(z, v);
    }
    ([i0, i0b, i1, i1b], d)
}

/// One output row of a 2×2 stride-2 max pooling without padding: `ow` maxima into `o` from
/// element `orow` on, of the windows on the two input rows at elements `r0` and `r1` of `xp`.
/// Four outputs per f32x4 step ([`max4`] of the windows' taps, split from two rows of eight
/// inputs by shuffles); the last `ow mod 4` of a row at least four long by one more step over
/// its last four (each written again with the value it has), of a shorter row one window at a
/// time, as [`max_window`] computes it. Pooling fused into a convolution
/// ([`crate::ir::Epilogue::Pool`]) calls it on the rows it has just computed: the same bits.
pub fn max_pool_row(
    kb: &mut Kb,
    xp: Value,
    [r0, r1]: [Value; 2],
    (o, orow): (Value, Value),
    ow: usize,
) {
    let step = |kb: &mut Kb, ox: Value| {
        let c = kb.b.ins().imul_imm_s(ox, 2);
        let (i0, i1) = (kb.b.ins().iadd(r0, c), kb.b.ins().iadd(r1, c));
        let (i0b, i1b) = (kb.b.ins().iadd_imm_s(i0, 4), kb.b.ins().iadd_imm_s(i1, 4));
        let (a0, a1) = (kb.ld(F32X4, xp, i0), kb.ld(F32X4, xp, i0b));
        let (b0, b1) = (kb.ld(F32X4, xp, i1), kb.ld(F32X4, xp, i1b));
        // The taps (0,0), (0,1), (1,0), (1,1) of the four windows, in the scalar order.
        let taps = [
            kb.shuffle(a0, a1, [0, 2, 4, 6]),
            kb.shuffle(a0, a1, [1, 3, 5, 7]),
            kb.shuffle(b0, b1, [0, 2, 4, 6]),
            kb.shuffle(b0, b1, [1, 3, 5, 7]),
        ];
        let best = max4(kb, taps);
        let oi = kb.b.ins().iadd(orow, ox);
        kb.st(best, o, oi);
    };
    if ow >= 4 {
        let (lo, hi) = (kb.int(0), kb.int((ow / 4 * 4) as i64));
        kb.for_step(lo, hi, 4, step);
        if !ow.is_multiple_of(4) {
            let last = kb.int(ow as i64 - 4);
            step(kb, last);
        }
        return;
    }
    kb.for_n(ow, |kb, ox| {
        // max_window's sum for a window without padding: fmax from −∞, taps in order.
        let c = kb.b.ins().imul_imm_s(ox, 2);
        let mut best = kb.b.ins().f32const(f32::NEG_INFINITY);
        for r in [r0, r1] {
            let at = kb.b.ins().iadd(r, c);
            for kx in 0..2 {
                let i = kb.b.ins().iadd_imm_s(at, kx);
                let v = kb.ld(types::F32, xp, i);
                best = kb.b.ins().fmax(best, v);
            }
        }
        let oi = kb.b.ins().iadd(orow, ox);
        kb.st(best, o, oi);
    });
}

/// The lane-wise max of four f32x4, NaN where any of them is NaN: a tree of three `maxps`
/// (`y < x ? x : y`, one instruction, against about nine for Cranelift's `fmax`, which also
/// orders −0 below +0) and an unordered-compare mask or-ed in (all ones, a NaN). The one
/// difference from `fmax`: a window whose largest values are zeros of both signs may give
/// either zero.
pub(super) fn max4(kb: &mut Kb, [t0, t1, t2, t3]: [Value; 4]) -> Value {
    let maxps = |kb: &mut Kb, x: Value, y: Value| {
        let c = kb.b.ins().fcmp(FloatCC::LessThan, y, x);
        kb.select(F32X4, c, x, y)
    };
    let m01 = maxps(kb, t0, t1);
    let m23 = maxps(kb, t2, t3);
    let m = maxps(kb, m01, m23);
    let n01 = kb.b.ins().fcmp(FloatCC::Unordered, t0, t1);
    let n23 = kb.b.ins().fcmp(FloatCC::Unordered, t2, t3);
    let nan = kb.b.ins().bor(n01, n23);
    let nan = kb.reinterpret(F32X4, nan);
    kb.b.ins().bor(m, nan)
}

/// The gradient of one 2×2 window of stride 2 (rows starting at `r0`, `r1` of the plane,
/// output column `ox`, element `oi`), written whole as the f32x4 steps write theirs: `0 + dy`
/// at the first maximum, `0` elsewhere (the same comparisons in the same order as
/// [`max_window`], so the same bits), each through the epilogue when there is one.
fn tail_window_grad(
    kb: &mut Kb,
    [r0, r1]: [Value; 2],
    ox: Value,
    oi: Value,
    [xp, dyp]: [Value; 2],
    (o, [d0, d1]): (Value, [Value; 2]),
    epi: Option<(UnaryOp, Value)>,
) {
    let c = kb.b.ins().imul_imm_s(ox, 2);
    let i0 = kb.b.ins().iadd(r0, c);
    let i1 = kb.b.ins().iadd(r1, c);
    let at = [
        i0,
        kb.b.ins().iadd_imm_s(i0, 1),
        i1,
        kb.b.ins().iadd_imm_s(i1, 1),
    ];
    let j0 = kb.b.ins().iadd(d0, c);
    let j1 = kb.b.ins().iadd(d1, c);
    let to = [
        j0,
        kb.b.ins().iadd_imm_s(j0, 1),
        j1,
        kb.b.ins().iadd_imm_s(j1, 1),
    ];
    let mut best = kb.b.ins().f32const(f32::NEG_INFINITY);
    let mut better = Vec::with_capacity(4);
    for &i in &at {
        let v = kb.ld(types::F32, xp, i);
        let b = kb.b.ins().fcmp(FloatCC::GreaterThan, v, best);
        better.push(b);
        best = kb.b.ins().select(b, v, best);
    }
    let dy = kb.ld(types::F32, dyp, oi);
    let z = kb.b.ins().f32const(0.0);
    let mut later: Option<Value> = None;
    for k in (0..4).rev() {
        // Comparisons are 0 or 1 here: "no later tap won" is `later xor 1`.
        let wins = match later {
            None => better[k],
            Some(l) => {
                let not = kb.b.ins().bxor_imm_u(l, 1);
                kb.b.ins().band(better[k], not)
            }
        };
        later = Some(match later {
            None => better[k],
            Some(l) => kb.b.ins().bor(l, better[k]),
        });
        let v = kb.b.ins().select(wins, dy, z);
        let mut d = kb.b.ins().fadd(z, v);
        if let Some((u, aux)) = epi {
            let a = kb.ld(types::F32, aux, at[k]);
            d = unary_grad(kb, u, a, d, types::F32);
        }
        kb.st(d, o, to[k]);
    }
}

/// `AvgPool` (`grad = false`: `ins = [x]`) or `AvgPoolGrad` (`ins = [dy]`): padding counts as
/// zeros in the k·k divisor. `x`/`y` are the image and pooled types.
pub fn avg_pool(
    kb: &mut Kb,
    win: &Window,
    x: &Type,
    y: &Type,
    out: usize,
    ins: &[usize],
    grad: bool,
) {
    let g = geo(x, y);
    let o = kb.ptr(out);
    let ip = kb.ptr(ins[0]);
    if grad {
        zero_fill(kb, x, o);
    }
    let k = win.kernel;
    let inv = 1.0 / (k * k) as f32;
    each_output(kb, &g, x.batched, |kb, ib, oi, oy, ox| {
        let zero = kb.b.ins().f32const(0.0);
        let invv = kb.b.ins().f32const(inv);
        if grad {
            let d = kb.ld(types::F32, ip, oi);
            let d = kb.b.ins().fmul(d, invv);
            each_tap(kb, &g, win, (oy, ox), |kb, t, ok| {
                let idx = kb.b.ins().iadd(ib, t);
                let add = match ok {
                    Some(ok) => kb.b.ins().select(ok, d, zero),
                    None => d,
                };
                let cur = kb.ld_rw(types::F32, o, idx);
                let s = kb.b.ins().fadd(cur, add);
                kb.st(s, o, idx);
            });
        } else {
            let sum_var = kb.var(types::F32, zero);
            each_tap(kb, &g, win, (oy, ox), |kb, t, ok| {
                let idx = kb.b.ins().iadd(ib, t);
                let v = kb.ld(types::F32, ip, idx);
                let v = match ok {
                    Some(ok) => kb.b.ins().select(ok, v, zero),
                    None => v,
                };
                let sum = kb.b.use_var(sum_var);
                let sum = kb.b.ins().fadd(sum, v);
                kb.b.def_var(sum_var, sum);
            });
            let sum = kb.b.use_var(sum_var);
            let r = kb.b.ins().fmul(sum, invv);
            kb.st(r, o, oi);
        }
    });
}

/// Pooling over each channel's whole H×W map (`x` = B×C×H×W, pooled B×C): `GlobalMaxPool`
/// (`max`, `ins = [x]`), its gradient (`ins = [x, dy]`: dy to the first maximum of the map,
/// found as [`max_window`] finds a window's), `GlobalAvgPool` (`ins = [x]`) or its gradient
/// (`ins = [dy]`: dy/(H·W) on every element of the map).
pub fn global_pool(kb: &mut Kb, x: &Type, out: usize, ins: &[usize], max: bool, grad: bool) {
    let n = x.dims[1] * x.dims[2];
    let o = kb.ptr(out);
    let ip = kb.ptr(ins[0]);
    let dyp = if max && grad {
        Some(kb.ptr(ins[1]))
    } else {
        None
    };
    let planes = kb.rows(x.batched, x.dims[0]);
    let zero = kb.int(0);
    if max && grad {
        zero_fill(kb, x, o);
    }
    kb.for_range(zero, planes, |kb, pl| {
        let base = kb.b.ins().imul_imm_s(pl, n as i64);
        if !max && grad {
            let d = kb.ld(types::F32, ip, pl);
            let nv = kb.b.ins().f32const(n as f32);
            let d = kb.b.ins().fdiv(d, nv);
            kb.for_n(n, |kb, t| {
                let idx = kb.b.ins().iadd(base, t);
                kb.st(d, o, idx);
            });
            return;
        }
        let init = if max {
            kb.b.ins().f32const(f32::NEG_INFINITY)
        } else {
            kb.b.ins().f32const(0.0)
        };
        let acc_var = kb.var(types::F32, init);
        let minus_one = kb.int(-1);
        let arg_var = kb.var(types::I64, minus_one);
        kb.for_n(n, |kb, t| {
            let idx = kb.b.ins().iadd(base, t);
            let v = kb.ld(types::F32, ip, idx);
            let acc = kb.b.use_var(acc_var);
            if max {
                let arg = kb.b.use_var(arg_var);
                let better = kb.b.ins().fcmp(FloatCC::GreaterThan, v, acc);
                let best = kb.b.ins().fmax(acc, v);
                let arg = kb.b.ins().select(better, idx, arg);
                kb.b.def_var(acc_var, best);
                kb.b.def_var(arg_var, arg);
            } else {
                let s = kb.b.ins().fadd(acc, v);
                kb.b.def_var(acc_var, s);
            }
        });
        let acc = kb.b.use_var(acc_var);
        match (max, dyp) {
            (true, None) => kb.st(acc, o, pl),
            (true, Some(dyp)) => {
                // dx[arg] = dy (skipped when no element beat −∞, arg = −1).
                let arg = kb.b.use_var(arg_var);
                let has =
                    kb.b.ins()
                        .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, arg, 0);
                let zero = kb.int(0);
                let at = kb.b.ins().select(has, arg, zero);
                let d = kb.ld(types::F32, dyp, pl);
                let z = kb.b.ins().f32const(0.0);
                let d = kb.b.ins().select(has, d, z);
                let cur = kb.ld_rw(types::F32, o, at);
                let s = kb.b.ins().fadd(cur, d);
                kb.st(s, o, at);
            }
            (false, _) => {
                let nv = kb.b.ins().f32const(n as f32);
                let mean = kb.b.ins().fdiv(acc, nv);
                kb.st(mean, o, pl);
            }
        }
    });
}
