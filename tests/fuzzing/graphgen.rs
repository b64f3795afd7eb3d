//! Random well-typed graphs run through the JIT and the reference interpreter, shared by the
//! property test (`tests/graph_fuzz.rs`) and the `jit_vs_interp` fuzz target (`fuzz/`).
//!
//! [`generate`] decodes any byte string into a [`Case`]: a forward graph (vector, image or token
//! inputs; a few random layers: elementwise, dense, bias, softmax, dropout, reshape, conv2d,
//! pooling, embedding, one_hot, rnn, concat, reverse; a loss and side terms), usually
//! differentiated by `autodiff::grad`, with every f32 node exposed as an output; the batch
//! size, the JIT's thread count, whether the JIT gets the optimized graph, and the seed of the
//! values. Structure comes from the bytes (so a fuzzer steers it), values from a generator
//! seeded by them (so a fuzzer cannot build exact ties at the kinks of relu and max).
//! [`check_case`] verifies the graph and compares every output:
//! |jit − interp| ≤ `TOL`·(1 + |interp|) + `CANCEL_TOL`·(the largest magnitude the node reads).

use nnc::codegen::{Jit, JitOptions};
use nnc::exec::{Executor, Feed, StepCtx};
use nnc::interp::Interpreter;
use nnc::ir::verify::verify;
use nnc::ir::{BinaryOp, DType, Graph, Init, Op, Param, Type, UnaryOp, ValueId, Window};
use nnc::runtime::rng::Rng;

/// Relative and absolute tolerance of the comparison: the JIT computes in f32, the interpreter
/// in f64, through up to a few dozen ops.
pub const TOL: f64 = 1e-4;

/// Tolerance on the scale of what a node reads: a sum of such terms that cancels to near zero
/// (the bias gradient of a log-softmax gradient sums rows that add up to exactly 0) is off in
/// f32 by rounding on the scale of its terms (2⁻²⁴ each, up to ~100 of them), not of its result.
pub const CANCEL_TOL: f64 = 1e-5;

/// A reference value beyond this means the random layers left the range where f32 and f64 can
/// be compared element by element; such a draw is not compared.
const SANE: f32 = 1e4;

/// A case: the graph and how to run it.
pub struct Case {
    pub graph: Graph,
    /// How each input's values are drawn, in the order of `Graph::inputs`.
    gens: Vec<Gen>,
    pub batch: usize,
    pub threads: usize,
    /// Whether the JIT runs `opt::optimize(graph, 1)` (the interpreter always runs `graph`).
    pub optimize: bool,
    pub seed: u64,
}

/// How to draw the values of one input.
#[derive(Clone, Copy, Debug)]
enum Gen {
    U(f32, f32),
    /// Integer ids in `lo..hi`.
    Int(i32, i32),
}

/// The bytes as a stream of choices; past the end every choice is 0.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    /// A choice in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        self.byte() as usize % n
    }
    /// A choice in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

/// The graph being built, and what is needed to feed it.
struct Builder<'a> {
    g: Graph,
    gens: Vec<Gen>,
    src: Bytes<'a>,
    /// Scalar terms to add to the loss.
    side: Vec<ValueId>,
}

impl Builder<'_> {
    fn push(&mut self, op: Op, inputs: Vec<ValueId>) -> Result<ValueId, String> {
        let name = op.name();
        self.g
            .push(op, inputs, "")
            .map_err(|e| format!("the generator built an ill-typed {name}: {e}"))
    }
    fn ty(&self, v: ValueId) -> Type {
        self.g.ty(v).clone()
    }
    fn input(&mut self, ty: Type, gen: Gen) -> ValueId {
        let name = format!("x{}", self.gens.len());
        self.gens.push(gen);
        self.g.input(&name, ty)
    }
    /// A parameter, now and then frozen (no gradient flows to it).
    fn param(&mut self, dims: Vec<usize>) -> ValueId {
        let frozen = self.src.below(8) == 0;
        let path = format!("p{}", self.g.params.len());
        self.g.add_param(Param {
            path,
            dims,
            init: Init::Uniform { bound: 0.5 },
            frozen,
        })
    }
    fn unary(&mut self, op: UnaryOp, x: ValueId) -> Result<ValueId, String> {
        self.push(Op::Unary(op), vec![x])
    }
    fn binary(&mut self, op: BinaryOp, a: ValueId, b: ValueId) -> Result<ValueId, String> {
        self.push(Op::Binary(op), vec![a, b])
    }

    /// x·W (or x·Wᵀ) over the last axis, then (usually) a bias.
    fn dense(&mut self, x: ValueId, n: usize) -> Result<ValueId, String> {
        let k = self.ty(x).last();
        let tb = self.src.below(2) == 1;
        let w = self.param(if tb { vec![n, k] } else { vec![k, n] });
        let y = self.push(Op::MatMul { ta: false, tb }, vec![x, w])?;
        if self.src.below(4) == 0 {
            return Ok(y);
        }
        let axis = self.ty(y).rank() - 1;
        let b = self.param(vec![n]);
        self.push(Op::BiasAdd { axis }, vec![y, b])
    }

    /// The first value: vector, sequence, image or token inputs.
    fn start(&mut self) -> Result<ValueId, String> {
        let u = Gen::U(-1.0, 1.0);
        match self.src.below(5) {
            0 => {
                let n = self.src.range(1, 12);
                Ok(self.input(Type::f32(true, vec![n]), u))
            }
            1 => {
                let (t, n) = (self.src.range(1, 5), self.src.range(1, 6));
                Ok(self.input(Type::f32(true, vec![t, n]), u))
            }
            2 => {
                let c = self.src.range(1, 3);
                let (h, w) = (self.src.range(2, 8), self.src.range(2, 8));
                Ok(self.input(Type::f32(true, vec![c, h, w]), u))
            }
            _ => {
                let t = self.src.range(1, 5);
                let v = self.src.range(2, 8);
                if self.src.below(2) == 0 {
                    let ids = self.input(Type::i32(true, vec![t]), Gen::Int(0, v as i32));
                    let e = self.src.range(1, 6);
                    let table = self.param(vec![v, e]);
                    self.push(Op::Embedding, vec![ids, table])
                } else {
                    // Ids outside 0..v give a zero row.
                    let ids = self.input(Type::i32(true, vec![t]), Gen::Int(-1, v as i32 + 1));
                    self.push(Op::OneHot { n: v }, vec![ids])
                }
            }
        }
    }

    /// `x` plus fresh noise in ±0.5, before a kink (relu at 0, the argmax of a max pool): the
    /// layers above can cancel to values that are exactly equal in f64 but differ by rounding in
    /// f32 (`(x + b) − x`), and there the two back ends legitimately take different branches.
    fn jitter(&mut self, x: ValueId) -> Result<ValueId, String> {
        let noise = self.input(self.ty(x), Gen::U(-0.5, 0.5));
        self.binary(BinaryOp::Add, x, noise)
    }

    /// A value of `x`'s type to combine it with: an earlier one of that type, or `x` itself.
    fn partner(&mut self, x: ValueId) -> ValueId {
        let ty = self.ty(x);
        let same: Vec<ValueId> = (0..self.g.nodes.len())
            .map(|i| ValueId(i as u32))
            .filter(|v| *self.g.ty(*v) == ty)
            .collect();
        self.src.pick(&same)
    }

    /// A scalar constant of magnitude 0.5..2 and either sign.
    fn constant(&mut self) -> ValueId {
        let c = [0.5, 0.75, 1.0, 1.5, 2.0][self.src.below(5)];
        let c = if self.src.below(2) == 0 { c } else { -c };
        self.g.constant(c)
    }

    /// One random layer on `x`; `None` when the one picked does not apply to `x`'s shape.
    fn layer(&mut self, x: ValueId) -> Result<Option<ValueId>, String> {
        let ty = self.ty(x);
        let rank = ty.rank();
        // Images mostly go through image layers, so that conv and pool chains are common.
        if rank == 4 && self.src.below(3) != 0 {
            return self.image(x, &ty);
        }
        Ok(Some(match self.src.below(11) {
            0 => match self.src.below(8) {
                0 => self.unary(UnaryOp::Neg, x)?,
                // The smooth activations, and leaky_relu (off its kink, as relu).
                6 => {
                    let op = self.src.pick(&[
                        UnaryOp::Gelu,
                        UnaryOp::GeluTanh,
                        UnaryOp::Silu,
                        UnaryOp::elu(1.0),
                        UnaryOp::softplus(1.0, 20.0),
                    ]);
                    self.unary(op, x)?
                }
                7 => {
                    let j = self.jitter(x)?;
                    self.unary(UnaryOp::leaky_relu(0.1), j)?
                }
                1 => {
                    let j = self.jitter(x)?;
                    self.unary(UnaryOp::Relu, j)?
                }
                2 => self.unary(UnaryOp::Sigmoid, x)?,
                3 => self.unary(UnaryOp::Tanh, x)?,
                // exp and log of tanh(x) (plus 1.5), where f32 stays in range.
                4 => {
                    let t = self.unary(UnaryOp::Tanh, x)?;
                    self.unary(UnaryOp::Exp, t)?
                }
                _ => {
                    let t = self.unary(UnaryOp::Tanh, x)?;
                    let c = self.g.constant(1.5);
                    let s = self.binary(BinaryOp::Add, c, t)?;
                    self.unary(UnaryOp::Log, s)?
                }
            },
            1 => {
                let other = if self.src.below(3) == 0 {
                    self.constant()
                } else {
                    self.partner(x)
                };
                let op = self
                    .src
                    .pick(&[BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul]);
                if self.src.below(2) == 0 {
                    self.binary(op, x, other)?
                } else {
                    self.binary(op, other, x)?
                }
            }
            2 => {
                // A denominator away from zero: a constant, or 1.5 + tanh(y) in [0.5, 2.5].
                let d = if self.src.below(2) == 0 {
                    self.constant()
                } else {
                    let y = self.partner(x);
                    let t = self.unary(UnaryOp::Tanh, y)?;
                    let c = self.g.constant(1.5);
                    self.binary(BinaryOp::Add, t, c)?
                };
                self.binary(BinaryOp::Div, x, d)?
            }
            3 | 4 => {
                let n = self.src.range(1, 12);
                self.dense(x, n)?
            }
            5 => {
                let op = [Op::Softmax, Op::LogSoftmax][self.src.below(2)].clone();
                self.push(op, vec![x])?
            }
            6 => {
                let p = self.src.pick(&[0.0, 0.1, 0.5, 0.9]);
                self.push(Op::Dropout { p, salt: 0 }, vec![x])?
            }
            7 => {
                // Flatten, or regroup the flat elements into two axes.
                let n = ty.per_sample();
                let divisors: Vec<usize> = (1..=n).filter(|d| n.is_multiple_of(*d)).collect();
                let d = self.src.pick(&divisors);
                let dims = if self.src.below(2) == 0 {
                    vec![n]
                } else {
                    vec![d, n / d]
                };
                self.g
                    .push_typed(Op::Reshape, vec![x], Type::f32(true, dims), "")
            }
            8 => {
                // A bias along a middle axis; on vectors, a copy instead.
                if rank < 3 {
                    return self.moved(x, rank);
                }
                let axis = self.src.range(1, rank - 2);
                let b = self.param(vec![ty.dims[axis - 1]]);
                self.push(Op::BiasAdd { axis }, vec![x, b])?
            }
            9 => {
                if rank == 4 {
                    return self.image(x, &ty);
                }
                if rank != 3 {
                    return Ok(None);
                }
                // An rnn, a gru or an lstm: x·W_xh + b over every step, then the scan (and the
                // lstm's hidden states out of its state).
                let h = self.src.range(1, 6);
                match self.src.below(3) {
                    0 => {
                        let xp = self.dense(x, 3 * h)?;
                        let w = self.param(vec![h, 3 * h]);
                        let b = self.param(vec![3 * h]);
                        self.push(Op::GruScan, vec![xp, w, b])?
                    }
                    1 => {
                        let xp = self.dense(x, 4 * h)?;
                        let w = self.param(vec![h, 4 * h]);
                        let s = self.push(Op::LstmScan, vec![xp, w])?;
                        self.push(Op::LstmHidden, vec![s])?
                    }
                    _ => {
                        let xp = self.dense(x, h)?;
                        let w = self.param(vec![h, h]);
                        let act = self.src.pick(&[UnaryOp::Tanh, UnaryOp::Relu]);
                        self.push(Op::RnnScan { act }, vec![xp, w])?
                    }
                }
            }
            _ => {
                // A side term: the Gram-like product xᵀ·y over all rows, squared and summed.
                let y = self.partner(x);
                let p = self.push(
                    Op::MatMul {
                        ta: true,
                        tb: false,
                    },
                    vec![x, y],
                )?;
                let s = self.push(Op::SumSquares, vec![p])?;
                self.side.push(s);
                return Ok(None);
            }
        }))
    }

    /// A vector batch (`rank` 2) joined with a value of its type along its features, or its
    /// features reversed: the copies of `concat` and of bidirectional recurrent layers.
    fn moved(&mut self, x: ValueId, rank: usize) -> Result<Option<ValueId>, String> {
        if rank != 2 {
            return Ok(None);
        }
        Ok(Some(if self.src.below(2) == 0 {
            let y = self.partner(x);
            self.push(Op::Concat { axis: 1 }, vec![x, y])?
        } else {
            self.push(Op::Reverse { axis: 1 }, vec![x])?
        }))
    }

    /// conv2d (and bias), max or average pooling of an image batch, if the window fits.
    fn image(&mut self, x: ValueId, ty: &Type) -> Result<Option<ValueId>, String> {
        let kernel = self.src.range(1, 3);
        let w = Window {
            kernel,
            stride: self.src.range(1, 2),
            // Every window keeps at least one real pixel.
            pad: self.src.range(0, kernel / 2),
        };
        if w.out_len(ty.dims[1]).is_none() || w.out_len(ty.dims[2]).is_none() {
            return Ok(None);
        }
        Ok(Some(match self.src.below(3) {
            0 => {
                let o = self.src.range(1, 4);
                let k = self.param(vec![o, ty.dims[0], kernel, kernel]);
                let y = self.push(Op::Conv2d(w), vec![x, k])?;
                if self.src.below(4) == 0 {
                    y
                } else {
                    let b = self.param(vec![o]);
                    self.push(Op::BiasAdd { axis: 1 }, vec![y, b])?
                }
            }
            1 => {
                let j = self.jitter(x)?;
                self.push(Op::MaxPool(w), vec![j])?
            }
            _ => self.push(Op::AvgPool(w), vec![x])?,
        }))
    }

    /// The loss of the last value `x`, plus the side terms and maybe an L2 penalty.
    fn loss(&mut self, x: ValueId) -> Result<ValueId, String> {
        let ty = self.ty(x);
        let c = ty.last();
        let same = |b: &mut Self, gen| b.input(ty.clone(), gen);
        let mut loss = match self.src.below(6) {
            0 => {
                let labels = Type::i32(true, ty.dims[..ty.dims.len() - 1].to_vec());
                let y = self.input(labels, Gen::Int(0, c as i32));
                self.push(Op::CrossEntropy, vec![x, y])?
            }
            1 => {
                let t = same(self, Gen::U(0.0, 1.0));
                self.push(Op::SoftCrossEntropy, vec![x, t])?
            }
            2 => {
                let p = same(self, Gen::U(-2.0, 2.0));
                self.push(Op::KlDiv, vec![p, x])?
            }
            3 => {
                let t = same(self, Gen::U(-1.0, 1.0));
                self.push(Op::Mse, vec![x, t])?
            }
            4 => {
                // p = sigmoid(tanh(x)) in [0.27, 0.73]: near 0 or 1, (p − y)/(p(1 − p)) of the
                // gradient amplifies the rounding of p beyond any f32 tolerance.
                let t = self.unary(UnaryOp::Tanh, x)?;
                let p = self.unary(UnaryOp::Sigmoid, t)?;
                let y = same(self, Gen::U(0.0, 1.0));
                self.push(Op::Bce, vec![p, y])?
            }
            _ => self.push(Op::SumSquares, vec![x])?,
        };
        for s in std::mem::take(&mut self.side) {
            let c = self.constant();
            let t = self.binary(BinaryOp::Mul, c, s)?;
            loss = self.binary(BinaryOp::Add, loss, t)?;
        }
        if !self.g.params.is_empty() && self.src.below(3) == 0 {
            let p = self.src.below(self.g.params.len());
            let v = self
                .g
                .param_node(nnc::ir::ParamId(p as u32))
                .ok_or("a parameter without its node")?;
            let l2 = self.push(Op::SumSquares, vec![v])?;
            let c = self.g.constant(0.01);
            let t = self.binary(BinaryOp::Mul, c, l2)?;
            loss = self.binary(BinaryOp::Add, loss, t)?;
        }
        Ok(loss)
    }
}

/// Decodes `bytes` into a case; an error means the generator built an ill-typed graph (or
/// autodiff refused a well-typed one), which is a failure.
pub fn generate(bytes: &[u8]) -> Result<Case, String> {
    let mut b = Builder {
        g: Graph::new("fuzz", true),
        gens: Vec::new(),
        src: Bytes(bytes),
        side: Vec::new(),
    };
    let batch = b.src.pick(&[1, 2, 3, 5, 8, 17]);
    let threads = b.src.range(1, 2);
    let optimize = b.src.below(2) == 1;
    let differentiate = b.src.below(4) != 0;
    let mut x = b.start()?;
    for _ in 0..b.src.range(1, 6) {
        if let Some(y) = b.layer(x)? {
            x = y;
        }
    }
    let loss = b.loss(x)?;
    b.g.set_output("loss", loss);
    // Last, so that the bytes a fuzzer mutates first shape the graph.
    let seed = u64::from_le_bytes(std::array::from_fn(|_| b.src.byte()));
    let mut graph = if differentiate {
        nnc::autodiff::grad(&b.g).map_err(|e| format!("autodiff: {e}"))?
    } else {
        b.g
    };
    // Every kernel's result is compared, not only the loss and the gradients.
    for i in 0..graph.nodes.len() {
        let n = &graph.nodes[i];
        if !matches!(n.op, Op::Input { .. } | Op::Param(_) | Op::Const(_))
            && n.ty.dtype == DType::F32
        {
            graph.set_output(&format!("n{i}"), ValueId(i as u32));
        }
    }
    Ok(Case {
        graph,
        gens: b.gens,
        batch,
        threads,
        optimize,
        seed,
    })
}

/// The values of one input.
enum Values {
    F32(Vec<f32>),
    I32(Vec<i32>),
}

/// Inputs and parameters drawn for one run.
struct Draw {
    inputs: Vec<Values>,
    params: Vec<Vec<f32>>,
}

/// Uniform in [lo, hi).
fn uniform(rng: &mut Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.next_f64() as f32
}

fn draw(case: &Case, seed: u64) -> Draw {
    let g = &case.graph;
    let mut rng = Rng::new(seed);
    let inputs = g
        .inputs()
        .iter()
        .zip(&case.gens)
        .map(|((v, _), gen)| {
            let n = g.ty(*v).numel(case.batch);
            match *gen {
                Gen::U(lo, hi) => Values::F32((0..n).map(|_| uniform(&mut rng, lo, hi)).collect()),
                Gen::Int(lo, hi) => Values::I32(
                    (0..n)
                        .map(|_| lo + rng.below((hi - lo) as u64) as i32)
                        .collect(),
                ),
            }
        })
        .collect();
    let params = g
        .params
        .iter()
        .map(|p| {
            (0..p.numel())
                .map(|_| uniform(&mut rng, -0.5, 0.5))
                .collect()
        })
        .collect();
    Draw { inputs, params }
}

/// Runs `ex` on one draw.
fn run(ex: &mut dyn Executor, case: &Case, d: &Draw) -> Result<(), String> {
    let feeds: Vec<Feed<'_>> = d
        .inputs
        .iter()
        .map(|v| match v {
            Values::F32(x) => Feed::F32(x),
            Values::I32(x) => Feed::I32(x),
        })
        .collect();
    let params: Vec<&[f32]> = d.params.iter().map(Vec::as_slice).collect();
    let ctx = StepCtx {
        seed: case.seed,
        step: case.seed >> 32,
        first: (case.seed >> 8) & 63,
    };
    ex.run(case.batch, &feeds, &params, ctx)
        .map_err(|e| e.to_string())
}

/// The largest magnitude among the values node `v` reads: the interpreter's for computed
/// nodes, the draw's for inputs and parameters.
fn input_scale(
    g: &Graph,
    inputs: &[(ValueId, &str)],
    interp: &Interpreter,
    d: &Draw,
    v: ValueId,
) -> f64 {
    let values = |u: ValueId| -> Option<&[f32]> {
        match g.node(u).op {
            Op::Param(p) => d.params.get(p.index()).map(Vec::as_slice),
            Op::Input { .. } => match d.inputs.get(inputs.iter().position(|(i, _)| *i == u)?) {
                Some(Values::F32(x)) => Some(x),
                _ => None,
            },
            _ => interp.value(u),
        }
    };
    g.node(v)
        .inputs
        .iter()
        .filter_map(|&u| values(u))
        .flatten()
        .fold(0.0, |m: f64, &x| m.max((x as f64).abs()))
}

/// Compares the JIT with the interpreter on one draw: `Ok(false)` when a reference value leaves
/// the sane range (nothing compared), `Err` naming the first element that differs.
fn compare_once(case: &Case, jit: &mut Jit, seed: u64) -> Result<bool, String> {
    let g = &case.graph;
    let d = draw(case, seed);
    let mut interp = Interpreter::new(g.clone());
    run(&mut interp, case, &d).map_err(|e| format!("interpreter: {e}"))?;
    let mut want = Vec::with_capacity(g.outputs.len());
    for o in &g.outputs {
        let w = interp.output(&o.name).ok_or("interpreter output missing")?;
        if w.iter().any(|w| w.is_nan() || w.abs() > SANE) {
            return Ok(false);
        }
        want.push(w);
    }
    run(jit, case, &d).map_err(|e| format!("jit: {e}"))?;
    let inputs = g.inputs();
    for (o, want) in g.outputs.iter().zip(want) {
        let scale = input_scale(g, &inputs, &interp, &d, o.value);
        let got = jit
            .output(&o.name)
            .ok_or_else(|| format!("jit has no output {}", o.name))?;
        if got.len() != want.len() {
            return Err(format!(
                "output {}: jit has {} elements, interp {}",
                o.name,
                got.len(),
                want.len()
            ));
        }
        for (k, (a, b)) in got.iter().zip(want).enumerate() {
            let (a, b) = (*a as f64, *b as f64);
            // Written so that a NaN from the JIT fails it.
            let close = (a - b).abs() <= TOL * (1.0 + b.abs()) + CANCEL_TOL * scale;
            if !close {
                return Err(format!(
                    "output {} ({}) element {k}: jit {a} vs interp {b}",
                    o.name,
                    g.node(o.value).op.name()
                ));
            }
        }
    }
    Ok(true)
}

/// Verifies the case's graph, compiles it, and compares the two back ends. A mismatch must
/// repeat on two more draws of the values: one draw alone can put a value within rounding of
/// a kink (relu at 0, a near-tie in a max pool), where f32 and f64 legitimately disagree.
/// `Ok(false)`: the draw left the sane range and nothing was compared.
pub fn check_case(case: &Case) -> Result<bool, String> {
    let g = &case.graph;
    verify(g).map_err(|e| format!("the verifier rejects a generated graph: {e:?}"))?;
    let jit_graph = if case.optimize {
        nnc::opt::optimize(g, 1)?
    } else {
        g.clone()
    };
    let opts = JitOptions {
        threads: case.threads,
        ..JitOptions::default()
    };
    let mut jit = Jit::compile(&jit_graph, &opts).map_err(|e| format!("jit compile: {e}"))?;
    let mut first = None;
    for k in 0..3 {
        match compare_once(case, &mut jit, case.seed.wrapping_add(k)) {
            Ok(compared) => return Ok(compared),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(first.unwrap_or_default())
}

/// [`generate`] then [`check_case`], with the graph printed when it fails.
pub fn check_bytes(bytes: &[u8]) -> Result<bool, String> {
    let case = generate(bytes)?;
    check_case(&case).map_err(|e| {
        format!(
            "{e}\nbatch {}, threads {}, optimized {}, seed {}\n{}",
            case.batch,
            case.threads,
            case.optimize,
            case.seed,
            nnc::ir::print::graph_to_string(&case.graph)
        )
    })
}
