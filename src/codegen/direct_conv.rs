//! Direct convolution for few input taps (the first layer of an image model: one channel,
//! 3×3): each output row is `Σ_taps w[o, tap] · x[row + tap]`, computed for 4 output channels ×
//! 8 positions per step: each tap's two groups of four inputs are loaded once and multiplied
//! by each channel's weight (written four times into the thread's scratch once per call, and
//! loaded as an f32x4 once per tap for both groups), the taps unrolled. A step loads six
//! vectors for eight `fma`s: with 8 channels × 4 positions it loaded nine, and the kernel ran
//! about 10% slower (the MNIST CNN's first layer, one thread, AMD Zen 4: 15.7–16.1 against
//! 14.2–14.7 µs an image at batch 1, 980–1,078 against 886–990 µs a training step of 64,
//! three alternated runs of `nnc bench --profile`).
//!
//! As im2col plus GEMM, such a convolution is a product of depth 9: the GEMM's micro-kernel
//! loads and stores its tile of C for nine multiply-adds, and the columns (9× the image) are
//! written and packed first. Here the image is copied once into a zero-bordered buffer (so no
//! tap needs a bounds check) and read in place. The sum of each output is the GEMM's: zero,
//! then one `fma` per tap in (channel, row, column) order, so the results are bit-identical to
//! im2col, and the node's epilogue (bias, activations) is applied before the store as the
//! GEMM's would be.
//!
//! The weight gradient of such a convolution, `dw[o, tap] = Σ_images Σ_positions dy[o, p] ·
//! x[p + tap]`, runs the same way ([`emit_grad_weight`]): all images bordered once
//! ([`emit_border_all`]), then per output channel one f32x4 partial sum per tap, in registers
//! over every image and position, added across its lanes at the end. That order differs from
//! im2col's GEMM (not bit-identical to it) and does not depend on the thread count. When the
//! convolution's output is max-pooled and nothing else needs its gradient
//! ([`crate::ir::Op::Conv2dGradWeightUnpool`]), the pooling's gradient is routed four windows
//! at a time and each window's share multiplied at once by the inputs under its four taps
//! ([`emit_grad_weight_unpool`]): only the tap holding the window's maximum gets a gradient,
//! and no gradient of the output's size is written. For the CNN's first layer (b64, two
//! threads, Zen 4) this took the kernel from 1,450–1,530 to 870–990 µs a step; routing each
//! image's plane into an L1-sized scratch and summing it from there (still the way for rows
//! of fewer than four windows) spent two thirds of its time routing.
//!
//! Kernel ABI: the forward pass is a row-parallel kernel (images are independent) whose
//! per-thread scratch is the bordered image and the broadcast weights; the weight gradient two
//! steps, the bordering of every image of the batch into one scratch (row-parallel) and the
//! sums, split over the threads by parts of the output channels
//! ([`super::lower::channel_parts`]), each part reading every image.

use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::Variable;

use super::elementwise::{chain, unary_grad};
use super::im2col::ConvGeom;
use super::kernel::{ro, rw, Kb, F32X4};
use super::lower::Scratch;
use super::pool;
use crate::ir::{Chain, UnaryOp};

/// The most taps (`C·k·k`): the forward pass unrolls them, and the weight gradient keeps one
/// f32x4 partial sum per tap in a register.
pub const MAX_TAPS: usize = 9;

/// Whether a forward convolution of `g` runs directly: stride 1 and at most [`MAX_TAPS`] taps.
pub fn applies(g: &ConvGeom) -> bool {
    g.win.stride == 1 && g.c * g.win.kernel * g.win.kernel <= MAX_TAPS && g.out_hw().is_ok()
}

/// Whether the weight gradient of a convolution of `g` runs directly: as [`applies`], and rows
/// of at least four output positions (one f32x4 group; a row of 26 ends with a step over its
/// last four that keeps the two lanes the steps before did not take).
pub fn grad_weight_applies(g: &ConvGeom) -> bool {
    applies(g) && g.out_hw().is_ok_and(|(_, ow)| ow >= 4)
}

/// Height and row length of the bordered image.
fn bordered(g: &ConvGeom) -> (usize, usize) {
    (g.h + 2 * g.win.pad, g.w + 2 * g.win.pad)
}

/// The taps in the weights' (channel, row, column) order, each with its byte offset in the
/// bordered image from the window's first element.
fn taps(g: &ConvGeom) -> impl Iterator<Item = (usize, i32)> {
    let (hp, wp) = bordered(g);
    let k = g.win.kernel;
    (0..g.c * k * k).map(move |t| {
        let (ci, ky, kx) = (t / (k * k), t / k % k, t % k);
        (t, (4 * (ci * hp * wp + ky * wp + kx)) as i32)
    })
}

/// The scratch of the weight gradient: every image of the batch bordered, with `split` each
/// row's even columns, then its odd ones ([`split_row`]).
pub fn scratch(g: &ConvGeom, split: bool) -> Scratch {
    let (hp, wp) = bordered(g);
    Scratch {
        per: g.c * hp * if split { 2 * split_row(g).0 } else { wp },
        batched: true,
        per_thread: false,
    }
}

/// A bordered row split by the parity of its columns: the half-rows' length (`⌈wp / 2⌉`
/// floats each) and whether the weight gradient from a pooling's gradient reads images so
/// ([`emit_grad_weight_unpool`]): when its rows hold at least four pooled windows.
pub fn split_row(g: &ConvGeom) -> (usize, bool) {
    let ow = g.out_hw().map_or(0, |(_, ow)| ow);
    (bordered(g).1.div_ceil(2), ow / 2 >= 4)
}

/// The scratch of a forward pass of `o` output channels, per thread: one bordered image, the
/// weights broadcast (each four times, [`broadcast_weights`]), and with `pooled` two output
/// rows of a tile's channels (the pooling's input, [`Tile::stage`]).
pub fn forward_scratch(g: &ConvGeom, o: usize, pooled: bool) -> Scratch {
    let ow = g.out_hw().map_or(0, |(_, ow)| ow);
    Scratch {
        per: forward_stage_at(g, o) + if pooled { 2 * TILE * ow } else { 0 },
        batched: false,
        per_thread: true,
    }
}

/// Where the stage starts in the forward scratch (floats): after the bordered image and the
/// broadcast weights.
fn forward_stage_at(g: &ConvGeom, o: usize) -> usize {
    let (hp, wp) = bordered(g);
    g.c * hp * wp + 4 * o * g.c * g.win.kernel * g.win.kernel
}

/// Writes each of the `n` weights at `wt` four times, as an f32x4, at `wb`: the products then
/// read them with a vector load. A broadcast at each use (`vmovss` and `vbroadcastss`, which
/// Cranelift did not merge into one `vbroadcastss mem` here) put a shuffle beside every
/// `fma`, and shuffles have one port: the kernel ran at half the `fma` rate.
fn broadcast_weights(kb: &mut Kb, wt: Value, wb: Value, n: usize) {
    kb.for_n(n, |kb, i| {
        let w = kb.ld(types::F32, wt, i);
        let w = kb.splat(F32X4, w);
        let at = kb.b.ins().imul_imm_s(i, 4);
        kb.st(w, wb, at);
    });
}

/// Copies image `b` of `xp` into the bordered image at element `dst0` of `pp`; with `split`,
/// each bordered row as its even columns, then its odd ones ([`split_row`]).
fn border_image(
    kb: &mut Kb,
    g: &ConvGeom,
    (xp, b): (Value, Value),
    (pp, dst0): (Value, Value),
    split: bool,
) {
    let (hp, wp) = bordered(g);
    let (half, _) = split_row(g);
    let wp = if split { 2 * half } else { wp };
    let p = g.win.pad;
    let zero = kb.int(0);
    let wv = kb.int(g.w as i64);
    let img = kb.b.ins().imul_imm_s(b, (g.c * g.h * g.w) as i64);
    kb.for_n(g.c, |kb, ch| {
        kb.for_n(g.h, |kb, line| {
            // Line `line` of channel `ch` into the bordered image.
            let row = kb.b.ins().imul_imm_s(ch, g.h as i64);
            let row = kb.b.ins().iadd(row, line);
            let src = kb.b.ins().imul_imm_s(row, g.w as i64);
            let src = kb.b.ins().iadd(img, src);
            let dst = kb.b.ins().imul_imm_s(ch, (hp * wp) as i64);
            let l = kb.b.ins().iadd_imm_s(line, p as i64);
            let l = kb.b.ins().imul_imm_s(l, wp as i64);
            let dst = kb.b.ins().iadd(dst, l);
            let dst = kb.b.ins().iadd(dst, dst0);
            if split {
                // Column p + j of the bordered row: half (p + j) mod 2, at (p + j) / 2. Eight
                // columns a step, split by shuffles, then the rest one at a time.
                let half_at = |c: usize| ((c % 2) * half + c / 2) as i64;
                let eights = kb.int((g.w / 8 * 8) as i64);
                kb.for_step(zero, eights, 8, |kb, j| {
                    let s = kb.b.ins().iadd(src, j);
                    let s4 = kb.b.ins().iadd_imm_s(s, 4);
                    let (a, b) = (kb.ld(F32X4, xp, s), kb.ld(F32X4, xp, s4));
                    let j2 = kb.b.ins().ushr_imm_s(j, 1);
                    let d = kb.b.ins().iadd(dst, j2);
                    for (first, lanes) in [(0, [0, 2, 4, 6]), (1, [1, 3, 5, 7])] {
                        let v = kb.shuffle(a, b, lanes);
                        let at = kb.b.ins().iadd_imm_s(d, half_at(p + first));
                        kb.st(v, pp, at);
                    }
                });
                return kb.for_range(eights, wv, |kb, j| {
                    let s = kb.b.ins().iadd(src, j);
                    let v = kb.ld(types::F32, xp, s);
                    let col = kb.b.ins().iadd_imm_s(j, p as i64);
                    let odd = kb.b.ins().band_imm_s(col, 1);
                    let odd = kb.b.ins().imul_imm_s(odd, half as i64);
                    let at = kb.b.ins().ushr_imm_s(col, 1);
                    let at = kb.b.ins().iadd(at, odd);
                    let d = kb.b.ins().iadd(dst, at);
                    kb.st(v, pp, d);
                });
            }
            let dst = kb.b.ins().iadd_imm_s(dst, p as i64);
            kb.vec_loop(zero, wv, |kb, j, lane| {
                let s = kb.b.ins().iadd(src, j);
                let v = kb.ld(lane, xp, s);
                let d = kb.b.ins().iadd(dst, j);
                kb.st(v, pp, d);
            });
        });
    });
}

/// Borders every image of the kernel's batch (slot `x`) into the scratch `pad`, one bordered
/// image after the other (with `split`, each row by the parity of its columns): the weight
/// gradient's first step, split over the threads by images.
pub fn emit_border_all(kb: &mut Kb, g: &ConvGeom, [x, pad]: [usize; 2], split: bool) {
    let per = scratch(g, split).per;
    let (xp, pp) = (kb.ptr(x), kb.ptr(pad));
    let all = kb.rows(true, per);
    // The border of every bordered image, once per call.
    kb.zero_fill(pp, all);
    let (zero_i, images) = (kb.int(0), kb.rows(true, 1));
    kb.for_range(zero_i, images, |kb, b| {
        let dst0 = kb.b.ins().imul_imm_s(b, per as i64);
        border_image(kb, g, (xp, b), (pp, dst0), split);
    });
}

/// `dw = Σ dy ⋆ x` over the kernel's batch for `part` output channels (of `o`; slots `dy` and
/// `out` moved to the part's first): slots `dy`, `out` (the `O×C×k×k` gradient) and the
/// scratch `pad` (every image bordered by [`emit_border_all`]; see the module's comment).
pub fn emit_grad_weight(
    kb: &mut Kb,
    g: &ConvGeom,
    (o, part): (usize, usize),
    [dy, out, pad]: [usize; 3],
) {
    let (oh, ow) = g.out_hw().unwrap_or((0, 0));
    let dyp = kb.ptr(dy);
    grad_weight_sums(kb, g, part, [out, pad], None, &mut |kb, b, oc| {
        // Image b's gradient plane of channel oc.
        let plane = kb.b.ins().imul_imm_s(b, o as i64);
        let plane = kb.b.ins().iadd(plane, oc);
        let plane = kb.b.ins().imul_imm_s(plane, (oh * ow * 4) as i64);
        (kb.b.ins().iadd(dyp, plane), ro())
    });
}

/// [`emit_grad_weight`] of a convolution whose output `y` (through the activation `act`) is
/// max-pooled by 2×2 windows of stride 2 that tile it, from the pooling's gradient `dp`
/// ([`crate::ir::Op::Conv2dGradWeightUnpool`]); with `bias`, the bias gradient (the sum of the
/// routed gradient) into that slot ([`crate::ir::Op::UnpoolBiasGrad`]). Slots `y`, `dp`, `out`
/// and `bias` moved to the part's first channel, `pad` the bordered images.
///
/// Where the rows hold at least four pooled windows ([`split_row`]), `dz` is `None` and the
/// images are bordered with each row split by the parity of its columns. Four windows at a
/// time are routed by the pooling gradient's own code ([`pool::route_pairs`], so the same
/// values) and multiplied at once by the inputs under each of their four taps: only one tap of
/// a window gets its gradient, and the routed gradient never goes to memory. The inputs under
/// a tap of four windows (every other column) are one f32x4 load. The sum of tap `t` adds, per
/// step, the window taps in (row, column) order of the inputs they meet, over one image, and
/// each image's sum is added to the total after it. Otherwise each image's plane is routed
/// into the part's plane of the scratch `dz` (one plane a part, slot moved likewise) and
/// summed from there ([`grad_weight_sums`]).
pub fn emit_grad_weight_unpool(
    kb: &mut Kb,
    g: &ConvGeom,
    (o, part): (usize, usize),
    act: Option<UnaryOp>,
    [y, dp, out, pad]: [usize; 4],
    dz: Option<usize>,
    bias: Option<usize>,
) {
    let (oh, ow) = g.out_hw().unwrap_or((0, 0));
    let (ph, pw) = (oh / 2, ow / 2);
    let Some(dz) = dz else {
        return unpool_sums(kb, g, (o, part), act, [y, dp, out, pad], bias);
    };
    let (yp, dpp, dzp) = (kb.ptr(y), kb.ptr(dp), kb.ptr(dz));
    grad_weight_sums(kb, g, part, [out, pad], bias, &mut |kb, b, oc| {
        let (yb, db) = pool_planes(kb, g, o, [yp, dpp], b, oc);
        kb.for_n(ph, |kb, qy| {
            let r0 = kb.b.ins().imul_imm_s(qy, (2 * ow) as i64);
            let r1 = kb.b.ins().iadd_imm_s(r0, ow as i64);
            let orow = kb.b.ins().imul_imm_s(qy, pw as i64);
            let epi = act.map(|a| (a, yb));
            pool::max_pool_grad_row(kb, yb, [r0, r1], (db, orow), (dzp, [r0, r1]), pw, epi);
        });
        // Written just above: loads that must stay after those stores.
        (dzp, rw())
    });
}

/// [`emit_grad_weight_unpool`] four pooled windows at a time (rows of at least four), on
/// images bordered with split rows.
fn unpool_sums(
    kb: &mut Kb,
    g: &ConvGeom,
    (o, part): (usize, usize),
    act: Option<UnaryOp>,
    [y, dp, out, pad]: [usize; 4],
    bias: Option<usize>,
) {
    let (oh, ow) = g.out_hw().unwrap_or((0, 0));
    let (ph, pw) = (oh / 2, ow / 2);
    let (hp, _) = bordered(g);
    let (half, _) = split_row(g);
    let k = g.win.kernel;
    let n_taps = g.c * k * k;
    let per = scratch(g, true).per;
    let (yp, dpp, dwp, pp) = (kb.ptr(y), kb.ptr(dp), kb.ptr(out), kb.ptr(pad));
    let bp = bias.map(|b| kb.ptr(b));
    let images = kb.rows(true, 1);
    let zero_i = kb.int(0);
    // A row whose windows are not a whole number of fours ends with a step over its last four,
    // which keeps only the lanes of the windows the steps before did not take.
    let rest = pw % 4;
    let keep = (rest != 0).then(|| lanes_from(kb, 4 - rest));
    // The inputs under window tap (sy, sx) for kernel tap (ky, kx) of channel ci: row
    // 2·qy + sy + ky of the bordered image, columns 2·px + sx + kx, every other one; by the
    // offset (sy + ky, sx + kx), which up to four (tap, window tap) pairs share.
    let mut meets: Vec<(i32, Vec<(usize, usize)>)> = Vec::new();
    for ci in 0..g.c {
        for r in 0..=k {
            for f in 0..=k {
                let mut pairs = Vec::new();
                for (sy, sx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    if (sy..sy + k).contains(&r) && (sx..sx + k).contains(&f) {
                        let t = ci * k * k + (r - sy) * k + (f - sx);
                        pairs.push((t, 2 * sy + sx));
                    }
                }
                let at = ci * hp * 2 * half + r * 2 * half + (f % 2) * half + f / 2;
                meets.push((4 * at as i32, pairs));
            }
        }
    }
    kb.for_n(part, |kb, oc| {
        let z = kb.cst(F32X4, 0.0);
        // Each image's sums, then the image's into the totals: a sum of 50,000 terms in one
        // f32x4 (the CNN's) drifted from im2col's further than `--opt 0` allows.
        let total: Vec<_> = (0..n_taps).map(|_| kb.var(F32X4, z)).collect();
        let total_b = bp.map(|_| kb.var(F32X4, z));
        let acc: Vec<_> = (0..n_taps).map(|_| kb.var(F32X4, z)).collect();
        let acc_b = bp.map(|_| kb.var(F32X4, z));
        kb.for_range(zero_i, images, |kb, b| {
            for &v in acc.iter().chain(&acc_b) {
                kb.b.def_var(v, z);
            }
            let (yb, db) = pool_planes(kb, g, o, [yp, dpp], b, oc);
            let xb = kb.b.ins().imul_imm_s(b, (per * 4) as i64);
            let xb = kb.b.ins().iadd(pp, xb);
            kb.for_n(ph, |kb, qy| {
                let r0 = kb.b.ins().imul_imm_s(qy, (2 * ow) as i64);
                let r1 = kb.b.ins().iadd_imm_s(r0, ow as i64);
                let orow = kb.b.ins().imul_imm_s(qy, pw as i64);
                let xrow = kb.b.ins().imul_imm_s(qy, (2 * 2 * half * 4) as i64);
                let xrow = kb.b.ins().iadd(xb, xrow);
                let step = |kb: &mut Kb, px: Value, keep: Option<Value>| {
                    // The activation's gradient at the window's maximum, where its gradient
                    // goes (elsewhere it is 0 either way), and the lanes of windows not taken.
                    let dy_at = |kb: &mut Kb, dy: Value, max: Value| {
                        let dy = match act {
                            Some(u) => unary_grad(kb, u, max, dy, F32X4),
                            None => dy,
                        };
                        match keep {
                            Some(m) => kb.select(F32X4, m, dy, z),
                            None => dy,
                        }
                    };
                    let (_, d) = pool::route_pairs(kb, yb, [r0, r1], (db, orow), px, &dy_at);
                    if let Some(var) = acc_b {
                        let s01 = kb.b.ins().fadd(d[0], d[1]);
                        let s23 = kb.b.ins().fadd(d[2], d[3]);
                        let s = kb.b.ins().fadd(s01, s23);
                        let a = kb.b.use_var(var);
                        let a = kb.b.ins().fadd(a, s);
                        kb.b.def_var(var, a);
                    }
                    let off = kb.b.ins().imul_imm_s(px, 4);
                    let xa = kb.b.ins().iadd(xrow, off);
                    for (at, pairs) in &meets {
                        // Written by the step before, which this kernel does not overlap.
                        let v = kb.b.ins().load(F32X4, ro(), xa, *at);
                        for &(t, w) in pairs {
                            let a = kb.b.use_var(acc[t]);
                            let a = kb.b.ins().fma(v, d[w], a);
                            kb.b.def_var(acc[t], a);
                        }
                    }
                };
                let (lo, hi) = (kb.int(0), kb.int((pw / 4 * 4) as i64));
                kb.for_step(lo, hi, 4, |kb, px| step(kb, px, None));
                if keep.is_some() {
                    let last = kb.int(pw as i64 - 4);
                    step(kb, last, keep);
                }
            });
            for (&t, &v) in total.iter().zip(&acc).chain(total_b.iter().zip(&acc_b)) {
                let (a, x) = (kb.b.use_var(t), kb.b.use_var(v));
                let a = kb.b.ins().fadd(a, x);
                kb.b.def_var(t, a);
            }
        });
        store_sums(kb, oc, (dwp, &total), total_b.zip(bp));
    });
}

/// The sums of the weight gradient for `part` output channels: per channel one f32x4 partial
/// sum per tap, in registers over every image of the batch and position, added across its
/// lanes at the end into slot `out`; with `bias`, the plane's own sum too (one more f32x4
/// partial sum), into that slot. `plane(kb, b, oc)` emits what makes image `b`'s gradient plane
/// of channel `oc` readable and returns its address and the flags to load it with.
fn grad_weight_sums(
    kb: &mut Kb,
    g: &ConvGeom,
    part: usize,
    [out, pad]: [usize; 2],
    bias: Option<usize>,
    plane: &mut dyn FnMut(&mut Kb, Value, Value) -> (Value, MemFlagsData),
) {
    let (oh, ow) = g.out_hw().unwrap_or((0, 0));
    let (_, wp) = bordered(g);
    let n_taps = g.c * g.win.kernel * g.win.kernel;
    let per = scratch(g, false).per;
    let (dwp, pp) = (kb.ptr(out), kb.ptr(pad));
    let bp = bias.map(|b| kb.ptr(b));
    let images = kb.rows(true, 1);
    let zero_i = kb.int(0);
    // A row of positions that are not a whole number of fours ends with a step over its last
    // four, which keeps only the lanes of the positions the steps before did not take.
    let rest = ow % 4;
    let keep = (rest != 0).then(|| lanes_from(kb, 4 - rest));
    kb.for_n(part, |kb, oc| {
        let z = kb.cst(F32X4, 0.0);
        let acc: Vec<_> = (0..n_taps).map(|_| kb.var(F32X4, z)).collect();
        let acc_b = bp.map(|_| kb.var(F32X4, z));
        kb.for_range(zero_i, images, |kb, b| {
            let (plane, flags) = plane(kb, b, oc);
            // Image b's bordered copy.
            let xb = kb.b.ins().imul_imm_s(b, (per * 4) as i64);
            let xb = kb.b.ins().iadd(pp, xb);
            kb.for_n(oh, |kb, oy| {
                let xrow = kb.b.ins().imul_imm_s(oy, (wp * 4) as i64);
                let xrow = kb.b.ins().iadd(xb, xrow);
                let drow = kb.b.ins().imul_imm_s(oy, (ow * 4) as i64);
                let drow = kb.b.ins().iadd(plane, drow);
                let step = |kb: &mut Kb, ox: Value, keep: Option<Value>| {
                    let off = kb.b.ins().imul_imm_s(ox, 4);
                    let xa = kb.b.ins().iadd(xrow, off);
                    let da = kb.b.ins().iadd(drow, off);
                    let d = kb.b.ins().load(F32X4, flags, da, 0);
                    let d = match keep {
                        Some(m) => kb.select(F32X4, m, d, z),
                        None => d,
                    };
                    if let Some(var) = acc_b {
                        let a = kb.b.use_var(var);
                        let a = kb.b.ins().fadd(a, d);
                        kb.b.def_var(var, a);
                    }
                    for (t, off) in taps(g) {
                        // Written by the step before, which this kernel does not overlap.
                        let v = kb.b.ins().load(F32X4, ro(), xa, off);
                        let a = kb.b.use_var(acc[t]);
                        let a = kb.b.ins().fma(v, d, a);
                        kb.b.def_var(acc[t], a);
                    }
                };
                let (lo, hi) = (kb.int(0), kb.int((ow / 4 * 4) as i64));
                kb.for_step(lo, hi, 4, |kb, ox| step(kb, ox, None));
                if keep.is_some() {
                    let last = kb.int(ow as i64 - 4);
                    step(kb, last, keep);
                }
            });
        });
        store_sums(kb, oc, (dwp, &acc), acc_b.zip(bp));
    });
}

/// The lane mask (i32x4) of lanes `first..4`.
fn lanes_from(kb: &mut Kb, first: usize) -> Value {
    let lanes: Vec<u8> = (0..4)
        .flat_map(|l| [if l >= first { 0xff } else { 0 }; 4])
        .collect();
    let c = kb.b.func.dfg.constants.insert(lanes.into());
    kb.b.ins().vconst(types::I32X4, c)
}

/// Image `b`'s planes of channel `oc` (of `o`) in the pooling's input `y` and its pooled
/// gradient `dp` (at `yp` and `dpp`): their addresses.
fn pool_planes(
    kb: &mut Kb,
    g: &ConvGeom,
    o: usize,
    [yp, dpp]: [Value; 2],
    b: Value,
    oc: Value,
) -> (Value, Value) {
    let (oh, ow) = g.out_hw().unwrap_or((0, 0));
    let plane = kb.b.ins().imul_imm_s(b, o as i64);
    let plane = kb.b.ins().iadd(plane, oc);
    let at = kb.b.ins().imul_imm_s(plane, (oh * ow * 4) as i64);
    let yb = kb.b.ins().iadd(yp, at);
    let at =
        kb.b.ins()
            .imul_imm_s(plane, ((oh / 2) * (ow / 2) * 4) as i64);
    (yb, kb.b.ins().iadd(dpp, at))
}

/// Channel `oc`'s weight gradient from its per-tap f32x4 sums `sums`, each added across its
/// lanes into the channel's taps at `dwp`; with `bias`, its sum and the slot's address, into
/// element `oc` there.
fn store_sums(
    kb: &mut Kb,
    oc: Value,
    (dwp, sums): (Value, &[Variable]),
    bias: Option<(Variable, Value)>,
) {
    let base = kb.b.ins().imul_imm_s(oc, sums.len() as i64);
    for (t, &var) in sums.iter().enumerate() {
        let a = kb.b.use_var(var);
        let s = kb.hsum(a, F32X4);
        let i = kb.b.ins().iadd_imm_s(base, t as i64);
        kb.st(s, dwp, i);
    }
    if let Some((var, bp)) = bias {
        let a = kb.b.use_var(var);
        let s = kb.hsum(a, F32X4);
        kb.st(s, bp, oc);
    }
}

/// `y = conv(x, w)` then `epi` (the chain, with the slot of its bias), then with `pooled` a
/// 2×2 max pooling of stride 2, for every image of the kernel's batch: `o` output channels of
/// the `o_image` an image of the output has (all of them, or a part whose weights, bias and
/// output the caller's table points at), slots `x`, `w`, `out` and the scratch `pad`
/// ([`forward_scratch`]). With `beside` (not `pooled`), the output is also max-pooled into that
/// slot, each pair of rows as soon as it is written ([`crate::ir::Op::PoolBeside`]).
pub fn emit(
    kb: &mut Kb,
    g: &ConvGeom,
    (o, o_image): (usize, usize),
    [x, w, out, pad]: [usize; 4],
    epi: Option<(&Chain, Option<usize>)>,
    pooled: bool,
    beside: Option<usize>,
) {
    let (oh, ow) = g.out_hw().unwrap_or((0, 0));
    // Outputs per channel of an image: pooled or not.
    let plane = if pooled { (oh / 2) * (ow / 2) } else { oh * ow };
    let (hp, wp) = bordered(g);
    let c = g.c;
    let (xp, wt, yp, pp) = (kb.ptr(x), kb.ptr(w), kb.ptr(out), kb.ptr(pad));
    let bias = epi.and_then(|(_, b)| b).map(|s| kb.ptr(s));
    let epi_at: EpiAt = epi.map(|(chain, _)| (chain, bias));
    // The border stays zero: only the interior is written, image after image.
    let padded = kb.int((c * hp * wp) as i64);
    kb.zero_fill(pp, padded);
    let wb = kb.b.ins().iadd_imm_s(pp, (4 * c * hp * wp) as i64);
    broadcast_weights(kb, wt, wb, o * c * g.win.kernel * g.win.kernel);
    let stage = pooled.then(|| {
        kb.b.ins()
            .iadd_imm_s(pp, (4 * forward_stage_at(g, o)) as i64)
    });
    let beside = beside.filter(|_| !pooled).map(|s| kb.ptr(s));
    let images = kb.rows(true, 1);
    let start = kb.int(0);
    kb.for_range(start, images, |kb, b| {
        border_image(kb, g, (xp, b), (pp, start), false);
        let out_img = kb.b.ins().imul_imm_s(b, (o_image * plane) as i64);
        // Tiles of TILE output channels (and one of the rest).
        let full = o / TILE;
        let tiles = [
            (full, TILE),
            (usize::from(!o.is_multiple_of(TILE)), o % TILE),
        ];
        let mut first = 0;
        for (count, rows) in tiles {
            if count == 0 {
                continue;
            }
            let beside = beside.map(|bp| {
                let img =
                    kb.b.ins()
                        .imul_imm_s(b, (o_image * (oh / 2) * (ow / 2)) as i64);
                (bp, img)
            });
            let at = Tile {
                rows,
                first,
                out_img,
                stage,
                beside,
            };
            kb.for_n(count, |kb, t| {
                conv_tile(kb, g, at, t, [pp, wt, wb, yp], epi_at)
            });
            first += count * rows;
        }
    });
}

/// Output channels computed together: each tap's inputs are loaded once for all of them.
pub const TILE: usize = 4;
/// Groups of four positions computed together: each channel's weight is loaded once for them
/// (a row's last group, when their count is odd, alone). Eight accumulators, as many as two
/// `fma` units of four cycles' latency keep busy.
const VECS: usize = 2;

/// A group of `rows` output channels, the `t`-th of those starting at channel `first`, of the
/// image whose output starts at element `out_img`; with a `stage` (the two rows of each
/// channel, [`forward_scratch`]) when the output is pooled.
#[derive(Clone, Copy)]
struct Tile {
    rows: usize,
    first: usize,
    out_img: Value,
    stage: Option<Value>,
    /// Where the pooled output goes besides, and where its image starts.
    beside: Option<(Value, Value)>,
}

/// The epilogue as the kernel applies it: the chain and its bias pointer.
type EpiAt<'a> = Option<(&'a Chain, Option<Value>)>;

/// One tile of output channels over the whole image: per output row, [`VECS`] × 4 positions
/// at a time (one f32x4 accumulator per channel and group of four, the taps' inputs loaded
/// once and multiplied by each channel's weight), then four at a time, the last `ow mod 4`
/// positions one by one.
fn conv_tile(
    kb: &mut Kb,
    g: &ConvGeom,
    at: Tile,
    t: Value,
    [pp, wt, wb, yp]: [Value; 4],
    epi: EpiAt,
) {
    let (oh, ow) = g.out_hw().unwrap_or((0, 0));
    let wp = bordered(g).1;
    let (c, k) = (g.c, g.win.kernel);
    let n_taps = c * k * k;
    let oc0 = kb.b.ins().imul_imm_s(t, at.rows as i64);
    let oc0 = kb.b.ins().iadd_imm_s(oc0, at.first as i64);
    // The tile's weights start at w[oc0]; its output planes at y[oc0].
    let wbase = kb.b.ins().imul_imm_s(oc0, (n_taps * 4) as i64);
    let wvecs = kb.b.ins().imul_imm_s(wbase, 4);
    let wvecs = kb.b.ins().iadd(wb, wvecs);
    let wbase = kb.b.ins().iadd(wt, wbase);
    let ow4 = ow / 4 * 4;
    // Output row `oy` of the tile's channels: channel r's at element `first + r·stride` of
    // `dst`.
    let row = |kb: &mut Kb, oy: Value, (dst, first, stride): (Value, Value, usize)| {
        let irow = kb.b.ins().imul_imm_s(oy, (wp * 4) as i64);
        let irow = kb.b.ins().iadd(pp, irow);
        // `vecs` groups of four positions (or one position, `lane` F32) from `ox`.
        let positions = |kb: &mut Kb, ox: Value, lane, vecs: usize| {
            let xrow = kb.b.ins().imul_imm_s(ox, 4);
            let xrow = kb.b.ins().iadd(irow, xrow);
            let width = if lane == F32X4 { 16 } else { 4 };
            let mut acc: Vec<Value> = (0..at.rows * vecs).map(|_| kb.cst(lane, 0.0)).collect();
            for (tap, off) in taps(g) {
                // The bordered image is written by this kernel: plain loads.
                let v: Vec<Value> = (0..vecs)
                    .map(|q| kb.b.ins().load(lane, rw(), xrow, off + (q * width) as i32))
                    .collect();
                for r in 0..at.rows {
                    let woff = 4 * (r * n_taps + tap);
                    let w = if lane == F32X4 {
                        kb.b.ins().load(F32X4, ro(), wvecs, 4 * woff as i32)
                    } else {
                        kb.b.ins().load(types::F32, ro(), wbase, woff as i32)
                    };
                    for (q, &v) in v.iter().enumerate() {
                        let a = &mut acc[r * vecs + q];
                        *a = kb.b.ins().fma(w, v, *a);
                    }
                }
            }
            let mut bias = vec![None; at.rows];
            for (j, mut a) in acc.into_iter().enumerate() {
                let (r, q) = (j / vecs, j % vecs);
                if let Some((c, bp)) = epi {
                    let b = *bias[r].get_or_insert_with(|| {
                        bp.map(|bp| {
                            let rr = kb.b.ins().iadd_imm_s(oc0, r as i64);
                            kb.ld(types::F32, bp, rr)
                        })
                    });
                    a = chain(kb, &c.acts, b, a, lane);
                }
                let i =
                    kb.b.ins()
                        .iadd_imm_s(first, (r * stride + q * width / 4) as i64);
                let i = kb.b.ins().iadd(i, ox);
                kb.st(a, dst, i);
            }
        };
        let ow8 = ow / (4 * VECS) * (4 * VECS);
        let (lo, hi) = (kb.int(0), kb.int(ow8 as i64));
        kb.for_step(lo, hi, (4 * VECS) as i64, |kb, ox| {
            positions(kb, ox, F32X4, VECS)
        });
        let (lo, hi) = (kb.int(ow8 as i64), kb.int(ow4 as i64));
        kb.for_step(lo, hi, 4, |kb, ox| positions(kb, ox, F32X4, 1));
        let (lo, hi) = (kb.int(ow4 as i64), kb.int(ow as i64));
        kb.for_range(lo, hi, |kb, ox| positions(kb, ox, types::F32, 1));
    };
    let Some(stage) = at.stage else {
        let plane = kb.b.ins().imul_imm_s(oc0, (oh * ow) as i64);
        let plane = kb.b.ins().iadd(at.out_img, plane);
        let Some((bp, bimg)) = at.beside else {
            kb.for_n(oh, |kb, oy| {
                let orow = kb.b.ins().imul_imm_s(oy, ow as i64);
                let orow = kb.b.ins().iadd(plane, orow);
                row(kb, oy, (yp, orow, oh * ow));
            });
            return;
        };
        // Each pair of rows written, then pooled from the output while in L1.
        let (ph, pw) = (oh / 2, ow / 2);
        let pplane = kb.b.ins().imul_imm_s(oc0, (ph * pw) as i64);
        let pplane = kb.b.ins().iadd(bimg, pplane);
        kb.for_n(ph, |kb, py| {
            let oy0 = kb.b.ins().imul_imm_s(py, 2);
            let r0 = kb.b.ins().imul_imm_s(oy0, ow as i64);
            let r0 = kb.b.ins().iadd(plane, r0);
            let r1 = kb.b.ins().iadd_imm_s(r0, ow as i64);
            let oy1 = kb.b.ins().iadd_imm_s(oy0, 1);
            row(kb, oy0, (yp, r0, oh * ow));
            row(kb, oy1, (yp, r1, oh * ow));
            let prow = kb.b.ins().imul_imm_s(py, pw as i64);
            let prow = kb.b.ins().iadd(pplane, prow);
            for r in 0..at.rows {
                let off = (r * oh * ow) as i64;
                let (c0, c1) = (
                    kb.b.ins().iadd_imm_s(r0, off),
                    kb.b.ins().iadd_imm_s(r1, off),
                );
                let out = kb.b.ins().iadd_imm_s(prow, (r * ph * pw) as i64);
                pool::max_pool_row(kb, yp, [c0, c1], (bp, out), pw);
            }
        });
        return;
    };
    // Pooled (2×2, stride 2): each pair of output rows into the stage (channel r's two rows
    // at 2r·ow), then pooled into the output's row.
    let (ph, pw) = (oh / 2, ow / 2);
    let plane = kb.b.ins().imul_imm_s(oc0, (ph * pw) as i64);
    let plane = kb.b.ins().iadd(at.out_img, plane);
    kb.for_n(ph, |kb, py| {
        for half in 0..2 {
            let oy = kb.b.ins().imul_imm_s(py, 2);
            let oy = kb.b.ins().iadd_imm_s(oy, half);
            let first = kb.int(half * ow as i64);
            row(kb, oy, (stage, first, 2 * ow));
        }
        let orow = kb.b.ins().imul_imm_s(py, pw as i64);
        let orow = kb.b.ins().iadd(plane, orow);
        for r in 0..at.rows {
            let r0 = kb.int((2 * r * ow) as i64);
            let r1 = kb.int(((2 * r + 1) * ow) as i64);
            let out = kb.b.ins().iadd_imm_s(orow, (r * ph * pw) as i64);
            pool::max_pool_row(kb, stage, [r0, r1], (yp, out), pw);
        }
    });
}
