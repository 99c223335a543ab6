//! The shared engine: the log in a PostgreSQL database that any number of
//! ledger processes, on any number of machines, append to and read.
//!
//! One global, gap-free seq and one hash chain, whoever appends: an append
//! is one statement that moves the head row from the head the ledger
//! decided against to the new one and inserts the records (schema.rs). The
//! head row's lock makes appends commit one at a time, in seq order, so a
//! reader never sees a gap; an append decided against a head another
//! process has moved inserts nothing, and the ledger folds what it missed
//! before deciding again (the store seam's compare-and-append).
//!
//! Every process sees every event: a trigger notifies `ledger_appended` at
//! each commit, a listening connection (and a poll of the head row, the
//! backstop for a lost notification) moves [`Store::visible`] forward, and
//! the ledger catches its projection up to it.
//!
//! Durability: a commit is acknowledged when PostgreSQL acknowledges it.
//! [`Durability::Synced`] needs the commit flushed to the server's disk:
//! the operator's `synchronous_commit` is kept unless it is `off`, which
//! the ledger's sessions raise to `on`. [`Durability::Flushed`] sets
//! `local` (no wait for standbys), [`Durability::Buffered`] sets `off` (a
//! crash of the server can lose the last commits, never a part of one).
//!
//! The client runs on a small runtime of the engine's own, so that the
//! store's blocking calls work from any thread, a tokio worker's too.

mod archiving;
mod schema;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_postgres::config::Host;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, Statement};
use uuid::Uuid;

use super::record::{self, Hash};
use super::{
    AppendError, Beside, Bytes, Draft, Drafted, Durability, Items, Listed, Mark, Name, Reindexed,
    Renewal, Settled, Store, Tail,
};
use crate::error::{ErrorKind, StorageError};
use crate::execution::ExecutionId;
use crate::metrics::Counters;

/// How long closing the log waits for a redaction's rewrite of the keys
/// table.
const VACUUM_AT_EXIT: Duration = Duration::from_secs(60);

/// How often the head row is read when no notification came.
const POLL: Duration = Duration::from_millis(500);
/// Records fetched per round trip when reading a range of the log.
const PAGE: i64 = 2_000;
/// Lines of settled executions fetched per round trip when listing.
const LISTED_PAGE: i64 = 500;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A database error as the ledger reports it: PostgreSQL's own message.
fn db(e: tokio_postgres::Error) -> StorageError {
    let message = match e.as_db_error() {
        Some(d) => {
            let mut m = format!("PostgreSQL: {}", d.message());
            if let Some(detail) = d.detail() {
                m.push_str(&format!(" ({detail})"));
            }
            m
        }
        None => {
            // The client's own words, with its cause (a refused
            // connection, a closed one) when it has one.
            let cause = std::error::Error::source(&e).map(|c| format!(": {c}"));
            format!("PostgreSQL: {e}{}", cause.unwrap_or_default())
        }
    };
    StorageError::new(ErrorKind::Database, message)
}

/// A connection, its task spawned on the engine's runtime.
async fn connect(config: &Config) -> Result<Client, StorageError> {
    let (client, connection) = config.connect(NoTls).await.map_err(db)?;
    tokio::spawn(async move {
        // Ends when the client is dropped or the connection breaks; the
        // next call finds the client closed and connects again.
        let _ = connection.await;
    });
    Ok(client)
}

/// One connection and the statements prepared on it.
struct Session {
    client: Client,
    append: Statement,
    insert: Statement,
    listed: Statement,
    move_head: Statement,
    record: Statement,
    page: Statement,
    seqs: Statement,
    head: Statement,
    snapshot: Statement,
    strip: Statement,
}

impl Session {
    async fn open(config: Config, commit: Option<&'static str>) -> Result<Session, StorageError> {
        let client = connect(&config).await?;
        // Appends rely on READ COMMITTED (a moved head row is re-read,
        // not a serialization failure), whatever the database's default.
        client
            .batch_execute(
                "SET application_name = 'execution-ledger'; \
                 SET default_transaction_isolation = 'read committed'",
            )
            .await
            .map_err(db)?;
        if let Some(level) = commit {
            client
                .batch_execute(&format!("SET synchronous_commit = {level}"))
                .await
                .map_err(db)?;
        }
        Ok(Session {
            append: client.prepare(schema::APPEND).await.map_err(db)?,
            insert: client.prepare(schema::INSERT).await.map_err(db)?,
            listed: client.prepare(schema::LISTED).await.map_err(db)?,
            move_head: client
                .prepare("UPDATE ledger_head SET seq = $1, hash = $2 WHERE id = 1")
                .await
                .map_err(db)?,
            record: client
                .prepare(
                    "SELECT l.record, k.key FROM ledger_log l \
                     LEFT JOIN ledger_keys k ON k.slot = l.seq WHERE l.seq = $1",
                )
                .await
                .map_err(db)?,
            page: client
                .prepare(
                    "SELECT l.seq, l.record, k.key FROM ledger_log l \
                     LEFT JOIN ledger_keys k ON k.slot = l.seq \
                     WHERE l.seq >= $1 ORDER BY l.seq LIMIT $2",
                )
                .await
                .map_err(db)?,
            seqs: client
                .prepare("SELECT seq FROM ledger_log WHERE execution = $1 ORDER BY seq")
                .await
                .map_err(db)?,
            head: client
                .prepare(&format!(
                    "SELECT h.seq, h.hash, \
                     greatest((SELECT coalesce(max(seq), 0) FROM ledger_log), b.seq), b.value \
                     FROM ledger_head h LEFT JOIN LATERAL \
                     (SELECT value, split_part(value, ' ', 1)::int8 AS seq FROM ledger_meta \
                      WHERE key = '{}') b ON true WHERE h.id = 1",
                    schema::ARCHIVE_BASE
                ))
                .await
                .map_err(db)?,
            snapshot: client.prepare(schema::SNAPSHOT).await.map_err(db)?,
            strip: client.prepare(schema::STRIP).await.map_err(db)?,
            client,
        })
    }
}

/// The head as the database holds it: the head row, and the highest seq of
/// the log, read together.
#[derive(Clone, Copy, Debug)]
struct Found {
    head: Mark,
    last: u64,
    /// Where the live log starts (the archive's last seq and its hash).
    base: Mark,
}

/// The highest seq known committed, and who waits for it to move.
#[derive(Default)]
struct Seen {
    visible: Mutex<u64>,
    changed: Condvar,
}

impl Seen {
    fn bump(&self, seq: u64) {
        let mut v = lock(&self.visible);
        if seq > *v {
            *v = seq;
            self.changed.notify_all();
        }
    }
}

/// A log in a PostgreSQL database.
pub(crate) struct Log {
    location: PathBuf,
    durability: Durability,
    counters: Counters,
    config: Config,
    /// `synchronous_commit` for the ledger's sessions, when it sets one.
    commit: Option<&'static str>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Appends (and the group transaction, while one is open).
    writer: Mutex<Option<Arc<Session>>>,
    /// Reads.
    reader: Mutex<Option<Arc<Session>>>,
    /// Other writes: lease renewals, flushes, repairs, acceptances.
    aux: Mutex<Option<Arc<Session>>>,
    /// The group being appended, while the head row is locked.
    group: Mutex<Option<Group>>,
    /// The group being committed: its records are read from here until
    /// the commit is done.
    committing: Mutex<Option<Arc<Group>>>,
    seen: Arc<Seen>,
    vacuum: Arc<Vacuum>,
    /// The archive's segments, when the process was told where they are.
    archive: Option<Mutex<crate::store::archive::Segments>>,
    /// Where the live log starts, as last read ([`Found::base`]).
    base: Mutex<Mark>,
    /// The connection that holds the archive lock while this process's
    /// archive pass runs.
    archiving: Mutex<Option<Client>>,
}

/// The rewrite of `ledger_keys` after redactions deleted keys: PostgreSQL
/// keeps a deleted row's bytes in the table's files (a plain `VACUUM` only
/// marks their space free), so the ledger rewrites the table (`VACUUM
/// FULL`) in the background, one rewrite at a time for any number of
/// redactions meanwhile; [`Store::flush`] waits for it.
#[derive(Default)]
struct Vacuum {
    /// Whether a rewrite is asked for, whether one runs, and how the last
    /// one failed.
    state: Mutex<VacuumState>,
    done: Condvar,
}

#[derive(Default)]
struct VacuumState {
    wanted: bool,
    running: bool,
    failed: Option<String>,
}

/// What the redactions of an append remove from the rows committed before
/// it ([`schema::STRIP`]'s parameters).
#[derive(Default)]
struct Stripping {
    seq: Vec<i64>,
    record: Vec<Vec<u8>>,
    /// When each redacted execution was live (its snapshots go).
    lo: Vec<i64>,
    hi: Vec<i64>,
}

impl Stripping {
    fn is_empty(&self) -> bool {
        self.seq.is_empty() && self.lo.is_empty()
    }

    fn extend(&mut self, other: Stripping) {
        self.seq.extend(other.seq);
        self.record.extend(other.record);
        self.lo.extend(other.lo);
        self.hi.extend(other.hi);
    }

    async fn run(&self, s: &Session) -> Result<u64, StorageError> {
        s.client
            .execute(&s.strip, &[&self.seq, &self.record, &self.lo, &self.hi])
            .await
            .map_err(db)
    }
}

/// A group of appends (one combiner's commands) in one transaction that
/// holds the head row: the records are staged here and inserted, the head
/// moved and the snapshot stored, in one commit at its end.
struct Group {
    session: Arc<Session>,
    /// The head when the group locked it.
    start: Mark,
    /// The head after the staged records.
    end: Mark,
    rows: Rows,
    /// The snapshot to store, encrypted, and its key.
    snapshot: Option<(u64, Vec<u8>, record::Key)>,
    /// What the group's redactions remove from committed rows.
    strip: Stripping,
}

impl Group {
    /// The staged record of `seq`, readable.
    fn record(&self, seq: u64) -> Option<Vec<u8>> {
        self.rows.record(self.start.0 + 1, seq)
    }

    /// The staged records from `from` on.
    fn records_from(&self, from: u64) -> Vec<(u64, Vec<u8>)> {
        (from.max(self.start.0 + 1)..=self.end.0)
            .filter_map(|seq| Some((seq, self.record(seq)?)))
            .collect()
    }
}

/// A snapshot at `seq` as stored, decrypted under `key` (the row of its
/// slot, `-seq`); `None` when its key is gone or damaged (derived data:
/// one snapshot missed).
fn unsealed_snapshot(seq: u64, stored: Vec<u8>, key: Option<&[u8]>) -> Option<Vec<u8>> {
    let Some(slot) = record::snapshot_slot(&stored) else {
        // Written in the clear (schema version 2).
        return Some(stored);
    };
    let key = key.and_then(|k| record::Key::try_from(k).ok());
    match key {
        Some(key) if slot == seq => Some(record::open_snapshot(&stored, &key)),
        _ => {
            tracing::warn!(seq, "ignoring a snapshot whose key is gone or damaged");
            None
        }
    }
}

/// Record `seq` as stored, made readable: its payloads decrypted under
/// `key` (the row of slot `seq`, whatever slot the record names: one
/// imported names the slot of the ledger that wrote it), or read as
/// redacted without one.
fn readable(seq: u64, stored: Vec<u8>, key: Option<&[u8]>) -> Result<Vec<u8>, StorageError> {
    let opened = record::unseal(&stored, |_| {
        key.map(|k| {
            record::Key::try_from(k).map_err(|_| {
                StorageError::corrupt(seq, "the key of the record's payloads is damaged")
            })
        })
        .transpose()
    })?;
    Ok(opened.unwrap_or(stored))
}

impl Log {
    /// Connects to the database at `url`, creating the ledger's tables
    /// when there are none and `create` is set.
    pub(crate) fn open(
        url: &Path,
        durability: Durability,
        create: bool,
        archive: Option<&Path>,
    ) -> Result<Log, StorageError> {
        let url = url.to_str().unwrap_or_default();
        let mut config: Config = url.parse().map_err(|e: tokio_postgres::Error| {
            StorageError::new(
                ErrorKind::BadDirectory,
                format!(
                    "not a PostgreSQL URL ({e}): postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
                ),
            )
        })?;
        // A server that stops answering (a partition, no reset) fails the
        // call that waits for it instead of holding the ledger for ever,
        // unless the URL says otherwise.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(Duration::from_secs(30));
        }
        if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            config.keepalives_idle(Duration::from_secs(30));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ledger-postgres")
            .enable_all()
            .build()
            .map_err(|e| StorageError::io("cannot start the PostgreSQL client", e))?;
        let mut log = Log {
            location: PathBuf::from(redacted(&config)),
            durability,
            counters: Counters::default(),
            config,
            commit: None,
            runtime: Some(runtime),
            writer: Mutex::new(None),
            reader: Mutex::new(None),
            aux: Mutex::new(None),
            group: Mutex::new(None),
            committing: Mutex::new(None),
            seen: Arc::default(),
            vacuum: Arc::default(),
            archive: None,
            base: Mutex::new((0, record::GENESIS)),
            archiving: Mutex::new(None),
        };
        log.commit = log.commit_level()?;
        log.prepare_schema(create)?;
        log.open_archive(archive)?;
        let found = log.found()?;
        log.seen.bump(found.head.0.min(found.last));
        log.follow();
        if log.keys_owed_a_rewrite()? {
            // A process that redacted ended before it rewrote the table.
            log.vacuum_keys();
        }
        Ok(log)
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the log")
    }

    /// Runs `f` on the engine's runtime and waits for it, on any thread:
    /// the answer comes back over a plain channel, so no tokio runtime the
    /// caller may be inside is involved (polling a task's handle there
    /// would defer its wake-up to a scheduler the blocked caller holds).
    fn run<T: Send + 'static>(
        &self,
        f: impl Future<Output = Result<T, StorageError>> + Send + 'static,
    ) -> Result<T, StorageError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime().spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().unwrap_or_else(|_| {
            Err(StorageError::new(
                ErrorKind::Database,
                "the PostgreSQL client stopped before it answered",
            ))
        })
    }

    /// The session in `slot`, connecting again when its connection broke.
    fn session(&self, slot: &Mutex<Option<Arc<Session>>>) -> Result<Arc<Session>, StorageError> {
        let mut slot = lock(slot);
        if let Some(s) = slot.as_ref().filter(|s| !s.client.is_closed()) {
            return Ok(s.clone());
        }
        let (config, commit) = (self.config.clone(), self.commit);
        let session = Arc::new(self.run(Session::open(config, commit))?);
        *slot = Some(session.clone());
        Ok(session)
    }

    fn writer(&self) -> Result<Arc<Session>, StorageError> {
        self.session(&self.writer)
    }

    fn reader(&self) -> Result<Arc<Session>, StorageError> {
        self.session(&self.reader)
    }

    fn aux(&self) -> Result<Arc<Session>, StorageError> {
        self.session(&self.aux)
    }

    /// `f` of the group staged or being committed, if any: its records
    /// are read as the log's until the commit is done.
    fn staged<T>(&self, f: impl Fn(&Group) -> Option<T>) -> Option<T> {
        if let Some(t) = lock(&self.group).as_ref().and_then(&f) {
            return Some(t);
        }
        lock(&self.committing).as_deref().and_then(f)
    }

    /// The `synchronous_commit` the ledger's sessions need for its
    /// durability (`None`: the server's own).
    fn commit_level(&self) -> Result<Option<&'static str>, StorageError> {
        Ok(match self.durability {
            Durability::Buffered => Some("off"),
            Durability::Flushed => Some("local"),
            Durability::Synced => {
                let config = self.config.clone();
                let level = self.run(async move {
                    let client = connect(&config).await?;
                    let row = client
                        .query_one("SHOW synchronous_commit", &[])
                        .await
                        .map_err(db)?;
                    Ok(row.get::<_, String>(0))
                })?;
                (level == "off").then_some("on")
            }
        })
    }

    /// Checks the schema's version, creating the tables when there are
    /// none (and `create` is set).
    fn prepare_schema(&self, create: bool) -> Result<(), StorageError> {
        let config = self.config.clone();
        let location = self.location.display().to_string();
        self.run(async move {
            let client = connect(&config).await?;
            let version = |rows: Vec<tokio_postgres::Row>| -> Result<Option<u32>, StorageError> {
                match rows.first() {
                    None => Ok(None),
                    Some(row) => {
                        let v: String = row.get(0);
                        v.parse().map(Some).map_err(|_| {
                            StorageError::new(
                                ErrorKind::Corrupt,
                                format!("ledger_meta holds a schema version that is not a number: {v:?}"),
                            )
                        })
                    }
                }
            };
            let exists: bool = client
                .query_one(schema::EXISTS, &[])
                .await
                .map_err(db)?
                .get(0);
            let found = if exists {
                version(
                    client
                        .query("SELECT value FROM ledger_meta WHERE key = 'schema'", &[])
                        .await
                        .map_err(db)?,
                )?
            } else {
                None
            };
            match found {
                Some(v) if v > schema::VERSION => {
                    return Err(StorageError::new(
                        ErrorKind::UnsupportedVersion,
                        format!(
                            "the database {location} holds a ledger of schema version {v}; this build reads version {} and older",
                            schema::VERSION
                        ),
                    ))
                }
                Some(v) if v == schema::VERSION => return Ok(()),
                Some(_) => {
                    // An older schema: brought up to this one by the first
                    // process that opens it.
                    client
                        .batch_execute(&format!(
                            "BEGIN; SELECT pg_advisory_xact_lock({}); {} {} {} {} COMMIT;",
                            schema::CREATE_LOCK,
                            schema::UPGRADE_1,
                            schema::UPGRADE_2,
                            schema::UPGRADE_3,
                            schema::UPGRADE_4
                        ))
                        .await
                        .map_err(db)?;
                    return Ok(());
                }
                None if !create => {
                    return Err(StorageError::new(
                        ErrorKind::NoLedger,
                        format!("there is no ledger in the database {location}"),
                    ))
                }
                None => {}
            }
            // One process creates the tables; the others, waiting for the
            // lock, find them made (running the statements again would
            // lock tables that the first process already appends to).
            client
                .batch_execute(&format!(
                    "BEGIN; SELECT pg_advisory_xact_lock({})",
                    schema::CREATE_LOCK
                ))
                .await
                .map_err(db)?;
            let made: bool = client
                .query_one(schema::EXISTS, &[])
                .await
                .map_err(db)?
                .get(0);
            if !made {
                let create = format!(
                    "{} INSERT INTO ledger_meta (key, value) VALUES ('schema', '{}');",
                    schema::CREATE,
                    schema::VERSION
                );
                client.batch_execute(&create).await.map_err(db)?;
            }
            client.batch_execute("COMMIT").await.map_err(db)?;
            Ok(())
        })
    }

    /// The head row and the log's highest seq, read in one snapshot.
    fn found(&self) -> Result<Found, StorageError> {
        let s = self.reader()?;
        self.run(async move {
            let row = s.client.query_one(&s.head, &[]).await.map_err(db)?;
            let hash: Vec<u8> = row.get(1);
            let hash = Hash::try_from(hash.as_slice()).map_err(|_| {
                StorageError::new(ErrorKind::Corrupt, "the head row holds a malformed hash")
            })?;
            let base: Option<String> = row.get(3);
            Ok(Found {
                head: (seq_of(row.get(0))?, hash),
                last: seq_of(row.get(2))?,
                base: archiving::parse_base(base.as_deref())?,
            })
        })
        .inspect(|found| *lock(&self.base) = found.base)
    }

    /// Listens for appends (any process's) and polls the head row as a
    /// backstop, moving the visible seq forward; reconnects when the
    /// connection breaks.
    fn follow(&self) {
        let (config, seen) = (self.config.clone(), self.seen.clone());
        self.runtime().spawn(async move {
            loop {
                if let Ok((client, mut connection)) = config.connect(NoTls).await {
                    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                    tokio::spawn(async move {
                        while let Some(Ok(message)) =
                            std::future::poll_fn(|cx| connection.poll_message(cx)).await
                        {
                            if let AsyncMessage::Notification(n) = message {
                                if let Ok(seq) = n.payload().parse::<u64>() {
                                    let _ = tx.send(seq);
                                }
                            }
                        }
                    });
                    if client
                        .batch_execute(&format!("LISTEN {}", schema::CHANNEL))
                        .await
                        .is_ok()
                    {
                        loop {
                            tokio::select! {
                                // A notification says the head moved (maybe
                                // another schema's: the channel is the
                                // database's): read this schema's head row.
                                seq = rx.recv() => match seq {
                                    Some(_) => {
                                        while rx.try_recv().is_ok() {}
                                        match client.query_one("SELECT seq FROM ledger_head WHERE id = 1", &[]).await {
                                            Ok(row) => seen.bump(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)),
                                            Err(_) => break,
                                        }
                                    }
                                    None => break,
                                },
                                () = tokio::time::sleep(POLL) => {
                                    match client.query_one("SELECT seq FROM ledger_head WHERE id = 1", &[]).await {
                                        Ok(row) => seen.bump(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)),
                                        Err(_) => break,
                                    }
                                }
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    /// Records `from` through `to`, in one round trip per page.
    /// Committed lines of settled executions submitted before `before`,
    /// newest first, [`LISTED_PAGE`] at most.
    fn listed_page(&self, before: u64) -> Result<Vec<Listed>, StorageError> {
        let s = self.reader()?;
        self.run(async move {
            let rows = s
                .client
                .query(&s.listed, &[&sql_seq(before), &LISTED_PAGE])
                .await
                .map_err(db)?;
            rows.iter()
                .map(|r| {
                    let malformed = |what: &str| {
                        StorageError::new(
                            ErrorKind::Corrupt,
                            format!("ledger_listed holds a row with a malformed {what}"),
                        )
                    };
                    Ok(Listed {
                        seq: seq_of(r.get(0))?,
                        id: ExecutionId::from_bytes(*r.get::<_, Uuid>(1).as_bytes()),
                        tenant: r
                            .get::<_, String>(2)
                            .parse()
                            .map_err(|_| malformed("tenant"))?,
                        callable: r.get(3),
                        status: r
                            .get::<_, String>(4)
                            .parse()
                            .map_err(|_| malformed("status"))?,
                        queued_at: DateTime::<Utc>::from_timestamp_nanos(r.get(5)),
                    })
                })
                .collect()
        })
    }

    fn page(&self, from: u64, limit: i64) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        let s = self.reader()?;
        self.run(async move {
            let rows = s
                .client
                .query(&s.page, &[&sql_seq(from), &limit])
                .await
                .map_err(db)?;
            rows.iter()
                .map(|r| {
                    let seq = seq_of(r.get(0))?;
                    let key: Option<&[u8]> = r.get(2);
                    Ok((seq, readable(seq, r.get(1), key)?))
                })
                .collect()
        })
    }

    /// Record `seq` as committed, readable.
    fn committed_record(&self, seq: u64) -> Result<Option<Vec<u8>>, StorageError> {
        let s = self.reader()?;
        self.run(async move {
            let row = s
                .client
                .query_opt(&s.record, &[&sql_seq(seq)])
                .await
                .map_err(db)?;
            row.map(|r| {
                let key: Option<&[u8]> = r.get(1);
                readable(seq, r.get(0), key)
            })
            .transpose()
        })
    }

    /// What the redactions among `events` remove: the records of their
    /// executions' events before them without their payloads (each read
    /// from `appending`, the records being appended, or else as
    /// committed), and when each execution was live.
    fn stripping(
        &self,
        events: &[Draft<'_>],
        appending: impl Fn(u64) -> Option<Vec<u8>>,
    ) -> Result<Stripping, StorageError> {
        let mut out = Stripping::default();
        let mut in_clear = 0;
        for draft in events {
            let seqs: Vec<u64> = draft.strips().collect();
            let (Some(&lo), Some(&hi)) = (seqs.first(), seqs.last()) else {
                continue;
            };
            out.lo.push(sql_seq(lo));
            out.hi.push(sql_seq(hi));
            for seq in seqs {
                let bytes = match appending(seq) {
                    Some(bytes) => bytes,
                    None => self
                        .committed_record(seq)?
                        .ok_or_else(|| StorageError::corrupt(seq, "record is missing"))?,
                };
                if let record::Stripped::Record(r) = record::strip(seq, &bytes)? {
                    in_clear += usize::from(bytes.first() == Some(&record::FORMAT_V2));
                    out.seq.push(sql_seq(seq));
                    out.record.push(r);
                }
            }
        }
        if in_clear > 0 {
            tracing::warn!(
                records = in_clear,
                "redacted records written before payloads were encrypted: their payloads stay readable in the old row versions PostgreSQL keeps until a VACUUM FULL of ledger_log"
            );
        }
        Ok(out)
    }

    /// Whether `ledger_keys` is owed a rewrite ([`schema::KEYS_DELETED`]).
    fn keys_owed_a_rewrite(&self) -> Result<bool, StorageError> {
        let s = self.reader()?;
        self.run(async move {
            let rows = s
                .client
                .query(
                    "SELECT 1 FROM ledger_meta WHERE key = $1",
                    &[&schema::KEYS_DELETED],
                )
                .await
                .map_err(db)?;
            Ok(!rows.is_empty())
        })
    }

    /// Waits for the rewrite of `ledger_keys` in progress, if any (`for_at_most`,
    /// when given); returns the state once none runs, or `None` when time
    /// ran out.
    fn vacuumed(&self, for_at_most: Option<Duration>) -> Option<MutexGuard<'_, VacuumState>> {
        let state = lock(&self.vacuum.state);
        let done = &self.vacuum.done;
        let Some(limit) = for_at_most else {
            return Some(
                done.wait_while(state, |s| s.running)
                    .unwrap_or_else(|p| p.into_inner()),
            );
        };
        let (state, waited) = done
            .wait_timeout_while(state, limit, |s| s.running)
            .unwrap_or_else(|p| p.into_inner());
        (!waited.timed_out()).then_some(state)
    }

    /// Asks for `ledger_keys` to be rewritten without the rows redactions
    /// deleted ([`Vacuum`]), on a connection of its own.
    fn vacuum_keys(&self) {
        let mut state = lock(&self.vacuum.state);
        state.wanted = true;
        if state.running {
            return;
        }
        state.running = true;
        drop(state);
        let (vacuum, config) = (self.vacuum.clone(), self.config.clone());
        self.runtime().spawn(async move {
            loop {
                {
                    let mut state = lock(&vacuum.state);
                    if !state.wanted {
                        state.running = false;
                        vacuum.done.notify_all();
                        return;
                    }
                    state.wanted = false;
                }
                let rewritten: Result<(), StorageError> = async {
                    let client = connect(&config).await?;
                    let owed = client
                        .query_opt(
                            "SELECT value FROM ledger_meta WHERE key = $1",
                            &[&schema::KEYS_DELETED],
                        )
                        .await
                        .map_err(db)?
                        .map(|r| r.get::<_, String>(0));
                    // Alone: a batch of statements runs as one transaction,
                    // which VACUUM refuses.
                    client
                        .batch_execute("SET application_name = 'execution-ledger'")
                        .await
                        .map_err(db)?;
                    client
                        .batch_execute("VACUUM FULL ledger_keys")
                        .await
                        .map_err(db)?;
                    // Owed no more, unless a redaction counted meanwhile.
                    if let Some(owed) = owed {
                        client
                            .execute(
                                "DELETE FROM ledger_meta WHERE key = $1 AND value = $2",
                                &[&schema::KEYS_DELETED, &owed],
                            )
                            .await
                            .map_err(db)?;
                    }
                    Ok(())
                }
                .await;
                let mut state = lock(&vacuum.state);
                state.failed = rewritten.err().map(|e| {
                    tracing::warn!(error = %e, "cannot rewrite ledger_keys");
                    e.to_string()
                });
            }
        });
    }
}

/// The URL without its password, for messages and [`Store::location`].
fn redacted(config: &Config) -> String {
    let user = config.get_user().unwrap_or("");
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or(user);
    let user = if user.is_empty() {
        String::new()
    } else {
        format!("{user}@")
    };
    format!("postgres://{user}{host}:{port}/{db}")
}

fn sql_seq(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn seq_of(v: i64) -> Result<u64, StorageError> {
    u64::try_from(v).map_err(|_| StorageError::new(ErrorKind::Corrupt, format!("negative seq {v}")))
}

fn uuid(id: &ExecutionId) -> Uuid {
    Uuid::from_bytes(*id.as_bytes())
}

/// The columns of the rows an append inserts.
#[derive(Default)]
struct Rows {
    seq: Vec<i64>,
    /// (None for a control entry, which belongs to no execution.)
    execution: Vec<Option<Uuid>>,
    /// (A control entry's, when it is about one tenant.)
    tenant: Vec<Option<String>>,
    kind: Vec<&'static str>,
    at: Vec<DateTime<Utc>>,
    name_kind: Vec<Option<i8>>,
    name: Vec<Option<String>>,
    record: Vec<Vec<u8>>,
    listed: ListedRows,
    /// The keys of the records' payloads, by slot (the record's seq), in
    /// order.
    key_slot: Vec<i64>,
    key: Vec<Vec<u8>>,
}

/// The lines of the executions that appended events settle, as
/// `ledger_listed`'s columns.
#[derive(Debug, Default)]
struct ListedRows {
    seq: Vec<i64>,
    execution: Vec<Uuid>,
    tenant: Vec<String>,
    callable: Vec<String>,
    status: Vec<&'static str>,
    queued_ns: Vec<i64>,
    /// Where each execution's line (by its first seq) is staged: one
    /// statement may not upsert a row twice, and an execution settled and
    /// then redacted or retried in one group or one rebuild chunk has two
    /// lines, of which the later holds.
    at: HashMap<i64, usize>,
}

impl ListedRows {
    fn push(&mut self, l: &Listed) {
        self.put(
            sql_seq(l.seq),
            uuid(&l.id),
            l.tenant.as_str().to_owned(),
            l.callable.clone(),
            l.status.as_str(),
            l.queued_ns(),
        );
    }

    /// Stages one line, in place of the one staged at its seq.
    fn put(
        &mut self,
        seq: i64,
        execution: Uuid,
        tenant: String,
        callable: String,
        status: &'static str,
        queued_ns: i64,
    ) {
        if let Some(&i) = self.at.get(&seq) {
            (self.execution[i], self.tenant[i], self.callable[i]) = (execution, tenant, callable);
            (self.status[i], self.queued_ns[i]) = (status, queued_ns);
            return;
        }
        self.at.insert(seq, self.seq.len());
        self.seq.push(seq);
        self.execution.push(execution);
        self.tenant.push(tenant);
        self.callable.push(callable);
        self.status.push(status);
        self.queued_ns.push(queued_ns);
    }

    /// Stages `other`'s lines after these.
    fn extend(&mut self, other: ListedRows) {
        let columns = other.seq.into_iter().zip(other.execution).zip(other.tenant);
        let rest = other
            .callable
            .into_iter()
            .zip(other.status)
            .zip(other.queued_ns);
        for (((seq, execution), tenant), ((callable, status), queued_ns)) in columns.zip(rest) {
            self.put(seq, execution, tenant, callable, status, queued_ns);
        }
    }

    /// The lines staged, as [`Listed`].
    fn lines(&self) -> Vec<Listed> {
        (0..self.seq.len())
            .filter_map(|i| {
                Some(Listed {
                    seq: u64::try_from(self.seq[i]).ok()?,
                    id: ExecutionId::from_bytes(*self.execution[i].as_bytes()),
                    tenant: self.tenant[i].parse().ok()?,
                    callable: self.callable[i].clone(),
                    status: self.status[i].parse().ok()?,
                    queued_at: DateTime::<Utc>::from_timestamp_nanos(self.queued_ns[i]),
                })
            })
            .collect()
    }
}

/// A per-tenant name as the log's columns hold it: its tenant, its
/// `name_kind` ('k' an idempotency key, 'b' a binding target) and its text.
fn name_columns<'a>(name: Name<'a>) -> (&'a crate::execution::TenantId, i8, &'a str) {
    match name {
        Name::Idempotency(t, k) => (t, b'k' as i8, k),
        Name::Binding(t, k) => (t, b'b' as i8, k),
    }
}

/// A statement parameter.
type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

impl Rows {
    /// The columns as the statements take them, in the order of
    /// `ledger_log`'s columns, then `ledger_listed`'s (schema.rs).
    fn columns(&self) -> [Param<'_>; 14] {
        let l = &self.listed;
        [
            &self.seq,
            &self.execution,
            &self.tenant,
            &self.kind,
            &self.at,
            &self.name_kind,
            &self.name,
            &self.record,
            &l.seq,
            &l.execution,
            &l.tenant,
            &l.callable,
            &l.status,
            &l.queued_ns,
        ]
    }

    /// `ledger_keys`' columns.
    fn keys(&self) -> [Param<'_>; 2] {
        [&self.key_slot, &self.key]
    }

    /// Adds the rows of `events` after the record whose hash is `prev`,
    /// each one's payloads encrypted under a fresh key of its own; returns
    /// the last one's seq and hash (`prev`'s mark, `after`, when there is
    /// none). Nothing is added when no key can be made.
    fn add(&mut self, after: Mark, events: &[Draft<'_>]) -> Result<Mark, StorageError> {
        let keys = events
            .iter()
            .map(|d| {
                d.copied
                    .map_or(d.may_carry(), |r| record::copied_slot(r).is_some())
                    .then(record::fresh_key)
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut end = after;
        for (draft, key) in events.iter().zip(keys) {
            let seq = draft.seq();
            debug_assert_eq!(seq, end.0 + 1, "appended in seq order");
            let (bytes, hash) = match (draft.copied, draft.entry) {
                (Some(readable), _) => record::copy_record(readable, key.as_ref()),
                (None, Drafted::Event(event)) => {
                    record::encode_event(&end.1, event, key.as_ref().map(|k| (seq, k)))
                }
                (None, Drafted::Control(c)) => record::encode_control(&end.1, c),
            };
            if let Some(key) = key.filter(|_| record::is_sealed(&bytes)) {
                self.key_slot.push(sql_seq(seq));
                self.key.push(key.to_vec());
            }
            self.push(draft.entry, bytes, draft.settles);
            end = (seq, hash);
        }
        Ok(end)
    }

    /// Staged record `i`, readable.
    fn readable(&self, i: usize) -> Option<Vec<u8>> {
        let stored = self.record.get(i)?.clone();
        let seq = self.seq[i];
        let key = self
            .key_slot
            .binary_search(&seq)
            .ok()
            .map(|k| self.key[k].as_slice());
        readable(u64::try_from(seq).ok()?, stored, key).ok()
    }

    /// Adds `other`'s rows after these.
    fn append(&mut self, other: Rows) {
        self.seq.extend(other.seq);
        self.execution.extend(other.execution);
        self.tenant.extend(other.tenant);
        self.kind.extend(other.kind);
        self.at.extend(other.at);
        self.name_kind.extend(other.name_kind);
        self.name.extend(other.name);
        self.record.extend(other.record);
        self.key_slot.extend(other.key_slot);
        self.key.extend(other.key);
        self.listed.extend(other.listed);
    }

    /// The record of `seq` among these rows (whose first is `first`),
    /// readable.
    fn record(&self, first: u64, seq: u64) -> Option<Vec<u8>> {
        seq.checked_sub(first)
            .and_then(|i| self.readable(usize::try_from(i).ok()?))
    }

    /// Removes the payloads of the records of `stripped` among these rows
    /// (whose first is `first`; their keys are never written); returns
    /// what is left for the rows committed before.
    fn strip(&mut self, first: u64, mut stripped: Stripping) -> Stripping {
        let first = sql_seq(first);
        let mut rest = Stripping {
            lo: std::mem::take(&mut stripped.lo),
            hi: std::mem::take(&mut stripped.hi),
            ..Stripping::default()
        };
        for (seq, bytes) in stripped.seq.into_iter().zip(stripped.record) {
            let Some(i) = seq
                .checked_sub(first)
                .and_then(|i| usize::try_from(i).ok())
                .filter(|&i| i < self.record.len())
            else {
                rest.seq.push(seq);
                rest.record.push(bytes);
                continue;
            };
            self.record[i] = bytes;
            if let Ok(k) = self.key_slot.binary_search(&seq) {
                self.key_slot.remove(k);
                self.key.remove(k);
            }
        }
        rest
    }

    /// Adds the row of `entry`, whose record is `bytes`, and the line of
    /// the execution it settles.
    fn push(&mut self, entry: Drafted<'_>, bytes: Vec<u8>, settles: Option<&Settled>) {
        if let Some(settled) = settles {
            self.listed.push(&settled.listed);
        }
        let event = match entry {
            Drafted::Event(event) => event,
            Drafted::Control(c) => {
                self.seq.push(sql_seq(c.seq));
                self.execution.push(None);
                let tenant = c.kind.scope().tenant_id.as_ref();
                self.tenant.push(tenant.map(|t| t.as_str().to_owned()));
                self.kind.push(c.kind.name());
                self.at.push(c.at);
                self.name_kind.push(None);
                self.name.push(None);
                self.record.push(bytes);
                return;
            }
        };
        let (name_kind, name) = match Name::of(event).map(name_columns) {
            Some((_, kind, text)) => (Some(kind), Some(text.to_owned())),
            None => (None, None),
        };
        self.seq.push(sql_seq(event.seq));
        self.execution.push(Some(uuid(&event.execution_id)));
        self.tenant.push(Some(event.tenant_id.as_str().to_owned()));
        self.kind.push(event.kind.name());
        self.at.push(event.at);
        self.name_kind.push(name_kind);
        self.name.push(name);
        self.record.push(bytes);
    }
}

impl Log {
    /// The live log's records from `from` on: committed, then staged.
    fn live_records(&self, from: u64) -> Items<'_, super::StoredRecord> {
        let mut next = from.max(1);
        let mut page = std::collections::VecDeque::new();
        let (mut done, mut staged) = (false, false);
        Box::new(std::iter::from_fn(move || loop {
            if let Some((seq, bytes)) = page.pop_front() {
                return Some(Ok((seq, Bytes::new(bytes))));
            }
            if !done {
                match self.page(next, PAGE) {
                    Ok(rows) => {
                        done = (rows.len() as i64) < PAGE;
                        if let Some((last, _)) = rows.last() {
                            next = last + 1;
                        }
                        page.extend(rows);
                    }
                    Err(e) => {
                        done = true;
                        return Some(Err(e));
                    }
                }
            } else if !staged {
                // After the log's committed records, the group's staged
                // ones.
                staged = true;
                // (A group that starts after `next` is not the one: the
                // one before it committed since the page was read.)
                let rows = self
                    .staged(|g| (g.start.0 < next).then(|| g.records_from(next)))
                    .unwrap_or_default();
                if !rows.is_empty() {
                    page.extend(rows);
                    continue;
                }
                // None: a group may have committed since the last page
                // was read, and left the staged ones meanwhile.
                match self.page(next, PAGE) {
                    Ok(rows) if !rows.is_empty() => {
                        (done, staged) = ((rows.len() as i64) < PAGE, false);
                        if let Some((last, _)) = rows.last() {
                            next = last + 1;
                        }
                        page.extend(rows);
                    }
                    Ok(_) => {}
                    Err(e) => return Some(Err(e)),
                }
            } else {
                return None;
            }
        }))
    }
}

impl Store for Log {
    fn location(&self) -> &Path {
        &self.location
    }

    fn durability(&self) -> Durability {
        self.durability
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn last_seq(&self) -> Result<u64, StorageError> {
        Ok(self.found()?.last)
    }

    /// The head row is the log's checkpoint: the log must end at it, with
    /// the hash it records. (Both live in the database: a tail dropped
    /// together with the head row moved back is found only against a head
    /// kept elsewhere, `ledger verify --checkpoint`.)
    fn check_tail(&self, last: u64) -> Result<Tail, StorageError> {
        let found = self.found()?;
        let (seq, hash) = found.head;
        if found.last < last {
            return Ok(Tail::Refused(
                StorageError::new(
                    ErrorKind::LostSuffix,
                    format!(
                        "the log ended at seq {last} and now ends at seq {}",
                        found.last
                    ),
                )
                .at_seq(found.last + 1),
            ));
        }
        if found.last < seq {
            return Ok(Tail::Refused(
                StorageError::new(
                    ErrorKind::LostSuffix,
                    format!(
                        "the log ends at seq {} before its head row's seq {seq}",
                        found.last
                    ),
                )
                .at_seq(found.last + 1),
            ));
        }
        if found.last > seq {
            return Ok(Tail::Refused(StorageError::corrupt(
                seq + 1,
                format!(
                    "the log holds records after its head row's seq {seq} (through seq {}), not appended by a ledger",
                    found.last
                ),
            )));
        }
        if seq > 0 {
            let bytes = self
                .record(seq)?
                .ok_or_else(|| StorageError::corrupt(seq, "record is missing"))?;
            if record::decode(seq, &bytes)?.hash != hash {
                return Ok(Tail::Refused(
                    StorageError::new(
                        ErrorKind::Checkpoint,
                        format!(
                            "the head row records another hash at seq {seq} than the log's record"
                        ),
                    )
                    .at_seq(seq),
                ));
            }
        }
        Ok(Tail::Whole)
    }

    fn resume(
        &self,
        head: Mark,
        accepted: Option<(&str, &StorageError)>,
    ) -> Result<(), StorageError> {
        if let Some((at, problem)) = accepted {
            let s = self.aux()?;
            let (at, problem) = (at.to_owned(), problem.to_string());
            tracing::warn!(seq = head.0, "accepting the log as it is: {problem}");
            self.run(async move {
                s.client
                    .execute(
                        "UPDATE ledger_head SET seq = $1, hash = $2 WHERE id = 1",
                        &[&sql_seq(head.0), &head.1.as_slice()],
                    )
                    .await
                    .map_err(db)?;
                s.client
                    .execute(
                        "INSERT INTO ledger_acceptances (at, seq, hash, problem) VALUES ($1, $2, $3, $4)",
                        &[&at, &sql_seq(head.0), &head.1.as_slice(), &problem],
                    )
                    .await
                    .map_err(db)?;
                Ok(())
            })?;
        }
        self.seen.bump(head.0);
        Ok(())
    }

    fn append(&self, after: Mark, events: &[Draft<'_>]) -> Result<Mark, AppendError> {
        let failed = |error| AppendError::Failed {
            error,
            written: after,
        };
        let started = Instant::now();
        if let Some(group) = lock(&self.group).as_mut() {
            // The head row is locked: no one else appends; the records
            // are staged for the group's commit.
            if group.end != after {
                return Err(failed(StorageError::corrupt(
                    group.end.0.max(1),
                    format!(
                        "the group ends at seq {}, not at the seq the ledger appends after ({})",
                        group.end.0, after.0
                    ),
                )));
            }
            let mut rows = Rows::default();
            let end = rows.add(group.end, events).map_err(failed)?;
            let (first, staged) = (group.end.0 + 1, group.start.0 + 1);
            let stripped = self
                .stripping(events, |seq| {
                    rows.record(first, seq)
                        .or_else(|| group.rows.record(staged, seq))
                })
                .map_err(failed)?;
            let rest = rows.strip(first, stripped);
            let rest = group.rows.strip(staged, rest);
            group.rows.append(rows);
            group.end = end;
            group.strip.extend(rest);
            self.counters.append.record(started.elapsed());
            return Ok(group.end);
        }
        let mut rows = Rows::default();
        let end = rows.add(after, events).map_err(failed)?;
        let first = after.0 + 1;
        let stripped = self
            .stripping(events, |seq| rows.record(first, seq))
            .map_err(failed)?;
        let stripped = rows.strip(first, stripped);
        let s = self.writer().map_err(failed)?;
        let n = events.len() as u64;
        let forgets = !stripped.is_empty();
        let inserted = self.run(async move {
            let r = &rows;
            let (from, to) = (sql_seq(after.0), sql_seq(end.0));
            let (from_hash, to_hash) = (after.1.as_slice(), end.1.as_slice());
            let params: Vec<Param<'_>> =
                <[Param<'_>; 4]>::into_iter([&from, &from_hash, &to, &to_hash])
                    .chain(r.columns())
                    .chain(r.keys())
                    .collect();
            let append = s.client.execute(&s.append, &params);
            if !forgets {
                return append.await.map_err(db);
            }
            // A redaction: the append and what it removes commit together,
            // the removal read after the head row is held.
            s.client.batch_execute("BEGIN").await.map_err(db)?;
            let done = async {
                let k = append.await.map_err(db)?;
                if k == n {
                    stripped.run(&s).await?;
                }
                Ok(k)
            }
            .await;
            let end = match done {
                Ok(k) if k == n => "COMMIT",
                _ => "ROLLBACK",
            };
            let ended = s.client.batch_execute(end).await.map_err(db);
            let k = done?;
            ended?;
            Ok(k)
        });
        // The statement is the append and its commit (the sync) at once.
        let took = started.elapsed();
        self.counters.append.record(took);
        self.counters.sync.record(took);
        match inserted {
            Ok(k) if k == n => {
                self.seen.bump(end.0);
                if forgets {
                    self.vacuum_keys();
                }
                Ok(end)
            }
            Ok(_) => {
                // Another process moved the head first (or the log
                // diverged from the ledger's head).
                let found = self.found().map_err(failed)?;
                if found.head.0 <= after.0 {
                    return Err(failed(StorageError::corrupt(
                        found.head.0.max(1),
                        format!(
                            "the log ends at seq {} ({}), not at the seq the ledger appends after ({}, {}): they diverged",
                            found.head.0,
                            record::hex(&found.head.1),
                            after.0,
                            record::hex(&after.1)
                        ),
                    )));
                }
                let missed = self
                    .records(after.0 + 1)
                    .take_while(|r| r.as_ref().map_or(true, |(seq, _)| *seq <= found.head.0))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(failed)?;
                self.seen.bump(found.head.0);
                Err(AppendError::Conflict(missed))
            }
            // Whether a commit whose answer was lost happened is found by
            // the next append (it conflicts) once the ledger is reopened.
            Err(error) => Err(failed(error)),
        }
    }

    /// A commit is as durable as the session's `synchronous_commit` makes
    /// it when PostgreSQL acknowledges it.
    fn wait_durable(&self, _seq: u64) -> Result<(), StorageError> {
        Ok(())
    }

    /// A transaction with `synchronous_commit = on` waits for the WAL to be
    /// flushed up to its commit, and so for every commit before it.
    /// Then waits for the rewrite of `ledger_keys` that redactions asked
    /// for, if one is due: once it is done, the keys they deleted are gone
    /// from the table's files.
    fn flush(&self) -> Result<(), StorageError> {
        let s = self.aux()?;
        self.run(async move {
            s.client
                .batch_execute(
                    "BEGIN; SET LOCAL synchronous_commit = on; SELECT txid_current(); COMMIT;",
                )
                .await
                .map_err(db)
        })?;
        match self.vacuumed(None).and_then(|s| s.failed.clone()) {
            Some(e) => Err(StorageError::new(
                ErrorKind::Database,
                format!("{e} (rewriting ledger_keys after a redaction: the keys it deleted stay in the table's files until it is rewritten, VACUUM FULL ledger_keys)"),
            )),
            None => Ok(()),
        }
    }

    fn visible(&self) -> u64 {
        *lock(&self.seen.visible)
    }

    fn wait_visible(&self, seq: u64, timeout: Duration) -> u64 {
        let v = lock(&self.seen.visible);
        let (v, _) = self
            .seen
            .changed
            .wait_timeout_while(v, timeout, |v| *v < seq)
            .unwrap_or_else(|p| p.into_inner());
        *v
    }

    /// Records are read with their payloads decrypted; one whose key a
    /// redaction deleted reads as redacted.
    fn record(&self, seq: u64) -> Result<Option<Bytes>, StorageError> {
        if let Some(bytes) = self.staged(|g| g.record(seq)) {
            return Ok(Some(Bytes::new(bytes)));
        }
        match self.committed_record(seq)? {
            Some(bytes) => Ok(Some(Bytes::new(bytes))),
            // Archived (rows a removal has not reached yet are read above).
            None if (1..=self.base_now().0).contains(&seq) => self.archived_record(seq),
            None => Ok(None),
        }
    }

    /// From the archive's segments through the base, then the live log.
    fn records(&self, from: u64) -> Items<'_, super::StoredRecord> {
        let from = from.max(1);
        let mut base = self.base_now().0;
        if from > base {
            let mut live = self.live_records(from).peekable();
            // A first record after `from`: another process may have
            // archived them meanwhile (the base read here is the last one
            // seen).
            let gap = matches!(live.peek(), Some(Ok((seq, _))) if *seq > from);
            if !gap {
                return Box::new(live);
            }
            base = self.found().map_or(base, |found| found.base.0);
            if from > base {
                return Box::new(live);
            }
        }
        {
            let archived = (from.max(1)..=base).map(move |seq| {
                self.archived_record(seq)?
                    .ok_or_else(|| StorageError::corrupt(seq, "archived record is missing"))
                    .map(|bytes| (seq, bytes))
            });
            let mut failed = false;
            let archived = archived.take_while(move |r| {
                let go = !failed;
                failed |= r.is_err();
                go
            });
            Box::new(archived.chain(self.live_records(base + 1)))
        }
    }

    /// Every event of the execution (live ones too: the ledger takes the
    /// union with its projection's).
    fn execution_seqs(&self, id: &ExecutionId) -> Result<Vec<u64>, StorageError> {
        let s = self.reader()?;
        let key = uuid(id);
        let mut seqs: Vec<u64> = self.run(async move {
            let rows = s.client.query(&s.seqs, &[&key]).await.map_err(db)?;
            rows.iter()
                .map(|r| seq_of(r.get(0)))
                .collect::<Result<Vec<_>, _>>()
        })?;
        let staged = self.staged(|g| {
            let first = g.start.0 + 1;
            Some(
                (first..)
                    .zip(&g.rows.execution)
                    .filter(|(_, e)| **e == Some(key))
                    .map(|(seq, _)| seq)
                    .collect::<Vec<_>>(),
            )
        });
        for seq in staged.unwrap_or_default() {
            if !seqs.contains(&seq) {
                seqs.push(seq);
            }
        }
        Ok(seqs)
    }

    fn list_complete(&self) -> Result<bool, StorageError> {
        let s = self.reader()?;
        self.run(async move {
            let rows = s
                .client
                .query("SELECT 1 FROM ledger_meta WHERE key = 'listing'", &[])
                .await
                .map_err(db)?;
            Ok(rows.is_empty())
        })
    }

    fn listed_before(&self, before: u64) -> Items<'_, Listed> {
        // The group's own lines, merged into the committed ones by seq.
        let mut staged = self
            .staged(|g| Some(g.rows.listed.lines()))
            .unwrap_or_default();
        staged.retain(|l| l.seq < before);
        staged.sort_unstable_by_key(|l| std::cmp::Reverse(l.seq));
        let mut staged = std::collections::VecDeque::from(staged);
        let mut page = std::collections::VecDeque::new();
        let (mut next, mut done) = (before, false);
        Box::new(std::iter::from_fn(move || {
            if page.is_empty() && !done {
                match self.listed_page(next) {
                    Ok(rows) => {
                        done = (rows.len() as i64) < LISTED_PAGE;
                        if let Some(last) = rows.last() {
                            next = last.seq;
                        }
                        page.extend(rows);
                    }
                    Err(e) => {
                        done = true;
                        return Some(Err(e));
                    }
                }
            }
            let take_staged = match (staged.front(), page.front()) {
                (Some(s), Some(p)) => s.seq >= p.seq,
                (s, _) => s.is_some(),
            };
            let line = if take_staged {
                let line = staged.pop_front()?;
                if page.front().is_some_and(|p| p.seq == line.seq) {
                    page.pop_front();
                }
                line
            } else {
                page.pop_front()?
            };
            Some(Ok(line))
        }))
    }

    fn named(&self, name: Name<'_>) -> Result<Option<ExecutionId>, StorageError> {
        let (tenant, kind, key) = name_columns(name);
        // The group's own names first: the latest one wins.
        let staged = self.staged(|g| {
            let r = &g.rows;
            (0..r.seq.len()).rev().find_map(|i| {
                (r.name_kind[i] == Some(kind)
                    && r.name[i].as_deref() == Some(key)
                    && r.tenant[i].as_deref() == Some(tenant.as_str()))
                .then_some(r.execution[i])
                .flatten()
                .map(|e| ExecutionId::from_bytes(*e.as_bytes()))
            })
        });
        if staged.is_some() {
            return Ok(staged);
        }
        let s = self.reader()?;
        let (tenant, key) = (tenant.as_str().to_owned(), key.to_owned());
        self.run(async move {
            let row = s
                .client
                .query_opt(
                    "SELECT execution FROM ledger_log \
                     WHERE tenant = $1 AND name_kind = $2 AND name = $3 AND name IS NOT NULL \
                     ORDER BY seq DESC LIMIT 1",
                    &[&tenant, &kind, &key],
                )
                .await
                .map_err(db)?;
            Ok(row.map(|r| ExecutionId::from_bytes(*r.get::<_, Uuid>(0).as_bytes())))
        })
    }

    /// Within a group, the snapshot is stored by the group's commit (it
    /// is of the projection with the group's records folded in).
    /// A snapshot is encrypted under a key of its own (slot `-seq`), which
    /// a redaction of an execution live at `seq` deletes with it. Outside
    /// a group it is written on a connection of its own, in a transaction
    /// that first holds the head row (`FOR SHARE`, [`schema::SNAPSHOT`]).
    fn put_snapshot(&self, seq: u64, bytes: Vec<u8>) -> Result<(), StorageError> {
        let key = record::fresh_key()?;
        let bytes = record::seal_snapshot(seq, &key, bytes);
        if let Some(group) = lock(&self.group).as_mut() {
            group.snapshot = Some((seq, bytes, key));
            return Ok(());
        }
        let config = self.config.clone();
        self.run(async move {
            let client = connect(&config).await?;
            client
                .batch_execute("BEGIN; SELECT 1 FROM ledger_head WHERE id = 1 FOR SHARE")
                .await
                .map_err(db)?;
            client
                .execute(schema::SNAPSHOT, &[&sql_seq(seq), &bytes, &key.as_slice()])
                .await
                .map_err(db)?;
            client.batch_execute("COMMIT").await.map_err(db)
        })
    }

    fn snapshots_below(&self, seq: u64) -> Items<'_, super::StoredRecord> {
        let mut below = Some(sql_seq(seq));
        Box::new(
            std::iter::from_fn(move || {
                let at = below.take()?;
                let s = match self.reader() {
                    Ok(s) => s,
                    Err(e) => return Some(Err(e)),
                };
                let row = self.run(async move {
                    let row = s
                        .client
                        .query_opt(
                            "SELECT s.seq, s.bytes, k.key FROM ledger_snapshots s \
                         LEFT JOIN ledger_keys k ON k.slot = -s.seq \
                         WHERE s.seq <= $1 ORDER BY s.seq DESC LIMIT 1",
                            &[&at],
                        )
                        .await
                        .map_err(db)?;
                    row.map(|r| {
                        let seq = seq_of(r.get(0))?;
                        let key: Option<&[u8]> = r.get(2);
                        Ok((seq, unsealed_snapshot(seq, r.get(1), key)))
                    })
                    .transpose()
                });
                match row {
                    Ok(Some((seq, bytes))) => {
                        below = seq.checked_sub(1).map(sql_seq);
                        match bytes {
                            Some(bytes) => Some(Ok((seq, Bytes::new(bytes)))),
                            // Its key is gone: one snapshot missed.
                            None => Some(Ok((seq, Bytes::new(Vec::new())))),
                        }
                    }
                    Ok(None) => None,
                    Err(e) => Some(Err(e)),
                }
            })
            .filter(|item| !matches!(item, Ok((_, bytes)) if bytes.is_empty())),
        )
    }

    fn snapshot_seqs(&self) -> Result<Vec<u64>, StorageError> {
        let s = self.reader()?;
        self.run(async move {
            let rows = s
                .client
                .query(
                    "SELECT s.seq FROM ledger_snapshots s \
                     LEFT JOIN ledger_keys k ON k.slot = -s.seq \
                     WHERE k.key IS NOT NULL OR substring(s.bytes FROM 1 FOR 1) <> '\\x45'::bytea \
                     ORDER BY s.seq",
                    &[],
                )
                .await
                .map_err(db)?;
            rows.iter().map(|r| seq_of(r.get(0))).collect()
        })
    }

    fn check_tail_now(&self) -> Result<(), StorageError> {
        match self.check_tail(0)? {
            Tail::Whole => Ok(()),
            Tail::Refused(e) => Err(e),
        }
    }

    /// Every execution's seqs, from the `execution` column (verify checks
    /// it one for one against the events).
    fn index_groups(&self) -> Items<'_, (ExecutionId, Vec<u64>)> {
        let mut after: Option<Uuid> = Some(Uuid::nil());
        let mut page = std::collections::VecDeque::new();
        let mut first = true;
        Box::new(std::iter::from_fn(move || {
            if page.is_empty() {
                let from = after.take()?;
                let s = match self.reader() {
                    Ok(s) => s,
                    Err(e) => return Some(Err(e)),
                };
                let inclusive = std::mem::take(&mut first);
                let rows = self.run(async move {
                    let rows = s
                        .client
                        .query(
                            "SELECT execution, array_agg(seq ORDER BY seq) FROM ledger_log \
                             WHERE execution > $1 OR (execution = $1 AND $2) \
                             GROUP BY execution ORDER BY execution LIMIT 1000",
                            &[&from, &inclusive],
                        )
                        .await
                        .map_err(db)?;
                    rows.iter()
                        .map(|r| {
                            let seqs: Vec<i64> = r.get(1);
                            Ok((
                                r.get::<_, Uuid>(0),
                                seqs.into_iter()
                                    .map(seq_of)
                                    .collect::<Result<Vec<_>, _>>()?,
                            ))
                        })
                        .collect::<Result<Vec<_>, StorageError>>()
                });
                match rows {
                    Ok(rows) => {
                        if rows.len() == 1000 {
                            after = rows.last().map(|(id, _)| *id);
                        }
                        page.extend(rows);
                    }
                    Err(e) => return Some(Err(e)),
                }
            }
            page.pop_front()
                .map(|(id, seqs)| Ok((ExecutionId::from_bytes(*id.as_bytes()), seqs)))
        }))
    }

    /// The columns are written with each record, in the same statement:
    /// nothing to repair.
    fn reindex(&self, _event: Draft<'_>) -> Result<(), StorageError> {
        Ok(())
    }

    /// Rewrites the columns of every row whose columns disagree with its
    /// event, writes each settled execution's line and removes stray ones;
    /// returns how many rows it rewrote or removed.
    fn rebuild_index(
        &self,
        events: &mut dyn Iterator<Item = Result<Reindexed, StorageError>>,
    ) -> Result<u64, StorageError> {
        let s = self.aux()?;
        let mut fixed = 0;
        let mut chunk = Rows::default();
        let flush = |chunk: Rows| -> Result<u64, StorageError> {
            let s = s.clone();
            self.run(async move {
                let (r, l) = (&chunk, &chunk.listed);
                s.client
                    .execute(
                        schema::RELIST,
                        &[&l.seq, &l.execution, &l.tenant, &l.callable, &l.status, &l.queued_ns],
                    )
                    .await
                    .map_err(db)?;
                let columns = s.client
                    .execute(
                        r#"UPDATE ledger_log l SET execution = c.execution, tenant = c.tenant, kind = c.kind,
                               at = c.at, name_kind = c.name_kind, name = c.name
                           FROM unnest($1::int8[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[], $6::"char"[], $7::text[])
                               AS c(seq, execution, tenant, kind, at, name_kind, name)
                           WHERE l.seq = c.seq AND (l.execution, l.tenant, l.kind, l.at, l.name_kind, l.name)
                               IS DISTINCT FROM (c.execution, c.tenant, c.kind, c.at, c.name_kind, c.name)"#,
                        &[&r.seq, &r.execution, &r.tenant, &r.kind, &r.at, &r.name_kind, &r.name],
                    )
                    .await
                    .map_err(db)?;
                // Lines written or mended are not counted: none was removed.
                Ok(columns)
            })
        };
        // Every execution's first seq: a line at any other seq up to the
        // last event folded is stray. (Lines of executions live in the
        // fold are left as they are: another process may have settled
        // them since.)
        let (mut submitted, mut last) = (Vec::new(), 0);
        for item in events {
            let (event, settled) = item?;
            if matches!(event.kind, crate::event::EventKind::Queued(_)) {
                submitted.push(sql_seq(event.seq));
            }
            last = event.seq;
            // The columns only: the record itself is not rewritten.
            chunk.push(Drafted::Event(&event), Vec::new(), settled.as_ref());
            if chunk.seq.len() as i64 >= PAGE {
                fixed += flush(std::mem::take(&mut chunk))?;
            }
        }
        if !chunk.seq.is_empty() {
            fixed += flush(chunk)?;
        }
        let s = s.clone();
        fixed += self.run(async move {
            let removed = s
                .client
                .execute(
                    "DELETE FROM ledger_listed WHERE seq <= $1 AND NOT (seq = ANY($2))",
                    &[&sql_seq(last), &submitted],
                )
                .await
                .map_err(db)?;
            s.client
                .execute("DELETE FROM ledger_meta WHERE key = 'listing'", &[])
                .await
                .map_err(db)?;
            Ok(removed)
        })?;
        Ok(fixed)
    }

    fn shared(&self) -> bool {
        true
    }

    /// The records' keys are deleted in the transaction that appends the
    /// redaction, with the records rewritten and the snapshots removed;
    /// `ledger_keys` is then rewritten in the background ([`Vacuum`]).
    fn strips_payloads(&self) -> bool {
        true
    }

    fn base(&self) -> Mark {
        // Another process may have moved it: read again (the last one
        // read when the database does not answer).
        self.found()
            .map_or_else(|_| self.base_now(), |found| found.base)
    }

    fn archive_dir(&self) -> Option<PathBuf> {
        self.archive.as_ref().map(|a| lock(a).dir.clone())
    }

    fn write_segment(
        &self,
        through: u64,
        ids: &[Option<ExecutionId>],
    ) -> Result<PathBuf, StorageError> {
        self.write_segment_of(through, ids)
    }

    fn commit_archive(&self, path: &Path) -> Result<(), StorageError> {
        self.commit_archive_of(path)
    }

    fn finish_archive(&self) -> Result<(), StorageError> {
        self.finish_archive_of()
    }

    fn archived_seqs(&self, id: &ExecutionId) -> Result<Vec<u64>, StorageError> {
        self.archived_seqs_of(id)
    }

    fn readable_archived(&self, seq: u64, stored: Vec<u8>) -> Result<Bytes, StorageError> {
        self.readable_archived_of(seq, stored)
    }

    fn beside(&self, kind: Beside) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let s = self.reader()?;
        self.run(async move {
            let rows = s
                .client
                .query(
                    "SELECT substr(key, length($1) + 1), value FROM ledger_meta \
                     WHERE starts_with(key, $1) ORDER BY key",
                    &[&kind.prefix()],
                )
                .await
                .map_err(db)?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1).into_bytes()))
                .collect())
        })
    }

    /// In the group's transaction, which holds the head row: a command
    /// another process decides meanwhile waits for it, and sees it.
    fn put_beside(
        &self,
        kind: Beside,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<(), StorageError> {
        let hold = value
            .map(|h| String::from_utf8(h.to_vec()))
            .transpose()
            .map_err(|_| {
                StorageError::new(ErrorKind::Io, format!("the {} are JSON text", kind.what()))
            })?;
        let key = format!("{}{key}", kind.prefix());
        let grouped = lock(&self.group).as_ref().map(|g| g.session.clone());
        let (s, own) = match grouped {
            Some(s) => (s, false),
            None => (self.writer()?, true),
        };
        self.run(async move {
            if own {
                s.client
                    .batch_execute("BEGIN; SELECT 1 FROM ledger_head WHERE id = 1 FOR UPDATE")
                    .await
                    .map_err(db)?;
            }
            let done = match &hold {
                Some(hold) => {
                    s.client
                        .execute(
                            "INSERT INTO ledger_meta (key, value) VALUES ($1, $2) \
                             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                            &[&key, hold],
                        )
                        .await
                }
                None => {
                    s.client
                        .execute("DELETE FROM ledger_meta WHERE key = $1", &[&key])
                        .await
                }
            };
            if own {
                let end = if done.is_ok() { "COMMIT" } else { "ROLLBACK" };
                let ended = s.client.batch_execute(end).await.map_err(db);
                done.map_err(db)?;
                ended?;
            } else {
                done.map_err(db)?;
            }
            Ok(())
        })
    }

    /// Locks the head row (in a transaction on the append session) and
    /// returns it: until [`end_group`](Store::end_group), no other process
    /// appends, and this one's appends are staged.
    fn begin_group(&self) -> Result<Option<Mark>, StorageError> {
        let s = self.writer()?;
        let session = s.clone();
        let head = self.run(async move {
            let messages = s
                .client
                .simple_query(
                    "BEGIN; SELECT seq, encode(hash, 'hex') FROM ledger_head WHERE id = 1 FOR UPDATE",
                )
                .await;
            let row = messages.map_err(db).and_then(|messages| {
                messages
                    .into_iter()
                    .find_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                        _ => None,
                    })
                    .ok_or_else(|| StorageError::new(ErrorKind::Corrupt, "the head row is missing"))
            });
            let head = row.and_then(|r| {
                let seq = r.get(0).and_then(|v| v.parse::<u64>().ok());
                let hash = r.get(1).and_then(record::from_hex);
                seq.zip(hash).ok_or_else(|| {
                    StorageError::new(ErrorKind::Corrupt, "the head row holds a malformed head")
                })
            });
            if head.is_err() {
                let _ = s.client.batch_execute("ROLLBACK").await;
            }
            head
        })?;
        *lock(&self.group) = Some(Group {
            session,
            start: head,
            end: head,
            rows: Rows::default(),
            snapshot: None,
            strip: Stripping::default(),
        });
        self.seen.bump(head.0);
        Ok(Some(head))
    }

    /// Inserts the staged records, moves the head row, stores the snapshot
    /// and commits, in one round trip.
    fn end_group(&self) -> Result<(), StorageError> {
        // Staged, then committing, with no moment between when a reader
        // finds the group's records in neither.
        let mut staged = lock(&self.group);
        let Some(group) = staged.take() else {
            return Ok(());
        };
        let started = Instant::now();
        let group = Arc::new(group);
        *lock(&self.committing) = Some(group.clone());
        drop(staged);
        let g = group.clone();
        let committed = self.run(async move {
            let (s, r) = (&g.session, &g.rows);
            if r.seq.is_empty() {
                return s.client.batch_execute("COMMIT").await.map_err(db);
            }
            let columns: Vec<Param<'_>> = r.columns().into_iter().chain(r.keys()).collect();
            let insert = s.client.execute(&s.insert, &columns);
            let (end_seq, end_hash) = (sql_seq(g.end.0), g.end.1.as_slice());
            let moved_to: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&end_seq, &end_hash];
            let head = s.client.execute(&s.move_head, &moved_to);
            let snapshot = async {
                match &g.snapshot {
                    Some((seq, bytes, key)) => s
                        .client
                        .execute(&s.snapshot, &[&sql_seq(*seq), bytes, &key.as_slice()])
                        .await
                        .map(|_| ()),
                    None => Ok(()),
                }
            };
            let strip = async {
                match g.strip.is_empty() {
                    true => Ok(0),
                    false => g.strip.run(s).await,
                }
            };
            // Sent together, in this order (the snapshot is stored after
            // the group's redactions are in the log, and not when one
            // follows it); the commit of a transaction a statement failed
            // in rolls it back, so each statement's answer counts. Each
            // statement is prepared: the first poll sends it. (One given
            // as text is prepared first, a round trip, and would reach
            // the server after the COMMIT, outside the transaction.)
            let (inserted, moved, stored, stripped, commit) = tokio::join!(
                insert,
                head,
                snapshot,
                strip,
                s.client.batch_execute("COMMIT")
            );
            inserted.map_err(db)?;
            moved.map_err(db)?;
            stored.map_err(db)?;
            stripped?;
            commit.map_err(db)
        });
        if committed.is_err() {
            let s = group.session.clone();
            let _ = self.run(async move {
                let _ = s.client.batch_execute("ROLLBACK").await;
                Ok(())
            });
        } else {
            self.seen.bump(group.end.0);
            if !group.strip.is_empty() {
                self.vacuum_keys();
            }
        }
        *lock(&self.committing) = None;
        let took = started.elapsed();
        self.counters.sync.record(took);
        committed
    }

    fn head_now(&self) -> Result<Option<u64>, StorageError> {
        Ok(Some(self.found()?.head.0))
    }

    fn renew_lease(
        &self,
        id: &ExecutionId,
        attempt: u32,
        until: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        let s = self.aux()?;
        let (id, attempt) = (uuid(id), i32::try_from(attempt).unwrap_or(i32::MAX));
        self.run(async move {
            s.client
                .execute(
                    "INSERT INTO ledger_leases (execution, attempt, until) VALUES ($1, $2, $3) \
                     ON CONFLICT (execution) DO UPDATE SET \
                     until = CASE WHEN ledger_leases.attempt = EXCLUDED.attempt \
                                  THEN greatest(ledger_leases.until, EXCLUDED.until) \
                                  ELSE EXCLUDED.until END, \
                     attempt = EXCLUDED.attempt \
                     WHERE ledger_leases.attempt <= EXCLUDED.attempt",
                    &[&id, &attempt, &until],
                )
                .await
                .map_err(db)?;
            Ok(())
        })
    }

    fn renewals(&self, ids: &[ExecutionId]) -> Result<Vec<Renewal>, StorageError> {
        let s = self.reader()?;
        let ids: Vec<Uuid> = ids.iter().map(uuid).collect();
        self.run(async move {
            let rows = s
                .client
                .query(
                    "SELECT execution, attempt, until FROM ledger_leases WHERE execution = ANY($1)",
                    &[&ids],
                )
                .await
                .map_err(db)?;
            Ok(rows
                .iter()
                .map(|r| {
                    (
                        ExecutionId::from_bytes(*r.get::<_, Uuid>(0).as_bytes()),
                        u32::try_from(r.get::<_, i32>(1)).unwrap_or(0),
                        r.get::<_, DateTime<Utc>>(2),
                    )
                })
                .collect())
        })
    }

    fn size_on_disk(&self) -> Result<u64, StorageError> {
        let s = self.reader()?;
        self.run(async move {
            let row = s
                .client
                .query_one(
                    "SELECT (pg_total_relation_size('ledger_log') + pg_total_relation_size('ledger_snapshots') \
                     + pg_total_relation_size('ledger_keys'))::int8",
                    &[],
                )
                .await
                .map_err(db)?;
            seq_of(row.get(0))
        })
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        // A redaction's rewrite of the keys table finishes first (should
        // this process end before, the next ledger to open the database
        // runs it: it is counted there).
        if self.vacuumed(Some(VACUUM_AT_EXIT)).is_none() {
            tracing::warn!(
                "the rewrite of ledger_keys after a redaction is still running: the next ledger to open the database runs it again"
            );
        }
        // Safe on any thread, a runtime's worker too: the connections and
        // the listener stop with it.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
