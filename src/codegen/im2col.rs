//! im2col / col2im for NCHW convolution, one image at a time, JIT-compiled once per process
//! and parameterized at run time: the geometry (C, H, W, kernel, stride, padding) is passed in a
//! small table, so one [`Im2col`] serves every conv layer.
//!
//! `cols` is `[C·k·k, OH·OW]` row-major, row `(c·k + ki)·k + kj`, column `oy·OW + ox`, holding
//! `x[c, oy·s − p + ki, ox·s − p + kj]` (0 in the padding). Conv forward is then
//! `y[O, OH·OW] = W[O, C·k·k] · cols`, the weight gradient `dW += dY · colsᵀ`, and the input
//! gradient `dcols = Wᵀ · dY` followed by [`Im2col::col2im`], which adds every column entry back
//! into `dx`. The valid output ranges per kernel offset are computed in Rust, so the generated
//! loops have no per-element bounds checks; stride 1 copies with f32x4.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::FunctionBuilder;
use cranelift_jit::JITModule;
use cranelift_module::Module;

use super::jitmod::new_jit_module;
use crate::ir::Window;

/// `(src, dst, table)`: see [`ConvGeom::table`] for the table layout.
type KernelFn = unsafe extern "C" fn(*const f32, *mut f32, *const i64);

/// Geometry of one convolution input: `C×H×W` image and a square window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub win: Window,
}

impl ConvGeom {
    /// `(OH, OW)`, or an error when the window does not fit or the stride is 0.
    pub fn out_hw(&self) -> Result<(usize, usize), String> {
        match (self.win.out_len(self.h), self.win.out_len(self.w)) {
            (Some(oh), Some(ow)) if self.win.kernel > 0 => Ok((oh, ow)),
            _ => Err(format!(
                "im2col: window {:?} does not fit {self:?}",
                self.win
            )),
        }
    }

    /// Elements of one image, `C·H·W`.
    pub fn image_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Shape of the column matrix, `(C·k·k, OH·OW)`.
    pub fn cols_shape(&self) -> Result<(usize, usize), String> {
        let (oh, ow) = self.out_hw()?;
        Ok((self.c * self.win.kernel * self.win.kernel, oh * ow))
    }

    /// The table the kernels read: `[C, H, W, k, s, p, OH, OW]`, then for the row offsets
    /// `ki < k` the valid `oy` ranges `[lo, hi)` (`k` lows then `k` highs), then the same for the
    /// column offsets `kj` and `ox`. A position is valid when `0 ≤ o·s − p + kk < extent`.
    fn table(&self) -> Result<Vec<i64>, String> {
        let (oh, ow) = self.out_hw()?;
        let Window {
            kernel: k,
            stride: s,
            pad: p,
        } = self.win;
        let mut t: Vec<i64> = [self.c, self.h, self.w, k, s, p, oh, ow]
            .iter()
            .map(|&v| v as i64)
            .collect();
        for (extent, outs) in [(self.h, oh), (self.w, ow)] {
            let range = |kk: usize| {
                let ok = |o: usize| (o * s + kk >= p) && (o * s + kk - p < extent);
                let lo = (0..outs).find(|&o| ok(o)).unwrap_or(outs);
                let hi = (lo..outs)
                    .take_while(|&o| ok(o))
                    .last()
                    .map_or(lo, |o| o + 1);
                (lo as i64, hi as i64)
            };
            let ranges: Vec<(i64, i64)> = (0..k).map(range).collect();
            t.extend(ranges.iter().map(|r| r.0));
            t.extend(ranges.iter().map(|r| r.1));
        }
        Ok(t)
    }
}

/// The compiled im2col and col2im kernels; `Send + Sync`, usable from many threads.
pub struct Im2col {
    /// Owns the code the pointers point into; never touched after construction.
    _module: JITModule,
    im2col: KernelFn,
    col2im: KernelFn,
}

// SAFETY: after finalization the module is immutable and only kept alive for its code; the
// kernels are pure functions of their arguments.
unsafe impl Send for Im2col {}
// SAFETY: see `Send`.
unsafe impl Sync for Im2col {}

impl Im2col {
    /// Compiles both kernels for the host CPU.
    pub fn new() -> Result<Im2col, String> {
        let mut module = new_jit_module()?;
        let a = define(&mut module, "nnc_im2col", false)?;
        let b = define(&mut module, "nnc_col2im", true)?;
        module
            .finalize_definitions()
            .map_err(|e| format!("finalize im2col: {e}"))?;
        // SAFETY: both functions were defined with the `KernelFn` signature.
        let (im2col, col2im) = unsafe {
            (
                std::mem::transmute::<*const u8, KernelFn>(module.get_finalized_function(a)),
                std::mem::transmute::<*const u8, KernelFn>(module.get_finalized_function(b)),
            )
        };
        Ok(Im2col {
            _module: module,
            im2col,
            col2im,
        })
    }

    /// `cols[C·k·k, OH·OW] = im2col(x[C, H, W])` (overwrites all of `cols`' prefix).
    pub fn im2col(&self, g: &ConvGeom, x: &[f32], cols: &mut [f32]) -> Result<(), String> {
        let t = self.check(g, x.len(), cols.len())?;
        // SAFETY: lengths checked against the geometry; the table matches it.
        unsafe { (self.im2col)(x.as_ptr(), cols.as_mut_ptr(), t.as_ptr()) };
        Ok(())
    }

    /// `dx[C, H, W] += col2im(cols[C·k·k, OH·OW])`: every column entry is added to the input
    /// position it was read from (padding entries are dropped).
    pub fn col2im(&self, g: &ConvGeom, cols: &[f32], dx: &mut [f32]) -> Result<(), String> {
        let t = self.check(g, dx.len(), cols.len())?;
        // SAFETY: as in `im2col`; `col2im` reads `cols` and writes `dx`.
        unsafe { (self.col2im)(cols.as_ptr(), dx.as_mut_ptr(), t.as_ptr()) };
        Ok(())
    }

    fn check(&self, g: &ConvGeom, image: usize, cols: usize) -> Result<Vec<i64>, String> {
        let (r, c) = g.cols_shape()?;
        if image < g.image_len() || cols < r * c {
            return Err(format!(
                "im2col: image has {image} elements (needs {}), cols {cols} (needs {r}×{c})",
                g.image_len()
            ));
        }
        g.table()
    }
}

/// Emits `for i in lo..hi (step) { body(i) }` (signed compare) and returns the value of `i`
/// when the loop exits.
fn for_range(
    b: &mut FunctionBuilder,
    lo: Value,
    hi: Value,
    step: i64,
    body: impl FnOnce(&mut FunctionBuilder, Value),
) -> Value {
    let head = b.create_block();
    let blk = b.create_block();
    let exit = b.create_block();
    b.append_block_param(head, types::I64);
    b.append_block_param(exit, types::I64);
    b.ins().jump(head, &[lo.into()]);
    b.switch_to_block(head);
    let i = b.block_params(head)[0];
    let more = b.ins().icmp(IntCC::SignedLessThan, i, hi);
    b.ins().brif(more, blk, &[], exit, &[i.into()]);
    b.switch_to_block(blk);
    body(b, i);
    let next = b.ins().iadd_imm_s(i, step);
    b.ins().jump(head, &[next.into()]);
    b.switch_to_block(exit);
    b.block_params(exit)[0]
}

/// `base + 4·idx` (f32 element address).
fn elem(b: &mut FunctionBuilder, base: Value, idx: Value) -> Value {
    let off = b.ins().ishl_imm_u(idx, 2);
    b.ins().iadd(base, off)
}

/// Defines im2col (`col2im = false`: src is the image, dst the columns) or col2im (`true`: src
/// is the columns, dst the image gradient, accumulated).
fn define(
    module: &mut JITModule,
    name: &str,
    col2im: bool,
) -> Result<cranelift_module::FuncId, String> {
    let ptr = module.target_config().pointer_type();
    if ptr != types::I64 {
        return Err("im2col needs a 64-bit target".into());
    }
    super::jitmod::define_function(module, name, 3, |b, _| emit(b, col2im))
}

fn emit(b: &mut FunctionBuilder, col2im: bool) {
    let i64t: Type = types::I64;
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let p = b.block_params(entry).to_vec();
    let (src, dst, tbl) = (p[0], p[1], p[2]);
    let tf = MemFlagsData::new().with_notrap().with_readonly();
    let mf = MemFlagsData::new().with_notrap();
    let field = |b: &mut FunctionBuilder, i: i32| b.ins().load(i64t, tf, tbl, 8 * i);
    let (c, h, w, k) = (field(b, 0), field(b, 1), field(b, 2), field(b, 3));
    let (s, pad, oh, ow) = (field(b, 4), field(b, 5), field(b, 6), field(b, 7));
    let zero = b.ins().iconst(i64t, 0);
    let zf = b.ins().f32const(0.0);
    let ohw = b.ins().imul(oh, ow);
    let unit = b.ins().icmp_imm_s(IntCC::Equal, s, 1);
    // Table entry `base + idx` (idx a value).
    let entry_at = |b: &mut FunctionBuilder, base: i64, idx: Value| {
        let a = b.ins().iadd_imm_s(idx, base);
        let a = b.ins().ishl_imm_u(a, 3);
        let a = b.ins().iadd(tbl, a);
        b.ins().load(i64t, tf, a, 0)
    };
    let (img, cols) = if col2im { (dst, src) } else { (src, dst) };

    for_range(b, zero, c, 1, |b, ci| {
        for_range(b, zero, k, 1, |b, ki| {
            let oy_lo = entry_at(b, 8, ki);
            let k_plus = b.ins().iadd(ki, k);
            let oy_hi = entry_at(b, 8, k_plus);
            for_range(b, zero, k, 1, |b, kj| {
                let two_k = b.ins().iadd(k, k);
                let lo_idx = b.ins().iadd(two_k, kj);
                let ox_lo = entry_at(b, 8, lo_idx);
                let hi_idx = b.ins().iadd(lo_idx, k);
                let ox_hi = entry_at(b, 8, hi_idx);
                // Column-matrix row (ci·k + ki)·k + kj.
                let r = b.ins().imul(ci, k);
                let r = b.ins().iadd(r, ki);
                let r = b.ins().imul(r, k);
                let r = b.ins().iadd(r, kj);
                let r0 = b.ins().imul(r, ohw);
                let crow = elem(b, cols, r0);
                // Image column of ox = 0: kj − p (ox·s added per element).
                let x0 = b.ins().isub(kj, pad);
                let row = |b: &mut FunctionBuilder, oy: Value| {
                    let o0 = b.ins().imul(oy, ow);
                    let out = elem(b, crow, o0);
                    // Image row oy·s − p + ki of channel ci.
                    let iy = b.ins().imul(oy, s);
                    let iy = b.ins().iadd(iy, ki);
                    let iy = b.ins().isub(iy, pad);
                    let irow = b.ins().imul(ci, h);
                    let irow = b.ins().iadd(irow, iy);
                    let irow = b.ins().imul(irow, w);
                    let irow = b.ins().iadd(irow, x0);
                    let inp = elem(b, img, irow);
                    if !col2im {
                        for_range(b, zero, ox_lo, 1, |b, ox| {
                            let a = elem(b, out, ox);
                            b.ins().store(mf, zf, a, 0);
                        });
                    }
                    // Valid part: cols[ox] ↔ img[ox·s] (relative to `out` / `inp`).
                    let vec_blk = b.create_block();
                    let tail_blk = b.create_block();
                    b.append_block_param(tail_blk, i64t);
                    b.ins().brif(unit, vec_blk, &[], tail_blk, &[ox_lo.into()]);
                    b.switch_to_block(vec_blk);
                    let hi4 = b.ins().iadd_imm_s(ox_hi, -3);
                    let end = for_range(b, ox_lo, hi4, 4, |b, ox| {
                        let ca = elem(b, out, ox);
                        let ia = elem(b, inp, ox);
                        if col2im {
                            let v = b.ins().load(types::F32X4, mf, ca, 0);
                            let d = b.ins().load(types::F32X4, mf, ia, 0);
                            let sum = b.ins().fadd(d, v);
                            b.ins().store(mf, sum, ia, 0);
                        } else {
                            let v = b.ins().load(types::F32X4, mf, ia, 0);
                            b.ins().store(mf, v, ca, 0);
                        }
                    });
                    b.ins().jump(tail_blk, &[end.into()]);
                    b.switch_to_block(tail_blk);
                    let start = b.block_params(tail_blk)[0];
                    for_range(b, start, ox_hi, 1, |b, ox| {
                        let ca = elem(b, out, ox);
                        let ix = b.ins().imul(ox, s);
                        let ia = elem(b, inp, ix);
                        if col2im {
                            let v = b.ins().load(types::F32, mf, ca, 0);
                            let d = b.ins().load(types::F32, mf, ia, 0);
                            let sum = b.ins().fadd(d, v);
                            b.ins().store(mf, sum, ia, 0);
                        } else {
                            let v = b.ins().load(types::F32, mf, ia, 0);
                            b.ins().store(mf, v, ca, 0);
                        }
                    });
                    if !col2im {
                        let hi = b.ins().smax(ox_hi, ox_lo);
                        for_range(b, hi, ow, 1, |b, ox| {
                            let a = elem(b, out, ox);
                            b.ins().store(mf, zf, a, 0);
                        });
                    }
                };
                if col2im {
                    for_range(b, oy_lo, oy_hi, 1, row);
                } else {
                    // Rows outside [oy_lo, oy_hi) read only padding: all zeros.
                    for_range(b, zero, oy_lo, 1, |b, oy| zero_row(b, crow, oy, ow, zf));
                    // Stride 1 with OW = W ("same" width): the valid rows of this plane read
                    // the image at (column index + a fixed offset), so they are one contiguous
                    // copy; the edge columns it wraps into are zeroed afterwards.
                    let same_w = b.ins().icmp(IntCC::Equal, ow, w);
                    let fast = b.ins().band(unit, same_w);
                    let fast_blk = b.create_block();
                    let slow_blk = b.create_block();
                    let join = b.create_block();
                    b.ins().brif(fast, fast_blk, &[], slow_blk, &[]);
                    b.switch_to_block(slow_blk);
                    for_range(b, oy_lo, oy_hi, 1, row);
                    b.ins().jump(join, &[]);
                    b.switch_to_block(fast_blk);
                    let rows_ok = b.ins().icmp(IntCC::SignedLessThan, oy_lo, oy_hi);
                    let cols_ok = b.ins().icmp(IntCC::SignedLessThan, ox_lo, ox_hi);
                    let any = b.ins().band(rows_ok, cols_ok);
                    let copy_blk = b.create_block();
                    let edge_blk = b.create_block();
                    b.ins().brif(any, copy_blk, &[], edge_blk, &[]);
                    b.switch_to_block(copy_blk);
                    // (ci·H + ki − p)·W + kj − p: the image index of column index 0.
                    let off = b.ins().imul(ci, h);
                    let off = b.ins().iadd(off, ki);
                    let off = b.ins().isub(off, pad);
                    let off = b.ins().imul(off, w);
                    let off = b.ins().iadd(off, kj);
                    let src_off = b.ins().isub(off, pad);
                    let plane = Plane {
                        crow,
                        img,
                        oy: (oy_lo, oy_hi),
                        ox: (ox_lo, ox_hi),
                        ow,
                        src_off,
                    };
                    emit_same_width_copy(b, &plane);
                    b.ins().jump(edge_blk, &[]);
                    b.switch_to_block(edge_blk);
                    emit_same_width_edges(b, &plane);
                    b.ins().jump(join, &[]);
                    b.switch_to_block(join);
                    let hi = b.ins().smax(oy_hi, oy_lo);
                    for_range(b, hi, oh, 1, |b, oy| zero_row(b, crow, oy, ow, zf));
                }
            });
        });
    });
    b.ins().return_(&[]);
}

/// One `(c, ki, kj)` plane of the columns on the stride-1, `OW = W` path: column row start
/// `crow`, image `img`, valid output ranges `oy`, `ox`, and `src_off` such that column index
/// `d = oy·OW + ox` reads image index `d + src_off`.
struct Plane {
    crow: Value,
    img: Value,
    oy: (Value, Value),
    ox: (Value, Value),
    ow: Value,
    src_off: Value,
}

/// Copies the valid span of a [`Plane`] whose ranges are both non-empty, from `(oy_lo, ox_lo)`
/// to `(oy_hi − 1, ox_hi − 1)`, with f32x4 then scalars. Every index of the span reads inside
/// the image; entries outside the valid columns get wrapped neighbours, which
/// [`emit_same_width_edges`] then zeroes.
fn emit_same_width_copy(b: &mut FunctionBuilder, p: &Plane) {
    let mf = MemFlagsData::new().with_notrap();
    let ((oy_lo, oy_hi), (ox_lo, ox_hi)) = (p.oy, p.ox);
    let d0 = b.ins().imul(oy_lo, p.ow);
    let d0 = b.ins().iadd(d0, ox_lo);
    let last = b.ins().iadd_imm_s(oy_hi, -1);
    let d1 = b.ins().imul(last, p.ow);
    let d1 = b.ins().iadd(d1, ox_hi);
    let src = elem(b, p.img, p.src_off);
    let hi4 = b.ins().iadd_imm_s(d1, -3);
    let end = for_range(b, d0, hi4, 4, |b, d| {
        let sa = elem(b, src, d);
        let v = b.ins().load(types::F32X4, mf, sa, 0);
        let da = elem(b, p.crow, d);
        b.ins().store(mf, v, da, 0);
    });
    for_range(b, end, d1, 1, |b, d| {
        let sa = elem(b, src, d);
        let v = b.ins().load(types::F32, mf, sa, 0);
        let da = elem(b, p.crow, d);
        b.ins().store(mf, v, da, 0);
    });
}

/// Zeroes the columns `ox < ox_lo` and `ox ≥ ox_hi` of the valid rows of a [`Plane`] (all of
/// them when the column range is empty).
fn emit_same_width_edges(b: &mut FunctionBuilder, p: &Plane) {
    let mf = MemFlagsData::new().with_notrap();
    let zero = b.ins().iconst(types::I64, 0);
    let zf = b.ins().f32const(0.0);
    let ((oy_lo, oy_hi), (ox_lo, ox_hi)) = (p.oy, p.ox);
    for_range(b, oy_lo, oy_hi, 1, |b, oy| {
        let o0 = b.ins().imul(oy, p.ow);
        let row = elem(b, p.crow, o0);
        for_range(b, zero, ox_lo, 1, |b, ox| {
            let a = elem(b, row, ox);
            b.ins().store(mf, zf, a, 0);
        });
        for_range(b, ox_hi, p.ow, 1, |b, ox| {
            let a = elem(b, row, ox);
            b.ins().store(mf, zf, a, 0);
        });
    });
}

/// Stores `ow` zeros at row `oy` of the column-matrix row starting at `crow`.
fn zero_row(b: &mut FunctionBuilder, crow: Value, oy: Value, ow: Value, zf: Value) {
    let zero = b.ins().iconst(types::I64, 0);
    let o0 = b.ins().imul(oy, ow);
    let out = elem(b, crow, o0);
    let mf = MemFlagsData::new().with_notrap();
    for_range(b, zero, ow, 1, |b, ox| {
        let a = elem(b, out, ox);
        b.ins().store(mf, zf, a, 0);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Naive im2col from the definition.
    fn naive(g: &ConvGeom, x: &[f32]) -> Vec<f32> {
        let (oh, ow) = g.out_hw().unwrap();
        let Window {
            kernel: k,
            stride: s,
            pad: p,
        } = g.win;
        let mut cols = Vec::new();
        for c in 0..g.c {
            for ki in 0..k {
                for kj in 0..k {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let iy = (oy * s + ki) as isize - p as isize;
                            let ix = (ox * s + kj) as isize - p as isize;
                            let inside =
                                iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w;
                            cols.push(if inside {
                                x[(c * g.h + iy as usize) * g.w + ix as usize]
                            } else {
                                0.0
                            });
                        }
                    }
                }
            }
        }
        cols
    }

    fn geoms() -> Vec<ConvGeom> {
        let mut v = Vec::new();
        for (c, h, w) in [(1, 28, 28), (3, 7, 5), (2, 1, 1), (4, 9, 12), (1, 2, 9)] {
            for (kernel, stride, pad) in [
                (1, 1, 0),
                (3, 1, 0),
                (3, 1, 1),
                (3, 2, 1),
                (5, 2, 2),
                (2, 2, 0),
                (4, 3, 3),
                (5, 1, 4),
                // Stride 1 with OW = W: the contiguous-copy path.
                (5, 1, 2),
                (7, 1, 3),
            ] {
                let g = ConvGeom {
                    c,
                    h,
                    w,
                    win: Window {
                        kernel,
                        stride,
                        pad,
                    },
                };
                if g.out_hw().is_ok() {
                    v.push(g);
                }
            }
        }
        v
    }

    #[test]
    fn im2col_matches_naive() {
        let k = Im2col::new().unwrap();
        for g in geoms() {
            let x: Vec<f32> = (0..g.image_len()).map(|i| i as f32 * 0.5 + 1.0).collect();
            let want = naive(&g, &x);
            let mut got = vec![f32::NAN; want.len()];
            k.im2col(&g, &x, &mut got).unwrap();
            assert_eq!(got, want, "{g:?}");
        }
    }

    /// col2im is the adjoint of im2col: <im2col(x), y> = <x, col2im(y)>, checked exactly on
    /// integers, and it accumulates into dx.
    #[test]
    fn col2im_is_adjoint_and_accumulates() {
        let k = Im2col::new().unwrap();
        for g in geoms() {
            let (r, c) = g.cols_shape().unwrap();
            let y: Vec<f32> = (0..r * c).map(|i| (i % 13) as f32 - 6.0).collect();
            let mut dx = vec![1.0f32; g.image_len()];
            k.col2im(&g, &y, &mut dx).unwrap();
            // Reference: dx[j] = 1 + Σ_i y[i]·[cols(e_j)[i] = 1], via naive im2col of indices.
            let idx: Vec<f32> = (0..g.image_len()).map(|i| i as f32 + 1.0).collect();
            let map = naive(&g, &idx);
            let mut want = vec![1.0f32; g.image_len()];
            for (i, &m) in map.iter().enumerate() {
                if m != 0.0 {
                    want[m as usize - 1] += y[i];
                }
            }
            assert_eq!(dx, want, "{g:?}");
        }
    }

    #[test]
    fn bad_sizes_are_errors() {
        let k = Im2col::new().unwrap();
        let g = ConvGeom {
            c: 1,
            h: 4,
            w: 4,
            win: Window {
                kernel: 3,
                stride: 1,
                pad: 0,
            },
        };
        let mut cols = vec![0.0; 9 * 4];
        assert!(k.im2col(&g, &[0.0; 15], &mut cols).is_err());
        assert!(k.im2col(&g, &[0.0; 16], &mut cols[..35]).is_err());
        assert!(k.col2im(&g, &cols[..35], &mut [0.0; 16]).is_err());
        let too_big = ConvGeom {
            win: Window {
                kernel: 5,
                stride: 1,
                pad: 0,
            },
            ..g
        };
        assert!(k.im2col(&too_big, &[0.0; 16], &mut cols).is_err());
        let zero_stride = ConvGeom {
            win: Window {
                kernel: 3,
                stride: 0,
                pad: 0,
            },
            ..g
        };
        assert!(k.im2col(&zero_stride, &[0.0; 16], &mut cols).is_err());
    }
}
