//! Fuzz target `record_decoder`: the body is in `tests/fuzz_bodies/`, shared with
//! the corpus test (`cargo test --test fuzz_corpus`).
#![no_main]

#[path = "../../tests/fuzz_bodies/mod.rs"]
#[allow(unused)] // the other targets' bodies
mod fuzz_bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_bodies::record_decoder(data));
