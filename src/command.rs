//! Commands as data: what a caller asks of the ledger, the limits its input
//! must keep to, and the pure decision of the event it records.
//!
//! ```text
//! Op ──validate──▶ queued ──decide(op, state now, now)──▶ event kind
//!                                                         │
//!                            the state machine checks it ◀┘ (on append)
//! ```
//!
//! A command is decided against the projection as of the head the ledger
//! knows; when another writer appended first, the ledger catches up and
//! decides the same command again, so a decision is a function of the
//! command, the state and the time only.

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::{CommandError, ErrorKind, StorageError};
use crate::event::{Event, EventKind, RecoveryReason, Submission};
use crate::execution::{
    BackgroundExecution, BackgroundExecutionMode, BackgroundExecutionStatus, ExecutionError,
    ExecutionId, TenantId,
};
use crate::lease::{self, Leases, MAX_CLAIM};
use crate::machine;
use crate::projection::Projection;

/// The largest `input` accepted on submit, in bytes.
pub const MAX_INPUT_BYTES: usize = 64 * 1024;
/// The largest `output` accepted on completion, as JSON bytes.
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;
/// The most entries a `context` map may have.
pub const MAX_CONTEXT_ENTRIES: usize = 256;
/// The longest callable name, idempotency key, context key or value, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// The most submissions one batch submit takes.
pub const MAX_BATCH: usize = 1_000;

/// The most callables one claim names.
pub const MAX_CLAIM_CALLABLES: usize = 10_000;

/// What a worker claims: the next runnable executions, in queue order, of
/// the callables it runs.
///
/// ```
/// # use std::time::Duration;
/// # use execution_ledger::Claim;
/// let claim = Claim::new()
///     .worker("w-1")
///     .callables(["resize", "crop"])
///     .max(10)
///     .lease(Duration::from_secs(30));
/// # let _ = claim;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claim {
    pub(crate) worker: Option<String>,
    pub(crate) callables: Option<Vec<String>>,
    pub(crate) max: usize,
    pub(crate) lease: Option<Duration>,
}

impl Claim {
    /// One execution of any callable, held without a lease (by the
    /// process that owns the ledger, for as long as it runs; on a ledger
    /// many processes share, under [`DEFAULT_LEASE`](crate::DEFAULT_LEASE)).
    pub fn new() -> Self {
        Claim {
            max: 1,
            ..Claim::default()
        }
    }

    /// The worker's name, recorded in the `started` events.
    pub fn worker(mut self, name: impl Into<String>) -> Self {
        self.worker = Some(name.into());
        self
    }

    /// Only executions of these callables (any, by default).
    pub fn callables(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.callables = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// At most `n` executions (1 by default; at most [`MAX_CLAIM`]).
    pub fn max(mut self, n: usize) -> Self {
        self.max = n;
        self
    }

    /// Each attempt held under a lease of `d` ([`MIN_LEASE`](crate::MIN_LEASE)–[`MAX_LEASE`](crate::MAX_LEASE)),
    /// extended by heartbeats, recovered when it runs out.
    pub fn lease(mut self, d: Duration) -> Self {
        self.lease = Some(d);
        self
    }

    /// The worker's name.
    pub fn worker_name(&self) -> Option<&str> {
        self.worker.as_deref()
    }

    /// The callables it claims (`None`: any).
    pub fn callable_names(&self) -> Option<&[String]> {
        self.callables.as_deref()
    }

    /// The lease it asks for.
    pub fn lease_length(&self) -> Option<Duration> {
        self.lease
    }

    pub(crate) fn validate(&self) -> Result<(), CommandError> {
        if self.max == 0 || self.max > MAX_CLAIM {
            return Err(CommandError::invalid(format!(
                "max must be 1-{MAX_CLAIM}, not {}",
                self.max
            )));
        }
        if let Some(lease) = self.lease {
            lease::check_length(lease)?;
        }
        if let Some(worker) = &self.worker {
            check_worker(worker)?;
        }
        if let Some(callables) = &self.callables {
            if callables.is_empty() || callables.len() > MAX_CLAIM_CALLABLES {
                return Err(CommandError::invalid(format!(
                    "callables must name 1-{MAX_CLAIM_CALLABLES} callables"
                )));
            }
            if let Some(bad) = callables.iter().find(|c| !callable_name_ok(c)) {
                return Err(CommandError::invalid(format!(
                    "callables: {bad:?} is not a callable name (1-{MAX_NAME_BYTES} bytes)"
                )));
            }
        }
        Ok(())
    }
}

/// A command to the ledger.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    /// A new execution for a tenant.
    Submit(TenantId, Box<Submission>),
    /// New executions for a tenant, appended as one group: all or none.
    SubmitMany(TenantId, Vec<Submission>),
    /// The next runnable executions' next attempts, for a worker.
    Claim(Claim),
    /// Every execution left running, without a lease, by a process that
    /// stopped.
    RecoverAbandoned,
    /// Every leased attempt whose lease ran out (recovered) or that
    /// outlived its timeout (timed out).
    ExpireLeases,
    /// A command against one execution.
    On(ExecutionId, Action),
}

/// A command against one execution.
#[derive(Clone, Debug)]
pub(crate) enum Action {
    /// Completes an attempt with its output.
    Complete {
        attempt: u32,
        output: serde_json::Value,
    },
    /// Fails an attempt: retried by the policy when `retry` is set, else
    /// for good.
    Fail {
        attempt: u32,
        error: ExecutionError,
        retry: bool,
    },
    /// An attempt outlived its timeout.
    TimeOut { attempt: u32 },
    /// Cancels a queued or running execution.
    Cancel { reason: Option<String> },
    /// Releases a held deferred execution.
    Release,
    /// The outcome of binding the output to its target.
    RecordBinding { error: Option<ExecutionError> },
    /// One callback delivery attempt: the receiver's status, or why not.
    RecordCallback {
        outcome: Result<u16, (Option<u16>, String)>,
    },
    /// Redacts a settled execution's payloads.
    Redact { by: Option<String>, reason: String },
    /// Puts it under legal hold.
    Hold { by: Option<String>, reason: String },
    /// Releases its legal hold.
    ReleaseHold { by: Option<String>, reason: String },
    /// Runs a failed, timed-out or cancelled execution again, as a new one.
    Retry(Retry),
}

/// What a retry by hand records: who asks, why, and the attempts the new
/// run gets.
///
/// ```
/// # use execution_ledger::Retry;
/// let retry = Retry::new().by("ops@acme").reason("upstream fixed").attempts(3);
/// # let _ = retry;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retry {
    pub(crate) by: Option<String>,
    pub(crate) reason: Option<String>,
    pub(crate) attempts: Option<u32>,
}

impl Retry {
    /// A retry by no one named, for no reason given, with the attempts of
    /// the execution's own retry policy.
    pub fn new() -> Self {
        Retry::default()
    }

    /// Who asks (recorded in the `retried` event).
    pub fn by(mut self, who: impl Into<String>) -> Self {
        self.by = Some(who.into());
        self
    }

    /// Why (recorded in the `retried` event).
    pub fn reason(mut self, why: impl Into<String>) -> Self {
        self.reason = Some(why.into());
        self
    }

    /// The attempts the new run gets, 1 to [`MAX_ATTEMPTS`] (by default,
    /// as many as the execution's retry policy gave it).
    pub fn attempts(mut self, n: u32) -> Self {
        self.attempts = Some(n);
        self
    }

    pub(crate) fn validate(&self) -> Result<(), CommandError> {
        if let Some(reason) = &self.reason {
            check_reason(reason, self.by.as_deref())?;
        }
        check_by(self.by.as_deref())?;
        match self.attempts {
            Some(n) if n == 0 || n > MAX_ATTEMPTS => Err(CommandError::invalid(format!(
                "attempts must be 1-{MAX_ATTEMPTS}, not {n}"
            ))),
            _ => Ok(()),
        }
    }

    /// The new run's submission: `original`'s callable, input, context,
    /// configuration (with the attempts asked for), trigger and metadata;
    /// not its idempotency key (the original keeps it). It is runnable at
    /// once: a deferred one is not held again for a release, its run-at
    /// time is `now`, the time of the retry.
    fn submission(&self, original: &BackgroundExecution, now: DateTime<Utc>) -> Submission {
        let mut config = original.config.clone();
        if let Some(n) = self.attempts {
            config
                .retry
                .get_or_insert_with(Default::default)
                .max_attempts = n;
        }
        Submission {
            callable_name: original.callable_name.clone(),
            input: original.input.clone(),
            context: original.context.clone(),
            config,
            trigger_id: original.trigger_id,
            metadata: original.metadata.clone(),
            idempotency_key: None,
            run_at: (original.config.mode == BackgroundExecutionMode::Deferred).then_some(now),
            retry_of: Some(original.execution_id),
            schedule: None,
        }
    }
}

/// The most attempts an execution may be given.
pub const MAX_ATTEMPTS: u32 = 1000;

impl Op {
    /// Refuses malformed or out-of-range input before the command is
    /// queued: `Invalid`, naming the field.
    pub(crate) fn validate(&self) -> Result<(), CommandError> {
        match self {
            Op::Submit(_, submission) => {
                validate_submission(submission).and_then(|()| submitted_links(submission))
            }
            Op::SubmitMany(_, items) => {
                if items.len() > MAX_BATCH {
                    return Err(CommandError::invalid(format!(
                        "executions: {} in one batch; the limit is {MAX_BATCH}",
                        items.len()
                    )));
                }
                let mut keys = std::collections::HashMap::new();
                for (i, submission) in items.iter().enumerate() {
                    validate_submission(submission)
                        .and_then(|()| submitted_links(submission))
                        .map_err(|e| CommandError::invalid(format!("executions[{i}]: {e}")))?;
                    if let Some(key) = &submission.idempotency_key {
                        if let Some(first) = keys.insert(key.as_str(), i) {
                            return Err(CommandError::invalid(format!(
                                "executions[{i}]: idempotency key {key:?} is used by executions[{first}] too"
                            )));
                        }
                    }
                }
                Ok(())
            }
            Op::Claim(claim) => claim.validate(),
            Op::On(_, Action::Fail { error, .. }) => validate_error(error),
            Op::On(_, Action::Complete { output, .. }) => {
                let size = serde_json::to_vec(output)
                    .map(|v| v.len())
                    .unwrap_or(usize::MAX);
                if size > MAX_OUTPUT_BYTES {
                    return Err(CommandError::invalid(format!(
                        "output is {size} bytes of JSON; the limit is {MAX_OUTPUT_BYTES}"
                    )));
                }
                Ok(())
            }
            Op::On(
                _,
                Action::Redact { reason, by }
                | Action::Hold { reason, by }
                | Action::ReleaseHold { reason, by },
            ) => check_reason(reason, by.as_deref()),
            Op::On(_, Action::Retry(retry)) => retry.validate(),
            _ => Ok(()),
        }
    }
}

/// The longest reason (and name of who asked) a redaction or legal hold
/// records.
const MAX_REASON_BYTES: usize = 4096;

/// Checks the reason and the name of who asks, which a redaction or a
/// legal hold (an execution's or a tenant's) records.
pub(crate) fn check_reason(reason: &str, by: Option<&str>) -> Result<(), CommandError> {
    if reason.trim().is_empty() {
        return Err(CommandError::invalid("reason: must not be empty"));
    }
    if reason.len() > MAX_REASON_BYTES {
        return Err(CommandError::invalid(format!(
            "reason: {} bytes; the limit is {MAX_REASON_BYTES}",
            reason.len()
        )));
    }
    check_by(by)
}

/// Checks the name of who asks, which a redaction, hold, retry or
/// schedule records.
pub(crate) fn check_by(by: Option<&str>) -> Result<(), CommandError> {
    if by.is_some_and(|b| b.trim().is_empty()) {
        return Err(CommandError::invalid(
            "by: must not be empty (leave it out to name no one)",
        ));
    }
    if by.is_some_and(|b| b.len() > MAX_REASON_BYTES) {
        return Err(CommandError::invalid(format!(
            "by: longer than {MAX_REASON_BYTES} bytes"
        )));
    }
    Ok(())
}

/// An event a command decided to record: its execution, tenant and kind.
pub(crate) type Decided = (ExecutionId, TenantId, EventKind);

impl Op {
    /// The events this command records, decided against `projection` at
    /// `now` (of `scope`'s executions only, when set); none when there is
    /// nothing to do (nothing runnable, nothing abandoned). An execution
    /// that is no longer live is folded from the log by `load`. A submit's
    /// idempotency key is looked up before (it needs the log's index).
    ///
    /// # Errors
    ///
    /// `NotFound` (also for another tenant's execution with a scope); the
    /// state machine's refusal of an event after a settled execution.
    pub(crate) fn decide(
        &self,
        projection: &mut Projection,
        leases: &Leases,
        scope: Option<&TenantId>,
        load: impl FnOnce(ExecutionId) -> Result<Option<(BackgroundExecution, bool)>, CommandError>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Decided>, CommandError> {
        Ok(match self {
            Op::Submit(tenant, submission) => {
                let kind = EventKind::Queued(submission.clone());
                vec![(ExecutionId::new(), tenant.clone(), kind)]
            }
            // One per submission; the write path leaves out those an
            // idempotency key already answers.
            Op::SubmitMany(tenant, items) => items
                .iter()
                .map(|submission| {
                    let kind = EventKind::Queued(Box::new(submission.clone()));
                    (ExecutionId::new(), tenant.clone(), kind)
                })
                .collect(),
            Op::Claim(claim) => {
                let lease_ms = claim
                    .lease
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                projection
                    .runnable(now, scope, claim.callables.as_deref(), claim.max)
                    .into_iter()
                    .map(|next| {
                        let kind = EventKind::Started {
                            attempt: next.attempt + 1,
                            worker: claim.worker.clone(),
                            lease_ms,
                        };
                        (next.execution_id, next.tenant_id.clone(), kind)
                    })
                    .collect()
            }
            Op::RecoverAbandoned => {
                let mut running: Vec<&BackgroundExecution> = projection
                    .live()
                    .filter(|e| e.status == BackgroundExecutionStatus::Running)
                    .filter(|e| leases.get(&e.execution_id).is_none())
                    .filter(|e| scope.is_none_or(|t| t == &e.tenant_id))
                    .collect();
                running.sort_by_key(|e| e.execution_id);
                running
                    .into_iter()
                    .map(|e| {
                        let kind = machine::after_loss(e, RecoveryReason::ProcessStopped);
                        (e.execution_id, e.tenant_id.clone(), kind)
                    })
                    .collect()
            }
            Op::ExpireLeases => {
                let mut due: Vec<(ExecutionId, EventKind)> = leases
                    .ids()
                    .filter_map(|id| Some((id, projection.get(&id)?, leases.get(&id)?)))
                    .filter(|(_, e, lease)| {
                        e.status == BackgroundExecutionStatus::Running && e.attempt == lease.attempt
                    })
                    .filter(|(_, e, _)| scope.is_none_or(|t| t == &e.tenant_id))
                    .filter_map(|(id, e, lease)| {
                        let timed_out = e
                            .started_at
                            .is_some_and(|s| now >= lease::after(s, e.config.timeout_ms));
                        if timed_out {
                            Some((id, machine::after_timeout(e, now)))
                        } else if lease.until <= now {
                            Some((id, machine::after_loss(e, RecoveryReason::LeaseExpired)))
                        } else {
                            None
                        }
                    })
                    .collect();
                due.sort_by_key(|(id, _)| *id);
                due.into_iter()
                    .map(|(id, kind)| {
                        let tenant = projection.get(&id).expect("found above").tenant_id.clone();
                        (id, tenant, kind)
                    })
                    .collect()
            }
            Op::On(id, action) => {
                let id = *id;
                let (current, archived) = match projection.get(&id) {
                    Some(e) => (Cow::Borrowed(e), false),
                    None => {
                        let (e, archived) = load(id)?.ok_or(CommandError::NotFound(id))?;
                        (Cow::Owned(e), archived)
                    }
                };
                if scope.is_some_and(|t| t != &current.tenant_id) {
                    return Err(CommandError::NotFound(id));
                }
                if archived {
                    return Err(CommandError::Archived(id));
                }
                if action.repeats(&current) {
                    // An identical answer the execution already records.
                    return Ok(Vec::new());
                }
                let kind = action.decide(&current, now);
                // A retry by hand submits its new run in the same write.
                let rerun = match (action, &kind) {
                    (
                        Action::Retry(retry),
                        EventKind::Retried {
                            new_execution_id, ..
                        },
                    ) => {
                        let queued = EventKind::Queued(Box::new(retry.submission(&current, now)));
                        Some((*new_execution_id, current.tenant_id.clone(), queued))
                    }
                    _ => None,
                };
                if let (Cow::Owned(_), true) = (&current, kind.follows_settling()) {
                    // After a settled execution: the write path checks it
                    // against the execution's history.
                    let mut events = vec![(id, current.tenant_id.clone(), kind)];
                    events.extend(rerun);
                    return Ok(events);
                }
                if let Cow::Owned(settled) = &current {
                    // Not live: settled, so the machine refuses whatever comes.
                    let event = Event {
                        seq: projection.seq() + 1,
                        at: now,
                        execution_id: id,
                        tenant_id: settled.tenant_id.clone(),
                        kind,
                    };
                    machine::check(Some(settled), &event)?;
                    return Err(StorageError::new(
                        ErrorKind::Corrupt,
                        format!(
                            "{id} is settled yet the state machine accepts {}",
                            event.kind.name()
                        ),
                    )
                    .into());
                }
                let mut events = vec![(id, current.tenant_id.clone(), kind)];
                events.extend(rerun);
                events
            }
        })
    }
}

impl Action {
    /// Whether `current` already records this very answer: a complete of
    /// its attempt with the same output, a fail of it with the same error
    /// (before another attempt started). A worker that lost the response
    /// retries, and is answered as the first time.
    pub(crate) fn repeats(&self, current: &BackgroundExecution) -> bool {
        match self {
            Action::Complete { attempt, output } => {
                current.attempt == *attempt
                    && current.status == BackgroundExecutionStatus::Completed
                    && current.output.as_ref() == Some(output)
            }
            Action::Fail { attempt, error, .. } => {
                current.attempt == *attempt
                    && matches!(
                        current.status,
                        BackgroundExecutionStatus::Failed | BackgroundExecutionStatus::Queued
                    )
                    && current.error.as_ref() == Some(error)
            }
            _ => false,
        }
    }

    /// The event this action records against `current` at `now`. The
    /// state machine checks it when it is appended.
    pub(crate) fn decide(&self, current: &BackgroundExecution, now: DateTime<Utc>) -> EventKind {
        match self {
            Action::Complete { attempt, output } => EventKind::Completed {
                attempt: *attempt,
                output: output.clone(),
            },
            Action::Fail {
                attempt,
                error,
                retry,
            } => {
                if current.attempt != *attempt || !retry {
                    EventKind::Failed {
                        attempt: *attempt,
                        error: error.clone(),
                    }
                } else {
                    machine::after_failure(current, error.clone(), now)
                }
            }
            Action::TimeOut { attempt } => {
                if current.attempt != *attempt {
                    EventKind::TimedOut { attempt: *attempt }
                } else {
                    machine::after_timeout(current, now)
                }
            }
            Action::Cancel { reason } => EventKind::Cancelled {
                reason: reason.clone(),
            },
            Action::Release => EventKind::Released,
            Action::RecordBinding { error } => {
                let target = current
                    .config
                    .target_binding
                    .as_ref()
                    .map(|b| b.target.clone())
                    .unwrap_or_default();
                EventKind::TargetBindingApplied {
                    target,
                    error: error.clone(),
                }
            }
            Action::RecordCallback { outcome } => {
                let attempt = current.callback_attempts + 1;
                match outcome {
                    Ok(status_code) => EventKind::CallbackDelivered {
                        attempt,
                        status_code: *status_code,
                    },
                    Err((status_code, error)) => EventKind::CallbackFailed {
                        attempt,
                        status_code: *status_code,
                        error: error.clone(),
                    },
                }
            }
            Action::Redact { by, reason } => EventKind::Redacted {
                by: by.clone(),
                reason: reason.clone(),
            },
            Action::Hold { by, reason } => EventKind::LegalHold {
                by: by.clone(),
                reason: reason.clone(),
            },
            Action::ReleaseHold { by, reason } => EventKind::LegalHoldReleased {
                by: by.clone(),
                reason: reason.clone(),
            },
            Action::Retry(retry) => EventKind::Retried {
                by: retry.by.clone(),
                reason: retry.reason.clone(),
                new_execution_id: ExecutionId::new(),
                attempts: retry
                    .attempts
                    .unwrap_or_else(|| current.config.max_attempts()),
            },
        }
    }
}

/// The rule for a worker's name, wherever one is given.
pub(crate) fn check_worker(worker: &str) -> Result<(), CommandError> {
    if worker.is_empty() || worker.len() > MAX_NAME_BYTES {
        return Err(CommandError::invalid(format!(
            "worker must be 1-{MAX_NAME_BYTES} bytes"
        )));
    }
    Ok(())
}

/// The rule for a callable's name, wherever one is given.
fn callable_name_ok(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_BYTES
}

/// The rule for an attempt's error, wherever one is given.
fn validate_error(error: &ExecutionError) -> Result<(), CommandError> {
    if error.code.is_empty() || error.code.len() > MAX_NAME_BYTES {
        return Err(CommandError::invalid(format!(
            "error code must be 1-{MAX_NAME_BYTES} bytes"
        )));
    }
    if error.message.len() > MAX_INPUT_BYTES {
        return Err(CommandError::invalid(format!(
            "error message is {} bytes; the limit is {MAX_INPUT_BYTES}",
            error.message.len()
        )));
    }
    Ok(())
}

/// Refuses the links only the ledger sets: a submitter's execution is no
/// retry by hand and fills no schedule's slot.
pub(crate) fn submitted_links(submission: &Submission) -> Result<(), CommandError> {
    if submission.retry_of.is_some() {
        return Err(CommandError::invalid(
            "retryOf: set by a retry by hand (POST /v1/executions/{id}/retry, ledger retry), not by a submitter",
        ));
    }
    if submission.schedule.is_some() {
        return Err(CommandError::invalid(
            "schedule: set by a schedule's firing, not by a submitter",
        ));
    }
    Ok(())
}

/// Checks a submission's fields against their limits.
pub(crate) fn validate_submission(submission: &Submission) -> Result<(), CommandError> {
    if !callable_name_ok(&submission.callable_name) {
        return Err(CommandError::invalid(format!(
            "callable name must be 1-{MAX_NAME_BYTES} bytes"
        )));
    }
    if let Some(input) = &submission.input {
        if input.len() > MAX_INPUT_BYTES {
            return Err(CommandError::invalid(format!(
                "input is {} bytes; the limit is {MAX_INPUT_BYTES}",
                input.len()
            )));
        }
    }
    if let Some(context) = &submission.context {
        if context.len() > MAX_CONTEXT_ENTRIES {
            return Err(CommandError::invalid(format!(
                "context has {} entries; the limit is {MAX_CONTEXT_ENTRIES}",
                context.len()
            )));
        }
        if let Some((k, _)) = context
            .iter()
            .find(|(k, v)| k.is_empty() || k.len() > MAX_NAME_BYTES || v.len() > MAX_NAME_BYTES)
        {
            return Err(CommandError::invalid(format!(
                "context key {k:?}: keys must be 1-{MAX_NAME_BYTES} bytes and values at most {MAX_NAME_BYTES}"
            )));
        }
    }
    if let Some(key) = &submission.idempotency_key {
        if key.is_empty() || key.len() > MAX_NAME_BYTES {
            return Err(CommandError::invalid(format!(
                "idempotency key must be 1-{MAX_NAME_BYTES} bytes"
            )));
        }
    }
    let config = &submission.config;
    if config.timeout_ms == 0 {
        return Err(CommandError::invalid("timeout must be at least 1 ms"));
    }
    if let Some(retry) = &config.retry {
        if retry.max_attempts == 0 || retry.max_attempts > MAX_ATTEMPTS {
            return Err(CommandError::invalid(format!(
                "max attempts must be 1-{MAX_ATTEMPTS}"
            )));
        }
        if !(retry.backoff_multiplier.is_finite() && retry.backoff_multiplier >= 1.0) {
            return Err(CommandError::invalid(
                "backoff multiplier must be a number >= 1",
            ));
        }
    }
    if let Some(url) = &config.callback_url {
        if config.mode != BackgroundExecutionMode::Deferred {
            return Err(CommandError::invalid(format!(
                "callback url: only deferred executions call back (mode deferred); this one is {}",
                config.mode
            )));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(CommandError::invalid(format!(
                "callback url must be http:// or https://, not {url:?}"
            )));
        }
    }
    if let Some(binding) = &config.target_binding {
        if !binding.target.contains(':') {
            return Err(CommandError::invalid(format!(
                "target binding {:?} must be scheme:name",
                binding.target
            )));
        }
    }
    Ok(())
}
