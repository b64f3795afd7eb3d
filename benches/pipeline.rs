//! The compiler and the runtime's hot paths, per example: compile time (parse → checked IR →
//! autodiff → optimized graph → every kernel JIT-compiled), one training step, and batch-1
//! inference. `cargo bench --bench pipeline`; `nnc bench FILE` measures whole runs on real data.

use criterion::{criterion_group, criterion_main, Criterion};
use nnc::codegen::{Jit, JitOptions};
use nnc::exec::{Executor, Feed, StepCtx};
use nnc::ir::{DType, Graph};
use nnc::runtime::init::init_param;

const EXAMPLES: &[&str] = &[
    "xor",
    "mnist_mlp",
    "mnist_cnn",
    "char_rnn",
    "autoencoder_finetune",
    "distill",
];

fn program(name: &str) -> nnc::ir::Program {
    let path = format!("{}/examples/{name}.nn", env!("CARGO_MANIFEST_DIR"));
    let src = std::fs::read_to_string(path).unwrap();
    nnc::check::check(&nnc::syntax::parse(&src).unwrap()).unwrap()
}

fn training_graph(g: &Graph) -> Graph {
    nnc::opt::optimize(&nnc::autodiff::grad(g).unwrap(), 1).unwrap()
}

/// Runs `g` once on `batch` samples of constant inputs (ids 0 for integer inputs).
fn runner(g: &Graph, batch: usize) -> impl FnMut() {
    let mut jit = Jit::compile(g, &JitOptions::default()).unwrap();
    let params: Vec<Vec<f32>> = g.params.iter().map(|p| init_param(p, 0)).collect();
    let inputs: Vec<(DType, usize)> = g
        .inputs()
        .iter()
        .map(|(v, _)| (g.ty(*v).dtype, g.ty(*v).numel(batch)))
        .collect();
    let f32s: Vec<Vec<f32>> = inputs.iter().map(|&(_, n)| vec![0.5; n]).collect();
    let i32s: Vec<Vec<i32>> = inputs.iter().map(|&(_, n)| vec![0; n]).collect();
    move || {
        let feeds: Vec<Feed<'_>> = inputs
            .iter()
            .enumerate()
            .map(|(k, (dt, _))| match dt {
                DType::F32 => Feed::F32(&f32s[k]),
                DType::I32 => Feed::I32(&i32s[k]),
            })
            .collect();
        let views: Vec<&[f32]> = params.iter().map(Vec::as_slice).collect();
        jit.run(batch, &feeds, &views, StepCtx::default()).unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline");
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_millis(300));
    group.measurement_time(std::time::Duration::from_secs(1));
    for name in EXAMPLES {
        let path = format!("{}/examples/{name}.nn", env!("CARGO_MANIFEST_DIR"));
        let src = std::fs::read_to_string(path).unwrap();
        group.bench_function(format!("compile/{name}"), |b| {
            b.iter(|| {
                let p = nnc::check::check(&nnc::syntax::parse(&src).unwrap()).unwrap();
                for r in &p.runs {
                    Jit::compile(&training_graph(&r.graph), &JitOptions::default()).unwrap();
                }
            })
        });
    }
    for name in ["xor", "mnist_mlp", "mnist_cnn", "char_rnn"] {
        let p = program(name);
        let run = &p.runs[0];
        let mut step = runner(&training_graph(&run.graph), run.batch);
        group.bench_function(format!("train_step/{name}"), |b| b.iter(&mut step));
        let model = p.model(&run.model).unwrap();
        let mut infer = runner(&model.graph, 1);
        group.bench_function(format!("infer_batch1/{name}"), |b| b.iter(&mut infer));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
