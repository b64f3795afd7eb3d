//! A request to stop training, set from a signal handler (the CLI installs one for SIGINT): the
//! training loop polls it after every step, writes a resumable checkpoint and returns
//! [`super::TrainError::Interrupted`]. Setting it is a single atomic store, which is
//! async-signal-safe.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks the running training loop to stop after its current step (safe to call from a signal
/// handler).
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Whether a stop has been requested.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Withdraws a request (so that a later run in the same process trains again).
pub fn clear() {
    REQUESTED.store(false, Ordering::SeqCst);
}
