//! Synced appends from many threads, for profiling group commit:
//! `cargo run --release --example durable_profile -- DIR THREADS PER_THREAD [tasks]`
//! (`tasks`: tokio tasks awaiting `submit` instead of threads waiting for it).
use execution_ledger::Ledger;

#[path = "../common/scenarios.rs"]
#[allow(dead_code)]
mod scenarios;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "profile-ledger".into());
    let threads: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(256);
    let per: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(40);
    let _ = std::fs::remove_dir_all(&dir);
    let ledger = Ledger::open(&dir).expect("open");
    let tasks = args.next().as_deref() == Some("tasks");
    let start = std::time::Instant::now();
    if tasks {
        let rt = tokio::runtime::Runtime::new().expect("tokio");
        rt.block_on(async {
            let mut all = Vec::new();
            for t in 0..threads {
                let ledger = ledger.clone();
                all.push(tokio::spawn(async move {
                    let tenant = "bench".parse().unwrap();
                    for i in 0..per {
                        ledger
                            .submit(&tenant, scenarios::sample_submission(t * per + i))
                            .spawn()
                            .await
                            .expect("submit");
                    }
                }));
            }
            for t in all {
                t.await.expect("a task");
            }
        });
    } else {
        std::thread::scope(|s| {
            for t in 0..threads {
                let ledger = ledger.clone();
                s.spawn(move || {
                    let tenant = "bench".parse().unwrap();
                    for i in 0..per {
                        ledger
                            .submit(&tenant, scenarios::sample_submission(t * per + i))
                            .wait()
                            .expect("submit");
                    }
                });
            }
        });
    }
    let took = start.elapsed();
    let n = threads * per;
    println!(
        "{n} synced appends from {threads} threads in {took:?}: {:.0}/s",
        n as f64 / took.as_secs_f64()
    );
    let m = ledger.metrics();
    println!(
        "{} syncs ({:.1} events each), {:.0} µs each on average; appends {:.1} µs each",
        m.sync_latency.count,
        n as f64 / m.sync_latency.count.max(1) as f64,
        m.sync_latency.sum_us as f64 / m.sync_latency.count.max(1) as f64,
        m.append_latency.sum_us as f64 / m.append_latency.count.max(1) as f64,
    );
}
