//! `nnc gradcheck FILE`: for every training run, the gradient of every trainable parameter as the
//! JIT-compiled backward pass computes it, against central finite differences of the loss in f64
//! (the reference interpreter), on a small batch of random inputs. Exits non-zero above `--tol`.

use super::{source, CliError, CliResult};
use crate::autodiff::gradcheck::{executor_grads, gradcheck, worse, GradReport, F32_FLOOR};
use crate::codegen::{Jit, JitOptions};
use crate::exec::StepCtx;
use crate::ir::{DType, Graph, Op, ValueId};
use crate::runtime::init::init_param;
use crate::runtime::rng::Rng;
use crate::runtime::train::spinner;

#[derive(clap::Args, Debug, Clone)]
pub struct GradcheckArgs {
    /// The `.nn` file.
    pub file: std::path::PathBuf,
    /// Only this run (default: every run of the file).
    #[arg(long, value_name = "NAME")]
    pub run: Option<String>,
    /// Samples in the batch (at least 1) [default: 2, or 4 for a file with a `batch_norm` in
    /// training, whose normalization over two samples is too ill-conditioned in f32 to compare]
    #[arg(long, allow_negative_numbers = true, value_name = "N", value_parser = super::positive_count::<usize>)]
    pub batch: Option<usize>,
    /// The largest relative error accepted (a finite number above 0): |a − n| / max(|a|, |n|,
    /// 0.01) for the analytic gradient a and the numeric n, so that below 0.01 in magnitude
    /// an absolute error of 1e-5 passes at the default, as in `torch.autograd.gradcheck`.
    #[arg(long, allow_negative_numbers = true, value_name = "T", default_value_t = 1e-3, value_parser = tolerance)]
    pub tol: f64,
    /// Seed of the parameters, inputs and coordinates checked: the same seed checks the same
    /// values.
    #[arg(
        long,
        allow_negative_numbers = true,
        value_name = "N",
        default_value_t = 0
    )]
    pub seed: u64,
    /// Refuse runs that need more memory than this at `--batch` (e.g. 512M, 2G; default: what
    /// is available).
    #[arg(long, allow_negative_numbers = true, value_name = "SIZE", value_parser = crate::runtime::memory::parse_size)]
    pub max_memory: Option<u64>,
}

/// Parses `--tol`. NaN compares false with every error, so a run reported as FAILED was
/// followed by "gradient check passed"; infinity would pass any gradient and 0 or less none.
fn tolerance(s: &str) -> Result<f64, String> {
    let t: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if t.is_finite() && t > 0.0 {
        Ok(t)
    } else {
        Err(format!(
            "the tolerance must be a finite number above 0, not {s}"
        ))
    }
}

pub fn run(args: &GradcheckArgs) -> CliResult {
    let loaded = source::load(&args.file)?;
    let runs: Vec<_> = loaded
        .program
        .runs
        .iter()
        .filter(|r| args.run.as_ref().is_none_or(|n| *n == r.name))
        .collect();
    if runs.is_empty() {
        return Err(CliError::user(match &args.run {
            Some(n) => crate::check::unknown_run(&loaded.program, n, &args.file),
            None => format!("{} has no `train` block", args.file.display()),
        }));
    }
    // Two samples normalized by a batch norm are ±1 up to rounding: its gradients are then
    // mostly f32 cancellation, which finite differences in f64 do not reproduce.
    let batch_norm = |g: &Graph| g.nodes.iter().any(|n| matches!(n.op, Op::BatchNorm { .. }));
    let batch = args
        .batch
        .unwrap_or(if runs.iter().any(|s| batch_norm(&s.graph)) {
            4
        } else {
            2
        });
    // Before any parameter is allocated: a run too large for the machine is refused, with the
    // bytes it needs, instead of aborting the process.
    super::memory::check_for(
        &loaded,
        args.run.as_deref(),
        args.max_memory,
        super::memory::Use::Gradcheck { batch },
    )?;
    let mut worst = 0.0f64;
    let mut failed = Vec::new();
    for spec in runs {
        let (worst_run, ok) = check_graph(&spec.name, &spec.graph, batch, args.seed, args.tol)?;
        worst = worse(worst, worst_run);
        if !ok {
            failed.push(format!("`{}`", spec.name));
        }
    }
    // The verdict is the runs' own: "passed" only when no run printed FAILED.
    if !failed.is_empty() {
        return Err(CliError::user(format!(
            "gradient check failed for {} {}: worst relative error {worst:.3e} is above the tolerance {:.1e}",
            if failed.len() == 1 { "run" } else { "runs" },
            failed.join(", "),
            args.tol
        )));
    }
    println!(
        "gradient check passed: worst relative error {worst:.3e} (tolerance {:.1e})",
        args.tol
    );
    Ok(())
}

/// Checks one run's gradients and prints its report: its worst relative error, and whether
/// every parameter's is within `tol` (not so when one is NaN). A spinner on a terminal shows
/// that it works: at a large batch the interpreter's finite differences take minutes.
fn check_graph(
    name: &str,
    g: &Graph,
    batch: usize,
    seed: u64,
    tol: f64,
) -> Result<(f64, bool), CliError> {
    let spinner = spinner(format!(
        "run {name}: checking the gradients at batch {batch}"
    ));
    let report = report(g, batch, seed);
    spinner.finish_and_clear();
    let report = report?;
    let ok = report.params.iter().all(|p| p.max_rel_err <= tol);
    let verdict = if ok { "ok" } else { "FAILED" };
    println!("run {name}: {verdict}, {report}");
    Ok((report.max_rel_err(), ok))
}

/// The JIT's gradients of `g` against finite differences, on `batch` random samples.
fn report(g: &Graph, batch: usize, seed: u64) -> Result<GradReport, CliError> {
    let grad = crate::autodiff::grad(g).map_err(CliError::internal)?;
    let mut jit = Jit::compile(
        &grad,
        &JitOptions {
            threads: 1,
            ..JitOptions::default()
        },
    )
    .map_err(CliError::internal)?;
    let mut rng = Rng::new(seed);
    let inputs: Vec<Vec<f64>> = g
        .inputs()
        .iter()
        .map(|(v, _)| random_input(g, *v, batch, &mut rng))
        .collect();
    let params: Vec<Vec<f64>> = g
        .params
        .iter()
        .map(|p| init_param(p, seed).into_iter().map(f64::from).collect())
        .collect();
    let ctx = StepCtx {
        seed,
        ..StepCtx::default()
    };
    let mut analytic = executor_grads(&mut jit, batch, &inputs, ctx);
    gradcheck(g, &mut analytic, batch, &inputs, &params, ctx, F32_FLOOR).map_err(CliError::internal)
}

/// Random values for one input: f32 in [-1, 1] (or [0, 1] for targets of a probability loss),
/// i32 ids in the range their users accept (classes of a loss, rows of an embedding, one-hot width).
fn random_input(g: &Graph, v: ValueId, batch: usize, rng: &mut Rng) -> Vec<f64> {
    let ty = g.ty(v);
    let n = ty.numel(batch);
    if ty.dtype == DType::I32 {
        let range = id_range(g, v).max(1) as u64;
        return (0..n).map(|_| rng.below(range) as f64).collect();
    }
    let probability = g.users()[v.index()]
        .iter()
        .any(|u| matches!(g.node(*u).op, Op::Bce | Op::SoftCrossEntropy));
    if probability {
        let width = ty.last();
        let mut out: Vec<f64> = (0..n).map(|_| rng.next_f64()).collect();
        if g.users()[v.index()]
            .iter()
            .any(|u| matches!(g.node(*u).op, Op::SoftCrossEntropy))
        {
            for row in out.chunks_mut(width) {
                let s: f64 = row.iter().sum();
                row.iter_mut().for_each(|x| *x /= s);
            }
        }
        return out;
    }
    (0..n).map(|_| rng.next_f64() * 2.0 - 1.0).collect()
}

fn id_range(g: &Graph, v: ValueId) -> usize {
    let users = g.users();
    users[v.index()]
        .iter()
        .filter_map(|u| {
            let node = g.node(*u);
            match node.op {
                Op::OneHot { n } => Some(n),
                Op::Embedding => Some(g.ty(node.inputs[1]).dims[0]),
                Op::CrossEntropy => Some(g.ty(node.inputs[0]).last()),
                _ => None,
            }
        })
        .min()
        .unwrap_or(1)
}
