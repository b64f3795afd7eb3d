//! The gradients of a stride-1 convolution whose output gradient `dy` is mostly zeros: behind a
//! 2×2 max pooling only the maximum of each window gets a gradient, and behind a ReLU only
//! the positive ones, so the CNN's `dy` of its second convolution is 12–20% non-zero. Winograd
//! ([`super::winograd`]) transforms `dy` into dense tiles and multiplies all of it; here only
//! its non-zero entries are multiplied, by the segments kernel of [`super::sparse`]
//! ([`Sparse::segments`]): each row of a result is a sum over runs of a list of entries,
//! each run against its own rows of B.
//!
//! - Input gradient, `dx[c, y, x] = Σ_{o, ky, kx} w[o, c, ky, kx] · dy[o, y + p − ky, x + p − kx]`,
//!   image by image: one list per position `q` of `dy`, its non-zero channels `o` in order;
//!   a row per position of `dx`, whose runs are the lists of the `k²` positions its window
//!   reaches, against the weights of that tap (`B = wᵀ`, `[tap][o][c]`). The rows are
//!   `dx`'s channels side by side (`[y][x][c]`), transposed into `dx` after.
//! - Weight gradient, `dw[o, c, ky, kx] = Σ_images Σ_{y, x} dy[o, y, x] · x[c, y + ky − p, x + kx − p]`:
//!   one list per channel `o` of `dy` over the positions of a run of images, run once per
//!   tap against the images bordered by `p` with their channels side by side (`B`,
//!   `[image][y][x][c]`), shifted by the tap. A row per `(o, tap)`.
//!
//! Each element is a sum in a fixed order (taps, then channels; or positions within a run of
//! [`RUN_IMAGES`] images, the runs of a group, then the groups in order), whatever the
//! threads, so results do not depend on the thread count. They differ from Winograd's and the interpreter's in rounding,
//! and skip `0 · w` where `w` is infinite or NaN (as [`super::sparse`] does).
//!
//! Whether `dy` is sparse enough is decided per call from a sample ([`sparse_enough`]).
//!
//! The list building, bordering and transposes are plain Rust (a 4×4 SSE transpose, SSE
//! compares for the non-zero masks); the multiply-adds run on the JIT'd segments kernel. On the
//! MNIST CNN's conv2 (b64, two threads, AMD Zen 4; alternated profiles of `nnc bench
//! examples/mnist_cnn.nn --profile`) the input gradient went from 2,316–2,352 µs a step on
//! Winograd to 2,064–2,190, the weight gradient from 2,760–2,910 to 1,790–1,944, and the
//! training from 5,361–5,540 to 5,692–6,017 samples/s.

use std::cell::RefCell;

use super::sparse::{entry, Segment, Sparse};

/// Share of non-zero entries of `dy` up to which the input gradient runs here. Measured on the
/// MNIST CNN's second convolution (64 → 32 channels, 14×14, b64, two threads, AMD Zen 4, a
/// temporary harness of the compiled step alone, `dy` uniformly scattered), time against
/// Winograd's: 0.73 at density 0.1, 0.87 at 0.15, 1.05 at 0.2, 1.26 at 0.3. In training that
/// `dy` is 12–20% non-zero (a 2×2 max pooling passes a quarter at most, its ReLU fewer).
pub const MAX_DENSITY_INPUT: f32 = 0.18;
/// As [`MAX_DENSITY_INPUT`] for the weight gradient: 0.41 of Winograd's time at density 0.1,
/// 0.54 at 0.15, 0.64 at 0.2, 0.76 at 0.25, 0.90 at 0.3.
pub const MAX_DENSITY_WEIGHT: f32 = 0.33;

/// Images per run of the weight gradient: the bordered images of a run (8 × 16 × 16 × 32
/// floats for the CNN, 256 KiB) stay in L2 while every row of the run's result reads them.
/// Consecutive runs are summed in groups ([`GROUPS`]).
pub const RUN_IMAGES: usize = 8;

/// Groups of runs of the weight gradient, each with its own `o·k²·c` result: the tasks for the
/// threads, and a bound on that memory whatever the batch.
const GROUPS: usize = 8;

/// A stride-1 convolution: `x` is `c × h × w`, `dy` `o × oh × ow`, the window `k × k` with
/// padding `pad`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub k: usize,
    pub pad: usize,
}

impl Geom {
    /// Output height and width (stride 1).
    pub fn out_hw(&self) -> (usize, usize) {
        (
            (self.h + 2 * self.pad + 1).saturating_sub(self.k),
            (self.w + 2 * self.pad + 1).saturating_sub(self.k),
        )
    }

    fn taps(&self) -> usize {
        self.k * self.k
    }
}

/// Whether the list entries of [`grad_input`] and [`grad_weight`] fit their i32 offsets for
/// `g` (a run of [`RUN_IMAGES`] bordered images of the weight gradient, in bytes).
pub fn fits(g: &Geom) -> bool {
    let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
    let (oh, ow) = g.out_hw();
    oh > 0
        && ow > 0
        && g.k > 0
        && RUN_IMAGES
            .checked_mul(hp * wp)
            .and_then(|v| v.checked_mul(4 * g.c))
            .is_some_and(|v| v < i32::MAX as usize)
        && (g.k * g.k * g.o * 4 * g.c) < i32::MAX as usize
}

/// Whether at most `max_density` of `dy` is non-zero, judged from about a thousand entries at
/// an odd stride.
pub fn sparse_enough(dy: &[f32], max_density: f32) -> bool {
    let (live, seen) = super::masked::sample(dy, |v| v != 0.0);
    seen > 0 && (live as f32) <= max_density * seen as f32
}

/// The bits of the non-zero entries among the first four of `v` (a NaN is non-zero).
#[inline]
fn nonzero4(v: &[f32]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_cmpneq_ps, _mm_loadu_ps, _mm_movemask_ps, _mm_setzero_ps};
        assert!(v.len() >= 4);
        // SAFETY: four floats are there (checked); SSE is part of x86-64.
        unsafe {
            let x = _mm_loadu_ps(v.as_ptr());
            _mm_movemask_ps(_mm_cmpneq_ps(x, _mm_setzero_ps())) as u64
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        (0..4).fold(0, |m, i| m | (((v[i] != 0.0) as u64) << i))
    }
}

/// Calls `f(i, v)` for each non-zero `v = row[i]` (a NaN is non-zero), in order: 64 entries
/// at a time through a bit mask, so that the zeros cost no branch.
fn for_nonzero(row: &[f32], mut f: impl FnMut(usize, f32)) {
    for (k, chunk) in row.chunks(64).enumerate() {
        let mut bits = 0u64;
        let fours = chunk.len() / 4 * 4;
        for i in (0..fours).step_by(4) {
            bits |= nonzero4(&chunk[i..]) << i;
        }
        for (i, &v) in chunk.iter().enumerate().skip(fours) {
            bits |= ((v != 0.0) as u64) << i;
        }
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            f(64 * k + i, chunk[i]);
            bits &= bits - 1;
        }
    }
}

/// `dst[c·dst_stride + r] = src[r·src_stride + c]` for `r < rows`, `c < cols`: four by four
/// through SSE shuffles where they fit, one by one at the edges.
fn transpose(
    src: &[f32],
    (rows, cols, src_stride): (usize, usize, usize),
    dst: &mut [f32],
    dst_stride: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(src.len() > (rows - 1) * src_stride + cols - 1);
    assert!(dst.len() > (cols - 1) * dst_stride + rows - 1);
    let (r4, c4) = (rows / 4 * 4, cols / 4 * 4);
    #[cfg(target_arch = "x86_64")]
    for r in (0..r4).step_by(4) {
        use std::arch::x86_64::*;
        for c in (0..c4).step_by(4) {
            // SAFETY: rows r..r+4 and columns c..c+4 lie inside both (checked above).
            unsafe {
                let at = |i: usize| _mm_loadu_ps(src.as_ptr().add((r + i) * src_stride + c));
                let (a, b, e, d) = (at(0), at(1), at(2), at(3));
                let (t0, t1) = (_mm_unpacklo_ps(a, b), _mm_unpacklo_ps(e, d));
                let (t2, t3) = (_mm_unpackhi_ps(a, b), _mm_unpackhi_ps(e, d));
                let out = dst.as_mut_ptr();
                _mm_storeu_ps(out.add(c * dst_stride + r), _mm_movelh_ps(t0, t1));
                _mm_storeu_ps(out.add((c + 1) * dst_stride + r), _mm_movehl_ps(t1, t0));
                _mm_storeu_ps(out.add((c + 2) * dst_stride + r), _mm_movelh_ps(t2, t3));
                _mm_storeu_ps(out.add((c + 3) * dst_stride + r), _mm_movehl_ps(t3, t2));
            }
        }
    }
    // The edges: the columns right of the blocks in their rows, then whole rows below them
    // (every element where there are no SSE blocks).
    let (r4, c4) = if cfg!(target_arch = "x86_64") {
        (r4, c4)
    } else {
        (0, 0)
    };
    for r in 0..rows {
        let from = if r < r4 { c4 } else { 0 };
        for c in from..cols {
            dst[c * dst_stride + r] = src[r * src_stride + c];
        }
    }
}

/// Asks for `v` to be brought into the cache (a hint; nothing on other targets): a task's next
/// image, while the kernel works on the current one.
fn prefetch(v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in v.chunks(16) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        // SAFETY: a prefetch of an address inside `v` has no effect on the program.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(line.as_ptr() as *const i8) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// Per-thread buffers, grown on demand.
#[derive(Default)]
struct Scratch {
    list: Vec<u64>,
    starts: Vec<u64>,
    segs: Vec<Segment>,
    out: Vec<f32>,
    b: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// C's address, written in disjoint parts by the tasks.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: each task writes only its own images (or runs).
unsafe impl Sync for Out {}

impl Out {
    /// Element `i` (a method, so that a closure captures the whole `Out`).
    ///
    /// # Safety
    /// `i` is inside the buffer.
    unsafe fn at(&self, i: usize) -> *mut f32 {
        unsafe { self.0.add(i) }
    }
}

/// Runs `f(lo, hi)` on parts of `0..n` in tasks of `chunk` on the workers (on this thread when
/// `threads` is 1).
fn parts(threads: usize, n: usize, chunk: usize, f: &(dyn Fn(usize, usize) + Sync)) {
    let tasks = n.div_ceil(chunk.max(1));
    let task = |t: usize| f(t * chunk, n.min((t + 1) * chunk));
    if threads > 1 {
        super::workers::run(tasks, &task);
    } else {
        (0..tasks).for_each(task);
    }
}

/// `dx` (`batch × c × h × w`) from `dy` (`batch × o × oh × ow`) and the weights `w`
/// (`o × c × k × k`). See the module documentation.
pub fn grad_input(
    sparse: &Sparse,
    threads: usize,
    batch: usize,
    g: &Geom,
    (dy, w): (&[f32], &[f32]),
    dx: &mut [f32],
) {
    let (oh, ow) = g.out_hw();
    let (q_len, p_len, taps) = (oh * ow, g.h * g.w, g.taps());
    assert!(dy.len() >= batch * g.o * q_len && w.len() >= g.o * g.c * taps);
    assert!(dx.len() >= batch * g.c * p_len);
    // B: the weights as [tap][o][c], one row of c floats per (tap, o).
    let mut wt = vec![0.0f32; taps * g.o * g.c];
    for o in 0..g.o {
        for c in 0..g.c {
            for t in 0..taps {
                wt[(t * g.o + o) * g.c + c] = w[(o * g.c + c) * taps + t];
            }
        }
    }
    // For each position of dx and tap, the position of dy its window reaches there, if any.
    let mut reach = vec![u32::MAX; p_len * taps];
    for y in 0..g.h {
        for x in 0..g.w {
            for ky in 0..g.k {
                for kx in 0..g.k {
                    let (qy, qx) = ((y + g.pad).wrapping_sub(ky), (x + g.pad).wrapping_sub(kx));
                    if qy < oh && qx < ow {
                        reach[((ky * p_len + y * g.w + x) * g.k) + kx] = (qy * ow + qx) as u32;
                    }
                }
            }
        }
    }
    let row_bytes = 4 * g.c;
    let out = Out(dx.as_mut_ptr());
    let (wt, reach) = (&wt, &reach);
    // A few images per task, so that each prefetches its next image's dy.
    let chunk = batch.div_ceil(4 * threads.max(1)).max(1);
    parts(threads, batch, chunk, &|lo, hi| {
        SCRATCH.with_borrow_mut(|s| {
            let Scratch {
                list,
                starts,
                segs,
                out: dxt,
                ..
            } = s;
            // Position q's list in entries q·o .. q·o + count[q].
            list.resize(g.o * q_len, 0);
            starts.resize(q_len, 0);
            segs.clear();
            segs.extend(reach.iter().enumerate().map(|(i, &q)| Segment {
                first: if q == u32::MAX {
                    0
                } else {
                    q as u64 * g.o as u64
                },
                end: 0,
                b_off: ((i / (p_len * g.k) * g.k + i % g.k) * g.o * row_bytes) as u64,
            }));
            dxt.resize(p_len * g.c, 0.0);
            for b in lo..hi {
                let dy_all = dy;
                let dy = &dy[b * g.o * q_len..(b + 1) * g.o * q_len];
                if b + 1 < hi {
                    prefetch(&dy_all[(b + 1) * g.o * q_len..(b + 2) * g.o * q_len]);
                }
                // Each position's non-zero channels, in order.
                let count = &mut starts[..];
                count.fill(0);
                for o in 0..g.o {
                    let e = (o * row_bytes) as i32;
                    for_nonzero(&dy[o * q_len..(o + 1) * q_len], |q, v| {
                        list[q * g.o + count[q] as usize] = entry(e, v);
                        count[q] += 1;
                    });
                }
                for (seg, &q) in segs.iter_mut().zip(reach.iter()) {
                    seg.end = if q == u32::MAX {
                        0
                    } else {
                        seg.first + count[q as usize]
                    };
                }
                // A row of the window's taps at a time, so that their rows of B (k·o·c
                // floats) stay in L1 while every position passes over them.
                for (t, segs) in segs.chunks_exact(p_len * g.k).enumerate() {
                    // SAFETY: every entry's offset picks a row (tap, o) of wt, c floats; dxt
                    // holds p_len rows of c floats.
                    unsafe {
                        sparse.segments(
                            wt.as_ptr(),
                            list,
                            segs,
                            g.k,
                            (dxt.as_mut_ptr(), g.c, g.c),
                            t > 0,
                        )
                    };
                }
                // SAFETY: image b of dx is this task's alone.
                let dx =
                    unsafe { std::slice::from_raw_parts_mut(out.at(b * g.c * p_len), g.c * p_len) };
                transpose(dxt, (p_len, g.c, g.c), dx, p_len);
            }
        })
    });
}

/// `dw` (`o × c × k × k`) from the inputs `x` (`batch × c × h × w`) and `dy`
/// (`batch × o × oh × ow`). See the module documentation. With no image, `dw` is 0.
pub fn grad_weight(
    sparse: &Sparse,
    threads: usize,
    batch: usize,
    g: &Geom,
    (x, dy): (&[f32], &[f32]),
    dw: &mut [f32],
) {
    let (oh, ow) = g.out_hw();
    let (q_len, taps) = (oh * ow, g.taps());
    let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
    let (img_x, img_dy) = (g.c * g.h * g.w, g.o * q_len);
    assert!(x.len() >= batch * img_x && dy.len() >= batch * img_dy);
    assert!(dw.len() >= g.o * g.c * taps);
    let rows = g.o * taps;
    let runs = batch.div_ceil(RUN_IMAGES);
    // Consecutive runs in at most GROUPS groups, each summed into its own result by one task,
    // the groups' results added in order after: the grouping depends on the batch alone.
    let groups = runs.min(GROUPS);
    let per_group = runs.div_ceil(groups.max(1));
    let groups = runs.div_ceil(per_group.max(1));
    let mut sums = vec![0.0f32; groups * rows * g.c];
    let row_bytes = 4 * g.c;
    // Each position of dy's offset in a bordered image of B, in bytes.
    let qoff: Vec<i32> = (0..q_len)
        .map(|q| ((q / ow * wp + q % ow) * row_bytes) as i32)
        .collect();
    let qoff = &qoff;
    let out = Out(sums.as_mut_ptr());
    parts(threads, groups, 1, &|g0, _| {
        let (r0, r1) = (g0 * per_group, runs.min((g0 + 1) * per_group));
        SCRATCH.with_borrow_mut(|s| {
            for run in r0..r1 {
                let (lo, hi) = (run * RUN_IMAGES, batch.min((run + 1) * RUN_IMAGES));
                let n = hi - lo;
                // B: the run's images bordered, channels side by side (only the border
                // zeroed: the buffer may hold another call's values).
                let img_b = hp * wp * g.c;
                if s.b.len() < n * img_b {
                    s.b.resize(n * img_b, 0.0);
                }
                for i in 0..n {
                    let xi = &x[(lo + i) * img_x..(lo + i + 1) * img_x];
                    let bi = &mut s.b[i * img_b..(i + 1) * img_b];
                    bi[..g.pad * wp * g.c].fill(0.0);
                    bi[(g.pad + g.h) * wp * g.c..].fill(0.0);
                    for y in 0..g.h {
                        let row = &mut bi[(y + g.pad) * wp * g.c..(y + g.pad + 1) * wp * g.c];
                        row[..g.pad * g.c].fill(0.0);
                        row[(g.pad + g.w) * g.c..].fill(0.0);
                    }
                    // Four channels at a time over the whole image: four streams of x.
                    let hw = g.h * g.w;
                    for c0 in (0..g.c).step_by(4) {
                        let rows = 4.min(g.c - c0);
                        for y in 0..g.h {
                            let at = ((y + g.pad) * wp + g.pad) * g.c + c0;
                            let dst = &mut bi[at..at + (g.w - 1) * g.c + rows];
                            transpose(&xi[c0 * hw + y * g.w..], (rows, g.w, hw), dst, g.c);
                        }
                    }
                }
                // One list per channel of dy over the run's positions, in order; channel o's
                // entries of image i start at starts[o·(n + 1) + i].
                s.list.resize(n * img_dy, 0);
                s.starts.resize(g.o * (n + 1), 0);
                let mut len = 0;
                for o in 0..g.o {
                    for i in 0..n {
                        s.starts[o * (n + 1) + i] = len as u64;
                        let base = (i * img_b * 4) as i32;
                        let row = &dy[(lo + i) * img_dy + o * q_len..][..q_len];
                        let list = &mut s.list;
                        for_nonzero(row, |q, v| {
                            list[len] = entry(base + qoff[q], v);
                            len += 1;
                        });
                    }
                    s.starts[o * (n + 1) + n] = len as u64;
                }
                // Image by image (so that its bordered channels stay in cache while every row
                // passes over them), a row per (o, tap): channel o's entries of the image
                // against B shifted by the tap.
                for i in 0..n {
                    s.segs.clear();
                    for o in 0..g.o {
                        let at = o * (n + 1) + i;
                        let (first, end) = (s.starts[at], s.starts[at + 1]);
                        for ky in 0..g.k {
                            for kx in 0..g.k {
                                s.segs.push(Segment {
                                    first,
                                    end,
                                    b_off: ((ky * wp + kx) * row_bytes) as u64,
                                });
                            }
                        }
                    }
                    // SAFETY: every entry plus its tap's shift picks a row of c floats inside
                    // B (y + ky < hp, x + kx < wp); this run's rows × c floats of `sums` are
                    // its own.
                    unsafe {
                        sparse.segments(
                            s.b.as_ptr(),
                            &s.list,
                            &s.segs,
                            1,
                            (out.at(g0 * rows * g.c), g.c, g.c),
                            run > r0 || i > 0,
                        )
                    };
                }
            }
        })
    });
    // The groups in order, then from [o][tap][c] to [o][c][tap].
    for o in 0..g.o {
        for t in 0..taps {
            for c in 0..g.c {
                let i = (o * taps + t) * g.c + c;
                let mut v = 0.0f32;
                for group in 0..groups {
                    v += sums[group * rows * g.c + i];
                }
                dw[(o * g.c + c) * taps + t] = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in −1..1, about `density` of them non-zero.
    fn values(len: usize, density: f64, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let u = (s >> 11) as f64 / (1u64 << 53) as f64;
                if u < density {
                    ((s >> 20) % 2001) as f32 / 1000.0 - 1.0
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// The two gradients in f64, straight from their definitions.
    fn reference(g: &Geom, batch: usize, x: &[f32], w: &[f32], dy: &[f32]) -> (Vec<f64>, Vec<f64>) {
        let (oh, ow) = g.out_hw();
        let mut dx = vec![0.0f64; batch * g.c * g.h * g.w];
        let mut dw = vec![0.0f64; g.o * g.c * g.k * g.k];
        for b in 0..batch {
            for o in 0..g.o {
                for y in 0..oh {
                    for xx in 0..ow {
                        let d = dy[((b * g.o + o) * oh + y) * ow + xx] as f64;
                        for c in 0..g.c {
                            for ky in 0..g.k {
                                for kx in 0..g.k {
                                    let (iy, ix) = (
                                        (y + ky).wrapping_sub(g.pad),
                                        (xx + kx).wrapping_sub(g.pad),
                                    );
                                    if iy >= g.h || ix >= g.w {
                                        continue;
                                    }
                                    let xi = ((b * g.c + c) * g.h + iy) * g.w + ix;
                                    let wi = ((o * g.c + c) * g.k + ky) * g.k + kx;
                                    dx[xi] += d * w[wi] as f64;
                                    dw[wi] += d * x[xi] as f64;
                                }
                            }
                        }
                    }
                }
            }
        }
        (dx, dw)
    }

    #[test]
    fn gradients_match_the_reference_and_do_not_depend_on_the_threads() {
        let sparse = Sparse::new().unwrap();
        // (c, h, w, o, k, pad) and the batch.
        let geom = |c, h, w, o, k, pad| Geom { c, h, w, o, k, pad };
        let geoms = [
            (geom(32, 14, 14, 64, 3, 1), 9),
            (geom(5, 7, 6, 3, 3, 1), 3),
            (geom(4, 6, 9, 6, 3, 0), 17),
            (geom(3, 5, 5, 2, 3, 2), 1),
            (geom(9, 4, 4, 4, 1, 0), 2),
            // Ten runs of the weight gradient, in five groups of two.
            (geom(4, 5, 5, 3, 3, 1), 80),
        ];
        for (seed, &(g, batch)) in geoms.iter().enumerate() {
            let (oh, ow) = g.out_hw();
            let x = values(batch * g.c * g.h * g.w, 1.0, 10 + seed as u64);
            let w = values(g.o * g.c * g.k * g.k, 1.0, 20 + seed as u64);
            let dy = values(batch * g.o * oh * ow, 0.15, 30 + seed as u64);
            let (want_dx, want_dw) = reference(&g, batch, &x, &w, &dy);
            let mut first: Option<(Vec<f32>, Vec<f32>)> = None;
            for threads in 1..=3 {
                let mut dx = vec![f32::NAN; want_dx.len()];
                let mut dw = vec![f32::NAN; want_dw.len()];
                grad_input(&sparse, threads, batch, &g, (&dy, &w), &mut dx);
                grad_weight(&sparse, threads, batch, &g, (&x, &dy), &mut dw);
                for (what, got, want) in [("dx", &dx, &want_dx), ("dw", &dw, &want_dw)] {
                    for (i, (&a, &b)) in got.iter().zip(want.iter()).enumerate() {
                        assert!(
                            (a as f64 - b).abs() <= 1e-5 * (1.0 + b.abs()),
                            "{g:?} batch {batch} threads {threads}: {what}[{i}] = {a}, want {b}"
                        );
                    }
                }
                match &first {
                    None => first = Some((dx, dw)),
                    Some((fx, fw)) => {
                        let same = |a: &[f32], b: &[f32]| {
                            a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
                        };
                        assert!(
                            same(fx, &dx) && same(fw, &dw),
                            "{g:?}: {threads} threads changed the bits"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn no_image_gives_a_zero_weight_gradient() {
        let g = Geom {
            c: 2,
            h: 4,
            w: 4,
            o: 3,
            k: 3,
            pad: 1,
        };
        let mut dw = vec![f32::NAN; 2 * 3 * 9];
        grad_weight(&Sparse::new().unwrap(), 2, 0, &g, (&[], &[]), &mut dw);
        assert!(dw.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn density_decides() {
        assert!(sparse_enough(&values(10_000, 0.15, 1), MAX_DENSITY_INPUT));
        assert!(!sparse_enough(&values(10_000, 0.25, 2), MAX_DENSITY_INPUT));
        assert!(sparse_enough(&values(10_000, 0.25, 2), MAX_DENSITY_WEIGHT));
        assert!(!sparse_enough(&values(10_000, 0.5, 3), MAX_DENSITY_WEIGHT));
        assert!(!sparse_enough(&[], MAX_DENSITY_WEIGHT));
    }
}
