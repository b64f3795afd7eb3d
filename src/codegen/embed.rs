//! Ops on integer ids: `Embedding` (row gather), `EmbeddingGrad` (scatter-add in id order) and
//! `OneHot`. An id outside the table reads a zero row and contributes nothing (loads use a
//! clamped index, so no id can reach outside a buffer).

use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value};

use super::elementwise::clamp_index;
use super::kernel::Kb;
use crate::ir::Type;

/// Loads id `r` (i32) and returns (id clamped into `0..n`, in-range flag).
fn id(kb: &mut Kb, ids: Value, r: Value, n: usize) -> (Value, Value) {
    let a = kb.addr(ids, r, 4);
    let v =
        kb.b.ins()
            .sload32(MemFlagsData::trusted().with_readonly(), a, 0);
    clamp_index(kb, v, n)
}

/// `out[r, :] = w[ids[r], :]`; `ids` is the ids' type, `v`×`e` the table.
pub fn embedding(kb: &mut Kb, ids: &Type, v: usize, e: usize, out: usize, ins: &[usize]) {
    let r = kb.numel(ids);
    let (o, ip, w) = (kb.ptr(out), kb.ptr(ins[0]), kb.ptr(ins[1]));
    let zero = kb.int(0);
    let ev = kb.int(e as i64);
    kb.for_range(zero, r, |kb, row| {
        let (cid, ok) = id(kb, ip, row, v);
        let src = kb.b.ins().imul_imm_s(cid, e as i64);
        let dst = kb.b.ins().imul_imm_s(row, e as i64);
        kb.vec_loop(zero, ev, |kb, j, lane| {
            let si = kb.b.ins().iadd(src, j);
            let x = kb.ld(lane, w, si);
            let z = kb.cst(lane, 0.0);
            let x = kb.b.ins().select(ok, x, z);
            let di = kb.b.ins().iadd(dst, j);
            kb.st(x, o, di);
        });
    });
}

/// `out = 0; out[ids[r], :] += dy[r, :]` for r in order.
pub fn embedding_grad(kb: &mut Kb, ids: &Type, v: usize, e: usize, out: usize, ins: &[usize]) {
    let r = kb.numel(ids);
    let (o, ip, dy) = (kb.ptr(out), kb.ptr(ins[0]), kb.ptr(ins[1]));
    let total = kb.int((v * e) as i64);
    kb.zero_fill(o, total);
    let zero = kb.int(0);
    let ev = kb.int(e as i64);
    kb.for_range(zero, r, |kb, row| {
        let (cid, ok) = id(kb, ip, row, v);
        let dst = kb.b.ins().imul_imm_s(cid, e as i64);
        let src = kb.b.ins().imul_imm_s(row, e as i64);
        kb.vec_loop(zero, ev, |kb, j, lane| {
            let si = kb.b.ins().iadd(src, j);
            let d = kb.ld(lane, dy, si);
            let z = kb.cst(lane, 0.0);
            let d = kb.b.ins().select(ok, d, z);
            let di = kb.b.ins().iadd(dst, j);
            let cur = kb.ld_rw(lane, o, di);
            let s = kb.b.ins().fadd(cur, d);
            kb.st(s, o, di);
        });
    });
}

/// `out[r, j] = (ids[r] == j)` for `j < n`.
pub fn one_hot(kb: &mut Kb, ids: &Type, n: usize, out: usize, input: usize) {
    let r = kb.numel(ids);
    let (o, ip) = (kb.ptr(out), kb.ptr(input));
    let total = kb.b.ins().imul_imm_s(r, n as i64);
    kb.zero_fill(o, total);
    let zero = kb.int(0);
    kb.for_range(zero, r, |kb, row| {
        let (cid, ok) = id(kb, ip, row, n);
        let one = kb.b.ins().f32const(1.0);
        let z = kb.b.ins().f32const(0.0);
        let x = kb.b.ins().select(ok, one, z);
        let di = kb.b.ins().imul_imm_s(row, n as i64);
        let di = kb.b.ins().iadd(di, cid);
        kb.st(x, o, di);
    });
}
