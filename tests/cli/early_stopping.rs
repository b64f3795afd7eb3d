//! `early_stopping: loss(patience: N)`: a run whose test loss has stopped improving ends after
//! N evaluations without an improvement, says so (and logs it), and checkpoints where it ended,
//! with its last parameters or, with `restore_best: true`, its best; a run whose test loss keeps
//! improving trains to its end.

use super::common::*;
use nnc::runtime::checkpoint::Checkpoint;

/// XOR with a test split whose labels are the opposite of the training ones: the better the
/// model learns, the worse its test loss, from the first evaluation on.
fn xor(test_labels: &str, stopping: &str) -> String {
    xor_with(test_labels, &format!("early_stopping: {stopping}"))
}

/// [`xor`] with the setting `setting` (`early_stopping: …`, `schedule: …`), 200 steps long.
pub fn xor_with(test_labels: &str, setting: &str) -> String {
    format!(
        "model M(x: [2]) -> [2] {{ return x |> dense(16) |> relu |> dense(2) }}
data d {{
    train: inline(x: [[0, 0], [0, 1], [1, 0], [1, 1]], y: [[0], [1], [1], [0]])
    test: inline(x: [[0, 0], [0, 1]], y: {test_labels})
}}
train m: M on d {{
    loss: cross_entropy(output, label)
    optimizer: adam(lr: 0.05)
    batch: 4, steps: 200
    eval: every 10 steps [loss, accuracy]
    {setting}
}}
"
    )
}

#[test]
fn a_run_whose_test_loss_stopped_improving_ends_after_its_patience() {
    let s = Scratch::new("early-stop");
    let nn = s.write("flipped.nn", xor("[[1], [0]]", "loss(patience: 3)"));
    for backend in [&[][..], &["--interp"][..]] {
        let (ck, log) = (s.path("m.st"), s.path("log.jsonl"));
        let _ = std::fs::remove_file(&log);
        let out = run!("train", &nn, "--checkpoint", &ck, "--log-json", &log; backend);
        let table = succeeded(&out);
        assert_has(
            &stderr(&out),
            &[
                "note: run `m` stops early after step 40: its test loss has not improved on ",
                " (after step 10) in 3 evaluations",
            ],
        );
        let row = table.lines().find(|l| l.starts_with("m ")).unwrap();
        assert_eq!(row.split_whitespace().nth(1), Some("40"), "{table}");
        assert_eq!(Checkpoint::load(&ck).unwrap().step, Some(40));
        let records = records(&log);
        let of = |t: &str| records.iter().filter(|r| r["type"] == t).count();
        // Four evaluations, the last of which stops the run: no fifth at its end.
        assert_eq!((of("step"), of("eval"), of("early_stop")), (40, 4, 1));
        let stop = records.iter().find(|r| r["type"] == "early_stop").unwrap();
        assert_eq!(
            (&stop["step"], &stop["best_step"], &stop["monitor"]),
            (&40.into(), &10.into(), &"loss".into()),
            "{stop}"
        );
        succeeded(&run!("plot", &log, "--out", &s.path("curve.svg")));
    }
    let quiet = run!("train", &nn, "--quiet");
    assert!(!stderr(&quiet).contains("note:"), "{}", stderr(&quiet));
    assert_has(&succeeded(&quiet), &["m                      40 "]);
}

#[test]
fn a_run_whose_test_loss_keeps_improving_trains_to_its_end() {
    let s = Scratch::new("early-stop-not");
    let nn = s.write(
        "same.nn",
        xor("[[0], [1]]", "loss(patience: 2, restore_best: true)"),
    );
    let out = run!("train", &nn);
    let table = succeeded(&out);
    // Its last evaluation was its best: nothing to restore.
    assert!(!stderr(&out).contains("note:"), "{}", stderr(&out));
    let row = table.lines().find(|l| l.starts_with("m ")).unwrap();
    assert_eq!(row.split_whitespace().nth(1), Some("200"), "{table}");
}

/// With `restore_best: true`, the run that stops early ends with the parameters of its best
/// evaluation (the first, after step 10): its summary reports that evaluation, the checkpoint
/// holds those parameters (`nnc eval` measures the same test loss), and the log says so.
#[test]
fn restore_best_ends_a_run_with_the_parameters_of_its_best_evaluation() {
    let s = Scratch::new("early-stop-restore");
    let nn = s.write(
        "flipped.nn",
        xor("[[1], [0]]", "loss(patience: 3, restore_best: true)"),
    );
    let (ck, log) = (s.path("m.st"), s.path("log.jsonl"));
    let out = run!("train", &nn, "--checkpoint", &ck, "--log-json", &log);
    let table = succeeded(&out);
    let records = records(&log);
    let first = records.iter().find(|r| r["type"] == "eval").unwrap();
    assert_eq!(first["step"], 10);
    let best = nnc::runtime::train::loss_text(first["loss"].as_f64().unwrap());
    assert_has(
        &stderr(&out),
        &[
            "stops early after step 40",
            &format!(
                "note: run `m` ends with its parameters after step 10 (test loss {best}), its best"
            ),
        ],
    );
    let row = table.lines().find(|l| l.starts_with("m ")).unwrap();
    assert!(row.contains(&format!(" {best} ")), "{table}");
    let restored = records
        .iter()
        .find(|r| r["type"] == "restore_best")
        .unwrap();
    assert_eq!(restored["step"], 10);
    let evaluated = succeeded(&run!("eval", &nn, "--checkpoint", &ck));
    assert_has(&evaluated, &[&format!("loss {best}")]);
}

/// `nnc eval --log-json` of a checkpoint that `restore_best` wrote records its evaluation at the
/// step of the parameters it holds (10, where the training log has the same loss), not at the
/// step the run ended (40, where the log has another), so that `nnc plot` draws it where it
/// belongs; the checkpoint still resumes from step 40.
#[test]
fn eval_of_a_restored_checkpoint_is_logged_at_the_step_of_its_parameters() {
    let s = Scratch::new("early-stop-restore-eval");
    let nn = s.write(
        "flipped.nn",
        xor("[[1], [0]]", "loss(patience: 3, restore_best: true)"),
    );
    let (ck, log) = (s.path("m.st"), s.path("log.jsonl"));
    succeeded(&run!("train", &nn, "--checkpoint", &ck, "--log-json", &log));
    assert_eq!(Checkpoint::load(&ck).unwrap().step, Some(40));
    succeeded(&run!("eval", &nn, "--checkpoint", &ck, "--log-json", &log));
    let records = records(&log);
    let trained = records
        .iter()
        .find(|r| r["type"] == "eval" && r["step"] == 10)
        .unwrap();
    let evaluated = records.last().unwrap();
    assert_eq!(evaluated["checkpoint"], ck.display().to_string());
    assert_eq!(
        (&evaluated["step"], &evaluated["epoch"]),
        (&10.into(), &10.into())
    );
    let (a, b) = (
        trained["loss"].as_f64().unwrap(),
        evaluated["loss"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    succeeded(&run!("plot", &log, "--out", &s.path("curve.svg")));
}

/// A run counted in epochs that evaluates every N steps (or the other way round): whether its
/// patience can be used up depends on the steps of an epoch, which only the data tells, so
/// `nnc train` warns where `nnc check` cannot.
#[test]
fn a_patience_the_run_cannot_use_up_is_warned_of_once_the_data_is_read() {
    let s = Scratch::new("early-stop-unreachable");
    // One step an epoch (4 samples, batch 4): 30 epochs evaluate twice before the last step.
    let file = |epochs: u64| {
        xor("[[1], [0]]", "loss(patience: 3)").replace("steps: 200", &format!("epochs: {epochs}"))
    };
    let nn = s.write("short.nn", file(30));
    assert!(!stderr(&run!("check", &nn)).contains("warning"));
    let out = run!("train", &nn);
    succeeded(&out);
    assert_has(
        &stderr(&out),
        &[
            "warning: early stopping cannot end this run early: evaluating every 10 steps in \
             30 epochs of 1 step, it evaluates 2 times before its last step, too few for its \
             best evaluation to be followed by 3 evaluations",
        ],
    );
    // `--quiet` leaves out the progress, not the warning (the checker's are said too).
    assert_has(
        &stderr(&run!("train", &nn, "--quiet")),
        &["warning: early stopping cannot end this run early"],
    );
    // With `restore_best: true`, said as `nnc check` says it: the run still ends with its best.
    let restoring = s.write(
        "restoring.nn",
        file(30).replace("loss(patience: 3)", "loss(patience: 3, restore_best: true)"),
    );
    assert_has(
        &stderr(&run!("train", &restoring)),
        &["train longer; `restore_best: true` still ends it with its best evaluation's parameters"],
    );
    // Fifty epochs evaluate four times before the last: enough.
    let long = s.write("long.nn", file(50));
    assert!(!stderr(&run!("train", &long)).contains("warning"));
    // The other way round: steps, and evaluations every 10 epochs of one step.
    let per_epoch = s.write(
        "per-epoch.nn",
        xor("[[1], [0]]", "loss(patience: 3)")
            .replace("steps: 200", "steps: 30")
            .replace("every 10 steps", "every 10 epochs"),
    );
    assert_has(
        &stderr(&run!("train", &per_epoch)),
        &["evaluating every 10 epochs (10 steps) in 30 steps, it evaluates 2 times"],
    );
    // `--steps` counts as `eval:` does: `nnc check` judges that, not the run.
    let out = run!("train", &nn, "--steps", "30");
    assert!(
        !stderr(&out).contains("warning: early stopping"),
        "{}",
        stderr(&out)
    );
}
