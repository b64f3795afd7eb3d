//! The memory check of `nnc check` and `nnc train`: a run whose parameters, gradients,
//! optimizer state and activations would not fit is refused before any data is read, under the
//! run's span, with the bytes it needs. `--max-memory` lowers the limit below what the machine
//! has available.

use super::source::{render, Loaded};
use super::CliResult;
use crate::diag::Diag;
use crate::runtime::memory::{self, human};

/// Refuses every run of `loaded` (or only `only`) that needs more than the limit: the smaller
/// of `max_memory` and the memory available.
pub fn check(loaded: &Loaded, only: Option<&str>, max_memory: Option<u64>) -> CliResult {
    let available = memory::available();
    let (limit, what) = match (max_memory, available) {
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
        let Ok(f) = memory::of_run(run) else { continue };
        if f.total() > limit {
            diags.push(
                Diag::new(
                    "nnc::memory",
                    format!(
                        "training `{}` with batch {} needs about {}",
                        run.model,
                        run.batch,
                        f.describe()
                    ),
                    run.span,
                    format!("needs {}, {} {what}", human(f.total()), human(limit)),
                )
                .help(
                    "lower the batch size or the layer sizes; `--max-memory SIZE` sets the limit \
                     (default: the memory available)",
                ),
            );
        }
    }
    if diags.is_empty() {
        Ok(())
    } else {
        Err(render(&loaded.path, &loaded.text, diags))
    }
}
