//! Synced appends from many threads, for profiling group commit:
//! `cargo run --release --example durable_profile -- DIR THREADS PER_THREAD`.
use execution_ledger::{bench, Ledger};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "profile-ledger".into());
    let threads: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(256);
    let per: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(40);
    let _ = std::fs::remove_dir_all(&dir);
    let ledger = Ledger::open(&dir).expect("open");
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let ledger = ledger.clone();
            s.spawn(move || {
                let tenant = "bench".parse().unwrap();
                for i in 0..per {
                    ledger
                        .submit(&tenant, bench::sample_submission(t * per + i))
                        .expect("submit");
                }
            });
        }
    });
    let took = start.elapsed();
    let n = threads * per;
    println!(
        "{n} synced appends from {threads} threads in {took:?}: {:.0}/s",
        n as f64 / took.as_secs_f64()
    );
}
