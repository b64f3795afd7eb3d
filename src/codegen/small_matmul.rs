//! `MatMul` of small matrices (XOR's 2×4 and 4×1 layers and their gradients) as one scalar
//! Cranelift loop nest. For such shapes the packed GEMM's setup (packing panels, cache blocks,
//! the edge-tile copies) costs many times the arithmetic; here the products are summed straight
//! from the operands, in depth order, with no setup at all.

use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::Variable;

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
/// `op(B)` stored `[n×k]` when `tb`. The extents that do not scale with the batch are unrolled
/// (at most [`MAX_STATIC`] multiply-adds in all): a row of C is `n` sums of `k` products whose
/// loads of A are shared, and a weight gradient (depth = the batch) keeps its `m×n` sums in
/// registers over one loop on the batch. Each sum is `0 + a·b + …` in depth order, `fmul`
/// then `fadd` as the reference interpreter computes it. On XOR's steps (0.4 µs) the loop
/// nest's counters and branches, one per multiply-add, were a tenth of the time.
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
    // Element (r, p) of op(A) and (p, j) of op(B).
    let a_at = |kb: &mut Kb, r: Value, p: Value| {
        let (i, ld, j) = if ta { (p, mv, r) } else { (r, kv, p) };
        let t = kb.b.ins().imul(i, ld);
        let t = kb.b.ins().iadd(t, j);
        kb.ld(types::F32, ap, t)
    };
    let b_at = |kb: &mut Kb, p: Value, j: usize| {
        let t = if tb {
            let t = kb.b.ins().imul_imm_s(kv, j as i64);
            kb.b.ins().iadd(t, p)
        } else {
            let t = kb.b.ins().imul_imm_s(p, n as i64);
            kb.b.ins().iadd_imm_s(t, j as i64)
        };
        kb.ld(types::F32, bp, t)
    };
    let store = |kb: &mut Kb, r: Value, j: usize, s: Value| {
        let ci = kb.b.ins().imul_imm_s(r, n as i64);
        let ci = kb.b.ins().iadd_imm_s(ci, j as i64);
        kb.st(s, cp, ci);
    };
    let zero = kb.int(0);
    if k.batched && !m.batched {
        // A weight gradient: every sum of C runs over the batch, all at once.
        let z = kb.cst(types::F32, 0.0);
        let acc: Vec<Vec<Variable>> = (0..m.per)
            .map(|_| (0..n).map(|_| kb.var(types::F32, z)).collect())
            .collect();
        kb.for_range(zero, kv, |kb, p| {
            let bs: Vec<Value> = (0..n).map(|j| b_at(kb, p, j)).collect();
            for (r, row) in acc.iter().enumerate() {
                let rv = kb.int(r as i64);
                let x = a_at(kb, rv, p);
                for (&v, &y) in row.iter().zip(&bs) {
                    let xy = kb.b.ins().fmul(x, y);
                    let s = kb.b.use_var(v);
                    let s = kb.b.ins().fadd(s, xy);
                    kb.b.def_var(v, s);
                }
            }
        });
        for (r, row) in acc.iter().enumerate() {
            let rv = kb.int(r as i64);
            for (j, &v) in row.iter().enumerate() {
                let s = kb.b.use_var(v);
                store(kb, rv, j, s);
            }
        }
        return;
    }
    kb.for_range(zero, mv, |kb, r| {
        if k.batched {
            // Both batched (`is_small` takes no such product): a loop on the depth per element.
            for j in 0..n {
                let z = kb.cst(types::F32, 0.0);
                let acc = kb.var(types::F32, z);
                let zero = kb.int(0);
                kb.for_range(zero, kv, |kb, p| {
                    let x = a_at(kb, r, p);
                    let y = b_at(kb, p, j);
                    let xy = kb.b.ins().fmul(x, y);
                    let s = kb.b.use_var(acc);
                    let s = kb.b.ins().fadd(s, xy);
                    kb.b.def_var(acc, s);
                });
                let s = kb.b.use_var(acc);
                store(kb, r, j, s);
            }
            return;
        }
        let xs: Vec<Value> = (0..k.per)
            .map(|p| {
                let pv = kb.int(p as i64);
                a_at(kb, r, pv)
            })
            .collect();
        for j in 0..n {
            let mut s = kb.cst(types::F32, 0.0);
            for (p, &x) in xs.iter().enumerate() {
                let pv = kb.int(p as i64);
                let y = b_at(kb, pv, j);
                let xy = kb.b.ins().fmul(x, y);
                s = kb.b.ins().fadd(s, xy);
            }
            store(kb, r, j, s);
        }
    });
}
