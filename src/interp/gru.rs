//! The GRU recurrence: `GruScan` with its `GruGates`, and `GruScanGrad` with its
//! `GruRecurGrad`. Sequences are `B×T×k·H`, row-major; gate blocks are r, z, n (PyTorch's).

fn sigmoid(a: f64) -> f64 {
    1.0 / (1.0 + (-a).exp())
}

/// h and the gates (r, z, n, hp_n per step: `B×T×4H`) of a GRU over `xp` (`s` = `[B, T, 3H]`),
/// with recurrent weight `w` (`H×3H`) and bias `b` (`3H`).
pub fn gru_scan(xp: &[f64], s: &[usize], w: &[f64], b: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (nb, t_len, h) = (s[0], s[1], s[2] / 3);
    let mut out = vec![0.0; nb * t_len * h];
    let mut gates = vec![0.0; nb * t_len * 4 * h];
    let mut hp = vec![0.0; 3 * h];
    for bi in 0..nb {
        for t in 0..t_len {
            let row = bi * t_len + t;
            // hp = h_{t−1}·w + b, h_{−1} = 0.
            hp.copy_from_slice(b);
            if t > 0 {
                let prev = &out[(row - 1) * h..row * h];
                for (i, &hv) in prev.iter().enumerate() {
                    for (j, p) in hp.iter_mut().enumerate() {
                        *p += hv * w[i * 3 * h + j];
                    }
                }
            }
            let x = &xp[row * 3 * h..(row + 1) * 3 * h];
            for j in 0..h {
                let r = sigmoid(x[j] + hp[j]);
                let z = sigmoid(x[h + j] + hp[h + j]);
                let n = (x[2 * h + j] + r * hp[2 * h + j]).tanh();
                let prev = if t > 0 { out[(row - 1) * h + j] } else { 0.0 };
                out[row * h + j] = (1.0 - z) * n + z * prev;
                let g = &mut gates[row * 4 * h..(row + 1) * 4 * h];
                (g[j], g[h + j], g[2 * h + j], g[3 * h + j]) = (r, z, n, hp[2 * h + j]);
            }
        }
    }
    (out, gates)
}

/// dxp and dhp (both `B×T×3H`) of a GRU whose output is `hs` (`s` = `[B, T, H]`) and gates
/// `gates`, with recurrent weight `w`, given the gradient `dh` of its output.
pub fn gru_scan_grad(
    hs: &[f64],
    s: &[usize],
    gates: &[f64],
    w: &[f64],
    dh: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let (nb, t_len, h) = (s[0], s[1], s[2]);
    let mut dxp = vec![0.0; nb * t_len * 3 * h];
    let mut dhp = vec![0.0; nb * t_len * 3 * h];
    // The gradient of h_t, and z_t ⊙ it (what reaches h_{t−1} directly).
    let mut carry = vec![0.0; h];
    for bi in 0..nb {
        for t in (0..t_len).rev() {
            let row = bi * t_len + t;
            for (i, c) in carry.iter_mut().enumerate() {
                let mut gi = dh[row * h + i];
                if t + 1 < t_len {
                    gi += *c;
                    let next = &dhp[(row + 1) * 3 * h..(row + 2) * 3 * h];
                    for (j, d) in next.iter().enumerate() {
                        gi += d * w[i * 3 * h + j];
                    }
                }
                *c = gi;
            }
            let gt = &gates[row * 4 * h..(row + 1) * 4 * h];
            for j in 0..h {
                let (r, z, n, hn) = (gt[j], gt[h + j], gt[2 * h + j], gt[3 * h + j]);
                let prev = if t > 0 { hs[(row - 1) * h + j] } else { 0.0 };
                let g = carry[j];
                let dn = g * (1.0 - z) * (1.0 - n * n);
                let dz = g * (prev - n) * z * (1.0 - z);
                let dr = dn * hn * r * (1.0 - r);
                let at = row * 3 * h;
                (dxp[at + j], dxp[at + h + j], dxp[at + 2 * h + j]) = (dr, dz, dn);
                (dhp[at + j], dhp[at + h + j], dhp[at + 2 * h + j]) = (dr, dz, dn * r);
                carry[j] = g * z;
            }
        }
    }
    (dxp, dhp)
}
