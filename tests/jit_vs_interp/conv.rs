//! The convolution algorithms: direct, Winograd (and its weight cache), on a mostly-zero `dy`,
//! with a pooling fused in, and the 2×2 max pooling; parameters held by the JIT.

use super::*;

/// 3×3 stride-1 convolutions with 8 or more input channels run on Winograd F(2×2, 3×3) or
/// F(4×4, 3×3) (the forward pass, the weight gradient, and the input gradient, whose input
/// channels are the output's): odd and even sizes (clipped edge tiles), paddings 0–2, channel
/// counts that are not multiples of 4, one image or several groups of images, and conv2 of the
/// MNIST CNN, against the f64 interpreter and bit-identical for 1, 2 and 3 threads. Winograd
/// rounds differently from the direct sum, hence 1e-4; F(4×4) more (its transforms multiply by
/// up to 8 and 5, not 1; errors up to 1.1e-4 were seen), hence 4e-4.
#[test]
fn winograd_convolutions() {
    use nnc::opt::epilogue::fuse_epilogues;
    let mut rng = Rng(11);
    let u = Gen::U(-1.0, 1.0);
    // Rows of 13 or more run on F(4×4, 3×3) (four tiles side by side, the row's last clipped
    // to 1–4 columns, the last tile row to 1–4 rows, or the only one), shorter ones on
    // F(2×2, 3×3): (c, o, h, w, pad) after the random cases.
    let f4 = [
        (9, 5, 13, 13, 1),
        (8, 3, 5, 15, 0),
        (10, 7, 16, 17, 2),
        (8, 4, 16, 16, 1),
    ];
    for case in 0..13 + f4.len() {
        let pad = case % 3;
        let (c, o) = (rng.range(8, 19), rng.range(1, 13));
        let (h, wd) = (rng.range(3, 17), rng.range(3, 17));
        // Case 12 is the MNIST CNN's conv2 (deep sums: 288 and 576 products).
        let (c, o, h, wd, pad) = match case {
            12 => (32, 64, 14, 14, 1),
            13.. => f4[case - 13],
            _ => (c, o, h, wd, pad),
        };
        let w = Window {
            kernel: 3,
            stride: 1,
            pad,
        };
        let x = f(true, &[c, h, wd]);
        let wt = f(false, &[o, c, 3, 3]);
        let fwd = single("wino_fwd", Op::Conv2d(w), &[x.clone(), wt.clone()], None);
        let y = fwd.ty(fwd.output("out").unwrap()).clone();
        // The input gradient of a conv from o channels to c: its correlation reads c ≥ 8.
        let yt = f(true, &[c, y.dims[1], y.dims[2]]);
        let gi = single(
            "wino_gi",
            Op::Conv2dGradInput(w),
            &[yt, f(false, &[c, o, 3, 3])],
            Some(f(true, &[o, h, wd])),
        );
        let gw = single(
            "wino_gw",
            Op::Conv2dGradWeight(w),
            &[x.clone(), y.clone()],
            None,
        );
        // With a bias and ReLU fused, as the CNN's conv2 runs.
        let chain = Epilogue::Chain(Chain {
            bias: Some(1),
            acts: vec![UnaryOp::Relu],
        });
        let ins = [x.clone(), wt.clone()];
        let fused = fuse_epilogues(&with_epilogue(Op::Conv2d(w), &ins, &chain));
        for g in [&fwd, &gi, &gw, &fused] {
            let clif = nnc::codegen::clif_text(g).unwrap();
            assert!(clif.contains("winograd inputs"), "{}: not Winograd", g.name);
            let f4 = clif.contains("winograd F(4x4");
            if case >= 12 {
                assert!(f4, "{} case {case}", g.name);
            }
            let gens = vec![u; g.inputs().len()];
            let tol = if f4 { 4e-4 } else { 1e-4 };
            for batch in [1, 3, 11] {
                compare(g, &gens, batch, rng.next(), tol);
            }
            // Batches of 11 are split by images; of 1 and 2, with fewer images than threads,
            // the forward pass by halves of ξ (each half's input transform and products),
            // then the output transform by channels (the input gradient: that alone).
            for batch in [11, 1, 2] {
                let a = run_once(g, &gens, batch, 1);
                for threads in [2, 3] {
                    let b = run_once(g, &gens, batch, threads);
                    assert_eq!(
                        a, b,
                        "{} case {case} batch {batch} threads {threads}",
                        g.name
                    );
                }
            }
        }
    }
}

/// The input and weight gradients of a 3×3 stride-1 convolution whose `dy` is mostly zeros
/// (as behind a max pooling) skip its zeros (`codegen::sparse_conv`): the MNIST CNN's conv2
/// and smaller, odd geometries, paddings 0–2, one image and several runs of eight, against the
/// f64 interpreter, bit-identical on 1–3 threads, and not the bits of the same graph with
/// sparse kernels off (Winograd), so that the path is known to have run.
#[test]
fn convolution_gradients_of_a_mostly_zero_dy() {
    let u = Gen::U(-1.0, 1.0);
    let dy = Gen::Sparse {
        bg: 0.0,
        density: 0.15,
    };
    for (c, o, h, wd, pad) in [(32, 64, 14, 14, 1), (8, 9, 7, 6, 0), (10, 12, 5, 9, 2)] {
        let w = Window {
            kernel: 3,
            stride: 1,
            pad,
        };
        let x = f(true, &[c, h, wd]);
        let fwd = single(
            "fwd",
            Op::Conv2d(w),
            &[x.clone(), f(false, &[o, c, 3, 3])],
            None,
        );
        let y = fwd.ty(fwd.output("out").unwrap()).clone();
        let gi = single(
            "sparse_gi",
            Op::Conv2dGradInput(w),
            &[y.clone(), f(false, &[o, c, 3, 3])],
            Some(x.clone()),
        );
        let gw = single("sparse_gw", Op::Conv2dGradWeight(w), &[x, y], None);
        for (g, gens) in [(&gi, [dy, u]), (&gw, [u, dy])] {
            for batch in [1, 3, 17] {
                compare(g, &gens, batch, 5 + batch as u64, 1e-4);
                let a = run_once(g, &gens, batch, 1);
                for threads in [2, 3] {
                    assert_eq!(
                        a,
                        run_once(g, &gens, batch, threads),
                        "{} {c}×{o}×{h}×{wd} pad {pad} batch {batch} threads {threads}",
                        g.name
                    );
                }
                let d = draw(g, &gens, batch, &mut Rng(42));
                let mut dense = Jit::compile(
                    g,
                    &JitOptions {
                        sparse: false,
                        ..JitOptions::default()
                    },
                )
                .unwrap();
                dense
                    .run(batch, &feeds(g, &d), &[], StepCtx::default())
                    .unwrap();
                assert_ne!(
                    a[0],
                    dense.output("out").unwrap(),
                    "{} batch {batch}: the same bits as Winograd",
                    g.name
                );
            }
        }
    }
}

/// A max pooling that alone reads a convolution is computed in the convolution's kernel
/// ([`Epilogue::Pool`]): on the direct convolution (one input channel) and on F(4×4) Winograd
/// (rows of 13 or more), for 2×2 windows of stride 2, on even and odd sizes (the pooling drops
/// an odd last row or column), with and without a bias and ReLU; the code generator splits the
/// others back (F(2×2) Winograd, other windows). Each case against the f64 interpreter, with
/// the same bits as the graph whose pooling is not fused, and on 1–3 threads, at batch 1 (the
/// channel parts and plane halves of one image), 3 and 11.
#[test]
fn poolings_fused_into_convolutions() {
    use nnc::opt::{epilogue::fuse_epilogues, pool_epilogue::fuse_pools};
    let direct = "direct convolution, max pooling 2×2 fused";
    let winograd = "max pooling 2×2 in the output transform";
    // (c, o, h, w, pad, pooling window, bias and relu, the fused kernel's note)
    let cases = [
        (1, 32, 28, 28, 1, (2, 2, 0), true, Some(direct)),
        (1, 8, 13, 11, 1, (2, 2, 0), false, Some(direct)),
        (1, 10, 9, 7, 0, (2, 2, 0), true, Some(direct)),
        (9, 5, 14, 14, 1, (2, 2, 0), true, Some(winograd)),
        (10, 7, 15, 13, 1, (2, 2, 0), false, Some(winograd)),
        (8, 4, 17, 16, 0, (2, 2, 0), true, Some(winograd)),
        (8, 12, 16, 18, 1, (2, 2, 0), true, Some(winograd)),
        (8, 4, 9, 9, 1, (2, 2, 0), true, None),
        (9, 4, 14, 14, 1, (3, 2, 1), true, None),
    ];
    let u = Gen::U(-1.0, 1.0);
    for (case, (c, o, h, wd, pad, (k, s, p), chained, note)) in cases.into_iter().enumerate() {
        let mut g = Graph::new("conv_pool", false);
        let x = g.input("x", f(true, &[c, h, wd]));
        let w = g.input("w", f(false, &[o, c, 3, 3]));
        let win = Window {
            kernel: 3,
            stride: 1,
            pad,
        };
        let y = g.push(Op::Conv2d(win), vec![x, w], "conv").unwrap();
        let y = if chained {
            let b = g.input("b", f(false, &[o]));
            let chain = Chain {
                bias: Some(1),
                acts: vec![UnaryOp::Relu],
            };
            g.push(Op::Fused(chain), vec![y, b], "relu").unwrap()
        } else {
            y
        };
        let pool = Window {
            kernel: k,
            stride: s,
            pad: p,
        };
        let y = g.push(Op::MaxPool(pool), vec![y], "pool").unwrap();
        g.set_output("out", y);
        let unfused = fuse_epilogues(&g);
        let fused = fuse_pools(&unfused);
        let pooled = |g: &Graph| {
            g.nodes.iter().any(|n| {
                matches!(
                    n.op,
                    Op::WithEpilogue {
                        epi: Epilogue::Pool(..),
                        ..
                    }
                )
            })
        };
        assert!(pooled(&fused) && !pooled(&unfused), "case {case}");
        let clif = nnc::codegen::clif_text(&fused).unwrap();
        match note {
            Some(n) => assert!(clif.contains(n), "case {case}: not fused ({n})"),
            None => assert!(
                clif.contains("= maxpool k="),
                "case {case}: no pooling kernel"
            ),
        }
        let gens = vec![u; fused.inputs().len()];
        let tol = if c >= 8 { 4e-4 } else { 1e-5 };
        for batch in [1, 3, 11] {
            compare(&fused, &gens, batch, 100 + case as u64, tol);
        }
        for batch in [1, 3] {
            let want = run_once(&unfused, &gens, batch, 1);
            for threads in [1, 2, 3] {
                let got = run_once(&fused, &gens, batch, threads);
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "case {case} batch {batch} threads {threads}"
                );
            }
        }
    }
}

/// A Winograd step keeps its transformed weights `U` from one run to the next while the
/// weights keep their bits, and transforms them again when they change (here only their last
/// element, or only the batch and with it every buffer): every run of one compiled graph equals
/// a fresh compile's, forward and input gradient.
#[test]
fn winograd_reuses_its_transformed_weights_only_for_the_same_weights() {
    let w = CONV_3X3;
    let u = Gen::U(-1.0, 1.0);
    let fwd = single(
        "wino_fwd",
        Op::Conv2d(w),
        &[f(true, &[8, 6, 6]), f(false, &[5, 8, 3, 3])],
        None,
    );
    let gi = single(
        "wino_gi",
        Op::Conv2dGradInput(w),
        &[f(true, &[8, 6, 6]), f(false, &[8, 5, 3, 3])],
        Some(f(true, &[5, 6, 6])),
    );
    let out = |jit: &mut Jit, g: &Graph, d: &Data, batch: usize| -> Vec<f32> {
        let params: Vec<&[f32]> = d.params.iter().map(|p| p.as_slice()).collect();
        jit.run(batch, &feeds(g, d), &params, StepCtx::default())
            .unwrap();
        jit.output("out").unwrap().to_vec()
    };
    for g in [&fwd, &gi] {
        let clif = nnc::codegen::clif_text(g).unwrap();
        assert!(clif.contains("winograd inputs"), "{}: not Winograd", g.name);
        let mut rng = Rng(5);
        let d1 = draw(g, &[u, u], 2, &mut rng);
        let mut d2 = draw(g, &[u, u], 2, &mut rng);
        d2.f[0] = d1.f[0].clone();
        d2.f[1] = d1.f[1].clone();
        *d2.f[1].last_mut().unwrap() += 0.25;
        let d3 = draw(g, &[u, u], 3, &mut rng);
        let mut jit = Jit::compile(g, &JitOptions::default()).unwrap();
        let runs = [(&d1, 2), (&d1, 2), (&d2, 2), (&d1, 2), (&d3, 3), (&d1, 2)];
        let mut seen = Vec::new();
        for (i, &(d, batch)) in runs.iter().enumerate() {
            let mut fresh = Jit::compile(g, &JitOptions::default()).unwrap();
            let want = out(&mut fresh, g, d, batch);
            assert_eq!(out(&mut jit, g, d, batch), want, "{} run {i}", g.name);
            seen.push(want);
        }
        assert_ne!(
            seen[1], seen[2],
            "{}: the changed weight changes the output",
            g.name
        );
    }
}

/// Weights the executor holds ([`Executor::hold_params`]) are transformed once and not compared
/// again on later runs; holding others, or passing weights to a run, transforms those. The
/// weights are a parameter here (weights fed as an input are compared on every run, above).
/// Every run against a fresh compile passed the same weights, bit for bit, at batch 1 (the
/// image split over two threads) and 2.
#[test]
fn winograd_held_weights_are_transformed_again_only_when_others_are_held_or_passed() {
    let mut g = Graph::new("wino_held", true);
    let x = g.input("x", f(true, &[8, 6, 6]));
    let w = param(&mut g, "conv.w", &[5, 8, 3, 3]);
    let c = g.push(Op::Conv2d(CONV_3X3), vec![x, w], "").unwrap();
    g.set_output("out", c);
    assert!(nnc::codegen::clif_text(&g)
        .unwrap()
        .contains("winograd inputs"));
    let u = Gen::U(-1.0, 1.0);
    for batch in [1, 2] {
        let mut rng = Rng(11);
        let d = draw(&g, &[u], batch, &mut rng);
        let mut other = d.params.clone();
        *other[0].last_mut().unwrap() += 0.25;
        let want = |params: &[Vec<f32>]| {
            let refs: Vec<&[f32]> = params.iter().map(Vec::as_slice).collect();
            let mut fresh = Jit::compile(&g, &JitOptions::default()).unwrap();
            fresh
                .run(batch, &feeds(&g, &d), &refs, StepCtx::default())
                .unwrap();
            fresh.output("out").unwrap().to_vec()
        };
        let (first, second) = (want(&d.params), want(&other));
        assert_ne!(first, second, "the changed weight changes the output");
        let mut jit = compile_on(&g, 2);
        let run = |jit: &mut Jit, passed: Option<&[Vec<f32>]>| {
            let refs: Vec<&[f32]> = passed.unwrap_or(&[]).iter().map(Vec::as_slice).collect();
            jit.run(batch, &feeds(&g, &d), &refs, StepCtx::default())
                .unwrap();
            jit.output("out").unwrap().to_vec()
        };
        jit.hold_params(d.params.clone()).unwrap();
        assert_eq!(run(&mut jit, None), first, "batch {batch}: held");
        assert_eq!(run(&mut jit, None), first, "batch {batch}: held again");
        jit.hold_params(other.clone()).unwrap();
        assert_eq!(run(&mut jit, None), second, "batch {batch}: others held");
        assert_eq!(
            run(&mut jit, Some(&d.params)),
            first,
            "batch {batch}: passed"
        );
        assert_eq!(
            run(&mut jit, None),
            second,
            "batch {batch}: held after passed"
        );
    }
}

/// Convolutions Winograd does not pay or apply for keep im2col (a 5×5 or strided window,
/// padding 3), or run directly (one input channel: 9 taps).
#[test]
fn winograd_is_only_used_where_it_applies() {
    let cases = [(1, 3, 1, 1), (16, 5, 1, 2), (16, 3, 2, 1), (16, 3, 1, 3)];
    for (c, kernel, stride, pad) in cases {
        let w = Window {
            kernel,
            stride,
            pad,
        };
        let g = single(
            "conv",
            Op::Conv2d(w),
            &[f(true, &[c, 12, 12]), f(false, &[8, c, kernel, kernel])],
            None,
        );
        let clif = nnc::codegen::clif_text(&g).unwrap();
        assert!(!clif.contains("winograd"), "{c} {w:?}");
        let algo = if c == 1 {
            "direct convolution"
        } else {
            "im2col"
        };
        assert!(clif.contains(algo), "{c} {w:?}: not {algo}");
        compare(&g, &[Gen::U(-1.0, 1.0); 2], 2, 5, TOL);
    }
}

/// Max pooling over 2×2 windows with stride 2 (the vectorized kernel: four windows of a row at
/// a time, the rest of a row by one more step over its last four windows, or scalar) against
/// the interpreter, on rows of 3 to 14 windows and odd sizes, and on inputs full of ties, where
/// the gradient must go to the first maximum of each window as the interpreter routes it.
#[test]
fn max_pool_2x2_stride_2() {
    let w = POOL_2X2;
    let mut rng = Rng(21);
    for dims in [[3, 28, 28], [2, 9, 11], [1, 8, 16], [4, 14, 14], [2, 6, 6]] {
        let x = f(true, &dims);
        let fwd = single("maxpool", Op::MaxPool(w), std::slice::from_ref(&x), None);
        let y = fwd.ty(fwd.output("out").unwrap()).clone();
        let grad = single(
            "maxpool_grad",
            Op::MaxPoolGrad(w),
            &[x.clone(), y.clone()],
            None,
        );
        let u = Gen::U(-1.0, 1.0);
        for batch in [1, 3] {
            compare(&fwd, &[u], batch, rng.next(), TOL);
            compare(&grad, &[u, u], batch, rng.next(), TOL);
            // Ties: three distinct values, so most windows hold a repeated maximum.
            let n = x.numel(batch);
            let xs: Vec<f32> = (0..n).map(|i| ((i * 7 + i / 5) % 3) as f32).collect();
            let dy: Vec<f32> = (0..y.numel(batch)).map(|i| 1.0 + i as f32).collect();
            let want = interp::eval(
                &grad,
                batch,
                &[
                    xs.iter().map(|&v| v as f64).collect(),
                    dy.iter().map(|&v| v as f64).collect(),
                ],
                &[],
                StepCtx::default(),
            )
            .unwrap();
            let mut jit = Jit::compile(&grad, &JitOptions::default()).unwrap();
            jit.run(
                batch,
                &[Feed::F32(&xs), Feed::F32(&dy)],
                &[],
                StepCtx::default(),
            )
            .unwrap();
            let got = jit.output("out").unwrap();
            let out = grad.output("out").unwrap().index();
            for (i, (g, e)) in got.iter().zip(&want[out]).enumerate() {
                assert_eq!(*g as f64, *e, "{dims:?} batch {batch}: dx[{i}]");
            }
        }
    }
}

/// Parameters handed to the executor once ([`Executor::hold_params`]) give what the same parameters
/// passed to every run give: the MLP at batch 1 and 3 on mostly-background inputs, where the
/// JIT keeps each product's background row from one run to the next (and must recompute it
/// when the background changes: −1, then −0.5, then 0), against the interpreter; the
/// interpreter holding them against itself, bit for bit; and a run passed parameters after `hold_params`
/// runs on those.
#[test]
fn held_parameters_give_the_results_of_parameters_passed_to_each_run() {
    for optimized in [false, true] {
        let mut g = mlp_of(200);
        expose_all(&mut g);
        if optimized {
            g = nnc::opt::optimize(&g, 1).unwrap();
        }
        for &batch in &[1, 3] {
            let weights = draw(&g, &[Gen::U(-1.0, 1.0), Gen::Int(0, 5)], batch, &mut Rng(9));
            let params: Vec<&[f32]> = weights.params.iter().map(Vec::as_slice).collect();
            let mut jit = Jit::compile(&g, &JitOptions::default()).unwrap();
            jit.hold_params(weights.params.clone()).unwrap();
            let mut interp = interp::Interpreter::new(g.clone());
            let mut held_interp = interp::Interpreter::new(g.clone());
            held_interp.hold_params(weights.params.clone()).unwrap();
            for (round, bg) in [-1.0f32, -0.5, 0.0, -1.0].into_iter().enumerate() {
                let x = Gen::Sparse { bg, density: 0.2 };
                let mut rng = Rng(500 + round as u64);
                let d = draw(&g, &[x, Gen::Int(0, 5)], batch, &mut rng);
                let ctx = StepCtx::default();
                jit.run(batch, &feeds(&g, &d), &[], ctx).unwrap();
                interp.run(batch, &feeds(&g, &d), &params, ctx).unwrap();
                held_interp.run(batch, &feeds(&g, &d), &[], ctx).unwrap();
                for o in &g.outputs {
                    let (got, want) = (
                        jit.output(&o.name).unwrap(),
                        interp.output(&o.name).unwrap(),
                    );
                    for (k, (a, b)) in got.iter().zip(want).enumerate() {
                        assert!(
                            (a - b).abs() <= TOL as f32 * (1.0 + b.abs()),
                            "batch {batch}, background {bg}: {} element {k}: jit holding them {a}, interp {b}",
                            o.name
                        );
                    }
                    let same = held_interp.output(&o.name).unwrap();
                    assert!(
                        same.iter()
                            .zip(want)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "the interpreter holding them: {} differs",
                        o.name
                    );
                }
            }
            // Parameters passed to a run win over the held ones: all zero, every class is
            // equally likely, a loss of ln 5.
            let zeros: Vec<Vec<f32>> = weights.params.iter().map(|p| vec![0.0; p.len()]).collect();
            let zero_refs: Vec<&[f32]> = zeros.iter().map(Vec::as_slice).collect();
            let d = draw(&g, &[Gen::U(-1.0, 1.0), Gen::Int(0, 5)], batch, &mut Rng(3));
            for exec in [&mut jit as &mut dyn Executor, &mut held_interp] {
                exec.run(batch, &feeds(&g, &d), &zero_refs, StepCtx::default())
                    .unwrap();
                let loss = exec.output("loss").unwrap()[0];
                assert!((loss - 5f32.ln()).abs() < 1e-6, "loss {loss}");
            }
        }
    }
    // Parameters of the wrong sizes are refused.
    let g = mlp_of(20);
    let mut jit = Jit::compile(&g, &JitOptions::default()).unwrap();
    assert!(jit.hold_params(vec![vec![0.0; 3]; 4]).is_err());
    assert!(interp::Interpreter::new(g).hold_params(vec![]).is_err());
}

/// A direct convolution (one input channel, the CNN's first layer) on two threads cuts a batch
/// of one image by output channels (32 channels: kernels for two parts of 16 and four of 8, as
/// many as the threads taken; 12: three parts of 4, whole tiles of the kernel's four channels): the
/// same bits as one thread, with the bias and ReLU fused into it, against the interpreter; a
/// batch of three splits by images, as before.
#[test]
fn a_direct_convolution_of_one_image_splits_its_output_channels_over_the_threads() {
    for (o, part) in [(32, 8), (12, 4)] {
        let mut g = Graph::new("conv1", false);
        let x = g.input("x", f(true, &[1, 9, 10]));
        let w = param(&mut g, "w", &[o, 1, 3, 3]);
        let b = param(&mut g, "b", &[o]);
        let win = CONV_3X3;
        let c = g.push(Op::Conv2d(win), vec![x, w], "").unwrap();
        let c = g.push(Op::BiasAdd { axis: 1 }, vec![c, b], "").unwrap();
        let r = g.push(Op::Unary(UnaryOp::Relu), vec![c], "").unwrap();
        g.set_output("out", r);
        let g = nnc::opt::optimize(&g, 1).unwrap();
        let clif = nnc::codegen::clif_text(&g).unwrap();
        assert!(
            clif.contains(&format!(
                "direct convolution, {part} of {o} output channels"
            )),
            "{clif}"
        );
        for batch in [1, 3] {
            compare(&g, &[Gen::U(-1.0, 1.0)], batch, 40 + o as u64, TOL);
            let d = draw(&g, &[Gen::U(-1.0, 1.0)], batch, &mut Rng(o as u64));
            assert_same_bits_on_threads(&g, &d, batch, &format!("{o} channels, batch {batch}"));
        }
    }
}
