//! (c) Random well-typed graphs through the JIT and the interpreter, results compared: see
//! `tests/fuzzing/graphgen.rs`.
#![no_main]

#[path = "../../tests/fuzzing/graphgen.rs"]
mod graphgen;

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    if let Err(e) = graphgen::check_bytes(bytes) {
        panic!("{e}");
    }
});
