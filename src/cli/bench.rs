//! `nnc bench FILE`: what a run costs on this machine. For each run: compile time (parse, check,
//! autodiff and JIT compilation of every kernel), the training loop's throughput over the run
//! (or `--steps`), and for its model batch-1 latency and batch-1000 throughput of inference;
//! finally the process's peak resident memory. Numbers, not a test: see BENCHMARKS.md.

use super::outputs::{Log, Named};
use super::{source, train, CliError, CliResult};
use crate::codegen::{Jit, JitOptions};
use crate::exec::{Executor, StepCtx};
use crate::ir::{DType, Graph, Length};
use crate::runtime::batch::Buf;
use crate::runtime::init::init_param;
use crate::runtime::train::{Session, TrainOptions};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// The `.nn` file.
    pub file: PathBuf,
    /// Only this run (default: every run of the file).
    #[arg(long, value_name = "NAME")]
    pub run: Option<String>,
    /// Where the data files named in the .nn file are looked for (default: the file's folder).
    #[arg(long, value_name = "DIR", value_parser = super::data_folder())]
    pub data_dir: Option<PathBuf>,
    /// Train this many steps instead of each run's own `epochs:`/`steps:`.
    #[arg(long, allow_negative_numbers = true, value_name = "N", value_parser = super::step_count)]
    pub steps: Option<u64>,
    /// Worker threads (default: all cores; a larger number is capped at the core count).
    /// Inference of up to 4 rows runs on one of them where its first calls showed that to be
    /// faster.
    #[arg(long, allow_negative_numbers = true, value_name = "N", value_parser = super::thread_count)]
    pub threads: Option<usize>,
    /// Repetitions of the batch-1 inference measurement (1 to 1,000,000).
    // 0 would leave no time to take the median of; every repetition's time is kept (for the
    // median), so a count near usize::MAX overflowed reserving them, and panicked.
    #[arg(long, allow_negative_numbers = true, value_name = "N", default_value_t = 2000, value_parser = reps())]
    pub reps: usize,
    /// Also print where each run's time goes: every compiled step (kernel, GEMM, convolution)
    /// with its share, total and time per call, named by the IR node it computes.
    #[arg(long)]
    pub profile: bool,
    /// Refuse runs that need more memory than this (e.g. 512M, 2G; default: what is available).
    #[arg(long, allow_negative_numbers = true, value_name = "SIZE", value_parser = crate::runtime::memory::parse_size)]
    pub max_memory: Option<u64>,
    /// Append the measurements to this file (created if missing), one JSON object a line: one
    /// per run trained, one per model's inference, one for the whole process.
    #[arg(long, value_name = "PATH")]
    pub log_json: Option<PathBuf>,
}

/// The most `--reps`: at a few microseconds each, seconds of measuring.
const MAX_REPS: u64 = 1_000_000;

/// The value parser of `--reps`: 1 to [`MAX_REPS`].
fn reps() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..=MAX_REPS)
}

pub fn run(args: &BenchArgs) -> CliResult {
    let t0 = Instant::now();
    let mut loaded = source::load_warning(
        &args.file,
        true,
        args.steps.map(Length::Steps),
        args.run.as_deref(),
    )?;
    let front_ms = t0.elapsed().as_secs_f64() * 1e3;
    // As `nnc train` does: a run too large is refused here, not aborted by its allocation.
    super::memory::check(&loaded, args.run.as_deref(), args.max_memory)?;
    // A benchmark trains the steps asked (`--steps`, else the run's length): early stopping,
    // which would end a run after fewer, and quietly (`nnc bench` prints no notes), is left out.
    for r in &mut loaded.program.runs {
        r.early_stopping = None;
    }
    let p = &loaded.program;
    if let Some(n) = args.run.as_ref().filter(|n| p.run(n).is_none()) {
        return Err(CliError::user(crate::check::unknown_run(p, n, &args.file)));
    }
    let threads = train::threads(args.threads);
    println!(
        "{}: parse + check {front_ms:.2} ms, {threads} thread(s)",
        args.file.display()
    );
    let data_dir = args.data_dir.clone().unwrap_or_else(|| loaded.dir());
    let mut log = match &args.log_json {
        Some(l) => {
            let mut read = vec![Named::new("the .nn file", &args.file)];
            for r in &p.runs {
                read.extend(loaded.data_files(r, &data_dir));
            }
            Some(Log::open(l, &[&read])?)
        }
        None => None,
    };
    let options = TrainOptions {
        data_dir: data_dir.clone(),
        base_dir: loaded.dir(),
        steps: args.steps,
        quiet: true,
        threads: Some(threads),
        ..TrainOptions::default()
    };
    if args.profile {
        crate::codegen::profile::enable();
    }
    let mut session = Session::new(p, train::backend(false, Some(threads)), options)
        .map_err(train::train_error)?;
    let mut seen_models = Vec::new();
    for spec in p
        .runs
        .iter()
        .filter(|r| args.run.as_ref().is_none_or(|n| *n == r.name))
    {
        let t = Instant::now();
        let grad = crate::autodiff::grad(&spec.graph).map_err(CliError::internal)?;
        let grad = crate::opt::optimize(&grad, 1).map_err(CliError::internal)?;
        let jit = Jit::compile(
            &grad,
            &JitOptions {
                threads,
                ..JitOptions::default()
            },
        )
        .map_err(CliError::internal)?;
        let compile_ms = t.elapsed().as_secs_f64() * 1e3;
        let kernels = jit.kernel_count();
        drop(jit);
        // Every op of the training graph (forward, backward) per sample.
        let flops = crate::check::model_stats(&grad).flops_per_sample as f64;
        let s = session.run(&spec.name).map_err(train::train_error)?;
        // The batch trained: `batch:`, or the training split when that is smaller.
        let samples = s.steps as f64 * s.batch as f64;
        let loop_ms = samples / s.samples_per_s.max(1e-9) * 1e3;
        println!(
            "run {:<12} compile {compile_ms:7.2} ms ({} kernels)  train {} steps × {}: loop {loop_ms:.1} ms, {:.0} samples/s ({:.1} GFLOP/s), whole run {:.2} s",
            spec.name,
            kernels,
            s.steps,
            s.batch,
            s.samples_per_s,
            flops * s.samples_per_s / 1e9,
            s.wall_s
        );
        if let Some(log) = &mut log {
            log.write("bench_train", &spec.name, |o| {
                o.str("model", &spec.model)?
                    .uint("threads", Some(threads as u64))?;
                o.num("compile_ms", Some(compile_ms))?;
                o.uint("kernels", Some(kernels as u64))?;
                o.uint("steps", Some(s.steps))?;
                o.uint("batch", Some(s.batch as u64))?;
                o.num("loop_ms", Some(loop_ms))?;
                o.num("samples_per_s", Some(s.samples_per_s))?;
                o.num("gflop_per_s", Some(flops * s.samples_per_s / 1e9))?;
                o.num("wall_s", Some(s.wall_s))?;
                Ok(())
            })?;
        }
        if args.profile {
            print_profile(&crate::codegen::profile::take());
        }
        if !seen_models.contains(&spec.model) {
            seen_models.push(spec.model.clone());
            let m = p.model(&spec.model).expect("runs name checked models");
            let samples = test_inputs(p, spec, &m.graph, &data_dir);
            let at = Inference {
                threads,
                reps: args.reps,
                profile: args.profile,
                inputs: samples.as_ref().map(|(x, split)| (x, *split)),
            };
            inference(&m.name, &m.graph, &at, &mut log)?;
        }
    }
    // The models no run trains (a file of models only, a sub-model), on constant inputs.
    for m in p.models.iter().filter(|_| args.run.is_none()) {
        if !seen_models.contains(&m.name) {
            let at = Inference {
                threads,
                reps: args.reps,
                profile: args.profile,
                inputs: None,
            };
            inference(&m.name, &m.graph, &at, &mut log)?;
        }
    }
    let peak = peak_rss_kb();
    if let Some(kb) = peak {
        println!("peak resident memory {:.1} MB", kb as f64 / 1024.0);
    }
    if let Some(log) = &mut log {
        log.write("bench_process", "", |o| {
            o.str("file", &args.file.to_string_lossy())?;
            o.uint("threads", Some(threads as u64))?;
            o.num("parse_check_ms", Some(front_ms))?;
            o.uint("peak_rss_bytes", peak.map(|kb| kb * 1024))?;
            Ok(())
        })?;
    }
    Ok(())
}

/// The steps of a run (training and evaluation graphs) or of inference (batch 1 and 1000) by
/// time: the ten largest, then the rest in one line.
fn print_profile(steps: &[(String, crate::codegen::profile::Entry)]) {
    let total: f64 = steps.iter().map(|(_, e)| e.time.as_secs_f64()).sum();
    println!(
        "  where the time goes ({:.1} ms in compiled steps):",
        total * 1e3
    );
    const SHOWN: usize = 10;
    for (label, e) in steps.iter().take(SHOWN) {
        let t = e.time.as_secs_f64();
        println!(
            "  {:5.1}% {:9.1} ms {:9.1} µs/call  {label}",
            100.0 * t / total.max(1e-12),
            t * 1e3,
            t * 1e6 / e.calls.max(1) as f64
        );
    }
    if steps.len() > SHOWN {
        let rest: f64 = steps[SHOWN..]
            .iter()
            .map(|(_, e)| e.time.as_secs_f64())
            .sum();
        println!(
            "  {:5.1}% {:9.1} ms  in the other {} steps",
            100.0 * rest / total.max(1e-12),
            rest * 1e3,
            steps.len() - SHOWN
        );
    }
}

/// The first test samples of a run's data (its training samples if it has no test split), as
/// the model's inputs (images, or a text's token ids), with the split's name (`"test"` or
/// `"train"`), or `None` (no data where the run looks): batch-1 latency and batch-1000
/// throughput are measured on them, as the reference scripts measure on MNIST's first test
/// images, since what an input holds can change what a product costs (`codegen::sparse`) or
/// which rows an embedding reads.
fn test_inputs(
    p: &crate::ir::Program,
    spec: &crate::ir::RunSpec,
    model: &Graph,
    dir: &std::path::Path,
) -> Option<(Buf, &'static str)> {
    use crate::runtime::batch::gather;
    use crate::runtime::data::{self, Expect};
    let (input, _) = *model.inputs().first()?;
    let ty = model.ty(input).clone();
    let want = Expect {
        x: Some(ty.clone()),
        y: None,
    };
    // Only the split wanted is loaded: not the whole train set again, for a run that has a test
    // source, after training has loaded it.
    let (split, name) = data::load_eval(p.data(&spec.data)?, dir, &want).ok()?;
    let first: Vec<usize> = (0..split.len.min(1000)).collect();
    let mut x = Buf::for_column(&split.x, first.len());
    gather(&split.x, &first, &mut x);
    (!first.is_empty()).then_some((x, name))
}

/// How [`inference`] measures: threads, batch-1 repetitions, whether to profile, and the
/// samples to feed with their split's name (cycled to fill a batch; constant 0.5, or token id
/// 1, when `None`).
struct Inference<'a> {
    threads: usize,
    reps: usize,
    profile: bool,
    inputs: Option<(&'a Buf, &'static str)>,
}

/// Median batch-1 latency and batch-1000 throughput of a model's inference graph, and with
/// `profile` where the time of each goes; logged in `log`.
fn inference(name: &str, g: &Graph, at: &Inference, log: &mut Option<Log>) -> CliResult {
    let Inference {
        threads,
        reps,
        profile,
        inputs,
    } = *at;
    let params: Vec<Vec<f32>> = g.params.iter().map(|p| init_param(p, 0)).collect();
    let (input, _) = *g
        .inputs()
        .first()
        .ok_or_else(|| CliError::internal("a model without input"))?;
    let ty = g.ty(input).clone();
    let feeds = |batch: usize| -> Buf {
        let n = ty.numel(batch);
        match inputs.map(|(x, _)| x) {
            Some(Buf::F32(x)) => Buf::F32(x.iter().copied().cycle().take(n).collect()),
            Some(Buf::I32(x)) => Buf::I32(x.iter().copied().cycle().take(n).collect()),
            None if ty.dtype == DType::I32 => Buf::I32(vec![1; n]),
            None => Buf::F32(vec![0.5; n]),
        }
    };
    let measure =
        |exec: &mut dyn Executor, batch: usize, reps: usize| -> Result<Vec<f64>, CliError> {
            let samples = feeds(batch);
            let feed = samples.feed();
            let mut times = Vec::with_capacity(reps);
            for r in 0..reps + reps / 10 + 1 {
                let t = Instant::now();
                exec.run(batch, &[feed], &[], StepCtx::default())
                    .map_err(CliError::internal)?;
                if r > reps / 10 {
                    times.push(t.elapsed().as_secs_f64());
                }
            }
            times.sort_by(f64::total_cmp);
            Ok(times)
        };
    // Compiled as `nnc predict` compiles it (optimized: fusion, epilogues; the weights held
    // by the executor), at `threads`; one executor per batch size, so that each has its own
    // profile (taken when it is dropped).
    let executor = || -> Result<Box<dyn Executor>, CliError> {
        let mut exec = train::backend(false, Some(threads))
            .forward_executor(g)
            .map_err(CliError::internal)?;
        exec.hold_params(params.clone())
            .map_err(CliError::internal)?;
        Ok(exec)
    };
    let t1 = measure(executor()?.as_mut(), 1, reps)?;
    let batch1 = profile.then(crate::codegen::profile::take);
    let t1000 = measure(executor()?.as_mut(), 1000, (reps / 200).max(5))?;
    let flops = crate::check::model_stats(g).flops_per_sample as f64;
    let per_s = 1000.0 / t1000[t1000.len() / 2];
    let (median_us, p90_us) = (t1[t1.len() / 2] * 1e6, t1[t1.len() * 9 / 10] * 1e6);
    println!(
        "model {name:<10} inference{}: batch 1 median {median_us:.1} µs (p90 {p90_us:.1} µs); batch 1000 {per_s:.0} samples/s ({:.1} GFLOP/s)",
        match inputs {
            Some((_, "test")) => " on test samples",
            Some(_) => " on training samples",
            None => "",
        },
        flops * per_s / 1e9
    );
    if let Some(log) = log {
        log.write("bench_inference", "", |o| {
            o.str("model", name)?
                .uint("threads", Some(threads as u64))?;
            o.str("inputs", inputs.map_or("constant", |(_, split)| split))?;
            o.num("batch1_median_us", Some(median_us))?;
            o.num("batch1_p90_us", Some(p90_us))?;
            o.num("batch1000_samples_per_s", Some(per_s))?;
            o.num("batch1000_gflop_per_s", Some(flops * per_s / 1e9))?;
            Ok(())
        })?;
    }
    if let Some(batch1) = batch1 {
        println!("  batch 1:");
        print_profile(&batch1);
        println!("  batch 1000:");
        print_profile(&crate::codegen::profile::take());
    }
    Ok(())
}

/// The process's peak resident set (VmHWM), where /proc tells it.
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
