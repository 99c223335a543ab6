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
    if wanted("list") {
        progress("a page of the executions list");
        results.push(scenarios::list_page(&root, sizes)?);
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
    if let (true, Some(url)) = (wanted("postgres"), &cli.database) {
        progress("PostgreSQL: appends from 1 and 3 processes, the peers' workload");
        results.extend(postgres(url, &root, sizes)?);
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
fn postgres(url: &str, root: &Path, sizes: Sizes) -> Result<Vec<Measurement>> {
    const SUBMITTERS: u64 = 64;
    const PROCESSES: u64 = 3;
    let total = sizes.appends;
    let per = total.div_ceil(PROCESSES);
    let n = sizes.peer_jobs;
    let (mut one, mut three) = (Vec::new(), Vec::new());
    let (mut pg, mut sled) = (Vec::new(), Vec::new());
    for round in 0..sizes.rounds {
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
        pg.push(scenarios::peer_workload(Path::new(&db.url), n)?);
        drop(db);
        let dir = root.join(format!("peers-sled-{round}"));
        let _ = std::fs::remove_dir_all(&dir);
        sled.push(scenarios::peer_workload(&dir, n)?);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let of = |v: &[scenarios::PeerFigures], f: fn(&scenarios::PeerFigures) -> f64| {
        median(v.iter().map(f).collect())
    };
    let workload = format!(
        "{n} no-op jobs of 100-byte payloads, submit_many chunks of {}, {} workers",
        scenarios::PEER_BATCH,
        scenarios::PEER_WORKERS
    );
    Ok(vec![
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
    ])
}
