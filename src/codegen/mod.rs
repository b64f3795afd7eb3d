//! Code generation: every IR op compiled to Cranelift machine code, the executor that runs a
//! compiled graph ([`Jit`]), the JIT-compiled optimizer updates ([`optim`]), and the listings
//! behind `nnc ir --stage clif|asm` ([`clif_text`], [`asm_text`]).
//!
//! One step per node ([`lower`]); elementwise ops are written as expressions over lanes
//! ([`elementwise::ElemExpr`]), so that a fused chain is one loop and a GEMM's epilogue
//! ([`epilogue`]) applies the same expressions to each block of its product.

mod activation;
mod batchnorm;
mod bias;
mod conv;
mod copy;
mod direct_conv;
mod elementwise;
mod embed;
mod epilogue;
pub mod fpenv;
mod fused_update;
pub mod gemm;
mod glue;
mod gru;
pub mod im2col;
mod jit;
pub mod jitmod;
mod kernel;
mod loss;
mod lower;
mod lstm;
pub mod masked;
pub mod math;
pub mod optim;
mod pool;
pub mod profile;
mod rnn;
mod rowwise;
mod small_matmul;
pub mod sparse;
pub mod sparse_conv;
mod tuner;
mod winograd;
pub mod workers;

#[doc(hidden)]
pub use batchnorm::with_scalar_channels;
pub use jit::{Jit, JitOptions};

pub use lower::pool_beside_applies;

/// Whether the code generator has a kernel for [`crate::ir::Op::Conv2dGradWeightUnpool`] with
/// these types (images `x`, convolution window `conv`, its activated output `y`, max-pooled by
/// `pool`, the pooled gradient `dp` and the weight gradient `dw`); [`crate::opt::unpool_grad`]
/// fuses only those.
pub fn unpool_grad_weight_applies(
    x: &crate::ir::Type,
    (conv, pool): (&crate::ir::Window, &crate::ir::Window),
    y: &crate::ir::Type,
    dp: &crate::ir::Type,
    dw: &crate::ir::Type,
) -> bool {
    lower::direct_geom(x, conv)
        .is_some_and(|g| lower::unpool_grad_weight_applies(&g, pool, y, dp, dw))
}
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
        &lower::kernel_graph(g),
        false,
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
        &lower::kernel_graph(g),
        false,
        kernel::Listing {
            asm: true,
            ..Default::default()
        },
    )?
    .listing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Op, Type, UnaryOp};

    fn small() -> Graph {
        let mut g = Graph::new("t", false);
        let x = g.input("x", Type::f32(true, vec![4]));
        let w = g.input("w", Type::f32(false, vec![4, 3]));
        let y = g
            .push(
                Op::MatMul {
                    ta: false,
                    tb: false,
                },
                vec![x, w],
                "dense",
            )
            .unwrap();
        let z = g.push(Op::Unary(UnaryOp::Tanh), vec![y], "act").unwrap();
        g.set_output("output", z);
        g
    }

    #[test]
    fn clif_listing_heads_each_kernel_with_its_node() {
        let text = clif_text(&small()).unwrap();
        assert!(
            text.contains("; %2 = matmul %0, %1 : f32[B,3]  ; dense"),
            "{text}"
        );
        assert!(text.contains("; %3 = tanh %2 : f32[B,3]  ; act"), "{text}");
        assert!(text.contains("function "), "{text}");
        assert!(text.contains("f32x4"), "{text}");
    }

    #[test]
    fn asm_listing_has_machine_code() {
        let text = asm_text(&small()).unwrap();
        assert!(text.contains("; %3 = tanh %2"), "{text}");
        assert!(text.contains("ret"), "{text}");
    }
}
