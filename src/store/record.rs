//! The record format: how one event is stored, and the hash chain.
//!
//! A record is
//!
//! ```text
//! version: u8 (= 1) | prev: [u8; 32] | hash: [u8; 32] | event JSON
//! ```
//!
//! where `prev` is the hash of the record before it (zeros before seq 1) and
//! `hash` = BLAKE3(version ‖ seq as u64 big-endian ‖ prev ‖ JSON). The stored
//! `hash` lets a single record be checked on its own (a flipped byte is found
//! at its own seq); the `prev` links make the log a chain, so rewriting a
//! record — even with a recomputed hash — breaks the link stored in the next
//! one, and rewriting the last one disagrees with the checkpoint.
//!
//! An engine may store several consecutive records as one **block**:
//!
//! ```text
//! BLOCK: u8 (= 0x42) | count: u32 big-endian | count × (length: u32 big-endian | record)
//! ```
//!
//! keyed by the seq of its first record. Each record inside is a whole
//! record as above, with its own hash and link, so what a block holds is
//! checked exactly as if each record were stored alone; a block only saves
//! the engine its cost per stored entry. A stored value is a block when its
//! first byte is [`BLOCK`], else a single record.

use crate::error::{ErrorKind, StorageError};
use crate::event::Event;

/// The format version written by this build.
pub(crate) const FORMAT_VERSION: u8 = 1;
const HEADER: usize = 1 + 32 + 32;

/// The first byte of a block of records.
pub(crate) const BLOCK: u8 = 0x42;
/// A block's header: [`BLOCK`] and the number of records.
pub(crate) const BLOCK_HEADER: usize = 1 + 4;

/// A record's hash.
pub(crate) type Hash = [u8; 32];

/// The `prev` of the first record.
pub(crate) const GENESIS: Hash = [0; 32];

fn digest(seq: u64, prev: &Hash, json: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[FORMAT_VERSION]);
    h.update(&seq.to_be_bytes());
    h.update(prev);
    h.update(json);
    *h.finalize().as_bytes()
}

/// Encodes the record of `seq`; returns it with its hash.
pub(crate) fn encode(seq: u64, prev: &Hash, json: &[u8]) -> (Vec<u8>, Hash) {
    let mut out = Vec::with_capacity(HEADER + json.len());
    out.resize(HEADER, 0);
    out.extend_from_slice(json);
    let hash = seal(&mut out, seq, prev);
    (out, hash)
}

/// Fills in the header of a record whose JSON follows `HEADER` zero bytes.
fn seal(out: &mut [u8], seq: u64, prev: &Hash) -> Hash {
    let hash = digest(seq, prev, &out[HEADER..]);
    out[0] = FORMAT_VERSION;
    out[1..33].copy_from_slice(prev);
    out[33..HEADER].copy_from_slice(&hash);
    hash
}

/// Encodes the record of `event` (whose seq it takes), serializing its JSON
/// straight into the record's buffer; returns it with its hash. (sled
/// encodes records into blocks, [`BlockWriter`].)
#[cfg(any(feature = "postgres", test))]
pub(crate) fn encode_event(prev: &Hash, event: &crate::event::Event) -> (Vec<u8>, Hash) {
    // Most events fit: one allocation, no growing.
    let mut out = Vec::with_capacity(HEADER + 512);
    out.resize(HEADER, 0);
    serde_json::to_writer(&mut out, event).expect("events always serialize");
    let hash = seal(&mut out, event.seq, prev);
    (out, hash)
}

/// Writes blocks: records are encoded straight into the block's buffer.
#[derive(Debug, Default)]
pub(crate) struct BlockWriter {
    buf: Vec<u8>,
    count: u32,
    /// Where each record is in `buf`.
    ranges: Vec<std::ops::Range<usize>>,
}

/// A block's stored value, and where each of its records is in it.
pub(crate) type Block = (Vec<u8>, Vec<std::ops::Range<usize>>);

impl BlockWriter {
    /// Appends the record of `event` (whose seq it takes) after `prev`;
    /// returns its hash.
    pub(crate) fn push_event(&mut self, prev: &Hash, event: &Event) -> Hash {
        if self.count == 0 {
            self.buf.clear();
            self.buf.push(BLOCK);
            self.buf.extend_from_slice(&[0; 4]);
        }
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        let start = self.buf.len();
        self.buf.resize(start + HEADER, 0);
        serde_json::to_writer(&mut self.buf, event).expect("events always serialize");
        let hash = seal(&mut self.buf[start..], event.seq, prev);
        let len = u32::try_from(self.buf.len() - start).expect("a record is under 4 GiB");
        self.buf[at..start].copy_from_slice(&len.to_be_bytes());
        self.ranges.push(start..self.buf.len());
        self.count += 1;
        hash
    }

    /// The `i`th record it holds.
    pub(crate) fn record(&self, i: usize) -> Option<&[u8]> {
        self.ranges.get(i).map(|r| &self.buf[r.clone()])
    }

    /// How many records it holds.
    pub(crate) fn len(&self) -> u32 {
        self.count
    }

    /// How many bytes it holds.
    pub(crate) fn bytes(&self) -> usize {
        if self.count == 0 {
            0
        } else {
            self.buf.len()
        }
    }

    /// The stored value of what it holds (a single record stays a plain
    /// record) and where its records are, leaving it empty; `None` when it
    /// holds nothing.
    pub(crate) fn take(&mut self) -> Option<Block> {
        let count = std::mem::take(&mut self.count);
        let ranges = std::mem::take(&mut self.ranges);
        match count {
            0 => None,
            1 => {
                let mut record = std::mem::take(&mut self.buf);
                record.drain(..BLOCK_HEADER + 4);
                let len = record.len();
                Some((record, std::iter::once(0..len).collect()))
            }
            n => {
                self.buf[1..BLOCK_HEADER].copy_from_slice(&n.to_be_bytes());
                Some((std::mem::take(&mut self.buf), ranges))
            }
        }
    }
}

/// The records of the value stored under seq `first`: for each, its seq
/// and where its bytes are in `bytes` (one record, unless `bytes` is a
/// block). A malformed block is `Corrupt` at the seq of the first record it
/// cannot delimit (a header that cannot be read: at `first`); the records
/// themselves are checked by [`decode`].
///
/// # Errors
///
/// `Corrupt`.
pub(crate) fn split(
    first: u64,
    bytes: &[u8],
) -> Result<Vec<(u64, std::ops::Range<usize>)>, StorageError> {
    if bytes.first() != Some(&BLOCK) {
        return Ok(vec![(first, 0..bytes.len())]);
    }
    let word = |at: usize| -> Option<usize> {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_be_bytes(b) as usize)
    };
    let count = word(1)
        .filter(|&n| n >= 1)
        .ok_or_else(|| StorageError::corrupt(first, "block header is malformed"))?;
    let mut out = Vec::with_capacity(count.min(bytes.len() / (4 + HEADER)));
    let mut at = BLOCK_HEADER;
    for seq in (first..).take(count) {
        if at == bytes.len() {
            return Err(StorageError::corrupt(
                seq,
                format!(
                    "block of seq {first} says it holds {count} records but ends after {}: seq {seq} is missing",
                    seq - first
                ),
            ));
        }
        let len = word(at).filter(|&len| bytes.len() - at - 4 >= len);
        let Some(len) = len else {
            return Err(StorageError::corrupt(
                seq,
                format!(
                    "block of seq {first} ends inside the record of seq {seq} ({} bytes)",
                    bytes.len()
                ),
            ));
        };
        out.push((seq, at + 4..at + 4 + len));
        at += 4 + len;
    }
    if at != bytes.len() {
        let after = first + count as u64;
        return Err(StorageError::corrupt(
            after,
            format!(
                "block of seq {first} holds {} bytes after its last record, where seq {after} would be",
                bytes.len() - at
            ),
        ));
    }
    Ok(out)
}

/// How many records the value stored under seq `first` holds.
///
/// # Errors
///
/// `Corrupt`, as [`split`].
pub(crate) fn count(first: u64, bytes: &[u8]) -> Result<u64, StorageError> {
    if bytes.first() != Some(&BLOCK) {
        return Ok(1);
    }
    Ok(split(first, bytes)?.len() as u64)
}

/// A decoded record, borrowing the stored bytes.
#[derive(Debug)]
pub(crate) struct Record<'a> {
    pub(crate) prev: Hash,
    pub(crate) hash: Hash,
    pub(crate) json: &'a [u8],
}

/// Decodes and checks the record stored at `seq`: its version, and that its
/// content matches its stored hash.
///
/// # Errors
///
/// `UnsupportedVersion` or `Corrupt`, at `seq`.
pub(crate) fn decode(seq: u64, bytes: &[u8]) -> Result<Record<'_>, StorageError> {
    if bytes.len() < HEADER {
        return Err(StorageError::corrupt(
            seq,
            format!(
                "record is {} bytes, shorter than its {HEADER}-byte header",
                bytes.len()
            ),
        ));
    }
    if bytes[0] != FORMAT_VERSION {
        return Err(StorageError::new(
            ErrorKind::UnsupportedVersion,
            format!(
                "record at seq {seq} has format version {}; this build reads version {FORMAT_VERSION}",
                bytes[0]
            ),
        )
        .at_seq(seq));
    }
    let prev: Hash = bytes[1..33].try_into().expect("32 bytes");
    let hash: Hash = bytes[33..65].try_into().expect("32 bytes");
    let json = &bytes[HEADER..];
    if digest(seq, &prev, json) != hash {
        return Err(StorageError::corrupt(
            seq,
            "record content does not match its hash",
        ));
    }
    Ok(Record { prev, hash, json })
}

/// Decodes the record stored at `seq` and the event it holds, checking that
/// the event names the same seq.
///
/// # Errors
///
/// `Corrupt` or `UnsupportedVersion` at `seq`.
pub(crate) fn decode_event(seq: u64, bytes: &[u8]) -> Result<(Event, Record<'_>), StorageError> {
    let record = decode(seq, bytes)?;
    Ok((parse_event(seq, record.json)?, record))
}

/// The event in the JSON of a record already checked by [`decode`].
///
/// # Errors
///
/// `Corrupt` at `seq`.
pub(crate) fn parse_event(seq: u64, json: &[u8]) -> Result<Event, StorageError> {
    let event: Event = serde_json::from_slice(json)
        .map_err(|e| StorageError::corrupt(seq, format!("event does not decode: {e}")))?;
    if event.seq != seq {
        return Err(StorageError::corrupt(
            seq,
            format!("record holds the event of seq {}", event.seq),
        ));
    }
    Ok(event)
}

/// The JSON of a record already checked by [`decode`].
pub(crate) fn json_of(bytes: &[u8]) -> &[u8] {
    &bytes[HEADER..]
}

/// Record `seq` is intact on its own but does not chain to the record
/// before it: that one was rewritten (or, at seq 1, the chain's start).
pub(crate) fn broken_link(seq: u64) -> StorageError {
    match seq {
        1 => StorageError::corrupt(1, "the first record does not start the hash chain"),
        _ => StorageError::corrupt(
            seq - 1,
            format!("record was rewritten: seq {seq} chains to a different record"),
        ),
    }
}

/// A hash as lower-case hex.
pub(crate) fn hex(hash: &Hash) -> String {
    use std::fmt::Write;
    hash.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A hash from 64 hex digits.
pub(crate) fn from_hex(s: &str) -> Option<Hash> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_chain() {
        let (r1, h1) = encode(1, &GENESIS, b"{\"a\":1}");
        let (r2, h2) = encode(2, &h1, b"{\"b\":2}");
        let d1 = decode(1, &r1).unwrap();
        let d2 = decode(2, &r2).unwrap();
        assert_eq!(d1.hash, h1);
        assert_eq!(d2.prev, h1);
        assert_eq!(d2.hash, h2);
        assert_eq!(d2.json, b"{\"b\":2}");
        assert_eq!(from_hex(&hex(&h2)), Some(h2));
    }

    #[test]
    fn every_single_byte_flip_is_detected_at_its_seq() {
        let (r, _) = encode(9, &GENESIS, b"{\"type\":\"released\"}");
        for i in 0..r.len() {
            let mut bad = r.clone();
            bad[i] ^= 0x01;
            let err = decode(9, &bad).unwrap_err();
            assert_eq!(err.seq(), Some(9), "flip at byte {i}");
        }
        // The same bytes under another seq do not verify either.
        assert!(decode(10, &r).is_err());
    }

    fn event(seq: u64) -> Event {
        Event {
            seq,
            at: chrono::DateTime::UNIX_EPOCH,
            execution_id: crate::execution::ExecutionId::new(),
            tenant_id: "acme".parse().unwrap(),
            kind: crate::event::EventKind::Released,
        }
    }

    #[test]
    fn a_block_holds_whole_records_each_checked_and_linked_as_alone() {
        let mut w = BlockWriter::default();
        assert_eq!(w.take(), None);
        // One record is stored as a plain record.
        let one = event(1);
        let h1 = w.push_event(&GENESIS, &one);
        let stored = encode_event(&GENESIS, &one).0;
        let len = stored.len();
        let whole: Vec<_> = std::iter::once(0..len).collect();
        assert_eq!(w.take(), Some((stored, whole)));
        assert_eq!(decode(1, &encode_event(&GENESIS, &one).0).unwrap().hash, h1);
        let mut prev = GENESIS;
        let events: Vec<Event> = (5..9).map(event).collect();
        let mut hashes = Vec::new();
        for e in &events {
            prev = w.push_event(&prev, e);
            hashes.push(prev);
        }
        assert_eq!(w.len(), 4);
        assert_eq!(
            w.record(1).map(|r| decode(6, r).unwrap().hash),
            Some(hashes[1])
        );
        let (block, ranges) = w.take().unwrap();
        assert_eq!(block[0], BLOCK);
        let parts = split(5, &block).unwrap();
        assert_eq!(parts.iter().map(|p| p.0).collect::<Vec<_>>(), [5, 6, 7, 8]);
        assert_eq!(
            parts.iter().map(|p| p.1.clone()).collect::<Vec<_>>(),
            ranges
        );
        let mut link = GENESIS;
        for ((seq, range), hash) in parts.into_iter().zip(hashes) {
            let (e, r) = decode_event(seq, &block[range.clone()]).unwrap();
            assert_eq!(e.seq, seq);
            assert_eq!((r.prev, r.hash), (link, hash));
            // The same bytes as the record stored alone.
            assert_eq!(&block[range], encode_event(&link, &e).0.as_slice());
            link = hash;
        }
        assert_eq!(count(5, &block).unwrap(), 4);
        // Every flipped byte of a block is found, at a seq inside it.
        for i in 0..block.len() {
            let mut bad = block.clone();
            bad[i] ^= 0x01;
            let found = split(5, &bad).and_then(|parts| {
                parts
                    .into_iter()
                    .try_for_each(|(seq, r)| decode(seq, &bad[r]).map(|_| ()))
            });
            let e = found.expect_err("every flip is found");
            // Inside the block, or (a count raised) the seq it lacks.
            assert!((5..=9).contains(&e.seq().unwrap()), "flip at {i}: {e}");
        }
        // Cut short: found at the seq whose record it ends inside.
        let err = split(5, &block[..block.len() - 3]).unwrap_err();
        assert_eq!(err.seq(), Some(8));
        assert!(split(5, &[BLOCK, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn short_and_unknown_version_records_are_named() {
        assert_eq!(decode(3, &[1, 2]).unwrap_err().kind(), ErrorKind::Corrupt);
        let (mut r, _) = encode(3, &GENESIS, b"{}");
        r[0] = 9;
        let err = decode(3, &r).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnsupportedVersion);
        assert!(err.to_string().contains("format version 9"));
    }
}
