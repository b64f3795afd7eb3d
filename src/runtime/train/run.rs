//! One `train` block from start to end: data, graphs and executors, starting parameters, the
//! step loop (batch → run → finite-loss check → update every trainable parameter), periodic
//! evaluation and checkpoints, resuming from a checkpoint (see [`super::resume`]) and stopping
//! on request ([`super::interrupt`]). With several processes ([`TrainOptions::comm`]) each runs
//! its part of every batch and they average their gradients ([`super::shard`]). After setup a
//! step allocates nothing: batch buffers, the feed and parameter views and the optimizer state
//! are reused.

use super::eval::{evaluate, label_inputs, EvalResult};
use super::params::{self, lr_scale, Tensors, TEACHER};
use super::progress::{EvalInfo, Progress, StepInfo};
use super::resume::Position;
use super::shard::{broadcast_start, evaluate_sharded, Shard};
use super::{anomaly, Backend, RunSummary, TrainError, TrainOptions};
use crate::exec::{Executor, Feed, StepCtx, Update, UpdateHyper};
use crate::ir::{Graph, Length, Program, RunSpec};
use crate::runtime::batch::{gather, Buf, Epochs};
use crate::runtime::checkpoint::{self, optim_name, Checkpoint, Saved, Tensor};
use crate::runtime::data::{self, Dataset, Expect, Split, Values};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

type Log = Option<(PathBuf, BufWriter<File>)>;

/// Data sets loaded by earlier runs of a session, by data block and expected types.
pub(super) type DataCache = BTreeMap<String, Rc<Dataset>>;

/// Empties a vector of borrows so that its allocation can hold borrows of another lifetime (an
/// in-place collect of an empty iterator keeps the buffer when the layouts agree).
#[allow(clippy::unnecessary_filter_map)] // filter_map is what changes the item type
fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

/// The per-sample types of the graph's inputs: the model input and `label`.
fn expect(graph: &Graph) -> Expect {
    let mut e = Expect::default();
    for (v, name) in graph.inputs() {
        let ty = graph.ty(v).clone();
        if name == "label" {
            e.y = Some(ty);
        } else {
            e.x = Some(ty);
        }
    }
    e
}

/// Class ids must index the logits: checked once at load time rather than trusted to a kernel.
fn check_labels(spec: &RunSpec, ds: &Dataset) -> Result<(), String> {
    check_split_labels(spec, &ds.train, "train")?;
    match &ds.test {
        Some(t) => check_split_labels(spec, t, "test"),
        None => Ok(()),
    }
}

/// [`check_labels`] for one split, named `name` in the error.
fn check_split_labels(spec: &RunSpec, s: &Split, name: &str) -> Result<(), String> {
    let Some(out) = spec.graph.output("output") else {
        return Ok(());
    };
    let classes = spec.graph.ty(out).last();
    if !spec.classification {
        return Ok(());
    }
    if let Values::I32(v) = &s.y.values {
        if let Some(i) = v.iter().position(|&y| y < 0 || y as usize >= classes) {
            let k = s.y.per_sample().max(1);
            return Err(format!(
                "label {} of {name} sample {} is not a class id in 0..{classes} (the model has {classes} outputs)",
                v[i],
                i / k
            ));
        }
    }
    Ok(())
}

/// One trainable parameter: its index, its gradient's output name and its lr multiplier.
struct Trainable {
    index: usize,
    grad: String,
    scale: f64,
    state: Vec<Vec<f32>>,
}

pub(super) fn train(
    program: &Program,
    spec: &RunSpec,
    backend: &Backend,
    opts: &TrainOptions,
    trained: &BTreeMap<String, Tensors>,
    cache: &mut DataCache,
    log: Log,
) -> Result<(RunSummary, Tensors, Log), TrainError> {
    let run = spec.name.as_str();
    let setup = |msg: String| TrainError::Setup {
        run: run.into(),
        msg,
    };
    let t0 = Instant::now();

    // Data.
    let dspec = program
        .data(&spec.data)
        .ok_or_else(|| setup(format!("no data block named `{}`", spec.data)))?;
    let want = expect(&spec.graph);
    let key = format!("{}|{:?}|{:?}", dspec.name, want.x, want.y);
    let ds = match cache.get(&key) {
        Some(ds) => ds.clone(),
        None => {
            let ds =
                data::load(dspec, &opts.data_dir, &want).map_err(|source| TrainError::Data {
                    run: run.into(),
                    source,
                })?;
            let ds = Rc::new(ds);
            cache.insert(key, ds.clone());
            ds
        }
    };
    check_labels(spec, &ds).map_err(setup)?;

    // Graphs, executors, parameters, optimizer.
    let graph = (backend.grad)(&spec.graph).map_err(|e| setup(format!("autodiff: {e}")))?;
    // Under --detect-anomaly every value is checked after every step: they must all be kept.
    let factory = if opts.detect_anomaly {
        &backend.inspector
    } else {
        &backend.executor
    };
    let mut exec =
        factory(&graph).map_err(|e| setup(format!("compiling the training graph: {e}")))?;
    let mut eval_exec = match &ds.test {
        Some(_) => Some(
            backend
                .forward_executor(&spec.eval_graph)
                .map_err(|e| setup(format!("compiling the evaluation graph: {e}")))?,
        ),
        None => None,
    };
    let eval_map: Vec<usize> = spec
        .eval_graph
        .params
        .iter()
        .map(|p| graph.param_by_path(&p.path).map(|id| id.index()))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            setup("the evaluation graph has parameters the training graph lacks".into())
        })?;
    // A resumed run takes its parameters from the checkpoint: it needs no `init` to start from
    // (only its teacher, which checkpoints do not hold).
    let mut values = match &opts.resume {
        Some(_) => {
            let fresh = RunSpec {
                init: None,
                ..spec.clone()
            };
            let opts = TrainOptions {
                init: None,
                ..opts.clone()
            };
            params::initial(program, &fresh, &graph, &opts, trained)?
        }
        None => params::initial(program, spec, &graph, opts, trained)?,
    };
    let updater =
        (backend.updater)(&spec.optimizer).map_err(|e| setup(format!("optimizer: {e}")))?;
    let mut trainable = Vec::new();
    for (i, p) in graph.params.iter().enumerate().filter(|(_, p)| !p.frozen) {
        let grad = format!("grad:{}", p.path);
        if graph.output(&grad).is_none() {
            return Err(setup(format!(
                "the training graph has no gradient for `{}`",
                p.path
            )));
        }
        let state = vec![vec![0f32; p.numel()]; updater.state_buffers()];
        trainable.push(Trainable {
            index: i,
            grad,
            scale: lr_scale(&p.path, &spec.lr_scale),
            state,
        });
    }

    // Length and order.
    let mut order = Epochs::new(ds.train.len, spec.batch, spec.shuffle, spec.seed);
    let per_epoch = order.batches_per_epoch() as u64;
    let resumed = match &opts.resume {
        Some(p) => Some(restore(
            p,
            run,
            &graph,
            &mut values,
            &mut trainable,
            per_epoch,
        )?),
        None => None,
    };
    let comm = opts.comm.as_ref();
    broadcast_start(
        comm,
        run,
        values
            .iter_mut()
            .chain(trainable.iter_mut().flat_map(|t| t.state.iter_mut())),
    )?;
    let length = match (opts.steps, opts.epochs, &resumed) {
        (Some(s), _, _) => Length::Steps(s),
        (None, Some(e), _) => Length::Epochs(e),
        // The resumed run keeps the length it was started with (its lr schedule depends on it).
        (None, None, Some(r)) => Length::Steps(r.total),
        (None, None, None) => spec.length,
    };
    let total = match length {
        Length::Epochs(e) => e * per_epoch,
        Length::Steps(s) => s,
    };
    // A checkpoint of a finished run has nothing left to train: its parameters are the result.
    if let Some(r) = resumed.as_ref().filter(|r| r.step >= total) {
        let summary = RunSummary {
            run: run.into(),
            steps: r.step,
            steps_run: 0,
            total_steps: total,
            epochs: r.step as f64 / per_epoch.max(1) as f64,
            final_loss: f64::NAN,
            test_loss: None,
            test_accuracy: None,
            samples_per_s: 0.0,
            wall_s: t0.elapsed().as_secs_f64(),
            checkpoint: None,
        };
        return Ok((summary, final_params(&graph, values), log));
    }
    if opts.checkpoint_every == Some(0) {
        return Err(setup("`--checkpoint-every` must be at least 1".into()));
    }
    let batch = order.batch_size();
    let mut shard = Shard::new(
        comm,
        run,
        batch,
        trainable
            .iter()
            .map(|t| (t.grad.clone(), graph.params[t.index].numel())),
    )?;
    // One process, no per-value checks: the executor applies each update as soon as the
    // step has computed its gradient, into `next` (swapped in once the step proves finite).
    let targets: Vec<usize> = trainable.iter().map(|t| t.index).collect();
    let fused = comm.size() == 1
        && !opts.detect_anomaly
        && exec
            .fuse_updates(&spec.optimizer, &targets)
            .map_err(|e| setup(format!("fusing the optimizer updates: {e}")))?;
    let mut next: Vec<Vec<f32>> = if fused {
        targets.iter().map(|&i| values[i].clone()).collect()
    } else {
        Vec::new()
    };
    let mut update_spare: Vec<Update<'_>> = Vec::with_capacity(targets.len());
    let mut grad_spare: Vec<&[f32]> = Vec::with_capacity(targets.len());
    // Evaluating in batches of the training batch size keeps the evaluation executor's buffers
    // no larger than the training ones (at 256 they were most of the CNN's memory).
    let eval_batch = batch;
    let base_lr = spec.optimizer.lr();
    let ckpt_path = opts.checkpoint.clone().or_else(|| {
        spec.checkpoint
            .as_ref()
            .map(|p| data::resolve(p, &opts.base_dir))
    });
    if opts.checkpoint_every.is_some() && ckpt_path.is_none() {
        return Err(setup(
            "`--checkpoint-every` needs a checkpoint to write: give `--checkpoint FILE` or `checkpoint:` in the run".into(),
        ));
    }

    let roles = label_inputs(&graph);
    let mut xb = Buf::for_column(&ds.train.x, batch);
    let mut yb = Buf::for_column(&ds.train.y, batch);
    // The samples in `xb` and `yb`: a step with the same ones does not gather them again.
    let mut last_idx: Vec<usize> = Vec::new();
    let mut feed_spare: Vec<Feed<'_>> = Vec::with_capacity(roles.len());
    let mut view_spare: Vec<&[f32]> = Vec::with_capacity(values.len());
    let mut recent = [0f64; 50];
    let mut progress = Progress::new(run, total, opts.quiet, log);
    let log_err = |source| TrainError::Log {
        path: opts.log_json.clone().unwrap_or_default(),
        source,
    };

    // Data position: batch `first_batch` of epoch `epoch` (0-based) comes next.
    let start = resumed.as_ref().map_or(0, |r| r.step);
    let mut step = start;
    let mut epoch = step / per_epoch.max(1);
    let mut first_batch = (step % per_epoch.max(1)) as usize;
    order.skip(epoch);
    let mut last: Option<(u64, EvalResult)> = None;
    let train_start = Instant::now();
    // Time spent evaluating and checkpointing, left out of samples/s.
    let mut paused = std::time::Duration::ZERO;
    let save_to = |path: &Path,
                   values: &[Vec<f32>],
                   trainable: &[Trainable],
                   step: u64|
     -> Result<(), TrainError> {
        if comm.rank() != 0 {
            return Ok(());
        }
        let mut ts: Vec<Saved<'_>> = graph
            .params
            .iter()
            .zip(values)
            .filter(|(p, _)| !p.path.starts_with(TEACHER))
            .map(|(p, v)| Saved {
                name: p.path.clone(),
                dims: &p.dims,
                data: v,
            })
            .collect();
        for t in trainable {
            let p = &graph.params[t.index];
            for (i, s) in t.state.iter().enumerate() {
                ts.push(Saved {
                    name: optim_name(&p.path, i),
                    dims: &p.dims,
                    data: s,
                });
            }
        }
        let pos = Position {
            run: run.into(),
            step,
            total,
            batches_per_epoch: per_epoch,
        };
        checkpoint::save_with_meta(path, &ts, Some(step), &pos.to_meta()).map_err(|source| {
            TrainError::Checkpoint {
                run: run.into(),
                source,
            }
        })
    };
    let save = |values: &[Vec<f32>], trainable: &[Trainable], step: u64| match &ckpt_path {
        Some(path) => save_to(path, values, trainable, step),
        None => Ok(()),
    };
    let report = |progress: &mut Progress,
                  last: &mut Option<(u64, EvalResult)>,
                  r: EvalResult,
                  step,
                  epoch| {
        *last = Some((step, r));
        progress
            .eval(&EvalInfo {
                step,
                epoch,
                loss: r.loss,
                accuracy: r.accuracy,
                samples: r.samples,
            })
            .map_err(log_err)
    };
    let do_eval = |exec: &mut Option<Box<dyn Executor>>,
                   values: &[Vec<f32>],
                   step: u64|
     -> Result<Option<EvalResult>, TrainError> {
        let (Some(e), Some(test)) = (exec.as_mut(), ds.test.as_ref()) else {
            return Ok(None);
        };
        let views: Vec<&[f32]> = eval_map.iter().map(|&i| values[i].as_slice()).collect();
        evaluate_sharded(
            comm,
            e.as_mut(),
            &views,
            test,
            eval_batch,
            spec.classification,
            spec.seed,
            run,
            step,
        )
        .map(Some)
    };

    while step < total {
        order.next_epoch();
        epoch += 1;
        for b in std::mem::take(&mut first_batch)..per_epoch as usize {
            if step >= total {
                break;
            }
            let idx = shard.part(order.batch(b));
            // Full-batch training without shuffling (XOR) feeds the same samples every step.
            if idx != last_idx.as_slice() {
                gather(&ds.train.x, idx, &mut xb);
                gather(&ds.train.y, idx, &mut yb);
                last_idx.clear();
                last_idx.extend_from_slice(idx);
                // The next batch's samples are far apart in memory: asked for now, they arrive
                // while this step runs.
                if b + 1 < per_epoch as usize {
                    let next = shard.part(order.batch(b + 1));
                    crate::runtime::batch::prefetch(&ds.train.x, next);
                    crate::runtime::batch::prefetch(&ds.train.y, next);
                }
            }
            let (loss, factor) = {
                let mut feeds: Vec<Feed<'_>> = recycle(std::mem::take(&mut feed_spare));
                feeds.extend(
                    roles
                        .iter()
                        .map(|&is_y| if is_y { yb.feed() } else { xb.feed() }),
                );
                let mut views: Vec<&[f32]> = recycle(std::mem::take(&mut view_spare));
                views.extend(values.iter().map(Vec::as_slice));
                let ctx = StepCtx {
                    seed: spec.seed,
                    step,
                    first: shard.first(idx.len()),
                };
                let factor = spec.schedule.factor(step, total);
                let hyper = |t: &Trainable| UpdateHyper {
                    lr: (base_lr * factor * t.scale) as f32,
                    step: step + 1,
                };
                let exec_err = |source| TrainError::Exec {
                    run: run.into(),
                    step: step + 1,
                    source,
                };
                let grads_finite = if fused {
                    let mut updates: Vec<Update<'_>> = recycle(std::mem::take(&mut update_spare));
                    updates.extend(trainable.iter_mut().zip(next.iter_mut()).map(|(t, n)| {
                        Update {
                            hyper: hyper(t),
                            next: n,
                            state: &mut t.state,
                        }
                    }));
                    let finite = exec
                        .run_updating(idx.len(), &feeds, &views, ctx, &mut updates)
                        .map_err(exec_err)?;
                    update_spare = recycle(updates);
                    finite
                } else {
                    exec.run(idx.len(), &feeds, &views, ctx).map_err(exec_err)?;
                    true
                };
                let loss = exec
                    .output("loss")
                    .and_then(|l| l.first().copied())
                    .unwrap_or(f32::NAN);
                // Under MPI, the mean loss and the summed gradients of every rank.
                let loss = shard.reduce(exec.as_ref(), loss, step + 1)?;
                let mut grads: Vec<&[f32]> = recycle(std::mem::take(&mut grad_spare));
                if !fused {
                    for (k, t) in trainable.iter().enumerate() {
                        grads.push(
                            shard
                                .grad(exec.as_ref(), k, &t.grad)
                                .ok_or_else(|| setup(format!("no output `{}`", t.grad)))?,
                        );
                    }
                }
                let bad_grad = !grads_finite || !grads.iter().all(|g| anomaly::all_finite(g));
                if !loss.is_finite() || bad_grad || opts.detect_anomaly {
                    let param = trainable
                        .iter()
                        .enumerate()
                        .find(|(k, t)| {
                            shard
                                .grad(exec.as_ref(), *k, &t.grad)
                                .is_some_and(|g| !anomaly::all_finite(g))
                        })
                        .map(|(_, t)| graph.params[t.index].path.clone());
                    let anomaly = if opts.detect_anomaly {
                        anomaly::first_non_finite(exec.graph(), exec.as_ref(), &feeds, &views)
                    } else {
                        // The executor shares buffers between values: the step is replayed on
                        // one that keeps them all (same inputs, parameters and kernels). Under
                        // MPI it finds this rank's part of the trouble, if any.
                        anomaly::replay(&backend.inspector, &graph, idx.len(), &feeds, &views, ctx)
                    };
                    if !loss.is_finite() || param.is_some() || anomaly.is_some() {
                        return Err(TrainError::NonFinite {
                            run: run.into(),
                            step: step + 1,
                            loss,
                            param,
                            anomaly,
                        });
                    }
                }
                view_spare = recycle(views);
                feed_spare = recycle(feeds);
                if fused {
                    for (t, n) in trainable.iter().zip(next.iter_mut()) {
                        std::mem::swap(&mut values[t.index], n);
                    }
                } else {
                    for (t, g) in trainable.iter_mut().zip(&grads) {
                        let h = hyper(t);
                        updater.update(&mut values[t.index], g, &mut t.state, h);
                    }
                }
                grad_spare = recycle(grads);
                (loss, factor)
            };
            // Indexed from this process's first step: `recent[..kept]` below is then exactly
            // the steps it ran, also when a resumed run starts mid-way.
            recent[((step - start) % 50) as usize] = loss as f64;
            step += 1;
            let sps = if progress.shows_steps() {
                ((step - start) as usize * batch) as f64
                    / (train_start.elapsed() - paused).as_secs_f64().max(1e-9)
            } else {
                0.0
            };
            progress
                .step(&StepInfo {
                    step,
                    epoch,
                    loss: loss as f64,
                    lr: base_lr * factor,
                    samples_per_s: sps,
                })
                .map_err(log_err)?;
            if spec
                .eval
                .as_ref()
                .is_some_and(|e| !e.per_epoch && step.is_multiple_of(e.every.max(1)))
            {
                let t = Instant::now();
                if let Some(r) = do_eval(&mut eval_exec, &values, step)? {
                    report(&mut progress, &mut last, r, step, epoch)?;
                }
                save(&values, &trainable, step)?;
                paused += t.elapsed();
            } else if opts
                .checkpoint_every
                .is_some_and(|n| step.is_multiple_of(n) && step < total)
            {
                let t = Instant::now();
                save(&values, &trainable, step)?;
                paused += t.elapsed();
            }
            if step < total
                && (shard.stop_requested() || opts.stop_after.is_some_and(|s| step >= s))
            {
                let path = ckpt_path
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(format!("{run}.interrupted.safetensors")));
                save_to(&path, &values, &trainable, step)?;
                progress.finish().map_err(log_err)?;
                return Err(TrainError::Interrupted {
                    run: run.into(),
                    step,
                    checkpoint: path,
                });
            }
        }
        if spec
            .eval
            .as_ref()
            .is_some_and(|e| e.per_epoch && epoch.is_multiple_of(e.every.max(1)))
            && last.map(|l| l.0) != Some(step)
        {
            let t = Instant::now();
            if let Some(r) = do_eval(&mut eval_exec, &values, step)? {
                report(&mut progress, &mut last, r, step, epoch)?;
            }
            save(&values, &trainable, step)?;
            paused += t.elapsed();
        }
    }
    let train_secs = (train_start.elapsed() - paused).as_secs_f64();
    if last.map(|l| l.0) != Some(step) {
        if let Some(r) = do_eval(&mut eval_exec, &values, step)? {
            report(&mut progress, &mut last, r, step, epoch)?;
        }
    }
    save(&values, &trainable, step)?;
    let log = progress.finish().map_err(log_err)?;

    let kept = ((step - start) as usize).min(recent.len());
    let final_loss = if kept == 0 {
        f64::NAN
    } else {
        recent[..kept].iter().sum::<f64>() / kept as f64
    };
    let summary = RunSummary {
        run: run.into(),
        steps: step,
        steps_run: step - start,
        total_steps: total,
        epochs: if per_epoch == 0 {
            0.0
        } else {
            step as f64 / per_epoch as f64
        },
        final_loss,
        test_loss: last.map(|l| l.1.loss),
        test_accuracy: last.and_then(|l| l.1.accuracy),
        samples_per_s: ((step - start) as usize * batch) as f64 / train_secs.max(1e-9),
        wall_s: t0.elapsed().as_secs_f64(),
        checkpoint: ckpt_path,
    };
    Ok((summary, final_params(&graph, values), log))
}

/// The parameters a run ends with, by path (teacher parameters left out).
fn final_params(graph: &Graph, values: Vec<Vec<f32>>) -> Tensors {
    graph
        .params
        .iter()
        .zip(values)
        .filter(|(p, _)| !p.path.starts_with(TEACHER))
        .map(|(p, v)| {
            (
                p.path.clone(),
                Tensor {
                    dims: p.dims.clone(),
                    data: v,
                },
            )
        })
        .collect()
}

/// Loads the checkpoint `path` of run `run` into `values` (non-teacher parameters) and the
/// optimizer state of `trainable`, and returns the position it records.
fn restore(
    path: &Path,
    run: &str,
    graph: &Graph,
    values: &mut [Vec<f32>],
    trainable: &mut [Trainable],
    per_epoch: u64,
) -> Result<Position, TrainError> {
    let setup = |msg: String| TrainError::Setup {
        run: run.into(),
        msg,
    };
    let ck_err = |source| TrainError::Checkpoint {
        run: run.into(),
        source,
    };
    let ck = Checkpoint::load(path).map_err(ck_err)?;
    let pos = Position::from_checkpoint(&ck).map_err(&setup)?;
    if pos.run != run {
        return Err(setup(format!(
            "checkpoint {} was written by run `{}`, not by this run (resume it with `--run {}`)",
            path.display(),
            pos.run,
            pos.run
        )));
    }
    if pos.batches_per_epoch != per_epoch {
        return Err(setup(format!(
            "checkpoint {} was written with {} batches per epoch, this run has {per_epoch} (the data or the batch size changed)",
            path.display(),
            pos.batches_per_epoch
        )));
    }
    for (p, v) in graph.params.iter().zip(values.iter_mut()) {
        if !p.path.starts_with(TEACHER) {
            v.copy_from_slice(&ck.get(&p.path, &p.dims).map_err(ck_err)?.data);
        }
    }
    for t in trainable.iter_mut() {
        let p = &graph.params[t.index];
        for (i, s) in t.state.iter_mut().enumerate() {
            s.copy_from_slice(
                &ck.get(&optim_name(&p.path, i), &p.dims)
                    .map_err(ck_err)?
                    .data,
            );
        }
    }
    Ok(pos)
}

/// `nnc eval`: the loss (and accuracy, for a classifier) of `params` on the test split of
/// `spec`'s data (the train split when there is none), with the run's evaluation graph.
pub fn evaluate_run(
    program: &Program,
    spec: &RunSpec,
    backend: &Backend,
    opts: &TrainOptions,
    params: &Tensors,
) -> Result<EvalResult, TrainError> {
    let run = spec.name.as_str();
    let setup = |msg: String| TrainError::Setup {
        run: run.into(),
        msg,
    };
    let dspec = program
        .data(&spec.data)
        .ok_or_else(|| setup(format!("no data block named `{}`", spec.data)))?;
    // Only the split measured is loaded (and its labels checked): with a `test` source, the
    // train files need not be there.
    let (split, name) =
        data::load_eval(dspec, &opts.data_dir, &expect(&spec.eval_graph)).map_err(|source| {
            TrainError::Data {
                run: run.into(),
                source,
            }
        })?;
    check_split_labels(spec, &split, name).map_err(setup)?;
    let g = &spec.eval_graph;
    let views: Vec<&[f32]> = g
        .params
        .iter()
        .map(|p| match params.get(&p.path) {
            Some(t) if t.dims == p.dims => Ok(t.data.as_slice()),
            Some(t) => Err(setup(format!(
                "`{}` has shape {:?}, expected {:?}",
                p.path, t.dims, p.dims
            ))),
            None => Err(setup(format!("no value for parameter `{}`", p.path))),
        })
        .collect::<Result<_, _>>()?;
    let mut exec = backend
        .forward_executor(g)
        .map_err(|e| setup(format!("compiling the evaluation graph: {e}")))?;
    evaluate(
        exec.as_mut(),
        &views,
        &split,
        spec.batch,
        spec.classification,
        spec.seed,
    )
    .map_err(|source| TrainError::Exec {
        run: run.into(),
        step: 0,
        source,
    })
}
