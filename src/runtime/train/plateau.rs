//! The plateau schedule (`schedule: plateau(factor: 0.1, patience: 10)`): after each evaluation
//! on the test split, the monitored metric is compared with the best so far; once `patience`
//! evaluations in a row have not improved on it, the learning rate is multiplied by `factor`,
//! never below `min_lr`, the count restarts, and the `cooldown` evaluations that follow are not
//! counted, as PyTorch's `ReduceLROnPlateau` counts them. Every process of a data-parallel run
//! evaluates the same reduced figures, so all of them lower their rate after the same step.

use super::progress::{EvalInfo, Record};
use super::stopping::{from_hex, measured, to_hex, Count, Stall};
use crate::ir::Plateau;
use std::io::Write;

/// The count kept between evaluations, and the rate it has come to.
pub(super) struct Reducer {
    spec: Plateau,
    /// The rate before warm-up: the optimizer's `lr`, lowered at each plateau.
    lr: f64,
    /// The best value so far, and the evaluations counted since (or since the last reduction).
    count: Count,
    /// Evaluations of the cooldown still to come, which are not counted.
    cooldown: u64,
}

/// A lowered rate: `lr` from the step after the evaluation `why` tells of.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Reduced {
    pub lr: f64,
    pub why: Stall,
}

impl Reducer {
    /// The count at its start, for a run whose optimizer's rate is `lr`.
    pub fn new(spec: &Plateau, lr: f64) -> Reducer {
        Reducer {
            spec: spec.clone(),
            lr,
            count: Count::default(),
            cooldown: 0,
        }
    }

    /// The rate in use, before warm-up.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Counts evaluation `e`, and lowers the rate when it ends a plateau. An evaluation that
    /// measured nothing (no test split) counts for nothing.
    pub fn observe(&mut self, e: &EvalInfo) -> Option<Reduced> {
        let value = measured(e, self.spec.monitor)?;
        let s = &self.spec;
        self.count.see(value, e.step, |v, best| s.improves(v, best));
        if self.cooldown > 0 {
            self.cooldown -= 1;
            self.count.since = 0;
        }
        let why = (self.count).stall(e.step, s.monitor, s.patience, s.min_delta)?;
        self.count.since = 0;
        self.cooldown = s.cooldown;
        let lr = (self.lr * s.factor).max(s.min_lr);
        // At the floor already: nothing to lower.
        if lr >= self.lr {
            return None;
        }
        self.lr = lr;
        Some(Reduced { lr, why })
    }

    /// The state as a checkpoint keeps it ([`checkpoint::PLATEAU`]), so that a run resumed from
    /// it lowers its rate where the uninterrupted run does: the rate's bits, the best value's
    /// bits, the step it was evaluated after, the evaluations counted since and those of the
    /// cooldown left. `None` before the first evaluation.
    ///
    /// [`checkpoint::PLATEAU`]: crate::runtime::checkpoint::PLATEAU
    pub fn to_meta(&self) -> Option<String> {
        let count = self.count.to_meta()?;
        Some(format!("{} {count} {}", to_hex(self.lr), self.cooldown))
    }

    /// Takes the state back from [`Reducer::to_meta`]'s text.
    pub fn resume(&mut self, text: &str) -> Result<(), String> {
        let bad = || format!("the plateau schedule's state `{text}` is not five numbers");
        let [lr, best, step, since, cooldown] = text.split(' ').collect::<Vec<_>>()[..] else {
            return Err(bad());
        };
        let (Ok(lr), Ok(cooldown)) = (from_hex(lr), cooldown.parse()) else {
            return Err(bad());
        };
        self.count.resume([best, step, since]).ok_or_else(bad)?;
        (self.lr, self.cooldown) = (lr, cooldown);
        Ok(())
    }
}

/// A learning rate as notes show it, to 6 significant digits: `0.025`, `1e-5` (not
/// `1.0000000000000004e-5`, a tenth of a tenth of …).
pub(super) fn rate_text(v: f64) -> String {
    let rounded: f64 = format!("{v:.5e}").parse().unwrap_or(v);
    if rounded != 0.0 && rounded.abs() < 1e-3 {
        format!("{rounded:e}")
    } else {
        rounded.to_string()
    }
}

impl Reduced {
    /// ``run `m` lowers its learning rate to 1e-4 after step 400: its test loss has not
    /// improved on 0.4321 (after step 200) in 2 evaluations``.
    pub fn message(&self, run: &str) -> String {
        format!(
            "run `{run}` lowers its learning rate to {} after step {}: {}",
            rate_text(self.lr),
            self.why.step,
            self.why.reason(),
        )
    }

    /// Its `--log-json` record: `{"type":"lr_reduced","run":…,"step":…,"lr":…,"monitor":…,
    /// "best":…,"best_step":…,"patience":…}`, `lr` the rate in use from the step after `step`
    /// (before warm-up).
    pub fn record(&self, w: &mut impl Write, run: &str) -> std::io::Result<()> {
        let mut o = Record::new(w, "lr_reduced", run)?;
        o.uint("step", Some(self.why.step))?
            .num("lr", Some(self.lr))?;
        self.why.fields(&mut o)?.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Metric;
    use crate::runtime::train::stopping::tests::eval;

    fn spec(monitor: Metric, patience: u64, min_delta: f64, cooldown: u64) -> Plateau {
        Plateau {
            monitor,
            factor: 0.1,
            patience,
            min_delta,
            cooldown,
            min_lr: 0.0,
        }
    }

    /// The steps after which `losses` (one evaluation every 100 steps) lower the rate, and the
    /// rate each time.
    fn reductions(r: &mut Reducer, losses: &[f64]) -> Vec<(u64, f64)> {
        losses
            .iter()
            .enumerate()
            .filter_map(|(i, &l)| r.observe(&eval(100 * (i as u64 + 1), l, 0.0)))
            .map(|d| (d.why.step, d.lr))
            .collect()
    }

    /// Patience 2 with min_delta 0.01: 0.5 → 0.495 (not better by more than 0.01) → 0.45
    /// (better: the count starts again) → 0.46 → 0.445 (not by 0.01) lowers the rate after
    /// step 500; the count restarts, and two more evaluations that do not improve lower it again.
    #[test]
    fn the_rate_is_lowered_after_patience_evaluations_without_an_improvement() {
        let mut r = Reducer::new(&spec(Metric::Loss, 2, 0.01, 0), 0.1);
        let losses = [0.5, 0.495, 0.45, 0.46, 0.445, 0.44, 0.45];
        let got = reductions(&mut r, &losses);
        assert_eq!(got, [(500, 0.1 * 0.1), (700, 0.1 * 0.1 * 0.1)]);
        let mut again = Reducer::new(&spec(Metric::Loss, 2, 0.01, 0), 0.1);
        let first = losses[..5]
            .iter()
            .enumerate()
            .filter_map(|(i, &l)| again.observe(&eval(100 * (i as u64 + 1), l, 0.0)))
            .next()
            .unwrap();
        assert_eq!(
            first.message("m"),
            "run `m` lowers its learning rate to 0.01 after step 500: its test loss has not \
             improved on 0.4500 by more than 0.01 (after step 300) in 2 evaluations"
        );
    }

    /// A cooldown of 2: the two evaluations after a reduction are not counted, the third is.
    #[test]
    fn the_cooldown_s_evaluations_are_not_counted() {
        let mut r = Reducer::new(&spec(Metric::Loss, 1, 0.0, 2), 1.0);
        let got = reductions(&mut r, &[0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]);
        // 200 lowers it; 300 and 400 are the cooldown; 500 lowers it; 600, 700 cool; 800.
        let steps: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(steps, [200, 500, 800]);
        // An improvement during the cooldown still becomes the best.
        let mut r = Reducer::new(&spec(Metric::Loss, 1, 0.0, 2), 1.0);
        assert_eq!(reductions(&mut r, &[0.5, 0.6, 0.4, 0.45, 0.45]).len(), 2);
        assert_eq!(r.count.best, Some((0.4, 300)));
    }

    /// The rate never goes below `min_lr`; once there, a plateau lowers nothing and says
    /// nothing.
    #[test]
    fn the_rate_stops_at_min_lr() {
        let mut r = Reducer::new(
            &Plateau {
                min_lr: 0.02,
                ..spec(Metric::Loss, 1, 0.0, 0)
            },
            1.0,
        );
        let got = reductions(&mut r, &[0.5, 0.6, 0.6, 0.6, 0.6]);
        assert_eq!(got, [(200, 0.1), (300, 0.02)]);
        assert_eq!(r.lr(), 0.02);
    }

    /// Accuracy improves upwards; an evaluation without the metric counts for nothing.
    #[test]
    fn the_accuracy_must_rise() {
        let mut r = Reducer::new(&spec(Metric::Accuracy, 1, 0.0, 0), 1.0);
        assert_eq!(r.observe(&eval(1, 9.0, 0.5)), None);
        assert_eq!(r.observe(&eval(2, 9.0, 0.6)), None);
        let none = EvalInfo {
            accuracy: None,
            ..eval(3, 0.1, 0.0)
        };
        assert_eq!(r.observe(&none), None);
        let d = r
            .observe(&eval(4, 0.1, 0.6))
            .expect("equal is no improvement");
        assert_eq!((d.why.best, d.why.best_step, d.lr), (0.6, 2, 0.1));
        assert!(d
            .message("m")
            .contains("accuracy has not improved on 60.00%"));
    }

    /// The state comes back from a checkpoint's text as it was, the values to the bit; bad text
    /// is an error, not a silent fresh count.
    #[test]
    fn the_state_survives_a_checkpoint() {
        let s = Plateau {
            cooldown: 3,
            ..spec(Metric::Loss, 1, 0.0, 3)
        };
        let mut r = Reducer::new(&s, 0.3);
        assert_eq!(r.to_meta(), None);
        r.observe(&eval(10, 0.1 + 0.2, 0.0));
        r.observe(&eval(20, 0.5, 0.0));
        let mut back = Reducer::new(&s, 0.3);
        back.resume(&r.to_meta().unwrap()).unwrap();
        assert_eq!(
            (
                back.lr.to_bits(),
                back.count.best,
                back.count.since,
                back.cooldown
            ),
            ((0.3f64 * 0.1).to_bits(), Some((0.1 + 0.2, 10)), 0, 3)
        );
        assert!(back.resume("1 2 3 4").is_err() && back.resume("x 2 3 4 5").is_err());
    }

    #[test]
    fn rates_are_shown_short() {
        assert_eq!(rate_text(0.1 * 0.1 * 0.1 * 0.1 * 0.1), "1e-5");
        assert_eq!(rate_text(0.05 * 0.5), "0.025");
        assert_eq!(rate_text(0.1), "0.1");
    }
}
