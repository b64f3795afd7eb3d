//! Elementwise ops: `Unary`, `Binary` (with scalar broadcast) and `UnaryGrad`.

use super::special::{normal_cdf, normal_pdf};
use crate::ir::{BinaryOp, UnaryOp};

/// `√(2/π)` and the cubic's coefficient of the tanh form of GELU (PyTorch's `kBeta`, `kKappa`).
const GELU_BETA: f64 = 0.797_884_560_802_865_4;
const GELU_KAPPA: f64 = 0.044_715;

/// `f(x)`, except at ±∞, where the activations that multiply x by a factor tending to 0 or 1
/// (gelu, silu) would give `∞·0 = NaN`: there they take their limits, 0 and x.
fn at_infinity(x: f64, f: impl Fn(f64) -> f64) -> f64 {
    if x.is_infinite() {
        x.max(0.0)
    } else {
        f(x)
    }
}

/// `f'(x)` likewise: 0 at −∞ and 1 at +∞, the limits of every such derivative.
fn slope_at_infinity(x: f64, f: impl Fn(f64) -> f64) -> f64 {
    if x.is_infinite() {
        f64::from(x > 0.0)
    } else {
        f(x)
    }
}

/// `σ(x)`.
fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

pub fn unary_fn(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Relu => x.max(0.0),
        UnaryOp::Sigmoid => sigmoid(x),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        // A zero slope is relu, 0 (not 0·∞ = NaN) at −∞ and for NaN.
        UnaryOp::LeakyRelu(_) if op.param() == 0.0 => x.max(0.0),
        UnaryOp::LeakyRelu(_) => {
            if x > 0.0 {
                x
            } else {
                f64::from(op.param()) * x
            }
        }
        UnaryOp::Elu(_) => {
            if x > 0.0 {
                x
            } else {
                f64::from(op.param()) * x.exp_m1()
            }
        }
        UnaryOp::Gelu => at_infinity(x, |x| x * normal_cdf(x)),
        UnaryOp::GeluTanh => at_infinity(x, |x| {
            0.5 * x * (1.0 + (GELU_BETA * (x + GELU_KAPPA * x * x * x)).tanh())
        }),
        UnaryOp::Silu => at_infinity(x, |x| x * sigmoid(x)),
        UnaryOp::Softplus { .. } => {
            let beta = f64::from(op.param());
            let z = beta * x;
            if z > f64::from(op.threshold()) {
                x
            } else {
                // log(1 + e^z) without overflow: max(z, 0) + log(1 + e^{−|z|}).
                (z.max(0.0) + (-z.abs()).exp().ln_1p()) / beta
            }
        }
    }
}

/// `f'(x)` from the forward input, for the activations whose gradient reads it.
fn derivative_from_input(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::LeakyRelu(_) => {
            if x > 0.0 {
                1.0
            } else {
                f64::from(op.param())
            }
        }
        UnaryOp::Elu(_) => {
            if x > 0.0 {
                1.0
            } else {
                f64::from(op.param()) * x.exp()
            }
        }
        UnaryOp::Gelu => slope_at_infinity(x, |x| normal_cdf(x) + x * normal_pdf(x)),
        UnaryOp::GeluTanh => slope_at_infinity(x, |x| {
            let t = (GELU_BETA * (x + GELU_KAPPA * x * x * x)).tanh();
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_BETA * (1.0 + 3.0 * GELU_KAPPA * x * x)
        }),
        UnaryOp::Silu => slope_at_infinity(x, |x| {
            let s = sigmoid(x);
            s * (1.0 + x * (1.0 - s))
        }),
        UnaryOp::Softplus { .. } => {
            let z = f64::from(op.param()) * x;
            if z > f64::from(op.threshold()) {
                1.0
            } else {
                sigmoid(z)
            }
        }
        _ => unreachable!("{op}'s gradient has its own arm in `unary_grad`"),
    }
}

/// The derivative of `op` expressed in terms of its forward *output* `y` (what the recurrent
/// gradient has at hand): tanh 1−y², sigmoid y(1−y), exp y, relu `[y > 0]`, neg −1, log e^(−y).
pub fn derivative_from_output(op: UnaryOp, y: f64) -> f64 {
    match op {
        UnaryOp::Neg => -1.0,
        UnaryOp::Relu => {
            if y > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        UnaryOp::Sigmoid => y * (1.0 - y),
        UnaryOp::Tanh => 1.0 - y * y,
        UnaryOp::Exp => y,
        UnaryOp::Log => (-y).exp(),
        // With a positive slope (`grad_uses_output`), y > 0 exactly where x > 0.
        UnaryOp::LeakyRelu(_) => {
            if y > 0.0 {
                1.0
            } else {
                f64::from(op.param())
            }
        }
        // With alpha ≥ 0: alpha·eˣ = y + alpha where x ≤ 0.
        UnaryOp::Elu(_) => {
            if y > 0.0 {
                1.0
            } else {
                y + f64::from(op.param())
            }
        }
        _ => unreachable!("{op} is no recurrent activation and its gradient reads its input"),
    }
}

pub fn unary(op: UnaryOp, x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| unary_fn(op, v)).collect()
}

/// `a op b`, where a scalar operand (`a_scalar`/`b_scalar`) is broadcast to the other's shape.
pub fn binary(op: BinaryOp, a: &[f64], a_scalar: bool, b: &[f64], b_scalar: bool) -> Vec<f64> {
    let f = |x: f64, y: f64| match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
    };
    if a_scalar && !b_scalar {
        b.iter().map(|&y| f(a[0], y)).collect()
    } else if b_scalar && !a_scalar {
        a.iter().map(|&x| f(x, b[0])).collect()
    } else {
        a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
    }
}

/// dx from `v` (the forward output where [`UnaryOp::grad_uses_output`], the forward input
/// otherwise) and dy.
pub fn unary_grad(op: UnaryOp, v: &[f64], dy: &[f64]) -> Vec<f64> {
    v.iter()
        .zip(dy)
        .map(|(&v, &d)| match op {
            UnaryOp::Neg => -d,
            UnaryOp::Relu => {
                if v > 0.0 {
                    d
                } else {
                    0.0
                }
            }
            UnaryOp::Sigmoid => d * v * (1.0 - v),
            UnaryOp::Tanh => d * (1.0 - v * v),
            UnaryOp::Exp => d * v,
            UnaryOp::Log => d / v,
            _ if op.grad_uses_output() => d * derivative_from_output(op, v),
            _ => d * derivative_from_input(op, v),
        })
        .collect()
}
