//! Running a Winograd convolution: the kernels a step is built of ([`step`]), and their
//! calls over the images and threads at run time ([`WinogradStep`]).

use super::{
    dy_tiles, inputs, outputs, weight_grads, weights, WinoGeom, PARALLEL_WORK, RUNS, SKEW,
};
use crate::codegen::epilogue::EpiStep;
use crate::codegen::glue::{split, ConvKind, Lib, Table};
use crate::codegen::kernel::{Kb, KernelFn, KernelModule};
use crate::codegen::lower::{add_scratch, Scratch};
use crate::codegen::CodegenError;
use crate::ir::Chain;
use std::ops::Range;
use std::sync::Mutex;

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
    /// Forward: whether the output transform also max-pools 2×2 windows of stride 2
    /// ([`crate::ir::Epilogue::Pool`], F(4×4) only: [`super::fuses_pool`]), writing the pooled
    /// output.
    pool: bool,
    /// Forward: an epilogue other than a chain, applied to each image once its output
    /// transform has written it.
    pub epi: Option<EpiStep>,
    /// Forward and input gradient: `U` of the weights last transformed.
    u_cache: UCache,
}

/// `U` (its planes of `O×C + SKEW` floats) and the weights it was transformed from: inference
/// runs a step with the same weights call after call, and the transform, whose stores scatter
/// over the planes, took 34 µs of a 170 µs batch-1 CNN. A call whose weights have the same
/// bits reuses it; any other transforms them again (a compare that stops at the first change
/// and a copy of the weights, 2–5 µs, on a training step of milliseconds). A call on the
/// weights the executor holds ([`crate::exec::Executor::hold_params`], which forgets `held`)
/// reuses a `U` made from them without comparing (1–2 µs of a 70 µs batch-1 CNN).
#[derive(Debug, Default)]
struct UCache(Mutex<Option<Transformed>>);

#[derive(Debug, Default)]
struct Transformed {
    weights: Vec<f32>,
    u: Vec<f32>,
    /// Whether `weights` are the held ones.
    held: bool,
}

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

/// The geometry of a gradient step's convolution for [`crate::codegen::sparse_conv`] and the density of
/// `dy` up to which it runs there; `None` for the forward pass or a geometry it cannot take.
fn sparse_geom(kind: ConvKind, g: &WinoGeom) -> Option<(crate::codegen::sparse_conv::Geom, f32)> {
    use crate::codegen::sparse_conv::{self as sc, Geom};
    let (geom, limit) = match kind {
        ConvKind::Forward => return None,
        // Winograd's geometry is the correlation it computes: of dy, into dx.
        ConvKind::GradInput => (
            Geom {
                c: g.cout,
                h: g.oh,
                w: g.ow,
                o: g.cin,
                k: 3,
                pad: 2 - g.pad,
            },
            sc::MAX_DENSITY_INPUT,
        ),
        ConvKind::GradWeight => (
            Geom {
                c: g.cin,
                h: g.h,
                w: g.w,
                o: g.cout,
                k: 3,
                pad: g.pad,
            },
            sc::MAX_DENSITY_WEIGHT,
        ),
    };
    sc::fits(&geom).then_some((geom, limit))
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
    pool: bool,
) -> Result<WinogradStep, CodegenError> {
    let g = geom;
    if pool && !(kind == ConvKind::Forward && g.m == 4) {
        return Err(CodegenError::Graph(format!(
            "winograd F({m}x{m}): no pooling in the output transform of a {kind:?} step",
            m = g.m
        )));
    }
    let (tiles, planes) = (g.tiles(), g.planes());
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
            copies * planes * (g.cout * g.cin + SKEW)
        } else {
            0
        },
        false,
        false,
    );
    let v = add(g.plane_floats(g.cin, tiles), true, false);
    let m = add(g.plane_floats(g.cout, tiles), true, false);
    // One bordered channel per image, and per thread: at batch 1 the threads transform parts of
    // the channels, each bordering its own.
    let pad = add(g.pad_len(), true, true);
    km.note(&format!(
        "{header}\n; winograd F({m}x{m},3x3): {}×{}×{} pad {} → {}×{}×{}, {tiles} tiles per image{}",
        g.cin,
        g.h,
        g.w,
        g.pad,
        g.cout,
        g.oh,
        g.ow,
        if pool { ", max pooling 2×2 in the output transform" } else { "" },
        m = g.m
    ));
    if let Some((_, limit)) = sparse_geom(kind, &g) {
        km.note(&format!(
            "; or, when at most {}% of dy is non-zero, only its non-zero entries (sparse \
             convolution gradient)",
            (limit * 100.0).round()
        ));
    }
    let mut kernel = |name: &str, f: &dyn Fn(&mut Kb)| {
        km.kernel(&format!("{header}  ; winograd {name}"), |kb| f(kb))
    };
    let kernels = match kind {
        ConvKind::GradWeight => [
            kernel("inputs", &|kb| inputs(kb, &g, 0..planes))?,
            kernel("dy tiles", &|kb| dy_tiles(kb, &g))?,
            kernel("weight gradient", &|kb| weight_grads(kb, &g, u, out))?,
        ],
        _ => [
            kernel("weights", &|kb| {
                weights(kb, &g, kind == ConvKind::GradInput, ins[1], u)
            })?,
            kernel("inputs", &|kb| inputs(kb, &g, 0..planes))?,
            kernel("outputs", &|kb| outputs(kb, &g, chain, pool))?,
        ],
    };
    // One image (inference): two tasks each transform it into the half of V's planes that its
    // products read (see `WinogradStep::run`).
    let halves = if kind != ConvKind::Forward {
        None
    } else {
        let half = planes / 2;
        Some([
            kernel(&format!("inputs, planes 0–{}", half - 1), &|kb| {
                inputs(kb, &g, 0..half)
            })?,
            kernel(&format!("inputs, planes {half}–{}", planes - 1), &|kb| {
                inputs(kb, &g, half..planes)
            })?,
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
        pool,
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
/// `k` must be the input transform of the step's geometry; `x` must hold `n` images, `v` the
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
    /// The input or weight gradient on [`crate::codegen::sparse_conv`] when `dy` is sparse enough;
    /// whether it ran.
    ///
    /// # Safety
    /// As [`WinogradStep::run`].
    unsafe fn sparse_gradient(&self, t: Table, batch: usize, threads: usize, lib: &Lib) -> bool {
        use crate::codegen::sparse_conv as sc;
        let Some((sg, limit)) = sparse_geom(self.kind, &self.geom) else {
            return false;
        };
        let dy_slot = match self.kind {
            ConvKind::GradInput => self.ins[0],
            _ => self.ins[1],
        };
        let (oh, ow) = sg.out_hw();
        let (img_x, img_dy) = (sg.c * sg.h * sg.w, sg.o * oh * ow);
        // SAFETY: the slots hold the node's operands and output for `batch`.
        let dy = unsafe { t.slice(dy_slot, 0, batch * img_dy) };
        if !sc::sparse_enough(dy, limit) {
            return false;
        }
        match self.kind {
            ConvKind::GradInput => {
                // SAFETY: as above; the weights are o × c × 3 × 3.
                let (w, dx) = unsafe {
                    (
                        t.slice(self.ins[1], 0, sg.o * sg.c * 9),
                        t.slice_mut(self.out, 0, batch * img_x),
                    )
                };
                sc::grad_input(&lib.sparse, threads, batch, &sg, (dy, w), dx);
            }
            _ => {
                // SAFETY: as above.
                let (x, dw) = unsafe {
                    (
                        t.slice(self.ins[0], 0, batch * img_x),
                        t.slice_mut(self.out, 0, sg.o * sg.c * 9),
                    )
                };
                sc::grad_weight(&lib.sparse, threads, batch, &sg, (x, dy), dw);
            }
        }
        true
    }

    /// Forgets that `U` was made from held weights: the executor holds others.
    pub fn forget_held(&self) {
        let mut cache = self.u_cache.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = cache.as_mut() {
            t.held = false;
        }
    }

    /// `held`: the weights are the ones the executor holds (see [`UCache`]). `sparse`: the
    /// gradients may skip the zeros of `dy` ([`crate::codegen::sparse_conv`]).
    ///
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
        (held, sparse): (bool, bool),
    ) -> Result<(), String> {
        let g = &self.geom;
        // SAFETY: as for this function.
        if sparse && unsafe { self.sparse_gradient(t, batch, threads, lib) } {
            return Ok(());
        }
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
        let fresh = cache
            .as_ref()
            .is_some_and(|c| (held && c.held) || same_bits(&c.weights, w));
        let c = cache.get_or_insert_with(Default::default);
        if !fresh {
            c.u.resize(g.planes() * uu, 0.0);
            let mut table = t.0.to_vec();
            table[self.u] = c.u.as_mut_ptr() as *mut u8;
            // SAFETY: the weight kernel reads slot ins[1] and writes the planes of U.
            unsafe { k0(table.as_ptr(), batch as i64) };
            c.weights.clear();
            c.weights.extend_from_slice(w);
        }
        c.held = held;
        let u: &[f32] = &c.u;
        let (tiles, planes) = (g.tiles(), g.planes());
        let pad_len = g.pad_len();
        let (img_in, img_out) = (g.cin * g.h * g.w, g.cout * g.out_plane(self.pool));
        let (per_v, per_m) = (g.plane_floats(g.cin, tiles), g.plane_floats(g.cout, tiles));
        let group = (g.group_tiles() / tiles).max(1);
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
                        let pad = t.slice_mut(self.pad, (first_pad + part) * pad_len, pad_len);
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
                    Some(halves) => split(planes, 2, planes / 2, |lo, hi| {
                        let part = lo / (planes / 2);
                        transform_and_multiply(kernels[halves[part]], part, lo, hi)
                    })?,
                    None => transform_and_multiply(k1, 0, 0, planes)?,
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

    /// The weight gradient `dw = Σ_tiles Gᵀ [(A e Aᵀ) ⊙ (Bᵀ d B)] G` (`e` the m×m blocks of
    /// `dy`, `d` the (m + 2)² tiles of `x`). The batch is cut into [`RUNS`] runs of images
    /// (fewer for a smaller batch), split over the threads; for each run a worker transforms
    /// groups of about [`super::GROUP_TILES`] tiles (so `V` and `E` stay in L2) and adds their
    /// products, one per plane, `dU[ξ] (O×C) += E[ξ] (O×T) · V[ξ]ᵀ`, into the run's own `dU`. The weight kernel then sums
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
        let (tiles, planes) = (g.tiles(), g.planes());
        let (img_in, img_out) = (g.cin * g.h * g.w, g.cout * g.oh * g.ow);
        let (per_v, per_e) = (g.plane_floats(g.cin, tiles), g.plane_floats(g.cout, tiles));
        let uu = g.cout * g.cin + SKEW;
        let runs = batch.min(RUNS);
        let first = |r: usize| r * batch / runs;
        let group = (g.group_tiles() / tiles).max(1);
        split(runs, threads, 1, |lo, hi| {
            // This worker's scratch: the V, E and padded channel of its first image onwards
            // (a group never spans runs, so it holds at most the worker's own images).
            let img0 = first(lo);
            for r in lo..hi {
                // SAFETY: run r's dU is this worker's alone.
                let du = unsafe { t.slice_mut(self.u, r * planes * uu, planes * uu) };
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
                            t.slice_mut(self.pad, img0 * g.pad_len(), g.pad_len()),
                        )
                    };
                    // SAFETY: k_in is this step's input transform.
                    unsafe { input_tiles(k_in, x.as_ptr(), v.as_mut_ptr(), pad, n, tn, 0..g.cin) };
                    let table = [dy.as_ptr() as *mut u8, e.as_mut_ptr() as *mut u8, count(tn)];
                    // SAFETY: as for V.
                    unsafe { k_dy(table.as_ptr(), n as i64) };
                    let (vv, ee) = (g.cin * tn + SKEW, g.cout * tn + SKEW);
                    for xi in 0..planes {
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
