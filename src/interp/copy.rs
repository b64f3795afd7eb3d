//! Data movement along one axis: `Concat`, `Slice`, `Reverse`. Each sample of a value is
//! `before` blocks of `size · after` contiguous elements around the axis ([`Type::around`]); with
//! the batch, `rows` = batch · before such blocks.

use crate::ir::Type;

/// The blocks around full-shape axis `axis` of a value of type `t` for this batch: the number
/// of blocks (the batch included), the axis' size, and the elements each entry of it spans.
fn blocks(t: &Type, axis: usize, batch: usize) -> (usize, usize, usize) {
    let (before, size, after) = t.around(axis);
    (before * if t.batched { batch } else { 1 }, size, after)
}

/// `Concat`: block by block, each input's block in turn.
pub fn concat(parts: &[(&[f64], &Type)], axis: usize, batch: usize) -> Vec<f64> {
    let rows = parts.first().map_or(0, |(_, t)| blocks(t, axis, batch).0);
    let mut out = Vec::with_capacity(parts.iter().map(|(x, _)| x.len()).sum());
    for r in 0..rows {
        for (x, t) in parts {
            let (_, size, after) = blocks(t, axis, batch);
            let n = size * after;
            out.extend_from_slice(&x[r * n..(r + 1) * n]);
        }
    }
    out
}

/// `Slice`: entries `start..start + len` of the axis of every block.
pub fn slice(
    x: &[f64],
    t: &Type,
    axis: usize,
    (start, len): (usize, usize),
    batch: usize,
) -> Vec<f64> {
    let (rows, size, after) = blocks(t, axis, batch);
    (0..rows)
        .flat_map(|r| {
            let from = (r * size + start) * after;
            x[from..from + len * after].iter().copied()
        })
        .collect()
}

/// `Reverse`: the entries of the axis of every block in reverse order.
pub fn reverse(x: &[f64], t: &Type, axis: usize, batch: usize) -> Vec<f64> {
    let (rows, size, after) = blocks(t, axis, batch);
    (0..rows)
        .flat_map(|r| (0..size).rev().map(move |a| (r * size + a) * after))
        .flat_map(|from| x[from..from + after].iter().copied())
        .collect()
}
