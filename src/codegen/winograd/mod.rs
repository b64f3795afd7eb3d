//! Winograd F(m×m, 3×3), m = 2 or 4, for 3×3 stride-1 convolutions: `Conv2d`;
//! `Conv2dGradInput`, which is the same correlation of `dy` (padded by `2 − p`) with the kernel
//! rotated by 180° and its channels swapped; and `Conv2dGradWeight`. Each m×m block of outputs
//! costs (m + 2)² multiplications per channel pair instead of 9m²: 2.25× fewer with F(2×2),
//! 4× with F(4×4) (on 14×14, whose tiles do not fit exactly, 1.36× fewer than F(2×2)), at the
//! price of linear transforms ([`transforms`]). [`tile_side`] picks m per geometry.
//!
//! - weights, once per run, and not again while they keep their bits (inference):
//!   `U[ξ][c][o] = (G g Gᵀ)[ξ]` for every 3×3 kernel `g` ((m + 2)² planes of C×O, stored
//!   transposed so that the products read it in place);
//! - inputs: `V[ξ][c][t] = (Bᵀ d B)[ξ]` for every overlapping (m + 2)² tile `d` (stride m) of
//!   every channel, tiles `t` of several images side by side so the products are wide;
//! - one GEMM per plane on the JIT'd GEMM, `M[ξ] (O×T) = U[ξ]ᵀ (O×C) · V[ξ] (C×T)`, reading
//!   `U` and `V` where they lie (the rows of `V` padded to whole f32x4 groups);
//! - outputs: `y = Aᵀ m A` per tile (m×m, clipped at the last row and column), and the forward
//!   pass's fused chain (bias, activations) on each value before it is stored, so that the
//!   output is written once.
//!
//! The weight gradient is the adjoint: `dy` blocks `e` become `E = A e Aᵀ`, the GEMMs are
//! `dU[ξ] += E[ξ] · V[ξ]ᵀ` over the tiles of each group of images, and `dw = Gᵀ dU G`.
//!
//! The transforms are Cranelift kernels of the graph's module with every dimension but the
//! image count known at compile time; the input, output and `dy` transforms work on f32x4
//! across four horizontally adjacent tiles. F(2×2): `shufps` splits a row into the tiles'
//! columns, `unpck` joins them back; a row that is not a whole number of fours ends with one
//! more step over its last four tiles (transforms write each tile twice harmlessly), scalar
//! only when it has fewer than four. F(4×4): 4×4 transposes, and the row's clipped last tile
//! stored (or loaded) as the four values ending the row. The input transform first copies
//! each channel into a zero-bordered buffer, so its loads need no bounds checks. Images are
//! split over the worker threads, and a worker runs groups of about [`GROUP_TILES`] tiles
//! through the stages (transforms, products, output transform or the products' sum), so its
//! `V` and `M` stay in L2. With fewer images than threads (batch-1 inference) the forward pass
//! splits each image instead: two tasks each transform it into half of the planes of `V` and
//! compute those planes' products (so a plane is read by the core that wrote it), then the
//! output transform is split by channels (the kernel takes a channel range); the input
//! gradient splits only its output transform. Each output element is a fixed sum whatever the
//! split (the weight gradient sums fixed runs of images, then the runs in order), so results
//! do not depend on the thread count.
//!
//! [`plan`] is the one place that decides between this and im2col (see [`super::conv`]).

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    InstBuilder, StackSlot, StackSlotData, StackSlotKind, Type as ClifType, Value,
};

mod transforms;

use super::elementwise::chain;
use super::epilogue::EpiStep;
use super::glue::{split, ConvKind, Lib, Table};
use super::im2col::ConvGeom;
use super::kernel::{Kb, KernelFn, KernelModule, F32, F32X4, I64};
use super::lower::{add_scratch, Scratch};
use super::pool;
use super::CodegenError;
use crate::ir::{Chain, UnaryOp};
use std::ops::Range;
use std::sync::Mutex;
use transforms as tf;

/// Input channels (the GEMMs' depth) below which im2col is kept: the transforms cost per
/// channel what a few channels' multiplications do, and GEMMs of depth < 8 run far below the
/// kernel's peak. A judgement, not a measured crossover: the examples' convolutions have 1
/// (im2col) or 32 (Winograd, measured faster: BENCHMARKS.md) input channels.
pub const MIN_CHANNELS: usize = 8;
/// Tiles of F(2×2) per group of images a worker transforms and multiplies at once (F(4×4):
/// as many floats, [`WinoGeom::group_tiles`]): `V` and `M` of a group (16·(C + O)·tiles
/// floats, 600 KiB for two 14×14 images with C = 32, O = 64) stay in L2 next to the GEMM's
/// packed panels. On the MNIST CNN (`nnc bench examples/mnist_cnn.nn --steps 60 --threads 1`,
/// 2-core shared VM) 100–128 tiles ran ~5–15% faster than 256–1000; with F(4×4) (2 threads,
/// Xeon) groups of 32–80 tiles ran alike, 128 5–10% slower, 200 15% slower.
const GROUP_TILES: usize = 128;
/// Floats added to the stride between the `ξ` planes of `U`, `V` and `M`: without it the
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
/// Floats after a bordered channel: F(4×4, 3×3)'s input transform loads the six columns of
/// four tiles as five f32x4, whose last two lanes lie past the last tile's window.
const PAD_SLACK: usize = 4;
/// How many times fewer multiplications F(4×4, 3×3) must need to be chosen: its transforms
/// cost more per tile (6×6 instead of 4×4) and round more.
const F4_GAIN: f64 = 1.2;

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
    /// Outputs per tile side: F(m×m, 3×3), 2 or 4 ([`tile_side`]).
    pub m: usize,
}

impl WinoGeom {
    /// Input values per tile side (`m + 2`: a tile's window).
    fn a(&self) -> usize {
        self.m + 2
    }
    /// The `ξ` planes of `U`, `V` and `M`: one per element of a transformed tile.
    fn planes(&self) -> usize {
        self.a() * self.a()
    }
    /// Tile rows and columns: one tile per m×m block of outputs.
    fn tiles_hw(&self) -> (usize, usize) {
        (self.oh.div_ceil(self.m), self.ow.div_ceil(self.m))
    }
    /// Tiles per image.
    fn tiles(&self) -> usize {
        let (th, tw) = self.tiles_hw();
        th * tw
    }
    /// The zero-bordered copy of one channel: every tile's window lies inside it.
    fn padded_hw(&self) -> (usize, usize) {
        let (th, tw) = self.tiles_hw();
        (self.m * th + 2, self.m * tw + 2)
    }
    /// Floats of one bordered channel's buffer: [`WinoGeom::padded_hw`] and [`PAD_SLACK`].
    fn pad_len(&self) -> usize {
        let (ph, pw) = self.padded_hw();
        ph * pw + PAD_SLACK
    }
    /// Floats of `V` (`rows` = C), `M` or `E` (`rows` = O) for one image of `tiles` tiles:
    /// rows padded by [`ROW_PAD`], planes [`SKEW`] apart.
    fn plane_floats(&self, rows: usize, tiles: usize) -> usize {
        self.planes() * (rows * (tiles + ROW_PAD) + SKEW)
    }
    /// Outputs per channel of an image: `oh × ow`, or pooled (2×2, stride 2) `⌊oh/2⌋ × ⌊ow/2⌋`.
    fn out_plane(&self, pooled: bool) -> usize {
        if pooled {
            (self.oh / 2) * (self.ow / 2)
        } else {
            self.oh * self.ow
        }
    }
    /// [`GROUP_TILES`] for this tile size: as many floats of `V` and `M` per group.
    fn group_tiles(&self) -> usize {
        GROUP_TILES * 16 / self.planes()
    }
}

/// Multiplications per channel pair of one image with tiles of side `m` (`m` = 2 or 4), a
/// clipped edge tile counting whole.
fn multiplications(oh: usize, ow: usize, m: usize) -> usize {
    oh.div_ceil(m) * ow.div_ceil(m) * (m + 2) * (m + 2)
}

/// F(4×4, 3×3) where it needs at least [`F4_GAIN`] fewer multiplications than F(2×2, 3×3)
/// and a row holds at least four tiles (its transforms work on four side by side, the last
/// one clipped by a shifted store); F(2×2, 3×3) otherwise. conv2 of the MNIST CNN (14×14):
/// 16 tiles of 36 products per channel pair instead of 49 of 16, 1.36× fewer.
fn tile_side(oh: usize, ow: usize) -> usize {
    let f4 = multiplications(oh, ow, 4) as f64;
    if ow >= 13 && f4 * F4_GAIN <= multiplications(oh, ow, 2) as f64 {
        4
    } else {
        2
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
            m: tile_side(oh, ow),
        },
        ConvKind::GradInput => WinoGeom {
            cin: o,
            h: oh,
            w: ow,
            pad: 2 - win.pad,
            cout: g.c,
            oh: g.h,
            ow: g.w,
            m: tile_side(g.h, g.w),
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
    /// Forward: whether the output transform also max-pools 2×2 windows of stride 2
    /// ([`crate::ir::Epilogue::Pool`], F(4×4) only: [`fuses_pool`]), writing the pooled
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

/// The geometry of a gradient step's convolution for [`super::sparse_conv`] and the density of
/// `dy` up to which it runs there; `None` for the forward pass or a geometry it cannot take.
fn sparse_geom(kind: ConvKind, g: &WinoGeom) -> Option<(super::sparse_conv::Geom, f32)> {
    use super::sparse_conv::{self as sc, Geom};
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
    /// The input or weight gradient on [`super::sparse_conv`] when `dy` is sparse enough;
    /// whether it ran.
    ///
    /// # Safety
    /// As [`WinogradStep::run`].
    unsafe fn sparse_gradient(&self, t: Table, batch: usize, threads: usize, lib: &Lib) -> bool {
        use super::sparse_conv as sc;
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
    /// gradients may skip the zeros of `dy` ([`super::sparse_conv`]).
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
    /// groups of about [`GROUP_TILES`] tiles (so `V` and `E` stay in L2) and adds their
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
    let (side, plane) = (g.a(), g.cout * g.cin + SKEW);
    kb.for_n(rows, |kb, r| {
        kb.for_n(cols, |kb, c| {
            let base = mul_add(kb, r, cols, c);
            let base = kb.b.ins().imul_imm_s(base, 9);
            let k: Vec<Value> = (0..9)
                .map(|e| {
                    let e = if rotate { 8 - e } else { e };
                    let i = kb.b.ins().iadd_imm_s(base, e as i64);
                    kb.ld(F32, wp, i)
                })
                .collect();
            // Columns of G g, then G applied to each of its rows.
            let cols3: Vec<Vec<Value>> = (0..3)
                .map(|j| tf::g(kb, g.m, [k[j], k[3 + j], k[6 + j]]))
                .collect();
            let (o_idx, c_idx) = if rotate { (c, r) } else { (r, c) };
            let uidx = mul_add(kb, c_idx, g.cout, o_idx);
            for i in 0..side {
                let col = tf::column(&cols3, i);
                let row = tf::g(kb, g.m, [col[0], col[1], col[2]]);
                for (j, &val) in row.iter().enumerate() {
                    let idx = kb.b.ins().iadd_imm_s(uidx, ((i * side + j) * plane) as i64);
                    kb.st(val, up, idx);
                }
            }
        })
    });
}

/// Column `j` (`0 ≤ j < m + 2`) of the windows of four horizontally adjacent tiles, as one
/// f32x4 per column, from a row of the bordered channel: `px(k)` loads its four values from
/// `k` on (the first tile's window starts at 0, the next one's at `m`).
fn tile_columns(kb: &mut Kb, m: usize, px: &mut dyn FnMut(&mut Kb, usize) -> Value) -> Vec<Value> {
    if m == 2 {
        // Columns 2t + j of tiles t..t+4: even and odd lanes of two rows.
        let (l0, l1, l2, l3) = (px(kb, 0), px(kb, 4), px(kb, 2), px(kb, 6));
        return vec![
            kb.shuffle(l0, l1, [0, 2, 4, 6]),
            kb.shuffle(l0, l1, [1, 3, 5, 7]),
            kb.shuffle(l2, l3, [0, 2, 4, 6]),
            kb.shuffle(l2, l3, [1, 3, 5, 7]),
        ];
    }
    // Columns 4t + j: a 4×4 transpose of the values from 0, and columns 4 and 5 (columns 0 and
    // 1 of the next tiles) from that of the values from 4.
    let q: Vec<Value> = (0..5).map(|k| px(kb, 4 * k)).collect();
    let [c0, c1, c2, c3] = tf::transpose(kb, [q[0], q[1], q[2], q[3]]);
    let [c4, c5, _, _] = tf::transpose(kb, [q[1], q[2], q[3], q[4]]);
    vec![c0, c1, c2, c3, c4, c5]
}

/// A `rows × cols` array of f32x4 in a stack slot, between the two passes of F(4×4)'s input
/// transform (the second reads by rows what the first wrote by columns). Kept in registers,
/// the 36 values of the transform's middle were all live at once, and Cranelift spilled most
/// of them, in its own order. (Staging the output and `dy` transforms' 24 the same way made
/// them slower: 2–5% on each convolution step of the CNN's training, over two alternated
/// profiles.)
struct Stage {
    slot: StackSlot,
    cols: usize,
}

impl Stage {
    fn new(kb: &mut Kb, rows: usize, cols: usize) -> Stage {
        let bytes = (rows * cols * 16) as u32;
        let data = StackSlotData::new(StackSlotKind::ExplicitSlot, bytes, 4);
        Stage {
            slot: kb.b.create_sized_stack_slot(data),
            cols,
        }
    }

    fn at(&self, i: usize, j: usize) -> i32 {
        ((i * self.cols + j) * 16) as i32
    }

    fn put(&self, kb: &mut Kb, i: usize, j: usize, v: Value) {
        kb.b.ins().stack_store(I64, v, self.slot, self.at(i, j));
    }

    fn get(&self, kb: &mut Kb, i: usize, j: usize) -> Value {
        kb.b.ins().stack_load(I64, F32X4, self.slot, self.at(i, j))
    }
}

/// `Bᵀ d B` of four F(4×4, 3×3) tiles side by side, whose windows start at element `base` of
/// the bordered channel at `pb` (rows of `pw`), as rows of f32x4 (`t[i][j]`, plane `i·6 + j`):
/// `Bᵀ d` first, down each of the five f32x4 columns the four windows span (no shuffles), into
/// a [`Stage`]; then `· B` along each of its rows, whose tiles' columns come from 4×4
/// transposes. Only rows `rows` (of the planes a task computes) are staged and transformed:
/// the others are empty.
fn inputs4(kb: &mut Kb, pb: Value, base: Value, pw: usize, rows: Range<usize>) -> Vec<Vec<Value>> {
    const Q: usize = 5;
    let st = Stage::new(kb, 6, Q);
    for q in 0..Q {
        let d: Vec<Value> = (0..6)
            .map(|r| {
                let i = kb.b.ins().iadd_imm_s(base, (r * pw + 4 * q) as i64);
                kb.ld_rw(F32X4, pb, i)
            })
            .collect();
        for (i, &e) in tf::bt(kb, &d).iter().enumerate() {
            if rows.contains(&i) {
                st.put(kb, i, q, e);
            }
        }
    }
    (0..6)
        .map(|i| {
            if !rows.contains(&i) {
                return Vec::new();
            }
            let q: Vec<Value> = (0..Q).map(|q| st.get(kb, i, q)).collect();
            let cols = tile_columns(kb, 4, &mut |_, k| q[k / 4]);
            tf::bt(kb, &cols)
        })
        .collect()
}

/// The input transform of channels `c0..c1` of `batch` images (table: images, `V`,
/// padded-channel buffer, row length `T` of `V`, `c0`, `c1`): `V[ξ][c][t] = (Bᵀ d B)[ξ]`,
/// `t = image·tiles + ty·TW + tx`, for the planes `planes` only.
fn inputs(kb: &mut Kb, g: &WinoGeom, planes: Range<usize>) {
    let (src, vb, pb, t_all) = (kb.ptr(0), kb.ptr(1), kb.ptr(2), kb.ptr(3));
    let (c_lo, c_hi) = (kb.ptr(4), kb.ptr(5));
    let (m, side) = (g.m, g.a());
    let tiles = g.tiles();
    let (th, tw) = g.tiles_hw();
    let (h, w, pad) = (g.h, g.w, g.pad);
    let pw = g.padded_hw().1;
    let plane = kb.b.ins().imul_imm_s(t_all, g.cin as i64);
    let plane = kb.b.ins().iadd_imm_s(plane, SKEW as i64);
    let zero = kb.int(0);
    let batch = kb.batch;
    // Zero the bordered channel and its slack (a whole number of f32x4: the bordered sides are
    // even) once: each channel copied in below writes its inside only, so the border stays 0.
    // (Zeroing it for every channel took 1–10%, median 3.5%, of the CNN's batch-1 inference.)
    let z = kb.cst(F32X4, 0.0);
    let lo = kb.int(0);
    let end = kb.int(g.pad_len() as i64);
    kb.for_step(lo, end, 4, |kb, i| kb.st(z, pb, i));
    kb.for_range(zero, batch, |kb, img| {
        let first_tile = kb.b.ins().imul_imm_s(img, tiles as i64);
        kb.for_range(c_lo, c_hi, |kb, c| {
            // Copy the channel in.
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
                let prow = kb.b.ins().imul_imm_s(ty, (m * pw) as i64);
                kb.vec_loop_overlapping(tw, |kb, tx, lane| {
                    let txm = kb.b.ins().imul_imm_s(tx, m as i64);
                    let base = kb.b.ins().iadd(prow, txm);
                    // Bᵀ d B, row by row (t[i][j] for plane i·side + j).
                    let t = if m == 4 && lane == F32X4 {
                        let rows = planes.start / side..planes.end.div_ceil(side);
                        inputs4(kb, pb, base, pw, rows)
                    } else {
                        // d B for each row of the tile(s), then Bᵀ down each column.
                        let rows: Vec<Vec<Value>> = (0..side)
                            .map(|r| {
                                let mut px = |kb: &mut Kb, k: usize| {
                                    let i = kb.b.ins().iadd_imm_s(base, (r * pw + k) as i64);
                                    kb.ld_rw(lane, pb, i)
                                };
                                let d = if lane == F32X4 {
                                    tile_columns(kb, m, &mut px)
                                } else {
                                    (0..side).map(|k| px(kb, k)).collect()
                                };
                                tf::bt(kb, &d)
                            })
                            .collect();
                        let cols: Vec<Vec<Value>> = (0..side)
                            .map(|j| tf::bt(kb, &tf::column(&rows, j)))
                            .collect();
                        (0..side).map(|i| tf::column(&cols, i)).collect()
                    };
                    let vt = kb.b.ins().iadd(vrow, tx);
                    for (i, row) in t.iter().enumerate() {
                        for (j, &val) in row.iter().enumerate() {
                            let xi = i * side + j;
                            if !planes.contains(&xi) {
                                continue;
                            }
                            let off = kb.b.ins().imul_imm_s(plane, xi as i64);
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
/// column clipped to the outputs there are; then `chain` (bias from its slot, the activations)
/// on each value before it is stored, as the separate epilogue would compute it.
fn outputs(kb: &mut Kb, g: &WinoGeom, chain: Option<(&Chain, Option<usize>)>, pool: bool) {
    let (mb, yb, t_all) = (kb.ptr(0), kb.ptr(1), kb.ptr(2));
    let chans = (kb.ptr(3), kb.ptr(4));
    let epi = chain.map(|(c, bias)| (c.acts.as_slice(), bias.map(|_| kb.ptr(5))));
    let tile: TileFn = match (g.m, pool) {
        (2, _) => output_tile,
        (_, false) => output_tile4,
        (_, true) => pooled_tile4,
    };
    each_output_tile(kb, g, (mb, yb, t_all), chans, (epi, pool), tile);
}

/// Whether a forward convolution of `geom` with `o` output channels, followed by a 2×2 max
/// pooling of stride 2, has its pooling done in the output transform: on F(4×4), whose tiles
/// hold whole windows.
pub fn fuses_pool(geom: &ConvGeom, o: usize) -> bool {
    plan(ConvKind::Forward, geom, o).is_some_and(|g| g.m == 4)
}

/// The output transform's chain: its activations and the pointer to its bias.
type OutEpi<'a> = (&'a [UnaryOp], Option<Value>);

/// One tile function of [`each_output_tile`]: a step of one tile or four side by side.
type TileFn = fn(&mut Kb, &WinoGeom, &Row, &Step);

/// A step of [`each_output_tile`]: the tile(s) at `tx` of a tile row, which starts at `mrow`
/// in `M` (or `E`) and at `yrow` in the images.
struct Step {
    mrow: Value,
    yrow: Value,
    tx: Value,
    /// F32X4 for four tiles side by side, F32 for one.
    lane: ClifType,
    /// Output rows of the tile(s) that exist in every tile row.
    rows: usize,
    /// Output columns of the last tile of the step.
    cols: usize,
    /// F(4×4): how many rows exist in this tile row (an i64), where the last one has fewer
    /// than `m`.
    rows_here: Option<Value>,
    /// F(4×4): whether the last tile of this step is the row's last and has `cols` columns
    /// only (an i8), where the row's last tile has fewer than 4.
    clipped: Option<Value>,
}

/// Walks the output-shaped side of `batch` images, tile by tile: for every image, output
/// channel of `o_lo..o_hi` and m×m output tile (clipped at the last row and column), `tile`
/// with the channel's `Row` (the `M`-like buffer at `mb` with rows of `t_all` tiles, the images
/// at `yb`). The output transform reads `M` and writes `y` (`pooled`: its 2×2 max pooling,
/// `⌊oh/2⌋ × ⌊ow/2⌋` a channel); the `dy` transform reads `dy` and writes `E`.
///
/// With F(2×2, 3×3) four whole tiles go at once (the last four again when a row's count is not
/// a multiple of four), and a clipped last row and column take code of their own. With
/// F(4×4, 3×3) (at least four tiles a row) every step takes four, the step ending a row the last
/// four; the tile code, whose 36 values make it long to compile, is emitted once, and the
/// clipped row and column are told apart at run time ([`Step::rows_here`], [`Step::clipped`]).
fn each_output_tile(
    kb: &mut Kb,
    g: &WinoGeom,
    (mb, yb, t_all): (Value, Value, Value),
    (o_lo, o_hi): (Value, Value),
    (epi, pooled): (Option<OutEpi>, bool),
    tile: TileFn,
) {
    let m = g.m;
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
            let yo = kb.b.ins().imul_imm_s(yo, g.out_plane(pooled) as i64);
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
            // Outputs of a tile row: m rows, or pooled, m/2 rows of ⌊ow/2⌋.
            let tile_row = if pooled { m / 2 * (g.ow / 2) } else { m * g.ow };
            let starts = |kb: &mut Kb, ty: Value| {
                let mrow = mul_add(kb, ty, tw, r.mo);
                let yrow = kb.b.ins().imul_imm_s(ty, tile_row as i64);
                (mrow, kb.b.ins().iadd(yrow, r.yo))
            };
            if m == 4 {
                let (last_rows, cols) = (g.oh - 4 * (th - 1), g.ow - 4 * (tw - 1));
                let steps = tw.div_ceil(4);
                kb.for_n(th, |kb, ty| {
                    let (mrow, yrow) = starts(kb, ty);
                    let rows_here = (last_rows < 4).then(|| {
                        let last = kb.b.ins().icmp_imm_s(IntCC::Equal, ty, th as i64 - 1);
                        let (few, all) = (kb.int(last_rows as i64), kb.int(4));
                        kb.b.ins().select(last, few, all)
                    });
                    kb.for_n(steps, |kb, s| {
                        let last = kb.b.ins().icmp_imm_s(IntCC::Equal, s, steps as i64 - 1);
                        let (s4, end) = (kb.b.ins().imul_imm_s(s, 4), kb.int(tw as i64 - 4));
                        let step = Step {
                            mrow,
                            yrow,
                            tx: kb.b.ins().select(last, end, s4),
                            lane: F32X4,
                            rows: last_rows,
                            cols,
                            rows_here,
                            clipped: (cols < 4).then_some(last),
                        };
                        tile(kb, &g, &r, &step)
                    });
                });
                return;
            }
            let row = |kb: &mut Kb, ty: Value, rows: usize| {
                let (mrow, yrow) = starts(kb, ty);
                let step = |tx, lane, cols| Step {
                    mrow,
                    yrow,
                    tx,
                    lane,
                    rows,
                    cols,
                    rows_here: None,
                    clipped: None,
                };
                kb.vec_loop_overlapping(g.ow / 2, |kb, tx, lane| {
                    tile(kb, &g, &r, &step(tx, lane, 2))
                });
                if g.ow % 2 == 1 {
                    let tx = kb.int((tw - 1) as i64);
                    tile(kb, &g, &r, &step(tx, F32, 1));
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

/// `Aᵀ m A` of the tile(s) of `s`: `y[i][j]`, row `i` and column `j` of the outputs.
fn untransform(kb: &mut Kb, g: &WinoGeom, r: &Row, s: &Step) -> Vec<Vec<Value>> {
    let side = g.a();
    let mt = kb.b.ins().iadd(s.mrow, s.tx);
    let m: Vec<Value> = (0..side * side)
        .map(|xi| {
            let off = kb.b.ins().imul_imm_s(r.plane, xi as i64);
            let idx = kb.b.ins().iadd(off, mt);
            kb.ld(s.lane, r.mb, idx)
        })
        .collect();
    // m A for each row, then Aᵀ of each of its columns.
    let ma: Vec<Vec<Value>> = m.chunks(side).map(|row| tf::at(kb, row)).collect();
    let cols: Vec<Vec<Value>> = (0..g.m).map(|j| tf::at(kb, &tf::column(&ma, j))).collect();
    (0..g.m).map(|i| tf::column(&cols, i)).collect()
}

/// The F(2×2, 3×3) tile(s) of `s` (four with f32x4 lanes, whole), `rows × cols` outputs each.
fn output_tile(kb: &mut Kb, g: &WinoGeom, r: &Row, s: &Step) {
    let y = untransform(kb, g, r, s);
    let lane = s.lane;
    let tx2 = kb.b.ins().iadd(s.tx, s.tx);
    for (i, row) in y.iter().enumerate().take(s.rows) {
        let yi = kb.b.ins().iadd_imm_s(s.yrow, (i * g.ow) as i64);
        let yi = kb.b.ins().iadd(yi, tx2);
        let (mut y0, mut y1) = (row[0], row[1]);
        if let Some(e) = r.epi {
            y0 = chain(kb, e.acts, e.bias, y0, lane);
            if s.cols == 2 || lane == F32X4 {
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
            if s.cols == 2 {
                let yi1 = kb.b.ins().iadd_imm_s(yi, 1);
                kb.st(y1, r.yb, yi1);
            }
        }
    }
}

/// `body` where `c` (an i8) holds, its values (of `types`) there, `otherwise` elsewhere.
fn when(
    kb: &mut Kb,
    c: Value,
    types: &[ClifType],
    body: impl FnOnce(&mut Kb) -> Vec<Value>,
    otherwise: impl FnOnce(&mut Kb) -> Vec<Value>,
) -> Vec<Value> {
    let (then, other, join) = (
        kb.b.create_block(),
        kb.b.create_block(),
        kb.b.create_block(),
    );
    for &t in types {
        kb.b.append_block_param(join, t);
    }
    kb.b.ins().brif(c, then, &[], other, &[]);
    for (block, f) in [
        (
            then,
            Box::new(body) as Box<dyn FnOnce(&mut Kb) -> Vec<Value>>,
        ),
        (other, Box::new(otherwise)),
    ] {
        kb.b.seal_block(block);
        kb.b.switch_to_block(block);
        let vals: Vec<_> = f(kb).into_iter().map(|v| v.into()).collect();
        kb.b.ins().jump(join, &vals);
    }
    kb.b.seal_block(join);
    kb.b.switch_to_block(join);
    kb.b.block_params(join).to_vec()
}

/// Whether row `i` of the step's tiles exists (an i8), or `None` where it always does.
fn row_exists(kb: &mut Kb, s: &Step, i: usize) -> Option<Value> {
    let here = s.rows_here.filter(|_| i >= s.rows)?;
    Some(
        kb.b.ins()
            .icmp_imm_s(IntCC::SignedGreaterThan, here, i as i64),
    )
}

/// The lanes that join the last `4 − cols` values of one f32x4 with the first `cols` of the
/// next (`1 ≤ cols < 4`).
fn joined(cols: usize) -> [u8; 4] {
    std::array::from_fn(|l| (cols + l) as u8)
}

/// The four F(4×4, 3×3) tiles of `s`: each output row is the transpose of the four tiles'
/// columns, one f32x4 per tile. The row's clipped last tile is stored joined to the values
/// before it, as the four values ending the row (the ones before are those the tile before
/// stores).
fn output_tile4(kb: &mut Kb, g: &WinoGeom, r: &Row, s: &Step) {
    let y = untransform(kb, g, r, s);
    let tx4 = kb.b.ins().imul_imm_s(s.tx, 4);
    for (i, row) in y.iter().enumerate() {
        let yi = kb.b.ins().iadd_imm_s(s.yrow, (i * g.ow) as i64);
        let yi = kb.b.ins().iadd(yi, tx4);
        let mut v: [Value; 4] = [row[0], row[1], row[2], row[3]];
        if let Some(e) = r.epi {
            for x in &mut v {
                *x = chain(kb, e.acts, e.bias, *x, F32X4);
            }
        }
        let store_row = |kb: &mut Kb| {
            let t = tf::transpose(kb, v);
            for (k, &row) in t.iter().enumerate().take(3) {
                let at = kb.b.ins().iadd_imm_s(yi, 4 * k as i64);
                kb.st(row, r.yb, at);
            }
            let whole = |kb: &mut Kb| {
                let at = kb.b.ins().iadd_imm_s(yi, 12);
                kb.st(t[3], r.yb, at);
                vec![]
            };
            match s.clipped {
                Some(c) => {
                    let ending = |kb: &mut Kb| {
                        let last = kb.shuffle(t[2], t[3], joined(s.cols));
                        let at = kb.b.ins().iadd_imm_s(yi, 8 + s.cols as i64);
                        kb.st(last, r.yb, at);
                        vec![]
                    };
                    when(kb, c, &[], ending, whole);
                }
                None => {
                    whole(kb);
                }
            }
            vec![]
        };
        match row_exists(kb, s, i) {
            Some(c) => {
                when(kb, c, &[], store_row, |_| vec![]);
            }
            None => {
                store_row(kb);
            }
        }
    }
}

/// [`output_tile4`], then the 2×2 max pooling of stride 2 of each tile's outputs: row `pi` of
/// a tile's 2×2 pooled values where its rows `2pi`, `2pi + 1` exist, column `pj` where its
/// columns `2pj`, `2pj + 1` do (the pooling drops an odd last row or column). Each maximum is
/// [`pool::max4`] of the window's taps in the pooling kernel's order, as that kernel computes
/// it on rows of four or more (F(4×4) rows have at least 13 outputs, 6 pooled): the same bits.
/// A pooled row of the four tiles is the interleave of their two pooled columns, stored as two
/// f32x4 (the row's last ones joined to end at the row's end, as [`output_tile4`] does).
fn pooled_tile4(kb: &mut Kb, g: &WinoGeom, r: &Row, s: &Step) {
    let y = untransform(kb, g, r, s);
    let pw = g.ow / 2;
    let y: Vec<Vec<Value>> = y
        .into_iter()
        .map(|row| match r.epi {
            Some(e) => row
                .into_iter()
                .map(|x| chain(kb, e.acts, e.bias, x, F32X4))
                .collect(),
            None => row,
        })
        .collect();
    let tx2 = kb.b.ins().imul_imm_s(s.tx, 2);
    // Pooled values in the group's last tile, and in the whole group of four.
    let last = s.cols / 2;
    for pi in 0..2 {
        let p: Vec<Value> = (0..2)
            .map(|pj| {
                let (a, b) = (&y[2 * pi], &y[2 * pi + 1]);
                pool::max4(kb, [a[2 * pj], a[2 * pj + 1], b[2 * pj], b[2 * pj + 1]])
            })
            .collect();
        let yi = kb.b.ins().iadd_imm_s(s.yrow, (pi * pw) as i64);
        let yi = kb.b.ins().iadd(yi, tx2);
        let store_row = |kb: &mut Kb| {
            let lo = kb.shuffle(p[0], p[1], [0, 4, 1, 5]);
            let hi = kb.shuffle(p[0], p[1], [2, 6, 3, 7]);
            kb.st(lo, r.yb, yi);
            let whole = |kb: &mut Kb| {
                let at = kb.b.ins().iadd_imm_s(yi, 4);
                kb.st(hi, r.yb, at);
                vec![]
            };
            match s.clipped.filter(|_| last < 2) {
                Some(c) => {
                    // 6 + last pooled values: the last four end at 2 + last.
                    let ending = |kb: &mut Kb| {
                        let v = kb.shuffle(lo, hi, joined(2 + last));
                        let at = kb.b.ins().iadd_imm_s(yi, 2 + last as i64);
                        kb.st(v, r.yb, at);
                        vec![]
                    };
                    when(kb, c, &[], ending, whole);
                }
                None => {
                    whole(kb);
                }
            }
            vec![]
        };
        match row_exists(kb, s, 2 * pi + 1) {
            Some(c) => {
                when(kb, c, &[], store_row, |_| vec![]);
            }
            None => {
                store_row(kb);
            }
        }
    }
}

/// The `dy` transform of `batch` images for the weight gradient (table: `dy`, `E`, row length
/// `T` of `E`): `E[ξ][o][t] = (A e Aᵀ)[ξ]` for the m×m block `e` of `dy` under tile `t`, zero
/// beyond the last row and column.
fn dy_tiles(kb: &mut Kb, g: &WinoGeom) {
    let (yb, eb, t_all) = (kb.ptr(0), kb.ptr(1), kb.ptr(2));
    let chans = (kb.int(0), kb.int(g.cout as i64));
    let tile: TileFn = if g.m == 2 { dy_tile } else { dy_tile4 };
    each_output_tile(kb, g, (eb, yb, t_all), chans, (None, false), tile);
}

/// `E = A e Aᵀ` of the block(s) `e` (rows of columns) of `s`, stored into `E` at `r.mb`.
fn transform_dy(kb: &mut Kb, g: &WinoGeom, r: &Row, s: &Step, e: &[Vec<Value>]) {
    let side = g.a();
    let er: Vec<Vec<Value>> = e.iter().map(|x| tf::a(kb, x)).collect();
    let mt = kb.b.ins().iadd(s.mrow, s.tx);
    for q in 0..side {
        let col = tf::a(kb, &tf::column(&er, q));
        for (p, &val) in col.iter().enumerate() {
            let off = kb.b.ins().imul_imm_s(r.plane, (p * side + q) as i64);
            let idx = kb.b.ins().iadd(off, mt);
            kb.st(val, r.mb, idx);
        }
    }
}

/// The F(2×2, 3×3) `dy` tile(s) of `s` (four with f32x4 lanes) from `rows × cols` values of
/// `dy` at `r.yb` (the rest zero), into `E` at `r.mb`.
fn dy_tile(kb: &mut Kb, g: &WinoGeom, r: &Row, s: &Step) {
    let lane = s.lane;
    let tx2 = kb.b.ins().iadd(s.tx, s.tx);
    let z = kb.cst(lane, 0.0);
    // e[i] = (e[i][0], e[i][1]).
    let e: Vec<Vec<Value>> = (0..2)
        .map(|i| {
            if i >= s.rows {
                return vec![z, z];
            }
            let yi = kb.b.ins().iadd_imm_s(s.yrow, (i * g.ow) as i64);
            let yi = kb.b.ins().iadd(yi, tx2);
            if lane == F32X4 {
                let l0 = kb.ld(F32X4, r.yb, yi);
                let yi4 = kb.b.ins().iadd_imm_s(yi, 4);
                let l1 = kb.ld(F32X4, r.yb, yi4);
                vec![
                    kb.shuffle(l0, l1, [0, 2, 4, 6]),
                    kb.shuffle(l0, l1, [1, 3, 5, 7]),
                ]
            } else {
                let e0 = kb.ld(F32, r.yb, yi);
                let e1 = if s.cols == 2 {
                    let yi1 = kb.b.ins().iadd_imm_s(yi, 1);
                    kb.ld(F32, r.yb, yi1)
                } else {
                    z
                };
                vec![e0, e1]
            }
        })
        .collect();
    transform_dy(kb, g, r, s, &e);
}

/// The four F(4×4, 3×3) `dy` tiles of `s` (zero in the rows that do not exist): each row of the
/// tiles is the transpose of one f32x4 per tile. The row's clipped last tile is loaded as the
/// four values ending the row, moved to the front, zeros after them.
fn dy_tile4(kb: &mut Kb, g: &WinoGeom, r: &Row, s: &Step) {
    let tx4 = kb.b.ins().imul_imm_s(s.tx, 4);
    let z = kb.cst(F32X4, 0.0);
    let cols = s.cols;
    let e: Vec<Vec<Value>> = (0..4)
        .map(|i| {
            let yi = kb.b.ins().iadd_imm_s(s.yrow, (i * g.ow) as i64);
            let yi = kb.b.ins().iadd(yi, tx4);
            let ld = |kb: &mut Kb, at: i64| {
                let at = kb.b.ins().iadd_imm_s(yi, at);
                kb.ld(F32X4, r.yb, at)
            };
            let load_row = |kb: &mut Kb| {
                let q: Vec<Value> = (0..3).map(|k| ld(kb, 4 * k)).collect();
                let q3 = match s.clipped {
                    Some(c) => {
                        let ending = |kb: &mut Kb| {
                            let v = ld(kb, 8 + cols as i64);
                            let lanes = std::array::from_fn(|l| {
                                if l < cols {
                                    (4 - cols + l) as u8
                                } else {
                                    4
                                }
                            });
                            vec![kb.shuffle(v, z, lanes)]
                        };
                        when(kb, c, &[F32X4], ending, |kb| vec![ld(kb, 12)])[0]
                    }
                    None => ld(kb, 12),
                };
                tf::transpose(kb, [q[0], q[1], q[2], q3]).to_vec()
            };
            match row_exists(kb, s, i) {
                Some(c) => when(kb, c, &[F32X4; 4], load_row, |_| vec![z; 4]),
                None => load_row(kb),
            }
        })
        .collect();
    transform_dy(kb, g, r, s, &e);
}

/// The weight gradient from its transform: `dw[o][c] = Gᵀ dU[·][o][c] G` (3×3), `dU` in slot
/// `du_slot` (`ξ` planes of `O×C`, [`SKEW`] apart), `dw` (`[O, C, 3, 3]`) in `dw_slot`.
fn weight_grads(kb: &mut Kb, g: &WinoGeom, du_slot: usize, dw_slot: usize) {
    let (dp, wp) = (kb.ptr(du_slot), kb.ptr(dw_slot));
    let (side, plane) = (g.a(), g.cout * g.cin + SKEW);
    let all = g.planes() * plane;
    // dU of the first run += that of each other run, in order (the kernel's batch argument
    // is the number of runs).
    let (one, runs) = (kb.int(1), kb.batch);
    kb.for_range(one, runs, |kb, r| {
        let at = kb.b.ins().imul_imm_s(r, all as i64);
        let (lo, hi) = (kb.int(0), kb.int(all as i64));
        kb.vec_loop(lo, hi, |kb, i, lane| {
            let j = kb.b.ins().iadd(at, i);
            let (sum, part) = (kb.ld_rw(lane, dp, i), kb.ld_rw(lane, dp, j));
            let sum = kb.b.ins().fadd(sum, part);
            kb.st(sum, dp, i);
        });
    });
    kb.for_n(g.cout * g.cin, |kb, oc| {
        let x: Vec<Value> = (0..g.planes())
            .map(|xi| {
                let i = kb.b.ins().iadd_imm_s(oc, (xi * plane) as i64);
                kb.ld(F32, dp, i)
            })
            .collect();
        let rows: Vec<Vec<Value>> = x.chunks(side).map(|p| tf::gt(kb, p).to_vec()).collect();
        let base = kb.b.ins().imul_imm_s(oc, 9);
        for v in 0..3 {
            let col = tf::gt(kb, &tf::column(&rows, v));
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
        // 14×14: F(4×4) (16 tiles of 36 products per channel pair, not 49 of 16); 9×9:
        // F(2×2) (3 tiles a row; F(4×4) would save 1.23× on 25 tiles of 16 against 9 of 36).
        assert_eq!((fwd.m, fwd.tiles(), fwd.planes()), (4, 16, 36));
        assert_eq!(fwd.padded_hw(), (18, 18));
        assert_eq!((gi.m, gi.tiles()), (2, 25));
        assert_eq!(gi.padded_hw(), (12, 12));
        // Rows of 13 or more (four tiles of F(4×4)) where F(4×4) saves 1.2× or more.
        for (hw, m) in [(12, 2), (13, 4), (16, 4), (17, 4), (28, 4)] {
            assert_eq!(tile_side(hw, hw), m, "{hw}×{hw}");
        }
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
