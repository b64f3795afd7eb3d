//! Finding a data file and reading it, gunzipped on the fly when it starts with the gzip magic.
//!
//! Readers take bytes through [`DataFile::read_up_to`] rather than inflating whole files: an IDX
//! reader asks for the payload its header declares plus one byte (to see that nothing follows),
//! so a small gzip file that inflates to gigabytes (a gzip bomb) costs no more memory than the
//! payload it claims to hold, and is refused for its trailing bytes.

use super::DataError;
use std::fs::File;
use std::io::{BufRead, BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Deflate's best ratio (about 1032:1): a gzip trailer claiming more than this many bytes per
/// compressed byte is corrupt, and must not make a reader reserve gigabytes.
const MAX_RATIO: u64 = 1032;

/// `written` resolved against `dir` (absolute paths stay as they are).
pub fn resolve(written: &str, dir: &Path) -> PathBuf {
    let p = Path::new(written);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// A data file being read: its bytes, gunzipped on the fly when it is gzipped.
pub struct DataFile {
    /// The file as found (named in errors).
    pub path: PathBuf,
    reader: Box<dyn Read>,
    gzip: bool,
    /// What is left to read as far as known without reading it (a plain file's size, a gzip
    /// trailer's ISIZE capped by [`MAX_RATIO`]): buffers reserve up to this, so that tens of
    /// megabytes are not re-copied while a buffer grows, and a header or trailer that lies
    /// does not reserve more than the file can hold.
    size_hint: usize,
}

impl DataFile {
    /// Opens the file named `written` (relative to `dir`).
    pub fn open(written: &str, dir: &Path) -> Result<DataFile, DataError> {
        let path = resolve(written, dir);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DataError::NotFound {
                    written: written.into(),
                    path,
                    dir: dir.to_path_buf(),
                })
            }
            Err(source) => return Err(DataError::Io { path, source }),
        };
        // Pipes and devices have no size: no hint, and no trailer to seek to.
        let len = file
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .map_or(0, |m| m.len());
        let mut r = BufReader::new(file);
        let io = |source| DataError::Io {
            path: path.clone(),
            source,
        };
        let gzip = r.fill_buf().map_err(io)?.starts_with(&GZIP_MAGIC);
        let mut hint = len;
        if gzip && len >= 4 {
            let mut isize = [0; 4];
            r.seek(SeekFrom::End(-4)).map_err(io)?;
            r.read_exact(&mut isize).map_err(io)?;
            r.rewind().map_err(io)?;
            hint = isize_hint(isize, len);
        }
        let reader: Box<dyn Read> = if gzip {
            Box::new(flate2::bufread::MultiGzDecoder::new(r))
        } else {
            Box::new(r)
        };
        Ok(DataFile {
            path,
            reader,
            gzip,
            size_hint: usize::try_from(hint).unwrap_or(usize::MAX),
        })
    }

    /// The bytes of a file already read (`path` only names it in errors), gunzipped when they
    /// start with the gzip magic: bytes from anywhere (a fuzzer) take the same road as a file's.
    pub fn from_bytes(path: &Path, raw: Vec<u8>) -> DataFile {
        if !raw.starts_with(&GZIP_MAGIC) {
            return DataFile::plain(path, raw);
        }
        let hint = match raw.len().checked_sub(4) {
            Some(i) => isize_hint(raw[i..].try_into().unwrap(), raw.len() as u64),
            None => 0,
        };
        DataFile {
            path: path.to_path_buf(),
            reader: Box::new(flate2::read::MultiGzDecoder::new(Cursor::new(raw))),
            gzip: true,
            size_hint: usize::try_from(hint).unwrap_or(usize::MAX),
        }
    }

    /// Bytes already decompressed, read as they are.
    pub fn plain(path: &Path, bytes: Vec<u8>) -> DataFile {
        DataFile {
            path: path.to_path_buf(),
            size_hint: bytes.len(),
            reader: Box::new(Cursor::new(bytes)),
            gzip: false,
        }
    }

    /// The next `limit` bytes, or fewer where the file ends first. Nothing past them is
    /// decompressed, so what a read costs is bounded by `limit`, not by the file.
    pub fn read_up_to(&mut self, limit: usize) -> Result<Vec<u8>, DataError> {
        let mut out = Vec::with_capacity(limit.min(self.size_hint));
        let read = (&mut self.reader).take(limit as u64).read_to_end(&mut out);
        if let Err(e) = read {
            return Err(if self.gzip {
                DataError::Gzip {
                    path: self.path.clone(),
                    msg: e.to_string(),
                }
            } else {
                DataError::Io {
                    path: self.path.clone(),
                    source: e,
                }
            });
        }
        self.size_hint = self.size_hint.saturating_sub(out.len());
        Ok(out)
    }

    /// Everything left (for the formats whose size no header declares: CSV, text, PGM).
    pub fn read_to_end(mut self) -> Result<(PathBuf, Vec<u8>), DataError> {
        let bytes = self.read_up_to(usize::MAX)?;
        Ok((self.path, bytes))
    }

    /// The first `n` bytes (fewer in a shorter file), left to be read again: to tell a format
    /// by its magic before choosing its reader.
    pub fn peek(&mut self, n: usize) -> Result<Vec<u8>, DataError> {
        let head = self.read_up_to(n)?;
        let rest = std::mem::replace(&mut self.reader, Box::new(std::io::empty()));
        self.reader = Box::new(Cursor::new(head.clone()).chain(rest));
        self.size_hint = self.size_hint.saturating_add(head.len());
        Ok(head)
    }
}

/// A gzip file's decompressed size from its trailer's ISIZE (the size mod 2³², of the last
/// member only: a hint), capped at what `len` compressed bytes can inflate to.
fn isize_hint(isize: [u8; 4], len: u64) -> u64 {
    (u32::from_le_bytes(isize) as u64).min(len.saturating_mul(MAX_RATIO))
}

/// Reads the file named `written` (relative to `dir`) whole, decompressed if gzipped.
pub fn read(written: &str, dir: &Path) -> Result<(PathBuf, Vec<u8>), DataError> {
    DataFile::open(written, dir)?.read_to_end()
}

/// `raw` gunzipped when it starts with the gzip magic (1f 8b), else as it is; `path` only names
/// the file in errors (as [`DataFile::from_bytes`], read whole).
pub fn decompress(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>, DataError> {
    Ok(DataFile::from_bytes(path, raw).read_to_end()?.1)
}
