//! `schedule: plateau(factor: 0.5, patience: 2)`: a run whose test loss has stopped improving
//! lowers its learning rate after `patience` evaluations without an improvement, says so (and
//! logs it), trains at the lowered rate from the next step on, and is otherwise the run it was.

use super::common::*;
use nnc::runtime::checkpoint::Checkpoint;

/// XOR whose test loss rises from the first evaluation on (its test labels flipped), trained
/// 100 steps with `schedule`, evaluated every 10.
fn xor(schedule: &str) -> String {
    super::early_stopping::xor_with("[[1], [0]]", &format!("schedule: {schedule}"))
        .replace("steps: 200", "steps: 100")
}

/// The best test loss is the first evaluation's (after step 10): the rate is halved after
/// steps 30, 50, 70 and 90 (two evaluations each, the count starting again after each), and
/// each step record shows the rate that step used.
#[test]
fn a_run_whose_test_loss_stopped_improving_lowers_its_rate_after_its_patience() {
    let s = Scratch::new("plateau");
    let nn = s.write("flipped.nn", xor("plateau(factor: 0.5, patience: 2)"));
    for backend in [&[][..], &["--interp"][..]] {
        let log = s.path("log.jsonl");
        let _ = std::fs::remove_file(&log);
        let out = run!("train", &nn, "--log-json", &log; backend);
        succeeded(&out);
        let err = stderr(&out);
        assert_has(
            &err,
            &[
                "note: run `m` lowers its learning rate to 0.025 after step 30: its test loss \
                 has not improved on ",
                " (after step 10) in 2 evaluations",
                "note: run `m` lowers its learning rate to 0.003125 after step 90",
            ],
        );
        let reduced = records_of(&log, "lr_reduced");
        let at: Vec<(u64, f64)> = reduced
            .iter()
            .map(|r| (r["step"].as_u64().unwrap(), r["lr"].as_f64().unwrap()))
            .collect();
        assert_eq!(
            at,
            [(30, 0.025), (50, 0.0125), (70, 0.00625), (90, 0.003125)]
        );
        assert_eq!(reduced[0]["best_step"], 10);
        let lrs: Vec<f64> = records_of(&log, "step")
            .iter()
            .map(|r| r["lr"].as_f64().unwrap())
            .collect();
        assert_eq!(lrs.len(), 100);
        for (i, lr) in lrs.iter().enumerate() {
            let halvings = [30, 50, 70, 90].iter().filter(|&&r| i >= r).count();
            assert_eq!(*lr, 0.05 / f64::from(1 << halvings), "step {}", i + 1);
        }
        succeeded(&run!("plot", &log, "--out", &s.path("curve.svg")));
    }
    let quiet = run!("train", &nn, "--quiet");
    assert!(!stderr(&quiet).contains("note:"), "{}", stderr(&quiet));
}

/// Up to its first reduction (after step 30) the run is the constant-rate run, bit for bit;
/// one step later their weights differ.
#[test]
fn the_weights_part_from_a_constant_rate_run_after_the_first_reduction_only() {
    let s = Scratch::new("plateau-constant");
    let plateau = s.write("plateau.nn", xor("plateau(factor: 0.5, patience: 2)"));
    let constant = s.write("constant.nn", xor("constant"));
    for backend in [&[][..], &["--interp"][..]] {
        let weights = |nn: &std::path::Path, steps: &str| {
            let stem = nn.file_stem().unwrap().to_string_lossy();
            let ck = s.path(&format!("{stem}-{steps}-{}.st", backend.len()));
            succeeded(&run!("train", nn, "-q", "--steps", steps, "--checkpoint", &ck; backend));
            let t = Checkpoint::load(&ck).unwrap().tensors;
            t.into_iter()
                .filter(|(name, _)| !name.starts_with("__"))
                .map(|(name, t)| (name, t.data.iter().map(|v| v.to_bits()).collect()))
                .collect::<Vec<(String, Vec<u32>)>>()
        };
        assert_eq!(weights(&plateau, "30"), weights(&constant, "30"));
        assert_ne!(weights(&plateau, "31"), weights(&constant, "31"));
    }
}

/// Nothing is lowered below `min_lr`, and a run at its floor says nothing more.
#[test]
fn the_rate_stops_at_min_lr() {
    let s = Scratch::new("plateau-floor");
    let nn = s.write(
        "floor.nn",
        xor("plateau(factor: 0.1, patience: 1, min_lr: 0.001, cooldown: 1)"),
    );
    let log = s.path("log.jsonl");
    succeeded(&run!("train", &nn, "-q", "--log-json", &log));
    let at: Vec<(u64, f64)> = records_of(&log, "lr_reduced")
        .iter()
        .map(|r| (r["step"].as_u64().unwrap(), r["lr"].as_f64().unwrap()))
        .collect();
    // Patience 1 after a cooldown of one evaluation: every other evaluation from step 20.
    assert_eq!(at, [(20, 0.05 * 0.1), (40, 0.001)]);
}

/// A run counted in epochs that evaluates every 10 steps: whether its patience can be used up
/// depends on the steps of an epoch, which only the data tells, so `nnc train` warns where
/// `nnc check` cannot.
#[test]
fn a_patience_the_run_cannot_use_up_is_warned_of_once_the_data_is_read() {
    let s = Scratch::new("plateau-unreachable");
    // One step an epoch (4 samples, batch 4): 30 epochs evaluate twice before the last step.
    let nn = s.write(
        "short.nn",
        xor("plateau(patience: 3)").replace("steps: 100", "epochs: 30"),
    );
    assert!(!stderr(&run!("check", &nn)).contains("warning"));
    let out = run!("train", &nn);
    succeeded(&out);
    assert_has(
        &stderr(&out),
        &[
            "warning: the plateau schedule cannot lower this run's learning rate: evaluating \
             every 10 steps in 30 epochs of 1 step, it evaluates 2 times before its last step, \
             too few for its first evaluation to be followed by 3 evaluations",
        ],
    );
}
