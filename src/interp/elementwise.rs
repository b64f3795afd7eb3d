//! Elementwise ops: `Unary`, `Binary` (with scalar broadcast) and `UnaryGrad`.

use crate::ir::{BinaryOp, UnaryOp};

pub fn unary_fn(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Relu => x.max(0.0),
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
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

/// dx from `v` (the forward output for sigmoid/tanh/exp, the forward input otherwise) and dy.
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
        })
        .collect()
}
