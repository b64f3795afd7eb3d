//! What a checkpoint holds besides tensors so that a stopped run can continue bit for bit as if it
//! had never stopped, and the checks made when it is read back.
//!
//! A checkpoint written by the training loop holds every (non-teacher) parameter, every optimizer
//! state buffer (`__optim.<path>.<i>`), the number of steps done (`__step`), and in the header's
//! metadata the run's name, its length in steps, the number of batches per epoch, the number of
//! whole epochs done and the index of the next batch within the current epoch — all under one
//! key, `nnc.resume`, as `run=Mlp;total_steps=200;batches_per_epoch=937;epoch=0;batch=200`
//! (safetensors writes header metadata in hash order, so a single key keeps the file's bytes the
//! same from one identical training to the next).
//!
//! No generator state is stored: the data position is derived from the step. With `P` batches per
//! epoch, step `s` is batch `s % P` of epoch `s / P` (0-based); the order of that epoch is
//! re-derived by replaying the `s / P + 1` per-epoch shuffles of `Rng::for_name(seed, "shuffle")`
//! from the start (an O(samples) permutation per epoch, cheap next to one epoch of training).
//! Everything else a step draws on is a function of (seed, step): dropout masks come from
//! `StepCtx { seed, step, first }`, the lr schedule from (step, length), Adam's bias correction from the
//! step. The stored epoch and batch index are redundant with `__step`; they are checked against it
//! and make the file readable.

use crate::runtime::checkpoint::Checkpoint;
use std::collections::BTreeMap;

/// The metadata key.
pub const KEY: &str = "nnc.resume";
const RUN: &str = "run";
const TOTAL: &str = "total_steps";
const PER_EPOCH: &str = "batches_per_epoch";
const EPOCH: &str = "epoch";
const BATCH: &str = "batch";

/// The `key=value` fields of the metadata value (run names are identifiers: no `;` or `=`).
fn fields(value: &str) -> BTreeMap<&str, &str> {
    value.split(';').filter_map(|f| f.split_once('=')).collect()
}

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
        let value = format!(
            "{RUN}={};{TOTAL}={};{PER_EPOCH}={};{EPOCH}={};{BATCH}={}",
            self.run,
            self.total,
            self.batches_per_epoch,
            self.epoch(),
            self.batch()
        );
        BTreeMap::from([(KEY.to_string(), value)])
    }

    /// The position recorded in `ck`; an error names what is missing or inconsistent.
    pub fn from_checkpoint(ck: &Checkpoint) -> Result<Position, String> {
        let what = || format!("checkpoint {}", ck.path.display());
        let unresumable = |what_lacks: &str| {
            format!(
                "{} cannot be resumed from: it has no {what_lacks} (it was not written by `nnc train`, or by an older nnc)",
                what()
            )
        };
        let value = ck
            .meta
            .get(KEY)
            .ok_or_else(|| unresumable(&format!("`{KEY}` metadata")))?;
        let f = fields(value);
        let get = |k: &str| -> Result<&str, String> {
            f.get(k)
                .copied()
                .ok_or_else(|| unresumable(&format!("`{k}` in its `{KEY}` metadata")))
        };
        let num = |k: &str| -> Result<u64, String> {
            get(k)?
                .parse()
                .map_err(|_| format!("{}: `{k}` is not a number", what()))
        };
        let step = ck.step.ok_or_else(|| unresumable("`__step`"))?;
        let p = Position {
            run: get(RUN)?.to_string(),
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
        ck.meta.get(KEY).and_then(|v| fields(v).get(RUN).copied())
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
        assert_eq!(Position::run_of(&ck), Some("Mlp"));
        ck.meta.insert(KEY.into(), "total_steps=5000".into());
        assert!(Position::from_checkpoint(&ck)
            .unwrap_err()
            .contains("no `run`"));
        ck.meta.clear();
        assert!(Position::from_checkpoint(&ck)
            .unwrap_err()
            .contains("nnc.resume"));
    }
}
