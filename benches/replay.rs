//! Opening a ledger: replay without snapshots against raw iterate + decode,
//! and with snapshots, small against big (`BENCH_BIG` finished executions,
//! default 30,000), the same 1,000 live.
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use execution_ledger::{Ledger, LedgerBuilder};

mod common;

use common::scenarios;

fn replay(c: &mut Criterion) {
    let scratch = common::Scratch::new();
    let big = common::size("BENCH_BIG", 30_000);
    let plain = scratch.path("plain");
    scenarios::build_history(&plain, big, 1_000, 0).expect("build");
    let small = scratch.path("small");
    scenarios::build_history(&small, 3_000, 1_000, LedgerBuilder::DEFAULT_SNAPSHOT_EVERY)
        .expect("build");
    let large = scratch.path("large");
    scenarios::build_history(&large, big, 1_000, LedgerBuilder::DEFAULT_SNAPSHOT_EVERY)
        .expect("build");
    let events = 3 * big + 1_000;
    // The same records, one sled entry an event, for the raw baseline.
    let raw = scratch.path("raw");
    scenarios::one_entry_an_event(&plain, &raw);

    let mut group = c.benchmark_group("replay");
    group.throughput(criterion::Throughput::Elements(events));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("open, no snapshots", |b| {
        b.iter(|| {
            Ledger::builder(&plain)
                .snapshot_every(0)
                .open()
                .expect("open")
        })
    });
    group.bench_function("raw sled iterate + decode", |b| {
        b.iter(|| scenarios::scan_history(&raw))
    });
    group.finish();

    let mut group = c.benchmark_group("open with snapshots");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.bench_function("10k events", |b| {
        b.iter(|| Ledger::open(&small).expect("open"))
    });
    group.bench_function(format!("{events} events"), |b| {
        b.iter(|| Ledger::open(&large).expect("open"))
    });
    group.finish();
}

criterion_group!(benches, replay);
criterion_main!(benches);
