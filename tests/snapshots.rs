//! Snapshots of every example at each stage: the AST as printed, and the IR of every model and of
//! every run's training and evaluation graphs. Also: every example checks cleanly, every graph
//! passes the verifier, and the parameter counts of the MNIST models are PyTorch's.

mod common;

use common::{program, source, EXAMPLES};
use nnc::check::model_stats;
use nnc::ir::{print::graph_to_string, verify::verify};

#[test]
fn ast_snapshots() {
    for name in EXAMPLES {
        let file = nnc::syntax::parse(&source(name)).expect("examples parse");
        insta::assert_snapshot!(format!("ast_{name}"), nnc::syntax::print_ast(&file));
    }
}

#[test]
fn ir_snapshots() {
    for name in EXAMPLES {
        let p = program(name);
        let mut text = String::new();
        for m in &p.models {
            text.push_str(&graph_to_string(&m.graph));
            text.push('\n');
        }
        for r in &p.runs {
            text.push_str(&graph_to_string(&r.graph));
            text.push('\n');
            text.push_str(&graph_to_string(&r.eval_graph));
            text.push('\n');
        }
        insta::assert_snapshot!(format!("ir_{name}"), text);
    }
}

#[test]
fn every_example_checks_and_verifies() {
    for name in EXAMPLES {
        let p = program(name);
        assert!(
            !p.models.is_empty() && !p.runs.is_empty(),
            "{name}: models and runs"
        );
        let graphs = p
            .models
            .iter()
            .map(|m| &m.graph)
            .chain(p.runs.iter().flat_map(|r| [&r.graph, &r.eval_graph]));
        for g in graphs {
            if let Err(errors) = verify(g) {
                panic!("{name}: {} does not verify:\n{}", g.name, errors.join("\n"));
            }
        }
        for r in &p.runs {
            let loss = r.graph.output("loss").expect("a loss output");
            assert!(
                r.graph.ty(loss).is_scalar(),
                "{name}: loss of {} is a scalar",
                r.name
            );
            assert!(r.graph.output("output").is_some());
            assert!(r.graph.training && !r.eval_graph.training);
        }
    }
}

#[test]
fn mnist_parameter_counts_match_pytorch() {
    let mlp = program("mnist_mlp");
    let s = model_stats(&mlp.model("Mlp").unwrap().graph);
    // 784·128 + 128 + 128·10 + 10
    assert_eq!((s.params, s.trainable), (101_770, 101_770));
    // Two matmuls (2·784·128 + 2·128·10) plus bias adds and the ReLU.
    assert!(s.flops_per_sample >= 2 * 784 * 128 + 2 * 128 * 10);

    let cnn = program("mnist_cnn");
    let s = model_stats(&cnn.model("ConvNet").unwrap().graph);
    // conv 1→32 (288 + 32), conv 32→64 (18432 + 64), dense 3136→128 (401408 + 128), dense 128→10 (1290)
    assert_eq!(s.params, 421_642);
    assert!(s.flops_per_sample > 2 * 9 * 32 * 64 * 14 * 14);

    // PyTorch's Conv2d(1, 16, 3) (144 + 16), Conv2d(16, 32, 3) (4608 + 32),
    // ConvTranspose2d(32, 16, 3) (weight [32, 16, 3, 3]: 4608 + 16), ConvTranspose2d(16, 1, 3)
    // (144 + 1).
    let ae = program("conv_autoencoder");
    let s = model_stats(&ae.model("ConvAutoencoder").unwrap().graph);
    assert_eq!(s.params, 9_569);
    // The products: 2·(1·9)·16·14·14 + 2·(16·9)·32·7·7, then each transposed convolution's
    // input element times its out·k·k weights, 2·(16·9)·32·7·7 + 2·(1·9)·16·14·14; plus at
    // most a few operations an element for the biases and activations.
    let products = 2 * (56_448 + 451_584);
    assert!(
        (products..products + 50_000).contains(&s.flops_per_sample),
        "{} FLOPs",
        s.flops_per_sample
    );
}

#[test]
fn frozen_encoder_and_teacher() {
    let p = program("autoencoder_finetune");
    let frozen = p.run("frozen").unwrap();
    for prm in &frozen.graph.params {
        assert_eq!(prm.frozen, prm.path.starts_with("encoder."), "{}", prm.path);
    }
    let s = model_stats(&frozen.graph);
    assert_eq!(s.trainable, 32 * 10 + 10);
    let finetune = p.run("finetune").unwrap();
    assert_eq!(finetune.lr_scale, vec![("encoder".to_string(), 0.1)]);
    assert!(finetune.graph.params.iter().all(|p| !p.frozen));

    let d = program("distill");
    let run = d.run("distilled").unwrap();
    let teacher: Vec<_> = run
        .graph
        .params
        .iter()
        .filter(|p| p.path.starts_with("teacher."))
        .collect();
    assert_eq!(teacher.len(), 8);
    assert!(teacher.iter().all(|p| p.frozen));
    assert!(run.classification);
}
