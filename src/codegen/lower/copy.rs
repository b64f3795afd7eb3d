//! Concatenation, slicing and reversal along one axis: copy kernels.

use super::{Built, Cx, Step};
use crate::codegen::{copy, CodegenError};
use crate::ir::Type;

/// `Concat` along `axis` of two inputs or more.
pub(super) fn concat(cx: &Cx, out: &mut Built, axis: usize) -> Result<Step, CodegenError> {
    let tys: Vec<Type> = (0..cx.ins.len()).map(|k| cx.ity(k)).collect();
    let parts: Vec<(usize, &Type)> = cx.ins.iter().copied().zip(&tys).collect();
    let i = cx.i;
    out.kernel(cx.header, |kb| copy::concat(kb, &parts, axis, i))
}

/// `Slice` of entries `start..start + len` of `axis`.
pub(super) fn slice(
    cx: &Cx,
    out: &mut Built,
    axis: usize,
    range: (usize, usize),
) -> Result<Step, CodegenError> {
    cx.arity(1)?;
    let (i, x, t) = (cx.i, cx.ins[0], cx.ity(0));
    out.kernel(cx.header, |kb| copy::slice(kb, &t, axis, range, i, x))
}

/// `Reverse` along `axis`.
pub(super) fn reverse(cx: &Cx, out: &mut Built, axis: usize) -> Result<Step, CodegenError> {
    cx.arity(1)?;
    let (i, x, t) = (cx.i, cx.ins[0], cx.ity(0));
    out.kernel(cx.header, |kb| copy::reverse(kb, &t, axis, i, x))
}
