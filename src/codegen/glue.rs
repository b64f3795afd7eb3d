//! Steps built on the JIT'd GEMM and im2col/col2im (`super::gemm`, `super::im2col`): `MatMul`
//! and the three convolution ops. The numeric loops are Cranelift code; this file only slices
//! buffers and splits work across threads:
//!
//! - `MatMul` splits C by rows or columns (`Gemm::gemm_threads`: each element is summed in the
//!   same order whatever the split, so results do not depend on the thread count); a left
//!   operand that a sample shows to be mostly one value (images' background) goes to the
//!   compacted product of `super::sparse` instead, split the same way;
//! - `Conv2d` and `Conv2dGradInput` split the images (each worker reuses one column buffer,
//!   which stays in cache); with fewer images than threads, `Conv2d` splits each image's
//!   product by rows instead (batch-1 inference);
//! - `Conv2dGradWeight` builds the columns of all images in parallel, then splits the rows of
//!   dW, each worker summing the images' products into its rows in image order (bit-identical
//!   run to run and for any thread count, as for `MatMul`).

use std::sync::OnceLock;

use super::epilogue::EpiStep;
use super::gemm::{Block, BlockFn, Gemm};
use super::im2col::{ConvGeom, Im2col};
use super::masked::{self, Masked};
use super::sparse::{self, Sparse};
use super::CodegenError;

/// The process-wide compiled GEMM and im2col kernels (compiled once, shared by every graph).
pub struct Lib {
    pub gemm: Gemm,
    pub im2col: Im2col,
    pub sparse: Sparse,
    pub masked: Masked,
}

pub fn lib() -> Result<&'static Lib, CodegenError> {
    static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();
    LIB.get_or_init(|| {
        Ok(Lib {
            gemm: Gemm::new()?,
            im2col: Im2col::new()?,
            sparse: Sparse::new()?,
            masked: Masked::new()?,
        })
    })
    .as_ref()
    .map_err(|e| CodegenError::Cranelift(e.clone()))
}

/// A dimension that is `per · batch` when batched, else `per`.
#[derive(Clone, Copy, Debug)]
pub struct Dim {
    pub per: usize,
    pub batched: bool,
}

impl std::fmt::Display for Dim {
    /// `B·per` (or `B`) when batched, else the number.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.batched, self.per) {
            (true, 1) => f.write_str("B"),
            (true, p) => write!(f, "B·{p}"),
            (false, p) => write!(f, "{p}"),
        }
    }
}

impl Dim {
    pub fn at(self, batch: usize) -> usize {
        if self.batched {
            self.per * batch
        } else {
            self.per
        }
    }
}

/// `c[m×n] = op(a)·op(b)` between table slots (see `Gemm::gemm` for `ta`/`tb`).
#[derive(Clone, Debug)]
pub struct MatMulStep {
    pub m: Dim,
    pub n: usize,
    pub k: Dim,
    pub ta: bool,
    pub tb: bool,
    pub a: usize,
    pub b: usize,
    pub c: usize,
    /// Applied to each block of C as the GEMM finishes it.
    pub epi: Option<EpiStep>,
}

/// Which convolution op a [`ConvStep`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKind {
    Forward,
    GradInput,
    GradWeight,
}

/// A convolution: `x`/`dx` geometry `geom`, `o` output channels, slots of its two inputs and
/// output (in the node's order), and the scratch slot for columns (`[B, C·k·k, OH·OW]`).
#[derive(Clone, Debug)]
pub struct ConvStep {
    pub kind: ConvKind,
    pub geom: ConvGeom,
    pub o: usize,
    pub ins: [usize; 2],
    pub out: usize,
    pub cols: usize,
    /// Applied to each image's output right after its product (forward only).
    pub epi: Option<EpiStep>,
}

/// Minimum multiply-adds before a product is split across threads.
const PARALLEL_WORK: usize = 1 << 18;

/// A table of raw buffer pointers shared with worker threads.
#[derive(Clone, Copy)]
pub struct Table<'t>(pub &'t [*mut u8]);

// SAFETY: the workers write disjoint parts of distinct buffers (rows of C, images), and the
// table outlives the scoped threads.
unsafe impl Send for Table<'_> {}
unsafe impl Sync for Table<'_> {}

impl Table<'_> {
    /// # Safety
    /// Slot `s` must point at `start + len` live f32s.
    pub(super) unsafe fn slice(&self, s: usize, start: usize, len: usize) -> &[f32] {
        unsafe { std::slice::from_raw_parts((self.0[s] as *const f32).add(start), len) }
    }
    /// # Safety
    /// As [`Table::slice`], and no other live reference may overlap the range.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn slice_mut(&self, s: usize, start: usize, len: usize) -> &mut [f32] {
        unsafe { std::slice::from_raw_parts_mut((self.0[s] as *mut f32).add(start), len) }
    }
}

/// Runs `f(lo, hi)` over `0..n` split into at most `threads` contiguous chunks, multiples of
/// `align`; the first error wins.
pub(super) fn split(
    n: usize,
    threads: usize,
    align: usize,
    f: impl Fn(usize, usize) -> Result<(), String> + Sync,
) -> Result<(), String> {
    let chunk = n.div_ceil(threads.max(1)).div_ceil(align) * align;
    split_by(n, if threads <= 1 { n } else { chunk }, f)
}

/// Runs `f(lo, hi)` over `0..n` in contiguous chunks of `chunk` (the last may be shorter), one
/// task each on the [`super::workers`]; an error of one of them is returned.
fn split_by(
    n: usize,
    chunk: usize,
    f: impl Fn(usize, usize) -> Result<(), String> + Sync,
) -> Result<(), String> {
    if chunk == 0 || chunk >= n {
        return f(0, n);
    }
    let first_error = std::sync::Mutex::new(None);
    super::workers::run(n.div_ceil(chunk), &|t| {
        let lo = t * chunk;
        if let Err(e) = f(lo, (lo + chunk).min(n)) {
            first_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(e);
        }
    });
    match first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The first row of a compacted product ([`Sparse::background_row`]) kept from one run to the
/// next, with the bits of the background it is for: only for a product whose B is fixed
/// (a parameter the executor owns, [`crate::exec::Executor::hold_params`]).
pub type KeptRow = std::sync::Mutex<Option<(u32, Vec<f32>)>>;

impl MatMulStep {
    /// Runs the product; `after`, when given, is called on each block of C once final, after
    /// the step's own epilogue (an optimizer update fused into a weight gradient). With
    /// `sparse`, a left operand that a sample shows to be mostly one value is compacted
    /// ([`super::sparse`]) rather than multiplied densely, and a product whose epilogue is
    /// relu's gradient computes only the entries the ReLU let through ([`super::masked`]); `kept`, given when B does not change
    /// from one run to the next, holds the compacted product's first row, so that a batch of
    /// one may be compacted around a background other than 0 (MNIST's −1 once normalized).
    ///
    /// # Safety
    /// The slots must point at buffers of the sizes the node's types give for `batch`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run(
        &self,
        t: Table,
        batch: usize,
        threads: usize,
        sparse: bool,
        kept: Option<&KeptRow>,
        lib: &Lib,
        after: Option<&BlockFn>,
    ) -> Result<(), String> {
        let (m, n, k) = (self.m.at(batch), self.n, self.k.at(batch));
        // SAFETY: a has m·k, b k·n, c m·n elements, and c is no input of this node.
        let (a, b, c) = unsafe {
            (
                t.slice(self.a, 0, m * k),
                t.slice(self.b, 0, k * n),
                t.slice_mut(self.c, 0, m * n),
            )
        };
        let run = match &self.epi {
            Some(e) => Some((e, e.kernel_fn()?)),
            None => None,
        };
        let epi = |blk: Block| {
            if let Some((e, run)) = run {
                let offset = blk.rows.start * n + blk.cols.start;
                let (rows, cols) = (blk.rows.clone(), blk.cols.clone());
                // SAFETY: each block is a rectangle of C handed over by the product once
                // final, of whole rows when the epilogue needs them (checked).
                unsafe { e.apply(run, t, batch, blk.c, n, rows, cols, offset) };
            }
            if let Some(after) = after {
                after(blk);
            }
        };
        let epi: Option<&BlockFn> = if run.is_none() && after.is_none() {
            None
        } else {
            Some(&epi)
        };
        // A gradient masked by a ReLU: only the entries its epilogue keeps are computed.
        let relu_mask = self.epi.as_ref().and_then(EpiStep::relu_mask);
        if let Some(mask) = relu_mask.filter(|_| sparse && self.tb && !self.ta && after.is_none()) {
            let p = masked::Problem { m, n, k };
            // SAFETY: the epilogue's auxiliary input is laid out like C.
            let h = unsafe { t.slice(mask, 0, m * n) };
            if lib.masked.product(threads, p, a, b, h, c)? {
                return Ok(());
            }
        }
        // A left operand that is mostly one value (images' background) is compacted.
        let p = sparse::Problem {
            ta: self.ta,
            m,
            n,
            k,
        };
        // Whether to compact depends on A alone, never on `threads`: the compacted and the
        // dense product sum in different orders where the depth is split or `bg ≠ 0`, and
        // results are the same whatever `--threads` is. An epilogue over whole rows (a
        // cross-entropy gradient) cannot follow a split by columns: such a product runs on
        // one thread.
        let whole_rows = run.is_some_and(|(e, _)| e.whole_rows);
        if sparse && !self.tb && p.fits() {
            if let Some(bg) = p.background(a, kept.is_some()) {
                let threads = if whole_rows && !Sparse::hands_whole_rows(threads, m, k) {
                    1
                } else {
                    threads
                };
                let Some(kept) = kept else {
                    return lib.sparse.product(threads, p, bg, a, b, c, epi);
                };
                let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                let row = match kept.take() {
                    Some((bits, row)) if bits == bg.to_bits() => row,
                    _ => lib.sparse.background_row(threads, p, bg, b)?,
                };
                let done = lib
                    .sparse
                    .product_from_row(threads, p, bg, &row, a, b, c, epi);
                *kept = Some((bg.to_bits(), row));
                return done;
            }
        }
        if let Some((e, run)) =
            run.filter(|(e, _)| e.whole_rows && !lib.gemm.blocks_hold_whole_rows(threads, m, n, k))
        {
            // An epilogue over whole rows (a cross-entropy gradient) on a product whose blocks
            // are not: after the product, over C's rows split between the threads.
            lib.gemm
                .gemm_threads(threads, self.ta, self.tb, m, n, k, a, b, c, false)?;
            let c_ptr = c.as_mut_ptr() as usize;
            return split(m, threads, 1, |lo, hi| {
                // SAFETY: rows lo..hi of C, final, each in one task.
                unsafe {
                    e.apply(
                        run,
                        t,
                        batch,
                        (c_ptr as *mut f32).add(lo * n),
                        n,
                        lo..hi,
                        0..n,
                        lo * n,
                    )
                };
                Ok(())
            });
        }
        lib.gemm
            .gemm_with(threads, self.ta, self.tb, m, n, k, a, b, c, false, epi)
    }
}

impl ConvStep {
    /// # Safety
    /// The slots must point at buffers of the sizes the node's types give for `batch`, and the
    /// column scratch at `batch · C·k·k · OH·OW` floats.
    pub unsafe fn run(
        &self,
        t: Table,
        batch: usize,
        threads: usize,
        lib: &Lib,
    ) -> Result<(), String> {
        let g = &self.geom;
        let (ckk, pos) = g.cols_shape()?;
        let (img, cols, ylen) = (g.image_len(), ckk * pos, self.o * pos);
        let wlen = self.o * ckk;
        let threads = if batch * ylen * ckk >= PARALLEL_WORK {
            threads
        } else {
            1
        };
        let epi = match &self.epi {
            Some(e) => Some((e, e.kernel_fn()?)),
            None => None,
        };
        match self.kind {
            ConvKind::Forward => split(batch, threads, 1, |lo, hi| {
                // Fewer images than threads (batch-1 inference): each image's product is
                // split instead, by rows (output channels), with the same sums.
                let inner = if batch < threads { threads } else { 1 };
                for b in lo..hi {
                    // SAFETY: image b of x and its output are disjoint per worker; each
                    // worker reuses the columns of its first image (kept hot in cache).
                    let (x, w, col, y) = unsafe {
                        (
                            t.slice(self.ins[0], b * img, img),
                            t.slice(self.ins[1], 0, wlen),
                            t.slice_mut(self.cols, lo * cols, cols),
                            t.slice_mut(self.out, b * ylen, ylen),
                        )
                    };
                    lib.im2col.im2col(g, x, col)?;
                    lib.gemm
                        .gemm_threads(inner, false, false, self.o, pos, ckk, w, col, y, false)?;
                    if let Some((e, run)) = epi {
                        // SAFETY: y is image b's output, o×pos at offset b·ylen of the value.
                        unsafe {
                            e.apply(
                                run,
                                t,
                                batch,
                                y.as_mut_ptr(),
                                pos,
                                0..self.o,
                                0..pos,
                                b * ylen,
                            )
                        };
                    }
                }
                Ok(())
            }),
            ConvKind::GradInput => split(batch, threads, 1, |lo, hi| {
                for b in lo..hi {
                    // SAFETY: as above; ins = [dy, w], out = dx.
                    let (dy, w, col, dx) = unsafe {
                        (
                            t.slice(self.ins[0], b * ylen, ylen),
                            t.slice(self.ins[1], 0, wlen),
                            t.slice_mut(self.cols, lo * cols, cols),
                            t.slice_mut(self.out, b * img, img),
                        )
                    };
                    lib.gemm
                        .gemm(true, false, ckk, pos, self.o, w, dy, col, false)?;
                    dx.fill(0.0);
                    lib.im2col.col2im(g, col, dx)?;
                }
                Ok(())
            }),
            ConvKind::GradWeight => {
                split(batch, threads, 1, |lo, hi| {
                    for b in lo..hi {
                        // SAFETY: image b of x and its columns, disjoint per worker.
                        let (x, col) = unsafe {
                            (
                                t.slice(self.ins[0], b * img, img),
                                t.slice_mut(self.cols, b * cols, cols),
                            )
                        };
                        lib.im2col.im2col(g, x, col)?;
                    }
                    Ok(())
                })?;
                // Rows lo..hi of dW (O×CKK) per worker, each summing the images in order.
                split_by(self.o, lib.gemm.row_chunk(self.o, threads), |lo, hi| {
                    // SAFETY: ins = [x, dy], out = dw; rows lo..hi of dw are this worker's,
                    // the columns are only read from here.
                    let dw = unsafe { t.slice_mut(self.out, lo * ckk, (hi - lo) * ckk) };
                    for b in 0..batch {
                        let (dy, col) = unsafe {
                            (
                                t.slice(self.ins[1], b * ylen + lo * pos, (hi - lo) * pos),
                                t.slice(self.cols, b * cols, cols),
                            )
                        };
                        lib.gemm
                            .gemm(false, true, hi - lo, ckk, pos, dy, col, dw, b > 0)?;
                    }
                    Ok(())
                })
            }
        }
    }
}
