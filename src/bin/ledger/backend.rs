//! Where a command's ledger is: open in this process, or served by a
//! `ledger serve` process that owns the data directory (sled lets one
//! process own it), reached over its HTTP API with the same results. The
//! serving process names itself in `serve.json` in the data directory.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use anyhow::{anyhow, Result};
use execution_ledger::{
    At, BackgroundExecution, Change, CommandError, Cursor, Entry, ErrorKind, Event, ExecutionId,
    Head, IndexRebuild, Ledger, LedgerBuilder, ListFilter, NewSchedule, Pause, PauseScope,
    Schedule, Stats, Submission, TenantId, TenantShare, VerifyReport,
};
use serde::{Deserialize, Serialize};

use crate::cli::{Cli, Command, Usage};

/// The file in the data directory that names a serving process.
pub(crate) const SERVE_FILE: &str = "serve.json";

/// What `serve.json` holds while a ledger is served.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Served {
    pub(crate) url: String,
    pub(crate) pid: u32,
}

/// A ledger error as the CLI reports it: usage errors exit 2.
pub(crate) fn fail(e: CommandError) -> anyhow::Error {
    match e {
        CommandError::Invalid(m) => Usage(m).into(),
        other => other.into(),
    }
}

/// What `ledger schedule remove|pause|resume` (and `DELETE
/// /v1/schedules/{name}`, `…/pause`, `…/resume`) does.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ScheduleChange {
    Remove,
    Pause,
    Resume,
}

impl ScheduleChange {
    /// The ledger command that makes it to `tenant`'s schedule `name`.
    pub(crate) fn on(
        self,
        ledger: &Ledger,
        tenant: &TenantId,
        name: &str,
    ) -> execution_ledger::Command<Schedule> {
        let tenant = Some(tenant);
        match self {
            ScheduleChange::Remove => ledger.remove_schedule(tenant, name),
            ScheduleChange::Pause => ledger.pause_schedule(tenant, name),
            ScheduleChange::Resume => ledger.resume_schedule(tenant, name),
        }
    }
}

/// The tenant a local submit is for: the one `--tenant` scoped the ledger to.
fn submitting_for(l: &Ledger) -> Result<&TenantId> {
    l.scope()
        .ok_or_else(|| Usage("submit needs --tenant".into()).into())
}

/// How a point in the log reads in messages.
pub(crate) fn describe(at: At) -> String {
    match at {
        At::Seq(n) => format!("seq {n}"),
        At::Time(t) => crate::output::time(&t),
    }
}

/// The message for an execution that did not exist yet at a point.
pub(crate) fn not_yet(id: ExecutionId, at: At) -> String {
    format!("{id} did not exist yet at {}", describe(at))
}

/// What `verify` found, as `POST /v1/verify` answers it (the document
/// `ledger verify --json` prints).
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Verdict {
    Intact {
        ok: bool,
        report: VerifyReport,
    },
    Broken {
        ok: bool,
        seq: Option<u64>,
        error: String,
    },
}

impl From<Result<VerifyReport, execution_ledger::StorageError>> for Verdict {
    fn from(result: Result<VerifyReport, execution_ledger::StorageError>) -> Self {
        match result {
            Ok(report) => Verdict::Intact { ok: true, report },
            Err(e) => Verdict::Broken {
                ok: false,
                seq: e.seq(),
                error: e.to_string(),
            },
        }
    }
}

/// A refusal by the server other than a bad request (exit 1).
#[derive(Debug)]
pub(crate) struct Refusal {
    status: reqwest::StatusCode,
    message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refusal {}

/// A command's ledger, as `--tenant` (when given) sees it: other tenants'
/// executions are not found, the queue is the tenant's, and what spans
/// the whole log shows only the tenant's records.
pub(crate) enum Backend {
    /// Open in this process; scoped to `--tenant` when given, so the
    /// ledger itself scopes commands and reads of one execution.
    Local(Ledger),
    /// Served: the server scopes by the API key's tenant, which need not
    /// be `--tenant`'s, so what it answers is checked against `--tenant`.
    Remote(Remote),
}

impl Backend {
    /// The ledger of `--server`, else the data directory's (through its
    /// server when a `ledger serve` process holds it). Of the commands that
    /// come here only `submit` creates a ledger; the others answer "no
    /// ledger at DIR" and create nothing.
    pub(crate) fn connect(cli: &Cli) -> Result<Backend> {
        if let (Some(_), Some(_)) = (&cli.server, &cli.archive) {
            return Err(Usage(
                "--archive names the archive of a ledger opened here; a server reads its own (ledger serve --archive DIR)".into(),
            )
            .into());
        }
        if let Some(url) = &cli.server {
            return Ok(Backend::Remote(Remote::new(
                url,
                cli.api_key.clone(),
                cli.tenant.clone(),
            )));
        }
        let creates = matches!(cli.command, Command::Submit(_));
        let accepts = matches!(
            cli.command,
            Command::Verify {
                accept_tail: true,
                ..
            }
        );
        let builder = cli.builder().create(creates).accept_tail(accepts);
        match open_with(builder) {
            Ok(ledger) => Ok(Backend::Local(match &cli.tenant {
                Some(t) => ledger.tenant(t.clone()),
                None => ledger,
            })),
            Err(e) => {
                let locked = e
                    .downcast_ref::<execution_ledger::StorageError>()
                    .is_some_and(|e| e.kind() == ErrorKind::Locked);
                let served = cli
                    .dir()
                    .and_then(|dir| std::fs::read(dir.join(SERVE_FILE)).ok())
                    .and_then(|b| serde_json::from_slice::<Served>(&b).ok());
                match (locked, served) {
                    (true, Some(_)) if cli.archive.is_some() => Err(Usage(
                        "--archive names the archive of a ledger opened here, and ledger serve holds this one (it reads its own: ledger serve --archive DIR)".into(),
                    )
                    .into()),
                    (true, Some(served)) => Ok(Backend::Remote(
                        Remote::new(&served.url, cli.api_key.clone(), cli.tenant.clone())
                            .served_by(served.pid),
                    )),
                    _ => Err(e),
                }
            }
        }
    }

    /// The tenant `--tenant` names, if any.
    fn scope(&self) -> Option<&TenantId> {
        match self {
            Backend::Local(l) => l.scope(),
            Backend::Remote(r) => r.scope.as_ref(),
        }
    }

    /// Whether a record of `tenant`'s is shown: every tenant's without
    /// `--tenant`. The one check of the tenant where the ledger does not
    /// make it: what spans the whole log (events, export, diff), and what
    /// a server answered.
    pub(crate) fn shows(&self, tenant: &TenantId) -> bool {
        self.scope().is_none_or(|t| t == tenant)
    }

    /// Refuses what a server answered of execution `id` (owned by
    /// `owner`) when it is another tenant's than `--tenant`'s: not found.
    fn served(&self, id: ExecutionId, owner: Option<&TenantId>) -> Result<()> {
        match owner {
            Some(t) if !self.shows(t) => Err(fail(CommandError::NotFound(id))),
            _ => Ok(()),
        }
    }

    /// Claims the next runnable execution (of `callables` when named) for
    /// `worker`, under a lease of `lease_ms` when given (through a server:
    /// always, 30 s by default).
    pub(crate) fn claim(
        &self,
        worker: &str,
        callables: &[String],
        lease_ms: Option<u64>,
    ) -> Result<Option<BackgroundExecution>> {
        match self {
            Backend::Local(l) => {
                let mut claim = execution_ledger::Claim::new().worker(worker);
                if !callables.is_empty() {
                    claim = claim.callables(callables.iter().cloned());
                }
                if let Some(ms) = lease_ms {
                    claim = claim.lease(Duration::from_millis(ms));
                }
                Ok(l.claim_with(claim).wait().map_err(fail)?.pop())
            }
            Backend::Remote(r) => {
                if callables.is_empty() {
                    return Err(Usage(
                        "claim through a server needs --callable NAME: a worker claims the callables it runs".into(),
                    )
                    .into());
                }
                let mut body =
                    serde_json::json!({"worker": worker, "callables": callables, "max": 1});
                if let Some(ms) = lease_ms {
                    body["leaseMs"] = ms.into();
                }
                let v: serde_json::Value =
                    r.call(r.client.post(r.url("/v1/workers/claim")).json(&body))?;
                let mut attempts: Vec<BackgroundExecution> =
                    serde_json::from_value(v["attempts"].clone())?;
                Ok(attempts.pop())
            }
        }
    }

    /// The running attempt of `id`, for `command` (which records `event`):
    /// refused as the ledger refuses it when `id` is not running.
    fn running_attempt(
        &self,
        id: ExecutionId,
        command: &'static str,
        event: &'static str,
    ) -> Result<u32> {
        let e = self.get(id, None)?;
        if e.status == execution_ledger::BackgroundExecutionStatus::Running {
            return Ok(e.attempt);
        }
        Err(fail(CommandError::Transition(
            execution_ledger::TransitionError {
                execution: id,
                command,
                event,
                refusal: execution_ledger::Refusal::Status(e.status),
            },
        )))
    }

    /// Completes the running attempt of `id` with `output`.
    pub(crate) fn complete(
        &self,
        id: ExecutionId,
        output: serde_json::Value,
    ) -> Result<BackgroundExecution> {
        let attempt = self.running_attempt(id, "complete", "completed")?;
        match self {
            Backend::Local(l) => l.complete(id, attempt, output).wait().map_err(fail),
            Backend::Remote(r) => r.call(
                r.client
                    .post(r.url(&format!("/v1/executions/{id}/attempts/{attempt}/complete")))
                    .json(&serde_json::json!({ "output": output })),
            ),
        }
    }

    /// Fails the running attempt of `id` with `error`, retried by its
    /// policy.
    pub(crate) fn fail(
        &self,
        id: ExecutionId,
        error: execution_ledger::ExecutionError,
    ) -> Result<BackgroundExecution> {
        let attempt = self.running_attempt(id, "fail", "failed")?;
        match self {
            Backend::Local(l) => l.fail(id, attempt, error).wait().map_err(fail),
            Backend::Remote(r) => r.call(
                r.client
                    .post(r.url(&format!("/v1/executions/{id}/attempts/{attempt}/fail")))
                    .json(&serde_json::json!({ "error": error, "retryable": true })),
            ),
        }
    }

    /// The ledger itself, for what only a ledger opened in this process
    /// does (`verify --accept-tail`).
    pub(crate) fn local(&self, command: &str) -> Result<&Ledger> {
        match self {
            Backend::Local(l) => Ok(l),
            Backend::Remote(Remote {
                base,
                pid: Some(pid),
                ..
            }) => Err(anyhow!(
                "ledger {command} cannot run while ledger serve holds the data directory (pid {pid}, {base}); stop the server to {command}"
            )),
            Backend::Remote(r) => Err(anyhow!(
                "ledger {command} cannot run through the ledger server at {}; run it on the data directory with the server stopped",
                r.base
            )),
        }
    }

    /// Submits for `--tenant`; without it, a server decides the tenant
    /// from the API key (a tenant key's own tenant).
    pub(crate) fn submit(&self, s: Submission) -> Result<BackgroundExecution> {
        match self {
            Backend::Local(l) => {
                let submitted = l.submit(submitting_for(l)?, s).wait().map_err(fail)?;
                Ok(submitted.execution)
            }
            Backend::Remote(r) => {
                let body = r.for_tenant(serde_json::to_value(&s)?);
                r.call(r.client.post(r.url("/v1/executions")).json(&body))
            }
        }
    }

    /// Submits several as one batch (all or none); the records in order.
    pub(crate) fn submit_many(
        &self,
        submissions: Vec<Submission>,
    ) -> Result<Vec<BackgroundExecution>> {
        match self {
            Backend::Local(l) => {
                let submitted = l
                    .submit_many(submitting_for(l)?, submissions)
                    .wait()
                    .map_err(fail)?;
                Ok(submitted.into_iter().map(|s| s.execution).collect())
            }
            Backend::Remote(r) => {
                let body = r.for_tenant(serde_json::json!({ "executions": submissions }));
                #[derive(Deserialize)]
                struct Batch {
                    executions: Vec<BackgroundExecution>,
                }
                let batch: Batch =
                    r.call(r.client.post(r.url("/v1/executions/batch")).json(&body))?;
                Ok(batch.executions)
            }
        }
    }

    pub(crate) fn stats(&self) -> Result<Stats> {
        match self {
            Backend::Local(l) => Ok(l.stats()?),
            Backend::Remote(r) => {
                let tenant: Vec<_> = r
                    .scope
                    .iter()
                    .map(|t| ("tenantId", t.to_string()))
                    .collect();
                r.call(r.client.get(r.url("/v1/stats")).query(&tenant))
            }
        }
    }

    /// Applies a retention policy (in the server, when it is served),
    /// telling `progress` how far it got (locally).
    pub(crate) fn apply_retention(
        &self,
        policy: &execution_ledger::RetentionPolicy,
        dry_run: bool,
        mut progress: impl FnMut(&execution_ledger::RetentionReport),
    ) -> Result<execution_ledger::RetentionReport> {
        match self {
            Backend::Local(l) => Ok(l
                .retain(policy, dry_run, |r| {
                    progress(r);
                    std::ops::ControlFlow::Continue(())
                })
                .map_err(fail)?),
            Backend::Remote(r) => {
                // The server applies what it is sent to every tenant its
                // key reaches: scoped by --tenant, only that tenant's part.
                let only = r.scope.as_ref().map(|t| policy.only(t));
                let policy = only.as_ref().unwrap_or(policy);
                r.call(
                    r.client
                        .post(r.url("/v1/retention"))
                        .json(&serde_json::json!({ "policy": policy, "dryRun": dry_run })),
                )
            }
        }
    }

    pub(crate) fn reindex(&self) -> Result<IndexRebuild> {
        match self {
            Backend::Local(l) => Ok(l.rebuild_index()?),
            Backend::Remote(r) => r.call(r.client.post(r.url("/v1/reindex"))),
        }
    }

    /// Checks the whole log (`progress(seq, head)` on the way, locally).
    pub(crate) fn verify(&self, progress: impl FnMut(u64, u64)) -> Result<Verdict> {
        match self {
            Backend::Local(l) => Ok(l.verify_with_progress(progress).into()),
            Backend::Remote(r) => r.call(r.client.post(r.url("/v1/verify"))),
        }
    }

    /// Calls `each` for every entry up to the head as it is now, with its
    /// line of an export (`progress(seq, head)` on the way, locally).
    pub(crate) fn export(
        &self,
        mut progress: impl FnMut(u64, u64),
        each: &mut dyn FnMut(Entry, &[u8]) -> Result<()>,
    ) -> Result<()> {
        match self {
            Backend::Local(l) => {
                let head = l.head().seq;
                for exported in l.export(Some(head)) {
                    let exported = exported?;
                    progress(exported.entry.seq(), head);
                    each(exported.entry, &exported.line)?;
                }
                Ok(())
            }
            Backend::Remote(r) => {
                let response = r.send(r.client.get(r.url("/v1/export")))?;
                for line in BufReader::new(response).lines() {
                    let line = line.map_err(|e| {
                        anyhow!("the export from the server at {} broke off: {e}", r.base)
                    })?;
                    each(serde_json::from_str(&line)?, line.as_bytes())?;
                }
                Ok(())
            }
        }
    }

    pub(crate) fn get(&self, id: ExecutionId, at: Option<At>) -> Result<BackgroundExecution> {
        match (self, at) {
            (Backend::Local(l), None) => l.get(id).map_err(fail),
            (Backend::Local(l), Some(at)) => l
                .execution_at(id, at)
                .map_err(fail)?
                .ok_or_else(|| anyhow!(not_yet(id, at))),
            (Backend::Remote(r), at) => {
                let found: BackgroundExecution = r.call(at_query(
                    r.client.get(r.url(&format!("/v1/executions/{id}"))),
                    at,
                ))?;
                self.served(id, Some(&found.tenant_id))?;
                Ok(found)
            }
        }
    }

    pub(crate) fn history(&self, id: ExecutionId) -> Result<Vec<Event>> {
        match self {
            Backend::Local(l) => l.history(id).map_err(fail),
            Backend::Remote(r) => {
                let events: Vec<Event> =
                    r.call(r.client.get(r.url(&format!("/v1/executions/{id}/events"))))?;
                self.served(id, events.first().map(|e| &e.tenant_id))?;
                Ok(events)
            }
        }
    }

    /// A page of executions, newest first, and the next page's cursor.
    pub(crate) fn list(
        &self,
        filter: &ListFilter,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<(Vec<BackgroundExecution>, Option<String>)> {
        match self {
            Backend::Local(l) => {
                let page = l.list(filter, cursor, limit).map_err(fail)?;
                Ok((page.executions, page.next.map(|c| c.to_string())))
            }
            Backend::Remote(r) => {
                #[derive(serde::Deserialize)]
                #[serde(rename_all = "camelCase")]
                struct Page {
                    executions: Vec<BackgroundExecution>,
                    next_cursor: Option<String>,
                }
                let mut query = vec![("limit", limit.to_string())];
                let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
                if !statuses.is_empty() {
                    query.push(("status", statuses.join(",")));
                }
                let texts = [
                    ("tenantId", r.scope.as_ref().map(|t| t.to_string())),
                    ("callableName", filter.callable.clone()),
                    ("since", filter.since.map(|t| t.to_rfc3339())),
                    ("until", filter.until.map(|t| t.to_rfc3339())),
                    ("id", filter.id.map(|id| id.to_string())),
                    ("cursor", cursor.map(|c| c.to_string())),
                ];
                query.extend(texts.into_iter().filter_map(|(k, v)| Some((k, v?))));
                let mut page: Page = r.call(r.client.get(r.url("/v1/executions")).query(&query))?;
                page.executions.retain(|e| self.shows(&e.tenant_id));
                Ok((page.executions, page.next_cursor))
            }
        }
    }

    /// The runnable executions in claim order, and (locally) how many more
    /// are queued but not runnable.
    pub(crate) fn queue(
        &self,
        at: Option<At>,
    ) -> Result<(Vec<BackgroundExecution>, Option<usize>)> {
        match self {
            Backend::Local(l) => {
                let (queue, waiting) = match at {
                    Some(at) => l.queue_at(at, None).map_err(fail)?,
                    None => (l.queue(None), l.waiting(None).len()),
                };
                Ok((queue, Some(waiting)))
            }
            Backend::Remote(r) => {
                let mut queue: Vec<BackgroundExecution> =
                    r.call(at_query(r.client.get(r.url("/v1/queue")), at))?;
                queue.retain(|e| self.shows(&e.tenant_id));
                Ok((queue, None))
            }
        }
    }

    /// The callables of queued executions that no live worker runs: on a
    /// ledger open here, nobody's (no worker runs while this process holds
    /// the directory); through a server, those its workers do not claim.
    pub(crate) fn callables_without_worker(&self) -> Result<Vec<String>> {
        match self {
            Backend::Local(l) => Ok(l.callables_without_worker()),
            Backend::Remote(r) => {
                let v: serde_json::Value = r.call(r.client.get(r.url("/v1/workers")))?;
                Ok(serde_json::from_value(v["callablesWithoutWorker"].clone())?)
            }
        }
    }

    pub(crate) fn cancel(
        &self,
        id: ExecutionId,
        reason: Option<String>,
    ) -> Result<BackgroundExecution> {
        match self {
            Backend::Local(l) => l.cancel(id, reason).wait().map_err(fail),
            Backend::Remote(r) => {
                // Not another tenant's than --tenant's.
                if self.scope().is_some() {
                    self.get(id, None)?;
                }
                r.call(
                    r.client
                        .post(r.url(&format!("/v1/executions/{id}/cancel")))
                        .json(&serde_json::json!({ "reason": reason })),
                )
            }
        }
    }

    /// Redacts an execution, or puts it under legal hold or releases it.
    /// Puts a whole tenant under legal hold, or releases its hold (`what`:
    /// `Hold` or `ReleaseHold`).
    pub(crate) fn hold_tenant(
        &self,
        tenant: &TenantId,
        what: Retention,
        reason: &str,
        by: Option<String>,
    ) -> Result<execution_ledger::TenantHold> {
        match self {
            Backend::Local(l) => {
                let reason = reason.to_owned();
                match what {
                    Retention::ReleaseHold => l.release_tenant_hold(tenant, reason, by),
                    _ => l.hold_tenant(tenant, reason, by),
                }
                .wait()
                .map_err(fail)
            }
            Backend::Remote(r) => r.call(
                r.client
                    .post(r.url(&format!("/v1/tenants/{tenant}/{}", what.path())))
                    .json(&serde_json::json!({ "reason": reason, "by": by })),
            ),
        }
    }

    /// The tenants under legal hold.
    pub(crate) fn tenant_holds(&self) -> Result<Vec<execution_ledger::TenantHold>> {
        match self {
            Backend::Local(l) => Ok(l.tenant_holds()?),
            Backend::Remote(r) => {
                let page: HoldsPage = r.call(r.client.get(r.url("/v1/holds")))?;
                Ok(page.holds)
            }
        }
    }

    /// Sets `tenant`'s share (`None`: back to weight 1 and no limit).
    pub(crate) fn set_share(
        &self,
        tenant: &TenantId,
        share: Option<TenantShare>,
    ) -> Result<ShareOf> {
        match self {
            Backend::Local(l) => {
                let now = l.set_tenant_share(tenant, share).wait().map_err(fail)?;
                Ok(ShareOf::new(l, tenant.clone(), now))
            }
            Backend::Remote(r) => {
                let url = r.url(&format!("/v1/tenants/{tenant}/share"));
                r.call(match share {
                    Some(share) => r.client.put(url).json(&share),
                    None => r.client.delete(url),
                })
            }
        }
    }

    /// Pauses (`pause`) or resumes the work of `scope`.
    pub(crate) fn pause(
        &self,
        scope: PauseScope,
        reason: Option<String>,
        by: Option<String>,
        pause: bool,
    ) -> Result<Pause> {
        match self {
            Backend::Local(l) => match pause {
                true => l.pause(scope, reason, by),
                false => l.resume(scope, reason, by),
            }
            .wait()
            .map_err(fail),
            Backend::Remote(r) => {
                let path = match pause {
                    true => "/v1/pauses",
                    false => "/v1/pauses/resume",
                };
                let mut body = serde_json::to_value(&scope)?;
                body["reason"] = serde_json::json!(reason);
                body["by"] = serde_json::json!(by);
                r.call(r.client.post(r.url(path)).json(&body))
            }
        }
    }

    /// The pauses in force, now or at `at`.
    pub(crate) fn pauses(&self, at: Option<At>) -> Result<Vec<Pause>> {
        match self {
            Backend::Local(l) => match at {
                Some(at) => l.pauses_at(at).map_err(fail),
                None => Ok(l.pauses()),
            },
            Backend::Remote(r) => {
                let page: PausesPage = r.call(at_query(r.client.get(r.url("/v1/pauses")), at))?;
                Ok(page.pauses)
            }
        }
    }

    /// The shares set for tenants, in tenant order.
    pub(crate) fn shares(&self) -> Result<Vec<ShareOf>> {
        match self {
            Backend::Local(l) => Ok(l
                .tenant_shares()?
                .into_iter()
                .map(|(t, share)| ShareOf::new(l, t, share))
                .collect()),
            Backend::Remote(r) => {
                let page: SharesPage = r.call(r.client.get(r.url("/v1/shares")))?;
                Ok(page.shares)
            }
        }
    }

    pub(crate) fn retain(
        &self,
        id: ExecutionId,
        what: Retention,
        reason: &str,
        by: Option<String>,
    ) -> Result<BackgroundExecution> {
        match self {
            Backend::Local(l) => {
                let reason = reason.to_owned();
                match what {
                    Retention::Redact => l.redact(id, reason, by),
                    Retention::Hold => l.hold(id, reason, by),
                    Retention::ReleaseHold => l.release_hold(id, reason, by),
                }
                .wait()
                .map_err(fail)
            }
            Backend::Remote(r) => {
                // Not another tenant's than --tenant's.
                if self.scope().is_some() {
                    self.get(id, None)?;
                }
                r.call(
                    r.client
                        .post(r.url(&format!("/v1/executions/{id}/{}", what.path())))
                        .json(&serde_json::json!({ "reason": reason, "by": by })),
                )
            }
        }
    }

    /// Retries a failed, timed-out or cancelled execution by hand; answers
    /// the new run.
    pub(crate) fn retry(
        &self,
        id: ExecutionId,
        reason: Option<String>,
        by: Option<String>,
        attempts: Option<u32>,
    ) -> Result<BackgroundExecution> {
        match self {
            Backend::Local(l) => l
                .retry(id, retry_of(reason, by, attempts))
                .wait()
                .map_err(fail),
            Backend::Remote(r) => {
                // Not another tenant's than --tenant's.
                if self.scope().is_some() {
                    self.get(id, None)?;
                }
                r.call(
                    r.client
                        .post(r.url(&format!("/v1/executions/{id}/retry")))
                        .json(&serde_json::json!({
                            "reason": reason, "by": by, "attempts": attempts
                        })),
                )
            }
        }
    }

    /// The schedules (`--tenant`'s, or every tenant's).
    pub(crate) fn schedules(&self) -> Result<Vec<Schedule>> {
        match self {
            Backend::Local(l) => Ok(l.schedules()?),
            Backend::Remote(r) => {
                #[derive(Deserialize)]
                struct Listed {
                    schedules: Vec<Schedule>,
                }
                let tenant: Vec<_> = r
                    .scope
                    .iter()
                    .map(|t| ("tenantId", t.to_string()))
                    .collect();
                let listed: Listed = r.call(r.client.get(r.url("/v1/schedules")).query(&tenant))?;
                Ok(listed.schedules)
            }
        }
    }

    /// Adds a schedule for `--tenant`.
    pub(crate) fn add_schedule(&self, new: NewSchedule) -> Result<Schedule> {
        let tenant = self.scope().cloned().ok_or_else(|| {
            Usage("schedule add needs --tenant: a schedule is one tenant's".into())
        })?;
        match self {
            Backend::Local(l) => l.add_schedule(Some(&tenant), new).wait().map_err(fail),
            Backend::Remote(r) => r.call(r.client.post(r.url("/v1/schedules")).json(
                &serde_json::json!({
                    "name": new.name, "cron": new.cron, "timezone": new.timezone,
                    "missed": new.missed, "by": new.by, "tenantId": tenant,
                    "submission": new.submission,
                }),
            )),
        }
    }

    /// Removes, pauses or resumes one of `--tenant`'s schedules.
    pub(crate) fn change_schedule(&self, name: &str, change: ScheduleChange) -> Result<Schedule> {
        let tenant = self
            .scope()
            .cloned()
            .ok_or_else(|| Usage("schedule needs --tenant: a schedule is one tenant's".into()))?;
        match self {
            Backend::Local(l) => change.on(l, &tenant, name).wait().map_err(fail),
            Backend::Remote(r) => {
                let url = match change {
                    ScheduleChange::Remove => r.url(&format!("/v1/schedules/{name}")),
                    ScheduleChange::Pause => r.url(&format!("/v1/schedules/{name}/pause")),
                    ScheduleChange::Resume => r.url(&format!("/v1/schedules/{name}/resume")),
                };
                let request = match change {
                    ScheduleChange::Remove => r.client.delete(url),
                    _ => r.client.post(url),
                };
                r.call(request.query(&[("tenantId", tenant.to_string())]))
            }
        }
    }

    /// Retries by hand every execution that passes `filter` and can be
    /// retried (with `dry_run`, counts them).
    pub(crate) fn retry_matching(
        &self,
        filter: &ListFilter,
        (reason, by, attempts): (Option<String>, Option<String>, Option<u32>),
        dry_run: bool,
    ) -> Result<execution_ledger::RetryReport> {
        match self {
            Backend::Local(l) => l
                .retry_matching(filter, &retry_of(reason, by, attempts), dry_run)
                .map_err(fail),
            Backend::Remote(r) => {
                let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
                let body = serde_json::json!({
                    "status": (!statuses.is_empty()).then(|| statuses.join(",")),
                    "tenantId": r.scope.as_ref().map(|t| t.to_string()),
                    "callableName": filter.callable,
                    "since": filter.since.map(|t| t.to_rfc3339()),
                    "until": filter.until.map(|t| t.to_rfc3339()),
                    "dryRun": dry_run,
                    "reason": reason,
                    "by": by,
                    "attempts": attempts,
                });
                r.call(r.client.post(r.url("/v1/executions/retry")).json(&body))
            }
        }
    }

    pub(crate) fn release(&self, id: ExecutionId) -> Result<BackgroundExecution> {
        match self {
            Backend::Local(l) => l.release(id).wait().map_err(fail),
            Backend::Remote(r) => {
                // Not another tenant's than --tenant's.
                if self.scope().is_some() {
                    self.get(id, None)?;
                }
                r.call(
                    r.client
                        .post(r.url(&format!("/v1/executions/{id}/release"))),
                )
            }
        }
    }

    pub(crate) fn head(&self) -> Result<Head> {
        match self {
            Backend::Local(l) => Ok(l.head()),
            Backend::Remote(r) => r.call(r.client.get(r.url("/v1/head"))),
        }
    }

    pub(crate) fn diff(&self, from: u64, to: u64) -> Result<Vec<Change>> {
        let changes: Vec<Change> = match self {
            Backend::Local(l) => l.diff(At::Seq(from), At::Seq(to)).map_err(fail)?,
            Backend::Remote(r) => r.call(
                r.client
                    .get(r.url("/v1/diff"))
                    .query(&[("fromSeq", from), ("toSeq", to)]),
            )?,
        };
        Ok(changes
            .into_iter()
            .filter(|c| self.shows(&c.tenant_id))
            .collect())
    }

    /// Calls `each` for the events from `from` through `to` (the head when
    /// `None`), then, when `follow`, for each new one as it comes.
    pub(crate) fn events(
        &self,
        from: u64,
        to: Option<u64>,
        follow: bool,
        each: &mut dyn FnMut(Event) -> Result<()>,
    ) -> Result<()> {
        match self {
            Backend::Local(l) => {
                let head = l.head().seq;
                for event in l.events(from, Some(to.unwrap_or(head))) {
                    each(event?)?;
                }
                if follow {
                    let mut sub = l.subscribe(head + 1);
                    loop {
                        if let Some(event) = sub.next_timeout(Duration::from_secs(1))? {
                            each(event)?;
                        }
                    }
                }
                Ok(())
            }
            Backend::Remote(r) => {
                // Where the stream ends is the head, which a tenant key
                // cannot read (it counts every tenant's events).
                let to = match (to, follow) {
                    (None, false) => Some(self.head().map_err(|e| {
                        match e.downcast_ref::<Refusal>() {
                            Some(r) if r.status == reqwest::StatusCode::FORBIDDEN => Usage(
                                "with a tenant key, `ledger events` through a server needs --to-seq or --follow (the head of the log is for admin keys only)".into(),
                            )
                            .into(),
                            _ => e,
                        }
                    })?.seq),
                    _ => to,
                };
                r.stream(from, to, follow, each)
            }
        }
    }
}

pub(crate) struct Remote {
    base: String,
    key: Option<String>,
    /// `--tenant`.
    scope: Option<TenantId>,
    /// The serving process, when it was found through the data directory.
    pid: Option<u32>,
    client: reqwest::blocking::Client,
}

impl Remote {
    /// A submit's body, with `--tenant` as its `tenantId` when given (else
    /// the server takes the key's tenant).
    fn for_tenant(&self, mut body: serde_json::Value) -> serde_json::Value {
        if let Some(tenant) = &self.scope {
            body["tenantId"] = serde_json::json!(tenant);
        }
        body
    }

    fn new(base: &str, key: Option<String>, scope: Option<TenantId>) -> Remote {
        Remote {
            base: base.trim_end_matches('/').to_owned(),
            key,
            scope,
            pid: None,
            client: reqwest::blocking::Client::builder()
                .timeout(None)
                .build()
                .expect("an HTTP client"),
        }
    }

    fn served_by(self, pid: u32) -> Remote {
        Remote {
            pid: Some(pid),
            ..self
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn send(&self, req: reqwest::blocking::RequestBuilder) -> Result<reqwest::blocking::Response> {
        let req = match &self.key {
            Some(k) => req.bearer_auth(k),
            None => req,
        };
        let response = req.send().map_err(|e| {
            anyhow!(
                "cannot reach the ledger server at {}: {}",
                self.base,
                root_cause(&e)
            )
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("the server answered {status}"));
        if status == reqwest::StatusCode::BAD_REQUEST {
            Err(Usage(message).into())
        } else {
            Err(Refusal { status, message }.into())
        }
    }

    fn call<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::blocking::RequestBuilder,
    ) -> Result<T> {
        Ok(self.send(req)?.json()?)
    }

    /// Reads the server's event stream, resuming with `Last-Event-ID` when
    /// the connection drops (after the server's `retry:`); done at the
    /// `end` event the server sends after `toSeq`, or at a 204 (nothing is
    /// left through `toSeq`).
    fn stream(
        &self,
        from: u64,
        to: Option<u64>,
        follow: bool,
        each: &mut dyn FnMut(Event) -> Result<()>,
    ) -> Result<()> {
        let to = match (to, follow) {
            (Some(to), _) => Some(to),
            (None, true) => None,
            (None, false) => Some(
                self.call::<Head>(self.client.get(self.url("/v1/head")))?
                    .seq,
            ),
        };
        let mut next = from.max(1);
        let mut retry = Duration::from_millis(200);
        loop {
            let mut req = self
                .client
                .get(self.url("/v1/events"))
                .query(&[("fromSeq", next)]);
            if let Some(to) = to {
                req = req.query(&[("toSeq", to)]);
            }
            if next > 1 {
                req = req.header("Last-Event-ID", (next - 1).to_string());
            }
            let response = self.send(req)?;
            if response.status() == reqwest::StatusCode::NO_CONTENT {
                return Ok(());
            }
            let (mut kind, mut data) = (String::new(), String::new());
            for line in BufReader::new(response).lines() {
                let Ok(line) = line else { break };
                if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                } else if let Some(k) = line.strip_prefix("event:") {
                    kind = k.trim().to_owned();
                } else if let Some(ms) = line.strip_prefix("retry:") {
                    if let Ok(ms) = ms.trim().parse() {
                        retry = Duration::from_millis(ms);
                    }
                } else if line.is_empty() {
                    if kind == "end" {
                        return Ok(());
                    }
                    if !data.is_empty() {
                        let event: Event = serde_json::from_str(&data)?;
                        next = event.seq + 1;
                        each(event)?;
                    }
                    kind.clear();
                    data.clear();
                }
            }
            // The stream ended without its end event: the connection
            // dropped. Resume after the last event seen.
            std::thread::sleep(retry);
        }
    }
}

/// `?atSeq=` or `?atTime=` for a point in the log.
fn at_query(
    req: reqwest::blocking::RequestBuilder,
    at: Option<At>,
) -> reqwest::blocking::RequestBuilder {
    match at {
        Some(At::Seq(n)) => req.query(&[("atSeq", n.to_string())]),
        Some(At::Time(t)) => req.query(&[("atTime", t.to_rfc3339())]),
        None => req,
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

/// Opens (creating it when absent) the ledger `cli` names, with a
/// progress bar for a long replay on a terminal.
pub(crate) fn open(cli: &Cli) -> Result<Ledger> {
    open_with(cli.builder())
}

/// Opens the ledger as `builder` says, with a progress bar for a long
/// replay on a terminal. A checkpoint that disagrees with the log is
/// reported with the way to accept the log as it is.
pub(crate) fn open_with(builder: LedgerBuilder) -> Result<Ledger> {
    let bar = crate::output::Bar::new("replaying");
    let ledger = builder.open_with_progress(|seq, last| bar.update(seq, last));
    bar.finish();
    match ledger {
        Ok(ledger) => Ok(ledger),
        Err(e) if matches!(e.kind(), ErrorKind::Checkpoint | ErrorKind::LostSuffix) => Err(
            anyhow!("{e} (`ledger verify --accept-tail` accepts the log as it is)"),
        ),
        Err(e) => Err(e.into()),
    }
}

/// The answer of `GET /v1/pauses`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PausesPage {
    pauses: Vec<Pause>,
}

/// The answer of `GET /v1/holds`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldsPage {
    holds: Vec<execution_ledger::TenantHold>,
}

/// One tenant's share of the workers, as `ledger shares` and `GET
/// /v1/shares` show it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ShareOf {
    /// The tenant.
    pub(crate) tenant: TenantId,
    /// Its weight.
    pub(crate) weight: u32,
    /// Its concurrency limit (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) limit: Option<u32>,
    /// Its attempts running now.
    pub(crate) running: u32,
}

impl ShareOf {
    /// `tenant`'s `share`, with its attempts running now on `ledger`.
    pub(crate) fn new(ledger: &Ledger, tenant: TenantId, share: TenantShare) -> Self {
        ShareOf {
            running: ledger.running(&tenant),
            tenant,
            weight: share.weight,
            limit: share.limit,
        }
    }

    /// Whether its running attempts hold the rest of its work back.
    pub(crate) fn at_limit(&self) -> bool {
        self.limit.is_some_and(|l| self.running >= l)
    }
}

/// The answer of `GET /v1/shares`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SharesPage {
    shares: Vec<ShareOf>,
}

/// What a retention command does to one execution.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Retention {
    /// Redacts its payloads.
    Redact,
    /// Puts it under legal hold.
    Hold,
    /// Releases its legal hold.
    ReleaseHold,
}

impl Retention {
    /// Its route under `/v1/executions/{id}/` (and `/v1/tenants/{tenant}/`
    /// for a tenant's hold).
    pub(crate) fn path(self) -> &'static str {
        match self {
            Retention::Redact => "redact",
            Retention::Hold => "hold",
            Retention::ReleaseHold => "release-hold",
        }
    }
}

/// A retry by hand as the CLI asks for it.
fn retry_of(
    reason: Option<String>,
    by: Option<String>,
    attempts: Option<u32>,
) -> execution_ledger::Retry {
    let mut retry = execution_ledger::Retry::new();
    if let Some(reason) = reason {
        retry = retry.reason(reason);
    }
    if let Some(by) = by {
        retry = retry.by(by);
    }
    if let Some(n) = attempts {
        retry = retry.attempts(n);
    }
    retry
}
