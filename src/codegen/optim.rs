//! JIT-compiled optimizer updates (PyTorch semantics), one f32x4 loop per optimizer:
//!
//! - SGD: `g += wd·p; v = μ·v + g; p −= lr·(nesterov ? g + μ·v : v)` (no `v` when μ = 0);
//! - Adam: `g += wd·p; m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²;
//!   p −= (lr/bc1)·m / (√v/√bc2 + ε)` with `bc_i = 1 − β_i^step`;
//! - AdamW: `p −= lr·wd·p`, then Adam without weight decay in the gradient;
//! - RMSprop: `g += wd·p; v = α·v + (1−α)·g²; [centered: ḡ = α·ḡ + (1−α)·g, v −= ḡ²];
//!   d = g / (√v + ε); p −= lr·(μ ≠ 0 ? (b = μ·b + d) : d)`.
//!
//! The kernels use the graph kernels' ABI: table `[param, grad, state0, state1, hyper, out,
//! flag, state2]` and the element count in place of the batch size (`state2` is read only by
//! the one optimizer that keeps three buffers, RMSprop centered with momentum). `hyper` holds the per-step scalars
//! `[lr, lr/bc1, 1/√bc2]`, computed once per call. The updated parameter goes to `out`, which is
//! `param` itself for an in-place update ([`Updater`]) or another buffer when the update runs
//! inside a training step before the step is known to be finite ([`crate::codegen::Jit`]'s fused
//! updates). The same loop sums `0·g` into `flag`: NaN exactly when a gradient element is
//! infinite or NaN, so the finiteness check costs no pass of its own.

use cranelift_codegen::ir::{types, InstBuilder, Type, Value};

use super::fpenv::Flush;
use super::kernel::{Kb, KernelFn, KernelModule, Listing};
use super::CodegenError;
use crate::exec::{UpdateHyper, Updater};
use crate::ir::OptimizerSpec;

const P: usize = 0;
const G: usize = 1;
const S0: usize = 2;
const S1: usize = 3;
const HYPER: usize = 4;
const OUT: usize = 5;
const FLAG: usize = 6;
const S2: usize = 7;

/// The compiled update loop of one optimizer.
pub struct UpdateKernel {
    spec: OptimizerSpec,
    kernel: KernelFn,
    _modules: Vec<cranelift_jit::JITModule>,
}

/// Compiles the update loop of `spec` as an in-place [`Updater`].
pub fn compile_updater(spec: &OptimizerSpec) -> Result<Box<dyn Updater>, CodegenError> {
    Ok(Box::new(UpdateKernel::compile(spec)?))
}

impl UpdateKernel {
    /// Compiles the update loop of `spec`.
    pub fn compile(spec: &OptimizerSpec) -> Result<UpdateKernel, CodegenError> {
        let mut km = KernelModule::new(Listing::default())?;
        let s = spec.clone();
        km.kernel("; optimizer update", |kb| emit(kb, &s))?;
        let (fns, modules, _) = km.finish()?;
        Ok(UpdateKernel {
            spec: spec.clone(),
            kernel: fns[0],
            _modules: modules,
        })
    }

    /// `out ← update(param, grad, state)` over `n` elements; whether every gradient element was
    /// finite.
    ///
    /// # Safety
    /// `param`, `grad` and `out` point at `n` floats (`out` may be `param`, no other overlap)
    /// and `state` has [`Updater::state_buffers`] buffers of at least `n` floats.
    pub unsafe fn apply(
        &self,
        param: *const f32,
        grad: *const f32,
        out: *mut f32,
        n: usize,
        state: &mut [Vec<f32>],
        h: UpdateHyper,
    ) -> bool {
        let mut s = [std::ptr::null_mut(); 3];
        for (p, v) in s
            .iter_mut()
            .zip(state.iter_mut().take(self.state_buffers()))
        {
            *p = v.as_mut_ptr();
        }
        // SAFETY: the caller's contract.
        unsafe { self.at(h).apply(param, grad, out, s, n) }
    }

    /// The kernel with the scalars of one step, to apply to raw parts of a tensor.
    pub fn at(&self, h: UpdateHyper) -> StepUpdate {
        let hyper = match self.spec {
            OptimizerSpec::Adam { beta1, beta2, .. }
            | OptimizerSpec::AdamW { beta1, beta2, .. } => {
                let t = h.step.max(1) as i32;
                let (bc1, bc2) = (1.0 - beta1.powi(t), 1.0 - beta2.powi(t));
                [h.lr, (h.lr as f64 / bc1) as f32, (1.0 / bc2.sqrt()) as f32]
            }
            // SGD reads `lr` alone: no division and square root per tensor and step (on XOR's
            // steps of 0.4 µs, their latency was 4% of the time). RMSprop has no bias correction.
            OptimizerSpec::Sgd { .. } | OptimizerSpec::RmsProp { .. } => [h.lr, h.lr, 1.0],
        };
        StepUpdate {
            kernel: self.kernel,
            hyper,
        }
    }
}

/// An update kernel with one step's scalars (`[lr, lr/bc1, 1/√bc2]`): plain data, shared by
/// the threads that update the blocks of one gradient.
#[derive(Clone, Copy)]
pub struct StepUpdate {
    kernel: KernelFn,
    hyper: [f32; 3],
}

impl StepUpdate {
    /// `out ← update(param, grad, state)` over `n` elements; whether every gradient element
    /// was finite.
    ///
    /// # Safety
    /// `param`, `grad`, `out` and the state pointers the optimizer uses point at `n` floats
    /// (`out` may be `param`, no other overlap).
    pub unsafe fn apply(
        &self,
        param: *const f32,
        grad: *const f32,
        out: *mut f32,
        state: [*mut f32; 3],
        n: usize,
    ) -> bool {
        let mut hyper = self.hyper;
        let mut flag = 0f32;
        let mut table = [std::ptr::null_mut::<u8>(); 8];
        table[P] = param as *mut u8;
        table[G] = grad as *mut u8;
        table[S0] = state[0] as *mut u8;
        table[S1] = state[1] as *mut u8;
        table[HYPER] = hyper.as_mut_ptr() as *mut u8;
        table[OUT] = out as *mut u8;
        table[FLAG] = (&mut flag as *mut f32) as *mut u8;
        table[S2] = state[2] as *mut u8;
        let _flush = Flush::on();
        // SAFETY: the caller's contract; the kernel touches only the state buffers its
        // optimizer uses.
        unsafe { (self.kernel)(table.as_ptr(), n as i64) };
        !flag.is_nan()
    }
}

/// `g + wd·p`: weight decay as L2 added to the gradient (`sgd`, `adam`, `rmsprop`); `g` itself
/// when `wd` is 0.
fn l2_decay(kb: &mut Kb, lane: types::Type, g: Value, p: Value, wd: f64) -> Value {
    if wd == 0.0 {
        return g;
    }
    let wd = kb.cst(lane, wd as f32);
    let t = kb.b.ins().fmul(wd, p);
    kb.b.ins().fadd(g, t)
}

/// The momentum buffer's update b ← μ·b + d at `buf[i]` (`sgd`'s and `rmsprop`'s, as PyTorch
/// keeps it): stores the new b and returns μ (as a constant of `lane`) and b.
fn momentum_buffer(
    kb: &mut Kb,
    lane: types::Type,
    momentum: f64,
    buf: Value,
    i: Value,
    d: Value,
) -> (Value, Value) {
    let mu = kb.cst(lane, momentum as f32);
    let b = kb.ld_rw(lane, buf, i);
    let t = kb.b.ins().fmul(mu, b);
    let b = kb.b.ins().fadd(t, d);
    kb.st(b, buf, i);
    (mu, b)
}

fn emit(kb: &mut Kb, spec: &OptimizerSpec) {
    let n = kb.batch;
    // The third state buffer's pointer is loaded only where it is used: the other kernels are
    // as they were before it existed.
    let slots = if spec.state_buffers() > 2 { 8 } else { 7 };
    let ptrs: Vec<Value> = (0..slots).map(|s| kb.ptr(s)).collect();
    let hp = ptrs[HYPER];
    let zero = kb.int(0);
    let one_i = kb.int(1);
    let two_i = kb.int(2);
    let lr = kb.ld(types::F32, hp, zero);
    let step_size = kb.ld(types::F32, hp, one_i);
    let inv_sqrt_bc2 = kb.ld(types::F32, hp, two_i);
    let spec = spec.clone();
    let z4 = kb.cst(types::F32X4, 0.0);
    let z1 = kb.cst(types::F32, 0.0);
    let acc4 = kb.var(types::F32X4, z4);
    let acc1 = kb.var(types::F32, z1);
    let step = |kb: &mut Kb, i: Value, lane: Type| {
        let p = kb.ld_rw(lane, ptrs[P], i);
        let g = kb.ld(lane, ptrs[G], i);
        let acc = if lane == types::F32X4 { acc4 } else { acc1 };
        let zero = kb.cst(lane, 0.0);
        let z = kb.b.ins().fmul(g, zero);
        let sum = kb.b.use_var(acc);
        let sum = kb.b.ins().fadd(sum, z);
        kb.b.def_var(acc, sum);
        let lrv = kb.splat(lane, lr);
        let newp = match spec {
            OptimizerSpec::Sgd {
                momentum,
                nesterov,
                weight_decay,
                ..
            } => {
                let g = l2_decay(kb, lane, g, p, weight_decay);
                let d = if momentum != 0.0 {
                    let (mu, v) = momentum_buffer(kb, lane, momentum, ptrs[S0], i, g);
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
                if decoupled && weight_decay != 0.0 {
                    let wd = kb.cst(lane, weight_decay as f32);
                    let t = kb.b.ins().fmul(lrv, wd);
                    let t = kb.b.ins().fmul(t, p);
                    p = kb.b.ins().fsub(p, t);
                } else {
                    g = l2_decay(kb, lane, g, p, weight_decay);
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
            OptimizerSpec::RmsProp {
                alpha,
                eps,
                momentum,
                weight_decay,
                centered,
                ..
            } => {
                let g = l2_decay(kb, lane, g, p, weight_decay);
                let a = kb.cst(lane, alpha as f32);
                let c = kb.cst(lane, 1.0 - alpha as f32);
                // v = α·v + ((1−α)·g)·g, as the reference computes it.
                let sq = kb.ld_rw(lane, ptrs[S0], i);
                let t1 = kb.b.ins().fmul(a, sq);
                let cg = kb.b.ins().fmul(c, g);
                let t2 = kb.b.ins().fmul(cg, g);
                let sq = kb.b.ins().fadd(t1, t2);
                kb.st(sq, ptrs[S0], i);
                let v = if centered {
                    let slot = if momentum != 0.0 { S2 } else { S1 };
                    let ga = kb.ld_rw(lane, ptrs[slot], i);
                    let t1 = kb.b.ins().fmul(a, ga);
                    let ga = kb.b.ins().fadd(t1, cg);
                    kb.st(ga, ptrs[slot], i);
                    let g2 = kb.b.ins().fmul(ga, ga);
                    kb.b.ins().fsub(sq, g2)
                } else {
                    sq
                };
                let root = kb.b.ins().sqrt(v);
                let e = kb.cst(lane, eps as f32);
                let den = kb.b.ins().fadd(root, e);
                let d = kb.b.ins().fdiv(g, den);
                let d = if momentum != 0.0 {
                    momentum_buffer(kb, lane, momentum, ptrs[S1], i, d).1
                } else {
                    d
                };
                let t = kb.b.ins().fmul(lrv, d);
                kb.b.ins().fsub(p, t)
            }
        };
        kb.st(newp, ptrs[OUT], i);
    };
    // Two vectors a step: Adam's square root and division wait on one unit, and the second
    // vector's loads and products fill its latency.
    kb.vec_loop_x2(zero, n, step);
    let v4 = kb.b.use_var(acc4);
    let s4 = kb.hsum(v4, types::F32X4);
    let s1 = kb.b.use_var(acc1);
    let flag = kb.b.ins().fadd(s4, s1);
    kb.st(flag, ptrs[FLAG], zero);
}

impl Updater for UpdateKernel {
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
        let p = param.as_mut_ptr();
        // SAFETY: param and grad hold at least n elements, the state was checked above, and the
        // update is in place (out = param).
        unsafe { self.apply(p, grad.as_ptr(), p, n, state, h) };
    }
}
