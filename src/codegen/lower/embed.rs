//! Embedding lookups, their gradient, and one-hot encoding.

use super::{Built, Cx, Step};
use crate::codegen::{embed, CodegenError};

/// `Embedding`: the rows of the table `[V, E]` the ids pick.
pub(super) fn embedding(cx: &Cx, out: &mut Built) -> Result<Step, CodegenError> {
    cx.arity(2)?;
    let (i, ins) = (cx.i, &cx.ins);
    let (ids, w) = (cx.ity(0), cx.ity(1));
    let (v, e) = table_dims(&w.dims, i)?;
    out.kernel(cx.header, |kb| embed::embedding(kb, &ids, v, e, i, ins))
}

/// `EmbeddingGrad`: the table's gradient, `dy`'s rows added to those the ids picked, once its
/// types are checked to match.
pub(super) fn embedding_grad(cx: &Cx, out: &mut Built) -> Result<Step, CodegenError> {
    cx.arity(2)?;
    let (i, ins, ty) = (cx.i, &cx.ins, cx.ty);
    let ids = cx.ity(0);
    let (v, e) = table_dims(&ty.dims, i)?;
    let dy = cx.ity(1);
    if ty.batched || dy.batched != ids.batched || dy.per_sample() != ids.per_sample() * e {
        return Err(CodegenError::Graph(format!(
            "%{i}: embedding_grad of {dy} cannot give {ty}"
        )));
    }
    out.kernel(cx.header, |kb| {
        embed::embedding_grad(kb, &ids, v, e, i, ins)
    })
}

/// `OneHot` into `classes` classes.
pub(super) fn one_hot(cx: &Cx, out: &mut Built, classes: usize) -> Result<Step, CodegenError> {
    cx.arity(1)?;
    let (i, ins) = (cx.i, &cx.ins);
    let ids = cx.ity(0);
    out.kernel(cx.header, |kb| embed::one_hot(kb, &ids, classes, i, ins[0]))
}

fn table_dims(dims: &[usize], i: usize) -> Result<(usize, usize), CodegenError> {
    match dims {
        [v, e] => Ok((*v, *e)),
        _ => Err(CodegenError::Graph(format!(
            "%{i}: an embedding table must be [V, E]"
        ))),
    }
}
