//! Watching and scripting a run: `--log-json` writes one JSON object per step and per
//! evaluation (`nnc eval` and `nnc bench` one per measurement); the progress bar stays off stderr
//! when it is not a terminal and with `--quiet`.

use super::common::*;

#[test]
fn log_json_has_one_object_per_step_and_per_evaluation() {
    let s = Scratch::new("log-json");
    let log = s.path("run.jsonl");
    let xor = root().join("examples/xor.nn");
    let out = run!("train", &xor, "--steps", "2500", "--log-json", &log);
    assert_code(&out, 0);
    let text = std::fs::read_to_string(&log).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is one JSON object"))
        .collect();
    let of = |t: &str| records.iter().filter(|r| r["type"] == t).count();
    // XOR evaluates every 1000 steps, and once more at the end.
    assert_eq!((of("step"), of("eval")), (2500, 3));
    let steps: Vec<u64> = records
        .iter()
        .filter(|r| r["type"] == "step")
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=2500).collect::<Vec<_>>());
    let last = records.iter().rev().find(|r| r["type"] == "step").unwrap();
    assert!(last["loss"].as_f64().unwrap() < 0.05, "{last}");
    assert!(last["samples_per_s"].as_f64().unwrap() > 0.0);
    // Not a terminal: no progress bar drawn on stderr, only a line per evaluation.
    let err = stderr(&out);
    let evals: Vec<&str> = err
        .lines()
        .map(|l| &l[..l.find(": test loss ").unwrap_or(0)])
        .collect();
    assert_eq!(
        evals,
        [
            "Xor epoch 1000 step 1000",
            "Xor epoch 2000 step 2000",
            "Xor epoch 2500 step 2500"
        ],
        "{err}"
    );
}

/// A log in a folder that does not exist names the folder, as `--checkpoint` does (it said
/// "No such file or directory (os error 2)").
#[test]
fn an_unwritable_log_is_a_user_error() {
    let xor = root().join("examples/xor.nn");
    let log = "/nonexistent/dir/log.jsonl";
    let err = user_error(&run!(
        "train",
        &xor,
        "--quiet",
        "--steps",
        "10",
        "--log-json",
        log
    ));
    assert_has(&err, &[log, "there is no folder /nonexistent/dir"]);
}

/// A training that fails before its first step (here its data file is missing) leaves no empty
/// log where there was none; a log that was there stays, empty or not.
#[test]
fn a_training_that_logged_nothing_leaves_no_new_log() {
    let s = Scratch::new("log-none");
    let nn = s.write(
        "m.nn",
        "model M(x: [2]) -> [1] { return x |> dense(1) }\n\
         data d { train: csv(\"missing.csv\") }\n\
         train M on d { loss: mse(output, label) optimizer: sgd(lr: 0.1) steps: 2 }\n",
    );
    let log = s.path("run.jsonl");
    user_error(&run!("train", &nn, "--quiet", "--log-json", &log));
    assert!(!log.exists(), "an empty log was left behind");
    s.write("run.jsonl", "");
    user_error(&run!("train", &nn, "--quiet", "--log-json", &log));
    assert!(log.exists(), "the user's own (empty) log was removed");
}

#[test]
fn a_resumed_run_appends_to_its_log_and_plots_as_one_curve() {
    let s = Scratch::new("log-append");
    let (log, ck) = (s.path("run.jsonl"), s.path("xor.safetensors"));
    let xor = root().join("examples/xor.nn");
    let train = |extra: &[&str]| {
        let out = run!("train", &xor, "--quiet", "--log-json", &log, "--checkpoint", &ck; extra);
        assert_code(&out, 0);
    };
    train(&["--steps", "5"]);
    // The same run continued to step 8 with the same log.
    train(&["--steps", "8", "--resume", ck.to_str().unwrap()]);
    let steps = |text: &str| -> Vec<u64> {
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| r["type"] == "step")
            .map(|r| r["step"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(
        steps(&std::fs::read_to_string(&log).unwrap()),
        (1..=8).collect::<Vec<_>>()
    );
    let svg = s.path("curve.svg");
    let plot = || {
        succeeded(&run!("plot", &log, "--out", &svg));
        std::fs::read_to_string(&svg).unwrap()
    };
    let text = plot();
    assert!(text.contains("Xor train") && !text.contains("Xor (2)"));

    // Training it again from scratch appends a second training of the run: its own curve.
    train(&["--steps", "3"]);
    assert_eq!(
        steps(&std::fs::read_to_string(&log).unwrap()),
        [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3]
    );
    assert!(plot().contains("Xor (2) train"));
}

/// An evaluation reports the metrics its run's `eval:` lists, in the log and in the summary:
/// `[accuracy]` and `[loss]` on a classifier reported both.
#[test]
fn an_evaluation_reports_the_metrics_listed() {
    let s = Scratch::new("log-metrics");
    let log = s.path("run.jsonl");
    let nn = s.write(
        "m.nn",
        "model M(x: [2]) -> [2] { return x |> dense(2) }\n\
         data d { train: inline(x: [[0, 1], [1, 0], [1, 1], [0, 0]], y: [0, 1, 1, 0]), split: 0.5 }\n\
         train acc: M on d {\n    loss: cross_entropy(output, label)\n    optimizer: sgd(lr: 0.1)\n    batch: 2, steps: 2\n    eval: every 1 step [accuracy]\n}\n\
         train loss: M on d {\n    loss: cross_entropy(output, label)\n    optimizer: sgd(lr: 0.1)\n    batch: 2, steps: 2\n    eval: every 1 step [loss]\n}\n\
         train both: M on d {\n    loss: cross_entropy(output, label)\n    optimizer: sgd(lr: 0.1)\n    batch: 2, steps: 2\n}\n",
    );
    let summary = succeeded(&run!("train", &nn, "--quiet", "--log-json", &log));
    let text = std::fs::read_to_string(&log).unwrap();
    let evals: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["type"] == "eval")
        .collect();
    let of = |run: &str| -> Vec<(bool, bool)> {
        evals
            .iter()
            .filter(|r| r["run"] == run)
            .map(|r| (r["loss"].is_f64(), r["accuracy"].is_f64()))
            .collect()
    };
    assert_eq!(of("acc"), [(false, true), (false, true)], "{text}");
    assert_eq!(of("loss"), [(true, false), (true, false)], "{text}");
    assert!(of("both").iter().all(|&m| m == (true, true)), "{text}");
    // The summary's test loss and accuracy columns: "–" for what is not listed.
    let row = |run: &str| -> Vec<String> {
        let line = summary
            .lines()
            .find(|l| l.starts_with(run))
            .expect(&summary);
        line.split_whitespace().map(String::from).collect()
    };
    assert_eq!(row("acc")[3], "–", "{summary}");
    assert!(row("acc")[4].ends_with('%'), "{summary}");
    assert_eq!(row("loss")[4], "–", "{summary}");
    assert!(row("both")[4].ends_with('%'), "{summary}");
}

/// `nnc eval --log-json` appends one evaluation record with the keys of train's (and the split
/// and checkpoint): written to the training log, it is the same evaluation at the same step, and
/// the log still plots.
#[test]
fn eval_logs_its_evaluation_as_train_logs_one() {
    let s = Scratch::new("eval-log-json");
    let (log, ck) = (s.path("run.jsonl"), s.path("xor.safetensors"));
    let xor = root().join("examples/xor.nn");
    succeeded(&run!(
        "train",
        &xor,
        "--quiet",
        "--steps",
        "50",
        "--checkpoint",
        &ck,
        "--log-json",
        &log
    ));
    succeeded(&run!("eval", &xor, "--checkpoint", &ck, "--log-json", &log));
    let records = records(&log);
    let evals: Vec<&serde_json::Value> = records.iter().filter(|r| r["type"] == "eval").collect();
    let (trained, evaluated) = (evals[evals.len() - 2], evals[evals.len() - 1]);
    for key in ["run", "step", "epoch", "samples"] {
        assert_eq!(
            trained[key], evaluated[key],
            "{key}: {trained} / {evaluated}"
        );
    }
    assert_eq!(evaluated["step"], 50);
    let loss = |r: &serde_json::Value| r["loss"].as_f64().unwrap();
    assert!(
        (loss(trained) - loss(evaluated)).abs() < 1e-6,
        "{evaluated}"
    );
    // XOR's output is not class logits: no accuracy.
    assert!(evaluated["accuracy"].is_null(), "{evaluated}");
    assert_eq!(evaluated["split"], "test");
    assert_eq!(evaluated["checkpoint"], ck.to_str().unwrap());
    succeeded(&run!("plot", &log, "--out", s.path("curve.svg")));
    // Not onto the checkpoint it reads.
    let err = user_error(&run!("eval", &xor, "--checkpoint", &ck, "--log-json", &ck));
    assert_has(
        &err,
        &["`--log-json`", "names the same file as `--checkpoint`"],
    );
    // An evaluation that fails writes no log, not even an empty one.
    let fresh = s.path("fresh.jsonl");
    let missing = s.path("missing.safetensors");
    user_error(&run!(
        "eval",
        &xor,
        "--checkpoint",
        &missing,
        "--log-json",
        &fresh
    ));
    assert!(!fresh.exists());
}

/// `nnc bench --log-json`: a record per run trained, per model's inference and for the process,
/// with their units in the keys.
#[test]
fn bench_logs_each_measurement() {
    let s = Scratch::new("bench-log-json");
    let log = s.path("bench.jsonl");
    let xor = root().join("examples/xor.nn");
    succeeded(&run!(
        "bench",
        &xor,
        "--steps",
        "20",
        "--reps",
        "5",
        "--threads",
        "1",
        "--log-json",
        &log
    ));
    let records = records(&log);
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["bench_train", "bench_inference", "bench_process"]);
    let positive = |r: &serde_json::Value, keys: &[&str]| {
        for k in keys {
            assert!(r[k].as_f64().is_some_and(|v| v > 0.0), "{k}: {r}");
        }
    };
    let train = &records[0];
    assert_eq!(
        (&train["run"], &train["model"]),
        (&"Xor".into(), &"Xor".into())
    );
    assert_eq!(
        (&train["steps"], &train["batch"], &train["threads"]),
        (&20.into(), &4.into(), &1.into())
    );
    positive(
        train,
        &[
            "compile_ms",
            "kernels",
            "loop_ms",
            "samples_per_s",
            "gflop_per_s",
            "wall_s",
        ],
    );
    let inference = &records[1];
    assert_eq!(inference["inputs"], "test");
    positive(
        inference,
        &[
            "batch1_median_us",
            "batch1_p90_us",
            "batch1000_samples_per_s",
            "batch1000_gflop_per_s",
        ],
    );
    let process = &records[2];
    assert_eq!(process["file"], xor.to_str().unwrap());
    positive(process, &["parse_check_ms"]);
    // Where /proc tells it.
    if std::path::Path::new("/proc/self/status").exists() {
        positive(process, &["peak_rss_bytes"]);
    }
}
