//! Human output: tables, records, events, progress bars.

use std::io::{IsTerminal, Write};

use chrono::{DateTime, SecondsFormat, Utc};
use execution_ledger::{BackgroundExecution, Event, EventKind};
use indicatif::{ProgressBar, ProgressStyle};

/// Rows printed with aligned columns.
pub(crate) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&'static str]) -> Self {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let last = cells.len().saturating_sub(1);
            let mut s = String::new();
            for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                if i == last {
                    s.push_str(cell);
                } else {
                    s.push_str(&format!("{cell:<w$}  "));
                }
            }
            s.trim_end().to_owned()
        };
        writeln!(out, "{}", line(self.header.clone()))?;
        for row in &self.rows {
            writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
        }
        Ok(())
    }
}

pub(crate) fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn opt_time(t: &Option<DateTime<Utc>>) -> String {
    t.as_ref().map_or_else(|| "-".to_owned(), time)
}

/// What an event says beyond its kind, in a few words.
pub(crate) fn detail(event: &Event) -> String {
    match &event.kind {
        EventKind::Queued(s) => {
            let mut d = format!(
                "{} priority {} {}",
                s.callable_name, s.config.priority, s.config.mode
            );
            if let Some(input) = &s.input {
                d.push_str(&format!(" input {}", clip(input, 40)));
            }
            if let Some(retry) = &s.config.retry {
                d.push_str(&format!(" max-attempts {}", retry.max_attempts));
            }
            if let Some(at) = &s.run_at {
                d.push_str(&format!(" run-at {}", time(at)));
            }
            if let Some(original) = &s.retry_of {
                d.push_str(&format!(" retry-of {original}"));
            }
            if let Some(slot) = &s.schedule {
                d.push_str(&format!(
                    " schedule {} slot {}",
                    slot.name,
                    time(&slot.slot)
                ));
                if slot.missed > 0 {
                    d.push_str(&format!(" ({} missed before)", slot.missed));
                }
            }
            d
        }
        EventKind::Retried {
            by,
            reason,
            new_execution_id,
            attempts,
        } => {
            let mut d = format!("as {new_execution_id} with {attempts} attempt(s)");
            if let Some(reason) = reason {
                d.push_str(&format!(": {reason}"));
            }
            if let Some(by) = by {
                d.push_str(&format!(" (by {by})"));
            }
            d
        }
        EventKind::Released => String::new(),
        EventKind::Started {
            attempt,
            worker,
            lease_ms,
        } => {
            let mut d = format!("attempt {attempt}");
            if let Some(w) = worker {
                d.push_str(&format!(" by {w}"));
            }
            if let Some(ms) = lease_ms {
                d.push_str(&format!(", lease {ms} ms"));
            }
            d
        }
        EventKind::Completed { attempt, output } => {
            format!("attempt {attempt} output {}", clip(&output.to_string(), 60))
        }
        EventKind::Failed { attempt, error } => format!("attempt {attempt} {error}"),
        EventKind::RetryScheduled {
            attempt,
            error,
            not_before,
        } => format!(
            "attempt {attempt} {error}; next not before {}",
            time(not_before)
        ),
        EventKind::TimedOut { attempt } => format!("attempt {attempt}"),
        EventKind::Cancelled { reason } => reason.clone().unwrap_or_default(),
        EventKind::Redacted { by, reason }
        | EventKind::LegalHold { by, reason }
        | EventKind::LegalHoldReleased { by, reason } => match by {
            Some(by) => format!("{reason} (by {by})"),
            None => reason.clone(),
        },
        EventKind::Recovered {
            attempt,
            outcome,
            reason,
        } => match reason {
            Some(why) => format!("attempt {attempt} lost ({why}); now {outcome}"),
            None => format!("attempt {attempt} lost; now {outcome}"),
        },
        EventKind::TargetBindingApplied { target, error } => match error {
            None => target.clone(),
            Some(e) => format!("{target} failed: {e}"),
        },
        EventKind::CallbackDelivered {
            attempt,
            status_code,
        } => format!("attempt {attempt} HTTP {status_code}"),
        EventKind::CallbackFailed {
            attempt,
            status_code,
            error,
        } => match status_code {
            Some(code) => format!("attempt {attempt} HTTP {code}: {error}"),
            None => format!("attempt {attempt}: {error}"),
        },
        // A kind with nothing more to say than its name.
        _ => String::new(),
    }
}

/// The statuses' names, for messages: `queued, running, …`.
/// What a retention pass did, in a line.
pub(crate) fn retention(r: &execution_ledger::RetentionReport) -> String {
    // A policy that only archives looks at none to redact.
    if let (Some(a), 0) = (&r.archive, r.examined) {
        return archived(a, r.dry_run);
    }
    let verb = if r.dry_run {
        "would redact"
    } else {
        "redacted"
    };
    let count = if r.dry_run {
        r.due - r.held
    } else {
        r.redacted
    };
    let mut line = format!(
        "{verb} {count} of {} settled executions looked at ({} due, {} kept under legal hold, {} redacted before",
        r.examined, r.due, r.held, r.already
    );
    if r.unredactable > 0 {
        line.push_str(&format!(
            ", {} recorded before payloads could be redacted",
            r.unredactable
        ));
    }
    line.push(')');
    if r.stopped {
        line.push_str("; stopped before the end");
    }
    if let Some(a) = &r.archive {
        line.push_str("; ");
        line.push_str(&archived(a, r.dry_run));
    }
    line
}

/// `n` and `what`, plural unless one.
pub(crate) fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// What an archive pass did, in a line.
fn archived(a: &execution_ledger::ArchiveReport, dry_run: bool) -> String {
    let mut line = match (a.executions, dry_run) {
        (0, true) => format!(
            "would archive nothing (the archive ends at seq {})",
            a.before
        ),
        (0, false) => format!("archived nothing (the archive ends at seq {})", a.before),
        (n, true) => format!(
            "would archive {} ({} events, seqs {} to {})",
            plural(n, "settled execution"),
            a.events,
            a.before + 1,
            a.through
        ),
        (n, false) => format!(
            "archived {} ({} events, seqs {} to {}) into {}",
            plural(n, "settled execution"),
            a.events,
            a.before + 1,
            a.through,
            a.segment.as_deref().unwrap_or("the archive")
        ),
    };
    if let Some(kept) = &a.kept_by {
        line.push_str(&format!("; the live log keeps from {kept}"));
    }
    line
}

pub(crate) fn statuses() -> String {
    execution_ledger::BackgroundExecutionStatus::ALL
        .map(|s| s.as_str())
        .join(", ")
}

pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let cut: String = s.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// The events as a table, with the execution column when `with_execution`.
pub(crate) fn events_table(events: &[Event], with_execution: bool) -> Table {
    let mut table = if with_execution {
        Table::new(&["SEQ", "AT", "EXECUTION", "TENANT", "TYPE", "DETAIL"])
    } else {
        Table::new(&["SEQ", "AT", "TYPE", "DETAIL"])
    };
    for e in events {
        let mut row = vec![e.seq.to_string(), time(&e.at)];
        if with_execution {
            row.push(e.execution_id.to_string());
            row.push(e.tenant_id.to_string());
        }
        row.push(e.kind.name().to_owned());
        row.push(detail(e));
        table.row(row);
    }
    table
}

/// The tenants under legal hold (a line saying so when none is).
pub(crate) fn tenant_holds(
    out: &mut impl std::io::Write,
    holds: &[execution_ledger::TenantHold],
) -> std::io::Result<()> {
    if holds.is_empty() {
        return writeln!(out, "no tenant is under legal hold");
    }
    let mut table = Table::new(&["TENANT", "SINCE", "BY", "REASON"]);
    for h in holds {
        table.row(vec![
            h.tenant.to_string(),
            time(&h.at),
            h.by.clone().unwrap_or_else(|| "-".to_owned()),
            h.reason.clone(),
        ]);
    }
    table.write(out)
}

/// A tenant's share, in words: "weight 3, at most 2 running".
pub(crate) fn share(share: &crate::backend::ShareOf) -> String {
    match share.limit {
        Some(limit) => format!("weight {}, at most {limit} running", share.weight),
        None => format!("weight {}, no limit", share.weight),
    }
}

/// The tenants' shares.
pub(crate) fn shares(
    out: &mut impl std::io::Write,
    shares: &[crate::backend::ShareOf],
) -> std::io::Result<()> {
    if shares.is_empty() {
        return writeln!(out, "every tenant has weight 1 and no limit");
    }
    let mut table = Table::new(&["TENANT", "WEIGHT", "LIMIT", "RUNNING"]);
    for s in shares {
        table.row(vec![
            s.tenant.to_string(),
            s.weight.to_string(),
            s.limit.map_or_else(|| "-".to_owned(), |l| l.to_string()),
            s.running.to_string(),
        ]);
    }
    table.write(out)?;
    writeln!(out, "(any other tenant: weight 1, no limit)")
}

/// Runnable executions in claim order.
pub(crate) fn queue_table(queue: &[&BackgroundExecution]) -> Table {
    let mut table = Table::new(&[
        "#",
        "EXECUTION",
        "TENANT",
        "CALLABLE",
        "PRIORITY",
        "ATTEMPT",
        "QUEUED AT",
    ]);
    for (i, e) in queue.iter().enumerate() {
        table.row(vec![
            (i + 1).to_string(),
            e.execution_id.to_string(),
            e.tenant_id.to_string(),
            e.callable_name.clone(),
            e.config.priority.to_string(),
            e.attempt.to_string(),
            time(&e.queued_at),
        ]);
    }
    table
}

/// Executions as a listing shows them, newest first.
pub(crate) fn list_table(executions: &[BackgroundExecution]) -> Table {
    let mut table = Table::new(&[
        "EXECUTION",
        "TENANT",
        "CALLABLE",
        "STATUS",
        "ATTEMPT",
        "QUEUED AT",
    ]);
    for e in executions {
        table.row(vec![
            e.execution_id.to_string(),
            e.tenant_id.to_string(),
            e.callable_name.clone(),
            e.status.to_string(),
            e.attempt.to_string(),
            time(&e.queued_at),
        ]);
    }
    table
}

/// One execution as `key  value` lines.
pub(crate) fn record(out: &mut impl Write, e: &BackgroundExecution) -> std::io::Result<()> {
    let mut rows: Vec<(&str, String)> = vec![
        ("execution", e.execution_id.to_string()),
        ("tenant", e.tenant_id.to_string()),
        ("callable", e.callable_name.clone()),
        ("status", e.status.to_string()),
        ("mode", e.config.mode.to_string()),
        ("priority", e.config.priority.to_string()),
        ("timeout", format!("{} ms", e.config.timeout_ms)),
        (
            "attempt",
            format!("{} of {}", e.attempt, e.config.max_attempts()),
        ),
        ("queued at", time(&e.queued_at)),
        ("started at", opt_time(&e.started_at)),
        ("completed at", opt_time(&e.completed_at)),
    ];
    if let Some(ms) = e.duration_ms() {
        rows.push(("duration", format!("{ms} ms")));
    }
    if let Some(t) = &e.not_before {
        rows.push(("not before", time(t)));
    }
    if let Some(input) = &e.input {
        rows.push(("input", clip(input, 200)));
    }
    if let Some(ctx) = &e.context {
        let mut pairs: Vec<_> = ctx.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pairs.sort();
        rows.push(("context", pairs.join(" ")));
    }
    if let Some(output) = &e.output {
        rows.push(("output", clip(&output.to_string(), 200)));
    }
    if let Some(error) = &e.error {
        rows.push(("error", error.to_string()));
    }
    if let Some(b) = &e.config.target_binding {
        let state = if e.target_binding_applied {
            "applied".to_owned()
        } else if let Some(err) = &e.target_binding_error {
            format!("failed: {err}")
        } else {
            "pending".to_owned()
        };
        rows.push(("binding", format!("{} ({state})", b.target)));
    }
    if let Some(url) = &e.config.callback_url {
        let state = if e.callback_delivered {
            "delivered"
        } else {
            "not delivered"
        };
        rows.push((
            "callback",
            format!("{url} ({state}, {} attempts)", e.callback_attempts),
        ));
    }
    if let Some(key) = &e.idempotency_key {
        rows.push(("idempotency key", key.clone()));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        writeln!(out, "{k:<width$}  {v}")?;
    }
    Ok(())
}

/// A progress bar with rate and ETA on a terminal; nothing otherwise.
pub(crate) struct Bar(Option<ProgressBar>);

impl Bar {
    pub(crate) fn new(what: &str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let bar = ProgressBar::hidden();
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{what} {{bar:40}} {{pos}}/{{len}} events, {{per_sec}}, eta {{eta}}"
            ))
            .expect("a valid template"),
        );
        Bar(Some(bar))
    }

    pub(crate) fn update(&self, pos: u64, len: u64) {
        if let Some(bar) = &self.0 {
            if bar.is_hidden() && len >= 20_000 {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            }
            bar.set_length(len);
            bar.set_position(pos);
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }

    /// A spinner for work of no known length, told what it has done so far.
    pub(crate) fn spinner(what: &str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template(&format!("{{spinner}} {what} {{msg}}"))
                .expect("a valid template"),
        );
        Bar(Some(bar))
    }

    /// What a spinner's work has done so far.
    pub(crate) fn say(&self, msg: String) {
        if let Some(bar) = &self.0 {
            bar.set_message(msg);
            bar.tick();
        }
    }
}

/// What a bulk retry did (or, in a dry run, would do), one line per
/// execution and a count.
pub(crate) fn retry_report(
    out: &mut dyn std::io::Write,
    report: &execution_ledger::RetryReport,
) -> std::io::Result<()> {
    for r in &report.retried {
        match r.new_execution_id {
            Some(new) => writeln!(out, "retried {} as {new}", r.execution_id)?,
            None => writeln!(out, "would retry {}", r.execution_id)?,
        }
    }
    for r in &report.refused {
        writeln!(out, "not retried {}: {}", r.execution_id, r.reason)?;
    }
    if report.dry_run {
        writeln!(
            out,
            "dry run: {} execution(s) would be retried; nothing was appended",
            report.matched
        )
    } else {
        writeln!(
            out,
            "retried {} of {} matched ({} refused)",
            report.retried.len(),
            report.matched,
            report.refused.len()
        )
    }
}

/// Who paused and why, as `, by WHO: WHY` (what of it was recorded).
pub(crate) fn why(p: &execution_ledger::Pause) -> String {
    match (&p.by, &p.reason) {
        (Some(by), Some(reason)) => format!(", by {by}: {reason}"),
        (Some(by), None) => format!(", by {by}"),
        (None, Some(reason)) => format!(": {reason}"),
        (None, None) => String::new(),
    }
}

/// `ledger pauses`: a table of the pauses in force.
pub(crate) fn pauses(
    out: &mut impl std::io::Write,
    pauses: &[execution_ledger::Pause],
) -> std::io::Result<()> {
    if pauses.is_empty() {
        return writeln!(out, "nothing is paused");
    }
    let mut t = Table::new(&["PAUSED", "SINCE SEQ", "SINCE", "BY", "REASON"]);
    for p in pauses {
        t.row(vec![
            p.scope.to_string(),
            p.since_seq.to_string(),
            p.since.to_rfc3339_opts(SecondsFormat::Millis, true),
            p.by.clone().unwrap_or_else(|| "-".into()),
            p.reason.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    t.write(out)
}
