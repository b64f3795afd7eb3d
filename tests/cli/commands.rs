//! The commands as a user runs them: check, ir, train, eval, predict, gradcheck, bench.

use super::common::*;

/// `nnc ARGS` run in the repository (example paths as written in the README).
fn in_root(args: &[&str]) -> std::process::Output {
    nnc().args(args).current_dir(root()).output().unwrap()
}

/// A character model `M` of a three-letter text `corpus.txt` (windows of 4 ids), trained one
/// step of batch 2; `data` adds settings to its data block (`"    split: 0.99\n"`).
fn char_model(data: &str) -> String {
    format!(
        "model M(x: i32[4]) -> [4, 3] {{\n    return x |> embedding(3, 2) |> dense(3)\n}}\n\
         data d {{\n    train: text(\"corpus.txt\", seq: 4)\n{data}}}\n\
         train M on d {{\n    loss: cross_entropy(output, label)\n    optimizer: sgd(lr: 0.1)\n    batch: 2\n    steps: 1\n}}\n"
    )
}

#[test]
fn every_example_checks_and_reports_parameters_and_flops() {
    assert_eq!(examples().len(), 7);
    for ex in examples() {
        let out = nnc().arg("check").arg(&ex).output().unwrap();
        assert!(out.status.success(), "{}: {}", ex.display(), stderr(&out));
        let text = stdout(&out);
        assert!(
            text.contains("parameters") && text.contains("FLOPs/sample"),
            "{text}"
        );
    }
    let out = in_root(&["check", "examples/mnist_cnn.nn"]);
    assert!(
        stdout(&out).contains("421,642 parameters"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn every_ui_file_exits_1_with_its_diagnostic_and_no_panic_or_0_with_only_warnings() {
    let dir = root().join("tests/ui");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|e| e != "nn") {
            continue;
        }
        n += 1;
        let out = nnc().arg("check").arg(&p).output().unwrap();
        let err = stderr(&out);
        let expected = std::fs::read_to_string(p.with_extension("stderr")).unwrap();
        let code = if expected.contains('×') { 1 } else { 0 };
        assert_eq!(out.status.code(), Some(code), "{}: {err}", p.display());
        assert!(!err.contains("panicked"), "{}: {err}", p.display());
        // The headline of every expected diagnostic appears in what the binary printed.
        let marks: &[char] = &['×', '⚠'];
        for line in expected
            .lines()
            .filter(|l| l.trim_start().starts_with(marks))
        {
            let headline = line.trim_start().trim_start_matches(marks).trim();
            assert!(
                err.contains(headline),
                "{}: missing `{headline}` in\n{err}",
                p.display()
            );
        }
    }
    assert!(n >= 25, "only {n} ui files");
}

#[test]
fn a_missing_file_and_bad_utf8_are_user_errors() {
    let out = nnc().args(["check", "no/such/file.nn"]).output().unwrap();
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("cannot read no/such/file.nn"),
        "{}",
        stderr(&out)
    );
    let tmp = std::env::temp_dir().join(format!("nnc-cli-{}.nn", std::process::id()));
    std::fs::write(&tmp, b"model M(x: [2]) { return x }\xff\xfe").unwrap();
    let out = nnc().arg("check").arg(&tmp).output().unwrap();
    std::fs::remove_file(&tmp).ok();
    assert_code(&out, 1);
    assert!(stderr(&out).contains("not UTF-8"), "{}", stderr(&out));
}

#[test]
fn xor_trains_from_the_cli_to_within_0_1_of_every_target() {
    let out = in_root(&["train", "examples/xor.nn", "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    // The run is named after its model: the name once.
    assert!(text.contains("\nXor after training:\n"), "{text}");
    let rows: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.contains("→ output"))
        .map(|l| {
            let num = |key: &str| -> f64 {
                let rest = &l[l.find(key).unwrap() + key.len()..];
                rest[..rest.find(']').unwrap()].trim().parse().unwrap()
            };
            (num("output ["), num("target ["))
        })
        .collect();
    assert_eq!(rows.len(), 4, "{text}");
    for (o, t) in rows {
        assert!((o - t).abs() < 0.1, "output {o} for target {t}\n{text}");
    }
}

/// A sequence model of token ids trained on inline rows (ids in `x`, one class id a position in
/// `y`): inline data used to feed f32 values only, so such a model needed a text file. It learns
/// the cycle 0 → 1 → 2 → 0; the table after training shows the class predicted at each
/// position, and `eval` measures every position right.
#[test]
fn a_model_of_token_ids_trains_on_inline_ids() {
    let s = Scratch::new("inline-token-ids");
    let nn = s.write(
        "next.nn",
        "model Next(tokens: i32[4]) -> [4, 3] {\n\
         \x20   return tokens |> embedding(3, 8) |> rnn(16) |> dense(3)\n}\n\
         data cycles {\n\
         \x20   train: inline(x: [[0, 1, 2, 0], [1, 2, 0, 1], [2, 0, 1, 2]],\n\
         \x20                 y: [[1, 2, 0, 1], [2, 0, 1, 2], [0, 1, 2, 0]])\n}\n\
         train Next on cycles {\n\
         \x20   loss: cross_entropy(output, label)\n\
         \x20   optimizer: adam(lr: 0.05)\n\
         \x20   steps: 150, batch: 3\n}\n",
    );
    let ck = s.path("next.st");
    let text = succeeded(&run!("train", &nn, "--quiet", "--checkpoint", &ck));
    assert_has(
        &text,
        &[
            "input [0, 1, 2, 0] → output [1, 2, 0, 1]   target [1, 2, 0, 1]",
            "input [1, 2, 0, 1] → output [2, 0, 1, 2]   target [2, 0, 1, 2]",
            "input [2, 0, 1, 2] → output [0, 1, 2, 0]   target [0, 1, 2, 0]",
        ],
    );
    let eval = succeeded(&run!("eval", &nn, "--checkpoint", &ck));
    assert_has(&eval, &["on 3 samples, accuracy 100.00%"]);
}

/// XOR without a `test:` source and `split: 0.9`: the split holds out its fourth row, which the
/// table after training marks (it was shown as if trained on, far from its target); without a
/// `split`, no row is held out.
#[test]
fn the_table_after_training_marks_rows_held_out_by_split() {
    let s = Scratch::new("held-out-rows");
    let nn = s.write(
        "xor.nn",
        "model X(x: [2]) -> [1] { return x |> dense(4) |> tanh |> dense(1) }\n\
         data d {\n    train: inline(x: [[0, 0], [0, 1], [1, 0], [1, 1]], y: [[0], [1], [1], [0]])\n    split: 0.9\n}\n\
         train X on d {\n    loss: mse(output, label)\n    optimizer: sgd(lr: 0.1)\n    steps: 2\n}\n",
    );
    let held_out = |nn: &std::path::Path| -> Vec<bool> {
        let text = succeeded(&run!("train", nn, "--quiet"));
        let rows: Vec<bool> = text
            .lines()
            .filter(|l| l.contains("→ output"))
            .map(|row| row.contains("held out by `split`"))
            .collect();
        assert_eq!(rows.len(), 4, "{text}");
        rows
    };
    assert_eq!(held_out(&nn), [false, false, false, true]);
    let text = std::fs::read_to_string(&nn).unwrap();
    let whole = s.write("whole.nn", text.replace("    split: 0.9\n", ""));
    assert_eq!(held_out(&whole), [false; 4]);
}

/// After training on inline data, a long input (a small image's 16 values) is shown by its
/// ends and its length, not whole, while XOR's two values stay as they are (above).
#[test]
fn long_inline_inputs_are_abbreviated_after_training() {
    let s = Scratch::new("inline-abbreviated");
    let image = |v: u32| {
        let rows: Vec<String> = (0..4)
            .map(|r| format!("[{}]", [r * 4 + v; 4].map(|x| x.to_string()).join(", ")))
            .collect();
        format!("[[{}]]", rows.join(", "))
    };
    let nn = s.write(
        "c.nn",
        format!(
            "model C(x: [1, 4, 4]) -> [2] {{\n    return x |> conv2d(2, kernel: 3) |> flatten |> dense(2)\n}}\n\
             data d {{ train: inline(x: [{}, {}], y: [0, 1]) }}\n\
             train C on d {{\n    loss: cross_entropy(output, label)\n    optimizer: sgd(lr: 0.1)\n    batch: 2, steps: 1\n}}\n",
            image(0),
            image(1)
        ),
    );
    let text = succeeded(&run!("train", &nn, "--quiet"));
    let rows: Vec<&str> = text.lines().filter(|l| l.contains("→ output")).collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(
        rows[0].starts_with("  input [0, 0, 0, …, 12, 12, 12] (16 values) → output ["),
        "{text}"
    );
    assert!(rows[1].ends_with("target [1]"), "{text}");
}

#[test]
fn gradcheck_passes_on_xor_and_the_mlp() {
    for ex in [
        "examples/xor.nn",
        "examples/mnist_mlp.nn",
        "examples/autoencoder_finetune.nn",
    ] {
        let out = in_root(&["gradcheck", ex]);
        assert!(
            out.status.success(),
            "{ex}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert!(stdout(&out).contains("gradient check passed"));
    }
}

/// Two samples through a `batch_norm` are normalized to ±1 up to rounding, so its gradients at
/// `gradcheck`'s batch of 2 were f32 cancellation (the MLP with one failed at 1.6e-3): a file
/// with a batch norm is checked at batch 4, and passes.
#[test]
fn gradcheck_takes_a_batch_of_4_for_a_batch_norm() {
    let s = Scratch::new("gradcheck-batch-norm");
    let src = std::fs::read_to_string(root().join("examples/mnist_mlp.nn"))
        .unwrap()
        .replace("dense(128) |> relu", "dense(128) |> batch_norm |> relu");
    let file = s.write("bn.nn", src);
    let out = run!("gradcheck", &file);
    assert!(succeeded(&out).contains("gradient check passed"));
}

/// `check --stats` counts the kernels of one training step. The MLP's 9: three GEMMs with
/// epilogues (dense1 with its bias and relu, dense2 with its bias and the loss's gradient, the
/// gradient into dense1 masked by relu'), the loss as two (each sample's sum, then their mean),
/// two bias gradients, two weight gradients. Without epilogue fusion the two forward chains,
/// the loss gradient and the relu gradient are 4 kernels more. The CNN's 19 include conv1 with
/// its pooling written besides its output, conv2's max-pool gradient with relu's mask applied,
/// and conv1's weight and bias gradients read from its pooling's gradient as two (every image
/// bordered, then the sums).
#[test]
fn check_stats_counts_the_kernels_with_fused_epilogues() {
    for (example, line) in [
        ("examples/mnist_mlp.nn", "15 nodes, 9 kernels"),
        ("examples/mnist_cnn.nn", "32 nodes, 19 kernels"),
    ] {
        let out = in_root(&["check", "--stats", example]);
        assert_code(&out, 0);
        assert!(stdout(&out).contains(line), "{example}: {}", stdout(&out));
        // The plan holds the gradients too; the footprint line counts them apart.
        assert!(
            stdout(&out).contains("a step's values (activations and gradients) at batch"),
            "{}",
            stdout(&out)
        );
    }
}

/// With its first convolution frozen, a CNN's training step compiles to a graph the JIT lowers
/// further (`kernel_graph` adds nodes): `--stats` named each convolution by an index into the
/// graph before lowering, and panicked (index out of bounds). It names the three convolutions
/// the step runs: both forward ones and conv2's weight gradient (no input gradient reaches conv1).
#[test]
fn check_stats_names_the_convolutions_of_a_run_with_a_frozen_layer() {
    let s = Scratch::new("stats-frozen-conv");
    let file = s.write(
        "frozen.nn",
        r#"
model Enc(image: [1, 28, 28]) -> [16] {
    x = image |> conv2d(8, kernel: 5, padding: "same") |> relu |> maxpool(2)
    return x |> conv2d(16, kernel: 3) |> relu |> global_avgpool |> layer_norm
}
model Clf(image: [1, 28, 28]) -> [10] { return image |> Enc |> dense(10) }
data mnist { train: idx("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz") }
train Clf on mnist {
    loss: cross_entropy(output, label)
    optimizer: sgd(lr: 0.05, momentum: 0.9)
    freeze: enc.conv1
}
"#,
    );
    let out = succeeded(&run!("check", &file, "--stats"));
    let line = out
        .lines()
        .find(|l| l.contains("convolutions:"))
        .unwrap_or_else(|| panic!("no convolutions line in\n{out}"));
    assert_eq!(line.matches("conv2d").count(), 3, "{line}");
    assert_has(
        line,
        &[
            "conv2d_epi enc.conv1",
            "conv2d_epi enc.conv2",
            "grad enc.conv2.weight",
        ],
    );
    assert!(!line.contains("enc.conv1.weight"), "{line}");
}

#[test]
fn checking_a_file_with_no_model_and_no_run_says_so() {
    let dir = std::env::temp_dir().join(format!("nnc-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("empty.nn");
    std::fs::write(&path, "// nothing yet\n").unwrap();
    let out = nnc().arg("check").arg(&path).output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("no model and no run"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn ir_prints_every_stage() {
    for (stage, marker) in [
        ("ast", "model Xor"),
        ("ir", "graph model Xor"),
        ("grad", "output grad:dense1.weight"),
        ("opt", "output grad:dense1.weight"),
        ("fused", "matmul_epi [bias_add axis=1 → sigmoid]"),
        ("plan", "buffers for"),
        ("clif", "function "),
        ("asm", "ret"),
    ] {
        let out = in_root(&["ir", "examples/xor.nn", "--stage", stage]);
        assert!(out.status.success(), "{stage}: {}", stderr(&out));
        assert!(
            stdout(&out).contains(marker),
            "{stage}: no `{marker}` in\n{}",
            stdout(&out)
        );
    }
}

/// A class id outside the model's classes is shown under the data source that holds it, as
/// other data errors are (it was a bare line, without the file's snippet or a code).
#[test]
fn a_label_that_is_not_a_class_is_shown_under_its_source() {
    let s = Scratch::new("label-not-a-class");
    s.write("points.csv", "0,0,0\n0,1,5\n1,0,1\n");
    let nn = s.write(
        "m.nn",
        "model M(x: [2]) -> [2] { return x |> dense(2) }\n\
         data d { train: csv(\"points.csv\") }\n\
         train M on d { loss: cross_entropy(output, label) optimizer: sgd(lr: 0.1) steps: 1 }\n",
    );
    let err = user_error(&run!("train", &nn));
    assert_has(
        &err,
        &[
            "nnc::data",
            "label 5 of train sample 1 is not a class id in 0..2",
            "train: csv(\"points.csv\")",
            "while checking the labels of `d` for run `M`",
        ],
    );
}

/// `binary_cross_entropy` and `cross_entropy` of one-hot labels take their targets as
/// probabilities: a target of 2 or -1 trained silently (towards a loss without a bound below).
/// It is refused under the source that holds it, in `train` and in `eval`, as is a model's
/// input that is its own target and was not scaled into [0, 1].
#[test]
fn targets_that_are_not_probabilities_are_refused() {
    let s = Scratch::new("target-not-a-probability");
    s.write("points.csv", "0,0,0\n0,1,1\n1,0,2\n");
    let bce = s.write(
        "bce.nn",
        "model M(x: [2]) -> [1] { return x |> dense(1) |> sigmoid }\n\
         data d { train: csv(\"points.csv\") }\n\
         train M on d { loss: binary_cross_entropy(output, label) optimizer: sgd(lr: 0.1) steps: 1 }\n",
    );
    let err = user_error(&run!("train", &bce));
    assert_has(
        &err,
        &[
            "nnc::data",
            "label 2 of train sample 2 is not a probability in [0, 1]: binary_cross_entropy",
            "train: csv(\"points.csv\")",
            "while checking the labels of `d` for run `M`",
        ],
    );
    let ck = s.path("m.st");
    let ok = s.write("ok.csv", "0,0,0\n0,1,1\n1,0,0.5\n");
    let ok_nn = s.write(
        "ok.nn",
        std::fs::read_to_string(&bce)
            .unwrap()
            .replace("points.csv", "ok.csv"),
    );
    assert!(ok.exists());
    succeeded(&run!("train", &ok_nn, "--quiet", "--checkpoint", &ck));
    let err = user_error(&run!("eval", &bce, "--checkpoint", &ck));
    assert_has(&err, &["label 2 of train sample 2 is not a probability"]);
    // One-hot labels, one of them not.
    let onehot = s.write(
        "onehot.nn",
        "model M(x: [2]) -> [2] { return x |> dense(2) }\n\
         data d { train: inline(x: [[0, 0], [1, 1]], y: [[1, 0], [0, -1]]) }\n\
         train M on d { loss: cross_entropy(output, label) optimizer: sgd(lr: 0.1) steps: 1 }\n",
    );
    let err = user_error(&run!("train", &onehot));
    assert_has(
        &err,
        &["label -1 of train sample 1 is not a probability in [0, 1]: cross_entropy"],
    );
    // The same with label smoothing, which reads the labels through (1 − ε)·y + ε/K.
    let smoothed = s.write(
        "smoothed.nn",
        std::fs::read_to_string(&onehot)
            .unwrap()
            .replace("(output, label)", "(output, label, label_smoothing: 0.1)"),
    );
    let err = user_error(&run!("train", &smoothed));
    assert_has(
        &err,
        &["label -1 of train sample 1 is not a probability in [0, 1]: cross_entropy"],
    );
    // A reconstruction whose target is its own input.
    let ae = s.write(
        "ae.nn",
        "model A(x: [2]) -> [2] { return x |> dense(2) |> sigmoid }\n\
         data d { train: inline(x: [[0, 0.5], [1, 3]], y: [[0], [1]]) }\n\
         train A on d { loss: binary_cross_entropy(output, x) optimizer: sgd(lr: 0.1) steps: 1 }\n",
    );
    let err = user_error(&run!("train", &ae));
    assert_has(
        &err,
        &[
            "input value 3 of train sample 1 is not a probability in [0, 1]",
            "while checking the inputs (the loss's targets) of `d` for run `A`",
        ],
    );
    assert!(!err.contains("the targets are the inputs as this leaves them"));
    // The same, where `normalize` scaled the inputs to [-1, 1] (as for a classifier): the
    // normalization is pointed at, with the scale the loss needs.
    let ae = s.write(
        "ae_normalized.nn",
        "model A(x: [2]) -> [2] { return x |> dense(2) |> sigmoid }\n\
         data d { train: inline(x: [[0, 255], [255, 0]], y: [[0], [1]])\n\
         normalize: (x / 255 - 0.5) / 0.5 }\n\
         train A on d { loss: binary_cross_entropy(output, x) optimizer: sgd(lr: 0.1) steps: 1 }\n",
    );
    let err = user_error(&run!("train", &ae));
    assert_has(
        &err,
        &[
            "input value -1 of train sample 0 is not a probability in [0, 1]",
            "normalize: (x / 255 - 0.5) / 0.5",
            "the targets are the inputs as this leaves them",
            "scale the inputs into [0, 1] here, e.g. `normalize: x / 255`",
        ],
    );
}

/// A `--data-dir` one folder above the data files (`../shared/data` for `../shared/data/mnist`)
/// is answered with the folder that holds them.
#[test]
fn data_in_a_folder_below_the_data_dir_is_pointed_to() {
    let s = Scratch::new("data-below");
    std::fs::create_dir_all(s.dir().join("toy")).unwrap();
    s.write("toy/points.csv", "0,0,0\n0,1,1\n1,0,1\n1,1,0\n");
    let nn = s.write(
        "m.nn",
        "model M(x: [2]) -> [1] { return x |> dense(1) }\n\
         data d { train: csv(\"points.csv\") }\n\
         train M on d { loss: mse(output, label) optimizer: sgd(lr: 0.1) steps: 1 }\n",
    );
    let err = user_error(&run!("train", &nn, "--data-dir", s.dir()));
    let toy = s.dir().join("toy");
    assert_has(&err, &[&format!("use `--data-dir {}`", toy.display())]);
    succeeded(&run!("train", &nn, "--quiet", "--data-dir", &toy));
}

/// The same for a `.nn` file named without a folder (`nnc train m.nn`): its data folder is the
/// current one, which was not looked into (`read_dir("")` fails), so nothing was suggested.
#[test]
fn data_in_a_folder_below_the_current_folder_is_pointed_to() {
    let s = Scratch::new("data-below-here");
    std::fs::create_dir_all(s.dir().join("toy")).unwrap();
    s.write("toy/points.csv", "0,0,0\n0,1,1\n1,0,1\n1,1,0\n");
    s.write(
        "m.nn",
        "model M(x: [2]) -> [1] { return x |> dense(1) }\n\
         data d { train: csv(\"points.csv\") }\n\
         train M on d { loss: mse(output, label) optimizer: sgd(lr: 0.1) steps: 1 }\n",
    );
    let out = nnc()
        .args(["train", "m.nn"])
        .current_dir(s.dir())
        .output()
        .unwrap();
    assert_has(
        &user_error(&out),
        &["the file is in toy: use `--data-dir toy`"],
    );
}

#[test]
fn missing_data_and_checkpoints_are_named_in_the_error() {
    let out = in_root(&[
        "train",
        "examples/mnist_mlp.nn",
        "--quiet",
        "--data-dir",
        "tests",
    ]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("tests/train-images-idx3-ubyte.gz"),
        "{}",
        stderr(&out)
    );
    // Rendered under the data source it comes from, in the .nn file.
    assert!(
        stderr(&out).contains("while loading the training split of `mnist`"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("train: idx("), "{}", stderr(&out));
    let out = in_root(&[
        "predict",
        "examples/mnist_cnn.nn",
        "--checkpoint",
        "/nonexistent/c.safetensors",
        "--input",
        "x",
    ]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("/nonexistent/c.safetensors"),
        "{}",
        stderr(&out)
    );
}

/// A `--data-dir` that is no folder is refused naming it, by every command that takes one,
/// before the file is read: it was reported as the first data file missing in it, which sends
/// the user looking at the file.
#[test]
fn a_data_dir_that_is_no_folder_is_refused_naming_it() {
    for cmd in ["train", "eval", "bench", "predict", "sample"] {
        for (dir, why) in [
            ("/nonexistent/dir", "no such folder"),
            ("examples/xor.nn", "a file, not a folder"),
        ] {
            let out = in_root(&[cmd, "examples/mnist_mlp.nn", "--data-dir", dir]);
            assert_code(&out, 1);
            let err = stderr(&out);
            assert_has(
                &err,
                &[&format!(
                    "invalid value '{dir}' for '--data-dir <DIR>': {why}"
                )],
            );
            assert!(!err.contains("train-images"), "{cmd}: {err}");
        }
    }
}

#[test]
fn a_corrupt_checkpoint_is_a_user_error() {
    let tmp = std::env::temp_dir().join(format!("nnc-corrupt-{}.safetensors", std::process::id()));
    std::fs::write(&tmp, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json").unwrap();
    let out = nnc()
        .args([
            "predict",
            "examples/mnist_mlp.nn",
            "--input",
            "examples/xor.nn",
            "--checkpoint",
        ])
        .arg(&tmp)
        .current_dir(root())
        .output()
        .unwrap();
    std::fs::remove_file(&tmp).ok();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"));
}

#[test]
fn a_bad_command_line_is_a_user_error_and_help_is_not_an_error() {
    let out = in_root(&["train", "examples/xor.nn", "--steps", "0"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--steps"));
    let out = nnc().args(["train", "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("--log-json"));
}

#[test]
fn eval_and_predict_agree_with_training() {
    let Some(data) = mnist() else { return };
    let ckpt =
        std::env::temp_dir().join(format!("nnc-cli-eval-{}.safetensors", std::process::id()));
    let out = nnc()
        .args([
            "train",
            "examples/mnist_mlp.nn",
            "--quiet",
            "--steps",
            "100",
            "--data-dir",
        ])
        .arg(&data)
        .arg("--checkpoint")
        .arg(&ckpt)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = stdout(&out);
    let trained = summary
        .lines()
        .find(|l| l.starts_with("Mlp"))
        .expect("a summary line");
    let acc: Vec<&str> = trained
        .split_whitespace()
        .filter(|w| w.ends_with('%'))
        .collect();
    assert_eq!(acc.len(), 1, "{trained}");

    let out = nnc()
        .args(["eval", "examples/mnist_mlp.nn", "--data-dir"])
        .arg(&data)
        .arg("--checkpoint")
        .arg(&ckpt)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let eval = stdout(&out);
    assert!(
        eval.contains("on 10000 samples") && eval.contains(&format!("accuracy {}", acc[0])),
        "{eval} vs {trained}"
    );

    let out = nnc()
        .args([
            "predict",
            "examples/mnist_mlp.nn",
            "--index",
            "0",
            "--top",
            "2",
            "--input",
        ])
        .arg(data.join("t10k-images-idx3-ubyte.gz"))
        .arg("--checkpoint")
        .arg(&ckpt)
        .current_dir(root())
        .output()
        .unwrap();
    std::fs::remove_file(&ckpt).ok();
    assert!(out.status.success(), "{}", stderr(&out));
    // The first test image is a 7; 100 steps are enough to rank it first.
    let line = stdout(&out);
    assert!(line.starts_with("sample 0: 7 ("), "{line}");
    assert_eq!(line.matches('%').count(), 2, "{line}");
}

/// With a `test` source, `nnc eval` needs only the test files (here the train file is gone); a
/// missing test file is named under the `test:` line.
#[test]
fn eval_needs_only_the_files_of_a_test_source() {
    let s = Scratch::new("eval-only-test");
    let nn = s.write(
        "m.nn",
        r#"
model M(x: [2]) -> [2] {
    return x |> dense(2)
}
data d {
    train: csv("train.csv", label: -1)
    test: csv("test.csv", label: -1)
}
train M on d {
    loss: cross_entropy(output, label)
    optimizer: sgd(lr: 0.1)
    batch: 2
    steps: 2
}
"#,
    );
    let train = s.write("train.csv", "0,1,1\n1,0,0\n1,1,0\n0,0,1\n");
    let test = s.write("test.csv", "0,1,1\n1,0,0\n1,1,0\n");
    let ck = s.path("m.safetensors");
    train_to(&nn, &ck);
    std::fs::remove_file(train).unwrap();
    let eval = || {
        nnc()
            .arg("eval")
            .arg(&nn)
            .arg("--checkpoint")
            .arg(&ck)
            .output()
            .unwrap()
    };
    let out = eval();
    assert_code(&out, 0);
    assert!(stdout(&out).contains("on 3 samples"), "{}", stdout(&out));
    std::fs::remove_file(test).unwrap();
    let out = eval();
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("test.csv") && err.contains("while loading the test split"),
        "{err}"
    );
}

/// A model that does not classify shows its output values: XOR's single sigmoid output (ranked
/// as a class it was "0 (100.0%)" for every input), and the two values of a regression. `--top`
/// must be at least 1.
#[test]
fn predict_shows_the_values_of_a_model_that_does_not_classify() {
    let s = Scratch::new("predict-values");
    let ck = s.path("xor.safetensors");
    let out = nnc()
        .args(["train", "examples/xor.nn", "--quiet", "--checkpoint"])
        .arg(&ck)
        .current_dir(root())
        .output()
        .unwrap();
    assert_code(&out, 0);
    let csv = s.write("xor.csv", "0,0\n0,1\n1,0\n1,1\n");
    let predict = |nn: &str, ck: &std::path::Path, extra: &[&str]| {
        nnc()
            .args(["predict", nn, "--input"])
            .arg(&csv)
            .arg("--checkpoint")
            .arg(ck)
            .args(extra)
            .current_dir(root())
            .output()
            .unwrap()
    };
    let out = predict("examples/xor.nn", &ck, &[]);
    assert_code(&out, 0);
    let text = stdout(&out);
    let values: Vec<f32> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let v = l.strip_prefix(&format!("sample {i}: ")).expect(l);
            v.parse().unwrap_or_else(|_| panic!("{l}"))
        })
        .collect();
    assert_eq!(values.len(), 4, "{text}");
    for (v, want) in values.iter().zip([false, true, true, false]) {
        assert!((0.0..=1.0).contains(v) && (*v > 0.5) == want, "{text}");
    }

    let nn = s.write(
        "regression.nn",
        "model R(x: [2]) -> [2] {\n    return x |> dense(2)\n}\n\
         data d {\n    train: inline(x: [[0, 1], [1, 0]], y: [[1, 0], [0, 1]])\n}\n\
         train R on d {\n    loss: mse(output, label)\n    optimizer: sgd(lr: 0.1)\n    batch: 2\n    steps: 1\n}\n",
    );
    let rck = s.path("r.safetensors");
    train_to(&nn, &rck);
    let out = predict(&nn.to_string_lossy(), &rck, &["--index", "3"]);
    assert_code(&out, 0);
    let line = stdout(&out);
    let values: Vec<&str> = line
        .strip_prefix("sample 3: ")
        .expect(&line)
        .split_whitespace()
        .collect();
    assert_eq!(values.len(), 2, "{line}");
    assert!(values.iter().all(|v| v.parse::<f32>().is_ok()), "{line}");
    // A `normalize` that is not finite at an input value is shown under its line in the file.
    let text = std::fs::read_to_string(&nn).unwrap();
    let at_zero = s.write(
        "at_zero.nn",
        text.replace(
            "y: [[1, 0], [0, 1]])",
            "y: [[1, 0], [0, 1]])\n    normalize: 1 / x",
        ),
    );
    let err = user_error(&predict(&at_zero.to_string_lossy(), &rck, &[]));
    assert_has(
        &err,
        &[
            "turns the input value 0 into inf",
            "normalize: 1 / x",
            "while normalizing",
            "xor.csv",
        ],
    );

    let out = predict("examples/xor.nn", &ck, &["--top", "0"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("--top") && stderr(&out).contains("at least 1"),
        "{}",
        stderr(&out)
    );
}

/// `--raw` prints every output value at full precision, as CSV rows a script reads: XOR's
/// single value per sample, which the default printout rounds to 4 decimals, and a regression's
/// two. `--raw` and `--top` together are refused.
#[test]
fn predict_raw_prints_every_value_at_full_precision() {
    let s = Scratch::new("predict-raw");
    let ck = s.path("xor.safetensors");
    let out = in_root(&[
        "train",
        "examples/xor.nn",
        "--quiet",
        "--checkpoint",
        &ck.to_string_lossy(),
    ]);
    assert_code(&out, 0);
    let csv = s.write("xor.csv", "0,0\n0,1\n1,0\n1,1\n");
    let predict = |nn: &str, ck: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["predict", nn, "--input"];
        let (csv, ck) = (csv.to_string_lossy(), ck.to_string_lossy());
        args.extend([&*csv, "--checkpoint", &*ck]);
        args.extend(extra);
        in_root(&args)
    };
    let shown = succeeded(&predict("examples/xor.nn", &ck, &[]));
    let raw = succeeded(&predict("examples/xor.nn", &ck, &["--raw"]));
    let rows: Vec<Vec<f32>> = raw
        .lines()
        .map(|l| l.split(',').map(|v| v.parse().expect(l)).collect())
        .collect();
    assert_eq!(rows.len(), 4, "{raw}");
    for (i, (row, line)) in rows.iter().zip(shown.lines()).enumerate() {
        assert_eq!(row.len(), 1, "{raw}");
        // The printout is this value to 4 decimals, and the raw text is more than that.
        assert_eq!(line, format!("sample {i}: {:.4}", row[0]), "{raw}");
        assert!(raw.lines().nth(i).unwrap().len() > 6, "{raw}");
        assert!((row[0] > 0.5) == (i == 1 || i == 2), "{raw}");
    }
    // `--index` gives that sample's row alone.
    let one = succeeded(&predict("examples/xor.nn", &ck, &["--raw", "--index", "2"]));
    assert_eq!(one, format!("{}\n", raw.lines().nth(2).unwrap()));
    // Every value of a regression's two, each as f32 prints it.
    let nn = s.write(
        "regression.nn",
        "model R(x: [2]) -> [2] {\n    return x |> dense(2)\n}\n\
         data d {\n    train: inline(x: [[0, 1], [1, 0]], y: [[1, 0], [0, 1]])\n}\n\
         train R on d {\n    loss: mse(output, label)\n    optimizer: sgd(lr: 0.1)\n    batch: 2\n    steps: 1\n}\n",
    );
    let rck = s.path("r.safetensors");
    train_to(&nn, &rck);
    let raw = succeeded(&predict(&nn.to_string_lossy(), &rck, &["--raw"]));
    assert_eq!(raw.lines().count(), 4, "{raw}");
    for l in raw.lines() {
        let v: Vec<f32> = l.split(',').map(|v| v.parse().expect(l)).collect();
        assert_eq!(v.len(), 2, "{raw}");
        assert_eq!(l, format!("{},{}", v[0], v[1]));
    }
    let err = user_error(&predict("examples/xor.nn", &ck, &["--raw", "--top", "2"]));
    assert_has(&err, &["--raw", "--top"]);
}

/// A character model's classes are shown as the characters of its text beside their ids; its
/// raw output is every position's logits.
#[test]
fn predict_of_a_character_model_names_the_characters() {
    let s = Scratch::new("predict-chars");
    s.write("corpus.txt", "abcabcabcabcabc");
    let nn = s.write("ids.nn", char_model(""));
    let ck = s.path("e.safetensors");
    train_to(&nn, &ck);
    let input = s.write("in.csv", "0,1,2,0\n2,1,0,2\n");
    let text = succeeded(&run!(
        "predict",
        &nn,
        "--checkpoint",
        &ck,
        "--input",
        &input
    ));
    let raw = succeeded(&run!(
        "predict",
        &nn,
        "--checkpoint",
        &ck,
        "--input",
        &input,
        "--raw"
    ));
    assert_eq!(text.lines().count(), 2, "{text}");
    for (i, (line, raw)) in text.lines().zip(raw.lines()).enumerate() {
        let top = line.strip_prefix(&format!("sample {i}: ")).expect(line);
        let classes: Vec<&str> = top.split("  ").collect();
        assert_eq!(classes.len(), 3, "{text}");
        let mut ids = Vec::new();
        for c in &classes {
            // `'b' (id 1, 40.2%)`: the vocabulary is the text's characters in order.
            let id: usize = c[8..9].parse().expect(c);
            let ch = ["a", "b", "c"][id];
            assert!(c.starts_with(&format!("'{ch}' (id {id}, ")), "{text}");
            ids.push(id);
        }
        // The raw row holds the 4 positions' 3 logits; the first shown is the last row's largest.
        let logits: Vec<f32> = raw.split(',').map(|v| v.parse().expect(raw)).collect();
        assert_eq!(logits.len(), 12, "{raw}");
        let last = &logits[9..];
        let best = (0..3).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap();
        assert_eq!(ids[0], best, "{text}\n{raw}");
    }
    // The characters are those the checkpoint records: the same with another text of as many
    // characters beside the file, or none.
    for text in [Some("abdabdabdabdabd"), None] {
        match text {
            Some(t) => drop(s.write("corpus.txt", t)),
            None => std::fs::remove_file(s.path("corpus.txt")).unwrap(),
        }
        let shown = succeeded(&run!(
            "predict",
            &nn,
            "--checkpoint",
            &ck,
            "--input",
            &input
        ));
        assert!(
            shown.contains("(id 0, ") && shown.contains("'a'"),
            "{shown}"
        );
        assert!(!shown.contains("'d'"), "{shown}");
    }
    // The text the model was trained on, elsewhere: `--data-dir`, as `nnc sample` takes it.
    let other = s.path("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("corpus.txt"), "abcabcabcabcabc").unwrap();
    let text = succeeded(&run!(
        "predict",
        &nn,
        "--checkpoint",
        &ck,
        "--input",
        &input,
        "--data-dir",
        &other
    ));
    assert!(text.contains("(id 0, ") && text.contains("'a'"), "{text}");
}

/// The ids fed to an `i32` input are refused as the training data's are when they are not
/// integers (`0.5` was truncated to id 0) or beyond i32, naming the value and its sample.
#[test]
fn predict_refuses_ids_that_are_not_integers() {
    let s = Scratch::new("predict-ids");
    s.write("corpus.txt", "abcabcabcabcabc");
    let nn = s.write("ids.nn", char_model(""));
    let ck = s.path("e.safetensors");
    train_to(&nn, &ck);
    let predict = |csv: &str, extra: &[&str]| {
        let input = s.write("in.csv", csv);
        run!("predict", &nn, "--checkpoint", &ck, "--input", &input; extra)
    };
    let out = predict("0,1,2,0\n2,1,0,2\n", &[]);
    assert_has(&succeeded(&out), &["sample 0: ", "sample 1: "]);
    let err = user_error(&predict("0,1,2,3\n0.5,1.5,2,3\n", &[]));
    assert_has(
        &err,
        &[
            "input value 0.5 of sample 1 is not an integer",
            "x: i32[B,4]",
            "integer ids",
        ],
    );
    let err = user_error(&predict(
        "0,1,2,3\n0,1,2,3\n4,3,2.25,1\n",
        &["--index", "2"],
    ));
    assert_has(&err, &["input value 2.25 of sample 2 is not an integer"]);
    let err = user_error(&predict("0,1,2,3000000000\n", &[]));
    assert_has(
        &err,
        &["input value 3000000000 of sample 0 is not within the range of i32"],
    );
    // Read through f32, 16777217 became 16777216: refused with its own value, in whichever
    // sample holds it (`--index` included), not rounded into the id next to it.
    for (csv, extra) in [
        ("0,1,2,16777217\n", &[][..]),
        ("0,1,2,0\n0,1,2,-16777217\n", &["--index", "1"][..]),
    ] {
        let err = user_error(&predict(csv, extra));
        assert_has(
            &err,
            &["16777217 of sample", "ids read from CSV are not exact"],
        );
    }
    assert_has(
        &user_error(&predict("0,1,2,0\n0,1,2,16777217\n", &[])),
        &["input value 16777217 of sample 1"],
    );
    assert_has(
        &succeeded(&predict("0,1,2,0\n0,1,2,16777217\n", &["--index", "0"])),
        &["sample 0: "],
    );
}

/// A run whose `init:` file (or `--init` file) is missing says that it is the run's `init`: it
/// said only "run `m`: checkpoint w.safetensors not found", with nothing pointing at `init:`.
#[test]
fn a_missing_init_checkpoint_is_named_as_the_init() {
    let s = Scratch::new("init-missing");
    let nn = s.write(
        "init.nn",
        "model M(x: [2]) -> [2] { return x |> dense(2) }\n\
         data d { train: inline(x: [[0, 1], [1, 0]], y: [0, 1]) }\n\
         train m: M on d {\n    loss: cross_entropy(output, label)\n    optimizer: sgd(lr: 0.1)\n    init: \"w.safetensors\"\n    steps: 2, batch: 2\n}\n",
    );
    let err = user_error(&run!("train", &nn, "--quiet"));
    assert_has(
        &err,
        &[
            "run `m`",
            "`init: \"w.safetensors\"`: checkpoint",
            "not found",
        ],
    );
    let missing = s.path("v.safetensors");
    let err = user_error(&run!("train", &nn, "--quiet", "--init", &missing));
    assert_has(
        &err,
        &[
            "run `m`",
            "`--init ",
            "v.safetensors`: checkpoint",
            "not found",
        ],
    );
}

/// A distillation run's teacher read from a checkpoint file that is missing: `eval`, as `train`,
/// says it is the teacher's (it said only "checkpoint t.safetensors not found"); with the file
/// there, both read the teacher the same way.
#[test]
fn a_missing_teacher_checkpoint_is_named_as_the_teacher_s() {
    let s = Scratch::new("teacher-missing");
    let nn = s.write(
        "kd.nn",
        "model T(x: [2]) -> [2] { return x |> dense(4) |> relu |> dense(2) }\n\
         model S(x: [2]) -> [2] { return x |> dense(2) }\n\
         data d { train: inline(x: [[0, 1], [1, 0], [0, 0], [1, 1]], y: [0, 1, 0, 1]) }\n\
         train big: T on d {\n    loss: cross_entropy(output, label)\n    optimizer: sgd(lr: 0.1)\n    steps: 2, batch: 2\n}\n\
         train small: S on d {\n    loss: kd(output, teacher, label)\n    optimizer: sgd(lr: 0.1)\n    teacher: T(checkpoint: \"t.safetensors\")\n    steps: 2, batch: 2\n}\n",
    );
    let student = s.path("s.safetensors");
    let teacher_missing = "`teacher: T(checkpoint: \"t.safetensors\")`: checkpoint";
    let err = user_error(&run!(
        "train",
        &nn,
        "--run",
        "small",
        "--quiet",
        "--checkpoint",
        &student
    ));
    assert_has(&err, &["run `small`", teacher_missing, "not found"]);
    // A student checkpoint to evaluate: trained from the teacher's file, once it is there.
    let out = run!(
        "train",
        &nn,
        "--run",
        "big",
        "--quiet",
        "--checkpoint",
        s.path("t.safetensors")
    );
    succeeded(&out);
    succeeded(&run!(
        "train",
        &nn,
        "--run",
        "small",
        "--quiet",
        "--checkpoint",
        &student
    ));
    let out = run!("eval", &nn, "--run", "small", "--checkpoint", &student);
    assert_has(&succeeded(&out), &["run small: train loss"]);
    std::fs::remove_file(s.path("t.safetensors")).unwrap();
    let err = user_error(&run!(
        "eval",
        &nn,
        "--run",
        "small",
        "--checkpoint",
        &student
    ));
    assert_has(&err, &["run `small`", teacher_missing, "not found"]);
}

/// A teacher run `big` that writes `tb.safetensors`, and a student run `small` distilled from it.
const TEACHER_AND_STUDENT: &str =
    "model T(x: [2]) -> [2] { return x |> dense(4) |> relu |> dense(2) }
model S(x: [2]) -> [2] { return x |> dense(2) }
data d { train: inline(x: [[0, 1], [1, 0], [0, 0], [1, 1]], y: [0, 1, 0, 1]) }
train big: T on d {
    loss: cross_entropy(output, label)
    optimizer: sgd(lr: 0.5)
    steps: 20, batch: 2
    checkpoint: \"tb.safetensors\"
}
train small: S on d {
    loss: kd(output, teacher, label)
    optimizer: sgd(lr: 0.1)
    teacher: big
    steps: 2, batch: 2
}
";

/// `nnc eval` of a student trained with every run under `--checkpoint d.st` distills from the
/// teacher that training used, `d.big.st`, not from a stale file at the teacher run's own
/// `checkpoint:`.
#[test]
fn eval_of_a_student_reads_the_teacher_it_was_trained_with() {
    let s = Scratch::new("eval-teacher");
    let nn = s.write("kd.nn", TEACHER_AND_STUDENT);
    let tb = s.path("tb.safetensors");
    // A stale teacher at the run's own path: one step of training.
    succeeded(&run!(
        "train", &nn, "--quiet", "--run", "big", "--steps", "1"
    ));
    succeeded(&run!(
        "train",
        &nn,
        "--quiet",
        "--checkpoint",
        s.path("d.safetensors")
    ));
    let student = s.path("d.small.safetensors");
    let eval = || {
        succeeded(&run!(
            "eval",
            &nn,
            "--run",
            "small",
            "--checkpoint",
            &student
        ))
    };
    let read = eval();
    std::fs::copy(s.path("d.big.safetensors"), &tb).unwrap();
    assert_eq!(read, eval());
}

/// `nnc eval` without `--run` evaluates the run that wrote the checkpoint, as its header names
/// it: the teacher's (`d.big.st`, run `big`) although the file's last run is the student. It
/// used to evaluate the last run and fail on the first tensor of the wrong shape.
#[test]
fn eval_of_another_run_s_checkpoint_evaluates_the_run_that_wrote_it() {
    let s = Scratch::new("eval-other-run");
    let nn = s.write("kd.nn", TEACHER_AND_STUDENT);
    succeeded(&run!(
        "train",
        &nn,
        "--quiet",
        "--checkpoint",
        s.path("d.safetensors")
    ));
    let teacher = s.path("d.big.safetensors");
    let chosen = succeeded(&run!("eval", &nn, "--checkpoint", &teacher));
    assert_has(&chosen, &["run big: train loss"]);
    let named = succeeded(&run!("eval", &nn, "--run", "big", "--checkpoint", &teacher));
    assert_eq!(chosen, named);
    // The student's run, named, does not fit the teacher's tensors.
    let err = user_error(&run!(
        "eval",
        &nn,
        "--run",
        "small",
        "--checkpoint",
        &teacher
    ));
    assert_has(&err, &["dense1.weight"]);
}

/// `nnc predict` without `--model` runs the model of the run that wrote the checkpoint: given
/// the teacher's, whose header names run `big`, model `T` (not `S`, the last run's).
#[test]
fn predict_of_another_model_s_checkpoint_runs_that_model() {
    let s = Scratch::new("predict-other-model");
    let nn = s.write("kd.nn", TEACHER_AND_STUDENT);
    let rows = s.write("rows.csv", "0,1\n1,0\n");
    succeeded(&run!(
        "train",
        &nn,
        "--quiet",
        "--checkpoint",
        s.path("d.safetensors")
    ));
    let teacher = s.path("d.big.safetensors");
    let predict = |model: &[&str]| {
        let mut c = nnc();
        c.args(["predict", "--input"]).arg(&rows);
        c.arg("--checkpoint").arg(&teacher).arg(&nn).args(model);
        c.output().unwrap()
    };
    let chosen = succeeded(&predict(&[]));
    assert_has(&chosen, &["sample 1:"]);
    assert_eq!(chosen, succeeded(&predict(&["--model", "T"])));
    let err = user_error(&predict(&["--model", "S"]));
    assert_has(&err, &["dense1.weight"]);
}

/// A distilled run resumed from the file a training of every run gave it (`d.small.st`, as the
/// command printed after Ctrl-C says) reads the teacher that training gave the teacher run
/// (`d.big.st`), not the teacher run's own `checkpoint:` (missing here, or another teacher).
#[test]
fn a_resumed_student_reads_the_teacher_it_was_trained_with() {
    let s = Scratch::new("resume-teacher");
    let nn = s.write("kd.nn", TEACHER_AND_STUDENT);
    succeeded(&run!(
        "train",
        &nn,
        "--quiet",
        "--checkpoint",
        s.path("d.safetensors")
    ));
    let student = s.path("d.small.safetensors");
    as_if_stopped(&student, 4);
    let out = run!(
        "train",
        &nn,
        "--quiet",
        "--run",
        "small",
        "--resume",
        &student,
        "--checkpoint",
        &student
    );
    succeeded(&out);
    assert_eq!(
        nnc::runtime::checkpoint::Checkpoint::load(&student)
            .unwrap()
            .step,
        Some(4)
    );
}

/// `nnc eval` of a run whose data has no test split measures the training split, and says so
/// rather than calling it the test loss. A `split` that holds out too little text for one
/// window is refused, by `train` and by `eval` (training showed no test loss, and evaluation
/// measured the training split, without a word).
#[test]
fn eval_says_when_it_measures_the_training_split() {
    let s = Scratch::new("eval-train-split");
    s.write("corpus.txt", "abc".repeat(67));
    let nn = |split: &str| s.write("m.nn", char_model(split));
    let ck = s.path("m.safetensors");
    succeeded(&run!("train", nn(""), "--quiet", "--checkpoint", &ck));
    let text = succeeded(&run!("eval", nn(""), "--checkpoint", &ck));
    assert_has(&text, &["run M: train loss", "no test samples"]);
    assert!(!text.contains("test loss"), "{text}");

    let short = nn("    split: 0.99\n");
    let refusal = "`split: 0.99` holds out 3 of its 201 characters for testing, too short for one \
                   window of seq 4 (+1 for the labels); hold out more (a `split` from 0.03 to 0.98 \
                   leaves each part a window)";
    assert_has(&user_error(&run!("train", &short, "--quiet")), &[refusal]);
    assert_has(
        &user_error(&run!("eval", &short, "--checkpoint", &ck)),
        &[refusal],
    );
}

/// A character model predicts exactly its text's characters: fewer classes were refused only
/// at the first label past them ("label 2 ... not a class id in 0..2"), more trained and then
/// `nnc sample` refused the model. Both are refused when the text is read, by `train` and by
/// `eval`, saying how many outputs the text needs.
#[test]
fn a_char_model_predicts_exactly_its_text_s_characters() {
    let s = Scratch::new("text-vocab");
    s.write("corpus.txt", "abcabcabcabcabcabcabc");
    let nn = |n: usize| {
        s.write(
            format!("m{n}.nn").as_str(),
            format!(
                "model M(x: i32[4]) -> [4, {n}] {{\n    return x |> embedding({n}, 2) |> dense({n})\n}}\n\
                 data d {{\n    train: text(\"corpus.txt\", seq: 4)\n}}\n\
                 train M on d {{\n    loss: cross_entropy(output, label)\n    optimizer: sgd(lr: 0.1)\n    batch: 2\n    steps: 1\n}}\n"
            ),
        )
    };
    for n in [2, 5] {
        let err = user_error(&run!("train", nn(n), "--quiet"));
        assert_has(
            &err,
            &[
                &format!("has 3 different characters, but model `M` predicts {n} classes"),
                "the last layer needs 3 outputs, e.g. `dense(3)`",
                "a vocabulary of 3",
            ],
        );
    }
    let ck = s.path("m.safetensors");
    train_to(&nn(3), &ck);
    let out = run!("sample", nn(3), "--checkpoint", &ck, "--length", "5");
    assert_eq!(succeeded(&out).trim().chars().count(), 5);
    assert_has(
        &succeeded(&run!("eval", nn(3), "--checkpoint", &ck)),
        // 21 characters hold out too few for a test window of 4.
        &["train loss", "no test samples"],
    );
    // The text has changed since: eval refuses the model as train would, and so does sample.
    s.write("corpus.txt", "abcdabcdabcdabcdabcd");
    let err = user_error(&run!("eval", nn(3), "--checkpoint", &ck));
    assert_has(
        &err,
        &["has 4 different characters, but model `M` predicts 3 classes"],
    );
    let err = user_error(&run!("sample", nn(3), "--checkpoint", &ck));
    assert_has(
        &err,
        &["output [T, 4] logits, one for each different character"],
    );
}

/// `nnc predict` given plain text for a character model (it reads CSV rows of ids) says to
/// use `nnc sample` (it said only "expected a number, found `ab c`").
#[test]
fn predict_of_text_for_a_character_model_points_to_sample() {
    let s = Scratch::new("predict-text");
    s.write("corpus.txt", "abcabcabcabcabcabcabc");
    let nn = s.write("m.nn", char_model(""));
    let ck = s.path("m.safetensors");
    train_to(&nn, &ck);
    let prompt = s.write("prompt.txt", "abca\nb c\n");
    let err = user_error(&run!(
        "predict",
        &nn,
        "--checkpoint",
        &ck,
        "--input",
        &prompt
    ));
    assert_has(&err, &["expected a number", "use `nnc sample`"]);
}

/// `nnc sample` without the training text beside the file (no `--data-dir`) shows the refusal
/// under the data block with the help `train` gives (it was a bare line).
#[test]
fn sample_without_its_text_shows_where_it_looked() {
    let s = Scratch::new("sample-no-text");
    s.write("corpus.txt", "abcabcabcabcabcabcabc");
    let nn = s.write("m.nn", char_model(""));
    let ck = s.path("m.safetensors");
    train_to(&nn, &ck);
    std::fs::remove_file(s.path("corpus.txt")).unwrap();
    let err = user_error(&run!("sample", &nn, "--checkpoint", &ck));
    assert_has(
        &err,
        &[
            "data file `corpus.txt` not found",
            "while loading the training split of `d` for run `M`",
            "data paths are relative to --data-dir",
        ],
    );
}

#[test]
fn bench_reports_compile_time_throughput_and_latency() {
    let out = in_root(&["bench", "examples/xor.nn", "--steps", "100", "--reps", "50"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for needle in [
        "parse + check",
        "compile",
        "samples/s",
        "batch 1 median",
        "peak resident memory",
        // Inference runs on the run's test samples (XOR's inline ones), as the reference
        // scripts run on MNIST's first test images.
        "inference on test samples",
    ] {
        assert!(text.contains(needle), "no `{needle}` in\n{text}");
    }
}

/// A character model's inference is measured on its text's token ids, as an image model's on
/// its images (it was fed token id 1 everywhere, one embedding row); without a test split, on
/// its training samples, and said so (they were called test samples).
#[test]
fn bench_feeds_a_character_model_its_text() {
    let s = Scratch::new("bench-text");
    s.write("corpus.txt", "abcab".repeat(40));
    let nn = s.write("m.nn", char_model(""));
    let text = succeeded(&run!("bench", &nn, "--steps", "2", "--reps", "20"));
    assert_has(&text, &["model M          inference on training samples"]);
}

/// A `batch:` larger than the training split trains on the whole split (XOR's 4 samples here);
/// bench reports that batch, and the loop time from it (it said "× 8", and a loop twice as long
/// as measured).
#[test]
fn bench_reports_the_batch_trained_when_the_split_is_smaller() {
    let s = Scratch::new("bench-batch");
    let nn = s.write(
        "xor.nn",
        "model X(x: [2]) -> [1] { return x |> dense(4) |> tanh |> dense(1) }
         data d { train: inline(x: [[0, 0], [0, 1], [1, 0], [1, 1]], y: [[0], [1], [1], [0]]) }
         train X on d {
    loss: mse(output, label)
    optimizer: sgd(lr: 0.1)
    batch: 8
}
",
    );
    let text = succeeded(&run!("bench", &nn, "--steps", "10", "--reps", "5"));
    assert_has(&text, &["train 10 steps × 4:"]);
}

/// A run with early stopping is benchmarked over the steps asked: its test loss rises from the
/// first evaluation on (the test labels are flipped), which stopped it after 3 of the 40 steps,
/// with no word of why (`nnc bench` prints no notes).
#[test]
fn bench_trains_the_steps_asked_whatever_early_stopping_says() {
    let s = Scratch::new("bench-early-stop");
    let nn = s.write(
        "flipped.nn",
        "model M(x: [2]) -> [2] { return x |> dense(16) |> relu |> dense(2) }
         data d {
    train: inline(x: [[0, 0], [0, 1], [1, 0], [1, 1]], y: [[0], [1], [1], [0]])
    test: inline(x: [[0, 0], [0, 1]], y: [[1], [0]])
}
         train m: M on d {
    loss: cross_entropy(output, label)
    optimizer: adam(lr: 0.05)
    batch: 4
    eval: every 1 step [loss]
    early_stopping: loss(patience: 2)
}
",
    );
    let trained = run!("train", &nn, "--steps", "40");
    succeeded(&trained);
    assert_has(&stderr(&trained), &["stops early after step 3:"]);
    let text = succeeded(&run!("bench", &nn, "--steps", "40", "--reps", "2"));
    assert_has(&text, &["train 40 steps × 4:"]);
}

/// `--run` with a name the file does not have suggests the closest run, or lists the runs: it
/// said only "no run named `plian`".
#[test]
fn an_unknown_run_suggests_the_file_s_runs() {
    let ae = "examples/autoencoder_finetune.nn";
    for cmd in ["train", "eval", "gradcheck", "bench"] {
        let extra: &[&str] = if cmd == "eval" {
            &["--checkpoint", "x.st"]
        } else {
            &[]
        };
        let err = user_error(&run!(cmd, ae, "--run", "pretrian"; extra));
        assert_has(
            &err,
            &["no run named `pretrian`", "did you mean `pretrain`?"],
        );
        let err = user_error(&run!(cmd, ae, "--run", "zzz"; extra));
        assert_has(
            &err,
            &[
                "no run named `zzz`",
                "its runs are `pretrain`, `frozen`, `finetune`",
            ],
        );
    }
}

/// A model no run trains is measured on constant inputs; an unknown `--run` is refused.
#[test]
fn bench_measures_models_no_run_trains_and_refuses_an_unknown_run() {
    let s = Scratch::new("bench-models");
    let nn = s.write(
        "conv.nn",
        "model C(x: [1, 8, 8]) -> [4] {\n    return x |> conv2d(4, kernel: 3) |> relu |> flatten |> dense(4)\n}\n",
    );
    let text = succeeded(&run!("bench", &nn, "--reps", "20"));
    assert_has(&text, &["model C          inference: batch 1 median"]);
    let err = user_error(&run!("bench", "examples/xor.nn", "--run", "nope"; ["--reps", "5"]));
    assert_has(&err, &["no run named `nope`"]);
}

/// `nnc bench --profile`: every compiled step of the run by its share of the time, named by its
/// IR node (weight gradients with the optimizer update fused into them), the shares adding up
/// to the whole, and inference's steps at batch 1 and at batch 1000 apart; nothing of the kind
/// without the flag.
#[test]
fn bench_profile_names_each_step_and_its_share() {
    let args = ["bench", "examples/xor.nn", "--steps", "200", "--reps", "50"];
    let plain = stdout(&in_root(&args));
    assert!(!plain.contains("where the time goes"), "{plain}");
    let out = in_root(&[&args[..], &["--profile"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let training: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("where the time goes"))
        .skip(1)
        .take_while(|l| {
            l.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .collect();
    assert!(
        training.iter().any(|l| l.contains("train Xor: %")
            && l.contains("grad dense1.weight (+ optimizer updates)")),
        "{text}"
    );
    let shares: f64 = training
        .iter()
        .map(|l| l.split('%').next().unwrap().trim().parse::<f64>().unwrap())
        .sum();
    assert!(
        (shares - 100.0).abs() < 0.6,
        "shares add up to {shares}:\n{text}"
    );
    // Inference: batch 1 and batch 1000 each with its own table.
    let inference = text.split("batch 1 median").nth(1).unwrap_or("");
    let (b1, b1000) = inference.split_once("  batch 1000:").unwrap_or(("", ""));
    for part in [b1, b1000] {
        assert!(part.contains("model Xor: %"), "{text}");
    }
}

/// The schedule warnings measure the length that will be trained: `--steps 1000` over a file's
/// `steps: 10` with a warm-up of 20 was warned that "the learning rate never gets past its
/// warm-up", and `--steps 5` over `steps: 100` with the same warm-up was not warned at all.
#[test]
fn schedule_warnings_follow_the_steps_given_on_the_command_line() {
    let s = Scratch::new("schedule-steps");
    s.write("points.csv", "0,0,0\n0,1,1\n1,0,1\n1,1,0\n");
    let file = |steps: u32| {
        s.write(
            &format!("m{steps}.nn"),
            format!(
                "model M(x: [2]) -> [1] {{ return x |> dense(1) }}\n\
                 data d {{ train: csv(\"points.csv\") }}\n\
                 train M on d {{ loss: mse(output, label) optimizer: sgd(lr: 0.1) \
                 steps: {steps} schedule: cosine(warmup: 20) }}\n"
            ),
        )
    };
    let warned = |nn: &std::path::Path, steps: &str| {
        let out = nnc()
            .args(["train", "--quiet", "--steps", steps])
            .arg(nn)
            .output()
            .unwrap();
        assert_code(&out, 0);
        stderr(&out).contains("never gets past its warm-up")
    };
    let short = file(10);
    assert!(!warned(&short, "1000"));
    assert!(warned(&short, "20"));
    assert!(warned(&file(100), "5"));
    assert!(!warned(&file(100), "100"));
}

/// `--steps` with `--run` shortens that run alone: the other runs of the file, not trained, are
/// not warned that their warm-up or `step(every: N)` outlasts it (the language reference's
/// §7 example, trained `--run a --steps 2`, was warned about the warm-up of `b`, a run of
/// 1000 steps). Without `--run` every run is measured against `--steps`, as before.
#[test]
fn with_run_only_that_run_is_measured_against_steps() {
    let s = Scratch::new("schedule-run-steps");
    s.write("points.csv", "0,0,0\n0,1,1\n1,0,1\n1,1,0\n");
    let nn = s.write(
        "two.nn",
        "model M(x: [2]) -> [1] { return x |> dense(1) }\n\
         data d { train: csv(\"points.csv\") }\n\
         train a: M on d { loss: mse(output, label) optimizer: sgd(lr: 0.1) steps: 10 }\n\
         train b: M on d { loss: mse(output, label) optimizer: sgd(lr: 0.1) steps: 1000 \
         schedule: cosine(warmup: 100) }\n",
    );
    let warned = |args: &[&str]| {
        let out = nnc()
            .args(["train", "--quiet", "--steps", "2"])
            .args(args)
            .arg(&nn)
            .output()
            .unwrap();
        assert_code(&out, 0);
        stderr(&out).contains("never gets past its warm-up")
    };
    assert!(!warned(&["--run", "a"]));
    assert!(warned(&["--run", "b"]));
    assert!(warned(&[]));
    let out = nnc()
        .args(["bench", "--steps", "2", "--reps", "1", "--run", "a"])
        .arg(&nn)
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert!(!stderr(&out).contains("warm-up"), "{}", stderr(&out));
}

/// `--init` replaces every trained run's `init:`, one naming an earlier run too: that run is
/// warned about (it started from the file, its loss far above what the earlier run reached,
/// with nothing said); a run with no `init:`, or one not trained, is not.
#[test]
fn init_replacing_an_earlier_run_is_warned_about() {
    let s = Scratch::new("init-replaces-run");
    s.write("points.csv", "0,0,0\n0,1,1\n1,0,1\n1,1,0\n");
    let nn = s.write(
        "two.nn",
        "model M(x: [2]) -> [1] { return x |> dense(1) }\n\
         data d { train: csv(\"points.csv\") }\n\
         train a: M on d { loss: mse(output, label) optimizer: sgd(lr: 0.1) steps: 2 }\n\
         train b: M on d { loss: mse(output, label) optimizer: sgd(lr: 0.1) steps: 2 init: a }\n",
    );
    let ck = s.path("a.st");
    let train = |args: &[&std::ffi::OsStr]| {
        let out = nnc()
            .args(["train", "--quiet"])
            .args(args)
            .arg(&nn)
            .output()
            .unwrap();
        assert_code(&out, 0);
        stderr(&out)
    };
    let os = |a: &str| std::ffi::OsString::from(a);
    let (run, init, checkpoint) = (os("--run"), os("--init"), os("--checkpoint"));
    let (a, b) = (os("a"), os("b"));
    let first = train(&[&run, &a, &checkpoint, ck.as_os_str()]);
    assert!(!first.contains("warning"), "{first}");
    let warned =
        "replaces run `b`'s `init: a`: it starts from that file, not from what run `a` trained";
    let all = train(&[&init, ck.as_os_str()]);
    assert!(all.contains(warned), "{all}");
    assert!(!all.contains("run `a`'s"), "{all}");
    let only_b = train(&[&run, &b, &init, ck.as_os_str()]);
    assert!(only_b.contains(warned), "{only_b}");
    let only_a = train(&[&run, &a, &init, ck.as_os_str()]);
    assert!(!only_a.contains("warning"), "{only_a}");
}

/// A resumed run goes on to the length its checkpoint records: its schedule is measured
/// against that, not the file's `steps:`, and the file's other runs keep their own (run `b`'s
/// `steps: 10` with a warm-up of 20 was trained with `--steps 100`; resumed, it was warned
/// that the warm-up outlasts 10 steps).
#[test]
fn a_resumed_run_is_measured_against_its_checkpoints_length() {
    let s = Scratch::new("schedule-resume");
    s.write("points.csv", "0,0,0\n0,1,1\n1,0,1\n1,1,0\n");
    let nn = s.write(
        "two.nn",
        "model M(x: [2]) -> [1] { return x |> dense(1) }\n\
         data d { train: csv(\"points.csv\") }\n\
         train a: M on d { loss: mse(output, label) optimizer: sgd(lr: 0.1) steps: 10 }\n\
         train b: M on d { loss: mse(output, label) optimizer: sgd(lr: 0.1) steps: 10 \
         schedule: cosine(warmup: 20) }\n\
         train c: M on d { loss: mse(output, label) optimizer: sgd(lr: 0.1) steps: 200 \
         schedule: cosine(warmup: 150) }\n",
    );
    let ck = s.path("b.st");
    let train = |args: &[&str]| {
        let out = nnc()
            .args(["train", "--quiet"])
            .args(args)
            .arg(&nn)
            .output()
            .unwrap();
        assert_code(&out, 0);
        stderr(&out)
    };
    let first = train(&[
        "--run",
        "b",
        "--steps",
        "100",
        "--checkpoint",
        ck.to_str().unwrap(),
    ]);
    assert!(!first.contains("warm-up"), "{first}");
    let resumed = train(&["--resume", ck.to_str().unwrap()]);
    assert!(!resumed.contains("warm-up"), "{resumed}");
    // With a length on the command line, that is the one measured.
    let shorter = train(&["--resume", ck.to_str().unwrap(), "--steps", "15"]);
    assert!(
        shorter.contains("a warm-up of 20 steps in a run of 15"),
        "{shorter}"
    );
    // `--run` naming another run than the checkpoint's is refused; that run was measured
    // against the checkpoint's 100 steps (c's warm-up of 150 in its own 200 is no warning).
    let out = nnc()
        .args([
            "train",
            "--quiet",
            "--run",
            "c",
            "--resume",
            ck.to_str().unwrap(),
        ])
        .arg(&nn)
        .output()
        .unwrap();
    let err = user_error(&out);
    assert!(err.contains("was written by run `b`"), "{err}");
    assert!(!err.contains("a warm-up of 150"), "{err}");
}

/// The language reference's examples train, not only check: its XOR example as written, and
/// every run of the others (one file, as `tests/check_semantics.rs` checks them) for 2 steps on
/// the shared data; `finetune` and `matched` from the files the runs before them wrote.
#[test]
fn the_language_references_examples_train() {
    let blocks = spec_examples();
    let s = Scratch::new("spec-examples");
    let xor = s.write("xor.nn", &blocks[0]);
    let out = nnc()
        .args(["train", "--quiet", "--steps", "2"])
        .arg(&xor)
        .output()
        .unwrap();
    assert!(succeeded(&out).contains("Xor after training"));
    let (Some(mnist), Some(text)) = (mnist(), shakespeare()) else {
        return;
    };
    let rest = s.write("spec.nn", blocks[1..].concat());
    let train = |run: &str, data: &std::path::Path, checkpoint: Option<&str>| {
        let mut cmd = nnc();
        cmd.args(["train", "--quiet", "--steps", "2", "--run", run])
            .arg(&rest)
            .arg("--data-dir")
            .arg(data);
        if let Some(c) = checkpoint {
            cmd.arg("--checkpoint").arg(s.path(c));
        }
        let out = cmd.output().unwrap();
        assert!(succeeded(&out).contains(run), "{run}");
    };
    train("ConvNet", &mnist, None);
    train("tuned", &mnist, None);
    // `finetune` alone starts from `<stem>.pretrain.<ext>`; `matched` from its file.
    train("pretrain", &mnist, Some("classifier.pretrain.safetensors"));
    train("finetune", &mnist, Some("classifier.safetensors"));
    train("denoise", &mnist, None);
    train("matched", &mnist, None);
    train("gap", &mnist, None);
    train("gap_max", &mnist, None);
    train("bn", &mnist, None);
    train("teacher_run", &text, None);
    train("student", &text, None);
}

/// A checkpoint of the file's first run given to `eval` or `predict` without `--run` or
/// `--model` is read with that run (and its model), as its header names it, not with the
/// file's last run, whose tensors it does not hold.
#[test]
fn a_checkpoint_of_another_run_is_read_with_the_run_that_wrote_it() {
    let s = Scratch::new("checkpoint-of-another-run");
    let nn = s.write(
        "two.nn",
        "model A(x: [2]) -> [1] { return x |> dense(3) |> dense(1) }\n\
         model B(x: [2]) -> [1] { return x |> dense(1) }\n\
         data d { train: inline(x: [[0, 0], [1, 1]], y: [[0], [1]]) }\n\
         train first: A on d { loss: mse(output, label) optimizer: sgd(lr: 0.1) steps: 1 }\n\
         train second: B on d { loss: mse(output, label) optimizer: sgd(lr: 0.1) steps: 1 }\n",
    );
    let ck = s.path("m.st");
    succeeded(&run!(
        "train",
        &nn,
        "--quiet",
        "--run",
        "first",
        "--checkpoint",
        &ck
    ));
    let chosen = succeeded(&run!("eval", &nn, "--checkpoint", &ck));
    assert_has(&chosen, &["run first: train loss"]);
    let named = run!("eval", &nn, "--checkpoint", &ck, "--run", "first");
    assert_eq!(chosen, succeeded(&named));
    let input = s.write("in.csv", "0,1\n");
    let chosen = succeeded(&run!(
        "predict",
        &nn,
        "--checkpoint",
        &ck,
        "--input",
        &input
    ));
    let named = run!(
        "predict",
        &nn,
        "--checkpoint",
        &ck,
        "--input",
        &input,
        "--model",
        "A"
    );
    assert_eq!(chosen, succeeded(&named));
    // Named, the other run's model does not fit.
    let err = user_error(&run!(
        "predict",
        &nn,
        "--checkpoint",
        &ck,
        "--input",
        &input,
        "--model",
        "B"
    ));
    assert_has(&err, &["dense1.weight"]);
}

/// A character model's checkpoint used with another text of as many characters: `sample`
/// mapped its ids to the other text's characters, and `eval` and `--resume` read the other
/// text with them, all silently. The checkpoint records its vocabulary; each refuses another,
/// naming the first id that differs. The text it was trained on still works.
#[test]
fn a_character_model_refuses_a_text_of_other_characters() {
    let s = Scratch::new("vocab-mismatch");
    s.write("corpus.txt", "abcabcabcabcabc");
    let nn = s.write("m.nn", char_model(""));
    let ck = s.path("m.st");
    train_to(&nn, &ck);
    succeeded(&run!(
        "sample",
        &nn,
        "--checkpoint",
        &ck,
        "--length",
        "3",
        "--prompt",
        "a"
    ));
    succeeded(&run!("eval", &nn, "--checkpoint", &ck));
    s.write("corpus.txt", "xyzxyzxyzxyzxyz");
    let differs = "m.st: id 0 was 'a' in the text it was trained on, but is 'x' in the text of data `d`, so its ids would stand for other characters";
    for out in [
        run!(
            "sample",
            &nn,
            "--checkpoint",
            &ck,
            "--length",
            "3",
            "--prompt",
            "x"
        ),
        run!("eval", &nn, "--checkpoint", &ck),
        run!("train", &nn, "--quiet", "--resume", &ck),
    ] {
        assert_has(&user_error(&out), &[differs]);
    }
}

/// A run that starts from an earlier one (`init:`, `--init`) says, once before it trains, what
/// it took (as PyTorch's `load_state_dict(strict=False)` lists): the parameters loaded, those
/// that start fresh and the earlier run's that it does not use, grouped by layer; not with
/// `--quiet`, and stdout (the summary table) is the same as without it; `--log-json` logs it,
/// and `nnc check` says it beforehand.
#[test]
fn a_partial_init_says_what_was_loaded_fresh_and_unused() {
    let s = Scratch::new("init-note");
    s.write("points.csv", "0,0,0\n0,1,1\n1,0,1\n1,1,0\n");
    let nn = s.write(
        "two.nn",
        "model A(x: [2]) -> [2] { return x |> dense(4) as body |> relu |> dense(2) as recon }\n\
         model B(x: [2]) -> [1] { return x |> dense(4) as body |> relu |> dense(1) as head }\n\
         data d { train: csv(\"points.csv\") }\n\
         train pre: A on d { loss: mse(output, x) optimizer: sgd(lr: 0.1) steps: 2 }\n\
         train fine: B on d { loss: mse(output, label) optimizer: sgd(lr: 0.1) steps: 2 init: pre checkpoint: \"fine.st\" }\n",
    );
    let out = run!("train", &nn);
    succeeded(&out);
    assert_has(
        &stderr(&out),
        &[
            "note: run `fine` starts from run `pre`: 2 parameters loaded; 2 fresh: head; \
           2 unused from run `pre`: recon",
        ],
    );
    assert!(
        !stderr(&out).contains("run `pre` starts"),
        "{}",
        stderr(&out)
    );
    // `nnc check` says the same before anything trains, from the two runs' graphs.
    assert_has(
        &succeeded(&run!("check", &nn)),
        &[
            "train fine (B on d): ok\n  run `fine` starts from run `pre`: 2 parameters loaded; \
             2 fresh: head; 2 unused from run `pre`: recon\n",
        ],
    );
    let quiet = run!("train", "--quiet", &nn);
    assert!(!stderr(&quiet).contains("note:"), "{}", stderr(&quiet));
    // `--log-json` records it, every path named, quiet or not; `nnc plot` passes over it.
    let log = s.path("log.jsonl");
    succeeded(&run!("train", "--quiet", "--log-json", &log, &nn));
    assert_eq!(
        records_of(&log, "init"),
        [serde_json::json!({
            "type": "init", "run": "fine", "from_run": "pre", "loaded": 2, "buffers": 0,
            "fresh": ["head.weight", "head.bias"], "unused": ["recon.bias", "recon.weight"]
        })]
    );
    succeeded(&run!("plot", &log, "--out", &s.path("curve.svg")));
    // A file that holds all of a run's parameters says so.
    let ck = s.path("fine.st");
    let again = run!("train", "--run", "fine", "--init", &ck, &nn);
    succeeded(&again);
    assert_has(
        &stderr(&again),
        &[&format!(
            "note: run `fine` starts from {}: all 4 parameters loaded\n",
            ck.display()
        )],
    );
}

/// A run whose training loss ends far above where it began, without overflowing, is warned
/// about after the summary (which stays on stdout as it was); a healthy run is not.
#[test]
fn a_run_whose_loss_rose_far_is_warned_about() {
    let s = Scratch::new("diverged");
    s.write("points.csv", "0,0,0\n0,1,1\n1,0,1\n1,1,0\n");
    let train = |lr: &str| {
        let nn = s.write(
            "d.nn",
            format!(
                "model M(x: [2]) -> [2] {{ return x |> dense(8) |> relu |> dense(2) }}\n\
                 data d {{ train: csv(\"points.csv\") }}\n\
                 train m: M on d {{ loss: cross_entropy(output, label) optimizer: sgd(lr: {lr}) \
                 batch: 4 steps: 20 }}\n"
            ),
        );
        let out = run!("train", "--quiet", &nn);
        assert_has(&succeeded(&out), &["train loss"]);
        stderr(&out)
    };
    let high = train("100");
    assert_has(
        &high,
        &[
            "warning: run `m`: the training loss rose from ",
            " (step 1) to ",
            " (step 20): training diverged, a lower learning rate may help",
        ],
    );
    let healthy = train("0.1");
    assert!(!healthy.contains("warning"), "{healthy}");
}

/// `nnc sample` refuses a model with a bidirectional recurrent layer, saying why: its reverse
/// direction reads the characters after each position, which generated text does not have yet
/// (it sampled them as if padding after the context were ignored, as a causal model does).
#[test]
fn sampling_from_a_bidirectional_model_is_refused() {
    let s = Scratch::new("sample-bidirectional");
    s.write("corpus.txt", "abcabcabcabcabcabcabc");
    let nn = |layer: &str| {
        s.write(
            "m.nn",
            format!(
                "model M(x: i32[4]) -> [4, 3] {{\n    return x |> embedding(3, 2) |> {layer} |> dense(3)\n}}\n\
                 data d {{\n    train: text(\"corpus.txt\", seq: 4)\n}}\n\
                 train M on d {{\n    loss: cross_entropy(output, label)\n    optimizer: sgd(lr: 0.1)\n    batch: 2\n    steps: 1\n}}\n"
            ),
        )
    };
    let ck = s.path("m.safetensors");
    for (layer, name) in [
        ("gru(4, bidirectional: true)", "gru1"),
        ("lstm(4, bidirectional: true) as enc", "enc"),
    ] {
        train_to(&nn(layer), &ck);
        let err = user_error(&run!("sample", nn(layer), "--checkpoint", &ck));
        assert_has(
            &err,
            &[
                &format!("model `M` cannot generate text: its layer `{name}` is bidirectional"),
                "and its reverse direction reads the characters after each \
                 position",
            ],
        );
    }
    train_to(&nn("gru(4)"), &ck);
    assert_eq!(
        succeeded(&run!(
            "sample",
            nn("gru(4)"),
            "--checkpoint",
            &ck,
            "--length",
            "3"
        ))
        .trim()
        .chars()
        .count(),
        3
    );
}

/// `nnc check` warns of an `init:` or `teacher:` checkpoint file that does not exist beside the
/// `.nn` file, pointing at its string (it checked the file clean, and only `train` found out); a
/// warning only, as another command may write it first, and none once the file is there.
#[test]
fn check_warns_of_a_missing_init_or_teacher_checkpoint() {
    let s = Scratch::new("check-missing-reads");
    let nn = s.write(
        "kd.nn",
        "model T(x: [2]) -> [2] { return x |> dense(4) |> relu |> dense(2) }\n\
         model S(x: [2]) -> [2] { return x |> dense(2) }\n\
         data d { train: inline(x: [[0, 1], [1, 0], [0, 0], [1, 1]], y: [0, 1, 0, 1]) }\n\
         train big: T on d {\n    loss: cross_entropy(output, label)\n    optimizer: sgd(lr: 0.1)\n    init: \"w.safetensors\"\n    steps: 2, batch: 2\n}\n\
         train small: S on d {\n    loss: kd(output, teacher, label)\n    optimizer: sgd(lr: 0.1)\n    teacher: T(checkpoint: \"t.safetensors\")\n    steps: 2, batch: 2\n}\n",
    );
    let out = run!("check", &nn);
    assert_has(
        &succeeded(&out),
        &["train big (T on d): ok", "train small (S on d): ok"],
    );
    let err = stderr(&out);
    assert_has(
        &err,
        &[
            "checkpoint \"w.safetensors\" does not exist",
            "init: \"w.safetensors\"\n",
            "checkpoint \"t.safetensors\" does not exist",
            "T(checkpoint: \"t.safetensors\")\n",
            "no such file (paths are relative to the .nn file's folder)",
        ],
    );
    assert_eq!(err.matches("does not exist").count(), 2, "{err}");
    s.write("w.safetensors", "");
    s.write("t.safetensors", "");
    let out = run!("check", &nn);
    succeeded(&out);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

/// No warning for an `init:` or `teacher:` file that an earlier run's `checkpoint:` writes:
/// training the file writes it before the later run reads it (it was warned of as missing,
/// though `nnc train` of the same file then trained every run). Another missing file still is.
#[test]
fn check_does_not_warn_of_a_checkpoint_an_earlier_run_writes() {
    let s = Scratch::new("check-reads-written");
    let nn = s.write(
        "chain.nn",
        "model M(x: [2]) -> [2] { return x |> dense(2) }\n\
         data d { train: inline(x: [[0, 1], [1, 0]], y: [0, 1]) }\n\
         train first: M on d {\n    loss: cross_entropy(output, label)\n    optimizer: sgd(lr: 0.1)\n    steps: 1\n    checkpoint: \"first.st\"\n}\n\
         train second: M on d {\n    loss: kd(output, teacher, label)\n    optimizer: sgd(lr: 0.1)\n    steps: 1\n    init: \"first.st\"\n    teacher: M(checkpoint: \"./first.st\")\n}\n\
         train other: M on d {\n    loss: cross_entropy(output, label)\n    optimizer: sgd(lr: 0.1)\n    steps: 1\n    init: \"elsewhere.st\"\n}\n",
    );
    let out = run!("check", &nn);
    succeeded(&out);
    let err = stderr(&out);
    assert!(!err.contains("\"first.st\" does not exist"), "{err}");
    assert!(!err.contains("\"./first.st\" does not exist"), "{err}");
    assert_has(&err, &["checkpoint \"elsewhere.st\" does not exist"]);
    assert_eq!(err.matches("does not exist").count(), 1, "{err}");
}

/// A checkpoint given to `eval --run` or `predict --model` of another model than the one that
/// wrote it lacks the tensors asked for: the error names the run that wrote it and the option
/// that chooses it.
#[test]
fn a_checkpoint_of_another_run_names_the_run_that_wrote_it() {
    let s = Scratch::new("other-writer");
    let nn = s.write(
        "t.nn",
        "model A(x: [2]) -> [2] { return x |> dense(4) |> relu |> dense(2) }\n\
         model B(x: [2]) -> [2] { return x |> dense(3) as body |> relu |> dense(2) as head }\n\
         data d { train: inline(x: [[0, 0], [0, 1], [1, 0], [1, 1]], y: [[0], [1], [1], [0]]) }\n\
         train one: A on d { loss: cross_entropy(output, label) optimizer: sgd(lr: 0.1) steps: 3 checkpoint: \"one.st\" }\n\
         train two: B on d { loss: cross_entropy(output, label) optimizer: sgd(lr: 0.1) steps: 3 checkpoint: \"two.st\" }\n",
    );
    succeeded(&run!("train", &nn, "--quiet"));
    let one = s.path("one.st");
    let missing = "one.st has no tensor `body.weight` (expected f32 [2, 3]); it was written by run `one` (model `A`)";
    let err = user_error(&run!("eval", &nn, "--run", "two", "--checkpoint", &one));
    assert_has(&err, &[missing, "choose it with `--run one`"]);
    let input = s.write("x.json", "[0, 1]");
    let err = user_error(&run!(
        "predict",
        &nn,
        "--model",
        "B",
        "--checkpoint",
        &one,
        "--input",
        &input
    ));
    assert_has(&err, &[missing, "choose it with `--model A`"]);
    // The right one evaluates.
    succeeded(&run!(
        "eval",
        &nn,
        "--run",
        "two",
        "--checkpoint",
        &s.path("two.st")
    ));
}

/// `--image` writes the outputs of a model whose output is an image as one PGM, the samples side
/// by side with a grey column between them, each value in [0, 1] as its grey level (the values
/// `--raw` prints, times 255); a model whose output is not an image is refused.
#[test]
fn predict_writes_image_outputs_as_a_pgm() {
    let s = Scratch::new("predict-image");
    let nn = s.write(
        "ae.nn",
        "model Ae(x: [1, 2, 3]) -> [1, 2, 3] {\n    return x |> conv2d(1, kernel: 1) |> sigmoid\n}\n\
         model Flat(x: [1, 2, 3]) -> [6] {\n    return x |> flatten\n}\n\
         data d {\n    train: inline(x: [[0, 1, 2, 3, 4, 5]], y: [[0]])\n}\n\
         train Ae on d {\n    loss: mse(output, x)\n    optimizer: sgd(lr: 0.1)\n    steps: 1\n}\n",
    );
    let ck = s.path("ae.st");
    train_to(&nn, &ck);
    let csv = s.write("in.csv", "0,1,2,3,4,5\n5,4,3,2,1,0\n");
    let predict = |extra: &[&str]| {
        let out = run!("predict", &nn, "--checkpoint", &ck, "--input", &csv; extra);
        succeeded(&out)
    };
    // `--raw` with `--image` prints the values and writes the same picture.
    let with_raw = s.path("with-raw.pgm");
    let raw: Vec<Vec<f32>> = predict(&["--raw", "--image", with_raw.to_str().unwrap()])
        .lines()
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    let pgm = s.path("out.pgm");
    predict(&["--image", pgm.to_str().unwrap()]);
    let bytes = std::fs::read(&pgm).unwrap();
    assert_eq!(std::fs::read(&with_raw).unwrap(), bytes);
    let (header, pixels) = bytes.split_at(b"P5\n7 2\n255\n".len());
    assert_eq!(header, b"P5\n7 2\n255\n");
    // Two 3×2 images and a column between them: rows of 3 + 1 + 3 pixels.
    let grey = |v: f32| (v * 255.0).round() as u8;
    for row in 0..2 {
        let line = &pixels[row * 7..row * 7 + 7];
        let want: Vec<u8> = (raw[0][row * 3..row * 3 + 3].iter().map(|&v| grey(v)))
            .chain([128])
            .chain(raw[1][row * 3..row * 3 + 3].iter().map(|&v| grey(v)))
            .collect();
        assert_eq!(line, &want[..], "row {row}");
    }
    let out = run!(
        "predict",
        &nn,
        "--checkpoint",
        &ck,
        "--input",
        &csv,
        "--model",
        "Flat",
        "--image",
        &pgm
    );
    assert_has(
        &user_error(&out),
        &["`--image` writes outputs that are images", "[6]"],
    );
    // `nnc sample` of such a model points at `predict`.
    let out = run!("sample", &nn, "--checkpoint", &ck);
    assert_has(
        &user_error(&out),
        &[
            "is not a text source",
            "`nnc predict --input FILE`",
            "--image",
        ],
    );
}
