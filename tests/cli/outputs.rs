//! Where `nnc train` and `nnc plot` write: a checkpoint or plot goes through a symbolic link to
//! the file it names and never replaces a FIFO or a device; several runs write one checkpoint
//! each; no output replaces the command's own inputs.

use super::common::*;

/// `nnc train examples/xor.nn --quiet --steps 5` with `extra` arguments.
fn xor(extra: &[&std::ffi::OsStr]) -> std::process::Output {
    nnc()
        .arg("train")
        .arg(root().join("examples/xor.nn"))
        .args(["--quiet", "--steps", "5"])
        .args(extra)
        .output()
        .unwrap()
}

#[cfg(unix)]
#[test]
fn a_checkpoint_is_written_through_a_link_and_never_onto_a_fifo() {
    use std::os::unix::fs::FileTypeExt;
    let s = Scratch::new("outputs-special");
    let real = s.path("real.safetensors");
    std::os::unix::fs::symlink("real.safetensors", s.path("link.safetensors")).unwrap();
    let out = xor(&[
        "--checkpoint".as_ref(),
        s.path("link.safetensors").as_os_str(),
    ]);
    assert_code(&out, 0);
    let link = std::fs::symlink_metadata(s.path("link.safetensors")).unwrap();
    assert!(link.file_type().is_symlink(), "the link was replaced");
    let ck = nnc::runtime::checkpoint::Checkpoint::load(&real).unwrap();
    assert_eq!(ck.step, Some(5));

    let fifo = s.path("fifo.safetensors");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let out = xor(&["--checkpoint".as_ref(), fifo.as_os_str()]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("fifo.safetensors") && stderr(&out).contains("a FIFO"),
        "{}",
        stderr(&out)
    );
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());

    // `nnc plot --out` writes the same way.
    let log = s.path("log.jsonl");
    assert_code(&xor(&["--log-json".as_ref(), log.as_os_str()]), 0);
    let out = nnc()
        .arg("plot")
        .arg(&log)
        .arg("--out")
        .arg(&fifo)
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert!(stderr(&out).contains("a FIFO"), "{}", stderr(&out));
}

/// A checkpoint in a folder the process may not write in is refused before training, not once
/// training is over (which lost the trained weights). Root may write in any folder of mode
/// 0555; it may not create files in `/sys`, which stands in for one then.
#[cfg(unix)]
#[test]
fn a_checkpoint_in_a_folder_that_cannot_be_written_is_refused_before_training() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new("outputs-read-only");
    let ro = s.path("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let writable = |dir: &std::path::Path| {
        let f = dir.join(".nnc-probe");
        let made = std::fs::File::create(&f).is_ok();
        let _ = std::fs::remove_file(&f);
        made
    };
    let dir = [ro.as_path(), "/sys".as_ref()]
        .into_iter()
        .find(|d| d.is_dir() && !writable(d));
    let Some(dir) = dir else {
        eprintln!("note: no folder this process cannot write in; test skipped");
        return;
    };
    let ck = dir.join("x.safetensors");
    let out = xor(&["--checkpoint".as_ref(), ck.as_os_str()]);
    let err = user_error(&out);
    assert_has(&err, &["cannot write `--checkpoint`", "x.safetensors"]);
    assert!(!err.contains("step"), "trained first: {err}");
    assert!(stdout(&out).is_empty(), "trained: {}", stdout(&out));
    assert!(!ck.exists());
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A file of two small runs, the second starting from the first.
const TWO_RUNS: &str = r#"
model M(x: [2]) -> [1] { return x |> dense(4) |> tanh |> dense(1) }
data d { train: inline(x: [[0, 0], [0, 1], [1, 0], [1, 1]], y: [[0], [1], [1], [0]]) }
train first: M on d { loss: mse(output, label) optimizer: sgd(lr: 0.1) batch: 4 steps: 3 }
train second: M on d { loss: mse(output, label) optimizer: sgd(lr: 0.1) batch: 4 steps: 4 init: first }
"#;

#[test]
fn several_runs_write_one_checkpoint_each() {
    let s = Scratch::new("outputs-per-run");
    let nn = s.write("two.nn", TWO_RUNS);
    let ck = s.path("out.safetensors");
    let train = |extra: &[&str]| {
        nnc()
            .arg("train")
            .arg(&nn)
            .arg("--quiet")
            .arg("--checkpoint")
            .arg(&ck)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = train(&[]);
    assert_code(&out, 0);
    let step = |name: &str| {
        nnc::runtime::checkpoint::Checkpoint::load(&s.path(name))
            .unwrap()
            .step
    };
    // Each run's own parameters, at its own length; nothing at the path as given.
    assert_eq!(step("out.first.safetensors"), Some(3));
    assert_eq!(step("out.second.safetensors"), Some(4));
    assert!(!ck.exists());
    for name in ["out.first.safetensors", "out.second.safetensors"] {
        assert!(
            stdout(&out).contains(&format!("checkpoint written to {}", s.path(name).display())),
            "{}",
            stdout(&out)
        );
    }
    // A run named otherwise than its model is named beside it.
    assert!(
        stdout(&out).contains("\nM after run `first`:\n"),
        "{}",
        stdout(&out)
    );
    // One run: the path as given.
    assert_code(&train(&["--run", "first"]), 0);
    assert_eq!(step("out.safetensors"), Some(3));
    // A later run trained on its own starts from the file the earlier run was given.
    let params = |p: &std::path::Path| {
        nnc::runtime::checkpoint::Checkpoint::load(p)
            .unwrap()
            .tensors
    };
    assert_code(&train(&["--run", "second"]), 0);
    assert_eq!(params(&ck), params(&s.path("out.second.safetensors")));
    let first = s.path("out.first.safetensors");
    std::fs::remove_file(&first).unwrap();
    let out = train(&["--run", "second"]);
    assert_code(&out, 1);
    let missing = format!("there is no {} from `--checkpoint`", first.display());
    assert!(stderr(&out).contains(&missing), "{}", stderr(&out));
}

#[test]
fn an_output_onto_an_input_is_refused_before_training_and_the_input_kept() {
    let s = Scratch::new("outputs-inputs");
    let source = std::fs::read_to_string(root().join("examples/xor.nn")).unwrap();
    let nn = s.write("x.nn", &source);
    let ck = s.path("x.safetensors");
    let log = s.path("x.jsonl");
    let train = |extra: &[&std::ffi::OsStr]| {
        nnc()
            .arg("train")
            .arg(&nn)
            .args(["--quiet", "--steps", "5"])
            .args(extra)
            .current_dir(s.dir())
            .output()
            .unwrap()
    };
    let dotted = s.dir().join(".").join("x.nn");
    for (args, part) in [
        (
            vec!["--checkpoint".as_ref(), dotted.as_os_str()],
            "`--checkpoint`",
        ),
        (vec!["--log-json".as_ref(), "x.nn".as_ref()], "`--log-json`"),
        (
            vec![
                "--checkpoint".as_ref(),
                ck.as_os_str(),
                "--log-json".as_ref(),
                ck.as_os_str(),
            ],
            "names the same file as `--checkpoint`",
        ),
    ] {
        let out = train(&args);
        assert_code(&out, 1);
        assert!(stderr(&out).contains(part), "{}", stderr(&out));
        assert!(stdout(&out).is_empty(), "trained: {}", stdout(&out));
    }
    assert_eq!(std::fs::read_to_string(&nn).unwrap(), source);
    assert!(!ck.exists());

    // A checkpoint may replace the one the run starts from; a log may not.
    assert_code(&train(&["--checkpoint".as_ref(), ck.as_os_str()]), 0);
    let resumed = train(&[
        "--init".as_ref(),
        ck.as_os_str(),
        "--checkpoint".as_ref(),
        ck.as_os_str(),
    ]);
    assert_code(&resumed, 0);
    let before = std::fs::read(&ck).unwrap();
    let out = train(&[
        "--init".as_ref(),
        ck.as_os_str(),
        "--log-json".as_ref(),
        ck.as_os_str(),
    ]);
    assert_code(&out, 1);
    assert!(stderr(&out).contains("`--init`"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&ck).unwrap(), before);

    // A data file.
    let csv = s.write("d.csv", "0,0,0\n0,1,1\n1,0,1\n1,1,0\n");
    let csv_nn = s.write(
        "c.nn",
        r#"
model M(x: [2]) -> [2] { return x |> dense(2) }
data d { train: csv("d.csv", label: -1) }
train R: M on d { loss: cross_entropy(output, label) optimizer: sgd(lr: 0.1) batch: 2 steps: 2 }
"#,
    );
    let out = nnc()
        .arg("train")
        .arg(&csv_nn)
        .arg("--quiet")
        .arg("--checkpoint")
        .arg(&csv)
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("a data file of `d`"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&csv).unwrap(),
        "0,0,0\n0,1,1\n1,0,1\n1,1,0\n"
    );

    // A run's checkpoint onto the teacher it distills (`nnc check` refuses it in the file).
    let kd_nn = s.write(
        "kd.nn",
        r#"
model M(x: [2]) -> [2] { return x |> dense(2) }
data d { train: csv("d.csv", label: -1) }
train T: M on d { loss: cross_entropy(output, label) optimizer: sgd(lr: 0.1) batch: 2 steps: 2 checkpoint: "t.safetensors" }
train S: M on d { loss: kd(output, teacher, label) optimizer: sgd(lr: 0.1) batch: 2 steps: 2 teacher: T }
"#,
    );
    assert_code(&run!("train", &kd_nn, "--quiet"), 0);
    let teacher = std::fs::read(s.path("t.safetensors")).unwrap();
    let err = user_error(&run!(
        "train",
        &kd_nn,
        "--quiet",
        "--run",
        "S",
        "--checkpoint",
        s.path("t.safetensors")
    ));
    assert_has(&err, &["`--checkpoint`", "the `teacher` of run `S`"]);
    assert_eq!(std::fs::read(s.path("t.safetensors")).unwrap(), teacher);

    // `nnc plot` onto its own log.
    assert_code(&train(&["--log-json".as_ref(), log.as_os_str()]), 0);
    let text = std::fs::read_to_string(&log).unwrap();
    let out = nnc()
        .arg("plot")
        .arg(&log)
        .arg("--out")
        .arg(s.dir().join(".").join("x.jsonl"))
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert!(stderr(&out).contains("the log to plot"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), text);

    // Nor over a file of another kind: a trained model by a plot, notes by a checkpoint. A plot
    // replaces a plot, and a checkpoint a checkpoint.
    let teacher = std::fs::read(s.path("t.safetensors")).unwrap();
    let err = user_error(&run!("plot", &log, "--out", s.path("t.safetensors")));
    assert_has(&err, &["`--out`", "is not an SVG image"]);
    assert_eq!(std::fs::read(s.path("t.safetensors")).unwrap(), teacher);
    let svg = s.path("curve.svg");
    for _ in 0..2 {
        assert_code(&run!("plot", &log, "--out", &svg), 0);
    }
    let err = user_error(&train(&[
        "--log-json".as_ref(),
        s.path("t.safetensors").as_os_str(),
    ]));
    assert_has(&err, &["`--log-json`", "is not a log of JSON lines"]);
    assert_eq!(std::fs::read(s.path("t.safetensors")).unwrap(), teacher);
    // Into a folder that does not exist: refused before training, not after it.
    let out = train(&[
        "--checkpoint".as_ref(),
        s.dir().join("no/such/x.safetensors").as_os_str(),
    ]);
    assert_has(&user_error(&out), &["there is no folder"]);
    assert!(stdout(&out).is_empty(), "trained: {}", stdout(&out));
    let notes = s.write("notes.st", "not a checkpoint\n");
    let err = user_error(&train(&["--checkpoint".as_ref(), notes.as_os_str()]));
    assert_has(&err, &["`--checkpoint`", "is not a safetensors checkpoint"]);
    assert_eq!(
        std::fs::read_to_string(&notes).unwrap(),
        "not a checkpoint\n"
    );

    // A later run's checkpoint onto the file an earlier run starts from, spelled otherwise than
    // `nnc check` can compare (`../sub/x.safetensors` from `sub/`).
    std::fs::create_dir_all(s.dir().join("sub")).unwrap();
    std::fs::copy(s.path("t.safetensors"), s.dir().join("sub/x.safetensors")).unwrap();
    std::fs::copy(&csv, s.dir().join("sub/d.csv")).unwrap();
    let nn = s.dir().join("sub/two.nn");
    std::fs::write(
        &nn,
        r#"
model M(x: [2]) -> [2] { return x |> dense(2) }
data d { train: csv("d.csv", label: -1) }
train a: M on d { loss: cross_entropy(output, label) optimizer: sgd(lr: 0.1) batch: 2 steps: 2 init: "../sub/x.safetensors" }
train b: M on d { loss: cross_entropy(output, label) optimizer: sgd(lr: 0.1) batch: 2 steps: 2 checkpoint: "x.safetensors" }
"#,
    )
    .unwrap();
    succeeded(&run!("check", &nn));
    let err = user_error(&run!("train", &nn, "--quiet"));
    assert_has(
        &err,
        &["the `checkpoint:` of run `b`", "the `init` of run `a`"],
    );
    assert_eq!(
        std::fs::read(s.dir().join("sub/x.safetensors")).unwrap(),
        teacher
    );
}

/// One rule for a checkpoint's name, in the file and on the command line: `.safetensors` or
/// `.st` (`checkpoint: "m.st"` was refused while `--checkpoint m.pt` was written, a safetensors
/// file that PyTorch would take for a pickle).
#[test]
fn a_checkpoint_is_named_safetensors_or_st_in_the_file_and_on_the_command_line() {
    let s = Scratch::new("outputs-checkpoint-name");
    let err = user_error(&xor(&["--checkpoint".as_ref(), s.path("m.pt").as_os_str()]));
    assert_has(
        &err,
        &["checkpoints are safetensors files", "m.safetensors"],
    );
    assert!(!s.path("m.pt").exists());
    assert_code(
        &xor(&["--checkpoint".as_ref(), s.path("m.st").as_os_str()]),
        0,
    );
    assert!(s.path("m.st").exists());
    let text = std::fs::read_to_string(root().join("examples/xor.nn")).unwrap();
    let nn = s.write(
        "xor.nn",
        text.replace(
            "    shuffle: false\n",
            "    shuffle: false\n    checkpoint: \"x.st\"\n",
        ),
    );
    assert_code(&nnc().arg("check").arg(&nn).output().unwrap(), 0);
}
