//! Writing a file so that a reader, a crash or a full disk never leaves a partial one: the bytes
//! go to `<target>.tmp`, are flushed to disk, and the temporary file is renamed over the target
//! (an atomic replacement on POSIX file systems); the rename is made durable by syncing the
//! folder. What was at the target before stays intact until the new file is complete.
//!
//! The target is the file `path` names after following symbolic links: renaming onto the link
//! itself would replace the link by a regular file and leave the file it points to stale. A
//! target that exists but is not a regular file (a FIFO, a device, a folder) is refused rather
//! than replaced: a rename would silently swap the special file for a regular one.

use std::io::Write;
use std::path::{Path, PathBuf};

/// How many symbolic links are followed before giving up (Linux's own limit).
const MAX_LINKS: usize = 40;

pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let target = target(path)?;
    let mut tmp = target.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        // The replacement keeps the permissions of the file it replaces.
        if let Ok(m) = std::fs::metadata(&target) {
            f.set_permissions(m.permissions())?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, &target)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // Failing to open a folder to sync it is not worth reporting: the data itself is written.
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// The file [`write()`] to `path` replaces: `path`, or where its chain of symbolic links ends
/// (which may not exist yet). An error when that exists and is not a regular file, so that a
/// caller can refuse such a path before doing the work whose result it would hold.
pub fn target(path: &Path) -> std::io::Result<PathBuf> {
    let p = follow_links(path)?;
    match std::fs::metadata(&p) {
        Ok(m) if !m.is_file() => {
            let via = if p == path {
                String::new()
            } else {
                format!(" (where the link leads: {})", p.display())
            };
            Err(std::io::Error::other(format!(
                "it is {}{via}, not a regular file, and is left as it is",
                kind(&m.file_type())
            )))
        }
        _ => Ok(p),
    }
}

/// `path` with its chain of symbolic links followed to the end (which may not exist).
pub fn follow_links(path: &Path) -> std::io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {}
            Ok(_) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(p),
            Err(e) => return Err(e),
        }
        // A relative link is relative to the folder holding it (`join` keeps an absolute one).
        let link = std::fs::read_link(&p)?;
        p = match p.parent() {
            Some(dir) => dir.join(link),
            None => link,
        };
    }
    Err(std::io::Error::other(format!(
        "more than {MAX_LINKS} symbolic links to follow (a loop?)"
    )))
}

/// What a file that is neither regular nor a link is, for an error message.
fn kind(ty: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ty.is_fifo() {
            return "a FIFO";
        }
        if ty.is_socket() {
            return "a socket";
        }
        if ty.is_char_device() || ty.is_block_device() {
            return "a device";
        }
    }
    if ty.is_dir() {
        "a folder"
    } else {
        "a special file"
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nnc-atomic-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = scratch("replace");
        let p = dir.join("f.bin");
        std::fs::write(&p, b"old").unwrap();
        super::write(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert!(!dir.join("f.bin.tmp").exists());
        // A folder that does not exist: an error, and nothing is left behind.
        assert!(super::write(&dir.join("missing/f.bin"), b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn writes_through_symbolic_links_keeping_permissions() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let dir = scratch("links");
        std::fs::create_dir(dir.join("sub")).unwrap();
        let real = dir.join("sub/real.bin");
        std::fs::write(&real, b"old").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
        // A relative link to a relative link.
        symlink("sub/real.bin", dir.join("a")).unwrap();
        symlink("a", dir.join("b")).unwrap();
        super::write(&dir.join("b"), b"new").unwrap();
        assert!(std::fs::symlink_metadata(dir.join("b"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(std::fs::symlink_metadata(dir.join("a"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        let mode = std::fs::metadata(&real).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.join("sub/real.bin.tmp").exists() && !dir.join("b.tmp").exists());
        // A dangling link: its target is created.
        symlink("sub/new.bin", dir.join("c")).unwrap();
        super::write(&dir.join("c"), b"made").unwrap();
        assert_eq!(std::fs::read(dir.join("sub/new.bin")).unwrap(), b"made");
        // A loop is an error, not a hang.
        symlink("loop2", dir.join("loop1")).unwrap();
        symlink("loop1", dir.join("loop2")).unwrap();
        assert!(super::write(&dir.join("loop1"), b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_target_that_is_not_a_regular_file_is_refused_and_kept() {
        use std::os::unix::fs::FileTypeExt;
        let dir = scratch("special");
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let e = super::write(&fifo, b"x").unwrap_err().to_string();
        assert!(e.contains("a FIFO"), "{e}");
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
        // Through a link, the error names where it leads.
        std::os::unix::fs::symlink(&fifo, dir.join("link")).unwrap();
        let e = super::write(&dir.join("link"), b"x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a FIFO") && e.contains("fifo"), "{e}");
        let folder = dir.join("folder");
        std::fs::create_dir(&folder).unwrap();
        let e = super::write(&folder, b"x").unwrap_err().to_string();
        assert!(e.contains("a folder"), "{e}");
        assert!(folder.is_dir() && !dir.join("folder.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
