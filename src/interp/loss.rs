//! Losses (each reduces to a scalar) and their gradients. Row losses average over the rows R of
//! the `[R, C]` view; `Mse` and `Bce` average over all N elements.

use super::norm::{log_softmax, softmax};
use super::seq::as_id;

/// The class of each row, checked against `0..c`.
fn labels(labels: &[f64], c: usize) -> Result<Vec<usize>, String> {
    labels
        .iter()
        .map(|&l| {
            let id = as_id(l)?;
            if id < 0 || id as usize >= c {
                Err(format!("label {id} is out of range 0..{c}"))
            } else {
                Ok(id as usize)
            }
        })
        .collect()
}

fn rows(x: &[f64], c: usize) -> f64 {
    (x.len() / c.max(1)) as f64
}

/// mean over rows of `−log softmax(logits)[label]`.
pub fn cross_entropy(logits: &[f64], lab: &[f64], c: usize) -> Result<f64, String> {
    let lab = labels(lab, c)?;
    let ls = log_softmax(logits, c);
    Ok(-lab
        .iter()
        .enumerate()
        .map(|(r, &l)| ls[r * c + l])
        .sum::<f64>()
        / rows(logits, c))
}

/// (softmax − onehot)·dl/R.
pub fn cross_entropy_grad(
    logits: &[f64],
    lab: &[f64],
    c: usize,
    dl: f64,
) -> Result<Vec<f64>, String> {
    let lab = labels(lab, c)?;
    let scale = dl / rows(logits, c);
    let mut g = softmax(logits, c);
    for (r, &l) in lab.iter().enumerate() {
        g[r * c + l] -= 1.0;
    }
    Ok(g.into_iter().map(|v| v * scale).collect())
}

/// mean over rows of −Σ target ⊙ log softmax(logits).
pub fn soft_cross_entropy(logits: &[f64], target: &[f64], c: usize) -> f64 {
    let ls = log_softmax(logits, c);
    -ls.iter().zip(target).map(|(l, t)| l * t).sum::<f64>() / rows(logits, c)
}

/// (softmax − target)·dl/R (the exact gradient when each target row sums to 1).
pub fn soft_cross_entropy_grad(logits: &[f64], target: &[f64], c: usize, dl: f64) -> Vec<f64> {
    let scale = dl / rows(logits, c);
    softmax(logits, c)
        .iter()
        .zip(target)
        .map(|(s, t)| (s - t) * scale)
        .collect()
}

/// mean over rows of KL(softmax(p) ‖ softmax(q)) = Σ sp·(log sp − log sq).
pub fn kl_div(p: &[f64], q: &[f64], c: usize) -> f64 {
    let (lp, lq) = (log_softmax(p, c), log_softmax(q, c));
    lp.iter()
        .zip(&lq)
        .map(|(a, b)| a.exp() * (a - b))
        .sum::<f64>()
        / rows(p, c)
}

/// (softmax(q) − softmax(p))·dl/R: the gradient w.r.t. q only.
pub fn kl_div_grad(p: &[f64], q: &[f64], c: usize, dl: f64) -> Vec<f64> {
    let scale = dl / rows(p, c);
    softmax(q, c)
        .iter()
        .zip(softmax(p, c))
        .map(|(sq, sp)| (sq - sp) * scale)
        .collect()
}

pub fn mse(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>() / a.len().max(1) as f64
}

/// 2(a − b)·dl/N.
pub fn mse_grad(a: &[f64], b: &[f64], dl: f64) -> Vec<f64> {
    let scale = 2.0 * dl / a.len().max(1) as f64;
    a.iter().zip(b).map(|(x, y)| (x - y) * scale).collect()
}

/// The clamp bounds of `bce` as the f32 numbers a compiled kernel uses: 1 − 1e-7 is not an f32,
/// and clamping to the f64 value instead makes log(1 − p) of a saturated p differ by 1%.
const BCE_LO: f64 = 1e-7f32 as f64;
const BCE_HI: f64 = (1.0f32 - 1e-7f32) as f64;

fn clamp_p(p: f64) -> f64 {
    p.clamp(BCE_LO, BCE_HI)
}

/// mean of −(y·log p + (1−y)·log(1−p)), p clamped to [1e-7, 1−1e-7].
pub fn bce(p: &[f64], y: &[f64]) -> f64 {
    let sum: f64 = p
        .iter()
        .zip(y)
        .map(|(&p, &y)| {
            let p = clamp_p(p);
            -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
        })
        .sum();
    sum / p.len().max(1) as f64
}

/// (p − y)/(p(1−p))·dl/N with p clamped as in the forward loss.
pub fn bce_grad(p: &[f64], y: &[f64], dl: f64) -> Vec<f64> {
    let scale = dl / p.len().max(1) as f64;
    p.iter()
        .zip(y)
        .map(|(&p, &y)| {
            let p = clamp_p(p);
            (p - y) / (p * (1.0 - p)) * scale
        })
        .collect()
}
