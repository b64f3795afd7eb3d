//! `train` blocks → [`RunSpec`]: the training graph (forward + loss), the evaluation graph, and
//! every setting, each validated.

use super::data::{Checked, Kind};
use super::lower::{Lower, Models, V};
use super::names::{did_you_mean, show};
use super::settings::Settings;
use super::{consts, losses, optim, params};
use crate::diag::Diag;
use crate::ir::{
    DType, Graph, InitFrom, Length, Op, RunSpec, Schedule, TeacherSpec, Type, ValueId,
};
use crate::syntax::ast::{Expr, ExprKind, Span, Train};
use std::collections::HashMap;

/// What later runs may need from an earlier one (`init:` and `teacher:`).
pub struct Earlier {
    pub model: String,
    /// Parameter paths and shapes, when the run checked cleanly.
    pub params: Option<Vec<(String, Vec<usize>)>>,
}

/// Everything a run refers to.
pub struct Ctx<'a> {
    pub models: &'a Models<'a>,
    pub data: &'a HashMap<String, Option<Checked>>,
    pub earlier: &'a HashMap<String, Earlier>,
    /// Every run name of the file with its span (to tell "later" from "unknown").
    pub all_runs: &'a [(String, Span)],
}

const KEYS: &[&str] = &[
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
];

fn take<T>(r: Result<T, Diag>, diags: &mut Vec<Diag>) -> Option<T> {
    r.map_err(|d| diags.push(d)).ok()
}

fn take_all<T>(r: Result<T, Vec<Diag>>, diags: &mut Vec<Diag>) -> Option<T> {
    r.map_err(|d| diags.extend(d)).ok()
}

pub fn check(cx: &Ctx, t: &Train, diags: &mut Vec<Diag>) -> Option<RunSpec> {
    let before = diags.len();
    let name = t.name.as_ref().unwrap_or(&t.model).name.clone();
    let s = Settings::new(&t.settings, KEYS, "a train block", diags);
    let model_ok = match cx.models.ast.contains_key(t.model.name.as_str()) {
        true => true,
        false => {
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
    };
    let data = match cx.data.get(&t.data.name) {
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
    };
    let optimizer = match s.get("optimizer") {
        Some(e) => take_all(optim::optimizer(e), diags),
        None => {
            diags.push(
                Diag::new(
                    "nnc::train",
                    format!("run `{name}` has no optimizer"),
                    t.model.span.to(t.data.span),
                    "no `optimizer:`",
                )
                .help("add e.g. `optimizer: sgd(lr: 0.1)`"),
            );
            None
        }
    };
    let schedule = s.get("schedule").map_or(Some(Schedule::constant()), |e| {
        take_all(optim::schedule(e), diags)
    });
    let batch = s
        .get("batch")
        .map_or(Some(32), |e| take(consts::size(e, "the batch size"), diags));
    let length = match (s.setting("epochs"), s.setting("steps")) {
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
        (Some(a), None) => take(consts::size(&a.value, "the number of epochs"), diags)
            .map(|n| Length::Epochs(n as u64)),
        (None, Some(b)) => take(consts::size(&b.value, "the number of steps"), diags)
            .map(|n| Length::Steps(n as u64)),
        (None, None) => Some(Length::Epochs(1)),
    };
    let shuffle = s
        .get("shuffle")
        .map_or(Some(true), |e| take(consts::boolean(e, "shuffle"), diags));
    let seed = s
        .get("seed")
        .map_or(Some(0), |e| take(consts::count(e, "the seed"), diags));
    let checkpoint = s
        .get("checkpoint")
        .and_then(|e| take(checkpoint_file(e), diags));
    let init = s
        .get("init")
        .and_then(|e| take(run_ref(cx, e, &name, "init"), diags));
    let teacher = s
        .get("teacher")
        .and_then(|e| take(teacher_ref(cx, e, &name), diags));

    let loss_expr = s.get("loss");
    if loss_expr.is_none() {
        diags.push(
            Diag::new(
                "nnc::train",
                format!("run `{name}` has no loss"),
                t.model.span.to(t.data.span),
                "no `loss:`",
            )
            .help("add e.g. `loss: cross_entropy(output, label)`"),
        );
    }
    let (class_use, _) = loss_expr.map_or((false, false), losses::label_use);

    // The graphs need a model that checked cleanly and a data block that did.
    let sig = cx
        .models
        .sigs
        .get(&t.model.name)
        .filter(|s| s.output.is_some() && model_ok);
    let (Some(sig), Some(data), Some(loss_expr)) = (sig, data, loss_expr) else {
        return None;
    };
    if let (Some(st), Some(_)) = (s.setting("teacher"), &teacher) {
        if !losses::mentions(loss_expr, "teacher") {
            diags.push(
                Diag::new("nnc::train", "the loss never uses the teacher", loss_expr.span, "no `teacher` here")
                    .also(st.span, "a teacher is set here")
                    .help("distill with `kd(output, teacher, label)` or `kl_div(teacher, output)`, or remove `teacher:`"),
            );
            return None;
        }
    }
    if s.get("teacher").is_some() && teacher.is_none() {
        // The loss would only add that `teacher` is unknown.
        return None;
    }
    take(input_fits(sig, &data.kind, t), diags)?;
    let label = take(label_type(&data.kind, class_use, t, loss_expr), diags)?;
    let mut graphs = Vec::new();
    for training in [true, false] {
        let gname = if training {
            format!("train {name}")
        } else {
            format!("eval {name}")
        };
        let mut g = Graph::new(gname, training);
        let x = g.input(&sig.input_name, sig.input.clone());
        let y = g.input("label", label.clone());
        let model = cx.models.ast[t.model.name.as_str()];
        let out = Lower::new(cx.models, &mut g, "", training).body(model, x);
        let V::T(out) = out else { return None };
        let t_out = match &teacher {
            Some((spec, span)) => Some(take(
                teacher_forward(cx, &mut g, spec, x, out, *span),
                diags,
            )?),
            None => None,
        };
        graphs.push((g, x, y, out, t_out));
    }
    let model_name = t.model.name.as_str();
    let freeze = {
        let [(g1, ..), (g2, ..)] = &mut graphs[..] else {
            unreachable!("two graphs")
        };
        s.get("freeze").map_or(Vec::new(), |e| {
            params::freeze(e, model_name, &mut [g1, g2], diags)
        })
    };
    let lr_scale = s.get("lr_scale").map_or(Vec::new(), |e| {
        params::lr_scale(e, model_name, &graphs[0].0, diags)
    });
    if let (Some(InitFrom::Run(r)), Some(e)) = (&init, s.get("init")) {
        if let Some(from) = cx.earlier.get(r).and_then(|e| e.params.as_ref()) {
            take(
                params::init_compatible(&graphs[0].0, from, r, e.span),
                diags,
            );
        }
    }
    check_vocab(
        sig,
        &data.kind,
        &graphs[0].0,
        graphs[0].3,
        class_use,
        t,
        diags,
    );
    let mut built = Vec::new();
    for (i, (mut g, x, y, out, t_out)) in graphs.into_iter().enumerate() {
        let mut l = Lower::new(cx.models, &mut g, "", i == 0);
        l.loss_mode = true;
        l.bind_var("output", V::T(out));
        l.bind_var("label", V::T(y));
        l.bind_var(&sig.input_name, V::T(x));
        if let Some(t) = t_out {
            l.bind_var("teacher", V::T(t));
        }
        let loss = l.expr(loss_expr);
        let ldiags = std::mem::take(&mut l.diags);
        let loss = match loss {
            V::T(v) if l.g.ty(v).is_scalar() => Some(v),
            V::T(v) => {
                let ty = show(l.g.ty(v));
                if ldiags.is_empty() {
                    diags.push(
                        Diag::new(
                            "nnc::train",
                            format!("the loss must be a single number, found {ty}"),
                            loss_expr.span,
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
                        loss_expr.span,
                        "does not depend on the model",
                    )
                    .help("write e.g. `loss: cross_entropy(output, label)`"),
                );
                None
            }
            V::Bad => None,
        };
        if i == 0 {
            diags.extend(ldiags);
        }
        let loss = loss?;
        g.set_output("loss", loss);
        g.set_output("output", out);
        built.push(g);
    }
    let classification = class_use || loss_is_classification(loss_expr);
    let eval = match s.get("eval") {
        Some(e) => take(optim::eval(e, classification), diags),
        None => Some(crate::ir::EvalSpec {
            every: 1,
            per_epoch: true,
            metrics: optim::default_metrics(classification),
        }),
    };
    if diags.len() > before {
        return None;
    }
    let eval_graph = built.pop()?;
    let graph = built.pop()?;
    Some(RunSpec {
        name,
        model: t.model.name.clone(),
        data: t.data.name.clone(),
        graph,
        eval_graph,
        optimizer: optimizer?,
        schedule: schedule?,
        batch: batch?,
        length: length?,
        shuffle: shuffle?,
        seed: seed? as u64,
        eval,
        checkpoint,
        init,
        teacher: teacher.map(|(t, _)| t),
        lr_scale,
        freeze,
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

fn checkpoint_file(e: &Expr) -> Result<String, Diag> {
    let f = consts::string(e, "the checkpoint")?;
    if !f.ends_with(".safetensors") {
        return Err(Diag::new(
            "nnc::train",
            format!("checkpoints are safetensors files, found \"{f}\""),
            e.span,
            "not a .safetensors file",
        )
        .help(format!(
            "name it e.g. \"{}.safetensors\"",
            f.split('.').next().unwrap_or("model")
        )));
    }
    Ok(f)
}

/// `init: pretrain` (an earlier run) or `init: "weights.safetensors"`.
fn run_ref(cx: &Ctx, e: &Expr, this: &str, setting: &str) -> Result<InitFrom, Diag> {
    if let ExprKind::Str(_) = e.kind {
        return checkpoint_file(e).map(InitFrom::File);
    }
    let Some(id) = e.as_name() else {
        return Err(Diag::new(
            "nnc::train",
            format!("`{setting}` takes a run name or a \"file.safetensors\""),
            e.span,
            format!("found {}", consts::describe(e)),
        ));
    };
    let r = id.name.as_str();
    if r == this {
        return Err(Diag::new(
            "nnc::train",
            format!("run `{r}` cannot start from itself"),
            id.span,
            "this run",
        )
        .help("name an earlier run"));
    }
    if cx.earlier.contains_key(r) {
        return Ok(InitFrom::Run(r.to_string()));
    }
    if let Some((_, span)) = cx.all_runs.iter().find(|(n, _)| n == r) {
        return Err(Diag::new(
            "nnc::train",
            format!("run `{r}` comes after this one"),
            id.span,
            "not trained yet at this point",
        )
        .also(*span, format!("`{r}` is defined here"))
        .help("runs execute in the order written: move this run below it"));
    }
    let help = did_you_mean(r, cx.all_runs.iter().map(|(n, _)| n.as_str())).unwrap_or_else(|| {
        let names: Vec<String> = cx.earlier.keys().map(|n| format!("`{n}`")).collect();
        if names.is_empty() {
            "there is no earlier run in this file; a checkpoint file is written in quotes: \"file.safetensors\"".into()
        } else {
            format!("the earlier runs are {}", names.join(", "))
        }
    });
    Err(Diag::new(
        "nnc::name",
        format!("unknown run `{r}`"),
        id.span,
        "no such run",
    )
    .help(help))
}

/// `teacher: run` or `teacher: Model(checkpoint: "file.safetensors")`.
fn teacher_ref(cx: &Ctx, e: &Expr, this: &str) -> Result<(TeacherSpec, Span), Diag> {
    if let ExprKind::Call { callee, args } = &e.kind {
        if !cx.models.ast.contains_key(callee.name.as_str()) {
            let help =
                did_you_mean(&callee.name, cx.models.ast.keys().copied()).unwrap_or_else(|| {
                    "write `teacher: <run>` or `teacher: Model(checkpoint: \"file.safetensors\")`"
                        .into()
                });
            return Err(Diag::new(
                "nnc::name",
                format!("unknown model `{}`", callee.name),
                callee.span,
                "no such model",
            )
            .help(help));
        }
        let sig = super::args::Sig {
            forms: &[&[]],
            named: &["checkpoint"],
            required: &["checkpoint"],
            usage: "`Model(checkpoint: \"file.safetensors\")`",
        };
        let b = super::args::bind(callee, args, e.span, &sig).map_err(|mut d| d.remove(0))?;
        let file = checkpoint_file(b.get("checkpoint").expect("required"))?;
        return Ok((
            TeacherSpec {
                model: callee.name.clone(),
                from: InitFrom::File(file),
            },
            e.span,
        ));
    }
    match run_ref(cx, e, this, "teacher")? {
        InitFrom::Run(r) => Ok((
            TeacherSpec {
                model: cx.earlier[&r].model.clone(),
                from: InitFrom::Run(r),
            },
            e.span,
        )),
        InitFrom::File(_) => Err(Diag::new(
            "nnc::train",
            "a teacher from a file needs its model",
            e.span,
            "which model is this?",
        )
        .help("write `teacher: Model(checkpoint: \"file.safetensors\")`")),
    }
}

/// The teacher's forward pass (evaluation mode, parameters under `teacher.`, frozen).
fn teacher_forward(
    cx: &Ctx,
    g: &mut Graph,
    spec: &TeacherSpec,
    x: ValueId,
    student: ValueId,
    span: Span,
) -> Result<ValueId, Diag> {
    let Some(sig) = cx
        .models
        .sigs
        .get(&spec.model)
        .filter(|s| s.output.is_some())
    else {
        return Err(Diag::new(
            "nnc::train",
            format!("the teacher model `{}` has errors", spec.model),
            span,
            "see the errors above",
        ));
    };
    let xt = g.ty(x).clone();
    if xt.dtype != sig.input.dtype || xt.per_sample() != sig.input.per_sample() {
        return Err(Diag::new(
            "nnc::train",
            format!(
                "the teacher `{}` takes {}, but the student's input is {}",
                spec.model,
                show(&sig.input),
                show(&xt)
            ),
            span,
            "inputs differ",
        )
        .help(
            "a teacher sees the student's input; it needs the same number of values per sample",
        ));
    }
    let out_t = sig.output.clone().expect("filtered");
    let st = g.ty(student).clone();
    if out_t != st {
        return Err(Diag::new(
            "nnc::train",
            format!(
                "the teacher `{}` outputs {}, but the student outputs {}",
                spec.model,
                show(&out_t),
                show(&st)
            ),
            span,
            "outputs differ",
        )
        .help("distillation compares the two outputs: they need the same shape"));
    }
    // Same values, another shape ([784] for a student, [1, 28, 28] for a convolutional teacher).
    let xin = if xt == sig.input {
        x
    } else {
        g.push_typed(Op::Reshape, vec![x], sig.input.clone(), "teacher.input")
    };
    let model = cx.models.ast[spec.model.as_str()];
    let first = g.params.len();
    let out = Lower::new(cx.models, g, "teacher.", false).body(model, xin);
    for p in &mut g.params[first..] {
        p.frozen = true;
    }
    match out {
        V::T(v) => Ok(v),
        _ => Err(Diag::new(
            "nnc::train",
            "the teacher could not be built",
            span,
            "here",
        )),
    }
}

/// Does the data give what the model takes?
fn input_fits(sig: &super::models::Signature, kind: &Kind, t: &Train) -> Result<(), Diag> {
    let inp = &sig.input;
    let (want, ok) = match kind {
        Kind::Text { seq } => (
            format!("i32[{seq}]"),
            inp.dtype == DType::I32 && inp.dims == [*seq],
        ),
        Kind::Inline { x_width, .. } => (
            format!("[{x_width}]"),
            inp.dtype == DType::F32 && inp.per_sample() == *x_width,
        ),
        Kind::Idx | Kind::Csv => ("f32 values".to_string(), inp.dtype == DType::F32),
    };
    if ok {
        return Ok(());
    }
    let help = match kind {
        Kind::Text { seq } if inp.dtype == DType::I32 => format!(
            "set `seq: {}` in the text source, or declare the input as `i32[{seq}]`",
            inp.per_sample()
        ),
        Kind::Text { seq } => format!(
            "text samples are character ids: declare the input as `i32[{seq}]` and embed them"
        ),
        Kind::Inline { x_width, .. } => {
            format!("each row of `x` has {x_width} values; declare the input as `[{x_width}]`")
        }
        _ => "images and csv features are f32 values; declare the input as `[dims]`".to_string(),
    };
    Err(Diag::new(
        "nnc::data",
        format!(
            "model `{}` takes {}, but data `{}` gives {want}",
            t.model.name,
            show(inp),
            t.data.name
        ),
        t.data.span,
        format!("{} data", kind.describe()),
    )
    .help(help))
}

/// The type of `label` in the run's graphs, from the data and how the loss uses it.
fn label_type(kind: &Kind, class_use: bool, t: &Train, loss: &Expr) -> Result<Type, Diag> {
    Ok(match kind {
        Kind::Text { seq } => Type::i32(true, vec![*seq]),
        Kind::Idx => Type::i32(true, vec![]),
        Kind::Csv if class_use => Type::i32(true, vec![]),
        Kind::Csv => Type::f32(true, vec![1]),
        Kind::Inline {
            classes: Some(_), ..
        } if class_use => Type::i32(true, vec![]),
        Kind::Inline { y_width, .. } if class_use && *y_width == 1 => {
            return Err(Diag::new("nnc::data", format!("cross_entropy needs class ids, but the targets of `{}` are not whole numbers ≥ 0", t.data.name), loss.span, "uses `label` as class ids")
                .also(t.data.span, "the data")
                .help("write class ids 0, 1, 2, … in `y`, or use `mse` for real-valued targets"));
        }
        Kind::Inline { y_width, .. } => Type::f32(true, vec![*y_width]),
    })
}

/// With text data and class labels, the model's vocabulary must be the number of classes it predicts.
fn check_vocab(
    sig: &super::models::Signature,
    kind: &Kind,
    g: &Graph,
    out: ValueId,
    class_use: bool,
    t: &Train,
    diags: &mut Vec<Diag>,
) {
    let classes = g.ty(out).last();
    match (kind, sig.vocab) {
        (Kind::Text { .. }, Some((v, span))) if class_use && v != classes => diags.push(
            Diag::new("nnc::shape", format!("model `{}` reads {v} different tokens but predicts {classes} classes", t.model.name), span, format!("vocabulary of {v}"))
                .also(t.model.span, format!("predicts {classes} classes"))
                .help(format!("the labels are the next tokens: the last layer needs {v} outputs, e.g. `dense({v})`")),
        ),
        (Kind::Inline { classes: Some(n), .. }, _) if class_use && *n > classes => diags.push(
            Diag::new("nnc::data", format!("the labels of `{}` go up to {}, but model `{}` predicts {classes} classes", t.data.name, n - 1, t.model.name), t.data.span, format!("{n} classes"))
                .help(format!("the last layer needs at least {n} outputs")),
        ),
        _ => {}
    }
}
