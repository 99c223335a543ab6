//! `ledger demo`: what the ledger is for, in one screen, on a fresh ledger.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use execution_ledger::{
    At, BackgroundExecutionMode, BackgroundExecutionStatus, ExecutionError, ExecutionId, Ledger,
    RetryConfig, Runtime, Submission, TenantId,
};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::Cli;
use crate::output;
use crate::run::Monitor;

struct Job {
    label: &'static str,
    tenant: &'static str,
    submission: Submission,
}

fn job(
    label: &'static str,
    tenant: &'static str,
    callable: &str,
    input: &str,
    priority: u8,
) -> Job {
    let mut s = Submission::new(callable);
    s.input = Some(input.to_owned());
    s.config.priority = priority;
    Job {
        label,
        tenant,
        submission: s,
    }
}

fn workload() -> Vec<Job> {
    let mut jobs = vec![
        job(
            "greet (low priority)",
            "acme",
            "echo",
            "hello from acme",
            10,
        ),
        job(
            "greet (high priority)",
            "globex",
            "echo",
            "hello from globex",
            90,
        ),
        job("nap 300 ms", "acme", "sleep", "300", 70),
    ];
    let mut flaky = job(
        "flaky upstream, retried",
        "acme",
        "flaky",
        "fetch report",
        80,
    );
    flaky.submission.config.retry = Some(RetryConfig {
        max_attempts: 3,
        initial_delay_ms: 250,
        backoff_multiplier: 2.0,
        max_delay_ms: 5_000,
    });
    jobs.push(flaky);
    let mut slow = job("too slow, times out", "globex", "sleep", "10000", 60);
    slow.submission.config.timeout_ms = 300;
    jobs.push(slow);
    jobs.push(job("cancelled while running", "acme", "sleep", "10000", 85));
    jobs.push(job(
        "fails for good",
        "globex",
        "fail",
        "disk quota exceeded",
        40,
    ));
    let mut deferred = job("deferred, released later", "acme", "echo", "released", 50);
    deferred.submission.config.mode = BackgroundExecutionMode::Deferred;
    jobs.push(deferred);
    jobs
}

pub(crate) fn run(cli: &Cli, dir: Option<PathBuf>, out: &mut impl Write) -> Result<()> {
    let dir = dir.unwrap_or_else(|| {
        cli.data_dir.join(format!(
            "demo-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f")
        ))
    });
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "{} is not empty: the demo needs a fresh directory",
            dir.display()
        );
    }
    let ledger = Ledger::open(&dir)?;
    writeln!(
        out,
        "execution-ledger demo: a fresh ledger in {}\n",
        dir.display()
    )?;

    // 1. Submit a mixed workload.
    let jobs = workload();
    let mut ids: Vec<(&'static str, ExecutionId)> = Vec::new();
    let mut table = output::Table::new(&["EXECUTION", "TENANT", "CALLABLE", "PRIORITY", "WHAT"]);
    for j in jobs {
        let tenant: TenantId = j.tenant.parse()?;
        let e = ledger.submit(&tenant, j.submission).wait()?.execution;
        table.row(vec![
            e.execution_id.to_string(),
            j.tenant.to_owned(),
            e.callable_name.clone(),
            e.config.priority.to_string(),
            j.label.to_owned(),
        ]);
        ids.push((j.label, e.execution_id));
    }
    let submitted_at = ledger.head().seq;
    writeln!(
        out,
        "1. Submitted {} executions (seq 1-{submitted_at}), each a durable `queued` event:",
        ids.len()
    )?;
    table.write(out)?;
    out.flush()?;
    let id_of = |label: &str| {
        ids.iter()
            .find(|(l, _)| l.starts_with(label))
            .map(|(_, id)| *id)
            .expect("a demo job")
    };

    // 2. Run it.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let total = ids.len() as u64;
    rt.block_on(async {
        let runtime = Runtime::builder(ledger.clone())
            .workers(3)
            .worker_name("demo")
            .register_builtins()
            .register("flaky", |input, ctx| async move {
                if ctx.attempt < 2 {
                    Err(ExecutionError::new("unavailable", "upstream answered 503"))
                } else {
                    Ok(serde_json::json!({ "report": input, "attempt": ctx.attempt }))
                }
            })
            .idle_poll(Duration::from_millis(20))
            .start()
            .await?;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("   {bar:30} {pos}/{len} finished  {msg}")
                    .expect("a valid template"),
            );
            bar
        });
        let mut monitor = Monitor::start(&ledger, bar);
        let cancel = id_of("cancelled");
        let deferred = id_of("deferred");
        let mut cancelled = false;
        let mut released = false;
        loop {
            monitor.render();
            if !cancelled && ledger.get(cancel)?.status == BackgroundExecutionStatus::Running {
                runtime
                    .cancel(cancel, Some("no longer needed".into()))
                    .await?;
                cancelled = true;
            }
            if runtime.is_idle() && cancelled {
                if released {
                    break;
                }
                runtime.release(deferred).await?;
                released = true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        runtime.shutdown(Duration::from_secs(5)).await?;
        writeln!(
            out,
            "\n2. Ran them on 3 workers (the deferred one only once released): {}",
            monitor.finish()
        )?;
        anyhow::Ok(())
    })?;

    // 3. The audit trail of one execution.
    let flaky = id_of("flaky");
    let history = ledger.history(flaky)?;
    writeln!(out, "\n3. The audit trail of {flaky} (`ledger history`): it failed, waited out its back-off, and succeeded:")?;
    output::events_table(&history, false).write(out)?;
    let retry_seq = history
        .iter()
        .find(|e| e.kind.name() == "retry_scheduled")
        .map_or(submitted_at, |e| e.seq);
    let then = ledger
        .execution_at(flaky, At::Seq(retry_seq))?
        .expect("it existed then");
    writeln!(
        out,
        "   At seq {retry_seq} (`ledger show {flaky} --at-seq {retry_seq}`) it was {} with attempt {} of {} done; now it is {}.",
        then.status,
        then.attempt,
        then.config.max_attempts(),
        ledger.get(flaky)?.status
    )?;

    // 4. Time travel: the queue as it was.
    let past = ledger.projection_at(At::Seq(submitted_at))?;
    let queue = past.queue(chrono::DateTime::<chrono::Utc>::MAX_UTC, None);
    writeln!(out, "\n4. The queue at seq {submitted_at} (`ledger queue --at-seq {submitted_at}`), in claim order:")?;
    output::queue_table(&queue).write(out)?;
    let held = past
        .waiting(chrono::DateTime::<chrono::Utc>::MAX_UTC, None)
        .len();
    if held > 0 {
        writeln!(
            out,
            "   ({held} more held: the deferred one, runnable only once released)"
        )?;
    }
    let now = ledger.queue(None);
    writeln!(
        out,
        "   and now, at seq {}: {}.",
        ledger.head().seq,
        if now.is_empty() {
            "nothing is runnable; every execution has finished".to_owned()
        } else {
            format!("{} runnable", now.len())
        }
    )?;
    let mut finals = output::Table::new(&["EXECUTION", "STATUS", "ATTEMPTS", "WHAT"]);
    for (label, id) in &ids {
        let e = ledger.get(*id)?;
        finals.row(vec![
            id.to_string(),
            e.status.to_string(),
            e.attempt.to_string(),
            (*label).to_owned(),
        ]);
    }
    finals.write(out)?;

    // 5. Verify.
    let report = ledger.verify()?;
    writeln!(
        out,
        "\n5. `ledger verify`: ok: {} events of {} executions; every record intact, hash chain unbroken to seq {} ({}…).",
        report.events,
        report.executions,
        report.head.seq,
        &report.head.hash[..16]
    )?;
    writeln!(
        out,
        "\nExplore it: ledger --data-dir {} events | list | history ID | show ID --at-seq N | queue --at-seq N | diff --from-seq A --to-seq B",
        dir.display()
    )?;
    writeln!(
        out,
        "Or in the browser: ledger --data-dir {} serve, then open http://127.0.0.1:7474/ui/ (the console: executions, timelines, the whole ledger at any seq)",
        dir.display()
    )?;
    Ok(())
}
