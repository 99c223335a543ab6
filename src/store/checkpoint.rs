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
//! `magic ‖ seq ‖ hash ‖ check`, so a write torn by a crash leaves the other
//! slot intact; the valid slot with the higher seq wins.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::record::Hash;
use crate::error::Error;

const MAGIC: &[u8; 4] = b"ELCP";
const SLOT: usize = 64;

/// The checkpoint file, open for writing.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    file: File,
    next_slot: u64,
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

/// Reads the (seq, hash) the checkpoint at `path` records, if any.
pub(crate) fn read(path: &Path) -> Result<Option<(u64, Hash)>, Error> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
    };
    Ok(bytes
        .chunks(SLOT)
        .filter_map(parse)
        .max_by_key(|(seq, _)| *seq))
}

impl Checkpoint {
    /// Opens (creating when absent) the checkpoint at `path`; returns it with
    /// the (seq, hash) it records, if any.
    pub(crate) fn open(path: &Path) -> Result<(Checkpoint, Option<(u64, Hash)>), Error> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        let mut buf = vec![0u8; 2 * SLOT];
        let len = file
            .read_at(&mut buf, 0)
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        buf.truncate(len);
        let slots: Vec<Option<(u64, Hash)>> = buf.chunks(SLOT).map(parse).collect();
        let best = slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.map(|s| (i, s)))
            .max_by_key(|(_, (seq, _))| *seq);
        let next_slot = best.map_or(0, |(i, _)| (i as u64 + 1) % 2);
        if !existed {
            if let Some(dir) = path.parent() {
                sync_dir(dir)?;
            }
        }
        Ok((Checkpoint { file, next_slot }, best.map(|(_, s)| s)))
    }

    /// Records (seq, hash), syncing the file when `sync` is set.
    pub(crate) fn write(&mut self, seq: u64, hash: &Hash, sync: bool) -> Result<(), Error> {
        let mut slot = [0u8; SLOT];
        slot[..4].copy_from_slice(MAGIC);
        slot[4..12].copy_from_slice(&seq.to_be_bytes());
        slot[12..44].copy_from_slice(hash);
        let c = check(&slot[..44]);
        slot[44..52].copy_from_slice(&c);
        self.file
            .write_all_at(&slot, self.next_slot * SLOT as u64)
            .map_err(|e| Error::io("cannot write the checkpoint", e))?;
        if sync {
            self.file
                .sync_data()
                .map_err(|e| Error::io("cannot sync the checkpoint", e))?;
        }
        self.next_slot = (self.next_slot + 1) % 2;
        Ok(())
    }
}

/// fsyncs a directory, so that a file created in it survives a power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("cannot sync {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_intact_slot_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint");
        let (mut c, none) = Checkpoint::open(&path).unwrap();
        assert_eq!(none, None);
        c.write(1, &[1; 32], true).unwrap();
        c.write(2, &[2; 32], true).unwrap();
        c.write(3, &[3; 32], true).unwrap();
        drop(c);
        let (mut c, got) = Checkpoint::open(&path).unwrap();
        assert_eq!(got, Some((3, [3; 32])));
        // Tear the slot that holds seq 3: seq 2 is still there.
        c.write(4, &[4; 32], false).unwrap(); // slot of seq 2
        let bytes = std::fs::read(&path).unwrap();
        let mut torn = bytes.clone();
        torn[SLOT + 10] ^= 0xff; // the slot holding seq 4 or 3
        std::fs::write(&path, &torn).unwrap();
        let (_, got) = Checkpoint::open(&path).unwrap();
        assert!(matches!(got, Some((3, _)) | Some((4, _))));
        let (a, b) = (parse(&torn[..SLOT]), parse(&torn[SLOT..]));
        assert!(a.is_some() != b.is_some(), "exactly one slot was torn");
    }
}
