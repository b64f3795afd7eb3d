//! `nnc plot LOG --out curve.svg`: an SVG of the loss and accuracy curves of a `--log-json` log.

use super::common::*;

#[test]
fn a_training_log_becomes_an_svg_with_both_panels() {
    let s = Scratch::new("plot");
    let log = s.path("xor.jsonl");
    let out = nnc()
        .arg("train")
        .arg(root().join("examples/xor.nn"))
        .args(["--quiet", "--steps", "2000", "--log-json"])
        .arg(&log)
        .output()
        .unwrap();
    assert_code(&out, 0);
    let svg = s.path("curve.svg");
    let out = nnc()
        .arg("plot")
        .arg(&log)
        .arg("--out")
        .arg(&svg)
        .output()
        .unwrap();
    assert_code(&out, 0);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"), "{}", &text[..100.min(text.len())]);
    assert!(text.contains("Xor train") && text.contains("Xor test"));
    // One polyline point per step for the raw losses: at least 2000 coordinates in a path.
    assert!(text.matches("<polyline").count() >= 3, "lines missing");
    assert!(!text.contains("test accuracy"), "XOR measures no accuracy");

    // With accuracy: a second panel.
    let mut with_acc = std::fs::read_to_string(&log).unwrap();
    with_acc.push_str(
        r#"{"type":"eval","run":"Xor","step":2000,"epoch":2000,"samples":4,"loss":0.01,"accuracy":0.75}"#,
    );
    let log2 = s.write("acc.jsonl", with_acc);
    let out = nnc()
        .arg("plot")
        .arg(&log2)
        .arg("-o")
        .arg(&svg)
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert!(std::fs::read_to_string(&svg)
        .unwrap()
        .contains("test accuracy"));
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
        let out = nnc()
            .arg("plot")
            .arg(&log)
            .arg("--out")
            .arg(&svg)
            .output()
            .unwrap();
        assert_code(&out, 1);
        assert!(stderr(&out).contains(part), "{name}: {}", stderr(&out));
        assert_eq!(std::fs::read_to_string(&svg).unwrap(), "<svg>old</svg>");
    }
    let out = nnc()
        .args(["plot", "/nonexistent/log.jsonl", "--out"])
        .arg(&svg)
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert!(stderr(&out).contains("/nonexistent/log.jsonl"));
}
