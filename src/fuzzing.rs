//! Entry points for the fuzz targets in `fuzz/` and their corpus test
//! (`tests/fuzz_corpus.rs`): the record format is crate-private, and these
//! thin wrappers let the fuzz bodies reach it without widening the public
//! API. Not part of the supported interface.

use crate::error::StorageError;
use crate::event::Event;
use crate::store::record;

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
    record::encode_event(prev, event)
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
