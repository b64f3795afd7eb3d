//! Stacked recurrent layers (`num_layers:`, with the dropout between layers), as a file writes
//! them: trained by the JIT as the interpreter trains them, bit-identical on any thread count.

use super::copy::{sequence_model, trains_alike_on_any_thread_count};
use super::*;

/// The three recurrent layers stacked, one direction and both, with dropout between layers and
/// without, as written in a file; the output's width.
const STACKED: [(&str, usize); 5] = [
    ("rnn(4, num_layers: 2, dropout: 0.3)", 4),
    ("rnn(3, activation: relu, num_layers: 3)", 3),
    (
        "gru(3, num_layers: 2, dropout: 0.2, bidirectional: true)",
        6,
    ),
    ("lstm(5, num_layers: 2, dropout: 0.5)", 5),
    ("lstm(3, num_layers: 3, bidirectional: true)", 6),
];

#[test]
fn stacked_layers_train_as_the_interpreter_does() {
    let u = Gen::U(-1.0, 1.0);
    for (body, out) in STACKED {
        let g = sequence_model(body, out);
        let dropouts = g
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::Dropout { .. }))
            .count();
        let layers: usize = body.split("num_layers: ").nth(1).unwrap()[..1]
            .parse()
            .unwrap();
        let between = if body.contains("dropout") {
            layers - 1
        } else {
            0
        };
        assert_eq!(dropouts, between, "{body}: one dropout between layers");
        super::autodiff::check_trained(g, &[u, u]);
    }
}

#[test]
fn stacked_training_is_bit_identical_on_any_thread_count() {
    trains_alike_on_any_thread_count(&STACKED);
}
