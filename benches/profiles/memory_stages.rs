//! Peak and current memory after each stage of opening and using a ledger:
//! `cargo run --release --example memory_stages -- DIR CACHE_BYTES`.
use execution_ledger::{Durability, Ledger};

fn rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .filter(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("DIR");
    let cache: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(4 << 20);
    println!("start: {}", rss());
    {
        let db = sled::Config::new()
            .path(format!("{dir}/sled"))
            .cache_capacity(cache)
            .open()
            .unwrap();
        println!("raw sled open: {}", rss());
        drop(db);
    }
    let l = Ledger::builder(&dir)
        .durability(Durability::Buffered)
        .cache_bytes(cache)
        .open()
        .unwrap();
    println!("ledger open: {}", rss());
    let _ = l.queue(None);
    for _ in 0..1000 {
        if let Some(c) = l.claim(None).wait().unwrap() {
            l.complete(c.execution_id, c.attempt, serde_json::Value::Null)
                .wait()
                .unwrap();
        }
    }
    println!("after claims: {}", rss());
}
