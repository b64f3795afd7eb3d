//! The one place where a Cranelift [`JITModule`] is created, so that every kernel in nnc is
//! compiled for the host CPU: `cranelift-native` detects SSE4.1/AVX/AVX2/FMA/… and the optimizer
//! runs at `opt_level=speed`. Without the host flags `fma` silently becomes a libcall and
//! `nearest`/`floor` lose their single-instruction lowering.

use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};

/// Builds the host target ISA (native feature flags, `opt_level=speed`, non-PIC).
pub fn host_isa() -> Result<OwnedTargetIsa, String> {
    host_isa_with_opt("speed")
}

/// The host ISA with a given Cranelift `opt_level` (`none`, `speed`, `speed_and_size`).
pub fn host_isa_with_opt(opt_level: &str) -> Result<OwnedTargetIsa, String> {
    let mut flags = settings::builder();
    for (name, value) in [
        ("opt_level", opt_level),
        ("use_colocated_libcalls", "false"),
        ("is_pic", "false"),
        (
            "enable_verifier",
            if cfg!(debug_assertions) {
                "true"
            } else {
                "false"
            },
        ),
    ] {
        flags
            .set(name, value)
            .map_err(|e| format!("cranelift setting {name}={value}: {e}"))?;
    }
    let isa_builder = cranelift_native::builder()
        .map_err(|e| format!("host CPU not supported by Cranelift: {e}"))?;
    isa_builder
        .finish(settings::Flags::new(flags))
        .map_err(|e| format!("cannot build the host ISA: {e}"))
}

/// A fresh JIT module for the host CPU; see the module documentation.
pub fn new_jit_module() -> Result<JITModule, String> {
    new_jit_module_with_opt("speed")
}

/// A JIT module for the host CPU with a given `opt_level`. Hand-scheduled kernels (the GEMM
/// micro-kernel) use `none`: the e-graph pass would re-elaborate their pure loads and `fma`s
/// chain by chain, which keeps every loaded value live and spills.
pub fn new_jit_module_with_opt(opt_level: &str) -> Result<JITModule, String> {
    let isa = host_isa_with_opt(opt_level)?;
    let builder = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
    Ok(JITModule::new(builder))
}

/// One line naming the target and every enabled boolean ISA flag (e.g. `has_avx has_fma`),
/// for `nnc bench` and diagnostics.
pub fn host_isa_flags_summary() -> String {
    match host_isa() {
        Err(e) => e,
        Ok(isa) => {
            let enabled: Vec<String> = isa
                .isa_flags()
                .iter()
                .filter(|v| v.as_bool() == Some(true))
                .map(|v| v.name.to_string())
                .collect();
            format!("{} [{}] opt_level=speed", isa.triple(), enabled.join(" "))
        }
    }
}

/// Declares, builds and defines (not yet finalizes) a local function of `pointer_params`
/// pointer arguments and no result in `module`; `emit` writes its body, given the pointer type.
pub fn define_function(
    module: &mut JITModule,
    name: &str,
    pointer_params: usize,
    emit: impl FnOnce(&mut cranelift_frontend::FunctionBuilder, cranelift_codegen::ir::Type),
) -> Result<cranelift_module::FuncId, String> {
    use cranelift_codegen::ir::AbiParam;
    use cranelift_module::{Linkage, Module};
    let ptr = module.target_config().pointer_type();
    let mut sig = module.make_signature();
    sig.params
        .extend(std::iter::repeat_n(AbiParam::new(ptr), pointer_params));
    let id = module
        .declare_function(name, Linkage::Local, &sig)
        .map_err(|e| format!("declare {name}: {e}"))?;
    let mut ctx = module.make_context();
    ctx.func.signature = sig;
    let mut fctx = cranelift_frontend::FunctionBuilderContext::new();
    let frontend = module.target_config();
    {
        let mut b = cranelift_frontend::FunctionBuilder::new(&mut ctx.func, &mut fctx);
        emit(&mut b, ptr);
        b.seal_all_blocks();
        b.finalize(frontend);
    }
    module
        .define_function(id, &mut ctx)
        .map_err(|e| format!("compile {name}: {e:?}"))?;
    module.clear_context(&mut ctx);
    Ok(id)
}

/// Starts a function of one pointer parameter (a `#[repr(C)]` struct of 8-byte words, as the
/// GEMM's and the sparse product's arguments): creates and enters its entry block, and returns
/// a reader of word `i` of the struct.
pub fn args_struct(
    b: &mut cranelift_frontend::FunctionBuilder,
    ptr: cranelift_codegen::ir::Type,
) -> impl Fn(&mut cranelift_frontend::FunctionBuilder, usize) -> cranelift_codegen::ir::Value {
    use cranelift_codegen::ir::{InstBuilder, MemFlagsData};
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let params = b.block_params(entry)[0];
    move |b, i| {
        let flags = MemFlagsData::new().with_notrap().with_readonly();
        b.ins().load(ptr, flags, params, 8 * i as i32)
    }
}
