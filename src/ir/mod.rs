//! The typed graph IR.
//!
//! A [`Graph`] is a list of [`Node`]s in topological order (SSA: a value is the index of the node
//! that defines it). Every node has exactly one result, whose [`Type`] is a dtype and a shape.
//! Shapes may start with the symbolic batch dimension `B` (the batch size is a run-time argument of
//! every compiled kernel), so one graph serves batch-1 inference and batch-1000 evaluation alike.
//!
//! Parameters are not values of the graph but entries of [`Graph::params`], each with its path
//! (`encoder.dense1.weight`), shape, initializer and whether it is frozen. A `Param` node reads one.
//!
//! The same IR carries the forward graph, the loss, and (after `crate::autodiff`) the backward
//! graph; later passes (`crate::opt`) rewrite it into fused ops. Printing: [`mod@print`]; checking the
//! invariants: [`verify`].

pub mod print;
pub mod program;
pub mod shape;
pub mod verify;

pub use program::*;

use std::fmt;

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    /// Integer ids: class labels, token ids.
    I32,
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::I32 => "i32",
        })
    }
}

/// The type of a value: dtype, whether it has a leading batch dimension, and the other dims.
///
/// The full run-time shape is `[batch] ++ dims` when `batched`, else `dims`. A scalar (a loss) is
/// `batched: false, dims: []`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Type {
    pub dtype: DType,
    pub batched: bool,
    pub dims: Vec<usize>,
}

impl Type {
    pub fn f32(batched: bool, dims: impl Into<Vec<usize>>) -> Type {
        Type {
            dtype: DType::F32,
            batched,
            dims: dims.into(),
        }
    }
    pub fn i32(batched: bool, dims: impl Into<Vec<usize>>) -> Type {
        Type {
            dtype: DType::I32,
            batched,
            dims: dims.into(),
        }
    }
    pub fn scalar() -> Type {
        Type::f32(false, vec![])
    }
    pub fn is_scalar(&self) -> bool {
        !self.batched && self.dims.is_empty()
    }
    /// Rank of the full run-time shape (the batch dimension counts).
    pub fn rank(&self) -> usize {
        self.dims.len() + self.batched as usize
    }
    /// Number of elements per sample (everything but the batch dimension).
    pub fn per_sample(&self) -> usize {
        self.dims.iter().product()
    }
    /// Number of elements for a given batch size.
    pub fn numel(&self, batch: usize) -> usize {
        self.per_sample() * if self.batched { batch } else { 1 }
    }
    /// The full shape for a batch size.
    pub fn shape(&self, batch: usize) -> Vec<usize> {
        let mut s = Vec::with_capacity(self.rank());
        if self.batched {
            s.push(batch);
        }
        s.extend_from_slice(&self.dims);
        s
    }
    /// Size of full-shape axis `axis` (axis 0 is the batch axis when batched).
    pub fn dim(&self, axis: usize, batch: usize) -> usize {
        if self.batched {
            if axis == 0 {
                batch
            } else {
                self.dims[axis - 1]
            }
        } else {
            self.dims[axis]
        }
    }
    /// The sizes around full-shape axis `axis` (a sample axis, not the batch's), for ops that
    /// move data along it ([`Op::Concat`], [`Op::Slice`], [`Op::Reverse`]): the product of the
    /// sample axes before it, its size, and the product of those after it. Each sample is
    /// `before` blocks of `size · after` contiguous elements.
    pub fn around(&self, axis: usize) -> (usize, usize, usize) {
        let k = axis - self.batched as usize;
        let before = self.dims[..k].iter().product();
        let after = self.dims[k + 1..].iter().product();
        (before, self.dims[k], after)
    }
    /// Size of the last axis (1 for a scalar).
    pub fn last(&self) -> usize {
        self.dims.last().copied().unwrap_or(1)
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        let mut first = true;
        if self.batched {
            f.write_str("B")?;
            first = false;
        }
        for d in &self.dims {
            if !first {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
            first = false;
        }
        f.write_str("]")
    }
}

/// Index of a node (and of the value it defines) in [`Graph::nodes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// Index into [`Graph::params`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub u32);

impl ParamId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// How a parameter is initialized (PyTorch's defaults: U(±1/√fan_in) for dense, conv and rnn
/// weights and biases; N(0, 1) for embeddings).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    Uniform { bound: f32 },
    Normal { std: f32 },
}

impl fmt::Display for Init {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Init::Zeros => f.write_str("zeros"),
            Init::Ones => f.write_str("ones"),
            Init::Uniform { bound } => write!(f, "uniform(±{bound:.6})"),
            Init::Normal { std } => write!(f, "normal(0, {std})"),
        }
    }
}

/// A parameter tensor (never batched).
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// Dotted path from the root model: `encoder.dense1.weight`. Checkpoint tensors use it as name.
    pub path: String,
    pub dims: Vec<usize>,
    pub init: Init,
    /// Frozen parameters receive no gradient and are never written by an optimizer.
    pub frozen: bool,
}

impl Param {
    pub fn ty(&self) -> Type {
        Type::f32(false, self.dims.clone())
    }
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }
    /// Whether this is a batch norm's running statistic (`running_mean`, `running_var`): a
    /// buffer in PyTorch's sense, saved with the parameters but never trained (it is frozen).
    pub fn is_buffer(&self) -> bool {
        self.path.ends_with(".running_mean") || self.path.ends_with(".running_var")
    }
}

/// Elementwise functions of one argument.
///
/// The activations with a parameter keep it as its f32 bits, so that the op stays `Eq` and
/// `Hash` (common-subexpression elimination compares ops): read it with [`UnaryOp::param`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Relu,
    Sigmoid,
    Tanh,
    Exp,
    Log,
    /// `x > 0 ? x : slope·x`: PyTorch's `nn.LeakyReLU(negative_slope)` (the slope's bits).
    LeakyRelu(u32),
    /// `x > 0 ? x : alpha·(eˣ − 1)`: `nn.ELU(alpha)` (alpha's bits).
    Elu(u32),
    /// `x·Φ(x)`, Φ the standard normal's distribution function: `nn.GELU()`.
    Gelu,
    /// `½x·(1 + tanh(√(2/π)·(x + 0.044715x³)))`: `nn.GELU(approximate="tanh")`.
    GeluTanh,
    /// `x·σ(x)`: `nn.SiLU()` (Keras' `swish`).
    Silu,
    /// `log(1 + e^{βx})/β`, and `x` where `βx > threshold`: `nn.Softplus(beta, threshold)`.
    Softplus {
        beta: u32,
        threshold: u32,
    },
}

impl UnaryOp {
    pub fn leaky_relu(negative_slope: f32) -> UnaryOp {
        UnaryOp::LeakyRelu(negative_slope.to_bits())
    }
    pub fn elu(alpha: f32) -> UnaryOp {
        UnaryOp::Elu(alpha.to_bits())
    }
    pub fn softplus(beta: f32, threshold: f32) -> UnaryOp {
        UnaryOp::Softplus {
            beta: beta.to_bits(),
            threshold: threshold.to_bits(),
        }
    }

    /// The first parameter as a number: leaky_relu's slope, elu's alpha, softplus' beta (0 for
    /// the others).
    pub fn param(self) -> f32 {
        match self {
            UnaryOp::LeakyRelu(p) | UnaryOp::Elu(p) | UnaryOp::Softplus { beta: p, .. } => {
                f32::from_bits(p)
            }
            _ => 0.0,
        }
    }

    /// Softplus' threshold (0 for the others).
    pub fn threshold(self) -> f32 {
        match self {
            UnaryOp::Softplus { threshold, .. } => f32::from_bits(threshold),
            _ => 0.0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Relu => "relu",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::LeakyRelu(_) => "leaky_relu",
            UnaryOp::Elu(_) => "elu",
            UnaryOp::Gelu | UnaryOp::GeluTanh => "gelu",
            UnaryOp::Silu => "silu",
            UnaryOp::Softplus { .. } => "softplus",
        }
    }

    /// The parameters as printed after the name (`nnc ir`): ` slope=0.01`; empty if none.
    pub fn attrs(self) -> String {
        match self {
            UnaryOp::LeakyRelu(_) => format!(" slope={}", self.param()),
            UnaryOp::Elu(_) => format!(" alpha={}", self.param()),
            UnaryOp::GeluTanh => " approximate=tanh".into(),
            UnaryOp::Softplus { .. } => {
                format!(" beta={} threshold={}", self.param(), self.threshold())
            }
            _ => String::new(),
        }
    }

    /// Whether [`Op::UnaryGrad`] of this op reads the forward *output* (else the forward input).
    pub fn grad_uses_output(self) -> bool {
        // Relu's derivative is [x > 0] = [relu(x) > 0]: reading the output lets the forward
        // pass keep only the activation, so a bias add before it can fuse ([`Op::Fused`]).
        // So do leaky_relu's with a positive slope (y > 0 exactly where x > 0, the derivative
        // 1 or the slope) and elu's with alpha ≥ 0 (y > 0 where x > 0, else the derivative
        // alpha·eˣ = y + alpha); a negative slope or alpha makes y's sign say nothing of x's.
        // Gelu, silu and softplus are not monotonic or lose x where they saturate: they read x.
        match self {
            UnaryOp::Sigmoid | UnaryOp::Tanh | UnaryOp::Exp | UnaryOp::Relu => true,
            UnaryOp::LeakyRelu(_) => self.param() > 0.0,
            UnaryOp::Elu(_) => self.param() >= 0.0,
            _ => false,
        }
    }
}

impl fmt::Display for UnaryOp {
    /// The name and parameters: `leaky_relu slope=0.2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.name(), self.attrs())
    }
}

/// Elementwise functions of two arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryOp {
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
        }
    }
}

/// Activation of a recurrent layer.
pub type RnnAct = UnaryOp;

/// What a second result's node must read ([`Op::second_result_of`]): its description, for
/// the verifier's messages, and the test of the op that writes it.
pub type Writer = (&'static str, fn(&Op) -> bool);

/// 2-D window geometry shared by convolution and pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Window {
    /// Output extent along one spatial axis, or `None` when the window does not fit.
    pub fn out_len(&self, len: usize) -> Option<usize> {
        let padded = len + 2 * self.pad;
        if self.stride == 0 || padded < self.kernel {
            return None;
        }
        Some((padded - self.kernel) / self.stride + 1)
    }
}

/// What an [`Op::Fused`] computes: an optional bias along one axis, then unary ops in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Chain {
    pub bias: Option<usize>,
    pub acts: Vec<UnaryOp>,
}

impl fmt::Display for Chain {
    /// `[bias_add axis=1 → relu]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .bias
            .iter()
            .map(|a| format!("bias_add axis={a}"))
            .collect();
        parts.extend(self.acts.iter().map(|u| u.to_string()));
        write!(f, "[{}]", parts.join(" → "))
    }
}

/// The product an [`Op::WithEpilogue`] computes before its epilogue: the ops whose kernels are
/// GEMMs, which can apply an elementwise function to each result before it leaves the cache,
/// the max-pool gradient, whose kernel writes each element of `dx` once (2×2 windows of
/// stride 2), which can apply the gradient of the activation before the pool, and the batch
/// norms, which apply activations (a chain without bias) as they store.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Producer {
    /// [`Op::MatMul`].
    MatMul { ta: bool, tb: bool },
    /// [`Op::Conv2d`].
    Conv2d(Window),
    /// [`Op::MaxPoolGrad`]: with an [`Epilogue::Grad`] only.
    MaxPoolGrad(Window),
    /// [`Op::BatchNorm`]: with an [`Epilogue::Chain`] of activations only.
    BatchNorm { eps: f32 },
    /// [`Op::BatchNormEval`]: with an [`Epilogue::Chain`] of activations only.
    BatchNormEval { eps: f32 },
}

impl Producer {
    /// The op computing the product alone.
    pub fn op(self) -> Op {
        match self {
            Producer::MatMul { ta, tb } => Op::MatMul { ta, tb },
            Producer::Conv2d(w) => Op::Conv2d(w),
            Producer::MaxPoolGrad(w) => Op::MaxPoolGrad(w),
            Producer::BatchNorm { eps } => Op::BatchNorm { eps },
            Producer::BatchNormEval { eps } => Op::BatchNormEval { eps },
        }
    }

    /// How many of the node's inputs are the product's (the epilogue's extra inputs follow).
    pub fn arity(self) -> usize {
        match self {
            Producer::MatMul { .. } | Producer::Conv2d(_) | Producer::MaxPoolGrad(_) => 2,
            Producer::BatchNorm { .. } => 4,
            Producer::BatchNormEval { .. } => 5,
        }
    }

    /// Whether its epilogue may only be a chain of activations (no bias, gradient, pooling or
    /// loss): the batch norms'.
    pub fn activations_only(self) -> bool {
        matches!(
            self,
            Producer::BatchNorm { .. } | Producer::BatchNormEval { .. }
        )
    }

    /// The full-shape axis along which a bias of the epilogue must lie: the columns of C for a
    /// matrix product (the last axis), the rows of each image's C (channels, axis 1) for a
    /// convolution. `rank` is the rank of the product.
    pub fn bias_axis(self, rank: usize) -> usize {
        match self {
            Producer::MatMul { .. } => rank.saturating_sub(1),
            Producer::Conv2d(_)
            | Producer::MaxPoolGrad(_)
            | Producer::BatchNorm { .. }
            | Producer::BatchNormEval { .. } => 1,
        }
    }
}

/// What an [`Op::WithEpilogue`] applies to each element `p` of its product, with the extra
/// inputs it reads (after the product's, [`Producer::arity`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Epilogue {
    /// `[]` or `[b]`: the [`Op::Fused`] chain (or a lone `BiasAdd`/`Unary`) of `p`.
    Chain(Chain),
    /// `[v]`: `UnaryGrad(op)` of `[v, p]`, the product being the upstream gradient (relu's mask
    /// applied to `dy · Wᵀ` as it is computed).
    Grad(UnaryOp),
    /// `[target]` or `[b, target]`: the chain, whose result is the node's value, then the
    /// gradient of a loss of that value against `target`, written as the node's second result
    /// ([`Op::EpilogueGrad`]).
    Loss(LossEpilogue),
    /// `[]` or `[b]`: the chain, then a max pooling of its result with this window, whose
    /// output is the node's value ([`Producer::Conv2d`] only): a convolution whose output only
    /// the pooling read (inference), so that it is never stored whole.
    Pool(Chain, Window),
}

impl Epilogue {
    /// Inputs read after the product's ([`Producer::arity`]).
    pub fn extra_inputs(&self) -> usize {
        match self {
            Epilogue::Chain(c) | Epilogue::Pool(c, _) => c.bias.is_some() as usize,
            Epilogue::Grad(_) => 1,
            Epilogue::Loss(l) => l.chain.bias.is_some() as usize + 1,
        }
    }

    /// The chain computing the node's value from the product (none for a gradient epilogue).
    pub fn chain(&self) -> Option<&Chain> {
        match self {
            Epilogue::Chain(c) | Epilogue::Pool(c, _) => Some(c),
            Epilogue::Grad(_) => None,
            Epilogue::Loss(l) => Some(&l.chain),
        }
    }
}

impl fmt::Display for Epilogue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Epilogue::Chain(c) => c.fmt(f),
            Epilogue::Grad(u) => write!(f, "[{}_grad{}]", u.name(), u.attrs()),
            Epilogue::Loss(l) => l.fmt(f),
            Epilogue::Pool(c, w) => {
                let chain = c.to_string();
                let sep = if chain == "[]" { "" } else { " → " };
                let (k, s, p) = (w.kernel, w.stride, w.pad);
                write!(
                    f,
                    "{}{sep}maxpool k={k} s={s} p={p}]",
                    &chain[..chain.len() - 1]
                )
            }
        }
    }
}

/// The loss whose gradient an [`Epilogue::Loss`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EpilogueLoss {
    /// [`Op::CrossEntropyGrad`] against `i32` labels: whole rows of C at a time.
    CrossEntropy,
    /// [`Op::MseGrad`] against a target of the value's type: element by element.
    Mse,
}

impl EpilogueLoss {
    /// The op computing the same gradient on its own: `[value, target, dl]`.
    pub fn grad_op(self) -> Op {
        match self {
            EpilogueLoss::CrossEntropy => Op::CrossEntropyGrad,
            EpilogueLoss::Mse => Op::MseGrad,
        }
    }
}

/// An epilogue that also differentiates a loss ([`Epilogue::Loss`]): the value `v = chain(p)`
/// is stored as usual, and `grad_op(v, target, dl)`, then `UnaryGrad(through)(v, ·)` when
/// `through` is given (the gradient carried back through the chain's last activation), is
/// stored in the buffer of the node's [`Op::EpilogueGrad`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LossEpilogue {
    pub chain: Chain,
    pub loss: EpilogueLoss,
    /// The upstream gradient `dl` of the loss, a constant (its f32 bits, so the op stays `Eq`).
    dl_bits: u32,
    pub through: Option<UnaryOp>,
    /// Whether the loss is summed over its N terms (`reduction: "sum"`) rather than averaged:
    /// the gradient takes dl, not dl/N (the upstream gradient of the mean, dl·N, over N).
    pub summed: bool,
}

impl LossEpilogue {
    pub fn new(chain: Chain, loss: EpilogueLoss, dl: f32, through: Option<UnaryOp>) -> Self {
        LossEpilogue {
            chain,
            loss,
            dl_bits: dl.to_bits(),
            through,
            summed: false,
        }
    }

    /// The constant upstream gradient of the loss.
    pub fn dl(&self) -> f32 {
        f32::from_bits(self.dl_bits)
    }
}

impl fmt::Display for LossEpilogue {
    /// `[bias_add axis=1 → sigmoid | mse_grad dl=1.0 → sigmoid_grad]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chain = self.chain.to_string();
        let chain = chain.trim_end_matches(']');
        let sep = if chain.len() > 1 { " | " } else { "" };
        write!(
            f,
            "{chain}{sep}{} dl={:?}{}",
            self.loss.grad_op().name(),
            self.dl(),
            if self.summed { " summed" } else { "" }
        )?;
        if let Some(u) = self.through {
            write!(f, " → {}_grad{}", u.name(), u.attrs())?;
        }
        write!(f, "]")
    }
}

/// The operations of the IR. Inputs are listed in [`Node::inputs`]; the comment of each variant
/// gives their order and shapes (`B…` = any leading dims including the batch; `[R, K]` = a
/// tensor viewed as a matrix whose rows are all leading dims flattened).
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    // ----- sources
    /// A model input, fed per batch. No inputs; type in the node.
    Input { name: String },
    /// Reads a parameter. No inputs.
    Param(ParamId),
    /// A scalar constant (type `f32[]`), broadcast by elementwise ops; or, of an unbatched
    /// type with dims, that value in every element (the weight 1 and bias 0 of a batch norm
    /// without `affine`, which a batch norm's kernels read as they read parameters).
    Const(f32),

    // ----- elementwise
    /// `[x] -> same`.
    Unary(UnaryOp),
    /// `[a, b] -> same`: same types, or one of the two a scalar `f32[]` broadcast to the other.
    Binary(BinaryOp),
    /// `[v, dy] -> dx`: gradient of `Unary(op)`. `v` is the forward output for relu, sigmoid, tanh
    /// and exp, leaky_relu with a positive slope and elu with alpha ≥ 0
    /// ([`UnaryOp::grad_uses_output`]), the forward input otherwise.
    UnaryGrad(UnaryOp),
    /// `[x]` or `[x, b] -> x`: a chain of elementwise ops in one pass (made by
    /// [`crate::opt::fuse`] after autodiff, so it has no gradient rule): `b: f32[C]` added along
    /// full-shape axis `bias` when given, then `acts` applied in order.
    Fused(Chain),
    /// `[a, b, extra…] -> product`: the product of `producer` on `[a, b]` with `epi` applied to
    /// every element before it is stored (made by [`crate::opt::epilogue`] after autodiff; no
    /// gradient rule). A bias of `epi` lies along [`Producer::bias_axis`].
    WithEpilogue { producer: Producer, epi: Epilogue },
    /// `[n] -> n's type`: the loss gradient that node `n`, an [`Op::WithEpilogue`] with an
    /// [`Epilogue::Loss`], writes beside its value: its second result. It has no kernel of its
    /// own (its buffer is written when `n` runs, so the memory plan gives it one from there).
    EpilogueGrad,

    // ----- dense algebra
    /// `[a, b] -> c`, c = op(a)·op(b) over matrices.
    /// - `ta = false`: a is `B…×K`, viewed `[R, K]`; result has a's leading dims and last dim N.
    /// - `ta = true`: a is `B…×M`, viewed `[R, M]`, contracted over R; result `[M, N]`, unbatched.
    /// - `tb = false`: b is `[K, N]` (or, when `ta`, `B…×N` with the same leading dims as a).
    /// - `tb = true`: b is `[N, K]`.
    MatMul { ta: bool, tb: bool },
    /// `[x, b] -> x`: adds `b: f32[C]` along full-shape axis `axis` of x (`C` = that axis' size).
    BiasAdd { axis: usize },
    /// `[dy] -> f32[C]`: sums dy over every full-shape axis but `axis` (the gradient of `BiasAdd`).
    BiasGrad { axis: usize },

    // ----- convolution and pooling (NCHW)
    /// `[x: B×C×H×W, w: O×C×k×k] -> B×O×H'×W'` (no bias; a `BiasAdd { axis: 1 }` follows).
    Conv2d(Window),
    /// `[dy: B×O×H'×W', w: O×C×k×k] -> dx: B×C×H×W` (the node's type gives H and W).
    Conv2dGradInput(Window),
    /// `[x: B×C×H×W, dy: B×O×H'×W'] -> dw: O×C×k×k`.
    Conv2dGradWeight(Window),
    /// `[x: B×C×H×W, y: B×O×H'×W', dp: B×O×H''×W''] -> dw: O×C×k×k`: the weight gradient of a
    /// convolution (window `conv`) whose output, through an activation `act` (or none), is
    /// max-pooled (window `pool`) into `p`, given `y` (the activation's output) and `dp` (the
    /// gradient of `p`): `conv2d_grad_weight(x, dz)` with `dz` the max-pool gradient of `dp`
    /// routed through `y`, times `act`'s gradient at `y`. Made by [`crate::opt::unpool_grad`]
    /// after autodiff (no gradient rule), so that `dz`, as large as the convolution's output, is
    /// never stored.
    Conv2dGradWeightUnpool {
        conv: Window,
        pool: Window,
        act: Option<UnaryOp>,
    },
    /// `[n] -> f32[O]`: the bias gradient (`dz` summed over all but its channel axis) that
    /// [`Op::Conv2dGradWeightUnpool`] node `n` writes beside its value: its second result, with
    /// no kernel of its own (as [`Op::EpilogueGrad`]).
    UnpoolBiasGrad,
    /// `[x: B×C×H×W] -> B×C×H'×W'`.
    MaxPool(Window),
    /// `[x, dy] -> dx`: routes dy to the (first) maximum of each window.
    MaxPoolGrad(Window),
    /// `[n] -> B×C×H'×W'`: the max pooling of node `n`'s value (a convolution, with or without
    /// its chain), which `n`'s kernel writes beside that value, rows pooled while in cache: a
    /// second result with no kernel of its own (as [`Op::EpilogueGrad`]). Made by
    /// [`crate::opt::pool_epilogue`] where the value is needed whole too (in training, by the
    /// pooling's gradient).
    PoolBeside(Window),
    /// `[x] -> B×C×H'×W'`; padding counts in the divisor (k·k).
    AvgPool(Window),
    /// `[dy] -> dx` (the node's type gives the input shape).
    AvgPoolGrad(Window),
    /// `[x: B×C×H×W] -> B×C`: the maximum of each channel's whole H×W map (`global_maxpool`).
    GlobalMaxPool,
    /// `[x, dy: B×C] -> dx`: routes each dy to the first maximum of its map in row-major order
    /// (the rule of [`Op::MaxPoolGrad`], whose window would be the whole map).
    GlobalMaxPoolGrad,
    /// `[x: B×C×H×W] -> B×C`: the mean of each channel's whole H×W map (`global_avgpool`).
    GlobalAvgPool,
    /// `[dy: B×C] -> dx`: dy/(H·W) on every element of its map (the node's type gives the
    /// input shape).
    GlobalAvgPoolGrad,
    /// `[x] -> same elements, another shape` (flatten, and its gradient).
    Reshape,
    /// `[x₀, x₁, …] -> y`: the inputs (two or more, f32, all batched or none) joined
    /// along full-shape axis `axis`, in order; every other axis must match (`concat`). Its
    /// gradient is one [`Op::Slice`] of `dy` per input.
    Concat { axis: usize },
    /// `[x] -> y`: the `len` entries of full-shape axis `axis` from `start` on (the gradient of
    /// [`Op::Concat`]; no gradient rule, it belongs to backward graphs).
    Slice {
        axis: usize,
        start: usize,
        len: usize,
    },
    /// `[x] -> same`: x with full-shape axis `axis` in reverse order (a bidirectional recurrent
    /// layer's backward direction runs on the time-reversed sequence, or reads the look-up of
    /// its time-reversed ids). f32 or i32. Its gradient is itself.
    Reverse { axis: usize },

    // ----- tokens and sequences
    /// `[ids: i32 B…, w: f32[V, E]] -> f32 B…×E`.
    Embedding,
    /// `[ids: i32 B…, dy: f32 B…×E] -> f32[V, E]` (scatter-add; the node's type gives V).
    EmbeddingGrad,
    /// `[ids: i32 B…] -> f32 B…×n`; ids outside `0..n` give a zero row.
    OneHot { n: usize },
    /// `[xp: B×T×H, w_hh: H×H] -> h: B×T×H` with h_t = act(xp_t + h_{t−1}·w_hh), h_{−1} = 0.
    /// (`xp` is `x·w_xh + b`, computed by MatMul and BiasAdd over all time steps at once.)
    RnnScan { act: RnnAct },
    /// `[h: B×T×H, w_hh: H×H, dh: B×T×H] -> da: B×T×H`, the gradient w.r.t. the pre-activations
    /// a_t = xp_t + h_{t−1}·w_hh (backpropagation through time):
    /// da_t = act'(h_t) ⊙ (dh_t + da_{t+1}·w_hhᵀ).
    RnnScanGrad { act: RnnAct },
    /// `[h: B×T×H] -> B×T×H` shifted one step later in time, zeros at t = 0 (h_{t−1}).
    TimeShift,
    /// `[xp: B×T×3H, w_hh: H×3H, b_hh: f32[3H]] -> h: B×T×H`, PyTorch's GRU recurrence: with
    /// hp_t = h_{t−1}·w_hh + b_hh and blocks `·r`, `·z`, `·n` of H units (in that order) of xp
    /// and hp: r = σ(xp_r + hp_r), z = σ(xp_z + hp_z), n = tanh(xp_n + r ⊙ hp_n),
    /// h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}, h_{−1} = 0. (`xp` is `x·w_xh + b_xh`, computed by MatMul
    /// and BiasAdd over all time steps at once.)
    GruScan,
    /// `[n] -> B×T×4H`: the gates r, z, n and hp_n of every step (blocks of H, in that order) of
    /// [`Op::GruScan`] node `n`, which its kernel writes beside h when this is read (only a
    /// training graph does, for [`Op::GruScanGrad`]): a second result with no kernel of its own
    /// (as [`Op::EpilogueGrad`]).
    GruGates,
    /// `[h: B×T×H, gates: B×T×4H, w_hh: H×3H, dh: B×T×H] -> dxp: B×T×3H`, the gradient of a
    /// [`Op::GruScan`] w.r.t. `xp` (backpropagation through time), given its output `h` and its
    /// [`Op::GruGates`]: with g_t = dh_t + z_{t+1} ⊙ g_{t+1} + dhp_{t+1}·w_hhᵀ the gradient of
    /// h_t, dxp_n = g ⊙ (1 − z) ⊙ (1 − n²), dxp_z = g ⊙ (h_{t−1} − n) ⊙ z(1 − z),
    /// dxp_r = dxp_n ⊙ hp_n ⊙ r(1 − r), and dhp = (dxp_r, dxp_z, dxp_n ⊙ r).
    GruScanGrad,
    /// `[n] -> B×T×3H`: dhp, the gradient w.r.t. hp_t = h_{t−1}·w_hh + b_hh, of
    /// [`Op::GruScanGrad`] node `n`, which its kernel writes beside dxp when this is read: a
    /// second result with no kernel of its own (as [`Op::EpilogueGrad`]).
    GruRecurGrad,
    /// `[xp: B×T×4H, w_hh: H×4H] -> s: B×T×6H`, PyTorch's LSTM cell over time (gate order
    /// i, f, g, o): with z_t = xp_t + h_{t−1}·w_hh split into four `H` blocks, i = σ, f = σ,
    /// g = tanh, o = σ, c_t = f⊙c_{t−1} + i⊙g, h_t = o⊙tanh(c_t), h_{−1} = c_{−1} = 0. Each step
    /// of `s` holds `[h_t, c_t, i, f, g, o]`: what the gradient needs (the layer's output is
    /// [`Op::LstmHidden`] of it).
    LstmScan,
    /// `[xp: B×T×4H, w_hh: H×4H] -> h: B×T×H`: [`Op::LstmScan`]'s hidden states alone, for
    /// graphs that are not differentiated (evaluation, inference): c and the gates are not
    /// kept. It has no gradient.
    Lstm,
    /// `[s: B×T×6H] -> h: B×T×H`, the hidden states out of an [`Op::LstmScan`]'s steps. Its
    /// gradient is the whole LSTM's (the scan's state is read by nothing else).
    LstmHidden,
    /// `[s: B×T×6H, w_hh: H×4H, dh: B×T×H] -> dz: B×T×4H`, the gradient w.r.t. the gate
    /// pre-activations z_t of an [`Op::LstmScan`] (backpropagation through time, the cell
    /// gradient carried from step to step).
    LstmScanGrad,

    // ----- regularization
    /// `[x] -> same`: zeroes each element with probability p and scales the rest by 1/(1−p).
    /// The mask is a hash of (seed, step, salt, element index), so `DropoutGrad` recomputes it;
    /// the checker numbers the graph's dropout layers in `salt`, so that each draws its own
    /// mask. In a graph with `training == false` the checker emits no dropout at all.
    Dropout { p: f32, salt: u32 },
    /// `[dy] -> dx` with the same mask as the forward `Dropout` of that salt.
    DropoutGrad { p: f32, salt: u32 },

    // ----- normalization over the last axis
    /// `[x] -> same`.
    Softmax,
    /// `[x] -> same`.
    LogSoftmax,
    /// `[y, dy] -> dx` with y the softmax output: dx = y ⊙ (dy − Σ dy⊙y).
    SoftmaxGrad,
    /// `[y, dy] -> dx` with y the log-softmax output: dx = dy − exp(y)·Σ dy.
    LogSoftmaxGrad,
    /// `[x: B…×D, weight: f32[D], bias: f32[D]] -> same as x`: each row normalized to mean 0
    /// and variance 1 (the biased variance, with `eps` added under the square root), then
    /// scaled by `weight` and shifted by `bias`: PyTorch's `LayerNorm` over the last axis.
    LayerNorm { eps: f32 },
    /// `[x, weight, dy] -> dx` of [`Op::LayerNorm`], the row's mean and deviation recomputed
    /// from x: with x̂ the normalized row, σ = √(var + eps) and g = dy ⊙ weight,
    /// dx = (g − mean(g) − x̂·mean(g ⊙ x̂)) / σ.
    LayerNormGrad { eps: f32 },
    /// `[x, dy] -> f32[D]`: Σ over the rows of dy ⊙ x̂, the gradient of [`Op::LayerNorm`]'s
    /// weight (its bias's is a [`Op::BiasGrad`] of dy).
    LayerNormWeightGrad { eps: f32 },
    /// `[x: B×C or B×C×H×W, stats: f32[2, C], weight: f32[C], bias: f32[C]] -> same as x`:
    /// each channel (axis 1) normalized with the mean and biased variance of its N = B·H·W
    /// values in this batch (`eps` added under the square root), then scaled by `weight` and
    /// shifted by `bias`: PyTorch's `BatchNorm1d`/`BatchNorm2d` in training mode. `stats` is
    /// the [`Op::BatchStats`] of x (the biased variance is (N − 1)/N times its unbiased one),
    /// computed once for the normalization, its gradients and the running statistics.
    BatchNorm { eps: f32 },
    /// `[x, weight, bias, running_mean: f32[C], running_var: f32[C]] -> same as x`: each
    /// channel normalized with the running statistics (PyTorch's `BatchNorm` in eval mode).
    BatchNormEval { eps: f32 },
    /// `[x, stats, weight, dy, Σ dy ⊙ x̂, Σ dy] -> dx` of [`Op::BatchNorm`], through the batch
    /// statistics: with x̂ the normalized value and σ = √(var + eps) per channel, over the
    /// channel's N values, dx = (weight/σ)(dy − mean(dy) − x̂·mean(dy ⊙ x̂)). The two sums are
    /// the weight's and the bias's gradients ([`Op::BatchNormWeightGrad`], [`Op::BiasGrad`]),
    /// so that dx is one pass over x and dy.
    BatchNormGrad { eps: f32 },
    /// `[dy, weight, running_var] -> dx = dy·weight/√(running_var + eps)` per channel: the
    /// input gradient of [`Op::BatchNormEval`] (a frozen batch norm in a training graph).
    BatchNormEvalGrad { eps: f32 },
    /// `[x, stats, dy] -> f32[C]`: Σ over each channel's values of dy ⊙ x̂, the gradient of
    /// [`Op::BatchNorm`]'s weight (its bias's is a [`Op::BiasGrad`] of dy on axis 1).
    BatchNormWeightGrad { eps: f32 },
    /// `[x] -> f32[2, C]`: each channel's batch mean, then its unbiased variance (N/(N−1) times
    /// the biased one): what the runtime folds into a batch norm's running statistics after a
    /// training step (a training graph output `stats:<running_mean path>`), with `momentum`:
    /// running ← (1 − momentum)·running + momentum·batch.
    BatchStats { momentum: f32 },

    // ----- losses: all reduce to a scalar f32[]
    /// `[logits: B…×C, labels: i32 B…] -> f32[]`: mean over rows of −log softmax(logits)\[label\].
    CrossEntropy,
    /// `[logits, labels, dl: f32[]] -> dlogits` = (softmax − onehot)·dl/R.
    CrossEntropyGrad,
    /// `[logits: B…×C, target: B…×C] -> f32[]`: mean over rows of −Σ target ⊙ log softmax(logits).
    SoftCrossEntropy,
    /// `[logits, target, dl] -> dlogits` = (softmax − target)·dl/R.
    SoftCrossEntropyGrad,
    /// `[p_logits, q_logits] -> f32[]`: mean over rows of KL(softmax(p) ‖ softmax(q)).
    /// The first argument is a target: no gradient flows into it.
    KlDiv,
    /// `[p_logits, q_logits, dl] -> dq_logits` = (softmax(q) − softmax(p))·dl/R.
    KlDivGrad,
    /// `[a, b] -> f32[]`: mean of (a − b)² over all elements.
    Mse,
    /// `[a, b, dl] -> da` = 2(a − b)·dl/N.
    MseGrad,
    /// `[p, y] -> f32[]`: mean of −(y·log p + (1−y)·log(1−p)), p clamped to [1e-7, 1−1e-7].
    Bce,
    /// `[p, y, dl] -> dp` = (p − y)/(p(1−p))·dl/N (with the same clamp).
    BceGrad,
    /// `[x] -> f32[]`: Σ x² (the L2 penalty of a parameter).
    SumSquares,
    /// `[m: f32[], x] -> f32[]`: m · numel(x)/per, the mean `m` of a loss over the terms of x
    /// (its elements with `per` = 1, its rows of `per` classes for a cross-entropy) made
    /// their sum: PyTorch's `reduction='sum'`. The count is the batch's at run time, so a
    /// short last batch sums fewer terms. Its gradient is itself, dm = MeanToSum(dy, x): x
    /// is only counted, and gets none.
    MeanToSum { per: usize },
}

impl Op {
    /// The op's name in printed IR.
    pub fn name(&self) -> String {
        match self {
            Op::Input { .. } => "input".into(),
            Op::Param(_) => "param".into(),
            Op::Const(_) => "const".into(),
            Op::Unary(u) => u.name().into(),
            Op::Binary(b) => b.name().into(),
            Op::UnaryGrad(u) => format!("{}_grad", u.name()),
            Op::Fused(_) => "fused".into(),
            Op::WithEpilogue { producer, .. } => format!("{}_epi", producer.op().name()),
            Op::EpilogueGrad => "epilogue_grad".into(),
            Op::MatMul { .. } => "matmul".into(),
            Op::BiasAdd { .. } => "bias_add".into(),
            Op::BiasGrad { .. } => "bias_grad".into(),
            Op::Conv2d(_) => "conv2d".into(),
            Op::Conv2dGradInput(_) => "conv2d_grad_input".into(),
            Op::Conv2dGradWeight(_) => "conv2d_grad_weight".into(),
            Op::Conv2dGradWeightUnpool { .. } => "conv2d_grad_weight_unpool".into(),
            Op::UnpoolBiasGrad => "unpool_bias_grad".into(),
            Op::MaxPool(_) => "maxpool".into(),
            Op::PoolBeside(_) => "maxpool_beside".into(),
            Op::MaxPoolGrad(_) => "maxpool_grad".into(),
            Op::AvgPool(_) => "avgpool".into(),
            Op::AvgPoolGrad(_) => "avgpool_grad".into(),
            Op::GlobalMaxPool => "global_maxpool".into(),
            Op::GlobalMaxPoolGrad => "global_maxpool_grad".into(),
            Op::GlobalAvgPool => "global_avgpool".into(),
            Op::GlobalAvgPoolGrad => "global_avgpool_grad".into(),
            Op::Reshape => "reshape".into(),
            Op::Embedding => "embedding".into(),
            Op::EmbeddingGrad => "embedding_grad".into(),
            Op::OneHot { .. } => "one_hot".into(),
            Op::RnnScan { .. } => "rnn_scan".into(),
            Op::RnnScanGrad { .. } => "rnn_scan_grad".into(),
            Op::TimeShift => "time_shift".into(),
            Op::Concat { .. } => "concat".into(),
            Op::Slice { .. } => "slice".into(),
            Op::Reverse { .. } => "reverse".into(),
            Op::GruScan => "gru_scan".into(),
            Op::GruGates => "gru_gates".into(),
            Op::GruScanGrad => "gru_scan_grad".into(),
            Op::GruRecurGrad => "gru_recur_grad".into(),
            Op::LstmScan => "lstm_scan".into(),
            Op::Lstm => "lstm".into(),
            Op::LstmHidden => "lstm_hidden".into(),
            Op::LstmScanGrad => "lstm_scan_grad".into(),
            Op::Dropout { .. } => "dropout".into(),
            Op::DropoutGrad { .. } => "dropout_grad".into(),
            Op::LayerNorm { .. } => "layer_norm".into(),
            Op::LayerNormGrad { .. } => "layer_norm_grad".into(),
            Op::LayerNormWeightGrad { .. } => "layer_norm_weight_grad".into(),
            Op::BatchNorm { .. } => "batch_norm".into(),
            Op::BatchNormEval { .. } => "batch_norm_eval".into(),
            Op::BatchNormGrad { .. } => "batch_norm_grad".into(),
            Op::BatchNormEvalGrad { .. } => "batch_norm_eval_grad".into(),
            Op::BatchNormWeightGrad { .. } => "batch_norm_weight_grad".into(),
            Op::BatchStats { .. } => "batch_stats".into(),
            Op::Softmax => "softmax".into(),
            Op::LogSoftmax => "log_softmax".into(),
            Op::SoftmaxGrad => "softmax_grad".into(),
            Op::LogSoftmaxGrad => "log_softmax_grad".into(),
            Op::CrossEntropy => "cross_entropy".into(),
            Op::CrossEntropyGrad => "cross_entropy_grad".into(),
            Op::SoftCrossEntropy => "soft_cross_entropy".into(),
            Op::SoftCrossEntropyGrad => "soft_cross_entropy_grad".into(),
            Op::KlDiv => "kl_div".into(),
            Op::KlDivGrad => "kl_div_grad".into(),
            Op::Mse => "mse".into(),
            Op::MseGrad => "mse_grad".into(),
            Op::Bce => "bce".into(),
            Op::BceGrad => "bce_grad".into(),
            Op::SumSquares => "sum_squares".into(),
            Op::MeanToSum { .. } => "mean_to_sum".into(),
        }
    }

    /// Attributes as printed after the name: `{ta, tb}`, `{k=3 s=1 p=1}`, …; empty if none.
    pub fn attrs(&self) -> String {
        match self {
            Op::Input { name } => format!(" \"{name}\""),
            Op::Const(c) => format!(" {c:?}"),
            Op::MatMul { ta, tb } => match (ta, tb) {
                (false, false) => String::new(),
                (true, false) => " ta".into(),
                (false, true) => " tb".into(),
                (true, true) => " ta tb".into(),
            },
            Op::BiasAdd { axis }
            | Op::BiasGrad { axis }
            | Op::Concat { axis }
            | Op::Reverse { axis } => format!(" axis={axis}"),
            Op::Slice { axis, start, len } => format!(" axis={axis} start={start} len={len}"),
            Op::Unary(u) | Op::UnaryGrad(u) => u.attrs(),
            Op::Fused(c) => c.to_string(),
            Op::WithEpilogue { producer, epi } => format!("{} {epi}", producer.op().attrs()),
            Op::Conv2d(w)
            | Op::Conv2dGradInput(w)
            | Op::Conv2dGradWeight(w)
            | Op::MaxPool(w)
            | Op::PoolBeside(w)
            | Op::MaxPoolGrad(w)
            | Op::AvgPool(w)
            | Op::AvgPoolGrad(w) => format!(" k={} s={} p={}", w.kernel, w.stride, w.pad),
            Op::Conv2dGradWeightUnpool { conv, pool, act } => format!(
                " k={} s={} p={} [maxpool_grad k={} s={} p={}{}]",
                conv.kernel,
                conv.stride,
                conv.pad,
                pool.kernel,
                pool.stride,
                pool.pad,
                act.map_or(String::new(), |a| format!(
                    " → {}_grad{}",
                    a.name(),
                    a.attrs()
                ))
            ),
            Op::OneHot { n } => format!(" n={n}"),
            Op::MeanToSum { per } => format!(" per={per}"),
            Op::RnnScan { act } | Op::RnnScanGrad { act } => format!(" {}", act.name()),
            Op::Dropout { p, salt: 0 } | Op::DropoutGrad { p, salt: 0 } => format!(" p={p}"),
            Op::LayerNorm { eps } | Op::LayerNormGrad { eps } | Op::LayerNormWeightGrad { eps } => {
                format!(" eps={eps:e}")
            }
            Op::BatchNorm { eps }
            | Op::BatchNormEval { eps }
            | Op::BatchNormGrad { eps }
            | Op::BatchNormEvalGrad { eps }
            | Op::BatchNormWeightGrad { eps } => format!(" eps={eps:e}"),
            Op::BatchStats { momentum } => format!(" momentum={momentum}"),
            Op::Dropout { p, salt } | Op::DropoutGrad { p, salt } => {
                format!(" p={p} salt={salt}")
            }
            _ => String::new(),
        }
    }

    /// For a second result ([`Op::EpilogueGrad`], [`Op::UnpoolBiasGrad`], [`Op::PoolBeside`]):
    /// what the node it reads must be, which writes it beside its own value in the same kernel
    /// (no kernel of its own); `None` for every other op.
    pub fn second_result_of(&self) -> Option<Writer> {
        fn loss(op: &Op) -> bool {
            matches!(
                op,
                Op::WithEpilogue {
                    epi: Epilogue::Loss(_),
                    ..
                }
            )
        }
        fn unpool(op: &Op) -> bool {
            matches!(op, Op::Conv2dGradWeightUnpool { .. })
        }
        fn conv(op: &Op) -> bool {
            matches!(
                op,
                Op::Conv2d(_)
                    | Op::WithEpilogue {
                        producer: Producer::Conv2d(_),
                        epi: Epilogue::Chain(_),
                    }
            )
        }
        match self {
            Op::EpilogueGrad => Some(("a node with a loss epilogue", loss)),
            Op::UnpoolBiasGrad => Some(("a conv2d_grad_weight_unpool", unpool)),
            Op::PoolBeside(_) => Some(("a convolution", conv)),
            Op::GruGates => Some(("a gru_scan", |op| matches!(op, Op::GruScan))),
            Op::GruRecurGrad => Some(("a gru_scan_grad", |op| matches!(op, Op::GruScanGrad))),
            _ => None,
        }
    }

    /// True for ops that produce a scalar loss term.
    pub fn is_loss(&self) -> bool {
        matches!(
            self,
            Op::CrossEntropy
                | Op::SoftCrossEntropy
                | Op::KlDiv
                | Op::Mse
                | Op::Bce
                | Op::SumSquares
                | Op::MeanToSum { .. }
        )
    }

    /// For a loss that trains one input toward another, the index of that other input, its
    /// target: no gradient flows into it. Autodiff refuses a target that depends on a
    /// trainable parameter, and the checker reports one under the file's argument before
    /// that (most likely the arguments are swapped). `mse` is symmetric and has none.
    pub fn loss_target(&self) -> Option<usize> {
        match self {
            Op::CrossEntropy | Op::SoftCrossEntropy | Op::Bce => Some(1),
            Op::KlDiv => Some(0),
            _ => None,
        }
    }

    /// True for elementwise ops (candidates for fusion).
    pub fn is_elementwise(&self) -> bool {
        matches!(
            self,
            Op::Unary(_) | Op::Binary(_) | Op::UnaryGrad(_) | Op::Fused(_)
        )
    }
}

/// One operation and the value it defines.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub ty: Type,
    /// Where the value comes from, for people: the layer path (`conv1`, `encoder.dense2`), a
    /// gradient (`grad conv1.weight`) or empty. Used by the printer and by NaN diagnostics.
    pub label: String,
}

/// A named result of a graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// `output` (the model's output), `loss`, or `grad:<param path>` after autodiff.
    pub name: String,
    pub value: ValueId,
}

/// A dataflow graph: forward, loss, and after autodiff the backward pass.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Graph {
    /// What it is, for the printer: `model ConvNet`, `train ConvNet`.
    pub name: String,
    /// Whether dropout is active (training) or not (evaluation and inference).
    pub training: bool,
    pub params: Vec<Param>,
    pub nodes: Vec<Node>,
    pub outputs: Vec<Output>,
}

impl Graph {
    pub fn new(name: impl Into<String>, training: bool) -> Graph {
        Graph {
            name: name.into(),
            training,
            ..Default::default()
        }
    }

    pub fn node(&self, v: ValueId) -> &Node {
        &self.nodes[v.index()]
    }

    /// Every value, in order (a topological order: inputs come before their users).
    pub fn values(&self) -> impl Iterator<Item = ValueId> {
        (0..self.nodes.len() as u32).map(ValueId)
    }

    pub fn ty(&self, v: ValueId) -> &Type {
        &self.nodes[v.index()].ty
    }

    /// Appends a node whose type is inferred from its inputs ([`shape::infer`]).
    /// Sources (`Input`, `Param`, `Const`) and ops whose type cannot be inferred from their inputs
    /// (`Conv2dGradInput`, `AvgPoolGrad`, `EmbeddingGrad`, `Reshape`) need [`Graph::push_typed`].
    pub fn push(
        &mut self,
        op: Op,
        inputs: Vec<ValueId>,
        label: impl Into<String>,
    ) -> Result<ValueId, String> {
        let tys: Vec<&Type> = inputs.iter().map(|v| self.ty(*v)).collect();
        let ty = shape::infer(&op, &tys, &self.params)?;
        Ok(self.push_typed(op, inputs, ty, label))
    }

    /// Appends a node with a given type (checked later by [`verify`]).
    pub fn push_typed(
        &mut self,
        op: Op,
        inputs: Vec<ValueId>,
        ty: Type,
        label: impl Into<String>,
    ) -> ValueId {
        let id = ValueId(self.nodes.len() as u32);
        self.nodes.push(Node {
            op,
            inputs,
            ty,
            label: label.into(),
        });
        id
    }

    /// The fewest values a channel of a training graph's batch norm has per sample (H·W, or 1 on
    /// `[C]` vectors), if it has one: a batch must hold more than one value per channel.
    pub fn batch_norm_values_per_sample(&self) -> Option<usize> {
        self.nodes
            .iter()
            .filter(|n| matches!(n.op, Op::BatchStats { .. }))
            .filter_map(|n| n.inputs.first())
            .map(|&x| {
                let t = self.ty(x);
                t.per_sample() / t.dims.first().copied().unwrap_or(1).max(1)
            })
            .min()
    }

    /// Adds a parameter and a node reading it.
    pub fn add_param(&mut self, param: Param) -> ValueId {
        let id = ParamId(self.params.len() as u32);
        let ty = param.ty();
        let label = param.path.clone();
        self.params.push(param);
        self.push_typed(Op::Param(id), vec![], ty, label)
    }

    pub fn input(&mut self, name: &str, ty: Type) -> ValueId {
        self.push_typed(Op::Input { name: name.into() }, vec![], ty, name)
    }

    pub fn constant(&mut self, c: f32) -> ValueId {
        self.push_typed(Op::Const(c), vec![], Type::scalar(), "")
    }

    /// Whether `v` or a value it depends on is a node that `found` accepts.
    pub fn reaches(&self, v: ValueId, found: impl Fn(&Node) -> bool) -> bool {
        let mut seen = vec![false; self.nodes.len()];
        let mut stack = vec![v];
        while let Some(v) = stack.pop() {
            if std::mem::replace(&mut seen[v.index()], true) {
                continue;
            }
            let n = self.node(v);
            if found(n) {
                return true;
            }
            stack.extend(n.inputs.iter().copied());
        }
        false
    }

    /// A constant tensor of `dims` (unbatched), `c` in every element.
    pub fn filled(&mut self, c: f32, dims: Vec<usize>, label: &str) -> ValueId {
        self.push_typed(Op::Const(c), vec![], Type::f32(false, dims), label)
    }

    /// The value of a named output.
    pub fn output(&self, name: &str) -> Option<ValueId> {
        self.outputs
            .iter()
            .find(|o| o.name == name)
            .map(|o| o.value)
    }

    /// [`Graph::set_output`] for many outputs at once, in one pass over those already named
    /// (one at a time, autodiff's `grad:<path>` outputs compared every name with every other).
    pub fn set_outputs(&mut self, outputs: impl IntoIterator<Item = (String, ValueId)>) {
        let mut at: std::collections::HashMap<String, usize> = self
            .outputs
            .iter()
            .enumerate()
            .map(|(i, o)| (o.name.clone(), i))
            .collect();
        for (name, value) in outputs {
            match at.get(&name) {
                Some(&i) => self.outputs[i].value = value,
                None => {
                    at.insert(name.clone(), self.outputs.len());
                    self.outputs.push(Output { name, value });
                }
            }
        }
    }

    pub fn set_output(&mut self, name: &str, value: ValueId) {
        if let Some(o) = self.outputs.iter_mut().find(|o| o.name == name) {
            o.value = value;
        } else {
            self.outputs.push(Output {
                name: name.into(),
                value,
            });
        }
    }

    /// The graph's input nodes, in order.
    pub fn inputs(&self) -> Vec<(ValueId, &str)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match &n.op {
                Op::Input { name } => Some((ValueId(i as u32), name.as_str())),
                _ => None,
            })
            .collect()
    }

    /// The node reading parameter `p`, if any.
    pub fn param_node(&self, p: ParamId) -> Option<ValueId> {
        self.nodes
            .iter()
            .position(|n| n.op == Op::Param(p))
            .map(|i| ValueId(i as u32))
    }

    pub fn param_by_path(&self, path: &str) -> Option<ParamId> {
        self.params
            .iter()
            .position(|p| p.path == path)
            .map(|i| ParamId(i as u32))
    }

    /// Number of trainable (not frozen) scalar parameters, and of all.
    pub fn param_counts(&self) -> (usize, usize) {
        // Buffers are not parameters (PyTorch's `parameters()` leaves them out).
        let all = self
            .params
            .iter()
            .filter(|p| !p.is_buffer())
            .map(Param::numel)
            .sum();
        let trainable = self
            .params
            .iter()
            .filter(|p| !p.frozen)
            .map(Param::numel)
            .sum();
        (trainable, all)
    }

    /// Users of each value.
    pub fn users(&self) -> Vec<Vec<ValueId>> {
        let mut users = vec![Vec::new(); self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for v in &n.inputs {
                users[v.index()].push(ValueId(i as u32));
            }
        }
        users
    }
}

/// Whether the dropout layer numbered `salt` keeps element `index` (flat index into the step's
/// whole batched tensor: element `i` of a part that starts at sample `first` is
/// `first · per_sample + i`) at `step`. The interpreter and the JIT both implement exactly this
/// hash (splitmix64 finalizer), so a `DropoutGrad` recomputes the forward mask and the two back
/// ends agree bit for bit.
pub fn dropout_keep(seed: u64, step: u64, salt: u32, index: u64, p: f32) -> bool {
    let mut x = dropout_mix(seed, step, salt) ^ index;
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    let u = (x >> 40) as f32 / (1u32 << 24) as f32;
    u >= p
}

/// The part of [`dropout_keep`]'s hash that is the same for every element of a step.
pub fn dropout_mix(seed: u64, step: u64, salt: u32) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ step.wrapping_mul(0xBF58_476D_1CE4_E5B9)
        ^ (salt as u64).wrapping_mul(0x94D0_49BB_1331_11EB)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Setting outputs at once is setting them one by one: a name already there takes the new
    /// value in its place, a new one is appended, and a name given twice keeps the last.
    #[test]
    fn set_outputs_is_set_output_in_turn() {
        let mut g = Graph::new("g", true);
        let v: Vec<ValueId> = (0..4)
            .map(|i| g.input(&format!("x{i}"), Type::scalar()))
            .collect();
        g.set_output("loss", v[0]);
        g.set_output("output", v[1]);
        let mut one_by_one = g.clone();
        let new = [("output", v[2]), ("grad:a", v[3]), ("grad:a", v[2])];
        for (name, value) in new {
            one_by_one.set_output(name, value);
        }
        g.set_outputs(new.map(|(n, v)| (n.to_string(), v)));
        let names = |g: &Graph| -> Vec<(String, ValueId)> {
            g.outputs
                .iter()
                .map(|o| (o.name.clone(), o.value))
                .collect()
        };
        assert_eq!(names(&g), names(&one_by_one));
        assert_eq!(g.output("output"), Some(v[2]));
        assert_eq!(g.output("grad:a"), Some(v[2]));
    }
}
