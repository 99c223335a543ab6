//! The commands that open the ledger, do one thing and print it.

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Result;
use execution_ledger::{
    BackgroundExecution, Entry, Event, ExecutionError, ListFilter, ListPage, NewSchedule,
    RetryConfig, Submission,
};

use crate::backend::{fail, Backend, Retention, Verdict};
use crate::cli::{Cli, Command, Exit, ScheduleAction, SubmitArgs, Usage};
use crate::output::{self, Bar, Table};

type Out = BufWriter<std::io::StdoutLock<'static>>;

fn json_line(out: &mut Out, value: &impl serde::Serialize) -> Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

pub(crate) fn run(cli: Cli) -> Result<()> {
    let mut out: Out = BufWriter::new(std::io::stdout().lock());
    let result = dispatch(&cli, &mut out);
    let flushed = out.flush();
    result?;
    Ok(flushed?)
}

fn dispatch(cli: &Cli, out: &mut Out) -> Result<()> {
    match &cli.command {
        Command::Run {
            workers,
            grace_secs,
            exit_when_idle,
            retention,
            lease_ms,
            callback_secrets,
        } => {
            let grace = std::time::Duration::from_secs((*grace_secs).into());
            let retention = retention.load()?;
            let runtime = crate::serve::RuntimeOptions::new(*workers, *lease_ms, callback_secrets)?;
            return crate::run::run(cli, runtime, grace, *exit_when_idle, retention);
        }
        Command::Demo { dir } => return crate::demo::run(cli, dir.clone(), out),
        Command::Worker {
            callable,
            exec,
            concurrency,
            lease_ms,
            name,
        } => {
            if cli.tenant.is_some() {
                return Err(Usage(
                    "worker takes no --tenant: the API key decides which tenants' work it claims"
                        .into(),
                )
                .into());
            }
            let options = crate::worker::Options {
                callable: callable.clone(),
                exec: exec.clone(),
                concurrency: (*concurrency).into(),
                lease_ms: *lease_ms,
                name: name.clone(),
            };
            return crate::worker::run(cli, options);
        }
        Command::Serve {
            listen,
            workers,
            grace_secs,
            keys,
            retention,
            lease_ms,
            callback_secrets,
        } => {
            // Global flags that mean nothing to a server are refused, not ignored.
            if cli.tenant.is_some() {
                return Err(Usage(
                    "serve takes no --tenant: each request's API key (--keys) decides its tenant"
                        .into(),
                )
                .into());
            }
            if cli.json {
                return Err(Usage(
                    "serve takes no --json: it answers JSON over HTTP and prints only log lines"
                        .into(),
                )
                .into());
            }
            let grace = std::time::Duration::from_secs((*grace_secs).into());
            let retention = retention.load()?;
            let runtime = crate::serve::RuntimeOptions::new(*workers, *lease_ms, callback_secrets)?;
            return crate::serve::run(cli, *listen, runtime, grace, keys.clone(), retention);
        }
        Command::Bench {
            quick,
            full,
            dir,
            only,
            peers,
        } => {
            let peers = peers.as_deref().map(crate::bench::read_peers).transpose()?;
            return crate::bench::run(cli, *quick, *full, dir.clone(), only, peers, out);
        }
        Command::BenchAppend {
            submitters,
            count,
            start_at,
        } => return crate::bench::append_child(cli, *submitters, *count, *start_at, out),
        Command::Verify {
            export: Some(file),
            checkpoint,
            head,
            ..
        } => {
            if cli.tenant.is_some() {
                return Err(Usage(
                    "verify --export takes no --tenant: an export is checked whole, alone".into(),
                )
                .into());
            }
            let kept = kept_head(checkpoint.as_deref(), head.as_deref())?;
            return verify_export(cli, file, kept.as_ref(), out);
        }
        Command::Import {
            file,
            checkpoint,
            head,
        } => {
            if cli.tenant.is_some() {
                return Err(Usage(
                    "import takes no --tenant: an export is every tenant's, imported whole".into(),
                )
                .into());
            }
            if cli.server.is_some() {
                return Err(Usage(
                    "import builds a ledger opened here (--data-dir or --database), not a server's"
                        .into(),
                )
                .into());
            }
            let kept = kept_head(checkpoint.as_deref(), head.as_deref())?;
            return import(cli, file, kept.as_ref(), out);
        }
        Command::BenchProbe { dir } => {
            let kb = crate::scenarios::memory_probe(dir)?;
            writeln!(out, "{kb}")?;
            return Ok(());
        }
        _ => {}
    }
    let backend = Backend::connect(cli)?;
    match &cli.command {
        Command::Schedule { action } => schedule(cli, &backend, action, out)?,
        Command::Submit(args) => {
            let executions = match &args.from_file {
                Some(file) => backend.submit_many(submissions_in(file)?)?,
                None => vec![backend.submit(submission(args)?)?],
            };
            for execution in &executions {
                if cli.json {
                    json_line(out, execution)?;
                } else {
                    writeln!(out, "{}", execution.execution_id)?;
                }
            }
        }
        Command::Claim {
            worker,
            callables,
            lease_ms,
        } => {
            let claimed = backend.claim(worker, callables, *lease_ms)?;
            match (claimed, cli.json) {
                (Some(e), true) => json_line(out, &e)?,
                (Some(e), false) => writeln!(out, "{}", e.execution_id)?,
                (None, true) => writeln!(out, "null")?,
                (None, false) => {}
            }
        }
        Command::Complete { id, output } => {
            let output = output.clone().unwrap_or(serde_json::Value::Null);
            let done = backend.complete(*id, output)?;
            changed(out, cli.json, &done)?;
        }
        Command::Fail { id, error, code } => {
            let error = ExecutionError::new(code.clone(), error.clone());
            let after = backend.fail(*id, error)?;
            changed(out, cli.json, &after)?;
        }
        Command::Cancel { id, reason } => {
            let after = backend.cancel(*id, reason.clone())?;
            changed(out, cli.json, &after)?;
        }
        Command::Retry {
            id,
            reason,
            by,
            attempts,
            status,
            callable,
            since,
            until,
            dry_run,
        } => {
            let by = by_or_user(by);
            if let Some(id) = id {
                let new = backend.retry(*id, reason.clone(), by, *attempts)?;
                if cli.json {
                    json_line(out, &new)?;
                } else {
                    writeln!(out, "{}", new.execution_id)?;
                }
                return Ok(());
            }
            let mut filter = ListFilter::new();
            filter.statuses = status.clone();
            filter.callable = callable.clone();
            (filter.since, filter.until) = (*since, *until);
            let report =
                backend.retry_matching(&filter, (reason.clone(), by, *attempts), *dry_run)?;
            if cli.json {
                json_line(out, &report)?;
            } else {
                output::retry_report(out, &report)?;
            }
        }
        Command::Redact(a) => {
            let after = backend.retain(a.id, Retention::Redact, &a.reason, by_or_user(&a.by))?;
            retained(out, cli.json, &after, "redacted")?;
        }
        Command::Hold(a) | Command::ReleaseHold(a) => {
            let (what, done) = match &cli.command {
                Command::Hold(_) => (Retention::Hold, "put under legal hold"),
                _ => (Retention::ReleaseHold, "released from legal hold"),
            };
            match (a.id, &a.whole_tenant) {
                (Some(id), _) => {
                    let after = backend.retain(id, what, &a.reason, by_or_user(&a.by))?;
                    retained(out, cli.json, &after, done)?;
                }
                (None, Some(tenant)) => {
                    let hold = backend.hold_tenant(tenant, what, &a.reason, by_or_user(&a.by))?;
                    if cli.json {
                        json_line(out, &hold)?;
                    } else {
                        writeln!(out, "tenant {tenant} {done} ({})", hold.reason)?;
                    }
                }
                (None, None) => unreachable!("clap requires an execution or --whole-tenant"),
            }
        }
        Command::Holds => {
            let holds = backend.tenant_holds()?;
            if cli.json {
                for hold in &holds {
                    json_line(out, hold)?;
                }
            } else {
                output::tenant_holds(out, &holds)?;
            }
        }
        Command::Share {
            of,
            weight,
            limit,
            reset,
        } => {
            let share = match reset {
                true => None,
                false => Some(
                    execution_ledger::TenantShare::new(weight.unwrap_or(1), *limit)
                        .map_err(crate::backend::fail)?,
                ),
            };
            let now = backend.set_share(of, share)?;
            if cli.json {
                json_line(out, &now)?;
            } else {
                writeln!(out, "tenant {of}: {}", output::share(&now))?;
            }
        }
        Command::Shares => {
            let shares = backend.shares()?;
            if cli.json {
                for share in &shares {
                    json_line(out, share)?;
                }
            } else {
                output::shares(out, &shares)?;
            }
        }
        Command::Pause(args) | Command::Resume(args) => {
            let pause = matches!(cli.command, Command::Pause(_));
            let scope =
                execution_ledger::PauseScope::new(cli.tenant.clone(), args.callable.clone());
            let p = backend.pause(scope, args.reason.clone(), args.by.clone(), pause)?;
            if cli.json {
                json_line(out, &p)?;
            } else if pause {
                writeln!(
                    out,
                    "paused {} at seq {}{}: no claim takes its work until it is resumed",
                    p.scope,
                    p.since_seq,
                    output::why(&p)
                )?;
            } else {
                writeln!(
                    out,
                    "resumed {} (paused at seq {}{})",
                    p.scope,
                    p.since_seq,
                    output::why(&p)
                )?;
            }
        }
        Command::Pauses { at } => {
            let pauses = backend.pauses(at.at())?;
            if cli.json {
                for p in &pauses {
                    json_line(out, p)?;
                }
            } else {
                output::pauses(out, &pauses)?;
            }
        }
        Command::Retain { policy, dry_run } => {
            let file = match (policy, cli.dir()) {
                (Some(file), _) => file.clone(),
                (None, Some(dir)) => dir.join("retention.json"),
                (None, None) => {
                    return Err(Usage(
                        "retain on a database needs --policy FILE (there is no data directory to hold retention.json)"
                            .into(),
                    )
                    .into())
                }
            };
            let policy = crate::cli::read_policy(&file, "--policy")?;
            let bar = output::Bar::spinner("retention");
            let report = backend.apply_retention(&policy, *dry_run, |r| {
                if r.examined % 64 == 0 {
                    bar.say(output::retention(r));
                }
            })?;
            bar.finish();
            if cli.json {
                json_line(out, &report)?;
            } else {
                writeln!(out, "{}", output::retention(&report))?;
            }
        }
        Command::Release { id } => {
            let after = backend.release(*id)?;
            changed(out, cli.json, &after)?;
        }
        Command::Show { id, at } => {
            let e = backend.get(*id, at.at())?;
            if cli.json {
                json_line(out, &e)?;
            } else {
                output::record(out, &e)?;
            }
        }
        Command::History { id } => {
            let events = backend.history(*id)?;
            print_events(out, cli.json, &events, false)?;
        }
        Command::List {
            status,
            callable,
            since,
            until,
            id,
            limit,
            cursor,
        } => {
            let mut filter = ListFilter::new();
            filter.statuses = status.clone();
            filter.callable = callable.clone();
            (filter.since, filter.until, filter.id) = (*since, *until, *id);
            let limit = usize::try_from(*limit).unwrap_or(ListPage::MAX_LEN);
            let (page, next) = backend.list(&filter, *cursor, limit)?;
            if cli.json {
                for e in &page {
                    json_line(out, e)?;
                }
            } else if page.is_empty() {
                writeln!(out, "no execution matches")?;
            } else {
                output::list_table(&page).write(out)?;
            }
            if let Some(next) = next {
                eprintln!("more: --cursor {next}");
            }
        }
        Command::Queue { at } => {
            let (queue, waiting) = backend.queue(at.at())?;
            if cli.json {
                json_line(out, &queue)?;
            } else {
                if queue.is_empty() {
                    writeln!(out, "nothing is runnable")?;
                } else {
                    output::queue_table(&queue.iter().collect::<Vec<_>>()).write(out)?;
                }
                if let Some(waiting) = waiting.filter(|w| *w > 0) {
                    writeln!(
                        out,
                        "{waiting} more queued but not runnable yet (held, or waiting for a back-off or run-at time)"
                    )?;
                }
                for p in backend.pauses(at.at())? {
                    let held = queue
                        .iter()
                        .filter(|e| p.scope.holds(&e.tenant_id, &e.callable_name))
                        .count();
                    if held > 0 {
                        writeln!(
                            out,
                            "paused: {} since seq {}{}: its {held} queued wait until it is resumed",
                            p.scope,
                            p.since_seq,
                            output::why(&p)
                        )?;
                    }
                }
                if at.at().is_none() {
                    let idle = backend.callables_without_worker()?;
                    if !idle.is_empty() {
                        writeln!(
                            out,
                            "no live worker runs: {} (their executions wait until one claims them)",
                            idle.join(", ")
                        )?;
                    }
                    for share in backend.shares()?.iter().filter(|s| s.at_limit()) {
                        let held = queue.iter().filter(|e| e.tenant_id == share.tenant).count();
                        if held > 0 {
                            writeln!(
                                out,
                                "{} runs {} at once, its limit: its {held} queued wait until one ends",
                                share.tenant, share.running
                            )?;
                        }
                    }
                }
            }
        }
        Command::Events {
            from_seq,
            to_seq,
            follow,
        } => {
            if let Some(to) = to_seq {
                execution_ledger::Ledger::check_range(*from_seq, *to).map_err(fail)?;
            }
            let mut events = Vec::new();
            let streaming = cli.json || *follow;
            backend.events(*from_seq, *to_seq, *follow, &mut |event| {
                if backend.shows(&event.tenant_id) {
                    if streaming {
                        print_event_line(out, cli.json, &event)?;
                        if *follow {
                            out.flush()?;
                        }
                    } else {
                        events.push(event);
                    }
                }
                Ok(())
            })?;
            if !streaming {
                print_events(out, false, &events, true)?;
            }
        }
        Command::Diff { from_seq, to_seq } => {
            let changes = backend.diff(*from_seq, *to_seq)?;
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
        Command::Head => {
            let head = backend.head()?;
            if cli.json {
                json_line(out, &head)?;
            } else {
                writeln!(out, "seq {} hash {}", head.seq, head.hash)?;
            }
        }
        Command::Reindex => {
            let done = backend.reindex()?;
            if cli.json {
                json_line(out, &done)?;
            } else {
                writeln!(
                    out,
                    "reindexed: {} events folded, {} settled executions indexed, {} stale entries removed",
                    done.events, done.settled, done.removed
                )?;
            }
        }
        Command::Verify {
            accept_tail,
            checkpoint,
            head,
            export: _,
        } => {
            let kept = kept_head(checkpoint.as_deref(), head.as_deref())?;
            if *accept_tail {
                // Accepting rewrites the checkpoint: the directory itself.
                let ledger = backend.local("verify --accept-tail")?;
                match (ledger.accepted_tail(), cli.json) {
                    (Some(a), true) => json_line(out, &serde_json::json!({ "accepted": a }))?,
                    (Some(a), false) => writeln!(
                        out,
                        "accepted the log as it is at seq {} ({}); its checkpoint was refused: {}",
                        a.head.seq, a.head.hash, a.refused
                    )?,
                    (None, true) => json_line(out, &serde_json::json!({ "accepted": null }))?,
                    (None, false) => {
                        writeln!(out, "nothing to accept: the checkpoint agrees with the log")?
                    }
                }
            }
            let bar = Bar::new("verifying");
            let mut verdict = backend.verify(|seq, head| bar.update(seq, head))?;
            bar.finish();
            // The head kept elsewhere is checked once the chain is intact;
            // a log that does not lead to it is broken at its seq.
            if let (Some(kept), Verdict::Intact { .. }) = (&kept, &verdict) {
                let ledger = backend.local("verify --checkpoint or --head")?;
                if let Err(e) = ledger.check_head(kept) {
                    verdict = Err(e).into();
                }
            }
            if cli.json {
                json_line(out, &verdict)?;
            }
            match verdict {
                Verdict::Intact { report, .. } => {
                    if !cli.json {
                        writeln!(
                            out,
                            "ok: {} events of {} executions verified; hash chain intact to seq {} ({}); {} snapshots and the index match the log",
                            report.events, report.executions, report.head.seq, report.head.hash, report.snapshots
                        )?;
                        if let Some(a) = &report.archive {
                            writeln!(
                                out,
                                "ok: the archive's {} events (seqs 1 to {}) in {} verified; the live log follows on from its last",
                                a.events,
                                report.archived,
                                crate::output::plural(a.segments, "segment")
                            )?;
                        }
                        if let Some(kept) = &kept {
                            writeln!(
                                out,
                                "ok: the log leads to seq {} ({}) kept elsewhere",
                                kept.seq, kept.hash
                            )?;
                        }
                    }
                }
                Verdict::Broken { error, .. } => {
                    out.flush()?;
                    let _ = writeln!(std::io::stderr(), "error: {error}");
                    return Err(Exit(1).into());
                }
            }
        }
        Command::Stats => {
            let stats = backend.stats()?;
            if cli.json {
                json_line(out, &stats)?;
            } else {
                let (l, n) = (stats.live, stats.executions);
                if let Some(tenant) = &stats.tenant {
                    writeln!(out, "tenant      {tenant}")?;
                }
                writeln!(out, "events      {}", stats.head.seq)?;
                writeln!(out, "head        {}", stats.head.hash)?;
                writeln!(out, "executions  {}", n.total())?;
                writeln!(
                    out,
                    "  queued    {} ({} waiting, {} held)",
                    n.queued, l.waiting, l.held
                )?;
                writeln!(out, "  running   {}", n.running)?;
                writeln!(out, "  completed {}", n.completed)?;
                writeln!(out, "  failed    {}", n.failed)?;
                writeln!(out, "  cancelled {}", n.cancelled)?;
                writeln!(out, "  timeout   {}", n.timeout)?;
                writeln!(
                    out,
                    "finishing   {} (ended, a binding or callback pending)",
                    l.finishing
                )?;
                writeln!(out, "snapshots   {}", stats.snapshots)?;
                writeln!(out, "disk        {} bytes", stats.disk_bytes)?;
            }
        }
        Command::Export => {
            let bar = Bar::new("exporting");
            backend.export(|seq, head| bar.update(seq, head), &mut |entry, line| {
                let tenant = match &entry {
                    Entry::Event(e) => Some(&e.tenant_id),
                    Entry::Control(c) => c.kind.scope().tenant_id.as_ref(),
                };
                if tenant.is_none_or(|t| backend.shows(t)) {
                    out.write_all(line)?;
                    out.write_all(b"\n")?;
                }
                Ok(())
            })?;
            bar.finish();
        }
        Command::Run { .. }
        | Command::Demo { .. }
        | Command::Bench { .. }
        | Command::Serve { .. }
        | Command::Worker { .. }
        | Command::BenchProbe { .. }
        | Command::Import { .. }
        | Command::BenchAppend { .. } => unreachable!("handled above"),
    }
    Ok(())
}

/// The head kept elsewhere that `verify` is asked to check: the file of
/// `--checkpoint` (what `ledger head --json` printed) or `--head SEQ:HASH`.
fn kept_head(
    checkpoint: Option<&Path>,
    head: Option<&str>,
) -> Result<Option<execution_ledger::Head>> {
    let (head, refused): (execution_ledger::Head, Box<dyn Fn(String) -> Usage>) =
        match (checkpoint, head) {
            (None, None) => return Ok(None),
            (Some(file), _) => {
                let bytes = std::fs::read(file)
                    .map_err(|e| Usage(format!("--checkpoint {}: {e}", file.display())))?;
                let name = file.display().to_string();
                let refused = move |m: String| Usage(format!("--checkpoint {name}: {m}"));
                let head =
                    crate::decode::json(&bytes, "the file").map_err(|r| refused(r.message))?;
                (head, Box::new(refused))
            }
            (None, Some(text)) => {
                let refused = |m: String| Usage(format!("--head: {m}"));
                let Some((seq, hash)) = text.split_once(':') else {
                    return Err(refused(format!(
                        "takes SEQ:HASH (as `ledger head` prints them), not {text:?}"
                    ))
                    .into());
                };
                let seq: u64 = seq
                    .parse()
                    .map_err(|_| refused(format!("SEQ must be a whole number, not {seq:?}")))?;
                let head = serde_json::from_value(serde_json::json!({ "seq": seq, "hash": hash }))
                    .expect("a head is a seq and a hash");
                (head, Box::new(refused))
            }
        };
    if head.hash.len() != 64 || !head.hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(refused(format!(
            "hash must be 64 hex digits (as `ledger head` prints it), not {:?}",
            head.hash
        ))
        .into());
    }
    Ok(Some(head))
}

/// `verify --export FILE`: the export checked alone, without a ledger.
fn verify_export(
    cli: &Cli,
    file: &Path,
    kept: Option<&execution_ledger::Head>,
    out: &mut Out,
) -> Result<()> {
    let read: Box<dyn std::io::Read> = if file == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(file)
                .map_err(|e| Usage(format!("--export {}: {e}", file.display())))?,
        )
    };
    match execution_ledger::verify_export(std::io::BufReader::new(read), kept) {
        Ok(report) => {
            if cli.json {
                let mut v = serde_json::to_value(&report)?;
                v["ok"] = true.into();
                json_line(out, &v)?;
            } else {
                writeln!(
                    out,
                    "ok: the export's {} events of {} executions verified; hash chain intact from the genesis to seq {} ({})",
                    report.events, report.executions, report.head.seq, report.head.hash
                )?;
                if let Some(k) = &report.reaches {
                    writeln!(
                        out,
                        "ok: the export leads to seq {} ({}) kept elsewhere",
                        k.seq, k.hash
                    )?;
                }
            }
            Ok(())
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
            Err(Exit(1).into())
        }
    }
}

/// `import FILE`: a new ledger built from an export, then verified. A
/// data directory the import created is removed again when it fails.
fn import(
    cli: &Cli,
    file: &Path,
    kept: Option<&execution_ledger::Head>,
    out: &mut Out,
) -> Result<()> {
    // Read twice (checked whole, then imported): standard input is held.
    let export = if file == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)?;
        Err(std::io::Cursor::new(bytes))
    } else {
        let read = std::fs::File::open(file)
            .map_err(|e| Usage(format!("FILE {}: {e}", file.display())))?;
        Ok(std::io::BufReader::new(read))
    };
    let created = cli.dir().filter(|dir| !dir.exists());
    let result = (|| {
        // The records are synced once, at the end.
        let builder = cli
            .builder()
            .create(true)
            .durability(execution_ledger::Durability::Buffered);
        let ledger = crate::backend::open_with(builder)?;
        let imported = match export {
            Ok(file) => ledger.import(file, kept)?,
            Err(held) => ledger.import(held, kept)?,
        };
        let bar = Bar::new("verifying");
        let verified = ledger.verify_with_progress(|seq, head| bar.update(seq, head));
        bar.finish();
        anyhow::Ok((imported, verified?))
    })();
    let (imported, verified) = match result {
        Ok(done) => done,
        Err(e) => {
            if let Some(dir) = created {
                // Nothing of a failed import stays behind.
                let _ = std::fs::remove_dir_all(dir);
            }
            return Err(e);
        }
    };
    if cli.json {
        return json_line(
            out,
            &serde_json::json!({ "imported": imported, "verified": verified }),
        );
    }
    writeln!(
        out,
        "imported: {} events of {} executions; the ledger's head is the export's, seq {} ({})",
        imported.events, imported.executions, imported.head.seq, imported.head.hash
    )?;
    if let Some(k) = &imported.reaches {
        writeln!(
            out,
            "ok: the export leads to seq {} ({}) kept elsewhere",
            k.seq, k.hash
        )?;
    }
    writeln!(
        out,
        "ok: {} events of {} executions verified; hash chain intact to seq {} ({}); {} snapshots and the index match the log",
        verified.events, verified.executions, verified.head.seq, verified.head.hash, verified.snapshots
    )?;
    Ok(())
}

/// The submissions in `file` (`-`: standard input), one JSON object a
/// line; blank lines are skipped. A bad line is a usage error naming it.
fn submissions_in(file: &std::path::Path) -> Result<Vec<Submission>> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| Usage(format!("cannot read standard input: {e}")))?
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| Usage(format!("cannot read {}: {e}", file.display())))?
    };
    let mut submissions = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let what = if file.as_os_str() == "-" {
            format!("standard input line {}", n + 1)
        } else {
            format!("{} line {}", file.display(), n + 1)
        };
        let read = crate::decode::json_object(line.as_bytes(), &what)
            .and_then(|doc| crate::decode::value::<Submission>(&doc));
        submissions.push(read.map_err(|e| match e.kind {
            crate::decode::RefusedKind::Syntax => Usage(e.message),
            _ => Usage(format!("{what}: {}", e.message)),
        })?);
    }
    Ok(submissions)
}

fn submission(args: &SubmitArgs) -> Result<Submission> {
    let callable = args
        .callable
        .clone()
        .ok_or_else(|| Usage("submit needs --callable or --from-file".into()))?;
    let mut s = Submission::new(callable);
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

/// What a redaction or hold did: `ID redacted (completed)`.
fn retained(out: &mut Out, json: bool, e: &BackgroundExecution, done: &str) -> Result<()> {
    if json {
        return json_line(out, e);
    }
    let hold = if e.legal_hold {
        ", under legal hold"
    } else {
        ""
    };
    writeln!(out, "{} {done} ({}{hold})", e.execution_id, e.status)?;
    Ok(())
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

/// Who asks for a redaction or hold: `--by`, else the user running the
/// command (`$USER`), else nobody named.
/// `ledger schedule …`.
fn schedule(cli: &Cli, backend: &Backend, action: &ScheduleAction, out: &mut Out) -> Result<()> {
    use crate::backend::ScheduleChange;
    let now = chrono::Utc::now();
    let changed = match action {
        ScheduleAction::Add {
            name,
            cron,
            timezone,
            missed,
            by,
            submit,
        } => {
            let missed: execution_ledger::Missed = missed.parse().map_err(fail)?;
            let mut new = NewSchedule::new(name.clone(), cron.clone(), submission(submit)?)
                .timezone(timezone.clone())
                .missed(missed);
            if let Some(by) = by_or_user(by) {
                new = new.by(by);
            }
            let added = backend.add_schedule(new)?;
            if cli.json {
                return json_line(out, &added);
            }
            let next = added.next_slots(now, 3).map_err(fail)?;
            let next: Vec<String> = next.iter().map(output::time).collect();
            writeln!(
                out,
                "added schedule {} for {}: {} ({}), missed slots: {}; next {}",
                added.name,
                added.tenant_id,
                added.cron,
                added.timezone,
                added.missed.as_str(),
                next.join(", ")
            )?;
            return Ok(());
        }
        ScheduleAction::List => {
            let schedules = backend.schedules()?;
            if cli.json {
                for s in &schedules {
                    json_line(out, s)?;
                }
                return Ok(());
            }
            let mut table = Table::new(&[
                "TENANT",
                "NAME",
                "CRON",
                "TIMEZONE",
                "CALLABLE",
                "MISSED",
                "STATE",
                "NEXT",
                "LAST FIRED",
            ]);
            for s in &schedules {
                let next = match s.paused {
                    true => "-".to_owned(),
                    false => s
                        .next_slots(s.cursor.max(now), 1)
                        .map_err(fail)?
                        .first()
                        .map_or("-".to_owned(), output::time),
                };
                let last = s.last_fired.as_ref().map_or("-".to_owned(), |l| {
                    format!("{} {}", output::time(&l.slot), l.execution_id)
                });
                table.row(vec![
                    s.tenant_id.to_string(),
                    s.name.clone(),
                    s.cron.clone(),
                    s.timezone.clone(),
                    s.submission.callable_name.clone(),
                    s.missed.as_str().to_owned(),
                    if s.paused { "paused" } else { "active" }.to_owned(),
                    next,
                    last,
                ]);
            }
            table.write(out)?;
            return Ok(());
        }
        ScheduleAction::Remove { name } => (
            "removed",
            backend.change_schedule(name, ScheduleChange::Remove)?,
        ),
        ScheduleAction::Pause { name } => (
            "paused",
            backend.change_schedule(name, ScheduleChange::Pause)?,
        ),
        ScheduleAction::Resume { name } => (
            "resumed",
            backend.change_schedule(name, ScheduleChange::Resume)?,
        ),
    };
    let (done, s) = changed;
    if cli.json {
        json_line(out, &s)
    } else {
        writeln!(out, "{done} schedule {} of {}", s.name, s.tenant_id)?;
        Ok(())
    }
}

fn by_or_user(by: &Option<String>) -> Option<String> {
    by.clone()
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
}
