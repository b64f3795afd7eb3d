//! (stage under construction)

pub mod gemm;
pub mod im2col;
pub mod jitmod;
pub mod math;
