//! Pausing and resuming work, on a real ledger (sled, or PostgreSQL with
//! `LEDGER_TEST_BACKEND=postgres`): paused work stays queued, in order,
//! and listed with the pause that holds it; no claim takes it; running
//! attempts finish; a resume lets it go in the order it had; each pause
//! and resume is a control entry in the chain, which time travel, replay,
//! snapshots, verify, export and import all follow.

mod common;

use std::io::Cursor;

use execution_ledger::{
    At, BackgroundExecution, Claim, CommandError, ControlKind, Entry, ExecutionId, Ledger,
    PauseScope, Submission, TenantId,
};

fn t(name: &str) -> TenantId {
    name.parse().unwrap()
}

fn callable(name: &str) -> PauseScope {
    PauseScope::new(None, Some(name.into()))
}

fn tenant(name: &str) -> PauseScope {
    PauseScope::new(Some(t(name)), None)
}

fn submit(ledger: &Ledger, tenant: &str, callable: &str) -> ExecutionId {
    ledger
        .submit(&t(tenant), Submission::new(callable))
        .wait()
        .unwrap()
        .execution
        .execution_id
}

fn ids(executions: &[BackgroundExecution]) -> Vec<ExecutionId> {
    executions.iter().map(|e| e.execution_id).collect()
}

/// Claims one at a time until nothing is runnable.
fn claim_all(ledger: &Ledger) -> Vec<ExecutionId> {
    let mut out = Vec::new();
    while let Some(e) = ledger.claim(Some("w")).wait().unwrap() {
        out.push(e.execution_id);
    }
    out
}

#[test]
fn a_paused_callable_stays_queued_in_order_and_runs_once_resumed() {
    let store = common::store();
    let ledger = Ledger::open(store.path()).unwrap();
    let r1 = submit(&ledger, "acme", "resize");
    let m1 = submit(&ledger, "acme", "mail");
    let r2 = submit(&ledger, "globex", "resize");
    let m2 = submit(&ledger, "globex", "mail");
    let running = ledger.claim(Some("w")).wait().unwrap().unwrap();
    assert_eq!(running.execution_id, r1);

    let pause = ledger
        .pause(
            callable("resize"),
            Some("image service down".into()),
            Some("ops".into()),
        )
        .wait()
        .unwrap();
    assert_eq!(pause.scope, callable("resize"));
    assert_eq!(pause.since_seq, ledger.head().seq);
    assert_eq!(pause.reason.as_deref(), Some("image service down"));
    assert_eq!(ledger.pauses(), vec![pause.clone()]);
    let r3 = submit(&ledger, "acme", "resize");

    // The queue lists what claims take first (globex's turn: acme runs
    // one already), then the paused work in submission order, each with
    // the pause that holds it.
    let queue = ledger.queue(None);
    assert_eq!(ids(&queue), vec![m2, m1, r2, r3]);
    let held: Vec<_> = queue.iter().map(|e| ledger.held_by(e)).collect();
    assert_eq!(
        held,
        vec![None, None, Some(pause.clone()), Some(pause.clone())]
    );
    // No claim takes it, however it asks.
    assert!(ledger
        .claim_with(Claim::new().worker("w").callables(["resize"]))
        .wait()
        .unwrap()
        .is_empty());
    assert!(ledger
        .tenant(t("globex"))
        .claim_with(Claim::new().callables(["resize"]))
        .wait()
        .unwrap()
        .is_empty());
    assert_eq!(claim_all(&ledger), vec![m2, m1]);
    // The attempt running when the pause began finishes.
    ledger
        .complete(running.execution_id, 1, serde_json::json!("done"))
        .wait()
        .unwrap();

    let ended = ledger
        .resume(callable("resize"), Some("back up".into()), None)
        .wait()
        .unwrap();
    assert_eq!(ended, pause);
    assert!(ledger.pauses().is_empty());
    assert_eq!(claim_all(&ledger), vec![r2, r3]);
    ledger.verify().unwrap();
}

#[test]
fn a_paused_tenant_holds_all_its_work_and_no_one_elses() {
    let store = common::store();
    let ledger = Ledger::open(store.path()).unwrap();
    let a1 = submit(&ledger, "acme", "resize");
    let a2 = submit(&ledger, "acme", "mail");
    let g1 = submit(&ledger, "globex", "resize");
    ledger.pause(tenant("acme"), None, None).wait().unwrap();
    // Of one tenant's callable only.
    ledger
        .pause(
            PauseScope::new(Some(t("globex")), Some("mail".into())),
            None,
            None,
        )
        .wait()
        .unwrap();
    let g2 = submit(&ledger, "globex", "mail");
    let g3 = submit(&ledger, "globex", "resize");
    assert_eq!(ids(&ledger.queue(None)), vec![g1, g3, a1, a2, g2]);
    assert!(ledger
        .tenant(t("acme"))
        .claim(None)
        .wait()
        .unwrap()
        .is_none());
    assert_eq!(claim_all(&ledger), vec![g1, g3]);
    ledger.resume(tenant("acme"), None, None).wait().unwrap();
    assert_eq!(claim_all(&ledger), vec![a1, a2]);
    assert_eq!(ids(&ledger.queue(None)), vec![g2]);
    // A tenant's handle sees the pauses that hold its work, and pauses
    // its own work only.
    let globex = ledger.tenant(t("globex"));
    assert_eq!(globex.pauses().len(), 1);
    assert!(ledger.tenant(t("acme")).pauses().is_empty());
    let own = globex
        .pause(callable("resize"), None, Some("globex-admin".into()))
        .wait()
        .unwrap();
    assert_eq!(
        own.scope,
        PauseScope::new(Some(t("globex")), Some("resize".into()))
    );
    let other = globex.pause(tenant("acme"), None, None).wait().unwrap_err();
    assert_eq!(
        other.to_string(),
        "tenantId: this handle is globex's, not acme's"
    );
    ledger.verify().unwrap();
}

#[test]
fn a_pause_of_what_is_paused_or_a_resume_of_what_is_not_appends_nothing() {
    let store = common::store();
    let ledger = Ledger::open(store.path()).unwrap();
    submit(&ledger, "acme", "resize");
    ledger.pause(callable("resize"), None, None).wait().unwrap();
    let head = ledger.head();
    let again = ledger
        .pause(callable("resize"), None, None)
        .wait()
        .unwrap_err();
    assert!(matches!(again, CommandError::PauseConflict(_)), "{again:?}");
    assert_eq!(
        again.to_string(),
        format!("callable resize is paused already (since seq {})", head.seq)
    );
    // A resume names the scope a pause named.
    let not = ledger
        .resume(
            PauseScope::new(Some(t("acme")), Some("resize".into())),
            None,
            None,
        )
        .wait()
        .unwrap_err();
    assert_eq!(
        not.to_string(),
        "tenant acme's callable resize is not paused"
    );
    for (scope, reason, says) in [
        (
            PauseScope::new(None, None),
            None,
            "callableName: a pause names a callable, a tenant, or both",
        ),
        (
            callable(""),
            None,
            "callableName: takes 1 to 256 bytes, not 0",
        ),
        (
            callable("mail"),
            Some(" ".to_owned()),
            "reason: must not be empty",
        ),
    ] {
        let e = ledger.pause(scope, reason, None).wait().unwrap_err();
        assert!(matches!(e, CommandError::Invalid(_)), "{e:?}");
        assert_eq!(e.to_string(), says);
    }
    assert_eq!(ledger.head(), head, "nothing appended");
}

#[test]
fn pauses_are_entries_of_the_chain_that_time_travel_replay_and_import_follow() {
    let store = common::store();
    let ledger = Ledger::builder(store.path())
        .snapshot_every(4)
        .open()
        .unwrap();
    let first = submit(&ledger, "acme", "resize");
    let before = ledger.head().seq;
    ledger
        .pause(callable("resize"), Some("quota".into()), Some("ops".into()))
        .wait()
        .unwrap();
    let paused_at = ledger.head().seq;
    let during = submit(&ledger, "acme", "resize");
    for _ in 0..6 {
        submit(&ledger, "globex", "mail");
    }
    for id in claim_all(&ledger) {
        ledger
            .complete(id, 1, serde_json::json!(null))
            .wait()
            .unwrap();
    }
    ledger
        .resume(callable("resize"), None, Some("ops".into()))
        .wait()
        .unwrap();
    let resumed_at = ledger.head().seq;

    // The log holds them as entries of their own, with who and why; the
    // executions' events pass over them.
    let entries: Vec<Entry> = ledger.entries(1, None).map(Result::unwrap).collect();
    assert_eq!(entries.len() as u64, resumed_at);
    match &entries[paused_at as usize - 1] {
        Entry::Control(c) => match &c.kind {
            ControlKind::Paused { scope, by, reason } => {
                assert_eq!(
                    (scope, by.as_deref(), reason.as_deref()),
                    (&callable("resize"), Some("ops"), Some("quota"))
                );
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ledger.events(1, None).count() as u64,
        resumed_at - 2,
        "the events are the executions' only"
    );
    // A subscription passes over them too, and moves on past them.
    let mut sub = ledger.subscribe(1);
    let mut followed = Vec::new();
    while sub.next_seq() <= resumed_at {
        if let Some(e) = sub
            .next_timeout(std::time::Duration::from_millis(100))
            .unwrap()
        {
            followed.push(e.seq);
        }
    }
    drop(sub);
    let seqs: Vec<u64> = ledger.events(1, None).map(|e| e.unwrap().seq).collect();
    assert_eq!(followed, seqs);
    assert!(!seqs.contains(&paused_at) && !seqs.contains(&resumed_at));
    // As it was: no pause before, the pause between, none after; the
    // queue then held the paused work after the rest.
    assert!(ledger.pauses_at(At::Seq(before)).unwrap().is_empty());
    let then = ledger.pauses_at(At::Seq(paused_at + 1)).unwrap();
    assert_eq!(then.len(), 1);
    assert_eq!(
        (then[0].since_seq, then[0].by.as_deref()),
        (paused_at, Some("ops"))
    );
    assert!(ledger.pauses_at(At::Seq(resumed_at)).unwrap().is_empty());
    let (queue, _) = ledger.queue_at(At::Seq(paused_at + 7), None).unwrap();
    let queue = ids(&queue);
    assert_eq!(queue.len(), 8);
    assert_eq!(&queue[6..], &[first, during]);
    assert_eq!(ids(&ledger.queue(None)), vec![first, during]);

    // Replayed from snapshots and from the start, it is the same.
    let report = ledger.verify().unwrap();
    assert!(report.snapshots > 0, "{report:?}");
    ledger.pause(tenant("globex"), None, None).wait().unwrap();
    let held = ledger.pauses();
    drop(ledger);
    let reopened = Ledger::open(store.path()).unwrap();
    assert_eq!(reopened.pauses(), held);
    assert_eq!(ids(&reopened.queue(None)), vec![first, during]);

    // An export carries them; an import rebuilds them.
    let lines: Vec<u8> = reopened
        .export(None)
        .flat_map(|e| {
            let mut line = e.unwrap().line;
            line.push(b'\n');
            line
        })
        .collect();
    let report = execution_ledger::verify_export(Cursor::new(&lines), None).unwrap();
    assert_eq!(report.head, reopened.head());
    let again = common::store();
    let imported = Ledger::open(again.path()).unwrap();
    imported.import(Cursor::new(&lines), None).unwrap();
    assert_eq!(imported.pauses(), held);
    assert_eq!(imported.head(), reopened.head());
    imported.verify().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_pauses_and_resumes_work_that_a_real_server_then_runs() {
    use common::server::{client, error_code, json_of, sha256_hex, Server};
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_keys(
        dir.path(),
        json!([
            {"admin": true, "sha256": sha256_hex("root-key")},
            {"tenant": "acme", "sha256": sha256_hex("acme-key")},
        ]),
    );
    let c = client();
    let post = |path: &str, key: &str, body: serde_json::Value| {
        c.post(server.url(path)).bearer_auth(key).json(&body).send()
    };
    let (status, pause) = json_of(
        post(
            "/v1/pauses",
            "root-key",
            json!({"callableName": "echo", "reason": "maintenance"}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{pause}");
    assert_eq!(pause["callableName"], "echo");
    assert_eq!(pause["by"], "api:admin");
    assert_eq!(pause["reason"], "maintenance");
    let since = pause["sinceSeq"].as_u64().unwrap();
    let (status, again) = json_of(
        post("/v1/pauses", "root-key", json!({"callableName": "echo"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, error_code(&again)), (409, "conflict"), "{again}");

    // Paused work stays queued while the workers run the rest.
    let submit = |callable: &str| {
        let body = json!({"tenantId": "acme", "callableName": callable, "input": "10"});
        let c = c.clone();
        let url = server.url("/v1/executions");
        async move {
            let (status, e) = json_of(
                c.post(url)
                    .bearer_auth("root-key")
                    .json(&body)
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(status, 201, "{e}");
            e["executionId"].as_str().unwrap().to_owned()
        }
    };
    let get = |path: String, key: &'static str| {
        let c = c.clone();
        let url = server.url(&path);
        async move { json_of(c.get(url).bearer_auth(key).send().await.unwrap()).await }
    };
    let completed = |id: String| {
        let get = &get;
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                let (_, e) = get(format!("/v1/executions/{id}"), "root-key").await;
                if e["status"] == "completed" {
                    return;
                }
                assert!(std::time::Instant::now() < deadline, "not completed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    let held = submit("echo").await;
    let other = submit("sleep").await;
    completed(other).await;
    let (_, e) = get(format!("/v1/executions/{held}"), "root-key").await;
    assert_eq!(e["status"], "queued", "{e}");
    let (_, queue) = get("/v1/queue".into(), "root-key").await;
    assert_eq!(queue[0]["executionId"], json!(held), "{queue}");
    let (_, listed) = get("/v1/pauses".into(), "acme-key").await;
    assert_eq!(listed["pauses"].as_array().unwrap().len(), 1, "{listed}");

    // A tenant key pauses its own work only.
    let (status, own) = json_of(
        post("/v1/pauses", "acme-key", json!({"callableName": "sleep"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{own}");
    assert_eq!(
        (own["tenantId"].clone(), own["by"].clone()),
        (json!("acme"), json!("api:acme"))
    );
    for (key, body, code, says) in [
        (
            "acme-key",
            json!({"tenantId": "globex"}),
            400,
            "tenantId: this handle is acme's, not globex's",
        ),
        (
            "root-key",
            json!({}),
            400,
            "callableName: a pause names a callable, a tenant, or both",
        ),
        (
            "root-key",
            json!({"callableName": "echo", "until": 3}),
            400,
            "until",
        ),
        (
            "root-key",
            json!({"tenantId": "no such!"}),
            400,
            "tenantId: ",
        ),
    ] {
        let (status, e) = json_of(post("/v1/pauses", key, body.clone()).await.unwrap()).await;
        assert_eq!(status, code, "{body}: {e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(says),
            "{body}: {e}"
        );
    }
    let (status, e) = json_of(
        post("/v1/pauses/resume", "root-key", json!({"tenantId": "acme"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, error_code(&e)), (409, "conflict"), "{e}");

    // Resumed, the held execution runs; the past still shows the pause.
    let (status, ended) = json_of(
        post(
            "/v1/pauses/resume",
            "root-key",
            json!({"callableName": "echo"}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (status, ended["sinceSeq"].as_u64()),
        (200, Some(since)),
        "{ended}"
    );
    completed(held.clone()).await;
    let (_, then) = get(format!("/v1/pauses?atSeq={since}"), "root-key").await;
    assert_eq!(then["pauses"][0]["callableName"], "echo", "{then}");
    let (_, now) = get("/v1/pauses".into(), "root-key").await;
    assert_eq!(
        now["pauses"].as_array().unwrap().len(),
        1,
        "acme's sleep: {now}"
    );
}

#[test]
fn the_cli_pauses_lists_and_resumes() {
    use common::{stderr, stdout};
    let store = common::store();
    let cli = |args: &[&str]| common::ledger_cli(store.path(), args);
    for (tenant, callable) in [("acme", "resize"), ("acme", "mail"), ("globex", "resize")] {
        let o = cli(&["submit", "--tenant", tenant, "--callable", callable]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = cli(&[
        "pause",
        "--callable",
        "resize",
        "--reason",
        "image service down",
        "--by",
        "ops",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        "paused callable resize at seq 4, by ops: image service down: no claim takes its work until it is resumed"
    );
    let o = cli(&["--tenant", "globex", "pause"]);
    assert_eq!(
        stdout(&o).trim(),
        "paused tenant globex at seq 5: no claim takes its work until it is resumed"
    );
    let o = cli(&["pauses"]);
    let text = stdout(&o);
    assert!(text.starts_with("PAUSED"), "{text}");
    assert!(
        text.contains("callable resize  4 ") && text.contains("ops  image service down"),
        "{text}"
    );
    assert!(text.contains("tenant globex    5 "), "{text}");
    let o = cli(&["queue"]);
    let text = stdout(&o);
    assert!(
        text.contains("paused: callable resize since seq 4, by ops: image service down: its 2 queued wait until it is resumed"),
        "{text}"
    );
    assert!(
        text.contains("paused: tenant globex since seq 5: its 1 queued wait until it is resumed"),
        "{text}"
    );
    // Only acme's mail is claimed.
    let o = cli(&["--json", "claim"]);
    let claimed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(claimed["callableName"], "mail");
    assert_eq!(stdout(&cli(&["claim"])), "");
    // Refusals: a second pause exits 1, no scope is a usage error.
    let o = cli(&["pause", "--callable", "resize"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o).trim(),
        "error: callable resize is paused already (since seq 4)"
    );
    let o = cli(&["pause"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o).trim(),
        "error: callableName: a pause names a callable, a tenant, or both"
    );
    let o = cli(&["resume", "--callable", "resize", "--by", "ops"]);
    assert_eq!(
        stdout(&o).trim(),
        "resumed callable resize (paused at seq 4, by ops: image service down)"
    );
    // The past: at seq 5 both were in force; --json lines.
    let o = cli(&["--json", "pauses", "--at-seq", "5"]);
    assert_eq!(stdout(&o).lines().count(), 2, "{}", stdout(&o));
    let o = cli(&["--json", "pauses"]);
    let now: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(now["tenantId"], "globex");
    let o = cli(&["verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
}
