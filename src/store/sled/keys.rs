//! The payload keys: where the keys that encrypt payloads are kept, so that
//! forgetting a payload can really remove it from disk.
//!
//! sled is log-structured: a record rewritten without its payloads leaves
//! the old page in sled's files until sled reuses that space, at a time the
//! ledger does not choose. So sled never holds a payload in the clear: each
//! record that carries payloads has them encrypted (ChaCha20) under a key of
//! its own, kept here, and so does each snapshot. Redaction overwrites the
//! keys of an execution's records (and of the snapshots that held it) with
//! zeros, in place, and syncs the file: whatever copies sled still keeps
//! can no longer be read by anyone (crypto-shredding).
//!
//! The file `keys` in the data directory is
//!
//! ```text
//! magic: "ELKEYS" 0 1 | file id: [u8; 16] | reserved: [u8; 8]
//!   | slot 0: key [u8; 32] | slot 1 | …
//! ```
//!
//! A slot of zeros is a key destroyed. Keys are made ahead in pools,
//! written and synced before any is handed out: a record is written to
//! sled only with a key already durable. A process's first pool holds
//! [`FIRST_POOL`] keys and each next one twice as many, up to
//! [`LAST_POOL`]: a short-lived command leaves few unused, a server syncs
//! once per 4,096 records at most. Slots made but not handed out before
//! the process ends stay unused. The file id is kept in sled too (`0xFF 'K'`), so that a
//! key file lost, or one from another ledger, is found on open instead of
//! being read as the wrong keys.
//!
//! An overwrite in place reaches the disk's blocks on file systems that
//! update in place (ext4, xfs); on copy-on-write ones (btrfs, zfs) and under
//! SSD wear levelling the old block can survive until it is reused.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::checkpoint::sync_dir;
use crate::error::{ErrorKind, StorageError};
use crate::store::record::Key;

/// The key file's name in the data directory.
pub(crate) const FILE: &str = "keys";
const MAGIC: &[u8; 8] = b"ELKEYS\x00\x01";
const HEADER: u64 = 32;
const SLOT: u64 = 32;
/// Keys in a process's first pool.
pub(crate) const FIRST_POOL: u64 = 64;
/// Keys in a pool at most.
pub(crate) const LAST_POOL: u64 = 4096;
/// Slots read from the file at a time, and how many such pages are cached.
const PAGE: u64 = 128;
const CACHED_PAGES: usize = 256;

/// The key file, open.
#[derive(Debug)]
pub(crate) struct Keys {
    path: PathBuf,
    file: File,
    id: [u8; 16],
    /// Slots in the file: it grows by a pool at a time, once the pool is
    /// synced.
    slots: AtomicU64,
    /// Keys made and synced, not yet handed out: their slots (held while a
    /// pool is made; readers never wait for it).
    pool: Mutex<std::ops::Range<u64>>,
    /// Pages of slots read, by page number.
    cache: Mutex<HashMap<u64, Vec<u8>>>,
    /// The size of the last pool made (0: none yet).
    pooled: AtomicU64,
}

/// A key handed out by [`Keys::take`].
pub(crate) struct Taken {
    pub(crate) slot: u64,
    pub(crate) key: Key,
    /// When it came from a new pool, the number of slots now in the file:
    /// the log records it before any record uses a key of the pool.
    pub(crate) made: Option<u64>,
}

fn io<'a>(path: &'a Path, what: &'a str) -> impl FnOnce(std::io::Error) -> StorageError + 'a {
    move |e| StorageError::io(format!("cannot {what} {}", path.display()), e)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Keys {
    /// Opens the key file in `dir`, creating it when absent and `may_create`
    /// is set (a ledger whose log names no key file). A key file present
    /// keeps what it holds; a torn last slot (a pool being made when the
    /// process ended, never handed out) is cut off.
    ///
    /// # Errors
    ///
    /// `Corrupt` when the file is missing (and may not be created) or is not
    /// a key file; `Io`.
    pub(crate) fn open(dir: &Path, may_create: bool) -> Result<Keys, StorageError> {
        let path = dir.join(FILE);
        if !path.exists() {
            if !may_create {
                return Err(StorageError::new(
                    ErrorKind::Corrupt,
                    format!(
                        "the payload key file {} is missing: the payloads of this ledger cannot be read without it (restore it from a backup of this data directory)",
                        path.display()
                    ),
                ));
            }
            let mut header = [0u8; HEADER as usize];
            header[..8].copy_from_slice(MAGIC);
            getrandom::getrandom(&mut header[8..24]).map_err(|e| {
                StorageError::new(
                    ErrorKind::Io,
                    format!("no random bytes for a key file: {e}"),
                )
            })?;
            let tmp = dir.join("keys.creating");
            let file = File::create(&tmp).map_err(io(&tmp, "create"))?;
            file.write_all_at(&header, 0).map_err(io(&tmp, "write"))?;
            file.sync_all().map_err(io(&tmp, "sync"))?;
            std::fs::rename(&tmp, &path).map_err(io(&path, "create"))?;
            sync_dir(dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path, "open"))?;
        let len = file.metadata().map_err(io(&path, "read"))?.len();
        let mut header = [0u8; HEADER as usize];
        if len < HEADER || file.read_exact_at(&mut header, 0).is_err() || &header[..8] != MAGIC {
            return Err(StorageError::new(
                ErrorKind::Corrupt,
                format!("{} is not a payload key file", path.display()),
            ));
        }
        let slots = (len - HEADER) / SLOT;
        if HEADER + slots * SLOT != len {
            file.set_len(HEADER + slots * SLOT)
                .and_then(|()| file.sync_all())
                .map_err(io(&path, "cut the torn end of"))?;
        }
        let id = header[8..24].try_into().expect("16 bytes");
        Ok(Keys {
            path,
            file,
            id,
            slots: AtomicU64::new(slots),
            pool: Mutex::new(slots..slots),
            cache: Mutex::default(),
            pooled: AtomicU64::new(0),
        })
    }

    /// The file's id (kept in the log, which checks it on open).
    pub(crate) fn id(&self) -> [u8; 16] {
        self.id
    }

    /// How many slots the file holds.
    pub(crate) fn len(&self) -> u64 {
        self.slots.load(Ordering::Acquire)
    }

    /// Where it is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A fresh key, durable in its slot.
    ///
    /// # Errors
    ///
    /// `Io` when new keys cannot be written or synced.
    pub(crate) fn take(&self) -> Result<Taken, StorageError> {
        let mut pool = lock(&self.pool);
        let mut made = None;
        if pool.is_empty() {
            let size = match self.pooled.load(Ordering::Relaxed) {
                0 => FIRST_POOL,
                last => (last * 2).min(LAST_POOL),
            };
            self.pooled.store(size, Ordering::Relaxed);
            let mut bytes = vec![0u8; (size * SLOT) as usize];
            getrandom::getrandom(&mut bytes).map_err(|e| {
                StorageError::new(ErrorKind::Io, format!("no random bytes for keys: {e}"))
            })?;
            let first = self.slots.load(Ordering::Acquire);
            self.file
                .write_all_at(&bytes, HEADER + first * SLOT)
                .and_then(|()| self.file.sync_data())
                .map_err(io(&self.path, "write keys to"))?;
            self.slots.store(first + size, Ordering::Release);
            *pool = first..first + size;
            made = Some(first + size);
        }
        let slot = pool.next().expect("a pool just filled");
        drop(pool);
        let key = self.read(slot)?.expect("a key just made");
        Ok(Taken { slot, key, made })
    }

    /// The key in `slot`: `None` once destroyed.
    ///
    /// # Errors
    ///
    /// `Corrupt` for a slot past the end of the file; `Io`.
    pub(crate) fn read(&self, slot: u64) -> Result<Option<Key>, StorageError> {
        let slots = self.slots.load(Ordering::Acquire);
        if slot >= slots {
            return Err(StorageError::new(
                ErrorKind::Corrupt,
                format!(
                    "payload key {slot} is past the end of {} ({slots} keys): the file was cut or replaced",
                    self.path.display(),
                ),
            ));
        }
        let page = slot / PAGE;
        let at = ((slot % PAGE) * SLOT) as usize;
        let mut cache = lock(&self.cache);
        // (The last page grows with each pool: read again when short.)
        if cache
            .get(&page)
            .is_none_or(|b| b.len() < at + SLOT as usize)
        {
            let first = page * PAGE;
            let count = PAGE.min(slots - first);
            let mut bytes = vec![0u8; (count * SLOT) as usize];
            self.file
                .read_exact_at(&mut bytes, HEADER + first * SLOT)
                .map_err(io(&self.path, "read"))?;
            if cache.len() >= CACHED_PAGES {
                cache.clear();
            }
            cache.insert(page, bytes);
        }
        let key: Key = cache[&page][at..at + SLOT as usize]
            .try_into()
            .expect("32 bytes");
        Ok((key != [0; 32]).then_some(key))
    }

    /// Destroys the keys in `slots`: overwrites each with zeros in place and
    /// syncs the file before returning. A slot past the end of the file
    /// holds no key (a damaged reference to one), and is passed over.
    ///
    /// # Errors
    ///
    /// `Io`.
    pub(crate) fn destroy(&self, slots: &[u64]) -> Result<(), StorageError> {
        if slots.is_empty() {
            return Ok(());
        }
        let end = self.slots.load(Ordering::Acquire);
        for &slot in slots {
            if slot >= end {
                tracing::warn!(slot, file = %self.path.display(), "no such payload key to destroy");
                continue;
            }
            self.file
                .write_all_at(&[0; SLOT as usize], HEADER + slot * SLOT)
                .map_err(io(&self.path, "destroy a key in"))?;
            lock(&self.cache).remove(&(slot / PAGE));
        }
        self.file.sync_data().map_err(io(&self.path, "sync"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_durable_distinct_and_destroyed_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::open(dir.path(), true).unwrap();
        let (a, ka) = keys.take().map(|t| (t.slot, t.key)).unwrap();
        let b = keys.take().unwrap();
        assert_eq!(b.made, None, "from the same pool");
        let (b, kb) = (b.slot, b.key);
        assert_eq!((a, b), (0, 1));
        assert_ne!(ka, kb);
        keys.destroy(&[a]).unwrap();
        assert_eq!(keys.read(a).unwrap(), None);
        assert_eq!(keys.read(b).unwrap(), Some(kb));
        let id = keys.id();
        drop(keys);
        // Reopened: the pool's unused keys stay unused, new ones follow.
        let keys = Keys::open(dir.path(), false).unwrap();
        assert_eq!(keys.id(), id);
        assert_eq!(keys.read(a).unwrap(), None);
        assert_eq!(keys.read(b).unwrap(), Some(kb));
        let next = keys.take().unwrap();
        assert_eq!((next.slot, next.made), (FIRST_POOL, Some(2 * FIRST_POOL)));
        // Pools grow as a process uses them, up to a bound.
        let mut made = vec![next.made.unwrap()];
        made.extend((0..20_000).filter_map(|_| keys.take().unwrap().made));
        let sizes: Vec<u64> = made.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(&sizes[..5], [128, 256, 512, 1024, 2048]);
        assert!(sizes.len() > 5, "{sizes:?}");
        assert!(sizes[5..].iter().all(|&n| n == LAST_POOL), "{sizes:?}");
        let raw = std::fs::read(dir.path().join(FILE)).unwrap();
        assert!(!raw.windows(32).any(|w| w == ka), "a destroyed key is gone");
        assert!(keys.read(keys.len()).is_err());
    }

    #[test]
    fn a_torn_end_is_cut_and_a_missing_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::open(dir.path(), true).unwrap();
        keys.take().unwrap();
        drop(keys);
        let path = dir.path().join(FILE);
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all_at(&[7; 5], len)
            .unwrap();
        let keys = Keys::open(dir.path(), false).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
        drop(keys);
        std::fs::remove_file(&path).unwrap();
        let err = Keys::open(dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("is missing"), "{err}");
    }
}
