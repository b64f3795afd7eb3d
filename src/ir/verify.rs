//! The IR verifier: run between passes, it checks the invariants every pass relies on.
//!
//! - every input of a node is defined earlier (topological order, SSA);
//! - every node's type is what [`super::shape::infer`] says (where it can say), or one it can
//!   have ([`super::shape::check_given`]: a convolution's input gradient, a pooling's);
//! - `Param` nodes name existing parameters; outputs name existing values;
//! - a second result (`EpilogueGrad`, `UnpoolBiasGrad`, `PoolBeside`, `GruGates`,
//!   `GruRecurGrad`) reads a node that writes it ([`Op::second_result_of`]), and is its only
//!   one of its kind.

use super::{shape, Graph, Op};

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
                            | Op::GlobalAvgPoolGrad
                            | Op::Reshape
                            | Op::EmbeddingGrad
                    );
                    if !needs_given {
                        errors.push(format!("%{i} ({}): {e}", n.op.name()));
                    } else if let Err(e) = shape::check_given(&n.op, &tys, &n.ty) {
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
        if let Some((what, writes)) = n.op.second_result_of() {
            let writer = n.inputs.first().and_then(|v| g.nodes.get(v.index()));
            let kind = std::mem::discriminant(&n.op);
            if !writer.is_some_and(|m| writes(&m.op)) {
                errors.push(format!("%{i} ({}) must read {what}", n.op.name()));
            } else if g.nodes[..i]
                .iter()
                .any(|m| std::mem::discriminant(&m.op) == kind && m.inputs == n.inputs)
            {
                errors.push(format!(
                    "%{i} ({}) is the second for {}",
                    n.op.name(),
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
