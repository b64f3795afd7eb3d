//! Epilogues of GEMM-backed steps ([`crate::ir::Op::WithEpilogue`]): a bias, activations or an
//! activation's gradient applied to a block of C right after the GEMM has finished it, while it
//! is still in cache, instead of by a separate kernel pass over the whole product.
//!
//! The epilogue is one Cranelift kernel of the graph's module, built from the same lane
//! expressions as the unfused kernels ([`super::elementwise::unary`], `unary_grad`, the bias
//! add's `x + b`), so each element gets the same f32 operations in the same order and the
//! results are bit-identical to the unfused ops. It works on a rectangle of C, so the GEMM
//! calls it per cache block ([`super::gemm::Gemm::gemm_with`]), a convolution per image, and a
//! small product ([`small_matmul`]) inlines it after its loops. Each element is
//! transformed once and alone, so results do not depend on how the work is split over threads.
//!
//! A loss epilogue ([`crate::opt::loss_epilogue`]) also writes the loss gradient beside C, with
//! the lane expressions of the separate gradient kernels (`loss::mse_grad`, and
//! `rowwise::cross_entropy_grad_row` on each whole row).
//!
//! Kernel ABI: the usual [`KernelFn`], whose table is the [`RectArgs`] of one rectangle.

use std::ops::Range;

use cranelift_codegen::ir::{types, InstBuilder, Value};

use super::elementwise::{unary, unary_grad};
use super::glue::{Dim, Table};
use super::kernel::{Kb, KernelFn, KernelModule};
use super::loss::mse_grad;
use super::rowwise::cross_entropy_grad_row;
use super::CodegenError;
use crate::ir::{Epilogue, EpilogueLoss, LossEpilogue, Producer, Type, UnaryOp, ValueId};

/// Table slots of an epilogue kernel: pointers to the rectangle's first element of C, of the
/// bias (at the rectangle's first row or column) and of the auxiliary input (same layout as
/// C), then C's row stride and the rectangle's rows and columns, in elements.
#[repr(usize)]
#[derive(Clone, Copy)]
enum RectArgs {
    C,
    Bias,
    Aux,
    Ldc,
    Rows,
    Cols,
    Target,
    Grad,
}

/// The values an epilogue needs, as Cranelift values (see [`RectArgs`]).
#[derive(Clone, Copy)]
pub struct Rect {
    /// The rectangle's first element of C.
    pub c: Value,
    /// The bias entry of its first row (a convolution) or column (a matrix product).
    pub bias: Value,
    /// The auxiliary input's element at the same place as `c`.
    pub aux: Value,
    /// Row stride of C and of the auxiliary input, in elements.
    pub ldc: Value,
    pub rows: Value,
    pub cols: Value,
    /// A loss epilogue's target at the same place as `c` (mean squared error), or its labels
    /// from the rectangle's first row (cross-entropy).
    pub target: Value,
    /// A loss epilogue's gradient buffer at the same place as `c`.
    pub grad: Value,
}

/// Emits `c[r·ldc + j] = epi(c[r·ldc + j])` for `r < rows`, `j < cols` (f32x4 lanes along the
/// row, a scalar tail). The bias is indexed by `r` when `bias_rows`, else by `j`; the auxiliary
/// input (the forward value of a gradient epilogue) like C.
///
/// A loss epilogue also writes the loss gradient into `grad` (laid out like C): element by
/// element for mean squared error, row by row after the row's values for cross-entropy (whose
/// rectangles are whole rows of C). `ty` is the node's type, which with the kernel's batch
/// gives the mean's divisor, as in the separate gradient kernels.
pub fn emit_rect(kb: &mut Kb, epi: &Epilogue, ty: &Type, bias_rows: bool, at: Rect) {
    let chain = epi.chain();
    let has_bias = chain.is_some_and(|c| c.bias.is_some());
    let loss = match epi {
        Epilogue::Loss(l) => Some((l, loss_scale(kb, l, ty))),
        _ => None,
    };
    let zero = kb.int(0);
    kb.for_range(zero, at.rows, |kb, r| {
        let base = kb.b.ins().imul(r, at.ldc);
        let row_bias = (bias_rows && has_bias).then(|| kb.ld(types::F32, at.bias, r));
        let body = |kb: &mut Kb, j: Value, lane| {
            let idx = kb.b.ins().iadd(base, j);
            let p = kb.ld_rw(lane, at.c, idx);
            let out = match chain {
                Some(chain) => {
                    let mut v = p;
                    if chain.bias.is_some() {
                        let b = match row_bias {
                            Some(s) => kb.splat(lane, s),
                            None => kb.ld(lane, at.bias, j),
                        };
                        v = kb.b.ins().fadd(v, b);
                    }
                    for &u in &chain.acts {
                        v = unary(kb, u, v, lane);
                    }
                    v
                }
                None => {
                    let Epilogue::Grad(u) = epi else {
                        unreachable!("only a gradient epilogue has no chain")
                    };
                    let v = kb.ld(lane, at.aux, idx);
                    unary_grad(kb, *u, v, p, lane)
                }
            };
            kb.st(out, at.c, idx);
            if let Some((l, scale)) = loss.filter(|(l, _)| l.loss == EpilogueLoss::Mse) {
                let t = kb.ld(lane, at.target, idx);
                let s = kb.splat(lane, scale);
                let mut d = mse_grad(kb, out, t, s);
                if let Some(u) = l.through {
                    d = unary_grad(kb, u, out, d, lane);
                }
                kb.st(d, at.grad, idx);
            }
        };
        // Two vectors an iteration: a sigmoid's or tanh's exponential and division make a
        // long chain (the autoencoder's decoder step 337–356 → 332–344 µs, four alternated
        // runs; its loss epilogue 66 → 60 instructions per four elements).
        kb.vec_loop_x2(zero, at.cols, body);
        if let Some((l, scale)) = loss.filter(|(l, _)| l.loss == EpilogueLoss::CrossEntropy) {
            // The row is whole and final in C: its softmax gradient.
            let c = ty.last();
            cross_entropy_grad_row(kb, at.c, at.grad, base, c, (at.target, r), scale);
            if let Some(u) = l.through {
                let cv = kb.int(c as i64);
                kb.vec_loop(zero, cv, |kb, j, lane| {
                    let idx = kb.b.ins().iadd(base, j);
                    let v = kb.ld(lane, at.c, idx);
                    let d = kb.ld_rw(lane, at.grad, idx);
                    let d = unary_grad(kb, u, v, d, lane);
                    kb.st(d, at.grad, idx);
                });
            }
        }
    });
}

/// `dl / N`, the loss gradient's scale: N the element count (mean squared error) or the row
/// count (cross-entropy) of the node's value at the kernel's batch; `dl` itself for a summed
/// loss (whose upstream gradient dl·N over N is exactly dl).
fn loss_scale(kb: &mut Kb, l: &LossEpilogue, ty: &Type) -> Value {
    if l.summed {
        let dl = kb.b.ins().f32const(l.dl());
        return kb.materialize(dl);
    }
    let n = match l.loss {
        EpilogueLoss::Mse => kb.numel(ty),
        EpilogueLoss::CrossEntropy => kb.rows(ty.batched, ty.per_sample() / ty.last().max(1)),
    };
    let dl = kb.b.ins().f32const(l.dl());
    let nf = kb.b.ins().fcvt_from_uint(types::F32, n);
    let scale = kb.b.ins().fdiv(dl, nf);
    kb.materialize(scale)
}

/// A small product ([`super::small_matmul`]) of shape `(m, n, k)` from slots `ab` into slot
/// `out`, then its epilogue over all of C, as one kernel body; `extra` are the node's inputs
/// after the product's two, `ty` its type and `grad` the slot of a loss epilogue's gradient.
#[allow(clippy::too_many_arguments)]
pub fn small_matmul(
    kb: &mut Kb,
    ta: bool,
    tb: bool,
    (m, n, k): (Dim, usize, Dim),
    out: usize,
    ab: (usize, usize),
    epi: &Epilogue,
    extra: &[ValueId],
    (ty, grad): (&Type, Option<usize>),
) {
    super::small_matmul::small_matmul(kb, ta, tb, m, n, k, out, ab.0, ab.1);
    let slots = extra_slots(epi, extra);
    let slot = |kb: &mut Kb, s: Option<usize>| match s {
        Some(s) => kb.ptr(s),
        None => kb.int(0),
    };
    let at = Rect {
        c: kb.ptr(out),
        bias: slot(kb, slots.bias),
        aux: slot(kb, slots.aux),
        ldc: kb.int(n as i64),
        rows: kb.rows(m.batched, m.per),
        cols: kb.int(n as i64),
        target: slot(kb, slots.target),
        grad: slot(kb, grad),
    };
    emit_rect(kb, epi, ty, false, at);
}

/// The epilogue of a `MatMul` or `Conv2d` step: its compiled kernel and the table slots of its
/// extra inputs.
#[derive(Clone, Debug)]
pub struct EpiStep {
    /// Handle of the kernel in the graph's [`KernelModule`].
    pub kernel: usize,
    /// The kernel, once the module is finished ([`EpiStep::resolve`]).
    run: Option<KernelFn>,
    slots: ExtraSlots,
    /// The slot of a loss epilogue's gradient (its [`crate::ir::Op::EpilogueGrad`]).
    grad: Option<usize>,
    /// Whether the bias is one number per row of C (a convolution's channels) or per column.
    bias_rows: bool,
    /// Whether each rectangle must hold whole rows of C (a cross-entropy gradient).
    pub whole_rows: bool,
    /// Whether the epilogue is a ReLU's gradient alone (see [`EpiStep::relu_mask`]).
    relu_grad: bool,
}

/// Table slots of an epilogue's extra inputs (the node's inputs after the product's two).
#[derive(Clone, Copy, Debug, Default)]
struct ExtraSlots {
    bias: Option<usize>,
    aux: Option<usize>,
    target: Option<usize>,
}

fn extra_slots(epi: &Epilogue, extra: &[ValueId]) -> ExtraSlots {
    let slot = |k: usize| extra.get(k).map(|v| v.index());
    match epi {
        Epilogue::Chain(_) | Epilogue::Pool(..) => ExtraSlots {
            bias: slot(0),
            ..Default::default()
        },
        Epilogue::Grad(_) => ExtraSlots {
            aux: slot(0),
            ..Default::default()
        },
        Epilogue::Loss(l) => {
            let has_bias = l.chain.bias.is_some() as usize;
            ExtraSlots {
                bias: slot(0).filter(|_| has_bias == 1),
                target: slot(has_bias),
                aux: None,
            }
        }
    }
}

impl EpiStep {
    /// Compiles the epilogue of a node of type `ty` whose extra inputs are `extra`; `grad` is
    /// the slot of a loss epilogue's gradient.
    pub fn compile(
        km: &mut KernelModule,
        header: &str,
        producer: Producer,
        epi: &Epilogue,
        extra: &[ValueId],
        (ty, grad): (&Type, Option<usize>),
    ) -> Result<EpiStep, CodegenError> {
        let bias_rows = matches!(producer, Producer::Conv2d(_));
        let kernel = km.kernel(&format!("{header}\n; epilogue per block of C"), |kb| {
            let mut slot = |a: RectArgs| kb.ptr(a as usize);
            let at = Rect {
                c: slot(RectArgs::C),
                bias: slot(RectArgs::Bias),
                aux: slot(RectArgs::Aux),
                ldc: slot(RectArgs::Ldc),
                rows: slot(RectArgs::Rows),
                cols: slot(RectArgs::Cols),
                target: slot(RectArgs::Target),
                grad: slot(RectArgs::Grad),
            };
            emit_rect(kb, epi, ty, bias_rows, at)
        })?;
        let whole_rows = matches!(
            epi,
            Epilogue::Loss(l) if l.loss == EpilogueLoss::CrossEntropy
        );
        Ok(EpiStep {
            kernel,
            run: None,
            slots: extra_slots(epi, extra),
            grad,
            bias_rows,
            whole_rows,
            relu_grad: matches!(epi, Epilogue::Grad(UnaryOp::Relu)),
        })
    }

    /// The slot of `H` when the epilogue is `relu_grad` with the ReLU's output `H` (laid out
    /// like C): it keeps the entries of C where `H > 0` and zeroes the others, so only those
    /// need computing ([`super::masked`]).
    pub fn relu_mask(&self) -> Option<usize> {
        self.slots.aux.filter(|_| self.relu_grad)
    }

    /// Points at the compiled kernel (`kernels` as returned by [`KernelModule::finish`]).
    pub fn resolve(&mut self, kernels: &[KernelFn]) {
        self.run = kernels.get(self.kernel).copied();
    }

    /// The compiled kernel, for [`EpiStep::apply`].
    pub fn kernel_fn(&self) -> Result<KernelFn, String> {
        self.run
            .ok_or_else(|| "an epilogue kernel was not resolved after compilation".into())
    }

    /// Applies the epilogue (`run`, its [`EpiStep::kernel_fn`]) to rows `rows`, columns `cols`
    /// of a C with row stride `ldc`, whose element `(rows.start, cols.start)` is at `c` and is
    /// element `offset` of the node's value (the auxiliary input, a target and a gradient are at
    /// the same offset; labels at the row's). `batch` is the run's batch size.
    ///
    /// # Safety
    /// `c` must point at the rectangle inside the node's output buffer, which nothing else
    /// accesses meanwhile (nor the same rectangle of the gradient); the table's slots must
    /// point at live buffers of the node's types; when [`EpiStep::whole_rows`], `cols` must be
    /// all of C's `ldc` columns and `rows` rows of the matrix product.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn apply(
        &self,
        run: KernelFn,
        t: Table,
        batch: usize,
        c: *mut f32,
        ldc: usize,
        rows: Range<usize>,
        cols: Range<usize>,
        offset: usize,
    ) {
        let at = |slot: Option<usize>, idx: usize| match slot {
            // SAFETY (of the caller): idx is inside the buffer of that slot.
            Some(s) => unsafe { (t.0[s] as *mut f32).add(idx) as *mut u8 },
            None => std::ptr::null_mut(),
        };
        let bias_at = if self.bias_rows {
            rows.start
        } else {
            cols.start
        };
        // The kernel reads and writes c whole rows of ldc from there: never let it run past
        // the rectangle it was given.
        assert!(
            !self.whole_rows || cols.len() == ldc,
            "a row-wise epilogue was handed part of a row"
        );
        // Labels are i32, one per row of a matrix product: the same element size as f32.
        let target_at = if self.whole_rows { rows.start } else { offset };
        let args: [*mut u8; 8] = [
            c as *mut u8,
            at(self.slots.bias, bias_at),
            at(self.slots.aux, offset),
            ldc as *mut u8,
            rows.len() as *mut u8,
            cols.len() as *mut u8,
            at(self.slots.target, target_at),
            at(self.grad, offset),
        ];
        // SAFETY: the kernel reads the slots of `RectArgs` and touches only the rectangle of C
        // (and of the gradient), bias entries of its rows or columns, the same rectangle of the
        // auxiliary input or target, or the labels of its rows.
        unsafe { run(args.as_ptr(), batch as i64) };
    }
}
