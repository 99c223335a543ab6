//! Checking the ledger against its log: verify, rebuilding the index, and
//! comparing the projection with a fresh fold.

use std::collections::HashMap;

use super::replay::{
    fold_record, illegal, load_snapshot, same_as_fold, settled_again, union, InOrder,
};
use super::report::{head_of, IndexRebuild, VerifyReport};
use super::Ledger;
use crate::error::{ErrorKind, StorageError};
use crate::event::{Entry, EventKind};
use crate::execution::ExecutionId;
use crate::projection::Projection;
use crate::store::record::GENESIS;
use crate::store::{checked_records, Listed, Settled};

impl Ledger {
    /// Walks the whole log and checks it — from its archive's segments
    /// (when it has archived: the segments of its archive) into the live
    /// log: seqs gap-free from 1, every record
    /// intact and chained to the one before, every event decodable, dated in
    /// order and a legal transition, the index one for one with the events,
    /// the checkpoint on the chain, and stored snapshots and the live
    /// projection equal to a fresh fold.
    ///
    /// # Errors
    ///
    /// `Corrupt` naming the first bad seq (or `LostSuffix`, or `Checkpoint`
    /// when the checkpoint is missing or damaged); never panics on damaged
    /// data.
    pub fn verify(&self) -> Result<VerifyReport, StorageError> {
        self.verify_with_progress(|_, _| {})
    }

    /// [`verify`](Self::verify), calling `progress(seq, head)` on the way.
    ///
    /// # Errors
    ///
    /// As [`verify`](Self::verify).
    pub fn verify_with_progress(
        &self,
        progress: impl FnMut(u64, u64),
    ) -> Result<VerifyReport, StorageError> {
        self.verify_all(progress)
    }

    fn verify_all(&self, mut progress: impl FnMut(u64, u64)) -> Result<VerifyReport, StorageError> {
        // No archive pass moves the index under the walk.
        let _archiving = super::lock(&self.inner.archiving);
        let log = &*self.inner.log;
        let head = self.core().head;
        // The archive first (the chain's start), when there is one (or a
        // segment lies where a ledger that archived nothing has its
        // archive).
        let segments = match log.archive_dir() {
            Some(dir) if log.base().0 == 0 => !crate::store::archive::segments(&dir)?.is_empty(),
            _ => false,
        };
        let archive = match log.base().0 {
            0 if !segments => None,
            _ => Some(self.verify_archive(&mut progress)?),
        };
        let mut snapshots = log
            .snapshot_seqs()?
            .into_iter()
            .filter(|s| *s <= head.0)
            .peekable();
        let mut snapshots_checked = 0;
        // The live log starts after its base; what is archived is checked
        // by `verify_archive`.
        let base = log.base();
        let mut projection = Projection::empty_at(base.0);
        let mut prev = base.1;
        let mut in_order = InOrder::default();
        let mut last = base.0;
        let mut fingerprint = 0u64;
        // Control entries, which no execution's index holds.
        let mut controls = 0u64;
        let (mut listed_fp, mut listed_expected) = (0u64, 0u64);
        // Executions whose records lack their payloads, by the first such
        // seq, until their `redacted` event is met.
        let mut stripped: HashMap<ExecutionId, u64> = HashMap::new();
        for item in checked_records(log, base.0 + 1, head.0, base.1) {
            let (seq, bytes, hash) = item?;
            let (entry, settled) = fold_record(&mut projection, seq, &bytes)?;
            in_order.check(seq, &entry)?;
            // A control entry belongs to no execution: the fold checked it.
            controls += u64::from(matches!(entry, Entry::Control(_)));
            if let Entry::Event(event) = &entry {
                let id = event.execution_id;
                if crate::store::record::is_stripped(&bytes) {
                    stripped.entry(id).or_insert(seq);
                }
                if projection.follows_settled(event) {
                    // The fold leaves the settled execution out: checked
                    // against its history up to here.
                    let again = settled_again(log, event)?;
                    // A redaction written (visible: its seal, which removes the
                    // payloads, is done) leaves none in the records before it.
                    if matches!(event.kind, EventKind::Redacted { .. }) && seq <= log.visible() {
                        for &s in &again.seqs[..again.seqs.len() - 1] {
                            let bytes = log
                                .record(s)?
                                .ok_or_else(|| StorageError::corrupt(s, "record is missing"))?;
                            if crate::store::record::holds_payloads(&bytes) {
                                return Err(StorageError::corrupt(
                                    s,
                                    format!("record still holds payloads of {id}, which was redacted at seq {seq}"),
                                ));
                            }
                        }
                    }
                }
                if matches!(event.kind, EventKind::Redacted { .. }) {
                    stripped.remove(&id);
                }
                if let Some((e, first, seqs)) = settled {
                    let line = Settled::new(&e, first, seqs).listed;
                    listed_fp = listed_fp.wrapping_add(listed_fingerprint(&line));
                    listed_expected += 1;
                }
                fingerprint = fingerprint.wrapping_add(index_fingerprint(&event.execution_id, seq));
            }
            while let Some(s) = snapshots.next_if(|s| *s <= seq) {
                if s == seq {
                    let bytes = log.snapshots_below(s).next().transpose()?.map(|(_, b)| b);
                    let stored = bytes
                        .ok_or_else(|| StorageError::corrupt(s, "snapshot vanished"))
                        .and_then(|b| load_snapshot(log, s, &b))?;
                    if let Some(diff) = stored.0.difference(&projection) {
                        return Err(StorageError::corrupt(
                            s,
                            format!("stored snapshot differs from the fold: {diff}"),
                        ));
                    }
                    snapshots_checked += 1;
                }
            }
            prev = hash;
            last = seq;
            progress(seq, head.0);
        }
        if prev != head.1 {
            return Err(StorageError::corrupt(
                last,
                "the last record is not the head this ledger wrote",
            ));
        }
        if let Some((id, seq)) = stripped.into_iter().min_by_key(|(_, seq)| *seq) {
            return Err(StorageError::corrupt(
                seq,
                format!("record lacks its payloads, yet {id} was never redacted"),
            ));
        }
        log.check_tail_now()?;
        // Every event is in its execution's index entry once the execution
        // is settled, and among the live seqs of the fold while it is live
        // (an execution settled after `last` can be in both).
        let mut index_entries = 0u64;
        let mut index_fp = 0u64;
        let mut count = |id: &ExecutionId, seqs: &[u64]| {
            for &seq in seqs.iter().filter(|s| **s <= last) {
                index_entries += 1;
                index_fp = index_fp.wrapping_add(index_fingerprint(id, seq));
            }
        };
        let mut live: HashMap<ExecutionId, &[u64]> = projection
            .live()
            .map(|e| e.execution_id)
            .map(|id| (id, projection.seqs(&id).unwrap_or_default()))
            .collect();
        for group in log.index_groups() {
            let (id, seqs) = group?;
            count(&id, &union(seqs, live.remove(&id).unwrap_or_default()));
        }
        for (id, seqs) in &live {
            count(id, seqs);
        }
        if index_entries != last - base.0 - controls || index_fp != fingerprint {
            return Err(StorageError::new(
                ErrorKind::Corrupt,
                format!(
                    "the per-execution index ({index_entries} entries) does not match the log ({} events)",
                    last - base.0 - controls
                ),
            ));
        }
        // The list of settled executions holds each execution the fold
        // settled, as it settled, and nothing else (the line of one
        // submitted by `last` that settled after it, at the seq the fold
        // has it submitted, is left out).
        let (mut listed, mut listed_found) = (0u64, 0u64);
        for line in log.listed_before(last + 1) {
            let line = line?;
            if projection.submitted(&line.id) != Some(line.seq) {
                listed = listed.wrapping_add(listed_fingerprint(&line));
                listed_found += 1;
            }
        }
        if (listed_found, listed) != (listed_expected, listed_fp) {
            let how = if listed_found == listed_expected {
                "differs from"
            } else {
                "does not match"
            };
            return Err(StorageError::new(
                ErrorKind::Corrupt,
                format!(
                    "the list of settled executions ({listed_found} entries) {how} the log ({listed_expected} settled executions)"
                ),
            ));
        }
        let core = self.core();
        let projection_compared = core.head.0 == last;
        if projection_compared {
            same_as_fold(&core.projection, &projection, last)?;
        }
        Ok(VerifyReport {
            events: last - base.0,
            archived: base.0,
            archive,
            executions: in_order.executions(),
            index_entries,
            snapshots: snapshots_checked,
            projection_compared,
            head: head_of(&head),
        })
    }

    /// Rebuilds the per-execution and name index and the list of settled
    /// executions from the log, which is their only source: folds every
    /// event, writes each settled execution's entry and line and each name,
    /// removes every entry the log does not imply (a
    /// damaged one, or one of the older one-per-event layout), and takes a
    /// snapshot. Writes wait while it runs; it holds the index's keys in
    /// memory (tens of bytes per execution).
    ///
    /// # Errors
    ///
    /// `Corrupt` (with the seq) for damage in the log, or when the live
    /// projection differs from the fold; `Io`.
    pub fn rebuild_index(&self) -> Result<IndexRebuild, StorageError> {
        let _archiving = super::lock(&self.inner.archiving);
        let mut core = self.core();
        let log = &*self.inner.log;
        let base = log.base();
        let mut projection = Projection::empty_at(base.0);
        let (mut events, mut settled) = (0, 0);
        let mut folded = checked_records(log, base.0 + 1, core.head.0, base.1).filter_map(|item| {
            let folded = (|| {
                let (seq, bytes, _) = item?;
                let (entry, done) = fold_record(&mut projection, seq, &bytes)?;
                events += 1;
                // A control entry is indexed under no execution.
                let Entry::Event(event) = entry else {
                    return Ok(None);
                };
                settled += u64::from(done.is_some());
                let settles = match done {
                    Some((e, first, seqs)) => Some(crate::store::Settled::new(&e, first, seqs)),
                    // Its index entry holds the seqs of what follows it too.
                    None if projection.follows_settled(&event) => Some(settled_again(log, &event)?),
                    None => None,
                };
                Ok(Some((event, settles)))
            })();
            folded.transpose()
        });
        let removed = log.rebuild_index(&mut folded)?;
        drop(folded);
        same_as_fold(&core.projection, &projection, core.head.0)?;
        // Live executions' seqs complete, whatever snapshot they came from.
        core.projection = projection;
        self.inner.write_snapshot(&core)?;
        drop(core);
        log.flush()?;
        Ok(IndexRebuild {
            events,
            settled,
            removed,
        })
    }

    /// Checks that the log still leads to `kept`, a head printed earlier
    /// (`ledger head --json`) and kept outside the ledger: the log reaches
    /// its seq and its record there has its hash. With [`verify`](Self::verify)
    /// (the chain intact from seq 1), this proves that no event up to it was
    /// changed or removed — also where the ledger's own checkpoint lives
    /// beside the log (the head row of a database), which whoever can
    /// rewrite the log can rewrite too.
    ///
    /// # Errors
    ///
    /// `LostSuffix` when the log ends before `kept`'s seq, `Corrupt` at it
    /// when its record is another.
    pub fn check_head(&self, kept: &super::Head) -> Result<(), StorageError> {
        let now = self.head();
        if kept.seq > now.seq {
            return Err(StorageError::new(
                ErrorKind::LostSuffix,
                format!(
                    "the log ends at seq {} before seq {} of the head kept elsewhere",
                    now.seq, kept.seq
                ),
            )
            .at_seq(now.seq + 1));
        }
        let hash = match kept.seq {
            0 => crate::store::record::hex(&GENESIS),
            seq => {
                let bytes = self
                    .inner
                    .log
                    .record(seq)?
                    .ok_or_else(|| StorageError::corrupt(seq, "record is missing"))?;
                crate::store::record::hex(&crate::store::record::decode(seq, &bytes)?.hash)
            }
        };
        if !hash.eq_ignore_ascii_case(&kept.hash) {
            return Err(StorageError::corrupt(
                kept.seq,
                format!(
                    "the record at seq {} is not the one the head kept elsewhere names (hash {hash}, not {})",
                    kept.seq, kept.hash
                ),
            ));
        }
        Ok(())
    }

    /// Compares the live projection with a fold of the whole log from
    /// scratch (no snapshot).
    ///
    /// # Errors
    ///
    /// `Corrupt` naming the difference.
    pub fn check_projection(&self) -> Result<(), StorageError> {
        let core = self.core();
        let base = self.inner.log.base().0;
        let mut fresh = Projection::empty_at(base);
        for event in self.events(base + 1, Some(core.head.0)) {
            let event = event?;
            fresh.apply(&event).map_err(illegal(event.seq))?;
        }
        same_as_fold(&core.projection, &fresh, core.head.0)
    }
}

fn index_fingerprint(id: &ExecutionId, seq: u64) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(id.as_bytes());
    h.update(&seq.to_be_bytes());
    u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"))
}

/// A fingerprint of one line of the list of settled executions: the sum of
/// the lines' fingerprints tells whether a list holds exactly the lines
/// expected.
fn listed_fingerprint(line: &Listed) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    (
        line.seq,
        line.id,
        line.tenant.as_str(),
        line.callable.as_str(),
        line.status.as_str(),
        line.queued_ns(),
    )
        .hash(&mut h);
    h.finish()
}
