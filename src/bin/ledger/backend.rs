//! Where a command's ledger is: open in this process, or served by a
//! `ledger serve` process that owns the data directory (sled lets one
//! process own it), reached over its HTTP API with the same results.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use anyhow::{anyhow, Result};
use execution_ledger::{
    At, BackgroundExecution, Change, ErrorKind, Event, ExecutionId, Head, Ledger, LedgerError,
    Submission, TenantId,
};

use crate::serve::{Served, SERVE_FILE};
use crate::{Cli, Command, Usage};

/// A ledger error as the CLI reports it: usage errors exit 2.
pub(crate) fn fail(e: LedgerError) -> anyhow::Error {
    match e {
        LedgerError::Invalid(m) => Usage(m).into(),
        other => other.into(),
    }
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

pub(crate) enum Backend {
    Local(Ledger),
    Remote(Remote),
}

impl Backend {
    /// The ledger of `--server`, else the data directory's (through its
    /// server when a `ledger serve` process holds it). Of the commands that
    /// come here only `submit` creates a ledger; the others answer "no
    /// ledger at DIR" and create nothing.
    pub(crate) fn connect(cli: &Cli) -> Result<Backend> {
        if let Some(url) = &cli.server {
            return Ok(Backend::Remote(Remote::new(url, cli.api_key.clone())));
        }
        let creates = matches!(cli.command, Command::Submit(_));
        let accepts = matches!(cli.command, Command::Verify { accept_tail: true });
        let builder = Ledger::builder(&cli.data_dir)
            .create(creates)
            .accept_tail(accepts);
        match crate::open_with(builder) {
            Ok(ledger) => Ok(Backend::Local(ledger)),
            Err(e) => {
                let locked = e
                    .downcast_ref::<execution_ledger::Error>()
                    .is_some_and(|e| e.kind() == ErrorKind::Locked);
                let served = std::fs::read(cli.data_dir.join(SERVE_FILE))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Served>(&b).ok());
                match (locked, served) {
                    (true, Some(served)) => Ok(Backend::Remote(Remote::new(
                        &served.url,
                        cli.api_key.clone(),
                    ))),
                    _ => Err(e),
                }
            }
        }
    }

    /// The ledger itself, for the commands that need the directory.
    pub(crate) fn local(&self, command: &str) -> Result<&Ledger> {
        match self {
            Backend::Local(l) => Ok(l),
            Backend::Remote(r) => Err(anyhow!(
                "`ledger {command}` needs the data directory itself, which the server at {} holds; stop it, or use its API",
                r.base
            )),
        }
    }

    pub(crate) fn submit(&self, tenant: &TenantId, s: Submission) -> Result<BackgroundExecution> {
        match self {
            Backend::Local(l) => Ok(l.submit(tenant, s).map_err(fail)?.execution),
            Backend::Remote(r) => {
                let mut body = serde_json::to_value(&s)?;
                body["tenantId"] = serde_json::json!(tenant);
                r.call(r.client.post(r.url("/v1/executions")).json(&body))
            }
        }
    }

    pub(crate) fn get(
        &self,
        scope: Option<&TenantId>,
        id: ExecutionId,
        at: Option<At>,
    ) -> Result<BackgroundExecution> {
        let found = match (self, at) {
            (Backend::Local(l), None) => l.get(id).map_err(fail)?,
            (Backend::Local(l), Some(at)) => l
                .execution_at(id, at)
                .map_err(fail)?
                .ok_or_else(|| anyhow!(not_yet(id, at)))?,
            (Backend::Remote(r), at) => r.call(at_query(
                r.client.get(r.url(&format!("/v1/executions/{id}"))),
                at,
            ))?,
        };
        if scope.is_some_and(|t| t != &found.tenant_id) {
            return Err(fail(LedgerError::NotFound(id)));
        }
        Ok(found)
    }

    pub(crate) fn history(&self, scope: Option<&TenantId>, id: ExecutionId) -> Result<Vec<Event>> {
        let events: Vec<Event> = match self {
            Backend::Local(l) => l.history(id).map_err(fail)?,
            Backend::Remote(r) => {
                r.call(r.client.get(r.url(&format!("/v1/executions/{id}/events"))))?
            }
        };
        if events
            .first()
            .is_some_and(|e| scope.is_some_and(|t| t != &e.tenant_id))
        {
            return Err(fail(LedgerError::NotFound(id)));
        }
        Ok(events)
    }

    /// The runnable executions in claim order, and (locally) how many more
    /// are queued but not runnable.
    pub(crate) fn queue(
        &self,
        scope: Option<&TenantId>,
        at: Option<At>,
    ) -> Result<(Vec<BackgroundExecution>, Option<usize>)> {
        match self {
            Backend::Local(l) => {
                let (queue, waiting) = match at {
                    Some(at) => l.queue_at(at, scope).map_err(fail)?,
                    None => (l.queue(scope), l.waiting(scope).len()),
                };
                Ok((queue, Some(waiting)))
            }
            Backend::Remote(r) => {
                let queue: Vec<BackgroundExecution> =
                    r.call(at_query(r.client.get(r.url("/v1/queue")), at))?;
                let queue = queue
                    .into_iter()
                    .filter(|e| scope.is_none_or(|t| t == &e.tenant_id))
                    .collect();
                Ok((queue, None))
            }
        }
    }

    pub(crate) fn cancel(
        &self,
        scope: Option<&TenantId>,
        id: ExecutionId,
        reason: Option<String>,
    ) -> Result<BackgroundExecution> {
        if scope.is_some() {
            self.get(scope, id, None)?;
        }
        match self {
            Backend::Local(l) => l.cancel(id, reason).map_err(fail),
            Backend::Remote(r) => r.call(
                r.client
                    .post(r.url(&format!("/v1/executions/{id}/cancel")))
                    .json(&serde_json::json!({ "reason": reason })),
            ),
        }
    }

    pub(crate) fn release(
        &self,
        scope: Option<&TenantId>,
        id: ExecutionId,
    ) -> Result<BackgroundExecution> {
        if scope.is_some() {
            self.get(scope, id, None)?;
        }
        match self {
            Backend::Local(l) => l.release(id).map_err(fail),
            Backend::Remote(r) => r.call(
                r.client
                    .post(r.url(&format!("/v1/executions/{id}/release"))),
            ),
        }
    }

    pub(crate) fn head(&self) -> Result<Head> {
        match self {
            Backend::Local(l) => Ok(l.head()),
            Backend::Remote(r) => r.call(r.client.get(r.url("/v1/head"))),
        }
    }

    pub(crate) fn diff(&self, scope: Option<&TenantId>, from: u64, to: u64) -> Result<Vec<Change>> {
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
            .filter(|c| scope.is_none_or(|t| t == &c.tenant_id))
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
            Backend::Remote(r) => r.stream(from, to, follow, each),
        }
    }
}

pub(crate) struct Remote {
    base: String,
    key: Option<String>,
    client: reqwest::blocking::Client,
}

impl Remote {
    fn new(base: &str, key: Option<String>) -> Remote {
        Remote {
            base: base.trim_end_matches('/').to_owned(),
            key,
            client: reqwest::blocking::Client::builder()
                .timeout(None)
                .build()
                .expect("an HTTP client"),
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
            Err(anyhow!(message))
        }
    }

    fn call<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::blocking::RequestBuilder,
    ) -> Result<T> {
        Ok(self.send(req)?.json()?)
    }

    /// Reads the server's event stream, resuming with `Last-Event-ID` when
    /// the connection drops; the server ends it after `toSeq`.
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
            let mut data = String::new();
            let mut ended = true;
            for line in BufReader::new(response).lines() {
                let Ok(line) = line else {
                    ended = false;
                    break;
                };
                if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                } else if line.is_empty() && !data.is_empty() {
                    let event: Event = serde_json::from_str(&data)?;
                    data.clear();
                    next = event.seq + 1;
                    each(event)?;
                }
            }
            if ended && to.is_some() {
                return Ok(());
            }
            // The connection dropped: resume after the last event seen.
            std::thread::sleep(Duration::from_millis(200));
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
