//! Synced appends from 1, 16 and 256 concurrent submitters (group commit),
//! threads waiting for `submit` and tokio tasks awaiting it, against
//! raw sled with one flush + fdatasync per event and per 256.
use std::fs::File;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use execution_ledger::Ledger;

mod common;

use common::scenarios::sample_submission;

const EVENTS: u64 = 2_048;

fn group_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("durable append");
    group.throughput(Throughput::Elements(EVENTS));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for threads in [1u64, 16, 256] {
        group.bench_function(format!("{threads} submitters"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let scratch = common::Scratch::new();
                    let ledger = Ledger::open(scratch.path("l")).expect("open");
                    let per = EVENTS / threads;
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for t in 0..threads {
                            let ledger = ledger.clone();
                            s.spawn(move || {
                                let tenant = common::tenant();
                                for i in 0..per {
                                    ledger
                                        .submit(&tenant, sample_submission(t * per + i))
                                        .wait()
                                        .expect("submit");
                                }
                            });
                        }
                    });
                    total += start.elapsed();
                }
                total
            })
        });
    }
    for tasks in [16u64, 256] {
        group.bench_function(format!("{tasks} submitting tasks"), |b| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .expect("tokio");
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let scratch = common::Scratch::new();
                    let ledger = Ledger::open(scratch.path("l")).expect("open");
                    let per = EVENTS / tasks;
                    let start = Instant::now();
                    rt.block_on(async {
                        let handles: Vec<_> = (0..tasks)
                            .map(|t| {
                                let ledger = ledger.clone();
                                tokio::spawn(async move {
                                    let tenant = common::tenant();
                                    for i in 0..per {
                                        ledger
                                            .submit(&tenant, sample_submission(t * per + i))
                                            .spawn()
                                            .await
                                            .expect("submit");
                                    }
                                })
                            })
                            .collect();
                        for h in handles {
                            h.await.expect("a submitting task");
                        }
                    });
                    total += start.elapsed();
                }
                total
            })
        });
    }
    for batch in [1u64, 256] {
        group.bench_function(format!("raw sled, flush + fdatasync per {batch}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let scratch = common::Scratch::new();
                    let db = common::raw_sled(&scratch.path("raw"));
                    let tree = db.open_tree("events").expect("tree");
                    let file = File::open(scratch.path("raw").join("db")).expect("sled's file");
                    let record = common::sample_record();
                    let start = Instant::now();
                    for seq in 1..=EVENTS {
                        tree.insert(seq.to_be_bytes(), record.as_slice())
                            .expect("insert");
                        if seq % batch == 0 {
                            db.flush().expect("flush");
                            file.sync_data().expect("fdatasync");
                        }
                    }
                    total += start.elapsed();
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
