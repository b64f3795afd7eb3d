//! IDX files (the MNIST format): a big-endian header `00 00 08 ndim`, `ndim` u32 dims, then u8
//! elements. Images must be `0x00000803` (N×H×W), labels `0x00000801` (N).

use super::{file, Column, DataError, RawSplit, Values};
use std::path::{Path, PathBuf};

/// A parsed IDX file: dims and the u8 payload.
struct Idx {
    dims: Vec<usize>,
    /// The whole file; the payload starts at `header`.
    bytes: Vec<u8>,
    header: usize,
}

impl Idx {
    fn payload(&self) -> &[u8] {
        &self.bytes[self.header..]
    }
}

fn parse(path: &Path, bytes: Vec<u8>, magic: u32, what: &'static str) -> Result<Idx, DataError> {
    let truncated = |what: String, expected, found| DataError::Truncated {
        path: path.to_path_buf(),
        what,
        expected,
        found,
    };
    if bytes.len() < 4 {
        return Err(truncated("IDX header".into(), 4, bytes.len()));
    }
    let found = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if found != magic {
        return Err(DataError::Magic {
            path: path.to_path_buf(),
            what,
            expected: magic,
            found,
        });
    }
    let ndim = (magic & 0xff) as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(truncated(
            format!("IDX header with {ndim} dims"),
            header,
            bytes.len(),
        ));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| DataError::Format {
            path: path.to_path_buf(),
            msg: format!("dims {dims:?} overflow"),
        })?;
    let have = bytes.len() - header;
    if have < n {
        return Err(truncated(format!("payload for dims {dims:?}"), n, have));
    }
    if have > n {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            msg: format!(
                "{} trailing bytes after the payload of dims {dims:?}",
                have - n
            ),
        });
    }
    Ok(Idx {
        dims,
        bytes,
        header,
    })
}

/// Reads one IDX image file (as f32) and its label file (as i32).
pub fn load(images: &str, labels: &str, dir: &Path) -> Result<RawSplit, DataError> {
    split_from_bytes(file::read(images, dir)?, file::read(labels, dir)?)
}

/// An image file and a label file already read (path, bytes) as one split: images as f32,
/// labels as i32, the two counts equal.
pub fn split_from_bytes(
    (ipath, ibytes): (PathBuf, Vec<u8>),
    (lpath, lbytes): (PathBuf, Vec<u8>),
) -> Result<RawSplit, DataError> {
    let img = parse(&ipath, ibytes, 0x0000_0803, "IDX u8 images, 3 dims")?;
    let lab = parse(&lpath, lbytes, 0x0000_0801, "IDX u8 labels, 1 dim")?;
    if img.dims[0] != lab.dims[0] {
        return Err(DataError::CountMismatch {
            images_path: ipath,
            images: img.dims[0],
            labels_path: lpath,
            labels: lab.dims[0],
        });
    }
    let x = Column {
        values: Values::bytes(img.payload().to_vec()),
        shape: img.dims[1..].to_vec(),
    };
    let y = Column {
        values: Values::I32(lab.payload().iter().map(|&b| b as i32).collect()),
        shape: vec![],
    };
    Ok(RawSplit {
        x,
        y,
        len: img.dims[0],
    })
}

/// The images of an IDX image file already read (for `nnc predict`): values, count, per-image dims.
pub fn images_from_bytes(
    path: &Path,
    bytes: Vec<u8>,
) -> Result<(Vec<f32>, usize, Vec<usize>), DataError> {
    let img = parse(path, bytes, 0x0000_0803, "IDX u8 images, 3 dims")?;
    Ok((
        img.payload().iter().map(|&b| b as f32).collect(),
        img.dims[0],
        img.dims[1..].to_vec(),
    ))
}
