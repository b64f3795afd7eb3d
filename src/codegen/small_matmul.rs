//! `MatMul` of small matrices (XOR's 2×4 and 4×1 layers and their gradients) as one scalar
//! Cranelift loop nest. For such shapes the packed GEMM's setup (packing panels, cache blocks,
//! the edge-tile copies) costs many times the arithmetic; here the products are summed straight
//! from the operands, in depth order, with no setup at all.

use cranelift_codegen::ir::{types, InstBuilder};

use super::glue::Dim;
use super::kernel::Kb;

/// The largest product of the static extents (the ones not scaled by the batch) taken here.
pub const MAX_STATIC: usize = 64;

/// Whether `C[m×n] = op(A)·op(B)` is small enough for [`small_matmul`]: at most
/// [`MAX_STATIC`] elements of the weight-shaped operand (or of C for a weight gradient).
pub fn is_small(m: Dim, n: usize, k: Dim) -> bool {
    let fixed = |d: Dim| if d.batched { 1 } else { d.per };
    let per_batch = |d: Dim| if d.batched { d.per } else { 1 };
    // One batched extent at most, and it must be a plain batch (not B·per rows).
    per_batch(m) * per_batch(k) == 1 && fixed(m) * n * fixed(k) <= MAX_STATIC
}

/// `C[r, j] = Σ_p op(A)[r, p] · op(B)[p, j]`, with `op(A)` stored `[k×m]` when `ta` and
/// `op(B)` stored `[n×k]` when `tb`.
#[allow(clippy::too_many_arguments)]
pub fn small_matmul(
    kb: &mut Kb,
    ta: bool,
    tb: bool,
    m: Dim,
    n: usize,
    k: Dim,
    out: usize,
    a: usize,
    b: usize,
) {
    let (cp, ap, bp) = (kb.ptr(out), kb.ptr(a), kb.ptr(b));
    let mv = kb.rows(m.batched, m.per);
    let kv = kb.rows(k.batched, k.per);
    let zero = kb.int(0);
    kb.for_range(zero, mv, |kb, r| {
        kb.for_n(n, |kb, j| {
            let z = kb.cst(types::F32, 0.0);
            let acc = kb.var(types::F32, z);
            let zero = kb.int(0);
            kb.for_range(zero, kv, |kb, p| {
                let ai = if ta {
                    let t = kb.b.ins().imul(p, mv);
                    kb.b.ins().iadd(t, r)
                } else {
                    let t = kb.b.ins().imul(r, kv);
                    kb.b.ins().iadd(t, p)
                };
                let bi = if tb {
                    let t = kb.b.ins().imul(j, kv);
                    kb.b.ins().iadd(t, p)
                } else {
                    let t = kb.b.ins().imul_imm_s(p, n as i64);
                    kb.b.ins().iadd(t, j)
                };
                let x = kb.ld(types::F32, ap, ai);
                let y = kb.ld(types::F32, bp, bi);
                let xy = kb.b.ins().fmul(x, y);
                let s = kb.b.use_var(acc);
                let s = kb.b.ins().fadd(s, xy);
                kb.b.def_var(acc, s);
            });
            let ci = kb.b.ins().imul_imm_s(r, n as i64);
            let ci = kb.b.ins().iadd(ci, j);
            let s = kb.b.use_var(acc);
            kb.st(s, cp, ci);
        });
    });
}
