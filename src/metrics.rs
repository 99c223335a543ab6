//! Counters and latency histograms of a ledger, for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Upper bounds of the histogram buckets, in microseconds.
pub const BUCKETS_US: [u64; 12] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];

/// A latency histogram with fixed buckets, updated without locks.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub(crate) fn record(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        if let Some(i) = BUCKETS_US.iter().position(|b| us <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    fn read(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let buckets = self
            .buckets
            .iter()
            .map(|b| {
                cumulative += b.load(Ordering::Relaxed);
                cumulative
            })
            .collect();
        HistogramSnapshot {
            buckets,
            count: self.count.load(Ordering::Relaxed),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// A histogram as read: cumulative counts per bucket of [`BUCKETS_US`]
/// (a count above the last bucket is only in `count`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct HistogramSnapshot {
    /// Cumulative counts, one per bucket bound.
    pub buckets: Vec<u64>,
    /// Observations.
    pub count: u64,
    /// Their sum, in microseconds.
    pub sum_us: u64,
}

/// The ledger's counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) append: Histogram,
    pub(crate) sync: Histogram,
    pub(crate) claims: AtomicU64,
}

impl Counters {
    pub(crate) fn read(&self) -> Metrics {
        Metrics {
            append_latency: self.append.read(),
            sync_latency: self.sync.read(),
            claims: self.claims.load(Ordering::Relaxed),
        }
    }
}

/// Counters since the ledger was opened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Metrics {
    /// Time to append a batch of events (sled: before syncing;
    /// PostgreSQL: the statement that appends and commits).
    pub append_latency: HistogramSnapshot,
    /// Time of one sync (sled flush, fdatasync, checkpoint), shared by the
    /// appends of a group (PostgreSQL: the commit, one per append).
    pub sync_latency: HistogramSnapshot,
    /// Executions claimed.
    pub claims: u64,
}
