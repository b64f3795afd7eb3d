//! [`Interpreter`]: the reference interpreter behind the [`Executor`] interface (f32 in and out,
//! f64 inside), so the runtime and the tests can swap it for the JIT.

use crate::exec::{ExecError, Executor, Feed, HeldParams, Signature, StepCtx};
use crate::ir::{Graph, Op, ValueId};

pub struct Interpreter {
    graph: Graph,
    signature: Signature,
    /// Every node's value after the last run.
    values: Vec<Vec<f32>>,
    /// The parameters [`Executor::hold_params`] gave, used by every `run` passed none.
    held: HeldParams,
}

impl Interpreter {
    pub fn new(graph: Graph) -> Interpreter {
        Interpreter {
            signature: Signature::of(&graph),
            graph,
            values: Vec::new(),
            held: HeldParams::default(),
        }
    }
}

impl Executor for Interpreter {
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
        let held = self.held.for_run(params);
        let params = held.as_deref().unwrap_or(params);
        self.signature.check(batch, inputs, params)?;
        let ins: Vec<Vec<f64>> = inputs
            .iter()
            .map(|feed| match feed {
                Feed::F32(x) => x.iter().map(|&v| v as f64).collect(),
                Feed::I32(x) => x.iter().map(|&v| v as f64).collect(),
            })
            .collect();
        let ps: Vec<Vec<f64>> = params
            .iter()
            .map(|p| p.iter().map(|&v| v as f64).collect())
            .collect();
        let vals = super::eval(&self.graph, batch, &ins, &ps, ctx).map_err(ExecError::Other)?;
        self.values = vals
            .iter()
            .map(|v| v.iter().map(|&x| x as f32).collect())
            .collect();
        Ok(())
    }

    fn hold_params(&mut self, params: Vec<Vec<f32>>) -> Result<(), ExecError> {
        self.held.hold(&self.signature, params)
    }

    fn output(&self, name: &str) -> Option<&[f32]> {
        let o = self.graph.outputs.iter().find(|o| o.name == name)?;
        self.values.get(o.value.index()).map(Vec::as_slice)
    }

    fn value(&self, v: ValueId) -> Option<&[f32]> {
        match self.graph.nodes.get(v.index())?.op {
            Op::Input { .. } | Op::Param(_) => None,
            _ => self.values.get(v.index()).map(Vec::as_slice),
        }
    }
}
