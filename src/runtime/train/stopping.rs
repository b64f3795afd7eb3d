//! Early stopping (`early_stopping: loss(patience: N, min_delta: d)`): after each evaluation on
//! the test split, the monitored metric is compared with the best so far; once `patience`
//! evaluations in a row have not improved on it, the run ends there, as Keras' `EarlyStopping`
//! ends `fit`. Its parameters are the last ones, as with Keras' default
//! `restore_best_weights=False`, or with `restore_best: true` those of its best evaluation
//! ([`Restored`]). Every process of a data-parallel run evaluates the same reduced figures, so
//! all of them stop at the same step.

use super::progress::{loss_text, EvalInfo, Record};
use super::TrainOptions;
use crate::check::plural;
use crate::ir::{EarlyStopping, Length, Metric, RunSpec, ScheduleKind};
use std::io::Write;

/// The prefix of the tensors under which a checkpoint keeps the parameters of the best
/// evaluation so far (`restore_best: true`): `__best.<path>`.
pub(super) const BEST: &str = "__best.";

/// The figure of `metric` that evaluation `e` measured, if it measured it.
pub(super) fn measured(e: &EvalInfo, metric: Metric) -> Option<f64> {
    match metric {
        Metric::Loss => e.loss,
        Metric::Accuracy => e.accuracy,
    }
}

/// A figure of `metric` as notes show it: `0.4500`, `60.00%`.
pub(super) fn figure(metric: Metric, v: f64) -> String {
    match metric {
        Metric::Loss => loss_text(v),
        Metric::Accuracy => format!("{:.2}%", v * 100.0),
    }
}

/// `v`'s bits in hexadecimal, as a checkpoint's header keeps a figure exactly, and back.
pub(super) fn to_hex(v: f64) -> String {
    format!("{:016x}", v.to_bits())
}

pub(super) fn from_hex(text: &str) -> Result<f64, std::num::ParseIntError> {
    u64::from_str_radix(text, 16).map(f64::from_bits)
}

/// The warnings for a run whose early stopping cannot end it early, or whose plateau schedule
/// cannot lower its rate, which only the data can tell: its length and its `eval:` count
/// different things (`epochs: 5` with `eval: every 500 steps`, or the other way round), and an
/// epoch's steps depend on the data (`nnc check` warns of the rest,
/// `check::stopping::warning`). `total` is the run's length in steps, `per_epoch` the batches
/// of an epoch. A resumed run of the length it was started with is not judged: the unit it was
/// written in is not recorded.
pub(super) fn unreachable(
    spec: &RunSpec,
    opts: &TrainOptions,
    total: u64,
    per_epoch: u64,
) -> Vec<String> {
    let plateau = match &spec.schedule.kind {
        ScheduleKind::Plateau(p) => Some(p.patience),
        _ => None,
    };
    [
        spec.early_stopping.as_ref().map(|s| {
            (
                "early stopping cannot end this run early",
                "best evaluation",
                s.patience,
                // As the checker's warning says it.
                match s.restore_best {
                    true => {
                        "; `restore_best: true` still ends it with its best evaluation's \
                         parameters"
                    }
                    false => "",
                },
            )
        }),
        plateau.map(|p| {
            (
                "the plateau schedule cannot lower this run's learning rate",
                "first evaluation",
                p,
                "",
            )
        }),
    ]
    .into_iter()
    .flatten()
    .filter_map(|(what, whose, patience, restores)| {
        let why = unreachable_by(spec, opts, total, per_epoch, patience)?;
        Some(format!(
            "{what}: {why} {whose} to be followed by {} that do not improve on it (its \
             patience); lower the patience, evaluate more often or train longer{restores}",
            plural(patience as usize, "evaluation"),
        ))
    })
    .collect()
}

/// Why `patience` evaluations cannot follow one of a run's (`evaluating every 10 steps in 30
/// epochs of 1 step, it evaluates 2 times before its last step, too few for its`), where only
/// the data can tell: see [`unreachable()`].
fn unreachable_by(
    spec: &RunSpec,
    opts: &TrainOptions,
    total: u64,
    per_epoch: u64,
    patience: u64,
) -> Option<String> {
    let eval = spec.eval.as_ref()?;
    let in_epochs = match (opts.steps, opts.epochs, &opts.resume) {
        (Some(_), _, _) => false,
        (None, Some(_), _) => true,
        (None, None, Some(_)) => return None,
        (None, None, None) => matches!(spec.length, Length::Epochs(_)),
    };
    if in_epochs == eval.per_epoch {
        return None;
    }
    let every = match eval.per_epoch {
        true => eval.every.saturating_mul(per_epoch),
        false => eval.every,
    }
    .max(1);
    // The evaluations before the last step: the one after it ends the run anyway.
    let before_end = total.saturating_sub(1) / every;
    if before_end > patience {
        return None;
    }
    let (length, pace) = match in_epochs {
        true => (
            format!(
                "{} of {}",
                plural(total.div_ceil(per_epoch.max(1)) as usize, "epoch"),
                plural(per_epoch as usize, "step")
            ),
            format!("every {}", plural(every as usize, "step")),
        ),
        false => (
            plural(total as usize, "step"),
            format!(
                "every {} ({every} steps)",
                plural(eval.every as usize, "epoch")
            ),
        ),
    };
    Some(format!(
        "evaluating {pace} in {length}, it evaluates {} before its last step, too few for its",
        plural(before_end as usize, "time"),
    ))
}

/// The count kept between evaluations.
pub(super) struct Watch {
    spec: EarlyStopping,
    count: Count,
}

/// The count early stopping and the plateau schedule both keep: the best value of the metric
/// so far, the step it was evaluated after, and the evaluations since that have not improved on
/// it.
#[derive(Default)]
pub(super) struct Count {
    pub best: Option<(f64, u64)>,
    pub since: u64,
}

impl Count {
    /// Counts an evaluation of `value` after `step`, `improves(value, best)` telling whether it
    /// beats the best: whether it is the best so far (or the first).
    pub fn see(&mut self, value: f64, step: u64, improves: impl Fn(f64, f64) -> bool) -> bool {
        match self.best {
            Some((best, _)) if !improves(value, best) => {
                self.since += 1;
                false
            }
            _ => {
                self.best = Some((value, step));
                self.since = 0;
                true
            }
        }
    }

    /// The stall of the evaluation after `step`, once `patience` evaluations in a row have not
    /// improved on the best of `monitor` (by more than `min_delta`).
    pub fn stall(
        &self,
        step: u64,
        monitor: Metric,
        patience: u64,
        min_delta: f64,
    ) -> Option<Stall> {
        let (best, best_step) = self.best?;
        (self.since >= patience).then_some(Stall {
            step,
            monitor,
            best,
            best_step,
            patience,
            min_delta,
        })
    }

    /// The count as a checkpoint's header keeps it: the best value's bits, the step it was
    /// evaluated after, and the evaluations since. `None` before the first evaluation.
    pub fn to_meta(&self) -> Option<String> {
        let (best, step) = self.best?;
        Some(format!("{} {step} {}", to_hex(best), self.since))
    }

    /// Takes the count back from the three fields of [`Count::to_meta`]'s text.
    pub fn resume(&mut self, [bits, step, since]: [&str; 3]) -> Option<()> {
        let best = (from_hex(bits).ok()?, step.parse().ok()?);
        self.since = since.parse().ok()?;
        self.best = Some(best);
        Some(())
    }
}

/// Why a run ends early, or a plateau schedule lowers its rate: no improvement on `best` (after
/// step `best_step`) in `patience` evaluations, the last after `step`.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Stall {
    pub step: u64,
    pub monitor: Metric,
    pub best: f64,
    pub best_step: u64,
    pub patience: u64,
    /// How much better than `best` an evaluation had to be: with it, one a little better did
    /// not count, and the message says so.
    pub min_delta: f64,
}

/// What an evaluation means to the count.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Verdict {
    /// The best so far (or the first).
    Best,
    /// No improvement, and patience left; or nothing measured.
    Wait,
    /// The evaluation that exhausts the patience.
    Stop(Stall),
}

impl Watch {
    pub fn new(spec: &EarlyStopping) -> Watch {
        Watch {
            spec: spec.clone(),
            count: Count::default(),
        }
    }

    /// The count as a checkpoint keeps it ([`checkpoint::EARLY_STOPPING`], [`Count::to_meta`]),
    /// so that a run resumed from it stops where the uninterrupted run stops.
    ///
    /// [`checkpoint::EARLY_STOPPING`]: crate::runtime::checkpoint::EARLY_STOPPING
    pub fn to_meta(&self) -> Option<String> {
        self.count.to_meta()
    }

    /// Takes the count back from [`Watch::to_meta`]'s text.
    pub fn resume(&mut self, text: &str) -> Result<(), String> {
        let bad = || format!("early stopping's count `{text}` is not three numbers");
        let fields: [&str; 3] =
            (text.split(' ').collect::<Vec<_>>().try_into()).map_err(|_| bad())?;
        self.count.resume(fields).ok_or_else(bad)
    }

    /// Whether the run ends with the parameters of its best evaluation.
    pub fn restores_best(&self) -> bool {
        self.spec.restore_best
    }

    /// The metric watched.
    pub fn monitor(&self) -> Metric {
        self.spec.monitor
    }

    /// Counts evaluation `e`. An evaluation that measured nothing (no test split) counts for
    /// nothing.
    pub fn observe(&mut self, e: &EvalInfo) -> Verdict {
        let Some(value) = measured(e, self.spec.monitor) else {
            return Verdict::Wait;
        };
        let s = &self.spec;
        if self.count.see(value, e.step, |v, best| s.improves(v, best)) {
            return Verdict::Best;
        }
        match (self.count).stall(e.step, s.monitor, s.patience, s.min_delta) {
            Some(stall) => Verdict::Stop(stall),
            None => Verdict::Wait,
        }
    }
}

/// The parameters of a run's best evaluation, kept for `restore_best: true`, and that
/// evaluation.
pub(super) struct Restored {
    pub eval: EvalInfo,
    pub values: Vec<Vec<f32>>,
}

impl Restored {
    /// The evaluation as a checkpoint keeps it ([`checkpoint::BEST_EVAL`]), beside the
    /// parameters under [`BEST`]: step, epoch, samples, and the bits of the loss and the accuracy
    /// (`-` for one not measured).
    ///
    /// [`checkpoint::BEST_EVAL`]: crate::runtime::checkpoint::BEST_EVAL
    pub fn to_meta(&self) -> String {
        let bits = |v: Option<f64>| v.map_or("-".into(), to_hex);
        let e = &self.eval;
        let (loss, accuracy) = (bits(e.loss), bits(e.accuracy));
        format!("{} {} {} {loss} {accuracy}", e.step, e.epoch, e.samples)
    }

    /// The evaluation back from [`Restored::to_meta`]'s text, with its parameters `values`.
    pub fn from_meta(text: &str, values: Vec<Vec<f32>>) -> Result<Restored, String> {
        let bad = || format!("the best evaluation `{text}` is not five numbers");
        let [step, epoch, samples, loss, accuracy] = text.split(' ').collect::<Vec<_>>()[..] else {
            return Err(bad());
        };
        let bits = |v: &str| match v {
            "-" => Ok(None),
            v => from_hex(v).map(Some),
        };
        let eval = match (
            step.parse(),
            epoch.parse(),
            samples.parse(),
            bits(loss),
            bits(accuracy),
        ) {
            (Ok(step), Ok(epoch), Ok(samples), Ok(loss), Ok(accuracy)) => EvalInfo {
                step,
                epoch,
                loss,
                accuracy,
                samples,
            },
            _ => return Err(bad()),
        };
        Ok(Restored { eval, values })
    }

    /// ``run `m` ends with its parameters after step 10 (test loss 1.0337), its best``.
    pub fn message(&self, run: &str, monitor: Metric) -> String {
        // The evaluation is the best of `monitor`'s: it measured it.
        let value = measured(&self.eval, monitor).map_or(String::new(), |v| figure(monitor, v));
        format!(
            "run `{run}` ends with its parameters after step {} (test {} {value}), its best",
            self.eval.step,
            monitor.name()
        )
    }

    /// Its `--log-json` record: `{"type":"restore_best","run":…,"step":…}`, the step whose
    /// parameters the run ends with.
    pub fn record(&self, w: &mut impl Write, run: &str) -> std::io::Result<()> {
        Record::new(w, "restore_best", run)?
            .uint("step", Some(self.eval.step))?
            .end()
    }
}

impl Stall {
    /// ``run `M` stops early after step 600: its test loss has not improved on 0.1234 (after
    /// step 300) in 3 evaluations``: early stopping's note.
    pub fn message(&self, run: &str) -> String {
        format!(
            "run `{run}` stops early after step {}: {}",
            self.step,
            self.reason()
        )
    }

    /// ``its test loss has not improved on 0.1234 (after step 300) in 3 evaluations``, with
    /// `by more than 0.01` after the best figure when `min_delta` is set (an evaluation a little
    /// better than it did not count).
    pub fn reason(&self) -> String {
        let delta = match self.monitor {
            Metric::Loss => short(self.min_delta).to_string(),
            Metric::Accuracy => format!("{} points", short(self.min_delta * 100.0)),
        };
        let by = if self.min_delta > 0.0 {
            format!(" by more than {delta}")
        } else {
            String::new()
        };
        format!(
            "its test {} has not improved on {}{by} (after step {}) in {}",
            self.monitor.name(),
            figure(self.monitor, self.best),
            self.best_step,
            crate::check::plural(self.patience as usize, "evaluation"),
        )
    }

    /// Early stopping's `--log-json` record:
    /// `{"type":"early_stop","run":…,"step":…,"monitor":…,"best":…,"best_step":…,"patience":…}`.
    pub fn record(&self, w: &mut impl Write, run: &str) -> std::io::Result<()> {
        let mut o = Record::new(w, "early_stop", run)?;
        o.uint("step", Some(self.step))?;
        self.fields(&mut o)?.end()
    }

    /// The fields of a record after its `step` (and a plateau's `lr`): `monitor`, `best`,
    /// `best_step`, `patience`.
    pub fn fields<'r, 'w, W: Write>(
        &self,
        o: &'r mut Record<'w, W>,
    ) -> std::io::Result<&'r mut Record<'w, W>> {
        o.str("monitor", self.monitor.name())?
            .num("best", Some(self.best))?
            .uint("best_step", Some(self.best_step))?
            .uint("patience", Some(self.patience))
    }
}

/// `v` to at most 6 decimals, without trailing zeros: 0.001 × 100 is `0.1`, not
/// `0.10000000000000002`.
fn short(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An evaluation after `step` that measured `loss` and `accuracy`.
    pub(in crate::runtime::train) fn eval(step: u64, loss: f64, accuracy: f64) -> EvalInfo {
        EvalInfo {
            step,
            epoch: 1,
            loss: Some(loss),
            accuracy: Some(accuracy),
            samples: 10,
        }
    }

    /// Patience 2 on the loss with min_delta 0.01: 0.5 → 0.495 (not better by more than 0.01)
    /// → 0.45 (better: the count starts again) → 0.46 → 0.44 (not by 0.01) stops.
    #[test]
    fn the_run_stops_after_patience_evaluations_without_an_improvement() {
        let mut w = Watch::new(&EarlyStopping {
            monitor: Metric::Loss,
            patience: 2,
            min_delta: 0.01,
            restore_best: false,
        });
        let losses = [0.5, 0.495, 0.45, 0.46, 0.445];
        let verdicts: Vec<Verdict> = losses
            .iter()
            .enumerate()
            .map(|(i, &l)| w.observe(&eval(100 * (i as u64 + 1), l, 0.0)))
            .collect();
        use Verdict::{Best, Wait};
        assert_eq!(verdicts[..4], [Best, Wait, Best, Wait]);
        let Verdict::Stop(stop) = verdicts[4].clone() else {
            panic!("stops at the fifth: {verdicts:?}")
        };
        assert_eq!((stop.step, stop.best, stop.best_step), (500, 0.45, 300));
        assert_eq!(
            stop.message("m"),
            "run `m` stops early after step 500: its test loss has not improved on 0.4500 by \
             more than 0.01 (after step 300) in 2 evaluations"
        );
    }

    /// Accuracy improves upwards; an evaluation without the metric counts for nothing.
    #[test]
    fn accuracy_must_rise() {
        let mut w = Watch::new(&EarlyStopping {
            monitor: Metric::Accuracy,
            patience: 1,
            min_delta: 0.0,
            restore_best: false,
        });
        assert_eq!(w.observe(&eval(1, 9.0, 0.5)), Verdict::Best);
        assert_eq!(w.observe(&eval(2, 9.0, 0.6)), Verdict::Best);
        let none = EvalInfo {
            accuracy: None,
            ..eval(3, 0.1, 0.0)
        };
        assert_eq!(w.observe(&none), Verdict::Wait);
        let Verdict::Stop(stop) = w.observe(&eval(4, 0.1, 0.6)) else {
            panic!("equal is no improvement")
        };
        assert_eq!((stop.best, stop.best_step), (0.6, 2));
        assert!(stop
            .message("m")
            .contains("accuracy has not improved on 60.00%"));
    }

    /// An accuracy's min_delta is a fraction, said in points: 0.001 is a tenth of one.
    #[test]
    fn the_accuracy_s_min_delta_is_said_in_points() {
        let mut w = Watch::new(&EarlyStopping {
            monitor: Metric::Accuracy,
            patience: 1,
            min_delta: 0.001,
            restore_best: false,
        });
        assert_eq!(w.observe(&eval(1, 9.0, 0.9)), Verdict::Best);
        let Verdict::Stop(stop) = w.observe(&eval(2, 9.0, 0.9005)) else {
            panic!("0.05 points is not more than 0.1")
        };
        assert!(stop.message("m").contains(
            "accuracy has not improved on 90.00% by more than 0.1 points (after step 1)"
        ));
    }

    /// The count and the best evaluation come back from a checkpoint's text as they were, the
    /// values to the bit; bad text is an error, not a silent fresh count.
    #[test]
    fn the_count_and_the_best_evaluation_survive_a_checkpoint() {
        let spec = EarlyStopping {
            monitor: Metric::Loss,
            patience: 3,
            min_delta: 0.0,
            restore_best: true,
        };
        let mut w = Watch::new(&spec);
        assert_eq!(w.to_meta(), None);
        w.observe(&eval(10, 0.1 + 0.2, 0.0));
        w.observe(&eval(20, 0.5, 0.0));
        let mut back = Watch::new(&spec);
        back.resume(&w.to_meta().unwrap()).unwrap();
        assert_eq!(
            (back.count.best, back.count.since),
            (Some((0.1 + 0.2, 10)), 1)
        );
        assert!(back.resume("1 2").is_err() && back.resume("x 2 3").is_err());
        let best = Restored {
            eval: EvalInfo {
                accuracy: None,
                ..eval(10, 0.1 + 0.2, 0.0)
            },
            values: vec![vec![1.0]],
        };
        let again = Restored::from_meta(&best.to_meta(), vec![vec![1.0]]).unwrap();
        assert_eq!(again.eval.step, 10);
        assert_eq!(
            again.eval.loss.map(f64::to_bits),
            Some((0.1f64 + 0.2).to_bits())
        );
        assert_eq!(again.eval.accuracy, None);
        assert!(Restored::from_meta("10 1 4", vec![]).is_err());
    }
}
