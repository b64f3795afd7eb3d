//! GEMM throughput (single thread) on the shapes nnc's models use, plus 1024³.
//! Criterion reports time per call; GFLOP/s = 2·m·n·k / time (shown as "elements" = flops).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nnc::codegen::gemm::Gemm;

fn bench(c: &mut Criterion) {
    let g = Gemm::new().unwrap();
    let mut group = c.benchmark_group("gemm");
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_millis(300));
    group.measurement_time(std::time::Duration::from_secs(1));
    for (name, ta, tb, m, n, k) in [
        ("mlp_fwd_64x784x128", false, false, 64, 128, 784),
        ("mlp_wgrad_ta_784x128x64", true, false, 784, 128, 64),
        ("mlp_dgrad_tb_64x784x128", false, true, 64, 784, 128),
        ("square_1024", false, false, 1024, 1024, 1024),
        ("xor_4x2x4", false, false, 4, 4, 2),
    ] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut out = vec![0.0f32; m * n];
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        group.bench_function(name, |bch| {
            bch.iter(|| g.gemm(ta, tb, m, n, k, &a, &b, &mut out, false).unwrap())
        });
    }
    // The MLP forward shape split over the 2 cores of the dev machine.
    let (m, n, k) = (64, 128, 784);
    let a = vec![0.1f32; m * k];
    let b = vec![0.2f32; k * n];
    let mut out = vec![0.0f32; m * n];
    group.throughput(Throughput::Elements((2 * m * n * k) as u64));
    group.bench_function("mlp_fwd_64x784x128_2_threads", |bch| {
        bch.iter(|| {
            g.gemm_threads(2, false, false, m, n, k, &a, &b, &mut out, false)
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
