//! The LSTM's kernels: `LstmScan` (the cell over time), `LstmScanGrad` (backpropagation through
//! time) and `LstmHidden` (the hidden states out of the scan's state).
//!
//! Both scans walk [`rnn`](super::rnn)'s blocks of [`ROWS`] sequences through time
//! ([`recurrence`]), each step's product on its GEMM micro-kernel (`rnn`'s `product`), with the
//! cell after each step's product:
//! - forward: the product `z_t = xp_t + h_{t−1}·w_hh` (`H×4H`) is stored raw in the state's
//!   gate places, then the cell turns them into i, f, g, o, c_t and h_t in place;
//! - backward: the product `dh'_t = dh_t + dz_{t+1}·w_hhᵀ` (`4H×H`, transposed once per call
//!   into scratch) is stored in the `i` block of dz_t, then the cell reads it and the state and
//!   writes dz_t's four blocks, carrying `dc_t⊙f_t` to the step before in per-thread scratch.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value};

use super::copy::copy;
use super::kernel::Kb;
use super::lower::Scratch;
use super::math;
use super::rnn::{ld_or_zero, raw, recurrence, transpose, Bufs, RowAt, ROWS};
use crate::ir::{Op, Type};

/// The per-thread scratch of a scan (`ty` its output): the forward's state panel (`H×ROWS`),
/// and without the state ([`Op::Lstm`]) the block's gate pre-activations (`ROWS×4H`) and cells
/// (`ROWS×H`); the gradient's `w_hhᵀ` (`4H×H`), panel (`4H×ROWS`) and carried cell gradients
/// (`ROWS×H`).
pub fn scratch(op: &Op, ty: &Type) -> Scratch {
    let per = match op {
        Op::LstmScanGrad => {
            let h = ty.last() / 4;
            4 * h * h + 4 * h * ROWS + ROWS * h
        }
        Op::Lstm => ty.last() * ROWS * 6,
        _ => ty.last() / 6 * ROWS,
    };
    Scratch {
        per,
        batched: false,
        per_thread: true,
    }
}

/// The forward scan, `ins` = [xp, w_hh]; `scratch` as [`scratch`] gives. With `keep`
/// ([`Op::LstmScan`]) every step's state `[h, c, i, f, g, o]`, the gates' pre-activations
/// stored in their places; else ([`Op::Lstm`]) the hidden states alone, the pre-activations and
/// the cells of the block's sequences in scratch.
pub fn scan(kb: &mut Kb, keep: bool, ty: &Type, out: usize, ins: &[usize], scratch: usize) {
    let (t_len, width) = (ty.dims[0], ty.dims[1]);
    let h = if keep { width / 6 } else { width };
    let (o, xp, w, pack) = (kb.ptr(out), kb.ptr(ins[0]), kb.ptr(ins[1]), kb.ptr(scratch));
    let zs = kb.b.ins().iadd_imm_s(pack, (4 * h * ROWS) as i64);
    let cs = kb.b.ins().iadd_imm_s(zs, (4 * 4 * h * ROWS) as i64);
    let cell = |kb: &mut Kb, row: Value, q: usize, t: Value| {
        let later = kb.b.ins().icmp_imm_s(IntCC::NotEqual, t, 0);
        let cells = if keep {
            let base = kb.b.ins().imul_imm_s(row, 6 * h as i64);
            let at = |kb: &mut Kb, k: i64| kb.b.ins().iadd_imm_s(base, k * h as i64);
            Cells {
                h: (o, base),
                c: (o, at(kb, 1)),
                c_prev: (o, at(kb, -5)),
                z: (o, at(kb, 2)),
                gates: true,
            }
        } else {
            let hb = kb.b.ins().imul_imm_s(row, h as i64);
            let c = kb.int((q * h) as i64);
            Cells {
                h: (o, hb),
                c: (cs, c),
                c_prev: (cs, c),
                z: (zs, kb.int((q * 4 * h) as i64)),
                gates: false,
            }
        };
        forward_cell(kb, &cells, h, later)
    };
    // z_t = xp_t + h_{t−1}·w_hh into the state's gate places, or the block's scratch.
    let place = |kb: &mut Kb, row: Value, q: usize| {
        let base = kb.b.ins().imul_imm_s(row, width as i64);
        RowAt {
            init: kb.b.ins().imul_imm_s(row, 4 * h as i64),
            state: kb.b.ins().iadd_imm_s(base, -(width as i64)),
            dest: if keep {
                kb.b.ins().iadd_imm_s(base, 2 * h as i64)
            } else {
                kb.int((q * 4 * h) as i64)
            },
        }
    };
    let bufs = Bufs {
        init: xp,
        state: o,
        dest: if keep { o } else { zs },
        m: w,
        m_written: false,
        pack,
        finish: &raw,
    };
    recurrence(kb, t_len, (h, 4 * h), false, &bufs, &place, &cell);
}

/// Where one step of one sequence reads and writes its cell, as (buffer, first element) of `H`
/// units each: the gate pre-activations (four blocks), replaced by the gates when `gates`; c of
/// the step before, and this step's c and h.
struct Cells {
    h: (Value, Value),
    c: (Value, Value),
    c_prev: (Value, Value),
    z: (Value, Value),
    gates: bool,
}

/// One step of one sequence: the gates from their pre-activations, c_t (c_{t−1} read as 0 at
/// the first step, when not `later`) and h_t.
fn forward_cell(kb: &mut Kb, p: &Cells, h: usize, later: Value) {
    let (zero, hv) = (kb.int(0), kb.int(h as i64));
    let place = |kb: &mut Kb, (_, base): (Value, Value), k: usize, j: Value| {
        let at = kb.b.ins().iadd(base, j);
        kb.b.ins().iadd_imm_s(at, (k * h) as i64)
    };
    kb.vec_loop(zero, hv, |kb, j, lane| {
        let z: Vec<Value> = (0..4)
            .map(|k| {
                let i = place(kb, p.z, k, j);
                kb.ld_rw(lane, p.z.0, i)
            })
            .collect();
        let i = math::emit_sigmoid(&mut kb.b, z[0]);
        let f = math::emit_sigmoid(&mut kb.b, z[1]);
        let g = math::emit_tanh(&mut kb.b, z[2]);
        let o = math::emit_sigmoid(&mut kb.b, z[3]);
        // c_{t−1}: 0 at the first step (its place, one step back, may lie before the buffer).
        let (prev, here) = (place(kb, p.c_prev, 0, j), place(kb, p.c, 0, j));
        let cp = ld_or_zero(kb, lane, p.c_prev.0, prev, here, later);
        let ig = kb.b.ins().fmul(i, g);
        let c = kb.b.ins().fma(f, cp, ig);
        let tc = math::emit_tanh(&mut kb.b, c);
        let hh = kb.b.ins().fmul(o, tc);
        let hi = place(kb, p.h, 0, j);
        kb.st(hh, p.h.0, hi);
        kb.st(c, p.c.0, here);
        if p.gates {
            for (k, v) in [i, f, g, o].into_iter().enumerate() {
                let at = place(kb, p.z, k, j);
                kb.st(v, p.z.0, at);
            }
        }
    });
}

/// The gradient w.r.t. every step's gate pre-activations, `ins` = [s, w_hh, dh]; `scratch` as
/// [`scratch`] gives.
pub fn scan_grad(kb: &mut Kb, ty: &Type, out: usize, ins: &[usize], scratch: usize) {
    let (t_len, h) = (ty.dims[0], ty.dims[1] / 4);
    let (dz, s, w, dh, wt) = (
        kb.ptr(out),
        kb.ptr(ins[0]),
        kb.ptr(ins[1]),
        kb.ptr(ins[2]),
        kb.ptr(scratch),
    );
    let pack = kb.b.ins().iadd_imm_s(wt, (4 * 4 * h * h) as i64);
    let carry = kb.b.ins().iadd_imm_s(pack, (4 * 4 * h * ROWS) as i64);
    transpose(kb, w, wt, h, 4 * h);
    let bufs = GradBufs { dz, s, carry };
    let cell =
        |kb: &mut Kb, row: Value, q: usize, t: Value| backward_cell(kb, &bufs, h, t_len, row, q, t);
    // dh'_t = dh_t + dz_{t+1}·w_hhᵀ into dz_t's `i` block.
    let place = |kb: &mut Kb, row: Value, _: usize| {
        let base = kb.b.ins().imul_imm_s(row, 4 * h as i64);
        RowAt {
            init: kb.b.ins().imul_imm_s(row, h as i64),
            state: kb.b.ins().iadd_imm_s(base, 4 * h as i64),
            dest: base,
        }
    };
    let product = Bufs {
        init: dh,
        state: dz,
        dest: dz,
        m: wt,
        m_written: true,
        pack,
        finish: &raw,
    };
    recurrence(kb, t_len, (4 * h, h), true, &product, &place, &cell);
}

/// The buffers of the backward cell: dz (out), the forward state, the carried cell gradients.
struct GradBufs {
    dz: Value,
    s: Value,
    carry: Value,
}

/// One step of one sequence backwards (`row` = b·T + t, `q` its row in the block): from
/// dh'_t (in dz_t's `i` block) and the carried dc_{t+1}⊙f_{t+1}, dz_t's four blocks and the
/// carry for the step before.
fn backward_cell(
    kb: &mut Kb,
    bufs: &GradBufs,
    h: usize,
    t_len: usize,
    row: Value,
    q: usize,
    t: Value,
) {
    let &GradBufs { dz, s, carry } = bufs;
    let zb = kb.b.ins().imul_imm_s(row, 4 * h as i64);
    let sb = kb.b.ins().imul_imm_s(row, 6 * h as i64);
    let later = kb.b.ins().icmp_imm_s(IntCC::NotEqual, t, 0);
    let before_last = kb.b.ins().icmp_imm_s(IntCC::NotEqual, t, t_len as i64 - 1);
    let (zero, hv) = (kb.int(0), kb.int(h as i64));
    kb.vec_loop(zero, hv, |kb, j, lane| {
        let zi = kb.b.ins().iadd(zb, j);
        let sa = kb.b.ins().iadd(sb, j);
        let d = kb.ld_rw(lane, dz, zi);
        let st: Vec<Value> = (1..6)
            .map(|k| {
                let i = kb.b.ins().iadd_imm_s(sa, (k * h) as i64);
                kb.ld(lane, s, i)
            })
            .collect();
        let (c, i, f, g, o) = (st[0], st[1], st[2], st[3], st[4]);
        let (prev, here) = (
            kb.b.ins().iadd_imm_s(sa, -5 * h as i64),
            kb.b.ins().iadd_imm_s(sa, h as i64),
        );
        let cp = ld_or_zero(kb, lane, s, prev, here, later);
        let ci = kb.b.ins().iadd_imm_s(j, (q * h) as i64);
        let cr = ld_or_zero(kb, lane, carry, ci, ci, before_last);
        let one = kb.cst(lane, 1.0);
        let dsig = |kb: &mut Kb, v: Value| {
            let om = kb.b.ins().fsub(one, v);
            kb.b.ins().fmul(v, om)
        };
        let tc = math::emit_tanh(&mut kb.b, c);
        // dc = dh'⊙o⊙(1 − tanh²c) + dc_{t+1}⊙f_{t+1}.
        let tc2 = kb.b.ins().fmul(tc, tc);
        let dtc = kb.b.ins().fsub(one, tc2);
        let dho = kb.b.ins().fmul(d, o);
        let dc = kb.b.ins().fma(dho, dtc, cr);
        let mul3 = |kb: &mut Kb, a: Value, b: Value, c: Value| {
            let ab = kb.b.ins().fmul(a, b);
            kb.b.ins().fmul(ab, c)
        };
        let di = dsig(kb, i);
        let di = mul3(kb, dc, g, di);
        let df = dsig(kb, f);
        let df = mul3(kb, dc, cp, df);
        let g2 = kb.b.ins().fmul(g, g);
        let dg = kb.b.ins().fsub(one, g2);
        let dg = mul3(kb, dc, i, dg);
        let dout = dsig(kb, o);
        let dout = mul3(kb, d, tc, dout);
        for (k, v) in [di, df, dg, dout].into_iter().enumerate() {
            let p = kb.b.ins().iadd_imm_s(zi, (k * h) as i64);
            kb.st(v, dz, p);
        }
        let dcf = kb.b.ins().fmul(dc, f);
        kb.st(dcf, carry, ci);
    });
}

/// `out[b, t] = s[b, t][..H]`: the hidden states of the state `s` (`ty` the output's type).
pub fn hidden(kb: &mut Kb, ty: &Type, out: usize, input: usize) {
    let (t_len, h) = (ty.dims[0], ty.dims[1]);
    let (o, x) = (kb.ptr(out), kb.ptr(input));
    let zero = kb.int(0);
    let rows = kb.b.ins().imul_imm_s(kb.batch, t_len as i64);
    kb.for_range(zero, rows, |kb, r| {
        let src = kb.b.ins().imul_imm_s(r, 6 * h as i64);
        let dst = kb.b.ins().imul_imm_s(r, h as i64);
        copy(kb, (o, dst), (x, src), h);
    });
}
