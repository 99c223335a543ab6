//! The commands that open the ledger, do one thing and print it.

use std::io::{BufWriter, Write};
use std::time::Duration;

use anyhow::Result;
use execution_ledger::{
    At, BackgroundExecution, Event, ExecutionError, ExecutionId, Ledger, LedgerError, RetryConfig,
    Submission, TenantId,
};

use crate::output::{self, Bar, Table};
use crate::{Cli, Command, Exit, SubmitArgs, Usage};

type Out = BufWriter<std::io::StdoutLock<'static>>;

fn json_line(out: &mut Out, value: &impl serde::Serialize) -> Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

/// A ledger error as the CLI reports it: usage errors exit 2.
fn fail(e: LedgerError) -> anyhow::Error {
    match e {
        LedgerError::Invalid(m) => Usage(m).into(),
        other => other.into(),
    }
}

pub(crate) fn run(cli: Cli) -> Result<()> {
    let mut out: Out = BufWriter::new(std::io::stdout().lock());
    let result = dispatch(&cli, &mut out);
    let flushed = out.flush();
    result?;
    Ok(flushed?)
}

fn dispatch(cli: &Cli, out: &mut Out) -> Result<()> {
    let scope = cli.tenant.as_ref();
    match &cli.command {
        Command::Run {
            workers,
            exit_when_idle,
        } => return crate::run::run(cli, *workers as usize, *exit_when_idle),
        Command::Demo { dir } => return crate::demo::run(cli, dir.clone(), out),
        Command::Bench { quick, full, dir } => {
            return crate::bench::run(cli, *quick, *full, dir.clone(), out)
        }
        Command::BenchProbe { dir } => {
            let kb = execution_ledger::bench::memory_probe(dir)?;
            writeln!(out, "{kb}")?;
            return Ok(());
        }
        _ => {}
    }
    let ledger = crate::open(&cli.data_dir)?;
    match &cli.command {
        Command::Submit(args) => {
            let tenant = scope.ok_or_else(|| Usage("submit needs --tenant".into()))?;
            let submitted = ledger.submit(tenant, submission(args)?).map_err(fail)?;
            if cli.json {
                json_line(out, &submitted.execution)?;
            } else {
                writeln!(out, "{}", submitted.execution.execution_id)?;
            }
        }
        Command::Claim { worker } => {
            let claimed = match scope {
                Some(t) => ledger.tenant(t.clone()).claim(Some(worker)),
                None => ledger.claim(Some(worker)),
            }
            .map_err(fail)?;
            match (claimed, cli.json) {
                (Some(e), true) => json_line(out, &e)?,
                (Some(e), false) => writeln!(out, "{}", e.execution_id)?,
                (None, true) => writeln!(out, "null")?,
                (None, false) => {}
            }
        }
        Command::Complete { id, output } => {
            let e = get(&ledger, scope, *id)?;
            let output = output.clone().unwrap_or(serde_json::Value::Null);
            let done = on(&ledger, scope, *id, |l| l.complete(*id, e.attempt, output))?;
            changed(out, cli.json, &done)?;
        }
        Command::Fail { id, error, code } => {
            let e = get(&ledger, scope, *id)?;
            let error = ExecutionError::new(code.clone(), error.clone());
            let after = on(&ledger, scope, *id, |l| l.fail(*id, e.attempt, error))?;
            changed(out, cli.json, &after)?;
        }
        Command::Cancel { id, reason } => {
            let after = on(&ledger, scope, *id, |l| l.cancel(*id, reason.clone()))?;
            changed(out, cli.json, &after)?;
        }
        Command::Release { id } => {
            let after = on(&ledger, scope, *id, |l| l.release(*id))?;
            changed(out, cli.json, &after)?;
        }
        Command::Show { id, at } => {
            let e = match at.at() {
                None => get(&ledger, scope, *id)?,
                Some(at) => {
                    let found = match scope {
                        Some(t) => ledger.tenant(t.clone()).execution_at(*id, at),
                        None => ledger.execution_at(*id, at),
                    }
                    .map_err(fail)?;
                    found.ok_or_else(|| {
                        anyhow::anyhow!("{id} did not exist yet at {}", describe(at))
                    })?
                }
            };
            if cli.json {
                json_line(out, &e)?;
            } else {
                output::record(out, &e)?;
            }
        }
        Command::History { id } => {
            let events = match scope {
                Some(t) => ledger.tenant(t.clone()).history(*id),
                None => ledger.history(*id),
            }
            .map_err(fail)?;
            print_events(out, cli.json, &events, false)?;
        }
        Command::Queue { at } => {
            let (queue, waiting) = match at.at() {
                Some(at) => {
                    let projection = ledger.projection_at(at).map_err(fail)?;
                    let now = moment(&ledger, at)?;
                    let queue: Vec<_> = projection.queue(now, scope).into_iter().cloned().collect();
                    (queue, projection.waiting(now, scope).len())
                }
                None => (ledger.queue(scope), ledger.waiting(scope).len()),
            };
            if cli.json {
                json_line(out, &queue)?;
            } else {
                if queue.is_empty() {
                    writeln!(out, "nothing is runnable")?;
                } else {
                    output::queue_table(&queue.iter().collect::<Vec<_>>()).write(out)?;
                }
                if waiting > 0 {
                    writeln!(
                        out,
                        "{waiting} more queued but not runnable yet (held, or waiting for a back-off or run-at time)"
                    )?;
                }
            }
        }
        Command::Events {
            from_seq,
            to_seq,
            follow,
        } => {
            let mut events = Vec::new();
            for event in ledger.events(*from_seq, *to_seq) {
                let event = event?;
                if scope.is_none_or(|t| t == &event.tenant_id) {
                    if cli.json || *follow {
                        print_event_line(out, cli.json, &event)?;
                    } else {
                        events.push(event);
                    }
                }
            }
            if !cli.json && !*follow {
                print_events(out, false, &events, true)?;
            }
            if *follow {
                out.flush()?;
                let mut sub = ledger.subscribe(ledger.head().seq + 1);
                loop {
                    if let Some(event) = sub.next_timeout(Duration::from_secs(1))? {
                        if scope.is_none_or(|t| t == &event.tenant_id) {
                            print_event_line(out, cli.json, &event)?;
                            out.flush()?;
                        }
                    }
                }
            }
        }
        Command::Diff { from_seq, to_seq } => {
            let changes = ledger
                .diff(At::Seq(*from_seq), At::Seq(*to_seq))
                .map_err(fail)?;
            let changes: Vec<_> = changes
                .into_iter()
                .filter(|c| scope.is_none_or(|t| t == &c.tenant_id))
                .collect();
            if cli.json {
                json_line(out, &changes)?;
            } else if changes.is_empty() {
                writeln!(
                    out,
                    "nothing changed between seq {from_seq} and seq {to_seq}"
                )?;
            } else {
                let mut table = Table::new(&["EXECUTION", "TENANT", "BEFORE", "AFTER", "EVENTS"]);
                for c in &changes {
                    table.row(vec![
                        c.execution_id.to_string(),
                        c.tenant_id.to_string(),
                        c.before.map_or("-".to_owned(), |s| s.to_string()),
                        c.after.to_string(),
                        c.events
                            .iter()
                            .map(|(seq, kind)| format!("{seq}:{kind}"))
                            .collect::<Vec<_>>()
                            .join(" "),
                    ]);
                }
                table.write(out)?;
            }
        }
        Command::Verify => {
            let bar = Bar::new("verifying");
            let result = ledger.verify_with_progress(|seq, head| bar.update(seq, head));
            bar.finish();
            match result {
                Ok(report) => {
                    if cli.json {
                        json_line(out, &serde_json::json!({ "ok": true, "report": report }))?;
                    } else {
                        writeln!(
                            out,
                            "ok: {} events of {} executions verified; hash chain intact to seq {} ({}); {} snapshots and the index match the log",
                            report.events, report.executions, report.head.seq, report.head.hash, report.snapshots
                        )?;
                    }
                }
                Err(e) => {
                    if cli.json {
                        json_line(
                            out,
                            &serde_json::json!({ "ok": false, "seq": e.seq(), "error": e.to_string() }),
                        )?;
                    }
                    out.flush()?;
                    let _ = writeln!(std::io::stderr(), "error: {e}");
                    return Err(Exit(1).into());
                }
            }
        }
        Command::Head => {
            let head = ledger.head();
            if cli.json {
                json_line(out, &head)?;
            } else {
                writeln!(out, "seq {} hash {}", head.seq, head.hash)?;
            }
        }
        Command::Stats => {
            let stats = ledger.stats()?;
            if cli.json {
                json_line(out, &stats)?;
            } else {
                let l = stats.live;
                writeln!(out, "events      {}", stats.head.seq)?;
                writeln!(out, "head        {}", stats.head.hash)?;
                writeln!(
                    out,
                    "queued      {} ({} waiting, {} held)",
                    l.queued, l.waiting, l.held
                )?;
                writeln!(out, "running     {}", l.running)?;
                writeln!(out, "finishing   {}", l.finishing)?;
                writeln!(out, "snapshots   {}", stats.snapshots)?;
                writeln!(out, "disk        {} bytes", stats.disk_bytes)?;
            }
        }
        Command::Export => {
            let head = ledger.head().seq;
            let bar = Bar::new("exporting");
            for event in ledger.events(1, Some(head)) {
                let event = event?;
                bar.update(event.seq, head);
                if scope.is_none_or(|t| t == &event.tenant_id) {
                    json_line(out, &event)?;
                }
            }
            bar.finish();
        }
        Command::Run { .. }
        | Command::Demo { .. }
        | Command::Bench { .. }
        | Command::BenchProbe { .. } => unreachable!("handled above"),
    }
    Ok(())
}

fn submission(args: &SubmitArgs) -> Result<Submission> {
    let mut s = Submission::new(args.callable.clone());
    s.input = args.input.clone();
    s.config.priority = args.priority;
    s.config.mode = args.mode;
    s.config.timeout_ms = args.timeout_ms;
    s.config.callback_url = args.callback_url.clone();
    if let Some(n) = args.max_attempts {
        s.config.retry = Some(RetryConfig {
            max_attempts: n,
            ..RetryConfig::default()
        });
    }
    if !args.context.is_empty() {
        s.context = Some(args.context.iter().cloned().collect());
    }
    s.idempotency_key = args.idempotency_key.clone();
    s.run_at = args.run_at;
    Ok(s)
}

fn get(ledger: &Ledger, scope: Option<&TenantId>, id: ExecutionId) -> Result<BackgroundExecution> {
    match scope {
        Some(t) => ledger.tenant(t.clone()).get(id),
        None => ledger.get(id),
    }
    .map_err(fail)
}

/// Runs a command on the whole ledger, after checking the execution is the
/// scope's.
fn on(
    ledger: &Ledger,
    scope: Option<&TenantId>,
    id: ExecutionId,
    f: impl FnOnce(&Ledger) -> Result<BackgroundExecution, LedgerError>,
) -> Result<BackgroundExecution> {
    if scope.is_some() {
        get(ledger, scope, id)?;
    }
    f(ledger).map_err(fail)
}

fn changed(out: &mut Out, json: bool, e: &BackgroundExecution) -> Result<()> {
    if json {
        return json_line(out, e);
    }
    let detail = match (&e.not_before, e.status) {
        (Some(t), execution_ledger::BackgroundExecutionStatus::Queued) => {
            format!(
                " (attempt {} of {} not before {})",
                e.attempt + 1,
                e.config.max_attempts(),
                output::time(t)
            )
        }
        _ => String::new(),
    };
    writeln!(out, "{} is {}{detail}", e.execution_id, e.status)?;
    Ok(())
}

fn print_events(out: &mut Out, json: bool, events: &[Event], with_execution: bool) -> Result<()> {
    if json {
        for e in events {
            json_line(out, e)?;
        }
    } else if events.is_empty() {
        writeln!(out, "no events")?;
    } else {
        output::events_table(events, with_execution).write(out)?;
    }
    Ok(())
}

fn print_event_line(out: &mut Out, json: bool, e: &Event) -> Result<()> {
    if json {
        json_line(out, e)
    } else {
        writeln!(
            out,
            "{}  {}  {}  {}  {}  {}",
            e.seq,
            output::time(&e.at),
            e.execution_id,
            e.tenant_id,
            e.kind.name(),
            output::detail(e)
        )?;
        Ok(())
    }
}

fn describe(at: At) -> String {
    match at {
        At::Seq(n) => format!("seq {n}"),
        At::Time(t) => output::time(&t),
    }
}

/// The wall time a point in the log stands for (to tell runnable from
/// waiting executions as they were then).
fn moment(ledger: &Ledger, at: At) -> Result<chrono::DateTime<chrono::Utc>> {
    Ok(match at {
        At::Time(t) => t,
        At::Seq(0) => chrono::DateTime::<chrono::Utc>::MIN_UTC,
        At::Seq(n) => {
            let seq = ledger.resolve(At::Seq(n)).map_err(fail)?;
            ledger
                .events(seq, Some(seq))
                .next()
                .transpose()?
                .map_or(chrono::DateTime::<chrono::Utc>::MIN_UTC, |e| e.at)
        }
    })
}
