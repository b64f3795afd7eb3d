//! A checked `.nn` file: what the checker hands to the back end and the runtime.
//!
//! Every model becomes an inference [`Graph`]; every `train` block a [`RunSpec`] holding its
//! training graph (forward in training mode + loss), its evaluation graph, and its schedule.
//! Spans are kept so that run-time errors (a missing data file, say) can still point into the file.

use super::Graph;
use crate::syntax::ast::Span;

#[derive(Clone, Debug, Default)]
pub struct Program {
    pub models: Vec<ModelIr>,
    pub data: Vec<DataSpec>,
    pub runs: Vec<RunSpec>,
}

impl Program {
    pub fn model(&self, name: &str) -> Option<&ModelIr> {
        self.models.iter().find(|m| m.name == name)
    }
    pub fn data(&self, name: &str) -> Option<&DataSpec> {
        self.data.iter().find(|d| d.name == name)
    }
    pub fn run(&self, name: &str) -> Option<&RunSpec> {
        self.runs.iter().find(|r| r.name == name)
    }
}

/// A model's inference graph: inputs (one, named as declared), parameters, output `output`.
#[derive(Clone, Debug)]
pub struct ModelIr {
    pub name: String,
    pub graph: Graph,
    pub span: Span,
}

/// An elementwise expression of one variable `x`, applied to raw inputs when loading
/// (`normalize: (x / 255 - 0.5) / 0.5`).
#[derive(Clone, Debug, PartialEq)]
pub enum ScalarExpr {
    X,
    Num(f64),
    Neg(Box<ScalarExpr>),
    Bin(crate::syntax::ast::BinOp, Box<ScalarExpr>, Box<ScalarExpr>),
}

impl ScalarExpr {
    pub fn eval(&self, x: f64) -> f64 {
        use crate::syntax::ast::BinOp::*;
        match self {
            ScalarExpr::X => x,
            ScalarExpr::Num(n) => *n,
            ScalarExpr::Neg(e) => -e.eval(x),
            ScalarExpr::Bin(op, a, b) => {
                let (a, b) = (a.eval(x), b.eval(x));
                match op {
                    Add => a + b,
                    Sub => a - b,
                    Mul => a * b,
                    Div => a / b,
                }
            }
        }
    }
}

/// Where samples come from. Paths are as written in the file; the runtime resolves them against
/// `--data-dir` (default: the file's folder).
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// Tensors written in the file: `inline(x: [[0, 0], ...], y: [[0], ...])`; rows are samples.
    Inline { x: Vec<Vec<f64>>, y: Vec<Vec<f64>> },
    /// `idx("images.gz", "labels.gz")`: IDX files, gzipped or raw.
    Idx { images: String, labels: String },
    /// `csv("file.csv", label: -1, header: true)`: one sample per row; the label column holds a
    /// class id (or a target value); every other column is an input feature.
    Csv {
        path: String,
        label_column: i64,
        header: bool,
    },
    /// `text("input.txt", seq: 64)`: characters; vocabulary = the sorted set of characters of
    /// the whole file; samples are windows of `seq` ids with the next characters as labels.
    Text { path: String, seq: usize },
}

#[derive(Clone, Debug)]
pub struct DataSpec {
    pub name: String,
    pub train: Source,
    pub train_span: Span,
    /// A separate test source; when absent, `split` holds out the end of the train source.
    pub test: Option<(Source, Span)>,
    /// Fraction of the train source used for training (1.0, all of it, unless `split` is set).
    pub split: f64,
    /// The `normalize:` expression, and its span in the file.
    pub normalize: Option<(ScalarExpr, Span)>,
    /// Declared shape of one input sample (from the model that uses it) is checked at load time.
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum OptimizerSpec {
    Sgd {
        lr: f64,
        momentum: f64,
        nesterov: bool,
        weight_decay: f64,
    },
    Adam {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
    /// Adam with decoupled weight decay.
    AdamW {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
    /// `torch.optim.RMSprop`: a running mean of g² (smoothing `alpha`), ε added outside the
    /// square root; with `momentum` a buffer b ← μ·b + g/(√v + ε); `centered` subtracts the
    /// square of a running mean of g from v.
    RmsProp {
        lr: f64,
        alpha: f64,
        eps: f64,
        momentum: f64,
        weight_decay: f64,
        centered: bool,
    },
}

impl OptimizerSpec {
    /// Per-parameter state tensors, each the parameter's size: SGD none (one with momentum),
    /// Adam and AdamW two (the moments), RMSprop one (the mean of g²), then one more with
    /// momentum (the buffer) and one more when centered (the mean of g), in PyTorch's order.
    pub fn state_buffers(&self) -> usize {
        match self {
            OptimizerSpec::Sgd { momentum, .. } => (*momentum != 0.0) as usize,
            OptimizerSpec::RmsProp {
                momentum, centered, ..
            } => 1 + (*momentum != 0.0) as usize + *centered as usize,
            _ => 2,
        }
    }
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerSpec::Sgd { lr, .. }
            | OptimizerSpec::Adam { lr, .. }
            | OptimizerSpec::AdamW { lr, .. }
            | OptimizerSpec::RmsProp { lr, .. } => *lr,
        }
    }
    /// What each state buffer holds, in order, by the name PyTorch's `state_dict` gives it:
    /// a checkpoint records them, so that a run is not resumed with another optimizer's state
    /// that happens to have as many buffers (RMSprop's mean of g² read as SGD's momentum).
    pub fn state_names(&self) -> Vec<&'static str> {
        match self {
            OptimizerSpec::Sgd { momentum, .. } if *momentum != 0.0 => vec!["momentum_buffer"],
            OptimizerSpec::Sgd { .. } => Vec::new(),
            OptimizerSpec::Adam { .. } | OptimizerSpec::AdamW { .. } => {
                vec!["exp_avg", "exp_avg_sq"]
            }
            OptimizerSpec::RmsProp {
                momentum, centered, ..
            } => {
                let mut names = vec!["square_avg"];
                if *momentum != 0.0 {
                    names.push("momentum_buffer");
                }
                if *centered {
                    names.push("grad_avg");
                }
                names
            }
        }
    }
    /// The optimizer's name as a run writes it (`sgd`, `adam`, `adamw`, `rmsprop`).
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerSpec::Sgd { .. } => "sgd",
            OptimizerSpec::Adam { .. } => "adam",
            OptimizerSpec::AdamW { .. } => "adamw",
            OptimizerSpec::RmsProp { .. } => "rmsprop",
        }
    }
}

/// Learning-rate schedule: a multiplier of the base lr as a function of the step.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub kind: ScheduleKind,
    /// Linear warm-up from 0 over this many steps (0 = none).
    pub warmup: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ScheduleKind {
    Constant,
    /// Multiply by `gamma` every `every` steps.
    Step {
        every: u64,
        gamma: f64,
    },
    /// Cosine decay to 0 over the whole run.
    Cosine,
    /// Linear decay to 0 over the whole run.
    Linear,
    /// Multiplied by `factor` when the test metric stops improving (Keras' and PyTorch's
    /// `ReduceLROnPlateau`): the runtime keeps the count, so the schedule's own factor is 1.
    Plateau(Plateau),
}

impl Schedule {
    pub fn constant() -> Schedule {
        Schedule {
            kind: ScheduleKind::Constant,
            warmup: 0,
        }
    }
    /// The lr multiplier at `step` (0-based) of a run of `total` steps.
    pub fn factor(&self, step: u64, total: u64) -> f64 {
        let warm = if self.warmup > 0 && step < self.warmup {
            (step + 1) as f64 / self.warmup as f64
        } else {
            1.0
        };
        let after = step.saturating_sub(self.warmup) as f64;
        let span = total.saturating_sub(self.warmup).max(1) as f64;
        let decay = match self.kind {
            ScheduleKind::Constant | ScheduleKind::Plateau(_) => 1.0,
            ScheduleKind::Step { every, gamma } => gamma.powi((step / every.max(1)) as i32),
            ScheduleKind::Cosine => {
                0.5 * (1.0 + (std::f64::consts::PI * (after / span).min(1.0)).cos())
            }
            ScheduleKind::Linear => (1.0 - after / span).max(0.0),
        };
        warm * decay
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Length {
    Epochs(u64),
    Steps(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Loss,
    Accuracy,
}

impl Metric {
    /// As a file writes it (`eval: … [loss, accuracy]`, `early_stopping: loss(…)`).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Loss => "loss",
            Metric::Accuracy => "accuracy",
        }
    }

    /// Whether `value` of this metric improves on `best` by more than `min_delta`: a lower
    /// loss, a higher accuracy.
    pub fn improves(self, value: f64, best: f64, min_delta: f64) -> bool {
        match self {
            Metric::Loss => value < best - min_delta,
            Metric::Accuracy => value > best + min_delta,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct EvalSpec {
    pub every: u64,
    /// true: every N epochs; false: every N steps.
    pub per_epoch: bool,
    pub metrics: Vec<Metric>,
}

/// `early_stopping: loss(patience: N, min_delta: d)` (or `accuracy(…)`), Keras' `EarlyStopping`
/// on the test split: the run ends after an evaluation once `patience` evaluations in a row have
/// not improved on the best value of `monitor` by more than `min_delta` (a lower loss, a higher
/// accuracy). With `restore_best`, the run ends with the parameters of its best evaluation
/// (Keras' `restore_best_weights=True`).
#[derive(Clone, Debug, PartialEq)]
pub struct EarlyStopping {
    pub monitor: Metric,
    pub patience: u64,
    pub min_delta: f64,
    pub restore_best: bool,
}

impl EarlyStopping {
    /// Whether an evaluation's `value` of the monitored metric improves on `best`.
    pub fn improves(&self, value: f64, best: f64) -> bool {
        self.monitor.improves(value, best, self.min_delta)
    }
}

/// `schedule: plateau(factor: 0.1, patience: 10, min_delta: 0, cooldown: 0, min_lr: 0)` (or
/// `monitor: accuracy`), Keras' `ReduceLROnPlateau` on the test split: once `patience`
/// evaluations in a row have not improved on the best value of `monitor` by more than
/// `min_delta`, the learning rate is multiplied by `factor`, never below `min_lr`; the count
/// restarts, and the `cooldown` evaluations that follow do not count.
#[derive(Clone, Debug, PartialEq)]
pub struct Plateau {
    pub monitor: Metric,
    pub factor: f64,
    pub patience: u64,
    pub min_delta: f64,
    pub cooldown: u64,
    pub min_lr: f64,
}

impl Plateau {
    /// Whether an evaluation's `value` of the monitored metric improves on `best`.
    pub fn improves(&self, value: f64, best: f64) -> bool {
        self.monitor.improves(value, best, self.min_delta)
    }
}

/// Where a run's starting parameters (or a teacher's) come from.
#[derive(Clone, Debug, PartialEq)]
pub enum InitFrom {
    /// The parameters left by an earlier run of the same file, matched by path.
    Run(String),
    /// A safetensors checkpoint, matched by path.
    File(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct TeacherSpec {
    pub model: String,
    pub from: InitFrom,
}

#[derive(Clone, Debug)]
pub struct RunSpec {
    pub name: String,
    pub model: String,
    pub data: String,
    /// Forward in training mode, then the loss. Inputs: the model's input (its declared name) and
    /// `label`. Outputs: `loss` (scalar) and `output` (the model's output). Teacher parameters,
    /// when there is a teacher, live under `teacher.` and are frozen.
    pub graph: Graph,
    /// The same in evaluation mode (no dropout).
    pub eval_graph: Graph,
    pub optimizer: OptimizerSpec,
    pub schedule: Schedule,
    pub batch: usize,
    pub length: Length,
    pub shuffle: bool,
    pub seed: u64,
    pub eval: Option<EvalSpec>,
    pub checkpoint: Option<String>,
    pub init: Option<InitFrom>,
    pub teacher: Option<TeacherSpec>,
    /// The checkpoint files `init` and `teacher` read, as written, each with the span of its
    /// string: `nnc check` warns of one that does not exist.
    pub reads: Vec<(String, Span)>,
    /// Per-path-prefix lr multipliers (`lr_scale: { encoder: 0.1 }`), longest prefix wins.
    pub lr_scale: Vec<(String, f64)>,
    /// Path prefixes written in `freeze:` (the graph's params already carry `frozen`).
    pub freeze: Vec<String>,
    /// `clip_grad_norm: X`: before each update, the gradients of the trainable parameters are
    /// scaled by X / (‖g‖ + 1e-6) where their total L2 norm ‖g‖ exceeds X
    /// (`torch.nn.utils.clip_grad_norm_`).
    pub clip_grad_norm: Option<f64>,
    /// `early_stopping: loss(patience: N)`: end the run once its evaluations stop improving.
    pub early_stopping: Option<EarlyStopping>,
    /// Whether `output` is class logits (accuracy is meaningful): labels are i32 or one-hot.
    pub classification: bool,
    pub span: Span,
}
