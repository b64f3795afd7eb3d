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
            let out = nnc()
                .arg(cmd)
                .arg(&file)
                .args(["--max-memory", limit])
                .output()
                .unwrap();
            assert_code(&out, 1);
            let err = stderr(&out);
            for part in [
                "nnc::memory",
                "training `Big` with batch 64 needs about 30.4 GiB",
                "parameters 6.08 GiB",
                "optimizer state 12.2 GiB",
                "updated parameters 6.08 GiB",
                "train Big on mnist",
            ] {
                assert!(err.contains(part), "{cmd} {limit}: no `{part}` in\n{err}");
            }
            assert!(!err.contains("missing-images"), "data was read:\n{err}");
        }
    }
}

#[test]
fn max_memory_lowers_the_limit_below_what_fits() {
    let cnn = root().join("examples/mnist_cnn.nn");
    let ok = nnc().arg("check").arg(&cnn).output().unwrap();
    assert_code(&ok, 0);
    // The CNN at batch 64 needs about 21 MiB before its data.
    let out = nnc()
        .arg("check")
        .arg(&cnn)
        .args(["--max-memory", "16M"])
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("16.0 MiB allowed by --max-memory"),
        "{}",
        stderr(&out)
    );
    let stats = nnc()
        .arg("check")
        .arg(&cnn)
        .args(["--stats", "--max-memory", "100M"])
        .output()
        .unwrap();
    assert_code(&stats, 0);
    assert!(
        stdout(&stats).contains("memory at batch 64: 21.2 MiB"),
        "{}",
        stdout(&stats)
    );
    // conv2 and its gradients (32 and 64 channels) on Winograd; conv1 (1 channel, 9 taps) and
    // its weight gradient (from its pooling's gradient) directly.
    for algo in [
        "conv2d_epi conv1, relu: direct",
        "conv2d_epi conv2, relu: winograd",
        "conv2d_grad_input d maxpool1: winograd",
        "conv2d_grad_weight grad conv2.weight: winograd",
        "conv2d_grad_weight_unpool grad conv1.weight: direct",
    ] {
        assert!(stdout(&stats).contains(algo), "{algo}: {}", stdout(&stats));
    }
    let bad = nnc()
        .arg("check")
        .arg(&cnn)
        .args(["--max-memory", "lots"])
        .output()
        .unwrap();
    assert_code(&bad, 1);
    assert!(stderr(&bad).contains("not a size"), "{}", stderr(&bad));
}

/// `gradcheck` allocated the parameters (in f32 and f64) without a check and aborted on a model
/// `train` refuses; its need is counted at `--batch`, with the f64 copies of the interpreter.
#[test]
fn gradcheck_is_refused_by_the_memory_it_needs_at_its_batch() {
    let s = Scratch::new("memory-gradcheck");
    let file = s.write("big.nn", HUGE);
    let out = nnc()
        .arg("gradcheck")
        .arg(&file)
        .args(["--max-memory", "8G"])
        .output()
        .unwrap();
    assert_code(&out, 1);
    let err = stderr(&out);
    for part in [
        "nnc::memory",
        "checking the gradients of `Big` with batch 2 needs about",
        "parameters 42.6 GiB",
        "8.00 GiB allowed by --max-memory",
        "lower --batch",
    ] {
        assert!(err.contains(part), "no `{part}` in\n{err}");
    }
    let mlp = root().join("examples/mnist_mlp.nn");
    let gradcheck = |batch: &str| {
        nnc()
            .arg("gradcheck")
            .arg(&mlp)
            .args(["--batch", batch, "--max-memory", "1G"])
            .output()
            .unwrap()
    };
    // The inputs and activations of 100000 MNIST images, in f32 and f64: about 2 GiB.
    let big = gradcheck("100000");
    assert_code(&big, 1);
    assert!(
        stderr(&big).contains("checking the gradients of `Mlp` with batch 100000 needs about"),
        "{}",
        stderr(&big)
    );
    let small = gradcheck("2");
    assert_code(&small, 0);
    assert!(
        stdout(&small).contains("gradient check passed"),
        "{}",
        stdout(&small)
    );
}
