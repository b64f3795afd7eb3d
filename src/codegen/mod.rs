//! Code generation: every IR op compiled to Cranelift machine code, the executor that runs a
//! compiled graph ([`Jit`]), the JIT-compiled optimizer updates ([`optim`]), and the listings
//! behind `nnc ir --stage clif|asm` ([`clif_text`], [`asm_text`]).
//!
//! One Cranelift function per node for now ([`lower`]); elementwise ops are written as
//! expressions over lanes ([`elementwise::ElemExpr`]) so that a fused chain can become one loop.

mod bias;
mod conv;
mod elementwise;
mod embed;
pub mod gemm;
mod glue;
pub mod im2col;
mod jit;
pub mod jitmod;
mod kernel;
mod loss;
mod lower;
pub mod math;
pub mod optim;
mod pool;
mod rnn;
mod rowwise;

pub use jit::{Jit, JitOptions};
pub use optim::compile_updater;

use crate::ir::Graph;

#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    /// The graph breaks an invariant the kernels rely on (it should have failed `ir::verify`).
    #[error("cannot compile the graph: {0}")]
    Graph(String),
    /// Cranelift rejected a function or could not set up the host target.
    #[error("cranelift: {0}")]
    Cranelift(String),
}

/// The Cranelift IR of every kernel of `g`, each headed by the node it implements.
pub fn clif_text(g: &Graph) -> Result<String, CodegenError> {
    Ok(lower::lower(
        g,
        kernel::Listing {
            clif: true,
            ..Default::default()
        },
    )?
    .listing)
}

/// The disassembly (Cranelift's VCode after register allocation) of every kernel of `g`.
pub fn asm_text(g: &Graph) -> Result<String, CodegenError> {
    Ok(lower::lower(
        g,
        kernel::Listing {
            asm: true,
            ..Default::default()
        },
    )?
    .listing)
}
