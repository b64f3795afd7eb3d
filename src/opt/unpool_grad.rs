//! Unpooling fusion: the weight gradient of a first convolution whose output is max-pooled reads
//! the pooling's gradient directly, so that the convolution's output gradient is never stored.
//!
//! Training a `conv → relu → maxpool` block on the input images gives, after autodiff and
//! epilogue fusion,
//!
//! ```text
//! dz = maxpool_grad_epi [relu_grad] y, dp, y      (as large as the convolution's output)
//! dw = conv2d_grad_weight x, dz
//! db = bias_grad axis=1 dz
//! ```
//!
//! and nothing else reads `dz` (the images need no gradient). On the MNIST CNN `dz` is 6.4 MB a
//! batch, written once and read twice through the last-level cache. This pass makes it
//!
//! ```text
//! dw = conv2d_grad_weight_unpool [maxpool_grad → relu_grad] x, y, dp
//! db = unpool_bias_grad dw
//! ```
//!
//! whose kernel routes each image's gradient plane into L1 and sums it there
//! ([`crate::codegen`]'s direct weight gradient, the same values in the same order, so `dw`
//! keeps its bits), and sums the plane into the bias gradient too, its second result
//! (in another order than `bias_grad`'s, within f32 rounding of the old sum). The new node
//! takes the place of `dz`, after which its inputs are all computed.
//!
//! Applies where the code generator has the kernel
//! ([`crate::codegen::unpool_grad_weight_applies`]: few input channels, stride 1, 2×2 windows of
//! stride 2 tiling the output) and the activation's gradient reads its output (relu, sigmoid,
//! tanh, exp). Runs after [`super::epilogue`], whose pooling-gradient epilogues it matches.

use super::rewrite::{use_counts, Rewriter};
use super::Pass;
use crate::ir::{Epilogue, Graph, Node, Op, Producer, UnaryOp, ValueId, Window};

/// The unpooling-fusion pass ([`fuse_unpool_grads`]).
pub struct UnpoolGradFusion;

impl Pass for UnpoolGradFusion {
    fn name(&self) -> &'static str {
        "unpool-grad"
    }
    fn run(&self, g: &Graph) -> Graph {
        fuse_unpool_grads(g)
    }
}

/// A max-pool gradient: its window, the pooling's input `y`, the pooled gradient `dp`, and the
/// activation whose gradient its epilogue applies at `y`.
struct PoolGrad {
    pool: Window,
    y: ValueId,
    dp: ValueId,
    act: Option<UnaryOp>,
}

fn pool_grad(node: &Node) -> Option<PoolGrad> {
    let (pool, act) = match &node.op {
        Op::MaxPoolGrad(w) => (*w, None),
        Op::WithEpilogue {
            producer: Producer::MaxPoolGrad(w),
            epi: Epilogue::Grad(u),
        } if node.inputs.get(2) == node.inputs.first() && u.grad_uses_output() => (*w, Some(*u)),
        _ => return None,
    };
    Some(PoolGrad {
        pool,
        y: node.inputs[0],
        dp: node.inputs[1],
        act,
    })
}

/// What the pass does to each node of the old graph.
enum Plan {
    Keep,
    /// `dz`: replaced by the weight gradient reading the pooled gradient (whose inputs all come
    /// before `dz`), followed by its bias gradient when something reads that.
    Unpool {
        node: Node,
        bias: bool,
    },
    /// The old weight gradient, or a bias gradient: the new node made at old node `dz`, or its
    /// bias gradient.
    Made {
        dz: usize,
        bias: bool,
    },
}

/// `g` with every eligible convolution weight gradient reading its pooling's gradient (see the
/// module's comment).
pub fn fuse_unpool_grads(g: &Graph) -> Graph {
    let uses = use_counts(g);
    let outputs: Vec<ValueId> = g.outputs.iter().map(|o| o.value).collect();
    let mut plan: Vec<Plan> = g.nodes.iter().map(|_| Plan::Keep).collect();
    for (i, node) in g.nodes.iter().enumerate() {
        let Op::Conv2dGradWeight(conv) = node.op else {
            continue;
        };
        let (x, d) = (node.inputs[0], node.inputs[1]);
        let Some(pg) = pool_grad(g.node(d)) else {
            continue;
        };
        // Every reader of dz but this one a bias gradient over the channels, none an output.
        let readers: Vec<usize> = (0..g.nodes.len())
            .filter(|&j| g.nodes[j].inputs.contains(&d))
            .collect();
        let biases: Vec<usize> = readers.iter().copied().filter(|&j| j != i).collect();
        let all_bias = biases.iter().all(|&j| {
            matches!(g.nodes[j].op, Op::BiasGrad { axis: 1 }) && g.nodes[j].inputs == [d]
        });
        if !all_bias
            || uses[d.index()] != readers.len()
            || outputs.contains(&d)
            || !matches!(plan[d.index()], Plan::Keep)
        {
            continue;
        }
        let op = Op::Conv2dGradWeightUnpool {
            conv,
            pool: pg.pool,
            act: pg.act,
        };
        let (tx, ty, tp) = (g.ty(x), g.ty(pg.y), g.ty(pg.dp));
        if crate::ir::shape::infer(&op, &[tx, ty, tp], &g.params)
            .ok()
            .as_ref()
            != Some(&node.ty)
            || !crate::codegen::unpool_grad_weight_applies(tx, (&conv, &pg.pool), ty, tp, &node.ty)
        {
            continue;
        }
        plan[d.index()] = Plan::Unpool {
            node: Node {
                op,
                inputs: vec![x, pg.y, pg.dp],
                ty: node.ty.clone(),
                label: node.label.clone(),
            },
            bias: !biases.is_empty(),
        };
        plan[i] = Plan::Made {
            dz: d.index(),
            bias: false,
        };
        for &j in &biases {
            plan[j] = Plan::Made {
                dz: d.index(),
                bias: true,
            };
        }
    }
    let mut r = Rewriter::new(g);
    // The new nodes made at each old dz: the weight gradient and its bias gradient.
    let mut made: Vec<(ValueId, Option<ValueId>)> = vec![(ValueId(u32::MAX), None); g.nodes.len()];
    for (i, step) in plan.iter().enumerate() {
        let v = match step {
            Plan::Keep => r.push(r.mapped(i)),
            Plan::Unpool { node, bias } => {
                let mut node = node.clone();
                for v in &mut node.inputs {
                    *v = r.get(*v);
                }
                let w = r.push(node);
                let b = bias.then(|| {
                    let c = g.ty(g.nodes[i].inputs[1]).dims[0];
                    r.push(Node {
                        op: Op::UnpoolBiasGrad,
                        inputs: vec![w],
                        ty: crate::ir::Type::f32(false, vec![c]),
                        label: g
                            .nodes
                            .iter()
                            .find(|n| {
                                matches!(n.op, Op::BiasGrad { .. })
                                    && n.inputs == [ValueId(i as u32)]
                            })
                            .map_or_else(String::new, |n| n.label.clone()),
                    })
                });
                made[i] = (w, b);
                // dz itself: read by nothing in the new graph.
                w
            }
            Plan::Made { dz, bias: false } => made[*dz].0,
            Plan::Made { dz, bias: true } => made[*dz].1.expect("made with its bias gradient"),
        };
        r.define(v);
    }
    r.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Type;

    /// `dw = conv2d_grad_weight x, maxpool_grad(y, dp)` for a 3×3 convolution of 28×28 images
    /// with 8 channels, its output pooled by `pool` into 14×14.
    fn weight_grad_through(pool: Window) -> Graph {
        let mut g = Graph::new("t", true);
        let x = g.input("x", Type::f32(true, vec![1, 28, 28]));
        let y = g.input("y", Type::f32(true, vec![8, 28, 28]));
        let dp = g.input("dp", Type::f32(true, vec![8, 14, 14]));
        let dz = g.push(Op::MaxPoolGrad(pool), vec![y, dp], "dz").unwrap();
        let conv = Window {
            kernel: 3,
            stride: 1,
            pad: 1,
        };
        let dw = g
            .push(Op::Conv2dGradWeight(conv), vec![x, dz], "dw")
            .unwrap();
        g.set_output("dw", dw);
        g
    }

    fn fused(g: &Graph) -> usize {
        let out = fuse_unpool_grads(g);
        crate::ir::verify::verify(&out).unwrap();
        let unpool = |n: &&Node| matches!(n.op, Op::Conv2dGradWeightUnpool { .. });
        out.nodes.iter().filter(unpool).count()
    }

    /// Only the pooling the kernel routes by pairs of rows is fused: a 3×3 window of stride 2
    /// with padding 1 also halves 28×28, and must keep its own gradient.
    #[test]
    fn fuses_only_two_by_two_windows_of_stride_two() {
        let pairs = Window {
            kernel: 2,
            stride: 2,
            pad: 0,
        };
        assert_eq!(fused(&weight_grad_through(pairs)), 1);
        let overlapping = Window {
            kernel: 3,
            stride: 2,
            pad: 1,
        };
        assert_eq!(fused(&weight_grad_through(overlapping)), 0);
    }
}
