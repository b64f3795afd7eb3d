//! The LSTM: `LstmScan` (the cell over time), `LstmHidden` (its outputs) and `LstmScanGrad`
//! (backpropagation through time). Sequences are `B×T×·`, row-major; each step of the state
//! holds `[h, c, i, f, g, o]`, `H` each.

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The state of every step: z_t = xp_t + h_{t−1}·w_hh (`w_hh` H×4H), i, f, o = σ and g = tanh
/// of its four blocks, c_t = f⊙c_{t−1} + i⊙g, h_t = o⊙tanh(c_t), h_{−1} = c_{−1} = 0.
pub fn lstm_scan(xp: &[f64], s: &[usize], w: &[f64]) -> Vec<f64> {
    let (nb, t_len, h4) = (s[0], s[1], s[2]);
    let h = h4 / 4;
    let mut out = vec![0.0; nb * t_len * 6 * h];
    for b in 0..nb {
        for t in 0..t_len {
            let (at, st) = ((b * t_len + t) * h4, (b * t_len + t) * 6 * h);
            let mut z = xp[at..at + h4].to_vec();
            if t > 0 {
                let prev = st - 6 * h;
                for k in 0..h {
                    for (n, zn) in z.iter_mut().enumerate() {
                        *zn += out[prev + k] * w[k * h4 + n];
                    }
                }
            }
            for j in 0..h {
                let (i, f) = (sigmoid(z[j]), sigmoid(z[h + j]));
                let (g, o) = (z[2 * h + j].tanh(), sigmoid(z[3 * h + j]));
                let c_prev = if t > 0 { out[st - 5 * h + j] } else { 0.0 };
                let c = f * c_prev + i * g;
                for (k, v) in [o * c.tanh(), c, i, f, g, o].into_iter().enumerate() {
                    out[st + k * h + j] = v;
                }
            }
        }
    }
    out
}

/// The hidden states `h_t` out of the state (`s` its shape, `B×T×6H`).
pub fn lstm_hidden(st: &[f64], s: &[usize]) -> Vec<f64> {
    let h = s[2] / 6;
    st.chunks(6 * h)
        .flat_map(|step| &step[..h])
        .copied()
        .collect()
}

/// dz_t, the gradient w.r.t. the gate pre-activations, backwards through time: with
/// dh'_t = dh_t + dz_{t+1}·w_hhᵀ and dc_t = dh'_t⊙o⊙(1 − tanh²c_t) + dc_{t+1}⊙f_{t+1},
/// dz_t = [dc⊙g⊙i(1−i), dc⊙c_{t−1}⊙f(1−f), dc⊙i⊙(1−g²), dh'⊙tanh(c_t)⊙o(1−o)].
pub fn lstm_scan_grad(st: &[f64], s: &[usize], w: &[f64], dh: &[f64]) -> Vec<f64> {
    let (nb, t_len, h) = (s[0], s[1], s[2] / 6);
    let h4 = 4 * h;
    let mut dz = vec![0.0; nb * t_len * h4];
    for b in 0..nb {
        // dc_{t+1}⊙f_{t+1}, carried down the steps.
        let mut carry = vec![0.0; h];
        for t in (0..t_len).rev() {
            let row = b * t_len + t;
            let (at, sp) = (row * h4, row * 6 * h);
            for j in 0..h {
                let mut d = dh[row * h + j];
                if t + 1 < t_len {
                    for n in 0..h4 {
                        d += dz[at + h4 + n] * w[j * h4 + n];
                    }
                }
                let [c, i, f, g, o] = [1, 2, 3, 4, 5].map(|k| st[sp + k * h + j]);
                let c_prev = if t > 0 { st[sp - 5 * h + j] } else { 0.0 };
                let tc = c.tanh();
                let dc = d * o * (1.0 - tc * tc) + carry[j];
                dz[at + j] = dc * g * i * (1.0 - i);
                dz[at + h + j] = dc * c_prev * f * (1.0 - f);
                dz[at + 2 * h + j] = dc * i * (1.0 - g * g);
                dz[at + 3 * h + j] = d * tc * o * (1.0 - o);
                carry[j] = dc * f;
            }
        }
    }
    dz
}
