//! Whole graphs, forward and backward: an MLP (also on mostly-background inputs), a CNN, an RNN.

use super::*;

#[test]
fn mlp_forward_backward() {
    let mut g = mlp();
    expose_all(&mut g);
    for &batch in &BATCHES {
        compare(
            &g,
            &[Gen::U(-1.0, 1.0), Gen::Int(0, 5)],
            batch,
            100 + batch as u64,
            TOL,
        );
    }
}

/// The MLP on inputs that are mostly one value, 0 or −1 (MNIST's background before and after
/// normalizing to [−1, 1]): its first layer and weight gradient run on the compacted product,
/// with the bias and tanh fused into it once optimized, and agree with the interpreter.
#[test]
fn mlp_on_mostly_background_inputs() {
    for optimized in [false, true] {
        let mut g = mlp_of(200);
        expose_all(&mut g);
        if optimized {
            g = nnc::opt::optimize(&g, 1).unwrap();
        }
        for bg in [0.0, -1.0] {
            for &batch in &BATCHES {
                let x = Gen::Sparse { bg, density: 0.2 };
                compare(&g, &[x, Gen::Int(0, 5)], batch, 300 + batch as u64, TOL);
            }
        }
    }
}

/// conv(3×3, pad 1) → relu → maxpool 2 → flatten → dense → cross-entropy, and its backward pass.
#[test]
fn cnn_forward_backward() {
    let mut g = Graph::new("cnn", true);
    let x = g.input("x", f(true, &[2, 8, 8]));
    let y = g.input("y", Type::i32(true, vec![]));
    let wc = param(&mut g, "conv.w", &[4, 2, 3, 3]);
    let bc = param(&mut g, "conv.b", &[4]);
    let wd = param(&mut g, "dense.w", &[64, 3]);
    let win = CONV_3X3;
    let pool = POOL_2X2;
    let c = g.push(Op::Conv2d(win), vec![x, wc], "").unwrap();
    let c = g.push(Op::BiasAdd { axis: 1 }, vec![c, bc], "").unwrap();
    let r = g.push(Op::Unary(UnaryOp::Relu), vec![c], "").unwrap();
    let p = g.push(Op::MaxPool(pool), vec![r], "").unwrap();
    let fl = g.push_typed(Op::Reshape, vec![p], f(true, &[64]), "");
    let o = matmul(&mut g, false, false, fl, wd);
    let l = g.push(Op::CrossEntropy, vec![o, y], "").unwrap();
    let one = g.constant(1.0);
    let d_o = g.push(Op::CrossEntropyGrad, vec![o, y, one], "").unwrap();
    let d_wd = matmul(&mut g, true, false, fl, d_o);
    let d_fl = matmul(&mut g, false, true, d_o, wd);
    let d_p = g.push_typed(Op::Reshape, vec![d_fl], g.ty(p).clone(), "");
    let d_r = g.push(Op::MaxPoolGrad(pool), vec![r, d_p], "").unwrap();
    let d_c = g
        .push(Op::UnaryGrad(UnaryOp::Relu), vec![r, d_r], "")
        .unwrap();
    let d_bc = g.push(Op::BiasGrad { axis: 1 }, vec![d_c], "").unwrap();
    let d_wc = g.push(Op::Conv2dGradWeight(win), vec![x, d_c], "").unwrap();
    let d_x = g.push_typed(Op::Conv2dGradInput(win), vec![d_c, wc], g.ty(x).clone(), "");
    g.set_output("loss", l);
    for (n, v) in [
        ("grad:conv.w", d_wc),
        ("grad:conv.b", d_bc),
        ("grad:dense.w", d_wd),
        ("dx", d_x),
    ] {
        g.set_output(n, v);
    }
    expose_all(&mut g);
    for &batch in &BATCHES {
        compare(
            &g,
            &[Gen::U(-1.0, 1.0), Gen::Int(0, 3)],
            batch,
            200 + batch as u64,
            TOL,
        );
    }
}

/// Embedding → x·w_xh + b → tanh scan → dense per step → cross-entropy, and its backward pass.
#[test]
fn rnn_forward_backward() {
    let (t, v, h) = (6, 7, 8);
    let mut g = Graph::new("rnn", true);
    let ids = g.input("ids", Type::i32(true, vec![t]));
    let tgt = g.input("tgt", Type::i32(true, vec![t]));
    let emb = param(&mut g, "emb", &[v, 5]);
    let wxh = param(&mut g, "wxh", &[5, h]);
    let bh = param(&mut g, "bh", &[h]);
    let whh = param(&mut g, "whh", &[h, h]);
    let why = param(&mut g, "why", &[h, v]);
    let e = g.push(Op::Embedding, vec![ids, emb], "").unwrap();
    let xp = matmul(&mut g, false, false, e, wxh);
    let xp = g.push(Op::BiasAdd { axis: 2 }, vec![xp, bh], "").unwrap();
    let hs = g
        .push(Op::RnnScan { act: UnaryOp::Tanh }, vec![xp, whh], "")
        .unwrap();
    let o = matmul(&mut g, false, false, hs, why);
    let l = g.push(Op::CrossEntropy, vec![o, tgt], "").unwrap();
    let one = g.constant(1.0);
    let d_o = g.push(Op::CrossEntropyGrad, vec![o, tgt, one], "").unwrap();
    let d_why = matmul(&mut g, true, false, hs, d_o);
    let d_h = matmul(&mut g, false, true, d_o, why);
    let d_a = g
        .push(
            Op::RnnScanGrad { act: UnaryOp::Tanh },
            vec![hs, whh, d_h],
            "",
        )
        .unwrap();
    let hprev = g.push(Op::TimeShift, vec![hs], "").unwrap();
    let d_whh = matmul(&mut g, true, false, hprev, d_a);
    let d_bh = g.push(Op::BiasGrad { axis: 2 }, vec![d_a], "").unwrap();
    let d_wxh = matmul(&mut g, true, false, e, d_a);
    let d_e = matmul(&mut g, false, true, d_a, wxh);
    let d_emb = g.push_typed(Op::EmbeddingGrad, vec![ids, d_e], f(false, &[v, 5]), "");
    g.set_output("loss", l);
    for (n, val) in [
        ("whh", d_whh),
        ("bh", d_bh),
        ("wxh", d_wxh),
        ("emb", d_emb),
        ("why", d_why),
    ] {
        g.set_output(n, val);
    }
    expose_all(&mut g);
    for &batch in &BATCHES {
        compare(
            &g,
            &[Gen::Int(0, v as i32), Gen::Int(0, v as i32)],
            batch,
            300 + batch as u64,
            TOL,
        );
    }
}
