//! Data movement along one axis: `Concat`, `Slice` and `Reverse` as copy kernels. Around the
//! axis, a value is `rows` blocks (the batch times the sample axes before it, [`Type::around`])
//! of `size · after` contiguous floats, so each op copies runs of contiguous floats from block
//! to block.

use super::kernel::Kb;
use crate::ir::Type;
use cranelift_codegen::ir::{InstBuilder, Value};

/// Copies `n` floats from element `from` of `src` to element `to` of `dst`.
pub(super) fn copy(kb: &mut Kb, (dst, to): (Value, Value), (src, from): (Value, Value), n: usize) {
    let zero = kb.int(0);
    let n = kb.int(n as i64);
    kb.vec_loop(zero, n, |kb, j, lane| {
        let s = kb.b.ins().iadd(from, j);
        let d = kb.b.ins().iadd(to, j);
        let v = kb.ld(lane, src, s);
        kb.st(v, dst, d);
    });
}

/// `for r in 0..rows` over the blocks of a value of type `t` around full-shape `axis`, with
/// the axis' size and the floats each of its entries spans.
fn for_blocks(kb: &mut Kb, t: &Type, axis: usize, body: impl FnOnce(&mut Kb, Value, usize, usize)) {
    let (before, size, after) = t.around(axis);
    let rows = kb.rows(t.batched, before);
    let zero = kb.int(0);
    kb.for_range(zero, rows, |kb, r| body(kb, r, size, after));
}

/// `Concat` of the values in slots `parts` (of types their second members) along `axis` into
/// slot `out`: each block of the output is the inputs' blocks side by side.
pub fn concat(kb: &mut Kb, parts: &[(usize, &Type)], axis: usize, out: usize) {
    let Some((_, first)) = parts.first() else {
        return;
    };
    let o = kb.ptr(out);
    let srcs: Vec<(Value, usize)> = parts
        .iter()
        .map(|(slot, t)| {
            let (_, size, after) = t.around(axis);
            (kb.ptr(*slot), size * after)
        })
        .collect();
    let total: usize = srcs.iter().map(|(_, n)| n).sum();
    for_blocks(kb, first, axis, |kb, r, _, _| {
        let base = kb.b.ins().imul_imm_s(r, total as i64);
        let mut at = 0;
        for &(src, n) in &srcs {
            let from = kb.b.ins().imul_imm_s(r, n as i64);
            let to = kb.b.ins().iadd_imm_s(base, at as i64);
            copy(kb, (o, to), (src, from), n);
            at += n;
        }
    });
}

/// `Slice` of the value in slot `input` (of type `t`): entries `start..start + len` of `axis`.
pub fn slice(
    kb: &mut Kb,
    t: &Type,
    axis: usize,
    (start, len): (usize, usize),
    out: usize,
    input: usize,
) {
    let (o, x) = (kb.ptr(out), kb.ptr(input));
    for_blocks(kb, t, axis, |kb, r, size, after| {
        let from = kb.b.ins().imul_imm_s(r, (size * after) as i64);
        let from = kb.b.ins().iadd_imm_s(from, (start * after) as i64);
        let to = kb.b.ins().imul_imm_s(r, (len * after) as i64);
        copy(kb, (o, to), (x, from), len * after);
    });
}

/// `Reverse` of the value in slot `input` (of type `t`) along `axis`: entry `a` of each block
/// goes to entry `size − 1 − a`.
pub fn reverse(kb: &mut Kb, t: &Type, axis: usize, out: usize, input: usize) {
    let (o, x) = (kb.ptr(out), kb.ptr(input));
    for_blocks(kb, t, axis, |kb, r, size, after| {
        let base = kb.b.ins().imul_imm_s(r, (size * after) as i64);
        kb.for_n(size, |kb, a| {
            let off = kb.b.ins().imul_imm_s(a, after as i64);
            let from = kb.b.ins().iadd(base, off);
            // (size − 1 − a)·after = (size − 1)·after − a·after.
            let last = kb.b.ins().iadd_imm_s(base, ((size - 1) * after) as i64);
            let to = kb.b.ins().isub(last, off);
            copy(kb, (o, to), (x, from), after);
        });
    });
}
