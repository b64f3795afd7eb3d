//! A self-contained Cranelift matrix product for `MatMul` shapes, used for small products (where
//! packing for the GEMM does not pay) and as the reference path of the JIT.
//!
//! Two loop forms, chosen by where the contiguous axis is:
//! - *axpy* (`tb = false`): `C[i, j..j+4] += A(i, k) · B[k, j..j+4]`, f32x4 over `j`;
//! - *dot* (`tb = true`): `C[i, j] = Σ_k A[i, k] · B[j, k]`, f32x4 over `k`, lanes summed in order.

use cranelift_codegen::ir::{types, InstBuilder, Value};

use super::kernel::{Kb, F32X4};

/// A dimension: `per · batch` when batched, else `per`.
#[derive(Clone, Copy, Debug)]
pub struct Dim {
    pub per: usize,
    pub batched: bool,
}

impl Dim {
    pub fn fixed(per: usize) -> Dim {
        Dim {
            per,
            batched: false,
        }
    }
    fn value(self, kb: &mut Kb) -> Value {
        kb.rows(self.batched, self.per)
    }
}

/// `c[m×n] = op(a)·op(b)`: `ta` means a is stored `[k, m]`, `tb` means b is stored `[n, k]`.
pub struct MatMulShape {
    pub m: Dim,
    pub n: usize,
    pub k: Dim,
    pub ta: bool,
    pub tb: bool,
}

/// One product per batch element: element strides of a, b and c between images (0 = shared),
/// and whether c accumulates over the images (c is zeroed first; images are added in order).
#[derive(Clone, Copy, Debug)]
pub struct PerImage {
    pub a: usize,
    pub b: usize,
    pub c: usize,
    pub accumulate: bool,
}

/// `c = op(a)·op(b)` on table slots `c`, `a`, `b`.
pub fn matmul(kb: &mut Kb, s: &MatMulShape, c: usize, a: usize, b: usize) {
    let (cp, ap, bp) = (kb.ptr(c), kb.ptr(a), kb.ptr(b));
    product(kb, s, cp, ap, bp, false);
}

/// The product for each image of the batch (convolutions): `c[img] (+)= op(a[img])·op(b[img])`.
pub fn matmul_per_image(kb: &mut Kb, s: &MatMulShape, img: PerImage, c: usize, a: usize, b: usize) {
    let (cp, ap, bp) = (kb.ptr(c), kb.ptr(a), kb.ptr(b));
    let zero = kb.int(0);
    if img.accumulate {
        let total = (s.m.per * s.n) as i64;
        let tv = kb.int(total);
        kb.vec_loop(zero, tv, |kb, i, lane| {
            let z = kb.cst(lane, 0.0);
            kb.st(z, cp, i);
        });
    }
    let batch = kb.batch;
    kb.for_range(zero, batch, |kb, im| {
        let off = |kb: &mut Kb, base: cranelift_codegen::ir::Value, stride: usize| {
            let o = kb.b.ins().imul_imm_s(im, (stride * 4) as i64);
            kb.b.ins().iadd(base, o)
        };
        let (c1, a1, b1) = (off(kb, cp, img.c), off(kb, ap, img.a), off(kb, bp, img.b));
        product(kb, s, c1, a1, b1, img.accumulate);
    });
}

/// Emits the loops of one product on base pointers; `acc` adds to c's current contents.
fn product(kb: &mut Kb, s: &MatMulShape, cp: Value, ap: Value, bp: Value, acc: bool) {
    let m = s.m.value(kb);
    let k = s.k.value(kb);
    let n = s.n as i64;
    let zero = kb.int(0);
    let nv = kb.int(n);
    // Element (i, kk) of op(a): a[i·K + kk] or a[kk·M + i].
    let (a_row, a_col) = if s.ta { (1, m) } else { (0, k) };
    kb.for_range(zero, m, |kb, i| {
        if s.tb {
            kb.for_range(zero, nv, |kb, j| {
                let arow = kb.b.ins().imul(i, k);
                let brow = kb.b.ins().imul(j, k);
                let z4 = kb.cst(F32X4, 0.0);
                let acc4 = kb.var(F32X4, z4);
                let z1 = kb.cst(types::F32, 0.0);
                let acc1 = kb.var(types::F32, z1);
                kb.vec_loop(zero, k, |kb, kk, lane| {
                    let ia = kb.b.ins().iadd(arow, kk);
                    let ib = kb.b.ins().iadd(brow, kk);
                    let x = kb.ld(lane, ap, ia);
                    let y = kb.ld(lane, bp, ib);
                    let p = kb.b.ins().fmul(x, y);
                    let var = if lane == F32X4 { acc4 } else { acc1 };
                    let acc = kb.b.use_var(var);
                    let acc = kb.b.ins().fadd(acc, p);
                    kb.b.def_var(var, acc);
                });
                let a4 = kb.b.use_var(acc4);
                let h = kb.hsum(a4, F32X4);
                let a1 = kb.b.use_var(acc1);
                let mut r = kb.b.ins().fadd(h, a1);
                let ci = kb.b.ins().imul_imm_s(i, n);
                let ci = kb.b.ins().iadd(ci, j);
                if acc {
                    let cur = kb.ld_rw(types::F32, cp, ci);
                    r = kb.b.ins().fadd(cur, r);
                }
                kb.st(r, cp, ci);
            });
        } else {
            kb.vec_loop(zero, nv, |kb, j, lane| {
                let ci = kb.b.ins().imul_imm_s(i, n);
                let ci = kb.b.ins().iadd(ci, j);
                let z = if acc {
                    kb.ld_rw(lane, cp, ci)
                } else {
                    kb.cst(lane, 0.0)
                };
                let accv = kb.var(lane, z);
                kb.for_range(zero, k, |kb, kk| {
                    // a index: ta ? kk·M + i : i·K + kk
                    let ia = if a_row == 1 {
                        let t = kb.b.ins().imul(kk, a_col);
                        kb.b.ins().iadd(t, i)
                    } else {
                        let t = kb.b.ins().imul(i, a_col);
                        kb.b.ins().iadd(t, kk)
                    };
                    let x = kb.ld(types::F32, ap, ia);
                    let x = kb.splat(lane, x);
                    let ib = kb.b.ins().imul_imm_s(kk, n);
                    let ib = kb.b.ins().iadd(ib, j);
                    let y = kb.ld(lane, bp, ib);
                    let p = kb.b.ins().fmul(x, y);
                    let cur = kb.b.use_var(accv);
                    let cur = kb.b.ins().fadd(cur, p);
                    kb.b.def_var(accv, cur);
                });
                let r = kb.b.use_var(accv);
                kb.st(r, cp, ci);
            });
        }
    });
}
