//! The state machine: the one place that knows which transition is legal.
//!
//! [`check`] says whether an event may follow an execution's state;
//! [`apply`] checks and then folds it in. The live path (a command becomes an
//! event, the event is appended, then applied) and every replay (open, time
//! travel, `verify`) go through these two functions and nothing else. The
//! policy helpers at the bottom ([`after_failure`], [`after_timeout`],
//! [`after_loss`]) decide which event a failed, timed-out or lost attempt
//! becomes, by the execution's retry policy.

use std::fmt;

use chrono::{DateTime, Duration, Utc};

use crate::event::{Event, EventKind, RecoveryReason};
use crate::execution::{
    BackgroundExecution, BackgroundExecutionMode, BackgroundExecutionStatus, ExecutionError,
    ExecutionId,
};

/// Callback deliveries tried before the ledger gives up on one.
pub const MAX_CALLBACK_ATTEMPTS: u32 = 5;

/// Why the state machine refused an event.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The execution's status does not allow it.
    Status(BackgroundExecutionStatus),
    /// The event names an attempt other than the current one (a late answer
    /// from an abandoned attempt, or a start out of turn).
    StaleAttempt {
        /// The attempt the event names.
        given: u32,
        /// The attempt the execution is at (for a start: the one expected).
        current: u32,
    },
    /// No attempts are left.
    AttemptsExhausted {
        /// Attempts in all.
        max: u32,
    },
    /// It waits for its retry back-off or run-at time.
    NotDue {
        /// When it becomes runnable.
        not_before: DateTime<Utc>,
    },
    /// It is deferred and not yet released.
    Held,
    /// Only deferred executions are released.
    NotDeferred,
    /// It was released already (or has started).
    AlreadyReleased,
    /// An execution with this id exists already.
    AlreadyExists,
    /// No execution with this id exists.
    Unknown,
    /// The event's tenant is not the execution's.
    OtherTenant,
    /// The event is dated before a time already recorded for the execution.
    Backdated,
    /// The execution has no target binding, or it was recorded already.
    NoBindingPending,
    /// The execution has no callback, or it was delivered or given up.
    NoCallbackPending,
    /// The attempt is held by the process that runs it, without a lease:
    /// there is nothing to heartbeat.
    NotLeased,
    /// Only a settled execution (finished, nothing pending) is redacted.
    NotSettled(BackgroundExecutionStatus),
    /// It is under legal hold.
    LegalHold,
    /// Its tenant is under legal hold (kept beside the log:
    /// [`crate::Ledger::hold_tenant`]).
    TenantHeld,
    /// Its payloads were redacted already.
    AlreadyRedacted,
    /// It is under legal hold already.
    AlreadyHeld,
    /// It is not under legal hold.
    NotHeld,
    /// It was retried by hand already: the new run is the one to retry.
    AlreadyRetried {
        /// The new run.
        retry: ExecutionId,
    },
    /// A recovery outcome other than the retry policy's (`queued` while
    /// attempts remain, `failed` when they are used up).
    WrongOutcome {
        /// What the policy asks for.
        expected: BackgroundExecutionStatus,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Status(s) => write!(f, "it is {s}"),
            Refusal::StaleAttempt { given, current } => {
                write!(f, "attempt {given} is not the current attempt ({current})")
            }
            Refusal::AttemptsExhausted { max } => write!(f, "it has used all {max} attempts"),
            Refusal::NotDue { not_before } => {
                write!(f, "it is not runnable before {}", not_before.to_rfc3339())
            }
            Refusal::Held => write!(f, "it is deferred and not released"),
            Refusal::NotDeferred => write!(f, "it is not deferred"),
            Refusal::AlreadyReleased => write!(f, "it was released already"),
            Refusal::AlreadyExists => write!(f, "it exists already"),
            Refusal::Unknown => write!(f, "it does not exist"),
            Refusal::OtherTenant => write!(f, "it belongs to another tenant"),
            Refusal::Backdated => write!(f, "the event is dated before its last transition"),
            Refusal::NoBindingPending => write!(f, "no target binding is pending"),
            Refusal::NoCallbackPending => write!(f, "no callback is pending"),
            Refusal::NotLeased => {
                write!(
                    f,
                    "its attempt is held by the process running it, not leased"
                )
            }
            Refusal::NotSettled(s) => write!(
                f,
                "it is {s} and not settled (only a finished execution with nothing pending is redacted)"
            ),
            Refusal::LegalHold => write!(f, "it is under legal hold"),
            Refusal::TenantHeld => write!(f, "its tenant is under legal hold"),
            Refusal::AlreadyRedacted => write!(f, "its payloads were redacted already"),
            Refusal::AlreadyHeld => write!(f, "it is under legal hold already"),
            Refusal::NotHeld => write!(f, "it is not under legal hold"),
            Refusal::AlreadyRetried { retry } => {
                write!(f, "it was retried already, as {retry} (retry that one)")
            }
            Refusal::WrongOutcome { expected } => {
                write!(f, "its retry policy makes it {expected}")
            }
        }
    }
}

/// An event the state machine refused: which execution, which command, why.
///
/// Displays as `cannot complete 0193…: it is cancelled`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransitionError {
    /// The execution concerned.
    pub execution: ExecutionId,
    /// The verb of the refused command (`complete`, `cancel`, …).
    pub command: &'static str,
    /// The refused event's kind (`completed`, `cancelled`, …).
    pub event: &'static str,
    /// Why it was refused.
    pub refusal: Refusal,
}

impl TransitionError {
    /// The status the execution was in, when the refusal is about status.
    pub fn from_status(&self) -> Option<BackgroundExecutionStatus> {
        match self.refusal {
            Refusal::Status(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for TransitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot {} {}: {}",
            self.command, self.execution, self.refusal
        )
    }
}

impl std::error::Error for TransitionError {}

/// Whether a finished execution still awaits its target binding.
pub fn awaits_binding(e: &BackgroundExecution) -> bool {
    e.status == BackgroundExecutionStatus::Completed
        && e.config.target_binding.is_some()
        && !e.target_binding_applied
        && e.target_binding_error.is_none()
}

/// Whether a finished execution still awaits its callback delivery.
pub fn awaits_callback(e: &BackgroundExecution) -> bool {
    e.status.is_terminal()
        && e.calls_back()
        && !e.callback_delivered
        && e.callback_attempts < MAX_CALLBACK_ATTEMPTS
}

/// Whether an execution is finished with nothing pending: no event may
/// follow it any more.
pub fn is_settled(e: &BackgroundExecution) -> bool {
    e.status.is_terminal() && !awaits_binding(e) && !awaits_callback(e)
}

/// The execution as `event`, legal after `state`, leaves it when the event
/// settles it: finished with nothing pending. (Only events that can end an
/// execution or its bookkeeping are folded to find out.)
pub(crate) fn settles(
    state: Option<&BackgroundExecution>,
    event: &Event,
) -> Option<BackgroundExecution> {
    match event.kind {
        EventKind::Queued(_)
        | EventKind::Released
        | EventKind::Started { .. }
        | EventKind::RetryScheduled { .. } => None,
        _ => {
            let mut state = state.cloned();
            apply(&mut state, event).ok()?;
            state.filter(is_settled)
        }
    }
}

/// Whether `event` may follow `state` (`None`: the execution does not exist).
///
/// # Errors
///
/// A [`TransitionError`] naming the execution, the command and the reason
/// when the event is illegal.
pub fn check(state: Option<&BackgroundExecution>, event: &Event) -> Result<(), TransitionError> {
    refusal(state, event).map_or(Ok(()), |refusal| {
        Err(TransitionError {
            execution: event.execution_id,
            command: event.kind.verb(),
            event: event.kind.name(),
            refusal,
        })
    })
}

/// The statuses a retry by hand takes: those an execution ends with,
/// but completed.
pub const RETRYABLE: [BackgroundExecutionStatus; 3] = [
    BackgroundExecutionStatus::Failed,
    BackgroundExecutionStatus::Timeout,
    BackgroundExecutionStatus::Cancelled,
];

/// Why `e` may not be retried by hand now, if it may not: it has not ended
/// (or completed), its payloads were redacted (its input is gone), or it
/// was retried already (once each: the new run is retried next).
pub(crate) fn retry_refusal(e: &BackgroundExecution) -> Option<Refusal> {
    if !RETRYABLE.contains(&e.status) {
        Some(Refusal::Status(e.status))
    } else if e.redacted_at.is_some() {
        Some(Refusal::AlreadyRedacted)
    } else {
        e.retried_as.map(|retry| Refusal::AlreadyRetried { retry })
    }
}

fn refusal(state: Option<&BackgroundExecution>, event: &Event) -> Option<Refusal> {
    use BackgroundExecutionStatus::{Queued, Running};

    let e = match (state, &event.kind) {
        (None, EventKind::Queued(_)) => return None,
        (Some(_), EventKind::Queued(_)) => return Some(Refusal::AlreadyExists),
        (None, _) => return Some(Refusal::Unknown),
        (Some(e), _) => e,
    };
    if e.tenant_id != event.tenant_id {
        return Some(Refusal::OtherTenant);
    }
    let last = [e.started_at, e.completed_at, e.released_at]
        .into_iter()
        .flatten()
        .fold(e.queued_at, DateTime::max);
    if event.at < last {
        return Some(Refusal::Backdated);
    }
    match &event.kind {
        EventKind::Redacted { .. } => {
            return if !is_settled(e) {
                Some(Refusal::NotSettled(e.status))
            } else if e.legal_hold {
                Some(Refusal::LegalHold)
            } else if e.redacted_at.is_some() {
                Some(Refusal::AlreadyRedacted)
            } else {
                None
            };
        }
        EventKind::LegalHold { .. } => return e.legal_hold.then_some(Refusal::AlreadyHeld),
        EventKind::LegalHoldReleased { .. } => return (!e.legal_hold).then_some(Refusal::NotHeld),
        EventKind::Retried { .. } => return retry_refusal(e),
        _ => {}
    }
    if is_settled(e) {
        return Some(Refusal::Status(e.status));
    }
    let status = e.status;
    if status.is_terminal() && !event.kind.is_bookkeeping() {
        return Some(Refusal::Status(status));
    }
    // Bookkeeping (binding, callback) only follows a finished execution: the
    // `awaits_*` tests below require a terminal status.
    let max = e.config.max_attempts();
    let current_attempt = |given: u32| {
        if status != Running {
            Some(Refusal::Status(status))
        } else if given != e.attempt {
            Some(Refusal::StaleAttempt {
                given,
                current: e.attempt,
            })
        } else {
            None
        }
    };
    match &event.kind {
        EventKind::Queued(_) => unreachable!("handled above"),
        EventKind::Redacted { .. }
        | EventKind::LegalHold { .. }
        | EventKind::LegalHoldReleased { .. }
        | EventKind::Retried { .. } => unreachable!("handled above"),
        EventKind::Released => {
            if e.config.mode != BackgroundExecutionMode::Deferred {
                Some(Refusal::NotDeferred)
            } else if status != Queued {
                Some(Refusal::Status(status))
            } else if e.released_at.is_some() || e.attempt > 0 {
                Some(Refusal::AlreadyReleased)
            } else {
                None
            }
        }
        EventKind::Started { attempt, .. } => {
            if status != Queued {
                Some(Refusal::Status(status))
            } else if *attempt != e.attempt + 1 {
                Some(Refusal::StaleAttempt {
                    given: *attempt,
                    current: e.attempt + 1,
                })
            } else if *attempt > max {
                Some(Refusal::AttemptsExhausted { max })
            } else if e.is_held() {
                Some(Refusal::Held)
            } else {
                match e.not_before {
                    Some(not_before) if event.at < not_before => {
                        Some(Refusal::NotDue { not_before })
                    }
                    _ => None,
                }
            }
        }
        EventKind::Completed { attempt, .. }
        | EventKind::Failed { attempt, .. }
        | EventKind::TimedOut { attempt } => current_attempt(*attempt),
        EventKind::RetryScheduled { attempt, .. } => current_attempt(*attempt).or({
            if *attempt >= max {
                Some(Refusal::AttemptsExhausted { max })
            } else {
                None
            }
        }),
        EventKind::Recovered {
            attempt, outcome, ..
        } => current_attempt(*attempt).or_else(|| {
            let expected = if *attempt < max {
                Queued
            } else {
                BackgroundExecutionStatus::Failed
            };
            (*outcome != expected).then_some(Refusal::WrongOutcome { expected })
        }),
        EventKind::Cancelled { .. } => match status {
            Queued | Running => None,
            _ => Some(Refusal::Status(status)),
        },
        EventKind::TargetBindingApplied { .. } => {
            (!awaits_binding(e)).then_some(Refusal::NoBindingPending)
        }
        EventKind::CallbackDelivered { attempt, .. }
        | EventKind::CallbackFailed { attempt, .. } => {
            if !awaits_callback(e) {
                Some(Refusal::NoCallbackPending)
            } else if *attempt != e.callback_attempts + 1 {
                Some(Refusal::StaleAttempt {
                    given: *attempt,
                    current: e.callback_attempts + 1,
                })
            } else {
                None
            }
        }
    }
}

/// Checks `event` against `state` and folds it in. On a refusal `state` is
/// left exactly as it was.
///
/// # Errors
///
/// A [`TransitionError`] when the event is illegal (see [`check`]).
pub fn apply(
    state: &mut Option<BackgroundExecution>,
    event: &Event,
) -> Result<(), TransitionError> {
    check(state.as_ref(), event)?;
    let at = event.at;
    if let EventKind::Queued(submission) = &event.kind {
        let s = submission.as_ref().clone();
        *state = Some(BackgroundExecution {
            execution_id: event.execution_id,
            tenant_id: event.tenant_id.clone(),
            callable_name: s.callable_name,
            input: s.input,
            context: s.context,
            config: s.config,
            status: BackgroundExecutionStatus::Queued,
            queued_at: at,
            started_at: None,
            completed_at: None,
            output: None,
            error: None,
            target_binding_applied: false,
            trigger_id: s.trigger_id,
            metadata: s.metadata,
            attempt: 0,
            not_before: s.run_at,
            released_at: None,
            idempotency_key: s.idempotency_key,
            callback_attempts: 0,
            callback_delivered: false,
            target_binding_error: None,
            redacted_at: None,
            legal_hold: false,
            retry_of: s.retry_of,
            schedule: s.schedule.clone(),
            retried_as: None,
        });
        return Ok(());
    }
    let e = state
        .as_mut()
        .expect("check refuses events of unknown executions");
    match &event.kind {
        EventKind::Queued(_) => unreachable!("handled above"),
        EventKind::Released => {
            e.released_at = Some(at);
            e.not_before = None;
        }
        EventKind::Started { attempt, .. } => {
            e.status = BackgroundExecutionStatus::Running;
            e.attempt = *attempt;
            e.started_at = Some(at);
            e.not_before = None;
            e.error = None;
        }
        EventKind::Completed { output, .. } => {
            e.status = BackgroundExecutionStatus::Completed;
            e.output = Some(output.clone());
            e.completed_at = Some(at);
        }
        EventKind::Failed { error, .. } => {
            e.status = BackgroundExecutionStatus::Failed;
            e.error = Some(error.clone());
            e.completed_at = Some(at);
        }
        EventKind::RetryScheduled {
            error, not_before, ..
        } => {
            e.status = BackgroundExecutionStatus::Queued;
            e.error = Some(error.clone());
            e.not_before = Some(*not_before);
        }
        EventKind::TimedOut { attempt } => {
            e.status = BackgroundExecutionStatus::Timeout;
            e.error = Some(timeout_error(e, *attempt));
            e.completed_at = Some(at);
        }
        EventKind::Cancelled { .. } => {
            e.status = BackgroundExecutionStatus::Cancelled;
            e.not_before = None;
            e.completed_at = Some(at);
        }
        EventKind::Recovered {
            attempt,
            outcome,
            reason,
        } => {
            e.status = *outcome;
            e.error = Some(match reason {
                Some(RecoveryReason::LeaseExpired) => ExecutionError::new(
                    "lease_expired",
                    format!("attempt {attempt}'s lease ran out: its worker stopped heartbeating"),
                ),
                _ => ExecutionError::new(
                    "lost",
                    format!("attempt {attempt} was lost when its process stopped"),
                ),
            });
            if outcome.is_terminal() {
                e.completed_at = Some(at);
            }
        }
        EventKind::TargetBindingApplied { error, .. } => {
            e.target_binding_applied = error.is_none();
            e.target_binding_error = error.clone();
        }
        EventKind::CallbackDelivered { attempt, .. } => {
            e.callback_attempts = *attempt;
            e.callback_delivered = true;
        }
        EventKind::CallbackFailed { attempt, .. } => {
            e.callback_attempts = *attempt;
        }
        EventKind::Redacted { .. } => {
            e.redact_payloads();
            e.redacted_at = Some(at);
        }
        EventKind::LegalHold { .. } => e.legal_hold = true,
        EventKind::LegalHoldReleased { .. } => e.legal_hold = false,
        EventKind::Retried {
            new_execution_id, ..
        } => e.retried_as = Some(*new_execution_id),
    }
    Ok(())
}

fn timeout_error(e: &BackgroundExecution, attempt: u32) -> ExecutionError {
    ExecutionError::new(
        "timeout",
        format!(
            "attempt {attempt} timed out after {}ms",
            e.config.timeout_ms
        ),
    )
}

/// The event a failed attempt becomes: `retry_scheduled` with the back-off
/// of the retry policy while attempts remain, `failed` after the last.
pub fn after_failure(
    e: &BackgroundExecution,
    error: ExecutionError,
    now: DateTime<Utc>,
) -> EventKind {
    let attempt = e.attempt;
    match &e.config.retry {
        Some(retry) if attempt < e.config.max_attempts() => EventKind::RetryScheduled {
            attempt,
            error,
            not_before: later_by(now, retry.delay_ms(attempt)),
        },
        _ => EventKind::Failed { attempt, error },
    }
}

/// `now` plus `ms` milliseconds, or the latest time there is when that is
/// out of range (a back-off of `u64::MAX` ms must neither wrap to the past
/// nor panic).
pub(crate) fn later_by(now: DateTime<Utc>, ms: u64) -> DateTime<Utc> {
    i64::try_from(ms)
        .ok()
        .and_then(Duration::try_milliseconds)
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The event a timed-out attempt becomes: a retry while attempts remain,
/// `timed_out` after the last.
pub fn after_timeout(e: &BackgroundExecution, now: DateTime<Utc>) -> EventKind {
    match after_failure(e, timeout_error(e, e.attempt), now) {
        EventKind::Failed { attempt, .. } => EventKind::TimedOut { attempt },
        retry => retry,
    }
}

/// The `recovered` event for an execution whose running attempt was lost,
/// for `reason`: back to queued while attempts remain, failed after the
/// last.
pub fn after_loss(e: &BackgroundExecution, reason: RecoveryReason) -> EventKind {
    let outcome = if e.attempt < e.config.max_attempts() {
        BackgroundExecutionStatus::Queued
    } else {
        BackgroundExecutionStatus::Failed
    };
    EventKind::Recovered {
        attempt: e.attempt,
        outcome,
        reason: Some(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Submission;
    use crate::execution::RetryConfig;

    fn event(id: ExecutionId, seq: u64, kind: EventKind) -> Event {
        Event {
            seq,
            at: Utc::now(),
            execution_id: id,
            tenant_id: "acme".parse().unwrap(),
            kind,
        }
    }

    fn queued(id: ExecutionId, submission: Submission) -> Option<BackgroundExecution> {
        let mut state = None;
        apply(
            &mut state,
            &event(id, 1, EventKind::Queued(Box::new(submission))),
        )
        .unwrap();
        state
    }

    #[test]
    fn refusal_names_execution_command_and_status() {
        let id = ExecutionId::new();
        let mut state = queued(id, Submission::new("echo"));
        apply(
            &mut state,
            &event(id, 2, EventKind::Cancelled { reason: None }),
        )
        .unwrap();
        let err = apply(
            &mut state,
            &event(
                id,
                3,
                EventKind::Completed {
                    attempt: 1,
                    output: 1.into(),
                },
            ),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot complete {id}: it is cancelled")
        );
        assert_eq!(
            err.from_status(),
            Some(BackgroundExecutionStatus::Cancelled)
        );
    }

    #[test]
    fn a_late_answer_from_an_abandoned_attempt_is_fenced_off() {
        let id = ExecutionId::new();
        let mut submission = Submission::new("echo");
        submission.config.retry = Some(RetryConfig {
            max_attempts: 3,
            ..RetryConfig::default()
        });
        let mut state = queued(id, submission);
        apply(
            &mut state,
            &event(
                id,
                2,
                EventKind::Started {
                    attempt: 1,
                    worker: None,
                    lease_ms: None,
                },
            ),
        )
        .unwrap();
        let lost = after_loss(state.as_ref().unwrap(), RecoveryReason::ProcessStopped);
        apply(&mut state, &event(id, 3, lost)).unwrap();
        apply(
            &mut state,
            &event(
                id,
                4,
                EventKind::Started {
                    attempt: 2,
                    worker: None,
                    lease_ms: None,
                },
            ),
        )
        .unwrap();
        let before = state.clone();
        let err = apply(
            &mut state,
            &event(
                id,
                5,
                EventKind::Completed {
                    attempt: 1,
                    output: 1.into(),
                },
            ),
        )
        .unwrap_err();
        assert_eq!(
            err.refusal,
            Refusal::StaleAttempt {
                given: 1,
                current: 2
            }
        );
        assert_eq!(state, before, "a refused event changes nothing");
    }

    #[test]
    fn failures_retry_with_backoff_until_attempts_are_used_up() {
        let id = ExecutionId::new();
        let mut submission = Submission::new("echo");
        submission.config.retry = Some(RetryConfig {
            max_attempts: 2,
            initial_delay_ms: 1_000,
            backoff_multiplier: 2.0,
            max_delay_ms: 10_000,
        });
        let mut state = queued(id, submission);
        apply(
            &mut state,
            &event(
                id,
                2,
                EventKind::Started {
                    attempt: 1,
                    worker: None,
                    lease_ms: None,
                },
            ),
        )
        .unwrap();
        let now = Utc::now();
        let kind = after_failure(state.as_ref().unwrap(), ExecutionError::new("x", "y"), now);
        assert!(
            matches!(kind, EventKind::RetryScheduled { not_before, .. } if not_before == now + Duration::seconds(1))
        );
        apply(&mut state, &event(id, 3, kind)).unwrap();
        // Not runnable before its back-off.
        let early = apply(
            &mut state,
            &event(
                id,
                4,
                EventKind::Started {
                    attempt: 2,
                    worker: None,
                    lease_ms: None,
                },
            ),
        );
        assert!(matches!(early.unwrap_err().refusal, Refusal::NotDue { .. }));
        let mut late = event(
            id,
            4,
            EventKind::Started {
                attempt: 2,
                worker: None,
                lease_ms: None,
            },
        );
        late.at = now + Duration::seconds(2);
        apply(&mut state, &late).unwrap();
        let kind = after_timeout(state.as_ref().unwrap(), late.at);
        assert_eq!(kind, EventKind::TimedOut { attempt: 2 });
    }

    #[test]
    fn held_deferred_executions_start_only_once_released() {
        let id = ExecutionId::new();
        let mut submission = Submission::new("echo");
        submission.config.mode = BackgroundExecutionMode::Deferred;
        let mut state = queued(id, submission);
        let start = event(
            id,
            2,
            EventKind::Started {
                attempt: 1,
                worker: None,
                lease_ms: None,
            },
        );
        assert_eq!(
            check(state.as_ref(), &start).unwrap_err().refusal,
            Refusal::Held
        );
        apply(&mut state, &event(id, 2, EventKind::Released)).unwrap();
        let again = apply(&mut state, &event(id, 3, EventKind::Released)).unwrap_err();
        assert_eq!(again.refusal, Refusal::AlreadyReleased);
        apply(
            &mut state,
            &event(
                id,
                3,
                EventKind::Started {
                    attempt: 1,
                    worker: None,
                    lease_ms: None,
                },
            ),
        )
        .unwrap();
    }
}
