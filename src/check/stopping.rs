//! `early_stopping: loss(patience: 3, min_delta: 0)`: the run ends once its evaluations on the
//! test split stop improving, as Keras' `EarlyStopping(monitor="val_loss", patience=3)` and
//! PyTorch Lightning's `EarlyStopping` end it. The callee names the metric watched, one of those
//! the run's `eval:` reports; patience counts evaluations, so `eval: every N …` sets their pace.

use super::args::{bind, Sig};
use super::consts;
use crate::diag::Diag;
use crate::ir::{EarlyStopping, EvalSpec, Length, Metric, RunSpec};
use crate::syntax::ast::{Arg, Expr, ExprKind, Span, Train};

const USAGE: &str =
    "`early_stopping: loss(patience: 3)` or `accuracy(patience: 5, min_delta: 0.001, restore_best: true)`";

/// The `early_stopping:` setting `e` of a run whose evaluations are `eval`, of a classifier or
/// not (`classification`: only a classifier's accuracy is measured).
pub fn early_stopping(
    e: &Expr,
    eval: &EvalSpec,
    classification: bool,
) -> Result<EarlyStopping, Vec<Diag>> {
    let not_a_metric = |found: &str, span| {
        Diag::new(
            "nnc::train",
            format!("early stopping watches `loss` or `accuracy`, found {found}"),
            span,
            "not a metric",
        )
    };
    let (callee, args) = match &e.kind {
        ExprKind::Call { callee, args } => (callee, args.as_slice()),
        _ => {
            // `early_stopping: 3` (a patience), `early_stopping: true`, or a bare metric.
            let help = match (consts::number(e), e.as_name()) {
                (Ok(n), _) => {
                    format!("the patience is an argument: `early_stopping: loss(patience: {n})`")
                }
                (_, Some(m)) if m.name == "loss" || m.name == "accuracy" => {
                    format!("give it a patience, the evaluations to wait: `early_stopping: {}(patience: 3)`", m.name)
                }
                _ => format!("write {USAGE}"),
            };
            return Err(vec![not_a_metric(consts::describe(e), e.span).help(help)]);
        }
    };
    let monitor = match callee.name.as_str() {
        "loss" => Metric::Loss,
        "accuracy" => Metric::Accuracy,
        other => {
            let help = match other {
                "val_loss" | "test_loss" | "valid_loss" => {
                    "the loss watched is the test split's, which `eval:` measures: `loss(patience: 3)`".to_string()
                }
                "val_accuracy" | "val_acc" | "acc" | "test_accuracy" => {
                    "the accuracy watched is the test split's, which `eval:` measures: `accuracy(patience: 3)`".to_string()
                }
                "EarlyStopping" | "early_stopping" | "EarlyStop" | "early_stop" => {
                    keras_callback(args)
                }
                _ => format!("write {USAGE}"),
            };
            return Err(vec![
                not_a_metric(&format!("`{other}`"), callee.span).help(help)
            ]);
        }
    };
    let sig = Sig {
        forms: &[&["patience"]],
        named: &["min_delta", "restore_best"],
        required: &["patience"],
        usage: USAGE,
    };
    let b = bind(callee, args, e.span, &sig)?;
    let mut diags = Vec::new();
    let patience = b
        .get("patience")
        .map(|p| consts::steps(p, "the patience", 1));
    let min_delta = b.get("min_delta").map_or(Ok(0.0), |d| {
        consts::number(d).and_then(|v| {
            if v >= 0.0 && v.is_finite() {
                Ok(v)
            } else {
                Err(Diag::new(
                    "nnc::arg",
                    format!("min_delta must be 0 or more, found {v}"),
                    d.span,
                    "out of range",
                )
                .help("it is how much better than the best so far an evaluation must be to count as an improvement, e.g. `min_delta: 0.001`"))
            }
        })
    });
    let restore_best = b
        .get("restore_best")
        .map_or(Ok(false), |e| consts::boolean(e, "restore_best"));
    diags.extend(unmeasured(
        monitor,
        callee.span,
        eval,
        classification,
        "early stopping",
        "early_stopping: loss(patience: 3)",
    ));
    let patience = patience.transpose().unwrap_or_else(|d| {
        diags.push(d);
        None
    });
    let min_delta = min_delta.unwrap_or_else(|d| {
        diags.push(d);
        0.0
    });
    // An accuracy is a fraction: no evaluation improves on another by 1 or more, so the run
    // would stop `patience` evaluations after its first, whatever it learned.
    if let (Metric::Accuracy, Some(d)) = (monitor, b.get("min_delta").filter(|_| min_delta >= 1.0))
    {
        diags.push(
            Diag::new(
                "nnc::arg",
                format!("the accuracy's min_delta must be below 1, found {min_delta}"),
                d.span,
                "no accuracy improves by this much",
            )
            .help("the accuracy watched is a fraction (0.9438, not 94.38%): `min_delta: 0.001` asks for a tenth of a point more"),
        );
    }
    let restore_best = restore_best.unwrap_or_else(|d| {
        diags.push(d);
        false
    });
    match (patience, diags.is_empty()) {
        (Some(patience), true) => Ok(EarlyStopping {
            monitor,
            patience: patience as u64,
            min_delta,
            restore_best,
        }),
        _ => Err(diags),
    }
}

/// The error for a setting (`who`: "early stopping") that watches `monitor`, under `span`, when
/// the run's evaluations do not measure it: the accuracy of a run that is not a classifier
/// (`instead`, the setting watching the loss, is the fix), or a metric `eval:` does not list.
pub(super) fn unmeasured(
    monitor: Metric,
    span: Span,
    eval: &EvalSpec,
    classification: bool,
    who: &str,
    instead: &str,
) -> Option<Diag> {
    if monitor == Metric::Accuracy && !classification {
        Some(
            Diag::new(
                "nnc::train",
                format!("{who} watches the test accuracy, which only a classifier has"),
                span,
                "no accuracy to watch",
            )
            .help(format!("accuracy is measured for class logits compared with class ids or one-hot labels; watch the loss: `{instead}`")),
        )
    } else if !eval.metrics.contains(&monitor) {
        let name = monitor.name();
        Some(
            Diag::new(
                "nnc::train",
                format!("{who} watches the test {name}, which `eval:` does not measure"),
                span,
                "not evaluated",
            )
            .help(format!(
                "list it among the metrics of `eval:`, e.g. `eval: every 1 epoch [{name}]`"
            )),
        )
    } else {
        None
    }
}

/// For Keras' callback written as the setting's value,
/// `early_stopping: EarlyStopping(monitor: "val_accuracy", patience: 3)`: nnc's call that says
/// the same, its metric the callee. Keras' default `patience=0` stops at the first evaluation
/// that does not improve, as nnc's `patience: 1`; its default monitor is the loss.
fn keras_callback(args: &[Arg]) -> String {
    let arg = |name: &str| {
        args.iter()
            .find(|a| a.name.as_ref().is_some_and(|n| n.name == name))
            .map(|a| &a.value)
    };
    let monitor = match arg("monitor").map(|m| &m.kind) {
        Some(ExprKind::Str(m)) if m.contains("acc") => "accuracy",
        _ => "loss",
    };
    let mut items = vec![format!(
        "patience: {}",
        arg("patience")
            .and_then(super::args::written)
            .filter(|p| p != "0")
            .unwrap_or_else(|| "1".into())
    )];
    for (keras, nnc) in [
        ("min_delta", "min_delta"),
        ("restore_best_weights", "restore_best"),
    ] {
        if let Some(v) = arg(keras).and_then(super::args::written) {
            // Python's `True` is nnc's `true`.
            let v = if v == "True" || v == "False" {
                v.to_lowercase()
            } else {
                v
            };
            items.push(format!("{nnc}: {v}"));
        }
    }
    format!(
        "the setting is Keras' callback, named by the metric it watches: \
         `early_stopping: {monitor}({})`",
        items.join(", ")
    )
}

/// The evaluations run `r`, trained for `length`, makes before its last step or epoch (the one
/// after it ends the run anyway), and that unit (`"step"`, `"epoch"`). Known only where the
/// length and `eval:` count the same thing: an epoch's steps depend on the data.
pub(super) fn evaluations_before_end(r: &RunSpec, length: Length) -> Option<(u64, &'static str)> {
    let eval = r.eval.as_ref()?;
    let total = match (length, eval.per_epoch) {
        (Length::Epochs(n), true) | (Length::Steps(n), false) => n,
        _ => return None,
    };
    let unit = if eval.per_epoch { "epoch" } else { "step" };
    Some((total.saturating_sub(1) / eval.every.max(1), unit))
}

/// The warning for run `r` (of block `t`, trained for `length`) whose early stopping cannot
/// stop it: it evaluates too few times before its last step for `patience` evaluations to
/// follow its best one (Keras' `patience=10` carried over to a run of 5 epochs). Known only
/// where the length and `eval:` count the same thing (both epochs, or both steps): an epoch's
/// steps depend on the data, which `check` does not read.
pub fn warning(t: &Train, r: &RunSpec, length: Length) -> Option<Diag> {
    let stopping = r.early_stopping.as_ref()?;
    let (before_end, unit) = evaluations_before_end(r, length)?;
    if before_end > stopping.patience {
        return None;
    }
    let setting = t.settings.iter().find(|s| s.key.name == "early_stopping")?;
    let restores = if stopping.restore_best {
        "; `restore_best: true` still ends it with its best evaluation's parameters"
    } else {
        ""
    };
    Some(
        Diag::new(
            "nnc::train",
            format!(
                "early stopping cannot end this run early: it evaluates {} before its last \
                 {unit}, too few for its best evaluation to be followed by {} that do not \
                 improve on it",
                super::names::plural(before_end as usize, "time"),
                super::names::plural(stopping.patience as usize, "evaluation"),
            ),
            setting.value.span,
            format!("patience {}", stopping.patience),
        )
        .help(format!(
            "lower the patience, evaluate more often (`eval: every N steps`) or train longer{restores}"
        ))
        .warning(),
    )
}
