//! Worker threads kept for the life of the process, for the kernels that split their work
//! (GEMM row blocks, row-independent kernels, convolutions over the batch). Spawning scoped
//! threads for every call cost tens of microseconds each (a stack to map, a thread to start
//! and join), several times per training step; a worker waiting on a condition variable is
//! woken in a few.
//!
//! A worker that runs out of tasks, and a caller waiting for the last task, first spin for up
//! to [`SPIN`] watching for the next job (or the end of this one) before sleeping: on a
//! virtual machine a futex wake-up costs 10–50 µs, longer than a batch-1 matrix-vector product
//! split over two cores takes. Back-to-back calls (the kernels of one step, a loop of
//! inferences) so hand over work in well under a microsecond; an idle process sleeps after the
//! spin.
//!
//! [`run`] hands `tasks` numbered tasks to the workers and the calling thread, and returns when
//! all are done, so a task may borrow from the caller's stack as with `std::thread::scope`. One
//! job runs at a time: a call made while another is running (from a task, or from another
//! thread) runs its tasks itself, in order.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::fpenv::Mode;

/// How long an idle worker or a waiting caller spins before it sleeps.
const SPIN: Duration = Duration::from_micros(200);

/// Spins until `done()` or [`SPIN`] has passed; whether `done()` became true.
fn spin_until(done: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if done() {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= SPIN {
            return done();
        }
    }
}

type Task = dyn Fn(usize) + Sync;

/// The job being run: its tasks, handed out in order, and how many are not finished.
struct Job {
    /// Valid until `pending` reaches 0: [`run`] does not return before.
    f: *const Task,
    tasks: usize,
    next: usize,
    pending: usize,
    panicked: bool,
    /// The caller's floating-point mode, which the workers take for its tasks
    /// ([`super::fpenv`]: whether subnormals are flushed must not depend on the thread).
    mode: Mode,
}

// SAFETY: `f` points at a `Sync` closure that outlives the job (see `Job::f`).
unsafe impl Send for Job {}

struct Pool {
    job: Mutex<Option<Job>>,
    /// Workers wait here for a job with tasks left.
    wake: Condvar,
    /// The caller waits here for the last task to finish.
    done: Condvar,
    /// Held by the call whose job is running.
    busy: Mutex<()>,
    workers: usize,
    /// Counts the jobs posted: an idle worker spins until it changes.
    posted: AtomicUsize,
    /// Workers asleep on `wake` (changed under the `job` lock): without any, posting a job needs
    /// no wake-up call.
    sleeping: AtomicUsize,
    /// Tasks of the current job not yet finished (mirrors `Job::pending`, readable without the
    /// lock by a spinning caller).
    pending: AtomicUsize,
}

thread_local! {
    static IS_WORKER: Cell<bool> = const { Cell::new(false) };
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .saturating_sub(1);
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            job: Mutex::new(None),
            wake: Condvar::new(),
            done: Condvar::new(),
            busy: Mutex::new(()),
            workers,
            posted: AtomicUsize::new(0),
            sleeping: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
        }));
        for i in 0..workers {
            let spawned = std::thread::Builder::new()
                .name(format!("nnc-worker-{i}"))
                .spawn(move || {
                    IS_WORKER.with(|w| w.set(true));
                    work(pool, true)
                });
            if spawned.is_err() {
                // Fewer workers: the callers do the rest of the tasks themselves.
                break;
            }
        }
        pool
    })
}

/// Takes and runs tasks of the current job until none is left; a worker then waits for the
/// next job, the caller returns.
fn work(pool: &Pool, forever: bool) {
    let mut guard = pool.job.lock().unwrap_or_else(|e| e.into_inner());
    let mut spun = false;
    let mut mode = Mode::current();
    loop {
        let task = guard.as_mut().filter(|j| j.next < j.tasks).map(|j| {
            j.next += 1;
            (j.f, j.next - 1, j.mode)
        });
        match task {
            Some((f, i, job_mode)) => {
                drop(guard);
                if job_mode != mode {
                    job_mode.set();
                    mode = job_mode;
                }
                // SAFETY: the job's closure lives until its last task has finished.
                let ok =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { (*f)(i) }))
                        .is_ok();
                guard = pool.job.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(j) = guard.as_mut() {
                    j.panicked |= !ok;
                    j.pending -= 1;
                    pool.pending.store(j.pending, Ordering::Release);
                    if j.pending == 0 {
                        pool.done.notify_all();
                    }
                }
                spun = false;
            }
            None if forever && !spun => {
                // Read under the lock: a job posted from here on changes it.
                let seen = pool.posted.load(Ordering::Acquire);
                drop(guard);
                spin_until(|| pool.posted.load(Ordering::Acquire) != seen);
                spun = true;
                guard = pool.job.lock().unwrap_or_else(|e| e.into_inner());
            }
            None if forever => {
                pool.sleeping.fetch_add(1, Ordering::AcqRel);
                guard = pool.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                pool.sleeping.fetch_sub(1, Ordering::AcqRel);
                spun = false;
            }
            None => return,
        }
    }
}

/// Runs `f(0)`, …, `f(tasks − 1)` on the workers and the calling thread; returns when all have
/// finished. A task that panics makes `run` panic after the others have finished.
pub fn run(tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    let sequential = || (0..tasks).for_each(f);
    if tasks <= 1 || IS_WORKER.with(|w| w.get()) {
        return sequential();
    }
    let pool = pool();
    if pool.workers == 0 {
        return sequential();
    }
    let Ok(_busy) = pool.busy.try_lock() else {
        return sequential();
    };
    // SAFETY: the lifetime is erased only for the duration of this call, which waits below
    // until every task has finished with `f`.
    let short: *const (dyn Fn(usize) + Sync + '_) = f;
    let erased =
        unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const Task>(short) };
    let wake = {
        let mut job = pool.job.lock().unwrap_or_else(|e| e.into_inner());
        *job = Some(Job {
            f: erased,
            tasks,
            next: 0,
            pending: tasks,
            panicked: false,
            mode: Mode::current(),
        });
        pool.pending.store(tasks, Ordering::Release);
        pool.posted.fetch_add(1, Ordering::AcqRel);
        pool.sleeping.load(Ordering::Acquire) > 0
    };
    if wake {
        pool.wake.notify_all();
    }
    work(pool, false);
    spin_until(|| pool.pending.load(Ordering::Acquire) == 0);
    let mut guard = pool.job.lock().unwrap_or_else(|e| e.into_inner());
    while guard.as_ref().is_some_and(|j| j.pending > 0) {
        guard = pool.done.wait(guard).unwrap_or_else(|e| e.into_inner());
    }
    let panicked = guard.take().is_some_and(|j| j.panicked);
    drop(guard);
    assert!(!panicked, "a worker task panicked");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_task_runs_once_and_borrows_work() {
        for tasks in [0, 1, 2, 3, 17] {
            let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            run(tasks, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "{tasks}"
            );
        }
    }

    #[test]
    fn nested_and_concurrent_calls_complete() {
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        run(3, &|_| {
                            run(2, &|_| {
                                total.fetch_add(1, Ordering::Relaxed);
                            })
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 50 * 3 * 2);
    }
}
