//! The checker never panics: every example, cut and spliced at random places, either checks (to
//! graphs that verify and differentiate) or yields diagnostics whose spans lie inside the file and
//! render; `fuzzing/source.rs` has the invariants.

#[path = "fuzzing/config.rs"]
mod config;
#[path = "fuzzing/source.rs"]
mod source;

use proptest::prelude::*;

const EXAMPLES: &[&str] = &[
    include_str!("../examples/xor.nn"),
    include_str!("../examples/mnist_mlp.nn"),
    include_str!("../examples/mnist_cnn.nn"),
    include_str!("../examples/char_rnn.nn"),
    include_str!("../examples/autoencoder_finetune.nn"),
    include_str!("../examples/distill.nn"),
    include_str!("../examples/conv_autoencoder.nn"),
];

/// Pieces of `.nn` text that exercise the checker when spliced in.
const SPLICES: &[&str] = &[
    "0",
    "-1",
    "1e12",
    "100000*100000",
    " |> flatten",
    " |> Encoder",
    " |> Teacher",
    " as head",
    "x",
    "label",
    "[1, 28, 28]",
    "i32[64]",
    "dense(3)",
    "conv2d(4, kernel: 9)",
    "maxpool(30)",
    "rnn(8)",
    "one_hot(5)",
    "embedding(10, 4)",
    " + x",
    "freeze: nothing",
    "init: nowhere",
    "teacher: big",
    "steps: 3",
    "",
    "}",
];

proptest! {
    #![proptest_config(config::deterministic(400))]
    #[test]
    fn splices_never_panic(ex in 0..EXAMPLES.len(), at in 0.0f64..1.0, cut in 0usize..12, piece in 0..SPLICES.len()) {
        let src = EXAMPLES[ex];
        let mut start = ((src.len() as f64) * at) as usize;
        while !src.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (start + cut).min(src.len());
        while !src.is_char_boundary(end) {
            end += 1;
        }
        let text = format!("{}{}{}", &src[..start], SPLICES[piece], &src[end..]);
        source::check_source(&text);
    }
}
