//! The worker crash test: eight worker processes — four `ledger worker
//! --exec` and four `examples/worker.py` — over one `ledger serve`, while
//! executions are submitted in batches and two workers at a time are
//! SIGKILLed at random moments and replaced, several times.
//!
//! At the end: every acknowledged submission exists, each execution has
//! exactly one terminal event and the output its input asks for, every
//! attempt after the first is preceded by a `recovered` whose reason is
//! `lease_expired` (no other failure happens here), and `verify` passes.
//!
//! `LEDGER_WORKER_CRASH_N` sets the executions (5,000 by default; 100,000
//! for the long run), `LEDGER_WORKER_CRASH_SEED` the kill schedule's seed.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use execution_ledger::{BackgroundExecutionStatus, EventKind, ExecutionId, Ledger, RecoveryReason};
use serde_json::{json, Value};

mod common;
use common::server::{client, json_of, Server};
use common::{check_log, env_count, Rng};

/// Short leases, so that a killed worker's attempts come back soon.
const LEASE_MS: &str = "1000";
const BATCH: u64 = 250;

fn spawn_worker(server: &Server, slot: usize, generation: u32) -> Child {
    let name = format!("w{slot}-g{generation}");
    let mut cmd = if slot.is_multiple_of(2) {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ledger"));
        c.args(["--server", &server.url, "worker", "--callable", "work"])
            .args(["--exec", "tr a-z A-Z", "--concurrency", "4"])
            .args(["--lease-ms", LEASE_MS, "--name", &name]);
        c
    } else {
        let mut c = Command::new("python3");
        c.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/worker.py"))
            .args(["--server", &server.url, "--callable", "work=upper"])
            .args([
                "--concurrency",
                "4",
                "--lease-ms",
                LEASE_MS,
                "--name",
                &name,
            ]);
        c
    };
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn python3() -> bool {
    Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_lose_nothing_and_every_retry_says_its_lease_ran_out() {
    // CI has Python 3; a missing one is a failure, not a skip.
    assert!(
        python3(),
        "python3 is missing: the worker crash test needs it for examples/worker.py"
    );
    let total = env_count("LEDGER_WORKER_CRASH_N", 5_000);
    let seed = env_count("LEDGER_WORKER_CRASH_SEED", 0x5eed_1e55);
    let mut rng = Rng(seed.max(1));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let c = client();
    let mut workers: Vec<Child> = (0..8).map(|slot| spawn_worker(&server, slot, 0)).collect();
    let mut generation = 0;

    // Submit in batches while killing: every acknowledged id is kept.
    let mut acknowledged: HashMap<String, String> = HashMap::new();
    let mut submitted = 0;
    let mut kills = 0;
    let mut next_kill = Instant::now() + Duration::from_millis(300 + rng.below(900));
    let started = Instant::now();
    // Kills go on while the queue drains, at least six rounds in all.
    let deadline = Instant::now() + Duration::from_secs(120 + total / 50);
    loop {
        if submitted < total {
            let n = BATCH.min(total - submitted);
            let batch: Vec<Value> = (submitted..submitted + n)
                .map(|i| {
                    json!({"callableName": "work", "input": format!("job-{i}-abc"),
                           "config": {"retry": {"maxAttempts": 20, "initialDelayMs": 0}}})
                })
                .collect();
            let (status, v) = json_of(
                c.post(server.url("/v1/executions/batch"))
                    .json(&json!({"tenantId": "acme", "executions": batch}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(status, 201, "{v}");
            for e in v["executions"].as_array().unwrap() {
                acknowledged.insert(
                    e["executionId"].as_str().unwrap().to_owned(),
                    e["input"].as_str().unwrap().to_owned(),
                );
            }
            submitted += n;
        } else {
            let (_, stats) = json_of(c.get(server.url("/v1/stats")).send().await.unwrap()).await;
            let live = &stats["live"];
            if live["queued"] == 0 && live["running"] == 0 && kills >= 6 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not drained in time (seed {seed}): {live}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if Instant::now() >= next_kill {
            generation += 1;
            let first = rng.below(8) as usize;
            let second = (first + 1 + rng.below(7) as usize) % 8;
            for slot in [first, second] {
                workers[slot].kill().unwrap(); // SIGKILL
                workers[slot].wait().unwrap();
                workers[slot] = spawn_worker(&server, slot, generation);
            }
            kills += 1;
            next_kill = Instant::now() + Duration::from_millis(300 + rng.below(900));
        }
    }
    let took = started.elapsed();
    for w in &mut workers {
        let _ = Command::new("kill")
            .args(["-TERM", &w.id().to_string()])
            .status();
    }
    for w in &mut workers {
        let _ = w.wait();
    }
    assert!(server.stop().success());

    // The log, opened after the server stopped.
    let ledger = Ledger::open(&data).unwrap();
    let terminal = check_log(&ledger, 0);
    assert_eq!(terminal.len() as u64, total, "one execution per submission");
    let mut second_attempts = 0;
    let mut recovered = 0;
    let mut last_recovery: HashMap<ExecutionId, bool> = HashMap::new();
    for event in ledger.events(1, None) {
        let event = event.unwrap();
        let id = event.execution_id;
        match &event.kind {
            EventKind::Recovered { reason, .. } => {
                assert_eq!(
                    *reason,
                    Some(RecoveryReason::LeaseExpired),
                    "seq {}: {id} recovered for another reason",
                    event.seq
                );
                recovered += 1;
                last_recovery.insert(id, true);
            }
            EventKind::Started { attempt, .. } if *attempt > 1 => {
                assert_eq!(
                    last_recovery.remove(&id),
                    Some(true),
                    "seq {}: attempt {attempt} of {id} is not preceded by a recovered",
                    event.seq
                );
                second_attempts += 1;
            }
            EventKind::RetryScheduled { .. } => {
                panic!("seq {}: a retry without a lost lease", event.seq)
            }
            _ => {}
        }
    }
    let ids: HashSet<ExecutionId> = terminal.keys().copied().collect();
    let mut completed = 0;
    for (id, input) in &acknowledged {
        let id: ExecutionId = id.parse().unwrap();
        assert!(ids.contains(&id), "acknowledged {id} is not in the log");
        assert_eq!(terminal[&id], 1, "{id} has no terminal event");
        let e = ledger.get(id).unwrap();
        if e.status == BackgroundExecutionStatus::Completed {
            assert_eq!(e.output, Some(json!(input.to_uppercase())), "{id}");
            completed += 1;
        }
    }
    ledger.verify().unwrap();
    eprintln!(
        "worker crash test: {total} executions, {completed} completed, {kills} kill rounds ({} workers killed), \
         {recovered} attempts recovered after their lease ran out, {second_attempts} later attempts, \
         drained in {:.1} s (seed {seed})",
        kills * 2,
        took.as_secs_f64()
    );
    assert_eq!(
        completed as u64, total,
        "every execution completed (20 attempts each)"
    );
}
