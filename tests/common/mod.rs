//! What several test files share: the examples, read and checked.
#![allow(dead_code)] // each test file uses its own part

use nnc::ir::Program;
use std::path::PathBuf;

/// Every example of the curriculum, by file stem.
pub const EXAMPLES: &[&str] = &[
    "xor",
    "mnist_mlp",
    "mnist_cnn",
    "char_rnn",
    "autoencoder_finetune",
    "distill",
];

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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
