//! The weight transform `U = G g Gᵀ` and its adjoint for the weight gradient, `dw = Gᵀ dU G`.

use super::{mul_add, transforms as tf, WinoGeom, SKEW};
use crate::codegen::kernel::{Kb, F32};
use cranelift_codegen::ir::{InstBuilder, Value};

/// The weight transform: `U[ξ][c][o] = (G g Gᵀ)[ξ]` for every kernel of `w` (slot `w_slot`,
/// `[O, C, 3, 3]`), into slot `u_slot`. With `rotate` (the input gradient) `w` is
/// `[cin, cout, 3, 3]` and `g` is its kernel rotated by 180°.
pub(super) fn weights(kb: &mut Kb, g: &WinoGeom, rotate: bool, w_slot: usize, u_slot: usize) {
    let (wp, up) = (kb.ptr(w_slot), kb.ptr(u_slot));
    let (rows, cols) = if rotate {
        (g.cin, g.cout)
    } else {
        (g.cout, g.cin)
    };
    let (side, plane) = (g.a(), g.cout * g.cin + SKEW);
    kb.for_n(rows, |kb, r| {
        kb.for_n(cols, |kb, c| {
            let base = mul_add(kb, r, cols, c);
            let base = kb.b.ins().imul_imm_s(base, 9);
            let k: Vec<Value> = (0..9)
                .map(|e| {
                    let e = if rotate { 8 - e } else { e };
                    let i = kb.b.ins().iadd_imm_s(base, e as i64);
                    kb.ld(F32, wp, i)
                })
                .collect();
            // Columns of G g, then G applied to each of its rows.
            let cols3: Vec<Vec<Value>> = (0..3)
                .map(|j| tf::g(kb, g.m, [k[j], k[3 + j], k[6 + j]]))
                .collect();
            let (o_idx, c_idx) = if rotate { (c, r) } else { (r, c) };
            let uidx = mul_add(kb, c_idx, g.cout, o_idx);
            for i in 0..side {
                let col = tf::column(&cols3, i);
                let row = tf::g(kb, g.m, [col[0], col[1], col[2]]);
                for (j, &val) in row.iter().enumerate() {
                    let idx = kb.b.ins().iadd_imm_s(uidx, ((i * side + j) * plane) as i64);
                    kb.st(val, up, idx);
                }
            }
        })
    });
}

/// The weight gradient from its transform: `dw[o][c] = Gᵀ dU[·][o][c] G` (3×3), `dU` in slot
/// `du_slot` (`ξ` planes of `O×C`, [`SKEW`] apart), `dw` (`[O, C, 3, 3]`) in `dw_slot`.
pub(super) fn weight_grads(kb: &mut Kb, g: &WinoGeom, du_slot: usize, dw_slot: usize) {
    let (dp, wp) = (kb.ptr(du_slot), kb.ptr(dw_slot));
    let (side, plane) = (g.a(), g.cout * g.cin + SKEW);
    let all = g.planes() * plane;
    // dU of the first run += that of each other run, in order (the kernel's batch argument
    // is the number of runs).
    let (one, runs) = (kb.int(1), kb.batch);
    kb.for_range(one, runs, |kb, r| {
        let at = kb.b.ins().imul_imm_s(r, all as i64);
        let (lo, hi) = (kb.int(0), kb.int(all as i64));
        kb.vec_loop(lo, hi, |kb, i, lane| {
            let j = kb.b.ins().iadd(at, i);
            let (sum, part) = (kb.ld_rw(lane, dp, i), kb.ld_rw(lane, dp, j));
            let sum = kb.b.ins().fadd(sum, part);
            kb.st(sum, dp, i);
        });
    });
    kb.for_n(g.cout * g.cin, |kb, oc| {
        let x: Vec<Value> = (0..g.planes())
            .map(|xi| {
                let i = kb.b.ins().iadd_imm_s(oc, (xi * plane) as i64);
                kb.ld(F32, dp, i)
            })
            .collect();
        let rows: Vec<Vec<Value>> = x.chunks(side).map(|p| tf::gt(kb, p).to_vec()).collect();
        let base = kb.b.ins().imul_imm_s(oc, 9);
        for v in 0..3 {
            let col = tf::gt(kb, &tf::column(&rows, v));
            for (u, &val) in col.iter().enumerate() {
                let i = kb.b.ins().iadd_imm_s(base, (3 * u + v) as i64);
                kb.st(val, wp, i);
            }
        }
    });
}
