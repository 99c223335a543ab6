//! `examples/worker.py` against a real `ledger serve` on 127.0.0.1: it runs
//! a batch to the end (outputs, failures, started events naming it and its
//! lease), stops an execution cancelled while it runs, and exits 0 on
//! SIGTERM. Skipped, saying so, where `python3` is missing.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::server::{client, json_of, submit_id, Server};

const TERMINAL: [&str; 4] = ["completed", "failed", "cancelled", "timeout"];

fn have_python() -> bool {
    let found = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    // CI has Python 3; a missing one is a failure, not a skip.
    assert!(
        found,
        "python3 is not installed, so examples/worker.py cannot run"
    );
    found
}

/// `python3 examples/worker.py` as a child process, its standard error
/// (the log) collected as it comes.
struct Worker {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Worker {
    // The child is reaped in `terminate` or in `Drop`.
    #[allow(clippy::zombie_processes)]
    fn start(server: &Server, args: &[&str]) -> Worker {
        let mut child = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/worker.py"))
            .args(["--server", &server.url])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Worker { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (up to `limit`) until the log has a line containing `text`.
    async fn logs(&self, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log().lines().any(|l| l.contains(text)) {
            assert!(
                Instant::now() < deadline,
                "the worker never logged {text:?}; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn still_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM, and the exit status it gave within `limit`.
    async fn terminate(&mut self, limit: Duration) -> ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the worker did not exit within {limit:?} of SIGTERM; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get(c: &reqwest::Client, server: &Server, path: &str) -> Value {
    let (status, v) = json_of(c.get(server.url(path)).send().await.unwrap()).await;
    assert_eq!(status, 200, "{path}: {v}");
    v
}

/// The record of `id` once its status is `until` (or, with `None`, any
/// terminal status), polling for up to a minute.
async fn wait_for(
    c: &reqwest::Client,
    server: &Server,
    id: &str,
    until: Option<&str>,
    worker: &Worker,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let record = get(c, server, &format!("/v1/executions/{id}")).await;
        let status = record["status"].as_str().unwrap_or("");
        if until.map_or(TERMINAL.contains(&status), |s| s == status) {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "{id} is still {status}; the worker's log:\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn events(c: &reqwest::Client, server: &Server, id: &str) -> Vec<Value> {
    get(c, server, &format!("/v1/executions/{id}/events"))
        .await
        .as_array()
        .unwrap()
        .clone()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_worker_runs_a_batch_to_the_end_and_exits_0_on_sigterm() {
    if !have_python() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let c = client();
    // `ledger serve` runs a callable called `fail` itself: the worker runs
    // its `fail` handler under another name.
    let inputs: Vec<String> = (0..20).map(|i| format!("Item {i} of batch x")).collect();
    let mut batch: Vec<Value> = inputs
        .iter()
        .map(|input| json!({"callableName": "upper", "input": input}))
        .collect();
    batch.push(json!({"callableName": "py-fail", "input": "disk full"}));
    batch.push(json!({"callableName": "py-fail", "input": "no route to host"}));
    let (status, v) = json_of(
        c.post(server.url("/v1/executions/batch"))
            .json(&json!({"tenantId": "acme", "executions": batch}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let ids: Vec<String> = v["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["executionId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 22);

    let mut worker = Worker::start(
        &server,
        &[
            "--callable",
            "upper",
            "--callable",
            "py-fail=fail",
            "--concurrency",
            "4",
            "--lease-ms",
            "20000",
            "--name",
            "py-worker-1",
        ],
    );
    for (i, id) in ids.iter().enumerate() {
        let record = wait_for(&c, &server, id, None, &worker).await;
        if i < 20 {
            assert_eq!(record["status"], "completed", "{record}");
            assert_eq!(record["output"], inputs[i].to_uppercase(), "{record}");
        } else {
            assert_eq!(record["status"], "failed", "{record}");
            assert_eq!(record["error"]["code"], "failed", "{record}");
            let message = if i == 20 {
                "disk full"
            } else {
                "no route to host"
            };
            assert_eq!(record["error"]["message"], message, "{record}");
        }
        let history = events(&c, &server, id).await;
        let expected = if i < 20 { "completed" } else { "failed" };
        assert_eq!(types(&history), ["queued", "started", expected], "{id}");
        assert_eq!(history[1]["worker"], "py-worker-1", "{}", history[1]);
        assert_eq!(history[1]["leaseMs"], 20000, "{}", history[1]);
    }
    // The worker logs an answer once the server has taken it, which may be
    // after the record shows it: wait for the lines.
    let count = |log: &str, what: &str| log.lines().filter(|l| l.contains(what)).count();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (
        count(&worker.log(), " completed "),
        count(&worker.log(), " failed "),
    ) != (20, 2)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = worker.log();
    assert_eq!(
        log.lines().filter(|l| l.contains(" completed ")).count(),
        20,
        "{log}"
    );
    assert_eq!(
        log.lines().filter(|l| l.contains(" failed ")).count(),
        2,
        "{log}"
    );
    // Idle, the worker is in a long-polled claim: SIGTERM cuts it short.
    assert!(worker.still_running(), "{log}");
    let status = worker.terminate(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "{}", worker.log());
    assert!(worker.log().lines().any(|l| l.ends_with(" stopped")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleep_cancelled_while_the_python_worker_runs_it_is_stopped_and_the_worker_goes_on() {
    if !have_python() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let c = client();
    // A lease of 1.5 s: a heartbeat every 0.5 s tells the worker of the
    // cancel.
    let mut worker = Worker::start(
        &server,
        &[
            "--callable",
            "py-sleep=sleep",
            "--lease-ms",
            "1500",
            "--name",
            "py-worker-2",
        ],
    );
    let id = submit_id(
        &c,
        &server,
        json!({"tenantId": "acme", "callableName": "py-sleep", "input": "30000"}),
    )
    .await;
    let running = wait_for(&c, &server, &id, Some("running"), &worker).await;
    assert_eq!(running["attempt"], 1, "{running}");
    worker
        .logs(&format!("claimed {id}#1"), Duration::from_secs(30))
        .await;

    let (status, cancelled) = json_of(
        c.post(server.url(&format!("/v1/executions/{id}/cancel")))
            .json(&json!({"reason": "not needed"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, &cancelled["status"]), (200, &json!("cancelled")));
    // The worker hears of it at a heartbeat and stops the attempt, long
    // before its 30 s are up, sending nothing.
    worker
        .logs(&format!("stopped {id}#1"), Duration::from_secs(20))
        .await;
    let history = events(&c, &server, &id).await;
    assert_eq!(types(&history), ["queued", "started", "cancelled"]);
    assert_eq!(history[1]["worker"], "py-worker-2");
    assert_eq!(history[1]["leaseMs"], 1500);
    let record = get(&c, &server, &format!("/v1/executions/{id}")).await;
    assert_eq!(record["status"], "cancelled", "{record}");
    let log = worker.log();
    assert!(
        !log.contains("stale"),
        "nothing was sent after the cancel: {log}"
    );
    assert!(!log.contains("completed"), "{log}");

    // Still healthy: it runs the next one.
    assert!(worker.still_running(), "{log}");
    let next = submit_id(
        &c,
        &server,
        json!({"tenantId": "acme", "callableName": "py-sleep", "input": "10"}),
    )
    .await;
    let done = wait_for(&c, &server, &next, None, &worker).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["output"], json!({"sleptMs": 10}));
    let status = worker.terminate(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", worker.log());
}
