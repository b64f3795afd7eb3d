//! Graphs differentiated by `nnc::autodiff` and run on both, and malformed graphs refused.

use super::*;

/// Forward graphs differentiated by `autodiff::grad`, then every node compared.
pub(super) fn check_trained(g: Graph, gens: &[Gen]) {
    let mut t = nnc::autodiff::grad(&g).unwrap_or_else(|e| panic!("grad {}: {e}", g.name));
    assert!(
        t.nodes.len() > g.nodes.len(),
        "{}: no backward nodes",
        g.name
    );
    expose_all(&mut t);
    for &batch in &BATCHES {
        compare(&t, gens, batch, 400 + batch as u64, TOL);
    }
}

#[test]
fn autodiff_mlp_with_dropout_soft_targets_and_l2() {
    let mut g = Graph::new("mlp2", true);
    let x = g.input("x", f(true, &[8]));
    let target = g.input("target", f(true, &[3]));
    let h = dense(&mut g, x, "l1", 16);
    let h = g.push(Op::Unary(UnaryOp::Sigmoid), vec![h], "").unwrap();
    let h = g
        .push(Op::Dropout { p: 0.25, salt: 0 }, vec![h], "")
        .unwrap();
    let o = dense(&mut g, h, "l2", 3);
    let l = g.push(Op::SoftCrossEntropy, vec![o, target], "").unwrap();
    let w1 = g.param_node(g.param_by_path("l1.weight").unwrap()).unwrap();
    let l2 = g.push(Op::SumSquares, vec![w1], "").unwrap();
    let c = g.constant(0.01);
    let l2 = g.push(Op::Binary(BinaryOp::Mul), vec![c, l2], "").unwrap();
    let l = g.push(Op::Binary(BinaryOp::Add), vec![l, l2], "").unwrap();
    g.set_output("loss", l);
    check_trained(g, &[Gen::U(-1.0, 1.0), Gen::U(0.0, 0.5)]);
}

#[test]
fn autodiff_cnn_with_pools() {
    let mut g = Graph::new("cnn2", true);
    let x = g.input("x", f(true, &[2, 9, 9]));
    let y = g.input("y", Type::i32(true, vec![]));
    let wc = param(&mut g, "conv.weight", &[3, 2, 3, 3]);
    let bc = param(&mut g, "conv.bias", &[3]);
    let c = g
        .push(
            Op::Conv2d(Window {
                kernel: 3,
                stride: 2,
                pad: 1,
            }),
            vec![x, wc],
            "",
        )
        .unwrap();
    let c = g.push(Op::BiasAdd { axis: 1 }, vec![c, bc], "").unwrap();
    let r = g.push(Op::Unary(UnaryOp::Relu), vec![c], "").unwrap();
    let a = g
        .push(
            Op::AvgPool(Window {
                kernel: 2,
                stride: 1,
                pad: 0,
            }),
            vec![r],
            "",
        )
        .unwrap();
    let m = g
        .push(
            Op::MaxPool(Window {
                kernel: 2,
                stride: 2,
                pad: 1,
            }),
            vec![a],
            "",
        )
        .unwrap();
    let n = g.ty(m).per_sample();
    let fl = g.push_typed(Op::Reshape, vec![m], f(true, &[n]), "");
    let o = dense(&mut g, fl, "fc", 4);
    let l = g.push(Op::CrossEntropy, vec![o, y], "").unwrap();
    g.set_output("loss", l);
    check_trained(g, &[Gen::U(-1.0, 1.0), Gen::Int(0, 4)]);
}

#[test]
fn autodiff_rnn_distillation() {
    let (t, v) = (5, 6);
    let mut g = Graph::new("rnn2", true);
    let ids = g.input("ids", Type::i32(true, vec![t]));
    let teacher = g.input("teacher", f(true, &[t, v]));
    let emb = param(&mut g, "emb.weight", &[v, 4]);
    let whh = param(&mut g, "rnn.w_hh", &[7, 7]);
    let e = g.push(Op::Embedding, vec![ids, emb], "").unwrap();
    let xp = dense(&mut g, e, "rnn.xh", 7);
    let h = g
        .push(Op::RnnScan { act: UnaryOp::Tanh }, vec![xp, whh], "")
        .unwrap();
    let o = dense(&mut g, h, "out", v);
    let l = g.push(Op::KlDiv, vec![teacher, o], "").unwrap();
    g.set_output("loss", l);
    check_trained(g, &[Gen::Int(0, v as i32), Gen::U(-2.0, 2.0)]);
}

#[test]
fn malformed_graphs_are_errors() {
    let opts = JitOptions::default();
    // i32 where f32 is read.
    let g = single(
        "bad_dtype",
        Op::Unary(UnaryOp::Neg),
        &[Type::i32(true, vec![3])],
        Some(f(true, &[3])),
    );
    assert!(Jit::compile(&g, &opts).is_err());
    // Given types that do not match the op.
    let w = CONV_3X3;
    let g = single(
        "bad_conv_grad_input",
        Op::Conv2dGradInput(w),
        &[f(true, &[4, 8, 8]), f(false, &[4, 2, 3, 3])],
        Some(f(true, &[3, 8, 8])),
    );
    assert!(Jit::compile(&g, &opts).is_err());
    let g = single(
        "bad_avgpool_grad",
        Op::AvgPoolGrad(w),
        &[f(true, &[2, 5, 5])],
        Some(f(true, &[2, 7, 7])),
    );
    assert!(Jit::compile(&g, &opts).is_err());
    let g = single(
        "bad_embedding_grad",
        Op::EmbeddingGrad,
        &[Type::i32(true, vec![3]), f(true, &[3, 4])],
        Some(f(false, &[10, 5])),
    );
    assert!(Jit::compile(&g, &opts).is_err());
    // A node using a later value.
    let mut g = Graph::new("order", false);
    let x = g.input("x", f(true, &[2]));
    g.push_typed(Op::Unary(UnaryOp::Neg), vec![ValueId(5)], f(true, &[2]), "");
    g.set_output("out", x);
    assert!(Jit::compile(&g, &opts).is_err());
}
