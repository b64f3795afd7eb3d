//! The checker's run graphs go through autodiff, and their gradients agree with finite differences
//! (both computed by the f64 reference interpreter) for the XOR, frozen-encoder and distillation
//! runs: the loss lowering (mse, cross_entropy, kd with the teacher's reshaped input) is correct.

mod common;

use common::{program, random_inputs as inputs, Lcg, EXAMPLES};
use nnc::autodiff::gradcheck::{gradcheck, interpreter_grads, F64_FLOOR};
use nnc::exec::StepCtx;
use nnc::ir::{Graph, Init, Program};

const CTX: StepCtx = StepCtx {
    seed: 3,
    step: 1,
    first: 0,
};

/// Parameters drawn from each parameter's initializer.
fn params(g: &Graph, rng: &mut Lcg) -> Vec<Vec<f64>> {
    g.params
        .iter()
        .map(|p| {
            (0..p.numel())
                .map(|_| match p.init {
                    Init::Zeros => 0.0,
                    Init::Ones => 1.0,
                    Init::Uniform { bound } => (2.0 * rng.next() - 1.0) * bound as f64,
                    Init::Normal { std } => {
                        (rng.next() + rng.next() + rng.next() - 1.5) * 2.0 * std as f64
                    }
                })
                .collect()
        })
        .collect()
}

fn check_run(p: &Program, run: &str, batch: usize, inputs: Vec<Vec<f64>>, rng: &mut Lcg) {
    let spec = p.run(run).unwrap();
    let g = &spec.graph;
    let grad = nnc::autodiff::grad(g).unwrap_or_else(|e| panic!("{run}: {e}"));
    let ps = params(g, rng);
    let mut analytic = interpreter_grads(&grad, batch, &inputs, CTX);
    let report = gradcheck(g, &mut analytic, batch, &inputs, &ps, CTX, F64_FLOOR).unwrap();
    assert!(report.loss.is_finite());
    assert!(report.max_rel_err() < 1e-4, "{run}:\n{report}");
}

#[test]
fn every_run_differentiates() {
    for name in EXAMPLES {
        for r in &program(name).runs {
            let g =
                nnc::autodiff::grad(&r.graph).unwrap_or_else(|e| panic!("{name}/{}: {e}", r.name));
            for prm in &r.graph.params {
                let out = g.output(&format!("grad:{}", prm.path));
                assert_eq!(
                    out.is_some(),
                    !prm.frozen,
                    "{name}/{}: gradient of {}",
                    r.name,
                    prm.path
                );
            }
        }
    }
}

#[test]
fn xor_gradients() {
    let p = program("xor");
    let x = vec![0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0];
    let y = vec![0.0, 1.0, 1.0, 0.0];
    check_run(&p, "Xor", 4, vec![x, y], &mut Lcg(1));
}

#[test]
fn frozen_encoder_gradients() {
    let p = program("autoencoder_finetune");
    let mut rng = Lcg(2);
    let ins = inputs(&p.run("frozen").unwrap().graph, 2, 10, &mut rng);
    check_run(&p, "frozen", 2, ins, &mut rng);
}

#[test]
fn distillation_gradients() {
    let p = program("distill");
    let mut rng = Lcg(3);
    let ins = inputs(&p.run("distilled").unwrap().graph, 2, 10, &mut rng);
    check_run(&p, "distilled", 2, ins, &mut rng);
}
