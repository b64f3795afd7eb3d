//! The IDX, CSV, text and safetensors readers never panic on arbitrary bytes: random files,
//! and the seed files of `fuzz/seeds/readers` with random bytes changed or cut off, are read or
//! refused with an error naming the file. The invariants are `fuzzing/readers.rs`, shared with
//! the `readers` fuzz target; this is its short run.

#[path = "fuzzing/config.rs"]
mod config;
#[path = "fuzzing/readers.rs"]
mod readers;

use proptest::prelude::*;

/// One valid file per reader (the first byte selects the reader, see `fuzzing/readers.rs`).
const SEEDS: &[&[u8]] = &[
    include_bytes!("../fuzz/seeds/readers/idx_images"),
    include_bytes!("../fuzz/seeds/readers/idx_split"),
    include_bytes!("../fuzz/seeds/readers/idx_split_gz"),
    include_bytes!("../fuzz/seeds/readers/csv"),
    include_bytes!("../fuzz/seeds/readers/text"),
    include_bytes!("../fuzz/seeds/readers/safetensors"),
];

#[test]
fn every_seed_file_is_read() {
    for (i, seed) in SEEDS.iter().enumerate() {
        assert!(readers::check_bytes(seed), "seed {i} is refused");
    }
}

/// Found by `changed_seeds_never_panic` when it drew at random: a checkpoint value made NaN by
/// a changed byte is read, and refused at its own shape naming the tensor (the invariant held
/// that a tensor is always found at its own shape).
#[test]
fn a_checkpoint_value_made_nan_is_refused_by_name() {
    let mut file = SEEDS[5].to_vec();
    // After the selector byte, the header's length, then the header; `w`'s values come first.
    let header = u64::from_le_bytes(file[1..9].try_into().unwrap()) as usize;
    let w = 9 + header;
    file[w..w + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(readers::check_bytes(&file));
}

proptest! {
    #![proptest_config(config::deterministic(10000))]

    #[test]
    fn random_bytes_never_panic(sel in any::<u8>(), bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut file = vec![sel];
        file.extend(bytes);
        readers::check_bytes(&file);
    }

    #[test]
    fn changed_seeds_never_panic(
        seed in 0..SEEDS.len(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        keep in any::<prop::sample::Index>(),
        cut in any::<bool>(),
    ) {
        let mut file = SEEDS[seed].to_vec();
        for (at, b) in edits {
            // Byte 0 selects the reader: leave it.
            let i = 1 + at.index(file.len() - 1);
            file[i] = b;
        }
        if cut {
            file.truncate(1 + keep.index(file.len()));
        }
        readers::check_bytes(&file);
    }
}
