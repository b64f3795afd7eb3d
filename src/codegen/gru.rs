//! The GRU's recurrence over `B×T×·` sequences: `GruScan` (writing its `GruGates` beside h
//! when they are read) and `GruScanGrad` (writing its `GruRecurGrad` beside dxp when read).
//!
//! Each time step of a block of sequences is two passes ([`recurrence`]): the recurrent product
//! on the RNN's kernel (`rnn`'s `product`, the GEMM micro-kernel for blocks of [`ROWS`]) into
//! per-thread scratch, then the gates unit by unit (the cell), vectorized over the units:
//! - forward:  hp = b_hh + h_{t−1}·w_hh (`3H` per sequence), then r, z, n and h_t;
//! - backward: a = dh_t + dhp_{t+1}·w_hhᵀ (`H`; `w_hhᵀ` transposed once per call into
//!   scratch), then g = a + z_{t+1} ⊙ g_{t+1} (the gradient of h_t, its second term kept in
//!   scratch from the step before), dxp, dhp and the next step's z ⊙ g.
//!
//! h_{−1} = 0 is read from a row of zeros in scratch, so the gates need no branch or select.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Type as ClifType, Value};

use super::elementwise::{unary, unary_grad};
use super::kernel::Kb;
use super::lower::Scratch;
use super::rnn::{self, ld_or_zero, raw, recurrence, Bufs, RowAt, ROWS};
use crate::ir::{Op, Type, UnaryOp};

/// The per-thread scratch of a GRU kernel of node type `ty`: forward, the state panel (`H×ROWS`)
/// and hp (`ROWS×3H`); backward, `w_hhᵀ` (`3H×H`), the panel (`3H×ROWS`), a and z ⊙ g
/// (`ROWS×H` each) and dhp (`ROWS×3H`); then a row of H zeros.
pub fn scratch(op: &Op, ty: &Type) -> Scratch {
    let per = if matches!(op, Op::GruScanGrad) {
        let h = ty.last() / 3;
        3 * h * h + 3 * h * ROWS + 2 * ROWS * h + ROWS * 3 * h + h
    } else {
        let h = ty.last();
        h * ROWS + ROWS * 3 * h + h
    };
    Scratch {
        per,
        batched: false,
        per_thread: true,
    }
}

/// `ptr + 4·elems` bytes.
fn offset(kb: &mut Kb, ptr: Value, elems: usize) -> Value {
    kb.b.ins().iadd_imm_s(ptr, (4 * elems) as i64)
}

/// The address of h_{t−1} of the sequence whose step t starts at element `base` of `hs`: the
/// row before it, or the zeros at t = 0.
fn prev_row(kb: &mut Kb, hs: Value, zeros: Value, base: Value, t: Value, h: usize) -> Value {
    let at_first = kb.b.ins().icmp_imm_s(IntCC::Equal, t, 0);
    let prev = kb.b.ins().iadd_imm_s(base, -(h as i64));
    let prev = kb.addr(hs, prev, 4);
    kb.b.ins().select(at_first, zeros, prev)
}

/// Loads of three or four gate blocks of H units at `base + j + k·H`.
fn load_blocks<const K: usize>(
    kb: &mut Kb,
    lane: ClifType,
    ptr: Value,
    base: Value,
    j: Value,
    h: usize,
    rw: bool,
) -> [Value; K] {
    std::array::from_fn(|k| {
        let i = kb.b.ins().iadd(base, j);
        let i = kb.b.ins().iadd_imm_s(i, (k * h) as i64);
        if rw {
            kb.ld_rw(lane, ptr, i)
        } else {
            kb.ld(lane, ptr, i)
        }
    })
}

/// Stores `vals` as gate blocks of H units at `base + j + k·H`.
fn store_blocks(kb: &mut Kb, vals: &[Value], ptr: Value, base: Value, j: Value, h: usize) {
    for (k, &v) in vals.iter().enumerate() {
        let i = kb.b.ins().iadd(base, j);
        let i = kb.b.ins().iadd_imm_s(i, (k * h) as i64);
        kb.st(v, ptr, i);
    }
}

/// `GruScan`: `ins` = [xp, w_hh, b_hh]; the gates go to slot `gates` when given; `scratch` as
/// [`scratch`] gives.
pub fn scan(
    kb: &mut Kb,
    ty: &Type,
    out: usize,
    ins: &[usize],
    gates: Option<usize>,
    scratch: usize,
) {
    let (t_len, h) = (ty.dims[0], ty.dims[1]);
    let (out, xp, w, bias) = (kb.ptr(out), kb.ptr(ins[0]), kb.ptr(ins[1]), kb.ptr(ins[2]));
    let gates = gates.map(|s| kb.ptr(s));
    let pack = kb.ptr(scratch);
    let hp = offset(kb, pack, h * ROWS);
    let zeros = offset(kb, hp, ROWS * 3 * h);
    // h_{−1} = 0.
    let n = kb.int(h as i64);
    kb.zero_fill(zeros, n);
    let (zero, hv) = (kb.int(0), kb.int(h as i64));
    // hp_t = b_hh + h_{t−1}·w_hh into the block's scratch (the bias the same for every row).
    let place = |kb: &mut Kb, row: Value, q: usize| {
        let base = kb.b.ins().imul_imm_s(row, h as i64);
        RowAt {
            init: zero,
            state: kb.b.ins().iadd_imm_s(base, -(h as i64)),
            dest: kb.int((q * 3 * h) as i64),
        }
    };
    let cell = |kb: &mut Kb, row: Value, q: usize, t: Value| {
        let base = kb.b.ins().imul_imm_s(row, h as i64);
        let xbase = kb.b.ins().imul_imm_s(row, 3 * h as i64);
        let gbase = kb.b.ins().imul_imm_s(row, 4 * h as i64);
        let hbase = kb.int((q * 3 * h) as i64);
        let prev = prev_row(kb, out, zeros, base, t, h);
        kb.vec_loop(zero, hv, |kb, j, lane| {
            let [xr, xz, xn] = load_blocks(kb, lane, xp, xbase, j, h, false);
            let [hr, hz, hn] = load_blocks(kb, lane, hp, hbase, j, h, true);
            let r = kb.b.ins().fadd(xr, hr);
            let r = unary(kb, UnaryOp::Sigmoid, r, lane);
            let z = kb.b.ins().fadd(xz, hz);
            let z = unary(kb, UnaryOp::Sigmoid, z, lane);
            let n = kb.b.ins().fma(r, hn, xn);
            let n = unary(kb, UnaryOp::Tanh, n, lane);
            // h = (1 − z)·n + z·h_{t−1} = n + z·(h_{t−1} − n)
            let hprev = kb.ld_rw(lane, prev, j);
            let d = kb.b.ins().fsub(hprev, n);
            let hv = kb.b.ins().fma(z, d, n);
            let i = kb.b.ins().iadd(base, j);
            kb.st(hv, out, i);
            if let Some(gp) = gates {
                store_blocks(kb, &[r, z, n, hn], gp, gbase, j, h);
            }
        });
    };
    let bufs = Bufs {
        init: bias,
        state: out,
        dest: hp,
        m: w,
        m_written: false,
        pack,
        finish: &raw,
    };
    recurrence(kb, t_len, (h, 3 * h), false, &bufs, &place, &cell);
}

/// `GruScanGrad`: `ins` = [h, gates, w_hh, dh]; dhp goes to slot `recur` when given; `scratch`
/// as [`scratch`] gives.
pub fn scan_grad(
    kb: &mut Kb,
    ty: &Type,
    out: usize,
    ins: &[usize],
    recur: Option<usize>,
    scratch: usize,
) {
    let (t_len, h) = (ty.dims[0], ty.dims[1] / 3);
    let (out, hs, gates, w, dh) = (
        kb.ptr(out),
        kb.ptr(ins[0]),
        kb.ptr(ins[1]),
        kb.ptr(ins[2]),
        kb.ptr(ins[3]),
    );
    let recur = recur.map(|s| kb.ptr(s));
    let wt = kb.ptr(scratch);
    let pack = offset(kb, wt, 3 * h * h);
    let acc = offset(kb, pack, 3 * h * ROWS);
    let carry = offset(kb, acc, ROWS * h);
    let dhp = offset(kb, carry, ROWS * h);
    let zeros = offset(kb, dhp, ROWS * 3 * h);
    // h_{−1} = 0.
    let n = kb.int(h as i64);
    kb.zero_fill(zeros, n);
    rnn::transpose(kb, w, wt, h, 3 * h);
    let (zero, hv) = (kb.int(0), kb.int(h as i64));
    // a = dh_t + dhp_{t+1}·w_hhᵀ into the block's scratch, from dhp of the step after.
    let place = |kb: &mut Kb, row: Value, q: usize| RowAt {
        init: kb.b.ins().imul_imm_s(row, h as i64),
        state: kb.int((q * 3 * h) as i64),
        dest: kb.int((q * h) as i64),
    };
    let cell = |kb: &mut Kb, row: Value, q: usize, t: Value| {
        let base = kb.b.ins().imul_imm_s(row, h as i64);
        let xbase = kb.b.ins().imul_imm_s(row, 3 * h as i64);
        let gbase = kb.b.ins().imul_imm_s(row, 4 * h as i64);
        let (sq, sq3) = (kb.int((q * h) as i64), kb.int((q * 3 * h) as i64));
        let prev = prev_row(kb, hs, zeros, base, t, h);
        // z ⊙ g of the step after the last: none.
        let before_last = kb.b.ins().icmp_imm_s(IntCC::NotEqual, t, t_len as i64 - 1);
        kb.vec_loop(zero, hv, |kb, j, lane| {
            let si = kb.b.ins().iadd(sq, j);
            let a = kb.ld_rw(lane, acc, si);
            let c = ld_or_zero(kb, lane, carry, si, si, before_last);
            let g = kb.b.ins().fadd(a, c);
            let [r, z, n, hn] = load_blocks(kb, lane, gates, gbase, j, h, false);
            let hprev = kb.ld_rw(lane, prev, j);
            let one = kb.cst(lane, 1.0);
            // dn = g·(1 − z)·(1 − n²)
            let omz = kb.b.ins().fsub(one, z);
            let gn = kb.b.ins().fmul(g, omz);
            let dn = unary_grad(kb, UnaryOp::Tanh, n, gn, lane);
            // dz = g·(h_{t−1} − n)·z(1 − z)
            let d = kb.b.ins().fsub(hprev, n);
            let gz = kb.b.ins().fmul(g, d);
            let zz = kb.b.ins().fmul(z, omz);
            let dz = kb.b.ins().fmul(gz, zz);
            // dr = dn·hp_n·r(1 − r)
            let omr = kb.b.ins().fsub(one, r);
            let rr = kb.b.ins().fmul(r, omr);
            let dnh = kb.b.ins().fmul(dn, hn);
            let dr = kb.b.ins().fmul(dnh, rr);
            let dnr = kb.b.ins().fmul(dn, r);
            store_blocks(kb, &[dr, dz, dn], out, xbase, j, h);
            store_blocks(kb, &[dr, dz, dnr], dhp, sq3, j, h);
            if let Some(rp) = recur {
                store_blocks(kb, &[dr, dz, dnr], rp, xbase, j, h);
            }
            let zg = kb.b.ins().fmul(z, g);
            kb.st(zg, carry, si);
        });
    };
    let bufs = Bufs {
        init: dh,
        state: dhp,
        dest: acc,
        m: wt,
        m_written: true,
        pack,
        finish: &raw,
    };
    recurrence(kb, t_len, (3 * h, h), true, &bufs, &place, &cell);
}
