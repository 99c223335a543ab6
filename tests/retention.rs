//! Retention policies on a real sled ledger, driven by a clock the test
//! moves: payloads are redacted the policy's span after settling, not
//! before; legal hold (an execution's, or a whole tenant's in the policy)
//! wins over the policy; a dry run counts and appends nothing; a pass over
//! what was done already appends nothing.

use chrono::TimeDelta;
use execution_ledger::{
    EventKind, ExecutionId, Ledger, RetentionPolicy, RetentionReport, Submission, TenantId,
};

fn tenant(name: &str) -> TenantId {
    name.parse().unwrap()
}

/// A settled execution of `tenant`'s whose input carries a secret.
fn settled(ledger: &Ledger, tenant_name: &str) -> ExecutionId {
    let mut s = Submission::new("mail");
    s.input = Some(format!("secret of {tenant_name}"));
    let id = ledger
        .submit(&tenant(tenant_name), s)
        .wait()
        .unwrap()
        .execution
        .execution_id;
    let c = ledger.claim(Some("w")).wait().unwrap().unwrap();
    ledger
        .complete(c.execution_id, c.attempt, serde_json::json!("done"))
        .wait()
        .unwrap();
    id
}

fn redacted(ledger: &Ledger, id: ExecutionId) -> bool {
    ledger.get(id).unwrap().redacted_at.is_some()
}

#[test]
fn policies_redact_after_their_span_and_holds_win() {
    let dir = tempfile::tempdir().unwrap();
    let clock = common::TestClock::new();
    let ledger = Ledger::builder(dir.path())
        .clock(clock.clone())
        .open()
        .unwrap();
    let policy = RetentionPolicy::from_json(
        br#"{"tenants": {
                "acme": {"redactAfter": "30d"},
                "globex": {"redactAfter": "7d", "hold": "litigation 2026-44"},
                "initech": {}
             }}"#,
    )
    .unwrap();
    let acme: Vec<ExecutionId> = (0..3).map(|_| settled(&ledger, "acme")).collect();
    let globex: Vec<ExecutionId> = (0..2).map(|_| settled(&ledger, "globex")).collect();
    let initech = settled(&ledger, "initech");
    // Submitted now, settled on day 5: due from day 35, not day 30.
    let mut s = Submission::new("mail");
    s.input = Some("secret of acme".into());
    let slow = ledger
        .submit(&tenant("acme"), s)
        .wait()
        .unwrap()
        .execution
        .execution_id;
    clock.advance(TimeDelta::days(5));
    let c = ledger.claim(Some("w")).wait().unwrap().unwrap();
    assert_eq!(c.execution_id, slow);
    ledger
        .complete(slow, 1, serde_json::json!("done"))
        .wait()
        .unwrap();
    // Held on day 5: a hold does not move when it settled.
    ledger.hold(acme[2], "audit", None).wait().unwrap();
    // Submitted and settled later: not due when the others are.
    let late = settled(&ledger, "acme");

    // Day 10: acme's are kept (30 days); globex's are due but its tenant
    // is held.
    clock.advance(TimeDelta::days(5));
    let head = ledger.head().seq;
    let report = ledger.retain(&policy, false, go).unwrap();
    assert_eq!(
        (report.examined, report.due, report.redacted, report.held),
        (2, 2, 0, 2),
        "{report:?}"
    );
    assert_eq!(ledger.head().seq, head, "nothing appended");

    // Day 31: the first three of acme's are due, one under its own hold;
    // the slow one (submitted before, settled on day 5) and the late one
    // are not.
    clock.advance(TimeDelta::days(21));
    let mut seen = Vec::new();
    let dry = ledger
        .retain(&policy, true, |r| {
            seen.push(r.examined);
            go(r)
        })
        .unwrap();
    let counts =
        |r: &RetentionReport| (r.dry_run, r.examined, r.due, r.redacted, r.held, r.already);
    assert_eq!(counts(&dry), (true, 6, 5, 0, 3, 0), "{dry:?}");
    assert_eq!(
        seen,
        [1, 2, 3, 4, 5, 6],
        "progress after each one looked at"
    );
    assert_eq!(ledger.head().seq, head, "a dry run appends nothing");
    assert!(acme.iter().all(|id| !redacted(&ledger, *id)));

    let done = ledger.retain(&policy, false, go).unwrap();
    assert_eq!(
        (done.examined, done.due, done.redacted, done.held),
        (6, 5, 2, 3),
        "{done:?}"
    );
    assert_eq!(ledger.head().seq, head + 2);
    assert!(redacted(&ledger, acme[0]) && redacted(&ledger, acme[1]));
    assert!(!redacted(&ledger, acme[2]), "its own hold wins");
    assert!(
        globex.iter().all(|id| !redacted(&ledger, *id)),
        "the tenant's hold wins"
    );
    assert!(!redacted(&ledger, initech), "no policy, kept");
    assert!(!redacted(&ledger, late), "not due yet");
    assert!(
        !redacted(&ledger, slow),
        "due from its settling, not its submission"
    );
    let last = ledger.history(acme[0]).unwrap().pop().unwrap();
    let EventKind::Redacted { by, reason } = &last.kind else {
        panic!("redacted last: {last:?}")
    };
    assert_eq!(by.as_deref(), Some("retention policy"));
    assert!(reason.contains("30d"), "{reason}");
    assert!(!serde_json::to_string(&ledger.get(acme[0]).unwrap())
        .unwrap()
        .contains("secret"));

    // Again: nothing more to do, nothing appended.
    let again = ledger.retain(&policy, false, go).unwrap();
    assert_eq!((again.redacted, again.already), (0, 2), "{again:?}");
    assert_eq!(ledger.head().seq, head + 2);

    // Day 36: the slow and late ones are due too; a handle scoped to
    // another tenant touches none of acme's.
    clock.advance(TimeDelta::days(5));
    let globex_handle = ledger.tenant(tenant("globex"));
    let scoped = globex_handle.retain(&policy, false, go).unwrap();
    assert_eq!((scoped.examined, scoped.redacted), (2, 0), "{scoped:?}");
    let done = ledger.retain(&policy, false, go).unwrap();
    assert_eq!(done.redacted, 2, "{done:?}");
    assert!(redacted(&ledger, late) && redacted(&ledger, slow));
    ledger.verify().unwrap();

    // A pass asked to stop stops after the execution it is at; a span
    // longer than the calendar makes nothing due.
    let all = RetentionPolicy::from_json(br#"{"default": {"redactAfter": "0s"}}"#).unwrap();
    let stopped = ledger
        .retain(&all, true, |_| std::ops::ControlFlow::Break(()))
        .unwrap();
    assert_eq!(
        (stopped.examined, stopped.stopped),
        (1, true),
        "{stopped:?}"
    );
    let never = RetentionPolicy::from_json(br#"{"default": {"redactAfter": "99999d"}}"#).unwrap();
    let none = ledger.retain(&never, false, go).unwrap();
    assert_eq!((none.examined, none.redacted), (0, 0), "{none:?}");
}

/// Goes on after each execution.
fn go(_: &RetentionReport) -> std::ops::ControlFlow<()> {
    std::ops::ControlFlow::Continue(())
}

mod common;
use common::server::{client, json_of, result_of, submit_id, Server};

fn write_policy(dir: &std::path::Path, json: &str) -> std::path::PathBuf {
    let path = dir.join("policy.json");
    std::fs::write(&path, json).unwrap();
    path
}

#[test]
fn ledger_retain_counts_in_a_dry_run_redacts_and_names_a_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let (id, held) = {
        let ledger = Ledger::open(dir.path()).unwrap();
        let id = settled(&ledger, "acme");
        let held = settled(&ledger, "acme");
        ledger.hold(held, "audit", None).wait().unwrap();
        (id, held)
    };
    let files = tempfile::tempdir().unwrap();
    let policy = write_policy(files.path(), r#"{"default": {"redactAfter": "0s"}}"#);
    let cli = |args: &[&str]| common::ledger_cli(dir.path(), args);
    let policy_arg = policy.to_str().unwrap();
    let out = cli(&["retain", "--policy", policy_arg, "--dry-run"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "would redact 1 of 2 settled executions looked at (2 due, 1 kept under legal hold, 0 redacted before)\n"
    );
    let out = cli(&["retain", "--policy", policy_arg]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("redacted 1 of 2 "));
    let out = cli(&["--json", "retain", "--policy", policy_arg]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["redacted"].as_u64(), report["already"].as_u64()),
        (Some(0), Some(1))
    );
    // A field it does not know: exit 2, the file and the field named.
    let bad = write_policy(files.path(), r#"{"default": {"redactAfer": "1d"}}"#);
    let out = cli(&["retain", "--policy", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let line = String::from_utf8_lossy(&out.stderr);
    assert!(
        line.contains("redactAfer") && line.contains("policy.json"),
        "{line}"
    );
    // Without --policy: DATA_DIR/retention.json.
    let out = cli(&["retain"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("retention.json"));
    let ledger = Ledger::open(dir.path()).unwrap();
    assert!(redacted(&ledger, id) && !redacted(&ledger, held));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_applies_its_policy_in_the_background_and_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let policy = write_policy(
        files.path(),
        r#"{"tenants": {"acme": {"redactAfter": "0s"}}}"#,
    );
    let server = Server::start(
        dir.path(),
        &[
            "--retention",
            policy.to_str().unwrap(),
            "--retain-every",
            "1",
        ],
    );
    let c = client();
    let body = serde_json::json!({"tenantId": "acme", "callableName": "echo", "input": "secret"});
    let id = submit_id(&c, &server, body).await;
    // Settled by the server's workers, then redacted by its pass within a
    // few of its rounds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let got = loop {
        let (_, got) = json_of(
            c.get(server.url(&format!("/v1/executions/{id}")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        if got.get("redactedAt").is_some() || std::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(got["input"], "[redacted]", "{got}");
    let pass = |body: serde_json::Value| {
        let c = c.clone();
        let url = server.url("/v1/retention");
        async move { json_of(c.post(url).json(&body).send().await.unwrap()).await }
    };
    let (status, report) = pass(serde_json::json!({
        "policy": {"tenants": {"acme": {"redactAfter": "0s"}}},
        "dryRun": true
    }))
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (report["dryRun"].as_bool(), report["already"].as_u64()),
        (Some(true), Some(1))
    );
    let (status, err) =
        pass(serde_json::json!({"policy": {"tenants": {"acme": {"redactAfter": "soon"}}}})).await;
    assert_eq!(status, 400, "{err}");
    assert!(err.to_string().contains("redactAfter"), "{err}");
    let (status, err) = pass(serde_json::json!({"policy": {}, "dry": true})).await;
    assert_eq!(status, 400, "{err}");
    // `ledger retain` reaches the server; scoped by --tenant, it sends
    // that tenant's part of the policy only.
    let body = serde_json::json!({"tenantId": "globex", "callableName": "echo", "input": "x"});
    let globex = submit_id(&c, &server, body).await;
    let (status, _) = result_of(&c, &server, &globex).await;
    assert_eq!(status, 200);
    let both = write_policy(files.path(), r#"{"default": {"redactAfter": "0s"}}"#);
    let cli = |args: &[&str]| common::ledger_cli(dir.path(), args);
    let out = cli(&[
        "--tenant",
        "acme",
        "retain",
        "--policy",
        both.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("redacted 0 of 1 "), "{text}");
    let out = cli(&["retain", "--policy", both.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("redacted 1 of 2 "), "{text}");
    server.stop();
}

#[test]
fn ledger_run_applies_its_policy_once_more_before_an_idle_exit() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let policy = write_policy(files.path(), r#"{"default": {"redactAfter": "0s"}}"#);
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let out = common::ledger_cli(
                dir.path(),
                &[
                    "submit",
                    "--tenant",
                    "acme",
                    "--callable",
                    "echo",
                    "--input",
                    &format!("secret {i}"),
                ],
            );
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        })
        .collect();
    // Nothing is settled when its first pass runs: the last one, after the
    // run went idle, redacts them.
    let out = common::ledger_cli(
        dir.path(),
        &[
            "run",
            "--exit-when-idle",
            "--retention",
            policy.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let ledger = Ledger::open(dir.path()).unwrap();
    for id in ids {
        assert!(redacted(&ledger, id.parse().unwrap()), "{id} redacted");
    }
    ledger.verify().unwrap();
}
