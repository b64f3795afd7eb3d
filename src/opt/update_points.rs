//! Where each optimizer update runs in a training step: right after the node that completes
//! the parameter's gradient (`grad:<path>`, through any reshapes, which share their input's
//! memory, and second results, which the node they read writes), so that the update reads the
//! gradient while it is still in cache and the training loop needs no second sweep over the
//! gradients ([`crate::codegen::Jit`] applies them there; `nnc ir --stage fused` lists them).

use crate::ir::print::node_to_string;
use crate::ir::{Graph, Op, ValueId};
use std::fmt::Write;

/// For each trainable parameter of the training graph `g` that has a gradient output, in the
/// order of [`Graph::params`]: its index and the node whose completion the update waits for.
pub fn update_points(g: &Graph) -> Vec<(usize, ValueId)> {
    g.params
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.frozen)
        .filter_map(|(i, p)| {
            let mut v = g.output(&format!("grad:{}", p.path))?;
            // A second result is complete with the node that writes it.
            while matches!(g.node(v).op, Op::Reshape) || g.node(v).op.second_result_of().is_some() {
                v = g.node(v).inputs[0];
            }
            Some((i, v))
        })
        .collect()
}

/// `updates <graph>: <n> parameters` and one line per parameter: its path and the node after
/// which its update runs.
pub fn updates_to_string(g: &Graph) -> String {
    let points = update_points(g);
    let mut s = String::new();
    let _ = writeln!(s, "updates {}: {} parameters", g.name, points.len());
    for (p, v) in points {
        let _ = writeln!(s, "  {} after {}", g.params[p].path, node_to_string(g, v));
    }
    s
}

/// What `nnc ir --stage fused` says of the updates of a run that clips its gradients
/// (`clip_grad_norm: max`): they run after the backward pass, on the clipped gradients.
pub fn updates_after_backward_to_string(g: &Graph, max: f64) -> String {
    format!(
        "updates {}: {} parameters, after the backward pass (`clip_grad_norm: {max}` needs every \
         gradient's norm before any parameter moves)\n",
        g.name,
        update_points(g).len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Init, Param, Type};

    #[test]
    fn an_update_waits_for_the_node_its_gradient_reshapes() {
        let mut g = Graph::new("t", true);
        let x = g.input("x", Type::f32(false, vec![6]));
        let w = g.add_param(Param {
            path: "w".into(),
            dims: vec![2, 3],
            init: Init::Zeros,
            frozen: false,
        });
        let frozen = g.add_param(Param {
            path: "f".into(),
            dims: vec![6],
            init: Init::Zeros,
            frozen: true,
        });
        let d = g
            .push(Op::Unary(crate::ir::UnaryOp::Neg), vec![x], "d")
            .unwrap();
        let r = g.push_typed(Op::Reshape, vec![d], Type::f32(false, vec![2, 3]), "r");
        g.set_output("grad:w", r);
        g.set_output("grad:f", frozen);
        let _ = w;
        assert_eq!(update_points(&g), vec![(0, d)]);
        let text = updates_to_string(&g);
        assert!(
            text.starts_with("updates t: 1 parameters\n  w after %"),
            "{text}"
        );
    }
}
