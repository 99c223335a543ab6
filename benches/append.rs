//! Appends with each durability, against raw sled inserts of the same size.
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use execution_ledger::{Durability, Ledger};

mod common;

use common::scenarios::sample_submission;

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    for (name, durability) in [
        ("buffered", Durability::Buffered),
        ("flushed", Durability::Flushed),
        ("synced", Durability::Synced),
    ] {
        let scratch = common::Scratch::new();
        let ledger = Ledger::builder(scratch.path("l"))
            .durability(durability)
            .open()
            .expect("open");
        let tenant = common::tenant();
        let mut i = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                ledger
                    .submit(&tenant, sample_submission(i))
                    .wait()
                    .expect("submit")
            })
        });
    }
    let scratch = common::Scratch::new();
    let db = common::raw_sled(&scratch.path("raw"));
    let tree = db.open_tree("events").expect("tree");
    let record = common::sample_record();
    let mut seq = 0u64;
    // A submit writes its record only (the per-execution index gets an
    // entry when the execution settles).
    group.bench_function("raw sled insert (record)", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                seq += 1;
                tree.insert(seq.to_be_bytes(), record.as_slice())
                    .expect("insert");
            }
            start.elapsed()
        })
    });
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
