//! `nnc predict`: reading inputs (IDX image files, CSV rows, PGM images), applying the data
//! block's `normalize`, running a model's inference graph and ranking classes by softmax
//! probability (or giving the outputs as they are, for a model that does not classify).

use super::data::{self, idx, DataError, DataFile};
use super::memory;
use crate::exec::{ExecError, Executor, Feed, StepCtx};
use crate::ir::{DType, ScalarExpr};
use std::path::{Path, PathBuf};

/// ` (shape [32, 32])` after the count of values of a sample of several axes (an IDX or PGM
/// image), nothing for a CSV row.
fn found_shape(shape: &[usize]) -> String {
    if shape.len() > 1 {
        format!(" (shape {shape:?})")
    } else {
        String::new()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{}: {msg}", .path.display())]
    Format { path: PathBuf, msg: String },
    #[error(
        "{}: index {index} is out of range: it holds {count} sample{} (`--index` counts from 0)",
        .path.display(),
        if *.count == 1 { "" } else { "s" }
    )]
    Index {
        path: PathBuf,
        index: usize,
        count: usize,
    },
    #[error("a sample has {found} values{}, but the model input {input} expects {expected}{hint}", found_shape(.shape))]
    Shape {
        input: String,
        expected: usize,
        found: usize,
        /// The sample's shape (an image's `[H, W]`), shown when it has several axes.
        shape: Vec<usize>,
        /// What the mismatch suggests, or empty.
        hint: &'static str,
    },
    /// As many values as the input takes, in another layout ([`data::reshapes`]).
    #[error(
        "a sample has shape {found:?}, but the model input {input} takes {expected:?}: as many \
         values, in another layout (read in order, an image's rows would be cut in the wrong \
         places)"
    )]
    Layout {
        input: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error(
        "input value {value} of sample {sample} is not {expected}: the model input {input} \
         takes integer ids"
    )]
    Id {
        input: String,
        sample: usize,
        value: f64,
        /// `an integer`, `within the range of i32`, or what f32 holds exactly.
        expected: &'static str,
    },
    #[error("running the model: {0}")]
    Exec(#[from] ExecError),
    #[error("{0}")]
    Model(String),
    #[error(
        "the model's output for sample {sample} is {value} for class {class}: classes cannot be \
         ranked by values that are not finite (the parameters overflow on this input)"
    )]
    NotFinite {
        sample: usize,
        class: usize,
        value: f32,
    },
    #[error(
        "the model's output for sample {sample} is {value} (value {index} of {len}): the \
         parameters overflow the model on this input"
    )]
    NotFiniteOutput {
        sample: usize,
        index: usize,
        len: usize,
        value: f32,
    },
}

/// Raw samples (before `normalize`), back to back.
#[derive(Clone, Debug, PartialEq)]
pub struct Inputs {
    pub values: Vec<f32>,
    pub count: usize,
    /// The index in the file of the first sample (`--index`), to name a sample by.
    pub first: usize,
    /// Shape of one sample as read (`[28, 28]` for an image, `[n]` for a CSV row).
    pub shape: Vec<usize>,
    /// The first value of a CSV file that f32 cannot hold exactly (a whole number beyond
    /// 2^24), with its place in `values`: as an id it would be rounded into another id.
    pub inexact: Option<(usize, f64)>,
}

impl Inputs {
    fn per_sample(&self) -> usize {
        self.shape.iter().product()
    }
    /// Only sample `index`.
    fn select(self, index: Option<usize>, path: &Path) -> Result<Inputs, PredictError> {
        let Some(i) = index else { return Ok(self) };
        if i >= self.count {
            return Err(PredictError::Index {
                path: path.into(),
                index: i,
                count: self.count,
            });
        }
        let k = self.per_sample();
        let inexact = self
            .inexact
            .filter(|(at, _)| (i * k..(i + 1) * k).contains(at))
            .map(|(at, v)| (at - i * k, v));
        Ok(Inputs {
            values: self.values[i * k..(i + 1) * k].to_vec(),
            count: 1,
            first: i,
            shape: self.shape,
            inexact,
        })
    }
}

/// Reads `path` by its content: an IDX image file (raw or gzipped), a PGM image (`P5` binary or
/// `P2` ASCII), or else CSV text with one sample per row (a non-numeric first line is a header).
/// `index` picks one sample. Files are read by the readers of `train`'s data, so that what is
/// wrong with one is named as precisely.
pub fn read_inputs(path: &Path, index: Option<usize>) -> Result<Inputs, PredictError> {
    // The path as given (no data dir to resolve it against, none to name when it is missing).
    let mut file = DataFile::open(&path.to_string_lossy(), Path::new("")).map_err(|e| match e {
        DataError::NotFound { path, .. } => PredictError::Format {
            path,
            msg: "no such file".into(),
        },
        e => e.into(),
    })?;
    // IDX magic numbers start with two zero bytes (`00 00 08 ndim`), which neither PGM nor CSV
    // text does: any such file is read as IDX images, so that a wrong magic number (a label
    // file, a wrong type) is reported as such rather than as text that holds no numbers.
    let inputs = if file.peek(2)? == [0, 0] {
        let (values, count, shape) = idx::images_from_file(&mut file)?;
        Inputs {
            values,
            count,
            first: 0,
            shape,
            inexact: None,
        }
    } else {
        let (full, bytes) = file.read_to_end(memory::available())?;
        if bytes.starts_with(b"P5") || bytes.starts_with(b"P2") {
            pgm(&full, &bytes)?
        } else {
            csv_rows(&full, bytes)?
        }
    };
    inputs.select(index, path)
}

fn csv_rows(path: &Path, bytes: Vec<u8>) -> Result<Inputs, PredictError> {
    let text = String::from_utf8(bytes).map_err(|_| PredictError::Format {
        path: path.into(),
        msg: "not an IDX file, a PGM image or CSV text".into(),
    })?;
    // A first line that is not numbers is taken for a header, unless nothing follows it: then
    // it was meant as a sample, and what is wrong with it is the error.
    let rows = match data::parse_csv_rows(path, &text, false) {
        Ok(r) => r,
        Err(first @ DataError::Csv { line: 1, .. }) => {
            let rows = data::parse_csv_rows(path, &text, true)?;
            if rows.is_empty() {
                return Err(first.into());
            }
            rows
        }
        Err(e) => return Err(e.into()),
    };
    let width = rows
        .first()
        .map(|r| r.1.len())
        .ok_or_else(|| PredictError::Format {
            path: path.into(),
            msg: "no data rows".into(),
        })?;
    let values: Vec<f32> = rows
        .iter()
        .flat_map(|r| r.1.iter().map(|&v| v as f32))
        .collect();
    // Only whole numbers matter (ids): a fraction is never exact, and is refused as an id.
    let inexact = rows
        .iter()
        .flat_map(|r| r.1.iter())
        .enumerate()
        .find(|(_, &v)| v.fract() == 0.0 && v as f32 as f64 != v)
        .map(|(i, &v)| (i, v));
    Ok(Inputs {
        values,
        count: rows.len(),
        first: 0,
        shape: vec![width],
        inexact,
    })
}

/// A PGM image; pixels are scaled to 0..=255 when `maxval` differs, so that a `normalize`
/// written for u8 images applies unchanged.
pub fn pgm(path: &Path, bytes: &[u8]) -> Result<Inputs, PredictError> {
    let err = |msg: String| PredictError::Format {
        path: path.into(),
        msg,
    };
    let binary = bytes.starts_with(b"P5");
    // Header: magic, width, height, maxval, separated by whitespace and `#` comments.
    let mut pos = 2;
    let mut header = [0usize; 3];
    for (i, what) in ["width", "height", "maxval"].iter().enumerate() {
        loop {
            match bytes.get(pos) {
                Some(b'#') => {
                    while bytes.get(pos).is_some_and(|&c| c != b'\n') {
                        pos += 1;
                    }
                }
                Some(c) if c.is_ascii_whitespace() => pos += 1,
                _ => break,
            }
        }
        let start = pos;
        while bytes.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
        }
        header[i] = std::str::from_utf8(&bytes[start..pos])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&v| v > 0)
            .ok_or_else(|| {
                err(format!(
                    "PGM header: expected the {what} as a positive number"
                ))
            })?;
    }
    let [w, h, maxval] = header;
    if maxval > 65535 {
        return Err(err(format!("PGM maxval {maxval} is over 65535")));
    }
    let n = w
        .checked_mul(h)
        .ok_or_else(|| err("PGM size overflows".into()))?;
    let scale = 255.0 / maxval as f32;
    let values: Vec<f32> = if binary {
        pos += 1; // the single whitespace after maxval
        let wide = maxval > 255;
        // Checked: a header's width and height are the file's word, and a product that wrapped
        // would pass for a few pixels (an image whose sample size is not its pixel count).
        let need = n
            .checked_mul(if wide { 2 } else { 1 })
            .ok_or_else(|| err("PGM size overflows".into()))?;
        let px = pos
            .checked_add(need)
            .and_then(|end| bytes.get(pos..end))
            .ok_or_else(|| {
                err(format!(
                    "truncated: expected {need} bytes of pixels, found {}",
                    bytes.len().saturating_sub(pos)
                ))
            })?;
        if wide {
            px.chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]) as f32 * scale)
                .collect()
        } else {
            px.iter().map(|&b| b as f32 * scale).collect()
        }
    } else {
        let text = std::str::from_utf8(&bytes[pos..])
            .map_err(|_| err("P2 pixels are not ASCII".into()))?;
        let px: Vec<f32> = text
            .split_ascii_whitespace()
            .take(n)
            .map(|t| {
                t.parse::<u32>()
                    .map(|v| v as f32 * scale)
                    .map_err(|_| err(format!("P2 pixel `{t}` is not a number")))
            })
            .collect::<Result<_, _>>()?;
        if px.len() < n {
            return Err(err(format!(
                "truncated: expected {n} pixels, found {}",
                px.len()
            )));
        }
        px
    };
    Ok(Inputs {
        values,
        count: 1,
        first: 0,
        shape: vec![h, w],
        inexact: None,
    })
}

/// `(class, probability)` pairs, most probable first.
pub type TopK = Vec<(usize, f32)>;

/// Softmax of `logits` and its `k` most probable classes.
pub fn top_k(logits: &[f32], k: usize) -> TopK {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&l| ((l - max) as f64).exp()).collect();
    let sum: f64 = exps.iter().sum();
    let mut ranked: Vec<(usize, f32)> = exps.iter().map(|e| (e / sum) as f32).enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(k);
    ranked
}

/// Runs the model (`exec` runs its inference graph, output `output`) on every sample, after
/// `normalize`, and returns each sample's top `k` classes. A sequence output (several rows per
/// sample) is ranked on its last row. `params` as [`Executor::run`] takes them (none when
/// `exec` holds them, [`Executor::hold_params`]).
pub fn predict(
    exec: &mut dyn Executor,
    params: &[&[f32]],
    inputs: &Inputs,
    normalize: Option<&ScalarExpr>,
    k: usize,
) -> Result<Vec<TopK>, PredictError> {
    let g = exec.graph();
    let out = g
        .output("output")
        .ok_or_else(|| PredictError::Model("the model has no output `output`".into()))?;
    let classes = g.ty(out).last().max(1);
    outputs(exec, params, inputs, normalize)?
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let row = &o[o.len().saturating_sub(classes)..];
            match unusable_logit(row) {
                Some(class) => Err(PredictError::NotFinite {
                    sample: inputs.first + i,
                    class,
                    value: row[class],
                }),
                None => Ok(top_k(row, k)),
            }
        })
        .collect()
}

/// The first of `row`'s logits that a softmax cannot rank or draw from: a NaN or +∞ (an
/// infinite logit came out at 0% behind two classes at 50%, and NaN logits always drew the last
/// character), or the first when all are −∞. A −∞ beside a finite largest logit is fine: its
/// probability is 0 (a `log_softmax` that underflowed).
pub fn unusable_logit(row: &[f32]) -> Option<usize> {
    let bad = row.iter().position(|v| v.is_nan() || *v == f32::INFINITY);
    bad.or_else(|| row.iter().all(|v| *v == f32::NEG_INFINITY).then_some(0))
}

/// Refuses outputs of [`outputs`] (the first sample being `first`) that hold a NaN or an
/// infinity: shown as they are, they would pass for the model's answer.
pub fn finite_outputs(outs: &[Vec<f32>], first: usize) -> Result<(), PredictError> {
    for (i, o) in outs.iter().enumerate() {
        if let Some(k) = o.iter().position(|v| !v.is_finite()) {
            return Err(PredictError::NotFiniteOutput {
                sample: first + i,
                index: k,
                len: o.len(),
                value: o[k],
            });
        }
    }
    Ok(())
}

/// The model's output `output` for every sample (all its values, every row of a sequence),
/// after `normalize`: what [`predict`] ranks, and what is shown as it is for a model whose
/// output is not class scores (a single probability, a regression, a reconstruction).
pub fn outputs(
    exec: &mut dyn Executor,
    params: &[&[f32]],
    inputs: &Inputs,
    normalize: Option<&ScalarExpr>,
) -> Result<Vec<Vec<f32>>, PredictError> {
    let g = exec.graph();
    let inputs_of = g.inputs();
    let [(input, name)] = inputs_of[..] else {
        return Err(PredictError::Model(
            "the model must have exactly one input".into(),
        ));
    };
    let ty = g.ty(input).clone();
    let name = name.to_string();
    if g.output("output").is_none() {
        return Err(PredictError::Model(
            "the model has no output `output`".into(),
        ));
    }
    let per = ty.per_sample();
    if per != inputs.per_sample() {
        // A CSV row (the only 1-D samples) one value too long most likely still holds the
        // label column of the training data.
        let label_column = inputs.shape.len() == 1 && inputs.per_sample() == per + 1;
        return Err(PredictError::Shape {
            input: format!("{name}: {ty}"),
            expected: per,
            found: inputs.per_sample(),
            shape: inputs.shape.clone(),
            hint: if label_column {
                ": if each CSV row still holds its label, drop that column (predict reads features only)"
            } else {
                ""
            },
        });
    }
    if !data::reshapes(&inputs.shape, &ty.dims) {
        return Err(PredictError::Layout {
            input: format!("{name}: {ty}"),
            expected: ty.dims.clone(),
            found: inputs.shape.clone(),
        });
    }
    let mut values = inputs.values.clone();
    if let Some(n) = normalize {
        data::normalize_values(&mut values, n)?;
    }
    // Ids as the training data's are read: a fraction, or a value beyond i32, is refused
    // rather than truncated or saturated into some other id.
    let ids: Vec<i32> = if ty.dtype == DType::I32 {
        let bad = |i: usize, value: f64, expected| PredictError::Id {
            input: format!("{name}: {ty}"),
            sample: inputs.first + i / per.max(1),
            value,
            expected,
        };
        // An id beyond 2^24 read from CSV would be rounded to another (16777217 to 16777216).
        if let (Some((i, v)), None) = (inputs.inexact, normalize) {
            return Err(bad(
                i,
                v,
                "a whole number of at most 2^24 (16777216), beyond which ids read from CSV are not exact",
            ));
        }
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                // In f64, where both ends of i32 are exact (`i32::MAX as f32` is 2^31).
                let x = v as f64;
                if !(i32::MIN as f64..=i32::MAX as f64).contains(&x) {
                    Err(bad(i, x, "within the range of i32"))
                } else if x.fract() != 0.0 {
                    Err(bad(i, x, "an integer"))
                } else {
                    Ok(v as i32)
                }
            })
            .collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    let mut result = Vec::with_capacity(inputs.count);
    let batch = 256;
    for start in (0..inputs.count).step_by(batch) {
        let b = batch.min(inputs.count - start);
        let feed = match ty.dtype {
            DType::F32 => Feed::F32(&values[start * per..(start + b) * per]),
            DType::I32 => Feed::I32(&ids[start * per..(start + b) * per]),
        };
        exec.run(b, &[feed], params, StepCtx::default())?;
        let o = exec
            .output("output")
            .ok_or_else(|| PredictError::Model("no output after running".into()))?;
        let per_out = o.len() / b;
        result.extend((0..b).map(|s| o[s * per_out..(s + 1) * per_out].to_vec()));
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_ranks_softmax_probabilities() {
        let t = top_k(&[1.0, 3.0, 2.0], 2);
        assert_eq!(t.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 2]);
        let z: f64 = [1.0f64, 3.0, 2.0].iter().map(|x| x.exp()).sum();
        assert!((t[0].1 as f64 - 3f64.exp() / z).abs() < 1e-6);
    }

    /// NaN and +∞ cannot be ranked, nor a row of −∞ alone; a −∞ beside a finite largest logit
    /// is a probability of 0 (it was refused as "not finite").
    #[test]
    fn only_logits_a_softmax_cannot_take_are_unusable() {
        let inf = f32::INFINITY;
        assert_eq!(unusable_logit(&[0.0, f32::NAN, 1.0]), Some(1));
        assert_eq!(unusable_logit(&[0.0, 1.0, inf]), Some(2));
        assert_eq!(unusable_logit(&[-inf, -inf]), Some(0));
        assert_eq!(unusable_logit(&[-inf, 2.0, 1.0]), None);
        let t = top_k(&[-inf, 2.0, 1.0], 3);
        assert_eq!(t.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 2, 0]);
        assert_eq!(t[2].1, 0.0);
    }

    #[test]
    fn pgm_binary_ascii_comments_and_truncation() {
        let p = Path::new("x.pgm");
        let mut b = b"P5\n# made by hand\n3 2\n255\n".to_vec();
        b.extend_from_slice(&[0, 10, 20, 30, 40, 255]);
        let i = pgm(p, &b).unwrap();
        assert_eq!(i.shape, vec![2, 3]);
        assert_eq!(i.values, vec![0.0, 10.0, 20.0, 30.0, 40.0, 255.0]);
        let i = pgm(p, b"P2 2 1 15\n0 15\n").unwrap();
        assert_eq!(i.values, vec![0.0, 255.0]);
        assert!(pgm(p, b"P5 3 2 255\n\x00\x01")
            .unwrap_err()
            .to_string()
            .contains("truncated"));
        assert!(pgm(p, b"P2 2 1\n").is_err());
    }

    /// A 16-bit image whose byte count wraps to 0 was read as an image of no pixels, and
    /// picking its sample (`--index 0`) then sliced past the end.
    #[test]
    fn pgm_sizes_that_overflow_are_errors() {
        let p = Path::new("x.pgm");
        let huge = b"P5 4294967296 2147483648 65535\n";
        let e = pgm(p, huge).unwrap_err().to_string();
        assert!(e.contains("overflows"), "{e}");
        let e = pgm(p, b"P5 4294967296 4294967295 255\n").unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }
}
