//! The two back ends the training loop can drive: the Cranelift JIT (the default) and the
//! reference interpreter. Both take their backward graph from [`crate::autodiff::grad`]; the JIT
//! compiles it after [`crate::opt::optimize`] at level 1 (same inputs, parameters and output
//! names, fewer nodes).

use super::optim::ReferenceUpdater;
use super::train::Backend;
use crate::codegen::{compile_updater, Jit, JitOptions};
use crate::exec::Executor;
use crate::interp::Interpreter;

impl Backend {
    /// JIT-compiled kernels and updates, with `threads` worker threads.
    pub fn jit(threads: usize) -> Backend {
        let opts = JitOptions {
            threads: threads.max(1),
        };
        Backend {
            grad: Box::new(|g| crate::opt::optimize(&crate::autodiff::grad(g)?, 1)),
            executor: Box::new(move |g| {
                Jit::compile(g, &opts)
                    .map(|j| Box::new(j) as Box<dyn Executor>)
                    .map_err(|e| e.to_string())
            }),
            updater: Box::new(|spec| compile_updater(spec).map_err(|e| e.to_string())),
        }
    }

    /// The f64 reference interpreter with plain-Rust updates: slow, but the oracle.
    pub fn interpreter() -> Backend {
        Backend {
            grad: Box::new(crate::autodiff::grad),
            executor: Box::new(|g| Ok(Box::new(Interpreter::new(g.clone())) as Box<dyn Executor>)),
            updater: Box::new(|spec| Ok(Box::new(ReferenceUpdater(spec.clone())))),
        }
    }
}
