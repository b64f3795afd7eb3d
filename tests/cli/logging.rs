//! Watching and scripting a run: `--log-json` writes one JSON object per step and per
//! evaluation; the progress bar stays off stderr when it is not a terminal and with `--quiet`.

use super::common::*;

#[test]
fn log_json_has_one_object_per_step_and_per_evaluation() {
    let s = Scratch::new("log-json");
    let log = s.path("run.jsonl");
    let out = nnc()
        .arg("train")
        .arg(root().join("examples/xor.nn"))
        .args(["--steps", "2500", "--log-json"])
        .arg(&log)
        .output()
        .unwrap();
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
    // Not a terminal: no progress bar drawn on stderr.
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn an_unwritable_log_is_a_user_error() {
    let out = nnc()
        .arg("train")
        .arg(root().join("examples/xor.nn"))
        .args([
            "--quiet",
            "--steps",
            "10",
            "--log-json",
            "/nonexistent/dir/log.jsonl",
        ])
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("/nonexistent/dir/log.jsonl"),
        "{}",
        stderr(&out)
    );
}
