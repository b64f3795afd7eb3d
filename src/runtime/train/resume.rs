//! What a checkpoint holds besides tensors so that a stopped run can continue bit for bit as if it
//! had never stopped, and the checks made when it is read back.
//!
//! A checkpoint written by the training loop holds every (non-teacher) parameter, every optimizer
//! state buffer (`__optim.<path>.<i>`), the number of steps done (`__step`), and in the header's
//! metadata the run's name, its length in steps, the number of batches per epoch, the number of
//! whole epochs done and the index of the next batch within the current epoch.
//!
//! No generator state is stored: the data position is derived from the step. With `P` batches per
//! epoch, step `s` is batch `s % P` of epoch `s / P` (0-based); the order of that epoch is
//! re-derived by replaying the `s / P + 1` per-epoch shuffles of `Rng::for_name(seed, "shuffle")`
//! from the start (an O(samples) permutation per epoch, cheap next to one epoch of training).
//! Everything else a step draws on is a function of (seed, step): dropout masks come from
//! `StepCtx { seed, step }`, the lr schedule from (step, length), Adam's bias correction from the
//! step. The stored epoch and batch index are redundant with `__step`; they are checked against it
//! and make the file readable.

use crate::runtime::checkpoint::Checkpoint;
use std::collections::BTreeMap;

const RUN: &str = "nnc.run";
const TOTAL: &str = "nnc.total_steps";
const PER_EPOCH: &str = "nnc.batches_per_epoch";
const EPOCH: &str = "nnc.epoch";
const BATCH: &str = "nnc.batch";

/// Where a run stands after `step` steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub run: String,
    /// Steps done.
    pub step: u64,
    /// The run's length in steps.
    pub total: u64,
    pub batches_per_epoch: u64,
}

impl Position {
    /// Whole epochs done (the 0-based index of the epoch the next step belongs to).
    pub fn epoch(&self) -> u64 {
        self.step / self.batches_per_epoch.max(1)
    }

    /// Index of the next batch within its epoch.
    pub fn batch(&self) -> u64 {
        self.step % self.batches_per_epoch.max(1)
    }

    /// The header metadata recording this position.
    pub fn to_meta(&self) -> BTreeMap<String, String> {
        [
            (RUN, self.run.clone()),
            (TOTAL, self.total.to_string()),
            (PER_EPOCH, self.batches_per_epoch.to_string()),
            (EPOCH, self.epoch().to_string()),
            (BATCH, self.batch().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The position recorded in `ck`; an error names what is missing or inconsistent.
    pub fn from_checkpoint(ck: &Checkpoint) -> Result<Position, String> {
        let what = || format!("checkpoint {}", ck.path.display());
        let get = |k: &str| -> Result<&String, String> {
            ck.meta.get(k).ok_or_else(|| {
                format!(
                    "{} cannot be resumed from: it has no `{k}` (it was not written by `nnc train`, or by an older nnc)",
                    what()
                )
            })
        };
        let num = |k: &str| -> Result<u64, String> {
            get(k)?
                .parse()
                .map_err(|_| format!("{}: `{k}` is not a number", what()))
        };
        let step = ck
            .step
            .ok_or_else(|| format!("{} cannot be resumed from: it has no `__step`", what()))?;
        let p = Position {
            run: get(RUN)?.clone(),
            step,
            total: num(TOTAL)?,
            batches_per_epoch: num(PER_EPOCH)?,
        };
        if p.batches_per_epoch == 0 || num(EPOCH)? != p.epoch() || num(BATCH)? != p.batch() {
            return Err(format!(
                "{}: the epoch and batch it records do not match its step {step}",
                what()
            ));
        }
        Ok(p)
    }

    /// The run's name as recorded in a checkpoint's header, if any.
    pub fn run_of(ck: &Checkpoint) -> Option<&str> {
        ck.meta.get(RUN).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_round_trips_through_metadata_and_is_checked() {
        let p = Position {
            run: "Mlp".into(),
            step: 2345,
            total: 5000,
            batches_per_epoch: 937,
        };
        assert_eq!((p.epoch(), p.batch()), (2, 471));
        let mut ck = Checkpoint {
            path: "x.safetensors".into(),
            tensors: BTreeMap::new(),
            other: BTreeMap::new(),
            step: Some(2345),
            meta: p.to_meta(),
        };
        assert_eq!(Position::from_checkpoint(&ck), Ok(p));
        ck.step = Some(2346);
        assert!(Position::from_checkpoint(&ck)
            .unwrap_err()
            .contains("do not match"));
        ck.meta.remove(RUN);
        assert!(Position::from_checkpoint(&ck)
            .unwrap_err()
            .contains("nnc.run"));
    }
}
