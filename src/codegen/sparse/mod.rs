//! Matrix products whose left operand is mostly one value: MNIST's images are 81% background
//! pixels (0, or −1 once normalized to [−1, 1]), so a dense layer reading them multiplies most
//! of its weights by the same number. Here each row of `op(A)` is first compacted into the
//! list of its other entries (`A[r,e] − bg` and the offset of row `e` of B), and C is
//!
//! ```text
//! C[r, :] = bg · Σ_e B[e, :]  +  Σ_{e: A[r,e] ≠ bg} (A[r,e] − bg) · B[e, :]
//! ```
//!
//! the first term (`init`, one row for all of C, [`Sparse::background_row`]) computed once per
//! product, the second by a one-row f32x4 kernel whose accumulators stay in registers over the
//! list, by blocks of B's rows that stay in L1 while every row of C passes over them: a fifth
//! of the multiply-adds of the dense product for MNIST's first layer and its weight gradient,
//! which `op(A) = Xᵀ` turns into the same shape. Whether a product is sparse enough is decided
//! per call from a sample of A ([`background`]); otherwise the dense GEMM runs.
//!
//! The first term costs what a dense product of one row does. Where B does not change from one
//! call to the next (parameters the JIT holds, [`crate::exec::Executor::hold_params`]) it is
//! kept ([`Sparse::product_from_row`]); only then is a batch of one compacted around a
//! background other than 0.
//!
//! An entry equal to the background is skipped even where B holds an infinity or a NaN (which
//! a dense product would spread as `0 · ∞ = NaN`); a non-finite entry of A is always kept.
//!
//! Each element of C is summed in list order (the entries' order in A), the same whatever rows
//! or columns a thread is given, so results do not depend on the thread count. A product of
//! fewer than [`FEW_ROWS`] rows and a long contraction is summed in two halves of the depth,
//! then the halves added ([`SPLIT_DEPTH_MIN`]), however many threads run them. With `bg = 0`
//! they are those of a dense product summed in order; with `bg ≠ 0` the product is regrouped,
//! which rounds differently (within f32's rounding of the sums).

use std::cell::RefCell;
use std::ops::Range;

use cranelift_jit::JITModule;

use super::gemm::{Block, BlockFn, GEMM_OPT};
use super::jitmod::new_jit_module_with_opt;

mod emit;

pub(super) use emit::for_range;
use emit::{emit_kernel, emit_segments_kernel};

/// Densities (share of A's entries that differ from the background) up to which the compacted
/// product is used. Measured with `benches/gemm.rs` on the MLP's shapes: a multiply-add of the
/// compacted product costs about 1.5 of the packed GEMM's (one load of B per multiply-add
/// where the GEMM's 8×4 tile has one per eight), and compacting costs a sixth of a dense
/// product, so it wins below about half; ReLU outputs (42–70% in the examples) stay dense,
/// unless C is wide ([`MAX_DENSITY_WIDE`]).
pub const MAX_DENSITY: f32 = 0.35;
/// [`MAX_DENSITY`] of a product of at least [`WIDE_N`] columns. Each compacted entry then
/// feeds that many multiply-adds from registers, and a multiply-add costs about 1.1 of the
/// packed GEMM's. Measured with `benches/gemm.rs` on the autoencoder's decoder (128×784×128,
/// plain and `ta`, two threads, Intel Xeon): at density 0.7, 260 against 320–322 µs for the
/// dense GEMM; at 0.8, 288; at 0.9, 331–339: even near 0.87. Its ReLU outputs are 60–69%
/// non-zero in the first epoch and 72–74% after 3,000 steps, where a limit of 0.75 sent a
/// share of the products (their sampled density above it) to the dense GEMM: in training
/// (AMD Zen 4, two threads, the two modes alternated every 10 calls in one process), at
/// density 0.73 the dense GEMM took 1.29–1.35× the compacted product's time, and with the
/// limit at 0.85 instead of 0.75 the decoder's products took 0.97–1.01 of their time.
/// With 10 columns the compacted product loses at any density (64×10×128: 16 µs at 0.5, 6 µs
/// dense).
pub const MAX_DENSITY_WIDE: f32 = 0.85;
/// Columns of C from which [`MAX_DENSITY_WIDE`] applies. At 128 columns the CNN's dense layer
/// (62% non-zero) ran as fast compacted as dense.
pub const WIDE_N: usize = 256;
/// [`MAX_DENSITY`] of a product with fewer than [`FEW_ROWS`] rows (batch 1), which the GEMM
/// runs on its one-row kernel: both then wait on B's rows more than on the multiply-adds, and
/// the compacted product reads only those its entries pick. Measured with a temporary
/// in-process harness, one row, entries 0 or 0.5, dense GEMM on two threads against the
/// compacted product on one: 1×784·784×128 at density 0.6, 8.0 against 6.5 µs (best of 2000),
/// at 0.8, 7.7 against 9.2; 1×3136·3136×128 (the CNN's first dense layer, whose ReLU-and-pool
/// input is 62% non-zero) 35 against 47 at 0.6 on one thread, hence the split by columns
/// from [`PAR_MIN_FLOPS_FEW_ROWS`].
pub const MAX_DENSITY_FEW_ROWS: f32 = 0.65;
/// Rows below which [`MAX_DENSITY_FEW_ROWS`] applies: the GEMM's one-row kernel serves C with
/// 1–3 rows.
pub const FEW_ROWS: usize = 4;
/// Contraction length from which a product of fewer than [`FEW_ROWS`] rows is split by depth
/// rather than by columns: each task then reads a contiguous half of B, the depth's first half
/// into C and the second into a row of its own, added after. At batch 1 the time goes to B's
/// rows coming from memory, not to the multiply-adds, and half of each row of B (a split by
/// columns) is read at less than the speed of whole rows. Measured on the CNN's first dense
/// layer (1×3136·3136×128, 62% non-zero, AMD Zen 4, two threads): 17.7 µs split by columns,
/// 11.1 µs by depth (`cargo bench --bench gemm -- b1_`); in the batch-1 inference profile
/// 20.0–23.4 against 14.4–17.0 µs (three alternated runs).
pub const SPLIT_DEPTH_MIN: usize = 1024;
/// Rows of C from which a background other than 0 is worth its dense row (see
/// [`Problem::background`]).
const MIN_ROWS_OFF_ZERO: usize = 8;
/// Contraction length below which a product is never compacted (nothing to skip).
const MIN_K: usize = 32;
/// Rows of C per call of the kernel, handed to the epilogue together: their lists are built,
/// then each depth block of B is used by all of them while in L1.
const ROWS_PER_CALL: usize = 64;
/// Rows of C per thread from which a product split by rows is cut into tasks of
/// [`ROWS_PER_CALL`] rows that the threads take as they come free, rather than into one block
/// per thread. The rows of `Xᵀ` (pixels) are far from equally dense, and a core of this shared
/// machine may run slower than the other for a while: with one block each, the faster thread
/// then waits. The autoencoder's first weight gradient (784×128·128 rows, MNIST-like images,
/// two threads, AMD Zen 4, alternated in one process): 99–142 µs in one block per thread,
/// 92–110 µs in tasks of 64 rows. Smaller products keep one block per thread (a task of fewer
/// rows would reload B's blocks into L1 more often).
const DEALT_MIN_ROWS: usize = 4 * ROWS_PER_CALL;
/// f32x4 multiply-adds of the dense product below which a product stays on the calling thread.
const PAR_MIN_MACS: usize = 1 << 17;
/// Flops of the dense product from which one with fewer rows than threads is split by columns,
/// as the GEMM's one-row products are: the workers spin between a step's kernels, so a
/// hand-over costs about a microsecond.
const PAR_MIN_FLOPS_FEW_ROWS: usize = 100_000;

/// Depth (rows of B) of a block of the product: 32 columns of that many rows of B (8 KiB) stay
/// in L1 while every row of the call passes over them (128 rows thrashed: B's rows of 512
/// bytes fall in 16 of L1's 64 sets).
const KB: usize = 64;
/// [`KB`] of a product of fewer than [`WIDE_N`] columns whose `op(A)` is not transposed. Those
/// are compacted at densities up to [`MAX_DENSITY`] (or [`MAX_DENSITY_FEW_ROWS`], a row or
/// three), so a row holds a dozen entries in 64 rows of B, and loading and storing its eight
/// accumulators around them costs more than B's rows reloaded from L2 in a deeper block. MNIST's
/// first layer (128×784·784×128 on 128 training images, two threads, AMD Zen 3, the two depths
/// alternated in one process): 0.93–0.95 of the time with 128. Not for its weight gradient
/// (`Xᵀ`, 128 deep in all), where 128 took 1.06–1.10× the time of 64, nor for the wide
/// products of the autoencoder's decoder (73% dense), 1.08–1.09×.
const KB_NARROW: usize = 128;

/// How the kernel reads `op(A)` while compacting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Any strides, one entry at a time.
    Scalar = 0,
    /// A row's entries are contiguous (`a_step` = 4, `k` a multiple of 4): four at a time.
    AlongRow = 1,
    /// Four rows' entries are contiguous (`a_row` = 4, `rows` a multiple of 4, op(A) = Xᵀ):
    /// one step of four rows at a time.
    AcrossRows = 2,
}

/// The arguments of one call of the kernel: `rows` rows of C, `n` columns (a block of them).
/// Strides are in bytes. Passed by pointer, as the GEMM's.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Args {
    /// Element `(0, 0)` of `op(A)` for the first row.
    a: *const f32,
    /// Bytes from row `r` of `op(A)` to row `r + 1`.
    a_row: usize,
    /// Bytes from entry `e` of a row of `op(A)` to entry `e + 1`.
    a_step: usize,
    /// Contraction length.
    k: usize,
    /// The background value's bits (f32, zero-extended).
    bg: usize,
    /// Element `(0, first column)` of B.
    b: *const f32,
    /// Bytes from one row of B to the next.
    ldb: usize,
    /// Columns of the block.
    n: usize,
    /// `n` floats every row of C starts from.
    init: *const f32,
    /// Element `(first row, first column)` of C.
    c: *mut f32,
    /// Bytes from one row of C to the next.
    ldc: usize,
    rows: usize,
    /// `rows · k` list entries of 8 bytes, row `r`'s from entry `r·k`: B's row offset in
    /// bytes (i32) and `A[r,e] − bg` (f32).
    list: *mut u8,
    /// `rows · (blocks + 1)` pointers: where row `r`'s entries of depth block `kb` start (and
    /// the last one where they end), `blocks = ⌈k / kb⌉`.
    seg: *mut u8,
    /// A [`Mode`].
    mode: usize,
    /// Depth block (rows of B).
    kb: usize,
}

#[derive(Clone, Copy)]
enum Arg {
    A,
    ARow,
    AStep,
    K,
    Bg,
    B,
    Ldb,
    N,
    Init,
    C,
    Ldc,
    Rows,
    List,
    Seg,
    Mode,
    Kb,
}

type KernelFn = unsafe extern "C" fn(args: *const Args);

/// The compiled kernel, shared by every graph and thread (the lists are per thread).
pub struct Sparse {
    _module: JITModule,
    kernel: KernelFn,
    segments: SegmentsFn,
}

type SegmentsFn = unsafe extern "C" fn(args: *const SegArgs);

// SAFETY: the module is immutable once finalized and only kept so the code stays mapped; the
// kernel touches nothing but its arguments.
unsafe impl Send for Sparse {}
// SAFETY: as for `Send`.
unsafe impl Sync for Sparse {}

thread_local! {
    /// Per-thread lists and their segment pointers, grown on demand.
    static LISTS: RefCell<(Vec<u64>, Vec<u64>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}
/// One run of a list of entries ([`Sparse::segments`]): entries `first .. end` of the list
/// (each B's row offset in bytes from `b_off`, and a value: [`entry`]), multiplied by B from
/// its byte `b_off`. A convolution's gradient uses one list per position, each run against the
/// rows of B of every tap of the window ([`super::sparse_conv`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub first: u64,
    pub end: u64,
    pub b_off: u64,
}

/// A list entry: B's row offset in bytes (from its segment's `b_off`) and the value that
/// multiplies that row.
#[inline]
pub fn entry(off: i32, v: f32) -> u64 {
    (off as u32 as u64) | ((v.to_bits() as u64) << 32)
}

/// The arguments of the segments kernel: rows `0 .. rows` of C, each the sum over its
/// `per_row` segments. Strides in bytes. Passed by pointer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct SegArgs {
    b: *const f32,
    /// Columns of C.
    n: usize,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    list: *const u64,
    /// `rows · per_row` segments, row after row.
    segs: *const Segment,
    per_row: usize,
    /// 0: C starts from zero; otherwise from what it holds.
    accumulate: usize,
}

#[derive(Clone, Copy)]
enum SegArg {
    B,
    N,
    C,
    Ldc,
    Rows,
    List,
    Segs,
    PerRow,
    Accumulate,
}

/// The background value of `a` if its entries mostly equal it: 0 or `a[0]` (only 0 when
/// `zero_only`), whichever more entries of a sample equal, when at most `max_density` of them
/// differ. The sample is 256 entries at an odd stride (images' rows and borders do not line up
/// with it), and stops as soon as both candidates have missed too often: a fraction of a
/// microsecond, which a batch-1 product would notice.
pub fn background(a: &[f32], zero_only: bool, max_density: f32) -> Option<f32> {
    const SAMPLE: usize = 256;
    let first = *a.first()?;
    let first = if zero_only || !first.is_finite() {
        0.0
    } else {
        first
    };
    let stride = (a.len() / SAMPLE) | 1;
    let limit = (max_density * a.len().div_ceil(stride) as f32) as usize;
    let (mut off_zero, mut off_first) = (0usize, 0usize);
    for &v in a.iter().step_by(stride) {
        off_zero += (v != 0.0) as usize;
        off_first += (v != first) as usize;
        if off_zero.min(off_first) > limit {
            return None;
        }
    }
    Some(if off_zero <= off_first { 0.0 } else { first })
}

/// A product `C[m×n] = op(A)·B` as [`Sparse::product`] computes it.
#[derive(Clone, Copy, Debug)]
pub struct Problem {
    /// `op(A)` is `A[m×k]`, or `A` stored `[k×m]` when `ta`.
    pub ta: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

impl Problem {
    /// Whether the kernel can compute this product at all (B's row offsets fit its i32s).
    pub fn fits(&self) -> bool {
        self.k >= MIN_K && self.n > 0 && self.m > 0 && self.k * self.n * 4 < i32::MAX as usize
    }

    /// Rows of B in a depth block ([`KB`], [`KB_NARROW`]).
    fn depth_block(&self) -> usize {
        if !self.ta && self.n < WIDE_N {
            KB_NARROW
        } else {
            KB
        }
    }

    /// The background to compact `a` (this product's A) around, if it pays ([`background`]):
    /// one other than 0 costs a dense row of the product (`bg · Σ_e B[e, :]`), too much for
    /// fewer than [`MIN_ROWS_OFF_ZERO`] rows unless `row_kept`: the caller keeps that row
    /// from one call to the next (B is fixed, see [`Sparse::background_row`]).
    pub fn background(&self, a: &[f32], row_kept: bool) -> Option<f32> {
        let max_density = if self.m < FEW_ROWS {
            MAX_DENSITY_FEW_ROWS
        } else if self.n >= WIDE_N {
            MAX_DENSITY_WIDE
        } else {
            MAX_DENSITY
        };
        background(a, self.m < MIN_ROWS_OFF_ZERO && !row_kept, max_density)
    }
}

/// Runs `f` on up to `threads` blocks of the `n` columns, on the workers: each but the last a
/// whole number of 32 columns, the kernel's widest step (8 f32x4 accumulators).
fn by_columns(threads: usize, n: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
    let chunk = n.div_ceil(threads.max(1)).div_ceil(32) * 32;
    super::workers::run(n.div_ceil(chunk), &|t| f(t * chunk..n.min((t + 1) * chunk)));
}

/// C's address, shared by tasks that write disjoint parts of it.
#[derive(Clone, Copy)]
pub(super) struct SendPtr(pub(super) *mut f32);
// SAFETY: each task writes only its own rows or columns.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// Element `i` (a method, so that a closure captures the whole `SendPtr`, not its field).
    ///
    /// # Safety
    /// `i` is inside the buffer.
    pub(super) unsafe fn at(&self, i: usize) -> *mut f32 {
        unsafe { self.0.add(i) }
    }
}

impl Sparse {
    pub fn new() -> Result<Sparse, String> {
        let mut module = new_jit_module_with_opt(GEMM_OPT)?;
        let id = super::jitmod::define_function(&mut module, "nnc_sparse_rows", 1, emit_kernel)?;
        let seg_id = super::jitmod::define_function(
            &mut module,
            "nnc_sparse_segments",
            1,
            emit_segments_kernel,
        )?;
        module
            .finalize_definitions()
            .map_err(|e| format!("finalize the sparse kernel: {e}"))?;
        // SAFETY: defined with exactly the `KernelFn` and `SegmentsFn` signatures.
        let (kernel, segments) = unsafe {
            (
                std::mem::transmute::<*const u8, KernelFn>(module.get_finalized_function(id)),
                std::mem::transmute::<*const u8, SegmentsFn>(module.get_finalized_function(seg_id)),
            )
        };
        Ok(Sparse {
            _module: module,
            kernel,
            segments,
        })
    }

    /// `C[r, :] (= or +=) Σ_s Σ_{e in segment (r, s)} value_e · B[b_off_s + off_e, :]` for
    /// `rows` rows of C (`n` columns, `ldc` floats apart), each over its `per_row` segments
    /// of `segs` in order, then its entries in order: each element of C is summed in that
    /// order whatever the caller's split.
    ///
    /// # Safety
    /// Every segment's entries lie in `list`, and every row of B they pick (from `b`, plus the
    /// segment's `b_off` and the entry's offset, in bytes) holds `n` floats; C holds `rows`
    /// rows of `ldc ≥ n` floats that no other thread touches meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn segments(
        &self,
        b: *const f32,
        list: &[u64],
        segs: &[Segment],
        per_row: usize,
        (c, ldc, n): (*mut f32, usize, usize),
        accumulate: bool,
    ) {
        debug_assert!(segs.len().is_multiple_of(per_row.max(1)));
        let rows = segs.len().checked_div(per_row).unwrap_or(0);
        let args = SegArgs {
            b,
            n,
            c,
            ldc: 4 * ldc,
            rows,
            list: list.as_ptr(),
            segs: segs.as_ptr(),
            per_row,
            accumulate: accumulate as usize,
        };
        // SAFETY: as the caller promises.
        unsafe { (self.segments)(&args) };
    }

    /// Rows `rows` and columns `cols` of C (row stride `n`), summed over the entries `depth`
    /// of op(A)'s rows (and those rows of B) from `init`, [`ROWS_PER_CALL`] rows at a time, each
    /// handed to `epi` when final.
    ///
    /// # Safety
    /// `a`, `b`, `c` and `init` hold the problem's operands (`init` n floats), and no other
    /// thread touches this block of C.
    #[allow(clippy::too_many_arguments)]
    unsafe fn block(
        &self,
        p: &Problem,
        bg: f32,
        a: &[f32],
        b: &[f32],
        init: &[f32],
        c: SendPtr,
        (rows, cols, depth): (Range<usize>, Range<usize>, Range<usize>),
        epi: Option<&BlockFn>,
    ) {
        let (a_row, a_step) = if p.ta { (4, 4 * p.m) } else { (4 * p.k, 4) };
        let k = depth.len();
        let kb = p.depth_block();
        let blocks = p.k.div_ceil(kb);
        LISTS.with_borrow_mut(|(list, seg)| {
            let group = ROWS_PER_CALL.min(rows.len());
            if list.len() < group * p.k {
                list.resize(group * p.k, 0);
            }
            if seg.len() < group * (blocks + 1) {
                seg.resize(group * (blocks + 1), 0);
            }
            let mut r = rows.start;
            while r < rows.end {
                let hi = (r + group).min(rows.end);
                // Four rows at a time where they lie side by side, the rest one by one.
                let calls = if p.ta {
                    let quads = (hi - r) / 4 * 4;
                    [
                        (r, r + quads, Mode::AcrossRows),
                        (r + quads, hi, Mode::Scalar),
                    ]
                } else if k.is_multiple_of(4) && depth.start.is_multiple_of(4) {
                    [(r, hi, Mode::AlongRow), (hi, hi, Mode::Scalar)]
                } else {
                    [(r, hi, Mode::Scalar), (hi, hi, Mode::Scalar)]
                };
                for (lo, hi, mode) in calls.into_iter().filter(|(lo, hi, _)| lo < hi) {
                    // SAFETY: every pointer stays inside its operand: rows lo..hi and entries
                    // `depth` of op(A), those rows of B from column cols.start, n-wide rows of
                    // C; the lists hold (hi − lo)·p.k entries and their segments.
                    unsafe {
                        let args = Args {
                            a: a.as_ptr().byte_add(lo * a_row + depth.start * a_step),
                            a_row,
                            a_step,
                            k,
                            bg: bg.to_bits() as usize,
                            b: b.as_ptr().add(depth.start * p.n + cols.start),
                            ldb: 4 * p.n,
                            n: cols.len(),
                            init: init.as_ptr().add(cols.start),
                            c: c.0.add(lo * p.n + cols.start),
                            ldc: 4 * p.n,
                            rows: hi - lo,
                            list: list.as_mut_ptr() as *mut u8,
                            seg: seg.as_mut_ptr() as *mut u8,
                            mode: mode as usize,
                            kb,
                        };
                        (self.kernel)(&args);
                    }
                }
                if let Some(epi) = epi {
                    epi(Block {
                        rows: r..hi,
                        cols: cols.clone(),
                        // SAFETY: inside C.
                        c: unsafe { c.0.add(r * p.n + cols.start) },
                    });
                }
                r = hi;
            }
        });
    }

    /// `C = op(A)·B` with `op(A)` compacted around `bg` (see the module documentation), over
    /// `threads` threads: a block of C's rows each (tasks of 64 rows from [`DEALT_MIN_ROWS`]
    /// rows a thread), or of its columns when it has fewer rows than threads (batch 1). `epi`
    /// is called on every block of C once final, on the thread that computed it; blocks hold
    /// whole rows unless [`Sparse::splits_columns`].
    #[allow(clippy::too_many_arguments)]
    pub fn product(
        &self,
        threads: usize,
        p: Problem,
        bg: f32,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        epi: Option<&BlockFn>,
    ) -> Result<(), String> {
        let row = self.background_row(threads, p, bg, b)?;
        self.product_from_row(threads, p, bg, &row, a, b, c, epi)
    }

    /// The first term of [`Sparse::product`], `bg · Σ_e B[e, :]` (the `n` floats every row of
    /// C starts from), computed as the kernel computes any row: the same for a given `bg` and
    /// B whatever the threads, so a caller whose B does not change may keep it
    /// ([`Sparse::product_from_row`]).
    pub fn background_row(
        &self,
        threads: usize,
        p: Problem,
        bg: f32,
        b: &[f32],
    ) -> Result<Vec<f32>, String> {
        let Problem { n, k, .. } = p;
        if !p.fits() || b.len() < k * n {
            return Err(format!(
                "sparse product by {k}×{n}: B of {} elements",
                b.len()
            ));
        }
        let mut init = vec![0.0f32; n];
        if bg == 0.0 {
            return Ok(init);
        }
        // The kernel on one row of k entries all equal to bg, its columns split between the
        // threads.
        let threads = self.threads_for(threads, 1, n, k);
        let row = vec![bg; k];
        let sum = Problem {
            ta: false,
            m: 1,
            n,
            k,
        };
        let zeros = vec![0.0f32; n];
        let out = SendPtr(init.as_mut_ptr());
        by_columns(threads, n, &|cols| {
            // SAFETY: one row of k entries, B as given, disjoint columns of init.
            unsafe { self.block(&sum, 0.0, &row, b, &zeros, out, (0..1, cols, 0..k), None) };
        });
        Ok(init)
    }

    /// [`Sparse::product`] from its first term `row` ([`Sparse::background_row`] of the same
    /// `bg` and B).
    #[allow(clippy::too_many_arguments)]
    pub fn product_from_row(
        &self,
        threads: usize,
        p: Problem,
        bg: f32,
        row: &[f32],
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        epi: Option<&BlockFn>,
    ) -> Result<(), String> {
        let Problem { m, n, k, .. } = p;
        if !p.fits() || a.len() < m * k || b.len() < k * n || c.len() < m * n || row.len() < n {
            return Err(format!(
                "sparse product {m}×{k}·{k}×{n}: operands of {}, {}, {} elements, first row of {}",
                a.len(),
                b.len(),
                c.len(),
                row.len()
            ));
        }
        let threads = self.threads_for(threads, m, n, k);
        if m < FEW_ROWS && k >= SPLIT_DEPTH_MIN {
            self.by_depth(threads, p, bg, row, a, b, c, epi);
            return Ok(());
        }
        let c_ptr = SendPtr(c.as_mut_ptr());
        if Self::splits_columns(threads, m) {
            by_columns(threads, n, &|cols| {
                // SAFETY: disjoint column blocks of C.
                unsafe { self.block(&p, bg, a, b, row, c_ptr, (0..m, cols, 0..k), epi) };
            });
        } else {
            let chunk = if threads > 1 && m >= DEALT_MIN_ROWS * threads {
                ROWS_PER_CALL
            } else {
                m.div_ceil(threads)
            };
            super::workers::run(m.div_ceil(chunk), &|t| {
                let rows = t * chunk..m.min((t + 1) * chunk);
                // SAFETY: disjoint row blocks of C.
                unsafe { self.block(&p, bg, a, b, row, c_ptr, (rows, 0..n, 0..k), epi) };
            });
        }
        Ok(())
    }

    /// [`Sparse::product_from_row`] in two halves of the depth ([`SPLIT_DEPTH_MIN`]): the
    /// first from `row` into C, the second from 0 into a buffer of its own, on two tasks when
    /// `threads` > 1, then added into C, which `epi` gets whole. Operands checked by the caller.
    #[allow(clippy::too_many_arguments)]
    fn by_depth(
        &self,
        threads: usize,
        p: Problem,
        bg: f32,
        row: &[f32],
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        epi: Option<&BlockFn>,
    ) {
        let Problem { m, n, k, .. } = p;
        let half = (k / 2).next_multiple_of(p.depth_block());
        let mut second = vec![0.0f32; m * n];
        let outs = [SendPtr(c.as_mut_ptr()), SendPtr(second.as_mut_ptr())];
        let zeros = vec![0.0f32; n];
        let part = |t: usize| {
            let (init, depth) = if t == 0 {
                (row, 0..half)
            } else {
                (&zeros[..], half..k)
            };
            // SAFETY: each half writes its own m×n buffer.
            unsafe { self.block(&p, bg, a, b, init, outs[t], (0..m, 0..n, depth), None) };
        };
        if threads > 1 {
            super::workers::run(2, &part);
        } else {
            (0..2).for_each(part);
        }
        for (x, y) in c.iter_mut().zip(&second) {
            *x += *y;
        }
        if let Some(epi) = epi {
            epi(Block {
                rows: 0..m,
                cols: 0..n,
                c: c.as_mut_ptr(),
            });
        }
    }

    /// The tasks an `m×k·k×n` product is split into: one below [`PAR_MIN_MACS`] (from
    /// [`PAR_MIN_FLOPS_FEW_ROWS`] when it splits by columns), else `threads`.
    fn threads_for(&self, threads: usize, m: usize, n: usize, k: usize) -> usize {
        let min_macs = if Self::splits_columns(threads, m) {
            PAR_MIN_FLOPS_FEW_ROWS / 8
        } else {
            PAR_MIN_MACS
        };
        if m * n * k / 4 < min_macs {
            1
        } else {
            threads.max(1)
        }
    }

    /// Whether [`Sparse::product`] splits C by columns (fewer rows than threads).
    pub fn splits_columns(threads: usize, m: usize) -> bool {
        threads > 1 && m < threads
    }

    /// Whether every block [`Sparse::product`] hands to its epilogue holds whole rows of C on
    /// `threads` threads: unless it splits C by columns (a product split by depth hands C
    /// whole).
    pub fn hands_whole_rows(threads: usize, m: usize, k: usize) -> bool {
        (m < FEW_ROWS && k >= SPLIT_DEPTH_MIN) || !Self::splits_columns(threads, m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic matrix of `len` entries, `density` of them not `bg`.
    /// Its first entry is `bg`, as an image's corner is.
    fn sparse(len: usize, density: f32, bg: f32, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (s >> 40) as f32 / (1u64 << 24) as f32;
                if u < density {
                    ((s >> 16) & 0xffff) as f32 / 65536.0 * 2.0 - 1.0
                } else {
                    bg
                }
            })
            .enumerate()
            .map(|(i, x)| if i == 0 { bg } else { x })
            .collect()
    }

    /// op(A)·B in f64, the reference.
    fn reference(p: Problem, a: &[f32], b: &[f32]) -> Vec<f64> {
        let mut c = vec![0.0f64; p.m * p.n];
        for r in 0..p.m {
            for e in 0..p.k {
                let x = if p.ta { a[e * p.m + r] } else { a[r * p.k + e] } as f64;
                for j in 0..p.n {
                    c[r * p.n + j] += x * b[e * p.n + j] as f64;
                }
            }
        }
        c
    }

    #[test]
    fn products_match_the_reference_and_do_not_depend_on_the_threads() {
        let s = Sparse::new().unwrap();
        let shapes = [
            (false, 64, 128, 784),
            (true, 784, 128, 64),
            (false, 1, 128, 784),
            (false, 5, 45, 100),
            (true, 33, 13, 40),
            (false, 3, 3, 300),
            // Split by depth (SPLIT_DEPTH_MIN).
            (false, 1, 128, 2084),
            (true, 2, 37, 1100),
            (false, 3, 9, 1027),
        ];
        for (seed, &(ta, m, n, k)) in shapes.iter().enumerate() {
            for bg in [0.0f32, -1.0] {
                let p = Problem { ta, m, n, k };
                let a = sparse(m * k, 0.2, bg, seed as u64);
                let b = sparse(k * n, 1.0, 0.0, 100 + seed as u64);
                let want = reference(p, &a, &b);
                let mut first: Option<Vec<f32>> = None;
                for threads in 1..=3 {
                    let mut c = vec![f32::NAN; m * n];
                    let seen = std::sync::Mutex::new(vec![0u8; m * n]);
                    let epi = |blk: Block| {
                        let mut seen = seen.lock().unwrap();
                        for r in blk.rows.clone() {
                            for j in blk.cols.clone() {
                                seen[r * n + j] += 1;
                            }
                        }
                    };
                    s.product(threads, p, bg, &a, &b, &mut c, Some(&epi))
                        .unwrap();
                    assert!(
                        seen.into_inner().unwrap().iter().all(|&x| x == 1),
                        "{p:?}: every element handed to the epilogue once"
                    );
                    let scale: f64 = b.iter().map(|x| x.abs() as f64).sum::<f64>() / n as f64;
                    for (i, (&got, &w)) in c.iter().zip(&want).enumerate() {
                        assert!(
                            (got as f64 - w).abs() <= 1e-5 * (1.0 + scale),
                            "{p:?} bg {bg} threads {threads}: C[{i}] = {got}, want {w}"
                        );
                    }
                    match &first {
                        None => first = Some(c),
                        Some(f) => assert!(
                            f.iter().zip(&c).all(|(x, y)| x.to_bits() == y.to_bits()),
                            "{p:?}: {threads} threads changed the bits"
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn a_kept_background_row_gives_the_bits_of_a_product_that_computes_it() {
        let s = Sparse::new().unwrap();
        for (seed, (m, n, k)) in [(1, 128, 784), (3, 45, 100), (64, 128, 784)]
            .into_iter()
            .enumerate()
        {
            let p = Problem { ta: false, m, n, k };
            let b = sparse(k * n, 1.0, 0.0, 200 + seed as u64);
            for bg in [-1.0f32, 0.5, 0.0] {
                let a = sparse(m * k, 0.2, bg, 300 + seed as u64);
                let mut want = vec![0.0f32; m * n];
                s.product(2, p, bg, &a, &b, &mut want, None).unwrap();
                let row = s.background_row(1, p, bg, &b).unwrap();
                for threads in [1, 2] {
                    let mut got = vec![f32::NAN; m * n];
                    s.product_from_row(threads, p, bg, &row, &a, &b, &mut got, None)
                        .unwrap();
                    assert!(
                        got.iter()
                            .zip(&want)
                            .all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{p:?} bg {bg} threads {threads}"
                    );
                }
            }
        }
        let p = Problem {
            ta: false,
            m: 1,
            n: 8,
            k: 64,
        };
        let short = s.product_from_row(
            1,
            p,
            -1.0,
            &[0.0; 7],
            &[0.0; 64],
            &[0.0; 512],
            &mut [0.0; 8],
            None,
        );
        assert!(short.is_err());
    }

    #[test]
    fn the_background_is_found_only_in_sparse_matrices() {
        assert_eq!(
            background(&sparse(4096, 0.2, 0.0, 1), false, MAX_DENSITY),
            Some(0.0)
        );
        assert_eq!(
            background(&sparse(4096, 0.2, -1.0, 2), false, MAX_DENSITY),
            Some(-1.0)
        );
        assert_eq!(
            background(&sparse(4096, 0.2, -1.0, 2), true, MAX_DENSITY),
            None
        );
        assert_eq!(
            background(&sparse(4096, 0.6, 0.0, 3), false, MAX_DENSITY),
            None
        );
        assert_eq!(background(&[f32::NAN; 64], false, MAX_DENSITY), None);
        assert_eq!(background(&[], false, MAX_DENSITY), None);
        // A batch-1 product compacts only around 0 ...
        let one = Problem {
            ta: false,
            m: 1,
            n: 8,
            k: 784,
        };
        assert_eq!(one.background(&sparse(784, 0.2, -1.0, 4), false), None);
        assert_eq!(one.background(&sparse(784, 0.2, 0.0, 5), false), Some(0.0));
        // ... unless the caller keeps the background's row of the product.
        assert_eq!(one.background(&sparse(784, 0.2, -1.0, 4), true), Some(-1.0));
        // ... and up to a higher density than a batch does (a ReLU's output).
        assert_eq!(one.background(&sparse(784, 0.55, 0.0, 6), false), Some(0.0));
        assert_eq!(one.background(&sparse(784, 0.8, 0.0, 7), false), None);
        let batch = Problem { m: 8, ..one };
        assert_eq!(
            batch.background(&sparse(8 * 784, 0.55, 0.0, 8), false),
            None
        );
        // A wide product (the autoencoder decoder's, 784 columns) stays compacted at the
        // density its ReLU input reaches late in training, not much beyond.
        let wide = Problem {
            ta: false,
            m: 128,
            n: 784,
            k: 128,
        };
        assert_eq!(
            wide.background(&sparse(128 * 128, 0.78, 0.0, 9), false),
            Some(0.0)
        );
        assert_eq!(
            wide.background(&sparse(128 * 128, 0.92, 0.0, 10), false),
            None
        );
    }
}
