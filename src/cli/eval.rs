//! `nnc eval FILE --checkpoint PATH`: loss and accuracy of trained parameters on the test split
//! of a run's data, with the run's evaluation graph (no dropout).

use super::outputs::{refuse_log, Log, Named};
use super::predict::{another_writer, writer};
use super::{source, train, CliError, CliResult};
use crate::runtime::checkpoint::{check_vocab, Checkpoint, Tensor, VOCAB};
use crate::runtime::train::{
    eval_fields, evaluate_run, loss_text, resume, teacher_params, TrainError, TrainOptions, TEACHER,
};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// The `.nn` file.
    pub file: PathBuf,
    /// The trained parameters (safetensors, as written by `nnc train --checkpoint`).
    #[arg(long, value_name = "PATH")]
    pub checkpoint: PathBuf,
    /// The run whose data, loss and model to use (default: the run that wrote the checkpoint,
    /// as its header names it, else the file's last run).
    #[arg(long, value_name = "NAME")]
    pub run: Option<String>,
    /// Where the data files named in the .nn file are looked for (default: the file's folder).
    #[arg(long, value_name = "DIR", value_parser = super::data_folder())]
    pub data_dir: Option<PathBuf>,
    /// Worker threads (default: all cores; a larger number is capped at the core count).
    #[arg(long, allow_negative_numbers = true, value_name = "N", value_parser = super::thread_count)]
    pub threads: Option<usize>,
    /// Append one JSON object to this file (created if missing): the run's evaluation, with the
    /// keys of `nnc train --log-json`'s evaluation lines (and its `split` and `checkpoint`).
    #[arg(long, value_name = "PATH")]
    pub log_json: Option<PathBuf>,
}

pub fn run(args: &EvalArgs) -> CliResult {
    let loaded = source::load(&args.file)?;
    let p = &loaded.program;
    // An unknown `--run` is refused before any file is read.
    let named = match &args.run {
        Some(n) => Some(
            p.run(n)
                .ok_or_else(|| CliError::user(crate::check::unknown_run(p, n, &args.file)))?,
        ),
        None => None,
    };
    let mut ck = Checkpoint::load(&args.checkpoint).map_err(CliError::user)?;
    let spec = named
        .or_else(|| writer(p, &ck).or(p.runs.last()))
        .ok_or_else(|| CliError::user(format!("{} has no `train` block", args.file.display())))?;
    let data_dir = args.data_dir.clone().unwrap_or_else(|| loaded.dir());
    // Refused before any work, opened once there is a record to write: an evaluation that
    // fails leaves no empty log behind.
    if let Some(l) = &args.log_json {
        let read = [
            Named::new("the .nn file", &args.file),
            Named::new("`--checkpoint`", &args.checkpoint),
        ];
        refuse_log(l, &[&read, &loaded.data_files(spec, &data_dir)])?;
    }
    // The step whose parameters the checkpoint holds (that it was written after, or the best
    // evaluation's that `restore_best` put back), and its epoch (from 1) where it records its
    // position in the run.
    let step = crate::runtime::checkpoint::params_step(&ck);
    let epoch = resume::Position::from_checkpoint(&ck)
        .ok()
        .zip(step.filter(|s| *s > 0))
        .map(|(a, s)| (s - 1) / a.batches_per_epoch.max(1) + 1);
    // Every parameter the student needs, named with the file and the shape expected.
    for t in spec.eval_graph.params.iter() {
        if !t.path.starts_with(TEACHER) {
            ck.get(&t.path, &t.dims).map_err(|e| {
                CliError::user(format!("{e}{}", another_writer(p, &ck, &spec.model, "run")))
            })?;
        }
    }
    let mut params = std::mem::take(&mut ck.tensors);
    // A distillation loss needs the teacher's parameters too: read as `train --checkpoint`
    // reads them, from the teacher run's file beside this one (`d.big.st` beside `d.small.st`
    // or `d.st`), else from the teacher run's `checkpoint:`.
    let options = TrainOptions {
        data_dir,
        base_dir: loaded.dir(),
        quiet: true,
        threads: args.threads,
        checkpoint: Some(args.checkpoint.clone()),
        ..TrainOptions::default()
    };
    let g = &spec.eval_graph;
    for (i, data) in
        teacher_params(p, spec, g, &options, &Default::default()).map_err(train::train_error)?
    {
        let dims = g.params[i].dims.clone();
        params.insert(g.params[i].path.clone(), Tensor { dims, data });
    }
    // A text's characters must be those the checkpoint was trained on (when it records them).
    if ck.meta.contains_key(VOCAB) {
        if let Some(d) = p.data(&spec.data) {
            let vocab = crate::runtime::data::vocabulary(d, &options.data_dir)
                .map_err(|e| loaded.data_error(&spec.name, &e))?;
            if let Some(v) = vocab {
                check_vocab(&ck, &v, &d.name).map_err(CliError::user)?;
            }
        }
    }
    let backend = train::backend(false, args.threads);
    let (r, split) = evaluate_run(p, spec, &backend, &options, &params).map_err(|e| match e {
        TrainError::Data { run, source } => loaded.data_error(&run, &source),
        e => train::train_error(e),
    })?;
    let accuracy = r
        .accuracy
        .map_or(String::new(), |a| format!(", accuracy {:.2}%", 100.0 * a));
    println!(
        "run {}: {split} loss {} on {} samples{accuracy}",
        spec.name,
        loss_text(r.loss),
        r.samples
    );
    if split == "train" {
        println!("(the data holds no test samples: this is the training split)");
    }
    if let Some(l) = &args.log_json {
        Log::open(l, &[])?.write("eval", &spec.name, |o| {
            eval_fields(o, step, epoch, r.samples, Some(r.loss), r.accuracy)?;
            o.str("split", split)?;
            o.str("checkpoint", &args.checkpoint.to_string_lossy())?;
            Ok(())
        })?;
    }
    Ok(())
}
