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
//! Kernel ABI: the usual [`KernelFn`], whose table is the [`RectArgs`] of one rectangle.

use std::ops::Range;

use cranelift_codegen::ir::{types, InstBuilder, Value};

use super::elementwise::{unary, unary_grad};
use super::glue::{Dim, Table};
use super::kernel::{Kb, KernelFn, KernelModule};
use super::CodegenError;
use crate::ir::{Epilogue, Producer, ValueId};

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
}

/// Emits `c[r·ldc + j] = epi(c[r·ldc + j])` for `r < rows`, `j < cols` (f32x4 lanes along the
/// row, a scalar tail). The bias is indexed by `r` when `bias_rows`, else by `j`; the auxiliary
/// input (the forward value of a gradient epilogue) like C.
pub fn emit_rect(kb: &mut Kb, epi: &Epilogue, bias_rows: bool, at: Rect) {
    let has_bias = matches!(epi, Epilogue::Chain(c) if c.bias.is_some());
    let zero = kb.int(0);
    kb.for_range(zero, at.rows, |kb, r| {
        let base = kb.b.ins().imul(r, at.ldc);
        let row_bias = (bias_rows && has_bias).then(|| kb.ld(types::F32, at.bias, r));
        kb.vec_loop(zero, at.cols, |kb, j, lane| {
            let idx = kb.b.ins().iadd(base, j);
            let p = kb.ld_rw(lane, at.c, idx);
            let out = match epi {
                Epilogue::Chain(chain) => {
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
                Epilogue::Grad(u) => {
                    let v = kb.ld(lane, at.aux, idx);
                    unary_grad(kb, *u, v, p, lane)
                }
            };
            kb.st(out, at.c, idx);
        });
    });
}

/// A small product ([`super::small_matmul`]) of shape `(m, n, k)` from slots `ab` into slot
/// `out`, then its epilogue over all of C, as one kernel body; `extra` are the node's inputs
/// after the product's two.
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
) {
    super::small_matmul::small_matmul(kb, ta, tb, m, n, k, out, ab.0, ab.1);
    let (bias, aux) = extra_slots(epi, extra);
    let mut slot = |s: Option<usize>| match s {
        Some(s) => kb.ptr(s),
        None => kb.int(0),
    };
    let (bias, aux) = (slot(bias), slot(aux));
    let at = Rect {
        c: kb.ptr(out),
        bias,
        aux,
        ldc: kb.int(n as i64),
        rows: kb.rows(m.batched, m.per),
        cols: kb.int(n as i64),
    };
    emit_rect(kb, epi, false, at);
}

/// The epilogue of a `MatMul` or `Conv2d` step: its compiled kernel and the table slots of its
/// extra inputs.
#[derive(Clone, Debug)]
pub struct EpiStep {
    /// Handle of the kernel in the graph's [`KernelModule`].
    pub kernel: usize,
    /// The kernel, once the module is finished ([`EpiStep::resolve`]).
    run: Option<KernelFn>,
    bias: Option<usize>,
    aux: Option<usize>,
    /// Whether the bias is one number per row of C (a convolution's channels) or per column.
    bias_rows: bool,
}

/// Table slots of an epilogue's extra inputs (the node's inputs after the product's two).
fn extra_slots(epi: &Epilogue, extra: &[ValueId]) -> (Option<usize>, Option<usize>) {
    let slot = extra.first().map(|v| v.index());
    match epi {
        Epilogue::Chain(_) => (slot, None),
        Epilogue::Grad(_) => (None, slot),
    }
}

impl EpiStep {
    /// Compiles the epilogue of a node whose extra inputs are `extra`.
    pub fn compile(
        km: &mut KernelModule,
        header: &str,
        producer: Producer,
        epi: &Epilogue,
        extra: &[ValueId],
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
            };
            emit_rect(kb, epi, bias_rows, at)
        })?;
        let (bias, aux) = extra_slots(epi, extra);
        Ok(EpiStep {
            kernel,
            run: None,
            bias,
            aux,
            bias_rows,
        })
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
    /// element `offset` of the node's value (the auxiliary input is read at the same offset).
    ///
    /// # Safety
    /// `c` must point at the rectangle inside the node's output buffer, which nothing else
    /// accesses meanwhile; the table's slots must point at live buffers of the node's types.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn apply(
        &self,
        run: KernelFn,
        t: Table,
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
        let args: [*mut u8; 6] = [
            c as *mut u8,
            at(self.bias, bias_at),
            at(self.aux, offset),
            ldc as *mut u8,
            rows.len() as *mut u8,
            cols.len() as *mut u8,
        ];
        // SAFETY: the kernel reads the slots of `RectArgs` and touches only the rectangle of C,
        // bias entries of its rows or columns and the same rectangle of the auxiliary input.
        unsafe { run(args.as_ptr(), 0) };
    }
}
