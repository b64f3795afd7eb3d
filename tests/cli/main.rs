//! The `nnc` binary as a user runs it (assert_cmd): one module per behaviour, each test failing
//! without the behaviour it names. Exit codes: 0 ok, 1 user error, 2 internal error, 130
//! interrupted; nothing may panic.

mod anomaly;
mod bad_files;
mod commands;
mod common;
mod logging;
mod memory;
mod plot;
