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
    (
        mean,
        v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n,
    )
}

/// Channel `ch` of `x` normalized with its batch statistics `stats` (the [`batch_stats`] of
/// `x`: means, then unbiased variances), and 1/σ.
fn batch_normalized(
    x: &[f64],
    stats: &[f64],
    d: (usize, usize, usize),
    ch: usize,
    eps: f32,
) -> (Vec<f64>, f64) {
    let v = channel(x, d, ch);
    let n = v.len() as f64;
    let (mean, var) = (stats[ch], stats[d.1 + ch] * (n - 1.0) / n);
    let inv = 1.0 / (var + eps as f64).sqrt();
    (v.iter().map(|x| (x - mean) * inv).collect(), inv)
}

/// PyTorch's `BatchNorm1d`/`BatchNorm2d` in training mode: each channel normalized with the
/// mean and biased variance of its values in the batch (from `stats`, the [`batch_stats`] of
/// `x`), y = x̂·w + b.
pub fn batch_norm(x: &[f64], shape: &[usize], stats: &[f64], p: [&[f64]; 2], eps: f32) -> Vec<f64> {
    let [w, b] = p;
    let d = bcs(shape);
    let mut y = vec![0.0; x.len()];
    for ch in 0..d.1 {
        let (xh, _) = batch_normalized(x, stats, d, ch, eps);
        let v: Vec<f64> = xh.iter().map(|v| v * w[ch] + b[ch]).collect();
        put_channel(&mut y, d, ch, &v);
    }
    y
}

/// In evaluation mode: y = (x − running_mean)/√(running_var + eps)·w + b per channel.
pub fn batch_norm_eval(x: &[f64], shape: &[usize], p: [&[f64]; 4], eps: f32) -> Vec<f64> {
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

/// dx = (w/σ)(dy − mean(dy) − x̂·mean(dy ⊙ x̂)) over each channel's values, the two means from
/// the sums given in `sums` (Σ dy ⊙ x̂, then Σ dy: the weight's and the bias's gradients).
pub fn batch_norm_grad(
    x: &[f64],
    shape: &[usize],
    [stats, w, dy]: [&[f64]; 3],
    [sgx, sg]: [&[f64]; 2],
    eps: f32,
) -> Vec<f64> {
    let d = bcs(shape);
    let mut dx = vec![0.0; x.len()];
    for (ch, w) in w.iter().enumerate().take(d.1) {
        let (xh, inv) = batch_normalized(x, stats, d, ch, eps);
        let g = channel(dy, d, ch);
        let n = g.len() as f64;
        let (mg, mgx) = (sg[ch] / n, sgx[ch] / n);
        let v: Vec<f64> = g
            .iter()
            .zip(&xh)
            .map(|(g, x)| w * inv * (g - mg - x * mgx))
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
pub fn batch_norm_weight_grad(
    x: &[f64],
    shape: &[usize],
    stats: &[f64],
    dy: &[f64],
    eps: f32,
) -> Vec<f64> {
    let d = bcs(shape);
    (0..d.1)
        .map(|ch| {
            let (xh, _) = batch_normalized(x, stats, d, ch, eps);
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

    /// Against numpy's evaluation of PyTorch's `BatchNorm1d`/`BatchNorm2d` formulas (scratch
    /// script, f64): training mode normalizes each channel over the batch (and H, W) with the
    /// biased variance, `x.var(axis=(0, 2, 3))`; evaluation uses running_mean/running_var;
    /// the gradients of Σ y ⊙ dy by central differences (h = 1e-6); the statistics are the
    /// batch mean and the unbiased variance (n/(n−1)), what PyTorch folds into its buffers.
    #[test]
    fn batch_norm_matches_numpy() {
        let close = |got: &[f64], want: &[f64], tol: f64| {
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < tol, "{got:?}\n{want:?}");
            }
        };
        struct Case {
            shape: &'static [usize],
            x: &'static [f64],
            w: &'static [f64],
            b: &'static [f64],
            dy: &'static [f64],
            rm: &'static [f64],
            rv: &'static [f64],
            y_train: &'static [f64],
            y_eval: &'static [f64],
            dx: &'static [f64],
            dw: &'static [f64],
            stats: &'static [f64],
            dx_eval: &'static [f64],
        }
        let cases = [
            Case {
                shape: &[4, 3],
                x: &[
                    0.5, -1.25, 3.0, 2.0, 0.0, 10.0, 10.5, 9.0, 11.0, -0.75, 4.0, 10.25,
                ],
                w: &[1.5, -0.5, 2.0],
                b: &[0.1, 0.2, -0.3],
                dy: &[
                    0.3, -0.2, 0.5, 1.0, -1.0, 0.0, 0.25, -0.75, 0.5, 1.0, 0.6, -0.4,
                ],
                rm: &[0.5, 1.0, -2.0],
                rv: &[2.0, 0.5, 9.0],
                y_train: &[
                    -0.7729771296662976,
                    0.7232457533012349,
                    -3.7415802541907226,
                    -0.26196612693480636,
                    0.5670529911217619,
                    0.5893971443414228,
                    2.6337628885436444,
                    -0.5575348965704445,
                    1.2081082012745863,
                    -1.1988196319425404,
                    0.06723615214744785,
                    0.7440749085747136,
                ],
                y_eval: &[
                    0.1,
                    1.7909743480057998,
                    3.033331481483025,
                    1.6909862802090032,
                    0.9070997102248,
                    7.699995555559259,
                    10.706575201393354,
                    -5.4567976817984,
                    8.366661851855863,
                    -1.2258219001741693,
                    -1.9212991306743998,
                    7.8666621296334105,
                ],
                dx: &[
                    -0.15757972327001823,
                    -0.01608339683656368,
                    0.03231192780006609,
                    0.1058299787803918,
                    0.08355226732703613,
                    -0.04519486451748378,
                    -0.008360751424518753,
                    0.04995424918163849,
                    0.29728191219824396,
                    0.06011049502596677,
                    -0.11742311967211094,
                    -0.28439897481469245,
                ],
                dw: &[
                    -0.8594921172555559,
                    -0.03358144384790762,
                    -0.6921829946993086,
                ],
                stats: &[
                    3.0625,
                    2.9375,
                    8.5625,
                    25.848958333333332,
                    21.348958333333332,
                    13.932291666666666,
                ],
                dx_eval: &[
                    0.318197256099495,
                    0.14141994242322653,
                    0.3333331486388147,
                    1.0606575200355906,
                    0.7070997103397758,
                    0.0,
                    0.2651643793427638,
                    0.5303247831989211,
                    0.33333314775063627,
                    1.0606575200355906,
                    -0.42425982638150117,
                    -0.266666518200509,
                ],
            },
            Case {
                shape: &[2, 2, 2, 2],
                x: &[
                    0.5, -1.25, 3.0, 2.0, 0.0, 10.0, 10.5, 9.0, 11.0, -0.75, 4.0, 10.25, 1.5, 2.5,
                    -3.0, 0.25,
                ],
                w: &[0.75, -1.5],
                b: &[0.5, -0.25],
                dy: &[
                    0.3, -0.2, 0.5, 1.0, -1.0, 0.0, 0.25, -0.75, 0.5, 1.0, 0.6, -0.4, 0.1, 0.2,
                    -0.3, 0.7,
                ],
                rm: &[1.0, -1.0],
                rv: &[4.0, 0.25],
                y_train: &[
                    -0.028647062073737684,
                    -0.32767974365080144,
                    0.39854248303635337,
                    0.22766666499231691,
                    0.9311641739569607,
                    -2.141783270483913,
                    -2.295430642705956,
                    -1.8344885260398254,
                    1.765549027388645,
                    -0.24224183462878324,
                    0.5694183010803898,
                    1.6373921638556177,
                    0.47022205729082966,
                    0.16292731284674233,
                    1.8530484072892226,
                    0.8543404878459389,
                ],
                y_eval: &[
                    0.31250023437456054,
                    -0.3437489453144774,
                    1.2499990625017579,
                    0.8749995312508789,
                    -3.24994000179994,
                    -33.249340019799334,
                    -34.74931002069931,
                    -30.249400017999395,
                    4.249995312508789,
                    -0.15624917968903795,
                    1.6249985937526366,
                    3.96874566407063,
                    -7.749850004499849,
                    -10.749790006299788,
                    5.74988000359988,
                    -3.9999250022499244,
                ],
                dx: &[
                    -0.03606347687146183,
                    -0.1310270126841928,
                    0.011719725023784378,
                    0.09171441878175202,
                    0.2723826174610977,
                    -0.024030429035537537,
                    -0.1003100303931248,
                    0.2053524593148559,
                    0.05526544755163343,
                    0.07674557667147752,
                    0.03425052202965517,
                    -0.10260519989202521,
                    -0.06400934682293524,
                    -0.09365065123390082,
                    0.05401178709840693,
                    -0.24974640555619487,
                ],
                dw: &[-1.1185246256983916, 0.138282635009368],
                stats: &[3.59375, 3.84375, 22.016741071428573, 27.231026785714285],
                dx_eval: &[
                    0.11249985920613881,
                    -0.07499990672954482,
                    0.1874997650475052,
                    0.37499953098318883,
                    2.999940001302548,
                    0.0,
                    -0.749985000325637,
                    2.249955000976911,
                    0.1874997650475052,
                    0.37499953098318883,
                    0.22499971930045604,
                    -0.14999981257091122,
                    -0.29999399941971205,
                    -0.599988000615781,
                    0.8999820009236714,
                    -2.099958001267055,
                ],
            },
        ];
        for c in &cases {
            let s = c.shape;
            let stats = batch_stats(c.x, s);
            close(&stats, c.stats, 1e-9);
            close(
                &batch_norm(c.x, s, &stats, [c.w, c.b], 1e-5),
                c.y_train,
                1e-9,
            );
            let p = [c.w, c.b, c.rm, c.rv];
            close(&batch_norm_eval(c.x, s, p, 1e-5), c.y_eval, 1e-9);
            let dw = batch_norm_weight_grad(c.x, s, &stats, c.dy, 1e-5);
            close(&dw, c.dw, 1e-6);
            // Σ dy per channel (the bias's gradient), the second sum the input's gradient uses.
            let (_, ch, hw) = bcs(s);
            let mut db = vec![0.0; ch];
            for (i, g) in c.dy.iter().enumerate() {
                db[(i / hw) % ch] += g;
            }
            let dx = batch_norm_grad(c.x, s, [&stats, c.w, c.dy], [&dw, &db], 1e-5);
            close(&dx, c.dx, 1e-6);
            close(
                &batch_norm_eval_grad(c.dy, s, c.w, c.rv, 1e-5),
                c.dx_eval,
                1e-6,
            );
        }
    }
}
