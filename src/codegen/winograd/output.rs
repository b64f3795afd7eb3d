//! The output transform `y = Aᵀ m A` of every tile, with the forward pass's chain (and a 2×2
//! max pooling) applied before each value is stored; and the `dy` transform `E = A e Aᵀ` of the
//! weight gradient, which walks the same tiles.

use super::{mul_add, transforms as tf, WinoGeom, SKEW};
use crate::codegen::elementwise::chain;
use crate::codegen::kernel::{Kb, F32, F32X4};
use crate::codegen::pool;
use crate::ir::{Chain, UnaryOp};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Type as ClifType, Value};

/// The output transform of channels `o0..o1` of `batch` images (table: `M`, output images, row
/// length `T` of `M`, `o0`, `o1`, the chain's bias): `y = Aᵀ m A` per tile, the last tile row /
/// column clipped to the outputs there are; then `chain` (bias from its slot, the activations)
/// on each value before it is stored, as the separate epilogue would compute it.
pub(super) fn outputs(
    kb: &mut Kb,
    g: &WinoGeom,
    chain: Option<(&Chain, Option<usize>)>,
    pool: bool,
) {
    let (mb, yb, t_all) = (kb.ptr(0), kb.ptr(1), kb.ptr(2));
    let chans = (kb.ptr(3), kb.ptr(4));
    let epi = chain.map(|(c, bias)| (c.acts.as_slice(), bias.map(|_| kb.ptr(5))));
    let tile: TileFn = match (g.m, pool) {
        (2, _) => output_tile,
        (_, false) => output_tile4,
        (_, true) => pooled_tile4,
    };
    each_output_tile(kb, g, (mb, yb, t_all), chans, (epi, pool), tile);
}

/// The output transform's chain: its activations and the pointer to its bias.
type OutEpi<'a> = (&'a [UnaryOp], Option<Value>);

/// One tile function of [`each_output_tile`]: a step of one tile or four side by side.
type TileFn = fn(&mut Kb, &WinoGeom, &Row, &Step);

/// A step of [`each_output_tile`]: the tile(s) at `tx` of a tile row, which starts at `mrow`
/// in `M` (or `E`) and at `yrow` in the images.
struct Step {
    mrow: Value,
    yrow: Value,
    tx: Value,
    /// F32X4 for four tiles side by side, F32 for one.
    lane: ClifType,
    /// Output rows of the tile(s) that exist in every tile row.
    rows: usize,
    /// Output columns of the last tile of the step.
    cols: usize,
    /// F(4×4): how many rows exist in this tile row (an i64), where the last one has fewer
    /// than `m`.
    rows_here: Option<Value>,
    /// F(4×4): whether the last tile of this step is the row's last and has `cols` columns
    /// only (an i8), where the row's last tile has fewer than 4.
    clipped: Option<Value>,
}

/// Walks the output-shaped side of `batch` images, tile by tile: for every image, output
/// channel of `o_lo..o_hi` and m×m output tile (clipped at the last row and column), `tile`
/// with the channel's `Row` (the `M`-like buffer at `mb` with rows of `t_all` tiles, the images
/// at `yb`). The output transform reads `M` and writes `y` (`pooled`: its 2×2 max pooling,
/// `⌊oh/2⌋ × ⌊ow/2⌋` a channel); the `dy` transform reads `dy` and writes `E`.
///
/// With F(2×2, 3×3) four whole tiles go at once (the last four again when a row's count is not
/// a multiple of four), and a clipped last row and column take code of their own. With
/// F(4×4, 3×3) (at least four tiles a row) every step takes four, the step ending a row the last
/// four; the tile code, whose 36 values make it long to compile, is emitted once, and the
/// clipped row and column are told apart at run time ([`Step::rows_here`], [`Step::clipped`]).
fn each_output_tile(
    kb: &mut Kb,
    g: &WinoGeom,
    (mb, yb, t_all): (Value, Value, Value),
    (o_lo, o_hi): (Value, Value),
    (epi, pooled): (Option<OutEpi>, bool),
    tile: TileFn,
) {
    let m = g.m;
    let tiles = g.tiles();
    let (th, tw) = g.tiles_hw();
    let plane = kb.b.ins().imul_imm_s(t_all, g.cout as i64);
    let plane = kb.b.ins().iadd_imm_s(plane, SKEW as i64);
    let zero = kb.int(0);
    let batch = kb.batch;
    let g = *g;
    kb.for_range(zero, batch, |kb, img| {
        let first_tile = kb.b.ins().imul_imm_s(img, tiles as i64);
        kb.for_range(o_lo, o_hi, |kb, o| {
            let mo = kb.b.ins().imul(o, t_all);
            let mo = kb.b.ins().iadd(mo, first_tile);
            let yo = mul_add(kb, img, g.cout, o);
            let yo = kb.b.ins().imul_imm_s(yo, g.out_plane(pooled) as i64);
            let epi = epi.map(|(acts, bias)| Epi {
                acts,
                bias: bias.map(|bp| kb.ld(F32, bp, o)),
            });
            let r = Row {
                mb,
                yb,
                plane,
                mo,
                yo,
                epi,
            };
            // Outputs of a tile row: m rows, or pooled, m/2 rows of ⌊ow/2⌋.
            let tile_row = if pooled { m / 2 * (g.ow / 2) } else { m * g.ow };
            let starts = |kb: &mut Kb, ty: Value| {
                let mrow = mul_add(kb, ty, tw, r.mo);
                let yrow = kb.b.ins().imul_imm_s(ty, tile_row as i64);
                (mrow, kb.b.ins().iadd(yrow, r.yo))
            };
            if m == 4 {
                let (last_rows, cols) = (g.oh - 4 * (th - 1), g.ow - 4 * (tw - 1));
                let steps = tw.div_ceil(4);
                kb.for_n(th, |kb, ty| {
                    let (mrow, yrow) = starts(kb, ty);
                    let rows_here = (last_rows < 4).then(|| {
                        let last = kb.b.ins().icmp_imm_s(IntCC::Equal, ty, th as i64 - 1);
                        let (few, all) = (kb.int(last_rows as i64), kb.int(4));
                        kb.b.ins().select(last, few, all)
                    });
                    kb.for_n(steps, |kb, s| {
                        let last = kb.b.ins().icmp_imm_s(IntCC::Equal, s, steps as i64 - 1);
                        let (s4, end) = (kb.b.ins().imul_imm_s(s, 4), kb.int(tw as i64 - 4));
                        let step = Step {
                            mrow,
                            yrow,
                            tx: kb.b.ins().select(last, end, s4),
                            lane: F32X4,
                            rows: last_rows,
                            cols,
                            rows_here,
                            clipped: (cols < 4).then_some(last),
                        };
                        tile(kb, &g, &r, &step)
                    });
                });
                return;
            }
            let row = |kb: &mut Kb, ty: Value, rows: usize| {
                let (mrow, yrow) = starts(kb, ty);
                let step = |tx, lane, cols| Step {
                    mrow,
                    yrow,
                    tx,
                    lane,
                    rows,
                    cols,
                    rows_here: None,
                    clipped: None,
                };
                kb.vec_loop_overlapping(g.ow / 2, |kb, tx, lane| {
                    tile(kb, &g, &r, &step(tx, lane, 2))
                });
                if g.ow % 2 == 1 {
                    let tx = kb.int((tw - 1) as i64);
                    tile(kb, &g, &r, &step(tx, F32, 1));
                }
            };
            kb.for_n(g.oh / 2, |kb, ty| row(kb, ty, 2));
            if g.oh % 2 == 1 {
                let ty = kb.int((th - 1) as i64);
                row(kb, ty, 1);
            }
        });
    });
}

/// Where one output channel of one image lives: `M` and `y` bases, the `ξ` plane stride of
/// `M`, and the element offsets of the channel's first tile in `M` and first output in `y`.
struct Row<'a> {
    mb: Value,
    yb: Value,
    plane: Value,
    mo: Value,
    yo: Value,
    /// The output transform's epilogue, with the channel's bias.
    epi: Option<Epi<'a>>,
}

/// A forward convolution's chain applied in its output transform: the channel's bias (an f32)
/// and the activations.
#[derive(Clone, Copy)]
struct Epi<'a> {
    acts: &'a [UnaryOp],
    bias: Option<Value>,
}

/// `Aᵀ m A` of the tile(s) of `s`: `y[i][j]`, row `i` and column `j` of the outputs.
fn untransform(kb: &mut Kb, g: &WinoGeom, r: &Row, s: &Step) -> Vec<Vec<Value>> {
    let side = g.a();
    let mt = kb.b.ins().iadd(s.mrow, s.tx);
    let m: Vec<Value> = (0..side * side)
        .map(|xi| {
            let off = kb.b.ins().imul_imm_s(r.plane, xi as i64);
            let idx = kb.b.ins().iadd(off, mt);
            kb.ld(s.lane, r.mb, idx)
        })
        .collect();
    // m A for each row, then Aᵀ of each of its columns.
    let ma: Vec<Vec<Value>> = m.chunks(side).map(|row| tf::at(kb, row)).collect();
    let cols: Vec<Vec<Value>> = (0..g.m).map(|j| tf::at(kb, &tf::column(&ma, j))).collect();
    (0..g.m).map(|i| tf::column(&cols, i)).collect()
}

/// The F(2×2, 3×3) tile(s) of `s` (four with f32x4 lanes, whole), `rows × cols` outputs each.
fn output_tile(kb: &mut Kb, g: &WinoGeom, r: &Row, s: &Step) {
    let y = untransform(kb, g, r, s);
    let lane = s.lane;
    let tx2 = kb.b.ins().iadd(s.tx, s.tx);
    for (i, row) in y.iter().enumerate().take(s.rows) {
        let yi = kb.b.ins().iadd_imm_s(s.yrow, (i * g.ow) as i64);
        let yi = kb.b.ins().iadd(yi, tx2);
        let (mut y0, mut y1) = (row[0], row[1]);
        if let Some(e) = r.epi {
            y0 = chain(kb, e.acts, e.bias, y0, lane);
            if s.cols == 2 || lane == F32X4 {
                y1 = chain(kb, e.acts, e.bias, y1, lane);
            }
        }
        if lane == F32X4 {
            let lo = kb.shuffle(y0, y1, [0, 4, 1, 5]);
            let hi = kb.shuffle(y0, y1, [2, 6, 3, 7]);
            kb.st(lo, r.yb, yi);
            let yi4 = kb.b.ins().iadd_imm_s(yi, 4);
            kb.st(hi, r.yb, yi4);
        } else {
            kb.st(y0, r.yb, yi);
            if s.cols == 2 {
                let yi1 = kb.b.ins().iadd_imm_s(yi, 1);
                kb.st(y1, r.yb, yi1);
            }
        }
    }
}

/// `body` where `c` (an i8) holds, its values (of `types`) there, `otherwise` elsewhere.
fn when(
    kb: &mut Kb,
    c: Value,
    types: &[ClifType],
    body: impl FnOnce(&mut Kb) -> Vec<Value>,
    otherwise: impl FnOnce(&mut Kb) -> Vec<Value>,
) -> Vec<Value> {
    let (then, other, join) = (
        kb.b.create_block(),
        kb.b.create_block(),
        kb.b.create_block(),
    );
    for &t in types {
        kb.b.append_block_param(join, t);
    }
    kb.b.ins().brif(c, then, &[], other, &[]);
    for (block, f) in [
        (
            then,
            Box::new(body) as Box<dyn FnOnce(&mut Kb) -> Vec<Value>>,
        ),
        (other, Box::new(otherwise)),
    ] {
        kb.b.seal_block(block);
        kb.b.switch_to_block(block);
        let vals: Vec<_> = f(kb).into_iter().map(|v| v.into()).collect();
        kb.b.ins().jump(join, &vals);
    }
    kb.b.seal_block(join);
    kb.b.switch_to_block(join);
    kb.b.block_params(join).to_vec()
}

/// Whether row `i` of the step's tiles exists (an i8), or `None` where it always does.
fn row_exists(kb: &mut Kb, s: &Step, i: usize) -> Option<Value> {
    let here = s.rows_here.filter(|_| i >= s.rows)?;
    Some(
        kb.b.ins()
            .icmp_imm_s(IntCC::SignedGreaterThan, here, i as i64),
    )
}

/// The lanes that join the last `4 − cols` values of one f32x4 with the first `cols` of the
/// next (`1 ≤ cols < 4`).
fn joined(cols: usize) -> [u8; 4] {
    std::array::from_fn(|l| (cols + l) as u8)
}

/// The four F(4×4, 3×3) tiles of `s`: each output row is the transpose of the four tiles'
/// columns, one f32x4 per tile. The row's clipped last tile is stored joined to the values
/// before it, as the four values ending the row (the ones before are those the tile before
/// stores).
fn output_tile4(kb: &mut Kb, g: &WinoGeom, r: &Row, s: &Step) {
    let y = untransform(kb, g, r, s);
    let tx4 = kb.b.ins().imul_imm_s(s.tx, 4);
    for (i, row) in y.iter().enumerate() {
        let yi = kb.b.ins().iadd_imm_s(s.yrow, (i * g.ow) as i64);
        let yi = kb.b.ins().iadd(yi, tx4);
        let mut v: [Value; 4] = [row[0], row[1], row[2], row[3]];
        if let Some(e) = r.epi {
            for x in &mut v {
                *x = chain(kb, e.acts, e.bias, *x, F32X4);
            }
        }
        let store_row = |kb: &mut Kb| {
            let t = tf::transpose(kb, v);
            for (k, &row) in t.iter().enumerate().take(3) {
                let at = kb.b.ins().iadd_imm_s(yi, 4 * k as i64);
                kb.st(row, r.yb, at);
            }
            let whole = |kb: &mut Kb| {
                let at = kb.b.ins().iadd_imm_s(yi, 12);
                kb.st(t[3], r.yb, at);
                vec![]
            };
            match s.clipped {
                Some(c) => {
                    let ending = |kb: &mut Kb| {
                        let last = kb.shuffle(t[2], t[3], joined(s.cols));
                        let at = kb.b.ins().iadd_imm_s(yi, 8 + s.cols as i64);
                        kb.st(last, r.yb, at);
                        vec![]
                    };
                    when(kb, c, &[], ending, whole);
                }
                None => {
                    whole(kb);
                }
            }
            vec![]
        };
        match row_exists(kb, s, i) {
            Some(c) => {
                when(kb, c, &[], store_row, |_| vec![]);
            }
            None => {
                store_row(kb);
            }
        }
    }
}

/// [`output_tile4`], then the 2×2 max pooling of stride 2 of each tile's outputs: row `pi` of
/// a tile's 2×2 pooled values where its rows `2pi`, `2pi + 1` exist, column `pj` where its
/// columns `2pj`, `2pj + 1` do (the pooling drops an odd last row or column). Each maximum is
/// [`pool::max4`] of the window's taps in the pooling kernel's order, as that kernel computes
/// it on rows of four or more (F(4×4) rows have at least 13 outputs, 6 pooled): the same bits.
/// A pooled row of the four tiles is the interleave of their two pooled columns, stored as two
/// f32x4 (the row's last ones joined to end at the row's end, as [`output_tile4`] does).
fn pooled_tile4(kb: &mut Kb, g: &WinoGeom, r: &Row, s: &Step) {
    let y = untransform(kb, g, r, s);
    let pw = g.ow / 2;
    let y: Vec<Vec<Value>> = y
        .into_iter()
        .map(|row| match r.epi {
            Some(e) => row
                .into_iter()
                .map(|x| chain(kb, e.acts, e.bias, x, F32X4))
                .collect(),
            None => row,
        })
        .collect();
    let tx2 = kb.b.ins().imul_imm_s(s.tx, 2);
    // Pooled values in the group's last tile, and in the whole group of four.
    let last = s.cols / 2;
    for pi in 0..2 {
        let p: Vec<Value> = (0..2)
            .map(|pj| {
                let (a, b) = (&y[2 * pi], &y[2 * pi + 1]);
                pool::max4(kb, [a[2 * pj], a[2 * pj + 1], b[2 * pj], b[2 * pj + 1]])
            })
            .collect();
        let yi = kb.b.ins().iadd_imm_s(s.yrow, (pi * pw) as i64);
        let yi = kb.b.ins().iadd(yi, tx2);
        let store_row = |kb: &mut Kb| {
            let lo = kb.shuffle(p[0], p[1], [0, 4, 1, 5]);
            let hi = kb.shuffle(p[0], p[1], [2, 6, 3, 7]);
            kb.st(lo, r.yb, yi);
            let whole = |kb: &mut Kb| {
                let at = kb.b.ins().iadd_imm_s(yi, 4);
                kb.st(hi, r.yb, at);
                vec![]
            };
            match s.clipped.filter(|_| last < 2) {
                Some(c) => {
                    // 6 + last pooled values: the last four end at 2 + last.
                    let ending = |kb: &mut Kb| {
                        let v = kb.shuffle(lo, hi, joined(2 + last));
                        let at = kb.b.ins().iadd_imm_s(yi, 2 + last as i64);
                        kb.st(v, r.yb, at);
                        vec![]
                    };
                    when(kb, c, &[], ending, whole);
                }
                None => {
                    whole(kb);
                }
            }
            vec![]
        };
        match row_exists(kb, s, 2 * pi + 1) {
            Some(c) => {
                when(kb, c, &[], store_row, |_| vec![]);
            }
            None => {
                store_row(kb);
            }
        }
    }
}

/// The `dy` transform of `batch` images for the weight gradient (table: `dy`, `E`, row length
/// `T` of `E`): `E[ξ][o][t] = (A e Aᵀ)[ξ]` for the m×m block `e` of `dy` under tile `t`, zero
/// beyond the last row and column.
pub(super) fn dy_tiles(kb: &mut Kb, g: &WinoGeom) {
    let (yb, eb, t_all) = (kb.ptr(0), kb.ptr(1), kb.ptr(2));
    let chans = (kb.int(0), kb.int(g.cout as i64));
    let tile: TileFn = if g.m == 2 { dy_tile } else { dy_tile4 };
    each_output_tile(kb, g, (eb, yb, t_all), chans, (None, false), tile);
}

/// `E = A e Aᵀ` of the block(s) `e` (rows of columns) of `s`, stored into `E` at `r.mb`.
fn transform_dy(kb: &mut Kb, g: &WinoGeom, r: &Row, s: &Step, e: &[Vec<Value>]) {
    let side = g.a();
    let er: Vec<Vec<Value>> = e.iter().map(|x| tf::a(kb, x)).collect();
    let mt = kb.b.ins().iadd(s.mrow, s.tx);
    for q in 0..side {
        let col = tf::a(kb, &tf::column(&er, q));
        for (p, &val) in col.iter().enumerate() {
            let off = kb.b.ins().imul_imm_s(r.plane, (p * side + q) as i64);
            let idx = kb.b.ins().iadd(off, mt);
            kb.st(val, r.mb, idx);
        }
    }
}

/// The F(2×2, 3×3) `dy` tile(s) of `s` (four with f32x4 lanes) from `rows × cols` values of
/// `dy` at `r.yb` (the rest zero), into `E` at `r.mb`.
fn dy_tile(kb: &mut Kb, g: &WinoGeom, r: &Row, s: &Step) {
    let lane = s.lane;
    let tx2 = kb.b.ins().iadd(s.tx, s.tx);
    let z = kb.cst(lane, 0.0);
    // e[i] = (e[i][0], e[i][1]).
    let e: Vec<Vec<Value>> = (0..2)
        .map(|i| {
            if i >= s.rows {
                return vec![z, z];
            }
            let yi = kb.b.ins().iadd_imm_s(s.yrow, (i * g.ow) as i64);
            let yi = kb.b.ins().iadd(yi, tx2);
            if lane == F32X4 {
                let l0 = kb.ld(F32X4, r.yb, yi);
                let yi4 = kb.b.ins().iadd_imm_s(yi, 4);
                let l1 = kb.ld(F32X4, r.yb, yi4);
                vec![
                    kb.shuffle(l0, l1, [0, 2, 4, 6]),
                    kb.shuffle(l0, l1, [1, 3, 5, 7]),
                ]
            } else {
                let e0 = kb.ld(F32, r.yb, yi);
                let e1 = if s.cols == 2 {
                    let yi1 = kb.b.ins().iadd_imm_s(yi, 1);
                    kb.ld(F32, r.yb, yi1)
                } else {
                    z
                };
                vec![e0, e1]
            }
        })
        .collect();
    transform_dy(kb, g, r, s, &e);
}

/// The four F(4×4, 3×3) `dy` tiles of `s` (zero in the rows that do not exist): each row of the
/// tiles is the transpose of one f32x4 per tile. The row's clipped last tile is loaded as the
/// four values ending the row, moved to the front, zeros after them.
fn dy_tile4(kb: &mut Kb, g: &WinoGeom, r: &Row, s: &Step) {
    let tx4 = kb.b.ins().imul_imm_s(s.tx, 4);
    let z = kb.cst(F32X4, 0.0);
    let cols = s.cols;
    let e: Vec<Vec<Value>> = (0..4)
        .map(|i| {
            let yi = kb.b.ins().iadd_imm_s(s.yrow, (i * g.ow) as i64);
            let yi = kb.b.ins().iadd(yi, tx4);
            let ld = |kb: &mut Kb, at: i64| {
                let at = kb.b.ins().iadd_imm_s(yi, at);
                kb.ld(F32X4, r.yb, at)
            };
            let load_row = |kb: &mut Kb| {
                let q: Vec<Value> = (0..3).map(|k| ld(kb, 4 * k)).collect();
                let q3 = match s.clipped {
                    Some(c) => {
                        let ending = |kb: &mut Kb| {
                            let v = ld(kb, 8 + cols as i64);
                            let lanes = std::array::from_fn(|l| {
                                if l < cols {
                                    (4 - cols + l) as u8
                                } else {
                                    4
                                }
                            });
                            vec![kb.shuffle(v, z, lanes)]
                        };
                        when(kb, c, &[F32X4], ending, |kb| vec![ld(kb, 12)])[0]
                    }
                    None => ld(kb, 12),
                };
                tf::transpose(kb, [q[0], q[1], q[2], q3]).to_vec()
            };
            match row_exists(kb, s, i) {
                Some(c) => when(kb, c, &[F32X4; 4], load_row, |_| vec![z; 4]),
                None => load_row(kb),
            }
        })
        .collect();
    transform_dy(kb, g, r, s, &e);
}
