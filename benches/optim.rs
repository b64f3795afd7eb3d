//! The optimizer update kernels (`codegen/optim.rs`) alone, one thread: elements per second
//! of SGD, Adam and RMSprop (centered, with momentum: its three buffers) over a parameter of the autoencoder's decoder (128×784) and one that stays
//! in L1 (4,096 elements), out of place as inside a training step and in place.
//!
//! `cargo bench --bench optim`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nnc::codegen::optim::UpdateKernel;
use nnc::exec::UpdateHyper;
use nnc::ir::OptimizerSpec;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("optim");
    group.sample_size(20);
    let adam = OptimizerSpec::Adam {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let sgd = OptimizerSpec::Sgd {
        lr: 0.01,
        momentum: 0.0,
        nesterov: false,
        weight_decay: 0.0,
    };
    let rmsprop = OptimizerSpec::RmsProp {
        lr: 1e-3,
        alpha: 0.99,
        eps: 1e-8,
        momentum: 0.9,
        weight_decay: 0.0,
        centered: true,
    };
    for (name, spec) in [("adam", adam), ("sgd", sgd), ("rmsprop", rmsprop)] {
        let kernel = UpdateKernel::compile(&spec).unwrap();
        for n in [4096, 128 * 784] {
            let p: Vec<f32> = (0..n).map(|i| (i % 13) as f32 * 0.01).collect();
            let g: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 1e-3 - 3e-3).collect();
            let mut next = vec![0f32; n];
            let mut state = vec![vec![0f32; n]; 3];
            let h = UpdateHyper { lr: 1e-3, step: 10 };
            group.throughput(Throughput::Elements(n as u64));
            group.bench_function(format!("{name}_{n}_out_of_place"), |b| {
                b.iter(|| unsafe {
                    kernel.apply(p.as_ptr(), g.as_ptr(), next.as_mut_ptr(), n, &mut state, h)
                })
            });
            let mut q = p.clone();
            group.bench_function(format!("{name}_{n}_in_place"), |b| {
                b.iter(|| unsafe {
                    kernel.apply(q.as_ptr(), g.as_ptr(), q.as_mut_ptr(), n, &mut state, h)
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
