//! Refusing, before any work, an output path that names one of the command's own inputs:
//! `nnc train x.nn --checkpoint x.nn` would replace the model's source by safetensors bytes, and
//! `nnc plot log.jsonl --out log.jsonl` the log by its plot. Paths are compared as files (the
//! same device and inode where both exist, so links and `./` spellings are seen through), else
//! as absolute paths with their folders canonicalized.

use super::{CliError, CliResult};
use crate::runtime::train::Record;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A file a command reads or writes, and how to name it in an error.
pub struct Named {
    pub what: String,
    pub path: PathBuf,
}

impl Named {
    pub fn new(what: impl Into<String>, path: impl Into<PathBuf>) -> Named {
        Named {
            what: what.into(),
            path: path.into(),
        }
    }
}

/// An error for the first output that is the same file as one of `inputs`.
pub fn refuse_overwrite(outputs: &[Named], inputs: &[Named]) -> CliResult {
    for o in outputs {
        if let Some(i) = inputs.iter().find(|i| same_file(&o.path, &i.path)) {
            return Err(CliError::user(format!(
                "{} {} names the same file as {} ({}): writing it would replace that file; give another path",
                o.what,
                o.path.display(),
                i.what,
                i.path.display()
            )));
        }
    }
    Ok(())
}

/// What a command writes, to tell a file it may replace from one it would destroy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A safetensors file: an 8-byte little-endian header length, then a JSON header.
    Safetensors,
    /// An SVG image (`nnc plot`).
    Svg,
    /// A log of JSON lines (`--log-json`, which appends to it).
    JsonLines,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Safetensors => "a safetensors checkpoint",
            Kind::Svg => "an SVG image",
            Kind::JsonLines => "a log of JSON lines",
        }
    }

    /// Whether `head`, the first bytes of a file, look like this kind (an empty file does).
    fn holds(self, head: &[u8]) -> bool {
        match self {
            Kind::Safetensors => {
                head.is_empty()
                    || (head.len() > 8 && head[..8].iter().any(|&b| b != 0) && head[8] == b'{')
            }
            Kind::Svg => {
                let text = String::from_utf8_lossy(head);
                let t = text.trim_start_matches('\u{feff}').trim_start();
                t.is_empty() || t.starts_with("<svg") || t.starts_with("<?xml")
            }
            Kind::JsonLines => head.trim_ascii_start().first().is_none_or(|&b| b == b'{'),
        }
    }
}

/// An error when `out` names an existing file that is not of the `kind` the command writes:
/// `nnc plot log.jsonl --out model.safetensors` would replace a trained model by a picture, and
/// `--log-json model.safetensors` append lines of text to it.
pub fn refuse_replacing_another_kind(out: &Named, kind: Kind) -> CliResult {
    use std::io::Read;
    // A folder or a FIFO (which opening would wait on) is for the atomic writer to refuse.
    if !std::fs::metadata(&out.path).is_ok_and(|m| m.is_file()) {
        return Ok(());
    }
    let Ok(file) = std::fs::File::open(&out.path) else {
        return Ok(()); // unreadable: writing it will say why
    };
    let mut head = Vec::new();
    if file.take(512).read_to_end(&mut head).is_err() || kind.holds(&head) {
        return Ok(());
    }
    Err(CliError::user(format!(
        "{} {} exists and is not {}: writing it would spoil it; give another path, or remove \
         the file first",
        out.what,
        out.path.display(),
        kind.name()
    )))
}

/// Refuses a `--log-json` path that names one of the files in `inputs` (the `.nn` file, a data
/// file, a checkpoint), or an existing file that is not a log of JSON lines.
pub fn refuse_log(log: &Path, inputs: &[&[Named]]) -> CliResult {
    let log = [Named::new("`--log-json`", log)];
    for i in inputs {
        refuse_overwrite(&log, i)?;
    }
    refuse_replacing_another_kind(&log[0], Kind::JsonLines)
}

/// The `--log-json` file of `nnc eval` or `nnc bench`: checked by [`refuse_log`] and opened for
/// appending as `nnc train` opens its own (created if missing), each record flushed as written.
pub struct Log {
    path: PathBuf,
    w: BufWriter<File>,
}

impl Log {
    pub fn open(path: &Path, inputs: &[&[Named]]) -> Result<Log, CliError> {
        refuse_log(path, inputs)?;
        let (path, w) = crate::runtime::train::open_log(path).map_err(|e| Log::error(path, e))?;
        Ok(Log { path, w })
    }

    /// Appends a record of `type` `kind` (and `run`, unless empty) whose other fields `fields`
    /// writes.
    pub fn write(
        &mut self,
        kind: &str,
        run: &str,
        fields: impl FnOnce(&mut Record<'_, BufWriter<File>>) -> std::io::Result<()>,
    ) -> CliResult {
        let written = || {
            let mut o = Record::new(&mut self.w, kind, run)?;
            fields(&mut o)?;
            o.end()?;
            self.w.flush()
        };
        written().map_err(|e| Log::error(&self.path, e))
    }

    fn error(path: &Path, e: std::io::Error) -> CliError {
        CliError::user(format!("cannot write the log {}: {e}", path.display()))
    }
}

/// Whether `a` and `b` name the same file, existing or not.
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
        use std::os::unix::fs::MetadataExt;
        return (x.dev(), x.ino()) == (y.dev(), y.ino());
    }
    identity(a) == identity(b)
}

/// Where `p` leads, as an absolute path: canonicalized when it exists, else its (followed)
/// folder canonicalized and its name; as written when even that folder is missing.
fn identity(p: &Path) -> PathBuf {
    let p = crate::runtime::atomic::follow_links(p).unwrap_or_else(|_| p.to_path_buf());
    if let Ok(c) = std::fs::canonicalize(&p) {
        return c;
    }
    let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else {
        return p;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::canonicalize(dir).map_or(p.clone(), |d| d.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_file_is_recognised_however_it_is_spelled() {
        let dir = std::env::temp_dir().join(format!("nnc-outputs-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let f = dir.join("f.nn");
        std::fs::write(&f, "x").unwrap();
        assert!(same_file(&f, &dir.join("sub/../f.nn")));
        assert!(!same_file(&f, &dir.join("g.nn")));
        // Missing files: by path, their folders resolved.
        assert!(same_file(&dir.join("new.st"), &dir.join("sub/../new.st")));
        assert!(!same_file(&dir.join("new.st"), &dir.join("sub/new.st")));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("f.nn", dir.join("link")).unwrap();
            assert!(same_file(&dir.join("link"), &f));
            std::fs::hard_link(&f, dir.join("hard")).unwrap();
            assert!(same_file(&dir.join("hard"), &f));
            // A dangling link is the file it would create.
            std::os::unix::fs::symlink("sub/new.st", dir.join("dangling")).unwrap();
            assert!(same_file(&dir.join("dangling"), &dir.join("sub/new.st")));
        }
        let e = refuse_overwrite(
            &[Named::new("`--checkpoint`", &f)],
            &[Named::new("the .nn file", dir.join("sub/../f.nn"))],
        );
        assert!(e.is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
