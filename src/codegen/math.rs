//! Transcendental functions as Cranelift IR emitters, for `F32` scalars and `F32X4` vectors
//! (each emitter looks at the type of its argument). Cranelift has no `exp`/`log`; these are
//! branch-free Cephes-style polynomial approximations built from `fma`, so they vectorize and
//! lower to a handful of AVX instructions on the host ISA (see [`super::jitmod`]).
//!
//! Edge cases: `exp` overflows to +inf above ≈88.72 and underflows (through subnormals) to 0
//! below ≈−103.97; `log(0) = −inf`, `log(x<0) = NaN`, `log(+inf) = +inf`, subnormal inputs are
//! exact; `tanh` and `sigmoid` saturate to ±1 / 0 / 1 without NaN; NaN propagates everywhere.
//!
//! Measured accuracy against f64 (`tests/math.rs`, dense sweeps, scalar and vector identical;
//! "ulp" is the distance to the exact value in f32 ulps, so 0.5 is the floor):
//! - `exp` on [−87, 88]: max 1.01 ulp (rel 8.4e-8); on [−103.9, −87] (subnormal results) 0.75 ulp
//! - `log` on [1e−30, 1e30]: max 0.78 ulp (rel 8.0e-8); subnormal inputs 0.50 ulp
//! - `tanh` on [−20, 20]: max 1.25 ulp, abs 7.5e-8
//! - `sigmoid` on [−20, 20]: max 2.41 ulp, abs 8.9e-8
//! - `erf` on [−5, 5]: max 0.98 ulp, abs 5.8e-8
//! - `expm1` on [−20, 20]: max 1.76 ulp, rel 1.2e-7
//! - `log1p` on [0, 1]: max 2.39 ulp, rel 1.6e-7

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, Endianness, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::FunctionBuilder;

/// Builder helpers for one element type (`F32` or `F32X4`) and its integer twin.
pub(super) struct Emit<'a, 'b> {
    pub(super) b: &'a mut FunctionBuilder<'b>,
    fty: Type,
    ity: Type,
}

impl<'a, 'b> Emit<'a, 'b> {
    pub(super) fn new(b: &'a mut FunctionBuilder<'b>, x: Value) -> Self {
        let fty = b.func.dfg.value_type(x);
        let ity = match fty {
            types::F32 => types::I32,
            types::F32X4 => types::I32X4,
            other => panic!("math emitters take F32 or F32X4, got {other}"),
        };
        Emit { b, fty, ity }
    }

    fn vector(&self) -> bool {
        self.fty.is_vector()
    }

    /// A float constant of the element type.
    pub(super) fn f(&mut self, v: f32) -> Value {
        if self.vector() {
            self.pool(self.fty, v.to_bits())
        } else {
            self.b.ins().f32const(v)
        }
    }

    /// An integer constant of the integer twin type.
    fn i(&mut self, v: i32) -> Value {
        if self.vector() {
            self.pool(self.ity, v as u32)
        } else {
            self.b.ins().iconst(types::I32, i64::from(v))
        }
    }

    /// A vector constant from the constant pool: Cranelift re-materializes constants in every
    /// block that uses them, and a `splat` of an immediate costs three instructions there,
    /// while a pool constant folds into its user as a memory operand.
    fn pool(&mut self, ty: Type, bits: u32) -> Value {
        let bytes: Vec<u8> = bits.to_le_bytes().repeat(4);
        let c = self.b.func.dfg.constants.insert(bytes.into());
        self.b.ins().vconst(ty, c)
    }

    fn bits(&mut self, x: Value) -> Value {
        let le = MemFlagsData::new().with_endianness(Endianness::Little);
        self.b.ins().bitcast(self.ity, le, x)
    }

    fn float(&mut self, x: Value) -> Value {
        let le = MemFlagsData::new().with_endianness(Endianness::Little);
        self.b.ins().bitcast(self.fty, le, x)
    }

    /// `cond ? x : y` for a condition produced by [`Emit::cmp`].
    pub(super) fn sel(&mut self, cond: Value, x: Value, y: Value) -> Value {
        if self.vector() {
            let mask = self.float(cond);
            self.b.ins().bitselect(mask, x, y)
        } else {
            self.b.ins().select(cond, x, y)
        }
    }

    pub(super) fn cmp(&mut self, cc: FloatCC, x: Value, y: Value) -> Value {
        self.b.ins().fcmp(cc, x, y)
    }

    /// `c[0]·x⁵ + … + c[5]` (`x2` = x²) by Estrin's scheme, `((c0·x + c1)·x² + (c2·x + c3))·x² + (c4·x + c5)`:
    /// three `fma`s in a row after `x²` instead of Horner's five. Loops of `exp` (a sigmoid
    /// over 1000×784 values, `exp` in the loss epilogues) are bound by the latency of each
    /// vector's chain more than by their instructions: with `exp`'s polynomial in this form a
    /// sigmoid-heavy inference took 1/1.04 of the time (five in-process alternated runs, AMD
    /// Zen 4), at the same accuracy (`tests/math.rs`).
    fn poly6_estrin(&mut self, x: Value, x2: Value, c: [f32; 6]) -> Value {
        let k = c.map(|ci| self.f(ci));
        let a = self.b.ins().fma(k[0], x, k[1]);
        let b = self.b.ins().fma(k[2], x, k[3]);
        let c = self.b.ins().fma(k[4], x, k[5]);
        let ab = self.b.ins().fma(a, x2, b);
        self.b.ins().fma(ab, x2, c)
    }

    /// `c[0]·x^(n-1) + … + c[n-1]` by Horner's rule with `fma`.
    pub(super) fn poly(&mut self, x: Value, c: &[f32]) -> Value {
        let mut p = self.f(c[0]);
        for &ci in &c[1..] {
            let k = self.f(ci);
            p = self.b.ins().fma(p, x, k);
        }
        p
    }

    /// `2^n` for integer lanes `n` in [−126, 127].
    fn pow2(&mut self, n: Value) -> Value {
        let bias = self.i(127);
        let e = self.b.ins().iadd(n, bias);
        let e = self.b.ins().ishl_imm_u(e, 23);
        self.float(e)
    }
}

/// What an `exp` must get right beyond the normal range of its results, which decides the
/// clamps and the scaling it needs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Range {
    /// Every argument: results down through the subnormals, 0 below, +inf above.
    Full,
    /// Results only ever added to 1 (the sigmoid's `1 + e^{−x}`): below 2^−24 any tiny value
    /// serves, so arguments are clamped at −86 and the scale `2^n` needs no subnormal factor.
    AddedToOne,
    /// Arguments ≥ 0 or NaN (the tanh's `e^{2|x|}`): no lower clamp, no subnormal factor.
    NonNegative,
}

/// `e^x`: Cody–Waite reduction `x = n·ln2 + r`, |r| ≤ ln2/2, degree-7 polynomial, and the
/// scale `2^n` applied as two halves so that results down to the subnormal range are exact.
pub fn emit_exp(b: &mut FunctionBuilder, x: Value) -> Value {
    exp_in(b, x, Range::Full)
}

/// `e^x` for the arguments of `range`. Where the range needs less than [`Range::Full`], each
/// result it serves has the bits the full `exp` gives (a result scaled by powers of two that
/// are normal is the same product however they are split); `tests/math.rs` checks the sigmoid
/// and the tanh against their forms on the full `exp`.
fn exp_in(b: &mut FunctionBuilder, x: Value, range: Range) -> Value {
    let mut e = Emit::new(b, x);
    // Clamps (compare + select keeps NaN, which fails both tests, and is cheaper than the
    // NaN-exact fmin/fmax sequences; written so that Cranelift lowers them to `maxps` and
    // `minps`): beyond these the result is 0 or inf anyway.
    let xc = match range {
        Range::Full | Range::AddedToOne => {
            let lo = e.f(if range == Range::Full { -104.0 } else { -86.0 });
            let below = e.cmp(FloatCC::LessThan, x, lo);
            e.sel(below, lo, x)
        }
        Range::NonNegative => x,
    };
    let hi = e.f(89.0);
    let above = e.cmp(FloatCC::LessThan, hi, xc);
    let xc = e.sel(above, hi, xc);
    // n = round(x / ln2) by the 1.5·2^23 trick: the low bits of t hold n.
    let magic = e.f(12_582_912.0);
    let log2e = e.f(std::f32::consts::LOG2_E);
    let t = e.b.ins().fma(xc, log2e, magic);
    let nf = e.b.ins().fsub(t, magic);
    let ln2_hi = e.f(-355.0 / 512.0);
    let ln2_lo = e.f(2.121_944_4e-4);
    let r = e.b.ins().fma(nf, ln2_hi, xc);
    let r = e.b.ins().fma(nf, ln2_lo, r);
    let r2 = e.b.ins().fmul(r, r);
    let p = e.poly6_estrin(
        r,
        r2,
        [
            1.987_569_1e-4,
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            5e-1,
        ],
    );
    let y = e.b.ins().fma(p, r2, r);
    let one = e.f(1.0);
    let y = e.b.ins().fadd(y, one);
    let tb = e.bits(t);
    if range == Range::Full {
        let mb = e.i(0x4B40_0000);
        let n = e.b.ins().isub(tb, mb);
        // n ∈ [−151, 129] → 2^n = 2^(n>>1) · 2^(n − n>>1), both factors normal.
        let n1 = e.b.ins().sshr_imm_u(n, 1);
        let n2 = e.b.ins().isub(n, n1);
        let s1 = e.pow2(n1);
        let s2 = e.pow2(n2);
        let y = e.b.ins().fmul(y, s1);
        e.b.ins().fmul(y, s2)
    } else {
        // n ∈ [−124, 128] → 2^n = 2^(n−1) · 2, the first factor normal: a result above
        // f32::MAX / 2 with n = 128 stays finite, as with the full scaling.
        let mb = e.i(0x4B40_0001);
        let n1 = e.b.ins().isub(tb, mb);
        let s = e.pow2(n1);
        let y = e.b.ins().fmul(y, s);
        e.b.ins().fadd(y, y)
    }
}

/// Natural logarithm: `x = m·2^e` with m ∈ [√½, √2), `log(1+f)` by a degree-9 polynomial,
/// `e·ln2` added in two parts. Subnormals are scaled by 2^23 first.
pub fn emit_log(b: &mut FunctionBuilder, x: Value) -> Value {
    let mut e = Emit::new(b, x);
    let min_normal = e.f(f32::MIN_POSITIVE);
    let small = e.cmp(FloatCC::LessThan, x, min_normal);
    let scale = e.f(8_388_608.0);
    let xs = e.b.ins().fmul(x, scale);
    let xn = e.sel(small, xs, x);
    let bits = e.bits(xn);
    let ei = e.b.ins().ushr_imm_u(bits, 23);
    let bias = e.i(126);
    let ei = e.b.ins().isub(ei, bias);
    let mant_mask = e.i(0x007F_FFFF);
    let half_bits = e.i(0x3F00_0000);
    let mb = e.b.ins().band(bits, mant_mask);
    let mb = e.b.ins().bor(mb, half_bits);
    let m = e.float(mb); // [0.5, 1)
    let sqrth = e.f(std::f32::consts::FRAC_1_SQRT_2);
    let lt = e.cmp(FloatCC::LessThan, m, sqrth);
    let m2 = e.b.ins().fadd(m, m);
    let m = e.sel(lt, m2, m);
    let one = e.f(1.0);
    let f = e.b.ins().fsub(m, one);
    let ef = e.b.ins().fcvt_from_sint(e.fty, ei);
    let zero = e.f(0.0);
    let adj_lt = e.sel(lt, one, zero);
    let ef = e.b.ins().fsub(ef, adj_lt);
    let k23 = e.f(23.0);
    let adj_small = e.sel(small, k23, zero);
    let ef = e.b.ins().fsub(ef, adj_small);

    let z = e.b.ins().fmul(f, f);
    let p = e.poly(
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
    let pf = e.b.ins().fmul(p, f);
    let y = e.b.ins().fmul(pf, z);
    let c_lo = e.f(-2.121_944_4e-4);
    let y = e.b.ins().fma(ef, c_lo, y);
    let mhalf = e.f(-0.5);
    let y = e.b.ins().fma(z, mhalf, y);
    let r = e.b.ins().fadd(f, y);
    let c_hi = e.f(355.0 / 512.0);
    let r = e.b.ins().fma(ef, c_hi, r);

    // Edges: +inf → +inf, 0 → −inf, negative or NaN → NaN.
    let inf = e.f(f32::INFINITY);
    let is_inf = e.cmp(FloatCC::Equal, x, inf);
    let r = e.sel(is_inf, inf, r);
    let is_zero = e.cmp(FloatCC::Equal, x, zero);
    let ninf = e.f(f32::NEG_INFINITY);
    let r = e.sel(is_zero, ninf, r);
    let bad = e.cmp(FloatCC::UnorderedOrLessThan, x, zero);
    let nan = e.f(f32::NAN);
    e.sel(bad, nan, r)
}

/// Hyperbolic tangent: odd polynomial for |x| < 0.625, else `±(1 − 2/(e^{2|x|} + 1))`,
/// which saturates to ±1 as `exp` overflows.
pub fn emit_tanh(b: &mut FunctionBuilder, x: Value) -> Value {
    let a = b.ins().fabs(x);
    let two_a = b.ins().fadd(a, a);
    let ex = exp_in(b, two_a, Range::NonNegative);
    let mut e = Emit::new(b, x);
    let one = e.f(1.0);
    let two = e.f(2.0);
    let den = e.b.ins().fadd(ex, one);
    let q = e.b.ins().fdiv(two, den);
    let big = e.b.ins().fsub(one, q);
    let big = copy_sign(&mut e, big, x);

    let z = e.b.ins().fmul(x, x);
    let p = e.poly(
        z,
        &[
            -5.704_988_7e-3,
            2.063_909e-2,
            -5.373_971_6e-2,
            1.333_144_2e-1,
            -3.333_328e-1,
        ],
    );
    let pz = e.b.ins().fmul(p, z);
    let small = e.b.ins().fma(pz, x, x);
    let thr = e.f(0.625);
    let is_small = e.cmp(FloatCC::LessThan, a, thr);
    e.sel(is_small, small, big)
}

/// Logistic sigmoid `1 / (1 + e^{−x})`: 0 for x ≪ 0 (the exponential overflows to inf), 1 for
/// x ≫ 0.
pub fn emit_sigmoid(b: &mut FunctionBuilder, x: Value) -> Value {
    let nx = b.ins().fneg(x);
    let ex = exp_in(b, nx, Range::AddedToOne);
    let mut e = Emit::new(b, x);
    let one = e.f(1.0);
    let den = e.b.ins().fadd(ex, one);
    e.b.ins().fdiv(one, den)
}

/// `min(x, hi)` by compare and select (NaN stays NaN), which Cranelift lowers to `minps`.
pub(super) fn clamp_above(e: &mut Emit, x: Value, hi: f32) -> Value {
    let h = e.f(hi);
    let above = e.cmp(FloatCC::LessThan, h, x);
    e.sel(above, h, x)
}

/// `max(x, lo)` likewise.
pub(super) fn clamp_below(e: &mut Emit, x: Value, lo: f32) -> Value {
    let l = e.f(lo);
    let below = e.cmp(FloatCC::LessThan, x, l);
    e.sel(below, l, x)
}

/// The error function: `x + x·P(x²)` for |x| ≤ 0.9277, else `±(1 − e^{Q(|x|)})`, with the
/// minimax polynomials of N. Juffa's `erff` (within 1 ulp given a correctly rounded `exp`;
/// ours adds a fraction of an ulp). |x| is clamped at 4, beyond which erf is ±1 in f32, so the
/// polynomial of the unused branch never overflows into NaN.
pub fn emit_erf(b: &mut FunctionBuilder, x: Value) -> Value {
    let mut e = Emit::new(b, x);
    let a = e.b.ins().fabs(x);
    let t = clamp_above(&mut e, a, 4.0);
    let s = e.b.ins().fmul(x, x);
    let small = e.poly(
        s,
        &[
            -5.967_617e-4,
            4.991_194_2e-3,
            -2.676_813_5e-2,
            1.128_199_25e-1,
            -3.761_253_4e-1,
            1.283_791_7e-1,
        ],
    );
    let small = e.b.ins().fma(small, x, x);
    let ts = e.b.ins().fmul(t, t);
    let r = e.poly(t, &[-1.728_534_7e-5, 3.831_971_3e-4]);
    let u = e.poly(t, &[-3.883_964_4e-3, 2.425_462_2e-2]);
    let r = e.b.ins().fma(r, ts, u);
    let mut r = r;
    for c in [-1.067_778_8e-1, -6.348_467e-1, -1.287_175_1e-1] {
        let k = e.f(c);
        r = e.b.ins().fma(r, t, k);
    }
    let nt = e.b.ins().fneg(t);
    let r = e.b.ins().fma(r, t, nt);
    let ex = exp_in(e.b, r, Range::Full);
    let mut e = Emit::new(b, x);
    let one = e.f(1.0);
    let big = e.b.ins().fsub(one, ex);
    let big = copy_sign(&mut e, big, x);
    let thr = e.f(0.927_734_4);
    let is_small = e.cmp(FloatCC::LessThanOrEqual, a, thr);
    e.sel(is_small, small, big)
}

/// `y` (≥ 0) with the sign of `x`, its sign bit ORed in (Cranelift has no F32X4 lowering of
/// `fcopysign`).
fn copy_sign(e: &mut Emit, y: Value, x: Value) -> Value {
    let sign_mask = e.i(i32::MIN);
    let xb = e.bits(x);
    let sign = e.b.ins().band(xb, sign_mask);
    let yb = e.bits(y);
    let yb = e.b.ins().bor(yb, sign);
    e.float(yb)
}

/// `eˣ − 1` without the cancellation of the subtraction near 0: the Taylor series to x¹² for
/// |x| < 1 (its remainder below 2e-10 of the result), `exp(x) − 1` beyond.
pub fn emit_expm1(b: &mut FunctionBuilder, x: Value) -> Value {
    let ex = emit_exp(b, x);
    let mut e = Emit::new(b, x);
    let one = e.f(1.0);
    let big = e.b.ins().fsub(ex, one);
    // 1/12!, 1/11!, …, 1/2!: x + x²·(1/2 + x/6 + …).
    let mut c = [0f32; 11];
    let mut fact = 1f64;
    for k in 2..=12 {
        fact *= k as f64;
        c[12 - k] = (1.0 / fact) as f32;
    }
    let p = e.poly(x, &c);
    let x2 = e.b.ins().fmul(x, x);
    let small = e.b.ins().fma(x2, p, x);
    let a = e.b.ins().fabs(x);
    let is_small = e.cmp(FloatCC::LessThan, a, one);
    e.sel(is_small, small, big)
}

/// `log(1 + x)` for x ≥ 0 (the softplus' `log(1 + e^{−|z|})`), accurate where x is tiny:
/// with `u = 1 + x` rounded, `log(u)·x/(u − 1)` corrects the rounding (Goldberg), and `u = 1`
/// means x itself.
pub fn emit_log1p(b: &mut FunctionBuilder, x: Value) -> Value {
    let mut e = Emit::new(b, x);
    let one = e.f(1.0);
    let u = e.b.ins().fadd(one, x);
    let l = emit_log(e.b, u);
    let mut e = Emit::new(b, x);
    let one = e.f(1.0);
    let um1 = e.b.ins().fsub(u, one);
    let q = e.b.ins().fdiv(x, um1);
    let r = e.b.ins().fmul(l, q);
    let exact = e.cmp(FloatCC::Equal, u, one);
    let r = e.sel(exact, x, r);
    // +inf: `inf/inf` made a NaN of the correction.
    let inf = e.f(f32::INFINITY);
    let huge = e.cmp(FloatCC::Equal, u, inf);
    e.sel(huge, u, r)
}
