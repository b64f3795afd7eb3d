//! nnc: a compiler for neural networks.
//!
//! The pipeline, one module a stage:
//! [`syntax`] (pest grammar → AST) → [`check`] (names, shapes, diagnostics → [`ir`]) →
//! [`autodiff`] (backward graph) → [`opt`] (passes) → [`codegen`] (Cranelift JIT) →
//! [`runtime`] (data, optimizers, training loop) → [`cli`].
//! [`interp`] is the plain-Rust reference interpreter the JIT is tested against.
//!
//! The documentation names private items where they explain a public one; build it with
//! `cargo doc --document-private-items` to follow those links.
#![allow(rustdoc::private_intra_doc_links)]

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
