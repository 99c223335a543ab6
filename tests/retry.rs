//! Retrying by hand on a real ledger (sled, or PostgreSQL with
//! `LEDGER_TEST_BACKEND=postgres`), through the library, the CLI and
//! a real `ledger serve`: a failed, timed-out or cancelled execution runs
//! again as a new execution linked both ways, the original keeps the status
//! it ended with, and what may not be retried is refused with nothing
//! appended.

mod common;

use std::time::Duration;

use common::server::{client, error_code, json_of, Server};
use common::{ledger_cli, stderr, stdout};
use execution_ledger::{
    At, BackgroundExecutionMode, BackgroundExecutionStatus, CommandError, EventKind,
    ExecutionError, ExecutionId, Ledger, ListFilter, Refusal, Retry, Submission, TenantId,
};
use serde_json::{json, Value};

fn acme() -> TenantId {
    "acme".parse().unwrap()
}

fn submit(ledger: &Ledger, tenant: &TenantId, s: Submission) -> ExecutionId {
    ledger
        .submit(tenant, s)
        .wait()
        .unwrap()
        .execution
        .execution_id
}

/// An execution of acme's `callable` with `input` that failed for good.
fn failed(ledger: &Ledger, callable: &str, input: &str) -> ExecutionId {
    let mut s = Submission::new(callable);
    s.input = Some(input.into());
    s.context = Some([("region".to_string(), "eu".to_string())].into());
    let id = submit(ledger, &acme(), s);
    let c = ledger.claim(Some("w1")).wait().unwrap().unwrap();
    assert_eq!(c.execution_id, id);
    ledger
        .fail_permanently(id, 1, ExecutionError::new("upstream", "503 from the API"))
        .wait()
        .unwrap();
    id
}

/// A filter built by `set` from one that lets everything through.
fn filter(set: impl FnOnce(&mut ListFilter)) -> ListFilter {
    let mut f = ListFilter::new();
    set(&mut f);
    f
}

fn refusal(e: CommandError) -> Refusal {
    match e {
        CommandError::Transition(t) => t.refusal,
        other => panic!("expected a refusal, got {other}"),
    }
}

#[test]
fn a_retry_runs_a_new_execution_linked_both_ways_and_survives_reopening() {
    let store = common::store();
    let ledger = Ledger::open(store.path()).unwrap();
    let id = failed(&ledger, "charge", "order 17");
    let before = ledger.head().seq;

    let new = ledger
        .retry(
            id,
            Retry::new()
                .by("ops@acme")
                .reason("API back up")
                .attempts(3),
        )
        .wait()
        .unwrap();
    // Two events in one write: the original's `retried`, the new `queued`.
    assert_eq!(ledger.head().seq, before + 2);
    assert_ne!(new.execution_id, id);
    assert_eq!(new.status, BackgroundExecutionStatus::Queued);
    assert_eq!(new.retry_of, Some(id));
    assert_eq!(new.callable_name, "charge");
    assert_eq!(new.input.as_deref(), Some("order 17"));
    assert_eq!(new.context.as_ref().unwrap()["region"], "eu");
    assert_eq!(new.config.max_attempts(), 3);
    assert_eq!(new.attempt, 0);

    let original = ledger.get(id).unwrap();
    assert_eq!(original.status, BackgroundExecutionStatus::Failed);
    assert_eq!(original.retried_as, Some(new.execution_id));
    let history = ledger.history(id).unwrap();
    let last = history.last().unwrap();
    assert_eq!(last.seq, before + 1);
    match &last.kind {
        EventKind::Retried {
            by,
            reason,
            new_execution_id,
            attempts,
        } => {
            assert_eq!(by.as_deref(), Some("ops@acme"));
            assert_eq!(reason.as_deref(), Some("API back up"));
            assert_eq!(*new_execution_id, new.execution_id);
            assert_eq!(*attempts, 3);
        }
        other => panic!("expected retried, got {other:?}"),
    }
    let json = serde_json::to_value(last).unwrap();
    assert_eq!(json["type"], "retried");
    assert_eq!(json["newExecutionId"], new.execution_id.to_string());

    // The new run is runnable and runs; its attempts start from 1.
    let c = ledger.claim(Some("w2")).wait().unwrap().unwrap();
    assert_eq!(c.execution_id, new.execution_id);
    assert_eq!(c.attempt, 1);
    ledger
        .complete(new.execution_id, 1, json!({"charged": true}))
        .wait()
        .unwrap();

    // A second retry of the original is refused, naming the new run;
    // nothing is appended.
    let head = ledger.head().seq;
    let err = ledger.retry(id, Retry::new()).wait().unwrap_err();
    assert!(
        err.to_string().contains(&new.execution_id.to_string()),
        "{err}"
    );
    assert_eq!(
        refusal(err),
        Refusal::AlreadyRetried {
            retry: new.execution_id
        }
    );
    // A completed one is not retried.
    let err = ledger
        .retry(new.execution_id, Retry::new())
        .wait()
        .unwrap_err();
    assert_eq!(
        refusal(err),
        Refusal::Status(BackgroundExecutionStatus::Completed)
    );
    assert_eq!(ledger.head().seq, head);

    // Time travel: before the retry, the original was not retried yet.
    let then = ledger.execution_at(id, At::Seq(before)).unwrap().unwrap();
    assert_eq!(then.retried_as, None);
    assert_eq!(
        ledger
            .execution_at(id, At::Seq(before + 1))
            .unwrap()
            .unwrap()
            .retried_as,
        Some(new.execution_id)
    );

    // Reopened, everything folds again the same, and verify passes.
    drop(ledger);
    let ledger = Ledger::open(store.path()).unwrap();
    assert_eq!(ledger.get(id).unwrap().retried_as, Some(new.execution_id));
    let again = ledger.get(new.execution_id).unwrap();
    assert_eq!(again.retry_of, Some(id));
    assert_eq!(again.status, BackgroundExecutionStatus::Completed);
    let report = ledger.verify().unwrap();
    assert_eq!(report.events, ledger.head().seq);
    let rebuilt = ledger.rebuild_index().unwrap();
    assert_eq!(rebuilt.removed, 0, "{rebuilt:?}");
    let page = ledger
        .list(
            &filter(|f| f.statuses = vec![BackgroundExecutionStatus::Failed]),
            None,
            10,
        )
        .unwrap();
    assert_eq!(page.executions.len(), 1);
    assert_eq!(page.executions[0].retried_as, Some(new.execution_id));
}

#[test]
fn only_ended_executions_that_keep_their_payloads_are_retried() {
    let store = common::store();
    let ledger = Ledger::open(store.path()).unwrap();

    // Queued and running: refused by status.
    let queued = submit(&ledger, &acme(), Submission::new("echo"));
    let err = ledger.retry(queued, Retry::new()).wait().unwrap_err();
    assert_eq!(
        refusal(err),
        Refusal::Status(BackgroundExecutionStatus::Queued)
    );
    ledger.claim(None).wait().unwrap().unwrap();
    let err = ledger.retry(queued, Retry::new()).wait().unwrap_err();
    assert_eq!(
        refusal(err),
        Refusal::Status(BackgroundExecutionStatus::Running)
    );

    // Timed out and cancelled: retried.
    ledger.time_out(queued, 1).wait().unwrap();
    assert_eq!(
        ledger.get(queued).unwrap().status,
        BackgroundExecutionStatus::Timeout
    );
    let new = ledger.retry(queued, Retry::new()).wait().unwrap();
    assert_eq!(new.retry_of, Some(queued));
    assert_eq!(new.config.max_attempts(), 1, "the policy's attempts");
    ledger
        .cancel(new.execution_id, Some("wrong input".into()))
        .wait()
        .unwrap();
    let third = ledger.retry(new.execution_id, Retry::new()).wait().unwrap();
    assert_eq!(third.retry_of, Some(new.execution_id));
    ledger.cancel(third.execution_id, None).wait().unwrap();

    // A deferred one runs at once: not held again for a release.
    let mut s = Submission::new("report");
    s.config.mode = BackgroundExecutionMode::Deferred;
    let deferred = submit(&ledger, &acme(), s);
    ledger.cancel(deferred, None).wait().unwrap();
    let rerun = ledger.retry(deferred, Retry::new()).wait().unwrap();
    assert!(!rerun.is_held(), "{rerun:?}");
    let queue: Vec<ExecutionId> = ledger.queue(None).iter().map(|e| e.execution_id).collect();
    assert!(queue.contains(&rerun.execution_id), "{queue:?}");
    ledger.cancel(rerun.execution_id, None).wait().unwrap();

    // A redacted one's payloads are gone: refused.
    let gone = failed(&ledger, "charge", "card 4242");
    ledger.redact(gone, "erasure", None).wait().unwrap();
    let head = ledger.head().seq;
    let err = ledger.retry(gone, Retry::new()).wait().unwrap_err();
    assert_eq!(refusal(err), Refusal::AlreadyRedacted);

    // Bad input: named, nothing appended.
    for (retry, field) in [
        (Retry::new().attempts(0), "attempts"),
        (Retry::new().attempts(1001), "attempts"),
        (Retry::new().reason(" "), "reason"),
        (Retry::new().by(""), "by"),
    ] {
        let err = ledger.retry(queued, retry).wait().unwrap_err();
        assert!(matches!(err, CommandError::Invalid(_)), "{err}");
        assert!(err.to_string().starts_with(field), "{err}");
    }
    // Another tenant's, through a scoped handle: not found.
    let globex = ledger.tenant("globex".parse().unwrap());
    let err = globex.retry(queued, Retry::new()).wait().unwrap_err();
    assert!(matches!(err, CommandError::NotFound(_)), "{err}");
    let err = ledger
        .retry(ExecutionId::new(), Retry::new())
        .wait()
        .unwrap_err();
    assert!(matches!(err, CommandError::NotFound(_)), "{err}");
    assert_eq!(ledger.head().seq, head);
    ledger.verify().unwrap();
}

#[test]
fn a_bulk_retry_takes_what_its_filter_passes_once_and_a_dry_run_appends_nothing() {
    let store = common::store();
    let ledger = Ledger::open(store.path()).unwrap();
    let charges: Vec<ExecutionId> = (0..5)
        .map(|i| failed(&ledger, "charge", &format!("order {i}")))
        .collect();
    let mails: Vec<ExecutionId> = (0..3)
        .map(|i| failed(&ledger, "mail", &format!("mail {i}")))
        .collect();
    let done = submit(&ledger, &acme(), Submission::new("charge"));
    ledger.claim(None).wait().unwrap().unwrap();
    ledger.complete(done, 1, json!(1)).wait().unwrap();
    let head = ledger.head().seq;

    let only_charges = filter(|f| f.callable = Some("charge".into()));
    let dry = ledger
        .retry_matching(&only_charges, &Retry::new(), true)
        .unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.matched, 5);
    assert_eq!(ledger.head().seq, head, "a dry run appends nothing");

    let report = ledger
        .retry_matching(&only_charges, &Retry::new().reason("bulk"), false)
        .unwrap();
    assert_eq!(report.matched, 5);
    assert_eq!(report.retried.len(), 5);
    assert!(report.refused.is_empty());
    // Oldest submission first.
    let retried: Vec<ExecutionId> = report.retried.iter().map(|r| r.execution_id).collect();
    assert_eq!(retried, charges);
    for r in &report.retried {
        let new = ledger.get(r.new_execution_id.unwrap()).unwrap();
        assert_eq!(new.retry_of, Some(r.execution_id));
    }
    assert_eq!(ledger.head().seq, head + 10);

    // Again: nothing left to take (each was retried once).
    let again = ledger
        .retry_matching(&only_charges, &Retry::new(), false)
        .unwrap();
    assert_eq!(again.matched, 0);
    // The mails are still there; a status the retry does not take is refused.
    let all = ledger
        .retry_matching(&ListFilter::new(), &Retry::new(), true)
        .unwrap();
    assert_eq!(all.matched, mails.len());
    let err = ledger
        .retry_matching(
            &filter(|f| f.statuses = vec![BackgroundExecutionStatus::Completed]),
            &Retry::new(),
            true,
        )
        .unwrap_err();
    assert!(err.to_string().starts_with("status: completed"), "{err}");
    ledger.verify().unwrap();
}

#[test]
fn the_cli_retries_one_execution_or_a_filter_of_them() {
    let store = common::store();
    let cli = |args: &[&str]| ledger_cli(store.path(), args);
    let mut ids = Vec::new();
    for input in ["a", "b"] {
        let o = cli(&[
            "submit",
            "--tenant",
            "acme",
            "--callable",
            "fail",
            "--input",
            input,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        ids.push(stdout(&o).trim().to_owned());
    }
    let o = cli(&["run", "--workers", "1", "--exit-when-idle"]);
    assert!(o.status.success(), "{}", stderr(&o));

    let o = cli(&[
        "retry",
        &ids[0],
        "--reason",
        "fixed",
        "--by",
        "ops",
        "--attempts",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let new = stdout(&o).trim().to_owned();
    let _: ExecutionId = new.parse().expect("prints the new run's id");
    let o = cli(&["--json", "show", &ids[0]]);
    let shown: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(shown["status"], "failed");
    assert_eq!(shown["retriedAs"], new.as_str());
    let o = cli(&["history", &ids[0]]);
    assert!(
        stdout(&o).contains(&format!(
            "retried  as {new} with 2 attempt(s): fixed (by ops)"
        )),
        "{}",
        stdout(&o)
    );

    // Refusals: one line, exit 1; bad input: exit 2; nothing appended.
    let head = stdout(&cli(&["head"]));
    let o = cli(&["retry", &ids[0]]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o).trim(),
        format!(
            "error: cannot retry {}: it was retried already, as {new} (retry that one)",
            ids[0]
        )
    );
    let o = cli(&["retry", &ids[1], "--attempts", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = cli(&["retry", "--status", "running"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("status: running"), "{}", stderr(&o));
    let o = cli(&["retry"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(stdout(&cli(&["head"])), head);

    // The bulk form: a dry run counts; the run retries the one left.
    let o = cli(&[
        "retry",
        "--status",
        "failed",
        "--callable",
        "fail",
        "--dry-run",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("dry run: 1 execution(s) would be retried"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains(&format!("would retry {}", ids[1])));
    assert_eq!(stdout(&cli(&["head"])), head);
    let o = cli(&["--json", "retry", "--status", "failed"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["matched"], 1);
    assert_eq!(report["retried"][0]["executionId"], ids[1].as_str());
    let o = cli(&["verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_retries_by_hand_and_keeps_tenants_apart() {
    let dir = tempfile::tempdir().unwrap();
    let acme_key = "acme-secret-key";
    let globex_key = "globex-secret-key";
    let server = Server::with_keys(
        dir.path(),
        json!([
            {"tenant": "acme", "sha256": common::server::sha256_hex(acme_key)},
            {"tenant": "globex", "sha256": common::server::sha256_hex(globex_key)},
        ]),
    );
    let c = client();
    let auth = |k: &str| format!("Bearer {k}");
    let post = |path: &str, key: &str, body: Option<Value>| {
        let r = c.post(server.url(path)).header("authorization", auth(key));
        match body {
            Some(b) => r.json(&b),
            None => r,
        }
        .send()
    };
    let mut ids = Vec::new();
    for i in 0..3 {
        let (status, body) = json_of(
            post(
                "/v1/executions",
                acme_key,
                Some(json!({"callableName": "fail", "input": format!("x{i}")})),
            )
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["executionId"].as_str().unwrap().to_owned());
    }
    // The runtime runs them: `fail` fails for good.
    for id in &ids {
        let mut tries = 0;
        loop {
            let (_, e) = json_of(
                c.get(server.url(&format!("/v1/executions/{id}")))
                    .header("authorization", auth(acme_key))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            if e["status"] == "failed" {
                break;
            }
            tries += 1;
            assert!(tries < 200, "{e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Another tenant's: 404, as for any other command.
    let (status, body) = json_of(
        post(
            &format!("/v1/executions/{}/retry", ids[0]),
            globex_key,
            None,
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    // Unknown fields are refused.
    let (status, body) = json_of(
        post(
            &format!("/v1/executions/{}/retry", ids[0]),
            acme_key,
            Some(json!({"attempt": 2})),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("attempt"),
        "{body}"
    );

    // One: 201 with the new run, which the runtime runs (and fails again).
    let (status, new) = json_of(
        post(
            &format!("/v1/executions/{}/retry", ids[0]),
            acme_key,
            Some(json!({"reason": "try again", "attempts": 1})),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{new}");
    assert_eq!(new["retryOf"], ids[0].as_str());
    let new_id = new["executionId"].as_str().unwrap().to_owned();
    let (_, events) = json_of(
        c.get(server.url(&format!("/v1/executions/{}/events", ids[0])))
            .header("authorization", auth(acme_key))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let events = events.as_array().expect("a list of events");
    let retried = events.last().unwrap();
    assert_eq!(retried["type"], "retried");
    assert_eq!(retried["by"], "api:acme");
    assert_eq!(retried["newExecutionId"], new_id.as_str());
    let (status, result) = common::server::result_of(&c_with(acme_key), &server, &new_id).await;
    assert_eq!(status, 200, "{result}");

    // Again: 409, naming the new run.
    let (status, body) = json_of(
        post(&format!("/v1/executions/{}/retry", ids[0]), acme_key, None)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains(&new_id),
        "{body}"
    );

    // Bulk: globex sees none of acme's; acme's dry run counts the two left
    // (and the new run, failed too), then retries them.
    let bulk = |key: &'static str, body: Value| post("/v1/executions/retry", key, Some(body));
    let (status, report) = json_of(
        bulk(globex_key, json!({"status": "failed", "dryRun": true}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["matched"], 0);
    let (_, report) = json_of(
        bulk(acme_key, json!({"status": "failed", "dryRun": true}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(report["matched"], 3, "{report}");
    let (status, report) = json_of(
        bulk(acme_key, json!({"callableName": "fail", "reason": "bulk"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["retried"].as_array().unwrap().len(), 3, "{report}");
    let (status, body) = json_of(
        bulk(acme_key, json!({"status": "completed"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "invalid", "{body}");
    let (status, body) =
        json_of(bulk(acme_key, json!({"statuses": "failed"})).await.unwrap()).await;
    assert_eq!(status, 400, "{body}");
    drop(server);
}

/// A client that sends `key` with every request.
fn c_with(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {key}").parse().unwrap());
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}
