//! Writing a file so that a reader, a crash or a full disk never leaves a partial one: the bytes
//! go to a temporary file beside the target, are flushed to disk, and the temporary file is
//! renamed over the target (an atomic replacement on POSIX file systems); the rename is made
//! durable by syncing the folder. What was at the target before stays intact until the new file
//! is complete.
//!
//! The temporary file is `.<file name>.<pid>.<n>.tmp` in the target's folder (a rename cannot
//! cross file systems), `n` counting this process's temporary files: a hidden name no user picks
//! by chance, and distinct between processes and between threads. It is created with `O_EXCL`
//! (`create_new`), which never follows a symbolic link and never opens an existing file, so a
//! file or link that happens to have that name is left alone and the next `n` is tried. A crash
//! between creating and renaming it can leave one behind; no later write reuses its name.
//!
//! The target is the file `path` names after following symbolic links: renaming onto the link
//! itself would replace the link by a regular file and leave the file it points to stale. A
//! target that exists but is not a regular file (a FIFO, a device, a folder) is refused rather
//! than replaced: a rename would silently swap the special file for a regular one.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How many symbolic links are followed before giving up (Linux's own limit).
const MAX_LINKS: usize = 40;

/// How many names a temporary file tries before giving up: more than a handful taken means
/// something other than chance is at work, and an error says so rather than looping.
const MAX_TRIES: usize = 100;

/// At most this many bytes of the target's name go into the temporary file's name, which then
/// stays within the usual 255-byte limit on a file name whatever the target is called.
const MAX_NAME: usize = 100;

/// The `n` of the next temporary file's name, shared by every thread of the process.
static NEXT: AtomicU64 = AtomicU64::new(0);

pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let target = target(path)?;
    replace(&target, bytes)?;
    // Failing to open a folder to sync it is not worth reporting: the data itself is written.
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Writes `bytes` to a new temporary file beside `target`, syncs it and renames it over
/// `target`; on any failure the temporary file is removed and `target` is as it was.
fn replace(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let (tmp, mut f) = create_temporary(target)?;
    let mut write = || -> std::io::Result<()> {
        f.write_all(bytes)?;
        // The replacement keeps the permissions of the file it replaces.
        if let Ok(m) = std::fs::metadata(target) {
            f.set_permissions(m.permissions())?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, target)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

/// Creates a new, empty file named `.<file name>.<pid>.<n>.tmp` in `target`'s folder (see the
/// module's comment), and returns its path and the file opened for writing.
fn create_temporary(target: &Path) -> std::io::Result<(PathBuf, File)> {
    let Some(name) = target.file_name() else {
        return Err(std::io::Error::new(
            ErrorKind::InvalidInput,
            "the path names no file",
        ));
    };
    let name = name.to_string_lossy();
    let mut end = name.len().min(MAX_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let name = &name[..end];
    let dir = target.parent().unwrap_or(Path::new(""));
    let pid = std::process::id();
    for _ in 0..MAX_TRIES {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{pid}.{n}.tmp"));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        ErrorKind::AlreadyExists,
        format!(
            "no free name for a temporary file beside {} after {MAX_TRIES} tries: files named \
             .{name}.{pid}.<n>.tmp are in the way",
            target.display()
        ),
    ))
}

/// The file [`write()`] to `path` replaces: `path`, or where its chain of symbolic links ends
/// (which may not exist yet). An error when that exists and is not a regular file, or when the
/// folder it would be written in does not exist, so that a caller can refuse such a path before
/// doing the work whose result it would hold.
pub fn target(path: &Path) -> std::io::Result<PathBuf> {
    let p = follow_links(path)?;
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("there is no folder {}", dir.display()),
            ));
        }
    }
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

/// [`target()`], and whether a file can be created in the folder [`write()`] would write in (a
/// temporary file is created there and removed at once): a folder the process may not write
/// in, or on a read-only file system, is refused before the work whose result it would hold,
/// not only when that result is written.
pub fn probe(path: &Path) -> std::io::Result<PathBuf> {
    let target = target(path)?;
    let (tmp, f) = create_temporary(&target)?;
    drop(f);
    let _ = std::fs::remove_file(&tmp);
    Ok(target)
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

    /// The names in `dir`, sorted: what a write must leave as it found, bar its target.
    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = scratch("replace");
        let p = dir.join("f.bin");
        std::fs::write(&p, b"old").unwrap();
        super::write(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(names(&dir), ["f.bin"]);
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
        assert_eq!(names(&dir.join("sub")), ["real.bin"]);
        assert_eq!(names(&dir), ["a", "b", "sub"]);
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
        assert!(folder.is_dir());
        assert_eq!(names(&dir), ["fifo", "folder", "link"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_existing_file_named_like_a_temporary_is_left_untouched() {
        let dir = scratch("existing");
        let p = dir.join("m.st");
        std::fs::write(&p, b"old").unwrap();
        std::fs::write(dir.join("m.st.tmp"), b"mine").unwrap();
        super::write(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(std::fs::read(dir.join("m.st.tmp")).unwrap(), b"mine");
        assert_eq!(names(&dir), ["m.st", "m.st.tmp"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn temporary_names_already_taken_are_skipped() {
        let dir = scratch("taken");
        let p = dir.join("m.st");
        // Files under the next names to be tried (other tests running at once may move the
        // counter past them, which only makes the case easier).
        let pid = std::process::id();
        let next = super::NEXT.load(std::sync::atomic::Ordering::Relaxed);
        let mut taken: Vec<String> = (next..next + 3)
            .map(|n| format!(".m.st.{pid}.{n}.tmp"))
            .collect();
        for t in &taken {
            std::fs::write(dir.join(t), b"taken").unwrap();
        }
        super::write(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        for t in &taken {
            assert_eq!(std::fs::read(dir.join(t)).unwrap(), b"taken");
        }
        taken.push("m.st".to_string());
        taken.sort();
        assert_eq!(names(&dir), taken);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_link_named_like_a_temporary_is_not_followed() {
        let dir = scratch("tmplink");
        let p = dir.join("m.st");
        std::fs::write(&p, b"old").unwrap();
        let other = dir.join("other");
        std::fs::write(&other, b"theirs").unwrap();
        std::os::unix::fs::symlink("other", dir.join("m.st.tmp")).unwrap();
        super::write(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&other).unwrap(), b"theirs");
        assert_eq!(
            std::fs::read_link(dir.join("m.st.tmp")).unwrap(),
            other.strip_prefix(&dir).unwrap()
        );
        assert!(std::fs::symlink_metadata(&p).unwrap().file_type().is_file());
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(names(&dir), ["m.st", "m.st.tmp", "other"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_successful_write_leaves_no_temporary_file() {
        let dir = scratch("success");
        std::fs::write(dir.join("m.st.tmp"), b"mine").unwrap();
        let p = dir.join("m.st");
        // Creating the file, then replacing it: only it is added, and nothing else goes.
        super::write(&p, b"first").unwrap();
        assert_eq!(names(&dir), ["m.st", "m.st.tmp"]);
        super::write(&p, b"second").unwrap();
        assert_eq!(names(&dir), ["m.st", "m.st.tmp"]);
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        // A name at the 255-byte limit still leaves room for the temporary file's name.
        let long = format!("x{}", "é".repeat(127));
        assert_eq!(long.len(), 255);
        super::write(&dir.join(&long), b"long").unwrap();
        assert_eq!(std::fs::read(dir.join(&long)).unwrap(), b"long");
        let mut expected = vec!["m.st".to_string(), "m.st.tmp".to_string(), long];
        expected.sort();
        assert_eq!(names(&dir), expected);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = scratch("failure");
        std::fs::write(dir.join("m.st"), b"old").unwrap();
        std::fs::write(dir.join("m.st.tmp"), b"mine").unwrap();
        std::fs::create_dir(dir.join("folder")).unwrap();
        let before = names(&dir);
        // A target that is a folder is refused before anything is created.
        assert!(super::write(&dir.join("folder"), b"x").is_err());
        assert_eq!(names(&dir), before);
        // A folder that cannot be written to: nothing is created, nothing is overwritten. Root
        // writes there all the same, so the case is skipped when a probe file can be created.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |m| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(m));
            mode(0o555).unwrap();
            let writable = std::fs::File::create(dir.join("probe")).is_ok();
            let result = super::write(&dir.join("m.st"), b"new");
            let _ = std::fs::remove_file(dir.join("probe"));
            mode(0o755).unwrap();
            if !writable {
                assert!(result.is_err());
                assert_eq!(std::fs::read(dir.join("m.st")).unwrap(), b"old");
                assert_eq!(std::fs::read(dir.join("m.st.tmp")).unwrap(), b"mine");
                assert_eq!(names(&dir), before);
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_rename_removes_the_temporary_file() {
        let dir = scratch("rename");
        let folder = dir.join("folder");
        std::fs::create_dir(&folder).unwrap();
        // Renaming a file onto a folder fails after the temporary file is written (`write`
        // refuses such a target beforehand; `replace` is called here past that check).
        assert!(super::replace(&folder, b"x").is_err());
        assert_eq!(names(&dir), ["folder"]);
        assert!(names(&folder).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
