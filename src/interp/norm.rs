//! Softmax family and layer normalization over the last axis, and dropout.

use crate::exec::StepCtx;
use crate::ir::dropout_keep;

/// log Σ exp(row), computed stably.
pub fn log_sum_exp(row: &[f64]) -> f64 {
    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

pub fn log_softmax(x: &[f64], c: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(c.max(1)) {
        let lse = log_sum_exp(row);
        out.extend(row.iter().map(|v| v - lse));
    }
    out
}

pub fn softmax(x: &[f64], c: usize) -> Vec<f64> {
    log_softmax(x, c).into_iter().map(f64::exp).collect()
}

/// dx = y ⊙ (dy − Σ dy⊙y) per row, y the softmax output.
pub fn softmax_grad(y: &[f64], dy: &[f64], c: usize) -> Vec<f64> {
    let mut dx = Vec::with_capacity(y.len());
    for (yr, dr) in y.chunks(c.max(1)).zip(dy.chunks(c.max(1))) {
        let dot: f64 = yr.iter().zip(dr).map(|(a, b)| a * b).sum();
        dx.extend(yr.iter().zip(dr).map(|(y, d)| y * (d - dot)));
    }
    dx
}

/// dx = dy − exp(y)·Σ dy per row, y the log-softmax output.
pub fn log_softmax_grad(y: &[f64], dy: &[f64], c: usize) -> Vec<f64> {
    let mut dx = Vec::with_capacity(y.len());
    for (yr, dr) in y.chunks(c.max(1)).zip(dy.chunks(c.max(1))) {
        let sum: f64 = dr.iter().sum();
        dx.extend(yr.iter().zip(dr).map(|(y, d)| d - y.exp() * sum));
    }
    dx
}

/// Each row of `x` (rows as long as `w`) as [`layer_norm`] normalizes it: the normalized row
/// x̂ and 1/σ, with σ = √(var + eps) from the biased variance.
fn normalized(x: &[f64], d: usize, eps: f32) -> impl Iterator<Item = (Vec<f64>, f64)> + '_ {
    x.chunks(d.max(1)).map(move |row| {
        let n = row.len() as f64;
        let mean = row.iter().sum::<f64>() / n;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        let inv = 1.0 / (var + eps as f64).sqrt();
        (row.iter().map(|v| (v - mean) * inv).collect(), inv)
    })
}

/// y = x̂ ⊙ w + b per row (PyTorch's `LayerNorm` over the last axis).
pub fn layer_norm(x: &[f64], w: &[f64], b: &[f64], eps: f32) -> Vec<f64> {
    normalized(x, w.len(), eps)
        .flat_map(|(xh, _)| {
            xh.into_iter()
                .zip(w.iter().zip(b))
                .map(|(v, (w, b))| v * w + b)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// dx = (g − mean(g) − x̂·mean(g ⊙ x̂)) / σ per row, g = dy ⊙ w.
pub fn layer_norm_grad(x: &[f64], w: &[f64], dy: &[f64], eps: f32) -> Vec<f64> {
    let d = w.len().max(1);
    let mut dx = Vec::with_capacity(x.len());
    for ((xh, inv), dr) in normalized(x, d, eps).zip(dy.chunks(d)) {
        let g: Vec<f64> = dr.iter().zip(w).map(|(d, w)| d * w).collect();
        let mg = g.iter().sum::<f64>() / d as f64;
        let mgx = g.iter().zip(&xh).map(|(g, x)| g * x).sum::<f64>() / d as f64;
        dx.extend(g.iter().zip(&xh).map(|(g, x)| (g - mg - x * mgx) * inv));
    }
    dx
}

/// Σ over the rows (of length `d`) of dy ⊙ x̂: the gradient of the norm's weight.
pub fn layer_norm_weight_grad(x: &[f64], dy: &[f64], d: usize, eps: f32) -> Vec<f64> {
    let mut dw = vec![0.0; d];
    for ((xh, _), dr) in normalized(x, d, eps).zip(dy.chunks(d.max(1))) {
        for ((s, x), g) in dw.iter_mut().zip(&xh).zip(dr) {
            *s += x * g;
        }
    }
    dw
}

/// A batch norm's input of full shape `shape` ([B, C] or [B, C, H, W]) as (B, C, H·W).
fn bcs(shape: &[usize]) -> (usize, usize, usize) {
    let b = shape.first().copied().unwrap_or(1);
    let c = shape.get(1).copied().unwrap_or(1);
    (b, c, shape[2.min(shape.len())..].iter().product())
}

/// Each channel's values of `x` (the N = B·H·W of channel `c`), in batch then spatial order.
fn channel(x: &[f64], (b, c, s): (usize, usize, usize), ch: usize) -> Vec<f64> {
    (0..b)
        .flat_map(|i| x[(i * c + ch) * s..(i * c + ch + 1) * s].iter().copied())
        .collect()
}

/// Writes `v` (channel `ch`'s values, as [`channel`] reads them) into `out`.
fn put_channel(out: &mut [f64], (b, c, s): (usize, usize, usize), ch: usize, v: &[f64]) {
    for i in 0..b {
        out[(i * c + ch) * s..(i * c + ch + 1) * s].copy_from_slice(&v[i * s..(i + 1) * s]);
    }
}

/// The mean and biased variance of `v`.
fn moments(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    (mean, v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n)
}

/// Channel `ch` of `x` normalized with its batch statistics, and 1/σ.
fn batch_normalized(x: &[f64], d: (usize, usize, usize), ch: usize, eps: f32) -> (Vec<f64>, f64) {
    let v = channel(x, d, ch);
    let (mean, var) = moments(&v);
    let inv = 1.0 / (var + eps as f64).sqrt();
    (v.iter().map(|x| (x - mean) * inv).collect(), inv)
}

/// PyTorch's `BatchNorm1d`/`BatchNorm2d` in training mode: each channel normalized with the
/// mean and biased variance of its values in the batch, y = x̂·w + b.
pub fn batch_norm(x: &[f64], shape: &[usize], w: &[f64], b: &[f64], eps: f32) -> Vec<f64> {
    let d = bcs(shape);
    let mut y = vec![0.0; x.len()];
    for ch in 0..d.1 {
        let (xh, _) = batch_normalized(x, d, ch, eps);
        let v: Vec<f64> = xh.iter().map(|v| v * w[ch] + b[ch]).collect();
        put_channel(&mut y, d, ch, &v);
    }
    y
}

/// In evaluation mode: y = (x − running_mean)/√(running_var + eps)·w + b per channel.
pub fn batch_norm_eval(
    x: &[f64],
    shape: &[usize],
    p: [&[f64]; 4],
    eps: f32,
) -> Vec<f64> {
    let [w, b, mean, var] = p;
    let d = bcs(shape);
    let mut y = vec![0.0; x.len()];
    for ch in 0..d.1 {
        let inv = 1.0 / (var[ch] + eps as f64).sqrt();
        let v: Vec<f64> = channel(x, d, ch)
            .iter()
            .map(|v| (v - mean[ch]) * inv * w[ch] + b[ch])
            .collect();
        put_channel(&mut y, d, ch, &v);
    }
    y
}

/// dx = (w/σ)(dy − mean(dy) − x̂·mean(dy ⊙ x̂)) over each channel's values.
pub fn batch_norm_grad(x: &[f64], shape: &[usize], w: &[f64], dy: &[f64], eps: f32) -> Vec<f64> {
    let d = bcs(shape);
    let mut dx = vec![0.0; x.len()];
    for ch in 0..d.1 {
        let (xh, inv) = batch_normalized(x, d, ch, eps);
        let g = channel(dy, d, ch);
        let n = g.len() as f64;
        let mg = g.iter().sum::<f64>() / n;
        let mgx = g.iter().zip(&xh).map(|(g, x)| g * x).sum::<f64>() / n;
        let v: Vec<f64> = g
            .iter()
            .zip(&xh)
            .map(|(g, x)| w[ch] * inv * (g - mg - x * mgx))
            .collect();
        put_channel(&mut dx, d, ch, &v);
    }
    dx
}

/// dx = dy·w/√(running_var + eps) per channel.
pub fn batch_norm_eval_grad(
    dy: &[f64],
    shape: &[usize],
    w: &[f64],
    var: &[f64],
    eps: f32,
) -> Vec<f64> {
    let (_, c, s) = bcs(shape);
    dy.iter()
        .enumerate()
        .map(|(i, g)| {
            let ch = (i / s.max(1)) % c.max(1);
            g * w[ch] / (var[ch] + eps as f64).sqrt()
        })
        .collect()
}

/// Σ over each channel's values of dy ⊙ x̂.
pub fn batch_norm_weight_grad(x: &[f64], shape: &[usize], dy: &[f64], eps: f32) -> Vec<f64> {
    let d = bcs(shape);
    (0..d.1)
        .map(|ch| {
            let (xh, _) = batch_normalized(x, d, ch, eps);
            xh.iter().zip(channel(dy, d, ch)).map(|(x, g)| x * g).sum()
        })
        .collect()
}

/// Each channel's batch mean, then each one's unbiased variance (N/(N−1) times the biased;
/// NaN with a single value, which the checker and the trainer refuse before it is computed).
pub fn batch_stats(x: &[f64], shape: &[usize]) -> Vec<f64> {
    let d = bcs(shape);
    let m: Vec<(f64, f64)> = (0..d.1).map(|ch| moments(&channel(x, d, ch))).collect();
    let n = (d.0 * d.2) as f64;
    m.iter()
        .map(|(mean, _)| *mean)
        .chain(m.iter().map(|(_, var)| var * n / (n - 1.0)))
        .collect()
}

/// Keeps element i when [`dropout_keep`] says so for flat index `first + i`, scaled by 1/(1−p);
/// zero otherwise. The forward op and its gradient are the same map, applied to x or to dy.
pub fn dropout(x: &[f64], p: f32, salt: u32, ctx: StepCtx, first: u64) -> Vec<f64> {
    let scale = if p < 1.0 { 1.0 / (1.0 - p as f64) } else { 0.0 };
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            if dropout_keep(ctx.seed, ctx.step, salt, first + i as u64, p) {
                v * scale
            } else {
                0.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against numpy: `y = (x − mean)/√(var + eps)·w + b` per row with the biased variance
    /// (`x.var(-1)`), as `torch.nn.LayerNorm` defines it; the gradients of Σ y ⊙ dy by central
    /// differences (h = 1e-6) in f64.
    #[test]
    fn layer_norm_matches_numpy() {
        let x = [0.5, -1.25, 3.0, 2.0, 0.0, 10.0, 10.5, 9.0, 11.0, 10.25];
        let w = [1.5, -0.5, 1.0, 2.0, 0.25];
        let b = [0.1, 0.2, -0.3, 0.0, 1.0];
        let dy = [0.3, -0.2, 0.5, 1.0, -1.0, 0.0, 0.25, -0.75, 0.5, 1.0];
        let close = |got: &[f64], want: &[f64], tol: f64| {
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < tol, "{got:?}\n{want:?}");
            }
        };
        let y = [
            -0.2507796,
            0.90155919,
            1.13652597,
            1.53674871,
            0.85801778,
            -0.23919641,
            -0.06381943,
            -2.03367053,
            2.56281731,
            1.03768849,
        ];
        close(&layer_norm(&x, &w, &b, 1e-5), &y, 1e-7);
        let dx = [
            -0.00626422,
            0.09604499,
            -0.45308847,
            0.74123168,
            -0.37792399,
            0.0610257,
            -0.70772065,
            0.0909788,
            0.40795749,
            0.14775865,
        ];
        close(&layer_norm_grad(&x, &w, &dy, 1e-5), &dx, 1e-6);
        let dw = [-0.07015592, 0.41253339, 2.01851588, 1.40907868, 0.71868283];
        close(&layer_norm_weight_grad(&x, &dy, 5, 1e-5), &dw, 1e-6);
    }
}
