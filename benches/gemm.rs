//! GEMM throughput (single thread) on the shapes nnc's models use, plus 1024³; then the MLP's
//! first layer and its weight gradient on MNIST-like images (a disc of ink on a background, 19%
//! of the pixels) with the compacted product (`nnc::codegen::sparse`) beside the dense GEMM,
//! and the CNN's first dense layer at batch 1.
//! Criterion reports time per call; GFLOP/s = 2·m·n·k / time (shown as "elements" = flops of
//! the dense product, also for the compacted one).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nnc::codegen::gemm::Gemm;
use nnc::codegen::masked::{self, Masked};
use nnc::codegen::sparse::{Problem, Sparse};

/// `batch` 28×28 images: a disc of about 150 pixels of ink (0.1–1.0), off-centre by up to 3
/// pixels, on a background of `bg`.
fn images(batch: usize, bg: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(batch * 784);
    for i in 0..batch {
        let (cx, cy) = (12.0 + (i % 7) as f32, 12.0 + (i % 5) as f32);
        for y in 0..28 {
            for x in 0..28 {
                let d2 = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2);
                out.push(if d2 < 48.0 {
                    0.1 + ((x * 7 + y * 3 + i) % 10) as f32 * 0.1
                } else {
                    bg
                });
            }
        }
    }
    out
}

/// `len` values, a share of about `density` of them `live` and the rest 0, scattered by a
/// multiplicative hash of the index.
fn scattered(len: usize, density: f32, live: f32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let u = (i.wrapping_mul(2654435761) % 1000) as f32 / 1000.0;
            if u < density {
                live
            } else {
                0.0
            }
        })
        .collect()
}

fn sparse(c: &mut Criterion) {
    let g = Gemm::new().unwrap();
    let s = Sparse::new().unwrap();
    let mut group = c.benchmark_group("sparse");
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_millis(300));
    group.measurement_time(std::time::Duration::from_secs(1));
    for (name, ta, m, n, k) in [
        ("mlp_fwd_64x784x128", false, 64, 128, 784),
        ("mlp_wgrad_ta_784x128x64", true, 784, 128, 64),
    ] {
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut out = vec![0.0f32; m * n];
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        for bg in [0.0f32, -1.0] {
            let a = images(if ta { k } else { m }, bg);
            let p = Problem { ta, m, n, k };
            for threads in [1, 2] {
                group.bench_function(format!("{name}_bg{bg}_{threads}_threads"), |bch| {
                    bch.iter(|| s.product(threads, p, bg, &a, &b, &mut out, None).unwrap())
                });
            }
            if bg == 0.0 {
                group.bench_function(format!("{name}_dense_gemm_2_threads"), |bch| {
                    bch.iter(|| {
                        g.gemm_threads(2, ta, false, m, n, k, &a, &b, &mut out, false)
                            .unwrap()
                    })
                });
            }
        }
    }
    // The CNN's first dense layer at batch 1: 3136 inputs, 62% of them non-zero after ReLU
    // and pooling, 1.6 MB of weights, which decide the time more than the multiply-adds do.
    let (m, n, k) = (1, 128, 3136);
    let a = scattered(k, 0.62, 0.5);
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut out = vec![0.0f32; n];
    let p = Problem { ta: false, m, n, k };
    group.throughput(Throughput::Elements((2 * m * n * k) as u64));
    for threads in [1, 2] {
        let name = format!("cnn_dense1_b1_1x128x3136_density0.62_{threads}_threads");
        group.bench_function(name, |bch| {
            bch.iter(|| s.product(threads, p, 0.0, &a, &b, &mut out, None).unwrap())
        });
    }
    group.bench_function("cnn_dense1_b1_1x128x3136_dense_gemm_2_threads", |bch| {
        bch.iter(|| {
            g.gemm_threads(2, false, false, m, n, k, &a, &b, &mut out, false)
                .unwrap()
        })
    });
    group.finish();
}

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
        // One Winograd plane of the CNN's conv2 (`M = Uᵀ·V`, U read in place): at batch 1
        // (16 tiles) and in training (a group of three images, 48 tiles).
        ("wino_plane_ta_64x16x32", true, false, 64, 16, 32),
        ("wino_plane_ta_64x48x32", true, false, 64, 48, 32),
    ] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut out = vec![0.0f32; m * n];
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        group.bench_function(name, |bch| {
            bch.iter(|| g.gemm(ta, tb, m, n, k, &a, &b, &mut out, false).unwrap())
        });
    }
    // The char-RNN's recurrent weight gradient (h128, T64, b32: `hᵀ·dh` over 2048 rows), on
    // one thread and two.
    let (m, n, k) = (128, 128, 2048);
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut out = vec![0.0f32; m * n];
    group.throughput(Throughput::Elements((2 * m * n * k) as u64));
    for threads in [1, 2] {
        group.bench_function(
            format!("rnn_whh_wgrad_ta_128x128x2048_{threads}_threads"),
            |bch| {
                bch.iter(|| {
                    g.gemm_threads(threads, true, false, m, n, k, &a, &b, &mut out, false)
                        .unwrap()
                })
            },
        );
    }
    // The CNN's first dense layer in training (b64), its three products on two threads.
    for (name, ta, tb, m, n, k) in [
        ("fwd_64x128x3136", false, false, 64, 128, 3136),
        ("wgrad_ta_3136x128x64", true, false, 3136, 128, 64),
        ("dgrad_tb_64x3136x128", false, true, 64, 3136, 128),
    ] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut out = vec![0.0f32; m * n];
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        group.bench_function(format!("cnn_dense1_{name}_2_threads"), |bch| {
            bch.iter(|| {
                g.gemm_threads(2, ta, tb, m, n, k, &a, &b, &mut out, false)
                    .unwrap()
            })
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
    // The autoencoder's decoder reads ReLU outputs, 38–62% zeros from step to step in
    // training: the compacted product beside the dense GEMM at densities around
    // `sparse::MAX_DENSITY_WIDE`, on those shapes (784 columns) and on the MLP's second layer
    // (10 columns), where compacting loses at any density the ReLU leaves.
    let s = Sparse::new().unwrap();
    for (name, ta, m, n, k) in [
        ("ae_dec2_fwd_128x784x128", false, 128, 784, 128),
        ("ae_dec2_wgrad_ta_128x784x128", true, 128, 784, 128),
        ("ae_dec1_wgrad_ta_32x128x128", true, 32, 128, 128),
        ("mlp_dense2_fwd_64x10x128", false, 64, 10, 128),
    ] {
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut out = vec![0.0f32; m * n];
        let p = Problem { ta, m, n, k };
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        for density in [0.5, 0.6, 0.7, 0.8, 0.9] {
            let a = scattered(m * k, density, 0.5);
            group.bench_function(format!("{name}_density{density}_2_threads"), |bch| {
                bch.iter(|| s.product(2, p, 0.0, &a, &b, &mut out, None).unwrap())
            });
        }
        group.bench_function(format!("{name}_dense_gemm_2_threads"), |bch| {
            let a = vec![0.5f32; m * k];
            bch.iter(|| {
                g.gemm_threads(2, ta, false, m, n, k, &a, &b, &mut out, false)
                    .unwrap()
            })
        });
    }
    // The autoencoder's decoder gradient `dH = (dY·W2ᵀ) ⊙ [H > 0]`: the masked product
    // (`nnc::codegen::masked`) at densities around its `MAX_DENSITY`, beside the dense GEMM.
    let mk = Masked::new().unwrap();
    let (m, n, k) = (128, 128, 784);
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut out = vec![0.0f32; m * n];
    group.throughput(Throughput::Elements((2 * m * n * k) as u64));
    for density in [0.4, 0.5, 0.6, 0.65] {
        let h = scattered(m * n, density, 1.0);
        let p = masked::Problem { m, n, k };
        group.bench_function(
            format!("ae_dec1_dgrad_tb_128x128x784_density{density}_2_threads"),
            |bch| bch.iter(|| assert!(mk.product(2, p, &a, &b, &h, &mut out).unwrap())),
        );
    }
    group.bench_function("ae_dec1_dgrad_tb_128x128x784_dense_gemm_2_threads", |bch| {
        bch.iter(|| {
            g.gemm_threads(2, false, true, m, n, k, &a, &b, &mut out, false)
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench, sparse);
criterion_main!(benches);
