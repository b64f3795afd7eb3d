//! Type inference for every op: the single source of truth for shapes, used when nodes are built
//! (by the checker, autodiff and passes) and again by the verifier.

use super::{BinaryOp, Chain, DType, Epilogue, EpilogueLoss, Op, Param, Producer, Type, Window};

/// The result type of `op` applied to inputs of types `ins`, or a message saying what is wrong.
pub fn infer(op: &Op, ins: &[&Type], params: &[Param]) -> Result<Type, String> {
    let arity = |n: usize| takes(op, ins, n);
    let f32_in = |i: usize| f32_input(op, ins, i);
    let same = |a: &Type, b: &Type| same_types(op, a, b);
    match op {
        Op::Input { .. } | Op::Const(_) => {
            Err(format!("{} has no inputs to infer from", op.name()))
        }
        Op::Param(p) => params
            .get(p.index())
            .map(Param::ty)
            .ok_or_else(|| format!("no parameter #{}", p.0)),
        Op::Unary(_)
        | Op::Softmax
        | Op::LogSoftmax
        | Op::Dropout { .. }
        | Op::DropoutGrad { .. } => {
            arity(1)?;
            f32_in(0)?;
            Ok(ins[0].clone())
        }
        Op::Binary(b) => {
            arity(2)?;
            f32_in(0)?;
            f32_in(1)?;
            let (x, y) = (ins[0], ins[1]);
            if x == y || y.is_scalar() {
                Ok(x.clone())
            } else if x.is_scalar() {
                Ok(y.clone())
            } else {
                Err(format!(
                    "cannot {} {x} and {y}: shapes differ",
                    match b {
                        BinaryOp::Add => "add",
                        BinaryOp::Sub => "subtract",
                        BinaryOp::Mul => "multiply",
                        BinaryOp::Div => "divide",
                    }
                ))
            }
        }
        Op::LayerNorm { .. } | Op::LayerNormGrad { .. } => {
            arity(3)?;
            f32_in(0)?;
            let (x, w) = (ins[0], ins[1]);
            if x.dims.is_empty() {
                return Err(format!("{} needs rows, found {x}", op.name()));
            }
            let row = Type::f32(false, vec![x.last()]);
            if *w != row {
                return Err(format!("{} needs a weight {row}, found {w}", op.name()));
            }
            match op {
                Op::LayerNormGrad { .. } => same(x, ins[2])?,
                _ if *ins[2] != row => {
                    return Err(format!("layer_norm needs a bias {row}, found {}", ins[2]))
                }
                _ => {}
            }
            Ok(x.clone())
        }
        Op::BatchNorm { .. }
        | Op::BatchNormEval { .. }
        | Op::BatchNormGrad { .. }
        | Op::BatchNormEvalGrad { .. }
        | Op::BatchNormWeightGrad { .. }
        | Op::BatchStats { .. } => {
            let n = match op {
                Op::BatchNormEvalGrad { .. } | Op::BatchNormWeightGrad { .. } => 3,
                Op::BatchNorm { .. } => 4,
                Op::BatchNormEval { .. } => 5,
                Op::BatchNormGrad { .. } => 6,
                _ => 1,
            };
            arity(n)?;
            f32_in(0)?;
            let x = ins[0];
            if !x.batched || !(x.rank() == 2 || x.rank() == 4) {
                return Err(format!(
                    "{} needs a batch of [C] or [C, H, W], found {x}",
                    op.name()
                ));
            }
            let row = Type::f32(false, vec![x.dim(1, 1)]);
            let stats = Type::f32(false, vec![2, x.dim(1, 1)]);
            if let Op::BatchStats { .. } = op {
                return Ok(stats);
            }
            // BatchNorm, BatchNormGrad and BatchNormWeightGrad read the BatchStats of x.
            if !matches!(op, Op::BatchNormEval { .. } | Op::BatchNormEvalGrad { .. })
                && *ins[1] != stats
            {
                return Err(format!(
                    "{} needs batch stats {stats}, found {}",
                    op.name(),
                    ins[1]
                ));
            }
            let per_channel = match op {
                Op::BatchNormWeightGrad { .. } => {
                    same(x, ins[2])?;
                    return Ok(row);
                }
                Op::BatchNormGrad { .. } => {
                    same(x, ins[3])?;
                    &[ins[2], ins[4], ins[5]][..]
                }
                Op::BatchNorm { .. } => &ins[2..],
                Op::BatchNormEvalGrad { .. } => &ins[1..3],
                _ => &ins[1..],
            };
            if let Some(t) = per_channel.iter().find(|t| ***t != row) {
                return Err(format!("{} needs {row} per channel, found {t}", op.name()));
            }
            Ok(x.clone())
        }
        Op::LayerNormWeightGrad { .. } => {
            arity(2)?;
            f32_in(0)?;
            same(ins[0], ins[1])?;
            if ins[0].dims.is_empty() {
                return Err(format!("{} needs rows, found {}", op.name(), ins[0]));
            }
            Ok(Type::f32(false, vec![ins[0].last()]))
        }
        Op::UnaryGrad(_) | Op::SoftmaxGrad | Op::LogSoftmaxGrad => {
            arity(2)?;
            f32_in(0)?;
            same(ins[0], ins[1])?;
            Ok(ins[0].clone())
        }
        Op::MatMul { ta, tb } => {
            arity(2)?;
            f32_in(0)?;
            f32_in(1)?;
            matmul(ins[0], ins[1], *ta, *tb)
        }
        Op::Fused(c) => {
            arity(if c.bias.is_some() { 2 } else { 1 })?;
            f32_in(0)?;
            match c.bias {
                Some(axis) => infer(&Op::BiasAdd { axis }, ins, params),
                None => Ok(ins[0].clone()),
            }
        }
        Op::WithEpilogue { producer, epi } => with_epilogue(op, producer, epi, ins, params),
        Op::EpilogueGrad => {
            // That the input is a loss epilogue is checked by the verifier, which sees nodes.
            arity(1)?;
            Ok(ins[0].clone())
        }
        Op::UnpoolBiasGrad => {
            // That the input is a conv2d_grad_weight_unpool is checked by the verifier.
            arity(1)?;
            if ins[0].batched || ins[0].dims.len() != 4 {
                return Err(format!(
                    "unpool_bias_grad reads a weight gradient, found {}",
                    ins[0]
                ));
            }
            Ok(Type::f32(false, vec![ins[0].dims[0]]))
        }
        Op::BiasAdd { axis } => {
            arity(2)?;
            f32_in(0)?;
            let (x, b) = (ins[0], ins[1]);
            if *axis >= x.rank() || (x.batched && *axis == 0) {
                return Err(format!("bias_add axis {axis} out of range for {x}"));
            }
            let c = x.dim(*axis, 1);
            if b.batched || b.dims != [c] {
                return Err(format!("bias_add needs a bias f32[{c}], found {b}"));
            }
            Ok(x.clone())
        }
        Op::BiasGrad { axis } => {
            arity(1)?;
            let x = ins[0];
            if *axis >= x.rank() || (x.batched && *axis == 0) {
                return Err(format!("bias_grad axis {axis} out of range for {x}"));
            }
            Ok(Type::f32(false, vec![x.dim(*axis, 1)]))
        }
        Op::Conv2d(w) => {
            arity(2)?;
            let (x, k) = (ins[0], ins[1]);
            let (c, h, wd) = nchw(x)?;
            if k.batched
                || k.dims.len() != 4
                || k.dims[1] != c
                || k.dims[2] != w.kernel
                || k.dims[3] != w.kernel
            {
                return Err(format!(
                    "conv2d weight must be f32[O,{c},{},{}], found {k}",
                    w.kernel, w.kernel
                ));
            }
            let (oh, ow) = out_hw(w, h, wd)?;
            Ok(Type::f32(true, vec![k.dims[0], oh, ow]))
        }
        Op::Conv2dGradWeight(w) => {
            arity(2)?;
            let (x, dy) = (ins[0], ins[1]);
            let (c, h, wd) = nchw(x)?;
            let (o, oh, ow) = nchw(dy)?;
            if out_hw(w, h, wd)? != (oh, ow) {
                return Err(format!("conv2d_grad_weight: {dy} is not the output of {x}"));
            }
            Ok(Type::f32(false, vec![o, c, w.kernel, w.kernel]))
        }
        Op::Conv2dGradWeightUnpool { conv, pool, act } => {
            arity(3)?;
            let (x, y, dp) = (ins[0], ins[1], ins[2]);
            let (c, h, wd) = nchw(x)?;
            let (o, oh, ow) = nchw(y)?;
            if out_hw(conv, h, wd)? != (oh, ow) {
                return Err(format!("{}: {y} is not the output of {x}", op.name()));
            }
            if act.is_some_and(|a| !a.grad_uses_output()) {
                return Err(format!(
                    "{}: the gradient of {} needs its input",
                    op.name(),
                    act.map_or("", |a| a.name())
                ));
            }
            let (po, ph, pw) = nchw(dp)?;
            if po != o || out_hw(pool, oh, ow)? != (ph, pw) {
                return Err(format!("{}: {dp} is not the pooling of {y}", op.name()));
            }
            Ok(Type::f32(false, vec![o, c, conv.kernel, conv.kernel]))
        }
        Op::MaxPool(w) | Op::AvgPool(w) | Op::PoolBeside(w) => {
            arity(1)?;
            let (c, h, wd) = nchw(ins[0])?;
            let (oh, ow) = out_hw(w, h, wd)?;
            Ok(Type::f32(true, vec![c, oh, ow]))
        }
        Op::MaxPoolGrad(_) => {
            arity(2)?;
            nchw(ins[0])?;
            Ok(ins[0].clone())
        }
        Op::GlobalMaxPool | Op::GlobalAvgPool => {
            arity(1)?;
            let (c, _, _) = nchw(ins[0])?;
            Ok(Type::f32(true, vec![c]))
        }
        Op::GlobalMaxPoolGrad => {
            arity(2)?;
            let (c, _, _) = nchw(ins[0])?;
            if *ins[1] != Type::f32(true, vec![c]) {
                return Err(format!(
                    "{}: {} is not the pooling of {}",
                    op.name(),
                    ins[1],
                    ins[0]
                ));
            }
            Ok(ins[0].clone())
        }
        Op::Conv2dGradInput(_)
        | Op::AvgPoolGrad(_)
        | Op::GlobalAvgPoolGrad
        | Op::Reshape
        | Op::EmbeddingGrad => Err(format!("the type of {} must be given", op.name())),
        Op::Embedding => {
            arity(2)?;
            let (ids, w) = (ins[0], ins[1]);
            if ids.dtype != DType::I32 {
                return Err(format!("embedding needs i32 token ids, found {ids}"));
            }
            if w.batched || w.dims.len() != 2 {
                return Err(format!("embedding table must be f32[V,E], found {w}"));
            }
            let mut dims = ids.dims.clone();
            dims.push(w.dims[1]);
            Ok(Type::f32(ids.batched, dims))
        }
        Op::OneHot { n } => {
            arity(1)?;
            if ins[0].dtype != DType::I32 {
                return Err(format!("one_hot needs i32 ids, found {}", ins[0]));
            }
            let mut dims = ins[0].dims.clone();
            dims.push(*n);
            Ok(Type::f32(ins[0].batched, dims))
        }
        Op::RnnScan { .. } => {
            arity(2)?;
            let (xp, w) = (ins[0], ins[1]);
            btc(xp)?;
            let h = xp.last();
            if w.batched || w.dims != [h, h] {
                return Err(format!(
                    "rnn recurrent weight must be f32[{h},{h}], found {w}"
                ));
            }
            Ok(xp.clone())
        }
        Op::RnnScanGrad { .. } => {
            arity(3)?;
            btc(ins[0])?;
            same(ins[0], ins[2])?;
            Ok(ins[0].clone())
        }
        Op::Concat { axis } => concat(*axis, ins),
        Op::Slice { axis, start, len } => {
            arity(1)?;
            f32_in(0)?;
            let x = ins[0];
            let size = sample_axis(op, x, *axis)?;
            if *len == 0 || start + len > size {
                return Err(format!(
                    "slice {start}..{} of axis {axis} of {x} is out of range",
                    start + len
                ));
            }
            let mut out = x.clone();
            out.dims[axis - x.batched as usize] = *len;
            Ok(out)
        }
        Op::Reverse { axis } => {
            // Of f32 values, or of i32 ids (the look-up of reversed ids is the reversed look-up).
            arity(1)?;
            sample_axis(op, ins[0], *axis)?;
            Ok(ins[0].clone())
        }
        Op::TimeShift => {
            arity(1)?;
            btc(ins[0])?;
            Ok(ins[0].clone())
        }
        Op::GruScan => {
            arity(3)?;
            let (xp, w, b) = (ins[0], ins[1], ins[2]);
            btc(xp)?;
            let h3 = xp.last();
            if h3 % 3 != 0 {
                return Err(format!("gru_scan reads three gates of H units, found {xp}"));
            }
            let h = h3 / 3;
            if w.batched || w.dims != [h, h3] {
                return Err(format!(
                    "gru recurrent weight must be f32[{h},{h3}], found {w}"
                ));
            }
            if *b != Type::f32(false, vec![h3]) {
                return Err(format!("gru recurrent bias must be f32[{h3}], found {b}"));
            }
            Ok(Type::f32(true, vec![xp.dims[0], h]))
        }
        Op::GruGates => {
            // That the input is a gru_scan is checked by the verifier.
            arity(1)?;
            btc(ins[0])?;
            Ok(Type::f32(true, vec![ins[0].dims[0], 4 * ins[0].last()]))
        }
        Op::GruScanGrad => {
            arity(4)?;
            let (hs, gates, w, dh) = (ins[0], ins[1], ins[2], ins[3]);
            btc(hs)?;
            same(hs, dh)?;
            let (t, h) = (hs.dims[0], hs.last());
            if *gates != Type::f32(true, vec![t, 4 * h]) {
                return Err(format!(
                    "gru_scan_grad needs the gates f32[B,{t},{}], found {gates}",
                    4 * h
                ));
            }
            if w.batched || w.dims != [h, 3 * h] {
                return Err(format!(
                    "gru recurrent weight must be f32[{h},{}], found {w}",
                    3 * h
                ));
            }
            Ok(Type::f32(true, vec![t, 3 * h]))
        }
        Op::GruRecurGrad => {
            // That the input is a gru_scan_grad is checked by the verifier.
            arity(1)?;
            btc(ins[0])?;
            Ok(ins[0].clone())
        }
        Op::LstmScan | Op::Lstm => {
            arity(2)?;
            let (xp, w) = (ins[0], ins[1]);
            btc(xp)?;
            let h = lstm_units(xp, 4, "gate pre-activations")?;
            if w.batched || w.dims != [h, 4 * h] {
                return Err(format!(
                    "lstm recurrent weight must be f32[{h},{}], found {w}",
                    4 * h
                ));
            }
            let kept = if *op == Op::Lstm { h } else { 6 * h };
            Ok(Type::f32(true, vec![xp.dims[0], kept]))
        }
        Op::LstmHidden => {
            arity(1)?;
            btc(ins[0])?;
            let h = lstm_units(ins[0], 6, "state")?;
            Ok(Type::f32(true, vec![ins[0].dims[0], h]))
        }
        Op::LstmScanGrad => {
            arity(3)?;
            let (s, w, dh) = (ins[0], ins[1], ins[2]);
            btc(s)?;
            let h = lstm_units(s, 6, "state")?;
            if w.batched || w.dims != [h, 4 * h] {
                return Err(format!(
                    "lstm recurrent weight must be f32[{h},{}], found {w}",
                    4 * h
                ));
            }
            let hs = Type::f32(true, vec![s.dims[0], h]);
            same(&hs, dh)?;
            Ok(Type::f32(true, vec![s.dims[0], 4 * h]))
        }
        Op::CrossEntropy => {
            arity(2)?;
            f32_in(0)?;
            labels_for(ins[0], ins[1])?;
            Ok(Type::scalar())
        }
        Op::CrossEntropyGrad => {
            arity(3)?;
            labels_for(ins[0], ins[1])?;
            scalar_in(ins[2])?;
            Ok(ins[0].clone())
        }
        Op::SoftCrossEntropy | Op::KlDiv | Op::Mse | Op::Bce => {
            arity(2)?;
            f32_in(0)?;
            f32_in(1)?;
            same(ins[0], ins[1])?;
            Ok(Type::scalar())
        }
        Op::SoftCrossEntropyGrad | Op::KlDivGrad | Op::MseGrad | Op::BceGrad => {
            arity(3)?;
            same(ins[0], ins[1])?;
            scalar_in(ins[2])?;
            Ok(ins[0].clone())
        }
        Op::SumSquares => {
            arity(1)?;
            f32_in(0)?;
            Ok(Type::scalar())
        }
        Op::MeanToSum { per } => {
            arity(2)?;
            scalar_in(ins[0])?;
            f32_in(1)?;
            if *per == 0 || !ins[1].last().is_multiple_of(*per) {
                return Err(format!(
                    "mean_to_sum cannot count rows of {per} in {}",
                    ins[1]
                ));
            }
            Ok(Type::scalar())
        }
    }
}

/// The type of `a · b`, or `aᵀ · b` with `ta`, or `a · bᵀ` with `tb` (not both). Without `ta`, `b`
/// is an unbatched matrix and the result keeps the leading dims of `a`, the last becoming the
/// columns of `b` (of `bᵀ`). With `ta` (a weight gradient) `a: [R, M]` and `b: [R, N]` share
/// their leading dims `R`, which are summed over: the result is the unbatched `[M, N]`.
fn matmul(a: &Type, b: &Type, ta: bool, tb: bool) -> Result<Type, String> {
    if a.dims.is_empty() || b.dims.is_empty() {
        return Err(format!("matmul needs a matrix, found {a}"));
    }
    if ta {
        // a: [R, M], b: [R, N] (same leading dims) unless tb.
        let m = a.last();
        if tb {
            return Err("matmul with both ta and tb is not supported".into());
        }
        if a.batched != b.batched
            || a.dims[..a.dims.len() - 1] != b.dims[..b.dims.len().saturating_sub(1)]
        {
            return Err(format!(
                "matmul ta needs the same leading dims, found {a} and {b}"
            ));
        }
        Ok(Type::f32(false, vec![m, b.last()]))
    } else {
        let k = a.last();
        if b.batched || b.dims.len() != 2 {
            return Err(format!(
                "matmul needs an unbatched matrix on the right, found {b}"
            ));
        }
        let (bk, n) = if tb {
            (b.dims[1], b.dims[0])
        } else {
            (b.dims[0], b.dims[1])
        };
        if bk != k {
            return Err(format!(
                "matmul inner sizes differ: {a} · {b}{}",
                if tb { "ᵀ" } else { "" }
            ));
        }
        let mut dims = a.dims.clone();
        if let Some(last) = dims.last_mut() {
            *last = n;
        }
        Ok(Type::f32(a.batched, dims))
    }
}

/// The type of a product with its epilogue applied (`op`): the producer's type on its inputs
/// (the first [`Producer::arity`]), then, checked against the extra inputs, the epilogue's
/// chain, gradient, pooling or loss. Each epilogue must suit its producer: a max-pool gradient
/// takes only an activation gradient, a batch norm only activations, a pooling epilogue only
/// follows a convolution, a loss only a matrix product.
fn with_epilogue(
    op: &Op,
    producer: &Producer,
    epi: &Epilogue,
    ins: &[&Type],
    params: &[Param],
) -> Result<Type, String> {
    let n = producer.arity();
    takes(op, ins, n + epi.extra_inputs())?;
    let p = infer(&producer.op(), &ins[..n], params)?;
    if matches!(producer, Producer::MaxPoolGrad(_)) && !matches!(epi, Epilogue::Grad(_)) {
        return Err("a max-pool gradient takes an activation gradient only".into());
    }
    if producer.activations_only() && !matches!(epi, Epilogue::Chain(Chain { bias: None, .. })) {
        return Err(format!("a {} takes activations only", producer.op().name()));
    }
    let Some(chain) = epi.chain() else {
        f32_input(op, ins, n)?;
        same_types(op, ins[n], &p)?;
        return Ok(p);
    };
    let v = match chain.bias {
        Some(axis) => {
            let want = producer.bias_axis(p.rank());
            if axis != want {
                return Err(format!(
                    "the bias of a {} epilogue lies along axis {want}, not {axis}",
                    producer.op().name()
                ));
            }
            infer(&Op::BiasAdd { axis }, &[&p, ins[n]], params)?
        }
        None => p,
    };
    if let Epilogue::Pool(_, w) = epi {
        if !matches!(producer, Producer::Conv2d(_)) {
            return Err("a pooling epilogue needs a convolution".into());
        }
        return infer(&Op::MaxPool(*w), &[&v], params);
    }
    if let Epilogue::Loss(l) = epi {
        if !matches!(producer, Producer::MatMul { .. }) {
            return Err("a loss epilogue needs a matrix product".into());
        }
        let target = ins[ins.len() - 1];
        match l.loss {
            EpilogueLoss::CrossEntropy => labels_for(&v, target)?,
            EpilogueLoss::Mse => same_types(op, &v, target)?,
        }
    }
    Ok(v)
}

/// The type of `concat` along full-shape axis `axis` of `ins`: two or more f32 values of one
/// batching, equal but along `axis`, whose sizes add up.
fn concat(axis: usize, ins: &[&Type]) -> Result<Type, String> {
    let op = Op::Concat { axis };
    let [first, rest @ ..] = ins else {
        return Err("concat takes two inputs or more, got none".into());
    };
    if rest.is_empty() {
        return Err("concat takes two inputs or more, got 1".into());
    }
    f32_input(&op, ins, 0)?;
    sample_axis(&op, first, axis)?;
    let k = axis - first.batched as usize;
    let mut out = (*first).clone();
    for (i, t) in rest.iter().enumerate() {
        let fits = t.dtype == first.dtype
            && t.batched == first.batched
            && t.dims.len() == first.dims.len()
            && (0..t.dims.len()).all(|d| d == k || t.dims[d] == first.dims[d]);
        if !fits {
            return Err(format!(
                "concat along axis {axis} needs inputs equal but along it: input {} is {t}, \
                 input 0 {first}",
                i + 1
            ));
        }
        out.dims[k] += t.dims[k];
    }
    Ok(out)
}

/// The size of full-shape axis `axis` of `t`, which `op` moves data along: an axis of the
/// sample (not the batch).
fn sample_axis(op: &Op, t: &Type, axis: usize) -> Result<usize, String> {
    let b = t.batched as usize;
    if axis < b || axis >= t.rank() {
        return Err(format!(
            "{} axis {axis} is not an axis of the samples of {t}",
            op.name()
        ));
    }
    Ok(t.dims[axis - b])
}

/// That `op` has `n` inputs.
fn takes(op: &Op, ins: &[&Type], n: usize) -> Result<(), String> {
    if ins.len() == n {
        Ok(())
    } else {
        Err(format!("{} takes {n} inputs, got {}", op.name(), ins.len()))
    }
}

/// That input `i` of `op` is f32.
fn f32_input(op: &Op, ins: &[&Type], i: usize) -> Result<(), String> {
    if ins[i].dtype == DType::F32 {
        Ok(())
    } else {
        Err(format!(
            "input {i} of {} must be f32, found {}",
            op.name(),
            ins[i]
        ))
    }
}

/// That two types `op` relates are equal.
fn same_types(op: &Op, a: &Type, b: &Type) -> Result<(), String> {
    if a == b {
        Ok(())
    } else {
        Err(format!(
            "{} needs equal types, found {a} and {b}",
            op.name()
        ))
    }
}

fn scalar_in(t: &Type) -> Result<(), String> {
    if t.is_scalar() {
        Ok(())
    } else {
        Err(format!("expected a scalar f32[], found {t}"))
    }
}

fn labels_for(logits: &Type, labels: &Type) -> Result<(), String> {
    if labels.dtype != DType::I32
        || labels.batched != logits.batched
        || labels.dims.as_slice() != &logits.dims[..logits.dims.len().saturating_sub(1)]
    {
        return Err(format!(
            "labels for logits {logits} must be i32 of the leading dims, found {labels}"
        ));
    }
    Ok(())
}

fn nchw(t: &Type) -> Result<(usize, usize, usize), String> {
    if t.batched && t.dims.len() == 3 && t.dtype == DType::F32 {
        Ok((t.dims[0], t.dims[1], t.dims[2]))
    } else {
        Err(format!("expected an image batch f32[B,C,H,W], found {t}"))
    }
}

/// `H` of an LSTM sequence whose last axis holds `k` blocks of `H` (`what`, for the message).
fn lstm_units(t: &Type, k: usize, what: &str) -> Result<usize, String> {
    let n = t.last();
    if n == 0 || !n.is_multiple_of(k) {
        return Err(format!("an lstm {what} needs {k}·H features, found {t}"));
    }
    Ok(n / k)
}

fn btc(t: &Type) -> Result<(), String> {
    if t.batched && t.dims.len() == 2 && t.dtype == DType::F32 {
        Ok(())
    } else {
        Err(format!("expected a sequence batch f32[B,T,H], found {t}"))
    }
}

fn out_hw(w: &Window, h: usize, wd: usize) -> Result<(usize, usize), String> {
    match (w.out_len(h), w.out_len(wd)) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(format!(
            "a {k}×{k} window (stride {s}, padding {p}) does not fit a {h}×{wd} image",
            k = w.kernel,
            s = w.stride,
            p = w.pad
        )),
    }
}

/// Whether `ty`, the given type of a `Conv2dGradInput` or `AvgPoolGrad` node (whose type its
/// inputs `ins` do not determine: several sizes window to the same), is one they can have: the
/// image that the window maps onto the first input, with the weight's channels. Since
/// `conv_transpose2d` and `upsample` put these ops in forward graphs, the checker's sizes are
/// verified here too. `Ok` for every other op.
pub fn check_given(op: &Op, ins: &[&Type], ty: &Type) -> Result<(), String> {
    let (w, channels) = match op {
        Op::Conv2dGradInput(w) if ins.len() == 2 => {
            let k = ins[1];
            if k.batched || k.dims.len() != 4 || k.dims[2..] != [w.kernel, w.kernel] {
                return Err(format!("{}: {k} is not a {0}×{0} weight", w.kernel));
            }
            (w, (k.dims[0], k.dims[1]))
        }
        Op::AvgPoolGrad(w) if ins.len() == 1 => {
            let c = nchw(ins[0])?.0;
            (w, (c, c))
        }
        _ => return Ok(()),
    };
    let (c, h, wd) = nchw(ty)?;
    let (yc, yh, yw) = nchw(ins[0])?;
    if (yc, c) != channels || out_hw(w, h, wd)? != (yh, yw) {
        return Err(format!(
            "{}: {} is not the window of {ty}",
            op.name(),
            ins[0]
        ));
    }
    Ok(())
}

/// Floating-point operations of one node for one sample (multiply-add = 2), for `nnc check`.
/// Elementwise work counts one per element.
pub fn flops_per_sample(op: &Op, ins: &[&Type], out: &Type) -> u64 {
    let per = |t: &Type| t.per_sample() as u64;
    match op {
        Op::Input { .. }
        | Op::Param(_)
        | Op::Const(_)
        | Op::Reshape
        | Op::Concat { .. }
        | Op::Slice { .. }
        | Op::Reverse { .. }
        | Op::EpilogueGrad
        | Op::UnpoolBiasGrad
        | Op::GruGates
        | Op::GruRecurGrad
        | Op::MeanToSum { .. } => 0,
        Op::MatMul { ta: false, tb } => {
            let k = ins[0].last() as u64;
            let _ = tb;
            2 * k * per(out)
        }
        Op::MatMul { ta: true, .. } => 2 * per(ins[0]) * ins[1].last() as u64,
        Op::Conv2d(w) => 2 * (ins[1].dims[1] * w.kernel * w.kernel) as u64 * per(out),
        Op::WithEpilogue { producer, .. } => {
            flops_per_sample(&producer.op(), &ins[..2], out) + per(out)
        }
        // Each element of dy meets the C·k·k weights of its output channel (w is O×C×k×k; a
        // transposed convolution's x, in dy's place, meets its `out`·k·k).
        Op::Conv2dGradInput(w) => 2 * (ins[1].dims[1] * w.kernel * w.kernel) as u64 * per(ins[0]),
        Op::Conv2dGradWeight(w) => 2 * (ins[0].dims[0] * w.kernel * w.kernel) as u64 * per(ins[1]),
        Op::Conv2dGradWeightUnpool { conv, .. } => {
            2 * (ins[0].dims[0] * conv.kernel * conv.kernel) as u64 * per(ins[1])
        }
        Op::MaxPool(w) | Op::AvgPool(w) | Op::PoolBeside(w) => {
            (w.kernel * w.kernel) as u64 * per(out)
        }
        // The mean, the squared deviations, then (x − mean)·(1/σ)·w + b: eight an element.
        Op::LayerNorm { .. } => 8 * per(out),
        Op::BatchNorm { .. } => 8 * per(out),
        Op::BatchNormEval { .. } => 2 * per(out),
        Op::RnnScan { .. } | Op::RnnScanGrad { .. } => {
            let h = ins[0].last() as u64;
            2 * h * per(ins[0])
        }
        // The recurrent product h_{t−1}·w_hh (H×3H) a step, and about twenty an element for
        // the gates.
        Op::GruScan | Op::GruScanGrad => {
            // H, the rows of w_hh (input 1 of the scan, input 2 of its gradient).
            let (w, seq) = if matches!(op, Op::GruScan) {
                (ins[1], ins[0])
            } else {
                (ins[2], out)
            };
            (2 * w.dims[0] as u64 + 7) * per(seq)
        }
        // Each step's product with w_hh (H×4H) over the T×4H gates, then a few a gate for the
        // cell.
        Op::LstmScan | Op::Lstm => (2 * ins[1].dims[0] as u64 + 4) * per(ins[0]),
        Op::LstmScanGrad => (2 * ins[1].dims[0] as u64 + 4) * per(out),
        _ => ins
            .iter()
            .map(|t| if t.batched { per(t) } else { 0 })
            .max()
            .unwrap_or(0)
            .max(if out.batched { per(out) } else { 0 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transposed convolution of 7×7 by a 3×3 window of stride 2 and padding 1 may be 13×13
    /// or 14×14 (output_padding 0 or 1), with the weight's second axis as its channels; 15×15,
    /// or other channels, are refused. Likewise an upsampling by 2 of 7×7 is 14×14 (or 15×15,
    /// which the window of stride 2 maps back to 7 too), never 16×16.
    #[test]
    fn given_types_of_input_gradients_are_checked_against_the_window() {
        let img = |c: usize, h: usize| Type::f32(true, vec![c, h, h]);
        let w = Window {
            kernel: 3,
            stride: 2,
            pad: 1,
        };
        let k = Type::f32(false, vec![32, 16, 3, 3]);
        let convt = Op::Conv2dGradInput(w);
        for (ty, ok) in [
            (img(16, 13), true),
            (img(16, 14), true),
            (img(16, 15), false),
        ] {
            assert_eq!(
                check_given(&convt, &[&img(32, 7), &k], &ty).is_ok(),
                ok,
                "{ty}"
            );
        }
        assert!(check_given(&convt, &[&img(32, 7), &k], &img(32, 14)).is_err());
        assert!(check_given(&convt, &[&img(16, 7), &k], &img(16, 14)).is_err());
        let up = Op::AvgPoolGrad(Window {
            kernel: 2,
            stride: 2,
            pad: 0,
        });
        assert!(check_given(&up, &[&img(3, 7)], &img(3, 14)).is_ok());
        assert!(check_given(&up, &[&img(3, 7)], &img(3, 16)).is_err());
        assert!(check_given(&up, &[&img(3, 7)], &img(4, 14)).is_err());
    }

    /// A recurrent scan's work is its step's product with w_hh (2·H a value of the H-, 3H- or
    /// 4H-wide sequence it computes) and a few operations an element: H is w_hh's rows, not
    /// the width of anything else it reads (a GRU's recurrent bias is 3H wide).
    #[test]
    fn recurrent_scans_count_their_products_by_the_hidden_size() {
        let (t, h) = (5, 8);
        let f = |dims: &[usize]| Type::f32(true, dims.to_vec());
        let c = |dims: &[usize]| Type::f32(false, dims.to_vec());
        let (xp, w, b) = (f(&[t, 3 * h]), c(&[h, 3 * h]), c(&[3 * h]));
        let hs = f(&[t, h]);
        let fwd = flops_per_sample(&Op::GruScan, &[&xp, &w, &b], &hs);
        assert_eq!(fwd, (2 * h as u64 + 7) * (t * 3 * h) as u64);
        let gates = f(&[t, 4 * h]);
        let grad = flops_per_sample(&Op::GruScanGrad, &[&hs, &gates, &w, &hs], &xp);
        assert_eq!(grad, fwd);
        let (xp4, w4) = (f(&[t, 4 * h]), c(&[h, 4 * h]));
        let lstm = flops_per_sample(&Op::LstmScan, &[&xp4, &w4], &f(&[t, 6 * h]));
        assert_eq!(lstm, (2 * h as u64 + 4) * (t * 4 * h) as u64);
    }
}
