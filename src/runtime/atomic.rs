//! Writing a file so that a reader, a crash or a full disk never leaves a partial one: the bytes
//! go to `<path>.tmp`, are flushed to disk, and the temporary file is renamed over `path` (an
//! atomic replacement on POSIX file systems); the rename is made durable by syncing the folder.
//! What was at `path` before stays intact until the new file is complete.

use std::io::Write;
use std::path::{Path, PathBuf};

pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // Failing to open a folder to sync it is not worth reporting: the data itself is written.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("nnc-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f.bin");
        std::fs::write(&p, b"old").unwrap();
        super::write(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert!(!dir.join("f.bin.tmp").exists());
        // A folder that does not exist: an error, and nothing is left behind.
        assert!(super::write(&dir.join("missing/f.bin"), b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
