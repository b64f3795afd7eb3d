//! Optimizer updates fused into a training step: each trainable parameter is updated right
//! after the step that computes its gradient ([`update_points`]), while the gradient is still
//! in cache, instead of in a second sweep over every gradient once the whole graph has run. The update kernel
//! ([`UpdateKernel`]) also folds in the finiteness check of the gradient, which otherwise is a
//! pass of its own, and the runtime no longer looks gradients up by name each step.
//!
//! Where the gradient is a matrix product (a weight gradient), the update goes one step
//! further into the GEMM itself: it runs on each block of the gradient as the GEMM finishes
//! it ([`super::gemm::Gemm::gemm_with`]), on the thread that computed it, while the block is
//! in L1/L2 ([`FusedUpdates::gemm_hook`]). The same arithmetic on the same elements, so the
//! results are those of the update after the step, bit for bit.
//!
//! The update writes the new parameter into a buffer of the caller ([`Update::next`]) rather
//! than over the parameter, which later steps of the same graph may still read (a layer's input
//! gradient reads its weights after its weight gradient is known) and which must stay as it was
//! if the step turns out not finite (the anomaly replay runs the step again from it).

use super::gemm::Block;
use super::lower::{owner, Step, Storage};
use super::optim::UpdateKernel;
use super::CodegenError;
use crate::exec::{Update, Updater};
use crate::ir::{Graph, OptimizerSpec};
use crate::opt::update_points::update_points;
use std::sync::atomic::{AtomicBool, Ordering};

/// The caller's buffers of one update, shared by the threads updating disjoint blocks.
struct RawUpdate {
    param: *const f32,
    next: *mut f32,
    state: [*mut f32; 3],
}

// SAFETY: each thread writes only the elements of the blocks it is handed (disjoint).
unsafe impl Sync for RawUpdate {}

/// The prepared updates of one compiled graph.
pub struct FusedUpdates {
    kernel: UpdateKernel,
    /// Per prepared parameter: its index in [`Graph::params`] and element count.
    targets: Vec<(usize, usize)>,
    /// Per step: the prepared parameters whose gradient that step completes, updated after it.
    after_step: Vec<Vec<usize>>,
    /// Per step: the prepared parameter updated inside the step's GEMM, block by block.
    in_gemm: Vec<Option<usize>>,
    /// Optimizer state buffers per parameter.
    state: usize,
    /// Slot (node) of each prepared parameter's gradient.
    grad_slots: Vec<usize>,
}

impl FusedUpdates {
    /// Plans the updates of `params` (indices into `g.params`): the step after which each
    /// gradient `grad:<path>` is complete. `storage`, `steps` and `step_nodes` are the
    /// lowering's.
    pub fn new(
        g: &Graph,
        storage: &[Storage],
        steps: &[Step],
        step_nodes: &[usize],
        spec: &OptimizerSpec,
        params: &[usize],
    ) -> Result<FusedUpdates, CodegenError> {
        if step_nodes.is_empty() {
            return Err(CodegenError::Graph("a training graph without steps".into()));
        }
        let points = update_points(g);
        let mut after_step = vec![Vec::new(); step_nodes.len()];
        let mut targets = Vec::new();
        let mut grad_slots = Vec::new();
        for (k, &p) in params.iter().enumerate() {
            let param = g
                .params
                .get(p)
                .ok_or_else(|| CodegenError::Graph(format!("no parameter #{p}")))?;
            let name = format!("grad:{}", param.path);
            let (Some(v), Some(&(_, point))) =
                (g.output(&name), points.iter().find(|(q, _)| *q == p))
            else {
                return Err(CodegenError::Graph(format!(
                    "`{}` has no gradient to update it with",
                    param.path
                )));
            };
            let ty = g.ty(v);
            if ty.batched
                || ty.numel(1) != param.numel()
                || storage[point.index()] != Storage::Owned
            {
                return Err(CodegenError::Graph(format!(
                    "`{name}` ({ty}) does not match its parameter"
                )));
            }
            // A constant gradient (of a parameter the loss does not depend on) is computed by
            // no step: it is there from the start.
            let last = step_nodes
                .iter()
                .rposition(|&n| n == point.index())
                .unwrap_or(0);
            after_step[last].push(k);
            targets.push((p, param.numel()));
            grad_slots.push(v.index());
        }
        // A product that completes one gradient, as its own output, updates it block by block.
        let mut in_gemm = vec![None; step_nodes.len()];
        for (i, step) in steps.iter().enumerate() {
            if let (Step::MatMul(m), [k]) = (step, after_step[i].as_slice()) {
                if m.c == step_nodes[i] && m.c == owner(storage, grad_slots[*k]) {
                    in_gemm[i] = Some(*k);
                    after_step[i].clear();
                }
            }
        }
        let kernel = UpdateKernel::compile(spec)?;
        Ok(FusedUpdates {
            state: kernel.state_buffers(),
            kernel,
            targets,
            after_step,
            in_gemm,
            grad_slots,
        })
    }

    /// Whether step `step` completes a gradient updated after the step.
    pub fn completes(&self, step: usize) -> bool {
        !self.after_step[step].is_empty()
    }

    /// Whether step `step` updates a parameter, after it or inside its GEMM.
    pub fn updates_at(&self, step: usize) -> bool {
        self.completes(step) || self.in_gemm[step].is_some()
    }

    /// For a GEMM step that completes a weight gradient: the epilogue that updates the
    /// parameter on each finished block of it (C has `cols` columns), clearing `finite` when a
    /// gradient element is not finite; `None` for other steps.
    ///
    /// # Safety
    /// `updates` has one entry per prepared parameter, of the sizes checked by
    /// [`FusedUpdates::check`]; the hook may only be called by that step's GEMM, on blocks of
    /// its output.
    pub unsafe fn gemm_hook<'h>(
        &'h self,
        step: usize,
        cols: usize,
        params: &[&[f32]],
        updates: &mut [Update<'_>],
        finite: &'h AtomicBool,
    ) -> Option<impl Fn(Block) + Sync + 'h> {
        let k = self.in_gemm[step]?;
        let (p, _) = self.targets[k];
        let u = &mut updates[k];
        let mut state = [std::ptr::null_mut(); 3];
        for (s, v) in state.iter_mut().zip(u.state.iter_mut().take(self.state)) {
            *s = v.as_mut_ptr();
        }
        let raw = RawUpdate {
            param: params[p].as_ptr(),
            next: u.next.as_mut_ptr(),
            state,
        };
        let update = self.kernel.at(u.hyper);
        Some(move |b: Block| {
            let raw = &raw;
            for r in b.rows.clone() {
                let off = r * cols + b.cols.start;
                let len = b.cols.len();
                // SAFETY: row r, columns b.cols of the gradient (at b.c, row stride `cols`)
                // and the same elements of the parameter, its next value and its state; the
                // blocks are disjoint, so no two threads touch the same elements.
                let ok = unsafe {
                    update.apply(
                        raw.param.add(off),
                        b.c.add((r - b.rows.start) * cols),
                        raw.next.add(off),
                        raw.state.map(|s| if s.is_null() { s } else { s.add(off) }),
                        len,
                    )
                };
                if !ok {
                    finite.store(false, Ordering::Relaxed);
                }
            }
        })
    }

    /// Checks that `updates` fit the prepared parameters and `params` (sizes of the next
    /// values and of the optimizer state).
    pub fn check(&self, params: &[&[f32]], updates: &[Update<'_>]) -> Result<(), String> {
        if updates.len() != self.targets.len() {
            return Err("one update per parameter given to fuse_updates is needed".into());
        }
        for (&(p, n), u) in self.targets.iter().zip(updates) {
            let need = self.state;
            if u.next.len() != n
                || params.get(p).is_none_or(|x| x.len() != n)
                || u.state.len() < need
            {
                return Err(format!("the update of parameter #{p} has the wrong size"));
            }
            if u.state[..need].iter().any(|s| s.len() < n) {
                return Err(format!(
                    "the optimizer state of parameter #{p} is too small"
                ));
            }
        }
        Ok(())
    }

    /// Applies the updates that step `step` completes; whether their gradients were finite.
    ///
    /// # Safety
    /// `table` holds the run's buffers (the gradient slots point at computed gradients of the
    /// sizes the graph gives); `updates` passed [`FusedUpdates::check`].
    pub unsafe fn after(
        &self,
        step: usize,
        table: &[*mut u8],
        params: &[&[f32]],
        updates: &mut [Update<'_>],
    ) -> Result<bool, String> {
        let mut finite = true;
        for &k in &self.after_step[step] {
            let (p, n) = self.targets[k];
            let u = &mut updates[k];
            let grad = table[self.grad_slots[k]] as *const f32;
            // SAFETY: parameter, gradient and next hold n floats (checked by `check`, and by
            // the caller's contract for the gradient); next is the caller's own buffer.
            finite &= unsafe {
                self.kernel.apply(
                    params[p].as_ptr(),
                    grad,
                    u.next.as_mut_ptr(),
                    n,
                    u.state,
                    u.hyper,
                )
            };
        }
        Ok(finite)
    }
}

#[cfg(test)]
mod tests {
    use crate::codegen::{compile_updater, Jit, JitOptions};
    use crate::exec::{Executor, Feed, StepCtx, Update, UpdateHyper};
    use crate::ir::{Graph, Init, Op, OptimizerSpec, Param, Type};

    /// `loss = mse(x·w, y)` with w a 3×2 parameter, differentiated.
    fn training_graph() -> Graph {
        let mut g = Graph::new("t", true);
        let x = g.input("x", Type::f32(true, vec![3]));
        let y = g.input("label", Type::f32(true, vec![2]));
        let w = g.add_param(Param {
            path: "w".into(),
            dims: vec![3, 2],
            init: Init::Zeros,
            frozen: false,
        });
        let p = g
            .push(
                Op::MatMul {
                    ta: false,
                    tb: false,
                },
                vec![x, w],
                "dense",
            )
            .unwrap();
        let l = g.push(Op::Mse, vec![p, y], "loss").unwrap();
        g.set_output("loss", l);
        crate::autodiff::grad(&g).unwrap()
    }

    #[test]
    fn fused_update_matches_the_separate_one_and_keeps_the_parameter_on_nan() {
        fused_matches_separate(OptimizerSpec::Adam {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        });
        // Three state buffers, the third through the table's last slot.
        fused_matches_separate(OptimizerSpec::RmsProp {
            lr: 0.01,
            alpha: 0.9,
            eps: 1e-8,
            momentum: 0.9,
            weight_decay: 0.01,
            centered: true,
        });
    }

    fn fused_matches_separate(spec: OptimizerSpec) {
        let g = training_graph();
        let buffers = spec.state_buffers();
        let mut jit = Jit::compile(&g, &JitOptions::default()).unwrap();
        assert!(jit.fuse_updates(&spec, &[0]).unwrap());
        let w = vec![0.5, -0.25, 1.0, 0.75, -1.5, 0.125];
        let x = [1.0, 2.0, -1.0, 0.5, 0.25, 3.0];
        let y = [0.0, 1.0, 1.0, 0.0];
        let h = UpdateHyper { lr: 0.1, step: 1 };
        let feeds = [Feed::F32(&x), Feed::F32(&y)];
        let (mut next, mut state) = (vec![0.0; 6], vec![vec![0.0; 6]; buffers]);
        let mut ups = [Update {
            next: &mut next,
            state: &mut state,
            hyper: h,
        }];
        let finite = jit
            .run_updating(2, &feeds, &[&w], StepCtx::default(), &mut ups)
            .unwrap();
        assert!(finite);
        let grad = jit.output("grad:w").unwrap().to_vec();
        assert!(grad.iter().any(|&g| g != 0.0));
        let (mut expect, mut st) = (w.clone(), vec![vec![0.0; 6]; buffers]);
        compile_updater(&spec)
            .unwrap()
            .update(&mut expect, &grad, &mut st, h);
        assert_eq!(
            next, expect,
            "the fused update differs from the separate one"
        );
        assert_eq!(state, st, "the optimizer state differs");
        assert!(
            state.iter().all(|s| s.iter().any(|&v| v != 0.0)),
            "a state buffer was not written: {state:?}"
        );

        // A NaN input makes the gradient NaN: reported, and the parameter is left as it was.
        let bad = [f32::NAN, 2.0, -1.0, 0.5, 0.25, 3.0];
        let feeds = [Feed::F32(&bad), Feed::F32(&y)];
        let mut ups = [Update {
            next: &mut next,
            state: &mut state,
            hyper: h,
        }];
        let finite = jit
            .run_updating(2, &feeds, &[&w], StepCtx::default(), &mut ups)
            .unwrap();
        assert!(!finite, "a NaN gradient went unnoticed");
        assert_eq!(w, vec![0.5, -0.25, 1.0, 0.75, -1.5, 0.125]);
    }

    #[test]
    fn updates_are_refused_when_not_prepared_or_miscounted() {
        let g = training_graph();
        let opts = JitOptions {
            fuse_updates: false,
            ..JitOptions::default()
        };
        let spec = OptimizerSpec::Sgd {
            lr: 0.1,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        };
        let mut jit = Jit::compile(&g, &opts).unwrap();
        assert!(!jit.fuse_updates(&spec, &[0]).unwrap());
        let (x, y, w) = ([0.0; 3], [0.0; 2], [0.0; 6]);
        let feeds = [Feed::F32(&x), Feed::F32(&y)];
        let err = jit.run_updating(1, &feeds, &[&w], StepCtx::default(), &mut []);
        assert!(err.is_err());
        // Prepared for one parameter, given none, or a next buffer of the wrong size.
        let mut jit = Jit::compile(&g, &JitOptions::default()).unwrap();
        assert!(jit.fuse_updates(&spec, &[0]).unwrap());
        let err = jit.run_updating(1, &feeds, &[&w], StepCtx::default(), &mut []);
        assert!(err.is_err());
        let mut short = vec![0.0; 5];
        let mut ups = [Update {
            next: &mut short,
            state: &mut [],
            hyper: UpdateHyper { lr: 0.1, step: 1 },
        }];
        let err = jit.run_updating(1, &feeds, &[&w], StepCtx::default(), &mut ups);
        assert!(err.is_err());
    }
}
