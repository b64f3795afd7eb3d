//! Loss expressions (`cross_entropy(output, label) + 1e-4 * l2()`): each term lowered to IR with
//! its operands' shapes checked. Arithmetic and names are handled by [`Lower`].

use super::args::{bind, Bound, Sig};
use super::consts;
use super::lower::{Lower, V};
use super::names::show;
use crate::diag::Diag;
use crate::ir::{BinaryOp, DType, Graph, Op, Type, UnaryOp, ValueId};
use crate::syntax::ast::{Arg, Expr, ExprKind, Ident, Span};

/// The loss functions a `loss:` setting may call.
pub const FUNCTIONS: &[&str] = &[
    "mse",
    "binary_cross_entropy",
    "cross_entropy",
    "kl_div",
    "kd",
    "l2",
];

/// How loss `name` is called, e.g. `` `cross_entropy(output, label)` ``.
pub fn usage(name: &str) -> &'static str {
    sig(name).usage
}

fn sig(name: &str) -> Sig {
    match name {
        "cross_entropy" => Sig {
            forms: &[&["logits", "target"]],
            named: &["label_smoothing", "reduction"],
            required: &["logits", "target"],
            usage: "`cross_entropy(output, label)` or `cross_entropy(output, label, label_smoothing: 0.1)`",
        },
        "binary_cross_entropy" => Sig {
            forms: &[&["p", "target"]],
            named: &["reduction"],
            required: &["p", "target"],
            usage: "`binary_cross_entropy(output, label)`",
        },
        "kl_div" => Sig {
            forms: &[&["p_logits", "q_logits"]],
            named: &["reduction"],
            required: &["p_logits", "q_logits"],
            usage: "`kl_div(teacher, output)`",
        },
        "kd" => Sig {
            forms: &[&["output", "teacher", "label"]],
            named: &["alpha", "temperature"],
            required: &["output", "teacher", "label"],
            usage: "`kd(output, teacher, label, alpha: 0.5, temperature: 4)`",
        },
        "l2" => Sig {
            forms: &[&[], &["path"]],
            named: &[],
            required: &[],
            usage: "`l2()` or `l2(encoder)`",
        },
        _ => Sig {
            forms: &[&["a", "b"]],
            named: &["reduction"],
            required: &["a", "b"],
            usage: "`mse(output, label)`",
        },
    }
}

/// Whether `label` is used as class ids (`cross_entropy(_, label)`, `kd(_, _, label)`) and
/// whether it is used as anything else (a regression target).
pub fn label_use(e: &Expr) -> (bool, bool) {
    let is_label = |e: &Expr| e.as_name().is_some_and(|n| n.name == "label");
    match &e.kind {
        ExprKind::Path(_) => (false, is_label(e)),
        ExprKind::Call { callee, args } => {
            // The class-id parameter, by position among the positional arguments and by name.
            let class_param = match callee.name.as_str() {
                "cross_entropy" => Some((1, "target")),
                "kd" => Some((2, "label")),
                _ => None,
            };
            let (mut class, mut target) = (false, false);
            let mut position = 0;
            for a in args {
                let class_slot = class_param.is_some_and(|(pos, name)| match &a.name {
                    None => position == pos,
                    Some(n) => n.name == name,
                });
                if a.name.is_none() {
                    position += 1;
                }
                if class_slot && is_label(&a.value) {
                    class = true;
                } else {
                    let (c, t) = label_use(&a.value);
                    class |= c;
                    target |= t;
                }
            }
            (class, target)
        }
        ExprKind::Binary { lhs, rhs, .. } => {
            let (a, b) = (label_use(lhs), label_use(rhs));
            (a.0 || b.0, a.1 || b.1)
        }
        ExprKind::Neg(a) => label_use(a),
        ExprKind::Pipe { input, .. } => label_use(input),
        _ => (false, false),
    }
}

/// Whether the name `name` appears anywhere in `e`.
pub fn mentions(e: &Expr, name: &str) -> bool {
    match &e.kind {
        ExprKind::Path(p) => p.len() == 1 && p[0].name == name,
        ExprKind::Call { args, .. } => args.iter().any(|a| mentions(&a.value, name)),
        ExprKind::Binary { lhs, rhs, .. } => mentions(lhs, name) || mentions(rhs, name),
        ExprKind::Neg(a) => mentions(a, name),
        ExprKind::Pipe { input, .. } => mentions(input, name),
        _ => false,
    }
}

/// Lowers a call of a loss function.
pub fn call(l: &mut Lower, callee: &Ident, args: &[Arg], span: Span) -> V {
    let name = callee.name.as_str();
    let smoothing = args
        .iter()
        .find(|a| a.name.as_ref().is_some_and(|n| n.name == "label_smoothing"));
    if let (Some(a), true) = (smoothing, name != "cross_entropy") {
        let span = a.name.as_ref().map_or(a.value.span, |n| n.span);
        let help = if name == "kd" {
            "kd's cross-entropy term takes the labels as they are; to smooth them, write the two \
             terms out: `0.5 * cross_entropy(output, label, label_smoothing: 0.1) + 0.5 * 16 * \
             kl_div(teacher / 4, output / 4)` is `kd(output, teacher, label, alpha: 0.5, \
             temperature: 4)` with smoothed labels"
                .to_string()
        } else {
            format!(
                "only `cross_entropy` smooths its labels, as PyTorch's `F.cross_entropy`; {name} \
                 is written {}",
                sig(name).usage
            )
        };
        l.diags.push(
            Diag::new(
                "nnc::arg",
                format!("{name} has no `label_smoothing`"),
                span,
                "only cross_entropy takes it",
            )
            .help(help),
        );
        return V::Bad;
    }
    // Keras' `label_smoothing` is PyTorch's too; other spellings are pointed at it.
    let misspelt = args.iter().filter_map(|a| a.name.as_ref()).find(|n| {
        name == "cross_entropy" && n.name.contains("smooth") && n.name != "label_smoothing"
    });
    if let Some(n) = misspelt {
        l.diags.push(
            Diag::new(
                "nnc::arg",
                format!("cross_entropy has no argument `{}`", n.name),
                n.span,
                "unknown argument",
            )
            .help(
                "the argument is `label_smoothing`, as in PyTorch's `F.cross_entropy`: \
                 `cross_entropy(output, label, label_smoothing: 0.1)`",
            ),
        );
        return V::Bad;
    }
    let b = match bind(callee, args, span, &sig(name)) {
        Ok(b) => b,
        Err(ds) => {
            l.diags.extend(ds);
            return V::Bad;
        }
    };
    if name == "l2" {
        return l2(l, b.get("path"), span);
    }
    let names: &[&str] = match name {
        "kd" => &["output", "teacher", "label"],
        "cross_entropy" => &["logits", "target"],
        "binary_cross_entropy" => &["p", "target"],
        "kl_div" => &["p_logits", "q_logits"],
        _ => &["a", "b"],
    };
    let mut vals = Vec::new();
    for n in names {
        let e = b.get(n).expect("required arguments are bound");
        match l.expr(e) {
            V::T(v) => vals.push((v, e.span)),
            V::N(x) => {
                l.diags.push(
                    Diag::new(
                        "nnc::train",
                        format!("{name} compares tensors, found the number {x}"),
                        e.span,
                        "a number",
                    )
                    .help(format!("write {}", sig(name).usage)),
                );
                return V::Bad;
            }
            V::Bad => return V::Bad,
        }
    }
    let reduction = match reduction(name, b.get("reduction")) {
        Ok(r) => r,
        Err(d) => {
            l.diags.push(d);
            return V::Bad;
        }
    };
    match (reduction, mean(l, name, &b, &vals, span)) {
        (Reduction::Sum, V::T(m)) => {
            // The terms are the elements of the prediction, or its rows for the losses over
            // classes (the logits of cross_entropy, kl_div's second argument).
            let (x, per) = match name {
                "cross_entropy" => (vals[0].0, l.g.ty(vals[0].0).last()),
                "kl_div" => (vals[1].0, l.g.ty(vals[1].0).last()),
                _ => (vals[0].0, 1),
            };
            l.push(Op::MeanToSum { per }, vec![m, x], name, span)
        }
        (_, v) => v,
    }
}

/// Loss `name` of the lowered arguments `vals` (`b` its bound call), averaged over its terms:
/// the default `reduction`.
fn mean(l: &mut Lower, name: &str, b: &Bound, vals: &[(ValueId, Span)], span: Span) -> V {
    match name {
        "cross_entropy" => {
            let smoothing = b.get("label_smoothing").map_or(Ok(0.0), |e| {
                consts::fraction(e, "label_smoothing", 0.0, 1.0, false)
            });
            match smoothing {
                Ok(eps) => cross_entropy(l, vals[0], vals[1], eps, span).map_or(V::Bad, V::T),
                Err(d) => {
                    l.diags.push(d);
                    V::Bad
                }
            }
        }
        "kd" => {
            let alpha = b
                .get("alpha")
                .map_or(Ok(0.5), |e| consts::fraction(e, "alpha", 0.0, 1.0, true));
            let temp = b.get("temperature").map_or(Ok(4.0), |e| {
                consts::number(e).and_then(|t| {
                    if t > 0.0 {
                        Ok(t)
                    } else {
                        Err(Diag::new(
                            "nnc::train",
                            format!("the temperature must be positive, found {t}"),
                            e.span,
                            "must be > 0",
                        ))
                    }
                })
            });
            match (alpha, temp) {
                (Ok(a), Ok(t)) => kd(l, vals, a, t, span).map_or(V::Bad, V::T),
                (a, t) => {
                    l.diags.extend(a.err().into_iter().chain(t.err()));
                    V::Bad
                }
            }
        }
        _ => {
            let op = match name {
                "mse" => Op::Mse,
                "binary_cross_entropy" => Op::Bce,
                _ => Op::KlDiv,
            };
            if same_shape(l, name, vals[0], vals[1]).is_none()
                || target_not_trained(l, name, &op, [vals[0], vals[1]]).is_none()
            {
                return V::Bad;
            }
            if op == Op::KlDiv
                && (logits(l, name, vals[0]).is_none() || logits(l, name, vals[1]).is_none())
            {
                return V::Bad;
            }
            if let Some(layer) = (op == Op::Bce).then(|| unbounded(l.g, vals[0].0)).flatten() {
                l.diags.push(
                    Diag::new(
                        "nnc::train",
                        format!(
                            "binary_cross_entropy takes probabilities, found the output of {layer}"
                        ),
                        vals[0].1,
                        "not in (0, 1)",
                    )
                    .help(
                        "end the model with `|> sigmoid` (PyTorch's `F.binary_cross_entropy` \
                         takes probabilities too)",
                    ),
                );
                return V::Bad;
            }
            l.push(op, vec![vals[0].0, vals[1].0], name, span)
        }
    }
}

/// How a loss reduces its terms to one number (PyTorch's `reduction`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Reduction {
    /// Their mean, the default (kl_div's: over the rows, PyTorch's `"batchmean"`).
    Mean,
    /// Their sum over the whole batch: the loss and its gradient grow with the batch size.
    Sum,
}

/// Loss `name`'s `reduction:` (`e`), as PyTorch spells it: `"mean"` (kl_div: `"batchmean"`) or
/// `"sum"`; the mean without it.
fn reduction(name: &str, e: Option<&Expr>) -> Result<Reduction, Diag> {
    let Some(e) = e else {
        return Ok(Reduction::Mean);
    };
    let mean = if name == "kl_div" {
        "batchmean"
    } else {
        "mean"
    };
    let valid = format!("`reduction: \"{mean}\"` (the default) or `reduction: \"sum\"`");
    let s = consts::string(e, "the reduction").map_err(|d| d.help(format!("write {valid}")))?;
    match s.as_str() {
        "sum" => return Ok(Reduction::Sum),
        s if s == mean => return Ok(Reduction::Mean),
        _ => {}
    }
    let help = match s.to_lowercase().as_str() {
        l if l == mean || l == "sum" => format!("write `\"{l}\"` in lower case, as PyTorch does"),
        "none" => format!(
            "`\"none\"` keeps one loss per element, and a training loss is one number: write \
             {valid}"
        ),
        "mean" => "PyTorch's kl_div with `reduction='mean'` divides by the number of elements, \
             classes included, which PyTorch itself warns is not the KL divergence; nnc's \
             kl_div is the sum over the classes averaged over the rows, PyTorch's \
             `reduction='batchmean'`: leave `reduction` out, or write `reduction: \"sum\"`"
            .to_string(),
        "sum_over_batch_size" => {
            format!("Keras' \"sum_over_batch_size\" is the mean: write {valid}")
        }
        _ => format!("write {valid}, as in PyTorch"),
    };
    Err(Diag::new(
        "nnc::arg",
        format!("{name}'s reduction must be \"{mean}\" or \"sum\", found \"{s}\""),
        e.span,
        "not a reduction",
    )
    .help(help))
}

/// Checks that two loss operands have one shape (and explains the class-ids case).
fn same_shape(
    l: &mut Lower,
    name: &str,
    (a, sa): (ValueId, Span),
    (b, sb): (ValueId, Span),
) -> Option<()> {
    let (ta, tb) = (l.g.ty(a).clone(), l.g.ty(b).clone());
    if ta == tb && ta.dtype == DType::F32 {
        return Some(());
    }
    let mut d = Diag::new(
        "nnc::train",
        format!("{name} compares {} with {}", show(&ta), show(&tb)),
        sb,
        format!("this is {}", show(&tb)),
    )
    .also(sa, format!("this is {}", show(&ta)));
    d = if let Some(help) = class_ids_help(l, name, (a, &ta), (b, &tb)) {
        d.help(help)
    } else if tb.dtype == DType::I32 {
        d.help(format!("these are class ids; compare logits with them using `cross_entropy(…)`, or give {name} f32 targets of shape {}", show(&ta)))
    } else if let Some(f) = super::transposed::fix_transposed(l.g, &l.transposed, (a, &tb)) {
        // A decoder that ends at another size than the image it reconstructs.
        d.also(f.at, f.note).help(format!(
            "{name} needs two tensors of the same shape: {}",
            f.fix
        ))
    } else {
        d.help(format!("{name} needs two tensors of the same shape"))
    };
    l.diags.push(d);
    None
}

/// Why loss `name` cannot compare scores `a` over K > 1 classes with labels `b` that hold one
/// number a sample (or a position): those are class ids (certainly when i32, perhaps when a csv
/// or inline label column), which a classifier learns with `cross_entropy` on its logits, not
/// with a distance to K scores. `None` when `b` is not such labels.
fn class_ids_help(
    l: &Lower,
    name: &str,
    (a, ta): (ValueId, &Type),
    (b, tb): (ValueId, &Type),
) -> Option<String> {
    let (&classes, per_label) = ta.dims.split_last()?;
    let ids = tb.dtype == DType::I32 && tb.dims == per_label;
    let label_column = tb.dtype == DType::F32
        && tb.dims == [1]
        && per_label.is_empty()
        && l.g.inputs().contains(&(b, "label"));
    if classes < 2 || !(ids || label_column) {
        return None;
    }
    let unsquash = squashed(l.g, a).map_or(String::new(), |f| {
        format!(
            " (remove `|> {f}` from the model: cross_entropy applies softmax itself, and `nnc \
             predict` shows probabilities)"
        )
    });
    let classify =
        format!("train a classifier with `cross_entropy(output, label)` on logits{unsquash}");
    Some(if ids {
        let what = if per_label.is_empty() {
            "one class id per sample"
        } else {
            "one class id per position"
        };
        format!(
            "`label` holds {what}, not {classes} scores: {classify}; to keep {name}, compare \
             with one-hot targets `label |> one_hot({classes})`"
        )
    } else {
        format!(
            "`label` is one number per sample: if it is a class id, {classify}; for one \
             real-valued target the model's output must be [1]"
        )
    })
}

/// `cross_entropy(logits, target, label_smoothing: eps)` as PyTorch's `F.cross_entropy`: the
/// target is class ids or probabilities; with `eps` > 0 it becomes (1 − ε)·target + ε/K (a class
/// id first becoming its one-hot row), K the number of classes, and the soft cross-entropy of
/// that is taken. Without smoothing (ε = 0) the graph is the one without the argument.
fn cross_entropy(
    l: &mut Lower,
    (a, sa): (ValueId, Span),
    (b, sb): (ValueId, Span),
    eps: f64,
    span: Span,
) -> Option<ValueId> {
    let (ta, tb) = (l.g.ty(a).clone(), l.g.ty(b).clone());
    // Class ids first (i32, or the data's labels, which are f32 unless the loss uses them as
    // class ids in second place), then logits: the arguments are swapped.
    let labels = ta.dtype == DType::I32 || l.g.inputs().contains(&(a, "label"));
    if labels && ta != tb && tb.dtype == DType::F32 && !tb.dims.is_empty() {
        l.diags.push(
            Diag::new(
                "nnc::train",
                "cross_entropy takes the logits first, found the labels first",
                sa,
                format!("the labels, {}", show(&ta)),
            )
            .also(sb, format!("the logits, {}", show(&tb)))
            .help(
                "swap the arguments: the logits come first, then the labels, e.g. \
                 `cross_entropy(output, label)`",
            ),
        );
        return None;
    }
    logits(l, "cross_entropy", (a, sa))?;
    if ta.dtype != DType::F32 || ta.dims.is_empty() {
        l.diags.push(Diag::new(
            "nnc::train",
            format!(
                "cross_entropy needs logits [..., classes], found {}",
                show(&ta)
            ),
            sa,
            format!("this is {}", show(&ta)),
        ));
        return None;
    }
    let ids = Type {
        dtype: DType::I32,
        batched: ta.batched,
        dims: ta.dims[..ta.dims.len() - 1].to_vec(),
    };
    let op = if tb == ids {
        Op::CrossEntropy
    } else if tb == ta {
        target_not_trained(
            l,
            "cross_entropy",
            &Op::SoftCrossEntropy,
            [(a, sa), (b, sb)],
        )?;
        // A teacher's logits as the target: −Σ t·log p with t unbounded is no cross-entropy
        // (it goes below 0 and trains towards nothing).
        if let Some(what) = unbounded(l.g, b) {
            l.diags.push(
                Diag::new(
                    "nnc::train",
                    format!(
                        "cross_entropy's target must be probabilities, found the output of {what}"
                    ),
                    sb,
                    format!("straight from {what}: not probabilities"),
                )
                .help(
                    "make the target a distribution with `softmax(...)` (a teacher's logits: \
                     `cross_entropy(output, softmax(teacher))`), or distil from logits with \
                     `kl_div(teacher, output)` or `kd(output, teacher, label)`",
                ),
            );
            return None;
        }
        Op::SoftCrossEntropy
    } else {
        let ids_shape = if ids.dims.is_empty() {
            "one class id per sample".to_string()
        } else {
            format!("class ids {}", show(&ids))
        };
        l.diags.push(
            Diag::new("nnc::train", format!("cross_entropy with logits {} needs {ids_shape} or probabilities {}, found {}", show(&ta), show(&ta), show(&tb)), sb, format!("this is {}", show(&tb)))
                .also(sa, format!("logits {}", show(&ta)))
                .help(if tb.dtype == DType::I32 && tb.dims.is_empty() && ta.dims.len() > 1 {
                    // An image model without `flatten` before its last dense layer.
                    let classes = ta.dims[ta.dims.len() - 1];
                    format!("one class id per sample needs logits [{classes}], but the output keeps {} axes: flatten before the last dense layer (`|> flatten |> dense({classes})`)", ta.dims.len())
                } else {
                    "the target is either integer class ids (one fewer axis than the logits) or a distribution of the logits' shape".to_string()
                }),
        );
        return None;
    };
    let target = if eps > 0.0 {
        smoothed(l, b, op == Op::CrossEntropy, ta.last(), eps, span)?
    } else {
        b
    };
    let op = if eps > 0.0 { Op::SoftCrossEntropy } else { op };
    match l.push(op, vec![a, target], "cross_entropy", span) {
        V::T(v) => Some(v),
        _ => None,
    }
}

/// The label-smoothed target (1 − ε)·t + ε/K of class ids (`ids`: t their one-hot rows) or
/// probabilities `b` over K `classes`.
fn smoothed(
    l: &mut Lower,
    b: ValueId,
    ids: bool,
    classes: usize,
    eps: f64,
    span: Span,
) -> Option<ValueId> {
    let t = if ids {
        val(l.push(Op::OneHot { n: classes }, vec![b], "cross_entropy", span))?
    } else {
        b
    };
    let keep = l.g.constant((1.0 - eps) as f32);
    let spread = l.g.constant((eps / classes as f64) as f32);
    let t = val(l.push(
        Op::Binary(BinaryOp::Mul),
        vec![t, keep],
        "cross_entropy",
        span,
    ))?;
    val(l.push(
        Op::Binary(BinaryOp::Add),
        vec![t, spread],
        "cross_entropy",
        span,
    ))
}

/// Refuses loss `op`'s operands `args` (with their spans in the file) when its target
/// ([`Op::loss_target`]) depends on trainable parameters: autodiff sends no gradient into a
/// target, so the model would not learn what the file says (most likely the arguments are
/// swapped). Reported under the target, with the argument order of the file's `loss`, rather
/// than as an internal error when the run's backward pass is built.
fn target_not_trained(
    l: &mut Lower,
    loss: &str,
    op: &Op,
    args: [(ValueId, Span); 2],
) -> Option<()> {
    let Some(t) = op.loss_target() else {
        return Some(());
    };
    let (target, trained) = (args[t], args[1 - t]);
    if !depends_on_trainable(l.g, target.0) {
        return Some(());
    }
    let (what, order) = match loss {
        "cross_entropy" => (
            "the logits",
            "the logits come first, then the labels or probabilities, e.g. \
             `cross_entropy(output, label)`",
        ),
        "binary_cross_entropy" => (
            "the probabilities",
            "the probabilities come first, then the targets, e.g. \
             `binary_cross_entropy(output, label)`",
        ),
        "kd" => (
            "the student's output",
            "the student's output comes first, then the teacher's, then the labels: \
             `kd(output, teacher, label)`",
        ),
        _ => (
            "the logits",
            "the target distribution comes first, then the logits trained toward it, e.g. \
             `kl_div(teacher, output)` (PyTorch's `F.kl_div(input, target)` puts them the \
             other way round)",
        ),
    };
    l.diags.push(
        Diag::new(
            "nnc::train",
            format!("the target of {loss} depends on the model's trainable parameters"),
            target.1,
            "this target depends on trainable parameters",
        )
        .also(trained.1, what)
        .help(format!("no gradient flows into a target: {order}")),
    );
    None
}

/// Refuses `v` (at `span`) as the logits of `loss` when a squashing function (`softmax`,
/// `sigmoid`) produced it: the loss would apply softmax a second time, and train, slowly,
/// something else.
fn logits(l: &mut Lower, loss: &str, (v, span): (ValueId, Span)) -> Option<()> {
    let Some(squashed) = squashed(l.g, v) else {
        return Some(());
    };
    // One sigmoid output: a binary classifier, for binary_cross_entropy.
    if squashed == "sigmoid" && l.g.ty(v).dims.last() == Some(&1) {
        l.diags.push(
            Diag::new(
                "nnc::train",
                format!("{loss} takes logits of several classes, found one sigmoid output"),
                span,
                "one probability",
            )
            .help("a sigmoid output is trained with `binary_cross_entropy(output, label)`"),
        );
        return None;
    }
    l.diags.push(
        Diag::new(
            "nnc::train",
            format!("{loss} takes logits, found the output of {squashed}"),
            span,
            format!("already through {squashed}"),
        )
        .help(format!(
            "{loss} applies softmax itself{}: remove `|> {squashed}` from the model that \
             computes it (`nnc predict` shows probabilities)",
            if loss == "cross_entropy" {
                ", as PyTorch's `F.cross_entropy` does"
            } else {
                ""
            }
        )),
    );
    None
}

/// The squashing function (`softmax`, `sigmoid`) that produced `v`, if one did: its values are
/// probabilities, not logits.
fn squashed(g: &Graph, v: ValueId) -> Option<&'static str> {
    match g.node(v).op {
        Op::Softmax => Some("softmax"),
        Op::Unary(UnaryOp::Sigmoid) => Some("sigmoid"),
        _ => None,
    }
}

/// The layer that produced `v` when its values are not probabilities (a linear layer, relu,
/// tanh, the other activations but the sigmoid, log_softmax): binary_cross_entropy needs p in (0, 1), cross_entropy a distribution.
fn unbounded(g: &Graph, v: ValueId) -> Option<&'static str> {
    let n = g.node(v);
    match n.op {
        Op::BiasAdd { .. } => unbounded(g, n.inputs[0]),
        Op::MatMul { .. } => Some("a dense layer"),
        Op::Conv2d(_) => Some("a convolution"),
        Op::RnnScan { .. } => Some("an rnn"),
        Op::GruScan => Some("a gru"),
        Op::LstmHidden | Op::Lstm => Some("an lstm"),
        // Every activation but the sigmoid (handled by `squashed`) and neg/exp/log (no stage).
        Op::Unary(
            u @ (UnaryOp::Relu
            | UnaryOp::Tanh
            | UnaryOp::LeakyRelu(_)
            | UnaryOp::Elu(_)
            | UnaryOp::Gelu
            | UnaryOp::GeluTanh
            | UnaryOp::Silu
            | UnaryOp::Softplus { .. }),
        ) => Some(u.name()),
        // Log-probabilities, all ≤ 0.
        Op::LogSoftmax => Some("log_softmax"),
        _ => None,
    }
}

/// Whether `v` depends on a parameter that is not frozen (the teacher's are).
fn depends_on_trainable(g: &Graph, v: ValueId) -> bool {
    g.reaches(
        v,
        |n| matches!(n.op, Op::Param(p) if !g.params[p.index()].frozen),
    )
}

/// α·CE(output, label) + (1−α)·T²·KL(softmax(teacher/T) ‖ softmax(output/T)).
fn kd(l: &mut Lower, vals: &[(ValueId, Span)], alpha: f64, t: f64, span: Span) -> Option<ValueId> {
    let (out, teacher, label) = (vals[0], vals[1], vals[2]);
    // PyTorch's `kd` recipes call `F.cross_entropy` without smoothing, and nnc's `kd` has none.
    let ce = cross_entropy(l, out, label, 0.0, span)?;
    same_shape(l, "kd", out, teacher)?;
    target_not_trained(l, "kd", &Op::KlDiv, [teacher, out])?;
    logits(l, "kd", teacher)?;
    let tc = l.g.constant(t as f32);
    let soft_out = val(l.push(Op::Binary(BinaryOp::Div), vec![out.0, tc], "kd", span))?;
    let soft_teacher = val(l.push(Op::Binary(BinaryOp::Div), vec![teacher.0, tc], "kd", span))?;
    let kl = val(l.push(Op::KlDiv, vec![soft_teacher, soft_out], "kd", span))?;
    let a = l.g.constant(alpha as f32);
    let k = l.g.constant(((1.0 - alpha) * t * t) as f32);
    let ce = val(l.push(Op::Binary(BinaryOp::Mul), vec![a, ce], "kd", span))?;
    let kl = val(l.push(Op::Binary(BinaryOp::Mul), vec![k, kl], "kd", span))?;
    val(l.push(Op::Binary(BinaryOp::Add), vec![ce, kl], "kd", span))
}

/// Why `l2(prefix)` found no weight: the parameters under it are frozen, or are all biases; or
/// the prefix matches nothing (then a likely path, which must not be one of the former).
fn l2_help(g: &crate::ir::Graph, prefix: &str) -> String {
    let under: Vec<_> = g
        .params
        .iter()
        .filter(|p| !p.path.starts_with("teacher.") && super::params::under(&p.path, prefix))
        .collect();
    let weights: Vec<_> = under
        .iter()
        .filter(|p| !p.path.ends_with(".bias"))
        .collect();
    if !under.is_empty() && under.iter().all(|p| p.is_buffer()) {
        format!(
            "`{prefix}` holds only a batch norm's running statistics, buffers that l2 does not \
             count (with `affine: false` it has no weight)"
        )
    } else if !weights.is_empty() && weights.iter().all(|p| p.frozen) {
        format!("the weights under `{prefix}` are all frozen (`freeze`), and l2 sums trainable weights only: remove the term, or unfreeze them")
    } else if !under.is_empty() && weights.is_empty() {
        format!("l2 sums weights, not biases, and `{prefix}` holds only biases")
    } else {
        super::params::suggest_path(g, prefix)
    }
}

fn val(v: V) -> Option<ValueId> {
    match v {
        V::T(v) => Some(v),
        _ => None,
    }
}

/// Σ w² over the trainable weights (not biases, not the teacher's) under an optional path prefix.
fn l2(l: &mut Lower, path: Option<&Expr>, span: Span) -> V {
    let prefix = match path.map(|e| (e, &e.kind)) {
        None => None,
        Some((_, ExprKind::Path(p))) => Some(consts::join_path(p)),
        Some((e, _)) => {
            return l.err(
                Diag::new(
                    "nnc::arg",
                    "l2 takes a parameter path",
                    e.span,
                    "expected a path like `encoder`",
                )
                .help("write `l2()` or `l2(encoder)`"),
            )
        }
    };
    let chosen: Vec<usize> = l
        .g
        .params
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.frozen && !p.path.ends_with(".bias") && !p.path.starts_with("teacher."))
        .filter(|(_, p)| {
            prefix
                .as_ref()
                .is_none_or(|pre| super::params::under(&p.path, pre))
        })
        .map(|(i, _)| i)
        .collect();
    if chosen.is_empty() {
        let prefix_str = prefix.as_deref().unwrap_or("");
        let what = prefix
            .as_ref()
            .map_or("this model".to_string(), |p| format!("`{p}`"));
        return l.err(
            Diag::new(
                "nnc::train",
                format!("l2 finds no trainable weight under {what}"),
                path.map_or(span, |e| e.span),
                "matches no weight",
            )
            .help(l2_help(l.g, prefix_str)),
        );
    }
    let mut total: Option<ValueId> = None;
    for i in chosen {
        let node =
            l.g.param_node(crate::ir::ParamId(i as u32))
                .expect("every parameter has a node");
        let sq = match l.push(Op::SumSquares, vec![node], "l2", span) {
            V::T(v) => v,
            _ => return V::Bad,
        };
        total = Some(match total {
            None => sq,
            Some(t) => match l.push(Op::Binary(BinaryOp::Add), vec![t, sq], "l2", span) {
                V::T(v) => v,
                _ => return V::Bad,
            },
        });
    }
    total.map_or(V::Bad, V::T)
}
