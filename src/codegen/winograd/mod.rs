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
//!
//! Here the plan; the transforms' kernels in [`weight`], [`input`] and [`output`] (the 1-D
//! transforms they apply in [`transforms`]); the step that builds and runs them in [`run`].

use cranelift_codegen::ir::{InstBuilder, Value};

mod input;
mod output;
mod run;
mod transforms;
mod weight;

use input::inputs;
use output::{dy_tiles, outputs};
pub use run::{step, WinogradStep};
use weight::{weight_grads, weights};

use super::glue::ConvKind;
use super::im2col::ConvGeom;
use super::kernel::Kb;

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

/// `v` times an i64 constant, plus `add`.
fn mul_add(kb: &mut Kb, v: Value, k: usize, add: Value) -> Value {
    let p = kb.b.ins().imul_imm_s(v, k as i64);
    kb.b.ins().iadd(p, add)
}

/// Whether a forward convolution of `geom` with `o` output channels, followed by a 2×2 max
/// pooling of stride 2, has its pooling done in the output transform: on F(4×4), whose tiles
/// hold whole windows.
pub fn fuses_pool(geom: &ConvGeom, o: usize) -> bool {
    plan(ConvKind::Forward, geom, o).is_some_and(|g| g.m == 4)
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
