//! What a checkpoint holds besides tensors so that a stopped run can continue bit for bit as if it
//! had never stopped, and the checks made when it is read back.
//!
//! A checkpoint written by the training loop holds every (non-teacher) parameter, every optimizer
//! state buffer (`__optim.<path>.<i>`), the number of steps done (`__step`), and in the header's
//! metadata the run's name, its length in steps, the number of batches per epoch, the number of
//! whole epochs done, the index of the next batch within the current epoch and what orders the
//! batches (batch size, seed, shuffling) and what the optimizer's state buffers hold (by
//! PyTorch's names) — all under one key, `nnc.resume`, as
//! `run=Mlp;total_steps=200;batches_per_epoch=937;epoch=0;batch=200;batch_size=64;seed=0;shuffle=true;optim_state=exp_avg,exp_avg_sq`
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
const BATCH_SIZE: &str = "batch_size";
const SEED: &str = "seed";
const SHUFFLE: &str = "shuffle";
const OPTIM_STATE: &str = "optim_state";

/// How a checkpoint records what `optimizer`'s state buffers hold: their names joined by `,`,
/// or `none`.
pub fn optim_state(optimizer: &crate::ir::OptimizerSpec) -> String {
    let names = optimizer.state_names();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

/// The `key=value` fields of the metadata value (run names are identifiers: no `;` or `=`), or
/// what is wrong with them: a field without `=`, or a key given twice (which value would hold?).
fn fields(value: &str) -> Result<BTreeMap<&str, &str>, String> {
    let mut fields = BTreeMap::new();
    for f in value.split(';') {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| format!("`{f}` is not a `key=value` field"))?;
        if fields.insert(k, v).is_some() {
            return Err(format!("`{k}` is given twice"));
        }
    }
    Ok(fields)
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
    /// The settings that order its batches (`None` in a checkpoint of an nnc that did not
    /// record them).
    pub order: Option<Order>,
    /// What the optimizer's state buffers hold, in order (`OptimizerSpec::state_names`,
    /// written `optim_state=square_avg,momentum_buffer`, or `none`); `None` in a checkpoint of
    /// an nnc that did not record it.
    pub optim_state: Option<String>,
}

/// What orders a run's batches besides the step: a resumed run goes on in the same order only
/// with the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Order {
    pub batch: u64,
    pub seed: u64,
    pub shuffle: bool,
}

impl Order {
    /// The order of `spec`'s batches.
    pub fn of(spec: &crate::ir::RunSpec) -> Order {
        Order {
            batch: spec.batch as u64,
            seed: spec.seed,
            shuffle: spec.shuffle,
        }
    }
}

impl std::fmt::Display for Order {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shuffle = if self.shuffle {
            "shuffled"
        } else {
            "not shuffled"
        };
        write!(f, "batch {}, seed {}, {shuffle}", self.batch, self.seed)
    }
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
        let mut value = format!(
            "{RUN}={};{TOTAL}={};{PER_EPOCH}={};{EPOCH}={};{BATCH}={}",
            self.run,
            self.total,
            self.batches_per_epoch,
            self.epoch(),
            self.batch()
        );
        if let Some(o) = self.order {
            value += &format!(
                ";{BATCH_SIZE}={};{SEED}={};{SHUFFLE}={}",
                o.batch, o.seed, o.shuffle
            );
        }
        if let Some(names) = &self.optim_state {
            value += &format!(";{OPTIM_STATE}={names}");
        }
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
        let f = fields(value).map_err(|e| corrupt(ck, &e))?;
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
        let order = match (f.get(BATCH_SIZE), f.get(SEED), f.get(SHUFFLE)) {
            (None, None, None) => None,
            (_, _, Some(s)) => Some(Order {
                batch: num(BATCH_SIZE)?,
                seed: num(SEED)?,
                shuffle: s
                    .parse()
                    .map_err(|_| format!("{}: `{SHUFFLE}` is not true or false", what()))?,
            }),
            _ => return Err(unresumable(&format!("`{SHUFFLE}` in its `{KEY}` metadata"))),
        };
        let p = Position {
            run: get(RUN)?.to_string(),
            step,
            total: num(TOTAL)?,
            batches_per_epoch: num(PER_EPOCH)?,
            order,
            optim_state: f.get(OPTIM_STATE).map(|s| s.to_string()),
        };
        if p.batches_per_epoch == 0 || num(EPOCH)? != p.epoch() || num(BATCH)? != p.batch() {
            return Err(format!(
                "{}: the epoch and batch it records do not match its step {step}",
                what()
            ));
        }
        Ok(p)
    }

    /// The run's name as recorded in a checkpoint's header, if any; an error (as
    /// [`Position::from_checkpoint`] words it) where its metadata is corrupt, which must not
    /// pass for a checkpoint that records no run.
    pub fn run_of(ck: &Checkpoint) -> Result<Option<&str>, String> {
        let Some(value) = ck.meta.get(KEY) else {
            return Ok(None);
        };
        let fields = fields(value).map_err(|e| corrupt(ck, &e))?;
        Ok(fields.get(RUN).copied())
    }
}

/// The error of a checkpoint whose metadata [`fields`] refuses with `e`.
fn corrupt(ck: &Checkpoint, e: &str) -> String {
    format!(
        "checkpoint {}: its `{KEY}` metadata is corrupt: {e}",
        ck.path.display()
    )
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
            order: Some(Order {
                batch: 64,
                seed: 7,
                shuffle: true,
            }),
            optim_state: Some("exp_avg,exp_avg_sq".into()),
        };
        assert_eq!((p.epoch(), p.batch()), (2, 471));
        let mut ck = Checkpoint {
            path: "x.safetensors".into(),
            tensors: BTreeMap::new(),
            other: BTreeMap::new(),
            step: Some(2345),
            meta: p.to_meta(),
        };
        assert_eq!(Position::from_checkpoint(&ck), Ok(p.clone()));
        // Written by an nnc that did not record the order, nor the optimizer's state.
        let old = Position {
            order: None,
            optim_state: None,
            ..p.clone()
        };
        ck.meta = old.to_meta();
        assert_eq!(Position::from_checkpoint(&ck), Ok(old));
        ck.step = Some(2346);
        assert!(Position::from_checkpoint(&ck)
            .unwrap_err()
            .contains("do not match"));
        assert_eq!(Position::run_of(&ck), Ok(Some("Mlp")));
        ck.meta.insert(KEY.into(), "total_steps=5000".into());
        assert!(Position::from_checkpoint(&ck)
            .unwrap_err()
            .contains("no `run`"));
        // A field given twice (the last one read won: 30 steps where 3 were written).
        ck.step = Some(2345);
        let twice = p.to_meta()[KEY].replace("total_steps=5000", "total_steps=5000;total_steps=30");
        ck.meta.insert(KEY.into(), twice);
        let e = Position::from_checkpoint(&ck).unwrap_err();
        assert!(
            e.contains("metadata is corrupt: `total_steps` is given twice"),
            "{e}"
        );
        // `nnc train --resume` without `--run` asks for the run first: corrupt, not "no run".
        let e = Position::run_of(&ck).unwrap_err();
        assert!(
            e.contains("metadata is corrupt: `total_steps` is given twice"),
            "{e}"
        );
        ck.meta.insert(KEY.into(), "run=Mlp;total_steps".into());
        let e = Position::from_checkpoint(&ck).unwrap_err();
        assert!(
            e.contains("`total_steps` is not a `key=value` field"),
            "{e}"
        );
        ck.meta.clear();
        assert!(Position::from_checkpoint(&ck)
            .unwrap_err()
            .contains("nnc.resume"));
        assert_eq!(Position::run_of(&ck), Ok(None));
    }
}
