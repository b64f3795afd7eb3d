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
//!
//! The bidirectional and stacked recurrent layers' reference is written in plain Rust instead
//! (neither torch nor numpy was at hand), from PyTorch's documented formulas on PyTorch's own
//! weight layout, with gradients by central differences of its loss.

use nnc::autodiff::grad;
use nnc::autodiff::gradcheck::{gradcheck, interpreter_grads, F64_FLOOR};
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

/// How close the interpreter (f64) must come to numpy: to rounding, unless the graph holds
/// constants that are f32 in the IR (label smoothing's 1 − ε and ε/K).
const EXACT: f64 = 1e-12;

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
    interp_tol: f64,
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
        interp_tol,
    );
    for (path, w) in want.grads {
        let got = &vals[gg.output(&format!("grad:{path}")).unwrap().index()];
        assert!(got.len() >= w.len(), "{path}");
        for (k, (a, b)) in got.iter().zip(w.iter()).enumerate() {
            close(&format!("interpreter grad {path}[{k}]"), *a, *b, interp_tol);
        }
    }
    // Finite differences of the interpreter's loss.
    let mut analytic = interpreter_grads(&gg, batch, inputs, CTX);
    let r = gradcheck(g, &mut analytic, batch, inputs, &params, CTX, F64_FLOOR).unwrap();
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
        EXACT,
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
        EXACT,
    );
}

/// `lstm(5)` as PyTorch's `nn.LSTM(4, 5, batch_first=True)` (gate order i, f, g, o), on 3 steps
/// of a batch of 2, then `mse_loss`. PyTorch's parameters are nnc's transposed,
/// `weight_ih_l0 = w_xhᵀ` and `weight_hh_l0 = w_hhᵀ`, and its two biases sum to nnc's one. The
/// interpreter's outputs h_t are compared first, then the loss and the gradients, which are
/// complex-step derivatives of the numpy loss (exact to rounding, and independent of any
/// hand-written backward pass). Produced by (numpy, float64; `ys` as `loss` without its last
/// line):
///
/// ```python
/// B,T,I,H = 2,3,4,5; sig = lambda z: 1/(1+np.exp(-z))
/// x = vals(B*T*I, 0.7, 0.3, 1.0).reshape(B,T,I); t = vals(B*T*H, 0.45, 1.1, 0.5).reshape(B,T,H)
/// W_ih = vals(4*H*I, 1.3, 0.1, 0.4).reshape(4*H, I); W_hh = vals(4*H*H, 0.9, 0.7, 0.4).reshape(4*H, H)
/// b_ih = vals(4*H, 2.1, 0.5, 0.3); b_hh = vals(4*H, 1.7, 0.2, 0.3)
/// def loss(W_ih, W_hh, b_ih, b_hh):
///     h = c = zeros((B,H)); ys = []
///     for s in range(T):
///         z = x[:,s] @ W_ih.T + b_ih + h @ W_hh.T + b_hh
///         i, f, g, o = sig(z[:,:H]), sig(z[:,H:2*H]), np.tanh(z[:,2*H:3*H]), sig(z[:,3*H:])
///         c = f*c + i*g; h = o*np.tanh(c); ys.append(h)
///     return np.mean((np.stack(ys, 1) - t)**2)
/// d loss/d a[e] = loss(..., a + 1e-30j·e_e, ...).imag / 1e-30     (complex step)
/// grad w_xh = (d W_ih)ᵀ, grad w_hh = (d W_hh)ᵀ, grad bias = d b_ih (= d b_hh)
/// ```
#[test]
fn lstm_is_pytorchs() {
    let src = format!(
        "model M(x: [3, 4]) -> [15] {{ return x |> lstm(5) |> flatten }}
         {}
         train M on d {{ loss: mse(output, label) optimizer: sgd(lr: 0.1) }}",
        inline(12, 15)
    );
    // `v` as a rows×cols matrix, transposed (row-major).
    let transposed = |v: Vec<f64>, rows: usize, cols: usize| -> Vec<f64> {
        (0..cols * rows)
            .map(|k| v[(k % rows) * cols + k / rows])
            .collect()
    };
    let bias: Vec<f64> = vals(20, 2.1, 0.5, 0.3)
        .iter()
        .zip(vals(20, 1.7, 0.2, 0.3))
        .map(|(a, b)| a + b)
        .collect();
    let g = run_graph(&src, "M");
    let inputs = [vals(24, 0.7, 0.3, 1.0), vals(30, 0.45, 1.1, 0.5)];
    // In the graph's parameter order.
    let params = [
        ("lstm1.w_xh", transposed(vals(80, 1.3, 0.1, 0.4), 20, 4)),
        ("lstm1.w_hh", transposed(vals(100, 0.9, 0.7, 0.4), 20, 5)),
        ("lstm1.bias", bias),
    ];
    // The forward pass itself: every h_t of both sequences (numpy's `np.stack(ys, 1)`).
    let ys = [
        -0.14489396755711337,
        -0.08957773574348007,
        0.11780112736198033,
        0.09471678908766104,
        -0.17675221589010126,
        -0.0057371330813442796,
        -0.04511522633828873,
        0.0566105018111159,
        -0.08200045627754135,
        -0.2665542705145239,
        -0.16649196816982678,
        -0.1750372034542141,
        0.11579783277793164,
        0.11269515558646515,
        -0.23626191665094493,
        0.18266379973680016,
        0.11814793536033746,
        0.03937881988101078,
        -0.11059947602770255,
        -0.21544893678497296,
        -0.10458911678138615,
        -0.1518855437068629,
        0.04248375185818637,
        0.12016766741433418,
        -0.12496199239095424,
        0.023639380544609317,
        0.0077411714894508555,
        0.10528273719929747,
        -0.05580002588566448,
        -0.26644756270291264,
    ];
    let ps: Vec<Vec<f64>> = params.iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(
        g.params.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(),
        params.iter().map(|(p, _)| *p).collect::<Vec<_>>()
    );
    let out = nnc::interp::eval(&g, 2, &inputs, &ps, CTX).unwrap();
    let y = &out[g.output("output").unwrap().index()];
    assert_eq!(y.len(), ys.len());
    for (k, (a, b)) in y.iter().zip(ys).enumerate() {
        close(&format!("interpreter h[{k}]"), *a, b, EXACT);
    }
    matches_numpy(
        &g,
        2,
        &inputs,
        &params,
        &Reference {
            loss: 0.1358044841636413,
            grads: &[
                (
                    "lstm1.w_xh",
                    &[
                        0.0016232218003624373,
                        -0.0007316345732961384,
                        -0.0014821690038079784,
                        -7.686844896682977e-05,
                        0.0033864781266345055,
                        -0.0006826342982644745,
                        0.00044045752979042464,
                        -0.00033256367768655864,
                        -0.00015607531391758275,
                        -0.000797874987254068,
                        -0.005142717341294302,
                        -0.010150747356156887,
                    ],
                ),
                (
                    "lstm1.w_hh",
                    &[
                        -0.00028182710726485857,
                        -3.251368970457825e-05,
                        9.434097671459257e-05,
                        0.00037719963425957996,
                        -0.00041157621921706624,
                        0.0001378325429165962,
                        -1.4218069518821187e-06,
                        -6.371855533118488e-05,
                        -0.00012284686780703112,
                        -0.0002263143562456347,
                        0.0002038744423282726,
                        -8.944519777626386e-06,
                    ],
                ),
                (
                    "lstm1.bias",
                    &[
                        -0.0005417732694806797,
                        -0.001203747390735719,
                        -0.0012076489474351537,
                        0.0012788949016209665,
                        0.007092194349945886,
                        0.00019548161606177154,
                        0.0004537987721214451,
                        0.0006484245500898001,
                        -0.001083539540190478,
                        0.005508566115929465,
                        -0.002357219433291024,
                        -0.016667604612753673,
                    ],
                ),
            ],
        },
        EXACT,
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
        EXACT,
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
        EXACT,
    );
}

/// `cross_entropy(logits, target, label_smoothing: ε)` as PyTorch's
/// `F.cross_entropy(z, target, label_smoothing=ε)`, for class ids and for probabilities, after
/// a dense layer (z = x·W + b, K = 5 classes, batch 3). Produced by (numpy, float64), from
/// PyTorch's documented formula:
///
/// ```python
/// lp = log_softmax(z)
/// class ids:     loss = (1-eps) * (-lp[range(B), ids].mean()) + eps * (-lp.sum(1) / K).mean()
///                t = (1-eps) * onehot(ids) + eps/K
/// probabilities: t = probs * (1-eps) + eps/K;  loss = (-(t * lp).sum(1)).mean()
/// dz = (softmax(z) * t.sum(1, keepdims=True) - t) / B;  gW = x.T @ dz;  gb = dz.sum(0)
/// x = vals(12, 0.7, 0.3, 1.0); W = vals(20, 1.3, 0.1, 0.8); b = vals(5, 2.1, 0.5, 0.3)
/// ids = [2, 0, 4]; probs = |vals(15, 0.9, 0.4, 1.0)|, each row divided by its sum
/// ```
#[test]
fn cross_entropy_label_smoothing_is_pytorchs() {
    let src = |target: &str, smoothing: &str| {
        let y = if target == "ids" { 1 } else { 5 };
        format!(
            "model M(x: [4]) -> [5] {{ return x |> dense(5) }}
             {}
             train M on d {{
                 loss: cross_entropy(output, label{smoothing})
                 optimizer: sgd(lr: 0.1)
             }}",
            inline(4, y)
        )
    };
    let params = vec![
        ("dense1.weight", vals(20, 1.3, 0.1, 0.8)),
        ("dense1.bias", vals(5, 2.1, 0.5, 0.3)),
    ];
    let x = vals(12, 0.7, 0.3, 1.0);
    let ids = vec![2.0, 0.0, 4.0];
    let mut probs: Vec<f64> = vals(15, 0.9, 0.4, 1.0).iter().map(|v| v.abs()).collect();
    for row in probs.chunks_mut(5) {
        let s: f64 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= s);
    }
    let case = |target: &str, smoothing: &str, want: &Reference| {
        let g = run_graph(&src(target, smoothing), "M");
        let label = if target == "ids" { &ids } else { &probs };
        // The smoothing constants are f32: 1e-7 relative.
        matches_numpy(&g, 3, &[x.clone(), label.clone()], &params, want, 1e-7);
    };
    // Without smoothing, and with `label_smoothing: 0` (the same graph, checked below).
    let plain = Reference {
        loss: 2.9174281079999282,
        grads: &[(
            "dense1.bias",
            &[
                -0.13828077872057712,
                0.3995233954222284,
                -0.26963735898152835,
                0.2238573120471931,
                -0.21546256976731615,
            ],
        )],
    };
    case("ids", "", &plain);
    case("ids", ", label_smoothing: 0", &plain);
    case(
        "ids",
        ", label_smoothing: 0.1",
        &Reference {
            loss: 2.8638652635886106,
            grads: &[
                (
                    "dense1.weight",
                    &[
                        -0.03183780088934709,
                        0.007177520665852867,
                        -0.0900006393785363,
                        0.00607623160882435,
                        0.1085846879932062,
                        0.2683908384204637,
                        0.23805965750788546,
                        -0.24591582980555896,
                        -0.12609059574843529,
                        -0.13444407037435496,
                        0.44239107269859734,
                        0.3569786176392017,
                        -0.28617296293419103,
                        -0.1989550457052992,
                        -0.3142416816983088,
                        0.4083278729353891,
                        0.3080049559500348,
                        -0.19183848001898024,
                        -0.17824782890861765,
                        -0.34624651995782607,
                    ],
                ),
                (
                    "dense1.bias",
                    &[
                        -0.1249474453872438,
                        0.37952339542222846,
                        -0.25630402564819504,
                        0.2038573120471931,
                        -0.2021292364339828,
                    ],
                ),
            ],
        },
    );
    case(
        "ids",
        ", label_smoothing: 0.35",
        &Reference {
            loss: 2.729958152560316,
            grads: &[(
                "dense1.bias",
                &[
                    -0.09161411205391044,
                    0.3295233954222284,
                    -0.2229706923148617,
                    0.15385731204719308,
                    -0.16879590310064949,
                ],
            )],
        },
    );
    case(
        "probs",
        "",
        &Reference {
            loss: 2.173331964110166,
            grads: &[(
                "dense1.bias",
                &[
                    0.05756305068518952,
                    0.1513316126359255,
                    -0.18821726140841882,
                    0.07326351423260419,
                    -0.09394091614530051,
                ],
            )],
        },
    );
    case(
        "probs",
        ", label_smoothing: 0.1",
        &Reference {
            loss: 2.1941787340878243,
            grads: &[
                (
                    "dense1.weight",
                    &[
                        -0.033362778204650514,
                        0.009312443107032288,
                        0.014621379265270955,
                        0.020587054812000023,
                        -0.011158098979652718,
                        0.10058392510963667,
                        0.1522856888817578,
                        -0.0765379832620157,
                        -0.09644411651907031,
                        -0.07988751421030846,
                        0.18722443677767783,
                        0.22363659564586516,
                        -0.13170033632219827,
                        -0.16811611287033157,
                        -0.11104458323101322,
                        0.18581037036665446,
                        0.1898077170595227,
                        -0.12492196333553006,
                        -0.16072047445195042,
                        -0.08997564963869673,
                    ],
                ),
                (
                    "dense1.bias",
                    &[
                        0.05131200107794619,
                        0.1561507909145558,
                        -0.18302593783239646,
                        0.06832289401406305,
                        -0.09275974817416874,
                    ],
                ),
            ],
        },
    );
    case(
        "probs",
        ", label_smoothing: 0.35",
        &Reference {
            loss: 2.2462956590319703,
            grads: &[(
                "dense1.bias",
                &[
                    0.035684377059837874,
                    0.1681987366111315,
                    -0.17004762889234049,
                    0.05597134346771031,
                    -0.08980682824633932,
                ],
            )],
        },
    );
    // A sequence output: logits [3, 5] at each of 3 positions, class ids [3] (a text's next
    // characters); the mean runs over the 6 rows. numpy as above with x the one-hot rows of the
    // token ids [0, 3, 1, 2, 4, 0] (`one_hot(5)`), W = vals(25, 1.3, 0.1, 0.8) as [5, 5] and
    // ids [1, 4, 0, 3, 3, 2].
    let seq = "model S(tokens: i32[3]) -> [3, 5] { return tokens |> one_hot(5) |> dense(5) }
         data d { train: text(\"t.txt\", seq: 3) }
         train S on d {
             loss: cross_entropy(output, label, label_smoothing: 0.2)
             optimizer: sgd(lr: 0.1)
         }";
    let g = run_graph(seq, "S");
    matches_numpy(
        &g,
        2,
        &[
            vec![0.0, 3.0, 1.0, 2.0, 4.0, 0.0],
            vec![1.0, 4.0, 0.0, 3.0, 3.0, 2.0],
        ],
        &[
            ("dense1.weight", vals(25, 1.3, 0.1, 0.8)),
            ("dense1.bias", vals(5, 2.1, 0.5, 0.3)),
        ],
        &Reference {
            loss: 1.8233113300054786,
            grads: &[
                (
                    "dense1.weight",
                    &[
                        0.05510621821409577,
                        -0.006158347643712203,
                        -0.08960209696231856,
                        0.021308032445305096,
                        0.019346193946629883,
                        -0.10019755174453605,
                        0.0630661585536908,
                        0.01712184178656032,
                        0.008748395116608151,
                        0.011261156287676802,
                    ],
                ),
                (
                    "dense1.bias",
                    &[
                        0.08968650099188599,
                        0.22061186958491363,
                        -0.042830421070237934,
                        -0.21536532743974568,
                        -0.052102622066816005,
                    ],
                ),
            ],
        },
        1e-7,
    );
    // ε = 0 is no smoothing: the very graph of the run without the argument.
    let print = |s: &str| nnc::ir::print::graph_to_string(&run_graph(&src("ids", s), "M"));
    assert_eq!(print(""), print(", label_smoothing: 0"));
    assert_ne!(print(""), print(", label_smoothing: 0.1"));
}

/// `w` (`rows×cols`, row-major) transposed: PyTorch's `[out, in]` weights to nnc's `[in, out]`.
fn transposed(w: Vec<f64>, rows: usize, cols: usize) -> Vec<f64> {
    (0..rows * cols)
        .map(|k| w[(k % rows) * cols + k / rows])
        .collect()
}

/// `gru(4)` as PyTorch's `nn.GRU(2, 4, batch_first=True)` on 3 steps, its output flattened,
/// then `mse_loss`; PyTorch's weights transposed into nnc's `w_xh` and `w_hh` (spec.md §5),
/// the biases as they are. Produced by (numpy, float64; the backward pass through time written
/// out by hand; the gradients of nnc's tensors are those of PyTorch's, transposed; the first
/// 12 of each):
///
/// ```python
/// def vals(n, a, b, s): return s*np.sin(a*np.arange(n)+b)
/// B,T,I,H = 2,3,2,4
/// sig = lambda v: 1/(1+np.exp(-v))
/// x = vals(B*T*I, 0.7, 0.3, 1.0).reshape(B,T,I)
/// t = vals(B*T*H, 0.45, 1.1, 0.5).reshape(B,T,H)
/// w_ih = vals(3*H*I, 1.3, 0.1, 0.5).reshape(3*H,I)    # PyTorch's weight_ih_l0
/// w_hh = vals(3*H*H, 0.9, 0.2, 0.5).reshape(3*H,H)    # weight_hh_l0
/// b_ih = vals(3*H, 2.1, 0.5, 0.3); b_hh = vals(3*H, 1.7, 0.4, 0.3)
/// # forward, as torch.nn.GRU documents it
/// h = np.zeros((B,H)); hs=[]; cache=[]
/// for s in range(T):
///     gi = x[:,s] @ w_ih.T + b_ih; gh = h @ w_hh.T + b_hh
///     r = sig(gi[:,:H]+gh[:,:H]); z = sig(gi[:,H:2*H]+gh[:,H:2*H]); n = np.tanh(gi[:,2*H:]+r*gh[:,2*H:])
///     cache.append((h,r,z,n,gh)); h = (1-z)*n + z*h; hs.append(h)
/// y = np.stack(hs,1); loss = np.mean((y-t)**2); dy = 2*(y-t)/y.size
/// # backward through time, by hand
/// gw_ih=np.zeros_like(w_ih); gw_hh=np.zeros_like(w_hh); gb_ih=np.zeros_like(b_ih); gb_hh=np.zeros_like(b_hh)
/// dh = np.zeros((B,H))
/// for s in reversed(range(T)):
///     hp,r,z,n,gh = cache[s]; dh = dh + dy[:,s]
///     dn = dh*(1-z); dz = dh*(hp-n); dhp = dh*z
///     dan = dn*(1-n*n); daz = dz*z*(1-z); dar = dan*gh[:,2*H:]*r*(1-r)
///     dgi = np.concatenate([dar,daz,dan],1); dgh = np.concatenate([dar,daz,dan*r],1)
///     gw_ih += dgi.T @ x[:,s]; gb_ih += dgi.sum(0); gw_hh += dgh.T @ hp; gb_hh += dgh.sum(0)
///     dh = dhp + dgh @ w_hh
/// ```
#[test]
fn gru_is_pytorchs() {
    let src = format!(
        "model M(x: [3, 2]) -> [12] {{ return x |> gru(4) |> flatten }}
         {}
         train M on d {{ loss: mse(output, label) optimizer: sgd(lr: 0.1) }}",
        inline(6, 12)
    );
    let g = run_graph(&src, "M");
    let h = 4;
    matches_numpy(
        &g,
        2,
        &[vals(12, 0.7, 0.3, 1.0), vals(24, 0.45, 1.1, 0.5)],
        &[
            (
                "gru1.w_xh",
                transposed(vals(3 * h * 2, 1.3, 0.1, 0.5), 3 * h, 2),
            ),
            (
                "gru1.w_hh",
                transposed(vals(3 * h * h, 0.9, 0.2, 0.5), 3 * h, h),
            ),
            ("gru1.bias_xh", vals(3 * h, 2.1, 0.5, 0.3)),
            ("gru1.bias_hh", vals(3 * h, 1.7, 0.4, 0.3)),
        ],
        &Reference {
            loss: 0.19746446418955185,
            grads: &[
                (
                    "gru1.w_xh",
                    &[
                        0.0019481649987410409,
                        0.00022212863021027195,
                        -0.005218665463071606,
                        -3.623392916524699e-05,
                        0.0014356185907771074,
                        0.01207319794220606,
                        -0.009528164440416514,
                        -0.0038137239340875545,
                        0.03952782204348361,
                        -0.010333626678368268,
                        0.06792211350453342,
                        -0.0010935167320353157,
                    ],
                ),
                (
                    "gru1.w_hh",
                    &[
                        1.294576174824874e-05,
                        1.4465365248750649e-05,
                        0.00042987092597650885,
                        -3.4096627539651754e-05,
                        0.0010736829975977716,
                        -0.0025029045089305924,
                        0.0036158278326525245,
                        -0.0005721528841984882,
                        -0.0002976321178180274,
                        -0.0009431231143218041,
                        -0.0021592809321099816,
                        -0.0007792765568713092,
                    ],
                ),
                (
                    "gru1.bias_xh",
                    &[
                        -0.0008315058742066623,
                        0.0016474744504672333,
                        -0.006840694606171286,
                        -0.00033052909061115295,
                        -0.009078629982397151,
                        -0.0025040865628550932,
                        -0.0217186537486763,
                        -0.0009163680798535507,
                        -0.0006035558604637441,
                        0.058170791527384844,
                        0.08203659485393246,
                        -0.0127356169630802,
                    ],
                ),
                (
                    "gru1.bias_hh",
                    &[
                        -0.0008315058742066623,
                        0.0016474744504672333,
                        -0.006840694606171286,
                        -0.00033052909061115295,
                        -0.009078629982397151,
                        -0.0025040865628550932,
                        -0.0217186537486763,
                        -0.0009163680798535507,
                        0.0008514176004970897,
                        0.03499789842212314,
                        0.028783414447742885,
                        -0.006263212634867735,
                    ],
                ),
            ],
        },
        EXACT,
    );
}

/// PyTorch's recurrent layers as its documentation writes them (`torch.nn.RNN`, `GRU`,
/// `LSTM`), on its own weight layout, here in plain Rust (torch and numpy are not available
/// where these tests were written): the cell of one step, gates in PyTorch's order.
#[derive(Clone, Copy, Debug)]
enum TorchCell {
    /// `nonlinearity='tanh'`: h' = tanh(W_ih x + b_ih + W_hh h + b_hh).
    Rnn,
    /// r, z, n: n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)), h' = (1 − z) ⊙ n + z ⊙ h.
    Gru,
    /// i, f, g, o: c' = f ⊙ c + i ⊙ g, h' = o ⊙ tanh(c').
    Lstm,
}

/// One direction's `weight_ih_l0` `[G·H, I]`, `weight_hh_l0` `[G·H, H]`, `bias_ih_l0` and
/// `bias_hh_l0` `[G·H]` (or the `_reverse` ones).
struct TorchWeights {
    w_ih: Vec<f64>,
    w_hh: Vec<f64>,
    b_ih: Vec<f64>,
    b_hh: Vec<f64>,
}

impl TorchCell {
    fn gates(self) -> usize {
        match self {
            TorchCell::Rnn => 1,
            TorchCell::Gru => 3,
            TorchCell::Lstm => 4,
        }
    }

    /// One step from (h, c) on input `x`: the new (h, c) (c unused but by the LSTM).
    fn step(self, p: &TorchWeights, x: &[f64], (h, c): (&[f64], &[f64])) -> (Vec<f64>, Vec<f64>) {
        let hidden = h.len();
        let affine = |w: &[f64], b: &[f64], v: &[f64]| -> Vec<f64> {
            (0..b.len())
                .map(|row| {
                    b[row]
                        + (0..v.len())
                            .map(|k| w[row * v.len() + k] * v[k])
                            .sum::<f64>()
                })
                .collect()
        };
        let (gi, gh) = (affine(&p.w_ih, &p.b_ih, x), affine(&p.w_hh, &p.b_hh, h));
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let at = |v: &[f64], gate: usize, j: usize| v[gate * hidden + j];
        match self {
            TorchCell::Rnn => (
                (0..hidden).map(|j| (gi[j] + gh[j]).tanh()).collect(),
                c.to_vec(),
            ),
            TorchCell::Gru => {
                let h2 = (0..hidden)
                    .map(|j| {
                        let r = sig(at(&gi, 0, j) + at(&gh, 0, j));
                        let z = sig(at(&gi, 1, j) + at(&gh, 1, j));
                        let n = (at(&gi, 2, j) + r * at(&gh, 2, j)).tanh();
                        (1.0 - z) * n + z * h[j]
                    })
                    .collect();
                (h2, c.to_vec())
            }
            TorchCell::Lstm => {
                let g = |gate, j| at(&gi, gate, j) + at(&gh, gate, j);
                let c2: Vec<f64> = (0..hidden)
                    .map(|j| sig(g(1, j)) * c[j] + sig(g(0, j)) * g(2, j).tanh())
                    .collect();
                let h2 = (0..hidden).map(|j| sig(g(3, j)) * c2[j].tanh()).collect();
                (h2, c2)
            }
        }
    }

    /// The layer's `output` on one sequence `x` (`[T, I]`) with `bidirectional=True` and
    /// `batch_first=True`: `[T, 2·H]`, step t holding the forward h_t, then the reverse
    /// direction's h_t, which has read x_{T−1} down to x_t.
    fn bidirectional(self, x: &[f64], inputs: usize, [fwd, rev]: [&TorchWeights; 2]) -> Vec<f64> {
        let steps = x.len() / inputs;
        let hidden = fwd.b_ih.len() / self.gates();
        let run = |p: &TorchWeights, order: Vec<usize>| {
            let mut hs = vec![Vec::new(); steps];
            let (mut h, mut c) = (vec![0.0; hidden], vec![0.0; hidden]);
            for t in order {
                (h, c) = self.step(p, &x[t * inputs..(t + 1) * inputs], (&h, &c));
                hs[t] = h.clone();
            }
            hs
        };
        let (f, r) = (
            run(fwd, (0..steps).collect()),
            run(rev, (0..steps).rev().collect()),
        );
        (0..steps)
            .flat_map(|t| f[t].iter().chain(&r[t]).copied())
            .collect()
    }
}

/// The tensors of one direction in nnc's layout (spec.md §5) from PyTorch's: the weights
/// transposed; `gru` keeps both biases, `rnn` and `lstm` have their sum.
fn nnc_direction(cell: TorchCell, p: &TorchWeights, inputs: usize) -> Vec<Vec<f64>> {
    let rows = p.b_ih.len();
    let hidden = rows / cell.gates();
    let w_xh = transposed(p.w_ih.clone(), rows, inputs);
    let w_hh = transposed(p.w_hh.clone(), rows, hidden);
    let sum: Vec<f64> = p.b_ih.iter().zip(&p.b_hh).map(|(a, b)| a + b).collect();
    match cell {
        TorchCell::Gru => vec![w_xh, w_hh, p.b_ih.clone(), p.b_hh.clone()],
        TorchCell::Rnn | TorchCell::Lstm => vec![w_xh, w_hh, sum],
    }
}

/// PyTorch's tensors back from nnc's (the inverse of [`nnc_direction`], a summed bias all on
/// `bias_ih`), so that the reference can be differentiated in nnc's parameters.
fn torch_direction(
    cell: TorchCell,
    p: &[Vec<f64>],
    (inputs, hidden): (usize, usize),
) -> TorchWeights {
    let rows = cell.gates() * hidden;
    let (b_ih, b_hh) = match cell {
        TorchCell::Gru => (p[2].clone(), p[3].clone()),
        TorchCell::Rnn | TorchCell::Lstm => (p[2].clone(), vec![0.0; rows]),
    };
    TorchWeights {
        w_ih: transposed(p[0].clone(), inputs, rows),
        w_hh: transposed(p[1].clone(), hidden, rows),
        b_ih,
        b_hh,
    }
}

/// The three recurrent cells, each with nnc's layer and the names of one direction's tensors.
const CELLS: [(TorchCell, &str, &[&str]); 3] = [
    (TorchCell::Rnn, "rnn", &["w_xh", "w_hh", "bias"]),
    (
        TorchCell::Gru,
        "gru",
        &["w_xh", "w_hh", "bias_xh", "bias_hh"],
    ),
    (TorchCell::Lstm, "lstm", &["w_xh", "w_hh", "bias"]),
];

/// The training graph of `x |> {body} |> flatten` on `[steps, inputs]` sequences, `width`
/// numbers out, under an mse loss.
fn sequence_graph(body: &str, (steps, inputs): (usize, usize), width: usize) -> Graph {
    let src = format!(
        "model M(x: [{steps}, {inputs}]) -> [{width}] {{ return x |> {body} |> flatten }}
         {}
         train M on d {{ loss: mse(output, label) optimizer: sgd(lr: 0.1) }}",
        inline(steps * inputs, width)
    );
    run_graph(&src, "M")
}

/// The paths of `g`'s parameters, asserted to be those of `{layer}1` with `names` for each
/// suffix in turn (`""`, `"_reverse"`, …).
fn param_paths(g: &Graph, layer: &str, names: &[&str], suffixes: &[&str]) -> Vec<String> {
    let paths: Vec<String> = suffixes
        .iter()
        .flat_map(|dir| names.iter().map(move |n| format!("{layer}1.{n}{dir}")))
        .collect();
    assert_eq!(
        g.params.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(),
        paths
    );
    paths
}

/// `rnn`, `gru` and `lstm` with `bidirectional: true` as PyTorch's layers with
/// `bidirectional=True, batch_first=True` (PyTorch's weights mapped as spec.md §5 says, the
/// `_reverse` ones likewise): the output of each of two sequences against the reference above,
/// then the mse loss and the gradient of every parameter, against central differences of the
/// reference's loss (in f64, step 1e-5, so to about 1e-10) taken in nnc's parameters, through
/// the interpreter and the JIT ([`matches_numpy`]).
#[test]
fn bidirectional_recurrent_layers_are_pytorchs() {
    bidirectional_against_the_reference(None);
}

/// The same layers reading `embedding(5, 3)` of token ids, some repeated: the reverse direction
/// reads the look-up of the reversed ids (and, optimized, both directions' input products move
/// into the table), which must be the PyTorch layer on the looked-up rows, the table's gradient
/// included.
#[test]
fn bidirectional_recurrent_layers_on_an_embedding_are_pytorchs() {
    bidirectional_against_the_reference(Some(5));
}

/// The check of the two tests above, on `x: [4, 3]`, or on ids `x: i32[4]` of a vocabulary of
/// `vocab` looked up in a table of rows of 3 when given.
fn bidirectional_against_the_reference(vocab: Option<usize>) {
    let (batch, steps, inputs, hidden) = (2, 4, 3, 3);
    for (cell, layer, names) in CELLS {
        let width = steps * 2 * hidden;
        let (input, lookup) = match vocab {
            Some(v) => (
                format!("i32[{steps}]"),
                format!("embedding({v}, {inputs}) |> "),
            ),
            None => (format!("[{steps}, {inputs}]"), String::new()),
        };
        let data = match vocab {
            Some(_) => inline(steps, width).replace("[[0, 0, 0, 0]]", "[[0, 1, 2, 3]]"),
            None => inline(steps * inputs, width),
        };
        let src = format!(
            "model M(x: {input}) -> [{width}] {{
                 return x |> {lookup}{layer}({hidden}, bidirectional: true) |> flatten
             }}
             {data}
             train M on d {{ loss: mse(output, label) optimizer: sgd(lr: 0.1) }}"
        );
        let g = run_graph(&src, "M");
        let rows = cell.gates() * hidden;
        let torch = |k: f64| TorchWeights {
            w_ih: vals(rows * inputs, 1.3 + k, 0.1, 0.5),
            w_hh: vals(rows * hidden, 0.9 + k, 0.2, 0.5),
            b_ih: vals(rows, 2.1 + k, 0.5, 0.3),
            b_hh: vals(rows, 1.7 + k, 0.4, 0.3),
        };
        let (fwd, rev) = (torch(0.0), torch(0.37));
        // nnc's parameters in the graph's order: the table, the forward direction's, then
        // `_reverse`.
        let table = vocab.map(|v| vals(v * inputs, 0.61, 0.2, 1.0));
        let values: Vec<Vec<f64>> = table
            .iter()
            .cloned()
            .chain(
                [&fwd, &rev]
                    .iter()
                    .flat_map(|p| nnc_direction(cell, p, inputs)),
            )
            .collect();
        let paths: Vec<String> = table
            .iter()
            .map(|_| "embedding1.weight".to_string())
            .chain(
                ["", "_reverse"]
                    .iter()
                    .flat_map(|dir| names.iter().map(move |n| format!("{layer}1.{n}{dir}"))),
            )
            .collect();
        assert_eq!(
            g.params.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(),
            paths
        );
        // The model's input: ids (repeated within and across the sequences), or the sequences.
        let x = match vocab {
            Some(_) => vec![0.0, 3.0, 3.0, 1.0, 4.0, 0.0, 2.0, 0.0],
            None => vals(batch * steps * inputs, 0.7, 0.3, 1.0),
        };
        // The sequences the layer reads, from (a table in) nnc's parameters.
        let rows_of = |ps: &[Vec<f64>]| -> Vec<f64> {
            match vocab {
                Some(_) => x
                    .iter()
                    .flat_map(|&id| ps[0][id as usize * inputs..][..inputs].to_vec())
                    .collect(),
                None => x.clone(),
            }
        };
        let target = vals(batch * width, 0.45, 1.1, 0.5);
        // The reference's output and loss from nnc-layout parameters.
        let forward = |ps: &[Vec<f64>]| -> Vec<f64> {
            let (e, n) = (table.iter().count(), names.len());
            let sizes = (inputs, hidden);
            let (f, r) = (
                torch_direction(cell, &ps[e..e + n], sizes),
                torch_direction(cell, &ps[e + n..], sizes),
            );
            rows_of(ps)
                .chunks(steps * inputs)
                .flat_map(|s| cell.bidirectional(s, inputs, [&f, &r]))
                .collect()
        };
        let loss = |ps: &[Vec<f64>]| -> f64 {
            let y = forward(ps);
            y.iter()
                .zip(&target)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>()
                / y.len() as f64
        };
        // The layout itself: the reference from PyTorch's tensors as they are.
        let direct: Vec<f64> = rows_of(&values)
            .chunks(steps * inputs)
            .flat_map(|s| cell.bidirectional(s, inputs, [&fwd, &rev]))
            .collect();
        let out = nnc::interp::eval(&g, batch, &[x.clone(), target.clone()], &values, CTX).unwrap();
        let y = &out[g.output("output").unwrap().index()];
        assert_eq!(y.len(), direct.len());
        for (k, (a, b)) in y.iter().zip(&direct).enumerate() {
            close(&format!("{layer} interpreter output[{k}]"), *a, *b, EXACT);
        }
        // Central differences of the reference's loss in each of nnc's parameters.
        let grads: Vec<Vec<f64>> = (0..values.len())
            .map(|p| {
                (0..values[p].len())
                    .map(|i| {
                        let at = |d: f64| {
                            let mut ps = values.clone();
                            ps[p][i] += d;
                            loss(&ps)
                        };
                        (at(1e-5) - at(-1e-5)) / 2e-5
                    })
                    .collect()
            })
            .collect();
        let named: Vec<(&str, &[f64])> = paths
            .iter()
            .zip(&grads)
            .map(|(p, g)| (p.as_str(), g.as_slice()))
            .collect();
        let params: Vec<(&str, Vec<f64>)> = paths
            .iter()
            .zip(&values)
            .map(|(p, v)| (p.as_str(), v.clone()))
            .collect();
        matches_numpy(
            &g,
            batch,
            &[x.clone(), target.clone()],
            &params,
            &Reference {
                loss: loss(&values),
                grads: &named,
            },
            1e-8,
        );
    }
}

/// `rnn`, `gru` and `lstm` with `num_layers: 2, bidirectional: true` as PyTorch's layers with
/// `num_layers=2, bidirectional=True, batch_first=True`: layer 1 reads layer 0's `output`, both
/// directions side by side (`weight_ih_l1` is `[gates·H, 2·H]`), and its tensors are nnc's
/// `_l1` and `_l1_reverse` ones, mapped as spec.md §5 says. The interpreter's output of each of
/// two sequences against the reference stacked by hand (the gradients are checked against
/// finite differences in tests/gradcheck_ops.rs).
#[test]
fn stacked_recurrent_layers_are_pytorchs() {
    let (batch, steps, inputs, hidden) = (2, 4, 3, 3);
    for (cell, layer, names) in CELLS {
        let width = steps * 2 * hidden;
        let body = format!("{layer}({hidden}, num_layers: 2, bidirectional: true)");
        let g = sequence_graph(&body, (steps, inputs), width);
        let rows = cell.gates() * hidden;
        // PyTorch's `weight_ih_l{k}` reads `ins` features: the input's, then 2·H.
        let torch = |k: f64, ins: usize| TorchWeights {
            w_ih: vals(rows * ins, 1.3 + k, 0.1, 0.5),
            w_hh: vals(rows * hidden, 0.9 + k, 0.2, 0.5),
            b_ih: vals(rows, 2.1 + k, 0.5, 0.3),
            b_hh: vals(rows, 1.7 + k, 0.4, 0.3),
        };
        let l0 = [torch(0.0, inputs), torch(0.37, inputs)];
        let l1 = [torch(0.61, 2 * hidden), torch(0.83, 2 * hidden)];
        // nnc's parameters in the graph's order: layer 0's two directions, then layer 1's.
        let values: Vec<Vec<f64>> = [(&l0[0], inputs), (&l0[1], inputs)]
            .into_iter()
            .chain([(&l1[0], 2 * hidden), (&l1[1], 2 * hidden)])
            .flat_map(|(p, ins)| nnc_direction(cell, p, ins))
            .collect();
        param_paths(&g, layer, names, &["", "_reverse", "_l1", "_l1_reverse"]);
        let x = vals(batch * steps * inputs, 0.7, 0.3, 1.0);
        let target = vec![0.0; batch * width];
        let want: Vec<f64> = x
            .chunks(steps * inputs)
            .flat_map(|s| {
                let h = cell.bidirectional(s, inputs, [&l0[0], &l0[1]]);
                cell.bidirectional(&h, 2 * hidden, [&l1[0], &l1[1]])
            })
            .collect();
        let out = nnc::interp::eval(&g, batch, &[x, target], &values, CTX).unwrap();
        let y = &out[g.output("output").unwrap().index()];
        assert_eq!(y.len(), want.len());
        for (k, (a, b)) in y.iter().zip(&want).enumerate() {
            close(&format!("{layer} interpreter output[{k}]"), *a, *b, EXACT);
        }
    }
}

/// PyTorch's forward formula of an activation (`aten/src/ATen/native/cpu/Activation.cpp`,
/// `UnaryOpsKernel.cpp`), by its `nnc` name and arguments, in f64.
fn torch_act(name: &str, x: f64) -> f64 {
    match name {
        "leaky_relu" => torch_leaky(x, f32_arg(0.01)),
        "leaky_relu(-0.2)" => torch_leaky(x, f32_arg(-0.2)),
        "elu" => torch_elu(x, 1.0),
        "elu(alpha: 0.3)" => torch_elu(x, f32_arg(0.3)),
        // x·½·(1 + erf(x/√2)).
        "gelu" => x * 0.5 * (1.0 + simpson_erf(x * std::f64::consts::FRAC_1_SQRT_2)),
        "gelu(approximate: \"tanh\")" => {
            let (k_beta, k_kappa) = ((2.0 / std::f64::consts::PI).sqrt(), 0.044715);
            0.5 * x * (1.0 + (k_beta * (x + k_kappa * x * x * x)).tanh())
        }
        "silu" => x / (1.0 + (-x).exp()),
        "softplus" => torch_softplus(x, 1.0, 20.0),
        "softplus(beta: 2, threshold: 2.5)" => torch_softplus(x, 2.0, 2.5),
        _ => panic!("{name}"),
    }
}

/// PyTorch's backward formula (`tools/autograd/derivatives.yaml` and the CPU kernels:
/// `leaky_relu_backward`, `elu_backward` with `is_result = false`, `gelu_backward`,
/// `silu_backward`, `softplus_backward`): d output / d input at `x`.
fn torch_act_grad(name: &str, x: f64) -> f64 {
    let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
    match name {
        "leaky_relu" | "leaky_relu(-0.2)" => {
            let negval = f32_arg(if name == "leaky_relu" { 0.01 } else { -0.2 });
            if x > 0.0 {
                1.0
            } else {
                negval
            }
        }
        "elu" | "elu(alpha: 0.3)" => {
            let alpha = f32_arg(if name == "elu" { 1.0 } else { 0.3 });
            if x <= 0.0 {
                alpha * x.exp()
            } else {
                1.0
            }
        }
        "gelu" => {
            let k_beta = std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2 * 0.5;
            let cdf = 0.5 * (1.0 + simpson_erf(x * std::f64::consts::FRAC_1_SQRT_2));
            let pdf = k_beta * (x * x * -0.5).exp();
            cdf + x * pdf
        }
        "gelu(approximate: \"tanh\")" => {
            let k_beta = std::f64::consts::SQRT_2 * std::f64::consts::FRAC_2_SQRT_PI * 0.5;
            let k_kappa = 0.044715;
            let inner = k_beta * (x + k_kappa * x * x * x);
            let t = inner.tanh();
            let left = 0.5 * x;
            let right = 1.0 + t;
            let left_derivative = 0.5 * right;
            let right_derivative = left * (1.0 - t * t) * k_beta * (1.0 + 3.0 * k_kappa * x * x);
            left_derivative + right_derivative
        }
        "silu" => {
            let s = sigmoid(x);
            s * (1.0 + x * (1.0 - s))
        }
        "softplus" | "softplus(beta: 2, threshold: 2.5)" => {
            let (beta, threshold) = if name == "softplus" {
                (1.0, 20.0)
            } else {
                (2.0, 2.5)
            };
            let z = (x * beta).exp();
            if x * beta > threshold {
                1.0
            } else {
                z / (z + 1.0)
            }
        }
        _ => panic!("{name}"),
    }
}

/// An activation's argument as the IR holds it: an f32.
fn f32_arg(v: f32) -> f64 {
    f64::from(v)
}

fn torch_leaky(x: f64, negval: f64) -> f64 {
    if x > 0.0 {
        x
    } else {
        x * negval
    }
}

fn torch_elu(x: f64, alpha: f64) -> f64 {
    if x <= 0.0 {
        x.exp_m1() * alpha
    } else {
        x
    }
}

fn torch_softplus(x: f64, beta: f64, threshold: f64) -> f64 {
    if x * beta > threshold {
        x
    } else {
        (x * beta).exp().ln_1p() / beta
    }
}

/// erf(x) = 2/√π ∫₀ˣ e^{−t²} dt by Simpson's rule on 4000 intervals (to about 1e-14 here),
/// independent of the interpreter's series and continued fraction.
fn simpson_erf(x: f64) -> f64 {
    let n = 4000;
    let h = x / n as f64;
    let f = |t: f64| (-t * t).exp();
    let inner: f64 = (1..n)
        .map(|i| f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 })
        .sum();
    (f(0.0) + inner + f(x)) * h / 3.0 * std::f64::consts::FRAC_2_SQRT_PI
}

/// The interpreter's erf (a series below 2, a continued fraction above) is Simpson's rule on
/// the defining integral, on both branches and where they meet.
#[test]
fn interpreter_erf_is_the_integral() {
    for k in -40..=45 {
        let x = f64::from(k) * 0.1;
        let (got, want) = (nnc::interp::erf(x), simpson_erf(x));
        assert!(
            (got - want).abs() < 1e-13,
            "erf({x}) = {got}, Simpson {want}"
        );
    }
}

/// Each new activation after a dense layer, `x |> dense(6) |> act`, then `mse_loss`, as PyTorch
/// computes it: `nn.Linear(6, 6)` (nnc's weight is its transpose), the activation's forward and
/// backward formulas above, written out in plain Rust (f64), the dense layer's gradients by the
/// chain rule; the activations' arguments are the f32 values the IR holds. Inputs up to ±3.9 (and pre-activations beyond) cover both pieces of each
/// activation and softplus' linear region past its threshold.
#[test]
fn activations_are_pytorchs() {
    let (b, n) = (2, 6);
    let x = vals(b * n, 0.7, 0.3, 3.9);
    let t = vals(b * n, 0.45, 1.1, 0.5);
    let w = vals(n * n, 1.3, 0.1, 0.8); // nnc's [in, out]
    let bias = vals(n, 2.1, 0.5, 0.5);
    for act in [
        "leaky_relu",
        "leaky_relu(-0.2)",
        "elu",
        "elu(alpha: 0.3)",
        "gelu",
        "gelu(approximate: \"tanh\")",
        "silu",
        "softplus",
        "softplus(beta: 2, threshold: 2.5)",
    ] {
        // `leaky_relu(-0.2)`: PyTorch's positional `negative_slope`.
        let src = format!(
            "model M(x: [{n}]) -> [{n}] {{ return x |> dense({n}) |> {act} }}\n{}\n\
             train M on d {{ loss: mse(output, label) optimizer: sgd(lr: 0.1) }}",
            inline(n, n)
        );
        let g = run_graph(&src, "M");
        // The reference: z = x·W + b, y = act(z), loss = mean((y − t)²).
        let mut loss = 0.0;
        let mut dz = vec![0.0; b * n];
        for s in 0..b {
            for j in 0..n {
                let z: f64 = bias[j] + (0..n).map(|k| x[s * n + k] * w[k * n + j]).sum::<f64>();
                let y = torch_act(act, z);
                let d = y - t[s * n + j];
                loss += d * d / (b * n) as f64;
                dz[s * n + j] = 2.0 * d / (b * n) as f64 * torch_act_grad(act, z);
            }
        }
        let gw: Vec<f64> = (0..n * n)
            .map(|e| (0..b).map(|s| x[s * n + e / n] * dz[s * n + e % n]).sum())
            .collect();
        let gb: Vec<f64> = (0..n)
            .map(|j| (0..b).map(|s| dz[s * n + j]).sum())
            .collect();
        println!("{act}: loss {loss}");
        matches_numpy(
            &g,
            b,
            &[x.clone(), t.clone()],
            &[("dense1.weight", w.clone()), ("dense1.bias", bias.clone())],
            &Reference {
                loss,
                grads: &[("dense1.weight", &gw), ("dense1.bias", &gb)],
            },
            1e-12,
        );
    }
}

/// Asserts that the interpreter's `output` of `g` on `inputs` and `params` (in the graph's
/// order) is `want`, element by element, to rounding.
fn output_is(g: &Graph, batch: usize, inputs: &[Vec<f64>], params: &[Vec<f64>], want: &[f64]) {
    let out = nnc::interp::eval(g, batch, inputs, params, CTX).unwrap();
    let y = &out[g.output("output").unwrap().index()];
    assert_eq!(y.len(), want.len());
    for (k, (a, b)) in y.iter().zip(want).enumerate() {
        close(&format!("{} output[{k}]", g.name), *a, *b, EXACT);
    }
}

/// PyTorch's `nn.ConvTranspose2d(C, O, k, stride=s, padding=p, output_padding=op)` forward, in
/// f64, on its own weight layout `[C, O, k, k]`, as its documentation defines it: every input
/// value `x[b,c,h,w]` adds `x·weight[c,o,ki,kj]` to output `[b, o, h·s − p + ki, w·s − p + kj]`
/// where that lies inside the `(H − 1)·s − 2p + k + op` rows (and columns likewise), then the
/// bias. `dims` = (B, C, H, W, O); returns the output and its (H', W').
fn torch_conv_transpose(
    x: &[f64],
    (b, c, h, w, o): (usize, usize, usize, usize, usize),
    weight: &[f64],
    bias: &[f64],
    (k, s, p, op): (usize, usize, usize, usize),
) -> (Vec<f64>, (usize, usize)) {
    let (oh, ow) = ((h - 1) * s + k + op - 2 * p, (w - 1) * s + k + op - 2 * p);
    let mut y = vec![0.0; b * o * oh * ow];
    for (n, plane) in y.chunks_mut(oh * ow).enumerate() {
        plane.iter_mut().for_each(|v| *v = bias[n % o]);
    }
    for_each_transposed_tap((b, c, h, w, o), (k, s, p), (oh, ow), |xi, wi, yi| {
        y[yi] += x[xi] * weight[wi];
    });
    (y, (oh, ow))
}

/// Calls `f(x index, weight index, output index)` for every term of a transposed convolution
/// (the scatter of [`torch_conv_transpose`]) whose output position lies inside `(oh, ow)`.
fn for_each_transposed_tap(
    (b, c, h, w, o): (usize, usize, usize, usize, usize),
    (k, s, p): (usize, usize, usize),
    (oh, ow): (usize, usize),
    mut f: impl FnMut(usize, usize, usize),
) {
    for (n, ci, i, j) in product4(b, c, h, w) {
        for oc in 0..o {
            for ki in 0..k {
                for kj in 0..k {
                    let (r, col) = (i * s + ki, j * s + kj);
                    if r < p || col < p || r - p >= oh || col - p >= ow {
                        continue;
                    }
                    let xi = ((n * c + ci) * h + i) * w + j;
                    let wi = ((ci * o + oc) * k + ki) * k + kj;
                    let yi = ((n * o + oc) * oh + r - p) * ow + col - p;
                    f(xi, wi, yi);
                }
            }
        }
    }
}

/// Every (a, b, c, d) below the bounds, row-major.
fn product4(
    a: usize,
    b: usize,
    c: usize,
    d: usize,
) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    (0..a).flat_map(move |i| {
        (0..b).flat_map(move |j| (0..c).flat_map(move |k| (0..d).map(move |l| (i, j, k, l))))
    })
}

/// The mean squared error of `y` against `t` and its gradient 2(y − t)/n.
fn mse_and_grad(y: &[f64], t: &[f64]) -> (f64, Vec<f64>) {
    let n = y.len() as f64;
    let loss = y.iter().zip(t).map(|(a, b)| (a - b) * (a - b)).sum::<f64>() / n;
    (
        loss,
        y.iter().zip(t).map(|(a, b)| 2.0 * (a - b) / n).collect(),
    )
}

/// `conv_transpose2d(3, kernel: k, stride: s, padding: p, output_padding: op)` on a non-square
/// 3×4 image of 2 channels as PyTorch's `nn.ConvTranspose2d(2, 3, k, s, p, op)`, then
/// `mse_loss`, over strides 1 to 3, paddings and output paddings: the output size, the
/// initialization's bound (PyTorch's fan_in of a transposed convolution is weight.size(1)·k·k,
/// its output channels), the output, the loss, and the gradients, written directly from the
/// scatter:
/// `dW[c,o,ki,kj] = Σ x[b,c,h,w]·dy[b,o,h·s − p + ki, w·s − p + kj]`, `db[o] = Σ dy[b,o,·,·]`.
#[test]
fn conv_transpose2d_is_pytorchs() {
    let (b, c, h, w, o) = (2, 2, 3, 4, 3);
    for (k, s, p, op) in [
        (3, 1, 1, 0),
        (2, 2, 0, 0),
        (3, 2, 1, 1),
        (3, 3, 1, 2),
        (4, 2, 1, 0),
        (5, 3, 2, 1),
        (2, 3, 2, 2),
    ] {
        let x = vals(b * c * h * w, 0.7, 0.3, 1.0);
        let weight = vals(c * o * k * k, 1.3, 0.1, 0.3);
        let bias = vals(o, 2.1, 0.5, 0.2);
        let (y, (oh, ow)) =
            torch_conv_transpose(&x, (b, c, h, w, o), &weight, &bias, (k, s, p, op));
        let per = o * oh * ow;
        let src = format!(
            "model M(image: [{c}, {h}, {w}]) -> [{per}] {{
                 return image |> conv_transpose2d({o}, kernel: {k}, stride: {s}, padding: {p}, \
                                                  output_padding: {op}) |> flatten
             }}
             {}
             train M on d {{ loss: mse(output, label) optimizer: sgd(lr: 0.1) }}",
            inline(c * h * w, per)
        );
        let g = run_graph(&src, "M");
        let case = format!("k {k} s {s} p {p} op {op}");
        let bound = 1.0 / ((o * k * k) as f32).sqrt();
        for (param, dims) in g.params.iter().zip([vec![c, o, k, k], vec![o]]) {
            assert_eq!(param.dims, dims, "{case}: {}", param.path);
            assert_eq!(param.init, nnc::ir::Init::Uniform { bound }, "{case}");
        }
        let t = vals(b * per, 0.45, 1.1, 0.5);
        let ps = [weight.clone(), bias.clone()];
        output_is(&g, b, &[x.clone(), t.clone()], &ps, &y);
        let (loss, dy) = mse_and_grad(&y, &t);
        let mut dw = vec![0.0; weight.len()];
        for_each_transposed_tap((b, c, h, w, o), (k, s, p), (oh, ow), |xi, wi, yi| {
            dw[wi] += x[xi] * dy[yi];
        });
        let db: Vec<f64> = (0..o)
            .map(|oc| {
                dy.chunks(oh * ow)
                    .enumerate()
                    .filter(|(n, _)| n % o == oc)
                    .flat_map(|(_, plane)| plane)
                    .sum()
            })
            .collect();
        matches_numpy(
            &g,
            b,
            &[x, t],
            &[
                ("conv_transpose1.weight", weight),
                ("conv_transpose1.bias", bias),
            ],
            &Reference {
                loss,
                grads: &[
                    ("conv_transpose1.weight", &dw),
                    ("conv_transpose1.bias", &db),
                ],
            },
            EXACT,
        );
    }
}

/// `x: [c, h, w] |> conv2d(c, kernel: 1) |> {layer} |> flatten` under `mse_loss` against
/// `per` targets a sample, for a batch of `b` (`dims` = (b, c, h, w)), against PyTorch's
/// `nn.Conv2d(c, c, 1)` and the layer's formulas in f64: `layer_of` maps the convolution's
/// output z to the layer's output y and its gradient dy back to dz. Checks the output, the
/// loss and the convolution's gradients (through the layer's), written directly.
fn after_one_by_one_conv(
    layer: &str,
    (b, c, h, w): (usize, usize, usize, usize),
    per: usize,
    layer_of: impl Fn(&[f64]) -> (Vec<f64>, Box<dyn Fn(&[f64]) -> Vec<f64>>),
) {
    let src = format!(
        "model M(image: [{c}, {h}, {w}]) -> [{per}] {{
             return image |> conv2d({c}, kernel: 1) |> {layer} |> flatten
         }}
         {}
         train M on d {{ loss: mse(output, label) optimizer: sgd(lr: 0.1) }}",
        inline(c * h * w, per)
    );
    let g = run_graph(&src, "M");
    let x = vals(b * c * h * w, 0.7, 0.3, 1.0);
    let weight = vals(c * c, 1.3, 0.1, 0.3);
    let bias = vals(c, 2.1, 0.5, 0.2);
    let t = vals(b * per, 0.45, 1.1, 0.5);
    let z: Vec<f64> = product4(b, c, h, w)
        .map(|(n, oc, i, j)| {
            bias[oc]
                + (0..c)
                    .map(|ci| weight[oc * c + ci] * x[((n * c + ci) * h + i) * w + j])
                    .sum::<f64>()
        })
        .collect();
    let (y, back) = layer_of(&z);
    let ps = [weight.clone(), bias.clone()];
    output_is(&g, b, &[x.clone(), t.clone()], &ps, &y);
    let (loss, dy) = mse_and_grad(&y, &t);
    let dz = back(&dy);
    let mut dw = vec![0.0; c * c];
    let mut db = vec![0.0; c];
    for (zi, (n, oc, i, j)) in product4(b, c, h, w).enumerate() {
        db[oc] += dz[zi];
        for ci in 0..c {
            dw[oc * c + ci] += dz[zi] * x[((n * c + ci) * h + i) * w + j];
        }
    }
    matches_numpy(
        &g,
        b,
        &[x, t],
        &[("conv1.weight", weight), ("conv1.bias", bias)],
        &Reference {
            loss,
            grads: &[("conv1.weight", &dw), ("conv1.bias", &db)],
        },
        EXACT,
    );
}

/// `upsample(s)` as PyTorch's `nn.Upsample(scale_factor=s, mode='nearest')` (output
/// `[b,c,i,j] = z[b,c,⌊i/s⌋,⌊j/s⌋]`) on a non-square 3×2 image: its gradient is each block's
/// sum of dy.
#[test]
fn upsample_is_pytorchs_nearest() {
    let (b, c, h, w) = (2, 2, 3, 2);
    for (s, spelling) in [(2, "upsample(2)"), (3, "upsample(scale_factor: 3)")] {
        let (oh, ow) = (h * s, w * s);
        // The index into z that output `[n, ch, i, j]` repeats.
        let source = move |(n, ch, i, j): (usize, usize, usize, usize)| {
            ((n * c + ch) * h + i / s) * w + j / s
        };
        after_one_by_one_conv(spelling, (b, c, h, w), c * oh * ow, |z| {
            let y = product4(b, c, oh, ow).map(|o| z[source(o)]).collect();
            let n = z.len();
            let back = move |dy: &[f64]| {
                let mut dz = vec![0.0; n];
                for (o, d) in product4(b, c, oh, ow).zip(dy) {
                    dz[source(o)] += d;
                }
                dz
            };
            (y, Box::new(back))
        });
    }
}

/// `maxpool(k, stride: s, padding: p)` and `avgpool(…)` as PyTorch's `nn.MaxPool2d(k, s, p)`
/// and `nn.AvgPool2d(k, s, p)` on a non-square 5×6 image, over windows of 2 to 5, strides 1
/// to 3 and paddings up to half the window: the output size ⌊(H + 2p − k)/s⌋ + 1; each
/// window's maximum over its taps inside the image (the padding is −∞), or its sum over them
/// divided by k·k (the padding counts as zeros, `count_include_pad=True`); and the gradient,
/// dy routed to each window's first maximum (row-major) or spread over its taps divided by k·k.
#[test]
fn padded_pools_are_pytorchs() {
    let (b, c, h, w) = (2, 2, 5, 6);
    for (k, s, p) in [(3, 2, 1), (2, 2, 1), (3, 1, 1), (5, 2, 2), (4, 3, 2)] {
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        // The indices into z of each window's taps inside the image, row-major.
        let inside = |from: usize, len: usize| {
            (from..from + k).filter_map(move |r| r.checked_sub(p).filter(|r| *r < len))
        };
        let windows: Vec<Vec<usize>> = product4(b, c, oh, ow)
            .map(|(n, ch, i, j)| {
                inside(i * s, h)
                    .flat_map(|r| inside(j * s, w).map(move |q| ((n * c + ch) * h + r) * w + q))
                    .collect()
            })
            .collect();
        let div = (k * k) as f64;
        for max in [true, false] {
            let pool = if max { "maxpool" } else { "avgpool" };
            let layer = format!("{pool}({k}, stride: {s}, padding: {p})");
            after_one_by_one_conv(&layer, (b, c, h, w), c * oh * ow, |z| {
                let first_max = |t: &[usize]| {
                    t.iter()
                        .copied()
                        .reduce(|best, q| if z[q] > z[best] { q } else { best })
                        .unwrap()
                };
                let picked: Vec<usize> = windows.iter().map(|t| first_max(t)).collect();
                let y = match max {
                    true => picked.iter().map(|&q| z[q]).collect(),
                    false => (windows.iter())
                        .map(|t| t.iter().map(|&q| z[q]).sum::<f64>() / div)
                        .collect(),
                };
                let (windows, n) = (windows.clone(), z.len());
                let back = move |dy: &[f64]| {
                    let mut dz = vec![0.0; n];
                    for ((t, q), d) in windows.iter().zip(&picked).zip(dy) {
                        match max {
                            true => dz[*q] += d,
                            false => t.iter().for_each(|&q| dz[q] += d / div),
                        }
                    }
                    dz
                };
                (y, Box::new(back))
            });
        }
    }
}
