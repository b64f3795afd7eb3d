//! Stacked recurrent layers: `num_layers:` and `dropout:` of `rnn`, `gru` and `lstm`, as
//! PyTorch's `nn.LSTM(in, hidden, num_layers=N, dropout=p)`. Each layer reads the previous one's
//! output sequence; the dropout acts between layers only.

use super::consts;
use super::layers::{dropout, Site};
use super::lower::Lower;
use super::sequences::directions;
use crate::diag::Diag;
use crate::ir::ValueId;
use crate::syntax::ast::{Expr, Span};

/// The most layers one call stacks: far beyond any recurrent network trained in practice
/// (PyTorch's character models stack 2 to 4), and small enough that a mistyped count cannot make
/// the checker build a graph without end.
const MAX_LAYERS: usize = 1024;

/// A recurrent layer's arguments besides its cell's own (`activation`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Recurrent {
    pub hidden: usize,
    /// PyTorch's `bidirectional=True`: each layer runs in both directions.
    pub both: bool,
    /// PyTorch's `num_layers`, ≥ 1.
    pub layers: usize,
    /// PyTorch's `dropout`: the probability of dropping each output of every layer but the last,
    /// while training; in [0, 1).
    pub dropout: f64,
}

impl Recurrent {
    /// The width of each layer's output, `hidden` or `2·hidden`: the input of every layer after
    /// the first.
    pub fn width(&self) -> usize {
        self.hidden * (1 + self.both as usize)
    }
}

/// `num_layers: N`: a whole number from 1 to [`MAX_LAYERS`].
pub(super) fn num_layers(e: &Expr) -> Result<usize, Diag> {
    let n = consts::size(e, "the number of layers")?;
    if n > MAX_LAYERS {
        return Err(Diag::new(
            "nnc::arg",
            format!("the number of layers must be at most {MAX_LAYERS}, found {n}"),
            e.span,
            "too many layers",
        )
        .help("recurrent networks stack a few layers: PyTorch's character models 2 to 4"));
    }
    Ok(n)
}

/// `dropout: p` between stacked layers: p in [0, 1).
pub(super) fn layer_dropout(e: &Expr) -> Result<f64, Diag> {
    consts::fraction(e, "the dropout between layers", 0.0, 1.0, false)
}

/// Refuses `dropout: p` (spanning `at`, p > 0) on `callee(hidden)` of one layer: PyTorch's dropout acts
/// between stacked layers, so there it drops nothing (PyTorch warns and runs without), while a
/// Keras user's `dropout=` means the layer's inputs. Either way the model would not be what its
/// author meant.
pub(super) fn lone_dropout(callee: &str, hidden: usize, p: f64, at: Span) -> Diag {
    Diag::new(
        "nnc::arg",
        format!("`dropout: {p}` on a single {callee} layer drops nothing"),
        at,
        "acts between stacked layers only",
    )
    .help(format!(
        "as PyTorch's `dropout=`, it drops the outputs of every layer but the last of \
         `{callee}({hidden}, num_layers: 2, dropout: {p})`; to drop this layer's outputs write \
         `{callee}({hidden}) |> dropout({p})`, its inputs (Keras' `dropout=`) \
         `dropout({p}) |> {callee}({hidden})`"
    ))
}

/// A stack of `spec.layers` recurrent layers on `x` (`[T, inn]`): `one(l, suffix, x, inn)` adds
/// one direction of one layer, its parameters' names ending in `suffix`, and returns its hidden
/// states `[T, hidden]`. Layer 0 keeps the names of a single layer (`w_xh`, `w_xh_reverse`), so
/// that its checkpoints and `init`s fit; layer k ≥ 1 inserts `_l{k}` before the direction, as
/// PyTorch's `weight_ih_l1_reverse` (`w_xh_l1_reverse`). Every layer but the last is followed,
/// while training, by a dropout of its own mask.
pub(super) fn stacked(
    l: &mut Lower,
    cx: &Site,
    (x, inn): (ValueId, usize),
    spec: Recurrent,
    mut one: impl FnMut(&mut Lower, &str, ValueId, usize) -> Option<ValueId>,
) -> Option<ValueId> {
    let (mut x, mut inn) = (x, inn);
    for k in 0..spec.layers {
        if k > 0 && spec.dropout > 0.0 {
            x = dropout(l, cx, x, spec.dropout as f32)?;
        }
        let layer = if k == 0 {
            String::new()
        } else {
            format!("_l{k}")
        };
        x = directions(l, cx, x, spec.both, |l, dir, x| {
            one(l, &format!("{layer}{dir}"), x, inn)
        })?;
        inn = spec.width();
    }
    Some(x)
}
