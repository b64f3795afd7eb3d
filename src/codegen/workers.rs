//! Worker threads kept for the life of the process, for the kernels that split their work
//! (GEMM row blocks, row-independent kernels, convolutions over the batch). Spawning scoped
//! threads for every call cost tens of microseconds each (a stack to map, a thread to start
//! and join), several times per training step; a worker waiting on a condition variable is
//! woken in a few.
//!
//! A worker that runs out of tasks, and a caller waiting for the last task, first spin for up
//! to [`SPIN`] watching for the next job (or the end of this one) before sleeping: on a
//! virtual machine a futex wake-up costs 10–50 µs, longer than a batch-1 matrix-vector product
//! split over two cores takes. An idle process sleeps after the spin.
//!
//! Handing over a job takes no lock: the caller publishes it in one atomic word ([`Claim`]:
//! the job's number, its task count and the next task), and every thread takes tasks by
//! compare-and-swap on that word, then counts them done on another. Between back-to-back
//! calls (the kernels of one step, a loop of inferences) a job then costs a few transfers of
//! a cache line between the cores, about half of what a mutex taken around every task cost
//! (`cargo bench --bench workers`).
//!
//! [`run`] hands `tasks` numbered tasks to the workers and the calling thread, and returns when
//! all are done, so a task may borrow from the caller's stack as with `std::thread::scope`. One
//! job runs at a time: a call made while another is running (from a task, or from another
//! thread) runs its tasks itself, in order.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::SeqCst};
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

/// The word tasks are taken from: the job's number (32 bits), its task count and the next
/// task to take (16 bits each). A task is taken by a compare-and-swap that succeeds only while
/// the word still names the same job with tasks left, so a thread that read the word of a
/// finished job cannot take a task of the next one; and the job's other fields, written
/// before the word named it, are read only by a thread holding one of its tasks, which keeps
/// the job from finishing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Claim(u64);

/// Tasks one job may have ([`run`] groups more).
const MAX_TASKS: usize = (1 << 16) - 1;

impl Claim {
    fn new(job: u32, tasks: usize, next: usize) -> Claim {
        debug_assert!(tasks <= MAX_TASKS && next <= tasks);
        Claim((job as u64) << 32 | (tasks as u64) << 16 | next as u64)
    }
    fn job(self) -> u32 {
        (self.0 >> 32) as u32
    }
    fn tasks(self) -> usize {
        (self.0 >> 16) as usize & MAX_TASKS
    }
    fn next(self) -> usize {
        self.0 as usize & MAX_TASKS
    }
}

struct Pool {
    /// The current job's [`Claim`].
    claim: AtomicU64,
    /// The current job's closure: a pointer to the caller's `&Task`, valid until `pending`
    /// reaches 0 ([`run`] does not return before).
    f: AtomicPtr<&'static Task>,
    /// The caller's floating-point mode ([`Mode::bits`]), which the workers take for its tasks
    /// ([`super::fpenv`]: whether subnormals are flushed must not depend on the thread).
    mode: AtomicU64,
    /// Tasks of the current job not yet finished.
    pending: AtomicUsize,
    panicked: AtomicBool,
    /// Workers asleep, waiting for the next job on `wake` (under `sleep`): without any,
    /// posting a job needs no wake-up call.
    sleeping: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
    /// Whether the caller sleeps on `done` (under `done_lock`) for the last task.
    waiting: AtomicBool,
    done_lock: Mutex<()>,
    done: Condvar,
    /// Held by the call whose job is running.
    busy: Mutex<()>,
    workers: usize,
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
            claim: AtomicU64::new(Claim::new(0, 0, 0).0),
            f: AtomicPtr::new(std::ptr::null_mut()),
            mode: AtomicU64::new(Mode::current().bits()),
            pending: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleeping: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            waiting: AtomicBool::new(false),
            done_lock: Mutex::new(()),
            done: Condvar::new(),
            busy: Mutex::new(()),
            workers,
        }));
        for i in 0..workers {
            let spawned = std::thread::Builder::new()
                .name(format!("nnc-worker-{i}"))
                .spawn(move || {
                    IS_WORKER.with(|w| w.set(true));
                    serve(pool)
                });
            if spawned.is_err() {
                // Fewer workers: the callers do the rest of the tasks themselves.
                break;
            }
        }
        pool
    })
}

/// Takes and runs tasks of the job `claim` names until none is left; returns the claim word
/// last read (a later job's, or this one with every task taken).
fn work(pool: &Pool, mut claim: Claim, mode: &mut Mode) -> Claim {
    while claim.next() < claim.tasks() {
        let taken = Claim::new(claim.job(), claim.tasks(), claim.next() + 1);
        if let Err(now) = pool
            .claim
            .compare_exchange(claim.0, taken.0, SeqCst, SeqCst)
        {
            claim = Claim(now);
            continue;
        }
        // Holding a task of this job, which therefore cannot finish: its fields are this
        // job's (written before its claim word).
        let job_mode = Mode::from_bits(pool.mode.load(SeqCst));
        if job_mode != *mode {
            job_mode.set();
            *mode = job_mode;
        }
        // SAFETY: `f` points at the caller's `&Task`, alive until the last task has finished.
        let f: &Task = unsafe { *pool.f.load(SeqCst) };
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(claim.next()))).is_ok();
        if !ok {
            pool.panicked.store(true, SeqCst);
        }
        if pool.pending.fetch_sub(1, SeqCst) == 1 && pool.waiting.load(SeqCst) {
            // The caller sleeps (or is about to, holding the lock until it does).
            let _guard = pool.done_lock.lock().unwrap_or_else(|e| e.into_inner());
            pool.done.notify_all();
        }
        claim = Claim(pool.claim.load(SeqCst));
    }
    claim
}

/// A worker's life: takes tasks, then waits for the next job (spinning, then asleep).
fn serve(pool: &Pool) -> ! {
    let mut mode = Mode::current();
    loop {
        let seen = work(pool, Claim(pool.claim.load(SeqCst)), &mut mode).job();
        let posted = || Claim(pool.claim.load(SeqCst)).job() != seen;
        if !spin_until(posted) {
            let mut guard = pool.sleep.lock().unwrap_or_else(|e| e.into_inner());
            pool.sleeping.fetch_add(1, SeqCst);
            while !posted() {
                guard = pool.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
            pool.sleeping.fetch_sub(1, SeqCst);
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
    if tasks > MAX_TASKS {
        // Consecutive tasks in groups, as many groups as a job may have.
        let per = tasks.div_ceil(MAX_TASKS);
        return run(tasks.div_ceil(per), &|g| {
            (g * per..tasks.min((g + 1) * per)).for_each(f)
        });
    }
    let pool = pool();
    if pool.workers == 0 {
        return sequential();
    }
    let Ok(busy) = pool.busy.try_lock() else {
        return sequential();
    };
    // SAFETY: the lifetime is erased only for the duration of this call, which waits below
    // until every task has finished with `f`.
    let erased: &'static Task =
        unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync + '_), &'static Task>(f) };
    let mut mode = Mode::current();
    // The previous job has finished (it was this pool's last, and `run` waited for it): no
    // thread reads these fields until the claim word below names the new job.
    pool.f.store(&erased as *const &Task as *mut &Task, SeqCst);
    pool.mode.store(mode.bits(), SeqCst);
    pool.pending.store(tasks, SeqCst);
    pool.panicked.store(false, SeqCst);
    let job = Claim(pool.claim.load(SeqCst)).job().wrapping_add(1);
    let claim = Claim::new(job, tasks, 0);
    pool.claim.store(claim.0, SeqCst);
    if pool.sleeping.load(SeqCst) > 0 {
        // A worker going to sleep holds the lock from its last look at the claim word until
        // it waits: taken here, the notification cannot fall between the two.
        let _guard = pool.sleep.lock().unwrap_or_else(|e| e.into_inner());
        pool.wake.notify_all();
    }
    work(pool, claim, &mut mode);
    if !spin_until(|| pool.pending.load(SeqCst) == 0) {
        let mut guard = pool.done_lock.lock().unwrap_or_else(|e| e.into_inner());
        pool.waiting.store(true, SeqCst);
        while pool.pending.load(SeqCst) > 0 {
            guard = pool.done.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
        pool.waiting.store(false, SeqCst);
    }
    let panicked = pool.panicked.load(SeqCst);
    // Released before panicking, which would poison it and leave every later call sequential.
    drop(busy);
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
    fn more_tasks_than_a_claim_word_holds_run_once_each() {
        let tasks = 3 * MAX_TASKS + 7;
        let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
        run(tasks, &|i| {
            hits[i].fetch_add(1, Ordering::Relaxed);
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
    }

    /// Jobs back to back, of varying sizes, each task writing its own slot of the caller's
    /// stack: a worker that took a task of a finished job, or ran one twice, would show here.
    #[test]
    fn back_to_back_jobs_each_run_exactly_their_tasks() {
        for round in 0..20_000usize {
            let tasks = 2 + round % 7;
            let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            run(tasks, &|i| {
                hits[i].fetch_add(round, Ordering::Relaxed);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == round),
                "round {round}"
            );
        }
    }

    #[test]
    fn a_panicking_task_is_reported_and_the_pool_survives() {
        let caught = std::panic::catch_unwind(|| {
            run(4, &|i| {
                if i == 3 {
                    panic!("task 3");
                }
            })
        });
        assert!(caught.is_err());
        let total = AtomicUsize::new(0);
        run(5, &|i| {
            total.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(total.load(Ordering::Relaxed), 10);
        if pool().workers > 0 {
            // Still shared with a worker: task 0 sees task 1 start while it runs, which a
            // sequential run (the fallback of a poisoned pool) never lets happen. Other tests
            // may hold the pool meanwhile, so a few tries.
            let shared = (0..50).any(|_| {
                let started = AtomicUsize::new(0);
                let saw = AtomicUsize::new(0);
                run(2, &|_| {
                    started.fetch_add(1, Ordering::SeqCst);
                    let t = Instant::now();
                    while started.load(Ordering::SeqCst) < 2
                        && t.elapsed() < Duration::from_millis(100)
                    {
                        std::hint::spin_loop();
                    }
                    if started.load(Ordering::SeqCst) == 2 {
                        saw.fetch_add(1, Ordering::SeqCst);
                    }
                });
                saw.load(Ordering::SeqCst) == 2
            });
            assert!(shared, "the pool ran every job sequentially");
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
