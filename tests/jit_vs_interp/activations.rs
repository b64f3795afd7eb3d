//! The activations with a parameter or several pieces (leaky_relu, elu, gelu, silu, softplus):
//! each op and its gradient alone, at the extremes of f32, fused into matrix-product and
//! convolution epilogues and elementwise chains, and in models as the checker lowers them,
//! trained unoptimized and optimized.

use super::*;

/// Every new activation, with the parameters that change how it is computed: a negative and a
/// zero slope or alpha (whose gradients read the input, not the output), a sharper softplus
/// with a lower threshold, and a negative beta.
fn variants() -> Vec<UnaryOp> {
    vec![
        UnaryOp::leaky_relu(0.01),
        UnaryOp::leaky_relu(0.2),
        UnaryOp::leaky_relu(0.0),
        UnaryOp::leaky_relu(-0.5),
        UnaryOp::elu(1.0),
        UnaryOp::elu(0.0),
        UnaryOp::elu(-0.7),
        UnaryOp::elu(2.5),
        UnaryOp::Gelu,
        UnaryOp::GeluTanh,
        UnaryOp::Silu,
        UnaryOp::softplus(1.0, 20.0),
        UnaryOp::softplus(3.0, 5.0),
        UnaryOp::softplus(-1.5, 20.0),
    ]
}

#[test]
fn each_activation_and_its_gradient() {
    let mut rng = Rng(21);
    for op in variants() {
        for &batch in &BATCHES {
            let t = f(true, &[rng.range(1, 37)]);
            let fwd = single(
                &op.to_string(),
                Op::Unary(op),
                std::slice::from_ref(&t),
                None,
            );
            compare(&fwd, &[Gen::U(-9.0, 9.0)], batch, rng.next(), TOL);
            // The gradient reads an output (from −alpha up, for elu) or an input.
            let v = match op {
                UnaryOp::Elu(_) if op.grad_uses_output() => Gen::U(-op.param(), 6.0),
                _ => Gen::U(-9.0, 9.0),
            };
            let g = single(
                &format!("{op}_grad"),
                Op::UnaryGrad(op),
                &[t.clone(), t],
                None,
            );
            compare(&g, &[v, Gen::U(-2.0, 2.0)], batch, rng.next(), TOL);
        }
    }
}

/// Runs `op` (or its gradient, `grad`, on a `dy` of ones) on `xs` through both back ends.
fn both_on(op: Op, xs: &[f32]) -> (Vec<f32>, Vec<f64>) {
    let n = xs.len();
    let t = f(true, &[n]);
    let grad = matches!(op, Op::UnaryGrad(_));
    let ins = if grad { vec![t.clone(), t] } else { vec![t] };
    let g = single(&op.name(), op, &ins, None);
    let ones = vec![1.0f32; n];
    let mut feeds = vec![Feed::F32(xs)];
    if grad {
        feeds.push(Feed::F32(&ones));
    }
    let mut jit = Jit::compile(&g, &JitOptions::default()).unwrap();
    jit.run(1, &feeds, &[], StepCtx::default()).unwrap();
    let f64s: Vec<Vec<f64>> = feeds
        .iter()
        .map(|f| match f {
            Feed::F32(x) => x.iter().map(|&v| f64::from(v)).collect(),
            Feed::I32(_) => unreachable!(),
        })
        .collect();
    let want = interp::eval(&g, 1, &f64s, &[], StepCtx::default()).unwrap();
    let out = g.outputs[0].value.index();
    (jit.output("out").unwrap().to_vec(), want[out].clone())
}

/// At ±100, ±1e30 and ±∞ (where an exponential overflows, or x·σ(x), x·Φ(x) would be ∞·0)
/// every activation and its gradient give a number, or ±∞ where the function is ±∞, and the
/// JIT gives the interpreter's: the limits, 0 and x, and 0 and 1 for the derivatives.
/// (Subnormal arguments are left out: the JIT's steps read them as 0, spec §10a.)
#[test]
fn extremes_give_the_limits_and_no_nan() {
    let inf = f32::INFINITY;
    let xs = [
        0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0, 100.0, -100.0, 1e30, -1e30, inf, -inf, 30.0, -30.0,
        21.0, 19.0,
    ];
    for op in variants() {
        for (what, node) in [("", Op::Unary(op)), ("_grad", Op::UnaryGrad(op))] {
            // An output-reading gradient is given outputs: f(x) for each x.
            let at: Vec<f32> = if what == "_grad" && op.grad_uses_output() {
                xs.iter().map(|&x| interp_fn(op, x)).collect()
            } else {
                xs.to_vec()
            };
            let (got, want) = both_on(node, &at);
            for ((&x, &a), &b) in at.iter().zip(&got).zip(&want) {
                let what = format!("{op}{what}({x}): jit {a}, interp {b}");
                assert!(!a.is_nan() && !b.is_nan(), "{what}");
                if b.is_infinite() {
                    assert_eq!(f64::from(a), b, "{what}");
                } else {
                    assert!((f64::from(a) - b).abs() <= TOL * (1.0 + b.abs()), "{what}");
                }
            }
        }
        // NaN propagates (but through leaky_relu with a zero slope, which is relu: 0).
        let (got, _) = both_on(Op::Unary(op), &[f32::NAN]);
        let relu = op == UnaryOp::leaky_relu(0.0);
        assert_eq!(got[0].is_nan(), !relu, "{op}(NaN) = {}", got[0]);
    }
}

/// `f(x)` by the interpreter, rounded to f32.
fn interp_fn(op: UnaryOp, x: f32) -> f32 {
    nnc::interp::unary_fn(op, f64::from(x)) as f32
}

/// Products with a chain of new activations as their epilogue, or a new activation's gradient:
/// against the interpreter, fused and not, as relu's in `fused.rs`.
#[test]
fn epilogues_of_products_and_convolutions() {
    use nnc::opt::epilogue::fuse_epilogues;
    let mm = Op::MatMul {
        ta: false,
        tb: false,
    };
    let cases: Vec<(Op, [Type; 2], usize)> = vec![
        (mm.clone(), [f(true, &[4]), f(false, &[4, 3])], 3),
        (mm, [f(true, &[300]), f(false, &[300, 70])], 37),
        (
            Op::Conv2d(CONV_3X3),
            [f(true, &[3, 9, 9]), f(false, &[10, 3, 3, 3])],
            2,
        ),
        // Winograd: the chain in the output transform.
        (
            Op::Conv2d(CONV_3X3),
            [f(true, &[9, 7, 7]), f(false, &[6, 9, 3, 3])],
            3,
        ),
    ];
    let vs = variants();
    let mut epis: Vec<Epilogue> = vs
        .chunks(3)
        .map(|acts| {
            Epilogue::Chain(Chain {
                bias: Some(0),
                acts: acts.to_vec(),
            })
        })
        .collect();
    epis.extend(vs.iter().map(|&u| Epilogue::Grad(u)));
    for (product, ins, batch) in cases {
        for epi in &epis {
            let g = with_epilogue(product.clone(), &ins, epi);
            let fused = fuse_epilogues(&g);
            assert_eq!(fused.nodes.len(), g.nodes.len() - 1, "{}", g.name);
            let gens = vec![Gen::U(-2.0, 2.0); g.inputs().len()];
            compare(&g, &gens, batch, 12, 1e-4);
            compare(&fused, &gens, batch, 12, 1e-4);
            let want = run_once(&g, &gens, batch, 1);
            assert_eq!(want, run_once(&fused, &gens, batch, 3), "{}", g.name);
        }
    }
}

/// The checked program of `src`.
fn program(src: &str) -> nnc::ir::Program {
    let file = nnc::syntax::parse(src).unwrap_or_else(|d| panic!("{d:?}"));
    nnc::check::check(&file)
        .unwrap_or_else(|d| panic!("{}", nnc::diag::Report::new("t.nn", src, d).render(false)))
}

/// The training graph of `model M(x: [6]) -> [3] { return x |> {body} }` with an mse loss.
fn model(body: &str) -> Graph {
    let src = format!(
        "model M(x: [6]) -> [3] {{ return x |> {body} }}
         data d {{ train: inline(x: [[0, 0, 0, 0, 0, 0]], y: [[0, 0, 0]]) }}
         train M on d {{ loss: mse(output, label) optimizer: sgd(lr: 0.1) }}"
    );
    program(&src).run("M").unwrap().graph.clone()
}

/// Dense layers with each activation, as the checker lowers them, differentiated and run on
/// both back ends, every value unoptimized and the loss and gradients optimized; optimized,
/// each activation is computed in the epilogue of the product before it (leaky_relu's and
/// elu's also in training, their gradients reading the output), and each gradient in the
/// epilogue of the product after it.
#[test]
fn models_train_as_the_interpreter_does_unoptimized_and_optimized() {
    let bodies = [
        ("leaky_relu", true),
        ("leaky_relu(negative_slope: -0.3)", false),
        ("elu", true),
        ("elu(alpha: -0.5)", false),
        ("gelu", false),
        ("gelu(approximate: \"tanh\")", false),
        ("silu", false),
        ("softplus(beta: 2, threshold: 3)", false),
    ];
    for (act, through_output) in bodies {
        let body = format!("dense(8) |> {act} |> dense(5) |> {act} |> dense(3)");
        let g = model(&body);
        let mut t = nnc::autodiff::grad(&g).unwrap();
        let opt = nnc::opt::optimize(&t, 1).unwrap();
        let name = act.split('(').next().unwrap();
        let epi = |pred: &dyn Fn(&str) -> bool| {
            opt.nodes
                .iter()
                .filter(|n| matches!(n.op, Op::WithEpilogue { .. }))
                .map(|n| n.op.attrs())
                .filter(|a| pred(a))
                .count()
        };
        let fwd = epi(&|a: &str| a.contains(&format!("→ {name}")));
        let bwd = epi(&|a: &str| a.contains(&format!("[{name}_grad")));
        assert_eq!(fwd, if through_output { 2 } else { 0 }, "{body}");
        assert_eq!(bwd, 2, "{body}: {}", nnc::ir::print::graph_to_string(&opt));
        expose_all(&mut t);
        for graph in [t, opt] {
            for &batch in &BATCHES {
                compare(
                    &graph,
                    &[Gen::U(-2.0, 2.0), Gen::U(-1.0, 1.0)],
                    batch,
                    70,
                    TOL,
                );
            }
        }
    }
}

/// A convolution with leaky_relu then max pooling, and a dense layer with elu before an mse
/// loss: optimized, the convolution computes bias and leaky_relu (and, for inference, the
/// pooling) in its epilogue, the pooling's gradient applies leaky_relu's, and the dense layer's
/// epilogue differentiates the loss through elu (`→ elu_grad`, which reads elu's output); the
/// loss and every gradient as the interpreter gives them, unoptimized and optimized.
#[test]
fn convolutions_pools_and_loss_epilogues_with_new_activations() {
    let src = format!(
        "model M(x: [1, 8, 8]) -> [3] {{
             return x |> conv2d(4, kernel: 3) |> leaky_relu |> maxpool(2) |> flatten
                 |> dense(3) |> elu
         }}
         data d {{ train: inline(x: [[{}]], y: [[0, 0, 0]]) }}
         train M on d {{ loss: mse(output, label) optimizer: sgd(lr: 0.1) }}",
        vec!["0"; 64].join(", ")
    );
    image_model_fuses_and_trains(
        &src,
        &[
            (
                false,
                "[bias_add axis=1 → leaky_relu slope=0.01 → maxpool k=2 s=2 p=0]",
            ),
            (
                true,
                "conv2d_epi k=3 s=1 p=0 [bias_add axis=1 → leaky_relu slope=0.01]",
            ),
            (true, "[leaky_relu_grad slope=0.01]"),
            (
                true,
                "[bias_add axis=1 → elu alpha=1 | mse_grad dl=1.0 → elu_grad alpha=1]",
            ),
        ],
    );
}

/// Batch norms with gelu and leaky_relu after them: both computed in the batch norm's
/// epilogue for inference, leaky_relu also in training, and gelu's gradient (which reads the
/// batch norm's output, its input) in the epilogue of the max pool's gradient.
#[test]
fn batch_norms_with_new_activations() {
    let src = format!(
        "model M(x: [1, 8, 8]) -> [3] {{
             h = x |> conv2d(4, kernel: 3) |> batch_norm |> gelu |> maxpool(2) |> flatten
             return h |> dense(16) |> batch_norm |> leaky_relu(0.2) |> dense(3)
         }}
         data d {{ train: inline(x: [[{}]], y: [[0, 0, 0]]) }}
         train M on d {{ loss: mse(output, label) optimizer: sgd(lr: 0.1) }}",
        vec!["0"; 64].join(", ")
    );
    image_model_fuses_and_trains(
        &src,
        &[
            (false, "batch_norm_eval_epi eps=1e-5 [gelu]"),
            (false, "batch_norm_eval_epi eps=1e-5 [leaky_relu slope=0.2]"),
            (true, "batch_norm_epi eps=1e-5 [leaky_relu slope=0.2]"),
            (true, "maxpool_grad_epi k=2 s=2 p=0 [gelu_grad]"),
        ],
    );
}

/// Model `M` of `src` (on `x: [1, 8, 8]` and a label of 3) optimized: each `(training, group)`
/// is among the fusion groups of its training graph (or, not `training`, its inference graph);
/// then the loss and every gradient as the interpreter gives them, and every value unoptimized
/// (at batches of 5 and 64: two samples through a batch norm are ±1 up to rounding, which the
/// gradients of its weight amplify in f32).
fn image_model_fuses_and_trains(src: &str, groups: &[(bool, &str)]) {
    let p = program(src);
    let inference = nnc::opt::optimize(&p.model("M").unwrap().graph, 1).unwrap();
    let t = nnc::autodiff::grad(&p.run("M").unwrap().graph).unwrap();
    let opt = nnc::opt::optimize(&t, 1).unwrap();
    for &(training, want) in groups {
        let g = nnc::opt::fuse::groups_to_string(if training { &opt } else { &inference });
        assert!(g.contains(want), "no `{want}` in\n{g}");
    }
    let mut t = t;
    expose_all(&mut t);
    for g in [&t, &opt] {
        for &batch in &[5, 64] {
            compare(g, &[Gen::U(-1.0, 1.0), Gen::U(-1.0, 1.0)], batch, 90, TOL);
        }
    }
}
