//! Archiving: the oldest settled history moved out of the live log into
//! segment files that check themselves ([`crate::store::archive`]), so that
//! the live database follows recent history, not all of it.
//!
//! What moves is always a prefix of the log, seqs base+1 through a new
//! base, and always whole executions: the new base is a seq where nothing
//! was live, and no later event but one after settling (a redaction,
//! hold or retry by hand recorded after the execution settled, which stays
//! in the live log) belongs to an execution before it. The
//! live log then starts after the base (its projection there is empty, so
//! replay starts from nothing), the chain runs on from the last archived
//! record, and an archived execution's history is read from its segment
//! (`history`, `show`, time travel of that execution). Archived
//! executions no longer change: commands on them are refused
//! ([`CommandError::Archived`]), which is why the pass archives none that
//! its policy would still redact, nor one under legal hold.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::replay::{fold_control, illegal, InOrder};
use super::Ledger;
use crate::error::{CommandError, ErrorKind, StorageError};
use crate::event::{ControlKind, Entry, EventKind};
use crate::execution::{ExecutionId, TenantId};
use crate::projection::Projection;
use crate::store::archive::{self, Segment};
use crate::store::record;

/// What an archive pass did (or, in a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ArchiveReport {
    /// The seq the archive ended at before the pass (0: nothing archived).
    pub before: u64,
    /// The seq it ends at after (the same when nothing was due).
    pub through: u64,
    /// Executions the pass moved (would move) into the archive.
    pub executions: u64,
    /// Their events.
    pub events: u64,
    /// The segment written (none in a dry run or when nothing moved).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    /// Why it stopped where it did: the oldest execution after the new
    /// base that is not archived yet, and why (none when it reached the
    /// head).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_by: Option<String>,
}

/// The archive a verify checked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ArchiveVerified {
    /// Segments checked.
    pub segments: u64,
    /// Events they hold (seqs 1 to the live log's base).
    pub events: u64,
}

/// The refusal of an archive pass by a ledger that was not told where its
/// archive is (one in a database: the data directory's is the default).
pub(crate) fn no_archive() -> CommandError {
    CommandError::Unsupported(
        "archiving needs the archive's directory, which a ledger in a database is told of: `--archive DIR` (`LedgerBuilder::archive`)"
            .into(),
    )
}

/// What the pass knows of an execution of the live log.
struct Seen {
    tenant: TenantId,
    first: u64,
    last: u64,
    last_at: DateTime<Utc>,
    redacted: bool,
    /// Recorded in format 1, whose payloads cannot be redacted (so it
    /// does not wait for a redaction).
    unredactable: bool,
    held: bool,
}

/// How an archive pass decides: when each tenant's settled executions are
/// due (`None`: the tenant's are never archived), whether the tenant is
/// under legal hold, and whether one it has not redacted must wait for its
/// redaction first.
pub(crate) struct Due<'a> {
    /// Settled at or before this instant: due.
    pub(crate) cutoff: &'a dyn Fn(&TenantId) -> Option<DateTime<Utc>>,
    /// The tenant's policy holds all of it.
    pub(crate) held: &'a dyn Fn(&TenantId) -> bool,
    /// The tenant's policy redacts payloads: an execution not redacted yet
    /// waits (but in a dry run, where the pass's own redactions, due
    /// sooner, are taken as done).
    pub(crate) redacts: &'a dyn Fn(&TenantId) -> bool,
}

impl Ledger {
    /// Moves the settled history `due` names (a prefix of the log, whole
    /// executions) into a new segment of the archive; with `dry_run`, only
    /// says how far it would go.
    pub(crate) fn archive_due(
        &self,
        due: &Due<'_>,
        dry_run: bool,
    ) -> Result<ArchiveReport, CommandError> {
        let log = &*self.inner.log;
        if log.archive_dir().is_none() {
            return Err(no_archive());
        }
        let _one = super::lock(&self.inner.archiving);
        let (base, _) = log.base();
        let (head, live): (u64, std::collections::HashSet<ExecutionId>) = {
            let core = self.core();
            let live = core.projection.live().map(|e| e.execution_id).collect();
            (core.head.0, live)
        };
        let mut report = ArchiveReport {
            before: base,
            through: base,
            ..ArchiveReport::default()
        };
        // Each execution of the live log to the head, and each seq's.
        let mut seen: Vec<Seen> = Vec::new();
        let mut index: HashMap<ExecutionId, u32> = HashMap::new();
        // Each pause of the live log: its scope, and the seq of its
        // resume (none while it is in force). Like an execution, it is
        // open from its first entry to its last.
        let mut pauses: Vec<(crate::pause::PauseScope, Option<u64>)> = Vec::new();
        let mut paused: HashMap<crate::pause::PauseScope, usize> = HashMap::new();
        let mut order: Vec<Scanned> = Vec::new();
        for item in log.records(base + 1) {
            let (seq, bytes) = item?;
            if seq > head {
                break;
            }
            let event = match record::decode_entry(seq, &bytes)?.0 {
                Entry::Event(event) => event,
                Entry::Control(c) => {
                    let scope = c.kind.scope().clone();
                    order.push(match c.kind {
                        ControlKind::Paused { .. } => {
                            paused.insert(scope.clone(), pauses.len());
                            pauses.push((scope, None));
                            Scanned::Paused(pauses.len() - 1)
                        }
                        _ => {
                            // (A resume of a pause the base passed is
                            // not one: the fold refused it.)
                            let k = paused.remove(&scope).ok_or_else(|| {
                                StorageError::corrupt(
                                    seq,
                                    format!("{scope} is resumed, not paused"),
                                )
                            })?;
                            pauses[k].1 = Some(seq);
                            Scanned::Resumed
                        }
                    });
                    continue;
                }
            };
            let n = *index.entry(event.execution_id).or_insert_with(|| {
                seen.push(Seen {
                    tenant: event.tenant_id.clone(),
                    first: event.seq,
                    last: event.seq,
                    last_at: event.at,
                    redacted: false,
                    unredactable: false,
                    held: false,
                });
                (seen.len() - 1) as u32
            });
            let s = &mut seen[n as usize];
            s.unredactable |= bytes.first() == Some(&record::FORMAT_V1);
            // Its lifecycle: a retention event after it settled may stay in
            // the live log after its archived history.
            if !event.kind.follows_settling() {
                s.last = event.seq;
                s.last_at = event.at;
            }
            match event.kind {
                EventKind::Redacted { .. } => s.redacted = true,
                EventKind::LegalHold { .. } => s.held = true,
                EventKind::LegalHoldReleased { .. } => s.held = false,
                _ => {}
            }
            order.push(Scanned::Event(n, event.execution_id));
        }
        // Every record to the head, or the scan decides on less than the
        // projection it was taken with.
        if base + (order.len() as u64) < head {
            return Err(StorageError::new(
                ErrorKind::Io,
                format!(
                    "the log read stopped at seq {} before the ledger's head (seq {head}): the pass moves nothing",
                    base + order.len() as u64
                ),
            )
            .into());
        }
        // The last seq where nothing is open, before the first execution
        // that may not go.
        let mut open = 0u64;
        let mut archived = 0u64;
        let mut through = base;
        for (i, entry) in order.iter().enumerate() {
            let seq = base + 1 + i as u64;
            let (n, id) = match entry {
                Scanned::Event(n, id) => (n, id),
                // A pause is archived with its resume, and holds the base
                // before it while it is in force.
                Scanned::Paused(k) => {
                    if pauses[*k].1.is_none() {
                        report.kept_by = Some(format!(
                            "the pause of {} (seq {seq}): it is in force",
                            pauses[*k].0
                        ));
                        break;
                    }
                    open += 1;
                    continue;
                }
                Scanned::Resumed => {
                    open -= 1;
                    if open == 0 {
                        through = seq;
                        report.executions = archived;
                    }
                    continue;
                }
            };
            let s = &seen[*n as usize];
            if seq == s.first {
                let why = if live.contains(id) {
                    Some("it is not settled".to_owned())
                } else if s.held {
                    Some("it is under legal hold".to_owned())
                } else if (due.held)(&s.tenant) {
                    Some("its tenant is under legal hold".to_owned())
                } else if (due.redacts)(&s.tenant) && !s.redacted && !s.unredactable && !dry_run {
                    Some("its payloads are not redacted yet".to_owned())
                } else {
                    match (due.cutoff)(&s.tenant) {
                        None => Some(format!("tenant {} is not archived by the policy", s.tenant)),
                        Some(cutoff) if s.last_at > cutoff => Some(format!(
                            "it settled at {}, after the policy's point",
                            s.last_at.to_rfc3339()
                        )),
                        Some(_) => None,
                    }
                };
                if let Some(why) = why {
                    report.kept_by = Some(format!("{id} (seq {seq}): {why}"));
                    break;
                }
                open += 1;
            }
            if seq == s.last {
                open -= 1;
                archived += 1;
            }
            if open == 0 {
                through = seq;
                report.executions = archived;
            }
        }
        if through == base {
            return Ok(report);
        }
        report.through = through;
        report.events = through - base;
        if dry_run {
            return Ok(report);
        }
        let ids: Vec<Option<ExecutionId>> = order[..(through - base) as usize]
            .iter()
            .map(|entry| match entry {
                Scanned::Event(_, id) => Some(*id),
                Scanned::Paused(_) | Scanned::Resumed => None,
            })
            .collect();
        let path = log.write_segment(through, &ids)?;
        // As a command, with the ledger held (and on a shared log, its
        // end): what the segment holds is settled, so no event appended
        // since the scan changes it but a redaction (which the live log
        // may hold for an archived execution). Anything else (a hold) and
        // the pass moves nothing this time.
        let segment = path.clone();
        let stopped = super::Command::new(&self.inner, move |inner, core| {
            let moved: std::collections::HashSet<&ExecutionId> = ids.iter().flatten().collect();
            for item in inner.log.records(head + 1) {
                let (seq, bytes) = item?;
                if seq > core.head.0 {
                    break;
                }
                let Entry::Event(event) = record::decode_entry(seq, &bytes)?.0 else {
                    continue;
                };
                if moved.contains(&event.execution_id)
                    && !matches!(event.kind, EventKind::Redacted { .. })
                {
                    let why = format!(
                        "{} (seq {}): a {} event was recorded for it while the pass ran",
                        event.execution_id,
                        event.seq,
                        event.kind.name()
                    );
                    return Ok((Some(why), 0));
                }
            }
            inner.log.commit_archive(&segment)?;
            Ok((None, core.head.0))
        })
        .wait();
        let stopped = match stopped {
            Ok(stopped) => stopped,
            Err(e) => {
                // Another pass's lock, if any, goes with it.
                let _ = log.finish_archive();
                return Err(e);
            }
        };
        if let Some(why) = stopped {
            archive::remove(&path)?;
            log.finish_archive()?;
            report.through = base;
            report.events = 0;
            report.executions = 0;
            report.kept_by = Some(why);
            return Ok(report);
        }
        // What it holds leaves the database while commands go on.
        log.finish_archive()?;
        report.segment = Some(path.display().to_string());
        Ok(report)
    }

    /// Checks the ledger's archive and its
    /// link to the live log: its segments follow on from seq 1 without a
    /// gap, each record intact and chained to the one before, each
    /// segment's index and digest, every event decodable and a legal
    /// transition with nothing live at a segment's end, and the last
    /// segment ending on the live log's base. `progress(seq, head)` is
    /// called on the way.
    ///
    /// # Errors
    ///
    /// `Corrupt` naming the segment and the seq where the damage is; `Io`.
    pub(crate) fn verify_archive(
        &self,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ArchiveVerified, StorageError> {
        let log = &*self.inner.log;
        let head = self.core().head.0;
        let (base, base_hash) = log.base();
        let Some(dir) = log.archive_dir() else {
            if base == 0 {
                return Ok(ArchiveVerified::default());
            }
            return Err(StorageError::new(
                ErrorKind::Io,
                format!("seqs 1 to {base} are archived: name the archive to check them (`--archive DIR`)"),
            ));
        };
        let segments = archive::segments(&dir)?
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        // Their seqs first: gap-free from 1 to the base.
        let mut next = 1u64;
        for segment in &segments {
            if segment.first != next {
                return Err(gap(segment, next));
            }
            next = segment.last + 1;
        }
        let end = next - 1;
        if end != base {
            let what = if end < base {
                format!(
                    "the archive in {} ends at seq {end}, but the live log starts after seq {base} (if it was moved, `--archive DIR` names where it is)",
                    dir.display()
                )
            } else {
                format!(
                    "the archive in {} runs to seq {end}, past the live log's base (seq {base})",
                    dir.display()
                )
            };
            return Err(StorageError::new(ErrorKind::Corrupt, what).at_seq(next.min(base + 1)));
        }
        // Then what they hold.
        let (mut link, mut events) = (record::GENESIS, 0u64);
        let mut in_order = InOrder::default();
        for (i, segment) in segments.iter().enumerate() {
            if segment.prev != link {
                return Err(StorageError::corrupt(
                    segment.first,
                    format!(
                        "archive segment {} does not link to the record before it",
                        segment.path().display()
                    ),
                ));
            }
            check_segment(log, &segments[..i], segment, head, &mut in_order, progress)?;
            events += segment.last - segment.first + 1;
            link = segment.hash;
        }
        if link != base_hash {
            return Err(StorageError::corrupt(
                base,
                "the archive's last record is not the one the live log follows on from",
            ));
        }
        Ok(ArchiveVerified {
            segments: segments.len() as u64,
            events,
        })
    }
}

/// The error for a segment that does not start where the one before ended.
fn gap(segment: &Segment, next: u64) -> StorageError {
    StorageError::corrupt(
        next,
        format!(
            "the archive lacks seq {next}: segment {} starts at seq {}",
            segment.path().display(),
            segment.first
        ),
    )
}

/// What an archive pass found at one seq of the live log.
enum Scanned {
    /// An event of the execution `seen[n]`, of this id.
    Event(u32, ExecutionId),
    /// A pause, `pauses[k]`.
    Paused(usize),
    /// The resume of a pause before it.
    Resumed,
}

/// The entry of a record a segment holds.
fn archived_entry(
    log: &dyn crate::store::Store,
    seq: u64,
    stored: Vec<u8>,
) -> Result<Entry, StorageError> {
    let bytes = log.readable_archived(seq, stored)?;
    Ok(record::decode_entry(seq, &bytes)?.0)
}

/// The event of a record a segment holds.
fn archived_event(
    log: &dyn crate::store::Store,
    seq: u64,
    stored: Vec<u8>,
) -> Result<crate::event::Event, StorageError> {
    let bytes = log.readable_archived(seq, stored)?;
    Ok(record::decode_event(seq, &bytes)?.0)
}

/// Checks one segment (`before`: the segments before it, checked): its
/// records, index and digest, and its events folded from nothing live to
/// nothing live, in order after those checked before (`in_order`).
fn check_segment(
    log: &dyn crate::store::Store,
    before: &[Segment],
    segment: &Segment,
    head: u64,
    in_order: &mut InOrder,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), StorageError> {
    let mut projection = Projection::empty_at(segment.first - 1);
    let mut states: HashMap<ExecutionId, Option<crate::execution::BackgroundExecution>> =
        HashMap::new();
    segment.check(|seq, stored| {
        let entry = archived_entry(log, seq, stored.to_vec())?;
        in_order.check(seq, &entry)?;
        let event = match entry {
            Entry::Event(event) => event,
            Entry::Control(c) => {
                fold_control(&mut projection, seq, &c)?;
                progress(seq, head);
                return Ok(None);
            }
        };
        // Each execution's events through the machine (retention events
        // after settling too), and the projection for what is live. A
        // retention event can follow an execution an earlier segment
        // holds: folded from there.
        let id = event.execution_id;
        if !states.contains_key(&id) && event.kind.follows_settling() {
            let mut earlier = None;
            for seg in before {
                for s in seg.seqs_of(&id)? {
                    let stored = seg
                        .record(s)?
                        .ok_or_else(|| StorageError::corrupt(s, "archived record is missing"))?;
                    crate::machine::apply(&mut earlier, &archived_event(log, s, stored)?)
                        .map_err(illegal(s))?;
                }
            }
            states.insert(id, earlier);
        }
        let state = states.entry(id).or_default();
        crate::machine::apply(state, &event).map_err(illegal(seq))?;
        projection.apply(&event).map_err(illegal(seq))?;
        progress(seq, head);
        Ok(Some(event.execution_id))
    })?;
    if let Some(live) = projection.live().next() {
        return Err(StorageError::corrupt(
            segment.last,
            format!(
                "archive segment {} ends with {} still live",
                segment.path().display(),
                live.execution_id
            ),
        ));
    }
    if let Some(p) = projection.pauses().next() {
        return Err(StorageError::corrupt(
            segment.last,
            format!(
                "archive segment {} ends with {} paused",
                segment.path().display(),
                p.scope
            ),
        ));
    }
    Ok(())
}
