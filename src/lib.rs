//! nnc: a compiler for neural networks.
//!
//! The pipeline, one module a stage:
//! [`syntax`] (pest grammar → AST) → [`check`] (names, shapes, diagnostics → [`ir`]) →
//! [`autodiff`] (backward graph) → [`opt`] (passes) → [`codegen`] (Cranelift JIT) →
//! [`runtime`] (data, optimizers, training loop) → [`cli`].
//! [`interp`] is the plain-Rust reference interpreter the JIT is tested against.

pub mod autodiff;
pub mod check;
pub mod cli;
pub mod codegen;
pub mod diag;
pub mod exec;
pub mod interp;
pub mod ir;
pub mod opt;
pub mod runtime;
pub mod syntax;
