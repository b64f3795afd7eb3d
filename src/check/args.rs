//! Binding call arguments (`conv2d(32, kernel: 3, padding: 1)`) to a signature, with errors for
//! unknown, repeated, missing and surplus arguments.

use super::names::did_you_mean;
use crate::diag::Diag;
use crate::syntax::ast::{Arg, Expr, ExprKind, Ident, Span};

/// What a callee accepts.
pub struct Sig {
    /// The accepted positional forms, shortest first: `dense` has `[["out"], ["in", "out"]]`.
    pub forms: &'static [&'static [&'static str]],
    /// Arguments that can only be named.
    pub named: &'static [&'static str],
    /// Arguments that must be given (positionally or by name).
    pub required: &'static [&'static str],
    /// How to write a call, for help lines: `conv2d(out, kernel: k)`.
    pub usage: &'static str,
}

/// Arguments bound to parameter names.
pub struct Bound<'a> {
    pub span: Span,
    args: Vec<(&'static str, &'a Expr)>,
}

impl<'a> Bound<'a> {
    pub fn get(&self, name: &str) -> Option<&'a Expr> {
        self.args.iter().find(|(n, _)| *n == name).map(|(_, e)| *e)
    }
}

/// Binds `args` of a call to `callee` (spanning `span`) to `sig`; all problems are reported.
pub fn bind<'a>(
    callee: &Ident,
    args: &'a [Arg],
    span: Span,
    sig: &Sig,
) -> Result<Bound<'a>, Vec<Diag>> {
    let mut diags = Vec::new();
    let positional: Vec<&Expr> = args
        .iter()
        .filter(|a| a.name.is_none())
        .map(|a| &a.value)
        .collect();
    let max = sig.forms.iter().map(|f| f.len()).max().unwrap_or(0);
    let mut bound: Vec<(&'static str, &'a Expr)> = Vec::new();
    if positional.len() > max {
        let extra = positional[max]
            .span
            .to(positional[positional.len() - 1].span);
        let takes = match sig
            .forms
            .iter()
            .map(|f| f.len())
            .collect::<Vec<_>>()
            .as_slice()
        {
            [] | [0] => "no positional arguments".to_string(),
            [n] => super::names::plural(*n, "positional argument"),
            ns => format!(
                "{} positional arguments",
                ns.iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        };
        diags.push(
            Diag::new(
                "nnc::arg",
                format!("{} takes {takes}, found {}", callee.name, positional.len()),
                extra,
                if positional.len() - max == 1 {
                    "unexpected argument"
                } else {
                    "unexpected arguments"
                },
            )
            .help(if positional.iter().any(|e| passes_parameters(e)) {
                format!(
                    "nnc trains the run's parameters itself: write {} without them",
                    sig.usage
                )
            } else if let Some(h) = recurrent_in_hidden(callee, &positional) {
                h
            } else {
                match name_surplus(callee, args, sig, max) {
                    Some(call) => format!("write it as `{call}`"),
                    None => format!("write it as {}", sig.usage),
                }
            }),
        );
    } else {
        let names: &[&'static str] = sig
            .forms
            .iter()
            .find(|f| f.len() >= positional.len())
            .copied()
            .unwrap_or(&[]);
        for (n, e) in names.iter().zip(&positional) {
            bound.push((n, e));
        }
    }
    let all: Vec<&'static str> = sig
        .forms
        .iter()
        .flat_map(|f| f.iter().copied())
        .chain(sig.named.iter().copied())
        .collect();
    for a in args {
        let Some(name) = &a.name else { continue };
        let Some(known) = all.iter().find(|n| **n == name.name) else {
            let mut d = Diag::new(
                "nnc::arg",
                format!("{} has no argument `{}`", callee.name, name.name),
                name.span,
                "unknown argument",
            );
            let hint = foreign_argument(&callee.name, &name.name, &all)
                .or_else(|| recurrent_argument(&callee.name, &name.name))
                .or_else(|| did_you_mean(&name.name, all.iter().copied()))
                .or_else(|| as_first_argument(callee, args, a, sig));
            d = d.help(match hint {
                Some(h) => format!("{h} ({} is written {})", callee.name, sig.usage),
                None => format!("{} is written {}", callee.name, sig.usage),
            });
            diags.push(d);
            continue;
        };
        if let Some((_, prev)) = bound.iter().find(|(n, _)| n == known) {
            let mut d = Diag::new(
                "nnc::arg",
                format!("argument `{known}` is given twice"),
                name.span,
                "given again here",
            )
            .also(prev.span, "first given here");
            // PyTorch's `Adam(model.parameters(), lr=…)`: `params` was read as the `lr`.
            if passes_parameters(prev) {
                d = d.help(format!(
                    "nnc trains the run's parameters itself: write {} without `{}`",
                    sig.usage,
                    written(prev).unwrap_or_default()
                ));
            }
            diags.push(d);
            continue;
        }
        bound.push((known, &a.value));
    }
    if diags.is_empty() {
        let missing: Vec<&str> = sig
            .required
            .iter()
            .copied()
            .filter(|r| !bound.iter().any(|(n, _)| n == r))
            .collect();
        if !missing.is_empty() {
            let list = missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(" and ");
            diags.push(
                Diag::new(
                    "nnc::arg",
                    format!("{} needs {list}", callee.name),
                    span,
                    format!("missing {list}"),
                )
                .help(format!("write it as {}", sig.usage)),
            );
        }
    }
    if diags.is_empty() {
        Ok(Bound { span, args: bound })
    } else {
        Err(diags)
    }
}

/// Whether `e` is PyTorch's `params` (or `parameters`) handed to an optimizer.
fn passes_parameters(e: &Expr) -> bool {
    written(e).is_some_and(|w| w == "params" || w == "parameters")
}

/// What nnc calls an argument named as PyTorch or Keras name it, among `all` (the call's), or
/// why it takes none: guessing from the spelling would map `in_channels` to `out`, or
/// `keep_prob` to `p` (the probability of dropping).
fn foreign_argument(callee: &str, name: &str, all: &[&str]) -> Option<String> {
    let nnc = match name {
        "in_channels" | "in_features" | "input_dim" | "input_size" => "in",
        "out_channels" | "out_features" | "units" | "filters" | "output_dim" => "out",
        "num_embeddings" => "vocab",
        // Keras' `Conv2D(filters, kernel_size, strides)` and `Conv2DTranspose(…)`.
        "kernel_size" | "pool_size" => "kernel",
        "strides" => "stride",
        // Keras' `UpSampling2D(size=2, interpolation="nearest")`; PyTorch's `Upsample(size=…)`
        // is an output size, which nnc does not take.
        "size" if callee == "upsample" => {
            return Some(
                "Keras' `UpSampling2D(size=2)` is `upsample(2)`, PyTorch's \
                 `nn.Upsample(scale_factor=2)`; an output size (PyTorch's `size=`) is not taken: \
                 give the scale"
                    .into(),
            )
        }
        "interpolation" if callee == "upsample" => "mode",
        // PyTorch's `MaxPool2d(k, stride, padding, dilation, return_indices, ceil_mode)` and
        // `AvgPool2d(…, ceil_mode, count_include_pad, divisor_override)` beyond nnc's three.
        "ceil_mode" if matches!(callee, "maxpool" | "avgpool") => {
            return Some(
                "nnc floors the output size, as PyTorch's default `ceil_mode=False`: a last \
                 window that would start inside the image but end past it is left out; \
                 `padding:` adds windows at the borders"
                    .into(),
            )
        }
        "count_include_pad" | "divisor_override" if callee == "avgpool" => {
            return Some(
                "nnc's average pool divides every window's sum by k·k, the padding's zeros \
                 included, as PyTorch's default `count_include_pad=True`; other divisors are \
                 not offered"
                    .into(),
            )
        }
        "dilation" | "return_indices" if matches!(callee, "maxpool" | "avgpool") => {
            return Some(format!(
                "{callee} takes a window, a stride and a padding: remove `{name}`"
            ))
        }
        "embedding_dim" => "dim",
        "hidden_size" => "hidden",
        "nonlinearity" => "activation",
        "layers" | "n_layers" | "nlayers" => "num_layers",
        "step_size" => "every",
        // Keras' `EarlyStopping(restore_best_weights=True)`.
        "restore_best_weights" => "restore_best",
        // Keras' `EarlyStopping(monitor="val_loss", mode="min")` inside nnc's `loss(…)`.
        "monitor" | "mode" if callee == "loss" || callee == "accuracy" => {
            return Some(format!(
                "the metric watched is the one called, `{callee}(…)` the test {callee}, and \
                 {}: remove `{name}`",
                if callee == "loss" {
                    "lower is better"
                } else {
                    "higher is better"
                }
            ))
        }
        // Keras 2's `LeakyReLU(alpha=0.3)`, now `negative_slope` as PyTorch's.
        "alpha" if callee == "leaky_relu" => "negative_slope",
        "inplace" => {
            return Some(format!(
                "nnc plans the memory of its values itself: write `{callee}` without `inplace`"
            ))
        }
        // Keras' RMSprop(rho=0.9) is PyTorch's RMSprop(alpha=0.9).
        "rho" if callee == "rmsprop" => "alpha",
        // PyTorch's losses take `input` and `target`; the table of spec §8 shows `label`.
        "input" if callee == "cross_entropy" => "logits",
        "input" if callee == "binary_cross_entropy" => "p",
        "label" | "labels" if callee.ends_with("cross_entropy") => "target",
        "keep_prob" if callee == "dropout" => {
            return Some(
                "nnc's `p` is the probability of dropping, as PyTorch's: `keep_prob: 0.8` is \
                 `dropout(0.2)`"
                    .into(),
            )
        }
        "T_max" if callee == "cosine" => {
            return Some(
                "cosine decays over the whole run (its `steps` or `epochs`): remove `T_max`".into(),
            )
        }
        // Keras takes clipping as an optimizer argument; nnc, as PyTorch, as a step of its own.
        "clipnorm" | "global_clipnorm" | "clip_grad_norm" | "max_norm" | "clipvalue"
            if ["sgd", "adam", "adamw", "rmsprop"].contains(&callee) =>
        {
            return Some(
                "gradient clipping is a setting of the train block, not of the optimizer: \
                 `clip_grad_norm: 1.0` clips the gradients' total norm (Keras' \
                 `global_clipnorm`, PyTorch's `clip_grad_norm_`)"
                    .into(),
            )
        }
        // PyTorch's losses took `size_average` and `reduce` before `reduction` replaced them.
        "size_average" if all.contains(&"reduction") => {
            return Some(
                "`size_average` is PyTorch's deprecated spelling of `reduction`: \
                 `size_average=False` is `reduction: \"sum\"`; leave it out for the mean"
                    .into(),
            )
        }
        "reduce" if all.contains(&"reduction") => {
            return Some(
                "`reduce` is PyTorch's deprecated spelling of `reduction`: `reduce=False` kept \
                 one loss per element, and a training loss is one number; leave it out for the \
                 mean, or write `reduction: \"sum\"`"
                    .into(),
            )
        }
        "center" | "scale" if callee == "batch_norm" => {
            return Some(
                "Keras' `center` and `scale` are PyTorch's `affine`, both at once: \
                 `batch_norm(affine: false)` has neither a bias nor a weight"
                    .into(),
            )
        }
        "reduction" if callee == "kd" => {
            return Some(
                "kd mixes two terms, each averaged over the samples; for their sums, write them \
                 out: `0.5 * cross_entropy(output, label, reduction: \"sum\") + 0.5 * 16 * \
                 kl_div(teacher / 4, output / 4, reduction: \"sum\")` is `kd(output, teacher, \
                 label, alpha: 0.5, temperature: 4)` summed"
                    .into(),
            )
        }
        "reduction" if callee == "l2" => {
            return Some("l2 is a sum of squares already, over the weights, not the batch".into())
        }
        "params" | "parameters" if ["sgd", "adam", "adamw", "rmsprop"].contains(&callee) => {
            return Some("nnc trains the run's parameters itself: remove this argument".into())
        }
        _ => return None,
    };
    all.contains(&nnc)
        .then(|| format!("nnc calls `{name}` `{nnc}`"))
}

/// The recurrent layers, with PyTorch's name of each and the name as a noun.
const RECURRENT: [(&str, &str, &str); 3] = [
    ("rnn", "RNN", "an rnn"),
    ("gru", "GRU", "a gru"),
    ("lstm", "LSTM", "an lstm"),
];

/// For a recurrent layer given PyTorch's `(input_size, hidden_size)`, `lstm(8, 10)`, or
/// `(input_size, hidden_size, num_layers)`, `lstm(8, 10, 2)`: that the input size comes from
/// the input (rather than naming the second number an `activation`, or the third a
/// `bidirectional`).
fn recurrent_in_hidden(callee: &Ident, positional: &[&Expr]) -> Option<String> {
    let (name, torch, _) = RECURRENT.iter().find(|(n, ..)| *n == callee.name)?;
    let (input, hidden, layers) = match positional {
        [input, hidden] => (written(input)?, written(hidden)?, None),
        [input, hidden, layers] => (written(input)?, written(hidden)?, Some(written(layers)?)),
        _ => return None,
    };
    let (torch_layers, nnc_layers) = match &layers {
        Some(n) => (format!(", num_layers={n}"), format!(", num_layers: {n}")),
        None => (String::new(), String::new()),
    };
    Some(format!(
        "{name} reads its input size from the sequence it is given: PyTorch's \
         `nn.{torch}({input}, {hidden}{torch_layers}, batch_first=True)` is \
         `{name}({hidden}{nnc_layers})`"
    ))
}

/// For PyTorch's and Keras' arguments of a recurrent layer that nnc has no use for, or lacks:
/// what nnc does instead.
fn recurrent_argument(callee: &str, name: &str) -> Option<String> {
    let (_, _, noun) = RECURRENT.iter().find(|(n, ..)| *n == callee)?;
    Some(match name {
        "input_size" | "input_dim" | "in" => format!(
            "{callee} reads its input size from the sequence it is given, [T, features]: \
             remove `{name}`"
        ),
        "batch_first" => format!(
            "nnc's {callee} is always batch first (PyTorch's `batch_first=True`): remove it"
        ),
        "return_sequences" => format!(
            "nnc's {callee} returns every step's hidden state, [T, hidden] (Keras' \
             `return_sequences=True`): remove it"
        ),
        "go_backwards" => format!(
            "nnc's {callee} has no `go_backwards`; `{callee}(64, bidirectional: true)` runs a \
             second direction backwards in time beside the forward one"
        ),
        "recurrent_dropout" => format!(
            "nnc has no dropout inside the recurrence; `dropout:` drops the outputs between \
             stacked layers, as PyTorch's: `{callee}(64, num_layers: 2, dropout: 0.1)`"
        ),
        "bias" | "use_bias" => format!("{noun} always has its biases"),
        // Keras' `LSTM(units)`; `foreign_argument` maps `units` to `out`, which no recurrent
        // layer has.
        "units" => "nnc calls `units` `hidden`".to_string(),
        "proj_size" => format!(
            "nnc's {callee} has no projection of its hidden state (PyTorch's `proj_size`): \
             `{callee}(64) |> dense(32)` projects every step's output, not the state fed back"
        ),
        _ => return None,
    })
}

/// A call's argument as written, when it is short enough to show: a number, a name or a path,
/// a string, negated or not.
pub(super) fn written(e: &Expr) -> Option<String> {
    Some(match &e.kind {
        ExprKind::Number { text, .. } => text.clone(),
        ExprKind::Str(s) => format!("{s:?}"),
        ExprKind::Path(segments) => segments
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join("."),
        ExprKind::Neg(inner) => format!("-{}", written(inner)?),
        _ => return None,
    })
}

/// `callee(items)` as written, each item `value` or `name: value`; `None` when a value is
/// not [`written`] simply.
fn call_text(callee: &Ident, items: &[(Option<&str>, &Expr)]) -> Option<String> {
    let items = items
        .iter()
        .map(|(name, e)| {
            let v = written(e)?;
            Some(match name {
                Some(n) => format!("{n}: {v}"),
                None => v,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(format!("{}({})", callee.name, items.join(", ")))
}

/// The named arguments whose values are strings (`upsample`'s `mode`).
const STRING_ARGS: &[&str] = &["mode"];

/// The call with its surplus positional arguments (those after the `max` a form takes) named,
/// in order, after the named-only arguments not already given: `avgpool(2, 2)` →
/// `avgpool(2, stride: 2)`, `conv2d(1, 32, 3)` → `conv2d(1, 32, kernel: 3)`.
fn name_surplus(callee: &Ident, args: &[Arg], sig: &Sig, max: usize) -> Option<String> {
    let given = |n: &str| {
        args.iter()
            .any(|a| a.name.as_ref().is_some_and(|i| i.name == n))
    };
    let mut free = sig.named.iter().copied().filter(|n| !given(n));
    let mut seen = 0;
    let mut items = Vec::new();
    for a in args {
        match &a.name {
            Some(n) => items.push((Some(n.name.as_str()), &a.value)),
            None => {
                seen += 1;
                let name = if seen > max { Some(free.next()?) } else { None };
                // `upsample(2, 2)` is not `upsample(2, mode: 2)`: a number never names a
                // parameter that takes a string; the usage is shown instead.
                if name.is_some_and(|n| STRING_ARGS.contains(&n))
                    && !matches!(a.value.kind, ExprKind::Str(_))
                {
                    return None;
                }
                items.push((name, &a.value));
            }
        }
    }
    call_text(callee, &items)
}

/// For an unknown argument `unknown` of a call given no positional argument and lacking the
/// required first parameter of its forms: that it is most likely that parameter, written first
/// (`avgpool(size: 2)` → `avgpool(2)`).
fn as_first_argument(callee: &Ident, args: &[Arg], unknown: &Arg, sig: &Sig) -> Option<String> {
    let first = *sig.forms.iter().find_map(|f| f.first())?;
    let given = args.iter().any(|a| match &a.name {
        None => true,
        Some(n) => n.name == first,
    });
    if given || !sig.required.contains(&first) {
        return None;
    }
    let mut items = vec![(None, &unknown.value)];
    items.extend(
        args.iter()
            .filter(|a| !std::ptr::eq(*a, unknown))
            .map(|a| (a.name.as_ref().map(|n| n.name.as_str()), &a.value)),
    );
    let call = call_text(callee, &items)?;
    let name = &unknown.name.as_ref()?.name;
    Some(format!("if `{name}` is the `{first}`, write `{call}`"))
}
