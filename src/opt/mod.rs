//! Graph-to-graph passes.

pub mod dce;
