//! Archiving on sled: a prefix of the log moved into segment files
//! (`DATA_DIR/archive`, [`crate::store::archive`]) and out of the
//! database.
//!
//! Tree `meta` holds the base (`base`: the last archived seq and its
//! record's hash) and, while the removal of what a segment holds from the
//! database is not finished, `archive-pending` (its first and last seq).
//! The order makes every crash leave one of two states:
//!
//! 1. the segment is written under a temporary name, synced, renamed and
//!    its directory synced ([`Log::write_segment`]); a crash before step 2
//!    leaves a segment after the base, which open removes;
//! 2. `base` and `archive-pending` are written in one batch and flushed
//!    ([`Log::commit_archive`]): from here on the live log starts after the
//!    base and reads below it go to the segments;
//! 3. the index entries, names, list lines and snapshots the segment holds
//!    are removed from the database, and `archive-pending` last (with it,
//!    `archive-records` is set); open finishes what a crash left of it;
//! 4. on the next open, the record entries through `archive-records` are
//!    removed (a read of the log under way in the process that archived
//!    goes on through them).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{event_key, exec_prefix, list_key, lock, seq_of, storage, unpack, Log};
use crate::error::{ErrorKind, StorageError};
use crate::execution::ExecutionId;
use crate::store::archive;
use crate::store::record;
use crate::store::{Mark, Store};

/// The key of the base in tree `meta`: seq (8) | hash (32).
const BASE: &[u8] = b"base";
/// The key, in tree `meta`, of the segment whose records are still to be
/// removed from the database: first seq (8) | last seq (8).
const PENDING: &[u8] = b"archive-pending";
/// The key, in tree `meta`, of the last archived seq whose record entries
/// the database may still hold (removed on open).
const RECORDS_LEFT: &[u8] = b"archive-records";
/// The archive's directory in the data directory.
pub(super) const ARCHIVE_DIR: &str = "archive";

/// Reads the base from `meta` ((0, GENESIS) when nothing is archived).
pub(super) fn read_base(meta: &::sled::Tree) -> Result<Mark, StorageError> {
    match meta.get(BASE).map_err(storage)? {
        None => Ok((0, record::GENESIS)),
        Some(v) if v.len() == 40 => Ok((
            u64::from_be_bytes(v[..8].try_into().expect("8 bytes")),
            v[8..].try_into().expect("32 bytes"),
        )),
        Some(_) => Err(StorageError::new(
            ErrorKind::Corrupt,
            "the log's archive base is damaged",
        )),
    }
}

impl Log {
    /// Removes a segment past the base that is this ledger's own, written
    /// by an archive pass that did not commit it: it follows on from the
    /// base, and its first record is the one the live log holds there.
    /// Any other (a restored older database beside a newer archive, another
    /// ledger's archive) is left where it is, and is the archive's trouble.
    pub(super) fn settle_segments(&self) -> Result<(), StorageError> {
        let base = self.archive_base();
        let live = match self.stored_records(base.0 + 1, false).next() {
            Some(item) => Some(item?.1.to_vec()),
            None => None,
        };
        lock(&self.segments).settle(base, live.as_deref())
    }

    /// The last archived seq and its record's hash.
    pub(super) fn archive_base(&self) -> Mark {
        *lock(&self.base)
    }

    /// Where the segments are.
    pub(super) fn archive_path(&self) -> PathBuf {
        lock(&self.segments).dir.clone()
    }

    /// Record `seq` (at or below the base) from the segments, as stored.
    pub(super) fn archived_record(&self, seq: u64) -> Result<Option<Vec<u8>>, StorageError> {
        lock(&self.segments).record(seq, self.archive_base().0)
    }

    /// The seqs of an archived execution's events (empty when none is).
    pub(super) fn archived_seqs_of(&self, id: &ExecutionId) -> Result<Vec<u64>, StorageError> {
        lock(&self.segments).seqs_of(id, self.archive_base().0)
    }

    /// Writes records base+1 through `through`, as stored, into a new
    /// segment; changes nothing else.
    pub(super) fn write_segment(
        &self,
        through: u64,
        ids: &[Option<ExecutionId>],
    ) -> Result<PathBuf, StorageError> {
        let (base, prev) = self.archive_base();
        let dir = self.archive_path();
        // A pass adds to the archive only where it is whole.
        lock(&self.segments).cover(base)?;
        let mut taken = self
            .stored_records(base + 1, false)
            .take_while(|r| r.as_ref().map_or(true, |(s, _)| *s <= through))
            .map(|item| {
                let (seq, bytes) = item?;
                let id = *ids.get((seq - base - 1) as usize).ok_or_else(|| {
                    StorageError::new(
                        ErrorKind::Io,
                        "archiving names fewer executions than records",
                    )
                })?;
                Ok((seq, bytes.to_vec(), id))
            });
        archive::write(&dir, base + 1, prev, &mut taken)
    }

    /// Makes the segment at `path` part of the log: the base moves to its
    /// last seq ([`Log::finish_archive`] then removes what it holds from
    /// the database).
    pub(super) fn commit_archive(&self, path: &Path) -> Result<(), StorageError> {
        let mut segments = lock(&self.segments);
        // The segment is readable before the base says to read it there.
        let last = segments.commit(path, self.archive_base())?;
        let mut value = last.0.to_be_bytes().to_vec();
        value.extend_from_slice(&last.1);
        let first = self.archive_base().0 + 1;
        let mut pending = first.to_be_bytes().to_vec();
        pending.extend_from_slice(&last.0.to_be_bytes());
        let mut batch = ::sled::Batch::default();
        batch.insert(BASE, value);
        batch.insert(PENDING, pending);
        let written = self
            .meta
            .apply_batch(batch)
            .map_err(storage)
            .and_then(|()| self.db.flush().map(drop).map_err(storage));
        if let Err(e) = written {
            segments.kept.pop();
            return Err(e);
        }
        *lock(&self.base) = last;
        Ok(())
    }

    /// Removes from the database what the pending segment holds (all of
    /// it idempotent: open calls it again after a crash).
    pub(super) fn finish_archive(&self) -> Result<(), StorageError> {
        let Some(v) = self.meta.get(PENDING).map_err(storage)? else {
            return Ok(());
        };
        let (first, last) = match v.len() {
            16 => (
                u64::from_be_bytes(v[..8].try_into().expect("8 bytes")),
                u64::from_be_bytes(v[8..].try_into().expect("8 bytes")),
            ),
            _ => {
                return Err(StorageError::new(
                    ErrorKind::Corrupt,
                    "the log's pending archive mark is damaged",
                ))
            }
        };
        tracing::info!(first, last, "removing archived records from the database");
        // The executions the segment holds, from its index (a retention
        // event can follow an execution an earlier segment holds).
        let ids: HashSet<ExecutionId> = {
            let segments = lock(&self.segments);
            let segment = segments
                .kept
                .iter()
                .find(|s| s.first == first && s.last == last)
                .ok_or_else(|| {
                    StorageError::new(
                        ErrorKind::Corrupt,
                        format!(
                            "no segment in {} holds seqs {first} to {last}, which the log archived",
                            segments.dir.display()
                        ),
                    )
                })?;
            segment.ids()?.into_iter().collect()
        };
        // Names that still point at one of them: each removed only while it
        // does (commands go on, and a later execution may take the name
        // between the scan and the removal).
        for kind in [super::IDEM, super::BIND] {
            for item in self.events.scan_prefix([super::INDEX, kind]) {
                let (k, v) = item.map_err(storage)?;
                let named = <[u8; 16]>::try_from(v.as_ref()).map(ExecutionId::from_bytes);
                if named.is_ok_and(|id| ids.contains(&id)) {
                    // Taken since: left to its new execution.
                    let _ = self
                        .events
                        .compare_and_swap(k, Some(v), None as Option<&[u8]>)
                        .map_err(storage)?;
                }
            }
        }
        let mut batch = ::sled::Batch::default();
        // Each archived execution's seqs leave the index; those after the
        // segment (retention events recorded after it settled) stay.
        for id in &ids {
            let mut later = Vec::new();
            for item in self.events.scan_prefix(exec_prefix(id)) {
                let (k, v) = item.map_err(storage)?;
                let mut seqs = Vec::new();
                unpack(&k, &v, &mut seqs).ok_or_else(|| {
                    StorageError::new(
                        ErrorKind::Corrupt,
                        format!("malformed index entry for {id}"),
                    )
                })?;
                later.extend(seqs.into_iter().filter(|&s| s > last));
                batch.remove(k);
            }
            if !later.is_empty() {
                later.sort_unstable();
                later.dedup();
                let packed: Vec<u8> = later.iter().flat_map(|s| s.to_be_bytes()).collect();
                batch.insert(exec_prefix(id).to_vec(), packed);
            }
        }
        for item in self.events.range(list_key(first)..list_key(last + 1)) {
            batch.remove(item.map_err(storage)?.0);
        }
        self.events.apply_batch(batch).map_err(storage)?;
        // Snapshots at or below the base: the live log's replay starts
        // after it (nothing was live there).
        for item in self.snapshots.range(..=event_key(last).as_slice()) {
            self.snapshots
                .remove(item.map_err(storage)?.0)
                .map_err(storage)?;
        }
        // How much of the database archiving has removed since it was last
        // rewritten (open rewrites it past a point), with the mark's removal.
        let counted = self
            .meta
            .get(super::compact::ARCHIVED_EVENTS)
            .map_err(storage)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        let mut done = ::sled::Batch::default();
        done.insert(
            super::compact::ARCHIVED_EVENTS,
            &(counted + last + 1 - first).to_be_bytes(),
        );
        done.remove(PENDING);
        // The record entries stay until the ledger is next opened: a read
        // of the log under way (an export, a subscriber) goes on through
        // them.
        done.insert(RECORDS_LEFT, &last.to_be_bytes());
        self.meta.apply_batch(done).map_err(storage)?;
        self.db.flush().map_err(storage)?;
        Ok(())
    }
}

/// Removes from the database `db` (not open as a log yet) the record
/// entries whose records are all archived, through the seq
/// `archive-records` names, but the log's last (which tells where the log
/// ends); called on open, before anything reads the log and before the
/// database is rewritten.
pub(super) fn remove_archived_records(db: &::sled::Db) -> Result<(), StorageError> {
    let (events, meta) = (
        db.open_tree("events").map_err(storage)?,
        db.open_tree("meta").map_err(storage)?,
    );
    let Some(v) = meta.get(RECORDS_LEFT).map_err(storage)? else {
        return Ok(());
    };
    let through = <[u8; 8]>::try_from(v.as_ref())
        .map(u64::from_be_bytes)
        .map_err(|_| {
            StorageError::new(
                ErrorKind::Corrupt,
                "the log's archived-records mark is damaged",
            )
        })?
        .min(read_base(&meta)?.0);
    // The entry that holds the log's last record stays.
    let last_entry = match events.range(..[super::INDEX].as_slice()).next_back() {
        Some(item) => Some(item.map_err(storage)?.0),
        None => None,
    };
    let mut batch = ::sled::Batch::default();
    for item in events.range(..event_key(through + 1).as_slice()) {
        let (k, v) = item.map_err(storage)?;
        let Some(at) = seq_of(&k) else { continue };
        let to = at + record::count(at, &v)? - 1;
        if to <= through && Some(&k) != last_entry.as_ref() {
            batch.remove(k);
        }
    }
    events.apply_batch(batch).map_err(storage)?;
    meta.remove(RECORDS_LEFT).map_err(storage)?;
    db.flush().map_err(storage)?;
    Ok(())
}

/// What archiving left in the database of the ledger in `dir` (not open),
/// as a crash left it (nothing finished): its base, whether a removal is
/// pending, and how many entries of archived history the database still
/// holds (record entries but the last, index entries, list lines).
///
/// # Errors
///
/// As opening the log.
pub(crate) fn remnants(dir: &Path) -> Result<(u64, bool, u64), StorageError> {
    let log = Log::open_unfinished(
        dir,
        crate::store::Durability::Flushed,
        64 << 20,
        false,
        None,
    )?;
    let base = log.archive_base().0;
    let pending = log.meta.contains_key(PENDING).map_err(storage)?;
    let end = log.last_seq()?;
    let mut left = 0u64;
    // Record entries may stay until the next open while the mark says so.
    let records_left = log.meta.contains_key(RECORDS_LEFT).map_err(storage)?;
    for item in log
        .events
        .range(..event_key(base + 1).as_slice())
        .filter(|_| !records_left)
    {
        let (k, v) = item.map_err(storage)?;
        let Some(at) = seq_of(&k) else { continue };
        let to = at + record::count(at, &v)? - 1;
        left += u64::from(to <= base && to < end);
    }
    left += log.events.range(list_key(0)..list_key(base + 1)).count() as u64;
    for item in log.events.scan_prefix([super::INDEX, super::EXEC]) {
        let (k, v) = item.map_err(storage)?;
        let mut seqs = Vec::new();
        unpack(&k, &v, &mut seqs);
        left += u64::from(seqs.iter().any(|&s| s <= base));
    }
    Ok((base, pending, left))
}
