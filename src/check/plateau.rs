//! `schedule: plateau(factor: 0.1, patience: 10, min_delta: 0, cooldown: 0, min_lr: 0)`: the
//! learning rate is lowered when the run's evaluations on the test split stop improving, as
//! Keras' `ReduceLROnPlateau(monitor="val_loss")` and PyTorch's `ReduceLROnPlateau` lower it.
//! The metric watched is `monitor: loss` (the default) or `monitor: accuracy`, one of those the
//! run's `eval:` reports, as `early_stopping:` watches them; patience counts evaluations.

use super::args::Bound;
use super::consts;
use crate::diag::Diag;
use crate::ir::{EvalSpec, Metric, Plateau, RunSpec, ScheduleKind};
use crate::syntax::ast::{Arg, Expr, ExprKind, Span, Train};

/// How to write the schedule with every argument it takes, at its defaults (Keras' and
/// PyTorch's, but for the threshold: see [`foreign`]).
pub(super) const USAGE: &str =
    "`plateau(monitor: loss, factor: 0.1, patience: 10, min_delta: 0, cooldown: 0, min_lr: 0, warmup: 0)`";

/// The arguments it takes, all by name (`warmup` is every schedule's).
pub(super) const NAMED: &[&str] = &[
    "monitor",
    "factor",
    "patience",
    "min_delta",
    "cooldown",
    "min_lr",
    "warmup",
];

/// The arguments of Keras' or PyTorch's `ReduceLROnPlateau` that nnc spells otherwise or does
/// without, each refused with what to write instead (rather than as an unknown argument).
pub(super) fn foreign(args: &[Arg]) -> Vec<Diag> {
    args.iter()
        .filter_map(|a| {
            let name = a.name.as_ref()?;
            let help = match name.name.as_str() {
                "mode" => "the direction follows the metric: `monitor: loss` improves downwards, \
                           `monitor: accuracy` upwards; remove `mode`"
                    .to_string(),
                "threshold" | "threshold_mode" => "the margin is `min_delta`, absolute as \
                    PyTorch's `threshold_mode='abs'` (PyTorch's default is relative, 1e-4 × the \
                    best value): write `min_delta: 0` to count any improvement, or the margin \
                    in the metric's units, e.g. `min_delta: 1e-5` for a loss near 0.1"
                    .to_string(),
                "eps" => "the rate is lowered whenever `factor` lowers it, down to `min_lr`; \
                          remove `eps`"
                    .to_string(),
                "verbose" => "every reduction is noted on stderr (unless `--quiet`) and logged \
                              by `--log-json`; remove `verbose`"
                    .to_string(),
                "min_lrs" => "write one floor, `min_lr: 1e-6`".to_string(),
                _ => return None,
            };
            Some(
                Diag::new(
                    "nnc::train",
                    format!("`plateau` takes no `{}`", name.name),
                    name.span.to(a.value.span),
                    "not an argument of `plateau`",
                )
                .help(help),
            )
        })
        .collect()
}

/// The schedule's own arguments, bound in `b`; each bad one is reported in `diags`.
pub(super) fn read(b: &Bound, diags: &mut Vec<Diag>) -> Plateau {
    let mut keep = |r: Result<f64, Diag>, default: f64| {
        r.unwrap_or_else(|d| {
            diags.push(d);
            default
        })
    };
    let monitor = b.get("monitor").map_or(Ok(Metric::Loss), monitor);
    let factor = keep(b.get("factor").map_or(Ok(0.1), factor), 0.1);
    let patience = b.get("patience").map_or(Ok(10.0), |p| {
        consts::steps(p, "the patience", 1)
            .map(|p| p as f64)
            .map_err(|d| {
                d.help(
                    "the patience is the evaluations in a row without an improvement before the \
                     rate is lowered: Keras' `patience=0` lowers it at the first, as \
                     `patience: 1` does (PyTorch's `patience=p` is `patience: p + 1`)",
                )
            })
    });
    let patience = keep(patience, 10.0) as u64;
    let cooldown = b.get("cooldown").map_or(Ok(0.0), |c| {
        consts::steps(c, "the cooldown", 0).map(|c| c as f64)
    });
    let cooldown = keep(cooldown, 0.0) as u64;
    let at_least_0 = |name: &str, what: &str| {
        b.get(name).map_or(Ok(0.0), |e| {
            consts::number(e).and_then(|v| {
                if v >= 0.0 && v.is_finite() {
                    Ok(v)
                } else {
                    Err(Diag::new(
                        "nnc::arg",
                        format!("{name} must be 0 or more, found {v}"),
                        e.span,
                        "out of range",
                    )
                    .help(what.to_string()))
                }
            })
        })
    };
    let min_delta = at_least_0(
        "min_delta",
        "it is how much better than the best so far an evaluation must be to count as an \
         improvement, e.g. `min_delta: 0.001`",
    );
    let min_lr = at_least_0(
        "min_lr",
        "it is the floor the rate is never lowered below, e.g. `min_lr: 1e-6` (0 for none)",
    );
    let (min_delta, min_lr) = (keep(min_delta, 0.0), keep(min_lr, 0.0));
    let monitor = monitor.unwrap_or_else(|d| {
        diags.push(d);
        Metric::Loss
    });
    Plateau {
        monitor,
        factor,
        patience,
        min_delta,
        cooldown,
        min_lr,
    }
}

/// `monitor: loss` or `monitor: accuracy`; Keras' `monitor="val_loss"` is answered with nnc's
/// spelling.
fn monitor(e: &Expr) -> Result<Metric, Diag> {
    let (found, written) = match &e.kind {
        ExprKind::Str(s) => (format!("\"{s}\""), s.as_str()),
        _ => match e.as_name() {
            Some(n) if n.name == "loss" => return Ok(Metric::Loss),
            Some(n) if n.name == "accuracy" => return Ok(Metric::Accuracy),
            Some(n) => (format!("`{}`", n.name), n.name.as_str()),
            None => (consts::describe(e).to_string(), ""),
        },
    };
    let metric = if written.contains("acc") {
        "accuracy"
    } else {
        "loss"
    };
    let help = if written.is_empty() {
        "write `monitor: loss` or `monitor: accuracy`".to_string()
    } else {
        format!(
            "the metric is named, not quoted, and is the test split's, which `eval:` measures: \
             `monitor: {metric}`"
        )
    };
    Err(Diag::new(
        "nnc::train",
        format!("the plateau schedule watches `loss` or `accuracy`, found {found}"),
        e.span,
        "not a metric",
    )
    .help(help))
}

/// `factor:`, in (0, 1): 1 or more would never lower the rate, 0 would stop training.
fn factor(e: &Expr) -> Result<f64, Diag> {
    consts::number(e).and_then(|f| {
        if f > 0.0 && f < 1.0 {
            Ok(f)
        } else {
            Err(Diag::new(
                "nnc::arg",
                format!("factor must be in (0, 1), found {f}"),
                e.span,
                "out of range",
            )
            .help(
                "factor multiplies the learning rate at each plateau: pick a value above 0 and \
                 below 1, e.g. `factor: 0.1` (Keras' and PyTorch's default) or `factor: 0.5`",
            ))
        }
    })
}

/// Where the argument `name` of the schedule `e` is written, else the whole schedule.
pub(super) fn arg_span(e: &Expr, name: &str) -> Span {
    match &e.kind {
        ExprKind::Call { args, .. } => args
            .iter()
            .find(|a| a.name.as_ref().is_some_and(|n| n.name == name))
            .map_or(e.span, |a| a.value.span),
        _ => e.span,
    }
}

/// The error for a plateau schedule (`e`, the setting's value) whose metric the run's
/// evaluations `eval` do not measure.
pub(super) fn unmeasured(
    e: &Expr,
    p: &Plateau,
    eval: &EvalSpec,
    classification: bool,
) -> Option<Diag> {
    super::stopping::unmeasured(
        p.monitor,
        arg_span(e, "monitor"),
        eval,
        classification,
        "the plateau schedule",
        "schedule: plateau(monitor: loss)",
    )
}

/// The warning for run `r` (of block `t`, trained for `length`) whose plateau schedule cannot
/// lower its rate: it evaluates too few times before its last step for `patience` evaluations
/// to follow its first (Keras' `patience=10` carried over to a run of 5 epochs).
pub(super) fn warning(t: &Train, r: &RunSpec, length: crate::ir::Length) -> Option<Diag> {
    let ScheduleKind::Plateau(p) = &r.schedule.kind else {
        return None;
    };
    let (before_end, unit) = super::stopping::evaluations_before_end(r, length)?;
    if before_end > p.patience {
        return None;
    }
    let setting = t.settings.iter().find(|s| s.key.name == "schedule")?;
    Some(
        Diag::new(
            "nnc::train",
            format!(
                "the plateau schedule cannot lower this run's learning rate: it evaluates {} \
                 before its last {unit}, too few for its first evaluation to be followed by {} \
                 that do not improve on it",
                super::names::plural(before_end as usize, "time"),
                super::names::plural(p.patience as usize, "evaluation"),
            ),
            setting.value.span,
            format!("patience {}", p.patience),
        )
        .help("lower the patience, evaluate more often (`eval: every N steps`) or train longer")
        .warning(),
    )
}

/// The warning for run `r` (of block `t`) whose plateau schedule's floor `min_lr` is not below
/// its optimizer's `lr`: the rate is never lowered (PyTorch's `min_lr` is a floor too).
pub(super) fn floor_warning(t: &Train, r: &RunSpec) -> Option<Diag> {
    let ScheduleKind::Plateau(p) = &r.schedule.kind else {
        return None;
    };
    let lr = r.optimizer.lr();
    if p.min_lr < lr {
        return None;
    }
    let setting = t.settings.iter().find(|s| s.key.name == "schedule")?;
    let span = arg_span(&setting.value, "min_lr");
    Some(
        Diag::new(
            "nnc::train",
            format!(
                "the plateau schedule's floor min_lr: {} is not below the optimizer's lr, {lr}",
                p.min_lr
            ),
            span,
            "the learning rate is never lowered",
        )
        .help(format!(
            "min_lr is the rate below which no plateau lowers it: pick one below {lr}, e.g. \
             `min_lr: {}`, or 0 for none",
            lr / 100.0
        ))
        .warning(),
    )
}
