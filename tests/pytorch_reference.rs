//! Layers and losses that follow a PyTorch definition, against numbers computed by an
//! independent re-implementation of PyTorch's documented formula in numpy (float64; torch itself
//! is not used). Each case checks the file as written, then computes the run's loss and the
//! gradients of its parameters with the reference interpreter and with the JIT, unoptimized
//! (`--opt 0`) and optimized (`--opt 1`), and compares all of them with the numpy numbers; the
//! interpreter's gradients are also checked against finite differences of its loss.
//!
//! The inputs are not random: element i of each tensor is `scale·sin(a·i + b)` (row-major), the
//! same formula in the numpy scripts quoted beside each case, so that both sides start from the
//! same values.

use nnc::autodiff::grad;
use nnc::autodiff::gradcheck::{gradcheck, interpreter_grads};
use nnc::codegen::{Jit, JitOptions};
use nnc::exec::{Executor, Feed, StepCtx};
use nnc::ir::{DType, Graph};

const CTX: StepCtx = StepCtx {
    seed: 1,
    step: 0,
    first: 0,
};

/// `scale·sin(a·i + b)` for i in 0..n.
fn vals(n: usize, a: f64, b: f64, scale: f64) -> Vec<f64> {
    (0..n).map(|i| scale * (a * i as f64 + b).sin()).collect()
}

/// An inline data source with one sample of `x` values and `y` values (zeros: the tests feed
/// the graphs themselves; the file only needs to check).
fn inline(x: usize, y: usize) -> String {
    let row = |n: usize| format!("[[{}]]", vec!["0"; n].join(", "));
    format!("data d {{ train: inline(x: {}, y: {}) }}", row(x), row(y))
}

/// The training graph of run `run` of `src`.
fn run_graph(src: &str, run: &str) -> Graph {
    let file = nnc::syntax::parse(src).unwrap_or_else(|d| panic!("{d:?}"));
    let p = nnc::check::check(&file)
        .unwrap_or_else(|d| panic!("{}", nnc::diag::Report::new("t.nn", src, d).render(false)));
    p.run(run).unwrap().graph.clone()
}

/// The loss and the parameter gradients (by path) that numpy computed: the first values of each
/// gradient, row-major (all of them where the tensor is small).
struct Reference<'a> {
    loss: f64,
    grads: &'a [(&'a str, &'a [f64])],
}

fn close(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol * (1.0 + want.abs()),
        "{what}: got {got}, numpy {want}"
    );
}

/// Runs `g` on `inputs` (in [`Graph::inputs`] order) and `params` (by path; every parameter of
/// `g` must be given) through the interpreter and the JIT at `--opt 0` and `--opt 1`, and
/// compares the loss and the gradients of the parameters named in `want` with it.
fn matches_numpy(
    g: &Graph,
    batch: usize,
    inputs: &[Vec<f64>],
    params: &[(&str, Vec<f64>)],
    want: &Reference,
) {
    let params: Vec<Vec<f64>> = g
        .params
        .iter()
        .map(|p| {
            let v = params
                .iter()
                .find(|(path, _)| *path == p.path)
                .unwrap_or_else(|| panic!("no values for {}", p.path));
            assert_eq!(v.1.len(), p.numel(), "{}", p.path);
            v.1.clone()
        })
        .collect();
    let gg = grad(g).unwrap();
    // The interpreter, in f64: to the precision of the formula.
    let vals = nnc::interp::eval(&gg, batch, inputs, &params, CTX).unwrap();
    close(
        "interpreter loss",
        vals[gg.output("loss").unwrap().index()][0],
        want.loss,
        1e-12,
    );
    for (path, w) in want.grads {
        let got = &vals[gg.output(&format!("grad:{path}")).unwrap().index()];
        assert!(got.len() >= w.len(), "{path}");
        for (k, (a, b)) in got.iter().zip(w.iter()).enumerate() {
            close(&format!("interpreter grad {path}[{k}]"), *a, *b, 1e-12);
        }
    }
    // Finite differences of the interpreter's loss.
    let mut analytic = interpreter_grads(&gg, batch, inputs, CTX);
    let r = gradcheck(g, &mut analytic, batch, inputs, &params, CTX).unwrap();
    assert!(r.max_rel_err() < 1e-6, "{r}");
    // The JIT, in f32, unoptimized and optimized.
    let dtypes: Vec<DType> = gg.inputs().iter().map(|(v, _)| gg.ty(*v).dtype).collect();
    let f32s: Vec<Vec<f32>> = inputs
        .iter()
        .map(|x| x.iter().map(|&v| v as f32).collect())
        .collect();
    let i32s: Vec<Vec<i32>> = inputs
        .iter()
        .map(|x| x.iter().map(|&v| v as i32).collect())
        .collect();
    let feeds: Vec<Feed> = dtypes
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            DType::F32 => Feed::F32(&f32s[i]),
            DType::I32 => Feed::I32(&i32s[i]),
        })
        .collect();
    let ps: Vec<Vec<f32>> = params
        .iter()
        .map(|p| p.iter().map(|&v| v as f32).collect())
        .collect();
    let refs: Vec<&[f32]> = ps.iter().map(Vec::as_slice).collect();
    for level in [0, 1] {
        let og = nnc::opt::optimize(&gg, level).unwrap();
        let mut jit = Jit::compile(&og, &JitOptions::default()).unwrap();
        jit.run(batch, &feeds, &refs, CTX).unwrap();
        let loss = jit.output("loss").unwrap()[0] as f64;
        close(&format!("jit --opt {level} loss"), loss, want.loss, 1e-5);
        for (path, w) in want.grads {
            let got = jit.output(&format!("grad:{path}")).unwrap();
            assert!(got.len() >= w.len(), "{path}");
            for (k, (a, b)) in got.iter().zip(w.iter()).enumerate() {
                close(
                    &format!("jit --opt {level} grad {path}[{k}]"),
                    *a as f64,
                    *b,
                    1e-5,
                );
            }
        }
    }
}

/// `conv2d(..., padding: "same")` as PyTorch's `F.conv2d(x, w, b, padding='same')`, on a
/// non-square 3×4 image, then `mse_loss`. Produced by (numpy, float64):
///
/// ```python
/// def conv_same(x, w, b):   # stride 1, odd kernel: (k-1)//2 zeros on every side
///     B,C,H,W = x.shape; O,_,k,_ = w.shape; p = (k-1)//2
///     xp = np.zeros((B,C,H+2*p,W+2*p)); xp[:,:,p:p+H,p:p+W] = x
///     y = np.zeros((B,O,H,W))
///     for i in range(H):
///         for j in range(W):
///             y[:,:,i,j] = np.einsum('bckl,ockl->bo', xp[:,:,i:i+k,j:j+k], w)
///     return y + b[None,:,None,None], xp
/// x = vals(2*2*3*4, 0.7, 0.3, 1.0); w = vals(2*2*k*k, 1.3, 0.1, 0.3); b = vals(2, 2.1, 0.5, 0.2)
/// t = vals(2*2*3*4, 0.45, 1.1, 0.5)          # the target
/// loss = np.mean((y-t)**2); dy = 2*(y-t)/y.size
/// gw[o,c,l,m] = sum over b,i,j of dy[b,o,i,j] * xp[b,c,i+l,j+m]; gb = dy.sum(axis=(0,2,3))
/// ```
#[test]
fn conv2d_padding_same_is_pytorchs() {
    let src = |k: usize| {
        format!(
            "model M(image: [2, 3, 4]) -> [24] {{
                 return image |> conv2d(2, kernel: {k}, padding: \"same\") |> flatten
             }}
             {}
             train M on d {{ loss: mse(output, label) optimizer: sgd(lr: 0.1) }}",
            inline(24, 24)
        )
    };
    let inputs = |k: usize| {
        let _ = k;
        vec![vals(48, 0.7, 0.3, 1.0), vals(48, 0.45, 1.1, 0.5)]
    };
    let params = |k: usize| {
        vec![
            ("conv1.weight", vals(2 * 2 * k * k, 1.3, 0.1, 0.3)),
            ("conv1.bias", vals(2, 2.1, 0.5, 0.2)),
        ]
    };
    let g = run_graph(&src(3), "M");
    matches_numpy(
        &g,
        2,
        &inputs(3),
        &params(3),
        &Reference {
            loss: 0.2546579446628536,
            grads: &[
                (
                    "conv1.weight",
                    &[
                        0.14708617465164833,
                        0.13471566143968203,
                        0.06507145746237392,
                        -0.18050155197046355,
                        -0.2319244555105996,
                        -0.15119538181143027,
                        0.07697864014477392,
                        0.15918488152065377,
                        0.1494834901739084,
                        -0.0900046517514571,
                        -0.13353176239263764,
                        -0.091723363486305,
                        0.013717564646738565,
                        0.10212358767801384,
                        0.12569149305947175,
                        0.08712782328125133,
                        0.026437000864356103,
                        -0.05807454220722922,
                        0.022920373897420944,
                        -0.04043483709441174,
                        -0.04872653536189837,
                        -0.1600459684847593,
                        -0.1174388060000271,
                        -0.04451711323515892,
                        0.17133584399314317,
                        0.19209736312993222,
                        0.12916797316096848,
                        -0.13324708796110288,
                        -0.09287071512404617,
                        -0.0035609961772820505,
                        0.20122495187011977,
                        0.21410113407244769,
                        0.113422893913498,
                        -0.08319458465752594,
                        -0.1321054866481153,
                        -0.10495991870946776,
                    ],
                ),
                ("conv1.bias", &[0.054937808099206745, 0.05636788161970384]),
            ],
        },
    );
    // A 5×5 kernel, wider than the 3×4 image: 2 zeros on every side; the first 8 of the
    // weight's 100 gradients.
    let g = run_graph(&src(5), "M");
    matches_numpy(
        &g,
        2,
        &inputs(5),
        &params(5),
        &Reference {
            loss: 0.2713980367379137,
            grads: &[
                (
                    "conv1.weight",
                    &[
                        0.02267800132042188,
                        0.0630909575387926,
                        0.06984763389138604,
                        0.0329808692640535,
                        0.008739829577640383,
                        0.09546981853336228,
                        0.08493784439972973,
                        0.012490451789824646,
                    ],
                ),
                ("conv1.bias", &[-0.019479850441948596, 0.0622631710104926]),
            ],
        },
    );
}

/// `global_maxpool` and `global_avgpool` as PyTorch's `nn.AdaptiveMaxPool2d(1)` /
/// `nn.AdaptiveAvgPool2d(1)` followed by `flatten` (Keras' GlobalMaxPooling2D /
/// GlobalAveragePooling2D), on a non-square 3×4 map, between a "same" convolution and a dense
/// layer, then `mse_loss`. Produced by (numpy, float64; `conv_same` as above):
///
/// ```python
/// y, xp = conv_same(x, w, b); flat = y.reshape(B, O, H*W)
/// p = flat.max(axis=2)   or   p = flat.mean(axis=2)
/// z = p @ dw + db; loss = np.mean((z-t)**2); dz = 2*(z-t)/z.size
/// gdw = p.T @ dz; gdb = dz.sum(0); dp = dz @ dw.T
/// max: dflat[b,o,flat[b,o].argmax()] = dp[b,o] (the first maximum; the two largest of each
///      map differ by at least 0.0086 here);  avg: dflat = dp[:,:,None]/(H*W)
/// then gw, gb from dy = dflat.reshape(B,O,H,W) as above
/// x = vals(48, 0.7, 0.3, 1.0); w = vals(36, 1.3, 0.1, 0.3); b = vals(2, 2.1, 0.5, 0.2)
/// dw = vals(6, 0.9, 0.2, 0.5).reshape(2, 3); db = vals(3, 1.7, 0.4, 0.1); t = vals(6, 0.45, 1.1, 0.5)
/// ```
#[test]
fn global_pooling_is_pytorchs_adaptive_pooling_to_one() {
    let src = |kind: &str| {
        format!(
            "model M(image: [2, 3, 4]) -> [3] {{
                 return image |> conv2d(2, kernel: 3, padding: \"same\") |> {kind} |> dense(3)
             }}
             {}
             train M on d {{ loss: mse(output, label) optimizer: sgd(lr: 0.1) }}",
            inline(24, 3)
        )
    };
    let inputs = vec![vals(48, 0.7, 0.3, 1.0), vals(6, 0.45, 1.1, 0.5)];
    let params = vec![
        ("conv1.weight", vals(36, 1.3, 0.1, 0.3)),
        ("conv1.bias", vals(2, 2.1, 0.5, 0.2)),
        ("dense1.weight", vals(6, 0.9, 0.2, 0.5)),
        ("dense1.bias", vals(3, 1.7, 0.4, 0.1)),
    ];
    matches_numpy(
        &run_graph(&src("global_maxpool"), "M"),
        2,
        &inputs,
        &params,
        &Reference {
            loss: 0.05543822556892574,
            grads: &[
                (
                    "conv1.weight",
                    &[
                        0.0,
                        -0.048567120356416714,
                        -0.10835487375250322,
                        0.0,
                        0.008733064297284102,
                        0.08425487724520196,
                        0.0,
                        0.03934043547270349,
                        -0.032781326200021506,
                        0.0,
                        -0.06924285397861535,
                        0.010756527484217628,
                    ],
                ),
                ("conv1.bias", &[-0.1253598449687159, 0.08778578547451779]),
                (
                    "dense1.weight",
                    &[
                        -0.09133260936704425,
                        -0.06085079623028992,
                        -0.11224614921005897,
                        -0.07668914123659389,
                        -0.04238843442696766,
                        -0.0783247210468001,
                    ],
                ),
                (
                    "dense1.bias",
                    &[
                        -0.1496255625664418,
                        -0.08596463013453814,
                        -0.15878343456408092,
                    ],
                ),
            ],
        },
    );
    matches_numpy(
        &run_graph(&src("global_avgpool"), "M"),
        2,
        &inputs,
        &params,
        &Reference {
            loss: 0.11371535391198288,
            grads: &[
                (
                    "conv1.weight",
                    &[
                        -0.00776499814417668,
                        -0.005277122667353935,
                        -0.0009619359712682261,
                        -0.016374599339606423,
                        -0.02656138140911627,
                        -0.02755074410684225,
                        0.009904388073913094,
                        0.008747445862933096,
                        0.004561522335275094,
                        0.010634689495826922,
                        0.012371441190486502,
                        0.009824329365035172,
                    ],
                ),
                ("conv1.bias", &[-0.16434326742726912, 0.10426083619369966]),
                (
                    "dense1.weight",
                    &[
                        -0.015835708716439398,
                        -0.009167985833717635,
                        -0.009883622737416145,
                        -0.022455415767118212,
                        -0.014741106951317492,
                        -0.016693222030051483,
                    ],
                ),
                (
                    "dense1.bias",
                    &[
                        -0.21534913198855066,
                        -0.14763257143307928,
                        -0.16972667920977874,
                    ],
                ),
            ],
        },
    );
}
