//! Loading a `data` block into memory: every [`Source`] becomes a [`Split`] of input and label
//! [`Column`]s, `normalize` is applied to f32 inputs, `split` holds out the end of the train
//! source when there is no `test`, and both splits are conformed to the types the model expects
//! (same element count per sample → reshaped; dtypes converted where exact; class ids one-hot
//! encoded when the model wants a distribution).

mod csv;
mod error;
mod file;
pub mod idx;
mod text;

pub use csv::{parse_rows as parse_csv_rows, split_from_bytes as csv_from_bytes};
pub use error::DataError;
pub use file::{decompress, max_file_bytes, read as read_file, resolve, DataFile};
pub use text::{
    encode as encode_text, from_bytes as text_from_bytes, windows as text_windows, Text,
};

use crate::ir::{DType, DataSpec, ScalarExpr, Source, Type};
use crate::runtime::memory;
use std::path::Path;

/// The elements of a column, all samples back to back.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    I32(Vec<i32>),
    /// f32 values stored as bytes, byte `b` standing for `table[b]`: IDX images keep their
    /// pixels at a quarter of the memory (60,000 MNIST images: 47 MB rather than 188 MB), and
    /// `normalize` rewrites 256 table entries instead of every pixel. Batches are gathered
    /// through the table, so the values fed to the model are exactly those of an f32 column.
    Bytes {
        bytes: Vec<u8>,
        table: Box<[f32; 256]>,
    },
}

impl Values {
    /// Bytes standing for their own values (0.0 to 255.0).
    pub fn bytes(bytes: Vec<u8>) -> Values {
        Values::Bytes {
            bytes,
            table: Box::new(std::array::from_fn(|b| b as f32)),
        }
    }
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::I32(v) => v.len(),
            Values::Bytes { bytes, .. } => bytes.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn dtype(&self) -> DType {
        match self {
            Values::F32(_) | Values::Bytes { .. } => DType::F32,
            Values::I32(_) => DType::I32,
        }
    }
    /// Element `i` as f64 (for conversions and checks).
    fn get(&self, i: usize) -> f64 {
        match self {
            Values::F32(v) => v[i] as f64,
            Values::I32(v) => v[i] as f64,
            Values::Bytes { bytes, table } => table[bytes[i] as usize] as f64,
        }
    }
}

/// One tensor per sample: `values` holds `len × shape.product()` elements.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub values: Values,
    /// Shape of one sample (no batch dimension); `[]` for a scalar label.
    pub shape: Vec<usize>,
}

impl Column {
    pub fn per_sample(&self) -> usize {
        self.shape.iter().product()
    }
    /// Samples `from..to` as a new column.
    fn slice(&self, from: usize, to: usize) -> Column {
        let k = self.per_sample();
        let values = match &self.values {
            Values::F32(v) => Values::F32(v[from * k..to * k].to_vec()),
            Values::I32(v) => Values::I32(v[from * k..to * k].to_vec()),
            Values::Bytes { bytes, table } => Values::Bytes {
                bytes: bytes[from * k..to * k].to_vec(),
                table: table.clone(),
            },
        };
        Column {
            values,
            shape: self.shape.clone(),
        }
    }
}

/// Inputs and labels of `len` samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    pub x: Column,
    pub y: Column,
    pub len: usize,
}

/// Used by the source readers before conforming.
pub(crate) type RawSplit = Split;

/// A loaded `data` block.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub name: String,
    pub train: Split,
    pub test: Option<Split>,
    /// The character vocabulary of a text source (id = index).
    pub vocab: Option<Vec<char>>,
}

/// The per-sample types the model wants (`None`: keep what the source gives).
#[derive(Clone, Debug, Default)]
pub struct Expect {
    pub x: Option<Type>,
    pub y: Option<Type>,
}

/// Loads `spec` with paths resolved against `dir`. CSV and text files larger than the memory
/// available allows are refused ([`file::max_file_bytes`]).
pub fn load(spec: &DataSpec, dir: &Path, expect: &Expect) -> Result<Dataset, DataError> {
    let available = memory::available();
    let (mut train, mut test, vocab) = match (&spec.train, &spec.test) {
        // A text is split on characters, so that no window straddles the two parts.
        (Source::Text { path, seq }, None) if spec.split < 1.0 => {
            let t = text::read(path, dir, available)?;
            let (train, test) = split_text(&t, spec.split, *seq)?;
            (train, Some(test), Some(t.vocab))
        }
        _ => {
            let (train, vocab) = load_source(&spec.train, dir, None, available)?;
            let test = match &spec.test {
                Some((src, _)) => Some(load_source(src, dir, vocab.as_deref(), available)?.0),
                None => None,
            };
            (train, test, vocab)
        }
    };
    if let Some((norm, _)) = &spec.normalize {
        normalize(&mut train.x, norm)?;
        if let Some(t) = &mut test {
            normalize(&mut t.x, norm)?;
        }
    }
    // (A text with `split` is cut above, on characters: its test split is there.)
    if test.is_none() && spec.split < 1.0 {
        let samples = train.len;
        let (a, b) = split(train, spec.split);
        if a.len == 0 && samples > 0 {
            // `split: 0.9` of one row keeps none of it.
            return Err(DataError::SplitKeepsNone {
                data: spec.name.clone(),
                split: spec.split,
                samples,
                held: b.len,
            });
        }
        train = a;
        test = Some(b);
    }
    let name = &spec.name;
    if train.len == 0 {
        return Err(DataError::Empty {
            data: name.clone(),
            split: "train",
        });
    }
    let train = conform(train, expect, name)?;
    let test = test
        .filter(|t| t.len > 0)
        .map(|t| conform(t, expect, name))
        .transpose()?;
    Ok(Dataset {
        name: name.clone(),
        train,
        test,
        vocab,
    })
}

/// The split `nnc eval` measures, and its name (`"test"` or `"train"`). A `test` source is
/// loaded alone, so that its files are all that must be there (but for a text source, whose
/// test text takes its ids from the vocabulary of the train text); it must not be empty, since
/// there is nothing else to fall back on. Without one, what `split` holds out of `train` is
/// measured, or `train` itself when nothing is held out.
pub fn load_eval(
    spec: &DataSpec,
    dir: &Path,
    expect: &Expect,
) -> Result<(Split, &'static str), DataError> {
    let Some((src, _)) = &spec.test else {
        let ds = load(spec, dir, expect)?;
        return Ok(match ds.test {
            Some(t) => (t, "test"),
            None => (ds.train, "train"),
        });
    };
    let vocab = vocabulary(spec, dir)?;
    let (mut test, _) = load_source(src, dir, vocab.as_deref(), memory::available())?;
    if let Some((norm, _)) = &spec.normalize {
        normalize(&mut test.x, norm)?;
    }
    if test.len == 0 {
        return Err(DataError::Empty {
            data: spec.name.clone(),
            split: "test",
        });
    }
    Ok((conform(test, expect, &spec.name)?, "test"))
}

/// The character vocabulary of a text `train` source (for sampling without loading the windows);
/// `None` for other sources.
pub fn vocabulary(spec: &DataSpec, dir: &Path) -> Result<Option<Vec<char>>, DataError> {
    match &spec.train {
        Source::Text { path, .. } => Ok(Some(text::read(path, dir, memory::available())?.vocab)),
        _ => Ok(None),
    }
}

/// One source as it comes (inputs f32 or i32, labels as stored), plus a text vocabulary.
/// `vocab`: the train text's vocabulary when loading a test text; `available`: the memory
/// available, which bounds the CSV and text files read ([`file::max_file_bytes`]).
fn load_source(
    src: &Source,
    dir: &Path,
    vocab: Option<&[char]>,
    available: Option<u64>,
) -> Result<(Split, Option<Vec<char>>), DataError> {
    match src {
        Source::Inline { x, y } => Ok((inline(x, y)?, None)),
        Source::Idx { images, labels } => Ok((idx::load(images, labels, dir)?, None)),
        Source::Csv {
            path,
            label_column,
            header,
        } => Ok((
            csv::load(path, *label_column, *header, dir, available)?,
            None,
        )),
        Source::Text { path, seq } => match vocab {
            None => {
                let t = text::read(path, dir, available)?;
                Ok((text::windows(&t.path, &t.ids, *seq)?, Some(t.vocab)))
            }
            Some(v) => {
                let (p, bytes) = file::read(path, dir, available)?;
                let s = csv::utf8(&p, bytes)?;
                let ids = text::encode(&p, &s, v)?;
                Ok((text::windows(&p, &ids, *seq)?, None))
            }
        },
    }
}

fn inline(x: &[Vec<f64>], y: &[Vec<f64>]) -> Result<Split, DataError> {
    if x.len() != y.len() {
        return Err(DataError::Inline(format!(
            "{} input rows but {} label rows",
            x.len(),
            y.len()
        )));
    }
    let flat = |rows: &[Vec<f64>], what: &str| -> Result<Column, DataError> {
        let w = rows.first().map_or(0, Vec::len);
        if let Some(i) = rows.iter().position(|r| r.len() != w) {
            let n = rows[i].len();
            return Err(DataError::Inline(format!(
                "{what} row {} has {n} values, row 1 has {w}",
                i + 1
            )));
        }
        Ok(Column {
            values: Values::F32(rows.iter().flatten().map(|&v| v as f32).collect()),
            shape: vec![w],
        })
    };
    Ok(Split {
        x: flat(x, "input")?,
        y: flat(y, "label")?,
        len: x.len(),
    })
}

/// Applies `normalize` to f32 inputs. Byte-valued inputs (IDX images, most CSV pixels) go
/// through a 256-entry table: evaluating the expression tree per element would dominate loading.
/// An expression that maps an input value the column holds to NaN or ±∞ (as `(x - 1) / (x - 1)`
/// does 1) is refused with that value: it would otherwise show only later, as a loss that is
/// not finite, far from its cause.
pub fn normalize(col: &mut Column, expr: &ScalarExpr) -> Result<(), DataError> {
    if let Values::Bytes { bytes, table } = &mut col.values {
        for t in table.iter_mut() {
            *t = expr.eval(*t as f64) as f32;
        }
        // A non-finite entry matters only for a byte the column holds.
        if table.iter().any(|t| !t.is_finite()) {
            if let Some(&b) = bytes.iter().find(|&&b| !table[b as usize].is_finite()) {
                let (input, output) = (b as f64, table[b as usize]);
                return Err(DataError::Normalize { input, output });
            }
        }
    }
    if let Values::F32(v) = &mut col.values {
        normalize_values(v, expr)?;
    }
    Ok(())
}

/// [`normalize`] on f32 values (`predict`'s inputs too): whole bytes through a table computed
/// once, other values through the expression; refused at the first value it makes NaN or ±∞.
pub fn normalize_values(v: &mut [f32], expr: &ScalarExpr) -> Result<(), DataError> {
    let table: Vec<f32> = (0..256).map(|b| expr.eval(b as f64) as f32).collect();
    for x in v.iter_mut() {
        let b = *x as u8;
        let y = if b as f32 == *x {
            table[b as usize]
        } else {
            expr.eval(*x as f64) as f32
        };
        if !y.is_finite() {
            let (input, output) = (*x as f64, y);
            return Err(DataError::Normalize { input, output });
        }
        *x = y;
    }
    Ok(())
}

/// The windows of the first `frac` of a text's characters for training, and of the rest for
/// testing: each part must hold a window (a test split asked for and left empty would show
/// nothing in training, and `nnc eval` would measure the training split instead). A part too
/// short is refused with the splits that would do, if any.
fn split_text(t: &text::Text, frac: f64, seq: usize) -> Result<(Split, Split), DataError> {
    let n = t.ids.len();
    let cut = kept_by_split(n, frac);
    let refuse = |part: String, more: &str| {
        let fix = match workable_splits(n, seq) {
            Some((least, most)) => {
                format!("{more} (a `split` from {least} to {most} leaves each part a window)")
            }
            None => {
                format!("its {n} characters cannot hold a window in each part: use a shorter `seq`")
            }
        };
        DataError::Format {
            path: t.path.clone(),
            msg: format!(
                "`split: {frac}` {part}, too short for one window of seq {seq} (+1 for the \
                 labels); {fix}, or remove `split` to train on the whole text"
            ),
        }
    };
    // Named as the part `split` keeps: the file itself holds more than `cut` characters.
    let train = text::windows(&t.path, &t.ids[..cut], seq).map_err(|_| {
        refuse(
            format!("keeps {cut} of its {n} characters for training"),
            "keep more",
        )
    })?;
    let test = text::windows(&t.path, &t.ids[cut..], seq).map_err(|_| {
        refuse(
            format!("holds out {} of its {n} characters for testing", n - cut),
            "hold out more",
        )
    })?;
    Ok((train, test))
}

/// How many of `n` samples (or a text's characters) `split: frac` keeps for training: the
/// first ⌊n·frac⌋, the rest being the test split.
pub fn kept_by_split(n: usize, frac: f64) -> usize {
    ((n as f64) * frac).floor() as usize
}

/// The least and the largest `split`, in hundredths, that leave each part of a text of `n`
/// characters a window of `seq` (+1 for the labels), cut as [`kept_by_split`] cuts it; `None` when
/// no split does.
fn workable_splits(n: usize, seq: usize) -> Option<(f64, f64)> {
    let window = seq + 1;
    let fits = |h: &u32| {
        let cut = kept_by_split(n, f64::from(*h) / 100.0);
        cut >= window && n - cut >= window
    };
    let least = (1..100).find(fits)?;
    let most = (1..100).rev().find(fits)?;
    Some((f64::from(least) / 100.0, f64::from(most) / 100.0))
}

/// The first `frac` of the samples for training, the rest for testing.
fn split(all: Split, frac: f64) -> (Split, Split) {
    let cut = kept_by_split(all.len, frac);
    let train = Split {
        x: all.x.slice(0, cut),
        y: all.y.slice(0, cut),
        len: cut,
    };
    let test = Split {
        x: all.x.slice(cut, all.len),
        y: all.y.slice(cut, all.len),
        len: all.len - cut,
    };
    (train, test)
}

/// Whether samples of shape `from` may be read as `to` (the same number of values): when one
/// side is flat (a CSV row into an image, an image into a vector) or they differ only by axes
/// of 1 (`[28, 28]` and `[1, 28, 28]`). 14×56 images fed to a `[1, 28, 28]` input were
/// silently re-cut into 28×28 ones.
pub fn reshapes(from: &[usize], to: &[usize]) -> bool {
    let squeezed = |d: &[usize]| -> Vec<usize> { d.iter().copied().filter(|&n| n != 1).collect() };
    let (from, to) = (squeezed(from), squeezed(to));
    from == to || from.len() <= 1 || to.len() <= 1
}

/// Converts a split's columns to the expected per-sample types.
fn conform(s: Split, expect: &Expect, data: &str) -> Result<Split, DataError> {
    let x = match &expect.x {
        Some(t) => conform_column(s.x, t, data, "inputs", false)?,
        None => s.x,
    };
    let y = match &expect.y {
        Some(t) => conform_column(s.y, t, data, "labels", true)?,
        None => s.y,
    };
    Ok(Split { x, y, len: s.len })
}

fn conform_column(
    col: Column,
    t: &Type,
    data: &str,
    what: &'static str,
    one_hot: bool,
) -> Result<Column, DataError> {
    let want = t.per_sample();
    let have = col.per_sample();
    let n = col.values.len().checked_div(have).unwrap_or(0);
    let bad = |sample: usize, value: f64, expected: String| DataError::Value {
        data: data.into(),
        what,
        sample,
        value,
        expected,
    };
    if one_hot && t.dtype == DType::F32 && have == 1 && want > 1 {
        let classes = *t.dims.last().unwrap_or(&1);
        let mut out = vec![0f32; n * want];
        for i in 0..n {
            let v = col.values.get(i);
            if v.fract() != 0.0 || v < 0.0 || v >= classes as f64 {
                return Err(bad(
                    i,
                    v,
                    format!("a class id in 0..{classes} (labels are one-hot encoded)"),
                ));
            }
            // The class id picks the position in the last axis; `want / classes` rows each.
            let rows = want / classes;
            for r in 0..rows {
                out[i * want + r * classes + v as usize] = 1.0;
            }
        }
        return Ok(Column {
            values: Values::F32(out),
            shape: t.dims.clone(),
        });
    }
    if want != have {
        return Err(DataError::Shape {
            data: data.into(),
            what,
            expected: format!("{:?} ({want} elements)", t.dims),
            found: format!("{:?} ({have} elements)", col.shape),
        });
    }
    if !reshapes(&col.shape, &t.dims) {
        return Err(DataError::Shape {
            data: data.into(),
            what,
            expected: format!(
                "{:?}: the same number of values, but in another layout (reading them in \
                 order would cut rows in the wrong places; flatten the model's input to take \
                 them as a vector)",
                t.dims
            ),
            found: format!("{:?}", col.shape),
        });
    }
    let values = match (col.values, t.dtype) {
        (v @ (Values::F32(_) | Values::Bytes { .. }), DType::I32) => {
            let mut out = Vec::with_capacity(v.len());
            for i in 0..v.len() {
                // In f64, where every f32 and both ends of i32 are exact: an f32 compared with
                // `i32::MAX as f32` (2^31) would let 2^31 through, saturated to 2^31 - 1.
                let x = v.get(i);
                if x.fract() != 0.0 {
                    return Err(bad(i / have.max(1), x, "an integer".into()));
                }
                if x < i32::MIN as f64 || x > i32::MAX as f64 {
                    return Err(bad(i / have.max(1), x, "within the range of i32".into()));
                }
                out.push(x as i32);
            }
            Values::I32(out)
        }
        (Values::I32(v), DType::F32) => Values::F32(v.iter().map(|&x| x as f32).collect()),
        (v, _) => v,
    };
    Ok(Column {
        values,
        shape: t.dims.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::ast::BinOp;
    use std::io::Write;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// CSV and text sources gzipped: with just the memory available that allows them, they load
    /// as where it is unknown (a limit of 1 GiB); with a byte less, they are refused naming the
    /// file, and so is a gzip bomb of them, after inflating no more than the limit (the garbage
    /// member after the bomb is never reached).
    #[test]
    fn csv_and_text_sources_past_the_memory_limit_are_refused() {
        let dir = std::env::temp_dir().join(format!("nnc-data-unit-{}-cap", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let csv = |path: &str| Source::Csv {
            path: path.into(),
            label_column: -1,
            header: false,
        };
        let text = |path: &str| Source::Text {
            path: path.into(),
            seq: 4,
        };
        let rows = b"1,2,0\n3,4,1\n".repeat(100);
        let chars = b"to be or not to be\n".repeat(60);
        for (name, bytes, source) in [
            ("t.csv.gz", rows, csv as fn(&str) -> Source),
            ("t.txt.gz", chars, text),
        ] {
            let bomb_name = format!("bomb-{name}");
            let mut bomb = gz(&bytes.repeat(10_000));
            bomb.extend_from_slice(b"\x1f\x8b not a gzip member");
            std::fs::write(dir.join(&bomb_name), bomb).unwrap();
            std::fs::write(dir.join(name), gz(&bytes)).unwrap();
            let load = |name: &str, available| load_source(&source(name), &dir, None, available);

            let enough = file::EXPANSION * bytes.len() as u64;
            assert_eq!(load(name, Some(enough)).unwrap(), load(name, None).unwrap());
            for (name, available) in [(name, enough - 1), (&bomb_name, 16 << 10)] {
                let e = load(name, Some(available)).unwrap_err();
                assert!(matches!(e, DataError::TooLarge { gzip: true, .. }), "{e:?}");
                let msg = e.to_string();
                assert!(msg.contains(&format!("{name}: holds more than")), "{msg}");
            }
        }
    }

    /// A text whose training part is too short for a window is refused naming the part that
    /// `split` keeps, not as if the file held only that many characters.
    #[test]
    fn a_text_split_too_short_to_train_on_names_the_split() {
        let dir = std::env::temp_dir().join(format!("nnc-data-unit-{}-split", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("t.txt"), "abcde".repeat(5)).unwrap();
        let t = text::read("t.txt", &dir, None).unwrap();
        let e = split_text(&t, 0.3, 8).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("t.txt: `split: 0.3` keeps 7 of its 25 characters for training"),
            "{msg}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A refused text split suggests the splits that leave each part a window, all of them and
    /// only those (20 characters at seq 10 under `split: 0.9` were told "`split: 0.44` or less",
    /// whose training part is too short; 201 at seq 4 under 0.99 were told 0.97 where 0.98 does).
    #[test]
    fn a_refused_text_split_suggests_the_splits_that_work() {
        let text = |n: usize| text::Text {
            path: "t.txt".into(),
            ids: vec![0; n],
            vocab: vec!['a'],
        };
        let works = |n: usize, frac: f64, seq: usize| split_text(&text(n), frac, seq).is_ok();
        for n in [2, 11, 20, 21, 22, 57, 201, 1000] {
            for seq in [1, 4, 10, 30] {
                let refused = split_text(&text(n), 0.99, seq)
                    .err()
                    .or_else(|| split_text(&text(n), 0.01, seq).err());
                let Some(e) = refused else { continue };
                let msg = e.to_string();
                let hundredths = (1..100).map(|h| f64::from(h) / 100.0);
                let good: Vec<f64> = hundredths.filter(|&f| works(n, f, seq)).collect();
                match (good.first(), good.last()) {
                    (Some(least), Some(most)) => {
                        let range = format!("a `split` from {least} to {most} leaves each part");
                        assert!(msg.contains(&range), "n {n}, seq {seq}: {msg}");
                    }
                    _ => assert!(msg.contains("use a shorter `seq`"), "{msg}"),
                }
            }
        }
        let e = split_text(&text(20), 0.9, 10).unwrap_err().to_string();
        assert!(
            e.contains("its 20 characters cannot hold a window in each part"),
            "{e}"
        );
        let e = split_text(&text(201), 0.99, 4).unwrap_err().to_string();
        assert!(
            e.contains("hold out more (a `split` from 0.03 to 0.98"),
            "{e}"
        );
    }

    #[test]
    fn normalize_table_matches_the_expression_on_every_kind_of_value() {
        let num = |n| Box::new(ScalarExpr::Num(n));
        let x_255 = ScalarExpr::Bin(BinOp::Div, Box::new(ScalarExpr::X), num(255.0));
        let e = ScalarExpr::Bin(
            BinOp::Div,
            Box::new(ScalarExpr::Bin(BinOp::Sub, Box::new(x_255), num(0.5))),
            num(0.5),
        );
        let raw = vec![0.0, 3.0, 255.0, 0.5, -1.0, 300.0, 254.9];
        let mut col = Column {
            values: Values::F32(raw.clone()),
            shape: vec![7],
        };
        normalize(&mut col, &e).unwrap();
        let want: Vec<f32> = raw.iter().map(|&x| e.eval(x as f64) as f32).collect();
        assert_eq!(col.values, Values::F32(want));
    }

    /// Labels converted to i32 class ids: both ends of i32 load as they are; 2^31 (an f32 that
    /// `as i32` would saturate to 2^31 - 1) and fractions are refused, naming the value.
    #[test]
    fn f32_labels_outside_i32_are_refused_not_saturated() {
        let ids = Type {
            dtype: DType::I32,
            dims: vec![],
            batched: true,
        };
        let labels = |v: Vec<f32>| Column {
            values: Values::F32(v),
            shape: vec![],
        };
        let ends = vec![-2147483648.0, 0.0, 2147483520.0];
        let ok = conform_column(labels(ends), &ids, "d", "labels", true).unwrap();
        assert_eq!(ok.values, Values::I32(vec![i32::MIN, 0, 2147483520]));
        for (v, shown, expected) in [
            (2147483648.0f32, "2147483648", "within the range of i32"),
            (-3e9, "-3000000000", "within the range of i32"),
            (1.5, "1.5", "an integer"),
            // Shown as written, not widened to 0.5809999704360962.
            (0.581, "0.581", "an integer"),
        ] {
            let e = conform_column(labels(vec![0.0, v]), &ids, "d", "labels", true).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains(&format!(
                    "label value {shown} of sample 1 is not {expected}"
                )),
                "{msg}"
            );
        }
    }

    /// `(x - 1) / (x - 1)` is NaN at 1 only: refused for a column that holds a 1, bytes or f32,
    /// naming it; accepted for one that does not.
    #[test]
    fn a_normalize_that_is_not_finite_on_the_data_is_refused() {
        let x_minus_1 = || {
            ScalarExpr::Bin(
                BinOp::Sub,
                Box::new(ScalarExpr::X),
                Box::new(ScalarExpr::Num(1.0)),
            )
        };
        let e = ScalarExpr::Bin(BinOp::Div, Box::new(x_minus_1()), Box::new(x_minus_1()));
        let column = |values| Column {
            values,
            shape: vec![3],
        };
        for values in [
            Values::bytes(vec![0, 1, 2]),
            Values::F32(vec![0.0, 1.0, 2.5]),
        ] {
            let e = normalize(&mut column(values), &e).unwrap_err().to_string();
            assert!(e.contains("turns the input value 1 into NaN"), "{e}");
        }
        for values in [
            Values::bytes(vec![0, 2, 3]),
            Values::F32(vec![0.0, 2.0, 2.5]),
        ] {
            normalize(&mut column(values), &e).unwrap();
        }
    }

    #[test]
    fn byte_columns_normalize_slice_and_convert_like_f32_ones() {
        let e = ScalarExpr::Bin(
            BinOp::Div,
            Box::new(ScalarExpr::X),
            Box::new(ScalarExpr::Num(255.0)),
        );
        let raw: Vec<u8> = vec![0, 3, 255, 128, 7, 9];
        let mut bytes = Column {
            values: Values::bytes(raw.clone()),
            shape: vec![2],
        };
        let mut floats = Column {
            values: Values::F32(raw.iter().map(|&b| b as f32).collect()),
            shape: vec![2],
        };
        normalize(&mut bytes, &e).unwrap();
        normalize(&mut floats, &e).unwrap();
        assert_eq!(bytes.values.dtype(), DType::F32);
        let part = bytes.slice(1, 3);
        assert_eq!(part.values.len(), 4);
        for i in 0..4 {
            assert_eq!(part.values.get(i), floats.values.get(i + 2));
        }
        // Whole bytes convert to integer ids; normalized fractions are refused.
        let ids = conform_column(
            Column {
                values: Values::bytes(raw.clone()),
                shape: vec![2],
            },
            &Type {
                dtype: DType::I32,
                dims: vec![2],
                batched: true,
            },
            "d",
            "inputs",
            false,
        )
        .unwrap();
        assert_eq!(
            ids.values,
            Values::I32(raw.iter().map(|&b| b as i32).collect())
        );
        assert!(conform_column(
            bytes,
            &Type {
                dtype: DType::I32,
                dims: vec![2],
                batched: true,
            },
            "d",
            "inputs",
            false
        )
        .is_err());
    }
}
