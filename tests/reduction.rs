//! `reduction: "sum"` on the losses, as PyTorch's `reduction='sum'`: the gradients of every
//! summed loss against finite differences; the sum equal to the mean times the number of terms
//! on a batch, with a step on it at `lr / count` the mean's step at `lr` (on the JIT and the
//! interpreter, and on a real MNIST batch of the autoencoder's `binary_cross_entropy`); the
//! same training on both back ends with a short last batch; the test loss that `nnc train`
//! and `nnc eval` report computed here by hand from the checkpoint; and two data-parallel
//! ranks that average the gradients of their sums, as PyTorch's DDP.

mod common;

use common::{nnc, random_inputs, Lcg, Scratch};
use nnc::autodiff::gradcheck::{gradcheck, interpreter_grads, F64_FLOOR};
use nnc::exec::StepCtx;
use nnc::ir::Program;
use nnc::runtime::dist::{Comm, CommError};
use nnc::runtime::train::{Backend, RunSummary, Session, Tensors, TrainOptions};
use std::rc::Rc;
use std::sync::{Arc, Barrier, Mutex};

/// Five training and three test samples of three features, with two targets in [0, 1]
/// (`pts`) or a class id among four (`cls`); a model for each loss. `{loss}` and `{lr}` are
/// the run's.
const NETS: &str = r#"
model Reg(x: [3]) -> [2] { return x |> dense(2) }
model Prob(x: [3]) -> [2] { return x |> dense(2) |> sigmoid }
model Cls(x: [3]) -> [4] { return x |> dense(4) }
data pts {
    train: inline(
        x: [[0.5, -1, 2], [1, 0.25, -0.5], [-1.5, 1, 0], [2, 2, -1], [0, -0.5, 1.5]],
        y: [[0.2, 0.9], [1, 0], [0.5, 0.5], [0, 0.3], [0.8, 0.1]]
    )
    test: inline(
        x: [[1, 1, 1], [-1, 0.5, 2], [0.25, -2, 0.5]],
        y: [[0.4, 0.6], [1, 1], [0, 0.7]]
    )
}
data cls {
    train: inline(
        x: [[0.5, -1, 2], [1, 0.25, -0.5], [-1.5, 1, 0], [2, 2, -1], [0, -0.5, 1.5]],
        y: [[0], [3], [1], [2], [3]]
    )
}
"#;

/// The losses with `reduction: "sum"`: the run's model and data, the loss, and the number of
/// terms a batch of `b` sums.
const LOSSES: [(&str, &str, &str, usize); 5] = [
    (
        "Reg on pts",
        "mse(output, label, reduction: \"sum\")",
        "mse",
        2,
    ),
    (
        "Prob on pts",
        "binary_cross_entropy(output, label, reduction: \"sum\")",
        "bce",
        2,
    ),
    (
        "Cls on cls",
        "cross_entropy(output, label, reduction: \"sum\")",
        "ce",
        1,
    ),
    (
        "Cls on cls",
        "cross_entropy(output, label, label_smoothing: 0.1, reduction: \"sum\")",
        "smoothed",
        1,
    ),
    (
        "Reg on pts",
        "kl_div(label, output, reduction: \"sum\")",
        "kl",
        1,
    ),
];

fn program(src: &str) -> Program {
    let ast = nnc::syntax::parse(src).unwrap_or_else(|d| panic!("{d:?}"));
    nnc::check::check(&ast).unwrap_or_else(|d| panic!("{d:?}"))
}

/// A file with one run `name` of `model_on_data` training `loss`.
fn file(name: &str, model_on_data: &str, loss: &str, train: &str) -> String {
    format!("{NETS}\ntrain {name}: {model_on_data} {{\n    loss: {loss}\n{train}\n}}\n")
}

fn quiet() -> TrainOptions {
    TrainOptions {
        quiet: true,
        ..TrainOptions::default()
    }
}

/// Runs the only run of `p`: its summary and parameters.
fn train(p: &Program, backend: Backend, opts: TrainOptions) -> (RunSummary, Tensors) {
    let mut s = Session::new(p, backend, opts).unwrap();
    let sum = s.run_all().unwrap().remove(0);
    (sum, s.params(&p.runs[0].name).unwrap().clone())
}

/// The analytic gradients of every summed loss (autodiff, on the interpreter) agree with
/// central finite differences of the loss, parameters drawn in ±1 and inputs in [0, 1).
#[test]
fn the_gradients_of_summed_losses_match_finite_differences() {
    let ctx = StepCtx {
        seed: 1,
        step: 1,
        first: 0,
    };
    for (i, (on, loss, name, _)) in LOSSES.iter().enumerate() {
        let p = program(&file(
            name,
            on,
            loss,
            "    optimizer: sgd(lr: 0.1)\n    batch: 3",
        ));
        let g = &p.runs[0].graph;
        assert!(
            g.nodes
                .iter()
                .any(|n| matches!(n.op, nnc::ir::Op::MeanToSum { .. })),
            "{name}: no sum"
        );
        let mut rng = Lcg(7 + i as u64);
        let batch = 3;
        let inputs = random_inputs(g, batch, 4, &mut rng);
        let params: Vec<Vec<f64>> = g
            .params
            .iter()
            .map(|p| (0..p.numel()).map(|_| 2.0 * rng.next() - 1.0).collect())
            .collect();
        let grad = nnc::autodiff::grad(g).unwrap();
        let mut analytic = interpreter_grads(&grad, batch, &inputs, ctx);
        let r = gradcheck(g, &mut analytic, batch, &inputs, &params, ctx, F64_FLOOR).unwrap();
        assert!(r.loss.is_finite() && r.loss > 0.0, "{name}: {r}");
        assert!(r.max_rel_err() < 1e-6, "{name}:\n{r}");
    }
}

/// On the first batch of four samples, each summed loss is the mean loss times its number of
/// terms (elements, or rows of classes) to f32 rounding, and one SGD step on the sum at
/// `lr / count` gives the parameters of one step on the mean at `lr`: the gradient is the
/// mean's times the count. On the JIT and on the interpreter.
#[test]
fn the_sum_is_the_mean_times_the_count_and_so_is_its_gradient() {
    for (on, loss, name, per_sample) in LOSSES {
        let count = (4 * per_sample) as f64;
        let train = |loss: &str, lr: f64, backend: Backend| {
            let settings = format!(
                "    optimizer: sgd(lr: {lr})\n    batch: 4\n    steps: 1\n    shuffle: false"
            );
            train(&program(&file(name, on, loss, &settings)), backend, quiet())
        };
        let mean_loss = loss.replace(", reduction: \"sum\"", "");
        let backends: [fn() -> Backend; 2] = [|| Backend::jit(1), Backend::interpreter];
        for backend in backends {
            let (mean, pm) = train(&mean_loss, 0.5, backend());
            let (sum, ps) = train(loss, 0.5 / count, backend());
            let (m, s) = (mean.first_loss.unwrap().1, sum.first_loss.unwrap().1);
            assert!(
                (s - m * count).abs() <= 2e-7 * s.abs(),
                "{name}: sum {s}, mean {m} × {count}"
            );
            for (path, t) in &pm {
                for (a, b) in t.data.iter().zip(&ps[path].data) {
                    assert!((a - b).abs() < 1e-6, "{name} {path}: {a} vs {b}");
                }
            }
        }
    }
}

/// A real batch: 64 MNIST images through the autoencoder, with the binary cross-entropy of a
/// VAE's reconstruction summed over their 784 pixels each (PyTorch's
/// `F.binary_cross_entropy(recon, x, reduction='sum')`): 50 176 times the mean, and the same
/// first step at lr / 50 176.
#[test]
fn a_summed_reconstruction_loss_on_a_real_mnist_batch() {
    let Some(mnist) = common::shared_data("mnist") else {
        return;
    };
    let src = |loss: &str, lr: f64| {
        format!(
            r#"
model Ae(x: [784]) -> [784] {{
    return x |> dense(32) |> relu |> dense(784) |> sigmoid
}}
data mnist {{
    train: idx("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    normalize: x / 255
}}
train recon: Ae on mnist {{
    loss: {loss}
    optimizer: sgd(lr: {lr})
    batch: 64, steps: 1, shuffle: false
}}
"#
        )
    };
    let opts = || TrainOptions {
        data_dir: mnist.clone(),
        ..quiet()
    };
    let count = 64.0 * 784.0;
    let (mean, pm) = train(
        &program(&src("binary_cross_entropy(output, x)", 0.1)),
        Backend::jit(1),
        opts(),
    );
    let (sum, ps) = train(
        &program(&src(
            "binary_cross_entropy(output, x, reduction: \"sum\")",
            0.1 / count,
        )),
        Backend::jit(1),
        opts(),
    );
    let (m, s) = (mean.first_loss.unwrap().1, sum.first_loss.unwrap().1);
    assert!(m > 0.1 && m < 2.0, "mean {m}");
    assert!(
        (s - m * count).abs() <= 2e-7 * s,
        "sum {s}, mean {m} × {count}"
    );
    for (path, t) in &pm {
        for (a, b) in t.data.iter().zip(&ps[path].data) {
            assert!((a - b).abs() < 1e-6, "{path}: {a} vs {b}");
        }
    }
}

/// Twenty steps of Adam in batches of two over five samples (each epoch ends on a batch of
/// one): the JIT and the interpreter end with the same parameters and test loss.
#[test]
fn a_summed_loss_trains_alike_on_the_jit_and_the_interpreter() {
    for (on, loss, name, _) in LOSSES {
        let p = program(&file(
            name,
            on,
            loss,
            "    optimizer: adam(lr: 0.05)\n    batch: 2\n    steps: 20\n    seed: 3",
        ));
        let (jit, jp) = train(&p, Backend::jit(1), quiet());
        let (interp, ip) = train(&p, Backend::interpreter(), quiet());
        assert!(jit.final_loss.is_finite(), "{name}: {jit:?}");
        assert!(
            (jit.final_loss - interp.final_loss).abs() < 1e-4 * (1.0 + interp.final_loss),
            "{name}: {} vs {}",
            jit.final_loss,
            interp.final_loss
        );
        for (path, t) in &jp {
            for (a, b) in t.data.iter().zip(&ip[path].data) {
                assert!(
                    (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                    "{name} {path}: {a} vs {b}"
                );
            }
        }
    }
}

/// `nnc train` then `nnc eval` of a summed mse: both report the test loss computed here from
/// the checkpoint, the squared errors summed over the three test samples, divided by three and
/// times the batch of two: a batch's sum, the unit of the training loss, though the last batch
/// of the evaluation holds one sample.
#[test]
fn train_and_eval_report_a_batchs_summed_loss() {
    let dir = Scratch::new("reduction");
    let src = file(
        "reg",
        "Reg on pts",
        "mse(output, label, reduction: \"sum\")",
        "    optimizer: sgd(lr: 0.05)\n    batch: 2\n    steps: 6\n    seed: 4",
    );
    let nn = dir.write("reg.nn", &src);
    let ck = dir.path("reg.safetensors");
    let log = dir.path("log.jsonl");
    let (nn, ck_arg, log_arg) = (
        nn.to_str().unwrap(),
        ck.to_str().unwrap(),
        log.to_str().unwrap(),
    );
    nnc(&["train", nn, "--quiet", "--checkpoint", ck_arg]);
    nnc(&["eval", nn, "--checkpoint", ck_arg, "--log-json", log_arg]);
    let t = nnc::runtime::checkpoint::Checkpoint::load(&ck)
        .unwrap()
        .tensors;
    let (w, b) = (&t["dense1.weight"].data, &t["dense1.bias"].data);
    let test = [
        ([1.0, 1.0, 1.0], [0.4, 0.6]),
        ([-1.0, 0.5, 2.0], [1.0, 1.0]),
        ([0.25, -2.0, 0.5], [0.0, 0.7]),
    ];
    let mut total = 0.0;
    for (x, y) in test {
        for j in 0..2 {
            let out: f64 = (0..3).map(|i| x[i] * w[i * 2 + j] as f64).sum::<f64>() + b[j] as f64;
            total += (out - y[j]).powi(2);
        }
    }
    let want = total / 3.0 * 2.0;
    let logged = std::fs::read_to_string(&log).unwrap();
    let line: serde_json::Value = serde_json::from_str(logged.lines().last().unwrap()).unwrap();
    let got = line["loss"].as_f64().unwrap_or_else(|| panic!("{logged}"));
    assert!(
        (got - want).abs() < 1e-5 * want,
        "eval {got}, by hand {want}"
    );
    let p = program(&src);
    let (sum, _) = train(&p, Backend::jit(1), quiet());
    let reported = sum.test_loss.unwrap();
    assert!(
        (reported - want).abs() < 1e-5 * want,
        "train {reported}, by hand {want}"
    );
}

/// Ranks that are threads of this process: each collective waits for all of them, then each
/// reads the others' buffers, summed in rank order (the same numbers on every rank).
#[derive(Debug)]
struct Threads {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    barrier: Barrier,
    f32s: Mutex<Vec<Vec<f32>>>,
    f64s: Mutex<Vec<Vec<f64>>>,
}

impl Threads {
    fn all(size: usize) -> Vec<Threads> {
        let shared = Arc::new(Shared {
            barrier: Barrier::new(size),
            f32s: Mutex::new(vec![Vec::new(); size]),
            f64s: Mutex::new(vec![Vec::new(); size]),
        });
        (0..size)
            .map(|rank| Threads {
                rank,
                size,
                shared: shared.clone(),
            })
            .collect()
    }

    /// Puts `buf` beside the other ranks', waits for them, and replaces it by `f` of them all.
    fn exchange<T: Clone>(
        &self,
        slot: &Mutex<Vec<Vec<T>>>,
        buf: &mut [T],
        f: impl Fn(&[Vec<T>], usize) -> T,
    ) {
        slot.lock().unwrap()[self.rank] = buf.to_vec();
        self.shared.barrier.wait();
        {
            let all = slot.lock().unwrap();
            for (i, x) in buf.iter_mut().enumerate() {
                *x = f(&all, i);
            }
        }
        self.shared.barrier.wait();
    }
}

impl Comm for Threads {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<(), CommError> {
        self.exchange(&self.shared.f32s, buf, |all, i| {
            all.iter().map(|b| b[i]).sum()
        });
        Ok(())
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<(), CommError> {
        self.exchange(&self.shared.f64s, buf, |all, i| {
            all.iter().map(|b| b[i]).sum()
        });
        Ok(())
    }
    fn broadcast(&self, buf: &mut [f32]) -> Result<(), CommError> {
        self.exchange(&self.shared.f32s, buf, |all, i| all[0][i]);
        Ok(())
    }
}

/// Data-parallel training on two ranks (threads standing in for `mpirun -np 2`): each sums
/// its half of the batch and the gradients are averaged, as PyTorch's DDP does with
/// `reduction='sum'`, so two ranks at lr train as one process at lr / 2 on the same batches,
/// and log half the batch's sum; with the mean (the control), as one process at lr.
#[test]
fn two_ranks_average_the_gradients_of_their_sums_as_pytorch_ddp() {
    let settings = |lr: f64| {
        format!("    optimizer: sgd(lr: {lr})\n    batch: 4\n    steps: 3\n    shuffle: false")
    };
    let sum = "mse(output, label, reduction: \"sum\")";
    for (loss, one_lr) in [(sum, 0.05), ("mse(output, label)", 0.1)] {
        let src = file("reg", "Reg on pts", loss, &settings(0.1));
        let ranks: Vec<_> = Threads::all(2)
            .into_iter()
            .map(|comm| {
                let src = src.clone();
                std::thread::spawn(move || {
                    let opts = TrainOptions {
                        comm: Rc::new(comm),
                        ..quiet()
                    };
                    train(&program(&src), Backend::jit(1), opts)
                })
            })
            .collect();
        let ranks: Vec<_> = ranks.into_iter().map(|r| r.join().unwrap()).collect();
        let one_src = file("reg", "Reg on pts", loss, &settings(one_lr));
        let (one, p1) = train(&program(&one_src), Backend::jit(1), quiet());
        for (two, p2) in &ranks {
            for (path, t) in &p1 {
                for (a, b) in t.data.iter().zip(&p2[path].data) {
                    assert!((a - b).abs() < 1e-6, "{loss} {path}: {a} vs {b}");
                }
            }
            let (l1, l2) = (one.first_loss.unwrap().1, two.first_loss.unwrap().1);
            let half = if loss == sum { 0.5 } else { 1.0 };
            assert!(
                (l2 - half * l1).abs() < 1e-6 * l1,
                "{loss}: {l2} vs {half} × {l1}"
            );
        }
    }
}

/// `reduction: "mean"` (kl_div's `"batchmean"`) written out is the loss without it: the same
/// graph, node for node.
#[test]
fn the_default_reduction_written_out_changes_nothing() {
    for (on, loss, name, _) in LOSSES {
        let default = loss.replace(", reduction: \"sum\"", "");
        let mean = if name == "kl" { "batchmean" } else { "mean" };
        let written = loss.replace("\"sum\"", &format!("\"{mean}\""));
        let graph = |loss: &str| {
            let p = program(&file(name, on, loss, "    optimizer: sgd(lr: 0.1)"));
            nnc::ir::print::graph_to_string(&p.runs[0].graph)
        };
        assert_eq!(graph(&written), graph(&default), "{written}");
        assert!(!graph(&written).contains("mean_to_sum"));
    }
}
