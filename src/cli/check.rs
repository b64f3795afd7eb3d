//! `nnc check FILE`: one line per model with its parameter count and forward FLOPs per sample,
//! one per run; runs too large for the memory are refused ([`memory`]).

use super::{memory, source, CliError, CliResult};
use crate::codegen::{Jit, JitOptions};
use crate::diag::Diag;
use crate::ir::RunSpec;
use crate::opt::memplan;
use crate::runtime::data::resolve;
use std::path::Path;

pub fn run(path: &Path, stats: bool, max_memory: Option<u64>) -> CliResult {
    let loaded = source::load(path)?;
    source::print_warnings(&loaded.path, &loaded.text, missing_reads(&loaded));
    memory::check(&loaded, None, max_memory)?;
    let p = &loaded.program;
    if p.models.is_empty() && p.runs.is_empty() {
        // Valid, but most likely not the file meant: say so rather than print nothing.
        println!("{}: no model and no run", path.display());
    }
    let width = p.models.iter().map(|m| m.name.len()).max().unwrap_or(0);
    for m in &p.models {
        let s = crate::check::model_stats(&m.graph);
        println!(
            "model {:width$}  {:>10} parameters  {:>14} FLOPs/sample forward",
            m.name,
            group(s.params as u64),
            group(s.flops_per_sample),
        );
        if stats {
            println!("  {} nodes", m.graph.nodes.len());
        }
    }
    for r in &p.runs {
        println!("train {} ({} on {}): ok", r.name, r.model, r.data);
        // A run that starts from an earlier one: what it will take, before either trains (a
        // renamed layer shows as fresh and unused).
        if let Some(note) = crate::runtime::train::planned_start(p, r) {
            println!("  {}", note.message(&r.name));
        }
        if stats {
            run_stats(r)?;
        }
    }
    Ok(())
}

/// Warnings for the checkpoint files that `init:` and `teacher:` name but that do not exist
/// (relative to the file's folder): only warnings, as another command may write them before
/// `nnc train` reads them, which refuses a missing one. A file that an earlier run's
/// `checkpoint:` writes is not warned of: training the file writes it before it is read.
fn missing_reads(loaded: &source::Loaded) -> Vec<Diag> {
    let dir = loaded.dir();
    let runs = &loaded.program.runs;
    runs.iter()
        .enumerate()
        .flat_map(|(i, r)| r.reads.iter().map(move |read| (i, read)))
        .filter(|(i, (f, _))| {
            let path = resolve(f, &dir);
            let written_before = runs[..*i]
                .iter()
                .filter_map(|earlier| earlier.checkpoint.as_deref())
                .any(|c| resolve(c, &dir) == path);
            !written_before && !path.exists()
        })
        .map(|(_, (f, span))| {
            Diag::new(
                "nnc::train",
                format!("checkpoint {f:?} does not exist"),
                *span,
                "no such file (paths are relative to the .nn file's folder)",
            )
            .help("`nnc train` needs it: write it first (e.g. `nnc train --checkpoint`), or fix the path")
            .warning()
        })
        .collect()
}

/// What training `r` compiles to: kernels per step, the bytes of a step's values (activations
/// and gradients) with and without the memory plan, the algorithm of each convolution, and the
/// whole footprint.
fn run_stats(r: &RunSpec) -> CliResult {
    use crate::runtime::memory::human;
    let grad = crate::autodiff::grad(&r.graph).map_err(CliError::internal)?;
    let graph = crate::opt::optimize(&grad, 1).map_err(CliError::internal)?;
    let jit = Jit::compile(&graph, &JitOptions::default()).map_err(CliError::internal)?;
    let planned = jit.plan().bytes(r.batch);
    let unplanned = memplan::unplanned(&graph).bytes(r.batch);
    println!(
        "  {} nodes, {} kernels; a step's values (activations and gradients) at batch {}: {} planned in {} buffers ({} with one buffer per value)",
        graph.nodes.len(),
        jit.kernel_count(),
        r.batch,
        human(planned),
        jit.plan().buffers.len(),
        human(unplanned)
    );
    let convs: Vec<String> = jit
        .conv_algorithms()
        .iter()
        .map(|&(i, algo)| {
            // The node of the graph the JIT compiled (`kernel_graph` adds nodes to `graph`).
            let n = &crate::exec::Executor::graph(&jit).nodes[i];
            format!("{} {}: {algo}", n.op.name(), n.label)
        })
        .collect();
    if !convs.is_empty() {
        println!("  convolutions: {}", convs.join(", "));
    }
    if let Ok(f) = crate::runtime::memory::of_run(r) {
        println!("  memory at batch {}: {}", r.batch, f.describe());
    }
    Ok(())
}

/// 1234567 → "1,234,567".
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
