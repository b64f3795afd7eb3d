//! The `gru` layer end to end: the interpreter against PyTorch's GRU formula written out here
//! on PyTorch's own weight layout (`weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`,
//! `bias_hh_l0`), the checker's parameters, and the command line (check, every `ir` stage,
//! gradcheck, train, eval, sample, predict) on a character model over tinyshakespeare.

mod common;

use assert_cmd::Command;
use common::{root, shared_data};
use nnc::exec::StepCtx;
use nnc::ir::{Init, Op, Program};
use std::path::{Path, PathBuf};

fn program(src: &str) -> Program {
    let file = nnc::syntax::parse(src).unwrap_or_else(|d| panic!("{d:?}"));
    nnc::check::check(&file)
        .unwrap_or_else(|d| panic!("{}", nnc::diag::Report::new("t.nn", src, d).render(false)))
}

/// Deterministic values uniform in [lo, hi) (a 64-bit LCG).
fn uniform(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((s >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// PyTorch's `nn.GRU(input, hidden, batch_first=True)` on one sequence `x` (`[T, input]`),
/// as its documentation writes it, on its weights: `w_ih` is `[3·hidden, input]`, `w_hh`
/// `[3·hidden, hidden]`, gates in the order r, z, n.
fn torch_gru(
    x: &[f64],
    input: usize,
    hidden: usize,
    [w_ih, w_hh, b_ih, b_hh]: [&[f64]; 4],
) -> Vec<f64> {
    let steps = x.len() / input;
    let mut h = vec![0.0; hidden];
    let mut out = Vec::new();
    // Row `g·hidden + i` of W·v + b, the unit i of gate g.
    let affine = |w: &[f64], b: &[f64], v: &[f64], g: usize, i: usize| {
        let row = g * hidden + i;
        b[row]
            + v.iter()
                .enumerate()
                .map(|(k, vk)| w[row * v.len() + k] * vk)
                .sum::<f64>()
    };
    for t in 0..steps {
        let xt = &x[t * input..(t + 1) * input];
        let next: Vec<f64> = (0..hidden)
            .map(|i| {
                let r = sigmoid(affine(w_ih, b_ih, xt, 0, i) + affine(w_hh, b_hh, &h, 0, i));
                let z = sigmoid(affine(w_ih, b_ih, xt, 1, i) + affine(w_hh, b_hh, &h, 1, i));
                let n = (affine(w_ih, b_ih, xt, 2, i) + r * affine(w_hh, b_hh, &h, 2, i)).tanh();
                (1.0 - z) * n + z * h[i]
            })
            .collect();
        h = next;
        out.extend_from_slice(&h);
    }
    out
}

/// `w` (`[rows, cols]`, row-major) transposed.
fn transpose(w: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    (0..cols * rows)
        .map(|k| w[(k % rows) * cols + k / rows])
        .collect()
}

#[test]
fn the_interpreter_computes_pytorchs_gru() {
    let (steps, input, hidden, batch) = (4, 3, 5, 2);
    let p = program(&format!(
        "model G(x: [{steps}, {input}]) -> [{steps}, {hidden}] {{ return x |> gru({hidden}) }}"
    ));
    let g = &p.model("G").unwrap().graph;
    let bound = 1.0 / (hidden as f64).sqrt();
    // PyTorch's tensors, in its order and layout.
    let w_ih = uniform(3 * hidden * input, 1, -bound, bound);
    let w_hh = uniform(3 * hidden * hidden, 2, -bound, bound);
    let b_ih = uniform(3 * hidden, 3, -bound, bound);
    let b_hh = uniform(3 * hidden, 4, -bound, bound);
    // nnc's: the weights transposed, the biases as they are.
    let params = vec![
        transpose(&w_ih, 3 * hidden, input),
        transpose(&w_hh, 3 * hidden, hidden),
        b_ih.clone(),
        b_hh.clone(),
    ];
    let x = uniform(batch * steps * input, 5, -2.0, 2.0);
    let vals = nnc::interp::eval(
        g,
        batch,
        std::slice::from_ref(&x),
        &params,
        StepCtx::default(),
    )
    .unwrap();
    let got = &vals[g.output("output").unwrap().index()];
    let per = steps * hidden;
    for b in 0..batch {
        let xs = &x[b * steps * input..(b + 1) * steps * input];
        let want = torch_gru(xs, input, hidden, [&w_ih, &w_hh, &b_ih, &b_hh]);
        for (k, (a, w)) in got[b * per..(b + 1) * per].iter().zip(&want).enumerate() {
            assert!(
                (a - w).abs() < 1e-12,
                "sequence {b}, element {k}: {a} vs {w}"
            );
        }
    }
    // The states move: not all zero, not saturated.
    assert!(got.iter().any(|v| v.abs() > 0.05) && got.iter().all(|v| v.abs() < 1.0));
}

#[test]
fn gru_parameters_are_pytorchs() {
    let p = program(
        "model Seq(tokens: i32[16]) -> [16, 65] {
             return tokens |> embedding(65, 32) |> gru(48) |> gru(hidden: 24) |> dense(65)
         }",
    );
    let g = &p.model("Seq").unwrap().graph;
    let params: Vec<(&str, &[usize])> = g
        .params
        .iter()
        .map(|p| (p.path.as_str(), p.dims.as_slice()))
        .collect();
    assert_eq!(
        params,
        [
            ("embedding1.weight", &[65, 32][..]),
            ("gru1.w_xh", &[32, 144]),
            ("gru1.w_hh", &[48, 144]),
            ("gru1.bias_xh", &[144]),
            ("gru1.bias_hh", &[144]),
            ("gru2.w_xh", &[48, 72]),
            ("gru2.w_hh", &[24, 72]),
            ("gru2.bias_xh", &[72]),
            ("gru2.bias_hh", &[72]),
            ("dense1.weight", &[24, 65]),
            ("dense1.bias", &[65]),
        ]
    );
    // U(±1/√hidden) for every GRU parameter, as PyTorch.
    for p in &g.params {
        let want = if p.path.starts_with("gru1") {
            1.0 / 48f32.sqrt()
        } else if p.path.starts_with("gru2") {
            1.0 / 24f32.sqrt()
        } else {
            continue;
        };
        assert_eq!(p.init, Init::Uniform { bound: want }, "{}", p.path);
    }
    let scans = g.nodes.iter().filter(|n| n.op == Op::GruScan).count();
    assert_eq!(scans, 2);
    // The model graph (inference) saves no gates.
    assert!(!g.nodes.iter().any(|n| n.op == Op::GruGates));
}

// ----- the command line

fn nnc() -> Command {
    Command::cargo_bin("nnc").expect("the nnc binary is built")
}

/// Runs `nnc` with `args` in the repository root; asserts that it exits 0; returns stdout.
fn run_ok(args: &[&std::ffi::OsStr]) -> String {
    let out = nnc().args(args).current_dir(root()).output().unwrap();
    assert!(
        out.status.success(),
        "nnc {args:?} exited with {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A file in the temporary folder, unique to this process and test, removed when dropped.
struct Temp(PathBuf);

impl Temp {
    fn new(name: &str) -> Temp {
        let p = std::env::temp_dir().join(format!("nnc_gru_{}_{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        Temp(p)
    }
    fn write(name: &str, text: &str) -> Temp {
        let t = Temp::new(name);
        std::fs::write(&t.0, text).unwrap();
        t
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The character model of spec.md with a GRU.
const CHAR_GRU: &str = r#"model CharGru(tokens: i32[64]) -> [64, 65] {
    return tokens |> embedding(65, 128) |> gru(128) |> dense(65)
}

data shakespeare {
    train: text("input.txt", seq: 64)
    split: 0.9
}

train CharGru on shakespeare {
    loss: cross_entropy(output, label)
    optimizer: adam(lr: 2e-3)
    batch: 32
    steps: 200
    seed: 1
    eval: every 200 steps [loss, accuracy]
}
"#;

#[test]
fn every_ir_stage_of_a_char_gru() {
    let file = Temp::write("stages.nn", CHAR_GRU);
    let f = file.path().as_os_str();
    let check = run_ok(&["check".as_ref(), f]);
    assert!(check.contains("CharGru"), "{check}");
    let stage = |s: &str| run_ok(&["ir".as_ref(), f, "--stage".as_ref(), s.as_ref()]);
    assert!(stage("ast").contains("gru"));
    let ir = stage("ir");
    assert!(ir.contains("= gru_scan "), "{ir}");
    // Autodiff saves the gates in the forward pass and reads them backward.
    let grad = stage("grad");
    for op in ["gru_gates", "gru_scan_grad", "gru_recur_grad", "time_shift"] {
        assert!(grad.contains(&format!("= {op} ")), "{op}:\n{grad}");
    }
    assert!(stage("opt").contains("= gru_scan_grad "));
    assert!(stage("fused").contains("CharGru"));
    let plan = stage("plan");
    assert!(plan.contains("gru_gates"), "{plan}");
    let clif = stage("clif");
    assert!(
        clif.contains("gru_scan") && clif.contains("fma"),
        "no GRU kernel in the CLIF"
    );
    assert!(!stage("asm").is_empty());
}

#[test]
fn gradcheck_of_a_small_gru() {
    let file = Temp::write(
        "gradcheck.nn",
        r#"model G(x: [5, 3]) -> [10] {
    return x |> gru(7) |> dense(2) |> flatten
}

data d {
    train: inline(x: [[0.5, -0.2, 0.1, 0.9, -0.7, 0.3, 0.0, 0.4, -0.1, 0.8, -0.5, 0.2, 0.6, -0.9, 0.1]],
                  y: [[0.1, 0.2, -0.3, 0.4, 0.5, -0.6, 0.7, 0.8, -0.9, 0.0]])
}

train G on d {
    loss: mse(output, label)
    optimizer: sgd(lr: 0.1)
    batch: 1
    steps: 1
}
"#,
    );
    // Batch 9: one block of 8 sequences on the GEMM tile, one on the one-row loop.
    for batch in ["1", "9"] {
        let out = run_ok(&[
            "gradcheck".as_ref(),
            file.path().as_os_str(),
            "--batch".as_ref(),
            batch.as_ref(),
        ]);
        assert!(out.contains("gradient check passed"), "{out}");
        for p in ["gru1.w_xh", "gru1.w_hh", "gru1.bias_xh", "gru1.bias_hh"] {
            assert!(out.contains(p), "{p} not checked:\n{out}");
        }
    }
}

/// The mean of the last `n` step losses of the JSON-lines log.
fn last_losses(log: &str, n: usize) -> f64 {
    let losses: Vec<f64> = log
        .lines()
        .filter(|l| l.contains("\"type\":\"step\""))
        .map(|l| {
            let at = l.find("\"loss\":").unwrap() + 7;
            let rest = &l[at..];
            let end = rest.find([',', '}']).unwrap();
            rest[..end].parse().unwrap()
        })
        .collect();
    assert!(losses.len() >= n, "{} step losses", losses.len());
    losses[losses.len() - n..].iter().sum::<f64>() / n as f64
}

#[test]
fn a_char_gru_learns_tinyshakespeare_then_evaluates_and_samples() {
    let Some(text) = shared_data("tinyshakespeare") else {
        return;
    };
    let file = Temp::write("train.nn", CHAR_GRU);
    let (log, ck) = (Temp::new("log.jsonl"), Temp::new("ck.safetensors"));
    let (f, d) = (file.path().as_os_str(), text.as_os_str());
    run_ok(&[
        "train".as_ref(),
        f,
        "--data-dir".as_ref(),
        d,
        "--quiet".as_ref(),
        "--log-json".as_ref(),
        log.path().as_os_str(),
        "--checkpoint".as_ref(),
        ck.path().as_os_str(),
    ]);
    // Uniform guessing over 65 characters is ln 65 ≈ 4.17; 200 steps reach about 1.9.
    let loss = last_losses(&std::fs::read_to_string(log.path()).unwrap(), 10);
    assert!(
        loss < 2.4,
        "the training loss is still {loss} after 200 steps"
    );
    let ck = ck.path().as_os_str();
    let eval = run_ok(&[
        "eval".as_ref(),
        f,
        "--checkpoint".as_ref(),
        ck,
        "--data-dir".as_ref(),
        d,
    ]);
    let at = eval.find("test loss ").unwrap() + 10;
    let test: f64 = eval[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(test < 2.5, "test loss {test}: {eval}");
    let sample = run_ok(&[
        "sample".as_ref(),
        f,
        "--checkpoint".as_ref(),
        ck,
        "--data-dir".as_ref(),
        d,
        "--prompt".as_ref(),
        "ROMEO:".as_ref(),
        "--length".as_ref(),
        "40".as_ref(),
    ]);
    assert!(sample.starts_with("ROMEO:"), "{sample}");
    assert_eq!(sample.trim_end_matches('\n').chars().count(), 6 + 40);
    // One sequence of 64 token ids as a CSV row: the next character after it.
    let row: Vec<String> = (0..64).map(|i| ((i * 7 + 3) % 65).to_string()).collect();
    let csv = Temp::write("ids.csv", &(row.join(",") + "\n"));
    let predicted = run_ok(&[
        "predict".as_ref(),
        f,
        "--checkpoint".as_ref(),
        ck,
        "--input".as_ref(),
        csv.path().as_os_str(),
    ]);
    assert!(predicted.starts_with("sample 0: '"), "{predicted}");
}
