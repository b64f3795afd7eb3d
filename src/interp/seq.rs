//! Tokens and sequences: `Embedding`, `EmbeddingGrad`, `OneHot`, `RnnScan`, `RnnScanGrad`,
//! `TimeShift`. Sequences are `B×T×H`, row-major.

use super::elementwise::{derivative_from_output, unary_fn};
use crate::ir::RnnAct;

/// An i32 id carried as f64, checked to be a whole number.
pub fn as_id(v: f64) -> Result<i64, String> {
    if v.fract() == 0.0 && v.abs() < 2.0f64.powi(31) {
        Ok(v as i64)
    } else {
        Err(format!("{v} is not an integer id"))
    }
}

/// `id` as a row index of a `rows`-row table.
fn row(v: f64, rows: usize) -> Result<usize, String> {
    let id = as_id(v)?;
    if id < 0 || id as usize >= rows {
        return Err(format!("id {id} is out of range 0..{rows}"));
    }
    Ok(id as usize)
}

/// `out[i, :] = w[ids[i], :]`; an id outside the table is an error.
pub fn embedding(ids: &[f64], w: &[f64], ws: &[usize]) -> Result<Vec<f64>, String> {
    let (v, e) = (ws[0], ws[1]);
    let mut out = Vec::with_capacity(ids.len() * e);
    for &id in ids {
        let r = row(id, v)?;
        out.extend_from_slice(&w[r * e..(r + 1) * e]);
    }
    Ok(out)
}

/// `dw[ids[i], :] += dy[i, :]`; `ws` (the node's type) gives `[V, E]`.
pub fn embedding_grad(ids: &[f64], dy: &[f64], ws: &[usize]) -> Result<Vec<f64>, String> {
    if ws.len() != 2 || dy.len() != ids.len() * ws[1] {
        return Err(format!(
            "embedding_grad: {} ids and {} gradient values do not fit a table {ws:?}",
            ids.len(),
            dy.len()
        ));
    }
    let (v, e) = (ws[0], ws[1]);
    let mut dw = vec![0.0; v * e];
    for (i, &id) in ids.iter().enumerate() {
        let r = row(id, v)?;
        for k in 0..e {
            dw[r * e + k] += dy[i * e + k];
        }
    }
    Ok(dw)
}

/// One row of n per id, 1 at the id; ids outside `0..n` (or not whole numbers) give a zero row.
pub fn one_hot(ids: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0.0; ids.len() * n];
    for (i, &id) in ids.iter().enumerate() {
        if let Ok(id) = as_id(id) {
            if id >= 0 && (id as usize) < n {
                out[i * n + id as usize] = 1.0;
            }
        }
    }
    out
}

/// h_t = act(xp_t + h_{t−1}·w_hh), h_{−1} = 0, for each sequence of the batch.
pub fn rnn_scan(act: RnnAct, xp: &[f64], s: &[usize], w: &[f64]) -> Vec<f64> {
    let (nb, t_len, h) = (s[0], s[1], s[2]);
    let mut out = vec![0.0; xp.len()];
    for b in 0..nb {
        for t in 0..t_len {
            let at = (b * t_len + t) * h;
            for j in 0..h {
                let mut a = xp[at + j];
                if t > 0 {
                    let prev = at - h;
                    for i in 0..h {
                        a += out[prev + i] * w[i * h + j];
                    }
                }
                out[at + j] = unary_fn(act, a);
            }
        }
    }
    out
}

/// Backpropagation through time: da_t = act'(h_t) ⊙ (dh_t + da_{t+1}·w_hhᵀ), da_T = 0.
pub fn rnn_scan_grad(act: RnnAct, hs: &[f64], s: &[usize], w: &[f64], dh: &[f64]) -> Vec<f64> {
    let (nb, t_len, h) = (s[0], s[1], s[2]);
    let mut da = vec![0.0; hs.len()];
    for b in 0..nb {
        for t in (0..t_len).rev() {
            let at = (b * t_len + t) * h;
            for i in 0..h {
                let mut g = dh[at + i];
                if t + 1 < t_len {
                    let next = at + h;
                    for j in 0..h {
                        g += da[next + j] * w[i * h + j];
                    }
                }
                da[at + i] = derivative_from_output(act, hs[at + i]) * g;
            }
        }
    }
    da
}

/// out[b, t] = h[b, t−1], zeros at t = 0.
pub fn time_shift(hs: &[f64], s: &[usize]) -> Vec<f64> {
    let (nb, t_len, h) = (s[0], s[1], s[2]);
    let mut out = vec![0.0; hs.len()];
    for b in 0..nb {
        for t in 1..t_len {
            let at = (b * t_len + t) * h;
            out[at..at + h].copy_from_slice(&hs[at - h..at]);
        }
    }
    out
}
