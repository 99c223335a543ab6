//! The multi-process crash test: three `ledger serve` processes on one
//! private PostgreSQL, each running in-process workers, and two `ledger
//! worker` processes (remote workers) of a callable no server runs, while a
//! mixed workload is submitted through whichever server is up: echoes,
//! failures retried once, sleeps that time out, sleeps that get cancelled,
//! deferred executions released later that call a callback back. Every
//! cycle SIGKILLs one server at a random moment and starts it again.
//!
//! After each kill (read from a fresh ledger on the database): every
//! acknowledged submission is present, seqs are gap-free from 1, the chain
//! verifies, no execution has two terminal events or two running attempts
//! without an end between them. At the end, once everything has finished:
//! each acknowledged execution finished exactly once, and each released
//! deferred one called its callback back.
//!
//! `LEDGER_PG_CRASH_CYCLES` sets the kills (10 by default; 500 for the long
//! run), `LEDGER_PG_CRASH_SEED` the schedule's seed, `LEDGER_PG_CRASH_LOGS`
//! a directory for the processes' logs.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use execution_ledger::{BackgroundExecutionStatus, ExecutionId, Ledger};
use serde_json::{json, Value};

mod common;
use common::postgres::server;
use common::{check_log, env_count, http_receiver, Rng};

/// Servers' and workers' leases: a killed process's attempts come back
/// to the others after this long.
const LEASE_MS: &str = "1000";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Echo,
    Remote,
    Retried,
    TimesOut,
    Cancelled,
    Deferred,
}

/// Child processes, killed when dropped (also when the test fails).
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where a child's stderr goes: a file under `LEDGER_PG_CRASH_LOGS` when
/// set (to read after a failure), else nowhere.
fn log(name: &str) -> Stdio {
    match std::env::var_os("LEDGER_PG_CRASH_LOGS") {
        Some(dir) => {
            let path = std::path::Path::new(&dir).join(format!("{name}.log"));
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_or_else(|_| Stdio::null(), Stdio::from)
        }
        None => Stdio::null(),
    }
}

fn spawn_serve(url: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(["--database", url, "serve"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--workers",
            "4",
            "--lease-ms",
            LEASE_MS,
            "--grace-secs",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(log(&format!("serve-{port}")))
        .spawn()
        .unwrap()
}

fn spawn_worker(port: u16, n: usize) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(["--server", &format!("http://127.0.0.1:{port}"), "worker"])
        .args(["--callable", "work", "--exec", "tr a-z A-Z"])
        .args(["--concurrency", "4", "--lease-ms", LEASE_MS])
        .args(["--name", &format!("remote-{n}")])
        .stdout(Stdio::null())
        .stderr(log(&format!("worker-{n}")))
        .spawn()
        .unwrap()
}

fn wait_healthy(http: &reqwest::blocking::Client, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .map_or(true, |r| !r.status().is_success())
    {
        assert!(
            Instant::now() < deadline,
            "the server on {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn submission(kind: Kind, hook: &str) -> Value {
    match kind {
        Kind::Echo => json!({"callableName": "echo", "input": "x"}),
        Kind::Remote => json!({"callableName": "work", "input": "abc"}),
        Kind::Retried => json!({"callableName": "fail", "input": "no",
            "config": {"retry": {"maxAttempts": 2, "initialDelayMs": 50}}}),
        Kind::TimesOut => json!({"callableName": "sleep", "input": "5000",
            "config": {"timeoutMs": 300}}),
        Kind::Cancelled => json!({"callableName": "sleep", "input": "60000"}),
        Kind::Deferred => json!({"callableName": "echo", "input": "later",
            "config": {"mode": "deferred", "callbackUrl": hook}}),
    }
}

/// Checks the log as a fresh ledger on the database reads it; returns each
/// execution's terminal events and the ledger.
fn check(
    url: &str,
    acked: &HashMap<ExecutionId, Kind>,
    cycle: u64,
) -> (HashMap<ExecutionId, u32>, Ledger) {
    let ledger = Ledger::open(url).unwrap();
    for (expected, e) in (1..).zip(ledger.events(1, None)) {
        let seq = e.unwrap().seq;
        assert_eq!(seq, expected, "cycle {cycle}: a gap before seq {seq}");
    }
    let terminal = check_log(&ledger, cycle);
    ledger
        .verify()
        .unwrap_or_else(|e| panic!("cycle {cycle}: verify: {e}"));
    for id in acked.keys() {
        assert!(
            terminal.contains_key(id),
            "cycle {cycle}: acknowledged {id} is not in the log"
        );
    }
    (terminal, ledger)
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run: cargo test --test postgres --test postgres_harness --test pg_crash -- --include-ignored"]
fn killed_ledger_processes_on_one_database_lose_nothing_and_finish_everything_once() {
    let cycles = env_count("LEDGER_PG_CRASH_CYCLES", 10);
    let mut rng = Rng(env_count("LEDGER_PG_CRASH_SEED", 0x5eed) | 1);
    let url = server().database();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (hook, calls) = http_receiver(|_| 200);
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut servers = Children(ports.iter().map(|p| spawn_serve(&url, *p)).collect());
    for p in &ports {
        wait_healthy(&http, *p);
    }
    let workers = Children((0..2).map(|n| spawn_worker(ports[n], n)).collect());
    let kinds = [
        Kind::Echo,
        Kind::Remote,
        Kind::Retried,
        Kind::TimesOut,
        Kind::Cancelled,
        Kind::Deferred,
    ];
    let mut acked: HashMap<ExecutionId, Kind> = HashMap::new();
    let mut released: HashSet<ExecutionId> = HashSet::new();
    let mut down: Option<usize> = None;
    let started = Instant::now();
    let mut lost_answers = 0u32;
    // A kill interrupts an attempt only when one is running at that
    // moment: past the cycles asked for, kills go on (up to three times as
    // many) until one has.
    let (mut cycle, mut recovered) = (0, false);
    while cycle < cycles || (!recovered && cycle < 3 * cycles) {
        cycle += 1;
        // A batch through a server that is up, then cancels and releases.
        let up: Vec<usize> = (0..3).filter(|i| Some(*i) != down).collect();
        let via = ports[up[rng.below(up.len() as u64) as usize]];
        let batch: Vec<(Kind, Value)> = (0..24)
            .map(|i| {
                let k = kinds[i % kinds.len()];
                (k, submission(k, &hook))
            })
            .collect();
        let body = json!({"tenantId": "acme", "executions": batch.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>()});
        match http
            .post(format!("http://127.0.0.1:{via}/v1/executions/batch"))
            .json(&body)
            .send()
        {
            Ok(r) if r.status().is_success() => {
                let v: Value = r.json().unwrap();
                for ((kind, _), e) in batch.iter().zip(v["executions"].as_array().unwrap()) {
                    let id: ExecutionId = e["executionId"].as_str().unwrap().parse().unwrap();
                    acked.insert(id, *kind);
                }
            }
            _ => lost_answers += 1,
        }
        for (id, kind) in &acked {
            let action = match kind {
                Kind::Cancelled if rng.below(3) == 0 => "cancel",
                Kind::Deferred if !released.contains(id) && rng.below(2) == 0 => "release",
                _ => continue,
            };
            let port = ports[up[rng.below(up.len() as u64) as usize]];
            if let Ok(r) = http
                .post(format!(
                    "http://127.0.0.1:{port}/v1/executions/{id}/{action}"
                ))
                .send()
            {
                // Done, or refused because it had ended (409), or the
                // server was stopping: never a failure of the ledger's.
                let status = r.status().as_u16();
                assert!(
                    matches!(status, 200 | 409 | 503),
                    "cycle {cycle}: {action} of {id} answered {status}: {}",
                    r.text().unwrap_or_default()
                );
                if action == "release" && status == 200 {
                    released.insert(*id);
                }
            }
        }
        if let Some(i) = down.take() {
            servers.0[i] = spawn_serve(&url, ports[i]);
            wait_healthy(&http, ports[i]);
        }
        // The kill, at a random moment.
        std::thread::sleep(Duration::from_millis(100 + rng.below(900)));
        let victim = rng.below(3) as usize;
        servers.0[victim].kill().unwrap(); // SIGKILL
        servers.0[victim].wait().unwrap();
        down = Some(victim);
        let (_, seen) = check(&url, &acked, cycle);
        recovered = recovered
            || seen.events(1, None).any(|e| {
                matches!(
                    e.map(|e| e.kind),
                    Ok(execution_ledger::EventKind::Recovered { .. })
                )
            });
    }
    let cycles = cycle;
    if let Some(i) = down.take() {
        servers.0[i] = spawn_serve(&url, ports[i]);
        wait_healthy(&http, ports[i]);
    }
    // Drain: release and cancel what waits for the test, then wait for the
    // rest to finish (a killed process's attempts come back after a lease).
    for (id, kind) in &acked {
        let action = match kind {
            Kind::Cancelled => "cancel",
            Kind::Deferred if !released.contains(id) => "release",
            _ => continue,
        };
        let r = http
            .post(format!(
                "http://127.0.0.1:{}/v1/executions/{id}/{action}",
                ports[0]
            ))
            .send()
            .unwrap();
        let status = r.status().as_u16();
        assert!(
            matches!(status, 200 | 409),
            "{action} of {id} answered {status}"
        );
        if action == "release" && r.status().is_success() {
            released.insert(*id);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let (terminal, ledger) = loop {
        let (terminal, ledger) = check(&url, &acked, cycles + 1);
        let open: Vec<_> = acked.keys().filter(|id| terminal[*id] == 0).collect();
        if open.is_empty() {
            break (terminal, ledger);
        }
        assert!(
            Instant::now() < deadline,
            "{} executions never finished, e.g. {:?}",
            open.len(),
            ledger.get(*open[0]).unwrap()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    for (id, kind) in &acked {
        assert_eq!(
            terminal[id], 1,
            "{id} ({kind:?}) finished {} times",
            terminal[id]
        );
        let e = ledger.get(*id).unwrap();
        if *kind == Kind::Remote && e.status == BackgroundExecutionStatus::Completed {
            assert_eq!(e.output, Some(json!("ABC")), "{id}");
        }
    }
    // Every released deferred execution that completed calls back (a
    // callback in flight when its process was killed is delivered again).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let called: HashSet<String> = calls
            .lock()
            .unwrap()
            .iter()
            .filter_map(|b| b["executionId"].as_str().map(str::to_owned))
            .collect();
        let waiting: Vec<&ExecutionId> = released
            .iter()
            .filter(|id| !called.contains(&id.to_string()))
            .collect();
        if waiting.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} released executions never called back, e.g. {:?}",
            waiting.len(),
            ledger.get(*waiting[0]).unwrap()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop((servers, workers));
    let recoveries = ledger
        .events(1, None)
        .filter(|e| {
            matches!(
                e.as_ref().unwrap().kind,
                execution_ledger::EventKind::Recovered { .. }
            )
        })
        .count();
    assert!(
        cycles < 5 || recoveries > 0,
        "no kill interrupted an attempt: the test would not show recovery"
    );
    eprintln!(
        "{cycles} kills of 3 ledger processes in {:.1} s: {} acknowledged executions, {} events, {recoveries} attempts recovered after their process was killed, {} released deferred executions called back, {lost_answers} batches without an answer",
        started.elapsed().as_secs_f64(),
        acked.len(),
        ledger.head().seq,
        released.len()
    );
}
