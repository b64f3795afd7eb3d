//! `parse` and `check` never panic: random bytes, random sequences of the language's tokens, and
//! valid files (the examples among them) with one random edit all come back as a program or as
//! diagnostics whose spans lie inside the text (on character boundaries, so that miette can
//! render them). The invariants are `fuzzing/source.rs`, shared with the `parse_check` fuzz
//! target; this is its short run.

#[path = "fuzzing/config.rs"]
mod config;
#[path = "fuzzing/source.rs"]
mod source;

use nnc::syntax::parse;
use proptest::prelude::*;

const TOKENS: &[&str] = &[
    "model",
    "data",
    "train",
    "on",
    "return",
    "as",
    "every",
    "from",
    "true",
    "epoch",
    "steps",
    "x",
    "M",
    "dense",
    "relu",
    "encoder.dense1",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "=",
    "->",
    "|>",
    "+",
    "-",
    "*",
    "/",
    ".",
    "0",
    "64",
    "1e-4",
    "2.5E+3",
    "1e999",
    "\"a.gz\"",
    "\"unterminated",
    "\"\\q\"",
    "//c\n",
    "#c\n",
    "\n",
    ";",
    "'",
    "é",
    "\u{0}",
    "f32[",
    "i32",
    "dense(10)",
    "x |> relu",
    "every 1 epoch [loss]",
    "train r: M on d {",
    "model M(x: [2]) {",
];

const VALID: &str = r#"model Net(x: [784]) -> [10] {
    h = x |> dense(128) |> relu as r
    return h |> dense(10)
}
data mnist { train: idx("a.gz", "b.gz"), normalize: (x / 255 - 0.5) / 0.5 }
train run: Net on mnist {
    loss: cross_entropy(output, label) + 1e-4 * l2(encoder.dense1)
    optimizer: adam(lr: 1e-3, betas: [0.9, 0.999])
    eval: every 1 epoch [loss, accuracy], lr_scale: { encoder: 0.1 }
}
"#;

/// Parses and checks; see `fuzzing/source.rs` for what must hold.
fn check(src: &str) {
    source::check_source(src);
}

proptest! {
    #![proptest_config(config::deterministic(500))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn token_soup_never_panics(
        toks in proptest::collection::vec(proptest::sample::select(TOKENS), 0..60),
        spaced in any::<bool>(),
    ) {
        check(&toks.join(if spaced { " " } else { "" }));
    }

    #[test]
    fn one_edit_to_a_valid_file_never_panics(
        at in 0..VALID.len(),
        len in 0usize..4,
        insert in proptest::sample::select(TOKENS),
    ) {
        let at = (0..=at).rev().find(|i| VALID.is_char_boundary(*i)).unwrap_or(0);
        let end = (at + len..=VALID.len()).find(|i| VALID.is_char_boundary(*i)).unwrap_or(VALID.len());
        let edited = format!("{}{}{}", &VALID[..at], insert, &VALID[end..]);
        check(&edited);
    }
}

#[test]
fn the_valid_file_parses() {
    assert!(parse(VALID).is_ok());
}
