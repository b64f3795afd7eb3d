//! Running a checked program: loading data, initializing parameters, batching, the training loop,
//! checkpoints, prediction and text sampling. Everything here works through the
//! [`crate::exec::Executor`] and [`crate::exec::Updater`] traits, so the JIT and the reference
//! interpreter are interchangeable.

pub mod backend;
pub mod batch;
pub mod checkpoint;
pub mod data;
pub mod init;
pub mod optim;
pub mod rng;
pub mod train;
