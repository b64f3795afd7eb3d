//! Determinism: the same bits on every run and for every thread count, batch-1 splits over
//! channels, floating-point modes on every worker, and bad feeds refused.

use super::*;

/// A row-parallel kernel reading one value twice (`x · x`, relu's gradient masked by the value
/// it is taken at) runs on slices of the batch with that value moved once per slice: the
/// results at 3 threads are the 1-thread ones.
#[test]
fn a_value_read_twice_by_a_split_kernel_is_sliced_once() {
    let x = f(true, &[1024]);
    let square = single(
        "square",
        Op::Binary(BinaryOp::Mul),
        &[x.clone(), x.clone()],
        None,
    );
    // `single` gives each operand its own input: read the first twice instead.
    let mut g = Graph::new("x·x", true);
    let v = g.input("x", x.clone());
    let sq = g.push(Op::Binary(BinaryOp::Mul), vec![v, v], "sq").unwrap();
    let rg = g
        .push(Op::UnaryGrad(UnaryOp::Sigmoid), vec![sq, sq], "g")
        .unwrap();
    g.set_output("sq", sq);
    g.set_output("g", rg);
    let gens = [Gen::U(-1.0, 1.0)];
    for batch in [64, 67] {
        compare(&g, &gens, batch, 5, TOL);
        assert_eq!(run_once(&g, &gens, batch, 1), run_once(&g, &gens, batch, 3));
    }
    let gens2 = [Gen::U(-1.0, 1.0), Gen::U(-1.0, 1.0)];
    assert_eq!(
        run_once(&square, &gens2, 64, 1),
        run_once(&square, &gens2, 64, 3)
    );
}

#[test]
fn runs_are_bit_identical_and_thread_count_does_not_matter() {
    let g = mlp();
    let gens = [Gen::U(-1.0, 1.0), Gen::Int(0, 5)];
    let a = run_once(&g, &gens, 64, 1);
    assert_eq!(a, run_once(&g, &gens, 64, 1));
    assert_eq!(a, run_once(&g, &gens, 64, 2));
    let g = wide();
    let gens = [Gen::U(-1.0, 1.0), Gen::U(-1.0, 1.0), Gen::U(-1.0, 1.0)];
    for batch in [64, 37] {
        let a = run_once(&g, &gens, batch, 1);
        assert_eq!(a, run_once(&g, &gens, batch, 1));
        assert_eq!(a, run_once(&g, &gens, batch, 2), "threads 2, batch {batch}");
        assert_eq!(a, run_once(&g, &gens, batch, 3), "threads 3, batch {batch}");
    }
    // Sums of 256 products of magnitude ~1 that cancel: f32 rounding reaches ~1e-5 absolute.
    compare(&g, &gens, 64, 9, 1e-4);
}

/// The weight gradient splits the rows of dW (O) over threads in blocks of the GEMM tile:
/// O = 20 splits 16 + 4 or 8 + 8 + 4, and O = 18 would leave a 2-row tail (the narrow GEMM
/// kernel, another summation order), which the split must avoid. Every thread count must give
/// the same bits as one thread and match the f64 interpreter.
#[test]
fn conv_weight_gradient_row_split_is_thread_independent() {
    let w = CONV_3X3;
    for o in [18, 20] {
        let x = f(true, &[4, 16, 16]);
        let y = f(true, &[o, 16, 16]);
        let g = single("conv_gw", Op::Conv2dGradWeight(w), &[x, y], None);
        let gens = [Gen::U(-1.0, 1.0), Gen::U(-1.0, 1.0)];
        for batch in [1, 5] {
            let a = run_once(&g, &gens, batch, 1);
            for threads in [2, 3] {
                let b = run_once(&g, &gens, batch, threads);
                assert_eq!(a, b, "O {o}, threads {threads}, batch {batch}");
            }
        }
        compare(&g, &gens, 5, 3, 1e-4);
    }
}

#[test]
fn bad_feeds_are_errors() {
    let g = mlp();
    let mut jit = Jit::compile(&g, &JitOptions::default()).unwrap();
    let x = vec![0.0f32; 20 * 4];
    let y = vec![0i32; 4];
    let params: Vec<Vec<f32>> = g.params.iter().map(|p| vec![0.0; p.numel()]).collect();
    let ps: Vec<&[f32]> = params.iter().map(|p| p.as_slice()).collect();
    assert!(jit
        .run(4, &[Feed::F32(&x), Feed::I32(&y)], &ps, StepCtx::default())
        .is_ok());
    assert!(jit
        .run(5, &[Feed::F32(&x), Feed::I32(&y)], &ps, StepCtx::default())
        .is_err());
    assert!(jit
        .run(4, &[Feed::F32(&x)], &ps, StepCtx::default())
        .is_err());
    assert!(jit
        .run(
            4,
            &[Feed::F32(&x), Feed::I32(&y)],
            &ps[1..],
            StepCtx::default()
        )
        .is_err());
    let bad = vec![0i32, 1, 9, 2];
    assert!(jit
        .run(
            4,
            &[Feed::F32(&x), Feed::I32(&bad)],
            &ps,
            StepCtx::default()
        )
        .is_err());
    assert!(jit
        .run(
            0,
            &[Feed::F32(&[]), Feed::I32(&[])],
            &ps,
            StepCtx::default()
        )
        .is_err());
}

/// Max pooling of one image on two or more threads is cut into parts of its channels (32
/// channels: four parts of 8; 6: three parts of 2; 7 channels cannot be cut), each part pooled
/// alone: the interpreter's values and the bits of one thread; NaNs and odd sizes included.
/// Batches of 2 and 3 split by images.
#[test]
fn max_pooling_of_one_image_splits_its_channels_over_the_threads() {
    for (c, h, w, parts) in [(32, 12, 12, 4), (6, 7, 9, 3), (7, 8, 8, 1)] {
        let win = POOL_2X2;
        let g = single("pool", Op::MaxPool(win), &[f(true, &[c, h, w])], None);
        let clif = nnc::codegen::clif_text(&g).unwrap();
        let cut = format!("max pooling, {} of {c} channels", c / parts);
        assert_eq!(clif.contains(&cut), parts > 1, "{clif}");
        for batch in [1, 2, 3] {
            compare(&g, &[Gen::U(-1.0, 1.0)], batch, 60 + c as u64, TOL);
            let mut d = draw(&g, &[Gen::U(-1.0, 1.0)], batch, &mut Rng(c as u64));
            d.f[0][5] = f32::NAN;
            assert_same_bits_on_threads(&g, &d, batch, &format!("{c} channels, batch {batch}"));
        }
    }
}

/// The cross-entropy family's losses sum each sample's rows on the threads (sequences of 64
/// rows of 65 logits, as the char-RNN's: from 8 samples a batch is split), then the samples in
/// order: the interpreter's value, and the same bits on 1–3 threads.
#[test]
fn sequence_losses_sum_their_samples_on_the_threads_with_the_same_bits() {
    let (t, c) = (64, 65);
    let logits = f(true, &[t, c]);
    let labels = Type::i32(true, vec![t]);
    let cases = [
        (Op::CrossEntropy, labels, Gen::Int(0, c as i32)),
        (Op::SoftCrossEntropy, logits.clone(), Gen::U(0.0, 0.05)),
        (Op::KlDiv, logits.clone(), Gen::U(-3.0, 3.0)),
    ];
    for (op, target, gen) in cases {
        let g = single("loss", op, &[logits.clone(), target], None);
        for batch in [3, 9, 17] {
            let gens = [Gen::U(-5.0, 5.0), gen];
            compare(&g, &gens, batch, 70 + batch as u64, TOL);
            let d = draw(&g, &gens, batch, &mut Rng(batch as u64));
            assert_same_bits_on_threads(&g, &d, batch, &format!("{}, batch {batch}", g.name));
        }
    }
}

/// Compiled steps run with subnormals flushed to zero (`codegen::fpenv`), on whichever thread
/// computes them, and leave the caller's mode as they found it: a product of two 1e-20 is 0,
/// not 1e-40, and a product reading 1e-39 and 3e-39 (subnormal inputs) reads 0, where the
/// f64 interpreter gets 1e-40 and 1.28e-37.
#[test]
fn subnormals_flush_to_zero_on_every_thread() {
    // Workers start with the mode of the thread that spawns them: this spawns them in IEEE
    // mode (unless another test got there first), so that the JIT's runs must hand theirs over.
    ieee_on_every_thread();
    let batch = 4096;
    let t = f(true, &[64]);
    let mul = single(
        "mul",
        Op::Binary(BinaryOp::Mul),
        &[t.clone(), t.clone()],
        None,
    );
    let mm = single(
        "mm",
        Op::MatMul {
            ta: false,
            tb: false,
        },
        &[t, f(false, &[64, 64])],
        None,
    );
    let tiny = vec![1e-20f32; batch * 64];
    // Two values, so that the product is not compacted around one (`codegen::sparse`).
    let sub: Vec<f32> = (0..batch * 64).map(|i| [1e-39, 3e-39][i % 2]).collect();
    let ones = vec![1f32; 64 * 64];
    for (g, x, y, ieee) in [(&mul, &tiny, &tiny, 1e-40), (&mm, &sub, &ones, 128e-39)] {
        let feeds = [Feed::F32(x), Feed::F32(y)];
        let x64 = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<_>>();
        let reference = interp::eval(g, batch, &[x64(x), x64(y)], &[], StepCtx::default());
        // Subnormals keep few bits: 1e-40 is 71,362 times the smallest.
        let close = |v: f64| ((v - ieee) / ieee).abs() < 1e-4;
        let reference = &reference.unwrap()[g.outputs[0].value.index()];
        assert!(reference.iter().all(|&v| close(v)), "{}", g.name);
        for threads in [1, 2, 3] {
            let mut jit = compile_on(g, threads);
            jit.run(batch, &feeds, &[], StepCtx::default()).unwrap();
            let out = jit.output("out").unwrap();
            let kept = out.iter().filter(|&&v| v != 0.0).count();
            assert_eq!(kept, 0, "{}, {threads} threads: {kept} subnormals", g.name);
        }
    }
    ieee_on_every_thread();
}

/// Asserts that tasks run from this thread, on it and on the workers, keep subnormals.
fn ieee_on_every_thread() {
    let kept: Vec<std::sync::atomic::AtomicBool> = (0..64).map(|_| false.into()).collect();
    nnc::codegen::workers::run(kept.len(), &|i| {
        let mut p = 1e-20f32;
        for _ in 0..1000 {
            p = std::hint::black_box(p);
        }
        let sub = std::hint::black_box(p) * std::hint::black_box(1e-20f32);
        kept[i].store(sub > 0.0, std::sync::atomic::Ordering::Relaxed);
    });
    assert!(kept
        .iter()
        .all(|k| k.load(std::sync::atomic::Ordering::Relaxed)));
}

/// The weight gradient of a first convolution read from its max pooling's gradient
/// (`conv2d_grad_weight_unpool`, made by `opt::unpool_grad`): against the interpreter, which
/// routes the pooled gradient and then takes the weight gradient, with and without the
/// activation's gradient, on rows of 4·k pooled windows and of 4·k + 2 (the CNN's 14), summed
/// as routed, and of 2, routed into a plane first; for 3×3 kernels on one channel, 2×2 on two
/// and 1×1 on three; with its bias gradient (`unpool_bias_grad`, the kernel's second result),
/// and the same bits on 1–3 threads.
#[test]
fn convolution_weight_gradient_from_the_pooling_gradient() {
    let pool = POOL_2X2;
    let window = |kernel, pad| Window {
        kernel,
        stride: 1,
        pad,
    };
    let cases = [
        (CONV_3X3, 1, 8, 8),
        (CONV_3X3, 1, 32, 28),
        (CONV_3X3, 1, 4, 12),
        (CONV_3X3, 1, 4, 4),
        (window(2, 0), 2, 4, 9),
        (window(1, 0), 3, 4, 12),
    ];
    for (conv, c, o, hw) in cases {
        let out = hw + 2 * conv.pad + 1 - conv.kernel;
        for act in [Some(UnaryOp::Relu), Some(UnaryOp::Sigmoid), None] {
            let op = Op::Conv2dGradWeightUnpool { conv, pool, act };
            let ins = [
                f(true, &[c, hw, hw]),
                f(true, &[o, out, out]),
                f(true, &[o, out / 2, out / 2]),
            ];
            let mut g = single("unpool", op, &ins, None);
            let dw = g.output("out").unwrap();
            let db = g.push(Op::UnpoolBiasGrad, vec![dw], "bias").unwrap();
            g.set_output("bias", db);
            // y with ties (zeros, as after a ReLU) and a negative part.
            let y = Gen::Sparse {
                bg: 0.0,
                density: 0.6,
            };
            let gens = [Gen::U(-1.0, 1.0), y, Gen::U(-1.0, 1.0)];
            for batch in [1, 3, 5] {
                compare(&g, &gens, batch, 17, TOL);
            }
            let d = draw(&g, &gens, 5, &mut Rng(9));
            let what = format!("unpool {c}×{hw}² k{} → {o} {act:?}", conv.kernel);
            assert_same_bits_on_threads(&g, &d, 5, &what);
        }
    }
}

/// A direct convolution whose output is also max-pooled by its own kernel (`maxpool_beside`,
/// made by `opt::pool_epilogue` where the gradient needs the unpooled value too): both results
/// against the interpreter, plain and with its bias and relu, at batch 1 (split by channels),
/// 3 and 5, and the same bits on 1–3 threads.
#[test]
fn convolution_pooled_beside_its_output() {
    let conv = CONV_3X3;
    let pool = POOL_2X2;
    for (o, hw) in [(32, 28), (8, 6), (12, 12)] {
        for chained in [false, true] {
            let x = f(true, &[1, hw, hw]);
            let w = f(false, &[o, 1, 3, 3]);
            let (op, ins) = if chained {
                let op = Op::WithEpilogue {
                    producer: nnc::ir::Producer::Conv2d(conv),
                    epi: Epilogue::Chain(Chain {
                        bias: Some(1),
                        acts: vec![UnaryOp::Relu],
                    }),
                };
                (op, vec![x, w, f(false, &[o])])
            } else {
                (Op::Conv2d(conv), vec![x, w])
            };
            let ty = f(true, &[o, hw, hw]);
            let mut g = single("conv", op, &ins, Some(ty));
            let y = g.output("out").unwrap();
            let p = g.push(Op::PoolBeside(pool), vec![y], "pool").unwrap();
            g.set_output("pooled", p);
            let gens = vec![Gen::U(-1.0, 1.0); ins.len()];
            for batch in [1, 3, 5] {
                compare(&g, &gens, batch, 23, TOL);
            }
            for batch in [1, 5] {
                let d = draw(&g, &gens, batch, &mut Rng(5));
                let what = format!("conv {o}×{hw}² chained {chained}, batch {batch}");
                assert_same_bits_on_threads(&g, &d, batch, &what);
            }
        }
    }
}

/// The 2×2 stride-2 max-pool gradient routes dy to the first tap greater than the taps before
/// it and not less than those after: a NaN tap never takes it, and does not keep a later
/// maximum from it (so a leading NaN routes as the interpreter does). Windows of four taps,
/// four windows to a row (the f32x4 steps) and one (the window-by-window tail).
#[test]
fn max_pool_gradient_routes_around_nans() {
    let w = POOL_2X2;
    let nan = f32::NAN;
    // Each window's taps (0,0), (0,1), (1,0), (1,1), and the tap that takes dy.
    let windows: [([f32; 4], usize); 4] = [
        ([nan, 1.0, 0.0, 0.0], 1),
        ([1.0, nan, 2.0, 0.0], 2),
        ([0.5, 0.5, nan, 0.25], 0),
        ([nan, nan, nan, -3.0], 3),
    ];
    for (ow, picked) in [(4, &windows[..]), (1, &windows[..1]), (1, &windows[1..2])] {
        let g = single(
            "maxpool_grad",
            Op::MaxPoolGrad(w),
            &[f(true, &[1, 2, 2 * ow]), f(true, &[1, 1, ow])],
            None,
        );
        let mut x = vec![0.0f32; 4 * ow];
        for (k, (taps, _)) in picked.iter().enumerate() {
            for (t, &v) in taps.iter().enumerate() {
                x[(t / 2) * 2 * ow + 2 * k + t % 2] = v;
            }
        }
        let dy: Vec<f32> = (0..ow).map(|k| 10.0 + k as f32).collect();
        let mut jit = Jit::compile(&g, &JitOptions::default()).unwrap();
        jit.run(1, &[Feed::F32(&x), Feed::F32(&dy)], &[], StepCtx::default())
            .unwrap();
        let dx = jit.output("out").unwrap();
        for (k, &(_, tap)) in picked.iter().enumerate() {
            for t in 0..4 {
                let v = dx[(t / 2) * 2 * ow + 2 * k + t % 2];
                let want = if t == tap { dy[k] } else { 0.0 };
                assert_eq!(v, want, "row of {ow}, window {k}, tap {t}: {dx:?}");
            }
        }
    }
}

/// ReLU is `0 < x ? x : 0` on both the f32x4 loop and the scalar tail (Cranelift lowers it to
/// `maxps`): NaN and −0 give +0, as the interpreter gives.
#[test]
fn relu_of_nan_and_signed_zeros_is_plus_zero() {
    let xs = [
        f32::NAN,
        -0.0,
        0.0,
        -1.0,
        2.5,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    let want = [0.0f32, 0.0, 0.0, 0.0, 2.5, f32::INFINITY, 0.0];
    // 7 values: one f32x4 step and a scalar tail of three, then all of them in the tail.
    for n in [7, 3] {
        let g = single("relu", Op::Unary(UnaryOp::Relu), &[f(true, &[n])], None);
        let mut jit = Jit::compile(&g, &JitOptions::default()).unwrap();
        for shift in 0..n {
            let x: Vec<f32> = (0..n).map(|i| xs[(i + shift) % 7]).collect();
            jit.run(1, &[Feed::F32(&x)], &[], StepCtx::default())
                .unwrap();
            let y = jit.output("out").unwrap();
            for (i, &v) in y.iter().enumerate() {
                let w = want[(i + shift) % 7];
                assert_eq!(v.to_bits(), w.to_bits(), "relu({}) = {v}", x[i]);
            }
        }
    }
}

/// Calls of one row switch between one thread and all of them while the executor times both
/// (`codegen/tuner.rs`), then keep the faster: every call gives the bits of a one-thread
/// executor, whichever it ran on.
#[test]
fn batch_one_calls_keep_their_bits_while_the_thread_count_is_tuned() {
    let mut conv = Graph::new("conv", false);
    let x = conv.input("x", f(true, &[1, 9, 10]));
    let w = param(&mut conv, "w", &[32, 1, 3, 3]);
    let c = conv.push(Op::Conv2d(CONV_3X3), vec![x, w], "").unwrap();
    let r = conv.push(Op::Unary(UnaryOp::Relu), vec![c], "").unwrap();
    conv.set_output("out", r);
    let conv = nnc::opt::optimize(&conv, 1).unwrap();
    // A cross-entropy computed by the product of a mostly-zero input: compacted on one thread
    // and on two (its epilogue takes whole rows, which a split by columns does not give), where
    // two threads used to send it to the dense GEMM, which sums in another order.
    let chain = Chain {
        bias: Some(1),
        acts: vec![],
    };
    let ce = with_loss(
        &f(true, &[1100]),
        &f(false, &[1100, 4]),
        false,
        &chain,
        true,
    );
    let ce = nnc::opt::optimize(&ce, 1).unwrap();
    // (Its ink every ten columns is half of what a sample of every fifth entry sees.)
    let sparse = Gen::Sparse {
        bg: 0.0,
        density: 0.15,
    };
    let u = Gen::U(-1.0, 1.0);
    let cases = [
        (mlp(), vec![Gen::U(-1.0, 1.0), Gen::Int(0, 5)]),
        (wide(), vec![Gen::U(-1.0, 1.0); 3]),
        (conv, vec![Gen::U(-1.0, 1.0)]),
        (ce, vec![sparse, u, u, Gen::Int(0, 4)]),
    ];
    for (g, gens) in cases {
        let d = draw(&g, &gens, 1, &mut Rng(7));
        let one = bits(&run_with(&g, &d, 1, 1));
        let mut jit = compile_on(&g, 2);
        let params: Vec<&[f32]> = d.params.iter().map(|p| p.as_slice()).collect();
        for call in 0..40 {
            jit.run(1, &feeds(&g, &d), &params, StepCtx::default())
                .unwrap();
            let outs: Vec<Vec<f32>> = g
                .outputs
                .iter()
                .map(|o| jit.output(&o.name).unwrap().to_vec())
                .collect();
            assert!(
                bits(&outs) == one,
                "{}: call {call} changed the bits",
                g.name
            );
        }
    }
}

/// Layer normalization and its input gradient run on slices of the batch: each row alone, so
/// every thread count gives the 1-thread bits; its weight gradient sums over the batch on one.
#[test]
fn layer_norm_is_the_same_on_any_thread_count() {
    let t = f(true, &[16, 48]);
    let row = f(false, &[48]);
    let eps = 1e-5;
    let (x, w, d) = (Gen::U(-3.0, 9.0), Gen::U(-2.0, 2.0), Gen::U(-1.0, 1.0));
    let graphs = [
        (
            single(
                "ln",
                Op::LayerNorm { eps },
                &[t.clone(), row.clone(), row.clone()],
                None,
            ),
            [x, w, w],
        ),
        (
            single(
                "ln_grad",
                Op::LayerNormGrad { eps },
                &[t.clone(), row, t.clone()],
                None,
            ),
            [x, w, d],
        ),
    ];
    for (g, gens) in &graphs {
        for batch in [64, 67] {
            let one = run_once(g, gens, batch, 1);
            assert_eq!(one, run_once(g, gens, batch, 2), "{} at {batch}", g.name);
            assert_eq!(one, run_once(g, gens, batch, 3), "{} at {batch}", g.name);
        }
    }
    let g = single(
        "ln_wgrad",
        Op::LayerNormWeightGrad { eps },
        &[t.clone(), t],
        None,
    );
    assert_eq!(run_once(&g, &[x, d], 64, 1), run_once(&g, &[x, d], 64, 3));
}
