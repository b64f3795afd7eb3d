//! Fused epilogues (bias, activations, ReLU masks, max-pool gradients, losses) against the
//! interpreter and the unfused kernels.

use super::*;

/// `fused` against the interpreter (within `tol`), and bit-identical to `unfused` (the same
/// ops as separate kernels) at 1 and 3 threads, at each batch size.
fn matches_unfused(
    unfused: &Graph,
    fused: &Graph,
    gens: &[Gen],
    batches: &[usize],
    seed: u64,
    tol: f64,
) {
    for &batch in batches {
        compare(fused, gens, batch, seed, tol);
        let want = run_once(unfused, gens, batch, 1);
        let what = format!("{} batch {batch}", unfused.name);
        assert_eq!(want, run_once(fused, gens, batch, 1), "{what}");
        assert_eq!(want, run_once(fused, gens, batch, 3), "{what}, 3 threads");
    }
}

/// Matrix products and convolutions with a fused epilogue (bias and activations, or an
/// activation's gradient) against the interpreter, and bit for bit against the same product
/// and epilogue as two kernels, for 1 and 3 threads: small products (one inlined kernel),
/// products split in depth (k > 256), in row blocks and (one row) in column blocks, all three
/// layouts; convolutions on im2col and on Winograd.
#[test]
fn epilogues_match_the_interpreter_and_the_unfused_kernels() {
    use nnc::opt::epilogue::fuse_epilogues;
    let chain = |bias: bool, acts: Vec<UnaryOp>| {
        Epilogue::Chain(Chain {
            bias: bias.then_some(0),
            acts,
        })
    };
    let epis = [
        chain(true, vec![UnaryOp::Relu]),
        chain(true, vec![]),
        chain(false, vec![UnaryOp::Sigmoid, UnaryOp::Tanh]),
        Epilogue::Grad(UnaryOp::Relu),
        Epilogue::Grad(UnaryOp::Sigmoid),
    ];
    let mm = |ta, tb| Op::MatMul { ta, tb };
    let win = CONV_3X3;
    // (product, input types, batch sizes)
    let cases: Vec<(Op, [Type; 2], Vec<usize>)> = vec![
        (
            mm(false, false),
            [f(true, &[4]), f(false, &[4, 3])],
            vec![3],
        ),
        (
            mm(false, false),
            [f(true, &[300]), f(false, &[300, 70])],
            vec![1, 37, 130],
        ),
        (
            mm(false, true),
            [f(true, &[2, 40]), f(false, &[129, 40])],
            vec![2, 64],
        ),
        (
            mm(true, false),
            [f(true, &[100]), f(true, &[30])],
            vec![5, 300],
        ),
        // One row: the one-row kernel, its columns split over threads.
        (
            mm(false, false),
            [f(true, &[784]), f(false, &[784, 128])],
            vec![1],
        ),
        (
            Op::Conv2d(win),
            [f(true, &[3, 9, 9]), f(false, &[10, 3, 3, 3])],
            vec![1, 4],
        ),
        // 9 input channels: Winograd, a chain applied in the output transform, an activation's
        // gradient after it.
        (
            Op::Conv2d(win),
            [f(true, &[9, 7, 7]), f(false, &[6, 9, 3, 3])],
            vec![1, 3],
        ),
    ];
    for (product, ins, batches) in cases {
        for epi in &epis {
            let g = with_epilogue(product.clone(), &ins, epi);
            let fused = fuse_epilogues(&g);
            assert_eq!(fused.nodes.len(), g.nodes.len() - 1, "{}", g.name);
            let gens = vec![Gen::U(-1.0, 1.0); g.inputs().len()];
            matches_unfused(&g, &fused, &gens, &batches, 11, 1e-4);
        }
    }
}

/// A product whose epilogue is relu's gradient, with a contraction long enough for the masked
/// product (`codegen::masked`: only the entries where the ReLU's output is positive, about half
/// here, each as a dot product): against the interpreter, the same bits on 1–3 threads, and
/// summed in another order than the dense GEMM's (so the masked product did run).
#[test]
fn relu_masked_products() {
    use nnc::opt::epilogue::fuse_epilogues;
    let mm = Op::MatMul {
        ta: false,
        tb: true,
    };
    for (k, n, batches) in [(784, 128, vec![1, 5, 64]), (67, 33, vec![9])] {
        let ins = [f(true, &[k]), f(false, &[n, k])];
        let g = with_epilogue(mm.clone(), &ins, &Epilogue::Grad(UnaryOp::Relu));
        let fused = fuse_epilogues(&g);
        assert_eq!(fused.nodes.len(), g.nodes.len() - 1, "{}", g.name);
        let gens = vec![Gen::U(-1.0, 1.0); g.inputs().len()];
        for batch in batches {
            compare(&fused, &gens, batch, 5, 1e-4);
            let d = draw(&fused, &gens, batch, &mut Rng(8));
            let what = format!("{k}×{n}, batch {batch}");
            assert_same_bits_on_threads(&fused, &d, batch, &what);
            let dense = JitOptions {
                sparse: false,
                ..JitOptions::default()
            };
            let mut jit = Jit::compile(&fused, &dense).unwrap();
            let params: Vec<&[f32]> = d.params.iter().map(|p| p.as_slice()).collect();
            jit.run(batch, &feeds(&fused, &d), &params, StepCtx::default())
                .unwrap();
            let masked = run_with(&fused, &d, batch, 1);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_ne!(
                bits(jit.output("out").unwrap()),
                bits(&masked[0]),
                "{what}: the masked product did not run"
            );
        }
    }
}

/// The gradient of a max pool with an activation's gradient as its epilogue (relu's mask
/// applied as dx is written): 2×2 windows of stride 2 tiling the image (each element written
/// once, f32x4 steps and the last windows of a row), odd sizes that leave a row and a column
/// out, and overlapping 3×3 windows (the epilogue after the windows) — against the interpreter,
/// and bit-identical to the separate kernels at 1 and 3 threads.
#[test]
fn max_pool_gradient_epilogues() {
    use nnc::opt::epilogue::fuse_epilogues;
    let pool = |kernel, stride, pad| Window {
        kernel,
        stride,
        pad,
    };
    let cases = [
        (pool(2, 2, 0), [3, 28, 28]),
        (pool(2, 2, 0), [2, 14, 14]),
        (pool(2, 2, 0), [2, 7, 9]),
        (pool(2, 2, 0), [3, 6, 6]),
        (pool(3, 2, 1), [2, 7, 7]),
    ];
    for (w, [c, h, wd]) in cases {
        let x = f(true, &[c, h, wd]);
        let y = f(true, &[c, w.out_len(h).unwrap(), w.out_len(wd).unwrap()]);
        for u in [UnaryOp::Relu, UnaryOp::Sigmoid] {
            let g = with_epilogue(
                Op::MaxPoolGrad(w),
                &[x.clone(), y.clone()],
                &Epilogue::Grad(u),
            );
            let fused = fuse_epilogues(&g);
            assert_eq!(fused.nodes.len(), g.nodes.len() - 1, "{}", g.name);
            let gens = vec![Gen::U(-1.0, 1.0); g.inputs().len()];
            matches_unfused(&g, &fused, &gens, &[1, 5, 64], 17, 1e-6);
        }
    }
}

/// Batch norms with their activations as the epilogue (`batch_norm → relu`, in training on
/// the batch's statistics and on the running ones): [C] vectors and [C, H, W] maps (f32x4 steps
/// and a scalar tail), against the interpreter, and bit-identical to the separate kernels at 1
/// and 3 threads. A bias after a batch norm stays a node of its own.
#[test]
fn batch_norm_epilogues() {
    use nnc::opt::epilogue::fuse_epilogues;
    // [C] vectors of 4, 8, 12, 128 and 130 channels: four channels a step (with a scalar
    // remainder for 130).
    let vectors = [4, 8, 12, 128, 130].map(|c| vec![c]);
    for dims in [vec![6], vec![3, 5, 7], vec![2, 4, 4]]
        .into_iter()
        .chain(vectors)
    {
        let c = dims[0];
        for (training, acts) in [
            (true, vec![UnaryOp::Relu]),
            (false, vec![UnaryOp::Relu]),
            (true, vec![UnaryOp::Tanh, UnaryOp::Neg]),
        ] {
            let mut g = Graph::new(format!("batch_norm {dims:?} training {training}"), true);
            let x = g.input("x", f(true, &dims));
            let ch = |g: &mut Graph, n: &str| g.input(n, f(false, &[c]));
            let (w, b) = (ch(&mut g, "w"), ch(&mut g, "b"));
            let y = if training {
                let st = g.push(Op::BatchStats { momentum: 0.1 }, vec![x], "st");
                let st = st.unwrap();
                g.push(Op::BatchNorm { eps: 1e-5 }, vec![x, st, w, b], "bn")
            } else {
                let (m, v) = (ch(&mut g, "m"), ch(&mut g, "v"));
                g.push(Op::BatchNormEval { eps: 1e-5 }, vec![x, w, b, m, v], "bn")
            }
            .unwrap();
            let chain = Chain { bias: None, acts };
            let e = g.push(Op::Fused(chain), vec![y], "act").unwrap();
            g.set_output("out", e);
            let fused = fuse_epilogues(&g);
            assert_eq!(fused.nodes.len(), g.nodes.len() - 1, "{}", g.name);
            let mut gens = vec![Gen::U(-3.0, 9.0), Gen::U(-2.0, 2.0), Gen::U(-1.0, 1.0)];
            if !training {
                gens.extend([Gen::U(-3.0, 9.0), Gen::U(0.1, 4.0)]);
            }
            matches_unfused(&g, &fused, &gens, &[2, 5, 64], 19, TOL);
        }
    }
    // A bias is not absorbed.
    let mut g = Graph::new("batch_norm then bias", true);
    let x = g.input("x", f(true, &[4]));
    let p: Vec<ValueId> = ["w", "b", "m", "v", "c"]
        .iter()
        .map(|n| g.input(n, f(false, &[4])))
        .collect();
    let y = g.push(
        Op::BatchNormEval { eps: 1e-5 },
        vec![x, p[0], p[1], p[2], p[3]],
        "bn",
    );
    let y = g.push(Op::BiasAdd { axis: 1 }, vec![y.unwrap(), p[4]], "bias");
    g.set_output("out", y.unwrap());
    assert_eq!(fuse_epilogues(&g).nodes.len(), g.nodes.len());
}

/// Loss epilogues (`opt::loss_epilogue`): the gradient of a cross-entropy or mean squared error
/// computed by the product that predicts, against the interpreter, and bit-identical to the
/// separate kernels at 1 and 3 threads: a small product (one kernel), single-block and
/// row-split GEMMs, a product split by columns and one wider than a column block (where a
/// cross-entropy's whole rows come after the product), rows of a 3-D value, with and without a
/// bias and an activation to carry the gradient through.
#[test]
fn loss_epilogues_match_the_interpreter_and_the_unfused_kernels() {
    use nnc::opt::{dce::dce, epilogue::fuse_epilogues, loss_epilogue::fuse_loss_epilogues};
    let chain = |bias: Option<usize>, acts: Vec<UnaryOp>| Chain { bias, acts };
    // (a, w, tb, batches)
    let cases: Vec<(Type, Type, bool, Vec<usize>)> = vec![
        (f(true, &[4]), f(false, &[4, 3]), false, vec![1, 5]),
        (
            f(true, &[128]),
            f(false, &[128, 10]),
            false,
            vec![1, 37, 64],
        ),
        (f(true, &[40]), f(false, &[10, 40]), true, vec![9]),
        // Rows split over threads.
        (f(true, &[300]), f(false, &[300, 70]), false, vec![130]),
        // Columns split over threads (8 rows, 200 columns, 9.6 Mflop).
        (f(true, &[3000]), f(false, &[3000, 200]), false, vec![8]),
        // Wider than a column block of the GEMM.
        (f(true, &[16]), f(false, &[16, 2100]), false, vec![3]),
        // Rows of a sequence: B×5 rows of 7.
        (f(true, &[5, 12]), f(false, &[12, 7]), false, vec![1, 6]),
    ];
    for (a, w, tb, batches) in cases {
        let last = a.rank() - 1;
        for c in [
            chain(Some(last), vec![]),
            chain(None, vec![]),
            chain(Some(last), vec![UnaryOp::Sigmoid]),
            chain(None, vec![UnaryOp::Tanh]),
        ] {
            for ce in [true, false] {
                let g = with_loss(&a, &w, tb, &c, ce);
                let fused = dce(&fuse_loss_epilogues(&fuse_epilogues(&g)));
                nnc::ir::verify::verify(&fused).unwrap();
                let grads = fused
                    .nodes
                    .iter()
                    .filter(|n| matches!(n.op, Op::EpilogueGrad))
                    .count();
                assert_eq!(grads, 1, "{}: one loss epilogue", g.name);
                let n = g.ty(g.output("y").unwrap()).last() as i32;
                let mut gens = vec![Gen::U(-1.0, 1.0); g.inputs().len()];
                if ce {
                    *gens.last_mut().unwrap() = Gen::Int(0, n);
                }
                matches_unfused(&g, &fused, &gens, &batches, 13, 1e-4);
            }
        }
    }
}

/// Stride-1 convolutions of at most 9 taps (one channel 3×3, two channels 2×2) run directly on
/// the image ([`nnc::codegen`]'s `direct_conv`): paddings 0–2, widths that are not multiples of
/// 4 (the last positions one by one), output channels in tiles of 8 and a remainder, with and
/// without a fused bias and relu — against the interpreter, bit-identical for 1 and 3 threads.
/// Their weight gradients too, where the output rows hold at least one f32x4 group (else
/// im2col): rows of 9, 7 and 14 end with a masked step over their last four positions.
#[test]
fn direct_convolutions() {
    use nnc::opt::epilogue::fuse_epilogues;
    let cases = [
        // (c, h, w, o, k, pad)
        (1, 28, 28, 32, 3, 1),
        (1, 9, 11, 5, 3, 0),
        (1, 7, 6, 12, 3, 2),
        (2, 8, 13, 9, 2, 1),
        (1, 9, 9, 4, 3, 0),
        (1, 5, 5, 3, 3, 0),
    ];
    for (c, h, wd, o, k, pad) in cases {
        let win = Window {
            kernel: k,
            stride: 1,
            pad,
        };
        let ins = [f(true, &[c, h, wd]), f(false, &[o, c, k, k])];
        let plain = single("direct", Op::Conv2d(win), &ins, None);
        let chain = Epilogue::Chain(Chain {
            bias: Some(1),
            acts: vec![UnaryOp::Relu],
        });
        let fused = fuse_epilogues(&with_epilogue(Op::Conv2d(win), &ins, &chain));
        let y = plain.ty(plain.output("out").unwrap()).clone();
        let gw = single(
            "direct_gw",
            Op::Conv2dGradWeight(win),
            &[ins[0].clone(), y.clone()],
            None,
        );
        let jit = Jit::compile(&gw, &JitOptions::default()).unwrap();
        let algos: Vec<&str> = jit.conv_algorithms().iter().map(|a| a.1).collect();
        let direct = y.dims[2] >= 4;
        assert_eq!(algos, [if direct { "direct" } else { "im2col" }], "{y}");
        // Sums of up to 3,920 products of numbers in ±1, one f32 partial per lane: 1e-4.
        // The direct sums run by parts of the output channels: the same at any thread count.
        for batch in [1, 5] {
            compare(&gw, &[Gen::U(-1.0, 1.0); 2], batch, 29, 1e-4);
            let gens = [Gen::U(-1.0, 1.0); 2];
            let one = run_once(&gw, &gens, batch, 1);
            for threads in [2, 3] {
                assert_eq!(
                    one,
                    run_once(&gw, &gens, batch, threads),
                    "{y} batch {batch}"
                );
            }
        }
        for g in [&plain, &fused] {
            let jit = Jit::compile(g, &JitOptions::default()).unwrap();
            let algos: Vec<&str> = jit.conv_algorithms().iter().map(|a| a.1).collect();
            assert_eq!(algos, ["direct"], "{}", g.name);
            let gens = vec![Gen::U(-1.0, 1.0); g.inputs().len()];
            for batch in [1, 5] {
                compare(g, &gens, batch, 23, TOL);
                let what = format!("{} {c}×{h}×{wd} k={k} p={pad} batch {batch}", g.name);
                assert_eq!(
                    run_once(g, &gens, batch, 1),
                    run_once(g, &gens, batch, 3),
                    "{what}"
                );
            }
        }
    }
}
