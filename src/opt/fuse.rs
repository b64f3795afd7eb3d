//! Fusion of elementwise chains: a bias add or unary op whose only reader is a unary op joins
//! that op in one [`Op::Fused`] node, so the chain reads its input once and writes only its
//! last value (`conv → bias_add → relu` makes one pass over the activation instead of two).
//!
//! Runs after autodiff (fused nodes have no gradient rule). A value is absorbed only when the
//! next op of the chain is its single reader and it is no output, so nothing that the backward
//! pass or the caller reads disappears: relu's gradient reads its output
//! ([`crate::ir::UnaryOp::grad_uses_output`]; so do leaky_relu's and elu's with a positive
//! slope or alpha), which is why a bias add fuses with the relu after it in training graphs too,
//! and not with a gelu, silu or softplus, whose gradients read their input. The fused kernel does the same arithmetic in the same
//! order as the separate ones, so results are bit-identical.

use super::rewrite::{use_counts, Rewriter};
use super::Pass;
use crate::ir::print::node_to_string;
use crate::ir::{Chain, Graph, Node, Op, ValueId};
use std::fmt::Write;

/// The elementwise-fusion pass ([`fuse`]).
pub struct Fuse;

impl Pass for Fuse {
    fn name(&self) -> &'static str {
        "fuse"
    }
    fn run(&self, g: &Graph) -> Graph {
        fuse(g)
    }
}

/// A chain ending at some node: what it computes and from which (old) values.
#[derive(Clone)]
struct Pending {
    chain: Chain,
    inputs: Vec<ValueId>,
    labels: Vec<String>,
}

impl Pending {
    fn ops(&self) -> usize {
        self.chain.bias.is_some() as usize + self.chain.acts.len()
    }
}

/// `g` with its elementwise chains fused.
pub fn fuse(g: &Graph) -> Graph {
    let n = g.nodes.len();
    let uses = use_counts(g);
    // The chain ending at each node, and whether the node is absorbed by its reader's chain.
    let mut chains: Vec<Option<Pending>> = vec![None; n];
    let mut absorbed = vec![false; n];
    for (i, node) in g.nodes.iter().enumerate() {
        let start = |chain: Chain, inputs: &[ValueId]| Pending {
            chain,
            inputs: inputs.to_vec(),
            labels: vec![node.label.clone()],
        };
        chains[i] = match &node.op {
            Op::BiasAdd { axis } => Some(start(
                Chain {
                    bias: Some(*axis),
                    acts: vec![],
                },
                &node.inputs,
            )),
            Op::Unary(u) => {
                let p = node.inputs[0].index();
                match &chains[p] {
                    Some(prev) if uses[p] == 1 => {
                        absorbed[p] = true;
                        let mut next = prev.clone();
                        next.chain.acts.push(*u);
                        if !next.labels.contains(&node.label) {
                            next.labels.push(node.label.clone());
                        }
                        Some(next)
                    }
                    _ => Some(start(
                        Chain {
                            bias: None,
                            acts: vec![*u],
                        },
                        &node.inputs,
                    )),
                }
            }
            _ => None,
        };
    }
    let mut r = Rewriter::new(g);
    for (i, node) in g.nodes.iter().enumerate() {
        if absorbed[i] {
            // Read only by the node that absorbed it, which is rebuilt from the chain's inputs.
            r.define(ValueId(u32::MAX));
            continue;
        }
        let node = match &chains[i] {
            Some(p) if p.ops() >= 2 => Node {
                op: Op::Fused(p.chain.clone()),
                inputs: p.inputs.iter().map(|v| r.get(*v)).collect(),
                ty: node.ty.clone(),
                label: p.labels.join(", "),
            },
            _ => r.mapped(i),
        };
        let v = r.push(node);
        r.define(v);
    }
    r.finish()
}

/// The fusion groups of a fused graph, one line each (`nnc ir --stage fused`): the elementwise
/// chains, and the products with an epilogue ([`super::epilogue`]) and their second results.
pub fn groups_to_string(g: &Graph) -> String {
    let fused: Vec<ValueId> = g
        .values()
        .filter(|v| {
            matches!(
                g.node(*v).op,
                Op::Fused(_)
                    | Op::WithEpilogue { .. }
                    | Op::EpilogueGrad
                    | Op::Conv2dGradWeightUnpool { .. }
            )
        })
        .collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "fused {}: {} groups, {} nodes",
        g.name,
        fused.len(),
        g.nodes.len()
    );
    for v in fused {
        let _ = writeln!(s, "  {}", node_to_string(g, v));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::eval;
    use crate::ir::{DType, Type, UnaryOp};

    fn ty(dims: &[usize]) -> Type {
        Type {
            dtype: DType::F32,
            dims: dims.to_vec(),
            batched: true,
        }
    }

    /// x + b → relu → tanh → output, and x + b → neg read twice (by exp and by the output).
    fn graph() -> Graph {
        let mut g = Graph::new("f", false);
        let x = g.input("x", ty(&[3]));
        let b = g.input(
            "b",
            Type {
                dtype: DType::F32,
                dims: vec![3],
                batched: false,
            },
        );
        let s = g.push(Op::BiasAdd { axis: 1 }, vec![x, b], "d").unwrap();
        let r = g.push(Op::Unary(UnaryOp::Relu), vec![s], "r").unwrap();
        let t = g.push(Op::Unary(UnaryOp::Tanh), vec![r], "t").unwrap();
        let s2 = g.push(Op::BiasAdd { axis: 1 }, vec![x, b], "d2").unwrap();
        let n = g.push(Op::Unary(UnaryOp::Neg), vec![s2], "n").unwrap();
        let e = g.push(Op::Unary(UnaryOp::Exp), vec![n], "e").unwrap();
        let l = g.push(Op::Unary(UnaryOp::Log), vec![e], "l").unwrap();
        g.set_output("t", t);
        g.set_output("n", n);
        g.set_output("l", l);
        g
    }

    #[test]
    fn chains_fuse_up_to_a_value_read_twice_or_an_output() {
        let g = graph();
        let f = fuse(&g);
        crate::ir::verify::verify(&f).unwrap();
        let chains: Vec<&Chain> = f
            .nodes
            .iter()
            .filter_map(|n| match &n.op {
                Op::Fused(c) => Some(c),
                _ => None,
            })
            .collect();
        // bias → relu → tanh in one node; bias → neg (neg is an output, so it ends the chain);
        // exp → log after it.
        assert_eq!(
            chains,
            [
                &Chain {
                    bias: Some(1),
                    acts: vec![UnaryOp::Relu, UnaryOp::Tanh]
                },
                &Chain {
                    bias: Some(1),
                    acts: vec![UnaryOp::Neg]
                },
                &Chain {
                    bias: None,
                    acts: vec![UnaryOp::Exp, UnaryOp::Log]
                },
            ]
        );
        assert_eq!(f.nodes.len(), 5);
        // The same values, bit for bit, from the reference interpreter.
        let ins = vec![vec![-1.0, 0.5, 2.0, 0.25, -3.0, 1.5], vec![0.1, -0.2, 0.3]];
        let before = eval(&g, 2, &ins, &[], Default::default()).unwrap();
        let after = eval(&f, 2, &ins, &[], Default::default()).unwrap();
        for o in ["t", "n", "l"] {
            assert_eq!(
                before[g.output(o).unwrap().index()],
                after[f.output(o).unwrap().index()],
                "{o}"
            );
        }
        // Fusing again changes nothing.
        assert_eq!(fuse(&f), f);
        assert!(groups_to_string(&f).contains("3 groups"));
    }
}
