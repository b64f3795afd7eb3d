//! Every layer and activation: argument checks, shape checks with messages that give the numbers,
//! parameters (PyTorch's default initialization) and the IR nodes.

use super::args::{bind, Bound, Sig};
use super::consts::{self, MAX_ELEMENTS};
use super::gru::gru;
use super::images::{conv2d, global_pool, pool};
use super::lower::{Lower, V};
use super::names::{product, show};
use super::sequences::{embedding, lstm, one_hot, rnn, rnn_activation};
use super::stack::{layer_dropout, lone_dropout, num_layers, Recurrent};
use super::transposed::{
    conv_transpose2d, one_scale, transposed_padding, upsample, upsample_mode, Transpose,
    TransposeSpans,
};
use crate::diag::Diag;
use crate::ir::{DType, Graph, Init, Op, Param, Type, UnaryOp, ValueId, Window};
use crate::syntax::ast::{Arg, Expr, ExprKind, Ident, Span};

/// Layer names usable as stages.
pub const LAYERS: &[&str] = &[
    "dense",
    "conv2d",
    "conv_transpose2d",
    "upsample",
    "maxpool",
    "avgpool",
    "global_maxpool",
    "global_avgpool",
    "flatten",
    "embedding",
    "one_hot",
    "rnn",
    "gru",
    "lstm",
    "dropout",
    "layer_norm",
    "batch_norm",
];
/// Functions of several values, called in a model body (never stages).
pub const FUNCTIONS: &[&str] = &["concat"];
/// Elementwise (or last-axis) functions without parameters to train; some take arguments
/// ([`super::activations`]).
pub const ACTIVATIONS: &[&str] = &[
    "relu",
    "sigmoid",
    "tanh",
    "softmax",
    "log_softmax",
    "leaky_relu",
    "elu",
    "gelu",
    "silu",
    "softplus",
];

fn sig(kind: &str) -> Sig {
    match kind {
        "dense" => Sig {
            forms: &[&["out"], &["in", "out"]],
            named: &[],
            required: &["out"],
            usage: "`dense(out)` or `dense(in, out)`",
        },
        "conv2d" => Sig {
            forms: &[&["out"], &["in", "out"]],
            named: &["kernel", "stride", "padding"],
            required: &["out", "kernel"],
            usage:
                "`conv2d(out, kernel: k, stride: 1, padding: 0)` or `conv2d(in, out, kernel: k)`",
        },
        "conv_transpose2d" => Sig {
            forms: &[&["out"], &["in", "out"]],
            named: &["kernel", "stride", "padding", "output_padding"],
            required: &["out", "kernel"],
            usage: "`conv_transpose2d(out, kernel: k, stride: 1, padding: 0, output_padding: 0)` \
                    or `conv_transpose2d(in, out, kernel: k)`",
        },
        // `mode` first: a second positional argument (`upsample(2, "nearest")`, PyTorch's
        // functional order) is the mode, since `scale_factor` only renames the first.
        "upsample" => Sig {
            forms: &[&["scale"]],
            named: &["mode", "scale_factor"],
            required: &[],
            usage: "`upsample(s)` or `upsample(scale_factor: s)`",
        },
        "maxpool" => Sig {
            forms: &[&["kernel"]],
            named: &["stride", "padding"],
            required: &["kernel"],
            usage: "`maxpool(k, stride: k, padding: 0)`",
        },
        "avgpool" => Sig {
            forms: &[&["kernel"]],
            named: &["stride", "padding"],
            required: &["kernel"],
            usage: "`avgpool(k, stride: k, padding: 0)`",
        },
        "embedding" => Sig {
            forms: &[&["vocab", "dim"]],
            named: &[],
            required: &["vocab", "dim"],
            usage: "`embedding(vocab, dim)`",
        },
        "one_hot" => Sig {
            forms: &[&["n"]],
            named: &[],
            required: &["n"],
            usage: "`one_hot(n)`",
        },
        "rnn" => Sig {
            forms: &[&["hidden"]],
            named: &["activation", "bidirectional", "num_layers", "dropout"],
            required: &["hidden"],
            usage: "`rnn(hidden, activation: tanh)`, `bidirectional: true` for both directions, \
                    `num_layers: 2, dropout: 0.1` for a stack",
        },
        "gru" => Sig {
            forms: &[&["hidden"]],
            named: &["bidirectional", "num_layers", "dropout"],
            required: &["hidden"],
            usage: "`gru(hidden)`, `gru(hidden, bidirectional: true)` or \
                    `gru(hidden, num_layers: 2, dropout: 0.1)`",
        },
        "lstm" => Sig {
            forms: &[&["hidden"]],
            named: &["bidirectional", "num_layers", "dropout"],
            required: &["hidden"],
            usage: "`lstm(hidden)`, `lstm(hidden, bidirectional: true)` or \
                    `lstm(hidden, num_layers: 2, dropout: 0.1)`",
        },
        "dropout" => Sig {
            forms: &[&["p"]],
            named: &[],
            required: &["p"],
            usage: "`dropout(p)`",
        },
        "layer_norm" => Sig {
            forms: &[&[], &["dim"]],
            named: &["eps"],
            required: &[],
            usage: "`layer_norm`, `layer_norm(dim)` or `layer_norm(eps: 1e-5)`",
        },
        "batch_norm" => Sig {
            forms: &[&[], &["dim"]],
            named: &["momentum", "eps", "affine", "track_running_stats"],
            required: &[],
            usage: "`batch_norm`, `batch_norm(dim)` or `batch_norm(momentum: 0.1, eps: 1e-5)`",
        },
        "global_maxpool" => Sig {
            forms: &[&[]],
            named: &[],
            required: &[],
            usage: "`global_maxpool` (no arguments: the window is the whole map)",
        },
        "global_avgpool" => Sig {
            forms: &[&[]],
            named: &[],
            required: &[],
            usage: "`global_avgpool` (no arguments: the window is the whole map)",
        },
        _ => Sig {
            forms: &[&[]],
            named: &[],
            required: &[],
            usage: "`flatten`",
        },
    }
}

/// The instance-name stem of a layer kind (`conv2d` layers are `conv1`, `conv2`, …, and
/// `conv_transpose2d` ones `conv_transpose1`, …).
fn stem(kind: &'static str) -> &'static str {
    match kind {
        "conv2d" => "conv",
        "conv_transpose2d" => "conv_transpose",
        _ => kind,
    }
}

/// Collects argument errors while reading a bound call.
struct Reader<'b, 'l, 'a, 'g> {
    bound: &'b Bound<'b>,
    l: &'l mut Lower<'a, 'g>,
    ok: bool,
}

impl Reader<'_, '_, '_, '_> {
    fn get<T>(&mut self, name: &str, f: impl FnOnce(&Expr) -> Result<T, Diag>) -> Option<T> {
        let e = self.bound.get(name)?;
        match f(e) {
            Ok(v) => Some(v),
            Err(d) => {
                self.l.diags.push(d);
                self.ok = false;
                None
            }
        }
    }
    fn size(&mut self, name: &str, what: &str) -> Option<usize> {
        self.get(name, |e| consts::size(e, what))
    }
    /// The arguments `conv2d` and `conv_transpose2d` share: `out`, `in`, `kernel` and
    /// `stride` (1 unless given).
    fn conv_sizes(&mut self) -> (Option<usize>, Option<usize>, Option<usize>, Option<usize>) {
        let out = self.size("out", "the number of output channels");
        let inn = self.size("in", "the number of input channels");
        let k = self.size("kernel", "the kernel size");
        let s = self
            .get("stride", |e| consts::size(e, "the stride"))
            .or(Some(1));
        (out, inn, k, s)
    }
    /// The arguments every recurrent layer `kind` takes: `hidden`, `bidirectional`,
    /// `num_layers` and `dropout` (refused on a single layer, [`lone_dropout`]).
    fn recurrent(&mut self, kind: &str) -> Option<Recurrent> {
        let hidden = self.size("hidden", "the hidden size");
        let both = self.get("bidirectional", bidirectional).or(Some(false));
        let layers = self.get("num_layers", num_layers).or(Some(1));
        let dropout = self.get("dropout", layer_dropout).or(Some(0.0));
        let (hidden, both, layers, dropout) = (hidden?, both?, layers?, dropout?);
        if layers == 1 && dropout > 0.0 {
            self.l
                .diags
                .push(lone_dropout(kind, hidden, dropout, self.span("dropout")));
            self.ok = false;
            return None;
        }
        Some(Recurrent {
            hidden,
            both,
            layers,
            dropout,
        })
    }
    fn span(&self, name: &str) -> Span {
        self.bound
            .get(name)
            .map(|e| e.span)
            .unwrap_or(self.bound.span)
    }
}

/// Applies layer `kind` (called as `callee(args)`, spanning `span`) to `v`.
#[allow(clippy::too_many_arguments)]
pub fn layer(
    l: &mut Lower,
    kind: &'static str,
    callee: &Ident,
    args: &[Arg],
    span: Span,
    v: V,
    input_span: Span,
    alias: Option<&Ident>,
) -> V {
    let inst = l.instance(stem(kind), alias, span);
    let bound = match bind(callee, args, span, &sig(kind)) {
        Ok(b) => b,
        Err(ds) => {
            l.diags.extend(ds);
            return V::Bad;
        }
    };
    let mut r = Reader {
        bound: &bound,
        l,
        ok: true,
    };
    let cx = Site {
        span,
        input_span,
        inst,
    };
    let out = match kind {
        "dense" => {
            let out = r.size("out", "the output size");
            let inn = r.size("in", "the input size");
            let (Some(out), V::T(x), true) = (out, v, r.ok) else {
                return V::Bad;
            };
            let in_span = r.span("in");
            dense(r.l, &cx, x, inn.map(|i| (i, in_span)), out)
        }
        "conv2d" => {
            let (out, inn, k, s) = r.conv_sizes();
            let p = r.get("padding", padding).or(Some(Padding::Zeros(0)));
            let (Some(out), Some(k), Some(s), Some(p), V::T(x), true) = (out, k, s, p, v, r.ok)
            else {
                return V::Bad;
            };
            let Some(p) = same_padding(r.l, p, k, s, (r.span("padding"), r.span("stride"))) else {
                return V::Bad;
            };
            let spans = (r.span("in"), r.span("kernel"));
            conv2d(
                r.l,
                &cx,
                x,
                inn,
                out,
                Window {
                    kernel: k,
                    stride: s,
                    pad: p,
                },
                spans,
            )
        }
        "conv_transpose2d" => {
            let (out, inn, k, s) = r.conv_sizes();
            let p = r
                .get("padding", |e| transposed_padding(e, k, s))
                .or(Some(0));
            let op = r
                .get("output_padding", |e| consts::count(e, "the output padding"))
                .or(Some(0));
            let (Some(out), Some(k), Some(s), Some(p), Some(op), V::T(x), true) =
                (out, k, s, p, op, v, r.ok)
            else {
                return V::Bad;
            };
            let t = Transpose {
                inn,
                out,
                output_padding: op,
                spans: TransposeSpans {
                    inn: r.span("in"),
                    padding: r.span("padding"),
                    output_padding: r.span("output_padding"),
                },
            };
            let win = Window {
                kernel: k,
                stride: s,
                pad: p,
            };
            conv_transpose2d(r.l, &cx, x, t, win)
        }
        "upsample" => {
            let s = r.size("scale", "the scale factor");
            let sf = r.size("scale_factor", "the scale factor");
            r.get("mode", upsample_mode);
            let (V::T(x), true) = (v, r.ok) else {
                return V::Bad;
            };
            let spans = (r.span("scale"), r.span("scale_factor"));
            let Some(s) = one_scale(r.l, (s, sf), spans, cx.span) else {
                return V::Bad;
            };
            upsample(r.l, &cx, x, s)
        }
        "maxpool" | "avgpool" => {
            let k = r.size("kernel", "the window size");
            let s = r.get("stride", |e| consts::size(e, "the stride"));
            let p = r.get("padding", padding).or(Some(Padding::Zeros(0)));
            let (Some(k), Some(p), V::T(x), true) = (k, p, v, r.ok) else {
                return V::Bad;
            };
            let spans = (r.span("kernel"), r.span("padding"));
            let Some(pad) = pool_padding(r.l, kind, p, k, spans.1) else {
                return V::Bad;
            };
            let win = Window {
                kernel: k,
                stride: s.unwrap_or(k),
                pad,
            };
            pool(r.l, &cx, kind, x, win, spans.0)
        }
        "global_maxpool" | "global_avgpool" => match v {
            V::T(x) => global_pool(r.l, &cx, kind, x),
            _ => None,
        },
        "flatten" => match v {
            V::T(x) => flatten(r.l, &cx, x),
            _ => None,
        },
        "embedding" => {
            let vocab = r.size("vocab", "the vocabulary size");
            let dim = r.size("dim", "the embedding size");
            let (Some(vocab), Some(dim), V::T(x), true) = (vocab, dim, v, r.ok) else {
                return V::Bad;
            };
            embedding(r.l, &cx, x, vocab, dim)
        }
        "one_hot" => {
            let n = r.size("n", "the number of classes");
            let (Some(n), V::T(x), true) = (n, v, r.ok) else {
                return V::Bad;
            };
            one_hot(r.l, &cx, x, n)
        }
        "rnn" => {
            let spec = r.recurrent(kind);
            let act = r.get("activation", rnn_activation).or(Some(UnaryOp::Tanh));
            let (Some(spec), Some(act), V::T(x), true) = (spec, act, v, r.ok) else {
                return V::Bad;
            };
            rnn(r.l, &cx, x, spec, act)
        }
        "gru" | "lstm" => {
            let spec = r.recurrent(kind);
            let (Some(spec), V::T(x), true) = (spec, v, r.ok) else {
                return V::Bad;
            };
            match kind {
                "gru" => gru(r.l, &cx, x, spec),
                _ => lstm(r.l, &cx, x, spec),
            }
        }
        "dropout" => {
            let p = r.get("p", |e| {
                consts::fraction(e, "the dropout probability", 0.0, 1.0, false)
            });
            let (Some(p), V::T(x), true) = (p, v, r.ok) else {
                return V::Bad;
            };
            f32_input(r.l, &cx, "dropout", x).and_then(|x| dropout(r.l, &cx, x, p as f32))
        }
        "layer_norm" => {
            let dim = r.size("dim", "the normalized size");
            let eps = r.get("eps", norm_eps);
            let (V::T(x), true) = (v, r.ok) else {
                return V::Bad;
            };
            let dim_span = r.span("dim");
            layer_norm(r.l, &cx, x, dim.map(|d| (d, dim_span)), eps.unwrap_or(1e-5))
        }
        "batch_norm" => {
            let dim = r.size("dim", "the number of channels");
            let eps = r.get("eps", norm_eps);
            let momentum = r.get("momentum", |e| {
                consts::fraction(e, "the running statistics' momentum", 0.0, 1.0, true)
            });
            let affine = r.get("affine", |e| consts::boolean(e, "affine"));
            let track = r.get("track_running_stats", |e| {
                consts::boolean(e, "track_running_stats")
            });
            let (V::T(x), true) = (v, r.ok) else {
                return V::Bad;
            };
            let dim_span = r.span("dim");
            let hyper = BnHyper {
                eps: eps.unwrap_or(1e-5),
                momentum: momentum.map_or(0.1, |m| m as f32),
                affine: affine.unwrap_or(true),
                track: track.unwrap_or(true),
            };
            batch_norm(r.l, &cx, x, dim.map(|d| (d, dim_span)), hyper)
        }
        _ => unreachable!("LAYERS lists only the kinds handled here"),
    };
    out.map_or(V::Bad, V::T)
}

/// A convolution's `padding`: a number of zeros on each side, or PyTorch's `"same"`.
enum Padding {
    Zeros(usize),
    Same,
}

/// Reads `padding: 1`, `padding: "same"` or `padding: "valid"` (= 0), as PyTorch spells them.
fn padding(e: &Expr) -> Result<Padding, Diag> {
    let ExprKind::Str(s) = &e.kind else {
        return consts::count(e, "the padding").map(Padding::Zeros);
    };
    match s.as_str() {
        "same" => return Ok(Padding::Same),
        "valid" => return Ok(Padding::Zeros(0)),
        _ => {}
    }
    let lower = s.to_lowercase();
    let help = if lower == "same" || lower == "valid" {
        format!("write `\"{lower}\"` in lower case, as PyTorch does")
    } else {
        "the padding is the number of zeros added on each side (`padding: 1`), or `\"same\"` \
         (the output as large as the input, stride 1 only) or `\"valid\"` (no padding), as in \
         PyTorch"
            .to_string()
    };
    Err(Diag::new(
        "nnc::arg",
        format!("the padding must be a whole number, \"same\" or \"valid\", found \"{s}\""),
        e.span,
        "not a padding",
    )
    .help(help))
}

/// A pooling's `padding` with window `k`: a number of rows and columns added on each side,
/// which a max pool never picks (PyTorch's implicit −∞) and an average pool counts as zeros in
/// its k·k divisor (PyTorch's default `count_include_pad=True`); at most k/2, as PyTorch
/// requires, so that every window holds a value of the image. Keras' `padding="same"`, which
/// pads only where the windows need it (more at the bottom and right), is refused with the
/// number to write.
fn pool_padding(l: &mut Lower, kind: &str, p: Padding, k: usize, span: Span) -> Option<usize> {
    let (message, label, help) = match p {
        Padding::Zeros(p) if p <= k / 2 => return Some(p),
        Padding::Zeros(p) => (
            format!(
                "{kind}'s padding must be at most half its window, found padding {p} with a \
                 {k}×{k} window"
            ),
            format!("at most {}", k / 2),
            "a window in the padding alone would hold no value of the image (PyTorch refuses \
             it too)"
                .to_string(),
        ),
        Padding::Same => (
            format!("{kind} takes its padding as a number, not \"same\""),
            "not a number of rows".to_string(),
            format!(
                "as PyTorch's pools, nnc pads every side alike: `padding: {}` with stride 1 \
                 keeps an image's size (an odd window); Keras' `padding=\"same\"` pads only \
                 where the last window needs it, more at the bottom and right, which nnc does \
                 not",
                (k - 1) / 2
            ),
        ),
    };
    l.diags
        .push(Diag::new("nnc::arg", message, span, label).help(help));
    None
}

/// The zeros on each side for `padding` with kernel `k` and stride `s`: `"same"` is (k − 1)/2,
/// for stride 1 and an odd kernel only (PyTorch refuses other strides; for an even kernel it
/// pads one more row and column at the bottom and right, which nnc's symmetric windows cannot,
/// so it is refused rather than computed otherwise). `spans`: the padding's and the stride's.
fn same_padding(
    l: &mut Lower,
    p: Padding,
    k: usize,
    s: usize,
    spans: (Span, Span),
) -> Option<usize> {
    let Padding::Zeros(p) = p else {
        if s != 1 {
            l.diags.push(
                Diag::new(
                    "nnc::arg",
                    format!("`padding: \"same\"` needs stride 1, found stride {s}"),
                    spans.0,
                    "keeps the size only with stride 1",
                )
                .also(spans.1, format!("stride {s}"))
                .help(format!(
                    "as in PyTorch, which refuses it too; write the padding as a number: \
                     `padding: {}` gives an output of ⌊(H − 1)/{s}⌋ + 1 rows for an odd kernel",
                    (k.saturating_sub(1)) / 2
                )),
            );
            return None;
        }
        if k.is_multiple_of(2) {
            l.diags.push(
                Diag::new(
                    "nnc::arg",
                    format!("`padding: \"same\"` with an even kernel ({k}) needs uneven padding"),
                    spans.0,
                    format!(
                        "PyTorch pads {} on the top and left, {} on the bottom and right",
                        (k - 1) / 2,
                        k / 2
                    ),
                )
                .help(format!(
                    "nnc pads every side alike: use an odd kernel (`kernel: {}` keeps the size \
                     with `padding: \"same\"`), or write `padding: {}` (one row and column \
                     fewer than the input) or `padding: {}` (one more)",
                    k + 1,
                    (k - 1) / 2,
                    k / 2
                )),
            );
            return None;
        }
        return Some((k - 1) / 2);
    };
    Some(p)
}

/// The `eps` of `layer_norm` and `batch_norm`: in (0, 1), and a normal f32 (a smaller one is 0
/// in a compiled step, which flushes subnormal numbers).
/// A recurrent layer's `bidirectional:` (PyTorch's `bidirectional=True`).
fn bidirectional(e: &Expr) -> Result<bool, Diag> {
    consts::boolean(e, "bidirectional")
}

fn norm_eps(e: &Expr) -> Result<f32, Diag> {
    let v = consts::number(e)?;
    if v > 0.0 && v < f32::MIN_POSITIVE as f64 {
        Err(super::optim::subnormal_eps(e, v, "nnc::arg"))
    } else if v > 0.0 && v < 1.0 {
        Ok(v as f32)
    } else {
        Err(Diag::new(
            "nnc::arg",
            format!("eps must be in (0, 1), found {v}"),
            e.span,
            "out of range",
        )
        .help("eps is added to the variance under the square root: PyTorch's default is 1e-5"))
    }
}

/// Dropout of probability `p` on `x` while training (the identity otherwise): the `dropout`
/// layer, and the dropout between stacked recurrent layers.
pub(super) fn dropout(l: &mut Lower, cx: &Site, x: ValueId, p: f32) -> Option<ValueId> {
    if !l.training {
        return Some(x);
    }
    // Numbered in the graph, so that each dropout draws its own mask.
    let salt =
        l.g.nodes
            .iter()
            .filter(|n| matches!(n.op, Op::Dropout { .. }));
    let salt = salt.count() as u32;
    node(l, Op::Dropout { p, salt }, vec![x], cx)
}

/// Where a layer is, for messages and node labels.
pub(super) struct Site {
    pub span: Span,
    pub input_span: Span,
    pub inst: String,
}

pub(super) fn node(l: &mut Lower, op: Op, inputs: Vec<ValueId>, cx: &Site) -> Option<ValueId> {
    match l.push(op, inputs, &cx.inst, cx.span) {
        V::T(v) => Some(v),
        _ => None,
    }
}

/// Adds parameter `name` of this layer (`conv1.weight`), refusing absurd sizes.
pub(super) fn param(
    l: &mut Lower,
    cx: &Site,
    name: &str,
    dims: Vec<usize>,
    init: Init,
) -> Option<ValueId> {
    let n = dims
        .iter()
        .try_fold(1u64, |a, d| a.checked_mul(*d as u64))
        .unwrap_or(u64::MAX);
    if n > MAX_ELEMENTS {
        l.diags.push(
            Diag::new(
                "nnc::shape",
                format!("the {name} of this layer would have {n} elements"),
                cx.span,
                format!("{name} [{}]", product(&dims)),
            )
            .help("nnc supports tensors of up to 2^31 elements; check the sizes"),
        );
        return None;
    }
    let path = format!("{}{}.{name}", l.prefix, cx.inst);
    Some(l.g.add_param(Param {
        path,
        dims,
        init,
        frozen: false,
    }))
}

/// PyTorch's default for dense, conv, rnn and gru parameters: U(±1/√fan_in).
pub(super) fn uniform(fan_in: usize) -> Init {
    Init::Uniform {
        bound: 1.0 / (fan_in as f32).sqrt(),
    }
}

/// Reports a per-sample output larger than nnc supports.
pub(super) fn check_size(l: &mut Lower, cx: &Site, dims: &[usize]) -> Option<()> {
    check_value_size(l, cx, "output", dims)
}

/// [`check_size`] for a value of the layer other than its output, `what` (“saved state”).
pub(super) fn check_value_size(l: &mut Lower, cx: &Site, what: &str, dims: &[usize]) -> Option<()> {
    let n = dims
        .iter()
        .try_fold(1u64, |a, d| a.checked_mul(*d as u64))
        .unwrap_or(u64::MAX);
    if n > MAX_ELEMENTS {
        l.diags.push(
            Diag::new(
                "nnc::shape",
                format!("this layer's {what} would have {n} elements per sample"),
                cx.span,
                format!("[{}]", product(dims)),
            )
            .help("nnc supports tensors of up to 2^31 elements; check the sizes"),
        );
        return None;
    }
    Some(())
}

pub(super) fn f32_input(l: &mut Lower, cx: &Site, what: &str, x: ValueId) -> Option<ValueId> {
    let t = l.g.ty(x).clone();
    if t.dtype == DType::F32 {
        return Some(x);
    }
    l.diags.push(
        Diag::new(
            "nnc::shape",
            format!("{what} needs f32 values, found integer ids {}", show(&t)),
            cx.span,
            format!("{what} needs f32 values"),
        )
        .also(cx.input_span, format!("this is {}", show(&t)))
        .help(
            "turn token ids into vectors first: `|> embedding(vocab, dim)` or `|> one_hot(vocab)`",
        ),
    );
    None
}

pub(super) fn ids_input(l: &mut Lower, cx: &Site, what: &str, x: ValueId) -> Option<ValueId> {
    let t = l.g.ty(x).clone();
    if t.dtype == DType::I32 {
        return Some(x);
    }
    l.diags.push(
        Diag::new(
            "nnc::shape",
            format!("{what} needs integer ids, found f32 values {}", show(&t)),
            cx.span,
            "expects i32 ids",
        )
        .also(cx.input_span, format!("this is {}", show(&t)))
        .help(format!(
            "declare the model input as integer ids, e.g. `tokens: i32[{}]`",
            t.dims.first().copied().unwrap_or(64)
        )),
    );
    None
}

fn dense(
    l: &mut Lower,
    cx: &Site,
    x: ValueId,
    written_in: Option<(usize, Span)>,
    out: usize,
) -> Option<ValueId> {
    let x = f32_input(l, cx, "dense", x)?;
    let t = l.g.ty(x).clone();
    if t.dims.is_empty() {
        l.diags.push(
            Diag::new(
                "nnc::shape",
                "dense needs vectors, found one number per sample",
                cx.span,
                "expects [..., in]",
            )
            .also(cx.input_span, "this is one number per sample"),
        );
        return None;
    }
    let k = t.last();
    if let Some((w, wspan)) = written_in.filter(|(w, _)| *w != k) {
        let explain = match (t.dims.len(), l.flat_of.get(&x)) {
            (1, Some(orig)) => format!("{k} = {}", product(orig)),
            _ => k.to_string(),
        };
        let help = if t.dims.len() > 1 && w == t.per_sample() {
            format!("dense applies to the last axis of {}; flatten first: `|> flatten |> dense({w}, {out})`", show(&t))
        } else if let (1, Some(orig)) = (t.dims.len(), l.flat_of.get(&x)) {
            let dims: Vec<String> = orig.iter().map(|d| d.to_string()).collect();
            format!(
                "the value reaching this layer is {} flattened to [{k}]; write `dense({}, {out})`, or `dense({out})` to take the size from the input",
                show(&Type::f32(true, orig.clone())),
                dims.join("*")
            )
        } else {
            format!("the value reaching this layer is {}; write `dense({k}, {out})`, or `dense({out})` to take the size from the input", show(&t))
        };
        l.diags.push(
            Diag::new(
                "nnc::shape",
                format!("dense expects {k} inputs here, found {w}"),
                wspan,
                format!("expected {explain}, found {w}"),
            )
            .help(help),
        );
        return None;
    }
    let mut dims = t.dims.clone();
    *dims.last_mut().expect("not empty") = out;
    check_size(l, cx, &dims)?;
    let w = param(l, cx, "weight", vec![k, out], uniform(k))?;
    let b = param(l, cx, "bias", vec![out], uniform(k))?;
    let y = node(
        l,
        Op::MatMul {
            ta: false,
            tb: false,
        },
        vec![x, w],
        cx,
    )?;
    node(l, Op::BiasAdd { axis: t.rank() - 1 }, vec![y, b], cx)
}

/// `layer_norm` over the last axis of `x` (of size `written`, when the file gives it): its
/// `weight` starts at 1 and its `bias` at 0, as PyTorch's `LayerNorm`.
fn layer_norm(
    l: &mut Lower,
    cx: &Site,
    x: ValueId,
    written: Option<(usize, Span)>,
    eps: f32,
) -> Option<ValueId> {
    let x = f32_input(l, cx, "layer_norm", x)?;
    let t = l.g.ty(x).clone();
    let d = t.dims.last().copied();
    let Some(d) = d.filter(|&d| d > 1) else {
        l.diags.push(
            Diag::new(
                "nnc::shape",
                format!(
                    "layer_norm normalizes the last axis, found {}",
                    if t.dims.is_empty() {
                        "one number per sample".to_string()
                    } else {
                        format!(
                            "{}: a row of one value normalizes to 0, whatever it holds",
                            show(&t)
                        )
                    }
                ),
                cx.span,
                "expects [..., d] with d > 1",
            )
            .also(cx.input_span, "this is its input"),
        );
        return None;
    };
    let size = Size {
        layer: "layer_norm",
        unit: "values a row",
        taken: "the size",
    };
    size.matches(l, d, written, &t)?;
    let w = param(l, cx, "weight", vec![d], Init::Ones)?;
    let b = param(l, cx, "bias", vec![d], Init::Zeros)?;
    node(l, Op::LayerNorm { eps }, vec![x, w, b], cx)
}

/// A batch norm's settings.
struct BnHyper {
    eps: f32,
    momentum: f32,
    /// PyTorch's `affine`: a trained `weight` and `bias` (else y = x̂).
    affine: bool,
    /// PyTorch's `track_running_stats`: buffers of running statistics for evaluation (else
    /// the batch's statistics, in evaluation too).
    track: bool,
}

/// `batch_norm` over the channels of `x`: `[C]` vectors (PyTorch's `BatchNorm1d`) or `[C, H, W]`
/// images (`BatchNorm2d`), `written` the channel count the file gives. Its `weight` starts at 1
/// and its `bias` at 0; its buffers `running_mean` (0) and `running_var` (1) are parameters
/// that nothing trains (frozen). In training it normalizes with the batch's statistics, and
/// the graph's output `stats:<running_mean path>` carries them to the runtime, which folds
/// them into the buffers after each step; in evaluation it uses the buffers. Without
/// `affine` the weight and bias are constants (1 and 0, no parameters: the kernels are the
/// same); without `track_running_stats` there are no buffers and it normalizes with the
/// batch's statistics in evaluation too.
fn batch_norm(
    l: &mut Lower,
    cx: &Site,
    x: ValueId,
    written: Option<(usize, Span)>,
    h: BnHyper,
) -> Option<ValueId> {
    let x = f32_input(l, cx, "batch_norm", x)?;
    let t = l.g.ty(x).clone();
    if !t.batched || !(t.dims.len() == 1 || t.dims.len() == 3) {
        l.diags.push(
            Diag::new(
                "nnc::shape",
                format!(
                    "batch_norm normalizes [C] vectors or [C, H, W] images, found {}",
                    show(&t)
                ),
                cx.span,
                "expects [C] or [C, H, W]",
            )
            .also(cx.input_span, "this is its input")
            .help(
                "as PyTorch's BatchNorm1d (on [C]) and BatchNorm2d (on [C, H, W]); flatten the \
                 value first, or use `layer_norm` to normalize the last axis",
            ),
        );
        return None;
    }
    let c = t.dims[0];
    let size = Size {
        layer: "batch_norm",
        unit: "channels",
        taken: "the channels",
    };
    size.matches(l, c, written, &t)?;
    let (w, b) = if h.affine {
        (
            param(l, cx, "weight", vec![c], Init::Ones)?,
            param(l, cx, "bias", vec![c], Init::Zeros)?,
        )
    } else {
        let label = format!("{}{}", l.prefix, cx.inst);
        (
            l.g.filled(1.0, vec![c], &label),
            l.g.filled(0.0, vec![c], &label),
        )
    };
    let buffers = if h.track {
        let mean = buffer(l, cx, "running_mean", c, Init::Zeros)?;
        let var = buffer(l, cx, "running_var", c, Init::Ones)?;
        Some((mean, var))
    } else {
        None
    };
    if let (Some((mean, var)), false) = (buffers, l.training) {
        let eps = h.eps;
        return node(l, Op::BatchNormEval { eps }, vec![x, w, b, mean, var], cx);
    }
    let stats = node(
        l,
        Op::BatchStats {
            momentum: h.momentum,
        },
        vec![x],
        cx,
    )?;
    if let Some((mean, _)) = buffers {
        let path = param_of(l.g, mean).path.clone();
        l.g.set_output(&format!("stats:{path}"), stats);
    }
    node(l, Op::BatchNorm { eps: h.eps }, vec![x, stats, w, b], cx)
}

/// A batch norm that `freeze:` froze runs in `g` (a training graph) on its running statistics
/// and no longer updates them, as Keras's frozen `BatchNormalization`: its node becomes a
/// [`Op::BatchNormEval`] and its `stats:` output is dropped. It is frozen when its weight and
/// bias are, or, without `affine` (it has none), when one of the `frozen` paths covers it. A
/// batch norm without running statistics has nothing to run on but the batch's: it stays as
/// it is (its weight and bias, frozen, take no step). Whether it froze any: their
/// [`Op::BatchStats`] nodes are then dead, for the caller to drop once no [`ValueId`] into `g`
/// is held.
pub(super) fn freeze_batch_norms(g: &mut Graph, frozen: &[String]) -> bool {
    let mut froze = false;
    let param_node = |g: &Graph, path: &str| {
        g.values()
            .find(|&v| matches!(g.node(v).op, Op::Param(p) if g.params[p.index()].path == path))
    };
    for i in 0..g.nodes.len() {
        let Op::BatchNorm { eps } = g.nodes[i].op else {
            continue;
        };
        let [x, stats, w, b] = [0, 1, 2, 3].map(|k| g.nodes[i].inputs[k]);
        // The layer's path, from the output that carries its statistics to its buffers.
        let Some(stem) = g.outputs.iter().find_map(|o| {
            let mean = o.name.strip_prefix("stats:")?;
            (o.value == stats).then(|| mean.strip_suffix(".running_mean").unwrap_or(mean))
        }) else {
            continue;
        };
        let stem = stem.to_string();
        let is_frozen = |v: ValueId| match g.node(v).op {
            Op::Param(p) => g.params[p.index()].frozen,
            // No `affine`: a constant weight and bias.
            _ => frozen.iter().any(|f| super::params::under(&stem, f)),
        };
        if !(is_frozen(w) && is_frozen(b)) {
            continue;
        }
        let mean = param_node(g, &format!("{stem}.running_mean"));
        let var = param_node(g, &format!("{stem}.running_var"));
        let (Some(mean), Some(var)) = (mean, var) else {
            continue;
        };
        g.nodes[i].op = Op::BatchNormEval { eps };
        g.nodes[i].inputs = vec![x, w, b, mean, var];
        let name = format!("stats:{stem}.running_mean");
        g.outputs.retain(|o| o.name != name);
        froze = true;
    }
    froze
}

/// A batch norm's running statistic `name`: a parameter that no optimizer trains.
fn buffer(l: &mut Lower, cx: &Site, name: &str, c: usize, init: Init) -> Option<ValueId> {
    let v = param(l, cx, name, vec![c], init)?;
    if let Op::Param(p) = l.g.node(v).op {
        l.g.params[p.index()].frozen = true;
    }
    Some(v)
}

/// The parameter that `v`, a [`param`] node, reads.
fn param_of(g: &Graph, v: ValueId) -> &Param {
    match g.node(v).op {
        Op::Param(p) => &g.params[p.index()],
        ref op => unreachable!("{} is not a parameter", op.name()),
    }
}

/// The size of a normalization layer (`layer_norm`'s row, `batch_norm`'s channels), which the
/// file may also write as its argument.
struct Size {
    layer: &'static str,
    /// What the size counts (`channels`).
    unit: &'static str,
    /// What the layer takes from its input when no size is written (`the channels`).
    taken: &'static str,
}

impl Size {
    /// Whether the size `written` in the file (with its span), if any, is the input's, `found`
    /// (`t` being the input): else an error, with the two ways to write the layer.
    fn matches(
        &self,
        l: &mut Lower,
        found: usize,
        written: Option<(usize, Span)>,
        t: &Type,
    ) -> Option<()> {
        let Some((w, span)) = written.filter(|(w, _)| *w != found) else {
            return Some(());
        };
        let (layer, unit, taken) = (self.layer, self.unit, self.taken);
        l.diags.push(
            Diag::new(
                "nnc::shape",
                format!("{layer} expects {found} {unit} here, found {w}"),
                span,
                format!("expected {found}, found {w}"),
            )
            .help(format!(
                "the value reaching this layer is {}; write `{layer}({found})`, or `{layer}` \
                 to take {taken} from the input",
                show(t)
            )),
        );
        None
    }
}

fn flatten(l: &mut Lower, cx: &Site, x: ValueId) -> Option<ValueId> {
    let t = l.g.ty(x).clone();
    if t.dims.len() <= 1 {
        return Some(x);
    }
    let ty = Type {
        dtype: t.dtype,
        batched: t.batched,
        dims: vec![t.per_sample()],
    };
    let label = format!("{}{}", l.prefix, cx.inst);
    let y = l.g.push_typed(Op::Reshape, vec![x], ty, label);
    l.flat_of.insert(y, t.dims);
    Some(y)
}

/// Activation `name`, computed by `op` ([`super::activations::op`]), applied to `v`; its node is
/// labelled `label` (the name given by `as`, else the activation's own).
pub fn activation(
    l: &mut Lower,
    (name, op): (&str, Op),
    label: &str,
    v: V,
    input_span: Span,
    span: Span,
) -> V {
    let V::T(x) = v else { return V::Bad };
    let cx = Site {
        span,
        input_span,
        inst: name.to_string(),
    };
    let Some(x) = f32_input(l, &cx, name, x) else {
        return V::Bad;
    };
    l.push(op, vec![x], label, span)
}
