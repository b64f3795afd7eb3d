//! Stage 2: names, shapes and settings of a `.nn` file, checked and lowered to IR.
//!
//! [`check`] reports every independent error of a file at once (a value that failed is poisoned,
//! so one mistake yields one diagnostic) and otherwise returns the [`ir::Program`]: an inference
//! graph per model, a [`ir::DataSpec`] per data block, a [`ir::RunSpec`] per `train` block.
//!
//! One concept a file: [`names`] (suggestions, shapes in messages), [`consts`] (constant
//! arithmetic), [`args`] (call arguments), [`models`] (model table, cycles), [`lower`] (model
//! bodies), [`layers`], [`images`] and [`sequences`] (the layers), [`data`], [`settings`],
//! [`optim`], [`losses`], [`params`] (freeze, lr_scale, init), [`refs`] (init, teacher,
//! checkpoint), [`fit`] (data against model and loss), [`runs`].

// A `Diag` is large, but an `Err` here is the rare path that ends in a message to a person.
#![allow(clippy::result_large_err)]

mod activations;
mod args;
mod concat;
mod consts;
mod data;
mod fit;
mod frozen_fresh;
mod gru;
mod images;
mod layers;
mod losses;
mod lower;
mod models;
mod names;
mod optim;
mod params;
mod plateau;
mod refs;
mod runs;
mod sequences;
mod settings;
mod stack;
mod stack_paths;
mod stopping;
mod transposed;
mod unused;

/// The activations' names, for the parser's hints on PyTorch's `F.gelu(x)`.
pub(crate) use layers::ACTIVATIONS;

pub use consts::MAX_STEPS;
pub use names::plural;

/// "no run named `plian` in ae.nn: did you mean `plain`?", or the file's runs when none is
/// close: what `--run NAME` says of a name the file does not have.
pub fn unknown_run(program: &crate::ir::Program, name: &str, file: &std::path::Path) -> String {
    let runs = program.runs.iter().map(|r| r.name.as_str());
    let hint = names::did_you_mean(name, runs.clone()).unwrap_or_else(|| {
        let all: Vec<String> = runs.map(|r| format!("`{r}`")).collect();
        match all.len() {
            0 => "it has no `train` block".into(),
            _ => format!("its runs are {}", all.join(", ")),
        }
    });
    format!("no run named `{name}` in {}: {hint}", file.display())
}

use crate::diag::Diag;
use crate::ir::{self, Graph, ModelIr, Program};
use crate::syntax::ast::{self, Item, Span, Stmt};
use lower::{Lower, Models, V};
use models::Signature;
use names::show;
use std::collections::HashMap;

/// Size and cost of a model, as `nnc check` prints them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelStats {
    pub params: usize,
    pub trainable: usize,
    pub flops_per_sample: u64,
}

/// Parameter counts and forward FLOPs per sample of a graph.
pub fn model_stats(g: &Graph) -> ModelStats {
    let (trainable, params) = g.param_counts();
    let flops_per_sample = g
        .nodes
        .iter()
        .map(|n| {
            let ins: Vec<&ir::Type> = n.inputs.iter().map(|v| g.ty(*v)).collect();
            ir::shape::flops_per_sample(&n.op, &ins, &n.ty)
        })
        .sum();
    ModelStats {
        params,
        trainable,
        flops_per_sample,
    }
}

/// Checks a parsed file and lowers it to IR, or returns all its errors in source order.
pub fn check(file: &ast::File) -> Result<Program, Vec<Diag>> {
    check_with_warnings(file).map(|(program, _)| program)
}

/// [`check`], with the warnings of a file that checks (e.g. a value computed and never used).
/// A file with errors gets only those: a warning then is often their echo (`hidden` unused
/// where `hiden` was misspelled).
pub fn check_with_warnings(file: &ast::File) -> Result<(Program, Vec<Diag>), Vec<Diag>> {
    check_with_warnings_for(file, None, None)
}

/// [`check_with_warnings`] for runs whose length is replaced by `length` (`nnc train --steps`,
/// `--epochs`, `nnc bench --steps`): a schedule is then warned about against the length that
/// will be trained, not the one the file gives. With `only` (`--run NAME`), `length` replaces
/// that run's length alone: the others are not trained, and keep the warnings `nnc check` gives.
pub fn check_with_warnings_for(
    file: &ast::File,
    length: Option<ir::Length>,
    only: Option<&str>,
) -> Result<(Program, Vec<Diag>), Vec<Diag>> {
    let mut diags = Vec::new();
    let mut models = Models {
        ast: HashMap::new(),
        sigs: HashMap::new(),
    };
    let mut model_names = Vec::new();
    let mut data_blocks: Vec<&ast::Data> = Vec::new();
    let mut trains: Vec<&ast::Train> = Vec::new();
    let mut data_spans: HashMap<&str, Span> = HashMap::new();
    for item in &file.items {
        match item {
            Item::Model(m) => {
                if let Some(first) = models.ast.get(m.name.name.as_str()) {
                    diags.push(duplicate(
                        "model",
                        &m.name.name,
                        m.name.span,
                        first.name.span,
                    ));
                } else {
                    models.ast.insert(&m.name.name, m);
                    model_names.push(m.name.name.as_str());
                }
            }
            Item::Data(d) => {
                if let Some(first) = data_spans.get(d.name.name.as_str()) {
                    diags.push(duplicate("data block", &d.name.name, d.name.span, *first));
                } else {
                    data_spans.insert(&d.name.name, d.name.span);
                    data_blocks.push(d);
                }
            }
            Item::Train(t) => trains.push(t),
        }
    }

    // Models, each after the models it uses.
    let deps = models::dependencies(&models.ast);
    let order = models::order(&model_names, &deps, &mut diags);
    let mut graphs: HashMap<&str, Graph> = HashMap::new();
    for name in order {
        let m = models.ast[name];
        let (sig, graph) = check_model(&models, m, &mut diags);
        if let Some(sig) = sig {
            models.sigs.insert(name.to_string(), sig);
        }
        if let Some(g) = graph {
            graphs.insert(name, g);
        }
    }

    let mut data = HashMap::new();
    let mut data_specs = Vec::new();
    for d in data_blocks {
        let checked = data::check(d, &mut diags);
        if let Some(c) = &checked {
            data_specs.push(c.spec.clone());
        }
        data.insert(d.name.name.clone(), checked);
    }

    let all_runs: Vec<(String, Span)> = trains
        .iter()
        .map(|t| (run_name(t).name.clone(), run_name(t).span))
        .collect();
    let mut earlier: HashMap<String, runs::Earlier> = HashMap::new();
    let mut warnings = Vec::new();
    let mut run_specs = Vec::new();
    for (i, t) in trains.iter().enumerate() {
        let id = run_name(t);
        if let Some((_, first)) = all_runs[..i].iter().find(|(n, _)| *n == id.name) {
            let mut d = duplicate("run", &id.name, id.span, *first);
            if t.name.is_none() {
                d = d.help(format!("a run is named after its model unless named: `train other_name: {} on {} {{ ... }}`", t.model.name, t.data.name));
            }
            diags.push(d);
            continue;
        }
        let cx = runs::Ctx {
            models: &models,
            data: &data,
            earlier: &earlier,
            all_runs: &all_runs,
        };
        let spec = runs::check(&cx, t, &mut diags);
        let data_spec = data.get(&t.data.name).and_then(|d| d.as_ref());
        if let (Some(r), Some(d)) = (&spec, data_spec) {
            let length = length
                .filter(|_| only.is_none_or(|n| n == id.name))
                .unwrap_or(r.length);
            warnings.extend(runs::warnings(t, r, &d.spec, length));
        }
        if let Some(r) = &spec {
            warnings.extend(frozen_fresh::warning(t, r, &earlier));
        }
        let files = spec.as_ref().map_or_else(runs::Files::default, |r| {
            runs::Files::of(
                r.checkpoint.as_ref(),
                r.init.as_ref(),
                r.teacher.as_ref().map(|t| &t.from),
            )
        });
        let params = spec.as_ref().map(|r| {
            r.graph
                .params
                .iter()
                .filter(|p| !p.path.starts_with("teacher."))
                .map(|p| (p.path.clone(), p.dims.clone()))
                .collect()
        });
        earlier.insert(
            id.name.clone(),
            runs::Earlier {
                model: t.model.name.clone(),
                params,
                files,
            },
        );
        run_specs.extend(spec);
    }

    if !diags.is_empty() {
        diags.sort_by_key(|d| d.span.start);
        return Err(diags);
    }
    let models_ir = model_names
        .iter()
        .filter_map(|n| {
            graphs.remove(n).map(|graph| ModelIr {
                name: n.to_string(),
                graph,
                span: models.ast[n].span,
            })
        })
        .collect();
    for item in &file.items {
        if let Item::Model(m) = item {
            warnings.extend(unused::unused(m));
        }
    }
    warnings.sort_by_key(|d| d.span.start);
    let program = Program {
        models: models_ir,
        data: data_specs,
        runs: run_specs,
    };
    Ok((program, warnings))
}

fn run_name(t: &ast::Train) -> &ast::Ident {
    t.name.as_ref().unwrap_or(&t.model)
}

fn duplicate(what: &str, name: &str, span: Span, first: Span) -> Diag {
    Diag::new(
        "nnc::name",
        format!("the {what} `{name}` is defined twice"),
        span,
        "defined again here",
    )
    .also(first, "first defined here")
    .help(format!("rename one of the two {what}s"))
}

/// Checks one model on its own: its input, body and declared output. Returns its signature
/// (with `output: None` when the body has errors) and its inference graph.
fn check_model(
    models: &Models,
    m: &ast::Model,
    diags: &mut Vec<Diag>,
) -> (Option<Signature>, Option<Graph>) {
    let Some(decl) = m.inputs.first() else {
        diags.push(
            Diag::new(
                "nnc::syntax",
                format!("model `{}` has no input", m.name.name),
                m.name.span,
                "no input declared",
            )
            .help(format!(
                "declare one input with its shape, e.g. `model {}(x: [784])`",
                m.name.name
            )),
        );
        return (None, None);
    };
    if let Some(extra) = m.inputs.get(1) {
        diags.push(
            Diag::new(
                "nnc::syntax",
                format!("model `{}` has {} inputs", m.name.name, m.inputs.len()),
                extra.name.span,
                "a second input",
            )
            .help("a model takes exactly one input"),
        );
        return (None, None);
    }
    let input = match models::tensor_type(&decl.ty) {
        Ok(t) => t,
        Err(ds) => {
            diags.extend(ds);
            return (None, None);
        }
    };
    let mut g = Graph::new(format!("model {}", m.name.name), false);
    let x = g.input(&decl.name.name, input.clone());
    let mut l = Lower::new(models, &mut g, "", false);
    let out = l.body(m, x);
    let vocab = l.vocab;
    let convs = std::mem::take(&mut l.transposed);
    let had_errors = !l.diags.is_empty();
    diags.append(&mut l.diags);
    let mut sig = Signature {
        input_name: decl.name.name.clone(),
        input,
        output: None,
        vocab,
    };
    let V::T(out) = out else {
        return (Some(sig), None);
    };
    if had_errors {
        return (Some(sig), None);
    }
    let got = g.ty(out).clone();
    if let Some(decl_out) = &m.output {
        match models::tensor_type(decl_out) {
            Ok(want) if want != got => {
                let ret_expr = m.body.iter().rev().find_map(|s| match s {
                    Stmt::Return { value, .. } => Some(value),
                    _ => None,
                });
                let ret = ret_expr.map(|v| v.span);
                let unflattened = ret_expr.is_some_and(ends_in_dense)
                    && want.dims.len() == 1
                    && got.dims.len() > 1
                    && got.dims.last() == want.dims.last();
                let mut d = Diag::new(
                    "nnc::shape",
                    format!(
                        "model `{}` returns {}, but declares {}",
                        m.name.name,
                        show(&got),
                        show(&want)
                    ),
                    decl_out.span,
                    format!("declared {}", show(&want)),
                )
                .help(
                    // `[1, 28, 28] |> dense(10)` is [1, 28, 10]: the flatten a PyTorch
                    // model's `x.view(-1)` does is missing.
                    if unflattened {
                        format!(
                            "`dense` works on the last axis and keeps the others: flatten before it (`|> flatten |> dense({})`) to get {}, or declare `-> {}`",
                            want.dims[0],
                            show(&want),
                            show(&got)
                        )
                    } else {
                        format!(
                            "change the declaration to `-> {}`, or the last layers",
                            show(&got)
                        )
                    },
                );
                if let Some(r) = ret {
                    d = d.also(r, format!("this is {}", show(&got)));
                }
                if let Some(f) = transposed::fix_transposed(&g, &convs, (out, &want)) {
                    d = d.also(f.at, f.note).help(format!(
                        "to reach {}: {}; or declare `-> {}`",
                        show(&want),
                        f.fix,
                        show(&got)
                    ));
                }
                diags.push(d);
                return (Some(sig), None);
            }
            Ok(_) => {}
            Err(ds) => {
                diags.extend(ds);
                return (Some(sig), None);
            }
        }
    }
    g.set_output("output", out);
    sig.output = Some(got);
    (Some(sig), Some(g))
}

/// Whether `e` is a pipeline whose last layer is `dense`, after any activations and dropout
/// (`x |> dense(10)`, `x |> dense(10) |> softmax`).
fn ends_in_dense(e: &ast::Expr) -> bool {
    let ast::ExprKind::Pipe { input, stage, .. } = &e.kind else {
        return false;
    };
    let name = match &stage.kind {
        ast::ExprKind::Call { callee, .. } => callee.name.as_str(),
        ast::ExprKind::Path(p) if p.len() == 1 => p[0].name.as_str(),
        _ => return false,
    };
    match name {
        "dense" => true,
        _ if layers::ACTIVATIONS.contains(&name) || name == "dropout" => ends_in_dense(input),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every layer, activation, loss, optimizer, schedule, data source and setting the checker
    /// accepts appears in an example of the language reference (spec.md), so that adding one
    /// without documenting it fails here.
    #[test]
    fn the_language_reference_shows_every_construct() {
        let spec = include_str!("../../spec.md");
        let examples: String = spec
            .split("```nn\n")
            .skip(1)
            .map(|b| b.split("```").next().unwrap_or(""))
            .collect();
        let words: std::collections::HashSet<&str> = examples
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .collect();
        let names = [
            layers::LAYERS,
            layers::ACTIVATIONS,
            layers::FUNCTIONS,
            losses::FUNCTIONS,
            optim::OPTIMIZERS,
            optim::SCHEDULES,
            data::SOURCES,
        ];
        for name in names.iter().flat_map(|n| n.iter()) {
            assert!(words.contains(name), "no example of `{name}` in spec.md");
        }
        for key in data::KEYS.iter().chain(runs::KEYS) {
            assert!(
                examples.contains(&format!("{key}:")),
                "no example of the setting `{key}:` in spec.md"
            );
        }
    }
}
