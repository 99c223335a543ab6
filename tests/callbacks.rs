//! Signed callbacks: each delivery carries `Ledger-Signature: t=…,v1=…`
//! (HMAC-SHA256 over the timestamp and the body, one `v1` per secret of the
//! tenant), a `User-Agent`, and the execution id as its idempotency key.
//! Checked by a real HTTP receiver on 127.0.0.1 in the library's runtime,
//! and, for `ledger serve --callback-secrets`, by the receiver of
//! `examples/callback_receiver.py` (the README's recipe) through a rotation
//! done by rewriting the file while the server runs.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use execution_ledger::{
    verify_callback, BackgroundExecutionMode, CallbackSecrets, EventKind, Ledger, Runtime,
    SignatureError, Submission, TenantId, DEFAULT_TOLERANCE,
};
use hmac::{Hmac, Mac};
use serde_json::json;

mod common;
use common::server::{client, json_of, submit_id, Server};
use common::Received;

const WAIT: Duration = Duration::from_secs(30);
const NEW: &str = "whsec-new-0123456789abcdef";
const OLD: &str = "whsec-old-0123456789abcdef";
const NEWER: &str = "whsec-newer-0123456789abcdef";

fn tenant(name: &str) -> TenantId {
    name.parse().unwrap()
}

fn hook(url: &str, input: &str) -> Submission {
    let mut s = Submission::new("echo");
    s.input = Some(input.to_owned());
    s.config.mode = BackgroundExecutionMode::Deferred;
    s.config.callback_url = Some(url.to_owned());
    s
}

/// The `t` and the `v1`s of a `Ledger-Signature` value.
fn parts(header: &str) -> (i64, Vec<String>) {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.split_once('=').unwrap() {
            ("t", v) => t = Some(v.parse().unwrap()),
            ("v1", v) => v1.push(v.to_owned()),
            other => panic!("an unknown part {other:?}"),
        }
    }
    (t.unwrap(), v1)
}

/// The signature as the README defines it, computed here on its own.
fn hmac_hex(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn requests_for(got: &Arc<Mutex<Vec<Received>>>, id: &str) -> Vec<Received> {
    got.lock()
        .unwrap()
        .iter()
        .filter(|r| r.json()["executionId"] == id)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_are_signed_with_each_secret_of_their_tenant_and_rotated_through_the_handle() {
    let dir = common::store();
    let ledger = Ledger::open(dir.path()).unwrap();
    // The first request is refused, so one execution is delivered twice.
    let (url, got) = common::http_receiver_whole(|n| if n == 0 { 500 } else { 200 });
    let secrets = CallbackSecrets::new();
    secrets.set(tenant("acme"), vec![NEW, OLD]).unwrap();
    let runtime = Runtime::builder(ledger.clone())
        .register_builtins()
        .callbacks(Duration::from_secs(5), Duration::from_millis(10))
        .callback_secrets(secrets.clone())
        .start()
        .await
        .unwrap();

    let run = |s: Submission, who: &'static str| {
        let runtime = &runtime;
        async move {
            let handle = runtime.submit(&tenant(who), s).await.unwrap();
            let id = handle.id();
            runtime.release(id).await.unwrap();
            tokio::time::timeout(WAIT, handle.result())
                .await
                .unwrap()
                .unwrap();
            tokio::time::timeout(WAIT, runtime.wait_idle())
                .await
                .unwrap();
            id
        }
    };

    // During a rotation: two secrets, two signatures, either verifies.
    let id = run(hook(&url, "for the hook"), "acme").await;
    let sent = requests_for(&got, &id.to_string());
    assert_eq!(sent.len(), 2, "refused once, then delivered");
    for (n, r) in sent.iter().enumerate() {
        assert_eq!(r.header("idempotency-key"), Some(id.to_string().as_str()));
        assert_eq!(
            r.header("ledger-delivery-attempt"),
            Some((n + 1).to_string().as_str())
        );
        assert!(r
            .header("user-agent")
            .unwrap()
            .starts_with("execution-ledger/"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        let (t, v1) = parts(r.header("ledger-signature").unwrap());
        assert!(
            (Utc::now().timestamp() - t).abs() < 60,
            "t is the time it was sent"
        );
        assert_eq!(
            v1,
            vec![hmac_hex(NEW, t, &r.body), hmac_hex(OLD, t, &r.body)]
        );
        let header = r.header("ledger-signature").unwrap();
        let at = DateTime::from_timestamp(t, 0).unwrap();
        for secret in [NEW, OLD] {
            assert_eq!(
                verify_callback(header, &r.body, &[secret], at, DEFAULT_TOLERANCE),
                Ok(at)
            );
        }
        // A tampered body, a stranger's secret, an old timestamp.
        let tampered = String::from_utf8(r.body.clone())
            .unwrap()
            .replace("for the hook", "for the crook");
        assert_ne!(tampered.as_bytes(), r.body.as_slice());
        assert_eq!(
            verify_callback(
                header,
                tampered.as_bytes(),
                &[NEW, OLD],
                at,
                DEFAULT_TOLERANCE
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_callback(header, &r.body, &[NEWER], at, DEFAULT_TOLERANCE),
            Err(SignatureError::Mismatch)
        );
        let later = at + chrono::Duration::minutes(6);
        assert_eq!(
            verify_callback(header, &r.body, &[NEW], later, DEFAULT_TOLERANCE),
            Err(SignatureError::Stale {
                age_secs: 360,
                tolerance_secs: 300
            })
        );
    }
    let body = sent[1].json();
    assert_eq!(body["status"], "completed");
    assert_eq!(body["output"], "for the hook");
    assert_eq!(body["tenantId"], "acme");

    // The rotation ends: the handle is given the newer secret alone, and
    // the next delivery is signed with it only.
    secrets.set(tenant("acme"), vec![NEWER]).unwrap();
    let id = run(hook(&url, "after the rotation"), "acme").await;
    let sent = requests_for(&got, &id.to_string());
    assert_eq!(sent.len(), 1);
    let header = sent[0].header("ledger-signature").unwrap();
    let (t, v1) = parts(header);
    assert_eq!(v1, vec![hmac_hex(NEWER, t, &sent[0].body)]);
    let at = DateTime::from_timestamp(t, 0).unwrap();
    assert_eq!(
        verify_callback(header, &sent[0].body, &[NEW, OLD], at, DEFAULT_TOLERANCE),
        Err(SignatureError::Mismatch)
    );

    // A tenant with no secret gets nothing unsigned: each attempt is
    // recorded as failed, saying why, and the receiver hears nothing.
    let id = run(hook(&url, "unsigned?"), "beta").await;
    assert!(requests_for(&got, &id.to_string()).is_empty());
    let e = ledger.get(id).unwrap();
    assert!(!e.callback_delivered);
    assert_eq!(e.callback_attempts, execution_ledger::MAX_CALLBACK_ATTEMPTS);
    let reasons: Vec<String> = ledger
        .history(id)
        .unwrap()
        .into_iter()
        .filter_map(|event| match event.kind {
            EventKind::CallbackFailed {
                error,
                status_code: None,
                ..
            } => Some(error),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons.len() as u32,
        execution_ledger::MAX_CALLBACK_ATTEMPTS
    );
    assert!(
        reasons
            .iter()
            .all(|r| r == "no callback secret for tenant beta: a callback is not sent unsigned"),
        "{reasons:?}"
    );
    runtime.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// `examples/callback_receiver.py` as a child process, its lines collected.
struct PyReceiver {
    child: Child,
    url: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl PyReceiver {
    // The child is reaped in `Drop`.
    #[allow(clippy::zombie_processes)]
    fn start(secrets: &[&str]) -> PyReceiver {
        let mut cmd = Command::new("python3");
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/callback_receiver.py"
        ));
        for s in secrets {
            cmd.args(["--secret", s]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs examples/callback_receiver.py");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = out.next().unwrap().unwrap();
        let url = first.strip_prefix("listening on ").unwrap().to_owned();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in out.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        PyReceiver { child, url, lines }
    }

    /// Waits for the first line that starts with `prefix`.
    fn line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.starts_with(prefix))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no line {prefix:?} in {:?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PyReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Submits a deferred echo that calls `url` back, and releases it.
async fn call_back(c: &reqwest::Client, server: &Server, url: &str, input: &str) -> String {
    let id = submit_id(
        c,
        server,
        json!({"tenantId": "acme", "callableName": "echo", "input": input,
               "config": {"mode": "deferred", "callbackUrl": url}}),
    )
    .await;
    let (status, _) = json_of(
        c.post(server.url(&format!("/v1/executions/{id}/release")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    id
}

fn write_secrets(file: &std::path::Path, doc: serde_json::Value) {
    // Written whole, then renamed: the server never reads half a file.
    let part = file.with_extension("part");
    std::fs::write(&part, serde_json::to_vec(&doc).unwrap()).unwrap();
    std::fs::rename(&part, file).unwrap();
    // The server looks at the file every second.
    std::thread::sleep(Duration::from_millis(2500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_signs_callbacks_that_the_example_receiver_verifies_through_a_rotation_without_restart(
) {
    let store = common::store();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("secrets.json");

    // Bad files are refused before anything starts, naming what is wrong.
    for (doc, says) in [
        (
            json!({"secrets": {"acme": ["short"]}}),
            "tenant acme: a secret takes at least 16 bytes, not 5",
        ),
        (
            json!({"secrets": {"acme": [OLD]}, "tenants": {}}),
            "tenants: unknown field",
        ),
        (
            json!({"secrets": {"acme": []}}),
            "tenant acme: takes 1 to 4 secrets, not 0",
        ),
        (
            json!({"secrets": {"acme": [1]}}),
            "secrets.acme[0]: must be a secret (a string of 16 bytes or more), not 1",
        ),
        (
            json!({"secrets": {"a b": [OLD]}}),
            "secrets.a b: not a tenant id",
        ),
        (json!({"secrets": {}}), "secrets: empty"),
        (json!({}), "secrets: missing"),
    ] {
        std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
        let out = common::ledger_cli(
            store.path(),
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--callback-secrets",
                file.to_str().unwrap(),
            ],
        );
        assert_eq!(out.status.code(), Some(2), "{doc}");
        let err = common::stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("--callback-secrets") && err.contains(says),
            "{doc}: {err}"
        );
    }

    write_secrets(&file, json!({"secrets": {"acme": [OLD]}}));
    let server = Server::start(
        store.path(),
        &["--callback-secrets", file.to_str().unwrap()],
    );
    let c = client();

    // 1. One secret; the receiver knows it.
    let receiver = PyReceiver::start(&[OLD]);
    let id = call_back(&c, &server, &receiver.url, "one").await;
    assert_eq!(
        receiver.line(&format!("verified {id}")),
        format!("verified {id} attempt 1")
    );

    // 2. The new secret beside the old, in the file, while serving: the
    //    receiver that knows only the old still verifies.
    write_secrets(&file, json!({"secrets": {"acme": [NEW, OLD]}}));
    let id = call_back(&c, &server, &receiver.url, "two").await;
    receiver.line(&format!("verified {id}"));

    // 3. The receiver moves to the new secret alone.
    drop(receiver);
    let receiver = PyReceiver::start(&[NEW]);
    let id = call_back(&c, &server, &receiver.url, "three").await;
    receiver.line(&format!("verified {id}"));

    // 4. The old secret leaves the file.
    write_secrets(&file, json!({"secrets": {"acme": [NEW]}}));
    let old_only = PyReceiver::start(&[OLD]);
    let id = call_back(&c, &server, &old_only.url, "four").await;
    assert_eq!(
        old_only.line("refused"),
        "refused: no signature matches the body"
    );
    let id_new = call_back(&c, &server, &receiver.url, "four again").await;
    receiver.line(&format!("verified {id_new}"));
    // The receiver's 401 is recorded as a failed delivery.
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, events) = json_of(
            c.get(server.url(&format!("/v1/executions/{id}/events")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        let failed = events
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "callback_failed");
        if let Some(failed) = failed {
            assert_eq!(failed["statusCode"], 401, "{failed}");
            assert_eq!(failed["attempt"], 1);
            break;
        }
        assert!(Instant::now() < deadline, "no callback_failed in {events}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 5. A broken file is refused while serving: the secrets before it
    //    still sign.
    write_secrets(&file, json!({"secrets": {"acme": ["short"]}}));
    let id = call_back(&c, &server, &receiver.url, "five").await;
    receiver.line(&format!("verified {id}"));

    // The receiver refuses, on its own, a signature that is old, a body
    // that was changed, and handles a repeat once.
    let signer = CallbackSecrets::new();
    signer.set(tenant("acme"), vec![NEW]).unwrap();
    let body = format!(r#"{{"executionId":"{id}","status":"completed"}}"#);
    let post = |signature: String, body: String| {
        let c = &c;
        let url = receiver.url.clone();
        let id = id.clone();
        async move {
            c.post(url)
                .header("Ledger-Signature", signature)
                .header("Idempotency-Key", id)
                .header("Ledger-Delivery-Attempt", "9")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let stale = signer
        .sign(
            &tenant("acme"),
            Utc::now() - chrono::Duration::minutes(10),
            body.as_bytes(),
        )
        .unwrap();
    assert_eq!(post(stale, body.clone()).await, 401);
    receiver.line("refused: a signature 6");
    let fresh = signer
        .sign(&tenant("acme"), Utc::now(), body.as_bytes())
        .unwrap();
    assert_eq!(
        post(fresh.clone(), body.replace("completed", "failed")).await,
        401
    );
    assert_eq!(
        receiver.line("refused: no"),
        "refused: no signature matches the body"
    );
    assert_eq!(post(fresh, body).await, 204);
    assert_eq!(receiver.line("repeat"), format!("repeat {id} attempt 9"));
    assert!(server.stop().success());
}
