//! Long work of the commands other than `train` shows that it goes on: `gradcheck` (minutes at
//! a large `--batch`) draws a spinner on a terminal, and nothing on a stderr that is a file or a
//! pipe, as `train`'s bar; `sample` (most of a minute at `--length 200000`) prints its text as it
//! grows.

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

/// The text of `sample` comes out as it is generated: the first characters of an endless one
/// arrive (it was printed whole at the end, and `--length 10000000000` showed nothing until
/// killed). On a terminal, each character at once and no spinner over it.
#[test]
fn sample_prints_its_text_as_it_grows() {
    use std::io::Read;
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
    let endless = ["sample", "c.nn", "--checkpoint", "c.st", "--prompt", "ab"];
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("nnc"))
        .args(endless)
        .args(["--length", "10000000000"])
        .current_dir(s.dir())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = [0u8; 2000];
        let read = pipe.read_exact(&mut first).map(|()| first.to_vec());
        tx.send(read).ok();
    });
    let first = rx.recv_timeout(std::time::Duration::from_secs(60));
    child.kill().ok();
    child.wait().ok();
    let first = first
        .expect("no text within a minute")
        .expect("the text ended early");
    let text = String::from_utf8(first).unwrap();
    assert!(text.starts_with("ab"), "{text:?}");
    assert!(text.chars().all(|c| "abc\n".contains(c)), "{text:?}");

    let args = ["sample", "c.nn", "--checkpoint", "c.st", "--length", "20"];
    let piped = nnc().args(args).current_dir(s.dir()).output().unwrap();
    assert_code(&piped, 0);
    assert!(stderr(&piped).is_empty(), "{}", stderr(&piped));
    let Some(shown) = on_a_terminal(s.dir(), &args) else {
        return;
    };
    assert!(!shown.contains("generating"), "{shown}");
    // What the terminal showed is the text the pipe got (`script` writes \r\n for \n).
    assert_eq!(shown.replace("\r\n", "\n"), stdout(&piped));
}
