//! Gradient checking: analytic gradients against central finite differences of the loss,
//! computed in f64 by the reference interpreter.
//!
//! The analytic side is any function from parameter values to gradients: the interpreter running
//! the [`super::grad`] graph ([`interpreter_grads`]), or any [`Executor`] running it, such as the
//! JIT ([`executor_grads`]). Large tensors are checked on a deterministic, evenly spread subset
//! of coordinates.

use crate::exec::{Executor, Feed, StepCtx};
use crate::interp::eval;
use crate::ir::{DType, Graph};
use std::fmt;

/// At most this many coordinates of each parameter are perturbed.
pub const MAX_COORDS: usize = 50;
/// Relative step: h = STEP·max(1, |θ|).
pub const STEP: f64 = 1e-6;
/// One-sided differences further apart than this (relative) mean the loss is not smooth within
/// h of the point; the analytic gradient is then compared with the nearer one-sided slope.
pub const KINK: f64 = 1e-2;
/// The floor of the relative error's denominator for analytic gradients computed in f64 (the
/// interpreter): below 1e-3 in magnitude, errors are measured against 1e-3.
pub const F64_FLOOR: f64 = 1e-3;
/// The floor for analytic gradients computed in f32 (the JIT). A gradient that is 0 in exact
/// arithmetic (a bias before a batch norm, which the normalization removes) comes out of f32
/// sums as rounding noise of 1e-7 to 1e-6; at this floor and a tolerance of 1e-3 an error of
/// 1e-5 passes, as in `torch.autograd.gradcheck` (atol 1e-5, rtol 1e-3), which checks in f64.
pub const F32_FLOOR: f64 = 1e-2;

/// Gradients of the trainable parameters, one vector per trainable parameter in `g.params` order,
/// as a function of all parameters' values (in `g.params` order).
pub type Analytic<'a> = dyn FnMut(&[Vec<f64>]) -> Result<Vec<Vec<f64>>, String> + 'a;

/// The worst coordinate of one parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct Worst {
    pub index: usize,
    pub analytic: f64,
    pub numeric: f64,
}

/// The check of one trainable parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamCheck {
    pub path: String,
    /// Coordinates perturbed, out of `numel`.
    pub checked: usize,
    pub numel: usize,
    /// Checked coordinates found next to a kink of the loss (see [`KINK`]).
    pub kinks: usize,
    /// max over checked coordinates of |a − n| / max(|a|, |n|, floor).
    pub max_rel_err: f64,
    pub worst: Option<Worst>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GradReport {
    /// The loss at the given parameters.
    pub loss: f64,
    pub params: Vec<ParamCheck>,
}

impl GradReport {
    /// The worst relative error over all parameters (0 when there are none).
    pub fn max_rel_err(&self) -> f64 {
        self.params.iter().map(|p| p.max_rel_err).fold(0.0, worse)
    }
}

/// Whether relative error `e` is worse than `m`: larger, or the first NaN (a gradient or loss
/// that is not a number), which `>` and `f64::max` would pass over.
fn is_worse(e: f64, m: f64) -> bool {
    e > m || (e.is_nan() && !m.is_nan())
}

/// The worse of two relative errors, NaN above all.
pub fn worse(a: f64, b: f64) -> f64 {
    if is_worse(b, a) {
        b
    } else {
        a
    }
}

impl fmt::Display for GradReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "loss {:.6}", self.loss)?;
        for p in &self.params {
            write!(
                f,
                "  {:<32} {:>4}/{:<8} max rel err {:.3e}",
                p.path, p.checked, p.numel, p.max_rel_err
            )?;
            if p.kinks > 0 {
                write!(f, "  ({} near a kink)", p.kinks)?;
            }
            if let Some(w) = &p.worst {
                write!(
                    f,
                    "  (at [{}]: analytic {:.6e}, numeric {:.6e})",
                    w.index, w.analytic, w.numeric
                )?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// The relative error of the report: |a − n| / max(|a|, |n|, floor).
pub fn rel_err(a: f64, n: f64, floor: f64) -> f64 {
    (a - n).abs() / a.abs().max(n.abs()).max(floor)
}

/// The coordinates of a tensor of `numel` elements that get checked: all of them up to
/// [`MAX_COORDS`], else one pseudo-random coordinate in each of `MAX_COORDS` equal strata.
pub fn coords(numel: usize) -> Vec<usize> {
    if numel <= MAX_COORDS {
        return (0..numel).collect();
    }
    (0..MAX_COORDS)
        .map(|k| {
            let (lo, hi) = (k * numel / MAX_COORDS, (k + 1) * numel / MAX_COORDS);
            let h = (k as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33;
            lo + (h as usize) % (hi - lo)
        })
        .collect()
}

/// Compares `analytic` gradients with central differences of `loss_graph`'s `loss` output at
/// `params`, on one batch of `inputs` (both in the order the graph takes them), measuring
/// relative errors against `floor` at least ([`F64_FLOOR`], [`F32_FLOOR`]).
pub fn gradcheck(
    loss_graph: &Graph,
    analytic: &mut Analytic<'_>,
    batch: usize,
    inputs: &[Vec<f64>],
    params: &[Vec<f64>],
    ctx: StepCtx,
    floor: f64,
) -> Result<GradReport, String> {
    let loss_id = loss_graph
        .output("loss")
        .ok_or("the graph has no `loss` output")?;
    let loss_at = |ps: &[Vec<f64>]| -> Result<f64, String> {
        Ok(eval(loss_graph, batch, inputs, ps, ctx)?[loss_id.index()][0])
    };
    let loss = loss_at(params)?;
    let grads = analytic(params)?;
    let trainable: Vec<usize> = (0..loss_graph.params.len())
        .filter(|&i| !loss_graph.params[i].frozen)
        .collect();
    if grads.len() != trainable.len() {
        return Err(format!(
            "{} gradients for {} trainable parameters",
            grads.len(),
            trainable.len()
        ));
    }
    let mut ps = params.to_vec();
    let mut report = GradReport {
        loss,
        params: Vec::new(),
    };
    for (&pi, g) in trainable.iter().zip(&grads) {
        let param = &loss_graph.params[pi];
        if g.len() != param.numel() {
            return Err(format!(
                "gradient of {} has {} elements, expected {}",
                param.path,
                g.len(),
                param.numel()
            ));
        }
        let mut check = ParamCheck {
            path: param.path.clone(),
            checked: 0,
            numel: param.numel(),
            kinks: 0,
            max_rel_err: 0.0,
            worst: None,
        };
        for i in coords(param.numel()) {
            let theta = params[pi][i];
            let h = STEP * theta.abs().max(1.0);
            ps[pi][i] = theta + h;
            let up = loss_at(&ps)?;
            ps[pi][i] = theta - h;
            let down = loss_at(&ps)?;
            ps[pi][i] = theta;
            let (forward, backward) = ((up - loss) / h, (loss - down) / h);
            let numeric = if rel_err(forward, backward, F64_FLOOR) > KINK {
                // A kink (relu at 0, a max-pool tie) lies within h: the central difference
                // averages two slopes, while the analytic gradient is the slope on θ's side.
                check.kinks += 1;
                if (forward - g[i]).abs() < (backward - g[i]).abs() {
                    forward
                } else {
                    backward
                }
            } else {
                (up - down) / (2.0 * h)
            };
            let e = rel_err(g[i], numeric, floor);
            check.checked += 1;
            if check.worst.is_none() || is_worse(e, check.max_rel_err) {
                check.max_rel_err = e;
                check.worst = Some(Worst {
                    index: i,
                    analytic: g[i],
                    numeric,
                });
            }
        }
        report.params.push(check);
    }
    Ok(report)
}

/// The `grad:<path>` output names of a gradient graph, for its trainable parameters in order.
fn grad_outputs(grad_graph: &Graph) -> Vec<String> {
    grad_graph
        .params
        .iter()
        .filter(|p| !p.frozen)
        .map(|p| format!("grad:{}", p.path))
        .collect()
}

/// The analytic side computed in f64 by the interpreter on `grad_graph` (the output of
/// [`super::grad`]).
pub fn interpreter_grads<'a>(
    grad_graph: &'a Graph,
    batch: usize,
    inputs: &'a [Vec<f64>],
    ctx: StepCtx,
) -> impl FnMut(&[Vec<f64>]) -> Result<Vec<Vec<f64>>, String> + 'a {
    move |params| {
        let vals = eval(grad_graph, batch, inputs, params, ctx)?;
        grad_outputs(grad_graph)
            .iter()
            .map(|name| {
                grad_graph
                    .output(name)
                    .map(|v| vals[v.index()].clone())
                    .ok_or(format!("no output {name}"))
            })
            .collect()
    }
}

/// The analytic side computed by an executor running a gradient graph (f32 in and out; inputs
/// are converted to the dtype of each graph input).
pub fn executor_grads<'a>(
    exec: &'a mut dyn Executor,
    batch: usize,
    inputs: &'a [Vec<f64>],
    ctx: StepCtx,
) -> impl FnMut(&[Vec<f64>]) -> Result<Vec<Vec<f64>>, String> + 'a {
    move |params| {
        let g = exec.graph();
        let dtypes: Vec<DType> = g.inputs().iter().map(|(v, _)| g.ty(*v).dtype).collect();
        let names = grad_outputs(g);
        if inputs.len() != dtypes.len() {
            return Err(format!(
                "the graph takes {} inputs, {} were given",
                dtypes.len(),
                inputs.len()
            ));
        }
        let f32s: Vec<Vec<f32>> = inputs
            .iter()
            .map(|x| x.iter().map(|&v| v as f32).collect())
            .collect();
        let i32s: Vec<Vec<i32>> = inputs
            .iter()
            .map(|x| x.iter().map(|&v| v as i32).collect())
            .collect();
        let feeds: Vec<Feed<'_>> = dtypes
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                DType::F32 => Feed::F32(&f32s[i]),
                DType::I32 => Feed::I32(&i32s[i]),
            })
            .collect();
        let ps: Vec<Vec<f32>> = params
            .iter()
            .map(|p| p.iter().map(|&v| v as f32).collect())
            .collect();
        let refs: Vec<&[f32]> = ps.iter().map(Vec::as_slice).collect();
        exec.run(batch, &feeds, &refs, ctx)
            .map_err(|e| e.to_string())?;
        names
            .iter()
            .map(|name| {
                exec.output(name)
                    .map(|o| o.iter().map(|&v| v as f64).collect())
                    .ok_or(format!("no output {name}"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_are_distinct_spread_and_bounded() {
        assert_eq!(coords(7), (0..7).collect::<Vec<_>>());
        for n in [51, 100, 1000, 100_352] {
            let c = coords(n);
            assert_eq!(c.len(), MAX_COORDS);
            assert!(c.windows(2).all(|w| w[0] < w[1]) && c[MAX_COORDS - 1] < n);
            assert!(
                c[MAX_COORDS - 1] >= n - n / MAX_COORDS - 1,
                "the last stratum is covered"
            );
        }
        assert_eq!(coords(1000), coords(1000));
    }

    #[test]
    fn relative_error_has_a_floor() {
        assert_eq!(rel_err(1.0, 1.0, F64_FLOOR), 0.0);
        assert!((rel_err(2.0, 1.0, F64_FLOOR) - 0.5).abs() < 1e-15);
        assert!((rel_err(1e-9, 0.0, F64_FLOOR) - 1e-6).abs() < 1e-18);
        assert!((rel_err(1e-6, 0.0, F32_FLOOR) - 1e-4).abs() < 1e-18);
    }
}
