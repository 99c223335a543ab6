//! The storage seam: what the ledger needs of its log, whatever keeps it.
//!
//! ```text
//! ledger ──append(after head, events)──▶ Store ──▶ records, chained (record.rs)
//!    ▲        conflict: the records it missed       │
//!    └──── records from a seq, one execution's, ────┘
//!          snapshots, wait for new records
//! ```
//!
//! The ledger keeps its projection as a cache of the log: it decides a
//! command against the projection as of the head it knows, and appends
//! *after that head*. The engine appends only if its log still ends there
//! (compare-and-append), assigning each event's record its link to the one
//! before; otherwise it appends nothing and hands back what the ledger
//! missed, which the ledger folds in before deciding again.
//!
//! Engines: [`sled`] (embedded; one process owns a directory) and
//! [`postgres`] (a database any number of processes share). Nothing
//! outside an engine's module names its storage.

pub(crate) mod archive;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
pub(crate) mod record;
pub(crate) mod sled;

/// The embedded engine: one process owns a directory.
pub(crate) use self::sled as embedded;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::{ErrorKind, StorageError};
use crate::event::{Control, Event, EventKind};
use crate::execution::{BackgroundExecution, BackgroundExecutionStatus, ExecutionId, TenantId};
use crate::metrics::Counters;
use record::Hash;

/// When an acknowledged append is safe, chosen by the caller. As told here
/// for sled; on PostgreSQL the session's `synchronous_commit`: `Synced`
/// keeps the server's setting unless it is `off` (then `on`), `Flushed`
/// sets `local`, `Buffered` sets `off`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// On disk before the call returns: sled's flush, then an `fdatasync` of
    /// sled's files and of the checkpoint. Survives a power loss. Concurrent
    /// callers share one sync (group commit).
    #[default]
    Synced,
    /// Handed to the operating system before the call returns (sled's flush,
    /// no `fdatasync`): survives the process crashing, not a power loss.
    Flushed,
    /// Left in sled's buffers, written by its background flush (every
    /// 500 ms) or [`Ledger::flush`](crate::Ledger::flush): a crash can lose
    /// the most recent appends.
    Buffered,
}

/// The end of a log: its last seq and that record's hash
/// ([`record::GENESIS`] and 0 when it is empty).
pub(crate) type Mark = (u64, Hash);

/// A stored record's bytes (the format of [`record`]), held the way the
/// engine keeps them (no copy).
pub(crate) struct Bytes(Box<dyn AsRef<[u8]> + Send + Sync>);

impl Bytes {
    pub(crate) fn new(bytes: impl AsRef<[u8]> + Send + Sync + 'static) -> Self {
        Bytes(Box::new(bytes))
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.len())
    }
}

/// One stored record: its seq and bytes.
pub(crate) type StoredRecord = (u64, Bytes);

/// Stored items in seq order.
pub(crate) type Items<'a, T> = Box<dyn Iterator<Item = Result<T, StorageError>> + 'a>;

/// One event to append, and when it settles its execution, what the
/// engine indexes then: the seqs of all that execution's events (this
/// one's last), and its line in the list of settled executions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Draft<'a> {
    pub(crate) entry: Drafted<'a>,
    pub(crate) settles: Option<&'a Settled>,
    /// The event's record as another ledger wrote it, readable (an
    /// import): stored as it is, with its own hash and link, in place of
    /// one encoded here.
    pub(crate) copied: Option<&'a [u8]>,
}

/// What a draft appends: an execution's event, or a control entry (which
/// the engine stores and indexes under no execution).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Drafted<'a> {
    Event(&'a Event),
    Control(&'a Control),
}

impl<'a> Draft<'a> {
    /// Its seq.
    pub(crate) fn seq(self) -> u64 {
        match self.entry {
            Drafted::Event(e) => e.seq,
            Drafted::Control(c) => c.seq,
        }
    }

    /// Its event, when it is one.
    pub(crate) fn event(self) -> Option<&'a Event> {
        match self.entry {
            Drafted::Event(e) => Some(e),
            Drafted::Control(_) => None,
        }
    }

    /// Whether its record may carry payloads ([`record::may_carry`]).
    pub(crate) fn may_carry(self) -> bool {
        self.event().is_some_and(|e| record::may_carry(&e.kind))
    }

    /// The seqs whose payloads a `redacted` event removes: those of its
    /// execution's events before it (of those an archive pass moved into
    /// a segment meanwhile, the keys are what the engine destroys: the
    /// segment keeps the records as stored).
    pub(crate) fn strips(self) -> impl Iterator<Item = u64> + 'a {
        let seq = self.seq();
        self.settles
            .filter(|_| {
                self.event()
                    .is_some_and(|e| matches!(e.kind, EventKind::Redacted { .. }))
            })
            .into_iter()
            .flat_map(move |s| s.seqs.iter().copied().filter(move |&s| s < seq))
    }
}

/// The seqs from the first to the last of each execution whose `seqs`
/// (each execution's in order, one after another) are given: when each
/// was live.
pub(crate) fn live_ranges(seqs: &[u64]) -> Vec<std::ops::RangeInclusive<u64>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    for end in 1..=seqs.len() {
        // A new execution's seqs start lower.
        if end == seqs.len() || seqs[end] < seqs[end - 1] {
            ranges.push(seqs[start]..=seqs[end - 1]);
            start = end;
        }
    }
    ranges
}

/// An execution that an event settles, as the engine indexes it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Settled {
    /// The seqs of all its events, in order.
    pub(crate) seqs: Vec<u64>,
    /// Its line in the list of settled executions.
    pub(crate) listed: Listed,
}

impl Settled {
    /// `execution` as the event that settled it left it, first appended at
    /// seq `submitted`, with its seqs.
    pub(crate) fn new(execution: &BackgroundExecution, submitted: u64, seqs: Vec<u64>) -> Settled {
        let listed = Listed {
            seq: submitted,
            id: execution.execution_id,
            tenant: execution.tenant_id.clone(),
            callable: execution.callable_name.clone(),
            status: execution.status,
            queued_at: execution.queued_at,
        };
        Settled { seqs, listed }
    }
}

/// A settled execution's line in the list the engine keeps of them, by the
/// seq of its first event (its submission): what listing filters on, so
/// that a page of settled executions is read without decoding their
/// records.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Listed {
    /// The seq of its first event.
    pub(crate) seq: u64,
    /// Its id.
    pub(crate) id: ExecutionId,
    /// Its tenant.
    pub(crate) tenant: TenantId,
    /// Its callable.
    pub(crate) callable: String,
    /// How it ended.
    pub(crate) status: BackgroundExecutionStatus,
    /// When it was submitted.
    pub(crate) queued_at: DateTime<Utc>,
}

impl Listed {
    /// `queued_at` as nanoseconds since 1970, exactly (clamped beyond the
    /// years 1677 to 2262): how the engines keep it.
    pub(crate) fn queued_ns(&self) -> i64 {
        self.queued_at
            .timestamp_nanos_opt()
            .unwrap_or(if self.queued_at.timestamp() < 0 {
                i64::MIN
            } else {
                i64::MAX
            })
    }
}

/// Why an append did not happen.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// The log no longer ends at the head the append was decided against:
    /// nothing was appended; here are the records after that head, in order.
    Conflict(Vec<StoredRecord>),
    /// The engine failed after writing the records up to `written` (the
    /// head the append started from, when none).
    Failed {
        /// What went wrong.
        error: StorageError,
        /// The end of the log as far as it was written.
        written: Mark,
    },
}

/// What an engine keeps beside the log, not in it: the ledger's settings
/// that have no history of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Beside {
    /// Legal holds on whole tenants ([`crate::ledger::TenantHold`]), by
    /// tenant.
    TenantHold,
    /// Schedules ([`crate::Schedule`]), by tenant and name.
    Schedule,
    /// Tenants' shares of the workers ([`crate::TenantShare`]), by tenant.
    TenantShare,
}

impl Beside {
    /// The prefix of its keys where the engine keeps them.
    pub(crate) fn prefix(self) -> &'static str {
        match self {
            Beside::TenantHold => "tenant-hold/",
            Beside::Schedule => "schedule/",
            Beside::TenantShare => "tenant-share/",
        }
    }

    /// What it is, for messages.
    pub(crate) fn what(self) -> &'static str {
        match self {
            Beside::TenantHold => "legal holds on tenants",
            Beside::Schedule => "schedules",
            Beside::TenantShare => "tenants' shares",
        }
    }
}

/// A per-tenant name that an event points at its execution.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Name<'a> {
    /// An idempotency key, set by `queued`.
    Idempotency(&'a TenantId, &'a str),
    /// A binding target, set by a successful `target_binding_applied`.
    Binding(&'a TenantId, &'a str),
}

impl<'a> Name<'a> {
    /// The name an event points at its execution, if any: a submit's
    /// idempotency key, a successful binding's target.
    pub(crate) fn of(event: &'a Event) -> Option<Name<'a>> {
        match &event.kind {
            EventKind::Queued(s) => s
                .idempotency_key
                .as_deref()
                .map(|k| Name::Idempotency(&event.tenant_id, k)),
            EventKind::TargetBindingApplied {
                target,
                error: None,
            } => Some(Name::Binding(&event.tenant_id, target)),
            _ => None,
        }
    }
}

/// What opening found about the log's end, beside the log itself.
#[derive(Debug)]
pub(crate) enum Tail {
    /// The log ends where it should.
    Whole,
    /// The log's end cannot be trusted: why (`Checkpoint`, `LostSuffix`,
    /// `Corrupt` at the seq found).
    Refused(StorageError),
}

/// A log, open. Every method may be called from many threads; appends are
/// serialized by the ledger (one combiner at a time), not by the engine.
pub(crate) trait Store: Send + Sync + 'static {
    /// Where the log lives (the data directory).
    fn location(&self) -> &Path;

    /// The durability appends are acknowledged with.
    fn durability(&self) -> Durability;

    /// The ledger's counters and latency histograms.
    fn counters(&self) -> &Counters;

    // Opening.

    /// The highest seq stored (0 when the log is empty).
    fn last_seq(&self) -> Result<u64, StorageError>;

    /// Checks the log, ending at `last`, against what the engine knows was
    /// durable: `Ok(Tail::Refused(why))` when it cannot be trusted.
    fn check_tail(&self, last: u64) -> Result<Tail, StorageError>;

    /// Starts appending after `head`, which the ledger found by checking
    /// the log from the start or a snapshot; `accepted` is set when the log
    /// was accepted as it is in spite of `check_tail` (`at`: when, as
    /// RFC 3339), which the engine records.
    fn resume(
        &self,
        head: Mark,
        accepted: Option<(&str, &StorageError)>,
    ) -> Result<(), StorageError>;

    // Appending.

    /// Appends `events` if the log still ends at `after` (compare and
    /// append); returns the new end. The ledger numbers the events from
    /// `after`'s seq on, dates and checks them against the projection as of
    /// `after`; the engine commits them only after that head, linking each
    /// record to the one before it here. A log that does not end at `after`
    /// and is not ahead of it (it diverged) is a `Failed` append.
    fn append(&self, after: Mark, events: &[Draft<'_>]) -> Result<Mark, AppendError>;

    /// Returns once `seq` is as durable as [`Store::durability`] promises;
    /// concurrent callers share one sync.
    fn wait_durable(&self, seq: u64) -> Result<(), StorageError>;

    /// Makes everything appended so far durable (synced), whatever the
    /// durability.
    fn flush(&self) -> Result<(), StorageError>;

    /// The highest seq readers may see (durable as promised).
    fn visible(&self) -> u64;

    /// Waits until the visible seq reaches `seq`, or `timeout` passes;
    /// returns the visible seq.
    fn wait_visible(&self, seq: u64, timeout: Duration) -> u64;

    // Reading.

    /// The stored record of `seq`.
    fn record(&self, seq: u64) -> Result<Option<Bytes>, StorageError>;

    /// Stored records from `from` on, in seq order (not checked; see
    /// [`checked_records`]).
    fn records(&self, from: u64) -> Items<'_, StoredRecord>;

    /// The seqs of a settled execution's events, in order (empty for one
    /// still live, whose seqs the ledger's projection holds, and for one
    /// that does not exist).
    fn execution_seqs(&self, id: &ExecutionId) -> Result<Vec<u64>, StorageError>;

    /// The execution a per-tenant name points at.
    fn named(&self, name: Name<'_>) -> Result<Option<ExecutionId>, StorageError>;

    /// Settled executions submitted before seq `before`, newest submission
    /// first (live ones are in the ledger's projection).
    fn listed_before(&self, before: u64) -> Items<'_, Listed>;

    /// Whether the list of settled executions holds every one of them:
    /// not when the log was written by a version that kept none, until
    /// [`Store::rebuild_index`] has built it.
    fn list_complete(&self) -> Result<bool, StorageError>;

    // Snapshots (derived: a damaged or missing one is rebuilt from the log).

    /// Stores a snapshot of the projection as of `seq`.
    fn put_snapshot(&self, seq: u64, bytes: Vec<u8>) -> Result<(), StorageError>;

    /// Snapshots at or below `seq`, newest first.
    fn snapshots_below(&self, seq: u64) -> Items<'_, StoredRecord>;

    /// Every snapshot's seq, in order.
    fn snapshot_seqs(&self) -> Result<Vec<u64>, StorageError>;

    // Checking and repair.

    /// Checks the log as it is now against what the engine knows was
    /// durable (as [`Store::check_tail`], an error when refused).
    fn check_tail_now(&self) -> Result<(), StorageError>;

    /// Every settled execution the engine indexes, with its seqs (sorted,
    /// without duplicates), in execution id order (checked by `verify`).
    fn index_groups(&self) -> Items<'_, (ExecutionId, Vec<u64>)>;

    /// Writes the index entries of an event already in the log again
    /// (idempotent): repairs an index a crash left behind its log.
    fn reindex(&self, event: Draft<'_>) -> Result<(), StorageError>;

    /// Rebuilds the whole index from `events` (every event of the log, in
    /// order): writes each one's entries and removes every entry they do not
    /// imply; returns how many it removed.
    fn rebuild_index(
        &self,
        events: &mut dyn Iterator<Item = Result<Reindexed, StorageError>>,
    ) -> Result<u64, StorageError>;

    /// Bytes the log uses on disk.
    fn size_on_disk(&self) -> Result<u64, StorageError>;

    // Blocks (an engine that stores one record per entry keeps the
    // defaults).

    /// Opens a block: what is appended until [`Store::seal`] may be stored
    /// together, as one entry. Called by the ledger's combiner when it takes
    /// the ledger (the core lock); [`Store::record`], [`Store::named`] and
    /// [`Store::execution_seqs`] see what it appended in between (the
    /// combiner's own reads), other reads only once it is sealed, and
    /// nothing of it is durable, nor visible to subscribers, before.
    fn open_block(&self) {}

    /// Writes what was appended since [`Store::open_block`]; called by the
    /// combiner before it lets go of the ledger, so that whoever takes the
    /// ledger next finds everything the projection holds in the log. On an
    /// error the engine is poisoned (its syncs fail) and the ledger is too.
    fn seal(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// The first seq whose index entries a crash may have left unwritten
    /// in a log that ends at `last`: the ledger writes them again on open
    /// ([`Store::reindex`]). The engine writes a block's records before
    /// their index entries, so only the last block can lack them.
    fn unindexed_from(&self, last: u64) -> Result<u64, StorageError> {
        Ok(last)
    }

    // Redaction.

    /// Whether the engine removes a redacted execution's payloads from its
    /// records in the write that appends its `redacted` event (the records
    /// of that execution's earlier events: a draft's `settles` seqs).
    /// Redaction is refused on an engine that does not.
    fn strips_payloads(&self) -> bool {
        false
    }

    /// What is kept beside the log (not in it) of one `kind`: each key and
    /// its value as JSON, in key order.
    fn beside(&self, _kind: Beside) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        Ok(Vec::new())
    }

    /// Puts `value` (JSON) under `key` of `kind` beside the log, or removes
    /// it (`None`). Called with the ledger held (within a group, its part:
    /// committed with it; on a shared log, in the transaction that holds
    /// its end, so that a command deciding from what it reads is alone);
    /// durable when the group's commands are answered.
    fn put_beside(
        &self,
        kind: Beside,
        _key: &str,
        _value: Option<&[u8]>,
    ) -> Result<(), StorageError> {
        Err(StorageError::new(
            ErrorKind::Io,
            format!("this storage engine does not keep {}", kind.what()),
        ))
    }

    // Archiving (an engine that keeps its whole log keeps the defaults).

    /// Where the live log starts: the last archived seq and its record's
    /// hash (0 and [`record::GENESIS`] when nothing is archived). Records
    /// through it are read from the archive's segments; [`Store::records`]
    /// starts after it.
    fn base(&self) -> Mark {
        (0, record::GENESIS)
    }

    /// Where the engine keeps its archive segments; `None` when it does
    /// not archive.
    fn archive_dir(&self) -> Option<PathBuf> {
        None
    }

    /// Writes the records after the base through `through`, as stored,
    /// into a new segment of the archive and returns its path; `ids` are
    /// the executions of their events, in order (none for a control
    /// entry). Changes nothing else
    /// ([`Store::commit_archive`] makes it part of the log).
    fn write_segment(
        &self,
        _through: u64,
        _ids: &[Option<ExecutionId>],
    ) -> Result<PathBuf, StorageError> {
        Err(StorageError::new(
            ErrorKind::Io,
            "this storage engine does not archive",
        ))
    }

    /// Makes the segment at `path` part of the log: the base moves to its
    /// last seq (from then on, records through it are read from the
    /// segment). Called with the ledger held.
    fn commit_archive(&self, _path: &Path) -> Result<(), StorageError> {
        Err(StorageError::new(
            ErrorKind::Io,
            "this storage engine does not archive",
        ))
    }

    /// Removes from the live database what the last committed segment
    /// holds: its records, their index entries, names, list lines and the
    /// snapshots at or below the base (idempotent; opening finishes one a
    /// crash cut short). Runs while the ledger takes commands.
    fn finish_archive(&self) -> Result<(), StorageError> {
        Err(StorageError::new(
            ErrorKind::Io,
            "this storage engine does not archive",
        ))
    }

    /// The seqs of an archived execution's events (empty when it is not
    /// archived); an error when the archive is not where the engine reads
    /// it (moved).
    fn archived_seqs(&self, _id: &ExecutionId) -> Result<Vec<u64>, StorageError> {
        Ok(Vec::new())
    }

    /// A record as a segment holds it, made readable (its payloads
    /// decrypted where the engine holds their key).
    fn readable_archived(&self, _seq: u64, stored: Vec<u8>) -> Result<Bytes, StorageError> {
        Ok(Bytes::new(stored))
    }

    // Sharing (an engine one process owns keeps the defaults).

    /// Starts a group of appends that commit together (one combiner's
    /// commands): an engine whose log other processes share locks the
    /// log's end and returns it, so that the ledger decides the group
    /// against the log as it is (no append of the group can conflict) and
    /// its appends are staged until [`Store::end_group`]. `None`: the
    /// engine's appends are grouped by its syncs.
    fn begin_group(&self) -> Result<Option<Mark>, StorageError> {
        Ok(None)
    }

    /// Commits the group's appends, and releases the log's end. On an
    /// error none of them is in the log, or whether they are is unknown
    /// until the log is read again.
    fn end_group(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Whether other processes append to the log too: then leased attempts
    /// may be renewed through any of them ([`Store::renew_lease`]), and
    /// every attempt a process runs is leased, so that the others can tell
    /// when it stopped.
    fn shared(&self) -> bool {
        false
    }

    /// The log's last seq as the engine reads it now, when other processes
    /// append to it (`None`: the ledger's own head is the log's).
    fn head_now(&self) -> Result<Option<u64>, StorageError> {
        Ok(None)
    }

    /// Records, for the other processes, that the lease of `attempt` of
    /// `id` runs until `until` (never shortened).
    fn renew_lease(
        &self,
        _id: &ExecutionId,
        _attempt: u32,
        _until: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        Ok(())
    }

    /// The lease renewals recorded for `ids`: (execution, attempt, until).
    fn renewals(&self, _ids: &[ExecutionId]) -> Result<Vec<Renewal>, StorageError> {
        Ok(Vec::new())
    }
}

/// Whether `location` names a PostgreSQL database (a `postgres://` or
/// `postgresql://` URL) rather than a directory.
pub(crate) fn is_database_url(location: &Path) -> bool {
    location
        .to_str()
        .is_some_and(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
}

/// A lease renewal: the attempt of an execution, and until when it holds.
pub(crate) type Renewal = (ExecutionId, u32, DateTime<Utc>);

/// An event of the log, and when it settled its execution, what the engine
/// indexes then (for [`Store::rebuild_index`]).
pub(crate) type Reindexed = (Event, Option<Settled>);

/// A storage error met while reading at `seq`: damage is reported at that
/// seq, with `what` it did.
pub(crate) fn at_seq(e: StorageError, seq: u64, what: impl fmt::Display) -> StorageError {
    if e.kind() == ErrorKind::Corrupt {
        e.context(what).at_seq(seq)
    } else {
        e
    }
}

/// Records `from` through `to` of `store`, each checked on its own (format,
/// hash) and against the one before: seqs gap-free, each chained to the one
/// before from `prev` (the hash of record `from - 1`). Yields the seq, the
/// stored bytes and the record's hash; stops after the first error.
pub(crate) fn checked_records(
    store: &dyn Store,
    from: u64,
    to: u64,
    prev: Hash,
) -> impl Iterator<Item = Result<(u64, Bytes, Hash), StorageError>> + '_ {
    let mut records = store.records(from);
    let (mut expected, mut prev, mut done) = (from.max(1), prev, false);
    std::iter::from_fn(move || {
        if done || expected > to {
            return None;
        }
        let checked = match records.next() {
            None => Err(StorageError::new(
                ErrorKind::LostSuffix,
                format!("the log ends at seq {} before seq {to}", expected - 1),
            )
            .at_seq(expected)),
            Some(Err(e)) => Err(e),
            Some(Ok((seq, _))) if seq != expected => Err(StorageError::corrupt(
                expected,
                format!(
                    "record is missing (the log jumps from seq {} to {seq})",
                    expected - 1
                ),
            )),
            Some(Ok((seq, bytes))) => record::decode(seq, &bytes)
                .and_then(|rec| {
                    if rec.prev == prev {
                        Ok(rec.hash)
                    } else {
                        Err(record::broken_link(seq))
                    }
                })
                .map(|hash| (seq, bytes, hash)),
        };
        match &checked {
            Ok((_, _, hash)) => {
                prev = *hash;
                expected += 1;
            }
            Err(_) => done = true,
        }
        Some(checked)
    })
}
