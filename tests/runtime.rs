//! The runtime with a real tokio runtime, a real ledger on disk and, for
//! callbacks, a real HTTP server on 127.0.0.1.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use execution_ledger::{
    BackgroundExecution, BackgroundExecutionMode, BackgroundExecutionStatus, ExecutionError,
    Ledger, RetryConfig, Runtime, Submission, TargetBindingConfig, TenantId,
};

fn acme() -> TenantId {
    "acme".parse().unwrap()
}

fn job(callable: &str, input: &str) -> Submission {
    let mut s = Submission::new(callable);
    s.input = Some(input.to_owned());
    s
}

fn kinds(ledger: &Ledger, e: &BackgroundExecution) -> Vec<&'static str> {
    ledger
        .history(e.execution_id)
        .unwrap()
        .into_iter()
        .map(|e| e.kind.name())
        .collect()
}

const WAIT: Duration = Duration::from_secs(20);

/// Claims `resize` work as a worker elsewhere would (leased).
async fn claim_resize(runtime: &Runtime) -> Vec<BackgroundExecution> {
    let claim = execution_ledger::Claim::new()
        .worker("remote-1")
        .callables(["resize"])
        .lease(Duration::from_secs(10));
    runtime
        .claim_remote(None, claim, Duration::from_secs(5))
        .await
        .unwrap()
}

async fn finished(handle: execution_ledger::ExecutionHandle) -> BackgroundExecution {
    tokio::time::timeout(WAIT, handle.result())
        .await
        .expect("the execution finishes")
        .expect("the runtime is running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_runs_first() {
    let dir = common::store();
    let ledger = Ledger::open(dir.path()).unwrap();
    // Queue everything before any worker runs.
    let mut ids = Vec::new();
    for p in [10u8, 200, 50, 200, 0] {
        let mut s = job("record", &p.to_string());
        s.config.priority = p;
        ids.push(
            ledger
                .submit(&acme(), s)
                .wait()
                .unwrap()
                .execution
                .execution_id,
        );
    }
    let order = Arc::new(Mutex::new(Vec::new()));
    let seen = order.clone();
    let runtime = Runtime::builder(ledger.clone())
        .workers(1)
        .register("record", move |input, ctx| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(ctx.execution_id);
                Ok(input.into())
            }
        })
        .start()
        .await
        .unwrap();
    tokio::time::timeout(WAIT, runtime.wait_idle())
        .await
        .unwrap();
    runtime.shutdown(Duration::from_secs(5)).await.unwrap();
    // 200 (first submitted), 200, 50, 10, 0.
    assert_eq!(
        *order.lock().unwrap(),
        vec![ids[1], ids[3], ids[2], ids[0], ids[4]]
    );
    ledger.verify().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_past_its_timeout_times_out() {
    let dir = common::store();
    let ledger = Ledger::open(dir.path()).unwrap();
    let runtime = Runtime::builder(ledger.clone())
        .register_builtins()
        .start()
        .await
        .unwrap();
    let mut s = job("sleep", "60000");
    s.config.timeout_ms = 50;
    let e = finished(runtime.submit(&acme(), s).await.unwrap()).await;
    assert_eq!(e.status, BackgroundExecutionStatus::Timeout);
    assert_eq!(e.error.as_ref().unwrap().code, "timeout");
    assert_eq!(kinds(&ledger, &e), ["queued", "started", "timed_out"]);
    runtime.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_with_backoff_then_succeed() {
    let dir = common::store();
    let ledger = Ledger::open(dir.path()).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let runtime = Runtime::builder(ledger.clone())
        .register("flaky", move |_, ctx| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                if ctx.attempt < 3 {
                    Err(ExecutionError::new(
                        "flaky",
                        format!("attempt {}", ctx.attempt),
                    ))
                } else {
                    Ok(serde_json::json!({ "attempt": ctx.attempt }))
                }
            }
        })
        .start()
        .await
        .unwrap();
    let mut s = job("flaky", "");
    s.config.retry = Some(RetryConfig {
        max_attempts: 3,
        initial_delay_ms: 30,
        backoff_multiplier: 2.0,
        max_delay_ms: 1_000,
    });
    let e = finished(runtime.submit(&acme(), s).await.unwrap()).await;
    assert_eq!(e.status, BackgroundExecutionStatus::Completed);
    assert_eq!(e.attempt, 3);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let history = ledger.history(e.execution_id).unwrap();
    let names: Vec<_> = history.iter().map(|e| e.kind.name()).collect();
    assert_eq!(
        names,
        [
            "queued",
            "started",
            "retry_scheduled",
            "started",
            "retry_scheduled",
            "started",
            "completed"
        ]
    );
    // Each retry started no earlier than its back-off allowed: 30 ms, then 60 ms.
    for (i, wait_ms) in [(2usize, 30i64), (4, 60)] {
        let scheduled = history[i].at;
        let started = history[i + 1].at;
        assert!(
            started - scheduled >= chrono::Duration::milliseconds(wait_ms),
            "retry {i} started after {:?}",
            started - scheduled
        );
    }
    runtime.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_exhausted_end_failed_and_unknown_callables_wait_for_a_worker() {
    let dir = common::store();
    let ledger = Ledger::open(dir.path()).unwrap();
    let runtime = Runtime::builder(ledger.clone())
        .register_builtins()
        .start()
        .await
        .unwrap();
    let mut s = job("fail", "always");
    s.config.retry = Some(RetryConfig {
        max_attempts: 2,
        initial_delay_ms: 10,
        ..RetryConfig::default()
    });
    let e = finished(runtime.submit(&acme(), s).await.unwrap()).await;
    assert_eq!(e.status, BackgroundExecutionStatus::Failed);
    assert_eq!(e.attempt, 2);
    assert_eq!(e.error.unwrap().message, "always");

    // Nobody here runs it: it is not claimed (and not failed), and the
    // ledger says no live worker runs it.
    let mut s = job("no-such-callable", "");
    s.config.retry = Some(RetryConfig::default());
    let waiting = runtime.submit(&acme(), s).await.unwrap().id();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let e = ledger.get(waiting).unwrap();
    assert_eq!(e.status, BackgroundExecutionStatus::Queued);
    assert_eq!(e.attempt, 0);
    assert_eq!(
        ledger.callables_without_worker(),
        vec!["no-such-callable".to_owned()]
    );
    runtime.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_execution_stops_its_callable() {
    let dir = common::store();
    let ledger = Ledger::open(dir.path()).unwrap();
    /// Counts the callable futures dropped.
    struct Dropped(Arc<AtomicUsize>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let flag = dropped.clone();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let started_tx = Arc::new(Mutex::new(Some(started_tx)));
    let runtime = Runtime::builder(ledger.clone())
        .register("forever", move |_, mut ctx| {
            let (flag, started_tx) = (flag.clone(), started_tx.clone());
            async move {
                let _guard = Dropped(flag);
                if let Some(tx) = started_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                ctx.cancelled().await;
                // Told to stop: a well-behaved callable would clean up here;
                // this one never returns, so only dropping it ends it.
                std::future::pending::<()>().await;
                Ok(serde_json::Value::Null)
            }
        })
        .start()
        .await
        .unwrap();
    let handle = runtime.submit(&acme(), job("forever", "")).await.unwrap();
    let id = handle.id();
    tokio::time::timeout(WAIT, started_rx)
        .await
        .unwrap()
        .unwrap();
    runtime.cancel(id, Some("operator".into())).await.unwrap();
    let e = finished(handle).await;
    assert_eq!(e.status, BackgroundExecutionStatus::Cancelled);
    tokio::time::timeout(WAIT, runtime.wait_idle())
        .await
        .unwrap();
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "the callable's future was dropped"
    );
    assert_eq!(kinds(&ledger, &e), ["queued", "started", "cancelled"]);
    runtime.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_fire_and_forget_stream_nothing_deferred_streams_progress() {
    let dir = common::store();
    let ledger = Ledger::open(dir.path()).unwrap();
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let runtime = Runtime::builder(ledger.clone())
        .register("steps", move |_, ctx| {
            let mut go = go_rx.clone();
            async move {
                go.wait_for(|g| *g).await.unwrap();
                for i in 1..=3 {
                    ctx.progress(serde_json::json!({ "step": i }));
                }
                Ok(serde_json::json!("done"))
            }
        })
        .start()
        .await
        .unwrap();
    let mut silent = job("steps", "");
    silent.config.mode = BackgroundExecutionMode::Silent;
    let silent = runtime.submit(&acme(), silent).await.unwrap();
    // As the seed has it, fire-and-forget streams nothing either.
    let quiet = runtime.submit(&acme(), job("steps", "")).await.unwrap();
    let mut loud = job("steps", "");
    loud.config.mode = BackgroundExecutionMode::Deferred;
    let loud = runtime.submit(&acme(), loud).await.unwrap();
    assert!(runtime.progress(silent.id()).await.is_none());
    assert!(runtime.progress(quiet.id()).await.is_none());
    let mut stream = runtime.progress(loud.id()).await.expect("a stream");
    runtime.release(loud.id()).await.unwrap();
    go_tx.send(true).unwrap();
    let mut steps = Vec::new();
    while let Ok(Ok(p)) = tokio::time::timeout(WAIT, stream.recv()).await {
        steps.push(p.value["step"].as_u64().unwrap());
    }
    assert_eq!(steps, [1, 2, 3], "the stream ends when the execution does");
    let s = finished(silent).await;
    assert_eq!(s.output, Some(serde_json::json!("done")));
    assert_eq!(
        finished(quiet).await.status,
        BackgroundExecutionStatus::Completed
    );
    assert_eq!(
        finished(loud).await.status,
        BackgroundExecutionStatus::Completed
    );
    runtime.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// A timed-out attempt's callable is dropped before its retry starts: two
/// attempts of one execution never run at once, even when the callable
/// ignores its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_starts_only_once_the_timed_out_attempt_is_gone() {
    let dir = common::store();
    let ledger = Ledger::open(dir.path()).unwrap();
    struct Alive(Arc<AtomicUsize>);
    impl Drop for Alive {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let alive = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let (a, o) = (alive.clone(), overlaps.clone());
    let runtime = Runtime::builder(ledger.clone())
        .workers(4)
        .register("stubborn", move |_, _| {
            let (a, o) = (a.clone(), o.clone());
            async move {
                // One execution only: anything alive is an earlier attempt.
                if a.fetch_add(1, Ordering::SeqCst) > 0 {
                    o.fetch_add(1, Ordering::SeqCst);
                }
                let _alive = Alive(a);
                std::future::pending::<()>().await;
                Ok(serde_json::Value::Null)
            }
        })
        .start()
        .await
        .unwrap();
    let mut s = job("stubborn", "");
    s.config.timeout_ms = 20;
    s.config.retry = Some(RetryConfig {
        max_attempts: 8,
        initial_delay_ms: 0,
        backoff_multiplier: 1.0,
        max_delay_ms: 0,
    });
    let e = finished(runtime.submit(&acme(), s).await.unwrap()).await;
    assert_eq!(e.status, BackgroundExecutionStatus::Timeout);
    assert_eq!(e.attempt, 8);
    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "an attempt started while an earlier one's callable was alive"
    );
    assert_eq!(
        alive.load(Ordering::SeqCst),
        0,
        "the last attempt's callable is dropped"
    );
    runtime.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_callable_is_a_failed_attempt_not_a_dead_worker() {
    let dir = common::store();
    let ledger = Ledger::open(dir.path()).unwrap();
    let runtime = Runtime::builder(ledger.clone())
        .workers(1)
        .register_builtins()
        .register("boom", |_, _| async move {
            if true {
                panic!("kaboom");
            }
            Ok(serde_json::Value::Null)
        })
        .start()
        .await
        .unwrap();
    let e = finished(runtime.submit(&acme(), job("boom", "")).await.unwrap()).await;
    assert_eq!(e.status, BackgroundExecutionStatus::Failed);
    let error = e.error.unwrap();
    assert_eq!(error.code, "panicked");
    assert!(error.message.contains("kaboom"), "{}", error.message);
    // The single worker still runs work.
    let e = finished(runtime.submit(&acme(), job("echo", "after")).await.unwrap()).await;
    assert_eq!(e.output, Some(serde_json::json!("after")));
    runtime.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_executions_run_when_released_or_at_their_time() {
    let dir = common::store();
    let ledger = Ledger::open(dir.path()).unwrap();
    let runtime = Runtime::builder(ledger.clone())
        .register_builtins()
        .idle_poll(Duration::from_millis(20))
        .start()
        .await
        .unwrap();
    let mut held = job("echo", "held");
    held.config.mode = BackgroundExecutionMode::Deferred;
    let held = runtime.submit(&acme(), held).await.unwrap();
    let mut timed = job("echo", "timed");
    timed.config.mode = BackgroundExecutionMode::Deferred;
    let run_at = ledger.now() + chrono::Duration::milliseconds(150);
    timed.run_at = Some(run_at);
    let timed = finished(runtime.submit(&acme(), timed).await.unwrap()).await;
    assert!(timed.started_at.unwrap() >= run_at);
    // The held one is still waiting, and does not keep the runtime busy.
    assert_eq!(
        ledger.get(held.id()).unwrap().status,
        BackgroundExecutionStatus::Queued
    );
    assert!(runtime.is_idle());
    runtime.release(held.id()).await.unwrap();
    let held = finished(held).await;
    assert_eq!(held.output, Some(serde_json::json!("held")));
    runtime.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_are_posted_retried_and_recorded() {
    let dir = common::store();
    let ledger = Ledger::open(dir.path()).unwrap();
    let (url, bodies) = common::http_receiver(|n| [500, 503].get(n).copied().unwrap_or(200));
    let runtime = Runtime::builder(ledger.clone())
        .register_builtins()
        .callbacks(Duration::from_secs(5), Duration::from_millis(10))
        .start()
        .await
        .unwrap();
    let mut s = job("echo", "for the hook");
    s.config.mode = BackgroundExecutionMode::Deferred;
    s.config.callback_url = Some(url);
    let handle = runtime.submit(&acme(), s).await.unwrap();
    let id = handle.id();
    runtime.release(id).await.unwrap();
    finished(handle).await;
    tokio::time::timeout(WAIT, runtime.wait_idle())
        .await
        .unwrap();
    let e = ledger.get(id).unwrap();
    assert!(e.callback_delivered);
    assert_eq!(e.callback_attempts, 3);
    let history = ledger.history(id).unwrap();
    let tail: Vec<_> = history
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(|e| e.kind.clone())
        .collect();
    use execution_ledger::EventKind::{CallbackDelivered, CallbackFailed};
    assert!(matches!(
        tail[0],
        CallbackFailed {
            attempt: 1,
            status_code: Some(500),
            ..
        }
    ));
    assert!(matches!(
        tail[1],
        CallbackFailed {
            attempt: 2,
            status_code: Some(503),
            ..
        }
    ));
    assert!(matches!(
        tail[2],
        CallbackDelivered {
            attempt: 3,
            status_code: 200
        }
    ));
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 3);
    assert_eq!(bodies[2]["executionId"], id.to_string());
    assert_eq!(bodies[2]["status"], "completed");
    assert_eq!(bodies[2]["output"], "for the hook");
    runtime.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_bindings_are_applied_and_readable_by_target() {
    let dir = common::store();
    let ledger = Ledger::open(dir.path()).unwrap();
    let runtime = Runtime::builder(ledger.clone())
        .register("summarize", |_, _| async {
            Ok(serde_json::json!({ "summary": "short", "tokens": 12 }))
        })
        .start()
        .await
        .unwrap();
    let mut s = job("summarize", "");
    s.config.target_binding = Some(TargetBindingConfig {
        target: "var:summary".into(),
        path: Some("/summary".into()),
    });
    let id = finished(runtime.submit(&acme(), s).await.unwrap())
        .await
        .execution_id;
    tokio::time::timeout(WAIT, runtime.wait_idle())
        .await
        .unwrap();
    assert!(ledger.get(id).unwrap().target_binding_applied);
    let (by, value) = ledger.bound_value(&acme(), "var:summary").unwrap().unwrap();
    assert_eq!((by, value), (id, serde_json::json!("short")));
    // Another tenant has no such variable.
    let globex: TenantId = "globex".parse().unwrap();
    assert!(ledger
        .bound_value(&globex, "var:summary")
        .unwrap()
        .is_none());
    // Nor does a handle scoped to it see acme's, or learn its execution.
    assert!(ledger
        .tenant(globex.clone())
        .bound_value(&acme(), "var:summary")
        .unwrap()
        .is_none());
    // A scheme nobody handles is recorded as a failed binding.
    let mut s = job("summarize", "");
    s.config.target_binding = Some(TargetBindingConfig {
        target: "nowhere:x".into(),
        path: None,
    });
    let id = finished(runtime.submit(&acme(), s).await.unwrap())
        .await
        .execution_id;
    tokio::time::timeout(WAIT, runtime.wait_idle())
        .await
        .unwrap();
    let e = ledger.get(id).unwrap();
    assert!(!e.target_binding_applied);
    assert_eq!(e.target_binding_error.unwrap().code, "unknown_binder");
    runtime.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_recovers_what_a_crash_left_running() {
    let dir = common::store();
    let id;
    {
        // A "crash": claimed by a worker of a process that then vanished.
        let ledger = Ledger::open(dir.path()).unwrap();
        let mut s = job("echo", "again");
        s.config.retry = Some(RetryConfig {
            max_attempts: 2,
            ..RetryConfig::default()
        });
        id = ledger
            .submit(&acme(), s)
            .wait()
            .unwrap()
            .execution
            .execution_id;
        // On a log many processes share, every attempt is leased and found
        // lost when its lease runs out (here soon); else it is unleased and
        // found lost when the ledger is opened again.
        let mut claim = execution_ledger::Claim::new().worker("dead-worker");
        if dir.backend() == common::Backend::Postgres {
            claim = claim.lease(Duration::from_millis(300));
        }
        assert_eq!(ledger.claim_with(claim).wait().unwrap().len(), 1);
    }
    let ledger = Ledger::open(dir.path()).unwrap();
    let runtime = Runtime::builder(ledger.clone())
        .register_builtins()
        .start()
        .await
        .unwrap();
    let e = tokio::time::timeout(WAIT, runtime.result(id))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(e.status, BackgroundExecutionStatus::Completed);
    assert_eq!(e.attempt, 2);
    assert_eq!(
        kinds(&ledger, &e),
        ["queued", "started", "recovered", "started", "completed"]
    );
    runtime.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_running_attempts_finish_within_the_grace_period() {
    let dir = common::store();
    let ledger = Ledger::open(dir.path()).unwrap();
    let runtime = Runtime::builder(ledger.clone())
        .workers(2)
        .register_builtins()
        .start()
        .await
        .unwrap();
    let short = runtime
        .submit(&acme(), job("sleep", "100"))
        .await
        .unwrap()
        .id();
    let long = runtime
        .submit(&acme(), job("sleep", "60000"))
        .await
        .unwrap()
        .id();
    // Both running.
    tokio::time::timeout(WAIT, async {
        while ledger.counts().running < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    runtime
        .shutdown(Duration::from_millis(1_500))
        .await
        .unwrap();
    assert_eq!(
        ledger.get(short).unwrap().status,
        BackgroundExecutionStatus::Completed
    );
    // The long one was left running, for recovery at the next start.
    assert_eq!(
        ledger.get(long).unwrap().status,
        BackgroundExecutionStatus::Running
    );
    ledger.verify().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_waiting_results_with_none_at_once() {
    let dir = common::store();
    let ledger = Ledger::open(dir.path()).unwrap();
    let runtime = Runtime::builder(ledger.clone())
        .workers(1)
        .register_builtins()
        .start()
        .await
        .unwrap();
    let handle = runtime
        .submit(&acme(), job("sleep", "600000"))
        .await
        .unwrap();
    let id = handle.id();
    tokio::time::timeout(WAIT, async {
        while ledger.counts().running < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    let answered = std::sync::Mutex::new(Vec::new());
    let note = |what: &'static str, r: Option<BackgroundExecution>| {
        answered.lock().unwrap().push((what, r.is_none()));
    };
    tokio::time::timeout(WAIT, async {
        tokio::join!(
            async {
                runtime
                    .shutdown(Duration::from_millis(1_500))
                    .await
                    .unwrap();
                answered.lock().unwrap().push(("shutdown", true));
            },
            async { note("handle", handle.result().await) },
            async { note("result", runtime.result(id).await.unwrap()) },
        )
    })
    .await
    .expect("every waiter is answered");
    let answered = answered.into_inner().unwrap();
    assert_eq!(answered.len(), 3);
    assert_eq!(
        answered.last(),
        Some(&("shutdown", true)),
        "the waiters, with None, before the grace is over: {answered:?}"
    );
    assert!(answered.iter().all(|(_, none)| *none), "{answered:?}");
    // And one that asks after the shutdown is answered at once too.
    let late = tokio::time::timeout(WAIT, runtime.result(id))
        .await
        .expect("answered");
    assert_eq!(late.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_within_a_horizon_leaves_work_due_past_it() {
    let dir = common::store();
    let ledger = Ledger::open(dir.path()).unwrap();
    let runtime = Runtime::builder(ledger.clone())
        .register_builtins()
        .idle_poll(Duration::from_millis(20))
        .start()
        .await
        .unwrap();
    let horizon = Duration::from_secs(10);
    let mut later = job("echo", "later");
    let in_an_hour = ledger.now() + chrono::Duration::hours(1);
    later.run_at = Some(in_an_hour);
    runtime.submit_detached(&acme(), later).await.unwrap();
    let left = runtime
        .idle_within(horizon)
        .expect("idle but for later work");
    assert_eq!((left.count, left.earliest), (1, Some(in_an_hour)));
    assert!(!runtime.is_idle(), "it still waits for that run-at time");
    // Work due within the horizon is not idle until it has run.
    let mut soon = job("echo", "soon");
    soon.run_at = Some(ledger.now() + chrono::Duration::milliseconds(500));
    let soon = runtime.submit(&acme(), soon).await.unwrap();
    assert_eq!(runtime.idle_within(horizon), None);
    let left_then = tokio::time::timeout(WAIT, runtime.wait_idle_within(horizon))
        .await
        .unwrap();
    assert_eq!(left_then, left);
    assert_eq!(
        finished(soon).await.status,
        BackgroundExecutionStatus::Completed
    );
    runtime.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_attempt_streams_its_progress_and_its_completion_is_followed_up_like_a_local_one()
{
    let dir = common::store();
    let ledger = Ledger::open(dir.path()).unwrap();
    let runtime = Runtime::builder(ledger.clone())
        .register_builtins()
        .start()
        .await
        .unwrap();
    // A deferred execution of a callable that runs elsewhere, with a
    // target binding and a callback.
    let (url, bodies) = common::http_receiver(|_| 200);
    let mut s = job("resize", "cat.png");
    s.config.mode = BackgroundExecutionMode::Deferred;
    s.config.callback_url = Some(url);
    s.config.target_binding = Some(TargetBindingConfig {
        target: "var:thumb".into(),
        path: None,
    });
    let handle = runtime.submit(&acme(), s).await.unwrap();
    let id = handle.id();
    runtime.release(id).await.unwrap();
    let claimed = claim_resize(&runtime).await;
    assert_eq!(claimed.len(), 1);
    let mut progress = runtime.progress(id).await.expect("a progress stream");
    let beat = runtime
        .heartbeat(id, 1, None, Some(serde_json::json!({"done": 0.5})))
        .await
        .unwrap();
    assert!(!beat.cancel_requested);
    let p = tokio::time::timeout(WAIT, progress.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((p.attempt, p.value), (1, serde_json::json!({"done": 0.5})));
    runtime
        .complete_attempt(id, 1, serde_json::json!({"url": "s3://t/cat.png"}))
        .await
        .unwrap();
    // The result waiter hears of it, the binding and the callback follow.
    let done = finished(handle).await;
    assert_eq!(done.status, BackgroundExecutionStatus::Completed);
    let deadline = std::time::Instant::now() + WAIT;
    while bodies.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no callback came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(bodies.lock().unwrap()[0]["executionId"], id.to_string());
    assert_eq!(
        ledger.bound_value(&acme(), "var:thumb").unwrap(),
        Some((id, serde_json::json!({"url": "s3://t/cat.png"})))
    );
    runtime.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_remote_complete_calls_back_once() {
    let dir = common::store();
    let ledger = Ledger::open(dir.path()).unwrap();
    let runtime = Runtime::builder(ledger.clone())
        .register_builtins()
        .start()
        .await
        .unwrap();
    let (url, bodies) = common::http_receiver(|_| 200);
    let mut s = job("resize", "cat.png");
    s.config.mode = BackgroundExecutionMode::Deferred;
    s.config.callback_url = Some(url);
    let id = runtime.submit(&acme(), s).await.unwrap().id();
    runtime.release(id).await.unwrap();
    claim_resize(&runtime).await;
    // The worker lost the first two responses and sent the answer thrice.
    for _ in 0..3 {
        runtime
            .complete_attempt(id, 1, serde_json::json!("done"))
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + WAIT;
    while !ledger.get(id).unwrap().callback_delivered {
        assert!(std::time::Instant::now() < deadline, "no callback came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        bodies.lock().unwrap().len(),
        1,
        "one callback, not one per repeat"
    );
    let e = ledger.get(id).unwrap();
    assert_eq!(
        kinds(&ledger, &e),
        [
            "queued",
            "released",
            "started",
            "completed",
            "callback_delivered"
        ]
    );
    runtime.shutdown(Duration::from_secs(5)).await.unwrap();
}
