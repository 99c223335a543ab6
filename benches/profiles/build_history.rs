//! Builds a ledger of FINISHED finished and LIVE queued executions, with
//! the default snapshots: `cargo run --release --example build_history -- DIR FINISHED LIVE`.
use execution_ledger::LedgerBuilder;

#[path = "../common/scenarios.rs"]
#[allow(dead_code)]
mod scenarios;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "history-ledger".into());
    let finished: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let live: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(2_000);
    scenarios::build_history(
        std::path::Path::new(&dir),
        finished,
        live,
        LedgerBuilder::DEFAULT_SNAPSHOT_EVERY,
    )
    .expect("build");
}
