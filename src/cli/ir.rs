//! `nnc ir FILE --stage S`: the program after each stage of the pipeline.

use super::{source, CliError, CliResult};
use crate::ir::{print::graph_to_string, Graph};
use crate::opt::fuse::groups_to_string;
use crate::opt::memplan::{plan, plan_to_string};
use crate::opt::update_points::{updates_after_backward_to_string, updates_to_string};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// The syntax tree, as parsed.
    Ast,
    /// Each model's inference graph and each run's training graph (forward + loss).
    Ir,
    /// Training graphs with their backward pass (reverse-mode autodiff).
    Grad,
    /// Each model's inference graph and each run's training graph with its backward pass,
    /// after the optimization passes (constant folding, CSE, DCE, fusion).
    Opt,
    /// The fusion groups of the optimized graphs: each fused node and the chain it computes;
    /// for training graphs, the node after which each parameter's optimizer update runs.
    Fused,
    /// The optimized graphs with the buffer of every value (the memory plan) and the
    /// bytes with and without sharing, at the run's batch size (inference graphs: batch 1).
    Plan,
    /// The Cranelift IR of every kernel (of the optimized graph, as the JIT compiles it).
    Clif,
    /// The machine code of every kernel (of the optimized graph).
    Asm,
}

pub fn run(path: &Path, stage: Stage, only: Option<&str>) -> CliResult {
    if stage == Stage::Ast {
        let (_, file) = source::parse(path)?;
        print!("{}", crate::syntax::print_ast(&file));
        return Ok(());
    }
    let loaded = source::load(path)?;
    let p = &loaded.program;
    let mut graphs: Vec<&Graph> = Vec::new();
    if matches!(stage, Stage::Ir | Stage::Opt | Stage::Fused | Stage::Plan) {
        graphs.extend(
            p.models
                .iter()
                .filter(|m| only.is_none_or(|o| o == m.name))
                .map(|m| &m.graph),
        );
    }
    graphs.extend(
        p.runs
            .iter()
            .filter(|r| only.is_none_or(|o| o == r.name))
            .map(|r| &r.graph),
    );
    if graphs.is_empty() {
        if let Some(o) = only {
            return Err(CliError::user(format!(
                "no model or run named `{o}` in {}",
                path.display()
            )));
        }
    }
    let mut first = true;
    for g in graphs {
        if !first {
            println!();
        }
        first = false;
        let text = match stage {
            Stage::Ast | Stage::Ir => graph_to_string(g),
            Stage::Grad => graph_to_string(&grad(g)?),
            Stage::Opt => graph_to_string(&optimized(g)?),
            Stage::Fused => {
                let opt = optimized(g)?;
                let mut text = groups_to_string(&opt);
                if opt.output("loss").is_some() {
                    let run = p.runs.iter().find(|r| std::ptr::eq(&r.graph, g));
                    text += &match run.and_then(|r| r.clip_grad_norm) {
                        Some(max) => updates_after_backward_to_string(&opt, max),
                        None => updates_to_string(&opt),
                    };
                }
                text
            }
            Stage::Plan => {
                let opt = optimized(g)?;
                let batch = p
                    .runs
                    .iter()
                    .find(|r| std::ptr::eq(&r.graph, g))
                    .map_or(1, |r| r.batch);
                plan_to_string(&opt, &plan(&opt), batch)
            }
            Stage::Clif => crate::codegen::clif_text(&optimized(g)?).map_err(CliError::internal)?,
            Stage::Asm => crate::codegen::asm_text(&optimized(g)?).map_err(CliError::internal)?,
        };
        print!("{text}");
    }
    Ok(())
}

fn grad(g: &Graph) -> Result<Graph, CliError> {
    if g.output("loss").is_none() {
        return Ok(g.clone());
    }
    crate::autodiff::grad(g).map_err(CliError::internal)
}

/// The graph the JIT compiles: the training graph after autodiff and `optimize(…, 1)`.
fn optimized(g: &Graph) -> Result<Graph, CliError> {
    crate::opt::optimize(&grad(g)?, 1).map_err(CliError::internal)
}
