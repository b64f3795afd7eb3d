//! The activations' arguments, bound as PyTorch's modules take them (`leaky_relu(0.2)`,
//! `elu(alpha: 1.0)`, `gelu(approximate: "tanh")`, `softplus(beta: 2, threshold: 20)`), and
//! the op each activation lowers to.

use super::args::{bind, Bound, Sig};
use super::consts;
use crate::diag::Diag;
use crate::ir::{Op, UnaryOp};
use crate::syntax::ast::{Arg, Expr, ExprKind, Ident, Span};

/// How the activations with arguments take them; `None` for those without.
fn sig(name: &str) -> Option<Sig> {
    Some(match name {
        "leaky_relu" => Sig {
            forms: &[&[], &["negative_slope"]],
            named: &[],
            required: &[],
            usage: "`leaky_relu` or `leaky_relu(negative_slope: 0.01)`",
        },
        "elu" => Sig {
            forms: &[&[], &["alpha"]],
            named: &[],
            required: &[],
            usage: "`elu` or `elu(alpha: 1.0)`",
        },
        "gelu" => Sig {
            forms: &[&[], &["approximate"]],
            named: &[],
            required: &[],
            usage: "`gelu` or `gelu(approximate: \"tanh\")`",
        },
        "softplus" => Sig {
            forms: &[&[], &["beta"], &["beta", "threshold"]],
            named: &[],
            required: &[],
            usage: "`softplus` or `softplus(beta: 1, threshold: 20)`",
        },
        _ => return None,
    })
}

/// Whether activation `name` takes arguments (`leaky_relu(0.2)`); `relu` and the others
/// without any are refused them with their own message.
pub fn takes_arguments(name: &str) -> bool {
    sig(name).is_some()
}

/// The op of activation `callee` given `args` (the activation's own: for `leaky_relu(x, 0.2)`
/// those after the tensor), which span `span`.
pub fn op(callee: &Ident, args: &[Arg], span: Span) -> Result<Op, Vec<Diag>> {
    let name = callee.name.as_str();
    let bound = match sig(name) {
        Some(s) => Some(bind(callee, args, span, &s)?),
        None => None,
    };
    let number = |arg: &str, default: f32, nonzero: bool| -> Result<f32, Vec<Diag>> {
        match bound.as_ref().and_then(|b: &Bound| b.get(arg)) {
            None => Ok(default),
            Some(e) => parameter(name, arg, e, nonzero).map_err(|d| vec![d]),
        }
    };
    Ok(match name {
        "relu" => Op::Unary(UnaryOp::Relu),
        "sigmoid" => Op::Unary(UnaryOp::Sigmoid),
        "tanh" => Op::Unary(UnaryOp::Tanh),
        "silu" => Op::Unary(UnaryOp::Silu),
        "softmax" => Op::Softmax,
        "leaky_relu" => Op::Unary(UnaryOp::leaky_relu(number("negative_slope", 0.01, false)?)),
        "elu" => Op::Unary(UnaryOp::elu(number("alpha", 1.0, false)?)),
        "softplus" => {
            let beta = number("beta", 1.0, true);
            let threshold = number("threshold", 20.0, false);
            match (beta, threshold) {
                (Ok(b), Ok(t)) => Op::Unary(UnaryOp::softplus(b, t)),
                (b, t) => return Err([b.err(), t.err()].into_iter().flatten().flatten().collect()),
            }
        }
        "gelu" => match bound.as_ref().and_then(|b| b.get("approximate")) {
            None => Op::Unary(UnaryOp::Gelu),
            Some(e) => Op::Unary(approximate(e).map_err(|d| vec![d])?),
        },
        "log_softmax" => Op::LogSoftmax,
        // Every name of [`super::layers::ACTIVATIONS`] has its arm above: one added there
        // without an op here must not lower silently to another activation.
        other => unreachable!("activation `{other}` has no op"),
    })
}

/// A number argument of an activation: finite in f32 and, for softplus' `beta` (a divisor),
/// not 0. PyTorch checks neither sign, and neither does nnc: a negative slope or alpha is
/// a function of its own, not an error.
fn parameter(callee: &str, arg: &str, e: &Expr, nonzero: bool) -> Result<f32, Diag> {
    let v = consts::number(e)?;
    let f = v as f32;
    if !f.is_finite() {
        return Err(Diag::new(
            "nnc::arg",
            format!("{callee}'s `{arg}` must be a finite f32, found {v:e}"),
            e.span,
            "out of range",
        )
        .help(format!("pick a value below {:e} in magnitude", f32::MAX)));
    }
    if nonzero && f == 0.0 {
        return Err(Diag::new(
            "nnc::arg",
            format!("{callee}'s `{arg}` must not be 0"),
            e.span,
            "divides by 0",
        )
        .help(format!(
            "softplus is log(1 + e^(beta·x))/beta: beta: 1 is PyTorch's default, and a larger \
             beta sharpens it toward relu (write `{callee}(beta: 1)`)"
        )));
    }
    Ok(f)
}

/// gelu's `approximate`: `"none"` (the exact form with erf, PyTorch's default) or `"tanh"`.
fn approximate(e: &Expr) -> Result<UnaryOp, Diag> {
    let found = match &e.kind {
        ExprKind::Str(s) if s == "none" => return Ok(UnaryOp::Gelu),
        ExprKind::Str(s) if s == "tanh" => return Ok(UnaryOp::GeluTanh),
        ExprKind::Str(s) => format!("\"{s}\""),
        _ => match e.as_name() {
            Some(i) => format!("`{}`", i.name),
            None => consts::describe(e).to_string(),
        },
    };
    let d = Diag::new(
        "nnc::arg",
        format!("gelu's `approximate` must be \"none\" or \"tanh\", found {found}"),
        e.span,
        "expected \"none\" or \"tanh\"",
    );
    // Keras' `gelu(approximate=True)`; a bare `tanh`, the name of the activation.
    Err(match e.as_name().map(|i| i.name.as_str()) {
        Some("true" | "True") => d.help(
            "Keras' `approximate=True` is `gelu(approximate: \"tanh\")`; leave it out for the \
             exact form",
        ),
        Some("false" | "False") => {
            d.help("Keras' `approximate=False` is the default: write `gelu`")
        }
        Some("tanh" | "none") => d.help(format!(
            "the value is a string: write `gelu(approximate: \"{}\")`",
            e.as_name().map_or("", |i| i.name.as_str())
        )),
        _ => d.help(
            "\"none\" (the default) is the exact x·Φ(x) with erf, \"tanh\" its tanh \
             approximation, as PyTorch's `nn.GELU(approximate=…)`",
        ),
    })
}
