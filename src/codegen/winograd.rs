//! Winograd F(2×2, 3×3) for 3×3 stride-1 convolutions: `Conv2d`; `Conv2dGradInput`, which
//! is the same correlation of `dy` (padded by `2 − p`) with the kernel rotated by 180° and its
//! channels swapped; and `Conv2dGradWeight`. Each 2×2 block of outputs costs 16 multiplications
//! per channel pair instead of 36 (2.25× fewer), at the price of cheap linear transforms:
//!
//! - weights, once per run, and not again while they keep their bits (inference):
//!   `U[ξ][c][o] = (G g Gᵀ)[ξ]` for every 3×3 kernel `g` (16 × C×O, stored transposed so that
//!   the products read it in place);
//! - inputs: `V[ξ][c][t] = (Bᵀ d B)[ξ]` for every overlapping 4×4 tile `d` (stride 2) of every
//!   channel, tiles `t` of several images side by side so the products are wide;
//! - 16 GEMMs on the JIT'd GEMM, `M[ξ] (O×T) = U[ξ]ᵀ (O×C) · V[ξ] (C×T)`, reading `U` and `V`
//!   where they lie (the rows of `V` padded to whole f32x4 groups);
//! - outputs: `y = Aᵀ m A` per tile (2×2, clipped at odd edges), and the forward pass's fused
//!   chain (bias, activations) on each value before it is stored, so that the output is
//!   written once.
//!
//! The weight gradient is the adjoint: `dy` blocks `e` become `E = A e Aᵀ`, the 16 GEMMs are
//! `dU[ξ] += E[ξ] · V[ξ]ᵀ` over the tiles of each group of images, and `dw = Gᵀ dU G`.
//!
//! The transforms are Cranelift kernels of the graph's module with every dimension but the
//! image count known at compile time; the input, output and `dy` transforms work on f32x4
//! across four horizontally adjacent tiles (`shufps` splits a row into the tiles' columns,
//! `unpck` joins them back); a row that is not a whole number of fours ends with one more step
//! over its last four tiles (transforms write each tile twice harmlessly), scalar only when it
//! has fewer than four. The input transform first copies each channel into a zero-bordered
//! buffer, so its loads need no bounds checks. Images are split over the worker threads, and a
//! worker runs groups of about [`GROUP_TILES`] tiles through the stages (transforms, products,
//! output transform or the products' sum), so its `V` and `M` stay in L2. With fewer images
//! than threads (batch-1 inference) the forward pass splits each image instead: two tasks each
//! transform it into half of the 16 planes of `V` and compute those planes' products (so a
//! plane is read by the core that wrote it), then the output transform is split by channels
//! (the kernel takes a channel range); the input gradient splits only its output transform.
//! Each output element is a fixed sum whatever the split (the weight gradient sums fixed runs
//! of images, then the runs in order), so results do not depend on the thread count.
//!
//! [`plan`] is the one place that decides between this and im2col (see [`super::conv`]).

use cranelift_codegen::ir::{InstBuilder, Type as ClifType, Value};

use super::elementwise::chain;
use super::epilogue::EpiStep;
use super::glue::{split, ConvKind, Lib, Table};
use super::im2col::ConvGeom;
use super::kernel::{Kb, KernelFn, KernelModule, F32, F32X4};
use super::lower::{add_scratch, Scratch};
use super::CodegenError;
use crate::ir::{Chain, UnaryOp};
use std::ops::Range;
use std::sync::Mutex;

/// Input channels (the GEMMs' depth) below which im2col is kept: the transforms cost per
/// channel what a few channels' multiplications do, and GEMMs of depth < 8 run far below the
/// kernel's peak. A judgement, not a measured crossover: the examples' convolutions have 1
/// (im2col) or 32 (Winograd, measured faster: BENCHMARKS.md) input channels.
pub const MIN_CHANNELS: usize = 8;
/// Tiles per group of images a worker transforms and multiplies at once: `V` and `M` of a
/// group (16·(C + O)·tiles floats, 600 KiB for two 14×14 images with C = 32, O = 64) stay in
/// L2 next to the GEMM's packed panels. On the MNIST CNN (`nnc bench examples/mnist_cnn.nn
/// --steps 60 --threads 1`, 2-core shared VM) 100–128 tiles ran ~5–15% faster than 256–1000.
const GROUP_TILES: usize = 128;
/// Floats added to the stride between the 16 `ξ` planes of `U`, `V` and `M`: without it the
/// planes are often a multiple of 4 KiB apart (64 × 32 weights, 64 images of 49 tiles), so
/// the 16 stores of one tile hit one L1 set and evict each other (conv2's weight transform
/// took ~85 µs instead of ~7).
const SKEW: usize = 16;
/// Runs of images whose weight gradients are summed separately (each in its own `dU`, 128 KiB
/// for 64×32 channels) and then in order: units of work for the threads that do not depend on
/// their number.
const RUNS: usize = 8;
/// Tiles a row of `V` or `M` may have beyond its group's: the forward products read `V` in
/// place (no packing, see `gemm::IN_PLACE_MAX_K`), which needs rows of whole f32x4 groups.
const ROW_PAD: usize = 3;
/// Multiply-adds (of the im2col form) below which the images are not split across threads.
const PARALLEL_WORK: usize = 1 << 18;

/// A 3×3 stride-1 correlation as Winograd computes it: `cin` input channels of `h×w` with
/// `pad` zeros around, `cout` output channels of `oh×ow` (`oh = h + 2·pad − 2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WinoGeom {
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub pad: usize,
    pub cout: usize,
    pub oh: usize,
    pub ow: usize,
}

impl WinoGeom {
    /// Tile rows and columns: one tile per 2×2 block of outputs.
    fn tiles_hw(&self) -> (usize, usize) {
        (self.oh.div_ceil(2), self.ow.div_ceil(2))
    }
    /// Tiles per image.
    fn tiles(&self) -> usize {
        let (th, tw) = self.tiles_hw();
        th * tw
    }
    /// The zero-bordered copy of one channel: every tile's 4×4 window lies inside it.
    fn padded_hw(&self) -> (usize, usize) {
        let (th, tw) = self.tiles_hw();
        (2 * th + 2, 2 * tw + 2)
    }
}

/// The Winograd form of a convolution when it applies (3×3, stride 1, padding ≤ 2 so that the
/// input gradient is a correlation too) and pays ([`MIN_CHANNELS`] input channels or more);
/// `None` keeps im2col. `g` is the geometry of `x` (or `dx`), `o` the channels of `y` (`dy`).
/// The weight gradient has the geometry of the forward pass.
pub fn plan(kind: ConvKind, g: &ConvGeom, o: usize) -> Option<WinoGeom> {
    let win = g.win;
    if win.kernel != 3 || win.stride != 1 || win.pad > 2 {
        return None;
    }
    let (oh, ow) = g.out_hw().ok()?;
    let wg = match kind {
        ConvKind::Forward | ConvKind::GradWeight => WinoGeom {
            cin: g.c,
            h: g.h,
            w: g.w,
            pad: win.pad,
            cout: o,
            oh,
            ow,
        },
        ConvKind::GradInput => WinoGeom {
            cin: o,
            h: oh,
            w: ow,
            pad: 2 - win.pad,
            cout: g.c,
            oh: g.h,
            ow: g.w,
        },
    };
    (wg.cin >= MIN_CHANNELS).then_some(wg)
}

/// A convolution on Winograd transforms and the GEMM: the node's input slots (in the node's
/// order: `x` or `dy`, then `w` or `dy`) and output, the scratch slots of the transformed
/// weights (or weight gradient) `U`, inputs `V`, products (or transformed `dy`) `M` and the
/// padded channel, and the handles of its three kernels.
#[derive(Clone, Debug)]
pub struct WinogradStep {
    pub kind: ConvKind,
    pub geom: WinoGeom,
    pub ins: [usize; 2],
    pub out: usize,
    /// Weight gradient: one `dU` per run of images (the other passes keep `U` in `u_cache`).
    u: usize,
    v: usize,
    m: usize,
    pad: usize,
    /// Forward and input gradient: weights, inputs, outputs; weight gradient: inputs,
    /// `dy` tiles, weight gradient.
    kernels: [usize; 3],
    /// Forward: the input transform into planes 0–7 and 8–15 of `V` only (the input gradient,
    /// which runs at batch 1 only when training on one image, transforms it on one task: the
    /// two kernels cost 1.5 ms of the CNN's 17–20 ms compile).
    halves: Option<[usize; 2]>,
    /// Forward: the slot of the bias of the chain its output transform applies.
    bias: Option<usize>,
    /// Forward: an epilogue other than a chain, applied to each image once its output
    /// transform has written it.
    pub epi: Option<EpiStep>,
    /// Forward and input gradient: `U` of the weights last transformed.
    u_cache: UCache,
}

/// `U` (16 planes of `O×C + SKEW` floats) and the weights it was transformed from: inference
/// runs a step with the same weights call after call, and the transform, whose stores scatter
/// over the 16 planes, took 34 µs of a 170 µs batch-1 CNN. A call whose weights have the same
/// bits reuses it; any other transforms them again (a compare that stops at the first change
/// and a copy of the weights, 2–5 µs, on a training step of milliseconds).
#[derive(Debug, Default)]
struct UCache(Mutex<Option<(Vec<f32>, Vec<f32>)>>);

impl Clone for UCache {
    /// A copy starts empty: the first run fills it.
    fn clone(&self) -> Self {
        UCache::default()
    }
}

/// Whether `a` and `b` hold the same bits (NaNs included).
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    // SAFETY: f32 and u32 have the same size and alignment, and every bit pattern is a u32.
    let bits = |x: &[f32]| unsafe { std::slice::from_raw_parts(x.as_ptr() as *const u32, x.len()) };
    bits(a) == bits(b)
}

/// Compiles the step of a Winograd convolution into `km` and adds its scratch buffers.
#[allow(clippy::too_many_arguments)]
pub fn step(
    km: &mut KernelModule,
    header: &str,
    kind: ConvKind,
    geom: WinoGeom,
    ins: [usize; 2],
    out: usize,
    (scratch_base, scratch): (usize, &mut Vec<Scratch>),
    chain: Option<(&Chain, Option<usize>)>,
) -> Result<WinogradStep, CodegenError> {
    let g = geom;
    let tiles = g.tiles();
    let (ph, pw) = g.padded_hw();
    let mut add = |per: usize, batched: bool, per_thread: bool| {
        let s = Scratch {
            per,
            batched,
            per_thread,
        };
        add_scratch(scratch, scratch_base, s)
    };
    // U, or for the weight gradient one dU per run of images.
    let copies = if kind == ConvKind::GradWeight {
        RUNS
    } else {
        1
    };
    // The forward and input-gradient passes keep U in their cache instead.
    let u = add(
        if kind == ConvKind::GradWeight {
            copies * 16 * (g.cout * g.cin + SKEW)
        } else {
            0
        },
        false,
        false,
    );
    let v = add(16 * (g.cin * (tiles + ROW_PAD) + SKEW), true, false);
    let m = add(16 * (g.cout * (tiles + ROW_PAD) + SKEW), true, false);
    // One bordered channel per image, and per thread: at batch 1 the threads transform parts of
    // the channels, each bordering its own.
    let pad = add(ph * pw, true, true);
    km.note(&format!(
        "{header}\n; winograd F(2x2,3x3): {}×{}×{} pad {} → {}×{}×{}, {tiles} tiles per image",
        g.cin, g.h, g.w, g.pad, g.cout, g.oh, g.ow
    ));
    let mut kernel = |name: &str, f: &dyn Fn(&mut Kb)| {
        km.kernel(&format!("{header}  ; winograd {name}"), |kb| f(kb))
    };
    let kernels = match kind {
        ConvKind::GradWeight => [
            kernel("inputs", &|kb| inputs(kb, &g, 0..16))?,
            kernel("dy tiles", &|kb| dy_tiles(kb, &g))?,
            kernel("weight gradient", &|kb| weight_grads(kb, &g, u, out))?,
        ],
        _ => [
            kernel("weights", &|kb| {
                weights(kb, &g, kind == ConvKind::GradInput, ins[1], u)
            })?,
            kernel("inputs", &|kb| inputs(kb, &g, 0..16))?,
            kernel("outputs", &|kb| outputs(kb, &g, chain))?,
        ],
    };
    // One image (inference): two tasks each transform it into the half of V's planes that its
    // products read (see `WinogradStep::run`).
    let halves = if kind != ConvKind::Forward {
        None
    } else {
        Some([
            kernel("inputs, planes 0–7", &|kb| inputs(kb, &g, 0..8))?,
            kernel("inputs, planes 8–15", &|kb| inputs(kb, &g, 8..16))?,
        ])
    };
    Ok(WinogradStep {
        kind,
        geom,
        ins,
        out,
        u,
        v,
        m,
        pad,
        kernels,
        halves,
        bias: chain.and_then(|(_, b)| b),
        epi: None,
        u_cache: UCache::default(),
    })
}

/// A kernel table entry that is a number (a row length), not a pointer.
fn count(n: usize) -> *mut u8 {
    n as *mut u8
}

/// Runs the input transform `k` ([`inputs`]) on channels `chans` of the `n` images at `x`:
/// their tiles into `V` (at `v`, rows of `row` ≥ `n`·tiles tiles), each channel bordered in
/// `pad` first.
///
/// # Safety
/// `k` must be the input transform of the step's geometry; `x` must hold `n` images, `v` 16
/// planes of `V` with rows of `row` tiles whose rows `chans` nothing else accesses meanwhile,
/// and `pad` one bordered channel of this call's own.
unsafe fn input_tiles(
    k: KernelFn,
    x: *const f32,
    v: *mut f32,
    pad: &mut [f32],
    n: usize,
    row: usize,
    chans: Range<usize>,
) {
    let table = [
        x as *mut u8,
        v as *mut u8,
        pad.as_mut_ptr() as *mut u8,
        count(row),
        count(chans.start),
        count(chans.end),
    ];
    // SAFETY: the kernel reads n images at table[0] and writes rows `chans` of V and the
    // padded channel, which the caller sized.
    unsafe { k(table.as_ptr(), n as i64) };
}

impl WinogradStep {
    /// # Safety
    /// The slots must point at buffers of the sizes the node's types give for `batch`, the
    /// scratch slots at the sizes [`step`] asked for, and `kernels` must be the module's.
    pub unsafe fn run(
        &self,
        t: Table,
        batch: usize,
        threads: usize,
        lib: &Lib,
        kernels: &[KernelFn],
    ) -> Result<(), String> {
        let g = &self.geom;
        let work = batch * g.cout * g.cin * 9 * g.oh * g.ow;
        let threads = if work >= PARALLEL_WORK { threads } else { 1 };
        let [k0, k1, k2] = self.kernels.map(|k| kernels[k]);
        if self.kind == ConvKind::GradWeight {
            // SAFETY: passed on.
            return unsafe { self.weight_grad(t, batch, threads, lib, [k0, k1, k2]) };
        }
        let epi = match &self.epi {
            Some(e) => Some((e, e.kernel_fn()?)),
            None => None,
        };
        let uu = g.cout * g.cin + SKEW;
        let mut cache = self.u_cache.0.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: slot ins[1] holds the O×C×3×3 weights.
        let w = unsafe { t.slice(self.ins[1], 0, g.cout * g.cin * 9) };
        if !cache.as_ref().is_some_and(|(cw, _)| same_bits(cw, w)) {
            let (cw, cu) = cache.get_or_insert_with(Default::default);
            cu.resize(16 * uu, 0.0);
            let mut table = t.0.to_vec();
            table[self.u] = cu.as_mut_ptr() as *mut u8;
            // SAFETY: the weight kernel reads slot ins[1] and writes the 16 planes of U.
            unsafe { k0(table.as_ptr(), batch as i64) };
            cw.clear();
            cw.extend_from_slice(w);
        }
        let u: &[f32] = cache.as_ref().map_or(&[], |(_, u)| u.as_slice());
        let tiles = g.tiles();
        let (ph, pw) = g.padded_hw();
        let (img_in, img_out) = (g.cin * g.h * g.w, g.cout * g.oh * g.ow);
        let per_v = 16 * (g.cin * (tiles + ROW_PAD) + SKEW);
        let per_m = 16 * (g.cout * (tiles + ROW_PAD) + SKEW);
        let group = (GROUP_TILES / tiles).max(1);
        split(batch, threads, 1, |lo, hi| {
            let mut b0 = lo;
            while b0 < hi {
                let n = group.min(hi - b0);
                let tn = n * tiles;
                // Rows of V and M padded to whole f32x4 groups: the products read V where it
                // lies; the padding columns of V hold stale values, which only reach the
                // padding columns of M, which the output transform does not read.
                let tp = tn.next_multiple_of(4);
                // SAFETY: images b0..b0+n of the input and output are this worker's; its
                // scratch starts at its first image `lo` and is reused by every group.
                let (x, v, m, y) = unsafe {
                    (
                        t.slice(self.ins[0], b0 * img_in, n * img_in),
                        t.slice_mut(self.v, lo * per_v, n * per_v),
                        t.slice_mut(self.m, lo * per_m, n * per_m),
                        t.slice_mut(self.out, b0 * img_out, n * img_out),
                    )
                };
                // With fewer images than threads (batch-1 inference) the work of the one image
                // is split instead: two tasks each transform the image into half of V's planes
                // and compute those planes' products (the planes stay in the cache of the core
                // that reads them; forward only, see `halves`), then the output transform is
                // split by channels.
                let inner = if batch < threads { threads } else { 1 };
                let (x_ptr, v_ptr) = (x.as_ptr() as usize, v.as_mut_ptr() as usize);
                let (vv, mm) = (g.cin * tp + SKEW, g.cout * tp + SKEW);
                let m_ptr = m.as_mut_ptr() as usize;
                let first_pad = lo * inner;
                // The input transform `k` into V with the pad `part`, then planes `lo..hi` of M.
                let transform_and_multiply = |k: KernelFn, part: usize, lo: usize, hi: usize| {
                    let (x, v) = (x_ptr as *const f32, v_ptr as *mut f32);
                    // SAFETY: the pads (batch × threads of them) are indexed by this worker's
                    // first image and the part, `first·inner + part` with part < 2 ≤ threads,
                    // which no other task uses; each task's transform writes, and its products
                    // read, only planes lo..hi of this group's V and M (cin·tp and cout·tp
                    // floats at ξ·vv and ξ·mm); k is one of this step's input transforms.
                    unsafe {
                        let pad = t.slice_mut(self.pad, (first_pad + part) * ph * pw, ph * pw);
                        input_tiles(k, x, v, pad, n, tp, 0..g.cin);
                        for xi in lo..hi {
                            let vx = std::slice::from_raw_parts(v.add(xi * vv), g.cin * tp);
                            let at = (m_ptr as *mut f32).add(xi * mm);
                            let m = std::slice::from_raw_parts_mut(at, g.cout * tp);
                            let u = &u[xi * uu..];
                            lib.gemm
                                .gemm(true, false, g.cout, tp, g.cin, u, vx, m, false)?;
                        }
                    }
                    Ok(())
                };
                match self.halves.filter(|_| inner > 1) {
                    Some(halves) => split(16, 2, 8, |lo, hi| {
                        transform_and_multiply(kernels[halves[lo / 8]], lo / 8, lo, hi)
                    })?,
                    None => transform_and_multiply(k1, 0, 0, 16)?,
                }
                let y_ptr = y.as_mut_ptr() as usize;
                split(g.cout, inner, 1, |o0, o1| {
                    let y = y_ptr as *mut f32;
                    let bias = self.bias.map_or(std::ptr::null_mut(), |b| t.0[b]);
                    let table = [
                        m_ptr as *mut u8,
                        y as *mut u8,
                        count(tp),
                        count(o0),
                        count(o1),
                        bias,
                    ];
                    // SAFETY: the output kernel reads M and writes channels o0..o1 of the n
                    // output images, this part's alone.
                    unsafe { k2(table.as_ptr(), n as i64) };
                    if let Some((e, run)) = epi {
                        let pos = g.oh * g.ow;
                        for i in 0..n {
                            let at = i * img_out + o0 * pos;
                            // SAFETY: channels o0..o1 of image b0 + i of the output, at offset
                            // (b0 + i)·img_out + o0·pos of the value, written just above by
                            // this part.
                            unsafe {
                                e.apply(
                                    run,
                                    t,
                                    batch,
                                    y.add(at),
                                    pos,
                                    o0..o1,
                                    0..pos,
                                    b0 * img_out + at,
                                )
                            };
                        }
                    }
                    Ok(())
                })?;
                b0 += n;
            }
            Ok(())
        })
    }

    /// The weight gradient `dw = Σ_tiles Gᵀ [(A e Aᵀ) ⊙ (Bᵀ d B)] G` (`e` the 2×2 blocks of
    /// `dy`, `d` the 4×4 tiles of `x`). The batch is cut into [`RUNS`] runs of images (fewer
    /// for a smaller batch), split over the threads; for each run a worker transforms groups of
    /// about [`GROUP_TILES`] tiles (so `V` and `E` stay in L2) and adds their 16 products
    /// `dU[ξ] (O×C) += E[ξ] (O×T) · V[ξ]ᵀ` into the run's own `dU`. The weight kernel then sums
    /// the runs' `dU` in order and computes `dw` from it. Where the runs begin depends on the
    /// batch alone, so the sums do not depend on the thread count.
    ///
    /// # Safety
    /// As [`WinogradStep::run`].
    unsafe fn weight_grad(
        &self,
        t: Table,
        batch: usize,
        threads: usize,
        lib: &Lib,
        [k_in, k_dy, k_dw]: [KernelFn; 3],
    ) -> Result<(), String> {
        let g = &self.geom;
        let tiles = g.tiles();
        let (ph, pw) = g.padded_hw();
        let (img_in, img_out) = (g.cin * g.h * g.w, g.cout * g.oh * g.ow);
        let per_v = 16 * (g.cin * (tiles + ROW_PAD) + SKEW);
        let per_e = 16 * (g.cout * (tiles + ROW_PAD) + SKEW);
        let uu = g.cout * g.cin + SKEW;
        let runs = batch.min(RUNS);
        let first = |r: usize| r * batch / runs;
        let group = (GROUP_TILES / tiles).max(1);
        split(runs, threads, 1, |lo, hi| {
            // This worker's scratch: the V, E and padded channel of its first image onwards
            // (a group never spans runs, so it holds at most the worker's own images).
            let img0 = first(lo);
            for r in lo..hi {
                // SAFETY: run r's dU is this worker's alone.
                let du = unsafe { t.slice_mut(self.u, r * 16 * uu, 16 * uu) };
                let (mut b0, end) = (first(r), first(r + 1));
                while b0 < end {
                    let n = group.min(end - b0);
                    let tn = n * tiles;
                    // SAFETY: images b0..b0+n of x and dy are only read; the scratch from
                    // image img0 on is this worker's (see above).
                    let (x, dy, v, e, pad) = unsafe {
                        (
                            t.slice(self.ins[0], b0 * img_in, n * img_in),
                            t.slice(self.ins[1], b0 * img_out, n * img_out),
                            t.slice_mut(self.v, img0 * per_v, n * per_v),
                            t.slice_mut(self.m, img0 * per_e, n * per_e),
                            t.slice_mut(self.pad, img0 * ph * pw, ph * pw),
                        )
                    };
                    // SAFETY: k_in is this step's input transform.
                    unsafe { input_tiles(k_in, x.as_ptr(), v.as_mut_ptr(), pad, n, tn, 0..g.cin) };
                    let table = [dy.as_ptr() as *mut u8, e.as_mut_ptr() as *mut u8, count(tn)];
                    // SAFETY: as for V.
                    unsafe { k_dy(table.as_ptr(), n as i64) };
                    let (vv, ee) = (g.cin * tn + SKEW, g.cout * tn + SKEW);
                    for xi in 0..16 {
                        let (e, v) = (&e[xi * ee..][..g.cout * tn], &v[xi * vv..][..g.cin * tn]);
                        let du = &mut du[xi * uu..][..g.cout * g.cin];
                        lib.gemm
                            .gemm(false, true, g.cout, g.cin, tn, e, v, du, b0 > first(r))?;
                    }
                    b0 += n;
                }
            }
            Ok(())
        })?;
        // SAFETY: the kernel sums the runs' dU (in the scratch) and writes slot `out`.
        unsafe { k_dw(t.0.as_ptr(), runs as i64) };
        Ok(())
    }
}

/// Column `j` of a small matrix of values kept as rows.
fn column<const R: usize, const N: usize>(m: &[[Value; N]], j: usize) -> [Value; R] {
    std::array::from_fn(|r| m[r][j])
}

/// `v` times an i64 constant, plus `add`.
fn mul_add(kb: &mut Kb, v: Value, k: usize, add: Value) -> Value {
    let p = kb.b.ins().imul_imm_s(v, k as i64);
    kb.b.ins().iadd(p, add)
}

/// The weight transform: `U[ξ][c][o] = (G g Gᵀ)[ξ]` for every kernel of `w` (slot `w_slot`,
/// `[O, C, 3, 3]`), into slot `u_slot`. With `rotate` (the input gradient) `w` is
/// `[cin, cout, 3, 3]` and `g` is its kernel rotated by 180°.
fn weights(kb: &mut Kb, g: &WinoGeom, rotate: bool, w_slot: usize, u_slot: usize) {
    let (wp, up) = (kb.ptr(w_slot), kb.ptr(u_slot));
    let (rows, cols) = if rotate {
        (g.cin, g.cout)
    } else {
        (g.cout, g.cin)
    };
    let plane = g.cout * g.cin + SKEW;
    kb.for_n(rows, |kb, a| {
        kb.for_n(cols, |kb, c| {
            let base = mul_add(kb, a, cols, c);
            let base = kb.b.ins().imul_imm_s(base, 9);
            let k: Vec<Value> = (0..9)
                .map(|e| {
                    let e = if rotate { 8 - e } else { e };
                    let i = kb.b.ins().iadd_imm_s(base, e as i64);
                    kb.ld(F32, wp, i)
                })
                .collect();
            let half = kb.cst(F32, 0.5);
            // G·x for a 3-vector: (x0, (x0 + x1 + x2)/2, (x0 − x1 + x2)/2, x2).
            let gx = |kb: &mut Kb, x: [Value; 3]| -> [Value; 4] {
                let s = kb.b.ins().fadd(x[0], x[2]);
                let p = kb.b.ins().fadd(s, x[1]);
                let m = kb.b.ins().fsub(s, x[1]);
                [
                    x[0],
                    kb.b.ins().fmul(p, half),
                    kb.b.ins().fmul(m, half),
                    x[2],
                ]
            };
            // Columns of G g, then G applied to each of its rows.
            let cols3: Vec<[Value; 4]> =
                (0..3).map(|j| gx(kb, [k[j], k[3 + j], k[6 + j]])).collect();
            let (o_idx, c_idx) = if rotate { (c, a) } else { (a, c) };
            let uidx = mul_add(kb, c_idx, g.cout, o_idx);
            for i in 0..4 {
                let row = gx(kb, column(&cols3, i));
                for (j, &val) in row.iter().enumerate() {
                    let idx = kb.b.ins().iadd_imm_s(uidx, ((i * 4 + j) * plane) as i64);
                    kb.st(val, up, idx);
                }
            }
        })
    });
}

/// `Bᵀ x` for a 4-vector: (x0 − x2, x1 + x2, x2 − x1, x1 − x3).
fn bt(kb: &mut Kb, x: [Value; 4]) -> [Value; 4] {
    [
        kb.b.ins().fsub(x[0], x[2]),
        kb.b.ins().fadd(x[1], x[2]),
        kb.b.ins().fsub(x[2], x[1]),
        kb.b.ins().fsub(x[1], x[3]),
    ]
}

/// `Aᵀ x` for a 4-vector: (x0 + x1 + x2, x1 − x2 − x3).
fn at(kb: &mut Kb, x: [Value; 4]) -> [Value; 2] {
    let s = kb.b.ins().fadd(x[0], x[1]);
    let d = kb.b.ins().fsub(x[1], x[2]);
    [kb.b.ins().fadd(s, x[2]), kb.b.ins().fsub(d, x[3])]
}

/// The input transform of channels `c0..c1` of `batch` images (table: images, `V`,
/// padded-channel buffer, row length `T` of `V`, `c0`, `c1`): `V[ξ][c][t] = (Bᵀ d B)[ξ]`,
/// `t = image·tiles + ty·TW + tx`.
fn inputs(kb: &mut Kb, g: &WinoGeom, planes: Range<usize>) {
    let (src, vb, pb, t_all) = (kb.ptr(0), kb.ptr(1), kb.ptr(2), kb.ptr(3));
    let (c_lo, c_hi) = (kb.ptr(4), kb.ptr(5));
    let tiles = g.tiles();
    let (th, tw) = g.tiles_hw();
    let (ph, pw) = g.padded_hw();
    let (h, w, pad) = (g.h, g.w, g.pad);
    let plane = kb.b.ins().imul_imm_s(t_all, g.cin as i64);
    let plane = kb.b.ins().iadd_imm_s(plane, SKEW as i64);
    let zero = kb.int(0);
    let batch = kb.batch;
    kb.for_range(zero, batch, |kb, img| {
        let first_tile = kb.b.ins().imul_imm_s(img, tiles as i64);
        kb.for_range(c_lo, c_hi, |kb, c| {
            // Zero the padded channel (ph, pw even: a whole number of f32x4), copy the image in.
            let z = kb.cst(F32X4, 0.0);
            let lo = kb.int(0);
            let end = kb.int((ph * pw) as i64);
            kb.for_step(lo, end, 4, |kb, i| kb.st(z, pb, i));
            let ch = mul_add(kb, img, g.cin, c);
            let ch = kb.b.ins().imul_imm_s(ch, (h * w) as i64);
            kb.for_n(h, |kb, r| {
                let s0 = mul_add(kb, r, w, ch);
                let d0 = kb.b.ins().iadd_imm_s(r, pad as i64);
                let d0 = kb.b.ins().imul_imm_s(d0, pw as i64);
                let d0 = kb.b.ins().iadd_imm_s(d0, pad as i64);
                kb.vec_loop_overlapping(w, |kb, j, lane| {
                    let si = kb.b.ins().iadd(s0, j);
                    let v = kb.ld(lane, src, si);
                    let di = kb.b.ins().iadd(d0, j);
                    kb.st(v, pb, di);
                });
            });
            // V row of this channel and image.
            let vc = kb.b.ins().imul(c, t_all);
            let vc = kb.b.ins().iadd(vc, first_tile);
            kb.for_n(th, |kb, ty| {
                let vrow = mul_add(kb, ty, tw, vc);
                let prow = kb.b.ins().imul_imm_s(ty, (2 * pw) as i64);
                kb.vec_loop_overlapping(tw, |kb, tx, lane| {
                    let tx2 = kb.b.ins().iadd(tx, tx);
                    let base = kb.b.ins().iadd(prow, tx2);
                    // d B for each of the 4 rows of the tile(s).
                    let rows: Vec<[Value; 4]> = (0..4)
                        .map(|r| {
                            let px = |kb: &mut Kb, k: usize| {
                                let i = kb.b.ins().iadd_imm_s(base, (r * pw + k) as i64);
                                kb.ld_rw(lane, pb, i)
                            };
                            let d = if lane == F32X4 {
                                // Columns 2t+j of tiles t..t+4: even/odd lanes of two rows.
                                let (l0, l1, l2, l3) = (px(kb, 0), px(kb, 4), px(kb, 2), px(kb, 6));
                                [
                                    kb.shuffle(l0, l1, [0, 2, 4, 6]),
                                    kb.shuffle(l0, l1, [1, 3, 5, 7]),
                                    kb.shuffle(l2, l3, [0, 2, 4, 6]),
                                    kb.shuffle(l2, l3, [1, 3, 5, 7]),
                                ]
                            } else {
                                [px(kb, 0), px(kb, 1), px(kb, 2), px(kb, 3)]
                            };
                            bt(kb, d)
                        })
                        .collect();
                    let vt = kb.b.ins().iadd(vrow, tx);
                    for j in 0..4 {
                        let col = bt(kb, column(&rows, j));
                        for (i, &val) in col.iter().enumerate() {
                            if !planes.contains(&(i * 4 + j)) {
                                continue;
                            }
                            let off = kb.b.ins().imul_imm_s(plane, (i * 4 + j) as i64);
                            let idx = kb.b.ins().iadd(off, vt);
                            kb.st(val, vb, idx);
                        }
                    }
                });
            });
        });
    });
}

/// The output transform of channels `o0..o1` of `batch` images (table: `M`, output images, row
/// length `T` of `M`, `o0`, `o1`, the chain's bias): `y = Aᵀ m A` per tile, the last tile row /
/// column clipped to one output row / column when `oh` / `ow` is odd; then `chain` (bias from
/// its slot, the activations) on each value before it is stored, as the separate epilogue would
/// compute it.
fn outputs(kb: &mut Kb, g: &WinoGeom, chain: Option<(&Chain, Option<usize>)>) {
    let (mb, yb, t_all) = (kb.ptr(0), kb.ptr(1), kb.ptr(2));
    let chans = (kb.ptr(3), kb.ptr(4));
    let epi = chain.map(|(c, bias)| (c.acts.as_slice(), bias.map(|_| kb.ptr(5))));
    each_output_tile(kb, g, (mb, yb, t_all), chans, epi, output_tile);
}

/// One tile function of [`each_output_tile`]: the tile(s) at `tx` of a tile row (four with
/// f32x4 lanes), covering `rows × cols` outputs.
type TileFn = fn(&mut Kb, &WinoGeom, &Row, Value, Value, Value, ClifType, usize, usize);

/// Walks the output-shaped side of `batch` images, tile by tile: for every image, output
/// channel of `o_lo..o_hi` and 2×2 output tile (clipped to 1 row / column at an odd edge), `tile` with the
/// channel's `Row` (the `M`-like buffer at `mb` with rows of `t_all` tiles, the images at
/// `yb`). The output transform reads `M` and writes `y`; the `dy` transform reads `dy` and
/// writes `E`.
fn each_output_tile(
    kb: &mut Kb,
    g: &WinoGeom,
    (mb, yb, t_all): (Value, Value, Value),
    (o_lo, o_hi): (Value, Value),
    epi: Option<(&[UnaryOp], Option<Value>)>,
    tile: TileFn,
) {
    let tiles = g.tiles();
    let (th, tw) = g.tiles_hw();
    let plane = kb.b.ins().imul_imm_s(t_all, g.cout as i64);
    let plane = kb.b.ins().iadd_imm_s(plane, SKEW as i64);
    let zero = kb.int(0);
    let batch = kb.batch;
    let g = *g;
    kb.for_range(zero, batch, |kb, img| {
        let first_tile = kb.b.ins().imul_imm_s(img, tiles as i64);
        kb.for_range(o_lo, o_hi, |kb, o| {
            let mo = kb.b.ins().imul(o, t_all);
            let mo = kb.b.ins().iadd(mo, first_tile);
            let yo = mul_add(kb, img, g.cout, o);
            let yo = kb.b.ins().imul_imm_s(yo, (g.oh * g.ow) as i64);
            let epi = epi.map(|(acts, bias)| Epi {
                acts,
                bias: bias.map(|bp| kb.ld(F32, bp, o)),
            });
            let r = Row {
                mb,
                yb,
                plane,
                mo,
                yo,
                epi,
            };
            let row = |kb: &mut Kb, ty: Value, rows: usize| {
                let mrow = mul_add(kb, ty, tw, r.mo);
                let yrow = kb.b.ins().imul_imm_s(ty, (2 * g.ow) as i64);
                let yrow = kb.b.ins().iadd(yrow, r.yo);
                kb.vec_loop_overlapping(g.ow / 2, |kb, tx, lane| {
                    tile(kb, &g, &r, mrow, yrow, tx, lane, rows, 2)
                });
                if g.ow % 2 == 1 {
                    let tx = kb.int((tw - 1) as i64);
                    tile(kb, &g, &r, mrow, yrow, tx, F32, rows, 1);
                }
            };
            kb.for_n(g.oh / 2, |kb, ty| row(kb, ty, 2));
            if g.oh % 2 == 1 {
                let ty = kb.int((th - 1) as i64);
                row(kb, ty, 1);
            }
        });
    });
}

/// Where one output channel of one image lives: `M` and `y` bases, the `ξ` plane stride of
/// `M`, and the element offsets of the channel's first tile in `M` and first output in `y`.
struct Row<'a> {
    mb: Value,
    yb: Value,
    plane: Value,
    mo: Value,
    yo: Value,
    /// The output transform's epilogue, with the channel's bias.
    epi: Option<Epi<'a>>,
}

/// A forward convolution's chain applied in its output transform: the channel's bias (an f32)
/// and the activations.
#[derive(Clone, Copy)]
struct Epi<'a> {
    acts: &'a [UnaryOp],
    bias: Option<Value>,
}

/// The tile(s) at `tx` of a tile row (four with f32x4 lanes), `rows × cols` outputs each.
#[allow(clippy::too_many_arguments)]
fn output_tile(
    kb: &mut Kb,
    g: &WinoGeom,
    r: &Row,
    mrow: Value,
    yrow: Value,
    tx: Value,
    lane: ClifType,
    rows: usize,
    cols: usize,
) {
    let mt = kb.b.ins().iadd(mrow, tx);
    let m: Vec<Value> = (0..16)
        .map(|xi| {
            let off = kb.b.ins().imul_imm_s(r.plane, xi as i64);
            let idx = kb.b.ins().iadd(off, mt);
            kb.ld(lane, r.mb, idx)
        })
        .collect();
    // m A for each row, then Aᵀ of each of the two columns.
    let ma: Vec<[Value; 2]> = (0..4)
        .map(|i| at(kb, [m[4 * i], m[4 * i + 1], m[4 * i + 2], m[4 * i + 3]]))
        .collect();
    let y: Vec<[Value; 2]> = (0..2)
        .map(|j| at(kb, [ma[0][j], ma[1][j], ma[2][j], ma[3][j]]))
        .collect();
    let tx2 = kb.b.ins().iadd(tx, tx);
    for i in 0..rows {
        let yi = kb.b.ins().iadd_imm_s(yrow, (i * g.ow) as i64);
        let yi = kb.b.ins().iadd(yi, tx2);
        // y[j][i]: column j, row i of the tile(s).
        let [mut y0, mut y1]: [Value; 2] = column(&y, i);
        if let Some(e) = r.epi {
            y0 = chain(kb, e.acts, e.bias, y0, lane);
            if cols == 2 || lane == F32X4 {
                y1 = chain(kb, e.acts, e.bias, y1, lane);
            }
        }
        if lane == F32X4 {
            let lo = kb.shuffle(y0, y1, [0, 4, 1, 5]);
            let hi = kb.shuffle(y0, y1, [2, 6, 3, 7]);
            kb.st(lo, r.yb, yi);
            let yi4 = kb.b.ins().iadd_imm_s(yi, 4);
            kb.st(hi, r.yb, yi4);
        } else {
            kb.st(y0, r.yb, yi);
            if cols == 2 {
                let yi1 = kb.b.ins().iadd_imm_s(yi, 1);
                kb.st(y1, r.yb, yi1);
            }
        }
    }
}

/// The `dy` transform of `batch` images for the weight gradient (table: `dy`, `E`, row length
/// `T` of `E`): `E[ξ][o][t] = (A e Aᵀ)[ξ]` for the 2×2 block `e` of `dy` under tile `t`, zero
/// beyond an odd edge.
fn dy_tiles(kb: &mut Kb, g: &WinoGeom) {
    let (yb, eb, t_all) = (kb.ptr(0), kb.ptr(1), kb.ptr(2));
    let chans = (kb.int(0), kb.int(g.cout as i64));
    each_output_tile(kb, g, (eb, yb, t_all), chans, None, dy_tile);
}

/// The `dy` tile(s) at `tx` of a tile row (four with f32x4 lanes) from `rows × cols` values of
/// `dy` at `r.yb` (the rest zero), into `E` at `r.mb`.
#[allow(clippy::too_many_arguments)]
fn dy_tile(
    kb: &mut Kb,
    g: &WinoGeom,
    r: &Row,
    mrow: Value,
    yrow: Value,
    tx: Value,
    lane: ClifType,
    rows: usize,
    cols: usize,
) {
    let tx2 = kb.b.ins().iadd(tx, tx);
    let z = kb.cst(lane, 0.0);
    // e[i] = (e[i][0], e[i][1]).
    let e: Vec<[Value; 2]> = (0..2)
        .map(|i| {
            if i >= rows {
                return [z, z];
            }
            let yi = kb.b.ins().iadd_imm_s(yrow, (i * g.ow) as i64);
            let yi = kb.b.ins().iadd(yi, tx2);
            if lane == F32X4 {
                let l0 = kb.ld(F32X4, r.yb, yi);
                let yi4 = kb.b.ins().iadd_imm_s(yi, 4);
                let l1 = kb.ld(F32X4, r.yb, yi4);
                [
                    kb.shuffle(l0, l1, [0, 2, 4, 6]),
                    kb.shuffle(l0, l1, [1, 3, 5, 7]),
                ]
            } else {
                let e0 = kb.ld(F32, r.yb, yi);
                let e1 = if cols == 2 {
                    let yi1 = kb.b.ins().iadd_imm_s(yi, 1);
                    kb.ld(F32, r.yb, yi1)
                } else {
                    z
                };
                [e0, e1]
            }
        })
        .collect();
    // A·x for a 2-vector: (x0, x0 + x1, x0 − x1, −x1); rows, then columns.
    let a = |kb: &mut Kb, x: [Value; 2]| -> [Value; 4] {
        [
            x[0],
            kb.b.ins().fadd(x[0], x[1]),
            kb.b.ins().fsub(x[0], x[1]),
            kb.b.ins().fneg(x[1]),
        ]
    };
    let er: Vec<[Value; 4]> = e.iter().map(|&x| a(kb, x)).collect();
    let mt = kb.b.ins().iadd(mrow, tx);
    for q in 0..4 {
        let col = a(kb, column(&er, q));
        for (p, &val) in col.iter().enumerate() {
            let off = kb.b.ins().imul_imm_s(r.plane, (p * 4 + q) as i64);
            let idx = kb.b.ins().iadd(off, mt);
            kb.st(val, r.mb, idx);
        }
    }
}

/// The weight gradient from its transform: `dw[o][c] = Gᵀ dU[·][o][c] G` (3×3), `dU` in slot
/// `du_slot` (`ξ` planes of `O×C`, [`SKEW`] apart), `dw` (`[O, C, 3, 3]`) in `dw_slot`.
fn weight_grads(kb: &mut Kb, g: &WinoGeom, du_slot: usize, dw_slot: usize) {
    let (dp, wp) = (kb.ptr(du_slot), kb.ptr(dw_slot));
    let plane = g.cout * g.cin + SKEW;
    // dU of the first run += that of each other run, in order (the kernel's batch argument
    // is the number of runs).
    let (one, runs) = (kb.int(1), kb.batch);
    kb.for_range(one, runs, |kb, r| {
        let at = kb.b.ins().imul_imm_s(r, (16 * plane) as i64);
        let (lo, hi) = (kb.int(0), kb.int((16 * plane) as i64));
        kb.vec_loop(lo, hi, |kb, i, lane| {
            let j = kb.b.ins().iadd(at, i);
            let (sum, part) = (kb.ld_rw(lane, dp, i), kb.ld_rw(lane, dp, j));
            let sum = kb.b.ins().fadd(sum, part);
            kb.st(sum, dp, i);
        });
    });
    kb.for_n(g.cout * g.cin, |kb, oc| {
        let x: Vec<Value> = (0..16)
            .map(|xi| {
                let i = kb.b.ins().iadd_imm_s(oc, (xi * plane) as i64);
                kb.ld(F32, dp, i)
            })
            .collect();
        let half = kb.cst(F32, 0.5);
        // Gᵀ·x for a 4-vector: (x0 + (x1 + x2)/2, (x1 − x2)/2, (x1 + x2)/2 + x3).
        let gt = |kb: &mut Kb, x: [Value; 4]| -> [Value; 3] {
            let s = kb.b.ins().fadd(x[1], x[2]);
            let s = kb.b.ins().fmul(s, half);
            let d = kb.b.ins().fsub(x[1], x[2]);
            [
                kb.b.ins().fadd(x[0], s),
                kb.b.ins().fmul(d, half),
                kb.b.ins().fadd(s, x[3]),
            ]
        };
        let rows: Vec<[Value; 3]> = (0..4)
            .map(|p| gt(kb, [x[4 * p], x[4 * p + 1], x[4 * p + 2], x[4 * p + 3]]))
            .collect();
        let base = kb.b.ins().imul_imm_s(oc, 9);
        for v in 0..3 {
            let col = gt(kb, column(&rows, v));
            for (u, &val) in col.iter().enumerate() {
                let i = kb.b.ins().iadd_imm_s(base, (3 * u + v) as i64);
                kb.st(val, wp, i);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Window;

    fn conv(c: usize, hw: usize, kernel: usize, stride: usize, pad: usize) -> ConvGeom {
        ConvGeom {
            c,
            h: hw,
            w: hw,
            win: Window {
                kernel,
                stride,
                pad,
            },
        }
    }

    #[test]
    fn plan_picks_3x3_stride_1_with_enough_channels() {
        let g = conv(32, 14, 3, 1, 1);
        let fwd = plan(ConvKind::Forward, &g, 64).unwrap();
        assert_eq!(
            (fwd.cin, fwd.cout, fwd.oh, fwd.ow, fwd.pad),
            (32, 64, 14, 14, 1)
        );
        assert_eq!(plan(ConvKind::GradWeight, &g, 64), Some(fwd));
        // dx = dy (64 channels, padded by 2 − p) correlated with the rotated kernel.
        let gi = plan(ConvKind::GradInput, &conv(32, 9, 3, 1, 0), 64).unwrap();
        assert_eq!((gi.cin, gi.h, gi.pad, gi.cout, gi.oh), (64, 7, 2, 32, 9));
        assert_eq!(fwd.tiles(), 49);
        assert_eq!(gi.padded_hw(), (12, 12));
        for (g, o) in [
            (conv(7, 14, 3, 1, 1), 64),
            (conv(32, 14, 5, 1, 2), 64),
            (conv(32, 14, 3, 2, 1), 64),
            (conv(32, 14, 3, 1, 3), 64),
        ] {
            assert_eq!(plan(ConvKind::Forward, &g, o), None, "{g:?}");
        }
        // The input gradient reads dy: few output channels keep im2col.
        assert_eq!(plan(ConvKind::GradInput, &conv(32, 14, 3, 1, 1), 4), None);
    }
}
