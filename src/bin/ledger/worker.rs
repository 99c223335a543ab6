//! `ledger worker`: any program becomes a worker. It claims executions of
//! one callable from a running `ledger serve` (or `ledger run`) over the
//! worker protocol, runs the command once per attempt — the input on
//! stdin, the execution in its environment — heartbeats while it runs,
//! and completes with its stdout or fails with its exit status and the
//! tail of its stderr.
//!
//! The command runs under `sh -c`, so it may be a pipeline. Its
//! environment has, besides the worker's own:
//!
//! | variable | value |
//! |---|---|
//! | `LEDGER_EXECUTION_ID` | the execution's id |
//! | `LEDGER_ATTEMPT` | the attempt number, from 1 |
//! | `LEDGER_TENANT_ID` | the execution's tenant |
//! | `LEDGER_CALLABLE` | the callable's name |
//! | `LEDGER_CONTEXT` | the execution's context, as a JSON object |
//! | `LEDGER_CONTEXT_<KEY>` | each context entry, the key upper-cased with every other character than A-Z and 0-9 as `_` |
//!
//! An attempt's child is killed (SIGKILL, with its process group) when the
//! execution is cancelled (the heartbeat says so), when its attempt is no
//! longer the running one (its lease ran out and another worker may have
//! it), or when its `timeoutMs` passes (the server records the timeout).
//! SIGTERM or Ctrl-C stops claiming and lets running children finish.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use chrono::{DateTime, Utc};
use execution_ledger::{BackgroundExecution, MAX_OUTPUT_BYTES};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::cli::{Cli, Usage};

/// How much of a failed command's stderr its error message keeps.
const STDERR_TAIL: usize = 2048;
/// The longest a claim long-polls.
const CLAIM_WAIT_MS: u64 = 20_000;
/// How long an answer (complete, fail) is retried while the server cannot
/// be reached before the attempt is left to its lease.
const ANSWER_PATIENCE: Duration = Duration::from_secs(120);

/// What `ledger worker` was asked to do.
pub(crate) struct Options {
    pub(crate) callable: String,
    pub(crate) exec: String,
    pub(crate) concurrency: usize,
    pub(crate) lease_ms: u64,
    pub(crate) name: Option<String>,
}

/// The server a worker talks to.
struct Server {
    base: std::sync::Mutex<String>,
    /// The data directory's `serve.json` it was found through, read again
    /// when the server cannot be reached (a restarted `ledger run` listens
    /// on another port).
    served: Option<std::path::PathBuf>,
    key: Option<String>,
    client: reqwest::Client,
}

/// What the server answered, for the worker's decisions.
enum Answer {
    Ok(Value),
    /// 409 `stale_attempt`: the attempt is no longer this worker's.
    Stale(String),
    /// Any other refusal: the request is wrong and retrying will not help.
    Refused(u16, String),
}

impl Server {
    fn base(&self) -> String {
        self.base.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads `serve.json` again, when the server was found through it.
    fn look_again(&self) {
        let Some(served) = &self.served else { return };
        if let Some(url) = std::fs::read(served)
            .ok()
            .and_then(|b| serde_json::from_slice::<crate::backend::Served>(&b).ok())
            .map(|s| s.url)
        {
            *self.base.lock().unwrap_or_else(|p| p.into_inner()) = url;
        }
    }

    /// POSTs `body` to `path`; `Err` only when the server could not be
    /// reached or answered something that is not the API's.
    async fn post(&self, path: &str, body: &Value, timeout: Duration) -> Result<Answer> {
        let base = self.base();
        let mut req = self
            .client
            .post(format!("{base}{path}"))
            .json(body)
            .timeout(timeout);
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        let response = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.look_again();
                return Err(anyhow!("cannot reach the ledger server at {base}: {e}"));
            }
        };
        let status = response.status().as_u16();
        let v: Value = response.json().await.unwrap_or(Value::Null);
        let message = || {
            v["error"]["message"]
                .as_str()
                .unwrap_or("no message")
                .to_owned()
        };
        Ok(match status {
            200..=299 => Answer::Ok(v),
            409 if v["error"]["code"] == "stale_attempt" => Answer::Stale(message()),
            // Stopping, or a passing failure: tried again.
            500..=599 => {
                return Err(anyhow!(
                    "the ledger server answered {status}: {}",
                    message()
                ))
            }
            _ => Answer::Refused(status, message()),
        })
    }

    /// POSTs an answer that must arrive: retried while the server cannot be
    /// reached (identical repeats are answered as the first), for at most
    /// [`ANSWER_PATIENCE`].
    async fn answer(&self, path: &str, body: &Value) -> Option<Answer> {
        let deadline = tokio::time::Instant::now() + ANSWER_PATIENCE;
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.post(path, body, Duration::from_secs(30)).await {
                Ok(answer) => return Some(answer),
                Err(e) if tokio::time::Instant::now() + backoff < deadline => {
                    tracing::warn!(error = %e, "retrying {path}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    eprintln!("worker: giving up on {path}: {e}");
                    return None;
                }
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Claimed {
    #[serde(flatten)]
    execution: BackgroundExecution,
    #[allow(dead_code)]
    lease_until: Option<DateTime<Utc>>,
}

/// The server `ledger worker` works for: `--server`, else the one serving
/// the data directory.
fn server_of(cli: &Cli) -> Result<Server> {
    let (base, served) = match &cli.server {
        Some(url) => (url.trim_end_matches('/').to_owned(), None),
        None if cli.database.is_some() => {
            return Err(Usage(
                "a worker works for a server: give --server URL (a `ledger serve` of the database)"
                    .into(),
            )
            .into())
        }
        None => {
            let served = cli.data_dir.join(crate::backend::SERVE_FILE);
            let bytes = std::fs::read(&served).map_err(|_| {
                Usage(format!(
                    "no ledger server for {}: start `ledger serve` (or `ledger run`) on it, or give --server URL",
                    cli.data_dir.display()
                ))
            })?;
            let url = serde_json::from_slice::<crate::backend::Served>(&bytes)
                .with_context(|| format!("{} is damaged", served.display()))?
                .url;
            (url, Some(served))
        }
    };
    Ok(Server {
        base: std::sync::Mutex::new(base),
        served,
        key: cli.api_key.clone(),
        client: reqwest::Client::builder()
            .build()
            .context("cannot build an HTTP client")?,
    })
}

pub(crate) fn run(cli: &Cli, options: Options) -> Result<()> {
    let server = Arc::new(server_of(cli)?);
    let name = options
        .name
        .clone()
        .unwrap_or_else(|| format!("worker-{}", std::process::id()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let stop = crate::serve::stop_signal()?;
        tokio::pin!(stop);
        let options = Arc::new(options);
        let slots = Arc::new(Semaphore::new(options.concurrency));
        eprintln!(
            "worker {name}: running {:?} for {} (concurrency {}, lease {} ms)",
            options.callable,
            server.base(),
            options.concurrency,
            options.lease_ms
        );
        let mut backoff = Duration::from_millis(100);
        loop {
            // Wait for a free slot, then claim as many as are free.
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => permit?,
                signal = &mut stop => { eprintln!("worker {name}: stopping on {signal}; running attempts finish"); break; }
            };
            let mut permits = vec![first];
            while let Ok(p) = slots.clone().try_acquire_owned() {
                permits.push(p);
            }
            let body = json!({
                "worker": name,
                "callables": [options.callable],
                "max": permits.len(),
                "waitMs": CLAIM_WAIT_MS,
                "leaseMs": options.lease_ms,
            });
            let claim = server.post(
                "/v1/workers/claim",
                &body,
                Duration::from_millis(CLAIM_WAIT_MS + 10_000),
            );
            tokio::pin!(claim);
            let mut stopping = false;
            let answer = tokio::select! {
                a = &mut claim => a,
                signal = &mut stop => {
                    // Dropping the claim could lose what the server claims
                    // for it meanwhile (until its lease runs out): the
                    // server is told, and answers the claim at once; what
                    // the claim had taken runs like the rest.
                    stopping = true;
                    let again = crate::serve::stop_signal()?;
                    let drain = async {
                        let said = server
                            .post("/v1/workers/shutdown", &json!({"worker": name}), Duration::from_secs(10))
                            .await;
                        if !matches!(said, Ok(Answer::Ok(_))) {
                            eprintln!("worker {name}: the server did not take the shutdown; waiting for its answer to the claim (up to {} s)", CLAIM_WAIT_MS / 1000);
                        }
                        eprintln!("worker {name}: stopping on {signal}; running attempts finish");
                        (&mut claim).await
                    };
                    tokio::select! {
                        a = drain => a,
                        signal = again => {
                            eprintln!("worker {name}: {signal} again: stopping now; running attempts are left to their leases");
                            return Err(crate::cli::Exit(1).into());
                        }
                    }
                }
            };
            let attempts = match answer {
                Ok(Answer::Ok(v)) => {
                    backoff = Duration::from_millis(100);
                    serde_json::from_value::<Vec<Claimed>>(v["attempts"].clone())
                        .context("the server's claim answer is not the API's")?
                }
                Ok(Answer::Refused(status, message)) => {
                    return Err(anyhow!("the server refused the claim ({status}): {message}"));
                }
                Ok(Answer::Stale(message)) => {
                    return Err(anyhow!("the server refused the claim: {message}"));
                }
                Err(_) if stopping => Vec::new(),
                Err(e) => {
                    eprintln!("worker {name}: {e}; retrying in {} ms", backoff.as_millis());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            for claimed in attempts {
                let permit = permits.pop().expect("no more claimed than slots");
                let (server, options) = (server.clone(), options.clone());
                tokio::spawn(async move {
                    run_attempt(&server, &options, claimed.execution).await;
                    drop(permit);
                });
            }
            if stopping {
                break;
            }
        }
        // Every slot back: every running attempt finished; a second signal
        // stops at once (the attempts are left to their leases).
        let all = u32::try_from(options.concurrency).unwrap_or(u32::MAX);
        let again = crate::serve::stop_signal()?;
        tokio::select! {
            done = slots.acquire_many(all) => { let _ = done?; }
            signal = again => {
                eprintln!("worker {name}: {signal} again: stopping now; running attempts are left to their leases");
                return Err(crate::cli::Exit(1).into());
            }
        }
        anyhow::Ok(())
    })
}

/// How an attempt's child ended, or why it was stopped.
enum End {
    Exited {
        status: std::process::ExitStatus,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
    },
    /// Stopped by the worker; the server knows why, nothing to answer.
    Stopped(&'static str),
    /// It could not be started.
    Unstartable(String),
}

async fn run_attempt(server: &Server, options: &Options, e: BackgroundExecution) {
    let (id, attempt) = (e.execution_id, e.attempt);
    let path = format!("/v1/executions/{id}/attempts/{attempt}");
    eprintln!("worker: {id} attempt {attempt}: started");
    let end = run_child(server, options, &e, &path).await;
    let body = match end {
        End::Stopped(why) => {
            eprintln!("worker: {id} attempt {attempt}: stopped ({why})");
            return;
        }
        End::Unstartable(why) => {
            json!({"error": {"code": "exec_failed", "message": why}, "retryable": true})
        }
        End::Exited {
            status,
            stdout,
            stderr,
        } => {
            if status.success() {
                let output = output_of(&stdout);
                let size = serde_json::to_vec(&output).map_or(usize::MAX, |v| v.len());
                if size > MAX_OUTPUT_BYTES {
                    too_large(size)
                } else {
                    json!({ "output": output })
                }
            } else {
                let (code, what) = match (status.code(), signal_of(&status)) {
                    (Some(c), _) => ("exit_status", format!("the command exited with status {c}")),
                    (None, Some(s)) => ("killed", format!("the command was killed by signal {s}")),
                    _ => ("exit_status", "the command failed".to_owned()),
                };
                let tail = tail_of(&stderr);
                let message = if tail.is_empty() {
                    what
                } else {
                    format!("{what}: {tail}")
                };
                let mut error = json!({"code": code, "message": message});
                if let Some(c) = status.code() {
                    error["details"] = json!({ "exitCode": c });
                }
                json!({"error": error, "retryable": true})
            }
        }
    };
    let (verb, mut done) = if body.get("output").is_some() {
        ("complete", "completed")
    } else {
        ("fail", "failed")
    };
    let mut answer = server.answer(&format!("{path}/{verb}"), &body).await;
    if let (Some(Answer::Refused(400 | 413, m)), "complete") = (&answer, verb) {
        // The server refused the output itself: the attempt fails for it,
        // for good, rather than running out its lease.
        eprintln!("worker: {id} attempt {attempt}: output refused: {m}");
        let body = json!({"error": {"code": "output_refused", "message": m}, "retryable": false});
        answer = server.answer(&format!("{path}/fail"), &body).await;
        done = "failed";
    }
    match answer {
        Some(Answer::Ok(after)) => eprintln!(
            "worker: {id} attempt {attempt}: {done}, now {}",
            after["status"].as_str().unwrap_or("?")
        ),
        Some(Answer::Stale(m)) => eprintln!("worker: {id} attempt {attempt}: refused: {m}"),
        Some(Answer::Refused(status, m)) => {
            eprintln!("worker: {id} attempt {attempt}: refused ({status}): {m}")
        }
        None => {}
    }
}

/// The failure of an attempt whose output is over the limit.
fn too_large(size: usize) -> Value {
    json!({
        "error": {
            "code": "output_too_large",
            "message": format!("the output is {size} bytes of JSON; the limit is {MAX_OUTPUT_BYTES}"),
        },
        "retryable": false,
    })
}

/// The environment variable name of a context key.
fn env_key(key: &str) -> String {
    let upper: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("LEDGER_CONTEXT_{upper}")
}

/// Runs the attempt's child to its end, heartbeating, and stops it when
/// the attempt is cancelled, no longer this worker's, or out of time.
async fn run_child(server: &Server, options: &Options, e: &BackgroundExecution, path: &str) -> End {
    let context = e.context.clone().unwrap_or_default();
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(&options.exec)
        .env("LEDGER_EXECUTION_ID", e.execution_id.to_string())
        .env("LEDGER_ATTEMPT", e.attempt.to_string())
        .env("LEDGER_TENANT_ID", e.tenant_id.to_string())
        .env("LEDGER_CALLABLE", &e.callable_name)
        .env(
            "LEDGER_CONTEXT",
            serde_json::to_string(&context).unwrap_or_default(),
        )
        .envs(context.iter().map(|(k, v)| (env_key(k), v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(err) => {
            return End::Unstartable(format!("cannot start sh -c {:?}: {err}", options.exec))
        }
    };
    let pgid = child.id();
    let input = e.input.clone().unwrap_or_default();
    let mut stdin = child.stdin.take().expect("piped");
    let feed = tokio::spawn(async move {
        // A command that does not read its input closes the pipe: fine.
        let _ = stdin.write_all(input.as_bytes()).await;
    });
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let read_out = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = (&mut out)
            .take(MAX_OUTPUT_BYTES as u64 + 1)
            .read_to_end(&mut buf)
            .await;
        // Drain the rest so the child never blocks on a full pipe.
        let _ = tokio::io::copy(&mut out, &mut tokio::io::sink()).await;
        buf
    });
    let read_err = tokio::spawn(async move {
        let mut tail: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 8192];
        while let Ok(n) = err.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&chunk[..n]);
            if tail.len() > 4 * STDERR_TAIL {
                tail.drain(..tail.len() - STDERR_TAIL);
            }
        }
        tail
    });
    let started = e.started_at.unwrap_or_else(Utc::now);
    let ends = i64::try_from(e.config.timeout_ms)
        .ok()
        .and_then(chrono::Duration::try_milliseconds)
        .and_then(|d| started.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let timeout = (ends - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let every = Duration::from_millis((options.lease_ms / 3).max(50));
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    // The lease as this worker last knew it held: when no heartbeat gets
    // through for a whole lease, the attempt may be another worker's.
    let lease = Duration::from_millis(options.lease_ms);
    let held = tokio::time::sleep(lease);
    tokio::pin!(held);
    let stopped = loop {
        tokio::select! {
            () = &mut held => break End::Stopped("its lease ran out: no heartbeat got through"),
            status = child.wait() => break match status {
                Ok(status) => {
                    // What the command left running in the background
                    // would hold the pipes open: it goes with the attempt.
                    if let Some(pid) = pgid {
                        kill_group(pid);
                    }
                    let bounded = Duration::from_secs(2);
                    let _ = tokio::time::timeout(bounded, feed).await;
                    let stdout = tokio::time::timeout(bounded, read_out).await;
                    let stderr = tokio::time::timeout(bounded, read_err).await;
                    return End::Exited {
                        status,
                        stdout: stdout.ok().and_then(Result::ok).unwrap_or_default(),
                        stderr: stderr.ok().and_then(Result::ok).unwrap_or_default(),
                    };
                }
                Err(err) => End::Unstartable(format!("cannot wait for the command: {err}")),
            },
            () = &mut deadline => break End::Stopped("its timeout passed"),
            _ = beat.tick() => {
                match server.post(&format!("{path}/heartbeat"), &json!({}), every.max(Duration::from_secs(5))).await {
                    Ok(Answer::Ok(v)) if v["cancelRequested"] == true => break End::Stopped("cancelled"),
                    Ok(Answer::Ok(_)) => held.as_mut().reset(tokio::time::Instant::now() + lease),
                    Ok(Answer::Stale(_)) => break End::Stopped("the attempt is no longer this worker's"),
                    Ok(Answer::Refused(status, m)) => {
                        eprintln!("worker: heartbeat refused ({status}): {m}");
                    }
                    // The server may be restarting: the lease holds for a while.
                    Err(err) => tracing::warn!(error = %err, "heartbeat failed"),
                }
            }
        }
    };
    if let Some(pid) = pgid {
        kill_group(pid);
    }
    let _ = child.kill().await;
    stopped
}

/// SIGKILL to the child's process group (`sh -c` and what it started).
fn kill_group(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stderr(Stdio::null())
        .status();
}

fn signal_of(status: &std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}

/// stdout as the output: JSON when it parses, else the text (one trailing
/// newline dropped).
fn output_of(stdout: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|_| {
        Value::String(
            text.strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&text)
                .to_owned(),
        )
    })
}

/// The last [`STDERR_TAIL`] bytes of stderr, trimmed, on whole characters.
fn tail_of(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    let mut start = text.len().saturating_sub(STDERR_TAIL);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_is_json_when_it_parses_else_the_text() {
        assert_eq!(output_of(b"{\"n\": 1}\n"), json!({"n": 1}));
        assert_eq!(output_of(b"42"), json!(42));
        assert_eq!(output_of(b"hello world\n"), json!("hello world"));
        assert_eq!(output_of(b""), json!(""));
    }

    #[test]
    fn context_keys_become_environment_names() {
        assert_eq!(env_key("size"), "LEDGER_CONTEXT_SIZE");
        assert_eq!(env_key("user-id.v2"), "LEDGER_CONTEXT_USER_ID_V2");
    }

    #[test]
    fn the_stderr_tail_keeps_the_end() {
        let long = "x".repeat(5000) + "the end";
        let tail = tail_of(long.as_bytes());
        assert!(tail.ends_with("the end"));
        assert_eq!(tail.len(), STDERR_TAIL);
    }
}
