//! The fuzz targets' bodies over their committed corpus, as ordinary tests:
//! CI runs every input the fuzzers found interesting without nightly or
//! cargo-fuzz. See `fuzz/README.md` for running the fuzzers themselves.
//!
//! `cargo test --test fuzz_corpus -- --ignored write_seed_corpus` writes
//! the hand-made seeds (`seed-*` files): records and events of a real ledger,
//! damaged variants of them, and scripts of the state machine's commands.

mod fuzz_bodies;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use execution_ledger::fuzzing::encode_record;
use execution_ledger::{
    BackgroundExecutionMode, Event, ExecutionError, Ledger, RetryConfig, Submission,
    TargetBindingConfig, TenantId,
};
use fuzz_bodies::state_machine::{
    ADVANCE, BACKDATED, BIND, CALLBACK, CANCEL, CLAIM, COMPLETE, CURRENT, FAIL, NEXT, OTHER_TENANT,
    PREVIOUS, RAW, RECOVER, RELEASE, RESUBMIT, SUBMIT, TIMEOUT,
};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// Runs `body` over every file of the target's corpus; fails naming every
/// input that panicked.
fn run_corpus(target: &str, body: fn(&[u8])) {
    let dir = corpus(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "{}: only {} inputs",
        dir.display(),
        files.len()
    );
    let failed: Vec<String> = files
        .iter()
        .filter(|file| {
            let data = std::fs::read(file).expect("a readable corpus file");
            catch_unwind(AssertUnwindSafe(|| body(&data))).is_err()
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target} failed on {failed:#?}");
}

#[test]
fn record_decoder_corpus() {
    run_corpus("record_decoder", fuzz_bodies::record_decoder);
}

#[test]
fn event_json_corpus() {
    run_corpus("event_json", fuzz_bodies::event_json);
}

#[test]
fn state_machine_corpus() {
    run_corpus("state_machine", fuzz_bodies::state_machine);
}

// ====================================================================== seeds

/// Writes the hand-made seeds into `fuzz/corpus/<target>/seed-<name>`.
#[test]
#[ignore = "writes the seed corpus; run by hand after changing the seeds"]
fn write_seed_corpus() {
    let events = ledger_events();
    let mut seeds: Vec<(&str, String, Vec<u8>)> = Vec::new();
    for (name, data) in record_seeds(&events) {
        seeds.push(("record_decoder", name, data));
    }
    for (name, data) in event_seeds(&events) {
        seeds.push(("event_json", name, data));
    }
    for (name, data) in script_seeds() {
        seeds.push(("state_machine", name.to_string(), data));
    }
    for (target, name, data) in seeds {
        let dir = corpus(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    }
}

/// The seeds themselves are valid inputs (so a seed that trips a body is
/// found here, not only once written).
#[test]
fn seeds_pass_their_bodies() {
    let events = ledger_events();
    for (_, data) in record_seeds(&events) {
        fuzz_bodies::record_decoder(&data);
    }
    for (_, data) in event_seeds(&events) {
        fuzz_bodies::event_json(&data);
    }
    for (_, data) in script_seeds() {
        fuzz_bodies::state_machine(&data);
    }
}

fn tenant(name: &str) -> TenantId {
    name.parse().unwrap()
}

/// The events of a real ledger that went through every kind of event.
fn ledger_events() -> Vec<Event> {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let (acme, globex) = (tenant("acme"), tenant("globex"));

    let mut a = Submission::new("summarize");
    a.input = Some("a long text, with \"quotes\" and ünïcödé".into());
    a.context = Some([("lang".to_string(), "en".to_string())].into());
    a.metadata = Some([("source".to_string(), serde_json::json!({"page": 3}))].into());
    a.trigger_id = Some("00000000-0000-4000-8000-000000000007".parse().unwrap());
    a.idempotency_key = Some("req-1".into());
    a.config.priority = 80;
    a.config.mode = BackgroundExecutionMode::Silent;
    a.config.target_binding = Some(TargetBindingConfig {
        target: "var:summary".into(),
        path: Some("/text".into()),
    });
    a.config.retry = Some(RetryConfig {
        max_attempts: 2,
        initial_delay_ms: 0,
        backoff_multiplier: 2.0,
        max_delay_ms: 1_000,
    });
    let a = ledger
        .submit(&acme, a)
        .wait()
        .unwrap()
        .execution
        .execution_id;
    let mut b = Submission::new("report");
    b.config.mode = BackgroundExecutionMode::Deferred;
    b.config.callback_url = Some("https://example.com/callback".into());
    let b = ledger
        .submit(&globex, b)
        .wait()
        .unwrap()
        .execution
        .execution_id;
    let c = ledger
        .submit(&acme, Submission::new("echo"))
        .wait()
        .unwrap();
    let c = c.execution.execution_id;

    let claimed = ledger.claim(Some("worker-1")).wait().unwrap().unwrap();
    assert_eq!(claimed.execution_id, a);
    let error = ExecutionError {
        code: "boom".into(),
        message: "it broke".into(),
        details: Some(serde_json::json!({"line": 12, "retryable": true})),
    };
    ledger.fail(a, 1, error).wait().unwrap(); // retry_scheduled
    let claimed = ledger.claim(None).wait().unwrap().unwrap();
    assert_eq!((claimed.execution_id, claimed.attempt), (a, 2));
    let output = serde_json::json!({"text": "short", "score": 0.875, "tags": ["x", null]});
    ledger.complete(a, 2, output).wait().unwrap();
    ledger.record_binding(a, None).wait().unwrap();

    ledger.release(b).wait().unwrap();
    // acme's worker (globex, which has not had a turn, would go first).
    let acme_worker = ledger.tenant(acme.clone());
    assert_eq!(
        acme_worker
            .claim(None)
            .wait()
            .unwrap()
            .unwrap()
            .execution_id,
        c
    );
    ledger.time_out(c, 1).wait().unwrap();
    assert_eq!(ledger.claim(None).wait().unwrap().unwrap().execution_id, b);
    ledger
        .fail_permanently(b, 1, ExecutionError::new("bad_input", "no such report"))
        .wait()
        .unwrap();
    ledger
        .record_callback(b, Err((Some(503), "unavailable".into())))
        .wait()
        .unwrap();
    ledger.record_callback(b, Ok(200)).wait().unwrap();

    let d = ledger
        .submit(&acme, Submission::new("echo"))
        .wait()
        .unwrap();
    ledger
        .cancel(d.execution.execution_id, Some("not needed".into()))
        .wait()
        .unwrap();
    let e = ledger
        .submit(&globex, Submission::new("sleep"))
        .wait()
        .unwrap();
    assert_eq!(
        ledger.claim(None).wait().unwrap().unwrap().execution_id,
        e.execution.execution_id
    );
    assert_eq!(ledger.recover_abandoned().wait().unwrap().len(), 1);

    let events: Vec<Event> = ledger.events(1, None).map(Result::unwrap).collect();
    let kinds: std::collections::BTreeSet<&str> = events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(kinds.len(), 12, "every kind of event: {kinds:?}");
    events
}

fn json(event: &Event) -> Vec<u8> {
    serde_json::to_vec(event).unwrap()
}

/// A `record_decoder` input: mode, seq, then the rest.
fn record_input(mode: u8, seq: u64, rest: &[u8]) -> Vec<u8> {
    let mut v = vec![mode];
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(rest);
    v
}

/// The ledger's records, chained as the store writes them, and damaged or
/// misplaced copies of some.
fn record_seeds(events: &[Event]) -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let mut prev = [0u8; 32];
    let mut records = Vec::new();
    for event in events {
        let (record, hash) = encode_record(event.seq, &prev, &json(event));
        let name = format!("{:02}-{}", event.seq, event.kind.name());
        seeds.push((name, record_input(0, event.seq, &record)));
        records.push((event.seq, prev, record));
        prev = hash;
    }
    let (seq, prev, record) = records[2].clone();
    let mut flipped = record.clone();
    flipped[80] ^= 0x20;
    let mut version = record.clone();
    version[0] = 2;
    seeds.extend([
        ("flipped-byte".into(), record_input(0, seq, &flipped)),
        ("version-2".into(), record_input(0, seq, &version)),
        ("header-only".into(), record_input(0, seq, &record[..65])),
        ("short".into(), record_input(0, seq, &record[..40])),
        ("other-seq".into(), record_input(0, seq + 1, &record)),
        ("empty".into(), Vec::new()),
    ]);
    // Sealed (mode 1): prev and JSON, given a correct hash by the body.
    let sealed = |seq: u64, json: &[u8]| {
        let mut rest = prev.to_vec();
        rest.extend_from_slice(json);
        record_input(1, seq, &rest)
    };
    let event = &events[seq as usize - 1];
    seeds.extend([
        ("sealed-event".into(), sealed(seq, &json(event))),
        (
            "sealed-event-of-other-seq".into(),
            sealed(seq + 7, &json(event)),
        ),
        (
            "sealed-not-json".into(),
            sealed(seq, b"{\"seq\": 3, \"at\":"),
        ),
        ("sealed-not-an-event".into(), sealed(seq, b"{\"seq\":3}")),
        ("sealed-max-seq".into(), sealed(u64::MAX, &json(event))),
    ]);
    seeds
}

/// The ledger's events as JSON, and documents at the edges of the format.
fn event_seeds(events: &[Event]) -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|e| (format!("{:02}-{}", e.seq, e.kind.name()), json(e)))
        .collect();
    let envelope =
        r#""seq":1,"executionId":"0193a5b0-7e1c-7000-8000-000000000001","tenantId":"acme""#;
    let doc = |at: &str, rest: &str| format!(r#"{{{envelope},"at":"{at}",{rest}}}"#).into_bytes();
    let t = "2026-01-01T00:00:00Z";
    let max: DateTime<Utc> = DateTime::<Utc>::MAX_UTC;
    seeds.extend([
        // The seed file's shape: nothing beyond the original fields.
        (
            "queued-minimal".into(),
            doc(t, r#""type":"queued","callableName":"echo""#),
        ),
        (
            "queued-full-config".into(),
            doc(
                t,
                r#""type":"queued","callableName":"echo","runAt":"2026-01-01T00:00:05.5+02:00","config":{"mode":"deferred","priority":255,"timeoutMs":1,"callbackUrl":"http://h/cb","retry":{"maxAttempts":0,"initialDelayMs":18446744073709551615,"backoffMultiplier":1e308,"maxDelayMs":0}}"#,
            ),
        ),
        (
            "retry-at-the-end-of-time".into(),
            doc(
                t,
                &format!(
                    r#""type":"retry_scheduled","attempt":1,"error":{{"code":"c","message":"m","details":null}},"notBefore":{}"#,
                    serde_json::to_string(&max).unwrap()
                ),
            ),
        ),
        (
            "leap-second".into(),
            doc("2016-12-31T23:59:60.5Z", r#""type":"released""#),
        ),
        (
            "completed-odd-output".into(),
            doc(
                "2026-01-01T00:00:00.123456789-11:30",
                r#""type":"completed","attempt":4294967295,"output":{"f":30.366074329203574,"n":-0.0,"big":18446744073709551616,"s":"\ud83d\ude00\u0000"}"#,
            ),
        ),
        (
            "callback-failed".into(),
            doc(
                t,
                r#""type":"callback_failed","attempt":5,"statusCode":65535,"error":"""#,
            ),
        ),
        (
            "binding-failed".into(),
            doc(
                t,
                r#""type":"target_binding_applied","target":"var:x","error":{"code":"no_value","message":"nothing at /a"}"#,
            ),
        ),
        (
            "unknown-type".into(),
            doc(t, r#""type":"exploded""#),
        ),
    ]);
    seeds
}

/// Scripts of the state machine's commands (see `state_machine.rs`), one
/// command a line.
fn script_seeds() -> Vec<(&'static str, Vec<u8>)> {
    // SUBMIT arguments: tenant, priority, flags, attempts, delays, run_at.
    const PLAIN: u8 = 0;
    const DEFERRED: u8 = 2;
    const BINDING: u8 = 4;
    const CALLBACK_URL: u8 = 8;
    const RETRY: u8 = 16;
    const RUN_AT: u8 = 32;
    const ANY: u8 = 3;
    let scripts: [(&str, &[&[u8]]); 13] = [
        (
            "complete",
            &[
                &[SUBMIT, 0, 1, PLAIN, 0, 0, 0],
                &[CLAIM, ANY],
                &[COMPLETE, 0, 1, 0],
            ],
        ),
        (
            "retry-then-timeout-then-complete",
            &[
                &[SUBMIT, 0, 1, RETRY, 3, 0b0001_0101, 0],
                &[CLAIM, ANY],
                &[FAIL, 0, 0],
                &[CLAIM, ANY],
                &[ADVANCE, 10],
                &[CLAIM, ANY],
                &[TIMEOUT, 0, 0],
                &[ADVANCE, 239],
                &[CLAIM, ANY],
                &[COMPLETE, 0, 3, 0],
            ],
        ),
        (
            "retries-used-up",
            &[
                &[SUBMIT, 1, 0, RETRY, 2, 0, 0],
                &[CLAIM, 1],
                &[FAIL, 0, 0],
                &[CLAIM, 1],
                &[FAIL, 0, 0],
                &[CLAIM, 1],
            ],
        ),
        (
            "deferred-binding-callbacks",
            &[
                &[SUBMIT, 2, 2, DEFERRED | BINDING | CALLBACK_URL, 0, 0, 0],
                &[CLAIM, ANY],
                &[RELEASE, 0, 0],
                &[RELEASE, 0, 0],
                &[CLAIM, 2],
                &[COMPLETE, 0, 2, 0],
                &[BIND, 0, 0, 0],
                &[CALLBACK, 0, 1, CURRENT, 0],
                &[CALLBACK, 0, 0, PREVIOUS, 0],
                &[CALLBACK, 0, 0, CURRENT, 0],
                &[CALLBACK, 0, 0, CURRENT, 0],
            ],
        ),
        (
            "callbacks-given-up",
            &[
                &[SUBMIT, 0, 0, DEFERRED | CALLBACK_URL, 0, 0, 0],
                &[CANCEL, 0, 0],
                &[CALLBACK, 0, 1, CURRENT, 0],
                &[CALLBACK, 0, 1, CURRENT, 0],
                &[CALLBACK, 0, 1, CURRENT, 0],
                &[CALLBACK, 0, 1, CURRENT, 0],
                &[CALLBACK, 0, 1, CURRENT, 0],
                &[CALLBACK, 0, 1, CURRENT, 0],
            ],
        ),
        (
            "priorities-and-tenants",
            &[
                &[SUBMIT, 0, 0, PLAIN, 0, 0, 0],
                &[SUBMIT, 1, 2, PLAIN, 0, 0, 0],
                &[SUBMIT, 2, 1, PLAIN, 0, 0, 0],
                &[SUBMIT, 0, 2, PLAIN, 0, 0, 0],
                &[SUBMIT, 1, 7, PLAIN, 0, 0, 0],
                &[CLAIM, 0],
                &[CLAIM, ANY],
                &[CLAIM, 2],
                &[CLAIM, ANY],
                &[CLAIM, ANY],
                &[CLAIM, ANY],
            ],
        ),
        (
            "stale-answers-after-recovery",
            &[
                &[SUBMIT, 0, 1, RETRY, 3, 0, 0],
                &[CLAIM, ANY],
                &[RECOVER, 0, 0],
                &[CLAIM, ANY],
                &[RAW, 0, 1, PREVIOUS, 1, 0],
                &[RAW, 0, 0, NEXT, 0, 0],
                &[RAW, 0, 4, CURRENT, 20, 0],
                &[ADVANCE, 100],
                &[CLAIM, ANY],
                &[RAW, 0, 5, CURRENT, 1, 0],
                &[COMPLETE, 0, 0, 0],
            ],
        ),
        (
            "cancel-then-everything",
            &[
                &[SUBMIT, 0, 1, PLAIN, 0, 0, 0],
                &[CANCEL, 0, 0],
                &[COMPLETE, 0, 0, 0],
                &[CANCEL, 0, 0],
                &[RELEASE, 0, 0],
                &[BIND, 0, 0, 0],
                &[RESUBMIT, 0],
                &[CLAIM, ANY],
            ],
        ),
        (
            "run-at",
            &[
                &[SUBMIT, 0, 1, DEFERRED | RUN_AT, 0, 0, 50],
                &[SUBMIT, 1, 1, RUN_AT, 0, 0, 200],
                &[CLAIM, ANY],
                &[ADVANCE, 100],
                &[CLAIM, ANY],
                &[CLAIM, ANY],
                &[RELEASE, 0, 0],
            ],
        ),
        (
            "wrong-tenant-backdated-unknown",
            &[
                &[SUBMIT, 0, 1, PLAIN, 0, 0, 0],
                &[ADVANCE, 20],
                &[CLAIM, ANY],
                &[COMPLETE, 0, 0, OTHER_TENANT],
                &[COMPLETE, 0, 0, BACKDATED],
                &[COMPLETE, 1, 0, 0],
                &[CANCEL, 0, BACKDATED | 8],
                &[ADVANCE, 1],
                &[CANCEL, 0, 0],
            ],
        ),
        (
            // Dated between a deferred execution's submission and its
            // release: refused as backdated.
            "backdated-before-release",
            &[
                &[SUBMIT, 0, 1, DEFERRED, 0, 0, 0],
                &[ADVANCE, 10],
                &[RELEASE, 0, 0],
                &[CANCEL, 0, BACKDATED],
                &[CLAIM, ANY],
                &[RAW, 0, 0, CURRENT, 0, BACKDATED],
            ],
        ),
        (
            "huge-backoff",
            &[
                &[SUBMIT, 0, 1, RETRY, 2, 0b0011_0011, 0],
                &[CLAIM, ANY],
                &[TIMEOUT, 0, 0],
                &[ADVANCE, 255],
                &[CLAIM, ANY],
                &[CANCEL, 0, 0],
            ],
        ),
        (
            "recovered-after-last-attempt",
            &[
                &[SUBMIT, 0, 1, PLAIN, 0, 0, 0],
                &[CLAIM, ANY],
                &[RAW, 0, 5, CURRENT, 0, 0],
                &[RECOVER, 0, 0],
                &[CLAIM, ANY],
            ],
        ),
    ];
    scripts
        .into_iter()
        .map(|(name, commands)| (name, commands.concat()))
        .collect()
}
