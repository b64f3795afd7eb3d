//! The error function in f64, which Rust's standard library lacks: the exact GELU is
//! `x·Φ(x)` with `Φ(x) = ½·erfc(−x/√2)`. Series below 2, continued fraction above, each
//! without cancellation, so both `erf` and `erfc` keep full relative precision (about 1e-15).

use std::f64::consts::{FRAC_1_SQRT_2, PI};

/// `erf(x) = 2/√π ∫₀ˣ e^{−t²} dt`.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let r = if a < 2.0 {
        erf_series(a)
    } else {
        1.0 - erfc_fraction(a)
    };
    r.copysign(x)
}

/// `erfc(x) = 1 − erf(x)`, accurate where it is tiny (x ≫ 0).
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let r = if a < 2.0 {
        1.0 - erf_series(a)
    } else {
        erfc_fraction(a)
    };
    if x < 0.0 {
        2.0 - r
    } else {
        r
    }
}

/// The standard normal distribution function `Φ(x) = ½·erfc(−x/√2)`.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x * FRAC_1_SQRT_2)
}

/// The standard normal density `φ(x) = e^{−x²/2}/√(2π)`.
pub fn normal_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * PI).sqrt()
}

/// `erf(a)` for 0 ≤ a < 2 by `2/√π · e^{−a²} · Σ (2a²)ⁿ·a / (1·3·…·(2n+1))`, whose terms are
/// all positive.
fn erf_series(a: f64) -> f64 {
    let (mut term, mut sum) = (a, a);
    let mut n = 0.0;
    while term > sum * 1e-18 {
        n += 1.0;
        term *= 2.0 * a * a / (2.0 * n + 1.0);
        sum += term;
    }
    2.0 / PI.sqrt() * (-a * a).exp() * sum
}

/// `erfc(a)` for a ≥ 2 by the continued fraction `e^{−a²}/√π / (a + ½/(a + 1/(a + 3/2/(a + …))))`.
fn erfc_fraction(a: f64) -> f64 {
    if a.is_infinite() {
        return 0.0;
    }
    let mut t = a;
    for n in (1..=200).rev() {
        t = a + f64::from(n) / 2.0 / t;
    }
    (-a * a).exp() / PI.sqrt() / t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 4e-15 * b.abs()
    }

    /// Tabulated values of both branches (`tests/pytorch_reference.rs` checks them against
    /// Simpson's rule on the defining integral too).
    #[test]
    fn tabulated_values() {
        for (x, e) in [
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
        ] {
            assert!(close(erf(x), e), "erf({x}) = {} ≠ {e}", erf(x));
            assert!(close(erf(-x), -e));
        }
        for (x, e) in [
            (2.0, 4.677_734_981_047_266e-3),
            (3.0, 2.209_049_699_858_544e-5),
            (5.0, 1.537_459_794_428_035e-12),
        ] {
            assert!(close(erfc(x), e), "erfc({x}) = {} ≠ {e}", erfc(x));
        }
        assert_eq!(erf(f64::INFINITY), 1.0);
        assert_eq!(erf(f64::NEG_INFINITY), -1.0);
        assert_eq!(erfc(f64::NEG_INFINITY), 2.0);
        assert!(erf(f64::NAN).is_nan());
    }
}
