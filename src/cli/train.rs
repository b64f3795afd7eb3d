//! `nnc train FILE`: runs the file's `train` blocks in order (or the one named by `--run`), then
//! prints a summary; for small inline data sets it also prints the model's output per sample.
//! Ctrl-C stops training after the current step and saves a checkpoint to resume from
//! (`--resume`); `--checkpoint-every` saves one periodically, for runs that are killed.

use super::outputs::{refuse_log, refuse_overwrite, refuse_replacing_another_kind, Kind, Named};
use super::{source, CliError, CliResult};
use crate::exec::{Feed, StepCtx};
use crate::ir::{InitFrom, Length, Program, RunSpec, Source};
use crate::runtime::checkpoint::{
    checkpoint_name_for, is_checkpoint_name, Checkpoint, CheckpointError,
};
use crate::runtime::data::resolve;
use crate::runtime::dist::{Comm, Single};
use crate::runtime::train::resume::Position;
use crate::runtime::train::{
    argmax, interrupt, loss_text, run_checkpoint, Backend, RunSummary, Session, TrainError,
    TrainOptions,
};
use std::path::{Path, PathBuf};
use std::rc::Rc;

#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// The `.nn` file.
    pub file: PathBuf,
    /// Train only this run (its `init`/`teacher` runs must be loadable from checkpoints).
    #[arg(long, value_name = "NAME")]
    pub run: Option<String>,
    /// Where the data files named in the .nn file are looked for (default: the file's folder).
    #[arg(long, value_name = "DIR", value_parser = super::data_folder())]
    pub data_dir: Option<PathBuf>,
    /// Train this many epochs instead of each run's own `epochs:`/`steps:`.
    #[arg(long, allow_negative_numbers = true, value_name = "N", conflicts_with = "steps", value_parser = super::step_count)]
    pub epochs: Option<u64>,
    /// Train this many steps instead of each run's own `epochs:`/`steps:`.
    #[arg(long, allow_negative_numbers = true, value_name = "N", value_parser = super::step_count)]
    pub steps: Option<u64>,
    /// Seed of the initialization, shuffling and dropout, instead of each run's own `seed:`: the
    /// same seed, file and data give the same training (a resumed run must keep its seed).
    #[arg(long, allow_negative_numbers = true, value_name = "N")]
    pub seed: Option<u64>,
    /// Write the trained parameters to this safetensors file; when several runs are trained, each
    /// writes its own, `<stem>.<run>.<ext>` (`ae.st` → `ae.pretrain.st`, `ae.frozen.st`, …).
    #[arg(long, value_name = "PATH")]
    pub checkpoint: Option<PathBuf>,
    /// Start each run trained from the parameters in this safetensors file, matched by path (in
    /// place of the run's `init:`).
    #[arg(long, value_name = "PATH", conflicts_with = "resume")]
    pub init: Option<PathBuf>,
    /// Continue a stopped run from the checkpoint it wrote (parameters, optimizer state, step and
    /// data position); the run is the one named in the checkpoint. Saved to the run's checkpoint
    /// path, else back into this file.
    #[arg(long, value_name = "PATH")]
    pub resume: Option<PathBuf>,
    /// Also write the run's checkpoint every N steps (so that a killed run can be resumed).
    #[arg(long, allow_negative_numbers = true, value_name = "N", value_parser = super::positive_count::<u64>)]
    pub checkpoint_every: Option<u64>,
    /// No progress bar and no evaluation lines during training (the summary is still printed).
    #[arg(long, short)]
    pub quiet: bool,
    /// Append one JSON object per step and per evaluation to this file (created if missing), so
    /// that a resumed run continues the log of the run it resumes.
    #[arg(long, value_name = "PATH")]
    pub log_json: Option<PathBuf>,
    /// Worker threads (default: all cores; a larger number is capped at the core count).
    #[arg(long, allow_negative_numbers = true, value_name = "N", value_parser = super::thread_count)]
    pub threads: Option<usize>,
    /// Run on the f64 reference interpreter instead of the JIT (slow; for debugging).
    #[arg(long)]
    pub interp: bool,
    /// Optimization level of the training graphs the JIT compiles: 0 = none (the backward
    /// graph as autodiff built it, updates after the step, every product dense), 1 = the IR
    /// passes (folding, CSE, DCE, fusion), updates inside the step and compacted products.
    #[arg(long, value_name = "LEVEL", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub opt: u8,
    /// Check every intermediate value of every step and stop at the first NaN or infinity,
    /// naming the op that produced it (slower; the loss, gradients and batch statistics are always checked).
    #[arg(long)]
    pub detect_anomaly: bool,
    /// Refuse runs that need more memory than this (e.g. 512M, 2G; default: what is available).
    #[arg(long, allow_negative_numbers = true, value_name = "SIZE", value_parser = crate::runtime::memory::parse_size)]
    pub max_memory: Option<u64>,
    /// Under `mpirun`: how long a rank waits for the others in an exchange (gradients,
    /// evaluation, starting parameters) before it stops with an error, in seconds.
    #[cfg(feature = "mpi")]
    #[arg(
        long,
        allow_negative_numbers = true,
        value_name = "SECS",
        default_value_t = 300.0
    )]
    pub mpi_timeout: f64,
}

/// The worker threads of `--threads n` (already capped at the cores), else one per core.
pub fn threads(n: Option<usize>) -> usize {
    n.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
    .max(1)
}

/// The JIT at [`threads`] of `threads_opt`, or with `interp` the f64 reference interpreter.
pub fn backend(interp: bool, threads_opt: Option<usize>) -> Backend {
    if interp {
        Backend::interpreter()
    } else {
        Backend::jit(threads(threads_opt))
    }
}

pub fn run(args: &TrainArgs) -> CliResult {
    #[cfg(feature = "mpi")]
    if let Some(job) = super::mpi::join(args.mpi_timeout)? {
        let args = TrainArgs {
            threads: args.threads.or(job.threads()),
            ..args.clone()
        };
        let result = train(&args, job.comm()).map_err(|e| job.label(e));
        job.end(result.is_ok());
        return result;
    }
    train(args, Rc::new(Single))
}

/// `nnc train` as one of the processes of `comm`: rank 0 alone logs, shows progress and prints.
fn train(args: &TrainArgs, comm: Rc<dyn Comm>) -> CliResult {
    let root = comm.rank() == 0;
    let length = match (args.epochs, args.steps) {
        (Some(n), _) => Some(Length::Epochs(n)),
        (None, Some(n)) => Some(Length::Steps(n)),
        (None, None) => None,
    };
    // A resumed run is the one that wrote the checkpoint, and goes on to the length it
    // records unless the command line gives one: its schedule is warned about against that.
    let resumed = args.resume.as_deref().map(Checkpoint::load);
    let recorded = resumed
        .as_ref()
        .and_then(|ck| Position::from_checkpoint(ck.as_ref().ok()?).ok())
        // `--run` naming another run is refused on resuming: that run keeps its own length.
        .filter(|p| args.run.as_deref().is_none_or(|r| r == p.run));
    let (length, only) = match &recorded {
        Some(p) => (
            length.or(Some(Length::Steps(p.total))),
            args.run.as_deref().or(Some(&p.run)),
        ),
        None => (length, args.run.as_deref()),
    };
    let loaded = source::load_warning(&args.file, root, length, only)?;
    let program = &loaded.program;
    if program.runs.is_empty() {
        return Err(CliError::user(format!(
            "{} has no `train` block",
            args.file.display()
        )));
    }
    if let Some(n) = args.run.as_deref().filter(|n| program.run(n).is_none()) {
        return Err(CliError::user(crate::check::unknown_run(
            program, n, &args.file,
        )));
    }
    let run_name = run_to_train(args, program, resumed)?;
    let args = &resumed_in_place(args, program, run_name.as_deref());
    check_outputs(args, &loaded, run_name.as_deref())?;
    super::memory::check(&loaded, run_name.as_deref(), args.max_memory)?;
    if root {
        for line in init_replacing_runs(args, program, run_name.as_deref()) {
            eprintln!("{line}");
        }
    }
    let options = TrainOptions {
        data_dir: args.data_dir.clone().unwrap_or_else(|| loaded.dir()),
        base_dir: loaded.dir(),
        epochs: args.epochs,
        steps: args.steps,
        seed: args.seed,
        quiet: args.quiet || !root,
        log_json: args.log_json.clone().filter(|_| root),
        checkpoint: args.checkpoint.clone(),
        init: args.init.clone(),
        threads: args.threads,
        resume: args.resume.clone(),
        checkpoint_every: args.checkpoint_every,
        stop_after: None,
        detect_anomaly: args.detect_anomaly,
        comm,
    };
    let backend = if args.interp {
        Backend::interpreter()
    } else {
        Backend::jit_opt(threads(args.threads), args.opt)
    };
    let mut session = Session::new(program, backend, options).map_err(train_error)?;
    let fail = |e: TrainError| match e {
        TrainError::Data { run, source } => loaded.data_error(&run, &source),
        TrainError::Interrupted {
            run,
            step,
            checkpoint,
        } => interrupted(args, program, &run, step, &checkpoint),
        e => train_error(e),
    };
    stop_on_sigint();
    let summaries = match &run_name {
        Some(name) => vec![session.run(name).map_err(fail)?],
        None => session.run_all().map_err(fail)?,
    };
    if !root {
        return Ok(());
    }
    print_summaries(&summaries);
    for w in summaries.iter().filter_map(RunSummary::divergence_warning) {
        eprintln!("warning: {w}");
    }
    for s in &summaries {
        let spec = program.run(&s.run).expect("a run that just ran exists");
        if let Some(params) = session.params(&s.run) {
            print_inline_outputs(program, spec, params, args)?;
        }
    }
    Ok(())
}

/// `args`, where a run is resumed that has no checkpoint path (no `--checkpoint`, no
/// `checkpoint:`), with `--checkpoint` the resumed file: continued in place, rather than trained
/// to its end and then written nowhere.
fn resumed_in_place(args: &TrainArgs, program: &Program, run: Option<&str>) -> TrainArgs {
    let mut args = args.clone();
    let declared = run
        .and_then(|r| program.run(r))
        .is_some_and(|r| r.checkpoint.is_some());
    if args.checkpoint.is_none() && !declared {
        args.checkpoint = args.resume.clone();
    }
    args
}

/// Warnings for the runs trained whose `init:` names another run of the file, which `--init`
/// replaces: such a run starts from the file given, not from what that run trained.
fn init_replacing_runs(args: &TrainArgs, program: &Program, only: Option<&str>) -> Vec<String> {
    let Some(init) = &args.init else {
        return Vec::new();
    };
    program
        .runs
        .iter()
        .filter(|r| only.is_none_or(|n| n == r.name))
        .filter_map(|r| match &r.init {
            Some(InitFrom::Run(from)) => Some(format!(
                "warning: `--init {}` replaces run `{}`'s `init: {from}`: it starts from that \
                 file, not from what run `{from}` trained",
                init.display(),
                r.name
            )),
            _ => None,
        })
        .collect()
}

/// The run `nnc train` trains: `--run`'s; with `--resume`, the one that wrote the checkpoint
/// (`resumed`, as read); else `None`, every run of the file.
fn run_to_train(
    args: &TrainArgs,
    program: &Program,
    resumed: Option<Result<Checkpoint, CheckpointError>>,
) -> Result<Option<String>, CliError> {
    let (p, ck) = match (&args.run, &args.resume, resumed) {
        (Some(r), _, _) => return Ok(Some(r.clone())),
        (None, Some(p), Some(ck)) => (p, ck.map_err(CliError::user)?),
        _ => return Ok(None),
    };
    let name = Position::run_of(&ck)
        .map_err(CliError::user)?
        .ok_or_else(|| {
            CliError::user(format!(
                "checkpoint {} names no run to resume (it was not written by `nnc train`)",
                p.display()
            ))
        })?;
    if program.run(name).is_none() {
        return Err(CliError::user(format!(
            "checkpoint {} was written by run `{name}`, which {} does not have",
            p.display(),
            args.file.display()
        )));
    }
    Ok(Some(name.to_string()))
}

/// The error of a run stopped by Ctrl-C after `step` steps, its state saved in `checkpoint`:
/// where that is, and the command that resumes it.
fn interrupted(
    args: &TrainArgs,
    program: &Program,
    run: &str,
    step: u64,
    checkpoint: &Path,
) -> CliError {
    // The settings that change where the run reads and writes, or its numbers; the length and
    // the position come from the checkpoint.
    let mut same = String::new();
    if let Some(d) = &args.data_dir {
        same += &format!(" --data-dir {}", shell_word(d));
    }
    if let Some(n) = args.seed {
        same += &format!(" --seed {n}");
    }
    // With `--checkpoint`, the interrupted run saved to it (to its own file when several runs
    // were trained), and the resumed one must go on writing there. So must a run that has no
    // checkpoint of its own (saved to `<run>.interrupted.safetensors`): resumed without one,
    // it would end writing nothing, its training lost.
    let has_own = program.run(run).is_some_and(|r| r.checkpoint.is_some());
    let mut after = String::new();
    if args.checkpoint.is_some() || !has_own {
        after += &format!(" --checkpoint {}", shell_word(checkpoint));
    }
    // And what it was run with that the file does not say: its log goes on in the same file.
    let mut with = String::new();
    if args.interp {
        with += " --interp";
    } else if args.opt != 1 {
        with += &format!(" --opt {}", args.opt);
    }
    if let Some(n) = args.checkpoint_every {
        with += &format!(" --checkpoint-every {n}");
    }
    if let Some(log) = &args.log_json {
        with += &format!(" --log-json {}", shell_word(log));
    }
    if let Some(n) = args.threads {
        with += &format!(" --threads {n}");
    }
    if let Some(m) = args.max_memory {
        with += &format!(" --max-memory {m}");
    }
    if args.detect_anomaly {
        with += " --detect-anomaly";
    }
    let ck = shell_word(checkpoint);
    let file = shell_word(&args.file);
    let mut msg = format!(
        "interrupted: run `{run}` stopped after step {step}; its state is saved in {}\n\
         resume with: nnc train {file}{same} --run {run} --resume {ck}{after}{with}",
        checkpoint.display()
    );
    // A training of every run stopped before the runs after this one: each is then trained on
    // its own, into the file it would have written (where later runs look for it), as long and
    // from the same `--init` as the command trained it.
    if args.run.is_none() && args.resume.is_none() {
        let mut fresh = match (args.epochs, args.steps) {
            (Some(n), _) => format!(" --epochs {n}"),
            (None, Some(n)) => format!(" --steps {n}"),
            (None, None) => String::new(),
        };
        if let Some(init) = &args.init {
            fresh += &format!(" --init {}", shell_word(init));
        }
        let later = program.runs.iter().skip_while(|r| r.name != run).skip(1);
        for r in later {
            let out = match &args.checkpoint {
                Some(c) => format!(
                    " --checkpoint {}",
                    shell_word(&run_checkpoint(c, &r.name, program.runs.len()))
                ),
                None => String::new(),
            };
            msg += &format!(
                "\nthen: nnc train {file}{same} --run {}{fresh}{out}{with}",
                r.name
            );
        }
    }
    CliError::Interrupted(msg)
}

/// Refuses, before anything is trained or written, an output that would replace one of the
/// run's inputs: a checkpoint or log onto the `.nn` file or a data file, a log onto a checkpoint
/// (written or read), a run's checkpoint onto a file that it or an earlier run of the command
/// reads (`init`, `teacher`) or writes, or onto an existing file of another kind; and a
/// checkpoint path that cannot be replaced (a FIFO, a folder, a missing folder or one it may not
/// write in), which would otherwise fail only once training is over. A checkpoint may replace
/// the `--resume` or `--init` one: they are read before training, and resuming into the same
/// file is the usual way to continue a run.
fn check_outputs(args: &TrainArgs, loaded: &source::Loaded, run_name: Option<&str>) -> CliResult {
    let program = &loaded.program;
    let runs: Vec<&RunSpec> = match run_name {
        Some(n) => program.run(n).into_iter().collect(),
        None => program.runs.iter().collect(),
    };
    let base = loaded.dir();
    let data_dir = args.data_dir.clone().unwrap_or_else(|| loaded.dir());
    let mut sources = vec![Named::new("the .nn file being trained", &args.file)];
    let mut read = Vec::new();
    let mut written = Vec::new();
    for r in &runs {
        sources.extend(loaded.data_files(r, &data_dir));
        let mut own = Vec::new();
        if let Some(p) = r.init.as_ref().and_then(|i| loaded.checkpoint_of(i)) {
            own.push(Named::new(format!("the `init` of run `{}`", r.name), p));
        }
        if let Some(p) = r
            .teacher
            .as_ref()
            .and_then(|t| loaded.checkpoint_of(&t.from))
        {
            own.push(Named::new(format!("the `teacher` of run `{}`", r.name), p));
        }
        let before = written.len();
        match (&args.checkpoint, &r.checkpoint) {
            (Some(c), _) => {
                let p = run_checkpoint(c, &r.name, runs.len());
                let what = if &p == c {
                    "`--checkpoint`".to_string()
                } else {
                    format!("the `--checkpoint` of run `{}`", r.name)
                };
                written.push(Named::new(what, p));
            }
            (None, Some(c)) => written.push(Named::new(
                format!("the `checkpoint:` of run `{}`", r.name),
                resolve(c, &base),
            )),
            (None, None) => {}
        }
        // Not over what the run itself starts from or distills, nor over a file an earlier run
        // writes or reads: `nnc check` refuses that for `checkpoint:` as written, and paths
        // spelled otherwise (`../ae/x.st` from `ae/`) or `--checkpoint` may name such a file.
        refuse_overwrite(&written[before..], &own)?;
        refuse_overwrite(&written[before..], &written[..before])?;
        refuse_overwrite(&written[before..], &read)?;
        read.extend(own);
    }
    for (what, p) in [("`--init`", &args.init), ("`--resume`", &args.resume)] {
        if let Some(p) = p {
            read.push(Named::new(format!("the {what} checkpoint"), p));
        }
    }
    refuse_overwrite(&written, &sources)?;
    if let Some(log) = &args.log_json {
        refuse_log(log, &[&sources, &read, &written])?;
    }
    for c in &written {
        let name = c.path.to_string_lossy();
        if !is_checkpoint_name(&name) {
            return Err(CliError::user(format!(
                "{} {name}: checkpoints are safetensors files, named `.safetensors` (or `.st`); \
                 name it e.g. {}",
                c.what,
                checkpoint_name_for(&name)
            )));
        }
        refuse_replacing_another_kind(c, Kind::Safetensors)?;
        crate::runtime::atomic::probe(&c.path).map_err(|e| {
            CliError::user(format!("cannot write {} {}: {e}", c.what, c.path.display()))
        })?;
    }
    Ok(())
}

/// Ctrl-C asks the training loop to stop after its current step ([`interrupt`]) instead of
/// killing the process, so that the run's state is saved.
fn stop_on_sigint() {
    #[cfg(unix)]
    {
        extern "C" fn on_sigint(_signum: i32) {
            interrupt::request();
        }
        extern "C" {
            fn signal(signum: i32, handler: usize) -> usize;
        }
        const SIGINT: i32 = 2;
        // SAFETY: the handler only performs an atomic store, which is async-signal-safe.
        unsafe {
            signal(SIGINT, on_sigint as *const () as usize);
        }
    }
}

pub fn train_error(e: TrainError) -> CliError {
    match e {
        TrainError::Exec { .. } => CliError::internal(e),
        _ => CliError::user(e),
    }
}

fn print_summaries(summaries: &[RunSummary]) {
    // A run resumed from a checkpoint at its end trained nothing: it has no row of numbers.
    let (done, summaries): (Vec<&RunSummary>, Vec<&RunSummary>) =
        summaries.iter().partition(|s| s.steps_run == 0);
    for s in done {
        let at = if s.steps == s.total_steps {
            format!("step {} of {}", s.steps, s.total_steps)
        } else {
            format!(
                "step {}, past its length of {} steps",
                s.steps, s.total_steps
            )
        };
        println!(
            "run `{}` is already complete: its checkpoint is at {at}; nothing to train",
            s.run
        );
    }
    if summaries.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<16} {:>8} {:>11} {:>10} {:>10} {:>12} {:>9}",
        "run", "steps", "train loss", "test loss", "accuracy", "samples/s", "time"
    );
    for s in summaries {
        let opt = |v: Option<f64>, pct: bool| match v {
            Some(v) if pct => format!("{:.2}%", 100.0 * v),
            Some(v) => loss_text(v),
            None => "–".into(),
        };
        println!(
            "{:<16} {:>8} {:>11} {:>10} {:>10} {:>12.0} {:>8.2}s",
            s.run,
            s.steps,
            loss_text(s.final_loss),
            opt(s.test_loss, false),
            opt(s.test_accuracy, true),
            s.samples_per_s,
            s.wall_s
        );
        if let Some(c) = &s.checkpoint {
            println!("{:<16} checkpoint written to {}", "", c.display());
        }
    }
}

/// For data written inline in the file (XOR), show what the trained model outputs per sample.
fn print_inline_outputs(
    program: &Program,
    spec: &RunSpec,
    params: &crate::runtime::train::Tensors,
    args: &TrainArgs,
) -> CliResult {
    let Some(data) = program.data(&spec.data) else {
        return Ok(());
    };
    let Source::Inline { x, y } = &data.train else {
        return Ok(());
    };
    if x.len() > 32 {
        return Ok(());
    }
    let model = program
        .model(&spec.model)
        .expect("checked runs name existing models");
    let g = &model.graph;
    let mut exec = backend(args.interp, Some(1))
        .forward_executor(g)
        .map_err(CliError::internal)?;
    let mut param_data = Vec::new();
    for p in &g.params {
        let t = params
            .get(&p.path)
            .ok_or_else(|| CliError::internal(format!("no trained value for {}", p.path)))?;
        param_data.push(t.data.as_slice());
    }
    // Token ids (whole numbers, as the checker found them) go in as they are, unnormalized.
    let ids = g
        .inputs()
        .first()
        .is_some_and(|(v, _)| g.ty(*v).dtype == crate::ir::DType::I32);
    let flat: Vec<f32> = x
        .iter()
        .flatten()
        .map(|v| data.normalize.as_ref().map_or(*v, |(n, _)| n.eval(*v)) as f32)
        .collect();
    let flat_ids: Vec<i32> = x.iter().flatten().map(|&v| v as i32).collect();
    let feed = if ids {
        Feed::I32(&flat_ids)
    } else {
        Feed::F32(&flat)
    };
    exec.run(x.len(), &[feed], &param_data, StepCtx::default())
        .map_err(CliError::internal)?;
    let out = exec
        .output("output")
        .ok_or_else(|| CliError::internal("the model graph has no output"))?;
    let width = out.len() / x.len();
    // A classifier of sequences shows the class it predicts at each position, as its
    // targets are written, rather than every logit.
    let classes = g
        .output("output")
        .map(|o| g.ty(o))
        .filter(|t| spec.classification && t.dims.len() == 2)
        .map(|t| t.last());
    // Runs are usually named after their model (`train Xor on xor`): then the name once.
    if spec.name == spec.model {
        println!("\n{} after training:", spec.model);
    } else {
        println!("\n{} after run `{}`:", spec.model, spec.name);
    }
    // Without a `test:` source, `split` holds out the last rows (as `data::load` cuts them):
    // XOR's fourth row at `split: 0.9`. They were not trained on, which the table says.
    let trained = match data.test {
        None if data.split < 1.0 => crate::runtime::data::kept_by_split(x.len(), data.split),
        _ => x.len(),
    };
    for (i, (xi, yi)) in x.iter().zip(y).enumerate() {
        let row = &out[i * width..(i + 1) * width];
        let o: Vec<String> = match classes {
            Some(k) => row
                .chunks(k.max(1))
                .map(|l| argmax(l).to_string())
                .collect(),
            None => row.iter().map(|v| format!("{v:.4}")).collect(),
        };
        let xi: Vec<String> = xi.iter().map(|v| format!("{v}")).collect();
        let yi: Vec<String> = yi.iter().map(|v| format!("{v}")).collect();
        let held_out = if i >= trained {
            "   (held out by `split`: the test split)"
        } else {
            ""
        };
        println!(
            "  input {} → output {}   target {}{held_out}",
            abbreviated(&xi),
            abbreviated(&o),
            abbreviated(&yi)
        );
    }
    Ok(())
}

/// `[a, b, c]`, or for more than 8 values the first and last three around `…`,
/// and how many there are (`[0, 0, 0.5, …, 1, 0, 0] (784 values)`), as numpy abbreviates.
fn abbreviated(values: &[String]) -> String {
    const SHOWN_IN_FULL: usize = 8;
    const ENDS: usize = 3;
    if values.len() <= SHOWN_IN_FULL {
        return format!("[{}]", values.join(", "));
    }
    let (head, tail) = (&values[..ENDS], &values[values.len() - ENDS..]);
    format!(
        "[{}, …, {}] ({} values)",
        head.join(", "),
        tail.join(", "),
        values.len()
    )
}

/// `path` as one word of a POSIX shell's command line: as it is where no character of it means
/// anything to the shell, else in single quotes (each `'` in it written `'\''`); a name that is
/// not UTF-8 as [`Path::display`] shows it.
fn shell_word(path: &Path) -> String {
    let s = path.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./,:=+@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::{abbreviated, shell_word};
    use std::path::Path;

    /// A path the shell would split or expand is quoted; a plain one is left as typed.
    #[test]
    fn paths_in_a_printed_command_are_single_shell_words() {
        assert_eq!(shell_word(Path::new("runs/x.Xor.st")), "runs/x.Xor.st");
        assert_eq!(shell_word(Path::new("my runs/x.st")), "'my runs/x.st'");
        assert_eq!(shell_word(Path::new("it's $HOME")), r"'it'\''s $HOME'");
        assert_eq!(shell_word(Path::new("")), "''");
    }

    /// XOR's two inputs are shown as they are; a small image's 297 values by their ends.
    #[test]
    fn long_rows_are_abbreviated_and_short_ones_shown_whole() {
        let row = |n: usize| -> Vec<String> { (0..n).map(|v| v.to_string()).collect() };
        assert_eq!(abbreviated(&row(2)), "[0, 1]");
        assert_eq!(abbreviated(&row(8)), "[0, 1, 2, 3, 4, 5, 6, 7]");
        assert_eq!(abbreviated(&row(9)), "[0, 1, 2, …, 6, 7, 8] (9 values)");
        assert_eq!(
            abbreviated(&row(297)),
            "[0, 1, 2, …, 294, 295, 296] (297 values)"
        );
    }
}
