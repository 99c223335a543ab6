//! Retention policies on a real sled ledger, driven by a clock the test
//! moves: payloads are redacted the policy's span after settling, not
//! before; legal hold (an execution's, or a whole tenant's in the policy)
//! wins over the policy; a dry run counts and appends nothing; a pass over
//! what was done already appends nothing. A tenant's hold kept by the
//! ledger (`ledger hold --whole-tenant`, `POST /v1/tenants/{t}/hold`)
//! refuses a redaction asked by hand as well, on either engine
//! (`LEDGER_TEST_BACKEND`).

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

/// Runs the `ledger` binary on the test's ledger at `place` with `args`.
fn cli_at(place: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ledger"))
        .arg(common::place_flag(place))
        .arg(place)
        .args(args)
        .env_remove("LEDGER_DATA_DIR")
        .env_remove("LEDGER_DATABASE_URL")
        .output()
        .unwrap()
}

#[test]
fn a_tenant_hold_refuses_redaction_by_hand_and_by_policy_until_released() {
    let store = common::store();
    let ledger = Ledger::open(store.path()).unwrap();
    let acme = settled(&ledger, "acme");
    let globex = settled(&ledger, "globex");
    let hold = ledger
        .hold_tenant(&tenant("acme"), "litigation 44", Some("counsel".into()))
        .wait()
        .unwrap();
    assert_eq!(
        (
            hold.tenant.as_str(),
            hold.reason.as_str(),
            hold.by.as_deref()
        ),
        ("acme", "litigation 44", Some("counsel"))
    );
    let head = ledger.head().seq;
    // By hand: refused, nothing appended; another tenant's is not held.
    let err = ledger.redact(acme, "erasure", None).wait().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot redact {acme}: its tenant is under legal hold")
    );
    assert_eq!(ledger.head().seq, head);
    // A second hold is refused, naming the first; so are an empty reason
    // and a handle scoped to a tenant.
    let err = ledger
        .hold_tenant(&tenant("acme"), "again", None)
        .wait()
        .unwrap_err();
    assert!(err.to_string().contains("litigation 44"), "{err}");
    let err = ledger
        .hold_tenant(&tenant("globex"), " ", None)
        .wait()
        .unwrap_err();
    assert_eq!(err.to_string(), "reason: must not be empty");
    let err = ledger
        .tenant(tenant("acme"))
        .release_tenant_hold(&tenant("acme"), "mine", None)
        .wait()
        .unwrap_err();
    assert!(
        err.to_string().starts_with("tenant: a handle scoped"),
        "{err}"
    );
    // By policy: kept, and counted as held.
    let policy = RetentionPolicy::from_json(br#"{"default": {"redactAfter": "0s"}}"#).unwrap();
    let report = ledger.retain(&policy, false, go).unwrap();
    assert_eq!((report.redacted, report.held), (1, 1), "{report:?}");
    assert!(redacted(&ledger, globex) && !redacted(&ledger, acme));
    // The hold outlives the process; released, the policy redacts.
    drop(ledger);
    let ledger = Ledger::open(store.path()).unwrap();
    assert_eq!(ledger.tenant_holds().unwrap(), vec![hold.clone()]);
    let released = ledger
        .release_tenant_hold(&tenant("acme"), "settled out of court", None)
        .wait()
        .unwrap();
    assert_eq!(released, hold);
    assert!(ledger.tenant_holds().unwrap().is_empty());
    let err = ledger
        .release_tenant_hold(&tenant("acme"), "twice", None)
        .wait()
        .unwrap_err();
    assert_eq!(err.to_string(), "tenant: acme is not under legal hold");
    let report = ledger.retain(&policy, false, go).unwrap();
    assert_eq!((report.redacted, report.held), (1, 0), "{report:?}");
    assert!(redacted(&ledger, acme));
    drop(ledger);

    // The same from the command line.
    let ledger = Ledger::open(store.path()).unwrap();
    let id = settled(&ledger, "acme");
    drop(ledger);
    let place = store.path();
    let out = cli_at(
        place,
        &[
            "hold",
            "--whole-tenant",
            "acme",
            "--reason",
            "audit 7",
            "--by",
            "dpo",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "tenant acme put under legal hold (audit 7)\n"
    );
    let out = cli_at(place, &["holds"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("TENANT")
            && text.contains("acme")
            && text.contains("dpo")
            && text.contains("audit 7"),
        "{text}"
    );
    let out = cli_at(place, &["redact", &id.to_string(), "--reason", "erasure"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("error: cannot redact {id}: its tenant is under legal hold\n")
    );
    // An execution and --whole-tenant at once, or neither: usage (exit 2).
    let out = cli_at(
        place,
        &[
            "hold",
            &id.to_string(),
            "--whole-tenant",
            "acme",
            "--reason",
            "x",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = cli_at(place, &["hold", "--reason", "x"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = cli_at(
        place,
        &[
            "--json",
            "release-hold",
            "--whole-tenant",
            "acme",
            "--reason",
            "done",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let released: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (released["tenant"].as_str(), released["by"].as_str()),
        (Some("acme"), Some("dpo"))
    );
    let out = cli_at(place, &["holds"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "no tenant is under legal hold\n"
    );
    let out = cli_at(place, &["redact", &id.to_string(), "--reason", "erasure"]);
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_hold_over_http_takes_an_admin_key_and_binds_redaction() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_keys(
        dir.path(),
        serde_json::json!([
            {"tenant": "acme", "sha256": common::server::sha256_hex("acme-key")},
            {"admin": true, "sha256": common::server::sha256_hex("root-key")},
        ]),
    );
    let c = client();
    let post = |path: &str, key: &str, body: serde_json::Value| {
        let req = c.post(server.url(path)).bearer_auth(key).json(&body);
        async move { json_of(req.send().await.unwrap()).await }
    };
    let body = serde_json::json!({"callableName": "echo", "input": "secret"});
    let (status, submitted) = post("/v1/executions", "acme-key", body).await;
    assert_eq!(status, 201, "{submitted}");
    let id = submitted["executionId"].as_str().unwrap().to_owned();
    // Settled by the server's workers.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let req = c
            .get(server.url(&format!("/v1/executions/{id}")))
            .bearer_auth("acme-key");
        let (_, got) = json_of(req.send().await.unwrap()).await;
        if got["status"] == "completed" || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let why = serde_json::json!({"reason": "litigation 44"});
    // A tenant's key does not hold (or release) its own tenant.
    let (status, err) = post("/v1/tenants/acme/release-hold", "acme-key", why.clone()).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{err}"
    );
    let (status, hold) = post("/v1/tenants/acme/hold", "root-key", why.clone()).await;
    assert_eq!(status, 200, "{hold}");
    assert_eq!(
        (hold["tenant"].as_str(), hold["by"].as_str()),
        (Some("acme"), Some("api:admin"))
    );
    let (status, err) = post("/v1/tenants/acme/hold", "root-key", why.clone()).await;
    assert_eq!(status, 400, "{err}");
    let (status, err) = post("/v1/tenants/no%20such/hold", "root-key", why.clone()).await;
    assert_eq!(status, 400, "{err}");
    assert!(err.to_string().contains("tenant"), "{err}");
    let (status, err) = post(
        "/v1/tenants/acme/hold",
        "root-key",
        serde_json::json!({"reason": "x", "extra": 1}),
    )
    .await;
    assert_eq!(status, 400, "{err}");
    let req = c.get(server.url("/v1/holds")).bearer_auth("root-key");
    let (status, holds) = json_of(req.send().await.unwrap()).await;
    assert_eq!(status, 200, "{holds}");
    assert_eq!(holds["holds"].as_array().map(Vec::len), Some(1), "{holds}");
    let redact = format!("/v1/executions/{id}/redact");
    let (status, err) = post(
        &redact,
        "acme-key",
        serde_json::json!({"reason": "erasure"}),
    )
    .await;
    assert_eq!(status, 409, "{err}");
    assert!(
        err.to_string().contains("its tenant is under legal hold"),
        "{err}"
    );
    let (status, _) = post("/v1/tenants/acme/release-hold", "root-key", why).await;
    assert_eq!(status, 200);
    let (status, done) = post(
        &redact,
        "acme-key",
        serde_json::json!({"reason": "erasure"}),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    server.stop();
}
