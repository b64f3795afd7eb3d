//! The configuration of the short fuzzing runs of `cargo test`: the same draws on every run, so
//! that a failure reproduces and CI does not turn red on an unlucky draw (the long, exploring
//! runs are `cargo fuzz`'s, FUZZING.md). `PROPTEST_RNG_SEED=N` draws others.

use proptest::test_runner::{Config, RngSeed};

/// `cases` draws, from a fixed seed unless `PROPTEST_RNG_SEED` names one.
pub fn deterministic(cases: u32) -> Config {
    let default = Config::default();
    let rng_seed = match std::env::var_os("PROPTEST_RNG_SEED") {
        Some(_) => default.rng_seed,
        None => RngSeed::Fixed(1),
    };
    Config {
        cases,
        rng_seed,
        ..default
    }
}
