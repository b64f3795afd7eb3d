//! Evaluation on a split with the evaluation graph: loss = mean over batches weighted by their
//! size (the last partial batch included), or, for a loss summed over the batch
//! (`reduction: "sum"`), the split's total over its samples times the batch size: the loss of
//! one whole batch, as the training loss beside it is (see [`sums_over_batch`]); accuracy = argmax of `output` against the labels
//! (class ids, or the argmax of one-hot/probability labels). A split can also be evaluated in
//! parts whose [`EvalSums`] add up (the ranks of a data-parallel run each take one).

use super::anomaly::{first_non_finite, Anomaly};
use super::{AfterStep, Backend, TrainError};
use crate::exec::{ExecError, Executor, Feed, StepCtx};
use crate::ir::{Graph, Op};
use crate::runtime::batch::{gather, Buf};
use crate::runtime::data::Split;
use std::ops::{ControlFlow, Range};

/// Loss and accuracy over a split.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalResult {
    pub loss: f64,
    pub accuracy: Option<f64>,
    pub samples: usize,
}

/// Which column feeds each graph input: the input named `label` takes the labels, any other the
/// samples' inputs.
pub fn label_inputs(graph: &Graph) -> Vec<bool> {
    graph.inputs().iter().map(|(_, n)| *n == "label").collect()
}

/// Index of the largest element (the first one on ties; NaN never wins).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// How many rows of `out` (`classes` wide) pick the labelled class; `None` if the shapes do not
/// line up for a classification.
pub fn correct(out: &[f32], classes: usize, labels: &Buf) -> Option<usize> {
    if classes == 0 {
        return None;
    }
    let rows = out.len() / classes;
    match labels {
        Buf::I32(l) if l.len() == rows => Some(
            out.chunks_exact(classes)
                .zip(l)
                .filter(|(r, &y)| argmax(r) as i64 == y as i64)
                .count(),
        ),
        Buf::F32(l) if l.len() == out.len() => Some(
            out.chunks_exact(classes)
                .zip(l.chunks_exact(classes))
                .filter(|(r, y)| argmax(r) == argmax(y))
                .count(),
        ),
        _ => None,
    }
}

/// What an evaluation adds up over (part of) a split: the loss summed over samples, the rows
/// classified right, and whether accuracy could be counted at all. Parts evaluated separately
/// (the shards of a data-parallel run) give the whole split's sums when added.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalSums {
    pub loss: f64,
    pub right: usize,
    pub accuracy: bool,
}

/// The number of classes of an evaluation graph (the width of its `output`).
fn classes(graph: &Graph) -> Option<usize> {
    graph.output("output").map(|v| graph.ty(v).last())
}

/// Whether the loss of `graph` sums over its batch (a loss with `reduction: "sum"`, an
/// [`Op::MeanToSum`]) rather than averaging. Its value then grows with the batch: a short last
/// batch counts as a whole one of the split's `batch` samples, its sum scaled up, so that the
/// result is the split's summed loss per sample times the batch: in the unit of the training
/// loss, the sum over one batch. (A loss that mixes a sum with a term that does not grow with
/// the batch, `l2()` or a mean, has that term scaled up with it on the short last batch.)
pub fn sums_over_batch(graph: &Graph) -> bool {
    graph
        .output("loss")
        .is_some_and(|loss| graph.reaches(loss, |n| matches!(n.op, Op::MeanToSum { .. })))
}

/// Runs `exec` (an evaluation graph with outputs `loss` and `output`) over all of `split` in
/// batches of `batch`. Accuracy only when `classification`.
pub fn evaluate(
    exec: &mut dyn Executor,
    params: &[&[f32]],
    split: &Split,
    batch: usize,
    classification: bool,
    seed: u64,
) -> Result<EvalResult, ExecError> {
    let sums = evaluate_part(
        exec,
        params,
        split,
        0..split.len,
        batch,
        classification,
        seed,
    )?;
    Ok(finish(exec.graph(), split, sums))
}

/// The sums of [`evaluate`] over the samples `part` of `split` only.
pub fn evaluate_part(
    exec: &mut dyn Executor,
    params: &[&[f32]],
    split: &Split,
    part: Range<usize>,
    batch: usize,
    classification: bool,
    seed: u64,
) -> Result<EvalSums, ExecError> {
    let classes = classes(exec.graph());
    let summed = sums_over_batch(exec.graph());
    let mut sums = EvalSums {
        loss: 0.0,
        right: 0,
        accuracy: classification && classes.is_some(),
    };
    let run = Batches {
        params,
        split,
        part,
        batch,
        seed,
    };
    run.each(exec, |exec, chunk, _, labels| {
        let weight = if summed { batch } else { chunk.len() };
        sums.loss += loss(exec)? as f64 * weight as f64;
        if sums.accuracy {
            match exec
                .output("output")
                .and_then(|o| correct(o, classes.unwrap_or(0), labels))
            {
                Some(c) => sums.right += c,
                None => sums.accuracy = false,
            }
        }
        Ok(ControlFlow::<()>::Continue(()))
    })?;
    Ok(sums)
}

/// The first batch of `split` (in batches of `batch`, as [`evaluate`] takes them) whose loss
/// is not finite, run again on `exec` (an executor that keeps every value, the backend's
/// `inspector`), and where its first non-finite value appeared: its samples, and the
/// [`Anomaly`] when the executor can show it. `None` when every batch's loss is finite.
pub fn first_non_finite_batch(
    exec: &mut dyn Executor,
    params: &[&[f32]],
    split: &Split,
    batch: usize,
    seed: u64,
) -> Option<(Range<usize>, Option<Anomaly>)> {
    let run = Batches {
        params,
        split,
        part: 0..split.len,
        batch,
        seed,
    };
    let found = run.each(exec, |exec, chunk, feeds, _| {
        if loss(exec)?.is_finite() {
            return Ok(ControlFlow::Continue(()));
        }
        let samples = chunk[0]..chunk[chunk.len() - 1] + 1;
        let exec: &dyn Executor = exec;
        let anomaly = first_non_finite(exec.graph(), exec, feeds, params);
        Ok(ControlFlow::Break((samples, anomaly)))
    });
    found.ok().flatten()
}

/// Which evaluation found a non-finite loss: the run's, during training (`after`; `None` for
/// `nnc eval`), on the split named `split`, in batches of `batch`.
pub struct EvalAt<'a> {
    pub run: &'a str,
    pub after: Option<AfterStep>,
    pub split: &'static str,
    pub batch: usize,
    pub seed: u64,
}

/// The [`TrainError::NonFiniteEval`] of an evaluation of `graph` on `split` whose loss was
/// `loss`: which batch, and where in the graph. The evaluation is run again on an executor
/// that keeps every value (the backend's `inspector`), as training names the op of a
/// non-finite step.
pub fn non_finite_eval(
    backend: &Backend,
    graph: &Graph,
    params: &[&[f32]],
    split: &Split,
    at: EvalAt<'_>,
    loss: f64,
) -> TrainError {
    let found = (backend.forward)(graph)
        .and_then(|fg| (backend.inspector)(&fg))
        .ok()
        .and_then(|mut inspector| {
            first_non_finite_batch(inspector.as_mut(), params, split, at.batch, at.seed)
        });
    let (samples, anomaly) = match found {
        Some((s, a)) => (Some(s), a.map(Box::new)),
        None => (None, None),
    };
    TrainError::NonFiniteEval {
        run: at.run.into(),
        after: at.after,
        split: at.split,
        loss,
        samples,
        anomaly,
    }
}

/// The loss of the batch `exec` has just run.
fn loss(exec: &dyn Executor) -> Result<f32, ExecError> {
    exec.output("loss")
        .and_then(|l| l.first().copied())
        .ok_or_else(|| ExecError::Other("the evaluation graph has no `loss` output".into()))
}

/// The samples `part` of `split` run through an evaluation graph in batches of `batch`.
struct Batches<'a> {
    params: &'a [&'a [f32]],
    split: &'a Split,
    part: Range<usize>,
    batch: usize,
    seed: u64,
}

impl Batches<'_> {
    /// Runs `exec` on each batch in order (its inputs fed the samples' columns, the one named
    /// `label` the labels), then `after` with the batch's samples, its feeds and its labels;
    /// stops at the first error or `Break`, whose value it returns.
    fn each<T>(
        self,
        exec: &mut dyn Executor,
        mut after: impl FnMut(
            &mut dyn Executor,
            &[usize],
            &[Feed<'_>],
            &Buf,
        ) -> Result<ControlFlow<T>, ExecError>,
    ) -> Result<Option<T>, ExecError> {
        let roles = label_inputs(exec.graph());
        let batch = self.batch.clamp(1, self.part.len().max(1));
        let (x, y) = (&self.split.x, &self.split.y);
        let (mut xb, mut yb) = (Buf::for_column(x, batch), Buf::for_column(y, batch));
        let idx: Vec<usize> = self.part.collect();
        for chunk in idx.chunks(batch) {
            gather(x, chunk, &mut xb);
            gather(y, chunk, &mut yb);
            let feeds: Vec<Feed<'_>> = roles
                .iter()
                .map(|&is_y| if is_y { yb.feed() } else { xb.feed() })
                .collect();
            let ctx = StepCtx {
                seed: self.seed,
                ..StepCtx::default()
            };
            exec.run(chunk.len(), &feeds, self.params, ctx)?;
            if let ControlFlow::Break(found) = after(exec, chunk, &feeds, &yb)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
}

/// The mean loss and the accuracy over all of `split` from the sums over all of it, for the
/// evaluation graph `graph`.
pub fn finish(graph: &Graph, split: &Split, sums: EvalSums) -> EvalResult {
    let classes = classes(graph);
    let n = split.len.max(1);
    // Accuracy counts rows: a sequence model has several per sample.
    let rows_per_sample = match &split.y.values {
        crate::runtime::data::Values::I32(_) => split.y.per_sample().max(1),
        crate::runtime::data::Values::F32(_) | crate::runtime::data::Values::Bytes { .. } => {
            (split.y.per_sample() / classes.unwrap_or(1).max(1)).max(1)
        }
    };
    EvalResult {
        loss: sums.loss / n as f64,
        accuracy: sums
            .accuracy
            .then(|| sums.right as f64 / (n * rows_per_sample) as f64),
        samples: split.len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_and_correct_count() {
        assert_eq!(argmax(&[0.1, 3.0, 3.0, -1.0]), 1);
        let out = [0.9, 0.1, 0.2, 0.8, 0.6, 0.4];
        assert_eq!(correct(&out, 2, &Buf::I32(vec![0, 1, 1])), Some(2));
        assert_eq!(
            correct(&out, 2, &Buf::F32(vec![1.0, 0.0, 0.0, 1.0, 0.0, 1.0])),
            Some(2)
        );
        assert_eq!(correct(&out, 2, &Buf::I32(vec![0, 1])), None);
    }
}
