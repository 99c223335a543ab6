//! The ledger: commands become events, events are appended to the log, and
//! the same state machine folds them into the projection.
//!
//! ```text
//! command ──decide──▶ event ──append──▶ log (sled, hash-chained) ──apply──▶ projection
//!    ▲                                     │                                   │
//!    └──── refused: nothing appended       └── replay / time travel / verify ──┘
//! ```

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, LedgerError};
use crate::event::{Event, EventKind, Submission};
use crate::execution::{
    BackgroundExecution, BackgroundExecutionMode, BackgroundExecutionStatus, ExecutionError,
    ExecutionId, TenantId,
};
use crate::machine;
use crate::projection::{LiveCounts, Projection, SnapshotEntry};
use crate::store::record::{self, Hash, GENESIS};
use crate::store::{
    checked_records, embedded, AppendError, Bytes, Draft, Durability, Mark, Name, Store,
    StoredRecord, Tail,
};

mod writer;

use writer::Command;
pub use writer::Pending;

/// The largest `input` accepted on submit, in bytes.
pub const MAX_INPUT_BYTES: usize = 64 * 1024;
/// The largest `output` accepted on completion, as JSON bytes.
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;
/// The most entries a `context` map may have.
pub const MAX_CONTEXT_ENTRIES: usize = 256;
/// The longest callable name, idempotency key, context key or value, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// Where the time comes from. Tests drive the ledger with a clock of their own.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

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

/// What [`Ledger::rebuild_index`] did.
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

/// What opening with [`LedgerBuilder::accept_tail`] accepted: the log as it
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
    /// Events read, hash-checked, decoded and folded.
    pub events: u64,
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

/// Figures about a ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Stats {
    /// The head.
    pub head: Head,
    /// Live executions by where they are.
    pub live: LiveCounts,
    /// Snapshots stored.
    pub snapshots: u64,
    /// Bytes sled uses on disk.
    pub disk_bytes: u64,
}

/// How a ledger is opened: durability, cache, snapshots, clock.
pub struct LedgerBuilder {
    path: PathBuf,
    durability: Durability,
    cache_bytes: u64,
    snapshot_every: u64,
    clock: Arc<dyn Clock>,
    create: bool,
    accept_tail: bool,
}

impl fmt::Debug for LedgerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LedgerBuilder")
            .field("path", &self.path)
            .field("durability", &self.durability)
            .field("cache_bytes", &self.cache_bytes)
            .field("snapshot_every", &self.snapshot_every)
            .field("create", &self.create)
            .field("accept_tail", &self.accept_tail)
            .finish_non_exhaustive()
    }
}

impl LedgerBuilder {
    /// sled's page cache size unless set: 64 MiB.
    pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;
    /// Events between snapshots unless set (four per live execution when
    /// that is more, so that snapshotting costs O(1) per event).
    pub const DEFAULT_SNAPSHOT_EVERY: u64 = 2_000;

    /// When an append is acknowledged (default [`Durability::Synced`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// sled's page cache size, in bytes.
    pub fn cache_bytes(mut self, bytes: u64) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// Events between snapshots; 0 turns snapshots off.
    pub fn snapshot_every(mut self, events: u64) -> Self {
        self.snapshot_every = events;
        self
    }

    /// The clock events are dated by.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Whether opening creates the ledger when the directory holds none
    /// (default `true`). With `false`, opening a directory that does not
    /// exist, or holds no ledger, fails with
    /// [`ErrorKind::NoLedger`](crate::ErrorKind::NoLedger) and creates
    /// nothing: for tools that only read or change an existing ledger.
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// Accept the log as it is when its checkpoint disagrees with it
    /// (default `false`): when the checkpoint is missing beside a non-empty
    /// log, damaged, ahead of the log's end (a lost suffix) or records
    /// another hash at its seq, opening replays the whole log from its
    /// first event (every record, hash link and transition), and when that
    /// passes, writes a new checkpoint at the log's actual end, records the
    /// acceptance (a line in `checkpoint.accepted` beside the checkpoint,
    /// and a warning) and returns the ledger;
    /// [`Ledger::accepted_tail`] says what was accepted. Without it such a
    /// ledger is refused (`Checkpoint`, `LostSuffix`, `Corrupt`).
    ///
    /// This is the operator's explicit decision that events may have been
    /// lost from the tail (`ledger verify --accept-tail`); nothing is
    /// accepted when the checkpoint agrees with the log.
    pub fn accept_tail(mut self, accept: bool) -> Self {
        self.accept_tail = accept;
        self
    }

    /// Opens the ledger: locks the directory, checks the log against its
    /// checkpoint, and rebuilds the projection from the latest snapshot and
    /// the events after it.
    ///
    /// # Errors
    ///
    /// `Locked` when another process holds the directory, `BadDirectory`,
    /// `NoLedger` when there is none and [`create`](Self::create) is off,
    /// `Checkpoint` when the checkpoint is missing beside a non-empty log or
    /// damaged, `LostSuffix` when the log ends before its checkpoint,
    /// `Corrupt` (with the seq) for damaged records, `UnsupportedVersion`,
    /// `Io`. See [`accept_tail`](Self::accept_tail).
    pub fn open(self) -> Result<Ledger, Error> {
        self.open_with_progress(|_, _| {})
    }

    /// [`open`](Self::open), calling `progress(seq, last)` while replaying.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn open_with_progress(self, mut progress: impl FnMut(u64, u64)) -> Result<Ledger, Error> {
        let log: Box<dyn Store> = Box::new(embedded::Log::open(
            &self.path,
            self.durability,
            self.cache_bytes,
            self.create,
        )?);
        let last = log.last_seq()?;
        let refused = match log.check_tail(last)? {
            Tail::Whole => None,
            Tail::Refused(e) if self.accept_tail => Some(e),
            Tail::Refused(e) => return Err(e),
        };
        // A log accepted as it is is checked from its first event.
        let (projection, head_hash, settled_last) =
            replay(&*log, last, refused.is_none(), &mut progress)?;
        let last_at = match last {
            0 => DateTime::<Utc>::MIN_UTC,
            seq => {
                // A crash can leave the last event (only) without its index
                // entries. (When the replay started from a snapshot at the
                // last event, they were written before that snapshot.)
                let event = read_event(&*log, seq)?;
                log.reindex(Draft {
                    event: &event,
                    settles: settled_last.as_deref(),
                })?;
                event.at
            }
        };
        let now = self
            .clock
            .now()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        log.resume(
            (last, head_hash),
            refused.as_ref().map(|problem| (now.as_str(), problem)),
        )?;
        let accepted = refused.map(|problem| AcceptedTail {
            head: head_of(&(last, head_hash)),
            refused: problem.to_string(),
        });
        let inner = Arc::new(Inner {
            accepted,
            log,
            core: Mutex::new(Core {
                projection,
                head: (last, head_hash),
                last_at,
                since_snapshot: 0,
                poisoned: false,
            }),
            clock: self.clock,
            snapshot_every: self.snapshot_every,
            jobs: Mutex::new(Vec::new()),
            combining: AtomicBool::new(false),
            helpers: std::sync::OnceLock::new(),
        });
        Ok(Ledger {
            _last: Arc::new(writer::LastHandle::new(&inner)),
            inner,
        })
    }
}

/// An open ledger. Cheap to clone: clones share the same ledger.
#[derive(Clone)]
pub struct Ledger {
    // Dropped first: when the last handle goes, it waits for commands still
    // in flight, so that the ledger (and its directory) is closed on return.
    _last: Arc<writer::LastHandle>,
    inner: Arc<Inner>,
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("dir", &self.inner.log.location())
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
    /// Commands waiting for a combiner (see writer.rs).
    jobs: Mutex<Vec<writer::Job>>,
    /// Whether a thread is combining.
    combining: AtomicBool,
    /// Signals the helper threads that combine for async callers.
    helpers: std::sync::OnceLock<Mutex<std::sync::mpsc::Sender<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Core {
    projection: Projection,
    head: Mark,
    last_at: DateTime<Utc>,
    since_snapshot: u64,
    poisoned: bool,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    seq: u64,
    hash: String,
    entries: Vec<SnapshotEntry>,
}

impl Inner {
    fn core(&self) -> MutexGuard<'_, Core> {
        lock(&self.core)
    }

    /// Carries out a submit (see [`Ledger::submit`]).
    fn submit(
        &self,
        core: &mut Core,
        tenant: &TenantId,
        submission: Submission,
    ) -> Result<(Submitted, u64), LedgerError> {
        if let Some(key) = &submission.idempotency_key {
            if let Some(id) = self.log.named(Name::Idempotency(tenant, key))? {
                // The key answers the first execution only for the same
                // submission; another one under the same key is a conflict.
                let first = match core.projection.seqs(&id).and_then(|s| s.first()) {
                    Some(&seq) => Some(seq),
                    None => self.log.execution_seqs(&id)?.first().copied(),
                };
                let original = first.map(|seq| read_event(&*self.log, seq)).transpose()?;
                match original.map(|e| e.kind) {
                    Some(EventKind::Queued(first)) if *first == submission => {}
                    Some(EventKind::Queued(_)) => {
                        return Err(LedgerError::IdempotencyConflict {
                            key: key.clone(),
                            execution: id,
                        })
                    }
                    _ => {
                        return Err(Error::new(
                            ErrorKind::Corrupt,
                            format!("idempotency key names {id}, whose first event is not queued"),
                        )
                        .into())
                    }
                }
                let execution = match core.projection.get(&id) {
                    Some(e) => e.clone(),
                    None => self.load(id)?.ok_or_else(|| {
                        Error::new(
                            ErrorKind::Corrupt,
                            format!("idempotency key names {id}, which has no events"),
                        )
                    })?,
                };
                // The first submit may still be syncing: answer once it is durable.
                let created = false;
                return Ok((Submitted { execution, created }, core.head.0));
            }
        }
        let now = self.tick(core);
        let id = ExecutionId::new();
        let kind = EventKind::Queued(Box::new(submission));
        let mut out = self.append_locked(core, vec![(id, tenant.clone(), kind)], now)?;
        let (event, _) = out.pop().expect("one event appended");
        let execution = core
            .projection
            .get(&id)
            .expect("a new execution is live")
            .clone();
        let created = true;
        Ok((Submitted { execution, created }, event.seq))
    }

    /// Carries out a claim (see [`Ledger::claim`]).
    fn claim(
        &self,
        core: &mut Core,
        scope: Option<&TenantId>,
        worker: Option<String>,
    ) -> Result<(Option<BackgroundExecution>, u64), LedgerError> {
        let now = self.tick(core);
        let Some(next) = core.projection.next_runnable(now, scope) else {
            return Ok((None, 0));
        };
        let (id, tenant, attempt) = (next.execution_id, next.tenant_id.clone(), next.attempt + 1);
        let kind = EventKind::Started { attempt, worker };
        let mut out = self.append_locked(core, vec![(id, tenant, kind)], now)?;
        let (event, _) = out.pop().expect("one event appended");
        self.log
            .counters()
            .claims
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let execution = core
            .projection
            .get(&id)
            .expect("a running execution is live")
            .clone();
        Ok((Some(execution), event.seq))
    }

    /// Carries out [`Ledger::recover_abandoned`].
    fn recover_abandoned(
        &self,
        core: &mut Core,
    ) -> Result<(Vec<BackgroundExecution>, u64), LedgerError> {
        let now = self.tick(core);
        let mut running: Vec<&BackgroundExecution> = core
            .projection
            .live()
            .filter(|e| e.status == BackgroundExecutionStatus::Running)
            .collect();
        running.sort_by_key(|e| e.execution_id);
        let kinds: Vec<_> = running
            .into_iter()
            .map(|e| (e.execution_id, e.tenant_id.clone(), machine::after_loss(e)))
            .collect();
        if kinds.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let out = self.append_locked(core, kinds, now)?;
        let last = out.last().map_or(0, |(e, _)| e.seq);
        let recovered = out
            .into_iter()
            .map(|(event, settled)| {
                settled.unwrap_or_else(|| {
                    core.projection
                        .get(&event.execution_id)
                        .expect("live")
                        .clone()
                })
            })
            .collect();
        Ok((recovered, last))
    }

    /// Carries out one command against one execution (see
    /// [`Ledger::command`]); returns the execution after it and the seq to
    /// make durable.
    fn command(
        &self,
        core: &mut Core,
        scope: Option<&TenantId>,
        id: ExecutionId,
        decide: impl FnOnce(&BackgroundExecution, DateTime<Utc>) -> Result<EventKind, LedgerError>,
    ) -> Result<(BackgroundExecution, u64), LedgerError> {
        let now = self.tick(core);
        let current = match core.projection.get(&id) {
            Some(e) => Cow::Borrowed(e),
            None => Cow::Owned(self.load(id)?.ok_or(LedgerError::NotFound(id))?),
        };
        if scope.is_some_and(|t| t != &current.tenant_id) {
            return Err(LedgerError::NotFound(id));
        }
        let kind = decide(&current, now)?;
        let tenant = current.tenant_id.clone();
        if core.projection.get(&id).is_none() {
            // Not live: settled, so the machine refuses whatever comes.
            let event = Event {
                seq: core.head.0 + 1,
                at: now,
                execution_id: id,
                tenant_id: tenant,
                kind,
            };
            machine::check(Some(&current), &event)?;
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{id} is settled yet the state machine accepts {}",
                    event.kind.name()
                ),
            )
            .into());
        }
        drop(current);
        let mut out = self.append_locked(core, vec![(id, tenant, kind)], now)?;
        let (event, settled) = out.pop().expect("one event appended");
        let after = match settled {
            Some(e) => e,
            None => core.projection.get(&id).expect("live").clone(),
        };
        Ok((after, event.seq))
    }

    /// Checks events (at most one per execution) against the projection,
    /// appends them as one atomic batch and folds them in. Returns the seq of the
    /// last and the executions the events settled.
    fn append_locked(
        &self,
        core: &mut Core,
        kinds: Vec<(ExecutionId, TenantId, EventKind)>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(Event, Option<BackgroundExecution>)>, LedgerError> {
        if core.poisoned {
            return Err(Error::new(
                ErrorKind::Poisoned,
                "an earlier write failed; reopen the ledger",
            )
            .into());
        }
        let mut events: Vec<Event> = kinds
            .into_iter()
            .map(|(execution_id, tenant_id, kind)| Event {
                seq: 0,
                at: now,
                execution_id,
                tenant_id,
                kind,
            })
            .collect();
        // A batch holds at most one event per execution, so each is checked
        // against the projection as it stands.
        debug_assert!(events.iter().enumerate().all(|(i, e)| events[..i]
            .iter()
            .all(|other| other.execution_id != e.execution_id)));
        loop {
            let (head, at) = (core.head, now.max(core.last_at));
            let mut settles = Vec::with_capacity(events.len());
            for (event, seq) in events.iter_mut().zip(head.0 + 1..) {
                event.seq = seq;
                event.at = at;
                settles.push(core.projection.check_settles(event)?);
            }
            let drafts: Vec<Draft<'_>> = events
                .iter()
                .zip(&settles)
                .map(|(event, settles)| Draft {
                    event,
                    settles: settles.as_deref(),
                })
                .collect();
            match self.log.append(head, &drafts) {
                Ok(end) => {
                    core.head = end;
                    core.last_at = at;
                    break;
                }
                // Another writer appended first: catch up with what it
                // wrote, then check the same events again after it.
                Err(AppendError::Conflict(missed)) => self.catch_up(core, missed)?,
                // What the group wrote is unknown until the log is opened
                // again: the projection stays as it was, and writes stop.
                Err(AppendError::Failed(e)) => {
                    core.poisoned = true;
                    return Err(e.into());
                }
            }
        }
        let out: Vec<_> = events
            .into_iter()
            .map(|event| {
                let settled = core
                    .projection
                    .apply_tracked(&event)
                    .expect("an event checked against the projection applies");
                (event, settled.map(|(e, _)| e))
            })
            .collect();
        core.since_snapshot += out.len() as u64;
        let every = self.snapshot_every;
        // At most one snapshot per `every` events, and none before 4 events
        // per live execution: writing one costs O(live), so this keeps the
        // cost per event below a quarter of a live execution's record.
        if every > 0 && core.since_snapshot >= every.max(4 * core.projection.len() as u64) {
            core.since_snapshot = 0;
            self.write_snapshot(core)?;
        }
        Ok(out)
    }

    /// Folds records another writer appended after the ledger's head into
    /// the projection, checking each link on the way.
    fn catch_up(&self, core: &mut Core, missed: Vec<StoredRecord>) -> Result<(), Error> {
        for (seq, bytes) in missed {
            if seq != core.head.0 + 1 {
                return Err(Error::corrupt(
                    core.head.0 + 1,
                    format!(
                        "record is missing (the log jumps from seq {} to {seq})",
                        core.head.0
                    ),
                ));
            }
            let rec = record::decode(seq, &bytes)?;
            if rec.prev != core.head.1 {
                return Err(record::broken_link(seq));
            }
            let hash = rec.hash;
            let (event, _) = fold_record(&mut core.projection, seq, &bytes)?;
            core.head = (seq, hash);
            core.last_at = core.last_at.max(event.at);
            core.since_snapshot += 1;
        }
        Ok(())
    }

    fn write_snapshot(&self, core: &Core) -> Result<(), Error> {
        let snap = Snapshot {
            seq: core.head.0,
            hash: record::hex(&core.head.1),
            entries: core.projection.entries(),
        };
        let bytes = serde_json::to_vec(&snap).expect("snapshots always serialize");
        self.log.put_snapshot(snap.seq, bytes)
    }

    fn tick(&self, core: &Core) -> DateTime<Utc> {
        self.clock.now().max(core.last_at)
    }

    /// Folds one execution from its own events (for executions no longer
    /// live). `None` when it does not exist.
    fn load(&self, id: ExecutionId) -> Result<Option<BackgroundExecution>, Error> {
        self.fold_execution(id, self.log.execution_seqs(&id)?, |_| true)
    }

    /// The seqs of one execution's events, live or settled, in order.
    fn execution_seqs(&self, id: &ExecutionId) -> Result<Vec<u64>, Error> {
        let live = self.core().projection.seqs(id).map(<[u64]>::to_vec);
        // Read after the projection: an execution that settles in between
        // has its index entry written by then.
        Ok(union(
            self.log.execution_seqs(id)?,
            &live.unwrap_or_default(),
        ))
    }

    fn fold_execution(
        &self,
        id: ExecutionId,
        seqs: Vec<u64>,
        mut keep: impl FnMut(&Event) -> bool,
    ) -> Result<Option<BackgroundExecution>, Error> {
        let mut state = None;
        for seq in seqs {
            let event = read_event(&*self.log, seq)?;
            if event.execution_id != id {
                return Err(Error::corrupt(
                    seq,
                    format!("index entry of {id} names another execution's event"),
                ));
            }
            if !keep(&event) {
                break;
            }
            machine::apply(&mut state, &event).map_err(illegal(seq))?;
        }
        Ok(state)
    }
}

/// The error for an event the state machine refuses, found in the log.
fn illegal(seq: u64) -> impl FnOnce(machine::TransitionError) -> Error {
    move |e| Error::corrupt(seq, format!("illegal transition in the log: {e}"))
}

/// An execution settled by an event: it, and the seqs of all its events.
type Settled = Option<(BackgroundExecution, Vec<u64>)>;

/// Decodes stored record `seq` and folds its event into `projection`.
fn fold_record(
    projection: &mut Projection,
    seq: u64,
    bytes: &[u8],
) -> Result<(Event, Settled), Error> {
    let event = record::parse_event(seq, record::json_of(bytes))?;
    let settled = projection.apply_tracked(&event).map_err(illegal(seq))?;
    Ok((event, settled))
}

/// Checks the live projection against a fold of the log to `seq`.
fn same_as_fold(live: &Projection, fold: &Projection, seq: u64) -> Result<(), Error> {
    match live.difference(fold) {
        None => Ok(()),
        Some(diff) => Err(Error::corrupt(
            seq,
            format!("the live projection differs from the fold: {diff}"),
        )),
    }
}

/// An execution's seqs: those the index holds and those a projection holds
/// while it is live (an execution can be in both around the time it settles,
/// and in ledgers written with the per-event index).
fn union(mut indexed: Vec<u64>, live: &[u64]) -> Vec<u64> {
    if !live.is_empty() {
        indexed.extend_from_slice(live);
        indexed.sort_unstable();
        indexed.dedup();
    }
    indexed
}

fn read_event(log: &dyn Store, seq: u64) -> Result<Event, Error> {
    let bytes = log
        .record(seq)?
        .ok_or_else(|| Error::corrupt(seq, "record is missing"))?;
    Ok(record::decode_event(seq, &bytes)?.0)
}

/// Folds the log from the newest usable snapshot at or below `to` (or with
/// `from_snapshot` unset, from its first event) up to `to`, checking every
/// record and link on the way. Returns the projection,
/// the hash of record `to`, and when event `to` was folded in and settled
/// its execution, that execution's seqs.
fn replay(
    log: &dyn Store,
    to: u64,
    from_snapshot: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Projection, Hash, Option<Vec<u64>>), Error> {
    let (mut projection, mut prev) = (Projection::new(), GENESIS);
    let snapshots = log.snapshots_below(to).filter(|_| from_snapshot);
    for snap in snapshots {
        let (seq, bytes) = snap?;
        match load_snapshot(log, seq, &bytes) {
            Ok((p, hash)) => {
                (projection, prev) = (p, hash);
                break;
            }
            Err(e) => tracing::warn!(seq, error = %e, "ignoring a damaged snapshot"),
        }
    }
    let from = projection.seq() + 1;
    if from > to {
        return Ok((projection, prev, None));
    }
    let mut settled_last = None;
    // Two stages on two threads: one reads and checks records (sled's
    // iterator, the hash of each, the links), the other decodes and folds.
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Result<(u64, Bytes, Hash), Error>>>(8);
        scope.spawn(move || {
            let mut batch = Vec::with_capacity(REPLAY_BATCH);
            for item in checked_records(log, from, to, prev) {
                batch.push(item);
                if batch.len() == REPLAY_BATCH && tx.send(std::mem::take(&mut batch)).is_err() {
                    return;
                }
            }
            let _ = tx.send(batch);
        });
        for batch in rx {
            for item in batch {
                let (seq, bytes, hash) = item?;
                let (_, settled) = fold_record(&mut projection, seq, &bytes)?;
                if seq == to {
                    settled_last = settled.map(|(_, seqs)| seqs);
                }
                prev = hash;
                progress(seq, to);
            }
        }
        Ok((projection, prev, settled_last))
    })
}

/// Records handed from the reading to the folding stage of a replay at once.
const REPLAY_BATCH: usize = 512;

fn load_snapshot(log: &dyn Store, seq: u64, bytes: &[u8]) -> Result<(Projection, Hash), Error> {
    let snap: Snapshot = serde_json::from_slice(bytes)
        .map_err(|e| Error::corrupt(seq, format!("snapshot does not decode: {e}")))?;
    let hash = record::from_hex(&snap.hash)
        .ok_or_else(|| Error::corrupt(seq, "snapshot hash is malformed"))?;
    let bytes = log
        .record(seq)?
        .ok_or_else(|| Error::corrupt(seq, "the snapshot's record is missing"))?;
    if record::decode(seq, &bytes)?.hash != hash || snap.seq != seq {
        return Err(Error::corrupt(seq, "snapshot does not belong to this log"));
    }
    Ok((Projection::from_entries(seq, snap.entries), hash))
}

fn head_of(head: &Mark) -> Head {
    Head {
        seq: head.0,
        hash: record::hex(&head.1),
    }
}

fn validate(submission: &Submission) -> Result<(), LedgerError> {
    let name = &submission.callable_name;
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(LedgerError::invalid(format!(
            "callable name must be 1-{MAX_NAME_BYTES} bytes"
        )));
    }
    if let Some(input) = &submission.input {
        if input.len() > MAX_INPUT_BYTES {
            return Err(LedgerError::invalid(format!(
                "input is {} bytes; the limit is {MAX_INPUT_BYTES}",
                input.len()
            )));
        }
    }
    if let Some(context) = &submission.context {
        if context.len() > MAX_CONTEXT_ENTRIES {
            return Err(LedgerError::invalid(format!(
                "context has {} entries; the limit is {MAX_CONTEXT_ENTRIES}",
                context.len()
            )));
        }
        if let Some((k, _)) = context
            .iter()
            .find(|(k, v)| k.is_empty() || k.len() > MAX_NAME_BYTES || v.len() > MAX_NAME_BYTES)
        {
            return Err(LedgerError::invalid(format!(
                "context key {k:?}: keys must be 1-{MAX_NAME_BYTES} bytes and values at most {MAX_NAME_BYTES}"
            )));
        }
    }
    if let Some(key) = &submission.idempotency_key {
        if key.is_empty() || key.len() > MAX_NAME_BYTES {
            return Err(LedgerError::invalid(format!(
                "idempotency key must be 1-{MAX_NAME_BYTES} bytes"
            )));
        }
    }
    let config = &submission.config;
    if config.timeout_ms == 0 {
        return Err(LedgerError::invalid("timeout must be at least 1 ms"));
    }
    if let Some(retry) = &config.retry {
        if retry.max_attempts == 0 || retry.max_attempts > 1000 {
            return Err(LedgerError::invalid("max attempts must be 1-1000"));
        }
        if !(retry.backoff_multiplier.is_finite() && retry.backoff_multiplier >= 1.0) {
            return Err(LedgerError::invalid(
                "backoff multiplier must be a number >= 1",
            ));
        }
    }
    if let Some(url) = &config.callback_url {
        if config.mode != BackgroundExecutionMode::Deferred {
            return Err(LedgerError::invalid(format!(
                "callback url: only deferred executions call back (mode deferred); this one is {}",
                config.mode
            )));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(LedgerError::invalid(format!(
                "callback url must be http:// or https://, not {url:?}"
            )));
        }
    }
    if let Some(binding) = &config.target_binding {
        if !binding.target.contains(':') {
            return Err(LedgerError::invalid(format!(
                "target binding {:?} must be scheme:name",
                binding.target
            )));
        }
    }
    Ok(())
}

impl Ledger {
    /// Opens (or creates) the ledger in `path` with the defaults: synced
    /// durability, 64 MiB cache, a snapshot every 2,000 events (or four per
    /// live execution, when that is more).
    ///
    /// # Errors
    ///
    /// As [`LedgerBuilder::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Ledger, Error> {
        Self::builder(path).open()
    }

    /// A builder to open the ledger in `path` with other settings.
    pub fn builder(path: impl AsRef<Path>) -> LedgerBuilder {
        LedgerBuilder {
            path: path.as_ref().to_owned(),
            durability: Durability::default(),
            cache_bytes: LedgerBuilder::DEFAULT_CACHE_BYTES,
            snapshot_every: LedgerBuilder::DEFAULT_SNAPSHOT_EVERY,
            clock: Arc::new(SystemClock),
            create: true,
            accept_tail: false,
        }
    }

    /// What opening accepted with [`LedgerBuilder::accept_tail`]: `None`
    /// when the checkpoint agreed with the log (nothing needed accepting),
    /// or the ledger was opened without it.
    pub fn accepted_tail(&self) -> Option<&AcceptedTail> {
        self.inner.accepted.as_ref()
    }

    /// A handle on which only `tenant`'s executions exist.
    pub fn tenant(&self, tenant: TenantId) -> TenantLedger {
        TenantLedger {
            ledger: self.clone(),
            tenant,
        }
    }

    /// The data directory.
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

    /// One command against one execution: `decide` turns its current state
    /// into the event to record; the state machine checks it; it is appended
    /// and folded in; it is answered once it is durable.
    fn command(
        &self,
        scope: Option<&TenantId>,
        id: ExecutionId,
        decide: impl FnOnce(&BackgroundExecution, DateTime<Utc>) -> Result<EventKind, LedgerError>
            + Send
            + 'static,
    ) -> Command<BackgroundExecution> {
        let scope = scope.cloned();
        Command::new(&self.inner, move |inner, core| {
            inner.command(core, scope.as_ref(), id, decide)
        })
    }

    fn submit_scoped(&self, tenant: &TenantId, submission: Submission) -> Command<Submitted> {
        if let Err(e) = validate(&submission) {
            return Command::refused(&self.inner, e);
        }
        let tenant = tenant.clone();
        Command::new(&self.inner, move |inner, core| {
            inner.submit(core, &tenant, submission)
        })
    }

    /// Submits a new execution for `tenant`. With an idempotency key that
    /// the tenant used before, returns that execution and appends nothing.
    ///
    /// # Errors
    ///
    /// `Invalid` for out-of-range input (see the `MAX_*` limits), `Fatal`.
    pub fn submit(
        &self,
        tenant: &TenantId,
        submission: Submission,
    ) -> Result<Submitted, LedgerError> {
        self.submit_scoped(tenant, submission).wait()
    }

    /// [`submit`](Self::submit) without blocking: the answer is a future.
    /// The command is carried out whether or not the future is awaited.
    pub fn submit_async(&self, tenant: &TenantId, submission: Submission) -> Pending<Submitted> {
        self.submit_scoped(tenant, submission).spawn()
    }

    fn claim_scoped(
        &self,
        scope: Option<&TenantId>,
        worker: Option<&str>,
    ) -> Command<Option<BackgroundExecution>> {
        let scope = scope.cloned();
        let worker = worker.map(str::to_owned);
        Command::new(&self.inner, move |inner, core| {
            inner.claim(core, scope.as_ref(), worker)
        })
    }

    /// Claims the next runnable execution (priority, then queue order):
    /// starts its next attempt and returns it (`attempt` is the fencing token
    /// to complete or fail it with). `None` when nothing is runnable.
    ///
    /// # Errors
    ///
    /// `Fatal`.
    pub fn claim(&self, worker: Option<&str>) -> Result<Option<BackgroundExecution>, LedgerError> {
        self.claim_scoped(None, worker).wait()
    }

    /// [`claim`](Self::claim) without blocking.
    pub fn claim_async(&self, worker: Option<&str>) -> Pending<Option<BackgroundExecution>> {
        self.claim_scoped(None, worker).spawn()
    }

    fn complete_scoped(
        &self,
        scope: Option<&TenantId>,
        id: ExecutionId,
        attempt: u32,
        output: serde_json::Value,
    ) -> Command<BackgroundExecution> {
        let size = serde_json::to_vec(&output)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > MAX_OUTPUT_BYTES {
            return Command::refused(
                &self.inner,
                LedgerError::invalid(format!(
                    "output is {size} bytes of JSON; the limit is {MAX_OUTPUT_BYTES}"
                )),
            );
        }
        self.command(scope, id, move |_, _| {
            Ok(EventKind::Completed { attempt, output })
        })
    }

    /// Completes attempt `attempt` of a running execution with `output`.
    ///
    /// # Errors
    ///
    /// `NotFound`; `Transition` when it is not running or `attempt` is not
    /// its current attempt; `Invalid` for an output over the limit; `Fatal`.
    pub fn complete(
        &self,
        id: ExecutionId,
        attempt: u32,
        output: serde_json::Value,
    ) -> Result<BackgroundExecution, LedgerError> {
        self.complete_scoped(None, id, attempt, output).wait()
    }

    /// [`complete`](Self::complete) without blocking.
    pub fn complete_async(
        &self,
        id: ExecutionId,
        attempt: u32,
        output: serde_json::Value,
    ) -> Pending<BackgroundExecution> {
        self.complete_scoped(None, id, attempt, output).spawn()
    }

    fn fail_scoped(
        &self,
        scope: Option<&TenantId>,
        id: ExecutionId,
        attempt: u32,
        error: ExecutionError,
        retry: bool,
    ) -> Command<BackgroundExecution> {
        self.command(scope, id, move |e, now| {
            if e.attempt != attempt || !retry {
                return Ok(EventKind::Failed { attempt, error });
            }
            Ok(machine::after_failure(e, error, now))
        })
    }

    /// Fails attempt `attempt`: a retry after the policy's back-off while
    /// attempts remain, `failed` after the last.
    ///
    /// # Errors
    ///
    /// As [`complete`](Self::complete).
    pub fn fail(
        &self,
        id: ExecutionId,
        attempt: u32,
        error: ExecutionError,
    ) -> Result<BackgroundExecution, LedgerError> {
        self.fail_scoped(None, id, attempt, error, true).wait()
    }

    /// [`fail`](Self::fail) without blocking.
    pub fn fail_async(
        &self,
        id: ExecutionId,
        attempt: u32,
        error: ExecutionError,
    ) -> Pending<BackgroundExecution> {
        self.fail_scoped(None, id, attempt, error, true).spawn()
    }

    /// Fails attempt `attempt` for good, with no retry whatever the policy.
    ///
    /// # Errors
    ///
    /// As [`complete`](Self::complete).
    pub fn fail_permanently(
        &self,
        id: ExecutionId,
        attempt: u32,
        error: ExecutionError,
    ) -> Result<BackgroundExecution, LedgerError> {
        self.fail_scoped(None, id, attempt, error, false).wait()
    }

    /// [`fail_permanently`](Self::fail_permanently) without blocking.
    pub fn fail_permanently_async(
        &self,
        id: ExecutionId,
        attempt: u32,
        error: ExecutionError,
    ) -> Pending<BackgroundExecution> {
        self.fail_scoped(None, id, attempt, error, false).spawn()
    }

    fn time_out_command(&self, id: ExecutionId, attempt: u32) -> Command<BackgroundExecution> {
        self.command(None, id, move |e, now| {
            if e.attempt != attempt {
                return Ok(EventKind::TimedOut { attempt });
            }
            Ok(machine::after_timeout(e, now))
        })
    }

    /// Records that attempt `attempt` outlived its timeout: a retry while
    /// attempts remain, `timeout` after the last.
    ///
    /// # Errors
    ///
    /// As [`complete`](Self::complete).
    pub fn time_out(
        &self,
        id: ExecutionId,
        attempt: u32,
    ) -> Result<BackgroundExecution, LedgerError> {
        self.time_out_command(id, attempt).wait()
    }

    /// [`time_out`](Self::time_out) without blocking.
    pub fn time_out_async(&self, id: ExecutionId, attempt: u32) -> Pending<BackgroundExecution> {
        self.time_out_command(id, attempt).spawn()
    }

    fn cancel_scoped(
        &self,
        scope: Option<&TenantId>,
        id: ExecutionId,
        reason: Option<String>,
    ) -> Command<BackgroundExecution> {
        self.command(scope, id, |_, _| Ok(EventKind::Cancelled { reason }))
    }

    /// Cancels a queued or running execution.
    ///
    /// # Errors
    ///
    /// `NotFound`; `Transition` when it is finished; `Fatal`.
    pub fn cancel(
        &self,
        id: ExecutionId,
        reason: Option<String>,
    ) -> Result<BackgroundExecution, LedgerError> {
        self.cancel_scoped(None, id, reason).wait()
    }

    /// [`cancel`](Self::cancel) without blocking.
    pub fn cancel_async(
        &self,
        id: ExecutionId,
        reason: Option<String>,
    ) -> Pending<BackgroundExecution> {
        self.cancel_scoped(None, id, reason).spawn()
    }

    fn release_scoped(
        &self,
        scope: Option<&TenantId>,
        id: ExecutionId,
    ) -> Command<BackgroundExecution> {
        self.command(scope, id, |_, _| Ok(EventKind::Released))
    }

    /// Releases a held deferred execution: it becomes runnable now.
    ///
    /// # Errors
    ///
    /// `NotFound`; `Transition` when it is not deferred, already released,
    /// or not queued; `Fatal`.
    pub fn release(&self, id: ExecutionId) -> Result<BackgroundExecution, LedgerError> {
        self.release_scoped(None, id).wait()
    }

    /// [`release`](Self::release) without blocking.
    pub fn release_async(&self, id: ExecutionId) -> Pending<BackgroundExecution> {
        self.release_scoped(None, id).spawn()
    }

    fn binding_command(
        &self,
        id: ExecutionId,
        error: Option<ExecutionError>,
    ) -> Command<BackgroundExecution> {
        self.command(None, id, |e, _| {
            let target = e
                .config
                .target_binding
                .as_ref()
                .map(|b| b.target.clone())
                .unwrap_or_default();
            Ok(EventKind::TargetBindingApplied { target, error })
        })
    }

    /// Records the outcome of binding a completed execution's output to its
    /// target (`error` when it failed).
    ///
    /// # Errors
    ///
    /// `NotFound`; `Transition` when no binding is pending; `Fatal`.
    pub fn record_binding(
        &self,
        id: ExecutionId,
        error: Option<ExecutionError>,
    ) -> Result<BackgroundExecution, LedgerError> {
        self.binding_command(id, error).wait()
    }

    /// [`record_binding`](Self::record_binding) without blocking.
    pub fn record_binding_async(
        &self,
        id: ExecutionId,
        error: Option<ExecutionError>,
    ) -> Pending<BackgroundExecution> {
        self.binding_command(id, error).spawn()
    }

    fn callback_command(
        &self,
        id: ExecutionId,
        outcome: Result<u16, (Option<u16>, String)>,
    ) -> Command<BackgroundExecution> {
        self.command(None, id, |e, _| {
            let attempt = e.callback_attempts + 1;
            Ok(match outcome {
                Ok(status_code) => EventKind::CallbackDelivered {
                    attempt,
                    status_code,
                },
                Err((status_code, error)) => EventKind::CallbackFailed {
                    attempt,
                    status_code,
                    error,
                },
            })
        })
    }

    /// Records one callback delivery attempt: `Ok(status)` when the
    /// receiver accepted it, `Err((status, error))` when it did not.
    ///
    /// # Errors
    ///
    /// `NotFound`; `Transition` when no callback is pending; `Fatal`.
    pub fn record_callback(
        &self,
        id: ExecutionId,
        outcome: Result<u16, (Option<u16>, String)>,
    ) -> Result<BackgroundExecution, LedgerError> {
        self.callback_command(id, outcome).wait()
    }

    /// [`record_callback`](Self::record_callback) without blocking.
    pub fn record_callback_async(
        &self,
        id: ExecutionId,
        outcome: Result<u16, (Option<u16>, String)>,
    ) -> Pending<BackgroundExecution> {
        self.callback_command(id, outcome).spawn()
    }

    /// Records every execution left `running` (by a process that died) as
    /// recovered: back to queued while attempts remain, failed otherwise.
    /// Returns them as they are now. Call it once on start-up, before
    /// claiming.
    ///
    /// # Errors
    ///
    /// `Fatal`.
    pub fn recover_abandoned(&self) -> Result<Vec<BackgroundExecution>, LedgerError> {
        Command::new(&self.inner, |inner, core| inner.recover_abandoned(core)).wait()
    }

    fn get_scoped(
        &self,
        scope: Option<&TenantId>,
        id: ExecutionId,
    ) -> Result<BackgroundExecution, LedgerError> {
        let live = self.core().projection.get(&id).cloned();
        let e = match live {
            Some(e) => e,
            None => self.inner.load(id)?.ok_or(LedgerError::NotFound(id))?,
        };
        if scope.is_some_and(|t| t != &e.tenant_id) {
            return Err(LedgerError::NotFound(id));
        }
        Ok(e)
    }

    /// One execution as it is now, if it is live (in memory: never reads
    /// the disk).
    pub(crate) fn get_live(&self, id: ExecutionId) -> Option<BackgroundExecution> {
        self.core().projection.get(&id).cloned()
    }

    /// One execution as it is now.
    ///
    /// # Errors
    ///
    /// `NotFound`; `Fatal` for damaged data.
    pub fn get(&self, id: ExecutionId) -> Result<BackgroundExecution, LedgerError> {
        self.get_scoped(None, id)
    }

    /// The executions runnable now, in claim order (of `tenant` only, when
    /// given).
    pub fn queue(&self, tenant: Option<&TenantId>) -> Vec<BackgroundExecution> {
        let core = self.core();
        let now = self.inner.tick(&core);
        core.projection
            .queue(now, tenant)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Queued executions not runnable now: waiting for a back-off or run-at
    /// time, then held deferred ones.
    pub fn waiting(&self, tenant: Option<&TenantId>) -> Vec<BackgroundExecution> {
        let core = self.core();
        let now = self.inner.tick(&core);
        core.projection
            .waiting(now, tenant)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Every live execution (queued, running, finishing), in id order.
    pub fn live(&self) -> Vec<BackgroundExecution> {
        let core = self.core();
        let mut v: Vec<_> = core.projection.live().cloned().collect();
        v.sort_by_key(|e| e.execution_id);
        v
    }

    /// Counts of live executions by where they are.
    pub fn counts(&self) -> LiveCounts {
        self.core().projection.counts()
    }

    /// The earliest time a waiting execution becomes runnable.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.core().projection.next_due()
    }

    /// The value last bound to `target` for `tenant` (by an execution whose
    /// target binding succeeded), with the execution that bound it.
    ///
    /// # Errors
    ///
    /// `Fatal` for damaged data.
    pub fn bound_value(
        &self,
        tenant: &TenantId,
        target: &str,
    ) -> Result<Option<(ExecutionId, serde_json::Value)>, LedgerError> {
        let Some(id) = self.inner.log.named(Name::Binding(tenant, target))? else {
            return Ok(None);
        };
        let e = self.get(id)?;
        Ok(crate::execution::bound_output(&e).map(|v| (id, v.clone())))
    }

    fn history_scoped(
        &self,
        scope: Option<&TenantId>,
        id: ExecutionId,
    ) -> Result<Vec<Event>, LedgerError> {
        let mut events = Vec::new();
        for seq in self.inner.execution_seqs(&id)? {
            events.push(read_event(&*self.inner.log, seq)?);
        }
        match events.first() {
            None => Err(LedgerError::NotFound(id)),
            Some(e) if scope.is_some_and(|t| t != &e.tenant_id) => Err(LedgerError::NotFound(id)),
            Some(_) => Ok(events),
        }
    }

    /// One execution's events, in order.
    ///
    /// # Errors
    ///
    /// `NotFound`; `Fatal` for damaged data.
    pub fn history(&self, id: ExecutionId) -> Result<Vec<Event>, LedgerError> {
        self.history_scoped(None, id)
    }

    /// The seq a point in the log stands for: `Seq(n)` itself (checked
    /// against the head), `Time(t)` the last event at or before `t`.
    ///
    /// # Errors
    ///
    /// `Invalid` for a seq beyond the head; `Fatal`.
    pub fn resolve(&self, at: At) -> Result<u64, LedgerError> {
        let head = self.core().head.0;
        match at {
            At::Seq(n) if n > head => Err(LedgerError::invalid(format!(
                "seq {n} is beyond the head (seq {head})"
            ))),
            At::Seq(n) => Ok(n),
            At::Time(t) => {
                // Events are dated non-decreasingly: binary search by seq.
                let (mut lo, mut hi) = (0u64, head);
                while lo < hi {
                    let mid = lo + (hi - lo).div_ceil(2);
                    if read_event(&*self.inner.log, mid)?.at <= t {
                        lo = mid;
                    } else {
                        hi = mid - 1;
                    }
                }
                Ok(lo)
            }
        }
    }

    fn execution_at_scoped(
        &self,
        scope: Option<&TenantId>,
        id: ExecutionId,
        at: At,
    ) -> Result<Option<BackgroundExecution>, LedgerError> {
        let seq = self.resolve(at)?;
        let seqs = self.inner.execution_seqs(&id)?;
        let exists = !seqs.is_empty();
        let e = self
            .inner
            .fold_execution(id, seqs, |event| event.seq <= seq)?;
        match e {
            Some(e) if scope.is_some_and(|t| t != &e.tenant_id) => Err(LedgerError::NotFound(id)),
            None if !exists => Err(LedgerError::NotFound(id)),
            other => Ok(other),
        }
    }

    /// One execution as it was at a point in the log; `None` when it did not
    /// exist yet.
    ///
    /// # Errors
    ///
    /// `NotFound` when it never existed; `Invalid` for a seq beyond the head;
    /// `Fatal`.
    pub fn execution_at(
        &self,
        id: ExecutionId,
        at: At,
    ) -> Result<Option<BackgroundExecution>, LedgerError> {
        self.execution_at_scoped(None, id, at)
    }

    /// Every live execution and the queue as they were at a point in the
    /// log: the nearest snapshot at or below it, then the events after.
    ///
    /// # Errors
    ///
    /// `Invalid` for a seq beyond the head; `Fatal` for damaged data.
    pub fn projection_at(&self, at: At) -> Result<Projection, LedgerError> {
        let seq = self.resolve(at)?;
        Ok(replay(&*self.inner.log, seq, true, &mut |_, _| {})?.0)
    }

    /// The queue as it was at a point in the log: the executions runnable
    /// then, in claim order, and how many more were queued but not runnable
    /// (held, or waiting for a back-off or run-at time). "Then" is the time
    /// of the point: `Time(t)` itself, `Seq(n)` the time of event `n`.
    ///
    /// # Errors
    ///
    /// `Invalid` for a seq beyond the head; `Fatal` for damaged data.
    pub fn queue_at(
        &self,
        at: At,
        tenant: Option<&TenantId>,
    ) -> Result<(Vec<BackgroundExecution>, usize), LedgerError> {
        let projection = self.projection_at(at)?;
        let then = match at {
            At::Time(t) => t,
            At::Seq(0) => DateTime::<Utc>::MIN_UTC,
            At::Seq(n) => read_event(&*self.inner.log, n)?.at,
        };
        let queue = projection
            .queue(then, tenant)
            .into_iter()
            .cloned()
            .collect();
        Ok((queue, projection.waiting(then, tenant).len()))
    }

    /// Refuses a range of the log whose first seq is after its last, in
    /// the words [`diff`](Self::diff) uses.
    ///
    /// # Errors
    ///
    /// `Invalid` when `from` is after `to`.
    pub fn check_range(from: u64, to: u64) -> Result<(), LedgerError> {
        if from > to {
            return Err(LedgerError::invalid(format!(
                "the first point (seq {from}) is after the second (seq {to})"
            )));
        }
        Ok(())
    }

    /// Which executions changed between two points of the log, and how.
    ///
    /// # Errors
    ///
    /// `Invalid` when `from` is after `to` or beyond the head; `Fatal`.
    pub fn diff(&self, from: At, to: At) -> Result<Vec<Change>, LedgerError> {
        let (a, b) = (self.resolve(from)?, self.resolve(to)?);
        Self::check_range(a, b)?;
        let mut touched: BTreeMap<ExecutionId, Vec<(u64, String)>> = BTreeMap::new();
        for event in self.events(a + 1, Some(b)) {
            let event = event?;
            touched
                .entry(event.execution_id)
                .or_default()
                .push((event.seq, event.kind.name().to_owned()));
        }
        let mut changes = Vec::with_capacity(touched.len());
        for (id, events) in touched {
            let seqs = self.inner.execution_seqs(&id)?;
            let before = self
                .inner
                .fold_execution(id, seqs.clone(), |e| e.seq <= a)?;
            let after = self
                .inner
                .fold_execution(id, seqs, |e| e.seq <= b)?
                .ok_or_else(|| {
                    Error::new(ErrorKind::Corrupt, format!("{id} has events but no state"))
                })?;
            changes.push(Change {
                execution_id: id,
                tenant_id: after.tenant_id,
                before: before.map(|e| e.status),
                after: after.status,
                events,
            });
        }
        Ok(changes)
    }

    /// The events from seq `from` through `to` (the head when `None`), each
    /// checked against its own hash.
    pub fn events(
        &self,
        from: u64,
        to: Option<u64>,
    ) -> impl Iterator<Item = Result<Event, Error>> + '_ {
        let to = to.unwrap_or(u64::MAX);
        self.inner
            .log
            .records(from.max(1))
            .take_while(move |r| r.as_ref().map_or(true, |(seq, _)| *seq <= to))
            .map(|r| {
                let (seq, bytes) = r?;
                Ok(record::decode_event(seq, &bytes)?.0)
            })
    }

    /// A subscription that reads the events from `from` on and then follows
    /// new ones as they become durable, without gaps or duplicates.
    pub fn subscribe(&self, from: u64) -> Subscription {
        Subscription {
            ledger: self.clone(),
            next: from.max(1),
        }
    }

    /// The last seq and its hash.
    pub fn head(&self) -> Head {
        head_of(&self.core().head)
    }

    /// Makes everything appended so far durable, whatever the durability.
    ///
    /// # Errors
    ///
    /// `Io`, `Poisoned`.
    pub fn flush(&self) -> Result<(), Error> {
        self.inner.log.flush()
    }

    /// Counters and latency histograms since the ledger was opened.
    pub fn metrics(&self) -> crate::metrics::Metrics {
        self.inner.log.counters().read()
    }

    /// Figures about the ledger.
    ///
    /// # Errors
    ///
    /// `Io`.
    pub fn stats(&self) -> Result<Stats, Error> {
        let (head, live) = {
            let core = self.core();
            (head_of(&core.head), core.projection.counts())
        };
        Ok(Stats {
            head,
            live,
            snapshots: self.inner.log.snapshot_seqs()?.len() as u64,
            disk_bytes: self.inner.log.size_on_disk()?,
        })
    }

    /// Walks the whole log and checks it: seqs gap-free from 1, every record
    /// intact and chained to the one before, every event decodable, dated in
    /// order and a legal transition, the index one for one with the events,
    /// the checkpoint on the chain, and stored snapshots and the live
    /// projection equal to a fresh fold.
    ///
    /// # Errors
    ///
    /// `Corrupt` naming the first bad seq (or `LostSuffix`, or `Checkpoint`
    /// when the checkpoint is missing or damaged); never panics on damaged
    /// data.
    pub fn verify(&self) -> Result<VerifyReport, Error> {
        self.verify_with_progress(|_, _| {})
    }

    /// [`verify`](Self::verify), calling `progress(seq, head)` on the way.
    ///
    /// # Errors
    ///
    /// As [`verify`](Self::verify).
    pub fn verify_with_progress(
        &self,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<VerifyReport, Error> {
        let log = &*self.inner.log;
        let head = self.core().head;
        let mut snapshots = log
            .snapshot_seqs()?
            .into_iter()
            .filter(|s| *s <= head.0)
            .peekable();
        let mut snapshots_checked = 0;
        let mut projection = Projection::new();
        let mut prev = GENESIS;
        let mut last_at = DateTime::<Utc>::MIN_UTC;
        let mut last = 0u64;
        let mut ids = HashSet::new();
        let mut fingerprint = 0u64;
        for item in checked_records(log, 1, head.0, GENESIS) {
            let (seq, bytes, hash) = item?;
            let (event, _) = fold_record(&mut projection, seq, &bytes)?;
            if event.at < last_at {
                return Err(Error::corrupt(
                    seq,
                    "event is dated before the one before it",
                ));
            }
            if matches!(event.kind, EventKind::Queued(_)) && !ids.insert(event.execution_id) {
                return Err(Error::corrupt(
                    seq,
                    format!("{} is queued a second time", event.execution_id),
                ));
            }
            fingerprint = fingerprint.wrapping_add(index_fingerprint(&event.execution_id, seq));
            while let Some(s) = snapshots.next_if(|s| *s <= seq) {
                if s == seq {
                    let bytes = log.snapshots_below(s).next().transpose()?.map(|(_, b)| b);
                    let stored = bytes
                        .ok_or_else(|| Error::corrupt(s, "snapshot vanished"))
                        .and_then(|b| load_snapshot(log, s, &b))?;
                    if let Some(diff) = stored.0.difference(&projection) {
                        return Err(Error::corrupt(
                            s,
                            format!("stored snapshot differs from the fold: {diff}"),
                        ));
                    }
                    snapshots_checked += 1;
                }
            }
            prev = hash;
            last = seq;
            last_at = event.at;
            progress(seq, head.0);
        }
        if prev != head.1 {
            return Err(Error::corrupt(
                last,
                "the last record is not the head this ledger wrote",
            ));
        }
        log.check_tail_now()?;
        // Every event is in its execution's index entry once the execution
        // is settled, and among the live seqs of the fold while it is live
        // (an execution settled after `last` can be in both).
        let mut index_entries = 0u64;
        let mut index_fp = 0u64;
        let mut count = |id: &ExecutionId, seqs: &[u64]| {
            for &seq in seqs.iter().filter(|s| **s <= last) {
                index_entries += 1;
                index_fp = index_fp.wrapping_add(index_fingerprint(id, seq));
            }
        };
        let mut live: HashMap<ExecutionId, &[u64]> = projection
            .live()
            .map(|e| e.execution_id)
            .map(|id| (id, projection.seqs(&id).unwrap_or_default()))
            .collect();
        for group in log.index_groups() {
            let (id, seqs) = group?;
            count(&id, &union(seqs, live.remove(&id).unwrap_or_default()));
        }
        for (id, seqs) in &live {
            count(id, seqs);
        }
        if index_entries != last || index_fp != fingerprint {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("the per-execution index ({index_entries} entries) does not match the log ({last} events)"),
            ));
        }
        let core = self.core();
        let projection_compared = core.head.0 == last;
        if projection_compared {
            same_as_fold(&core.projection, &projection, last)?;
        }
        Ok(VerifyReport {
            events: last,
            executions: ids.len() as u64,
            index_entries,
            snapshots: snapshots_checked,
            projection_compared,
            head: head_of(&head),
        })
    }

    /// Rebuilds the per-execution and name index from the log, which is
    /// its only source: folds every event, writes each settled execution's
    /// entry and each name, removes every entry the log does not imply (a
    /// damaged one, or one of the older one-per-event layout), and takes a
    /// snapshot. Writes wait while it runs; it holds the index's keys in
    /// memory (tens of bytes per execution).
    ///
    /// # Errors
    ///
    /// `Corrupt` (with the seq) for damage in the log, or when the live
    /// projection differs from the fold; `Io`.
    pub fn rebuild_index(&self) -> Result<IndexRebuild, Error> {
        let mut core = self.core();
        let log = &*self.inner.log;
        let mut projection = Projection::new();
        let (mut events, mut settled) = (0, 0);
        let mut folded = checked_records(log, 1, core.head.0, GENESIS).map(|item| {
            let (seq, bytes, _) = item?;
            let (event, done) = fold_record(&mut projection, seq, &bytes)?;
            events += 1;
            settled += u64::from(done.is_some());
            Ok((event, done.map(|(_, seqs)| seqs)))
        });
        let removed = log.rebuild_index(&mut folded)?;
        drop(folded);
        same_as_fold(&core.projection, &projection, core.head.0)?;
        // Live executions' seqs complete, whatever snapshot they came from.
        core.projection = projection;
        self.inner.write_snapshot(&core)?;
        drop(core);
        log.flush()?;
        Ok(IndexRebuild {
            events,
            settled,
            removed,
        })
    }

    /// Compares the live projection with a fold of the whole log from
    /// scratch (no snapshot).
    ///
    /// # Errors
    ///
    /// `Corrupt` naming the difference.
    pub fn check_projection(&self) -> Result<(), Error> {
        let core = self.core();
        let mut fresh = Projection::new();
        for event in self.events(1, Some(core.head.0)) {
            let event = event?;
            fresh.apply(&event).map_err(illegal(event.seq))?;
        }
        same_as_fold(&core.projection, &fresh, core.head.0)
    }
}

fn index_fingerprint(id: &ExecutionId, seq: u64) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(id.as_bytes());
    h.update(&seq.to_be_bytes());
    u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Events from a seq on, then new ones as they become durable.
#[derive(Debug)]
pub struct Subscription {
    ledger: Ledger,
    next: u64,
}

impl Subscription {
    /// The seq of the next event it will return.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The next event, waiting up to `timeout` for it to be appended;
    /// `None` when none came.
    ///
    /// # Errors
    ///
    /// `Corrupt` for a damaged record.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Event>, Error> {
        let log = &*self.ledger.inner.log;
        if log.visible() < self.next && log.wait_visible(self.next, timeout) < self.next {
            return Ok(None);
        }
        let event = read_event(log, self.next)?;
        self.next += 1;
        Ok(Some(event))
    }
}

impl Iterator for Subscription {
    type Item = Result<Event, Error>;

    /// Blocks until the next event is durable.
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_timeout(Duration::from_secs(3600)) {
                Ok(Some(e)) => return Some(Ok(e)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// A ledger handle scoped to one tenant: other tenants' executions are not
/// found, and submissions belong to the tenant.
#[derive(Clone, Debug)]
pub struct TenantLedger {
    ledger: Ledger,
    tenant: TenantId,
}

impl TenantLedger {
    /// The tenant.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The whole ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Submits for this tenant (see [`Ledger::submit`]).
    ///
    /// # Errors
    ///
    /// As [`Ledger::submit`].
    pub fn submit(&self, submission: Submission) -> Result<Submitted, LedgerError> {
        self.ledger.submit_scoped(&self.tenant, submission).wait()
    }

    /// [`submit`](Self::submit) without blocking.
    pub fn submit_async(&self, submission: Submission) -> Pending<Submitted> {
        self.ledger.submit_scoped(&self.tenant, submission).spawn()
    }

    /// Claims this tenant's next runnable execution.
    ///
    /// # Errors
    ///
    /// As [`Ledger::claim`].
    pub fn claim(&self, worker: Option<&str>) -> Result<Option<BackgroundExecution>, LedgerError> {
        self.ledger.claim_scoped(Some(&self.tenant), worker).wait()
    }

    /// Completes an attempt (see [`Ledger::complete`]).
    ///
    /// # Errors
    ///
    /// As [`Ledger::complete`]; `NotFound` for another tenant's execution.
    pub fn complete(
        &self,
        id: ExecutionId,
        attempt: u32,
        output: serde_json::Value,
    ) -> Result<BackgroundExecution, LedgerError> {
        self.ledger
            .complete_scoped(Some(&self.tenant), id, attempt, output)
            .wait()
    }

    /// Fails an attempt (see [`Ledger::fail`]).
    ///
    /// # Errors
    ///
    /// As [`Ledger::fail`]; `NotFound` for another tenant's execution.
    pub fn fail(
        &self,
        id: ExecutionId,
        attempt: u32,
        error: ExecutionError,
    ) -> Result<BackgroundExecution, LedgerError> {
        self.ledger
            .fail_scoped(Some(&self.tenant), id, attempt, error, true)
            .wait()
    }

    /// Cancels (see [`Ledger::cancel`]).
    ///
    /// # Errors
    ///
    /// As [`Ledger::cancel`]; `NotFound` for another tenant's execution.
    pub fn cancel(
        &self,
        id: ExecutionId,
        reason: Option<String>,
    ) -> Result<BackgroundExecution, LedgerError> {
        self.ledger
            .cancel_scoped(Some(&self.tenant), id, reason)
            .wait()
    }

    /// Releases (see [`Ledger::release`]).
    ///
    /// # Errors
    ///
    /// As [`Ledger::release`]; `NotFound` for another tenant's execution.
    pub fn release(&self, id: ExecutionId) -> Result<BackgroundExecution, LedgerError> {
        self.ledger.release_scoped(Some(&self.tenant), id).wait()
    }

    /// One execution (see [`Ledger::get`]).
    ///
    /// # Errors
    ///
    /// As [`Ledger::get`]; `NotFound` for another tenant's execution.
    pub fn get(&self, id: ExecutionId) -> Result<BackgroundExecution, LedgerError> {
        self.ledger.get_scoped(Some(&self.tenant), id)
    }

    /// One execution's events (see [`Ledger::history`]).
    ///
    /// # Errors
    ///
    /// As [`Ledger::history`]; `NotFound` for another tenant's execution.
    pub fn history(&self, id: ExecutionId) -> Result<Vec<Event>, LedgerError> {
        self.ledger.history_scoped(Some(&self.tenant), id)
    }

    /// One execution at a point in the log (see [`Ledger::execution_at`]).
    ///
    /// # Errors
    ///
    /// As [`Ledger::execution_at`]; `NotFound` for another tenant's execution.
    pub fn execution_at(
        &self,
        id: ExecutionId,
        at: At,
    ) -> Result<Option<BackgroundExecution>, LedgerError> {
        self.ledger.execution_at_scoped(Some(&self.tenant), id, at)
    }

    /// This tenant's runnable executions in claim order.
    pub fn queue(&self) -> Vec<BackgroundExecution> {
        self.ledger.queue(Some(&self.tenant))
    }
}
