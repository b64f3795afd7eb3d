//! Every op with a gradient rule, in a tiny graph: the analytic gradient (the interpreter
//! running `autodiff::grad(g)`) against f64 central finite differences of the loss.
//! Then whole models end to end, and the rules about frozen and unused parameters.

use nnc::autodiff::grad;
use nnc::autodiff::gradcheck::{gradcheck, interpreter_grads, GradReport, F32_FLOOR, F64_FLOOR};
use nnc::exec::StepCtx;
use nnc::ir::verify::verify;
use nnc::ir::{BinaryOp, Graph, Init, Op, Param, Type, UnaryOp, ValueId, Window};

const CTX: StepCtx = StepCtx {
    seed: 11,
    step: 5,
    first: 0,
};
const TOL: f64 = 1e-6;

/// Deterministic values uniform in [lo, hi) (a splitmix64 stream).
fn uniform(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    (0..n as u64)
        .map(|i| {
            let mut x = seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(i.wrapping_mul(0xD1B5_4A32_D192_ED03));
            x ^= x >> 30;
            x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x ^= x >> 27;
            x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^= x >> 31;
            lo + (hi - lo) * ((x >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect()
}

fn f(batched: bool, dims: &[usize]) -> Type {
    Type::f32(batched, dims.to_vec())
}

fn param(g: &mut Graph, path: &str, dims: &[usize]) -> ValueId {
    g.add_param(Param {
        path: path.into(),
        dims: dims.to_vec(),
        init: Init::Zeros,
        frozen: false,
    })
}

fn frozen(g: &mut Graph, path: &str, dims: &[usize]) -> ValueId {
    g.add_param(Param {
        path: path.into(),
        dims: dims.to_vec(),
        init: Init::Zeros,
        frozen: true,
    })
}

fn op(g: &mut Graph, op: Op, ins: &[ValueId]) -> ValueId {
    g.push(op, ins.to_vec(), "").unwrap()
}

/// loss = mse(y, target) with a fed target of y's type.
fn mse_loss(g: &mut Graph, y: ValueId) {
    let t = g.ty(y).clone();
    let target = g.input("target", t);
    let l = g.push(Op::Mse, vec![y, target], "loss").unwrap();
    g.set_output("loss", l);
}

/// dense layer on the last axis: x·w + b.
fn dense(g: &mut Graph, x: ValueId, out: usize, name: &str) -> ValueId {
    let k = g.ty(x).last();
    let w = param(g, &format!("{name}.weight"), &[k, out]);
    let b = param(g, &format!("{name}.bias"), &[out]);
    let y = g
        .push(
            Op::MatMul {
                ta: false,
                tb: false,
            },
            vec![x, w],
            name,
        )
        .unwrap();
    let axis = g.ty(y).rank() - 1;
    g.push(Op::BiasAdd { axis }, vec![y, b], name).unwrap()
}

/// Feeds: f32 inputs uniform in [-1, 1) unless given; parameters uniform in [lo, hi).
struct Setup {
    batch: usize,
    inputs: Vec<Vec<f64>>,
    params: Vec<Vec<f64>>,
}

fn setup(g: &Graph, batch: usize, given: &[(&str, Vec<f64>)], lo: f64, hi: f64) -> Setup {
    let inputs = g
        .inputs()
        .iter()
        .enumerate()
        .map(
            |(i, (v, name))| match given.iter().find(|(n, _)| n == name) {
                Some((_, x)) => x.clone(),
                None => uniform(g.ty(*v).numel(batch), 100 + i as u64, -1.0, 1.0),
            },
        )
        .collect();
    let params = g
        .params
        .iter()
        .enumerate()
        .map(|(i, p)| uniform(p.numel(), 1 + i as u64, lo, hi))
        .collect();
    Setup {
        batch,
        inputs,
        params,
    }
}

/// Runs the check and asserts every trainable parameter matches to `TOL`.
fn check_with(g: &Graph, s: &Setup) -> GradReport {
    let gg = grad(g)
        .unwrap_or_else(|e| panic!("grad failed: {e}\n{}", nnc::ir::print::graph_to_string(g)));
    verify(&gg).unwrap();
    let mut analytic = interpreter_grads(&gg, s.batch, &s.inputs, CTX);
    let r = gradcheck(
        g,
        &mut analytic,
        s.batch,
        &s.inputs,
        &s.params,
        CTX,
        F64_FLOOR,
    )
    .unwrap();
    assert_eq!(
        r.params.len(),
        g.params.iter().filter(|p| !p.frozen).count()
    );
    assert!(r.params.iter().all(|p| p.checked > 0));
    assert!(
        r.max_rel_err() < TOL,
        "{r}\n{}",
        nnc::ir::print::graph_to_string(&gg)
    );
    r
}

fn check(g: &Graph, batch: usize) -> GradReport {
    check_with(g, &setup(g, batch, &[], -1.0, 1.0))
}

#[test]
fn unary_ops() {
    for u in [
        UnaryOp::Neg,
        UnaryOp::Relu,
        UnaryOp::Sigmoid,
        UnaryOp::Tanh,
        UnaryOp::Exp,
    ] {
        let mut g = Graph::new("t", true);
        let w = param(&mut g, "w", &[7]);
        let y = op(&mut g, Op::Unary(u), &[w]);
        mse_loss(&mut g, y);
        check(&g, 1);
    }
    // log needs positive arguments.
    let mut g = Graph::new("t", true);
    let w = param(&mut g, "w", &[7]);
    let y = op(&mut g, Op::Unary(UnaryOp::Log), &[w]);
    mse_loss(&mut g, y);
    check_with(&g, &setup(&g, 1, &[], 0.5, 1.5));
}

/// The activations added after relu, sigmoid and tanh, with the parameters that change how
/// their gradients are computed (from the output for a positive slope or alpha ≥ 0, else from
/// the input) and a softplus whose threshold lies among the weights, on weights in [−3, 3).
#[test]
fn new_activations() {
    for u in [
        UnaryOp::leaky_relu(0.01),
        UnaryOp::leaky_relu(0.3),
        UnaryOp::leaky_relu(-0.4),
        UnaryOp::elu(1.0),
        UnaryOp::elu(0.4),
        UnaryOp::elu(-1.3),
        UnaryOp::Gelu,
        UnaryOp::GeluTanh,
        UnaryOp::Silu,
        UnaryOp::softplus(1.0, 20.0),
        UnaryOp::softplus(1.0, 1.0),
        UnaryOp::softplus(2.5, 20.0),
        UnaryOp::softplus(-0.5, 20.0),
    ] {
        let mut g = Graph::new("t", true);
        let w = param(&mut g, "w", &[16]);
        let y = op(&mut g, Op::Unary(u), &[w]);
        mse_loss(&mut g, y);
        let r = check_with(&g, &setup(&g, 1, &[], -3.0, 3.0));
        println!("{u}: {r}");
    }
}

#[test]
fn binary_ops_same_shape_and_broadcast() {
    for b in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
        let mut g = Graph::new("t", true);
        let x = g.input("x", f(true, &[3]));
        let a = param(&mut g, "a", &[3]);
        let c = param(&mut g, "c", &[3]);
        let s = param(&mut g, "s", &[]);
        let ax = op(&mut g, Op::BiasAdd { axis: 1 }, &[x, a]); // batched, depends on a
        let cb = op(&mut g, Op::Unary(UnaryOp::Exp), &[c]);
        let cb = op(&mut g, Op::BiasAdd { axis: 1 }, &[x, cb]); // batched, depends on c
        let y1 = op(&mut g, Op::Binary(b), &[ax, cb]);
        let y2 = op(&mut g, Op::Binary(b), &[y1, s]); // tensor op scalar
        let es = op(&mut g, Op::Unary(UnaryOp::Exp), &[s]);
        let y3 = op(&mut g, Op::Binary(b), &[es, y2]); // scalar op tensor
        mse_loss(&mut g, y3);
        // Keep divisors away from 0: x in [-1, 1) plus exp(c) with c in [0.5, 1.5) is > 0.6.
        check_with(&g, &setup(&g, 2, &[], 0.5, 1.5));
    }
}

#[test]
fn matmul_all_layouts() {
    let mut g = Graph::new("t", true);
    let x = g.input("x", f(true, &[2, 3])); // B×T×K: rows are flattened
    let w = param(&mut g, "w", &[3, 4]);
    let wt = param(&mut g, "wt", &[4, 3]);
    let h = op(
        &mut g,
        Op::MatMul {
            ta: false,
            tb: false,
        },
        &[x, w],
    );
    let h2 = op(
        &mut g,
        Op::MatMul {
            ta: false,
            tb: true,
        },
        &[x, wt],
    );
    let gram = op(
        &mut g,
        Op::MatMul {
            ta: true,
            tb: false,
        },
        &[h, h2],
    ); // [4, 4]
    let m = param(&mut g, "m", &[2, 4]);
    let y = op(
        &mut g,
        Op::MatMul {
            ta: false,
            tb: false,
        },
        &[m, gram],
    ); // unbatched a
    mse_loss(&mut g, y);
    check(&g, 2);
}

#[test]
fn bias_add_on_every_axis() {
    for axis in 1..4 {
        let mut g = Graph::new("t", true);
        let x = g.input("x", f(true, &[2, 3, 4]));
        let c = [2, 3, 4][axis - 1];
        let b = param(&mut g, "b", &[c]);
        let y = op(&mut g, Op::BiasAdd { axis }, &[x, b]);
        let y = op(&mut g, Op::Unary(UnaryOp::Tanh), &[y]);
        mse_loss(&mut g, y);
        check(&g, 2);
    }
    // On an unbatched tensor too.
    let mut g = Graph::new("t", true);
    let w = param(&mut g, "w", &[3, 2]);
    let b = param(&mut g, "b", &[3]);
    let y = op(&mut g, Op::BiasAdd { axis: 0 }, &[w, b]);
    mse_loss(&mut g, y);
    check(&g, 1);
}

#[test]
fn conv2d_input_and_weight() {
    for win in [
        Window {
            kernel: 3,
            stride: 1,
            pad: 1,
        },
        Window {
            kernel: 3,
            stride: 2,
            pad: 1,
        },
        Window {
            kernel: 2,
            stride: 2,
            pad: 0,
        },
    ] {
        let mut g = Graph::new("t", true);
        let x = g.input("x", f(true, &[2, 5, 4]));
        let w1 = param(&mut g, "w1", &[3, 2, 1, 1]);
        let h = op(
            &mut g,
            Op::Conv2d(Window {
                kernel: 1,
                stride: 1,
                pad: 0,
            }),
            &[x, w1],
        ); // so dx is needed
        let w = param(&mut g, "w", &[2, 3, win.kernel, win.kernel]);
        let y = op(&mut g, Op::Conv2d(win), &[h, w]);
        mse_loss(&mut g, y);
        check(&g, 2);
    }
}

#[test]
fn pooling() {
    for pool in [
        Op::MaxPool(Window {
            kernel: 2,
            stride: 2,
            pad: 0,
        }),
        Op::MaxPool(Window {
            kernel: 3,
            stride: 2,
            pad: 1,
        }),
        Op::AvgPool(Window {
            kernel: 2,
            stride: 2,
            pad: 0,
        }),
        Op::AvgPool(Window {
            kernel: 3,
            stride: 1,
            pad: 1,
        }),
        Op::GlobalMaxPool,
        Op::GlobalAvgPool,
    ] {
        let mut g = Graph::new("t", true);
        // Not square: global pooling's window is the whole 4×5 map.
        let x = g.input("x", f(true, &[2, 4, 5]));
        // An image batch that depends on a parameter: a 1×1 convolution.
        let k = param(&mut g, "k", &[2, 2, 1, 1]);
        let h = op(
            &mut g,
            Op::Conv2d(Window {
                kernel: 1,
                stride: 1,
                pad: 0,
            }),
            &[x, k],
        );
        let y = op(&mut g, pool, &[h]);
        mse_loss(&mut g, y);
        check(&g, 2);
    }
}

#[test]
fn reshape_flatten() {
    let mut g = Graph::new("t", true);
    let x = g.input("x", f(true, &[2, 3]));
    let b = param(&mut g, "b", &[3]);
    let h = op(&mut g, Op::BiasAdd { axis: 2 }, &[x, b]);
    let flat = g.push_typed(Op::Reshape, vec![h], f(true, &[6]), "flatten");
    let y = dense(&mut g, flat, 2, "dense");
    mse_loss(&mut g, y);
    check(&g, 3);
}

#[test]
fn embedding_with_repeated_ids() {
    let mut g = Graph::new("t", true);
    let ids = g.input("ids", Type::i32(true, vec![3]));
    let w = param(&mut g, "emb", &[4, 2]);
    let y = op(&mut g, Op::Embedding, &[ids, w]);
    let y = op(&mut g, Op::Unary(UnaryOp::Tanh), &[y]);
    mse_loss(&mut g, y);
    check_with(
        &g,
        &setup(
            &g,
            2,
            &[("ids", vec![0.0, 3.0, 0.0, 2.0, 0.0, 3.0])],
            -1.0,
            1.0,
        ),
    );
}

#[test]
fn one_hot_has_no_gradient_but_feeds_a_layer() {
    let mut g = Graph::new("t", true);
    let ids = g.input("ids", Type::i32(true, vec![]));
    let oh = op(&mut g, Op::OneHot { n: 3 }, &[ids]);
    let y = dense(&mut g, oh, 2, "dense");
    mse_loss(&mut g, y);
    check_with(
        &g,
        &setup(&g, 3, &[("ids", vec![2.0, 0.0, 5.0])], -1.0, 1.0),
    );
}

#[test]
fn rnn_scan_every_activation() {
    for act in [UnaryOp::Tanh, UnaryOp::Sigmoid, UnaryOp::Relu] {
        let mut g = Graph::new("t", true);
        let x = g.input("x", f(true, &[3, 2]));
        let xp = dense(&mut g, x, 4, "rnn");
        let w = param(&mut g, "rnn.w_hh", &[4, 4]);
        let h = op(&mut g, Op::RnnScan { act }, &[xp, w]);
        mse_loss(&mut g, h);
        check(&g, 2);
    }
}

/// The LSTM's gradient, taken at its hidden states: hidden sizes 1, 3 and 4, one step and
/// several; the loss reads h only, so every gate and the carried cell gradient are exercised.
#[test]
fn lstm_scan_and_hidden() {
    for (t, h) in [(1, 3), (4, 1), (3, 4)] {
        let mut g = Graph::new("t", true);
        let x = g.input("x", f(true, &[t, 2]));
        let xp = dense(&mut g, x, 4 * h, "lstm");
        let w = param(&mut g, "lstm.w_hh", &[h, 4 * h]);
        let s = op(&mut g, Op::LstmScan, &[xp, w]);
        let hs = op(&mut g, Op::LstmHidden, &[s]);
        mse_loss(&mut g, hs);
        let r = check(&g, 2);
        assert_eq!(r.params.len(), 3, "w_xh, bias and w_hh");
    }
}

#[test]
fn dropout_uses_the_same_mask_backward() {
    let mut g = Graph::new("t", true);
    let w = param(&mut g, "w", &[40]);
    let y = op(&mut g, Op::Dropout { p: 0.3, salt: 0 }, &[w]);
    mse_loss(&mut g, y);
    let r = check(&g, 1);
    assert!(r.params[0].max_rel_err < TOL);
}

#[test]
fn softmax_and_log_softmax() {
    for o in [Op::Softmax, Op::LogSoftmax] {
        let mut g = Graph::new("t", true);
        let x = g.input("x", f(true, &[2, 5]));
        let b = param(&mut g, "b", &[5]);
        let h = op(&mut g, Op::BiasAdd { axis: 2 }, &[x, b]);
        let y = op(&mut g, o, &[h]);
        mse_loss(&mut g, y);
        check(&g, 2);
    }
}

/// Layer normalization's three gradients (input, weight, bias), on rows of 5 whose weight and
/// bias start away from 1 and 0.
#[test]
fn layer_norm() {
    let mut g = Graph::new("t", true);
    let x = g.input("x", f(true, &[3, 5]));
    let a = param(&mut g, "a", &[5]);
    let h = op(&mut g, Op::BiasAdd { axis: 2 }, &[x, a]);
    let w = param(&mut g, "ln.weight", &[5]);
    let b = param(&mut g, "ln.bias", &[5]);
    let y = op(&mut g, Op::LayerNorm { eps: 1e-5 }, &[h, w, b]);
    let y = op(&mut g, Op::Unary(UnaryOp::Tanh), &[y]);
    mse_loss(&mut g, y);
    check(&g, 2);
}

/// Batch normalization in training mode (statistics of the batch): its input, weight and bias
/// gradients, on [C] vectors (`BatchNorm1d`) and [C, H, W] maps (`BatchNorm2d`). The input
/// passes a tanh after its bias, or the per-channel shift would cancel in the normalization.
/// The running statistics are frozen buffers: no gradient, and the check skips them.
#[test]
fn batch_norm() {
    for (dims, batch) in [(&[3][..], 4), (&[2, 3, 2][..], 2), (&[2, 2, 2][..], 1)] {
        let mut g = Graph::new("t", true);
        let x = g.input("x", f(true, dims));
        let a = param(&mut g, "a", &dims[..1]);
        let h = op(&mut g, Op::BiasAdd { axis: 1 }, &[x, a]);
        let h = op(&mut g, Op::Unary(UnaryOp::Tanh), &[h]);
        let w = param(&mut g, "bn.weight", &dims[..1]);
        let b = param(&mut g, "bn.bias", &dims[..1]);
        frozen(&mut g, "bn.running_mean", &dims[..1]);
        frozen(&mut g, "bn.running_var", &dims[..1]);
        let stats = op(&mut g, Op::BatchStats { momentum: 0.1 }, &[h]);
        let y = op(&mut g, Op::BatchNorm { eps: 1e-5 }, &[h, stats, w, b]);
        let y = op(&mut g, Op::Unary(UnaryOp::Tanh), &[y]);
        mse_loss(&mut g, y);
        let r = check(&g, batch);
        assert_eq!(r.params.len(), 3);
    }
}

/// `batch_norm(affine: false, track_running_stats: false)`: a unit weight and a zero bias
/// that are constants, not parameters, and no buffers; the input's gradient still runs
/// through the batch statistics.
#[test]
fn batch_norm_without_affine() {
    for (dims, batch) in [(&[3][..], 4), (&[2, 3, 2][..], 2)] {
        let mut g = Graph::new("t", true);
        let x = g.input("x", f(true, dims));
        let a = param(&mut g, "a", &dims[..1]);
        let h = op(&mut g, Op::BiasAdd { axis: 1 }, &[x, a]);
        let h = op(&mut g, Op::Unary(UnaryOp::Tanh), &[h]);
        let w = g.filled(1.0, dims[..1].to_vec(), "bn");
        let b = g.filled(0.0, dims[..1].to_vec(), "bn");
        let stats = op(&mut g, Op::BatchStats { momentum: 0.1 }, &[h]);
        let y = op(&mut g, Op::BatchNorm { eps: 1e-5 }, &[h, stats, w, b]);
        let y = op(&mut g, Op::Unary(UnaryOp::Tanh), &[y]);
        mse_loss(&mut g, y);
        let r = check(&g, batch);
        assert_eq!(r.params.len(), 1);
    }
}

/// A frozen batch norm (evaluation mode on the running statistics, as `freeze:` makes it):
/// only its input has a gradient, dy·weight/√(running_var + eps). Every parameter is drawn in
/// [0.5, 1.5], so that the running variance is positive.
#[test]
fn frozen_batch_norm() {
    for dims in [&[3][..], &[2, 3, 2][..]] {
        let mut g = Graph::new("t", true);
        let x = g.input("x", f(true, dims));
        let a = param(&mut g, "a", &dims[..1]);
        let h = op(&mut g, Op::BiasAdd { axis: 1 }, &[x, a]);
        let c = &dims[..1];
        let [w, b, m, v] = ["weight", "bias", "running_mean", "running_var"]
            .map(|n| frozen(&mut g, &format!("bn.{n}"), c));
        let y = op(&mut g, Op::BatchNormEval { eps: 1e-5 }, &[h, w, b, m, v]);
        let y = op(&mut g, Op::Unary(UnaryOp::Tanh), &[y]);
        mse_loss(&mut g, y);
        let r = check_with(&g, &setup(&g, 3, &[], 0.5, 1.5));
        assert_eq!(r.params.len(), 1);
    }
}

/// logits = x·w + b for a classifier with `c` classes, over rows B×T.
fn classifier(c: usize) -> (Graph, ValueId) {
    let mut g = Graph::new("t", true);
    let x = g.input("x", f(true, &[2, 3]));
    let y = dense(&mut g, x, c, "head");
    (g, y)
}

#[test]
fn cross_entropy_with_i32_labels() {
    let (mut g, logits) = classifier(4);
    let labels = g.input("label", Type::i32(true, vec![2]));
    let l = op(&mut g, Op::CrossEntropy, &[logits, labels]);
    g.set_output("loss", l);
    check_with(
        &g,
        &setup(
            &g,
            3,
            &[("label", vec![0.0, 3.0, 1.0, 1.0, 2.0, 0.0])],
            -1.0,
            1.0,
        ),
    );
}

#[test]
fn soft_cross_entropy_with_a_distribution() {
    let (mut g, logits) = classifier(4);
    let t = g.input("t", f(true, &[2, 4]));
    let target = op(&mut g, Op::Softmax, &[t]); // rows sum to 1
    let l = op(&mut g, Op::SoftCrossEntropy, &[logits, target]);
    g.set_output("loss", l);
    check(&g, 2);
}

#[test]
fn kl_div_flows_into_q_only() {
    let (mut g, q) = classifier(4);
    let p = g.input("p", f(true, &[2, 4]));
    let l = op(&mut g, Op::KlDiv, &[p, q]);
    g.set_output("loss", l);
    check(&g, 2);
}

#[test]
fn mse_into_both_sides_and_bce() {
    let mut g = Graph::new("t", true);
    let a = param(&mut g, "a", &[5]);
    let b = param(&mut g, "b", &[5]);
    let l = op(&mut g, Op::Mse, &[a, b]);
    g.set_output("loss", l);
    check(&g, 1);

    let mut g = Graph::new("t", true);
    let x = g.input("x", f(true, &[3]));
    let h = dense(&mut g, x, 3, "d");
    let p = op(&mut g, Op::Unary(UnaryOp::Sigmoid), &[h]);
    let y = g.input("y", f(true, &[3]));
    let l = op(&mut g, Op::Bce, &[p, y]);
    g.set_output("loss", l);
    check_with(
        &g,
        &setup(
            &g,
            2,
            &[("y", vec![0.0, 1.0, 0.3, 1.0, 0.0, 0.8])],
            -1.0,
            1.0,
        ),
    );
}

/// A cross-entropy over the positions of a sequence summed rather than averaged: over the
/// B·2 rows of 4 classes, six times the mean at a batch of three.
#[test]
fn cross_entropy_summed_over_positions() {
    let loss = |sum: bool| {
        let (mut g, logits) = classifier(4);
        let labels = g.input("label", Type::i32(true, vec![2]));
        let mut l = op(&mut g, Op::CrossEntropy, &[logits, labels]);
        if sum {
            l = op(&mut g, Op::MeanToSum { per: 4 }, &[l, logits]);
        }
        g.set_output("loss", l);
        let labels = vec![0.0, 3.0, 1.0, 1.0, 2.0, 0.0];
        check_with(&g, &setup(&g, 3, &[("label", labels)], -1.0, 1.0)).loss
    };
    let (mean, sum) = (loss(false), loss(true));
    assert!(
        (sum - 6.0 * mean).abs() < 1e-12 * sum,
        "{sum} vs 6 × {mean}"
    );
}

#[test]
fn sum_squares_penalty_and_weighted_sum_of_losses() {
    let (mut g, logits) = classifier(3);
    let labels = g.input("label", Type::i32(true, vec![2]));
    let ce = op(&mut g, Op::CrossEntropy, &[logits, labels]);
    let w = g
        .param_node(g.param_by_path("head.weight").unwrap())
        .unwrap();
    let l2 = op(&mut g, Op::SumSquares, &[w]);
    let lambda = g.constant(0.01);
    let pen = op(&mut g, Op::Binary(BinaryOp::Mul), &[lambda, l2]);
    let l = op(&mut g, Op::Binary(BinaryOp::Add), &[ce, pen]);
    g.set_output("loss", l);
    check_with(
        &g,
        &setup(&g, 2, &[("label", vec![0.0, 2.0, 1.0, 1.0])], -1.0, 1.0),
    );
}

#[test]
fn a_value_with_several_users_accumulates() {
    let mut g = Graph::new("t", true);
    let x = g.input("x", f(true, &[3]));
    let h = dense(&mut g, x, 3, "d");
    let a = op(&mut g, Op::Unary(UnaryOp::Tanh), &[h]);
    let b = op(&mut g, Op::Binary(BinaryOp::Mul), &[h, a]);
    let c = op(&mut g, Op::Binary(BinaryOp::Add), &[b, h]);
    mse_loss(&mut g, c);
    let gg = grad(&g).unwrap();
    let adds = gg
        .nodes
        .iter()
        .filter(|n| n.op == Op::Binary(BinaryOp::Add) && n.label == "d d")
        .count();
    assert!(adds >= 2, "{}", nnc::ir::print::graph_to_string(&gg));
    check(&g, 2);
}

#[test]
fn frozen_parameter_gets_no_gradient() {
    let mut g = Graph::new("t", true);
    let x = g.input("x", f(true, &[3]));
    let wf = frozen(&mut g, "encoder.weight", &[3, 3]);
    let h = op(
        &mut g,
        Op::MatMul {
            ta: false,
            tb: false,
        },
        &[x, wf],
    );
    let h = op(&mut g, Op::Unary(UnaryOp::Relu), &[h]);
    let y = dense(&mut g, h, 2, "head");
    mse_loss(&mut g, y);
    let gg = grad(&g).unwrap();
    assert!(gg.output("grad:encoder.weight").is_none());
    assert!(gg.output("grad:head.weight").is_some() && gg.output("grad:head.bias").is_some());
    assert!(gg.output("loss").is_some());
    // Nothing flows toward the frozen weight or the input: no matmul produces a [3,3] gradient.
    let backward = &gg.nodes[g.nodes.len()..];
    assert!(!backward
        .iter()
        .any(|n| n.label.contains("encoder") || n.label == "d x"));
    assert_eq!(
        backward
            .iter()
            .filter(|n| matches!(n.op, Op::UnaryGrad(_)))
            .count(),
        0
    );
    check(&g, 2);
}

#[test]
fn unused_parameter_gets_a_zero_gradient() {
    let mut g = Graph::new("t", true);
    let x = g.input("x", f(true, &[3]));
    let y = dense(&mut g, x, 2, "head");
    g.add_param(Param {
        path: "spare".into(),
        dims: vec![2],
        init: Init::Zeros,
        frozen: false,
    });
    mse_loss(&mut g, y);
    let gg = grad(&g).unwrap();
    let s = setup(&g, 2, &[], -1.0, 1.0);
    let vals = nnc::interp::eval(&gg, 2, &s.inputs, &s.params, CTX).unwrap();
    assert_eq!(
        vals[gg.output("grad:spare").unwrap().index()],
        vec![0.0, 0.0]
    );
    check_with(&g, &s);
}

#[test]
fn a_loss_independent_of_every_parameter() {
    let mut g = Graph::new("t", true);
    let x = g.input("x", f(true, &[3]));
    param(&mut g, "w", &[3]);
    mse_loss(&mut g, x);
    let gg = grad(&g).unwrap();
    // No seed, no backward pass: only the zero gradient.
    assert!(!gg.nodes.iter().any(|n| n.op == Op::Const(1.0)));
    check(&g, 2);
}

#[test]
fn forward_nodes_and_outputs_are_kept() {
    let (mut g, logits) = classifier(3);
    g.set_output("output", logits);
    let labels = g.input("label", Type::i32(true, vec![2]));
    let l = op(&mut g, Op::CrossEntropy, &[logits, labels]);
    g.set_output("loss", l);
    let gg = grad(&g).unwrap();
    assert_eq!(gg.nodes[..g.nodes.len()], g.nodes[..]);
    assert_eq!(gg.outputs[..2], g.outputs[..]);
    let names: Vec<&str> = gg.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        names,
        ["output", "loss", "grad:head.weight", "grad:head.bias"]
    );
    let printed = nnc::ir::print::graph_to_string(&gg);
    assert!(
        printed.contains("; grad head.weight") && printed.contains("; d head"),
        "{printed}"
    );
}

#[test]
fn gradients_into_a_target_are_refused() {
    let mut g = Graph::new("t", true);
    let x = param(&mut g, "x", &[3]);
    let t = param(&mut g, "t", &[3]);
    let l = op(&mut g, Op::SoftCrossEntropy, &[x, t]);
    g.set_output("loss", l);
    assert!(grad(&g)
        .unwrap_err()
        .contains("no gradient flows into its target"));
    let g = Graph::new("t", true);
    assert!(grad(&g).unwrap_err().contains("no `loss` output"));
}

// ----- whole models

#[test]
fn mlp_two_layers_end_to_end() {
    let mut g = Graph::new("train Mlp", true);
    let x = g.input("x", f(true, &[6]));
    let h = dense(&mut g, x, 5, "dense1");
    let h = op(&mut g, Op::Unary(UnaryOp::Relu), &[h]);
    let y = dense(&mut g, h, 3, "dense2");
    g.set_output("output", y);
    let labels = g.input("label", Type::i32(true, vec![]));
    let l = op(&mut g, Op::CrossEntropy, &[y, labels]);
    g.set_output("loss", l);
    check_with(
        &g,
        &setup(&g, 4, &[("label", vec![0.0, 2.0, 1.0, 2.0])], -0.5, 0.5),
    );
}

#[test]
fn cnn_end_to_end() {
    let mut g = Graph::new("train ConvNet", true);
    let x = g.input("image", f(true, &[1, 6, 6]));
    let w = param(&mut g, "conv1.weight", &[3, 1, 3, 3]);
    let b = param(&mut g, "conv1.bias", &[3]);
    let h = g
        .push(
            Op::Conv2d(Window {
                kernel: 3,
                stride: 1,
                pad: 1,
            }),
            vec![x, w],
            "conv1",
        )
        .unwrap();
    let h = g
        .push(Op::BiasAdd { axis: 1 }, vec![h, b], "conv1")
        .unwrap();
    let h = op(&mut g, Op::Unary(UnaryOp::Relu), &[h]);
    let h = op(
        &mut g,
        Op::MaxPool(Window {
            kernel: 2,
            stride: 2,
            pad: 0,
        }),
        &[h],
    );
    let flat = g.push_typed(Op::Reshape, vec![h], f(true, &[27]), "flatten");
    let y = dense(&mut g, flat, 4, "dense1");
    let labels = g.input("label", Type::i32(true, vec![]));
    let l = op(&mut g, Op::CrossEntropy, &[y, labels]);
    g.set_output("loss", l);
    check_with(&g, &setup(&g, 2, &[("label", vec![3.0, 1.0])], -0.5, 0.5));
    // The image is fed, not trained: no gradient flows back into it.
    assert!(!grad(&g)
        .unwrap()
        .nodes
        .iter()
        .any(|n| matches!(n.op, Op::Conv2dGradInput(_))));
}

#[test]
fn char_rnn_end_to_end() {
    let mut g = Graph::new("train CharRnn", true);
    let ids = g.input("x", Type::i32(true, vec![4]));
    let e = param(&mut g, "embedding1.weight", &[5, 3]);
    let x = op(&mut g, Op::Embedding, &[ids, e]);
    let xp = dense(&mut g, x, 4, "rnn1");
    let w = param(&mut g, "rnn1.w_hh", &[4, 4]);
    let h = op(&mut g, Op::RnnScan { act: UnaryOp::Tanh }, &[xp, w]);
    let h = op(&mut g, Op::Dropout { p: 0.2, salt: 0 }, &[h]);
    let y = dense(&mut g, h, 5, "dense1");
    let labels = g.input("label", Type::i32(true, vec![4]));
    let l = op(&mut g, Op::CrossEntropy, &[y, labels]);
    g.set_output("loss", l);
    let given = [
        ("x", vec![0.0, 1.0, 2.0, 1.0, 4.0, 4.0, 3.0, 0.0]),
        ("label", vec![1.0, 2.0, 1.0, 4.0, 4.0, 3.0, 0.0, 2.0]),
    ];
    check_with(&g, &setup(&g, 2, &given, -0.5, 0.5));
}

#[test]
fn knowledge_distillation_loss() {
    // α·CE(student, label) + (1−α)·T²·KL(softmax(teacher/T) ‖ softmax(student/T)), teacher frozen.
    let (alpha, temp) = (0.5f32, 4.0f32);
    let mut g = Graph::new("train Student", true);
    let x = g.input("x", f(true, &[4]));
    let tw = frozen(&mut g, "teacher.weight", &[4, 3]);
    let teacher = op(
        &mut g,
        Op::MatMul {
            ta: false,
            tb: false,
        },
        &[x, tw],
    );
    let student = dense(&mut g, x, 3, "student");
    let labels = g.input("label", Type::i32(true, vec![]));
    let ce = op(&mut g, Op::CrossEntropy, &[student, labels]);
    let t = g.constant(temp);
    let ts = op(&mut g, Op::Binary(BinaryOp::Div), &[teacher, t]);
    let ss = op(&mut g, Op::Binary(BinaryOp::Div), &[student, t]);
    let kl = op(&mut g, Op::KlDiv, &[ts, ss]);
    let a = g.constant(alpha);
    let rest = g.constant((1.0 - alpha) * temp * temp);
    let ce = op(&mut g, Op::Binary(BinaryOp::Mul), &[a, ce]);
    let kl = op(&mut g, Op::Binary(BinaryOp::Mul), &[rest, kl]);
    let l = op(&mut g, Op::Binary(BinaryOp::Add), &[ce, kl]);
    g.set_output("loss", l);
    let gg = grad(&g).unwrap();
    assert!(gg.output("grad:teacher.weight").is_none());
    check_with(
        &g,
        &setup(&g, 3, &[("label", vec![2.0, 0.0, 1.0])], -1.0, 1.0),
    );
}

// ----- the checker itself

#[test]
fn gradcheck_catches_a_wrong_gradient_and_runs_executors() {
    let mut g = Graph::new("t", true);
    let x = g.input("x", f(true, &[60]));
    let w = param(&mut g, "w", &[60]);
    let h = op(&mut g, Op::BiasAdd { axis: 1 }, &[x, w]);
    let h = op(&mut g, Op::Unary(UnaryOp::Tanh), &[h]);
    mse_loss(&mut g, h);
    let s = setup(&g, 2, &[], -1.0, 1.0);
    let gg = grad(&g).unwrap();
    // Every gradient 1% too large.
    let mut exact = interpreter_grads(&gg, s.batch, &s.inputs, CTX);
    let mut wrong = |p: &[Vec<f64>]| -> Result<Vec<Vec<f64>>, String> {
        Ok(exact(p)?
            .into_iter()
            .map(|g| g.into_iter().map(|v| v * 1.01).collect())
            .collect())
    };
    let r = gradcheck(
        &g, &mut wrong, s.batch, &s.inputs, &s.params, CTX, F64_FLOOR,
    )
    .unwrap();
    assert_eq!(r.params[0].checked, 50);
    assert!(r.max_rel_err() > 5e-3, "{r}");
    // A NaN in the gradient, past the first coordinate checked, is the worst error.
    let mut nan = |p: &[Vec<f64>]| -> Result<Vec<Vec<f64>>, String> {
        let mut g = exact(p)?;
        g[0][7] = f64::NAN;
        Ok(g)
    };
    let r = gradcheck(&g, &mut nan, s.batch, &s.inputs, &s.params, CTX, F64_FLOOR).unwrap();
    assert!(r.max_rel_err().is_nan(), "{r}");
    assert_eq!(r.params[0].worst.as_ref().unwrap().index, 7, "{r}");
    // An executor (f32) on the gradient graph: right to f32 precision.
    let mut it = nnc::interp::Interpreter::new(gg.clone());
    let mut analytic = nnc::autodiff::gradcheck::executor_grads(&mut it, s.batch, &s.inputs, CTX);
    let r = gradcheck(
        &g,
        &mut analytic,
        s.batch,
        &s.inputs,
        &s.params,
        CTX,
        F64_FLOOR,
    )
    .unwrap();
    assert!(r.max_rel_err() < 1e-4, "{r}");
}

/// A bias before a batch norm has gradient 0 in exact arithmetic; the JIT's f32 sums leave
/// rounding noise of about 1e-6 there (1.18e-6 for a conv bias at batch 16 on 160×160 maps),
/// which the f64 floor of 1e-3 reported as a relative error of 1.2e-3, failing `nnc gradcheck`.
/// At the f32 floor that noise passes, while a gradient 1% off still fails.
#[test]
fn gradcheck_s_f32_floor_passes_rounding_noise_on_a_zero_gradient_but_not_an_error() {
    let mut g = Graph::new("t", true);
    let x = g.input("x", f(true, &[6]));
    let w = param(&mut g, "w", &[6]);
    let b = param(&mut g, "b", &[1]);
    let h = op(&mut g, Op::BiasAdd { axis: 1 }, &[x, w]);
    let h = op(&mut g, Op::Unary(UnaryOp::Tanh), &[h]);
    mse_loss(&mut g, h);
    // `b` takes no part in the loss: its exact gradient is 0.
    let _ = b;
    let s = setup(&g, 2, &[], -1.0, 1.0);
    let gg = grad(&g).unwrap();
    let mut exact = interpreter_grads(&gg, s.batch, &s.inputs, CTX);
    let mut off = |p: &[Vec<f64>], noise: f64, scale: f64| -> Result<Vec<Vec<f64>>, String> {
        let mut g = exact(p)?;
        g[0].iter_mut().for_each(|v| *v *= scale);
        g[1][0] += noise;
        Ok(g)
    };
    let mut check = |noise: f64, scale: f64, floor: f64| {
        let mut a = |p: &[Vec<f64>]| off(p, noise, scale);
        gradcheck(&g, &mut a, s.batch, &s.inputs, &s.params, CTX, floor).unwrap()
    };
    let tol = 1e-3;
    let noisy = check(1.2e-6, 1.0, F64_FLOOR);
    assert!(noisy.params[1].max_rel_err > tol, "{noisy}");
    let noisy = check(1.2e-6, 1.0, F32_FLOOR);
    assert!(noisy.max_rel_err() < tol, "{noisy}");
    let wrong = check(1.2e-6, 1.01, F32_FLOOR);
    assert!(wrong.params[0].max_rel_err > tol, "{wrong}");
}

#[test]
fn gradcheck_compares_one_sided_slopes_next_to_a_kink() {
    let mut g = Graph::new("t", true);
    let w = param(&mut g, "w", &[2]);
    let y = op(&mut g, Op::Unary(UnaryOp::Relu), &[w]);
    mse_loss(&mut g, y);
    // w[0] = 3e-7 is within h = 1e-6 of relu's kink; the central difference would be off by ~half.
    let s = Setup {
        batch: 1,
        inputs: vec![vec![1.0, -1.0]],
        params: vec![vec![3e-7, 0.5]],
    };
    let gg = grad(&g).unwrap();
    let mut analytic = interpreter_grads(&gg, s.batch, &s.inputs, CTX);
    let r = gradcheck(
        &g,
        &mut analytic,
        s.batch,
        &s.inputs,
        &s.params,
        CTX,
        F64_FLOOR,
    )
    .unwrap();
    assert_eq!(r.params[0].kinks, 1, "{r}");
    assert!(r.max_rel_err() < 1e-5, "{r}");
}

#[test]
fn gru_scan_and_its_recurrent_parameters() {
    // Trained recurrent weight and bias (dhp feeds both), then both frozen (nothing reads dhp).
    for frozen_recurrence in [false, true] {
        let mut g = Graph::new("t", true);
        let x = g.input("x", f(true, &[3, 2]));
        let xp = dense(&mut g, x, 12, "gru.xh");
        let (w, b) = if frozen_recurrence {
            (
                frozen(&mut g, "gru.w_hh", &[4, 12]),
                frozen(&mut g, "gru.bias_hh", &[12]),
            )
        } else {
            (
                param(&mut g, "gru.w_hh", &[4, 12]),
                param(&mut g, "gru.bias_hh", &[12]),
            )
        };
        let h = op(&mut g, Op::GruScan, &[xp, w, b]);
        mse_loss(&mut g, h);
        check(&g, 2);
    }
}

/// `concat` of two and three values along every sample axis of vectors, sequences and images:
/// each trained input's gradient is its slice of the whole's (the fed one, `x0`, takes none).
#[test]
fn concat_on_every_axis() {
    let cases: &[(&[&[usize]], usize)] = &[
        (&[&[3], &[2]], 1),
        (&[&[2, 3], &[2, 1], &[2, 2]], 2),
        (&[&[2, 3], &[1, 3]], 1),
        (&[&[2, 2, 3], &[1, 2, 3]], 1),
        (&[&[2, 2, 3], &[2, 1, 3], &[2, 3, 3]], 2),
        (&[&[1, 2, 2], &[1, 2, 3]], 3),
    ];
    for &(shapes, axis) in cases {
        let mut g = Graph::new("t", true);
        let parts: Vec<ValueId> = shapes
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let x = g.input(&format!("x{k}"), f(true, s));
                // A dense layer on the last axis: every element depends on parameters.
                match k {
                    0 => x,
                    _ => dense(&mut g, x, s[s.len() - 1], &format!("d{k}")),
                }
            })
            .collect();
        let y = op(&mut g, Op::Concat { axis }, &parts);
        let y = op(&mut g, Op::Unary(UnaryOp::Tanh), &[y]);
        mse_loss(&mut g, y);
        let r = check(&g, 2);
        assert_eq!(r.params.len(), 2 * (shapes.len() - 1));
    }
}

/// `reverse` along each sample axis, between two dense layers.
#[test]
fn reverse_on_every_axis() {
    for axis in [1, 2] {
        let mut g = Graph::new("t", true);
        let x = g.input("x", f(true, &[3, 2]));
        let h = dense(&mut g, x, 4, "d1");
        let h = op(&mut g, Op::Reverse { axis }, &[h]);
        let y = dense(&mut g, h, 2, "d2");
        mse_loss(&mut g, y);
        check(&g, 2);
    }
}

/// The training graph of run `M` of `src`.
fn run_graph(src: &str) -> Graph {
    let file = nnc::syntax::parse(src).unwrap_or_else(|d| panic!("{d:?}"));
    let p = nnc::check::check(&file)
        .unwrap_or_else(|d| panic!("{}", nnc::diag::Report::new("t.nn", src, d).render(false)));
    p.run("M").unwrap().graph.clone()
}

/// The training graph of `x |> {layer} |> flatten` on `[4, 2]` sequences, `layer`'s output
/// `out` wide, under an mse loss.
fn recurrent_graph(layer: &str, out: usize) -> Graph {
    let zeros = |n: usize| format!("[[{}]]", vec!["0"; n].join(", "));
    run_graph(&format!(
        "model M(x: [4, 2]) -> [{}] {{ return x |> {layer} |> flatten }}
         data d {{ train: inline(x: {}, y: {}) }}
         train M on d {{ loss: mse(output, label) optimizer: sgd(lr: 0.1) }}",
        4 * out,
        zeros(8),
        zeros(4 * out)
    ))
}

/// `rnn`, `gru` and `lstm` with `bidirectional: true`, as the checker lowers them: both
/// directions' parameters (the reverse one's reached through two `reverse`s and a `concat`).
#[test]
fn bidirectional_recurrent_layers() {
    for (layer, out) in [
        ("rnn(3, bidirectional: true)", 6),
        ("rnn(2, activation: relu, bidirectional: true)", 4),
        ("gru(2, bidirectional: true)", 4),
        ("lstm(2, bidirectional: true)", 4),
    ] {
        let g = recurrent_graph(layer, out);
        let reverse = g.params.iter().filter(|p| p.path.ends_with("_reverse"));
        assert_eq!(2 * reverse.count(), g.params.len(), "{layer}");
        check(&g, 2);
    }
}

/// The same layers on an embedding of ids, where the reverse direction reads the look-up of the
/// reversed ids: the table's gradient gathers both directions' (the ids repeat, so rows sum).
#[test]
fn bidirectional_recurrent_layers_on_an_embedding() {
    for (layer, out) in [
        ("rnn(3, bidirectional: true)", 6),
        ("gru(2, bidirectional: true)", 4),
        ("lstm(2, bidirectional: true)", 4),
    ] {
        let zeros = |n: usize| format!("[[{}]]", vec!["0"; n].join(", "));
        let src = format!(
            "model M(x: i32[4]) -> [{}] {{ return x |> embedding(3, 2) |> {layer} |> flatten }}
             data d {{ train: inline(x: [[0, 1, 2, 1]], y: {}) }}
             train M on d {{ loss: mse(output, label) optimizer: sgd(lr: 0.1) }}",
            4 * out,
            zeros(4 * out)
        );
        let g = run_graph(&src);
        let ids = vec![0.0, 2.0, 2.0, 1.0, 1.0, 0.0, 2.0, 0.0];
        check_with(&g, &setup(&g, 2, &[("x", ids)], -1.0, 1.0));
    }
}

/// `rnn`, `gru` and `lstm` with `num_layers: 2` (and 3), in one direction and both, with the
/// dropout between layers and without, as the checker lowers them: every layer's parameters
/// (those of layer k ≥ 1 named `_l{k}`, read through the layers above them).
#[test]
fn stacked_recurrent_layers() {
    for (layer, out, layers) in [
        ("rnn(3, num_layers: 2)", 3, 2),
        (
            "rnn(2, activation: relu, num_layers: 2, dropout: 0.3)",
            2,
            2,
        ),
        ("gru(2, num_layers: 2, dropout: 0.2)", 2, 2),
        ("lstm(2, num_layers: 2)", 2, 2),
        ("lstm(2, num_layers: 3, dropout: 0.4)", 2, 3),
        ("rnn(2, num_layers: 2, bidirectional: true)", 4, 2),
        (
            "gru(2, num_layers: 2, bidirectional: true, dropout: 0.3)",
            4,
            2,
        ),
        ("lstm(2, num_layers: 2, bidirectional: true)", 4, 2),
    ] {
        let g = recurrent_graph(layer, out);
        let per_layer = g.params.len() / layers;
        for k in 1..layers {
            let tag = format!("_l{k}");
            let of_layer = g.params.iter().filter(|p| p.path.contains(&tag));
            assert_eq!(of_layer.count(), per_layer, "{layer}: layer {k}");
        }
        check(&g, 2);
    }
}

/// The training graph of `x: [2, h, w] |> conv2d(2, kernel: 1) |> {layer} |> flatten` under an
/// mse loss, `out` being the layer's output elements per sample: the 1×1 convolution before it
/// needs the layer's input gradient.
fn image_layer_graph(layer: &str, (h, w): (usize, usize), out: usize) -> Graph {
    let zeros = |n: usize| format!("[[{}]]", vec!["0"; n].join(", "));
    run_graph(&format!(
        "model M(x: [2, {h}, {w}]) -> [{out}] {{
             return x |> conv2d(2, kernel: 1) |> {layer} |> flatten
         }}
         data d {{ train: inline(x: {}, y: {}) }}
         train M on d {{ loss: mse(output, label) optimizer: sgd(lr: 0.1) }}",
        zeros(2 * h * w),
        zeros(out)
    ))
}

/// `conv_transpose2d` (a `conv2d_grad_input` in the forward graph) over strides 1 to 3,
/// paddings and output paddings, on square and non-square maps: its weight's and bias's
/// gradients, and its input's (through the 1×1 convolution before it).
#[test]
fn conv_transpose2d_input_weight_and_bias() {
    for (k, s, p, op) in [
        (3, 1, 0, 0),
        (3, 1, 1, 0),
        (2, 2, 0, 0),
        (3, 2, 1, 1),
        (3, 3, 0, 2),
        (4, 3, 2, 1),
        (2, 3, 2, 2),
    ] {
        for (h, w) in [(3, 3), (2, 4)] {
            let side = |n: usize| (n - 1) * s + k + op - 2 * p;
            let out = 3 * side(h) * side(w);
            let layer = format!(
                "conv_transpose2d(3, kernel: {k}, stride: {s}, padding: {p}, output_padding: {op})"
            );
            let g = image_layer_graph(&layer, (h, w), out);
            let r = check(&g, 2);
            assert_eq!(r.params.len(), 4, "{layer}");
        }
    }
}

/// `upsample` (an `avgpool_grad` of the input times s²) by 1, 2 and 3 on square and non-square
/// maps: the gradient reaching the 1×1 convolution before it is each block's sum.
#[test]
fn upsample_input_gradient() {
    for s in 1..=3 {
        for (h, w) in [(2, 2), (3, 2)] {
            let g = image_layer_graph(&format!("upsample({s})"), (h, w), 2 * h * w * s * s);
            check(&g, 2);
        }
    }
}

/// `maxpool` and `avgpool` with `padding:` (at most half the window) over windows of 2 to 4 and
/// strides 1 to 3, on square and non-square maps: the gradient reaching the 1×1 convolution
/// before the pool (the padding never the maximum, nor in an average's share).
#[test]
fn padded_pools_input_gradient() {
    for (k, s, p) in [(3, 2, 1), (2, 2, 1), (3, 1, 1), (4, 3, 2)] {
        for (h, w) in [(4, 4), (3, 5)] {
            for pool in ["maxpool", "avgpool"] {
                let side = |n: usize| (n + 2 * p - k) / s + 1;
                let layer = format!("{pool}({k}, stride: {s}, padding: {p})");
                let g = image_layer_graph(&layer, (h, w), 2 * side(h) * side(w));
                let r = check(&g, 2);
                assert_eq!(r.params.len(), 2, "{layer}");
            }
        }
    }
}
