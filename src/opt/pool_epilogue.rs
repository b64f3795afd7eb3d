//! Pooling fusion: a max pooling that is the only reader of a convolution (with or without
//! its fused chain, [`super::epilogue`]) becomes the convolution's epilogue
//! ([`Epilogue::Pool`]), so that the convolution's kernel writes the pooled value and the
//! activation before the pooling is never stored whole, nor read back by a pooling kernel.
//!
//! That happens in inference graphs (`conv → relu → maxpool`, the classic block). In training
//! the max-pool gradient reads the activation too, which stays a value; where the code
//! generator can ([`crate::codegen::pool_beside_applies`]: a direct convolution, 2×2 windows of
//! stride 2 tiling its output), the pooling becomes [`Op::PoolBeside`], which the convolution's
//! kernel writes besides its value, pooling each pair of rows while they are in L1 instead of
//! reading the whole activation again. The kernels compute each output as the separate ones do
//! (the convolution's sums and chain, then the maximum of the window in the pooling's order),
//! so results are bit-identical. Runs after [`super::epilogue`], whose chains it carries into
//! the pooling epilogue.

use super::epilogue::merged_label;
use super::rewrite::{use_counts, Rewriter};
use super::Pass;
use crate::ir::{Chain, Epilogue, Graph, Node, Op, Producer, ValueId};

/// The pooling-fusion pass ([`fuse_pools`]).
pub struct PoolEpilogueFusion;

impl Pass for PoolEpilogueFusion {
    fn name(&self) -> &'static str {
        "pool-epilogue"
    }
    fn run(&self, g: &Graph) -> Graph {
        fuse_pools(g)
    }
}

/// The convolution `node` computes and the chain applied to it, if it is one.
fn conv_and_chain(node: &Node) -> Option<(Producer, Chain)> {
    match &node.op {
        Op::Conv2d(w) => Some((Producer::Conv2d(*w), Chain::default())),
        Op::WithEpilogue {
            producer: p @ Producer::Conv2d(_),
            epi: Epilogue::Chain(c),
        } => Some((*p, c.clone())),
        _ => None,
    }
}

/// `g` with every max pooling that alone reads a convolution fused into it.
pub fn fuse_pools(g: &Graph) -> Graph {
    let uses = use_counts(g);
    let mut fused: Vec<Option<Node>> = vec![None; g.nodes.len()];
    let mut absorbed = vec![false; g.nodes.len()];
    for (i, node) in g.nodes.iter().enumerate() {
        let Op::MaxPool(w) = node.op else {
            continue;
        };
        let p = node.inputs[0];
        let conv = g.node(p);
        let Some((producer, chain)) = conv_and_chain(conv) else {
            continue;
        };
        if uses[p.index()] != 1 {
            let Producer::Conv2d(cw) = producer else {
                continue;
            };
            if crate::codegen::pool_beside_applies(g.ty(conv.inputs[0]), &cw, &conv.ty, &w) {
                fused[i] = Some(Node {
                    op: Op::PoolBeside(w),
                    ..node.clone()
                });
            }
            continue;
        }
        absorbed[p.index()] = true;
        fused[i] = Some(Node {
            op: Op::WithEpilogue {
                producer,
                epi: Epilogue::Pool(chain, w),
            },
            inputs: conv.inputs.clone(),
            ty: node.ty.clone(),
            label: merged_label(&conv.label, &node.label),
        });
    }
    let mut r = Rewriter::new(g);
    for i in 0..g.nodes.len() {
        if absorbed[i] {
            // Read only by the pooling that absorbed it, which is rebuilt from its inputs.
            r.define(ValueId(u32::MAX));
            continue;
        }
        let mut node = fused[i].clone().unwrap_or_else(|| g.nodes[i].clone());
        for v in &mut node.inputs {
            *v = r.get(*v);
        }
        let v = r.push(node);
        r.define(v);
    }
    r.finish()
}

/// `g` with the pooling epilogues for which `fused` does not hold split back into their
/// convolution (and chain) and a max pooling: the code generator's, for those it has no fused
/// kernel for.
pub fn unfuse_pools(g: &Graph, fused: impl Fn(&Node) -> bool) -> Graph {
    let mut r = Rewriter::new(g);
    for (i, node) in g.nodes.iter().enumerate() {
        let v = match &node.op {
            Op::WithEpilogue {
                epi: Epilogue::Pool(..),
                ..
            } if !fused(node) => split(&mut r, node, true),
            _ => r.push(r.mapped(i)),
        };
        r.define(v);
    }
    r.finish()
}

/// Pushes the nodes computing pooling-epilogue `node` of the old graph separately: the
/// convolution (labelled with the first part of the node's label), its chain if any (with
/// `keep_chain`, as the convolution's epilogue), the max pooling. Returns the pooling's value.
pub(super) fn split(r: &mut Rewriter, node: &Node, keep_chain: bool) -> ValueId {
    let Op::WithEpilogue {
        producer,
        epi: Epilogue::Pool(c, w),
    } = &node.op
    else {
        unreachable!("split is given pooling epilogues")
    };
    let g = r.old;
    let tys = [g.ty(node.inputs[0]), g.ty(node.inputs[1])];
    let ty = crate::ir::shape::infer(&producer.op(), &tys, &g.params)
        .expect("the verifier checked the node's inputs");
    let ins: Vec<ValueId> = node.inputs.iter().map(|v| r.get(*v)).collect();
    let chained = c.bias.is_some() || !c.acts.is_empty();
    if keep_chain && chained {
        let v = r.push(Node {
            op: Op::WithEpilogue {
                producer: *producer,
                epi: Epilogue::Chain(c.clone()),
            },
            inputs: ins,
            ty,
            label: node.label.clone(),
        });
        return r.push(Node {
            op: Op::MaxPool(*w),
            inputs: vec![v],
            ty: node.ty.clone(),
            label: node.label.clone(),
        });
    }
    let first = node.label.split(", ").next().unwrap_or_default();
    let p = r.push(Node {
        op: producer.op(),
        inputs: ins[..2].to_vec(),
        ty: ty.clone(),
        label: first.to_string(),
    });
    let v = match chained {
        false => p,
        true => r.push(Node {
            op: Op::Fused(c.clone()),
            inputs: std::iter::once(p).chain(ins.get(2).copied()).collect(),
            ty,
            label: node.label.clone(),
        }),
    };
    r.push(Node {
        op: Op::MaxPool(*w),
        inputs: vec![v],
        ty: node.ty.clone(),
        label: node.label.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::eval;
    use crate::ir::{Type, UnaryOp, Window};
    use crate::opt::epilogue::{fuse_epilogues, unfuse_epilogues};

    fn win(kernel: usize, stride: usize, pad: usize) -> Window {
        Window {
            kernel,
            stride,
            pad,
        }
    }

    /// conv → bias → relu → maxpool (fused), a bare conv → maxpool (fused), and a conv read by
    /// its pooling and as an output (not fused).
    fn graph() -> Graph {
        let mut g = Graph::new("p", false);
        let x = g.input("x", Type::f32(true, vec![2, 6, 6]));
        let w = g.input("w", Type::f32(false, vec![3, 2, 3, 3]));
        let b = g.input("b", Type::f32(false, vec![3]));
        let c = g
            .push(Op::Conv2d(win(3, 1, 1)), vec![x, w], "conv1")
            .unwrap();
        let chain = Op::Fused(Chain {
            bias: Some(1),
            acts: vec![UnaryOp::Relu],
        });
        let h = g.push(chain, vec![c, b], "relu1").unwrap();
        let p = g.push(Op::MaxPool(win(2, 2, 0)), vec![h], "pool1").unwrap();
        let w2 = g.input("w2", Type::f32(false, vec![4, 3, 3, 3]));
        let c2 = g
            .push(Op::Conv2d(win(3, 1, 0)), vec![p, w2], "conv2")
            .unwrap();
        let p2 = g
            .push(Op::MaxPool(win(3, 1, 1)), vec![c2], "pool2")
            .unwrap();
        let c3 = g
            .push(Op::Conv2d(win(3, 1, 1)), vec![x, w], "conv3")
            .unwrap();
        let p3 = g
            .push(Op::MaxPool(win(2, 2, 0)), vec![c3], "pool3")
            .unwrap();
        g.set_output("y", p2);
        g.set_output("c3", c3);
        g.set_output("p3", p3);
        g
    }

    #[test]
    fn fuses_poolings_that_alone_read_a_convolution_and_computes_the_same() {
        let g = fuse_epilogues(&graph());
        let f = fuse_pools(&g);
        crate::ir::verify::verify(&f).unwrap();
        let pools: Vec<String> = f
            .nodes
            .iter()
            .filter(|n| {
                matches!(
                    n.op,
                    Op::WithEpilogue {
                        epi: Epilogue::Pool(..),
                        ..
                    }
                )
            })
            .map(|n| format!("{} {}", n.op.name(), n.label))
            .collect();
        assert_eq!(pools.len(), 2, "{pools:?}");
        assert!(pools[0].contains("conv1, relu1, pool1"), "{pools:?}");
        assert!(pools[1].contains("conv2, pool2"), "{pools:?}");
        // conv3 is an output: its pooling stays.
        assert_eq!(
            f.nodes
                .iter()
                .filter(|n| matches!(n.op, Op::MaxPool(_)))
                .count(),
            1
        );
        let inputs: Vec<Vec<f64>> = [72, 54, 3, 108]
            .iter()
            .enumerate()
            .map(|(k, &n)| {
                (0..n)
                    .map(|i| ((i * 7 + k * 3) % 11) as f64 / 5.0 - 1.0)
                    .collect()
            })
            .collect();
        let run = |g: &Graph| {
            let vals = eval(g, 1, &inputs, &[], Default::default()).unwrap();
            g.outputs
                .iter()
                .map(|o| vals[o.value.index()].clone())
                .collect::<Vec<_>>()
        };
        let want = run(&graph());
        assert_eq!(run(&f), want);
        // Split back (for --detect-anomaly), the graph computes the same again.
        let split = unfuse_epilogues(&f);
        crate::ir::verify::verify(&split).unwrap();
        assert!(!split
            .nodes
            .iter()
            .any(|n| matches!(n.op, Op::WithEpilogue { .. })));
        assert_eq!(run(&split), want);
        // The code generator's split of the poolings it has no kernel for: here the bare one.
        let some = unfuse_pools(&f, |n| n.label.contains("relu1"));
        crate::ir::verify::verify(&some).unwrap();
        assert_eq!(
            some.nodes
                .iter()
                .filter(|n| matches!(n.op, Op::MaxPool(_)))
                .count(),
            2
        );
        assert_eq!(run(&some), want);
    }
}
