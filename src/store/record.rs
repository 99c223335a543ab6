//! The record format: how one event is stored, and the hash chain.
//!
//! A record (format version 2, written since payloads can be redacted) is
//!
//! ```text
//! version: u8 (= 2) | prev: [u8; 32] | hash: [u8; 32]
//!   | n: u32 | n × digest: [u8; 32] | length: u32 | skeleton JSON     (hashed)
//!   | n × (salt: [u8; 16] | length: u32 | payload JSON)               (redactable)
//! ```
//!
//! where `prev` is the hash of the record before it (zeros before seq 1) and
//! `hash` = BLAKE3(version ‖ seq as u64 big-endian ‖ prev ‖ the hashed
//! part). The **payloads** are the event's fields that carry a caller's data
//! (an input, an output, context and metadata values, error messages and
//! details, reasons: [`slots`] names them); the **skeleton** is the event's
//! JSON with each of them replaced by `"[redacted]"`, and the hashed part
//! holds, for each, the digest BLAKE3(salt ‖ payload JSON) under a salt of
//! its own, stored beside the payload. A redacted record is the same record
//! without its payloads and salts: its hash, its link and every digest stay,
//! so the chain verifies as before, while the salt — deleted with the value
//! — keeps a short value from being guessed back from its digest.
//!
//! Where stale copies of what it rewrites linger in its files (sled), an
//! engine writes format version 3 instead: the same record with the key
//! that encrypts its payloads named in the hashed part, and the payloads
//! and salts encrypted (ChaCha20, under a key of this record's own, kept
//! apart from the log where it can really be deleted):
//!
//! ```text
//! version: u8 (= 3) | prev | hash
//!   | key: u64 | n | n × digest | length | skeleton JSON              (hashed)
//!   | encrypted: n × (salt | length | payload JSON)                  (redactable)
//! ```
//!
//! The engine decrypts the payloads as it reads the record ([`unseal`]): a
//! record read from a store holds them in the clear, and one whose key was
//! destroyed reads as redacted. Everything else here reads formats 2 and 3
//! alike.
//!
//! Format version 1 (ledgers written before) is read as it was written:
//!
//! ```text
//! version: u8 (= 1) | prev: [u8; 32] | hash: [u8; 32] | event JSON
//! ```
//!
//! hashed the same way over the JSON. Its payloads cannot be redacted.
//!
//! The stored `hash` lets a single record be checked on its own (a flipped
//! byte is found at its own seq, in the skeleton by the hash, in a payload
//! by its digest); the `prev` links make the log a chain, so rewriting a
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
use crate::event::{Control, Entry, Event};

/// The format of records whose payloads are stored in the clear.
pub(crate) const FORMAT_V2: u8 = 2;
/// The format of records whose payloads are stored encrypted.
pub(crate) const FORMAT_SEALED: u8 = 3;
/// The format of ledgers written before payloads could be redacted.
pub(crate) const FORMAT_V1: u8 = 1;
const HEADER: usize = 1 + 32 + 32;
const SALT: usize = 16;

/// What a redacted payload reads as.
pub const REDACTED: &str = "[redacted]";

/// The first byte of a block of records.
pub(crate) const BLOCK: u8 = 0x42;
/// A block's header: [`BLOCK`] and the number of records.
pub(crate) const BLOCK_HEADER: usize = 1 + 4;

/// A record's hash.
pub(crate) type Hash = [u8; 32];

/// A key that encrypts one record's payloads.
pub(crate) type Key = [u8; 32];

/// The `prev` of the first record.
pub(crate) const GENESIS: Hash = [0; 32];

fn digest(version: u8, seq: u64, prev: &Hash, hashed: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[version]);
    h.update(&seq.to_be_bytes());
    h.update(prev);
    h.update(hashed);
    *h.finalize().as_bytes()
}

fn payload_digest(salt: &[u8], payload: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(salt);
    h.update(payload);
    *h.finalize().as_bytes()
}

/// A fresh salt: BLAKE3 keyed with this thread's random key, over a
/// counter (a keyed BLAKE3 is a pseudo-random function, so salts are
/// unpredictable without the key, which is never stored).
fn salt() -> [u8; SALT] {
    use std::cell::RefCell;
    thread_local! {
        static SALTS: RefCell<(blake3::Hasher, u64)> = RefCell::new({
            let mut key = [0u8; 32];
            getrandom::getrandom(&mut key).expect("the operating system gives random bytes");
            (blake3::Hasher::new_keyed(&key), 0)
        });
    }
    SALTS.with(|s| {
        let (hasher, n) = &mut *s.borrow_mut();
        *n += 1;
        let mut h = hasher.clone();
        h.update(&n.to_be_bytes());
        let mut out = [0u8; SALT];
        out.copy_from_slice(&h.finalize().as_bytes()[..SALT]);
        out
    })
}

/// Encodes a format-1 record of `seq` holding `json` (ledgers written
/// before format 2 hold these; tests and the fuzz targets write them);
/// returns it with its hash.
pub(crate) fn encode_v1(seq: u64, prev: &Hash, json: &[u8]) -> (Vec<u8>, Hash) {
    let mut out = Vec::with_capacity(HEADER + json.len());
    out.resize(HEADER, 0);
    out.extend_from_slice(json);
    let hash = digest(FORMAT_V1, seq, prev, json);
    out[0] = FORMAT_V1;
    out[1..33].copy_from_slice(prev);
    out[33..HEADER].copy_from_slice(&hash);
    (out, hash)
}

/// Calls `each` with every payload of the event JSON `value` (a record's
/// redactable fields), in a fixed order: the order of the digests.
pub(crate) fn slots(value: &mut serde_json::Value, mut each: impl FnMut(&mut serde_json::Value)) {
    use serde_json::Value;
    let Value::Object(event) = value else { return };
    let kind = event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let kind = kind.as_str();
    let fields: &[&str] = match kind {
        "queued" => &["input", "context", "metadata"],
        "completed" => &["output"],
        "failed" | "retry_scheduled" | "target_binding_applied" => &["error"],
        "cancelled" => &["reason"],
        "callback_failed" => &["error"],
        _ => &[],
    };
    for &field in fields {
        let Some(v) = event.get_mut(field) else {
            continue;
        };
        match (field, kind) {
            // Maps: each value is a payload; the keys are not.
            ("context" | "metadata", _) => {
                if let Value::Object(map) = v {
                    map.values_mut().for_each(&mut each);
                } else {
                    each(v);
                }
            }
            // An execution error: its message and details; its code is not.
            ("error", k) if k != "callback_failed" => {
                if let Value::Object(error) = v {
                    for part in ["message", "details"] {
                        if let Some(p) = error.get_mut(part) {
                            each(p);
                        }
                    }
                } else {
                    each(v);
                }
            }
            _ => each(v),
        }
    }
}

/// `submission` as the record of a redacted submission holds it, each
/// payload `"[redacted]"` (to tell whether a submission is the one a
/// redacted execution was submitted with).
pub(crate) fn redacted_submission(submission: &crate::Submission) -> serde_json::Value {
    let mut value = serde_json::to_value(submission).expect("submissions always serialize");
    if let serde_json::Value::Object(fields) = &mut value {
        fields.insert("type".into(), "queued".into());
    }
    slots(&mut value, |slot| {
        *slot = serde_json::Value::String(REDACTED.into())
    });
    value
}

/// Whether an event of this kind may carry a payload (others are written
/// without going through a JSON tree).
pub(crate) fn may_carry(kind: &crate::event::EventKind) -> bool {
    use crate::event::EventKind as K;
    match kind {
        K::Queued(s) => s.input.is_some() || s.context.is_some() || s.metadata.is_some(),
        K::Completed { .. }
        | K::Failed { .. }
        | K::RetryScheduled { .. }
        | K::CallbackFailed { .. } => true,
        K::Cancelled { reason } => reason.is_some(),
        K::TargetBindingApplied { error, .. } => error.is_some(),
        _ => false,
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    let n = u32::try_from(n).expect("a record part is under 4 GiB");
    out.extend_from_slice(&n.to_be_bytes());
}

/// Encrypts (or decrypts) `data` under `key`. Each key encrypts one
/// record's payloads only, so the nonce is fixed.
fn keystream(key: &Key, data: &mut [u8]) {
    use chacha20::cipher::{KeyIvInit, StreamCipher};
    let mut cipher = chacha20::ChaCha20::new(key.into(), &Default::default());
    cipher.apply_keystream(data);
}

/// Writes the record of `event` (whose seq it takes) after `prev` at the end
/// of `out`, its payloads encrypted under `key` (in its slot) when one is
/// given (format 3); returns its hash.
fn write_record(out: &mut Vec<u8>, prev: &Hash, event: &Event, key: Option<(u64, &Key)>) -> Hash {
    let start = out.len();
    out.resize(start + HEADER, 0);
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    if may_carry(&event.kind) {
        let mut value = serde_json::to_value(event).expect("events always serialize");
        slots(&mut value, |slot| {
            let old = std::mem::replace(slot, serde_json::Value::String(REDACTED.into()));
            payloads.push(serde_json::to_vec(&old).expect("JSON always serializes"));
        });
        let salts: Vec<[u8; SALT]> = payloads.iter().map(|_| salt()).collect();
        let key = key.filter(|_| !payloads.is_empty());
        if let Some((slot, _)) = key {
            out.extend_from_slice(&slot.to_be_bytes());
        }
        put_u32(out, payloads.len());
        for (salt, payload) in salts.iter().zip(&payloads) {
            out.extend_from_slice(&payload_digest(salt, payload));
        }
        let at = out.len();
        put_u32(out, 0);
        serde_json::to_writer(&mut *out, &value).expect("JSON always serializes");
        let len = out.len() - at - 4;
        out[at..at + 4].copy_from_slice(&(len as u32).to_be_bytes());
        let hashed_end = out.len();
        for (salt, payload) in salts.iter().zip(&payloads) {
            out.extend_from_slice(salt);
            put_u32(out, payload.len());
            out.extend_from_slice(payload);
        }
        let version = match key {
            Some((_, key)) => {
                keystream(key, &mut out[hashed_end..]);
                FORMAT_SEALED
            }
            None => FORMAT_V2,
        };
        seal(out, start, hashed_end, event.seq, prev, version)
    } else {
        write_plain(out, start, prev, event.seq, event)
    }
}

/// Writes the rest of a record without payloads (format 2), begun at
/// `out[start..]` with room for its header, whose skeleton is `json`'s
/// JSON; returns its hash.
fn write_plain(
    out: &mut Vec<u8>,
    start: usize,
    prev: &Hash,
    seq: u64,
    json: &impl serde::Serialize,
) -> Hash {
    put_u32(out, 0);
    let at = out.len();
    put_u32(out, 0);
    serde_json::to_writer(&mut *out, json).expect("entries always serialize");
    let len = out.len() - at - 4;
    out[at..at + 4].copy_from_slice(&(len as u32).to_be_bytes());
    let end = out.len();
    seal(out, start, end, seq, prev, FORMAT_V2)
}

/// Writes the record of the control entry `control` (whose seq it takes)
/// after `prev` at the end of `out`: format 2, without payloads (what it
/// records is the operator's, about no execution); returns its hash.
fn write_control(out: &mut Vec<u8>, prev: &Hash, control: &Control) -> Hash {
    let start = out.len();
    out.resize(start + HEADER, 0);
    write_plain(out, start, prev, control.seq, control)
}

/// Encodes the record of a control entry ([`write_control`]); returns it
/// with its hash.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))] // the PostgreSQL engine's
pub(crate) fn encode_control(prev: &Hash, control: &Control) -> (Vec<u8>, Hash) {
    let mut out = Vec::with_capacity(HEADER + 256);
    let hash = write_control(&mut out, prev, control);
    (out, hash)
}

/// Fills in the header of the record at `out[start..]` whose hashed part
/// ends at `hashed_end`.
fn seal(
    out: &mut [u8],
    start: usize,
    hashed_end: usize,
    seq: u64,
    prev: &Hash,
    version: u8,
) -> Hash {
    let hash = digest(version, seq, prev, &out[start + HEADER..hashed_end]);
    out[start] = version;
    out[start + 1..start + 33].copy_from_slice(prev);
    out[start + 33..start + HEADER].copy_from_slice(&hash);
    hash
}

/// Encodes the record of `event` (whose seq it takes), its payloads in the
/// clear (format 2), or encrypted under `key` in its slot (format 3);
/// returns it with its hash. (sled encodes records into blocks,
/// [`BlockWriter`].)
pub(crate) fn encode_event(
    prev: &Hash,
    event: &crate::event::Event,
    key: Option<(u64, &Key)>,
) -> (Vec<u8>, Hash) {
    // Most events fit: one allocation, no growing.
    let mut out = Vec::with_capacity(HEADER + 512);
    let hash = write_record(&mut out, prev, event, key);
    (out, hash)
}

/// The key slot a record written elsewhere needs here (an import): the
/// one a format-3 record names, when it holds its payloads (read in the
/// clear, as [`unseal`] leaves them). `None` for any other record.
pub(crate) fn copied_slot(readable: &[u8]) -> Option<u64> {
    is_sealed(readable).then(|| key_slot(readable)).flatten()
}

/// Writes `readable`, a record another ledger wrote, as it read it (an
/// import), at the end of `out` as stored here: byte for byte, its
/// payloads encrypted under `key` when it needs one ([`copied_slot`]).
/// Its hash and link are its own: they are not recomputed.
fn write_copied(out: &mut Vec<u8>, readable: &[u8], key: Option<&Key>) -> Hash {
    let start = out.len();
    out.extend_from_slice(readable);
    if let Some(key) = key {
        let sealed = unseal_in_place(&mut out[start..], |_| Ok::<_, ()>(Some(*key)));
        debug_assert!(matches!(sealed, Ok(Some(_))), "a record with payloads");
    }
    readable[33..HEADER].try_into().expect("a record's header")
}

/// [`write_copied`] into a record of its own (engines that store one
/// record a row).
#[cfg_attr(not(feature = "postgres"), allow(dead_code))] // the PostgreSQL engine's
pub(crate) fn copy_record(readable: &[u8], key: Option<&Key>) -> (Vec<u8>, Hash) {
    let mut out = Vec::with_capacity(readable.len());
    let hash = write_copied(&mut out, readable, key);
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
    /// Appends the record of `event` (whose seq it takes) after `prev`, its
    /// payloads encrypted under `key` when one is given; returns its hash.
    pub(crate) fn push_event(
        &mut self,
        prev: &Hash,
        event: &Event,
        key: Option<(u64, &Key)>,
    ) -> Hash {
        self.push_with(|buf| write_record(buf, prev, event, key))
    }

    /// Appends the record of the control entry `control` after `prev`
    /// ([`write_control`]); returns its hash.
    pub(crate) fn push_control(&mut self, prev: &Hash, control: &Control) -> Hash {
        self.push_with(|buf| write_control(buf, prev, control))
    }

    /// Appends the record `write` writes at the end of the buffer (it
    /// answers the record's hash), with its length before it, starting
    /// the block when it holds nothing yet.
    fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>) -> Hash) -> Hash {
        if self.count == 0 {
            self.buf.clear();
            self.buf.push(BLOCK);
            self.buf.extend_from_slice(&[0; 4]);
        }
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        let start = self.buf.len();
        let hash = write(&mut self.buf);
        let len = u32::try_from(self.buf.len() - start).expect("a record is under 4 GiB");
        self.buf[at..start].copy_from_slice(&len.to_be_bytes());
        self.ranges.push(start..self.buf.len());
        self.count += 1;
        hash
    }

    /// Appends `readable`, a record another ledger wrote ([`write_copied`]),
    /// its payloads encrypted under `key` when it needs one; returns its
    /// hash.
    pub(crate) fn push_copied(&mut self, readable: &[u8], key: Option<&Key>) -> Hash {
        self.push_with(|buf| write_copied(buf, readable, key))
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

/// The stored value of consecutive `records`: a block, or the record
/// itself when there is one.
pub(crate) fn stored_value(records: &[Vec<u8>]) -> Vec<u8> {
    if let [one] = records {
        return one.clone();
    }
    let mut out =
        Vec::with_capacity(BLOCK_HEADER + records.iter().map(|r| 4 + r.len()).sum::<usize>());
    out.push(BLOCK);
    put_u32(&mut out, records.len());
    for r in records {
        put_u32(&mut out, r.len());
        out.extend_from_slice(r);
    }
    out
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
    /// Its format version.
    pub(crate) version: u8,
    /// The event JSON (format 1), or the skeleton (format 2).
    pub(crate) json: &'a [u8],
    /// How many payloads the skeleton stands for (format 2).
    pub(crate) slots: usize,
    /// Each payload's JSON; empty when the record was redacted (or has
    /// none).
    pub(crate) payloads: Vec<&'a [u8]>,
}

#[cfg(test)]
impl Record<'_> {
    /// Whether the record's payloads were removed.
    pub(crate) fn redacted(&self) -> bool {
        self.slots > 0 && self.payloads.is_empty()
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(b) as usize)
}

/// The layout of a format-2 or -3 record: the key's slot (format 3), how
/// many payloads, the digests' range, the skeleton's range (which ends the
/// hashed part).
struct Layout {
    key: Option<u64>,
    slots: usize,
    digests: std::ops::Range<usize>,
    skeleton: std::ops::Range<usize>,
}

fn layout(seq: u64, bytes: &[u8]) -> Result<Layout, StorageError> {
    let short = || StorageError::corrupt(seq, "record ends inside its header");
    let (key, at) = if bytes.first() == Some(&FORMAT_SEALED) {
        let b: [u8; 8] = bytes
            .get(HEADER..HEADER + 8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(short)?;
        (Some(u64::from_be_bytes(b)), HEADER + 8)
    } else {
        (None, HEADER)
    };
    let slots = u32_at(bytes, at).ok_or_else(short)?;
    let end = slots
        .checked_mul(32)
        .and_then(|n| n.checked_add(at + 4))
        .ok_or_else(short)?;
    let digests = at + 4..end;
    let len = u32_at(bytes, digests.end).ok_or_else(short)?;
    let end = (digests.end + 4).checked_add(len).ok_or_else(short)?;
    let skeleton = digests.end + 4..end;
    if skeleton.end > bytes.len() {
        return Err(short());
    }
    Ok(Layout {
        key,
        slots,
        digests,
        skeleton,
    })
}

/// The key slot of a format-3 record as stored (its payloads encrypted, or
/// removed already), `None` for any other record or one that does not
/// parse (which [`decode`] reports).
pub(crate) fn key_slot(bytes: &[u8]) -> Option<u64> {
    layout(0, bytes).ok()?.key
}

/// A format-3 record as stored, read: its payloads decrypted under the key
/// `key_of` finds in its slot, or removed when that key was destroyed
/// (`None`). `None` when it holds no encrypted payloads (nothing to do;
/// `key_of` is not called).
///
/// # Errors
///
/// What `key_of` returns.
pub(crate) fn unseal<E>(
    bytes: &[u8],
    key_of: impl FnOnce(u64) -> Result<Option<Key>, E>,
) -> Result<Option<Vec<u8>>, E> {
    if !is_sealed(bytes) {
        return Ok(None);
    }
    let mut out = bytes.to_vec();
    let len = unseal_in_place(&mut out, key_of)?.expect("a sealed record");
    out.truncate(len);
    Ok(Some(out))
}

/// Whether a record as stored holds encrypted payloads.
pub(crate) fn is_sealed(bytes: &[u8]) -> bool {
    bytes.first() == Some(&FORMAT_SEALED)
        && layout(0, bytes).is_ok_and(|l| l.skeleton.end < bytes.len())
}

/// [`unseal`] in place: decrypts the payloads of the format-3 record
/// `bytes`, or when its key was destroyed, returns the length of the
/// record without them (its first bytes); `None` when it holds no
/// encrypted payloads.
///
/// # Errors
///
/// What `key_of` returns.
pub(crate) fn unseal_in_place<E>(
    bytes: &mut [u8],
    key_of: impl FnOnce(u64) -> Result<Option<Key>, E>,
) -> Result<Option<usize>, E> {
    let Ok(Layout {
        key: Some(slot),
        skeleton,
        ..
    }) = layout(0, bytes)
    else {
        return Ok(None);
    };
    let end = skeleton.end;
    if end == bytes.len() {
        return Ok(None);
    }
    Ok(Some(match key_of(slot)? {
        Some(key) => {
            keystream(&key, &mut bytes[end..]);
            bytes.len()
        }
        None => end,
    }))
}

/// Encrypts (or decrypts) a value an engine keeps beside the log (a
/// snapshot) under a key of its own.
pub(crate) fn seal_value(key: &Key, data: &mut [u8]) {
    keystream(key, data);
}

/// The first byte of a snapshot stored encrypted:
///
/// ```text
/// SEALED_SNAPSHOT: u8 (= b'E') | key slot: u64 big-endian | encrypted projection JSON
/// ```
///
/// (a snapshot written in the clear starts with the JSON's `{`).
pub(crate) const SEALED_SNAPSHOT: u8 = b'E';

/// A fresh key, from the operating system's random source.
///
/// # Errors
///
/// `Io` when the operating system gives no random bytes.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))] // the PostgreSQL engine's
pub(crate) fn fresh_key() -> Result<Key, StorageError> {
    let mut key = [0u8; 32];
    getrandom::getrandom(&mut key).map_err(|e| {
        StorageError::new(
            ErrorKind::Io,
            format!("cannot make a key: the operating system gives no random bytes ({e})"),
        )
    })?;
    Ok(key)
}

/// A snapshot's projection JSON, encrypted under `key`, as stored with
/// the key's `slot`.
pub(crate) fn seal_snapshot(slot: u64, key: &Key, mut json: Vec<u8>) -> Vec<u8> {
    seal_value(key, &mut json);
    let mut sealed = Vec::with_capacity(9 + json.len());
    sealed.push(SEALED_SNAPSHOT);
    sealed.extend_from_slice(&slot.to_be_bytes());
    sealed.extend_from_slice(&json);
    sealed
}

/// The key slot of a stored snapshot (none when written in the clear, or
/// too short to name one).
pub(crate) fn snapshot_slot(value: &[u8]) -> Option<u64> {
    (value.first() == Some(&SEALED_SNAPSHOT))
        .then(|| value.get(1..9)?.try_into().ok().map(u64::from_be_bytes))
        .flatten()
}

/// The projection JSON of a stored snapshot that [`snapshot_slot`] names
/// a slot of, decrypted under that slot's key.
pub(crate) fn open_snapshot(value: &[u8], key: &Key) -> Vec<u8> {
    let mut json = value.get(9..).unwrap_or_default().to_vec();
    seal_value(key, &mut json);
    json
}

/// Checks that the hashed part of a format-2 or -3 record (as stored or
/// read) matches its hash.
///
/// # Errors
///
/// `Corrupt` at `seq`.
pub(crate) fn check_hash(seq: u64, bytes: &[u8]) -> Result<(), StorageError> {
    let mismatch = || StorageError::corrupt(seq, "record content does not match its hash");
    let l = layout(seq, bytes).map_err(|_| mismatch())?;
    let hash: Hash = bytes[33..HEADER].try_into().expect("32 bytes");
    let prev: Hash = bytes[1..33].try_into().expect("32 bytes");
    if digest(bytes[0], seq, &prev, &bytes[HEADER..l.skeleton.end]) != hash {
        return Err(mismatch());
    }
    Ok(())
}

/// Checks record `seq` as an engine stored it (its payloads encrypted or
/// not) against its hash; returns its link and its hash.
///
/// # Errors
///
/// `UnsupportedVersion` or `Corrupt`, at `seq`.
pub(crate) fn decode_stored(seq: u64, bytes: &[u8]) -> Result<(Hash, Hash), StorageError> {
    if is_sealed(bytes) {
        check_hash(seq, bytes)?;
        let prev: Hash = bytes[1..33].try_into().expect("32 bytes");
        let hash: Hash = bytes[33..65].try_into().expect("32 bytes");
        return Ok((prev, hash));
    }
    let rec = decode(seq, bytes)?;
    Ok((rec.prev, rec.hash))
}

/// Decodes and checks the record stored at `seq`: its version, that its
/// content matches its stored hash, and that each payload it holds matches
/// its digest.
///
/// # Errors
///
/// `UnsupportedVersion` or `Corrupt`, at `seq`.
pub(crate) fn decode(seq: u64, bytes: &[u8]) -> Result<Record<'_>, StorageError> {
    read(seq, bytes, true)
}

/// [`decode`], checking the hash and digests when `check` is set.
fn read(seq: u64, bytes: &[u8], check: bool) -> Result<Record<'_>, StorageError> {
    if bytes.len() < HEADER {
        return Err(StorageError::corrupt(
            seq,
            format!(
                "record is {} bytes, shorter than its {HEADER}-byte header",
                bytes.len()
            ),
        ));
    }
    let version = bytes[0];
    if !(FORMAT_V1..=FORMAT_SEALED).contains(&version) {
        return Err(StorageError::new(
            ErrorKind::UnsupportedVersion,
            format!(
                "record at seq {seq} has format version {version}; this build reads versions {FORMAT_V1} to {FORMAT_SEALED}"
            ),
        )
        .at_seq(seq));
    }
    let prev: Hash = bytes[1..33].try_into().expect("32 bytes");
    let hash: Hash = bytes[33..65].try_into().expect("32 bytes");
    let mismatch = || StorageError::corrupt(seq, "record content does not match its hash");
    if version == FORMAT_V1 {
        let json = &bytes[HEADER..];
        if check && digest(version, seq, &prev, json) != hash {
            return Err(mismatch());
        }
        return Ok(Record {
            prev,
            hash,
            version,
            json,
            slots: 0,
            payloads: Vec::new(),
        });
    }
    // A header that does not parse cannot match the hash either: it is
    // reported as the mismatch it is.
    let l = layout(seq, bytes).map_err(|_| mismatch())?;
    if check && digest(version, seq, &prev, &bytes[HEADER..l.skeleton.end]) != hash {
        return Err(mismatch());
    }
    let mut payloads = Vec::new();
    let mut at = l.skeleton.end;
    if at < bytes.len() {
        payloads.reserve(l.slots);
        for i in 0..l.slots {
            let len = u32_at(bytes, at + SALT)
                .filter(|&len| bytes.len() - at - SALT - 4 >= len)
                .ok_or_else(|| {
                    StorageError::corrupt(seq, format!("record ends inside payload {}", i + 1))
                })?;
            let salt = &bytes[at..at + SALT];
            let payload = &bytes[at + SALT + 4..at + SALT + 4 + len];
            let d = &bytes[l.digests.start + 32 * i..l.digests.start + 32 * (i + 1)];
            if check && payload_digest(salt, payload) != d {
                return Err(StorageError::corrupt(
                    seq,
                    format!("payload {} does not match its digest", i + 1),
                ));
            }
            payloads.push(payload);
            at += SALT + 4 + len;
        }
        if at != bytes.len() {
            return Err(StorageError::corrupt(
                seq,
                format!("record holds {} bytes after its payloads", bytes.len() - at),
            ));
        }
    }
    Ok(Record {
        prev,
        hash,
        version,
        json: &bytes[l.skeleton],
        slots: l.slots,
        payloads,
    })
}

/// Decodes the record stored at `seq` and the event it holds, checking that
/// the event names the same seq.
///
/// # Errors
///
/// `Corrupt` or `UnsupportedVersion` at `seq`.
pub(crate) fn decode_event(seq: u64, bytes: &[u8]) -> Result<(Event, Record<'_>), StorageError> {
    let record = decode(seq, bytes)?;
    Ok((event_of(seq, &record)?, record))
}

/// The event a record already checked by [`decode`] holds: its skeleton
/// with its payloads put back (`"[redacted]"` where they were removed).
///
/// # Errors
///
/// `Corrupt` at `seq`.
pub(crate) fn event_of(seq: u64, record: &Record<'_>) -> Result<Event, StorageError> {
    let bad =
        |e: serde_json::Error| StorageError::corrupt(seq, format!("event does not decode: {e}"));
    let event: Event = if record.payloads.is_empty() {
        serde_json::from_slice(record.json).map_err(bad)?
    } else {
        let mut value: serde_json::Value = serde_json::from_slice(record.json).map_err(bad)?;
        let mut payloads = record.payloads.iter();
        let mut failed = None;
        let mut found = 0;
        slots(&mut value, |slot| {
            found += 1;
            match payloads.next().map(|p| serde_json::from_slice(p)) {
                Some(Ok(v)) => *slot = v,
                Some(Err(e)) => failed = failed.take().or(Some(e)),
                None => {}
            }
        });
        if let Some(e) = failed {
            return Err(bad(e));
        }
        if found != record.slots {
            return Err(StorageError::corrupt(
                seq,
                format!(
                    "record holds {} payloads for an event with {found}",
                    record.slots
                ),
            ));
        }
        serde_json::from_value(value).map_err(bad)?
    };
    if event.seq != seq {
        return Err(StorageError::corrupt(
            seq,
            format!("record holds the event of seq {}", event.seq),
        ));
    }
    Ok(event)
}

/// Decodes and checks the record stored at `seq` (as [`decode`]) and
/// reads the entry it holds: an execution's event or a control entry.
///
/// # Errors
///
/// `UnsupportedVersion` or `Corrupt`, at `seq`.
pub(crate) fn decode_entry(seq: u64, bytes: &[u8]) -> Result<(Entry, Record<'_>), StorageError> {
    let record = decode(seq, bytes)?;
    Ok((entry_of(seq, &record)?, record))
}

/// The entry a record already checked by [`decode`] holds: an event
/// ([`event_of`]), or a control entry, which has no payloads.
///
/// # Errors
///
/// `Corrupt` at `seq`: what is wrong with it as an event, when it is not a
/// control entry either.
pub(crate) fn entry_of(seq: u64, record: &Record<'_>) -> Result<Entry, StorageError> {
    match event_of(seq, record) {
        Ok(event) => Ok(Entry::Event(event)),
        Err(e) if record.slots == 0 => {
            let control: Control = serde_json::from_slice(record.json).map_err(|_| e)?;
            if control.seq != seq {
                return Err(StorageError::corrupt(
                    seq,
                    format!("record holds the entry of seq {}", control.seq),
                ));
            }
            Ok(Entry::Control(control))
        }
        Err(e) => Err(e),
    }
}

/// The entry of a record checked before (by [`decode`]), read without
/// checking its hash and digests again.
///
/// # Errors
///
/// `Corrupt` or `UnsupportedVersion` at `seq`, when it does not parse.
pub(crate) fn parse_entry(seq: u64, bytes: &[u8]) -> Result<Entry, StorageError> {
    entry_of(seq, &read(seq, bytes, false)?)
}

/// Whether a record already checked by [`decode`] was stripped of its
/// payloads (read without hashing again).
pub(crate) fn is_stripped(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(&FORMAT_V2 | &FORMAT_SEALED))
        && layout(0, bytes).is_ok_and(|l| l.slots > 0 && l.skeleton.end == bytes.len())
}

/// Whether a record read from a store (format 2 or 3, checked before by
/// [`decode`]) still holds its payloads.
pub(crate) fn holds_payloads(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(&FORMAT_V2 | &FORMAT_SEALED))
        && layout(0, bytes).is_ok_and(|l| l.slots > 0 && l.skeleton.end < bytes.len())
}

/// What [`strip`] makes of a record.
#[derive(Debug, PartialEq)]
pub(crate) enum Stripped {
    /// The record without its payloads.
    Record(Vec<u8>),
    /// It holds no payload (none, or removed already).
    Nothing,
    /// It was written in format 1, whose hash covers its payloads.
    Format1,
}

/// Record `seq` without its payloads and their salts (its hash, link and
/// digests kept), after checking it.
///
/// # Errors
///
/// `Corrupt` or `UnsupportedVersion` at `seq`.
pub(crate) fn strip(seq: u64, bytes: &[u8]) -> Result<Stripped, StorageError> {
    let record = decode(seq, bytes)?;
    if record.version == FORMAT_V1 {
        let mut value: serde_json::Value = serde_json::from_slice(record.json)
            .map_err(|e| StorageError::corrupt(seq, format!("event does not decode: {e}")))?;
        let mut any = false;
        slots(&mut value, |_| any = true);
        return Ok(if any {
            Stripped::Format1
        } else {
            Stripped::Nothing
        });
    }
    if record.payloads.is_empty() {
        return Ok(Stripped::Nothing);
    }
    let end = layout(seq, bytes)?.skeleton.end;
    Ok(Stripped::Record(bytes[..end].to_vec()))
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

/// A hash (or another 32-byte digest, such as a signature) as lower-case hex.
pub(crate) fn hex(hash: &Hash) -> String {
    use std::fmt::Write;
    hash.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A hash (or another 32-byte digest) from 64 hex digits.
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
        let (r1, h1) = encode_v1(1, &GENESIS, b"{\"a\":1}");
        let (r2, h2) = encode_v1(2, &h1, b"{\"b\":2}");
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
        let (r, _) = encode_v1(9, &GENESIS, b"{\"type\":\"released\"}");
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
        let h1 = w.push_event(&GENESIS, &one, None);
        let stored = encode_event(&GENESIS, &one, None).0;
        let len = stored.len();
        let whole: Vec<_> = std::iter::once(0..len).collect();
        assert_eq!(w.take(), Some((stored, whole)));
        assert_eq!(
            decode(1, &encode_event(&GENESIS, &one, None).0)
                .unwrap()
                .hash,
            h1
        );
        let mut prev = GENESIS;
        let events: Vec<Event> = (5..9).map(event).collect();
        let mut hashes = Vec::new();
        for e in &events {
            prev = w.push_event(&prev, e, None);
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
            assert_eq!(&block[range], encode_event(&link, &e, None).0.as_slice());
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

    fn completed(seq: u64, output: serde_json::Value) -> Event {
        Event {
            kind: crate::event::EventKind::Completed { attempt: 1, output },
            ..event(seq)
        }
    }

    #[test]
    fn sealed_payloads_are_encrypted_and_read_back_or_as_redacted_without_their_key() {
        let e = completed(4, serde_json::json!({"email": "ada@example.com"}));
        let key: Key = [7; 32];
        let (sealed, hash) = encode_event(&GENESIS, &e, Some((9, &key)));
        assert_eq!(sealed[0], FORMAT_SEALED);
        assert_eq!(key_slot(&sealed), Some(9));
        // Only the skeleton's placeholder is in the clear.
        assert!(!String::from_utf8_lossy(&sealed).contains("ada@example.com"));
        // As stored it does not read: its payloads do not match their digests.
        assert!(decode(4, &sealed).is_err());
        let opened = unseal(&sealed, |_| Ok::<_, ()>(Some(key)))
            .unwrap()
            .expect("it holds encrypted payloads");
        let (back, rec) = decode_event(4, &opened).unwrap();
        assert_eq!((back, rec.hash), (e.clone(), hash));
        // The wrong key is found by the digests, at the record's seq.
        let wrong = unseal(&sealed, |_| Ok::<_, ()>(Some([8; 32])))
            .unwrap()
            .unwrap();
        assert_eq!(decode(4, &wrong).unwrap_err().seq(), Some(4));
        // Its key destroyed, it reads as redacted, with its hash and link.
        let gone = unseal(&sealed, |_| Ok::<_, ()>(None)).unwrap().unwrap();
        let (redacted, rec) = decode_event(4, &gone).unwrap();
        assert_eq!((rec.hash, rec.prev, rec.redacted()), (hash, GENESIS, true));
        assert!(is_stripped(&gone));
        assert_eq!(
            unseal(&gone, |_| Err(())),
            Ok(None),
            "nothing left to decrypt"
        );
        assert_eq!(key_slot(&gone), Some(9));
        let crate::event::EventKind::Completed { output, .. } = redacted.kind else {
            panic!("still a completion")
        };
        assert_eq!(output, serde_json::json!(REDACTED));
        // Stripping the opened record gives the same bytes.
        assert_eq!(strip(4, &opened).unwrap(), Stripped::Record(gone.clone()));
        // The slot is hashed: a record pointed at another key is found.
        let mut moved = gone.clone();
        moved[HEADER + 7] ^= 1;
        assert_eq!(decode(4, &moved).unwrap_err().seq(), Some(4));
        // Events without payloads stay format 2, key or not.
        let plain = encode_event(&GENESIS, &event(5), Some((10, &key))).0;
        assert_eq!((plain[0], key_slot(&plain)), (FORMAT_V2, None));
    }

    #[test]
    fn payloads_are_salted_and_a_redacted_record_keeps_its_hash_and_link() {
        let marker = serde_json::json!({"email": "ada@example.com"});
        let e = completed(4, marker.clone());
        let (r, hash) = encode_event(&GENESIS, &e, None);
        let text = String::from_utf8_lossy(&r);
        // The skeleton holds a placeholder, the payload the value.
        assert!(text.contains(r#""output":"[redacted]""#), "{text}");
        assert_eq!(text.matches("ada@example.com").count(), 1);
        let (back, rec) = decode_event(4, &r).unwrap();
        assert_eq!((back, rec.hash, rec.slots), (e.clone(), hash, 1));
        // The same event twice: other salts, other digests, one hash each.
        let (r2, hash2) = encode_event(&GENESIS, &e, None);
        assert_ne!(hash, hash2);
        assert_ne!(r, r2);
        // Redacted: the payload is gone, the hash and link stay.
        let Stripped::Record(red) = strip(4, &r).unwrap() else {
            panic!("a record with a payload strips")
        };
        assert!(!String::from_utf8_lossy(&red).contains("ada@example.com"));
        let (redacted, rec) = decode_event(4, &red).unwrap();
        assert_eq!((rec.hash, rec.prev), (hash, GENESIS));
        assert!(rec.redacted());
        let crate::event::EventKind::Completed { output, .. } = redacted.kind else {
            panic!("still a completion")
        };
        assert_eq!(output, serde_json::json!(REDACTED));
        assert_eq!(strip(4, &red).unwrap(), Stripped::Nothing);
        // Every flipped byte of the whole record, and of the redacted one,
        // is found at its seq.
        for bytes in [&r, &red] {
            for i in 0..bytes.len() {
                let mut bad = bytes.clone();
                bad[i] ^= 0x01;
                let err = decode_event(4, &bad).expect_err("every flip is found");
                assert_eq!(err.seq(), Some(4), "flip at byte {i}: {err}");
            }
        }
        // A payload put back under another digest does not verify: the
        // payload of another record appended to a redacted one.
        let mut swapped = red.clone();
        swapped.extend_from_slice(&r2[red.len()..]);
        assert!(decode(4, &swapped).is_err());
        // Events without payloads are stored with none; format 1 records
        // cannot be stripped, and say so.
        let plain = encode_event(&GENESIS, &event(5), None).0;
        assert_eq!(decode(5, &plain).unwrap().slots, 0);
        assert_eq!(strip(5, &plain).unwrap(), Stripped::Nothing);
        let json = serde_json::to_vec(&e).unwrap();
        assert_eq!(
            strip(4, &encode_v1(4, &GENESIS, &json).0).unwrap(),
            Stripped::Format1
        );
        assert_eq!(
            decode_event(4, &encode_v1(4, &GENESIS, &json).0).unwrap().0,
            e
        );
    }

    #[test]
    fn every_payload_field_is_a_slot_and_keys_and_codes_are_not() {
        use crate::event::{EventKind, Submission};
        use crate::execution::ExecutionError;
        let mut s = Submission::new("mail");
        s.input = Some("in-secret".into());
        s.context = Some([("user".to_string(), "ctx-secret".to_string())].into());
        s.metadata = Some([("m".to_string(), serde_json::json!({"deep": "meta-secret"}))].into());
        let mut err = ExecutionError::new("boom", "msg-secret");
        err.details = Some(serde_json::json!(["detail-secret"]));
        let kinds = [
            EventKind::Queued(Box::new(s)),
            EventKind::Failed {
                attempt: 1,
                error: err.clone(),
            },
            EventKind::RetryScheduled {
                attempt: 1,
                error: err.clone(),
                not_before: chrono::DateTime::UNIX_EPOCH,
            },
            EventKind::Cancelled {
                reason: Some("why-secret".into()),
            },
            EventKind::CallbackFailed {
                attempt: 1,
                status_code: None,
                error: "cb-secret".into(),
            },
            EventKind::TargetBindingApplied {
                target: "var:x".into(),
                error: Some(err),
            },
        ];
        for kind in kinds {
            let e = Event { kind, ..event(7) };
            let (r, _) = encode_event(&GENESIS, &e, None);
            let Stripped::Record(red) = strip(7, &r).unwrap() else {
                panic!("{} carries payloads", e.kind.name())
            };
            let text = String::from_utf8_lossy(&red);
            assert!(!text.contains("secret"), "{}: {text}", e.kind.name());
            // What is not a payload stays: names, keys, codes.
            for kept in ["\"user\"", "\"m\"", "boom", "mail", "var:x"] {
                if String::from_utf8_lossy(&r).contains(kept) {
                    assert!(text.contains(kept), "{kept} kept in {text}");
                }
            }
            assert_eq!(decode_event(7, &r).unwrap().0, e);
            decode_event(7, &red).unwrap();
        }
    }

    #[test]
    fn short_and_unknown_version_records_are_named() {
        assert_eq!(decode(3, &[1, 2]).unwrap_err().kind(), ErrorKind::Corrupt);
        let (mut r, _) = encode_v1(3, &GENESIS, b"{}");
        r[0] = 9;
        let err = decode(3, &r).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnsupportedVersion);
        assert!(err.to_string().contains("format version 9"));
        assert!(decode(3, &encode_event(&GENESIS, &event(3), None).0[..70]).is_err());
    }
}
