//! The `gru` layer (`[T, in]` in), PyTorch's `nn.GRU(in, hidden, batch_first=True)`.

use super::layers::{check_size, check_value_size, node, param, uniform, Site};
use super::lower::Lower;
use super::sequences::{input_projection, sequence_input};
use super::stack::{stacked, Recurrent};
use crate::ir::{Op, ValueId};

/// `gru(h)`: xp = x·w_xh + bias_xh over all steps at once (the three gates r, z, n side by
/// side, `[T, 3h]`), then the recurrent scan, which adds h_{t−1}·w_hh + bias_hh each step; in
/// both directions when bidirectional ([`directions`](super::sequences::directions)),
/// `num_layers` of them ([`stacked`]).
pub(super) fn gru(l: &mut Lower, cx: &Site, x: ValueId, spec: Recurrent) -> Option<ValueId> {
    let (x, steps, inn) = sequence_input(l, cx, ("gru", "a gru"), x)?;
    let h = spec.hidden;
    // The scan's output, [T, 4h], holds every step's h beside its three saved gates.
    check_value_size(l, cx, "hidden states and saved gates", &[steps, 4 * h])?;
    check_size(l, cx, &[steps, spec.width()])?;
    stacked(l, cx, (x, inn), spec, |l, suffix, x, inn| {
        // PyTorch initializes every GRU parameter with U(±1/√hidden), in every layer.
        let w_xh = param(
            l,
            cx,
            &format!("w_xh{suffix}"),
            vec![inn, 3 * h],
            uniform(h),
        )?;
        let w_hh = param(l, cx, &format!("w_hh{suffix}"), vec![h, 3 * h], uniform(h))?;
        let b_xh = param(l, cx, &format!("bias_xh{suffix}"), vec![3 * h], uniform(h))?;
        let b_hh = param(l, cx, &format!("bias_hh{suffix}"), vec![3 * h], uniform(h))?;
        let xp = input_projection(l, cx, x, w_xh, b_xh)?;
        node(l, Op::GruScan, vec![xp, w_hh, b_hh], cx)
    })
}
