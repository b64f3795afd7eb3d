//! The JIT against the f64 reference interpreter: every op on random shapes and inputs, whole
//! graphs (MLP, CNN, RNN and GRU forward and backward), batch sizes 1, 3 and 64, determinism.
//! Here the generator of inputs, the comparison ([`compare`]) and the graphs several modules
//! build; one module per family of tests.

mod activations;
mod autodiff;
mod conv;
mod copy;
mod fused;
mod graphs;
mod gru;
mod lstm;
mod ops;
mod pools;
mod stacked;
mod threads;
mod transposed;

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
