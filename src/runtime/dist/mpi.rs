//! The MPI communicator (cargo feature `mpi`): `MPI_COMM_WORLD` of an `mpirun` job.
//!
//! Collectives are started non-blocking (`MPI_Iallreduce`, `MPI_Ibcast`) and polled with
//! `MPI_Test` against a deadline, so that a rank that died or hangs gives the others a
//! [`CommError::Timeout`] rather than a hang. The buffers MPI reads and writes are owned here
//! (the caller's data is copied in and out, a memcpy next to a training step): when a collective
//! times out they are leaked, so that MPI can never write into freed memory, and the process
//! is expected to exit without `MPI_Finalize` (which would wait for the missing rank).
//!
//! The raw calls go through `mpi::ffi` because rsmpi's safe requests panic or abort when dropped
//! unfinished, which is exactly what a timeout needs to do.

use super::{Comm, CommError};
use mpi::datatype::Equivalence;
use mpi::ffi;
use mpi::raw::AsRaw;
use mpi::topology::{Communicator, SimpleCommunicator};
use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::os::raw::{c_int, c_void};
use std::time::{Duration, Instant};

/// Owned send and receive buffers of one element type, reused from call to call.
#[derive(Debug, Default)]
struct Scratch<T> {
    send: Vec<T>,
    recv: Vec<T>,
}

/// `MPI_COMM_WORLD`, with the deadline of every collective.
pub struct Mpi {
    world: SimpleCommunicator,
    timeout: Duration,
    f32s: RefCell<Scratch<f32>>,
    f64s: RefCell<Scratch<f64>>,
}

impl Mpi {
    /// The world communicator of an initialized MPI environment (the caller keeps the
    /// `mpi::environment::Universe` alive); collectives give up after `timeout`.
    pub fn new(world: SimpleCommunicator, timeout: Duration) -> Mpi {
        Mpi {
            world,
            timeout,
            f32s: RefCell::default(),
            f64s: RefCell::default(),
        }
    }

    /// Polls `req` until it completes or the deadline passes. It yields the core for the first
    /// millisecond (a gradient all-reduce on one machine takes about that), then sleeps 100 µs
    /// between polls, so that a waiting rank leaves the cores to ranks still computing.
    fn wait(&self, op: &'static str, mut req: ffi::MPI_Request) -> Result<(), CommError> {
        let start = Instant::now();
        loop {
            let mut done: c_int = 0;
            // SAFETY: `req` is an active request started by this communicator; MPI_Test
            // completes and frees it when it reports `done`.
            let rc = unsafe { ffi::MPI_Test(&mut req, &mut done, ffi::RSMPI_STATUS_IGNORE) };
            check(op, rc)?;
            if done != 0 {
                return Ok(());
            }
            let waited = start.elapsed();
            if waited > self.timeout {
                return Err(CommError::Timeout {
                    op,
                    after: self.timeout,
                });
            }
            if waited < Duration::from_millis(1) {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    }

    /// Sums `buf` over all ranks through the owned buffers of `scratch`.
    fn all_reduce<T: Equivalence + Copy + Default>(
        &self,
        scratch: &RefCell<Scratch<T>>,
        buf: &mut [T],
    ) -> Result<(), CommError> {
        const OP: &str = "all-reduce";
        let mut s = scratch.borrow_mut();
        s.send.clear();
        s.send.extend_from_slice(buf);
        s.recv.clear();
        s.recv.resize(buf.len(), T::default());
        let mut req = MaybeUninit::<ffi::MPI_Request>::uninit();
        // SAFETY: both buffers hold `buf.len()` elements of `T`'s MPI datatype and stay alive
        // and unmoved until the request completes (or forever, after a timeout).
        let rc = unsafe {
            ffi::MPI_Iallreduce(
                s.send.as_ptr() as *const c_void,
                s.recv.as_mut_ptr() as *mut c_void,
                count(OP, buf.len())?,
                T::equivalent_datatype().as_raw(),
                mpi::collective::SystemOperation::sum().as_raw(),
                self.world.as_raw(),
                req.as_mut_ptr(),
            )
        };
        self.finish(OP, rc, req, &mut s, buf)
    }

    /// Waits for the collective that a call returning `rc` started on `s`'s buffers, with
    /// `req` the request handle that call was to write, then copies `s.recv` into `buf`. After
    /// a timeout both buffers are leaked: MPI may still write into them.
    fn finish<T: Copy + Default>(
        &self,
        op: &'static str,
        rc: c_int,
        req: MaybeUninit<ffi::MPI_Request>,
        s: &mut Scratch<T>,
        buf: &mut [T],
    ) -> Result<(), CommError> {
        check(op, rc)?;
        // SAFETY: the call returned success, so it wrote the request handle.
        let req = unsafe { req.assume_init() };
        if let Err(e) = self.wait(op, req) {
            std::mem::forget(std::mem::take(s));
            return Err(e);
        }
        buf.copy_from_slice(&s.recv);
        Ok(())
    }
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mpi")
            .field("rank", &self.rank())
            .field("size", &self.size())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// An element count as MPI's `int`.
fn count(op: &'static str, n: usize) -> Result<c_int, CommError> {
    c_int::try_from(n).map_err(|_| CommError::TooLong { op, len: n })
}

/// An MPI return code as a result.
fn check(op: &'static str, rc: c_int) -> Result<(), CommError> {
    if rc == ffi::MPI_SUCCESS as c_int {
        Ok(())
    } else {
        Err(CommError::Mpi { op, code: rc })
    }
}

impl Comm for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn size(&self) -> usize {
        self.world.size() as usize
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<(), CommError> {
        self.all_reduce(&self.f32s, buf)
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<(), CommError> {
        self.all_reduce(&self.f64s, buf)
    }
    fn broadcast(&self, buf: &mut [f32]) -> Result<(), CommError> {
        const OP: &str = "broadcast";
        let mut s = self.f32s.borrow_mut();
        s.recv.clear();
        s.recv.extend_from_slice(buf);
        let mut req = MaybeUninit::<ffi::MPI_Request>::uninit();
        // SAFETY: as in `all_reduce`: the owned buffer outlives the request.
        let rc = unsafe {
            ffi::MPI_Ibcast(
                s.recv.as_mut_ptr() as *mut c_void,
                count(OP, buf.len())?,
                f32::equivalent_datatype().as_raw(),
                0,
                self.world.as_raw(),
                req.as_mut_ptr(),
            )
        };
        self.finish(OP, rc, req, &mut s, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_beyond_an_mpi_int_are_refused() {
        assert_eq!(count("all-reduce", 5).unwrap(), 5);
        let e = count("all-reduce", 1 << 31).unwrap_err();
        assert!(
            matches!(e, CommError::TooLong { len, .. } if len == 1 << 31),
            "{e}"
        );
    }
}
