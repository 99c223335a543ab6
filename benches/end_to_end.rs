//! Durable jobs through the runtime: submit, claim, run a no-op callable,
//! complete (three synced events a job); the scenario of `ledger bench`.
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use execution_ledger::Ledger;

mod common;

use common::scenarios;

const JOBS: u64 = 1_024;

fn end_to_end(c: &mut Criterion) {
    let mut group = c.benchmark_group("end to end");
    group.throughput(Throughput::Elements(JOBS));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    group.bench_function("durable no-op jobs, 64 workers", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let scratch = common::Scratch::new();
                let ledger = Ledger::open(scratch.path("l")).expect("open");
                total += rt
                    .block_on(scenarios::noop_jobs(ledger, 64, 32, JOBS / 32))
                    .expect("jobs run");
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, end_to_end);
criterion_main!(benches);
