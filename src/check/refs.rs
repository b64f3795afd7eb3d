//! Settings that point elsewhere: `checkpoint` files, `init` (an earlier run or a file) and
//! `teacher` (an earlier run or a model with a checkpoint), and the teacher's forward pass.

use super::consts;
use super::lower::{Lower, V};
use super::names::{did_you_mean, show};
use super::runs::{Ctx, Files};
use super::settings::Settings;
use crate::diag::Diag;
use crate::ir::{Graph, InitFrom, Op, TeacherSpec, ValueId};
use crate::runtime::checkpoint::{checkpoint_name_for, is_checkpoint_name};
use crate::syntax::ast::{Expr, ExprKind, Span};

pub(super) fn checkpoint_file(e: &Expr) -> Result<String, Diag> {
    let f = consts::string(e, "the checkpoint")?;
    if !is_checkpoint_name(&f) {
        return Err(Diag::new(
            "nnc::train",
            format!("checkpoints are safetensors files, found \"{f}\""),
            e.span,
            "not a .safetensors (or .st) file",
        )
        .help(format!("name it e.g. \"{}\"", checkpoint_name_for(&f))));
    }
    Ok(f)
}

/// Refuses a run's `checkpoint:` (at `span`) that names a file the run reads (its `init` or
/// `teacher` file: training would replace what it starts from), or one that an earlier run
/// writes or reads (a later `init` of that run would find this run's weights, or the teacher a
/// file holds would be lost).
pub(super) fn checkpoint_clash(cx: &Ctx, run: &Files, span: Span) -> Option<Diag> {
    let file = run.writes.as_deref()?;
    let same = |f: &str| same_path(f, file);
    let clash = |msg: String, label: &str| {
        Diag::new("nnc::train", msg, span, label.to_string())
            .help("give each run's checkpoint a file of its own")
    };
    if let Some((what, _)) = run.reads.iter().find(|(_, f)| same(f)) {
        return Some(clash(
            format!("this run writes its checkpoint over the file its `{what}` reads"),
            &format!("also read by this run's `{what}`"),
        ));
    }
    // In file order: `earlier` is a hash map.
    for (name, _) in cx.all_runs {
        let Some(e) = cx.earlier.get(name) else {
            continue;
        };
        if e.files.writes.as_deref().is_some_and(same) {
            return Some(clash(
                format!("run `{name}` writes its checkpoint to this file too"),
                &format!("run `{name}`'s checkpoint"),
            ));
        }
        if let Some((what, _)) = e.files.reads.iter().find(|(_, f)| same(f)) {
            return Some(clash(
                format!(
                    "run `{name}` reads this file as its `{what}`: writing it would replace it"
                ),
                &format!("read by run `{name}`'s `{what}`"),
            ));
        }
    }
    None
}

/// Whether two paths of the `.nn` file name the same file (`./a.st` and `a.st` do).
fn same_path(a: &str, b: &str) -> bool {
    let parts = |p: &str| -> Vec<String> {
        std::path::Path::new(p)
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect()
    };
    parts(a) == parts(b)
}

/// The checkpoint files run settings `s` read, each with the span of its string: `init: "…"` and
/// `teacher: Model(checkpoint: "…")`, for `nnc check` to warn of one that does not exist.
pub(super) fn file_reads(s: &Settings) -> Vec<(String, Span)> {
    let init = s.get("init").filter(|e| matches!(e.kind, ExprKind::Str(_)));
    let teacher = s.get("teacher").and_then(|e| match &e.kind {
        ExprKind::Call { args, .. } => args
            .iter()
            .find(|a| a.name.as_ref().is_some_and(|n| n.name == "checkpoint"))
            .map(|a| &a.value),
        _ => None,
    });
    [init, teacher]
        .into_iter()
        .flatten()
        .filter_map(|e| Some((checkpoint_file(e).ok()?, e.span)))
        .collect()
}

/// `init: pretrain` (an earlier run) or `init: "weights.safetensors"`.
pub(super) fn run_ref(cx: &Ctx, e: &Expr, this: &str, setting: &str) -> Result<InitFrom, Diag> {
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
        // In file order (`earlier` is a hash map: its order changes from one run to the next).
        let names: Vec<String> = cx
            .all_runs
            .iter()
            .filter(|(n, _)| cx.earlier.contains_key(n))
            .map(|(n, _)| format!("`{n}`"))
            .collect();
        if names.is_empty() {
            "there is no earlier run in this file; a checkpoint file is written in quotes: \
             \"file.safetensors\""
                .into()
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
pub(super) fn teacher_ref(cx: &Ctx, e: &Expr, this: &str) -> Result<(TeacherSpec, Span), Diag> {
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
pub(super) fn teacher_forward(
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
