//! Loss-epilogue fusion: the gradient of the training loss is computed by the matrix product
//! that produces the prediction, on each block of C as the GEMM finishes it, instead of by a
//! kernel that reads the whole prediction back.
//!
//! The pattern is the head of every classifier and regressor: `y = chain(x·W)` (after
//! [`super::epilogue`], a `matmul_epi` with a bias and maybe an activation, or a bare `matmul`),
//! then `cross_entropy_grad(y, labels, dl)` or `mse_grad(y, target, dl)` with a constant `dl`
//! (the loss's weight; after constant folding it always is one), or, for a loss with
//! `reduction: "sum"`, `dl` a constant times the terms of `y` ([`Op::MeanToSum`]): the
//! epilogue is then marked `summed` and scales by the constant alone. The product becomes a node
//! with an [`Epilogue::Loss`] and two results: its value `y`, still read by the loss itself
//! and by the metrics, and the gradient, the value of an [`Op::EpilogueGrad`] node that takes
//! the loss gradient's place. When that gradient's only reader is the gradient of the chain's
//! last activation (`sigmoid_grad(y, d)`, the autoencoder's output layer), the epilogue carries
//! it through that activation too and the `EpilogueGrad` takes the activation gradient's place.
//!
//! What it saves: one kernel and a pass over the prediction (two for the autoencoder, whose
//! 784-wide gradient is no longer written, read and written again). The loss value itself stays
//! its own node: it reduces over the whole batch, which the GEMM computes in blocks on several
//! threads, and summing it in the one fixed order of the separate kernel keeps it bit-identical
//! for any thread count. The gradient is elementwise (mean squared error) or a function of one
//! row (cross-entropy, whose softmax needs the row's maximum and sum: the code generator hands
//! such an epilogue whole rows, see `codegen::glue::MatMulStep`), so it is computed by
//! the same f32 operations as the separate kernels, and the results are bit-identical.
//!
//! Runs after [`super::epilogue`]; the constants absorbed are left for dead-code elimination.

use super::rewrite::Rewriter;
use super::Pass;
use crate::ir::{
    Chain, Epilogue, EpilogueLoss, Graph, LossEpilogue, Node, Op, Producer, UnaryOp, ValueId,
};

/// The loss-epilogue fusion pass ([`fuse_loss_epilogues`]).
pub struct LossEpilogueFusion;

impl Pass for LossEpilogueFusion {
    fn name(&self) -> &'static str {
        "loss-epilogue"
    }
    fn run(&self, g: &Graph) -> Graph {
        fuse_loss_epilogues(g)
    }
}

/// A fusion found in the graph: the prediction's node, the loss gradient's node, the node
/// whose place the `EpilogueGrad` takes (the gradient's, or its activation gradient's) and the
/// epilogue.
struct Found {
    value: usize,
    grad: usize,
    place: usize,
    epi: LossEpilogue,
}

/// The loss whose gradient `op` is, if an epilogue can compute it.
fn loss_of(op: &Op) -> Option<EpilogueLoss> {
    match op {
        Op::CrossEntropyGrad => Some(EpilogueLoss::CrossEntropy),
        Op::MseGrad => Some(EpilogueLoss::Mse),
        _ => None,
    }
}

/// The chain a matrix product `node` applies to its product: its epilogue's, or none for a
/// bare product.
fn product_chain(node: &Node) -> Option<Chain> {
    match &node.op {
        Op::MatMul { .. } => Some(Chain {
            bias: None,
            acts: vec![],
        }),
        Op::WithEpilogue {
            producer: Producer::MatMul { .. },
            epi: Epilogue::Chain(c),
        } => Some(c.clone()),
        _ => None,
    }
}

/// The upstream gradient `dl` of the loss of prediction `y`, when an epilogue can take it: a
/// constant, or a constant made a sum's by [`Op::MeanToSum`] counting the terms of `y` itself
/// (its elements, or its rows for a cross-entropy: the N the gradient divides by), and
/// whether it is the latter.
fn upstream(g: &Graph, loss: EpilogueLoss, dl: ValueId, y: ValueId) -> Option<(f32, bool)> {
    let n = g.node(dl);
    match n.op {
        Op::Const(c) => Some((c, false)),
        Op::MeanToSum { per } if n.inputs[1] == y => {
            let Op::Const(c) = g.node(n.inputs[0]).op else {
                return None;
            };
            let terms = match loss {
                EpilogueLoss::Mse => 1,
                EpilogueLoss::CrossEntropy => g.ty(y).last(),
            };
            (per == terms).then_some((c, true))
        }
        _ => None,
    }
}

fn find(g: &Graph) -> Vec<Found> {
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); g.nodes.len()];
    for (i, node) in g.nodes.iter().enumerate() {
        for v in &node.inputs {
            readers[v.index()].push(i);
        }
    }
    let is_output = |i: usize| g.outputs.iter().any(|o| o.value.index() == i);
    let mut found: Vec<Found> = Vec::new();
    for (i, node) in g.nodes.iter().enumerate() {
        let Some(loss) = loss_of(&node.op) else {
            continue;
        };
        let [y, target, dl] = node.inputs[..] else {
            continue;
        };
        let (Some(chain), Some((dl, summed))) =
            (product_chain(g.node(y)), upstream(g, loss, dl, y))
        else {
            continue;
        };
        // The fused node reads the target, so it must exist by then; one loss per product.
        if target.index() >= y.index() || found.iter().any(|f| f.value == y.index()) {
            continue;
        }
        let mut place = i;
        let mut through = None;
        if let ([r], false) = (readers[i].as_slice(), is_output(i)) {
            let last_act = chain.acts.last().copied();
            if let Op::UnaryGrad(u) = g.nodes[*r].op {
                let carries = Some(u) == last_act
                    && u.grad_uses_output()
                    && g.nodes[*r].inputs == [y, ValueId(i as u32)];
                if carries {
                    place = *r;
                    through = Some::<UnaryOp>(u);
                }
            }
        }
        let mut epi = LossEpilogue::new(chain, loss, dl, through);
        epi.summed = summed;
        found.push(Found {
            value: y.index(),
            grad: i,
            place,
            epi,
        });
    }
    found
}

/// `g` with the gradient of each cross-entropy or mean-squared-error loss computed by the
/// epilogue of the matrix product that predicts it.
pub fn fuse_loss_epilogues(g: &Graph) -> Graph {
    let found = find(g);
    if found.is_empty() {
        return g.clone();
    }
    let mut r = Rewriter::new(g);
    for (i, node) in g.nodes.iter().enumerate() {
        let v = if let Some(f) = found.iter().find(|f| f.value == i) {
            let producer = match node.op {
                Op::MatMul { ta, tb } => Producer::MatMul { ta, tb },
                Op::WithEpilogue { producer, .. } => producer,
                _ => unreachable!("find() takes matrix products only"),
            };
            let mut fused = r.mapped(i);
            fused.op = Op::WithEpilogue {
                producer,
                epi: Epilogue::Loss(f.epi.clone()),
            };
            fused.inputs.push(r.get(g.nodes[f.grad].inputs[1]));
            r.push(fused)
        } else if let Some(f) = found.iter().find(|f| f.place == i) {
            let grad = Node {
                op: Op::EpilogueGrad,
                inputs: vec![r.get(ValueId(f.value as u32))],
                ty: node.ty.clone(),
                label: node.label.clone(),
            };
            r.push(grad)
        } else if found.iter().any(|f| f.grad == i) {
            // Carried through the activation: read only by the node the gradient replaces.
            ValueId(u32::MAX)
        } else {
            r.push(r.mapped(i))
        };
        r.define(v);
    }
    r.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::eval;
    use crate::ir::Type;
    use crate::opt::{dce::dce, epilogue::unfuse_epilogues};

    fn mm() -> Op {
        Op::MatMul {
            ta: false,
            tb: false,
        }
    }

    /// A classifier head (bias, cross-entropy), a sigmoid regressor (bias, sigmoid, mse, whose
    /// gradient goes through the sigmoid), a bare product with a summed mse, and two that do
    /// not fuse: a loss whose upstream gradient is computed, and a cross-entropy on a value
    /// that is no product.
    fn graph() -> Graph {
        let mut g = Graph::new("l", true);
        let x = g.input("x", Type::f32(true, vec![5]));
        let labels = g.input("labels", Type::i32(true, vec![]));
        let target = g.input("target", Type::f32(true, vec![3]));
        let w = g.input("w", Type::f32(false, vec![5, 4]));
        let b = g.input("b", Type::f32(false, vec![4]));
        let w2 = g.input("w2", Type::f32(false, vec![5, 3]));
        let b2 = g.input("b2", Type::f32(false, vec![3]));
        let chain = |bias, acts| Op::Fused(Chain { bias, acts });
        let p = g.push(mm(), vec![x, w], "head").unwrap();
        let logits = g.push(chain(Some(1), vec![]), vec![p, b], "head").unwrap();
        let q = g.push(mm(), vec![x, w2], "out").unwrap();
        let y = g
            .push(chain(Some(1), vec![UnaryOp::Sigmoid]), vec![q, b2], "out")
            .unwrap();
        let ce = g
            .push(Op::CrossEntropy, vec![logits, labels], "ce")
            .unwrap();
        let mse = g.push(Op::Mse, vec![y, target], "mse").unwrap();
        let half = g.constant(0.5);
        let dce_ = g
            .push(Op::CrossEntropyGrad, vec![logits, labels, half], "d head")
            .unwrap();
        let one = g.constant(1.0);
        let dy = g
            .push(Op::MseGrad, vec![y, target, one], "d sigmoid")
            .unwrap();
        let dq = g
            .push(Op::UnaryGrad(UnaryOp::Sigmoid), vec![y, dy], "d out")
            .unwrap();
        // Not fused: a computed upstream gradient, and logits that are no product.
        let two = g
            .push(Op::Binary(crate::ir::BinaryOp::Add), vec![one, one], "")
            .unwrap();
        let other = g
            .push(Op::CrossEntropyGrad, vec![logits, labels, two], "d again")
            .unwrap();
        // Fused, summed: the mean's upstream gradient a constant times the terms of a
        // regressor's output.
        let w3 = g.input("w3", Type::f32(false, vec![5, 3]));
        let r = g.push(mm(), vec![x, w3], "sum").unwrap();
        let terms = g.push(Op::MeanToSum { per: 1 }, vec![half, r], "").unwrap();
        let dsum = g
            .push(Op::MseGrad, vec![r, target, terms], "d sum")
            .unwrap();
        let soft = g.push(Op::Unary(UnaryOp::Tanh), vec![logits], "t").unwrap();
        let dsoft = g
            .push(Op::CrossEntropyGrad, vec![soft, labels, one], "d soft")
            .unwrap();
        for (name, v) in [
            ("ce", ce),
            ("mse", mse),
            ("logits", logits),
            ("y", y),
            ("dce", dce_),
            ("dq", dq),
            ("other", other),
            ("dsoft", dsoft),
            ("dsum", dsum),
        ] {
            g.set_output(name, v);
        }
        g
    }

    fn inputs(g: &Graph, batch: usize) -> Vec<Vec<f64>> {
        g.inputs()
            .iter()
            .enumerate()
            .map(|(k, (v, _))| {
                let n = g.ty(*v).numel(batch);
                if k == 1 {
                    (0..n).map(|i| ((i * 3) % 4) as f64).collect()
                } else {
                    (0..n)
                        .map(|i| ((i * 7 + k * 3) % 11) as f64 / 5.0 - 1.0)
                        .collect()
                }
            })
            .collect()
    }

    #[test]
    fn loss_gradients_fuse_into_the_product_that_predicts() {
        let g = graph();
        let e = crate::opt::epilogue::fuse_epilogues(&g);
        let l = dce(&fuse_loss_epilogues(&e));
        crate::ir::verify::verify(&l).unwrap();
        let epis: Vec<String> = l
            .values()
            .filter(|v| matches!(l.node(*v).op, Op::WithEpilogue { .. } | Op::EpilogueGrad))
            .map(|v| {
                let n = l.node(v);
                format!("{}{} ; {}", n.op.name(), n.op.attrs(), n.label)
            })
            .collect();
        assert_eq!(
            epis,
            [
                "matmul_epi [bias_add axis=1 | cross_entropy_grad dl=0.5] ; head",
                "matmul_epi [bias_add axis=1 → sigmoid | mse_grad dl=1.0 → sigmoid_grad] ; out",
                "epilogue_grad ; d head",
                "epilogue_grad ; d out",
                "matmul_epi [mse_grad dl=0.5 summed] ; sum",
                "epilogue_grad ; d sum",
            ]
        );
        // The loss gradient, the sigmoid's gradient and the constant 0.5 are gone; the other
        // two gradients stay separate ops.
        let count = |op: &str| l.nodes.iter().filter(|n| n.op.name() == op).count();
        assert_eq!(count("cross_entropy_grad"), 2);
        assert_eq!((count("mse_grad"), count("sigmoid_grad")), (0, 0));
        let ins = inputs(&g, 3);
        let before = eval(&g, 3, &ins, &[], Default::default()).unwrap();
        let after = eval(&l, 3, &ins, &[], Default::default()).unwrap();
        for o in [
            "ce", "mse", "logits", "y", "dce", "dq", "other", "dsoft", "dsum",
        ] {
            assert_eq!(
                before[g.output(o).unwrap().index()],
                after[l.output(o).unwrap().index()],
                "{o}"
            );
        }
        // Fusing again changes nothing; unfusing gives back separate ops with the same values.
        assert_eq!(fuse_loss_epilogues(&l), l);
        let u = unfuse_epilogues(&l);
        crate::ir::verify::verify(&u).unwrap();
        assert!(!u
            .nodes
            .iter()
            .any(|n| matches!(n.op, Op::WithEpilogue { .. } | Op::EpilogueGrad)));
        let unfused = eval(&u, 3, &ins, &[], Default::default()).unwrap();
        for o in ["ce", "mse", "logits", "y", "dce", "dq", "dsum"] {
            assert_eq!(
                before[g.output(o).unwrap().index()],
                unfused[u.output(o).unwrap().index()],
                "{o}"
            );
        }
    }

    #[test]
    fn the_verifier_wants_an_epilogue_grad_on_a_loss_epilogue_and_only_one() {
        let g = dce(&fuse_loss_epilogues(&crate::opt::epilogue::fuse_epilogues(
            &graph(),
        )));
        let first = g
            .values()
            .find(|v| matches!(g.node(*v).op, Op::EpilogueGrad))
            .unwrap();
        let mut twice = g.clone();
        let node = twice.node(first).clone();
        twice.nodes.push(node);
        let err = crate::ir::verify::verify(&twice).unwrap_err().join("; ");
        assert!(err.contains("is the second for"), "{err}");
        let mut wrong = g.clone();
        let x = wrong.inputs()[0].0;
        let ty = wrong.ty(x).clone();
        wrong.nodes.push(Node {
            op: Op::EpilogueGrad,
            inputs: vec![x],
            ty,
            label: String::new(),
        });
        let err = crate::ir::verify::verify(&wrong).unwrap_err().join("; ");
        assert!(
            err.contains("must read a node with a loss epilogue"),
            "{err}"
        );
    }
}
