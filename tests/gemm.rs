//! The JIT GEMM against a naive f64 triple loop: random and fixed shapes, all four
//! transpose combinations, overwrite and accumulate, other tiles, threads, length checks.

use nnc::codegen::gemm::{Gemm, Tile, TILE};

/// Deterministic xorshift values in [-1, 1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Checks one call of `g` against the f64 reference; C starts with random values.
/// Error bound: 1e-5·k relative to Σ|terms| (the conditioning of the sum).
#[allow(clippy::too_many_arguments)]
fn check(g: &Gemm, rng: &mut Rng, ta: bool, tb: bool, m: usize, n: usize, k: usize, acc: bool) {
    check_threads(g, 0, rng, ta, tb, m, n, k, acc);
}

/// [`check`] through `gemm_threads(threads, …)`, or `gemm` when `threads` is 0.
#[allow(clippy::too_many_arguments)]
fn check_threads(
    g: &Gemm,
    threads: usize,
    rng: &mut Rng,
    ta: bool,
    tb: bool,
    m: usize,
    n: usize,
    k: usize,
    acc: bool,
) {
    let a = rng.vec(m * k);
    let b = rng.vec(k * n);
    let c0 = rng.vec(m * n);
    let mut c = c0.clone();
    if threads == 0 {
        g.gemm(ta, tb, m, n, k, &a, &b, &mut c, acc).unwrap();
    } else {
        g.gemm_threads(threads, ta, tb, m, n, k, &a, &b, &mut c, acc)
            .unwrap();
    }
    let tol = 1e-5 * (k.max(1) as f64);
    for i in 0..m {
        for j in 0..n {
            let mut s = if acc { c0[i * n + j] as f64 } else { 0.0 };
            let mut mag = s.abs();
            for p in 0..k {
                let x = if ta { a[p * m + i] } else { a[i * k + p] } as f64;
                let y = if tb { b[j * k + p] } else { b[p * n + j] } as f64;
                s += x * y;
                mag += (x * y).abs();
            }
            let got = c[i * n + j] as f64;
            assert!(
                (got - s).abs() <= tol * mag.max(1e-3),
                "ta={ta} tb={tb} m={m} n={n} k={k} acc={acc}: C[{i}][{j}] = {got}, want {s}"
            );
        }
    }
}

#[test]
fn random_shapes_all_variants() {
    let g = Gemm::new().unwrap();
    let mut rng = Rng(0x9e3779b97f4a7c15);
    for _ in 0..150 {
        let (m, n, k) = (rng.below(70), rng.below(70), rng.below(70));
        for ta in [false, true] {
            for tb in [false, true] {
                for acc in [false, true] {
                    check(&g, &mut rng, ta, tb, m, n, k, acc);
                }
            }
        }
    }
}

#[test]
fn fixed_shapes() {
    let g = Gemm::new().unwrap();
    let mut rng = Rng(12345);
    for (ta, tb, m, n, k) in [
        (false, false, 1, 1, 1),
        (false, false, 4, 4, 2),
        (false, false, 4, 2, 4),
        (true, false, 2, 4, 4),
        (false, true, 4, 2, 4),
        (false, false, 64, 128, 784),
        (false, true, 64, 784, 128),
        (true, false, 784, 128, 64),
        (true, true, 33, 517, 300),
        (false, false, 200, 2100, 9),
        (false, false, 7, 9, 600),
        // One- to three-row C take the narrow kernel, reading A in place (not `ta`) and B too
        // when n is a multiple of its 16 columns (not `tb`), across depth and column blocks.
        (false, false, 1, 128, 128),
        (false, false, 1, 128, 784),
        (false, false, 3, 4096, 600),
        (false, false, 2, 48, 1000),
        (false, false, 2, 50, 1000),
        (true, false, 2, 37, 300),
        (false, true, 3, 17, 5),
        (true, true, 1, 1000, 3),
        // A shallow B (k ≤ 64, not `tb`, n a multiple of 4) is read in place by every kernel:
        // Winograd's products, one and more row and column blocks, and k just past the bound.
        (false, false, 64, 100, 32),
        (false, false, 200, 2052, 64),
        (false, false, 9, 8, 1),
        (false, false, 20, 96, 65),
        // Shallow weight gradients `Xᵀ·dY`; B in rows of 512 bytes, which is packed.
        (true, false, 784, 128, 64),
        (false, false, 64, 128, 64),
        (true, true, 3136, 20, 64),
        (true, false, 13, 20, 40),
        (true, false, 100, 8, 3),
        // A stored transposed with whole slivers of rows, up to 4096 elements, is read in
        // place (Winograd's transformed weights): one and two depth blocks, and just past it.
        (true, false, 64, 52, 32),
        (true, false, 32, 100, 64),
        (true, false, 8, 40, 512),
        (true, true, 16, 20, 256),
        (true, false, 64, 52, 65),
    ] {
        for acc in [false, true] {
            check(&g, &mut rng, ta, tb, m, n, k, acc);
        }
    }
}

#[test]
fn other_tiles() {
    let mut rng = Rng(777);
    for tile in [
        Tile { mr: 4, nr: 8 },
        Tile { mr: 1, nr: 4 },
        Tile { mr: 3, nr: 12 },
    ] {
        let g = Gemm::with_tile(tile).unwrap();
        for _ in 0..20 {
            let (m, n, k) = (rng.below(40), rng.below(40), rng.below(300));
            let bits = rng.next();
            check(
                &g,
                &mut rng,
                bits & 1 == 0,
                bits & 2 == 0,
                m,
                n,
                k,
                bits & 4 == 0,
            );
        }
    }
    assert!(Gemm::with_tile(Tile { mr: 4, nr: 6 }).is_err());
}

#[test]
fn k_zero_and_empty() {
    let g = Gemm::new().unwrap();
    let mut c = vec![5.0f32; 6];
    g.gemm(false, false, 2, 3, 0, &[], &[], &mut c, true)
        .unwrap();
    assert_eq!(c, vec![5.0; 6]);
    g.gemm(false, false, 2, 3, 0, &[], &[], &mut c, false)
        .unwrap();
    assert_eq!(c, vec![0.0; 6]);
    g.gemm(false, false, 0, 3, 4, &[], &[0.0; 12], &mut [], false)
        .unwrap();
}

#[test]
fn short_slices_are_errors() {
    let g = Gemm::new().unwrap();
    let mut c = vec![0.0f32; 4];
    let err = g.gemm(false, false, 2, 2, 3, &[0.0; 5], &[0.0; 6], &mut c, false);
    assert!(err.unwrap_err().contains("A has 5 elements"));
    assert!(g
        .gemm(false, false, 2, 2, 3, &[0.0; 6], &[0.0; 5], &mut c, false)
        .is_err());
    assert!(g
        .gemm(false, false, 2, 3, 3, &[0.0; 6], &[0.0; 9], &mut c, false)
        .is_err());
    assert!(g
        .gemm(false, false, usize::MAX, 2, 3, &[], &[], &mut c, false)
        .is_err());
}

#[test]
fn shared_between_threads() {
    let g = Gemm::new().unwrap();
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let g = &g;
            s.spawn(move || {
                let mut rng = Rng(99 + t);
                for _ in 0..10 {
                    check(g, &mut rng, false, t == 1, 37, 45, 300, false);
                }
            });
        }
    });
}

#[test]
fn split_over_threads() {
    let g = Gemm::new().unwrap();
    let mut rng = Rng(4242);
    for (threads, ta, tb, m, n, k) in [
        (2, false, false, 64, 128, 784),
        (2, true, false, 784, 128, 64),
        (3, false, true, 101, 77, 300),
        (4, true, true, 37, 300, 400),
        (2, false, false, 3, 5, 7),
        (8, false, false, 9, 1000, 500),
    ] {
        for acc in [false, true] {
            check_threads(&g, threads, &mut rng, ta, tb, m, n, k, acc);
        }
    }
    assert!(g
        .gemm_threads(
            2,
            false,
            false,
            2,
            2,
            3,
            &[0.0; 5],
            &[0.0; 6],
            &mut [0.0; 4],
            false
        )
        .is_err());
}

/// The bit patterns of `v`, to compare results exactly.
fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Split over threads, products keep their bits: by columns for 1–3 rows (batch-1 inference)
/// and when A is the smaller operand to copy (fewer rows than columns), by rows otherwise; every
/// element is summed in the same order whatever part it falls in.
#[test]
fn splits_over_threads_keep_the_bits() {
    let g = Gemm::new().unwrap();
    let mut rng = Rng(77);
    for (m, n, k, ta, tb) in [
        (1, 128, 784, false, false),
        (1, 100, 300, false, true),
        (2, 200, 500, true, false),
        (3, 40, 3000, false, false),
        (1, 10, 20000, true, true),
        (1, 1000, 128, false, false),
        // Wider than tall: by columns (the MLP's forward product, the decoder's).
        (64, 128, 784, false, false),
        (128, 784, 128, false, true),
        (37, 301, 290, true, false),
        // Taller than wide: by rows (weight gradients).
        (784, 128, 64, true, false),
    ] {
        for threads in [2, 3] {
            check_threads(&g, threads, &mut rng, ta, tb, m, n, k, false);
        }
        let (a, b) = (rng.vec(m * k), rng.vec(k * n));
        let mut one = vec![0.0; m * n];
        g.gemm(ta, tb, m, n, k, &a, &b, &mut one, false).unwrap();
        for threads in [2, 3] {
            let mut many = vec![0.0; m * n];
            g.gemm_threads(threads, ta, tb, m, n, k, &a, &b, &mut many, false)
                .unwrap();
            assert_eq!(
                bits(&one),
                bits(&many),
                "m={m} n={n} k={k} threads={threads}"
            );
        }
    }
}

/// `gemm_with` hands every element of C to the epilogue exactly once, and only when it is final
/// (equal, bit for bit, to the product without an epilogue): across depth blocks (k > 256),
/// row blocks (m > 96), column blocks (n > 2048), row and column splits over threads, and
/// k = 0 (a zero C).
#[test]
fn the_epilogue_sees_each_finished_element_once() {
    use nnc::codegen::gemm::Block;
    use std::sync::atomic::{AtomicU8, Ordering};
    let g = Gemm::new().unwrap();
    let mut rng = Rng(99);
    for (m, n, k, threads) in [
        (200, 2100, 300, 1),
        (200, 2100, 300, 3),
        (1, 128, 784, 3),
        (37, 70, 0, 2),
    ] {
        let a = rng.vec(m * k);
        let b = rng.vec(k * n);
        let mut want = vec![0.0; m * n];
        g.gemm_threads(1, false, false, m, n, k, &a, &b, &mut want, false)
            .unwrap();
        let seen: Vec<AtomicU8> = (0..m * n).map(|_| AtomicU8::new(0)).collect();
        let epi = |blk: Block| {
            for (r, i) in blk.rows.clone().enumerate() {
                for (c, j) in blk.cols.clone().enumerate() {
                    // SAFETY: the block's elements lie in C, row stride n.
                    let v = unsafe { *blk.c.add(r * n + c) };
                    assert_eq!(v.to_bits(), want[i * n + j].to_bits(), "({i}, {j})");
                    seen[i * n + j].fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        let mut c = rng.vec(m * n);
        g.gemm_with(
            threads,
            false,
            false,
            m,
            n,
            k,
            &a,
            &b,
            &mut c,
            false,
            Some(&epi),
        )
        .unwrap();
        assert!(
            seen.iter().all(|s| s.load(Ordering::Relaxed) == 1),
            "m={m} n={n} k={k} threads={threads}"
        );
    }
}

/// Products whose A is packed run on the 4×8 kernel reading A broadcast, the others on the 8×4
/// one. Both sum each element of C in depth order with one `fma` a step, so over one depth
/// block a product has the same bits whichever runs it: against a GEMM with the 8×4 kernel
/// alone, over edge slivers (rows not a multiple of 4, columns not of 8) and threads. (Over
/// several depth blocks an edge tile adds its block's sum to C where a full tile carries the
/// `fma` chain on, so an element in an edge tile of one kernel and not the other rounds
/// differently; the kernel depends on the shape alone, so the bits still do not depend on
/// the thread count: `splits_over_threads_keep_the_bits`.)
#[test]
fn the_wide_kernel_keeps_the_bits_of_the_main_one() {
    let (g, main) = (Gemm::new().unwrap(), Gemm::with_tile(TILE).unwrap());
    let mut rng = Rng(4242);
    for (m, n, k, ta, tb) in [
        (128, 784, 128, false, false),
        (64, 784, 128, false, true),
        (784, 128, 64, true, false),
        (13, 21, 200, false, false),
        (37, 301, 250, true, true),
        (6, 9, 70, false, false),
    ] {
        let (a, b) = (rng.vec(m * k), rng.vec(k * n));
        for threads in [1, 2, 3] {
            let (mut x, mut y) = (vec![0.0; m * n], vec![0.0; m * n]);
            g.gemm_threads(threads, ta, tb, m, n, k, &a, &b, &mut x, false)
                .unwrap();
            main.gemm_threads(threads, ta, tb, m, n, k, &a, &b, &mut y, false)
                .unwrap();
            assert_eq!(bits(&x), bits(&y), "m={m} n={n} k={k} threads={threads}");
        }
    }
}
