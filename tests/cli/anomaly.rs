//! NaN and infinities: training stops at the first non-finite loss or gradient naming the step,
//! the tensor and the op; the last good checkpoint stays intact; `--detect-anomaly` also stops
//! at non-finite intermediate values that never reach the loss.

use super::common::*;
use nnc::runtime::checkpoint::Checkpoint;
use std::path::Path;

/// `nnc train FILE ARGS…` on the JIT, then on the interpreter (`--interp`): each must fail as a
/// user error (exit 1, no panic). Their stderr, in that order.
fn train_fails_on_both_backends(file: &Path, args: &[&str]) -> [String; 2] {
    [&[][..], &["--interp"][..]]
        .map(|backend| user_error(&run!("train", file; args.iter().chain(backend))))
}

/// A linear model with a learning rate so large that the weights overflow within a few steps.
const DIVERGES: &str = r#"
model M(x: [2]) -> [1] {
    return x |> dense(8) |> dense(1)
}
data d {
    train: inline(x: [[1, 2], [3, 4], [5, 6], [7, 8]], y: [[1], [2], [3], [4]])
    test: inline(x: [[1, 2]], y: [[1]])
}
train M on d {
    loss: mse(output, label)
    optimizer: sgd(lr: 10)
    batch: 4
    steps: 200
    shuffle: false
    eval: every 100 steps
}
"#;

/// Inputs of 3e38 overflow the first layer's matmul to ±inf; the sigmoid saturates them to 0 and
/// 1, so the loss and the gradients stay finite and plain training goes on.
const HIDDEN_OVERFLOW: &str = r#"
model M(x: [4]) -> [1] {
    return x |> dense(64) |> sigmoid |> dense(1)
}
data d {
    train: inline(x: [[3e38, 3e38, 3e38, 3e38], [-3e38, -3e38, -3e38, -3e38]], y: [[1], [0]])
    test: inline(x: [[1, 1, 1, 1]], y: [[1]])
}
train M on d {
    loss: mse(output, label)
    optimizer: sgd(lr: 0.1)
    batch: 2
    steps: 5
    shuffle: false
}
"#;

/// What `--detect-anomaly` says of [`HIDDEN_OVERFLOW`].
const HIDDEN_INFINITY: &str =
    "step 1: an infinity first appears in `%4 = matmul %0, %2 : f32[B,64]  ; dense1`";

#[test]
fn a_diverging_run_stops_naming_the_step_tensor_and_op() {
    let s = Scratch::new("anomaly-diverge");
    let file = s.write("diverge.nn", DIVERGES);
    for err in train_fails_on_both_backends(&file, &["--quiet"]) {
        // Step 4 is the first whose forward pass overflows (both backends agree).
        assert_has(
            &err,
            &[
                "step 4",
                "the loss is", // inf, or NaN where inf − inf was summed first
                "the gradient of `dense1.weight` is not finite",
                "first appears in `%8 = matmul %5, %6 : f32[B,1]  ; dense2`",
                // The step before's huge loss says why.
                "step 3's loss was ",
                ": training is diverging, a lower learning rate may help",
                "training stopped before this step's update",
            ],
        );
    }
}

/// RMSprop's first step moves each weight by about 10·lr whatever its gradient: with `lr: 1e38`
/// the weights are infinite after step 1, and step 2 stops. The report says that the parameter
/// itself overflowed in step 1's update, not only that "the gradient" is not finite.
#[test]
fn a_parameter_an_update_overflowed_is_named_as_such() {
    let s = Scratch::new("anomaly-param");
    let file = s.write(
        "param.nn",
        r#"
model N(x: [4]) -> [3] { return x |> dense(3) }
data d { train: inline(x: [[1, 2, 3, 4], [0, -1, 2, 0.5], [3, 3, 3, 3.001]], y: [[0], [1], [2]]) }
train N on d {
    loss: cross_entropy(output, label), optimizer: rmsprop(lr: 1e38)
    batch: 3, steps: 5, eval: every 100 steps
}
"#,
    );
    for err in train_fails_on_both_backends(&file, &["--quiet"]) {
        assert_has(
            &err,
            &[
                "step 2: the loss is NaN",
                "first appears in `%2 = param dense1.weight",
                "the parameter itself is not finite: step 1's update overflowed it",
            ],
        );
    }
}

/// An update that overflows the parameters is caught before a checkpoint keeps them: the last
/// step's (which no later step checks: the run ended "successfully", printing NaN outputs, with
/// a checkpoint every reader refuses), and one a periodic checkpoint or an evaluation follows.
#[test]
fn a_checkpoint_never_keeps_parameters_an_update_overflowed() {
    let s = Scratch::new("anomaly-checkpoint");
    let src = |extra: &str| {
        format!(
            r#"
model N(x: [4]) -> [3] {{ return x |> dense(3) }}
data d {{ train: inline(x: [[1, 2, 3, 4], [0, -1, 2, 0.5], [3, 3, 3, 3.001]], y: [[0], [1], [2]]) }}
train N on d {{ loss: cross_entropy(output, label), optimizer: rmsprop(lr: 1e38), batch: 3, {extra} }}
"#
        )
    };
    let said = "step 1's update made `dense1.weight` hold -inf at index [0, 0]";
    for (name, extra, args) in [
        ("last.nn", "steps: 1", &[][..]),
        (
            "every.nn",
            "steps: 5, eval: every 100 steps",
            &["--checkpoint-every", "1"][..],
        ),
        ("eval.nn", "steps: 5", &[][..]),
    ] {
        let file = s.write(name, src(extra));
        let ck = s.path(&format!("{name}.st"));
        let out = nnc()
            .arg("train")
            .arg(&file)
            .arg("--quiet")
            .arg("--checkpoint")
            .arg(&ck)
            .args(args)
            .output()
            .unwrap();
        assert_code(&out, 1);
        assert_has(&stderr(&out), &[said, "was not written"]);
        assert!(!ck.exists(), "{name}: {} was written", ck.display());
    }
    // Without a checkpoint, the run still fails.
    let file = s.write("plain.nn", src("steps: 1"));
    let err = user_error(&run!("train", &file, "--quiet"));
    assert_has(&err, &[said, "a lower learning rate may help"]);
}

/// The evaluations before a diverging run stops print its growing loss in scientific notation
/// (`1.234e24`), not as 25 digits and four decimals.
#[test]
fn a_huge_test_loss_prints_in_scientific_notation() {
    let s = Scratch::new("anomaly-huge-loss");
    let file = s.write(
        "diverge.nn",
        DIVERGES.replace("every 100 steps", "every 1 step [loss]"),
    );
    let err = user_error(&run!("train", &file));
    let lines: Vec<&str> = err.lines().filter(|l| l.contains(": test loss")).collect();
    assert!(lines.len() >= 2, "{err}");
    for l in lines {
        let loss = l.rsplit("test loss ").next().unwrap();
        assert!(loss.len() <= 10, "`{loss}` in\n{err}");
    }
    // The evaluation after step 3 is the first to overflow: it stops the run, and its
    // training loss says why.
    assert_has(
        &err,
        &[
            "run `M`, step 3: the test loss is NaN",
            "overflow the model on this data, and the step's training loss was 2.",
            "e36: training is diverging, a lower learning rate may help",
        ],
    );
    assert_eq!(nnc::runtime::train::loss_text(0.5), "0.5000");
    assert_eq!(nnc::runtime::train::loss_text(1.26e24), "1.260e24");
}

#[test]
fn the_last_good_checkpoint_survives_a_nan() {
    let s = Scratch::new("anomaly-checkpoint");
    let file = s.write("diverge.nn", DIVERGES);
    let ckpt = s.path("m.safetensors");
    let out = nnc()
        .arg("train")
        .arg(&file)
        .args(["--quiet", "--checkpoint-every", "1", "--checkpoint"])
        .arg(&ckpt)
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert!(stderr(&out).contains("step 4"), "{}", stderr(&out));
    // Every step saves: the checkpoint holds the state after step 3, the last good one, and
    // the failing step 4 wrote nothing.
    let ck = Checkpoint::load(&ckpt).expect("the checkpoint loads");
    assert_eq!(ck.step, Some(3));
    let w = ck.get("dense1.weight", &[2, 8]).unwrap();
    assert!(w.data.iter().all(|x| x.is_finite()));
    // No temporary file is left beside it.
    let names: Vec<_> = std::fs::read_dir(s.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        !names.iter().any(|n| n.to_string_lossy().ends_with(".tmp")),
        "{names:?}"
    );
    // And training resumes from it (to the same failure: the data and lr are the same).
    let out = nnc()
        .arg("train")
        .arg(&file)
        .args(["--quiet", "--resume"])
        .arg(&ckpt)
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert!(stderr(&out).contains("step 4"), "{}", stderr(&out));
}

#[test]
fn detect_anomaly_stops_at_an_intermediate_the_loss_never_sees() {
    let s = Scratch::new("anomaly-detect");
    let file = s.write("hidden.nn", HIDDEN_OVERFLOW);
    let plain = nnc()
        .arg("train")
        .arg(&file)
        .arg("--quiet")
        .output()
        .unwrap();
    assert_code(&plain, 0);
    for err in train_fails_on_both_backends(&file, &["--quiet", "--detect-anomaly"]) {
        assert_has(&err, &[HIDDEN_INFINITY]);
        assert!(!err.contains("the loss is"), "{err}");
    }
}

/// A run that clips its gradients (so far above their norm here that it never engages: the
/// run is the diverging one) updates after the backward pass, from gradients checked first:
/// it stops at the same step with the same report, and `--detect-anomaly` still finds an
/// intermediate value the loss never sees.
#[test]
fn a_run_that_clips_still_stops_at_the_first_non_finite_value() {
    let s = Scratch::new("anomaly-clip");
    let clip =
        |src: &str| src.replace("shuffle: false", "shuffle: false\n    clip_grad_norm: 1e30");
    let diverges = s.write("diverge.nn", clip(DIVERGES));
    let hidden = s.write("hidden.nn", clip(HIDDEN_OVERFLOW));
    for err in train_fails_on_both_backends(&diverges, &["--quiet"]) {
        assert_has(
            &err,
            &[
                "step 4",
                "the gradient of `dense1.weight` is not finite",
                "first appears in `%8 = matmul %5, %6 : f32[B,1]  ; dense2`",
                "training stopped before this step's update",
            ],
        );
    }
    for err in train_fails_on_both_backends(&hidden, &["--quiet", "--detect-anomaly"]) {
        assert_has(&err, &[HIDDEN_INFINITY]);
    }
}

/// A checkpoint whose weights are finite but so large that the model overflows on its data:
/// `nnc eval` printed `test loss inf` and exited 0, and `nnc predict` printed `inf` as a
/// regression's answer. Both are errors naming where the infinity first appears.
#[test]
fn eval_and_predict_refuse_a_model_that_overflows() {
    let s = Scratch::new("anomaly-eval-overflow");
    let file = s.write(
        "m.nn",
        DIVERGES
            .replace("lr: 10", "lr: 0.001")
            .replace("steps: 200", "steps: 2"),
    );
    let ckpt = s.path("m.st");
    succeeded(&run!("train", &file, "--quiet", "--checkpoint", &ckpt));
    let mut ck = Checkpoint::load(&ckpt).unwrap();
    for w in &mut ck.tensors.get_mut("dense1.weight").unwrap().data {
        *w = 3e38;
    }
    let huge = s.path("huge.st");
    ck.save_to(&huge).unwrap();
    let err = user_error(&run!("eval", &file, "--checkpoint", &huge));
    assert_has(
        &err,
        &[
            "run `M`: the test loss is", // NaN: inf − inf in the second layer
            "(first at sample 0)",
            "an infinity first appears in `%4 = matmul %0, %2 : f32[B,8]  ; dense1`",
            "the parameters overflow the model on this data",
        ],
    );
    let input = s.write("in.csv", "1,2\n3,4\n");
    let err = user_error(&run!(
        "predict",
        &file,
        "--checkpoint",
        &huge,
        "--input",
        &input
    ));
    assert_has(
        &err,
        &["the model's output for sample 0 is NaN (value 0 of 1): the parameters overflow"],
    );
    // The checkpoint as trained evaluates as before.
    assert_has(
        &succeeded(&run!("eval", &file, "--checkpoint", &ckpt)),
        &["run M: test loss"],
    );
}

/// Test inputs that the trained model overflows on, while the training data keeps the loss
/// finite: the periodic evaluation printed `test loss inf` and training went on to exit 0.
/// It now stops the run at that step, naming the batch and the op, as `nnc eval` does.
#[test]
fn train_stops_when_its_evaluation_overflows() {
    let s = Scratch::new("anomaly-train-eval-overflow");
    let file = s.write(
        "m.nn",
        DIVERGES
            .replace("lr: 10", "lr: 0.001")
            .replace("steps: 200", "steps: 6")
            .replace("every 100 steps", "every 3 steps [loss]")
            .replace(
                "test: inline(x: [[1, 2]]",
                "test: inline(x: [[5, 6], [3e38, 3e38]]",
            )
            .replace("y: [[1]])", "y: [[1], [2]])"),
    );
    let log = s.path("log.jsonl");
    let err = user_error(&run!("train", &file, "--quiet", "--log-json", &log));
    assert_has(
        &err,
        &[
            "run `M`, step 3: the test loss is",
            "(first in the batch of samples 0 to 1)",
            "an infinity first appears in `%10 = mse %9, %1 : f32[]  ; mse`",
            "training stopped: the parameters after this step overflow the model on this data, \
             though the step's training loss was ",
            ": check that the data is scaled as the training data is",
        ],
    );
    // The steps before the evaluation are in the log, and no evaluation record is.
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches(r#""type":"step""#).count(), 3, "{text}");
    assert!(!text.contains(r#""type":"eval""#), "{text}");
}

/// A first batch whose values overflow a batch norm's variance (x² > 3.4e38): its output
/// normalizes to 0, so the loss and gradients stay finite, but the infinite variance would enter
/// the running statistics. Training stops at that step naming the batch norm, not at the end of
/// the run blaming "step 4's update" and the learning rate.
#[test]
fn infinite_batch_statistics_stop_the_step_that_computed_them() {
    let s = Scratch::new("anomaly-batch-stats");
    let file = s.write(
        "bn.nn",
        r#"
model M(x: [2]) -> [1] {
    return x |> dense(4) |> batch_norm |> dense(1)
}
data d {
    train: inline(x: [[5e37, 6e37], [-7e37, 8e37], [1, 2], [3, 4], [5, 6], [7, 8], [9, 1], [2, 3]],
                  y: [[1], [2], [3], [4], [1], [2], [3], [4]])
    test: inline(x: [[1, 2]], y: [[1]])
}
train M on d {
    loss: mse(output, label)
    optimizer: sgd(lr: 0.01)
    batch: 2
    steps: 4
    shuffle: false
}
"#,
    );
    for backend in [&[][..], &["--interp"][..], &["--opt", "0"][..]] {
        let out = nnc()
            .arg("train")
            .arg(&file)
            .arg("--quiet")
            .args(backend)
            .output()
            .unwrap();
        assert_code(&out, 1);
        let err = stderr(&out);
        for part in [
            "step 1: the batch statistics of `batch_norm1` are not finite",
            "first appears in `%",
            "batch_stats momentum=0.1",
            "training stopped before this step's update",
        ] {
            assert!(err.contains(part), "{backend:?}: no `{part}` in\n{err}");
        }
    }
}
