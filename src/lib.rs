//! execution-ledger: an event-sourced, hash-chained ledger of background
//! executions.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod error;
mod event;
mod execution;
mod ledger;
mod machine;
mod projection;
mod queue;
mod runtime;
mod store;

pub use crate::error::{Error, ErrorKind, LedgerError, ParseIdError};
pub use crate::event::{Event, EventKind, Submission};
pub use crate::execution::{
    bound_output, BackgroundExecution, BackgroundExecutionConfig, BackgroundExecutionMode,
    BackgroundExecutionQueue, BackgroundExecutionStatus, ExecutionError, ExecutionId, RetryConfig,
    SpawnMode, TargetBindingConfig, TenantId, TriggerId,
};
pub use crate::ledger::{
    At, Change, Clock, Head, Ledger, LedgerBuilder, Stats, Submitted, Subscription, SystemClock,
    TenantLedger, VerifyReport, MAX_CONTEXT_ENTRIES, MAX_INPUT_BYTES, MAX_NAME_BYTES,
    MAX_OUTPUT_BYTES,
};
pub use crate::machine::{
    after_failure, after_loss, after_timeout, apply, awaits_binding, awaits_callback, check,
    is_settled, Refusal, TransitionError, MAX_CALLBACK_ATTEMPTS,
};
pub use crate::projection::{LiveCounts, Projection};
pub use crate::runtime::{
    BindFuture, Binder, CallContext, CallFuture, CallResult, ExecutionHandle, Progress, Runtime,
    RuntimeBuilder,
};
pub use crate::store::Durability;
