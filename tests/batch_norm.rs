//! `batch_norm` through training: the running statistics a run folds into its buffers (against
//! numpy), the same training on the JIT and the interpreter, a checkpoint whose running
//! statistics `nnc eval` uses, a resumed run that ends bit-identical, `freeze:` and the refusal
//! of a batch with one value per channel.

mod common;

use common::Scratch;
use nnc::ir::Program;
use nnc::runtime::checkpoint::Checkpoint;
use nnc::runtime::train::{Backend, Session, Tensors, TrainError, TrainOptions};

/// 12 samples of two features; the model normalizes them first, so that its running
/// statistics depend on the data alone, not on what the dense layer learns.
fn source(train: &str) -> String {
    source_with("batch_norm", train)
}

/// [`source`] with the batch norm written `bn`: `batch_norm(affine: false)`, say.
fn source_with(bn: &str, train: &str) -> String {
    format!(
        r#"
model Net(x: [2]) -> [1] {{
    return x |> {bn} |> dense(1)
}}

data pts {{
    train: inline(
        x: [[0.0, 1.0], [2.0, -1.0], [4.0, 3.0], [1.0, 0.5],
            [3.0, 2.0], [-1.0, 0.0], [5.0, 1.5], [2.5, -2.0],
            [0.5, 4.0], [1.5, 1.0], [-2.0, 2.5], [6.0, -0.5]],
        y: [[1], [0], [2], [1], [1.5], [0], [2], [0.5], [2], [1], [0.5], [1.5]]
    )
    test: inline(
        x: [[1.0, 1.0], [3.0, -1.0], [0.0, 2.0]],
        y: [[1], [0.5], [1.5]]
    )
}}

train Net on pts {{
    loss: mse(output, label)
{train}
}}
"#
    )
}

fn program(src: &str) -> Program {
    let ast = nnc::syntax::parse(src).unwrap_or_else(|d| panic!("{d:?}"));
    nnc::check::check(&ast).unwrap_or_else(|d| panic!("{d:?}"))
}

fn quiet() -> TrainOptions {
    TrainOptions {
        quiet: true,
        ..TrainOptions::default()
    }
}

fn train(p: &Program, backend: Backend, opts: TrainOptions) -> Result<Tensors, TrainError> {
    let mut s = Session::new(p, backend, opts)?;
    s.run("Net")?;
    Ok(s.params("Net").unwrap().clone())
}

fn close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert!((*g as f64 - w).abs() < tol, "{what}: {got:?} vs {want:?}");
    }
}

/// Three steps over the 12 samples in order (batches of 4): after each, running_mean and
/// running_var are (1 − 0.1)·running + 0.1·batch, with the batch's unbiased variance, as in
/// PyTorch. The expected values were computed with numpy (`x[4s:4s+4].mean(0)`,
/// `.var(0, ddof=1)`, folded from running_mean 0 and running_var 1), not by nnc; both back ends
/// must give them.
#[test]
fn running_statistics_follow_pytorch_over_three_steps() {
    let want = [
        (1, [0.175, 0.0875], [1.1916666666666667, 1.1729166666666666]),
        (
            2,
            [0.395, 0.11625],
            [1.6954166666666668, 1.3785416666666668],
        ),
        (3, [0.5055, 0.279625], [2.642541666666667, 1.6156875]),
    ];
    for (steps, mean, var) in want {
        let p = program(&source(&format!(
            "    optimizer: sgd(lr: 0.1)\n    batch: 4\n    steps: {steps}\n    shuffle: false"
        )));
        for backend in [Backend::jit(1), Backend::interpreter()] {
            let t = train(&p, backend, quiet()).unwrap();
            close(&t["batch_norm1.running_mean"].data, &mean, 1e-6, "mean");
            close(&t["batch_norm1.running_var"].data, &var, 1e-6, "var");
            // The weight and bias train (the gradient reaches them), the buffers do not.
            assert!(t["batch_norm1.weight"].data.iter().any(|w| *w != 1.0));
        }
    }
}

/// 60 steps of Adam on shuffled batches: the JIT and the interpreter end with the same
/// parameters and running statistics, and the same test loss (on the running statistics, or
/// the test batch's without them), with and without `affine` and `track_running_stats`.
#[test]
fn a_batch_norm_model_trains_alike_on_the_jit_and_the_interpreter() {
    for bn in [
        "batch_norm",
        "batch_norm(affine: false)",
        "batch_norm(track_running_stats: false)",
        "batch_norm(affine: false, track_running_stats: false)",
    ] {
        alike_on_the_jit_and_the_interpreter(bn);
    }
}

fn alike_on_the_jit_and_the_interpreter(bn: &str) {
    let p = program(&source_with(
        bn,
        "    optimizer: adam(lr: 0.05)\n    batch: 4\n    steps: 60\n    seed: 3",
    ));
    let run = |backend: Backend| {
        let mut s = Session::new(&p, backend, quiet()).unwrap();
        let sum = s.run_all().unwrap().remove(0);
        (sum, s.params("Net").unwrap().clone())
    };
    let (jit, jp) = run(Backend::jit(1));
    let (interp, ip) = run(Backend::interpreter());
    assert!(jit.final_loss.is_finite(), "{jit:?}");
    assert!((jit.test_loss.unwrap() - interp.test_loss.unwrap()).abs() < 1e-4);
    assert_eq!(jp.len(), ip.len());
    for (path, t) in &jp {
        for (a, b) in t.data.iter().zip(&ip[path].data) {
            assert!(
                (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                "{bn} {path}: {a} vs {b}"
            );
        }
    }
}

/// The evaluation graph normalizes with the running statistics: the test loss the run reports
/// and the one `nnc eval` computes from the checkpoint both equal the loss computed here, by
/// hand, from the checkpoint's tensors ((x − running_mean)/√(running_var + 1e-5)·w + b, then
/// the dense layer, then the mean squared error).
#[test]
fn a_checkpoint_carries_the_running_statistics_to_nnc_eval() {
    let dir = Scratch::new("bn_eval");
    let src = source("    optimizer: sgd(lr: 0.1)\n    batch: 4\n    steps: 6\n    shuffle: false");
    let file = dir.write("bn.nn", &src);
    let ck = dir.path("bn.safetensors");
    let [reported, said] = reported_test_losses(&src, &file, &ck);
    let c = Checkpoint::load(&ck).unwrap();
    let t = |name: &str| tensor(&c, name);
    let (m, v) = (t("batch_norm1.running_mean"), t("batch_norm1.running_var"));
    assert!(m.iter().all(|m| *m != 0.0) && v.iter().all(|v| *v != 1.0));
    let (w, b) = (t("batch_norm1.weight"), t("batch_norm1.bias"));
    let loss = test_mse(
        |c, x| (x - m[c]) / (v[c] + 1e-5).sqrt() * w[c] + b[c],
        &t("dense1.weight"),
        t("dense1.bias")[0],
    );
    assert!((reported - loss).abs() < 1e-5, "{reported} vs {loss}");
    assert!((said - loss).abs() < 1e-4, "{said} vs {loss}");
}

/// A run stopped after k steps and resumed from its checkpoint ends bit-identical to the run
/// straight through: the running statistics are saved and restored with the parameters.
#[test]
fn resuming_a_batch_norm_run_is_bit_identical() {
    let dir = Scratch::new("bn_resume");
    let p = program(&source(
        "    optimizer: adam(lr: 0.05)\n    batch: 4\n    steps: 9\n    seed: 5",
    ));
    let straight = train(&p, Backend::jit(1), quiet()).unwrap();
    for k in [1u64, 4] {
        let ck = dir.path(&format!("k{k}.safetensors"));
        let stop = TrainOptions {
            stop_after: Some(k),
            checkpoint: Some(ck.clone()),
            ..quiet()
        };
        let e = train(&p, Backend::jit(1), stop).unwrap_err();
        assert!(matches!(e, TrainError::Interrupted { .. }), "{e}");
        let resume = TrainOptions {
            resume: Some(ck),
            ..quiet()
        };
        let resumed = train(&p, Backend::jit(1), resume).unwrap();
        for (name, t) in &straight {
            let bits = |d: &[f32]| d.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&t.data),
                bits(&resumed[name].data),
                "{name} after k = {k}"
            );
        }
    }
}

/// Under `freeze:` a batch norm runs on its running statistics and leaves them as they were
/// (Keras's frozen `BatchNormalization`); the layers around it still train.
#[test]
fn a_frozen_batch_norm_keeps_its_running_statistics() {
    let src = source(
        "    optimizer: sgd(lr: 0.1)\n    batch: 4\n    steps: 3\n    shuffle: false\n    \
         freeze: batch_norm1",
    );
    let p = program(&src);
    assert!(p.runs[0]
        .graph
        .outputs
        .iter()
        .all(|o| !o.name.starts_with("stats:")));
    // Nor does its training graph compute the batch statistics it no longer reads.
    assert!(p.runs[0]
        .graph
        .nodes
        .iter()
        .all(|n| !matches!(n.op, nnc::ir::Op::BatchStats { .. })));
    for backend in [Backend::jit(1), Backend::interpreter()] {
        let t = train(&p, backend, quiet()).unwrap();
        assert_eq!(t["batch_norm1.running_mean"].data, [0.0, 0.0]);
        assert_eq!(t["batch_norm1.running_var"].data, [1.0, 1.0]);
        assert_eq!(t["batch_norm1.weight"].data, [1.0, 1.0]);
        assert!(t["dense1.weight"].data.iter().all(|w| w.abs() > 0.0));
    }
}

/// A training split of one sample gives a batch of one: one value per channel, which the
/// trainer refuses before the first step, as PyTorch does.
#[test]
fn a_batch_of_one_value_per_channel_is_refused_at_run_time() {
    let src = source("    optimizer: sgd(lr: 0.1)\n    batch: 8\n    steps: 3").replace(
        "x: [[0.0, 1.0], [2.0, -1.0], [4.0, 3.0], [1.0, 0.5],\n            [3.0, 2.0], [-1.0, 0.0], [5.0, 1.5], [2.5, -2.0],\n            [0.5, 4.0], [1.5, 1.0], [-2.0, 2.5], [6.0, -0.5]],\n        y: [[1], [0], [2], [1], [1.5], [0], [2], [0.5], [2], [1], [0.5], [1.5]]",
        "x: [[0.0, 1.0]],\n        y: [[1]]",
    );
    assert!(src.contains("x: [[0.0, 1.0]],"));
    let p = program(&src);
    let e = train(&p, Backend::jit(1), quiet()).unwrap_err();
    assert!(
        e.to_string()
            .contains("Expected more than 1 value per channel when training"),
        "{e}"
    );
}

/// `init:` carries the running statistics from the run it names (a second run that freezes
/// the batch norm keeps them exactly), and a `teacher`'s batch norm runs on its running
/// statistics in the student's training graph (no batch statistics of its own, nothing of it
/// updated).
#[test]
fn init_and_teacher_carry_the_running_statistics() {
    let dir = Scratch::new("bn_init_teacher");
    let mut src = source("    optimizer: sgd(lr: 0.1)\n    batch: 4\n    steps: 6")
        .replace("train Net on pts", "train first: Net on pts");
    src.push_str(
        "train second: Net on pts {\n    loss: mse(output, label)\n    optimizer: sgd(lr: 0.1)\n    \
         batch: 4\n    steps: 3\n    init: first\n    freeze: batch_norm1\n}\n\
         model Student(x: [2]) -> [1] { return x |> dense(1) }\n\
         train student: Student on pts {\n    loss: mse(output, teacher)\n    \
         optimizer: sgd(lr: 0.1)\n    batch: 4\n    steps: 3\n    \
         teacher: Net(checkpoint: \"bn.first.safetensors\")\n}\n",
    );
    let file = dir.write("bn.nn", &src);
    let p = program(&src);
    let student = p.run("student").unwrap();
    let teacher_ops: Vec<String> = student
        .graph
        .nodes
        .iter()
        .filter(|n| n.label.starts_with("teacher."))
        .map(|n| n.op.name())
        .collect();
    assert!(
        teacher_ops.iter().any(|o| o == "batch_norm_eval"),
        "{teacher_ops:?}"
    );
    assert!(
        teacher_ops.iter().all(|o| o != "batch_stats"),
        "{teacher_ops:?}"
    );
    assert!(student
        .graph
        .outputs
        .iter()
        .all(|o| !o.name.starts_with("stats:")));
    let opts = TrainOptions {
        checkpoint: Some(dir.path("bn.safetensors")),
        base_dir: file.parent().unwrap().into(),
        data_dir: file.parent().unwrap().into(),
        ..quiet()
    };
    let mut s = Session::new(&p, Backend::jit(1), opts).unwrap();
    s.run_all().unwrap();
    let first = Checkpoint::load(&dir.path("bn.first.safetensors")).unwrap();
    let second = Checkpoint::load(&dir.path("bn.second.safetensors")).unwrap();
    for (name, start) in [
        ("batch_norm1.running_mean", [0.0, 0.0]),
        ("batch_norm1.running_var", [1.0, 1.0]),
    ] {
        assert_ne!(
            first.tensors[name].data, start,
            "{name}: the first run moved it"
        );
        assert_eq!(
            first.tensors[name].data, second.tensors[name].data,
            "{name}"
        );
    }
}

/// The test loss `run` of `file` reports (`Net` trained by `src` to checkpoint `ck`), and the
/// one `nnc eval` computes from that checkpoint.
fn reported_test_losses(src: &str, file: &std::path::Path, ck: &std::path::Path) -> [f64; 2] {
    let p = program(src);
    let mut s = Session::new(
        &p,
        Backend::jit(1),
        TrainOptions {
            checkpoint: Some(ck.to_path_buf()),
            ..quiet()
        },
    )
    .unwrap();
    let reported = s.run_all().unwrap().remove(0).test_loss.unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nnc"))
        .arg("eval")
        .arg("--checkpoint")
        .arg(ck)
        .arg(file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said: f64 = text
        .split("test loss ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no test loss in {text}"));
    [reported, said]
}

/// Checkpoint `c`'s tensor `name`, in f64.
fn tensor(c: &Checkpoint, name: &str) -> Vec<f64> {
    let t = c.tensors.get(name).unwrap_or_else(|| panic!("no {name}"));
    t.data.iter().map(|&v| v as f64).collect()
}

/// The test split's mean squared error for a dense layer (`dw`, `db`) on each channel `c` of
/// the samples normalized by `norm(c, x)`.
fn test_mse(norm: impl Fn(usize, f64) -> f64, dw: &[f64], db: f64) -> f64 {
    let xs = [[1.0, 1.0], [3.0, -1.0], [0.0, 2.0]];
    let ys = [1.0, 0.5, 1.5];
    let mut loss = 0.0;
    for (x, y) in xs.iter().zip(ys) {
        let out = db + (0..2).map(|c| norm(c, x[c]) * dw[c]).sum::<f64>();
        loss += (out - y) * (out - y) / 3.0;
    }
    loss
}

/// PyTorch's `BatchNorm1d(2, affine=False)`: no weight or bias in the checkpoint, the running
/// statistics as with them (numpy's numbers of the test above, after three steps), and an
/// evaluation that is x̂ = (x − running_mean)/√(running_var + eps), by hand here, as reported
/// by the run and by `nnc eval`.
#[test]
fn without_affine_there_is_no_weight_and_evaluation_is_the_normalized_input() {
    let dir = Scratch::new("bn_affine");
    let src = source_with(
        "batch_norm(affine: false)",
        "    optimizer: sgd(lr: 0.1)\n    batch: 4\n    steps: 3\n    shuffle: false",
    );
    let file = dir.write("bn.nn", &src);
    let ck = dir.path("bn.safetensors");
    let [reported, said] = reported_test_losses(&src, &file, &ck);
    let c = Checkpoint::load(&ck).unwrap();
    assert!(!c.tensors.contains_key("batch_norm1.weight"));
    assert!(!c.tensors.contains_key("batch_norm1.bias"));
    let t = |name: &str| tensor(&c, name);
    let (m, v) = (t("batch_norm1.running_mean"), t("batch_norm1.running_var"));
    close(
        &c.tensors["batch_norm1.running_mean"].data,
        &[0.5055, 0.279625],
        1e-6,
        "mean",
    );
    close(
        &c.tensors["batch_norm1.running_var"].data,
        &[2.642541666666667, 1.6156875],
        1e-6,
        "var",
    );
    let loss = test_mse(
        |c, x| (x - m[c]) / (v[c] + 1e-5).sqrt(),
        &t("dense1.weight"),
        t("dense1.bias")[0],
    );
    assert!((reported - loss).abs() < 1e-5, "{reported} vs {loss}");
    assert!((said - loss).abs() < 1e-4, "{said} vs {loss}");
}

/// PyTorch's `BatchNorm1d(2, track_running_stats=False)`: no buffers, and evaluation
/// normalizes with the statistics of the batch evaluated (here the three test samples, one
/// batch): (x − mean)/√(var + eps) ⊙ weight + bias with their mean and biased variance, by
/// hand here, as reported by the run and by `nnc eval`.
#[test]
fn without_running_statistics_evaluation_normalizes_over_the_batch() {
    let dir = Scratch::new("bn_track");
    let src = source_with(
        "batch_norm(track_running_stats: false)",
        "    optimizer: sgd(lr: 0.1)\n    batch: 4\n    steps: 5\n    seed: 2",
    );
    let file = dir.write("bn.nn", &src);
    let ck = dir.path("bn.safetensors");
    let [reported, said] = reported_test_losses(&src, &file, &ck);
    let c = Checkpoint::load(&ck).unwrap();
    assert!(
        c.tensors.keys().all(|k| !k.contains("running")),
        "{:?}",
        c.tensors.keys()
    );
    let t = |name: &str| tensor(&c, name);
    let (w, b) = (t("batch_norm1.weight"), t("batch_norm1.bias"));
    assert!(w.iter().any(|w| *w != 1.0), "the weight trains: {w:?}");
    let xs = [[1.0, 1.0], [3.0, -1.0], [0.0, 2.0]];
    let mean: Vec<f64> = (0..2)
        .map(|c| xs.iter().map(|x| x[c]).sum::<f64>() / 3.0)
        .collect();
    let var: Vec<f64> = (0..2)
        .map(|c| xs.iter().map(|x| (x[c] - mean[c]).powi(2)).sum::<f64>() / 3.0)
        .collect();
    let loss = test_mse(
        |c, x| (x - mean[c]) / (var[c] + 1e-5).sqrt() * w[c] + b[c],
        &t("dense1.weight"),
        t("dense1.bias")[0],
    );
    assert!((reported - loss).abs() < 1e-5, "{reported} vs {loss}");
    assert!((said - loss).abs() < 1e-4, "{said} vs {loss}");
}

/// `freeze:` on a batch norm without `affine` (nothing of its own to freeze) still makes it
/// run on its running statistics and keep them, as with a weight and bias; without running
/// statistics a frozen batch norm keeps normalizing over the batch, its weight and bias
/// fixed.
#[test]
fn freezing_a_batch_norm_without_affine_or_running_statistics() {
    let frozen = |bn: &str| {
        let src = source_with(
            bn,
            "    optimizer: sgd(lr: 0.1)\n    batch: 4\n    steps: 3\n    freeze: batch_norm1",
        );
        let p = program(&src);
        let eval_mode = p.runs[0]
            .graph
            .nodes
            .iter()
            .any(|n| matches!(n.op, nnc::ir::Op::BatchNormEval { .. }));
        (eval_mode, train(&p, Backend::jit(1), quiet()).unwrap())
    };
    let (eval_mode, t) = frozen("batch_norm(affine: false)");
    assert!(eval_mode);
    assert_eq!(t["batch_norm1.running_mean"].data, [0.0, 0.0]);
    assert_eq!(t["batch_norm1.running_var"].data, [1.0, 1.0]);
    let (eval_mode, t) = frozen("batch_norm(track_running_stats: false)");
    assert!(!eval_mode);
    assert_eq!(t["batch_norm1.weight"].data, [1.0, 1.0]);
    assert_eq!(t["batch_norm1.bias"].data, [0.0, 0.0]);
    assert!(t["dense1.weight"].data.iter().all(|w| w.abs() > 0.0));
}
