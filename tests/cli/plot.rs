//! `nnc plot LOG --out curve.svg`: an SVG of the loss and accuracy curves of a `--log-json` log.

use super::common::*;

#[test]
fn a_training_log_becomes_an_svg_with_both_panels() {
    let s = Scratch::new("plot");
    let log = s.path("xor.jsonl");
    let xor = root().join("examples/xor.nn");
    succeeded(&run!(
        "train",
        &xor,
        "--quiet",
        "--steps",
        "2000",
        "--log-json",
        &log
    ));
    let svg = s.path("curve.svg");
    succeeded(&run!("plot", &log, "--out", &svg));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"), "{}", &text[..100.min(text.len())]);
    assert!(text.contains("Xor train (mean of 40 steps)") && text.contains("Xor test"));
    // One polyline point per step for the raw losses: at least 2000 coordinates in a path.
    assert!(text.matches("<polyline").count() >= 3, "lines missing");
    assert!(!text.contains("test accuracy"), "XOR measures no accuracy");

    // With accuracy: a second panel.
    let mut with_acc = std::fs::read_to_string(&log).unwrap();
    with_acc.push_str(
        r#"{"type":"eval","run":"Xor","step":2000,"epoch":2000,"samples":4,"loss":0.01,"accuracy":0.75}"#,
    );
    let log2 = s.write("acc.jsonl", with_acc);
    succeeded(&run!("plot", &log2, "-o", &svg));
    assert_has(&std::fs::read_to_string(&svg).unwrap(), &["test accuracy"]);
}

#[test]
fn a_bad_log_is_a_user_error_and_the_old_plot_is_kept() {
    let s = Scratch::new("plot-bad");
    let svg = s.write("curve.svg", "<svg>old</svg>");
    for (name, text, part) in [
        (
            "garbage.jsonl",
            "{\"type\":\"step\"}\nnot json\n",
            "garbage.jsonl:1: no `run`",
        ),
        ("empty.jsonl", "", "no finite losses"),
        (
            "kind.jsonl",
            "{\"type\":\"x\",\"run\":\"r\",\"step\":1}",
            "neither",
        ),
    ] {
        let log = s.write(name, text);
        assert_has(&user_error(&run!("plot", &log, "--out", &svg)), &[part]);
        assert_eq!(std::fs::read_to_string(&svg).unwrap(), "<svg>old</svg>");
    }
    let err = user_error(&run!("plot", "/nonexistent/log.jsonl", "--out", &svg));
    assert_has(&err, &["/nonexistent/log.jsonl"]);
}

/// A short run's training losses are drawn as they are, labelled "train" (it read "train (mean
/// of 1)"); a run that logged evaluations only has no training curve in the legend.
#[test]
fn a_short_run_s_curve_is_labelled_train() {
    let s = Scratch::new("plot-short");
    let step = |run: &str, n: u32| {
        format!(
            r#"{{"type":"step","run":"{run}","step":{n},"epoch":1,"loss":0.5,"lr":0.1,"samples_per_s":1}}"#
        )
    };
    let mut lines: Vec<String> = (1..=20).map(|n| step("Short", n)).collect();
    lines.push(
        r#"{"type":"eval","run":"Evals","step":5,"epoch":1,"samples":4,"loss":0.4,"accuracy":null}"#
            .into(),
    );
    let log = s.write("short.jsonl", lines.join("\n"));
    let svg = s.path("curve.svg");
    succeeded(&run!("plot", &log, "--out", &svg));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert_has(&text, &["Short train", "Evals test"]);
    assert!(!text.contains("mean of"), "{text}");
    assert!(!text.contains("Evals train"), "{text}");
}
