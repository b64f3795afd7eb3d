//! JIT-compiled optimizer updates (PyTorch semantics), one f32x4 loop per optimizer:
//!
//! - SGD: `g += wd·p; v = μ·v + g; p −= lr·(nesterov ? g + μ·v : v)` (no `v` when μ = 0);
//! - Adam: `g += wd·p; m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²;
//!   p −= (lr/bc1)·m / (√v/√bc2 + ε)` with `bc_i = 1 − β_i^step`;
//! - AdamW: `p −= lr·wd·p`, then Adam without weight decay in the gradient.
//!
//! The kernels use the graph kernels' ABI: table `[param, grad, state0, state1, hyper]` and the
//! element count in place of the batch size. `hyper` holds the per-step scalars
//! `[lr, lr/bc1, 1/√bc2]`, computed once per call.

use cranelift_codegen::ir::{types, InstBuilder, Value};

use super::kernel::{Kb, KernelFn, KernelModule, Listing};
use super::CodegenError;
use crate::exec::{UpdateHyper, Updater};
use crate::ir::OptimizerSpec;

const P: usize = 0;
const G: usize = 1;
const S0: usize = 2;
const S1: usize = 3;
const HYPER: usize = 4;

struct JitUpdater {
    spec: OptimizerSpec,
    kernel: KernelFn,
    _module: cranelift_jit::JITModule,
}

/// Compiles the update loop of `spec`.
pub fn compile_updater(spec: &OptimizerSpec) -> Result<Box<dyn Updater>, CodegenError> {
    let mut km = KernelModule::new(Listing::default())?;
    let s = spec.clone();
    km.kernel("; optimizer update", |kb| emit(kb, &s))?;
    let (fns, module, _) = km.finish()?;
    Ok(Box::new(JitUpdater {
        spec: spec.clone(),
        kernel: fns[0],
        _module: module,
    }))
}

fn emit(kb: &mut Kb, spec: &OptimizerSpec) {
    let n = kb.batch;
    let ptrs: Vec<Value> = (0..5).map(|s| kb.ptr(s)).collect();
    let hp = ptrs[HYPER];
    let zero = kb.int(0);
    let one_i = kb.int(1);
    let two_i = kb.int(2);
    let lr = kb.ld(types::F32, hp, zero);
    let step_size = kb.ld(types::F32, hp, one_i);
    let inv_sqrt_bc2 = kb.ld(types::F32, hp, two_i);
    let spec = spec.clone();
    kb.vec_loop(zero, n, |kb, i, lane| {
        let p = kb.ld_rw(lane, ptrs[P], i);
        let g = kb.ld(lane, ptrs[G], i);
        let lrv = kb.splat(lane, lr);
        let newp = match spec {
            OptimizerSpec::Sgd {
                momentum,
                nesterov,
                weight_decay,
                ..
            } => {
                let mut g = g;
                if weight_decay != 0.0 {
                    let wd = kb.cst(lane, weight_decay as f32);
                    let t = kb.b.ins().fmul(wd, p);
                    g = kb.b.ins().fadd(g, t);
                }
                let d = if momentum != 0.0 {
                    let mu = kb.cst(lane, momentum as f32);
                    let v = kb.ld_rw(lane, ptrs[S0], i);
                    let t = kb.b.ins().fmul(mu, v);
                    let v = kb.b.ins().fadd(t, g);
                    kb.st(v, ptrs[S0], i);
                    if nesterov {
                        let t = kb.b.ins().fmul(mu, v);
                        kb.b.ins().fadd(g, t)
                    } else {
                        v
                    }
                } else {
                    g
                };
                let t = kb.b.ins().fmul(lrv, d);
                kb.b.ins().fsub(p, t)
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
                let decoupled = matches!(spec, OptimizerSpec::AdamW { .. });
                let mut g = g;
                let mut p = p;
                if weight_decay != 0.0 {
                    let wd = kb.cst(lane, weight_decay as f32);
                    if decoupled {
                        let t = kb.b.ins().fmul(lrv, wd);
                        let t = kb.b.ins().fmul(t, p);
                        p = kb.b.ins().fsub(p, t);
                    } else {
                        let t = kb.b.ins().fmul(wd, p);
                        g = kb.b.ins().fadd(g, t);
                    }
                }
                let b1 = kb.cst(lane, beta1 as f32);
                let c1 = kb.cst(lane, (1.0 - beta1) as f32);
                let b2 = kb.cst(lane, beta2 as f32);
                let c2 = kb.cst(lane, (1.0 - beta2) as f32);
                let m = kb.ld_rw(lane, ptrs[S0], i);
                let v = kb.ld_rw(lane, ptrs[S1], i);
                let t1 = kb.b.ins().fmul(b1, m);
                let t2 = kb.b.ins().fmul(c1, g);
                let m = kb.b.ins().fadd(t1, t2);
                let g2 = kb.b.ins().fmul(g, g);
                let t1 = kb.b.ins().fmul(b2, v);
                let t2 = kb.b.ins().fmul(c2, g2);
                let v = kb.b.ins().fadd(t1, t2);
                kb.st(m, ptrs[S0], i);
                kb.st(v, ptrs[S1], i);
                let sq = kb.b.ins().sqrt(v);
                let ib = kb.splat(lane, inv_sqrt_bc2);
                let den = kb.b.ins().fmul(sq, ib);
                let e = kb.cst(lane, eps as f32);
                let den = kb.b.ins().fadd(den, e);
                let ss = kb.splat(lane, step_size);
                let num = kb.b.ins().fmul(ss, m);
                let upd = kb.b.ins().fdiv(num, den);
                kb.b.ins().fsub(p, upd)
            }
        };
        kb.st(newp, ptrs[P], i);
    });
}

impl Updater for JitUpdater {
    fn state_buffers(&self) -> usize {
        self.spec.state_buffers()
    }

    fn update(&self, param: &mut [f32], grad: &[f32], state: &mut [Vec<f32>], h: UpdateHyper) {
        let n = param.len().min(grad.len());
        let need = self.state_buffers();
        if state.len() < need || state.iter().take(need).any(|s| s.len() < n) {
            // The runtime allocates the state from `state_buffers()`; a mismatch is a bug there,
            // and updating without state would write out of bounds, so the step is skipped.
            return;
        }
        let (bc1, bc2) = match self.spec {
            OptimizerSpec::Adam { beta1, beta2, .. }
            | OptimizerSpec::AdamW { beta1, beta2, .. } => {
                let t = h.step.max(1) as i32;
                (1.0 - beta1.powi(t), 1.0 - beta2.powi(t))
            }
            OptimizerSpec::Sgd { .. } => (1.0, 1.0),
        };
        let mut hyper = [h.lr, (h.lr as f64 / bc1) as f32, (1.0 / bc2.sqrt()) as f32];
        let mut table = [std::ptr::null_mut::<u8>(); 5];
        table[P] = param.as_mut_ptr() as *mut u8;
        table[G] = grad.as_ptr() as *mut u8;
        for (k, s) in state.iter_mut().take(need).enumerate() {
            table[S0 + k] = s.as_mut_ptr() as *mut u8;
        }
        table[HYPER] = hyper.as_mut_ptr() as *mut u8;
        // SAFETY: param, grad and the used state buffers hold at least n elements; the kernel
        // touches only the state buffers its optimizer uses.
        unsafe { (self.kernel)(table.as_ptr(), n as i64) };
    }
}
