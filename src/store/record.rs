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

use crate::error::{ErrorKind, StorageError};
use crate::event::Event;

/// The format version written by this build.
pub(crate) const FORMAT_VERSION: u8 = 1;
const HEADER: usize = 1 + 32 + 32;

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
/// straight into the record's buffer; returns it with its hash.
pub(crate) fn encode_event(prev: &Hash, event: &crate::event::Event) -> (Vec<u8>, Hash) {
    // Most events fit: one allocation, no growing.
    let mut out = Vec::with_capacity(HEADER + 512);
    out.resize(HEADER, 0);
    serde_json::to_writer(&mut out, event).expect("events always serialize");
    let hash = seal(&mut out, event.seq, prev);
    (out, hash)
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
