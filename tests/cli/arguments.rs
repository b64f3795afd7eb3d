//! Values no command can use are refused when the command line is parsed (exit 1, clap's
//! message naming the option), before any file is read: nothing may panic, run on nonsense or
//! report a result it did not reach.

use super::common::*;

/// Runs `nnc ARGS` in the repository and asserts that clap refused `option`'s value.
fn refused(args: &[&str], option: &str) {
    let out = nnc().args(args).current_dir(root()).output().unwrap();
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("invalid value") && err.contains(option),
        "{args:?}: no refusal of {option} in\n{err}"
    );
}

/// `--reps 0` left the batch-1 latency without a measurement to take the median of (an index
/// out of bounds), and `--reps 18446744073709551615` panicked reserving room for its times;
/// `--steps 0` "trained" 0 steps at 0 samples/s, where `train` refuses it.
#[test]
fn bench_refuses_zero_or_absurd_reps_and_zero_steps() {
    for reps in ["0", "1000001", "18446744073709551615"] {
        refused(&["bench", "examples/xor.nn", "--reps", reps], "--reps");
    }
    refused(&["bench", "examples/xor.nn", "--steps", "0"], "--steps");
    let out = nnc()
        .args(["bench", "examples/xor.nn", "--steps", "1", "--reps", "1"])
        .current_dir(root())
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert!(stdout(&out).contains("train 1 steps"), "{}", stdout(&out));
}

/// A count of 0 (`--epochs 0`, `--steps 0`, `--checkpoint-every 0`, `gradcheck --batch 0`)
/// is refused saying it must be at least 1 (clap's range check said "0 is not in
/// 1..18446744073709551615").
#[test]
fn a_count_of_0_must_be_at_least_1() {
    for args in [
        &["train", "examples/xor.nn", "--epochs", "0"][..],
        &["train", "examples/xor.nn", "--steps", "0"],
        &["train", "examples/xor.nn", "--checkpoint-every", "0"],
        &["bench", "examples/xor.nn", "--steps", "0"],
        &["gradcheck", "examples/xor.nn", "--batch", "0"],
        &["train", "examples/xor.nn", "--steps=-1"],
        &["train", "examples/xor.nn", "--epochs=-0.5"],
    ] {
        let out = nnc().args(args).current_dir(root()).output().unwrap();
        assert_code(&out, 1);
        let err = stderr(&out);
        assert!(err.contains("must be at least 1"), "{args:?}: {err}");
        assert!(!err.contains("18446744073709551615"), "{args:?}: {err}");
    }
}

/// A negative number after an option (`--seed -1`, `--temperature -1`, `--index -1`) is that
/// option's value, refused as such: clap took it for an unknown flag, "unexpected argument '-1'
/// found", with the tip to pass it as `-- -1`, which ends the options instead.
#[test]
fn a_negative_value_is_refused_as_the_option_s_value() {
    for (args, option) in [
        (&["train", "examples/xor.nn", "--seed", "-1"][..], "--seed"),
        (&["train", "examples/xor.nn", "--steps", "-5"], "--steps"),
        (&["gradcheck", "examples/xor.nn", "--tol", "-1"], "--tol"),
        (
            &["bench", "examples/xor.nn", "--threads", "-2"],
            "--threads",
        ),
        (
            &[
                "predict",
                "examples/xor.nn",
                "--checkpoint",
                "x.st",
                "--input",
                "x.csv",
                "--index",
                "-1",
            ],
            "--index",
        ),
    ] {
        let out = nnc().args(args).current_dir(root()).output().unwrap();
        assert_code(&out, 1);
        let err = stderr(&out);
        assert!(
            !err.contains("unexpected argument") && err.contains(option),
            "{args:?}: {err}"
        );
    }
    // A value clap parses, checked by nnc itself.
    let out = nnc()
        .args([
            "sample",
            "examples/char_rnn.nn",
            "--checkpoint",
            "x.st",
            "--temperature",
            "-1",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(!err.contains("unexpected argument"), "{err}");
}

/// `--epochs` and `--steps` stop at 2^31, as in a file: `--epochs` times an epoch's batches
/// wrapped around in 64 bits (`--epochs 99999999999999999` trained a few steps).
#[test]
fn a_count_of_steps_or_epochs_past_2_31_is_refused() {
    for args in [
        &["train", "examples/xor.nn", "--epochs", "99999999999999999"][..],
        &["train", "examples/xor.nn", "--steps", "2147483649"],
        &["bench", "examples/xor.nn", "--steps", "2147483649"],
    ] {
        let out = nnc().args(args).current_dir(root()).output().unwrap();
        assert_code(&out, 1);
        assert_has(&stderr(&out), &["at most 2^31"]);
    }
}

/// A NaN tolerance printed FAILED for a run and then "gradient check passed" with exit 0; a
/// batch of 0 ran (as 1). A run above the tolerance fails the whole check, by name.
#[test]
fn gradcheck_refuses_unusable_tolerances_and_batch_0() {
    for tol in ["nan", "inf", "-inf", "0", "-1e-3", "lots"] {
        refused(
            &["gradcheck", "examples/xor.nn", &format!("--tol={tol}")],
            "--tol",
        );
    }
    refused(&["gradcheck", "examples/xor.nn", "--batch", "0"], "--batch");
    let out = nnc()
        .args(["gradcheck", "examples/xor.nn", "--tol", "1e-300"])
        .current_dir(root())
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert!(stdout(&out).contains("run Xor: FAILED"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("passed"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("gradient check failed for run `Xor`"),
        "{}",
        stderr(&out)
    );
}

/// `--threads 0` was accepted by every command that takes it; a count above the cores is
/// lowered to them (bench prints the count it runs with), since the worker pool has no more.
#[test]
fn threads_must_be_at_least_1_and_are_capped_at_the_cores() {
    refused(&["train", "examples/xor.nn", "--threads", "0"], "--threads");
    refused(
        &[
            "eval",
            "examples/xor.nn",
            "--checkpoint",
            "x.st",
            "--threads",
            "0",
        ],
        "--threads",
    );
    refused(&["bench", "examples/xor.nn", "--threads", "0"], "--threads");
    refused(
        &["bench", "examples/xor.nn", "--threads", "many"],
        "--threads",
    );
    let bench = |threads: &[&str]| {
        let out = nnc()
            .args(["bench", "examples/xor.nn", "--steps", "1", "--reps", "1"])
            .args(threads)
            .current_dir(root())
            .output()
            .unwrap();
        assert_code(&out, 0);
        let text = stdout(&out);
        let first = text.lines().next().unwrap_or_default().to_string();
        first
            .split(", ")
            .nth(1)
            .unwrap_or_else(|| panic!("no thread count in {first}"))
            .to_string()
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(bench(&[]), format!("{cores} thread(s)"));
    assert_eq!(
        bench(&["--threads", "100000"]),
        format!("{cores} thread(s)")
    );
    assert_eq!(bench(&["--threads", "1"]), "1 thread(s)");
    let help = nnc().args(["train", "--help"]).output().unwrap();
    assert!(
        stdout(&help).contains("capped at the core count"),
        "{}",
        stdout(&help)
    );
}

/// An option the subcommands share reads the same in each one's `--help`: `--data-dir <DIR>`,
/// `--checkpoint <PATH>`, `--threads <N>` (clap's defaults were `<DATA_DIR>`, `<CHECKPOINT>`,
/// `<THREADS>`, where README and the other options say `DIR`, `PATH`, `N`), and every option
/// that takes a value names it in README's words.
#[test]
fn the_subcommands_name_the_values_of_shared_options_alike() {
    let expected = [
        ("--data-dir", "DIR"),
        ("--checkpoint", "PATH"),
        ("--init", "PATH"),
        ("--resume", "PATH"),
        ("--log-json", "PATH"),
        ("--out", "PATH"),
        ("--input", "FILE"),
        ("--threads", "N"),
        ("--steps", "N"),
        ("--epochs", "N"),
        ("--seed", "N"),
        ("--batch", "N"),
        ("--length", "N"),
        ("--reps", "N"),
        ("--run", "NAME"),
        ("--model", "NAME"),
        ("--only", "NAME"),
        ("--max-memory", "SIZE"),
    ];
    let commands = [
        "check",
        "ir",
        "train",
        "eval",
        "predict",
        "sample",
        "gradcheck",
        "bench",
        "plot",
    ];
    let mut seen = 0;
    for c in commands {
        let out = nnc().args([c, "--help"]).output().unwrap();
        let help = stdout(&out);
        for line in help.lines() {
            let Some(opt) = line.split_whitespace().find(|w| w.starts_with("--")) else {
                continue;
            };
            let opt = opt.trim_end_matches(',');
            let value = line
                .split_whitespace()
                .find(|w| w.starts_with('<') && w.ends_with('>'));
            // No value name made up by clap from the field's name (`<DATA_DIR>`).
            if let Some(v) = value {
                let name = &v[1..v.len() - 1];
                assert!(
                    name.len() <= 5 && !name.contains('_'),
                    "nnc {c} --help: {opt} {v}"
                );
            }
            if let Some((_, want)) = expected.iter().find(|(o, _)| *o == opt) {
                assert_eq!(
                    value,
                    Some(format!("<{want}>").as_str()),
                    "nnc {c} --help: {line}"
                );
                seen += 1;
            }
        }
    }
    assert!(seen >= 30, "only {seen} options found");
}

/// `nnc train FILE --lr 0.1` is refused (exit 1) saying that the learning rate is set in the
/// file, not with clap's tip to pass `--lr` as a value after `--`.
#[test]
fn an_option_that_is_a_file_setting_points_at_the_file() {
    let out = nnc()
        .args(["train", "examples/xor.nn", "--lr", "0.1"])
        .current_dir(root())
        .output()
        .unwrap();
    assert_code(&out, 1);
    let err = stderr(&out);
    assert_has(
        &err,
        &["`--lr` is not an option of `nnc train`: the learning rate is set in the file"],
    );
    assert!(!err.contains("-- --lr"), "{err}");
}
