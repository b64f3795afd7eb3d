//! The JIT-compiled optimizer updates against a plain f64 transcription of PyTorch's rules,
//! 20 steps with changing gradients and learning rates.

use nnc::codegen::compile_updater;
use nnc::exec::UpdateHyper;
use nnc::ir::OptimizerSpec;

/// PyTorch's update rules in f64 (the reference).
fn reference(
    spec: &OptimizerSpec,
    p: &mut [f64],
    g: &[f64],
    s: &mut [Vec<f64>],
    lr: f64,
    step: u64,
) {
    for i in 0..p.len() {
        match *spec {
            OptimizerSpec::Sgd {
                momentum,
                nesterov,
                weight_decay,
                ..
            } => {
                let gi = g[i] + weight_decay * p[i];
                let d = if momentum != 0.0 {
                    s[0][i] = momentum * s[0][i] + gi;
                    if nesterov {
                        gi + momentum * s[0][i]
                    } else {
                        s[0][i]
                    }
                } else {
                    gi
                };
                p[i] -= lr * d;
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
                let mut gi = g[i];
                if matches!(spec, OptimizerSpec::AdamW { .. }) {
                    p[i] -= lr * weight_decay * p[i];
                } else {
                    gi += weight_decay * p[i];
                }
                s[0][i] = beta1 * s[0][i] + (1.0 - beta1) * gi;
                s[1][i] = beta2 * s[1][i] + (1.0 - beta2) * gi * gi;
                let mhat = s[0][i] / (1.0 - beta1.powi(step as i32));
                let vhat = s[1][i] / (1.0 - beta2.powi(step as i32));
                p[i] -= lr * mhat / (vhat.sqrt() + eps);
            }
            OptimizerSpec::RmsProp {
                alpha,
                eps,
                momentum,
                weight_decay,
                centered,
                ..
            } => {
                // torch.optim.RMSprop: state 0 the mean of g², then the momentum buffer, then
                // the mean of g.
                let gi = g[i] + weight_decay * p[i];
                s[0][i] = alpha * s[0][i] + (1.0 - alpha) * gi * gi;
                let gavg = 1 + (momentum != 0.0) as usize;
                let v = if centered {
                    s[gavg][i] = alpha * s[gavg][i] + (1.0 - alpha) * gi;
                    s[0][i] - s[gavg][i] * s[gavg][i]
                } else {
                    s[0][i]
                };
                let d = gi / (v.sqrt() + eps);
                if momentum != 0.0 {
                    s[1][i] = momentum * s[1][i] + d;
                    p[i] -= lr * s[1][i];
                } else {
                    p[i] -= lr * d;
                }
            }
        }
    }
}

fn check(spec: OptimizerSpec) {
    let n = 37; // the two-f32x4 body (32), one f32x4 step and a scalar tail
    let upd = compile_updater(&spec).unwrap();
    let mut p: Vec<f32> = (0..n).map(|i| ((i * 7 % 11) as f32 - 5.0) / 7.0).collect();
    let mut p64: Vec<f64> = p.iter().map(|&v| v as f64).collect();
    let mut state = vec![vec![0.0f32; n]; upd.state_buffers()];
    let mut s64 = vec![vec![0.0f64; n]; 3];
    for step in 1..=20u64 {
        let g: Vec<f32> = (0..n)
            .map(|i| (((i as u64 * 13 + step * 5) % 17) as f32 - 8.0) / 9.0)
            .collect();
        let g64: Vec<f64> = g.iter().map(|&v| v as f64).collect();
        let lr = spec.lr() * (1.0 - step as f64 / 40.0);
        upd.update(
            &mut p,
            &g,
            &mut state,
            UpdateHyper {
                lr: lr as f32,
                step,
            },
        );
        reference(&spec, &mut p64, &g64, &mut s64, lr as f32 as f64, step);
    }
    for (a, b) in p.iter().zip(&p64) {
        assert!(
            (*a as f64 - b).abs() <= 1e-5 * (1.0 + b.abs()),
            "{spec:?}: {a} vs {b}"
        );
    }
    // The parameters moved: the test would catch an update that does nothing.
    assert!(p
        .iter()
        .zip(0..n)
        .any(|(v, i)| (*v - ((i * 7 % 11) as f32 - 5.0) / 7.0).abs() > 1e-3));
}

#[test]
fn sgd_variants() {
    check(OptimizerSpec::Sgd {
        lr: 0.1,
        momentum: 0.0,
        nesterov: false,
        weight_decay: 0.0,
    });
    check(OptimizerSpec::Sgd {
        lr: 0.1,
        momentum: 0.9,
        nesterov: false,
        weight_decay: 0.0,
    });
    check(OptimizerSpec::Sgd {
        lr: 0.05,
        momentum: 0.9,
        nesterov: true,
        weight_decay: 1e-2,
    });
    check(OptimizerSpec::Sgd {
        lr: 0.05,
        momentum: 0.0,
        nesterov: false,
        weight_decay: 1e-2,
    });
}

#[test]
fn adam_and_adamw() {
    check(OptimizerSpec::Adam {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    });
    check(OptimizerSpec::Adam {
        lr: 1e-2,
        beta1: 0.8,
        beta2: 0.99,
        eps: 1e-6,
        weight_decay: 1e-2,
    });
    check(OptimizerSpec::AdamW {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
    });
}

#[test]
fn rmsprop_variants() {
    for (momentum, centered, weight_decay) in [
        (0.0, false, 0.0),
        (0.9, false, 0.0),
        (0.0, true, 0.0),
        (0.5, true, 0.05),
    ] {
        check(OptimizerSpec::RmsProp {
            lr: 1e-2,
            alpha: 0.9,
            eps: 1e-8,
            momentum,
            weight_decay,
            centered,
        });
    }
}

#[test]
fn state_buffer_counts() {
    let sgd = |momentum| OptimizerSpec::Sgd {
        lr: 0.1,
        momentum,
        nesterov: false,
        weight_decay: 0.0,
    };
    assert_eq!(compile_updater(&sgd(0.0)).unwrap().state_buffers(), 0);
    assert_eq!(compile_updater(&sgd(0.9)).unwrap().state_buffers(), 1);
    let adam = OptimizerSpec::Adam {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    assert_eq!(compile_updater(&adam).unwrap().state_buffers(), 2);
    let rmsprop = |momentum, centered| OptimizerSpec::RmsProp {
        lr: 1e-2,
        alpha: 0.99,
        eps: 1e-8,
        momentum,
        weight_decay: 0.0,
        centered,
    };
    for (m, c, n) in [
        (0.0, false, 1),
        (0.9, false, 2),
        (0.0, true, 2),
        (0.9, true, 3),
    ] {
        assert_eq!(compile_updater(&rmsprop(m, c)).unwrap().state_buffers(), n);
    }
}
