//! Opening a ledger: the builder, the clock, and bringing the projection up
//! to the log's head.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::replay::{read_entry, read_event, replay};
use super::report::{head_of, AcceptedTail};
use super::{writer, Core, Inner, Ledger};
use crate::error::StorageError;
use crate::event::Entry;
use crate::execution::BackgroundExecutionStatus;
use crate::lease::Leases;
use crate::store::{embedded, Draft, Drafted, Durability, Store, Tail};

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

/// How a ledger is opened: durability, cache, snapshots, clock.
pub struct LedgerBuilder {
    path: PathBuf,
    durability: Durability,
    cache_bytes: u64,
    snapshot_every: u64,
    clock: Arc<dyn Clock>,
    create: bool,
    accept_tail: bool,
    archive: Option<PathBuf>,
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
            .field("archive", &self.archive)
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

    /// Where the archive's segments are (default `DATA_DIR/archive`): an
    /// archive moved elsewhere is read, checked and added to there. Its
    /// segments must hold every archived seq for archived executions to be
    /// read (and for `verify` to pass).
    pub fn archive(mut self, dir: impl AsRef<Path>) -> Self {
        self.archive = Some(dir.as_ref().to_owned());
        self
    }

    /// Opens the ledger: locks the directory, checks the log against its
    /// checkpoint, and rebuilds the projection from the latest snapshot and
    /// the events after it. A ledger written by a version that kept no list
    /// of settled executions is given one, once: the whole log is folded
    /// and the index rebuilt ([`Ledger::rebuild_index`]) before it opens.
    ///
    /// # Errors
    ///
    /// `Locked` when another process holds the directory, `BadDirectory`,
    /// `NoLedger` when there is none and [`create`](Self::create) is off,
    /// `Checkpoint` when the checkpoint is missing beside a non-empty log or
    /// damaged, `LostSuffix` when the log ends before its checkpoint,
    /// `Corrupt` (with the seq) for damaged records, `UnsupportedVersion`,
    /// `Io`. See [`accept_tail`](Self::accept_tail).
    pub fn open(self) -> Result<Ledger, StorageError> {
        self.open_with_progress(|_, _| {})
    }

    /// [`open`](Self::open), calling `progress(seq, last)` while replaying.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn open_with_progress(
        self,
        progress: impl FnMut(u64, u64),
    ) -> Result<Ledger, StorageError> {
        if crate::store::is_database_url(&self.path) {
            #[cfg(feature = "postgres")]
            {
                let log = crate::store::postgres::Log::open(
                    &self.path,
                    self.durability,
                    self.create,
                    self.archive.as_deref(),
                )?;
                return self.open_store(Box::new(log), progress);
            }
            #[cfg(not(feature = "postgres"))]
            return Err(StorageError::new(
                crate::error::ErrorKind::BadDirectory,
                "this build of execution-ledger has no PostgreSQL engine (its `postgres` feature is off)",
            ));
        }
        let log = embedded::Log::open_in(
            &self.path,
            self.durability,
            self.cache_bytes,
            self.create,
            self.archive.as_deref(),
        )?;
        self.open_store(Box::new(log), progress)
    }

    /// Opens the ledger on `log`, an engine's log just opened: checks its
    /// end, replays it, repairs its index and resumes appending.
    pub(crate) fn open_store(
        self,
        log: Box<dyn Store>,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<Ledger, StorageError> {
        let last = log.last_seq()?;
        let refused = match log.check_tail(last)? {
            Tail::Whole => None,
            Tail::Refused(e) if self.accept_tail => Some(e),
            Tail::Refused(e) => return Err(e),
        };
        // A log accepted as it is is checked from its first event.
        // A crash can leave the events of the last block (only) without
        // their index entries. (Those a snapshot covers had theirs written
        // before it.)
        let tail = log.unindexed_from(last)?;
        let (mut projection, head_hash, unindexed) =
            replay(&*log, last, refused.is_none(), tail, &mut progress)?;
        projection.set_shares(super::shares::read(&*log)?);
        for (seq, settles) in &unindexed {
            // (A control entry is indexed under no execution.)
            if let Entry::Event(event) = read_entry(&*log, *seq)? {
                log.reindex(Draft {
                    entry: Drafted::Event(&event),
                    settles: settles.as_ref(),
                    copied: None,
                })?;
            }
        }
        let last_at = match last {
            0 => DateTime::<Utc>::MIN_UTC,
            seq => read_entry(&*log, seq)?.at(),
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
        let leases = running_leases(&*log, &projection, self.clock.now())?;
        let inner = Arc::new(Inner {
            accepted,
            log,
            workers: Mutex::default(),
            core: Mutex::new(Core {
                leases,
                projection,
                head: (last, head_hash),
                last_at,
                since_snapshot: 0,
                poisoned: false,
                shares_read: std::time::Instant::now(),
            }),
            clock: self.clock,
            snapshot_every: self.snapshot_every,
            combiner: writer::Combiner::default(),
            archiving: Mutex::default(),
        });
        let ledger = Ledger {
            _last: Arc::new(writer::LastHandle::new(&inner)),
            inner,
            scope: None,
        };
        // A ledger written before the engines kept a list of settled
        // executions gets it now, from the log (once).
        if !ledger.inner.log.list_complete()? {
            tracing::info!("building the list of settled executions from the log");
            if let Err(e) = ledger.rebuild_index() {
                tracing::warn!(error = %e, "cannot build the list of settled executions; run ledger reindex");
            }
        }
        Ok(ledger)
    }
}

/// The leases of the running leased attempts of `projection`, each a full
/// lease from `opened` at least (a ledger just opened has heard no
/// heartbeat yet).
pub(super) fn running_leases(
    log: &dyn Store,
    projection: &crate::projection::Projection,
    opened: DateTime<Utc>,
) -> Result<Leases, StorageError> {
    let mut leases = Leases::default();
    for e in projection.live() {
        if e.status != BackgroundExecutionStatus::Running {
            continue;
        }
        if let Some(&seq) = projection.seqs(&e.execution_id).and_then(|s| s.last()) {
            leases.reopen(&read_event(log, seq)?, opened);
        }
    }
    Ok(leases)
}

impl Ledger {
    /// Opens (or creates) the ledger in `path` with the defaults: synced
    /// durability, 64 MiB cache, a snapshot every 2,000 events (or four per
    /// live execution, when that is more).
    ///
    /// # Errors
    ///
    /// As [`LedgerBuilder::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Ledger, StorageError> {
        Self::builder(path).open()
    }

    /// A builder to open the ledger in `path` with other settings.
    ///
    /// `path` is a data directory (the embedded engine, sled: one process
    /// owns it), or a PostgreSQL URL, `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`:
    /// the shared engine, which any number of processes on any number of
    /// machines open at once. A shared ledger follows what the others
    /// append before each read and decision, leases every attempt (so that
    /// the others find a stopped process's attempts when their leases run
    /// out) and creates its tables on first use.
    pub fn builder(path: impl AsRef<Path>) -> LedgerBuilder {
        LedgerBuilder {
            path: path.as_ref().to_owned(),
            durability: Durability::default(),
            cache_bytes: LedgerBuilder::DEFAULT_CACHE_BYTES,
            snapshot_every: LedgerBuilder::DEFAULT_SNAPSHOT_EVERY,
            clock: Arc::new(SystemClock),
            create: true,
            accept_tail: false,
            archive: None,
        }
    }
}
