//! Reading history in a big ledger (`BENCH_BIG` finished executions,
//! default 30,000): `history` and `execution_at` of one execution, the
//! whole projection at a seq, and `verify`'s throughput.
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use execution_ledger::{At, Ledger, LedgerBuilder};

mod common;

use common::scenarios;

fn time_travel(c: &mut Criterion) {
    let scratch = common::Scratch::new();
    let big = common::size("BENCH_BIG", 30_000);
    let dir = scratch.path("l");
    scenarios::build_history(&dir, big, 1_000, LedgerBuilder::DEFAULT_SNAPSHOT_EVERY)
        .expect("build");
    let ledger = Ledger::open(&dir).expect("open");
    let head = ledger.head().seq;
    let middle = ledger
        .events(head / 2, Some(head / 2))
        .next()
        .expect("an event")
        .expect("readable")
        .execution_id;

    let mut group = c.benchmark_group("time travel");
    group.bench_function("history of one execution", |b| {
        b.iter(|| ledger.history(middle).expect("history"))
    });
    group.bench_function("execution_at a seq", |b| {
        b.iter(|| {
            ledger
                .execution_at(middle, At::Seq(head / 2))
                .expect("found")
        })
    });
    group.bench_function("projection_at a seq", |b| {
        b.iter(|| ledger.projection_at(At::Seq(head / 2)).expect("found"))
    });
    group.finish();

    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(head));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("whole log", |b| b.iter(|| ledger.verify().expect("intact")));
    group.finish();
}

criterion_group!(benches, time_travel);
criterion_main!(benches);
