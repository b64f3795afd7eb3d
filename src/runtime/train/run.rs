//! One `train` block from start to end. [`train`] lists the stages: load the data, compile the
//! graphs and set the starting parameters ([`Model`]), resume from a checkpoint (see
//! [`super::resume`]), settle the run's length, then hand everything to a [`Trainer`], whose
//! step loop (batch → run → finite-loss check → update every trainable parameter) also evaluates,
//! writes checkpoints and stops on request ([`super::interrupt`]). With several processes
//! ([`TrainOptions::comm`]) each runs its part of every batch and they average their gradients
//! ([`super::shard`]).

use super::eval::{evaluate, non_finite_eval, EvalAt, EvalResult};
use super::params::{Params, Tensors};
use super::resume::Position;
use super::shard::broadcast_start;
use super::trainer::{Ended, Trainer};
use super::{Backend, RunSummary, TrainError, TrainOptions};
use crate::exec::Executor;
use crate::ir::{BinaryOp, Graph, Length, Op, Program, RunSpec, ValueId};
use crate::runtime::batch::Epochs;
use crate::runtime::data::{self, DataError, Dataset, Expect, Split, Values};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

/// The JSON-lines log of a session, passed from run to run.
pub(super) type Log = Option<(PathBuf, BufWriter<File>)>;

/// Data sets loaded by earlier runs of a session, by data block and expected types.
pub(super) type DataCache = BTreeMap<String, Rc<Dataset>>;

/// Trains the run `spec` of `program` and returns what it did, the parameters it ends with and
/// the session's log. `trained` holds the parameters of the session's earlier runs (for `init`
/// and `teacher`), `cache` the data sets they loaded.
pub(super) fn train(
    program: &Program,
    spec: &RunSpec,
    backend: &Backend,
    opts: &TrainOptions,
    trained: &BTreeMap<String, Tensors>,
    cache: &mut DataCache,
    log: Log,
) -> Result<(RunSummary, Tensors, Log), TrainError> {
    let t0 = Instant::now();
    let run = Run {
        name: spec.name.as_str(),
        spec,
        backend,
        opts,
    };
    let data = load_data(program, run, cache)?;
    let mut model = Model::build(program, run, trained, &data)?;
    let order = Epochs::new(data.train.len, spec.batch, spec.shuffle, spec.seed);
    let per_epoch = order.batches_per_epoch() as u64;
    let (resumed, ck) = match &opts.resume {
        Some(p) => {
            let vocab = data.vocab.as_deref().map(|v| (v, spec.data.as_str()));
            let (pos, ck) =
                (model.params).restore(p, run.name, &model.graph, per_epoch, spec, vocab)?;
            (Some(pos), Some(ck))
        }
        None => (None, None),
    };
    broadcast_start(opts.comm.as_ref(), run.name, model.params.tensors_mut())?;
    let total = total_steps(spec, opts, resumed.as_ref(), per_epoch);
    // A checkpoint of a finished run has nothing left to train: its parameters are the result.
    if let Some(r) = resumed.as_ref().filter(|r| r.step >= total) {
        let batch = order.batch_size();
        let summary = nothing_left(run.name, r.step, total, per_epoch, batch, t0);
        return Ok((summary, model.params.into_tensors(&model.graph), log));
    }
    let start = resumed.map_or(0, |r| r.step);
    let mut trainer = Trainer::new(run, data, model, order, total, start, log)?;
    if let Some(ck) = &ck {
        trainer.resume_watch(ck)?;
    }
    match trainer.train()? {
        Ended::Done => trainer.finish(t0),
        Ended::Interrupted(checkpoint) => Err(trainer.interrupted(checkpoint)),
    }
}

/// The run being trained and what it is trained with, read by every stage.
#[derive(Clone, Copy)]
pub(super) struct Run<'a> {
    pub name: &'a str,
    pub spec: &'a RunSpec,
    pub backend: &'a Backend,
    pub opts: &'a TrainOptions,
}

impl Run<'_> {
    /// A [`TrainError::Setup`] of this run.
    pub fn setup_error(&self, msg: String) -> TrainError {
        TrainError::Setup {
            run: self.name.into(),
            msg,
        }
    }
}

/// The run's data set with its labels checked. Runs of a session on the same data block with
/// the same input types share one load (from `cache`).
fn load_data(
    program: &Program,
    run: Run<'_>,
    cache: &mut DataCache,
) -> Result<Rc<Dataset>, TrainError> {
    let (spec, opts) = (run.spec, run.opts);
    let setup = |msg| run.setup_error(msg);
    let dspec = program
        .data(&spec.data)
        .ok_or_else(|| setup(format!("no data block named `{}`", spec.data)))?;
    let want = expect(&spec.graph);
    let key = format!("{}|{:?}|{:?}", dspec.name, want.x, want.y);
    let ds = match cache.get(&key) {
        Some(ds) => ds.clone(),
        None => {
            let ds =
                data::load(dspec, &opts.data_dir, &want).map_err(|source| TrainError::Data {
                    run: run.name.into(),
                    source,
                })?;
            let ds = Rc::new(ds);
            cache.insert(key, ds.clone());
            ds
        }
    };
    check_labels(spec, &ds)?;
    Ok(ds)
}

/// A run's graphs compiled, and the parameters it starts from: everything its steps need that
/// does not depend on its length or position.
pub(super) struct Model {
    /// The training graph: the run's graph with an output `grad:<path>` for every trainable
    /// parameter.
    pub graph: Graph,
    pub exec: Box<dyn Executor>,
    /// The evaluation graph's executor, when the data has a test split to evaluate on.
    pub eval: Option<Box<dyn Executor>>,
    /// For each parameter of the evaluation graph, its index in the training graph.
    pub eval_map: Vec<usize>,
    pub params: Params,
}

impl Model {
    /// Differentiates and compiles the run's graph, compiles its evaluation graph (when `data`
    /// has a test split) and sets the starting parameters ([`Params::new`]).
    fn build(
        program: &Program,
        run: Run<'_>,
        trained: &BTreeMap<String, Tensors>,
        data: &Dataset,
    ) -> Result<Model, TrainError> {
        let Run {
            spec,
            backend,
            opts,
            ..
        } = run;
        let setup = |msg| run.setup_error(msg);
        let graph = (backend.grad)(&spec.graph).map_err(|e| setup(format!("autodiff: {e}")))?;
        // Under --detect-anomaly every value is checked after every step: they must all be kept.
        let factory = if opts.detect_anomaly {
            &backend.inspector
        } else {
            &backend.executor
        };
        let exec =
            factory(&graph).map_err(|e| setup(format!("compiling the training graph: {e}")))?;
        let eval = match &data.test {
            Some(_) => Some(
                backend
                    .forward_executor(&spec.eval_graph)
                    .map_err(|e| setup(format!("compiling the evaluation graph: {e}")))?,
            ),
            None => None,
        };
        let eval_map: Vec<usize> = spec
            .eval_graph
            .params
            .iter()
            .map(|p| graph.param_by_path(&p.path).map(|id| id.index()))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                setup("the evaluation graph has parameters the training graph lacks".into())
            })?;
        let params = Params::new(program, spec, backend, opts, &graph, trained)?;
        Ok(Model {
            graph,
            exec,
            eval,
            eval_map,
            params,
        })
    }
}

/// The run's length in steps: `--steps` or `--epochs` when given, else the length of the run
/// resumed from (`resumed`), else the run's own; `per_epoch` batches make an epoch.
fn total_steps(
    spec: &RunSpec,
    opts: &TrainOptions,
    resumed: Option<&Position>,
    per_epoch: u64,
) -> u64 {
    let length = match (opts.steps, opts.epochs, resumed) {
        (Some(s), _, _) => Length::Steps(s),
        (None, Some(e), _) => Length::Epochs(e),
        // The resumed run keeps the length it was started with (its lr schedule depends on it).
        (None, None, Some(r)) => Length::Steps(r.total),
        (None, None, None) => spec.length,
    };
    match length {
        Length::Epochs(e) => e * per_epoch,
        Length::Steps(s) => s,
    }
}

/// The summary of a run resumed from a checkpoint written after `step` of its `total` steps
/// were done, when that is all of them: nothing trained, evaluated or written.
fn nothing_left(
    run: &str,
    step: u64,
    total: u64,
    per_epoch: u64,
    batch: usize,
    t0: Instant,
) -> RunSummary {
    RunSummary {
        run: run.into(),
        steps: step,
        steps_run: 0,
        total_steps: total,
        epochs: step as f64 / per_epoch.max(1) as f64,
        final_loss: f64::NAN,
        first_loss: None,
        test_loss: None,
        test_accuracy: None,
        samples_per_s: 0.0,
        batch,
        wall_s: t0.elapsed().as_secs_f64(),
        checkpoint: None,
    }
}

/// The per-sample types of the graph's inputs: the model input and `label`.
fn expect(graph: &Graph) -> Expect {
    let mut e = Expect::default();
    for (v, name) in graph.inputs() {
        let ty = graph.ty(v).clone();
        if name == "label" {
            e.y = Some(ty);
        } else {
            e.x = Some(ty);
        }
    }
    e
}

/// Class ids must index the logits: checked once at load time rather than trusted to a kernel.
fn check_labels(spec: &RunSpec, ds: &Dataset) -> Result<(), TrainError> {
    let vocab = ds.vocab.as_ref().map(Vec::len);
    check_vocab(spec, vocab).map_err(|msg| TrainError::Setup {
        run: spec.name.clone(),
        msg,
    })?;
    let data = |source| TrainError::Data {
        run: spec.name.clone(),
        source,
    };
    check_split_labels(spec, &ds.train, "train").map_err(data)?;
    match &ds.test {
        Some(t) => check_split_labels(spec, t, "test").map_err(data),
        None => Ok(()),
    }
}

/// The logits' class count of a classifier: their last axis.
fn classes(spec: &RunSpec) -> Option<usize> {
    let out = spec.graph.output("output")?;
    spec.classification.then(|| spec.graph.ty(out).last())
}

/// A classifier of a text (its labels the next characters) predicts exactly the text's
/// `vocab` characters: fewer, and some labels are not classes; more, and `nnc sample` could
/// not tell which characters the extra classes stand for (it refuses such a model).
fn check_vocab(spec: &RunSpec, vocab: Option<usize>) -> Result<(), String> {
    let (Some(classes), Some(vocab)) = (classes(spec), vocab) else {
        return Ok(());
    };
    if classes == vocab {
        return Ok(());
    }
    Err(format!(
        "the text of data `{}` has {vocab} different characters, but model `{}` predicts \
         {classes} classes: the labels are the next characters, so the last layer needs {vocab} \
         outputs, e.g. `dense({vocab})`, and the model's `embedding` or `one_hot` a vocabulary \
         of {vocab}",
        spec.data, spec.model
    ))
}

/// The loss that reads a graph input itself as probabilities, if any, and that input's name:
/// `binary_cross_entropy` or `cross_entropy` of one-hot or soft labels (the same shape as the
/// logits) whose target is `label`, or the model's input for a reconstruction. A target outside
/// [0, 1] gives such a loss no meaning (a BCE target of 2 trains towards a loss that falls
/// without bound, and the run went on silently).
fn probability_target(spec: &RunSpec) -> Option<(&'static str, bool)> {
    let g = &spec.graph;
    let inputs = g.inputs();
    g.values().find_map(|v| {
        let node = g.node(v);
        let name = match node.op {
            Op::Bce => "binary_cross_entropy",
            Op::SoftCrossEntropy => "cross_entropy",
            _ => return None,
        };
        let target = unsmoothed(g, *node.inputs.get(1)?);
        let (_, input) = inputs.iter().find(|(i, _)| *i == target)?;
        Some((name, *input == "label"))
    })
}

/// The target `v` of a loss before `label_smoothing` ((1 − ε)·t + ε/K, `t` read through the
/// scalar product and sum that the checker adds): `v` itself without it.
fn unsmoothed(g: &Graph, v: ValueId) -> ValueId {
    let scalar = |u: ValueId| matches!(g.node(u).op, Op::Const(_));
    match (&g.node(v).op, &g.node(v).inputs[..]) {
        (Op::Binary(BinaryOp::Add | BinaryOp::Mul), &[t, c]) if scalar(c) => unsmoothed(g, t),
        _ => v,
    }
}

/// Targets of split `s` (named `name`) that a loss takes as probabilities must be in [0, 1].
fn check_split_targets(spec: &RunSpec, s: &Split, name: &'static str) -> Result<(), DataError> {
    let Some((loss, is_label)) = probability_target(spec) else {
        return Ok(());
    };
    let column = if is_label { &s.y } else { &s.x };
    let outside = |y: &f32| !(0.0..=1.0).contains(y);
    let bad = match &column.values {
        Values::F32(v) => v.iter().position(outside).map(|i| (i, v[i])),
        // Bytes through their table (an image as its own target, after `normalize`).
        Values::Bytes { bytes, table } => bytes
            .iter()
            .position(|&b| outside(&table[b as usize]))
            .map(|i| (i, table[bytes[i] as usize])),
        Values::I32(_) => None,
    };
    match bad {
        Some((i, value)) => Err(DataError::Target {
            what: if is_label { "label" } else { "input value" },
            split: name,
            sample: i / column.per_sample().max(1),
            value,
            loss,
        }),
        None => Ok(()),
    }
}

/// [`check_labels`] for one split, named `name` in the error (a text's labels are in range
/// once [`check_vocab`] has passed).
fn check_split_labels(spec: &RunSpec, s: &Split, name: &'static str) -> Result<(), DataError> {
    check_split_targets(spec, s, name)?;
    let Some(classes) = classes(spec) else {
        return Ok(());
    };
    if let Values::I32(v) = &s.y.values {
        if let Some(i) = v.iter().position(|&y| y < 0 || y as usize >= classes) {
            return Err(DataError::Label {
                split: name,
                sample: i / s.y.per_sample().max(1),
                label: v[i],
                classes,
            });
        }
    }
    Ok(())
}

/// `nnc eval`: the loss (and accuracy, for a classifier) of `params` on the test split of
/// `spec`'s data (the train split when there is none), with the run's evaluation graph, and
/// the split's name (`"test"` or `"train"`).
pub fn evaluate_run(
    program: &Program,
    spec: &RunSpec,
    backend: &Backend,
    opts: &TrainOptions,
    params: &Tensors,
) -> Result<(EvalResult, &'static str), TrainError> {
    let run = spec.name.as_str();
    let setup = |msg: String| TrainError::Setup {
        run: run.into(),
        msg,
    };
    let dspec = program
        .data(&spec.data)
        .ok_or_else(|| setup(format!("no data block named `{}`", spec.data)))?;
    // Only the split measured is loaded (and its labels checked): with a `test` source, the
    // train files need not be there.
    let (split, name) =
        data::load_eval(dspec, &opts.data_dir, &expect(&spec.eval_graph)).map_err(|source| {
            TrainError::Data {
                run: run.into(),
                source,
            }
        })?;
    // A text's vocabulary is its train text's (a test text is encoded with it).
    let vocab = match (&dspec.train, classes(spec)) {
        (crate::ir::Source::Text { .. }, Some(_)) => data::vocabulary(dspec, &opts.data_dir)
            .map_err(|source| TrainError::Data {
                run: run.into(),
                source,
            })?
            .map(|v| v.len()),
        _ => None,
    };
    check_vocab(spec, vocab).map_err(setup)?;
    check_split_labels(spec, &split, name).map_err(|source| TrainError::Data {
        run: run.into(),
        source,
    })?;
    let g = &spec.eval_graph;
    let views: Vec<&[f32]> = g
        .params
        .iter()
        .map(|p| match params.get(&p.path) {
            Some(t) if t.dims == p.dims => Ok(t.data.as_slice()),
            Some(t) => Err(setup(format!(
                "`{}` has shape {:?}, expected {:?}",
                p.path, t.dims, p.dims
            ))),
            None => Err(setup(format!("no value for parameter `{}`", p.path))),
        })
        .collect::<Result<_, _>>()?;
    let mut exec = backend
        .forward_executor(g)
        .map_err(|e| setup(format!("compiling the evaluation graph: {e}")))?;
    let r = evaluate(
        exec.as_mut(),
        &views,
        &split,
        spec.batch,
        spec.classification,
        spec.seed,
    )
    .map_err(|source| TrainError::Exec {
        run: run.into(),
        step: 0,
        source,
    })?;
    if !r.loss.is_finite() {
        let at = EvalAt {
            run,
            after: None,
            split: name,
            batch: spec.batch,
            seed: spec.seed,
        };
        return Err(non_finite_eval(backend, g, &views, &split, at, r.loss));
    }
    Ok((r, name))
}
