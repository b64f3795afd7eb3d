//! (a) The parser and checker on arbitrary text: see `tests/fuzzing/source.rs`.
#![no_main]

#[path = "../../tests/fuzzing/source.rs"]
mod source;

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    source::check_source(&String::from_utf8_lossy(bytes));
});
