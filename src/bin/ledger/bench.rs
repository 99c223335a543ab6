//! `ledger bench`: every scenario of [`crate::scenarios`], and the HTTP ones,
//! each with its raw baseline from the same run and the ratio against its
//! target.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use crate::scenarios::{self, Measurement, ScenarioError, Sizes};
use anyhow::{Context, Result};

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
    // Deferred, so that the server's worker leaves them alone.
    let job = |i: u64| {
        let mut s = scenarios::sample_submission(i);
        s.config.mode = execution_ledger::BackgroundExecutionMode::Deferred;
        s
    };
    let tenant: execution_ledger::TenantId = "bench".parse()?;
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

        let dir = root.join(format!("http-lib-{round}"));
        let ledger = execution_ledger::Ledger::open(&dir)?;
        let start = Instant::now();
        std::thread::scope(|s| {
            for c in 0..CLIENTS {
                let (ledger, tenant) = (ledger.clone(), tenant.clone());
                s.spawn(move || {
                    for i in 0..per {
                        ledger
                            .submit(&tenant, job(c * per + i))
                            .wait()
                            .expect("a durable submit");
                    }
                });
            }
        });
        base.push(n as f64 / start.elapsed().as_secs_f64());
        drop(ledger);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
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
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
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
    out: &mut impl Write,
) -> Result<()> {
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
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let mut results: Vec<Measurement> = Vec::new();
    if wanted("relaxed") {
        progress("relaxed appends");
        results.push(scenarios::relaxed_append(&root, sizes)?);
    }
    if wanted("durable") {
        progress("durable appends from 256 submitters");
        results.extend(scenarios::durable_append(&root, sizes)?);
    }
    if wanted("end-to-end") {
        progress("end-to-end durable jobs");
        results.push(scenarios::end_to_end(&root, sizes)?);
    }
    if wanted("replay") {
        progress("replay");
        results.push(scenarios::replay(&root, sizes)?);
    }
    if wanted("snapshots") {
        progress("open with snapshots");
        results.push(scenarios::open_with_snapshots(&root, sizes)?);
    }
    if wanted("claim") {
        progress("claims");
        results.push(scenarios::claim(&root, sizes)?);
    }
    if wanted("queue") {
        results.push(scenarios::queue_vs_seed(100_000));
    }
    if wanted("http") {
        progress("HTTP submits from 64 clients");
        results.push(http_submit(&root, sizes)?);
    }
    if wanted("remote") {
        progress("jobs through remote workers");
        results.extend(remote_workers(&root, sizes)?);
    }
    if wanted("memory") {
        progress("peak memory");
        results.push(scenarios::memory(&root, sizes, &probe)?);
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
                    "target": m.target,
                    "targetIs": if m.higher_is_better { "at least" } else { "at most" },
                    "met": m.met,
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
                format!("{:.2}", m.ratio),
                format!(
                    "{} {}",
                    if m.higher_is_better { ">=" } else { "<=" },
                    m.target
                ),
                if m.met { "yes" } else { "NO" }.to_owned(),
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
