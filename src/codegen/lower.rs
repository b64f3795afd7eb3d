//! Lowering a graph to kernels: one step per node (a Cranelift function, or a GEMM or
//! convolution step, whose epilogue, when the node has one, is a second function of the module
//! called per block of the product), plus the storage plan of every value (caller's input or
//! parameter slice, an owned buffer, or an alias of another value for `Reshape`).

use super::epilogue::{self, EpiStep};
use super::glue::{ConvKind, ConvStep, Dim, MatMulStep};
use super::im2col::ConvGeom;
use super::kernel::{Kb, KernelFn, KernelModule, Listing};
use super::winograd::WinogradStep;
use super::{
    bias, conv, direct_conv, elementwise, embed, loss, pool, rnn, rowwise, small_matmul,
    CodegenError,
};
use crate::ir::{DType, Epilogue, EpilogueLoss, Graph, Node, Op, Producer};
use crate::opt::memplan::{self, Home, Plan};
use elementwise::Operand;

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
    /// parts go to the threads, and the results do not depend on how.
    Parts {
        k: usize,
        parts: usize,
        moves: Vec<(usize, usize)>,
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
    let mut km = KernelModule::new(listing)?;
    let mut storage = Vec::with_capacity(g.nodes.len());
    let mut scratch = Vec::new();
    let mut steps = Vec::new();
    let mut step_nodes = Vec::new();
    let inputs = g.inputs();
    for (i, n) in g.nodes.iter().enumerate() {
        for v in &n.inputs {
            if v.index() >= i {
                return Err(CodegenError::Graph(format!(
                    "%{i} uses %{} before it is defined",
                    v.0
                )));
            }
        }
        let st = match (plan.home[i], &n.op) {
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
        };
        if st == Storage::Owned && !matches!(n.op, Op::Const(_)) {
            check_dtypes(g, i, n)?;
            let ctx = ctx_slot(g);
            let scratch_base = ctx + 1;
            let h = header(g, i);
            emit(
                &mut km,
                &mut steps,
                g,
                i,
                n,
                ctx,
                scratch_base,
                &mut scratch,
                &h,
            )?;
            step_nodes.resize(steps.len(), i);
        }
        storage.push(st);
    }
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

/// Rejects graphs the verifier would reject where a kernel relies on it: f32 where f32 is read.
fn check_dtypes(g: &Graph, i: usize, n: &Node) -> Result<(), CodegenError> {
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

#[allow(clippy::too_many_arguments)]
fn emit(
    km: &mut KernelModule,
    steps: &mut Vec<Step>,
    g: &Graph,
    i: usize,
    n: &Node,
    ctx: usize,
    scratch_base: usize,
    scratch: &mut Vec<Scratch>,
    header: &str,
) -> Result<(), CodegenError> {
    let ins: Vec<usize> = n.inputs.iter().map(|v| v.index()).collect();
    let ity = |k: usize| g.ty(n.inputs[k]).clone();
    let ty = n.ty.clone();
    let arity = |want: usize| -> Result<(), CodegenError> {
        if ins.len() == want {
            Ok(())
        } else {
            Err(CodegenError::Graph(format!(
                "%{i} ({}) has {} inputs, expected {want}",
                n.op.name(),
                ins.len()
            )))
        }
    };
    let one = |km: &mut KernelModule, f: &mut dyn FnMut(&mut Kb)| -> Result<Step, CodegenError> {
        Ok(Step::Kernel {
            k: km.kernel(header, |kb| f(kb))?,
            rows: None,
        })
    };
    // Kernels over the channels of one image, for batch 1 (see [`RowSplit::channels`]).
    let mut channels = Vec::new();
    let step = match &n.op {
        Op::Input { .. } | Op::Param(_) | Op::Const(_) | Op::Reshape => return Ok(()),
        // A second result (`Op::second_result_of`) is written by the step of the node it reads.
        Op::EpilogueGrad | Op::UnpoolBiasGrad | Op::PoolBeside(_) => return Ok(()),
        Op::Unary(u) => {
            arity(1)?;
            let u = *u;
            one(km, &mut |kb| {
                elementwise::map(
                    kb,
                    &ty,
                    i,
                    &[Operand {
                        slot: ins[0],
                        scalar: false,
                    }],
                    &|kb, v, lane| elementwise::unary(kb, u, v[0], lane),
                )
            })
        }
        Op::UnaryGrad(u) => {
            arity(2)?;
            let u = *u;
            let ops = [
                Operand {
                    slot: ins[0],
                    scalar: false,
                },
                Operand {
                    slot: ins[1],
                    scalar: false,
                },
            ];
            one(km, &mut |kb| {
                elementwise::map(kb, &ty, i, &ops, &|kb, v, lane| {
                    elementwise::unary_grad(kb, u, v[0], v[1], lane)
                })
            })
        }
        Op::Binary(b) => {
            arity(2)?;
            let b = *b;
            let ops = [
                Operand {
                    slot: ins[0],
                    scalar: ity(0).is_scalar() && !ty.is_scalar(),
                },
                Operand {
                    slot: ins[1],
                    scalar: ity(1).is_scalar() && !ty.is_scalar(),
                },
            ];
            one(km, &mut |kb| {
                elementwise::map(kb, &ty, i, &ops, &|kb, v, _| {
                    elementwise::binary(kb, b, v[0], v[1])
                })
            })
        }
        Op::Dropout { p } | Op::DropoutGrad { p } => {
            arity(1)?;
            let p = *p;
            one(km, &mut |kb| {
                elementwise::dropout(kb, &ty, i, ins[0], ctx, p)
            })
        }
        Op::MatMul { ta, tb } => {
            arity(2)?;
            let (m, n, k) = matmul_dims(*ta, *tb, &ity(0), &ity(1), &ty)?;
            let (ta, tb) = (*ta, *tb);
            if small_matmul::is_small(m, n, k) {
                one(km, &mut |kb| {
                    small_matmul::small_matmul(kb, ta, tb, m, n, k, i, ins[0], ins[1])
                })
            } else {
                km.note(&format!(
                    "{header}\n; gemm (packed f32x4 kernel) m={m} n={n} k={k} ta={ta} tb={tb}\n"
                ));
                Ok(Step::MatMul(MatMulStep {
                    m,
                    n,
                    k,
                    ta,
                    tb,
                    a: ins[0],
                    b: ins[1],
                    c: i,
                    epi: None,
                }))
            }
        }
        Op::WithEpilogue { producer, epi } => {
            arity(2 + epi.extra_inputs())?;
            let extra = &n.inputs[2..];
            // A loss epilogue's second result, if anything reads it.
            let grad = second_result(g, i, |op| matches!(op, Op::EpilogueGrad));
            if let (Producer::MaxPoolGrad(w), Epilogue::Grad(op)) = (*producer, epi) {
                // One kernel: the gradient routed and the activation's gradient applied to
                // each element as it is written.
                let (x, y) = (ity(0), ity(1));
                let epi = pool::PoolEpi {
                    op: *op,
                    aux: ins[2],
                };
                one(km, &mut |kb| {
                    pool::max_pool(kb, &w, &x, &y, i, &ins, true, Some(epi))
                })
            } else {
                if let Producer::MatMul { ta, tb } = *producer {
                    let (m, nn, k) = matmul_dims(ta, tb, &ity(0), &ity(1), &ty)?;
                    if small_matmul::is_small(m, nn, k) {
                        let body = &mut |kb: &mut Kb| {
                            let ab = (ins[0], ins[1]);
                            let out = (&ty, grad);
                            epilogue::small_matmul(kb, ta, tb, (m, nn, k), i, ab, epi, extra, out)
                        };
                        return push_step(steps, one(km, body)?);
                    }
                }
                let conv_chain = match (*producer, epi) {
                    (Producer::Conv2d(w), Epilogue::Chain(c)) => Some((w, c, false)),
                    (Producer::Conv2d(w), Epilogue::Pool(c, _)) => Some((w, c, true)),
                    _ => None,
                };
                if let Some((w, chain, pooled)) = conv_chain {
                    if let Some(geom) = direct_geom(&ity(0), &w) {
                        let at = DirectAt {
                            slots: [ins[0], ins[1], i],
                            scratch_base,
                        };
                        let epi = Some((chain, ins.get(2).copied()));
                        let beside = pool_beside(g, i);
                        let step = direct_step(
                            km,
                            header,
                            &geom,
                            &ty,
                            at,
                            (epi, pooled),
                            beside,
                            scratch,
                        )?;
                        return push_step(steps, step);
                    }
                }
                if let Some((w, chain, pooled)) = conv_chain {
                    // On Winograd, the output transform applies the chain (and the pooling)
                    // before it stores.
                    let chain = Some((chain, ins.get(2).copied()));
                    let (op, (t0, t1)) = (producer.op(), (ity(0), ity(1)));
                    let conv_ty = if pooled {
                        crate::ir::shape::infer(&op, &[&t0, &t1], &g.params)
                            .map_err(CodegenError::Graph)?
                    } else {
                        ty.clone()
                    };
                    let step = conv::step(
                        km,
                        header,
                        &op,
                        &w,
                        &t0,
                        &t1,
                        &conv_ty,
                        i,
                        &ins,
                        scratch_base,
                        scratch,
                        chain,
                        pooled,
                    )?;
                    let applied = matches!(step, Step::Winograd(_));
                    push_step(steps, step)?;
                    if applied {
                        return Ok(());
                    }
                } else {
                    // The product's step, with the epilogue attached.
                    let product = Node {
                        op: producer.op(),
                        inputs: n.inputs[..2].to_vec(),
                        ty: ty.clone(),
                        label: n.label.clone(),
                    };
                    emit(
                        km,
                        steps,
                        g,
                        i,
                        &product,
                        ctx,
                        scratch_base,
                        scratch,
                        header,
                    )?;
                }
                let e = EpiStep::compile(km, header, *producer, epi, extra, (&ty, grad))?;
                if let (Some(Step::MatMul(s)), Some(_)) = (steps.last(), e.relu_mask()) {
                    if s.tb && !s.ta && !s.k.batched && s.k.per >= super::masked::MIN_K {
                        km.note(&format!(
                            "{header}\n; or, when at most {}% of relu's output is positive, only \
                             those entries (masked product)\n",
                            (super::masked::MAX_DENSITY * 100.0).round()
                        ));
                    }
                }
                match steps.last_mut() {
                    Some(Step::MatMul(s)) => s.epi = Some(e),
                    Some(Step::Conv(s)) => s.epi = Some(e),
                    Some(Step::Winograd(s)) if s.kind == ConvKind::Forward => s.epi = Some(e),
                    _ => {
                        return Err(CodegenError::Graph(format!(
                            "%{i}: {} did not compile to a GEMM step",
                            n.op.name()
                        )))
                    }
                }
                return Ok(());
            }
        }
        Op::BiasAdd { axis } => {
            arity(2)?;
            one(km, &mut |kb| {
                bias::bias_add(kb, &ty, *axis, i, ins[0], ins[1], &|_, v, _| v)
            })
        }
        Op::Fused(chain) => {
            arity(if chain.bias.is_some() { 2 } else { 1 })?;
            let acts = chain.acts.clone();
            let then = move |kb: &mut Kb, mut v: cranelift_codegen::ir::Value, lane| {
                for &u in &acts {
                    v = elementwise::unary(kb, u, v, lane);
                }
                v
            };
            match chain.bias {
                Some(axis) => one(km, &mut |kb| {
                    bias::bias_add(kb, &ty, axis, i, ins[0], ins[1], &then)
                }),
                None => one(km, &mut |kb| {
                    let x = Operand {
                        slot: ins[0],
                        scalar: false,
                    };
                    elementwise::map(kb, &ty, i, &[x], &|kb, v, lane| then(kb, v[0], lane))
                }),
            }
        }
        Op::BiasGrad { axis } => {
            arity(1)?;
            let x = ity(0);
            let (c, inner) = bias::channels(&x, *axis);
            if x.batched && (inner > 1 || c >= PARALLEL_BIAS_COLUMNS) {
                // A convolution's bias gradient or a wide layer's (a pass over all of dy):
                // parts of the channels on the threads.
                let parts = channel_parts(c, 8);
                let part = c / parts;
                let title = format!("{header}\n; by parts of {part} channels");
                let k = km.kernel(&title, |kb| bias::bias_grad(kb, &x, *axis, part, i, ins[0]))?;
                return push_step(
                    steps,
                    Step::Parts {
                        k,
                        parts,
                        moves: vec![(ins[0], 4 * part * inner), (i, 4 * part)],
                    },
                );
            }
            one(km, &mut |kb| bias::bias_grad(kb, &x, *axis, c, i, ins[0]))
        }
        Op::Conv2d(w) | Op::Conv2dGradInput(w) | Op::Conv2dGradWeight(w) => {
            arity(2)?;
            if let (Op::Conv2d(_), Some(geom)) = (&n.op, direct_geom(&ity(0), w)) {
                let at = DirectAt {
                    slots: [ins[0], ins[1], i],
                    scratch_base,
                };
                let beside = pool_beside(g, i);
                return push_step(
                    steps,
                    direct_step(km, header, &geom, &ty, at, (None, false), beside, scratch)?,
                );
            }
            if let (Op::Conv2dGradWeight(_), Some(geom)) = (&n.op, direct_geom(&ity(0), w)) {
                let (o, dy) = (ty.dims.first().copied().unwrap_or(0), ity(1));
                let (oh, ow) = geom.out_hw().map_err(CodegenError::Graph)?;
                let fits = dy.batched
                    && dy.dims == [o, oh, ow]
                    && ty.dims == [o, geom.c, w.kernel, w.kernel];
                if fits && direct_conv::grad_weight_applies(&geom) {
                    let pad = border_all(
                        km,
                        header,
                        &geom,
                        ins[0],
                        (scratch_base, scratch),
                        steps,
                        false,
                    )?;
                    let part = o / channel_parts(o, 8);
                    let title = format!(
                        "{header}\n; direct convolution weight gradient: sums, by parts of {part} channels"
                    );
                    let k = km.plain_kernel(&title, |kb| {
                        direct_conv::emit_grad_weight(kb, &geom, (o, part), [ins[1], i, pad])
                    })?;
                    let taps = geom.c * w.kernel * w.kernel;
                    return push_step(
                        steps,
                        Step::Parts {
                            k,
                            parts: o / part,
                            moves: vec![(ins[1], 4 * part * oh * ow), (i, 4 * part * taps)],
                        },
                    );
                }
            }
            conv::step(
                km,
                header,
                &n.op,
                w,
                &ity(0),
                &ity(1),
                &ty,
                i,
                &ins,
                scratch_base,
                scratch,
                None,
                false,
            )
        }
        Op::Conv2dGradWeightUnpool { conv, pool, act } => {
            arity(3)?;
            let (x, y) = (ity(0), ity(1));
            let geom = direct_geom(&x, conv)
                .filter(|g| unpool_grad_weight_applies(g, pool, &y, &ity(2), &ty))
                .ok_or_else(|| {
                    CodegenError::Graph(format!(
                        "{}: no kernel for {x} with {y} (see unpool_grad_weight_applies)",
                        n.op.name()
                    ))
                })?;
            let (o, oh, ow) = (y.dims[0], y.dims[1], y.dims[2]);
            // Rows of four pooled windows or more are summed as they are routed, from images
            // whose rows are split by column parity; shorter ones are routed into a plane of
            // `dz` per part first.
            let split = direct_conv::split_row(&geom).1;
            let pad = border_all(
                km,
                header,
                &geom,
                ins[0],
                (scratch_base, scratch),
                steps,
                split,
            )?;
            let part = o / channel_parts(o, 8);
            let parts = o / part;
            let dz = (!split).then(|| {
                add_scratch(
                    scratch,
                    scratch_base,
                    Scratch {
                        per: parts * oh * ow,
                        batched: false,
                        per_thread: false,
                    },
                )
            });
            // Its bias gradient, if anything reads it: a second result.
            let bias = second_result(g, i, |op| matches!(op, Op::UnpoolBiasGrad));
            let title = format!(
                "{header}\n; direct convolution weight gradient from the pooling's gradient: sums, by parts of {part} channels"
            );
            let k = km.plain_kernel(&title, |kb| {
                direct_conv::emit_grad_weight_unpool(
                    kb,
                    &geom,
                    (o, part),
                    *act,
                    [ins[1], ins[2], i, pad],
                    dz,
                    bias,
                )
            })?;
            let taps = geom.c * conv.kernel * conv.kernel;
            let mut moves = vec![
                (ins[1], 4 * part * oh * ow),
                (ins[2], 4 * part * (oh / 2) * (ow / 2)),
                (i, 4 * part * taps),
            ];
            moves.extend(dz.map(|dz| (dz, 4 * oh * ow)));
            moves.extend(bias.map(|b| (b, 4 * part)));
            return push_step(steps, Step::Parts { k, parts, moves });
        }
        Op::MaxPool(w) | Op::MaxPoolGrad(w) => {
            let grad = matches!(n.op, Op::MaxPoolGrad(_));
            arity(1 + grad as usize)?;
            let x = ity(0);
            let y = if grad { ity(1) } else { ty.clone() };
            // Up to 4 parts (on 2 threads the CNN's first pooling took 3.6 µs, not 6.4).
            let parts = match x.dims[..] {
                [c, _, _] if !grad => channel_parts(c, 4),
                _ => 1,
            };
            if let (true, &[c, _, _]) = (parts > 1, &x.dims[..]) {
                // One image (inference) in parts of its channels, each pooled on its own: the
                // convolution before it ran on the threads, and one core would read its
                // output, half of it from the other's cache.
                let part = |t: &crate::ir::Type| {
                    let mut t = t.clone();
                    t.dims[0] = c / parts;
                    t
                };
                let (xp, yp) = (part(&x), part(&y));
                let title = format!("{header}\n; max pooling, {} of {c} channels", c / parts);
                let k = km.kernel(&title, |kb| {
                    pool::max_pool(kb, w, &xp, &yp, i, &ins, false, None)
                })?;
                let moves = vec![(ins[0], 4 * xp.per_sample()), (i, 4 * yp.per_sample())];
                channels.push(ChannelSplit { k, parts, moves });
            }
            one(km, &mut |kb| {
                pool::max_pool(kb, w, &x, &y, i, &ins, grad, None)
            })
        }
        Op::AvgPool(w) | Op::AvgPoolGrad(w) => {
            arity(1)?;
            let grad = matches!(n.op, Op::AvgPoolGrad(_));
            let (x, y) = if grad {
                (ty.clone(), ity(0))
            } else {
                (ity(0), ty.clone())
            };
            // The gradient's type is given, not inferred: check it pools to dy's shape.
            let fits = x.batched
                && x.dims.len() == 3
                && y.dims.len() == 3
                && x.dims[0] == y.dims[0]
                && w.out_len(x.dims[1]) == Some(y.dims[1])
                && w.out_len(x.dims[2]) == Some(y.dims[2]);
            if !fits {
                return Err(CodegenError::Graph(format!(
                    "%{i}: avg_pool of {x} does not give {y}"
                )));
            }
            one(km, &mut |kb| pool::avg_pool(kb, w, &x, &y, i, &ins, grad))
        }
        Op::Embedding => {
            arity(2)?;
            let (ids, w) = (ity(0), ity(1));
            let (v, e) = table_dims(&w.dims, i)?;
            one(km, &mut |kb| embed::embedding(kb, &ids, v, e, i, &ins))
        }
        Op::EmbeddingGrad => {
            arity(2)?;
            let ids = ity(0);
            let (v, e) = table_dims(&ty.dims, i)?;
            let dy = ity(1);
            if ty.batched || dy.batched != ids.batched || dy.per_sample() != ids.per_sample() * e {
                return Err(CodegenError::Graph(format!(
                    "%{i}: embedding_grad of {dy} cannot give {ty}"
                )));
            }
            one(km, &mut |kb| embed::embedding_grad(kb, &ids, v, e, i, &ins))
        }
        Op::OneHot { n: classes } => {
            arity(1)?;
            let ids = ity(0);
            one(km, &mut |kb| embed::one_hot(kb, &ids, *classes, i, ins[0]))
        }
        Op::RnnScan { act } => {
            arity(2)?;
            let s = add_scratch(scratch, scratch_base, rnn::scratch(&n.op, &ty));
            Ok(Step::Kernel {
                k: km.plain_kernel(header, |kb| rnn::scan(kb, *act, &ty, i, &ins, s))?,
                rows: None,
            })
        }
        Op::RnnScanGrad { act } => {
            arity(3)?;
            let s = add_scratch(scratch, scratch_base, rnn::scratch(&n.op, &ty));
            Ok(Step::Kernel {
                k: km.plain_kernel(header, |kb| rnn::scan_grad(kb, *act, &ty, i, &ins, s))?,
                rows: None,
            })
        }
        Op::TimeShift => {
            arity(1)?;
            one(km, &mut |kb| rnn::time_shift(kb, &ty, i, ins[0]))
        }
        Op::Softmax | Op::LogSoftmax => {
            arity(1)?;
            one(km, &mut |kb| rowwise::normalize(kb, &n.op, &ty, i, &ins))
        }
        Op::SoftmaxGrad | Op::LogSoftmaxGrad => {
            arity(2)?;
            one(km, &mut |kb| rowwise::normalize(kb, &n.op, &ty, i, &ins))
        }
        Op::CrossEntropy | Op::SoftCrossEntropy | Op::KlDiv => {
            arity(2)?;
            let (x, y) = (ity(0), ity(1));
            // Each sample's sum (on the threads), then the samples' sums in order: the same
            // bits for any thread count. On one thread the char-RNN's loss (2,048 rows of 65
            // logits) took 320 µs of a 5 ms step.
            let s = Scratch {
                per: 2,
                batched: x.batched,
                per_thread: false,
            };
            let partial = add_scratch(scratch, scratch_base, s);
            let title = format!("{header}\n; each sample's sum");
            let k = km.kernel(&title, |kb| {
                rowwise::loss_per_sample(kb, &n.op, &x, partial, &ins)
            })?;
            let rows = (x.batched && y.batched).then(|| RowSplit {
                batched: vec![
                    (ins[0], x.per_sample()),
                    (ins[1], y.per_sample()),
                    (partial, 2),
                ],
                min_batch: PARALLEL_ELEMENTS.div_ceil(x.per_sample().max(1)).max(2),
                ..RowSplit::default()
            });
            push_step(steps, Step::Kernel { k, rows })?;
            one(km, &mut |kb| rowwise::loss_mean(kb, &x, partial, i))
        }
        Op::CrossEntropyGrad | Op::SoftCrossEntropyGrad | Op::KlDivGrad => {
            arity(3)?;
            one(km, &mut |kb| rowwise::loss_grad(kb, &n.op, &ty, i, &ins))
        }
        Op::Mse | Op::Bce => {
            arity(2)?;
            let x = ity(0);
            one(km, &mut |kb| loss::loss(kb, &n.op, &x, i, &ins))
        }
        Op::SumSquares => {
            arity(1)?;
            let x = ity(0);
            one(km, &mut |kb| loss::loss(kb, &n.op, &x, i, &ins))
        }
        Op::MseGrad | Op::BceGrad => {
            arity(3)?;
            one(km, &mut |kb| loss::loss_grad(kb, &n.op, &ty, i, &ins))
        }
    }?;
    let step = match step {
        Step::Kernel { k, rows: None } if row_parallel(&n.op) && ty.batched => {
            let mut split = RowSplit::default();
            for v in n
                .inputs
                .iter()
                .chain(std::iter::once(&crate::ir::ValueId(i as u32)))
            {
                let t = g.ty(*v);
                // Each slot once: a value read twice (`x · x`) is moved to the slice once.
                if t.batched && !split.batched.iter().any(|&(s, _)| s == v.index()) {
                    split.batched.push((v.index(), t.per_sample()));
                }
            }
            if let (Op::RnnScan { .. } | Op::RnnScanGrad { .. }, Some(s)) = (&n.op, scratch.last())
            {
                split
                    .per_thread
                    .push((scratch_base + scratch.len() - 1, s.per));
            }
            split.min_batch = match n.op {
                Op::RnnScan { .. } | Op::RnnScanGrad { .. } => 2,
                // The parts of one image are contiguous channels of the batch's only image.
                _ if !channels.is_empty() => 2,
                _ => PARALLEL_ELEMENTS.div_ceil(ty.per_sample().max(1)).max(2),
            };
            split.channels = channels;
            Step::Kernel {
                k,
                rows: Some(split),
            }
        }
        other => other,
    };
    push_step(steps, step)
}

/// The geometry of a forward convolution of images `x` that runs directly
/// ([`direct_conv::applies`]), or `None`.
pub fn direct_geom(x: &crate::ir::Type, win: &crate::ir::Window) -> Option<ConvGeom> {
    let [c, h, w] = x.dims[..] else { return None };
    let geom = ConvGeom { c, h, w, win: *win };
    (x.batched && direct_conv::applies(&geom)).then_some(geom)
}

/// The second result of node `i` of the kind `is` ([`Op::second_result_of`]), which `i`'s step
/// writes, if the graph has one.
fn second_result(g: &Graph, i: usize, is: fn(&Op) -> bool) -> Option<usize> {
    g.nodes
        .iter()
        .position(|m| is(&m.op) && m.inputs.first().is_some_and(|v| v.index() == i))
}

/// The [`crate::ir::Op::PoolBeside`] of node `i`, if any.
fn pool_beside(g: &Graph, i: usize) -> Option<usize> {
    second_result(g, i, |op| matches!(op, Op::PoolBeside(_)))
}

/// Whether a convolution of images `x` with window `conv` and output `y` runs directly and can
/// pool its output by `pool` besides ([`crate::ir::Op::PoolBeside`]): 2×2 windows of stride 2
/// tiling the output.
pub fn pool_beside_applies(
    x: &crate::ir::Type,
    conv: &crate::ir::Window,
    y: &crate::ir::Type,
    pool: &crate::ir::Window,
) -> bool {
    direct_geom(x, conv).is_some() && pools_in_pairs(pool, y)
}

/// Whether `pool` is the 2×2 max pooling of stride 2, without padding, whose windows tile the
/// planes of `y` (`B×C×H×W` with even `H` and `W`): the one the direct convolution's kernels
/// pool and route by pairs of rows ([`pool::max_pool_row`], [`pool::max_pool_grad_row`]).
fn pools_in_pairs(pool: &crate::ir::Window, y: &crate::ir::Type) -> bool {
    let pairs = crate::ir::Window {
        kernel: 2,
        stride: 2,
        pad: 0,
    };
    let tiles = |d: usize| d >= 2 && d.is_multiple_of(2);
    *pool == pairs && y.dims.len() == 3 && tiles(y.dims[1]) && tiles(y.dims[2])
}

/// Whether [`crate::ir::Op::Conv2dGradWeightUnpool`] has a kernel for a convolution of `geom`
/// (run directly, [`direct_conv::grad_weight_applies`]) whose output `y` is max-pooled by
/// `pool` into `dp`, 2×2 windows of stride 2 that tile it ([`pools_in_pairs`]), with the weight
/// gradient `dw`.
pub fn unpool_grad_weight_applies(
    geom: &ConvGeom,
    pool: &crate::ir::Window,
    y: &crate::ir::Type,
    dp: &crate::ir::Type,
    dw: &crate::ir::Type,
) -> bool {
    let Ok((oh, ow)) = geom.out_hw() else {
        return false;
    };
    let o = y.dims.first().copied().unwrap_or(0);
    direct_conv::grad_weight_applies(geom)
        && pools_in_pairs(pool, y)
        && y.batched
        && dp.batched
        && y.dims == [o, oh, ow]
        && dp.dims == [o, oh / 2, ow / 2]
        && dw.dims == [o, geom.c, geom.win.kernel, geom.win.kernel]
}

/// The first step of a direct weight gradient: every image of the batch (slot `x`) bordered
/// into a scratch of its own, split over the threads by images; that scratch's slot.
fn border_all(
    km: &mut KernelModule,
    header: &str,
    geom: &ConvGeom,
    x: usize,
    (scratch_base, scratch): (usize, &mut Vec<Scratch>),
    steps: &mut Vec<Step>,
    split: bool,
) -> Result<usize, CodegenError> {
    let s = direct_conv::scratch(geom, split);
    let pad = add_scratch(scratch, scratch_base, s);
    let title = format!("{header}\n; direct convolution weight gradient: borders");
    let border = km.kernel(&title, |kb| {
        direct_conv::emit_border_all(kb, geom, [x, pad], split)
    })?;
    push_step(
        steps,
        Step::Kernel {
            k: border,
            rows: Some(RowSplit {
                batched: vec![(x, geom.image_len()), (pad, s.per)],
                per_thread: Vec::new(),
                min_batch: 2,
                channels: Vec::new(),
            }),
        },
    )?;
    Ok(pad)
}

/// Table slots of a direct convolution: `x`, `w`, the output, and where scratch slots start.
struct DirectAt {
    slots: [usize; 3],
    scratch_base: usize,
}

/// A direct convolution ([`direct_conv`]) of output type `ty` with its epilogue (the chain and
/// the slot of its bias, and whether a 2×2 max pooling follows): one kernel, its images split
/// over the threads, each with its own bordered image; and for a batch smaller than the
/// threads (one image) kernels that compute a part of the output channels, one per part count
/// ([`direct_parts`]), each part with its own bordered image. Every output channel is summed
/// the same way in all, so the bits are the same.
#[allow(clippy::too_many_arguments)]
fn direct_step(
    km: &mut KernelModule,
    header: &str,
    geom: &ConvGeom,
    ty: &crate::ir::Type,
    at: DirectAt,
    (epi, pooled): (Option<(&crate::ir::Chain, Option<usize>)>, bool),
    beside: Option<usize>,
    scratch: &mut Vec<Scratch>,
) -> Result<Step, CodegenError> {
    let [x, w, out] = at.slots;
    let o = ty.dims[0];
    let pooled_plane = (ty.dims[1] / 2) * (ty.dims[2] / 2);
    let s = direct_conv::forward_scratch(geom, o, pooled);
    let pad = add_scratch(scratch, at.scratch_base, s);
    let pool_note = if pooled {
        ", max pooling 2×2 fused"
    } else if beside.is_some() {
        ", max pooled 2×2 besides"
    } else {
        ""
    };
    // Without the e-graph pass, like the GEMM's micro-kernel: it would re-elaborate the loads
    // and `fma`s of the unrolled taps chain by chain and spill the accumulators.
    let k = km.plain_kernel(
        &format!("{header}\n; direct convolution{pool_note}"),
        |kb| direct_conv::emit(kb, geom, (o, o), [x, w, out, pad], epi, pooled, beside),
    )?;
    let mut channels = Vec::new();
    for parts in direct_parts(o) {
        let part = o / parts;
        let all = Scratch {
            per: s.per * parts,
            batched: false,
            per_thread: false,
        };
        let pads = add_scratch(scratch, at.scratch_base, all);
        let header =
            format!("{header}\n; direct convolution{pool_note}, {part} of {o} output channels");
        let k = km.plain_kernel(&header, |kb| {
            direct_conv::emit(kb, geom, (part, o), [x, w, out, pads], epi, pooled, beside)
        })?;
        let taps = geom.c * geom.win.kernel * geom.win.kernel;
        let mut moves = vec![
            (w, 4 * part * taps),
            (out, 4 * part * ty.dims[1] * ty.dims[2]),
            (pads, 4 * s.per),
        ];
        if let Some((_, Some(bias))) = epi {
            moves.push((bias, 4 * part));
        }
        moves.extend(beside.map(|b| (b, 4 * part * pooled_plane)));
        channels.push(ChannelSplit { k, parts, moves });
    }
    Ok(Step::Kernel {
        k,
        rows: Some(RowSplit {
            batched: [(x, geom.image_len()), (out, ty.per_sample())]
                .into_iter()
                .chain(beside.map(|b| (b, o * pooled_plane)))
                .collect(),
            per_thread: vec![(pad, s.per)],
            min_batch: 2,
            channels,
        }),
    })
}

/// The part counts a direct convolution of `o` output channels is cut into at batch 1, one
/// kernel each, increasing: 2, 3 and 4 where the parts are whole tiles of the kernel's 4
/// channels (32 channels: 2 parts of 16 and 4 of 8), else the most up to 4 that divide `o`
/// (none when that is 1). On the MNIST CNN's first layer (one input channel, 32 outputs) at
/// batch 1 the image split left one thread idle. On two threads, 2 parts rather than 4 take
/// the whole batch-1 inference to about 0.99 of its time (0.95–1.00 in ten runs, 0.98–1.00
/// with the two orders swapped in four; AMD Zen 4, both compiled in one process and run
/// alternately in rounds of 250 calls): each part borders its own copy of the image.
fn direct_parts(o: usize) -> Vec<usize> {
    let whole: Vec<usize> = (2..=4)
        .filter(|p| o.is_multiple_of(*p) && (o / p).is_multiple_of(direct_conv::TILE))
        .collect();
    if whole.is_empty() {
        Some(channel_parts(o, 4))
            .filter(|&p| p > 1)
            .into_iter()
            .collect()
    } else {
        whole
    }
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

fn push_step(steps: &mut Vec<Step>, step: Step) -> Result<(), CodegenError> {
    steps.push(step);
    Ok(())
}

/// Ops whose kernels compute each batch element from that element alone (no reduction over
/// the batch, no dependence on the batch size or the flat index), so a slice of the batch can
/// run on its own thread with bit-identical results.
fn row_parallel(op: &Op) -> bool {
    matches!(
        op,
        Op::WithEpilogue {
            producer: Producer::MaxPoolGrad(_),
            ..
        } | Op::Unary(_)
            | Op::Binary(_)
            | Op::UnaryGrad(_)
            | Op::BiasAdd { .. }
            | Op::Fused(_)
            | Op::MaxPool(_)
            | Op::MaxPoolGrad(_)
            | Op::AvgPool(_)
            | Op::AvgPoolGrad(_)
            | Op::Embedding
            | Op::OneHot { .. }
            | Op::RnnScan { .. }
            | Op::RnnScanGrad { .. }
            | Op::TimeShift
            | Op::Softmax
            | Op::LogSoftmax
            | Op::SoftmaxGrad
            | Op::LogSoftmaxGrad
    )
}

fn table_dims(dims: &[usize], i: usize) -> Result<(usize, usize), CodegenError> {
    match dims {
        [v, e] => Ok((*v, *e)),
        _ => Err(CodegenError::Graph(format!(
            "%{i}: an embedding table must be [V, E]"
        ))),
    }
}

/// The matrix view `(m, n, k)` of a `MatMul` node (see [`Op::MatMul`]).
fn matmul_dims(
    ta: bool,
    tb: bool,
    a: &crate::ir::Type,
    b: &crate::ir::Type,
    out: &crate::ir::Type,
) -> Result<(Dim, usize, Dim), CodegenError> {
    let bad = || CodegenError::Graph(format!("matmul of {a} and {b} is not a matrix product"));
    if a.dims.is_empty() || b.dims.is_empty() || ta && tb {
        return Err(bad());
    }
    let n = out.last();
    let inner = a.last();
    let rows = Dim {
        per: a.per_sample() / inner.max(1),
        batched: a.batched,
    };
    if ta {
        // a: [R, M], b: [R, N], contracted over R.
        if b.batched != a.batched || b.per_sample() != rows.per * n {
            return Err(bad());
        }
        Ok((
            Dim {
                per: inner,
                batched: false,
            },
            n,
            rows,
        ))
    } else {
        if b.batched || b.per_sample() != inner * n {
            return Err(bad());
        }
        Ok((
            rows,
            n,
            Dim {
                per: inner,
                batched: false,
            },
        ))
    }
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

    #[test]
    fn direct_convolutions_are_cut_into_whole_tiles_where_they_can() {
        assert_eq!(direct_parts(32), [2, 4]);
        assert_eq!(direct_parts(48), [2, 3, 4]);
        assert_eq!(direct_parts(12), [3]);
        // No whole tiles: the most parts up to 4 that divide the channels, or none.
        assert_eq!(direct_parts(6), [3]);
        assert_eq!(direct_parts(5), Vec::<usize>::new());
    }
}
