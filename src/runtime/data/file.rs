//! Finding a data file and reading it whole, gunzipping when it starts with the gzip magic.

use super::DataError;
use std::io::Read;
use std::path::{Path, PathBuf};

/// `written` resolved against `dir` (absolute paths stay as they are).
pub fn resolve(written: &str, dir: &Path) -> PathBuf {
    let p = Path::new(written);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// Reads the file named `written` (relative to `dir`), decompressed if gzipped (magic 1f 8b).
pub fn read(written: &str, dir: &Path) -> Result<(PathBuf, Vec<u8>), DataError> {
    let path = resolve(written, dir);
    let raw = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DataError::NotFound {
                written: written.into(),
                path,
                dir: dir.to_path_buf(),
            })
        }
        Err(source) => return Err(DataError::Io { path, source }),
    };
    let bytes = decompress(&path, raw)?;
    Ok((path, bytes))
}

/// `raw` gunzipped when it starts with the gzip magic (1f 8b), else as it is; `path` only names
/// the file in errors. Separate from [`read`] so that bytes from anywhere (a fuzzer) take the
/// same road as a file's.
pub fn decompress(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>, DataError> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        // The gzip trailer's ISIZE is the uncompressed size (mod 2³²): reserve it to avoid
        // re-copying tens of megabytes while the buffer grows (capped against corrupt trailers).
        let isize = raw.len().checked_sub(4).map_or(0, |i| {
            u32::from_le_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]) as usize
        });
        let mut out = Vec::with_capacity(isize.min(raw.len().saturating_mul(1032)));
        match flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut out) {
            Ok(_) => Ok(out),
            Err(e) => Err(DataError::Gzip {
                path: path.to_path_buf(),
                msg: e.to_string(),
            }),
        }
    } else {
        Ok(raw)
    }
}
