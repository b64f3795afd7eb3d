//! Constant values written in the file: dimension arithmetic (`64*7*7`), numbers, strings,
//! booleans, lists. Every failure is a [`Diag`] pointing at the offending expression.

use crate::diag::Diag;
use crate::syntax::ast::{BinOp, Expr, ExprKind};

/// The largest tensor, in elements, that nnc accepts (per sample or per parameter).
pub const MAX_ELEMENTS: u64 = 1 << 31;

/// The most steps or epochs a run may have (in the file and on the command line).
pub const MAX_STEPS: u64 = MAX_ELEMENTS;

/// Short description of an expression's kind, for "expected X, found Y" messages.
pub fn describe(e: &Expr) -> &'static str {
    match &e.kind {
        ExprKind::Number { .. } => "a number",
        ExprKind::Str(_) => "a string",
        ExprKind::Path(_) => "a name",
        ExprKind::List(_) => "a list",
        ExprKind::Map(_) => "a map",
        ExprKind::Call { .. } => "a call",
        ExprKind::Pipe { .. } => "a pipeline",
        ExprKind::Binary { .. } | ExprKind::Neg(_) => "an expression",
        ExprKind::Every { .. } => "an `every` clause",
    }
}

/// Evaluates constant arithmetic (`1e-4`, `64*7*7`, `-1`, `(0.5)`).
pub fn number(e: &Expr) -> Result<f64, Diag> {
    match &e.kind {
        ExprKind::Number { value, .. } => Ok(*value),
        ExprKind::Neg(a) => Ok(-number(a)?),
        ExprKind::Binary { op, lhs, rhs } => {
            let (a, b) = (number(lhs)?, number(rhs)?);
            Ok(match op {
                BinOp::Add => a + b,
                BinOp::Sub => a - b,
                BinOp::Mul => a * b,
                BinOp::Div => {
                    if b == 0.0 {
                        return Err(Diag::new(
                            "nnc::arg",
                            "division by zero",
                            rhs.span,
                            "this is 0",
                        ));
                    }
                    a / b
                }
            })
        }
        ExprKind::Path(p) => Err(Diag::new(
            "nnc::arg",
            format!(
                "expected a constant number, found the name `{}`",
                join_path(p)
            ),
            e.span,
            "not a constant",
        )
        .help("sizes and settings are constant arithmetic such as `64*7*7` or `1e-3`")),
        _ => Err(Diag::new(
            "nnc::arg",
            format!("expected a number, found {}", describe(e)),
            e.span,
            "expected a number",
        )
        .help("write a number such as `128` or `0.1`, or constant arithmetic such as `64*7*7`")),
    }
}

/// Whole numbers are exact below this (2^53): the file's numbers are f64, and a larger one may
/// not be the number written (9007199254740993 reads as 2^53).
const EXACT: f64 = 9_007_199_254_740_992.0;

/// A whole number (`3`, `64*7*7`) of magnitude below 2^53; `what` names it in the message ("the
/// kernel size").
pub fn integer(e: &Expr, what: &str) -> Result<i64, Diag> {
    let v = whole(e, what)?;
    if v.abs() >= EXACT {
        return Err(Diag::new(
            "nnc::arg",
            format!("{what} is far too large: {v}"),
            e.span,
            "too large",
        )
        .help(
            "a whole number is exact below 2^53 (9,007,199,254,740,992), and no setting needs \
             more",
        ));
    }
    Ok(v as i64)
}

/// A string or a list where a whole number is wanted, in the ways PyTorch and pandas write
/// them: `kernel: [3, 3]`, `label: "target"`. `None` for anything else
/// (left to [`number`]'s message).
fn not_a_whole_number(e: &Expr, what: &str) -> Option<Diag> {
    let help = match (&e.kind, what) {
        (ExprKind::Str(_), "the label column") => {
            "the label column is given by its position, counted from 0 (negative counts from \
             the end: `label: -1` is the last column), not by its name in the header"
                .to_string()
        }
        (
            ExprKind::List(items),
            "the kernel size" | "the window size" | "the stride" | "the padding"
            | "the output padding" | "the scale factor",
        ) => {
            // PyTorch's `(2, 2)` pairs, one entry for each axis.
            let (square, example) = match what {
                "the scale factor" => (
                    "upsampling scales both axes alike",
                    "`upsample(2)` doubles both",
                ),
                _ => ("windows are square", "`kernel: 3` is 3×3"),
            };
            let nums: Vec<f64> = items.iter().filter_map(|i| number(i).ok()).collect();
            let same =
                nums.len() == items.len() && !nums.is_empty() && nums.iter().all(|&n| n == nums[0]);
            if same {
                format!("{square}: one number serves both axes; write `{}`", nums[0])
            } else {
                format!(
                    "{square}: one number serves both axes ({example}); different heights and \
                     widths are not supported"
                )
            }
        }
        _ => return None,
    };
    Some(
        Diag::new(
            "nnc::arg",
            format!("{what} must be a whole number, found {}", describe(e)),
            e.span,
            "expected a number",
        )
        .help(help),
    )
}

/// A number without a fractional part, of any size.
fn whole(e: &Expr, what: &str) -> Result<f64, Diag> {
    if let Some(d) = not_a_whole_number(e, what) {
        return Err(d);
    }
    let v = number(e)?;
    if v.fract() != 0.0 || !v.is_finite() {
        return Err(Diag::new(
            "nnc::arg",
            format!("{what} must be a whole number, found {v}"),
            e.span,
            "not an integer",
        )
        .help({
            // Below 1 both neighbours clamp to 1: name it once, not "`1` or `1`".
            let (lo, hi) = (v.floor().max(1.0), v.ceil().max(1.0));
            if lo == hi {
                format!("write a whole number, e.g. `{lo}`")
            } else {
                format!("write a whole number, e.g. `{lo}` or `{hi}`")
            }
        }));
    }
    Ok(v)
}

/// A size ≥ 1 (a dimension, a channel count, a batch), at most [`MAX_ELEMENTS`].
pub fn size(e: &Expr, what: &str) -> Result<usize, Diag> {
    at_least(e, what, 1, "use a whole number of 1 or more", TENSORS)
}

/// A size that may be 0 (padding).
pub fn count(e: &Expr, what: &str) -> Result<usize, Diag> {
    at_least(e, what, 0, "use 0 for none", TENSORS)
}

/// A number of steps, epochs or samples (≥ `min`), at most [`MAX_ELEMENTS`] too: a run counts
/// its samples seen in 64 bits, so that steps × batch cannot overflow.
pub fn steps(e: &Expr, what: &str, min: i64) -> Result<usize, Diag> {
    let help = if min == 0 {
        "use 0 for none"
    } else {
        "use a whole number of 1 or more"
    };
    at_least(
        e,
        what,
        min,
        help,
        "a count of steps or epochs is at most 2^31 (2,147,483,648)",
    )
}

/// [`steps`] for a number of epochs (`epochs:`, `every N epochs`), where a fraction between 0
/// and 1 (part of an epoch, as Keras' `steps_per_epoch` gives) is answered with how to count
/// the same in steps: `instead` (`` `steps: N` ``, `` `every N steps` ``) and what an epoch is.
pub fn epochs(e: &Expr, what: &str, instead: &str) -> Result<usize, Diag> {
    let part = number(e).is_ok_and(|v| v > 0.0 && v < 1.0);
    steps(e, what, 1).map_err(|d| match part {
        true => d.help(format!("{instead} (an epoch is ⌊samples / batch⌋ steps)")),
        false => d,
    })
}

/// A seed: any whole number from 0 up to 2^53 − 1, the largest the file holds exactly.
pub fn seed(e: &Expr) -> Result<u64, Diag> {
    let v = integer(e, "the seed")?;
    if v < 0 {
        let d = Diag::new(
            "nnc::arg",
            format!("the seed cannot be negative, found {v}"),
            e.span,
            "must be ≥ 0",
        );
        return Err(d.help("use a whole number of 0 or more, e.g. `seed: 42`"));
    }
    Ok(v as u64)
}

/// What [`size`] and [`count`] say of a number past [`MAX_ELEMENTS`].
const TENSORS: &str = "nnc supports tensors of up to 2^31 elements";

/// An integer in `min..=MAX_ELEMENTS`; `limit` says why past it.
fn at_least(e: &Expr, what: &str, min: i64, help: &str, limit: &str) -> Result<usize, Diag> {
    let v = whole(e, what)?;
    if v < min as f64 {
        let message = if min == 0 {
            format!("{what} cannot be negative, found {v}")
        } else {
            format!("{what} must be at least {min}, found {v}")
        };
        return Err(Diag::new("nnc::arg", message, e.span, format!("must be ≥ {min}")).help(help));
    }
    if v > MAX_ELEMENTS as f64 {
        return Err(Diag::new(
            "nnc::arg",
            format!("{what} is absurdly large: {v}"),
            e.span,
            "larger than 2^31",
        )
        .help(limit));
    }
    Ok(v as usize)
}

pub fn string(e: &Expr, what: &str) -> Result<String, Diag> {
    match &e.kind {
        ExprKind::Str(s) => Ok(s.clone()),
        _ => Err(Diag::new(
            "nnc::arg",
            format!("{what} must be a string, found {}", describe(e)),
            e.span,
            "expected a string",
        )
        .help("write it in double quotes, e.g. \"file.safetensors\"")),
    }
}

pub fn boolean(e: &Expr, what: &str) -> Result<bool, Diag> {
    match e.as_name().map(|i| i.name.as_str()) {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        other => {
            let d = Diag::new(
                "nnc::arg",
                format!("{what} must be `true` or `false`, found {}", describe(e)),
                e.span,
                "expected true or false",
            );
            Err(match other {
                Some(n @ ("True" | "False")) => {
                    d.help(format!("write `{}` (lowercase)", n.to_lowercase()))
                }
                _ => d,
            })
        }
    }
}

/// A number in a range, with the range in the message: `in_range(e, "momentum", 0.0..1.0)`.
pub fn fraction(e: &Expr, what: &str, lo: f64, hi: f64, hi_inclusive: bool) -> Result<f64, Diag> {
    let v = number(e)?;
    let ok = v >= lo && if hi_inclusive { v <= hi } else { v < hi };
    if !ok {
        let close = if hi_inclusive { "]" } else { ")" };
        return Err(Diag::new(
            "nnc::arg",
            format!("{what} must be in [{lo}, {hi}{close}, found {v}"),
            e.span,
            "out of range",
        )
        .help(if hi_inclusive {
            format!("pick a value from {lo} to {hi}")
        } else {
            format!("pick a value from {lo} up to, but not including, {hi}")
        }));
    }
    Ok(v)
}

pub fn join_path(p: &[crate::syntax::ast::Ident]) -> String {
    p.iter()
        .map(|i| i.name.as_str())
        .collect::<Vec<_>>()
        .join(".")
}
