//! Running a checked program: loading data, initializing parameters, batching, the training loop,
//! checkpoints, prediction and text sampling. Everything here works through the
//! [`crate::exec::Executor`] and [`crate::exec::Updater`] traits, so the JIT and the reference
//! interpreter are interchangeable.
//!
//! - [`train::Session`] runs a program's `train` blocks in order with a [`train::Backend`]
//!   ([`train::Backend::jit`] or [`train::Backend::interpreter`]) and [`train::TrainOptions`];
//!   each run gives a [`train::RunSummary`], and [`train::Session::params`] its final parameters.
//! - [`data::load`] reads a `data` block into a [`data::Dataset`]; [`data::load_eval`] only the
//!   split `nnc eval` measures; [`data::vocabulary`] gives a text source's characters.
//! - [`checkpoint::save`] / [`checkpoint::Checkpoint::load`] / [`checkpoint::load_params`]:
//!   safetensors files named by parameter path.
//! - [`predict::read_inputs`] + [`predict::predict`] (or [`predict::outputs`]) for
//!   `nnc predict`; [`sample::sample`] for `nnc sample`; [`train::evaluate`] for `nnc eval`.
//! - [`dist::Comm`]: the processes of a data-parallel run (one, or an MPI job's ranks).

pub mod atomic;
pub mod backend;
pub mod batch;
pub mod checkpoint;
pub mod data;
pub mod dist;
pub mod init;
pub mod memory;
pub mod optim;
pub mod predict;
pub mod rng;
pub mod sample;
pub mod train;
