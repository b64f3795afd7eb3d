//! Stopping and resuming training through the library (`Session`): a run stopped at any step
//! and resumed from its checkpoint ends with weights bit-identical to the uninterrupted run.
//! The same through the `nnc` binary (SIGKILL, Ctrl-C) is in `tests/cli/resume.rs`.

mod common;

use common::Scratch;
use nnc::runtime::checkpoint::Checkpoint;
use nnc::runtime::train::resume::Position;
use nnc::runtime::train::{Backend, Session, Tensors, TrainError, TrainOptions};
use std::path::{Path, PathBuf};

/// A 2-8-1 MLP with dropout on 10 inline samples in shuffled batches of 3 (3 batches per epoch,
/// one sample dropped), a cosine schedule with warm-up: every piece of state a resume must
/// restore (parameters, optimizer state, step, epoch order, position in the epoch) matters.
fn mlp_source(optimizer: &str) -> String {
    format!(
        r#"
model Net(x: [2]) -> [1] {{
    return x |> dense(8) |> tanh |> dropout(0.2) |> dense(1)
}}

data pts {{
    train: inline(
        x: [[0, 0], [0, 1], [1, 0], [1, 1], [0.5, 0.2], [0.3, 0.9], [0.8, 0.1], [0.2, 0.4], [0.9, 0.9], [0.1, 0.7]],
        y: [[0], [1], [1], [0], [0.6], [1.2], [0.9], [0.5], [0.1], [0.8]]
    )
    split: 0.9
}}

train Net on pts {{
    loss: mse(output, label)
    optimizer: {optimizer}
    batch: 3
    steps: 40
    seed: 7
    schedule: cosine(warmup: 5)
}}
"#
    )
}

fn program(src: &str) -> nnc::ir::Program {
    let ast = nnc::syntax::parse(src).unwrap_or_else(|d| panic!("{d:?}"));
    nnc::check::check(&ast).unwrap_or_else(|d| panic!("{d:?}"))
}

fn session_train(program: &nnc::ir::Program, options: TrainOptions) -> Result<Tensors, TrainError> {
    let mut s = Session::new(program, Backend::jit(1), options)?;
    s.run("Net")?;
    Ok(s.params("Net").unwrap().clone())
}

fn assert_bit_identical(a: &Tensors, b: &Tensors) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, ta) in a {
        let tb = &b[name];
        assert_eq!(ta.dims, tb.dims, "{name}");
        let bits = |t: &[f32]| t.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&ta.data), bits(&tb.data), "`{name}` differs");
    }
}

/// Trains 40 steps straight, and stops after k steps then resumes to 40 in a new session, for
/// several k (after the first step, mid-epoch, at an epoch boundary): the weights agree bit for
/// bit. A run cut short by `--steps` has another lr schedule, so resuming its checkpoint to 40
/// steps must give other weights: the restored length and position are used, not ignored.
fn stop_and_resume_is_bit_identical(optimizer: &str) {
    let p = program(&mlp_source(optimizer));
    let dir = Scratch::new(&optimizer.replace(|c: char| !c.is_alphanumeric(), "_"));
    let quiet = TrainOptions {
        quiet: true,
        ..TrainOptions::default()
    };
    let straight = session_train(&p, quiet.clone()).unwrap();
    for k in [1u64, 7, 9, 23] {
        let ck = dir.path(&format!("k{k}.safetensors"));
        let stopped = session_train(
            &p,
            TrainOptions {
                stop_after: Some(k),
                checkpoint: Some(ck.clone()),
                ..quiet.clone()
            },
        )
        .unwrap_err();
        assert!(
            matches!(&stopped, TrainError::Interrupted { step, checkpoint, .. } if *step == k && *checkpoint == ck),
            "{stopped}"
        );
        let loaded = Checkpoint::load(&ck).unwrap();
        assert_eq!(loaded.step, Some(k));
        let pos = Position::from_checkpoint(&loaded).unwrap();
        assert_eq!((pos.run.as_str(), pos.total), ("Net", 40));
        assert_eq!((pos.epoch(), pos.batch()), (k / 3, k % 3));
        assert!(loaded.meta["nnc.resume"].contains(&format!("epoch={};batch={}", k / 3, k % 3)));
        let resumed = session_train(
            &p,
            TrainOptions {
                resume: Some(ck.clone()),
                ..quiet.clone()
            },
        )
        .unwrap();
        assert_bit_identical(&straight, &resumed);
    }
    // A checkpoint that records its own length resumes to it without being told.
    let ck = dir.path("periodic.safetensors");
    let every = session_train(
        &p,
        TrainOptions {
            checkpoint: Some(ck.clone()),
            checkpoint_every: Some(10),
            ..quiet.clone()
        },
    )
    .unwrap();
    assert_bit_identical(&straight, &every);
    let short = dir.path("short.safetensors");
    session_train(
        &p,
        TrainOptions {
            steps: Some(10),
            checkpoint: Some(short.clone()),
            ..quiet.clone()
        },
    )
    .unwrap();
    let ck10 = Checkpoint::load(&short).unwrap();
    assert_eq!(Position::from_checkpoint(&ck10).unwrap().total, 10);
    let finished = session_train(
        &p,
        TrainOptions {
            resume: Some(short.clone()),
            ..quiet.clone()
        },
    )
    .unwrap();
    // Resuming a finished run trains no further.
    assert_eq!(
        finished["dense1.weight"].data,
        ck10.tensors["dense1.weight"].data
    );
    let longer = session_train(
        &p,
        TrainOptions {
            steps: Some(40),
            resume: Some(short),
            ..quiet.clone()
        },
    )
    .unwrap();
    assert_ne!(longer["dense1.weight"].data, straight["dense1.weight"].data);
}

/// Writes `ck` (tensors, step, metadata) to `path`.
fn rewrite(ck: &Checkpoint, path: &Path) -> PathBuf {
    ck.save_to(path).unwrap();
    path.to_path_buf()
}

#[test]
fn sgd_momentum_stop_and_resume_is_bit_identical() {
    stop_and_resume_is_bit_identical("sgd(lr: 0.1, momentum: 0.9)");
}

#[test]
fn adam_stop_and_resume_is_bit_identical() {
    stop_and_resume_is_bit_identical("adam(lr: 0.01)");
}

/// RMSprop's three state buffers (the mean of g², the momentum buffer, the mean of g) are
/// saved and restored.
#[test]
fn rmsprop_stop_and_resume_is_bit_identical() {
    stop_and_resume_is_bit_identical("rmsprop(lr: 0.01, momentum: 0.9, centered: true)");
}

/// A run that clips its gradients (every step here: the norms run from 3.8 down to 0.33)
/// updates after the backward pass instead of inside it, and resumes as exactly.
#[test]
fn clipped_stop_and_resume_is_bit_identical() {
    stop_and_resume_is_bit_identical("adam(lr: 0.01)\n    clip_grad_norm: 0.05");
}

#[test]
fn resuming_a_wrong_or_foreign_checkpoint_is_a_clear_error() {
    let p = program(&mlp_source("adam(lr: 0.01)"));
    let dir = Scratch::new("errors");
    let quiet = TrainOptions {
        quiet: true,
        ..TrainOptions::default()
    };
    let ck = dir.path("ck.safetensors");
    session_train(
        &p,
        TrainOptions {
            steps: Some(4),
            checkpoint: Some(ck.clone()),
            ..quiet.clone()
        },
    )
    .unwrap();
    let resume = |path: &Path| {
        session_train(
            &p,
            TrainOptions {
                resume: Some(path.to_path_buf()),
                ..quiet.clone()
            },
        )
        .unwrap_err()
        .to_string()
    };
    let good = Checkpoint::load(&ck).unwrap();

    let mut other = good.clone();
    let mut pos = Position::from_checkpoint(&good).unwrap();
    pos.run = "Other".into();
    other.meta = pos.to_meta();
    let e = resume(&rewrite(&other, &dir.path("other.safetensors")));
    assert!(e.contains("written by run `Other`"), "{e}");

    let mut no_meta = good.clone();
    no_meta.meta.clear();
    let e = resume(&rewrite(&no_meta, &dir.path("plain.safetensors")));
    assert!(e.contains("cannot be resumed from"), "{e}");

    let mut bad_shape = good.clone();
    bad_shape.tensors.insert(
        "dense1.weight".into(),
        nnc::runtime::checkpoint::Tensor {
            dims: vec![3, 8],
            data: vec![0.0; 24],
        },
    );
    let e = resume(&rewrite(&bad_shape, &dir.path("shape.safetensors")));
    assert!(e.contains("dense1.weight") && e.contains("[3, 8]"), "{e}");

    let mut no_state = good.clone();
    no_state.tensors.retain(|n, _| !n.starts_with("__optim"));
    let e = resume(&rewrite(&no_state, &dir.path("nostate.safetensors")));
    assert!(
        e.contains("holds 0 optimizer state buffer(s) for `dense1.weight`"),
        "{e}"
    );

    // The same optimizer, but a parameter the checkpoint's run froze (so it holds no state
    // for it) is trained now: not "another optimizer".
    let frozen =
        mlp_source("adam(lr: 0.01)").replace("seed: 7", "seed: 7\n    freeze: dense1.bias");
    let fk = dir.path("frozen.safetensors");
    session_train(
        &program(&frozen),
        TrainOptions {
            steps: Some(4),
            checkpoint: Some(fk.clone()),
            ..quiet.clone()
        },
    )
    .unwrap();
    let e = resume(&fk);
    assert!(
        e.contains("holds 0 optimizer state buffer(s) for `dense1.bias`: the run that wrote it had it frozen")
            && !e.contains("another optimizer"),
        "{e}"
    );

    // Another optimizer with as many state buffers: RMSprop's mean of g² and momentum buffer
    // are not Adam's moments. A checkpoint of an nnc that did not record what its state holds
    // is still resumed (by the number of buffers).
    let e = session_train(
        &program(&mlp_source("rmsprop(lr: 0.01, momentum: 0.9)")),
        TrainOptions {
            resume: Some(ck.clone()),
            ..quiet.clone()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(
            "holds optimizer state `exp_avg,exp_avg_sq`, this run's rmsprop keeps \
             `square_avg,momentum_buffer`"
        ) && e.contains("or with other settings of this one (sgd's `momentum`, rmsprop's"),
        "{e}"
    );
    let mut unrecorded = good.clone();
    let mut pos = Position::from_checkpoint(&good).unwrap();
    assert_eq!(pos.optim_state.as_deref(), Some("exp_avg,exp_avg_sq"));
    pos.optim_state = None;
    unrecorded.meta = pos.to_meta();
    let older = rewrite(&unrecorded, &dir.path("older.safetensors"));
    session_train(
        &p,
        TrainOptions {
            resume: Some(older),
            ..quiet.clone()
        },
    )
    .unwrap();

    let e = resume(&dir.path("missing.safetensors"));
    assert!(e.contains("not found"), "{e}");

    // The error of resuming `ck` with the run as `src` writes it.
    let resume_as = |src: &str| {
        session_train(
            &program(src),
            TrainOptions {
                resume: Some(ck.clone()),
                ..quiet.clone()
            },
        )
        .unwrap_err()
        .to_string()
    };
    // Another seed or no shuffling: as many batches an epoch, but other ones.
    for (from, to, said) in [
        ("seed: 7", "seed: 8", "seed 8, shuffled"),
        (
            "seed: 7",
            "seed: 7\n    shuffle: false",
            "seed 7, not shuffled",
        ),
    ] {
        let e = resume_as(&mlp_source("adam(lr: 0.01)").replace(from, to));
        assert!(
            e.contains("was written with batch 3, seed 7, shuffled") && e.contains(said),
            "{e}"
        );
    }

    // Adam's two moments are not SGD's velocity, nor nothing.
    for optimizer in ["sgd(lr: 0.1, momentum: 0.9)", "sgd(lr: 0.1)"] {
        let e = resume_as(&mlp_source(optimizer));
        assert!(
            e.contains("holds 2 optimizer state buffer(s) for `dense1.weight`")
                && e.contains("another optimizer"),
            "{e}"
        );
    }

    let e = session_train(
        &p,
        TrainOptions {
            checkpoint_every: Some(2),
            ..quiet.clone()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--checkpoint-every"), "{e}");
}

#[test]
fn a_run_that_starts_from_another_resumes_without_it() {
    // `second` starts from `first`, which writes no checkpoint: on its own, `second` cannot start,
    // but resumed it needs nothing but its own checkpoint. (`first`, 8 steps, is not stopped by
    // `stop_after: 11`.)
    let src = mlp_source("sgd(lr: 0.1, momentum: 0.9)").replace("train Net on pts", "train first: Net on pts")
        .replace("steps: 40", "steps: 8")
        + "\ntrain second: Net on pts {\n    loss: mse(output, label)\n    optimizer: adam(lr: 0.01)\n    batch: 3\n    steps: 20\n    init: first\n}\n";
    let p = program(&src);
    let dir = Scratch::new("init");
    let quiet = TrainOptions {
        quiet: true,
        ..TrainOptions::default()
    };
    let ck = dir.path("second.safetensors");
    let mut s = Session::new(&p, Backend::jit(1), quiet.clone()).unwrap();
    s.run("first").unwrap();
    let straight = s
        .run("second")
        .map(|_| s.params("second").unwrap().clone())
        .unwrap();
    let mut s = Session::new(
        &p,
        Backend::jit(1),
        TrainOptions {
            checkpoint: Some(ck.clone()),
            stop_after: Some(11),
            ..quiet.clone()
        },
    )
    .unwrap();
    s.run("first").unwrap();
    assert!(matches!(
        s.run("second"),
        Err(TrainError::Interrupted { step: 11, .. })
    ));
    let alone = Session::new(&p, Backend::jit(1), quiet.clone())
        .unwrap()
        .run("second")
        .unwrap_err()
        .to_string();
    assert!(alone.contains("needs run `first`"), "{alone}");
    let mut s = Session::new(
        &p,
        Backend::jit(1),
        TrainOptions {
            resume: Some(ck),
            ..quiet
        },
    )
    .unwrap();
    s.run("second").unwrap();
    assert_bit_identical(&straight, s.params("second").unwrap());
}

/// The step losses `log` records, in order.
fn logged_losses(log: &Path) -> Vec<f64> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["type"] == "step")
        .map(|r| r["loss"].as_f64().unwrap())
        .collect()
}

/// A run stopped after the last step of an epoch evaluates that epoch before it stops: a
/// resumed run starts with the next epoch, so the two log every evaluation of an uninterrupted
/// run, with the same numbers.
#[test]
fn a_run_stopped_at_the_end_of_an_epoch_evaluates_it_first() {
    let src = mlp_source("sgd(lr: 0.1, momentum: 0.9)").replace(
        "    seed: 7\n",
        "    seed: 7\n    eval: every 1 epoch [loss]\n",
    );
    let p = program(&src);
    let dir = Scratch::new("epoch-end");
    let quiet = TrainOptions {
        quiet: true,
        steps: Some(12),
        ..TrainOptions::default()
    };
    let evals = |log: &Path| -> Vec<(u64, u64)> {
        std::fs::read_to_string(log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| r["type"] == "eval")
            .map(|r| {
                (
                    r["step"].as_u64().unwrap(),
                    r["loss"].as_f64().unwrap().to_bits(),
                )
            })
            .collect()
    };
    let straight = dir.path("straight.jsonl");
    session_train(
        &p,
        TrainOptions {
            log_json: Some(straight.clone()),
            ..quiet.clone()
        },
    )
    .unwrap();
    // 9 training samples in batches of 3: epochs end at steps 3, 6, 9 and 12.
    assert_eq!(
        evals(&straight).iter().map(|e| e.0).collect::<Vec<_>>(),
        [3, 6, 9, 12]
    );
    let (ck, log) = (dir.path("ck.safetensors"), dir.path("stopped.jsonl"));
    let stopped = session_train(
        &p,
        TrainOptions {
            stop_after: Some(6),
            checkpoint: Some(ck.clone()),
            log_json: Some(log.clone()),
            ..quiet.clone()
        },
    );
    assert!(matches!(stopped, Err(TrainError::Interrupted { .. })));
    session_train(
        &p,
        TrainOptions {
            resume: Some(ck),
            log_json: Some(log.clone()),
            ..quiet.clone()
        },
    )
    .unwrap();
    assert_eq!(evals(&log), evals(&straight));
}

#[test]
fn a_resumed_runs_summary_averages_the_steps_it_ran_and_a_finished_one_trains_nothing() {
    let p = program(&mlp_source("adam(lr: 0.01)"));
    let dir = Scratch::new("summary");
    let quiet = TrainOptions {
        quiet: true,
        ..TrainOptions::default()
    };
    // Stopped after step k, resumed to `steps`: 1 step run, 32, and 63 (past the 50 averaged).
    for (k, steps) in [(1u64, 2u64), (8, 40), (7, 70)] {
        let ck = dir.path(&format!("k{k}.safetensors"));
        let stopped = Session::new(
            &p,
            Backend::jit(1),
            TrainOptions {
                stop_after: Some(k),
                checkpoint: Some(ck.clone()),
                steps: Some(steps),
                ..quiet.clone()
            },
        )
        .unwrap()
        .run("Net");
        assert!(matches!(stopped, Err(TrainError::Interrupted { .. })));
        let log = dir.path(&format!("k{k}.jsonl"));
        let at_end = dir.path(&format!("end{k}.safetensors"));
        let summary = Session::new(
            &p,
            Backend::jit(1),
            TrainOptions {
                resume: Some(ck.clone()),
                steps: Some(steps),
                log_json: Some(log.clone()),
                checkpoint: Some(at_end.clone()),
                ..quiet.clone()
            },
        )
        .unwrap()
        .run("Net")
        .unwrap();
        let losses = logged_losses(&log);
        assert_eq!(losses.len() as u64, steps - k);
        let last = &losses[losses.len().saturating_sub(50)..];
        let mean = last.iter().sum::<f64>() / last.len() as f64;
        assert!(
            (summary.final_loss - mean).abs() <= 1e-9 * mean.abs(),
            "k = {k}: summary {} against the mean {mean} of the losses logged",
            summary.final_loss
        );
        assert_eq!((summary.steps, summary.steps_run), (steps, steps - k));

        // The checkpoint the resumed run wrote is at its end: resuming it trains nothing,
        // writes nothing and says so (steps_run 0), instead of a summary of no steps.
        let before = std::fs::read(&at_end).unwrap();
        let out = dir.path("not-written.safetensors");
        let done = Session::new(
            &p,
            Backend::jit(1),
            TrainOptions {
                resume: Some(at_end.clone()),
                checkpoint: Some(out.clone()),
                ..quiet.clone()
            },
        )
        .unwrap()
        .run("Net")
        .unwrap();
        assert_eq!(
            (
                done.steps,
                done.steps_run,
                done.total_steps,
                done.checkpoint
            ),
            (steps, 0, steps, None)
        );
        assert!(!out.exists());
        assert_eq!(std::fs::read(&at_end).unwrap(), before);
    }
}

/// XOR whose test labels are the training ones flipped (the better the model learns, the worse
/// its test loss), trained for `steps` steps and evaluated every 10, with `setting`
/// (`early_stopping: …`, `schedule: …`).
fn flipped_xor(steps: u64, setting: &str) -> nnc::ir::Program {
    program(&format!(
        r#"
model Net(x: [2]) -> [2] {{ return x |> dense(16) |> relu |> dense(2) }}
data d {{
    train: inline(x: [[0, 0], [0, 1], [1, 0], [1, 1]], y: [[0], [1], [1], [0]])
    test: inline(x: [[0, 0], [0, 1]], y: [[1], [0]])
}}
train Net on d {{
    loss: cross_entropy(output, label)
    optimizer: adam(lr: 0.05)
    batch: 4, steps: {steps}
    eval: every 10 steps [loss]
    {setting}
}}
"#
    ))
}

/// Trains `p` with `opts`, stopped after step `k` as by Ctrl-C, its state saved in `ck`.
fn stop_after(p: &nnc::ir::Program, k: u64, ck: &Path, opts: &TrainOptions) {
    let stopped = session_train(
        p,
        TrainOptions {
            stop_after: Some(k),
            checkpoint: Some(ck.to_path_buf()),
            ..opts.clone()
        },
    );
    assert!(matches!(stopped, Err(TrainError::Interrupted { .. })));
}

/// Resumes `p` from `ck` to its end with `opts`, writing its checkpoint there again.
fn resume_from(p: &nnc::ir::Program, ck: &Path, opts: &TrainOptions) -> Tensors {
    session_train(
        p,
        TrainOptions {
            resume: Some(ck.to_path_buf()),
            checkpoint: Some(ck.to_path_buf()),
            ..opts.clone()
        },
    )
    .unwrap()
}

fn quiet() -> TrainOptions {
    TrainOptions {
        quiet: true,
        ..TrainOptions::default()
    }
}

/// A run that early stopping ends, with `restore_best: true`, stopped after k steps and resumed
/// from its checkpoint: the checkpoint keeps the count and the best evaluation's parameters, so
/// the resumed run stops after the same step (40, its fourth evaluation, the first being the
/// best) and ends with the same weights, bit for bit, as the uninterrupted run. (Counted afresh,
/// a run resumed after step 25 would take step 30's evaluation for its best and go on to 60.)
#[test]
fn early_stopping_resumes_with_its_count_and_its_best_parameters() {
    let p = flipped_xor(200, "early_stopping: loss(patience: 3, restore_best: true)");
    let dir = Scratch::new("early-stop-resume");
    let straight_ck = dir.path("straight.st");
    let straight = session_train(
        &p,
        TrainOptions {
            checkpoint: Some(straight_ck.clone()),
            ..quiet()
        },
    )
    .unwrap();
    assert_eq!(Checkpoint::load(&straight_ck).unwrap().step, Some(40));
    for k in [15u64, 25, 35] {
        let ck = dir.path(&format!("k{k}.st"));
        stop_after(&p, k, &ck, &quiet());
        let resumed = resume_from(&p, &ck, &quiet());
        assert_eq!(Checkpoint::load(&ck).unwrap().step, Some(40), "k = {k}");
        assert_bit_identical(&straight, &resumed);
    }
}

/// A run with a plateau schedule (the test loss rises from the first evaluation on: the rate is
/// halved after steps 30, 60 and 90, the evaluation after each reduction a cooldown), stopped
/// after k steps and resumed from its checkpoint: the checkpoint keeps the rate, the best value,
/// the count and the cooldown left, so the resumed run lowers its rate after the same steps and
/// ends with the same weights, bit for bit, as the uninterrupted run. (Counted afresh, a run
/// resumed after step 35 would train on at 0.05 and take step 40's evaluation for its best.)
#[test]
fn a_plateau_schedule_resumes_with_its_rate_and_its_count() {
    let p = flipped_xor(
        100,
        "schedule: plateau(factor: 0.5, patience: 2, cooldown: 1)",
    );
    let dir = Scratch::new("plateau-resume");
    let straight = session_train(&p, quiet()).unwrap();
    for k in [15u64, 35, 45, 75] {
        let ck = dir.path(&format!("k{k}.st"));
        stop_after(&p, k, &ck, &quiet());
        let state = Checkpoint::load(&ck).unwrap().meta;
        assert!(
            state.contains_key(nnc::runtime::checkpoint::PLATEAU),
            "k = {k}"
        );
        assert_bit_identical(&straight, &resume_from(&p, &ck, &quiet()));
    }
    // Without the state, the run resumed after step 35 counts afresh and ends elsewhere.
    let ck = dir.path("fresh.st");
    stop_after(&p, 35, &ck, &quiet());
    let mut c = Checkpoint::load(&ck).unwrap();
    c.meta.remove(nnc::runtime::checkpoint::PLATEAU);
    c.save_to(&ck).unwrap();
    let fresh = resume_from(&p, &ck, &quiet());
    assert!(
        fresh.iter().any(|(name, t)| t.data != straight[name].data),
        "counted afresh, the run resumed after step 35 should end with other weights"
    );
}
