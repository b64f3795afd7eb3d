//! Epilogue fusion: the elementwise op that is the only reader of a `MatMul` or `Conv2d`
//! becomes part of it ([`Op::WithEpilogue`]), so the GEMM stores the final value instead of the
//! product, and the product's buffer and the elementwise kernel's pass over it disappear.
//!
//! Forward, the absorbed op is a bias add, an activation or an [`Op::Fused`] chain of both
//! (`dense → bias_add → relu` becomes one GEMM writing the activation). Its bias must lie along
//! the product's columns for a matrix product (the last axis) or along the output channels of a
//! convolution ([`crate::ir::Producer::bias_axis`]), the axes on which a bias is one number per
//! row or column of the GEMM's C.
//!
//! A max-pool gradient takes the gradient of the activation before the pool the same way
//! (`relu_grad(h, maxpool_grad(h, dy))`, where the pooled `h` is the relu's output): its kernel
//! writes each element of `dx` once, so it applies relu's mask as it writes.
//!
//! Backward, the absorbed op is the `UnaryGrad` whose upstream gradient is the product: for a
//! dense layer before a relu, `d relu = dy · Wᵀ` is a `MatMul` and `relu_grad(h, d relu)` masks
//! it. Fusing the mask into that GEMM's epilogue (it reads the forward activation `h` tile by
//! tile while the product is still in cache) means the unmasked gradient is never written nor
//! read back: the masked one is stored once and read by its three consumers (the bias gradient,
//! the weight gradient and the next layer's input gradient). The alternative, applying the mask
//! while packing the weight-gradient GEMM's operand, would make every consumer read both the
//! unmasked gradient and `h` (twice the reads, the bias-gradient reduction needing its own
//! masked pass) and keep the unmasked buffer alive: it removes less work, so it is not done.
//! Nor is the bias gradient folded into the epilogue: summing columns per cache block would
//! change the order of its additions with the thread split, and its kernel is one read of a
//! tensor that is then hot in cache for the weight gradient.
//!
//! A batch norm (in training, or on its running statistics) takes the activations after it
//! the same way (`batch_norm → relu`): its kernels store each normalized value once, the
//! activation applied, and the relu's pass over the whole map disappears. A bias or anything
//! else is not absorbed into it.
//!
//! As in [`super::fuse`], a value is absorbed only when the epilogue's op is its single reader
//! and it is no output. The epilogue does the same f32 operations in the same order as the
//! separate kernels (one rounding per op), so results are bit-identical. Runs after
//! [`super::fuse`], which builds the chains.

use super::rewrite::{use_counts, Rewriter};
use super::Pass;
use crate::ir::{Chain, Epilogue, EpilogueLoss, Graph, LossEpilogue, Node, Op, Producer, ValueId};

/// The epilogue-fusion pass ([`fuse_epilogues`]).
pub struct EpilogueFusion;

impl Pass for EpilogueFusion {
    fn name(&self) -> &'static str {
        "epilogue"
    }
    fn run(&self, g: &Graph) -> Graph {
        fuse_epilogues(g)
    }
}

/// The product op a node computes, if it can take an epilogue.
fn producer(op: &Op) -> Option<Producer> {
    match *op {
        Op::MatMul { ta, tb } => Some(Producer::MatMul { ta, tb }),
        Op::Conv2d(w) => Some(Producer::Conv2d(w)),
        Op::MaxPoolGrad(w) => Some(Producer::MaxPoolGrad(w)),
        Op::BatchNorm { eps } => Some(Producer::BatchNorm { eps }),
        Op::BatchNormEval { eps } => Some(Producer::BatchNormEval { eps }),
        _ => None,
    }
}

/// The epilogue `op` would be, the input that is the product, and the inputs the epilogue
/// reads besides it.
fn as_epilogue(node: &Node) -> Option<(Epilogue, ValueId, Vec<ValueId>)> {
    let chain = |bias, acts| Epilogue::Chain(Chain { bias, acts });
    let ins = &node.inputs;
    Some(match &node.op {
        Op::BiasAdd { axis } => (chain(Some(*axis), vec![]), ins[0], vec![ins[1]]),
        Op::Unary(u) => (chain(None, vec![*u]), ins[0], vec![]),
        Op::Fused(c) => (Epilogue::Chain(c.clone()), ins[0], ins[1..].to_vec()),
        Op::UnaryGrad(u) => (Epilogue::Grad(*u), ins[1], vec![ins[0]]),
        _ => return None,
    })
}

/// The label of a node fused from nodes labelled `a` and `b`: both labels' parts, each once
/// (`dense1` and `dense1, relu` give `dense1, relu`).
pub(super) fn merged_label(a: &str, b: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in a.split(", ").chain(b.split(", ")) {
        if !part.is_empty() && !parts.contains(&part) {
            parts.push(part);
        }
    }
    parts.join(", ")
}

/// `g` with every single-reader elementwise epilogue of a `MatMul` or `Conv2d` fused into it.
pub fn fuse_epilogues(g: &Graph) -> Graph {
    let uses = use_counts(g);
    // The fused node replacing each epilogue node, and the products it absorbs.
    let mut fused: Vec<Option<Node>> = vec![None; g.nodes.len()];
    let mut absorbed = vec![false; g.nodes.len()];
    for (i, node) in g.nodes.iter().enumerate() {
        let Some((epi, p, extra)) = as_epilogue(node) else {
            continue;
        };
        let prod = g.node(p);
        let Some(producer) = producer(&prod.op) else {
            continue;
        };
        // The product is read once (by this node, as the product only) and is no output.
        if uses[p.index()] != 1 {
            continue;
        }
        // A max-pool gradient takes the gradient of the activation before the pool only.
        if matches!(producer, Producer::MaxPoolGrad(_)) && !matches!(epi, Epilogue::Grad(_)) {
            continue;
        }
        // A batch norm takes activations only.
        if producer.activations_only() && !matches!(epi, Epilogue::Chain(Chain { bias: None, .. }))
        {
            continue;
        }
        if let Epilogue::Chain(Chain {
            bias: Some(axis), ..
        }) = epi
        {
            if axis != producer.bias_axis(prod.ty.rank()) {
                continue;
            }
        }
        absorbed[p.index()] = true;
        let mut inputs = prod.inputs.clone();
        inputs.extend(extra);
        let label = merged_label(&prod.label, &node.label);
        fused[i] = Some(Node {
            op: Op::WithEpilogue { producer, epi },
            inputs,
            ty: node.ty.clone(),
            label,
        });
    }
    let mut r = Rewriter::new(g);
    for i in 0..g.nodes.len() {
        if absorbed[i] {
            // Read only by the node that absorbed it, which is rebuilt from its inputs.
            r.define(ValueId(u32::MAX));
            continue;
        }
        let node = match &fused[i] {
            Some(f) => {
                let mut f = f.clone();
                for v in &mut f.inputs {
                    *v = r.get(*v);
                }
                f
            }
            None => r.mapped(i),
        };
        let v = r.push(node);
        r.define(v);
    }
    r.finish()
}

/// `g` with every [`Op::WithEpilogue`] split back into its product and its elementwise op, so
/// that the product is a value again: for executors that keep every value to show where a NaN
/// first appeared (`--detect-anomaly`). The product comes right before its epilogue, labelled
/// with the first part of the node's label ([`fuse_epilogues`] puts the producer's first).
///
/// A loss epilogue ([`super::loss_epilogue`]) becomes its product and chain, and its
/// [`Op::EpilogueGrad`] the loss gradient (and the activation gradient it was carried through).
pub fn unfuse_epilogues(g: &Graph) -> Graph {
    let mut r = Rewriter::new(g);
    for (i, node) in g.nodes.iter().enumerate() {
        let v = match &node.op {
            Op::WithEpilogue { producer, epi } => {
                if let Epilogue::Pool(..) = epi {
                    let v = super::pool_epilogue::split(&mut r, node, false);
                    r.define(v);
                    continue;
                }
                let ins: Vec<ValueId> = node.inputs.iter().map(|v| r.get(*v)).collect();
                let first = node.label.split(", ").next().unwrap_or_default();
                let k = producer.arity();
                let p = r.push(Node {
                    op: producer.op(),
                    inputs: ins[..k].to_vec(),
                    ty: node.ty.clone(),
                    label: first.to_string(),
                });
                let (op, inputs) = match epi {
                    Epilogue::Grad(u) => (Op::UnaryGrad(*u), vec![ins[k], p]),
                    Epilogue::Pool(..) => unreachable!("split above"),
                    Epilogue::Chain(c) | Epilogue::Loss(LossEpilogue { chain: c, .. }) => {
                        let op = match (c.bias, c.acts.as_slice()) {
                            (None, []) => {
                                // A bare product: the product is the value.
                                r.define(p);
                                continue;
                            }
                            (Some(axis), []) => Op::BiasAdd { axis },
                            (None, [u]) => Op::Unary(*u),
                            _ => Op::Fused(c.clone()),
                        };
                        let mut inputs = vec![p];
                        inputs.extend_from_slice(&ins[k..k + c.bias.is_some() as usize]);
                        (op, inputs)
                    }
                };
                r.push(Node {
                    op,
                    inputs,
                    ty: node.ty.clone(),
                    label: node.label.clone(),
                })
            }
            Op::EpilogueGrad => {
                let fused = g.node(node.inputs[0]);
                let Op::WithEpilogue {
                    epi: Epilogue::Loss(l),
                    ..
                } = &fused.op
                else {
                    unreachable!("the verifier checks that epilogue_grad reads a loss epilogue")
                };
                let y = r.get(node.inputs[0]);
                let target = r.get(fused.inputs[fused.inputs.len() - 1]);
                let mut dl = r.push(Node {
                    op: Op::Const(l.dl()),
                    inputs: vec![],
                    ty: crate::ir::Type::scalar(),
                    label: String::new(),
                });
                if l.summed {
                    // The mean's upstream gradient, dl times the terms of y.
                    let per = match l.loss {
                        EpilogueLoss::Mse => 1,
                        EpilogueLoss::CrossEntropy => node.ty.last(),
                    };
                    dl = r.push(Node {
                        op: Op::MeanToSum { per },
                        inputs: vec![dl, y],
                        ty: crate::ir::Type::scalar(),
                        label: node.label.clone(),
                    });
                }
                let grad = |inputs| Node {
                    op: l.loss.grad_op(),
                    inputs,
                    ty: node.ty.clone(),
                    label: node.label.clone(),
                };
                let d = r.push(grad(vec![y, target, dl]));
                match l.through {
                    Some(u) => r.push(Node {
                        op: Op::UnaryGrad(u),
                        inputs: vec![y, d],
                        ty: node.ty.clone(),
                        label: node.label.clone(),
                    }),
                    None => d,
                }
            }
            _ => r.push(r.mapped(i)),
        };
        r.define(v);
    }
    r.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::eval;
    use crate::ir::{Type, UnaryOp, Window};

    /// A dense layer with bias and relu, the relu's gradient against a product, a product read
    /// twice (no fusion), a bias along the wrong axis of a `ta` product (no fusion) and a conv
    /// with its channel bias.
    fn graph() -> Graph {
        let mut g = Graph::new("e", true);
        let x = g.input("x", Type::f32(true, vec![3]));
        let w = g.input("w", Type::f32(false, vec![3, 4]));
        let b = g.input("b", Type::f32(false, vec![4]));
        let dy = g.input("dy", Type::f32(true, vec![4]));
        let mm = |ta, tb| Op::MatMul { ta, tb };
        let p = g.push(mm(false, false), vec![x, w], "d").unwrap();
        let f = g
            .push(
                Op::Fused(Chain {
                    bias: Some(1),
                    acts: vec![UnaryOp::Relu],
                }),
                vec![p, b],
                "d",
            )
            .unwrap();
        // d relu = dy · wᵀ, masked by a relu's output (here x).
        let dh = g.push(mm(false, true), vec![dy, w], "dh").unwrap();
        let dp = g
            .push(Op::UnaryGrad(UnaryOp::Relu), vec![x, dh], "dp")
            .unwrap();
        // A product read by two nodes keeps its own kernel.
        let q = g.push(mm(false, false), vec![x, w], "q").unwrap();
        let t = g.push(Op::Unary(UnaryOp::Tanh), vec![q], "t").unwrap();
        let s = g.push(Op::Unary(UnaryOp::Neg), vec![q], "s").unwrap();
        // xᵀ·dy is [3, 4]: a bias along axis 0 (its rows) does not fuse.
        let gw = g.push(mm(true, false), vec![x, dy], "gw").unwrap();
        let b3 = g.input("b3", Type::f32(false, vec![3]));
        let gb = g.push(Op::BiasAdd { axis: 0 }, vec![gw, b3], "gb").unwrap();
        let img = g.input("img", Type::f32(true, vec![1, 4, 4]));
        let k = g.input("k", Type::f32(false, vec![2, 1, 3, 3]));
        let cb = g.input("cb", Type::f32(false, vec![2]));
        let win = Window {
            kernel: 3,
            stride: 1,
            pad: 1,
        };
        let c = g.push(Op::Conv2d(win), vec![img, k], "c").unwrap();
        let cr = g.push(Op::BiasAdd { axis: 1 }, vec![c, cb], "c").unwrap();
        for (name, v) in [
            ("f", f),
            ("dp", dp),
            ("t", t),
            ("s", s),
            ("gb", gb),
            ("cr", cr),
        ] {
            g.set_output(name, v);
        }
        g
    }

    #[test]
    fn single_reader_epilogues_fuse_into_their_product() {
        let g = graph();
        let e = fuse_epilogues(&g);
        crate::ir::verify::verify(&e).unwrap();
        let ops: Vec<String> = e
            .values()
            .filter(|v| matches!(e.node(*v).op, Op::WithEpilogue { .. }))
            .map(|v| format!("{}{}", e.node(v).op.name(), e.node(v).op.attrs()))
            .collect();
        assert_eq!(
            ops,
            [
                "matmul_epi [bias_add axis=1 → relu]",
                "matmul_epi tb [relu_grad]",
                "conv2d_epi k=3 s=1 p=1 [bias_add axis=1]",
            ]
        );
        // Three products absorbed: three nodes fewer.
        assert_eq!(e.nodes.len(), g.nodes.len() - 3);
        let ins: Vec<Vec<f64>> = g
            .inputs()
            .iter()
            .enumerate()
            .map(|(k, (v, _))| {
                (0..g.ty(*v).numel(2))
                    .map(|i| ((i * 7 + k * 3) % 11) as f64 / 5.0 - 1.0)
                    .collect()
            })
            .collect();
        let before = eval(&g, 2, &ins, &[], Default::default()).unwrap();
        let after = eval(&e, 2, &ins, &[], Default::default()).unwrap();
        for o in ["f", "dp", "t", "s", "gb", "cr"] {
            assert_eq!(
                before[g.output(o).unwrap().index()],
                after[e.output(o).unwrap().index()],
                "{o}"
            );
        }
        // Fusing again changes nothing; unfusing gives the products back as values, and
        // fusing that gives the same graph.
        assert_eq!(fuse_epilogues(&e), e);
        let u = unfuse_epilogues(&e);
        crate::ir::verify::verify(&u).unwrap();
        assert_eq!(u.nodes.len(), g.nodes.len());
        assert!(!u
            .nodes
            .iter()
            .any(|n| matches!(n.op, Op::WithEpilogue { .. })));
        assert_eq!(fuse_epilogues(&u), e);
        let unfused = eval(&u, 2, &ins, &[], Default::default()).unwrap();
        for o in ["f", "dp", "cr"] {
            assert_eq!(
                before[g.output(o).unwrap().index()],
                unfused[u.output(o).unwrap().index()],
                "{o}"
            );
        }
        assert!(super::super::fuse::groups_to_string(&e).contains("3 groups"));
    }

    #[test]
    fn a_bias_off_the_product_axis_is_rejected_by_the_verifier() {
        let mut g = Graph::new("bad", false);
        let x = g.input("x", Type::f32(true, vec![3]));
        let w = g.input("w", Type::f32(false, vec![3, 4]));
        let b = g.input("b", Type::f32(false, vec![4]));
        let op = Op::WithEpilogue {
            producer: Producer::MatMul {
                ta: false,
                tb: false,
            },
            epi: Epilogue::Chain(Chain {
                bias: Some(0),
                acts: vec![],
            }),
        };
        let err = g.push(op, vec![x, w, b], "bad").unwrap_err();
        assert!(err.contains("lies along axis 1"), "{err}");
    }
}
