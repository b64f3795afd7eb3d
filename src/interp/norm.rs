//! Softmax family over the last axis, and dropout.

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
