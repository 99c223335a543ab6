//! The checkpoint: the last (seq, hash) known to be durable, kept outside
//! sled.
//!
//! sled treats a torn or damaged tail of its own log as the end of the log
//! and drops it without an error. The checkpoint lets the ledger notice when
//! that drops acknowledged events: on open, a log that ends before the
//! checkpoint's seq is a lost suffix, and a record at that seq whose hash
//! differs was rewritten.
//!
//! The file holds two 64-byte slots written alternately in place, each
//! `magic ‖ seq ‖ hash ‖ check`; the slot with the higher seq wins. It is
//! created whole (both slots, renamed into place). A missing checkpoint
//! beside a non-empty log, or a damaged one, is reported, never silently
//! rewritten: without it a lost tail goes unnoticed. The operator accepts
//! the log as it is explicitly (`LedgerBuilder::accept_tail`, `ledger
//! verify --accept-tail`), which is recorded in `checkpoint.accepted`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::record::Hash;
use crate::error::StorageError;

const MAGIC: &[u8; 4] = b"ELCP";
const SLOT: usize = 64;

/// The checkpoint file, open for writing.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    file: File,
    next_slot: u64,
}

/// What a checkpoint file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Stored {
    /// There is none.
    Missing,
    /// Both slots are whole; the newer one's (seq, hash).
    Intact(u64, Hash),
    /// The file is damaged: what is wrong ("slot 2 of 2 fails its check"),
    /// and the highest seq a whole slot still records, if any.
    Damaged(String, Option<u64>),
}

impl Stored {
    /// The highest seq the checkpoint records (0 when none).
    pub(crate) fn claims(&self) -> u64 {
        match self {
            Stored::Missing => 0,
            Stored::Intact(seq, _) => *seq,
            Stored::Damaged(_, seq) => seq.unwrap_or(0),
        }
    }
}

fn check(body: &[u8]) -> [u8; 8] {
    blake3::hash(body).as_bytes()[..8]
        .try_into()
        .expect("8 bytes")
}

fn parse(slot: &[u8]) -> Option<(u64, Hash)> {
    if slot.len() < 52 || &slot[..4] != MAGIC || slot[44..52] != check(&slot[..44]) {
        return None;
    }
    let seq = u64::from_be_bytes(slot[4..12].try_into().ok()?);
    let hash: Hash = slot[12..44].try_into().ok()?;
    Some((seq, hash))
}

fn encode(seq: u64, hash: &Hash) -> [u8; SLOT] {
    let mut slot = [0u8; SLOT];
    slot[..4].copy_from_slice(MAGIC);
    slot[4..12].copy_from_slice(&seq.to_be_bytes());
    slot[12..44].copy_from_slice(hash);
    let c = check(&slot[..44]);
    slot[44..52].copy_from_slice(&c);
    slot
}

/// Reads what the checkpoint at `path` holds. A whole checkpoint is two
/// slots that each pass their check. A slot is written in place by one
/// 64-byte write within the file's first disk sector, which a process crash
/// does not tear (nor a power loss, on a disk that writes sectors whole);
/// so a file of another length or a slot that fails its check is damage.
pub(crate) fn read(path: &Path) -> Result<Stored, StorageError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Stored::Missing),
        Err(e) => {
            return Err(StorageError::io(
                format!("cannot read {}", path.display()),
                e,
            ))
        }
    };
    let slots: Vec<Option<(u64, Hash)>> = bytes.chunks(SLOT).map(parse).collect();
    let newest = slots.iter().flatten().max_by_key(|(seq, _)| *seq).copied();
    let wrong = if bytes.len() != 2 * SLOT {
        format!("{} bytes long instead of {}", bytes.len(), 2 * SLOT)
    } else {
        match (newest, slots.iter().position(Option::is_none)) {
            (Some((seq, hash)), None) => return Ok(Stored::Intact(seq, hash)),
            (Some(_), Some(i)) => format!("slot {} of 2 fails its check", i + 1),
            (None, _) => "both slots fail their check".to_owned(),
        }
    };
    Ok(Stored::Damaged(wrong, newest.map(|(seq, _)| seq)))
}

impl Checkpoint {
    /// Opens the whole checkpoint at `path` for writing: the next write goes
    /// to the older slot.
    pub(crate) fn open(path: &Path) -> Result<Checkpoint, StorageError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| StorageError::io(format!("cannot open {}", path.display()), e))?;
        let mut buf = [0u8; 2 * SLOT];
        let len = file
            .read_at(&mut buf, 0)
            .map_err(|e| StorageError::io(format!("cannot read {}", path.display()), e))?;
        let newest = buf[..len]
            .chunks(SLOT)
            .enumerate()
            .filter_map(|(i, s)| parse(s).map(|(seq, _)| (i, seq)))
            .max_by_key(|(_, seq)| *seq);
        let next_slot = newest.map_or(0, |(i, _)| (i as u64 + 1) % 2);
        Ok(Checkpoint { file, next_slot })
    }

    /// Makes a new checkpoint at `path` recording (seq, hash) in both
    /// slots, in one step: written to a temporary file, synced, and renamed
    /// over `path`, so that `path` is whole or absent (or as it was).
    pub(crate) fn create(path: &Path, seq: u64, hash: &Hash) -> Result<Checkpoint, StorageError> {
        let mut name = path.as_os_str().to_owned();
        name.push(".new");
        let tmp = std::path::PathBuf::from(name);
        let slot = encode(seq, hash);
        let mut bytes = slot.to_vec();
        bytes.extend_from_slice(&slot);
        let written = File::create(&tmp)
            .and_then(|f| f.write_all_at(&bytes, 0).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, path));
        written.map_err(|e| StorageError::io(format!("cannot write {}", path.display()), e))?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        Checkpoint::open(path)
    }

    /// Records (seq, hash), syncing the file when `sync` is set.
    pub(crate) fn write(&mut self, seq: u64, hash: &Hash, sync: bool) -> Result<(), StorageError> {
        let slot = encode(seq, hash);
        self.file
            .write_all_at(&slot, self.next_slot * SLOT as u64)
            .map_err(|e| StorageError::io("cannot write the checkpoint", e))?;
        if sync {
            self.file
                .sync_data()
                .map_err(|e| StorageError::io("cannot sync the checkpoint", e))?;
        }
        self.next_slot = (self.next_slot + 1) % 2;
        Ok(())
    }
}

/// fsyncs a directory, so that a file created in it survives a power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(format!("cannot sync {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_slot_wins_and_a_damaged_one_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint");
        assert_eq!(read(&path).unwrap(), Stored::Missing);
        let mut c = Checkpoint::create(&path, 0, &[0; 32]).unwrap();
        assert_eq!(read(&path).unwrap(), Stored::Intact(0, [0; 32]));
        c.write(1, &[1; 32], true).unwrap();
        c.write(2, &[2; 32], true).unwrap();
        c.write(3, &[3; 32], true).unwrap();
        drop(c);
        assert_eq!(read(&path).unwrap(), Stored::Intact(3, [3; 32]));
        let mut c = Checkpoint::open(&path).unwrap();
        c.write(4, &[4; 32], true).unwrap(); // over seq 2
        assert_eq!(read(&path).unwrap(), Stored::Intact(4, [4; 32]));
        let bytes = std::fs::read(&path).unwrap();
        let mut torn = bytes.clone();
        torn[SLOT + 10] ^= 0xff;
        std::fs::write(&path, &torn).unwrap();
        assert!(matches!(
            read(&path).unwrap(),
            Stored::Damaged(_, Some(3 | 4))
        ));
        std::fs::write(&path, &bytes[..SLOT]).unwrap();
        assert!(matches!(
            read(&path).unwrap(),
            Stored::Damaged(_, Some(3 | 4))
        ));
    }
}
