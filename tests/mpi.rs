//! Data-parallel training under `mpirun` (cargo feature `mpi`; needs OpenMPI's `mpirun`):
//! two ranks end with the weights, optimizer state, losses and evaluations of one process
//! training on the same global batches (with SGD and momentum, with Adam, with RMSprop, with
//! dropout, with gradient clipping by the norm of the averaged gradients); a batch that does not split over the ranks is refused;
//! a rank killed with SIGKILL, or one that stops answering (SIGSTOP), ends the job with an error
//! within a bounded time; the last checkpoint of a killed job resumes with one process and with
//! two; a stop request (SIGINT) to one rank stops every rank after the same step, and so does
//! early stopping, and a plateau schedule's reductions.
//!
//! "Within 1e-5 relative" is measured per tensor: |a − b| ≤ 1e-5 · max|a| for every element
//! (the ranks sum their gradients in another order than one process does; an element-wise
//! relative error is meaningless for the elements near zero that cancellation leaves).
//!
//! Each test launches `mpirun --allow-run-as-root --oversubscribe -np 2` on this machine; the
//! tests take turns ([`serial`]) so that their timing bounds hold on a small machine.
#![cfg(feature = "mpi")]

mod common;

use common::Scratch;
use nnc::runtime::checkpoint::Checkpoint;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const NNC: &str = env!("CARGO_BIN_EXE_nnc");

/// One `mpirun` job at a time.
fn serial() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// `n` samples of 8 features in [-1, 1) from a fixed generator, each labelled with one of 4
/// classes by the signs of x0 + x1 and x2·x3, as CSV rows.
fn samples(n: usize, seed: u64) -> String {
    let mut s = seed;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 40) as f64 / (1u64 << 24) as f64) * 2.0 - 1.0
    };
    let mut out = String::new();
    for _ in 0..n {
        let x: Vec<f64> = (0..8).map(|_| next()).collect();
        let class = usize::from(x[0] + x[1] > 0.0) + 2 * usize::from(x[2] * x[3] > 0.0);
        for v in &x {
            out += &format!("{v:.6},");
        }
        out += &format!("{class}\n");
    }
    out
}

/// The layers of an 8-32-4 MLP classifier.
const MLP: &str = "dense(32) |> relu |> dense(4)";

/// A classifier (`layers`) on 640 training and 200 test samples, shuffled batches of `batch`,
/// `steps` steps with an evaluation every 20; returns the `.nn` file.
fn problem(dir: &Scratch, layers: &str, optimizer: &str, batch: usize, steps: u64) -> PathBuf {
    std::fs::write(dir.path("train.csv"), samples(640, 1)).unwrap();
    std::fs::write(dir.path("test.csv"), samples(200, 2)).unwrap();
    let nn = dir.path("net.nn");
    std::fs::write(
        &nn,
        format!(
            r#"
model Net(x: [8]) -> [4] {{
    return x |> {layers}
}}

data toy {{
    train: csv("train.csv")
    test: csv("test.csv")
}}

train Net on toy {{
    loss: cross_entropy(output, label)
    optimizer: {optimizer}
    batch: {batch}
    steps: {steps}
    seed: 5
    eval: every 20 steps [loss, accuracy]
}}
"#
        ),
    )
    .unwrap();
    nn
}

/// `nnc ARGS` in one process.
fn nnc(args: &[&str]) -> Command {
    let mut c = Command::new(NNC);
    c.args(args);
    c
}

/// `nnc ARGS` in `np` processes started by `mpirun` on this machine.
fn mpirun(np: usize, args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-np"])
        .arg(np.to_string())
        .arg(NNC)
        .args(args);
    c
}

/// Runs `c` to the end; panics with its output unless it succeeds. Returns its stdout.
fn ok(c: &mut Command) -> String {
    let out = c.output().expect("cannot start mpirun or nnc");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(
        out.status.success(),
        "{c:?} failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Asserts that every tensor of checkpoint `a` (parameters and optimizer state) is within
/// `tol` of the same tensor in `b`, relative to its largest magnitude, and that both hold the
/// same tensors and step.
fn assert_close(a: &Path, b: &Path, tol: f32) {
    let (a, b) = (Checkpoint::load(a).unwrap(), Checkpoint::load(b).unwrap());
    assert_eq!(a.step, b.step);
    assert_eq!(
        a.tensors.keys().collect::<Vec<_>>(),
        b.tensors.keys().collect::<Vec<_>>()
    );
    for (name, ta) in &a.tensors {
        let tb = &b.tensors[name];
        assert_eq!(ta.dims, tb.dims, "{name}");
        let scale = ta.data.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(scale > 0.0, "{name} is all zeros: nothing was trained");
        for (i, (x, y)) in ta.data.iter().zip(&tb.data).enumerate() {
            assert!(
                (x - y).abs() <= tol * scale,
                "{name}[{i}]: {x} vs {y} (largest magnitude {scale})"
            );
        }
    }
}

/// The numbers of a JSON-lines log's records, by type: (step, loss) per step and (step, loss,
/// accuracy) per evaluation.
#[allow(clippy::type_complexity)]
fn log(path: &Path) -> (Vec<(u64, f64)>, Vec<(u64, f64, f64)>) {
    let num = |line: &str, key: &str| -> f64 {
        let at = line.find(&format!("\"{key}\":")).unwrap() + key.len() + 3;
        let rest = &line[at..];
        let end = rest.find([',', '}']).unwrap();
        rest[..end].parse().unwrap()
    };
    let text = std::fs::read_to_string(path).unwrap();
    let mut steps = Vec::new();
    let mut evals = Vec::new();
    for line in text.lines() {
        if line.contains("\"type\":\"step\"") {
            steps.push((num(line, "step") as u64, num(line, "loss")));
        } else if line.contains("\"type\":\"eval\"") {
            evals.push((
                num(line, "step") as u64,
                num(line, "loss"),
                num(line, "accuracy"),
            ));
        }
    }
    (steps, evals)
}

/// The `grad_norm` of each step record of a JSON-lines log (logged by runs that clip).
fn grad_norms(path: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter_map(|l| l.split("\"grad_norm\":").nth(1))
        .map(|v| v.trim_end_matches('}').parse().unwrap())
        .collect()
}

/// Trains `layers` with `optimizer` in one process and on two ranks, and compares the
/// checkpoints and logs; returns the gradient norms one process logged (none unless it clips),
/// which the two ranks' log must repeat.
fn two_ranks_match_one_process(test: &str, layers: &str, optimizer: &str) -> Vec<f64> {
    let _turn = serial();
    let dir = Scratch::new(test);
    let nn = problem(&dir, layers, optimizer, 64, 40);
    let (one, two) = (dir.path("one.safetensors"), dir.path("two.safetensors"));
    let (log1, log2) = (dir.path("one.jsonl"), dir.path("two.jsonl"));
    ok(nnc(&["train", s(&nn), "-q", "--checkpoint", s(&one)]).args(["--log-json", s(&log1)]));
    let out =
        ok(mpirun(2, &["train", s(&nn), "-q", "--checkpoint", s(&two)])
            .args(["--log-json", s(&log2)]));
    assert_close(&one, &two, 1e-5);
    assert_eq!(Checkpoint::load(&two).unwrap().step, Some(40));
    // Rank 0 alone prints the summary and writes the log: one line per step, not two.
    assert_eq!(out.matches("checkpoint written to").count(), 1, "{out}");
    let ((s1, e1), (s2, e2)) = (log(&log1), log(&log2));
    assert_eq!(s2.len(), 40);
    assert_eq!(e2.len(), 2);
    // The logged loss is the global batch's mean; the evaluation covers the whole test split.
    for ((a, la), (b, lb)) in s1.iter().zip(&s2) {
        assert_eq!(a, b);
        assert!(
            (la - lb).abs() <= 1e-5 * la.abs(),
            "step {a}: loss {la} vs {lb}"
        );
    }
    for ((a, la, aa), (b, lb, ab)) in e1.iter().zip(&e2) {
        assert_eq!((a, aa), (b, ab));
        assert!(
            (la - lb).abs() <= 1e-5 * la.abs(),
            "eval at {a}: {la} vs {lb}"
        );
    }
    let (n1, n2) = (grad_norms(&log1), grad_norms(&log2));
    assert_eq!(n1.len(), n2.len());
    for (step, (a, b)) in n1.iter().zip(&n2).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * a,
            "step {}: grad_norm {a} vs {b}",
            step + 1
        );
    }
    n1
}

#[test]
fn two_ranks_end_with_the_weights_of_one_process_sgd_momentum() {
    two_ranks_match_one_process("sgd", MLP, "sgd(lr: 0.05, momentum: 0.9)");
}

#[test]
fn two_ranks_end_with_the_weights_of_one_process_adam() {
    two_ranks_match_one_process("adam", MLP, "adam(lr: 0.01)");
}

/// Each rank's dropout masks are those its samples have in the whole batch.
#[test]
fn two_ranks_end_with_the_weights_of_one_process_with_dropout() {
    let layers = "dense(32) |> relu |> dropout(0.3) |> dense(4)";
    two_ranks_match_one_process("dropout", layers, "adam(lr: 0.01)");
}

/// RMSprop's three state buffers are the same on every rank (each updates them from the same
/// averaged gradients).
#[test]
fn two_ranks_end_with_the_weights_of_one_process_rmsprop() {
    two_ranks_match_one_process(
        "rmsprop",
        MLP,
        "rmsprop(lr: 0.003, momentum: 0.5, centered: true)",
    );
}

/// Every rank clips by the norm of the averaged gradients, the norm one process logs for the
/// whole batch (and clipping engages: at least 10 of the 40 norms are above the threshold).
#[test]
fn two_ranks_clip_the_gradients_as_one_process() {
    let norms = two_ranks_match_one_process(
        "clip",
        MLP,
        "sgd(lr: 0.05, momentum: 0.9)\n    clip_grad_norm: 0.25",
    );
    assert_eq!(norms.len(), 40);
    assert!(
        norms.iter().filter(|n| **n > 0.25).count() >= 10,
        "{norms:?}"
    );
}

/// Trains `nn` with one process and with two ranks, and returns their checkpoints.
fn one_and_two(dir: &Scratch, nn: &Path) -> (PathBuf, PathBuf) {
    let (one, two) = (dir.path("one.safetensors"), dir.path("two.safetensors"));
    ok(&mut nnc(&["train", s(nn), "-q", "--checkpoint", s(&one)]));
    ok(&mut mpirun(
        2,
        &["train", s(nn), "-q", "--checkpoint", s(&two)],
    ));
    (one, two)
}

/// Early stopping decides on figures every rank has alike (the whole test split's loss, reduced):
/// one process and two ranks stop after the same step with the same weights (a rank that went
/// on alone would wait for the others' gradients forever).
#[test]
fn two_ranks_stop_early_after_the_step_one_process_stops_after() {
    let _turn = serial();
    let dir = Scratch::new("early-stop");
    // No evaluation improves on the first by 10: the third ends the run, after step 60 of 200.
    let optimizer = "sgd(lr: 0.05)\n    early_stopping: loss(patience: 2, min_delta: 10)";
    let (one, two) = one_and_two(&dir, &problem(&dir, MLP, optimizer, 64, 200));
    for ck in [&one, &two] {
        assert_eq!(Checkpoint::load(ck).unwrap().step, Some(60));
    }
    assert_close(&one, &two, 1e-5);
}

/// A plateau schedule decides on figures every rank has alike: one process and two ranks lower
/// their rate after the same steps (no evaluation improves on the first by 10: after steps 60,
/// 100, 140 and 180) and end with the same weights.
#[test]
fn two_ranks_lower_their_rate_after_the_steps_one_process_does() {
    let _turn = serial();
    let dir = Scratch::new("plateau");
    let optimizer = "sgd(lr: 0.05)\n    schedule: plateau(factor: 0.5, patience: 2, min_delta: 10)";
    let (one, two) = one_and_two(&dir, &problem(&dir, MLP, optimizer, 64, 200));
    for ck in [&one, &two] {
        let meta = Checkpoint::load(ck).unwrap().meta;
        let state = &meta[nnc::runtime::checkpoint::PLATEAU];
        let lr = u64::from_str_radix(state.split(' ').next().unwrap(), 16).unwrap();
        assert_eq!(f64::from_bits(lr), 0.05 / 16.0, "{state}");
    }
    assert_close(&one, &two, 1e-5);
}

#[test]
fn a_batch_that_does_not_split_over_the_ranks_is_refused() {
    let _turn = serial();
    let dir = Scratch::new("uneven");
    let nn = problem(&dir, MLP, "sgd(lr: 0.1)", 63, 5);
    let out = mpirun(2, &["train", s(&nn), "-q"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("the batch of 63 samples does not split evenly over 2 processes"),
        "{err}"
    );
}

/// A warning about the file is printed once, by rank 0, not once by every rank.
#[test]
fn the_file_s_warnings_are_printed_once() {
    let _turn = serial();
    let dir = Scratch::new("warnings");
    let nn = problem(&dir, MLP, "sgd(lr: 0.1)", 64, 2);
    let text = std::fs::read_to_string(&nn).unwrap();
    let text = text.replace("    return x", "    spare = x |> dense(3)\n    return x");
    std::fs::write(&nn, text).unwrap();
    let out = mpirun(2, &["train", s(&nn), "-q"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err.matches("`spare` is computed but never used").count(),
        1,
        "{err}"
    );
}

#[test]
fn a_timeout_that_is_not_a_positive_number_of_seconds_is_refused() {
    let dir = Scratch::new("timeout");
    let nn = problem(&dir, MLP, "sgd(lr: 0.1)", 64, 5);
    for bad in ["0", "-1", "NaN"] {
        let out = nnc(&["train", s(&nn), "-q", &format!("--mpi-timeout={bad}")])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!(
                "--mpi-timeout must be a positive number of seconds, not {bad}"
            )),
            "{err}"
        );
    }
    // More seconds than a timer holds is no limit, not an error.
    for long in ["1e300", "inf"] {
        let out = nnc(&["train", s(&nn), "-q", &format!("--mpi-timeout={long}")])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{long}: {err}");
    }
}

/// A long 2-rank job writing a checkpoint every 50 steps to `ck`, with its output in files.
fn start_long_job(dir: &Scratch, nn: &Path, ck: &Path, extra: &[&str]) -> Child {
    mpirun(2, &["train", s(nn), "-q", "--steps", "100000000"])
        .args(["--checkpoint-every", "50", "--checkpoint", s(ck)])
        .args(extra)
        .stdout(File::create(dir.path("job.out")).unwrap())
        .stderr(File::create(dir.path("job.err")).unwrap())
        .spawn()
        .expect("cannot start mpirun")
}

/// Waits until `ck` exists (the job is training), then returns the pid of rank 1.
fn rank_1_once_training(job: &Child, ck: &Path) -> u32 {
    let t = Instant::now();
    while !ck.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no checkpoint after 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // mpirun starts the ranks of a one-machine job as its own children.
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", job.id()))
        .expect("cannot list mpirun's children");
    children
        .split_whitespace()
        .map(|p| p.parse::<u32>().unwrap())
        .find(|p| {
            std::fs::read(format!("/proc/{p}/environ"))
                .is_ok_and(|e| e.split(|&b| b == 0).any(|v| v == b"OMPI_COMM_WORLD_RANK=1"))
        })
        .expect("no process of rank 1 among mpirun's children")
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill {sig} {pid}");
}

/// Waits for `job` to end within `limit` (killing it and failing otherwise).
fn ends_within(job: &mut Child, limit: Duration) -> ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(st) = job.try_wait().unwrap() {
            return st;
        }
        if t.elapsed() > limit {
            let _ = job.kill();
            panic!("the job still runs {limit:?} after the failure");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_killed_rank_ends_the_job_and_its_last_checkpoint_resumes_with_one_or_two_processes() {
    let _turn = serial();
    let dir = Scratch::new("kill");
    let nn = problem(&dir, MLP, "sgd(lr: 0.05, momentum: 0.9)", 64, 40);
    let ck = dir.path("ck.safetensors");
    let mut job = start_long_job(&dir, &nn, &ck, &[]);
    let rank1 = rank_1_once_training(&job, &ck);
    signal(rank1, "-KILL");
    let st = ends_within(&mut job, Duration::from_secs(30));
    assert!(!st.success(), "mpirun succeeded although a rank was killed");
    let step = Checkpoint::load(&ck).unwrap().step.unwrap();
    // Checkpoints come every 50 steps and with every evaluation (every 20).
    assert!(
        step > 0 && (step.is_multiple_of(50) || step.is_multiple_of(20)),
        "step {step}"
    );

    // Resume for 30 more steps with 1 and with 2 processes; both end as a single process that
    // never stopped.
    let more = (step + 30).to_string();
    let reference = dir.path("ref.safetensors");
    ok(&mut nnc(&[
        "train",
        s(&nn),
        "-q",
        "--steps",
        &more,
        "--checkpoint",
        s(&reference),
    ]));
    for np in [1, 2] {
        let out = dir.path(&format!("resumed{np}.safetensors"));
        let args = [
            "train",
            s(&nn),
            "-q",
            "--resume",
            s(&ck),
            "--steps",
            &more,
            "--checkpoint",
            s(&out),
        ];
        ok(&mut if np == 1 {
            nnc(&args)
        } else {
            mpirun(np, &args)
        });
        assert_close(&reference, &out, 1e-5);
    }
}

#[test]
fn a_rank_that_stops_answering_makes_the_others_stop_at_the_timeout() {
    let _turn = serial();
    let dir = Scratch::new("stop");
    let nn = problem(&dir, MLP, "sgd(lr: 0.05)", 64, 40);
    let ck = dir.path("ck.safetensors");
    let mut job = start_long_job(&dir, &nn, &ck, &["--mpi-timeout", "2"]);
    let rank1 = rank_1_once_training(&job, &ck);
    signal(rank1, "-STOP");
    let st = ends_within(&mut job, Duration::from_secs(30));
    let _ = Command::new("kill")
        .args(["-KILL", &rank1.to_string()])
        .status();
    assert!(!st.success());
    let err = std::fs::read_to_string(dir.path("job.err")).unwrap();
    // The stopped rank may be caught at any exchange: the gradients' of a step or the
    // evaluation's (every 20 steps).
    let exchange = ["gradients", "evaluation"].iter().any(|what| {
        err.contains(&format!(
            "exchanging the {what} with the other processes: all-reduce: no answer from the other ranks within 2.0 s"
        ))
    });
    assert!(
        err.contains("[rank 0 of 2]   × run `Net`, step ") && exchange,
        "{err}"
    );
}

#[test]
fn a_stop_request_to_one_rank_stops_every_rank_after_the_same_step() {
    let _turn = serial();
    let dir = Scratch::new("sigint");
    let nn = problem(&dir, MLP, "sgd(lr: 0.05)", 64, 40);
    let ck = dir.path("ck.safetensors");
    let mut job = start_long_job(&dir, &nn, &ck, &[]);
    let rank1 = rank_1_once_training(&job, &ck);
    signal(rank1, "-INT");
    let st = ends_within(&mut job, Duration::from_secs(30));
    assert_eq!(st.code(), Some(130));
    let err = std::fs::read_to_string(dir.path("job.err")).unwrap();
    let step = Checkpoint::load(&ck).unwrap().step.unwrap();
    for r in 0..2 {
        let said = format!("[rank {r} of 2] interrupted: run `Net` stopped after step {step};");
        assert!(err.contains(&said), "{said}\n{err}");
    }
}

/// A run of two samples, one a batch, whose first (rank 0's part) overflows the first layer
/// (`dense(16)`, then `rest`).
fn overflowing_rank_0(rest: &str) -> String {
    format!(
        r#"
model M(x: [4]) -> [1] {{
    return x |> dense(16) |> {rest}
}}
data d {{
    train: inline(x: [[3e38, 3e38, 3e38, 3e38], [1, 1, 1, 1]], y: [[1], [0]])
}}
train M on d {{
    loss: mse(output, label)
    optimizer: sgd(lr: 0.1)
    batch: 2
    steps: 20
    shuffle: false
}}
"#
    )
}

/// Under `--detect-anomaly`, an infinity in one rank's part of the batch only (its sample
/// overflows the first layer; the sigmoid hides it from the loss) stopped that rank alone, and
/// `mpirun` then killed the others mid-step. Every rank now stops at the same step with the
/// same report, the others naming the rank whose part it was in.
#[test]
fn an_anomaly_on_one_rank_stops_every_rank_with_the_same_report() {
    let _turn = serial();
    let dir = Scratch::new("anomaly-one-rank");
    let nn = dir.path("hidden.nn");
    std::fs::write(&nn, overflowing_rank_0("sigmoid |> dense(1)")).unwrap();
    let out = mpirun(2, &["train", s(&nn), "-q", "--detect-anomaly"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    // The step at which the sum first overflows depends on the initial weights; the ranks
    // agree on it.
    let report = |rank: usize| {
        let line = err
            .lines()
            .find(|l| l.starts_with(&format!("[rank {rank} of 2]   × run `M`, step ")))
            .unwrap_or_else(|| panic!("no report of rank {rank} in\n{err}"));
        line.split_once(" (")
            .unwrap()
            .0
            .split_once("   ")
            .unwrap()
            .1
            .to_string()
    };
    assert_eq!(report(0), report(1), "{err}");
    assert!(
        report(0)
            .ends_with(": an infinity first appears in `%4 = matmul %0, %2 : f32[B,16]  ; dense1`"),
        "{err}"
    );
    assert!(err.contains("in the part of the batch of rank 0)"), "{err}");
}

/// Without `--detect-anomaly`, a loss that overflows in one rank's part of the batch stops every
/// rank (the reduced loss is not finite on all), and each replays its own part: the ranks share
/// what they found, so that rank 1, whose part is finite, names the op as rank 0 does.
#[test]
fn a_non_finite_loss_from_one_rank_is_named_by_every_rank() {
    let _turn = serial();
    let dir = Scratch::new("nan-one-rank");
    let nn = dir.path("overflow.nn");
    std::fs::write(&nn, overflowing_rank_0("dense(1)")).unwrap();
    let out = mpirun(2, &["train", s(&nn), "-q"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for rank in 0..2 {
        assert!(
            err.contains(&format!(
                "[rank {rank} of 2]   × run `M`, step 1: the loss is"
            )),
            "{err}"
        );
    }
    let first = err
        .lines()
        .filter(|l| l.contains("first appears in"))
        .map(|l| l.split(" (").next().unwrap().trim_start_matches(['│', ' ']))
        .collect::<Vec<_>>();
    assert_eq!(first.len(), 2, "{err}");
    assert_eq!(first[0], first[1], "{err}");
    assert!(err.contains("in the part of the batch of rank 0)"), "{err}");
}

/// A `batch_norm` first, so that its statistics depend on the data alone; batches in file
/// order (no shuffling) of 64 on 640 samples, `steps` steps.
fn batch_norm_problem(dir: &Scratch, batch: usize, steps: u64) -> PathBuf {
    std::fs::write(dir.path("train.csv"), samples(640, 1)).unwrap();
    std::fs::write(dir.path("test.csv"), samples(200, 2)).unwrap();
    let nn = dir.path("bn.nn");
    std::fs::write(
        &nn,
        format!(
            r#"
model Net(x: [8]) -> [4] {{
    return x |> batch_norm |> dense(32) |> relu |> dense(4)
}}

data toy {{
    train: csv("train.csv")
    test: csv("test.csv")
}}

train Net on toy {{
    loss: cross_entropy(output, label)
    optimizer: sgd(lr: 0.05, momentum: 0.9)
    batch: {batch}
    steps: {steps}
    shuffle: false
    seed: 5
}}
"#
        ),
    )
    .unwrap();
    nn
}

/// The running statistics `ranks` processes fold in over `steps` steps of `batch` samples in
/// file order, as spec §5 says they do: each rank's part of the batch gives its mean and
/// unbiased variance per feature, the ranks' are averaged, and the buffers move by 0.1 towards
/// them. Computed here in f64 from the CSV's values, not by nnc.
fn expected_running(ranks: usize, batch: usize, steps: usize) -> (Vec<f64>, Vec<f64>) {
    let rows: Vec<Vec<f64>> = samples(640, 1)
        .lines()
        .map(|l| {
            let v: Vec<f64> = l
                .split(',')
                .map(|x| x.parse::<f32>().unwrap() as f64)
                .collect();
            v[..8].to_vec()
        })
        .collect();
    let (mut mean, mut var) = (vec![0.0; 8], vec![1.0; 8]);
    let per_epoch = 640 / batch;
    for step in 0..steps {
        let first = (step % per_epoch) * batch;
        let part = batch / ranks;
        let (mut m, mut v) = (vec![0.0; 8], vec![0.0; 8]);
        for r in 0..ranks {
            let xs = &rows[first + r * part..first + (r + 1) * part];
            for c in 0..8 {
                let mu = xs.iter().map(|x| x[c]).sum::<f64>() / part as f64;
                let ss = xs.iter().map(|x| (x[c] - mu) * (x[c] - mu)).sum::<f64>();
                m[c] += mu / ranks as f64;
                v[c] += ss / (part as f64 - 1.0) / ranks as f64;
            }
        }
        for c in 0..8 {
            mean[c] = 0.9 * mean[c] + 0.1 * m[c];
            var[c] = 0.9 * var[c] + 0.1 * v[c];
        }
    }
    (mean, var)
}

/// Under MPI each rank normalizes with its own part of the batch (PyTorch's DDP without
/// SyncBatchNorm), and the ranks' statistics are averaged with the gradients: the running
/// statistics two ranks save are those computed by hand from the data that way, the running
/// mean is one process's (the mean of equal parts' means), and the running variance differs
/// from one process's (the mean of the halves' variances is not the whole batch's).
#[test]
fn two_ranks_average_their_batch_norm_statistics() {
    let _turn = serial();
    let dir = Scratch::new("batch_norm");
    let nn = batch_norm_problem(&dir, 64, 12);
    let (one, two) = (dir.path("one.safetensors"), dir.path("two.safetensors"));
    ok(&mut nnc(&["train", s(&nn), "-q", "--checkpoint", s(&one)]));
    ok(&mut mpirun(
        2,
        &["train", s(&nn), "-q", "--checkpoint", s(&two)],
    ));
    let tensor = |p: &Path, name: &str| -> Vec<f64> {
        let c = Checkpoint::load(p).unwrap();
        c.tensors[name].data.iter().map(|&v| v as f64).collect()
    };
    let near = |got: &[f64], want: &[f64], what: &str| {
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                "{what}: {got:?} vs {want:?}"
            );
        }
    };
    for (p, ranks) in [(&one, 1), (&two, 2)] {
        let (mean, var) = expected_running(ranks, 64, 12);
        near(
            &tensor(p, "batch_norm1.running_mean"),
            &mean,
            "running_mean",
        );
        near(&tensor(p, "batch_norm1.running_var"), &var, "running_var");
    }
    near(
        &tensor(&two, "batch_norm1.running_mean"),
        &tensor(&one, "batch_norm1.running_mean"),
        "one process's running_mean",
    );
    let (v1, v2) = (
        tensor(&one, "batch_norm1.running_var"),
        tensor(&two, "batch_norm1.running_var"),
    );
    assert!(
        v1.iter().zip(&v2).any(|(a, b)| (a - b).abs() > 1e-4),
        "{v1:?} {v2:?}"
    );
}

/// A batch of 2 over two ranks leaves each rank one sample: one value per channel, refused
/// before the first step.
#[test]
fn a_batch_norm_rank_with_one_sample_is_refused() {
    let _turn = serial();
    let dir = Scratch::new("batch_norm_one");
    let nn = batch_norm_problem(&dir, 2, 3);
    let out = mpirun(2, &["train", s(&nn), "-q"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("batch_norm trains on 1 sample a step on each process"),
        "{err}"
    );
}
