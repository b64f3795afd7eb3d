//! The step loop of a run: a [`Trainer`] holds what a step reads and updates, and its methods are
//! the loop's parts — one step ([`Trainer::train_step`]), what follows a step or an epoch
//! (evaluation, checkpoints, a stop request), and the end of the run.
//!
//! After [`Trainer::new`] a step allocates nothing: the batch buffers, the vectors of feeds,
//! parameter views, updates and gradients ([`Spare`]) and the optimizer state are reused.

use super::anomaly;
use super::eval::{label_inputs, non_finite_eval, EvalAt};
use super::params::{Params, Tensors, TEACHER};
use super::plateau::Reducer;
use super::progress::{EvalInfo, Progress, StepInfo};
use super::resume::{optim_state, Order, Position};
use super::run::{Log, Model, Run};
use super::shard::{evaluate_sharded, Shard};
use super::stopping::{Restored, Verdict, Watch, BEST};
use super::{AfterStep, RunSummary, TrainError, TrainOptions};
use crate::exec::{Executor, Feed, StepCtx, Update};
use crate::ir::{Graph, Metric, RunSpec, ScheduleKind};
use crate::runtime::batch::{gather, prefetch, Buf, Epochs};
use crate::runtime::checkpoint::{self, Checkpoint, Saved};
use crate::runtime::data::{Dataset, Split};
use std::mem::take;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The final loss is the mean over this many last steps.
const RECENT: usize = 50;

/// How the step loop ended.
pub(super) enum Ended {
    /// At the run's last step.
    Done,
    /// Stopped on request ([`super::interrupt`], `--stop-after`); the run's state is saved in
    /// this checkpoint.
    Interrupted(PathBuf),
}

/// A run past its setup: its data, graphs, parameters and position, and the buffers its steps
/// reuse. The fields are separate so that a step can borrow the batch, the parameters, the
/// executor and the reduced gradients at once.
pub(super) struct Trainer<'a> {
    run: Run<'a>,
    data: Rc<Dataset>,
    /// The training graph.
    graph: Graph,
    exec: Box<dyn Executor>,
    params: Params,
    /// This process's part of each batch, and the gradients averaged over the processes.
    shard: Shard<'a>,
    batch: Batch,
    spare: Spare,
    /// `clip_grad_norm`: the gradients of the trainable parameters scaled down to this total
    /// norm (in update order) when their norm exceeds it; empty when the run does not clip.
    clipped: Vec<Vec<f32>>,
    /// Evaluates on the test split (see [`super::run::Model`]).
    eval: Option<Box<dyn Executor>>,
    eval_map: Vec<usize>,
    /// The last evaluation, as reported (the metrics `eval:` lists).
    last_eval: Option<EvalInfo>,
    /// `early_stopping`: its count of evaluations, and whether it has ended the run.
    watch: Option<Watch>,
    stopped_early: bool,
    /// `schedule: plateau(…)`: its count of evaluations, and the rate it has come to.
    plateau: Option<Reducer>,
    /// With `restore_best: true`, the parameters of the best evaluation so far.
    best: Option<Restored>,
    /// The step whose parameters [`Trainer::restore_best`] put back, which the checkpoint
    /// records ([`checkpoint::PARAMS_STEP`]).
    restored_step: Option<u64>,
    order: Epochs,
    batch_size: usize,
    per_epoch: u64,
    /// The run's length, and the step this process started from (0, or a resumed run's).
    total: u64,
    start: u64,
    /// Steps done.
    step: u64,
    /// Epochs begun.
    epoch: u64,
    /// The batch of the current epoch to start from: a resumed run's position at first, then 0.
    first_batch: usize,
    /// The optimizer's `lr` (a plateau schedule's rate replaces it: [`Trainer::lr`]).
    base_lr: f64,
    /// Where the run's checkpoint is written, if anywhere.
    checkpoint: Option<PathBuf>,
    progress: Progress,
    /// The losses of the last [`RECENT`] steps, indexed from this process's first step.
    recent: [f64; RECENT],
    /// The first step this process trained and its loss, against which its end is judged.
    first_loss: Option<(u64, f64)>,
    started: Instant,
    /// Time spent evaluating and checkpointing, left out of samples/s.
    paused: Duration,
}

impl<'a> Trainer<'a> {
    /// Readies `model` to train with the data `data` in the order `order` from step `start` to
    /// step `total`: the gradient exchange between processes, the fused optimizer updates when
    /// the executor can apply them, the checkpoint path, the batch buffers and the progress
    /// display (given the session's `log`). Refuses a `--checkpoint-every` of 0 or with nothing
    /// to write.
    pub fn new(
        run: Run<'a>,
        data: Rc<Dataset>,
        model: Model,
        mut order: Epochs,
        total: u64,
        start: u64,
        log: Log,
    ) -> Result<Trainer<'a>, TrainError> {
        let Run {
            name, spec, opts, ..
        } = run;
        let setup = |msg| run.setup_error(msg);
        let Model {
            graph,
            mut exec,
            eval,
            eval_map,
            mut params,
        } = model;
        if opts.checkpoint_every == Some(0) {
            return Err(setup("`--checkpoint-every` must be at least 1".into()));
        }
        let comm = opts.comm.as_ref();
        let batch_size = order.batch_size();
        let shard = Shard::new(
            comm,
            name,
            batch_size,
            params
                .trainable
                .iter()
                .map(|t| (t.grad.clone(), graph.params[t.index].numel()))
                // A batch norm's statistics are averaged over the processes with the
                // gradients, so that every rank folds the same into its running buffers.
                .chain(
                    params
                        .running
                        .iter()
                        .map(|r| (r.stats.clone(), 2 * graph.params[r.mean].numel())),
                ),
        )?;
        // A batch norm in training needs more than one value per channel (PyTorch refuses
        // such a batch too): this process's part of a batch smaller than the run's `batch`
        // (a training split that small, or a batch split over many processes) can have one.
        if let Some(per) = graph.batch_norm_values_per_sample() {
            let part = batch_size / comm.size().max(1);
            if part * per < 2 {
                return Err(setup(format!(
                    "batch_norm trains on {part} sample{} a step{}: one value per channel, \
                     from which no variance can be estimated (PyTorch: \"Expected more than 1 \
                     value per channel when training\"); use a batch of at least 2 per process",
                    if part == 1 { "" } else { "s" },
                    if comm.size() > 1 {
                        " on each process"
                    } else {
                        ""
                    },
                )));
            }
        }
        // One process, no per-value checks: the executor applies each update as soon as the
        // step has computed its gradient, into `next` (swapped in once the step proves finite).
        // Not when clipping: the norm needs every gradient before any parameter moves, so the
        // updates run after the step, on the clipped gradients.
        if comm.size() == 1 && !opts.detect_anomaly && spec.clip_grad_norm.is_none() {
            params
                .fuse(exec.as_mut(), &spec.optimizer)
                .map_err(|e| setup(format!("fusing the optimizer updates: {e}")))?;
        }
        let checkpoint = checkpoint_path(spec, opts);
        if opts.checkpoint_every.is_some() && checkpoint.is_none() {
            return Err(setup(
                "`--checkpoint-every` needs a checkpoint to write: give `--checkpoint FILE` or \
                 `checkpoint:` in the run"
                    .into(),
            ));
        }
        let batch = Batch::new(&graph, &data.train, batch_size);
        let spare = Spare {
            feeds: Vec::with_capacity(batch.roles.len()),
            views: Vec::with_capacity(params.values.len()),
            updates: Vec::with_capacity(params.trainable.len()),
            grads: Vec::with_capacity(params.trainable.len()),
        };
        let clipped = match spec.clip_grad_norm {
            Some(_) => params
                .trainable
                .iter()
                .map(|t| vec![0f32; graph.params[t.index].numel()])
                .collect(),
            None => Vec::new(),
        };
        let mut progress = Progress::new(name, total, opts.quiet, log);
        if let Some(n) = &params.start {
            progress
                .note(&n.message(name), |w| n.record(w, name))
                .map_err(log_error(opts))?;
        }
        let per_epoch = order.batches_per_epoch() as u64;
        for text in super::stopping::unreachable(spec, opts, total, per_epoch) {
            progress.warn(&text, opts.comm.rank() == 0);
        }
        // Data position: batch `first_batch` of epoch `epoch` (0-based) comes next.
        let epoch = start / per_epoch.max(1);
        order.skip(epoch);
        Ok(Trainer {
            run,
            data,
            graph,
            exec,
            params,
            shard,
            batch,
            spare,
            clipped,
            eval,
            eval_map,
            last_eval: None,
            watch: spec.early_stopping.as_ref().map(Watch::new),
            stopped_early: false,
            plateau: match &spec.schedule.kind {
                ScheduleKind::Plateau(p) => Some(Reducer::new(p, spec.optimizer.lr())),
                _ => None,
            },
            best: None,
            restored_step: None,
            order,
            batch_size,
            per_epoch,
            total,
            start,
            step: start,
            epoch,
            first_batch: (start % per_epoch.max(1)) as usize,
            base_lr: spec.optimizer.lr(),
            checkpoint,
            progress,
            recent: [0.0; RECENT],
            first_loss: None,
            started: Instant::now(),
            paused: Duration::ZERO,
        })
    }

    /// Trains to the run's end, epoch by epoch from the current position, until a stop is
    /// requested or early stopping ends it.
    pub fn train(&mut self) -> Result<Ended, TrainError> {
        while self.step < self.total {
            self.order.next_epoch();
            self.epoch += 1;
            for b in take(&mut self.first_batch)..self.per_epoch as usize {
                if self.step >= self.total {
                    break;
                }
                self.train_step(b)?;
                self.after_step()?;
                if self.stopped_early {
                    return Ok(Ended::Done);
                }
                if self.stop_requested() {
                    if b + 1 == self.per_epoch as usize {
                        // The epoch is done: its evaluation is due now, as a resumed run starts
                        // with the next epoch.
                        self.after_epoch()?;
                    }
                    return Ok(Ended::Interrupted(self.save_interrupted()?));
                }
            }
            self.after_epoch()?;
            if self.stopped_early {
                break;
            }
        }
        Ok(Ended::Done)
    }

    /// One step on batch `b` of the current epoch: gathers it, runs the training graph, updates
    /// the parameters and reports the loss.
    fn train_step(&mut self, b: usize) -> Result<(), TrainError> {
        let samples = self.load_batch(b);
        let factor = self.run.spec.schedule.factor(self.step, self.total);
        let (loss, grad_norm) = self.optimize(samples, factor)?;
        self.record(loss, factor, grad_norm)
    }

    /// Gathers this process's part of batch `b` into the batch buffers, and returns its size.
    fn load_batch(&mut self, b: usize) -> usize {
        let idx = self.shard.part(self.order.batch(b));
        // Full-batch training without shuffling (XOR) feeds the same samples every step.
        if self.batch.gather(&self.data.train, idx) && b + 1 < self.per_epoch as usize {
            // The next batch's samples are far apart in memory: asked for now, they arrive
            // while this step runs.
            let next = self.shard.part(self.order.batch(b + 1));
            prefetch(&self.data.train.x, next);
            prefetch(&self.data.train.y, next);
        }
        idx.len()
    }

    /// Runs the training graph on the gathered batch (`samples` samples on this process),
    /// checks that the loss and the gradients are finite and updates the trainable parameters
    /// at the learning rate's schedule `factor`. Returns the batch's mean loss (over all
    /// processes), and with `clip_grad_norm` the total norm of its gradients before clipping
    /// ([`clip`]). A step that is not finite fails before its update ([`Trainer::check_finite`]).
    fn optimize(&mut self, samples: usize, factor: f64) -> Result<(f32, Option<f64>), TrainError> {
        let (run, step) = (self.run.name, self.step);
        let lr = self.lr() * factor;
        let feeds = self.batch.feeds(recycle(take(&mut self.spare.feeds)));
        let mut views: Vec<&[f32]> = recycle(take(&mut self.spare.views));
        views.extend(self.params.values.iter().map(Vec::as_slice));
        let ctx = StepCtx {
            seed: self.run.spec.seed,
            step,
            first: self.shard.first(samples),
        };
        let exec_err = |source| TrainError::Exec {
            run: run.into(),
            step: step + 1,
            source,
        };
        let grads_finite = if self.params.fused {
            let mut updates: Vec<Update<'_>> = recycle(take(&mut self.spare.updates));
            let trainable = self.params.trainable.iter_mut();
            updates.extend(
                trainable
                    .zip(self.params.next.iter_mut())
                    .map(|(t, n)| Update {
                        hyper: t.hyper(lr, step),
                        next: n,
                        state: &mut t.state,
                    }),
            );
            let finite = self
                .exec
                .run_updating(samples, &feeds, &views, ctx, &mut updates)
                .map_err(exec_err)?;
            self.spare.updates = recycle(updates);
            finite
        } else {
            self.exec
                .run(samples, &feeds, &views, ctx)
                .map_err(exec_err)?;
            true
        };
        let loss = self
            .exec
            .output("loss")
            .and_then(|l| l.first().copied())
            .unwrap_or(f32::NAN);
        // Under `--detect-anomaly` with several processes, what this one found goes with the
        // reduction, so that every rank stops at the same step with the same report (one
        // stopping alone left the others waiting in the next step's reduction).
        let found = (self.run.opts.detect_anomaly && self.shard.distributed())
            .then(|| {
                let exec = self.exec.as_ref();
                anomaly::first_non_finite_at(exec.graph(), exec, &feeds, &views)
            })
            .flatten();
        // Under MPI, the mean loss and the summed gradients of every rank.
        let loss = self
            .shard
            .reduce(self.exec.as_ref(), loss, found.as_ref(), step + 1)?;
        let mut grads: Vec<&[f32]> = recycle(take(&mut self.spare.grads));
        if !self.params.fused {
            for (k, t) in self.params.trainable.iter().enumerate() {
                grads.push(
                    self.shard
                        .grad(self.exec.as_ref(), k, &t.grad)
                        .ok_or_else(|| self.run.setup_error(format!("no output `{}`", t.grad)))?,
                );
            }
        }
        let ran = Ran {
            samples,
            feeds: &feeds,
            views: &views,
            ctx,
        };
        self.check_finite(loss, grads_finite, &grads, &ran)?;
        self.spare.views = recycle(views);
        self.spare.feeds = recycle(feeds);
        let grad_norm = match self.run.spec.clip_grad_norm {
            Some(max) => Some(clip(&mut grads, max, &mut self.clipped)),
            None => None,
        };
        self.params.update(&grads, lr, step);
        self.spare.grads = recycle(grads);
        let trainable = self.params.trainable.len();
        for (j, r) in self.params.running.iter().enumerate() {
            let stats = self
                .shard
                .grad(self.exec.as_ref(), trainable + j, &r.stats)
                .ok_or_else(|| self.run.setup_error(format!("no output `{}`", r.stats)))?;
            r.fold(&mut self.params.values, stats);
        }
        Ok((loss, grad_norm))
    }

    /// Fails the step `ran` unless its loss and its gradients (`grads`, or as the fused update
    /// found them: `grads_finite`) are finite, naming the first parameter whose gradient is not
    /// and where the first non-finite value appeared. Under `--detect-anomaly` every value of
    /// the step is checked, also when the loss and gradients are finite.
    fn check_finite(
        &self,
        loss: f32,
        grads_finite: bool,
        grads: &[&[f32]],
        ran: &Ran<'_>,
    ) -> Result<(), TrainError> {
        let detect = self.run.opts.detect_anomaly;
        let bad_grad = !grads_finite || !grads.iter().all(|g| anomaly::all_finite(g));
        let exec = self.exec.as_ref();
        // A batch norm's batch statistics, folded into its running ones after the update: an
        // infinite variance leaves the step's loss finite (the values normalize to 0), but
        // would stay in the buffers for every evaluation.
        let trainable = self.params.trainable.len();
        let stats = self
            .params
            .running
            .iter()
            .enumerate()
            .find(|(j, r)| {
                self.shard
                    .grad(exec, trainable + j, &r.stats)
                    .is_some_and(|s| !anomaly::all_finite(s))
            })
            .map(|(_, r)| r.layer().to_string());
        if loss.is_finite() && !bad_grad && stats.is_none() && !detect {
            return Ok(());
        }
        let param = self
            .params
            .trainable
            .iter()
            .enumerate()
            .find(|(k, t)| {
                self.shard
                    .grad(exec, *k, &t.grad)
                    .is_some_and(|g| !anomaly::all_finite(g))
            })
            .map(|(_, t)| self.graph.params[t.index].path.clone());
        let anomaly = if detect && self.shard.distributed() {
            self.shard.anomaly(exec.graph())
        } else if detect {
            anomaly::first_non_finite(exec.graph(), exec, ran.feeds, ran.views)
        } else {
            // The executor shares buffers between values: the step is replayed on one that
            // keeps them all (same inputs, parameters and kernels). Under MPI it finds this
            // rank's part of the trouble, if any, and the ranks share what they found (every
            // rank is here: the reduced loss and gradients are the same on all).
            let inspector = &self.run.backend.inspector;
            let local = anomaly::replay(
                inspector,
                &self.graph,
                ran.samples,
                ran.feeds,
                ran.views,
                ran.ctx,
            );
            self.shard
                .share_anomaly(&self.graph, local, self.step + 1)?
        };
        if !loss.is_finite() || param.is_some() || stats.is_some() || anomaly.is_some() {
            return Err(TrainError::NonFinite {
                run: self.run.name.into(),
                step: self.step + 1,
                loss,
                previous: self.last_loss(),
                param,
                stats,
                anomaly: anomaly.map(Box::new),
            });
        }
        Ok(())
    }

    /// The learning rate before the schedule's factor: the optimizer's `lr`, or the rate a
    /// plateau schedule has lowered it to.
    fn lr(&self) -> f64 {
        self.plateau.as_ref().map_or(self.base_lr, Reducer::lr)
    }

    /// The training loss of the last step this process ran, if it ran any.
    fn last_loss(&self) -> Option<f64> {
        let done = self.step.checked_sub(self.start)?.checked_sub(1)?;
        Some(self.recent[(done % RECENT as u64) as usize])
    }

    /// Counts the step just done, whose loss was `loss` at the schedule's `factor`, and
    /// reports it (the bar, the log's `step` line, with the gradients' norm `grad_norm` of a run
    /// that clips them).
    fn record(&mut self, loss: f32, factor: f64, grad_norm: Option<f64>) -> Result<(), TrainError> {
        // Indexed from this process's first step: `recent[..kept]` in `finish` is then exactly
        // the steps it ran, also when a resumed run starts mid-way.
        self.recent[((self.step - self.start) % RECENT as u64) as usize] = loss as f64;
        self.step += 1;
        self.first_loss.get_or_insert((self.step, loss as f64));
        let sps = if self.progress.shows_steps() {
            ((self.step - self.start) as usize * self.batch_size) as f64
                / (self.started.elapsed() - self.paused)
                    .as_secs_f64()
                    .max(1e-9)
        } else {
            0.0
        };
        self.progress
            .step(&StepInfo {
                step: self.step,
                epoch: self.epoch,
                loss: loss as f64,
                lr: self.lr() * factor,
                samples_per_s: sps,
                grad_norm,
            })
            .map_err(log_error(self.run.opts))
    }

    /// What follows a step: an evaluation and a checkpoint every `every` steps of the run's
    /// `eval` (when it counts steps), else a checkpoint every `--checkpoint-every` steps (the
    /// last step's is written by [`Trainer::finish`]).
    fn after_step(&mut self) -> Result<(), TrainError> {
        let step = self.step;
        let eval = self.run.spec.eval.as_ref();
        if eval.is_some_and(|e| !e.per_epoch && step.is_multiple_of(e.every.max(1))) {
            self.off_the_clock(Self::evaluate_and_save)
        } else if self
            .run
            .opts
            .checkpoint_every
            .is_some_and(|n| step.is_multiple_of(n) && step < self.total)
        {
            self.off_the_clock(|t| t.save())
        } else {
            Ok(())
        }
    }

    /// What follows an epoch: an evaluation and a checkpoint every `every` epochs of the run's
    /// `eval` (when it counts epochs), unless the epoch's last step was just evaluated.
    fn after_epoch(&mut self) -> Result<(), TrainError> {
        let eval = self.run.spec.eval.as_ref();
        if eval.is_some_and(|e| e.per_epoch && self.epoch.is_multiple_of(e.every.max(1)))
            && !self.evaluated_last_step()
        {
            self.off_the_clock(Self::evaluate_and_save)
        } else {
            Ok(())
        }
    }

    /// Whether training should stop before the run's end: on a request ([`super::interrupt`],
    /// to any of the processes) or once `--stop-after` steps are done.
    fn stop_requested(&self) -> bool {
        self.step < self.total
            && (self.shard.stop_requested()
                || self.run.opts.stop_after.is_some_and(|s| self.step >= s))
    }

    /// Does `work` (an evaluation, a checkpoint) with its time left out of samples/s.
    fn off_the_clock(
        &mut self,
        work: impl FnOnce(&mut Self) -> Result<(), TrainError>,
    ) -> Result<(), TrainError> {
        let t = Instant::now();
        work(self)?;
        self.paused += t.elapsed();
        Ok(())
    }

    /// [`Trainer::evaluate`], then [`Trainer::save`]: the periodic evaluation.
    fn evaluate_and_save(&mut self) -> Result<(), TrainError> {
        // Parameters the step overflowed, said so (not an evaluation finding the test data
        // unlike the training data).
        self.finite_state(self.checkpoint.as_deref())?;
        self.evaluate()?;
        self.save()
    }

    /// Whether the last evaluation was after the current step.
    fn evaluated_last_step(&self) -> bool {
        self.last_eval.map(|l| l.step) == Some(self.step)
    }

    /// Evaluates the parameters on the test split, when there is one, in batches of the
    /// training batch's size, and reports the result (above the bar, the log's `eval` line).
    /// The summary's test figures are those of the last evaluation.
    fn evaluate(&mut self) -> Result<(), TrainError> {
        let (Some(exec), Some(test)) = (self.eval.as_mut(), self.data.test.as_ref()) else {
            return Ok(());
        };
        let values = &self.params.values;
        let views: Vec<&[f32]> = self
            .eval_map
            .iter()
            .map(|&i| values[i].as_slice())
            .collect();
        let spec = self.run.spec;
        // Evaluating in batches of the training batch size keeps the evaluation executor's
        // buffers no larger than the training ones (at 256 they were most of the CNN's memory).
        let r = evaluate_sharded(
            self.run.opts.comm.as_ref(),
            exec.as_mut(),
            &views,
            test,
            self.batch_size,
            spec.classification,
            spec.seed,
            self.run.name,
            self.step,
        )?;
        if !r.loss.is_finite() {
            // Every rank has the reduced loss, and each finds the same batch in the whole split.
            let at = EvalAt {
                run: self.run.name,
                after: Some(AfterStep {
                    step: self.step,
                    loss: self.last_loss(),
                }),
                split: "test",
                batch: self.batch_size,
                seed: spec.seed,
            };
            let g = &spec.eval_graph;
            return Err(non_finite_eval(
                self.run.backend,
                g,
                &views,
                test,
                at,
                r.loss,
            ));
        }
        // What is reported is what the run's `eval:` lists.
        let listed = |m| spec.eval.as_ref().is_none_or(|e| e.metrics.contains(&m));
        let info = EvalInfo {
            step: self.step,
            epoch: self.epoch,
            loss: Some(r.loss).filter(|_| listed(Metric::Loss)),
            accuracy: r.accuracy.filter(|_| listed(Metric::Accuracy)),
            samples: r.samples,
        };
        self.last_eval = Some(info);
        self.progress
            .eval(&info)
            .map_err(log_error(self.run.opts))?;
        // Not after the last step: no step follows at the lowered rate.
        let reduced = self.plateau.as_mut().and_then(|p| p.observe(&info));
        if let Some(r) = reduced.filter(|_| self.step < self.total) {
            let run = self.run.name;
            self.progress
                .note(&r.message(run), |w| r.record(w, run))
                .map_err(log_error(self.run.opts))?;
        }
        let Some(watch) = self.watch.as_mut() else {
            return Ok(());
        };
        match watch.observe(&info) {
            Verdict::Best if watch.restores_best() => {
                let best = self.best.get_or_insert_with(|| Restored {
                    eval: info,
                    values: Vec::new(),
                });
                best.eval = info;
                best.values.clone_from(&self.params.values);
            }
            // Not after the last step: the run ends there anyway.
            Verdict::Stop(stop) if self.step < self.total => {
                let run = self.run.name;
                self.progress
                    .note(&stop.message(run), |w| stop.record(w, run))
                    .map_err(log_error(self.run.opts))?;
                self.stopped_early = true;
            }
            _ => {}
        }
        Ok(())
    }

    /// Takes early stopping's count, `restore_best`'s best evaluation and its parameters, and a
    /// plateau schedule's state back from the checkpoint `ck` this run resumes from, as
    /// [`Trainer::save_to`] wrote them: the resumed run stops, restores and lowers its rate
    /// where the uninterrupted one does. A checkpoint
    /// without them (written before the first evaluation, or by an older nnc) leaves the count
    /// at its start.
    pub fn resume_watch(&mut self, ck: &Checkpoint) -> Result<(), TrainError> {
        let corrupt = |msg: String| {
            self.run
                .setup_error(format!("checkpoint {}: {msg}", ck.path.display()))
        };
        if let (Some(p), Some(state)) = (self.plateau.as_mut(), ck.meta.get(checkpoint::PLATEAU)) {
            p.resume(state).map_err(corrupt)?;
        }
        let Some(watch) = self.watch.as_mut() else {
            return Ok(());
        };
        if let Some(count) = ck.meta.get(checkpoint::EARLY_STOPPING) {
            watch.resume(count).map_err(corrupt)?;
        }
        if let (Some(text), true) = (ck.meta.get(checkpoint::BEST_EVAL), watch.restores_best()) {
            let values = self
                .graph
                .params
                .iter()
                .zip(&self.params.values)
                .map(|(p, now)| match p.path.starts_with(TEACHER) {
                    // The teacher's do not change: they are what the run holds.
                    true => Ok(now.clone()),
                    false => ck
                        .get(&format!("{BEST}{}", p.path), &p.dims)
                        .map(|t| t.data.clone())
                        .map_err(|e| corrupt(e.to_string())),
                })
                .collect::<Result<_, _>>()?;
            self.best = Some(Restored::from_meta(text, values).map_err(corrupt)?);
        }
        Ok(())
    }

    /// With `restore_best: true`, puts back the parameters of the best evaluation when a later
    /// one was worse (saying so), and makes it the one the summary reports.
    fn restore_best(&mut self) -> Result<(), TrainError> {
        let (Some(best), Some(watch)) = (self.best.take(), self.watch.as_ref()) else {
            return Ok(());
        };
        if self.last_eval.is_some_and(|l| l.step == best.eval.step) {
            return Ok(());
        }
        let run = self.run.name;
        let text = best.message(run, watch.monitor());
        self.progress
            .note(&text, |w| best.record(w, run))
            .map_err(log_error(self.run.opts))?;
        self.last_eval = Some(best.eval);
        self.restored_step = Some(best.eval.step);
        self.params.values = best.values;
        Ok(())
    }

    /// Writes the run's checkpoint, when it has one: its state after the current step.
    fn save(&mut self) -> Result<(), TrainError> {
        match self.checkpoint.clone() {
            Some(path) => self.save_to(&path),
            None => Ok(()),
        }
    }

    /// Writes the run's checkpoint for a stopped run to resume from: the run's own file, else
    /// `<run>.interrupted.safetensors` in the current folder, or where that cannot be written
    /// (a folder the user may read but not write in), in the temporary folder: the work of the
    /// run is not lost for want of a place. Returns where.
    fn save_interrupted(&mut self) -> Result<PathBuf, TrainError> {
        if let Some(path) = self.checkpoint.clone() {
            self.save_to(&path)?;
            return Ok(path);
        }
        let name = format!("{}.interrupted.safetensors", self.run.name);
        let here = PathBuf::from(&name);
        match self.save_to(&here) {
            Ok(()) => Ok(here),
            Err(e) => {
                let tmp = std::env::temp_dir().join(&name);
                self.save_to(&tmp).map_err(|_| e)?;
                Ok(tmp)
            }
        }
    }

    /// An error when the state after the current step (parameters and optimizer state) holds
    /// a NaN or an infinity: the step's update overflowed it, which no step after it checks when
    /// it was the last, and which a checkpoint (`path`) must not keep.
    fn finite_state(&self, path: Option<&Path>) -> Result<(), TrainError> {
        let bad = self.params.saved(&self.graph).into_iter().find_map(|t| {
            checkpoint::first_non_finite(t.dims, t.data).map(|(i, v)| (t.name, i, v))
        });
        let Some((name, index, value)) = bad else {
            return Ok(());
        };
        let kept = path.map_or(String::new(), |p| {
            format!(
                "; {} was not written (a file already there keeps its state)",
                p.display()
            )
        });
        Err(TrainError::Setup {
            run: self.run.name.into(),
            msg: format!(
                "step {}'s update made `{name}` hold {value} at index {index}{kept}: a lower \
                 learning rate may help",
                self.step
            ),
        })
    }

    /// Writes the run's state after the current step to `path`: the parameters, the optimizer
    /// state ([`Params::saved`]) and the position a resumed run continues from. Only rank 0
    /// writes (the ranks hold the same state).
    fn save_to(&mut self, path: &Path) -> Result<(), TrainError> {
        // An update that overflowed a parameter (or its optimizer state) leaves a state no
        // reader takes (`--resume`, `eval` refuse a non-finite checkpoint): the file keeps the
        // last good one. Every rank holds the same state, so all stop alike.
        self.finite_state(Some(path))?;
        if self.run.opts.comm.rank() != 0 {
            return Ok(());
        }
        // The log holds every step the checkpoint does: a run killed after it and resumed
        // from it goes on with the next step's line.
        self.progress
            .flush_log()
            .map_err(log_error(self.run.opts))?;
        let mut ts = self.params.saved(&self.graph);
        // `restore_best`'s parameters of the best evaluation so far, so that a resumed run
        // restores what the uninterrupted run would.
        if let Some(best) = &self.best {
            let own = self.graph.params.iter().zip(&best.values);
            for (p, v) in own.filter(|(p, _)| !p.path.starts_with(TEACHER)) {
                ts.push(Saved {
                    name: format!("{BEST}{}", p.path),
                    dims: &p.dims,
                    data: v,
                });
            }
        }
        let pos = Position {
            run: self.run.name.into(),
            step: self.step,
            total: self.total,
            batches_per_epoch: self.per_epoch,
            order: Some(Order::of(self.run.spec)),
            optim_state: Some(optim_state(&self.run.spec.optimizer)),
        };
        let mut meta = pos.to_meta();
        if let Some(v) = &self.data.vocab {
            meta.insert(checkpoint::VOCAB.into(), v.iter().collect());
        }
        if let Some(s) = self.restored_step {
            meta.insert(checkpoint::PARAMS_STEP.into(), s.to_string());
        }
        if let Some(count) = self.watch.as_ref().and_then(Watch::to_meta) {
            meta.insert(checkpoint::EARLY_STOPPING.into(), count);
        }
        if let Some(state) = self.plateau.as_ref().and_then(Reducer::to_meta) {
            meta.insert(checkpoint::PLATEAU.into(), state);
        }
        if let Some(best) = &self.best {
            meta.insert(checkpoint::BEST_EVAL.into(), best.to_meta());
        }
        checkpoint::save_with_meta(path, &ts, Some(self.step), &meta).map_err(|source| {
            TrainError::Checkpoint {
                run: self.run.name.into(),
                source,
            }
        })
    }

    /// Ends a run trained to its last step: evaluates the final parameters (unless that step
    /// was), writes the checkpoint, and returns the summary (`t0`: when the run's setup began),
    /// the final parameters and the session's log.
    pub fn finish(mut self, t0: Instant) -> Result<(RunSummary, Tensors, Log), TrainError> {
        let train_secs = (self.started.elapsed() - self.paused).as_secs_f64();
        // The last step's update, which no step after it checks.
        self.finite_state(self.checkpoint.as_deref())?;
        if !self.evaluated_last_step() {
            self.evaluate()?;
        }
        self.restore_best()?;
        self.save()?;
        let log = self.progress.finish().map_err(log_error(self.run.opts))?;
        let (step, start, per_epoch) = (self.step, self.start, self.per_epoch);
        let kept = ((step - start) as usize).min(RECENT);
        let final_loss = if kept == 0 {
            f64::NAN
        } else {
            self.recent[..kept].iter().sum::<f64>() / kept as f64
        };
        let summary = RunSummary {
            run: self.run.name.into(),
            steps: step,
            steps_run: step - start,
            total_steps: self.total,
            epochs: if per_epoch == 0 {
                0.0
            } else {
                step as f64 / per_epoch as f64
            },
            final_loss,
            first_loss: self.first_loss,
            test_loss: self.last_eval.and_then(|l| l.loss),
            test_accuracy: self.last_eval.and_then(|l| l.accuracy),
            samples_per_s: ((step - start) as usize * self.batch_size) as f64
                / train_secs.max(1e-9),
            batch: self.batch_size,
            wall_s: t0.elapsed().as_secs_f64(),
            checkpoint: self.checkpoint,
        };
        Ok((summary, self.params.into_tensors(&self.graph), log))
    }

    /// Ends a run stopped on request, its state saved in `checkpoint`: the error that says so
    /// (or the log's, if it cannot be flushed).
    pub fn interrupted(self, checkpoint: PathBuf) -> TrainError {
        if let Err(e) = self.progress.finish() {
            return log_error(self.run.opts)(e);
        }
        TrainError::Interrupted {
            run: self.run.name.into(),
            step: self.step,
            checkpoint,
        }
    }
}

/// Where run `spec` writes its checkpoint: `--checkpoint`, else its own `checkpoint:` (resolved
/// against the file's folder), else nowhere.
fn checkpoint_path(spec: &RunSpec, opts: &TrainOptions) -> Option<PathBuf> {
    opts.checkpoint.clone().or_else(|| {
        spec.checkpoint
            .as_ref()
            .map(|p| crate::runtime::data::resolve(p, &opts.base_dir))
    })
}

/// A [`TrainError::Log`] for the log `--log-json` names.
fn log_error(opts: &TrainOptions) -> impl Fn(std::io::Error) -> TrainError + '_ {
    |source| TrainError::Log {
        path: opts.log_json.clone().unwrap_or_default(),
        source,
    }
}

/// `torch.nn.utils.clip_grad_norm_(params, max_norm)` on the gradients `grads` of the
/// trainable parameters (finite, and under MPI already averaged, so that every rank clips
/// alike): their total L2 norm ‖g‖, summed in f64; where max / (‖g‖ + 1e-6) is below 1, each
/// gradient is multiplied by it (in f32, as PyTorch) into its buffer of `clipped`, which then
/// takes its place in `grads`. Returns ‖g‖, the norm before clipping.
fn clip<'g>(grads: &mut [&'g [f32]], max: f64, clipped: &'g mut [Vec<f32>]) -> f64 {
    let sum: f64 = grads
        .iter()
        .map(|g| g.iter().map(|&x| x as f64 * x as f64).sum::<f64>())
        .sum();
    let norm = sum.sqrt();
    let coef = (max / (norm + 1e-6)) as f32;
    if coef < 1.0 {
        for (g, c) in grads.iter_mut().zip(clipped.iter_mut()) {
            for (c, &x) in c.iter_mut().zip(g.iter()) {
                *c = x * coef;
            }
            *g = c.as_slice();
        }
    }
    norm
}

/// What a step ran on, for finding where a value stopped being finite (by running it again).
struct Ran<'s> {
    samples: usize,
    feeds: &'s [Feed<'s>],
    views: &'s [&'s [f32]],
    ctx: StepCtx,
}

/// The batch buffers: the samples of the current batch gathered from the training split, fed
/// to the graph's inputs.
struct Batch {
    /// For each graph input, whether it takes the labels ([`label_inputs`]).
    roles: Vec<bool>,
    x: Buf,
    y: Buf,
    /// The samples in `x` and `y`.
    samples: Vec<usize>,
}

impl Batch {
    /// Buffers for batches of `size` samples of `split`, fed to `graph`'s inputs.
    fn new(graph: &Graph, split: &Split, size: usize) -> Batch {
        Batch {
            roles: label_inputs(graph),
            x: Buf::for_column(&split.x, size),
            y: Buf::for_column(&split.y, size),
            samples: Vec::new(),
        }
    }

    /// Gathers the samples `idx` of `split`, unless they are already there (a step with the
    /// same samples does not gather them again); returns whether it did.
    fn gather(&mut self, split: &Split, idx: &[usize]) -> bool {
        if idx == self.samples.as_slice() {
            return false;
        }
        gather(&split.x, idx, &mut self.x);
        gather(&split.y, idx, &mut self.y);
        self.samples.clear();
        self.samples.extend_from_slice(idx);
        true
    }

    /// The graph's inputs, fed from the buffers, in the allocation of `feeds` (empty).
    fn feeds<'b>(&'b self, mut feeds: Vec<Feed<'b>>) -> Vec<Feed<'b>> {
        let feed = |&is_y: &bool| if is_y { self.y.feed() } else { self.x.feed() };
        feeds.extend(self.roles.iter().map(feed));
        feeds
    }
}

/// The allocations a step borrows into and hands back ([`recycle`]). Empty between steps, they
/// hold borrows of no lifetime in particular: `'static` stands for any.
struct Spare {
    feeds: Vec<Feed<'static>>,
    views: Vec<&'static [f32]>,
    updates: Vec<Update<'static>>,
    grads: Vec<&'static [f32]>,
}

/// Empties a vector of borrows so that its allocation can hold borrows of another lifetime (an
/// in-place collect of an empty iterator keeps the buffer when the layouts agree).
#[allow(clippy::unnecessary_filter_map)] // filter_map is what changes the item type
fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}
