//! Resource limits: a run whose parameters, gradients, optimizer state, updated parameters and
//! activations exceed the memory available (or `--max-memory`) is refused at check time, before
//! any data is read, with the bytes it needs; by `check`, `train`, `bench`, and by `gradcheck`
//! at its own batch.

use super::common::*;

/// 784-40000-40000-10 with Adam: 6.1 GiB of parameters, 30.4 GiB in all (no data is needed:
/// the refusal comes first).
const HUGE: &str = r#"
model Big(x: [784]) -> [10] {
    return x |> dense(40000) |> relu |> dense(40000) |> relu |> dense(10)
}
data mnist {
    train: idx("missing-images.gz", "missing-labels.gz")
}
train Big on mnist {
    loss: cross_entropy(output, label)
    optimizer: adam(lr: 0.001)
    batch: 64
}
"#;

#[test]
fn a_model_too_large_for_the_limit_is_refused_with_the_bytes_needed() {
    let s = Scratch::new("memory-huge");
    let file = s.write("big.nn", HUGE);
    for cmd in ["check", "train", "bench"] {
        // 1 TiB is above this machine's memory, so the limit is what is available; 8G puts it
        // below the need on any machine.
        for limit in ["8G", "1T"] {
            let err = user_error(&run!(cmd, &file, "--max-memory", limit));
            assert_has(
                &err,
                &[
                    "nnc::memory",
                    "training `Big` with batch 64 needs about 30.4 GiB",
                    "parameters 6.08 GiB",
                    "optimizer state 12.2 GiB",
                    "updated parameters 6.08 GiB",
                    "train Big on mnist",
                ],
            );
            assert!(!err.contains("missing-images"), "data was read:\n{err}");
        }
    }
}

#[test]
fn max_memory_lowers_the_limit_below_what_fits() {
    let cnn = root().join("examples/mnist_cnn.nn");
    succeeded(&run!("check", &cnn));
    // The CNN at batch 64 needs about 21 MiB before its data.
    let err = user_error(&run!("check", &cnn, "--max-memory", "16M"));
    assert_has(&err, &["16.0 MiB allowed by --max-memory"]);
    let stats = succeeded(&run!("check", &cnn, "--stats", "--max-memory", "100M"));
    // conv2 and its gradients (32 and 64 channels) on Winograd; conv1 (1 channel, 9 taps) and
    // its weight gradient (from its pooling's gradient) directly.
    assert_has(
        &stats,
        &[
            "memory at batch 64: 21.2 MiB",
            "conv2d_epi conv1, relu: direct",
            "conv2d_epi conv2, relu: winograd",
            "conv2d_grad_input d maxpool1: winograd",
            "conv2d_grad_weight grad conv2.weight: winograd",
            "conv2d_grad_weight_unpool grad conv1.weight: direct",
        ],
    );
    let err = user_error(&run!("check", &cnn, "--max-memory", "lots"));
    assert_has(&err, &["not a size"]);
}

/// `gradcheck` allocated the parameters (in f32 and f64) without a check and aborted on a model
/// `train` refuses; its need is counted at `--batch`, with the f64 copies of the interpreter.
#[test]
fn gradcheck_is_refused_by_the_memory_it_needs_at_its_batch() {
    let s = Scratch::new("memory-gradcheck");
    let file = s.write("big.nn", HUGE);
    let err = user_error(&run!("gradcheck", &file, "--max-memory", "8G"));
    assert_has(
        &err,
        &[
            "nnc::memory",
            "checking the gradients of `Big` with batch 2 needs about",
            "parameters 42.6 GiB",
            "8.00 GiB allowed by --max-memory",
            "lower --batch",
        ],
    );
    let mlp = root().join("examples/mnist_mlp.nn");
    let gradcheck = |batch: &str| run!("gradcheck", &mlp, "--batch", batch, "--max-memory", "1G");
    // The inputs and activations of 100000 MNIST images, in f32 and f64: about 2 GiB.
    let err = user_error(&gradcheck("100000"));
    assert_has(
        &err,
        &["checking the gradients of `Mlp` with batch 100000 needs about"],
    );
    assert_has(&succeeded(&gradcheck("2")), &["gradient check passed"]);
}
