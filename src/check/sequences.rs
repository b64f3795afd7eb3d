//! Token and sequence layers: `embedding`, `one_hot` (integer ids in), `rnn` and `lstm`
//! (`[T, in]` in), and what every recurrent layer shares: its input, its directions.

use super::consts;
use super::layers::{
    check_size, check_value_size, f32_input, ids_input, node, param, uniform, Site,
};
use super::lower::Lower;
use super::names::show;
use super::stack::{stacked, Recurrent};
use crate::diag::Diag;
use crate::ir::{Init, Op, UnaryOp, ValueId};
use crate::syntax::ast::{Expr, ExprKind};

pub(super) fn embedding(
    l: &mut Lower,
    cx: &Site,
    x: ValueId,
    vocab: usize,
    dim: usize,
) -> Option<ValueId> {
    let ids = ids_input(l, cx, "embedding", x)?;
    let mut dims = l.g.ty(ids).dims.clone();
    dims.push(dim);
    check_size(l, cx, &dims)?;
    let w = param(l, cx, "weight", vec![vocab, dim], Init::Normal { std: 1.0 })?;
    l.note_vocab(vocab, cx.span);
    node(l, Op::Embedding, vec![ids, w], cx)
}

pub(super) fn one_hot(l: &mut Lower, cx: &Site, x: ValueId, n: usize) -> Option<ValueId> {
    let ids = ids_input(l, cx, "one_hot", x)?;
    let mut dims = l.g.ty(ids).dims.clone();
    dims.push(n);
    check_size(l, cx, &dims)?;
    l.note_vocab(n, cx.span);
    node(l, Op::OneHot { n }, vec![ids], cx)
}

pub(super) fn rnn_activation(e: &Expr) -> Result<UnaryOp, Diag> {
    match e.as_name().map(|i| i.name.as_str()) {
        Some("tanh") => Ok(UnaryOp::Tanh),
        Some("relu") => Ok(UnaryOp::Relu),
        Some(name) => Err(Diag::new(
            "nnc::arg",
            format!("unknown rnn activation `{name}`"),
            e.span,
            "expected tanh or relu",
        )
        .help("write `rnn(128, activation: tanh)`")),
        // `activation: "relu"`, as PyTorch's `nonlinearity="relu"` is written.
        None => {
            let help = match &e.kind {
                ExprKind::Str(s) if s == "tanh" || s == "relu" => {
                    format!("the activation is a name, not a string: write `activation: {s}`")
                }
                _ => "write `rnn(128, activation: tanh)`".to_string(),
            };
            Err(Diag::new(
                "nnc::arg",
                format!(
                    "the rnn activation must be `tanh` or `relu`, found {}",
                    consts::describe(e)
                ),
                e.span,
                "expected tanh or relu",
            )
            .help(help))
        }
    }
}

/// `rnn(h)`: xp = x·W_xh + b over all steps at once, then the recurrent scan (in both
/// directions when bidirectional, [`directions`]; `num_layers` of them, [`stacked`]).
pub(super) fn rnn(
    l: &mut Lower,
    cx: &Site,
    x: ValueId,
    spec: Recurrent,
    act: UnaryOp,
) -> Option<ValueId> {
    let (x, steps, inn) = sequence_input(l, cx, ("rnn", "an rnn"), x)?;
    let h = spec.hidden;
    check_size(l, cx, &[steps, spec.width()])?;
    stacked(l, cx, (x, inn), spec, |l, suffix, x, inn| {
        // PyTorch initializes every RNN parameter with U(±1/√hidden), in every layer.
        let w_xh = param(l, cx, &format!("w_xh{suffix}"), vec![inn, h], uniform(h))?;
        let w_hh = param(l, cx, &format!("w_hh{suffix}"), vec![h, h], uniform(h))?;
        let b = param(l, cx, &format!("bias{suffix}"), vec![h], uniform(h))?;
        let xp = input_projection(l, cx, x, w_xh, b)?;
        node(l, Op::RnnScan { act }, vec![xp, w_hh], cx)
    })
}

/// `lstm(h)`: PyTorch's LSTM (gate order i, f, g, o). z = x·W_xh + b for all steps at once
/// (`[T, 4h]`), then the cell's scan, whose state holds every step's h, c and gates, and its
/// hidden states `[T, h]`; in a graph that is not trained, the hidden states alone. In both
/// directions when bidirectional ([`directions`]), `num_layers` of them ([`stacked`]).
pub(super) fn lstm(l: &mut Lower, cx: &Site, x: ValueId, spec: Recurrent) -> Option<ValueId> {
    let (x, steps, inn) = sequence_input(l, cx, ("lstm", "an lstm"), x)?;
    let h = spec.hidden;
    // The state, [T, 6h], is the largest value (of each direction of each layer alike).
    check_value_size(
        l,
        cx,
        "saved state (h, c and the four gates of every step)",
        &[steps, 6 * h],
    )?;
    check_size(l, cx, &[steps, spec.width()])?;
    stacked(l, cx, (x, inn), spec, |l, suffix, x, inn| {
        // PyTorch initializes every LSTM parameter with U(±1/√hidden), in every layer; its two
        // biases (b_ih and b_hh) sum to this one.
        let w_xh = param(
            l,
            cx,
            &format!("w_xh{suffix}"),
            vec![inn, 4 * h],
            uniform(h),
        )?;
        let w_hh = param(l, cx, &format!("w_hh{suffix}"), vec![h, 4 * h], uniform(h))?;
        let b = param(l, cx, &format!("bias{suffix}"), vec![4 * h], uniform(h))?;
        let xp = input_projection(l, cx, x, w_xh, b)?;
        if !l.training {
            // Nothing differentiates it: c and the gates need not be kept.
            return node(l, Op::Lstm, vec![xp, w_hh], cx);
        }
        let state = node(l, Op::LstmScan, vec![xp, w_hh], cx)?;
        node(l, Op::LstmHidden, vec![state], cx)
    })
}

/// A recurrent layer's output from `one(l, suffix, sequence)`, which adds one direction's
/// parameters (their names ending in `suffix`) and returns its hidden states `[T, h]`: the
/// forward direction on `x`, and when `both` (PyTorch's `bidirectional=True`) the reverse one
/// too, with parameters of its own (`_reverse`, as PyTorch's `weight_ih_l0_reverse`), run on
/// `x` reversed in time and its states reversed back, so that step t holds the state after
/// reading x_{T−1} down to x_t. The output is then `[T, 2h]`, the forward states first, as
/// PyTorch lays out `output`.
pub(super) fn directions(
    l: &mut Lower,
    cx: &Site,
    x: ValueId,
    both: bool,
    mut one: impl FnMut(&mut Lower, &str, ValueId) -> Option<ValueId>,
) -> Option<ValueId> {
    let forward = one(l, "", x)?;
    if !both {
        return Some(forward);
    }
    // Full-shape axes of `[B, T, features]`: time is 1, the features 2.
    let time = Op::Reverse { axis: 1 };
    let reversed = match reversed_lookup(l, cx, x) {
        Some(v) => v,
        None => node(l, time.clone(), vec![x], cx)?,
    };
    let backward = one(l, "_reverse", reversed)?;
    let backward = node(l, time, vec![backward], cx)?;
    node(l, Op::Concat { axis: 2 }, vec![forward, backward], cx)
}

/// When `x` is a look-up of ids `[B, T]` (`embedding` or `one_hot`), `x` reversed in time
/// computed as the look-up of the reversed ids: the same rows in the same places, but a look-up
/// still, so that the reverse direction's input projection is moved into the table as the
/// forward one's is (`opt::embed_matmul`), instead of a full product of every token's row.
fn reversed_lookup(l: &mut Lower, cx: &Site, x: ValueId) -> Option<ValueId> {
    let n = l.g.node(x);
    let (op, mut inputs) = (n.op.clone(), n.inputs.clone());
    if !matches!(op, Op::Embedding | Op::OneHot { .. }) || l.g.ty(inputs[0]).rank() != 2 {
        return None;
    }
    inputs[0] = node(l, Op::Reverse { axis: 1 }, vec![inputs[0]], cx)?;
    node(l, op, inputs, cx)
}

/// The input of a recurrent layer `what` (its name, then as a noun: `("rnn", "an rnn")`): an
/// f32 sequence `[T, features]`, returned with T and the feature count; a diagnostic otherwise.
pub(super) fn sequence_input(
    l: &mut Lower,
    cx: &Site,
    (name, noun): (&str, &str),
    x: ValueId,
) -> Option<(ValueId, usize, usize)> {
    let x = f32_input(l, cx, name, x)?;
    let t = l.g.ty(x).clone();
    let [steps, inn] = t.dims[..] else {
        let help = match t.dims.len() {
            1 => format!("{noun} reads a sequence of vectors [T, features]; a [{}] sequence of numbers needs a feature axis (embed token ids with `embedding(vocab, dim)` or `one_hot(vocab)`)", t.dims[0]),
            _ => format!("{noun} reads a sequence of vectors [T, features]"),
        };
        l.diags.push(
            Diag::new(
                "nnc::shape",
                format!("{name} needs a sequence [T, features], found {}", show(&t)),
                cx.span,
                "expects [steps, features]",
            )
            .also(cx.input_span, format!("this is {}", show(&t)))
            .help(help),
        );
        return None;
    };
    Some((x, steps, inn))
}

/// xp = x·w + b: a recurrent layer's input projection, over all time steps at once.
pub(super) fn input_projection(
    l: &mut Lower,
    cx: &Site,
    x: ValueId,
    w: ValueId,
    b: ValueId,
) -> Option<ValueId> {
    let mm = Op::MatMul {
        ta: false,
        tb: false,
    };
    let xp = node(l, mm, vec![x, w], cx)?;
    node(l, Op::BiasAdd { axis: 2 }, vec![xp, b], cx)
}
