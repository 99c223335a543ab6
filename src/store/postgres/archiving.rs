//! Archiving on PostgreSQL: a prefix of the log moved into segment files
//! ([`crate::store::archive`]) in a directory every process that reads
//! archived history is told of (`LedgerBuilder::archive`, `--archive DIR`),
//! and out of the database.
//!
//! `ledger_meta`'s [`schema::ARCHIVE_BASE`] holds the base: the last
//! archived seq and its record's hash. A pass, one at a time across every
//! process (a session's advisory lock, [`ARCHIVE_LOCK`]):
//!
//! 1. writes the segment under a temporary name, syncs it, renames it and
//!    syncs its directory ([`Log::write_segment_of`]); a crash before step
//!    2 leaves a segment after the base, which the next open removes;
//! 2. moves the base, in the transaction of a group that holds the head
//!    row ([`Log::commit_archive_of`]): every process reads the live log
//!    from after it from then on, and below it from the segments;
//! 3. deletes the archived rows (records, list lines, snapshots at or below
//!    the base and their keys) in a transaction of its own, while commands
//!    go on ([`Log::finish_archive_of`]); open does it again after a crash.
//!    The keys of archived records stay: the segments hold the records as
//!    stored, encrypted.

use std::path::{Path, PathBuf};

use super::{db, lock, readable, schema, seq_of, sql_seq, Log};
use crate::error::{ErrorKind, StorageError};
use crate::execution::ExecutionId;
use crate::store::archive::{self, Segments};
use crate::store::record;
use crate::store::{Bytes, Mark};

/// A key of `pg_advisory_lock` that one archive pass at a time holds
/// ("ledger-a").
const ARCHIVE_LOCK: i64 = 0x6c65_6467_6572_2d61;

/// Records read at once when writing a segment.
const CHUNK: i64 = 4096;

/// Reads the base as `ledger_meta` holds it (`SEQ HASH`).
pub(super) fn parse_base(value: Option<&str>) -> Result<Mark, StorageError> {
    let Some(value) = value else {
        return Ok((0, record::GENESIS));
    };
    let damaged = || StorageError::new(ErrorKind::Corrupt, "the log's archive base is damaged");
    let (seq, hash) = value.split_once(' ').ok_or_else(damaged)?;
    let seq = seq.parse().map_err(|_| damaged())?;
    let hash = record::from_hex(hash).ok_or_else(damaged)?;
    Ok((seq, hash))
}

impl Log {
    /// Opens the archive in `dir` (when given) against the base: removes a
    /// segment a pass left uncommitted, and finishes the removal of the
    /// archived rows that a crash cut short.
    pub(super) fn open_archive(&mut self, dir: Option<&Path>) -> Result<(), StorageError> {
        let base = self.found()?.base;
        if let Some(dir) = dir {
            let mut segments = Segments::open(dir, base)?;
            let live = self.stored(base.0 + 1, base.0 + 1)?;
            segments.settle(base, live.first().map(|(_, r)| r.as_slice()))?;
            self.archive = Some(std::sync::Mutex::new(segments));
        }
        if base.0 > 0 && self.holds_archived(base.0)? {
            self.remove_archived(base.0)?;
        }
        Ok(())
    }

    /// Whether the database still holds a record at or below `base` (a
    /// removal a crash cut short).
    fn holds_archived(&self, base: u64) -> Result<bool, StorageError> {
        let s = self.reader()?;
        self.run(async move {
            let row = s
                .client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM ledger_log WHERE seq <= $1)",
                    &[&sql_seq(base)],
                )
                .await
                .map_err(db)?;
            Ok(row.get(0))
        })
    }

    /// The records from `from` through `to` as stored (encrypted), at most
    /// [`CHUNK`].
    fn stored(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        let s = self.reader()?;
        self.run(async move {
            let rows = s
                .client
                .query(
                    "SELECT seq, record FROM ledger_log WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3",
                    &[&sql_seq(from), &sql_seq(to), &CHUNK],
                )
                .await
                .map_err(db)?;
            rows.iter()
                .map(|r| Ok((seq_of(r.get(0))?, r.get::<_, Vec<u8>>(1))))
                .collect()
        })
    }

    /// The archive, or why there is none to read.
    fn segments(&self) -> Result<std::sync::MutexGuard<'_, Segments>, StorageError> {
        match &self.archive {
            Some(segments) => {
                let mut segments = lock(segments);
                segments.catch_up(self.base_now().0)?;
                Ok(segments)
            }
            None => Err(StorageError::new(
                ErrorKind::Io,
                format!(
                    "seqs 1 to {} are archived, and this process was not told where the archive is: name it (`--archive DIR`, `LedgerBuilder::archive`)",
                    self.base_now().0
                ),
            )),
        }
    }

    /// The base as last read from the database.
    pub(super) fn base_now(&self) -> Mark {
        *lock(&self.base)
    }

    /// Writes records base+1 through `through`, as stored, into a new
    /// segment; changes nothing else. Takes the archive lock first (kept
    /// until [`Log::finish_archive_of`]): a pass in another process refuses.
    pub(super) fn write_segment_of(
        &self,
        through: u64,
        ids: &[Option<ExecutionId>],
    ) -> Result<PathBuf, StorageError> {
        self.lock_archive()?;
        let (base, prev) = self.found()?.base;
        let dir = {
            let segments = self.segments()?;
            segments.cover(base)?;
            segments.dir.clone()
        };
        let mut next = base + 1;
        let mut chunk = std::collections::VecDeque::new();
        let mut taken = std::iter::from_fn(|| {
            if chunk.is_empty() && next <= through {
                match self.stored(next, through) {
                    Ok(rows) => {
                        next = rows.last().map_or(through + 1, |(seq, _)| seq + 1);
                        chunk.extend(rows);
                    }
                    Err(e) => return Some(Err(e)),
                }
            }
            let (seq, bytes) = chunk.pop_front()?;
            let id = ids.get((seq - base - 1) as usize).copied().ok_or_else(|| {
                StorageError::new(
                    ErrorKind::Io,
                    "archiving names fewer executions than records",
                )
            });
            Some(id.map(|id| (seq, bytes, id)))
        });
        archive::write(&dir, base + 1, prev, &mut taken)
    }

    /// Takes the session lock that one archive pass at a time holds, on a
    /// connection of its own (kept while the pass runs).
    fn lock_archive(&self) -> Result<(), StorageError> {
        let mut held = lock(&self.archiving);
        if held.is_some() {
            return Ok(());
        }
        let config = self.config.clone();
        let client = self.run(async move {
            let client = super::connect(&config).await?;
            let got: bool = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&ARCHIVE_LOCK])
                .await
                .map_err(db)?
                .get(0);
            Ok(got.then_some(client))
        })?;
        match client {
            Some(client) => {
                *held = Some(client);
                Ok(())
            }
            None => Err(StorageError::new(
                ErrorKind::Io,
                "another process is archiving this ledger now: the pass moves nothing",
            )),
        }
    }

    /// Moves the base to the last seq of the segment at `path`, in the
    /// transaction of the group that holds the head row (the ledger calls
    /// this from a command): committed with it.
    pub(super) fn commit_archive_of(&self, path: &Path) -> Result<(), StorageError> {
        let session = lock(&self.group).as_ref().map(|g| g.session.clone());
        let Some(s) = session else {
            return Err(StorageError::new(
                ErrorKind::Io,
                "an archive is committed in a group that holds the log's end",
            ));
        };
        let base = self.found()?.base;
        let mut segments = self.segments()?;
        let last = segments.commit(path, base)?;
        let value = format!("{} {}", last.0, record::hex(&last.1));
        let was = format!("{} {}", base.0, record::hex(&base.1));
        let moved = self.run(async move {
            s.client
                .execute(
                    "INSERT INTO ledger_meta (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value \
                     WHERE ledger_meta.value = $3",
                    &[&schema::ARCHIVE_BASE, &value, &was],
                )
                .await
                .map_err(db)
        });
        match moved {
            Ok(1) => Ok(()),
            other => {
                segments.kept.pop();
                Err(other.err().unwrap_or_else(|| {
                    StorageError::new(
                        ErrorKind::Io,
                        "the archive's base moved while the pass ran (another process archived)",
                    )
                }))
            }
        }
    }

    /// Removes from the database what the base leaves archived (all of it
    /// idempotent), then lets another pass run.
    pub(super) fn finish_archive_of(&self) -> Result<(), StorageError> {
        let base = self.found()?.base;
        let removed = match base.0 {
            0 => Ok(()),
            seq => self.remove_archived(seq),
        };
        // The lock goes with its connection.
        lock(&self.archiving).take();
        removed
    }

    /// Deletes the rows of seqs 1 through `base`: records, list lines,
    /// snapshots and the snapshots' keys (the records' keys stay: the
    /// segments need them).
    fn remove_archived(&self, base: u64) -> Result<(), StorageError> {
        tracing::info!(base, "removing archived records from the database");
        let s = self.aux()?;
        self.run(async move {
            let through = sql_seq(base);
            s.client.batch_execute("BEGIN").await.map_err(db)?;
            let removed = async {
                s.client
                    .execute("DELETE FROM ledger_log WHERE seq <= $1", &[&through])
                    .await?;
                s.client
                    .execute("DELETE FROM ledger_listed WHERE seq <= $1", &[&through])
                    .await?;
                s.client
                    .execute(
                        "WITH gone AS (DELETE FROM ledger_snapshots WHERE seq <= $1 RETURNING seq) \
                         DELETE FROM ledger_keys WHERE slot IN (SELECT -seq FROM gone)",
                        &[&through],
                    )
                    .await
            }
            .await;
            let end = if removed.is_ok() {
                "COMMIT"
            } else {
                "ROLLBACK"
            };
            let ended = s.client.batch_execute(end).await.map_err(db);
            removed.map_err(db)?;
            ended
        })
    }

    /// The seqs of an archived execution's events (empty when none is).
    pub(super) fn archived_seqs_of(&self, id: &ExecutionId) -> Result<Vec<u64>, StorageError> {
        let base = self.base_now().0;
        if base == 0 {
            return Ok(Vec::new());
        }
        self.segments()?.seqs_of(id, base)
    }

    /// Record `seq` (at or below the base) from the segments, readable.
    pub(super) fn archived_record(&self, seq: u64) -> Result<Option<Bytes>, StorageError> {
        let stored = self.segments()?.record(seq, self.base_now().0)?;
        stored
            .map(|stored| self.readable_archived_of(seq, stored))
            .transpose()
    }

    /// Record `seq` as a segment holds it, decrypted with its key.
    pub(super) fn readable_archived_of(
        &self,
        seq: u64,
        stored: Vec<u8>,
    ) -> Result<Bytes, StorageError> {
        let s = self.reader()?;
        let key = self.run(async move {
            let row = s
                .client
                .query_opt(
                    "SELECT key FROM ledger_keys WHERE slot = $1",
                    &[&sql_seq(seq)],
                )
                .await
                .map_err(db)?;
            Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
        })?;
        Ok(Bytes::new(readable(seq, stored, key.as_deref())?))
    }
}
