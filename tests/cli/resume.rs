//! Runs that end badly keep the user's work: `nnc train --checkpoint-every` killed with SIGKILL
//! resumes (`--resume`) to weights bit-identical to an uninterrupted run, and Ctrl-C (SIGINT)
//! saves a checkpoint, exits 130 and says how to resume.
//!
//! These read `../shared/data/mnist` (or `$NNC_SHARED_DATA/mnist`); when it is missing they are
//! skipped with a note on stderr, unless `CI` is set, in which case they fail.

use super::common::*;
use nnc::runtime::checkpoint::Checkpoint;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `nnc train examples/mnist_mlp.nn --steps 200` on `data` with `extra` arguments, run in `dir`.
/// The f64 reference interpreter (`--interp`) makes a step take milliseconds, so that a signal
/// sent after the first periodic checkpoint surely lands mid-run.
fn mnist_train(data: &Path, dir: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nnc"));
    c.arg("train")
        .arg(root().join("examples/mnist_mlp.nn"))
        .arg("--data-dir")
        .arg(data)
        .args(["--quiet", "--interp", "--threads", "1"])
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Waits (up to a minute) until `path` exists, then returns the step it records.
fn wait_for_checkpoint(path: &Path, child: &mut std::process::Child) -> u64 {
    let t0 = Instant::now();
    while !path.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no checkpoint after a minute"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("nnc ended ({status}) before writing a checkpoint");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Checkpoint::load(path).unwrap().step.unwrap()
}

/// `nnc train NN` for a run of 10^8 steps in `dir`, with `extra` arguments and a log at `log`,
/// returned once its first step is logged (by then Ctrl-C is handled). Its temporary folder
/// (`TMPDIR`) is the log's.
fn training_until_logged(nn: &Path, dir: &Path, extra: &[&str], log: &Path) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .env("TMPDIR", log.parent().unwrap())
        .arg("train")
        .arg(nn)
        .args(["--quiet", "--steps", "100000000"])
        .args(extra)
        .arg("--log-json")
        .arg(log)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while std::fs::metadata(log).map_or(true, |m| m.len() == 0) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no step after a minute"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "nnc ended before a step"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child
}

/// Sends Ctrl-C (SIGINT) to `child` and returns its stderr, asserting that it exited with 130.
fn ctrl_c(child: std::process::Child) -> String {
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{err}");
    err
}

/// Every tensor of two checkpoints, bit for bit.
fn assert_same_checkpoint(a: &Path, b: &Path) {
    let (a, b) = (Checkpoint::load(a).unwrap(), Checkpoint::load(b).unwrap());
    assert_eq!(a.step, b.step);
    assert_eq!(
        a.tensors.keys().collect::<Vec<_>>(),
        b.tensors.keys().collect::<Vec<_>>()
    );
    for (name, ta) in &a.tensors {
        let bits = |t: &[f32]| t.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&ta.data),
            bits(&b.tensors[name].data),
            "`{name}` differs"
        );
    }
}

/// The uninterrupted 200-step run the interrupted ones must end equal to: its checkpoint.
fn straight_run(data: &Path, dir: &Scratch) -> PathBuf {
    let straight = dir.path("straight.safetensors");
    let out = mnist_train(data, dir.dir(), &["--steps", "200", "--checkpoint"])
        .arg(&straight)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    straight
}

/// The same run started in the background, checkpointing to `ck` every `every` steps; returns
/// once the first checkpoint is there.
fn spawn_checkpointing(data: &Path, dir: &Scratch, every: u32, ck: &Path) -> std::process::Child {
    let mut child = mnist_train(
        data,
        dir.dir(),
        &["--steps", "200", "--checkpoint-every", &every.to_string()],
    )
    .arg("--checkpoint")
    .arg(ck)
    .spawn()
    .unwrap();
    wait_for_checkpoint(ck, &mut child);
    child
}

#[test]
fn a_killed_cli_run_resumes_from_its_periodic_checkpoint_bit_identically() {
    let Some(data) = mnist() else { return };
    let dir = Scratch::new("resume-sigkill");
    let straight = straight_run(&data, &dir);

    let (ck, log) = (dir.path("killed.safetensors"), dir.path("killed.jsonl"));
    let mut child = mnist_train(
        &data,
        dir.dir(),
        &["--steps", "200", "--checkpoint-every", "50"],
    )
    .arg("--checkpoint")
    .arg(&ck)
    .arg("--log-json")
    .arg(&log)
    .spawn()
    .unwrap();
    wait_for_checkpoint(&ck, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let at = Checkpoint::load(&ck).unwrap().step.unwrap();
    assert!(at.is_multiple_of(50) && at < 200, "killed after step {at}");

    // Neither the length nor the run is repeated: the checkpoint records them.
    let out = mnist_train(&data, dir.dir(), &["--resume"])
        .arg(&ck)
        .arg("--checkpoint")
        .arg(&ck)
        .arg("--log-json")
        .arg(&log)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_same_checkpoint(&straight, &ck);
    // The log was written out with each checkpoint: every step is in it once the run resumed
    // (a step the killed run logged after its checkpoint, twice).
    let steps: std::collections::BTreeSet<u64> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["type"] == "step")
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=200).collect(), "killed after step {at}");
}

#[test]
fn ctrl_c_saves_a_checkpoint_exits_130_and_says_how_to_resume() {
    let Some(data) = mnist() else { return };
    let dir = Scratch::new("resume-sigint");
    let straight = straight_run(&data, &dir);

    let ck = dir.path("stopped.safetensors");
    let child = spawn_checkpointing(&data, &dir, 10, &ck);
    let err = ctrl_c(child);
    let at = Checkpoint::load(&ck).unwrap().step.unwrap();
    assert!(at > 0 && at < 200, "stopped after step {at}");
    assert!(
        err.contains(&format!("stopped after step {at}"))
            && err.contains(&format!(
                "--run Mlp --resume {} --checkpoint {} --interp",
                ck.display(),
                ck.display()
            ))
            && err.contains("--threads 1"),
        "{err}"
    );

    let out = mnist_train(&data, dir.dir(), &["--run", "Mlp", "--resume"])
        .arg(&ck)
        .arg("--checkpoint")
        .arg(&ck)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_same_checkpoint(&straight, &ck);
}

/// A run with no checkpoint path saves `<run>.interrupted.safetensors`, and the command it prints
/// resumes into that file: without `--checkpoint`, the resumed run would end writing nothing.
#[test]
fn an_interrupted_run_without_a_checkpoint_resumes_into_the_file_it_saved() {
    let s = Scratch::new("resume-no-checkpoint");
    let log = s.path("log.jsonl");
    let child = training_until_logged(&root().join("examples/xor.nn"), s.dir(), &[], &log);
    let err = ctrl_c(child);
    let ck = "Xor.interrupted.safetensors";
    assert!(s.path(ck).exists(), "{err}");
    assert_has(
        &err,
        &[&format!("--run Xor --resume {ck} --checkpoint {ck}")],
    );
}

/// Where the current folder cannot be written (`/sys` stands in for one, as root may write in
/// any other), the state of an interrupted run without a checkpoint path is saved in the
/// temporary folder, and the message says where (it failed, and the run's work was lost).
#[test]
fn an_interrupted_run_saves_in_the_temporary_folder_where_its_own_cannot_be_written() {
    let here = Path::new("/sys");
    if !here.is_dir() || std::fs::File::create(here.join(".nnc-probe")).is_ok() {
        eprintln!("note: /sys can be written in here; test skipped");
        return;
    }
    let s = Scratch::new("resume-read-only-folder");
    let log = s.path("log.jsonl");
    let child = training_until_logged(&root().join("examples/xor.nn"), here, &[], &log);
    let err = ctrl_c(child);
    let ck = s.path("Xor.interrupted.safetensors");
    assert!(ck.exists(), "{err}");
    assert_has(&err, &[&format!("its state is saved in {}", ck.display())]);
}

/// A run resumed with no checkpoint path (no `--checkpoint`, no `checkpoint:`) goes on in the
/// file it resumes: trained to its end and then written nowhere, its work would be lost.
#[test]
fn a_run_resumed_without_a_checkpoint_path_is_saved_where_it_was() {
    let s = Scratch::new("resume-in-place");
    let ck = s.path("xor.safetensors");
    let steps = |p: &Path| Checkpoint::load(p).unwrap().step;
    assert_code(
        &run!(
            "train",
            root().join("examples/xor.nn"),
            "--quiet",
            "--steps",
            "5",
            "--checkpoint",
            &ck
        ),
        0,
    );
    as_if_stopped(&ck, 8);
    let out = run!(
        "train",
        root().join("examples/xor.nn"),
        "--quiet",
        "--resume",
        &ck
    );
    assert_code(&out, 0);
    assert_eq!(steps(&ck), Some(8), "{}", stdout(&out));
    assert_has(
        &stdout(&out),
        &[&format!("checkpoint written to {}", ck.display())],
    );
}

/// Ctrl-C during the first of several runs: the message says how to resume it and how to
/// train each run after it on its own, into the file it would have written, as long and from
/// the same `--init` as the command trained it, and the log goes on in the same file; `--seed`
/// is repeated in each, and a path with a space is quoted for the shell.
#[test]
fn an_interrupted_run_of_several_says_how_to_train_the_rest() {
    let s = Scratch::new("resume-rest");
    let xor = std::fs::read_to_string(root().join("examples/xor.nn")).unwrap();
    let nn = s.write(
        "two.nn",
        format!(
            "{xor}\ntrain again: Xor on xor {{\n    loss: mse(output, label)\n    optimizer: sgd(lr: 1)\n    batch: 4\n    steps: 2\n    init: Xor\n}}\n"
        ),
    );
    let init = s.path("init.safetensors");
    let out = nnc()
        .arg("train")
        .arg(root().join("examples/xor.nn"))
        .args(["--quiet", "--steps", "1", "--checkpoint"])
        .arg(&init)
        .output()
        .unwrap();
    succeeded(&out);
    std::fs::create_dir(s.path("the logs")).unwrap();
    let log = s.path("the logs/log.jsonl");
    let extra = [
        "--checkpoint",
        "x.safetensors",
        "--seed",
        "3",
        "--init",
        "init.safetensors",
    ];
    let child = training_until_logged(&nn, s.dir(), &extra, &log);
    let err = ctrl_c(child);
    let nn = nn.display();
    let log = format!("'{}'", log.display());
    assert_has(
        &err,
        &[
            &format!(
                "--seed 3 --run Xor --resume x.Xor.safetensors --checkpoint x.Xor.safetensors --log-json {log}\n"
            ),
            &format!(
                "then: nnc train {nn} --seed 3 --run again --steps 100000000 --init init.safetensors --checkpoint x.again.safetensors --log-json {log}"
            ),
        ],
    );
}

#[test]
fn resuming_a_finished_run_says_it_is_complete() {
    let s = Scratch::new("resume-finished");
    let ck = s.path("xor.safetensors");
    let train = |extra: &[&str]| {
        nnc()
            .arg("train")
            .arg(root().join("examples/xor.nn"))
            .args(["--quiet", "--checkpoint"])
            .arg(&ck)
            .args(extra)
            .output()
            .unwrap()
    };
    assert_code(&train(&["--steps", "5"]), 0);
    let out = train(&["--resume", ck.to_str().unwrap()]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains(
            "run `Xor` is already complete: its checkpoint is at step 5 of 5; nothing to train"
        ),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("NaN"), "{}", stdout(&out));
}

/// `--resume` without `--run` reads the run from the checkpoint's metadata first: metadata with
/// a key given twice is called corrupt there too (it said the checkpoint "names no run to
/// resume (it was not written by `nnc train`)").
#[test]
fn resuming_a_checkpoint_with_corrupt_metadata_says_so() {
    let s = Scratch::new("resume-corrupt");
    let ck = s.path("xor.safetensors");
    let xor = root().join("examples/xor.nn");
    let train = nnc()
        .arg("train")
        .arg(&xor)
        .args(["--quiet", "--steps", "5", "--checkpoint"])
        .arg(&ck)
        .output()
        .unwrap();
    assert_code(&train, 0);
    let mut c = Checkpoint::load(&ck).unwrap();
    let value = c.meta.get_mut("nnc.resume").unwrap();
    *value = value.replace("total_steps=5", "total_steps=5;total_steps=3");
    let twice = s.path("twice.safetensors");
    c.save_to(&twice).unwrap();
    let out = nnc()
        .arg("train")
        .arg(&xor)
        .args(["--quiet", "--resume"])
        .arg(&twice)
        .output()
        .unwrap();
    let err = user_error(&out);
    assert!(
        err.contains("metadata is corrupt: `total_steps` is given twice"),
        "{err}"
    );
}
