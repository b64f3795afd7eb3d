//! Matrix products: small ones as one Cranelift kernel, the others on the JIT'd GEMM.

use super::{Built, Cx, Step};
use crate::codegen::glue::{Dim, MatMulStep};
use crate::codegen::{small_matmul, CodegenError};

/// `MatMul` (`a`ᵀ when `ta`, `b`ᵀ when `tb`): a kernel of its own when it is small
/// ([`small_matmul::is_small`]), else a GEMM step.
pub(super) fn matmul(cx: &Cx, out: &mut Built, ta: bool, tb: bool) -> Result<Step, CodegenError> {
    cx.arity(2)?;
    let (i, ins, header) = (cx.i, &cx.ins, cx.header);
    let (m, n, k) = matmul_dims(ta, tb, &cx.ity(0), &cx.ity(1), cx.ty)?;
    if small_matmul::is_small(m, n, k) {
        out.kernel(header, |kb| {
            small_matmul::small_matmul(kb, ta, tb, m, n, k, i, ins[0], ins[1])
        })
    } else {
        out.km.note(&format!(
            "{header}\n; gemm (packed f32x4 kernel) m={m} n={n} k={k} ta={ta} tb={tb}\n"
        ));
        Ok(Step::MatMul(MatMulStep {
            m,
            n,
            k,
            ta,
            tb,
            a: ins[0],
            b: ins[1],
            c: i,
            epi: None,
        }))
    }
}

/// The matrix view `(m, n, k)` of a `MatMul` node (see [`crate::ir::Op::MatMul`]).
pub(super) fn matmul_dims(
    ta: bool,
    tb: bool,
    a: &crate::ir::Type,
    b: &crate::ir::Type,
    out: &crate::ir::Type,
) -> Result<(Dim, usize, Dim), CodegenError> {
    let bad = || CodegenError::Graph(format!("matmul of {a} and {b} is not a matrix product"));
    if a.dims.is_empty() || b.dims.is_empty() || ta && tb {
        return Err(bad());
    }
    let n = out.last();
    let inner = a.last();
    let rows = Dim {
        per: a.per_sample() / inner.max(1),
        batched: a.batched,
    };
    if ta {
        // a: [R, M], b: [R, N], contracted over R.
        if b.batched != a.batched || b.per_sample() != rows.per * n {
            return Err(bad());
        }
        Ok((
            Dim {
                per: inner,
                batched: false,
            },
            n,
            rows,
        ))
    } else {
        if b.batched || b.per_sample() != inner * n {
            return Err(bad());
        }
        Ok((
            rows,
            n,
            Dim {
                per: inner,
                batched: false,
            },
        ))
    }
}
