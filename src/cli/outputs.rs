//! Refusing, before any work, an output path that names one of the command's own inputs:
//! `nnc train x.nn --checkpoint x.nn` would replace the model's source by safetensors bytes, and
//! `nnc plot log.jsonl --out log.jsonl` the log by its plot. Paths are compared as files (the
//! same device and inode where both exist, so links and `./` spellings are seen through), else
//! as absolute paths with their folders canonicalized.

use super::{CliError, CliResult};
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
