//! Where a NaN or an infinity first appeared in a training step.
//!
//! An executor that keeps every value of a step (the backend's `inspector`) shows it, and the
//! graph's node order is topological, so the first node (inputs and parameters included)
//! holding a non-finite element is where the trouble started: every value it reads is finite.
//! The training loop asks this after a non-finite loss or gradient, replaying the step (the
//! training executor reuses buffers), to name the op that produced it; and after every step
//! under `--detect-anomaly`, where it trains on the inspector, to stop at the first non-finite
//! intermediate even when it never reaches the loss.

use super::ExecutorFactory;
use crate::exec::{Executor, Feed, StepCtx};
use crate::ir::print::node_to_string;
use crate::ir::{Graph, Op, ValueId};
use std::fmt;

/// The first non-finite value of a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anomaly {
    /// The node as the IR printer shows it (`%17 = exp %16 : f32[B,10]  ; softmax`).
    pub node: String,
    /// Non-finite elements, and of them NaN.
    pub bad: usize,
    pub nan: usize,
    pub len: usize,
    /// The process of a data-parallel run whose part of the batch it was found in, when that
    /// is another's than the one reporting it.
    pub rank: Option<usize>,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match (self.nan, self.bad - self.nan) {
            (0, _) => "an infinity".to_string(),
            (_, 0) => "NaN".to_string(),
            _ => "NaN and infinities".to_string(),
        };
        write!(
            f,
            "{what} first appears in `{}` ({} of its {} elements",
            self.node, self.bad, self.len
        )?;
        match self.rank {
            Some(r) => write!(f, ", in the part of the batch of rank {r})"),
            None => write!(f, ")"),
        }
    }
}

/// Counts the non-finite elements of `x`, and of them NaN.
fn non_finite(x: &[f32]) -> (usize, usize) {
    // The common case, all finite, is one vectorizable pass: x·0 is 0 for finite x, NaN otherwise.
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v * 0.0;
        }
    }
    if acc.iter().chain(tail).all(|v| v.is_finite()) {
        return (0, 0);
    }
    let bad = x.iter().filter(|v| !v.is_finite()).count();
    (bad, x.iter().filter(|v| v.is_nan()).count())
}

/// Whether every element of `x` is finite (fast: see [`non_finite`]).
pub fn all_finite(x: &[f32]) -> bool {
    non_finite(x).0 == 0
}

/// The first value of the last step of `exec` that is not finite: an input batch, a parameter
/// or a node's result. `inputs` and `params` are what the step was run with.
pub fn first_non_finite(
    graph: &Graph,
    exec: &dyn Executor,
    inputs: &[Feed<'_>],
    params: &[&[f32]],
) -> Option<Anomaly> {
    first_non_finite_at(graph, exec, inputs, params).map(|(_, a)| a)
}

/// [`first_non_finite`], and the value it is.
pub fn first_non_finite_at(
    graph: &Graph,
    exec: &dyn Executor,
    inputs: &[Feed<'_>],
    params: &[&[f32]],
) -> Option<(ValueId, Anomaly)> {
    let input_nodes = graph.inputs();
    graph.values().find_map(|v| {
        let data = match &graph.node(v).op {
            Op::Input { .. } => match input_nodes.iter().position(|(i, _)| *i == v) {
                Some(k) => match inputs.get(k) {
                    Some(Feed::F32(x)) => Some(*x),
                    _ => None,
                },
                None => None,
            },
            Op::Param(p) => params.get(p.index()).copied(),
            _ => exec.value(v),
        }?;
        let (bad, nan) = non_finite(data);
        (bad > 0).then(|| {
            let a = Anomaly {
                node: node_to_string(graph, v),
                bad,
                nan,
                len: data.len(),
                rank: None,
            };
            (v, a)
        })
    })
}

/// Runs one step of `graph` again on an executor from `inspector` (one that keeps every
/// value) and finds its first non-finite value; `None` also when the replay cannot run.
pub fn replay(
    inspector: &ExecutorFactory,
    graph: &Graph,
    batch: usize,
    inputs: &[Feed<'_>],
    params: &[&[f32]],
    ctx: StepCtx,
) -> Option<(ValueId, Anomaly)> {
    let mut exec = inspector(graph).ok()?;
    exec.run(batch, inputs, params, ctx).ok()?;
    first_non_finite_at(exec.graph(), exec.as_ref(), inputs, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_nan_and_infinities_anywhere_in_the_slice() {
        assert_eq!(non_finite(&[1.0; 17]), (0, 0));
        let mut x = vec![0.5f32; 19];
        x[18] = f32::NAN; // in the tail after the 8-wide chunks
        assert_eq!(non_finite(&x), (1, 1));
        x[3] = f32::NEG_INFINITY;
        assert_eq!(non_finite(&x), (2, 1));
        assert!(!all_finite(&x));
        assert!(all_finite(&[f32::MAX, f32::MIN_POSITIVE, -0.0]));
    }
}
