//! The `nnc` command line: one file a subcommand, all sharing [`source::load`] (read, parse,
//! check) and one error type whose variant decides the exit code (0 ok, 1 user error,
//! 2 internal error).

mod bench;
mod check;
mod eval;
mod gradcheck;
mod ir;
mod memory;
#[cfg(feature = "mpi")]
mod mpi;
mod outputs;
mod plot;
mod predict;
mod sample;
mod source;
mod train;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "nnc",
    version,
    about = "A compiler for neural networks: .nn files to native training and inference code"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Parse and check a file; print each model's parameter count and forward FLOPs per sample.
    Check {
        /// The `.nn` file.
        file: PathBuf,
        /// Also print per-graph statistics: nodes, kernels, planned bytes, each convolution's
        /// algorithm and each run's memory footprint.
        #[arg(long)]
        stats: bool,
        /// Refuse runs that need more memory than this (e.g. 512M, 2G; default: what is
        /// available).
        #[arg(long, value_name = "SIZE", value_parser = crate::runtime::memory::parse_size)]
        max_memory: Option<u64>,
    },
    /// Print the program after a stage of the pipeline.
    Ir {
        /// The `.nn` file.
        file: PathBuf,
        /// ast | ir | grad | opt | fused | plan | clif | asm
        #[arg(long, value_name = "STAGE", default_value = "ir")]
        stage: ir::Stage,
        /// Only this model or run.
        #[arg(long, value_name = "NAME")]
        only: Option<String>,
    },
    /// Train: run the file's `train` blocks in order (or one with `--run`).
    Train(train::TrainArgs),
    /// Compare the JIT backward pass with finite differences for every trainable parameter.
    Gradcheck(gradcheck::GradcheckArgs),
    /// Loss and accuracy of trained parameters on the test split (on the training split, said
    /// so, when the data holds no test samples).
    Eval(eval::EvalArgs),
    /// Measure compile time, training throughput and inference latency.
    Bench(bench::BenchArgs),
    /// Run a trained model on inputs (IDX images, CSV rows, a PGM image): its most probable
    /// classes, or its output values for a model that does not classify.
    Predict(predict::PredictArgs),
    /// Generate text with a trained character-level model.
    Sample(sample::SampleArgs),
    /// Draw the loss and accuracy curves of a `--log-json` log as an SVG.
    Plot(plot::PlotArgs),
}

/// The value parser of a count that must be at least 1 (`--steps`, `--epochs`,
/// `--checkpoint-every`, `gradcheck --batch`): 0 is refused with the command line rather than
/// run on nothing, saying so (clap's range check said "0 is not in 1..18446744073709551615").
fn positive_count<T: TryFrom<u64>>(s: &str) -> Result<T, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => T::try_from(n).map_err(|_| format!("{n} is too large")),
        Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => Err("too large".into()),
        // `-1`, `-0.5`: a number, but below 1.
        Err(_) if s.trim().parse::<f64>().is_ok_and(|v| v < 1.0) => {
            Err("must be at least 1".into())
        }
        Err(_) if s.trim().is_empty() => Err("a whole number is needed".into()),
        Err(_) => Err(format!("`{s}` is not a whole number")),
    }
}

/// [`positive_count`] for `--steps` and `--epochs`: at most 2^31, as `steps:` and `epochs:` in a
/// file (`--epochs` times the batches of an epoch would otherwise wrap around in 64 bits).
fn step_count(s: &str) -> Result<u64, String> {
    let n: u64 = positive_count(s)?;
    match n > crate::check::MAX_STEPS {
        true => Err("at most 2^31 (2,147,483,648), as `steps:` and `epochs:` in a file".into()),
        false => Ok(n),
    }
}

/// Parses `--threads` (`train`, `eval`, `bench`): at least 1, and a count above the machine's
/// cores lowered to it. The worker pool has a thread a core (`codegen::workers`), so more
/// would not run at once: they would only cut the work finer and multiply the per-thread
/// scratch buffers (the character RNN asked for 7 GB of them at `--threads 100000`).
fn thread_count(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of threads"))?;
    if n == 0 {
        return Err("at least 1 thread is needed".into());
    }
    Ok(n.min(train::threads(None)))
}

/// The value parser of `--data-dir` (`train`, `eval`, `bench`, `predict`, `sample`): a folder
/// that exists. A mistyped folder would otherwise surface only as a data file not found in it,
/// which sends the user looking at the file rather than at the folder.
fn data_folder() -> impl clap::builder::TypedValueParser<Value = PathBuf> {
    use clap::builder::TypedValueParser;
    clap::builder::PathBufValueParser::new().try_map(|dir| match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => Ok(dir),
        Ok(_) => Err("a file, not a folder".to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("no such folder".to_string()),
        Err(e) => Err(format!("cannot read the folder: {e}")),
    })
}

/// What went wrong, and therefore the exit code.
#[derive(Debug)]
pub enum CliError {
    /// The user's input is wrong (exit 1). Already rendered for the terminal.
    User(String),
    /// nnc itself failed (exit 2).
    Internal(String),
    /// Stopped by Ctrl-C after saving what is needed to go on (exit 130, the shell's code for
    /// SIGINT). The message says how to resume.
    Interrupted(String),
}

impl CliError {
    /// A user error with no place in the `.nn` file to point at, rendered as miette renders
    /// the file's diagnostics (in colour when stderr is a terminal).
    pub fn user(msg: impl std::fmt::Display) -> CliError {
        let color = std::io::IsTerminal::is_terminal(&std::io::stderr());
        CliError::User(crate::diag::render_message(&msg.to_string(), color))
    }
    pub fn internal(msg: impl std::fmt::Display) -> CliError {
        CliError::Internal(format!("internal error: {msg}"))
    }
}

pub type CliResult = Result<(), CliError>;

/// Runs `command`, turning a panic (a bug in nnc: bad input has errors of its own) into an
/// internal error, so that the process exits with 2 as README says, after the panic's message,
/// rather than with Rust's 101.
fn guarded(command: impl FnOnce() -> CliResult) -> CliResult {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(command)).unwrap_or_else(|payload| {
        let what = match payload.downcast::<String>() {
            Ok(s) => *s,
            Err(payload) => payload.downcast_ref::<&str>().unwrap_or(&"").to_string(),
        };
        Err(CliError::internal(format!("nnc panicked: {what}")))
    })
}

/// Where the setting an unknown option `--name` (or `--name=value`) names is set in the `.nn`
/// file, for the settings users look for on the command line (PyTorch scripts take `--lr`,
/// `--batch-size`). `--epochs`, `--steps`, `--seed`, `--checkpoint` and `--init` are options
/// of `nnc train` and left out: clap's own message about them (on another command) stands.
fn file_setting(option: &str) -> Option<&'static str> {
    let name = option.trim_start_matches('-');
    let name = name.split('=').next().unwrap_or(name);
    Some(match name.replace('-', "_").to_lowercase().as_str() {
        "lr" | "learning_rate" => "the learning rate is set in the file (`optimizer: sgd(lr: 0.1)`)",
        "batch" | "batch_size" | "bs" => "the batch size is set in the file (`batch: 64`)",
        "optimizer" | "optim" => "the optimizer is set in the file (`optimizer: adam(lr: 1e-3)`)",
        "momentum" | "nesterov" => {
            "momentum is an argument of the file's optimizer (`optimizer: sgd(lr: 0.1, momentum: 0.9)`)"
        }
        "weight_decay" | "wd" => {
            "weight decay is an argument of the file's optimizer (`optimizer: adamw(lr: 1e-3, weight_decay: 0.01)`)"
        }
        "betas" | "beta1" | "beta2" | "eps" => {
            "adam's betas and eps are arguments of the file's optimizer (`optimizer: adam(lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8)`)"
        }
        "schedule" | "scheduler" | "lr_schedule" | "lr_scheduler" | "warmup" => {
            "the learning-rate schedule is set in the file (`schedule: cosine(warmup: 100)`)"
        }
        "loss" => "the loss is set in the file (`loss: cross_entropy(output, label)`)",
        "label_smoothing" => {
            "label smoothing is an argument of the file's loss (`loss: cross_entropy(output, label, label_smoothing: 0.1)`)"
        }
        "clip_grad_norm" | "clipnorm" | "max_grad_norm" | "grad_clip" | "clip_grad" => {
            "gradient clipping is set in the file (`clip_grad_norm: 1.0`)"
        }
        "shuffle" | "no_shuffle" => "shuffling is set in the file (`shuffle: false`)",
        "eval" | "eval_every" | "metrics" => {
            "evaluation is set in the file (`eval: every 1 epoch [loss, accuracy]`)"
        }
        "split" | "val_split" | "validation_split" => {
            "the test split is set in the file's data block (`split: 0.9`)"
        }
        "normalize" => "normalization is set in the file's data block (`normalize: x / 255`)",
        "dropout" => "dropout is a layer of the file's model (`|> dropout(0.5)`)",
        "freeze" => "frozen parameters are set in the file (`freeze: encoder`)",
        "teacher" => "the teacher is set in the file (`teacher: big`, an earlier run)",
        _ => return None,
    })
}

/// Clap's error `e` for the command line `args`, where an unknown option names a setting of the
/// `.nn` file ([`file_setting`]) saying where it is set, in place of clap's tip "to pass '--lr'
/// as a value, use '-- --lr'" (which would make `--lr` a second file) or of a similar option
/// (`--lr` is no `--run`). Every other error is clap's own.
fn file_setting_tip(mut e: clap::Error, args: &[std::ffi::OsString]) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let Some(ContextValue::String(option)) = e.get(ContextKind::InvalidArg) else {
        return e;
    };
    let Some(setting) = file_setting(option).filter(|_| e.kind() == ErrorKind::UnknownArgument)
    else {
        return e;
    };
    let cli = <Cli as clap::CommandFactory>::command();
    // `nnc plot` reads a log, not a `.nn` file.
    let command = args
        .iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .find(|a| cli.find_subcommand(a).is_some())
        .filter(|c| *c != "plot");
    let Some(command) = command else {
        return e;
    };
    let option = option.split('=').next().unwrap_or(option);
    let tip = format!("`{option}` is not an option of `nnc {command}`: {setting}");
    e.remove(ContextKind::SuggestedArg);
    e.insert(
        ContextKind::Suggested,
        ContextValue::StyledStrs(vec![tip.into()]),
    );
    e
}

pub fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let e = file_setting_tip(e, &args);
            // --help and --version are not errors; a bad command line is the user's (exit 1).
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = guarded(|| match cli.command {
        Command::Check {
            file,
            stats,
            max_memory,
        } => check::run(&file, stats, max_memory),
        Command::Ir { file, stage, only } => ir::run(&file, stage, only.as_deref()),
        Command::Train(args) => train::run(&args),
        Command::Gradcheck(args) => gradcheck::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Predict(args) => predict::run(&args),
        Command::Sample(args) => sample::run(&args),
        Command::Plot(args) => plot::run(&args),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::User(msg)) => {
            eprint!("{msg}");
            if !msg.ends_with('\n') {
                eprintln!();
            }
            ExitCode::from(1)
        }
        Err(CliError::Internal(msg)) => {
            eprintln!("{msg}");
            eprintln!("This is a bug in nnc; please report it with the file that caused it.");
            ExitCode::from(2)
        }
        Err(CliError::Interrupted(msg)) => {
            eprintln!("{msg}");
            ExitCode::from(130)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{file_setting_tip, guarded, Cli, CliError};
    use clap::Parser;

    /// Clap's message for the command line `line`, after [`file_setting_tip`].
    fn parse_error(line: &str) -> String {
        let args: Vec<std::ffi::OsString> = line.split(' ').map(Into::into).collect();
        let e = Cli::try_parse_from(&args).expect_err(line);
        file_setting_tip(e, &args).to_string()
    }

    /// `--lr` got clap's tip "to pass '--lr' as a value, use '-- --lr'", which would make it a
    /// second file; a setting of the `.nn` file is said to be set there.
    #[test]
    fn an_option_that_is_a_file_setting_says_where_it_is_set() {
        for (line, tip) in [
            (
                "nnc train a.nn --lr 0.1",
                "`--lr` is not an option of `nnc train`: the learning rate is set in the file \
                 (`optimizer: sgd(lr: 0.1)`)",
            ),
            (
                "nnc bench a.nn --batch-size=32",
                "`--batch-size` is not an option of `nnc bench`: the batch size is set in the \
                 file (`batch: 64`)",
            ),
            (
                "nnc train a.nn --optimizer adam",
                "`--optimizer` is not an option of `nnc train`: the optimizer is set in the file",
            ),
        ] {
            let err = parse_error(line);
            assert!(err.contains(tip), "{line}: {err}");
            assert!(!err.contains("as a value"), "{line}: {err}");
        }
    }

    /// Any other unknown option keeps clap's message: its tips, a similar option where there is
    /// one; `nnc plot` reads a log, where no setting is set.
    #[test]
    fn other_unknown_options_keep_clap_s_message() {
        for (line, tip) in [
            (
                "nnc train a.nn --foo",
                "to pass '--foo' as a value, use '-- --foo'",
            ),
            (
                "nnc train a.nn --step 3",
                "a similar argument exists: '--steps'",
            ),
            ("nnc eval a.nn --epochs 3", "to pass '--epochs' as a value"),
            (
                "nnc plot log --out x.svg --lr 1",
                "to pass '--lr' as a value",
            ),
        ] {
            let err = parse_error(line);
            assert!(err.contains(tip), "{line}: {err}");
            assert!(!err.contains("is set in the file"), "{line}: {err}");
        }
    }

    #[test]
    fn a_panic_is_an_internal_error_that_names_it() {
        let message = |r| match r {
            Err(CliError::Internal(m)) => m,
            other => panic!("not an internal error: {other:?}"),
        };
        let n = 3;
        let formatted = message(guarded(|| panic!("kernel {n} failed")));
        assert_eq!(formatted, "internal error: nnc panicked: kernel 3 failed");
        let literal = message(guarded(|| panic!("no kernel")));
        assert_eq!(literal, "internal error: nnc panicked: no kernel");
        assert!(guarded(|| Ok(())).is_ok());
    }
}
