//! What the ledger reports: points in the log, heads, and the reports of
//! its commands, checks and reads.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::execution::{BackgroundExecution, BackgroundExecutionStatus, ExecutionId, TenantId};
use crate::projection::LiveCounts;
use crate::store::{record, Mark};

/// A point in the log: after event N, or as of time T.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// After the event with this seq (0: before any event).
    Seq(u64),
    /// After the last event recorded at or before this time.
    Time(DateTime<Utc>),
}

/// The end of the log: its last seq and that record's hash (hex). Anyone
/// can keep it as a checkpoint and later check the log still leads to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Head {
    /// The last seq (0 for an empty log).
    pub seq: u64,
    /// The hash of its record, 64 hex digits (zeros for an empty log).
    pub hash: String,
}

/// The result of a submit.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Submitted {
    /// The execution: new, or the one the idempotency key named.
    pub execution: BackgroundExecution,
    /// Whether it was created (false on an idempotency hit: nothing appended).
    pub created: bool,
}

/// What [`Ledger::rebuild_index`](crate::Ledger::rebuild_index) did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct IndexRebuild {
    /// Events folded.
    pub events: u64,
    /// Settled executions, each with its entry written.
    pub settled: u64,
    /// Entries the log does not imply (stale, damaged, or the older
    /// one-per-event layout), removed.
    pub removed: u64,
}

/// What opening with [`LedgerBuilder::accept_tail`](crate::LedgerBuilder::accept_tail) accepted: the log as it
/// is, although its checkpoint disagreed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct AcceptedTail {
    /// The log's end, now recorded by a new checkpoint.
    pub head: Head,
    /// Why the checkpoint was refused: the error opening without
    /// acceptance reports.
    pub refused: String,
}

/// What `verify` checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct VerifyReport {
    /// Events of the live log read, hash-checked, decoded and folded.
    pub events: u64,
    /// Events archived before the live log's first (seqs 1 to this).
    pub archived: u64,
    /// The archive checked (when the ledger has archived, or one was
    /// named).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<super::archive::ArchiveVerified>,
    /// Distinct executions in the log.
    pub executions: u64,
    /// Events the per-execution index accounts for (settled executions'
    /// entries, plus live executions' seqs in the fold), matched one for one
    /// with the events.
    pub index_entries: u64,
    /// Stored snapshots compared with a fresh fold.
    pub snapshots: u64,
    /// Whether the live projection was compared with the fold (it is not
    /// when events were appended during the walk).
    pub projection_compared: bool,
    /// The head verified.
    pub head: Head,
}

/// How one execution changed between two points of the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Change {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Its status at the first point (absent: it did not exist yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<BackgroundExecutionStatus>,
    /// Its status at the second point.
    pub after: BackgroundExecutionStatus,
    /// The events between, as (seq, kind).
    pub events: Vec<(u64, String)>,
}

/// How many executions are in each status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StatusCounts {
    /// Waiting to run (held and backing off included).
    pub queued: u64,
    /// Running an attempt.
    pub running: u64,
    /// Ended with an output.
    pub completed: u64,
    /// Ended with an error.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// Ended with their last attempt timed out.
    pub timeout: u64,
}

impl StatusCounts {
    /// The count of `status`.
    pub fn get(&self, status: BackgroundExecutionStatus) -> u64 {
        *self.slot(status)
    }

    /// Every execution counted.
    pub fn total(&self) -> u64 {
        BackgroundExecutionStatus::ALL
            .iter()
            .map(|s| self.get(*s))
            .sum()
    }

    pub(crate) fn add(&mut self, status: BackgroundExecutionStatus) {
        *self.slot_mut(status) += 1;
    }

    fn slot(&self, status: BackgroundExecutionStatus) -> &u64 {
        use BackgroundExecutionStatus as S;
        match status {
            S::Queued => &self.queued,
            S::Running => &self.running,
            S::Completed => &self.completed,
            S::Failed => &self.failed,
            S::Cancelled => &self.cancelled,
            S::Timeout => &self.timeout,
        }
    }

    fn slot_mut(&mut self, status: BackgroundExecutionStatus) -> &mut u64 {
        use BackgroundExecutionStatus as S;
        match status {
            S::Queued => &mut self.queued,
            S::Running => &mut self.running,
            S::Completed => &mut self.completed,
            S::Failed => &mut self.failed,
            S::Cancelled => &mut self.cancelled,
            S::Timeout => &mut self.timeout,
        }
    }
}

/// Figures about a ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Stats {
    /// The head.
    pub head: Head,
    /// Whose figures `executions` and `live` are: a tenant's (a handle
    /// scoped to it), or every tenant's (absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// Every execution the ledger holds (live and settled), by status.
    #[serde(default)]
    pub executions: StatusCounts,
    /// Live executions by where they are.
    pub live: LiveCounts,
    /// Snapshots stored.
    pub snapshots: u64,
    /// Bytes sled uses on disk.
    pub disk_bytes: u64,
}

pub(super) fn head_of(head: &Mark) -> Head {
    Head {
        seq: head.0,
        hash: record::hex(&head.1),
    }
}
