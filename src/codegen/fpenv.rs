//! Subnormal floats flushed to zero while compiled kernels run.
//!
//! A multiply or add whose input or result is subnormal (below 1.18e-38 in magnitude) takes a
//! microcode assist on x86, about a hundred cycles instead of four. Training makes such values:
//! a sigmoid saturated on an image's background passes gradients of 1e-30 and less, their
//! squares in Adam's second moment fall below f32's normal range, and every product that reads
//! them crawls. The autoencoder's pre-training ran 66k samples/s over its first 600 steps and
//! 46k over the next 400; over its three epochs 52.9k, and 65.1k with subnormals flushed
//! (`nnc bench examples/autoencoder_finetune.nn --run pretrain --threads 2`, one machine).
//!
//! So every step of the JIT (`Jit`'s runs and the optimizer updates) runs with the
//! processor's flush-to-zero and denormals-are-zero modes on (MXCSR's FTZ and DAZ bits on
//! x86-64, FPCR's FZ bit on AArch64), as XLA's CPU runtime does for JAX, and as
//! `torch.set_flush_denormal(True)` does in PyTorch. Values that would be subnormal are 0, which
//! changes nothing at f32's resolution: an update smaller than 1e-38 never moves a weight. The
//! caller's mode is restored when the step returns ([`Flush`] is a scoped guard), and the
//! workers of [`super::workers`] take the mode of the thread whose job they run, so results do
//! not depend on which thread computed what. The reference interpreter computes in f64, whose
//! range holds these values.

/// While alive, subnormal inputs read as 0 and subnormal results are written as 0 on this
/// thread; dropping it restores the mode it found.
#[must_use = "the mode is restored when the guard is dropped"]
pub struct Flush {
    /// The mode to restore, where this guard changed it.
    saved: Option<Mode>,
}

impl Flush {
    /// Turns flushing on for this thread until the guard is dropped. Where it is on already
    /// (a guard inside another: a step's optimizer updates within the step) the control word
    /// is only read, neither written nor restored: XOR's steps of well under a microsecond
    /// took four such pairs of writes each (under `perf`, the fused updates' share of a
    /// million steps fell from 13.9% to 11.0% without them).
    pub fn on() -> Flush {
        let current = Mode::current();
        if current.flushes() {
            return Flush { saved: None };
        }
        current.flushing().set();
        Flush {
            saved: Some(current),
        }
    }
}

impl Drop for Flush {
    fn drop(&mut self) {
        if let Some(saved) = self.saved {
            saved.set();
        }
    }
}

/// A thread's floating-point control word (x86-64's MXCSR, AArch64's FPCR), for handing to
/// the worker threads with a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode(u64);

/// MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6).
#[cfg(target_arch = "x86_64")]
const FLUSH_BITS: u64 = (1 << 15) | (1 << 6);
/// FPCR's flush-to-zero (bit 24), which on AArch64 covers inputs as well as results.
#[cfg(target_arch = "aarch64")]
const FLUSH_BITS: u64 = 1 << 24;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const FLUSH_BITS: u64 = 0;

impl Mode {
    /// This thread's mode.
    pub fn current() -> Mode {
        #[cfg(target_arch = "x86_64")]
        {
            let mut csr: u32 = 0;
            // SAFETY: stores the 32-bit MXCSR into `csr`.
            unsafe {
                std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
            }
            Mode(csr as u64)
        }
        #[cfg(target_arch = "aarch64")]
        {
            let fpcr: u64;
            // SAFETY: reads the floating-point control register.
            unsafe {
                std::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack, preserves_flags));
            }
            Mode(fpcr)
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        Mode(0)
    }

    /// Makes this thread's mode `self`.
    pub fn set(self) {
        #[cfg(target_arch = "x86_64")]
        {
            let csr = self.0 as u32;
            // SAFETY: loads a control word read by `current` with at most the flush bits
            // changed: rounding and exception masks stay as they were.
            unsafe {
                std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, readonly, preserves_flags));
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            // SAFETY: as above, a control word read by `current` with at most FZ changed.
            unsafe {
                std::arch::asm!("msr fpcr, {}", in(reg) self.0, options(nomem, nostack, preserves_flags));
            }
        }
    }

    /// The control word, to pass through an atomic ([`Mode::from_bits`] takes it back).
    pub fn bits(self) -> u64 {
        self.0
    }

    /// The mode whose [`Mode::bits`] are `bits`.
    pub fn from_bits(bits: u64) -> Mode {
        Mode(bits)
    }

    /// This mode with subnormals flushed.
    pub fn flushing(self) -> Mode {
        Mode(self.0 | FLUSH_BITS)
    }

    /// Whether subnormals are flushed in this mode (always false where the target has no such
    /// mode).
    pub fn flushes(self) -> bool {
        FLUSH_BITS != 0 && self.0 & FLUSH_BITS == FLUSH_BITS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `a · b` computed at run time (the optimizer cannot fold it under a mode it does not see).
    fn product(a: f32, b: f32) -> f32 {
        std::hint::black_box(a) * std::hint::black_box(b)
    }

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn subnormals_are_zero_inside_the_guard_only() {
        let before = Mode::current();
        assert!(!before.flushes(), "the test thread starts in IEEE mode");
        assert!(product(1e-20, 1e-20) > 0.0, "1e-40 is a subnormal");
        {
            let _flush = Flush::on();
            assert!(Mode::current().flushes());
            assert_eq!(product(1e-20, 1e-20), 0.0);
            // A subnormal input reads as 0 (x86's DAZ; AArch64's FZ covers inputs).
            let tiny = std::hint::black_box(f32::from_bits(1));
            assert_eq!(product(tiny, 1e30), 0.0);
            // Normal numbers are untouched.
            assert_eq!(product(1e-18, 1e-18), 1e-18f32 * 1e-18f32);
        }
        assert!(!Mode::current().flushes());
        assert!(product(1e-20, 1e-20) > 0.0);
    }

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn a_guard_inside_another_leaves_the_mode_to_the_outer_one() {
        let before = Mode::current();
        assert!(!before.flushes(), "the test thread starts in IEEE mode");
        {
            let outer = Flush::on();
            assert!(outer.saved.is_some(), "the outer guard turned flushing on");
            {
                let inner = Flush::on();
                assert!(inner.saved.is_none(), "the inner guard writes nothing");
                assert!(Mode::current().flushes());
            }
            // The inner guard found flushing on and restores nothing.
            assert!(Mode::current().flushes());
            assert_eq!(product(1e-20, 1e-20), 0.0);
        }
        assert_eq!(Mode::current(), before);
    }
}
