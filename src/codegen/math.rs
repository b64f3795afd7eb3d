//! Polynomial `exp`, `log`, `tanh`, `sigmoid` emitted inline as CLIF, for f32 and f32x4 values
//! (Cephes single-precision approximations, about 1 ulp on their ranges).

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::FunctionBuilder;

fn fconst(b: &mut FunctionBuilder, ty: Type, v: f32) -> Value {
    let s = b.ins().f32const(v);
    if ty == types::F32X4 {
        b.ins().splat(ty, s)
    } else {
        s
    }
}

fn iconst(b: &mut FunctionBuilder, ity: Type, v: i64) -> Value {
    let s = b.ins().iconst(types::I32, v);
    if ity == types::I32X4 {
        b.ins().splat(ity, s)
    } else {
        s
    }
}

fn int_ty(ty: Type) -> Type {
    if ty == types::F32X4 {
        types::I32X4
    } else {
        types::I32
    }
}

fn bitcast(b: &mut FunctionBuilder, ty: Type, v: Value) -> Value {
    let mut f = MemFlagsData::new();
    if ty.is_vector() {
        f = f.with_endianness(cranelift_codegen::ir::Endianness::Little);
    }
    b.ins().bitcast(ty, f, v)
}

fn select(b: &mut FunctionBuilder, ty: Type, c: Value, x: Value, y: Value) -> Value {
    if ty == types::F32X4 {
        let m = bitcast(b, ty, c);
        b.ins().bitselect(m, x, y)
    } else {
        b.ins().select(c, x, y)
    }
}

/// Horner: `((c0·x + c1)·x + …)`.
fn horner(b: &mut FunctionBuilder, ty: Type, x: Value, cs: &[f32]) -> Value {
    let mut y = fconst(b, ty, cs[0]);
    for &c in &cs[1..] {
        let t = b.ins().fmul(y, x);
        let cv = fconst(b, ty, c);
        y = b.ins().fadd(t, cv);
    }
    y
}

/// `eˣ`, with x clamped to [−87.3, 88.37].
pub fn emit_exp(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    let ity = int_ty(ty);
    let lo = fconst(b, ty, -87.3);
    let hi = fconst(b, ty, 88.37);
    let x = b.ins().fmax(x, lo);
    let x = b.ins().fmin(x, hi);
    let l2e = fconst(b, ty, std::f32::consts::LOG2_E);
    let t = b.ins().fmul(x, l2e);
    let fx = b.ins().nearest(t);
    let c1 = fconst(b, ty, 0.693_359_4);
    let c2 = fconst(b, ty, -2.121_944_4e-4);
    let t1 = b.ins().fmul(fx, c1);
    let x = b.ins().fsub(x, t1);
    let t2 = b.ins().fmul(fx, c2);
    let x = b.ins().fsub(x, t2);
    let z = b.ins().fmul(x, x);
    let p = horner(
        b,
        ty,
        x,
        &[
            1.987_569_1e-4,
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ],
    );
    let p = b.ins().fmul(p, z);
    let p = b.ins().fadd(p, x);
    let one = fconst(b, ty, 1.0);
    let y = b.ins().fadd(p, one);
    let n = b.ins().fcvt_to_sint_sat(ity, fx);
    let bias = iconst(b, ity, 127);
    let n = b.ins().iadd(n, bias);
    let sh = b.ins().iconst(types::I32, 23);
    let n = b.ins().ishl(n, sh);
    let scale = bitcast(b, ty, n);
    b.ins().fmul(y, scale)
}

/// `ln x` for x > 0.
pub fn emit_log(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    let ity = int_ty(ty);
    let xi = bitcast(b, ity, x);
    let sh = b.ins().iconst(types::I32, 23);
    let e = b.ins().ushr(xi, sh);
    let mask = iconst(b, ity, 0xff);
    let e = b.ins().band(e, mask);
    let bias = iconst(b, ity, 126);
    let e = b.ins().isub(e, bias);
    let mant = iconst(b, ity, 0x007f_ffff);
    let m = b.ins().band(xi, mant);
    let half = iconst(b, ity, 0x3f00_0000);
    let m = b.ins().bor(m, half);
    let m = bitcast(b, ty, m); // in [0.5, 1)
    let mut ef = b.ins().fcvt_from_sint(ty, e);
    let sqrth = fconst(b, ty, std::f32::consts::FRAC_1_SQRT_2);
    let small = b.ins().fcmp(FloatCC::LessThan, m, sqrth);
    let one = fconst(b, ty, 1.0);
    let zero = fconst(b, ty, 0.0);
    let dec = select(b, ty, small, one, zero);
    ef = b.ins().fsub(ef, dec);
    let m2 = b.ins().fadd(m, m);
    let mm = select(b, ty, small, m2, m);
    let f = b.ins().fsub(mm, one);
    let z = b.ins().fmul(f, f);
    let p = horner(
        b,
        ty,
        f,
        &[
            7.037_683_6e-2,
            -1.151_461e-1,
            1.167_699_9e-1,
            -1.242_014_1e-1,
            1.424_932_3e-1,
            -1.666_805_8e-1,
            2.000_071_4e-1,
            -2.499_999_4e-1,
            3.333_333e-1,
        ],
    );
    let p = b.ins().fmul(p, f);
    let mut y = b.ins().fmul(p, z);
    let c = fconst(b, ty, -2.121_944_4e-4);
    let t = b.ins().fmul(ef, c);
    y = b.ins().fadd(y, t);
    let h = fconst(b, ty, -0.5);
    let t = b.ins().fmul(z, h);
    y = b.ins().fadd(y, t);
    let r = b.ins().fadd(f, y);
    let c = fconst(b, ty, 0.693_359_4);
    let t = b.ins().fmul(ef, c);
    b.ins().fadd(r, t)
}

/// `tanh x`: an odd polynomial for |x| < 0.625, else `1 − 2/(e^{2|x|} + 1)` with x's sign.
pub fn emit_tanh(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    let ax = b.ins().fabs(x);
    let z = b.ins().fmul(x, x);
    let p = horner(
        b,
        ty,
        z,
        &[
            -5.704_988_7e-3,
            2.063_909e-2,
            -5.373_971_6e-2,
            1.333_144_2e-1,
            -3.333_328e-1,
        ],
    );
    let p = b.ins().fmul(p, z);
    let p = b.ins().fmul(p, x);
    let small = b.ins().fadd(p, x);
    let two = fconst(b, ty, 2.0);
    let ax2 = b.ins().fmul(ax, two);
    let e = emit_exp(b, ax2);
    let one = fconst(b, ty, 1.0);
    let d = b.ins().fadd(e, one);
    let q = b.ins().fdiv(two, d);
    let big = b.ins().fsub(one, q);
    // copysign(big, x) with integer ops (no f32x4 fcopysign on x86): big ≥ 0.
    let ity = int_ty(ty);
    let xi = bitcast(b, ity, x);
    let sign = iconst(b, ity, i32::MIN as i64);
    let s = b.ins().band(xi, sign);
    let bi = bitcast(b, ity, big);
    let bi = b.ins().bor(bi, s);
    let big = bitcast(b, ty, bi);
    let lim = fconst(b, ty, 0.625);
    let c = b.ins().fcmp(FloatCC::LessThan, ax, lim);
    select(b, ty, c, small, big)
}

/// `1 / (1 + e^{−x})`.
pub fn emit_sigmoid(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    let nx = b.ins().fneg(x);
    let e = emit_exp(b, nx);
    let one = fconst(b, ty, 1.0);
    let d = b.ins().fadd(one, e);
    b.ins().fdiv(one, d)
}
