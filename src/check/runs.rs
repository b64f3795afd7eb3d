//! `train` blocks → [`RunSpec`]: the training graph (forward + loss), the evaluation graph, and
//! every setting, each validated.

use super::data::Checked;
use super::fit::{check_vocab, input_fits, label_type};
use super::lower::{Lower, Models, V};
use super::names::{did_you_mean, show};
use super::refs::{checkpoint_file, run_ref, teacher_forward, teacher_ref};
use super::settings::Settings;
use super::{consts, losses, optim, params};
use crate::diag::Diag;
use crate::ir::{Graph, InitFrom, Length, RunSpec, Schedule};
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
