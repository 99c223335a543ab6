//! Folding the log: replay from a snapshot or the start, snapshots, and the
//! checks a fold makes on the way.

use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::event::{Entry, Event};
use crate::execution::BackgroundExecution;
use crate::machine;
use crate::projection::{Projection, SnapshotEntry};
use crate::store::record::{self, Hash};
use crate::store::{checked_records, Bytes, Store};

#[derive(Serialize, Deserialize)]
pub(super) struct Snapshot {
    pub(super) seq: u64,
    pub(super) hash: String,
    pub(super) entries: Vec<SnapshotEntry>,
    /// The tenants' turns (`fair.rs`; absent from snapshots written before
    /// they were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) turns:
        Option<std::collections::BTreeMap<crate::execution::TenantId, crate::fair::Turn>>,
    /// The pauses in force (`pause.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) pauses: Vec<crate::pause::Pause>,
}

/// What a fold of the log checks of its entries beyond the state machine:
/// each dated no earlier than the one before, and no execution queued
/// twice (the projection holds live executions only, so a settled one
/// queued again would be taken for a new one). Verify, the archive's check
/// and an import each fold through one.
#[derive(Default)]
pub(super) struct InOrder {
    last_at: Option<chrono::DateTime<chrono::Utc>>,
    queued: std::collections::HashSet<crate::execution::ExecutionId>,
}

impl InOrder {
    /// Checks `entry`, at `seq`, against those before it.
    ///
    /// # Errors
    ///
    /// `Corrupt` at `seq`.
    pub(super) fn check(&mut self, seq: u64, entry: &Entry) -> Result<(), StorageError> {
        if self.last_at.is_some_and(|last| entry.at() < last) {
            return Err(StorageError::corrupt(
                seq,
                "event is dated before the one before it",
            ));
        }
        self.last_at = Some(entry.at());
        if let Entry::Event(e) = entry {
            if matches!(e.kind, crate::event::EventKind::Queued(_))
                && !self.queued.insert(e.execution_id)
            {
                return Err(StorageError::corrupt(
                    seq,
                    format!("{} is queued a second time", e.execution_id),
                ));
            }
        }
        Ok(())
    }

    /// How many executions were queued among the entries checked.
    pub(super) fn executions(&self) -> u64 {
        self.queued.len() as u64
    }
}

/// The error for an event the state machine refuses, found in the log.
pub(super) fn illegal(seq: u64) -> impl FnOnce(machine::TransitionError) -> StorageError {
    move |e| StorageError::corrupt(seq, format!("illegal transition in the log: {e}"))
}

/// An execution settled by an event: it, the seq of its first event, and
/// the seqs of all its events.
pub(super) type Settled = Option<(BackgroundExecution, u64, Vec<u64>)>;

/// Decodes stored record `seq` and folds its entry into `projection`.
pub(super) fn fold_record(
    projection: &mut Projection,
    seq: u64,
    bytes: &[u8],
) -> Result<(Entry, Settled), StorageError> {
    match record::parse_entry(seq, bytes)? {
        Entry::Event(event) => {
            let settled = projection.apply_tracked(&event).map_err(illegal(seq))?;
            Ok((Entry::Event(event), settled))
        }
        Entry::Control(control) => {
            fold_control(projection, seq, &control)?;
            Ok((Entry::Control(control), None))
        }
    }
}

/// Folds the control entry at `seq`, found in the log, into `projection`.
///
/// # Errors
///
/// `Corrupt` at `seq` when the projection refuses it.
pub(super) fn fold_control(
    projection: &mut Projection,
    seq: u64,
    control: &crate::event::Control,
) -> Result<(), StorageError> {
    projection
        .apply_control(control)
        .map(drop)
        .map_err(|e| StorageError::corrupt(seq, format!("illegal control entry in the log: {e}")))
}

/// Checks the live projection against a fold of the log to `seq`.
pub(super) fn same_as_fold(
    live: &Projection,
    fold: &Projection,
    seq: u64,
) -> Result<(), StorageError> {
    match live.difference(fold) {
        None => Ok(()),
        Some(diff) => Err(StorageError::corrupt(
            seq,
            format!("the live projection differs from the fold: {diff}"),
        )),
    }
}

/// An execution's seqs: those the index holds and those a projection holds
/// while it is live (an execution can be in both around the time it settles,
/// and in ledgers written with the per-event index).
pub(super) fn union(mut indexed: Vec<u64>, live: &[u64]) -> Vec<u64> {
    if !live.is_empty() {
        indexed.extend_from_slice(live);
        indexed.sort_unstable();
        indexed.dedup();
    }
    indexed
}

/// `seqs`, an execution's seqs in the live log, with those the archive
/// holds of it (an archived execution's retention events after it settled
/// can be in the live log).
pub(super) fn with_archived(
    log: &dyn Store,
    id: &crate::execution::ExecutionId,
    seqs: Vec<u64>,
) -> Result<Vec<u64>, StorageError> {
    if log.base().0 == 0 {
        return Ok(seqs);
    }
    // Whole in the live log when its first event there is no retention
    // event (then the archive is not read: it may have been moved).
    if let Some(&first) = seqs.first() {
        if !read_event(log, first)?.kind.follows_settling() {
            return Ok(seqs);
        }
    }
    Ok(union(log.archived_seqs(id)?, &seqs))
}

/// The entry at `seq`: an execution's event or a control entry.
pub(super) fn read_entry(log: &dyn Store, seq: u64) -> Result<Entry, StorageError> {
    let bytes = log
        .record(seq)?
        .ok_or_else(|| StorageError::corrupt(seq, "record is missing"))?;
    Ok(record::decode_entry(seq, &bytes)?.0)
}

/// The event at `seq`, one an execution's index names (a control entry
/// there is damage).
pub(super) fn read_event(log: &dyn Store, seq: u64) -> Result<Event, StorageError> {
    let bytes = log
        .record(seq)?
        .ok_or_else(|| StorageError::corrupt(seq, "record is missing"))?;
    Ok(record::decode_event(seq, &bytes)?.0)
}

/// What the engine indexes of each event from a seq on, as a replay
/// folded them in: the event's seq, and the execution it settled.
pub(super) type Unindexed = Vec<(u64, Option<crate::store::Settled>)>;

/// Folds the log from the newest usable snapshot at or below `to` (or with
/// `from_snapshot` unset, from its first event) up to `to`, checking every
/// record and link on the way. Returns the projection, the hash of record
/// `to`, and for each event from `tail` on that it folded in, what the
/// engine indexes of it.
pub(super) fn replay(
    log: &dyn Store,
    to: u64,
    from_snapshot: bool,
    tail: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Projection, Hash, Unindexed), StorageError> {
    // The log starts after its base (nothing was live there).
    let base = log.base();
    let (mut projection, mut prev) = (Projection::empty_at(base.0), base.1);
    let snapshots = log
        .snapshots_below(to)
        .filter(|_| from_snapshot)
        .filter(|snap| snap.as_ref().map_or(true, |(seq, _)| *seq > base.0));
    for snap in snapshots {
        let (seq, bytes) = snap?;
        match load_snapshot(log, seq, &bytes) {
            Ok((p, hash)) => {
                (projection, prev) = (p, hash);
                break;
            }
            Err(e) => tracing::warn!(seq, error = %e, "ignoring a damaged snapshot"),
        }
    }
    let from = projection.seq() + 1;
    if from > to {
        return Ok((projection, prev, Vec::new()));
    }
    let mut settled_tail = Vec::new();
    // Two stages on two threads: one reads and checks records (sled's
    // iterator, the hash of each, the links), the other decodes and folds.
    std::thread::scope(|scope| {
        let (tx, rx) =
            std::sync::mpsc::sync_channel::<Vec<Result<(u64, Bytes, Hash), StorageError>>>(8);
        scope.spawn(move || {
            let mut batch = Vec::with_capacity(REPLAY_BATCH);
            for item in checked_records(log, from, to, prev) {
                batch.push(item);
                if batch.len() == REPLAY_BATCH && tx.send(std::mem::take(&mut batch)).is_err() {
                    return;
                }
            }
            let _ = tx.send(batch);
        });
        for batch in rx {
            for item in batch {
                let (seq, bytes, hash) = item?;
                let (entry, settled) = fold_record(&mut projection, seq, &bytes)?;
                if seq >= tail {
                    let Entry::Event(event) = entry else {
                        // A control entry: nothing to index.
                        settled_tail.push((seq, None));
                        prev = hash;
                        progress(seq, to);
                        continue;
                    };
                    let settled = match settled {
                        Some((e, first, seqs)) => Some(crate::store::Settled::new(&e, first, seqs)),
                        // A redaction or hold after a settled execution:
                        // its index entry and its redaction are written
                        // again too.
                        None if projection.follows_settled(&event) => {
                            Some(settled_again(log, &event)?)
                        }
                        None => None,
                    };
                    settled_tail.push((seq, settled));
                }
                prev = hash;
                progress(seq, to);
            }
        }
        Ok((projection, prev, settled_tail))
    })
}

/// An event after settling (redaction, legal hold, retry by hand) of a
/// settled execution,
/// which the projection leaves out ([`Projection::follows_settled`]): the
/// state machine's answer to it against the execution as its events before
/// it fold — the execution after it, and what the engine indexes again
/// (its seqs, this one's last, and its line). The one place that folds
/// such an event: appending it, replaying the log's tail, verify and the
/// index rebuild all ask here.
///
/// # Errors
///
/// `Corrupt` for damage in the execution's events (the outer error); the
/// state machine's refusal (the inner one).
pub(super) fn after_settled(
    log: &dyn Store,
    event: &Event,
) -> Result<
    Result<(BackgroundExecution, crate::store::Settled), machine::TransitionError>,
    StorageError,
> {
    let id = event.execution_id;
    let mut seqs: Vec<u64> = with_archived(log, &id, log.execution_seqs(&id)?)?
        .into_iter()
        .filter(|s| *s < event.seq)
        .collect();
    let mut state = None;
    for &seq in &seqs {
        let before = read_event(log, seq)?;
        if before.execution_id != id {
            return Err(StorageError::corrupt(
                seq,
                format!("index entry of {id} names another execution's event"),
            ));
        }
        machine::apply(&mut state, &before).map_err(illegal(seq))?;
    }
    if let Err(refused) = machine::apply(&mut state, event) {
        return Ok(Err(refused));
    }
    let after = state.expect("the state machine accepts no event of an unknown execution");
    let first = seqs.first().copied().unwrap_or(event.seq);
    seqs.push(event.seq);
    let settled = crate::store::Settled::new(&after, first, seqs);
    Ok(Ok((after, settled)))
}

/// [`after_settled`] for an event found in the log, where a refusal is
/// damage at its seq.
pub(super) fn settled_again(
    log: &dyn Store,
    event: &Event,
) -> Result<crate::store::Settled, StorageError> {
    Ok(after_settled(log, event)?.map_err(illegal(event.seq))?.1)
}

/// Records handed from the reading to the folding stage of a replay at once.
const REPLAY_BATCH: usize = 512;

pub(super) fn load_snapshot(
    log: &dyn Store,
    seq: u64,
    bytes: &[u8],
) -> Result<(Projection, Hash), StorageError> {
    let snap: Snapshot = serde_json::from_slice(bytes)
        .map_err(|e| StorageError::corrupt(seq, format!("snapshot does not decode: {e}")))?;
    let hash = record::from_hex(&snap.hash)
        .ok_or_else(|| StorageError::corrupt(seq, "snapshot hash is malformed"))?;
    let bytes = log
        .record(seq)?
        .ok_or_else(|| StorageError::corrupt(seq, "the snapshot's record is missing"))?;
    if record::decode(seq, &bytes)?.hash != hash || snap.seq != seq {
        return Err(StorageError::corrupt(
            seq,
            "snapshot does not belong to this log",
        ));
    }
    Ok((
        Projection::from_entries(seq, snap.entries, snap.turns, snap.pauses),
        hash,
    ))
}
