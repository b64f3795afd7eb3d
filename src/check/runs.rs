//! `train` blocks → [`RunSpec`]: the training graph (forward + loss), the evaluation graph, and
//! every setting, each validated.

use super::data::Checked;
use super::fit::{check_vocab, input_fits, label_type, normalize_fits};
use super::lower::{Lower, Models, V};
use super::models::Signature;
use super::names::{did_you_mean, show};
use super::refs::{
    checkpoint_clash, checkpoint_file, file_reads, run_ref, teacher_forward, teacher_ref,
};
use super::settings::Settings;
use super::{consts, layers, losses, optim, params};
use crate::diag::Diag;
use crate::ir::{
    DataSpec, EarlyStopping, EvalSpec, Graph, InitFrom, Length, OptimizerSpec, RunSpec, Schedule,
    ScheduleKind, TeacherSpec, Type, ValueId,
};
use crate::opt::dce::dce;
use crate::syntax::ast::{Expr, ExprKind, Span, Train};
use std::collections::HashMap;

/// What later runs may need from an earlier one (`init:` and `teacher:`).
pub struct Earlier {
    pub model: String,
    /// Parameter paths and shapes, when the run checked cleanly.
    pub params: Option<Vec<(String, Vec<usize>)>>,
    /// The `checkpoint:` file it writes, and the files its `init:` and `teacher:` read as
    /// written (with the setting's name), when it checked cleanly: a later run may not write
    /// over them.
    pub files: Files,
}

/// The checkpoint files a run's settings name, as written in the `.nn` file.
#[derive(Clone, Debug, Default)]
pub struct Files {
    pub writes: Option<String>,
    pub reads: Vec<(&'static str, String)>,
}

impl Files {
    /// The files of a run's `checkpoint`, `init` and `teacher` settings (an `init` or `teacher`
    /// naming a run reads that run's checkpoint, which the run itself names).
    pub fn of(
        checkpoint: Option<&String>,
        init: Option<&InitFrom>,
        teacher: Option<&InitFrom>,
    ) -> Files {
        let reads = [("init", init), ("teacher", teacher)]
            .into_iter()
            .filter_map(|(what, from)| match from? {
                InitFrom::File(f) => Some((what, f.clone())),
                InitFrom::Run(_) => None,
            })
            .collect();
        Files {
            writes: checkpoint.cloned(),
            reads,
        }
    }
}

/// Everything a run refers to.
pub struct Ctx<'a> {
    pub models: &'a Models<'a>,
    pub data: &'a HashMap<String, Option<Checked>>,
    pub earlier: &'a HashMap<String, Earlier>,
    /// Every run name of the file with its span (to tell "later" from "unknown").
    pub all_runs: &'a [(String, Span)],
}

pub(super) const KEYS: &[&str] = &[
    "loss",
    "optimizer",
    "batch",
    "epochs",
    "steps",
    "shuffle",
    "seed",
    "schedule",
    "eval",
    "checkpoint",
    "init",
    "freeze",
    "lr_scale",
    "teacher",
    "clip_grad_norm",
    "early_stopping",
];

fn take<T>(r: Result<T, Diag>, diags: &mut Vec<Diag>) -> Option<T> {
    r.map_err(|d| diags.push(d)).ok()
}

fn take_all<T>(r: Result<T, Vec<Diag>>, diags: &mut Vec<Diag>) -> Option<T> {
    r.map_err(|d| diags.extend(d)).ok()
}

/// Checks a `train` block and returns its run, or `None` when anything is wrong with it (reported
/// here, or with the model or data block it uses). In stages: read the settings
/// ([`RunSettings::read`]), check that the model, data and loss fit together ([`Basis::of`]),
/// build the graphs ([`build_graphs`]), read `eval:`, then [`assemble`] the run.
pub fn check(cx: &Ctx, t: &Train, diags: &mut Vec<Diag>) -> Option<RunSpec> {
    let before = diags.len();
    let s = RunSettings::read(cx, t, diags);
    let basis = Basis::of(cx, t, &s, diags)?;
    let built = build_graphs(cx, t, &s, &basis, diags)?;
    let classification = basis.class_use || loss_is_classification(basis.loss);
    let eval = eval_setting(&s.keys, classification, diags);
    let early_stopping = match (s.keys.get("early_stopping"), &eval) {
        (None, _) => None,
        (Some(e), Some(eval)) => take_all(
            super::stopping::early_stopping(e, eval, classification),
            diags,
        ),
        // A bad `eval:` is reported: what it would watch is unknown.
        (Some(_), None) => None,
    };
    if let (Some(ScheduleKind::Plateau(p)), Some(e), Some(eval)) = (
        s.schedule.as_ref().map(|s| &s.kind),
        s.keys.get("schedule"),
        &eval,
    ) {
        diags.extend(super::plateau::unmeasured(e, p, eval, classification));
    }
    if diags.len() > before {
        return None;
    }
    assemble(t, s, built, (eval, early_stopping), classification)
}

/// Warnings about a run that checks: an `eval:` or `early_stopping:` written for data that
/// holds no test split (it evaluates nothing; early stopping never stops), early stopping with
/// more patience than the run has evaluations ([`super::stopping::warning`]), a schedule too long
/// for the run's `steps` to follow (a warm-up as long as the run never gets past it; a `step`
/// schedule's `every` as long never decays the rate). The schedule is measured against
/// `length`: the run's own, or what the command line puts in its place. With `epochs`, the
/// steps depend on the data, which `check` does not read.
pub fn warnings(t: &Train, r: &RunSpec, data: &DataSpec, length: Length) -> Vec<Diag> {
    let mut out = Vec::new();
    if data.test.is_none() && data.split >= 1.0 {
        out.extend(no_test_split(t, r, data));
    } else {
        out.extend(super::stopping::warning(t, r, length));
        out.extend(super::plateau::warning(t, r, length));
    }
    out.extend(super::plateau::floor_warning(t, r));
    out.extend(schedule_warnings(t, r, length));
    out
}

/// The warning for a run whose `eval:`, `early_stopping:` or plateau schedule needs a test
/// split that `data` lacks: under the first of them written, and under each of the others too:
/// early stopping would otherwise never stop, and the plateau schedule never lower the rate,
/// silently (they watch the default evaluations when no `eval:` is written).
fn no_test_split(t: &Train, r: &RunSpec, data: &DataSpec) -> Option<Diag> {
    let setting = |key: &str| t.settings.iter().find(|s| s.key.name == key);
    let plateau = matches!(r.schedule.kind, ScheduleKind::Plateau(_));
    let written: Vec<_> = [
        (setting("eval"), "evaluates nothing", "`eval`"),
        (
            setting("early_stopping"),
            "never stops: it watches the test split",
            "`early_stopping`",
        ),
        (
            setting("schedule").filter(|_| plateau),
            "never lowers the learning rate: it watches the test split",
            "the plateau schedule",
        ),
    ]
    .into_iter()
    .filter_map(|(s, label, name)| Some((s?, label, name)))
    .collect();
    let (first, rest) = written.split_first()?;
    let mut d = Diag::new(
        "nnc::train",
        format!("data `{}` holds no test split to evaluate", data.name),
        first.0.span,
        first.1,
    );
    for (s, label, _) in rest {
        d = d.also(s.span, *label);
    }
    let names: Vec<&str> = written.iter().map(|w| w.2).collect();
    let remove = match names.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, others)) => format!("{} and {last}", others.join(", ")),
        None => String::new(),
    };
    Some(
        d.also(
            data.train_span,
            "the only split: nothing is held out to test on",
        )
        .help(format!(
            "add a `test:` source or a `split:` (e.g. `split: 0.9`) to the data, or remove \
             {remove} (`nnc eval` measures the training split)"
        ))
        .warning(),
    )
}

/// [`warnings`] about the schedule.
fn schedule_warnings(t: &Train, r: &RunSpec, length: Length) -> Vec<Diag> {
    let Length::Steps(steps) = length else {
        return Vec::new();
    };
    let Some(schedule) = t.settings.iter().find(|s| s.key.name == "schedule") else {
        return Vec::new();
    };
    // Where the schedule's argument `name` is written, else the whole schedule.
    let at = |name: &str| super::plateau::arg_span(&schedule.value, name);
    let mut out = Vec::new();
    let warmup = r.schedule.warmup;
    if warmup >= steps {
        out.push(
            Diag::new(
                "nnc::train",
                format!("a warm-up of {warmup} steps in a run of {steps}"),
                at("warmup"),
                "the learning rate never gets past its warm-up",
            )
            .help(format!(
                "shorten the warm-up (e.g. `warmup: {}`), or train for more steps",
                (steps / 10).max(1)
            ))
            .warning(),
        );
    }
    if let ScheduleKind::Step { every, .. } = r.schedule.kind {
        if every >= steps {
            out.push(
                Diag::new(
                    "nnc::train",
                    format!("`step(every: {every})` in a run of {steps} steps"),
                    at("every"),
                    "the learning rate is never multiplied by `gamma`",
                )
                .help("use a smaller `every`, or no schedule (`constant`)")
                .warning(),
            );
        }
    }
    out
}

/// The settings of a `train` block as read, before any graph exists: each is `None` where it was
/// bad or missing (and reported), and holds its default where it was left out. Those that need
/// the graphs (`freeze`, `lr_scale`, whether `init` fits) or the loss (`eval`) are read later,
/// from `keys`.
struct RunSettings<'a> {
    /// The run's name: its own, or its model's.
    name: String,
    /// The settings by key, each known key at most once.
    keys: Settings<'a>,
    /// Whether the model is declared.
    model_ok: bool,
    /// The data block, when it is declared and checked cleanly.
    data: Option<&'a Checked>,
    optimizer: Option<OptimizerSpec>,
    schedule: Option<Schedule>,
    batch: Option<usize>,
    length: Option<Length>,
    shuffle: Option<bool>,
    seed: Option<u64>,
    checkpoint: Option<String>,
    init: Option<InitFrom>,
    /// The teacher, with the span of its setting.
    teacher: Option<(TeacherSpec, Span)>,
    /// `clip_grad_norm: X`: `Some(None)` when left out.
    clip_grad_norm: Option<Option<f64>>,
    loss: Option<&'a Expr>,
}

impl<'a> RunSettings<'a> {
    /// Reads every setting that needs no graph, reporting every bad or missing one (not only the
    /// first: they are independent), in this order: unknown or repeated keys, the model, the
    /// data, then the settings one by one, the loss last.
    fn read(cx: &Ctx<'a>, t: &'a Train, diags: &mut Vec<Diag>) -> RunSettings<'a> {
        let name = t.name.as_ref().unwrap_or(&t.model).name.clone();
        let s = Settings::new(&t.settings, KEYS, "a train block", diags);
        let model_ok = model_known(cx, t, diags);
        let data = data_of(cx, t, diags);
        let optimizer = match s.get("optimizer") {
            Some(e) => take_all(optim::optimizer(e), diags),
            None => {
                diags.push(missing(&name, "optimizer", t, "optimizer: sgd(lr: 0.1)"));
                None
            }
        };
        // The run's length in steps, for a warm-up written as a fraction of it; `length`
        // reports a bad or doubled one.
        let run_steps = match (s.get("epochs"), s.get("steps")) {
            (None, Some(e)) => consts::steps(e, "the number of steps", 1)
                .ok()
                .map(|n| n as u64),
            _ => None,
        };
        let schedule = s.get("schedule").map_or(Some(Schedule::constant()), |e| {
            take_all(optim::schedule(e, run_steps), diags)
        });
        let batch = s
            .get("batch")
            .map_or(Some(32), |e| take(consts::size(e, "the batch size"), diags));
        let length = length(&s, diags);
        let shuffle = s
            .get("shuffle")
            .map_or(Some(true), |e| take(consts::boolean(e, "shuffle"), diags));
        let seed = s
            .get("seed")
            .map_or(Some(0), |e| take(consts::seed(e), diags));
        let checkpoint = s
            .get("checkpoint")
            .and_then(|e| take(checkpoint_file(e), diags));
        let init = s
            .get("init")
            .and_then(|e| take(run_ref(cx, e, &name, "init"), diags));
        let teacher = s
            .get("teacher")
            .and_then(|e| take(teacher_ref(cx, e, &name), diags));
        if let (Some(e), Some(c)) = (s.get("checkpoint"), &checkpoint) {
            let files = Files::of(Some(c), init.as_ref(), teacher.as_ref().map(|t| &t.0.from));
            diags.extend(checkpoint_clash(cx, &files, e.span));
        }
        let clip_grad_norm = match s.get("clip_grad_norm") {
            None => Some(None),
            Some(e) => take(clip_grad_norm(e), diags).map(Some),
        };
        let loss = s.get("loss");
        if loss.is_none() {
            diags.push(missing(
                &name,
                "loss",
                t,
                "loss: cross_entropy(output, label)",
            ));
        }
        RunSettings {
            name,
            keys: s,
            model_ok,
            data,
            optimizer,
            schedule,
            batch,
            length,
            shuffle,
            seed,
            checkpoint,
            init,
            teacher,
            clip_grad_norm,
            loss,
        }
    }
}

/// `clip_grad_norm: X`, the largest total L2 norm of the gradients: a number above 0.
fn clip_grad_norm(e: &Expr) -> Result<f64, Diag> {
    let v = consts::number(e)?;
    if v > 0.0 && v.is_finite() {
        Ok(v)
    } else {
        Err(Diag::new(
            "nnc::train",
            format!("clip_grad_norm must be a number above 0, found {v}"),
            e.span,
            "must be > 0",
        )
        .help(
            "it is the largest total L2 norm the gradients keep (`max_norm` of \
             `torch.nn.utils.clip_grad_norm_`), e.g. `clip_grad_norm: 1.0`; leave it out \
             not to clip",
        ))
    }
}

/// Whether the run's model is declared; reports it when not.
fn model_known(cx: &Ctx, t: &Train, diags: &mut Vec<Diag>) -> bool {
    if cx.models.ast.contains_key(t.model.name.as_str()) {
        return true;
    }
    let help = did_you_mean(&t.model.name, cx.models.ast.keys().copied())
        .unwrap_or_else(|| "declare it with `model Name(x: [dims]) { ... }`".into());
    diags.push(
        Diag::new(
            "nnc::name",
            format!("unknown model `{}`", t.model.name),
            t.model.span,
            "no such model",
        )
        .help(help),
    );
    false
}

/// The run's data block: `None` when it is unknown (reported here) or has errors (reported with
/// the block).
fn data_of<'a>(cx: &Ctx<'a>, t: &Train, diags: &mut Vec<Diag>) -> Option<&'a Checked> {
    match cx.data.get(&t.data.name) {
        Some(d) => d.as_ref(),
        None => {
            let help = did_you_mean(&t.data.name, cx.data.keys().map(String::as_str))
                .unwrap_or_else(|| "declare it with `data name { train: ... }`".into());
            diags.push(
                Diag::new(
                    "nnc::data",
                    format!("unknown data `{}`", t.data.name),
                    t.data.span,
                    "no such data block",
                )
                .help(help),
            );
            None
        }
    }
}

/// A required setting (`optimizer`, `loss`) that is missing, with an `example` of it.
fn missing(name: &str, key: &str, t: &Train, example: &str) -> Diag {
    Diag::new(
        "nnc::train",
        format!("run `{name}` has no {key}"),
        t.model.span.to(t.data.span),
        format!("no `{key}:`"),
    )
    .help(format!("add e.g. `{example}`"))
}

/// `epochs: N` or `steps: N` (not both); one epoch when neither is set.
fn length(s: &Settings, diags: &mut Vec<Diag>) -> Option<Length> {
    match (s.setting("epochs"), s.setting("steps")) {
        (Some(a), Some(b)) => {
            let later = if a.span.start > b.span.start { a } else { b };
            let first = if a.span.start > b.span.start { b } else { a };
            diags.push(
                Diag::new(
                    "nnc::train",
                    "set either `epochs` or `steps`, not both",
                    later.span,
                    "second length",
                )
                .also(first.span, "first length")
                .help("`epochs: N` passes over the data N times; `steps: N` trains on N batches"),
            );
            None
        }
        (Some(a), None) => {
            let r = consts::epochs(
                &a.value,
                "the number of epochs",
                "to train on part of an epoch, give the number of batches: `steps: N`",
            );
            take(r, diags).map(|n| Length::Epochs(n as u64))
        }
        (None, Some(b)) => take(consts::steps(&b.value, "the number of steps", 1), diags)
            .map(|n| Length::Steps(n as u64)),
        (None, None) => Some(Length::Epochs(1)),
    }
}

/// What the graphs are built from: a model that checked cleanly, data that did and fits it, and
/// the loss.
struct Basis<'a> {
    sig: &'a Signature,
    data: &'a Checked,
    loss: &'a Expr,
    /// Whether the loss uses `label` as class ids.
    class_use: bool,
    /// The type of `label` in the graphs.
    label: Type,
}

impl<'a> Basis<'a> {
    /// `None` when the model, the data or the loss is missing or has errors (reported already),
    /// when a valid teacher goes unused by the loss, or when the data does not fit the model or
    /// the loss (reported here): building graphs from them would only repeat those errors.
    fn of(
        cx: &Ctx<'a>,
        t: &Train,
        s: &RunSettings<'a>,
        diags: &mut Vec<Diag>,
    ) -> Option<Basis<'a>> {
        let sig = cx
            .models
            .sigs
            .get(&t.model.name)
            .filter(|sig| sig.output.is_some() && s.model_ok);
        let (Some(sig), Some(data), Some(loss)) = (sig, s.data, s.loss) else {
            return None;
        };
        if let Some(d) = reserved_input(cx, t, sig) {
            diags.push(d);
            return None;
        }
        if let (Some(st), Some(_)) = (s.keys.setting("teacher"), &s.teacher) {
            if !losses::mentions(loss, "teacher") {
                diags.push(teacher_unused(loss, st.span));
                return None;
            }
        }
        if s.keys.get("teacher").is_some() && s.teacher.is_none() {
            // The loss would only add that `teacher` is unknown.
            return None;
        }
        let (class_use, _) = losses::label_use(loss);
        take(input_fits(sig, &data.kind, t), diags)?;
        take(normalize_fits(sig, data, t), diags)?;
        let output = sig.output.as_ref();
        let label = take(label_type(&data.kind, class_use, t, loss, output), diags)?;
        Some(Basis {
            sig,
            data,
            loss,
            class_use,
            label,
        })
    }
}

/// The names a loss gives to the data's labels, the model's output and the teacher's: a model
/// trained by a run may not call its input so, or the loss (and the data fed by name) would
/// take one for the other.
const LOSS_NAMES: [&str; 3] = ["label", "output", "teacher"];

/// An error when the input of the run's model has one of the [`LOSS_NAMES`].
fn reserved_input(cx: &Ctx, t: &Train, sig: &Signature) -> Option<Diag> {
    let name = LOSS_NAMES.into_iter().find(|n| *n == sig.input_name)?;
    let input = &cx.models.ast[t.model.name.as_str()].inputs.first()?.name;
    Some(
        Diag::new(
            "nnc::name",
            format!(
                "the input of model `{}` is named `{name}`, which a loss gives to the {}",
                t.model.name,
                match name {
                    "label" => "data's labels",
                    "output" => "model's output",
                    _ => "teacher's output",
                }
            ),
            input.span,
            "the model's input",
        )
        .also(t.model.span, "trained by this run")
        .help("rename the input, e.g. `x`"),
    )
}

/// A teacher set at `setting` that the loss never mentions.
fn teacher_unused(loss: &Expr, setting: Span) -> Diag {
    Diag::new(
        "nnc::train",
        "the loss never uses the teacher",
        loss.span,
        "no `teacher` here",
    )
    .also(setting, "a teacher is set here")
    .help(
        "distill with `kd(output, teacher, label)` or `kl_div(teacher, output)`, \
         or remove `teacher:`",
    )
}

/// One graph's forward pass: the model's output on input `x`, and the teacher's when there is
/// one; `y` is the `label` input.
struct Forward {
    g: Graph,
    x: ValueId,
    y: ValueId,
    out: ValueId,
    teacher: Option<ValueId>,
    /// The model's transposed convolutions, for a loss whose target has another size.
    transposed: Vec<(ValueId, Span)>,
}

/// The run's two graphs, each ending in its loss, and the parameter settings applied to them.
struct Built {
    graph: Graph,
    eval_graph: Graph,
    freeze: Vec<String>,
    lr_scale: Vec<(String, f64)>,
}

/// Builds the training and evaluation graphs: first their forward passes, against whose
/// parameters `freeze`, `lr_scale` and `init` are checked (and the vocabulary against the
/// output), then the loss on each.
fn build_graphs(
    cx: &Ctx,
    t: &Train,
    s: &RunSettings,
    b: &Basis,
    diags: &mut Vec<Diag>,
) -> Option<Built> {
    let mut train = forward(cx, t, s, b, true, diags)?;
    let mut eval = forward(cx, t, s, b, false, diags)?;
    let model = t.model.name.as_str();
    let freeze = s.keys.get("freeze").map_or(Vec::new(), |e| {
        params::freeze(e, model, &mut [&mut train.g, &mut eval.g], diags)
    });
    let froze_batch_norms = layers::freeze_batch_norms(&mut train.g, &freeze);
    if let (Some(1), Some(1), Some(e)) = (
        s.batch,
        train.g.batch_norm_values_per_sample(),
        s.keys.get("batch"),
    ) {
        diags.push(
            Diag::new(
                "nnc::train",
                "a batch of 1 gives batch_norm one value per channel to train on",
                e.span,
                "one sample a step",
            )
            .help(
                "a batch norm in training normalizes each channel over the batch, as PyTorch's \
                 (\"Expected more than 1 value per channel when training\"): use a batch of at \
                 least 2",
            ),
        );
    }
    let lr_scale = s.keys.get("lr_scale").map_or(Vec::new(), |e| {
        params::lr_scale(e, model, &train.g, s.keys.get("freeze"), diags)
    });
    init_fits(cx, s, &train.g, diags);
    check_vocab(
        b.sig,
        &b.data.kind,
        &train.g,
        train.out,
        b.class_use,
        t,
        diags,
    );
    let graph = with_loss(cx, b, train, true, diags)?;
    // A frozen batch norm no longer reads the batch statistics computed for it.
    let graph = if froze_batch_norms {
        dce(&graph)
    } else {
        graph
    };
    let eval_graph = with_loss(cx, b, eval, false, diags)?;
    Some(Built {
        graph,
        eval_graph,
        freeze,
        lr_scale,
    })
}

/// The forward pass of the training or the evaluation graph. The teacher runs in both, so that
/// the loss means the same in each.
fn forward(
    cx: &Ctx,
    t: &Train,
    s: &RunSettings,
    b: &Basis,
    training: bool,
    diags: &mut Vec<Diag>,
) -> Option<Forward> {
    let name = &s.name;
    let gname = if training {
        format!("train {name}")
    } else {
        format!("eval {name}")
    };
    let mut g = Graph::new(gname, training);
    let x = g.input(&b.sig.input_name, b.sig.input.clone());
    let y = g.input("label", b.label.clone());
    let model = cx.models.ast[t.model.name.as_str()];
    let mut l = Lower::new(cx.models, &mut g, "", training);
    let out = l.body(model, x);
    let transposed = std::mem::take(&mut l.transposed);
    let V::T(out) = out else { return None };
    let teacher = match &s.teacher {
        Some((spec, span)) => Some(take(
            teacher_forward(cx, &mut g, spec, x, out, *span),
            diags,
        )?),
        None => None,
    };
    Some(Forward {
        g,
        x,
        y,
        out,
        teacher,
        transposed,
    })
}

/// `init:` from an earlier run that checked cleanly: its parameters must fit this run's.
fn init_fits(cx: &Ctx, s: &RunSettings, g: &Graph, diags: &mut Vec<Diag>) {
    if let (Some(InitFrom::Run(r)), Some(e)) = (&s.init, s.keys.get("init")) {
        if let Some(from) = cx.earlier.get(r).and_then(|e| e.params.as_ref()) {
            take(params::init_compatible(g, from, r, e.span), diags);
        }
    }
}

/// Lowers the loss on a forward pass (with `output`, `label`, the model's input and `teacher`
/// bound) and makes `loss` and `output` the graph's outputs. The loss's own errors are reported
/// from the training graph only: the evaluation graph would repeat them.
fn with_loss(
    cx: &Ctx,
    b: &Basis,
    f: Forward,
    training: bool,
    diags: &mut Vec<Diag>,
) -> Option<Graph> {
    let Forward {
        mut g,
        x,
        y,
        out,
        teacher,
        transposed,
    } = f;
    let mut l = Lower::new(cx.models, &mut g, "", training);
    l.loss_mode = true;
    l.transposed = transposed;
    l.bind_var("output", V::T(out));
    l.bind_var("label", V::T(y));
    l.bind_var(&b.sig.input_name, V::T(x));
    if let Some(t) = teacher {
        l.bind_var("teacher", V::T(t));
    }
    let loss = l.expr(b.loss);
    let ldiags = std::mem::take(&mut l.diags);
    let loss = single_number(l.g, loss, b.loss, ldiags.is_empty(), diags);
    if training {
        diags.extend(ldiags);
    }
    let loss = loss?;
    g.set_output("loss", loss);
    g.set_output("output", out);
    Some(g)
}

/// The loss's value, which must be a single number that depends on the model. A value per sample
/// is reported only when lowering the loss reported nothing (`clean`).
fn single_number(
    g: &Graph,
    loss: V,
    e: &Expr,
    clean: bool,
    diags: &mut Vec<Diag>,
) -> Option<ValueId> {
    match loss {
        V::T(v) if g.ty(v).is_scalar() => Some(v),
        V::T(v) => {
            let ty = show(g.ty(v));
            if clean {
                diags.push(
                    Diag::new(
                        "nnc::train",
                        format!("the loss must be a single number, found {ty}"),
                        e.span,
                        format!("this is {ty} per sample"),
                    )
                    .help("wrap it in a loss function such as `mse(output, label)`"),
                );
            }
            None
        }
        V::N(_) => {
            diags.push(
                Diag::new(
                    "nnc::train",
                    "the loss is a constant",
                    e.span,
                    "does not depend on the model",
                )
                .help("write e.g. `loss: cross_entropy(output, label)`"),
            );
            None
        }
        V::Bad => None,
    }
}

/// `eval:`, read once the graphs are built: its default metrics depend on whether the output is
/// class logits.
fn eval_setting(s: &Settings, classification: bool, diags: &mut Vec<Diag>) -> Option<EvalSpec> {
    match s.get("eval") {
        Some(e) => take(optim::eval(e, classification), diags),
        None => Some(EvalSpec {
            every: 1,
            per_epoch: true,
            metrics: optim::default_metrics(classification),
        }),
    }
}

/// The run, from settings that all read cleanly (`check` has returned otherwise).
fn assemble(
    t: &Train,
    s: RunSettings,
    built: Built,
    (eval, early_stopping): (Option<EvalSpec>, Option<EarlyStopping>),
    classification: bool,
) -> Option<RunSpec> {
    Some(RunSpec {
        name: s.name,
        model: t.model.name.clone(),
        data: t.data.name.clone(),
        graph: built.graph,
        eval_graph: built.eval_graph,
        optimizer: s.optimizer?,
        schedule: s.schedule?,
        batch: s.batch?,
        length: s.length?,
        shuffle: s.shuffle?,
        seed: s.seed?,
        eval,
        checkpoint: s.checkpoint,
        init: s.init,
        teacher: s.teacher.map(|(t, _)| t),
        reads: file_reads(&s.keys),
        lr_scale: built.lr_scale,
        freeze: built.freeze,
        clip_grad_norm: s.clip_grad_norm?,
        early_stopping,
        classification,
        span: t.span,
    })
}

/// A soft-target `cross_entropy` or `kd` also makes the output class logits.
fn loss_is_classification(e: &Expr) -> bool {
    match &e.kind {
        ExprKind::Call { callee, args } => {
            matches!(callee.name.as_str(), "cross_entropy" | "kd")
                || args.iter().any(|a| loss_is_classification(&a.value))
        }
        ExprKind::Binary { lhs, rhs, .. } => {
            loss_is_classification(lhs) || loss_is_classification(rhs)
        }
        ExprKind::Neg(a) => loss_is_classification(a),
        _ => false,
    }
}
