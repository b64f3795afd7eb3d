//! The training loop through `Session`: convergence, determinism, frozen parameters, lr schedule
//! and `lr_scale`, non-finite losses, checkpoints and `init: <run>`.
//!
//! The executor here is a plain-Rust linear model (output = x·w + b, MSE) with hand-written
//! gradients: an independent implementation that needs neither autodiff nor a back end.

mod common;

use nnc::exec::{ExecError, Executor, Feed, StepCtx, UpdateHyper, Updater};
use nnc::ir::*;
use nnc::runtime::checkpoint::Checkpoint;
use nnc::runtime::train::{Backend, RunSummary, Session, TrainError, TrainOptions};
use nnc::syntax::ast::Span;
use std::cell::RefCell;
use std::rc::Rc;

/// The model graph: x [B,2] → dense(1) → output, loss = mse(output, label).
fn linear_graph(training: bool) -> Graph {
    let mut g = Graph::new("train Lin", training);
    let x = g.input("x", Type::f32(true, [2]));
    let y = g.input("label", Type::f32(true, [1]));
    let w = g.add_param(Param {
        path: "dense1.weight".into(),
        dims: vec![2, 1],
        init: Init::Uniform { bound: 0.5 },
        frozen: false,
    });
    let b = g.add_param(Param {
        path: "dense1.bias".into(),
        dims: vec![1],
        init: Init::Uniform { bound: 0.5 },
        frozen: false,
    });
    let h = g
        .push(
            Op::MatMul {
                ta: false,
                tb: false,
            },
            vec![x, w],
            "dense1",
        )
        .unwrap();
    let o = g
        .push(Op::BiasAdd { axis: 1 }, vec![h, b], "dense1")
        .unwrap();
    let l = g.push(Op::Mse, vec![o, y], "loss").unwrap();
    g.set_output("output", o);
    g.set_output("loss", l);
    g
}

/// Stand-in for autodiff: names a `grad:<path>` output per trainable parameter (the executor
/// below computes the gradients itself).
fn mark_grads(g: &Graph) -> Result<Graph, String> {
    let mut g = g.clone();
    for (i, p) in g.params.clone().iter().enumerate() {
        if !p.frozen {
            let v = g.param_node(ParamId(i as u32)).unwrap();
            g.set_output(&format!("grad:{}", p.path), v);
        }
    }
    Ok(g)
}

/// Linear model with MSE and exact gradients, in f64.
struct LinearExec {
    graph: Graph,
    /// When set, the loss of this step (1-based) is NaN.
    nan_at: Option<u64>,
    out: Vec<f32>,
    loss: [f32; 1],
    gw: Vec<f32>,
    gb: [f32; 1],
}

impl Executor for LinearExec {
    fn graph(&self) -> &Graph {
        &self.graph
    }
    fn run(
        &mut self,
        batch: usize,
        inputs: &[Feed<'_>],
        params: &[&[f32]],
        ctx: StepCtx,
    ) -> Result<(), ExecError> {
        let (Feed::F32(x), Feed::F32(y)) = (inputs[0], inputs[1]) else {
            return Err(ExecError::Other("dtype".into()));
        };
        if x.len() != batch * 2 {
            return Err(ExecError::InputSize {
                index: 0,
                expected: batch * 2,
                found: x.len(),
            });
        }
        let (w, b) = (params[0], params[1]);
        self.out.clear();
        let (mut loss, mut gw, mut gb) = (0f64, [0f64; 2], 0f64);
        for i in 0..batch {
            let o = x[2 * i] as f64 * w[0] as f64 + x[2 * i + 1] as f64 * w[1] as f64 + b[0] as f64;
            self.out.push(o as f32);
            let d = o - y[i] as f64;
            loss += d * d / batch as f64;
            gw[0] += 2.0 * d * x[2 * i] as f64 / batch as f64;
            gw[1] += 2.0 * d * x[2 * i + 1] as f64 / batch as f64;
            gb += 2.0 * d / batch as f64;
        }
        self.loss[0] = if self.nan_at == Some(ctx.step + 1) {
            f32::NAN
        } else {
            loss as f32
        };
        self.gw = vec![
            gw[0] as f32,
            if self.nan_at == Some(ctx.step + 1) {
                f32::INFINITY
            } else {
                gw[1] as f32
            },
        ];
        self.gb[0] = gb as f32;
        Ok(())
    }
    fn output(&self, name: &str) -> Option<&[f32]> {
        match name {
            "output" => Some(&self.out),
            "loss" => Some(&self.loss),
            "grad:dense1.weight" => Some(&self.gw),
            "grad:dense1.bias" => Some(&self.gb),
            _ => None,
        }
    }
    fn value(&self, _: ValueId) -> Option<&[f32]> {
        None
    }
}

/// Plain SGD that records every lr it is given.
struct Sgd(Rc<RefCell<Vec<(u64, f32)>>>);

impl Updater for Sgd {
    fn state_buffers(&self) -> usize {
        0
    }
    fn update(&self, param: &mut [f32], grad: &[f32], _state: &mut [Vec<f32>], h: UpdateHyper) {
        self.0.borrow_mut().push((h.step, h.lr));
        for (p, g) in param.iter_mut().zip(grad) {
            *p -= h.lr * g;
        }
    }
}

/// 16 samples of y = 2·x0 − 3·x1 + 0.5.
fn data(split: f64) -> DataSpec {
    let x: Vec<Vec<f64>> = (0..16)
        .map(|i| vec![(i % 4) as f64 / 3.0, (i / 4) as f64 / 3.0 - 0.5])
        .collect();
    let y = x
        .iter()
        .map(|r| vec![2.0 * r[0] - 3.0 * r[1] + 0.5])
        .collect();
    DataSpec {
        name: "pts".into(),
        train: Source::Inline { x, y },
        train_span: Span::default(),
        test: None,
        split,
        normalize: None,
        span: Span::default(),
    }
}

fn run_spec(name: &str, length: Length) -> RunSpec {
    RunSpec {
        name: name.into(),
        model: "Lin".into(),
        data: "pts".into(),
        graph: linear_graph(true),
        eval_graph: linear_graph(false),
        optimizer: OptimizerSpec::Sgd {
            lr: 0.2,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        },
        schedule: Schedule::constant(),
        batch: 4,
        length,
        shuffle: true,
        seed: 3,
        eval: Some(EvalSpec {
            every: 1,
            per_epoch: true,
            metrics: vec![Metric::Loss],
        }),
        checkpoint: None,
        init: None,
        teacher: None,
        reads: vec![],
        lr_scale: vec![],
        freeze: vec![],
        clip_grad_norm: None,
        early_stopping: None,
        classification: false,
        span: Span::default(),
    }
}

fn program(runs: Vec<RunSpec>, split: f64) -> Program {
    Program {
        models: vec![],
        data: vec![data(split)],
        runs,
    }
}

/// Each run's summary and the final parameters of the last run, by path.
type Trained = (Vec<RunSummary>, Vec<(String, Vec<f32>)>);

struct Harness {
    lrs: Rc<RefCell<Vec<(u64, f32)>>>,
    nan_at: Option<u64>,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            lrs: Rc::new(RefCell::new(Vec::new())),
            nan_at: None,
        }
    }
    /// Runs every run of `p`; returns the session's result and the final params of the last run.
    fn train(&self, p: &Program, opts: TrainOptions) -> Result<Trained, TrainError> {
        self.train_only(p, opts, None)
    }

    /// The linear executor, the recording SGD and the stand-in autodiff.
    fn backend(&self) -> Backend {
        let nan_at = self.nan_at;
        let exec = move |g: &Graph| -> Result<Box<dyn Executor>, String> {
            Ok(Box::new(LinearExec {
                graph: g.clone(),
                nan_at,
                out: vec![],
                loss: [0.0],
                gw: vec![0.0; 2],
                gb: [0.0],
            }))
        };
        let lrs = self.lrs.clone();
        let upd = move |_: &OptimizerSpec| -> Result<Box<dyn Updater>, String> {
            Ok(Box::new(Sgd(lrs.clone())))
        };
        Backend {
            grad: Box::new(mark_grads),
            forward: Box::new(|g| Ok(g.clone())),
            executor: Box::new(exec),
            inspector: Box::new(exec),
            updater: Box::new(upd),
        }
    }

    /// Runs every run of `p`, or only the one named `only`.
    fn train_only(
        &self,
        p: &Program,
        opts: TrainOptions,
        only: Option<&str>,
    ) -> Result<Trained, TrainError> {
        let backend = self.backend();
        let mut s = Session::new(p, backend, opts)?;
        let sums = match only {
            Some(name) => vec![s.run(name)?],
            None => s.run_all()?,
        };
        let last = &p.runs.last().unwrap().name;
        let params = s
            .params(last)
            .unwrap()
            .iter()
            .map(|(k, t)| (k.clone(), t.data.clone()))
            .collect();
        Ok((sums, params))
    }
}

fn quiet() -> TrainOptions {
    TrainOptions {
        quiet: true,
        ..Default::default()
    }
}

#[test]
fn linear_regression_converges_and_evaluates_the_held_out_split() {
    let p = program(vec![run_spec("lin", Length::Epochs(200))], 0.75);
    let (sums, params) = Harness::new().train(&p, quiet()).unwrap();
    let s = &sums[0];
    assert_eq!(s.steps, 200 * 3, "12 training samples in batches of 4");
    assert!(s.final_loss < 1e-6, "{s:?}");
    assert!(s.test_loss.unwrap() < 1e-6, "{s:?}");
    let w = &params.iter().find(|p| p.0 == "dense1.weight").unwrap().1;
    let b = &params.iter().find(|p| p.0 == "dense1.bias").unwrap().1;
    assert!(
        (w[0] - 2.0).abs() < 1e-3 && (w[1] + 3.0).abs() < 1e-3 && (b[0] - 0.5).abs() < 1e-3,
        "{w:?} {b:?}"
    );
    // `evaluate_run` (as `nnc eval` uses it) agrees with the evaluation at the end of training.
    let h = Harness::new();
    let tensors = params
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                nnc::runtime::checkpoint::Tensor {
                    dims: if k.ends_with("weight") {
                        vec![2, 1]
                    } else {
                        vec![1]
                    },
                    data: v.clone(),
                },
            )
        })
        .collect();
    let (e, split) =
        nnc::runtime::train::evaluate_run(&p, &p.runs[0], &h.backend(), &quiet(), &tensors)
            .unwrap();
    assert_eq!(split, "test");
    assert_eq!((e.samples, e.loss), (4, s.test_loss.unwrap()));
}

#[test]
fn same_seed_gives_bit_identical_parameters_and_another_seed_does_not() {
    let p = program(vec![run_spec("lin", Length::Steps(7))], 1.0);
    let a = Harness::new().train(&p, quiet()).unwrap().1;
    let b = Harness::new().train(&p, quiet()).unwrap().1;
    assert_eq!(a, b);
    let mut q = p.clone();
    q.runs[0].seed = 4;
    assert_ne!(a, Harness::new().train(&q, quiet()).unwrap().1);
}

#[test]
fn frozen_parameters_are_never_written() {
    let mut r = run_spec("lin", Length::Steps(20));
    r.graph.params[1].frozen = true;
    r.freeze = vec!["dense1.bias".into()];
    let init = nnc::runtime::init::init_param(&r.graph.params[1], r.seed);
    let (_, params) = Harness::new()
        .train(&program(vec![r], 1.0), quiet())
        .unwrap();
    let b = &params.iter().find(|p| p.0 == "dense1.bias").unwrap().1;
    assert_eq!(
        b.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        init.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn lr_follows_the_schedule_and_lr_scale() {
    let mut r = run_spec("lin", Length::Steps(12));
    r.schedule = Schedule {
        kind: ScheduleKind::Step {
            every: 4,
            gamma: 0.5,
        },
        warmup: 2,
    };
    r.lr_scale = vec![("dense1".into(), 0.1), ("dense1.bias".into(), 2.0)];
    let h = Harness::new();
    h.train(&program(vec![r.clone()], 1.0), quiet()).unwrap();
    let lrs = h.lrs.borrow();
    assert_eq!(lrs.len(), 24, "two parameters, 12 steps");
    for (k, &(step, lr)) in lrs.iter().enumerate() {
        // Updates go in graph order: weight (scale 0.1), then bias (scale 2.0).
        let scale = if k % 2 == 0 { 0.1 } else { 2.0 };
        let s = step - 1;
        let warm = if s < 2 { (s + 1) as f64 / 2.0 } else { 1.0 };
        let want = 0.2 * warm * 0.5f64.powi((s / 4) as i32) * scale;
        assert!(
            (lr as f64 - want).abs() < 1e-7,
            "step {step}: lr {lr}, expected {want}"
        );
    }
}

#[test]
fn a_non_finite_loss_stops_with_the_step_and_parameter() {
    let mut h = Harness::new();
    h.nan_at = Some(5);
    let e = h
        .train(
            &program(vec![run_spec("lin", Length::Steps(10))], 1.0),
            quiet(),
        )
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, TrainError::NonFinite { step: 5, .. }), "{msg}");
    assert!(
        msg.contains("step 5") && msg.contains("dense1.weight"),
        "{msg}"
    );
}

/// A run writing a checkpoint, and one starting from it with a negligible lr.
fn first_spec() -> RunSpec {
    let mut first = run_spec("first", Length::Steps(5));
    first.checkpoint = Some("first.safetensors".into());
    first
}

fn second_spec() -> RunSpec {
    let mut second = run_spec("second", Length::Steps(1));
    second.init = Some(InitFrom::Run("first".into()));
    second.optimizer = OptimizerSpec::Sgd {
        lr: 1e-30,
        momentum: 0.0,
        nesterov: false,
        weight_decay: 0.0,
    };
    second
}

#[test]
fn checkpoint_holds_the_final_parameters_and_init_from_a_run_continues_from_them() {
    let dir = std::env::temp_dir().join(format!("nnc-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (first, second) = (first_spec(), second_spec());
    let opts = TrainOptions {
        base_dir: dir.clone(),
        log_json: Some(dir.join("log.jsonl")),
        ..quiet()
    };
    let (sums, params) = Harness::new()
        .train(&program(vec![first, second], 1.0), opts)
        .unwrap();
    let ck = Checkpoint::load(&dir.join("first.safetensors")).unwrap();
    assert_eq!(ck.step, Some(5));
    assert_eq!(
        sums[0].checkpoint.as_deref(),
        Some(dir.join("first.safetensors").as_path())
    );
    for (name, v) in &params {
        // lr 1e-30 leaves the values the first run ended with.
        assert_eq!(&ck.tensors[name].data, v, "{name}");
    }
    let log = std::fs::read_to_string(dir.join("log.jsonl")).unwrap();
    assert_eq!(
        log.lines()
            .filter(|l| l.starts_with("{\"type\":\"step\",\"run\":\"first\""))
            .count(),
        5
    );
    assert!(log
        .lines()
        .any(|l| l.starts_with("{\"type\":\"step\",\"run\":\"second\",\"step\":1,")));
    // A session that trains only `second` starts from the checkpoint `first` wrote.
    let (_, alone) = Harness::new()
        .train_only(
            &program(vec![first_spec(), second_spec()], 1.0),
            TrainOptions {
                base_dir: dir.clone(),
                ..quiet()
            },
            Some("second"),
        )
        .unwrap();
    assert_eq!(alone, params);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn init_from_a_run_that_has_not_run_is_an_error() {
    let mut r = run_spec("second", Length::Steps(1));
    r.init = Some(InitFrom::Run("first".into()));
    let e = Harness::new()
        .train(&program(vec![r], 1.0), quiet())
        .unwrap_err();
    assert!(e.to_string().contains("needs run `first`"), "{e}");
}

// ----- end to end: examples/xor.nn through the checker, autodiff and a real back end

fn xor_program(steps: u64) -> Program {
    let src =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/xor.nn")).unwrap();
    let file = nnc::syntax::parse(&src).unwrap();
    let mut p = nnc::check::check(&file).unwrap();
    p.runs[0].length = Length::Steps(steps);
    p
}

/// The XOR network's outputs on the four inputs, computed here by hand from the parameters.
fn xor_outputs(params: &nnc::runtime::train::Tensors) -> Vec<f64> {
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let (w1, b1, w2, b2) = (
        &params["dense1.weight"].data,
        &params["dense1.bias"].data,
        &params["dense2.weight"].data,
        &params["dense2.bias"].data,
    );
    [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
        .iter()
        .map(|x| {
            let h: Vec<f64> = (0..4)
                .map(|j| sig(x[0] * w1[j] as f64 + x[1] * w1[4 + j] as f64 + b1[j] as f64))
                .collect();
            sig((0..4).map(|j| h[j] * w2[j] as f64).sum::<f64>() + b2[0] as f64)
        })
        .collect()
}

fn train_xor(backend: Backend, steps: u64) -> (RunSummary, nnc::runtime::train::Tensors) {
    let p = xor_program(steps);
    let mut s = Session::new(&p, backend, quiet()).unwrap();
    let sum = s.run_all().unwrap().remove(0);
    (sum, s.params("Xor").unwrap().clone())
}

#[test]
fn xor_trains_with_the_interpreter() {
    let (sum, params) = train_xor(Backend::interpreter(), 3000);
    assert!(sum.test_loss.unwrap() < 0.01, "{sum:?}");
    for (o, t) in xor_outputs(&params).iter().zip([0.0, 1.0, 1.0, 0.0]) {
        assert!((o - t).abs() < 0.1, "output {o}, target {t}");
    }
}

#[test]
fn xor_trains_with_the_jit_and_is_deterministic() {
    let (sum, params) = train_xor(Backend::jit(1), 10000);
    assert!(sum.test_loss.unwrap() < 0.01, "{sum:?}");
    for (o, t) in xor_outputs(&params).iter().zip([0.0, 1.0, 1.0, 0.0]) {
        assert!((o - t).abs() < 0.1, "output {o}, target {t}");
    }
    let (_, again) = train_xor(Backend::jit(1), 10000);
    assert_eq!(params, again);
}

// ----- the real examples on the real data (slow: run with `--ignored`)

/// Checks and trains `examples/<name>.nn` on the shared data set `data` with the JIT, `steps`
/// per run.
fn train_example(name: &str, data: &str, steps: Option<u64>) -> Option<Vec<RunSummary>> {
    let dir = common::shared_data(data)?;
    let src = std::fs::read_to_string(format!("{}/examples/{name}.nn", env!("CARGO_MANIFEST_DIR")))
        .unwrap();
    let p = nnc::check::check(&nnc::syntax::parse(&src).unwrap()).unwrap();
    let out = std::env::temp_dir().join(format!("nnc-example-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let opts = TrainOptions {
        data_dir: dir,
        base_dir: out,
        steps,
        ..quiet()
    };
    let mut s = Session::new(&p, Backend::jit(1), opts).unwrap();
    Some(s.run_all().unwrap_or_else(|e| panic!("{e}")))
}

#[test]
#[ignore]
fn mnist_mlp_one_epoch_reaches_92_percent() {
    let Some(sums) = train_example("mnist_mlp", "mnist", None) else {
        return;
    };
    eprintln!("{sums:?}");
    assert!(sums[0].test_accuracy.unwrap() > 0.92, "{sums:?}");
}

/// Trains `examples/<name>.nn` for 20 steps a run; losses must stay finite.
fn few_steps(name: &str, data: &str) {
    let Some(sums) = train_example(name, data, Some(20)) else {
        return;
    };
    for s in &sums {
        eprintln!("{name}: {s:?}");
        assert_eq!(s.steps, 20);
        assert!(
            s.final_loss.is_finite() && s.test_loss.is_some_and(f64::is_finite),
            "{s:?}"
        );
    }
}

#[test]
#[ignore]
fn char_rnn_trains_a_few_steps() {
    few_steps("char_rnn", "tinyshakespeare");
}

#[test]
#[ignore]
fn autoencoder_then_classifier_train_a_few_steps() {
    few_steps("autoencoder_finetune", "mnist");
}

#[test]
#[ignore]
fn distillation_trains_a_few_steps() {
    few_steps("distill", "mnist");
}

#[test]
#[ignore]
fn mnist_cnn_trains_a_few_steps() {
    few_steps("mnist_cnn", "mnist");
}

// ----- predict and sample on trained / fresh models

#[test]
fn predict_agrees_with_evaluation_and_reads_idx_and_pgm() {
    let Some(mnist) = common::shared_data("mnist") else {
        return;
    };
    let mnist = mnist.as_path();
    use nnc::runtime::predict::{predict, read_inputs};
    let src = std::fs::read_to_string(format!(
        "{}/examples/mnist_mlp.nn",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let p = nnc::check::check(&nnc::syntax::parse(&src).unwrap()).unwrap();
    let dir = std::env::temp_dir().join(format!("nnc-predict-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = dir.join("mlp.safetensors");
    let opts = TrainOptions {
        data_dir: mnist.into(),
        steps: Some(100),
        checkpoint: Some(ck.clone()),
        ..quiet()
    };
    let mut s = Session::new(&p, Backend::jit(1), opts).unwrap();
    let sum = s.run_all().unwrap().remove(0);

    let model = &p.models[0].graph;
    let params = nnc::runtime::checkpoint::load_params(&ck, &model.params).unwrap();
    let views: Vec<&[f32]> = params.iter().map(Vec::as_slice).collect();
    let mut exec = (Backend::jit(1).executor)(model).unwrap();
    let norm = p.data[0].normalize.as_ref().map(|(n, _)| n);
    let images = read_inputs(&mnist.join("t10k-images-idx3-ubyte.gz"), None).unwrap();
    assert_eq!((images.count, images.shape.clone()), (10000, vec![28, 28]));
    let preds = predict(exec.as_mut(), &views, &images, norm, 3).unwrap();
    let labels = nnc::runtime::data::read_file(
        &mnist.join("t10k-labels-idx1-ubyte.gz").to_string_lossy(),
        &dir,
        None,
    )
    .unwrap()
    .1;
    let right = preds
        .iter()
        .zip(&labels[8..])
        .filter(|(t, &l)| t[0].0 == l as usize)
        .count();
    assert!(
        (right as f64 / 1e4 - sum.test_accuracy.unwrap()).abs() < 1e-9,
        "{right} vs {sum:?}"
    );
    assert!(preds
        .iter()
        .all(|t| t.len() == 3 && t[0].1 >= t[1].1 && t[1].1 >= t[2].1));

    // Image 7 as a binary PGM gives the same ranking as `--index 7`.
    let one = read_inputs(&mnist.join("t10k-images-idx3-ubyte.gz"), Some(7)).unwrap();
    let mut pgm = b"P5\n28 28\n255\n".to_vec();
    pgm.extend(one.values.iter().map(|&v| v as u8));
    std::fs::write(dir.join("seven.pgm"), pgm).unwrap();
    let from_pgm = read_inputs(&dir.join("seven.pgm"), None).unwrap();
    assert_eq!(from_pgm.values, one.values);
    // Batch 1 against batch 256: same classes, probabilities equal up to GEMM rounding.
    let single = predict(exec.as_mut(), &views, &from_pgm, norm, 3)
        .unwrap()
        .remove(0);
    for (a, b) in single.iter().zip(&preds[7]) {
        assert!(
            a.0 == b.0 && (a.1 - b.1).abs() < 1e-5,
            "{single:?} vs {:?}",
            preds[7]
        );
    }
    let e = read_inputs(&mnist.join("t10k-images-idx3-ubyte.gz"), Some(10000)).unwrap_err();
    assert!(e.to_string().contains("index 10000"), "{e}");
    // A `normalize` that is not finite at a pixel the image holds (0, surely) is refused.
    let at_zero = ScalarExpr::Bin(
        nnc::syntax::ast::BinOp::Div,
        Box::new(ScalarExpr::Num(1.0)),
        Box::new(ScalarExpr::X),
    );
    let e = predict(exec.as_mut(), &views, &from_pgm, Some(&at_zero), 3).unwrap_err();
    assert!(
        e.to_string().contains("turns the input value 0 into inf"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sampling_is_seeded_and_cold_sampling_is_the_interpreters_argmax() {
    let Some(text) = common::shared_data("tinyshakespeare") else {
        return;
    };
    let text = text.as_path();
    use nnc::runtime::sample::{sample, SampleOptions};
    let src = std::fs::read_to_string(format!(
        "{}/examples/char_rnn.nn",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let p = nnc::check::check(&nnc::syntax::parse(&src).unwrap()).unwrap();
    let vocab = nnc::runtime::data::vocabulary(&p.data[0], text)
        .unwrap()
        .unwrap();
    assert_eq!(vocab.len(), 65);
    let model = &p.models[0].graph;
    let params: Vec<Vec<f32>> = model
        .params
        .iter()
        .map(|q| nnc::runtime::init::init_param(q, 5))
        .collect();
    let views: Vec<&[f32]> = params.iter().map(Vec::as_slice).collect();
    let mut jit = (Backend::jit(1).executor)(model).unwrap();
    let opts = SampleOptions {
        prompt: "ROMEO:".into(),
        length: 12,
        temperature: 1.0,
        seed: 9,
    };
    let a = sample(jit.as_mut(), &views, &vocab, &opts).unwrap();
    assert_eq!(a, sample(jit.as_mut(), &views, &vocab, &opts).unwrap());
    assert!(
        a.starts_with("ROMEO:") && a.chars().count() == 18 && a.chars().all(|c| vocab.contains(&c))
    );
    assert_ne!(
        a,
        sample(
            jit.as_mut(),
            &views,
            &vocab,
            &SampleOptions {
                seed: 10,
                ..opts.clone()
            }
        )
        .unwrap()
    );

    // Temperature → 0 picks the argmax; check the first three characters with the interpreter.
    let cold = SampleOptions {
        length: 3,
        temperature: 1e-4,
        ..opts.clone()
    };
    let got = sample(jit.as_mut(), &views, &vocab, &cold).unwrap();
    let mut interp = nnc::interp::Interpreter::new(model.clone());
    let mut ctx: Vec<i32> = "ROMEO:"
        .chars()
        .map(|c| vocab.binary_search(&c).unwrap() as i32)
        .collect();
    for _ in 0..3 {
        let mut feed = ctx.clone();
        let pos = feed.len() - 1;
        feed.resize(64, 0);
        interp
            .run(1, &[Feed::I32(&feed)], &views, StepCtx::default())
            .unwrap();
        let o = interp.output("output").unwrap();
        let row = &o[pos * 65..(pos + 1) * 65];
        let best = (0..65).max_by(|&i, &j| row[i].total_cmp(&row[j])).unwrap();
        ctx.push(best as i32);
    }
    let want: String = ctx.iter().map(|&i| vocab[i as usize]).collect();
    assert_eq!(got, want);
    // Temperature 0 is greedy decoding itself; below 0 is refused.
    let greedy = SampleOptions {
        temperature: 0.0,
        ..cold.clone()
    };
    assert_eq!(sample(jit.as_mut(), &views, &vocab, &greedy).unwrap(), want);
    let below = SampleOptions {
        temperature: -1.0,
        ..cold
    };
    let e = sample(jit.as_mut(), &views, &vocab, &below).unwrap_err();
    assert!(e.to_string().contains("≥ 0"), "{e}");
    let e = sample(
        jit.as_mut(),
        &views,
        &vocab,
        &SampleOptions {
            prompt: "é".into(),
            ..opts
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("'é'"), "{e}");
}

/// XOR through a `layer_norm`: the JIT and the interpreter train it alike, step for step, and
/// it learns (the normalized hidden layer still separates the four points).
#[test]
fn a_layer_norm_model_trains_alike_on_the_jit_and_the_interpreter() {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/xor.nn"))
        .unwrap()
        .replace(
            "dense(4) |> sigmoid |> dense(1)",
            "dense(8) |> layer_norm |> tanh |> dense(1)",
        )
        .replace("sgd(lr: 1.0)", "adam(lr: 0.05)");
    assert!(src.contains("layer_norm"));
    let mut p = nnc::check::check(&nnc::syntax::parse(&src).unwrap()).unwrap();
    p.runs[0].length = Length::Steps(300);
    let train = |backend: Backend| {
        let mut s = Session::new(&p, backend, quiet()).unwrap();
        let sum = s.run_all().unwrap().remove(0);
        (sum, s.params("Xor").unwrap().clone())
    };
    let (jit, jit_params) = train(Backend::jit(1));
    let (interp, interp_params) = train(Backend::interpreter());
    assert!(jit.test_loss.unwrap() < 0.01, "{jit:?}");
    assert!((jit.test_loss.unwrap() - interp.test_loss.unwrap()).abs() < 1e-4);
    for (path, t) in &jit_params {
        let u = &interp_params[path];
        for (a, b) in t.data.iter().zip(&u.data) {
            assert!((a - b).abs() < 1e-3 * (1.0 + b.abs()), "{path}: {a} vs {b}");
        }
    }
    // The norm's own parameters moved from their start (1 and 0).
    assert!(jit_params["layer_norm1.weight"]
        .data
        .iter()
        .any(|w| (w - 1.0).abs() > 1e-3));
    assert!(jit_params["layer_norm1.bias"]
        .data
        .iter()
        .any(|b| b.abs() > 1e-3));
}
