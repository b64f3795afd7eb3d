//! Time per compiled step, for `nnc bench --profile`: which kernels a training step spends its
//! time in, named by the IR node they compute (the question a sampling profiler answers badly
//! here, since JIT code has no symbols for it to attribute samples to).
//!
//! Off by default and free when off (one branch per step). When [`enable`]d, every [`Jit`]
//! compiled afterwards clocks each step of every run (and the optimizer updates fused after
//! it) and adds its totals to a process-wide table when it is dropped; [`take`] empties the
//! table.
//!
//! [`Jit`]: super::Jit

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

static ENABLED: AtomicBool = AtomicBool::new(false);
static TOTALS: Mutex<BTreeMap<String, Entry>> = Mutex::new(BTreeMap::new());

/// What one step of one graph cost in all.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Entry {
    pub calls: u64,
    pub time: Duration,
}

/// Clocks the steps of the graphs compiled from now on.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Adds the totals of one graph's steps (`label`, calls, time) to the table.
pub fn record(steps: impl IntoIterator<Item = (String, Entry)>) {
    let mut t = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    for (label, e) in steps {
        let total = t.entry(label).or_default();
        total.calls += e.calls;
        total.time += e.time;
    }
}

/// The table so far, most expensive first, and empties it.
pub fn take() -> Vec<(String, Entry)> {
    let t = std::mem::take(&mut *TOTALS.lock().unwrap_or_else(|e| e.into_inner()));
    let mut v: Vec<(String, Entry)> = t.into_iter().collect();
    v.sort_by(|a, b| b.1.time.cmp(&a.1.time).then_with(|| a.0.cmp(&b.0)));
    v
}
