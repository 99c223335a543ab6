//! The projection: every live execution and the runnable queue, folded from
//! events with the state machine.
//!
//! "Live" means not settled: queued (runnable, waiting for a back-off or
//! run-at time, or held), running, or finished with a binding or callback
//! still pending. A settled execution leaves the projection the moment it
//! settles (the state machine refuses every event after that), so memory is
//! bounded by live work, not by history.
//!
//! Queue order: higher priority first; within a priority, the tenant whose
//! turn it is (`fair.rs` holds that rule); within a tenant, the order in
//! which its executions became queued (the seq of their `queued`,
//! `released`, `retry_scheduled` or `recovered` event).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::CommandError;
use crate::event::{Control, Event, EventKind};
use crate::execution::{BackgroundExecution, BackgroundExecutionStatus, ExecutionId, TenantId};
use crate::fair::{self, Ready, Shares, Step, TenantShare, Turn, Turns};
use crate::machine::{self, TransitionError};
use crate::pause::{Pause, Pauses};
use crate::store::Settled;

/// Where a queued execution waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// Not queued (running, or finished with bookkeeping pending).
    None,
    /// In the runnable queue, under this order key.
    Ready(u64),
    /// Runnable from this time on.
    Delayed(DateTime<Utc>),
    /// A deferred execution awaiting release.
    Held,
}

#[derive(Clone, Debug)]
struct Live {
    execution: BackgroundExecution,
    order: u64,
    slot: Slot,
    /// The seqs of its events so far: the per-execution index holds an
    /// execution's seqs only once it settles.
    seqs: Vec<u64>,
}

impl Live {
    /// The seq of its first event: from its seqs, or for an execution read
    /// from a snapshot that held none (written by an older version), its
    /// queue order, which is that seq until it is queued again.
    fn submitted(&self) -> u64 {
        self.seqs.first().copied().unwrap_or(self.order)
    }
}

/// One live execution in a snapshot, with its queue order key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SnapshotEntry {
    pub(crate) order: u64,
    pub(crate) execution: BackgroundExecution,
    /// The seqs of its events (absent from snapshots of ledgers written
    /// before the index held settled executions only: their per-event
    /// index entries hold them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) seqs: Vec<u64>,
}

/// Counts of live executions by where they are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct LiveCounts {
    /// Runnable now or once a back-off or run-at time passes.
    pub queued: usize,
    /// Of the queued, those waiting for a back-off or run-at time.
    pub waiting: usize,
    /// Deferred executions awaiting release.
    pub held: usize,
    /// Running.
    pub running: usize,
    /// Finished, with a binding or callback pending.
    pub finishing: usize,
}

impl LiveCounts {
    /// Counts `l` in (`add`) or out.
    fn count(&mut self, l: &Live, add: bool) {
        let step = |n: &mut usize| {
            if add {
                *n += 1;
            } else {
                debug_assert!(*n > 0, "counted out more than in");
                *n = n.saturating_sub(1);
            }
        };
        match l.execution.status {
            BackgroundExecutionStatus::Queued => {
                step(&mut self.queued);
                match l.slot {
                    Slot::Delayed(_) => step(&mut self.waiting),
                    Slot::Held => step(&mut self.held),
                    Slot::Ready(_) | Slot::None => {}
                }
            }
            BackgroundExecutionStatus::Running => step(&mut self.running),
            _ => step(&mut self.finishing),
        }
    }
}

/// `tenant`'s key in the runnable queue ([`fair::key`]): none while all
/// its work is paused, as at its limit.
fn key_of(turns: &Turns, shares: &Shares, pauses: &Pauses, tenant: &TenantId) -> Option<u64> {
    match pauses.holds_tenant(tenant) {
        true => None,
        false => fair::key(turns, shares, tenant),
    }
}

/// Every live execution and the runnable queue, as of one seq.
#[derive(Clone, Debug)]
pub struct Projection {
    seq: u64,
    live: HashMap<ExecutionId, Live>,
    /// [`counts`](Self::counts), kept as entries come and go (it is read
    /// often, by pollers and metrics, under the ledger's lock).
    tally: LiveCounts,
    ready: Ready,
    delayed: BTreeSet<(DateTime<Utc>, ExecutionId)>,
    /// Every tenant's turn (`fair.rs`).
    turns: Turns,
    /// The tenants' weights and limits (configuration, not folded).
    shares: Arc<Shares>,
    /// The pauses in force (`pause.rs`), folded from control entries.
    pauses: Pauses,
}

impl Default for Projection {
    fn default() -> Self {
        Projection {
            seq: 0,
            live: HashMap::new(),
            tally: LiveCounts::default(),
            ready: Ready::default(),
            delayed: BTreeSet::new(),
            turns: Turns::new(),
            shares: Arc::default(),
            pauses: Pauses::default(),
        }
    }
}

impl Projection {
    /// An empty projection (before seq 1).
    pub fn new() -> Self {
        Self::default()
    }

    /// The seq of the last event folded in (0 before any).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Orders the queue by these tenants' weights and limits from now on
    /// (a tenant not named has weight 1 and no limit).
    pub fn set_tenant_shares(&mut self, shares: impl IntoIterator<Item = (TenantId, TenantShare)>) {
        self.set_shares(Arc::new(Shares::new(shares)));
    }

    /// [`set_tenant_shares`](Self::set_tenant_shares), shared.
    pub(crate) fn set_shares(&mut self, shares: Arc<Shares>) {
        self.shares = shares;
        self.retune_all();
    }

    /// Puts every tenant with runnable work at its turn (after the shares
    /// or the turns changed wholesale).
    fn retune_all(&mut self) {
        for tenant in self.ready.tenants() {
            let key = key_of(&self.turns, &self.shares, &self.pauses, &tenant);
            self.ready.retune(&tenant, key);
        }
    }

    /// The tenants' weights and limits it orders the queue by.
    pub(crate) fn shares(&self) -> Arc<Shares> {
        Arc::clone(&self.shares)
    }

    /// A live execution.
    pub fn get(&self, id: &ExecutionId) -> Option<&BackgroundExecution> {
        self.live.get(id).map(|l| &l.execution)
    }

    /// All live executions, in no particular order.
    pub fn live(&self) -> impl Iterator<Item = &BackgroundExecution> + '_ {
        self.live.values().map(|l| &l.execution)
    }

    /// All live executions with the seq of their first event (their
    /// submission), in no particular order.
    pub(crate) fn live_submitted(&self) -> impl Iterator<Item = (u64, &BackgroundExecution)> + '_ {
        self.live.values().map(|l| (l.submitted(), &l.execution))
    }

    /// The seq of a live execution's first event (its submission).
    pub(crate) fn submitted(&self, id: &ExecutionId) -> Option<u64> {
        self.live.get(id).map(Live::submitted)
    }

    /// How many executions are live.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no execution is live.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Whether `event` may follow the live state of its execution.
    ///
    /// # Errors
    ///
    /// The state machine's refusal.
    pub fn check(&self, event: &Event) -> Result<(), TransitionError> {
        machine::check(self.get(&event.execution_id), event)
    }

    /// Checks `event` against the projection, and when it would settle its
    /// execution, returns what the engine indexes of it then (the seqs of
    /// all its events, the event's own last).
    pub(crate) fn check_settles(&self, event: &Event) -> Result<Option<Settled>, TransitionError> {
        let live = self.live.get(&event.execution_id);
        let state = live.map(|l| &l.execution);
        machine::check(state, event)?;
        Ok(machine::settles(state, event).map(|settled| {
            let mut seqs = live.map_or_else(Vec::new, |l| l.seqs.clone());
            seqs.push(event.seq);
            Settled::new(&settled, live.map_or(event.seq, Live::submitted), seqs)
        }))
    }

    /// Folds `event` in. Returns the execution when the event settled it
    /// (it has left the projection).
    ///
    /// # Errors
    ///
    /// The state machine's refusal; the projection is then unchanged.
    pub fn apply(&mut self, event: &Event) -> Result<Option<BackgroundExecution>, TransitionError> {
        Ok(self.apply_tracked(event)?.map(|(e, ..)| e))
    }

    /// Whether `event` follows a settled execution (a redaction, legal hold
    /// or retry by hand), which the projection does not hold.
    pub(crate) fn follows_settled(&self, event: &Event) -> bool {
        event.kind.follows_settling() && !self.live.contains_key(&event.execution_id)
    }

    /// [`apply`](Self::apply), also returning, for a settled execution,
    /// the seq of its first event and the seqs of all its events.
    pub(crate) fn apply_tracked(
        &mut self,
        event: &Event,
    ) -> Result<Option<(BackgroundExecution, u64, Vec<u64>)>, TransitionError> {
        let id = event.execution_id;
        if self.follows_settled(event) {
            // It stays out of the projection (`ledger::replay::after_settled`
            // checks it against the execution's history).
            self.seq = event.seq;
            return Ok(None);
        }
        let (mut state, order, slot, seqs) = match self.live.remove(&id) {
            Some(l) => {
                self.tally.count(&l, false);
                (Some(l.execution), l.order, l.slot, l.seqs)
            }
            None => (None, event.seq, Slot::None, Vec::new()),
        };
        let was_running = state
            .as_ref()
            .map(|e| e.status == BackgroundExecutionStatus::Running);
        if let Err(e) = machine::apply(&mut state, event) {
            if let Some(execution) = state {
                self.insert(
                    id,
                    Live {
                        execution,
                        order,
                        slot,
                        seqs,
                    },
                );
            }
            return Err(e);
        }
        let execution = state.expect("an accepted event leaves the execution present");
        let mut live = Live {
            execution,
            order,
            slot,
            seqs,
        };
        live.seqs.push(event.seq);
        self.seq = event.seq;
        if matches!(
            event.kind,
            EventKind::Queued(_)
                | EventKind::Released
                | EventKind::RetryScheduled { .. }
                | EventKind::Recovered { .. }
        ) {
            live.order = event.seq;
        }
        self.unplace(id, &live);
        let settled = machine::is_settled(&live.execution);
        self.turns.fold(
            &event.tenant_id,
            event.seq,
            Step {
                was_live: was_running.is_some(),
                is_live: !settled,
                was_running: was_running == Some(true),
                is_running: !settled && live.execution.status == BackgroundExecutionStatus::Running,
                started: matches!(event.kind, EventKind::Started { .. }),
            },
        );
        let key = key_of(&self.turns, &self.shares, &self.pauses, &event.tenant_id);
        self.ready.retune(&event.tenant_id, key);
        if settled {
            let submitted = live.submitted();
            return Ok(Some((live.execution, submitted, live.seqs)));
        }
        live.slot = self.place(id, &live.execution, live.order);
        self.insert(id, live);
        Ok(None)
    }

    /// Whether `control` may follow: a pause of what is not paused, a
    /// resume of what is.
    ///
    /// # Errors
    ///
    /// `PauseConflict`.
    pub(crate) fn check_control(&self, control: &Control) -> Result<(), CommandError> {
        self.pauses.check(control)
    }

    /// Folds the control entry `control` in; answers the pause it began or
    /// ended.
    ///
    /// # Errors
    ///
    /// As [`check_control`](Self::check_control); the projection is then
    /// unchanged.
    pub(crate) fn apply_control(&mut self, control: &Control) -> Result<Pause, CommandError> {
        let pause = self.pauses.apply(control)?;
        self.seq = control.seq;
        if let Some(tenant) = &pause.scope.tenant_id {
            let key = key_of(&self.turns, &self.shares, &self.pauses, tenant);
            self.ready.retune(tenant, key);
        }
        Ok(pause)
    }

    /// The pauses in force, by scope.
    pub fn pauses(&self) -> impl Iterator<Item = &Pause> + '_ {
        self.pauses.all()
    }

    /// The pause that holds `e`, a queued execution, if any.
    pub fn held_by(&self, e: &BackgroundExecution) -> Option<&Pause> {
        self.pauses.holding(&e.tenant_id, &e.callable_name)
    }

    fn insert(&mut self, id: ExecutionId, live: Live) {
        self.tally.count(&live, true);
        if let Some(replaced) = self.live.insert(id, live) {
            self.tally.count(&replaced, false);
        }
    }

    fn unplace(&mut self, id: ExecutionId, live: &Live) {
        match live.slot {
            Slot::Ready(order) => {
                let e = &live.execution;
                self.ready.remove(&e.tenant_id, e.config.priority, order);
            }
            Slot::Delayed(t) => {
                self.delayed.remove(&(t, id));
            }
            Slot::None | Slot::Held => {}
        }
    }

    fn place(&mut self, id: ExecutionId, e: &BackgroundExecution, order: u64) -> Slot {
        if e.status != BackgroundExecutionStatus::Queued {
            Slot::None
        } else if e.is_held() {
            Slot::Held
        } else if let Some(t) = e.not_before {
            self.delayed.insert((t, id));
            Slot::Delayed(t)
        } else {
            let key = key_of(&self.turns, &self.shares, &self.pauses, &e.tenant_id);
            self.ready
                .push(id, &e.tenant_id, e.config.priority, order, key);
            Slot::Ready(order)
        }
    }

    /// Moves executions whose back-off or run-at time has passed by `now`
    /// into the runnable queue.
    fn promote(&mut self, now: DateTime<Utc>) {
        while let Some(&(t, id)) = self.delayed.first() {
            if t > now {
                break;
            }
            self.delayed.pop_first();
            let live = self.live.get_mut(&id).expect("delayed executions are live");
            let e = &live.execution;
            let key = key_of(&self.turns, &self.shares, &self.pauses, &e.tenant_id);
            self.ready
                .push(id, &e.tenant_id, e.config.priority, live.order, key);
            live.slot = Slot::Ready(live.order);
            self.tally.waiting -= 1;
        }
    }

    /// The next execution to run at `now` (of `tenant` only, when given).
    pub fn next_runnable(
        &mut self,
        now: DateTime<Utc>,
        tenant: Option<&TenantId>,
    ) -> Option<&BackgroundExecution> {
        self.runnable(now, tenant, None, 1).into_iter().next()
    }

    /// Up to `max` executions to run at `now`, in claim order (`fair.rs`):
    /// of `tenant` only, when given, and of `callables` only, when given.
    /// A tenant at its concurrency limit has none; paused work is passed
    /// over.
    pub fn runnable(
        &mut self,
        now: DateTime<Utc>,
        tenant: Option<&TenantId>,
        callables: Option<&[String]>,
        max: usize,
    ) -> Vec<&BackgroundExecution> {
        self.promote(now);
        let live = &self.live;
        let pauses = (self.pauses.by_callable()
            || tenant.is_some_and(|t| self.pauses.holds_tenant(t)))
        .then_some(&self.pauses);
        let accept = |id: ExecutionId| {
            let e = &live[&id].execution;
            callables.is_none_or(|c| c.contains(&e.callable_name))
                && pauses.is_none_or(|p| p.holding(&e.tenant_id, &e.callable_name).is_none())
        };
        let next = self.seq + 1;
        fair::claims(
            &self.ready,
            &self.turns,
            &self.shares,
            next,
            max,
            tenant,
            accept,
        )
        .into_iter()
        .map(|id| &live[&id].execution)
        .collect()
    }

    /// The executions runnable at `now`, in claim order (of `tenant` only,
    /// when given): those a claim would take, as if each were claimed in
    /// turn and none finished, then those its tenant's concurrency limit
    /// or a pause holds back (in priority, then submission order).
    pub fn queue(
        &self,
        now: DateTime<Utc>,
        tenant: Option<&TenantId>,
    ) -> Vec<&BackgroundExecution> {
        // Those due but not yet moved to the runnable queue join a copy.
        let mut due = self
            .delayed
            .iter()
            .take_while(|(t, _)| *t <= now)
            .peekable();
        let ready = match due.peek() {
            None => std::borrow::Cow::Borrowed(&self.ready),
            Some(_) => {
                let mut ready = self.ready.clone();
                for (_, id) in due {
                    let l = &self.live[id];
                    let e = &l.execution;
                    let key = key_of(&self.turns, &self.shares, &self.pauses, &e.tenant_id);
                    ready.push(*id, &e.tenant_id, e.config.priority, l.order, key);
                }
                std::borrow::Cow::Owned(ready)
            }
        };
        let accept = |id: ExecutionId| {
            let e = &self.live[&id].execution;
            self.held_by(e).is_none()
        };
        fair::listing(
            &ready,
            &self.turns,
            &self.shares,
            self.seq + 1,
            tenant,
            accept,
        )
        .into_iter()
        .map(|id| &self.live[&id].execution)
        .collect()
    }

    /// Queued executions not runnable at `now`: waiting for a back-off or
    /// run-at time (soonest first), then held deferred ones (oldest first).
    pub fn waiting(
        &self,
        now: DateTime<Utc>,
        tenant: Option<&TenantId>,
    ) -> Vec<&BackgroundExecution> {
        let mut held: Vec<&BackgroundExecution> = self
            .live
            .values()
            .filter(|l| l.slot == Slot::Held)
            .map(|l| &l.execution)
            .collect();
        held.sort_by_key(|e| e.execution_id);
        self.delayed
            .iter()
            .filter(|(t, _)| *t > now)
            .map(|(_, id)| &self.live[id].execution)
            .chain(held)
            .filter(|e| tenant.is_none_or(|t| &e.tenant_id == t))
            .collect()
    }

    /// The earliest time a waiting execution becomes runnable.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.delayed.first().map(|(t, _)| *t)
    }

    /// `tenant`'s running attempts (what its concurrency limit counts).
    pub fn running(&self, tenant: &TenantId) -> u32 {
        self.turns.running(tenant)
    }

    /// Counts of live executions by where they are.
    pub fn counts(&self) -> LiveCounts {
        self.tally
    }

    /// [`Projection::counts`] of one tenant's live executions (counted
    /// now: O(live)).
    pub(crate) fn counts_of(&self, tenant: &TenantId) -> LiveCounts {
        let mut tally = LiveCounts::default();
        for l in self
            .live
            .values()
            .filter(|l| &l.execution.tenant_id == tenant)
        {
            tally.count(l, true);
        }
        tally
    }

    /// Whether two projections hold the same live executions with the same
    /// queue order keys, as of the same seq.
    pub fn same_as(&self, other: &Projection) -> bool {
        self.difference(other).is_none()
    }

    /// The first difference from `other`, for error messages.
    pub fn difference(&self, other: &Projection) -> Option<String> {
        if self.seq != other.seq {
            return Some(format!("seq {} against {}", self.seq, other.seq));
        }
        // (Not `waiting`: it depends on when the queue was last looked at.)
        let (ours, theirs) = (self.tally, other.tally);
        let counted = |c: LiveCounts| (c.queued, c.held, c.running, c.finishing);
        if counted(ours) != counted(theirs) {
            let show = |c: LiveCounts| {
                format!(
                    "{} queued, {} held, {} running, {} finishing",
                    c.queued, c.held, c.running, c.finishing
                )
            };
            return Some(format!("counts {} against {}", show(ours), show(theirs)));
        }
        for (id, l) in &self.live {
            match other.live.get(id) {
                None => return Some(format!("{id} is live on one side only")),
                Some(o) if o.execution != l.execution => return Some(format!("{id} differs")),
                Some(o) if o.order != l.order => {
                    return Some(format!("{id} has another queue position"))
                }
                _ => {}
            }
        }
        other
            .live
            .keys()
            .find(|id| !self.live.contains_key(id))
            .map(|id| format!("{id} is live on one side only"))
            .or_else(|| self.turns.difference(&other.turns))
            .or_else(|| self.pauses.difference(&other.pauses))
    }

    pub(crate) fn entries(&self) -> Vec<SnapshotEntry> {
        let mut entries: Vec<SnapshotEntry> = self
            .live
            .values()
            .map(|l| SnapshotEntry {
                order: l.order,
                execution: l.execution.clone(),
                seqs: l.seqs.clone(),
            })
            .collect();
        entries.sort_by_key(|e| e.execution.execution_id);
        entries
    }

    /// An empty projection as of `seq` (nothing live: the log's base).
    pub(crate) fn empty_at(seq: u64) -> Self {
        Projection {
            seq,
            ..Projection::default()
        }
    }

    /// The pauses in force, for a snapshot.
    pub(crate) fn kept_pauses(&self) -> Vec<Pause> {
        self.pauses.kept()
    }

    /// The tenants' turns, for a snapshot.
    pub(crate) fn turns(&self) -> std::collections::BTreeMap<TenantId, Turn> {
        self.turns.kept()
    }

    /// The projection as of `seq` holding `entries` (none: before any
    /// execution is live), with the tenants' turns a snapshot kept (`None`
    /// for a snapshot written before snapshots held them: rebuilt from the
    /// entries) and the pauses in force.
    pub(crate) fn from_entries(
        seq: u64,
        entries: Vec<SnapshotEntry>,
        turns: Option<std::collections::BTreeMap<TenantId, Turn>>,
        pauses: Vec<Pause>,
    ) -> Self {
        let mut p = Projection {
            seq,
            pauses: Pauses::restore(pauses),
            ..Projection::default()
        };
        p.turns.known = turns.is_some();
        for SnapshotEntry {
            order,
            execution,
            seqs,
        } in entries
        {
            let id = execution.execution_id;
            let slot = p.place(id, &execution, order);
            let live = Live {
                execution,
                order,
                slot,
                seqs,
            };
            p.turns.count_in(
                &live.execution.tenant_id,
                live.execution.status == BackgroundExecutionStatus::Running,
                live.submitted(),
            );
            p.insert(id, live);
        }
        p.turns.restore(turns.unwrap_or_default());
        p.retune_all();
        p
    }

    /// The seqs of a live execution's events that this projection folded
    /// (from a snapshot written before snapshots held them: only those
    /// since).
    pub(crate) fn seqs(&self, id: &ExecutionId) -> Option<&[u64]> {
        self.live.get(id).map(|l| l.seqs.as_slice())
    }
}
