//! Building blocks of every kernel: the kernel ABI, a small loop-building layer over Cranelift's
//! `FunctionBuilder`, and the JIT module that compiles kernels (keeping their CLIF and
//! disassembly when asked, for `nnc ir --stage clif|asm`).
//!
//! Kernel ABI: `extern "C" fn(table: *const *mut u8, batch: i64)`. `table` holds one pointer per
//! graph value (and per scratch buffer); a kernel knows at compile time which slots it reads and
//! writes, and every dimension except the batch size is a compile-time constant.

use cranelift_codegen::ir::{
    types, AbiParam, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Type as ClifType,
    Value,
};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::JITModule;
use cranelift_module::{Linkage, Module};

use super::jitmod::{new_jit_module, new_jit_module_with_opt};
use super::CodegenError;
use crate::ir::Type;

/// A compiled kernel.
pub type KernelFn = unsafe extern "C" fn(table: *const *mut u8, batch: i64);

/// f32 scalars and f32x4 vectors: the two lane types of every loop.
pub const F32: ClifType = types::F32;
pub const F32X4: ClifType = types::F32X4;
pub const I64: ClifType = types::I64;

/// Flags for loads of inputs inside hot loops: inputs are never written while a kernel runs.
pub fn ro() -> MemFlagsData {
    MemFlagsData::trusted().with_readonly().with_can_move()
}

/// Flags for loads and stores of the kernel's own output.
pub fn rw() -> MemFlagsData {
    MemFlagsData::trusted()
}

/// Text kept for each compiled kernel: its header (the node it implements), CLIF, disassembly.
#[derive(Default)]
pub struct Listing {
    pub clif: bool,
    pub asm: bool,
    pub text: String,
}

/// The JIT modules the kernels of one graph live in: most are compiled with Cranelift's
/// optimizer; kernels built around the GEMM micro-kernel ([`KernelModule::plain_kernel`]) in a
/// second module without it, since the e-graph pass re-elaborates the register-blocked loop
/// chain by chain and spills its accumulators (see [`super::gemm::GEMM_OPT`]).
pub struct KernelModule {
    module: JITModule,
    /// Created for the first plain kernel.
    plain: Option<JITModule>,
    ctx: Context,
    fctx: FunctionBuilderContext,
    count: usize,
    /// Each kernel's module (plain or not) and id.
    pending: Vec<(bool, cranelift_module::FuncId)>,
    pub listing: Listing,
}

impl KernelModule {
    pub fn new(listing: Listing) -> Result<KernelModule, CodegenError> {
        let module = new_jit_module().map_err(CodegenError::Cranelift)?;
        let ctx = module.make_context();
        Ok(KernelModule {
            module,
            plain: None,
            ctx,
            fctx: FunctionBuilderContext::new(),
            count: 0,
            pending: Vec::new(),
            listing,
        })
    }

    /// Builds one kernel with `body` and declares it; returns a handle resolved by [`finish`].
    /// `header` is the line naming the node the kernel implements.
    ///
    /// [`finish`]: KernelModule::finish
    pub fn kernel(
        &mut self,
        header: &str,
        body: impl FnOnce(&mut Kb),
    ) -> Result<usize, CodegenError> {
        self.build(false, header, body)
    }

    /// [`KernelModule::kernel`] compiled without Cranelift's optimizer, for kernels whose loops
    /// are laid out instruction by instruction (the GEMM micro-kernel).
    pub fn plain_kernel(
        &mut self,
        header: &str,
        body: impl FnOnce(&mut Kb),
    ) -> Result<usize, CodegenError> {
        if self.plain.is_none() {
            self.plain = Some(
                new_jit_module_with_opt(super::gemm::GEMM_OPT).map_err(CodegenError::Cranelift)?,
            );
        }
        self.build(true, header, body)
    }

    fn build(
        &mut self,
        plain: bool,
        header: &str,
        body: impl FnOnce(&mut Kb),
    ) -> Result<usize, CodegenError> {
        let module = match (plain, self.plain.as_mut()) {
            (true, Some(m)) => m,
            _ => &mut self.module,
        };
        module.clear_context(&mut self.ctx);
        let ptr = module.target_config().pointer_type();
        self.ctx.func.signature.params.push(AbiParam::new(ptr));
        self.ctx.func.signature.params.push(AbiParam::new(I64));
        let frontend = module.target_config();
        {
            let mut b = FunctionBuilder::new(&mut self.ctx.func, &mut self.fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            b.seal_block(entry);
            let table = b.block_params(entry)[0];
            let batch = b.block_params(entry)[1];
            let mut kb = Kb { b, table, batch };
            body(&mut kb);
            kb.b.ins().return_(&[]);
            kb.b.finalize(frontend);
        }
        if self.listing.clif {
            self.listing
                .text
                .push_str(&format!("{header}\n{}\n", self.ctx.func.display()));
        }
        let name = symbol(self.count, header);
        self.count += 1;
        let sig = self.ctx.func.signature.clone();
        let id = module
            .declare_function(&name, Linkage::Local, &sig)
            .map_err(cl)?;
        self.ctx.set_disasm(self.listing.asm);
        module.define_function(id, &mut self.ctx).map_err(cl)?;
        if self.listing.asm {
            let vcode = self
                .ctx
                .compiled_code()
                .and_then(|c| c.vcode.clone())
                .unwrap_or_default();
            self.listing.text.push_str(&format!("{header}\n{vcode}\n"));
        }
        self.pending.push((plain, id));
        Ok(self.pending.len() - 1)
    }

    /// Adds a note to the listing (for steps that are not one kernel of this module).
    pub fn note(&mut self, text: &str) {
        if self.listing.clif || self.listing.asm {
            self.listing.text.push_str(text);
            self.listing.text.push('\n');
        }
    }

    /// Finalizes every kernel; returns their entry points (indexed by the handles of
    /// [`kernel`](KernelModule::kernel)) and the modules that own the code.
    pub fn finish(mut self) -> Result<(Vec<KernelFn>, Vec<JITModule>, String), CodegenError> {
        self.module.finalize_definitions().map_err(cl)?;
        if let Some(m) = self.plain.as_mut() {
            m.finalize_definitions().map_err(cl)?;
        }
        let fns = self
            .pending
            .iter()
            .map(|&(plain, id)| {
                let m = match (plain, &self.plain) {
                    (true, Some(m)) => m,
                    _ => &self.module,
                };
                let p = m.get_finalized_function(id);
                // SAFETY: every function was declared with the kernel signature above.
                unsafe { std::mem::transmute::<*const u8, KernelFn>(p) }
            })
            .collect();
        let modules = std::iter::once(self.module).chain(self.plain).collect();
        Ok((fns, modules, self.listing.text))
    }
}

/// The name kernel `n` is declared under: `k<n>` and the node it implements, as the first line
/// of its listing header has it (`k3 %8 = mse %7, %1 : f32[]  ; mse`). Profilers show it:
/// Cranelift's JIT lists every function it defines in `/tmp/perf-<pid>.map` when
/// `PERF_BUILDID_DIR` is set, which `perf report` reads (see BENCHMARKS.md).
fn symbol(n: usize, header: &str) -> String {
    let node = header.lines().next().unwrap_or("");
    let node = node.trim_start_matches(';').trim();
    let mut name = format!("k{n} {node}");
    if let Some((cut, _)) = name.char_indices().nth(160) {
        name.truncate(cut);
    }
    name
}

fn cl(e: impl std::fmt::Display) -> CodegenError {
    CodegenError::Cranelift(e.to_string())
}

/// A kernel under construction: the builder, the pointer table and the batch size.
pub struct Kb<'a> {
    pub b: FunctionBuilder<'a>,
    table: Value,
    pub batch: Value,
}

impl Kb<'_> {
    /// The pointer in table slot `slot`.
    pub fn ptr(&mut self, slot: usize) -> Value {
        self.b.ins().load(I64, ro(), self.table, (slot * 8) as i32)
    }

    pub fn int(&mut self, v: i64) -> Value {
        self.b.ins().iconst(I64, v)
    }

    /// A float constant of lane type `ty` (scalar or splat).
    pub fn cst(&mut self, ty: ClifType, v: f32) -> Value {
        let s = self.b.ins().f32const(v);
        if ty == F32X4 {
            self.b.ins().splat(F32X4, s)
        } else {
            s
        }
    }

    /// Broadcasts a scalar to lane type `ty` (an f32x4, such as a lane per channel, as it is).
    pub fn splat(&mut self, ty: ClifType, s: Value) -> Value {
        if ty == F32X4 && self.b.func.dfg.value_type(s) != F32X4 {
            self.b.ins().splat(F32X4, s)
        } else {
            s
        }
    }

    /// Number of elements of a value of type `t` for this run's batch size.
    pub fn numel(&mut self, t: &Type) -> Value {
        self.rows(t.batched, t.per_sample())
    }

    /// `per · batch` when `batched`, else `per`.
    pub fn rows(&mut self, batched: bool, per: usize) -> Value {
        if batched {
            self.b.ins().imul_imm_s(self.batch, per as i64)
        } else {
            self.int(per as i64)
        }
    }

    /// Address of element `idx` (an i64 element index) of a buffer of `bytes`-sized elements.
    /// For 2, 4 or 8 bytes the index is shifted rather than multiplied, which x64 folds into
    /// the load's or store's scaled-index address (`(base, idx, 4)`): no `imul` and no `lea`.
    pub fn addr(&mut self, base: Value, idx: Value, bytes: i64) -> Value {
        let off = match bytes {
            2 | 4 | 8 => self.b.ins().ishl_imm_u(idx, bytes.trailing_zeros() as i64),
            _ => self.b.ins().imul_imm_s(idx, bytes),
        };
        self.b.ins().iadd(base, off)
    }

    /// Loads a value of type `ty` at f32 element `idx` of `base`.
    pub fn ld(&mut self, ty: ClifType, base: Value, idx: Value) -> Value {
        let a = self.addr(base, idx, 4);
        self.b.ins().load(ty, ro(), a, 0)
    }

    /// Loads from a buffer the kernel also writes.
    pub fn ld_rw(&mut self, ty: ClifType, base: Value, idx: Value) -> Value {
        let a = self.addr(base, idx, 4);
        self.b.ins().load(ty, rw(), a, 0)
    }

    pub fn st(&mut self, v: Value, base: Value, idx: Value) {
        let a = self.addr(base, idx, 4);
        self.b.ins().store(rw(), v, a, 0);
    }

    /// `for i in (lo..hi).step_by(step) { body(i) }` (requires `(hi − lo) % step == 0` or the
    /// loop runs while `i < hi`).
    pub fn for_step(
        &mut self,
        lo: Value,
        hi: Value,
        step: i64,
        body: impl FnOnce(&mut Self, Value),
    ) {
        let head = self.b.create_block();
        let inner = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(head, I64);
        self.b.ins().jump(head, &[lo.into()]);
        self.b.switch_to_block(head);
        let i = self.b.block_params(head)[0];
        let c = self.b.ins().icmp(
            cranelift_codegen::ir::condcodes::IntCC::SignedLessThan,
            i,
            hi,
        );
        self.b.ins().brif(c, inner, &[], exit, &[]);
        self.b.seal_block(inner);
        self.b.switch_to_block(inner);
        body(self, i);
        let next = self.b.ins().iadd_imm_s(i, step);
        self.b.ins().jump(head, &[next.into()]);
        self.b.seal_block(head);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
    }

    pub fn for_range(&mut self, lo: Value, hi: Value, body: impl FnOnce(&mut Self, Value)) {
        self.for_step(lo, hi, 1, body)
    }

    /// `for i in 0..n` with a constant count.
    pub fn for_n(&mut self, n: usize, body: impl FnOnce(&mut Self, Value)) {
        let lo = self.int(0);
        let hi = self.int(n as i64);
        self.for_range(lo, hi, body)
    }

    /// The end of the whole steps of `step` elements (a power of two) from `lo` towards `hi`.
    fn whole_steps(&mut self, lo: Value, hi: Value, step: i64) -> Value {
        let len = self.b.ins().isub(hi, lo);
        let whole = self.b.ins().band_imm_s(len, !(step - 1));
        self.b.ins().iadd(lo, whole)
    }

    /// Stores 0 in the `n` floats at `ptr`.
    pub fn zero_fill(&mut self, ptr: Value, n: Value) {
        let zero = self.int(0);
        self.vec_loop(zero, n, |kb, i, lane| {
            let z = kb.cst(lane, 0.0);
            kb.st(z, ptr, i);
        });
    }

    /// A loop over `lo..hi` in f32x4 steps and a scalar tail: `body(i, lane type)`.
    pub fn vec_loop(
        &mut self,
        lo: Value,
        hi: Value,
        mut body: impl FnMut(&mut Self, Value, ClifType),
    ) {
        let mid = self.whole_steps(lo, hi, 4);
        self.for_step(lo, mid, 4, |k, i| body(k, i, F32X4));
        self.for_step(mid, hi, 1, |k, i| body(k, i, F32));
    }

    /// [`Kb::vec_loop`] with two f32x4 steps an iteration while eight elements remain, for a
    /// long body with a long chain of dependent operations (an exponential, a division): the
    /// two chains overlap.
    pub fn vec_loop_x2(
        &mut self,
        lo: Value,
        hi: Value,
        mut body: impl FnMut(&mut Self, Value, ClifType),
    ) {
        let mid = self.whole_steps(lo, hi, 8);
        self.for_step(lo, mid, 8, |k, i| {
            body(k, i, F32X4);
            let j = k.b.ins().iadd_imm_s(i, 4);
            body(k, j, F32X4);
        });
        self.vec_loop(mid, hi, body);
    }

    /// `for i in 0..n` in f32x4 steps for a body that may run twice on the same elements (what
    /// it writes depends only on what it reads, and it reads nothing it writes): the last
    /// `n mod 4` by one more f32x4 step over the last four, overlapping the step before, instead
    /// of a scalar tail (which costs as much per element as a step per four); scalar steps only
    /// when `n < 4`. `body(i, lane type)` as in [`Kb::vec_loop`].
    pub fn vec_loop_overlapping(
        &mut self,
        n: usize,
        mut body: impl FnMut(&mut Self, Value, ClifType),
    ) {
        if n < 4 {
            let (lo, hi) = (self.int(0), self.int(n as i64));
            return self.for_step(lo, hi, 1, |k, i| body(k, i, F32));
        }
        let (lo, hi) = (self.int(0), self.int((n / 4 * 4) as i64));
        self.for_step(lo, hi, 4, |k, i| body(k, i, F32X4));
        if !n.is_multiple_of(4) {
            let last = self.int(n as i64 - 4);
            body(self, last, F32X4);
        }
    }

    /// Sum of the lanes of an f32x4 (fixed order: ((l0 + l1) + l2) + l3); a scalar is returned as is.
    pub fn hsum(&mut self, v: Value, ty: ClifType) -> Value {
        if ty != F32X4 {
            return v;
        }
        let mut s = self.b.ins().extractlane(v, 0);
        for l in 1..4u8 {
            let x = self.b.ins().extractlane(v, l);
            s = self.b.ins().fadd(s, x);
        }
        s
    }

    /// Max of the lanes of an f32x4.
    pub fn hmax(&mut self, v: Value, ty: ClifType) -> Value {
        if ty != F32X4 {
            return v;
        }
        let mut s = self.b.ins().extractlane(v, 0);
        for l in 1..4u8 {
            let x = self.b.ins().extractlane(v, l);
            s = self.b.ins().fmax(s, x);
        }
        s
    }

    /// `c ? x : y` for a float comparison result `c` of lane type `ty`.
    pub fn select(&mut self, ty: ClifType, c: Value, x: Value, y: Value) -> Value {
        if ty == F32X4 {
            let m = self.reinterpret(F32X4, c);
            self.b.ins().bitselect(m, x, y)
        } else {
            self.b.ins().select(c, x, y)
        }
    }

    /// The 128 bits of vector `v` as a vector of type `ty` (a lane mask as f32x4, f32x4 as
    /// bytes).
    pub fn reinterpret(&mut self, ty: ClifType, v: Value) -> Value {
        reinterpret(&mut self.b, ty, v)
    }

    /// The f32x4 whose lanes are `lanes` of the eight lanes of `a` (0–3) and `b` (4–7).
    pub fn shuffle(&mut self, a: Value, b: Value, lanes: [u8; 4]) -> Value {
        let r = shuffle32(&mut self.b, a, b, lanes);
        self.reinterpret(F32X4, r)
    }

    /// `v` (an f32, or a vector) computed here, where the code stands, rather than where it is used.
    /// Cranelift's e-graph pass elaborates a pure value at its use, and hoists it out of a
    /// loop only when its operands are defined outside; constants are rematerialized at each
    /// use, so `1 / s` or `dl / n` stayed in the innermost loop and cost a division (and an
    /// integer conversion) per f32x4. A store to a stack slot and a load back are not moved.
    pub fn materialize(&mut self, v: Value) -> Value {
        let ty = self.b.func.dfg.value_type(v);
        let (size, align) = (ty.bytes(), ty.bytes().trailing_zeros() as u8);
        let data = StackSlotData::new(StackSlotKind::ExplicitSlot, size, align);
        let slot = self.b.create_sized_stack_slot(data);
        self.b.ins().stack_store(I64, v, slot, 0);
        self.b.ins().stack_load(I64, ty, slot, 0)
    }

    /// A fresh variable of type `ty` holding `init`.
    pub fn var(&mut self, ty: ClifType, init: Value) -> cranelift_frontend::Variable {
        let v = self.b.declare_var(ty);
        self.b.def_var(v, init);
        v
    }
}

/// The 128 bits of vector `v` as a vector of type `ty`.
pub fn reinterpret(b: &mut FunctionBuilder, ty: ClifType, v: Value) -> Value {
    let le = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
    b.ins().bitcast(ty, le, v)
}

/// The 32-bit lanes `lanes` of the 128-bit vectors `x` (0–3) and `y` (4–7), as an i8x16
/// (Cranelift's x64 backend lowers `[0, 4, 1, 5]` to `punpckldq`, `[2, 6, 3, 7]` to
/// `punpckhdq`).
pub fn shuffle32(b: &mut FunctionBuilder, x: Value, y: Value, lanes: [u8; 4]) -> Value {
    let xb = reinterpret(b, types::I8X16, x);
    let yb = reinterpret(b, types::I8X16, y);
    let bytes: Vec<u8> = lanes
        .iter()
        .flat_map(|&l| (0..4).map(move |k| 4 * l + k))
        .collect();
    let mask = b
        .func
        .dfg
        .immediates
        .push(cranelift_codegen::ir::ConstantData::from(bytes));
    b.ins().shuffle(xb, yb, mask)
}

#[cfg(test)]
mod tests {
    use super::symbol;

    #[test]
    fn a_kernel_is_named_by_its_number_and_node() {
        let header = "; %8 = mse %7, %1 : f32[]  ; mse\n; each sample's sum";
        assert_eq!(symbol(3, header), "k3 %8 = mse %7, %1 : f32[]  ; mse");
        assert_eq!(symbol(0, ""), "k0 ");
        let long = format!("; %1 = {}", "é".repeat(300));
        assert_eq!(symbol(12, &long).chars().count(), 160);
    }
}
