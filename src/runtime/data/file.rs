//! Finding a data file and reading it, gunzipped on the fly when it starts with the gzip magic.
//!
//! Readers take bytes through [`DataFile::read_up_to`] rather than inflating whole files: an IDX
//! reader asks for the payload its header declares plus one byte (to see that nothing follows),
//! so a small gzip file that inflates to gigabytes (a gzip bomb) costs no more memory than the
//! payload it claims to hold, and is refused for its trailing bytes. The formats whose size no
//! header declares (CSV, text, PGM) are read whole, but no further than [`max_file_bytes`]: a
//! plain file past it is refused from its size before anything is read, a gzip file once
//! inflating it has given one byte more.

use super::DataError;
use crate::runtime::memory;
use std::fs::File;
use std::io::{BufRead, BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Deflate's best ratio (about 1032:1): a gzip trailer claiming more than this many bytes per
/// compressed byte is corrupt, and must not make a reader reserve gigabytes.
const MAX_RATIO: u64 = 1032;

/// About how many times its size in memory a file read whole takes while it is parsed. A text
/// file's ids are i32, 4 bytes per character of ASCII text, and the windows of inputs and labels
/// cut from them (8 bytes more per character) are built while the ids are held: 12 bytes per
/// byte. A CSV file's numbers are parsed as f64 into a vector per row, beside the text, before
/// the f32 columns are built: a few bytes per byte for rows of many values (pixels), up to about
/// 25 for rows of two one-digit values (`0,1`), where the vectors' own overhead dominates.
pub const EXPANSION: u64 = 16;

/// The limit of [`max_file_bytes`] where the memory available is unknown (not Linux): at
/// [`EXPANSION`] times, what a machine with 16 GiB can parse.
const UNKNOWN_MEMORY_LIMIT: u64 = 1 << 30;

/// The most bytes a file read whole (CSV, text, PGM) may hold, given the memory `available`
/// (`None`: unknown). These formats declare no size, so without a limit a small gzip file that
/// inflates to gigabytes, or a plain file of gigabytes, would be read into memory before
/// anything failed, and the process killed when parsing it took [`EXPANSION`] times more. The
/// limit follows the budget `nnc check` and `nnc train` refuse a model against, the memory
/// available: a file whose parsing could take all of it is refused with its size, and reading a
/// gzip bomb stops after a sixteenth of it. `--max-memory` is not passed down: it bounds the
/// model's footprint, checked before any data is read with the data coming on top (README), and
/// lowering this limit with it would only refuse files the machine can hold.
pub fn max_file_bytes(available: Option<u64>) -> u64 {
    available.map_or(UNKNOWN_MEMORY_LIMIT, |a| a / EXPANSION)
}

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

    /// Everything left (for the formats whose size no header declares: CSV, text, PGM), given
    /// the memory `available` (`None`: unknown). Past [`max_file_bytes`] it is refused with
    /// [`DataError::TooLarge`]: a plain file from its size, before anything is read; a gzip file
    /// (or a pipe) once one byte more than the limit has been read, so that a gzip bomb is
    /// inflated no further.
    pub fn read_to_end(mut self, available: Option<u64>) -> Result<(PathBuf, Vec<u8>), DataError> {
        let (limit, gzip) = (max_file_bytes(available), self.gzip);
        let too_large = |path, size| DataError::TooLarge {
            path,
            size,
            gzip,
            limit,
            available,
        };
        // A plain file's size hint is its size (0 for a pipe, which has none).
        let size = self.size_hint as u64;
        if !gzip && size > limit {
            return Err(too_large(self.path, Some(size)));
        }
        let bytes = self.read_up_to(usize::try_from(limit).map_or(usize::MAX, |l| l + 1))?;
        if bytes.len() as u64 > limit {
            return Err(too_large(self.path, None));
        }
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

/// Reads the file named `written` (relative to `dir`) whole, decompressed if gzipped, given the
/// memory `available` ([`DataFile::read_to_end`]).
pub fn read(
    written: &str,
    dir: &Path,
    available: Option<u64>,
) -> Result<(PathBuf, Vec<u8>), DataError> {
    DataFile::open(written, dir)?.read_to_end(available)
}

/// `raw` gunzipped when it starts with the gzip magic (1f 8b), else as it is; `path` only names
/// the file in errors (as [`DataFile::from_bytes`], read whole within the memory available).
pub fn decompress(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>, DataError> {
    Ok(DataFile::from_bytes(path, raw)
        .read_to_end(memory::available())?
        .1)
}
