//! Recurrences over `B×T×H` sequences: `RnnScan` (the forward scan), `RnnScanGrad`
//! (backpropagation through time) and `TimeShift`.
//!
//! Both scans are one recurrence, `out_t = f(init_t + v_{t±1}·M)`, walked step by step:
//! - forward:  `init = xp`, `v = h` (the output itself, one step back), `M = w_hh`,
//!   `f = act`;
//! - backward: `init = dh`, `v = da` (the output itself, one step ahead), `M = w_hhᵀ` (transposed
//!   once per call into a scratch buffer), `f = act'(h) ⊙ ·`.
//!
//! Each step's product for a block of [`ROWS`] sequences is the GEMM's 8×4 micro-kernel
//! ([`emit_tile_update`]): the block's states of the step before are packed into an `H×8`
//! panel (per-thread scratch), and each 4-unit block of the output runs the tile loop over the
//! panel and the matrix, so that every loaded weight vector serves 8 sequences and every
//! broadcast state one `fma`, with nothing but the 8 accumulators and two pointers live in the
//! loop (reading each sequence's state where it lies kept 8 row pointers live and spilled). A
//! remainder of fewer than 8 sequences (batch-1 sampling) runs a one-row loop. The walk through
//! time over blocks of sequences ([`recurrence`]), with that product at each step ([`product`])
//! and an optional cell after it, serves the GRU's and the LSTM's kernels too ([`super::gru`],
//! [`super::lstm`]), whose cells turn the product into their gates.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, Type as ClifType, Value};

use super::elementwise::{unary, unary_grad};
use super::gemm::{emit_tile_update, Tile, TileOperands};
use super::kernel::{Kb, F32X4};
use super::lower::Scratch;
use super::math;
use crate::ir::{Op, Type, UnaryOp};

/// Sequences per block: the GEMM tile's rows.
pub const ROWS: usize = 8;
/// f32x4 vectors of units per block in the one-row loop.
const VECS: usize = 4;

/// The per-thread scratch of a scan: for the gradient `Wᵀ` (`H×H`), then the packed state
/// panel (`H×ROWS`).
pub fn scratch(op: &Op, ty: &Type) -> Scratch {
    let h = ty.last();
    let wt = if matches!(op, Op::RnnScanGrad { .. }) {
        h * h
    } else {
        0
    };
    Scratch {
        per: wt + h * ROWS,
        batched: false,
        per_thread: true,
    }
}

fn dims(ty: &Type) -> (usize, usize) {
    (ty.dims[0], ty.dims[1])
}

/// `h_t = act(xp_t + h_{t−1}·w)`, `ins` = [xp, w]; `scratch` as [`scratch`] gives.
pub fn scan(kb: &mut Kb, act: UnaryOp, ty: &Type, out: usize, ins: &[usize], scratch: usize) {
    let (t_len, h) = dims(ty);
    let (out, init, m) = (kb.ptr(out), kb.ptr(ins[0]), kb.ptr(ins[1]));
    let pack = kb.ptr(scratch);
    let finish = |kb: &mut Kb, a, _, lane| unary(kb, act, a, lane);
    let bufs = Bufs {
        init,
        state: out,
        dest: out,
        m,
        m_written: false,
        pack,
        finish: &finish,
    };
    recurrence(
        kb,
        t_len,
        (h, h),
        false,
        &bufs,
        &at_row(h, -1),
        &|_, _, _, _| {},
    );
}

/// `da_t = act'(h_t) ⊙ (dh_t + da_{t+1}·wᵀ)`, `ins` = [h, w, dh]; `scratch` as [`scratch`]
/// gives (`wᵀ`, then the panel).
pub fn scan_grad(kb: &mut Kb, act: UnaryOp, ty: &Type, out: usize, ins: &[usize], scratch: usize) {
    let (t_len, h) = dims(ty);
    let (out, hv, w, init, wt) = (
        kb.ptr(out),
        kb.ptr(ins[0]),
        kb.ptr(ins[1]),
        kb.ptr(ins[2]),
        kb.ptr(scratch),
    );
    let pack = kb.b.ins().iadd_imm_s(wt, (4 * h * h) as i64);
    transpose(kb, w, wt, h, h);
    // act' through the output h (relu: h > 0 iff a > 0); for log, via a = exp(h).
    let finish = |kb: &mut Kb, a, i, lane| {
        let hval = kb.ld(lane, hv, i);
        let dv = if act == UnaryOp::Log {
            math::emit_exp(&mut kb.b, hval)
        } else {
            hval
        };
        unary_grad(kb, act, dv, a, lane)
    };
    let bufs = Bufs {
        init,
        state: out,
        dest: out,
        m: wt,
        m_written: true,
        pack,
        finish: &finish,
    };
    recurrence(
        kb,
        t_len,
        (h, h),
        true,
        &bufs,
        &at_row(h, 1),
        &|_, _, _, _| {},
    );
}

/// An rnn's places in row `row` (= b·T + t) of its `B×T×h` buffers: its init and result
/// there, its state `step` rows away (the step before, or after backwards).
fn at_row(h: usize, step: i64) -> impl Fn(&mut Kb, Value, usize) -> RowAt {
    move |kb, row, _| {
        let base = kb.b.ins().imul_imm_s(row, h as i64);
        RowAt {
            init: base,
            state: kb.b.ins().iadd_imm_s(base, step * h as i64),
            dest: base,
        }
    }
}

/// `wt[k, j] = w[j, k]` for `w` of `rows×cols` (a recurrent weight transposed into scratch for
/// the backward product).
pub fn transpose(kb: &mut Kb, w: Value, wt: Value, rows: usize, cols: usize) {
    kb.for_n(rows, |kb, j| {
        kb.for_n(cols, |kb, k| {
            let src = kb.b.ins().imul_imm_s(j, cols as i64);
            let src = kb.b.ins().iadd(src, k);
            let dst = kb.b.ins().imul_imm_s(k, rows as i64);
            let dst = kb.b.ins().iadd(dst, j);
            let v = kb.ld(types::F32, w, src);
            kb.st(v, wt, dst);
        });
    });
}

/// `body(b, rows)` for every block of sequences `b .. b + rows` of the batch: [`ROWS`] at a
/// time, then one at a time.
fn blocks(kb: &mut Kb, mut body: impl FnMut(&mut Kb, Value, usize)) {
    let batch = kb.batch;
    let zero = kb.int(0);
    let full = kb.b.ins().band_imm_s(batch, !(ROWS as i64 - 1));
    kb.for_step(zero, full, ROWS as i64, |kb, b| body(kb, b, ROWS));
    kb.for_step(full, batch, 1, |kb, b| body(kb, b, 1));
}

/// The buffers of one recurrence: each step's product `dest = finish(init + state·m)` (`m` of
/// `k×n`), `state` one step back (forward) or ahead (`grad`), and the packed panel.
pub struct Bufs<'f> {
    pub init: Value,
    pub state: Value,
    pub dest: Value,
    pub m: Value,
    /// Whether the kernel writes `m` (a transposed copy in scratch).
    pub m_written: bool,
    pub pack: Value,
    /// `finish(kb, acc, dest element, lane type)`: the value stored ([`raw`] for none).
    pub finish: &'f dyn Fn(&mut Kb, Value, Value, ClifType) -> Value,
}

/// The accumulated product itself, as a [`Bufs::finish`].
pub fn raw(_: &mut Kb, a: Value, _: Value, _: ClifType) -> Value {
    a
}

/// Every sequence of the batch through time (up, or down when `grad`), blocks of [`ROWS`]
/// sequences at a time: at each step the product of [`Bufs`] (`k` state units, `n` result
/// units), the places of sequence `q` of the block in row `row` = b·T + t given by
/// `place(kb, row, q)`, then `cell(kb, row, q, t)` for each sequence.
#[allow(clippy::too_many_arguments)]
pub fn recurrence(
    kb: &mut Kb,
    t_len: usize,
    (k, n): (usize, usize),
    grad: bool,
    bufs: &Bufs,
    place: &dyn Fn(&mut Kb, Value, usize) -> RowAt,
    cell: &dyn Fn(&mut Kb, Value, usize, Value),
) {
    let (zero, kv) = (kb.int(0), kb.int(k as i64));
    blocks(kb, |kb, b, n_rows| {
        kb.for_n(t_len, |kb, tt| {
            // The state is 0 at the first step taken (the last one, backwards).
            let (t, edge) = if grad {
                let last = kb.int(t_len as i64 - 1);
                (kb.b.ins().isub(last, tt), (t_len - 1) as i64)
            } else {
                (tt, 0)
            };
            let at_edge = kb.b.ins().icmp_imm_s(IntCC::Equal, t, edge);
            let kend = kb.b.ins().select(at_edge, zero, kv);
            let rows: Vec<Value> = (0..n_rows)
                .map(|q| {
                    let row = kb.b.ins().iadd_imm_s(b, q as i64);
                    let row = kb.b.ins().imul_imm_s(row, t_len as i64);
                    kb.b.ins().iadd(row, t)
                })
                .collect();
            let rows_at = rows
                .iter()
                .enumerate()
                .map(|(q, &r)| place(kb, r, q))
                .collect();
            let p = Product {
                n,
                m: bufs.m,
                m_written: bufs.m_written,
                init: bufs.init,
                state: bufs.state,
                dest: bufs.dest,
                pack: bufs.pack,
                rows: rows_at,
                kend,
                zero,
                finish: bufs.finish,
            };
            product(kb, &p);
            for (q, &row) in rows.iter().enumerate() {
                cell(kb, row, q, t);
            }
        });
    });
}

/// `s[i]` when `keep`, else 0, read from `s[i]` or, when not `keep`, the in-bounds `s[alt]`.
pub fn ld_or_zero(
    kb: &mut Kb,
    lane: ClifType,
    s: Value,
    i: Value,
    alt: Value,
    keep: Value,
) -> Value {
    let at = kb.b.ins().select(keep, i, alt);
    let v = kb.ld_rw(lane, s, at);
    let z = kb.cst(lane, 0.0);
    kb.b.ins().select(keep, v, z)
}

/// One step's product for a block of sequences: `dest_q = finish(init_q + state_q·m)` over
/// `n` units, `state_q` of `kend` units (0 at the first step, where there is no state yet).
struct Product<'f> {
    /// Units of the result: the columns of `m` and its row stride.
    pub n: usize,
    pub m: Value,
    /// Whether this kernel writes `m` (a transposed copy in scratch): no read-only loads.
    pub m_written: bool,
    pub init: Value,
    pub state: Value,
    pub dest: Value,
    /// The packed state panel (`kend × ROWS`, scratch).
    pub pack: Value,
    /// Per sequence of the block: the element offsets of its init, its state and its result.
    pub rows: Vec<RowAt>,
    pub kend: Value,
    /// Constant 0.
    pub zero: Value,
    /// `finish(kb, acc, dest element, lane type)`: the value stored.
    pub finish: &'f dyn Fn(&mut Kb, Value, Value, ClifType) -> Value,
}

/// Where one sequence's operands of a [`Product`] start.
#[derive(Clone, Copy)]
pub struct RowAt {
    pub init: Value,
    pub state: Value,
    pub dest: Value,
}

/// The product `p` for its block of sequences (of [`ROWS`] on the GEMM micro-kernel, or of
/// one).
fn product(kb: &mut Kb, p: &Product) {
    let (zero, kend, h) = (p.zero, p.kend, p.n);
    let (a, c, d) = if p.rows.len() == ROWS {
        // The panel: pack[k·ROWS + q] = state of sequence q, unit k.
        kb.for_range(zero, kend, |kb, k| {
            let at = kb.b.ins().imul_imm_s(k, ROWS as i64);
            for (q, row) in p.rows.iter().enumerate() {
                let si = kb.b.ins().iadd(row.state, k);
                let s = kb.ld_rw(types::F32, p.state, si);
                let di = kb.b.ins().iadd_imm_s(at, q as i64);
                kb.st(s, p.pack, di);
            }
        });
        let h4 = (h as i64 / 4) * 4;
        let (c, d) = (kb.int(h4), kb.int(h as i64));
        kb.for_step(zero, c, 4, |kb, j| tile_units(kb, p, j));
        (c, c, d)
    } else {
        // Units in blocks of VECS vectors, then single vectors, then scalars.
        let blk = (VECS * 4) as i64;
        let (h16, h4) = ((h as i64 / blk) * blk, (h as i64 / 4) * 4);
        let (a, c, d) = (kb.int(h16), kb.int(h4), kb.int(h as i64));
        kb.for_step(zero, a, blk, |kb, j| units(kb, p, j, F32X4, VECS));
        (a, c, d)
    };
    kb.for_step(a, c, 4, |kb, j| units(kb, p, j, F32X4, 1));
    kb.for_step(c, d, 1, |kb, j| units(kb, p, j, types::F32, 1));
}

/// Units `j .. j + 4` of a block of [`ROWS`] sequences on the GEMM micro-kernel: the
/// accumulators start at `init`, take the product of the panel (`kend` rows) and the matrix's
/// columns `j .. j + 4`, then `finish` and the store.
fn tile_units(kb: &mut Kb, p: &Product, j: Value) {
    let accs: Vec<Value> = p
        .rows
        .iter()
        .map(|row| {
            let i = kb.b.ins().iadd(row.init, j);
            kb.ld(F32X4, p.init, i)
        })
        .collect();
    let b = kb.addr(p.m, j, 4);
    let a_k = kb.int((4 * ROWS) as i64);
    let b_k = kb.int((4 * p.n) as i64);
    let ops = TileOperands {
        a: p.pack,
        b,
        a_k,
        b_k,
        kc: p.kend,
        written: true,
        a_bcast: false,
    };
    let tile = Tile { mr: ROWS, nr: 4 };
    let accs = emit_tile_update(&mut kb.b, types::I64, tile, ops, &accs);
    for (row, a) in p.rows.iter().zip(accs) {
        let i = kb.b.ins().iadd(row.dest, j);
        let y = (p.finish)(kb, a, i, F32X4);
        kb.st(y, p.dest, i);
    }
}

/// Units `j .. j + vecs·lanes` of every row block: accumulate, then `finish` and store.
fn units(kb: &mut Kb, p: &Product, j: Value, lane: ClifType, vecs: usize) {
    let lanes = if lane == F32X4 { 4 } else { 1 };
    let col = |kb: &mut Kb, base: Value, v: usize| {
        let x = kb.b.ins().iadd(base, j);
        kb.b.ins().iadd_imm_s(x, (v * lanes) as i64)
    };
    let mut accs = Vec::new();
    for row in &p.rows {
        for v in 0..vecs {
            let i = col(kb, row.init, v);
            let x = kb.ld(lane, p.init, i);
            accs.push(kb.var(lane, x));
        }
    }
    let zero = kb.int(0);
    kb.for_range(zero, p.kend, |kb, k| {
        let mrow = kb.b.ins().imul_imm_s(k, p.n as i64);
        let ms: Vec<Value> = (0..vecs)
            .map(|v| {
                let i = col(kb, mrow, v);
                // A matrix this kernel writes (wᵀ, backward): no read-only flags for it.
                if p.m_written {
                    kb.ld_rw(lane, p.m, i)
                } else {
                    kb.ld(lane, p.m, i)
                }
            })
            .collect();
        for (q, row) in p.rows.iter().enumerate() {
            let si = kb.b.ins().iadd(row.state, k);
            let s = kb.ld_rw(types::F32, p.state, si);
            let s = kb.splat(lane, s);
            for (v, mv) in ms.iter().enumerate() {
                let var = accs[q * vecs + v];
                let a = kb.b.use_var(var);
                let a = kb.b.ins().fma(s, *mv, a);
                kb.b.def_var(var, a);
            }
        }
    });
    for (q, row) in p.rows.iter().enumerate() {
        for v in 0..vecs {
            let i = col(kb, row.dest, v);
            let a = kb.b.use_var(accs[q * vecs + v]);
            let y = (p.finish)(kb, a, i, lane);
            kb.st(y, p.dest, i);
        }
    }
}

/// `out[b, t] = t == 0 ? 0 : h[b, t − 1]`.
pub fn time_shift(kb: &mut Kb, ty: &Type, out: usize, input: usize) {
    let (t_len, h) = dims(ty);
    let (o, x) = (kb.ptr(out), kb.ptr(input));
    let batch = kb.batch;
    let zero = kb.int(0);
    kb.for_range(zero, batch, |kb, b| {
        let base = kb.b.ins().imul_imm_s(b, (t_len * h) as i64);
        let hv0 = kb.int(h as i64);
        kb.vec_loop(zero, hv0, |kb, j, lane| {
            let i = kb.b.ins().iadd(base, j);
            let z = kb.cst(lane, 0.0);
            kb.st(z, o, i);
        });
        let rest = kb.int(((t_len - 1) * h) as i64);
        kb.vec_loop(zero, rest, |kb, j, lane| {
            let src = kb.b.ins().iadd(base, j);
            let dst = kb.b.ins().iadd(src, hv0);
            let v = kb.ld(lane, x, src);
            kb.st(v, o, dst);
        });
    });
}
