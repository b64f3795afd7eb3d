//! The LSTM's scans (with and without the state), its gradient and its hidden states.

use super::rnn::scan_kernel;
use super::{Built, Cx, Step};
use crate::codegen::{lstm, CodegenError};
use crate::ir::Op;

/// `LstmScan` (or `Lstm`, without the state), with a scratch buffer of its own (per thread
/// when its rows are split, see [`super::split_rows`]).
pub(super) fn scan(cx: &Cx, out: &mut Built) -> Result<Step, CodegenError> {
    cx.arity(2)?;
    let s = lstm::scratch(&cx.n.op, cx.ty);
    let keep = cx.n.op == Op::LstmScan;
    scan_kernel(cx, out, s, |kb, s| {
        lstm::scan(kb, keep, cx.ty, cx.i, &cx.ins, s)
    })
}

/// `LstmScanGrad`, backwards through time, with a scratch buffer as [`scan`].
pub(super) fn scan_grad(cx: &Cx, out: &mut Built) -> Result<Step, CodegenError> {
    cx.arity(3)?;
    let s = lstm::scratch(&cx.n.op, cx.ty);
    scan_kernel(cx, out, s, |kb, s| {
        lstm::scan_grad(kb, cx.ty, cx.i, &cx.ins, s)
    })
}

/// `LstmHidden`: each step's first `H` values of the state.
pub(super) fn hidden(cx: &Cx, out: &mut Built) -> Result<Step, CodegenError> {
    cx.arity(1)?;
    let (i, ins, ty) = (cx.i, &cx.ins, cx.ty);
    out.kernel(cx.header, |kb| lstm::hidden(kb, ty, i, ins[0]))
}
