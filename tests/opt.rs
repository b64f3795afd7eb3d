//! The optimization passes (`nnc::opt`): each pass on small hand-built graphs, and the whole
//! level-1 pipeline on every example's training graphs, checked against the unoptimized graph
//! under the f64 reference interpreter.

mod common;

use common::{program, Lcg, EXAMPLES};
use nnc::exec::StepCtx;
use nnc::interp::eval;
use nnc::ir::verify::verify;
use nnc::ir::{BinaryOp, DType, Graph, Init, Op, Param, ParamId, Type, UnaryOp, ValueId};
use nnc::opt::{const_fold::ConstFold, cse::Cse, dce::Dce, optimize, passes, Pass};

const CTX: StepCtx = StepCtx {
    seed: 5,
    step: 2,
    first: 0,
};

/// Random parameters in [-0.5, 0.5) and random inputs: f32 in [-1, 1), i32 ids below `ids`.
fn random_args(
    g: &Graph,
    batch: usize,
    ids: usize,
    rng: &mut Lcg,
) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let inputs = g
        .inputs()
        .iter()
        .map(|(v, _)| {
            let t = g.ty(*v);
            (0..t.numel(batch))
                .map(|_| match t.dtype {
                    DType::F32 => 2.0 * rng.next() - 1.0,
                    DType::I32 => (rng.next() * ids as f64).floor(),
                })
                .collect()
        })
        .collect();
    let params = g
        .params
        .iter()
        .map(|p| (0..p.numel()).map(|_| rng.next() - 0.5).collect())
        .collect();
    (inputs, params)
}

/// Every named output of `g`, evaluated by the interpreter.
fn outputs(
    g: &Graph,
    batch: usize,
    inputs: &[Vec<f64>],
    params: &[Vec<f64>],
) -> Vec<(String, Vec<f64>)> {
    let vals = eval(g, batch, inputs, params, CTX).unwrap_or_else(|e| panic!("{}: {e}", g.name));
    g.outputs
        .iter()
        .map(|o| (o.name.clone(), vals[o.value.index()].clone()))
        .collect()
}

/// Asserts that `a` and `b` give the same outputs on the same arguments: bit for bit when `tol`
/// is 0, else within `tol` relative to the magnitude.
fn assert_same(
    a: &Graph,
    b: &Graph,
    batch: usize,
    inputs: &[Vec<f64>],
    params: &[Vec<f64>],
    tol: f64,
) {
    let (oa, ob) = (
        outputs(a, batch, inputs, params),
        outputs(b, batch, inputs, params),
    );
    assert_eq!(
        oa.iter().map(|o| &o.0).collect::<Vec<_>>(),
        ob.iter().map(|o| &o.0).collect::<Vec<_>>(),
        "{}: output names",
        a.name
    );
    for ((name, x), (_, y)) in oa.iter().zip(&ob) {
        assert_eq!(x.len(), y.len(), "{}: {name}", a.name);
        for (i, (u, v)) in x.iter().zip(y).enumerate() {
            let same = if tol == 0.0 {
                u.to_bits() == v.to_bits()
            } else {
                (u - v).abs() <= tol * (1.0 + u.abs().max(v.abs()))
            };
            assert!(same, "{}: {name}[{i}]: {u} before, {v} after", a.name);
        }
    }
}

fn count(g: &Graph, f: impl Fn(&Op) -> bool) -> usize {
    g.nodes.iter().filter(|n| f(&n.op)).count()
}

fn run(pass: &dyn Pass, g: &Graph) -> Graph {
    let out = pass.run(g);
    if let Err(e) = verify(&out) {
        panic!(
            "{} produced an invalid graph: {}",
            pass.name(),
            e.join("; ")
        );
    }
    out
}

fn bin(g: &mut Graph, op: BinaryOp, a: ValueId, b: ValueId) -> ValueId {
    g.push(Op::Binary(op), vec![a, b], op.name()).unwrap()
}

fn un(g: &mut Graph, op: UnaryOp, a: ValueId) -> ValueId {
    g.push(Op::Unary(op), vec![a], op.name()).unwrap()
}

#[test]
fn levels() {
    assert!(passes(0).is_empty());
    let names: Vec<_> = passes(1).iter().map(|p| p.name()).collect();
    assert_eq!(
        names,
        [
            "const_fold",
            "cse",
            "embed-matmul",
            "dce",
            "fuse",
            "epilogue",
            "pool-epilogue",
            "loss-epilogue",
            "unpool-grad",
            "dce"
        ]
    );
}

#[test]
fn folds_constant_expressions() {
    let mut g = Graph::new("fold", false);
    let x = g.input("x", Type::f32(true, vec![3]));
    let two = g.constant(2.0);
    let three = g.constant(3.0);
    let six = bin(&mut g, BinaryOp::Mul, two, three);
    let e = un(&mut g, UnaryOp::Exp, two);
    let q = bin(&mut g, BinaryOp::Div, e, six); // e²/6
    let nq = un(&mut g, UnaryOp::Neg, q);
    let r = un(&mut g, UnaryOp::Relu, nq); // 0
    let s = bin(&mut g, BinaryOp::Sub, q, r);
    let l = un(&mut g, UnaryOp::Log, s);
    let t = un(&mut g, UnaryOp::Tanh, l);
    let sg = un(&mut g, UnaryOp::Sigmoid, t);
    let y = bin(&mut g, BinaryOp::Mul, x, sg);
    let y = bin(&mut g, BinaryOp::Add, y, six);
    g.set_output("output", y);

    let f = run(&Dce, &run(&ConstFold, &g));
    // x, the folded sigmoid(…) and 6, the mul and the add.
    assert_eq!(f.nodes.len(), 5, "{f:#?}");
    assert_eq!(count(&f, |o| matches!(o, Op::Unary(_))), 0);
    assert_eq!(count(&f, |o| matches!(o, Op::Const(_))), 2);
    let expected = (((2f64.exp() / 6.0).ln()).tanh().neg_exp_sigmoid()) as f32;
    assert!(f
        .nodes
        .iter()
        .any(|n| matches!(n.op, Op::Const(c) if (c - expected).abs() <= 1e-6)));
    let ins = vec![vec![0.5, -1.0, 3.0, 0.0, -0.0, 7.5]];
    assert_same(&g, &f, 2, &ins, &[], 1e-6);
}

trait Sigmoid {
    fn neg_exp_sigmoid(self) -> f64;
}
impl Sigmoid for f64 {
    /// 1 / (1 + e^(−x)), written out independently of the pass.
    fn neg_exp_sigmoid(self) -> f64 {
        1.0 / (1.0 + (-self).exp())
    }
}

#[test]
fn exact_identities_are_removed_and_inexact_ones_kept() {
    let mut g = Graph::new("identities", false);
    let x = g.input("x", Type::f32(true, vec![4]));
    let one = g.constant(1.0);
    let nzero = g.constant(-0.0);
    let zero = g.constant(0.0);
    let a = bin(&mut g, BinaryOp::Mul, x, one);
    let a = bin(&mut g, BinaryOp::Mul, one, a);
    let a = bin(&mut g, BinaryOp::Div, a, one);
    let a = bin(&mut g, BinaryOp::Add, a, nzero);
    let a = bin(&mut g, BinaryOp::Add, nzero, a);
    let a = bin(&mut g, BinaryOp::Sub, a, zero);
    let a = un(&mut g, UnaryOp::Neg, a);
    let a = un(&mut g, UnaryOp::Neg, a);
    g.set_output("same", a);
    // Not exact: x + 0.0 turns −0.0 into +0.0; 0.0 − x is not x; 1/x is not x; x·0 is not 0 for
    // infinities and NaN.
    let b = bin(&mut g, BinaryOp::Add, x, zero);
    let c = bin(&mut g, BinaryOp::Sub, zero, x);
    let d = bin(&mut g, BinaryOp::Div, one, x);
    let e = bin(&mut g, BinaryOp::Mul, x, zero);
    let f = bin(&mut g, BinaryOp::Sub, x, nzero);
    for (name, v) in [
        ("plus_zero", b),
        ("zero_minus", c),
        ("recip", d),
        ("times_zero", e),
        ("minus_nzero", f),
    ] {
        g.set_output(name, v);
    }

    let o = optimize(&g, 1).unwrap();
    assert_eq!(o.output("same"), Some(ValueId(0)), "{o:#?}");
    for name in [
        "plus_zero",
        "zero_minus",
        "recip",
        "times_zero",
        "minus_nzero",
    ] {
        assert!(
            matches!(o.node(o.output(name).unwrap()).op, Op::Binary(_)),
            "{name} kept"
        );
    }
    // Signed zeros, infinities and NaN come out the same, bit for bit.
    let ins = vec![vec![
        -0.0,
        0.0,
        f64::INFINITY,
        f64::NAN,
        -1.5,
        3.0e-39,
        f64::NEG_INFINITY,
        2.0,
    ]];
    assert_same(&g, &o, 2, &ins, &[], 0.0);
}

/// A graph computing the same thing twice: two reads of one parameter, two matmuls, and
/// `relu(a) + relu(b)` next to `relu(b) + relu(a)`.
fn duplicated() -> Graph {
    let mut g = Graph::new("dup", true);
    let x = g.input("x", Type::f32(true, vec![3]));
    let w1 = g.add_param(Param {
        path: "w".into(),
        dims: vec![3, 2],
        init: Init::Zeros,
        frozen: false,
    });
    let w2 = g.push_typed(
        Op::Param(ParamId(0)),
        vec![],
        Type::f32(false, vec![3, 2]),
        "w",
    );
    let m1 = g
        .push(
            Op::MatMul {
                ta: false,
                tb: false,
            },
            vec![x, w1],
            "m1",
        )
        .unwrap();
    let m2 = g
        .push(
            Op::MatMul {
                ta: false,
                tb: false,
            },
            vec![x, w2],
            "m2",
        )
        .unwrap();
    let r1 = un(&mut g, UnaryOp::Relu, m1);
    let r2 = un(&mut g, UnaryOp::Relu, m2);
    let s1 = bin(&mut g, BinaryOp::Add, r1, r2);
    let s2 = bin(&mut g, BinaryOp::Add, r2, r1);
    let d = bin(&mut g, BinaryOp::Sub, s1, s2);
    let t1 = un(&mut g, UnaryOp::Tanh, d);
    // Same op and input, another type: never merged.
    let flat = g.push_typed(Op::Reshape, vec![m1], Type::f32(true, vec![2]), "flat");
    let flat2 = g.push_typed(Op::Reshape, vec![m2], Type::f32(true, vec![1, 2]), "flat2");
    g.set_output("output", t1);
    g.set_output("flat", flat);
    g.set_output("flat2", flat2);
    g
}

#[test]
fn cse_merges_duplicate_subgraphs_and_param_reads() {
    let g = duplicated();
    let o = run(&Cse, &g);
    // x, w, matmul, relu, add, sub, tanh, and the two reshapes.
    assert_eq!(o.nodes.len(), 9, "{o:#?}");
    assert_eq!(count(&o, |op| matches!(op, Op::Param(_))), 1);
    assert_eq!(count(&o, |op| matches!(op, Op::Reshape)), 2);
    assert_eq!(o.params, g.params);
    // Dense numbering in topological order, labels of the first occurrence.
    assert!(verify(&o).is_ok());
    assert_eq!(o.node(ValueId(2)).label, "m1");
    let mut rng = Lcg(7);
    let (ins, ps) = random_args(&g, 3, 0, &mut rng);
    assert_same(&g, &o, 3, &ins, &ps, 0.0);
    // The difference of the two sums is exactly zero.
    let out = outputs(&o, 3, &ins, &ps);
    assert!(out[0].1.iter().all(|&v| v == 0.0));
}

#[test]
fn cse_keeps_inputs_and_dropouts_apart() {
    let mut g = Graph::new("drop", true);
    let x = g.input("x", Type::f32(true, vec![8]));
    let x2 = g.input("x", Type::f32(true, vec![8]));
    let d1 = g
        .push(Op::Dropout { p: 0.5, salt: 1 }, vec![x], "d1")
        .unwrap();
    let d2 = g
        .push(Op::Dropout { p: 0.5, salt: 0 }, vec![x], "d2")
        .unwrap();
    let s = bin(&mut g, BinaryOp::Add, d1, d2);
    let g1 = g
        .push(Op::DropoutGrad { p: 0.5, salt: 1 }, vec![s], "g1")
        .unwrap();
    let g2 = g
        .push(Op::DropoutGrad { p: 0.5, salt: 0 }, vec![s], "g2")
        .unwrap();
    let t = bin(&mut g, BinaryOp::Mul, g1, g2);
    let t = bin(&mut g, BinaryOp::Add, t, x2);
    g.set_output("output", t);
    let o = optimize(&g, 1).unwrap();
    assert_eq!(o.nodes.len(), g.nodes.len());
    assert_eq!(o.inputs().len(), 2);
    assert_eq!(count(&o, |op| matches!(op, Op::Dropout { .. })), 2);
    assert_eq!(count(&o, |op| matches!(op, Op::DropoutGrad { .. })), 2);
    // One salt is one mask: the same value.
    let mut g = Graph::new("drop", true);
    let x = g.input("x", Type::f32(true, vec![8]));
    let d1 = g.push(Op::Dropout { p: 0.5, salt: 2 }, vec![x], "d1");
    let d2 = g.push(Op::Dropout { p: 0.5, salt: 2 }, vec![x], "d2");
    let s = bin(&mut g, BinaryOp::Add, d1.unwrap(), d2.unwrap());
    g.set_output("output", s);
    let o = optimize(&g, 1).unwrap();
    assert_eq!(count(&o, |op| matches!(op, Op::Dropout { .. })), 1);
}

#[test]
fn dce_pass_removes_what_no_output_needs() {
    let mut g = Graph::new("dce", false);
    let x = g.input("x", Type::f32(true, vec![2]));
    let unused = g.input("unused", Type::f32(true, vec![2]));
    let dead = un(&mut g, UnaryOp::Exp, unused);
    let _dead2 = bin(&mut g, BinaryOp::Mul, dead, x);
    let y = un(&mut g, UnaryOp::Tanh, x);
    g.set_output("output", y);
    let o = run(&Dce, &g);
    assert_eq!(o.nodes.len(), 3);
    assert_eq!(
        o.inputs().iter().map(|i| i.1).collect::<Vec<_>>(),
        ["x", "unused"]
    );
    let ins = vec![vec![0.1, -0.2, 0.3, 0.4], vec![1.0; 4]];
    assert_same(&g, &o, 2, &ins, &[], 0.0);
}

#[test]
fn optimize_rejects_an_invalid_graph() {
    let mut g = Graph::new("bad", false);
    let x = g.input("x", Type::f32(true, vec![2]));
    g.push_typed(
        Op::Unary(UnaryOp::Exp),
        vec![x],
        Type::f32(true, vec![3]),
        "",
    );
    let err = optimize(&g, 1).unwrap_err();
    assert!(err.contains("before optimization"), "{err}");
}

#[test]
fn examples_optimize_to_the_same_loss_and_gradients() {
    let mut removed = 0;
    for name in EXAMPLES {
        for r in &program(name).runs {
            let grad = nnc::autodiff::grad(&r.graph).unwrap();
            let opt = optimize(&grad, 1).unwrap_or_else(|e| panic!("{name}/{}: {e}", r.name));
            verify(&opt).unwrap();
            assert!(opt.nodes.len() <= grad.nodes.len(), "{name}/{}", r.name);
            assert_eq!(opt.params, grad.params);
            assert_eq!(
                opt.inputs()
                    .iter()
                    .map(|i| (i.1, opt.ty(i.0)))
                    .collect::<Vec<_>>(),
                grad.inputs()
                    .iter()
                    .map(|i| (i.1, grad.ty(i.0)))
                    .collect::<Vec<_>>(),
                "{name}/{}: inputs",
                r.name
            );
            let mut rng = Lcg(11);
            let (ins, ps) = random_args(&grad, 2, 2, &mut rng);
            assert_same(&grad, &opt, 2, &ins, &ps, 1e-6);
            // Optimizing again changes nothing, and no constant expression or `·1` is left.
            assert_eq!(optimize(&opt, 1).unwrap(), opt, "{name}/{}", r.name);
            let is_const = |v: &ValueId| matches!(opt.node(*v).op, Op::Const(_));
            let is_one = |v: &ValueId| opt.node(*v).op == Op::Const(1.0);
            for n in &opt.nodes {
                let elementwise = matches!(n.op, Op::Unary(_) | Op::Binary(_));
                assert!(
                    !(elementwise && n.inputs.iter().all(is_const)),
                    "{name}/{}: {n:?}",
                    r.name
                );
                let times_one =
                    matches!(n.op, Op::Binary(BinaryOp::Mul)) && n.inputs.iter().any(is_one);
                assert!(!times_one, "{name}/{}: {n:?}", r.name);
            }
            removed += grad.nodes.len() - opt.nodes.len();
        }
    }
    // The distillation loss `0.5·ce + 8·kl` seeds its backward pass with `1·0.5` and `1·8`.
    assert!(removed >= 3, "{removed} nodes removed");
}

#[test]
fn the_jit_gives_the_same_results_on_optimized_example_graphs() {
    use nnc::codegen::{Jit, JitOptions};
    use nnc::exec::{Executor, Feed};
    for name in EXAMPLES {
        for r in &program(name).runs {
            let grad = nnc::autodiff::grad(&r.graph).unwrap();
            let opt = optimize(&grad, 1).unwrap();
            let mut rng = Lcg(13);
            let (ins, ps) = random_args(&grad, 3, 2, &mut rng);
            let f32s: Vec<Vec<f32>> = ins
                .iter()
                .map(|v| v.iter().map(|&x| x as f32).collect())
                .collect();
            let i32s: Vec<Vec<i32>> = ins
                .iter()
                .map(|v| v.iter().map(|&x| x as i32).collect())
                .collect();
            let feeds: Vec<Feed> = grad
                .inputs()
                .iter()
                .enumerate()
                .map(|(k, (v, _))| match grad.ty(*v).dtype {
                    DType::F32 => Feed::F32(&f32s[k]),
                    DType::I32 => Feed::I32(&i32s[k]),
                })
                .collect();
            let ps: Vec<Vec<f32>> = ps
                .iter()
                .map(|v| v.iter().map(|&x| x as f32).collect())
                .collect();
            let ps: Vec<&[f32]> = ps.iter().map(|v| v.as_slice()).collect();
            let mut results = Vec::new();
            for g in [&grad, &opt] {
                let mut jit = Jit::compile(
                    g,
                    &JitOptions {
                        threads: 1,
                        ..JitOptions::default()
                    },
                )
                .unwrap();
                jit.run(3, &feeds, &ps, CTX).unwrap();
                let outs: Vec<Vec<f32>> = g
                    .outputs
                    .iter()
                    .map(|o| jit.output(&o.name).unwrap().to_vec())
                    .collect();
                results.push(outs);
            }
            for (o, (a, b)) in grad.outputs.iter().zip(results[0].iter().zip(&results[1])) {
                // Within 1e-4 of the output's scale: sums the passes reassociate (the
                // embedding–product pass sums gradients per token first) round differently,
                // and these random weights make the char-RNN's gradients large (~1e5) sums of
                // terms that cancel.
                let scale = a.iter().fold(1f32, |m, x| m.max(x.abs()));
                for (x, y) in a.iter().zip(b) {
                    assert!(
                        (x - y).abs() <= 1e-4 * scale,
                        "{name}/{}: {}: {x} unoptimized, {y} optimized",
                        r.name,
                        o.name
                    );
                }
            }
        }
    }
}

/// An identity can leave an output naming an input or another output's value: the JIT must still
/// produce every output.
#[test]
fn the_jit_runs_graphs_whose_outputs_alias_inputs_and_each_other() {
    use nnc::codegen::{Jit, JitOptions};
    use nnc::exec::{Executor, Feed};
    let mut g = Graph::new("alias", false);
    let x = g.input("x", Type::f32(true, vec![2]));
    let one = g.constant(1.0);
    let a = bin(&mut g, BinaryOp::Mul, x, one);
    let b = un(&mut g, UnaryOp::Tanh, x);
    let c = un(&mut g, UnaryOp::Tanh, x);
    g.set_output("same", a);
    g.set_output("b", b);
    g.set_output("c", c);
    let o = optimize(&g, 1).unwrap();
    assert_eq!(o.output("same"), Some(x));
    assert_eq!(o.output("b"), o.output("c"));
    let xs = [0.5f32, -0.0, 2.0, -3.0];
    let mut jit = Jit::compile(
        &o,
        &JitOptions {
            threads: 1,
            ..JitOptions::default()
        },
    )
    .unwrap();
    jit.run(2, &[Feed::F32(&xs)], &[], CTX).unwrap();
    assert_eq!(jit.output("same").unwrap(), xs);
    for name in ["b", "c"] {
        let t = jit.output(name).unwrap();
        for (v, x) in t.iter().zip(xs) {
            assert!((v - x.tanh()).abs() < 1e-6, "{name}: {v} vs tanh({x})");
        }
    }
}

/// The MNIST CNN's first convolution takes its weight gradient from its pooling's gradient
/// (`opt::unpool_grad`): no value of the convolution's output size is left in the backward
/// pass, its bias gradient is the fused kernel's second result, and the second convolution,
/// whose output gradient also flows to its input, keeps it.
#[test]
fn the_first_convolution_reads_its_pooling_gradient() {
    let p = program("mnist_cnn");
    let g = nnc::autodiff::grad(&p.runs[0].graph).unwrap();
    let opt = optimize(&g, 1).unwrap();
    let unpool: Vec<_> = opt
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Conv2dGradWeightUnpool { .. }))
        .collect();
    assert_eq!(unpool.len(), 1);
    assert_eq!(
        unpool[0].op,
        Op::Conv2dGradWeightUnpool {
            conv: nnc::ir::Window {
                kernel: 3,
                stride: 1,
                pad: 1
            },
            pool: nnc::ir::Window {
                kernel: 2,
                stride: 2,
                pad: 0
            },
            act: Some(UnaryOp::Relu)
        }
    );
    // conv1's kernel pools its output besides; conv2's (on Winograd) is pooled by a kernel.
    assert_eq!(count(&opt, |op| matches!(op, Op::PoolBeside(_))), 1);
    assert_eq!(count(&opt, |op| matches!(op, Op::MaxPool(_))), 1);
    // conv1's output (B×32×28×28) is read by the pooling and the fused gradient only.
    let y = unpool[0].inputs[1];
    assert_eq!(opt.ty(y).dims, [32, 28, 28]);
    let readers = opt.nodes.iter().filter(|n| n.inputs.contains(&y)).count();
    assert_eq!(readers, 2);
    let big_grads = opt
        .nodes
        .iter()
        .filter(|n| n.ty.dims == [32, 28, 28])
        .filter(|n| {
            !matches!(
                n.op,
                Op::WithEpilogue {
                    producer: nnc::ir::Producer::Conv2d(_),
                    ..
                }
            )
        })
        .count();
    assert_eq!(big_grads, 0, "{}", nnc::ir::print::graph_to_string(&opt));
    // conv1's bias gradient is the fused node's second result.
    let bias = opt.output("grad:conv1.bias").unwrap();
    assert_eq!(opt.node(bias).op, Op::UnpoolBiasGrad);
    assert!(matches!(
        opt.node(opt.node(bias).inputs[0]).op,
        Op::Conv2dGradWeightUnpool { .. }
    ));
    // conv2's pooling gradient also feeds its input gradient: unchanged.
    assert_eq!(count(&opt, |op| matches!(op, Op::Conv2dGradWeight(_))), 1);
}
