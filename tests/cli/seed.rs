//! `nnc train --seed N` replaces every trained run's `seed:` (initialization, shuffling,
//! dropout), is recorded in the checkpoint, and a resumed run must keep it.

use super::common::*;
use nnc::runtime::checkpoint::Checkpoint;
use nnc::runtime::train::resume::Position;
use std::path::Path;

/// `examples/xor.nn` (no `seed:`, so seed 0) trained 50 steps into `ck` with `extra`; its
/// summary.
fn xor(ck: &Path, extra: &[&str]) -> String {
    let out = nnc()
        .arg("train")
        .arg(root().join("examples/xor.nn"))
        .args(["--quiet", "--steps", "50", "--checkpoint"])
        .arg(ck)
        .args(extra)
        .output()
        .unwrap();
    succeeded(&out)
}

fn seed_of(ck: &Path) -> u64 {
    let pos = Position::from_checkpoint(&Checkpoint::load(ck).unwrap()).unwrap();
    pos.order.unwrap().seed
}

#[test]
fn the_seed_given_replaces_the_files_and_the_same_seed_trains_the_same() {
    let s = Scratch::new("seed");
    let [none, zero, three, three_again, four] =
        ["none", "zero", "three", "three2", "four"].map(|n| s.path(&format!("{n}.safetensors")));
    let summary_none = xor(&none, &[]);
    xor(&zero, &["--seed", "0"]);
    let summary_three = xor(&three, &["--seed", "3"]);
    xor(&three_again, &["--seed", "3"]);
    xor(&four, &["--seed", "4"]);
    let bytes = |p: &Path| std::fs::read(p).unwrap();
    // The file's own seed given: as if none were.
    assert_eq!(bytes(&none), bytes(&zero));
    assert_eq!(bytes(&three), bytes(&three_again));
    let weights = |p: &Path| Checkpoint::load(p).unwrap().tensors;
    assert_ne!(weights(&three), weights(&none));
    assert_ne!(weights(&three), weights(&four));
    // The summary's train loss differs too.
    let loss = |summary: &str| {
        let row = summary.lines().find(|l| l.starts_with("Xor ")).unwrap();
        row.split_whitespace().nth(2).unwrap().to_string()
    };
    assert_ne!(loss(&summary_three), loss(&summary_none), "{summary_three}");
    // The checkpoint records the seed the run was trained with.
    assert_eq!((seed_of(&none), seed_of(&three)), (0, 3));
}

/// A resumed run goes on in its checkpoint's batch order: another seed, given or the file's, is
/// refused, and the error names the `--seed` that resumes it.
#[test]
fn a_run_resumed_with_another_seed_is_refused() {
    let s = Scratch::new("seed-resume");
    let ck = s.path("xor.safetensors");
    xor(&ck, &["--seed", "3"]);
    as_if_stopped(&ck, 80);
    let resume = |extra: &[&str]| {
        nnc()
            .arg("train")
            .arg(root().join("examples/xor.nn"))
            .args(["--quiet", "--resume"])
            .arg(&ck)
            .args(extra)
            .output()
            .unwrap()
    };
    for extra in [&["--seed", "4"][..], &[]] {
        let err = user_error(&resume(extra));
        assert_has(
            &err,
            &[
                "was written with batch 4, seed 3, not shuffled",
                "resume with `--seed 3`",
            ],
        );
    }
    succeeded(&resume(&["--seed", "3"]));
    assert_eq!(Checkpoint::load(&ck).unwrap().step, Some(80));
    assert_eq!(seed_of(&ck), 3);
}
