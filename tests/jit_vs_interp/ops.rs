//! Each op alone on random shapes and inputs, its gradient op beside it.

use super::*;

#[test]
fn unary_and_unary_grad() {
    let ops = [
        UnaryOp::Neg,
        UnaryOp::Relu,
        UnaryOp::Sigmoid,
        UnaryOp::Tanh,
        UnaryOp::Exp,
        UnaryOp::Log,
    ];
    let mut rng = Rng(1);
    for op in ops {
        for &batch in &BATCHES {
            let n = rng.range(1, 37);
            let t = f(true, &[n]);
            let x = if op == UnaryOp::Log {
                Gen::U(0.05, 6.0)
            } else {
                Gen::U(-6.0, 6.0)
            };
            compare(
                &single(op.name(), Op::Unary(op), std::slice::from_ref(&t), None),
                &[x],
                batch,
                rng.next(),
                TOL,
            );
            let v = match op {
                UnaryOp::Sigmoid => Gen::U(0.0, 1.0),
                UnaryOp::Tanh => Gen::U(-1.0, 1.0),
                UnaryOp::Exp | UnaryOp::Log => Gen::U(0.05, 5.0),
                _ => Gen::U(-2.0, 2.0),
            };
            let g = single(
                &format!("{}_grad", op.name()),
                Op::UnaryGrad(op),
                &[t.clone(), t],
                None,
            );
            compare(&g, &[v, Gen::U(-2.0, 2.0)], batch, rng.next(), TOL);
        }
    }
}

#[test]
fn binary_with_broadcast() {
    let mut rng = Rng(2);
    for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
        for &batch in &BATCHES {
            let t = f(true, &[rng.range(1, 9), rng.range(1, 9)]);
            let s = Type::scalar();
            let b = if op == BinaryOp::Div {
                Gen::U(0.5, 2.0)
            } else {
                Gen::U(-2.0, 2.0)
            };
            for (x, y) in [
                (t.clone(), t.clone()),
                (s.clone(), t.clone()),
                (t.clone(), s.clone()),
            ] {
                let g = single(op.name(), Op::Binary(op), &[x, y], None);
                compare(&g, &[b, b], batch, rng.next(), TOL);
            }
        }
    }
}

#[test]
fn matmul_all_layouts() {
    let mut rng = Rng(3);
    for &batch in &BATCHES {
        for _ in 0..3 {
            let (m, k, n) = (rng.range(1, 5), rng.range(1, 40), rng.range(1, 23));
            let a = f(true, &[m, k]);
            let u = Gen::U(-1.0, 1.0);
            compare(
                &single(
                    "mm",
                    Op::MatMul {
                        ta: false,
                        tb: false,
                    },
                    &[a.clone(), f(false, &[k, n])],
                    None,
                ),
                &[u, u],
                batch,
                rng.next(),
                TOL,
            );
            compare(
                &single(
                    "mm_tb",
                    Op::MatMul {
                        ta: false,
                        tb: true,
                    },
                    &[a.clone(), f(false, &[n, k])],
                    None,
                ),
                &[u, u],
                batch,
                rng.next(),
                TOL,
            );
            compare(
                &single(
                    "mm_ta",
                    Op::MatMul {
                        ta: true,
                        tb: false,
                    },
                    &[a, f(true, &[m, n])],
                    None,
                ),
                &[u, u],
                batch,
                rng.next(),
                TOL,
            );
        }
        // One row a sample and small weights: the scalar small-matmul kernel (XOR's layers).
        for _ in 0..4 {
            let (k, n) = (rng.range(1, 8), rng.range(1, 8));
            let u = Gen::U(-1.0, 1.0);
            for (name, ta, tb, a, b) in [
                ("small", false, false, f(true, &[k]), f(false, &[k, n])),
                ("small_tb", false, true, f(true, &[k]), f(false, &[n, k])),
                ("small_ta", true, false, f(true, &[k]), f(true, &[n])),
            ] {
                compare(
                    &single(name, Op::MatMul { ta, tb }, &[a, b], None),
                    &[u, u],
                    batch,
                    rng.next(),
                    TOL,
                );
            }
        }
    }
}

#[test]
fn fused_chains() {
    let mut rng = Rng(14);
    let u = Gen::U(-3.0, 3.0);
    for &batch in &BATCHES {
        let dims = vec![rng.range(1, 5), rng.range(1, 9), rng.range(1, 9)];
        let t = f(true, &dims);
        let c = t.dim(1, batch);
        for acts in [
            vec![UnaryOp::Relu],
            vec![UnaryOp::Sigmoid],
            vec![UnaryOp::Tanh, UnaryOp::Neg, UnaryOp::Exp],
        ] {
            let chain = Chain {
                bias: Some(1),
                acts: acts.clone(),
            };
            let g = single(
                "fused",
                Op::Fused(chain),
                &[t.clone(), f(false, &[c])],
                None,
            );
            compare(&g, &[u, u], batch, rng.next(), TOL);
            let chain = Chain { bias: None, acts };
            compare(
                &single(
                    "fused_unary",
                    Op::Fused(chain),
                    std::slice::from_ref(&t),
                    None,
                ),
                &[u],
                batch,
                rng.next(),
                TOL,
            );
        }
    }
}

#[test]
fn bias_add_and_grad() {
    let mut rng = Rng(4);
    for &batch in &BATCHES {
        let shapes: [(Vec<usize>, usize); 3] = [
            (vec![rng.range(1, 20)], 1),
            (vec![rng.range(1, 5), rng.range(1, 6), rng.range(1, 6)], 1),
            (vec![rng.range(1, 5), rng.range(1, 13)], 2),
        ];
        for (dims, axis) in shapes {
            let t = f(true, &dims);
            let c = t.dim(axis, batch);
            let u = Gen::U(-1.0, 1.0);
            compare(
                &single(
                    "bias_add",
                    Op::BiasAdd { axis },
                    &[t.clone(), f(false, &[c])],
                    None,
                ),
                &[u, u],
                batch,
                rng.next(),
                TOL,
            );
            compare(
                &single("bias_grad", Op::BiasGrad { axis }, &[t], None),
                &[u],
                batch,
                rng.next(),
                TOL,
            );
        }
    }
    // A convolution's bias gradient (channels of several values) and a wide layer's are summed
    // by parts of the channels on the threads: 12 channels in 6 parts, 7 in 7, 16 in 8, 784
    // columns in 8 parts of 98 (f32x4 groups and a tail each), 300 in 6, 263 (prime) in one;
    // bit-identical.
    let shapes: [&[usize]; 6] = [
        &[12, 5, 9],
        &[7, 3, 3],
        &[16, 14, 14],
        &[784],
        &[300],
        &[263],
    ];
    for dims in shapes {
        let g = single(
            "bias_grad",
            Op::BiasGrad { axis: 1 },
            &[f(true, dims)],
            None,
        );
        for batch in [1, 6] {
            compare(&g, &[Gen::U(-1.0, 1.0)], batch, 8, TOL);
            let one = run_once(&g, &[Gen::U(-1.0, 1.0)], batch, 1);
            for threads in [2, 3] {
                let many = run_once(&g, &[Gen::U(-1.0, 1.0)], batch, threads);
                assert_eq!(one, many, "{dims:?} batch {batch} threads {threads}");
            }
        }
    }
}

#[test]
fn convolution_and_gradients() {
    let mut rng = Rng(5);
    for &batch in &[1, 3, 8] {
        for _ in 0..3 {
            let (c, o) = (rng.range(1, 4), rng.range(1, 5));
            let k = rng.range(1, 3);
            let w = Window {
                kernel: k,
                stride: rng.range(1, 2),
                pad: rng.range(0, k - 1),
            };
            let (h, wd) = (rng.range(k, 9), rng.range(k, 9));
            let x = f(true, &[c, h, wd]);
            let wt = f(false, &[o, c, k, k]);
            let u = Gen::U(-1.0, 1.0);
            let g = single("conv2d", Op::Conv2d(w), &[x.clone(), wt.clone()], None);
            let y = g.ty(g.output("out").unwrap()).clone();
            compare(&g, &[u, u], batch, rng.next(), TOL);
            compare(
                &single(
                    "conv_gw",
                    Op::Conv2dGradWeight(w),
                    &[x.clone(), y.clone()],
                    None,
                ),
                &[u, u],
                batch,
                rng.next(),
                TOL,
            );
            compare(
                &single("conv_gi", Op::Conv2dGradInput(w), &[y, wt], Some(x)),
                &[u, u],
                batch,
                rng.next(),
                TOL,
            );
        }
    }
}

/// 2×2 max pooling of stride 2 (the CNN's) runs four windows per f32x4 step, rows of 7 or
/// 15 outputs ending with a step over their last four: against the interpreter for rows of 3
/// (scalar), 4, 7 and 15 outputs; and a NaN in any one of a window's four taps makes that
/// output NaN, and no other.
#[test]
fn max_pooling_2x2_by_fours_and_its_nans() {
    let w = POOL_2X2;
    for dims in [[1, 6, 6], [2, 8, 8], [3, 14, 14], [2, 4, 30]] {
        let g = single("maxpool", Op::MaxPool(w), &[f(true, &dims)], None);
        let gg = single(
            "maxpool_grad",
            Op::MaxPoolGrad(w),
            &[
                f(true, &dims),
                f(true, &[dims[0], dims[1] / 2, dims[2] / 2]),
            ],
            None,
        );
        for batch in [1, 3] {
            compare(&g, &[Gen::U(-1.0, 1.0)], batch, 11, TOL);
            compare(&gg, &[Gen::U(-1.0, 1.0), Gen::U(-1.0, 1.0)], batch, 12, TOL);
        }
    }
    let (h, wd) = (4, 16);
    let g = single("maxpool", Op::MaxPool(w), &[f(true, &[1, h, wd])], None);
    let mut jit = Jit::compile(&g, &JitOptions::default()).unwrap();
    for tap in 0..4 {
        let mut x: Vec<f32> = (0..h * wd).map(|i| (i % 5) as f32 - 2.0).collect();
        // Window (0, ox) for ox = tap and ox = tap + 4 gets its NaN at tap `tap`.
        for ox in [tap, tap + 4] {
            let (dy, dx) = (tap / 2, tap % 2);
            x[dy * wd + 2 * ox + dx] = f32::NAN;
        }
        jit.run(1, &[Feed::F32(&x)], &[], StepCtx::default())
            .unwrap();
        let y = jit.output("out").unwrap();
        for (i, v) in y.iter().enumerate() {
            let nan = i == tap || i == tap + 4;
            assert_eq!(v.is_nan(), nan, "tap {tap}: output {i} is {v}");
        }
    }
}

#[test]
fn pooling_and_gradients() {
    let mut rng = Rng(6);
    for &batch in &BATCHES {
        for _ in 0..2 {
            let k = rng.range(1, 3);
            let w = Window {
                kernel: k,
                stride: rng.range(1, 3),
                pad: rng.range(0, k / 2),
            };
            let x = f(true, &[rng.range(1, 3), rng.range(k, 8), rng.range(k, 8)]);
            let u = Gen::U(-1.0, 1.0);
            let g = single("maxpool", Op::MaxPool(w), std::slice::from_ref(&x), None);
            let y = g.ty(g.output("out").unwrap()).clone();
            compare(&g, &[u], batch, rng.next(), TOL);
            compare(
                &single("avgpool", Op::AvgPool(w), std::slice::from_ref(&x), None),
                &[u],
                batch,
                rng.next(),
                TOL,
            );
            compare(
                &single(
                    "maxpool_grad",
                    Op::MaxPoolGrad(w),
                    &[x.clone(), y.clone()],
                    None,
                ),
                &[u, u],
                batch,
                rng.next(),
                TOL,
            );
            compare(
                &single("avgpool_grad", Op::AvgPoolGrad(w), &[y], Some(x)),
                &[u],
                batch,
                rng.next(),
                TOL,
            );
        }
    }
}

/// Windows wider than `codegen::pool`'s unrolling limit (8 taps a side) are looped over: the
/// same values and gradients, padding, strides and overlapping windows included.
#[test]
fn pooling_over_wide_windows() {
    let u = Gen::U(-1.0, 1.0);
    for (k, stride, pad, hw) in [
        (9, 3, 4, 20),
        (12, 12, 0, 12),
        (10, 1, 2, 13),
        (16, 5, 7, 23),
    ] {
        let w = Window {
            kernel: k,
            stride,
            pad,
        };
        let x = f(true, &[2, hw, hw]);
        let g = single("maxpool", Op::MaxPool(w), std::slice::from_ref(&x), None);
        let y = g.ty(g.output("out").unwrap()).clone();
        compare(&g, &[u], 3, k as u64, TOL);
        let avg = single("avgpool", Op::AvgPool(w), std::slice::from_ref(&x), None);
        compare(&avg, &[u], 3, k as u64 + 1, TOL);
        let grad = single(
            "maxpool_grad",
            Op::MaxPoolGrad(w),
            &[x.clone(), y.clone()],
            None,
        );
        compare(&grad, &[u, u], 3, k as u64 + 2, TOL);
        let avg_grad = single("avgpool_grad", Op::AvgPoolGrad(w), &[y], Some(x));
        compare(&avg_grad, &[u], 3, k as u64 + 3, TOL);
    }
}

/// ... and their kernels stay small: unrolled, the 4,096 taps of a 64×64 window made kernels
/// of about 80,000 lines of Cranelift IR each (a 128×128 one took minutes to compile).
#[test]
fn wide_pooling_windows_are_not_unrolled() {
    let w = Window {
        kernel: 64,
        stride: 64,
        pad: 0,
    };
    let (x, y) = (f(true, &[1, 64, 64]), f(true, &[1, 1, 1]));
    for g in [
        single("maxpool", Op::MaxPool(w), std::slice::from_ref(&x), None),
        single(
            "maxpool_grad",
            Op::MaxPoolGrad(w),
            &[x.clone(), y.clone()],
            None,
        ),
        single("avgpool", Op::AvgPool(w), std::slice::from_ref(&x), None),
        single("avgpool_grad", Op::AvgPoolGrad(w), &[y], Some(x)),
    ] {
        let clif = nnc::codegen::clif_text(&g).unwrap();
        let lines = clif.lines().count();
        assert!(lines < 2_000, "{}: {lines} lines of Cranelift IR", g.name);
    }
}

#[test]
fn ids_embedding_one_hot() {
    let mut rng = Rng(7);
    for &batch in &BATCHES {
        let (t, v, e) = (rng.range(1, 6), rng.range(1, 12), rng.range(1, 9));
        let ids = Type::i32(true, vec![t]);
        let u = Gen::U(-1.0, 1.0);
        let vi = Gen::Int(0, v as i32);
        compare(
            &single(
                "embedding",
                Op::Embedding,
                &[ids.clone(), f(false, &[v, e])],
                None,
            ),
            &[vi, u],
            batch,
            rng.next(),
            TOL,
        );
        let g = single(
            "embedding_grad",
            Op::EmbeddingGrad,
            &[ids.clone(), f(true, &[t, e])],
            Some(f(false, &[v, e])),
        );
        compare(&g, &[vi, u], batch, rng.next(), TOL);
        // Out-of-range ids give zero rows.
        compare(
            &single("one_hot", Op::OneHot { n: v }, &[ids], None),
            &[Gen::Int(-1, v as i32 + 1)],
            batch,
            rng.next(),
            TOL,
        );
    }
}

#[test]
fn recurrences() {
    let mut rng = Rng(8);
    for act in [UnaryOp::Tanh, UnaryOp::Relu, UnaryOp::Sigmoid] {
        // 11 = one block of 8 sequences on the GEMM tile and 3 on the one-row loop.
        for &batch in BATCHES.iter().chain(&[11]) {
            let (t, h) = (rng.range(1, 7), rng.range(1, 37));
            let s = f(true, &[t, h]);
            let w = f(false, &[h, h]);
            let u = Gen::U(-1.0, 1.0);
            // The recurrent weight at its usual scale (±1/√H), so that states stay O(1).
            let ws = 1.0 / (h as f32).sqrt();
            let wg = Gen::U(-ws, ws);
            compare(
                &single(
                    "rnn_scan",
                    Op::RnnScan { act },
                    &[s.clone(), w.clone()],
                    None,
                ),
                &[u, wg],
                batch,
                rng.next(),
                TOL,
            );
            let hv = if act == UnaryOp::Sigmoid {
                Gen::U(0.0, 1.0)
            } else {
                u
            };
            let g = single(
                "rnn_scan_grad",
                Op::RnnScanGrad { act },
                &[s.clone(), w, s.clone()],
                None,
            );
            compare(&g, &[hv, wg, u], batch, rng.next(), TOL);
            compare(
                &single("time_shift", Op::TimeShift, &[s], None),
                &[u],
                batch,
                rng.next(),
                TOL,
            );
        }
    }
}

/// A data-parallel rank runs samples `first..` of the step's batch: with `StepCtx::first` set,
/// both back ends give those rows the masks they have in the whole batch.
#[test]
fn dropout_of_part_of_a_batch_takes_the_whole_batch_masks() {
    let (batch, width, first) = (6, 5, 2);
    let g = single(
        "dropout",
        Op::Dropout { p: 0.5, salt: 0 },
        &[f(true, &[width])],
        None,
    );
    let x: Vec<f32> = (0..batch * width).map(|i| 1.0 + i as f32).collect();
    let whole = StepCtx {
        seed: 7,
        step: 3,
        first: 0,
    };
    let part = StepCtx {
        first: first as u64,
        ..whole
    };
    let rows = first * width..(first + 3) * width;
    let x64 = |x: &[f32]| vec![x.iter().map(|&v| v as f64).collect::<Vec<_>>()];
    let all = interp::eval(&g, batch, &x64(&x), &[], whole).unwrap();
    let some = interp::eval(&g, 3, &x64(&x[rows.clone()]), &[], part).unwrap();
    let out = g.outputs[0].value.index();
    assert_eq!(some[out], all[out][rows.clone()]);
    assert!(some[out].contains(&0.0) && some[out].iter().any(|&v| v != 0.0));
    let mut jit = Jit::compile(&g, &JitOptions::default()).unwrap();
    jit.run(batch, &[Feed::F32(&x)], &[], whole).unwrap();
    let all = jit.output("out").unwrap().to_vec();
    jit.run(3, &[Feed::F32(&x[rows.clone()])], &[], part)
        .unwrap();
    assert_eq!(jit.output("out").unwrap(), &all[rows]);
}

#[test]
fn dropout_matches_the_shared_mask() {
    let mut rng = Rng(9);
    for &batch in &BATCHES {
        for (p, salt) in [(0.1f32, 0), (0.5, 3)] {
            let t = f(true, &[rng.range(1, 30)]);
            let u = Gen::U(-1.0, 1.0);
            compare(
                &single(
                    "dropout",
                    Op::Dropout { p, salt },
                    std::slice::from_ref(&t),
                    None,
                ),
                &[u],
                batch,
                rng.next(),
                1e-6,
            );
            compare(
                &single("dropout_grad", Op::DropoutGrad { p, salt }, &[t], None),
                &[u],
                batch,
                rng.next(),
                1e-6,
            );
        }
    }
}

/// Layer normalization and its two gradients, over rows of 2 to 37 (a vector's tail and
/// several f32x4s), with rows far from mean 0 and variance 1.
#[test]
fn layer_norm_family() {
    let mut rng = Rng(21);
    for &batch in &BATCHES {
        for _ in 0..3 {
            let d = rng.range(2, 38);
            let t = f(true, &[rng.range(1, 4), d]);
            let row = f(false, &[d]);
            let eps = 1e-5;
            let (x, w) = (Gen::U(-3.0, 9.0), Gen::U(-2.0, 2.0));
            let ln = Op::LayerNorm { eps };
            let ins = [t.clone(), row.clone(), row.clone()];
            compare(
                &single("layer_norm", ln, &ins, None),
                &[x, w, w],
                batch,
                rng.next(),
                TOL,
            );
            let grad = Op::LayerNormGrad { eps };
            let ins = [t.clone(), row, t.clone()];
            let g = single("layer_norm_grad", grad, &ins, None);
            compare(&g, &[x, w, Gen::U(-1.0, 1.0)], batch, rng.next(), TOL);
            let wg = Op::LayerNormWeightGrad { eps };
            let g = single("layer_norm_weight_grad", wg, &[t.clone(), t], None);
            compare(&g, &[x, Gen::U(-1.0, 1.0)], batch, rng.next(), TOL);
        }
    }
}

/// Rows far from zero (mean 1,000 σ): the sum's f32 rounding would move the mean by 3e-4 σ
/// if the kernel did not correct it with the mean deviation.
#[test]
fn layer_norm_of_rows_far_from_zero() {
    let t = f(true, &[1024]);
    let row = f(false, &[1024]);
    let g = single(
        "layer_norm",
        Op::LayerNorm { eps: 1e-5 },
        &[t, row.clone(), row],
        None,
    );
    let gens = [Gen::U(999.0, 1001.0), Gen::U(0.5, 1.5), Gen::U(-0.1, 0.1)];
    compare(&g, &gens, 8, 31, 1e-4);
}

#[test]
fn softmax_family() {
    let mut rng = Rng(10);
    for &batch in &BATCHES {
        let t = f(true, &[rng.range(1, 4), rng.range(1, 19)]);
        let u = Gen::U(-8.0, 8.0);
        compare(
            &single("softmax", Op::Softmax, std::slice::from_ref(&t), None),
            &[u],
            batch,
            rng.next(),
            TOL,
        );
        compare(
            &single(
                "log_softmax",
                Op::LogSoftmax,
                std::slice::from_ref(&t),
                None,
            ),
            &[u],
            batch,
            rng.next(),
            TOL,
        );
        compare(
            &single(
                "softmax_grad",
                Op::SoftmaxGrad,
                &[t.clone(), t.clone()],
                None,
            ),
            &[Gen::U(0.0, 1.0), u],
            batch,
            rng.next(),
            TOL,
        );
        let g = single(
            "log_softmax_grad",
            Op::LogSoftmaxGrad,
            &[t.clone(), t],
            None,
        );
        compare(
            &g,
            &[Gen::U(-5.0, 0.0), Gen::U(-1.0, 1.0)],
            batch,
            rng.next(),
            TOL,
        );
    }
}

#[test]
fn losses_and_gradients() {
    let mut rng = Rng(11);
    let s = Type::scalar();
    for &batch in &BATCHES {
        let c = rng.range(1, 13);
        let t = f(true, &[c]);
        let labels = Type::i32(true, vec![]);
        let (u, li, dl) = (Gen::U(-5.0, 5.0), Gen::Int(0, c as i32), Gen::U(0.5, 2.0));
        let prob = Gen::U(0.0, 1.0);
        compare(
            &single("ce", Op::CrossEntropy, &[t.clone(), labels.clone()], None),
            &[u, li],
            batch,
            rng.next(),
            TOL,
        );
        compare(
            &single(
                "ce_grad",
                Op::CrossEntropyGrad,
                &[t.clone(), labels, s.clone()],
                None,
            ),
            &[u, li, dl],
            batch,
            rng.next(),
            TOL,
        );
        compare(
            &single(
                "soft_ce",
                Op::SoftCrossEntropy,
                &[t.clone(), t.clone()],
                None,
            ),
            &[u, prob],
            batch,
            rng.next(),
            TOL,
        );
        let g = single(
            "soft_ce_grad",
            Op::SoftCrossEntropyGrad,
            &[t.clone(), t.clone(), s.clone()],
            None,
        );
        compare(&g, &[u, prob, dl], batch, rng.next(), TOL);
        compare(
            &single("kl", Op::KlDiv, &[t.clone(), t.clone()], None),
            &[u, u],
            batch,
            rng.next(),
            TOL,
        );
        compare(
            &single(
                "kl_grad",
                Op::KlDivGrad,
                &[t.clone(), t.clone(), s.clone()],
                None,
            ),
            &[u, u, dl],
            batch,
            rng.next(),
            TOL,
        );
        compare(
            &single("mse", Op::Mse, &[t.clone(), t.clone()], None),
            &[u, u],
            batch,
            rng.next(),
            TOL,
        );
        compare(
            &single(
                "mse_grad",
                Op::MseGrad,
                &[t.clone(), t.clone(), s.clone()],
                None,
            ),
            &[u, u, dl],
            batch,
            rng.next(),
            TOL,
        );
        compare(
            &single("bce", Op::Bce, &[t.clone(), t.clone()], None),
            &[prob, prob],
            batch,
            rng.next(),
            TOL,
        );
        let g = single(
            "bce_grad",
            Op::BceGrad,
            &[t.clone(), t.clone(), s.clone()],
            None,
        );
        compare(&g, &[Gen::U(0.05, 0.95), prob, dl], batch, rng.next(), TOL);
        compare(
            &single("sum_squares", Op::SumSquares, &[t], None),
            &[u],
            batch,
            rng.next(),
            TOL,
        );
        // A mean made a sum: times the elements of a sequence of positions, or its rows of c.
        let seq = f(true, &[3, c]);
        for per in [1, c] {
            let g = single(
                "mean_to_sum",
                Op::MeanToSum { per },
                &[s.clone(), seq.clone()],
                None,
            );
            compare(&g, &[dl, u], batch, rng.next(), TOL);
        }
    }
}

/// Logits far from 0 (a diverging run's): `x − logsumexp` is `(x − max) − log Σ…`, so the
/// logarithm is not absorbed by a large max (logits near 1e6 lost up to 0.03 of it, near 1e8
/// all of it: a cross-entropy of 0 for equal logits).
#[test]
fn softmax_losses_of_large_logits_keep_their_logarithm() {
    let t = f(true, &[2, 5]);
    let labels = Type::i32(true, vec![2]);
    let prob = Gen::U(0.0, 1.0);
    for (k, u) in [Gen::U(1e6, 1e6 + 8.0), Gen::U(-1e6 - 8.0, -1e6)]
        .into_iter()
        .enumerate()
    {
        let seed = 20 + k as u64;
        let ce = single("ce", Op::CrossEntropy, &[t.clone(), labels.clone()], None);
        compare(&ce, &[u, Gen::Int(0, 5)], 3, seed, TOL);
        let soft = single(
            "soft_ce",
            Op::SoftCrossEntropy,
            &[t.clone(), t.clone()],
            None,
        );
        compare(&soft, &[u, prob], 3, seed, TOL);
        compare(
            &single("kl", Op::KlDiv, &[t.clone(), t.clone()], None),
            &[u, u],
            3,
            seed,
            TOL,
        );
        let ls = single(
            "log_softmax",
            Op::LogSoftmax,
            std::slice::from_ref(&t),
            None,
        );
        compare(&ls, &[u], 3, seed, TOL);
    }
}

/// Found by the `jit_vs_interp` fuzz target: a saturated sigmoid before `bce` hits the clamp,
/// and the two back ends must clamp to the same (f32) bounds.
#[test]
fn bce_clamps_saturated_probabilities_alike() {
    let s = Type::scalar();
    let t = f(true, &[4]);
    let dl = Gen::U(0.5, 2.0);
    for (lo, hi) in [(0.99999994, 1.0), (0.0, 1e-9)] {
        let p = Gen::U(lo, hi);
        let g = single("bce", Op::Bce, &[t.clone(), t.clone()], None);
        compare(&g, &[p, Gen::U(0.0, 1.0)], 3, 5, TOL);
        let g = single(
            "bce_grad",
            Op::BceGrad,
            &[t.clone(), t.clone(), s.clone()],
            None,
        );
        compare(&g, &[p, Gen::U(0.0, 1.0), dl], 3, 6, TOL);
    }
}

#[test]
fn reshape_aliases_its_input() {
    let mut g = Graph::new("reshape", false);
    let x = g.input("x", f(true, &[2, 3, 4]));
    let y = g.push(Op::Unary(UnaryOp::Neg), vec![x], "neg").unwrap();
    let r = g.push_typed(Op::Reshape, vec![y], f(true, &[24]), "flat");
    let z = g.push(Op::Unary(UnaryOp::Relu), vec![r], "relu").unwrap();
    g.set_output("flat", r);
    g.set_output("out", z);
    g.set_output("x", x);
    for &batch in &BATCHES {
        compare(&g, &[Gen::U(-1.0, 1.0)], batch, batch as u64, TOL);
    }
}

/// Global max and average pooling and their gradients, on maps of every shape (square or
/// not, 1×1 included); ties (relu's zeros, a whole map of them when every input is negative)
/// route dy to the first maximum in both back ends.
#[test]
fn global_pooling_and_gradients() {
    let mut rng = Rng(16);
    let u = Gen::U(-1.0, 1.0);
    for &batch in &BATCHES {
        for _ in 0..3 {
            let x = f(true, &[rng.range(1, 4), rng.range(1, 9), rng.range(1, 9)]);
            let y = f(true, &x.dims[..1]);
            for op in [Op::GlobalMaxPool, Op::GlobalAvgPool] {
                let g = single(op.name().as_str(), op, std::slice::from_ref(&x), None);
                assert_eq!(*g.ty(g.output("out").unwrap()), y);
                compare(&g, &[u], batch, rng.next(), TOL);
            }
            compare(
                &single(
                    "global_maxpool_grad",
                    Op::GlobalMaxPoolGrad,
                    &[x.clone(), y.clone()],
                    None,
                ),
                &[u, u],
                batch,
                rng.next(),
                TOL,
            );
            compare(
                &single(
                    "global_avgpool_grad",
                    Op::GlobalAvgPoolGrad,
                    std::slice::from_ref(&y),
                    Some(x.clone()),
                ),
                &[u],
                batch,
                rng.next(),
                TOL,
            );
            for lo_hi in [(-1.0, -0.1), (-1.0, 0.2)] {
                let mut g = Graph::new("global_maxpool_ties", true);
                let xi = g.input("x", x.clone());
                let dy = g.input("dy", y.clone());
                let r = g.push(Op::Unary(UnaryOp::Relu), vec![xi], "").unwrap();
                let p = g.push(Op::GlobalMaxPool, vec![r], "").unwrap();
                let d = g.push(Op::GlobalMaxPoolGrad, vec![r, dy], "").unwrap();
                g.set_output("p", p);
                g.set_output("dx", d);
                compare(&g, &[Gen::U(lo_hi.0, lo_hi.1), u], batch, rng.next(), 0.0);
            }
        }
    }
}

/// Batch normalization's kernels (training and evaluation forward, the three gradients, the
/// batch statistics) on [C] vectors and [C, H, W] maps, with values far from mean 0 and
/// variance 1. The statistics of a channel of one value (batch 1 on [C]) are not compared:
/// the trainer refuses that batch before they are computed.
/// The training batch norm kernels of `[C]` vectors, four channels a step, give the bits of
/// the kernels that take one channel at a time, for every batch of 1 to 64 (on one thread and
/// on three).
#[test]
fn batch_norm_vectors_match_one_channel_at_a_time() {
    use nnc::codegen::with_scalar_channels;
    let eps = 1e-5;
    let (x, w, dy) = (Gen::U(-3.0, 9.0), Gen::U(-2.0, 2.0), Gen::U(-1.0, 1.0));
    let var = Gen::U(0.1, 4.0);
    for c in [4, 8, 12, 128, 130] {
        let (t, ch, stats) = (f(true, &[c]), f(false, &[c]), f(false, &[2, c]));
        let (s, cc) = (stats.clone(), ch.clone());
        let graphs = [
            (
                single(
                    "batch_norm",
                    Op::BatchNorm { eps },
                    &[t.clone(), s.clone(), cc.clone(), cc.clone()],
                    None,
                ),
                vec![x, var, w, w],
            ),
            (
                single(
                    "batch_norm_grad",
                    Op::BatchNormGrad { eps },
                    &[t.clone(), s.clone(), cc.clone(), t.clone(), cc.clone(), cc],
                    None,
                ),
                vec![x, var, w, dy, dy, dy],
            ),
            (
                single(
                    "batch_norm_weight_grad",
                    Op::BatchNormWeightGrad { eps },
                    &[t.clone(), s, t.clone()],
                    None,
                ),
                vec![x, var, dy],
            ),
            (
                single("batch_stats", Op::BatchStats { momentum: 0.1 }, &[t], None),
                vec![x],
            ),
        ];
        for (g, gens) in &graphs {
            let stats = g.name == "batch_stats";
            for batch in (1 + stats as usize)..=64 {
                let d = draw(g, gens, batch, &mut Rng(batch as u64));
                let one = bits(&with_scalar_channels(|| run_with(g, &d, batch, 1)));
                for threads in [1, 3] {
                    assert!(
                        one == bits(&run_with(g, &d, batch, threads)),
                        "{} [{c}] batch {batch} on {threads} threads",
                        g.name
                    );
                }
            }
        }
    }
}

#[test]
fn batch_norm_family() {
    let mut rng = Rng(23);
    for &batch in &BATCHES {
        for dims in [
            vec![rng.range(1, 20)],
            vec![rng.range(1, 6), 3, 5],
            vec![4, 1, 2],
            // [C] vectors of four channels a step, with and without a scalar remainder.
            vec![4],
            vec![8],
            vec![12],
            vec![128],
            vec![130],
        ] {
            let t = f(true, &dims);
            let ch = f(false, &dims[..1]);
            let eps = 1e-5;
            let (x, w, dy) = (Gen::U(-3.0, 9.0), Gen::U(-2.0, 2.0), Gen::U(-1.0, 1.0));
            let var = Gen::U(0.1, 4.0);
            // The batch statistics a training batch norm reads: means and unbiased variances
            // (any positive ones: the kernels take them as given).
            let stats = f(false, &[2, dims[0]]);
            let ins = [t.clone(), stats.clone(), ch.clone(), ch.clone()];
            let g = single("batch_norm", Op::BatchNorm { eps }, &ins, None);
            compare(&g, &[x, var, w, w], batch, rng.next(), TOL);
            let ins = [t.clone(), ch.clone(), ch.clone(), ch.clone(), ch.clone()];
            let g = single("batch_norm_eval", Op::BatchNormEval { eps }, &ins, None);
            compare(&g, &[x, w, w, x, var], batch, rng.next(), TOL);
            let (s, c) = (stats.clone(), ch.clone());
            let ins = [t.clone(), s, c.clone(), t.clone(), c.clone(), c];
            let g = single("batch_norm_grad", Op::BatchNormGrad { eps }, &ins, None);
            compare(&g, &[x, var, w, dy, dy, dy], batch, rng.next(), TOL);
            let ins = [t.clone(), ch.clone(), ch.clone()];
            let g = single(
                "batch_norm_eval_grad",
                Op::BatchNormEvalGrad { eps },
                &ins,
                None,
            );
            compare(&g, &[dy, w, var], batch, rng.next(), TOL);
            let wg = Op::BatchNormWeightGrad { eps };
            let ins = [t.clone(), stats, t.clone()];
            let g = single("batch_norm_weight_grad", wg, &ins, None);
            compare(&g, &[x, var, dy], batch, rng.next(), TOL);
            // The evaluation ops run sample by sample, the batch split over the threads: a
            // batch of 32,768 values or more is split, with the same bits as on one thread.
            let ins = [t.clone(), ch.clone(), ch.clone(), ch.clone(), ch.clone()];
            let g = single("batch_norm_eval", Op::BatchNormEval { eps }, &ins, None);
            let big = (1 << 15) / t.per_sample() + 3;
            let gens = [x, w, w, x, var];
            assert_eq!(
                run_once(&g, &gens, big, 1),
                run_once(&g, &gens, big, 3),
                "batch_norm_eval {t} batch {big}"
            );
            if batch * t.per_sample() / dims[0] > 1 {
                let st = Op::BatchStats { momentum: 0.1 };
                let g = single("batch_stats", st, &[t], None);
                compare(&g, &[x], batch, rng.next(), TOL);
            }
        }
    }
}
