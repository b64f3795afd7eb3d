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
