//! The IR verifier: run between passes, it checks the invariants every pass relies on.
//!
//! - every input of a node is defined earlier (topological order, SSA);
//! - every node's type is what [`super::shape::infer`] says (where it can say);
//! - `Param` nodes name existing parameters; outputs name existing values;
//! - an `EpilogueGrad` reads a node with a loss epilogue, and is its only one.

use super::{shape, Epilogue, Graph, Op};

/// All violations found, as messages naming the node.
pub fn verify(g: &Graph) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        for v in &n.inputs {
            if v.index() >= i {
                errors.push(format!(
                    "%{i} ({}) uses {v}, which is not defined before it",
                    n.op.name()
                ));
            }
        }
        if errors.is_empty() {
            let tys: Vec<_> = n.inputs.iter().map(|v| g.ty(*v)).collect();
            match shape::infer(&n.op, &tys, &g.params) {
                Ok(t) if t != n.ty => errors.push(format!(
                    "%{i} ({}) has type {}, but its inputs give {t}",
                    n.op.name(),
                    n.ty
                )),
                Ok(_) => {}
                Err(e) => {
                    let needs_given = matches!(
                        n.op,
                        Op::Input { .. }
                            | Op::Const(_)
                            | Op::Conv2dGradInput(_)
                            | Op::AvgPoolGrad(_)
                            | Op::Reshape
                            | Op::EmbeddingGrad
                    );
                    if !needs_given {
                        errors.push(format!("%{i} ({}): {e}", n.op.name()));
                    } else if matches!(n.op, Op::Reshape)
                        && n.inputs.len() == 1
                        && (g.ty(n.inputs[0]).per_sample() != n.ty.per_sample()
                            || g.ty(n.inputs[0]).batched != n.ty.batched)
                    {
                        errors.push(format!(
                            "%{i} reshape changes the element count: {} -> {}",
                            g.ty(n.inputs[0]),
                            n.ty
                        ));
                    }
                }
            }
        }
        if let Op::PoolBeside(_) = n.op {
            let read = n.inputs.first().and_then(|v| g.nodes.get(v.index()));
            let conv = |m: &crate::ir::Node| {
                matches!(
                    m.op,
                    Op::Conv2d(_)
                        | Op::WithEpilogue {
                            producer: crate::ir::Producer::Conv2d(_),
                            epi: Epilogue::Chain(_),
                        }
                )
            };
            if !read.is_some_and(conv) {
                errors.push(format!("%{i} (maxpool_beside) must read a convolution"));
            } else if g.nodes[..i]
                .iter()
                .any(|m| matches!(m.op, Op::PoolBeside(_)) && m.inputs == n.inputs)
            {
                errors.push(format!(
                    "%{i} (maxpool_beside) is the second for {}",
                    n.inputs[0]
                ));
            }
        }
        if let Op::UnpoolBiasGrad = n.op {
            let read = n.inputs.first().and_then(|v| g.nodes.get(v.index()));
            if !read.is_some_and(|m| matches!(m.op, Op::Conv2dGradWeightUnpool { .. })) {
                errors.push(format!(
                    "%{i} (unpool_bias_grad) must read a conv2d_grad_weight_unpool"
                ));
            } else if g.nodes[..i]
                .iter()
                .any(|m| matches!(m.op, Op::UnpoolBiasGrad) && m.inputs == n.inputs)
            {
                errors.push(format!(
                    "%{i} (unpool_bias_grad) is the second for {}",
                    n.inputs[0]
                ));
            }
        }
        if let Op::EpilogueGrad = n.op {
            let loss_node = n.inputs.first().and_then(|v| g.nodes.get(v.index()));
            let is_loss = |m: &crate::ir::Node| {
                matches!(
                    m.op,
                    Op::WithEpilogue {
                        epi: Epilogue::Loss(_),
                        ..
                    }
                )
            };
            if !loss_node.is_some_and(is_loss) {
                errors.push(format!(
                    "%{i} (epilogue_grad) must read a node with a loss epilogue"
                ));
            } else if g.nodes[..i]
                .iter()
                .any(|m| matches!(m.op, Op::EpilogueGrad) && m.inputs == n.inputs)
            {
                errors.push(format!(
                    "%{i} (epilogue_grad) is the second for {}",
                    n.inputs[0]
                ));
            }
        }
        if let Op::Param(p) = n.op {
            if p.index() >= g.params.len() {
                errors.push(format!(
                    "%{i} reads parameter #{} of {}",
                    p.0,
                    g.params.len()
                ));
            }
        }
    }
    for o in &g.outputs {
        if o.value.index() >= g.nodes.len() {
            errors.push(format!("output {} = {} is not defined", o.name, o.value));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
