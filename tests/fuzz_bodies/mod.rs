//! The bodies of the fuzz targets, written once and run two ways: by
//! cargo-fuzz (`fuzz/fuzz_targets/*.rs` include this module by path) and
//! over the committed corpus by `cargo test --test fuzz_corpus`.
//!
//! Each body takes arbitrary bytes and panics when, and only when, a
//! property of the crate does not hold.

pub mod checks;
mod event_json;
mod record_decoder;
pub mod state_machine;

pub use event_json::event_json;
pub use record_decoder::record_decoder;
pub use state_machine::state_machine;
