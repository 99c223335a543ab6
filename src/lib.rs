//! execution-ledger: an event-sourced, hash-chained ledger of background
//! executions, on sled.
//!
//! Every lifecycle transition of every execution — queued, started,
//! completed, failed, retried, timed out, cancelled, recovered, callback
//! delivered — is an [`Event`], appended once to a hash-chained log. The
//! state of each execution and the priority queue are a [`Projection`]
//! folded from the log by one pure state machine ([`check`] / [`apply`]),
//! the same for live commands, replay after a crash, time travel and
//! [`Ledger::verify`].
//!
//! ```
//! use execution_ledger::{At, BackgroundExecutionStatus, Ledger, Submission};
//!
//! let dir = tempfile::tempdir()?;
//! let ledger = Ledger::open(dir.path())?;
//! let acme = "acme".parse()?;
//!
//! let id = ledger.submit(&acme, Submission::new("echo")).wait()?.execution.execution_id;
//! let claimed = ledger.claim(Some("worker-1")).wait()?.expect("runnable");
//! ledger.complete(id, claimed.attempt, serde_json::json!("done")).wait()?;
//!
//! // The audit trail, and the execution as it was after its first event.
//! assert_eq!(ledger.history(id)?.len(), 3);
//! let then = ledger.execution_at(id, At::Seq(1))?.expect("it existed");
//! assert_eq!(then.status, BackgroundExecutionStatus::Queued);
//! assert_eq!(ledger.get(id)?.status, BackgroundExecutionStatus::Completed);
//! ledger.verify()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A [`Runtime`] runs registered async callables on tokio workers over a
//! ledger: priorities, timeouts, retries with back-off, cancellation,
//! progress streams, target bindings and result callbacks, each step
//! recorded as an event.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod command;
mod error;
mod event;
mod execution;
mod fair;
#[doc(hidden)]
pub mod fuzzing;
mod ids;
mod lease;
mod ledger;
mod machine;
mod metrics;
mod pause;
mod projection;
mod queue;
mod runtime;
mod schedule;
mod signing;
mod store;

pub use crate::command::{
    Claim, Retry, MAX_ATTEMPTS, MAX_BATCH, MAX_CLAIM_CALLABLES, MAX_CONTEXT_ENTRIES,
    MAX_INPUT_BYTES, MAX_NAME_BYTES, MAX_OUTPUT_BYTES,
};
pub use crate::error::{CommandError, Error, ErrorKind, StorageError};
pub use crate::event::{Control, ControlKind, Entry, Event, EventKind, RecoveryReason, Submission};
pub use crate::execution::{
    bound_output, BackgroundExecution, BackgroundExecutionConfig, BackgroundExecutionMode,
    BackgroundExecutionQueue, BackgroundExecutionStatus, ExecutionError, RetryConfig, SpawnMode,
    TargetBindingConfig,
};
pub use crate::fair::{TenantShare, MAX_WEIGHT};
pub use crate::ids::{ExecutionId, ParseIdError, TenantId, TriggerId};
pub use crate::lease::{Heartbeat, Lease, DEFAULT_LEASE, MAX_CLAIM, MAX_LEASE, MIN_LEASE};
pub use crate::ledger::{
    verify_export, AcceptedTail, ArchiveReport, ArchiveVerified, At, Change, Clock, Command,
    Cursor, ExportVerified, Exported, Head, Imported, IndexRebuild, Ledger, LedgerBuilder,
    ListFilter, ListPage, Pending, Rerun, RetentionPolicy, RetentionReport, RetryRefused,
    RetryReport, Stats, StatusCounts, Submitted, Subscription, SystemClock, TenantHold,
    TenantRetention, VerifyReport,
};
pub use crate::machine::{
    after_failure, after_loss, after_timeout, apply, awaits_binding, awaits_callback, check,
    is_settled, Refusal, TransitionError, MAX_CALLBACK_ATTEMPTS, RETRYABLE,
};
pub use crate::metrics::{
    HistogramSnapshot, Metrics, Outcome, OutcomeCount, BUCKETS_US, MAX_SERIES, OTHER,
    WORK_BUCKETS_US,
};
pub use crate::pause::{Pause, PauseScope};
pub use crate::projection::{LiveCounts, Projection};
pub use crate::runtime::{
    BindFuture, Binder, CallContext, CallFuture, CallResult, ExecutionHandle, Progress, Runtime,
    RuntimeBuilder, ScheduledLater,
};
pub use crate::schedule::{
    Fired, LastFired, Missed, NewSchedule, Schedule, ScheduleSlot, GRACE, MAX_MISSED_COUNTED,
};
pub use crate::signing::{
    verify_callback, CallbackSecrets, SecretsError, SignatureError, ATTEMPT_HEADER,
    DEFAULT_TOLERANCE, IDEMPOTENCY_HEADER, MAX_SECRETS, MIN_SECRET_BYTES, SIGNATURE_HEADER,
};
pub use crate::store::Durability;
