//! Shared helpers of the criterion benches: scratch directories, sizes
//! from the environment, and the scenarios of `ledger bench` (the same
//! file, included) to prepare ledgers with.
#![allow(dead_code)]

use std::path::PathBuf;

pub mod scenarios;

/// A scratch directory that is removed when dropped.
pub struct Scratch(pub tempfile::TempDir);

impl Scratch {
    pub fn new() -> Self {
        Scratch(tempfile::tempdir().expect("a temporary directory"))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

/// A size from the environment variable `name`, else `default`
/// (e.g. `BENCH_BIG=1000000 cargo bench --bench claim`).
pub fn size(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

pub fn tenant() -> execution_ledger::TenantId {
    "bench".parse().expect("a valid tenant")
}

/// A raw sled database with the ledger's default cache.
pub fn raw_sled(path: &std::path::Path) -> sled::Db {
    sled::Config::new()
        .path(path)
        .cache_capacity(execution_ledger::LedgerBuilder::DEFAULT_CACHE_BYTES)
        .open()
        .expect("sled opens")
}

/// A record of the size the ledger writes for a sample submission.
pub fn sample_record() -> Vec<u8> {
    vec![b'x'; 370]
}
