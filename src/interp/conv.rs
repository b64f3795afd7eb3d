//! Convolution and pooling over NCHW tensors, with zero padding.
//!
//! Output position (i, j) of a window sees input rows `i·s − p + ki` and columns `j·s − p + kj`
//! for `ki, kj` in `0..k`; positions outside the image are padding.

use crate::ir::Window;
use std::ops::Range;

/// Dims of an NCHW shape.
fn dims4(s: &[usize]) -> (usize, usize, usize, usize) {
    (s[0], s[1], s[2], s[3])
}

/// The output indices (along one axis of `out_len`) whose window, at kernel offset `kk`, sees a
/// real input position (not padding): those `o` with `0 ≤ o·s + kk − p < len`.
fn valid(w: &Window, kk: usize, len: usize, out_len: usize) -> Range<usize> {
    let s = w.stride;
    let lo = if w.pad > kk {
        (w.pad - kk).div_ceil(s)
    } else {
        0
    };
    let hi = if len + w.pad > kk {
        (len + w.pad - kk - 1) / s + 1
    } else {
        0
    };
    lo.min(out_len)..hi.min(out_len)
}

/// Visits every (weight, input, output) triple of a convolution that contributes a product
/// (padding excluded), as flat indices `f(k_index, x_index, y_index)`: the gradient kernels are
/// this loop nest with their multiply-accumulate. For each kernel offset the valid output ranges
/// are computed once, so the inner loops do no bounds tests.
fn for_each_tap(
    w: &Window,
    xs: &[usize],
    ks: &[usize],
    ys: &[usize],
    mut f: impl FnMut(usize, usize, usize),
) {
    let (nb, c, h, wd) = dims4(xs);
    let (o, _, kh, kw) = dims4(ks);
    let (_, _, oh, ow) = dims4(ys);
    let s = w.stride;
    for b in 0..nb {
        for oc in 0..o {
            for ic in 0..c {
                let (x0, y0) = ((b * c + ic) * h * wd, (b * o + oc) * oh * ow);
                for ki in 0..kh {
                    for kj in 0..kw {
                        let kidx = ((oc * c + ic) * kh + ki) * kw + kj;
                        for i in valid(w, ki, h, oh) {
                            let r = i * s + ki - w.pad;
                            for j in valid(w, kj, wd, ow) {
                                let col = j * s + kj - w.pad;
                                f(kidx, x0 + r * wd + col, y0 + i * ow + j);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `y[b,o,i,j] = Σ_{c,ki,kj} x[b,c,i·s−p+ki, j·s−p+kj] · w[o,c,ki,kj]`.
///
/// The same taps as [`for_each_tap`], written row by row: the forward convolution is what
/// gradient checks evaluate thousands of times.
pub fn conv2d(
    w: &Window,
    x: &[f64],
    xs: &[usize],
    k: &[f64],
    ks: &[usize],
    ys: &[usize],
) -> Vec<f64> {
    let (nb, c, h, wd) = dims4(xs);
    let (o, _, kh, kw) = dims4(ks);
    let (_, _, oh, ow) = dims4(ys);
    let s = w.stride;
    let mut y = vec![0.0; nb * o * oh * ow];
    for b in 0..nb {
        for oc in 0..o {
            let y0 = (b * o + oc) * oh * ow;
            for ic in 0..c {
                let x0 = (b * c + ic) * h * wd;
                for ki in 0..kh {
                    for kj in 0..kw {
                        let kv = k[((oc * c + ic) * kh + ki) * kw + kj];
                        let cols = valid(w, kj, wd, ow);
                        if cols.is_empty() {
                            continue;
                        }
                        for i in valid(w, ki, h, oh) {
                            let r = i * s + ki - w.pad;
                            let xrow = &x[x0 + r * wd + cols.start * s + kj - w.pad..];
                            let yrow = &mut y[y0 + i * ow + cols.start..y0 + i * ow + cols.end];
                            for (yv, xv) in yrow.iter_mut().zip(xrow.iter().step_by(s)) {
                                *yv += xv * kv;
                            }
                        }
                    }
                }
            }
        }
    }
    y
}

fn check_conv_output(w: &Window, xs: &[usize], ys: &[usize]) -> Result<(), String> {
    if xs.len() != 4
        || ys.len() != 4
        || w.out_len(xs[2]) != Some(ys[2])
        || w.out_len(xs[3]) != Some(ys[3])
    {
        return Err(format!(
            "{ys:?} is not the windowed output of an input of shape {xs:?}"
        ));
    }
    Ok(())
}

/// `dx[b,c,r,col] = Σ dy[b,o,i,j] · w[o,c,ki,kj]` over the windows that saw (r, col).
pub fn conv2d_grad_input(
    w: &Window,
    dy: &[f64],
    ys: &[usize],
    k: &[f64],
    ks: &[usize],
    xs: &[usize],
) -> Result<Vec<f64>, String> {
    check_conv_output(w, xs, ys)?;
    if ks.len() != 4 || ks[1] != xs[1] || ys[1] != ks[0] || ys[0] != xs[0] {
        return Err(format!(
            "conv2d_grad_input: weight {ks:?} does not map {xs:?} to {ys:?}"
        ));
    }
    let mut dx = vec![0.0; xs.iter().product()];
    for_each_tap(w, xs, ks, ys, |ki, xi, yi| dx[xi] += dy[yi] * k[ki]);
    Ok(dx)
}

/// `dw[o,c,ki,kj] = Σ_{b,i,j} x[b,c,i·s−p+ki, j·s−p+kj] · dy[b,o,i,j]`.
pub fn conv2d_grad_weight(
    w: &Window,
    x: &[f64],
    xs: &[usize],
    dy: &[f64],
    ys: &[usize],
    ks: &[usize],
) -> Vec<f64> {
    let mut dw = vec![0.0; ks.iter().product()];
    for_each_tap(w, xs, ks, ys, |ki, xi, yi| dw[ki] += x[xi] * dy[yi]);
    dw
}

/// The input coordinate seen by output index `o` at kernel offset `kk`, if inside `0..len`.
fn src(w: &Window, o: usize, kk: usize, len: usize) -> Option<usize> {
    (o * w.stride + kk).checked_sub(w.pad).filter(|&v| v < len)
}

/// Calls `f(out_index, in_index)` for every (output position, real input position in its window)
/// pair, windows in output order and positions in row-major window order.
fn for_each_window(w: &Window, xs: &[usize], ys: &[usize], mut f: impl FnMut(usize, usize)) {
    let (nb, c, h, wd) = dims4(xs);
    let (_, _, oh, ow) = dims4(ys);
    for plane in 0..nb * c {
        for i in 0..oh {
            for j in 0..ow {
                let out = (plane * oh + i) * ow + j;
                for ki in 0..w.kernel {
                    let Some(r) = src(w, i, ki, h) else { continue };
                    for kj in 0..w.kernel {
                        let Some(col) = src(w, j, kj, wd) else {
                            continue;
                        };
                        f(out, (plane * h + r) * wd + col);
                    }
                }
            }
        }
    }
}

/// The input index of the first maximum of every window (padding never wins; a window made only
/// of padding has none).
fn argmax_windows(w: &Window, x: &[f64], xs: &[usize], ys: &[usize]) -> Vec<Option<usize>> {
    let mut best: Vec<Option<usize>> = vec![None; ys.iter().product()];
    for_each_window(w, xs, ys, |out, inp| match best[out] {
        Some(b) if x[b] >= x[inp] => {}
        _ => best[out] = Some(inp),
    });
    best
}

/// Maximum of each window over real (non-padding) elements; 0 for a window of padding only.
pub fn max_pool(w: &Window, x: &[f64], xs: &[usize], ys: &[usize]) -> Vec<f64> {
    argmax_windows(w, x, xs, ys)
        .into_iter()
        .map(|a| a.map_or(0.0, |i| x[i]))
        .collect()
}

/// Routes each window's dy to its first maximum (accumulating where windows overlap).
pub fn max_pool_grad(w: &Window, x: &[f64], xs: &[usize], dy: &[f64], ys: &[usize]) -> Vec<f64> {
    let mut dx = vec![0.0; x.len()];
    for (out, a) in argmax_windows(w, x, xs, ys).into_iter().enumerate() {
        if let Some(i) = a {
            dx[i] += dy[out];
        }
    }
    dx
}

/// Mean of each window; padding counts in the divisor (k·k).
pub fn avg_pool(w: &Window, x: &[f64], xs: &[usize], ys: &[usize]) -> Vec<f64> {
    let mut y = vec![0.0; ys.iter().product()];
    let div = (w.kernel * w.kernel) as f64;
    for_each_window(w, xs, ys, |out, inp| y[out] += x[inp] / div);
    y
}

/// Spreads each dy/(k·k) over its window's real elements; `xs` (the node's type) is the input shape.
pub fn avg_pool_grad(
    w: &Window,
    dy: &[f64],
    ys: &[usize],
    xs: &[usize],
) -> Result<Vec<f64>, String> {
    check_conv_output(w, xs, ys)?;
    if xs[..2] != ys[..2] {
        return Err(format!("avgpool_grad: {ys:?} is not pooled from {xs:?}"));
    }
    let mut dx = vec![0.0; xs.iter().product()];
    let div = (w.kernel * w.kernel) as f64;
    for_each_window(w, xs, ys, |out, inp| dx[inp] += dy[out] / div);
    Ok(dx)
}

/// The index of the first maximum of each of the `planes` maps of `n` elements of `x`, by the
/// rule of [`argmax_windows`] (a window that is the whole map).
fn argmax_maps(x: &[f64], n: usize) -> impl Iterator<Item = usize> + '_ {
    x.chunks(n).enumerate().map(move |(p, map)| {
        let mut best = None;
        for (i, v) in map.iter().enumerate() {
            match best {
                Some(b) if map[b] >= *v => {}
                _ => best = Some(i),
            }
        }
        p * n + best.unwrap_or(0)
    })
}

/// The maximum of each channel's whole map: `xs` = [B, C, H, W] gives [B, C].
pub fn global_max_pool(x: &[f64], xs: &[usize]) -> Vec<f64> {
    let (_, _, h, w) = dims4(xs);
    argmax_maps(x, h * w).map(|i| x[i]).collect()
}

/// Routes each dy to the first maximum of its map.
pub fn global_max_pool_grad(x: &[f64], xs: &[usize], dy: &[f64]) -> Vec<f64> {
    let (_, _, h, w) = dims4(xs);
    let mut dx = vec![0.0; x.len()];
    for (p, i) in argmax_maps(x, h * w).enumerate() {
        dx[i] += dy[p];
    }
    dx
}

/// The mean of each channel's whole map: `xs` = [B, C, H, W] gives [B, C].
pub fn global_avg_pool(x: &[f64], xs: &[usize]) -> Vec<f64> {
    let (_, _, h, w) = dims4(xs);
    x.chunks(h * w)
        .map(|map| map.iter().sum::<f64>() / (h * w) as f64)
        .collect()
}

/// dy/(H·W) on every element of its map; `xs` (the node's type) is the input shape.
pub fn global_avg_pool_grad(dy: &[f64], ys: &[usize], xs: &[usize]) -> Result<Vec<f64>, String> {
    if xs.len() != 4 || *ys != xs[..2] {
        return Err(format!(
            "global_avgpool_grad: {ys:?} is not pooled from {xs:?}"
        ));
    }
    let n = xs[2] * xs[3];
    Ok(dy
        .iter()
        .flat_map(|d| std::iter::repeat_n(d / n as f64, n))
        .collect())
}
