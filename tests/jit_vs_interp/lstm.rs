//! The LSTM's ops (`lstm_scan`, `lstm`, `lstm_hidden`, `lstm_scan_grad`) alone and in a differentiated
//! graph, on sizes that take every path of the kernels: hidden sizes that are and are not
//! multiples of 4, one step, batches of 1, 3 (the one-row loop), 11 (a block of 8 on the GEMM
//! tile and 3 more) and 64; and the same bits on every thread count.

use super::*;

/// (T, H) pairs: H below 4, not a multiple of 4, a multiple of 4 and of 16; one step.
const SIZES: [(usize, usize); 5] = [(1, 5), (4, 1), (3, 6), (5, 8), (2, 16)];

fn batches() -> impl Iterator<Item = usize> {
    BATCHES.into_iter().chain([11])
}

#[test]
fn lstm_ops_alone() {
    let mut rng = Rng(31);
    for (t, h) in SIZES {
        let u = Gen::U(-1.0, 1.0);
        // The recurrent weight at its usual scale (±1/√H).
        let ws = 1.0 / (h as f32).sqrt();
        let wg = Gen::U(-ws, ws);
        let (xp, w) = (f(true, &[t, 4 * h]), f(false, &[h, 4 * h]));
        let (s, hs) = (f(true, &[t, 6 * h]), f(true, &[t, h]));
        for batch in batches() {
            let scan = single("lstm_scan", Op::LstmScan, &[xp.clone(), w.clone()], None);
            compare(&scan, &[Gen::U(-2.0, 2.0), wg], batch, rng.next(), TOL);
            let lstm = single("lstm", Op::Lstm, &[xp.clone(), w.clone()], None);
            compare(&lstm, &[Gen::U(-2.0, 2.0), wg], batch, rng.next(), TOL);
            let hidden = single(
                "lstm_hidden",
                Op::LstmHidden,
                std::slice::from_ref(&s),
                None,
            );
            compare(&hidden, &[u], batch, rng.next(), TOL);
            // The gradient's formula on any state: c and the gates drawn in −1..1.
            let grad = single(
                "lstm_scan_grad",
                Op::LstmScanGrad,
                &[s.clone(), w.clone(), hs.clone()],
                None,
            );
            compare(&grad, &[u, wg, u], batch, rng.next(), TOL);
        }
    }
}

/// Embedding → x·w_xh + b → lstm → dense per step → cross-entropy, differentiated.
fn char_lstm(t: usize, v: usize, h: usize) -> Graph {
    let mut g = Graph::new("char_lstm", true);
    let ids = g.input("ids", Type::i32(true, vec![t]));
    let tgt = g.input("tgt", Type::i32(true, vec![t]));
    let emb = param(&mut g, "emb.weight", &[v, 5]);
    let whh = param(&mut g, "lstm.w_hh", &[h, 4 * h]);
    let e = g.push(Op::Embedding, vec![ids, emb], "").unwrap();
    let xp = dense(&mut g, e, "lstm.xh", 4 * h);
    let s = g.push(Op::LstmScan, vec![xp, whh], "").unwrap();
    let hs = g.push(Op::LstmHidden, vec![s], "").unwrap();
    let o = dense(&mut g, hs, "out", v);
    let l = g.push(Op::CrossEntropy, vec![o, tgt], "").unwrap();
    g.set_output("loss", l);
    let mut t = nnc::autodiff::grad(&g).unwrap_or_else(|e| panic!("grad: {e}"));
    assert!(t.nodes.iter().any(|n| n.op == Op::LstmScanGrad));
    expose_all(&mut t);
    t
}

#[test]
fn lstm_forward_backward() {
    for (t, h) in SIZES {
        let g = char_lstm(t, 7, h);
        let gens = [Gen::Int(0, 7), Gen::Int(0, 7)];
        for batch in batches() {
            compare(&g, &gens, batch, 500 + batch as u64, TOL);
        }
    }
}

/// Each sequence is computed alone, in the same order whatever block or slice of the batch it
/// falls in: 2 and 3 threads give one thread's bits, forward and backward.
#[test]
fn lstm_bits_do_not_depend_on_threads() {
    let g = char_lstm(6, 7, 10);
    let gens = [Gen::Int(0, 7), Gen::Int(0, 7)];
    for batch in [37, 64] {
        let d = draw(&g, &gens, batch, &mut Rng(9));
        assert_same_bits_on_threads(&g, &d, batch, &format!("lstm at batch {batch}"));
    }
    let lstm = single(
        "lstm",
        Op::Lstm,
        &[f(true, &[6, 40]), f(false, &[10, 40])],
        None,
    );
    let gens = [Gen::U(-2.0, 2.0), Gen::U(-0.3, 0.3)];
    let d = draw(&lstm, &gens, 37, &mut Rng(10));
    assert_same_bits_on_threads(&lstm, &d, 37, "lstm without its state");
}

/// The evaluation graphs' `lstm` computes the hidden states of the training graphs'
/// `lstm_scan` → `lstm_hidden` to the bit: the same products and cell, in the same order.
#[test]
fn lstm_without_its_state_gives_the_same_bits() {
    for (t, h) in SIZES {
        let mut g = Graph::new("both", true);
        let xp = g.input("xp", f(true, &[t, 4 * h]));
        let w = g.input("w", f(false, &[h, 4 * h]));
        let s = g.push(Op::LstmScan, vec![xp, w], "").unwrap();
        let kept = g.push(Op::LstmHidden, vec![s], "").unwrap();
        let alone = g.push(Op::Lstm, vec![xp, w], "").unwrap();
        g.set_output("kept", kept);
        g.set_output("alone", alone);
        let gens = [Gen::U(-2.0, 2.0), Gen::U(-0.5, 0.5)];
        for batch in batches() {
            let out = run_once(&g, &gens, batch, 1);
            assert_eq!(
                bits(&out[..1]),
                bits(&out[1..]),
                "T {t}, H {h}, batch {batch}"
            );
        }
    }
}
