//! Dense algebra: `MatMul` (with the row-flattening rules of `ta`/`tb`), `BiasAdd`, `BiasGrad`.

/// `c = op(a)·op(b)`. `k_a` is a's last dim; `b_dims` b's dims (b's leading dims when `ta`).
/// - `!ta`: a is `[R, K]`, b `[K, N]` (`[N, K]` when `tb`), c `[R, N]`;
/// - `ta`: a is `[R, M]`, b `[R, N]`, c = aᵀ·b `[M, N]`.
pub fn matmul(
    ta: bool,
    tb: bool,
    a: &[f64],
    k_a: usize,
    b: &[f64],
    b_dims: &[usize],
) -> Result<Vec<f64>, String> {
    let n = *b_dims.last().unwrap_or(&1);
    if ta {
        if tb {
            return Err("matmul with both ta and tb is not supported".into());
        }
        let (m, rows) = (k_a, a.len() / k_a.max(1));
        let mut c = vec![0.0; m * n];
        for r in 0..rows {
            for i in 0..m {
                let av = a[r * m + i];
                for j in 0..n {
                    c[i * n + j] += av * b[r * n + j];
                }
            }
        }
        return Ok(c);
    }
    let k = k_a;
    let rows = a.len() / k.max(1);
    if tb {
        // c[r, j] = a[r, :] · b[j, :]
        let n = b_dims[0];
        let mut c = vec![0.0; rows * n];
        for r in 0..rows {
            let ar = &a[r * k..(r + 1) * k];
            for j in 0..n {
                c[r * n + j] = ar
                    .iter()
                    .zip(&b[j * k..(j + 1) * k])
                    .map(|(x, y)| x * y)
                    .sum();
            }
        }
        return Ok(c);
    }
    // c[r, :] = Σ_l a[r, l] · b[l, :]
    let mut c = vec![0.0; rows * n];
    for r in 0..rows {
        let cr = &mut c[r * n..(r + 1) * n];
        for l in 0..k {
            let av = a[r * k + l];
            for (cv, bv) in cr.iter_mut().zip(&b[l * n..(l + 1) * n]) {
                *cv += av * bv;
            }
        }
    }
    Ok(c)
}

/// Size of `axis` and the number of elements after it (the stride of one step along `axis`).
fn axis_geometry(shape: &[usize], axis: usize) -> (usize, usize) {
    (shape[axis], shape[axis + 1..].iter().product())
}

/// x + b broadcast along full-shape axis `axis`.
pub fn bias_add(x: &[f64], shape: &[usize], axis: usize, b: &[f64]) -> Vec<f64> {
    let (c, inner) = axis_geometry(shape, axis);
    x.iter()
        .enumerate()
        .map(|(i, &v)| v + b[(i / inner) % c])
        .collect()
}

/// Σ dy over every axis but `axis`.
pub fn bias_grad(dy: &[f64], shape: &[usize], axis: usize) -> Vec<f64> {
    let (c, inner) = axis_geometry(shape, axis);
    let mut g = vec![0.0; c];
    for (i, &v) in dy.iter().enumerate() {
        g[(i / inner) % c] += v;
    }
    g
}
