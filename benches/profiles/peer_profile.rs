//! The peers' workload on sled, for profiling the runtime path (claim, run,
//! complete): `cargo run --release --example peer_profile -- DIR N [buffered]`
//! (N jobs, default 40,000; synced unless `buffered`). Prints the figures.
use execution_ledger::Durability;

#[path = "../common/scenarios.rs"]
#[allow(dead_code)]
mod scenarios;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "profile-ledger".into());
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(40_000);
    let durability = match args.next().as_deref() {
        Some("buffered") => Durability::Buffered,
        _ => Durability::Synced,
    };
    let _ = std::fs::remove_dir_all(&dir);
    let figures = scenarios::peer_workload(std::path::Path::new(&dir), n, durability)
        .expect("the peers' workload");
    println!(
        "{n} jobs ({durability:?}): enqueue {:.0} jobs/s, process {:.0} jobs/s, {:.2} events a job, {:.2} s in all",
        figures.enqueue, figures.process, figures.events_per_job, figures.total_s
    );
    let _ = std::fs::remove_dir_all(&dir);
}
