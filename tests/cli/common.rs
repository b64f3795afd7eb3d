//! What every CLI test needs: the binary, the repository, temporary folders and output text.

use assert_cmd::Command;
use std::path::PathBuf;

pub fn nnc() -> Command {
    Command::cargo_bin("nnc").expect("the nnc binary is built")
}

#[path = "../common/mod.rs"]
mod shared;
pub use shared::{root, spec_examples, Scratch};

pub fn examples() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "nn"))
        .collect();
    v.sort();
    v
}

pub fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `nnc` with the given arguments (each anything `Command::arg` takes: `"--quiet"`, a path),
/// then those of a slice after a `;`, and returns its output.
macro_rules! run {
    ($($arg:expr),+ $(,)? $(; $rest:expr)?) => {{
        let mut command = $crate::common::nnc();
        $(command.arg($arg);)+
        $(command.args($rest);)?
        command.output().unwrap()
    }};
}
pub(crate) use run;

/// Asserts that `out` succeeded and returns its stdout.
pub fn succeeded(out: &std::process::Output) -> String {
    assert_code(out, 0);
    stdout(out)
}

/// Asserts that `out` failed as a user error (exit 1, no panic) and returns its stderr.
pub fn user_error(out: &std::process::Output) -> String {
    assert_code(out, 1);
    stderr(out)
}

/// The records of the JSON-lines log at `path` (`--log-json`), each line parsed.
pub fn records(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).expect("every line is one JSON object"))
        .collect()
}

/// The records of type `kind` (`"step"`, `"eval"`, …) of the log at `path`.
pub fn records_of(path: &std::path::Path, kind: &str) -> Vec<serde_json::Value> {
    let mut all = records(path);
    all.retain(|r| r["type"] == kind);
    all
}

/// Asserts that `text` holds each of `parts`, showing `text` whole when one is missing.
pub fn assert_has(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "no `{part}` in\n{text}");
    }
}

/// Asserts the exit code, showing stderr when it differs, and that nothing panicked.
pub fn assert_code(out: &std::process::Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "stderr:\n{}", stderr(out));
    assert!(!stderr(out).contains("panicked"), "{}", stderr(out));
}

/// Rewrites checkpoint `ck` of a finished run as if the run had been `total` steps long and
/// stopped where it ended, so that `--resume` goes on with it.
pub fn as_if_stopped(ck: &std::path::Path, total: u64) {
    use nnc::runtime::{checkpoint::Checkpoint, train::resume::Position};
    let mut stopped = Checkpoint::load(ck).unwrap();
    let mut pos = Position::from_checkpoint(&stopped).unwrap();
    pos.total = total;
    stopped.meta = pos.to_meta();
    stopped.save_to(ck).unwrap();
}

/// Trains `nn` quietly into the checkpoint `ck`, asserting that it succeeds.
pub fn train_to(nn: &std::path::Path, ck: &std::path::Path) {
    let out = nnc()
        .arg("train")
        .arg(nn)
        .args(["--quiet", "--checkpoint"])
        .arg(ck)
        .output()
        .unwrap();
    assert_code(&out, 0);
}

/// The MNIST folder ([`shared::shared_data`]); `None` when it is missing (then the test is
/// skipped, except in CI).
pub fn mnist() -> Option<PathBuf> {
    shared::shared_data("mnist")
}

/// The tinyshakespeare folder, as [`mnist`].
pub fn shakespeare() -> Option<PathBuf> {
    shared::shared_data("tinyshakespeare")
}
