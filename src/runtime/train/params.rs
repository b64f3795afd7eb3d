//! A run's parameters. Their starting values: fresh from their initializers, or matched by path
//! from an earlier run or a checkpoint (`init`, `--init`); teacher parameters (under `teacher.`)
//! from the teacher run or its checkpoint. Then [`Params`], what the step loop trains: the values,
//! the optimizer state of the trainable ones and their update, and the tensors a checkpoint saves
//! and restores. Also the per-parameter lr multipliers of `lr_scale`.

use super::progress::Record;
use super::resume::{optim_state, Order, Position};
use super::{Backend, TrainError, TrainOptions};
use crate::exec::{ExecError, Executor, UpdateHyper, Updater};
use crate::ir::{Graph, InitFrom, Op, OptimizerSpec, Param, Program, RunSpec};
use crate::runtime::checkpoint::{
    first_non_finite, optim_name, per_run_path, shared_path, Checkpoint, Saved, Tensor,
};
use crate::runtime::init::init_param;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Named parameter tensors (paths → values).
pub type Tensors = BTreeMap<String, Tensor>;

/// Prefix of teacher parameters in a distillation run's graph.
pub const TEACHER: &str = "teacher.";

/// Whether `prefix` (`encoder`, `encoder.dense1`) names `path` or a group containing it.
fn covers(prefix: &str, path: &str) -> bool {
    path == prefix || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'.'))
}

/// The lr multiplier of `path`: the longest matching prefix of `scales` wins; 1 if none matches.
pub fn lr_scale(path: &str, scales: &[(String, f64)]) -> f64 {
    scales
        .iter()
        .filter(|(p, _)| covers(p, path))
        .max_by_key(|(p, _)| p.len())
        .map_or(1.0, |(_, s)| *s)
}

/// The parameters run `r` ended with: from this session, or else from a checkpoint it wrote,
/// so that a later run can be trained on its own. With `--checkpoint C`, that is first the file
/// an earlier training of the whole file gave run `r` ([`per_run_path`]: `C`'s stem, then the
/// run's name), then the run's own `checkpoint:`. `C` may also be the file that training gave
/// run `this`, the one that reads `r` (`d.small.st`, resumed or evaluated): `r`'s is beside it
/// (`d.big.st`).
fn run_params<'t>(
    r: &str,
    this: &str,
    setting: &str,
    program: &Program,
    trained: &'t BTreeMap<String, Tensors>,
    opts: &TrainOptions,
) -> Result<Cow<'t, Tensors>, String> {
    if let Some(t) = trained.get(r) {
        return Ok(Cow::Borrowed(t));
    }
    let per_run = opts.checkpoint.as_ref().map(|c| {
        let shared = shared_path(c, this).unwrap_or_else(|| c.clone());
        per_run_path(&shared, r)
    });
    let own = program.run(r).and_then(|s| s.checkpoint.as_ref());
    let own = own.map(|f| crate::runtime::data::resolve(f, &opts.base_dir));
    let path = match (per_run, own) {
        (Some(p), _) if p.is_file() => p,
        (_, Some(p)) => p,
        (per_run, None) => {
            let looked = per_run.map_or(String::new(), |p| {
                format!(", and there is no {} from `--checkpoint`", p.display())
            });
            return Err(format!(
                "`{setting}: {r}` needs run `{r}` to have run first (it writes no `checkpoint:` \
                 to start from{looked})"
            ));
        }
    };
    match Checkpoint::load(&path) {
        Ok(ck) => Ok(Cow::Owned(ck.tensors)),
        Err(e) => Err(format!(
            "`{setting}: {r}`: run `{r}` has not run in this session, and {e}"
        )),
    }
}

/// The values of tensor `t`, taken for a parameter of shape `dims`: `name` (as a message says
/// it) from `what`, refused when its shape differs or it holds a value that is not finite.
fn take(t: &Tensor, name: &str, dims: &[usize], what: &str) -> Result<Vec<f32>, String> {
    if t.dims != dims {
        return Err(format!(
            "{name} from {what} has shape {:?}, the model expects {dims:?}",
            t.dims
        ));
    }
    if let Some((index, value)) = first_non_finite(&t.dims, &t.data) {
        return Err(format!(
            "{name} from {what} holds {value} at index {index}; a run cannot start from values \
             that are not finite"
        ));
    }
    Ok(t.data.clone())
}

/// `paths` grouped by layer, at most a few named: `head.weight, head.bias` → `head`. A layer
/// that `loaded` says was partly loaded is named by its tensors instead: a one-layer `lstm1`'s
/// checkpoint loaded into `lstm1(…, num_layers: 2)` leaves `lstm1.w_xh_l1, …` fresh, not the
/// whole `lstm1`.
fn layers(paths: &[&str], loaded: impl Fn(&str) -> bool) -> String {
    const SHOWN: usize = 4;
    let mut groups: BTreeMap<&str, usize> = BTreeMap::new();
    for p in paths {
        *groups
            .entry(p.rsplit_once('.').map_or(*p, |(l, _)| l))
            .or_default() += 1;
    }
    // A layer with a single tensor is named by it: `scale`, not the whole layer.
    let names: Vec<&str> = groups
        .iter()
        .flat_map(|(&layer, &n)| {
            let tensors = || paths.iter().copied().filter(move |p| covers(layer, p));
            match n == 1 || loaded(layer) {
                true => tensors().collect(),
                false => vec![layer],
            }
        })
        .collect();
    let mut text = names[..names.len().min(SHOWN)].join(", ");
    if names.len() > SHOWN {
        text += &format!(" and {} more", names.len() - SHOWN);
    }
    text
}

/// What a run took from the parameters it starts from (`init`, `--init`), said once before it
/// trains ([`StartNote::message`]) and logged with `--log-json` ([`StartNote::record`]): as
/// PyTorch's `load_state_dict(strict=False)` returns, the tensors found, those that start fresh
/// from their initializers, and those of the source the model has no use for — a partial match
/// is often what was meant (a new head on a pretrained encoder) but may be a renamed layer.
#[derive(Clone, Debug, PartialEq)]
pub struct StartNote {
    /// An earlier run of the file, or a checkpoint file (as written).
    pub from: InitFrom,
    /// The paths of the parameters loaded, and how many of them are batch norms' running
    /// statistics (buffers).
    pub loaded: Vec<String>,
    pub buffers: usize,
    /// The paths of the parameters that start from their initializers.
    pub fresh: Vec<String>,
    /// The paths of the source's tensors that the model does not have.
    pub unused: Vec<String>,
}

impl StartNote {
    /// The note of a model whose own parameters (its teacher's left out) are `mine`, started
    /// from `from`, whose tensors are named `source`: computed alike by `nnc train` from the
    /// tensors it reads and by `nnc check` from the earlier run's graph.
    fn new(from: InitFrom, mine: &[&Param], mut source: Vec<&str>) -> StartNote {
        let (loaded, fresh): (Vec<&Param>, Vec<&Param>) =
            mine.iter().partition(|p| source.contains(&p.path.as_str()));
        let paths = |ps: &[&Param]| ps.iter().map(|p| p.path.clone()).collect();
        // As a checkpoint lists them, and a run's parameters after it trains.
        source.sort_unstable();
        StartNote {
            from,
            loaded: paths(&loaded),
            buffers: loaded.iter().filter(|p| p.is_buffer()).count(),
            fresh: paths(&fresh),
            unused: (source.into_iter())
                .filter(|t| !mine.iter().any(|p| p.path == *t))
                .map(str::to_string)
                .collect(),
        }
    }

    /// The note for run `run`: ``run `finetune` starts from run `pretrain`: 4 parameters
    /// loaded; 2 fresh: head; 4 unused from run `pretrain`: decode1, decode2``.
    pub fn message(&self, run: &str) -> String {
        use crate::check::plural;
        let what = described(&self.from);
        let params = plural(self.loaded.len() - self.buffers, "parameter");
        let all = if self.fresh.is_empty() { "all " } else { "" };
        let mut note = match self.buffers {
            0 => format!("run `{run}` starts from {what}: {all}{params} loaded"),
            b => format!(
                "run `{run}` starts from {what}: {all}{params} and {} loaded",
                plural(b, "batch-norm buffer")
            ),
        };
        // A layer partly loaded is named by its tensors (`lstm1.w_xh_l1`), not as a whole; so
        // is one both fresh and unused (a file that names its tensors otherwise, PyTorch's
        // `lstm1.weight_ih_l0`): "fresh: lstm1; unused: lstm1" would not say what differs.
        let some = |paths: &[String], layer: &str| paths.iter().any(|p| covers(layer, p));
        let split = |layer: &str| {
            some(&self.loaded, layer) || (some(&self.fresh, layer) && some(&self.unused, layer))
        };
        let names =
            |paths: &[String]| layers(&paths.iter().map(String::as_str).collect::<Vec<_>>(), split);
        if !self.fresh.is_empty() {
            note += &format!("; {} fresh: {}", self.fresh.len(), names(&self.fresh));
        }
        if !self.unused.is_empty() {
            note += &format!(
                "; {} unused from {what}: {}",
                self.unused.len(),
                names(&self.unused)
            );
        }
        note
    }

    /// Its `--log-json` record: `{"type":"init","run":…,"from_run":…` (or `"from_file":…`)
    /// `,"loaded":…,"buffers":…,"fresh":[…],"unused":[…]}`, every path named.
    pub fn record(&self, w: &mut impl Write, run: &str) -> std::io::Result<()> {
        let mut o = Record::new(w, "init", run)?;
        match &self.from {
            InitFrom::Run(r) => o.str("from_run", r)?,
            InitFrom::File(f) => o.str("from_file", f)?,
        };
        o.uint("loaded", Some(self.loaded.len() as u64))?;
        o.uint("buffers", Some(self.buffers as u64))?;
        o.strs("fresh", &self.fresh)?.strs("unused", &self.unused)?;
        o.end()
    }
}

/// What run `spec` will take from the earlier run its `init:` names, known from the two runs'
/// graphs before either trains (`nnc check` says it): the same as [`initial`] finds in that
/// run's parameters, which are its graph's (not its teacher's).
pub fn planned_start<'a>(program: &'a Program, spec: &'a RunSpec) -> Option<StartNote> {
    let Some(InitFrom::Run(r)) = &spec.init else {
        return None;
    };
    let own = |g: &'a Graph| g.params.iter().filter(|p| !p.path.starts_with(TEACHER));
    let source: Vec<&str> = own(&program.run(r)?.graph)
        .map(|p| p.path.as_str())
        .collect();
    Some(StartNote::new(
        InitFrom::Run(r.clone()),
        &own(&spec.graph).collect::<Vec<_>>(),
        source,
    ))
}

/// Where parameters come from, as notes and errors name it: ``run `pretrain` `` or the file.
fn described(from: &InitFrom) -> String {
    match from {
        InitFrom::Run(r) => format!("run `{r}`"),
        InitFrom::File(f) => f.clone(),
    }
}

/// Starting values of every parameter of `graph`, in its order, and what they were taken from
/// when the run starts from other parameters (`init`, `--init`).
pub fn initial(
    program: &Program,
    spec: &RunSpec,
    graph: &Graph,
    opts: &TrainOptions,
    trained: &BTreeMap<String, Tensors>,
) -> Result<(Vec<Vec<f32>>, Option<StartNote>), TrainError> {
    let setup = |msg: String| TrainError::Setup {
        run: spec.name.clone(),
        msg,
    };
    let resolve = |p: &str| -> PathBuf { crate::runtime::data::resolve(p, &opts.base_dir) };

    // The tensors the student starts from, if any.
    let init_ck;
    let init_run;
    let init: Option<(&Tensors, InitFrom)> = match (&opts.init, &spec.init) {
        // A file that cannot be read is named as the run's `init`, as a teacher's is.
        (Some(p), _) => {
            init_ck =
                Checkpoint::load(p).map_err(|e| setup(format!("`--init {}`: {e}", p.display())))?;
            Some((&init_ck.tensors, InitFrom::File(p.display().to_string())))
        }
        (None, Some(from @ InitFrom::File(p))) => {
            init_ck =
                Checkpoint::load(&resolve(p)).map_err(|e| setup(format!("`init: {p:?}`: {e}")))?;
            Some((&init_ck.tensors, from.clone()))
        }
        (None, Some(from @ InitFrom::Run(r))) => {
            init_run = run_params(r, &spec.name, "init", program, trained, opts).map_err(&setup)?;
            Some((&*init_run, from.clone()))
        }
        (None, None) => None,
    };

    let mut values: Vec<Option<Vec<f32>>> = vec![None; graph.params.len()];
    let mut matched = 0;
    for (i, p) in graph.params.iter().enumerate() {
        if p.path.starts_with(TEACHER) {
            continue;
        }
        if let Some((src, from)) = &init {
            if let Some(t) = src.get(&p.path) {
                let name = format!("`{}`", p.path);
                values[i] = Some(take(t, &name, &p.dims, &described(from)).map_err(setup)?);
                matched += 1;
                continue;
            }
        }
        values[i] = Some(init_param(p, spec.seed));
    }
    let note = match init {
        Some((src, from)) if matched == 0 => {
            // A dense autoencoder's file given to a convolutional one: show both sides' names,
            // which tell at once that the layers differ (`encoder.dense1` against
            // `encoder.conv1`).
            let mut held: Vec<&str> = (src.keys().map(String::as_str))
                .filter(|k| !k.starts_with("__"))
                .collect();
            held.sort_unstable();
            let wanted = (graph.params.iter().map(|p| p.path.as_str()))
                .filter(|p| !p.starts_with(TEACHER))
                .collect();
            return Err(setup(format!(
                "{} has none of the model's parameters: it holds {}, the model has {}",
                described(&from),
                some_names(held),
                some_names(wanted)
            )));
        }
        Some((src, from)) => {
            let own: Vec<&Param> = (graph.params.iter())
                .filter(|p| !p.path.starts_with(TEACHER))
                .collect();
            // A checkpoint's own records (`__best.…`) are not parameters.
            let tensors = src
                .keys()
                .map(String::as_str)
                .filter(|k| !k.starts_with("__"));
            Some(StartNote::new(from, &own, tensors.collect()))
        }
        None => None,
    };

    for (i, v) in teacher_params(program, spec, graph, opts, trained)? {
        values[i] = Some(v);
    }
    let values = values.into_iter().map(|v| v.unwrap_or_default()).collect();
    Ok((values, note))
}

/// The teacher's parameters in `graph` (those under [`TEACHER`]), each with its index in
/// `graph.params`: from the teacher run (trained in this session, in `trained`, else its
/// checkpoint) or the checkpoint file its `teacher:` names; every one must be found. A file
/// that cannot be read is named as the teacher's, as `train` and `eval` both report it.
pub fn teacher_params(
    program: &Program,
    spec: &RunSpec,
    graph: &Graph,
    opts: &TrainOptions,
    trained: &BTreeMap<String, Tensors>,
) -> Result<Vec<(usize, Vec<f32>)>, TrainError> {
    let setup = |msg: String| TrainError::Setup {
        run: spec.name.clone(),
        msg,
    };
    let teacher: Vec<(usize, &Param)> = graph
        .params
        .iter()
        .enumerate()
        .filter(|(_, p)| p.path.starts_with(TEACHER))
        .collect();
    if teacher.is_empty() {
        return Ok(Vec::new());
    }
    let t = spec
        .teacher
        .as_ref()
        .ok_or_else(|| setup("the graph has teacher parameters but the run no teacher".into()))?;
    let loaded: Vec<Vec<f32>> = match &t.from {
        InitFrom::File(f) => {
            let path = crate::runtime::data::resolve(f, &opts.base_dir);
            let ps: Vec<&Param> = teacher.iter().map(|(_, p)| *p).collect();
            Checkpoint::load(&path)
                .and_then(|ck| ck.params_for(&ps, TEACHER))
                .map_err(|e| setup(format!("`teacher: {}(checkpoint: {f:?})`: {e}", t.model)))?
        }
        InitFrom::Run(r) => {
            let src =
                run_params(r, &spec.name, "teacher", program, trained, opts).map_err(&setup)?;
            let what = format!("run `{r}`");
            let value = |p: &Param| {
                let name = &p.path[TEACHER.len()..];
                let t = src
                    .get(name)
                    .ok_or_else(|| format!("{what} has no parameter `{name}` for the teacher"))?;
                take(t, &format!("teacher parameter `{name}`"), &p.dims, &what)
            };
            let values = teacher.iter().map(|(_, p)| value(p));
            values.collect::<Result<_, _>>().map_err(setup)?
        }
    };
    Ok(teacher.iter().map(|(i, _)| *i).zip(loaded).collect())
}

/// One trainable parameter: its index, its gradient's output name, its lr multiplier and its
/// optimizer state.
pub(super) struct Trainable {
    pub index: usize,
    pub grad: String,
    pub scale: f64,
    pub state: Vec<Vec<f32>>,
}

impl Trainable {
    /// This parameter's update settings for the 0-based step `step`, at the learning rate `lr`
    /// (the schedule applied, this parameter's multiplier not yet).
    pub fn hyper(&self, lr: f64, step: u64) -> UpdateHyper {
        UpdateHyper {
            lr: (lr * self.scale) as f32,
            step: step + 1,
        }
    }
}

/// A batch norm's running statistics, which no optimizer trains: after each step its training
/// graph output `stats` (the batch's mean per channel, then its unbiased variance) is folded
/// into the parameters `mean` and `var` (indices into the values) at `momentum`, as PyTorch
/// does: running ← (1 − momentum)·running + momentum·batch.
pub(super) struct Running {
    pub stats: String,
    pub mean: usize,
    pub var: usize,
    pub momentum: f32,
}

impl Running {
    /// The batch norms of `graph` (its `stats:<running_mean path>` outputs).
    fn of(graph: &Graph) -> Result<Vec<Running>, String> {
        let index = |path: &str| {
            graph
                .params
                .iter()
                .position(|p| p.path == path)
                .ok_or_else(|| format!("the training graph has no parameter `{path}`"))
        };
        let mut out = Vec::new();
        for o in &graph.outputs {
            let Some(mean_path) = o.name.strip_prefix("stats:") else {
                continue;
            };
            let Op::BatchStats { momentum } = graph.node(o.value).op else {
                return Err(format!("output `{}` is no batch_stats", o.name));
            };
            let var_path = match mean_path.strip_suffix(".running_mean") {
                Some(stem) => format!("{stem}.running_var"),
                None => return Err(format!("output `{}` names no running mean", o.name)),
            };
            out.push(Running {
                stats: o.name.clone(),
                mean: index(mean_path)?,
                var: index(&var_path)?,
                momentum,
            });
        }
        Ok(out)
    }

    /// The batch norm's path (`batch_norm2`, `encoder.batch_norm1`), from its stats output.
    pub fn layer(&self) -> &str {
        let path = self.stats.strip_prefix("stats:").unwrap_or(&self.stats);
        path.strip_suffix(".running_mean").unwrap_or(path)
    }

    /// Folds `stats` (means then unbiased variances) into the running statistics in `values`.
    pub fn fold(&self, values: &mut [Vec<f32>], stats: &[f32]) {
        let m = self.momentum;
        let (means, vars) = stats.split_at(stats.len() / 2);
        for (r, s) in [(self.mean, means), (self.var, vars)] {
            for (r, s) in values[r].iter_mut().zip(s) {
                *r = (1.0 - m) * *r + m * s;
            }
        }
    }
}

/// What a run trains: the value of every parameter of its training graph and, for the trainable
/// ones, the optimizer state and the rule that updates them. The step loop borrows the values
/// and the state separately (the executor reads one and writes the other), hence public fields.
pub(super) struct Params {
    /// In the training graph's order.
    pub values: Vec<Vec<f32>>,
    /// The parameters that are not frozen, in update order.
    pub trainable: Vec<Trainable>,
    /// The batch norms' running statistics, updated after each step.
    pub running: Vec<Running>,
    pub updater: Box<dyn Updater>,
    /// Whether the executor applies the updates itself ([`Params::fuse`]).
    pub fused: bool,
    /// Where a fused step writes the trainable parameters' new values (in update order): they
    /// are swapped into `values` once the step proves finite, so that a step that does not
    /// leaves the parameters as they were.
    pub next: Vec<Vec<f32>>,
    /// What the values were taken from, when the run starts from other parameters.
    pub start: Option<StartNote>,
}

/// The optimizer settings that decide which state buffers it keeps, as resume errors name them.
const STATE_SETTINGS: &str = "sgd's `momentum`, rmsprop's `momentum` and `centered`";

impl Params {
    /// The starting values of the parameters of `graph`, the training graph of `spec`
    /// ([`initial`]), and a zero optimizer state. A resumed run takes its parameters from the
    /// checkpoint later ([`Params::restore`]): it needs no `init` to start from (only its
    /// teacher, which checkpoints do not hold).
    pub fn new(
        program: &Program,
        spec: &RunSpec,
        backend: &Backend,
        opts: &TrainOptions,
        graph: &Graph,
        trained: &BTreeMap<String, Tensors>,
    ) -> Result<Params, TrainError> {
        let setup = |msg: String| TrainError::Setup {
            run: spec.name.clone(),
            msg,
        };
        let (values, start) = match &opts.resume {
            Some(_) => {
                let fresh = RunSpec {
                    init: None,
                    ..spec.clone()
                };
                let opts = TrainOptions {
                    init: None,
                    ..opts.clone()
                };
                initial(program, &fresh, graph, &opts, trained)?
            }
            None => initial(program, spec, graph, opts, trained)?,
        };
        let updater =
            (backend.updater)(&spec.optimizer).map_err(|e| setup(format!("optimizer: {e}")))?;
        let mut trainable = Vec::new();
        for (i, p) in graph.params.iter().enumerate().filter(|(_, p)| !p.frozen) {
            let grad = format!("grad:{}", p.path);
            if graph.output(&grad).is_none() {
                return Err(setup(format!(
                    "the training graph has no gradient for `{}`",
                    p.path
                )));
            }
            let state = vec![vec![0f32; p.numel()]; updater.state_buffers()];
            trainable.push(Trainable {
                index: i,
                grad,
                scale: lr_scale(&p.path, &spec.lr_scale),
                state,
            });
        }
        let running = Running::of(graph).map_err(setup)?;
        Ok(Params {
            values,
            trainable,
            running,
            updater,
            fused: false,
            next: Vec::new(),
            start,
        })
    }

    /// Every tensor of the run's state, the parameters then the optimizer's buffers: what the
    /// ranks of a data-parallel run must agree on before the first step.
    pub fn tensors_mut(&mut self) -> impl Iterator<Item = &mut Vec<f32>> {
        self.values
            .iter_mut()
            .chain(self.trainable.iter_mut().flat_map(|t| t.state.iter_mut()))
    }

    /// Lets `exec` apply each update as soon as the step has computed its gradient (while it is
    /// still in cache), into `next`, when it can ([`Executor::fuse_updates`]).
    pub fn fuse(
        &mut self,
        exec: &mut dyn Executor,
        optimizer: &OptimizerSpec,
    ) -> Result<(), ExecError> {
        let targets: Vec<usize> = self.trainable.iter().map(|t| t.index).collect();
        self.fused = exec.fuse_updates(optimizer, &targets)?;
        if self.fused {
            self.next = targets.iter().map(|&i| self.values[i].clone()).collect();
        }
        Ok(())
    }

    /// Applies a step's update once the step has proved finite: swaps in the values a fused step
    /// computed, or updates each trainable parameter from its gradient in `grads` (in update
    /// order) at the learning rate `lr` ([`Trainable::hyper`]).
    pub fn update(&mut self, grads: &[&[f32]], lr: f64, step: u64) {
        if self.fused {
            for (t, n) in self.trainable.iter().zip(self.next.iter_mut()) {
                std::mem::swap(&mut self.values[t.index], n);
            }
        } else {
            for (t, g) in self.trainable.iter_mut().zip(grads) {
                let h = t.hyper(lr, step);
                self.updater
                    .update(&mut self.values[t.index], g, &mut t.state, h);
            }
        }
    }

    /// What a checkpoint holds of the run's state: every parameter but the teacher's, and the
    /// optimizer state (`__optim.<path>.<i>`). [`Params::restore`] reads them back.
    pub fn saved<'p>(&'p self, graph: &'p Graph) -> Vec<Saved<'p>> {
        let mut ts: Vec<Saved<'_>> = graph
            .params
            .iter()
            .zip(&self.values)
            .filter(|(p, _)| !p.path.starts_with(TEACHER))
            .map(|(p, v)| Saved {
                name: p.path.clone(),
                dims: &p.dims,
                data: v,
            })
            .collect();
        for t in &self.trainable {
            let p = &graph.params[t.index];
            for (i, s) in t.state.iter().enumerate() {
                ts.push(Saved {
                    name: optim_name(&p.path, i),
                    dims: &p.dims,
                    data: s,
                });
            }
        }
        ts
    }

    /// Loads the checkpoint `path` of run `run` into the (non-teacher) parameters and the
    /// optimizer state, and returns the position it records (and the checkpoint, for the rest of
    /// the run's state), refused when it is another run's
    /// or was written with another number of batches per epoch than this run's `per_epoch`, or
    /// another order of batches than `spec`'s, or with an optimizer whose state holds other
    /// things than `spec`'s.
    pub fn restore(
        &mut self,
        path: &Path,
        run: &str,
        graph: &Graph,
        per_epoch: u64,
        spec: &RunSpec,
        vocab: Option<(&[char], &str)>,
    ) -> Result<(Position, Checkpoint), TrainError> {
        let (order, optimizer) = (&Order::of(spec), &spec.optimizer);
        let setup = |msg: String| TrainError::Setup {
            run: run.into(),
            msg,
        };
        let ck_err = |source| TrainError::Checkpoint {
            run: run.into(),
            source,
        };
        let ck = Checkpoint::load(path).map_err(ck_err)?;
        let pos = Position::from_checkpoint(&ck).map_err(&setup)?;
        if let Some((vocab, data)) = vocab {
            crate::runtime::checkpoint::check_vocab(&ck, vocab, data).map_err(&setup)?;
        }
        if pos.run != run {
            return Err(setup(format!(
                "checkpoint {} was written by run `{}`, not by this run (resume it with \
                 `--run {}`)",
                path.display(),
                pos.run,
                pos.run
            )));
        }
        if pos.batches_per_epoch != per_epoch {
            return Err(setup(format!(
                "checkpoint {} was written with {} batches per epoch, this run has {per_epoch} \
                 (the data or the batch size changed)",
                path.display(),
                pos.batches_per_epoch
            )));
        }
        if let Some(then) = pos.order.filter(|then| then != order) {
            // Only the seed differs: `--seed` gives it back, whatever the file says.
            let same = if (Order {
                seed: then.seed,
                ..*order
            }) == then
            {
                format!("`--seed {}`", then.seed)
            } else {
                "the settings it was trained with".into()
            };
            return Err(setup(format!(
                "checkpoint {} was written with {then}, this run has {order}: it would not go on \
                 with the batches the run had left (resume with {same}, or start from its \
                 weights with `--init`)",
                path.display()
            )));
        }
        for (p, v) in graph.params.iter().zip(self.values.iter_mut()) {
            if !p.path.starts_with(TEACHER) {
                v.copy_from_slice(&ck.get(&p.path, &p.dims).map_err(ck_err)?.data);
            }
        }
        let ours = optim_state(optimizer);
        let some_state = ck.tensors.keys().any(|k| k.starts_with("__optim."));
        for t in self.trainable.iter_mut() {
            let p = &graph.params[t.index];
            // As many state buffers as this run's optimizer keeps: SGD with momentum keeps one,
            // Adam two (a velocity read as Adam's first moment would train on silently).
            let prefix = optim_name(&p.path, 0);
            let prefix = &prefix[..prefix.len() - 1];
            let held = ck
                .tensors
                .keys()
                .filter(|k| {
                    k.strip_prefix(prefix)
                        .is_some_and(|i| i.parse::<usize>().is_ok())
                })
                .count();
            // The same optimizer, with state for other parameters but none for this one: the
            // run that wrote the checkpoint froze it.
            let same_optimizer = pos.optim_state.as_deref() == Some(ours.as_str());
            if held == 0 && !t.state.is_empty() && same_optimizer && some_state {
                return Err(setup(format!(
                    "checkpoint {} holds 0 optimizer state buffer(s) for `{}`: the run that \
                     wrote it had it frozen, this run trains it (resume with the `freeze` it \
                     was trained with, or start from its weights with `--init`)",
                    path.display(),
                    p.path,
                )));
            }
            if held != t.state.len() {
                return Err(setup(format!(
                    "checkpoint {} holds {held} optimizer state buffer(s) for `{}`, this run's \
                     optimizer keeps {}: it was written with another optimizer, or with other \
                     settings of this one ({STATE_SETTINGS}) (resume with those it was trained \
                     with, or start from its weights with `--init`)",
                    path.display(),
                    p.path,
                    t.state.len()
                )));
            }
            for (i, s) in t.state.iter_mut().enumerate() {
                s.copy_from_slice(
                    &ck.get(&optim_name(&p.path, i), &p.dims)
                        .map_err(ck_err)?
                        .data,
                );
            }
        }
        // As many buffers, holding other things (RMSprop's mean of g² is not SGD's momentum).
        if let Some(then) = pos.optim_state.as_ref().filter(|then| **then != ours) {
            return Err(setup(format!(
                "checkpoint {} holds optimizer state `{then}`, this run's {} keeps `{ours}`: it \
                 was written with another optimizer, or with other settings of this one \
                 ({STATE_SETTINGS}) (resume with those it was trained with, or start from its \
                 weights with `--init`)",
                path.display(),
                optimizer.name()
            )));
        }
        Ok((pos, ck))
    }

    /// The parameters the run ends with, by path (teacher parameters left out).
    pub fn into_tensors(self, graph: &Graph) -> Tensors {
        graph
            .params
            .iter()
            .zip(self.values)
            .filter(|(p, _)| !p.path.starts_with(TEACHER))
            .map(|(p, v)| {
                (
                    p.path.clone(),
                    Tensor {
                        dims: p.dims.clone(),
                        data: v,
                    },
                )
            })
            .collect()
    }
}

/// Up to three names of `names` in backquotes, and how many more: "`a.weight`, `a.bias`, `b.weight`
/// and 5 more", or "nothing".
fn some_names(names: Vec<&str>) -> String {
    if names.is_empty() {
        return "nothing".into();
    }
    let shown: Vec<String> = names.iter().take(3).map(|n| format!("`{n}`")).collect();
    match names.len().saturating_sub(3) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partly_loaded_layer_is_named_by_its_tensors() {
        let fresh = [
            "lstm1.w_xh_l1",
            "lstm1.w_hh_l1",
            "lstm1.bias_l1",
            "head.weight",
            "head.bias",
        ];
        assert_eq!(
            layers(&fresh, |l| l == "lstm1"),
            "head, lstm1.w_xh_l1, lstm1.w_hh_l1, lstm1.bias_l1"
        );
        assert_eq!(layers(&fresh, |_| false), "head, lstm1");
    }

    /// A file whose tensors of a layer are all named otherwise (PyTorch's names) leaves the
    /// layer both fresh and unused: each side names its tensors.
    #[test]
    fn a_layer_both_fresh_and_unused_is_named_by_its_tensors() {
        let note = StartNote {
            from: InitFrom::File("torch.st".into()),
            loaded: vec!["dense1.weight".into(), "dense1.bias".into()],
            buffers: 0,
            fresh: vec!["lstm1.w_xh".into(), "lstm1.w_hh".into()],
            unused: vec!["lstm1.weight_hh_l0".into(), "lstm1.weight_ih_l0".into()],
        };
        assert_eq!(
            note.message("m"),
            "run `m` starts from torch.st: 2 parameters loaded; 2 fresh: lstm1.w_xh, \
             lstm1.w_hh; 2 unused from torch.st: lstm1.weight_hh_l0, lstm1.weight_ih_l0"
        );
    }

    #[test]
    fn longest_prefix_wins_on_dot_boundaries() {
        let s = vec![
            ("encoder".to_string(), 0.1),
            ("encoder.dense1".to_string(), 0.5),
        ];
        assert_eq!(lr_scale("encoder.dense1.weight", &s), 0.5);
        assert_eq!(lr_scale("encoder.dense2.weight", &s), 0.1);
        assert_eq!(lr_scale("encoder2.weight", &s), 1.0);
        assert_eq!(lr_scale("head.bias", &s), 1.0);
    }
}
