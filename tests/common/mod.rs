//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod postgres;
pub mod server;

#[allow(unused_imports)]
pub use postgres::{backend, place_flag, store, Backend};

/// A clock the test moves by hand, from 2026-01-01T00:00:00Z.
#[derive(Clone)]
pub struct TestClock(pub Arc<Mutex<chrono::DateTime<chrono::Utc>>>);

impl TestClock {
    pub fn new() -> Self {
        use chrono::TimeZone;
        TestClock(Arc::new(Mutex::new(
            chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        )))
    }

    pub fn advance_ms(&self, ms: i64) {
        self.advance(chrono::Duration::milliseconds(ms));
    }

    pub fn advance(&self, by: chrono::Duration) {
        *self.0.lock().unwrap() += by;
    }
}

/// What a child process printed on standard output, as text.
pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What a child process printed on standard error, as text.
pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs the `ledger` binary on the ledger at `dir` (a data directory, or a
/// database URL) with `args`.
pub fn ledger_cli(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ledger"))
        .arg(place_flag(dir))
        .arg(dir)
        .args(args)
        .env_remove("LEDGER_DATA_DIR")
        .output()
        .unwrap()
}

impl execution_ledger::Clock for TestClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        *self.0.lock().unwrap()
    }
}

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use execution_ledger::{EventKind, ExecutionId, Ledger};

/// Checks the invariants over the whole log; returns the terminal event
/// count of every execution.
pub fn check_log(ledger: &Ledger, cycle: u64) -> HashMap<ExecutionId, u32> {
    let mut running: HashSet<ExecutionId> = HashSet::new();
    let mut terminal: HashMap<ExecutionId, u32> = HashMap::new();
    for event in ledger.events(1, None) {
        let event = event.unwrap();
        let id = event.execution_id;
        match &event.kind {
            EventKind::Queued(_) => {
                terminal.insert(id, 0);
            }
            EventKind::Started { .. } => {
                assert!(
                    running.insert(id),
                    "cycle {cycle}: {id} started twice without ending (seq {})",
                    event.seq
                );
            }
            EventKind::RetryScheduled { .. } => {
                running.remove(&id);
            }
            EventKind::Recovered { outcome, .. } => {
                running.remove(&id);
                if outcome.is_terminal() {
                    *terminal.get_mut(&id).unwrap() += 1;
                }
            }
            EventKind::Completed { .. }
            | EventKind::Failed { .. }
            | EventKind::TimedOut { .. }
            | EventKind::Cancelled { .. } => {
                running.remove(&id);
                *terminal.get_mut(&id).unwrap() += 1;
            }
            _ => {}
        }
        assert!(
            terminal[&id] <= 1,
            "cycle {cycle}: {id} ended twice (seq {})",
            event.seq
        );
    }
    terminal
}

/// A small deterministic generator (xorshift), so a failing run can be
/// repeated from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A count from the environment variable `name`, else `default`.
pub fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Runs `cmd` with its stdout piped, SIGKILLs it after `wait`, and returns
/// the lines it printed before it died.
pub fn run_until_killed(cmd: &mut Command, wait: Duration) -> Vec<String> {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    std::thread::sleep(wait);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap()
}

/// An HTTP/1.1 receiver on 127.0.0.1 for callbacks: answers the `n`th
/// request (from 0) with `status(n)` and keeps every JSON body it got.
pub fn http_receiver(
    status: impl Fn(usize) -> u16 + Send + 'static,
) -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    let url = receive(status, move |r| {
        let mut bodies = kept.lock().unwrap();
        bodies.push(r.json());
        bodies.len() - 1
    });
    (url, bodies)
}

/// One request an [`http_receiver_whole`] got: its headers (names in lower
/// case) and its body as sent.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    /// The body as JSON (null when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// An HTTP/1.1 receiver on 127.0.0.1 that keeps each request whole: answers
/// the `n`th (from 0) with `status(n)`.
pub fn http_receiver_whole(
    status: impl Fn(usize) -> u16 + Send + 'static,
) -> (String, Arc<Mutex<Vec<Received>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let kept = got.clone();
    let url = receive(status, move |r| {
        let mut got = kept.lock().unwrap();
        got.push(r);
        got.len() - 1
    });
    (url, got)
}

/// Serves on 127.0.0.1 until the test ends: each request goes to `keep`,
/// which says its number (from 0), and is answered `status(n)` after.
fn receive(
    status: impl Fn(usize) -> u16 + Send + 'static,
    keep: impl Fn(Received) -> usize + Send + 'static,
) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let mut request = None;
            while let Ok(n) = stream.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let headers: HashMap<String, String> = text[..end]
                        .lines()
                        .skip(1)
                        .filter_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            Some((k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                        })
                        .collect();
                    let len: usize = headers
                        .get("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        let body = buf[end + 4..end + 4 + len].to_vec();
                        request = Some(Received { headers, body });
                        break;
                    }
                }
            }
            let Some(request) = request else { continue };
            let n = keep(request);
            let _ = stream.write_all(
                format!(
                    "HTTP/1.1 {} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    status(n)
                )
                .as_bytes(),
            );
        }
    });
    url
}
