//! Durable jobs through the runtime: submit, claim, run a no-op callable,
//! complete (three synced events a job).
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use execution_ledger::{bench::sample_submission, Ledger, Runtime};

mod common;

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
                total += rt.block_on(async {
                    let runtime = Arc::new(
                        Runtime::builder(ledger)
                            .workers(64)
                            .register("noop", |_, _| async { Ok(serde_json::Value::Null) })
                            .start()
                            .await
                            .expect("start"),
                    );
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..32u64)
                        .map(|s| {
                            let runtime = runtime.clone();
                            tokio::spawn(async move {
                                for i in 0..JOBS / 32 {
                                    let mut job = sample_submission(s * 1000 + i);
                                    job.callable_name = "noop".into();
                                    let h = runtime
                                        .submit(&common::tenant(), job)
                                        .await
                                        .expect("submit");
                                    h.result().await.expect("finished");
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("a submitter");
                    }
                    let took = start.elapsed();
                    runtime
                        .shutdown(Duration::from_secs(5))
                        .await
                        .expect("shutdown");
                    took
                });
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, end_to_end);
criterion_main!(benches);
