//! 2-D convolution (NCHW, square k×k windows) and its two gradients as im2col plus GEMM, per
//! image (see [`super::glue::ConvStep`] for the products and how the work is split):
//!
//! - `Conv2d`:           `y[b] (O×P) = w (O×CKK) · cols(x[b]) (CKK×P)`
//! - `Conv2dGradWeight`: `dw (O×CKK) = Σ_b dy[b] (O×P) · cols(x[b])ᵀ`, images added in order
//! - `Conv2dGradInput`:  `dcols[b] (CKK×P) = wᵀ · dy[b]`, then col2im adds dcols into dx
//!
//! with `P = H'·W'` output positions and `CKK = C·k·k`. The columns live in a scratch buffer.
//!
//! 3×3 stride-1 convolutions (all three ops) with enough input channels use Winograd
//! F(2×2, 3×3) or F(4×4, 3×3) instead ([`super::winograd`], chosen by
//! [`super::winograd::plan`]).

use super::glue::{ConvKind, ConvStep};
use super::im2col::ConvGeom;
use super::kernel::KernelModule;
use super::lower::{Scratch, Step};
use super::{winograd, CodegenError};
use crate::ir::{Chain, Op, Type, Window};

/// The step of a convolution node (Winograd or im2col); `t0`, `t1` are its input types, `ty`
/// its output's (before a pooling). Adds its scratch buffers to `scratch` (table slot
/// `scratch_base + index`), its kernels (Winograd) or a note (im2col) to `km` under `header`.
/// A forward convolution on Winograd applies `chain` (with the slot of its bias) in its output
/// transform, and with `pool` a 2×2 max pooling ([`winograd::fuses_pool`]); the im2col step
/// leaves the chain to the caller.
#[allow(clippy::too_many_arguments)]
pub fn step(
    km: &mut KernelModule,
    header: &str,
    op: &Op,
    win: &Window,
    t0: &Type,
    t1: &Type,
    ty: &Type,
    out: usize,
    ins: &[usize],
    scratch_base: usize,
    scratch: &mut Vec<Scratch>,
    chain: Option<(&Chain, Option<usize>)>,
    pool: bool,
) -> Result<Step, CodegenError> {
    let (kind, x, y) = match op {
        Op::Conv2d(_) => (ConvKind::Forward, t0, ty),
        Op::Conv2dGradWeight(_) => (ConvKind::GradWeight, t0, t1),
        _ => (ConvKind::GradInput, ty, t0),
    };
    if x.dims.len() != 3 || y.dims.len() != 3 || !x.batched || !y.batched {
        return Err(CodegenError::Graph(format!(
            "{} needs NCHW images, found {x} and {y}",
            op.name()
        )));
    }
    let geom = ConvGeom {
        c: x.dims[0],
        h: x.dims[1],
        w: x.dims[2],
        win: *win,
    };
    let (ckk, pos) = geom.cols_shape().map_err(CodegenError::Graph)?;
    let wdims = [y.dims[0], x.dims[0], win.kernel, win.kernel];
    let weight_ok = kind == ConvKind::GradWeight || t1.dims == wdims;
    if geom.out_hw().ok() != Some((y.dims[1], y.dims[2])) || !weight_ok {
        return Err(CodegenError::Graph(format!(
            "{}: {y} is not the output of {x}",
            op.name()
        )));
    }
    if let Some(wg) = winograd::plan(kind, &geom, y.dims[0]) {
        let st = winograd::step(
            km,
            header,
            kind,
            wg,
            [ins[0], ins[1]],
            out,
            (scratch_base, scratch),
            chain.filter(|_| kind == ConvKind::Forward),
            pool,
        )?;
        return Ok(Step::Winograd(st));
    }
    if pool {
        return Err(CodegenError::Graph(format!(
            "{}: no pooling on im2col",
            op.name()
        )));
    }
    km.note(&format!(
        "{header}\n; per image: im2col/col2im on {}×{}×{} (k={} s={} p={}) and gemm\n",
        geom.c, geom.h, geom.w, win.kernel, win.stride, win.pad
    ));
    let cols = Scratch {
        per: ckk * pos,
        batched: true,
        per_thread: false,
    };
    let cols = super::lower::add_scratch(scratch, scratch_base, cols);
    Ok(Step::Conv(ConvStep {
        kind,
        geom,
        o: y.dims[0],
        ins: [ins[0], ins[1]],
        out,
        cols,
        epi: None,
    }))
}
