//! The GRU's scan and its gradient, each writing its second result when the graph reads it.

use super::rnn::scan_kernel;
use super::{Built, Cx, Step};
use crate::codegen::{gru, CodegenError};
use crate::ir::Op;

/// `GruScan`, with its gates ([`Op::GruGates`]) beside h when read, and a scratch buffer of
/// its own (per thread when its rows are split, see [`super::split_rows`]).
pub(super) fn scan(cx: &Cx, out: &mut Built) -> Result<Step, CodegenError> {
    cx.arity(3)?;
    let gates = cx.second_result(|op| matches!(op, Op::GruGates));
    let scratch = gru::scratch(&cx.n.op, cx.ty);
    scan_kernel(cx, out, scratch, |kb, s| {
        gru::scan(kb, cx.ty, cx.i, &cx.ins, gates, s)
    })
}

/// `GruScanGrad`, with dhp ([`Op::GruRecurGrad`]) beside dxp when read, and a scratch buffer
/// as [`scan`].
pub(super) fn scan_grad(cx: &Cx, out: &mut Built) -> Result<Step, CodegenError> {
    cx.arity(4)?;
    let recur = cx.second_result(|op| matches!(op, Op::GruRecurGrad));
    let scratch = gru::scratch(&cx.n.op, cx.ty);
    scan_kernel(cx, out, scratch, |kb, s| {
        gru::scan_grad(kb, cx.ty, cx.i, &cx.ins, recur, s)
    })
}
