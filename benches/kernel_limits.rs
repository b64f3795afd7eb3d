//! What the GEMM's micro-kernels could reach on this CPU, measured with hand-written step
//! bodies in inline assembly (x86-64 with AVX and FMA): the 128-bit FMA peak, and the
//! depth-step loops of the 8×4 and 4×8 tiles with their operands in L1, in the forms Cranelift
//! can and cannot emit. BENCHMARKS.md quotes these figures; `cargo bench --bench
//! kernel_limits` prints them as GFLOP/s (best of several interleaved rounds).
//!
//! - `peak`: twelve independent `vfmadd231ps` chains, no loads.
//! - `8x4`: [`nnc::codegen::gemm::TILE`]'s step: one f32x4 load of B, eight `vbroadcastss` of A
//!   from memory, eight `fma` (nine loads for eight `fma`).
//! - `4x8`: two loads of B, four broadcasts each used twice (six loads); needs `vfmadd231`,
//!   which Cranelift does not emit.
//! - `4x8 copies`: [`nnc::codegen::gemm::WIDE`]'s step as Cranelift emits it: A pre-broadcast
//!   (plain f32x4 loads) and a register copy per reuse.

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;

    /// Iterations of the 64-step inner loop; a call is `n · 64` depth steps.
    pub type Body = fn(n: usize, a: *const f32, b: *const f32);

    pub fn peak(n: usize, _a: *const f32, _b: *const f32) {
        // SAFETY: registers only.
        unsafe {
            asm!(
                "vxorps xmm0, xmm0, xmm0", "vxorps xmm1, xmm1, xmm1", "vxorps xmm2, xmm2, xmm2",
                "vxorps xmm3, xmm3, xmm3", "vxorps xmm4, xmm4, xmm4", "vxorps xmm5, xmm5, xmm5",
                "vxorps xmm6, xmm6, xmm6", "vxorps xmm7, xmm7, xmm7", "vxorps xmm8, xmm8, xmm8",
                "vxorps xmm9, xmm9, xmm9", "vxorps xmm10, xmm10, xmm10", "vxorps xmm11, xmm11, xmm11",
                "3:", "mov {m}, 64",
                "2:",
                "vfmadd231ps xmm0, xmm12, xmm13", "vfmadd231ps xmm1, xmm12, xmm13",
                "vfmadd231ps xmm2, xmm12, xmm13", "vfmadd231ps xmm3, xmm12, xmm13",
                "vfmadd231ps xmm4, xmm12, xmm13", "vfmadd231ps xmm5, xmm12, xmm13",
                "vfmadd231ps xmm6, xmm12, xmm13", "vfmadd231ps xmm7, xmm12, xmm13",
                "vfmadd231ps xmm8, xmm12, xmm13", "vfmadd231ps xmm9, xmm12, xmm13",
                "vfmadd231ps xmm10, xmm12, xmm13", "vfmadd231ps xmm11, xmm12, xmm13",
                "dec {m}", "jnz 2b",
                "dec {n}", "jnz 3b",
                n = inout(reg) n => _, m = out(reg) _,
                out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _, out("xmm4") _,
                out("xmm5") _, out("xmm6") _, out("xmm7") _, out("xmm8") _, out("xmm9") _,
                out("xmm10") _, out("xmm11") _, out("xmm12") _, out("xmm13") _,
            );
        }
    }

    /// A loop of `n` × 64 depth steps of `body` (template lines reading A at `{ap}` and B at
    /// `{bp}`), the pointers advanced by `a_step` and `b_step` bytes a step and rewound every
    /// 64, with eight accumulators xmm0–xmm7 zeroed first.
    macro_rules! depth_loop {
        ($n:expr, $a:expr, $b:expr, $a_step:literal, $b_step:literal, $($body:literal),+ $(,)?) => {
            // SAFETY (of the callers): the body reads 64 steps of A at `a` and of B at `b`,
            // inside the buffers `main` passes.
            unsafe {
                asm!(
                    "vxorps xmm0, xmm0, xmm0", "vxorps xmm1, xmm1, xmm1",
                    "vxorps xmm2, xmm2, xmm2", "vxorps xmm3, xmm3, xmm3",
                    "vxorps xmm4, xmm4, xmm4", "vxorps xmm5, xmm5, xmm5",
                    "vxorps xmm6, xmm6, xmm6", "vxorps xmm7, xmm7, xmm7",
                    "3:", "mov {ap}, {a0}", "mov {bp}, {b0}", "mov {m}, 64",
                    "2:",
                    $($body,)+
                    concat!("add {ap}, ", $a_step), concat!("add {bp}, ", $b_step),
                    "dec {m}", "jnz 2b",
                    "dec {n}", "jnz 3b",
                    n = inout(reg) $n => _, a0 = in(reg) $a, b0 = in(reg) $b,
                    ap = out(reg) _, bp = out(reg) _, m = out(reg) _,
                    out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
                    out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
                    out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
                    out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
                )
            }
        };
    }

    pub fn tile_8x4(n: usize, a: *const f32, b: *const f32) {
        depth_loop!(
            n,
            a,
            b,
            32,
            16,
            "vmovups xmm9, [{bp}]",
            "vbroadcastss xmm8, [{ap}]",
            "vfmadd231ps xmm0, xmm8, xmm9",
            "vbroadcastss xmm10, [{ap}+4]",
            "vfmadd231ps xmm1, xmm10, xmm9",
            "vbroadcastss xmm11, [{ap}+8]",
            "vfmadd231ps xmm2, xmm11, xmm9",
            "vbroadcastss xmm12, [{ap}+12]",
            "vfmadd231ps xmm3, xmm12, xmm9",
            "vbroadcastss xmm13, [{ap}+16]",
            "vfmadd231ps xmm4, xmm13, xmm9",
            "vbroadcastss xmm14, [{ap}+20]",
            "vfmadd231ps xmm5, xmm14, xmm9",
            "vbroadcastss xmm15, [{ap}+24]",
            "vfmadd231ps xmm6, xmm15, xmm9",
            "vbroadcastss xmm8, [{ap}+28]",
            "vfmadd231ps xmm7, xmm8, xmm9",
        );
    }

    pub fn tile_4x8(n: usize, a: *const f32, b: *const f32) {
        depth_loop!(
            n,
            a,
            b,
            16,
            32,
            "vmovups xmm14, [{bp}]",
            "vmovups xmm15, [{bp}+16]",
            "vbroadcastss xmm8, [{ap}]",
            "vfmadd231ps xmm0, xmm8, xmm14",
            "vfmadd231ps xmm1, xmm8, xmm15",
            "vbroadcastss xmm9, [{ap}+4]",
            "vfmadd231ps xmm2, xmm9, xmm14",
            "vfmadd231ps xmm3, xmm9, xmm15",
            "vbroadcastss xmm10, [{ap}+8]",
            "vfmadd231ps xmm4, xmm10, xmm14",
            "vfmadd231ps xmm5, xmm10, xmm15",
            "vbroadcastss xmm11, [{ap}+12]",
            "vfmadd231ps xmm6, xmm11, xmm14",
            "vfmadd231ps xmm7, xmm11, xmm15",
        );
    }

    pub fn tile_4x8_copies(n: usize, a: *const f32, b: *const f32) {
        depth_loop!(
            n,
            a,
            b,
            64,
            32,
            "vmovups xmm14, [{bp}]",
            "vmovups xmm15, [{bp}+16]",
            "vmovups xmm8, [{ap}]",
            "vmovaps xmm12, xmm8",
            "vfmadd231ps xmm0, xmm8, xmm14",
            "vfmadd231ps xmm1, xmm12, xmm15",
            "vmovups xmm9, [{ap}+16]",
            "vmovaps xmm13, xmm9",
            "vfmadd231ps xmm2, xmm9, xmm14",
            "vfmadd231ps xmm3, xmm13, xmm15",
            "vmovups xmm10, [{ap}+32]",
            "vmovaps xmm12, xmm10",
            "vfmadd231ps xmm4, xmm10, xmm14",
            "vfmadd231ps xmm5, xmm12, xmm15",
            "vmovups xmm11, [{ap}+48]",
            "vmovaps xmm13, xmm11",
            "vfmadd231ps xmm6, xmm11, xmm14",
            "vfmadd231ps xmm7, xmm13, xmm15",
        );
    }

    /// Name, body, and `fma`s per depth step (f32x4, 8 flops each).
    pub const BODIES: [(&str, Body, usize); 4] = [
        ("peak", peak, 12),
        ("8x4", tile_8x4, 8),
        ("4x8", tile_4x8, 8),
        ("4x8 copies", tile_4x8_copies, 8),
    ];
}

#[cfg(target_arch = "x86_64")]
fn main() {
    use std::time::Instant;
    if !(std::is_x86_feature_detected!("avx") && std::is_x86_feature_detected!("fma")) {
        println!("kernel_limits: this CPU lacks AVX or FMA");
        return;
    }
    // Operands for 64 depth steps of every body (at most 16 floats of A and 8 of B a step).
    let a = vec![0.5f32; 64 * 16];
    let b = vec![0.5f32; 64 * 8];
    let calls = 200_000;
    let mut best = [f64::MAX; x86::BODIES.len()];
    for _round in 0..5 {
        for (i, &(_, body, _)) in x86::BODIES.iter().enumerate() {
            let t = Instant::now();
            body(std::hint::black_box(calls), a.as_ptr(), b.as_ptr());
            best[i] = best[i].min(t.elapsed().as_secs_f64());
        }
    }
    println!("GFLOP/s of f32x4 step bodies, one thread, operands in L1 (best of 5 rounds):");
    for (&(name, _, fmas), secs) in x86::BODIES.iter().zip(best) {
        let flops = (calls * 64 * fmas * 8) as f64;
        println!("  {name:<11} {:6.1}", flops / secs / 1e9);
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("kernel_limits: x86-64 only");
}
