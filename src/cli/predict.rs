//! `nnc predict FILE --checkpoint PATH --input INPUT`: the top classes of a trained model for
//! each sample of an IDX image file, a CSV file or a PGM image, or the model's output values
//! when it does not classify; `--raw`: every output value, at full precision, as CSV rows.

use super::{source, train, CliError, CliResult};
use crate::diag::Diag;
use crate::ir::{ModelIr, Program, RunSpec};
use crate::runtime::checkpoint::{Checkpoint, VOCAB};
use crate::runtime::data::{vocabulary, DataError};
use crate::runtime::predict::{finite_outputs, outputs, predict, read_inputs, PredictError};
use crate::runtime::train::resume;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct PredictArgs {
    /// The `.nn` file.
    pub file: PathBuf,
    /// The trained parameters (safetensors, as written by `nnc train --checkpoint`).
    #[arg(long, value_name = "PATH")]
    pub checkpoint: PathBuf,
    /// An IDX image file (raw or gzipped), a CSV file (one sample per row) or a PGM image.
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Only the sample with this index (0-based) of a file holding several.
    #[arg(long, allow_negative_numbers = true, value_name = "I")]
    pub index: Option<usize>,
    /// The model to run (default: the model of the run that wrote the checkpoint, else of the
    /// file's last run, or its only model).
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// How many classes to show per sample (a model that does not classify shows its output
    /// values instead).
    #[arg(long, allow_negative_numbers = true, value_name = "K", default_value_t = 3, value_parser = top_count)]
    pub top: usize,
    /// Print every output value of each sample at full precision (f32, as it round-trips), one
    /// sample per line, separated by commas (CSV, no header, no sample numbers): the model's
    /// output `output` as it computes it — a classifier's logits (not softmax probabilities,
    /// unless the model ends with `softmax`), every position of a sequence model, row after row.
    #[arg(long, conflicts_with = "top")]
    pub raw: bool,
    /// Also write the outputs as a PGM image, for a model whose output is an image (`[1, H, W]`
    /// or `[H, W]`: an autoencoder's reconstruction): the samples side by side, up to 16 a row
    /// and 256 in all, each value mapped linearly from [min(0, smallest), max(1, largest)] to
    /// 0–255.
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// Where a character model's training text is, for a checkpoint that does not record its
    /// vocabulary (whose characters name the classes shown; default: the file's folder).
    #[arg(long, value_name = "DIR", value_parser = super::data_folder())]
    pub data_dir: Option<PathBuf>,
}

pub fn run(args: &PredictArgs) -> CliResult {
    let loaded = source::load(&args.file)?;
    let p = &loaded.program;
    let (model, ck) = pick_model(p, args.model.as_deref(), &args.file, &args.checkpoint)?;
    let normalize = training_data(p, model).and_then(|d| d.normalize.as_ref());
    let (mut exec, ck) = with_checkpoint(p, model, ck)?;
    let inputs = read_inputs(&args.input, args.index).map_err(|e| {
        // Plain text given to a character model: predict reads ids, sample writes text.
        let ids = model
            .graph
            .inputs()
            .first()
            .is_some_and(|(v, _)| model.graph.ty(*v).dtype == crate::ir::DType::I32);
        match e {
            // Words where ids were expected, not a bad id (`1.5`).
            PredictError::Data(DataError::Csv { ref msg, .. })
                if ids && msg.starts_with("expected a number") =>
            {
                CliError::user(format!(
                "{e} (a model of token ids reads CSV rows of ids; to generate text from a prompt, use `nnc sample`)"
            ))
            }
            e => CliError::user(e),
        }
    })?;
    let first = args.index.unwrap_or(0);
    // What `normalize` made of an input value is shown under its line in the file.
    let fail = |e: PredictError| match (&e, normalize) {
        (PredictError::Data(DataError::Normalize { .. }), Some((_, span))) => {
            let label = format!("while normalizing {}", args.input.display());
            let diag = Diag::new("nnc::data", e.to_string(), *span, label);
            source::render(&loaded.path, &loaded.text, vec![diag])
        }
        _ => CliError::user(e),
    };
    let normalize = normalize.map(|(n, _)| n);
    // `--image` needs an image model, said before anything runs.
    let image = match &args.image {
        Some(path) => Some((
            path,
            image_output(model).ok_or_else(|| not_an_image(model))?,
        )),
        None => None,
    };
    // The output values, computed once for `--raw`, `--image` and a model that does not
    // classify.
    let values = if args.raw || image.is_some() || !ranks_classes(p, model) {
        let outs = outputs(exec.as_mut(), &[], &inputs, normalize).map_err(fail)?;
        finite_outputs(&outs, first).map_err(CliError::user)?;
        Some(outs)
    } else {
        None
    };
    if let (Some((path, (h, w))), Some(outs)) = (image, &values) {
        let shown = &outs[..outs.len().min(MAX_IMAGES)];
        crate::runtime::atomic::write(path, &grid_pgm(shown, h, w))
            .map_err(|e| CliError::user(format!("writing {}: {e}", path.display())))?;
        let of = match outs.len() > shown.len() {
            true => format!(", the first of {} samples", outs.len()),
            false => String::new(),
        };
        eprintln!(
            "wrote {}: {} of {h}×{w}{of}",
            path.display(),
            crate::check::plural(shown.len(), "image"),
        );
    }
    if let (true, Some(outs)) = (args.raw, &values) {
        let mut out = std::io::stdout().lock();
        for o in outs {
            writeln!(out, "{}", raw_values(o)).map_err(CliError::user)?;
        }
        return out.flush().map_err(CliError::user);
    }
    if !ranks_classes(p, model) {
        for (i, o) in values.iter().flatten().enumerate() {
            println!("sample {}: {}", first + i, show_values(o));
        }
        return Ok(());
    }
    let ranked = predict(exec.as_mut(), &[], &inputs, normalize, args.top).map_err(fail)?;
    let dir = args.data_dir.clone().unwrap_or_else(|| loaded.dir());
    let vocab = characters(p, model, &dir, &ck);
    for (i, top) in ranked.iter().enumerate() {
        let classes: Vec<String> = top
            .iter()
            .map(|&(c, prob)| match vocab.as_ref().and_then(|v| v.get(c)) {
                Some(ch) => format!("{ch:?} (id {c}, {:.1}%)", 100.0 * prob),
                None => format!("{c} ({:.1}%)", 100.0 * prob),
            })
            .collect();
        println!("sample {}: {}", first + i, classes.join("  "));
    }
    Ok(())
}

/// Whether the model's output is class scores, to rank by softmax probability: more than one
/// per row, and the run that trains the model (if any) compares classes. A single value (a
/// sigmoid's probability, a regression's estimate) ranked as a "class" would always be class 0
/// at 100%; neither do a regression's or a reconstruction's values mean classes.
fn ranks_classes(p: &Program, model: &ModelIr) -> bool {
    let g = &model.graph;
    let per_row = g.output("output").map_or(1, |o| g.ty(o).last());
    per_row > 1
        && p.runs
            .iter()
            .rev()
            .find(|r| r.model == model.name)
            .is_none_or(|r| r.classification)
}

/// The most images `--image` writes (16 rows of 16); `--index` picks one sample of a larger file.
const MAX_IMAGES: usize = 256;

/// The refusal of `--image` for a model whose output is not an image, naming its shape.
fn not_an_image(model: &ModelIr) -> CliError {
    let g = &model.graph;
    let dims = (g.output("output"))
        .map(|o| g.ty(o).dims.clone())
        .unwrap_or_default();
    CliError::user(format!(
        "`--image` writes outputs that are images, [1, H, W] or [H, W]; model `{}` outputs \
         {dims:?} a sample",
        model.name
    ))
}

/// The height and width of `model`'s output when it is one image a sample: `[1, H, W]` or
/// `[H, W]`, each side at least 2.
fn image_output(model: &ModelIr) -> Option<(usize, usize)> {
    let g = &model.graph;
    match g.ty(g.output("output")?).dims[..] {
        [1, h, w] | [h, w] if h > 1 && w > 1 => Some((h, w)),
        _ => None,
    }
}

/// The images `outs` (each h×w, row-major) as one binary PGM, side by side, up to 16 a row
/// with a column of grey between them: every value mapped linearly from [min(0, smallest),
/// max(1, largest)] to 0–255, so that outputs in [0, 1] (a sigmoid's) keep their grey levels.
fn grid_pgm(outs: &[Vec<f32>], h: usize, w: usize) -> Vec<u8> {
    const PER_ROW: usize = 16;
    const GAP: u8 = 128;
    let cols = outs.len().clamp(1, PER_ROW);
    let rows = outs.len().div_ceil(PER_ROW).max(1);
    let (gw, gh) = (cols * (w + 1) - 1, rows * (h + 1) - 1);
    let values = outs.iter().flatten();
    let lo = values.clone().fold(0f32, |a, &v| a.min(v));
    let hi = values.fold(1f32, |a, &v| a.max(v));
    let mut pixels = vec![GAP; gw * gh];
    for (k, o) in outs.iter().enumerate() {
        let (top, left) = ((k / PER_ROW) * (h + 1), (k % PER_ROW) * (w + 1));
        for (i, v) in o.iter().enumerate() {
            let grey = ((v - lo) / (hi - lo) * 255.0).round() as u8;
            pixels[(top + i / w) * gw + left + i % w] = grey;
        }
    }
    let mut bytes = format!("P5\n{gw} {gh}\n255\n").into_bytes();
    bytes.extend(pixels);
    bytes
}

/// An output's values, the first few of a long one.
fn show_values(o: &[f32]) -> String {
    const SHOWN: usize = 10;
    let mut shown: Vec<String> = o.iter().take(SHOWN).map(|v| format!("{v:.4}")).collect();
    if o.len() > SHOWN {
        shown.push(format!("… ({} values)", o.len()));
    }
    shown.join("  ")
}

/// The characters of a character model's classes, when its input is token ids: the vocabulary
/// its checkpoint records (that of the text it was trained on, wherever that text is now), else
/// that of its training text as `nnc sample` reads it (from `dir`), if it has one character per
/// class; otherwise none (classes shown as ids).
fn characters(
    p: &Program,
    model: &ModelIr,
    dir: &std::path::Path,
    ck: &Checkpoint,
) -> Option<Vec<char>> {
    let g = &model.graph;
    let ids = g
        .inputs()
        .first()
        .is_some_and(|(v, _)| g.ty(*v).dtype == crate::ir::DType::I32);
    let classes = g.output("output").map(|o| g.ty(o).last())?;
    if !ids {
        return None;
    }
    let recorded = ck.meta.get(VOCAB).map(|v| v.chars().collect());
    let vocab = match recorded {
        Some(v) => v,
        None => vocabulary(training_data(p, model)?, dir).ok().flatten()?,
    };
    Some(vocab).filter(|v| v.len() == classes)
}

/// An output's values, all of them, comma-separated, each as it round-trips through `f32`
/// (`--raw`).
fn raw_values(o: &[f32]) -> String {
    let all: Vec<String> = o.iter().map(|v| v.to_string()).collect();
    all.join(",")
}

/// `--top`: a number of classes, at least 1 (0 would show nothing).
fn top_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1 (the number of classes shown per sample)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// The model to run and the checkpoint read at `checkpoint`: `name` (`--model`, refused
/// before any file is read when the file has no such model), else the model of the run that
/// wrote the checkpoint when its header names a run of `p`, else that of the file's last run,
/// else the file's only model.
pub fn pick_model<'a>(
    p: &'a Program,
    name: Option<&str>,
    file: &std::path::Path,
    checkpoint: &std::path::Path,
) -> Result<(&'a ModelIr, Checkpoint), CliError> {
    let named = match name {
        Some(n) => Some(p.model(n).ok_or_else(|| {
            let known: Vec<&str> = p.models.iter().map(|m| m.name.as_str()).collect();
            CliError::user(format!(
                "no model named `{n}` in {} (models: {})",
                file.display(),
                known.join(", ")
            ))
        })?),
        None => None,
    };
    let ck = Checkpoint::load(checkpoint).map_err(CliError::user)?;
    let model = named
        .or_else(|| {
            writer(p, &ck)
                .or(p.runs.last())
                .and_then(|r| p.model(&r.model))
        })
        .or(if p.models.len() == 1 {
            p.models.first()
        } else {
            None
        })
        .ok_or_else(|| {
            CliError::user(format!(
                "{} has several models: choose one with --model",
                file.display()
            ))
        })?;
    Ok((model, ck))
}

/// The run of `p` that wrote `ck`, when its header names one (`nnc train` records it).
pub fn writer<'a>(p: &'a Program, ck: &Checkpoint) -> Option<&'a RunSpec> {
    resume::Position::run_of(ck)
        .ok()
        .flatten()
        .and_then(|r| p.run(r))
}

/// For a checkpoint `ck` that lacks a tensor the model `model` needs: the run that wrote it, when
/// its header names one of `p` whose model is another, and how to choose it (`--{option} …`).
pub fn another_writer(p: &Program, ck: &Checkpoint, model: &str, option: &str) -> String {
    match writer(p, ck) {
        Some(w) if w.model != model => {
            let choice = if option == "run" { &w.name } else { &w.model };
            format!(
                "; it was written by run `{}` (model `{}`): choose it with `--{option} {choice}`",
                w.name, w.model
            )
        }
        _ => String::new(),
    }
}

/// The data block of the last run that trains `model` (its vocabulary, its `normalize`).
pub fn training_data<'a>(p: &'a Program, model: &ModelIr) -> Option<&'a crate::ir::DataSpec> {
    p.runs
        .iter()
        .rev()
        .find(|r| r.model == model.name)
        .and_then(|r| p.data(&r.data))
}

/// A JIT executor for the model's inference graph, holding its parameters read from the
/// checkpoint `ck` ([`crate::exec::Executor::hold_params`]: runs are passed no parameters), and
/// the checkpoint's header (its metadata; no tensors).
pub fn with_checkpoint(
    p: &Program,
    model: &ModelIr,
    ck: Checkpoint,
) -> Result<(Box<dyn crate::exec::Executor>, Checkpoint), CliError> {
    let wanted: Vec<_> = model.graph.params.iter().collect();
    let params = ck.params_for(&wanted, "").map_err(|e| {
        CliError::user(format!(
            "{e}{}",
            another_writer(p, &ck, &model.name, "model")
        ))
    })?;
    let mut exec = train::backend(false, Some(1))
        .forward_executor(&model.graph)
        .map_err(CliError::internal)?;
    exec.hold_params(params).map_err(CliError::internal)?;
    let header = Checkpoint {
        tensors: Default::default(),
        ..ck
    };
    Ok((exec, header))
}
