//! Crash test: a child process (this same test binary, re-run in child
//! mode) submits, claims and completes with synced durability and prints
//! every acknowledgement; the parent kills it with SIGKILL at random moments
//! — some while it is still opening and replaying — reopens the ledger, and
//! checks that every acknowledged submit and completion is there, `verify`
//! passes (seqs gap-free, chain intact, index and snapshots right), and the
//! projection rebuilt on open equals a fold from scratch.
//!
//! `LEDGER_CRASH_CYCLES` sets the number of cycles (default 25).

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

mod common;

use common::Rng;
use execution_ledger::{BackgroundExecutionStatus, ExecutionId, Ledger, Submission, TenantId};

const CHILD_DIR: &str = "LEDGER_CRASH_CHILD_DIR";

/// Child mode: does nothing unless the parent set `LEDGER_CRASH_CHILD_DIR`.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    // libtest has printed "test crash_child ... " without a newline: end it.
    println!();
    let ledger = Ledger::builder(&dir).snapshot_every(50).open().unwrap();
    println!("opened {}", ledger.head().seq);
    ledger.recover_abandoned().wait().unwrap();
    let submitters: Vec<_> = (0..3)
        .map(|t| {
            let ledger = ledger.clone();
            std::thread::spawn(move || {
                let tenant: TenantId = ["acme", "globex", "initech"][t].parse().unwrap();
                for i in 0u64.. {
                    let mut s = Submission::new("echo");
                    s.config.priority = (i % 5) as u8 * 20;
                    s.input = Some(format!("{t}-{i}"));
                    let submitted = ledger.submit(&tenant, s).wait().unwrap();
                    println!("submitted {}", submitted.execution.execution_id);
                }
            })
        })
        .collect();
    let worker = {
        let ledger = ledger.clone();
        std::thread::spawn(move || loop {
            match ledger.claim(Some("crash-worker")).wait().unwrap() {
                Some(e) => {
                    let done = ledger
                        .complete(e.execution_id, e.attempt, serde_json::json!(e.input))
                        .wait()
                        .unwrap();
                    println!("completed {}", done.execution_id);
                }
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        })
    };
    for t in submitters {
        t.join().unwrap();
    }
    worker.join().unwrap();
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let cycles = common::env_count("LEDGER_CRASH_CYCLES", 25);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut submitted: HashSet<ExecutionId> = HashSet::new();
    let mut completed: HashSet<ExecutionId> = HashSet::new();
    let mut killed_while_opening = 0;
    for cycle in 0..cycles {
        // One cycle in four is killed within its first few milliseconds:
        // during open and replay.
        let wait = if cycle % 4 == 1 {
            rng.below(8)
        } else {
            20 + rng.below(250)
        };
        let lines = common::run_until_killed(
            Command::new(&exe)
                .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
                .env(CHILD_DIR, dir.path()),
            Duration::from_millis(wait),
        );
        if !lines.iter().any(|l| l.starts_with("opened")) {
            killed_while_opening += 1;
        }
        for line in lines.iter() {
            if let Some(id) = line.strip_prefix("submitted ") {
                submitted.insert(id.parse().unwrap());
            } else if let Some(id) = line.strip_prefix("completed ") {
                completed.insert(id.parse().unwrap());
            }
        }

        let ledger = Ledger::open(dir.path())
            .unwrap_or_else(|e| panic!("cycle {cycle}: reopen failed: {e}"));
        let report = ledger
            .verify()
            .unwrap_or_else(|e| panic!("cycle {cycle}: verify failed: {e}"));
        ledger
            .check_projection()
            .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
        let mut statuses: HashMap<BackgroundExecutionStatus, usize> = HashMap::new();
        for id in &submitted {
            let e = ledger
                .get(*id)
                .unwrap_or_else(|e| panic!("cycle {cycle}: acknowledged {id} lost: {e}"));
            *statuses.entry(e.status).or_default() += 1;
        }
        for id in &completed {
            let e = ledger.get(*id).unwrap();
            assert_eq!(
                e.status,
                BackgroundExecutionStatus::Completed,
                "cycle {cycle}: acknowledged completion of {id} lost"
            );
        }
        assert!(report.executions as usize >= submitted.len());
    }
    eprintln!(
        "{cycles} crash cycles ({killed_while_opening} killed before open finished): \
         {} acknowledged submits and {} acknowledged completions all present",
        submitted.len(),
        completed.len()
    );
    assert!(
        !submitted.is_empty() && !completed.is_empty(),
        "the children acknowledged nothing: the test exercised nothing"
    );
}
