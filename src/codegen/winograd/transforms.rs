//! The one-dimensional transforms of F(2, 3) and F(4, 3) (Lavin and Gray, 2016; points 0, ±1,
//! ∞ and 0, ±1, ±2, ∞), each applied to the values of one row or one column of a tile: a
//! tile's transform is the 1-D one on each of its rows, then on each column of the result.
//!
//! ```text
//! F(2, 3)             F(4, 3)
//! Bᵀ = 1  0 −1  0      Bᵀ = 4  0 −5  0  1  0      G = 1/4    0     0      Aᵀ = 1 1  1 1  1 0
//!      0  1  1  0           0 −4 −4  1  1  0         −1/6  −1/6  −1/6          0 1 −1 2 −2 0
//!      0 −1  1  0           0  4 −4 −1  1  0         −1/6   1/6  −1/6          0 1  1 4  4 0
//!      0  1  0 −1           0 −2 −1  2  1  0          1/24  1/12  1/6          0 1 −1 8 −8 1
//!                           0  2 −1 −2  1  0          1/24 −1/12  1/6
//! G = 1    0   0            0  4  0 −5  0  1          0     0     1
//!     1/2  1/2 1/2
//!     1/2 −1/2 1/2    Aᵀ = 1 1  1  0
//!     0    0   1           0 1 −1 −1
//! ```
//!
//! Each is written factored, sharing the sums its rows have in common (F(4, 3)'s `Bᵀ` in 12
//! operations instead of 20). The values are f32 or f32x4 (four tiles side by side); the
//! F(2, 3) forms are those the convolutions have always computed, so their bits are unchanged.

use cranelift_codegen::ir::{InstBuilder, Value};

use crate::codegen::kernel::Kb;

/// `x · c` for a constant `c` of `x`'s type.
fn mul(kb: &mut Kb, x: Value, c: f32) -> Value {
    let k = kb.cst(kb.b.func.dfg.value_type(x), c);
    kb.b.ins().fmul(x, k)
}

/// `x · c + y` for a constant `c`, rounded once.
fn fma(kb: &mut Kb, x: Value, c: f32, y: Value) -> Value {
    let k = kb.cst(kb.b.func.dfg.value_type(x), c);
    kb.b.ins().fma(x, k, y)
}

fn add(kb: &mut Kb, x: Value, y: Value) -> Value {
    kb.b.ins().fadd(x, y)
}

fn sub(kb: &mut Kb, x: Value, y: Value) -> Value {
    kb.b.ins().fsub(x, y)
}

/// `Bᵀ x`: a row (or column) of an input tile, 4 or 6 values.
pub fn bt(kb: &mut Kb, x: &[Value]) -> Vec<Value> {
    match *x {
        [x0, x1, x2, x3] => vec![
            sub(kb, x0, x2),
            add(kb, x1, x2),
            sub(kb, x2, x1),
            sub(kb, x1, x3),
        ],
        [x0, x1, x2, x3, x4, x5] => {
            let t0 = fma(kb, x2, -4.0, x4);
            let t1 = fma(kb, x1, -4.0, x3);
            let t2 = sub(kb, x4, x2);
            let d = sub(kb, x3, x1);
            let t3 = add(kb, d, d);
            let r0 = fma(kb, x2, -5.0, x4);
            let r5 = fma(kb, x3, -5.0, x5);
            vec![
                fma(kb, x0, 4.0, r0),
                add(kb, t0, t1),
                sub(kb, t0, t1),
                add(kb, t2, t3),
                sub(kb, t2, t3),
                fma(kb, x1, 4.0, r5),
            ]
        }
        _ => unreachable!("a tile side is 4 or 6"),
    }
}

/// `Aᵀ x`: the outputs (2 or 4) of a row (or column) of a transformed tile (4 or 6 values).
pub fn at(kb: &mut Kb, x: &[Value]) -> Vec<Value> {
    match *x {
        [x0, x1, x2, x3] => {
            let s = add(kb, x0, x1);
            let d = sub(kb, x1, x2);
            vec![add(kb, s, x2), sub(kb, d, x3)]
        }
        [x0, x1, x2, x3, x4, x5] => {
            let (s12, d12) = (add(kb, x1, x2), sub(kb, x1, x2));
            let (s34, d34) = (add(kb, x3, x4), sub(kb, x3, x4));
            let y0 = add(kb, x0, s12);
            let y3 = fma(kb, d34, 8.0, d12);
            vec![
                add(kb, y0, s34),
                fma(kb, d34, 2.0, d12),
                fma(kb, s34, 4.0, s12),
                add(kb, y3, x5),
            ]
        }
        _ => unreachable!("a tile side is 4 or 6"),
    }
}

/// `G x`: a row (or column) of a 3×3 kernel, transformed for tiles of `m` outputs a side.
pub fn g(kb: &mut Kb, m: usize, [x0, x1, x2]: [Value; 3]) -> Vec<Value> {
    let s = add(kb, x0, x2);
    let (p, n) = (add(kb, s, x1), sub(kb, s, x1));
    if m == 2 {
        return vec![x0, mul(kb, p, 0.5), mul(kb, n, 0.5), x2];
    }
    let x2_6 = mul(kb, x2, 1.0 / 6.0);
    let e = fma(kb, x0, 1.0 / 24.0, x2_6);
    let o = mul(kb, x1, 1.0 / 12.0);
    vec![
        mul(kb, x0, 0.25),
        mul(kb, p, -1.0 / 6.0),
        mul(kb, n, -1.0 / 6.0),
        add(kb, e, o),
        sub(kb, e, o),
        x2,
    ]
}

/// `Gᵀ x`: a row (or column) of a transformed kernel gradient (4 or 6 values) back to 3.
pub fn gt(kb: &mut Kb, x: &[Value]) -> [Value; 3] {
    match *x {
        [x0, x1, x2, x3] => {
            let s = add(kb, x1, x2);
            let s = mul(kb, s, 0.5);
            let d = sub(kb, x1, x2);
            [add(kb, x0, s), mul(kb, d, 0.5), add(kb, s, x3)]
        }
        [x0, x1, x2, x3, x4, x5] => {
            let (s12, s34) = (add(kb, x1, x2), add(kb, x3, x4));
            let q = mul(kb, x0, 0.25);
            let w0 = fma(kb, s12, -1.0 / 6.0, q);
            let d21 = sub(kb, x2, x1);
            let w1 = mul(kb, d21, 1.0 / 6.0);
            let d34 = sub(kb, x3, x4);
            let s = sub(kb, s34, s12);
            [
                fma(kb, s34, 1.0 / 24.0, w0),
                fma(kb, d34, 1.0 / 12.0, w1),
                fma(kb, s, 1.0 / 6.0, x5),
            ]
        }
        _ => unreachable!("a tile side is 4 or 6"),
    }
}

/// `A x`: a row (or column) of a block of output gradients (2 or 4 values) into a tile's
/// (4 or 6), the adjoint of [`at`].
pub fn a(kb: &mut Kb, x: &[Value]) -> Vec<Value> {
    match *x {
        [x0, x1] => vec![x0, add(kb, x0, x1), sub(kb, x0, x1), kb.b.ins().fneg(x1)],
        [x0, x1, x2, x3] => {
            let (s, d) = (add(kb, x0, x2), add(kb, x1, x3));
            let s4 = fma(kb, x2, 4.0, x0);
            let x1_2 = add(kb, x1, x1);
            let d8 = fma(kb, x3, 8.0, x1_2);
            vec![
                x0,
                add(kb, s, d),
                sub(kb, s, d),
                add(kb, s4, d8),
                sub(kb, s4, d8),
                x3,
            ]
        }
        _ => unreachable!("a block side is 2 or 4"),
    }
}

/// Column `j` of a small matrix of values kept as rows.
pub fn column(rows: &[Vec<Value>], j: usize) -> Vec<Value> {
    rows.iter().map(|r| r[j]).collect()
}

/// The 4×4 transpose of four f32x4: lane `k` of result `j` is lane `j` of `q[k]` (unpack low
/// and high, then move low and high halves: eight shuffles).
pub fn transpose(kb: &mut Kb, q: [Value; 4]) -> [Value; 4] {
    let t0 = kb.shuffle(q[0], q[1], [0, 4, 1, 5]);
    let t1 = kb.shuffle(q[0], q[1], [2, 6, 3, 7]);
    let t2 = kb.shuffle(q[2], q[3], [0, 4, 1, 5]);
    let t3 = kb.shuffle(q[2], q[3], [2, 6, 3, 7]);
    [
        kb.shuffle(t0, t2, [0, 1, 4, 5]),
        kb.shuffle(t0, t2, [2, 3, 6, 7]),
        kb.shuffle(t1, t3, [0, 1, 4, 5]),
        kb.shuffle(t1, t3, [2, 3, 6, 7]),
    ]
}
