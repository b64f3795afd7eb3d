//! Training: a [`Session`] executes a program's `train` runs in order and keeps the parameters
//! each run ends with (for `init: <run>` and `teacher: <run>`). The graph transformations and
//! executors it needs come from a [`Backend`], so the same loop drives the JIT or the reference
//! interpreter (or a test double).

pub mod anomaly;
mod eval;
pub mod interrupt;
mod params;
mod plateau;
mod progress;
pub mod resume;
mod run;
mod shard;
mod stopping;
mod trainer;

pub use eval::{argmax, evaluate, EvalResult};
pub use params::{lr_scale, planned_start, teacher_params, StartNote, Tensors, TEACHER};
pub use progress::{eval_fields, loss_text, open_log, spinner, EvalInfo, Record, StepInfo};
pub use run::evaluate_run;

use super::checkpoint::CheckpointError;
use super::data::DataError;
use crate::exec::{ExecError, Executor, Updater};
use crate::ir::{Graph, OptimizerSpec, Program, RunSpec};
use crate::runtime::dist::{Comm, CommError, Single};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// A graph-to-graph step of a back end: the backward graph (outputs `grad:<path>` added for
/// every trainable parameter), or the preparation of an inference graph.
pub type GradFn = Box<dyn Fn(&Graph) -> Result<Graph, String>>;
/// Builds an executor for a graph.
pub type ExecutorFactory = Box<dyn Fn(&Graph) -> Result<Box<dyn Executor>, String>>;
/// Builds the update rule of an optimizer.
pub type UpdaterFactory = Box<dyn Fn(&OptimizerSpec) -> Result<Box<dyn Updater>, String>>;

/// What the training loop needs from the rest of the compiler: see [`crate::runtime::backend`]
/// for the JIT and the interpreter.
pub struct Backend {
    pub grad: GradFn,
    /// Prepares an inference or evaluation graph for `executor` (the JIT optimizes it as it
    /// does training graphs: fusion, epilogues).
    pub forward: GradFn,
    pub executor: ExecutorFactory,
    /// An executor that keeps every value after a run ([`Executor::value`]), for naming where a
    /// NaN appeared; `executor` may share buffers between values.
    pub inspector: ExecutorFactory,
    pub updater: UpdaterFactory,
}

impl Backend {
    /// An executor for the inference or evaluation graph `g`, prepared by `forward`.
    pub fn forward_executor(&self, g: &Graph) -> Result<Box<dyn Executor>, String> {
        (self.executor)(&(self.forward)(g)?)
    }
}

/// Command-line settings that apply to a session.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Where data paths resolve (`--data-dir`, default the `.nn` file's folder).
    pub data_dir: PathBuf,
    /// Where checkpoint, `init` and `teacher` paths written in the file resolve (the file's folder).
    pub base_dir: PathBuf,
    /// `--epochs` / `--steps`: replace each run's length.
    pub epochs: Option<u64>,
    pub steps: Option<u64>,
    /// `--seed`: replaces each run's `seed:` (initialization, shuffling, dropout; recorded in
    /// its checkpoint).
    pub seed: Option<u64>,
    /// No progress bar.
    pub quiet: bool,
    /// A JSON-lines log: one object per step and one per evaluation.
    pub log_json: Option<PathBuf>,
    /// `--checkpoint`: where the run executed writes its checkpoint (as given, not resolved);
    /// when [`Session::run_all`] trains several, each writes its own file ([`run_checkpoint`]).
    pub checkpoint: Option<PathBuf>,
    /// `--init`: start every run executed from this safetensors file (as given).
    pub init: Option<PathBuf>,
    /// Worker threads for the executor (read by the caller's executor factory).
    pub threads: Option<usize>,
    /// `--resume`: continue the run named in this checkpoint from where it stopped (see
    /// [`resume`]); only that run may be executed with this option.
    pub resume: Option<PathBuf>,
    /// `--checkpoint-every`: also write the run's checkpoint every this many steps.
    pub checkpoint_every: Option<u64>,
    /// Stop after this many steps (counted from the run's start) as an [`interrupt`] would: the
    /// checkpoint is written and the run returns [`TrainError::Interrupted`]. For training in
    /// time-boxed pieces, and for tests.
    pub stop_after: Option<u64>,
    /// `--detect-anomaly`: check every intermediate value of every step, and stop at the first
    /// NaN or infinity even when it does not reach the loss.
    pub detect_anomaly: bool,
    /// The processes training together: [`Single`], or the ranks of an MPI job, each of which
    /// trains on its part of every batch (see [`crate::runtime::dist`]). Only rank 0 writes
    /// checkpoints; the caller gives the other ranks no log and no progress bar.
    pub comm: Rc<dyn Comm>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            data_dir: PathBuf::from("."),
            base_dir: PathBuf::from("."),
            epochs: None,
            steps: None,
            seed: None,
            quiet: false,
            log_json: None,
            checkpoint: None,
            init: None,
            threads: None,
            resume: None,
            checkpoint_every: None,
            stop_after: None,
            detect_anomaly: false,
            comm: Rc::new(Single),
        }
    }
}

/// What one run did.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    pub run: String,
    /// Steps done, counted from the run's start (a resumed run's earlier steps included).
    pub steps: u64,
    /// The steps this process trained: `steps` less the step a resumed run started from. 0
    /// when the checkpoint resumed from was already at the run's end: nothing was trained,
    /// evaluated or written.
    pub steps_run: u64,
    /// The run's length in steps.
    pub total_steps: u64,
    pub epochs: f64,
    /// Mean training loss over the last (up to) 50 steps this process trained (the losses of a
    /// resumed run's earlier steps are not known); NaN when it trained none.
    pub final_loss: f64,
    /// The step (counted from the run's start) and loss of the first step this process trained;
    /// `None` when it trained none.
    pub first_loss: Option<(u64, f64)>,
    /// On the test split with the evaluation graph, after the last step (when there is one).
    pub test_loss: Option<f64>,
    pub test_accuracy: Option<f64>,
    pub samples_per_s: f64,
    /// Samples a step trained on: the run's `batch`, or the training split's size when that is
    /// smaller.
    pub batch: usize,
    pub wall_s: f64,
    /// Where the checkpoint was written.
    pub checkpoint: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("no run named `{0}`")]
    UnknownRun(String),
    #[error("run `{run}`: {msg}")]
    Setup { run: String, msg: String },
    #[error("run `{run}`: {source}")]
    Data { run: String, source: DataError },
    #[error("run `{run}`: {source}")]
    Checkpoint {
        run: String,
        source: CheckpointError,
    },
    #[error("run `{run}`, step {step}: {source}")]
    Exec {
        run: String,
        step: u64,
        source: ExecError,
    },
    /// A non-finite loss or gradient (or, under `--detect-anomaly`, any intermediate value):
    /// training stopped before the update, so the parameters and checkpoints are those of the
    /// last good step.
    #[error("run `{run}`, step {step}: {}", non_finite_message(*.step, *.loss, *.previous, .param.as_deref(), .stats.as_deref(), .anomaly.as_deref()))]
    NonFinite {
        run: String,
        step: u64,
        loss: f32,
        /// The loss of the step before, when this process ran it.
        previous: Option<f64>,
        /// The first trainable parameter whose gradient is not finite.
        param: Option<String>,
        /// The first batch norm whose batch statistics are not finite.
        stats: Option<String>,
        /// Where the first non-finite value appeared.
        anomaly: Option<Box<anomaly::Anomaly>>,
    },
    /// The loss on the evaluated split is not finite (the parameters overflow the model on its
    /// data), at the first batch whose loss is not, where `anomaly` appeared: `nnc eval`, or a
    /// run's evaluation during training (`after`).
    #[error("run `{run}`{}: {}", .after.map(|a| format!(", step {}", a.step)).unwrap_or_default(), non_finite_eval_message(split, *.loss, .samples.as_ref(), .anomaly.as_deref(), *.after))]
    NonFiniteEval {
        run: String,
        after: Option<AfterStep>,
        split: &'static str,
        loss: f64,
        samples: Option<std::ops::Range<usize>>,
        anomaly: Option<Box<anomaly::Anomaly>>,
    },
    /// A collective operation of a data-parallel run failed: another rank died, hangs or
    /// cannot be reached.
    #[error("run `{run}`, step {step}: exchanging {what} with the other processes: {source}")]
    Comm {
        run: String,
        step: u64,
        what: String,
        source: CommError,
    },
    /// Stopped on request ([`interrupt`]) after `step` steps; the resumable state is in `checkpoint`.
    #[error("run `{run}` interrupted after step {step}; its state is saved in {}", .checkpoint.display())]
    Interrupted {
        run: String,
        step: u64,
        checkpoint: PathBuf,
    },
    #[error("cannot write the log {}: {source}", .path.display())]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn non_finite_message(
    step: u64,
    loss: f32,
    previous: Option<f64>,
    param: Option<&str>,
    stats: Option<&str>,
    anomaly: Option<&anomaly::Anomaly>,
) -> String {
    let mut parts = Vec::new();
    if !loss.is_finite() {
        parts.push(format!("the loss is {loss}"));
    }
    if let Some(p) = param {
        parts.push(format!("the gradient of `{p}` is not finite"));
    }
    if let Some(b) = stats {
        parts.push(format!(
            "the batch statistics of `{b}` are not finite (they would enter its running_mean \
             and running_var)"
        ));
    }
    match anomaly {
        Some(a) => {
            parts.push(a.to_string());
            // A parameter that is itself not finite: not its gradient, but an earlier update
            // (an RMSprop or Adam step is about lr per element, whatever the gradient).
            if step > 1 && a.node.contains(" = param ") {
                parts.push(format!(
                    "the parameter itself is not finite: step {}'s update overflowed it (a \
                     lower learning rate may help)",
                    step - 1
                ));
            }
        }
        None if parts.is_empty() => parts.push("a value is not finite".into()),
        None => {}
    }
    // A loss that grew huge the step before is a run diverging (too high a learning rate),
    // as the evaluation's message says of one that overflows the test data.
    if let Some(l) = previous.filter(|l| l.is_finite() && l.abs() >= 1e6) {
        parts.push(format!(
            "step {}'s loss was {}: training is diverging, a lower learning rate may help",
            step - 1,
            loss_text(l)
        ));
    }
    parts.push("training stopped before this step's update".into());
    // One finding a line (a terminal renders them under the headline).
    parts.join("\n")
}

/// How far a run's training loss must rise from its first step to its end, and how high it must
/// end, to be called diverging. No healthy run ends at 10× its first loss; and a mean loss over
/// 10 is worse than uniform guessing for a cross-entropy over up to e¹⁰ ≈ 22000 classes, which
/// keeps a regression whose tiny loss wobbles upwards from being warned about.
const DIVERGED_RATIO: f64 = 10.0;
const DIVERGED_ABOVE: f64 = 10.0;

impl RunSummary {
    /// A warning when the run ended with its training loss far above where it began (a learning
    /// rate too high that did not overflow to NaN, which stops a run with an error).
    pub fn divergence_warning(&self) -> Option<String> {
        let (step, first) = self.first_loss?;
        let last = self.final_loss;
        (first > 0.0 && last > DIVERGED_RATIO * first && last > DIVERGED_ABOVE).then(|| {
            format!(
                "run `{}`: the training loss rose from {} (step {step}) to {} (step {}): \
                 training diverged, a lower learning rate may help",
                self.run,
                loss_text(first),
                loss_text(last),
                self.steps
            )
        })
    }
}

/// The training step an evaluation followed, and that step's training loss (`None` when this
/// process ran no step: a resumed run that was already at its end).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AfterStep {
    pub step: u64,
    pub loss: Option<f64>,
}

fn non_finite_eval_message(
    split: &str,
    loss: f64,
    samples: Option<&std::ops::Range<usize>>,
    anomaly: Option<&anomaly::Anomaly>,
    after: Option<AfterStep>,
) -> String {
    let mut parts = vec![match samples {
        Some(s) if s.len() == 1 => {
            format!("the {split} loss is {loss} (first at sample {})", s.start)
        }
        Some(s) => format!(
            "the {split} loss is {loss} (first in the batch of samples {} to {})",
            s.start,
            s.end - 1
        ),
        None => format!("the {split} loss is {loss}"),
    }];
    if let Some(a) = anomaly {
        parts.push(a.to_string());
    }
    parts.push(match after {
        None => "the parameters overflow the model on this data: check that the checkpoint was \
                 trained on it"
            .into(),
        // A huge training loss is a run diverging; a small one, test data unlike the training
        // data (scaled otherwise, or holding outliers).
        Some(AfterStep { loss: Some(l), .. }) if l.abs() < 1e6 => format!(
            "training stopped: the parameters after this step overflow the model on this data, \
             though the step's training loss was {}: check that the data is scaled as the \
             training data is",
            loss_text(l)
        ),
        Some(AfterStep { loss, .. }) => format!(
            "training stopped: the parameters after this step overflow the model on this \
             data{}: training is diverging, a lower learning rate may help",
            loss.map(|l| format!(", and the step's training loss was {}", loss_text(l)))
                .unwrap_or_default()
        ),
    });
    parts.join("\n")
}

/// Where run `run` writes the `--checkpoint` file `given` when `runs` runs are trained: `given`
/// itself for one, else `<stem>.<run>.<ext>` beside it (`ae.st` → `ae.pretrain.st`), so that each
/// run's parameters survive the next run instead of being overwritten by them.
pub fn run_checkpoint(given: &Path, run: &str, runs: usize) -> PathBuf {
    if runs <= 1 {
        return given.to_path_buf();
    }
    crate::runtime::checkpoint::per_run_path(given, run)
}

/// Executes the runs of one program, remembering each run's final parameters.
pub struct Session<'a> {
    program: &'a Program,
    backend: Backend,
    options: TrainOptions,
    trained: BTreeMap<String, Tensors>,
    /// Runs on the same data with the same input types share one load.
    data: run::DataCache,
    log: Option<(PathBuf, std::io::BufWriter<std::fs::File>)>,
    /// The log's path where this session created it: removed at the end if nothing was
    /// written to it (a training that failed before its first step leaves no empty log).
    created_log: Option<PathBuf>,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if let Some((_, w)) = &mut self.log {
            let _ = std::io::Write::flush(w);
        }
        if let Some(p) = &self.created_log {
            if std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() == 0) {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

impl<'a> Session<'a> {
    pub fn new(
        program: &'a Program,
        backend: Backend,
        options: TrainOptions,
    ) -> Result<Session<'a>, TrainError> {
        let created_log = options.log_json.clone().filter(|p| !p.exists());
        let log = match &options.log_json {
            Some(p) => Some(progress::open_log(p).map_err(|source| TrainError::Log {
                path: p.clone(),
                source,
            })?),
            None => None,
        };
        Ok(Session {
            program,
            backend,
            options,
            trained: BTreeMap::new(),
            data: BTreeMap::new(),
            log,
            created_log,
        })
    }

    /// Runs every `train` block in file order. With a `--checkpoint` and several runs, each run
    /// writes its own file ([`run_checkpoint`]).
    pub fn run_all(&mut self) -> Result<Vec<RunSummary>, TrainError> {
        let names: Vec<String> = self.program.runs.iter().map(|r| r.name.clone()).collect();
        names
            .iter()
            .map(|n| {
                let checkpoint = self
                    .options
                    .checkpoint
                    .as_ref()
                    .map(|c| run_checkpoint(c, n, names.len()));
                self.train(n, checkpoint)
            })
            .collect()
    }

    /// Runs the `train` block named `name` (its `init`/`teacher` runs must have run before).
    pub fn run(&mut self, name: &str) -> Result<RunSummary, TrainError> {
        self.train(name, self.options.checkpoint.clone())
    }

    /// Runs `name`, writing the checkpoint `--checkpoint` gives it to `checkpoint`.
    fn train(&mut self, name: &str, checkpoint: Option<PathBuf>) -> Result<RunSummary, TrainError> {
        let spec = self
            .program
            .run(name)
            .ok_or_else(|| TrainError::UnknownRun(name.into()))?;
        let seeded;
        let spec = match self.options.seed {
            Some(seed) if seed != spec.seed => {
                seeded = RunSpec {
                    seed,
                    ..spec.clone()
                };
                &seeded
            }
            _ => spec,
        };
        let options = TrainOptions {
            checkpoint,
            ..self.options.clone()
        };
        let log = self.log.take();
        let (summary, params, log) = run::train(
            self.program,
            spec,
            &self.backend,
            &options,
            &self.trained,
            &mut self.data,
            log,
        )?;
        self.log = log;
        self.trained.insert(name.to_string(), params);
        Ok(summary)
    }

    /// The parameters a finished run ended with (teacher parameters excluded), by path.
    pub fn params(&self, run: &str) -> Option<&Tensors> {
        self.trained.get(run)
    }
}

#[cfg(test)]
mod tests {
    use super::{run_checkpoint, RunSummary};
    use std::path::Path;

    /// A summary of run `m`, whose first step's loss was `first` and whose end `last`.
    fn ended(first: f64, last: f64) -> RunSummary {
        RunSummary {
            run: "m".into(),
            steps: 600,
            steps_run: 600,
            total_steps: 600,
            epochs: 1.0,
            final_loss: last,
            first_loss: Some((1, first)),
            test_loss: None,
            test_accuracy: None,
            samples_per_s: 0.0,
            batch: 1,
            wall_s: 0.0,
            checkpoint: None,
        }
    }

    #[test]
    fn only_a_loss_that_rose_tenfold_and_high_is_divergence() {
        let warned = ended(2.3, 3.4e8).divergence_warning().unwrap();
        assert!(
            warned.contains("rose from 2.3000 (step 1) to 3.400e8 (step 600)"),
            "{warned}"
        );
        // A tiny regression loss that wobbles up, a loss that fell, one that rose less than 10×.
        assert_eq!(ended(0.001, 0.5).divergence_warning(), None);
        assert_eq!(ended(2.3, 0.1).divergence_warning(), None);
        assert_eq!(ended(5.0, 45.0).divergence_warning(), None);
        assert_eq!(ended(-1.0, 45.0).divergence_warning(), None);
    }

    #[test]
    fn several_runs_each_get_a_checkpoint_named_after_them() {
        let p = |s: &str| Path::new(s).to_path_buf();
        assert_eq!(
            run_checkpoint(Path::new("out/ae.st"), "frozen", 1),
            p("out/ae.st")
        );
        assert_eq!(
            run_checkpoint(Path::new("out/ae.st"), "frozen", 3),
            p("out/ae.frozen.st")
        );
        assert_eq!(
            run_checkpoint(Path::new("ae.v2.safetensors"), "pretrain", 2),
            p("ae.v2.pretrain.safetensors")
        );
        assert_eq!(
            run_checkpoint(Path::new("ae"), "pretrain", 2),
            p("ae.pretrain")
        );
    }
}
