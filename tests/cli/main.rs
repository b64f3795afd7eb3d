//! The `nnc` binary as a user runs it: one module per behaviour, each test failing without the
//! behaviour it names (command-line values refused, NaN and anomaly detection, bad data and
//! checkpoint files, memory limits, logging and plotting, progress of long commands, resuming
//! after SIGKILL and Ctrl-C, and the commands themselves). Exit codes: 0 ok, 1 user error,
//! 2 internal error, 130 interrupted; nothing may panic.

mod activations;
mod anomaly;
mod arguments;
mod bad_files;
mod commands;
mod common;
mod early_stopping;
mod logging;
mod memory;
mod outputs;
mod plateau;
mod plot;
mod progress;
mod resume;
mod seed;
