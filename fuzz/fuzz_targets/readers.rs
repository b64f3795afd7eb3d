//! (b) The IDX, CSV, text and safetensors readers on arbitrary bytes: see
//! `tests/fuzzing/readers.rs`.
#![no_main]

#[path = "../../tests/fuzzing/readers.rs"]
mod readers;

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    readers::check_bytes(bytes);
});
