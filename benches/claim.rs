//! Claims with 1,000 queued against `BENCH_BIG` queued (default 100,000),
//! and the queue itself against the seed's algorithm.
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use execution_ledger::{BackgroundExecution, BackgroundExecutionQueue, Durability, Ledger};

mod common;

use common::scenarios;

fn claim(c: &mut Criterion) {
    let scratch = common::Scratch::new();
    let mut group = c.benchmark_group("claim");
    for queued in [1_000, common::size("BENCH_BIG", 100_000)] {
        let ledger = Ledger::builder(scratch.path(&format!("q{queued}")))
            .durability(Durability::Buffered)
            .open()
            .expect("open");
        let tenant = common::tenant();
        for i in 0..queued {
            ledger
                .submit(&tenant, scenarios::sample_submission(i))
                .wait()
                .expect("submit");
        }
        let mut i = queued;
        group.bench_function(format!("{queued} queued"), |b| {
            b.iter(|| {
                // Keep the queue at its size: one in, one out.
                i += 1;
                ledger
                    .submit(&tenant, scenarios::sample_submission(i))
                    .wait()
                    .expect("submit");
                ledger.claim(None).wait().expect("claim").expect("runnable")
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("queue at 100k");
    let sample: Vec<BackgroundExecution> = (0..100_000u64)
        .map(|i| {
            let mut e = BackgroundExecution::new(common::tenant(), "bench", Default::default());
            e.config.priority = (i * 7919 % 256) as u8;
            e
        })
        .collect();
    let mut ours = BackgroundExecutionQueue::new();
    let mut seed = scenarios::SeedQueue::default();
    for e in &sample {
        ours.enqueue(e.clone());
        seed.enqueue(e.clone());
    }
    group.bench_function("BackgroundExecutionQueue dequeue + enqueue", |b| {
        b.iter_batched(
            || sample[42].clone(),
            |e| {
                ours.dequeue();
                ours.enqueue(e);
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("seed's VecDeque dequeue + enqueue", |b| {
        b.iter_batched(
            || sample[42].clone(),
            |e| {
                seed.dequeue();
                seed.enqueue(e);
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, claim);
criterion_main!(benches);
