//! Dead-code elimination: drops the nodes no output needs and renumbers the rest.
//!
//! `Input` nodes are always kept (they are the graph's interface: executors are fed in the order
//! of [`Graph::inputs`]), and so is the parameter list (a `Param` node may go, its parameter stays).

use super::Pass;
use crate::ir::{Graph, Op, Output, ValueId};

/// The dead-code-elimination pass ([`dce`]).
pub struct Dce;

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }
    fn run(&self, g: &Graph) -> Graph {
        dce(g)
    }
}

/// `g` without the nodes that no output depends on.
pub fn dce(g: &Graph) -> Graph {
    dce_after(g, 0)
}

/// Like [`dce`], but the first `keep` nodes are all kept whether needed or not (autodiff keeps the
/// whole forward graph and prunes only the backward nodes it built).
pub fn dce_after(g: &Graph, keep: usize) -> Graph {
    let n = g.nodes.len();
    let mut live = vec![false; n];
    for o in &g.outputs {
        live[o.value.index()] = true;
    }
    for (i, node) in g.nodes.iter().enumerate() {
        if i < keep || matches!(node.op, Op::Input { .. }) {
            live[i] = true;
        }
    }
    for i in (0..n).rev() {
        if live[i] {
            for v in &g.nodes[i].inputs {
                live[v.index()] = true;
            }
        }
    }
    let mut new_id = vec![ValueId(u32::MAX); n];
    let mut out = Graph {
        name: g.name.clone(),
        training: g.training,
        params: g.params.clone(),
        ..Default::default()
    };
    for (i, node) in g.nodes.iter().enumerate() {
        if live[i] {
            new_id[i] = ValueId(out.nodes.len() as u32);
            let mut node = node.clone();
            for v in &mut node.inputs {
                *v = new_id[v.index()];
            }
            out.nodes.push(node);
        }
    }
    out.outputs = g
        .outputs
        .iter()
        .map(|o| Output {
            name: o.name.clone(),
            value: new_id[o.value.index()],
        })
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Type, UnaryOp};

    #[test]
    fn drops_unused_nodes_and_renumbers() {
        let mut g = Graph::new("t", false);
        let x = g.input("x", Type::f32(true, vec![2]));
        let dead = g.push(Op::Unary(UnaryOp::Exp), vec![x], "dead").unwrap();
        let _unused_input = g.input("y", Type::f32(true, vec![2]));
        let y = g.push(Op::Unary(UnaryOp::Relu), vec![x], "relu").unwrap();
        let z = g
            .push(Op::Unary(UnaryOp::Tanh), vec![dead], "dead too")
            .unwrap();
        let _ = z;
        g.set_output("output", y);
        let d = dce(&g);
        assert_eq!(d.nodes.len(), 3);
        assert_eq!(d.inputs().len(), 2);
        assert_eq!(
            d.node(d.output("output").unwrap()).op,
            Op::Unary(UnaryOp::Relu)
        );
        assert_eq!(d.node(d.output("output").unwrap()).inputs, vec![ValueId(0)]);
        assert!(crate::ir::verify::verify(&d).is_ok());
        // Keeping a prefix keeps the dead forward node but not the one after it.
        assert_eq!(dce_after(&g, 2).nodes.len(), 4);
    }
}
