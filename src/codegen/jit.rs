//! [`Jit`]: runs a graph compiled to Cranelift kernels.
//!
//! Buffers are allocated for a batch size and reallocated only when it changes. Inputs and
//! parameters are not copied: the pointer table points kernels straight at the caller's slices
//! for the duration of one `run`. `Reshape` shares its input's buffer.

use super::fpenv::Flush;
use super::fused_update::FusedUpdates;
use super::gemm::BlockFn;
use super::glue::{lib, KeptRow, Lib, Table};
use super::kernel::{KernelFn, Listing};
use super::lower::{ctx_slot, lower, owner, RowSplit, Scratch, Step, Storage};
use super::profile;
use super::tuner::Tuner;
use super::CodegenError;
use crate::exec::{ExecError, Executor, Feed, HeldParams, Signature, StepCtx, Update};
use crate::ir::print::node_to_string;
use crate::ir::{DType, Graph, Op, OptimizerSpec, ValueId};
use crate::opt::memplan::{Home, Plan};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// Compilation options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JitOptions {
    /// Worker threads for batch-parallel kernels (1 = run everything on the calling thread).
    pub threads: usize,
    /// One buffer per value, so that every value can be read after a run ([`Executor::value`]),
    /// instead of buffers shared by liveness ([`crate::opt::memplan`]), and the products of
    /// epilogue-fused nodes computed as values of their own. For finding where a NaN appeared.
    pub keep_values: bool,
    /// Apply optimizer updates inside the training step when asked
    /// ([`Executor::fuse_updates`]; see [`super::fused_update`]).
    pub fuse_updates: bool,
    /// Products whose left operand is mostly one value (images' background) skip it
    /// ([`super::sparse`]), and gradients masked by a ReLU skip the entries it zeroes
    /// ([`super::masked`]); off, every product runs on the dense GEMM.
    pub sparse: bool,
}

impl Default for JitOptions {
    fn default() -> Self {
        JitOptions {
            threads: 1,
            keep_values: false,
            fuse_updates: true,
            sparse: true,
        }
    }
}

/// A graph compiled to machine code, with its buffers.
pub struct Jit {
    graph: Graph,
    signature: Signature,
    threads: usize,
    /// One thread or all for calls of a few rows ([`super::tuner`]).
    tuner: Tuner,
    steps: Vec<Step>,
    /// The node each step computes.
    step_nodes: Vec<usize>,
    kernels: Vec<KernelFn>,
    lib: &'static Lib,
    /// Whether [`Executor::fuse_updates`] may prepare `updates`.
    fuse: bool,
    /// [`JitOptions::sparse`].
    sparse: bool,
    /// The parameters [`Executor::hold_params`] gave, used by every `run` passed none.
    held: HeldParams,
    /// Per step: whether it is a product whose B is a parameter, and the first row its
    /// compacted product keeps while it holds the parameters.
    kept: Vec<Option<KeptRow>>,
    /// Optimizer updates applied inside the step ([`Executor::fuse_updates`]).
    updates: Option<FusedUpdates>,
    storage: Vec<Storage>,
    /// The slots that are not owned buffers (inputs, parameters, aliases), in order.
    caller_slots: Vec<usize>,
    scratch: Vec<Scratch>,
    /// Where each value lives: the buffers of `bufs` shared by liveness, or one per value.
    plan: Plan,
    /// The plan's buffers.
    bufs: Vec<Vec<f32>>,
    scratch_bufs: Vec<Vec<f32>>,
    /// The batch size the buffers are sized for (0: none yet).
    batch: usize,
    table: Vec<*mut u8>,
    ctx: [u64; 3],
    /// (input number, class count): i32 inputs that index a table or select a class.
    id_checks: Vec<(usize, usize)>,
    /// Output name → node whose buffer holds it (copies for outputs that are inputs or params).
    outputs: Vec<(String, usize)>,
    copies: Vec<(usize, Vec<f32>)>,
    /// Time per step when profiling ([`super::profile`]), reported when dropped.
    times: Option<Vec<profile::Entry>>,
    /// Owns the machine code, which a `JITModule` only unmaps when asked: see `Drop`.
    modules: Vec<cranelift_jit::JITModule>,
}

impl Drop for Jit {
    /// Frees the kernels' code (otherwise every compiled graph leaks it, tens of KB each).
    fn drop(&mut self) {
        if let Some(times) = self.times.take() {
            let g = &self.graph;
            profile::record(times.into_iter().enumerate().map(|(i, e)| {
                let node = node_to_string(g, ValueId(self.step_nodes[i] as u32));
                let updates = match &self.updates {
                    Some(u) if u.updates_at(i) => " (+ optimizer updates)",
                    _ => "",
                };
                (format!("{}: {}{updates}", g.name, node.trim()), e)
            }));
        }
        for module in std::mem::take(&mut self.modules) {
            // SAFETY: the only pointers into this module's code are `self.kernels`, dropped with
            // `self`; no kernel is running, since `run` borrows `self` for its whole duration.
            unsafe { module.free_memory() };
        }
    }
}

// SAFETY: the raw pointers in `table` are rebuilt from owned buffers and the caller's slices at
// the start of every `run` and never dereferenced outside it; the kernels are immutable code.
unsafe impl Send for Jit {}

impl Jit {
    pub fn compile(g: &Graph, opts: &JitOptions) -> Result<Jit, CodegenError> {
        // Every value kept includes the products that epilogues would transform before storing
        // them (where `--detect-anomaly` may find the first infinity): compile those unfused.
        let unfused;
        let g = if opts.keep_values {
            unfused = crate::opt::epilogue::unfuse_epilogues(g);
            &unfused
        } else {
            g
        };
        let kernels = super::lower::kernel_graph(g);
        let g = kernels.as_ref();
        let lib = lib()?;
        let lowered = lower(g, opts.keep_values, Listing::default())?;
        let input_nodes: Vec<usize> = g.inputs().iter().map(|(v, _)| v.index()).collect();
        let mut id_checks = Vec::new();
        for n in &g.nodes {
            let (ids, bound) = match &n.op {
                Op::Embedding => (n.inputs[0], g.ty(n.inputs[1]).dims[0]),
                Op::CrossEntropy | Op::CrossEntropyGrad => (n.inputs[1], g.ty(n.inputs[0]).last()),
                _ => continue,
            };
            if let Some(k) = input_nodes.iter().position(|&i| i == ids.index()) {
                id_checks.push((k, bound));
            }
        }
        let outputs = g
            .outputs
            .iter()
            .map(|o| {
                if o.value.index() >= g.nodes.len() {
                    return Err(CodegenError::Graph(format!(
                        "output {} is not a value",
                        o.name
                    )));
                }
                Ok((o.name.clone(), o.value.index()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let slots = ctx_slot(g) + 1 + lowered.scratch.len();
        let kept = lowered
            .steps
            .iter()
            .map(|s| match s {
                Step::MatMul(m) if !m.tb => {
                    let b = owner(&lowered.storage, m.b);
                    matches!(lowered.storage[b], Storage::Param(_)).then(KeptRow::default)
                }
                _ => None,
            })
            .collect();
        let lowered_steps = lowered.steps.len();
        Ok(Jit {
            signature: Signature::of(g),
            graph: g.clone(),
            threads: opts.threads.max(1),
            tuner: Tuner::default(),
            steps: lowered.steps,
            step_nodes: lowered.step_nodes,
            kernels: lowered.kernels,
            fuse: opts.fuse_updates,
            sparse: opts.sparse,
            held: HeldParams::default(),
            kept,
            updates: None,
            lib,
            caller_slots: (0..lowered.storage.len())
                .filter(|&i| lowered.storage[i] != Storage::Owned)
                .collect(),
            storage: lowered.storage,
            scratch: lowered.scratch,
            bufs: vec![Vec::new(); lowered.plan.buffers.len()],
            plan: lowered.plan,
            scratch_bufs: Vec::new(),
            batch: 0,
            table: vec![std::ptr::null_mut(); slots],
            ctx: [0; 3],
            id_checks,
            outputs,
            copies: Vec::new(),
            times: profile::enabled().then(|| vec![profile::Entry::default(); lowered_steps]),
            modules: lowered.modules,
        })
    }

    /// Steps run per batch: Cranelift kernels, GEMMs and convolutions.
    pub fn kernel_count(&self) -> usize {
        self.steps.len()
    }

    /// The algorithm of each convolution step, by node: `"im2col"`, `"winograd"` (chosen by
    /// `codegen::winograd::plan`) or `"direct"` (`codegen::direct_conv`), for `nnc check
    /// --stats`.
    pub fn conv_algorithms(&self) -> Vec<(usize, &'static str)> {
        let is_conv = |i: usize| {
            matches!(
                self.graph.nodes[i].op,
                Op::Conv2d(_)
                    | Op::Conv2dGradWeight(_)
                    | Op::Conv2dGradWeightUnpool { .. }
                    | Op::WithEpilogue {
                        producer: crate::ir::Producer::Conv2d(_),
                        ..
                    }
            )
        };
        let mut algorithms: Vec<_> = self
            .steps
            .iter()
            .zip(&self.step_nodes)
            .filter_map(|(s, &i)| match s {
                Step::Conv(c) => Some((c.out, "im2col")),
                Step::Winograd(w) => Some((w.out, "winograd")),
                Step::Kernel { .. } | Step::Parts { .. } if is_conv(i) => Some((i, "direct")),
                _ => None,
            })
            .collect();
        // The direct weight gradient is two steps (borders, sums).
        algorithms.dedup();
        algorithms
    }

    /// Where each value lives.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The buffer of an owned value.
    fn buffer(&self, i: usize) -> usize {
        match self.plan.home[i] {
            Home::Buffer(k) => k,
            _ => unreachable!("%{i} owns no buffer"),
        }
    }

    /// (Re)allocates every buffer for `batch`.
    fn allocate(&mut self, batch: usize) {
        self.bufs = self
            .plan
            .buffers
            .iter()
            .map(|b| vec![0.0f32; b.per * if b.batched { batch } else { 1 }])
            .collect();
        for (i, n) in self.graph.nodes.iter().enumerate() {
            if let Op::Const(c) = n.op {
                let k = self.buffer(i);
                self.bufs[k].fill(c);
            }
        }
        self.scratch_bufs = self
            .scratch
            .iter()
            .map(|s| {
                let copies = if s.per_thread { self.threads } else { 1 };
                vec![0.0f32; s.per * if s.batched { batch } else { 1 } * copies]
            })
            .collect();
        for i in 0..self.storage.len() {
            if self.storage[i] == Storage::Owned {
                let k = self.buffer(i);
                self.table[i] = self.bufs[k].as_mut_ptr() as *mut u8;
            }
        }
        let c = ctx_slot(&self.graph);
        for (k, s) in self.scratch_bufs.iter_mut().enumerate() {
            self.table[c + 1 + k] = s.as_mut_ptr() as *mut u8;
        }
        self.batch = batch;
    }

    fn validate(
        &self,
        batch: usize,
        inputs: &[Feed<'_>],
        params: &[&[f32]],
    ) -> Result<(), ExecError> {
        self.signature.check(batch, inputs, params)?;
        for &(k, bound) in &self.id_checks {
            if let Feed::I32(ids) = inputs[k] {
                if let Some(bad) = ids.iter().find(|&&id| id < 0 || id as usize >= bound) {
                    return Err(ExecError::Other(format!(
                        "input {k} holds id {bad}, outside 0..{bound}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Runs a row-independent kernel on `threads` slices of the batch, each with its own copy of
/// the table whose batched slots point at the slice's first row.
///
/// # Safety
/// As for running the kernel on the whole batch; the slices write disjoint rows and their own
/// parts of per-thread scratch.
unsafe fn run_split(
    kernel: KernelFn,
    table: &[*mut u8],
    split: &RowSplit,
    batch: usize,
    threads: usize,
) {
    let chunk = batch.div_ceil(threads);
    // Addresses as integers, to cross the thread boundary.
    let table: Vec<usize> = table.iter().map(|p| *p as usize).collect();
    let sub_table = |t: usize| -> (Vec<usize>, usize) {
        let lo = t * chunk;
        let mut sub = table.clone();
        for &(slot, per) in &split.batched {
            sub[slot] += lo * per * 4;
        }
        for &(slot, len) in &split.per_thread {
            sub[slot] += t * len * 4;
        }
        (sub, chunk.min(batch - lo))
    };
    super::workers::run(batch.div_ceil(chunk), &|t| {
        let (sub, n) = sub_table(t);
        // SAFETY: see the function's contract.
        unsafe { kernel(sub.as_ptr() as *const *mut u8, n as i64) };
    });
}

/// Runs `kernel` once per part (see [`Step::Parts`]), on the workers when `threads` > 1.
///
/// # Safety
/// As [`run_split`]: the table holds the buffers of a validated `batch`, and each part's moved
/// slots stay inside their buffers and are written by that part alone.
unsafe fn run_parts(
    kernel: KernelFn,
    table: &[*mut u8],
    parts: usize,
    moves: &[(usize, usize)],
    batch: usize,
    threads: usize,
) {
    // Addresses as integers, to cross the thread boundary.
    let table: Vec<usize> = table.iter().map(|p| *p as usize).collect();
    let part = |t: usize| {
        let mut sub = table.clone();
        for &(slot, bytes) in moves {
            sub[slot] += t * bytes;
        }
        // SAFETY: see the function's contract.
        unsafe { kernel(sub.as_ptr() as *const *mut u8, batch as i64) };
    };
    if threads > 1 {
        super::workers::run(parts, &part);
    } else {
        (0..parts).for_each(part);
    }
}

impl Jit {
    /// Runs every step; with `updates`, the prepared optimizer updates after the steps that
    /// complete their gradients. Whether those gradients were finite. `params` are the held
    /// ones when `held`, so products by them may keep what they derive from them.
    #[allow(clippy::too_many_arguments)]
    fn execute(
        &mut self,
        batch: usize,
        inputs: &[Feed<'_>],
        params: &[&[f32]],
        held: bool,
        ctx: StepCtx,
        mut updates: Option<&mut [Update<'_>]>,
    ) -> Result<bool, ExecError> {
        self.validate(batch, inputs, params)?;
        let _flush = Flush::on();
        if batch != self.batch {
            self.allocate(batch);
        }
        self.ctx = [ctx.seed, ctx.step, ctx.first];
        // Owned buffers and scratch were placed in the table by `allocate`; the caller's slices
        // (and what aliases them) may move from one run to the next.
        for &i in &self.caller_slots {
            self.table[i] = match self.storage[i] {
                Storage::Input(k) => match inputs[k] {
                    Feed::F32(x) => x.as_ptr() as *mut u8,
                    Feed::I32(x) => x.as_ptr() as *mut u8,
                },
                Storage::Param(k) => params[k].as_ptr() as *mut u8,
                Storage::Alias(j) => self.table[j],
                Storage::Owned => continue,
            };
        }
        self.table[ctx_slot(&self.graph)] = self.ctx.as_mut_ptr() as *mut u8;
        let table = Table(&self.table);
        let fused = match (&self.updates, updates.as_deref()) {
            (Some(f), Some(u)) => {
                f.check(params, u).map_err(ExecError::Other)?;
                Some(f)
            }
            _ => None,
        };
        // Inference of a few rows: one thread or all, whichever the tuner found faster here.
        let (threads, timed) = match updates {
            None => self.tuner.threads(batch, self.threads),
            Some(_) => (self.threads, false),
        };
        let began = timed.then(Instant::now);
        let mut finite = true;
        let gemm_finite = AtomicBool::new(true);
        for (i, step) in self.steps.iter().enumerate() {
            let start = self.times.is_some().then(Instant::now);
            // SAFETY: every slot a step reads or writes points at a live buffer of the size its
            // type has for `batch` (validated above); steps write only owned buffers.
            unsafe {
                match step {
                    Step::Kernel { k, rows } => {
                        let rows = rows.as_ref().filter(|_| threads > 1);
                        match (rows, rows.and_then(|s| s.channels_for(threads))) {
                            (Some(split), _) if batch >= split.min_batch => {
                                run_split(self.kernels[*k], &self.table, split, batch, threads)
                            }
                            (_, Some(c)) => run_parts(
                                self.kernels[c.k],
                                &self.table,
                                c.parts,
                                &c.moves,
                                batch,
                                threads,
                            ),
                            _ => (self.kernels[*k])(self.table.as_ptr(), batch as i64),
                        }
                    }
                    Step::Parts {
                        k,
                        parts,
                        moves,
                        min_batch,
                    } => {
                        let threads = if batch < *min_batch { 1 } else { threads };
                        run_parts(self.kernels[*k], &self.table, *parts, moves, batch, threads)
                    }
                    Step::MatMul(m) => {
                        // A weight gradient's update runs on each block the GEMM finishes.
                        let hook = match (fused, updates.as_deref_mut()) {
                            (Some(f), Some(u)) => f.gemm_hook(i, m.n, params, u, &gemm_finite),
                            _ => None,
                        };
                        let hook = hook.as_ref().map(|h| h as &BlockFn);
                        let kept = self.kept[i].as_ref().filter(|_| held);
                        m.run(table, batch, threads, self.sparse, kept, self.lib, hook)
                            .map_err(ExecError::Other)?
                    }
                    Step::Conv(c) => c
                        .run(table, batch, threads, self.lib)
                        .map_err(ExecError::Other)?,
                    Step::Winograd(w) => {
                        // Weights held only where they are a parameter (not a graph input).
                        let weights = owner(&self.storage, w.ins[1]);
                        let held = held && matches!(self.storage[weights], Storage::Param(_));
                        let flags = (held, self.sparse);
                        w.run(table, batch, threads, self.lib, &self.kernels, flags)
                            .map_err(ExecError::Other)?
                    }
                }
            }
            if let (Some(f), Some(u)) = (fused, updates.as_deref_mut()) {
                if f.completes(i) {
                    // SAFETY: step i has completed the gradients it is listed for; the table
                    // holds this run's buffers; `check` passed.
                    finite &=
                        unsafe { f.after(i, &self.table, params, u) }.map_err(ExecError::Other)?;
                }
            }
            if let (Some(start), Some(times)) = (start, self.times.as_mut()) {
                times[i].calls += 1;
                times[i].time += start.elapsed();
            }
        }
        finite &= gemm_finite.into_inner();
        if let Some(began) = began {
            self.tuner.record(batch, threads, began.elapsed());
        }
        // Outputs that are the caller's memory are copied: it may be gone after `run`.
        self.copies.clear();
        for (_, node) in &self.outputs {
            let owned = owner(&self.storage, *node);
            if matches!(self.storage[owned], Storage::Input(_) | Storage::Param(_)) {
                let n = self.graph.nodes[*node].ty.numel(batch);
                // SAFETY: the slot points at the caller's slice of n elements, alive during run.
                let data =
                    unsafe { std::slice::from_raw_parts(self.table[*node] as *const f32, n) };
                self.copies.push((*node, data.to_vec()));
            }
        }
        Ok(finite)
    }
}

impl Executor for Jit {
    fn graph(&self) -> &Graph {
        &self.graph
    }

    fn run(
        &mut self,
        batch: usize,
        inputs: &[Feed<'_>],
        params: &[&[f32]],
        ctx: StepCtx,
    ) -> Result<(), ExecError> {
        // Out of `self` while `execute` borrows it; the held vectors themselves do not move.
        let held = std::mem::take(&mut self.held);
        let refs = held.for_run(params);
        let result = match &refs {
            Some(refs) => self.execute(batch, inputs, refs, true, ctx, None),
            None => self.execute(batch, inputs, params, false, ctx, None),
        };
        drop(refs);
        self.held = held;
        result.map(|_| ())
    }

    fn hold_params(&mut self, params: Vec<Vec<f32>>) -> Result<(), ExecError> {
        self.held.hold(&self.signature, params)?;
        for kept in self.kept.iter_mut().flatten() {
            *kept = KeptRow::default();
        }
        for step in &self.steps {
            if let Step::Winograd(w) = step {
                w.forget_held();
            }
        }
        Ok(())
    }

    fn fuse_updates(&mut self, spec: &OptimizerSpec, params: &[usize]) -> Result<bool, ExecError> {
        if !self.fuse {
            return Ok(false);
        }
        let fused = FusedUpdates::new(
            &self.graph,
            &self.storage,
            &self.steps,
            &self.step_nodes,
            spec,
            params,
        )
        .map_err(|e| ExecError::Other(e.to_string()))?;
        self.updates = Some(fused);
        Ok(true)
    }

    fn run_updating(
        &mut self,
        batch: usize,
        inputs: &[Feed<'_>],
        params: &[&[f32]],
        ctx: StepCtx,
        updates: &mut [Update<'_>],
    ) -> Result<bool, ExecError> {
        // Their count and sizes are checked by `execute` (`FusedUpdates::check`).
        if self.updates.is_none() {
            return Err(ExecError::Other(
                "run_updating needs the updates prepared by fuse_updates".into(),
            ));
        }
        self.execute(batch, inputs, params, false, ctx, Some(updates))
    }

    fn output(&self, name: &str) -> Option<&[f32]> {
        let (_, node) = self.outputs.iter().find(|(n, _)| n == name)?;
        if self.graph.nodes[*node].ty.dtype != DType::F32 {
            return None;
        }
        if let Some((_, data)) = self.copies.iter().find(|(n, _)| n == node) {
            return Some(data);
        }
        self.value(ValueId(*node as u32))
    }

    fn value(&self, v: ValueId) -> Option<&[f32]> {
        let ty = &self.graph.nodes.get(v.index())?.ty;
        if ty.dtype != DType::F32 || self.batch == 0 {
            return None;
        }
        let slot = owner(&self.storage, v.index());
        match self.storage[slot] {
            Storage::Owned if self.plan.kept(slot) => {
                Some(&self.bufs[self.buffer(slot)][..ty.numel(self.batch)])
            }
            _ => None,
        }
    }
}
