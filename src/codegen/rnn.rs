//! Recurrences over `B×T×H` sequences: `RnnScan` (the forward scan), `RnnScanGrad`
//! (backpropagation through time) and `TimeShift`.
//!
//! Both scans are one recurrence ([`Recur`]), `out_t = f(init_t + v_{t±1}·M)`, walked step by
//! step (the LSTM's scans, [`super::lstm`], are the same recurrence with their own buffers'
//! strides and a cell after each step's product):
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
//! remainder of fewer than 8 sequences (batch-1 sampling) runs a one-row loop.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, Type as ClifType, Value};

use super::elementwise::{unary, unary_grad};
use super::gemm::{emit_tile_update, Tile, TileOperands};
use super::kernel::{Kb, F32X4};
use super::lower::Scratch;
use super::math;
use crate::ir::{Op, Type, UnaryOp};

/// Sequences per block: the GEMM tile's rows.
pub(super) const ROWS: usize = 8;
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

/// A buffer a recurrence reads or writes at each (sequence, step): element
/// `(b·T + t)·stride + off`, or with `block` (per-thread scratch of the current block of
/// sequences, written and read within a step) `q·stride + off` for the block's `q`-th sequence.
#[derive(Clone, Copy)]
pub(super) struct At {
    pub p: Value,
    pub stride: usize,
    pub off: usize,
    pub block: bool,
}

impl At {
    /// A `B×T×n` buffer, all of each step.
    pub fn all(p: Value, n: usize) -> At {
        At {
            p,
            stride: n,
            off: 0,
            block: false,
        }
    }
}

/// What is stored of each accumulated product.
pub(super) enum Finish {
    /// `act(a)`.
    Act(UnaryOp),
    /// `act'(h) ⊙ a`, through the forward output `h` (laid out as the destination).
    ActGrad(UnaryOp, Value),
    /// `a` itself.
    Raw,
}

/// The work after each step's product, per sequence: `(kb, b·T + t, q, t)` with `q` the
/// sequence's row in its block.
pub(super) type Cell<'a> = &'a dyn Fn(&mut Kb, Value, usize, Value);

/// One recurrence, `dest_t = f(init_t + state_{t±1}·M)` with `M` a `k×n` matrix: sizes,
/// buffers (as pointers) and the direction.
pub(super) struct Recur<'a> {
    pub t_len: usize,
    /// The state's width, the product's depth.
    pub k: usize,
    /// The product's width.
    pub n: usize,
    /// Backward: walks t down, the state one step ahead.
    pub grad: bool,
    /// The state of the step before (or after): `k` elements from there.
    pub state: At,
    /// What each product starts at: `n` elements.
    pub init: At,
    /// Where `f` of each product is stored: `n` elements.
    pub dest: At,
    pub m: Value,
    /// Whether `M` is written by this kernel (a transposed copy): no read-only loads of it.
    pub m_written: bool,
    /// The packed state panel (`k×ROWS`).
    pub pack: Value,
    pub finish: Finish,
    /// What runs after each step's products, if anything (an LSTM's cell).
    pub cell: Option<Cell<'a>>,
}

/// A sequence's places at one step: the row `b·T + t` and the first elements of its init,
/// destination and state (one step back or ahead).
#[derive(Clone, Copy)]
struct RowAt {
    row: Value,
    init: Value,
    dest: Value,
    src: Value,
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
            k: h,
            n: h,
            grad: false,
            state: At::all(out, h),
            init: At::all(init, h),
            dest: At::all(out, h),
            m,
            m_written: false,
            pack,
            finish: Finish::Act(act),
            cell: None,
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
            k: h,
            n: h,
            grad: true,
            state: At::all(out, h),
            init: At::all(init, h),
            dest: At::all(out, h),
            m: wt,
            m_written: true,
            pack,
            finish: Finish::ActGrad(act, hv),
            cell: None,
        },
    );
}

/// `wt[k, j] = w[j, k]` for `w` of `rows×cols`.
pub(super) fn transpose(kb: &mut Kb, w: Value, wt: Value, rows: usize, cols: usize) {
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

/// Emits the recurrence over every sequence of the batch: blocks of [`ROWS`], then one by one.
pub(super) fn recur(kb: &mut Kb, r: &Recur) {
    let batch = kb.batch;
    let zero = kb.int(0);
    let full = kb.b.ins().band_imm_s(batch, !(ROWS as i64 - 1));
    kb.for_step(zero, full, ROWS as i64, |kb, b| steps(kb, r, b, ROWS));
    kb.for_step(full, batch, 1, |kb, b| steps(kb, r, b, 1));
}

/// All time steps of sequences `b .. b + rows`.
fn steps(kb: &mut Kb, r: &Recur, b: Value, rows: usize) {
    let (t_len, n) = (r.t_len, r.n);
    let kv = kb.int(r.k as i64);
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
        let kend = kb.b.ins().select(at_edge, zero, kv);
        let bases: Vec<RowAt> = (0..rows)
            .map(|q| {
                let row = kb.b.ins().iadd_imm_s(b, q as i64);
                let row = kb.b.ins().imul_imm_s(row, t_len as i64);
                let row = kb.b.ins().iadd(row, t);
                // Each stride's product once (an rnn's buffers share one).
                let mut muls: Vec<(usize, Value)> = Vec::new();
                let mut at = |kb: &mut Kb, a: &At, step: i64| {
                    if a.block {
                        return kb.int((q * a.stride + a.off) as i64);
                    }
                    let base = match muls.iter().find(|(s, _)| *s == a.stride) {
                        Some(&(_, v)) => v,
                        None => {
                            let v = kb.b.ins().imul_imm_s(row, a.stride as i64);
                            muls.push((a.stride, v));
                            v
                        }
                    };
                    let off = a.off as i64 + step * a.stride as i64;
                    if off == 0 {
                        base
                    } else {
                        kb.b.ins().iadd_imm_s(base, off)
                    }
                };
                let dest = at(kb, &r.dest, 0);
                let init = at(kb, &r.init, 0);
                let src = at(kb, &r.state, if r.grad { 1 } else { -1 });
                RowAt {
                    row,
                    init,
                    dest,
                    src,
                }
            })
            .collect();
        let (a, c, d) = if rows == ROWS {
            // The panel: pack[k·ROWS + q] = state of sequence q at step `src`, unit k.
            kb.for_range(zero, kend, |kb, k| {
                let at = kb.b.ins().imul_imm_s(k, ROWS as i64);
                for (q, ra) in bases.iter().enumerate() {
                    let si = kb.b.ins().iadd(ra.src, k);
                    let s = kb.ld_rw(types::F32, r.state.p, si);
                    let di = kb.b.ins().iadd_imm_s(at, q as i64);
                    kb.st(s, r.pack, di);
                }
            });
            let n4 = (n as i64 / 4) * 4;
            let (c, d) = (kb.int(n4), kb.int(n as i64));
            kb.for_step(zero, c, 4, |kb, j| tile_units(kb, r, &bases, kend, j));
            (c, c, d)
        } else {
            // Units in blocks of VECS vectors, then single vectors, then scalars.
            let blk = (VECS * 4) as i64;
            let (n16, n4) = ((n as i64 / blk) * blk, (n as i64 / 4) * 4);
            let (a, c, d) = (kb.int(n16), kb.int(n4), kb.int(n as i64));
            kb.for_step(zero, a, blk, |kb, j| {
                units(kb, r, &bases, kend, j, F32X4, VECS)
            });
            (a, c, d)
        };
        kb.for_step(a, c, 4, |kb, j| units(kb, r, &bases, kend, j, F32X4, 1));
        kb.for_step(c, d, 1, |kb, j| {
            units(kb, r, &bases, kend, j, types::F32, 1)
        });
        if let Some(cell) = r.cell {
            for (q, ra) in bases.iter().enumerate() {
                cell(kb, ra.row, q, t);
            }
        }
    });
}

/// Units `j .. j + 4` of a block of [`ROWS`] sequences on the GEMM micro-kernel: the
/// accumulators start at `init`, take the product of the panel (`kend` rows) and the matrix's
/// columns `j .. j + 4`, then `f` and the store.
fn tile_units(kb: &mut Kb, r: &Recur, bases: &[RowAt], kend: Value, j: Value) {
    let accs: Vec<Value> = bases
        .iter()
        .map(|ra| {
            let i = kb.b.ins().iadd(ra.init, j);
            kb.ld(F32X4, r.init.p, i)
        })
        .collect();
    let b = kb.addr(r.m, j, 4);
    let a_k = kb.int((4 * ROWS) as i64);
    let b_k = kb.int((4 * r.n) as i64);
    let ops = TileOperands {
        a: r.pack,
        b,
        a_k,
        b_k,
        kc: kend,
        written: true,
        a_bcast: false,
    };
    let tile = Tile { mr: ROWS, nr: 4 };
    let accs = emit_tile_update(&mut kb.b, types::I64, tile, ops, &accs);
    for (ra, a) in bases.iter().zip(accs) {
        let i = kb.b.ins().iadd(ra.dest, j);
        let y = finish(kb, r, a, i, F32X4);
        kb.st(y, r.dest.p, i);
    }
}

/// Units `j .. j + vecs·lanes` of every row block: accumulate, then apply f and store.
fn units(
    kb: &mut Kb,
    r: &Recur,
    bases: &[RowAt],
    kend: Value,
    j: Value,
    lane: ClifType,
    vecs: usize,
) {
    let lanes = if lane == F32X4 { 4 } else { 1 };
    let col = |kb: &mut Kb, base: Value, v: usize| {
        let x = kb.b.ins().iadd(base, j);
        kb.b.ins().iadd_imm_s(x, (v * lanes) as i64)
    };
    let mut accs = Vec::new();
    for ra in bases {
        for v in 0..vecs {
            let i = col(kb, ra.init, v);
            let x = kb.ld(lane, r.init.p, i);
            accs.push(kb.var(lane, x));
        }
    }
    let zero = kb.int(0);
    kb.for_range(zero, kend, |kb, k| {
        let mrow = kb.b.ins().imul_imm_s(k, r.n as i64);
        let ms: Vec<Value> = (0..vecs)
            .map(|v| {
                let i = col(kb, mrow, v);
                // wᵀ is written by this kernel (backward): no read-only flags for it.
                if r.m_written {
                    kb.ld_rw(lane, r.m, i)
                } else {
                    kb.ld(lane, r.m, i)
                }
            })
            .collect();
        for (q, ra) in bases.iter().enumerate() {
            let si = kb.b.ins().iadd(ra.src, k);
            let s = kb.ld_rw(types::F32, r.state.p, si);
            let s = kb.splat(lane, s);
            for (v, mv) in ms.iter().enumerate() {
                let var = accs[q * vecs + v];
                let a = kb.b.use_var(var);
                let a = kb.b.ins().fma(s, *mv, a);
                kb.b.def_var(var, a);
            }
        }
    });
    for (q, ra) in bases.iter().enumerate() {
        for v in 0..vecs {
            let i = col(kb, ra.dest, v);
            let a = kb.b.use_var(accs[q * vecs + v]);
            let y = finish(kb, r, a, i, lane);
            kb.st(y, r.dest.p, i);
        }
    }
}

/// `f` of the accumulated `a` at destination element `i`: the activation, backward
/// `act'(h) ⊙ a`, or `a`.
fn finish(kb: &mut Kb, r: &Recur, a: Value, i: Value, lane: ClifType) -> Value {
    match r.finish {
        Finish::Act(act) => unary(kb, act, a, lane),
        Finish::ActGrad(act, hp) => {
            // act' through the output h (relu: h > 0 iff a > 0); for log, via a = exp(h).
            let hval = kb.ld(lane, hp, i);
            let dv = if act == UnaryOp::Log {
                math::emit_exp(&mut kb.b, hval)
            } else {
                hval
            };
            unary_grad(kb, act, dv, a, lane)
        }
        Finish::Raw => a,
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
