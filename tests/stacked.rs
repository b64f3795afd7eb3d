//! Stacked recurrent layers (`num_layers:`, `dropout:`) through the command line. A stack
//! computes exactly what the same layers piped compute, with a `dropout` stage between them:
//! from the same parameters (each `init` from a checkpoint of the other's names), training
//! ends with the same bits, and `predict --raw` and `sample` print the same text. A stacked
//! character model trains, saves its `_l1` tensors under their paths, is frozen and scaled by
//! path, evaluated and sampled from; `nnc gradcheck` passes on a stacked bidirectional LSTM.

mod common;

use common::{nnc, Scratch};
use nnc::ir::Graph;
use nnc::runtime::checkpoint::{save, Checkpoint, Saved};
use std::path::Path;

/// The path in the piped model of stacked parameter `path`: layer k ≥ 1 of `lstm1`
/// (`lstm1.w_xh_l1_reverse`) is the piped model's layer k + 1 (`lstm2.w_xh_reverse`).
fn piped_path(path: &str) -> String {
    let (layer, name) = path.split_once('.').unwrap();
    let Some(at) = name.find("_l") else {
        return path.to_string();
    };
    let digits: String = name[at + 2..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let k: usize = digits.parse().unwrap();
    let stem = layer.trim_end_matches('1');
    let rest = &name[at + 2 + digits.len()..];
    format!("{stem}{}.{}{rest}", k + 1, &name[..at])
}

/// The graph of model `name` of `src`.
fn model_graph(src: &str, name: &str) -> Graph {
    let file = nnc::syntax::parse(src).unwrap();
    let p = nnc::check::check(&file)
        .unwrap_or_else(|d| panic!("{}", nnc::diag::Report::new("t.nn", src, d).render(false)));
    p.model(name).unwrap().graph.clone()
}

/// Each stack beside the same layers piped, the dropout a stage between them.
const PAIRS: [(&str, &str); 3] = [
    (
        "rnn(4, activation: relu, num_layers: 3, dropout: 0.25)",
        "rnn(4, activation: relu) |> dropout(0.25) |> rnn(4, activation: relu) |> dropout(0.25) \
         |> rnn(4, activation: relu)",
    ),
    (
        "gru(3, num_layers: 2, dropout: 0.4, bidirectional: true)",
        "gru(3, bidirectional: true) |> dropout(0.4) |> gru(3, bidirectional: true)",
    ),
    (
        "lstm(5, num_layers: 2, dropout: 0.3)",
        "lstm(5) |> dropout(0.3) |> lstm(5)",
    ),
];

/// A number in [−0.5, 0.5) for index `i` of tensor `t` (SplitMix64's mix of the two): parameters
/// and data without a PRNG.
fn value(t: usize, i: usize) -> f32 {
    let mut z = ((t as u64) << 32 | i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    ((z >> 40) as f64 / (1u64 << 24) as f64 - 0.5) as f32
}

#[test]
fn a_stack_trains_and_predicts_exactly_as_the_layers_piped() {
    for (stacked, piped) in PAIRS {
        let dir = Scratch::new("stacked_equal");
        let list = |n: usize, len: usize| {
            let rows: Vec<String> = (0..n)
                .map(|s| {
                    let r: Vec<String> = (0..len).map(|i| value(s, i).to_string()).collect();
                    format!("[{}]", r.join(", "))
                })
                .collect();
            format!("[{}]", rows.join(", "))
        };
        let src = format!(
            "model Stacked(x: [6, 3]) -> [12] {{ return x |> {stacked} |> dense(2) |> flatten }}
             model Piped(x: [6, 3]) -> [12] {{ return x |> {piped} |> dense(2) |> flatten }}
             data d {{ train: inline(x: {}, y: {}) }}
             train stacked: Stacked on d {{
                 loss: mse(output, label) optimizer: adam(lr: 1e-2)
                 batch: 2, steps: 6, seed: 7, init: \"stacked0.safetensors\"
             }}
             train piped: Piped on d {{
                 loss: mse(output, label) optimizer: adam(lr: 1e-2)
                 batch: 2, steps: 6, seed: 7, init: \"piped0.safetensors\"
             }}",
            list(4, 18),
            list(4, 12).replace("-0.", "0.")
        );
        let file = dir.write("pair.nn", &src);
        // The same starting values under each model's names; the names map one to one.
        let (gs, gp) = (model_graph(&src, "Stacked"), model_graph(&src, "Piped"));
        let data: Vec<Vec<f32>> = gs
            .params
            .iter()
            .enumerate()
            .map(|(t, p)| (0..p.dims.iter().product()).map(|i| value(t, i)).collect())
            .collect();
        let write = |name: &str, path: &dyn Fn(&str) -> String| {
            let saved: Vec<Saved> = gs
                .params
                .iter()
                .zip(&data)
                .map(|(p, d)| Saved {
                    name: path(&p.path),
                    dims: &p.dims,
                    data: d,
                })
                .collect();
            save(&dir.path(name), &saved, None).unwrap();
        };
        write("stacked0.safetensors", &|p| p.to_string());
        write("piped0.safetensors", &piped_path);
        let mut mapped: Vec<String> = gs.params.iter().map(|p| piped_path(&p.path)).collect();
        let mut names: Vec<String> = gp.params.iter().map(|p| p.path.clone()).collect();
        mapped.sort();
        names.sort();
        assert_eq!(mapped, names, "{stacked}");

        let ck = dir.path("ck.safetensors");
        let file = file.to_str().unwrap();
        nnc(&[
            "train",
            file,
            "--quiet",
            "--checkpoint",
            ck.to_str().unwrap(),
        ]);
        let load =
            |run: &str| Checkpoint::load(&dir.path(&format!("ck.{run}.safetensors"))).unwrap();
        let (s, p) = (load("stacked"), load("piped"));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (param, start) in gs.params.iter().zip(&data) {
            let (a, b) = (
                &s.tensors[&param.path],
                &p.tensors[&piped_path(&param.path)],
            );
            assert_eq!(bits(&a.data), bits(&b.data), "{stacked}: {}", param.path);
            assert_ne!(&a.data, start, "{stacked}: {} was not trained", param.path);
        }
        // Evaluating (no dropout, the LSTM keeping no state): the same outputs, digit for digit.
        let row: Vec<String> = (0..18).map(|i| value(9, i).to_string()).collect();
        let csv = dir.write("x.csv", row.join(",") + "\n");
        let predict = |model: &str, run: &str| {
            let ck = dir.path(&format!("ck.{run}.safetensors"));
            let (ck, csv) = (ck.to_str().unwrap(), csv.to_str().unwrap());
            nnc(&[
                "predict",
                file,
                "--checkpoint",
                ck,
                "--input",
                csv,
                "--model",
                model,
                "--raw",
            ])
        };
        let out = predict("Stacked", "stacked");
        assert_eq!(out, predict("Piped", "piped"), "{stacked}");
        assert_eq!(out.trim().split(',').count(), 12, "{out}");
    }
}

/// A character model on a small text: 2 stacked LSTM layers with dropout between them.
const CHAR: &str = r#"model Char(tokens: i32[12]) -> [12, 12] {
    return tokens |> embedding(12, 6) |> lstm(8, num_layers: 2, dropout: 0.1) |> dense(12)
}
model CharPiped(tokens: i32[12]) -> [12, 12] {
    return tokens |> embedding(12, 6) |> lstm(8) |> dropout(0.1) |> lstm(8) |> dense(12)
}
data text { train: text("t.txt", seq: 12) }
train char: Char on text {
    loss: cross_entropy(output, label)
    optimizer: adam(lr: 1e-2)
    batch: 4, steps: 30, seed: 3
}
train tune: Char on text {
    loss: cross_entropy(output, label)
    optimizer: adam(lr: 1e-2)
    batch: 4, steps: 10, seed: 4
    init: char
    freeze: [lstm1.w_hh_l1]
    lr_scale: { lstm1.w_xh_l1: 0 }
}
train piped: CharPiped on text {
    loss: cross_entropy(output, label)
    optimizer: adam(lr: 1e-2)
    batch: 4, steps: 1
}
"#;

/// `ck`'s parameters of `Char` under `CharPiped`'s names, with its header (the text's
/// characters), written to `to`.
fn as_piped(ck: &Checkpoint, to: &Path) {
    let g = model_graph(CHAR, "Char");
    let tensors = g
        .params
        .iter()
        .map(|p| (piped_path(&p.path), ck.tensors[&p.path].clone()))
        .collect();
    let piped = Checkpoint {
        tensors,
        ..ck.clone()
    };
    piped.save_to(to).unwrap();
}

#[test]
fn a_stacked_char_model_trains_saves_by_path_evaluates_and_samples() {
    let dir = Scratch::new("stacked_char");
    let text = "the cat sat on the hat. the rat ate.\n".repeat(12);
    let mut chars: Vec<char> = text.chars().collect();
    chars.sort();
    chars.dedup();
    assert_eq!(chars.len(), 12, "the model's vocabulary");
    dir.write("t.txt", &text);
    let file = dir.write("char.nn", CHAR);
    let ck = dir.path("ck.safetensors");
    let (file, ck_arg) = (file.to_str().unwrap(), ck.to_str().unwrap());
    let checked = nnc(&["check", file]);
    assert!(checked.contains("train char"), "{checked}");
    nnc(&["train", file, "--quiet", "--checkpoint", ck_arg]);
    let load = |run: &str| Checkpoint::load(&dir.path(&format!("ck.{run}.safetensors"))).unwrap();
    let (char_ck, tune) = (load("char"), load("tune"));
    // Layer 1 reads layer 0's [T, 8]: PyTorch's weight_ih_l1 [32, 8] is w_xh_l1ᵀ.
    for (name, dims) in [
        ("w_xh", [6, 32].as_slice()),
        ("w_hh", &[8, 32]),
        ("bias", &[32]),
        ("w_xh_l1", &[8, 32]),
        ("w_hh_l1", &[8, 32]),
        ("bias_l1", &[32]),
    ] {
        assert_eq!(
            char_ck.tensors[&format!("lstm1.{name}")].dims,
            dims,
            "{name}"
        );
    }
    let same = |path: &str| char_ck.tensors[path].data == tune.tensors[path].data;
    assert!(same("lstm1.w_hh_l1"), "frozen, yet trained");
    assert!(same("lstm1.w_xh_l1"), "learning rate 0, yet trained");
    assert!(!same("lstm1.bias_l1"), "trained, yet unchanged");
    assert!(!same("lstm1.w_hh"), "trained, yet unchanged");

    let tune_ck = dir.path("ck.tune.safetensors");
    let tune_ck = tune_ck.to_str().unwrap();
    let eval = nnc(&["eval", file, "--checkpoint", tune_ck, "--run", "tune"]);
    let at = eval.find("train loss ").expect(&eval) + 11;
    let loss: f64 = eval[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // 40 steps on a text of 12 characters: well below a uniform guess's ln 12 ≈ 2.48.
    assert!(loss < 2.1, "eval loss {loss}");

    // Greedy sampling, as the piped model with the same parameters samples.
    let piped_ck = dir.path("piped.safetensors");
    as_piped(&tune, &piped_ck);
    let sample = |ck: &str, model: &str| {
        nnc(&[
            "sample",
            file,
            "--checkpoint",
            ck,
            "--model",
            model,
            "--prompt",
            "the ",
            "--length",
            "30",
            "--temperature",
            "0",
        ])
    };
    let text = sample(tune_ck, "Char");
    assert!(text.starts_with("the "), "{text:?}");
    assert_eq!(
        text.trim_end_matches('\n').chars().count(),
        4 + 30,
        "{text:?}"
    );
    assert_eq!(text, sample(piped_ck.to_str().unwrap(), "CharPiped"));
}

/// `nnc gradcheck` (the JIT's backward pass against finite differences) of a 2-layer
/// bidirectional LSTM with dropout between its layers, every layer's tensors checked.
#[test]
fn gradcheck_of_a_stacked_bidirectional_lstm_passes() {
    let dir = Scratch::new("stacked_gradcheck");
    let file = dir.write(
        "small.nn",
        "model Small(x: [5, 3]) -> [10] {
             return x |> lstm(4, num_layers: 2, dropout: 0.3, bidirectional: true) |> dense(2)
                 |> flatten
         }
         data d { train: inline(x: [[0.5, -1, 2, 0, 1, -0.5, 1, 1, -2, 0.3, 0.7, -0.1, 0, 2, 1]],
                                y: [[1, 0, -1, 0.5, 0.2, 0, 1, -1, 0.5, 0]]) }
         train Small on d { loss: mse(output, label) optimizer: adam(lr: 2e-3) }",
    );
    let out = nnc(&["gradcheck", file.to_str().unwrap(), "--batch", "3"]);
    for layer in ["", "_reverse", "_l1", "_l1_reverse"] {
        for name in ["w_xh", "w_hh", "bias"] {
            let path = format!("lstm1.{name}{layer} ");
            assert!(out.contains(&path), "{path}not checked\n{out}");
        }
    }
    assert!(out.contains("gradient check passed"), "{out}");
}
