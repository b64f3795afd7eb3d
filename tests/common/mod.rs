//! What several test files share: the examples, read and checked.
#![allow(dead_code)] // each test file uses its own part

use nnc::ir::{DType, Graph, Program};
use std::path::{Path, PathBuf};

/// Every example of the curriculum, by file stem.
pub const EXAMPLES: &[&str] = &[
    "xor",
    "mnist_mlp",
    "mnist_cnn",
    "char_rnn",
    "autoencoder_finetune",
    "distill",
    "conv_autoencoder",
];

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The data set `name` (`mnist`, `tinyshakespeare`) of `$NNC_SHARED_DATA` when set, else of
/// `../shared/data` beside the repository. `None`, with a note, when it is missing: the test is
/// then skipped, except in CI, where a missing data set fails it.
pub fn shared_data(name: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os("NNC_SHARED_DATA") {
        Some(base) => PathBuf::from(base).join(name),
        None => root().join("../shared/data").join(name),
    };
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI needs the data set `{name}` at {}",
        dir.display()
    );
    eprintln!(
        "note: skipped: the data set `{name}` is not at {}",
        dir.display()
    );
    None
}

/// The text of `examples/<name>.nn`.
pub fn source(name: &str) -> String {
    let path = root().join("examples").join(format!("{name}.nn"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `examples/<name>.nn` parsed and checked; a failure panics with the rendered diagnostics.
pub fn program(name: &str) -> Program {
    let src = source(name);
    let render = |d| nnc::diag::Report::new(&format!("examples/{name}.nn"), &src, d).render(false);
    let file = nnc::syntax::parse(&src).unwrap_or_else(|d| panic!("{}", render(d)));
    nnc::check::check(&file).unwrap_or_else(|d| panic!("{}", render(d)))
}

/// The ```` ```nn ```` code blocks of spec.md, in order.
pub fn spec_examples() -> Vec<String> {
    let spec = std::fs::read_to_string(root().join("spec.md")).unwrap();
    spec.split("```nn\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap().to_string())
        .collect()
}

/// Runs `nnc` with `args` and returns its stdout, asserting that it exits 0 (its stderr shown
/// when it does not).
pub fn nnc(args: &[&str]) -> String {
    let out = assert_cmd::Command::cargo_bin("nnc")
        .unwrap()
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nnc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A temporary folder of one test (`nnc-<binary>-<pid>-<test>`), removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(test: &str) -> Scratch {
        let bin = std::env::current_exe()
            .ok()
            .and_then(|e| e.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_default();
        let d = std::env::temp_dir().join(format!("nnc-{bin}-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    pub fn dir(&self) -> &Path {
        &self.0
    }
    /// Writes `name` in the folder and returns its path.
    pub fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic pseudo-random numbers in [0, 1) (a 64-bit LCG).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Random inputs: f32 values in [0, 1), i32 class ids below `classes`.
pub fn random_inputs(g: &Graph, batch: usize, classes: usize, rng: &mut Lcg) -> Vec<Vec<f64>> {
    g.inputs()
        .iter()
        .map(|(v, _)| {
            let t = g.ty(*v);
            (0..t.numel(batch))
                .map(|_| match t.dtype {
                    DType::F32 => rng.next(),
                    DType::I32 => (rng.next() * classes as f64).floor(),
                })
                .collect()
        })
        .collect()
}
