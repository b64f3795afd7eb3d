//! IDX files (the MNIST format): a big-endian header `00 00 08 ndim`, `ndim` u32 dims, then u8
//! elements. Images must be `0x00000803` (N×H×W), labels `0x00000801` (N).

use super::file::DataFile;
use super::{Column, DataError, RawSplit, Values};
use std::path::{Path, PathBuf};

const IMAGES: (u32, &str) = (0x0000_0803, "IDX u8 images, 3 dims");
const LABELS: (u32, &str) = (0x0000_0801, "IDX u8 labels, 1 dim");

/// A parsed IDX file: dims and the u8 payload.
struct Idx {
    dims: Vec<usize>,
    payload: Vec<u8>,
}

/// Reads the header, then exactly the payload it declares: one byte more is asked for only to
/// tell that the file goes on, so trailing data (say, gigabytes inflated from a small gzip
/// file) is refused without being read.
fn parse(file: &mut DataFile, (magic, what): (u32, &'static str)) -> Result<Idx, DataError> {
    let path = file.path.clone();
    let truncated = |what: String, expected, found| DataError::Truncated {
        path: path.clone(),
        what,
        expected,
        found,
    };
    let head = file.read_up_to(4)?;
    if head.len() < 4 {
        return Err(truncated("IDX header".into(), 4, head.len()));
    }
    let found = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if found != magic {
        return Err(DataError::Magic {
            path,
            what,
            expected: magic,
            found,
        });
    }
    let ndim = (magic & 0xff) as usize;
    let header = 4 + 4 * ndim;
    let raw_dims = file.read_up_to(4 * ndim)?;
    if raw_dims.len() < 4 * ndim {
        return Err(truncated(
            format!("IDX header with {ndim} dims"),
            header,
            4 + raw_dims.len(),
        ));
    }
    let dims: Vec<usize> = raw_dims
        .chunks_exact(4)
        .map(|d| u32::from_be_bytes(d.try_into().unwrap()) as usize)
        .collect();
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| DataError::Format {
            path: path.clone(),
            msg: format!("dims {dims:?} overflow"),
        })?;
    let payload = file.read_up_to(n.saturating_add(1))?;
    if payload.len() < n {
        return Err(truncated(
            format!("payload for dims {dims:?}"),
            n,
            payload.len(),
        ));
    }
    if payload.len() > n {
        return Err(DataError::Format {
            path,
            msg: format!(
                "trailing bytes after the payload of dims {dims:?} ({n} bytes): the file holds more than its header declares"
            ),
        });
    }
    Ok(Idx { dims, payload })
}

/// Reads one IDX image file (as f32) and its label file (as i32).
pub fn load(images: &str, labels: &str, dir: &Path) -> Result<RawSplit, DataError> {
    split_from_files(
        &mut DataFile::open(images, dir)?,
        &mut DataFile::open(labels, dir)?,
    )
}

/// An image file and a label file already read (path, bytes, decompressed) as one split, as
/// [`load`] gives it.
pub fn split_from_bytes(
    (ipath, ibytes): (PathBuf, Vec<u8>),
    (lpath, lbytes): (PathBuf, Vec<u8>),
) -> Result<RawSplit, DataError> {
    split_from_files(
        &mut DataFile::plain(&ipath, ibytes),
        &mut DataFile::plain(&lpath, lbytes),
    )
}

/// Images as f32, labels as i32, the two counts equal.
fn split_from_files(images: &mut DataFile, labels: &mut DataFile) -> Result<RawSplit, DataError> {
    let img = parse(images, IMAGES)?;
    let lab = parse(labels, LABELS)?;
    if img.dims[0] != lab.dims[0] {
        return Err(DataError::CountMismatch {
            images_path: images.path.clone(),
            images: img.dims[0],
            labels_path: labels.path.clone(),
            labels: lab.dims[0],
        });
    }
    let x = Column {
        values: Values::bytes(img.payload),
        shape: img.dims[1..].to_vec(),
    };
    let y = Column {
        values: Values::I32(lab.payload.iter().map(|&b| b as i32).collect()),
        shape: vec![],
    };
    Ok(RawSplit {
        x,
        y,
        len: img.dims[0],
    })
}

/// The images of an IDX image file already read and decompressed (for `nnc predict`): values,
/// count, per-image dims.
pub fn images_from_bytes(
    path: &Path,
    bytes: Vec<u8>,
) -> Result<(Vec<f32>, usize, Vec<usize>), DataError> {
    images_from_file(&mut DataFile::plain(path, bytes))
}

/// The images of an open IDX image file, as [`images_from_bytes`] gives them.
pub fn images_from_file(file: &mut DataFile) -> Result<(Vec<f32>, usize, Vec<usize>), DataError> {
    let img = parse(file, IMAGES)?;
    Ok((
        img.payload.iter().map(|&b| b as f32).collect(),
        img.dims[0],
        img.dims[1..].to_vec(),
    ))
}
