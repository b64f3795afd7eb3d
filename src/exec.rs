//! The interface between the runtime and whatever executes a graph: the JIT-compiled kernels
//! (`crate::codegen::Jit`) or the reference interpreter (`crate::interp::Interpreter`).

use crate::ir::{DType, Graph, ValueId};

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
    /// The value of the output named `name` after the last `run` (row-major, full shape for that
    /// run's batch size), or `None` if the graph has no such output.
    fn output(&self, name: &str) -> Option<&[f32]>;
    /// The value of any f32 node after the last `run`, when the executor kept it (`None` for
    /// i32 values and for inputs and parameters, which are the caller's memory). For finding
    /// where a NaN first appeared ([`crate::runtime::train`]'s anomaly detection) and debugging.
    fn value(&self, v: ValueId) -> Option<&[f32]>;
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

/// Checks what every executor must refuse before running: a zero batch, the wrong number of
/// inputs or parameters, an input of the wrong dtype, and any tensor of the wrong size.
pub fn check_feeds(
    graph: &Graph,
    batch: usize,
    inputs: &[Feed<'_>],
    params: &[&[f32]],
) -> Result<(), ExecError> {
    if batch == 0 {
        return Err(ExecError::Other("the batch size must be at least 1".into()));
    }
    // No allocation: this runs before every step.
    let input_nodes = graph.nodes.iter().filter_map(|n| match &n.op {
        crate::ir::Op::Input { .. } => Some(&n.ty),
        _ => None,
    });
    let count = input_nodes.clone().count();
    if inputs.len() != count {
        return Err(ExecError::Other(format!(
            "expected {count} inputs, got {}",
            inputs.len()
        )));
    }
    for (index, (feed, ty)) in inputs.iter().zip(input_nodes).enumerate() {
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
    if params.len() != graph.params.len() {
        return Err(ExecError::Other(format!(
            "expected {} parameters, got {}",
            graph.params.len(),
            params.len()
        )));
    }
    for (p, data) in graph.params.iter().zip(params) {
        if data.len() != p.numel() {
            return Err(ExecError::ParamSize {
                path: p.path.clone(),
                expected: p.numel(),
                found: data.len(),
            });
        }
    }
    Ok(())
}
