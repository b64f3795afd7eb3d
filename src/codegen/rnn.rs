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
//! remainder of fewer than 8 sequences (batch-1 sampling) runs a one-row loop. That product of
//! one step ([`product`]) and the walk over blocks of sequences ([`blocks`]) serve the GRU's
//! kernels too ([`super::gru`]).

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

/// One recurrence: sizes, buffers (as pointers) and the direction.
struct Recur {
    t_len: usize,
    h: usize,
    act: UnaryOp,
    /// Backward (walks t down, applies act' through `hv`).
    grad: bool,
    out: Value,
    init: Value,
    m: Value,
    /// The forward output h (backward only).
    hv: Option<Value>,
    /// The packed state panel.
    pack: Value,
}

fn dims(ty: &Type) -> (usize, usize) {
    (ty.dims[0], ty.dims[1])
}

/// `h_t = act(xp_t + h_{t−1}·w)`, `ins` = [xp, w]; `scratch` as [`scratch`] gives.
pub fn scan(kb: &mut Kb, act: UnaryOp, ty: &Type, out: usize, ins: &[usize], scratch: usize) {
    let (t_len, h) = dims(ty);
    let (out, init, m) = (kb.ptr(out), kb.ptr(ins[0]), kb.ptr(ins[1]));
    let pack = kb.ptr(scratch);
    recur(
        kb,
        &Recur {
            t_len,
            h,
            act,
            grad: false,
            out,
            init,
            m,
            hv: None,
            pack,
        },
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
    recur(
        kb,
        &Recur {
            t_len,
            h,
            act,
            grad: true,
            out,
            init,
            m: wt,
            hv: Some(hv),
            pack,
        },
    );
}

fn recur(kb: &mut Kb, r: &Recur) {
    blocks(kb, |kb, b, rows| steps(kb, r, b, rows));
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
pub fn blocks(kb: &mut Kb, mut body: impl FnMut(&mut Kb, Value, usize)) {
    let batch = kb.batch;
    let zero = kb.int(0);
    let full = kb.b.ins().band_imm_s(batch, !(ROWS as i64 - 1));
    kb.for_step(zero, full, ROWS as i64, |kb, b| body(kb, b, ROWS));
    kb.for_step(full, batch, 1, |kb, b| body(kb, b, 1));
}

/// One step's product for a block of sequences: `dest_q = finish(init_q + state_q·m)` over
/// `n` units, `state_q` of `kend` units (0 at the first step, where there is no state yet).
pub struct Product<'f> {
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

/// All time steps of sequences `b .. b + rows`.
fn steps(kb: &mut Kb, r: &Recur, b: Value, rows: usize) {
    let (t_len, h) = (r.t_len, r.h);
    let hv = kb.int(h as i64);
    let zero = kb.int(0);
    kb.for_n(t_len, |kb, tt| {
        // t walks up (forward) or down (backward); `src` is the step the state comes from.
        let (t, edge) = if r.grad {
            let last = kb.int(t_len as i64 - 1);
            (kb.b.ins().isub(last, tt), (t_len - 1) as i64)
        } else {
            (tt, 0)
        };
        let at_edge = kb.b.ins().icmp_imm_s(IntCC::Equal, t, edge);
        let kend = kb.b.ins().select(at_edge, zero, hv);
        let rows_at: Vec<RowAt> = (0..rows)
            .map(|q| {
                let row = kb.b.ins().iadd_imm_s(b, q as i64);
                let row = kb.b.ins().imul_imm_s(row, t_len as i64);
                let row = kb.b.ins().iadd(row, t);
                let base = kb.b.ins().imul_imm_s(row, h as i64);
                let src =
                    kb.b.ins()
                        .iadd_imm_s(base, if r.grad { h as i64 } else { -(h as i64) });
                RowAt {
                    init: base,
                    state: src,
                    dest: base,
                }
            })
            .collect();
        let finish = |kb: &mut Kb, a, i, lane| finish(kb, r, a, i, lane);
        let p = Product {
            n: h,
            m: r.m,
            m_written: r.grad,
            init: r.init,
            state: r.out,
            dest: r.out,
            pack: r.pack,
            rows: rows_at,
            kend,
            zero,
            finish: &finish,
        };
        product(kb, &p);
    });
}

/// The product `p` for its block of sequences (of [`ROWS`] on the GEMM micro-kernel, or of
/// one).
pub fn product(kb: &mut Kb, p: &Product) {
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

/// `f` of the accumulated `a` at element `i`: the activation, or backward `act'(h) ⊙ a`.
fn finish(kb: &mut Kb, r: &Recur, a: Value, i: Value, lane: ClifType) -> Value {
    match r.hv {
        None => unary(kb, r.act, a, lane),
        Some(hp) => {
            // act' through the output h (relu: h > 0 iff a > 0); for log, via a = exp(h).
            let hval = kb.ld(lane, hp, i);
            let dv = if r.act == UnaryOp::Log {
                math::emit_exp(&mut kb.b, hval)
            } else {
                hval
            };
            unary_grad(kb, r.act, dv, a, lane)
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
