//! A bidirectional layer through the command line: trained, its `_reverse` parameters saved
//! under their paths, frozen and scaled by path in a second run that starts from the first,
//! a teacher of a third; `predict` and `eval` giving what the interpreter computes from the
//! checkpoint.

mod common;

use common::{nnc, Scratch};
use nnc::exec::StepCtx;
use nnc::runtime::checkpoint::Checkpoint;

/// A sequence classifier with a bidirectional GRU, trained twice: `tune` starts from `pre`,
/// one reverse weight frozen and another at learning rate 0; then it teaches `student`.
const TAGGER: &str = r#"model Tagger(x: [4, 2]) -> [2] {
    h = x |> gru(3, bidirectional: true)
    return h |> flatten |> dense(2)
}
model Small(x: [4, 2]) -> [2] { return x |> flatten |> dense(2) }
data d {
    train: inline(x: [[0, 1, 1, 0, 0, 1, 1, 0], [1, 1, 0, 0, 1, 1, 0, 0],
                      [0, 0, 1, 1, 0, 0, 1, 1], [1, 0, 0, 1, 1, 0, 0, 1]],
                  y: [[0], [1], [1], [0]])
}
train pre: Tagger on d {
    loss: cross_entropy(output, label)
    optimizer: adam(lr: 1e-2)
    batch: 4, steps: 20, seed: 1
}
train tune: Tagger on d {
    loss: cross_entropy(output, label)
    optimizer: adam(lr: 1e-2)
    batch: 4, steps: 20, seed: 2
    init: pre
    freeze: [gru1.w_hh_reverse]
    lr_scale: { gru1.w_xh_reverse: 0 }
}
train student: Small on d {
    loss: kd(output, teacher, label, alpha: 0.5, temperature: 2)
    optimizer: sgd(lr: 0.1)
    batch: 4, steps: 5, seed: 3
    teacher: tune
}
"#;

#[test]
fn reverse_parameters_are_saved_frozen_and_scaled_by_path() {
    let dir = Scratch::new("bidirectional");
    let file = dir.write("tagger.nn", TAGGER);
    let ck = dir.path("ck.safetensors");
    let (file, ck_arg) = (file.to_str().unwrap(), ck.to_str().unwrap());
    nnc(&["train", file, "--quiet", "--checkpoint", ck_arg]);
    let load = |run: &str| Checkpoint::load(&dir.path(&format!("ck.{run}.safetensors"))).unwrap();
    let (pre, tune) = (load("pre"), load("tune"));
    // PyTorch's tensors of both directions, by nnc's names.
    for (name, dims) in [
        ("w_xh", [2, 9].as_slice()),
        ("w_hh", &[3, 9]),
        ("bias_xh", &[9]),
        ("bias_hh", &[9]),
    ] {
        for dir in ["", "_reverse"] {
            let t = &pre.tensors[&format!("gru1.{name}{dir}")];
            assert_eq!(t.dims, dims, "gru1.{name}{dir}");
        }
    }
    let same = |path: &str| pre.tensors[path].data == tune.tensors[path].data;
    assert!(same("gru1.w_hh_reverse"), "frozen, yet trained");
    assert!(same("gru1.w_xh_reverse"), "learning rate 0, yet trained");
    assert!(!same("gru1.w_hh"), "trained, yet unchanged");
    assert!(!same("gru1.bias_hh_reverse"), "trained, yet unchanged");
    // `predict --raw` on a sample: the interpreter's output of the model with those weights.
    let x = [0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.5];
    let row: Vec<String> = x.iter().map(|v| v.to_string()).collect();
    let csv = dir.write("x.csv", row.join(",") + "\n");
    let tune_ck = dir.path("ck.tune.safetensors");
    let raw = nnc(&[
        "predict",
        file,
        "--checkpoint",
        tune_ck.to_str().unwrap(),
        "--input",
        csv.to_str().unwrap(),
        "--model",
        "Tagger",
        "--raw",
    ]);
    let got: Vec<f64> = raw.trim().split(',').map(|v| v.parse().unwrap()).collect();
    let want = interpreted(&tune, &x, 1);
    assert_eq!(got.len(), want.len(), "{raw}");
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 1e-5, "predict {a}, interpreter {b}");
    }
    // `eval` (on the training split, the data having no other): the mean cross-entropy.
    let eval = nnc(&[
        "eval",
        file,
        "--checkpoint",
        tune_ck.to_str().unwrap(),
        "--run",
        "tune",
    ]);
    let at = eval.find("train loss ").unwrap() + 11;
    let printed: f64 = eval[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let samples = [
        [0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0],
        [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0],
        [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0],
    ];
    let logits = interpreted(&tune, &samples.concat(), 4);
    let loss = logits
        .chunks(2)
        .zip([0, 1, 1, 0])
        .map(|(z, label)| (z[0].exp() + z[1].exp()).ln() - z[label])
        .sum::<f64>()
        / 4.0;
    assert!(
        (printed - loss).abs() < 6e-5,
        "eval {printed}, interpreter {loss}"
    );
    // The student learned from the bidirectional teacher's forward pass.
    assert!(dir.path("ck.student.safetensors").exists());
}

/// The outputs of `Tagger` with the parameters of `ck` on `batch` samples `x`, by the
/// interpreter.
fn interpreted(ck: &Checkpoint, x: &[f64], batch: usize) -> Vec<f64> {
    let src = nnc::syntax::parse(TAGGER).unwrap();
    let program = nnc::check::check(&src).unwrap();
    let g = &program.model("Tagger").unwrap().graph;
    let params: Vec<Vec<f64>> = g
        .params
        .iter()
        .map(|p| ck.tensors[&p.path].data.iter().map(|&v| v as f64).collect())
        .collect();
    let vals = nnc::interp::eval(g, batch, &[x.to_vec()], &params, StepCtx::default()).unwrap();
    vals[g.output("output").unwrap().index()].clone()
}
