//! The processes that train together. Data-parallel training (`mpirun -np N nnc train FILE`)
//! needs four things from the processes' communicator: who am I ([`Comm::rank`]), how many are
//! we ([`Comm::size`]), sum these numbers over everyone ([`Comm::all_reduce_sum`],
//! [`Comm::all_reduce_sum_f64`]) and take rank 0's copy ([`Comm::broadcast`]). [`Single`], one
//! process on its own, is always compiled and is what a plain `nnc train` uses; the MPI
//! communicator (`mpi::Mpi`) exists only with the cargo feature `mpi`, so that nothing else
//! needs an MPI library.
//!
//! Every collective takes a deadline: a rank that died or hangs makes the others return
//! [`CommError::Timeout`] instead of waiting forever.

#[cfg(feature = "mpi")]
pub mod mpi;

use std::time::Duration;

/// Why a collective operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CommError {
    #[error("{op}: no answer from the other ranks within {:.1} s (a rank died, hangs or cannot be reached; the limit is set with --mpi-timeout)", .after.as_secs_f64())]
    Timeout { op: &'static str, after: Duration },
    #[error("{op}: {len} elements are more than MPI can count in one message")]
    TooLong { op: &'static str, len: usize },
    #[error("{op}: MPI error code {code}")]
    Mpi { op: &'static str, code: i32 },
}

/// A communicator among the `size` processes of a data-parallel run. Each operation is
/// collective: every rank calls it, in the same order, with buffers of the same length.
pub trait Comm: std::fmt::Debug {
    /// This process's index, `0..size()`; rank 0 writes checkpoints and logs.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn size(&self) -> usize;
    /// Replaces `buf` by its element-wise sum over all ranks (gradients).
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<(), CommError>;
    /// [`Comm::all_reduce_sum`] in f64 (evaluation sums and counts, which f32 would round).
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<(), CommError>;
    /// Replaces `buf` by rank 0's `buf` (the starting parameters).
    fn broadcast(&self, buf: &mut [f32]) -> Result<(), CommError>;
}

/// One process training alone: every collective is the identity.
#[derive(Clone, Copy, Debug, Default)]
pub struct Single;

impl Comm for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _buf: &mut [f32]) -> Result<(), CommError> {
        Ok(())
    }
    fn all_reduce_sum_f64(&self, _buf: &mut [f64]) -> Result<(), CommError> {
        Ok(())
    }
    fn broadcast(&self, _buf: &mut [f32]) -> Result<(), CommError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_process_is_rank_0_of_1_and_its_collectives_change_nothing() {
        let c: &dyn Comm = &Single;
        assert_eq!((c.rank(), c.size()), (0, 1));
        let mut g = vec![1.5f32, -2.0, 0.0, f32::MAX];
        c.all_reduce_sum(&mut g).unwrap();
        assert_eq!(g, [1.5, -2.0, 0.0, f32::MAX]);
        let mut s = vec![3.25f64, 7.0];
        c.all_reduce_sum_f64(&mut s).unwrap();
        assert_eq!(s, [3.25, 7.0]);
        c.broadcast(&mut g).unwrap();
        assert_eq!(g, [1.5, -2.0, 0.0, f32::MAX]);
    }
}
