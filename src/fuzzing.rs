//! Entry points for the fuzz targets in `fuzz/` and their corpus test
//! (`tests/fuzz_corpus.rs`): the record format is crate-private, and these
//! thin wrappers let the fuzz bodies reach it without widening the public
//! API. Not part of the supported interface.

use crate::error::StorageError;
use crate::event::Event;
use crate::store::record;

/// A key that encrypts payloads, as the embedded engine keeps it.
pub type PayloadKey = [u8; 32];

/// A record's header and payload, as [`decode_record`] read them.
#[derive(Debug)]
pub struct DecodedRecord<'a> {
    /// The hash of the record before it.
    pub prev: [u8; 32],
    /// Its own stored hash.
    pub hash: [u8; 32],
    /// Its format version.
    pub version: u8,
    /// The event JSON it holds (format 1), or its skeleton (format 2).
    pub json: &'a [u8],
}

/// Encodes a format-1 record of `seq` holding `json` (as ledgers written
/// before format 2 hold them); returns it with its hash.
pub fn encode_record(seq: u64, prev: &[u8; 32], json: &[u8]) -> (Vec<u8>, [u8; 32]) {
    record::encode_v1(seq, prev, json)
}

/// Encodes the record of `event` the way the store writes it now (format
/// 2); returns it with its hash.
pub fn encode_event_record(prev: &[u8; 32], event: &Event) -> (Vec<u8>, [u8; 32]) {
    record::encode_event(prev, event, None)
}

/// Record `seq` redacted: without its payloads, when it holds any.
///
/// # Errors
///
/// `UnsupportedVersion` or `Corrupt`, at `seq`.
pub fn redact_record(seq: u64, bytes: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
    Ok(match record::strip(seq, bytes)? {
        record::Stripped::Record(r) => Some(r),
        _ => None,
    })
}

/// Decodes and hash-checks the record stored at `seq`.
///
/// # Errors
///
/// `UnsupportedVersion` or `Corrupt`, at `seq`.
pub fn decode_record(seq: u64, bytes: &[u8]) -> Result<DecodedRecord<'_>, StorageError> {
    record::decode(seq, bytes).map(|r| DecodedRecord {
        prev: r.prev,
        hash: r.hash,
        version: r.version,
        json: r.json,
    })
}

/// Decodes the record stored at `seq` and the event it holds, as every
/// read of the log does.
///
/// # Errors
///
/// `UnsupportedVersion` or `Corrupt`, at `seq`.
pub fn decode_event(seq: u64, bytes: &[u8]) -> Result<Event, StorageError> {
    record::decode_event(seq, bytes).map(|(event, _)| event)
}

/// A record as the embedded engine stores it in the data directory `dir`
/// (of a ledger not open), made readable as the engine reads it: its
/// payloads decrypted with the directory's key file, or removed when their
/// key was destroyed.
///
/// # Errors
///
/// `Corrupt` when the key file is missing or lacks the record's key; `Io`.
pub fn readable_record(
    dir: &std::path::Path,
    seq: u64,
    stored: &[u8],
) -> Result<Vec<u8>, StorageError> {
    crate::store::sled::readable_stored(dir, seq, stored, false).map(Option::unwrap_or_default)
}

/// A snapshot as the embedded engine stores it in `dir`, decrypted (its
/// JSON); `None` once a redaction destroyed its key.
///
/// # Errors
///
/// As [`readable_record`].
pub fn readable_snapshot(
    dir: &std::path::Path,
    seq: u64,
    stored: &[u8],
) -> Result<Option<Vec<u8>>, StorageError> {
    crate::store::sled::readable_stored(dir, seq, stored, true)
}

/// The keys that encrypt the payloads of records `seqs` of the ledger in
/// `dir` (not open), as its key file holds them (`None` once destroyed).
///
/// # Errors
///
/// As opening the ledger; `Corrupt` for a missing record.
pub fn payload_keys(
    dir: &std::path::Path,
    seqs: &[u64],
) -> Result<Vec<Option<PayloadKey>>, StorageError> {
    crate::store::sled::payload_keys(dir, seqs)
}

/// The keys of the snapshots of the ledger in `dir` (not open), by seq
/// (`None` once destroyed).
///
/// # Errors
///
/// As opening the ledger.
pub fn snapshot_keys(
    dir: &std::path::Path,
) -> Result<Vec<(u64, Option<PayloadKey>)>, StorageError> {
    crate::store::sled::snapshot_keys(dir)
}

/// What archiving left in the database of the ledger in `dir` (not open),
/// before opening finishes anything: its base (the last archived seq),
/// whether a removal is pending, and how many entries of archived history
/// the database still holds. For the archive crash test.
///
/// # Errors
///
/// As opening the ledger.
pub fn archive_remnants(dir: &std::path::Path) -> Result<(u64, bool, u64), StorageError> {
    crate::store::embedded::archive_remnants(dir)
}
