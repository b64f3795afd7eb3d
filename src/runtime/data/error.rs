//! What can go wrong while loading data: every message names the file and what was expected.

use super::file::EXPANSION;
use crate::runtime::memory::human;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("data file `{written}` not found: looked for {} (data dir {})", .path.display(), shown_dir(.dir))]
    NotFound {
        written: String,
        path: PathBuf,
        dir: PathBuf,
    },
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: corrupt gzip stream: {msg}", .path.display())]
    Gzip { path: PathBuf, msg: String },
    #[error("{}: truncated: expected {expected} bytes of {what}, found {found}", .path.display())]
    Truncated {
        path: PathBuf,
        what: String,
        expected: usize,
        found: usize,
    },
    #[error("{}: wrong magic number {found:#010x}{}, expected {expected:#010x} ({what})", .path.display(), idx_kind(*.found))]
    Magic {
        path: PathBuf,
        what: &'static str,
        expected: u32,
        found: u32,
    },
    #[error("{}: {msg}", .path.display())]
    Format { path: PathBuf, msg: String },
    #[error("{} holds {images} images but {} holds {labels} labels", .images_path.display(), .labels_path.display())]
    CountMismatch {
        images_path: PathBuf,
        images: usize,
        labels_path: PathBuf,
        labels: usize,
    },
    #[error("{}:{line}:{column}: {msg}", .path.display())]
    Csv {
        path: PathBuf,
        line: usize,
        column: usize,
        msg: String,
    },
    #[error("{}: the text is empty", .path.display())]
    EmptyText { path: PathBuf },
    #[error("{}: {chars} characters is too short for one window of seq {seq} (+1 for the labels)", .path.display())]
    TextTooShort {
        path: PathBuf,
        chars: usize,
        seq: usize,
    },
    #[error("{}: {}", .path.display(), too_large(*.size, *.gzip, *.limit, *.available))]
    TooLarge {
        path: PathBuf,
        /// The file's size where known before reading it (a plain file).
        size: Option<u64>,
        gzip: bool,
        /// [`super::file::max_file_bytes`] of `available`.
        limit: u64,
        available: Option<u64>,
    },
    #[error(
        "`normalize` turns the input value {input} into {output}: it must give a finite number \
         for every input the data holds"
    )]
    Normalize { input: f64, output: f32 },
    /// A class id outside the model's logits (checked when a classifier's data is loaded).
    #[error(
        "label {label} of {split} sample {sample} is not a class id in 0..{classes} (the model \
         has {classes} outputs)"
    )]
    Label {
        split: &'static str,
        sample: usize,
        label: i32,
        classes: usize,
    },
    /// A target outside [0, 1] for a loss that takes probabilities as targets
    /// (`binary_cross_entropy`, `cross_entropy` of one-hot or soft labels).
    #[error(
        "{what} {value} of {split} sample {sample} is not a probability in [0, 1]: {loss} \
         takes its targets as probabilities"
    )]
    Target {
        /// `label`, or `input value` for a model's input as its own target.
        what: &'static str,
        split: &'static str,
        sample: usize,
        value: f32,
        loss: &'static str,
    },
    #[error("inline data: {0}")]
    Inline(String),
    #[error("data `{data}`: {what} have {found} per sample, but the model expects {expected}")]
    Shape {
        data: String,
        what: &'static str,
        expected: String,
        found: String,
    },
    #[error("data `{data}`: {} value {} of sample {sample} is not {expected}", singular(.what), shown_value(*.value))]
    Value {
        data: String,
        what: &'static str,
        sample: usize,
        value: f64,
        expected: String,
    },
    #[error("data `{data}`: the {split} split is empty")]
    Empty { data: String, split: &'static str },
    /// `split` held out every sample of a small data set.
    #[error("data `{data}`: `split: {split}` keeps none of its {samples} samples for training (it holds out the last {held} as the test split); remove `split` to train on every sample, add a `test:` source, or add samples")]
    SplitKeepsNone {
        data: String,
        split: f64,
        samples: usize,
        held: usize,
    },
}

/// `labels` as the one value's kind: "label value 0.5", not "labels value 0.5".
fn singular(what: &str) -> &str {
    what.strip_suffix('s').unwrap_or(what)
}

/// A value read as f32 as it was written (`0.581`, not its f64 widening `0.5809999704360962`);
/// a whole number, or one f32 cannot hold, in full.
fn shown_value(v: f64) -> String {
    if v.fract() != 0.0 && (v as f32) as f64 == v {
        (v as f32).to_string()
    } else {
        v.to_string()
    }
}

/// A data folder as the user would type it: `.` for the current folder (the folder of a `.nn`
/// file named without one is the empty path, which would print as nothing).
fn shown_dir(dir: &std::path::Path) -> String {
    if dir.as_os_str().is_empty() {
        ".".to_string()
    } else {
        dir.display().to_string()
    }
}

/// What an IDX magic number stands for (` (IDX u8, 1 dim)`), or nothing when it is not one:
/// a label file given for images, or images of another type, is then named as such.
fn idx_kind(magic: u32) -> String {
    let ty = match magic >> 8 {
        0x08 => "u8",
        0x09 => "i8",
        0x0b => "i16",
        0x0c => "i32",
        0x0d => "f32",
        0x0e => "f64",
        _ => return String::new(),
    };
    match magic & 0xff {
        1 => format!(" (IDX {ty}, 1 dim)"),
        n => format!(" (IDX {ty}, {n} dims)"),
    }
}

/// Why a file read whole is refused, and what to do: its size (or that it holds more than the
/// limit, once inflated when gzipped), the limit and the memory it follows.
fn too_large(size: Option<u64>, gzip: bool, limit: u64, available: Option<u64>) -> String {
    let what = "a CSV, text or PGM file";
    let holds = match size {
        Some(s) => format!(
            "holds {}, more than the {} {what} may hold",
            human(s),
            human(limit)
        ),
        None => format!(
            "holds more than {}{}, the most {what} may hold",
            human(limit),
            if gzip { " once inflated" } else { "" }
        ),
    };
    match available {
        Some(a) => format!(
            "{holds} with {} of memory available (parsing one can take {EXPANSION} times \
             its size); use a smaller file, or free memory",
            human(a)
        ),
        None => format!("{holds} where the memory available is unknown; use a smaller file"),
    }
}

impl DataError {
    /// Whether the file could not be found, opened or read (rather than holding something
    /// wrong): then the likely mistake is where it was looked for.
    pub fn is_unreadable_file(&self) -> bool {
        matches!(self, DataError::NotFound { .. } | DataError::Io { .. })
    }
}
