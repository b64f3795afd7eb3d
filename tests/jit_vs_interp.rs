//! The JIT against the f64 reference interpreter: every op on random shapes and inputs, whole
//! graphs (MLP, CNN, RNN forward and backward), batch sizes 1, 3 and 64, determinism.

use nnc::codegen::{Jit, JitOptions};
use nnc::exec::{Executor, Feed, StepCtx};
use nnc::interp;
use nnc::ir::{
    BinaryOp, Chain, DType, Epilogue, Graph, Init, Op, Param, Type, UnaryOp, ValueId, Window,
};

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
}

/// How to draw the values of one graph input.
#[derive(Clone, Copy)]
enum Gen {
    U(f32, f32),
    /// Integer ids in `lo..hi`.
    Int(i32, i32),
    /// Mostly `bg` (an image's background), about a share `density` (≥ 0.1) of the values
    /// uniform in −1..1: every tenth feature (a stroke) and scattered ones, each sample's first
    /// feature background (as an image's corner), so that products take the compacted path
    /// (`codegen::sparse`).
    Sparse {
        bg: f32,
        density: f32,
    },
}

struct Data {
    f: Vec<Vec<f32>>,
    i: Vec<Vec<i32>>,
    params: Vec<Vec<f32>>,
}

fn draw(g: &Graph, gens: &[Gen], batch: usize, rng: &mut Rng) -> Data {
    let mut d = Data {
        f: Vec::new(),
        i: Vec::new(),
        params: Vec::new(),
    };
    for ((v, _), gen) in g.inputs().iter().zip(gens) {
        let n = g.ty(*v).numel(batch);
        match *gen {
            Gen::U(lo, hi) => d.f.push((0..n).map(|_| rng.uniform(lo, hi)).collect()),
            Gen::Sparse { bg, density } => {
                let per = g.ty(*v).numel(1);
                d.f.push(
                    (0..n)
                        .map(|i| {
                            // Half of the ink in columns every ten features (a stroke),
                            // half scattered.
                            let ink = (i % per) % 10 == 5 || rng.uniform(0.0, 1.0) < density - 0.1;
                            if ink && i % per != 0 {
                                rng.uniform(-1.0, 1.0)
                            } else {
                                bg
                            }
                        })
                        .collect(),
                )
            }
            Gen::Int(lo, hi) => d.i.push(
                (0..n)
                    .map(|_| lo + rng.below((hi - lo) as usize) as i32)
                    .collect(),
            ),
        }
    }
    for p in &g.params {
        d.params
            .push((0..p.numel()).map(|_| rng.uniform(-0.5, 0.5)).collect());
    }
    d
}

fn feeds<'a>(g: &Graph, d: &'a Data) -> Vec<Feed<'a>> {
    let (mut fi, mut ii) = (0, 0);
    g.inputs()
        .iter()
        .map(|(v, _)| {
            if g.ty(*v).dtype == DType::I32 {
                ii += 1;
                Feed::I32(&d.i[ii - 1])
            } else {
                fi += 1;
                Feed::F32(&d.f[fi - 1])
            }
        })
        .collect()
}

fn f64_inputs(g: &Graph, d: &Data) -> Vec<Vec<f64>> {
    feeds(g, d)
        .iter()
        .map(|f| match f {
            Feed::F32(x) => x.iter().map(|&v| v as f64).collect(),
            Feed::I32(x) => x.iter().map(|&v| v as f64).collect(),
        })
        .collect()
}

/// Adds an output for every computed node, so every kernel is compared.
fn expose_all(g: &mut Graph) {
    for i in 0..g.nodes.len() {
        let n = &g.nodes[i];
        if !matches!(n.op, Op::Input { .. } | Op::Param(_) | Op::Const(_))
            && n.ty.dtype == DType::F32
        {
            g.set_output(&format!("n{i}"), ValueId(i as u32));
        }
    }
}

/// Runs `g` through both back ends and compares every output: |jit − ref| ≤ tol·(1 + |ref|).
fn compare(g: &Graph, gens: &[Gen], batch: usize, seed: u64, tol: f64) {
    assert_eq!(
        gens.len(),
        g.inputs().len(),
        "{}: one generator per input",
        g.name
    );
    let mut rng = Rng(seed);
    let d = draw(g, gens, batch, &mut rng);
    let ctx = StepCtx {
        seed: 7,
        step: 3,
        first: 0,
    };
    let reference = interp::eval(
        g,
        batch,
        &f64_inputs(g, &d),
        &d.params
            .iter()
            .map(|p| p.iter().map(|&v| v as f64).collect())
            .collect::<Vec<_>>(),
        ctx,
    )
    .unwrap_or_else(|e| panic!("interpreter failed on {}: {e}", g.name));
    let mut jit = Jit::compile(g, &JitOptions::default())
        .unwrap_or_else(|e| panic!("compile {}: {e}", g.name));
    // A first run on other values leaves them in the buffers: a kernel that relies on zeroed
    // memory (or reads what it has not written) fails the comparison of the second.
    let other = draw(g, gens, batch, &mut Rng(seed ^ 0x5eed));
    let params: Vec<&[f32]> = other.params.iter().map(|p| p.as_slice()).collect();
    jit.run(batch, &feeds(g, &other), &params, ctx).unwrap();
    let params: Vec<&[f32]> = d.params.iter().map(|p| p.as_slice()).collect();
    jit.run(batch, &feeds(g, &d), &params, ctx).unwrap();
    for o in &g.outputs {
        let got = jit.output(&o.name).unwrap();
        let want = &reference[o.value.index()];
        assert_eq!(got.len(), want.len(), "{}: output {} size", g.name, o.name);
        for (k, (a, b)) in got.iter().zip(want).enumerate() {
            let err = (*a as f64 - b).abs();
            assert!(
                err <= tol * (1.0 + b.abs()),
                "{} (batch {batch}): output {} = {} element {k}: jit {a} vs interp {b}",
                g.name,
                o.name,
                g.node(o.value).op.name()
            );
        }
    }
}

/// A graph whose inputs have types `ins` and one node `op` (its type inferred, or `ty`).
fn single(name: &str, op: Op, ins: &[Type], ty: Option<Type>) -> Graph {
    let mut g = Graph::new(name, true);
    let vs: Vec<ValueId> = ins
        .iter()
        .enumerate()
        .map(|(k, t)| g.input(&format!("x{k}"), t.clone()))
        .collect();
    let out = match ty {
        Some(t) => g.push_typed(op, vs, t, "op"),
        None => g
            .push(op, vs, "op")
            .unwrap_or_else(|e| panic!("{name}: {e}")),
    };
    g.set_output("out", out);
    g
}

const BATCHES: [usize; 3] = [1, 3, 64];
const TOL: f64 = 1e-5;
/// The 2×2 max pooling of stride 2 the examples use.
const POOL_2X2: Window = Window {
    kernel: 2,
    stride: 2,
    pad: 0,
};
/// A 3×3 convolution of stride 1 that keeps the image's size.
const CONV_3X3: Window = Window {
    kernel: 3,
    stride: 1,
    pad: 1,
};

fn f(b: bool, dims: &[usize]) -> Type {
    Type::f32(b, dims.to_vec())
}

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

fn param(g: &mut Graph, path: &str, dims: &[usize]) -> ValueId {
    g.add_param(Param {
        path: path.into(),
        dims: dims.to_vec(),
        init: Init::Zeros,
        frozen: false,
    })
}

/// An MLP 20-16-5 with softmax cross-entropy: forward and a hand-written backward pass.
/// `op(a)·op(b)` pushed onto `g` (`ta`, `tb`: the operands read transposed).
fn matmul(g: &mut Graph, ta: bool, tb: bool, a: ValueId, b: ValueId) -> ValueId {
    g.push(Op::MatMul { ta, tb }, vec![a, b], "").unwrap()
}

fn mlp() -> Graph {
    mlp_of(20)
}

/// The MLP of [`mlp_forward_backward`] on `inputs` features.
fn mlp_of(inputs: usize) -> Graph {
    let mut g = Graph::new("mlp", true);
    let x = g.input("x", f(true, &[inputs]));
    let y = g.input("y", Type::i32(true, vec![]));
    let w1 = param(&mut g, "w1", &[inputs, 16]);
    let b1 = param(&mut g, "b1", &[16]);
    let w2 = param(&mut g, "w2", &[16, 5]);
    let b2 = param(&mut g, "b2", &[5]);
    let h = matmul(&mut g, false, false, x, w1);
    let h = g.push(Op::BiasAdd { axis: 1 }, vec![h, b1], "").unwrap();
    let a = g.push(Op::Unary(UnaryOp::Tanh), vec![h], "").unwrap();
    let o = matmul(&mut g, false, false, a, w2);
    let o = g.push(Op::BiasAdd { axis: 1 }, vec![o, b2], "").unwrap();
    let l = g.push(Op::CrossEntropy, vec![o, y], "").unwrap();
    let one = g.constant(1.0);
    let d_o = g.push(Op::CrossEntropyGrad, vec![o, y, one], "").unwrap();
    let d_b2 = g.push(Op::BiasGrad { axis: 1 }, vec![d_o], "").unwrap();
    let d_w2 = matmul(&mut g, true, false, a, d_o);
    let d_a = matmul(&mut g, false, true, d_o, w2);
    let d_h = g
        .push(Op::UnaryGrad(UnaryOp::Tanh), vec![a, d_a], "")
        .unwrap();
    let d_b1 = g.push(Op::BiasGrad { axis: 1 }, vec![d_h], "").unwrap();
    let d_w1 = matmul(&mut g, true, false, x, d_h);
    g.set_output("loss", l);
    for (n, v) in [
        ("grad:w1", d_w1),
        ("grad:b1", d_b1),
        ("grad:w2", d_w2),
        ("grad:b2", d_b2),
    ] {
        g.set_output(n, v);
    }
    g
}

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

/// Big enough that products, convolutions and row-independent kernels are split across
/// threads: dense 256→128→10, a 3×3 conv with 8 channels on 16×16 images, pools and softmax on
/// its output, a tanh recurrence and their gradients.
fn wide() -> Graph {
    let mut g = Graph::new("wide", true);
    let x = g.input("x", f(true, &[256]));
    let im = g.input("im", f(true, &[4, 16, 16]));
    let xp = g.input("xp", f(true, &[5, 20]));
    let w1 = param(&mut g, "w1", &[256, 128]);
    let w2 = param(&mut g, "w2", &[128, 10]);
    let wc = param(&mut g, "wc", &[8, 4, 3, 3]);
    let whh = param(&mut g, "whh", &[20, 20]);
    let win = CONV_3X3;
    let pw = POOL_2X2;
    let h = matmul(&mut g, false, false, x, w1);
    let h = g.push(Op::Unary(UnaryOp::Relu), vec![h], "").unwrap();
    let o = matmul(&mut g, false, false, h, w2);
    let dw1 = matmul(&mut g, true, false, x, h);
    let c = g.push(Op::Conv2d(win), vec![im, wc], "").unwrap();
    let r = g.push(Op::Unary(UnaryOp::Tanh), vec![c], "").unwrap();
    let m = g.push(Op::MaxPool(pw), vec![r], "").unwrap();
    let dm = g.push(Op::MaxPoolGrad(pw), vec![r, m], "").unwrap();
    let a = g.push(Op::AvgPool(pw), vec![r], "").unwrap();
    let sm = g.push(Op::Softmax, vec![r], "").unwrap();
    let dwc = g.push(Op::Conv2dGradWeight(win), vec![im, c], "").unwrap();
    let dim = g.push_typed(Op::Conv2dGradInput(win), vec![c, wc], g.ty(im).clone(), "");
    let hs = g
        .push(Op::RnnScan { act: UnaryOp::Tanh }, vec![xp, whh], "")
        .unwrap();
    let da = g
        .push(
            Op::RnnScanGrad { act: UnaryOp::Tanh },
            vec![hs, whh, xp],
            "",
        )
        .unwrap();
    let outs = [
        ("o", o),
        ("dw1", dw1),
        ("c", c),
        ("dm", dm),
        ("a", a),
        ("sm", sm),
        ("dwc", dwc),
        ("dim", dim),
        ("hs", hs),
        ("da", da),
    ];
    for (n, v) in outs {
        g.set_output(n, v);
    }
    g
}

fn run_once(g: &Graph, gens: &[Gen], batch: usize, threads: usize) -> Vec<Vec<f32>> {
    let d = draw(g, gens, batch, &mut Rng(42));
    run_with(g, &d, batch, threads)
}

/// `g` compiled for `threads` threads.
fn compile_on(g: &Graph, threads: usize) -> Jit {
    let opts = JitOptions {
        threads,
        ..JitOptions::default()
    };
    Jit::compile(g, &opts).unwrap()
}

/// The bits of outputs, one after the other (NaNs compare by their bits).
fn bits(outs: &[Vec<f32>]) -> Vec<u32> {
    outs.iter().flatten().map(|v| v.to_bits()).collect()
}

/// The outputs of `g` on the inputs and parameters `d`, compiled for `threads` threads.
fn run_with(g: &Graph, d: &Data, batch: usize, threads: usize) -> Vec<Vec<f32>> {
    let mut jit = compile_on(g, threads);
    let params: Vec<&[f32]> = d.params.iter().map(|p| p.as_slice()).collect();
    jit.run(batch, &feeds(g, d), &params, StepCtx::default())
        .unwrap();
    g.outputs
        .iter()
        .map(|o| jit.output(&o.name).unwrap().to_vec())
        .collect()
}

/// Asserts that `g` on `d` gives on 2, 3 and 4 threads the bits it gives on one (NaNs
/// included).
fn assert_same_bits_on_threads(g: &Graph, d: &Data, batch: usize, what: &str) {
    let one = bits(&run_with(g, d, batch, 1));
    for threads in [2, 3, 4] {
        assert!(
            one == bits(&run_with(g, d, batch, threads)),
            "{what}: {threads} threads changed the bits"
        );
    }
}

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

fn dense(g: &mut Graph, x: ValueId, name: &str, out: usize) -> ValueId {
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

/// Forward graphs differentiated by `autodiff::grad`, then every node compared.
fn check_trained(g: Graph, gens: &[Gen]) {
    let mut t = nnc::autodiff::grad(&g).unwrap_or_else(|e| panic!("grad {}: {e}", g.name));
    assert!(
        t.nodes.len() > g.nodes.len(),
        "{}: no backward nodes",
        g.name
    );
    expose_all(&mut t);
    for &batch in &BATCHES {
        compare(&t, gens, batch, 400 + batch as u64, TOL);
    }
}

#[test]
fn autodiff_mlp_with_dropout_soft_targets_and_l2() {
    let mut g = Graph::new("mlp2", true);
    let x = g.input("x", f(true, &[8]));
    let target = g.input("target", f(true, &[3]));
    let h = dense(&mut g, x, "l1", 16);
    let h = g.push(Op::Unary(UnaryOp::Sigmoid), vec![h], "").unwrap();
    let h = g
        .push(Op::Dropout { p: 0.25, salt: 0 }, vec![h], "")
        .unwrap();
    let o = dense(&mut g, h, "l2", 3);
    let l = g.push(Op::SoftCrossEntropy, vec![o, target], "").unwrap();
    let w1 = g.param_node(g.param_by_path("l1.weight").unwrap()).unwrap();
    let l2 = g.push(Op::SumSquares, vec![w1], "").unwrap();
    let c = g.constant(0.01);
    let l2 = g.push(Op::Binary(BinaryOp::Mul), vec![c, l2], "").unwrap();
    let l = g.push(Op::Binary(BinaryOp::Add), vec![l, l2], "").unwrap();
    g.set_output("loss", l);
    check_trained(g, &[Gen::U(-1.0, 1.0), Gen::U(0.0, 0.5)]);
}

#[test]
fn autodiff_cnn_with_pools() {
    let mut g = Graph::new("cnn2", true);
    let x = g.input("x", f(true, &[2, 9, 9]));
    let y = g.input("y", Type::i32(true, vec![]));
    let wc = param(&mut g, "conv.weight", &[3, 2, 3, 3]);
    let bc = param(&mut g, "conv.bias", &[3]);
    let c = g
        .push(
            Op::Conv2d(Window {
                kernel: 3,
                stride: 2,
                pad: 1,
            }),
            vec![x, wc],
            "",
        )
        .unwrap();
    let c = g.push(Op::BiasAdd { axis: 1 }, vec![c, bc], "").unwrap();
    let r = g.push(Op::Unary(UnaryOp::Relu), vec![c], "").unwrap();
    let a = g
        .push(
            Op::AvgPool(Window {
                kernel: 2,
                stride: 1,
                pad: 0,
            }),
            vec![r],
            "",
        )
        .unwrap();
    let m = g
        .push(
            Op::MaxPool(Window {
                kernel: 2,
                stride: 2,
                pad: 1,
            }),
            vec![a],
            "",
        )
        .unwrap();
    let n = g.ty(m).per_sample();
    let fl = g.push_typed(Op::Reshape, vec![m], f(true, &[n]), "");
    let o = dense(&mut g, fl, "fc", 4);
    let l = g.push(Op::CrossEntropy, vec![o, y], "").unwrap();
    g.set_output("loss", l);
    check_trained(g, &[Gen::U(-1.0, 1.0), Gen::Int(0, 4)]);
}

#[test]
fn autodiff_rnn_distillation() {
    let (t, v) = (5, 6);
    let mut g = Graph::new("rnn2", true);
    let ids = g.input("ids", Type::i32(true, vec![t]));
    let teacher = g.input("teacher", f(true, &[t, v]));
    let emb = param(&mut g, "emb.weight", &[v, 4]);
    let whh = param(&mut g, "rnn.w_hh", &[7, 7]);
    let e = g.push(Op::Embedding, vec![ids, emb], "").unwrap();
    let xp = dense(&mut g, e, "rnn.xh", 7);
    let h = g
        .push(Op::RnnScan { act: UnaryOp::Tanh }, vec![xp, whh], "")
        .unwrap();
    let o = dense(&mut g, h, "out", v);
    let l = g.push(Op::KlDiv, vec![teacher, o], "").unwrap();
    g.set_output("loss", l);
    check_trained(g, &[Gen::Int(0, v as i32), Gen::U(-2.0, 2.0)]);
}

#[test]
fn malformed_graphs_are_errors() {
    let opts = JitOptions::default();
    // i32 where f32 is read.
    let g = single(
        "bad_dtype",
        Op::Unary(UnaryOp::Neg),
        &[Type::i32(true, vec![3])],
        Some(f(true, &[3])),
    );
    assert!(Jit::compile(&g, &opts).is_err());
    // Given types that do not match the op.
    let w = CONV_3X3;
    let g = single(
        "bad_conv_grad_input",
        Op::Conv2dGradInput(w),
        &[f(true, &[4, 8, 8]), f(false, &[4, 2, 3, 3])],
        Some(f(true, &[3, 8, 8])),
    );
    assert!(Jit::compile(&g, &opts).is_err());
    let g = single(
        "bad_avgpool_grad",
        Op::AvgPoolGrad(w),
        &[f(true, &[2, 5, 5])],
        Some(f(true, &[2, 7, 7])),
    );
    assert!(Jit::compile(&g, &opts).is_err());
    let g = single(
        "bad_embedding_grad",
        Op::EmbeddingGrad,
        &[Type::i32(true, vec![3]), f(true, &[3, 4])],
        Some(f(false, &[10, 5])),
    );
    assert!(Jit::compile(&g, &opts).is_err());
    // A node using a later value.
    let mut g = Graph::new("order", false);
    let x = g.input("x", f(true, &[2]));
    g.push_typed(Op::Unary(UnaryOp::Neg), vec![ValueId(5)], f(true, &[2]), "");
    g.set_output("out", x);
    assert!(Jit::compile(&g, &opts).is_err());
}

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

/// `product → epilogue` as separate nodes: inputs `a`, `b` of types `ins`, then the
/// epilogue's extra input when it has one: a bias along the product's bias axis (a chain's
/// `bias` only says whether there is one), or a forward value shaped like the product.
fn with_epilogue(product: Op, ins: &[Type], epi: &Epilogue) -> Graph {
    let mut g = Graph::new("", true);
    let a = g.input("a", ins[0].clone());
    let b = g.input("b", ins[1].clone());
    let p = g.push(product.clone(), vec![a, b], "p").unwrap();
    let pt = g.ty(p).clone();
    let out = match epi {
        Epilogue::Chain(c) => match c.bias {
            Some(_) => {
                let axis = match product {
                    Op::Conv2d(_) => 1,
                    _ => pt.rank() - 1,
                };
                let bias = g.input("bias", f(false, &[pt.dim(axis, 1)]));
                let chain = Chain {
                    bias: Some(axis),
                    acts: c.acts.clone(),
                };
                g.push(Op::Fused(chain), vec![p, bias], "e")
            }
            None => g.push(Op::Fused(c.clone()), vec![p], "e"),
        },
        Epilogue::Grad(u) => {
            let v = g.input("v", pt);
            g.push(Op::UnaryGrad(*u), vec![v, p], "e")
        }
        Epilogue::Loss(_) => panic!("a loss epilogue's graph is built by with_loss"),
        Epilogue::Pool(..) => panic!("a pooling epilogue's graph is built by its test"),
    }
    .unwrap();
    let e = &g.node(out).op;
    g.name = format!("{} then {}{}", product.name(), e.name(), e.attrs());
    g.set_output("out", out);
    g
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

/// A matrix product `a·w` (`w` stored `[N, K]` when `tb`), the chain `chain` (a bias when it
/// has one), and a cross-entropy (`ce`) or mean-squared-error loss of the result with its
/// gradient, scaled by a constant 0.5, carried back through the chain's last activation when
/// there is one (as autodiff writes it): outputs the value, the loss and the gradient.
fn with_loss(a: &Type, w: &Type, tb: bool, chain: &Chain, ce: bool) -> Graph {
    let mut g = Graph::new("", true);
    let x = g.input("a", a.clone());
    let wv = g.input("w", w.clone());
    // The product's type, for the inputs, which come first (as in a model's graph).
    let n = if tb { w.dims[0] } else { w.dims[1] };
    let rows = &a.dims[..a.dims.len() - 1];
    let pt = f(true, &[rows, &[n]].concat());
    let bias = chain.bias.map(|_| g.input("bias", f(false, &[n])));
    let target = if ce {
        g.input("labels", Type::i32(true, rows.to_vec()))
    } else {
        g.input("target", pt.clone())
    };
    let p = g
        .push(Op::MatMul { ta: false, tb }, vec![x, wv], "p")
        .unwrap();
    let mut y = p;
    if let Some(bias) = bias {
        y = g
            .push(Op::Fused(chain.clone()), vec![p, bias], "y")
            .unwrap();
    } else if !chain.acts.is_empty() {
        y = g.push(Op::Fused(chain.clone()), vec![p], "y").unwrap();
    }
    let (loss, grad) = if ce {
        (Op::CrossEntropy, Op::CrossEntropyGrad)
    } else {
        (Op::Mse, Op::MseGrad)
    };
    let l = g.push(loss, vec![y, target], "loss").unwrap();
    let half = g.constant(0.5);
    let mut d = g.push(grad, vec![y, target, half], "d").unwrap();
    if let Some(&u) = chain.acts.last() {
        d = g.push(Op::UnaryGrad(u), vec![y, d], "d act").unwrap();
    }
    g.name = format!(
        "{} {a}·{w}{} then {chain}",
        if ce { "cross_entropy" } else { "mse" },
        if tb { "ᵀ" } else { "" }
    );
    for (name, v) in [("y", y), ("loss", l), ("d", d)] {
        g.set_output(name, v);
    }
    g
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
/// Their weight gradients too, where the output rows are whole f32x4 groups (else im2col).
#[test]
fn direct_convolutions() {
    use nnc::opt::epilogue::fuse_epilogues;
    let cases = [
        // (c, h, w, o, k, pad)
        (1, 28, 28, 32, 3, 1),
        (1, 9, 11, 5, 3, 0),
        (1, 7, 6, 12, 3, 2),
        (2, 8, 13, 9, 2, 1),
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
        let whole = y.dims[2].is_multiple_of(4);
        assert_eq!(algos, [if whole { "direct" } else { "im2col" }], "{y}");
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
