//! The input transform `V = Bᵀ d B` of every overlapping tile of the zero-bordered channels.

use super::{mul_add, transforms as tf, WinoGeom, SKEW};
use crate::codegen::kernel::{Kb, F32X4, I64};
use cranelift_codegen::ir::{InstBuilder, StackSlot, StackSlotData, StackSlotKind, Value};
use std::ops::Range;

/// Column `j` (`0 ≤ j < m + 2`) of the windows of four horizontally adjacent tiles, as one
/// f32x4 per column, from a row of the bordered channel: `px(k)` loads its four values from
/// `k` on (the first tile's window starts at 0, the next one's at `m`).
fn tile_columns(kb: &mut Kb, m: usize, px: &mut dyn FnMut(&mut Kb, usize) -> Value) -> Vec<Value> {
    if m == 2 {
        // Columns 2t + j of tiles t..t+4: even and odd lanes of two rows.
        let (l0, l1, l2, l3) = (px(kb, 0), px(kb, 4), px(kb, 2), px(kb, 6));
        return vec![
            kb.shuffle(l0, l1, [0, 2, 4, 6]),
            kb.shuffle(l0, l1, [1, 3, 5, 7]),
            kb.shuffle(l2, l3, [0, 2, 4, 6]),
            kb.shuffle(l2, l3, [1, 3, 5, 7]),
        ];
    }
    // Columns 4t + j: a 4×4 transpose of the values from 0, and columns 4 and 5 (columns 0 and
    // 1 of the next tiles) from that of the values from 4.
    let q: Vec<Value> = (0..5).map(|k| px(kb, 4 * k)).collect();
    let [c0, c1, c2, c3] = tf::transpose(kb, [q[0], q[1], q[2], q[3]]);
    let [c4, c5, _, _] = tf::transpose(kb, [q[1], q[2], q[3], q[4]]);
    vec![c0, c1, c2, c3, c4, c5]
}

/// A `rows × cols` array of f32x4 in a stack slot, between the two passes of F(4×4)'s input
/// transform (the second reads by rows what the first wrote by columns). Kept in registers,
/// the 36 values of the transform's middle were all live at once, and Cranelift spilled most
/// of them, in its own order. (Staging the output and `dy` transforms' 24 the same way made
/// them slower: 2–5% on each convolution step of the CNN's training, over two alternated
/// profiles.)
struct Stage {
    slot: StackSlot,
    cols: usize,
}

impl Stage {
    fn new(kb: &mut Kb, rows: usize, cols: usize) -> Stage {
        let bytes = (rows * cols * 16) as u32;
        let data = StackSlotData::new(StackSlotKind::ExplicitSlot, bytes, 4);
        Stage {
            slot: kb.b.create_sized_stack_slot(data),
            cols,
        }
    }

    fn at(&self, i: usize, j: usize) -> i32 {
        ((i * self.cols + j) * 16) as i32
    }

    fn put(&self, kb: &mut Kb, i: usize, j: usize, v: Value) {
        kb.b.ins().stack_store(I64, v, self.slot, self.at(i, j));
    }

    fn get(&self, kb: &mut Kb, i: usize, j: usize) -> Value {
        kb.b.ins().stack_load(I64, F32X4, self.slot, self.at(i, j))
    }
}

/// `Bᵀ d B` of four F(4×4, 3×3) tiles side by side, whose windows start at element `base` of
/// the bordered channel at `pb` (rows of `pw`), as rows of f32x4 (`t[i][j]`, plane `i·6 + j`):
/// `Bᵀ d` first, down each of the five f32x4 columns the four windows span (no shuffles), into
/// a [`Stage`]; then `· B` along each of its rows, whose tiles' columns come from 4×4
/// transposes. Only rows `rows` (of the planes a task computes) are staged and transformed:
/// the others are empty.
fn inputs4(kb: &mut Kb, pb: Value, base: Value, pw: usize, rows: Range<usize>) -> Vec<Vec<Value>> {
    const Q: usize = 5;
    let st = Stage::new(kb, 6, Q);
    for q in 0..Q {
        let d: Vec<Value> = (0..6)
            .map(|r| {
                let i = kb.b.ins().iadd_imm_s(base, (r * pw + 4 * q) as i64);
                kb.ld_rw(F32X4, pb, i)
            })
            .collect();
        for (i, &e) in tf::bt(kb, &d).iter().enumerate() {
            if rows.contains(&i) {
                st.put(kb, i, q, e);
            }
        }
    }
    (0..6)
        .map(|i| {
            if !rows.contains(&i) {
                return Vec::new();
            }
            let q: Vec<Value> = (0..Q).map(|q| st.get(kb, i, q)).collect();
            let cols = tile_columns(kb, 4, &mut |_, k| q[k / 4]);
            tf::bt(kb, &cols)
        })
        .collect()
}

/// The input transform of channels `c0..c1` of `batch` images (table: images, `V`,
/// padded-channel buffer, row length `T` of `V`, `c0`, `c1`): `V[ξ][c][t] = (Bᵀ d B)[ξ]`,
/// `t = image·tiles + ty·TW + tx`, for the planes `planes` only.
pub(super) fn inputs(kb: &mut Kb, g: &WinoGeom, planes: Range<usize>) {
    let (src, vb, pb, t_all) = (kb.ptr(0), kb.ptr(1), kb.ptr(2), kb.ptr(3));
    let (c_lo, c_hi) = (kb.ptr(4), kb.ptr(5));
    let (m, side) = (g.m, g.a());
    let tiles = g.tiles();
    let (th, tw) = g.tiles_hw();
    let (h, w, pad) = (g.h, g.w, g.pad);
    let pw = g.padded_hw().1;
    let plane = kb.b.ins().imul_imm_s(t_all, g.cin as i64);
    let plane = kb.b.ins().iadd_imm_s(plane, SKEW as i64);
    let zero = kb.int(0);
    let batch = kb.batch;
    // Zero the bordered channel and its slack (a whole number of f32x4: the bordered sides are
    // even) once: each channel copied in below writes its inside only, so the border stays 0.
    // (Zeroing it for every channel took 1–10%, median 3.5%, of the CNN's batch-1 inference.)
    let z = kb.cst(F32X4, 0.0);
    let lo = kb.int(0);
    let end = kb.int(g.pad_len() as i64);
    kb.for_step(lo, end, 4, |kb, i| kb.st(z, pb, i));
    kb.for_range(zero, batch, |kb, img| {
        let first_tile = kb.b.ins().imul_imm_s(img, tiles as i64);
        kb.for_range(c_lo, c_hi, |kb, c| {
            // Copy the channel in.
            let ch = mul_add(kb, img, g.cin, c);
            let ch = kb.b.ins().imul_imm_s(ch, (h * w) as i64);
            kb.for_n(h, |kb, r| {
                let s0 = mul_add(kb, r, w, ch);
                let d0 = kb.b.ins().iadd_imm_s(r, pad as i64);
                let d0 = kb.b.ins().imul_imm_s(d0, pw as i64);
                let d0 = kb.b.ins().iadd_imm_s(d0, pad as i64);
                kb.vec_loop_overlapping(w, |kb, j, lane| {
                    let si = kb.b.ins().iadd(s0, j);
                    let v = kb.ld(lane, src, si);
                    let di = kb.b.ins().iadd(d0, j);
                    kb.st(v, pb, di);
                });
            });
            // V row of this channel and image.
            let vc = kb.b.ins().imul(c, t_all);
            let vc = kb.b.ins().iadd(vc, first_tile);
            kb.for_n(th, |kb, ty| {
                let vrow = mul_add(kb, ty, tw, vc);
                let prow = kb.b.ins().imul_imm_s(ty, (m * pw) as i64);
                kb.vec_loop_overlapping(tw, |kb, tx, lane| {
                    let txm = kb.b.ins().imul_imm_s(tx, m as i64);
                    let base = kb.b.ins().iadd(prow, txm);
                    // Bᵀ d B, row by row (t[i][j] for plane i·side + j).
                    let t = if m == 4 && lane == F32X4 {
                        let rows = planes.start / side..planes.end.div_ceil(side);
                        inputs4(kb, pb, base, pw, rows)
                    } else {
                        // d B for each row of the tile(s), then Bᵀ down each column.
                        let rows: Vec<Vec<Value>> = (0..side)
                            .map(|r| {
                                let mut px = |kb: &mut Kb, k: usize| {
                                    let i = kb.b.ins().iadd_imm_s(base, (r * pw + k) as i64);
                                    kb.ld_rw(lane, pb, i)
                                };
                                let d = if lane == F32X4 {
                                    tile_columns(kb, m, &mut px)
                                } else {
                                    (0..side).map(|k| px(kb, k)).collect()
                                };
                                tf::bt(kb, &d)
                            })
                            .collect();
                        let cols: Vec<Vec<Value>> = (0..side)
                            .map(|j| tf::bt(kb, &tf::column(&rows, j)))
                            .collect();
                        (0..side).map(|i| tf::column(&cols, i)).collect()
                    };
                    let vt = kb.b.ins().iadd(vrow, tx);
                    for (i, row) in t.iter().enumerate() {
                        for (j, &val) in row.iter().enumerate() {
                            let xi = i * side + j;
                            if !planes.contains(&xi) {
                                continue;
                            }
                            let off = kb.b.ins().imul_imm_s(plane, xi as i64);
                            let idx = kb.b.ins().iadd(off, vt);
                            kb.st(val, vb, idx);
                        }
                    }
                });
            });
        });
    });
}
