//! Appends buffered events in a loop, for profiling the append path:
//! `cargo run --release --example append_profile -- DIR N`.
use execution_ledger::{Durability, Ledger};

#[path = "../common/scenarios.rs"]
#[allow(dead_code)]
mod scenarios;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "profile-ledger".into());
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(50_000);
    let _ = std::fs::remove_dir_all(&dir);
    let ledger = Ledger::builder(&dir)
        .durability(Durability::Buffered)
        .open()
        .expect("open");
    let tenant = "bench".parse().unwrap();
    let start = std::time::Instant::now();
    for i in 0..n {
        ledger
            .submit(&tenant, scenarios::sample_submission(i))
            .wait()
            .expect("submit");
    }
    let took = start.elapsed();
    println!(
        "{n} appends in {took:?}: {:.0}/s",
        n as f64 / took.as_secs_f64()
    );
}
