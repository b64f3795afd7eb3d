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

#[cfg(test)]
mod tests {
    use super::*;

    /// Two samples of `[2, 2]` and `[2, 1]` joined along the last axis, and of `[2, 2]` and
    /// `[1, 2]` along the first: what `torch.cat` gives on those values.
    #[test]
    fn concat_slice_and_reverse_move_the_elements_torch_does() {
        let a: Vec<f64> = (0..8).map(f64::from).collect(); // [[0,1],[2,3]], [[4,5],[6,7]]
        let b = [10.0, 11.0, 12.0, 13.0]; // [[10],[11]], [[12],[13]] or [[10,11]], [[12,13]]
        let ta = Type::f32(true, vec![2, 2]);
        let last = Type::f32(true, vec![2, 1]);
        let first = Type::f32(true, vec![1, 2]);
        let along_last = concat(&[(&a, &ta), (&b, &last)], 2, 2);
        assert_eq!(
            along_last,
            [0., 1., 10., 2., 3., 11., 4., 5., 12., 6., 7., 13.]
        );
        let along_first = concat(&[(&a, &ta), (&b, &first)], 1, 2);
        assert_eq!(
            along_first,
            [0., 1., 2., 3., 10., 11., 4., 5., 6., 7., 12., 13.]
        );
        let whole = Type::f32(true, vec![2, 3]);
        assert_eq!(slice(&along_last, &whole, 2, (2, 1), 2), b);
        assert_eq!(slice(&along_last, &whole, 2, (0, 2), 2), a);
        assert_eq!(reverse(&a, &ta, 1, 2), [2., 3., 0., 1., 6., 7., 4., 5.]);
        assert_eq!(reverse(&a, &ta, 2, 2), [1., 0., 3., 2., 5., 4., 7., 6.]);
    }
}
