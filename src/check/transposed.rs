//! The decoder's image layers: `conv_transpose2d` (PyTorch's `nn.ConvTranspose2d`) and
//! `upsample` (`nn.Upsample(scale_factor=s, mode='nearest')`), both lowered to ops that a
//! convolution's and a pooling's gradients already use, so that their kernels, and the rules
//! that differentiate them, serve both.

use super::images::image;
use super::layers::{check_size, node, param, uniform, Site};
use super::lower::Lower;
use super::names::plural;
use crate::diag::Diag;
use crate::ir::{BinaryOp, Op, Type, ValueId, Window};
use crate::syntax::ast::{Expr, ExprKind, Span};

/// A transposed convolution's arguments beside its window: the channels, `output_padding`,
/// and the spans of `in`, `padding` and `output_padding` for messages.
pub(super) struct Transpose {
    pub inn: Option<usize>,
    pub out: usize,
    pub output_padding: usize,
    pub spans: TransposeSpans,
}

pub(super) struct TransposeSpans {
    pub inn: Span,
    pub padding: Span,
    pub output_padding: Span,
}

/// The output extent of a transposed convolution along one axis of `len`:
/// (len − 1)·s − 2p + k + output_padding, or `None` when that is not positive.
fn transposed_len(win: &Window, len: usize, output_padding: usize) -> Option<usize> {
    ((len - 1) * win.stride + win.kernel + output_padding)
        .checked_sub(2 * win.pad)
        .filter(|n| *n > 0)
}

/// Reads `conv_transpose2d`'s `padding`: a number of rows and columns cropped off each side.
/// PyTorch's `nn.ConvTranspose2d` takes no string; Keras' `Conv2DTranspose` takes `"same"`
/// (the output `stride` times the input) and `"valid"`, which are answered with the numbers
/// that give them for this `kernel` and `stride` (when those were read).
pub(super) fn transposed_padding(
    e: &Expr,
    kernel: Option<usize>,
    stride: Option<usize>,
) -> Result<usize, Diag> {
    let ExprKind::Str(mode) = &e.kind else {
        return super::consts::count(e, "the padding");
    };
    let times = |s: usize| match s {
        1 => "as large as the input".to_string(),
        _ => format!("{s} times the input"),
    };
    let help = match (mode.to_lowercase().as_str(), kernel, stride) {
        ("valid", ..) => "Keras' `padding=\"valid\"` is `padding: 0` (the default)".to_string(),
        ("same", Some(k), Some(s)) => match same_numbers(k, s) {
            Some((0, 0)) => format!(
                "Keras' `padding=\"same\"` makes the output {}; here the \
                 default `padding: 0` does: remove `padding`",
                times(s)
            ),
            Some((p, q)) => {
                let (fix, plus) = match q {
                    0 => (format!("`padding: {p}`"), String::new()),
                    _ => (
                        format!("`padding: {p}, output_padding: {q}`"),
                        format!(" + {q}"),
                    ),
                };
                format!(
                    "Keras' `padding=\"same\"` makes the output {}; here \
                     {fix} does ((H − 1)·{s} − 2·{p} + {k}{plus} = {s}·H)",
                    times(s)
                )
            }
            None => format!(
                "Keras' `padding=\"same\"` makes the output {}, which a \
                 kernel of {k} with stride {s} cannot reach with the same padding on every \
                 side: use an odd kernel (`kernel: {}`)",
                times(s),
                k + 1
            ),
        },
        _ => "write the number of rows and columns cropped off each side of the output, \
              e.g. `padding: 1`"
            .to_string(),
    };
    Err(Diag::new(
        "nnc::arg",
        format!("conv_transpose2d's padding is a whole number, found \"{mode}\""),
        e.span,
        "not a padding",
    )
    .help(help))
}

/// The `padding` p and `output_padding` q < s with which a transposed convolution of kernel
/// k and stride s gives s·H rows for H: (H − 1)·s − 2p + k + q = s·H, so 2p − q = k − s.
/// `None` when no q < s fits (stride 1 with an even kernel).
fn same_numbers(k: usize, s: usize) -> Option<(usize, usize)> {
    let p = k.saturating_sub(s).div_ceil(2);
    let q = (2 * p + s).checked_sub(k)?;
    (q < s).then_some((p, q))
}

/// `conv_transpose2d`: `[C, H, W] -> [out, H', W']` with H' = (H − 1)·s − 2p + k +
/// output_padding. The weight is `[C, out, k, k]`, PyTorch's layout, so that
/// `conv2d_grad_input(x, weight)` is the transposed convolution: each input value spreads its
/// kernel-weighted copy over the output window a convolution by the same window would have
/// read it from. The convolution by that window maps H' back to H for any output_padding < s,
/// so the window alone, with the node's type, describes the op.
pub(super) fn conv_transpose2d(
    l: &mut Lower,
    cx: &Site,
    x: ValueId,
    t: Transpose,
    win: Window,
) -> Option<ValueId> {
    let (c, h, w) = image(l, cx, "conv_transpose2d", x)?;
    let Transpose {
        inn,
        out,
        output_padding: op,
        spans,
    } = t;
    if let Some(i) = inn.filter(|i| *i != c) {
        l.diags.push(
            Diag::new(
                "nnc::shape",
                format!(
                    "conv_transpose2d expects {} here, found {i}",
                    plural(c, "input channel")
                ),
                spans.inn,
                format!("expected {c}, found {i}"),
            )
            .help(format!(
                "the image reaching this layer is [{c}, {h}, {w}]; write \
                 `conv_transpose2d({c}, {out}, …)` or leave the input channels out"
            )),
        );
        return None;
    }
    if op >= win.stride {
        l.diags.push(
            Diag::new(
                "nnc::arg",
                format!(
                    "output_padding must be smaller than the stride, found output_padding {op} \
                     with stride {}",
                    win.stride
                ),
                spans.output_padding,
                format!("at most {}", win.stride - 1),
            )
            .help(
                "output_padding adds rows and columns at the bottom and right that no stride \
                 step reaches, fewer than one step (PyTorch refuses it too); to grow the \
                 output further, use a larger kernel or less padding",
            ),
        );
        return None;
    }
    let (Some(oh), Some(ow)) = (transposed_len(&win, h, op), transposed_len(&win, w, op)) else {
        let full = (h.min(w) - 1) * win.stride + win.kernel + op;
        l.diags.push(
            Diag::new(
                "nnc::shape",
                format!(
                    "conv_transpose2d's padding leaves no output: {} on each side of {full}",
                    win.pad
                ),
                spans.padding,
                format!("crops {} from each side", win.pad),
            )
            .help(format!(
                "padding crops the transposed convolution's full output, (H − 1)·stride + \
                 kernel + output_padding = {full} here: use a padding of at most {}",
                (full - 1) / 2
            )),
        );
        return None;
    };
    check_size(l, cx, &[out, oh, ow])?;
    // PyTorch's fan_in for a transposed convolution is weight.size(1)·k·k: its output channels
    // (the weight is [in, out, k, k]), as `_calculate_fan_in_and_fan_out` reads any weight.
    let fan_in = out * win.kernel * win.kernel;
    let k = param(
        l,
        cx,
        "weight",
        vec![c, out, win.kernel, win.kernel],
        uniform(fan_in),
    )?;
    let b = param(l, cx, "bias", vec![out], uniform(fan_in))?;
    let ty = Type::f32(true, vec![out, oh, ow]);
    let y = typed(l, Op::Conv2dGradInput(win), vec![x, k], ty, cx);
    l.transposed.push((y, cx.span));
    node(l, Op::BiasAdd { axis: 1 }, vec![y, b], cx)
}

/// `upsample(s)`: `[C, H, W] -> [C, s·H, s·W]`, each value repeated over an s×s block (nearest
/// neighbour). An average pooling's gradient by an s×s window of stride s spreads each value
/// over its block divided by s², so the input is first multiplied by s² (on the smaller map):
/// exact for a power of two, within an ulp otherwise. The gradient is then an average pooling
/// times s², the block's sum.
pub(super) fn upsample(l: &mut Lower, cx: &Site, x: ValueId, s: usize) -> Option<ValueId> {
    let (c, h, w) = image(l, cx, "upsample", x)?;
    let (oh, ow) = (h.saturating_mul(s), w.saturating_mul(s));
    check_size(l, cx, &[c, oh, ow])?;
    if s == 1 {
        return Some(x);
    }
    let k =
        l.g.push_typed(Op::Const((s * s) as f32), vec![], Type::scalar(), &cx.inst);
    let scaled = node(l, Op::Binary(BinaryOp::Mul), vec![x, k], cx)?;
    let win = Window {
        kernel: s,
        stride: s,
        pad: 0,
    };
    let ty = Type::f32(true, vec![c, oh, ow]);
    let y = typed(l, Op::AvgPoolGrad(win), vec![scaled], ty, cx);
    l.transposed.push((y, cx.span));
    Some(y)
}

/// The scale of `upsample`, given as `scale` (positional) or `scale_factor` (PyTorch's name):
/// exactly one of them (`given`, with their `spans`; `call` spans the whole call).
pub(super) fn one_scale(
    l: &mut Lower,
    given: (Option<usize>, Option<usize>),
    spans: (Span, Span),
    call: Span,
) -> Option<usize> {
    match given {
        (Some(s), None) | (None, Some(s)) => return Some(s),
        (Some(_), Some(_)) => l.diags.push(
            Diag::new(
                "nnc::arg",
                "upsample's scale is given twice",
                spans.1,
                "given again here",
            )
            .also(spans.0, "first given here")
            .help("`upsample(2)` and `upsample(scale_factor: 2)` are the same: keep one"),
        ),
        (None, None) => l.diags.push(
            Diag::new(
                "nnc::arg",
                "upsample needs a scale",
                call,
                "missing the scale",
            )
            .help("write it as `upsample(2)` (each value repeated over a 2×2 block)"),
        ),
    }
    None
}

/// `upsample`'s `mode:`: `"nearest"`, the only one nnc has (PyTorch's default).
pub(super) fn upsample_mode(e: &Expr) -> Result<(), Diag> {
    let found = match &e.kind {
        ExprKind::Str(s) if s == "nearest" => return Ok(()),
        ExprKind::Str(s) => format!("\"{s}\""),
        _ => super::args::written(e).unwrap_or_else(|| "this".into()),
    };
    Err(Diag::new(
        "nnc::arg",
        format!("upsample has only `mode: \"nearest\"`, found {found}"),
        e.span,
        "not implemented",
    )
    .help(
        "nnc's upsample repeats each value over an s×s block (PyTorch's `mode='nearest'`, \
         Keras' `interpolation=\"nearest\"`); a learned, smoother doubling is \
         `conv_transpose2d(out, kernel: 4, stride: 2, padding: 1)`; or remove `mode`",
    ))
}

/// Appends a node whose type the layer computed (ops whose type their inputs do not give).
fn typed(l: &mut Lower, op: Op, inputs: Vec<ValueId>, ty: Type, cx: &Site) -> ValueId {
    let label = format!("{}{}", l.prefix, cx.inst);
    l.g.push_typed(op, inputs, ty, label)
}

/// What would make a decoder end at the size wanted: under the layer `at`, the `note` of how
/// it computes its size, and the `fix` (a clause that says where: "on the last transposed
/// convolution, `output_padding: 1` reaches 28×28").
pub struct SizeFix {
    pub at: Span,
    pub note: String,
    pub fix: String,
}

/// For a model's output `out` where `want` is needed (the declared output, or a loss's
/// target), when the last layer to set the map's size is a `conv_transpose2d` or an
/// `upsample` (`convs`: each one's node and call span, as recorded while lowering): for a
/// transposed convolution, what would reach `want` there: `output_padding` alone when it can,
/// else the padding (and output_padding) nearest the layer's, else the kernel; for an
/// upsampling, which can only multiply, the size the map before it must have.
pub fn fix_transposed(
    g: &crate::ir::Graph,
    convs: &[(ValueId, Span)],
    (out, want): (ValueId, &Type),
) -> Option<SizeFix> {
    let got = g.ty(out);
    let (&[gc, gh, gw], &[wc, wh, ww]) = (&got.dims[..], &want.dims[..]) else {
        return None;
    };
    // The last transposed convolution computed before the output (its value, or what
    // follows it).
    let &(y, span) = convs.iter().rev().find(|(y, _)| *y <= out)?;
    if gc != wc {
        return None;
    }
    let node = g.node(y);
    let (yt, xt) = (&node.ty, g.ty(node.inputs[0]));
    // Only when no later layer changes the map's size.
    let later = g.nodes[y.index() + 1..=out.index()]
        .iter()
        .any(|n| n.ty.dims.len() == 3 && n.ty.dims[1..] != yt.dims[1..]);
    if later || yt.dims[1..] != [gh, gw] || gh != gw || wh != ww {
        return None;
    }
    let h = xt.dims[1];
    let win = match node.op {
        Op::Conv2dGradInput(win) => win,
        Op::AvgPoolGrad(up) => return Some(fix_upsampled(span, h, up.stride, wh)),
        _ => return None,
    };
    // gh = (h − 1)·s − 2p + k + op, added up in an order that cannot go below zero.
    let op = (gh + 2 * win.pad).checked_sub((h - 1) * win.stride + win.kernel)?;
    let at = |fix: String| SizeFix {
        at: span,
        note: note(gh, h, win, op),
        fix: format!("on the last transposed convolution, {fix}"),
    };
    // What reaches `wh` at this stride: output_padding alone, else the padding (with the same
    // output_padding if it can), else the kernel.
    let (k, p, s) = (win.kernel, win.pad, win.stride);
    let base = (h - 1) * s;
    let reach = |k: usize, p: usize, q: usize| (base + k + q).checked_sub(2 * p) == Some(wh);
    let paddings = (0..=(base + k + s) / 2).flat_map(|p| (0..s).map(move |q| (p, q)));
    let fix = if let Some(q) = (0..s).find(|&q| reach(k, p, q)) {
        format!("`output_padding: {q}`")
    } else if let Some((p, q)) = paddings
        .filter(|&(p, q)| reach(k, p, q))
        .min_by_key(|&(pp, q)| (q != op, pp.abs_diff(p)))
    {
        if q == op {
            format!("`padding: {p}`")
        } else {
            format!("`padding: {p}, output_padding: {q}`")
        }
    } else if let Some(k) = (1..=wh + 2 * p).find(|&k| reach(k, p, op)) {
        format!("`kernel: {k}`")
    } else {
        return Some(at(format!(
            "no kernel or padding reaches {wh}×{wh} from the {h}×{h} map at stride {s}: \
             change the stride or the layers before it"
        )));
    };
    Some(at(format!("{fix} reaches {wh}×{wh}")))
}

/// An `upsample(s)` of an `h`×`h` map where `wh`×`wh` is wanted: it only multiplies, so the
/// layers before it must give `wh`/s (or no map can, when s does not divide `wh`).
fn fix_upsampled(at: Span, h: usize, s: usize, wh: usize) -> SizeFix {
    let fix = if wh.is_multiple_of(s) {
        format!(
            "the last upsampling needs a {n}×{n} map to reach {wh}×{wh}, and gets {h}×{h}: \
             keep the size in the layers before it (`padding: 1` on a 3×3 convolution) or \
             change a pooling",
            n = wh / s
        )
    } else {
        format!(
            "the last upsampling multiplies by {s}, which cannot reach {wh}×{wh}: change its \
             scale, or end the decoder with a layer that sets the size (a transposed \
             convolution)"
        )
    };
    SizeFix {
        at,
        note: format!("this upsampling gives {}×{}: {h}·{s}", h * s, h * s),
        fix,
    }
}

/// The note under a transposed convolution of an `h`×`h` map by `win` with output_padding
/// `op` that gives `gh` rows: how.
fn note(gh: usize, h: usize, win: Window, op: usize) -> String {
    format!(
        "this transposed convolution gives {gh}×{gh}: ({h} − 1)·{} − 2·{} + {} + {op}",
        win.stride, win.pad, win.kernel
    )
}

#[cfg(test)]
mod tests {
    use super::same_numbers;

    /// Keras' `"same"`: the numbers given make every H into s·H, with output_padding below the
    /// stride; none exist only for stride 1 with an even kernel.
    #[test]
    fn same_numbers_multiply_by_the_stride() {
        for k in 1..=7 {
            for s in 1..=4 {
                match same_numbers(k, s) {
                    Some((p, q)) => {
                        assert!(q < s, "k {k} s {s}: output_padding {q}");
                        for h in 1..=9 {
                            assert_eq!((h - 1) * s + k + q - 2 * p, s * h, "k {k} s {s} h {h}");
                        }
                    }
                    None => assert!(s == 1 && k % 2 == 0, "k {k} s {s}"),
                }
            }
        }
    }
}
