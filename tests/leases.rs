//! Leases on a real sled ledger on disk, with a clock the test moves:
//! claims by callable, heartbeats, expiry into `recovered`, fencing by
//! attempt, cancellation told at the heartbeat, identical repeats, and
//! leases across a reopen.

use std::time::Duration;

use execution_ledger::{
    BackgroundExecutionStatus as Status, Claim, Clock, CommandError, EventKind, ExecutionError,
    Ledger, RecoveryReason, Refusal, RetryConfig, Submission, TenantId,
};

mod common;
use common::TestClock;

fn acme() -> TenantId {
    "acme".parse().unwrap()
}

fn open(dir: &std::path::Path, clock: &TestClock) -> Ledger {
    Ledger::builder(dir).clock(clock.clone()).open().unwrap()
}

fn job(callable: &str, attempts: u32) -> Submission {
    let mut s = Submission::new(callable);
    s.config.retry = Some(RetryConfig {
        max_attempts: attempts,
        initial_delay_ms: 0,
        ..RetryConfig::default()
    });
    s
}

/// Submits `s` for acme; its id.
fn submitted(ledger: &Ledger, s: Submission) -> execution_ledger::ExecutionId {
    ledger
        .submit(&acme(), s)
        .wait()
        .unwrap()
        .execution
        .execution_id
}

fn leased(worker: &str, callables: &[&str], max: usize) -> Claim {
    Claim::new()
        .worker(worker)
        .callables(callables.iter().copied())
        .max(max)
        .lease(Duration::from_secs(10))
}

fn stale(e: CommandError) -> Refusal {
    match e {
        CommandError::Transition(t) => t.refusal,
        other => panic!("expected a refusal, got {other}"),
    }
}

#[test]
fn a_claim_takes_only_its_callables_in_queue_order_up_to_max_under_a_lease() {
    let dir = common::store();
    let clock = TestClock::new();
    let ledger = open(dir.path(), &clock);
    let ids: Vec<_> = ["resize", "crop", "resize", "resize"]
        .iter()
        .map(|c| submitted(&ledger, job(c, 1)))
        .collect();
    let head = ledger.head().seq;
    let claimed = ledger
        .claim_with(leased("w-1", &["resize"], 2))
        .wait()
        .unwrap();
    let got: Vec<_> = claimed.iter().map(|e| e.execution_id).collect();
    assert_eq!(got, vec![ids[0], ids[2]]);
    assert_eq!(ledger.head().seq, head + 2, "one started event each");
    let lease = ledger.lease(ids[0]).unwrap();
    assert_eq!(lease.attempt, 1);
    assert_eq!(lease.worker.as_deref(), Some("w-1"));
    assert_eq!(lease.until, clock.now() + chrono::Duration::seconds(10));
    match &ledger.history(ids[0]).unwrap()[1].kind {
        EventKind::Started {
            worker, lease_ms, ..
        } => {
            assert_eq!(worker.as_deref(), Some("w-1"));
            assert_eq!(*lease_ms, Some(10_000));
        }
        other => panic!("expected started, got {other:?}"),
    }
    // crop waits for a worker that runs it.
    assert_eq!(ledger.callables_without_worker(), vec!["crop".to_owned()]);
    let bad = ledger.claim_with(leased("w-1", &["resize"], 0)).wait();
    assert!(
        matches!(&bad, Err(CommandError::Invalid(m)) if m.starts_with("max must be")),
        "{bad:?}"
    );
    let bad = ledger
        .claim_with(
            Claim::new()
                .callables(["x"])
                .lease(Duration::from_millis(5)),
        )
        .wait();
    assert!(
        matches!(&bad, Err(CommandError::Invalid(m)) if m.starts_with("leaseMs must be")),
        "{bad:?}"
    );
    assert_eq!(
        ledger.head().seq,
        head + 2,
        "a refused claim appends nothing"
    );
}

#[test]
fn an_expired_lease_is_recovered_with_its_reason_and_the_late_answer_is_refused() {
    let dir = common::store();
    let clock = TestClock::new();
    let ledger = open(dir.path(), &clock);
    let id = submitted(&ledger, job("resize", 2));
    ledger
        .claim_with(leased("w-1", &["resize"], 1))
        .wait()
        .unwrap();
    // A heartbeat keeps it: 8 s in, extended to 18 s.
    clock.advance_ms(8_000);
    let beat = ledger.heartbeat(id, 1, None).unwrap();
    assert!(!beat.cancel_requested);
    assert_eq!(
        beat.lease_until,
        clock.now() + chrono::Duration::seconds(10)
    );
    clock.advance_ms(9_000);
    assert!(ledger.expire_leases().wait().unwrap().is_empty());
    // Then the worker goes silent.
    clock.advance_ms(1_000);
    let ended = ledger.expire_leases().wait().unwrap();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].status, Status::Queued);
    assert_eq!(ended[0].error.as_ref().unwrap().code, "lease_expired");
    let history = ledger.history(id).unwrap();
    assert!(matches!(
        history.last().unwrap().kind,
        EventKind::Recovered {
            attempt: 1,
            outcome: Status::Queued,
            reason: Some(RecoveryReason::LeaseExpired)
        }
    ));
    // The second attempt runs elsewhere; the first one's answers are refused.
    let second = ledger
        .claim_with(leased("w-2", &["resize"], 1))
        .wait()
        .unwrap();
    assert_eq!(second[0].attempt, 2);
    let head = ledger.head().seq;
    let late = ledger.complete(id, 1, serde_json::json!("late")).wait();
    assert_eq!(
        stale(late.unwrap_err()),
        Refusal::StaleAttempt {
            given: 1,
            current: 2
        }
    );
    assert_eq!(
        stale(ledger.heartbeat(id, 1, None).unwrap_err()),
        Refusal::StaleAttempt {
            given: 1,
            current: 2
        }
    );
    assert_eq!(ledger.head().seq, head, "nothing appended");
    // The last attempt's lease runs out too: failed by the policy.
    clock.advance_ms(10_000);
    let ended = ledger.expire_leases().wait().unwrap();
    assert_eq!(ended[0].status, Status::Failed);
    assert_eq!(ledger.verify().unwrap().events, ledger.head().seq);
}

#[test]
fn a_cancel_while_a_leased_attempt_runs_is_told_at_its_heartbeat_and_its_complete_refused() {
    let dir = common::store();
    let clock = TestClock::new();
    let ledger = open(dir.path(), &clock);
    let id = submitted(&ledger, job("resize", 1));
    ledger
        .claim_with(leased("w-1", &["resize"], 1))
        .wait()
        .unwrap();
    ledger
        .cancel(id, Some("no longer needed".into()))
        .wait()
        .unwrap();
    assert!(ledger.lease(id).is_none(), "the cancel ends the lease");
    let beat = ledger.heartbeat(id, 1, None).unwrap();
    assert!(beat.cancel_requested);
    let head = ledger.head().seq;
    let refused = ledger.complete(id, 1, serde_json::json!(1)).wait();
    assert_eq!(
        stale(refused.unwrap_err()),
        Refusal::Status(Status::Cancelled)
    );
    assert_eq!(ledger.head().seq, head);
}

#[test]
fn an_identical_repeat_of_complete_or_fail_is_answered_as_the_first_time_and_appends_nothing() {
    let dir = common::store();
    let clock = TestClock::new();
    let ledger = open(dir.path(), &clock);
    let a = submitted(&ledger, job("resize", 1));
    let b = submitted(&ledger, job("resize", 3));
    ledger
        .claim_with(leased("w-1", &["resize"], 2))
        .wait()
        .unwrap();
    let first = ledger
        .complete(a, 1, serde_json::json!({"w": 1}))
        .wait()
        .unwrap();
    let error = ExecutionError::new("busy", "try later");
    let failed = ledger.fail(b, 1, error.clone()).wait().unwrap();
    assert_eq!(failed.status, Status::Queued, "retried by the policy");
    let head = ledger.head().seq;
    let again = ledger
        .complete(a, 1, serde_json::json!({"w": 1}))
        .wait()
        .unwrap();
    assert_eq!(again, first);
    let again = ledger.fail(b, 1, error).wait().unwrap();
    assert_eq!(again, failed);
    assert_eq!(ledger.head().seq, head, "the repeats appended nothing");
    // A different answer is no repeat: refused.
    let other = ledger.complete(a, 1, serde_json::json!({"w": 2})).wait();
    assert_eq!(
        stale(other.unwrap_err()),
        Refusal::Status(Status::Completed)
    );
}

#[test]
fn leased_attempts_survive_a_reopen_with_a_full_lease_and_unleased_ones_are_recovered() {
    let dir = common::store();
    let clock = TestClock::new();
    let (remote, local);
    {
        let ledger = open(dir.path(), &clock);
        remote = submitted(&ledger, job("resize", 2));
        ledger
            .claim_with(leased("w-1", &["resize"], 1))
            .wait()
            .unwrap();
        local = submitted(&ledger, job("echo", 2));
        ledger.claim(Some("in-process")).wait().unwrap().unwrap();
    }
    clock.advance_ms(60_000);
    let ledger = open(dir.path(), &clock);
    let recovered = ledger.recover_abandoned().wait().unwrap();
    if dir.backend() == common::Backend::Postgres {
        // On a log many processes share every attempt is leased: the
        // in-process one too, so no process takes it for its own lost one.
        assert!(recovered.is_empty(), "{recovered:?}");
        assert!(ledger.lease(local).is_some());
    } else {
        assert_eq!(
            recovered.iter().map(|e| e.execution_id).collect::<Vec<_>>(),
            vec![local],
            "only the unleased attempt counts as lost with its process"
        );
        assert!(matches!(
            ledger.history(local).unwrap().last().unwrap().kind,
            EventKind::Recovered {
                reason: Some(RecoveryReason::ProcessStopped),
                ..
            }
        ));
    }
    assert_eq!(ledger.get(remote).unwrap().status, Status::Running);
    assert_eq!(
        ledger.lease(remote).unwrap().until,
        clock.now() + chrono::Duration::seconds(10)
    );
    // Its worker heartbeats the new process and keeps it.
    assert!(ledger.heartbeat(remote, 1, None).is_ok());
    ledger
        .complete(remote, 1, serde_json::json!("done"))
        .wait()
        .unwrap();
}

#[test]
fn a_leased_attempt_past_its_timeout_is_timed_out() {
    let dir = common::store();
    let clock = TestClock::new();
    let ledger = open(dir.path(), &clock);
    let mut s = job("resize", 1);
    s.config.timeout_ms = 2_000;
    let id = submitted(&ledger, s);
    ledger
        .claim_with(leased("w-1", &["resize"], 1))
        .wait()
        .unwrap();
    clock.advance_ms(1_000);
    ledger.heartbeat(id, 1, None).unwrap();
    clock.advance_ms(1_000);
    let ended = ledger.expire_leases().wait().unwrap();
    assert_eq!(ended[0].status, Status::Timeout);
    assert_eq!(
        stale(ledger.heartbeat(id, 1, None).unwrap_err()),
        Refusal::Status(Status::Timeout)
    );
}

#[test]
fn a_worker_counts_as_live_for_its_callables_until_it_stops_claiming() {
    let dir = common::store();
    let clock = TestClock::new();
    let ledger = open(dir.path(), &clock);
    ledger.submit(&acme(), job("resize", 1)).wait().unwrap();
    assert_eq!(ledger.callables_without_worker(), vec!["resize".to_owned()]);
    // Claims that find nothing of its own still say it is there.
    assert!(ledger
        .claim_with(leased("w-1", &["crop", "resize-not"], 1))
        .wait()
        .unwrap()
        .is_empty());
    assert_eq!(ledger.callables_without_worker(), vec!["resize".to_owned()]);
    ledger
        .claim_with(leased("w-2", &["resize", "other"], 1))
        .wait()
        .unwrap();
    ledger.submit(&acme(), job("resize", 1)).wait().unwrap();
    assert!(ledger.callables_without_worker().is_empty());
    // Silent past its lease and the slack: no longer live.
    clock.advance_ms(60_000);
    assert_eq!(ledger.callables_without_worker(), vec!["resize".to_owned()]);
}
