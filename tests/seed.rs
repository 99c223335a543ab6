//! The seed's behaviour, kept as the seed file `executor.rs` had it: modes,
//! the lifecycle methods, the priority queue, the constructors, the JSON
//! wire shape and the identifiers.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use execution_ledger::{
    BackgroundExecution, BackgroundExecutionConfig, BackgroundExecutionMode,
    BackgroundExecutionQueue, BackgroundExecutionStatus, ExecutionError, ExecutionId, RetryConfig,
    SpawnMode, TargetBindingConfig, TenantId, TriggerId,
};
use serde_json::{json, Value};

fn tenant(s: &str) -> TenantId {
    s.parse().expect("a valid tenant id")
}

fn execution(mode: BackgroundExecutionMode, priority: u8) -> BackgroundExecution {
    BackgroundExecution::new(
        tenant("acme"),
        "echo",
        BackgroundExecutionConfig {
            mode,
            priority,
            ..BackgroundExecutionConfig::default()
        },
    )
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("an RFC 3339 time")
}

/// A small deterministic generator (splitmix64), so the random tests need
/// no extra dependency and fail the same way every time.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

// ---------------------------------------------------------------- modes

#[test]
fn fire_and_forget_is_silent_and_not_awaited() {
    // As the seed has it: "don't wait for result, no streaming".
    let e = execution(BackgroundExecutionMode::FireAndForget, 50);
    assert!(e.is_silent());
    assert!(!e.requires_result());
    assert!(!e.calls_back());
}

#[test]
fn silent_is_silent_and_its_result_is_awaited() {
    let e = execution(BackgroundExecutionMode::Silent, 50);
    assert!(e.is_silent());
    assert!(e.requires_result());
}

#[test]
fn deferred_is_not_silent_and_its_result_goes_to_the_callback_not_the_caller() {
    let mut e = execution(BackgroundExecutionMode::Deferred, 50);
    assert!(!e.is_silent());
    assert!(!e.requires_result());
    assert!(!e.calls_back(), "no callback without a callback url");
    e.config.callback_url = Some("https://example.com/cb".into());
    assert!(e.calls_back());
}

#[test]
fn constructors_take_any_string_like_callable_name() {
    // The seed's signatures: `callable_name: impl Into<String>`.
    let e = BackgroundExecution::new(TenantId::new(), "test", Default::default());
    assert_eq!(e.callable_name, "test");
    let owned = String::from("owned");
    let e = BackgroundExecution::from_trigger(
        TenantId::new(),
        TriggerId::new(),
        owned,
        None,
        None,
        None,
        None,
    );
    assert_eq!(e.callable_name, "owned");
    let child = SpawnMode::Child {
        background: true,
        inherit_inbox: false,
        policies: None,
    };
    let e = BackgroundExecution::from_spawn_mode(&child, TenantId::new(), "bg", None, None)
        .expect("a background child");
    assert_eq!(e.config.mode, BackgroundExecutionMode::FireAndForget);
    assert!(e.is_silent());
}

#[test]
fn the_default_mode_is_fire_and_forget() {
    assert_eq!(
        BackgroundExecutionMode::default(),
        BackgroundExecutionMode::FireAndForget
    );
    assert_eq!(
        BackgroundExecutionConfig::default().mode,
        BackgroundExecutionMode::FireAndForget
    );
}

#[test]
fn modes_parse_and_display_as_their_snake_case_names() {
    for (mode, name) in [
        (BackgroundExecutionMode::FireAndForget, "fire_and_forget"),
        (BackgroundExecutionMode::Silent, "silent"),
        (BackgroundExecutionMode::Deferred, "deferred"),
    ] {
        assert_eq!(mode.to_string(), name);
        assert_eq!(name.parse::<BackgroundExecutionMode>().unwrap(), mode);
    }
    let err = "sometimes".parse::<BackgroundExecutionMode>().unwrap_err();
    assert_eq!(err.to_string(), r#"not a valid mode: "sometimes""#);
}

// ---------------------------------------------------------------- lifecycle

#[test]
fn a_new_execution_is_queued_and_unstarted() {
    let before = Utc::now();
    let e = execution(BackgroundExecutionMode::FireAndForget, 50);
    let after = Utc::now();
    assert_eq!(e.status, BackgroundExecutionStatus::Queued);
    assert!(before <= e.queued_at && e.queued_at <= after);
    assert_eq!(e.started_at, None);
    assert_eq!(e.completed_at, None);
    assert_eq!(e.output, None);
    assert_eq!(e.error, None);
    assert!(!e.target_binding_applied);
    assert_eq!(e.attempt, 0);
    assert!(!e.is_finished());
    assert!(!e.is_success());
    assert_eq!(e.duration_ms(), None);
}

#[test]
fn start_marks_it_running_now() {
    let mut e = execution(BackgroundExecutionMode::FireAndForget, 50);
    let before = Utc::now();
    e.start();
    assert_eq!(e.status, BackgroundExecutionStatus::Running);
    let started = e.started_at.expect("started_at is set");
    assert!(started >= before && started <= Utc::now());
    assert!(!e.is_finished());
    assert!(!e.is_success());
    assert_eq!(e.duration_ms(), None, "no duration before the end");
}

#[test]
fn complete_records_the_output_and_succeeds() {
    let mut e = execution(BackgroundExecutionMode::Silent, 50);
    e.start();
    e.complete(json!({"answer": 42}));
    assert_eq!(e.status, BackgroundExecutionStatus::Completed);
    assert_eq!(e.output, Some(json!({"answer": 42})));
    assert!(e.completed_at.is_some());
    assert!(e.is_finished());
    assert!(e.is_success());
    let d = e.duration_ms().expect("a duration once started and ended");
    assert!(d >= 0);
}

#[test]
fn fail_records_the_error_and_does_not_succeed() {
    let mut e = execution(BackgroundExecutionMode::FireAndForget, 50);
    e.start();
    e.fail(ExecutionError::new("boom", "it broke"));
    assert_eq!(e.status, BackgroundExecutionStatus::Failed);
    assert_eq!(e.error, Some(ExecutionError::new("boom", "it broke")));
    assert_eq!(e.output, None);
    assert!(e.completed_at.is_some());
    assert!(e.is_finished());
    assert!(!e.is_success());
}

#[test]
fn cancel_finishes_without_success_even_when_never_started() {
    let mut e = execution(BackgroundExecutionMode::FireAndForget, 50);
    e.cancel();
    assert_eq!(e.status, BackgroundExecutionStatus::Cancelled);
    assert!(e.completed_at.is_some());
    assert!(e.is_finished());
    assert!(!e.is_success());
    assert_eq!(e.duration_ms(), None, "never started: no duration");
}

#[test]
fn timeout_records_a_timeout_error_naming_the_limit() {
    let mut e = BackgroundExecution::new(
        tenant("acme"),
        "sleep",
        BackgroundExecutionConfig {
            timeout_ms: 1_500,
            ..BackgroundExecutionConfig::default()
        },
    );
    e.start();
    e.timeout();
    assert_eq!(e.status, BackgroundExecutionStatus::Timeout);
    let error = e.error.as_ref().expect("a timeout error");
    assert_eq!(error.code, "timeout");
    assert!(error.message.contains("1500ms"), "{}", error.message);
    assert!(e.is_finished());
    assert!(!e.is_success());
}

#[test]
fn duration_is_the_milliseconds_from_start_to_end() {
    let mut e = execution(BackgroundExecutionMode::FireAndForget, 50);
    e.started_at = Some(at("2026-01-01T00:00:00Z"));
    assert_eq!(e.duration_ms(), None);
    e.completed_at = Some(at("2026-01-01T00:00:01.250Z"));
    assert_eq!(e.duration_ms(), Some(1_250));
    e.started_at = None;
    assert_eq!(e.duration_ms(), None);
}

#[test]
fn only_completed_counts_as_success_and_only_terminal_as_finished() {
    use BackgroundExecutionStatus::*;
    for (status, terminal) in [
        (Queued, false),
        (Running, false),
        (Completed, true),
        (Failed, true),
        (Cancelled, true),
        (Timeout, true),
    ] {
        let mut e = execution(BackgroundExecutionMode::FireAndForget, 50);
        e.status = status;
        assert_eq!(e.is_finished(), terminal, "{status}");
        assert_eq!(status.is_terminal(), terminal, "{status}");
        assert_eq!(e.is_success(), status == Completed, "{status}");
    }
}

// ---------------------------------------------------------------- queue

#[test]
fn the_queue_serves_higher_priority_first_then_fifo() {
    let mut q = BackgroundExecutionQueue::new();
    assert!(q.is_empty());
    assert_eq!(q.len(), 0);
    assert!(q.peek().is_none());
    assert!(q.dequeue().is_none());

    let low = execution(BackgroundExecutionMode::FireAndForget, 10);
    let high_first = execution(BackgroundExecutionMode::FireAndForget, 200);
    let mid = execution(BackgroundExecutionMode::FireAndForget, 50);
    let high_second = execution(BackgroundExecutionMode::FireAndForget, 200);
    let expected = vec![
        high_first.execution_id,
        high_second.execution_id,
        mid.execution_id,
        low.execution_id,
    ];
    for e in [low, high_first, mid, high_second] {
        q.enqueue(e);
    }
    assert_eq!(q.len(), 4);
    assert!(!q.is_empty());
    assert_eq!(q.execution_ids(), expected);
    assert_eq!(q.peek().unwrap().execution_id, expected[0]);
    assert_eq!(q.len(), 4, "peek leaves the queue alone");

    let mut served = Vec::new();
    while let Some(e) = q.dequeue() {
        served.push(e.execution_id);
        assert_eq!(q.len(), expected.len() - served.len());
    }
    assert_eq!(served, expected);
    assert!(q.is_empty());
    assert!(q.peek().is_none());
}

#[test]
fn a_later_enqueue_of_equal_priority_waits_behind_even_after_dequeues() {
    let mut q = BackgroundExecutionQueue::new();
    let a = execution(BackgroundExecutionMode::FireAndForget, 5);
    let b = execution(BackgroundExecutionMode::FireAndForget, 5);
    let c = execution(BackgroundExecutionMode::FireAndForget, 5);
    let (ida, idb, idc) = (a.execution_id, b.execution_id, c.execution_id);
    q.enqueue(a);
    q.enqueue(b);
    assert_eq!(q.dequeue().unwrap().execution_id, ida);
    q.enqueue(c);
    assert_eq!(q.execution_ids(), vec![idb, idc]);
}

#[test]
fn ten_thousand_random_items_come_out_in_sorted_reference_order() {
    let mut rng = SplitMix(0x5EED);
    let mut q = BackgroundExecutionQueue::new();
    // The reference: (priority, submission index), stably sorted by
    // priority descending keeps submission order within a priority.
    let mut reference: Vec<(u8, usize, ExecutionId)> = Vec::new();
    for i in 0..10_000 {
        // Few distinct priorities, so FIFO within a priority matters.
        let priority = match rng.below(4) {
            0 => rng.below(256) as u8,
            _ => [0u8, 50, 255][rng.below(3) as usize],
        };
        let e = execution(BackgroundExecutionMode::FireAndForget, priority);
        reference.push((priority, i, e.execution_id));
        q.enqueue(e);
    }
    reference.sort_by_key(|&(p, i, _)| (std::cmp::Reverse(p), i));
    let expected: Vec<ExecutionId> = reference.iter().map(|r| r.2).collect();
    assert_eq!(q.len(), 10_000);
    assert_eq!(q.execution_ids(), expected);
    for (n, id) in expected.iter().enumerate() {
        assert_eq!(q.peek().map(|e| e.execution_id), Some(*id));
        let e = q.dequeue().expect("not empty yet");
        assert_eq!(e.execution_id, *id, "item {n}");
    }
    assert!(q.is_empty());
}

#[test]
fn interleaved_enqueues_and_dequeues_match_a_reference() {
    let mut rng = SplitMix(7);
    let mut q = BackgroundExecutionQueue::new();
    let mut reference: std::collections::BTreeMap<(std::cmp::Reverse<u8>, u64), ExecutionId> =
        Default::default();
    let mut n = 0u64;
    for _ in 0..10_000 {
        if rng.below(3) == 0 {
            let expected = reference.pop_first().map(|(_, id)| id);
            assert_eq!(q.dequeue().map(|e| e.execution_id), expected);
        } else {
            let priority = rng.below(8) as u8 * 32;
            let e = execution(BackgroundExecutionMode::Silent, priority);
            n += 1;
            reference.insert((std::cmp::Reverse(priority), n), e.execution_id);
            q.enqueue(e);
        }
        assert_eq!(q.len(), reference.len());
        assert_eq!(q.is_empty(), reference.is_empty());
        assert_eq!(
            q.peek().map(|e| e.execution_id),
            reference.values().next().copied()
        );
    }
    assert_eq!(
        q.execution_ids(),
        reference.values().copied().collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------- constructors

#[test]
fn from_trigger_is_silent_and_remembers_its_trigger() {
    let trigger = TriggerId::new();
    let binding = TargetBindingConfig {
        target: "var:summary".into(),
        path: Some("/text".into()),
    };
    let retry = RetryConfig {
        max_attempts: 4,
        ..RetryConfig::default()
    };
    let context = HashMap::from([("user".to_string(), "u1".to_string())]);
    let e = BackgroundExecution::from_trigger(
        tenant("acme"),
        trigger,
        "summarize",
        Some("text".into()),
        Some(context.clone()),
        Some(binding.clone()),
        Some(retry.clone()),
    );
    assert_eq!(e.config.mode, BackgroundExecutionMode::Silent);
    assert!(e.is_silent());
    assert_eq!(e.trigger_id, Some(trigger));
    assert_eq!(e.callable_name, "summarize");
    assert_eq!(e.input.as_deref(), Some("text"));
    assert_eq!(e.context, Some(context));
    assert_eq!(e.config.target_binding, Some(binding));
    assert_eq!(e.config.retry, Some(retry));
    assert_eq!(e.config.max_attempts(), 4);
    assert_eq!(e.config.priority, 50);
    assert_eq!(e.config.timeout_ms, 300_000);
    assert_eq!(e.status, BackgroundExecutionStatus::Queued);
    assert_eq!(e.tenant_id.as_str(), "acme");
}

#[test]
fn inline_spawns_do_not_run_in_the_background() {
    let mode = SpawnMode::Inline;
    assert!(!BackgroundExecution::should_run_background(&mode));
    assert!(
        BackgroundExecution::from_spawn_mode(&mode, tenant("acme"), "echo", None, None).is_none()
    );
}

#[test]
fn foreground_children_do_not_run_in_the_background() {
    let mode = SpawnMode::Child {
        background: false,
        inherit_inbox: true,
        policies: Some(vec!["strict".into()]),
    };
    assert!(!BackgroundExecution::should_run_background(&mode));
    assert!(
        BackgroundExecution::from_spawn_mode(&mode, tenant("acme"), "echo", None, None).is_none()
    );
}

#[test]
fn background_children_become_queued_executions_with_the_default_config() {
    let mode = SpawnMode::Child {
        background: true,
        inherit_inbox: false,
        policies: None,
    };
    assert!(BackgroundExecution::should_run_background(&mode));
    let context = HashMap::from([("k".to_string(), "v".to_string())]);
    let e = BackgroundExecution::from_spawn_mode(
        &mode,
        tenant("globex"),
        "child",
        Some("in".into()),
        Some(context.clone()),
    )
    .expect("a background child is an execution");
    assert_eq!(e.tenant_id.as_str(), "globex");
    assert_eq!(e.callable_name, "child");
    assert_eq!(e.input.as_deref(), Some("in"));
    assert_eq!(e.context, Some(context));
    assert_eq!(e.config, BackgroundExecutionConfig::default());
    assert_eq!(e.status, BackgroundExecutionStatus::Queued);
    assert_eq!(e.trigger_id, None);
}

#[test]
fn max_attempts_is_one_without_retry_and_at_least_one_with_it() {
    let mut config = BackgroundExecutionConfig::default();
    assert_eq!(config.max_attempts(), 1);
    config.retry = Some(RetryConfig {
        max_attempts: 0,
        ..RetryConfig::default()
    });
    assert_eq!(config.max_attempts(), 1);
    config.retry = Some(RetryConfig::default());
    assert_eq!(config.max_attempts(), 3);
}

#[test]
fn a_binding_scheme_is_the_part_before_the_first_colon() {
    let binding = |t: &str| TargetBindingConfig {
        target: t.into(),
        path: None,
    };
    assert_eq!(binding("var:summary").scheme(), "var");
    assert_eq!(binding("kv:a:b").scheme(), "kv");
    assert_eq!(binding("plain").scheme(), "plain");
    assert_eq!(binding("").scheme(), "");
}

// ---------------------------------------------------------------- JSON shape

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

#[test]
fn a_new_execution_serializes_camel_case_with_absent_options_omitted() {
    let e = execution(BackgroundExecutionMode::FireAndForget, 50);
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(
        keys(&v),
        vec![
            "callableName",
            "config",
            "executionId",
            "queuedAt",
            "status",
            "targetBindingApplied",
            "tenantId",
        ]
    );
    assert_eq!(v["status"], "queued");
    assert_eq!(v["tenantId"], "acme");
    assert_eq!(v["executionId"], e.execution_id.to_string());
    assert_eq!(v["targetBindingApplied"], false);
    assert_eq!(
        v["config"],
        json!({"mode": "fire_and_forget", "priority": 50, "timeoutMs": 300000})
    );
    let back: BackgroundExecution = serde_json::from_value(v).unwrap();
    assert_eq!(back, e);
}

#[test]
fn a_full_execution_serializes_every_field_camel_case() {
    let mut e = BackgroundExecution::from_trigger(
        tenant("acme"),
        TriggerId::new(),
        "summarize",
        Some("text".into()),
        Some(HashMap::from([("k".into(), "v".into())])),
        Some(TargetBindingConfig {
            target: "var:summary".into(),
            path: Some("/a".into()),
        }),
        Some(RetryConfig::default()),
    );
    e.config.mode = BackgroundExecutionMode::Deferred;
    e.config.callback_url = Some("https://example.com/cb".into());
    e.metadata = Some(HashMap::from([("m".into(), json!(1))]));
    e.start();
    e.attempt = 2;
    e.not_before = Some(at("2026-01-01T00:00:00Z"));
    e.released_at = Some(at("2026-01-01T00:00:01Z"));
    e.idempotency_key = Some("key-1".into());
    e.callback_attempts = 1;
    e.callback_delivered = true;
    e.target_binding_error = Some(ExecutionError::new("bind", "no such var"));
    e.complete(json!("done"));
    e.error = Some(ExecutionError {
        code: "x".into(),
        message: "y".into(),
        details: Some(json!({"line": 3})),
    });
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(
        keys(&v),
        vec![
            "attempt",
            "callableName",
            "callbackAttempts",
            "callbackDelivered",
            "completedAt",
            "config",
            "context",
            "error",
            "executionId",
            "idempotencyKey",
            "input",
            "metadata",
            "notBefore",
            "output",
            "queuedAt",
            "releasedAt",
            "startedAt",
            "status",
            "targetBindingApplied",
            "targetBindingError",
            "tenantId",
            "triggerId",
        ]
    );
    assert_eq!(
        keys(&v["config"]),
        vec![
            "callbackUrl",
            "mode",
            "priority",
            "retry",
            "targetBinding",
            "timeoutMs"
        ]
    );
    assert_eq!(v["config"]["mode"], "deferred");
    assert_eq!(
        v["config"]["retry"],
        json!({"maxAttempts": 3, "initialDelayMs": 1000, "backoffMultiplier": 2.0, "maxDelayMs": 60000})
    );
    assert_eq!(
        v["config"]["targetBinding"],
        json!({"target": "var:summary", "path": "/a"})
    );
    assert_eq!(v["status"], "completed");
    assert_eq!(v["error"]["details"], json!({"line": 3}));
    let back: BackgroundExecution = serde_json::from_value(v).unwrap();
    assert_eq!(back, e);
}

#[test]
fn statuses_and_modes_are_snake_case_strings() {
    use BackgroundExecutionStatus::*;
    for (status, name) in [
        (Queued, "queued"),
        (Running, "running"),
        (Completed, "completed"),
        (Failed, "failed"),
        (Cancelled, "cancelled"),
        (Timeout, "timeout"),
    ] {
        assert_eq!(serde_json::to_value(status).unwrap(), json!(name));
        assert_eq!(status.as_str(), name);
        assert_eq!(status.to_string(), name);
        let back: BackgroundExecutionStatus = serde_json::from_value(json!(name)).unwrap();
        assert_eq!(back, status);
    }
    for (mode, name) in [
        (BackgroundExecutionMode::FireAndForget, "fire_and_forget"),
        (BackgroundExecutionMode::Silent, "silent"),
        (BackgroundExecutionMode::Deferred, "deferred"),
    ] {
        assert_eq!(serde_json::to_value(mode).unwrap(), json!(name));
    }
    assert!(serde_json::from_value::<BackgroundExecutionStatus>(json!("Queued")).is_err());
    assert_eq!(BackgroundExecutionStatus::default(), Queued);
}

#[test]
fn spawn_modes_are_tagged_by_type() {
    assert_eq!(
        serde_json::to_value(SpawnMode::Inline).unwrap(),
        json!({"type": "inline"})
    );
    let child = SpawnMode::Child {
        background: true,
        inherit_inbox: true,
        policies: Some(vec!["p".into()]),
    };
    assert_eq!(
        serde_json::to_value(&child).unwrap(),
        json!({"type": "child", "background": true, "inheritInbox": true, "policies": ["p"]})
    );
    let minimal: SpawnMode =
        serde_json::from_value(json!({"type": "child", "background": true})).unwrap();
    assert_eq!(
        minimal,
        SpawnMode::Child {
            background: true,
            inherit_inbox: false,
            policies: None
        }
    );
    assert_eq!(SpawnMode::default(), SpawnMode::Inline);
}

#[test]
fn an_empty_config_document_is_the_default_config() {
    let config: BackgroundExecutionConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(config, BackgroundExecutionConfig::default());
    assert_eq!(config.priority, 50);
    assert_eq!(config.timeout_ms, 300_000);
    assert_eq!(config.mode, BackgroundExecutionMode::FireAndForget);
    assert_eq!(config.target_binding, None);
    assert_eq!(config.callback_url, None);
    assert_eq!(config.retry, None);
    assert_eq!(
        BackgroundExecutionConfig::DEFAULT_PRIORITY,
        50,
        "the seed's default priority"
    );
    assert_eq!(BackgroundExecutionConfig::DEFAULT_TIMEOUT_MS, 300_000);
}

#[test]
fn a_partial_config_document_keeps_the_other_defaults() {
    let config: BackgroundExecutionConfig =
        serde_json::from_value(json!({"priority": 7, "retry": {"maxAttempts": 5}})).unwrap();
    assert_eq!(config.priority, 7);
    assert_eq!(config.timeout_ms, 300_000);
    assert_eq!(
        config.retry,
        Some(RetryConfig {
            max_attempts: 5,
            ..RetryConfig::default()
        })
    );
    let retry: RetryConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(retry, RetryConfig::default());
    assert_eq!(
        (
            retry.max_attempts,
            retry.initial_delay_ms,
            retry.max_delay_ms
        ),
        (3, 1_000, 60_000)
    );
    assert_eq!(retry.backoff_multiplier, 2.0);
}

#[test]
fn a_seed_shaped_document_deserializes_with_the_added_fields_defaulted() {
    let doc = json!({
        "executionId": "01936b2e-7c4a-7b3e-9f1a-2b3c4d5e6f70",
        "tenantId": "acme",
        "callableName": "summarize",
        "input": "some text",
        "context": {"user": "u1"},
        "config": {
            "mode": "silent",
            "priority": 80,
            "timeoutMs": 60000,
            "targetBinding": {"target": "var:summary"},
            "retry": {"maxAttempts": 2, "initialDelayMs": 500, "backoffMultiplier": 1.5, "maxDelayMs": 2000}
        },
        "status": "running",
        "queuedAt": "2026-01-01T00:00:00Z",
        "startedAt": "2026-01-01T00:00:02Z",
        "targetBindingApplied": false,
        "triggerId": "3f2b1c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
        "metadata": {"source": "cron", "n": 1}
    });
    let e: BackgroundExecution = serde_json::from_value(doc).unwrap();
    assert_eq!(
        e.execution_id.to_string(),
        "01936b2e-7c4a-7b3e-9f1a-2b3c4d5e6f70"
    );
    assert_eq!(e.tenant_id.as_str(), "acme");
    assert_eq!(e.callable_name, "summarize");
    assert_eq!(e.config.mode, BackgroundExecutionMode::Silent);
    assert_eq!(e.config.priority, 80);
    assert_eq!(e.config.timeout_ms, 60_000);
    assert_eq!(
        e.config.target_binding,
        Some(TargetBindingConfig {
            target: "var:summary".into(),
            path: None
        })
    );
    assert_eq!(e.config.max_attempts(), 2);
    assert_eq!(e.status, BackgroundExecutionStatus::Running);
    assert_eq!(e.queued_at, at("2026-01-01T00:00:00Z"));
    assert_eq!(e.started_at, Some(at("2026-01-01T00:00:02Z")));
    assert_eq!(
        e.trigger_id.map(|t| t.to_string()).as_deref(),
        Some("3f2b1c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d")
    );
    assert_eq!(e.metadata.as_ref().unwrap()["source"], json!("cron"));
    // The fields added beyond the seed take their defaults.
    assert_eq!(e.attempt, 0);
    assert_eq!(e.not_before, None);
    assert_eq!(e.released_at, None);
    assert_eq!(e.idempotency_key, None);
    assert_eq!(e.callback_attempts, 0);
    assert!(!e.callback_delivered);
    assert_eq!(e.target_binding_error, None);
}

#[test]
fn a_minimal_seed_document_defaults_config_and_status() {
    let e: BackgroundExecution = serde_json::from_value(json!({
        "executionId": "01936b2e-7c4a-7b3e-9f1a-2b3c4d5e6f70",
        "tenantId": "acme",
        "callableName": "echo",
        "queuedAt": "2026-01-01T00:00:00Z"
    }))
    .unwrap();
    assert_eq!(e.config, BackgroundExecutionConfig::default());
    assert_eq!(e.status, BackgroundExecutionStatus::Queued);
    assert!(!e.target_binding_applied);
}

#[test]
fn a_document_with_a_bad_tenant_id_is_refused() {
    let err = serde_json::from_value::<BackgroundExecution>(json!({
        "executionId": "01936b2e-7c4a-7b3e-9f1a-2b3c4d5e6f70",
        "tenantId": "no spaces",
        "callableName": "echo",
        "queuedAt": "2026-01-01T00:00:00Z"
    }))
    .unwrap_err();
    assert!(
        err.to_string()
            .contains(r#"not a valid tenant id: "no spaces""#),
        "{err}"
    );
}

// ---------------------------------------------------------------- identifiers

#[test]
fn tenant_ids_refuse_empty_overlong_and_bad_characters() {
    let err = "".parse::<TenantId>().unwrap_err();
    assert_eq!(err.to_string(), r#"not a valid tenant id: """#);

    let long = "a".repeat(129);
    let err = long.parse::<TenantId>().unwrap_err();
    assert!(
        err.to_string()
            .starts_with(r#"not a valid tenant id: "aaaa"#),
        "{err}"
    );
    assert!(
        err.to_string().len() < 129,
        "a long value is shortened: {err}"
    );

    for bad in ["a b", "a/b", "ümlaut", "tab\t", "semi;colon", "a@b"] {
        let err = bad.parse::<TenantId>().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("not a valid tenant id: {bad:?}"),
            "{bad:?}"
        );
    }
}

#[test]
fn tenant_ids_accept_letters_digits_and_dot_underscore_colon_dash() {
    for good in [
        "acme",
        "a.b_c:d-1",
        "A",
        "0",
        &"z".repeat(TenantId::MAX_LEN),
    ] {
        let t: TenantId = good.parse().unwrap_or_else(|e| panic!("{good:?}: {e}"));
        assert_eq!(t.as_str(), good);
        assert_eq!(t.to_string(), good);
        assert_eq!(serde_json::to_value(&t).unwrap(), json!(good));
    }
    assert_eq!(TenantId::MAX_LEN, 128);
    let random = TenantId::new();
    assert!(random.as_str().starts_with("tenant-"));
    assert_eq!(random.as_str().parse::<TenantId>().unwrap(), random);
}

#[test]
fn execution_ids_are_uuid_v7() {
    let id = ExecutionId::new();
    let s = id.to_string();
    assert_eq!(s.len(), 36);
    assert_eq!(&s[14..15], "7", "version nibble of {s}");
    assert!(
        matches!(&s[19..20], "8" | "9" | "a" | "b"),
        "variant of {s}"
    );
    assert_eq!(id.as_bytes()[6] >> 4, 7);
    assert_eq!(ExecutionId::from_bytes(*id.as_bytes()), id);
    assert_eq!(s.parse::<ExecutionId>().unwrap(), id);
    assert_eq!(serde_json::to_value(id).unwrap(), json!(s));
}

#[test]
fn execution_ids_made_in_sequence_sort_in_creation_order() {
    let ids: Vec<ExecutionId> = (0..10_000).map(|_| ExecutionId::new()).collect();
    for pair in ids.windows(2) {
        assert!(pair[0] < pair[1], "{} !< {}", pair[0], pair[1]);
        assert!(pair[0].as_bytes() < pair[1].as_bytes());
        assert!(pair[0].to_string() < pair[1].to_string());
    }
}

#[test]
fn id_parse_errors_name_the_kind_of_id_and_quote_the_value() {
    let err = "x".parse::<ExecutionId>().unwrap_err();
    assert_eq!(err.to_string(), r#"not a valid execution id: "x""#);
    let err = "".parse::<ExecutionId>().unwrap_err();
    assert_eq!(err.to_string(), r#"not a valid execution id: """#);
    let err = "nope".parse::<TriggerId>().unwrap_err();
    assert_eq!(err.to_string(), r#"not a valid trigger id: "nope""#);
    let long = "y".repeat(500);
    let msg = long.parse::<ExecutionId>().unwrap_err().to_string();
    assert!(
        msg.len() < 120,
        "a long value is shortened in the message: {msg}"
    );
    let err = serde_json::from_value::<ExecutionId>(json!("x")).unwrap_err();
    assert!(
        err.to_string().contains(r#"not a valid execution id: "x""#),
        "{err}"
    );
}

#[test]
fn trigger_ids_round_trip_through_text_and_json() {
    let t = TriggerId::new();
    assert_ne!(t, TriggerId::new());
    assert_eq!(t.to_string().parse::<TriggerId>().unwrap(), t);
    let back: TriggerId = serde_json::from_value(serde_json::to_value(t).unwrap()).unwrap();
    assert_eq!(back, t);
}

// ---------------------------------------------------------------- retry back-off

#[test]
fn retry_delays_grow_by_the_multiplier_up_to_the_cap() {
    let retry = RetryConfig::default();
    let delays: Vec<u64> = (1..=8).map(|n| retry.delay_ms(n)).collect();
    assert_eq!(
        delays,
        vec![1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]
    );
    assert_eq!(
        retry.delay_ms(0),
        1_000,
        "attempt 0 is treated as the first"
    );
    assert_eq!(retry.delay_ms(u32::MAX), 60_000, "no overflow, capped");

    let retry = RetryConfig {
        max_attempts: 5,
        initial_delay_ms: 100,
        backoff_multiplier: 1.5,
        max_delay_ms: 300,
    };
    let delays: Vec<u64> = (1..=5).map(|n| retry.delay_ms(n)).collect();
    assert_eq!(delays, vec![100, 150, 225, 300, 300]);
}

#[test]
fn retry_delays_never_shrink_or_exceed_the_cap_with_odd_multipliers() {
    for multiplier in [0.0, 0.5, -3.0, f64::NAN, f64::INFINITY, 1.0] {
        let retry = RetryConfig {
            max_attempts: 3,
            initial_delay_ms: 700,
            backoff_multiplier: multiplier,
            max_delay_ms: 5_000,
        };
        let mut previous = 0;
        for n in 1..=10 {
            let d = retry.delay_ms(n);
            assert!(d >= previous, "{multiplier}: shrank at {n}");
            assert!(d <= 5_000, "{multiplier}: over the cap at {n}");
            previous = d;
        }
        // A multiplier below 1 or not finite counts as 1: a constant wait.
        if !(multiplier.is_finite() && multiplier > 1.0) {
            assert_eq!(retry.delay_ms(7), 700, "{multiplier}: a constant wait");
        }
    }
    let zero_cap = RetryConfig {
        max_delay_ms: 0,
        ..RetryConfig::default()
    };
    assert_eq!(zero_cap.delay_ms(1), 0);
    let initial_over_cap = RetryConfig {
        initial_delay_ms: 10_000,
        max_delay_ms: 2_000,
        ..RetryConfig::default()
    };
    assert_eq!(initial_over_cap.delay_ms(1), 2_000);
}
