//! Max and average pooling over NCHW images, and their gradients.
//!
//! Loops run over planes (image × channel), output rows and columns; the k×k window is unrolled
//! at compile time. Padded positions are skipped (max pooling) or count as zeros (average
//! pooling: the divisor is always k·k). Gradients zero `dx` first, then add window by window
//! in a fixed order.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, Value};

use super::kernel::Kb;
use crate::ir::{Type, Window};

/// Geometry: planes per sample (C), input H×W, output OH×OW.
struct Geo {
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
}

fn geo(x: &Type, y: &Type) -> Geo {
    Geo {
        c: x.dims[0],
        h: x.dims[1],
        w: x.dims[2],
        oh: y.dims[1],
        ow: y.dims[2],
    }
}

/// Index within the input plane of window tap (ky, kx) at output (oy, ox), and whether it lies
/// inside the image (`None` when there is no padding: always inside). Out-of-image indices are
/// replaced by 0 so that loads stay in bounds.
fn tap(
    kb: &mut Kb,
    g: &Geo,
    win: &Window,
    oy: Value,
    ox: Value,
    ky: usize,
    kx: usize,
) -> (Value, Option<Value>) {
    let s = win.stride as i64;
    let iy = kb.b.ins().imul_imm_s(oy, s);
    let iy = kb.b.ins().iadd_imm_s(iy, ky as i64 - win.pad as i64);
    let ix = kb.b.ins().imul_imm_s(ox, s);
    let ix = kb.b.ins().iadd_imm_s(ix, kx as i64 - win.pad as i64);
    let row = kb.b.ins().imul_imm_s(iy, g.w as i64);
    let idx = kb.b.ins().iadd(row, ix);
    if win.pad == 0 {
        return (idx, None);
    }
    let hv = kb.int(g.h as i64);
    let wv = kb.int(g.w as i64);
    let oky = kb.b.ins().icmp(IntCC::UnsignedLessThan, iy, hv);
    let okx = kb.b.ins().icmp(IntCC::UnsignedLessThan, ix, wv);
    let ok = kb.b.ins().band(oky, okx);
    let zero = kb.int(0);
    (kb.b.ins().select(ok, idx, zero), Some(ok))
}

/// Loops over planes and output positions: `body(in_plane_base, out_index, oy, ox)`.
fn each_output(
    kb: &mut Kb,
    g: &Geo,
    batched: bool,
    mut body: impl FnMut(&mut Kb, Value, Value, Value, Value),
) {
    let planes = kb.rows(batched, g.c);
    let zero = kb.int(0);
    let (h, w, oh, ow) = (g.h, g.w, g.oh, g.ow);
    kb.for_range(zero, planes, |kb, pl| {
        let ib = kb.b.ins().imul_imm_s(pl, (h * w) as i64);
        let ob = kb.b.ins().imul_imm_s(pl, (oh * ow) as i64);
        kb.for_n(oh, |kb, oy| {
            kb.for_n(ow, |kb, ox| {
                let o = kb.b.ins().imul_imm_s(oy, ow as i64);
                let o = kb.b.ins().iadd(o, ox);
                let o = kb.b.ins().iadd(ob, o);
                body(kb, ib, o, oy, ox);
            });
        });
    });
}

fn zero_fill(kb: &mut Kb, ty: &Type, slot: Value) {
    let n = kb.numel(ty);
    let zero = kb.int(0);
    kb.vec_loop(zero, n, |kb, i, lane| {
        let z = kb.cst(lane, 0.0);
        kb.st(z, slot, i);
    });
}

/// `MaxPool` (`grad = false`: `ins` = [x]) or `MaxPoolGrad` (`ins` = [x, dy], routing each dy to
/// the first maximum of its window). `x`/`y` are the input and pooled types.
pub fn max_pool(
    kb: &mut Kb,
    win: &Window,
    x: &Type,
    y: &Type,
    out: usize,
    ins: &[usize],
    grad: bool,
) {
    let g = geo(x, y);
    let o = kb.ptr(out);
    let xp = kb.ptr(ins[0]);
    let dyp = if grad { Some(kb.ptr(ins[1])) } else { None };
    if grad {
        zero_fill(kb, x, o);
    }
    let k = win.kernel;
    each_output(kb, &g, x.batched, |kb, ib, oi, oy, ox| {
        let ninf = kb.b.ins().f32const(f32::NEG_INFINITY);
        let mut best = ninf;
        let mut arg = kb.int(-1);
        for ky in 0..k {
            for kx in 0..k {
                let (t, ok) = tap(kb, &g, win, oy, ox, ky, kx);
                let idx = kb.b.ins().iadd(ib, t);
                let v = kb.ld(types::F32, xp, idx);
                let mut better = kb.b.ins().fcmp(FloatCC::GreaterThan, v, best);
                if let Some(ok) = ok {
                    better = kb.b.ins().band(better, ok);
                }
                best = kb.b.ins().select(better, v, best);
                arg = kb.b.ins().select(better, idx, arg);
            }
        }
        match dyp {
            None => kb.st(best, o, oi),
            Some(dyp) => {
                // dx[arg] += dy (skipped when the window saw no element, arg = −1).
                let has =
                    kb.b.ins()
                        .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, arg, 0);
                let zero = kb.int(0);
                let at = kb.b.ins().select(has, arg, zero);
                let d = kb.ld(types::F32, dyp, oi);
                let z = kb.b.ins().f32const(0.0);
                let d = kb.b.ins().select(has, d, z);
                let cur = kb.ld_rw(types::F32, o, at);
                let s = kb.b.ins().fadd(cur, d);
                kb.st(s, o, at);
            }
        }
    });
}

/// `AvgPool` (`grad = false`: `ins` = [x]) or `AvgPoolGrad` (`ins` = [dy]): padding counts as
/// zeros in the k·k divisor. `x`/`y` are the image and pooled types.
pub fn avg_pool(
    kb: &mut Kb,
    win: &Window,
    x: &Type,
    y: &Type,
    out: usize,
    ins: &[usize],
    grad: bool,
) {
    let g = geo(x, y);
    let o = kb.ptr(out);
    let ip = kb.ptr(ins[0]);
    if grad {
        zero_fill(kb, x, o);
    }
    let k = win.kernel;
    let inv = 1.0 / (k * k) as f32;
    each_output(kb, &g, x.batched, |kb, ib, oi, oy, ox| {
        let zero = kb.b.ins().f32const(0.0);
        let invv = kb.b.ins().f32const(inv);
        if grad {
            let d = kb.ld(types::F32, ip, oi);
            let d = kb.b.ins().fmul(d, invv);
            for ky in 0..k {
                for kx in 0..k {
                    let (t, ok) = tap(kb, &g, win, oy, ox, ky, kx);
                    let idx = kb.b.ins().iadd(ib, t);
                    let add = match ok {
                        Some(ok) => kb.b.ins().select(ok, d, zero),
                        None => d,
                    };
                    let cur = kb.ld_rw(types::F32, o, idx);
                    let s = kb.b.ins().fadd(cur, add);
                    kb.st(s, o, idx);
                }
            }
        } else {
            let mut sum = zero;
            for ky in 0..k {
                for kx in 0..k {
                    let (t, ok) = tap(kb, &g, win, oy, ox, ky, kx);
                    let idx = kb.b.ins().iadd(ib, t);
                    let v = kb.ld(types::F32, ip, idx);
                    let v = match ok {
                        Some(ok) => kb.b.ins().select(ok, v, zero),
                        None => v,
                    };
                    sum = kb.b.ins().fadd(sum, v);
                }
            }
            let r = kb.b.ins().fmul(sum, invv);
            kb.st(r, o, oi);
        }
    });
}
