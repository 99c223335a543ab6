//! Crash loop through the real runtime: a child process (this test binary
//! in child mode) runs workers over a synced ledger — retries, failures,
//! cancellations, deferred executions with callbacks to a real HTTP server
//! on 127.0.0.1 — while submitting more; the parent SIGKILLs it at random
//! moments (during open and recovery, mid-append, mid-callback), restarts
//! it, and after every cycle checks: every acknowledged submission exists,
//! `verify` passes (gap-free, chained, index and snapshots right), the
//! projection rebuilt on open equals a fold from scratch, no execution has
//! two terminal events, and no execution ever had two attempts running at
//! once. At the end a last child drains the ledger and every execution is
//! finished exactly once.
//!
//! `LEDGER_CRASH_LOOP_CYCLES` sets the number of cycles (default 50; see
//! tests/README.md for the long run).

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

mod common;

use common::{check_log, env_count, http_receiver, run_until_killed, Rng};
use execution_ledger::{
    BackgroundExecutionMode, BackgroundExecutionStatus, ExecutionError, ExecutionId, Ledger,
    RetryConfig, Runtime, Submission, TenantId,
};

const CHILD_DIR: &str = "LEDGER_CRASH_LOOP_DIR";
const CALLBACK_URL: &str = "LEDGER_CRASH_LOOP_CALLBACK";
const DRAIN: &str = "LEDGER_CRASH_LOOP_DRAIN";

/// Child mode: runs only when the parent set `LEDGER_CRASH_LOOP_DIR`.
#[test]
fn crash_loop_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    println!(); // end libtest's "test crash_loop_child ... " line
    let callback = std::env::var(CALLBACK_URL).expect("a callback url");
    let drain = std::env::var(DRAIN).is_ok();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let ledger = Ledger::builder(&dir).snapshot_every(64).open().unwrap();
        println!("opened");
        let runtime = Runtime::builder(ledger.clone())
            .workers(8)
            .register_builtins()
            .register("work", |input, ctx| async move {
                let input = input.unwrap_or_default();
                let ms: u64 = input
                    .split(':')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(1);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                if input.starts_with("flaky") && ctx.attempt < 2 {
                    return Err(ExecutionError::new("flaky", "first attempt fails"));
                }
                Ok(serde_json::json!({ "input": input, "attempt": ctx.attempt }))
            })
            .callbacks(Duration::from_secs(2), Duration::from_millis(5))
            .idle_poll(Duration::from_millis(10))
            .start()
            .await
            .unwrap();
        println!("started");
        if drain {
            // Deferred ones whose child died between submit and release.
            for held in ledger.waiting(None).into_iter().filter(|e| e.is_held()) {
                runtime.release(held.execution_id).await.unwrap();
            }
            runtime.wait_idle().await;
            runtime.shutdown(Duration::from_secs(5)).await.unwrap();
            println!("drained");
            return;
        }
        let tenants: Vec<TenantId> = ["acme", "globex", "initech"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        let mut submitted = Vec::new();
        for i in 0u64.. {
            let mut s = Submission::new("work");
            s.config.priority = (i * 37 % 100) as u8;
            s.config.retry = Some(RetryConfig {
                max_attempts: 3,
                initial_delay_ms: 5,
                backoff_multiplier: 2.0,
                max_delay_ms: 50,
            });
            s.input = Some(match i % 5 {
                0 => format!("flaky:{}", i % 7),
                1 => format!("slow:{}", 5 + i % 20),
                _ => format!("quick:{}", i % 3),
            });
            if i % 7 == 3 {
                s.config.mode = BackgroundExecutionMode::Deferred;
                s.config.callback_url = Some(callback.clone());
            }
            if i % 11 == 5 {
                s.config.timeout_ms = 3; // slow ones time out, then retry
            }
            let tenant = &tenants[(i % 3) as usize];
            let h = runtime.submit(tenant, s).await.unwrap();
            println!("submitted {}", h.id());
            submitted.push(h.id());
            if i % 7 == 3 {
                runtime.release(h.id()).await.unwrap();
            }
            if i % 13 == 6 {
                // Cancel the one before; it may be queued, running or done.
                let _ = runtime.cancel(submitted[submitted.len() - 2], None).await;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
}

#[test]
fn the_runtime_survives_a_crash_loop() {
    let cycles = env_count("LEDGER_CRASH_LOOP_CYCLES", 50);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let (url, callbacks) = http_receiver(|n| if n % 4 == 3 { 500 } else { 200 });
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut acknowledged: HashSet<ExecutionId> = HashSet::new();
    let child = |drain: bool| {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "--exact",
            "crash_loop_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .env(CALLBACK_URL, &url);
        if drain {
            cmd.env(DRAIN, "1");
        }
        cmd
    };
    let mut during_open = 0;
    for cycle in 0..cycles {
        let wait = match cycle % 5 {
            0 => rng.below(15), // while opening and recovering
            _ => 40 + rng.below(300),
        };
        let lines = run_until_killed(&mut child(false), Duration::from_millis(wait));
        if !lines.iter().any(|l| l == "started") {
            during_open += 1;
        }
        acknowledged.extend(
            lines
                .iter()
                .filter_map(|l| l.strip_prefix("submitted "))
                .map(|id| id.parse::<ExecutionId>().unwrap()),
        );

        let ledger = Ledger::open(dir.path())
            .unwrap_or_else(|e| panic!("cycle {cycle}: reopen failed: {e}"));
        ledger
            .verify()
            .unwrap_or_else(|e| panic!("cycle {cycle}: verify failed: {e}"));
        ledger
            .check_projection()
            .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
        let terminal = check_log(&ledger, cycle);
        for id in &acknowledged {
            assert!(
                terminal.contains_key(id),
                "cycle {cycle}: acknowledged {id} lost"
            );
        }
    }

    // Drain: a last child runs everything left to the end.
    let drained = child(true)
        .stderr(std::process::Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&drained.stdout);
    assert!(drained.status.success(), "the drain failed: {out}");
    let ledger = Ledger::open(dir.path()).unwrap();
    let report = ledger.verify().unwrap();
    let terminal = check_log(&ledger, cycles);
    let mut by_status: HashMap<BackgroundExecutionStatus, u64> = HashMap::new();
    for (id, ended) in &terminal {
        assert_eq!(*ended, 1, "{id} did not finish exactly once");
        let e = ledger.get(*id).unwrap();
        assert!(e.is_finished());
        *by_status.entry(e.status).or_default() += 1;
    }
    assert!(acknowledged.iter().all(|id| terminal.contains_key(id)));
    assert!(
        !acknowledged.is_empty(),
        "the children acknowledged nothing"
    );
    eprintln!(
        "{cycles} crash cycles ({during_open} killed before the runtime started): {} acknowledged \
         submissions, {} executions, {} events verified, {} callbacks received; finished: {by_status:?}",
        acknowledged.len(),
        terminal.len(),
        report.events,
        callbacks.lock().unwrap().len(),
    );
}
