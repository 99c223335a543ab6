//! Events: the immutable facts the ledger records, one per lifecycle
//! transition, and the only thing it stores as truth.
//!
//! Every event has an envelope (`seq`, `at`, `executionId`, `tenantId`) and a
//! kind, tagged `"type"` in snake_case. Each kind's documentation says when it
//! is emitted and what it moves the execution to; the rules themselves live in
//! the state machine (`machine.rs`) and nowhere else.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::execution::{
    BackgroundExecutionConfig, BackgroundExecutionStatus, ExecutionError, ExecutionId, TenantId,
    TriggerId,
};
use crate::pause::PauseScope;
use crate::schedule::ScheduleSlot;

/// One recorded lifecycle transition of one execution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Position in the log: global, gap-free, from 1.
    pub seq: u64,
    /// When it was recorded (UTC, non-decreasing in `seq`).
    pub at: DateTime<Utc>,
    /// The execution it concerns.
    pub execution_id: ExecutionId,
    /// The tenant that execution belongs to.
    pub tenant_id: TenantId,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What a submitter asks for: everything a `queued` event records about a new
/// execution besides its id, tenant and time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Submission {
    /// The callable to run.
    pub callable_name: String,
    /// Its input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Key-value context for the callable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<HashMap<String, String>>,
    /// How it runs.
    #[serde(default)]
    pub config: BackgroundExecutionConfig,
    /// The trigger that started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_id: Option<TriggerId>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<HashMap<String, serde_json::Value>>,
    /// The caller's idempotency key, unique per tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Not runnable before this time (deferred executions: released then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    /// The execution this one runs again, when an operator retried it by
    /// hand (its `retried` event names this one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<ExecutionId>,
    /// The schedule and the slot this execution fills, when a schedule
    /// fired it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSlot>,
}

impl Submission {
    /// A submission of `callable_name` with default configuration.
    pub fn new(callable_name: impl Into<String>) -> Self {
        Submission {
            callable_name: callable_name.into(),
            input: None,
            context: None,
            config: BackgroundExecutionConfig::default(),
            trigger_id: None,
            metadata: None,
            idempotency_key: None,
            run_at: None,
            retry_of: None,
            schedule: None,
        }
    }
}

/// What happened to an execution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
#[non_exhaustive]
pub enum EventKind {
    /// Emitted on submit: the execution exists from here on, `queued` (held
    /// when deferred, waiting when it has a run-at time).
    Queued(Box<Submission>),
    /// Emitted when a held deferred execution is released: it becomes
    /// runnable at once. Status stays `queued`.
    Released,
    /// Emitted when a worker claims the execution: attempt `attempt` (the
    /// previous attempt plus one) begins. Status becomes `running`.
    Started {
        /// The attempt that begins, from 1.
        attempt: u32,
        /// Who claimed it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worker: Option<String>,
        /// The lease the worker holds the attempt under, in milliseconds
        /// from this event (heartbeats extend it; they are not events).
        /// Absent: the attempt is held by the process that owns the ledger
        /// for as long as it runs, and recovered when the ledger is next
        /// opened by another.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease_ms: Option<u64>,
    },
    /// Emitted when the running attempt returns an output. Status becomes
    /// `completed`.
    Completed {
        /// The attempt that finished; must be the current one.
        attempt: u32,
        /// The callable's output.
        output: serde_json::Value,
    },
    /// Emitted when the running attempt fails and no retry follows (attempts
    /// used up, or the error is final). Status becomes `failed`.
    Failed {
        /// The attempt that failed; must be the current one.
        attempt: u32,
        /// Why.
        error: ExecutionError,
    },
    /// Emitted when the running attempt fails or times out and attempts
    /// remain: status goes back to `queued`, not runnable before `notBefore`.
    RetryScheduled {
        /// The attempt that failed; must be the current one.
        attempt: u32,
        /// Why it failed.
        error: ExecutionError,
        /// When the next attempt may start.
        not_before: DateTime<Utc>,
    },
    /// Emitted when the running attempt outlives `timeoutMs` and no retry
    /// follows. Status becomes `timeout`.
    TimedOut {
        /// The attempt that timed out; must be the current one.
        attempt: u32,
    },
    /// Emitted when a queued or running execution is cancelled. Status
    /// becomes `cancelled`.
    Cancelled {
        /// Why, when the canceller said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Emitted when a running attempt is lost: its lease ran out (its
    /// worker stopped heartbeating), or the process that held it stopped.
    /// Status becomes `queued` when attempts remain, `failed` when they are
    /// used up.
    Recovered {
        /// The attempt that was lost; must be the current one.
        attempt: u32,
        /// `queued` or `failed`, by the retry policy.
        outcome: BackgroundExecutionStatus,
        /// Why the attempt counts as lost (absent in logs written before
        /// leases: the process stopped).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<RecoveryReason>,
    },
    /// Emitted once after completion when the output was handed to the
    /// execution's target binding (bookkeeping; the status stays).
    TargetBindingApplied {
        /// The target bound, e.g. `var:summary`.
        target: String,
        /// Why binding failed, when it did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ExecutionError>,
    },
    /// Emitted when a finished deferred execution's record was POSTed to its
    /// `callbackUrl` and accepted (bookkeeping; the status stays).
    CallbackDelivered {
        /// Which delivery attempt, from 1.
        attempt: u32,
        /// The HTTP status the receiver answered.
        status_code: u16,
    },
    /// Emitted when one callback delivery attempt failed (bookkeeping; the
    /// status stays).
    CallbackFailed {
        /// Which delivery attempt, from 1.
        attempt: u32,
        /// The HTTP status, when the receiver answered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status_code: Option<u16>,
        /// What went wrong.
        error: String,
    },
    /// Emitted when a settled execution's payloads are redacted: its input,
    /// output, context and metadata values, error messages and reasons are
    /// removed from its records (they read `"[redacted]"`), while the rest
    /// of its history and the hash chain stay. Allowed after settling;
    /// never changes the status.
    Redacted {
        /// Who asked (an operator, an API key's name, a retention policy).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// Why.
        reason: String,
    },
    /// Emitted when an execution is put under legal hold: it cannot be
    /// redacted (nor archived) until the hold is released. Allowed in any
    /// status; never changes it.
    LegalHold {
        /// Who asked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// Why.
        reason: String,
    },
    /// Emitted when an execution's legal hold is released.
    LegalHoldReleased {
        /// Who asked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// Why.
        reason: String,
    },
    /// Emitted when an operator retries a failed, timed-out or cancelled
    /// execution by hand. Its own record stays as it ended (a terminal
    /// status is final): the new run is a new execution, submitted in the
    /// same write with the same callable, input, context and configuration,
    /// whose `queued` event names this one (`retryOf`). Allowed once per
    /// execution, after it ended (settled or not); never changes its status.
    Retried {
        /// Who asked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// Why, when they said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// The new run.
        new_execution_id: ExecutionId,
        /// The attempts the new run gets.
        attempts: u32,
    },
}

/// One recorded change to the queue rather than to one execution: work
/// held or let go (`pause.rs`). It takes its seq in the same chain as the
/// executions' events, and belongs to none of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Control {
    /// Position in the log: global, gap-free, from 1.
    pub seq: u64,
    /// When it was recorded (UTC, non-decreasing in `seq`).
    pub at: DateTime<Utc>,
    /// What happened.
    #[serde(flatten)]
    pub kind: ControlKind,
}

/// What happened to the queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
#[non_exhaustive]
pub enum ControlKind {
    /// Emitted when an operator pauses work: from here on no claim takes
    /// work of `scope`, which stays queued, in order; running attempts
    /// finish.
    Paused {
        /// What is held.
        #[serde(flatten)]
        scope: PauseScope,
        /// Who asked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// Why, when they said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Emitted when an operator resumes paused work: claims take it again,
    /// in the order it would have had.
    Resumed {
        /// What was held.
        #[serde(flatten)]
        scope: PauseScope,
        /// Who asked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// Why, when they said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl ControlKind {
    /// The kind's snake_case name, as in the `type` field.
    pub fn name(&self) -> &'static str {
        match self {
            ControlKind::Paused { .. } => "paused",
            ControlKind::Resumed { .. } => "resumed",
        }
    }

    /// What the entry is about.
    pub fn scope(&self) -> &PauseScope {
        match self {
            ControlKind::Paused { scope, .. } | ControlKind::Resumed { scope, .. } => scope,
        }
    }
}

/// One entry of the log: an execution's event, or a control entry. Its
/// JSON is the one or the other's (a control entry has no `executionId`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Entry {
    /// An execution's event.
    Event(Event),
    /// A change to the queue.
    Control(Control),
}

impl Entry {
    /// Its position in the log.
    pub fn seq(&self) -> u64 {
        match self {
            Entry::Event(e) => e.seq,
            Entry::Control(c) => c.seq,
        }
    }

    /// When it was recorded.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Entry::Event(e) => e.at,
            Entry::Control(c) => c.at,
        }
    }

    /// The `type` field's value.
    pub fn name(&self) -> &'static str {
        match self {
            Entry::Event(e) => e.kind.name(),
            Entry::Control(c) => c.kind.name(),
        }
    }

    /// The event, when it is one.
    pub fn event(&self) -> Option<&Event> {
        match self {
            Entry::Event(e) => Some(e),
            Entry::Control(_) => None,
        }
    }
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        // An entry with an execution is an event; one without, a control
        // entry (each reports what is wrong with it as itself).
        match value.get("executionId") {
            Some(_) => serde_json::from_value(value).map(Entry::Event),
            None => serde_json::from_value(value).map(Entry::Control),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// Why a running attempt was recovered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecoveryReason {
    /// Its lease ran out: the worker holding it stopped heartbeating.
    LeaseExpired,
    /// The process that held it (without a lease) stopped; found when the
    /// ledger was opened again.
    ProcessStopped,
}

impl RecoveryReason {
    /// The snake_case name, as recorded.
    pub fn name(self) -> &'static str {
        match self {
            RecoveryReason::LeaseExpired => "lease_expired",
            RecoveryReason::ProcessStopped => "process_stopped",
        }
    }
}

impl std::fmt::Display for RecoveryReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl EventKind {
    /// The kind's snake_case name, as in the `type` field.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Queued(_) => "queued",
            EventKind::Released => "released",
            EventKind::Started { .. } => "started",
            EventKind::Completed { .. } => "completed",
            EventKind::Failed { .. } => "failed",
            EventKind::RetryScheduled { .. } => "retry_scheduled",
            EventKind::TimedOut { .. } => "timed_out",
            EventKind::Cancelled { .. } => "cancelled",
            EventKind::Recovered { .. } => "recovered",
            EventKind::TargetBindingApplied { .. } => "target_binding_applied",
            EventKind::CallbackDelivered { .. } => "callback_delivered",
            EventKind::CallbackFailed { .. } => "callback_failed",
            EventKind::Redacted { .. } => "redacted",
            EventKind::LegalHold { .. } => "legal_hold",
            EventKind::LegalHoldReleased { .. } => "legal_hold_released",
            EventKind::Retried { .. } => "retried",
        }
    }

    /// The verb of the command that emits this kind, for messages such as
    /// `cannot complete …`.
    pub fn verb(&self) -> &'static str {
        match self {
            EventKind::Queued(_) => "submit",
            EventKind::Released => "release",
            EventKind::Started { .. } => "start",
            EventKind::Completed { .. } => "complete",
            EventKind::Failed { .. } => "fail",
            EventKind::RetryScheduled { .. } => "retry",
            EventKind::TimedOut { .. } => "time out",
            EventKind::Cancelled { .. } => "cancel",
            EventKind::Recovered { .. } => "recover",
            EventKind::TargetBindingApplied { .. } => "bind the output of",
            EventKind::CallbackDelivered { .. } | EventKind::CallbackFailed { .. } => {
                "record a callback for"
            }
            EventKind::Redacted { .. } => "redact",
            EventKind::LegalHold { .. } => "hold",
            EventKind::LegalHoldReleased { .. } => "release the hold of",
            EventKind::Retried { .. } => "retry",
        }
    }

    /// Whether the kind may follow a settled execution: about keeping its
    /// record (redaction, legal hold) or about running it again (a retry by
    /// hand, which starts a new execution). Such an event never changes the
    /// status, is not part of the lifecycle, and is folded into a settled
    /// execution without bringing it back to the projection.
    pub fn follows_settling(&self) -> bool {
        matches!(
            self,
            EventKind::Redacted { .. }
                | EventKind::LegalHold { .. }
                | EventKind::LegalHoldReleased { .. }
                | EventKind::Retried { .. }
        )
    }

    /// Whether the kind is bookkeeping: allowed after a terminal status, and
    /// never changing the status.
    pub fn is_bookkeeping(&self) -> bool {
        matches!(
            self,
            EventKind::TargetBindingApplied { .. }
                | EventKind::CallbackDelivered { .. }
                | EventKind::CallbackFailed { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_and_kind_are_flat_camel_case_json() {
        let event = Event {
            seq: 7,
            at: "2026-01-02T03:04:05.123456789Z".parse().unwrap(),
            execution_id: ExecutionId::new(),
            tenant_id: "acme".parse().unwrap(),
            kind: EventKind::RetryScheduled {
                attempt: 1,
                error: ExecutionError::new("boom", "it broke"),
                not_before: "2026-01-02T03:04:06Z".parse().unwrap(),
            },
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "retry_scheduled");
        assert_eq!(json["seq"], 7);
        assert_eq!(json["tenantId"], "acme");
        assert_eq!(json["notBefore"], "2026-01-02T03:04:06Z");
        assert_eq!(json["error"]["code"], "boom");
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn queued_event_carries_the_submission_inline() {
        let mut submission = Submission::new("echo");
        submission.input = Some("hi".into());
        let event = Event {
            seq: 1,
            at: Utc::now(),
            execution_id: ExecutionId::new(),
            tenant_id: "acme".parse().unwrap(),
            kind: EventKind::Queued(Box::new(submission)),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "queued");
        assert_eq!(json["callableName"], "echo");
        assert_eq!(json["config"]["priority"], 50);
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}
