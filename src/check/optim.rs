//! Training settings that are plain values: optimizer, schedule, evaluation, lengths.

use super::args::{bind, Sig};
use super::consts;
use crate::diag::Diag;
use crate::ir::{EvalSpec, Metric, OptimizerSpec, Schedule, ScheduleKind};
use crate::syntax::ast::{Expr, ExprKind, Ident};
use std::sync::OnceLock;

/// The callee and arguments of `name` or `name(args)`.
fn call_parts(e: &Expr) -> Option<(&Ident, &[crate::syntax::ast::Arg])> {
    match &e.kind {
        ExprKind::Call { callee, args } => Some((callee, args.as_slice())),
        _ => e.as_name().map(|n| (n, &[][..])),
    }
}

/// An optimizer as the checker reads it and its help writes it.
struct OptimizerArgs {
    name: &'static str,
    /// The arguments it takes only by name (`lr` comes first, by position or name).
    named: &'static [&'static str],
    /// The value its usage line shows for `lr` and each of `named`, in order: the default, or
    /// a typical value where the default turns it off (`momentum`) or there is none (`lr`).
    shown: &'static [&'static str],
}

/// The source of both the checker's signatures and the usage lines of its help.
const OPTIMIZER_ARGS: [OptimizerArgs; 4] = [
    OptimizerArgs {
        name: "sgd",
        named: &["momentum", "nesterov", "weight_decay"],
        shown: &["0.1", "0.9", "false", "0"],
    },
    OptimizerArgs {
        name: "adam",
        named: &["betas", "eps", "weight_decay"],
        shown: &["1e-3", "[0.9, 0.999]", "1e-8", "0"],
    },
    OptimizerArgs {
        name: "adamw",
        named: &["betas", "eps", "weight_decay"],
        shown: &["1e-3", "[0.9, 0.999]", "1e-8", "0.01"],
    },
    OptimizerArgs {
        name: "rmsprop",
        named: &["alpha", "eps", "momentum", "weight_decay", "centered"],
        shown: &["1e-2", "0.99", "1e-8", "0", "0", "false"],
    },
];

pub(super) const OPTIMIZERS: &[&str] = &{
    let mut names = [""; OPTIMIZER_ARGS.len()];
    let mut i = 0;
    while i < names.len() {
        assert!(OPTIMIZER_ARGS[i].shown.len() == OPTIMIZER_ARGS[i].named.len() + 1);
        names[i] = OPTIMIZER_ARGS[i].name;
        i += 1;
    }
    names
};

/// How to write `optimizer` with every argument it takes, for help lines:
/// `` `adam(lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weight_decay: 0)` ``.
fn optimizer_usage(optimizer: &str) -> &'static str {
    static USAGE: OnceLock<Vec<String>> = OnceLock::new();
    let usage = USAGE.get_or_init(|| {
        OPTIMIZER_ARGS
            .iter()
            .map(|o| {
                let args: Vec<String> = std::iter::once("lr")
                    .chain(o.named.iter().copied())
                    .zip(o.shown)
                    .map(|(a, v)| format!("{a}: {v}"))
                    .collect();
                format!("`{}({})`", o.name, args.join(", "))
            })
            .collect()
    });
    let i = OPTIMIZERS
        .iter()
        .position(|n| *n == optimizer)
        .expect("a known optimizer");
    &usage[i]
}

pub fn optimizer(e: &Expr) -> Result<OptimizerSpec, Vec<Diag>> {
    let Some((callee, args)) = call_parts(e) else {
        return Err(vec![Diag::new(
            "nnc::train",
            format!("expected an optimizer, found {}", consts::describe(e)),
            e.span,
            "not an optimizer",
        )
        .help(
            "write e.g. `optimizer: sgd(lr: 0.1)` or `optimizer: adam(lr: 1e-3)`",
        )]);
    };
    let Some(named) = OPTIMIZER_ARGS
        .iter()
        .find(|o| o.name == callee.name)
        .map(|o| o.named)
    else {
        let help = super::names::did_you_mean(&callee.name, OPTIMIZERS.iter().copied())
            .unwrap_or_else(|| "the optimizers are `sgd`, `adam`, `adamw` and `rmsprop`".into());
        return Err(vec![Diag::new(
            "nnc::train",
            format!("unknown optimizer `{}`", callee.name),
            callee.span,
            "not an optimizer",
        )
        .help(help)]);
    };
    let sig = Sig {
        forms: &[&[], &["lr"]],
        named,
        required: &["lr"],
        usage: optimizer_usage(&callee.name),
    };
    let b = bind(callee, args, e.span, &sig)?;
    let mut diags = Vec::new();
    let mut num =
        |name: &str, default: f64, check: &dyn Fn(&Expr, f64) -> Result<f64, Diag>| -> f64 {
            match b
                .get(name)
                .map(|e| consts::number(e).and_then(|v| check(e, v)))
            {
                None => default,
                Some(Ok(v)) => v,
                Some(Err(d)) => {
                    diags.push(d);
                    default
                }
            }
        };
    let lr = num("lr", 0.0, &|e, v| {
        if v > 0.0 {
            Ok(v)
        } else {
            Err(Diag::new(
                "nnc::train",
                format!("the learning rate must be positive, found {v}"),
                e.span,
                "must be > 0",
            )
            .help("typical values are 0.1 for sgd and 1e-3 for adam"))
        }
    });
    let unit = |what: &'static str| {
        move |e: &Expr, v: f64| consts::fraction(e, what, 0.0, 1.0, false).map(|_| v)
    };
    let nonneg = |what: &'static str| {
        move |e: &Expr, v: f64| {
            if v >= 0.0 {
                Ok(v)
            } else {
                Err(Diag::new(
                    "nnc::train",
                    format!("{what} cannot be negative, found {v}"),
                    e.span,
                    "must be ≥ 0",
                ))
            }
        }
    };
    let wd_default = if callee.name == "adamw" { 0.01 } else { 0.0 };
    let weight_decay = num("weight_decay", wd_default, &nonneg("weight_decay"));
    let positive_eps = |e: &Expr, v: f64| {
        if v >= f32::MIN_POSITIVE as f64 {
            Ok(v)
        } else if v > 0.0 {
            Err(subnormal_eps(e, v, "nnc::train"))
        } else {
            Err(Diag::new(
                "nnc::train",
                format!("eps must be positive, found {v}"),
                e.span,
                "must be > 0",
            ))
        }
    };
    let spec = if callee.name == "rmsprop" {
        let alpha = num("alpha", 0.99, &|e, v| {
            consts::fraction(e, "alpha", 0.0, 1.0, false).map(|_| v)
        });
        let eps = num("eps", 1e-8, &positive_eps);
        let momentum = num("momentum", 0.0, &unit("momentum"));
        let centered = match b.get("centered").map(|e| consts::boolean(e, "centered")) {
            None => false,
            Some(Ok(v)) => v,
            Some(Err(d)) => {
                diags.push(d);
                false
            }
        };
        OptimizerSpec::RmsProp {
            lr,
            alpha,
            eps,
            momentum,
            weight_decay,
            centered,
        }
    } else if callee.name == "sgd" {
        let momentum = num("momentum", 0.0, &unit("momentum"));
        let nesterov = match b.get("nesterov").map(|e| consts::boolean(e, "nesterov")) {
            None => false,
            Some(Ok(v)) => v,
            Some(Err(d)) => {
                diags.push(d);
                false
            }
        };
        // As PyTorch's SGD refuses it: without momentum, Nesterov's look-ahead is plain SGD.
        if let (true, 0.0, Some(e)) = (nesterov, momentum, b.get("nesterov")) {
            let mut d = Diag::new(
                "nnc::train",
                "Nesterov momentum needs a momentum",
                e.span,
                "nesterov without momentum",
            )
            .help("give sgd a momentum above 0, e.g. `momentum: 0.9`, or remove `nesterov: true`");
            if let Some(m) = b.get("momentum") {
                d = d.also(m.span, "the momentum is 0");
            }
            diags.push(d);
        }
        OptimizerSpec::Sgd {
            lr,
            momentum,
            nesterov,
            weight_decay,
        }
    } else {
        let eps = num("eps", 1e-8, &positive_eps);
        let (beta1, beta2) = match b.get("betas").map(betas) {
            None => (0.9, 0.999),
            Some(Ok(v)) => v,
            Some(Err(d)) => {
                diags.push(d);
                (0.9, 0.999)
            }
        };
        if callee.name == "adam" {
            OptimizerSpec::Adam {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            }
        } else {
            OptimizerSpec::AdamW {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            }
        }
    };
    if diags.is_empty() {
        Ok(spec)
    } else {
        Err(diags)
    }
}

fn betas(e: &Expr) -> Result<(f64, f64), Diag> {
    match &e.kind {
        ExprKind::List(items) if items.len() == 2 => Ok((
            consts::fraction(&items[0], "beta1", 0.0, 1.0, false)?,
            consts::fraction(&items[1], "beta2", 0.0, 1.0, false)?,
        )),
        _ => Err(Diag::new(
            "nnc::train",
            "betas must be a list of two numbers",
            e.span,
            "expected [beta1, beta2]",
        )
        .help("write `betas: [0.9, 0.999]`")),
    }
}

pub(super) const SCHEDULES: &[&str] = &["constant", "step", "cosine", "linear", "plateau"];

/// The schedules, for help lines.
const SCHEDULES_HELP: &str = "schedules are `constant`, `step(every: N, gamma: 0.1)`, `cosine`, \
     `linear` and `plateau(factor: 0.1, patience: 10)`";

/// `run_steps` is the run's length where it is given in steps (`steps: 300`), to answer a
/// warm-up written as a fraction of the run with the steps it would be.
pub fn schedule(e: &Expr, run_steps: Option<u64>) -> Result<Schedule, Vec<Diag>> {
    let Some((callee, args)) = call_parts(e) else {
        return Err(vec![Diag::new(
            "nnc::train",
            format!("expected a schedule, found {}", consts::describe(e)),
            e.span,
            "not a schedule",
        )
        .help(SCHEDULES_HELP)]);
    };
    let sig = match callee.name.as_str() {
        "step" => Sig {
            forms: &[&[]],
            named: &["every", "gamma", "warmup"],
            required: &["every"],
            usage: "`step(every: 1000, gamma: 0.1, warmup: 0)`",
        },
        "plateau" => {
            let foreign = super::plateau::foreign(args);
            if !foreign.is_empty() {
                return Err(foreign);
            }
            Sig {
                forms: &[&[]],
                named: super::plateau::NAMED,
                required: &[],
                usage: super::plateau::USAGE,
            }
        }
        name @ ("constant" | "cosine" | "linear") => {
            // `cosine(0.5)`, as a floor or a fraction of the run: not a warm-up, which counts
            // steps (naming it `warmup: 0.5` would only be refused in turn).
            let fraction = args.iter().find(|a| {
                a.name.is_none() && consts::number(&a.value).is_ok_and(|v| v.fract() != 0.0)
            });
            if let Some(a) = fraction {
                return Err(vec![Diag::new(
                    "nnc::train",
                    format!("`{name}` takes no positional arguments"),
                    a.value.span,
                    "unexpected argument",
                )
                .help(format!(
                    "`{name}`'s one setting is `warmup: N`, a whole number of steps of linear \
                     warm-up{}",
                    match name {
                        "constant" => "",
                        _ =>
                            "; it decays `lr` to 0 over the run (there is no floor, as \
                              PyTorch's `eta_min`)",
                    }
                ))]);
            }
            Sig {
                forms: &[&[]],
                named: &["warmup"],
                required: &[],
                usage: match name {
                    "constant" => "`constant(warmup: 100)`",
                    "cosine" => "`cosine(warmup: 100)`",
                    _ => "`linear(warmup: 100)`",
                },
            }
        }
        other => {
            let help = match other {
                "ReduceLROnPlateau" | "reduce_lr_on_plateau" | "reduce_on_plateau" => format!(
                    "Keras' and PyTorch's `ReduceLROnPlateau` is `plateau`: {}",
                    super::plateau::USAGE
                ),
                _ => super::names::did_you_mean(other, SCHEDULES.iter().copied())
                    .unwrap_or_else(|| SCHEDULES_HELP.into()),
            };
            return Err(vec![Diag::new(
                "nnc::train",
                format!("unknown schedule `{other}`"),
                callee.span,
                "not a schedule",
            )
            .help(help)]);
        }
    };
    let b = bind(callee, args, e.span, &sig)?;
    let mut diags = Vec::new();
    let warmup = b
        .get("warmup")
        .map_or(Ok(0), |e| warmup(e, run_steps))
        .unwrap_or_else(|d| {
            diags.push(d);
            0
        }) as u64;
    let kind = match callee.name.as_str() {
        "step" => {
            let every = b
                .get("every")
                .map_or(Ok(1), |e| consts::steps(e, "every", 1))
                .unwrap_or_else(|d| {
                    diags.push(d);
                    1
                }) as u64;
            let gamma = b
                .get("gamma")
                .map_or(Ok(0.1), |e| {
                    // (0, 1]: a factor of 0 would stop training after the first `every` steps.
                    consts::number(e).and_then(|g| {
                        if g > 0.0 && g <= 1.0 {
                            Ok(g)
                        } else {
                            Err(Diag::new(
                                "nnc::arg",
                                format!("gamma must be in (0, 1], found {g}"),
                                e.span,
                                "out of range",
                            )
                            .help("gamma multiplies the learning rate every `every` steps: pick a value above 0 and at most 1, e.g. `gamma: 0.1`"))
                        }
                    })
                })
                .unwrap_or_else(|d| {
                    diags.push(d);
                    0.1
                });
            ScheduleKind::Step { every, gamma }
        }
        "cosine" => ScheduleKind::Cosine,
        "linear" => ScheduleKind::Linear,
        "plateau" => ScheduleKind::Plateau(super::plateau::read(&b, &mut diags)),
        _ => ScheduleKind::Constant,
    };
    if diags.is_empty() {
        Ok(Schedule { kind, warmup })
    } else {
        Err(diags)
    }
}

/// `warmup: N`, a number of steps. A fraction below 1 (`warmup: 0.1`, as Hugging Face's
/// `warmup_ratio` writes it) is answered with the steps it would be in a run of `run_steps`.
fn warmup(e: &Expr, run_steps: Option<u64>) -> Result<usize, Diag> {
    consts::steps(e, "warmup", 0).map_err(|d| match consts::number(e) {
        Ok(v) if v > 0.0 && v < 1.0 => {
            let help = match run_steps {
                Some(n) => format!(
                    "warm-up counts steps, not a fraction of the run: {v} of this run's {n} \
                     steps is `warmup: {}`",
                    ((v * n as f64).round() as u64).max(1)
                ),
                None => format!(
                    "warm-up counts steps, not a fraction of the run: write a number of \
                     steps ({v} of a run of {} steps is `warmup: 100`)",
                    (100.0 / v).round()
                ),
            };
            Diag::new(
                "nnc::arg",
                format!("warmup must be a whole number of steps, found {v}"),
                e.span,
                "a fraction, not a number of steps",
            )
            .help(help)
        }
        _ => d,
    })
}

/// `every N epoch[s]|step[s] [metrics]`; `classification` says whether accuracy is meaningful.
pub fn eval(e: &Expr, classification: bool) -> Result<EvalSpec, Diag> {
    let ExprKind::Every {
        count,
        unit,
        metrics,
    } = &e.kind
    else {
        return Err(Diag::new(
            "nnc::train",
            format!(
                "expected `every N epochs` or `every N steps`, found {}",
                consts::describe(e)
            ),
            e.span,
            "not an eval schedule",
        )
        .help("write e.g. `eval: every 1 epoch [loss, accuracy]`"));
    };
    let per_epoch = match unit.name.as_str() {
        "epoch" | "epochs" => true,
        "step" | "steps" => false,
        other => {
            return Err(Diag::new(
                "nnc::train",
                format!("unknown unit `{other}`"),
                unit.span,
                "expected epoch(s) or step(s)",
            )
            .help("write `every 1 epoch` or `every 500 steps`"))
        }
    };
    // `every 0.5 epochs`: more often than once an epoch is counted in steps.
    let every = if per_epoch {
        consts::epochs(
            count,
            "the evaluation interval",
            "to evaluate more often than once an epoch, count steps: `every N steps`",
        )
    } else {
        consts::steps(count, "the evaluation interval", 1)
    }? as u64;
    let Some(metrics) = metrics else {
        return Ok(EvalSpec {
            every,
            per_epoch,
            metrics: default_metrics(classification),
        });
    };
    if metrics.is_empty() {
        let example = if classification {
            "[loss, accuracy]"
        } else {
            "[loss]"
        };
        return Err(Diag::new(
            "nnc::train",
            "no metrics are listed",
            e.span,
            "an empty list of metrics",
        )
        .help(format!(
            "the list is what each evaluation reports: name at least one, e.g. `{example}`, or \
             leave the list out for the default"
        )));
    };
    let mut out = Vec::new();
    for (i, m) in metrics.iter().enumerate() {
        let metric = match m.name.as_str() {
            "loss" => Metric::Loss,
            "accuracy" if classification => Metric::Accuracy,
            "accuracy" => {
                return Err(Diag::new("nnc::train", "accuracy needs a classifier", m.span, "the loss of this run does not compare classes")
                    .help("accuracy is measured for `cross_entropy` and `kd` losses against class labels; keep `[loss]`"))
            }
            other => {
                // Keras spells accuracy `acc`.
                let help = if other == "acc" {
                    "did you mean `accuracy`? (the metrics are `loss` and `accuracy`)".to_string()
                } else if let Some(m) = ["val_", "test_", "valid_"]
                    .iter()
                    .find_map(|p| other.strip_prefix(p))
                    .map(|m| if m == "acc" { "accuracy" } else { m })
                    .filter(|m| *m == "loss" || *m == "accuracy")
                {
                    // Keras' `val_loss`: every evaluation is on the test split.
                    format!("`eval:` measures the test split: Keras' `{other}` is `{m}`")
                } else {
                    super::names::did_you_mean(other, ["loss", "accuracy"]).map_or_else(
                        || "the metrics are `loss` and `accuracy`".to_string(),
                        |d| format!("{d} (the metrics are `loss` and `accuracy`)"),
                    )
                };
                return Err(Diag::new("nnc::train", format!("unknown metric `{other}`"), m.span, "not a metric").help(help))
            }
        };
        if let Some(first) = metrics[..i].iter().find(|f| f.name == m.name) {
            return Err(Diag::new(
                "nnc::train",
                format!("the metric `{}` is listed twice", m.name),
                m.span,
                "listed again here",
            )
            .also(first.span, "first listed here")
            .help("list each metric once"));
        }
        out.push(metric);
    }
    Ok(EvalSpec {
        every,
        per_epoch,
        metrics: out,
    })
}

pub fn default_metrics(classification: bool) -> Vec<Metric> {
    if classification {
        vec![Metric::Loss, Metric::Accuracy]
    } else {
        vec![Metric::Loss]
    }
}

/// An `eps` above 0 but below the smallest normal f32: compiled steps flush subnormal numbers to
/// zero (spec §10a), so such an `eps` would be 0 there, and a row or a gradient of zeros would
/// divide 0 by 0.
pub(crate) fn subnormal_eps(e: &Expr, v: f64, code: &'static str) -> Diag {
    Diag::new(
        code,
        format!("eps {v:e} is below the smallest normal f32, 1.2e-38"),
        e.span,
        "0 in a compiled step",
    )
    .help(
        "training runs in f32 with subnormal numbers flushed to zero, so this eps would be 0 \
         and a 0/0 would make NaN; write 1.2e-38 or more (PyTorch's defaults are 1e-5 for \
         LayerNorm and BatchNorm, 1e-8 for the optimizers)",
    )
}
