//! The reference interpreter against values worked out by hand (or by an independent naive
//! formula written here), op by op; gradient ops are also checked through adjoint identities
//! ⟨f(x), dy⟩ = ⟨x, fᵀ(dy)⟩ for the linear ones.

use nnc::exec::{ExecError, Executor, Feed, StepCtx};
use nnc::interp::{eval, Interpreter};
use nnc::ir::{dropout_keep, BinaryOp, Graph, Op, Type, UnaryOp, Window};

fn f(batched: bool, dims: &[usize]) -> Type {
    Type::f32(batched, dims.to_vec())
}

fn ids(batched: bool, dims: &[usize]) -> Type {
    Type::i32(batched, dims.to_vec())
}

/// Applies `op` to inputs (type, value); `ty` is the result type for ops that need it given.
fn apply_typed(
    op: Op,
    args: &[(Type, Vec<f64>)],
    ty: Option<Type>,
    batch: usize,
) -> Result<Vec<f64>, String> {
    let mut g = Graph::new("t", true);
    let ins: Vec<_> = args
        .iter()
        .enumerate()
        .map(|(i, (t, _))| g.input(&format!("in{i}"), t.clone()))
        .collect();
    let v = match ty {
        Some(t) => g.push_typed(op, ins, t, ""),
        None => g.push(op, ins, "")?,
    };
    g.set_output("out", v);
    let vals: Vec<Vec<f64>> = args.iter().map(|a| a.1.clone()).collect();
    Ok(eval(
        &g,
        batch,
        &vals,
        &[],
        StepCtx {
            seed: 7,
            step: 3,
            first: 0,
        },
    )?[v.index()]
    .clone())
}

fn apply(op: Op, args: &[(Type, Vec<f64>)], batch: usize) -> Vec<f64> {
    apply_typed(op, args, None, batch).unwrap()
}

fn close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
            "element {i}: got {a}, want {b} ({got:?})"
        );
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A deterministic non-trivial test vector.
fn vals(n: usize, seed: u64) -> Vec<f64> {
    (0..n)
        .map(|i| (((i as u64 * 2654435761 + seed * 40503) % 1000) as f64) / 500.0 - 1.0)
        .collect()
}

#[test]
fn unary_ops() {
    let x = vec![-1.0, 0.5, 2.0];
    let t = f(true, &[3]);
    let arg = [(t.clone(), x.clone())];
    close(&apply(Op::Unary(UnaryOp::Neg), &arg, 1), &[1.0, -0.5, -2.0]);
    close(&apply(Op::Unary(UnaryOp::Relu), &arg, 1), &[0.0, 0.5, 2.0]);
    let sig: Vec<f64> = x.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect();
    close(&apply(Op::Unary(UnaryOp::Sigmoid), &arg, 1), &sig);
    close(
        &apply(Op::Unary(UnaryOp::Tanh), &arg, 1),
        &x.iter().map(|v| v.tanh()).collect::<Vec<_>>(),
    );
    close(
        &apply(Op::Unary(UnaryOp::Exp), &arg, 1),
        &x.iter().map(|v| v.exp()).collect::<Vec<_>>(),
    );
    close(
        &apply(Op::Unary(UnaryOp::Log), &[(t, vec![1.0, 0.5, 4.0])], 1),
        &[0.0, -(2f64.ln()), 4f64.ln()],
    );
}

#[test]
fn binary_ops_and_scalar_broadcast() {
    let t = f(true, &[2]);
    let a = (t.clone(), vec![6.0, -2.0]);
    let b = (t.clone(), vec![3.0, 4.0]);
    let s = (Type::scalar(), vec![2.0]);
    close(
        &apply(Op::Binary(BinaryOp::Add), &[a.clone(), b.clone()], 1),
        &[9.0, 2.0],
    );
    close(
        &apply(Op::Binary(BinaryOp::Sub), &[a.clone(), b.clone()], 1),
        &[3.0, -6.0],
    );
    close(
        &apply(Op::Binary(BinaryOp::Mul), &[a.clone(), b.clone()], 1),
        &[18.0, -8.0],
    );
    close(
        &apply(Op::Binary(BinaryOp::Div), &[a.clone(), b], 1),
        &[2.0, -0.5],
    );
    close(
        &apply(Op::Binary(BinaryOp::Sub), &[a.clone(), s.clone()], 1),
        &[4.0, -4.0],
    );
    close(
        &apply(Op::Binary(BinaryOp::Div), &[s, a], 1),
        &[1.0 / 3.0, -1.0],
    );
}

#[test]
fn unary_grads() {
    let t = f(false, &[2]);
    let dy = (t.clone(), vec![2.0, 3.0]);
    let v = (t.clone(), vec![0.5, -0.25]);
    let g = |u| apply(Op::UnaryGrad(u), &[v.clone(), dy.clone()], 1);
    close(&g(UnaryOp::Neg), &[-2.0, -3.0]);
    close(&g(UnaryOp::Relu), &[2.0, 0.0]);
    close(&g(UnaryOp::Sigmoid), &[2.0 * 0.25, 3.0 * -0.25 * 1.25]);
    close(&g(UnaryOp::Tanh), &[2.0 * 0.75, 3.0 * (1.0 - 0.0625)]);
    close(&g(UnaryOp::Exp), &[1.0, -0.75]);
    close(&g(UnaryOp::Log), &[4.0, -12.0]);
}

#[test]
fn matmul_plain_and_transposed() {
    // a = [[1,2,3],[4,5,6]] (a batch of 2 rows), w = [[1,0],[0,1],[1,1]].
    let a = (f(true, &[3]), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let w = (f(false, &[3, 2]), vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    close(
        &apply(
            Op::MatMul {
                ta: false,
                tb: false,
            },
            &[a.clone(), w],
            2,
        ),
        &[4.0, 5.0, 10.0, 11.0],
    );
    // tb: w stored as [N, K] = [[1,0,1],[0,1,1]].
    let wt = (f(false, &[2, 3]), vec![1.0, 0.0, 1.0, 0.0, 1.0, 1.0]);
    close(
        &apply(
            Op::MatMul {
                ta: false,
                tb: true,
            },
            &[a, wt],
            2,
        ),
        &[4.0, 5.0, 10.0, 11.0],
    );
    // ta: aᵀ·b over the batch rows: a = [[1,2],[3,4]], b = [[1,0,2],[0,1,1]].
    let a = (f(true, &[2]), vec![1.0, 2.0, 3.0, 4.0]);
    let b = (f(true, &[3]), vec![1.0, 0.0, 2.0, 0.0, 1.0, 1.0]);
    close(
        &apply(
            Op::MatMul {
                ta: true,
                tb: false,
            },
            &[a, b],
            2,
        ),
        &[1.0, 3.0, 5.0, 2.0, 4.0, 8.0],
    );
}

#[test]
fn matmul_flattens_leading_dims() {
    // B×T×K with B=2, T=2, K=2 against [2, 1]: every row of 2 is dotted with [1, 10].
    let x = (
        f(true, &[2, 2]),
        vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
    );
    let w = (f(false, &[2, 1]), vec![1.0, 10.0]);
    close(
        &apply(
            Op::MatMul {
                ta: false,
                tb: false,
            },
            &[x.clone(), w],
            2,
        ),
        &[21.0, 43.0, 65.0, 87.0],
    );
    // ta over B×T rows: xᵀ·x is the 2×2 Gram matrix of the columns.
    let g = apply(
        Op::MatMul {
            ta: true,
            tb: false,
        },
        &[x.clone(), x],
        2,
    );
    close(
        &g,
        &[
            1.0 + 9.0 + 25.0 + 49.0,
            2.0 + 12.0 + 30.0 + 56.0,
            2.0 + 12.0 + 30.0 + 56.0,
            4.0 + 16.0 + 36.0 + 64.0,
        ],
    );
}

#[test]
fn bias_add_and_grad_along_an_axis() {
    // x: B×2×2 (B=2) zeros, bias on axis 1 = channels.
    let x = (f(true, &[2, 2]), vec![0.0; 8]);
    let b = (f(false, &[2]), vec![1.0, 2.0]);
    close(
        &apply(Op::BiasAdd { axis: 1 }, &[x.clone(), b.clone()], 2),
        &[1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0],
    );
    close(
        &apply(Op::BiasAdd { axis: 2 }, &[x, b], 2),
        &[1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0],
    );
    let dy = (
        f(true, &[2, 2]),
        vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
    );
    close(
        &apply(Op::BiasGrad { axis: 1 }, std::slice::from_ref(&dy), 2),
        &[1.0 + 2.0 + 5.0 + 6.0, 3.0 + 4.0 + 7.0 + 8.0],
    );
    close(
        &apply(Op::BiasGrad { axis: 2 }, &[dy], 2),
        &[1.0 + 3.0 + 5.0 + 7.0, 2.0 + 4.0 + 6.0 + 8.0],
    );
}

/// Naive convolution written independently: loops over padded coordinates as signed integers.
fn naive_conv(
    x: &[f64],
    (b, c, h, w): (usize, usize, usize, usize),
    k: &[f64],
    o: usize,
    win: Window,
) -> Vec<f64> {
    let kk = win.kernel;
    let oh = (h + 2 * win.pad - kk) / win.stride + 1;
    let ow = (w + 2 * win.pad - kk) / win.stride + 1;
    let mut y = Vec::new();
    for bi in 0..b {
        for oi in 0..o {
            for i in 0..oh {
                for j in 0..ow {
                    let mut s = 0.0;
                    for ci in 0..c {
                        for a in 0..kk {
                            for d in 0..kk {
                                let r = (i * win.stride + a) as i64 - win.pad as i64;
                                let q = (j * win.stride + d) as i64 - win.pad as i64;
                                if r >= 0 && q >= 0 && (r as usize) < h && (q as usize) < w {
                                    s += x[((bi * c + ci) * h + r as usize) * w + q as usize]
                                        * k[((oi * c + ci) * kk + a) * kk + d];
                                }
                            }
                        }
                    }
                    y.push(s);
                }
            }
        }
    }
    y
}

#[test]
fn conv2d_by_hand() {
    // 3×3 image 1..9, kernel [[1,0],[0,1]]: y[i,j] = x[i,j] + x[i+1,j+1].
    let x = (f(true, &[1, 3, 3]), (1..=9).map(|v| v as f64).collect());
    let k = (f(false, &[1, 1, 2, 2]), vec![1.0, 0.0, 0.0, 1.0]);
    let w = Window {
        kernel: 2,
        stride: 1,
        pad: 0,
    };
    close(&apply(Op::Conv2d(w), &[x, k], 1), &[6.0, 8.0, 12.0, 14.0]);
}

#[test]
fn conv2d_and_its_gradients_padded_strided() {
    for win in [
        Window {
            kernel: 3,
            stride: 1,
            pad: 1,
        },
        Window {
            kernel: 3,
            stride: 2,
            pad: 1,
        },
        Window {
            kernel: 2,
            stride: 2,
            pad: 0,
        },
    ] {
        let (b, c, h, w, o) = (2, 2, 5, 4, 3);
        let xv = vals(b * c * h * w, 1);
        let kv = vals(o * c * 9, 2)[..o * c * win.kernel * win.kernel].to_vec();
        let xt = f(true, &[c, h, w]);
        let kt = f(false, &[o, c, win.kernel, win.kernel]);
        let y = apply(
            Op::Conv2d(win),
            &[(xt.clone(), xv.clone()), (kt.clone(), kv.clone())],
            b,
        );
        close(&y, &naive_conv(&xv, (b, c, h, w), &kv, o, win));
        let (oh, ow) = (win.out_len(h).unwrap(), win.out_len(w).unwrap());
        let yt = f(true, &[o, oh, ow]);
        let dy = vals(y.len(), 3);
        let dx = apply_typed(
            Op::Conv2dGradInput(win),
            &[(yt.clone(), dy.clone()), (kt, kv.clone())],
            Some(xt.clone()),
            b,
        )
        .unwrap();
        let dw = apply(
            Op::Conv2dGradWeight(win),
            &[(xt, xv.clone()), (yt, dy.clone())],
            b,
        );
        let lhs = dot(&y, &dy);
        assert!(
            (lhs - dot(&xv, &dx)).abs() < 1e-9,
            "conv2d_grad_input is not the adjoint"
        );
        assert!(
            (lhs - dot(&kv, &dw)).abs() < 1e-9,
            "conv2d_grad_weight is not the adjoint"
        );
    }
}

#[test]
fn maxpool_by_hand_with_first_maximum() {
    #[rustfmt::skip]
    let x = vec![
        1.0, 3.0, 2.0, 2.0,
        3.0, 0.0, 1.0, 0.0,
        5.0, 6.0, 7.0, 7.0,
        6.0, 4.0, 7.0, 7.0,
    ];
    let xt = f(true, &[1, 4, 4]);
    let win = Window {
        kernel: 2,
        stride: 2,
        pad: 0,
    };
    close(
        &apply(Op::MaxPool(win), &[(xt.clone(), x.clone())], 1),
        &[3.0, 2.0, 6.0, 7.0],
    );
    let dy = (f(true, &[1, 2, 2]), vec![1.0, 2.0, 3.0, 4.0]);
    #[rustfmt::skip]
    let want = [
        0.0, 1.0, 2.0, 0.0,
        0.0, 0.0, 0.0, 0.0,
        0.0, 3.0, 4.0, 0.0,
        0.0, 0.0, 0.0, 0.0,
    ];
    close(&apply(Op::MaxPoolGrad(win), &[(xt, x), dy], 1), &want);
}

/// Global max pooling routes the gradient as `maxpool` does with a window of the whole map: to
/// the first maximum in row-major order (the first of tied ones); global average pooling
/// spreads dy/(H·W).
#[test]
fn global_pooling_by_hand_with_first_maximum() {
    #[rustfmt::skip]
    let x = vec![
        // channel 0: the maximum 7 twice, at (1, 0) and (1, 2)
        1.0, 3.0, 2.0,
        7.0, 0.0, 7.0,
        // channel 1: all equal
        -2.0, -2.0, -2.0,
        -2.0, -2.0, -2.0,
    ];
    let xt = f(true, &[2, 2, 3]);
    close(
        &apply(Op::GlobalMaxPool, &[(xt.clone(), x.clone())], 1),
        &[7.0, -2.0],
    );
    let dy = (f(true, &[2]), vec![10.0, 20.0]);
    #[rustfmt::skip]
    let want = [
        0.0, 0.0, 0.0,
        10.0, 0.0, 0.0,
        20.0, 0.0, 0.0,
        0.0, 0.0, 0.0,
    ];
    close(
        &apply(
            Op::GlobalMaxPoolGrad,
            &[(xt.clone(), x.clone()), dy.clone()],
            1,
        ),
        &want,
    );
    // The same as maxpool with a window of the whole (square) map.
    let sq = f(true, &[1, 3, 3]);
    let xs = vec![4.0, 9.0, 1.0, 9.0, 0.0, 9.0, 2.0, 3.0, 9.0];
    let win = Window {
        kernel: 3,
        stride: 3,
        pad: 0,
    };
    let d1 = (f(true, &[1]), vec![5.0]);
    let d2 = (f(true, &[1, 1, 1]), vec![5.0]);
    close(
        &apply(Op::GlobalMaxPoolGrad, &[(sq.clone(), xs.clone()), d1], 1),
        &apply(Op::MaxPoolGrad(win), &[(sq.clone(), xs.clone()), d2], 1),
    );
    close(
        &apply(Op::GlobalAvgPool, &[(xt.clone(), x.clone())], 1),
        &[20.0 / 6.0, -2.0],
    );
    let dx = apply_typed(Op::GlobalAvgPoolGrad, &[dy], Some(xt), 1).unwrap();
    close(&dx, &[&[10.0 / 6.0; 6][..], &[20.0 / 6.0; 6][..]].concat());
}

#[test]
fn maxpool_padding_never_wins() {
    // All-negative image, k=2 s=2 p=1: each window holds one real element.
    let x = (f(true, &[1, 2, 2]), vec![-1.0, -2.0, -3.0, -4.0]);
    let win = Window {
        kernel: 2,
        stride: 2,
        pad: 1,
    };
    close(&apply(Op::MaxPool(win), &[x], 1), &[-1.0, -2.0, -3.0, -4.0]);
}

#[test]
fn avgpool_counts_padding_in_divisor() {
    let x = (f(true, &[1, 2, 2]), vec![1.0, 2.0, 3.0, 4.0]);
    let win = Window {
        kernel: 2,
        stride: 1,
        pad: 1,
    };
    let want = [0.25, 0.75, 0.5, 1.0, 2.5, 1.5, 0.75, 1.75, 1.0];
    close(&apply(Op::AvgPool(win), std::slice::from_ref(&x), 1), &want);
    // Adjoint identity for avgpool_grad.
    let dy = vals(9, 4);
    let dx = apply_typed(
        Op::AvgPoolGrad(win),
        &[(f(true, &[1, 3, 3]), dy.clone())],
        Some(x.0.clone()),
        1,
    )
    .unwrap();
    assert!((dot(&want, &dy) - dot(&x.1, &dx)).abs() < 1e-12);
}

#[test]
fn reshape_keeps_elements() {
    let x = (
        f(true, &[2, 2]),
        vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
    );
    let y = apply_typed(
        Op::Reshape,
        std::slice::from_ref(&x),
        Some(f(true, &[4])),
        2,
    )
    .unwrap();
    close(&y, &x.1);
}

#[test]
fn embedding_one_hot_and_grad() {
    let table = (f(false, &[3, 2]), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let tok = (ids(true, &[2]), vec![2.0, 0.0, 1.0, 1.0]);
    close(
        &apply(Op::Embedding, &[tok.clone(), table.clone()], 2),
        &[5.0, 6.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0],
    );
    let dy = (
        f(true, &[2, 2]),
        vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0],
    );
    let dw = apply_typed(
        Op::EmbeddingGrad,
        &[tok.clone(), dy],
        Some(table.0.clone()),
        2,
    )
    .unwrap();
    close(&dw, &[2.0, 2.0, 7.0, 7.0, 1.0, 1.0]);
    let bad = (ids(true, &[2]), vec![3.0, 0.0]);
    assert!(apply_typed(Op::Embedding, &[bad, table], None, 1)
        .unwrap_err()
        .contains("out of range"));
    let oh = apply(
        Op::OneHot { n: 3 },
        &[(ids(true, &[]), vec![1.0, -1.0, 3.0, 0.0])],
        4,
    );
    close(
        &oh,
        &[0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
    );
}

#[test]
fn rnn_scan_three_steps_by_hand() {
    // B=1, T=3, H=2, tanh; unrolled by hand with h_{-1} = 0.
    let xp = vec![0.5, -0.2, 0.1, 0.3, -0.4, 0.6];
    let w = vec![0.9, -0.5, 0.4, 0.7]; // w[i][j]: h·w sums over i.
    let h0 = [(0.5f64).tanh(), (-0.2f64).tanh()];
    let h1 = [
        (0.1 + h0[0] * 0.9 + h0[1] * 0.4).tanh(),
        (0.3 + h0[0] * -0.5 + h0[1] * 0.7).tanh(),
    ];
    let h2 = [
        (-0.4 + h1[0] * 0.9 + h1[1] * 0.4).tanh(),
        (0.6 + h1[0] * -0.5 + h1[1] * 0.7).tanh(),
    ];
    let args = [(f(true, &[3, 2]), xp), (f(false, &[2, 2]), w)];
    let h = apply(Op::RnnScan { act: UnaryOp::Tanh }, &args, 1);
    close(&h, &[h0[0], h0[1], h1[0], h1[1], h2[0], h2[1]]);
    let shifted = apply(Op::TimeShift, &[(f(true, &[3, 2]), h.clone())], 1);
    close(&shifted, &[0.0, 0.0, h0[0], h0[1], h1[0], h1[1]]);
}

#[test]
fn rnn_scan_grad_by_hand() {
    // B=1, T=2, H=1, tanh: da_1 = (1−h_1²)·dh_1, da_0 = (1−h_0²)·(dh_0 + da_1·w).
    let (h, w, dh) = (vec![0.5, -0.3], vec![2.0], vec![1.0, 3.0]);
    let da1 = (1.0 - 0.09) * 3.0;
    let da0 = (1.0 - 0.25) * (1.0 + da1 * 2.0);
    let t = f(true, &[2, 1]);
    let args = [(t.clone(), h), (f(false, &[1, 1]), w), (t, dh)];
    close(
        &apply(Op::RnnScanGrad { act: UnaryOp::Tanh }, &args, 1),
        &[da0, da1],
    );
}

#[test]
fn dropout_uses_the_shared_mask() {
    let n = 64;
    let x = vec![1.5; n];
    let y = apply(
        Op::Dropout { p: 0.25, salt: 0 },
        &[(f(true, &[n]), x.clone())],
        1,
    );
    let dy = apply(
        Op::DropoutGrad { p: 0.25, salt: 0 },
        &[(f(true, &[n]), x)],
        1,
    );
    let mut kept = 0;
    for (i, &v) in y.iter().enumerate() {
        let keep = dropout_keep(7, 3, 0, i as u64, 0.25);
        kept += keep as usize;
        assert_eq!(v, if keep { 2.0 } else { 0.0 });
    }
    assert!(kept > 0 && kept < n);
    close(&dy, &y);
}

/// Two dropout layers in a row drop 1 − (1−p)² of the elements: each layer has its own mask
/// (numbered by `salt`), where one shared mask would drop only p of them and scale the rest
/// twice.
#[test]
fn dropout_layers_draw_their_own_masks() {
    let n = 4000;
    let t = f(true, &[n]);
    let once = |salt| {
        apply(
            Op::Dropout { p: 0.5, salt },
            &[(t.clone(), vec![1.0; n])],
            1,
        )
    };
    let (a, b) = (once(0), once(1));
    let twice = apply(
        Op::Dropout { p: 0.5, salt: 1 },
        &[(t.clone(), a.clone())],
        1,
    );
    let zeros = |v: &[f64]| v.iter().filter(|&&x| x == 0.0).count() as f64 / n as f64;
    assert!((zeros(&a) - 0.5).abs() < 0.03 && (zeros(&b) - 0.5).abs() < 0.03);
    assert!((zeros(&twice) - 0.75).abs() < 0.03, "{}", zeros(&twice));
    let mean = twice.iter().sum::<f64>() / n as f64;
    assert!((mean - 1.0).abs() < 0.1, "{mean}");
}

#[test]
fn softmax_family() {
    let l = [0.0, 2f64.ln(), 3f64.ln()];
    let x = (f(true, &[3]), [l, [1.0, 1.0, 1.0]].concat());
    let sm = apply(Op::Softmax, std::slice::from_ref(&x), 2);
    close(
        &sm,
        &[1.0 / 6.0, 2.0 / 6.0, 0.5, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0],
    );
    let ls = apply(Op::LogSoftmax, std::slice::from_ref(&x), 2);
    close(&ls, &sm.iter().map(|v| v.ln()).collect::<Vec<_>>());
    // Gradients against the explicit Jacobian J = diag(s) − s sᵀ (row 0 only).
    let dy = vec![1.0, -2.0, 0.5, 0.0, 0.0, 0.0];
    let s = &sm[..3];
    let want: Vec<f64> = (0..3)
        .map(|i| {
            (0..3)
                .map(|j| dy[j] * (if i == j { s[i] } else { 0.0 } - s[i] * s[j]))
                .sum()
        })
        .collect();
    let t = f(true, &[3]);
    let g = apply(
        Op::SoftmaxGrad,
        &[(t.clone(), sm.clone()), (t.clone(), dy.clone())],
        2,
    );
    close(&g[..3], &want);
    // d log s_j / d x_i = δ_ij − s_i.
    let want: Vec<f64> = (0..3)
        .map(|i| {
            (0..3)
                .map(|j| dy[j] * (if i == j { 1.0 } else { 0.0 } - s[i]))
                .sum()
        })
        .collect();
    let g = apply(Op::LogSoftmaxGrad, &[(t.clone(), ls), (t, dy)], 2);
    close(&g[..3], &want);
}

#[test]
fn losses_by_hand() {
    let t = f(true, &[3]);
    let logits = (t.clone(), vec![0.0, 2f64.ln(), 3f64.ln(), 0.0, 0.0, 0.0]);
    let labels = (ids(true, &[]), vec![2.0, 0.0]);
    let ce = apply(Op::CrossEntropy, &[logits.clone(), labels.clone()], 2)[0];
    close(&[ce], &[(2f64.ln() + 3f64.ln()) / 2.0]);
    let bad = (ids(true, &[]), vec![3.0, 0.0]);
    assert!(
        apply_typed(Op::CrossEntropy, &[logits.clone(), bad], None, 2)
            .unwrap_err()
            .contains("out of range")
    );
    let target = (t.clone(), vec![0.5, 0.5, 0.0, 0.0, 0.0, 1.0]);
    let sce = apply(Op::SoftCrossEntropy, &[logits.clone(), target], 2)[0];
    close(
        &[sce],
        &[(0.5 * 6f64.ln() + 0.5 * 3f64.ln() + 3f64.ln()) / 2.0],
    );
    // KL(softmax(p) ‖ uniform): row 0 is Σ s·log(3s), row 1 (uniform p) is 0.
    let q = (t.clone(), vec![0.0; 6]);
    let kl = apply(Op::KlDiv, &[logits.clone(), q], 2)[0];
    let s = [1.0 / 6.0, 2.0 / 6.0, 0.5];
    let row0: f64 = s.iter().map(|p| p * (p * 3.0f64).ln()).sum();
    close(&[kl], &[row0 / 2.0]);
    let a = (f(false, &[2]), vec![1.0, 3.0]);
    let b = (f(false, &[2]), vec![0.0, 1.0]);
    close(&apply(Op::Mse, &[a, b.clone()], 1), &[2.5]);
    let p = (f(false, &[2]), vec![0.25, 0.0]);
    let bce = apply(Op::Bce, &[p, b], 1)[0];
    // p = 0 is clamped to the f32 nearest 1e-7, the bound compiled kernels use.
    close(&[bce], &[(-(0.75f64).ln() - (1e-7f32 as f64).ln()) / 2.0]);
    close(
        &apply(Op::SumSquares, &[(f(false, &[3]), vec![1.0, -2.0, 3.0])], 1),
        &[14.0],
    );
}

#[test]
fn loss_gradients_by_hand() {
    let t = f(true, &[2]);
    let logits = (t.clone(), vec![0.0, 0.0, 3f64.ln(), 0.0]);
    let dl = (Type::scalar(), vec![2.0]);
    let labels = (ids(true, &[]), vec![1.0, 0.0]);
    let g = apply(
        Op::CrossEntropyGrad,
        &[logits.clone(), labels, dl.clone()],
        2,
    );
    close(&g, &[0.5, -0.5, -0.25, 0.25]);
    let target = (t.clone(), vec![0.0, 1.0, 1.0, 0.0]);
    close(
        &apply(
            Op::SoftCrossEntropyGrad,
            &[logits.clone(), target, dl.clone()],
            2,
        ),
        &[0.5, -0.5, -0.25, 0.25],
    );
    let p = (t.clone(), vec![0.0, 0.0, 0.0, 0.0]);
    close(
        &apply(Op::KlDivGrad, &[p, logits, dl.clone()], 2),
        &[0.0, 0.0, 0.25, -0.25],
    );
    let a = (f(false, &[2]), vec![1.0, 3.0]);
    let b = (f(false, &[2]), vec![0.0, 1.0]);
    close(
        &apply(Op::MseGrad, &[a, b.clone(), dl.clone()], 1),
        &[2.0, 4.0],
    );
    let p = (f(false, &[2]), vec![0.25, 0.5]);
    close(
        &apply(Op::BceGrad, &[p, b, dl], 1),
        &[0.25 / 0.1875, -0.5 / 0.25],
    );
}

#[test]
fn interpreter_executor_runs_and_reports_sizes() {
    let mut g = Graph::new("t", false);
    let x = g.input("x", f(true, &[2]));
    let w = g.add_param(nnc::ir::Param {
        path: "w".into(),
        dims: vec![2, 1],
        init: nnc::ir::Init::Zeros,
        frozen: false,
    });
    let y = g
        .push(
            Op::MatMul {
                ta: false,
                tb: false,
            },
            vec![x, w],
            "dense",
        )
        .unwrap();
    g.set_output("output", y);
    let mut it = Interpreter::new(g);
    let xs = [1.0f32, 2.0, 3.0, 4.0];
    it.run(2, &[Feed::F32(&xs)], &[&[10.0, 1.0]], StepCtx::default())
        .unwrap();
    assert_eq!(it.output("output").unwrap(), &[12.0, 34.0]);
    assert!(it.output("nope").is_none());
    let err = it
        .run(3, &[Feed::F32(&xs)], &[&[10.0, 1.0]], StepCtx::default())
        .unwrap_err();
    assert!(matches!(
        err,
        ExecError::InputSize {
            index: 0,
            expected: 6,
            found: 4
        }
    ));
    let err = it
        .run(2, &[Feed::F32(&xs)], &[&[10.0]], StepCtx::default())
        .unwrap_err();
    assert!(matches!(err, ExecError::ParamSize { .. }));
}

#[test]
fn eval_rejects_bad_feeds() {
    let mut g = Graph::new("t", false);
    let x = g.input("x", f(true, &[2]));
    let y = g.push(Op::Unary(UnaryOp::Relu), vec![x], "").unwrap();
    g.set_output("output", y);
    let ctx = StepCtx::default();
    assert!(eval(&g, 0, &[vec![]], &[], ctx)
        .unwrap_err()
        .contains("batch size"));
    assert!(eval(&g, 1, &[], &[], ctx)
        .unwrap_err()
        .contains("1 inputs, 0 were given"));
    assert!(eval(&g, 2, &[vec![1.0; 3]], &[], ctx)
        .unwrap_err()
        .contains("3 elements, expected 4"));
    assert!(eval(&g, 1, &[vec![1.0; 2]], &[vec![]], ctx)
        .unwrap_err()
        .contains("parameters"));
    // A graph that does not verify is refused, not run.
    g.nodes[y.index()].ty = f(true, &[3]);
    assert!(eval(&g, 1, &[vec![1.0; 2]], &[], ctx)
        .unwrap_err()
        .contains("invalid graph"));
}
