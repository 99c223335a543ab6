//! The ledger: commands become events, events are appended to the log, and
//! the same state machine folds them into the projection.
//!
//! ```text
//! command ──decide──▶ event ──append──▶ log (a Store, hash-chained) ──apply──▶ projection
//!    ▲                                     │                                     │
//!    └──── refused: nothing appended       └── replay / time travel / verify ────┘
//! ```
//!
//! One concept per file: [`open`] (the builder, the clock, opening),
//! [`replay`] (folding the log, snapshots), [`write`](mod@write) (deciding and
//! appending), [`writer`] (the command handle, combining and group
//! commit), [`commands`] (the command surface), [`read`] (the ledger as it
//! is now), [`time_travel`] (as it was), [`subscription`] (following the
//! log), [`verify`] (checking it), [`report`] (what these return),
//! [`leases`] (heartbeats and live workers), [`retention`] (policies) and
//! [`archive`](mod@archive) (moving settled history out of the live log).

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use crate::execution::TenantId;
use crate::lease::{Leases, Workers};
use crate::projection::Projection;
use crate::store::{Durability, Mark, Store};

mod archive;
mod commands;
mod export;
mod import;
mod leases;
mod list;
mod open;
mod pauses;
mod read;
mod replay;
mod report;
mod retention;
mod retry;
mod schedules;
mod shares;
mod subscription;
mod time_travel;
mod verify;
mod write;
mod writer;

pub use archive::{ArchiveReport, ArchiveVerified};
pub use export::{verify_export, ExportVerified, Exported};
pub use import::Imported;
pub use list::{Cursor, ListFilter, ListPage};
pub use open::{Clock, LedgerBuilder, SystemClock};
pub use report::{
    AcceptedTail, At, Change, Head, IndexRebuild, Stats, StatusCounts, Submitted, VerifyReport,
};
pub use retention::{RetentionPolicy, RetentionReport, TenantHold, TenantRetention};
pub use retry::{Rerun, RetryRefused, RetryReport};
pub use subscription::Subscription;
pub use writer::{Command, Pending};

use replay::Snapshot;

/// An open ledger. Cheap to clone: clones share the same ledger.
///
/// A handle may be scoped to one tenant ([`Ledger::tenant`]): on it, other
/// tenants' executions do not exist for commands and execution reads, and
/// it submits for that tenant only.
#[derive(Clone)]
pub struct Ledger {
    // Dropped first: when the last handle goes, it waits for commands still
    // in flight, so that the ledger (and its directory) is closed on return.
    _last: Arc<writer::LastHandle>,
    inner: Arc<Inner>,
    /// The tenant this handle is scoped to.
    scope: Option<TenantId>,
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("dir", &self.inner.log.location())
            .field("tenant", &self.scope)
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// What opening accepted, with [`LedgerBuilder::accept_tail`].
    accepted: Option<AcceptedTail>,
    log: Box<dyn Store>,
    core: Mutex<Core>,
    clock: Arc<dyn Clock>,
    snapshot_every: u64,
    /// Commands waiting, and who carries them out (see writer.rs).
    combiner: writer::Combiner,
    /// Live workers and their callables.
    workers: Mutex<Workers>,
    /// Held by an archive pass: one at a time.
    archiving: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The projection, as of the head it was folded to: a cache of the log,
/// brought up to the log's head before each decision.
struct Core {
    projection: Projection,
    /// The running attempts' leases.
    leases: Leases,
    head: Mark,
    last_at: DateTime<Utc>,
    since_snapshot: u64,
    poisoned: bool,
    /// When the tenants' shares were last read (`shares.rs`).
    shares_read: std::time::Instant,
}

impl Inner {
    /// The projection, caught up with what other processes sharing the log
    /// appended.
    fn core(&self) -> MutexGuard<'_, Core> {
        let mut core = lock(&self.core);
        self.refresh(&mut core);
        core
    }
}

impl Ledger {
    /// What opening accepted with [`LedgerBuilder::accept_tail`]: `None`
    /// when the checkpoint agreed with the log (nothing needed accepting),
    /// or the ledger was opened without it.
    pub fn accepted_tail(&self) -> Option<&AcceptedTail> {
        self.inner.accepted.as_ref()
    }

    /// The same ledger, scoped to `tenant`: its commands and execution
    /// reads see only `tenant`'s executions (another tenant's is
    /// `NotFound`), and it submits for `tenant` only. Reads of the whole
    /// log are not scoped: events, subscriptions, head, diff,
    /// `projection_at`, verify, stats, counts, `next_due`, metrics.
    ///
    /// Scoping is a convenience for code acting for one tenant, not a
    /// security boundary: `tenant` on a scoped handle scopes it to another
    /// tenant.
    pub fn tenant(&self, tenant: TenantId) -> Ledger {
        Ledger {
            scope: Some(tenant),
            ..self.clone()
        }
    }

    /// The tenant this handle is scoped to, if any.
    pub fn scope(&self) -> Option<&TenantId> {
        self.scope.as_ref()
    }

    /// Whether `tenant`'s executions are visible on this handle.
    fn sees(&self, tenant: &TenantId) -> bool {
        self.scope.as_ref().is_none_or(|s| s == tenant)
    }

    /// The tenant a read asked for, within this handle's scope: `Err` when
    /// they name different tenants (nothing to see).
    fn within<'a>(&'a self, tenant: Option<&'a TenantId>) -> Result<Option<&'a TenantId>, ()> {
        match (self.scope.as_ref(), tenant) {
            (Some(s), Some(t)) if s != t => Err(()),
            (s, t) => Ok(t.or(s)),
        }
    }

    /// Where the ledger is: its data directory, or its database's URL
    /// without the password.
    pub fn path(&self) -> &Path {
        self.inner.log.location()
    }

    /// The durability appends are acknowledged with.
    pub fn durability(&self) -> Durability {
        self.inner.log.durability()
    }

    /// The ledger's clock's current time.
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    fn core(&self) -> MutexGuard<'_, Core> {
        self.inner.core()
    }
}
