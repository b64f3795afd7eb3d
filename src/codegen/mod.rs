//! (stage under construction)

pub mod gemm;
pub mod jitmod;
pub mod math;
