//! The two back ends the training loop can drive: the Cranelift JIT (the default) and the
//! reference interpreter. Both take their backward graph from [`crate::autodiff::grad`]; the JIT
//! compiles it after [`crate::opt::optimize`] (level 1 by default: same inputs, parameters and
//! output names, fewer nodes).

use super::optim::ReferenceUpdater;
use super::train::{Backend, ExecutorFactory};
use crate::codegen::{compile_updater, Jit, JitOptions};
use crate::exec::Executor;
use crate::interp::Interpreter;

impl Backend {
    /// JIT-compiled kernels and updates, with `threads` worker threads, on training graphs
    /// optimized at level 1.
    pub fn jit(threads: usize) -> Backend {
        Backend::jit_opt(threads, 1)
    }

    /// Like [`Backend::jit`], with the training graphs optimized at `opt_level`
    /// ([`crate::opt::passes`]; 0 compiles the backward graph as autodiff built it, applies
    /// the optimizer's updates after the step rather than inside it, and runs every matrix
    /// product on the dense GEMM).
    pub fn jit_opt(threads: usize, opt_level: u8) -> Backend {
        let jit = |keep_values: bool| -> ExecutorFactory {
            let opts = JitOptions {
                threads: threads.max(1),
                keep_values,
                fuse_updates: opt_level >= 1,
                sparse: opt_level >= 1,
            };
            Box::new(move |g| {
                Jit::compile(g, &opts)
                    .map(|j| Box::new(j) as Box<dyn Executor>)
                    .map_err(|e| e.to_string())
            })
        };
        Backend {
            grad: Box::new(move |g| crate::opt::optimize(&crate::autodiff::grad(g)?, opt_level)),
            forward: Box::new(move |g| crate::opt::optimize(g, opt_level)),
            executor: jit(false),
            inspector: jit(true),
            updater: Box::new(|spec| compile_updater(spec).map_err(|e| e.to_string())),
        }
    }

    /// The f64 reference interpreter with plain-Rust updates: slow, but the oracle.
    pub fn interpreter() -> Backend {
        // The interpreter keeps every value anyway: it is its own inspector.
        fn interpreter(g: &crate::ir::Graph) -> Result<Box<dyn Executor>, String> {
            Ok(Box::new(Interpreter::new(g.clone())))
        }
        Backend {
            grad: Box::new(crate::autodiff::grad),
            forward: Box::new(|g| Ok(g.clone())),
            executor: Box::new(interpreter),
            inspector: Box::new(interpreter),
            updater: Box::new(|spec| Ok(Box::new(ReferenceUpdater(spec.clone())))),
        }
    }
}
