//! The JIT exp/log/tanh/sigmoid/erf/expm1/log1p (scalar F32 and vector F32X4) against f64 `std` over dense
//! sweeps, with max ulp / relative / absolute errors printed (`--nocapture`) and asserted, plus
//! the edge cases (overflow, underflow, zero, negative, infinities, NaN).

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, AbiParam, Endianness, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{Linkage, Module};
use nnc::codegen::jitmod::new_jit_module;
use nnc::codegen::math::{
    emit_erf, emit_exp, emit_expm1, emit_log, emit_log1p, emit_sigmoid, emit_tanh,
};

type Emitter = fn(&mut FunctionBuilder, Value) -> Value;
type ArrayFn = unsafe extern "C" fn(*const f32, *mut f32, usize);

/// Compiles `out[i] = f(in[i])` for `i < n`, `lanes` (1 or 4) elements per step; with 4
/// lanes `n` must be a multiple of 4.
fn compile(f: Emitter, lanes: usize) -> (cranelift_jit::JITModule, ArrayFn) {
    let mut module = new_jit_module().unwrap();
    let ptr = module.target_config().pointer_type();
    let mut sig = module.make_signature();
    sig.params.extend([AbiParam::new(ptr); 3]);
    let id = module
        .declare_function("map", Linkage::Local, &sig)
        .unwrap();
    let mut ctx = module.make_context();
    ctx.func.signature = sig;
    let mut fctx = FunctionBuilderContext::new();
    let fe = module.target_config();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let entry = b.create_block();
        let head = b.create_block();
        let body = b.create_block();
        let exit = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.append_block_param(head, ptr);
        b.switch_to_block(entry);
        let p = b.block_params(entry).to_vec();
        let zero = b.ins().iconst(ptr, 0);
        b.ins().jump(head, &[zero.into()]);
        b.switch_to_block(head);
        let i = b.block_params(head)[0];
        let more = b.ins().icmp(IntCC::UnsignedLessThan, i, p[2]);
        b.ins().brif(more, body, &[], exit, &[]);
        b.switch_to_block(body);
        let off = b.ins().ishl_imm_u(i, 2);
        let src = b.ins().iadd(p[0], off);
        let dst = b.ins().iadd(p[1], off);
        let ty = if lanes == 4 { types::F32X4 } else { types::F32 };
        let flags = MemFlagsData::new().with_notrap();
        let x = b.ins().load(ty, flags, src, 0);
        let y = f(&mut b, x);
        b.ins().store(flags, y, dst, 0);
        let next = b.ins().iadd_imm_s(i, lanes as i64);
        b.ins().jump(head, &[next.into()]);
        b.switch_to_block(exit);
        b.ins().return_(&[]);
        b.seal_all_blocks();
        b.finalize(fe);
    }
    module.define_function(id, &mut ctx).unwrap();
    module.finalize_definitions().unwrap();
    let code = module.get_finalized_function(id);
    // SAFETY: defined above with exactly this signature.
    let func = unsafe { std::mem::transmute::<*const u8, ArrayFn>(code) };
    (module, func)
}

fn run(f: Emitter, lanes: usize, xs: &[f32]) -> Vec<f32> {
    let (_module, func) = compile(f, lanes);
    let mut padded = xs.to_vec();
    padded.resize(xs.len().div_ceil(4) * 4, 0.0);
    let mut out = vec![0.0f32; padded.len()];
    // SAFETY: both buffers hold `padded.len()` floats, a multiple of 4.
    unsafe { func(padded.as_ptr(), out.as_mut_ptr(), padded.len()) };
    out.truncate(xs.len());
    out
}

/// Size of one f32 ulp at the magnitude of `r` (subnormal spacing below 2^-126).
fn ulp(r: f64) -> f64 {
    let e = if r == 0.0 {
        -126.0
    } else {
        r.abs().log2().floor().max(-126.0)
    };
    2f64.powf(e - 23.0)
}

/// Max (ulp, relative, absolute) error of `f` over `xs` against `reference`, both lane widths.
fn errors(f: Emitter, reference: fn(f64) -> f64, xs: &[f32]) -> (f64, f64, f64) {
    let (mut mu, mut mr, mut ma) = (0.0f64, 0.0f64, 0.0f64);
    for lanes in [1, 4] {
        let ys = run(f, lanes, xs);
        for (&x, &y) in xs.iter().zip(&ys) {
            let r = reference(x as f64);
            let d = (y as f64 - r).abs();
            assert!(d.is_finite(), "f({x}) = {y}, want {r} (lanes {lanes})");
            mu = mu.max(d / ulp(r));
            if r != 0.0 {
                mr = mr.max(d / r.abs());
            }
            ma = ma.max(d);
        }
    }
    (mu, mr, ma)
}

fn linspace(lo: f32, hi: f32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| lo + (hi - lo) * (i as f32 / (n - 1) as f32))
        .collect()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
fn exp_accuracy() {
    let (u, r, _) = errors(emit_exp, f64::exp, &linspace(-87.0, 88.0, 2_000_000));
    println!("exp [-87, 88]: max {u:.3} ulp, rel {r:.3e}");
    assert!(u <= 1.1 && r <= 1e-7, "exp: {u} ulp, rel {r}");
    // Into the subnormal range: the scale is split, so the error stays within an ulp there too.
    let (u, _, _) = errors(emit_exp, f64::exp, &linspace(-103.9, -87.0, 200_000));
    println!("exp [-103.9, -87]: max {u:.3} ulp");
    assert!(u <= 1.0, "exp subnormal: {u} ulp");
}

#[test]
fn log_accuracy() {
    // Every 37th f32 bit pattern between 1e-30 and 1e30: all mantissas, all exponents.
    let xs: Vec<f32> = (1e-30f32.to_bits()..1e30f32.to_bits())
        .step_by(37)
        .map(f32::from_bits)
        .collect();
    let (u, r, _) = errors(emit_log, f64::ln, &xs);
    println!("log [1e-30, 1e30]: max {u:.3} ulp, rel {r:.3e}");
    assert!(u <= 0.8 && r <= 1e-7, "log: {u} ulp, rel {r}");
    let subnormals: Vec<f32> = (1..0x0080_0000u32)
        .step_by(101)
        .map(f32::from_bits)
        .collect();
    let (u, _, _) = errors(emit_log, f64::ln, &subnormals);
    println!("log subnormals: max {u:.3} ulp");
    assert!(u <= 0.51, "log subnormal: {u} ulp");
}

#[test]
fn tanh_accuracy() {
    let mut xs = linspace(-20.0, 20.0, 2_000_000);
    xs.extend(linspace(-1e-3, 1e-3, 10_001));
    let (u, _, a) = errors(emit_tanh, f64::tanh, &xs);
    println!("tanh [-20, 20]: max {u:.3} ulp, abs {a:.3e}");
    assert!(u <= 1.5 && a <= 1e-7, "tanh: {u} ulp, abs {a}");
}

#[test]
fn sigmoid_accuracy() {
    let (u, _, a) = errors(emit_sigmoid, sigmoid, &linspace(-20.0, 20.0, 2_000_000));
    println!("sigmoid [-20, 20]: max {u:.3} ulp, abs {a:.3e}");
    assert!(u <= 2.5 && a <= 1e-7, "sigmoid: {u} ulp, abs {a}");
}

/// Against the interpreter's f64 erf (itself checked against tabulated values and the integral,
/// `src/interp/special.rs`): the dense sweep, tiny and subnormal arguments (erf(x) ≈ 2x/√π).
#[test]
fn erf_accuracy() {
    let mut xs = linspace(-5.0, 5.0, 2_000_000);
    xs.extend(linspace(-1e-3, 1e-3, 10_001));
    xs.extend((1..0x0080_0000u32).step_by(9973).map(f32::from_bits));
    let (u, _, a) = errors(emit_erf, nnc::interp::erf, &xs);
    println!("erf [-5, 5]: max {u:.3} ulp, abs {a:.3e}");
    assert!(u <= 1.0 && a <= 6e-8, "erf: {u} ulp, abs {a}");
}

#[test]
fn expm1_accuracy() {
    let mut xs = linspace(-20.0, 20.0, 2_000_000);
    xs.extend(linspace(-1e-4, 1e-4, 10_001));
    let (u, r, _) = errors(emit_expm1, f64::exp_m1, &xs);
    println!("expm1 [-20, 20]: max {u:.3} ulp, rel {r:.3e}");
    assert!(u <= 1.8 && r <= 1.2e-7, "expm1: {u} ulp, rel {r}");
}

#[test]
fn log1p_accuracy() {
    let mut xs = linspace(0.0, 1.0, 2_000_000);
    xs.extend(
        (1e-30f32.to_bits()..1e-3f32.to_bits())
            .step_by(997)
            .map(f32::from_bits),
    );
    let (u, r, _) = errors(emit_log1p, f64::ln_1p, &xs);
    println!("log1p [0, 1]: max {u:.3} ulp, rel {r:.3e}");
    assert!(u <= 2.5 && r <= 1.8e-7, "log1p: {u} ulp, rel {r}");
}

/// erf saturates to ±1 and keeps signed zeros and NaN; expm1 and log1p at their edges.
#[test]
fn erf_expm1_log1p_edges() {
    let inf = f32::INFINITY;
    let xs = [0.0, -0.0, 4.0, 100.0, -1e30, inf, -inf, f32::NAN, 1e-45];
    for lanes in [1, 4] {
        let e = run(emit_erf, lanes, &xs);
        assert_eq!(&e[2..7], &[1.0, 1.0, -1.0, 1.0, -1.0]);
        assert!(e[0] == 0.0 && e[0].is_sign_positive() && e[1].is_sign_negative());
        assert!(e[7].is_nan());
        assert!(e[8] > 0.0);
        let m = run(emit_expm1, lanes, &xs);
        assert_eq!(&m[..2], &[0.0, 0.0]);
        assert_eq!(&m[3..7], &[inf, -1.0, inf, -1.0]);
        assert!(m[7].is_nan());
        assert_eq!(m[8], 1e-45);
        let l = run(emit_log1p, lanes, &[0.0, 1e-45, 1.0, inf, f32::NAN]);
        assert_eq!(&l[..2], &[0.0, 1e-45]);
        assert!((l[2] - std::f32::consts::LN_2).abs() <= 6e-8);
        assert_eq!(l[3], inf);
        assert!(l[4].is_nan());
    }
}

#[test]
fn edge_cases() {
    let inf = f32::INFINITY;
    let xs = [
        0.0,
        -0.0,
        1.0,
        89.0,
        100.0,
        -104.0,
        -200.0,
        inf,
        -inf,
        f32::NAN,
        -1.0,
        1e-45,
        1e38,
    ];
    for lanes in [1, 4] {
        let e = run(emit_exp, lanes, &xs);
        let l = run(emit_log, lanes, &xs);
        let t = run(emit_tanh, lanes, &xs);
        let s = run(emit_sigmoid, lanes, &xs);
        assert_eq!(&e[..9], &[1.0, 1.0, e[2], inf, inf, 0.0, 0.0, inf, 0.0]);
        assert!((e[2] - std::f32::consts::E).abs() <= 2.5e-7);
        assert!(e[9].is_nan());
        assert_eq!(l[0], -inf);
        assert_eq!(l[1], -inf);
        assert_eq!(l[2], 0.0);
        assert_eq!(l[7], inf);
        assert!(l[8].is_nan() && l[9].is_nan() && l[10].is_nan());
        assert!((l[11] as f64 - (1e-45f32 as f64).ln()).abs() < 1e-5);
        assert!((l[12] as f64 - 1e38f64.ln()).abs() < 1e-5);
        assert_eq!(&t[3..9], &[1.0, 1.0, -1.0, -1.0, 1.0, -1.0]);
        assert_eq!(t[0], 0.0);
        assert!(t[9].is_nan());
        assert_eq!(&s[3..9], &[1.0, 1.0, 0.0, 0.0, 1.0, 0.0]);
        assert_eq!(s[0], 0.5);
        assert!(s[9].is_nan());
    }
}

/// The sigmoid as `1 / (1 + e^{−x})` on the full-range `exp`.
fn sigmoid_on_full_exp(b: &mut FunctionBuilder, x: Value) -> Value {
    let nx = b.ins().fneg(x);
    let ex = emit_exp(b, nx);
    let ty = b.func.dfg.value_type(x);
    let one = splat_one(b, ty);
    let den = b.ins().fadd(ex, one);
    b.ins().fdiv(one, den)
}

/// The tanh as `nnc::codegen::math` builds it, `±(1 − 2/(e^{2|x|} + 1))` from |x| = 0.625,
/// but on the full-range `exp`; below 0.625 the library's own tanh (its polynomial does not
/// use the exponential), so that only the exponential's branch is compared.
fn tanh_on_full_exp(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    let a = b.ins().fabs(x);
    let two_a = b.ins().fadd(a, a);
    let ex = emit_exp(b, two_a);
    let one = splat_one(b, ty);
    let two = b.ins().fadd(one, one);
    let den = b.ins().fadd(ex, one);
    let q = b.ins().fdiv(two, den);
    let big = b.ins().fsub(one, q);
    let small = emit_tanh(b, x);
    let thr = b.ins().f32const(0.625);
    let thr = if ty.is_vector() {
        b.ins().splat(ty, thr)
    } else {
        thr
    };
    let is_small = b.ins().fcmp(FloatCC::LessThan, a, thr);
    // copysign of x onto `big` (≥ 0).
    let sign_ty = if ty.is_vector() {
        types::I32X4
    } else {
        types::I32
    };
    let le = MemFlagsData::new().with_endianness(Endianness::Little);
    let xb = b.ins().bitcast(sign_ty, le, x);
    let mask = b.ins().iconst(types::I32, i64::from(i32::MIN));
    let mask = if ty.is_vector() {
        b.ins().splat(sign_ty, mask)
    } else {
        mask
    };
    let sign = b.ins().band(xb, mask);
    let bb = b.ins().bitcast(sign_ty, le, big);
    let bb = b.ins().bor(bb, sign);
    let big = b.ins().bitcast(ty, le, bb);
    if ty.is_vector() {
        let m = b.ins().bitcast(ty, le, is_small);
        b.ins().bitselect(m, small, big)
    } else {
        b.ins().select(is_small, small, big)
    }
}

fn splat_one(b: &mut FunctionBuilder, ty: types::Type) -> Value {
    let one = b.ins().f32const(1.0);
    if ty.is_vector() {
        b.ins().splat(ty, one)
    } else {
        one
    }
}

/// The sigmoid and the tanh take their exponential on a narrower range than `exp` (no scaling
/// down to the subnormals, which `1 + e` or `2|x| ≥ 0` never needs): the results keep the bits
/// of the same functions built on the full `exp`, over a sweep that crosses every clamp and
/// the values around them.
#[test]
fn sigmoid_and_tanh_have_the_bits_of_their_forms_on_the_full_exp() {
    let mut xs = linspace(-120.0, 120.0, 400_001);
    for c in [
        -104.0f32, -89.0, -88.72, -87.0, -44.36, 0.625, 44.36, 87.0, 88.72, 89.0, 104.0,
    ] {
        let mut v = c;
        for _ in 0..64 {
            xs.extend([v, -v]);
            v = v.next_up();
        }
    }
    xs.extend([
        0.0,
        -0.0,
        1e-45,
        -1e-45,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN,
    ]);
    for lanes in [1, 4] {
        for (name, f, full) in [
            (
                "sigmoid",
                emit_sigmoid as Emitter,
                sigmoid_on_full_exp as Emitter,
            ),
            ("tanh", emit_tanh, tanh_on_full_exp),
        ] {
            let got = run(f, lanes, &xs);
            let want = run(full, lanes, &xs);
            for ((&x, g), w) in xs.iter().zip(&got).zip(&want) {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{name}({x}) with {lanes} lanes: {g} against {w}"
                );
            }
        }
    }
}
