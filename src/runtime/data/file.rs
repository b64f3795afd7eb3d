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
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        match flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut out) {
            Ok(_) => Ok((path, out)),
            Err(e) => Err(DataError::Gzip {
                path,
                msg: e.to_string(),
            }),
        }
    } else {
        Ok((path, raw))
    }
}
