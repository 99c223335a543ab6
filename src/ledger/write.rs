//! The write path: a command is decided against the projection, its events
//! are appended after the head the projection is as of, and folded in.

use chrono::{DateTime, Utc};

use super::{Core, Inner, Snapshot, Submitted};
use crate::command::Op;
use crate::error::{CommandError, ErrorKind, StorageError};
use crate::event::{Control, Entry, Event, EventKind, Submission};
use crate::execution::{BackgroundExecution, ExecutionId, TenantId};
use crate::metrics;
use crate::pause::Pause;
use crate::store::record;
use crate::store::{AppendError, Draft, Drafted, Name, StoredRecord};

use super::replay::{fold_record, read_entry, read_event};

/// An appended event, and the execution it settled, if it did.
type Appended = (Event, Option<BackgroundExecution>);

/// What a command answers.
pub(super) enum Outcome {
    /// A submit's.
    Submitted(Submitted),
    /// A batch submit's, in the order of its submissions.
    SubmittedMany(Vec<Submitted>),
    /// A claim's: the executions whose attempts started.
    Claimed(Vec<BackgroundExecution>),
    /// A command against one execution: the execution after it.
    Execution(BackgroundExecution),
    /// Recovering abandoned executions, or expiring leases: each as it is
    /// now.
    Recovered(Vec<BackgroundExecution>),
}

/// Refuses a write once an earlier one failed (`Poisoned`).
fn writable(core: &Core) -> Result<(), CommandError> {
    match core.poisoned {
        true => Err(StorageError::new(
            ErrorKind::Poisoned,
            "an earlier write failed; reopen the ledger",
        )
        .into()),
        false => Ok(()),
    }
}

impl Inner {
    /// Carries out `op` (on `scope`'s executions only, when set): decides
    /// its events against the projection, appends them and folds them in,
    /// deciding again after catching up when another writer appended
    /// first. Returns the answer and the seq that must be durable before it
    /// is given (0: none).
    pub(super) fn carry_out(
        &self,
        core: &mut Core,
        scope: Option<&TenantId>,
        op: &Op,
    ) -> Result<(Outcome, u64), CommandError> {
        loop {
            self.refresh(core);
            let now = self.tick(core);
            if matches!(op, Op::ExpireLeases) {
                self.hear_renewals(core, now)?;
            }
            if let Op::Submit(tenant, submission) = op {
                if let Some(first) = self.idempotent(core, tenant, submission)? {
                    // The first submit may still be syncing: answer once it
                    // is durable.
                    return Ok((Outcome::Submitted(first), core.head.0));
                }
            }
            // A batch's submissions that an idempotency key already answers.
            let mut known: Vec<Option<Submitted>> = match op {
                Op::SubmitMany(tenant, items) => items
                    .iter()
                    .map(|s| self.idempotent(core, tenant, s))
                    .collect::<Result<_, _>>()?,
                _ => Vec::new(),
            };
            let mut events = op.decide(
                &mut core.projection,
                &core.leases,
                scope,
                |id| self.load_to_change(id),
                now,
            )?;
            if !known.is_empty() {
                let mut i = 0;
                events.retain(|_| {
                    i += 1;
                    known[i - 1].is_none()
                });
                if events.is_empty() {
                    let all = known.into_iter().flatten().collect();
                    return Ok((Outcome::SubmittedMany(all), core.head.0));
                }
            }
            if events.is_empty() {
                let nothing = match op {
                    Op::RecoverAbandoned | Op::ExpireLeases => Outcome::Recovered(Vec::new()),
                    Op::SubmitMany(..) => Outcome::SubmittedMany(Vec::new()),
                    Op::Claim(_) => Outcome::Claimed(Vec::new()),
                    Op::Submit(..) => unreachable!("a submit decides one event"),
                    // An answer the execution records already: as it is.
                    Op::On(id, _) => {
                        let e = match core.projection.get(id) {
                            Some(e) => e.clone(),
                            None => self.load(*id)?.ok_or(CommandError::NotFound(*id))?,
                        };
                        // The first answer may still be syncing: answer the
                        // repeat once it is durable.
                        return Ok((Outcome::Execution(e), core.head.0));
                    }
                };
                return Ok((nothing, 0));
            }
            let Some(mut out) = self.append_locked(core, events, now)? else {
                continue;
            };
            let last = out.last().map_or(0, |(e, _)| e.seq);
            let after = |(event, settled): Appended| {
                settled.unwrap_or_else(|| {
                    core.projection
                        .get(&event.execution_id)
                        .expect("an execution its event did not settle is live")
                        .clone()
                })
            };
            let outcome = match op {
                Op::Submit(..) => Outcome::Submitted(Submitted {
                    execution: after(out.pop().expect("one event appended")),
                    created: true,
                }),
                Op::SubmitMany(..) => {
                    let mut new = out.into_iter().map(after);
                    let all = known
                        .iter_mut()
                        .map(|k| {
                            k.take().unwrap_or_else(|| Submitted {
                                execution: new.next().expect("one event per new submission"),
                                created: true,
                            })
                        })
                        .collect();
                    Outcome::SubmittedMany(all)
                }
                Op::Claim(_) => {
                    self.log
                        .counters()
                        .claims
                        .fetch_add(out.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    Outcome::Claimed(out.into_iter().map(after).collect())
                }
                Op::RecoverAbandoned | Op::ExpireLeases => {
                    Outcome::Recovered(out.into_iter().map(after).collect())
                }
                Op::On(..) => Outcome::Execution(after(out.pop().expect("one event appended"))),
            };
            return Ok((outcome, last));
        }
    }

    /// The execution a submit's idempotency key already names, when the
    /// tenant used the key before for the same submission; a conflict when
    /// it used it for another.
    fn idempotent(
        &self,
        core: &Core,
        tenant: &TenantId,
        submission: &Submission,
    ) -> Result<Option<Submitted>, CommandError> {
        let Some(key) = &submission.idempotency_key else {
            return Ok(None);
        };
        let Some(id) = self.log.named(Name::Idempotency(tenant, key))? else {
            return Ok(None);
        };
        // The key answers the first execution only for the same submission;
        // another one under the same key is a conflict.
        let first = match core.projection.seqs(&id).and_then(|s| s.first()) {
            Some(&seq) => Some(seq),
            None => self.log.execution_seqs(&id)?.first().copied(),
        };
        let original = first.map(|seq| read_event(&*self.log, seq)).transpose()?;
        let execution = match core.projection.get(&id) {
            Some(e) => e.clone(),
            None => self.load(id)?.ok_or_else(|| {
                StorageError::new(
                    ErrorKind::Corrupt,
                    format!("idempotency key names {id}, which has no events"),
                )
            })?,
        };
        // Once redacted, all but its payloads tell.
        let same = |first: &Submission| {
            *first == *submission
                || execution.redacted_at.is_some()
                    && record::redacted_submission(first) == record::redacted_submission(submission)
        };
        match original.map(|e| e.kind) {
            Some(EventKind::Queued(first)) if same(&first) => {}
            Some(EventKind::Queued(_)) => {
                return Err(CommandError::IdempotencyConflict {
                    key: key.clone(),
                    execution: id,
                })
            }
            _ => {
                return Err(StorageError::new(
                    ErrorKind::Corrupt,
                    format!("idempotency key names {id}, whose first event is not queued"),
                )
                .into())
            }
        }
        Ok(Some(Submitted {
            execution,
            created: false,
        }))
    }

    /// Checks events (at most one per execution) against the projection,
    /// appends them after the head it is as of, and folds them in; returns
    /// them with the executions they settled. `None` when another writer
    /// appended first: the projection has caught up with it, and the
    /// command is to be decided again.
    fn append_locked(
        &self,
        core: &mut Core,
        kinds: Vec<(ExecutionId, TenantId, EventKind)>,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<Appended>>, CommandError> {
        let at = now.max(core.last_at);
        let events: Vec<Event> = kinds
            .into_iter()
            .zip(core.head.0 + 1..)
            .map(|((execution_id, tenant_id, kind), seq)| Event {
                seq,
                at,
                execution_id,
                tenant_id,
                kind,
            })
            .collect();
        self.append_events(core, events, &[])
    }

    /// [`append_locked`](Self::append_locked) of `events`, numbered from
    /// the head on and timed already; `copied` is empty, or holds the
    /// record of each as another ledger wrote it, readable (an import).
    pub(super) fn append_events(
        &self,
        core: &mut Core,
        events: Vec<Event>,
        copied: &[&[u8]],
    ) -> Result<Option<Vec<Appended>>, CommandError> {
        writable(core)?;
        debug_assert!(copied.is_empty() || copied.len() == events.len());
        debug_assert!(events
            .iter()
            .zip(core.head.0 + 1..)
            .all(|(e, seq)| e.seq == seq && e.at >= core.last_at));
        // A batch holds at most one event per execution, so each is checked
        // against the projection as it stands.
        debug_assert!(events.iter().enumerate().all(|(i, e)| events[..i]
            .iter()
            .all(|other| other.execution_id != e.execution_id)));
        // A settled execution that a retention event follows, as it leaves
        // it (it stays out of the projection).
        let mut kept: Vec<Option<BackgroundExecution>> = vec![None; events.len()];
        {
            let at = events.last().map_or(core.last_at, |e| e.at);
            let mut settles = Vec::with_capacity(events.len());
            for (i, event) in events.iter().enumerate() {
                if core.projection.follows_settled(event) {
                    let (settled, after) = self.retained(event)?;
                    settles.push(Some(settled));
                    kept[i] = Some(after);
                } else {
                    settles.push(core.projection.check_settles(event)?);
                }
            }
            let drafts: Vec<Draft<'_>> = events
                .iter()
                .zip(&settles)
                .enumerate()
                .map(|(i, (event, settles))| Draft {
                    entry: Drafted::Event(event),
                    settles: settles.as_ref(),
                    copied: copied.get(i).copied(),
                })
                .collect();
            let written = |core: &mut Core, written: u64| {
                for event in events.iter().filter(|e| e.seq <= written) {
                    core.projection
                        .apply_tracked(event)
                        .expect("an event checked against the projection applies");
                    core.leases.follow(event);
                }
            };
            if !self.append_drafts(core, &drafts, at, written)? {
                return Ok(None);
            }
        }
        let out: Vec<_> = events
            .into_iter()
            .zip(kept)
            .map(|(event, kept)| {
                let before = core
                    .projection
                    .get(&event.execution_id)
                    .map(metrics::Before::of);
                let settled = core
                    .projection
                    .apply_tracked(&event)
                    .expect("an event checked against the projection applies");
                core.leases.follow(&event);
                let after = settled.map(|(e, ..)| e).or(kept);
                if let Some(e) = after
                    .as_ref()
                    .or_else(|| core.projection.get(&event.execution_id))
                {
                    self.log.counters().observe(before, &event, e);
                }
                (event, after)
            })
            .collect();
        core.since_snapshot += out.len() as u64;
        let every = self.snapshot_every;
        // At most one snapshot per `every` events, and none before 4 events
        // per live execution: writing one costs O(live), so this keeps the
        // cost per event below a quarter of a live execution's record.
        if every > 0 && core.since_snapshot >= every.max(4 * core.projection.len() as u64) {
            core.since_snapshot = 0;
            // Derived data: the events are in the log whether or not it is
            // written, and a missing snapshot costs only a longer replay.
            if let Err(e) = self.write_snapshot(core) {
                tracing::warn!(seq = core.head.0, error = %e, "cannot write a snapshot");
            }
        }
        Ok(Some(out))
    }

    /// Appends `drafts` after the head, the last of them recorded at `at`:
    /// `false` when another writer appended first (the projection has
    /// caught up with it: decide again). When the engine failed after
    /// writing some of them, `written` folds those (through the seq it is
    /// given) into the projection, and writes stop.
    fn append_drafts(
        &self,
        core: &mut Core,
        drafts: &[Draft<'_>],
        at: DateTime<Utc>,
        written: impl FnOnce(&mut Core, u64),
    ) -> Result<bool, CommandError> {
        let head = core.head;
        match self.log.append(head, drafts) {
            Ok(end) => {
                core.head = end;
                core.last_at = at;
                Ok(true)
            }
            Err(AppendError::Conflict(missed)) => {
                if let Err(e) = self.catch_up(core, missed) {
                    core.poisoned = true;
                    return Err(e.into());
                }
                Ok(false)
            }
            // A shared log's append is one statement: when it failed
            // with nothing written here, it either committed or not,
            // and the next append finds out (it conflicts and folds the
            // records if they are there). The ledger goes on.
            Err(AppendError::Failed { error, written: w })
                if w == head && self.log.shared() && error.kind() == ErrorKind::Database =>
            {
                Err(error.into())
            }
            // The projection follows the records written, and writes
            // stop.
            Err(AppendError::Failed { error, written: w }) => {
                written(core, w.0);
                if w.0 > head.0 {
                    (core.head, core.last_at) = (w, at);
                }
                core.poisoned = true;
                Err(error.into())
            }
        }
    }

    /// Checks the control entry `control` (numbered from the head on, and
    /// timed) against the projection, appends it after the head and folds
    /// it in; answers the pause it began or ended. `None` when another
    /// writer appended first: the projection has caught up with it, and
    /// the command is to be decided again. `copied`: its record as another
    /// ledger wrote it, readable (an import).
    pub(super) fn append_control(
        &self,
        core: &mut Core,
        control: &Control,
        copied: Option<&[u8]>,
    ) -> Result<Option<Pause>, CommandError> {
        writable(core)?;
        debug_assert!(control.seq == core.head.0 + 1 && control.at >= core.last_at);
        core.projection.check_control(control)?;
        let draft = Draft {
            entry: Drafted::Control(control),
            settles: None,
            copied,
        };
        let written = |core: &mut Core, written: u64| {
            if control.seq <= written {
                core.projection
                    .apply_control(control)
                    .expect("a control entry checked against the projection applies");
            }
        };
        if !self.append_drafts(core, &[draft], control.at, written)? {
            return Ok(None);
        }
        let pause = core
            .projection
            .apply_control(control)
            .expect("a control entry checked against the projection applies");
        core.since_snapshot += 1;
        Ok(Some(pause))
    }

    /// An event after settling (redaction, legal hold, retry by hand) of a
    /// settled
    /// execution, checked by the state machine against the execution as its
    /// events fold: what the engine indexes again (its seqs, this one's
    /// last, and its line), and the execution after it.
    fn retained(
        &self,
        event: &Event,
    ) -> Result<(crate::store::Settled, BackgroundExecution), CommandError> {
        let id = event.execution_id;
        let (after, settled) = super::replay::after_settled(&*self.log, event)??;
        if matches!(event.kind, EventKind::Redacted { .. }) {
            if !self.log.strips_payloads() {
                return Err(CommandError::Unsupported(
                    "redaction is not available on this storage engine".into(),
                ));
            }
            // A tenant's hold is kept beside the log: asked here, with the
            // ledger (and on a shared log, its end) held.
            if super::retention::tenant_hold(&*self.log, &event.tenant_id)?.is_some() {
                return Err(CommandError::Transition(crate::machine::TransitionError {
                    execution: id,
                    command: "redact",
                    event: event.kind.name(),
                    refusal: crate::machine::Refusal::TenantHeld,
                }));
            }
            for &seq in &settled.seqs[..settled.seqs.len() - 1] {
                let bytes = self
                    .log
                    .record(seq)?
                    .ok_or_else(|| StorageError::corrupt(seq, "record is missing"))?;
                if record::strip(seq, &bytes)? == record::Stripped::Format1 {
                    return Err(CommandError::invalid(format!(
                        "{id} was recorded before payloads could be redacted (record format 1, at seq {seq}): its payloads cannot be removed"
                    )));
                }
            }
        }
        Ok((settled, after))
    }

    /// Folds records another writer appended after the ledger's head into
    /// the projection, checking each link on the way.
    fn catch_up(&self, core: &mut Core, missed: Vec<StoredRecord>) -> Result<(), StorageError> {
        if missed.is_empty() {
            // A conflict with nothing missed would be retried for ever.
            return Err(StorageError::corrupt(
                core.head.0 + 1,
                "the log refused an append after the ledger's head but holds nothing after it",
            ));
        }
        for (seq, bytes) in missed {
            if seq != core.head.0 + 1 {
                return Err(StorageError::corrupt(
                    core.head.0 + 1,
                    format!(
                        "record is missing (the log jumps from seq {} to {seq})",
                        core.head.0
                    ),
                ));
            }
            let rec = record::decode(seq, &bytes)?;
            if rec.prev != core.head.1 {
                return Err(record::broken_link(seq));
            }
            let hash = rec.hash;
            let (entry, _) = fold_record(&mut core.projection, seq, &bytes)?;
            if let Entry::Event(event) = &entry {
                core.leases.follow(event);
            }
            core.head = (seq, hash);
            core.last_at = core.last_at.max(entry.at());
            core.since_snapshot += 1;
        }
        Ok(())
    }

    /// Folds in what other processes sharing the log appended, up to the
    /// head the engine knows committed (an engine of one process never
    /// knows more than the ledger). A damaged record poisons the ledger,
    /// as on any write.
    pub(super) fn refresh(&self, core: &mut Core) {
        self.refresh_to(core, self.log.visible());
        self.reread_shares(core);
    }

    /// [`refresh`](Self::refresh), up to `visible`.
    pub(super) fn refresh_to(&self, core: &mut Core, visible: u64) {
        if visible <= core.head.0 || core.poisoned {
            return;
        }
        let missed = self
            .log
            .records(core.head.0 + 1)
            .take_while(|r| r.as_ref().map_or(true, |(seq, _)| *seq <= visible))
            .collect::<Result<Vec<_>, _>>();
        match missed.and_then(|missed| {
            // Told of more than the log holds yet: nothing to fold.
            if missed.is_empty() {
                return Ok(());
            }
            self.catch_up(core, missed)
        }) {
            Ok(()) => {}
            // The database could not be reached: try again next time.
            Err(e) if e.kind() == ErrorKind::Database => {
                tracing::warn!(seq = core.head.0 + 1, error = %e, "cannot follow the log yet");
            }
            Err(e) => {
                tracing::error!(seq = core.head.0 + 1, error = %e, "cannot follow the log");
                core.poisoned = true;
            }
        }
    }

    /// Starts a group of commands (the combiner's): on a log other
    /// processes share, the engine locks the log's end and the projection
    /// catches up to it, so that no append of the group conflicts. A
    /// shared ledger poisoned by a failed group is first read again from
    /// the log.
    pub(super) fn begin_group(&self, core: &mut Core) {
        if !self.log.shared() {
            return;
        }
        if core.poisoned {
            self.reload(core);
            if core.poisoned {
                return;
            }
        }
        match self.log.begin_group() {
            Ok(Some(head)) => {
                if head.0 > core.head.0 {
                    let missed = self
                        .log
                        .records(core.head.0 + 1)
                        .take_while(|r| r.as_ref().map_or(true, |(seq, _)| *seq <= head.0))
                        .collect::<Result<Vec<_>, _>>();
                    if let Err(e) = missed.and_then(|missed| self.catch_up(core, missed)) {
                        tracing::error!(error = %e, "cannot catch up with the log");
                        core.poisoned = true;
                    }
                }
                if !core.poisoned && core.head != head {
                    // The projection holds what the log does not: read it
                    // again.
                    tracing::warn!(
                        ledger = core.head.0,
                        log = head.0,
                        "the projection is not the log's; reading the log again"
                    );
                    self.reload(core);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot lock the log's end"),
        }
    }

    /// Commits the group's appends; on an error, none of them counts (the
    /// projection is read again from the log, where they are or are not).
    pub(super) fn end_group(&self) -> Option<StorageError> {
        if !self.log.shared() {
            return None;
        }
        let e = self.log.end_group().err()?;
        tracing::error!(error = %e, "cannot commit a group of appends");
        let mut core = super::lock(&self.core);
        core.poisoned = true;
        self.reload(&mut core);
        Some(e)
    }

    /// Reads the projection again from the log (its latest snapshot and
    /// the events after it); poisons the ledger when that fails.
    pub(super) fn reload(&self, core: &mut Core) {
        let read = (|| {
            let last = self.log.last_seq()?;
            let (projection, hash, _) =
                super::replay::replay(&*self.log, last, true, u64::MAX, &mut |_, _| {})?;
            let leases = super::open::running_leases(&*self.log, &projection, self.clock.now())?;
            let last_at = match last {
                0 => DateTime::<Utc>::MIN_UTC,
                seq => read_entry(&*self.log, seq)?.at(),
            };
            let shares = super::shares::read(&*self.log)?;
            Ok::<_, StorageError>((projection, leases, (last, hash), last_at, shares))
        })();
        match read {
            Ok((mut projection, leases, head, last_at, shares)) => {
                projection.set_shares(shares);
                core.shares_read = std::time::Instant::now();
                core.projection = projection;
                core.leases = leases;
                core.head = head;
                core.last_at = last_at;
                core.since_snapshot = 0;
                core.poisoned = false;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the log again");
                core.poisoned = true;
            }
        }
    }

    /// Extends the leases that ran out by `now` with the renewals other
    /// processes sharing the log recorded for them.
    fn hear_renewals(&self, core: &mut Core, now: DateTime<Utc>) -> Result<(), StorageError> {
        if !self.log.shared() {
            return Ok(());
        }
        let due = core.leases.due(now);
        if due.is_empty() {
            return Ok(());
        }
        for (id, attempt, until) in self.log.renewals(&due)? {
            core.leases.renewed(&id, attempt, until);
        }
        Ok(())
    }

    pub(super) fn write_snapshot(&self, core: &Core) -> Result<(), StorageError> {
        let snap = Snapshot {
            seq: core.head.0,
            hash: record::hex(&core.head.1),
            entries: core.projection.entries(),
            turns: Some(core.projection.turns()),
            pauses: core.projection.kept_pauses(),
        };
        let bytes = serde_json::to_vec(&snap).expect("snapshots always serialize");
        self.log.put_snapshot(snap.seq, bytes)
    }

    pub(super) fn tick(&self, core: &Core) -> DateTime<Utc> {
        self.clock.now().max(core.last_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execution::BackgroundExecutionStatus;
    use crate::ledger::Ledger;
    use crate::store::Mark;

    fn acme() -> TenantId {
        "acme".parse().expect("a tenant id")
    }

    /// Appends `kinds` through the store directly, after `head`, as another
    /// writer sharing the log would: the ledger's projection does not know.
    fn append_elsewhere(ledger: &Ledger, kinds: Vec<(ExecutionId, EventKind)>) -> Mark {
        let head = ledger.inner.core().head;
        let at = ledger.now();
        let events: Vec<Event> = kinds
            .into_iter()
            .zip(head.0 + 1..)
            .map(|((execution_id, kind), seq)| Event {
                seq,
                at,
                execution_id,
                tenant_id: acme(),
                kind,
            })
            .collect();
        let drafts: Vec<Draft<'_>> = events
            .iter()
            .map(|event| Draft {
                entry: Drafted::Event(event),
                settles: None,
                copied: None,
            })
            .collect();
        ledger
            .inner
            .log
            .append(head, &drafts)
            .expect("appended after the head")
    }

    #[test]
    fn an_append_after_a_stale_head_conflicts_and_appends_nothing() {
        let dir = tempfile::tempdir().expect("a directory");
        let ledger = Ledger::open(dir.path()).expect("opened");
        ledger
            .submit(&acme(), Submission::new("echo"))
            .wait()
            .expect("submitted");
        let stale = ledger.inner.core().head;
        let other = ExecutionId::new();
        let queued = EventKind::Queued(Box::new(Submission::new("other")));
        let end = append_elsewhere(&ledger, vec![(other, queued)]);
        assert_eq!(end.0, stale.0 + 1);
        // A second writer still at the stale head is refused, and handed
        // the record it missed.
        let event = Event {
            seq: stale.0 + 1,
            at: ledger.now(),
            execution_id: ExecutionId::new(),
            tenant_id: acme(),
            kind: EventKind::Queued(Box::new(Submission::new("late"))),
        };
        let draft = Draft {
            entry: Drafted::Event(&event),
            settles: None,
            copied: None,
        };
        match ledger.inner.log.append(stale, &[draft]) {
            Err(AppendError::Conflict(missed)) => {
                let seqs: Vec<u64> = missed.iter().map(|(seq, _)| *seq).collect();
                assert_eq!(seqs, vec![stale.0 + 1]);
                let (missed_event, _) =
                    record::decode_event(missed[0].0, &missed[0].1).expect("a record");
                assert_eq!(missed_event.execution_id, other);
            }
            other => panic!("appended after a stale head: {other:?}"),
        }
        assert_eq!(ledger.inner.log.last_seq().expect("readable"), end.0);
    }

    #[test]
    fn a_command_after_another_writer_catches_up_and_decides_again() {
        let dir = tempfile::tempdir().expect("a directory");
        let ledger = Ledger::open(dir.path()).expect("opened");
        let mut low = Submission::new("echo");
        low.config.priority = 10;
        let first = ledger
            .submit(&acme(), low)
            .wait()
            .expect("submitted")
            .execution
            .execution_id;
        // Another writer claims `first` and queues a new execution; this
        // ledger's projection still has `first` queued.
        let other = ExecutionId::new();
        let mut high = Submission::new("echo");
        high.config.priority = 90;
        append_elsewhere(
            &ledger,
            vec![
                (
                    first,
                    EventKind::Started {
                        attempt: 1,
                        worker: Some("elsewhere".into()),
                        lease_ms: None,
                    },
                ),
                (other, EventKind::Queued(Box::new(high))),
            ],
        );
        // The claim is decided against the stale projection (`first`), is
        // refused by the log, catches up and claims what is runnable now.
        let claimed = ledger
            .claim(Some("here"))
            .wait()
            .expect("claimed")
            .expect("runnable");
        assert_eq!(claimed.execution_id, other);
        assert_eq!(claimed.attempt, 1);
        // A command against `first` sees its attempt from the other writer.
        let done = ledger
            .complete(first, 1, serde_json::json!("there"))
            .wait()
            .expect("completed");
        assert_eq!(done.status, BackgroundExecutionStatus::Completed);
        assert_eq!(ledger.head().seq, 5);
        let report = ledger.verify().expect("the log verifies");
        assert!(report.projection_compared);
        assert_eq!(report.events, 5);
    }
}

#[cfg(test)]
mod failing {
    //! A log whose appends fail after a number of records: what the ledger
    //! does when its storage fails mid-group.
    use std::path::Path;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::error::ErrorKind;
    use crate::ledger::Ledger;
    use crate::metrics::Counters;
    use crate::store::{embedded, Bytes, Durability, Items, Mark, Reindexed, Store, Tail};

    /// The embedded log, except that once `left` records are written an
    /// append writes no more and fails.
    struct Failing {
        log: embedded::Log,
        left: AtomicU64,
    }

    impl Store for Failing {
        fn location(&self) -> &Path {
            self.log.location()
        }
        fn durability(&self) -> Durability {
            self.log.durability()
        }
        fn counters(&self) -> &Counters {
            self.log.counters()
        }
        fn last_seq(&self) -> Result<u64, StorageError> {
            self.log.last_seq()
        }
        fn check_tail(&self, last: u64) -> Result<Tail, StorageError> {
            self.log.check_tail(last)
        }
        fn resume(
            &self,
            head: Mark,
            accepted: Option<(&str, &StorageError)>,
        ) -> Result<(), StorageError> {
            self.log.resume(head, accepted)
        }
        fn append(&self, after: Mark, events: &[Draft<'_>]) -> Result<Mark, AppendError> {
            let left = self.left.load(Ordering::SeqCst) as usize;
            if left >= events.len() {
                self.left.fetch_sub(events.len() as u64, Ordering::SeqCst);
                return self.log.append(after, events);
            }
            self.left.store(0, Ordering::SeqCst);
            let written = match left {
                0 => after,
                n => self.log.append(after, &events[..n])?,
            };
            Err(AppendError::Failed {
                error: StorageError::new(ErrorKind::Io, "the disk is full"),
                written,
            })
        }
        fn wait_durable(&self, seq: u64) -> Result<(), StorageError> {
            self.log.wait_durable(seq)
        }
        fn flush(&self) -> Result<(), StorageError> {
            self.log.flush()
        }
        fn visible(&self) -> u64 {
            self.log.visible()
        }
        fn wait_visible(&self, seq: u64, timeout: Duration) -> u64 {
            self.log.wait_visible(seq, timeout)
        }
        fn record(&self, seq: u64) -> Result<Option<Bytes>, StorageError> {
            self.log.record(seq)
        }
        fn records(&self, from: u64) -> Items<'_, StoredRecord> {
            self.log.records(from)
        }
        fn execution_seqs(&self, id: &ExecutionId) -> Result<Vec<u64>, StorageError> {
            self.log.execution_seqs(id)
        }
        fn named(&self, name: Name<'_>) -> Result<Option<ExecutionId>, StorageError> {
            self.log.named(name)
        }
        fn listed_before(&self, before: u64) -> Items<'_, crate::store::Listed> {
            self.log.listed_before(before)
        }
        fn list_complete(&self) -> Result<bool, StorageError> {
            self.log.list_complete()
        }
        fn put_snapshot(&self, seq: u64, bytes: Vec<u8>) -> Result<(), StorageError> {
            self.log.put_snapshot(seq, bytes)
        }
        fn snapshots_below(&self, seq: u64) -> Items<'_, StoredRecord> {
            self.log.snapshots_below(seq)
        }
        fn snapshot_seqs(&self) -> Result<Vec<u64>, StorageError> {
            self.log.snapshot_seqs()
        }
        fn check_tail_now(&self) -> Result<(), StorageError> {
            self.log.check_tail_now()
        }
        fn index_groups(&self) -> Items<'_, (ExecutionId, Vec<u64>)> {
            self.log.index_groups()
        }
        fn reindex(&self, event: Draft<'_>) -> Result<(), StorageError> {
            self.log.reindex(event)
        }
        fn rebuild_index(
            &self,
            events: &mut dyn Iterator<Item = Result<Reindexed, StorageError>>,
        ) -> Result<u64, StorageError> {
            self.log.rebuild_index(events)
        }
        fn size_on_disk(&self) -> Result<u64, StorageError> {
            self.log.size_on_disk()
        }
    }

    fn open_failing(dir: &Path, left: u64) -> Ledger {
        let log = embedded::Log::open(dir, Durability::Synced, 1 << 20, true).expect("opened");
        let failing = Failing {
            log,
            left: AtomicU64::new(left),
        };
        Ledger::builder(dir)
            .open_store(Box::new(failing), |_, _| {})
            .expect("opened")
    }

    #[test]
    fn a_failed_append_leaves_the_projection_at_what_was_written_and_stops_writes() {
        let dir = tempfile::tempdir().expect("a directory");
        let acme: TenantId = "acme".parse().expect("a tenant id");
        let ids: Vec<ExecutionId> = {
            // Three running executions, then a log that takes one record more.
            let ledger = Ledger::open(dir.path()).expect("opened");
            (0..3)
                .map(|_| {
                    ledger
                        .submit(&acme, Submission::new("echo"))
                        .wait()
                        .expect("submitted");
                    ledger
                        .claim(None)
                        .wait()
                        .expect("claimed")
                        .expect("runnable")
                        .execution_id
                })
                .collect()
        };
        let ledger = open_failing(dir.path(), 1);
        // Recovering them is one group of three events: the first is
        // written, then the log fails.
        match ledger.recover_abandoned().wait() {
            Err(CommandError::Storage(e)) => assert!(e.to_string().contains("disk is full"), "{e}"),
            other => panic!("recovered in spite of the failure: {other:?}"),
        }
        // The projection holds what the log holds: the first recovered
        // (failed: no retries), the other two still running.
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ledger.head().seq, 7);
        assert_ne!(
            ledger.get(sorted[0]).expect("found").status,
            crate::execution::BackgroundExecutionStatus::Running
        );
        for id in &sorted[1..] {
            assert_eq!(
                ledger.get(*id).expect("found").status,
                crate::execution::BackgroundExecutionStatus::Running
            );
        }
        ledger
            .check_projection()
            .expect("the projection is the log's fold");
        // And writes stop until the ledger is opened again.
        match ledger.submit(&acme, Submission::new("echo")).wait() {
            Err(CommandError::Storage(e)) => assert_eq!(e.kind(), ErrorKind::Poisoned),
            other => panic!("wrote after a failure: {other:?}"),
        }
        assert_eq!(ledger.head().seq, 7);
        drop(ledger);
        let again = Ledger::open(dir.path()).expect("reopened");
        assert_eq!(again.head().seq, 7);
        again.verify().expect("the log verifies");
    }
}
