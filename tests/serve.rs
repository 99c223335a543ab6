//! `ledger serve` as a real process on 127.0.0.1 (port 0) with a real HTTP
//! client: every endpoint, each error status, tenant isolation (the SSE
//! stream included), idempotent submits under concurrency, SSE resume, the
//! CLI through a serving process, and shutdown under load.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use execution_ledger::{BackgroundExecution, BackgroundExecutionStatus, Event, Head, Ledger};
use serde_json::{json, Value};

mod common;
use common::server::{client, error_code, json_of, sha256_hex, submit_id, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_and_error_status() {
    let dir = common::store();
    let server = Server::start(dir.path(), &[]);
    let c = client();

    // Submit: 201 with the record; an idempotency hit is 200 with the same one.
    let body = json!({"tenantId": "acme", "callableName": "echo", "input": "hi",
                      "idempotencyKey": "k1", "config": {"mode": "silent", "priority": 70}});
    let (status, first) = json_of(
        c.post(server.url("/v1/executions"))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["callableName"], "echo");
    assert_eq!(first["config"]["priority"], 70);
    let id = first["executionId"].as_str().unwrap().to_owned();
    let (status, again) = json_of(
        c.post(server.url("/v1/executions"))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, &again["executionId"]),
        (200, &first["executionId"])
    );
    // The same key with a different submission is a conflict, not a hit.
    let mut different = body.clone();
    different["input"] = json!("bye");
    let (status, conflict) = json_of(
        c.post(server.url("/v1/executions"))
            .json(&different)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, error_code(&conflict)),
        (409, "idempotency_conflict"),
        "{conflict}"
    );
    assert!(
        conflict["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"k1\"") && m.contains(&id)),
        "{conflict}"
    );

    // The result, long-polled.
    let (status, done) = json_of(
        c.get(server.url(&format!("/v1/executions/{id}/result?wait=20s")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"], "hi");

    // Get now and at a seq; its events.
    let (status, now) = json_of(
        c.get(server.url(&format!("/v1/executions/{id}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, now["status"].as_str()), (200, Some("completed")));
    let (_, then) = json_of(
        c.get(server.url(&format!("/v1/executions/{id}?atSeq=1")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(then["status"], "queued");
    let (status, events) = json_of(
        c.get(server.url(&format!("/v1/executions/{id}/events")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let kinds: Vec<_> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["queued", "started", "completed"]);

    // Cancel and release of a finished execution: 409 naming its status.
    let (status, err) = json_of(
        c.post(server.url(&format!("/v1/executions/{id}/cancel")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, error_code(&err)), (409, "conflict"));
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("it is completed"),
        "{err}"
    );
    // A deferred one: held, listed nowhere runnable, released, runs.
    let (_, deferred) = json_of(c.post(server.url("/v1/executions"))
        .json(&json!({"tenantId": "acme", "callableName": "echo", "input": "later", "config": {"mode": "deferred"}}))
        .send().await.unwrap()).await;
    let did = deferred["executionId"].as_str().unwrap().to_owned();
    let (_, queue) = json_of(c.get(server.url("/v1/queue")).send().await.unwrap()).await;
    assert_eq!(queue, json!([]));
    let (status, _) = json_of(
        c.post(server.url(&format!("/v1/executions/{did}/release")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let (_, released) = json_of(
        c.get(server.url(&format!("/v1/executions/{did}/result?wait=20s")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(released["output"], "later");
    let (status, err) = json_of(
        c.post(server.url(&format!("/v1/executions/{did}/release")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, error_code(&err)), (409, "conflict"));

    // Queue at a seq, diff, head.
    let (status, past) =
        json_of(c.get(server.url("/v1/queue?atSeq=1")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(past.as_array().unwrap().len(), 1);
    let (status, diff) = json_of(
        c.get(server.url("/v1/diff?fromSeq=0&toSeq=3"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(diff[0]["after"], "completed");
    let (_, head) = json_of(c.get(server.url("/v1/head")).send().await.unwrap()).await;
    let head: Head = serde_json::from_value(head).unwrap();
    assert!(head.seq >= 7);

    // Health and metrics.
    let (status, health) = json_of(c.get(server.url("/healthz")).send().await.unwrap()).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let metrics = c
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "ledger_live_executions{status=\"queued\"}",
        "ledger_queue_depth",
        "ledger_claims_total 2",
        "ledger_append_seconds_bucket",
        "ledger_sync_seconds_count",
    ] {
        assert!(metrics.contains(name), "{name} in {metrics}");
    }

    // Errors.
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            c.post(server.url("/v1/executions")).body("{not json"),
            400,
            "malformed_json",
        ),
        (
            c.post(server.url("/v1/executions"))
                .json(&json!({"tenantId": "acme"})),
            400,
            "malformed_json",
        ),
        (
            c.post(server.url("/v1/executions"))
                .json(&json!({"callableName": "echo"})),
            400,
            "invalid",
        ),
        (
            c.post(server.url("/v1/executions")).json(
                &json!({"tenantId": "acme", "callableName": "echo", "config": {"priority": 300}}),
            ),
            400,
            "malformed_json",
        ),
        (
            c.post(server.url("/v1/executions")).json(
                &json!({"tenantId": "acme", "callableName": "echo", "input": "x".repeat(70_000)}),
            ),
            400,
            "invalid",
        ),
        (
            c.post(server.url("/v1/executions"))
                .body(vec![b' '; 600 * 1024]),
            413,
            "too_large",
        ),
        (
            c.get(server.url("/v1/executions/01a2172a-eeb5-704e-a9e1-5a6d17479093")),
            404,
            "not_found",
        ),
        (c.get(server.url("/v1/executions/nope")), 400, "invalid"),
        (
            c.get(server.url(&format!("/v1/executions/{id}?atSeq=99999"))),
            400,
            "invalid",
        ),
        (
            c.get(server.url(&format!("/v1/executions/{id}?atTime=yesterday"))),
            400,
            "invalid",
        ),
        (c.get(server.url("/v1/diff?fromSeq=3")), 400, "invalid"),
        (c.get(server.url("/v1/no-such-thing")), 404, "not_found"),
    ];
    let before = head.seq;
    for (i, (req, status, code)) in cases.into_iter().enumerate() {
        let (got, body) = json_of(req.send().await.unwrap()).await;
        assert_eq!((got, error_code(&body)), (status, code), "case {i}: {body}");
    }
    let (_, head) = json_of(c.get(server.url("/v1/head")).send().await.unwrap()).await;
    assert_eq!(head["seq"], before, "no refused request appended anything");
    assert!(server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_scope_every_endpoint_to_a_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_keys(
        dir.path(),
        json!([
            {"tenant": "acme", "sha256": sha256_hex("acme-key")},
            {"tenant": "globex", "sha256": sha256_hex("globex-key")},
            {"admin": true, "sha256": sha256_hex("root-key")},
        ]),
    );
    let c = client();
    let as_ = |key: &str, req: reqwest::RequestBuilder| req.bearer_auth(key);

    // 401 without a key or with an unknown one.
    let (status, err) = json_of(c.get(server.url("/v1/head")).send().await.unwrap()).await;
    assert_eq!((status, error_code(&err)), (401, "unauthorized"));
    let (status, _) = json_of(
        as_("wrong", c.get(server.url("/v1/head")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);

    // acme submits (its tenant is the key's) a held deferred execution.
    let (status, mine) = json_of(
        as_("acme-key", c.post(server.url("/v1/executions")))
            .json(&json!({"callableName": "echo", "config": {"mode": "deferred"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(mine["tenantId"], "acme");
    let id = mine["executionId"].as_str().unwrap().to_owned();
    let (status, _) = json_of(
        as_("acme-key", c.post(server.url("/v1/executions")))
            .json(&json!({"callableName": "echo", "tenantId": "globex"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "a tenant key cannot submit for another tenant");

    // globex sees nothing of it, anywhere: 404, never 403, never listed.
    for path in [
        format!("/v1/executions/{id}"),
        format!("/v1/executions/{id}?atSeq=1"),
        format!("/v1/executions/{id}/events"),
        format!("/v1/executions/{id}/result"),
    ] {
        let (status, err) = json_of(
            as_("globex-key", c.get(server.url(&path)))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, error_code(&err)), (404, "not_found"), "{path}");
    }
    for path in [
        format!("/v1/executions/{id}/cancel"),
        format!("/v1/executions/{id}/release"),
    ] {
        let (status, _) = json_of(
            as_("globex-key", c.post(server.url(&path)))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 404, "{path}");
    }
    let (_, diff) = json_of(
        as_(
            "globex-key",
            c.get(server.url("/v1/diff?fromSeq=0&toSeq=1")),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(diff, json!([]));
    let (_, queue) = json_of(
        as_("globex-key", c.get(server.url("/v1/queue?atSeq=1")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(queue, json!([]));
    // The event stream: globex's stream carries only globex's events.
    let (_, theirs) = json_of(
        as_("globex-key", c.post(server.url("/v1/executions")))
            .json(&json!({"callableName": "echo", "input": "g"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let text = as_(
        "globex-key",
        c.get(server.url("/v1/events?fromSeq=1&toSeq=4")),
    )
    .send()
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let ids: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter(|v| v.get("lastSeq").is_none()) // not the end event
        .map(|v| v["executionId"].clone())
        .collect();
    assert!(!ids.is_empty());
    assert!(ids.iter().all(|i| i == &theirs["executionId"]), "{text}");
    // acme can release its own; admin sees everything and must name a tenant.
    let (status, _) = json_of(
        as_(
            "acme-key",
            c.post(server.url(&format!("/v1/executions/{id}/release"))),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = json_of(
        as_(
            "root-key",
            c.get(server.url(&format!("/v1/executions/{id}"))),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, err) = json_of(
        as_("root-key", c.post(server.url("/v1/executions")))
            .json(&json!({"callableName": "echo"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, error_code(&err)), (400, "invalid"));
    assert!(server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_identical_submits_make_one_execution() {
    let dir = common::store();
    let server = Server::start(dir.path(), &[]);
    let c = client();
    let body = json!({"tenantId": "acme", "callableName": "sleep", "input": "1", "idempotencyKey": "once"});
    let requests: Vec<_> = (0..50)
        .map(|_| {
            let req = c.post(server.url("/v1/executions")).json(&body);
            tokio::spawn(async move { json_of(req.send().await.unwrap()).await })
        })
        .collect();
    let mut created = 0;
    let mut ids = std::collections::HashSet::new();
    for r in requests {
        let (status, record) = r.await.unwrap();
        assert!(status == 201 || status == 200, "{status} {record}");
        created += usize::from(status == 201);
        ids.insert(record["executionId"].as_str().unwrap().to_owned());
    }
    assert_eq!((created, ids.len()), (1, 1));
    assert!(server.stop().success());
    let ledger = Ledger::open(dir.path()).unwrap();
    let queued = ledger
        .events(1, None)
        .filter(|e| e.as_ref().unwrap().kind.name() == "queued")
        .count();
    assert_eq!(queued, 1);
}

/// Reads SSE events (seq, data) from a response until `n` are in.
async fn read_events(response: &mut reqwest::Response, n: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut buf = String::new();
    while seqs.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(20), response.chunk())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("the stream stays open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            if let Some(id) = block.lines().find_map(|l| l.strip_prefix("id: ")) {
                seqs.push(id.trim().parse().unwrap());
            }
        }
    }
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_resumes_without_gap_or_duplicate() {
    let dir = common::store();
    let server = Server::start(dir.path(), &[]);
    let c = client();
    for i in 0..5 {
        c.post(server.url("/v1/executions"))
            .json(&json!({"tenantId": "acme", "callableName": "echo", "input": i.to_string()}))
            .send()
            .await
            .unwrap();
    }
    let mut first = c
        .get(server.url("/v1/events?fromSeq=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.headers()["content-type"], "text/event-stream");
    let seen = read_events(&mut first, 6).await;
    assert_eq!(seen, (1..=6).collect::<Vec<_>>());
    drop(first); // the connection drops
    for i in 5..10 {
        c.post(server.url("/v1/executions"))
            .json(&json!({"tenantId": "acme", "callableName": "echo", "input": i.to_string()}))
            .send()
            .await
            .unwrap();
    }
    let mut resumed = c
        .get(server.url("/v1/events?fromSeq=1"))
        .header("Last-Event-ID", "6")
        .send()
        .await
        .unwrap();
    let more = read_events(&mut resumed, 10).await;
    assert_eq!(more, (7..=16).collect::<Vec<_>>());
    drop(resumed);
    assert!(server.stop().success());
}

/// A server of `dir` with two keys: `acme-key` (tenant acme) and
/// `root-key` (admin).
fn acme_and_root(dir: &Path) -> Server {
    Server::with_keys(
        dir,
        json!([
            {"tenant": "acme", "sha256": sha256_hex("acme-key")},
            {"admin": true, "sha256": sha256_hex("root-key")},
        ]),
    )
}

fn cli(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("LEDGER_SERVER")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn the_cli_reaches_a_serving_ledger_with_the_same_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = Server::start(d, &[]);
    let (code, id, err) = cli(
        d,
        &[
            "submit",
            "--tenant",
            "acme",
            "--callable",
            "echo",
            "--input",
            "via http",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let id = id.trim().to_owned();
    // Wait for it to finish.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, shown, _) = cli(d, &["show", &id, "--json"]);
        let e: BackgroundExecution = serde_json::from_str(&shown).unwrap();
        if e.status == BackgroundExecutionStatus::Completed {
            break;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let commands: Vec<Vec<&str>> = vec![
        vec!["show", &id],
        vec!["show", &id, "--json"],
        vec!["show", &id, "--at-seq", "1", "--json"],
        vec!["history", &id],
        vec!["history", &id, "--json"],
        vec!["queue", "--at-seq", "1", "--json"],
        vec!["queue", "--at-seq", "1"],
        vec!["diff", "--from-seq", "0", "--to-seq", "3"],
        vec!["events", "--json"],
        vec!["head", "--json"],
        vec!["--tenant", "globex", "show", &id],
        vec!["cancel", &id],
        vec!["show", "not-an-id"],
        // Reindexing writes a snapshot, which verify then counts.
        vec!["reindex"],
        vec!["reindex", "--json"],
        vec!["verify"],
        vec!["verify", "--json"],
        vec!["export"],
        vec!["--tenant", "globex", "export"],
    ];
    // The worker commands go through the server's worker protocol (before
    // the comparison below, so both sides hold what they append).
    let (code, _, err) = cli(d, &["claim"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        err.trim(),
        "error: claim through a server needs --callable NAME: a worker claims the callables it runs"
    );
    let (code, manual, err) = cli(d, &["--tenant", "acme", "submit", "--callable", "by-hand"]);
    assert_eq!(code, 0, "{err}");
    let manual = manual.trim().to_owned();
    let (code, claimed, err) = cli(d, &["claim", "--callable", "by-hand", "--worker", "me"]);
    assert_eq!((code, claimed.trim()), (0, manual.as_str()), "{err}");
    let (code, _, err) = cli(d, &["complete", &manual, "--output", r#"{"by": "hand"}"#]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(d, &["fail", &manual, "--error", "too late"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        err.trim(),
        format!("error: cannot fail {manual}: it is completed"),
        "as on a ledger opened here"
    );
    let (_, shown, _) = cli(d, &["--json", "show", &manual]);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["output"], json!({"by": "hand"}));
    let through_server: Vec<_> = commands.iter().map(|a| cli(d, a)).collect();
    // The disk figure moves when the server closes sled; the rest does not.
    let without_disk = |(code, out, err): (i32, String, String)| {
        let mut stats: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        stats["diskBytes"] = Value::Null;
        (code, stats, err)
    };
    let stats_served = without_disk(cli(d, &["stats", "--json"]));
    let human_served = cli(d, &["stats"]);
    assert!(server.stop().success());
    let direct: Vec<_> = commands.iter().map(|a| cli(d, a)).collect();
    for ((args, served), direct) in commands.iter().zip(&through_server).zip(&direct) {
        assert_eq!(served, direct, "ledger {args:?} differs through the server");
    }
    assert_eq!(stats_served, without_disk(cli(d, &["stats", "--json"])));
    assert_eq!(stats_served.0, 0);
    let human_direct = cli(d, &["stats"]);
    let no_disk = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.starts_with("disk"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(no_disk(&human_served.1), no_disk(&human_direct.1));
    assert!(human_served.1.contains("events      "), "{human_served:?}");
    assert!(
        through_server[13].1.starts_with("reindexed: "),
        "{:?}",
        through_server[13]
    );
    assert!(
        through_server[15].1.starts_with("ok: "),
        "{:?}",
        through_server[15]
    );
    // The echo execution's three events and the one claimed by hand's three.
    assert_eq!(through_server[17].1.lines().count(), 6);
    assert_eq!(through_server[18].1, "");
    // And they are what they should be.
    assert!(through_server[0].1.contains("via http"));
    assert_eq!(through_server[10].0, 1);
    assert_eq!(
        through_server[10].2.trim(),
        format!("error: {id} not found")
    );
    assert_eq!(through_server[11].0, 1);
    assert!(through_server[11].2.contains("it is completed"));
    assert_eq!(through_server[12].0, 2);
    let events: Vec<Event> = through_server[8]
        .1
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 6);
    assert_eq!(events[3].execution_id.to_string(), manual);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_loses_nothing_acknowledged() {
    let dir = common::store();
    let server = Server::start(dir.path(), &[]);
    let c = client();
    let url = server.url("/v1/executions");
    let submitters: Vec<_> = (0..16)
        .map(|t| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..1_000 {
                    let r = c
                        .post(&url)
                        .json(
                            &json!({"tenantId": "acme", "callableName": "sleep", "input": "5",
                                      "idempotencyKey": format!("{t}-{i}")}),
                        )
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().as_u16() == 201 => acked.push(
                            r.json::<Value>().await.unwrap()["executionId"]
                                .as_str()
                                .unwrap()
                                .to_owned(),
                        ),
                        Ok(r) => assert_eq!(r.status().as_u16(), 503, "while stopping"),
                        Err(_) => break, // the server is gone
                    }
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let status = tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    assert!(status.success());
    let mut acked = Vec::new();
    for s in submitters {
        acked.extend(s.await.unwrap());
    }
    assert!(
        !acked.is_empty(),
        "some submits were acknowledged before the stop"
    );
    let ledger = Ledger::open(dir.path()).unwrap();
    ledger.verify().unwrap();
    for id in &acked {
        ledger
            .get(id.parse().unwrap())
            .expect("an acknowledged submit survives the shutdown");
    }
}

#[test]
fn without_keys_serve_refuses_a_non_loopback_address() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = cli(dir.path(), &["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(code, 2);
    assert!(err.contains("needs --keys"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_attempt_finish_before_serve_exits() {
    let dir = common::store();
    let server = Server::start(dir.path(), &[]);
    let c = client();
    let id = submit_id(
        &c,
        &server,
        json!({"tenantId": "acme", "callableName": "sleep", "input": "1500"}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, now) = json_of(
            c.get(server.url(&format!("/v1/executions/{id}")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        if now["status"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "it starts running: {now}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status}");
    let ledger = Ledger::open(dir.path()).unwrap();
    let id = id.parse().unwrap();
    assert_eq!(
        ledger.get(id).unwrap().status,
        BackgroundExecutionStatus::Completed
    );
    let kinds: Vec<_> = ledger
        .history(id)
        .unwrap()
        .iter()
        .map(|e| e.kind.name())
        .collect();
    assert_eq!(
        kinds,
        ["queued", "started", "completed"],
        "nothing recovered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_open_long_polls_and_closes_event_streams_at_once() {
    let dir = common::store();
    let server = Server::start(dir.path(), &["--grace-secs", "2"]);
    let c = client();
    let id = submit_id(
        &c,
        &server,
        json!({"tenantId": "acme", "callableName": "sleep", "input": "600000"}),
    )
    .await;
    let mut stream = c
        .get(server.url("/v1/events?fromSeq=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(read_events(&mut stream, 2).await, [1, 2], "queued, started");
    let long_poll = tokio::spawn(
        c.get(server.url(&format!("/v1/executions/{id}/result?wait=40s")))
            .send(),
    );
    // Let the long-poll reach the server and wait there.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(10), long_poll)
        .await
        .expect("the open long-poll is answered at once, not after its 40 s")
        .unwrap()
        .unwrap();
    let (status, record) = json_of(answered).await;
    assert_eq!(status, 202, "{record}");
    assert_eq!(record["status"], "running", "the record as it is");
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await
    .expect("the event stream is closed at once");
    let status = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(move || server.stop()),
    )
    .await
    .expect("serve exits once the grace is over")
    .unwrap();
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_wait_above_60s_is_refused() {
    let dir = common::store();
    let server = Server::start(dir.path(), &[]);
    let c = client();
    let id = submit_id(
        &c,
        &server,
        json!({"tenantId": "acme", "callableName": "echo"}),
    )
    .await;
    let (status, _) = json_of(
        c.get(server.url(&format!("/v1/executions/{id}/result?wait=60s")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "60 s is allowed");
    let (_, head) = json_of(c.get(server.url("/v1/head")).send().await.unwrap()).await;
    let (status, err) = json_of(
        c.get(server.url(&format!("/v1/executions/{id}/result?wait=90s")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, error_code(&err)), (400, "invalid"), "{err}");
    assert_eq!(err["error"]["message"], "wait: at most 60s, not \"90s\"");
    let (_, after) = json_of(c.get(server.url("/v1/head")).send().await.unwrap()).await;
    assert_eq!(after, head, "nothing appended");
    assert!(server.stop().success());
}

/// The blocks of an SSE body, each as its field lines.
fn sse_blocks(text: &str) -> Vec<Vec<&str>> {
    text.split("\n\n")
        .map(|b| {
            b.lines()
                .filter(|l| !l.starts_with(':'))
                .collect::<Vec<_>>()
        })
        .filter(|b| !b.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_ends_at_to_seq_with_an_end_event_and_then_answers_204() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let c = client();
    let id = submit_id(
        &c,
        &server,
        json!({"tenantId": "acme", "callableName": "echo", "input": "x"}),
    )
    .await;
    let (status, _) = json_of(
        c.get(server.url(&format!("/v1/executions/{id}/result?wait=20s")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);

    let response = c
        .get(server.url("/v1/events?fromSeq=2&toSeq=3"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.unwrap();
    let blocks = sse_blocks(&text);
    assert!(
        blocks[0].iter().any(|l| l.starts_with("retry:")),
        "a retry: field first: {text:?}"
    );
    let ids: Vec<&str> = blocks
        .iter()
        .filter(|b| !b.contains(&"event: end"))
        .filter_map(|b| b.iter().find_map(|l| l.strip_prefix("id: ")))
        .collect();
    assert_eq!(ids, ["2", "3"], "{text:?}");
    let end = blocks.last().unwrap();
    assert!(end.contains(&"event: end"), "an end event last: {text:?}");
    let data = end.iter().find_map(|l| l.strip_prefix("data: ")).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(data).unwrap(),
        json!({"lastSeq": 3})
    );
    assert!(end.contains(&"id: 3"), "{text:?}");

    // What a standard client does next: reconnect with Last-Event-ID. 204
    // ends its reconnecting.
    for req in [
        c.get(server.url("/v1/events?fromSeq=2&toSeq=3"))
            .header("Last-Event-ID", "3"),
        c.get(server.url("/v1/events?fromSeq=4&toSeq=3"))
            .header("Last-Event-ID", "3"),
    ] {
        let response = req.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 204);
        assert_eq!(response.text().await.unwrap(), "");
    }
    // A reversed range asked for, not resumed, is refused as diff refuses it.
    let (status, err) = json_of(
        c.get(server.url("/v1/events?fromSeq=10&toSeq=5"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, error_code(&err)), (400, "invalid"), "{err}");
    assert_eq!(
        err["error"]["message"],
        "the first point (seq 10) is after the second (seq 5)"
    );
    // The CLI through the server stops at the end event.
    let d = dir.path().to_owned();
    let (through, nothing) = tokio::task::spawn_blocking(move || {
        (
            cli(
                &d,
                &["events", "--from-seq", "2", "--to-seq", "3", "--json"],
            ),
            cli(
                &d,
                &["events", "--from-seq", "4", "--to-seq", "3", "--json"],
            ),
        )
    })
    .await
    .unwrap();
    assert_eq!(through.0, 0, "{}", through.2);
    let seqs: Vec<u64> = through
        .1
        .lines()
        .map(|l| serde_json::from_str::<Event>(l).unwrap().seq)
        .collect();
    assert_eq!(seqs, [2, 3]);
    // A range that starts past its end is refused before any request, as
    // locally (the server answers such a resume with 204).
    assert_eq!((nothing.0, nothing.1.as_str()), (2, ""), "{}", nothing.2);
    assert!(
        nothing
            .2
            .contains("the first point (seq 4) is after the second (seq 3)"),
        "{}",
        nothing.2
    );
    assert!(server.stop().success());
}

/// A stand-in server on 127.0.0.1 whose first event stream drops after one
/// event; the second must resume with `Last-Event-ID`.
#[test]
fn the_cli_resumes_an_event_stream_after_a_dropped_connection() {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<Event> = {
        let ledger = Ledger::open(dir.path().join("source")).unwrap();
        let id = ledger
            .submit(
                &"acme".parse().unwrap(),
                execution_ledger::Submission::new("echo"),
            )
            .wait()
            .unwrap()
            .execution
            .execution_id;
        ledger.claim(Some("w")).wait().unwrap();
        ledger.complete(id, 1, json!("ok")).wait().unwrap();
        ledger.events(1, None).map(Result::unwrap).collect()
    };
    let sse = |e: &Event| {
        format!(
            "id: {}\nevent: {}\ndata: {}\n\n",
            e.seq,
            e.kind.name(),
            serde_json::to_string(e).unwrap()
        )
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = std::thread::spawn(move || {
        let mut requests = Vec::new();
        for (n, stream) in listener.incoming().take(2).enumerate() {
            let mut stream = stream.unwrap();
            let mut head = Vec::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                head.push(line.trim().to_owned());
            }
            requests.push(head);
            let body = if n == 0 {
                sse(&events[0]) // and the connection drops
            } else {
                format!(
                    "{}{}event: end\nid: 3\ndata: {{\"lastSeq\":3}}\n\n",
                    sse(&events[1]),
                    sse(&events[2])
                )
            };
            write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{body}"
            )
            .unwrap();
        }
        requests
    });
    let out = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args([
            "--server",
            &url,
            "events",
            "--from-seq",
            "1",
            "--to-seq",
            "3",
        ])
        .arg("--json")
        .arg("--data-dir")
        .arg(dir.path().join("unused"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seqs: Vec<u64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Event>(l).unwrap().seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3], "every event once, in order");
    let requests = served.join().unwrap();
    assert!(
        requests[1]
            .iter()
            .any(|h| h.eq_ignore_ascii_case("last-event-id: 1")),
        "resumed after seq 1: {:?}",
        requests[1]
    );
}

/// Runs `ledger serve` with `args` that must make it refuse to start:
/// its exit code and stderr, or a panic if it is still serving after 20 s.
fn serve_refusing(dir: &Path, args: &[&str]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("LEDGER_SERVER")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "ledger {args:?} started serving: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn serve_refuses_an_empty_or_unknown_keys_file_and_flags_it_ignores() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    let data = dir.path().join("data");
    let keys_arg = keys.to_str().unwrap();
    for (file, says) in [
        (json!({"keys": []}), "no keys"),
        (
            json!({"keys": [{"tenant": "acme", "sha256": sha256_hex("k"), "admn": true}]}),
            "keys[0].admn: unknown field",
        ),
        (
            json!({"keys": [{"tenant": "acme", "sha256": sha256_hex("k")}], "key": []}),
            "key: unknown field",
        ),
    ] {
        std::fs::write(&keys, serde_json::to_vec(&file).unwrap()).unwrap();
        let (code, err) = serve_refusing(
            &data,
            &["serve", "--listen", "127.0.0.1:0", "--keys", keys_arg],
        );
        assert_eq!(code, 2, "{file}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
        assert!(
            err.contains(keys_arg) && err.contains(says),
            "{file}: {err}"
        );
    }
    for flag in [&["--tenant", "acme"][..], &["--json"][..]] {
        let args = [&["serve", "--listen", "127.0.0.1:0"][..], flag].concat();
        let (code, err) = serve_refusing(&data, &args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
        assert!(err.contains(flag[0]), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_naming_the_field_in_json() {
    let dir = common::store();
    let server = Server::start(dir.path(), &[]);
    let c = client();
    let id = submit_id(
        &c,
        &server,
        json!({"tenantId": "acme", "callableName": "echo", "config": {"mode": "deferred"}}),
    )
    .await;
    let (_, before) = json_of(c.get(server.url("/v1/head")).send().await.unwrap()).await;
    let submit = |body: Value| c.post(server.url("/v1/executions")).json(&body);
    let cases: Vec<(reqwest::RequestBuilder, u16, &str, &str)> = vec![
        (
            submit(json!({"callableName": "echo", "tenantId": "acme", "config": {"priorty": 90}})),
            400,
            "invalid",
            "config.priorty: unknown field",
        ),
        (
            submit(json!({"callableName": "echo", "tenantId": "acme", "prio": 9})),
            400,
            "invalid",
            "prio: unknown field",
        ),
        (
            submit(json!({"callableName": "echo", "tenantId": "acme",
                          "config": {"retry": {"maxAttempts": 2, "delayMs": 5}}})),
            400,
            "invalid",
            "config.retry.delayMs: unknown field",
        ),
        (
            submit(json!({"callableName": "echo", "tenantId": "acme", "config": {"priority": 300}})),
            400,
            "malformed_json",
            "config.priority: must be an integer 0-255, not 300",
        ),
        (
            submit(json!({"callableName": "echo", "tenantId": "acme", "runAt": "tomorrow"})),
            400,
            "malformed_json",
            "runAt: must be an RFC 3339 time, not \"tomorrow\"",
        ),
        (
            submit(json!({"callableName": "echo", "tenantId": "acme", "config": {"mode": "later"}})),
            400,
            "malformed_json",
            "config.mode: must be fire_and_forget, silent or deferred, not \"later\"",
        ),
        (
            submit(json!({"tenantId": "acme"})),
            400,
            "malformed_json",
            "callableName: missing (a string)",
        ),
        (
            submit(json!({"callableName": "echo", "tenantId": "not a tenant"})),
            400,
            "malformed_json",
            "tenantId: must be a tenant id (1-128 letters, digits and ._:-), not \"not a tenant\"",
        ),
        (
            c.post(server.url("/v1/executions")).body(
                r#"{"callableName": "echo", "tenantId": "acme", "config": {"priority": 1, "priority": 2}}"#,
            ),
            400,
            "malformed_json",
            "config.priority: given more than once",
        ),
        (
            submit(json!([1, 2])),
            400,
            "malformed_json",
            "the body must be a JSON object, not [1,2]",
        ),
        (
            c.post(server.url(&format!("/v1/executions/{id}/cancel")))
                .json(&json!({"resaon": "typo"})),
            400,
            "invalid",
            "resaon: unknown field",
        ),
        (
            c.post(server.url(&format!("/v1/executions/{id}/release")))
                .json(&json!({"now": true})),
            400,
            "invalid",
            "now: unknown field",
        ),
        (
            c.get(server.url(&format!("/v1/executions/{id}?atSeqq=3"))),
            400,
            "invalid",
            "atSeqq: unknown field",
        ),
        (
            c.get(server.url(&format!("/v1/executions/{id}?atSeq=notanumber"))),
            400,
            "invalid",
            "atSeq: must be a whole number, not \"notanumber\"",
        ),
        (
            c.get(server.url("/v1/events?fromSeq=abc")),
            400,
            "invalid",
            "fromSeq: must be a whole number, not \"abc\"",
        ),
        (
            c.get(server.url("/v1/diff?fromSeq=1&toSeq=-2")),
            400,
            "invalid",
            "toSeq: must be a whole number, not \"-2\"",
        ),
        (
            c.delete(server.url("/v1/head")),
            405,
            "method_not_allowed",
            "DELETE is not allowed here",
        ),
        (
            c.put(server.url("/v1/executions")),
            405,
            "method_not_allowed",
            "PUT is not allowed here",
        ),
    ];
    for (i, (req, status, code, message)) in cases.into_iter().enumerate() {
        let (got, body) = json_of(req.send().await.unwrap()).await;
        assert_eq!((got, error_code(&body)), (status, code), "case {i}: {body}");
        let said = body["error"]["message"].as_str().unwrap_or("");
        assert!(
            said.starts_with(message),
            "case {i}: {said:?} is not {message:?}"
        );
        for internal in [
            "Some(",
            "expected ",
            "invalid type",
            "SubmitBody",
            "u8",
            "Failed to",
        ] {
            assert!(!said.contains(internal), "case {i}: {said}");
        }
    }
    let (_, after) = json_of(c.get(server.url("/v1/head")).send().await.unwrap()).await;
    assert_eq!(after, before, "no refused request appended anything");
    assert!(server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_is_case_insensitive_and_ledger_wide_endpoints_are_admin_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = acme_and_root(dir.path());
    let c = client();
    // The scheme is case-insensitive (RFC 7235).
    for header in ["Bearer acme-key", "bearer acme-key", "BEARER acme-key"] {
        let (status, body) = json_of(
            c.get(server.url("/v1/queue"))
                .header("Authorization", header)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{header}: {body}");
    }
    // What spans every tenant is for admin keys only.
    for (method, path) in [
        ("GET", "/metrics"),
        ("GET", "/v1/head"),
        ("GET", "/v1/stats"),
        ("POST", "/v1/verify"),
        ("GET", "/v1/export"),
        ("POST", "/v1/reindex"),
    ] {
        let req = |key: &str| {
            c.request(method.parse().unwrap(), server.url(path))
                .bearer_auth(key)
        };
        let (status, body) = json_of(req("acme-key").send().await.unwrap()).await;
        assert_eq!(
            (status, error_code(&body)),
            (403, "forbidden"),
            "{path}: {body}"
        );
        let (status, body) = json_of(req("root-key").send().await.unwrap()).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    // Health checks carry no key, so health says nothing of the log.
    let (_, health) = json_of(c.get(server.url("/healthz")).send().await.unwrap()).await;
    assert_eq!(health, json!({"status": "ok"}));
    // Through the server, a tenant key's submit needs no --tenant.
    let out = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(["--server", &server.url, "--api-key", "acme-key"])
        .args(["submit", "--callable", "echo", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["tenantId"], "acme");
    // A tenant key reads its events up to a seq it names, not to the head.
    let events = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ledger"))
            .args(["--server", &server.url, "--api-key", "acme-key"])
            .args(["events", "--json"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = events(&["--to-seq", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first: Event = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(first.tenant_id.as_str(), "acme");
    let out = events(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--to-seq or --follow"), "{err}");
    assert!(server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_submit_is_taken_whole_or_refused_whole() {
    let dir = common::store();
    let server = Server::start(dir.path(), &[]);
    let c = client();
    let batch = |body: Value| {
        c.post(server.url("/v1/executions/batch"))
            .json(&body)
            .send()
    };
    let head_url = server.url("/v1/head");
    let head = |c: reqwest::Client| {
        let url = head_url.clone();
        async move {
            let (_, h) = json_of(c.get(url).send().await.unwrap()).await;
            h["seq"].as_u64().unwrap()
        }
    };
    let deferred =
        |p: u8| json!({"callableName": "echo", "config": {"priority": p, "mode": "deferred"}});
    let (status, v) = json_of(
        batch(
            json!({"tenantId": "acme", "executions": [deferred(10), deferred(90), deferred(50)]}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let records = v["executions"].as_array().unwrap();
    let priorities: Vec<u64> = records
        .iter()
        .map(|r| r["config"]["priority"].as_u64().unwrap())
        .collect();
    assert_eq!(priorities, vec![10, 90, 50]);
    assert!(records.iter().all(|r| r["tenantId"] == "acme"));
    let after = head(c.clone()).await;
    assert_eq!(after, 3);

    // One bad submission refuses the batch, naming it by index.
    let mut bad = deferred(1);
    bad["config"]["timeoutMs"] = json!(0);
    let (status, v) = json_of(
        batch(json!({"tenantId": "acme", "executions": [deferred(1), bad]}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("executions[1]"), "{message}");
    // So does an unknown field in one, by its path.
    let mut odd = deferred(1);
    odd["colour"] = json!("red");
    let (status, v) = json_of(
        batch(json!({"tenantId": "acme", "executions": [odd]}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("executions[0].colour"), "{message}");
    // And a body without its list.
    let (status, v) = json_of(batch(json!({"tenantId": "acme"})).await.unwrap()).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("executions"),
        "{v}"
    );
    assert_eq!(head(c.clone()).await, after, "nothing was appended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_pages_filters_scopes_and_refuses_bad_queries() {
    let dir = tempfile::tempdir().unwrap();
    let server = acme_and_root(dir.path());
    let c = client();
    let mut ids = Vec::new();
    for i in 0..9 {
        let tenant = if i % 3 == 0 { "globex" } else { "acme" };
        let callable = ["echo", "fail"][i % 2];
        let body = json!({"tenantId": tenant, "callableName": callable,
                          "input": format!("{i}"), "config": {"mode": "deferred"}});
        let (status, e) = json_of(
            c.post(server.url("/v1/executions"))
                .bearer_auth("root-key")
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 201, "{e}");
        ids.push(e["executionId"].as_str().unwrap().to_owned());
    }
    let (status, _) = json_of(
        c.post(server.url(&format!("/v1/executions/{}/cancel", ids[4])))
            .bearer_auth("root-key")
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let page = |key: &'static str, query: String| {
        let c = c.clone();
        let url = server.url(&format!("/v1/executions?{query}"));
        async move { json_of(c.get(url).bearer_auth(key).send().await.unwrap()).await }
    };
    let page_ids = |v: &Value| -> Vec<String> {
        v["executions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["executionId"].as_str().unwrap().to_owned())
            .collect()
    };
    // Newest first, 4 at a time, without a gap or a repeat.
    let (mut seen, mut cursor) = (Vec::new(), String::new());
    loop {
        let (status, v) = page("root-key", format!("limit=4{cursor}")).await;
        assert_eq!(status, 200, "{v}");
        seen.extend(page_ids(&v));
        match v["nextCursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    // Filters: the cancelled one; a tenant and a callable.
    let (_, v) = page("root-key", "status=cancelled,failed".into()).await;
    assert_eq!(page_ids(&v), vec![ids[4].clone()]);
    let (_, v) = page("root-key", "tenantId=globex&callableName=fail".into()).await;
    assert_eq!(page_ids(&v), vec![ids[3].clone()]);
    let (_, v) = page("root-key", format!("id={}", ids[6])).await;
    assert_eq!(page_ids(&v), vec![ids[6].clone()]);
    // A tenant key lists its own; another tenant's id or tenantId: nothing.
    let (_, v) = page("acme-key", "limit=100".into()).await;
    let acme: Vec<String> = newest_first
        .iter()
        .enumerate()
        .filter(|(i, _)| (8 - i) % 3 != 0)
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(page_ids(&v), acme);
    let (_, v) = page("acme-key", "tenantId=globex".into()).await;
    assert_eq!(page_ids(&v), Vec::<String>::new());
    let (_, v) = page("acme-key", format!("id={}", ids[0])).await;
    assert_eq!(page_ids(&v), Vec::<String>::new());
    // Bad queries: 400 naming the parameter; unknown ones are refused.
    for (query, names) in [
        ("status=done", "status"),
        ("status=queued,", "status"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("since=yesterday", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        ("cursor=abc", "cursor"),
        ("cursor=0", "cursor"),
        ("id=42", "id"),
        ("tenantId=no%20spaces", "tenant"),
        ("sort=asc", "sort"),
    ] {
        let (status, v) = page("root-key", query.into()).await;
        assert_eq!((status, error_code(&v)), (400, "invalid"), "{query}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{query}: {message}");
    }
    // The live set, now and at a point.
    let (status, live) = json_of(
        c.get(server.url("/v1/live"))
            .bearer_auth("root-key")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        live.as_array().unwrap().len(),
        8,
        "all held but the cancelled one"
    );
    let (_, at3) = json_of(
        c.get(server.url("/v1/live?atSeq=3"))
            .bearer_auth("acme-key")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let at3: Vec<&str> = at3
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["executionId"].as_str().unwrap())
        .collect();
    assert_eq!(at3, vec![ids[1].as_str(), ids[2].as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_from_the_binary_at_ui() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_keys(
        dir.path(),
        json!([{"admin": true, "sha256": sha256_hex("root-key")}]),
    );
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in ["/", "/ui"] {
        let r = c.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 303, "{path}");
        assert_eq!(r.headers()["location"], "/ui/");
    }
    // The page, for itself and for every view's link (no key needed: the
    // page asks for one and sends it to the API).
    let index = include_str!("../ui/index.html");
    for path in [
        "/ui/",
        "/ui/at/12",
        "/ui/executions/x?seq=3",
        "/ui/at/3?compare=1",
    ] {
        let r = c.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let policy = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("connect-src 'self'"), "{policy}");
        assert_eq!(r.text().await.unwrap(), index, "{path}");
    }
    for (path, kind, body) in [
        (
            "/ui/app.js",
            "text/javascript",
            include_str!("../ui/app.js"),
        ),
        ("/ui/app.css", "text/css", include_str!("../ui/app.css")),
    ] {
        let r = c.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(kind));
        assert_eq!(r.text().await.unwrap(), body);
    }
    // The API stays behind the key.
    let r = c.get(server.url("/v1/executions")).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[test]
fn ledger_list_pages_and_prints_json_lines_locally_and_through_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for i in 0..5 {
        let (code, _, err) = cli(
            d,
            &[
                "submit",
                "--tenant",
                "acme",
                "--callable",
                ["by-hand", "by-other"][i % 2],
            ],
        );
        assert_eq!(code, 0, "{err}");
    }
    let local = |args: &[&str]| cli(d, args);
    let (code, out, err) = local(&["--json", "list", "--limit", "2"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let cursor = err
        .trim()
        .strip_prefix("more: --cursor ")
        .unwrap_or_else(|| panic!("{err}"))
        .to_owned();
    let (code, rest, err) = local(&["--json", "list", "--limit", "10", "--cursor", &cursor]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(rest.lines().count(), 3);
    let (code, fails, _) = local(&["--json", "list", "--callable", "by-other"]);
    assert_eq!(code, 0);
    assert_eq!(fails.lines().count(), 2);
    // Bad input: exit 2, the option named.
    let (code, _, err) = local(&["list", "--status", "done"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--status") && err.contains("completed"),
        "{err}"
    );
    // Through a server (whose workers do not run these callables): the
    // same lines.
    let server = Server::start(d, &[]);
    let (code, served, err) = local(&["--json", "list", "--limit", "2"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(served, out);
    let (_, table, _) = local(&["list", "--status", "queued"]);
    assert!(table.starts_with("EXECUTION"), "{table}");
    assert_eq!(table.lines().count(), 6, "{table}");
    server.stop();
}
