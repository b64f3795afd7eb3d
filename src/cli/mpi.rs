//! `nnc train` started by `mpirun` (cargo feature `mpi`): joins the job's `MPI_COMM_WORLD` and
//! ends its part in it. A process started any other way does not touch MPI at all, so that a
//! plain `nnc train` behaves the same with the feature as without.

use super::CliError;
use crate::runtime::dist::mpi::Mpi;
use crate::runtime::dist::Comm;
use mpi::environment::Universe;
use std::rc::Rc;
use std::time::Duration;

/// Variables that MPI launchers set in every process they start (OpenMPI's `mpirun`, PMIx
/// launchers such as Slurm's `srun --mpi=pmix`, MPICH's Hydra).
const LAUNCHED: &[&str] = &["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"];

/// Ranks on this machine, as OpenMPI tells each process.
const LOCAL_SIZE: &str = "OMPI_COMM_WORLD_LOCAL_SIZE";

/// This process's membership of an MPI job.
pub struct Job {
    universe: Universe,
    comm: Rc<Mpi>,
}

/// Joins the MPI job this process was started in, if it was started by an MPI launcher;
/// collectives give up after `timeout_s` seconds.
pub fn join(timeout_s: f64) -> Result<Option<Job>, CliError> {
    let timeout = match Duration::try_from_secs_f64(timeout_s) {
        Ok(t) if !t.is_zero() => t,
        // More seconds than a timer holds (or `inf`): no limit in practice. The limit is only
        // compared with the time waited, never added to an instant.
        Err(_) if timeout_s > 0.0 => Duration::MAX,
        _ => {
            return Err(CliError::user(format!(
                "--mpi-timeout must be a positive number of seconds, not {timeout_s}"
            )))
        }
    };
    if !LAUNCHED.iter().any(|v| std::env::var_os(v).is_some()) {
        return Ok(None);
    }
    let universe =
        mpi::initialize().ok_or_else(|| CliError::internal("MPI was initialized twice"))?;
    let comm = Rc::new(Mpi::new(universe.world(), timeout));
    Ok(Some(Job { universe, comm }))
}

impl Job {
    /// The job's communicator.
    pub fn comm(&self) -> Rc<dyn Comm> {
        self.comm.clone()
    }

    /// This rank's share of the machine's cores, for the executor's threads when `--threads`
    /// is not given (all cores for every rank would oversubscribe them).
    pub fn threads(&self) -> Option<usize> {
        let local: usize = std::env::var(LOCAL_SIZE).ok()?.parse().ok()?;
        let cores = std::thread::available_parallelism().ok()?.get();
        Some((cores / local.max(1)).max(1))
    }

    /// Ends this process's part in the job. After success, `MPI_Finalize`. After a failure,
    /// nothing: finalizing would wait for ranks that may be dead or stuck in a collective,
    /// while a process that exits without it makes `mpirun` stop the whole job at once.
    pub fn end(self, ok: bool) {
        if ok {
            drop(self.universe);
        } else {
            std::mem::forget(self.universe);
        }
    }

    /// `e` saying which rank it comes from (every rank reports its own failure; `mpirun`
    /// shows them all).
    pub fn label(&self, e: CliError) -> CliError {
        let (r, n) = (self.comm.rank(), self.comm.size());
        if n == 1 {
            return e;
        }
        let tag = |m: String| format!("[rank {r} of {n}] {m}");
        match e {
            CliError::User(m) => CliError::User(tag(m)),
            CliError::Internal(m) => CliError::Internal(tag(m)),
            CliError::Interrupted(m) => CliError::Interrupted(tag(m)),
        }
    }
}
