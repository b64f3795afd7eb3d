//! Whether a call of a few rows (batch-1 inference) runs faster on the calling thread alone or
//! split over the worker threads, decided by timing both on the machine at hand.
//!
//! At batch 1 a kernel takes a few microseconds, and splitting it saves at most half of that,
//! while handing the other half to a worker costs transfers of cache lines between the cores:
//! about 0.7 µs for the hand-off itself on an Intel Xeon (`cargo bench --bench workers`), and
//! then the transfer of what each core wrote and the other reads. No fixed threshold fits
//! every machine: the MLP's batch-1 inference (784-128-10) ran in 3.1–3.5 µs split over two
//! cores of an AMD Zen 4, but on an AMD Zen 1 and on an Intel Xeon (Emerald Rapids) took
//! 4.0–6.4 µs split against 2.8–5.0 µs on one thread. So the executor times its first calls of
//! each small batch size, alternating one thread and all of them, keeps the faster, and looks
//! again every [`RETUNE`] calls, since a shared machine's phases change.
//!
//! The choice changes no result: every kernel sums each element in the same order whatever the
//! thread count (`tests/jit_vs_interp/threads.rs` checks the bits).

use std::time::Duration;

/// Batch sizes up to this are tuned; larger ones always use every thread (their kernels split
/// over the batch, with work enough per thread to repay a hand-off many times).
pub const MAX_BATCH: usize = 4;
/// Calls timed with each choice: the fastest call of each is compared, which a noisy neighbour
/// slowing some of them does not move.
const TRIALS: u32 = 8;
/// Calls after which a choice is timed again.
const RETUNE: u32 = 20_000;

/// The choices made so far, per batch size.
#[derive(Debug, Default)]
pub struct Tuner {
    sizes: Vec<Size>,
}

#[derive(Debug)]
struct Size {
    batch: usize,
    /// Calls since this size was (re)tuned.
    calls: u32,
    /// Fastest call on one thread, and on all.
    fastest: [Duration; 2],
    /// Whether one thread won, once both have had their [`TRIALS`].
    alone: Option<bool>,
}

impl Tuner {
    /// The threads for the next call of `batch` rows with `threads` available, and whether to
    /// time it (and [`Tuner::record`] the time).
    pub fn threads(&mut self, batch: usize, threads: usize) -> (usize, bool) {
        if threads <= 1 || batch > MAX_BATCH {
            return (threads, false);
        }
        let i = match self.sizes.iter().position(|s| s.batch == batch) {
            Some(i) => i,
            None => {
                self.sizes.push(Size {
                    batch,
                    calls: 0,
                    fastest: [Duration::MAX; 2],
                    alone: None,
                });
                self.sizes.len() - 1
            }
        };
        let s = &mut self.sizes[i];
        match s.alone {
            Some(alone) => {
                s.calls += 1;
                if s.calls >= RETUNE {
                    s.calls = 0;
                    s.fastest = [Duration::MAX; 2];
                    s.alone = None;
                }
                (if alone { 1 } else { threads }, false)
            }
            // Alternated, so that both see the same phase of the machine.
            None => (
                if s.calls.is_multiple_of(2) {
                    1
                } else {
                    threads
                },
                true,
            ),
        }
    }

    /// Records that a call of `batch` rows on `used` threads (of [`Tuner::threads`], timed)
    /// took `took`.
    pub fn record(&mut self, batch: usize, used: usize, took: Duration) {
        let Some(s) = self.sizes.iter_mut().find(|s| s.batch == batch) else {
            return;
        };
        if s.alone.is_some() {
            return;
        }
        let k = usize::from(used > 1);
        s.fastest[k] = s.fastest[k].min(took);
        s.calls += 1;
        if s.calls >= 2 * TRIALS {
            // Ties go to one thread, which leaves the other cores free.
            s.alone = Some(s.fastest[0] <= s.fastest[1]);
            s.calls = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `calls` calls of `batch` rows through the tuner, each taking `time(threads)`;
    /// returns the threads of the last.
    fn drive(t: &mut Tuner, batch: usize, calls: u32, time: impl Fn(usize) -> u64) -> usize {
        let mut last = 0;
        for _ in 0..calls {
            let (threads, timed) = t.threads(batch, 2);
            if timed {
                t.record(batch, threads, Duration::from_nanos(time(threads)));
            }
            last = threads;
        }
        last
    }

    #[test]
    fn keeps_the_faster_choice_per_batch_size() {
        let mut t = Tuner::default();
        // Batch 1: one thread is faster; batch 2: two are.
        assert_eq!(
            drive(&mut t, 1, 2 * TRIALS + 5, |th| if th == 1 {
                3000
            } else {
                5000
            }),
            1
        );
        assert_eq!(
            drive(&mut t, 2, 2 * TRIALS + 5, |th| if th == 1 {
                9000
            } else {
                6000
            }),
            2
        );
        // Each kept without timing.
        assert_eq!(t.threads(1, 2), (1, false));
        assert_eq!(t.threads(2, 2), (2, false));
    }

    #[test]
    fn compares_the_fastest_calls_and_alternates_while_timing() {
        let mut t = Tuner::default();
        let mut seen = Vec::new();
        for call in 0..2 * TRIALS {
            let (threads, timed) = t.threads(1, 2);
            assert!(timed);
            seen.push(threads);
            // One thread is usually slower, but its fastest call beats every split one.
            let ns = match (threads, call) {
                (1, 0) => 2000,
                (1, _) => 9000,
                _ => 4000,
            };
            t.record(1, threads, Duration::from_nanos(ns));
        }
        assert_eq!(seen[..4], [1, 2, 1, 2]);
        assert_eq!(t.threads(1, 2), (1, false));
    }

    #[test]
    fn larger_batches_and_one_thread_are_left_alone() {
        let mut t = Tuner::default();
        assert_eq!(t.threads(MAX_BATCH + 1, 2), (2, false));
        assert_eq!(t.threads(1, 1), (1, false));
        assert!(t.sizes.is_empty());
    }

    #[test]
    fn looks_again_after_retune_calls() {
        let mut t = Tuner::default();
        drive(
            &mut t,
            1,
            2 * TRIALS,
            |th| if th == 1 { 3000 } else { 5000 },
        );
        for _ in 0..RETUNE - 1 {
            assert_eq!(t.threads(1, 2), (1, false));
        }
        // The machine changed: splitting is now faster.
        assert_eq!(t.threads(1, 2).0, 1);
        assert_eq!(
            drive(&mut t, 1, 2 * TRIALS + 1, |th| if th == 1 {
                8000
            } else {
                4000
            }),
            2
        );
    }
}
