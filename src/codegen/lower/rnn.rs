//! Recurrent scans over time, their gradient, and the shift by one time step.

use super::{add_scratch, Built, Cx, Scratch, Step};
use crate::codegen::kernel::Kb;
use crate::codegen::{rnn, CodegenError};
use crate::ir::RnnAct;

/// `RnnScan` with activation `act`, with a scratch buffer of its own (per thread when its rows
/// are split, see [`super::split_rows`]).
pub(super) fn scan(cx: &Cx, out: &mut Built, act: RnnAct) -> Result<Step, CodegenError> {
    cx.arity(2)?;
    let s = rnn::scratch(&cx.n.op, cx.ty);
    scan_kernel(cx, out, s, |kb, s| {
        rnn::scan(kb, act, cx.ty, cx.i, &cx.ins, s)
    })
}

/// `RnnScanGrad` with activation `act`, backwards through time, with a scratch buffer as
/// [`scan`].
pub(super) fn scan_grad(cx: &Cx, out: &mut Built, act: RnnAct) -> Result<Step, CodegenError> {
    cx.arity(3)?;
    let s = rnn::scratch(&cx.n.op, cx.ty);
    scan_kernel(cx, out, s, |kb, s| {
        rnn::scan_grad(kb, act, cx.ty, cx.i, &cx.ins, s)
    })
}

/// The kernel `body` emits for a scan (or its gradient), given the slot of its scratch buffer
/// `scratch`.
pub(super) fn scan_kernel(
    cx: &Cx,
    out: &mut Built,
    scratch: Scratch,
    body: impl FnOnce(&mut Kb, usize),
) -> Result<Step, CodegenError> {
    let s = add_scratch(&mut out.scratch, cx.scratch_base, scratch);
    Ok(Step::Kernel {
        k: out.km.plain_kernel(cx.header, |kb| body(kb, s))?,
        rows: None,
    })
}

/// `TimeShift`: every time step's value moved to the next one, zeros at the first.
pub(super) fn time_shift(cx: &Cx, out: &mut Built) -> Result<Step, CodegenError> {
    cx.arity(1)?;
    let (i, ins, ty) = (cx.i, &cx.ins, cx.ty);
    out.kernel(cx.header, |kb| rnn::time_shift(kb, ty, i, ins[0]))
}
