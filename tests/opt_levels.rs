//! `--opt 0` against `--opt 1`: every example trains 20 steps per run on its real data with the
//! unoptimized and the optimized backward graph, and the per-step losses agree within 1e-5
//! relative and the final parameters within 1e-3 of each tensor's scale; two optimized runs agree bit for bit, and so does an optimized
//! run whose optimizer updates are applied after the step instead of inside it
//! (`nnc::codegen::JitOptions::fuse_updates`).

mod common;

use common::{program, root, EXAMPLES};
use nnc::codegen::{Jit, JitOptions};
use nnc::exec::Executor;
use nnc::runtime::train::{Backend, Session, Tensors, TrainOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The data folder an example reads, `None` for inline data; `Err` when it is missing (skipped,
/// except in CI).
fn data_dir(example: &str) -> Result<Option<PathBuf>, ()> {
    let name = match example {
        "xor" => return Ok(None),
        "char_rnn" => "tinyshakespeare",
        _ => "mnist",
    };
    common::shared_data(name).map(Some).ok_or(())
}

/// Per-step losses by run, and every run's final parameters.
type Trained = (BTreeMap<String, Vec<f64>>, BTreeMap<String, Tensors>);

/// The JIT back end at level 1 with the optimizer updates applied after each step.
fn unfused() -> Backend {
    let mut b = Backend::jit_opt(2, 1);
    b.executor = Box::new(|g| {
        let opts = JitOptions {
            threads: 2,
            fuse_updates: false,
            ..JitOptions::default()
        };
        Jit::compile(g, &opts)
            .map(|j| Box::new(j) as Box<dyn Executor>)
            .map_err(|e| e.to_string())
    });
    b
}

fn train(example: &str, data: &Path, opt: u8) -> Trained {
    train_with(example, data, Backend::jit_opt(2, opt), &opt.to_string())
}

fn train_with(example: &str, data: &Path, backend: Backend, tag: &str) -> Trained {
    let mut program = program(example);
    // Training only: without a test split there is no evaluation to spend time on.
    for d in &mut program.data {
        d.test = None;
        d.split = 1.0;
    }
    let log = std::env::temp_dir().join(format!(
        "nnc-opt-levels-{}-{example}-{tag}.jsonl",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&log);
    let options = TrainOptions {
        data_dir: data.to_path_buf(),
        base_dir: std::env::temp_dir(),
        steps: Some(20),
        quiet: true,
        log_json: Some(log.clone()),
        threads: Some(2),
        ..TrainOptions::default()
    };
    let mut session = Session::new(&program, backend, options).unwrap();
    session
        .run_all()
        .unwrap_or_else(|e| panic!("{example} ({tag}): {e}"));
    let params = program
        .runs
        .iter()
        .map(|r| (r.name.clone(), session.params(&r.name).unwrap().clone()))
        .collect();
    drop(session);
    let mut losses: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["type"] == "step" {
            let run = v["run"].as_str().unwrap().to_string();
            losses
                .entry(run)
                .or_default()
                .push(v["loss"].as_f64().unwrap());
        }
    }
    std::fs::remove_file(&log).ok();
    (losses, params)
}

fn close(a: f64, b: f64, scale: f64) -> bool {
    (a - b).abs() <= 1e-5 * scale.max(1e-30)
}

#[test]
fn every_example_trains_the_same_with_and_without_optimization() {
    for example in EXAMPLES {
        let Ok(dir) = data_dir(example) else { continue };
        let dir = dir.unwrap_or_else(|| root().join("examples"));
        let (l0, p0) = train(example, &dir, 0);
        let (l1, p1) = train(example, &dir, 1);
        let (l1b, p1b) = train(example, &dir, 1);
        assert_eq!(
            l1, l1b,
            "{example}: two optimized runs differ in their losses"
        );
        assert_eq!(
            p1, p1b,
            "{example}: two optimized runs differ in their parameters"
        );
        let (lu, pu) = train_with(example, &dir, unfused(), "unfused");
        assert_eq!(
            l1, lu,
            "{example}: fused and separate optimizer updates give other losses"
        );
        assert_eq!(
            p1, pu,
            "{example}: fused and separate optimizer updates give other parameters"
        );
        assert_eq!(l0.keys().collect::<Vec<_>>(), l1.keys().collect::<Vec<_>>());
        for (run, a) in &l0 {
            let b = &l1[run];
            assert_eq!(a.len(), 20, "{example}/{run}");
            for (s, (x, y)) in a.iter().zip(b).enumerate() {
                assert!(
                    close(*x, *y, x.abs()),
                    "{example}/{run} step {}: loss {x} at --opt 0, {y} at --opt 1",
                    s + 1
                );
            }
        }
        // Parameters within 1e-3 of their tensor's largest value: reassociated sums round
        // differently. The embedding–product pass sums the char-RNN's gradients per token
        // first, and Adam, whose step m/√v does not shrink with the gradient, turns the
        // rounding of a near-zero gradient into a step of up to lr (2.98e-5 of w_xh's scale
        // after 20 steps). The CNN's second convolution's gradients skip the zeros of their
        // dy at --opt 1 (`codegen::sparse_conv`), and a max-pooling window whose two largest
        // values are within rounding of each other then routes its gradient to the other one:
        // conv2's weights end 1.8e-4 of their scale apart, its bias 8e-5, conv1's 5e-6, the
        // MLP's under 5e-7. A wrong gradient moves the losses checked above first.
        for (run, tensors) in &p0 {
            for (path, t) in tensors {
                let u = &p1[run][path];
                let scale = t.data.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
                for (x, y) in t.data.iter().zip(&u.data) {
                    assert!(
                        (x - y).abs() as f64 <= 1e-3 * scale.max(1e-30),
                        "{example}/{run} {path}: {x} vs {y}"
                    );
                }
            }
        }
    }
}
