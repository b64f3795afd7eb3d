//! The optimizers' update rules in plain Rust (PyTorch's formulas): the reference the JIT-compiled
//! updates (`crate::codegen::optim`) are tested against, and the updater of the interpreter
//! back end.
//!
//! SGD: g ← g + wd·p; v ← μ·v + g; d = g + μ·v (Nesterov) or v; p ← p − lr·d.
//! Adam: g ← g + wd·p (AdamW instead: p ← p − lr·wd·p); m ← β1·m + (1−β1)·g;
//! v ← β2·v + (1−β2)·g²; p ← p − lr/(1−β1^t) · m / (√v/√(1−β2^t) + ε).
//! RMSprop: g ← g + wd·p; v ← α·v + (1−α)·g²; centered: ḡ ← α·ḡ + (1−α)·g, v̂ = v − ḡ² (else
//! v̂ = v); d = g / (√v̂ + ε); with momentum b ← μ·b + d, p ← p − lr·b, else p ← p − lr·d.

use crate::exec::{UpdateHyper, Updater};
use crate::ir::OptimizerSpec;

/// A plain-Rust [`Updater`] for any [`OptimizerSpec`].
#[derive(Clone, Debug)]
pub struct ReferenceUpdater(pub OptimizerSpec);

impl Updater for ReferenceUpdater {
    fn state_buffers(&self) -> usize {
        self.0.state_buffers()
    }

    fn update(&self, param: &mut [f32], grad: &[f32], state: &mut [Vec<f32>], h: UpdateHyper) {
        let lr = h.lr;
        match self.0 {
            OptimizerSpec::Sgd {
                momentum,
                nesterov,
                weight_decay,
                ..
            } => {
                let (mu, wd) = (momentum as f32, weight_decay as f32);
                let mut vel = state.first_mut().map(|v| v.as_mut_slice());
                for (i, (p, &g)) in param.iter_mut().zip(grad).enumerate() {
                    let g = if wd != 0.0 { g + wd * *p } else { g };
                    let d = match vel.as_deref_mut() {
                        Some(v) if mu != 0.0 => {
                            v[i] = mu * v[i] + g;
                            if nesterov {
                                g + mu * v[i]
                            } else {
                                v[i]
                            }
                        }
                        _ => g,
                    };
                    *p -= lr * d;
                }
            }
            OptimizerSpec::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
                ..
            }
            | OptimizerSpec::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
                ..
            } => {
                let decoupled = matches!(self.0, OptimizerSpec::AdamW { .. });
                let t = h.step.max(1) as i32;
                let step_size = (lr as f64 / (1.0 - beta1.powi(t))) as f32;
                let inv_sqrt_bc2 = (1.0 / (1.0 - beta2.powi(t)).sqrt()) as f32;
                let (b1, b2, eps, wd) =
                    (beta1 as f32, beta2 as f32, eps as f32, weight_decay as f32);
                let [m, v, ..] = state else { return };
                for (i, (p, &g)) in param.iter_mut().zip(grad).enumerate() {
                    let mut g = g;
                    if wd != 0.0 {
                        if decoupled {
                            *p -= lr * wd * *p;
                        } else {
                            g += wd * *p;
                        }
                    }
                    m[i] = b1 * m[i] + (1.0 - b1) * g;
                    v[i] = b2 * v[i] + (1.0 - b2) * g * g;
                    *p -= step_size * m[i] / (v[i].sqrt() * inv_sqrt_bc2 + eps);
                }
            }
            OptimizerSpec::RmsProp {
                alpha,
                eps,
                momentum,
                weight_decay,
                centered,
                ..
            } => {
                let (a, eps, mu, wd) = (
                    alpha as f32,
                    eps as f32,
                    momentum as f32,
                    weight_decay as f32,
                );
                // PyTorch's order of the state: the mean of g², the momentum buffer, the mean of g.
                let (sq, rest) = state.split_at_mut(1);
                let sq = &mut sq[0];
                let (buf, rest) = if mu != 0.0 {
                    let (b, r) = rest.split_at_mut(1);
                    (Some(&mut b[0]), r)
                } else {
                    (None, rest)
                };
                let mut gavg = if centered { rest.first_mut() } else { None };
                let mut buf = buf;
                for (i, (p, &g)) in param.iter_mut().zip(grad).enumerate() {
                    let g = if wd != 0.0 { g + wd * *p } else { g };
                    sq[i] = a * sq[i] + (1.0 - a) * g * g;
                    let v = match gavg.as_deref_mut() {
                        Some(ga) => {
                            ga[i] = a * ga[i] + (1.0 - a) * g;
                            sq[i] - ga[i] * ga[i]
                        }
                        None => sq[i],
                    };
                    let d = g / (v.sqrt() + eps);
                    match buf.as_deref_mut() {
                        Some(b) => {
                            b[i] = mu * b[i] + d;
                            *p -= lr * b[i];
                        }
                        None => *p -= lr * d,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_adam_step_moves_each_weight_by_about_lr() {
        // With bias correction, step 1 gives m̂ = g, v̂ = g², so the step is lr·g/(|g|+ε).
        let u = ReferenceUpdater(OptimizerSpec::Adam {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        });
        let mut p = vec![1.0, 1.0];
        let mut s = vec![vec![0.0; 2], vec![0.0; 2]];
        u.update(
            &mut p,
            &[0.5, -2.0],
            &mut s,
            UpdateHyper { lr: 0.1, step: 1 },
        );
        assert!(
            (p[0] - 0.9).abs() < 1e-6 && (p[1] - 1.1).abs() < 1e-6,
            "{p:?}"
        );
    }

    #[test]
    fn sgd_momentum_accumulates_velocity() {
        let u = ReferenceUpdater(OptimizerSpec::Sgd {
            lr: 0.1,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
        });
        let mut p = vec![0.0];
        let mut s = vec![vec![0.0]];
        for step in 1..=2 {
            u.update(&mut p, &[1.0], &mut s, UpdateHyper { lr: 0.1, step });
        }
        // v1 = 1, v2 = 1.9: p = −0.1 − 0.19.
        assert!((p[0] + 0.29).abs() < 1e-6, "{p:?}");
    }
}
