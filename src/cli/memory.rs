//! The memory check of `nnc check`, `train`, `bench` and `gradcheck`: a run whose parameters,
//! gradients, optimizer state and activations would not fit is refused before any data is read
//! (or anything is allocated), under the run's span, with the bytes it needs, rather than the
//! process aborting on an allocation. `--max-memory` lowers the limit below what the machine
//! has available.

use super::source::{render, Loaded};
use super::CliResult;
use crate::diag::Diag;
use crate::ir::RunSpec;
use crate::runtime::memory::{self, human};

/// What a command does with each run, and so the footprint checked.
#[derive(Clone, Copy, Debug)]
pub enum Use {
    /// Training at the run's batch (`check`, `train`, `bench`).
    Training,
    /// `gradcheck` at its `--batch` ([`gradcheck_footprint`]).
    Gradcheck { batch: usize },
}

/// What `nnc gradcheck` holds, from the footprint of training at its batch: the compiled
/// training graph's f32 buffers (the parameters it is passed, the gradients, the activations;
/// no optimizer state and no updates), and beside them in f64 the parameters three times (their
/// values, the copy perturbed for the finite differences, the reference interpreter's), the
/// gradients once, and the inputs and every forward value in the interpreter (with the input
/// copies in between, counted as the activations four times). Measured peaks: 548 MiB for
/// 61 MiB of parameters (estimated 612 MiB), 40 MiB above the process's own for the MNIST MLP
/// at batch 2000 (estimated 44 MiB).
fn gradcheck_footprint(f: &memory::Footprint) -> memory::Footprint {
    memory::Footprint {
        params: f.params.saturating_mul(7),
        grads: f.grads.saturating_mul(3),
        optimizer: 0,
        updates: 0,
        activations: f.activations.saturating_mul(5),
    }
}

/// Refuses every run of `loaded` (or only `only`) whose training needs more than the limit: the
/// smaller of `max_memory` and the memory available.
pub fn check(loaded: &Loaded, only: Option<&str>, max_memory: Option<u64>) -> CliResult {
    check_for(loaded, only, max_memory, Use::Training)
}

/// [`check`] for what `what` does with each run.
pub fn check_for(
    loaded: &Loaded,
    only: Option<&str>,
    max_memory: Option<u64>,
    what: Use,
) -> CliResult {
    let available = memory::available();
    let (limit, source) = match (max_memory, available) {
        (Some(m), Some(a)) if a < m => (a, "available"),
        (Some(m), _) => (m, "allowed by --max-memory"),
        (None, Some(a)) => (a, "available"),
        (None, None) => return Ok(()),
    };
    let mut diags = Vec::new();
    for run in &loaded.program.runs {
        if only.is_some_and(|o| o != run.name) {
            continue;
        }
        // A graph autodiff refuses is reported when the run starts, with its own message.
        let (need, message, lower) = match what {
            Use::Training => {
                let Ok(f) = memory::of_run(run) else { continue };
                let message = format!(
                    "training `{}` with batch {} needs about {}",
                    run.model,
                    run.batch,
                    f.describe()
                );
                (f.total(), message, "the batch size")
            }
            Use::Gradcheck { batch } => {
                let at = RunSpec {
                    batch,
                    ..run.clone()
                };
                let Ok(f) = memory::of_run(&at) else { continue };
                let f = gradcheck_footprint(&f);
                let message = format!(
                    "checking the gradients of `{}` with batch {batch} needs about {} \
                     (parameters {}, gradients {}, activations {}, each with its f64 copies \
                     for the reference interpreter)",
                    run.model,
                    human(f.total()),
                    human(f.params),
                    human(f.grads),
                    human(f.activations)
                );
                (f.total(), message, "--batch")
            }
        };
        if need > limit {
            diags.push(
                Diag::new(
                    "nnc::memory",
                    message,
                    run.span,
                    format!("needs {}, {} {source}", human(need), human(limit)),
                )
                .help(format!(
                    "lower {lower} or the layer sizes; `--max-memory SIZE` sets the limit \
                     (default: the memory available)"
                )),
            );
        }
    }
    if diags.is_empty() {
        Ok(())
    } else {
        Err(render(&loaded.path, &loaded.text, diags))
    }
}
