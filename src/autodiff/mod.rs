//! Reverse-mode automatic differentiation as a pass over the IR.
//!
//! [`grad`] appends to a graph with a scalar `loss` output the nodes computing the gradient of
//! the loss with respect to every trainable parameter. Each forward node's vector-Jacobian
//! product is one small rule ([`rules`]); gradients of values with several users are summed with
//! `Binary(Add)`. Only values that depend on a trainable parameter get a gradient, and the
//! backward nodes no output needs are removed at the end ([`crate::opt::dce`]).

pub mod gradcheck;
mod rules;

use crate::ir::verify::verify;
use crate::ir::{BinaryOp, DType, Graph, Op, ParamId, Type, ValueId};
use crate::opt::dce::dce_after;

/// The training graph for `g`: its nodes, then the backward nodes, with its outputs followed by
/// `grad:<path>` for every trainable parameter, in the order of `g.params`.
pub fn grad(g: &Graph) -> Result<Graph, String> {
    let loss = g
        .output("loss")
        .ok_or("the graph has no `loss` output to differentiate")?;
    if *g.ty(loss) != Type::scalar() {
        return Err(format!(
            "the loss must be a scalar f32[], found {}",
            g.ty(loss)
        ));
    }
    let mut b = Backward::new(g);
    // The seed: dloss/dloss = 1.
    if b.wants(loss) {
        let seed =
            b.g.push_typed(Op::Const(1.0), vec![], Type::scalar(), "d loss");
        b.grads[loss.index()] = Some(seed);
    }
    for i in (0..b.forward_len).rev() {
        let v = ValueId(i as u32);
        if let Some(dy) = b.grads[i] {
            if b.g.node(v).inputs.iter().any(|x| b.wants(*x)) {
                rules::vjp(&mut b, v, dy)?;
            }
        }
    }
    // The forward nodes reading each parameter, found in one pass (not one per parameter).
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); g.params.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        if let Op::Param(p) = n.op {
            readers[p.index()].push(i);
        }
    }
    let mut grads = Vec::new();
    for (p, readers) in readers.iter().enumerate() {
        let p = ParamId(p as u32);
        if !g.params[p.index()].frozen {
            let d = b.param_grad(p, readers)?;
            grads.push((format!("grad:{}", g.params[p.index()].path), d));
        }
    }
    b.g.set_outputs(grads);
    let out = dce_after(&b.g, b.forward_len);
    verify(&out).map_err(|e| format!("autodiff built an invalid graph: {}", e.join("; ")))?;
    Ok(out)
}

/// The state of the pass: the graph being extended and the gradient accumulated so far for each
/// forward value.
struct Backward {
    g: Graph,
    /// Number of forward nodes (the backward nodes come after).
    forward_len: usize,
    /// Whether each forward value depends on a trainable parameter (only those get gradients).
    depends: Vec<bool>,
    grads: Vec<Option<ValueId>>,
}

impl Backward {
    fn new(g: &Graph) -> Backward {
        let mut depends = vec![false; g.nodes.len()];
        for (i, n) in g.nodes.iter().enumerate() {
            depends[i] = match n.op {
                Op::Param(p) => g.params.get(p.index()).is_some_and(|p| !p.frozen),
                _ => n.ty.dtype == DType::F32 && n.inputs.iter().any(|v| depends[v.index()]),
            };
        }
        Backward {
            g: g.clone(),
            forward_len: g.nodes.len(),
            depends,
            grads: vec![None; g.nodes.len()],
        }
    }

    /// Whether forward value `v` needs a gradient.
    fn wants(&self, v: ValueId) -> bool {
        v.index() < self.forward_len && self.depends[v.index()]
    }

    /// The label of backward nodes computing the gradient of `v`: `grad <path>` for a parameter,
    /// `d <label>` otherwise.
    fn label(&self, v: ValueId) -> String {
        let n = self.g.node(v);
        match n.op {
            Op::Param(p) => format!("grad {}", self.g.params[p.index()].path),
            _ if n.label.is_empty() => format!("d {v}"),
            _ => format!("d {}", n.label),
        }
    }

    /// Appends a backward node contributing to the gradient of `of`, type inferred.
    fn push(&mut self, of: ValueId, op: Op, inputs: Vec<ValueId>) -> Result<ValueId, String> {
        let label = self.label(of);
        self.g.push(op, inputs, label)
    }

    /// Appends a backward node of a given type (ops whose type cannot be inferred).
    fn push_typed(&mut self, of: ValueId, op: Op, inputs: Vec<ValueId>, ty: Type) -> ValueId {
        let label = self.label(of);
        self.g.push_typed(op, inputs, ty, label)
    }

    fn constant(&mut self, of: ValueId, c: f32) -> ValueId {
        self.push_typed(of, Op::Const(c), vec![], Type::scalar())
    }

    /// Adds `d` to the gradient of `v` (no-op when `v` needs none).
    fn accumulate(&mut self, v: ValueId, d: ValueId) -> Result<(), String> {
        if !self.wants(v) {
            return Ok(());
        }
        let sum = match self.grads[v.index()] {
            None => d,
            Some(prev) => self.push(v, Op::Binary(BinaryOp::Add), vec![prev, d])?,
        };
        self.grads[v.index()] = Some(sum);
        Ok(())
    }

    /// The gradient of parameter `p`: the sum over every node reading it (`readers`, the forward
    /// nodes `Op::Param(p)`), or zero when the loss does not depend on it.
    fn param_grad(&mut self, p: ParamId, readers: &[usize]) -> Result<ValueId, String> {
        let mut total: Option<ValueId> = None;
        for &i in readers {
            if let Some(d) = self.grads[i] {
                total = Some(match total {
                    None => d,
                    Some(t) => {
                        self.push(ValueId(i as u32), Op::Binary(BinaryOp::Add), vec![t, d])?
                    }
                });
            }
        }
        if let Some(t) = total {
            return Ok(t);
        }
        // The loss does not depend on this parameter: its gradient is zero, built as param · 0 so
        // that it has the parameter's type without a dedicated "zeros" op.
        let param = match self.g.param_node(p) {
            Some(v) => v,
            None => {
                let ty = self.g.params[p.index()].ty();
                let path = self.g.params[p.index()].path.clone();
                self.g.push_typed(Op::Param(p), vec![], ty, path)
            }
        };
        let zero = self.constant(param, 0.0);
        self.push(param, Op::Binary(BinaryOp::Mul), vec![param, zero])
    }
}
