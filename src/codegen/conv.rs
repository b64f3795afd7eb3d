//! 2-D convolution (NCHW, square k×k windows) and its two gradients, as im2col plus matrix
//! products per image:
//!
//! - `Conv2d`:           `y[b] (O×P) = w (O×CKK) · col(x[b]) (CKK×P)`
//! - `Conv2dGradWeight`: `dw (O×CKK) = Σ_b dy[b] (O×P) · col(x[b])ᵀ`, images added in order
//! - `Conv2dGradInput`:  `dcol[b] (CKK×P) = wᵀ · dy[b]`, then col2im adds dcol into dx
//!
//! with `P = H'·W'` output positions and `CKK = C·k·k`. The column buffers are scratch slots.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};

use super::kernel::{Kb, KernelModule};
use super::lower::Scratch;
use super::matmul::{matmul_per_image, Dim, MatMulShape, PerImage};
use super::CodegenError;
use crate::ir::{Op, Type, Window};

/// Geometry of one convolution.
#[derive(Clone, Copy)]
struct Geo {
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    oh: usize,
    ow: usize,
    k: usize,
    s: usize,
    p: usize,
}

impl Geo {
    fn ckk(&self) -> usize {
        self.c * self.k * self.k
    }
    fn positions(&self) -> usize {
        self.oh * self.ow
    }
}

/// Visits every (image, column row, output position) with the input index it reads:
/// `body(col_index, x_index, in_bounds)`; `x_index` is clamped to 0 when out of bounds.
fn each_tap(kb: &mut Kb, g: Geo, mut body: impl FnMut(&mut Kb, Value, Value, Option<Value>)) {
    let zero = kb.int(0);
    let batch = kb.batch;
    let (ckk, pos) = (g.ckk() as i64, g.positions() as i64);
    kb.for_range(zero, batch, |kb, b| {
        kb.for_n(g.c, |kb, c| {
            let plane = kb.b.ins().imul_imm_s(b, g.c as i64);
            let plane = kb.b.ins().iadd(plane, c);
            let xbase = kb.b.ins().imul_imm_s(plane, (g.h * g.w) as i64);
            kb.for_n(g.k, |kb, ky| {
                kb.for_n(g.k, |kb, kx| {
                    // column row = c·k·k + ky·k + kx
                    let row = kb.b.ins().imul_imm_s(c, (g.k * g.k) as i64);
                    let t = kb.b.ins().imul_imm_s(ky, g.k as i64);
                    let row = kb.b.ins().iadd(row, t);
                    let row = kb.b.ins().iadd(row, kx);
                    let crow = kb.b.ins().imul_imm_s(b, ckk);
                    let crow = kb.b.ins().iadd(crow, row);
                    let cbase = kb.b.ins().imul_imm_s(crow, pos);
                    kb.for_n(g.oh, |kb, oy| {
                        let iy = kb.b.ins().imul_imm_s(oy, g.s as i64);
                        let iy = kb.b.ins().iadd(iy, ky);
                        let iy = kb.b.ins().iadd_imm_s(iy, -(g.p as i64));
                        kb.for_n(g.ow, |kb, ox| {
                            let ix = kb.b.ins().imul_imm_s(ox, g.s as i64);
                            let ix = kb.b.ins().iadd(ix, kx);
                            let ix = kb.b.ins().iadd_imm_s(ix, -(g.p as i64));
                            let ci = kb.b.ins().imul_imm_s(oy, g.ow as i64);
                            let ci = kb.b.ins().iadd(ci, ox);
                            let ci = kb.b.ins().iadd(cbase, ci);
                            let xi = kb.b.ins().imul_imm_s(iy, g.w as i64);
                            let xi = kb.b.ins().iadd(xi, ix);
                            let xi = kb.b.ins().iadd(xbase, xi);
                            if g.p == 0 {
                                body(kb, ci, xi, None);
                            } else {
                                let hv = kb.int(g.h as i64);
                                let wv = kb.int(g.w as i64);
                                let oky = kb.b.ins().icmp(IntCC::UnsignedLessThan, iy, hv);
                                let okx = kb.b.ins().icmp(IntCC::UnsignedLessThan, ix, wv);
                                let ok = kb.b.ins().band(oky, okx);
                                let z = kb.int(0);
                                let xi = kb.b.ins().select(ok, xi, z);
                                body(kb, ci, xi, Some(ok));
                            }
                        });
                    });
                });
            });
        });
    });
}

/// col[b, row, pos] = x[b, c, iy, ix] (0 in the padding).
fn im2col(kb: &mut Kb, g: Geo, col: usize, x: usize) {
    let (cp, xp) = (kb.ptr(col), kb.ptr(x));
    each_tap(kb, g, |kb, ci, xi, ok| {
        let v = kb.ld(types::F32, xp, xi);
        let v = match ok {
            Some(ok) => {
                let z = kb.b.ins().f32const(0.0);
                kb.b.ins().select(ok, v, z)
            }
            None => v,
        };
        kb.st(v, cp, ci);
    });
}

/// dx = 0, then dx[b, c, iy, ix] += dcol[b, row, pos] in a fixed order.
fn col2im(kb: &mut Kb, g: Geo, dx: usize, dcol: usize) {
    let (xp, cp) = (kb.ptr(dx), kb.ptr(dcol));
    let n = kb.rows(true, g.c * g.h * g.w);
    let zero = kb.int(0);
    kb.vec_loop(zero, n, |kb, i, lane| {
        let z = kb.cst(lane, 0.0);
        kb.st(z, xp, i);
    });
    each_tap(kb, g, |kb, ci, xi, ok| {
        let d = kb.ld(types::F32, cp, ci);
        let d = match ok {
            Some(ok) => {
                let z = kb.b.ins().f32const(0.0);
                kb.b.ins().select(ok, d, z)
            }
            None => d,
        };
        let cur = kb.ld_rw(types::F32, xp, xi);
        let s = kb.b.ins().fadd(cur, d);
        kb.st(s, xp, xi);
    });
}

/// Emits the kernels of a convolution node. `t0`, `t1` are its input types, `ty` its own.
#[allow(clippy::too_many_arguments)]
pub fn emit(
    km: &mut KernelModule,
    op: &Op,
    win: &Window,
    t0: &Type,
    t1: &Type,
    ty: &Type,
    out: usize,
    ins: &[usize],
    scratch_base: usize,
    scratch: &mut Vec<Scratch>,
    header: &str,
) -> Result<(), CodegenError> {
    let (x, y) = match op {
        Op::Conv2d(_) => (t0, ty),
        Op::Conv2dGradWeight(_) => (t0, t1),
        _ => (ty, t0),
    };
    if x.dims.len() != 3 || y.dims.len() != 3 {
        return Err(CodegenError::Graph(format!(
            "{} needs NCHW images, found {x} and {y}",
            op.name()
        )));
    }
    let g = Geo {
        c: x.dims[0],
        h: x.dims[1],
        w: x.dims[2],
        o: y.dims[0],
        oh: y.dims[1],
        ow: y.dims[2],
        k: win.kernel,
        s: win.stride,
        p: win.pad,
    };
    let col = scratch_base + scratch.len();
    scratch.push(Scratch {
        per: g.ckk() * g.positions(),
        batched: true,
    });
    let (ckk, pos) = (g.ckk(), g.positions());
    let fixed = Dim::fixed;
    match op {
        Op::Conv2d(_) => {
            km.kernel(header, |kb| im2col(kb, g, col, ins[0]))?;
            let s = MatMulShape {
                m: fixed(g.o),
                n: pos,
                k: fixed(ckk),
                ta: false,
                tb: false,
            };
            let img = PerImage {
                a: 0,
                b: ckk * pos,
                c: g.o * pos,
                accumulate: false,
            };
            km.kernel(header, |kb| matmul_per_image(kb, &s, img, out, ins[1], col))?;
        }
        Op::Conv2dGradWeight(_) => {
            km.kernel(header, |kb| im2col(kb, g, col, ins[0]))?;
            // dw (O×CKK) += dy[b] (O×P) · col[b]ᵀ, col stored CKK×P (= n×k).
            let s = MatMulShape {
                m: fixed(g.o),
                n: ckk,
                k: fixed(pos),
                ta: false,
                tb: true,
            };
            let img = PerImage {
                a: g.o * pos,
                b: ckk * pos,
                c: 0,
                accumulate: true,
            };
            km.kernel(header, |kb| matmul_per_image(kb, &s, img, out, ins[1], col))?;
        }
        _ => {
            // dcol[b] (CKK×P) = wᵀ · dy[b]; w stored O×CKK (= k×m).
            let s = MatMulShape {
                m: fixed(ckk),
                n: pos,
                k: fixed(g.o),
                ta: true,
                tb: false,
            };
            let img = PerImage {
                a: 0,
                b: g.o * pos,
                c: ckk * pos,
                accumulate: false,
            };
            km.kernel(header, |kb| {
                matmul_per_image(kb, &s, img, col, ins[1], ins[0])
            })?;
            km.kernel(header, |kb| col2im(kb, g, out, col))?;
        }
    }
    Ok(())
}
