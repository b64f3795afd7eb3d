//! Graph-to-graph passes and the optimization pipeline.
//!
//! In the style of Cranelift's `Context::optimize`: [`passes`] lists the passes of an optimization
//! level, each a small [`Pass`] in its own file, and [`optimize`] runs them in order with the IR
//! verifier after each, so a pass that breaks an invariant is named at once rather than surfacing
//! as a wrong kernel later. Every pass keeps the graph's interface: the `Input` nodes in order,
//! the parameter list, and the output names (executors are fed by [`Graph::inputs`] order and
//! read outputs by name).

pub mod const_fold;
pub mod cse;
pub mod dce;
pub mod embed_matmul;
pub mod epilogue;
pub mod fuse;
pub mod loss_epilogue;
pub mod memplan;
pub mod pool_epilogue;
mod rewrite;
pub mod unpool_grad;
pub mod update_points;

use crate::ir::verify::verify;
use crate::ir::Graph;

/// One graph-to-graph transformation.
pub trait Pass {
    /// Short name, used in errors.
    fn name(&self) -> &'static str;
    /// The transformed graph (`g` itself is left as is).
    fn run(&self, g: &Graph) -> Graph;
}

/// The passes of optimization level `level`, in order: none at level 0; at level 1 (and above)
/// constant folding, then common-subexpression elimination, then the products of embedding
/// look-ups moved to their tables, then dead-code elimination of what those left unused, then
/// fusion of elementwise chains (after the others, which see the separate ops), then fusion of those chains and of activation gradients into the matrix
/// products and convolutions that produce their inputs, then of max poolings into the
/// convolutions they alone read, then of the loss gradients into the products that predict, then
/// of max-pool gradients into the weight gradients of the first convolutions that alone read them
/// (and dead-code elimination of what those absorbed).
pub fn passes(level: u8) -> Vec<Box<dyn Pass>> {
    if level == 0 {
        return Vec::new();
    }
    vec![
        Box::new(const_fold::ConstFold),
        Box::new(cse::Cse),
        Box::new(embed_matmul::EmbedMatmul),
        Box::new(dce::Dce),
        Box::new(fuse::Fuse),
        Box::new(epilogue::EpilogueFusion),
        Box::new(pool_epilogue::PoolEpilogueFusion),
        Box::new(loss_epilogue::LossEpilogueFusion),
        Box::new(unpool_grad::UnpoolGradFusion),
        Box::new(dce::Dce),
    ]
}

/// `g` after the passes of `level`, each followed by the verifier; an error names the pass that
/// produced an invalid graph (or says the input graph was invalid).
pub fn optimize(g: &Graph, level: u8) -> Result<Graph, String> {
    verify(g).map_err(|e| format!("invalid graph before optimization: {}", e.join("; ")))?;
    let mut g = g.clone();
    for pass in passes(level) {
        g = pass.run(&g);
        verify(&g).map_err(|e| {
            format!(
                "the {} pass produced an invalid graph: {}",
                pass.name(),
                e.join("; ")
            )
        })?;
    }
    Ok(g)
}
