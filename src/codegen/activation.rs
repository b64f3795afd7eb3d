//! The activations with more than one piece or a parameter (leaky_relu, elu, gelu, silu,
//! softplus) and their derivatives, as Cranelift IR on `F32` or `F32X4` lanes, built from the
//! functions of [`super::math`].
//!
//! Where a formula multiplies x by a factor that tends to 0 (gelu, silu at −∞) or a derivative
//! multiplies x by one (`x·φ(x)`, `x·(1 − σ(x))` at ±∞), x is clamped first to ±128, beyond
//! which the factor is 0 or 1 in f32 anyway, so that `∞·0` never makes a NaN: the results are
//! the limits, 0 or x, as the interpreter's ([`crate::interp`]). NaN propagates.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

use super::math::{
    clamp_above, clamp_below, emit_erf, emit_exp, emit_expm1, emit_log1p, emit_sigmoid, emit_tanh,
    Emit,
};
use crate::ir::UnaryOp;

/// `√(2/π)` and the cubic's coefficient of GELU's tanh form (PyTorch's `kBeta`, `kKappa`).
const GELU_BETA: f32 = 0.797_884_6;
const GELU_KAPPA: f32 = 0.044_715;
/// Where the factors that clamping protects are exactly 0 or 1 in f32.
const CLAMP: f32 = 128.0;

/// A constant of `x`'s lane type.
fn k(b: &mut FunctionBuilder, x: Value, v: f32) -> Value {
    Emit::new(b, x).f(v)
}

/// `c ? x : y` for `c` from [`cmp`].
fn sel(b: &mut FunctionBuilder, c: Value, x: Value, y: Value) -> Value {
    Emit::new(b, x).sel(c, x, y)
}

fn cmp(b: &mut FunctionBuilder, cc: FloatCC, x: Value, y: Value) -> Value {
    b.ins().fcmp(cc, x, y)
}

/// `0 < x`.
fn positive(b: &mut FunctionBuilder, x: Value) -> Value {
    let z = k(b, x, 0.0);
    cmp(b, FloatCC::LessThan, z, x)
}

/// x clamped to [−128, ∞) (`both`: and to (−∞, 128]).
fn clamped(b: &mut FunctionBuilder, x: Value, both: bool) -> Value {
    let mut e = Emit::new(b, x);
    let x = clamp_below(&mut e, x, -CLAMP);
    if both {
        clamp_above(&mut e, x, CLAMP)
    } else {
        x
    }
}

/// `f(x)` for the activations listed above (the others have their arms in
/// [`super::elementwise::unary`]).
pub fn forward(b: &mut FunctionBuilder, op: UnaryOp, x: Value) -> Value {
    match op {
        UnaryOp::LeakyRelu(_) => {
            // A zero slope is relu, 0 (not 0·∞ = NaN) at −∞.
            let s = k(b, x, op.param());
            let sx = if op.param() == 0.0 {
                s
            } else {
                b.ins().fmul(s, x)
            };
            let c = positive(b, x);
            sel(b, c, x, sx)
        }
        UnaryOp::Elu(_) => {
            let m = emit_expm1(b, x);
            let a = k(b, x, op.param());
            let am = b.ins().fmul(a, m);
            let c = positive(b, x);
            sel(b, c, x, am)
        }
        UnaryOp::Gelu => {
            // PyTorch's `x·½·(1 + erf(x/√2))`.
            let xc = clamped(b, x, false);
            let cdf2 = one_plus_erf(b, xc);
            let half = k(b, x, 0.5);
            let hx = b.ins().fmul(xc, half);
            b.ins().fmul(hx, cdf2)
        }
        UnaryOp::GeluTanh => {
            let xc = clamped(b, x, false);
            let t = gelu_tanh_inner(b, xc);
            let one = k(b, x, 1.0);
            let opt = b.ins().fadd(one, t);
            let half = k(b, x, 0.5);
            let hx = b.ins().fmul(half, xc);
            b.ins().fmul(hx, opt)
        }
        UnaryOp::Silu => {
            let s = emit_sigmoid(b, x);
            let xc = clamped(b, x, false);
            b.ins().fmul(xc, s)
        }
        UnaryOp::Softplus { .. } => {
            // `max(z, 0) + log(1 + e^{−|z|})`, which is `log(1 + e^z)` without overflow.
            let beta = k(b, x, op.param());
            let z = b.ins().fmul(beta, x);
            let zero = k(b, x, 0.0);
            let c = cmp(b, FloatCC::LessThan, zero, z);
            let m = sel(b, c, z, zero);
            let a = b.ins().fabs(z);
            let na = b.ins().fneg(a);
            let ex = emit_exp(b, na);
            let l = emit_log1p(b, ex);
            let sum = b.ins().fadd(m, l);
            let r = b.ins().fdiv(sum, beta);
            let thr = k(b, x, op.threshold());
            let linear = cmp(b, FloatCC::LessThan, thr, z);
            sel(b, linear, x, r)
        }
        _ => unreachable!("{op} has its own arm in `elementwise::unary`"),
    }
}

/// `1 + erf(x/√2)`, twice the normal distribution function.
fn one_plus_erf(b: &mut FunctionBuilder, x: Value) -> Value {
    let r = k(b, x, std::f32::consts::FRAC_1_SQRT_2);
    let xs = b.ins().fmul(x, r);
    let erf = emit_erf(b, xs);
    let one = k(b, x, 1.0);
    b.ins().fadd(one, erf)
}

/// `tanh(√(2/π)·(x + 0.044715x³))`.
fn gelu_tanh_inner(b: &mut FunctionBuilder, x: Value) -> Value {
    let kappa = k(b, x, GELU_KAPPA);
    let x2 = b.ins().fmul(x, x);
    let x3 = b.ins().fmul(x2, x);
    let inner = b.ins().fma(kappa, x3, x);
    let beta = k(b, x, GELU_BETA);
    let inner = b.ins().fmul(beta, inner);
    emit_tanh(b, inner)
}

/// `dy·f'` for the activations listed above, `v` being the forward output or input as
/// [`UnaryOp::grad_uses_output`] says (the others have their arms in
/// [`super::elementwise::unary_grad`]).
pub fn grad(b: &mut FunctionBuilder, op: UnaryOp, v: Value, dy: Value) -> Value {
    let d = match op {
        // 1 or the slope: `v > 0` says which, whether v is the output (a positive slope) or
        // the input.
        UnaryOp::LeakyRelu(_) => {
            let s = k(b, v, op.param());
            let sd = b.ins().fmul(dy, s);
            let c = positive(b, v);
            return sel(b, c, dy, sd);
        }
        UnaryOp::Elu(_) => {
            let alpha = k(b, v, op.param());
            let neg = if op.grad_uses_output() {
                // alpha·eˣ = y + alpha where x ≤ 0.
                b.ins().fadd(v, alpha)
            } else {
                let ex = emit_exp(b, v);
                b.ins().fmul(alpha, ex)
            };
            let nd = b.ins().fmul(dy, neg);
            let c = positive(b, v);
            return sel(b, c, dy, nd);
        }
        UnaryOp::Gelu => {
            // Φ(x) + x·φ(x).
            let x = clamped(b, v, true);
            let cdf2 = one_plus_erf(b, x);
            let half = k(b, x, 0.5);
            let cdf = b.ins().fmul(half, cdf2);
            let mh = k(b, x, -0.5);
            let x2 = b.ins().fmul(x, x);
            let arg = b.ins().fmul(mh, x2);
            let ex = emit_exp(b, arg);
            let c = k(b, x, 0.398_942_3); // 1/√(2π)
            let pdf = b.ins().fmul(ex, c);
            b.ins().fma(x, pdf, cdf)
        }
        UnaryOp::GeluTanh => {
            // PyTorch's `½(1 + t) + ½x·(1 − t²)·√(2/π)·(1 + 3·0.044715·x²)`.
            let x = clamped(b, v, true);
            let t = gelu_tanh_inner(b, x);
            let one = k(b, x, 1.0);
            let half = k(b, x, 0.5);
            let opt = b.ins().fadd(one, t);
            let left = b.ins().fmul(half, opt);
            let t2 = b.ins().fmul(t, t);
            let sech2 = b.ins().fsub(one, t2);
            let hx = b.ins().fmul(half, x);
            let r = b.ins().fmul(hx, sech2);
            let beta = k(b, x, GELU_BETA);
            let r = b.ins().fmul(r, beta);
            let k3 = k(b, x, 3.0 * GELU_KAPPA);
            let x2 = b.ins().fmul(x, x);
            let poly = b.ins().fma(k3, x2, one);
            let right = b.ins().fmul(r, poly);
            b.ins().fadd(left, right)
        }
        UnaryOp::Silu => {
            // σ(x)·(1 + x·(1 − σ(x))).
            let x = clamped(b, v, true);
            let s = emit_sigmoid(b, x);
            let one = k(b, x, 1.0);
            let oms = b.ins().fsub(one, s);
            let inner = b.ins().fma(x, oms, one);
            b.ins().fmul(s, inner)
        }
        UnaryOp::Softplus { .. } => {
            let beta = k(b, v, op.param());
            let z = b.ins().fmul(beta, v);
            let s = emit_sigmoid(b, z);
            let sd = b.ins().fmul(dy, s);
            let thr = k(b, v, op.threshold());
            let linear = cmp(b, FloatCC::LessThan, thr, z);
            return sel(b, linear, dy, sd);
        }
        _ => unreachable!("{op} has its own arm in `elementwise::unary_grad`"),
    };
    b.ins().fmul(dy, d)
}
