//! The GRU's kernels against the interpreter: the scan and its gradient alone, with and without
//! their second results, on odd sizes; a whole training graph; the same bits for every thread
//! count.

use super::*;

/// `gru_scan` on inputs [xp, w_hh, b_hh], its gates an output too when `gates`.
fn scan(t: usize, h: usize, gates: bool) -> Graph {
    let mut g = Graph::new(format!("gru_scan t={t} h={h}"), true);
    let xp = g.input("xp", f(true, &[t, 3 * h]));
    let w = g.input("w", f(false, &[h, 3 * h]));
    let b = g.input("b", f(false, &[3 * h]));
    let hs = g.push(Op::GruScan, vec![xp, w, b], "h").unwrap();
    g.set_output("h", hs);
    if gates {
        let gs = g.push(Op::GruGates, vec![hs], "gates").unwrap();
        g.set_output("gates", gs);
    }
    g
}

/// `gru_scan_grad` on inputs [h, gates, w_hh, dh], dhp an output too when `recur`.
fn scan_grad(t: usize, h: usize, recur: bool) -> Graph {
    let mut g = Graph::new(format!("gru_scan_grad t={t} h={h}"), true);
    let hs = g.input("h", f(true, &[t, h]));
    let gates = g.input("gates", f(true, &[t, 4 * h]));
    let w = g.input("w", f(false, &[h, 3 * h]));
    let dh = g.input("dh", f(true, &[t, h]));
    let dxp = g
        .push(Op::GruScanGrad, vec![hs, gates, w, dh], "dxp")
        .unwrap();
    g.set_output("dxp", dxp);
    if recur {
        let dhp = g.push(Op::GruRecurGrad, vec![dxp], "dhp").unwrap();
        g.set_output("dhp", dhp);
    }
    g
}

#[test]
fn gru_scan_and_its_gradient_match_the_interpreter() {
    let mut rng = Rng(31);
    // T = 1 (no recurrence), hidden sizes below, at and off the 4-lane vectors and the
    // 16-unit blocks; 11 = one block of 8 sequences on the GEMM tile and 3 on the one-row loop.
    for (t, h) in [(1, 5), (2, 1), (3, 4), (5, 7), (4, 16), (6, 19), (3, 33)] {
        let ws = 1.0 / (h as f32).sqrt();
        let (u, wg) = (Gen::U(-1.0, 1.0), Gen::U(-ws, ws));
        for &batch in BATCHES.iter().chain(&[11]) {
            for second in [true, false] {
                compare(&scan(t, h, second), &[u, wg, wg], batch, rng.next(), TOL);
                // Gates as a forward pass leaves them: r, z, n in (0, 1) will do.
                compare(
                    &scan_grad(t, h, second),
                    &[u, Gen::U(0.0, 1.0), wg, u],
                    batch,
                    rng.next(),
                    TOL,
                );
            }
        }
    }
}

/// A character model: embedding, a GRU of `h` units, a dense layer and cross-entropy.
fn char_gru(t: usize, v: usize, h: usize, frozen_recurrence: bool) -> Graph {
    let mut g = Graph::new("char_gru", true);
    let ids = g.input("ids", Type::i32(true, vec![t]));
    let labels = g.input("labels", Type::i32(true, vec![t]));
    let emb = param(&mut g, "emb.weight", &[v, 6]);
    let recurrent = |g: &mut Graph, path: &str, dims: &[usize]| {
        g.add_param(Param {
            path: path.into(),
            dims: dims.to_vec(),
            init: Init::Zeros,
            frozen: frozen_recurrence,
        })
    };
    let whh = recurrent(&mut g, "gru.w_hh", &[h, 3 * h]);
    let bhh = recurrent(&mut g, "gru.bias_hh", &[3 * h]);
    let e = g.push(Op::Embedding, vec![ids, emb], "").unwrap();
    let xp = dense(&mut g, e, "gru.xh", 3 * h);
    let hs = g.push(Op::GruScan, vec![xp, whh, bhh], "").unwrap();
    let o = dense(&mut g, hs, "out", v);
    let l = g.push(Op::CrossEntropy, vec![o, labels], "").unwrap();
    g.set_output("loss", l);
    g
}

#[test]
fn autodiff_char_gru() {
    let v = 7;
    let gens = [Gen::Int(0, v as i32), Gen::Int(0, v as i32)];
    super::autodiff::check_trained(char_gru(5, v, 9, false), &gens);
    // With w_hh and b_hh frozen nothing reads dhp: the gradient kernel writes none.
    let g = char_gru(4, v, 6, true);
    let t = nnc::autodiff::grad(&g).unwrap();
    assert!(!t.nodes.iter().any(|n| n.op == Op::GruRecurGrad));
    assert!(t.nodes.iter().any(|n| n.op == Op::GruScanGrad));
    super::autodiff::check_trained(g, &gens);
}

#[test]
fn gru_training_is_bit_identical_on_any_thread_count() {
    let v = 11;
    let g = nnc::autodiff::grad(&char_gru(6, v, 13, false)).unwrap();
    let gens = [Gen::Int(0, v as i32), Gen::Int(0, v as i32)];
    // 37 and 64 sequences split over threads into slices whose blocks of 8 fall elsewhere.
    for batch in [64, 37] {
        let a = run_once(&g, &gens, batch, 1);
        assert_eq!(a, run_once(&g, &gens, batch, 1));
        assert_eq!(a, run_once(&g, &gens, batch, 2), "threads 2, batch {batch}");
        assert_eq!(a, run_once(&g, &gens, batch, 3), "threads 3, batch {batch}");
    }
}
