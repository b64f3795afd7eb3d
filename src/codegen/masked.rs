//! Matrix products masked by a ReLU's gradient: `C = (A·Bᵀ) ⊙ [H > 0]`, the gradient of a
//! dense layer's input when a ReLU made that input (`matmul_epi tb [relu_grad] dY, W, H`). The
//! dense GEMM computes every entry of the product and the epilogue then zeroes those where the
//! ReLU's output `H` was 0: a quarter to a half of them in the autoencoder's decoder.
//!
//! Here each row `r` of C gets the list of its live columns (`H[r, j] > 0`, false for a NaN as
//! in the epilogue's `select`), and a kernel computes only those, each as the dot product of
//! row `r` of A with row `j` of B (both contiguous, since the product reads B transposed):
//!
//! ```text
//! C[r, j] = Σ_e A[r, e] · B[j, e]   if H[r, j] > 0,   else 0
//! ```
//!
//! Four columns at a time, each summed in two f32x4 accumulators (entries `e ≡ 0..3` and
//! `4..7 mod 8`), then a four-entry tail and a scalar tail, then the lanes added in a fixed
//! order. Each entry of C is computed by one call in that order, so results do not depend on
//! the thread count; they round differently from the dense GEMM (a different order of the same
//! sum). A dead entry is 0 even where the product would be a NaN, as the epilogue makes it.
//!
//! Whether the mask is sparse enough is decided per call ([`Masked::product`]); otherwise the
//! dense GEMM and its epilogue run.

use std::cell::RefCell;

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::FunctionBuilder;
use cranelift_jit::JITModule;

use super::gemm::{args, panel_flags, GEMM_OPT};
use super::jitmod::new_jit_module_with_opt;
use super::sparse::{for_range, SendPtr};

/// Shares of live entries (`H > 0`) up to which the masked product runs. Each live entry
/// costs about 1.2–1.3 of the dense GEMM's share: one load of B per multiply-add, where the
/// GEMM's tile loads one per eight. Measured with `benches/gemm.rs` on the autoencoder's
/// decoder gradient (128×128 by 784, two threads, Intel Xeon): 170, 207, 247 and 279 µs at
/// densities 0.4, 0.5, 0.6 and 0.65, against 348 µs for the dense GEMM, about even near 0.8. In
/// training, where the ReLU's output runs 50–75% live, a limit of 0.8 rather than 0.7 took the
/// step's decoder gradient from 301–312 to 276–290 µs (four alternated pairs).
pub const MAX_DENSITY: f32 = 0.8;
/// Contraction length below which the dense GEMM always runs: each entry's dot product then
/// has too few multiply-adds for its reduction and its call (the MLP's `dY` has 10 columns).
pub const MIN_K: usize = 64;

/// The arguments of one call of the kernel: rows `0 .. rows` of a block of C. Passed by
/// pointer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Args {
    /// Row 0 of the block's A.
    a: *const f32,
    /// B, stored `[n × k]`.
    b: *const f32,
    /// Contraction length (A's and B's row length).
    k: usize,
    rows: usize,
    /// The rows' live columns (u32), row after row.
    list: *const u32,
    /// `rows + 1` u32s: where each row's columns start in `list`, and where the last ends.
    starts: *const u32,
    /// Row 0 of the block of C.
    c: *mut f32,
    /// Columns of C.
    n: usize,
}

#[derive(Clone, Copy)]
enum Arg {
    A,
    B,
    K,
    Rows,
    List,
    Starts,
    C,
    N,
}

type KernelFn = unsafe extern "C" fn(args: *const Args);

/// The compiled kernel, shared by every graph and thread (the lists are per thread).
pub struct Masked {
    _module: JITModule,
    kernel: KernelFn,
}

// SAFETY: the module is immutable once finalized and only kept so the code stays mapped; the
// kernel touches nothing but its arguments.
unsafe impl Send for Masked {}
// SAFETY: as for `Send`.
unsafe impl Sync for Masked {}

/// A thread's lists and row starts, grown on demand.
#[derive(Default)]
struct Scratch {
    list: Vec<u32>,
    starts: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Stores, and loads that must stay where they are (see [`emit_dots`]).
fn rw() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// The dot products of row `a` of A with the rows of B at `rows` (byte addresses), over `len`
/// entries: per row two f32x4 sums of entries `0 .. len & !7` (the four-entry tail added to
/// the first), and the scalar tail's sum apart. Returns the sums, two per row, and the tails.
fn emit_dots(
    b: &mut FunctionBuilder,
    ptr: Type,
    (a, rows, len): (Value, &[Value], Value),
) -> (Vec<Value>, Vec<Value>) {
    let z = b.ins().f32const(0.0);
    let z4 = b.ins().splat(types::F32X4, z);
    let acc = vec![z4; 2 * rows.len()];
    let nacc = acc.len();
    let l8 = b.ins().band_imm_u(len, !7);
    let l8b = b.ins().ishl_imm_u(l8, 2);
    // A loop tested at the bottom, entered when it has an iteration.
    let body = b.create_block();
    let after = b.create_block();
    b.append_block_param(body, ptr);
    for _ in 0..nacc {
        b.append_block_param(body, types::F32X4);
        b.append_block_param(after, types::F32X4);
    }
    let zero = b.ins().iconst(ptr, 0);
    let mut init = vec![zero];
    init.extend_from_slice(&acc);
    let any = b.ins().icmp(IntCC::UnsignedLessThan, zero, l8b);
    b.ins().brif(any, body, &args(&init), after, &args(&acc));
    b.switch_to_block(body);
    let p = b.block_params(body).to_vec();
    let (off, cur) = (p[0], &p[1..]);
    // Per half of the eight entries: B's four vectors first, into registers of their own,
    // then A's: the `fma`s (tied on x64 to a multiplicand's register) then write each sum over
    // its B vector. A's vector is an ordinary load, which keeps B's from being folded into the
    // `fma`s as memory operands (that would tie each sum to a copy of A's shared vector). Four
    // B vectors at a time leave registers for the eight sums.
    let mut next = vec![b.ins().iadd_imm_s(off, 32)];
    next.extend_from_slice(cur);
    for half in 0..2 {
        let bv: Vec<Value> = rows
            .iter()
            .map(|&row| {
                let at = b.ins().iadd(row, off);
                b.ins()
                    .load(types::F32X4, panel_flags(), at, 16 * half as i32)
            })
            .collect();
        let at = b.ins().iadd(a, off);
        let av = b.ins().load(types::F32X4, rw(), at, 16 * half as i32);
        for (q, &bvq) in bv.iter().enumerate() {
            let i = 1 + 2 * q + half;
            next[i] = b.ins().fma(bvq, av, next[i]);
        }
    }
    let more = b.ins().icmp(IntCC::UnsignedLessThan, next[0], l8b);
    b.ins()
        .brif(more, body, &args(&next), after, &args(&next[1..]));
    b.switch_to_block(after);
    let acc = b.block_params(after).to_vec();

    // Four more entries if len mod 8 ≥ 4, into the first accumulator of each row.
    let l4 = b.ins().band_imm_u(len, !3);
    let has4 = b.ins().icmp(IntCC::UnsignedLessThan, l8, l4);
    let four = b.create_block();
    let joined = b.create_block();
    for _ in 0..nacc {
        b.append_block_param(joined, types::F32X4);
    }
    b.ins().brif(has4, four, &[], joined, &args(&acc));
    b.switch_to_block(four);
    let at = b.ins().iadd(a, l8b);
    let a0 = b.ins().load(types::F32X4, panel_flags(), at, 0);
    let mut next = acc.clone();
    for (q, &row) in rows.iter().enumerate() {
        let at = b.ins().iadd(row, l8b);
        let bv = b.ins().load(types::F32X4, panel_flags(), at, 0);
        next[2 * q] = b.ins().fma(bv, a0, acc[2 * q]);
    }
    b.ins().jump(joined, &args(&next));
    b.switch_to_block(joined);
    let acc = b.block_params(joined).to_vec();

    // The scalar tail, entries l4 .. len, summed apart.
    let head = b.create_block();
    let body = b.create_block();
    let done = b.create_block();
    b.append_block_param(head, ptr);
    for _ in rows {
        b.append_block_param(head, types::F32);
        b.append_block_param(done, types::F32);
    }
    let lb = b.ins().ishl_imm_u(len, 2);
    let l4b = b.ins().ishl_imm_u(l4, 2);
    let mut init = vec![l4b];
    init.extend(std::iter::repeat_n(z, rows.len()));
    b.ins().jump(head, &args(&init));
    b.switch_to_block(head);
    let p = b.block_params(head).to_vec();
    let (off, s) = (p[0], &p[1..]);
    let more = b.ins().icmp(IntCC::UnsignedLessThan, off, lb);
    b.ins().brif(more, body, &[], done, &args(s));
    b.switch_to_block(body);
    let at = b.ins().iadd(a, off);
    let x = b.ins().load(types::F32, panel_flags(), at, 0);
    let mut next = vec![b.ins().iadd_imm_s(off, 4)];
    for (q, &row) in rows.iter().enumerate() {
        let at = b.ins().iadd(row, off);
        let y = b.ins().load(types::F32, panel_flags(), at, 0);
        next.push(b.ins().fma(y, x, s[q]));
    }
    b.ins().jump(head, &args(&next));
    b.switch_to_block(done);
    (acc, b.block_params(done).to_vec())
}

/// Emits the kernel: each row's live columns four at a time, then one at a time.
fn emit_kernel(b: &mut FunctionBuilder, ptr: Type) {
    let word = super::jitmod::args_struct(b, ptr);
    let arg = |b: &mut FunctionBuilder, f: Arg| word(b, f as usize);
    let a = arg(b, Arg::A);
    let bp = arg(b, Arg::B);
    let k = arg(b, Arg::K);
    let rows = arg(b, Arg::Rows);
    let list = arg(b, Arg::List);
    let starts = arg(b, Arg::Starts);
    let c = arg(b, Arg::C);
    let n = arg(b, Arg::N);
    let ldb = b.ins().ishl_imm_u(k, 2);
    let zero = b.ins().iconst(ptr, 0);
    for_range(b, (zero, rows, 1), &[], |b, r, _| {
        let ao = b.ins().imul(r, ldb);
        let arow = b.ins().iadd(a, ao);
        let co = b.ins().imul(r, n);
        let co = b.ins().ishl_imm_u(co, 2);
        let crow = b.ins().iadd(c, co);
        let so = b.ins().ishl_imm_u(r, 2);
        let sat = b.ins().iadd(starts, so);
        let s0 = b.ins().uload32(panel_flags(), sat, 0);
        let s1 = b.ins().uload32(panel_flags(), sat, 4);
        let span = b.ins().isub(s1, s0);
        let quads = b.ins().band_imm_u(span, !3);
        let quads = b.ins().iadd(s0, quads);
        // The quadruples, then the rest one by one (from `quads`, where the first loop ends).
        for (width, from, end) in [(4usize, s0, quads), (1, quads, s1)] {
            for_range(b, (from, end, width as i64), &[], |b, i, _| {
                let lo = b.ins().ishl_imm_u(i, 2);
                let at = b.ins().iadd(list, lo);
                let brows: Vec<Value> = (0..width)
                    .map(|q| {
                        let j = b.ins().uload32(panel_flags(), at, (4 * q) as i32);
                        let off = b.ins().imul(j, ldb);
                        b.ins().iadd(bp, off)
                    })
                    .collect();
                let (acc, tail) = emit_dots(b, ptr, (arow, &brows, k));
                for q in 0..width {
                    // The lanes in a fixed order, then the scalar tail. The column is read
                    // again from the list rather than kept in a register over the loop.
                    let v = b.ins().fadd(acc[2 * q], acc[2 * q + 1]);
                    let l: Vec<Value> = (0..4u8).map(|i| b.ins().extractlane(v, i)).collect();
                    let lo = b.ins().fadd(l[0], l[1]);
                    let hi = b.ins().fadd(l[2], l[3]);
                    let s = b.ins().fadd(lo, hi);
                    let s = b.ins().fadd(s, tail[q]);
                    let j = b.ins().uload32(panel_flags(), at, (4 * q) as i32);
                    let jb = b.ins().ishl_imm_u(j, 2);
                    let at = b.ins().iadd(crow, jb);
                    b.ins().store(rw(), s, at, 0);
                }
                vec![]
            });
        }
        vec![]
    });
    b.ins().return_(&[]);
}

/// The shape of a masked product: `C[m×n] = A[m×k]·Bᵀ` with B stored `[n×k]`.
#[derive(Clone, Copy, Debug)]
pub struct Problem {
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

impl Problem {
    /// Whether the masked product may pay for this shape at all (and its lists, u32 column
    /// numbers and offsets, can hold it).
    pub fn fits(&self) -> bool {
        self.k >= MIN_K
            && self.m > 0
            && self.n > 0
            && self
                .m
                .checked_mul(self.n)
                .is_some_and(|mn| mn <= u32::MAX as usize)
    }
}

/// Whether at most [`MAX_DENSITY`] of `h` is live (`> 0`), judged from about a thousand
/// entries at an odd stride (every entry of a smaller `h`).
fn sparse_enough(h: &[f32]) -> bool {
    let (live, seen) = sample(h, |v| v > 0.0);
    (live as f32) <= MAX_DENSITY * seen as f32
}

/// How many of about a thousand entries of `v` at an odd stride (every entry of a smaller `v`)
/// are `live`, and how many were seen: whether a product is sparse enough to skip entries is
/// judged from it, here and for a convolution's `dy` ([`super::sparse_conv`]).
pub(super) fn sample(v: &[f32], live: impl Fn(f32) -> bool) -> (usize, usize) {
    const SAMPLE: usize = 1024;
    let stride = (v.len() / SAMPLE) | 1;
    let (mut seen, mut n) = (0usize, 0usize);
    for &x in v.iter().step_by(stride) {
        seen += 1;
        n += live(x) as usize;
    }
    (n, seen)
}

/// Appends to `list` the columns `j` where `hr[j] > 0`, without a branch per entry.
fn push_live(list: &mut Vec<u32>, hr: &[f32]) {
    let start = list.len();
    list.resize(start + hr.len(), 0);
    let out = &mut list[start..];
    let mut len = 0;
    for (j, &v) in hr.iter().enumerate() {
        // len ≤ j: in bounds; a dead entry's write is overwritten by the next live one.
        out[len] = j as u32;
        len += (v > 0.0) as usize;
    }
    list.truncate(start + len);
}

impl Masked {
    pub fn new() -> Result<Masked, String> {
        let mut module = new_jit_module_with_opt(GEMM_OPT)?;
        let id = super::jitmod::define_function(&mut module, "nnc_masked_rows", 1, emit_kernel)?;
        module
            .finalize_definitions()
            .map_err(|e| format!("finalize the masked kernel: {e}"))?;
        // SAFETY: defined with exactly the `KernelFn` signature.
        let kernel = unsafe {
            std::mem::transmute::<*const u8, KernelFn>(module.get_finalized_function(id))
        };
        Ok(Masked {
            _module: module,
            kernel,
        })
    }

    /// `C = (A·Bᵀ) ⊙ [H > 0]` on up to `threads` threads (contiguous rows each) when at most
    /// [`MAX_DENSITY`] of `h` is live; returns whether it ran (otherwise C is untouched).
    /// `a` is `[m×k]`, `b` `[n×k]`, `h` and `c` `[m×n]`.
    pub fn product(
        &self,
        threads: usize,
        p: Problem,
        a: &[f32],
        b: &[f32],
        h: &[f32],
        c: &mut [f32],
    ) -> Result<bool, String> {
        let Problem { m, n, k } = p;
        if a.len() < m * k || b.len() < n * k || h.len() < m * n || c.len() < m * n {
            return Err(format!(
                "masked product {m}×{n}×{k}: operands of {}, {}, {}, {} floats",
                a.len(),
                b.len(),
                h.len(),
                c.len()
            ));
        }
        if !p.fits() || !sparse_enough(&h[..m * n]) {
            return Ok(false);
        }
        let cp = SendPtr(c.as_mut_ptr());
        super::glue::split(m, threads, 1, |lo, hi| {
            SCRATCH.with_borrow_mut(|s| {
                s.list.clear();
                s.starts.clear();
                for hr in h[lo * n..hi * n].chunks_exact(n) {
                    s.starts.push(s.list.len() as u32);
                    push_live(&mut s.list, hr);
                }
                s.starts.push(s.list.len() as u32);
                // SAFETY: rows lo..hi of C are this task's: zeroed, then the kernel writes their
                // live entries; it reads A's rows lo..hi, B's listed rows (each < n) and this
                // thread's lists.
                unsafe {
                    let crow = cp.at(lo * n);
                    std::ptr::write_bytes(crow, 0, (hi - lo) * n);
                    let args = Args {
                        a: a.as_ptr().add(lo * k),
                        b: b.as_ptr(),
                        k,
                        rows: hi - lo,
                        list: s.list.as_ptr(),
                        starts: s.starts.as_ptr(),
                        c: crow,
                        n,
                    };
                    (self.kernel)(&args);
                }
            });
            Ok(())
        })?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stream of values in [−1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn computes_the_live_entries_and_zeroes_the_rest() {
        let masked = Masked::new().unwrap();
        // k with every tail (by eight, by four, scalar); n with every column group.
        for (m, n, k) in [
            (5, 7, 64),
            (9, 13, 71),
            (4, 33, 100),
            (3, 6, 131),
            (16, 128, 784),
        ] {
            let a = values(m * k, 1);
            let b = values(n * k, 2);
            // About half live; some exact zeros and a NaN, which are dead.
            let mut h = values(m * n, 3);
            h[0] = 0.0;
            h[m * n - 1] = f32::NAN;
            let mut want = vec![0.0f32; m * n];
            for r in 0..m {
                for j in 0..n {
                    if h[r * n + j] > 0.0 {
                        let s: f64 = (0..k)
                            .map(|e| a[r * k + e] as f64 * b[j * k + e] as f64)
                            .sum();
                        want[r * n + j] = s as f32;
                    }
                }
            }
            let mut first: Option<Vec<f32>> = None;
            for threads in [1, 2, 3] {
                let mut c = vec![f32::NAN; m * n];
                let p = Problem { m, n, k };
                assert!(masked.product(threads, p, &a, &b, &h, &mut c).unwrap());
                for (i, (&got, &w)) in c.iter().zip(&want).enumerate() {
                    assert!(
                        (got - w).abs() <= 1e-5 * (1.0 + w.abs()),
                        "{m}×{n}×{k}, entry {i}: {got} against {w}"
                    );
                }
                // The same bits whatever the thread count.
                match &first {
                    None => first = Some(c),
                    Some(f) => assert!(
                        f.iter().zip(&c).all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{m}×{n}×{k} on {threads} threads"
                    ),
                }
            }
        }
    }

    #[test]
    fn a_dead_entry_stays_zero_where_the_product_is_nan() {
        let masked = Masked::new().unwrap();
        let (m, n, k) = (2, 4, 64);
        let mut a = values(m * k, 4);
        a[3] = f32::NAN; // row 0's products are all NaN
        let b = values(n * k, 5);
        let h = vec![1.0, -1.0, 0.0, 2.0, -1.0, -1.0, -1.0, -1.0];
        let mut c = vec![7.0f32; m * n];
        let p = Problem { m, n, k };
        assert!(masked.product(1, p, &a, &b, &h, &mut c).unwrap());
        assert!(c[0].is_nan() && c[3].is_nan());
        assert_eq!(&c[1..3], &[0.0, 0.0]);
        assert_eq!(&c[4..], &[0.0; 4]);
    }

    #[test]
    fn a_dense_mask_or_a_short_contraction_is_left_to_the_gemm() {
        let masked = Masked::new().unwrap();
        let (m, n) = (4, 8);
        for (k, live) in [(64, 0.9f32), (10, 0.0)] {
            let a = values(m * k, 6);
            let b = values(n * k, 7);
            let h: Vec<f32> = (0..m * n)
                .map(|i| {
                    if (i as f32) < live * (m * n) as f32 {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect();
            let mut c = vec![7.0f32; m * n];
            let p = Problem { m, n, k };
            assert!(!masked.product(2, p, &a, &b, &h, &mut c).unwrap());
            assert!(c.iter().all(|&v| v == 7.0), "C untouched");
        }
    }
}
