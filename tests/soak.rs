//! A bounded soak through the runtime over a synced ledger: executions
//! across four tenants with random failures, retries, timeouts and
//! cancellations, submitted with bounded concurrency. Checks that nothing is
//! lost, that each execution ends exactly once, that `verify` passes, and
//! that memory stays flat once the live set is steady; prints throughput and
//! p50/p99 submit-to-finish latency.
//!
//! `LEDGER_SOAK_EXECUTIONS` sets the size (default 3,000; tests/README.md
//! has the 200,000 run).

mod common;
#[path = "../benches/common/scenarios.rs"]
#[allow(dead_code)]
mod scenarios;

use std::sync::Arc;
use std::time::{Duration, Instant};

use execution_ledger::{
    BackgroundExecutionStatus, ExecutionError, Ledger, RetryConfig, Runtime, Submission, TenantId,
};
use scenarios::peak_rss_kb;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

#[test]
fn a_bounded_soak_loses_nothing_and_ends_everything_once() {
    let total: u64 = std::env::var("LEDGER_SOAK_EXECUTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3_000);
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::builder(dir.path())
        .cache_bytes(8 * 1024 * 1024)
        .open()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut latencies, took, samples, cancelled) = rt.block_on(async {
        let runtime = Arc::new(
            Runtime::builder(ledger.clone())
                .workers(32)
                .register("work", |input, ctx| async move {
                    let input = input.unwrap_or_default();
                    match input.as_str() {
                        "fail" => Err(ExecutionError::new("bad", "fails for good")),
                        "flaky" if ctx.attempt < 2 => {
                            Err(ExecutionError::new("flaky", "first attempt fails"))
                        }
                        "slow" => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok(serde_json::json!("late"))
                        }
                        _ => Ok(serde_json::json!(input)),
                    }
                })
                .idle_poll(Duration::from_millis(10))
                .start()
                .await
                .unwrap(),
        );
        let tenants: Vec<TenantId> = ["t1", "t2", "t3", "t4"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
        let start = Instant::now();
        // Latencies come back through a channel: holding every task's
        // handle would keep every finished record in memory.
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
        let mut samples = Vec::new();
        let mut cancelled = 0u64;
        for i in 0..total {
            let permit = in_flight.clone().acquire_owned().await.unwrap();
            let mut s = Submission::new("work");
            s.config.priority = (i * 31 % 256) as u8;
            s.input = Some(
                match i % 20 {
                    0 | 1 => "fail",
                    2..=4 => "flaky",
                    5 => "slow",
                    _ => "quick",
                }
                .to_owned(),
            );
            if i % 20 == 5 {
                s.config.timeout_ms = 10; // times out, retried, times out
            }
            s.config.retry = Some(RetryConfig {
                max_attempts: 2,
                initial_delay_ms: 5,
                backoff_multiplier: 2.0,
                max_delay_ms: 20,
            });
            let submitted = Instant::now();
            let handle = runtime.submit(&tenants[(i % 4) as usize], s).await.unwrap();
            if i % 20 == 7 {
                let id = handle.id();
                if runtime.cancel(id, Some("soak".into())).await.is_ok() {
                    cancelled += 1;
                }
            }
            let done_tx = done_tx.clone();
            tokio::spawn(async move {
                let done = handle.result().await.expect("finished");
                assert!(done.is_finished());
                drop(permit);
                let _ = done_tx.send(submitted.elapsed());
            });
            if i % (total / 20).max(1) == 0 {
                samples.push(rss_kb());
            }
        }
        drop(done_tx);
        let mut latencies = Vec::new();
        while let Some(latency) = done_rx.recv().await {
            latencies.push(latency);
        }
        assert_eq!(latencies.len() as u64, total, "every execution finished");
        let took = start.elapsed();
        runtime.wait_idle().await;
        runtime.shutdown(Duration::from_secs(5)).await.unwrap();
        samples.push(rss_kb());
        (latencies, took, samples, cancelled)
    });

    // Nothing lost, everything ended exactly once.
    let terminal = common::check_log(&ledger, 0);
    assert_eq!(terminal.len() as u64, total);
    assert!(terminal.values().all(|n| *n == 1));
    let report = ledger.verify().unwrap();
    let mut statuses = std::collections::HashMap::new();
    for e in ledger.events(1, None) {
        let e = e.unwrap();
        if let execution_ledger::EventKind::Queued(_) = e.kind {
            *statuses
                .entry(ledger.get(e.execution_id).unwrap().status)
                .or_insert(0u64) += 1;
        }
    }
    assert_eq!(statuses.values().sum::<u64>(), total);
    assert!(statuses[&BackgroundExecutionStatus::Completed] > total / 2);

    // Flat memory: the last third of the run no higher than the middle
    // third, allowing for sled's 8 MiB cache filling up.
    let third = samples.len() / 3;
    let middle = *samples[third..2 * third].iter().max().unwrap();
    let last = *samples[2 * third..].iter().max().unwrap();
    assert!(
        last <= middle + middle / 4 + 8 * 1024,
        "memory grew: {samples:?} kB"
    );

    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    eprintln!(
        "soak: {total} executions ({cancelled} cancelled) in {took:.1?}: {:.0}/s; submit-to-finish p50 {:?} p99 {:?}; \
         {} events verified; RSS samples {:?} kB (peak {} kB); final statuses {statuses:?}",
        total as f64 / took.as_secs_f64(),
        p(0.5),
        p(0.99),
        report.events,
        samples,
        peak_rss_kb().unwrap_or(0),
    );
}
