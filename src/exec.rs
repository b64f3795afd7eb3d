//! The interface between the runtime and whatever executes a graph: the JIT-compiled kernels
//! (`crate::codegen::Jit`) or the reference interpreter (`crate::interp::Interpreter`).

use crate::ir::{DType, Graph, OptimizerSpec, Type, ValueId};

/// One batch of one graph input, in the order of [`Graph::inputs`].
#[derive(Clone, Copy, Debug)]
pub enum Feed<'a> {
    F32(&'a [f32]),
    I32(&'a [i32]),
}

impl Feed<'_> {
    pub fn len(&self) -> usize {
        match self {
            Feed::F32(x) => x.len(),
            Feed::I32(x) => x.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Per-step context: what random ops (dropout) need to be reproducible.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepCtx {
    pub seed: u64,
    pub step: u64,
    /// Where this batch's first sample sits in the step's whole batch: a rank of a data-parallel
    /// run feeds only its part, and dropout masks follow each sample's place in the whole batch,
    /// so that they do not depend on how the batch is split (0 for a whole batch).
    pub first: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("input {index} has {found} elements, expected {expected}")]
    InputSize {
        index: usize,
        expected: usize,
        found: usize,
    },
    #[error("parameter {path} has {found} elements, expected {expected}")]
    ParamSize {
        path: String,
        expected: usize,
        found: usize,
    },
    #[error("{0}")]
    Other(String),
}

/// Runs a graph batch by batch.
pub trait Executor {
    /// The graph this executor runs.
    fn graph(&self) -> &Graph;
    /// Runs the whole graph on one batch. `inputs` follow [`Graph::inputs`], `params` follow
    /// [`Graph::params`] (each the parameter's elements, row-major).
    fn run(
        &mut self,
        batch: usize,
        inputs: &[Feed<'_>],
        params: &[&[f32]],
        ctx: StepCtx,
    ) -> Result<(), ExecError>;
    /// Takes `params` (following [`Graph::params`]) as the parameters of every later `run`
    /// that is passed none (`&[]`): inference with fixed weights (`nnc predict`, `nnc sample`,
    /// `nnc bench`'s latency). An executor may keep what it derives from parameters it owns:
    /// the JIT keeps the first row of each batch-1 product compacted around a background other
    /// than 0 (`codegen::sparse`), which would otherwise cost a dense product per call. A `run`
    /// passed parameters still runs on those. An executor that cannot hold them says so.
    fn hold_params(&mut self, _params: Vec<Vec<f32>>) -> Result<(), ExecError> {
        Err(ExecError::Other(
            "this executor does not hold parameters: pass them to each run".into(),
        ))
    }
    /// The value of the output named `name` after the last `run` (row-major, full shape for that
    /// run's batch size), or `None` if the graph has no such output.
    fn output(&self, name: &str) -> Option<&[f32]>;
    /// The value of any f32 node after the last `run`, when the executor kept it (`None` for
    /// i32 values and for inputs and parameters, which are the caller's memory). For finding
    /// where a NaN first appeared ([`crate::runtime::train`]'s anomaly detection) and debugging.
    fn value(&self, v: ValueId) -> Option<&[f32]>;
    /// Prepares [`Executor::run_updating`]: optimizer `spec` for the parameters `params`
    /// (indices into [`Graph::params`], each with its gradient output `grad:<path>`). `false`
    /// when this executor cannot apply updates inside a step; the caller then applies them
    /// itself from the gradient outputs after `run`.
    fn fuse_updates(
        &mut self,
        _spec: &OptimizerSpec,
        _params: &[usize],
    ) -> Result<bool, ExecError> {
        Ok(false)
    }
    /// [`Executor::run`], applying each prepared update as soon as its gradient is computed
    /// (while it is still in cache): parameter `k` of the preparation is read from `params`, and
    /// its new value written to `updates[k].next`, so that the caller still holds the step's
    /// parameters when the step turns out not finite. Returns whether every gradient was finite.
    fn run_updating(
        &mut self,
        _batch: usize,
        _inputs: &[Feed<'_>],
        _params: &[&[f32]],
        _ctx: StepCtx,
        _updates: &mut [Update<'_>],
    ) -> Result<bool, ExecError> {
        Err(ExecError::Other(
            "this executor does not apply optimizer updates".into(),
        ))
    }
}

/// The parameters an executor holds ([`Executor::hold_params`]).
#[derive(Debug, Default)]
pub struct HeldParams(Option<Vec<Vec<f32>>>);

impl HeldParams {
    /// Holds `params`, once they fit `signature`.
    pub fn hold(&mut self, signature: &Signature, params: Vec<Vec<f32>>) -> Result<(), ExecError> {
        let refs: Vec<&[f32]> = params.iter().map(Vec::as_slice).collect();
        signature.check_params(&refs)?;
        self.0 = Some(params);
        Ok(())
    }

    /// What a run passed `params` runs on instead: the held parameters when it was passed none
    /// and some are held, else `None` (the run's own).
    pub fn for_run(&self, params: &[&[f32]]) -> Option<Vec<&[f32]>> {
        let held = self.0.as_ref().filter(|_| params.is_empty())?;
        Some(held.iter().map(Vec::as_slice).collect())
    }
}

/// One parameter's update during a step ([`Executor::run_updating`]).
pub struct Update<'a> {
    /// Receives the updated parameter.
    pub next: &'a mut [f32],
    /// The optimizer's state buffers for the parameter, updated in place.
    pub state: &'a mut [Vec<f32>],
    pub hyper: UpdateHyper,
}

/// What changes from one optimizer step to the next (the rest of the optimizer's settings are
/// fixed for a run and compiled into the update kernel).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UpdateHyper {
    /// The learning rate for this step and this parameter (schedule and `lr_scale` applied).
    pub lr: f32,
    /// 1-based step number (Adam's bias correction).
    pub step: u64,
}

/// One optimizer's update rule applied to one parameter tensor.
pub trait Updater {
    /// Number of state buffers, each the size of the parameter: SGD 0 (or 1 with momentum), Adam 2.
    fn state_buffers(&self) -> usize;
    /// param ← update(param, grad, state). `state` has `state_buffers()` zero-initialized buffers.
    fn update(&self, param: &mut [f32], grad: &[f32], state: &mut [Vec<f32>], h: UpdateHyper);
}

/// What every executor must refuse before running, gathered once per graph: a zero batch, the
/// wrong number of inputs or parameters, an input of the wrong dtype, and any tensor of the
/// wrong size ([`Signature::check`] runs before every step and allocates nothing).
#[derive(Clone, Debug)]
pub struct Signature {
    inputs: Vec<Type>,
    /// Path and element count of every parameter.
    params: Vec<(String, usize)>,
}

impl Signature {
    pub fn of(graph: &Graph) -> Signature {
        Signature {
            inputs: graph
                .inputs()
                .iter()
                .map(|(v, _)| graph.ty(*v).clone())
                .collect(),
            params: graph
                .params
                .iter()
                .map(|p| (p.path.clone(), p.numel()))
                .collect(),
        }
    }

    /// Whether `inputs` and `params` fit the graph for `batch`.
    pub fn check(
        &self,
        batch: usize,
        inputs: &[Feed<'_>],
        params: &[&[f32]],
    ) -> Result<(), ExecError> {
        if batch == 0 {
            return Err(ExecError::Other("the batch size must be at least 1".into()));
        }
        if inputs.len() != self.inputs.len() {
            return Err(ExecError::Other(format!(
                "expected {} inputs, got {}",
                self.inputs.len(),
                inputs.len()
            )));
        }
        for (index, (feed, ty)) in inputs.iter().zip(&self.inputs).enumerate() {
            let dtype_ok = matches!(
                (feed, ty.dtype),
                (Feed::F32(_), DType::F32) | (Feed::I32(_), DType::I32)
            );
            if !dtype_ok {
                return Err(ExecError::Other(format!(
                    "input {index} must be {}",
                    ty.dtype
                )));
            }
            if feed.len() != ty.numel(batch) {
                return Err(ExecError::InputSize {
                    index,
                    expected: ty.numel(batch),
                    found: feed.len(),
                });
            }
        }
        self.check_params(params)
    }

    /// Whether `params` fit the graph's parameters.
    pub fn check_params(&self, params: &[&[f32]]) -> Result<(), ExecError> {
        if params.len() != self.params.len() {
            return Err(ExecError::Other(format!(
                "expected {} parameters, got {}",
                self.params.len(),
                params.len()
            )));
        }
        for ((path, n), data) in self.params.iter().zip(params) {
            if data.len() != *n {
                return Err(ExecError::ParamSize {
                    path: path.clone(),
                    expected: *n,
                    found: data.len(),
                });
            }
        }
        Ok(())
    }
}
