//! `rmsprop` and `clip_grad_norm` through whole training runs (checker, autodiff, JIT with and
//! without fused updates, the reference interpreter, the training loop) against an independent
//! numpy re-implementation of PyTorch's formulas.
//!
//! The model is one dense layer, y = x·W + b (x has 3 features, y 2), with the mse loss on 4
//! inline samples in one batch, from weights written here (`--init`), for 8 steps. The expected
//! numbers were produced by `python3 tools/optim_reference.py` (torch.optim.RMSprop's documented
//! algorithm, torch.nn.utils.clip_grad_norm_ between backward and step, SGD and Adam with their
//! weight decay added to the clipped gradient, all in float64), not by nnc.

mod common;

use common::Scratch;
use nnc::runtime::checkpoint::{save, Saved};
use nnc::runtime::train::{Backend, Session, Tensors, TrainOptions};
use std::path::Path;

const W0: [f32; 6] = [0.5, -0.3, 0.2, 0.8, -0.6, 0.1];
const B0: [f32; 2] = [0.1, -0.2];

fn source(optimizer: &str, clip: Option<f64>) -> String {
    let clip = clip.map_or(String::new(), |c| format!("clip_grad_norm: {c}"));
    format!(
        r#"
model Lin(x: [3]) -> [2] {{
    return x |> dense(2)
}}

data pts {{
    train: inline(
        x: [[1, 2, 0.5], [0, -1, 1], [2, 0.5, -1], [-1, 1, 1.5]],
        y: [[1, 0], [0, 1], [1, 1], [0, 0.5]]
    )
}}

train Lin on pts {{
    loss: mse(output, label)
    optimizer: {optimizer}
    batch: 4
    steps: 8
    shuffle: false
    {clip}
}}
"#
    )
}

/// The final parameters of 8 steps of `optimizer` (clipping at `clip`) from W0, B0 on
/// `backend`, and the `grad_norm` of each step's log record.
fn train(
    dir: &Path,
    backend: Backend,
    optimizer: &str,
    clip: Option<f64>,
) -> (Tensors, Vec<Option<f64>>) {
    let init = dir.join("init.safetensors");
    save(
        &init,
        &[
            Saved {
                name: "dense1.weight".into(),
                dims: &[3, 2],
                data: &W0,
            },
            Saved {
                name: "dense1.bias".into(),
                dims: &[2],
                data: &B0,
            },
        ],
        None,
    )
    .unwrap();
    let src = source(optimizer, clip);
    let ast = nnc::syntax::parse(&src).unwrap_or_else(|d| panic!("{d:?}"));
    let program = nnc::check::check(&ast).unwrap_or_else(|d| panic!("{d:?}"));
    let log = dir.join("log.jsonl");
    let _ = std::fs::remove_file(&log);
    let options = TrainOptions {
        quiet: true,
        init: Some(init),
        log_json: Some(log.clone()),
        ..TrainOptions::default()
    };
    let mut s = Session::new(&program, backend, options).unwrap();
    s.run("Lin").unwrap();
    let params = s.params("Lin").unwrap().clone();
    drop(s);
    let norms = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains(r#""type":"step""#))
        .map(|l| {
            l.split(r#""grad_norm":"#)
                .nth(1)
                .map(|v| v.trim_end_matches('}').parse().unwrap())
        })
        .collect();
    (params, norms)
}

type MakeBackend = fn() -> Backend;

fn backends() -> [(&'static str, MakeBackend); 3] {
    [
        ("jit", || Backend::jit(1)),
        ("jit --opt 0", || Backend::jit_opt(1, 0)),
        ("interpreter", Backend::interpreter),
    ]
}

/// Trains `optimizer` with `clip` on every back end and compares with numpy's W and b within
/// 2e-6 (the largest difference measured was 5.4e-7, f32 rounding over 8 steps) and, when
/// clipping, the norms before clipping within 1e-5 relative.
fn check(optimizer: &str, clip: Option<f64>, w: [f64; 6], b: [f64; 2], norms: &[f64]) {
    let dir = Scratch::new(&format!(
        "{}{}",
        optimizer.replace(|c: char| !c.is_alphanumeric(), "_"),
        clip.map_or(String::new(), |c| format!("_clip{c}"))
    ));
    for (name, backend) in backends() {
        let (p, logged) = train(dir.dir(), backend(), optimizer, clip);
        let got = p["dense1.weight"].data.iter().chain(&p["dense1.bias"].data);
        for (i, (g, e)) in got.zip(w.iter().chain(&b)).enumerate() {
            assert!(
                (*g as f64 - e).abs() <= 2e-6,
                "{name}, {optimizer}, clip {clip:?}: parameter {i} is {g}, numpy says {e}"
            );
        }
        if clip.is_some() {
            assert_eq!(logged.len(), norms.len(), "{name}: one norm a step");
            for (step, (g, e)) in logged.iter().zip(norms).enumerate() {
                let g = g.unwrap_or_else(|| panic!("{name}: step {} logs no grad_norm", step + 1));
                assert!(
                    (g - e).abs() <= 1e-5 * e,
                    "{name}, {optimizer}: the norm of step {} is {g}, numpy says {e}",
                    step + 1
                );
            }
        } else {
            assert!(
                logged.iter().all(Option::is_none),
                "{name}: grad_norm logged without clipping"
            );
        }
    }
}

#[test]
fn rmsprop_with_its_defaults() {
    check(
        "rmsprop(lr: 0.01)",
        None,
        [
            0.1983246338612589,
            -0.015957590172768973,
            0.23997650635793,
            0.3875207015539757,
            -0.3024601982692576,
            -0.024349092063781098,
        ],
        [0.36860801798446297, 0.1874774728817461],
        &[],
    );
}

#[test]
fn rmsprop_with_momentum() {
    check(
        "rmsprop(lr: 0.01, momentum: 0.9)",
        None,
        [
            -0.04771959242883428,
            0.17057825217805822,
            0.141418328135324,
            -0.6961008399414848,
            -0.07218218204219755,
            0.1376819886204501,
        ],
        [0.5459904229629695, 1.0705080447749231],
        &[],
    );
}

#[test]
fn rmsprop_centered() {
    check(
        "rmsprop(lr: 0.01, centered: true)",
        None,
        [
            0.19631121620995315,
            -0.013750502882967312,
            0.2396567132915563,
            0.38044536524978473,
            -0.30026246427445563,
            -0.023842090004921546,
        ],
        [0.37016751287517663, 0.19332973642209839],
        &[],
    );
}

#[test]
fn rmsprop_with_every_option() {
    check(
        "rmsprop(lr: 0.005, alpha: 0.9, eps: 1e-3, momentum: 0.5, weight_decay: 0.1, centered: true)",
        None,
        [
            0.34922400229630146,
            -0.1561115443807003,
            0.26205714452609447,
            0.6407582686241481,
            -0.4520829447975232,
            -0.022726764923837788,
        ],
        [0.23618746017337783, -0.04314200604749102],
        &[],
    );
}

/// Every step's norm (1.66 falling to 1.19) is above 0.5: every step is clipped.
#[test]
fn clipping_above_the_threshold() {
    check(
        "sgd(lr: 0.1)",
        Some(0.5),
        [
            0.3683804686122977,
            -0.15457321199752005,
            0.23200562366702965,
            0.5493068073846883,
            -0.4138162985937094,
            0.052029608213652365,
        ],
        [0.17583285400907686, -0.07956515586878958],
        &[
            1.6648949270424558,
            1.5927580409902444,
            1.5218515307090839,
            1.4522444677268205,
            1.384007538987856,
            1.3172122227220893,
            1.251929703871,
            1.1882294924764703,
        ],
    );
}

/// Below the threshold nothing is clipped: the run is plain SGD, and on the JIT bit for bit
/// the run without `clip_grad_norm` (whose updates are fused into the backward pass).
#[test]
fn clipping_below_the_threshold() {
    let w = [
        0.26237594022649413,
        0.012362019624764999,
        0.2524963095232874,
        0.22986276661911562,
        -0.24540781560736244,
        0.03916487665568545,
    ];
    let b = [0.2521189693903156, 0.12018014372079436];
    let norms = [
        1.6648949270424558,
        1.4274335999529322,
        1.236816048148908,
        1.0827984030151303,
        0.9572504076726309,
        0.8537838428239087,
        0.7674358495416405,
        0.6943941152633234,
    ];
    check("sgd(lr: 0.1)", Some(100.0), w, b, &norms);
    check("sgd(lr: 0.1)", None, w, b, &[]);
    let dir = Scratch::new("below_bitwise");
    let (clipped, _) = train(dir.dir(), Backend::jit(1), "sgd(lr: 0.1)", Some(100.0));
    let (plain, _) = train(dir.dir(), Backend::jit(1), "sgd(lr: 0.1)", None);
    for (k, t) in &plain {
        let bits = |d: &[f32]| d.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&t.data), bits(&clipped[k].data), "`{k}` differs");
    }
}

/// Adam's weight decay (0.5·p, larger than the clipped gradient) is added after clipping: were
/// it clipped with the gradient, numpy's weights would differ by up to 0.14 (`W[1][0]` 0.22
/// instead of 0.12).
#[test]
fn clipping_comes_before_weight_decay() {
    check(
        "adam(lr: 0.01, weight_decay: 0.5)",
        Some(0.1),
        [
            0.42045749427119145,
            -0.2206792579963473,
            0.12218217169043277,
            0.7201780687096805,
            -0.5202680452390483,
            0.022997412360301263,
        ],
        [0.03586482402675452, -0.12087244721960151],
        &[
            1.6648949270424558,
            1.6379858888640992,
            1.6123831010869494,
            1.5880877810711473,
            1.5650475058481008,
            1.5431389243550007,
            1.5221629446455573,
            1.501869824917539,
        ],
    );
}

/// Every step is clipped (the norms stay above 0.3). RMSprop divides by the root of a running
/// mean of g², so a constant scale would cancel out; the scale changes from step to step here.
#[test]
fn clipping_with_rmsprop_centered_and_momentum() {
    check(
        "rmsprop(lr: 0.01, momentum: 0.9, centered: true)",
        Some(0.3),
        [
            0.055749233486957,
            0.11969559717248605,
            0.21902656438430348,
            -0.8587245871173959,
            -0.17927350111315848,
            0.125733837353129,
        ],
        [0.4823281780258695, 1.1632205397765882],
        &[
            1.6648949270424558,
            1.3160436149486088,
            0.9465210435424511,
            0.829609176782328,
            0.8890220865998869,
            0.9035717151013929,
            0.8201974963570864,
            0.7010915354259468,
        ],
    );
}
