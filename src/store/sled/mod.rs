//! The embedded engine: the log on sled, in a directory one process owns —
//! keys, appends, reads, snapshots, the checkpoint, and syncing to disk with
//! group commit.
//!
//! Layout of the data directory:
//!
//! ```text
//! LOCK         held (flock) by the process that owns the ledger; holds its pid
//! checkpoint   the last durable (seq, hash), outside sled (see checkpoint.rs)
//! checkpoint.accepted  a line for each time the log was accepted as it is
//!              in spite of its checkpoint (missing, damaged, or ahead)
//! keys         the keys that encrypt payloads, one per record (keys.rs)
//! sled/        the sled database
//! sled.creating   present while a new sled database is being created
//! ```
//!
//! sled tree `events` holds the log and its indexes (derived from the log,
//! written right after each block of records, repaired on open):
//!
//! ```text
//! seq (8 bytes, big-endian)                   -> record, or a block of
//!                                                records from that seq on
//!                                                (record.rs)
//! 0xFF 'x' execution id (16)                  -> seqs (8 bytes each, big-endian)
//!                                                of a settled execution's events
//! 0xFF 'x' execution id (16) seq (8)          -> ()  one event of an execution
//!                                                (ledgers written before 0.2; read)
//! 0xFF 'k' tenant 0x00 idempotency key        -> execution id (16)
//! 0xFF 'b' tenant 0x00 binding target         -> execution id (16), latest bound
//! 0xFF 'L'                                    -> ()  while the list misses some
//!                                                (until a rebuild builds it)
//! 0xFF 'l' seq of its first event (8)          -> a settled execution's line in
//!                                                the list: id (16), status (1:
//!                                                `status_code`),
//!                                                queued at (8, ns since 1970),
//!                                                tenant length (2), tenant, callable
//! ```
//!
//! A live execution's seqs are in the projection (and its snapshots); the
//! index gets them, in one entry, with the event that settles it. sled's
//! cost follows the number of entries it holds, not their bytes: what the
//! combiner appends while it holds the ledger is staged and written when it
//! lets go ([`Store::seal`]) as blocks of up to [`BLOCK_BYTES`], each block
//! followed by the index entries of its events. sled recovers a prefix of
//! its log in insert order, so after a crash only the last block can lack
//! index entries ([`Store::unindexed_from`]); a snapshot taken while a block
//! was staged is written after it.
//!
//! Tree `snapshots` maps a seq to the projection as of that seq (derived
//! data: a damaged or missing snapshot is rebuilt from the log), encrypted
//! under a key of its own: `'E' | key slot (8) | encrypted JSON`. Tree
//! `meta` holds the key file's id under `keys` and how many of its keys
//! the log may have used under `keys-used`. `0xFF 'S'` in `events` names
//! the seqs whose payloads a redaction written has still to remove.
//!
//! Records and snapshots written before payloads were encrypted (format 2,
//! snapshots in the clear) are stripped on redaction like the others, but
//! the copies of them sled still keeps are not encrypted: only a rewrite
//! of the database into a new one would remove those (not offered yet; a
//! redaction that strips such records says so in the log).
//!
//! Payloads never reach sled in the clear: records that carry any are
//! written in format 3, encrypted under keys kept in `keys` ([`keys`]), and
//! read back decrypted ([`Log::readable`]); redaction destroys the keys.

mod archiving;
mod checkpoint;
mod compact;

pub(crate) use archiving::remnants as archive_remnants;
mod keys;

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::record::{self, BlockWriter, Hash, Key};
use super::{
    at_seq, AppendError, Beside, Bytes, Draft, Drafted, Durability, Items, Listed, Mark, Name,
    Reindexed, Settled, Store, StoredRecord, Tail,
};
use crate::error::{ErrorKind, StorageError};
use crate::event::Event;
use crate::execution::{BackgroundExecutionStatus, ExecutionId, TenantId};
use crate::metrics::Counters;
pub(crate) use checkpoint::sync_dir;
use checkpoint::{Checkpoint, Stored};
use chrono::{DateTime, Utc};
use keys::Keys;

/// The checkpoint's file name in the data directory.
const CHECKPOINT: &str = "checkpoint";
/// Where acceptances of a log as it is are recorded, one line each.
const ACCEPTED: &str = "checkpoint.accepted";

const INDEX: u8 = 0xFF;
const EXEC: u8 = b'x';
const IDEM: u8 = b'k';
const BIND: u8 = b'b';
const LIST: u8 = b'l';
/// Present while the list of settled executions misses some: set before
/// the list is built from the log, removed by the rebuild that built it.
const LIST_PARTIAL: [u8; 2] = [INDEX, b'L'];
/// The key of the key file's id in tree `meta`.
const KEY_FILE_ID: &[u8] = b"keys";
/// The key, in tree `meta`, of how many key slots the log may have used
/// (written before any record uses a key of a new pool).
const KEYS_USED: &[u8] = b"keys-used";
/// Present while the payloads of the redactions of a block written are
/// not all removed yet: their seqs (8 bytes each). Written with the block,
/// in one batch; removed once they are; open finishes what it names.
const STRIP_PENDING: [u8; 2] = [INDEX, b'S'];

/// A block takes records until it holds this many bytes (so it can be
/// larger by one event's record); the next append starts another. sled rewrites a leaf of up to 16 entries as one page,
/// and writes a page over a quarter of its 512 KiB segment as a file of its
/// own: 16 blocks stay under that.
pub(crate) const BLOCK_BYTES: usize = 6 * 1024;

/// A status as a listing entry holds it: a code of its own, which stays
/// what it is whatever statuses come.
fn status_code(status: BackgroundExecutionStatus) -> u8 {
    use BackgroundExecutionStatus::*;
    match status {
        Queued => 0,
        Running => 1,
        Completed => 2,
        Failed => 3,
        Cancelled => 4,
        Timeout => 5,
    }
}

fn status_of(code: u8) -> Option<BackgroundExecutionStatus> {
    BackgroundExecutionStatus::ALL
        .into_iter()
        .find(|s| status_code(*s) == code)
}

fn list_key(seq: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[0] = INDEX;
    k[1] = LIST;
    k[2..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn encode_listed(l: &Listed) -> Vec<u8> {
    let (tenant, callable) = (l.tenant.as_str().as_bytes(), l.callable.as_bytes());
    let mut v = Vec::with_capacity(35 + tenant.len() + callable.len());
    v.extend_from_slice(l.id.as_bytes());
    v.push(
        BackgroundExecutionStatus::ALL
            .iter()
            .position(|s| *s == l.status)
            .unwrap_or_default() as u8,
    );
    v.extend_from_slice(&l.queued_ns().to_be_bytes());
    v.extend_from_slice(&(tenant.len().min(u16::MAX.into()) as u16).to_be_bytes());
    v.extend_from_slice(tenant);
    v.extend_from_slice(callable);
    v
}

/// A listing entry read back; `None` when it is malformed.
fn decode_listed(key: &[u8], v: &[u8]) -> Option<Listed> {
    let seq = seq_of(key.get(2..)?)?;
    let id = ExecutionId::from_bytes(v.get(..16)?.try_into().ok()?);
    let status = status_of(*v.get(16)?)?;
    let queued_at =
        DateTime::<Utc>::from_timestamp_nanos(i64::from_be_bytes(v.get(17..25)?.try_into().ok()?));
    let len = usize::from(u16::from_be_bytes(v.get(25..27)?.try_into().ok()?));
    let tenant = std::str::from_utf8(v.get(27..27 + len)?).ok()?;
    let callable = std::str::from_utf8(v.get(27 + len..)?).ok()?;
    Some(Listed {
        seq,
        id,
        tenant: tenant.parse().ok()?,
        callable: callable.to_owned(),
        status,
        queued_at,
    })
}

pub(crate) fn event_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn exec_prefix(id: &ExecutionId) -> [u8; 18] {
    let mut k = [0u8; 18];
    k[0] = INDEX;
    k[1] = EXEC;
    k[2..].copy_from_slice(id.as_bytes());
    k
}

fn named_key(kind: u8, tenant: &TenantId, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + tenant.as_str().len() + key.len());
    k.push(INDEX);
    k.push(kind);
    k.extend_from_slice(tenant.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

fn seq_of(key: &[u8]) -> Option<u64> {
    key.try_into().ok().map(u64::from_be_bytes)
}

/// Adds the seqs one per-execution index entry holds to `seqs`; `None` when
/// it is malformed.
fn unpack(key: &[u8], value: &[u8], seqs: &mut Vec<u64>) -> Option<()> {
    match key.len() {
        18 if value.len().is_multiple_of(8) => {
            seqs.extend(value.chunks_exact(8).filter_map(seq_of));
            Some(())
        }
        26 => {
            seqs.push(seq_of(&key[18..])?);
            Some(())
        }
        _ => None,
    }
}

/// The index entries of an event: the name it points at its execution, and
/// when it settled its execution, that execution's seqs and its line in the
/// list. Of the live log after `base` only: an archived execution (a
/// retention event after it settled can follow its archived history) gets
/// its seqs after the base and no line.
fn index_entries(
    event: &Event,
    settled: Option<&Settled>,
    base: u64,
) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> {
    let name = Name::of(event).map(|n| (name_key(&n), event.execution_id.as_bytes().to_vec()));
    let seqs = settled.map(|settled| {
        let live = settled.seqs.iter().filter(|&&s| s > base);
        let packed = live.flat_map(|s| s.to_be_bytes()).collect();
        (exec_prefix(&event.execution_id).to_vec(), packed)
    });
    let listed = settled.filter(|s| s.listed.seq > base).map(|settled| {
        (
            list_key(settled.listed.seq).to_vec(),
            encode_listed(&settled.listed),
        )
    });
    name.into_iter().chain(seqs).chain(listed)
}

/// The index key of a per-tenant name.
fn name_key(name: &Name<'_>) -> Vec<u8> {
    match name {
        Name::Idempotency(t, k) => named_key(IDEM, t, k),
        Name::Binding(t, k) => named_key(BIND, t, k),
    }
}

/// A block of records staged for the seal, with the index entries of its
/// events (written after it).
#[derive(Debug)]
struct StagedBlock {
    first: u64,
    /// Its last record's seq and hash.
    end: Mark,
    value: Vec<u8>,
    ranges: Vec<std::ops::Range<usize>>,
    index: Vec<(Vec<u8>, Vec<u8>)>,
    /// The seqs whose payloads its `redacted` events remove, once it and
    /// its index entries are written.
    strips: Vec<u64>,
    /// Written in one sled batch with the block before it: one append's
    /// events over several blocks are in the log after a crash, all or none.
    joined: bool,
}

/// What is appended while a block is open, until the seal writes it.
#[derive(Debug, Default)]
struct Staged {
    open: bool,
    /// The log's end, what is staged included.
    end: Mark,
    /// Blocks filled, in seq order.
    full: Vec<StagedBlock>,
    /// The block being filled: its first seq, whether it is joined to the
    /// one before, its records and its events' index entries.
    first: u64,
    joined: bool,
    filling: BlockWriter,
    index: Vec<(Vec<u8>, Vec<u8>)>,
    /// The seqs whose payloads the filling block's `redacted` events remove.
    strips: Vec<u64>,
    /// The staged index entries that name an execution or hold its seqs,
    /// by key (the latest value of each).
    lookup: std::collections::HashMap<Vec<u8>, Vec<u8>>,
    /// Snapshots taken meanwhile, written last.
    snapshots: Vec<(u64, Vec<u8>)>,
}

impl Staged {
    fn is_empty(&self) -> bool {
        self.full.is_empty() && self.filling.len() == 0 && self.snapshots.is_empty()
    }

    /// Starts a new block when the one being filled is full.
    fn cut_if_full(&mut self) {
        if self.filling.bytes() >= BLOCK_BYTES {
            self.cut();
        }
    }

    /// Ends the block being filled; what follows starts a new one.
    fn cut(&mut self) {
        if let Some((value, ranges)) = self.filling.take() {
            self.full.push(StagedBlock {
                first: self.first,
                end: self.end,
                value,
                ranges,
                index: std::mem::take(&mut self.index),
                strips: std::mem::take(&mut self.strips),
                joined: std::mem::take(&mut self.joined),
            });
        }
        self.first = self.end.0 + 1;
    }

    /// The staged record of `seq`, copied.
    fn record(&self, seq: u64) -> Option<Vec<u8>> {
        if seq > self.end.0 {
            return None;
        }
        if seq >= self.first && self.filling.len() > 0 {
            return self
                .filling
                .record((seq - self.first) as usize)
                .map(<[u8]>::to_vec);
        }
        let block = self.full.iter().rev().find(|b| b.first <= seq)?;
        let range = block.ranges.get((seq - block.first) as usize)?;
        Some(block.value[range.clone()].to_vec())
    }
}

#[derive(Debug, Default)]
struct SyncState {
    /// Highest seq flushed to the operating system.
    flushed: u64,
    /// Highest seq synced to disk.
    synced: u64,
    /// Highest seq subscribers may read.
    visible: u64,
    syncing: bool,
    failed: Option<String>,
    /// Callers waiting for a sync: the seq they need, how durable, and
    /// their thread, unparked one by one (no thundering herd).
    waiters: Vec<(u64, Durability, std::thread::Thread)>,
}

impl SyncState {
    fn done(&self, how: Durability) -> u64 {
        if how == Durability::Synced {
            self.synced
        } else {
            self.flushed
        }
    }
}

/// One record of a stored block: the block's value, shared, and where the
/// record is in it.
struct Part<T = ::sled::IVec>(T, std::ops::Range<usize>);

impl<T: AsRef<[u8]>> AsRef<[u8]> for Part<T> {
    fn as_ref(&self) -> &[u8] {
        &self.0.as_ref()[self.1.clone()]
    }
}

/// A block decrypted, which its records share.
#[derive(Clone)]
struct Shared(std::sync::Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The log, open.
pub(crate) struct Log {
    dir: PathBuf,
    db: ::sled::Db,
    events: ::sled::Tree,
    snapshots: ::sled::Tree,
    meta: ::sled::Tree,
    keys: Keys,
    durability: Durability,
    db_file: File,
    synced_blobs: Mutex<HashSet<OsString>>,
    /// Set once open has checked it against the log ([`Log::keep_checkpoint`]).
    checkpoint: Mutex<Option<Checkpoint>>,
    /// What the checkpoint held when the log was opened.
    found: Stored,
    /// The end of what is written to sled.
    appended: Mutex<Mark>,
    staged: Mutex<Staged>,
    state: Mutex<SyncState>,
    changed: Condvar,
    pub(crate) counters: Counters,
    /// Where the live log starts: the last archived seq and its hash.
    base: Mutex<Mark>,
    /// The archive's segments.
    segments: Mutex<crate::store::archive::Segments>,
    // Dropped in this order, after the sled handles above: sled lets go of
    // its database, then the directory's lock is released.
    _released: Released,
    _lock: File,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A sled error in the ledger's terms. sled's own text for damage
/// ("Read corrupted data at file offset Some(Inline(…)) backtrace ()")
/// shows its internals, so damage is described here and sled's error is not
/// kept as the source.
fn storage(source: ::sled::Error) -> StorageError {
    match source {
        ::sled::Error::Io(io) => StorageError::io("storage", io),
        ::sled::Error::Corruption { at, .. } => {
            let place = match at {
                Some(::sled::DiskPtr::Inline(offset)) => {
                    format!(" at offset {offset} of its file db")
                }
                Some(::sled::DiskPtr::Blob(offset, blob)) => {
                    format!(" in blob {blob} (named at offset {offset} of its file db)")
                }
                None => String::new(),
            };
            StorageError::new(
                ErrorKind::Corrupt,
                format!("sled's own files are damaged{place}"),
            )
        }
        other => StorageError::new(ErrorKind::Io, format!("storage: {other}")).with_source(other),
    }
}

/// sled 0.34.7 panics while opening some damaged databases (in its own
/// snapshot code: "tried to serialize Uninitialized"). Opens with that panic
/// caught, and kept from printing on this thread (the error reports it).
fn open_quietly(config: &::sled::Config) -> std::thread::Result<::sled::Result<::sled::Db>> {
    type Hook = dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync;
    static SWAP: Mutex<()> = Mutex::new(());
    let _swap = lock(&SWAP);
    let previous: std::sync::Arc<Box<Hook>> = std::sync::Arc::new(std::panic::take_hook());
    let here = std::thread::current().id();
    let others = previous.clone();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() != here {
            others(info);
        }
    }));
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
    // Dropping this hook drops its share of the previous one.
    drop(std::panic::take_hook());
    match std::sync::Arc::try_unwrap(previous) {
        Ok(hook) => std::panic::set_hook(hook),
        Err(shared) => std::panic::set_hook(Box::new(move |info| shared(info))),
    }
    opened
}

/// Opens sled's database, in the ledger's terms: damage sled finds (some of
/// which it panics on while opening) names its directory.
fn open_config(config: &::sled::Config, sled_dir: &Path) -> Result<::sled::Db, StorageError> {
    let damaged = |what: String| {
        StorageError::new(
            ErrorKind::Corrupt,
            format!("{what}; sled cannot open {}", sled_dir.display()),
        )
    };
    match open_quietly(config) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => match storage(e) {
            e if e.kind() == ErrorKind::Corrupt => Err(damaged(e.to_string())),
            e => Err(e),
        },
        Err(_) => Err(damaged("sled's own files are damaged".to_owned())),
    }
}

/// Takes the directory's lock, naming the holder when another process has it.
fn take_lock(dir: &Path) -> Result<File, StorageError> {
    let path = dir.join("LOCK");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| {
            StorageError::new(
                ErrorKind::BadDirectory,
                format!("cannot write to {}: {e}", dir.display()),
            )
            .with_source(e)
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            let holder = if pid.is_empty() {
                String::new()
            } else {
                format!(" (pid {pid})")
            };
            return Err(StorageError::new(
                ErrorKind::Locked,
                format!(
                    "{} is in use by another ledger process{holder}",
                    dir.display()
                ),
            ));
        }
        Err(TryLockError::Error(e)) => {
            return Err(StorageError::io(
                format!("cannot lock {}", path.display()),
                e,
            ))
        }
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(|e| StorageError::io(format!("cannot write {}", path.display()), e))?;
    Ok(file)
}

/// sled 0.34.7 writes its own snapshot to `snap.<lsn>.generating`, syncs
/// it and renames it to `snap.<lsn>`; but on open it reads the file whose
/// name sorts last, `.generating` ones included. A process killed while
/// sled writes one leaves a torn file that sled then refuses to open
/// ("Read corrupted data at file offset None"; found by the crash loop at
/// cycle 85 of 1,000). An unfinished snapshot was never in use — the
/// previous one stays until the rename — so it is removed before opening.
fn remove_unfinished_sled_snapshots(sled_dir: &Path) -> Result<(), StorageError> {
    let Ok(entries) = std::fs::read_dir(sled_dir) else {
        return Ok(());
    };
    let mut removed = false;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %name, "removing sled's unfinished snapshot");
            std::fs::remove_file(entry.path()).map_err(|e| {
                StorageError::io(format!("cannot remove {}", entry.path().display()), e)
            })?;
            removed = true;
        }
    }
    if removed {
        sync_dir(sled_dir)?;
    }
    Ok(())
}

/// sled 0.34.7 writes its `conf` file once, when it creates a database, in
/// two writes and without a sync; a process killed in between leaves a torn
/// file that sled then refuses for good ("Read corrupted data at file offset
/// None"; found by the crash loop, killed at its first cycle). So a new
/// database is created under a marker: the file `sled.creating` is made
/// (and its directory synced) before sled creates `sled/`, and removed only
/// once sled's files and directories are synced. A `sled/` found beside the
/// marker is an unfinished creation that never held an event (events are
/// appended only after open returns); it is removed and made anew.
///
/// The database is created by the handle the log then keeps: a second
/// handle opened right after the first is dropped can find sled's file lock
/// still held by the first one's background threads.
fn open_sled(dir: &Path, sled_dir: &Path, cache_bytes: u64) -> Result<::sled::Db, StorageError> {
    let marker = dir.join("sled.creating");
    let config = ::sled::Config::new()
        .path(sled_dir)
        .cache_capacity(cache_bytes);
    if marker.is_dir() {
        // Older releases created the database in this directory and renamed
        // it into place when whole: what is left there never held an event.
        std::fs::remove_dir_all(&marker)
            .map_err(|e| StorageError::io(format!("cannot remove {}", marker.display()), e))?;
    }
    if marker.exists() {
        if sled_dir.exists() {
            tracing::warn!(dir = %sled_dir.display(), "removing an unfinished new database");
            std::fs::remove_dir_all(sled_dir).map_err(|e| {
                StorageError::io(format!("cannot remove {}", sled_dir.display()), e)
            })?;
        }
    } else if sled_dir.exists() {
        remove_unfinished_sled_snapshots(sled_dir)?;
        return open_config(&config, sled_dir);
    }
    File::create(&marker)
        .map_err(|e| StorageError::io(format!("cannot create {}", marker.display()), e))?;
    sync_dir(dir)?;
    let db = open_config(&config, sled_dir)?;
    db.flush().map_err(storage)?;
    sync_files(sled_dir)?;
    std::fs::remove_file(&marker)
        .map_err(|e| StorageError::io(format!("cannot remove {}", marker.display()), e))?;
    sync_dir(dir)?;
    Ok(db)
}

/// Syncs every file of sled's directory `sled_dir` (and of its `blobs`)
/// and the directories themselves.
fn sync_files(sled_dir: &Path) -> Result<(), StorageError> {
    for sub in [sled_dir.to_owned(), sled_dir.join("blobs")] {
        let Ok(entries) = std::fs::read_dir(&sub) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                File::open(entry.path())
                    .and_then(|f| f.sync_all())
                    .map_err(|e| {
                        StorageError::io(format!("cannot sync {}", entry.path().display()), e)
                    })?;
            }
        }
        sync_dir(&sub)?;
    }
    Ok(())
}

/// Record `seq` as stored, made readable: its payloads decrypted, or
/// removed when their key was destroyed (as [`record::unseal`]); `None`
/// when it is readable as it is.
fn unsealed_record(keys: &Keys, seq: u64, bytes: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
    record::unseal(bytes, |slot| key_of(keys, seq, bytes, slot))
}

/// The key in `slot` of record `seq` as stored (`bytes`); a slot that
/// names no key is damage to the record itself when its hash says so.
fn key_of(keys: &Keys, seq: u64, bytes: &[u8], slot: u64) -> Result<Option<Key>, StorageError> {
    keys.read(slot).map_err(|e| match e.kind() {
        ErrorKind::Corrupt => record::check_hash(seq, bytes)
            .err()
            .unwrap_or_else(|| e.at_seq(seq)),
        _ => e,
    })
}

/// A snapshot as stored, decrypted; `None` once its key is destroyed (it
/// was taken while a redacted execution was live).
fn unsealed_snapshot(keys: &Keys, seq: u64, value: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
    if value.first() != Some(&record::SEALED_SNAPSHOT) {
        // Written before snapshots were encrypted.
        return Ok(Some(value.to_vec()));
    }
    // Derived data: a snapshot whose key cannot be found is one missed.
    let key = match record::snapshot_slot(value).map(|slot| keys.read(slot)) {
        Some(Ok(key)) => key,
        Some(Err(e)) if e.kind() != ErrorKind::Corrupt => return Err(e),
        damaged => {
            let error = damaged.and_then(Result::err).map(|e| e.to_string());
            tracing::warn!(seq, error, "ignoring a snapshot whose key cannot be read");
            None
        }
    };
    let Some(key) = key else {
        return Ok(None);
    };
    Ok(Some(record::open_snapshot(value, &key)))
}

/// A record or snapshot as stored in the data directory `dir` of a ledger
/// not open, made readable as the engine reads it (for tests and tools
/// that read sled's files directly).
///
/// # Errors
///
/// `Corrupt` when the key file is missing or names no such key; `Io`.
pub(crate) fn readable_stored(
    dir: &Path,
    seq: u64,
    stored: &[u8],
    snapshot: bool,
) -> Result<Option<Vec<u8>>, StorageError> {
    let keys = Keys::open(dir, false)?;
    if snapshot {
        unsealed_snapshot(&keys, seq, stored)
    } else {
        Ok(Some(
            unsealed_record(&keys, seq, stored)?.unwrap_or_else(|| stored.to_vec()),
        ))
    }
}

/// The keys that encrypt the payloads of records `seqs` of the ledger in
/// `dir` (not open), as its key file holds them now (`None` once
/// destroyed); records without encrypted payloads have none. For tests
/// that search the data directory's files for them.
///
/// # Errors
///
/// As opening the ledger's log; `Corrupt` for a missing record.
pub(crate) fn payload_keys(dir: &Path, seqs: &[u64]) -> Result<Vec<Option<Key>>, StorageError> {
    let log = Log::open(dir, Durability::Flushed, 64 << 20, false)?;
    let mut keys = Vec::new();
    for &seq in seqs {
        let (first, value) = log
            .entry_holding(seq)?
            .ok_or_else(|| StorageError::corrupt(seq, "record is missing"))?;
        let (_, range) = record::split(first, &value)?
            .into_iter()
            .find(|(s, _)| *s == seq)
            .ok_or_else(|| StorageError::corrupt(seq, "record is missing"))?;
        if let Some(slot) = record::key_slot(&value[range]) {
            keys.push(log.keys.read(slot)?);
        }
    }
    Ok(keys)
}

/// The keys of the snapshots of the ledger in `dir` (not open), by seq,
/// as its key file holds them (`None` once destroyed; snapshots written in
/// the clear have none).
///
/// # Errors
///
/// As opening the ledger's log.
pub(crate) fn snapshot_keys(dir: &Path) -> Result<Vec<(u64, Option<Key>)>, StorageError> {
    let log = Log::open(dir, Durability::Flushed, 64 << 20, false)?;
    let mut keys = Vec::new();
    for item in log.snapshots.iter() {
        let (k, v) = item.map_err(storage)?;
        if let (Some(seq), Some(slot)) = (seq_of(&k), record::snapshot_slot(&v)) {
            keys.push((seq, log.keys.read(slot)?));
        }
    }
    Ok(keys)
}

/// Opens the key file, checked against the id the log keeps of it: made
/// when the log names none (a new ledger, or one written before payloads
/// were encrypted), its id then kept.
fn open_keys(dir: &Path, db: &::sled::Db, meta: &::sled::Tree) -> Result<Keys, StorageError> {
    let named = meta.get(KEY_FILE_ID).map_err(storage)?;
    let used = meta
        .get(KEYS_USED)
        .map_err(storage)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes);
    let keys = Keys::open(dir, named.is_none())?;
    match named {
        Some(id) if id.as_ref() != keys.id() => Err(StorageError::new(
            ErrorKind::Corrupt,
            format!(
                "the payload key file {} belongs to another ledger",
                keys.path().display()
            ),
        )),
        Some(_) if keys.len() < used => Err(StorageError::new(
            ErrorKind::Corrupt,
            format!(
                "the payload key file {} holds {} keys but the log has used up to {used}: it is older than the log (restored from an older backup?)",
                keys.path().display(),
                keys.len()
            ),
        )),
        Some(_) => Ok(keys),
        None => {
            meta.insert(KEY_FILE_ID, &keys.id()).map_err(storage)?;
            db.flush().map_err(storage)?;
            Ok(keys)
        }
    }
}

/// Dropped after the log's sled handles: returns once sled has let go of
/// its database (its background threads can hold it a moment longer), so
/// that a dropped ledger can be opened again at once, in this process or
/// another.
struct Released(PathBuf);

impl Drop for Released {
    fn drop(&mut self) {
        wait_released(&self.0);
    }
}

/// Returns once sled has let go of its database file `db` (up to 10 s).
fn wait_released(db: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let Ok(file) = File::open(db) else {
        return;
    };
    loop {
        match file.try_lock() {
            Ok(()) => return,
            Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => {
                tracing::warn!(file = %db.display(), "sled still holds its database");
                return;
            }
        }
    }
}

impl Log {
    /// Whether `dir` holds a ledger (its database or its checkpoint).
    fn exists(dir: &Path) -> bool {
        dir.join("sled").exists() || dir.join(CHECKPOINT).exists()
    }

    /// Opens the log in `dir`, creating it when absent if `create` is set
    /// (else `NoLedger`, and nothing is created). What its checkpoint holds
    /// is checked by [`Store::check_tail`] and kept by [`Store::resume`].
    pub(crate) fn open(
        dir: &Path,
        durability: Durability,
        cache_bytes: u64,
        create: bool,
    ) -> Result<Log, StorageError> {
        Log::open_in(dir, durability, cache_bytes, create, None)
    }

    /// [`Log::open`], with the archive's segments in `archive` (default
    /// `DIR/archive`).
    pub(crate) fn open_in(
        dir: &Path,
        durability: Durability,
        cache_bytes: u64,
        create: bool,
        archive: Option<&Path>,
    ) -> Result<Log, StorageError> {
        let log = Log::open_unfinished(dir, durability, cache_bytes, create, archive)?;
        log.finish_strip()?;
        log.finish_archive()?;
        Ok(log)
    }

    /// [`Log::open`], leaving what a redaction or an archive pass cut
    /// short as it is.
    fn open_unfinished(
        dir: &Path,
        durability: Durability,
        cache_bytes: u64,
        create: bool,
        archive: Option<&Path>,
    ) -> Result<Log, StorageError> {
        if dir.exists() && !dir.is_dir() {
            return Err(StorageError::new(
                ErrorKind::BadDirectory,
                format!("{} is not a directory", dir.display()),
            ));
        }
        if !create && !Log::exists(dir) {
            return Err(StorageError::new(
                ErrorKind::NoLedger,
                format!("no ledger at {}", dir.display()),
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| {
            StorageError::new(
                ErrorKind::BadDirectory,
                format!("cannot create {}: {e}", dir.display()),
            )
            .with_source(e)
        })?;
        let lock_file = take_lock(dir)?;
        let sled_dir = dir.join("sled");
        compact::recover(dir)?;
        let mut db = open_sled(dir, &sled_dir, cache_bytes)?;
        archiving::remove_archived_records(&db)?;
        if compact::wanted(&db)? {
            db = compact::rewrite(dir, db, |path| {
                ::sled::Config::new().path(path).cache_capacity(cache_bytes)
            })?;
        }
        let events = db.open_tree("events").map_err(storage)?;
        let snapshots = db.open_tree("snapshots").map_err(storage)?;
        let meta = db.open_tree("meta").map_err(storage)?;
        let keys = open_keys(dir, &db, &meta)?;
        let db_file = File::open(sled_dir.join("db")).map_err(|e| {
            StorageError::io(format!("cannot open {}", sled_dir.join("db").display()), e)
        })?;
        // Read after sled is open: whatever a sync wrote there, sled has.
        let found = checkpoint::read(&dir.join(CHECKPOINT))?;
        let base = archiving::read_base(&meta)?;
        let archive = archive.map_or_else(|| dir.join(archiving::ARCHIVE_DIR), Path::to_owned);
        let segments = crate::store::archive::Segments::open(&archive, base)?;
        let log = Log {
            dir: dir.to_owned(),
            found,
            db,
            events,
            snapshots,
            meta,
            keys,
            durability,
            db_file,
            synced_blobs: Mutex::new(HashSet::new()),
            checkpoint: Mutex::new(None),
            appended: Mutex::new((0, record::GENESIS)),
            staged: Mutex::default(),
            state: Mutex::new(SyncState::default()),
            changed: Condvar::new(),
            counters: Counters::default(),
            base: Mutex::new(base),
            segments: Mutex::new(segments),
            _released: Released(sled_dir.join("db")),
            _lock: lock_file,
        };
        log.settle_segments()?;
        // sled's own files and directories, created above, survive a power
        // loss only once their directories are synced.
        sync_dir(&sled_dir)?;
        sync_dir(dir)?;
        Ok(log)
    }

    /// Finishes the removal of payloads a redaction written did not
    /// finish (the process ended first).
    fn finish_strip(&self) -> Result<(), StorageError> {
        let Some(v) = self.events.get(STRIP_PENDING).map_err(storage)? else {
            return Ok(());
        };
        let seqs: Vec<u64> = v
            .chunks_exact(8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
            .collect();
        tracing::info!(records = seqs.len(), "finishing a redaction");
        self.strip(&seqs)?;
        self.events.remove(STRIP_PENDING).map_err(storage)?;
        Ok(())
    }

    /// A fresh key for a record or snapshot; a new pool's size is recorded
    /// in the log before any of its keys is used.
    fn take_key(&self) -> Result<(u64, Key), StorageError> {
        let taken = self.keys.take()?;
        if let Some(used) = taken.made {
            self.meta
                .insert(KEYS_USED, &used.to_be_bytes())
                .map_err(storage)?;
        }
        Ok((taken.slot, taken.key))
    }

    /// The key in `slot`, which the record of `seq` written elsewhere
    /// names (an import): the keys before it are passed over, unused.
    ///
    /// # Errors
    ///
    /// `Corrupt` at `seq` when a key after `slot` is in use already (the
    /// records imported named theirs out of order); as [`Self::take_key`].
    fn take_key_at(&self, seq: u64, slot: u64) -> Result<(u64, Key), StorageError> {
        loop {
            let (taken, key) = self.take_key()?;
            match taken.cmp(&slot) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Equal => return Ok((taken, key)),
                std::cmp::Ordering::Greater => {
                    return Err(StorageError::corrupt(
                        seq,
                        format!(
                            "the record names payload key {slot}, and the records imported before it named keys up to {} (an export from one ledger names its keys in seq order)",
                            taken - 1
                        ),
                    ))
                }
            }
        }
    }

    fn checkpoint_path(&self) -> PathBuf {
        self.dir.join(CHECKPOINT)
    }

    /// Checks the log, ending at `last`, against what its checkpoint holds:
    /// `Checkpoint` when it is missing beside a non-empty log, or damaged;
    /// `LostSuffix` when the log ends before it; `Corrupt` when the record
    /// at its seq has another hash (rewritten). A new ledger (empty log, no
    /// checkpoint or one that records nothing) passes.
    fn check_checkpoint(&self, stored: &Stored, last: u64) -> Result<(), StorageError> {
        let path = self.checkpoint_path();
        let unusable = |what: String| {
            StorageError::new(
                ErrorKind::Checkpoint,
                format!(
                    "checkpoint {} is {what}: a lost tail of the log cannot be detected",
                    path.display()
                ),
            )
        };
        match stored {
            Stored::Missing | Stored::Damaged(..) if last == 0 && stored.claims() == 0 => Ok(()),
            Stored::Missing => Err(unusable(format!("missing beside a log of {last} events"))),
            Stored::Damaged(wrong, _) => Err(unusable(format!("damaged ({wrong})"))),
            &Stored::Intact(cseq, chash) => {
                if last < cseq {
                    return Err(StorageError::new(
                        ErrorKind::LostSuffix,
                        format!(
                            "the log ends at seq {last} but the checkpoint says seq {cseq} was durable: \
                             {} acknowledged events are missing",
                            cseq - last
                        ),
                    )
                    .at_seq(last + 1));
                }
                if cseq > 0 {
                    let bytes = self.record(cseq)?.ok_or_else(|| {
                        StorageError::corrupt(cseq, "the checkpoint's record is missing")
                    })?;
                    if record::decode(cseq, &bytes)?.hash != chash {
                        return Err(StorageError::corrupt(
                            cseq,
                            "record differs from the one the checkpoint recorded (rewritten)",
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    /// Keeps the checkpoint from here on, once open has checked it: the
    /// one found when whole and `accepted` is not set, else a new one
    /// recording `head` (a new ledger, or a log accepted as it is).
    fn keep_checkpoint(
        &self,
        stored: &Stored,
        head: (u64, Hash),
        accepted: bool,
    ) -> Result<(), StorageError> {
        let path = self.checkpoint_path();
        let kept = match stored {
            Stored::Intact(..) if !accepted => Checkpoint::open(&path)?,
            _ => Checkpoint::create(&path, head.0, &head.1)?,
        };
        *lock(&self.checkpoint) = Some(kept);
        Ok(())
    }

    /// Records that the log was accepted as it is at `head` (at time `at`)
    /// although its checkpoint was refused with `problem`: a line appended
    /// to `checkpoint.accepted` beside the checkpoint, synced, and a
    /// warning.
    fn record_acceptance(
        &self,
        at: &str,
        head: (u64, Hash),
        problem: &StorageError,
    ) -> Result<(), StorageError> {
        let path = self.dir.join(ACCEPTED);
        let line = format!(
            "{at} accepted the log as it is at seq {} ({}); its checkpoint was refused: {problem}\n",
            head.0,
            record::hex(&head.1)
        );
        tracing::warn!(seq = head.0, problem = %problem, "accepted the log as it is");
        let existed = path.exists();
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()).and_then(|()| f.sync_data()))
            .map_err(|e| StorageError::io(format!("cannot write {}", path.display()), e))?;
        if !existed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Marks (seq, hash) as the log's end as found on open (durable).
    fn set_recovered_head(&self, seq: u64, hash: Hash) -> Result<(), StorageError> {
        *lock(&self.appended) = (seq, hash);
        lock(&self.staged).end = (seq, hash);
        self.sync_to(seq, &hash, Durability::Synced)?;
        let mut st = lock(&self.state);
        st.flushed = seq;
        st.synced = seq;
        st.visible = seq;
        Ok(())
    }

    /// Stored records from `from` on, in seq order, with their seqs; each
    /// block opened into its records. A malformed key, block, or a block
    /// that overlaps the one before is reported as corruption where found.
    /// With `readable` unset, as stored (encrypted).
    fn stored_records(&self, from: u64, readable: bool) -> Items<'_, StoredRecord> {
        let from = from.max(self.archive_base().0 + 1);
        // The entry holding `from` may start before it.
        let start = match self.entry_holding(from) {
            Ok(Some((first, _))) => first.min(from),
            Ok(None) => from,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        let mut last = from - 1;
        let mut entries = self
            .events
            .range(event_key(start).as_slice()..[INDEX].as_slice());
        type Opened = (u64, Result<Bytes, StorageError>);
        let mut open: std::vec::IntoIter<Opened> = Vec::new().into_iter();
        let mut failed = false;
        Box::new(std::iter::from_fn(move || loop {
            if let Some((seq, read)) = open.next() {
                // Each record decrypted on its own: damage is found at its
                // own seq, after the records before it.
                return Some(match read {
                    Ok(bytes) => {
                        last = seq;
                        Ok((seq, bytes))
                    }
                    Err(e) => {
                        failed = true;
                        open = Vec::new().into_iter();
                        Err(e)
                    }
                });
            }
            if failed {
                return None;
            }
            let entry = entries.next()?;
            let opened = entry
                .map_err(|e| {
                    let after = format!("the records after seq {last} are unreadable");
                    at_seq(storage(e), last + 1, after)
                })
                .and_then(|(k, v)| {
                    let first = seq_of(&k).ok_or_else(|| {
                        StorageError::corrupt(last + 1, "the log holds a malformed key")
                    })?;
                    if first <= last && first >= from {
                        return Err(StorageError::corrupt(
                            first,
                            format!("the entry of seq {first} overlaps the block before it"),
                        ));
                    }
                    if v.first() != Some(&record::BLOCK) {
                        // The entry before `from` when it is no key.
                        if first < from {
                            return Ok(Vec::new());
                        }
                        if !readable {
                            return Ok(vec![(first, Ok(Bytes::new(v)))]);
                        }
                        return Ok(vec![(first, self.readable(first, Bytes::new(v)))]);
                    }
                    let parts = record::split(first, &v)?;
                    let parts = parts.into_iter().filter(|(seq, _)| *seq >= from);
                    if !readable || !parts.clone().any(|(_, r)| record::is_sealed(&v[r])) {
                        return Ok(parts
                            .map(|(seq, range)| (seq, Ok(Bytes::new(Part(v.clone(), range)))))
                            .collect());
                    }
                    // One copy of the block, decrypted in place record by
                    // record, which its records then share.
                    let mut block = v.to_vec();
                    let parts: Vec<_> = parts
                        .map(|(seq, mut range)| {
                            let opened =
                                record::unseal_in_place(&mut block[range.clone()], |slot| {
                                    key_of(&self.keys, seq, &v[range.clone()], slot)
                                });
                            if let Ok(Some(len)) = opened {
                                range.end = range.start + len;
                            }
                            (seq, range, opened.map(|_| ()))
                        })
                        .collect();
                    let block = Shared(std::sync::Arc::new(block));
                    Ok(parts
                        .into_iter()
                        .map(|(seq, range, opened)| {
                            (seq, opened.map(|()| Bytes::new(Part(block.clone(), range))))
                        })
                        .collect())
                });
            match opened {
                Ok(records) => open = records.into_iter(),
                Err(e) => {
                    failed = true;
                    return Some(Err(e));
                }
            }
        }))
    }

    /// Record `seq` as stored, made readable ([`unsealed_record`]).
    fn readable(&self, seq: u64, bytes: Bytes) -> Result<Bytes, StorageError> {
        Ok(unsealed_record(&self.keys, seq, &bytes)?.map_or(bytes, Bytes::new))
    }

    /// The stored entry that holds record `seq`: its first seq and value.
    fn entry_holding(&self, seq: u64) -> Result<Option<(u64, ::sled::IVec)>, StorageError> {
        let unreadable = |e| at_seq(storage(e), seq, "record is unreadable");
        if let Some(v) = self.events.get(event_key(seq)).map_err(unreadable)? {
            return Ok(Some((seq, v)));
        }
        match self.events.range(..event_key(seq)).next_back() {
            None => Ok(None),
            Some(Err(e)) => Err(unreadable(e)),
            Some(Ok((k, v))) => Ok(seq_of(&k).map(|first| (first, v))),
        }
    }

    /// Writes a block (or a single record) and then its events' index
    /// entries. On an error, whether the block itself was written.
    fn write_block(
        &self,
        first: u64,
        value: &[u8],
        index: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), (bool, StorageError)> {
        self.events
            .insert(event_key(first), value)
            .map_err(|e| (false, storage(e)))?;
        for (key, value) in index {
            self.events
                .insert(key.as_slice(), value.as_slice())
                .map_err(|e| (true, storage(e)))?;
        }
        Ok(())
    }

    /// Writes everything staged, block by block, then the snapshots taken
    /// meanwhile; the log's end moves past each block as it is written.
    fn write_staged(&self, staged: &mut Staged) -> Result<(), StorageError> {
        staged.cut();
        let mut written = Ok(());
        let stripped: Vec<u64> = staged.full.iter().flat_map(|b| b.strips.clone()).collect();
        let mut blocks = std::mem::take(&mut staged.full).into_iter().peekable();
        while let Some(block) = blocks.next() {
            let mut end = block.end;
            written = if blocks.peek().is_some_and(|b| b.joined) || !block.strips.is_empty() {
                // One append over several blocks, or one that redacts: one
                // sled batch (with the redaction's seqs, until removed).
                let mut batch = ::sled::Batch::default();
                let mut strips = Vec::new();
                let mut add = |b: StagedBlock| {
                    batch.insert(&event_key(b.first), b.value);
                    for (key, value) in b.index {
                        batch.insert(key, value);
                    }
                    strips.extend(b.strips);
                };
                add(block);
                while let Some(b) = blocks.next_if(|b| b.joined) {
                    end = b.end;
                    add(b);
                }
                if !strips.is_empty() {
                    let seqs: Vec<u8> = strips.iter().flat_map(|s| s.to_be_bytes()).collect();
                    batch.insert(STRIP_PENDING.as_slice(), seqs);
                }
                self.events
                    .apply_batch(batch)
                    .map_err(storage)
                    .and_then(|()| {
                        // Its records are in the log: a failure to strip
                        // is repaired on open, as a lost index entry is.
                        self.appended(end);
                        if strips.is_empty() {
                            return Ok(());
                        }
                        self.strip(&strips)?;
                        self.events.remove(STRIP_PENDING).map_err(storage)?;
                        Ok(())
                    })
            } else {
                self.write_block(block.first, &block.value, &block.index)
                    .map_err(|(block_written, e)| {
                        // Its records are in the log; a failure to index
                        // them is repaired on open.
                        if block_written {
                            self.appended(end);
                        }
                        e
                    })
            };
            if written.is_err() {
                break;
            }
            self.appended(end);
        }
        staged.lookup.clear();
        let mut snapshots = std::mem::take(&mut staged.snapshots);
        written?;
        // A snapshot taken meanwhile while a now redacted execution was
        // live holds its payloads: it is not written.
        let redacted = super::live_ranges(&stripped);
        snapshots.retain(|(seq, _)| !redacted.iter().any(|r| r.contains(seq)));
        for (seq, bytes) in snapshots {
            // Derived data: a snapshot that cannot be written is only missed.
            if let Err(e) = self.insert_snapshot(seq, bytes) {
                tracing::warn!(seq, error = %e, "cannot write a snapshot");
            }
        }
        Ok(())
    }

    /// Stores a snapshot; the key of one it replaces is destroyed (the old
    /// copy sled keeps could be read with it).
    fn insert_snapshot(&self, seq: u64, bytes: Vec<u8>) -> Result<(), StorageError> {
        let old = self
            .snapshots
            .insert(event_key(seq), bytes)
            .map_err(storage)?;
        match old.as_deref().and_then(record::snapshot_slot) {
            Some(slot) => self.keys.destroy(&[slot]),
            None => Ok(()),
        }
    }

    /// Removes the payloads of the records of `seqs` (of one or more
    /// redacted executions; idempotent), and with them the snapshots taken
    /// while each of those executions was live (derived data that holds
    /// their payloads): those from its first seq to its last. The keys of
    /// those records and snapshots are destroyed first — after a flush
    /// that makes the `redacted` events durable — so that the copies sled
    /// keeps of what it rewrites can no longer be read; then the snapshots
    /// are removed and each stored entry holding such a record rewritten
    /// without its payloads, in one batch.
    fn strip(&self, seqs: &[u64]) -> Result<(), StorageError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut slots = Vec::new();
        let mut snapshots = Vec::new();
        for live in super::live_ranges(seqs) {
            let range = event_key(*live.start())..=event_key(*live.end());
            for item in self.snapshots.range(range) {
                let (key, value) = item.map_err(storage)?;
                slots.extend(record::snapshot_slot(&value));
                snapshots.push(key);
            }
        }
        let mut sorted = seqs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let seqs = &sorted[..];
        let mut batch = ::sled::Batch::default();
        // Records written before payloads were encrypted.
        let mut in_clear = 0;
        let mut i = 0;
        let base = self.archive_base().0;
        while let Some(&seq) = seqs.get(i) {
            let held = match self.entry_holding(seq)? {
                Some((first, value)) => {
                    let parts = record::split(first, &value)?;
                    let last = first + parts.len() as u64 - 1;
                    (seq <= last).then_some((first, value, parts, last))
                }
                None => None,
            };
            let Some((first, value, parts, last)) = held else {
                if seq > base {
                    return Err(StorageError::corrupt(seq, "record is missing"));
                }
                // Archived since the redaction was decided: the segment
                // keeps the record as stored, and its key is what goes.
                let stored = self
                    .archived_record(seq)?
                    .ok_or_else(|| StorageError::corrupt(seq, "archived record is missing"))?;
                slots.extend(record::key_slot(&stored));
                i += 1;
                continue;
            };
            let mut changed = false;
            let mut records = Vec::with_capacity(parts.len());
            for (s, range) in parts {
                let stored = &value[range];
                if seqs[i..].binary_search(&s).is_err() {
                    records.push(stored.to_vec());
                    continue;
                }
                let slot = record::key_slot(stored);
                slots.extend(slot);
                let bytes = self.readable(s, Bytes::new(stored.to_vec()))?;
                match record::strip(s, &bytes)? {
                    record::Stripped::Record(r) => {
                        if slot.is_none() {
                            in_clear += 1;
                        }
                        changed = true;
                        records.push(r);
                    }
                    _ => records.push(stored.to_vec()),
                }
            }
            if changed {
                batch.insert(&event_key(first), record::stored_value(&records));
            }
            while seqs.get(i).is_some_and(|&s| s <= last) {
                i += 1;
            }
        }
        // Whatever the log's durability: keys destroyed for a redaction a
        // power loss took would be payloads lost without it.
        self.db.flush().map_err(storage)?;
        self.db_file
            .sync_data()
            .map_err(|e| StorageError::io("cannot sync the log", e))?;
        self.sync_blobs()?;
        self.keys.destroy(&slots)?;
        if in_clear > 0 {
            tracing::warn!(
                records = in_clear,
                "redacted records written before payloads were encrypted: sled may keep readable copies of them until it reuses their space"
            );
        }
        for key in snapshots {
            self.snapshots.remove(key).map_err(storage)?;
        }
        self.events.apply_batch(batch).map_err(storage)
    }

    /// Writes the index entries of an event in the log (idempotent): the
    /// name it points at its execution, and when it settled its execution,
    /// the seqs of all that execution's events.
    fn index(&self, event: &Event, settled: Option<&Settled>) -> Result<(), StorageError> {
        for (key, value) in index_entries(event, settled, self.archive_base().0) {
            self.events.insert(key, value).map_err(storage)?;
        }
        Ok(())
    }

    /// The keys [`Log::index`] writes for `event`.
    fn index_keys(
        &self,
        event: &Event,
        settled: Option<&Settled>,
    ) -> impl Iterator<Item = Vec<u8>> {
        index_entries(event, settled, self.archive_base().0).map(|(key, _)| key)
    }

    /// Removes every index entry whose key is not in `keep`; returns how
    /// many it removed.
    fn remove_index_except(&self, keep: &HashSet<Vec<u8>>) -> Result<u64, StorageError> {
        let mut removed = 0;
        for key in self.events.range([INDEX].as_slice()..).keys() {
            let key = key.map_err(storage)?;
            // (A redaction's pending removal is no index entry.)
            if !keep.contains(key.as_ref()) && key.as_ref() != STRIP_PENDING.as_slice() {
                self.events.remove(&key).map_err(storage)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Group commit: the first caller to find no sync running leads one
    /// for everything appended so far; the others park until a sync covers
    /// their seq. When a sync ends, its leader unparks exactly the waiters it
    /// covered, plus one more to lead the next sync if any is left.
    fn sync_through(&self, seq: u64, how: Durability) -> Result<(), StorageError> {
        let mut st = lock(&self.state);
        loop {
            if let Some(why) = &st.failed {
                return Err(StorageError::new(
                    ErrorKind::Poisoned,
                    format!("an earlier sync failed ({why}); reopen the ledger"),
                ));
            }
            if st.done(how) >= seq {
                return Ok(());
            }
            if st.syncing {
                st.waiters.push((seq, how, std::thread::current()));
                drop(st);
                // A spurious or early wake just loops back here.
                std::thread::park();
                st = lock(&self.state);
                continue;
            }
            st.syncing = true;
            drop(st);
            let (target, hash) = *lock(&self.appended);
            let result = self.sync_to(target, &hash, how);
            st = lock(&self.state);
            st.syncing = false;
            match result {
                Ok(()) => {
                    st.flushed = st.flushed.max(target);
                    if how == Durability::Synced {
                        st.synced = st.synced.max(target);
                    }
                    let promised = match self.durability {
                        Durability::Synced => st.synced,
                        Durability::Flushed => st.flushed,
                        Durability::Buffered => st.visible,
                    };
                    st.visible = st.visible.max(promised);
                }
                Err(e) => st.failed = Some(e.to_string()),
            }
            let mut next_leader = true;
            let (flushed, synced, failed) = (st.flushed, st.synced, st.failed.is_some());
            st.waiters.retain(|(wants, wants_how, thread)| {
                let done = if *wants_how == Durability::Synced {
                    synced
                } else {
                    flushed
                };
                if failed || done >= *wants || std::mem::take(&mut next_leader) {
                    thread.unpark();
                    false
                } else {
                    true
                }
            });
            // Subscribers wait on the condition variable.
            self.changed.notify_all();
        }
    }

    fn sync_to(&self, seq: u64, hash: &Hash, how: Durability) -> Result<(), StorageError> {
        let started = std::time::Instant::now();
        let result = self.sync_to_inner(seq, hash, how);
        self.counters.sync.record(started.elapsed());
        result
    }

    fn sync_to_inner(&self, seq: u64, hash: &Hash, how: Durability) -> Result<(), StorageError> {
        self.db.flush().map_err(storage)?;
        let synced = how == Durability::Synced;
        if synced {
            self.db_file
                .sync_data()
                .map_err(|e| StorageError::io("cannot sync the log", e))?;
            self.sync_blobs()?;
        }
        match lock(&self.checkpoint).as_mut() {
            Some(c) => c.write(seq, hash, synced),
            None => Err(StorageError::new(
                ErrorKind::Io,
                "the checkpoint is not open (the ledger is still opening)",
            )),
        }
    }

    /// sled writes values too large for its log into `blobs/` without ever
    /// syncing them; sync any new ones.
    fn sync_blobs(&self) -> Result<(), StorageError> {
        let dir = self.dir.join("sled").join("blobs");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        let mut synced = lock(&self.synced_blobs);
        let mut any = false;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if synced.contains(&name) {
                continue;
            }
            if let Ok(f) = File::open(entry.path()) {
                f.sync_data()
                    .map_err(|e| StorageError::io("cannot sync a blob", e))?;
            }
            synced.insert(name);
            any = true;
        }
        if any {
            sync_dir(&dir)?;
        }
        Ok(())
    }

    /// Records `head` as the end of the log, its records and index entries
    /// written.
    fn appended(&self, head: Mark) {
        *lock(&self.appended) = head;
        if self.durability == Durability::Buffered {
            let mut st = lock(&self.state);
            st.visible = head.0;
            self.changed.notify_all();
        }
    }
}

impl Store for Log {
    fn location(&self) -> &Path {
        &self.dir
    }

    fn durability(&self) -> Durability {
        self.durability
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn check_tail(&self, last: u64) -> Result<Tail, StorageError> {
        match self.check_checkpoint(&self.found, last) {
            Ok(()) => Ok(Tail::Whole),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Checkpoint | ErrorKind::LostSuffix | ErrorKind::Corrupt
                ) =>
            {
                Ok(Tail::Refused(e))
            }
            Err(e) => Err(e),
        }
    }

    fn resume(
        &self,
        head: Mark,
        accepted: Option<(&str, &StorageError)>,
    ) -> Result<(), StorageError> {
        self.keep_checkpoint(&self.found, head, accepted.is_some())?;
        if let Some((at, problem)) = accepted {
            self.record_acceptance(at, head, problem)?;
        }
        self.set_recovered_head(head.0, head.1)
    }

    /// While a block is open, staged (written by [`Store::seal`]); else
    /// written at once, as a block when there are several: after a crash
    /// all of them are in the log or none. A block is one sled insert, its
    /// index entries plain inserts after it (a sled batch seals sled's I/O
    /// buffer, which costs about four times as much).
    fn append(&self, after: Mark, events: &[Draft<'_>]) -> Result<Mark, AppendError> {
        let mut staged = lock(&self.staged);
        let head = staged.end;
        if head != after {
            // Only another writer's appends conflict, and the records it
            // missed are read from sled: nothing of this process's is staged.
            debug_assert!(staged.is_empty(), "a conflict with staged records");
            drop(staged);
            let failed = |error| AppendError::Failed {
                error,
                written: head,
            };
            if head.0 <= after.0 {
                return Err(failed(StorageError::corrupt(
                    head.0.max(1),
                    format!(
                        "the log ends at seq {} ({}), not at the seq the ledger appends after ({}, {}): they diverged",
                        head.0,
                        record::hex(&head.1),
                        after.0,
                        record::hex(&after.1)
                    ),
                )));
            }
            let missed = self
                .records(after.0 + 1)
                .take_while(|r| r.as_ref().map_or(true, |(seq, _)| *seq <= head.0))
                .collect::<Result<Vec<_>, _>>()
                .map_err(failed)?;
            return Err(AppendError::Conflict(missed));
        }
        if events.is_empty() {
            return Ok(after);
        }
        let started = std::time::Instant::now();
        // Keys for the payloads, durable before any record that uses one
        // (taken before anything is staged; none, for appends without
        // payloads).
        let mut keys: Vec<Option<(u64, Key)>> = Vec::new();
        if events.iter().any(|d| d.may_carry()) {
            keys = events
                .iter()
                .map(|d| match d.copied {
                    // The slot a record names is its own here too, even once
                    // its payloads are gone (a redaction destroys it).
                    Some(readable) => record::key_slot(readable)
                        .map(|slot| self.take_key_at(d.seq(), slot))
                        .transpose(),
                    None => d.may_carry().then(|| self.take_key()).transpose(),
                })
                .collect::<Result<_, _>>()
                .map_err(|error| AppendError::Failed {
                    error,
                    written: head,
                })?;
        }
        let staged = &mut *staged;
        // A block holds whole appends: one append's events are stored
        // together.
        staged.cut_if_full();
        if staged.filling.len() == 0 {
            staged.first = after.0 + 1;
        }
        let base = self.archive_base().0;
        for (i, draft) in events.iter().enumerate() {
            let seq = draft.seq();
            debug_assert_eq!(seq, staged.end.0 + 1, "appended in seq order");
            if i > 0 && staged.filling.bytes() >= BLOCK_BYTES {
                staged.cut();
                staged.joined = true;
            }
            let key = keys.get(i).and_then(Option::as_ref);
            let key = key.map(|(slot, key)| (*slot, key));
            let hash = match (draft.copied, draft.entry) {
                (Some(readable), _) => staged.filling.push_copied(
                    readable,
                    key.filter(|_| record::copied_slot(readable).is_some())
                        .map(|(_, key)| key),
                ),
                (None, Drafted::Event(event)) => {
                    staged.filling.push_event(&staged.end.1, event, key)
                }
                (None, Drafted::Control(c)) => staged.filling.push_control(&staged.end.1, c),
            };
            staged.end = (seq, hash);
            let Some(event) = draft.event() else {
                // A control entry is indexed under no execution.
                continue;
            };
            for (key, value) in index_entries(event, draft.settles, base) {
                // The combiner looks names and execution seqs up before the
                // seal; list lines are read only after it.
                if staged.open && key.get(1) != Some(&LIST) {
                    staged.lookup.insert(key.clone(), value.clone());
                }
                staged.index.push((key, value));
            }
            staged.strips.extend(draft.strips());
        }
        let end = staged.end;
        if staged.open {
            return Ok(end);
        }
        let written = self.write_staged(staged);
        self.counters.append.record(started.elapsed());
        let written_to = *lock(&self.appended);
        if written.is_err() {
            staged.end = written_to;
        }
        written.map(|()| end).map_err(|error| AppendError::Failed {
            error,
            written: written_to,
        })
    }

    fn last_seq(&self) -> Result<u64, StorageError> {
        match self.events.range(..[INDEX].as_slice()).next_back() {
            None => Ok(0),
            Some(Err(e)) => Err(storage(e)),
            Some(Ok((k, v))) => {
                let first = seq_of(&k).ok_or_else(|| {
                    StorageError::new(ErrorKind::Corrupt, "the log holds a malformed key")
                })?;
                Ok(first + record::count(first, &v)? - 1)
            }
        }
    }

    fn open_block(&self) {
        lock(&self.staged).open = true;
    }

    fn seal(&self) -> Result<(), StorageError> {
        let mut staged = lock(&self.staged);
        staged.open = false;
        if staged.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let written = self.write_staged(&mut staged);
        self.counters.append.record(started.elapsed());
        if let Err(e) = &written {
            staged.end = *lock(&self.appended);
            lock(&self.state).failed = Some(e.to_string());
            self.changed.notify_all();
        }
        written
    }

    /// The first seq of the last stored entry.
    fn unindexed_from(&self, last: u64) -> Result<u64, StorageError> {
        match self.entry_holding(last)? {
            Some((first, _)) if first <= last => Ok(first),
            _ => Ok(last),
        }
    }

    /// Returns once `seq` is as durable as the log's durability promises;
    /// concurrent callers share one sync.
    fn wait_durable(&self, seq: u64) -> Result<(), StorageError> {
        if self.durability == Durability::Buffered {
            return Ok(());
        }
        self.sync_through(seq, self.durability)
    }

    /// Makes everything appended so far durable (`Synced`), whatever the
    /// log's durability.
    fn flush(&self) -> Result<(), StorageError> {
        let head = lock(&self.appended).0;
        self.sync_through(head, Durability::Synced)
    }

    /// The highest seq subscribers may read.
    fn visible(&self) -> u64 {
        lock(&self.state).visible
    }

    /// Waits until the visible seq reaches `seq`, or `timeout` passes;
    /// returns the visible seq.
    fn wait_visible(&self, seq: u64, timeout: Duration) -> u64 {
        let st = lock(&self.state);
        let (st, _) = self
            .changed
            .wait_timeout_while(st, timeout, |st| st.visible < seq && st.failed.is_none())
            .unwrap_or_else(|p| p.into_inner());
        st.visible
    }

    /// The record of `seq`, staged or stored, alone or in a block.
    fn record(&self, seq: u64) -> Result<Option<Bytes>, StorageError> {
        let staged = lock(&self.staged).record(seq);
        if let Some(bytes) = staged {
            return self.readable(seq, Bytes::new(bytes)).map(Some);
        }
        let found = match self.entry_holding(seq)? {
            None => None,
            Some((first, value)) if value.first() != Some(&record::BLOCK) => {
                (first == seq).then(|| Bytes::new(value))
            }
            Some((first, value)) => record::split(first, &value)?
                .into_iter()
                .find(|(s, _)| *s == seq)
                .map(|(_, range)| Bytes::new(Part(value, range))),
        };
        let found = match found {
            Some(bytes) => Some(bytes),
            // Archived (the database keeps the entry that holds the log's
            // last record, and entries a removal has not reached yet).
            None if (1..=self.archive_base().0).contains(&seq) => {
                self.archived_record(seq)?.map(Bytes::new)
            }
            None => None,
        };
        found.map(|bytes| self.readable(seq, bytes)).transpose()
    }

    /// Stored records from `from` on (from the first after the base), in
    /// seq order, with their seqs; each block opened into its records.
    fn records(&self, from: u64) -> Items<'_, StoredRecord> {
        let base = self.archive_base().0;
        if from > base {
            return self.stored_records(from, true);
        }
        // The archived ones from the segments first, then the live log's;
        // stops after the first error.
        let mut archived = (from.max(1)..=base).map(move |seq| {
            let stored = self
                .archived_record(seq)?
                .ok_or_else(|| StorageError::corrupt(seq, "archived record is missing"))?;
            Ok((seq, self.readable(seq, Bytes::new(stored))?))
        });
        let mut live = None;
        let mut failed = false;
        Box::new(std::iter::from_fn(move || {
            if failed {
                return None;
            }
            let next = match archived.next() {
                Some(item) => Some(item),
                None => live
                    .get_or_insert_with(|| self.stored_records(base + 1, true))
                    .next(),
            };
            failed = matches!(next, Some(Err(_)));
            next
        }))
    }

    /// The seqs of one execution's events that the index holds, in order:
    /// all of them once it is settled (live ones are in the projection).
    fn execution_seqs(&self, id: &ExecutionId) -> Result<Vec<u64>, StorageError> {
        let mut seqs = Vec::new();
        let prefix = exec_prefix(id);
        if let Some(v) = lock(&self.staged).lookup.get(prefix.as_slice()) {
            unpack(&prefix, v, &mut seqs);
        }
        for item in self.events.scan_prefix(prefix) {
            let (k, v) = item.map_err(storage)?;
            unpack(&k, &v, &mut seqs).ok_or_else(|| {
                StorageError::new(
                    ErrorKind::Corrupt,
                    format!("malformed index entry for {id}"),
                )
            })?;
        }
        seqs.sort_unstable();
        seqs.dedup();
        Ok(seqs)
    }

    /// The execution a per-tenant name points at.
    fn named(&self, name: Name<'_>) -> Result<Option<ExecutionId>, StorageError> {
        let key = name_key(&name);
        let staged = lock(&self.staged).lookup.get(&key).cloned();
        let v = match staged {
            Some(v) => Some(v),
            None => self.events.get(key).map_err(storage)?.map(|v| v.to_vec()),
        };
        v.map(|v| {
            <[u8; 16]>::try_from(v.as_slice())
                .map(ExecutionId::from_bytes)
                .map_err(|_| StorageError::new(ErrorKind::Corrupt, "malformed index entry"))
        })
        .transpose()
    }

    /// Not when settled executions are indexed but none is listed (written
    /// before the list was kept), nor while a build of the list has not
    /// succeeded (marked, so that a failed one is tried again).
    fn list_complete(&self) -> Result<bool, StorageError> {
        if self.events.contains_key(LIST_PARTIAL).map_err(storage)? {
            return Ok(false);
        }
        let first = |kind: u8| self.events.scan_prefix([INDEX, kind]).next().transpose();
        // A log that archived was written with the list (an archived
        // execution's retention events after it settled have their seqs
        // indexed, and no line).
        if self.archive_base().0 > 0
            || first(LIST).map_err(storage)?.is_some()
            || first(EXEC).map_err(storage)?.is_none()
        {
            return Ok(true);
        }
        // The rebuild that builds it removes the mark (it is no entry the
        // log implies).
        self.events.insert(LIST_PARTIAL, &[]).map_err(storage)?;
        Ok(false)
    }

    fn listed_before(&self, before: u64) -> Items<'_, Listed> {
        let range = list_key(0)..list_key(before);
        Box::new(self.events.range(range).rev().map(|item| {
            let (k, v) = item.map_err(storage)?;
            decode_listed(&k, &v).ok_or_else(|| {
                StorageError::new(
                    ErrorKind::Corrupt,
                    "malformed entry in the list of settled executions",
                )
            })
        }))
    }

    /// Stores a snapshot as of `seq`, encrypted under a key of its own.
    fn put_snapshot(&self, seq: u64, bytes: Vec<u8>) -> Result<(), StorageError> {
        let (slot, key) = self.take_key()?;
        let bytes = record::seal_snapshot(slot, &key, bytes);
        {
            let mut staged = lock(&self.staged);
            if staged.open && staged.end.0 >= seq && !staged.is_empty() {
                staged.snapshots.push((seq, bytes));
                return Ok(());
            }
        }
        self.insert_snapshot(seq, bytes)
    }

    /// Snapshots at or below `seq`, newest first, decrypted (those whose
    /// key a redaction destroyed are gone).
    fn snapshots_below(&self, seq: u64) -> Items<'_, StoredRecord> {
        Box::new(
            self.snapshots
                .range(..=event_key(seq).as_slice())
                .rev()
                .filter_map(|item| {
                    let read = || {
                        let (k, v) = item.map_err(storage)?;
                        let seq = seq_of(&k).ok_or_else(|| {
                            StorageError::new(ErrorKind::Corrupt, "malformed snapshot key")
                        })?;
                        Ok(unsealed_snapshot(&self.keys, seq, &v)?.map(|b| (seq, Bytes::new(b))))
                    };
                    read().transpose()
                }),
        )
    }

    /// Every snapshot's seq, in order (those whose key a redaction
    /// destroyed are gone).
    fn snapshot_seqs(&self) -> Result<Vec<u64>, StorageError> {
        let mut seqs = Vec::new();
        for item in self.snapshots.iter() {
            let (k, v) = item.map_err(storage)?;
            let seq = seq_of(&k)
                .ok_or_else(|| StorageError::new(ErrorKind::Corrupt, "malformed snapshot key"))?;
            if unsealed_snapshot(&self.keys, seq, &v)?.is_some() {
                seqs.push(seq);
            }
        }
        Ok(seqs)
    }

    /// Checks the log as it is now against the checkpoint file as it is
    /// now (read between two writes of it).
    fn check_tail_now(&self) -> Result<(), StorageError> {
        let guard = lock(&self.checkpoint);
        let stored = checkpoint::read(&self.checkpoint_path())?;
        let last = self.last_seq()?;
        let checked = self.check_checkpoint(&stored, last);
        drop(guard);
        checked
    }

    /// Every execution the index holds, with its seqs (sorted, without
    /// duplicates), in execution id order (checked by `verify`).
    fn index_groups(&self) -> Items<'_, (ExecutionId, Vec<u64>)> {
        let mut entries = self.events.scan_prefix([INDEX, EXEC]).peekable();
        Box::new(std::iter::from_fn(move || {
            let malformed = || StorageError::new(ErrorKind::Corrupt, "malformed index entry");
            let id_of = |k: &[u8]| -> Option<[u8; 16]> { k.get(2..18)?.try_into().ok() };
            let (k, v) = match entries.next()? {
                Ok(kv) => kv,
                Err(e) => return Some(Err(storage(e))),
            };
            let Some(id) = id_of(&k) else {
                return Some(Err(malformed()));
            };
            let mut seqs = Vec::new();
            if unpack(&k, &v, &mut seqs).is_none() {
                return Some(Err(malformed()));
            }
            while let Some(Ok((k, v))) = entries.next_if(|e| {
                e.as_ref()
                    .is_ok_and(|(k, _)| id_of(k).is_some_and(|other| other == id))
            }) {
                if unpack(&k, &v, &mut seqs).is_none() {
                    return Some(Err(malformed()));
                }
            }
            seqs.sort_unstable();
            seqs.dedup();
            Some(Ok((ExecutionId::from_bytes(id), seqs)))
        }))
    }

    fn base(&self) -> Mark {
        self.archive_base()
    }

    fn archive_dir(&self) -> Option<PathBuf> {
        Some(self.archive_path())
    }

    fn write_segment(
        &self,
        through: u64,
        ids: &[Option<ExecutionId>],
    ) -> Result<PathBuf, StorageError> {
        Log::write_segment(self, through, ids)
    }

    fn commit_archive(&self, path: &Path) -> Result<(), StorageError> {
        Log::commit_archive(self, path)
    }

    fn finish_archive(&self) -> Result<(), StorageError> {
        Log::finish_archive(self)
    }

    fn archived_seqs(&self, id: &ExecutionId) -> Result<Vec<u64>, StorageError> {
        self.archived_seqs_of(id)
    }

    fn readable_archived(&self, seq: u64, stored: Vec<u8>) -> Result<Bytes, StorageError> {
        self.readable(seq, Bytes::new(stored))
    }

    fn strips_payloads(&self) -> bool {
        true
    }

    fn beside(&self, kind: Beside) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let prefix = kind.prefix().as_bytes();
        self.meta
            .scan_prefix(prefix)
            .map(|item| {
                let (k, v) = item.map_err(storage)?;
                let key = std::str::from_utf8(&k[prefix.len()..]).map_err(|_| {
                    StorageError::new(
                        ErrorKind::Corrupt,
                        format!("a key of the {} is not text", kind.what()),
                    )
                })?;
                Ok((key.to_owned(), v.to_vec()))
            })
            .collect()
    }

    fn put_beside(
        &self,
        kind: Beside,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<(), StorageError> {
        let key = [kind.prefix().as_bytes(), key.as_bytes()].concat();
        match value {
            Some(value) => self.meta.insert(key, value).map(drop),
            None => self.meta.remove(key).map(drop),
        }
        .map_err(storage)?;
        self.db.flush().map_err(storage)?;
        self.db_file
            .sync_data()
            .map_err(|e| StorageError::io("cannot sync the database", e))
    }

    fn reindex(&self, draft: Draft<'_>) -> Result<(), StorageError> {
        let Some(event) = draft.event() else {
            return Ok(());
        };
        self.index(event, draft.settles)?;
        self.strip(&draft.strips().collect::<Vec<_>>())
    }

    fn rebuild_index(
        &self,
        events: &mut dyn Iterator<Item = Result<Reindexed, StorageError>>,
    ) -> Result<u64, StorageError> {
        let mut keep = HashSet::new();
        for item in events {
            let (event, settles) = item?;
            self.index(&event, settles.as_ref())?;
            keep.extend(self.index_keys(&event, settles.as_ref()));
        }
        self.remove_index_except(&keep)
    }

    /// Bytes sled uses on disk.
    fn size_on_disk(&self) -> Result<u64, StorageError> {
        self.db.size_on_disk().map_err(storage)
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        // Leave everything appended durable and the checkpoint current; a
        // failure here was already reported to whoever appended.
        let _ = self.flush();
    }
}
