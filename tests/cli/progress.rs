//! Long work of the commands other than `train` shows that it goes on: `gradcheck` (minutes at
//! a large `--batch`) and `sample` (most of a minute at `--length 200000`) draw a spinner on a
//! terminal, and nothing on a stderr that is a file or a pipe, as `train`'s bar.

use super::common::*;
use std::path::Path;

/// `nnc ARGS` on a pseudo-terminal (`script`, from util-linux), in `dir`: what the terminal
/// showed, stdout and stderr together. `None` where `script` cannot run (then the test is
/// skipped).
fn on_a_terminal(dir: &Path, args: &[&str]) -> Option<String> {
    let nnc = assert_cmd::cargo::cargo_bin("nnc");
    let command = format!("{} {}", nnc.display(), args.join(" "));
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(dir)
        .output();
    match out {
        Ok(out) if out.status.success() => Some(stdout(&out)),
        Ok(out) => panic!("{command} on a terminal: {out:?}"),
        Err(e) => {
            eprintln!("skipped: no `script` to run nnc on a terminal ({e})");
            None
        }
    }
}

#[test]
fn gradcheck_shows_a_spinner_on_a_terminal_only() {
    let piped = nnc()
        .args(["gradcheck", "examples/xor.nn"])
        .current_dir(root())
        .output()
        .unwrap();
    assert_code(&piped, 0);
    assert!(stderr(&piped).is_empty(), "{}", stderr(&piped));
    let Some(shown) = on_a_terminal(&root(), &["gradcheck", "examples/xor.nn"]) else {
        return;
    };
    assert!(
        shown.contains("run Xor: checking the gradients at batch 2"),
        "{shown}"
    );
    assert!(shown.contains("gradient check passed"), "{shown}");
}

/// A character model of four symbols, trained one step: enough to sample from.
const CHARS: &str = r#"
model C(t: i32[4]) -> [4, 4] { return t |> embedding(4, 4) |> dense(4) }
data d { train: text("t.txt", seq: 4) }
train C on d { loss: cross_entropy(output, label) optimizer: sgd(lr: 0.1) batch: 2 steps: 1 }
"#;

#[test]
fn sample_shows_a_spinner_on_a_terminal_only() {
    let s = Scratch::new("progress-sample");
    s.write("t.txt", "abcabcabcabcabcabcabcabcabcabc\n");
    let file = s.write("c.nn", CHARS);
    let train = nnc()
        .arg("train")
        .arg(&file)
        .args(["--quiet", "--checkpoint", "c.st"])
        .current_dir(s.dir())
        .output()
        .unwrap();
    assert_code(&train, 0);
    let args = ["sample", "c.nn", "--checkpoint", "c.st", "--length", "20"];
    let piped = nnc().args(args).current_dir(s.dir()).output().unwrap();
    assert_code(&piped, 0);
    assert!(stderr(&piped).is_empty(), "{}", stderr(&piped));
    assert!(!stdout(&piped).contains("generating"), "{}", stdout(&piped));
    let Some(shown) = on_a_terminal(s.dir(), &args) else {
        return;
    };
    assert!(shown.contains("generating 20 characters"), "{shown}");
}
