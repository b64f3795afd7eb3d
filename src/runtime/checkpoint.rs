//! Checkpoints as safetensors files: one F32 tensor per parameter, named by its path, shaped by
//! its dims. Optimizer state rides along under reserved names (`__optim.<path>.<i>`, and the step
//! count as I64 `__step`) so that training can be resumed; the rest of what resuming needs (run
//! name, epoch, position in the epoch: see `runtime::train::resume`) is string metadata in the
//! safetensors header. Writes are atomic (a new temporary file `.<file>.<pid>.<n>.tmp` beside it,
//! fsync of the file, rename, fsync of the folder: see `runtime::atomic`); reads validate names,
//! shapes and dtypes and never panic on a corrupt file.

use crate::ir::Param;
use safetensors::tensor::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Name of the step counter.
pub const STEP: &str = "__step";

/// Name of optimizer state buffer `i` of parameter `path`.
pub fn optim_name(path: &str, i: usize) -> String {
    format!("__optim.{path}.{i}")
}

/// Whether `file` is named as a checkpoint nnc writes: `.safetensors`, or its short form `.st`
/// (a `.pt` or `.ckpt` file would be taken by other tools for a pickle they cannot read).
pub fn is_checkpoint_name(file: &str) -> bool {
    file.ends_with(".safetensors") || file.ends_with(".st")
}

/// `file` renamed as a checkpoint: `../runs/net.pt` → `../runs/net.safetensors` (the text
/// before the first `.` was taken, which gave `.safetensors`); a folder (`runs/`, `..`, or one
/// that exists) gets a file in it.
pub fn checkpoint_name_for(file: &str) -> String {
    if file.is_empty() || file.ends_with('/') {
        return format!("{file}model.safetensors");
    }
    // `.`, `..`, or a folder that exists: a file in it.
    let path = Path::new(file);
    if path.file_name().is_none() || path.is_dir() {
        return path.join("model.safetensors").display().to_string();
    }
    Path::new(file)
        .with_extension("safetensors")
        .display()
        .to_string()
}

/// What [`CheckpointError::Missing`] adds: the tensors the checkpoint holds beside the one
/// missing (the first four), and for PyTorch's names of a recurrent layer's, what nnc calls
/// them.
fn held_beside(tensors: &[String]) -> String {
    if tensors.is_empty() {
        return String::new();
    }
    let shown: Vec<String> = tensors.iter().take(4).map(|t| format!("`{t}`")).collect();
    let more = match tensors.len() - shown.len() {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    let torch = tensors
        .iter()
        .any(|t| t.contains(".weight_ih_l") || t.contains(".weight_hh_l"));
    let names = if torch {
        "; those are PyTorch's names: nnc's `w_xh` is `weight_ih_l0` transposed, `w_hh` \
         `weight_hh_l0` transposed, and an rnn's or lstm's `bias` the sum of `bias_ih_l0` and \
         `bias_hh_l0` (spec §5)"
    } else {
        ""
    };
    format!("; beside it, it holds {}{more}{names}", shown.join(", "))
}

/// Metadata key of a text run's vocabulary: its characters in id order. A checkpoint read with
/// another text's vocabulary (same size, other characters) would map every id to another
/// character; those that record one are checked ([`check_vocab`]).
pub const VOCAB: &str = "nnc.vocab";

/// Metadata key of the step whose parameters a checkpoint holds, where that is not the step it
/// was written after (`__step`, from which a resumed run goes on): `restore_best: true` put
/// back an earlier evaluation's. `nnc eval` reports its evaluation at that step, where the
/// training log has it.
pub const PARAMS_STEP: &str = "nnc.params_step";

/// Metadata key of early stopping's count (the best value, its step, the evaluations since),
/// which `--resume` takes back so that the run stops where an uninterrupted one does.
pub const EARLY_STOPPING: &str = "nnc.early_stopping";

/// Metadata key of a plateau schedule's state (the rate it has come to, the best value, its
/// step, the evaluations counted since, the cooldown left), which `--resume` takes back so that
/// the run lowers its rate where an uninterrupted one does.
pub const PLATEAU: &str = "nnc.plateau";

/// Metadata key of the best evaluation so far of a run with `restore_best: true`, whose
/// parameters the checkpoint holds under `__best.`.
pub const BEST_EVAL: &str = "nnc.best_eval";

/// The step whose parameters `ck` holds: the one [`PARAMS_STEP`] records, else the one it was
/// written after.
pub fn params_step(ck: &Checkpoint) -> Option<u64> {
    ck.meta
        .get(PARAMS_STEP)
        .and_then(|s| s.parse().ok())
        .or(ck.step)
}

/// Refuses `ck` when it records a vocabulary ([`VOCAB`]) other than `vocab`, the one of the
/// text it is about to be used with (`data`, the data block's name).
pub fn check_vocab(ck: &Checkpoint, vocab: &[char], data: &str) -> Result<(), String> {
    let Some(recorded) = ck.meta.get(VOCAB) else {
        return Ok(());
    };
    let now: String = vocab.iter().collect();
    if *recorded == now {
        return Ok(());
    }
    let (was, is): (Vec<char>, Vec<char>) = (recorded.chars().collect(), now.chars().collect());
    // Another number of characters is another number of classes than the model's, which
    // `train`, `eval` and `sample` refuse as such.
    match (0..was.len().min(is.len())).find(|&i| was[i] != is[i]) {
        Some(i) if was.len() == is.len() => Err(format!(
            "checkpoint {}: id {i} was {:?} in the text it was trained on, but is {:?} in the \
             text of data `{data}`, so its ids would stand for other characters (use the text it \
             was trained on, or train on this one)",
            ck.path.display(),
            was[i],
            is[i]
        )),
        _ => Ok(()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {} not found{}", .path.display(), per_run_hint(.per_run))]
    NotFound {
        path: PathBuf,
        /// Files beside it named `<stem>.<run>.<ext>`, which `nnc train --checkpoint PATH`
        /// writes instead of PATH when it trains several runs.
        per_run: Vec<String>,
    },
    #[error("cannot read checkpoint {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A folder given where a checkpoint file was expected, with the checkpoints in it.
    #[error("checkpoint {} is a folder, not a file: {}", .path.display(), folder_hint(.inside))]
    Folder { path: PathBuf, inside: Vec<String> },
    #[error("cannot write checkpoint {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {} is not a valid safetensors file: {msg}", .path.display())]
    Corrupt { path: PathBuf, msg: String },
    #[error("checkpoint {} has no tensor `{name}` {expected}", .path.display())]
    Missing {
        path: PathBuf,
        name: String,
        /// The dtype and shape expected (`(expected f32 [2, 4])`), then what the checkpoint
        /// holds under the same layer ([`held_beside`]): as text, which keeps the error small.
        expected: String,
    },
    #[error("checkpoint {}: tensor `{name}` has shape {found:?}, expected {expected:?}", .path.display())]
    Shape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("checkpoint {}: tensor `{name}` has dtype {found}, expected {expected}", .path.display())]
    DType {
        path: PathBuf,
        name: String,
        expected: &'static str,
        found: String,
    },
    #[error("checkpoint {}: its step count `{STEP}` is {step}, and a number of steps cannot be negative", .path.display())]
    NegativeStep { path: PathBuf, step: i64 },
    /// A NaN or infinity where a parameter or optimizer state is read: training from it would
    /// carry it into every later value (or, with a NaN that the loss does not reach, hide it).
    #[error("checkpoint {}: tensor `{name}` holds {value} at index {index}; parameters and optimizer state must be finite", .path.display())]
    NonFinite {
        path: PathBuf,
        name: String,
        /// The first bad element, as `[i, j, …]`.
        index: String,
        value: f32,
    },
}

/// What to give instead of a folder: the checkpoints in it (the first few), or what one is.
fn folder_hint(inside: &[String]) -> String {
    const SHOWN: usize = 3;
    match inside {
        [] => "give the path of a checkpoint file (`.safetensors` or `.st`, as `nnc train \
               --checkpoint` writes)"
            .into(),
        [one] => format!("give the checkpoint file in it, {one}"),
        _ => {
            let mut names = inside[..inside.len().min(SHOWN)].join(", ");
            if inside.len() > SHOWN {
                names += &format!(" and {} more", inside.len() - SHOWN);
            }
            format!("give one of the checkpoint files in it: {names}")
        }
    }
}

/// The first NaN or infinity of `data`, laid out row-major in `dims`: its index, written
/// `[i, j, …]`, and its value.
pub fn first_non_finite(dims: &[usize], data: &[f32]) -> Option<(String, f32)> {
    let k = data.iter().position(|v| !v.is_finite())?;
    let mut index = Vec::with_capacity(dims.len());
    if dims.iter().product::<usize>() == data.len() {
        let mut rest = k;
        for &d in dims.iter().rev() {
            index.push(rest % d.max(1));
            rest /= d.max(1);
        }
        index.reverse();
    } else {
        index.push(k);
    }
    let index: Vec<String> = index.iter().map(usize::to_string).collect();
    Some((format!("[{}]", index.join(", ")), data[k]))
}

/// A tensor to write: borrowed, so saving copies nothing but the bytes.
pub struct Saved<'a> {
    pub name: String,
    pub dims: &'a [usize],
    pub data: &'a [f32],
}

struct F32View<'a>(&'a [usize], &'a [f32]);

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.0
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.1.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.1.len() * 4
    }
}

struct I64View([usize; 1], [u8; 8]);

impl View for I64View {
    fn dtype(&self) -> Dtype {
        Dtype::I64
    }
    fn shape(&self) -> &[usize] {
        &self.0
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.1)
    }
    fn data_len(&self) -> usize {
        8
    }
}

enum AnyView<'a> {
    F32(F32View<'a>),
    I64(I64View),
}

impl View for AnyView<'_> {
    fn dtype(&self) -> Dtype {
        match self {
            AnyView::F32(v) => v.dtype(),
            AnyView::I64(v) => v.dtype(),
        }
    }
    fn shape(&self) -> &[usize] {
        match self {
            AnyView::F32(v) => v.shape(),
            AnyView::I64(v) => v.shape(),
        }
    }
    fn data(&self) -> Cow<'_, [u8]> {
        match self {
            AnyView::F32(v) => v.data(),
            AnyView::I64(v) => v.data(),
        }
    }
    fn data_len(&self) -> usize {
        match self {
            AnyView::F32(v) => v.data_len(),
            AnyView::I64(v) => v.data_len(),
        }
    }
}

/// Writes `tensors` (and `step`, when given) to `path` atomically.
pub fn save(path: &Path, tensors: &[Saved<'_>], step: Option<u64>) -> Result<(), CheckpointError> {
    save_with_meta(path, tensors, step, &BTreeMap::new())
}

/// [`save`], with string metadata (key → value) in the file's header (`__metadata__`). With more
/// than one key the file's bytes vary from one write to the next (safetensors writes the map in
/// hash order); one key keeps them reproducible.
pub fn save_with_meta(
    path: &Path,
    tensors: &[Saved<'_>],
    step: Option<u64>,
    meta: &BTreeMap<String, String>,
) -> Result<(), CheckpointError> {
    let werr = |source| CheckpointError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut views: Vec<(String, AnyView<'_>)> = tensors
        .iter()
        .map(|t| (t.name.clone(), AnyView::F32(F32View(t.dims, t.data))))
        .collect();
    if let Some(s) = step {
        views.push((
            STEP.into(),
            AnyView::I64(I64View([1], (s as i64).to_le_bytes())),
        ));
    }
    let info = (!meta.is_empty()).then(|| meta.clone().into_iter().collect());
    let bytes = safetensors::serialize(views, info).map_err(|e| {
        werr(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            e.to_string(),
        ))
    })?;
    super::atomic::write(path, &bytes).map_err(werr)?;
    Ok(())
}

/// An f32 tensor read back.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dims: Vec<usize>,
    pub data: Vec<f32>,
}

/// A checkpoint read from disk.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub path: PathBuf,
    /// Every F32 tensor by name (parameters and optimizer state).
    pub tensors: BTreeMap<String, Tensor>,
    /// Tensors of other dtypes: name → dtype (reported when asked for as parameters).
    pub other: BTreeMap<String, String>,
    pub step: Option<u64>,
    /// The header's string metadata (empty when it has none).
    pub meta: BTreeMap<String, String>,
}

/// The file of run `run` for a checkpoint path `given` shared by several runs:
/// `<stem>.<run>.<ext>` beside it (`ae.st` → `ae.pretrain.st`). [`per_run_siblings`] finds them.
pub fn per_run_path(given: &Path, run: &str) -> PathBuf {
    let mut name = given.file_stem().unwrap_or_default().to_owned();
    name.push(".");
    name.push(run);
    if let Some(ext) = given.extension() {
        name.push(".");
        name.push(ext);
    }
    given.with_file_name(name)
}

/// The path `given` that [`per_run_path`] turned into `file` for run `run`, if `file` is named
/// so (`ae.pretrain.st` of run `pretrain` → `ae.st`).
pub fn shared_path(file: &Path, run: &str) -> Option<PathBuf> {
    // `ck.small` (given `ck`, no extension): the run's name is the extension.
    if file.extension().and_then(|e| e.to_str()) == Some(run) {
        let stem = file.file_stem()?;
        return (!stem.is_empty()).then(|| file.with_file_name(stem));
    }
    let stem = file.file_stem()?.to_str()?;
    let base = stem.strip_suffix(run)?.strip_suffix('.')?;
    if base.is_empty() {
        return None;
    }
    let mut name = base.to_owned();
    if let Some(ext) = file.extension() {
        name.push('.');
        name.push_str(ext.to_str()?);
    }
    Some(file.with_file_name(name))
}

/// The names of the files beside `path` that [`per_run_path`] gives it for some run, sorted.
fn per_run_siblings(path: &Path) -> Vec<String> {
    let (Some(stem), Some(name)) = (path.file_stem(), path.file_name()) else {
        return Vec::new();
    };
    let (stem, name) = (stem.to_string_lossy(), name.to_string_lossy());
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| {
            f != &*name
                && f.strip_prefix(&format!("{stem}."))
                    .and_then(|rest| rest.strip_suffix(&ext))
                    .is_some_and(|run| !run.is_empty() && !run.contains('.'))
        })
        .collect();
    found.sort();
    found
}

fn per_run_hint(per_run: &[String]) -> String {
    if per_run.is_empty() {
        return String::new();
    }
    format!(
        "; beside it: {} (one file a run, as `nnc train --checkpoint` writes them when it trains several runs)",
        per_run.join(", ")
    )
}

impl Checkpoint {
    /// Writes its f32 tensors, step and metadata to `path` (atomically, as training does): a
    /// checkpoint read, changed and written back.
    pub fn save_to(&self, path: &Path) -> Result<(), CheckpointError> {
        let saved: Vec<Saved<'_>> = self
            .tensors
            .iter()
            .map(|(name, t)| Saved {
                name: name.clone(),
                dims: &t.dims,
                data: &t.data,
            })
            .collect();
        save_with_meta(path, &saved, self.step, &self.meta)
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Checkpoint, CheckpointError> {
        if path.is_dir() {
            let mut inside: Vec<String> = std::fs::read_dir(path)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file() && is_checkpoint_name(&p.to_string_lossy()))
                .map(|p| p.display().to_string())
                .collect();
            inside.sort();
            return Err(CheckpointError::Folder {
                path: path.to_path_buf(),
                inside,
            });
        }
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => CheckpointError::NotFound {
                path: path.to_path_buf(),
                per_run: per_run_siblings(path),
            },
            _ => CheckpointError::Read {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
        Checkpoint::from_bytes(path, &bytes)
    }

    /// Parses the bytes of a safetensors file; `path` names it in errors and in the result.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        let mut ck = Checkpoint {
            path: path.to_path_buf(),
            tensors: BTreeMap::new(),
            other: BTreeMap::new(),
            step: None,
            meta: BTreeMap::new(),
        };
        if let Ok((_, m)) = SafeTensors::read_metadata(bytes) {
            if let Some(m) = m.metadata() {
                ck.meta = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            }
        }
        for (name, view) in st.iter() {
            match view.dtype() {
                Dtype::F32 => {
                    let data = view
                        .data()
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    ck.tensors.insert(
                        name.to_string(),
                        Tensor {
                            dims: view.shape().to_vec(),
                            data,
                        },
                    );
                }
                Dtype::I64 if name == STEP && view.data().len() == 8 => {
                    let step = i64::from_le_bytes(view.data().try_into().unwrap_or([0; 8]));
                    // Taken as 0, a negative count would be reported as a mismatch with a step
                    // the file does not hold.
                    let step = u64::try_from(step).map_err(|_| CheckpointError::NegativeStep {
                        path: path.to_path_buf(),
                        step,
                    })?;
                    ck.step = Some(step);
                }
                d => {
                    ck.other.insert(name.to_string(), format!("{d:?}"));
                }
            }
        }
        Ok(ck)
    }

    /// The names of the tensors it holds under the layer of tensor `name` (`lstm1.` for
    /// `lstm1.w_xh`), sorted.
    fn under_layer_of(&self, name: &str) -> Vec<String> {
        let Some((layer, _)) = name.rsplit_once('.') else {
            return Vec::new();
        };
        let under = format!("{layer}.");
        let mut held: Vec<String> = self
            .tensors
            .keys()
            .chain(self.other.keys())
            .filter(|t| t.starts_with(&under))
            .cloned()
            .collect();
        held.sort();
        held
    }

    /// Tensor `name`, which must be f32 with shape `dims` and hold only finite values.
    pub fn get(&self, name: &str, dims: &[usize]) -> Result<&Tensor, CheckpointError> {
        let path = self.path.clone();
        match self.tensors.get(name) {
            Some(t) if t.dims == dims => match first_non_finite(&t.dims, &t.data) {
                Some((index, value)) => Err(CheckpointError::NonFinite {
                    path,
                    name: name.into(),
                    index,
                    value,
                }),
                None => Ok(t),
            },
            Some(t) => Err(CheckpointError::Shape {
                path,
                name: name.into(),
                expected: dims.to_vec(),
                found: t.dims.clone(),
            }),
            None => match self.other.get(name) {
                Some(d) => Err(CheckpointError::DType {
                    path,
                    name: name.into(),
                    expected: "F32",
                    found: d.clone(),
                }),
                None => Err(CheckpointError::Missing {
                    path,
                    name: name.into(),
                    expected: format!(
                        "(expected f32 {dims:?}){}",
                        held_beside(&self.under_layer_of(name))
                    ),
                }),
            },
        }
    }

    /// Every parameter of `params` (looked up as `<strip>`-less paths: a param `teacher.x` with
    /// `strip = "teacher."` reads tensor `x`), in order; any missing or misshapen one is an error.
    pub fn params_for(
        &self,
        params: &[&Param],
        strip: &str,
    ) -> Result<Vec<Vec<f32>>, CheckpointError> {
        params
            .iter()
            .map(|p| {
                let name = p.path.strip_prefix(strip).unwrap_or(&p.path);
                self.get(name, &p.dims).map(|t| t.data.clone())
            })
            .collect()
    }
}

/// Every parameter of `params` from the checkpoint at `path` (for `eval`, `predict`, `sample`).
pub fn load_params(path: &Path, params: &[Param]) -> Result<Vec<Vec<f32>>, CheckpointError> {
    Checkpoint::load(path)?.params_for(&params.iter().collect::<Vec<_>>(), "")
}

#[cfg(test)]
mod name_tests {
    use super::*;

    /// A suggested name keeps the folder, and a folder gets a file in it (`..` was told `..`).
    #[test]
    fn a_checkpoint_name_is_suggested_for_files_and_folders() {
        assert_eq!(
            checkpoint_name_for("../runs/net.pt"),
            "../runs/net.safetensors"
        );
        assert_eq!(checkpoint_name_for("runs/"), "runs/model.safetensors");
        assert_eq!(checkpoint_name_for(".."), "../model.safetensors");
        let here = std::env::temp_dir();
        let dir = here.display().to_string();
        assert_eq!(
            checkpoint_name_for(&dir),
            here.join("model.safetensors").display().to_string()
        );
        assert!(is_checkpoint_name("a.st") && is_checkpoint_name("a.safetensors"));
        assert!(!is_checkpoint_name("a.pt"));
    }
}
