//! Exports an auditor verifies alone: the format of a line, writing the
//! log as lines, and checking an export without the ledger.
//!
//! An export is the log as JSON lines, one entry a line, seq 1 first: an
//! execution's event, or a control entry (a pause, a resume). Each line is
//! the entry as the ledger answers it everywhere, with three fields more:
//!
//! ```text
//! record   the record as the log keeps it, readable (base64): the bytes its
//!          hash covers, with its payloads (or without them, once redacted:
//!          their digests stay)
//! prev     the hash of the record before it (64 hex digits)
//! hash     its own hash (64 hex digits)
//! ```
//!
//! [`verify_export`] checks, line by line, that each record matches its
//! hash and each payload its digest, that each links to the one before from
//! the genesis on with no seq missing, and that the event the line shows is
//! the one its record holds; and, given a head kept elsewhere, that the
//! export reaches it. What an auditor reads is then what the chain commits
//! to, and nobody who can rewrite the file can hide a change to it.

use std::collections::HashSet;
use std::io::BufRead;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::report::Head;
use super::Ledger;
use crate::error::{ErrorKind, StorageError};
use crate::event::Entry;
use crate::store::record::{self, Hash, GENESIS};

/// The fields a line adds to its event.
const RECORD: &str = "record";
const PREV: &str = "prev";
const HASH: &str = "hash";

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One entry of an export and its line.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Exported {
    /// The entry: an execution's event, or a control entry.
    pub entry: Entry,
    /// Its line (without the newline).
    pub line: Vec<u8>,
}

/// What [`verify_export`] checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ExportVerified {
    /// Lines checked: the executions' events and the control entries.
    pub events: u64,
    /// Executions they belong to.
    pub executions: u64,
    /// The export's last seq and its hash.
    pub head: Head,
    /// The head kept elsewhere that the export was found to reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaches: Option<Head>,
}

/// The line of the entry held by the readable record `bytes` at `seq`.
fn line_of(seq: u64, bytes: &[u8]) -> Result<Exported, StorageError> {
    let (entry, rec) = record::decode_entry(seq, bytes)?;
    let Value::Object(mut fields) = serde_json::to_value(&entry).expect("entries serialize") else {
        unreachable!("an entry serializes as an object")
    };
    fields.insert(PREV.into(), Value::String(record::hex(&rec.prev)));
    fields.insert(HASH.into(), Value::String(record::hex(&rec.hash)));
    fields.insert(RECORD.into(), Value::String(BASE64.encode(bytes)));
    let line = serde_json::to_vec(&fields).expect("JSON values serialize");
    Ok(Exported { entry, line })
}

impl Ledger {
    /// The log from seq 1 to `to` (the head, when `None`) as the lines of
    /// an export ([`verify_export`] checks one). Every tenant's: an export
    /// is the whole chain.
    ///
    /// # Errors
    ///
    /// Each item: `Corrupt` (with the seq) for damage; `Io`.
    pub fn export(
        &self,
        to: Option<u64>,
    ) -> impl Iterator<Item = Result<Exported, StorageError>> + '_ {
        let to = to.unwrap_or_else(|| self.head().seq);
        self.inner
            .log
            .records(1)
            .take_while(move |r| r.as_ref().map_or(true, |(seq, _)| *seq <= to))
            .map(|r| {
                let (seq, bytes) = r?;
                line_of(seq, &bytes)
            })
    }
}

/// A line that is not what an export holds, at the seq it should hold.
fn bad_line(seq: u64, line: u64, what: impl std::fmt::Display) -> StorageError {
    StorageError::corrupt(seq, format!("line {line} of the export {what}"))
}

/// The hash `field` of `fields` holds, checked against `want`.
fn check_hex(
    fields: &serde_json::Map<String, Value>,
    field: &str,
    want: &Hash,
    seq: u64,
    line: u64,
) -> Result<(), StorageError> {
    match fields.get(field).and_then(Value::as_str) {
        Some(h) if record::from_hex(h).as_ref() == Some(want) => Ok(()),
        Some(h) => Err(bad_line(
            seq,
            line,
            format!("shows {field} {h}, not its record's {}", record::hex(want)),
        )),
        None => Err(bad_line(
            seq,
            line,
            format!("has no {field} (64 hex digits)"),
        )),
    }
}

/// One line of an export, checked: its event, its record as the line
/// holds it (readable), and the record's hash.
pub(super) struct Checked {
    pub(super) entry: Entry,
    pub(super) record: Vec<u8>,
    pub(super) hash: Hash,
}

/// An export's lines, each checked as it is read: its record against its
/// hash and its payloads' digests, its link to the line before (from the
/// genesis, with no seq missing or repeated), and the event it shows
/// against the one its record holds.
pub(super) struct Lines<R> {
    lines: std::io::Split<R>,
    line_no: u64,
    /// The last seq read, and its record's hash.
    end: (u64, Hash),
}

impl<R: BufRead> Lines<R> {
    pub(super) fn new(lines: R) -> Self {
        Lines {
            lines: lines.split(b'\n'),
            line_no: 0,
            end: (0, GENESIS),
        }
    }

    /// The last seq read, and its record's hash.
    pub(super) fn end(&self) -> (u64, Hash) {
        self.end
    }

    /// The line after `line`, of `seq`, checked.
    fn check(&self, seq: u64, line: &[u8]) -> Result<Checked, StorageError> {
        let (last, hash) = self.end;
        let line_no = self.line_no;
        let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(line) else {
            return Err(bad_line(seq, line_no, "is not a JSON object"));
        };
        match fields.get("seq").and_then(Value::as_u64) {
            Some(s) if s == seq => {}
            Some(s) if s > seq => {
                let missing = match s - 1 {
                    one if one == seq => format!("seq {seq} is missing"),
                    to => format!("seqs {seq} to {to} are missing"),
                };
                return Err(bad_line(
                    seq,
                    line_no,
                    format!(
                        "holds seq {s} where seq {seq} belongs: {missing} (an export of one tenant's events is not a chain)"
                    ),
                ));
            }
            Some(s) => {
                return Err(bad_line(
                    seq,
                    line_no,
                    format!("holds seq {s} again, after seq {last}"),
                ))
            }
            None => return Err(bad_line(seq, line_no, "has no seq")),
        }
        let bytes = match fields.remove(RECORD) {
            Some(Value::String(b)) => BASE64
                .decode(b)
                .map_err(|_| bad_line(seq, line_no, "holds a record that is not base64"))?,
            _ => {
                return Err(bad_line(
                    seq,
                    line_no,
                    "has no record: only an export that carries its records can be verified",
                ))
            }
        };
        let (entry, rec) = record::decode_entry(seq, &bytes)?;
        if rec.prev != hash {
            return Err(record::broken_link(seq));
        }
        check_hex(&fields, PREV, &rec.prev, seq, line_no)?;
        check_hex(&fields, HASH, &rec.hash, seq, line_no)?;
        fields.remove(PREV);
        fields.remove(HASH);
        if Value::Object(fields) != serde_json::to_value(&entry).expect("entries serialize") {
            return Err(bad_line(
                seq,
                line_no,
                "shows an event other than the one its record holds",
            ));
        }
        let hash = rec.hash;
        Ok(Checked {
            entry,
            record: bytes,
            hash,
        })
    }
}

impl<R: BufRead> Iterator for Lines<R> {
    type Item = Result<Checked, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let line = self.lines.next()?;
            self.line_no += 1;
            let seq = self.end.0 + 1;
            let line = match line {
                Ok(line) => line,
                Err(e) => return Some(Err(StorageError::io("reading the export", e))),
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let checked = self.check(seq, &line);
            if let Ok(c) = &checked {
                self.end = (seq, c.hash);
            }
            return Some(checked);
        }
    }
}

/// Checks an export read from `lines` alone, without the ledger: every
/// record against its hash and its payloads against their digests, the
/// chain from the genesis with no seq missing or repeated, each line's
/// event against its record, and, given `kept` (a head kept elsewhere),
/// that the export reaches it.
///
/// # Errors
///
/// `Corrupt` at the seq where the export stops being the chain (a line
/// that does not parse, a missing seq, a record that does not match its
/// hash or does not link to the one before, an event changed beside its
/// record, a record at `kept`'s seq that is another); `LostSuffix` when it
/// ends before `kept`'s seq; `Io` when `lines` cannot be read.
pub fn verify_export(
    lines: impl BufRead,
    kept: Option<&Head>,
) -> Result<ExportVerified, StorageError> {
    let mut executions = HashSet::new();
    let mut reached = None;
    let mut lines = Lines::new(lines);
    for checked in lines.by_ref() {
        let Checked { entry, hash, .. } = checked?;
        let seq = entry.seq();
        if let Entry::Event(event) = &entry {
            executions.insert(event.execution_id);
        }
        if let Some(k) = kept.filter(|k| k.seq == seq) {
            if record::from_hex(&k.hash).is_none_or(|h| h != hash) {
                return Err(StorageError::corrupt(
                    seq,
                    format!(
                        "the record at seq {seq} is not the one the head kept elsewhere names (hash {}, not {})",
                        record::hex(&hash),
                        k.hash
                    ),
                ));
            }
            reached = Some(k.clone());
        }
    }
    let (last, hash) = lines.end();
    if let Some(k) = kept {
        if k.seq == 0 {
            if record::from_hex(&k.hash).is_none_or(|h| h != GENESIS) {
                return Err(StorageError::corrupt(
                    0,
                    "a head kept elsewhere at seq 0 must have the genesis hash (64 zeros)",
                ));
            }
            reached = Some(k.clone());
        } else if k.seq > last {
            return Err(StorageError::new(
                ErrorKind::LostSuffix,
                format!(
                    "the export ends at seq {last} before seq {} of the head kept elsewhere",
                    k.seq
                ),
            )
            .at_seq(last + 1));
        }
    }
    Ok(ExportVerified {
        events: last,
        executions: executions.len() as u64,
        head: Head {
            seq: last,
            hash: record::hex(&hash),
        },
        reaches: reached,
    })
}
