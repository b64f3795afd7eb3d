//! Image layers: `conv2d`, `maxpool`, `avgpool`, `global_maxpool`, `global_avgpool` on
//! `[C, H, W]` values, with the window checks.

use super::layers::{check_size, f32_input, node, param, uniform, Site};
use super::lower::Lower;
use super::names::{plural, show};
use crate::diag::Diag;
use crate::ir::{Op, ValueId, Window};
use crate::syntax::ast::Span;

/// The image dims `[C, H, W]` of `x`, or a diagnostic saying what it is instead.
pub(super) fn image(
    l: &mut Lower,
    cx: &Site,
    what: &str,
    x: ValueId,
) -> Option<(usize, usize, usize)> {
    let x = f32_input(l, cx, what, x)?;
    let t = l.g.ty(x).clone();
    if let [c, h, w] = t.dims[..] {
        return Some((c, h, w));
    }
    let mut d = Diag::new(
        "nnc::shape",
        format!("{what} needs an image [C, H, W], found {}", show(&t)),
        cx.span,
        "expects [channels, height, width]",
    )
    .also(cx.input_span, format!("this is {}", show(&t)));
    let n = t.per_sample();
    let side = (n as f64).sqrt().round() as usize;
    // Declaring the input as an image only helps where the value is the input; a vector
    // computed in the model (a decoder's `dense(32*7*7)`) cannot become an image.
    let is_input = matches!(l.g.node(x).op, Op::Input { .. });
    d = d.help(match t.dims.len() {
        1 | 2 if !is_input => format!("nnc has no reshape (PyTorch's `nn.Unflatten`, `view`): a {} computed in the model cannot become an image; keep the values images from the input on (a decoder starts from an encoder's [C, H, W] code, not from `dense`)", show(&t)),
        1 if side * side == n => format!("declare the input as an image, e.g. `[1, {side}, {side}]` (one channel of {side}×{side}), not `[{n}]`"),
        2 => format!("add a channel axis: declare the input as `[1, {}, {}]`", t.dims[0], t.dims[1]),
        _ => format!("{what} works on images of shape [channels, height, width]"),
    });
    l.diags.push(d);
    None
}

/// Explains a window that does not fit.
pub(super) fn no_fit(l: &mut Lower, what: &str, win: Window, h: usize, w: usize, kspan: Span) {
    let small = h.min(w);
    let pad = if win.pad > 0 {
        format!(
            " (with padding {} on each side: {})",
            win.pad,
            small + 2 * win.pad
        )
    } else {
        String::new()
    };
    l.diags.push(
        Diag::new(
            "nnc::shape",
            format!(
                "the {what} window does not fit: {k}×{k} on a {h}×{w} image",
                k = win.kernel
            ),
            kspan,
            format!(
                "{k}×{k} window, but the image is {h}×{w}{pad}",
                k = win.kernel
            ),
        )
        .help({
            // The padding that fits this window; a pool's may not exceed half of it.
            let need = win.kernel.saturating_sub(small).div_ceil(2);
            if what == "conv2d" || need <= win.kernel / 2 {
                format!(
                    "use a window of at most {}, pad the image (`padding: {need}` fits this \
                     window), or remove a pooling step earlier",
                    small + 2 * win.pad,
                )
            } else {
                format!(
                    "use a window of at most {}, or remove a pooling step earlier",
                    small + 2 * win.pad
                )
            }
        }),
    );
}

pub(super) fn conv2d(
    l: &mut Lower,
    cx: &Site,
    x: ValueId,
    inn: Option<usize>,
    out: usize,
    win: Window,
    spans: (Span, Span),
) -> Option<ValueId> {
    let (c, h, w) = image(l, cx, "conv2d", x)?;
    // The model's input declared as TensorFlow and PIL lay images out: a square image of one or
    // three colours, [H, H, 1] or [H, H, 3]. Read channels first it convolves over the width and
    // the colours. (Other shapes, a signal [64, 100, 2] or planes [16, 8, 4], are left alone.)
    if matches!(l.g.node(x).op, Op::Input { .. }) && matches!(w, 1 | 3) && c == h && c >= 8 {
        l.diags.push(
            Diag::new(
                "nnc::shape",
                format!("conv2d reads [{c}, {h}, {w}] as {c} channels of {h}×{w}"),
                cx.input_span,
                format!("the model's input, [{c}, {h}, {w}]"),
            )
            .also(cx.span, plural(c, "input channel"))
            .help(format!(
                "images are channels first, as in PyTorch: declare the input as `[{w}, {c}, {h}]` \
                 (an image of {c}×{h} in {}), and feed its data so",
                plural(w, "channel")
            )),
        );
        return None;
    }
    if let Some(i) = inn.filter(|i| *i != c) {
        l.diags.push(
            Diag::new("nnc::shape", format!("conv2d expects {} here, found {i}", plural(c, "input channel")), spans.0, format!("expected {c}, found {i}"))
                .help(format!("the image reaching this layer is [{c}, {h}, {w}]; write `conv2d({c}, {out}, …)` or leave the input channels out")),
        );
        return None;
    }
    let (Some(oh), Some(ow)) = (win.out_len(h), win.out_len(w)) else {
        no_fit(l, "conv2d", win, h, w, spans.1);
        return None;
    };
    check_size(l, cx, &[out, oh, ow])?;
    let fan_in = c * win.kernel * win.kernel;
    let k = param(
        l,
        cx,
        "weight",
        vec![out, c, win.kernel, win.kernel],
        uniform(fan_in),
    )?;
    let b = param(l, cx, "bias", vec![out], uniform(fan_in))?;
    let y = node(l, Op::Conv2d(win), vec![x, k], cx)?;
    node(l, Op::BiasAdd { axis: 1 }, vec![y, b], cx)
}

pub(super) fn pool(
    l: &mut Lower,
    cx: &Site,
    kind: &str,
    x: ValueId,
    win: Window,
    kspan: Span,
) -> Option<ValueId> {
    let (_, h, w) = image(l, cx, kind, x)?;
    if win.out_len(h).is_none() || win.out_len(w).is_none() {
        no_fit(l, kind, win, h, w, kspan);
        return None;
    }
    let op = if kind == "maxpool" {
        Op::MaxPool(win)
    } else {
        Op::AvgPool(win)
    };
    node(l, op, vec![x], cx)
}

/// `global_maxpool` or `global_avgpool` (`kind`): `[C, H, W] -> [C]`, each channel pooled over
/// its whole map.
pub(super) fn global_pool(l: &mut Lower, cx: &Site, kind: &str, x: ValueId) -> Option<ValueId> {
    image(l, cx, kind, x)?;
    let op = if kind == "global_maxpool" {
        Op::GlobalMaxPool
    } else {
        Op::GlobalAvgPool
    };
    node(l, op, vec![x], cx)
}
