//! Lowering a graph to kernels: one step per node (a Cranelift function, or a GEMM or
//! convolution step, whose epilogue, when the node has one, is a second function of the module
//! called per block of the product), plus the storage plan of every value (caller's input or
//! parameter slice, an owned buffer, or an alias of another value for `Reshape`).
//!
//! [`emit`] picks the lowering of each op; the submodules hold them by family, each named
//! after the module whose kernels it calls: [`elementwise`] (with the bias ops), [`matmul`],
//! [`epilogue`] (a product with what follows it fused), [`conv`], [`pool`], [`embed`],
//! [`rnn`] and [`loss`] (with the softmaxes).

mod conv;
mod copy;
mod elementwise;
mod embed;
mod epilogue;
mod gru;
mod loss;
mod lstm;
mod matmul;
mod pool;
mod rnn;

pub use conv::{direct_geom, pool_beside_applies, unpool_grad_weight_applies};

use super::glue::{ConvStep, MatMulStep};
use super::im2col::ConvGeom;
use super::kernel::{Kb, KernelFn, KernelModule, Listing};
use super::winograd::WinogradStep;
use super::CodegenError;
use crate::ir::{DType, Epilogue, EpilogueLoss, Graph, Node, Op, Producer, Type, ValueId};
use crate::opt::memplan::{self, Home, Plan};

/// Where a value lives at run time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Storage {
    /// Input number `k` of [`Graph::inputs`]: the caller's slice.
    Input(usize),
    /// Parameter `k`: the caller's slice.
    Param(usize),
    /// A buffer owned by the executor, sized for the batch.
    Owned,
    /// The same memory as an earlier value (`Reshape`).
    Alias(usize),
}

/// The slot whose memory value `slot` lives in: its own, or what a reshape shares.
pub fn owner(storage: &[Storage], slot: usize) -> usize {
    match storage[slot] {
        Storage::Alias(j) => j,
        _ => slot,
    }
}

/// Extra buffers some steps need (im2col columns, a transposed weight): `per` floats per batch
/// element when `batched`, else `per` floats, times the thread count when `per_thread`.
#[derive(Clone, Copy, Debug)]
pub struct Scratch {
    pub per: usize,
    pub batched: bool,
    pub per_thread: bool,
}

/// How a kernel whose rows (batch elements) are independent runs on a slice of the batch:
/// the same code with the batch size of the slice and these slots moved to its first row.
#[derive(Clone, Debug, Default)]
pub struct RowSplit {
    /// Batched slots and their elements (4 bytes each) per batch element.
    pub batched: Vec<(usize, usize)>,
    /// Scratch slots each thread needs its own part of, and the part's elements.
    pub per_thread: Vec<(usize, usize)>,
    /// The smallest batch worth splitting (thread start-up costs microseconds).
    pub min_batch: usize,
    /// Below `min_batch`, the same op cut by output channels instead, when it has such
    /// variants (by increasing part count; [`RowSplit::channels_for`] picks one): a batch of
    /// one image still runs on the threads.
    pub channels: Vec<ChannelSplit>,
}

impl RowSplit {
    /// The channel split for `threads` threads: the one of the most parts that are not more
    /// than the threads, else the one of the fewest. Each part costs a call and, for a direct
    /// convolution, a bordered copy of the image of its own, so parts beyond the threads only
    /// add those.
    pub fn channels_for(&self, threads: usize) -> Option<&ChannelSplit> {
        let fit = self.channels.iter().rev().find(|c| c.parts <= threads);
        fit.or(self.channels.first())
    }
}

/// A kernel computing a part of the output channels, run once per part with these slots
/// moved by the part's index times their bytes (as [`Step::Parts`]).
#[derive(Clone, Debug)]
pub struct ChannelSplit {
    pub k: usize,
    pub parts: usize,
    pub moves: Vec<(usize, usize)>,
}

/// Output elements below which a light kernel is not split across threads.
const PARALLEL_ELEMENTS: usize = 1 << 15;
/// Columns from which a dense layer's bias gradient (column sums of `dy`, one f32x4 load and
/// add per four values of a row) is cut into parts for the threads: the autoencoder's output
/// layer (784 columns, 128 rows) took 53–84 µs on one thread, 42–50 µs in 8 parts on two.
const PARALLEL_BIAS_COLUMNS: usize = 256;

/// One step of a compiled graph.
pub enum Step {
    /// A Cranelift kernel (index into [`Lowered::kernels`]), and how to split it over threads
    /// if its rows are independent.
    Kernel { k: usize, rows: Option<RowSplit> },
    /// A kernel whose work is cut into `parts` independent parts (output channels), each run
    /// with the whole batch and the `moves` slots advanced by its index times their bytes: the
    /// parts go to the threads from a batch of `min_batch` samples (one after the other on the
    /// calling thread below it), and the results do not depend on how.
    Parts {
        k: usize,
        parts: usize,
        moves: Vec<(usize, usize)>,
        min_batch: usize,
    },
    /// A matrix product on the JIT'd GEMM.
    MatMul(MatMulStep),
    /// A convolution on the JIT'd im2col/col2im and GEMM.
    Conv(ConvStep),
    /// A 3×3 stride-1 convolution on Winograd transforms (kernels of this module) and GEMM.
    Winograd(WinogradStep),
}

/// The compiled graph: steps in execution order, storage of every value, scratch buffers.
pub struct Lowered {
    pub steps: Vec<Step>,
    /// The node each step computes.
    pub step_nodes: Vec<usize>,
    pub kernels: Vec<KernelFn>,
    pub storage: Vec<Storage>,
    pub scratch: Vec<Scratch>,
    /// The code of every kernel; kept alive as long as the kernels are.
    pub modules: Vec<cranelift_jit::JITModule>,
    /// Where each value lives ([`memplan`]); `storage` follows it.
    pub plan: Plan,
    pub listing: String,
}

/// Table slot layout: one slot per node, then the step context, then the scratch buffers.
pub fn ctx_slot(g: &Graph) -> usize {
    g.nodes.len()
}

/// The header naming a node in listings: `; %7 = matmul %5, %6 : f32[B,10]  ; dense2`.
fn header(g: &Graph, i: usize) -> String {
    let n = &g.nodes[i];
    let args: Vec<String> = n.inputs.iter().map(|v| v.to_string()).collect();
    let label = if n.label.is_empty() {
        String::new()
    } else {
        format!("  ; {}", n.label)
    };
    format!(
        "; %{i} = {}{} {} : {}{label}",
        n.op.name(),
        n.op.attrs(),
        args.join(", "),
        n.ty
    )
}

/// `g` as the kernels compute it: with the pooling epilogues ([`crate::ir::Epilogue::Pool`])
/// they have no fused kernel for split back into a convolution and a max pooling. The fused
/// ones: 2×2 windows of stride 2 after a direct convolution or one on F(4×4, 3×3) Winograd.
pub fn kernel_graph(g: &Graph) -> std::borrow::Cow<'_, Graph> {
    let fused = |n: &crate::ir::Node| match &n.op {
        Op::WithEpilogue {
            producer: Producer::Conv2d(w),
            epi: Epilogue::Pool(_, p),
        } => {
            let x = g.ty(n.inputs[0]);
            let pairs = p.kernel == 2 && p.stride == 2 && p.pad == 0;
            let winograd = match x.dims[..] {
                [c, h, wd] if x.batched => {
                    let geom = ConvGeom {
                        c,
                        h,
                        w: wd,
                        win: *w,
                    };
                    super::winograd::fuses_pool(&geom, g.ty(n.inputs[1]).dims[0])
                }
                _ => false,
            };
            pairs && (winograd || direct_geom(x, w).is_some())
        }
        _ => true,
    };
    if g.nodes.iter().all(fused) {
        std::borrow::Cow::Borrowed(g)
    } else {
        std::borrow::Cow::Owned(crate::opt::pool_epilogue::unfuse_pools(g, fused))
    }
}

/// Compiles every node of `g` to its step, with each value where the memory plan puts it
/// (shared buffers, or one buffer per value when `keep_values`).
pub fn lower(g: &Graph, keep_values: bool, listing: Listing) -> Result<Lowered, CodegenError> {
    crate::ir::verify::verify(g).map_err(|errs| CodegenError::Graph(errs.join("; ")))?;
    let plan = if keep_values {
        memplan::unplanned(g)
    } else {
        memplan::plan(g)
    };
    let mut out = Built {
        km: KernelModule::new(listing)?,
        steps: Vec::new(),
        scratch: Vec::new(),
    };
    let mut storage = Vec::with_capacity(g.nodes.len());
    let mut step_nodes = Vec::new();
    let inputs = g.inputs();
    let seconds = second_results(g);
    for (i, n) in g.nodes.iter().enumerate() {
        for v in &n.inputs {
            if v.index() >= i {
                return Err(CodegenError::Graph(format!(
                    "%{i} uses %{} before it is defined",
                    v.0
                )));
            }
        }
        let st = storage_of(g, &inputs, plan.home[i], i)?;
        if st == Storage::Owned && !matches!(n.op, Op::Const(_)) {
            check_dtypes(g, i, n)?;
            let h = header(g, i);
            emit(&Cx::new(g, &seconds, i, n, &h), &mut out)?;
            step_nodes.resize(out.steps.len(), i);
        }
        storage.push(st);
    }
    let Built {
        km,
        mut steps,
        scratch,
    } = out;
    let (kernels, modules, listing) = km.finish()?;
    for step in &mut steps {
        if let Step::MatMul(MatMulStep { epi: Some(e), .. })
        | Step::Conv(ConvStep { epi: Some(e), .. })
        | Step::Winograd(WinogradStep { epi: Some(e), .. }) = step
        {
            e.resolve(&kernels);
        }
    }
    Ok(Lowered {
        steps,
        step_nodes,
        kernels,
        storage,
        scratch,
        modules,
        plan,
        listing,
    })
}

/// Where the value of node `i` lives, from its home in the memory plan: the caller's slice of
/// the input or parameter it is (`inputs` being [`Graph::inputs`]), an alias, or a buffer.
fn storage_of(
    g: &Graph,
    inputs: &[(crate::ir::ValueId, &str)],
    home: Home,
    i: usize,
) -> Result<Storage, CodegenError> {
    let n = &g.nodes[i];
    Ok(match (home, &n.op) {
        (Home::Caller, Op::Input { .. }) => {
            Storage::Input(inputs.iter().position(|(v, _)| v.index() == i).unwrap_or(0))
        }
        (Home::Caller, Op::Param(p)) if p.index() < g.params.len() => Storage::Param(p.index()),
        (Home::Caller, _) => {
            return Err(CodegenError::Graph(format!(
                "%{i} ({}) is neither an input nor a parameter of the graph",
                n.op.name()
            )))
        }
        (Home::Alias(j), _) => Storage::Alias(j),
        (Home::Buffer(_), _) => Storage::Owned,
    })
}

/// Rejects graphs the verifier would reject where a kernel relies on it: f32 where f32 is read.
fn check_dtypes(g: &Graph, i: usize, n: &Node) -> Result<(), CodegenError> {
    // A reversal copies bits: of ids (a bidirectional layer's look-up of reversed tokens) too.
    let ids = |v: ValueId| g.ty(v).dtype == DType::I32;
    if matches!(n.op, Op::Reverse { .. }) && ids(n.inputs[0]) && n.ty.dtype == DType::I32 {
        return Ok(());
    }
    let labels = n.inputs.len().saturating_sub(1);
    let int_inputs: &[usize] = match &n.op {
        Op::Embedding | Op::EmbeddingGrad | Op::OneHot { .. } => &[0],
        Op::CrossEntropy | Op::CrossEntropyGrad => &[1],
        Op::WithEpilogue {
            epi: Epilogue::Loss(l),
            ..
        } if l.loss == EpilogueLoss::CrossEntropy => std::slice::from_ref(&labels),
        _ => &[],
    };
    for (k, v) in n.inputs.iter().enumerate() {
        let want = if int_inputs.contains(&k) {
            DType::I32
        } else {
            DType::F32
        };
        if g.ty(*v).dtype != want {
            return Err(CodegenError::Graph(format!(
                "input {k} of %{i} ({}) must be {want}",
                n.op.name()
            )));
        }
    }
    if n.ty.dtype != DType::F32 {
        return Err(CodegenError::Graph(format!(
            "%{i} ({}) must produce f32",
            n.op.name()
        )));
    }
    Ok(())
}

/// The node being lowered, as the functions lowering its op read it.
struct Cx<'a> {
    g: &'a Graph,
    /// The second results of each node ([`second_results`]).
    seconds: &'a [Vec<usize>],
    /// The node's index, which is also its value's table slot.
    i: usize,
    n: &'a Node,
    /// The table slots of its inputs.
    ins: Vec<usize>,
    ty: &'a Type,
    /// The line naming it in listings ([`header`]), which titles its kernels.
    header: &'a str,
    /// The table slot of the step context ([`ctx_slot`]).
    ctx: usize,
    /// The table slot of the first scratch buffer ([`add_scratch`]).
    scratch_base: usize,
}

impl<'a> Cx<'a> {
    /// Node `i` of `g` (or what stands for it: `n`), titled `header`.
    fn new(
        g: &'a Graph,
        seconds: &'a [Vec<usize>],
        i: usize,
        n: &'a Node,
        header: &'a str,
    ) -> Cx<'a> {
        let ctx = ctx_slot(g);
        Cx {
            g,
            seconds,
            i,
            n,
            ins: n.inputs.iter().map(|v| v.index()).collect(),
            ty: &n.ty,
            header,
            ctx,
            scratch_base: ctx + 1,
        }
    }

    /// The type of input `k`.
    fn ity(&self, k: usize) -> Type {
        self.g.ty(self.n.inputs[k]).clone()
    }

    /// The node's second result of the kind `is` ([`Op::second_result_of`]), which its step
    /// writes too, if anything reads it.
    fn second_result(&self, is: fn(&Op) -> bool) -> Option<usize> {
        self.seconds[self.i]
            .iter()
            .copied()
            .find(|&m| is(&self.g.nodes[m].op))
    }

    /// An error unless the node has `want` inputs.
    fn arity(&self, want: usize) -> Result<(), CodegenError> {
        if self.ins.len() == want {
            Ok(())
        } else {
            Err(CodegenError::Graph(format!(
                "%{} ({}) has {} inputs, expected {want}",
                self.i,
                self.n.op.name(),
                self.ins.len()
            )))
        }
    }
}

/// What lowering has built so far: the kernels (in their module), the steps in order, and the
/// scratch buffers.
struct Built {
    km: KernelModule,
    steps: Vec<Step>,
    scratch: Vec<Scratch>,
}

impl Built {
    /// The step of one kernel, built by `body` and titled `header`, its rows not split (yet).
    fn kernel(&mut self, header: &str, body: impl FnOnce(&mut Kb)) -> Result<Step, CodegenError> {
        Ok(Step::Kernel {
            k: self.km.kernel(header, body)?,
            rows: None,
        })
    }
}

/// Adds the steps of one node to `out`: those of its op, the last one told how to split over
/// the threads when it is a kernel whose rows are independent ([`split_rows`]).
fn emit(cx: &Cx, out: &mut Built) -> Result<(), CodegenError> {
    // Kernels over the channels of one image, for batch 1 (see [`RowSplit::channels`]).
    let mut channels = Vec::new();
    let step = match &cx.n.op {
        Op::Input { .. } | Op::Param(_) | Op::Const(_) | Op::Reshape => return Ok(()),
        // A second result (`Op::second_result_of`) is written by the step of the node it reads.
        Op::EpilogueGrad
        | Op::UnpoolBiasGrad
        | Op::PoolBeside(_)
        | Op::GruGates
        | Op::GruRecurGrad => return Ok(()),
        Op::Unary(u) => elementwise::unary(cx, out, *u),
        Op::UnaryGrad(u) => elementwise::unary_grad(cx, out, *u),
        Op::Binary(b) => elementwise::binary(cx, out, *b),
        Op::Dropout { p, salt } | Op::DropoutGrad { p, salt } => {
            elementwise::dropout(cx, out, *p, *salt)
        }
        Op::BiasAdd { axis } => elementwise::bias_add(cx, out, *axis),
        Op::Fused(chain) => elementwise::fused(cx, out, chain),
        Op::BiasGrad { axis } => elementwise::bias_grad(cx, out, *axis),
        Op::MatMul { ta, tb } => matmul::matmul(cx, out, *ta, *tb),
        Op::WithEpilogue { producer, epi } => {
            match epilogue::with_epilogue(cx, out, *producer, epi)? {
                Some(step) => Ok(step),
                // Pushed already, the epilogue attached to it.
                None => return Ok(()),
            }
        }
        Op::Conv2d(w) | Op::Conv2dGradInput(w) | Op::Conv2dGradWeight(w) => {
            conv::conv2d(cx, out, w)
        }
        Op::Conv2dGradWeightUnpool { conv, pool, act } => {
            conv::grad_weight_unpool(cx, out, conv, pool, *act)
        }
        Op::MaxPool(w) | Op::MaxPoolGrad(w) => pool::max_pool(cx, out, w, &mut channels),
        Op::AvgPool(w) | Op::AvgPoolGrad(w) => pool::avg_pool(cx, out, w),
        Op::GlobalMaxPool | Op::GlobalMaxPoolGrad | Op::GlobalAvgPool | Op::GlobalAvgPoolGrad => {
            pool::global_pool(cx, out)
        }
        Op::Embedding => embed::embedding(cx, out),
        Op::EmbeddingGrad => embed::embedding_grad(cx, out),
        Op::OneHot { n: classes } => embed::one_hot(cx, out, *classes),
        Op::RnnScan { act } => rnn::scan(cx, out, *act),
        Op::RnnScanGrad { act } => rnn::scan_grad(cx, out, *act),
        Op::TimeShift => rnn::time_shift(cx, out),
        Op::Concat { axis } => copy::concat(cx, out, *axis),
        Op::Slice { axis, start, len } => copy::slice(cx, out, *axis, (*start, *len)),
        Op::Reverse { axis } => copy::reverse(cx, out, *axis),
        Op::GruScan => gru::scan(cx, out),
        Op::GruScanGrad => gru::scan_grad(cx, out),
        Op::LstmScan | Op::Lstm => lstm::scan(cx, out),
        Op::LstmScanGrad => lstm::scan_grad(cx, out),
        Op::LstmHidden => lstm::hidden(cx, out),
        Op::LayerNorm { eps } | Op::LayerNormGrad { eps } => loss::layer_norm(cx, out, *eps),
        Op::LayerNormWeightGrad { eps } => loss::layer_norm_weight_grad(cx, out, *eps),
        Op::BatchNormEval { eps } | Op::BatchNormEvalGrad { eps } => {
            loss::batch_norm_eval(cx, out, (&cx.n.op, *eps), &[])
        }
        Op::BatchNorm { .. }
        | Op::BatchNormGrad { .. }
        | Op::BatchNormWeightGrad { .. }
        | Op::BatchStats { .. } => loss::batch_norm(cx, out, &cx.n.op, &[]),
        Op::Softmax | Op::LogSoftmax => loss::softmax(cx, out),
        Op::SoftmaxGrad | Op::LogSoftmaxGrad => loss::softmax_grad(cx, out),
        Op::CrossEntropy | Op::SoftCrossEntropy | Op::KlDiv => loss::cross_entropy(cx, out),
        Op::CrossEntropyGrad | Op::SoftCrossEntropyGrad | Op::KlDivGrad => {
            loss::cross_entropy_grad(cx, out)
        }
        Op::Mse | Op::Bce => loss::mse_bce(cx, out),
        Op::SumSquares => loss::sum_squares(cx, out),
        Op::MeanToSum { per } => loss::mean_to_sum(cx, out, *per),
        Op::MseGrad | Op::BceGrad => loss::mse_bce_grad(cx, out),
    }?;
    let step = split_rows(cx, step, channels, &out.scratch);
    out.steps.push(step);
    Ok(())
}

/// `step`, when it is a kernel whose rows are independent ([`row_parallel`]) over a batched
/// value, with how to run it on slices of the batch ([`RowSplit`]): its batched slots, the
/// scratch each thread needs its own part of (an RNN scan's, the last buffer added), and the
/// `channels` kernels for a batch of one.
fn split_rows(cx: &Cx, step: Step, channels: Vec<ChannelSplit>, scratch: &[Scratch]) -> Step {
    let (g, i, n, ty) = (cx.g, cx.i, cx.n, cx.ty);
    match step {
        Step::Kernel { k, rows: None } if row_parallel(&n.op) && ty.batched => {
            let mut split = RowSplit::default();
            // The second results the step writes are sliced as its output is.
            let seconds: Vec<_> = cx.seconds[i]
                .iter()
                .map(|&m| crate::ir::ValueId(m as u32))
                .collect();
            for v in n
                .inputs
                .iter()
                .chain(std::iter::once(&crate::ir::ValueId(i as u32)))
                .chain(&seconds)
            {
                let t = g.ty(*v);
                // Each slot once: a value read twice (`x · x`) is moved to the slice once.
                if t.batched && !split.batched.iter().any(|&(s, _)| s == v.index()) {
                    split.batched.push((v.index(), t.per_sample()));
                }
            }
            // A recurrence: each thread walks its sequences with scratch of its own.
            let scan = matches!(
                n.op,
                Op::RnnScan { .. }
                    | Op::RnnScanGrad { .. }
                    | Op::GruScan
                    | Op::GruScanGrad
                    | Op::LstmScan
                    | Op::LstmScanGrad
                    | Op::Lstm
            );
            if let (true, Some(s)) = (scan, scratch.last()) {
                split
                    .per_thread
                    .push((cx.scratch_base + scratch.len() - 1, s.per));
            }
            // A scan splits any batch of two sequences or more, and so does a kernel with
            // parts over one image's channels (for the batch of one); other kernels a batch of
            // `PARALLEL_ELEMENTS` values.
            split.min_batch = if scan || !channels.is_empty() {
                2
            } else {
                PARALLEL_ELEMENTS.div_ceil(ty.per_sample().max(1)).max(2)
            };
            split.channels = channels;
            Step::Kernel {
                k,
                rows: Some(split),
            }
        }
        other => other,
    }
}

/// The second results ([`Op::second_result_of`]) of each node of `g`: the nodes that read it
/// as their first input and are written by its step.
fn second_results(g: &Graph) -> Vec<Vec<usize>> {
    let mut seconds = vec![Vec::new(); g.nodes.len()];
    for (m, n) in g.nodes.iter().enumerate() {
        if let (Some(_), Some(v)) = (n.op.second_result_of(), n.inputs.first()) {
            seconds[v.index()].push(m);
        }
    }
    seconds
}

/// Parts a kernel over `c` independent channels is cut into for the threads ([`Step::Parts`]):
/// the most, up to `most`, that divide them. Each channel is computed alone, so the cut changes
/// no bits.
pub fn channel_parts(c: usize, most: usize) -> usize {
    (1..=most).rev().find(|p| c.is_multiple_of(*p)).unwrap_or(1)
}

/// Appends `s` to the graph's scratch buffers, whose table slots start at `scratch_base`;
/// returns its slot.
pub fn add_scratch(scratch: &mut Vec<Scratch>, scratch_base: usize, s: Scratch) -> usize {
    scratch.push(s);
    scratch_base + scratch.len() - 1
}

/// Ops whose kernels compute each batch element from that element alone (no reduction over
/// the batch, no dependence on the batch size or the flat index), so a slice of the batch can
/// run on its own thread with bit-identical results.
fn row_parallel(op: &Op) -> bool {
    matches!(
        op,
        Op::WithEpilogue {
            producer: Producer::MaxPoolGrad(_) | Producer::BatchNormEval { .. },
            ..
        } | Op::Unary(_)
            | Op::Binary(_)
            | Op::UnaryGrad(_)
            | Op::BiasAdd { .. }
            | Op::BatchNormEval { .. }
            | Op::BatchNormEvalGrad { .. }
            | Op::Fused(_)
            | Op::MaxPool(_)
            | Op::MaxPoolGrad(_)
            | Op::AvgPool(_)
            | Op::AvgPoolGrad(_)
            | Op::GlobalMaxPool
            | Op::GlobalMaxPoolGrad
            | Op::GlobalAvgPool
            | Op::GlobalAvgPoolGrad
            | Op::Embedding
            | Op::OneHot { .. }
            | Op::RnnScan { .. }
            | Op::RnnScanGrad { .. }
            | Op::GruScan
            | Op::GruScanGrad
            | Op::TimeShift
            | Op::Concat { .. }
            | Op::Slice { .. }
            | Op::Reverse { .. }
            | Op::LstmScan
            | Op::Lstm
            | Op::LstmScanGrad
            | Op::LstmHidden
            | Op::Softmax
            | Op::LogSoftmax
            | Op::SoftmaxGrad
            | Op::LogSoftmaxGrad
            | Op::LayerNorm { .. }
            | Op::LayerNormGrad { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(parts: &[usize]) -> RowSplit {
        RowSplit {
            channels: parts
                .iter()
                .map(|&parts| ChannelSplit {
                    k: parts,
                    parts,
                    moves: Vec::new(),
                })
                .collect(),
            ..RowSplit::default()
        }
    }

    #[test]
    fn the_channel_split_has_as_many_parts_as_threads_allow() {
        let s = split(&[2, 4]);
        let parts = |threads| s.channels_for(threads).map(|c| c.parts);
        assert_eq!(parts(2), Some(2));
        assert_eq!(parts(3), Some(2));
        assert_eq!(parts(4), Some(4));
        assert_eq!(parts(16), Some(4));
        // Fewer threads than any split: the fewest parts.
        assert_eq!(split(&[3]).channels_for(2).map(|c| c.parts), Some(3));
        assert!(split(&[]).channels_for(2).is_none());
    }
}
