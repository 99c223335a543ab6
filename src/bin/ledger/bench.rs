//! `ledger bench`: every scenario of [`crate::scenarios`], and the HTTP ones,
//! each with its raw baseline from the same run and the ratio against its
//! target.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use crate::scenarios::{self, median, Measurement, ScenarioError, Sizes};
use anyhow::{Context, Result};
use execution_ledger::Durability;

use crate::output::Table;
use crate::Cli;

fn machine() -> serde_json::Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let memory_kb: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    serde_json::json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu": cpu,
        "memoryMiB": memory_kb / 1024,
        "os": std::env::consts::OS,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
    })
}

/// Runs the memory probe in a fresh process of this binary.
fn probe(dir: &Path) -> Result<u64, ScenarioError> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe).arg("bench-probe").arg(dir).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.trim().parse().unwrap_or(0))
}

/// Durable submits over HTTP from 64 concurrent clients against the
/// library's durable submit from 64 threads, in the same run.
fn http_submit(root: &Path, sizes: Sizes) -> Result<Measurement> {
    const CLIENTS: u64 = 64;
    let per = sizes.appends.div_ceil(CLIENTS).max(1);
    let n = per * CLIENTS;
    let job = held;
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for round in 0..sizes.rounds {
        let dir = root.join(format!("http-{round}"));
        let ledger = execution_ledger::Ledger::open(&dir)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let took = rt.block_on(async {
            let served = crate::serve::serve_in_process(ledger.clone()).await?;
            let url = served.url.clone();
            let client = reqwest::Client::new();
            let start = Instant::now();
            let tasks: Vec<_> = (0..CLIENTS)
                .map(|c| {
                    let (client, url) = (client.clone(), format!("{url}/v1/executions"));
                    let bodies: Vec<_> = (0..per)
                        .map(|i| {
                            let mut body = serde_json::to_value(job(c * per + i)).expect("json");
                            body["tenantId"] = serde_json::json!("bench");
                            body
                        })
                        .collect();
                    tokio::spawn(async move {
                        for body in bodies {
                            let r = client.post(&url).json(&body).send().await?;
                            anyhow::ensure!(
                                r.status().as_u16() == 201,
                                "submit answered {}",
                                r.status()
                            );
                        }
                        anyhow::Ok(())
                    })
                })
                .collect();
            for t in tasks {
                t.await??;
            }
            let took = start.elapsed();
            served.stop().await;
            anyhow::Ok(took)
        })?;
        drop(rt);
        drop(ledger);
        ours.push(n as f64 / took.as_secs_f64());
        let _ = std::fs::remove_dir_all(&dir);

        base.push(library_submits(
            &root.join(format!("http-lib-{round}")),
            CLIENTS,
            per,
        )?);
    }
    Ok(Measurement::new(
        "HTTP submit, 64 clients",
        "submits/s",
        median(ours),
        "the library's durable submit from 64 threads",
        median(base),
        scenarios::Target::AtLeast(0.5),
        format!("{n} submits"),
    ))
}

/// The sample submission `i`, deferred (held until released): what the
/// HTTP scenarios submit, so the queue only grows.
fn held(i: u64) -> execution_ledger::Submission {
    let mut s = scenarios::sample_submission(i);
    s.config.mode = execution_ledger::BackgroundExecutionMode::Deferred;
    s
}

/// Synced submits/s of [`held`] submissions from `threads` threads, `per`
/// each, into a fresh ledger at `dir` (removed afterwards): the library's
/// figure the HTTP scenarios are held against.
fn library_submits(dir: &Path, threads: u64, per: u64) -> Result<f64> {
    let ledger = execution_ledger::Ledger::open(dir)?;
    let tenant: execution_ledger::TenantId = "bench".parse()?;
    let start = Instant::now();
    std::thread::scope(|s| {
        for c in 0..threads {
            let (ledger, tenant) = (ledger.clone(), tenant.clone());
            s.spawn(move || {
                for i in 0..per {
                    ledger
                        .submit(&tenant, held(c * per + i))
                        .wait()
                        .expect("a durable submit");
                }
            });
        }
    });
    let rate = (per * threads) as f64 / start.elapsed().as_secs_f64();
    drop(ledger);
    let _ = std::fs::remove_dir_all(dir);
    Ok(rate)
}

/// Executions per batch in the `http-external` scenario.
const WRK_BATCH: usize = 100;
/// Connections wrk keeps open (as the 64 clients of `http`).
const WRK_CONNECTIONS: u64 = 64;

/// Submits to `ledger serve`'s API from wrk, a load generator in another
/// process (2 threads, 64 connections, keep-alive), single submits and
/// batches of [`WRK_BATCH`], against the library's durable submit and
/// `submit_many` from 64 threads in the same round. `None` when wrk is not
/// on the PATH and the scenario was not asked for by name.
fn http_external(root: &Path, sizes: Sizes, asked: bool) -> Result<Option<Vec<Measurement>>> {
    if Command::new("wrk").arg("--version").output().is_err() {
        if asked {
            return Err(crate::cli::Usage(
                "bench --only http-external needs wrk on the PATH (Debian: apt-get install wrk)"
                    .into(),
            )
            .into());
        }
        eprintln!("http-external skipped: wrk is not on the PATH (Debian: apt-get install wrk)");
        return Ok(None);
    }
    let secs = if sizes.rounds == 1 { 2 } else { 5 };
    let job = held;
    let mut single_body = serde_json::to_value(job(0))?;
    single_body["tenantId"] = serde_json::json!("bench");
    let batch_body = serde_json::json!({
        "tenantId": "bench",
        "executions": (0..WRK_BATCH as u64).map(job).collect::<Vec<_>>(),
    });
    let tenant: execution_ledger::TenantId = "bench".parse()?;
    let (mut single, mut batched, mut lib_single, mut lib_batched) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..sizes.rounds {
        let dir = root.join(format!("wrk-{round}"));
        let ledger = execution_ledger::Ledger::open(&dir)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let (one, many) = rt.block_on(async {
            let served = crate::serve::serve_in_process(ledger.clone()).await?;
            let one = wrk(
                root,
                &format!("{}/v1/executions", served.url),
                &single_body,
                secs,
            );
            let many = wrk(
                root,
                &format!("{}/v1/executions/batch", served.url),
                &batch_body,
                secs,
            );
            served.stop().await;
            anyhow::Ok((one?, many?))
        })?;
        drop(rt);
        drop(ledger);
        let _ = std::fs::remove_dir_all(&dir);
        single.push(one);
        batched.push(many * WRK_BATCH as f64);

        let per = (one * secs as f64 / WRK_CONNECTIONS as f64).ceil().max(1.0) as u64;
        lib_single.push(library_submits(
            &root.join(format!("wrk-lib-{round}")),
            WRK_CONNECTIONS,
            per,
        )?);
        let dir = root.join(format!("wrk-lib-batches-{round}"));
        let ledger = execution_ledger::Ledger::open(&dir)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let batches = (many * secs as f64 / WRK_CONNECTIONS as f64)
            .ceil()
            .max(1.0) as u64;
        let start = Instant::now();
        rt.block_on(async {
            let tasks: Vec<_> = (0..WRK_CONNECTIONS)
                .map(|c| {
                    let (ledger, tenant) = (ledger.clone(), tenant.clone());
                    tokio::spawn(async move {
                        for b in 0..batches {
                            let first = (c * batches + b) * WRK_BATCH as u64;
                            let items = (first..first + WRK_BATCH as u64).map(job).collect();
                            ledger.submit_many(&tenant, items).await?;
                        }
                        anyhow::Ok(())
                    })
                })
                .collect();
            for t in tasks {
                t.await??;
            }
            anyhow::Ok(())
        })?;
        lib_batched.push(
            (batches * WRK_CONNECTIONS * WRK_BATCH as u64) as f64 / start.elapsed().as_secs_f64(),
        );
        drop(rt);
        drop(ledger);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let size = format!(
        "wrk -t2 -c{WRK_CONNECTIONS} -d{secs}s, medians of {}",
        sizes.rounds
    );
    Ok(Some(vec![
        Measurement::new(
            "HTTP submit from wrk (another process), single",
            "submits/s",
            median(single),
            "the library's durable submit from 64 threads",
            median(lib_single),
            scenarios::Target::AtLeast(0.5),
            size.clone(),
        ),
        Measurement::new(
            "HTTP submit from wrk (another process), batches of 100",
            "submits/s",
            median(batched),
            "the library's submit_many of 100 from 64 tasks",
            median(lib_batched),
            scenarios::Target::AtLeast(0.5),
            size,
        ),
    ]))
}

/// Requests/s of wrk POSTing `body` to `url` for `secs` seconds; an error
/// when any answer was not a 2xx.
fn wrk(root: &Path, url: &str, body: &serde_json::Value, secs: u64) -> Result<f64> {
    let script = root.join("wrk-post.lua");
    let body = serde_json::to_string(body)?;
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = {}\n",
            lua_string(&body)
        ),
    )?;
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{WRK_CONNECTIONS}"),
            &format!("-d{secs}s"),
        ])
        .arg("-s")
        .arg(&script)
        .arg(url)
        .output()
        .context("cannot run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "wrk failed: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(line) = text
        .lines()
        .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
    {
        anyhow::bail!("wrk against {url}: {}", line.trim());
    }
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("wrk printed no Requests/sec: {text}"))
}

/// `s` as a Lua string literal.
fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Runs `n` no-op jobs of `callable` submitted as batches to `ledger`
/// while `work` (the workers) runs, and returns how long until every one
/// ended.
async fn drain(
    ledger: &execution_ledger::Ledger,
    callable: &str,
    n: u64,
) -> Result<std::time::Duration> {
    let tenant: execution_ledger::TenantId = "bench".parse()?;
    let start = Instant::now();
    for chunk in (0..n)
        .collect::<Vec<_>>()
        .chunks(execution_ledger::MAX_BATCH)
    {
        let batch = chunk
            .iter()
            .map(|&i| {
                let mut s = scenarios::sample_submission(i);
                s.callable_name = callable.to_owned();
                s
            })
            .collect();
        ledger.submit_many(&tenant, batch).await?;
    }
    loop {
        let c = ledger.counts();
        if c.queued == 0 && c.running == 0 {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Jobs/s through workers elsewhere against the in-process runtime, in the
/// same run: no-op HTTP workers with batch claims, and `ledger worker`
/// processes running a no-op command (`true`) per attempt.
fn remote_workers(root: &Path, sizes: Sizes) -> Result<Vec<Measurement>> {
    const WORKERS: usize = 16;
    let n = sizes.jobs.min(10_000);
    let exec_n = (n / 5).max(200);
    let (mut local, mut http, mut exec, mut local_small) = (vec![], vec![], vec![], vec![]);
    for round in 0..sizes.rounds {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        // The baseline: the in-process runtime's workers.
        for (jobs, into) in [(n, &mut local), (exec_n, &mut local_small)] {
            let dir = root.join(format!("remote-local-{round}-{jobs}"));
            let ledger = execution_ledger::Ledger::open(&dir)?;
            let took = rt.block_on(async {
                let runtime = execution_ledger::Runtime::builder(ledger.clone())
                    .workers(WORKERS)
                    .register("noop", |_, _| async { Ok(serde_json::Value::Null) })
                    .start()
                    .await?;
                let took = drain(&ledger, "noop", jobs).await?;
                runtime.shutdown(std::time::Duration::from_secs(5)).await?;
                anyhow::Ok(took)
            })?;
            into.push(jobs as f64 / took.as_secs_f64());
            drop(ledger);
            let _ = std::fs::remove_dir_all(&dir);
        }
        // No-op HTTP workers: claim up to 32, complete each.
        let dir = root.join(format!("remote-http-{round}"));
        let ledger = execution_ledger::Ledger::open(&dir)?;
        let took = rt.block_on(async {
            let served = crate::serve::serve_in_process(ledger.clone()).await?;
            let url = served.url.clone();
            let client = reqwest::Client::new();
            let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let workers: Vec<_> = (0..WORKERS)
                .map(|w| {
                    let (client, url, done) = (client.clone(), url.clone(), done.clone());
                    tokio::spawn(async move {
                        let claim = serde_json::json!({"worker": format!("bench-{w}"),
                            "callables": ["noop"], "max": 32, "waitMs": 100, "leaseMs": 60000});
                        while !done.load(std::sync::atomic::Ordering::Relaxed) {
                            let got: serde_json::Value = client
                                .post(format!("{url}/v1/workers/claim"))
                                .json(&claim)
                                .send()
                                .await?
                                .json()
                                .await?;
                            let answers: Vec<_> = got["attempts"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .map(|a| {
                                    let path = format!(
                                        "{url}/v1/executions/{}/attempts/{}/complete",
                                        a["executionId"].as_str().unwrap_or_default(),
                                        a["attempt"]
                                    );
                                    let client = client.clone();
                                    tokio::spawn(async move {
                                        let r = client
                                            .post(path)
                                            .json(&serde_json::json!({"output": null}))
                                            .send()
                                            .await?;
                                        anyhow::ensure!(
                                            r.status().is_success(),
                                            "complete answered {}",
                                            r.status()
                                        );
                                        anyhow::Ok(())
                                    })
                                })
                                .collect();
                            for a in answers {
                                a.await??;
                            }
                        }
                        anyhow::Ok(())
                    })
                })
                .collect();
            let took = drain(&ledger, "noop", n).await?;
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            for w in workers {
                w.await??;
            }
            served.stop().await;
            anyhow::Ok(took)
        })?;
        http.push(n as f64 / took.as_secs_f64());
        drop(ledger);
        let _ = std::fs::remove_dir_all(&dir);

        // `ledger worker --exec true`: two processes of 8 slots.
        let dir = root.join(format!("remote-exec-{round}"));
        let ledger = execution_ledger::Ledger::open(&dir)?;
        let took = rt.block_on(async {
            let served = crate::serve::serve_in_process(ledger.clone()).await?;
            let url = served.url.clone();
            let exe = std::env::current_exe()?;
            let mut children: Vec<_> = (0..2)
                .map(|_| {
                    Command::new(&exe)
                        .args(["--server", &url, "worker", "--callable", "noop"])
                        .args(["--exec", "true", "--concurrency", "8"])
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .spawn()
                })
                .collect::<std::io::Result<_>>()?;
            let took = drain(&ledger, "noop", exec_n).await;
            for c in &mut children {
                let _ = c.kill();
                let _ = c.wait();
            }
            served.stop().await;
            took
        })?;
        exec.push(exec_n as f64 / took.as_secs_f64());
        drop(ledger);
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(vec![
        Measurement::new(
            "remote HTTP workers, batch claims",
            "jobs/s",
            median(http),
            "the in-process runtime, 16 workers (jobs/s)",
            median(local),
            scenarios::Target::AtLeast(0.5),
            format!("{n} jobs, 16 HTTP workers claiming up to 32"),
        ),
        Measurement::new(
            "ledger worker --exec true",
            "jobs/s",
            median(exec),
            "the in-process runtime, 16 workers (jobs/s)",
            median(local_small),
            scenarios::Target::AtLeast(0.05),
            format!("{exec_n} jobs, 2 processes of 8 slots, one child process a job"),
        ),
    ])
}

pub(crate) fn run(
    cli: &Cli,
    quick: bool,
    full: bool,
    dir: Option<PathBuf>,
    only: &[String],
    peers: Option<Vec<PeerLine>>,
    out: &mut impl Write,
) -> Result<()> {
    let peers = peers.as_deref();
    let sizes = if quick {
        Sizes::quick()
    } else if full {
        Sizes::full()
    } else {
        Sizes::standard()
    };
    let (root, remove) = match dir {
        Some(d) => (d, false),
        None => (
            cli.data_dir.join(format!("bench-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let progress = |name: &str| {
        if !cli.json {
            let _ = writeln!(std::io::stderr(), "measuring {name}…");
        }
    };
    if cli.database.is_none() && only.iter().any(|o| o == "postgres") {
        return Err(crate::cli::Usage(
            "bench --only postgres needs --database URL: a PostgreSQL server whose user may CREATE DATABASE"
                .into(),
        )
        .into());
    }
    // The PostgreSQL scenarios run by default when a database is given.
    let wanted = |name: &str| {
        only.iter().any(|o| o == name)
            || (only.is_empty() && (name != "postgres" || cli.database.is_some()))
    };
    let mut results: Vec<Measurement> = Vec::new();
    if wanted("relaxed") {
        progress("relaxed appends");
        results.extend(scenarios::relaxed_append(&root, sizes)?);
    }
    if wanted("durable") {
        progress("durable appends from 256 submitters");
        results.extend(scenarios::durable_append(&root, sizes)?);
    }
    if wanted("end-to-end") {
        progress("end-to-end durable jobs");
        results.push(scenarios::end_to_end(&root, sizes)?);
    }
    if wanted("peer-workload") {
        progress("the peers' workload on sled");
        results.extend(peer_workload(&root, sizes, peers)?);
    }
    if wanted("replay") {
        progress("replay");
        results.push(scenarios::replay(&root, sizes)?);
    }
    if wanted("list") {
        progress("a page of the executions list");
        results.push(scenarios::list_page(&root, sizes)?);
    }
    if wanted("snapshots") {
        progress("open with snapshots");
        results.extend(scenarios::open_with_snapshots(&root, sizes)?);
    }
    if wanted("claim") {
        progress("claims");
        results.push(scenarios::claim(&root, sizes)?);
        results.push(scenarios::claim_tenants(&root, sizes)?);
    }
    if wanted("retention") {
        progress("a retention pass");
        results.push(scenarios::retention_pass(&root, sizes)?);
    }
    if wanted("queue") {
        results.push(scenarios::queue_vs_seed(100_000));
    }
    if wanted("http") {
        progress("HTTP submits from 64 clients");
        results.push(http_submit(&root, sizes)?);
    }
    if wanted("http-external") {
        progress("HTTP submits from wrk in another process");
        let asked = only.iter().any(|o| o == "http-external");
        results.extend(http_external(&root, sizes, asked)?.into_iter().flatten());
    }
    if wanted("remote") {
        progress("jobs through remote workers");
        results.extend(remote_workers(&root, sizes)?);
    }
    if wanted("memory") {
        progress("peak memory");
        results.extend(scenarios::memory(&root, sizes, &probe)?);
    }
    if wanted("archive") {
        progress("archiving the settled history");
        results.extend(scenarios::archive(&root, sizes, &probe, &|dir| {
            let exe = std::env::current_exe()?;
            Command::new(exe)
                .arg("bench-probe")
                .arg(dir)
                .env("LEDGER_COMPACT_AFTER", "1")
                .output()?;
            Ok(0)
        })?);
    }
    if let (true, Some(url)) = (wanted("postgres"), &cli.database) {
        progress("PostgreSQL: appends from 1 and 3 processes, the peers' workload");
        results.extend(postgres(url, &root, sizes, peers)?);
    }
    if remove {
        let _ = std::fs::remove_dir_all(&root);
    }
    if cli.json {
        let scenarios: Vec<_> = results
            .iter()
            .map(|m| {
                serde_json::json!({
                    "name": m.name,
                    "value": m.value,
                    "unit": m.unit,
                    "baseline": m.baseline,
                    "baselineName": m.baseline_name,
                    "ratio": m.ratio,
                    "target": (!m.informational).then_some(m.target),
                    "targetIs": if m.informational {
                        "none (informational)"
                    } else if m.higher_is_better {
                        "at least"
                    } else {
                        "at most"
                    },
                    "met": (!m.informational).then_some(m.met),
                    "size": m.size,
                })
            })
            .collect();
        serde_json::to_writer(
            &mut *out,
            &serde_json::json!({ "machine": machine(), "scenarios": scenarios }),
        )?;
        writeln!(out)?;
    } else {
        let mut table = Table::new(&[
            "SCENARIO", "VALUE", "BASELINE", "RATIO", "TARGET", "MET", "SIZE",
        ]);
        for m in &results {
            table.row(vec![
                m.name.clone(),
                format!("{:.1} {}", m.value, m.unit),
                format!("{:.1}", m.baseline),
                if m.ratio.abs() < 0.1 {
                    format!("{:.4}", m.ratio)
                } else {
                    format!("{:.2}", m.ratio)
                },
                if m.informational {
                    "none".to_owned()
                } else {
                    format!(
                        "{} {}",
                        if m.higher_is_better { ">=" } else { "<=" },
                        m.target
                    )
                },
                if m.informational {
                    "-"
                } else if m.met {
                    "yes"
                } else {
                    "NO"
                }
                .to_owned(),
                m.size.clone(),
            ]);
        }
        table.write(out)?;
        writeln!(out, "\nbaselines:")?;
        for m in &results {
            writeln!(out, "  {}: {}", m.name, m.baseline_name)?;
        }
    }
    Ok(())
}

/// A database of its own for one round of a PostgreSQL scenario: created
/// through the server the `--database` URL names (its user needs
/// CREATEDB) and dropped when done, so nothing of that database is touched.
struct Scratch {
    admin: String,
    name: String,
    url: String,
}

/// Runs `sql` in the database at `url`.
#[cfg(feature = "postgres")]
fn admin_sql(url: &str, sql: &str) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let pg = |e: tokio_postgres::Error| match e.as_db_error() {
            Some(d) => anyhow::anyhow!("PostgreSQL: {}", d.message()),
            None => match std::error::Error::source(&e) {
                Some(cause) => anyhow::anyhow!("PostgreSQL: {e}: {cause}"),
                None => anyhow::anyhow!("PostgreSQL: {e}"),
            },
        };
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(pg)?;
        let task = tokio::spawn(connection);
        client.batch_execute(sql).await.map_err(pg)?;
        drop(client);
        let _ = task.await;
        Ok(())
    })
}

#[cfg(not(feature = "postgres"))]
fn admin_sql(_url: &str, _sql: &str) -> Result<()> {
    anyhow::bail!("this build of ledger has no PostgreSQL engine (the postgres feature)")
}

/// `url` with its database replaced by `name` (query parameters kept).
fn with_database(url: &str, name: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let query = url[authority_end..]
        .find('?')
        .map_or("", |i| &url[authority_end + i..]);
    format!("{}/{name}{query}", &url[..authority_end])
}

impl Scratch {
    fn create(admin: &str) -> Result<Scratch> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let name = format!(
            "ledger_bench_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        admin_sql(admin, &format!("CREATE DATABASE {name}")).with_context(|| {
            format!("cannot create the benchmark database {name} (the --database URL's user needs CREATEDB)")
        })?;
        let url = with_database(admin, &name);
        Ok(Scratch {
            admin: admin.to_owned(),
            name,
            url,
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = admin_sql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        ) {
            let _ = writeln!(
                std::io::stderr(),
                "cannot drop the benchmark database {}: {e}",
                self.name
            );
        }
    }
}

/// What `ledger bench-append` prints: how many it appended, and the
/// seconds from the agreed start to its last append.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Appended {
    count: u64,
    elapsed_s: f64,
    /// How late after the agreed start it began (0 when on time).
    late_s: f64,
}

/// `ledger bench-append`: opens the ledger, waits for `start_at` (unix
/// milliseconds), appends `count` synced submits from `submitters` threads
/// and prints one JSON line of what it did.
pub(crate) fn append_child(
    cli: &Cli,
    submitters: u64,
    count: u64,
    start_at: u64,
    out: &mut impl Write,
) -> Result<()> {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    let ledger = execution_ledger::Ledger::builder(cli.location())
        .durability(execution_ledger::Durability::Synced)
        .open()?;
    let start = UNIX_EPOCH + Duration::from_millis(start_at);
    if let Ok(wait) = start.duration_since(SystemTime::now()) {
        std::thread::sleep(wait);
    }
    let since = || {
        SystemTime::now()
            .duration_since(start)
            .unwrap_or_default()
            .as_secs_f64()
    };
    let late_s = since();
    let count = scenarios::concurrent_appends(&ledger, submitters, count);
    let elapsed_s = since();
    drop(ledger);
    serde_json::to_writer(
        &mut *out,
        &Appended {
            count,
            elapsed_s,
            late_s,
        },
    )?;
    writeln!(out)?;
    Ok(())
}

/// Runs one `ledger bench-append` process per entry of `counts` on the
/// database at `url`, all starting at once; returns their total appends/s
/// (all appends / the agreed start → the last process's last append).
fn appenders(url: &str, submitters: u64, counts: &[u64]) -> Result<f64> {
    let exe = std::env::current_exe()?;
    let start_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64
        + 2_000;
    let children: Vec<_> = counts
        .iter()
        .map(|count| {
            Command::new(&exe)
                .args(["--database", url, "bench-append"])
                .args(["--submitters", &submitters.to_string()])
                .args(["--count", &count.to_string()])
                .args(["--start-at", &start_at.to_string()])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    let (mut total, mut longest) = (0u64, 0f64);
    for child in children {
        let out = child.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "ledger bench-append failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let done: Appended = serde_json::from_slice(&out.stdout)
            .context("ledger bench-append printed no figures")?;
        if done.late_s > 0.2 {
            let _ = writeln!(
                std::io::stderr(),
                "an appending process started {:.2} s late",
                done.late_s
            );
        }
        total += done.count;
        longest = longest.max(done.elapsed_s);
    }
    Ok(total as f64 / longest.max(1e-9))
}

/// The PostgreSQL scenarios: synced appends from three processes against
/// one, and the peers' workload against the same on sled. Each round on a
/// fresh database of the server `url` names.
fn postgres(
    url: &str,
    root: &Path,
    sizes: Sizes,
    peers: Option<&[PeerLine]>,
) -> Result<Vec<Measurement>> {
    const SUBMITTERS: u64 = 64;
    const PROCESSES: u64 = 3;
    let total = sizes.appends;
    let per = total.div_ceil(PROCESSES);
    let graphile = peers.and_then(|p| PeerLine::find(p, "graphile-worker", "pg-default"));
    let n = graphile.map_or(sizes.peer_jobs, |g| g.n);
    let rounds = if graphile.is_some() {
        sizes.rounds.max(PEER_RUNS)
    } else {
        sizes.rounds
    };
    let (mut one, mut three) = (Vec::new(), Vec::new());
    let (mut pg, mut sled) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for (counts, into) in [
            (vec![total], &mut one),
            (vec![per; PROCESSES as usize], &mut three),
        ] {
            let db = Scratch::create(url)?;
            // The tables, before the processes open the ledger.
            drop(execution_ledger::Ledger::open(&db.url)?);
            into.push(appenders(&db.url, SUBMITTERS, &counts)?);
        }
        let db = Scratch::create(url)?;
        pg.push(scenarios::peer_workload(
            Path::new(&db.url),
            n,
            Durability::Synced,
        )?);
        drop(db);
        let dir = root.join(format!("peers-sled-{round}"));
        let _ = std::fs::remove_dir_all(&dir);
        sled.push(scenarios::peer_workload(&dir, n, Durability::Synced)?);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let workload = workload(n, rounds);
    let mut measured = vec![
        Measurement::new(
            "PostgreSQL: durable appends, 3 processes vs 1",
            "appends/s",
            median(three),
            "one process of 64 submitting threads on the same server",
            median(one),
            scenarios::Target::AtLeast(1.5),
            format!(
                "{} appends from {PROCESSES} processes of {SUBMITTERS} threads vs {total} from one",
                per * PROCESSES
            ),
        ),
        Measurement::new(
            "PostgreSQL: peers' workload, enqueue",
            "jobs/s",
            of(&pg, |f| f.enqueue),
            "the same workload on sled, synced",
            of(&sled, |f| f.enqueue),
            scenarios::Target::Informational,
            workload.clone(),
        ),
        Measurement::new(
            "PostgreSQL: peers' workload, process",
            "jobs/s",
            of(&pg, |f| f.process),
            "the same workload on sled, synced",
            of(&sled, |f| f.process),
            scenarios::Target::Informational,
            format!(
                "{workload}; enqueue start to last completion {:.2} s on PostgreSQL, {:.2} s on sled",
                of(&pg, |f| f.total_s),
                of(&sled, |f| f.total_s)
            ),
        ),
    ];
    if let Some(g) = graphile {
        measured.push(Measurement::new(
            "PostgreSQL: peers' workload, process vs graphile-worker",
            "jobs/s",
            of(&pg, |f| f.process),
            &g.name(),
            g.process_jobs_per_s,
            scenarios::Target::AtLeast(5.0),
            workload.clone(),
        ));
        measured.push(Measurement::new(
            "PostgreSQL: peers' workload, enqueue vs graphile-worker",
            "jobs/s",
            of(&pg, |f| f.enqueue),
            &g.name(),
            g.enqueue_jobs_per_s,
            scenarios::Target::Informational,
            workload,
        ));
    }
    Ok(measured)
}

/// Runs of each mode when held against the peers (theirs: medians of 3).
const PEER_RUNS: usize = 3;

/// The median of one figure over runs of the peers' workload.
fn of(v: &[scenarios::PeerFigures], f: fn(&scenarios::PeerFigures) -> f64) -> f64 {
    median(v.iter().map(f).collect())
}

/// What the peers' workload is, for a measurement's size.
fn workload(n: u64, rounds: usize) -> String {
    format!(
        "{n} no-op jobs of 100-byte payloads, submit_many chunks of {}, {} workers; medians of {rounds}",
        scenarios::PEER_BATCH,
        scenarios::PEER_WORKERS
    )
}

/// One peer's figures in one durability mode: a JSON line of medians as the
/// harnesses in ../shared/peers print them last (their other fields, and
/// their other lines, are theirs and not read).
#[derive(Clone, Debug)]
pub(crate) struct PeerLine {
    peer: String,
    durability: String,
    n: u64,
    enqueue_jobs_per_s: f64,
    process_jobs_per_s: f64,
}

impl PeerLine {
    /// The line of `peer` whose durability mode starts with `mode`.
    fn find<'a>(lines: &'a [PeerLine], peer: &str, mode: &str) -> Option<&'a PeerLine> {
        lines
            .iter()
            .find(|l| l.peer == peer && l.durability.starts_with(mode))
    }

    fn name(&self) -> String {
        format!("{} ({}), same sitting", self.peer, self.durability)
    }
}

/// The peers' figures in `path`: every line that is a JSON object (the
/// harnesses' `run:` lines and logs are passed over).
pub(crate) fn read_peers(path: &Path) -> Result<Vec<PeerLine>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| crate::cli::Usage(format!("--peers: cannot read {}: {e}", path.display())))?;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if !line.starts_with('{') {
            continue;
        }
        let bad = |what: &str| {
            crate::cli::Usage(format!(
                "--peers {}: line {} is not a peer's figures: {what}",
                path.display(),
                i + 1
            ))
        };
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|_| bad("it is not valid JSON"))?;
        let text = |key: &str| {
            v[key]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| bad(&format!("{key} must be a string")))
        };
        let number = |key: &str| {
            v[key]
                .as_f64()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| bad(&format!("{key} must be a number of jobs/s")))
        };
        let peer = PeerLine {
            peer: text("peer")?,
            durability: text("durability")?,
            n: v["n"]
                .as_u64()
                .filter(|n| *n >= 1)
                .ok_or_else(|| bad("n must be a whole number of jobs from 1"))?,
            enqueue_jobs_per_s: number("enqueue_jobs_per_s")?,
            process_jobs_per_s: number("process_jobs_per_s")?,
        };
        if let Some(first) = lines.first().filter(|f: &&PeerLine| f.n != peer.n) {
            return Err(bad(&format!(
                "its n is {}, the lines before it {}: one sitting runs one N",
                peer.n, first.n
            ))
            .into());
        }
        lines.push(peer);
    }
    if lines.is_empty() {
        return Err(crate::cli::Usage(format!(
            "--peers {}: no peer's figures in it (the JSON lines the harnesses print last)",
            path.display()
        ))
        .into());
    }
    Ok(lines)
}

/// The peers' workload on sled, synced and buffered, held to the targets
/// of the runtime against its own log and, with the peers' figures of the
/// same sitting, against BullMQ.
fn peer_workload(
    root: &Path,
    sizes: Sizes,
    peers: Option<&[PeerLine]>,
) -> Result<Vec<Measurement>> {
    let aof = peers.and_then(|p| PeerLine::find(p, "bullmq", "aof"));
    let volatile = peers.and_then(|p| PeerLine::find(p, "bullmq", "redis-default"));
    let n = aof.or(volatile).map_or(sizes.peer_jobs, |b| b.n);
    let rounds = if aof.or(volatile).is_some() {
        sizes.rounds.max(PEER_RUNS)
    } else {
        sizes.rounds
    };
    const SUBMITTERS: u64 = 256;
    let (mut synced, mut buffered, mut appends) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        for (durability, into, name) in [
            (Durability::Synced, &mut synced, "synced"),
            (Durability::Buffered, &mut buffered, "buffered"),
        ] {
            let dir = root.join(format!("peers-{name}-{round}"));
            let _ = std::fs::remove_dir_all(&dir);
            into.push(scenarios::peer_workload(&dir, n, durability)?);
            let _ = std::fs::remove_dir_all(&dir);
        }
        // The log's own durable rate, as many events as the processing
        // appends.
        let per = (2 * n).div_ceil(SUBMITTERS);
        let dir = root.join(format!("peers-appends-{round}"));
        let _ = std::fs::remove_dir_all(&dir);
        appends.push(scenarios::durable_task_rate(&dir, SUBMITTERS, per)?);
    }
    let workload = workload(n, rounds);
    let events = of(&synced, |f| f.events_per_job);
    let log_allows = median(appends) / events.max(1.0);
    let mut measured = vec![Measurement::new(
        "peers' workload, process (sled synced) vs its log",
        "jobs/s",
        of(&synced, |f| f.process),
        &format!(
            "durable appends from {SUBMITTERS} tokio tasks / {events:.2} events per processed job"
        ),
        log_allows,
        scenarios::Target::AtLeast(0.8),
        workload.clone(),
    )];
    match (aof, volatile) {
        (None, None) => {
            for (name, f) in [
                (
                    "peers' workload, enqueue (sled synced)",
                    (|f| f.enqueue) as fn(&scenarios::PeerFigures) -> f64,
                ),
                ("peers' workload, process (sled synced)", |f| f.process),
            ] {
                measured.push(Measurement::new(
                    name,
                    "jobs/s",
                    of(&synced, f),
                    "the same on sled, buffered",
                    of(&buffered, f),
                    scenarios::Target::Informational,
                    workload.clone(),
                ));
            }
        }
        _ => {
            let synced_enqueue = of(&synced, |f| f.enqueue);
            let synced_process = of(&synced, |f| f.process);
            let buffered_process = of(&buffered, |f| f.process);
            let mut against = |name: &str,
                               value: f64,
                               peer: Option<&PeerLine>,
                               what: fn(&PeerLine) -> f64,
                               target| {
                if let Some(p) = peer {
                    measured.push(Measurement::new(
                        name,
                        "jobs/s",
                        value,
                        &p.name(),
                        what(p),
                        target,
                        workload.clone(),
                    ));
                }
            };
            use scenarios::Target::{AtLeast, Informational};
            against(
                "peers' workload, enqueue (sled synced) vs BullMQ appendfsync always",
                synced_enqueue,
                aof,
                |p| p.enqueue_jobs_per_s,
                AtLeast(8.0),
            );
            against(
                "peers' workload, process (sled synced) vs BullMQ appendfsync always",
                synced_process,
                aof,
                |p| p.process_jobs_per_s,
                AtLeast(4.0),
            );
            against(
                "peers' workload, process (sled synced) vs BullMQ without persistence",
                synced_process,
                volatile,
                |p| p.process_jobs_per_s,
                AtLeast(2.0),
            );
            against(
                "peers' workload, process (sled buffered) vs BullMQ without persistence",
                buffered_process,
                volatile,
                |p| p.process_jobs_per_s,
                Informational,
            );
        }
    }
    Ok(measured)
}
