//! The worker protocol end to end: a real `ledger serve` process on
//! 127.0.0.1 and real HTTP clients acting as workers elsewhere — claims by
//! callable (long-polled, raced), heartbeats, completes and fails by
//! attempt number, lease expiry, cancellation told at the heartbeat, lost
//! responses retried, and the errors of each endpoint.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

mod common;
use common::server::{client, error_code, json_of, submit_id, Server};

async fn post(c: &reqwest::Client, server: &Server, path: &str, body: Value) -> (u16, Value) {
    json_of(c.post(server.url(path)).json(&body).send().await.unwrap()).await
}

async fn get(c: &reqwest::Client, server: &Server, path: &str) -> (u16, Value) {
    json_of(c.get(server.url(path)).send().await.unwrap()).await
}

fn resize(attempts: u32) -> Value {
    json!({"tenantId": "acme", "callableName": "resize", "input": "cat.png",
           "context": {"size": "64"},
           "config": {"retry": {"maxAttempts": attempts, "initialDelayMs": 0}}})
}

async fn claim(c: &reqwest::Client, server: &Server, body: Value) -> Vec<Value> {
    let (status, v) = post(c, server, "/v1/workers/claim", body).await;
    assert_eq!(status, 200, "{v}");
    v["attempts"].as_array().unwrap().clone()
}

async fn events(c: &reqwest::Client, server: &Server, id: &str) -> Vec<Value> {
    let (status, v) = get(c, server, &format!("/v1/executions/{id}/events")).await;
    assert_eq!(status, 200, "{v}");
    v.as_array().unwrap().clone()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_heartbeat_complete_and_a_retried_complete_is_answered_once() {
    let dir = common::store();
    let server = Server::start(dir.path(), &[]);
    let c = client();
    let id = submit_id(&c, &server, resize(2)).await;
    // Nobody runs resize yet: the server says so.
    let (_, workers) = get(&c, &server, "/v1/workers").await;
    assert_eq!(workers["callablesWithoutWorker"], json!(["resize"]));

    let got = claim(
        &c,
        &server,
        json!({"worker": "w-1", "callables": ["resize"], "max": 10, "leaseMs": 5000}),
    )
    .await;
    assert_eq!(got.len(), 1);
    let a = &got[0];
    assert_eq!(a["executionId"], id.as_str());
    assert_eq!(a["attempt"], 1);
    assert_eq!(a["status"], "running");
    assert_eq!(a["input"], "cat.png");
    assert_eq!(a["context"]["size"], "64");
    assert_eq!(a["tenantId"], "acme");
    assert!(a["leaseUntil"].is_string(), "{a}");
    let (_, workers) = get(&c, &server, "/v1/workers").await;
    assert_eq!(workers["leasedAttempts"], 1);

    let attempt = format!("/v1/executions/{id}/attempts/1");
    let (status, beat) = post(
        &c,
        &server,
        &format!("{attempt}/heartbeat"),
        json!({"leaseMs": 20000, "progress": {"done": 0.5}}),
    )
    .await;
    assert_eq!(status, 200, "{beat}");
    assert_eq!(beat["cancelRequested"], false);
    assert!(beat["leaseUntil"].as_str().unwrap() > a["leaseUntil"].as_str().unwrap());

    let output = json!({"url": "s3://thumbs/cat.png"});
    let (status, done) = post(
        &c,
        &server,
        &format!("{attempt}/complete"),
        json!({ "output": output }),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"], output);
    // The response was lost; the worker sends it again: the same answer,
    // no second event.
    let (status, again) = post(
        &c,
        &server,
        &format!("{attempt}/complete"),
        json!({ "output": output }),
    )
    .await;
    assert_eq!((status, &again), (200, &done));
    let history = events(&c, &server, &id).await;
    assert_eq!(types(&history), ["queued", "started", "completed"]);
    assert_eq!(history[1]["worker"], "w-1");
    assert_eq!(history[1]["leaseMs"], 5000);
    // Any other answer of that attempt is stale.
    let (status, err) = post(
        &c,
        &server,
        &format!("{attempt}/fail"),
        json!({"error": {"code": "x", "message": "y"}}),
    )
    .await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(error_code(&err), "stale_attempt");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("completed at attempt 1"),
        "{err}"
    );
    assert_eq!(events(&c, &server, &id).await.len(), 3, "nothing appended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_workers_never_get_the_same_attempt() {
    let dir = common::store();
    let server = Server::start(dir.path(), &[]);
    let c = client();
    let batch: Vec<Value> = (0..60)
        .map(|i| json!({"callableName": "resize", "input": format!("{i}")}))
        .collect();
    let (status, v) = post(
        &c,
        &server,
        "/v1/executions/batch",
        json!({"tenantId": "acme", "executions": batch}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    // Two workers race for one execution first: exactly one gets it.
    let one = submit_id(
        &c,
        &server,
        json!({"tenantId": "acme", "callableName": "crop", "config": {"priority": 90}}),
    )
    .await;
    let body = json!({"worker": "w", "callables": ["crop"], "max": 5});
    let (a, b) = tokio::join!(claim(&c, &server, body.clone()), claim(&c, &server, body));
    assert_eq!(a.len() + b.len(), 1, "{a:?} {b:?}");
    assert_eq!(
        a.iter().chain(&b).next().unwrap()["executionId"],
        one.as_str()
    );
    // Eight workers drain the rest in batches of up to 7.
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let (c, url) = (c.clone(), server.url.clone());
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let r = c
                        .post(format!("{url}/v1/workers/claim"))
                        .json(
                            &json!({"worker": format!("w-{w}"), "callables": ["resize"], "max": 7}),
                        )
                        .send()
                        .await
                        .unwrap();
                    let v: Value = r.json().await.unwrap();
                    let got = v["attempts"].as_array().unwrap().clone();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(
                        got.into_iter()
                            .map(|a| a["executionId"].as_str().unwrap().to_owned()),
                    );
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 60, "every execution claimed");
    assert_eq!(distinct.len(), 60, "none claimed twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_after_the_lease_ran_out_is_stale_and_the_retry_says_why() {
    let dir = common::store();
    let server = Server::start(dir.path(), &[]);
    let c = client();
    let id = submit_id(&c, &server, resize(3)).await;
    let got = claim(
        &c,
        &server,
        json!({"worker": "w-1", "callables": ["resize"], "leaseMs": 300}),
    )
    .await;
    assert_eq!(got[0]["attempt"], 1);
    // The worker stalls past its lease; the server recovers the attempt.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = events(&c, &server, &id).await;
    assert_eq!(types(&before), ["queued", "started", "recovered"]);
    assert_eq!(before[2]["reason"], "lease_expired");
    assert_eq!(before[2]["outcome"], "queued");
    let (status, err) = post(
        &c,
        &server,
        &format!("/v1/executions/{id}/attempts/1/complete"),
        json!({"output": "late"}),
    )
    .await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(error_code(&err), "stale_attempt");
    let (status, err) = post(
        &c,
        &server,
        &format!("/v1/executions/{id}/attempts/1/heartbeat"),
        json!({}),
    )
    .await;
    assert_eq!((status, error_code(&err)), (409, "stale_attempt"), "{err}");
    assert_eq!(events(&c, &server, &id).await, before, "nothing appended");
    // The second attempt, by another worker, completes.
    let got = claim(
        &c,
        &server,
        json!({"worker": "w-2", "callables": ["resize"], "leaseMs": 10000}),
    )
    .await;
    assert_eq!(got[0]["attempt"], 2);
    let (status, done) = post(
        &c,
        &server,
        &format!("/v1/executions/{id}/attempts/2/complete"),
        json!({"output": "ok"}),
    )
    .await;
    assert_eq!((status, &done["status"]), (200, &json!("completed")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_while_a_remote_worker_runs_is_told_at_its_heartbeat_and_its_answer_refused() {
    let dir = common::store();
    let server = Server::start(dir.path(), &[]);
    let c = client();
    let id = submit_id(&c, &server, resize(1)).await;
    claim(
        &c,
        &server,
        json!({"worker": "w-1", "callables": ["resize"]}),
    )
    .await;
    let (status, cancelled) = post(
        &c,
        &server,
        &format!("/v1/executions/{id}/cancel"),
        json!({"reason": "not needed"}),
    )
    .await;
    assert_eq!((status, &cancelled["status"]), (200, &json!("cancelled")));
    let (status, beat) = post(
        &c,
        &server,
        &format!("/v1/executions/{id}/attempts/1/heartbeat"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{beat}");
    assert_eq!(beat["cancelRequested"], true);
    let (status, err) = post(
        &c,
        &server,
        &format!("/v1/executions/{id}/attempts/1/complete"),
        json!({"output": 1}),
    )
    .await;
    assert_eq!((status, error_code(&err)), (409, "stale_attempt"), "{err}");
    assert_eq!(
        types(&events(&c, &server, &id).await),
        ["queued", "started", "cancelled"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_claim_returns_when_work_comes_and_a_failure_is_retried_by_the_policy() {
    let dir = common::store();
    let server = Server::start(dir.path(), &[]);
    let c = client();
    let (c2, url) = (c.clone(), server.url.clone());
    let waiting = tokio::spawn(async move {
        let r = c2
            .post(format!("{url}/v1/workers/claim"))
            .json(&json!({"worker": "w-1", "callables": ["resize"], "waitMs": 20000}))
            .send()
            .await
            .unwrap();
        r.json::<Value>().await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = submit_id(&c, &server, resize(2)).await;
    let got = waiting.await.unwrap();
    assert_eq!(got["attempts"][0]["executionId"], id.as_str(), "{got}");
    // A retryable failure: back to the queue for attempt 2.
    let error = json!({"code": "busy", "message": "try later"});
    let (status, failed) = post(
        &c,
        &server,
        &format!("/v1/executions/{id}/attempts/1/fail"),
        json!({"error": error, "retryable": true}),
    )
    .await;
    assert_eq!(status, 200, "{failed}");
    assert_eq!(failed["status"], "queued");
    assert_eq!(failed["error"], error);
    // A repeat is answered the same.
    let (status, again) = post(
        &c,
        &server,
        &format!("/v1/executions/{id}/attempts/1/fail"),
        json!({"error": error, "retryable": true}),
    )
    .await;
    assert_eq!((status, &again), (200, &failed));
    let got = claim(
        &c,
        &server,
        json!({"worker": "w-1", "callables": ["resize"]}),
    )
    .await;
    assert_eq!(got[0]["attempt"], 2);
    let (status, failed) = post(
        &c,
        &server,
        &format!("/v1/executions/{id}/attempts/2/fail"),
        json!({"error": {"code": "bad_input", "message": "not an image"}, "retryable": false}),
    )
    .await;
    assert_eq!((status, &failed["status"]), (200, &json!("failed")));
    assert_eq!(
        types(&events(&c, &server, &id).await),
        ["queued", "started", "retry_scheduled", "started", "failed"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_shuts_down_has_its_waiting_claim_answered_at_once_and_another_keeps_waiting()
{
    let dir = common::store();
    let server = Server::start(dir.path(), &[]);
    let c = client();
    let long_poll = |worker: &'static str| {
        let (c, url) = (c.clone(), server.url.clone());
        tokio::spawn(async move {
            let r = c
                .post(format!("{url}/v1/workers/claim"))
                .json(&json!({"worker": worker, "callables": ["resize"], "waitMs": 20000}))
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        })
    };
    let (stopping, staying) = (long_poll("w-stop"), long_poll("w-stay"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, said) = post(
        &c,
        &server,
        "/v1/workers/shutdown",
        json!({"worker": "w-stop"}),
    )
    .await;
    assert_eq!((status, &said), (200, &json!({"worker": "w-stop"})));
    let answered = tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the claim of a worker that shut down is answered at once")
        .unwrap();
    assert_eq!(answered, json!({"attempts": []}));
    // The other worker's claim still waits, and takes the next execution.
    let id = submit_id(&c, &server, resize(1)).await;
    let got = staying.await.unwrap();
    assert_eq!(got["attempts"][0]["executionId"], id.as_str(), "{got}");
    // A shutdown that overtakes the worker's claim: that claim answers at
    // once, with nothing, though work is queued; the next one is served.
    let queued = submit_id(&c, &server, resize(1)).await;
    let (status, _) = post(
        &c,
        &server,
        "/v1/workers/shutdown",
        json!({"worker": "w-late"}),
    )
    .await;
    assert_eq!(status, 200);
    let late = tokio::time::timeout(
        Duration::from_secs(10),
        claim(
            &c,
            &server,
            json!({"worker": "w-late", "callables": ["resize"], "waitMs": 20000}),
        ),
    )
    .await
    .expect("a claim after its worker's shutdown is answered at once");
    assert!(late.is_empty(), "{late:?}");
    let next = claim(
        &c,
        &server,
        json!({"worker": "w-late", "callables": ["resize"]}),
    )
    .await;
    assert_eq!(next[0]["executionId"], queued.as_str());
    // A worker's name is required, as in a claim; unknown fields are refused.
    for (body, says) in [
        (json!({}), "worker"),
        (json!({"worker": ""}), "worker must be 1-256 bytes"),
        (json!({"worker": "w", "now": true}), "now"),
    ] {
        let (status, err) = post(&c, &server, "/v1/workers/shutdown", body.clone()).await;
        assert_eq!(status, 400, "{body} → {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body} → {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_worker_requests_are_refused_with_the_field_and_nothing_appended() {
    let dir = common::store();
    let server = Server::start(dir.path(), &[]);
    let c = client();
    let id = submit_id(&c, &server, resize(1)).await;
    let head = get(&c, &server, "/v1/head").await.1;
    for (body, says) in [
        (json!({"worker": "w"}), "callables"),
        (json!({"callables": ["resize"]}), "worker"),
        (
            json!({"worker": "w", "callables": ["resize"], "max": 0}),
            "max must be 1-100",
        ),
        (
            json!({"worker": "w", "callables": ["resize"], "max": 101}),
            "max must be 1-100",
        ),
        (
            json!({"worker": "w", "callables": ["resize"], "waitMs": 70000}),
            "waitMs",
        ),
        (
            json!({"worker": "w", "callables": ["resize"], "leaseMs": 5}),
            "leaseMs must be",
        ),
        (json!({"worker": "w", "callables": []}), "callables"),
        (
            json!({"worker": "w", "callables": ["resize"], "speed": 1}),
            "speed",
        ),
        (json!({"worker": "w", "callables": "resize"}), "callables"),
    ] {
        let (status, err) = post(&c, &server, "/v1/workers/claim", body.clone()).await;
        assert_eq!(status, 400, "{body} → {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body} → {message}");
        assert!(!message.contains("Some("), "{message}");
    }
    let attempt = format!("/v1/executions/{id}/attempts");
    for (path, body, status_code, code) in [
        (format!("{attempt}/x/heartbeat"), json!({}), 400, "invalid"),
        (
            format!("{attempt}/0/complete"),
            json!({"output": 1}),
            400,
            "invalid",
        ),
        (
            format!("{attempt}/1/complete"),
            json!({}),
            400,
            "malformed_json",
        ),
        (
            format!("{attempt}/1/complete"),
            json!({"output": 1, "extra": true}),
            400,
            "invalid",
        ),
        (
            format!("{attempt}/1/fail"),
            json!({"error": {"code": "", "message": "m"}}),
            400,
            "invalid",
        ),
        (
            format!("{attempt}/1/heartbeat"),
            json!({"leaseMs": 1}),
            400,
            "invalid",
        ),
        (
            format!("{attempt}/1/complete"),
            json!({"output": 1}),
            409,
            "stale_attempt",
        ),
        (
            "/v1/executions/0193a0f1-0000-7000-8000-000000000000/attempts/1/heartbeat".to_owned(),
            json!({}),
            404,
            "not_found",
        ),
    ] {
        let (status, err) = post(&c, &server, &path, body.clone()).await;
        assert_eq!(
            (status, error_code(&err)),
            (status_code, code),
            "{path} {body} → {err}"
        );
    }
    assert_eq!(
        get(&c, &server, "/v1/head").await.1,
        head,
        "nothing appended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_key_claims_only_its_tenants_work() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_keys(
        dir.path(),
        json!([
            {"admin": true, "sha256": common::server::sha256_hex("admin-key")},
            {"tenant": "acme", "sha256": common::server::sha256_hex("acme-key")},
            {"tenant": "globex", "sha256": common::server::sha256_hex("globex-key")},
        ]),
    );
    let c = client();
    let submit = |tenant: &str| {
        c.post(server.url("/v1/executions"))
            .bearer_auth("admin-key")
            .json(&json!({"tenantId": tenant, "callableName": "resize"}))
            .send()
    };
    let other: Value = submit("globex").await.unwrap().json().await.unwrap();
    let mine: Value = submit("acme").await.unwrap().json().await.unwrap();
    let claim = |key: &'static str| {
        c.post(server.url("/v1/workers/claim"))
            .bearer_auth(key)
            .json(&json!({"worker": "w", "callables": ["resize"], "max": 10}))
            .send()
    };
    let got: Value = claim("acme-key").await.unwrap().json().await.unwrap();
    let ids: Vec<_> = got["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["executionId"].clone())
        .collect();
    assert_eq!(ids, vec![mine["executionId"].clone()]);
    // Another tenant's attempt is not found for it.
    let r = c
        .post(server.url(&format!(
            "/v1/executions/{}/attempts/1/heartbeat",
            other["executionId"].as_str().unwrap()
        )))
        .bearer_auth("acme-key")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // A complete of another tenant's attempt is not found either.
    let r = c
        .post(server.url(&format!(
            "/v1/executions/{}/attempts/1/complete",
            other["executionId"].as_str().unwrap()
        )))
        .bearer_auth("acme-key")
        .json(&json!({"output": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let got: Value = claim("admin-key").await.unwrap().json().await.unwrap();
    assert_eq!(got["attempts"][0]["executionId"], other["executionId"]);
    // A worker of globex's does not run acme's work: acme's render still
    // has no worker, and acme learns nothing of globex's callables.
    let r = c
        .post(server.url("/v1/executions"))
        .bearer_auth("acme-key")
        .json(&json!({"callableName": "render"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let r = c
        .post(server.url("/v1/workers/claim"))
        .bearer_auth("globex-key")
        .json(&json!({"worker": "g", "callables": ["render", "globex-secret"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let view: Value = c
        .get(server.url("/v1/workers"))
        .bearer_auth("acme-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["callablesWithoutWorker"], json!(["render"]), "{view}");
    assert_eq!(view["leasedAttempts"], 1, "acme's own leased attempt only");
}
