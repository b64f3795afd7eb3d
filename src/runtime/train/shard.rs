//! The data-parallel side of a training step, so that the loop in [`super::trainer`] reads the same
//! for one process and for the N ranks of an `mpirun` job ([`crate::runtime::dist`]).
//!
//! Each rank trains on its contiguous 1/N of every global batch ([`Shard::part`]). Its loss is
//! the mean over its part, so the global batch's gradient is the mean of the ranks' gradients:
//! all trainable gradients are packed into one flat buffer, summed with one all-reduce and
//! divided by N ([`Shard::reduce`]), and every rank applies the same update to the same
//! parameters (rank 0's, broadcast at the start: [`broadcast_start`]). Two more numbers ride
//! along in the buffer: the loss, so that every rank sees (and checks, and logs) the global
//! batch's mean, and whether any rank was asked to stop, so that all stop after the same step.
//! Evaluation splits the test set the same way and adds up the ranks' sums
//! ([`evaluate_sharded`]). Dropout draws each sample's mask from its place in the global batch
//! ([`Shard::first`] → [`crate::exec::StepCtx::first`]), so masks do not depend on N either.
//!
//! With one process none of this copies anything: the gradients are read straight from the
//! executor, as before.

use super::anomaly::Anomaly;
use super::eval::{evaluate_part, finish, EvalResult, EvalSums};
use super::{interrupt, TrainError};
use crate::exec::Executor;
use crate::ir::print::node_to_string;
use crate::ir::{Graph, ValueId};
use crate::runtime::data::Split;
use crate::runtime::dist::{Comm, CommError};

/// One rank's share of each step of a run, and the buffer its gradients are reduced in.
pub(super) struct Shard<'c> {
    comm: &'c dyn Comm,
    run: String,
    /// The gradient outputs (`grad:<path>`) in update order, with their offsets in `flat`.
    grads: Vec<(String, usize)>,
    /// The gradients, then the loss, then the stop flag, then [`ANOMALY_SLOTS`] per rank;
    /// empty with one process.
    flat: Vec<f32>,
    /// Where the loss is in `flat` (the gradients' length).
    at_loss: usize,
    /// Whether any rank asked to stop at the last reduction.
    stop: bool,
    /// The first rank (by rank) that found a non-finite value at the last reduction under
    /// `--detect-anomaly`, and what: every rank then stops with the same report.
    found: Option<Found>,
}

/// A rank, the value it found not finite there, and that value's non-finite elements, NaN
/// elements and element count.
type Found = (usize, ValueId, [usize; 3]);

/// A rank's [`ANOMALY_SLOTS`] for the first non-finite value `v` of its part, `a`.
fn encode(v: ValueId, a: &Anomaly) -> [f32; ANOMALY_SLOTS] {
    [
        (v.index() + 1) as f32,
        a.bad as f32,
        a.nan as f32,
        a.len as f32,
    ]
}

/// The lowest rank whose slots (every rank's, summed) hold a value, and what.
fn first_found(slots: &[f32]) -> Option<Found> {
    slots
        .chunks_exact(ANOMALY_SLOTS)
        .enumerate()
        .find(|(_, c)| c[0] > 0.0)
        .map(|(r, c)| {
            let v = ValueId(c[0] as u32 - 1);
            (r, v, [c[1] as usize, c[2] as usize, c[3] as usize])
        })
}

/// Per rank at the end of a reduction: the node of the first non-finite value this rank's
/// part found under `--detect-anomaly` (its index + 1, 0 for none), its non-finite elements,
/// of them NaN, and its element count. Only that rank writes its slots; the sum is its values.
const ANOMALY_SLOTS: usize = 4;

impl<'c> Shard<'c> {
    /// A rank's share of the steps of run `run` with global batches of `batch` samples and the
    /// trainable gradients `grads` (output name, element count). The batch must split evenly
    /// into ranks: uneven parts would weigh samples unequally in the mean.
    pub fn new(
        comm: &'c dyn Comm,
        run: &str,
        batch: usize,
        grads: impl Iterator<Item = (String, usize)>,
    ) -> Result<Shard<'c>, TrainError> {
        let n = comm.size();
        if !batch.is_multiple_of(n) {
            return Err(TrainError::Setup {
                run: run.into(),
                msg: format!(
                    "the batch of {batch} samples does not split evenly over {n} processes (make the batch a multiple of {n}, or change the number of processes)"
                ),
            });
        }
        let mut len = 0;
        let grads: Vec<(String, usize)> = grads
            .map(|(name, numel)| {
                len += numel;
                (name, len - numel)
            })
            .collect();
        Ok(Shard {
            comm,
            run: run.into(),
            grads,
            flat: if n > 1 {
                vec![0.0; len + 2 + ANOMALY_SLOTS * n]
            } else {
                Vec::new()
            },
            at_loss: len,
            stop: false,
            found: None,
        })
    }

    /// Whether several processes share the steps.
    pub fn distributed(&self) -> bool {
        !self.flat.is_empty()
    }

    /// This rank's contiguous part of the global batch `idx`.
    pub fn part<'a>(&self, idx: &'a [usize]) -> &'a [usize] {
        let k = idx.len() / self.comm.size();
        let r = self.comm.rank();
        &idx[r * k..(r + 1) * k]
    }

    /// Where this rank's part of `part_len` samples starts in the global batch.
    pub fn first(&self, part_len: usize) -> u64 {
        (self.comm.rank() * part_len) as u64
    }

    /// After the step's forward and backward pass on this rank's part (`loss` its mean loss,
    /// `anomaly` the first non-finite value it found under `--detect-anomaly`): sums every
    /// rank's gradients, loss and stop request, and returns the global batch's mean loss. The
    /// gradients are then read with [`Shard::grad`], and an anomaly of any rank with
    /// [`Shard::anomaly`].
    pub fn reduce(
        &mut self,
        exec: &dyn Executor,
        loss: f32,
        anomaly: Option<&(ValueId, Anomaly)>,
        step: u64,
    ) -> Result<f32, TrainError> {
        if self.flat.is_empty() {
            return Ok(loss);
        }
        let g = self.at_loss;
        let slots = g + 2;
        self.flat[slots..].fill(0.0);
        if let Some((v, a)) = anomaly {
            let mine = slots + ANOMALY_SLOTS * self.comm.rank();
            self.flat[mine..mine + ANOMALY_SLOTS].copy_from_slice(&encode(*v, a));
        }
        for (k, (name, off)) in self.grads.iter().enumerate() {
            let end = self.grads.get(k + 1).map_or(g, |n| n.1);
            let dst = &mut self.flat[*off..end];
            match exec.output(name) {
                Some(src) if src.len() == dst.len() => dst.copy_from_slice(src),
                _ => {
                    return Err(TrainError::Setup {
                        run: self.run.clone(),
                        msg: format!("no output `{name}` of {} elements", dst.len()),
                    })
                }
            }
        }
        self.flat[g] = loss;
        self.flat[g + 1] = f32::from(u8::from(interrupt::requested()));
        self.comm
            .all_reduce_sum(&mut self.flat)
            .map_err(|source| self.comm_error(step, "the gradients", source))?;
        let n = self.comm.size() as f32;
        for x in &mut self.flat[..=g] {
            *x /= n;
        }
        self.stop = self.flat[g + 1] > 0.0;
        self.found = first_found(&self.flat[slots..]);
        Ok(self.flat[g])
    }

    /// The first non-finite value any rank found at the last reduction (see [`Shard::reduce`]),
    /// as a node of `graph` (every rank's graph is the same), naming the rank when it is
    /// another.
    pub fn anomaly(&self, graph: &Graph) -> Option<Anomaly> {
        self.show(graph, self.found?)
    }

    /// After a step whose reduced loss or gradients are not finite (so on every rank alike),
    /// what each rank's replay of its part found (`local`), shared as [`Shard::reduce`] shares
    /// it under `--detect-anomaly`: every rank then names the same op. With one process,
    /// `local` itself.
    pub fn share_anomaly(
        &self,
        graph: &Graph,
        local: Option<(ValueId, Anomaly)>,
        step: u64,
    ) -> Result<Option<Anomaly>, TrainError> {
        if self.flat.is_empty() {
            return Ok(local.map(|(_, a)| a));
        }
        let mut slots = vec![0.0; ANOMALY_SLOTS * self.comm.size()];
        if let Some((v, a)) = &local {
            let mine = ANOMALY_SLOTS * self.comm.rank();
            slots[mine..mine + ANOMALY_SLOTS].copy_from_slice(&encode(*v, a));
        }
        self.comm
            .all_reduce_sum(&mut slots)
            .map_err(|source| self.comm_error(step, "where the step went non-finite", source))?;
        Ok(first_found(&slots).and_then(|f| self.show(graph, f)))
    }

    fn show(&self, graph: &Graph, (r, v, [bad, nan, len]): Found) -> Option<Anomaly> {
        (v.index() < graph.nodes.len()).then(|| Anomaly {
            node: node_to_string(graph, v),
            bad,
            nan,
            len,
            rank: (r != self.comm.rank()).then_some(r),
        })
    }

    /// The gradient to apply for the `k`-th trainable parameter (output `name`): the executor's
    /// with one process, the ranks' mean otherwise.
    pub fn grad<'a>(&'a self, exec: &'a dyn Executor, k: usize, name: &str) -> Option<&'a [f32]> {
        if self.flat.is_empty() {
            return exec.output(name);
        }
        let end = self.grads.get(k + 1).map_or(self.at_loss, |n| n.1);
        Some(&self.flat[self.grads[k].1..end])
    }

    /// Whether training should stop after this step: a stop request ([`interrupt`]) to this
    /// process, or with several, to any of them at the last reduction (all ranks then agree).
    pub fn stop_requested(&self) -> bool {
        if self.flat.is_empty() {
            interrupt::requested()
        } else {
            self.stop
        }
    }

    fn comm_error(&self, step: u64, what: &str, source: CommError) -> TrainError {
        TrainError::Comm {
            run: self.run.clone(),
            step,
            what: what.into(),
            source,
        }
    }
}

/// Makes every rank start from rank 0's parameters and optimizer state (its initialization,
/// `--init` file or checkpoint), one broadcast of all of them.
pub(super) fn broadcast_start<'v>(
    comm: &dyn Comm,
    run: &str,
    tensors: impl Iterator<Item = &'v mut Vec<f32>>,
) -> Result<(), TrainError> {
    if comm.size() == 1 {
        return Ok(());
    }
    let mut tensors: Vec<&mut Vec<f32>> = tensors.collect();
    let mut flat: Vec<f32> = tensors.iter().flat_map(|t| t.iter().copied()).collect();
    comm.broadcast(&mut flat)
        .map_err(|source| TrainError::Comm {
            run: run.into(),
            step: 0,
            what: "the starting parameters".into(),
            source,
        })?;
    let mut rest = flat.as_slice();
    for t in tensors.iter_mut() {
        let (mine, next) = rest.split_at(t.len());
        t.copy_from_slice(mine);
        rest = next;
    }
    Ok(())
}

/// [`super::evaluate`] with the samples of `split` divided among the ranks in contiguous parts
/// and the sums added up: every rank gets the whole split's result.
/// Errors name the run `run` and the `step` after which it evaluates.
#[allow(clippy::too_many_arguments)] // evaluate's, plus the communicator, run and step
pub(super) fn evaluate_sharded(
    comm: &dyn Comm,
    exec: &mut dyn Executor,
    params: &[&[f32]],
    split: &Split,
    batch: usize,
    classification: bool,
    seed: u64,
    run: &str,
    step: u64,
) -> Result<EvalResult, TrainError> {
    let (n, r) = (comm.size(), comm.rank());
    let part = split.len * r / n..split.len * (r + 1) / n;
    let sums = evaluate_part(exec, params, split, part, batch, classification, seed).map_err(
        |source| TrainError::Exec {
            run: run.into(),
            step,
            source,
        },
    )?;
    let mut total = [
        sums.loss,
        sums.right as f64,
        f64::from(u8::from(sums.accuracy)),
    ];
    comm.all_reduce_sum_f64(&mut total)
        .map_err(|source| TrainError::Comm {
            run: run.into(),
            step,
            what: "the evaluation".into(),
            source,
        })?;
    let sums = EvalSums {
        loss: total[0],
        right: total[1] as usize,
        accuracy: total[2] == n as f64,
    };
    Ok(finish(exec.graph(), split, sums))
}
