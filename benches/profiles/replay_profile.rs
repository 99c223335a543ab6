//! Builds a ledger without snapshots once, then opens it (replaying every
//! event), for profiling replay:
//! `cargo run --release --example replay_profile -- DIR FINISHED`.
use execution_ledger::Ledger;

#[path = "../common/scenarios.rs"]
#[allow(dead_code)]
mod scenarios;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "profile-ledger".into());
    let finished: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    if !std::path::Path::new(&dir).exists() {
        scenarios::build_history(std::path::Path::new(&dir), finished, 1_000, 0).expect("build");
    }
    let start = std::time::Instant::now();
    let ledger = Ledger::builder(&dir)
        .snapshot_every(0)
        .open()
        .expect("open");
    let took = start.elapsed();
    let n = ledger.head().seq;
    println!(
        "opened {n} events in {took:?}: {:.0}/s",
        n as f64 / took.as_secs_f64()
    );
}
