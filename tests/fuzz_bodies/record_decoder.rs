//! `record_decoder`: arbitrary bytes to the record decoder, for some seq.
//!
//! It must return the record (and the event), or an error that names the
//! seq it was asked about; never panic. The input is
//!
//! ```text
//! mode: u8 | seq: up to 8 bytes, big-endian (missing bytes are zero) | rest
//! ```
//!
//! With an even `mode` the rest is the stored record as is. Random bytes
//! almost never match their hash, so with an odd `mode` the rest is
//! `prev` (32 bytes, zero-padded) and the event JSON, sealed into a record
//! with a correct hash first: that reaches the JSON decoder and the seq
//! check behind the hash check.

use execution_ledger::fuzzing::{
    decode_event, decode_record, encode_event_record, encode_record, redact_record,
};
use execution_ledger::{ErrorKind, StorageError};

/// Decodes the record in `data`; see the module docs for the layout.
pub fn record_decoder(data: &[u8]) {
    let (&mode, rest) = data.split_first().unwrap_or((&0, &[]));
    let (seq_bytes, rest) = rest.split_at(rest.len().min(8));
    let mut seq = [0u8; 8];
    seq[..seq_bytes.len()].copy_from_slice(seq_bytes);
    let seq = u64::from_be_bytes(seq);
    if mode % 2 == 0 {
        check(seq, rest);
    } else {
        let (prev_bytes, json) = rest.split_at(rest.len().min(32));
        let mut prev = [0u8; 32];
        prev[..prev_bytes.len()].copy_from_slice(prev_bytes);
        let (sealed, hash) = encode_record(seq, &prev, json);
        let record = decode_record(seq, &sealed).expect("a sealed record decodes");
        assert_eq!((record.prev, record.hash, record.json), (prev, hash, json));
        check(seq, &sealed);
    }
}

fn check(seq: u64, bytes: &[u8]) {
    let record = decode_record(seq, bytes);
    match &record {
        Ok(r) => {
            // The format is canonical: the parts encode back to the bytes.
            if r.version == 1 {
                assert_eq!(encode_record(seq, &r.prev, r.json).0, bytes);
            }
            // The hash covers the seq: the same bytes are not a record of
            // another seq.
            let other = seq.wrapping_add(1);
            let err = decode_record(other, bytes).expect_err("the hash binds the seq");
            names(&err, other);
        }
        Err(e) => names(e, seq),
    }
    match decode_event(seq, bytes) {
        Ok(event) => {
            assert_eq!(event.seq, seq, "the event is of another seq");
            let r = record.expect("the event decoded, so did its record");
            // Written again as the store writes it, it reads back the same.
            let json = serde_json::to_vec(&event).expect("a decoded event encodes");
            let (again, _) = encode_record(seq, &r.prev, &json);
            assert_eq!(decode_event(seq, &again).expect("re-encoded"), event);
            // And in format 2: the same event; redacted, the same hash and
            // the same event but for its payloads.
            let (v2, hash) = encode_event_record(&r.prev, &event);
            assert_eq!(decode_event(seq, &v2).expect("format 2"), event);
            if let Some(redacted) = redact_record(seq, &v2).expect("a format-2 record") {
                assert_eq!(decode_record(seq, &redacted).expect("redacted").hash, hash);
                let e = decode_event(seq, &redacted).expect("a redacted event decodes");
                assert_eq!(
                    (e.seq, e.at, e.kind.name()),
                    (event.seq, event.at, event.kind.name())
                );
            }
        }
        Err(e) => names(&e, seq),
    }
}

/// The error is one the decoder may give, and it names `seq`.
fn names(err: &StorageError, seq: u64) {
    assert!(
        matches!(
            err.kind(),
            ErrorKind::Corrupt | ErrorKind::UnsupportedVersion
        ),
        "{:?}: {err}",
        err.kind()
    );
    assert_eq!(err.seq(), Some(seq), "{err}");
    assert!(
        err.to_string().contains(&format!("seq {seq}")),
        "the message does not name seq {seq}: {err}"
    );
}
