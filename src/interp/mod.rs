//! The reference interpreter: every op of [`crate::ir::Op`] as plain Rust loops over `f64`.
//!
//! It is the oracle the JIT is tested against and the numeric side of gradient checks, so each
//! kernel is the most direct transcription of the op's documented semantics, one family a file.
//! i32 values (labels, token ids) are carried as `f64` holding whole numbers.

mod conv;
mod copy;
mod dense;
mod elementwise;
mod executor;
mod gru;
mod loss;
mod lstm;
mod norm;
mod seq;
mod special;

pub use elementwise::unary_fn;
pub use special::{erf, erfc};

pub use executor::Interpreter;

use crate::exec::StepCtx;
use crate::ir::verify::verify;
use crate::ir::{Chain, Epilogue, EpilogueLoss, Graph, Node, Op};

/// Evaluates every node of `g` for one batch and returns all values, indexed by node.
///
/// `inputs` follow [`Graph::inputs`], `params` follow `g.params`; each is the row-major full
/// tensor (i32 inputs as whole numbers). The graph is verified first, so kernels may rely on
/// consistent shapes; the ops whose type is given rather than inferred are checked by their kernel.
pub fn eval(
    g: &Graph,
    batch: usize,
    inputs: &[Vec<f64>],
    params: &[Vec<f64>],
    ctx: StepCtx,
) -> Result<Vec<Vec<f64>>, String> {
    verify(g).map_err(|errs| format!("invalid graph: {}", errs.join("; ")))?;
    if batch == 0 {
        return Err("the batch size must be at least 1".into());
    }
    let input_nodes = g.inputs();
    if inputs.len() != input_nodes.len() {
        return Err(format!(
            "the graph has {} inputs, {} were given",
            input_nodes.len(),
            inputs.len()
        ));
    }
    if params.len() != g.params.len() {
        return Err(format!(
            "the graph has {} parameters, {} were given",
            g.params.len(),
            params.len()
        ));
    }
    for (p, v) in g.params.iter().zip(params) {
        if v.len() != p.numel() {
            return Err(format!(
                "parameter {} has {} elements, expected {}",
                p.path,
                v.len(),
                p.numel()
            ));
        }
    }
    let mut vals: Vec<Vec<f64>> = Vec::with_capacity(g.nodes.len());
    let mut next_input = 0;
    for (i, n) in g.nodes.iter().enumerate() {
        let value = match &n.op {
            Op::Input { name } => {
                let v = &inputs[next_input];
                next_input += 1;
                if v.len() != n.ty.numel(batch) {
                    return Err(format!(
                        "input {name} has {} elements, expected {} ({})",
                        v.len(),
                        n.ty.numel(batch),
                        n.ty
                    ));
                }
                v.clone()
            }
            Op::Param(p) => params
                .get(p.index())
                .ok_or_else(|| format!("%{i} reads a missing parameter #{}", p.0))?
                .clone(),
            _ => eval_node(g, n, batch, &vals, ctx).map_err(|e| located(i, n, &e))?,
        };
        if value.len() != n.ty.numel(batch) {
            let e = format!("produced {} elements for type {}", value.len(), n.ty);
            return Err(located(i, n, &e));
        }
        vals.push(value);
    }
    Ok(vals)
}

fn located(i: usize, n: &Node, e: &str) -> String {
    let label = if n.label.is_empty() {
        String::new()
    } else {
        format!(" ; {}", n.label)
    };
    format!("%{i} ({}{label}): {e}", n.op.name())
}

/// One computed (non-source) node, given the values of all earlier nodes.
fn eval_node(
    g: &Graph,
    n: &Node,
    batch: usize,
    vals: &[Vec<f64>],
    ctx: StepCtx,
) -> Result<Vec<f64>, String> {
    let x = |k: usize| -> &[f64] { &vals[n.inputs[k].index()] };
    let shape = |k: usize| g.ty(n.inputs[k]).shape(batch);
    let scalar = |k: usize| g.ty(n.inputs[k]).is_scalar();
    let last = |k: usize| g.ty(n.inputs[k]).last();
    let out_shape = n.ty.shape(batch);
    Ok(match &n.op {
        Op::Input { .. } | Op::Param(_) => unreachable!("sources are read in eval"),
        Op::Const(c) => vec![*c as f64; n.ty.numel(batch)],
        Op::Unary(u) => elementwise::unary(*u, x(0)),
        Op::Binary(b) => elementwise::binary(*b, x(0), scalar(0), x(1), scalar(1)),
        Op::UnaryGrad(u) => elementwise::unary_grad(*u, x(0), x(1)),
        Op::MatMul { ta, tb } => {
            dense::matmul(*ta, *tb, x(0), last(0), x(1), &g.ty(n.inputs[1]).dims)?
        }
        Op::BiasAdd { axis } => dense::bias_add(x(0), &shape(0), *axis, x(1)),
        Op::Fused(c) => chain(c, x(0).to_vec(), &shape(0), || x(1)),
        Op::WithEpilogue { producer, epi } => {
            // The product's type: the node's, but for a pooling epilogue's, before the pooling.
            let ty = match epi {
                Epilogue::Pool(..) => {
                    let ins = [g.ty(n.inputs[0]), g.ty(n.inputs[1])];
                    crate::ir::shape::infer(&producer.op(), &ins, &g.params)?
                }
                _ => n.ty.clone(),
            };
            let p_shape = ty.shape(batch);
            let k = producer.arity();
            let product = Node {
                op: producer.op(),
                inputs: n.inputs[..k].to_vec(),
                ty,
                label: n.label.clone(),
            };
            let p = eval_node(g, &product, batch, vals, ctx)?;
            match epi {
                Epilogue::Chain(c) => chain(c, p, &out_shape, || x(k)),
                Epilogue::Grad(u) => elementwise::unary_grad(*u, x(k), &p),
                Epilogue::Loss(l) => chain(&l.chain, p, &out_shape, || x(k)),
                Epilogue::Pool(c, w) => {
                    let v = chain(c, p, &p_shape, || x(k));
                    conv::max_pool(w, &v, &p_shape, &out_shape)
                }
            }
        }
        Op::UnpoolBiasGrad => {
            // dz of the node read, from its inputs, summed as a bias gradient.
            let fused = g.node(n.inputs[0]);
            let Op::Conv2dGradWeightUnpool { pool, act, .. } = &fused.op else {
                return Err(
                    "unpool_bias_grad reads a node that is no conv2d_grad_weight_unpool".into(),
                );
            };
            let [_, y, dp] = fused.inputs[..] else {
                return Err("conv2d_grad_weight_unpool takes three inputs".into());
            };
            let (ys, ps) = (g.ty(y).shape(batch), g.ty(dp).shape(batch));
            let (y, dp) = (&vals[y.index()], &vals[dp.index()]);
            dense::bias_grad(&unpool_grad(pool, *act, (y, &ys), (dp, &ps)), &ys, 1)
        }
        Op::EpilogueGrad => {
            // The loss gradient of the node read, from its value and target, as the separate
            // ops would compute it.
            let fused = g.node(n.inputs[0]);
            let Op::WithEpilogue {
                epi: Epilogue::Loss(l),
                ..
            } = &fused.op
            else {
                return Err("epilogue_grad reads a node without a loss epilogue".into());
            };
            let v = x(0);
            let target = fused.inputs.last().map_or(&[][..], |t| &vals[t.index()]);
            // A summed loss's upstream gradient is that of its mean times the N terms the
            // gradient divides by: the elements, or the rows.
            let terms = match l.loss {
                EpilogueLoss::CrossEntropy => v.len() / last(0).max(1),
                EpilogueLoss::Mse => v.len(),
            };
            let dl = l.dl() as f64 * if l.summed { terms as f64 } else { 1.0 };
            let d = match l.loss {
                EpilogueLoss::CrossEntropy => loss::cross_entropy_grad(v, target, last(0), dl)?,
                EpilogueLoss::Mse => loss::mse_grad(v, target, dl),
            };
            match l.through {
                Some(u) => elementwise::unary_grad(u, v, &d),
                None => d,
            }
        }
        Op::BiasGrad { axis } => dense::bias_grad(x(0), &shape(0), *axis),
        Op::Conv2d(w) => conv::conv2d(w, x(0), &shape(0), x(1), &shape(1), &out_shape),
        Op::Conv2dGradInput(w) => {
            conv::conv2d_grad_input(w, x(0), &shape(0), x(1), &shape(1), &out_shape)?
        }
        Op::Conv2dGradWeight(w) => {
            conv::conv2d_grad_weight(w, x(0), &shape(0), x(1), &shape(1), &out_shape)
        }
        Op::Conv2dGradWeightUnpool { conv, pool, act } => {
            let dz = unpool_grad(pool, *act, (x(1), &shape(1)), (x(2), &shape(2)));
            conv::conv2d_grad_weight(conv, x(0), &shape(0), &dz, &shape(1), &out_shape)
        }
        Op::MaxPool(w) | Op::PoolBeside(w) => conv::max_pool(w, x(0), &shape(0), &out_shape),
        Op::MaxPoolGrad(w) => conv::max_pool_grad(w, x(0), &shape(0), x(1), &shape(1)),
        Op::AvgPool(w) => conv::avg_pool(w, x(0), &shape(0), &out_shape),
        Op::AvgPoolGrad(w) => conv::avg_pool_grad(w, x(0), &shape(0), &out_shape)?,
        Op::GlobalMaxPool => conv::global_max_pool(x(0), &shape(0)),
        Op::GlobalMaxPoolGrad => conv::global_max_pool_grad(x(0), &shape(0), x(1)),
        Op::GlobalAvgPool => conv::global_avg_pool(x(0), &shape(0)),
        Op::GlobalAvgPoolGrad => conv::global_avg_pool_grad(x(0), &shape(0), &out_shape)?,
        Op::Reshape => x(0).to_vec(),
        Op::Concat { axis } => {
            let parts: Vec<(&[f64], &crate::ir::Type)> = (0..n.inputs.len())
                .map(|k| (x(k), g.ty(n.inputs[k])))
                .collect();
            copy::concat(&parts, *axis, batch)
        }
        Op::Slice { axis, start, len } => {
            copy::slice(x(0), g.ty(n.inputs[0]), *axis, (*start, *len), batch)
        }
        Op::Reverse { axis } => copy::reverse(x(0), g.ty(n.inputs[0]), *axis, batch),
        Op::Embedding => seq::embedding(x(0), x(1), &shape(1))?,
        Op::EmbeddingGrad => seq::embedding_grad(x(0), x(1), &out_shape)?,
        Op::OneHot { n } => seq::one_hot(x(0), *n),
        Op::RnnScan { act } => seq::rnn_scan(*act, x(0), &shape(0), x(1)),
        Op::RnnScanGrad { act } => seq::rnn_scan_grad(*act, x(0), &shape(0), x(1), x(2)),
        Op::TimeShift => seq::time_shift(x(0), &shape(0)),
        Op::GruScan => gru::gru_scan(x(0), &shape(0), x(1), x(2)).0,
        Op::GruScanGrad => gru::gru_scan_grad(x(0), &shape(0), x(1), x(2), x(3)).0,
        Op::GruGates | Op::GruRecurGrad => {
            // The second result of the node read, recomputed from its inputs.
            let scan = g.node(n.inputs[0]);
            let ins: Vec<&[f64]> = scan.inputs.iter().map(|v| &vals[v.index()][..]).collect();
            let s0 = g.ty(scan.inputs[0]).shape(batch);
            match (&n.op, &scan.op, &ins[..]) {
                (Op::GruGates, Op::GruScan, [xp, w, b]) => gru::gru_scan(xp, &s0, w, b).1,
                (Op::GruRecurGrad, Op::GruScanGrad, [hs, gates, w, dh]) => {
                    gru::gru_scan_grad(hs, &s0, gates, w, dh).1
                }
                _ => return Err(format!("{} reads no node that writes it", n.op.name())),
            }
        }
        Op::LstmScan => lstm::lstm_scan(x(0), &shape(0), x(1)),
        Op::Lstm => {
            let s = lstm::lstm_scan(x(0), &shape(0), x(1));
            lstm::lstm_hidden(&s, &[shape(0)[0], shape(0)[1], shape(0)[2] / 4 * 6])
        }
        Op::LstmHidden => lstm::lstm_hidden(x(0), &shape(0)),
        Op::LstmScanGrad => lstm::lstm_scan_grad(x(0), &shape(0), x(1), x(2)),
        Op::Dropout { p, salt } | Op::DropoutGrad { p, salt } => {
            let first = if n.ty.batched {
                ctx.first * n.ty.per_sample() as u64
            } else {
                0
            };
            norm::dropout(x(0), *p, *salt, ctx, first)
        }
        Op::LayerNorm { eps } => norm::layer_norm(x(0), x(1), x(2), *eps),
        Op::LayerNormGrad { eps } => norm::layer_norm_grad(x(0), x(1), x(2), *eps),
        Op::LayerNormWeightGrad { eps } => norm::layer_norm_weight_grad(x(0), x(1), last(0), *eps),
        Op::BatchNorm { eps } => norm::batch_norm(x(0), &shape(0), x(1), [x(2), x(3)], *eps),
        Op::BatchNormEval { eps } => {
            norm::batch_norm_eval(x(0), &shape(0), [x(1), x(2), x(3), x(4)], *eps)
        }
        Op::BatchNormGrad { eps } => {
            norm::batch_norm_grad(x(0), &shape(0), [x(1), x(2), x(3)], [x(4), x(5)], *eps)
        }
        Op::BatchNormEvalGrad { eps } => {
            norm::batch_norm_eval_grad(x(0), &shape(0), x(1), x(2), *eps)
        }
        Op::BatchNormWeightGrad { eps } => {
            norm::batch_norm_weight_grad(x(0), &shape(0), x(1), x(2), *eps)
        }
        Op::BatchStats { .. } => norm::batch_stats(x(0), &shape(0)),
        Op::Softmax => norm::softmax(x(0), last(0)),
        Op::LogSoftmax => norm::log_softmax(x(0), last(0)),
        Op::SoftmaxGrad => norm::softmax_grad(x(0), x(1), last(0)),
        Op::LogSoftmaxGrad => norm::log_softmax_grad(x(0), x(1), last(0)),
        Op::CrossEntropy => vec![loss::cross_entropy(x(0), x(1), last(0))?],
        Op::CrossEntropyGrad => loss::cross_entropy_grad(x(0), x(1), last(0), x(2)[0])?,
        Op::SoftCrossEntropy => vec![loss::soft_cross_entropy(x(0), x(1), last(0))],
        Op::SoftCrossEntropyGrad => loss::soft_cross_entropy_grad(x(0), x(1), last(0), x(2)[0]),
        Op::KlDiv => vec![loss::kl_div(x(0), x(1), last(0))],
        Op::KlDivGrad => loss::kl_div_grad(x(0), x(1), last(0), x(2)[0]),
        Op::Mse => vec![loss::mse(x(0), x(1))],
        Op::MseGrad => loss::mse_grad(x(0), x(1), x(2)[0]),
        Op::Bce => vec![loss::bce(x(0), x(1))],
        Op::BceGrad => loss::bce_grad(x(0), x(1), x(2)[0]),
        Op::SumSquares => vec![x(0).iter().map(|v| v * v).sum()],
        Op::MeanToSum { per } => vec![x(0)[0] * (x(1).len() / per) as f64],
    })
}

/// An [`Op::Fused`] chain on `x` (of full shape `shape`); `bias` gives the bias when it has one.
fn chain<'a>(
    c: &Chain,
    x: Vec<f64>,
    shape: &[usize],
    bias: impl FnOnce() -> &'a [f64],
) -> Vec<f64> {
    let mut v = match c.bias {
        Some(axis) => dense::bias_add(&x, shape, axis, bias()),
        None => x,
    };
    for &u in &c.acts {
        v = elementwise::unary(u, &v);
    }
    v
}

/// The gradient `dz` of a convolution's output that [`Op::Conv2dGradWeightUnpool`] and its
/// [`Op::UnpoolBiasGrad`] sum: the pooled gradient `dp` routed through the activation `y` by
/// max pooling `pool`, times the gradient of `act` at `y`.
fn unpool_grad(
    pool: &crate::ir::Window,
    act: Option<crate::ir::UnaryOp>,
    (y, ys): (&[f64], &[usize]),
    (dp, ps): (&[f64], &[usize]),
) -> Vec<f64> {
    let dz = conv::max_pool_grad(pool, y, ys, dp, ps);
    match act {
        Some(a) => elementwise::unary_grad(a, y, &dz),
        None => dz,
    }
}
