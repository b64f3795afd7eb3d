//! What the checker hands to the runtime, setting by setting: names and paths of parameters,
//! initializers, label types per data source, training-only dropout, optimizer and schedule
//! values with their defaults, and the normalize expression.

mod common;

use nnc::ir::*;

fn program(src: &str) -> Program {
    let file = nnc::syntax::parse(src).unwrap_or_else(|d| panic!("{d:?}"));
    nnc::check::check(&file)
        .unwrap_or_else(|d| panic!("{}", nnc::diag::Report::new("t.nn", src, d).render(false)))
}

const MNIST: &str = r#"data mnist {
    train: idx("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    normalize: (x / 255 - 0.5) / 0.5
}"#;

#[test]
fn parameter_paths_and_initializers() {
    let p = program(
        "model Enc(x: [8]) -> [8] { return x |> dense(8) }
         model Net(img: [3, 8, 8]) {
             h = img |> conv2d(2, kernel: 3) |> relu |> conv2d(2, 5, kernel: 1) |> maxpool(2) |> flatten
             e = h |> dense(8) |> Enc |> Enc as again
             return e |> Enc |> dense(8, 3) as head
         }",
    );
    let g = &p.model("Net").unwrap().graph;
    let paths: Vec<&str> = g.params.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "conv1.weight",
            "conv1.bias",
            "conv2.weight",
            "conv2.bias",
            "dense1.weight",
            "dense1.bias",
            "enc.dense1.weight",
            "enc.dense1.bias",
            "again.dense1.weight",
            "again.dense1.bias",
            "enc2.dense1.weight",
            "enc2.dense1.bias",
            "head.weight",
            "head.bias",
        ]
    );
    let bound = |path: &str| match g.params[g.param_by_path(path).unwrap().index()].init {
        Init::Uniform { bound } => bound,
        other => panic!("{path}: {other}"),
    };
    assert_eq!(bound("conv1.weight"), 1.0 / 27f32.sqrt()); // fan_in 3·3·3
    assert_eq!(bound("conv2.weight"), 1.0 / 2f32.sqrt()); // fan_in 2·1·1
    assert_eq!(bound("dense1.bias"), 1.0 / 45f32.sqrt()); // [5, 3, 3] flattened: 45 inputs
    assert_eq!(
        g.params[g.param_by_path("conv2.weight").unwrap().index()].dims,
        [5, 2, 1, 1]
    );
    let out = g.output("output").unwrap();
    assert_eq!(*g.ty(out), Type::f32(true, [3]));
}

#[test]
fn dropout_only_while_training_and_labels_of_idx() {
    let p = program(&format!(
        "model Net(x: [784]) -> [10] {{ return x |> dense(32) |> relu |> dropout(0.25) |> dropout(0.25) |> dense(10) }}
         {MNIST}
         train Net on mnist {{ loss: cross_entropy(output, label), optimizer: sgd(lr: 0.1) }}"
    ));
    let has_dropout = |g: &Graph| {
        g.nodes
            .iter()
            .any(|n| n.op == Op::Dropout { p: 0.25, salt: 0 })
    };
    let r = p.run("Net").unwrap();
    assert!(has_dropout(&r.graph) && !has_dropout(&r.eval_graph));
    // Each layer is numbered, to draw its own mask.
    let salts: Vec<u32> = r
        .graph
        .nodes
        .iter()
        .filter_map(|n| match n.op {
            Op::Dropout { salt, .. } => Some(salt),
            _ => None,
        })
        .collect();
    assert_eq!(salts, [0, 1]);
    assert!(!has_dropout(&p.model("Net").unwrap().graph));
    let inputs: Vec<(&str, Type)> = r
        .graph
        .inputs()
        .iter()
        .map(|(v, n)| (*n, r.graph.ty(*v).clone()))
        .collect();
    assert_eq!(
        inputs,
        [
            ("x", Type::f32(true, [784])),
            ("label", Type::i32(true, []))
        ]
    );
    assert!(r.classification);
    assert_eq!(r.length, Length::Epochs(1));
    assert_eq!((r.batch, r.shuffle, r.seed), (32, true, 0));
    assert_eq!(
        r.eval,
        Some(EvalSpec {
            every: 1,
            per_epoch: true,
            metrics: vec![Metric::Loss, Metric::Accuracy]
        })
    );
    let (norm, _) = p.data("mnist").unwrap().normalize.as_ref().unwrap();
    assert_eq!(norm.eval(255.0), 1.0);
    assert_eq!(norm.eval(0.0), -1.0);
    // Nothing is held out of `train` unless `split` asks.
    assert_eq!(p.data("mnist").unwrap().split, 1.0);
}

#[test]
fn label_types_follow_data_and_loss() {
    let p = program(
        r#"model Reg(x: [2]) -> [1] { return x |> dense(1) }
           model Cls(x: [2]) -> [3] { return x |> dense(3) }
           model Lm(t: i32[5]) -> [5, 7] { return t |> one_hot(7) |> rnn(4, activation: relu) |> dense(7) }
           data ints { train: inline(x: [[0, 1], [1, 0]], y: [[2], [0]]) }
           data soft { train: inline(x: [[0, 1], [1, 0]], y: [[0.5, 0.5, 0], [1, 0, 0]]) }
           data text { train: text("input.txt", seq: 5) }
           train reg: Reg on ints { loss: mse(output, label), optimizer: sgd(lr: 0.1) }
           train cls: Cls on ints { loss: cross_entropy(output, label), optimizer: sgd(lr: 0.1) }
           train soft: Cls on soft { loss: cross_entropy(output, label), optimizer: sgd(lr: 0.1) }
           train lm: Lm on text { loss: cross_entropy(output, label), optimizer: adam(lr: 0.01) }"#,
    );
    let label = |run: &str| {
        let g = &p.run(run).unwrap().graph;
        let (v, _) = g.inputs().into_iter().find(|(_, n)| *n == "label").unwrap();
        g.ty(v).clone()
    };
    assert_eq!(label("reg"), Type::f32(true, [1]));
    assert_eq!(label("cls"), Type::i32(true, []));
    assert_eq!(label("soft"), Type::f32(true, [3]));
    assert_eq!(label("lm"), Type::i32(true, [5]));
    assert!(!p.run("reg").unwrap().classification && p.run("soft").unwrap().classification);
    let lm = &p.run("lm").unwrap().graph;
    assert!(lm
        .nodes
        .iter()
        .any(|n| n.op == Op::RnnScan { act: UnaryOp::Relu }));
    assert!(p
        .run("soft")
        .unwrap()
        .graph
        .nodes
        .iter()
        .any(|n| n.op == Op::SoftCrossEntropy));
    assert_eq!(
        p.data("text").unwrap().train,
        Source::Text {
            path: "input.txt".into(),
            seq: 5
        }
    );
}

/// `label` passed by name (`target: label`, `label: label`) is read as class ids, as it is
/// when passed by position; a positional argument after a named one counts by position.
#[test]
fn class_labels_given_by_name() {
    let p = program(
        r#"model Cls(x: [2]) -> [3] { return x |> dense(3) }
           data ints { train: inline(x: [[0, 1], [1, 0]], y: [[2], [0]]) }
           train t: Cls on ints { loss: cross_entropy(target: label, logits: output), optimizer: sgd(lr: 0.1) }
           train k: Cls on ints { loss: kd(output, teacher, label: label), optimizer: sgd(lr: 0.1), teacher: t }
           train m: Cls on ints { loss: kd(output, alpha: 0.25, teacher, label), optimizer: sgd(lr: 0.1), teacher: t }"#,
    );
    for run in ["t", "k", "m"] {
        let r = p.run(run).unwrap();
        let (v, _) = r
            .graph
            .inputs()
            .into_iter()
            .find(|(_, n)| *n == "label")
            .unwrap();
        assert_eq!(*r.graph.ty(v), Type::i32(true, []), "{run}");
        assert!(r.classification, "{run}");
    }
}

/// Inline rows may be nested as `torch.tensor` takes an image (channels of rows); they are
/// flattened row-major, into what the flat rows give.
#[test]
fn nested_inline_rows_are_flattened_row_major() {
    let src = |x: &str| {
        format!(
            "model M(x: [1, 2, 2]) -> [2] {{ return x |> flatten |> dense(2) }}
             data d {{ train: inline(x: {x}, y: [[0], [1]]) }}
             train M on d {{ loss: cross_entropy(output, label) optimizer: sgd(0.1) }}"
        )
    };
    let nested = program(&src("[[[[0, 1], [2, 3]]], [[[4, 5], [6, 7]]]]"));
    let flat = program(&src("[[0, 1, 2, 3], [4, 5, 6, 7]]"));
    let train = |p: &Program| p.data("d").unwrap().train.clone();
    assert_eq!(train(&nested), train(&flat));
}

#[test]
fn optimizers_schedules_and_references() {
    let p = program(&format!(
        r#"model Enc(x: [784]) -> [16] {{ return x |> dense(16) |> relu }}
           model Ae(x: [784]) -> [784] {{ return x |> Enc |> dense(784) as dec |> sigmoid }}
           model Cls(x: [784]) -> [10] {{ return x |> Enc |> dense(10) as head }}
           {MNIST}
           train pre: Ae on mnist {{
               loss: mse(output, x) + 1e-4 * l2(enc)
               optimizer: adamw(lr: 1e-3)
               schedule: cosine(warmup: 10)
               steps: 50, batch: 16, shuffle: false, seed: 7
               eval: every 10 steps
               checkpoint: "ae.safetensors"
           }}
           train fine: Cls on mnist {{
               loss: cross_entropy(output, label)
               optimizer: sgd(lr: 0.1, momentum: 0.9, nesterov: true)
               schedule: step(every: 100, gamma: 0.5)
               init: pre
               freeze: [enc.dense1.bias]
               lr_scale: {{ enc: 0.1, head: 2 }}
               epochs: 3
           }}"#
    ));
    let pre = p.run("pre").unwrap();
    assert_eq!(
        pre.optimizer,
        OptimizerSpec::AdamW {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01
        }
    );
    assert_eq!(
        pre.schedule,
        Schedule {
            kind: ScheduleKind::Cosine,
            warmup: 10
        }
    );
    assert_eq!(
        (pre.length, pre.batch, pre.shuffle, pre.seed),
        (Length::Steps(50), 16, false, 7)
    );
    assert_eq!(
        pre.eval,
        Some(EvalSpec {
            every: 10,
            per_epoch: false,
            metrics: vec![Metric::Loss]
        })
    );
    assert_eq!(pre.checkpoint.as_deref(), Some("ae.safetensors"));
    // l2(enc) squares exactly one weight: enc.dense1.weight.
    assert_eq!(
        pre.graph
            .nodes
            .iter()
            .filter(|n| n.op == Op::SumSquares)
            .count(),
        1
    );

    let fine = p.run("fine").unwrap();
    assert_eq!(
        fine.optimizer,
        OptimizerSpec::Sgd {
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 0.0
        }
    );
    assert_eq!(
        fine.schedule.kind,
        ScheduleKind::Step {
            every: 100,
            gamma: 0.5
        }
    );
    assert_eq!(fine.init, Some(InitFrom::Run("pre".into())));
    assert_eq!(fine.freeze, ["enc.dense1.bias"]);
    assert_eq!(
        fine.lr_scale,
        [("enc".to_string(), 0.1), ("head".to_string(), 2.0)]
    );
    let frozen: Vec<&str> = fine
        .graph
        .params
        .iter()
        .filter(|p| p.frozen)
        .map(|p| p.path.as_str())
        .collect();
    assert_eq!(frozen, ["enc.dense1.bias"]);
    assert_eq!(
        fine.eval_graph.params.iter().filter(|p| p.frozen).count(),
        1
    );
}

/// `rmsprop`'s defaults are `torch.optim.RMSprop`'s, each argument lands where it is named, and
/// `clip_grad_norm` is off unless set.
#[test]
fn rmsprop_and_clip_grad_norm_settings() {
    let p = program(&format!(
        r#"model M(x: [784]) -> [10] {{ return x |> dense(10) }}
           {MNIST}
           train plain: M on mnist {{
               loss: cross_entropy(output, label)
               optimizer: rmsprop(1e-2)
           }}
           train full: M on mnist {{
               loss: cross_entropy(output, label)
               optimizer: rmsprop(lr: 3e-4, alpha: 0.9, eps: 1e-6, momentum: 0.5, weight_decay: 1e-4, centered: true)
               clip_grad_norm: 2.5
           }}"#
    ));
    let plain = p.run("plain").unwrap();
    assert_eq!(
        plain.optimizer,
        OptimizerSpec::RmsProp {
            lr: 1e-2,
            alpha: 0.99,
            eps: 1e-8,
            momentum: 0.0,
            weight_decay: 0.0,
            centered: false
        }
    );
    assert_eq!(plain.optimizer.state_buffers(), 1);
    assert_eq!(plain.clip_grad_norm, None);
    let full = p.run("full").unwrap();
    assert_eq!(
        full.optimizer,
        OptimizerSpec::RmsProp {
            lr: 3e-4,
            alpha: 0.9,
            eps: 1e-6,
            momentum: 0.5,
            weight_decay: 1e-4,
            centered: true
        }
    );
    assert_eq!(full.optimizer.state_buffers(), 3);
    assert_eq!(full.clip_grad_norm, Some(2.5));
}

#[test]
fn teacher_from_a_checkpoint_sees_the_reshaped_input() {
    let p = program(&format!(
        r#"model T(img: [1, 28, 28]) -> [10] {{ return img |> conv2d(2, kernel: 3) |> flatten |> dense(10) }}
           model S(x: [784]) -> [10] {{ return x |> dense(10) }}
           {MNIST}
           train S on mnist {{
               loss: kd(output, teacher, label, alpha: 0.25, temperature: 2)
               optimizer: sgd(lr: 0.1)
               teacher: T(checkpoint: "t.safetensors")
           }}"#
    ));
    let r = p.run("S").unwrap();
    assert_eq!(
        r.teacher,
        Some(TeacherSpec {
            model: "T".into(),
            from: InitFrom::File("t.safetensors".into())
        })
    );
    let g = &r.graph;
    let reshape = g
        .nodes
        .iter()
        .find(|n| n.op == Op::Reshape && n.label == "teacher.input")
        .unwrap();
    assert_eq!(reshape.ty, Type::f32(true, [1, 28, 28]));
    assert!(g
        .params
        .iter()
        .filter(|p| p.path.starts_with("teacher."))
        .all(|p| p.frozen));
    // α·CE + (1−α)·T²·KL: the constants 0.25 and 0.75·4 = 3.
    assert!(g.nodes.iter().any(|n| n.op == Op::Const(0.25)));
    assert!(g.nodes.iter().any(|n| n.op == Op::Const(3.0)));
}

/// The language reference's examples pass the checker, not only the parser, and without a
/// warning: its first example (XOR) alone, and those of sections 4 to 8 as one file, since the
/// runs of sections 7 and 8 train the models of sections 4 and 5 on the data of section 6.
#[test]
fn the_language_references_examples_check() {
    let blocks = common::spec_examples();
    let checked = |src: &str| {
        let file = nnc::syntax::parse(src).unwrap_or_else(|d| panic!("{d:?}"));
        let (p, warnings) =
            nnc::check::check_with_warnings(&file).unwrap_or_else(|d| panic!("{d:?}"));
        assert!(warnings.is_empty(), "{warnings:?}");
        p
    };
    let xor = checked(&blocks[0]);
    assert!(xor.model("Xor").is_some());
    let rest = checked(&blocks[1..].concat());
    for model in [
        "ConvNet",
        "Autoencoder",
        "Classifier",
        "CharRnn",
        "OneHotRnn",
        "CharLstm",
        "Small",
        "Gap",
        "GapMax",
        "Stem",
        "Normed",
        "Denoiser",
        "BnNet",
        "ConvAutoencoder",
        "UpDecoder",
    ] {
        assert!(rest.model(model).is_some(), "{model}");
    }
    assert_eq!(rest.runs.len(), 13);
    let plateau = &rest.run("plateaued").unwrap().schedule;
    assert_eq!(
        plateau.kind,
        nnc::ir::ScheduleKind::Plateau(nnc::ir::Plateau {
            monitor: nnc::ir::Metric::Loss,
            factor: 0.5,
            patience: 3,
            min_delta: 0.0,
            cooldown: 1,
            min_lr: 1e-5,
        })
    );
}

/// A seed may be any whole number the file holds exactly: up to 2^53 − 1, as spec §7 says (a
/// seed above 9.0e15 was refused, though below 2^53); 2^53 is refused, since 2^53 + 1 reads as
/// 2^53 too.
#[test]
fn a_seed_may_be_any_whole_number_below_2_pow_53() {
    let src = |seed: &str| {
        format!(
            "model M(x: [2]) -> [1] {{ return x |> dense(1) }}
             data d {{ train: inline(x: [[0, 0], [0, 1]], y: [[0], [1]]) }}
             train M on d {{ loss: mse(output, label), optimizer: sgd(lr: 0.1), seed: {seed} }}"
        )
    };
    let p = program(&src("9007199254740991"));
    assert_eq!(p.run("M").unwrap().seed, (1 << 53) - 1);
    for refused in ["9007199254740992", "9007199254740993"] {
        let file = nnc::syntax::parse(&src(refused)).unwrap();
        let d = nnc::check::check(&file).unwrap_err();
        assert!(d[0].message.contains("the seed is far too large"), "{d:?}");
    }
}

/// `padding: "same"` is (k − 1)/2 zeros on every side for an odd kernel and `"valid"` is 0: the
/// graphs are those of the numbers, and a non-square image keeps its 5×7.
#[test]
fn padding_same_and_valid_are_the_numbers() {
    let graph = |k: usize, padding: &str| {
        let p = program(&format!(
            "model M(image: [2, 5, 7]) {{
                 return image |> conv2d(3, kernel: {k}, padding: {padding}) |> relu
             }}"
        ));
        nnc::ir::print::graph_to_string(&p.model("M").unwrap().graph)
    };
    for (k, p) in [(1, "0"), (3, "1"), (5, "2"), (7, "3")] {
        let same = graph(k, "\"same\"");
        assert!(same.contains("f32[B,3,5,7]"), "{same}");
        assert_eq!(same, graph(k, p));
    }
    assert_eq!(graph(3, "\"valid\""), graph(3, "0"));
    assert!(graph(3, "0").contains("f32[B,3,3,5]"));
}

/// `lstm(hidden)`: PyTorch's parameters transposed, 4·hidden gate columns (i, f, g, o), all
/// three from U(±1/√hidden); the default names count per kind; the output is `[T, hidden]`.
#[test]
fn lstm_parameters_and_shapes() {
    let p = program(
        "model M(tokens: i32[7]) -> [7, 3] {
             return tokens |> embedding(11, 6) |> lstm(5) |> lstm(hidden: 4) |> dense(3)
         }",
    );
    let g = &p.model("M").unwrap().graph;
    let param = |path: &str| &g.params[g.param_by_path(path).unwrap().index()];
    for (path, dims, bound) in [
        ("lstm1.w_xh", vec![6, 20], 5f32),
        ("lstm1.w_hh", vec![5, 20], 5.0),
        ("lstm1.bias", vec![20], 5.0),
        ("lstm2.w_xh", vec![5, 16], 4.0),
        ("lstm2.w_hh", vec![4, 16], 4.0),
        ("lstm2.bias", vec![16], 4.0),
    ] {
        assert_eq!(param(path).dims, dims, "{path}");
        assert_eq!(
            param(path).init,
            Init::Uniform {
                bound: 1.0 / bound.sqrt()
            },
            "{path}"
        );
    }
    // The model's graph is not trained: its lstms keep no state.
    let ops = |g: &Graph, op: Op| -> Vec<Type> {
        g.nodes
            .iter()
            .filter(|n| n.op == op)
            .map(|n| n.ty.clone())
            .collect()
    };
    let hidden = [Type::f32(true, [7, 5]), Type::f32(true, [7, 4])];
    assert_eq!(ops(g, Op::Lstm), hidden);
    assert!(ops(g, Op::LstmScan).is_empty());
    // A training graph keeps each step's [h, c, i, f, g, o] for the backward pass.
    let p = program(
        "model M(tokens: i32[7]) -> [7, 11] {
             return tokens |> embedding(11, 6) |> lstm(5) |> lstm(hidden: 4) |> dense(11)
         }
         data d { train: text(\"t.txt\", seq: 7) }
         train M on d { loss: cross_entropy(output, label) optimizer: sgd(lr: 0.1) }",
    );
    let g = &p.run("M").unwrap().graph;
    assert_eq!(ops(g, Op::LstmHidden), hidden);
    assert_eq!(
        ops(g, Op::LstmScan),
        [Type::f32(true, [7, 30]), Type::f32(true, [7, 24])]
    );
    assert!(ops(g, Op::Lstm).is_empty());
}

/// Each activation's arguments, by position, by name and left out (PyTorch's defaults), as a
/// stage and as a function of a tensor, reach the op with their values; `as` names the node.
#[test]
fn activation_arguments_and_defaults() {
    let p = program(
        r#"model Net(x: [4]) -> [4] {
             a = x |> leaky_relu |> leaky_relu(0.2) |> leaky_relu(negative_slope: -1)
             b = leaky_relu(a, 0.3) |> elu |> elu(0.5) |> elu(alpha: 0) as flat
             c = gelu(b) |> gelu(approximate: "none") |> gelu("tanh") |> silu
             return silu(c) |> softplus |> softplus(2) |> softplus(beta: -1, threshold: 5)
         }"#,
    );
    let g = &p.model("Net").unwrap().graph;
    let acts: Vec<(UnaryOp, &str)> = g
        .nodes
        .iter()
        .filter_map(|n| match n.op {
            Op::Unary(u) => Some((u, n.label.as_str())),
            _ => None,
        })
        .collect();
    let want = [
        UnaryOp::leaky_relu(0.01),
        UnaryOp::leaky_relu(0.2),
        UnaryOp::leaky_relu(-1.0),
        UnaryOp::leaky_relu(0.3),
        UnaryOp::elu(1.0),
        UnaryOp::elu(0.5),
        UnaryOp::elu(0.0),
        UnaryOp::Gelu,
        UnaryOp::Gelu,
        UnaryOp::GeluTanh,
        UnaryOp::Silu,
        UnaryOp::Silu,
        UnaryOp::softplus(1.0, 20.0),
        UnaryOp::softplus(2.0, 20.0),
        UnaryOp::softplus(-1.0, 5.0),
    ];
    assert_eq!(acts.iter().map(|a| a.0).collect::<Vec<_>>(), want);
    assert_eq!(acts[6].1, "flat");
    assert_eq!(acts[3].0.param(), 0.3);
    assert_eq!(acts[14].0.threshold(), 5.0);
}
