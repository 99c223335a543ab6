//! Crash test of redaction: a child process (this same test binary, re-run
//! in child mode) settles executions whose input and output carry a secret
//! and redacts every other one as soon as it settles, printing each
//! acknowledgement; the parent kills it with SIGKILL at random moments —
//! some while it is still opening and finishing what the last one left —
//! reopens the ledger and checks that each redaction happened completely or
//! not at all: an execution with a `redacted` event has no payload in any
//! answer and none of its records' keys left in the key file; one without
//! has all of its payloads and keys; every acknowledged redaction is there;
//! and `verify` passes.
//!
//! On PostgreSQL (`LEDGER_TEST_BACKEND=postgres`) the keys are rows of
//! `ledger_keys`, and a redaction also leaves that table owed a rewrite
//! until one runs: after each cycle, the next open runs what a kill left
//! owed.
//!
//! `LEDGER_REDACTION_CRASH_CYCLES` sets the number of cycles (default 20).

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

mod common;

use common::Rng;
use execution_ledger::{EventKind, ExecutionId, Ledger, Submission, TenantId};

const CHILD_DIR: &str = "LEDGER_REDACTION_CRASH_CHILD_DIR";
const SECRET: &str = "secret-of";

/// Child mode: does nothing unless the parent set the directory.
#[test]
fn redaction_crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    // libtest has printed "test redaction_crash_child ... " without a
    // newline: end it.
    println!();
    let ledger = Ledger::builder(&dir).snapshot_every(7).open().unwrap();
    println!("opened {}", ledger.head().seq);
    ledger.recover_abandoned().wait().unwrap();
    let tenant: TenantId = "acme".parse().unwrap();
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let (ledger, tenant) = (ledger.clone(), tenant.clone());
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let mut s = Submission::new("mail");
                    s.input = Some(format!("{SECRET} {w}-{i}"));
                    s.context = Some([("to".to_string(), format!("{SECRET} {w}-{i}"))].into());
                    ledger.submit(&tenant, s).wait().unwrap();
                    // Claims whichever is next: the other thread's, or one a
                    // kill left running and recovery queued again.
                    let Some(e) = ledger.claim(Some("w")).wait().unwrap() else {
                        continue;
                    };
                    let output = serde_json::json!({ "sent": format!("{SECRET} {w}-{i}") });
                    let done = ledger.complete(e.execution_id, e.attempt, output).wait();
                    let Ok(done) = done else { continue };
                    println!("settled {}", done.execution_id);
                    if i % 2 == 0 {
                        ledger
                            .redact(done.execution_id, "erasure", None)
                            .wait()
                            .unwrap();
                        println!("redacted {}", done.execution_id);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

/// Whether each record among `seqs` that has a key still has it: sled's
/// key file has a slot for each (`None` once destroyed); PostgreSQL's
/// table has a row while the key lives, so there a destroyed key is
/// counted from the records that carry payloads (`pg`: the seqs of those
/// and the slots of the keys, read once per cycle).
fn keys_of(store: &common::postgres::TestStore, pg: &PgKeys, seqs: &[u64]) -> Vec<Option<()>> {
    if store.url().is_none() {
        let keys = execution_ledger::fuzzing::payload_keys(store.path(), seqs).unwrap();
        return keys.into_iter().map(|k| k.map(|_| ())).collect();
    }
    seqs.iter()
        .filter(|s| pg.carrying.contains(s))
        .map(|s| pg.held.contains(s).then_some(()))
        .collect()
}

/// What the database at `url` holds: the seqs of the records that carry
/// payloads, the slots of the keys, and the transaction that last wrote
/// each record (`xmin`). In this child's executions, the submission and
/// the completion carry payloads (started, recovered and redacted records
/// carry none).
#[derive(Default)]
struct PgKeys {
    carrying: HashSet<u64>,
    held: HashSet<u64>,
    written_by: HashMap<u64, u64>,
}

fn pg_keys(url: &str) -> PgKeys {
    let pg = common::postgres::server();
    let rows = |sql: &str| -> Vec<Vec<u64>> {
        pg.sql(url, sql)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split('|').map(|v| v.trim().parse().unwrap()).collect())
            .collect()
    };
    let set = |sql: &str| rows(sql).into_iter().map(|r| r[0]).collect();
    PgKeys {
        carrying: set("SELECT seq FROM ledger_log WHERE kind IN ('queued', 'completed')"),
        held: set("SELECT slot FROM ledger_keys WHERE slot > 0"),
        written_by: rows("SELECT seq, xmin::text FROM ledger_log")
            .into_iter()
            .map(|r| (r[0], r[1]))
            .collect(),
    }
}

#[test]
fn a_redaction_killed_at_any_moment_happened_completely_or_not_at_all() {
    let cycles = common::env_count("LEDGER_REDACTION_CRASH_CYCLES", 20);
    let store = common::store();
    let dir = store.location();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut settled: HashSet<ExecutionId> = HashSet::new();
    let mut acknowledged: HashSet<ExecutionId> = HashSet::new();
    let (mut redacted_seen, mut kept_seen, mut keys_checked) = (0, 0, 0);
    for cycle in 0..cycles {
        // One cycle in four is killed within its first milliseconds: while
        // it opens and finishes what the last kill cut short.
        let wait = if cycle % 4 == 1 {
            rng.below(8)
        } else {
            30 + rng.below(200)
        };
        let lines = common::run_until_killed(
            Command::new(&exe)
                .args([
                    "--exact",
                    "redaction_crash_child",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_DIR, &dir),
            Duration::from_millis(wait),
        );
        for line in &lines {
            if let Some(id) = line.strip_prefix("settled ") {
                settled.insert(id.parse().unwrap());
            } else if let Some(id) = line.strip_prefix("redacted ") {
                acknowledged.insert(id.parse().unwrap());
            }
        }

        // Which of the settled executions are redacted, and the seqs of
        // each one's events.
        let mut checks = Vec::new();
        {
            let ledger =
                Ledger::open(&dir).unwrap_or_else(|e| panic!("cycle {cycle}: reopen failed: {e}"));
            ledger
                .verify()
                .unwrap_or_else(|e| panic!("cycle {cycle}: verify failed: {e}"));
            for id in &settled {
                let history = ledger.history(*id).unwrap();
                let redacted = history
                    .iter()
                    .any(|e| matches!(e.kind, EventKind::Redacted { .. }));
                let text = serde_json::to_string(&history).unwrap()
                    + &serde_json::to_string(&ledger.get(*id).unwrap()).unwrap();
                if redacted {
                    assert!(
                        !text.contains(SECRET),
                        "cycle {cycle}: {id} is redacted but a payload reads: {text}"
                    );
                } else {
                    assert!(
                        !acknowledged.contains(id),
                        "cycle {cycle}: the acknowledged redaction of {id} is lost"
                    );
                    assert_eq!(
                        text.matches(SECRET).count(),
                        6,
                        "cycle {cycle}: {id} lost a payload without a redaction: {text}"
                    );
                }
                checks.push((redacted, history.iter().map(|e| e.seq).collect::<Vec<_>>()));
            }
            if let Some(url) = store.url() {
                // What a kill left owed, the open ran.
                ledger.flush().unwrap();
                let owed = "SELECT count(*) FROM ledger_meta WHERE key = 'keys-deleted'";
                assert_eq!(
                    common::postgres::server().sql(&url, owed).trim(),
                    "0",
                    "cycle {cycle}: ledger_keys is still owed a rewrite"
                );
            }
        }
        // The keys: all gone for a redacted execution, all there otherwise.
        let pg = store.url().map(|url| pg_keys(&url)).unwrap_or_default();
        for (redacted, seqs) in checks {
            let keys = keys_of(&store, &pg, &seqs);
            assert!(
                keys.len() >= 2,
                "cycle {cycle}: a submission and a completion at least"
            );
            keys_checked += keys.len();
            if redacted {
                redacted_seen += 1;
                assert!(
                    keys.iter().all(Option::is_none),
                    "cycle {cycle}: a key survived"
                );
                if store.url().is_some() {
                    // Stripped in the transaction that appended the
                    // redaction (its last seq), not in one of its own.
                    let by = |seq: &u64| pg.written_by[seq];
                    let redaction = by(seqs.last().unwrap());
                    for seq in seqs.iter().filter(|s| pg.carrying.contains(s)) {
                        assert_eq!(
                            by(seq),
                            redaction,
                            "cycle {cycle}: seq {seq} was stripped outside the transaction of its redaction (seq {})",
                            seqs.last().unwrap()
                        );
                    }
                }
            } else {
                kept_seen += 1;
                assert!(
                    keys.iter().all(Option::is_some),
                    "cycle {cycle}: a key was lost"
                );
            }
        }
    }
    eprintln!(
        "{cycles} crash cycles: {} settled, {} redactions acknowledged; checked {redacted_seen} redacted and {kept_seen} kept executions ({keys_checked} keys) over the cycles",
        settled.len(),
        acknowledged.len()
    );
    assert!(
        !acknowledged.is_empty() && settled.len() > acknowledged.len(),
        "the children redacted nothing: the test exercised nothing"
    );
}
