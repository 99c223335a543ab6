//! The durable ledger on a real sled database on disk: commands, reopen,
//! idempotency, tenants, time travel, subscriptions, verify, and the
//! errors for a directory that cannot be used.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use execution_ledger::{
    At, BackgroundExecutionMode, BackgroundExecutionStatus, Clock, CommandError, Durability,
    ErrorKind, ExecutionError, Ledger, Refusal, RetryConfig, Submission, TenantId,
};

mod common;
use common::TestClock;

fn tenant(name: &str) -> TenantId {
    name.parse().unwrap()
}

fn submission(callable: &str, priority: u8) -> Submission {
    let mut s = Submission::new(callable);
    s.config.priority = priority;
    s
}

#[test]
fn lifecycle_survives_reopen_and_verifies() {
    let dir = common::store();
    let acme = tenant("acme");
    let (a, b);
    {
        let ledger = Ledger::open(dir.path()).unwrap();
        a = ledger
            .submit(&acme, submission("echo", 10))
            .wait()
            .unwrap()
            .execution;
        b = ledger
            .submit(&acme, submission("echo", 90))
            .wait()
            .unwrap()
            .execution;
        assert_eq!(ledger.head().seq, 2);
        // Higher priority first.
        let claimed = ledger.claim(Some("w1")).wait().unwrap().unwrap();
        assert_eq!(claimed.execution_id, b.execution_id);
        assert_eq!(claimed.attempt, 1);
        assert_eq!(claimed.status, BackgroundExecutionStatus::Running);
        let done = ledger
            .complete(b.execution_id, 1, serde_json::json!({"ok": true}))
            .wait()
            .unwrap();
        assert_eq!(done.status, BackgroundExecutionStatus::Completed);
        assert_eq!(ledger.queue(None).len(), 1);
        let report = ledger.verify().unwrap();
        assert_eq!(report.events, 4);
        assert_eq!(report.executions, 2);
        assert!(report.projection_compared);
    }
    let ledger = Ledger::open(dir.path()).unwrap();
    assert_eq!(ledger.head().seq, 4);
    // The finished one is folded from its own events; the live one is in memory.
    let done = ledger.get(b.execution_id).unwrap();
    assert_eq!(done.output, Some(serde_json::json!({"ok": true})));
    let queue: Vec<_> = ledger
        .queue(None)
        .into_iter()
        .map(|e| e.execution_id)
        .collect();
    assert_eq!(queue, vec![a.execution_id]);
    let kinds: Vec<_> = ledger
        .history(b.execution_id)
        .unwrap()
        .into_iter()
        .map(|e| e.kind.name())
        .collect();
    assert_eq!(kinds, ["queued", "started", "completed"]);
    ledger.verify().unwrap();
    ledger.check_projection().unwrap();
}

#[test]
fn refused_commands_append_nothing() {
    let dir = common::store();
    let ledger = Ledger::open(dir.path()).unwrap();
    let acme = tenant("acme");
    let e = ledger
        .submit(&acme, submission("echo", 50))
        .wait()
        .unwrap()
        .execution;
    ledger
        .cancel(e.execution_id, Some("no longer needed".into()))
        .wait()
        .unwrap();
    let head = ledger.head();
    let err = ledger
        .complete(e.execution_id, 1, serde_json::json!(1))
        .wait()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot complete {}: it is cancelled", e.execution_id)
    );
    assert!(matches!(err, CommandError::Transition(_)));
    let missing = execution_ledger::ExecutionId::new();
    let err = ledger.cancel(missing, None).wait().unwrap_err();
    assert_eq!(err.to_string(), format!("{missing} not found"));
    let mut big = submission("echo", 1);
    big.input = Some("x".repeat(execution_ledger::MAX_INPUT_BYTES + 1));
    assert!(matches!(
        ledger.submit(&acme, big).wait(),
        Err(CommandError::Invalid(_))
    ));
    assert_eq!(ledger.head(), head, "nothing was appended");
}

#[test]
fn stale_attempts_are_fenced_and_failures_retry_after_backoff() {
    let dir = common::store();
    let clock = TestClock::new();
    let ledger = Ledger::builder(dir.path())
        .clock(clock.clone())
        .open()
        .unwrap();
    let mut s = submission("flaky", 50);
    s.config.retry = Some(RetryConfig {
        max_attempts: 3,
        initial_delay_ms: 1_000,
        backoff_multiplier: 2.0,
        max_delay_ms: 60_000,
    });
    let id = ledger
        .submit(&tenant("acme"), s)
        .wait()
        .unwrap()
        .execution
        .execution_id;
    let first = ledger.claim(None).wait().unwrap().unwrap();
    let retried = ledger
        .fail(id, first.attempt, ExecutionError::new("boom", "first try"))
        .wait()
        .unwrap();
    assert_eq!(retried.status, BackgroundExecutionStatus::Queued);
    assert_eq!(
        retried.not_before,
        Some(clock.now() + chrono::Duration::seconds(1))
    );
    // Waiting for its back-off: not claimable yet.
    assert!(ledger.claim(None).wait().unwrap().is_none());
    assert_eq!(ledger.waiting(None).len(), 1);
    clock.advance_ms(1_000);
    let second = ledger.claim(None).wait().unwrap().unwrap();
    assert_eq!(second.attempt, 2);
    // The first attempt answers late: refused.
    let err = ledger
        .complete(id, 1, serde_json::json!("late"))
        .wait()
        .unwrap_err();
    match err {
        CommandError::Transition(t) => {
            assert_eq!(
                t.refusal,
                Refusal::StaleAttempt {
                    given: 1,
                    current: 2
                }
            )
        }
        other => panic!("unexpected {other}"),
    }
    ledger.time_out(id, 2).wait().unwrap();
    clock.advance_ms(2_000);
    let third = ledger.claim(None).wait().unwrap().unwrap();
    assert_eq!(third.attempt, 3);
    let failed = ledger
        .fail(id, 3, ExecutionError::new("boom", "last try"))
        .wait()
        .unwrap();
    assert_eq!(failed.status, BackgroundExecutionStatus::Failed);
    let kinds: Vec<_> = ledger
        .history(id)
        .unwrap()
        .into_iter()
        .map(|e| e.kind.name())
        .collect();
    assert_eq!(
        kinds,
        [
            "queued",
            "started",
            "retry_scheduled",
            "started",
            "retry_scheduled",
            "started",
            "failed"
        ]
    );
}

#[test]
fn idempotency_keys_return_the_first_execution_and_append_nothing() {
    let dir = common::store();
    let ledger = Ledger::open(dir.path()).unwrap();
    let mut s = submission("echo", 50);
    s.idempotency_key = Some("order-42".into());
    let first = ledger.submit(&tenant("acme"), s.clone()).wait().unwrap();
    assert!(first.created);
    let head = ledger.head();
    let again = ledger.submit(&tenant("acme"), s.clone()).wait().unwrap();
    assert!(!again.created);
    assert_eq!(again.execution.execution_id, first.execution.execution_id);
    assert_eq!(ledger.head(), head);
    // Keys are per tenant.
    let other = ledger.submit(&tenant("globex"), s.clone()).wait().unwrap();
    assert!(other.created);
    drop(ledger);
    let ledger = Ledger::open(dir.path()).unwrap();
    let after_reopen = ledger.submit(&tenant("acme"), s).wait().unwrap();
    assert!(!after_reopen.created);
    assert_eq!(
        after_reopen.execution.execution_id,
        first.execution.execution_id
    );
}

#[test]
fn an_idempotency_key_reused_for_a_different_submission_is_a_conflict() {
    let dir = common::store();
    let ledger = Ledger::open(dir.path()).unwrap();
    let mut s = submission("echo", 50);
    s.idempotency_key = Some("order-7".into());
    let first = ledger.submit(&tenant("acme"), s.clone()).wait().unwrap();
    let head = ledger.head();
    // The same key with another priority, another input, another callable:
    // each a conflict naming the key and the first execution.
    let mut other_priority = s.clone();
    other_priority.config.priority = 90;
    let mut other_input = s.clone();
    other_input.input = Some("different".into());
    let mut other_callable = s.clone();
    other_callable.callable_name = "sleep".into();
    for different in [other_priority, other_input, other_callable] {
        match ledger.submit(&tenant("acme"), different).wait() {
            Err(e @ CommandError::IdempotencyConflict { .. }) => {
                let message = e.to_string();
                assert!(message.contains("\"order-7\""), "{message}");
                assert!(
                    message.contains(&first.execution.execution_id.to_string()),
                    "{message}"
                );
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert_eq!(ledger.head(), head, "nothing appended");
    }
    // The same submission again is still the first execution, settled too.
    let claimed = ledger.claim(None).wait().unwrap().unwrap();
    ledger
        .complete(claimed.execution_id, 1, serde_json::json!("ok"))
        .wait()
        .unwrap();
    drop(ledger);
    let ledger = Ledger::open(dir.path()).unwrap();
    let again = ledger.submit(&tenant("acme"), s.clone()).wait().unwrap();
    assert!(!again.created);
    assert_eq!(again.execution.execution_id, first.execution.execution_id);
    let mut changed = s;
    changed.config.timeout_ms = 5;
    assert!(matches!(
        ledger.submit(&tenant("acme"), changed).wait(),
        Err(CommandError::IdempotencyConflict { .. })
    ));
}

#[test]
fn a_callback_url_is_refused_for_executions_that_never_call_back() {
    let dir = common::store();
    let ledger = Ledger::open(dir.path()).unwrap();
    for mode in [
        BackgroundExecutionMode::FireAndForget,
        BackgroundExecutionMode::Silent,
    ] {
        let mut s = submission("echo", 50);
        s.config.mode = mode;
        s.config.callback_url = Some("https://example.com/cb".into());
        match ledger.submit(&tenant("acme"), s).wait() {
            Err(CommandError::Invalid(m)) => {
                assert!(m.contains("callback url"), "{m}");
                assert!(m.contains(&mode.to_string()), "{m}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(ledger.head().seq, 0, "nothing appended");
    let mut s = submission("echo", 50);
    s.config.mode = BackgroundExecutionMode::Deferred;
    s.config.callback_url = Some("https://example.com/cb".into());
    assert!(ledger.submit(&tenant("acme"), s).wait().unwrap().created);
}

#[test]
fn concurrent_identical_submits_create_exactly_one() {
    let dir = common::store();
    let ledger = Ledger::open(dir.path()).unwrap();
    let mut s = submission("echo", 50);
    s.idempotency_key = Some("once".into());
    let ids: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let (ledger, s) = (ledger.clone(), s.clone());
                scope.spawn(move || ledger.submit(&tenant("acme"), s).wait().unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(ids.iter().filter(|s| s.created).count(), 1);
    assert!(ids
        .iter()
        .all(|s| s.execution.execution_id == ids[0].execution.execution_id));
    assert_eq!(ledger.head().seq, 1);
}

/// Blocking callers (threads) and async callers (tokio tasks) race through
/// the same write path: idempotency holds across both, every claim is
/// unique, every acknowledged event is in the log, and the log verifies.
#[test]
fn threads_and_tasks_race_through_one_write_path() {
    let dir = common::store();
    let ledger = Ledger::open(dir.path()).unwrap();
    let keyed = |i: u64| {
        let mut s = submission("echo", (i % 5) as u8 * 20);
        s.idempotency_key = Some(format!("key-{}", i % 100));
        s
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    // 8 threads and 32 tasks submit 800 times over 100 keys.
    let mut by_key: HashMap<String, Vec<_>> = HashMap::new();
    let results = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let ledger = ledger.clone();
                scope.spawn(move || {
                    (0..50u64)
                        .map(|i| {
                            let s = keyed(t * 50 + i);
                            let key = s.idempotency_key.clone().unwrap();
                            (key, ledger.submit(&tenant("acme"), s).wait().unwrap())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let tasks = rt.block_on(async {
            let handles: Vec<_> = (0..32u64)
                .map(|t| {
                    let ledger = ledger.clone();
                    tokio::spawn(async move {
                        let mut out = Vec::new();
                        for i in 0..13u64 {
                            let s = keyed(400 + t * 13 + i);
                            let key = s.idempotency_key.clone().unwrap();
                            out.push((
                                key,
                                ledger.submit(&tenant("acme"), s).spawn().await.unwrap(),
                            ));
                        }
                        out
                    })
                })
                .collect();
            let mut all = Vec::new();
            for h in handles {
                all.extend(h.await.unwrap());
            }
            all
        });
        let mut all: Vec<_> = threads
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.extend(tasks);
        all
    });
    assert_eq!(results.len(), 8 * 50 + 32 * 13);
    for (key, submitted) in results {
        by_key.entry(key).or_default().push(submitted);
    }
    assert_eq!(by_key.len(), 100);
    for (key, subs) in &by_key {
        assert_eq!(subs.iter().filter(|s| s.created).count(), 1, "{key}");
        let id = subs[0].execution.execution_id;
        assert!(subs.iter().all(|s| s.execution.execution_id == id), "{key}");
    }
    assert_eq!(ledger.head().seq, 100);

    // Threads and tasks claim and complete until nothing is left.
    let claimed = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for w in 0..4 {
            let (ledger, claimed) = (ledger.clone(), &claimed);
            scope.spawn(move || {
                let name = format!("thread-{w}");
                while let Some(e) = ledger.claim(Some(&name)).wait().unwrap() {
                    ledger
                        .complete(e.execution_id, e.attempt, serde_json::json!(w))
                        .wait()
                        .unwrap();
                    claimed.lock().unwrap().push(e.execution_id);
                }
            });
        }
        rt.block_on(async {
            let handles: Vec<_> = (0..16)
                .map(|w| {
                    let ledger = ledger.clone();
                    tokio::spawn(async move {
                        let name = format!("task-{w}");
                        let mut mine = Vec::new();
                        while let Some(e) = ledger.claim(Some(&name)).spawn().await.unwrap() {
                            ledger
                                .complete(e.execution_id, e.attempt, serde_json::json!(w))
                                .spawn()
                                .await
                                .unwrap();
                            mine.push(e.execution_id);
                        }
                        mine
                    })
                })
                .collect();
            for h in handles {
                let mine = h.await.unwrap();
                claimed.lock().unwrap().extend(mine);
            }
        });
    });
    let mut claimed = claimed.into_inner().unwrap();
    assert_eq!(claimed.len(), 100);
    claimed.sort();
    claimed.dedup();
    assert_eq!(claimed.len(), 100, "an execution was claimed twice");
    assert_eq!(ledger.head().seq, 300);
    assert!(ledger.live().is_empty());
    ledger.verify().unwrap();

    // A command queued without blocking is carried out even when its
    // answer is never awaited, and outside any tokio runtime.
    let id = ledger
        .submit(&tenant("acme"), submission("echo", 1))
        .wait()
        .unwrap()
        .execution
        .execution_id;
    drop(ledger.cancel(id, Some("not awaited".into())).spawn());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ledger.get(id).unwrap().status != BackgroundExecutionStatus::Cancelled {
        assert!(
            std::time::Instant::now() < deadline,
            "the cancel never happened"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let answer = rt.block_on(ledger.release(id).spawn());
    assert!(
        matches!(answer, Err(CommandError::Transition(_))),
        "{answer:?}"
    );
    drop(ledger);
    let reopened = Ledger::open(dir.path()).unwrap();
    assert_eq!(reopened.head().seq, 302);
    reopened.verify().unwrap();

    // Dropping the last handle right after queueing a command carries the
    // command out and closes the ledger before the drop returns.
    let id = reopened
        .submit(&tenant("acme"), submission("echo", 1))
        .wait()
        .unwrap()
        .execution
        .execution_id;
    drop(reopened.cancel(id, None).spawn());
    drop(reopened);
    let again = Ledger::open(dir.path()).unwrap();
    assert_eq!(
        again.get(id).unwrap().status,
        BackgroundExecutionStatus::Cancelled
    );
    assert_eq!(again.head().seq, 304);
}

#[test]
fn tenants_do_not_see_each_other() {
    let dir = common::store();
    let ledger = Ledger::open(dir.path()).unwrap();
    let acme = ledger.tenant(tenant("acme"));
    let globex = ledger.tenant(tenant("globex"));
    let a = acme
        .submit(&tenant("acme"), submission("echo", 50))
        .wait()
        .unwrap()
        .execution;
    let g = globex
        .submit(&tenant("globex"), submission("echo", 99))
        .wait()
        .unwrap()
        .execution;
    assert!(matches!(
        globex.get(a.execution_id),
        Err(CommandError::NotFound(_))
    ));
    assert!(matches!(
        globex.history(a.execution_id),
        Err(CommandError::NotFound(_))
    ));
    assert!(matches!(
        globex.cancel(a.execution_id, None).wait(),
        Err(CommandError::NotFound(_))
    ));
    assert!(matches!(
        globex.execution_at(a.execution_id, At::Seq(2)),
        Err(CommandError::NotFound(_))
    ));
    // Nor before it existed: another tenant's execution is not found at
    // any point, not "not yet".
    assert!(matches!(
        globex.execution_at(a.execution_id, At::Seq(0)),
        Err(CommandError::NotFound(_))
    ));
    assert_eq!(acme.queue(None).len(), 1);
    assert!(acme.queue(Some(&tenant("globex"))).is_empty());
    // A scoped handle submits for its own tenant only, and appends nothing
    // for another.
    let head = ledger.head();
    match globex.submit(&tenant("acme"), submission("echo", 1)).wait() {
        Err(CommandError::Invalid(m)) => assert!(m.starts_with("tenant: "), "{m}"),
        other => panic!("submitted for another tenant: {other:?}"),
    }
    assert_eq!(ledger.head(), head);
    // acme claims its own, although globex's has the higher priority.
    let claimed = acme.claim(None).wait().unwrap().unwrap();
    assert_eq!(claimed.execution_id, a.execution_id);
    assert!(acme.claim(None).wait().unwrap().is_none());
    assert_eq!(
        globex.claim(None).wait().unwrap().unwrap().execution_id,
        g.execution_id
    );
}

#[test]
fn deferred_executions_wait_for_release_or_run_at() {
    let dir = common::store();
    let clock = TestClock::new();
    let ledger = Ledger::builder(dir.path())
        .clock(clock.clone())
        .open()
        .unwrap();
    let mut held = submission("echo", 50);
    held.config.mode = BackgroundExecutionMode::Deferred;
    let held = ledger
        .submit(&tenant("acme"), held)
        .wait()
        .unwrap()
        .execution;
    let mut timed = submission("echo", 50);
    timed.config.mode = BackgroundExecutionMode::Deferred;
    timed.run_at = Some(clock.now() + chrono::Duration::seconds(60));
    let timed = ledger
        .submit(&tenant("acme"), timed)
        .wait()
        .unwrap()
        .execution;
    assert!(ledger.claim(None).wait().unwrap().is_none());
    assert_eq!(ledger.counts().held, 1);
    assert_eq!(ledger.counts().waiting, 1);
    clock.advance_ms(60_000);
    assert_eq!(
        ledger.claim(None).wait().unwrap().unwrap().execution_id,
        timed.execution_id
    );
    assert!(ledger.claim(None).wait().unwrap().is_none());
    ledger.release(held.execution_id).wait().unwrap();
    assert_eq!(
        ledger.claim(None).wait().unwrap().unwrap().execution_id,
        held.execution_id
    );
    let err = ledger.release(held.execution_id).wait().unwrap_err();
    assert!(err.to_string().contains("it is running"), "{err}");
}

#[test]
fn time_travel_one_execution_the_queue_and_diffs() {
    let dir = common::store();
    let clock = TestClock::new();
    let ledger = Ledger::builder(dir.path())
        .clock(clock.clone())
        .snapshot_every(3)
        .open()
        .unwrap();
    let t0 = clock.now();
    let acme = tenant("acme");
    // Settled executions first, so that snapshots (at least four events per
    // live execution apart) are taken along the way.
    for _ in 0..12 {
        let e = ledger
            .submit(&acme, submission("echo", 1))
            .wait()
            .unwrap()
            .execution;
        ledger.cancel(e.execution_id, None).wait().unwrap();
    }
    let b = ledger.head().seq;
    let mut ids = Vec::new();
    for p in [10, 20, 30, 40] {
        clock.advance_ms(1_000);
        ids.push(
            ledger
                .submit(&acme, submission("echo", p))
                .wait()
                .unwrap()
                .execution
                .execution_id,
        );
    }
    clock.advance_ms(1_000);
    let t_before_claim = clock.now();
    let claimed = ledger.claim(None).wait().unwrap().unwrap(); // seq 5: priority 40
    clock.advance_ms(1_000);
    ledger
        .complete(claimed.execution_id, 1, serde_json::json!("done"))
        .wait()
        .unwrap(); // seq 6
    ledger.cancel(ids[0], None).wait().unwrap(); // seq 7

    // One execution at a seq and at a time.
    let at4 = ledger
        .execution_at(ids[3], At::Seq(b + 4))
        .unwrap()
        .unwrap();
    assert_eq!(at4.status, BackgroundExecutionStatus::Queued);
    let at5 = ledger
        .execution_at(ids[3], At::Seq(b + 5))
        .unwrap()
        .unwrap();
    assert_eq!(at5.status, BackgroundExecutionStatus::Running);
    assert_eq!(ledger.execution_at(ids[3], At::Seq(b + 2)).unwrap(), None);
    // The claim is dated t_before_claim itself: just before it, still queued.
    let just_before = t_before_claim - chrono::Duration::milliseconds(1);
    let by_time = ledger
        .execution_at(ids[3], At::Time(just_before))
        .unwrap()
        .unwrap();
    assert_eq!(by_time.status, BackgroundExecutionStatus::Queued);
    let at_claim = ledger
        .execution_at(ids[3], At::Time(t_before_claim))
        .unwrap()
        .unwrap();
    assert_eq!(at_claim.status, BackgroundExecutionStatus::Running);
    assert_eq!(ledger.resolve(At::Time(t0)).unwrap(), b);
    assert_eq!(
        ledger
            .resolve(At::Time(t0 + chrono::Duration::days(1)))
            .unwrap(),
        b + 7
    );
    assert!(matches!(
        ledger.resolve(At::Seq(b + 8)),
        Err(CommandError::Invalid(_))
    ));

    // The whole queue, as it was and as it is (snapshots every 3 events).
    let then = ledger.projection_at(At::Seq(b + 4)).unwrap();
    let order: Vec<_> = then
        .queue(t_before_claim, None)
        .iter()
        .map(|e| e.execution_id)
        .collect();
    assert_eq!(order, vec![ids[3], ids[2], ids[1], ids[0]]);
    let now: Vec<_> = ledger
        .queue(None)
        .into_iter()
        .map(|e| e.execution_id)
        .collect();
    assert_eq!(now, vec![ids[2], ids[1]]);
    for seq in 0..=b + 7 {
        let p = ledger.projection_at(At::Seq(seq)).unwrap();
        assert_eq!(p.seq(), seq);
    }

    // What changed between seq 4 and 7.
    let changes = ledger.diff(At::Seq(b + 4), At::Seq(b + 7)).unwrap();
    let summary: HashMap<_, _> = changes
        .iter()
        .map(|c| (c.execution_id, (c.before, c.after)))
        .collect();
    assert_eq!(summary.len(), 2);
    assert_eq!(
        summary[&ids[3]],
        (
            Some(BackgroundExecutionStatus::Queued),
            BackgroundExecutionStatus::Completed
        )
    );
    assert_eq!(
        summary[&ids[0]],
        (
            Some(BackgroundExecutionStatus::Queued),
            BackgroundExecutionStatus::Cancelled
        )
    );
    let report = ledger.verify().unwrap();
    assert!(report.snapshots >= 2, "{report:?}");
}

#[test]
fn opening_from_a_snapshot_equals_a_fold_from_scratch() {
    let dir = common::store();
    {
        let ledger = Ledger::builder(dir.path())
            .snapshot_every(7)
            .durability(Durability::Buffered)
            .open()
            .unwrap();
        let acme = tenant("acme");
        for i in 0..300u32 {
            let e = ledger
                .submit(&acme, submission("echo", (i % 7) as u8))
                .wait()
                .unwrap()
                .execution;
            if i % 3 != 2 {
                let c = ledger.claim(None).wait().unwrap().unwrap();
                if i % 2 == 0 {
                    ledger
                        .complete(c.execution_id, c.attempt, serde_json::json!(i))
                        .wait()
                        .unwrap();
                } else if i % 4 != 1 {
                    ledger.cancel(c.execution_id, None).wait().unwrap();
                }
            }
            if i % 5 == 0 {
                let _ = ledger.cancel(e.execution_id, None).wait();
            }
        }
    }
    let ledger = Ledger::open(dir.path()).unwrap();
    ledger.check_projection().unwrap();
    let report = ledger.verify().unwrap();
    assert!(report.snapshots >= 5, "{report:?}");
}

#[test]
fn a_subscription_catches_up_then_follows_without_gaps() {
    let dir = common::store();
    let ledger = Ledger::open(dir.path()).unwrap();
    let acme = tenant("acme");
    for _ in 0..5 {
        ledger.submit(&acme, submission("echo", 1)).wait().unwrap();
    }
    let mut sub = ledger.subscribe(3);
    let writer = {
        let ledger = ledger.clone();
        std::thread::spawn(move || {
            for _ in 0..20 {
                ledger
                    .submit(&tenant("acme"), submission("echo", 1))
                    .wait()
                    .unwrap();
            }
        })
    };
    let mut seqs = Vec::new();
    while seqs.len() < 23 {
        match sub.next_timeout(Duration::from_secs(10)).unwrap() {
            Some(e) => seqs.push(e.seq),
            None => panic!("no event within 10s after {seqs:?}"),
        }
    }
    writer.join().unwrap();
    assert_eq!(seqs, (3..=25).collect::<Vec<_>>());
    assert!(sub
        .next_timeout(Duration::from_millis(20))
        .unwrap()
        .is_none());
}

#[test]
fn a_locked_directory_names_the_holder_and_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _ledger = Ledger::open(dir.path()).unwrap();
    let err = Ledger::open(dir.path()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Locked);
    assert!(
        err.to_string().ends_with(&format!(
            "is in use by another ledger process (pid {})",
            std::process::id()
        )),
        "{err}"
    );
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = Ledger::open(&file).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadDirectory);
    assert!(err.to_string().ends_with("is not a directory"), "{err}");
}

#[test]
fn recovery_requeues_or_fails_what_a_dead_process_left_running() {
    let dir = common::store();
    let clock = TestClock::new();
    let open = || {
        Ledger::builder(dir.path())
            .clock(clock.clone())
            .open()
            .unwrap()
    };
    let (once, twice);
    {
        let ledger = open();
        once = ledger
            .submit(&tenant("acme"), submission("echo", 90))
            .wait()
            .unwrap()
            .execution;
        let mut s = submission("echo", 10);
        s.config.retry = Some(RetryConfig {
            max_attempts: 2,
            ..RetryConfig::default()
        });
        twice = ledger.submit(&tenant("acme"), s).wait().unwrap().execution;
        ledger.claim(None).wait().unwrap().unwrap();
        ledger.claim(None).wait().unwrap().unwrap();
    }
    let ledger = open();
    let mut recovered = if dir.backend() == common::Backend::Postgres {
        // On a log many processes share every attempt is leased: another
        // process finds the attempts lost once their leases run out.
        assert!(ledger.recover_abandoned().wait().unwrap().is_empty());
        clock.advance_ms(execution_ledger::DEFAULT_LEASE.as_millis() as i64 + 1);
        ledger.expire_leases().wait().unwrap()
    } else {
        ledger.recover_abandoned().wait().unwrap()
    };
    recovered.sort_by_key(|e| e.config.priority);
    assert_eq!(recovered.len(), 2);
    assert_eq!(recovered[0].execution_id, twice.execution_id);
    assert_eq!(recovered[0].status, BackgroundExecutionStatus::Queued);
    assert_eq!(recovered[1].execution_id, once.execution_id);
    assert_eq!(recovered[1].status, BackgroundExecutionStatus::Failed);
    assert!(ledger.recover_abandoned().wait().unwrap().is_empty());
    assert!(ledger.expire_leases().wait().unwrap().is_empty());
    // The requeued one runs its second attempt; a late answer from the first is refused.
    let again = ledger.claim(None).wait().unwrap().unwrap();
    assert_eq!(again.attempt, 2);
    assert!(ledger
        .complete(again.execution_id, 1, serde_json::json!(0))
        .wait()
        .is_err());
    ledger.verify().unwrap();
}

#[test]
fn a_batch_submit_is_one_group_with_one_sync_all_or_nothing() {
    let dir = common::store();
    let ledger = Ledger::open(dir.path()).unwrap();
    let acme = tenant("acme");
    let mut first = submission("echo", 10);
    first.idempotency_key = Some("order-1".into());
    let earlier = ledger.submit(&acme, first.clone()).wait().unwrap();
    let syncs = ledger.metrics().sync_latency.count;
    let head = ledger.head();

    // One bad submission refuses the batch, naming it; nothing appended.
    let mut bad = submission("echo", 50);
    bad.config.timeout_ms = 0;
    match ledger
        .submit_many(&acme, vec![submission("echo", 1), bad])
        .wait()
    {
        Err(CommandError::Invalid(m)) => assert!(m.starts_with("executions[1]: "), "{m}"),
        other => panic!("a bad batch was taken: {other:?}"),
    }
    // So does one idempotency key used twice in the batch.
    let mut twice = submission("echo", 1);
    twice.idempotency_key = Some("order-2".into());
    match ledger
        .submit_many(&acme, vec![twice.clone(), submission("echo", 2), twice])
        .wait()
    {
        Err(CommandError::Invalid(m)) => {
            assert!(
                m.contains("executions[2]") && m.contains("executions[0]"),
                "{m}"
            )
        }
        other => panic!("a batch with a key twice was taken: {other:?}"),
    }
    assert_eq!(ledger.head(), head, "nothing was appended");

    // A good batch: every new submission appended with one sync, the one
    // under a key used before answered with its first execution.
    let batch: Vec<Submission> = vec![
        submission("echo", 30),
        first,
        submission("echo", 90),
        submission("echo", 60),
    ];
    let answered = ledger.submit_many(&acme, batch).wait().unwrap();
    assert_eq!(answered.len(), 4);
    assert_eq!(
        answered.iter().map(|s| s.created).collect::<Vec<_>>(),
        vec![true, false, true, true]
    );
    assert_eq!(
        answered[1].execution.execution_id,
        earlier.execution.execution_id
    );
    assert_eq!(ledger.head().seq, head.seq + 3);
    assert_eq!(ledger.metrics().sync_latency.count, syncs + 1);
    let seqs: Vec<u64> = [0, 2, 3]
        .iter()
        .map(|&i| ledger.history(answered[i].execution.execution_id).unwrap()[0].seq)
        .collect();
    assert_eq!(seqs, vec![head.seq + 1, head.seq + 2, head.seq + 3]);
    // Queued in priority order, as if submitted one by one.
    let queue: Vec<u8> = ledger
        .queue(None)
        .iter()
        .map(|e| e.config.priority)
        .collect();
    assert_eq!(queue, vec![90, 60, 30, 10]);
    // An empty batch appends nothing.
    assert!(ledger
        .submit_many(&acme, Vec::new())
        .wait()
        .unwrap()
        .is_empty());
    drop(ledger);
    let again = Ledger::open(dir.path()).unwrap();
    assert_eq!(again.head().seq, head.seq + 3);
    again.verify().unwrap();
}
