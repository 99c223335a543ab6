//! Reading the ledger as it is now: executions, the queue, history, the
//! log's events and figures.

use chrono::{DateTime, Utc};

use super::replay::{illegal, read_event, union, with_archived};
use super::report::{head_of, Head, Stats};
use super::{Inner, Ledger};
use crate::error::{CommandError, StorageError};
use crate::event::{Entry, Event};
use crate::execution::{BackgroundExecution, ExecutionId, TenantId};
use crate::machine;
use crate::projection::{LiveCounts, Projection};
use crate::store::{record, Name};

impl Ledger {
    /// One execution as it is now, if it is live (in memory: never reads
    /// the disk).
    pub(crate) fn get_live(&self, id: ExecutionId) -> Option<BackgroundExecution> {
        self.core().projection.get(&id).cloned()
    }

    /// One execution as it is now.
    ///
    /// # Errors
    ///
    /// `NotFound` (also for another tenant's on a scoped handle); `Storage`
    /// for damaged data.
    pub fn get(&self, id: ExecutionId) -> Result<BackgroundExecution, CommandError> {
        let live = self.core().projection.get(&id).cloned();
        let e = match live {
            Some(e) => e,
            None => {
                let seqs = self.inner.execution_seqs(&id)?;
                self.inner
                    .fold_execution(id, seqs, |_| true)?
                    .ok_or(CommandError::NotFound(id))?
            }
        };
        if !self.sees(&e.tenant_id) {
            return Err(CommandError::NotFound(id));
        }
        Ok(e)
    }

    /// The executions runnable now, in claim order (of `tenant` only, when
    /// given): those a claim would take, as if each were claimed in turn
    /// and none finished, then those held back by their tenant's
    /// concurrency limit ([`crate::TenantShare`]).
    pub fn queue(&self, tenant: Option<&TenantId>) -> Vec<BackgroundExecution> {
        self.queued(tenant, Projection::queue)
    }

    /// `tenant`'s running attempts, which its concurrency limit counts (0
    /// for another tenant than this handle's).
    pub fn running(&self, tenant: &TenantId) -> u32 {
        match self.sees(tenant) {
            true => self.core().projection.running(tenant),
            false => 0,
        }
    }

    /// Queued executions not runnable now: waiting for a back-off or run-at
    /// time, then held deferred ones.
    pub fn waiting(&self, tenant: Option<&TenantId>) -> Vec<BackgroundExecution> {
        self.queued(tenant, Projection::waiting)
    }

    /// Queued executions as `pick` lists them now, of `tenant` within this
    /// handle's scope.
    fn queued(
        &self,
        tenant: Option<&TenantId>,
        pick: for<'a> fn(
            &'a Projection,
            DateTime<Utc>,
            Option<&TenantId>,
        ) -> Vec<&'a BackgroundExecution>,
    ) -> Vec<BackgroundExecution> {
        let Ok(tenant) = self.within(tenant) else {
            return Vec::new();
        };
        let core = self.core();
        let now = self.inner.tick(&core);
        pick(&core.projection, now, tenant)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Every live execution (queued, running, finishing), in id order.
    pub fn live(&self) -> Vec<BackgroundExecution> {
        let core = self.core();
        let mut v: Vec<_> = core
            .projection
            .live()
            .filter(|e| self.sees(&e.tenant_id))
            .cloned()
            .collect();
        v.sort_by_key(|e| e.execution_id);
        v
    }

    /// Counts of live executions by where they are.
    pub fn counts(&self) -> LiveCounts {
        self.core().projection.counts()
    }

    /// The earliest time a waiting execution becomes runnable.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.core().projection.next_due()
    }

    /// The value last bound to `target` for `tenant` (by an execution whose
    /// target binding succeeded), with the execution that bound it.
    ///
    /// # Errors
    ///
    /// `Storage` for damaged data.
    pub fn bound_value(
        &self,
        tenant: &TenantId,
        target: &str,
    ) -> Result<Option<(ExecutionId, serde_json::Value)>, CommandError> {
        if !self.sees(tenant) {
            // Another tenant's names do not exist on a scoped handle.
            return Ok(None);
        }
        let Some(id) = self.inner.log.named(Name::Binding(tenant, target))? else {
            return Ok(None);
        };
        let e = self.get(id)?;
        Ok(crate::execution::bound_output(&e).map(|v| (id, v.clone())))
    }

    /// One execution's events, in order.
    ///
    /// # Errors
    ///
    /// `NotFound` (also for another tenant's on a scoped handle); `Storage`
    /// for damaged data.
    pub fn history(&self, id: ExecutionId) -> Result<Vec<Event>, CommandError> {
        let mut events = Vec::new();
        for seq in self.inner.execution_seqs(&id)? {
            events.push(read_event(&*self.inner.log, seq)?);
        }
        match events.first() {
            Some(e) if self.sees(&e.tenant_id) => Ok(events),
            _ => Err(CommandError::NotFound(id)),
        }
    }

    /// The executions' events from seq `from` through `to` (the head when
    /// `None`), each checked against its own hash; the control entries
    /// among them (pauses) are passed over ([`entries`](Self::entries)
    /// has them too).
    pub fn events(
        &self,
        from: u64,
        to: Option<u64>,
    ) -> impl Iterator<Item = Result<Event, StorageError>> + '_ {
        self.entries(from, to).filter_map(|r| match r {
            Ok(Entry::Event(e)) => Some(Ok(e)),
            Ok(Entry::Control(_)) => None,
            Err(e) => Some(Err(e)),
        })
    }

    /// The log's entries from seq `from` through `to` (the head when
    /// `None`) — the executions' events and the control entries — each
    /// checked against its own hash.
    pub fn entries(
        &self,
        from: u64,
        to: Option<u64>,
    ) -> impl Iterator<Item = Result<Entry, StorageError>> + '_ {
        let to = to.unwrap_or(u64::MAX);
        self.inner
            .log
            .records(from.max(1))
            .take_while(move |r| r.as_ref().map_or(true, |(seq, _)| *seq <= to))
            .map(|r| {
                let (seq, bytes) = r?;
                Ok(record::decode_entry(seq, &bytes)?.0)
            })
    }

    /// The last seq and its hash.
    pub fn head(&self) -> Head {
        head_of(&self.core().head)
    }

    /// Makes everything appended so far durable, whatever the durability.
    ///
    /// # Errors
    ///
    /// `Io`, `Poisoned`.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.inner.log.flush()
    }

    /// Counters and latency histograms since the ledger was opened.
    pub fn metrics(&self) -> crate::metrics::Metrics {
        self.inner.log.counters().read()
    }

    /// Figures about the ledger: its head, every execution by status and
    /// the live ones by where they are (the handle's tenant's, when it is
    /// scoped), its snapshots and size. Counting the settled executions
    /// reads the list the engine keeps of them: O(executions).
    ///
    /// # Errors
    ///
    /// `Io`.
    pub fn stats(&self) -> Result<Stats, StorageError> {
        let (head, live) = {
            let core = self.core();
            let live = match self.scope() {
                Some(tenant) => core.projection.counts_of(tenant),
                None => core.projection.counts(),
            };
            (head_of(&core.head), live)
        };
        let executions = self.status_counts()?;
        Ok(Stats {
            head,
            tenant: self.scope().cloned(),
            executions,
            live,
            snapshots: self.inner.log.snapshot_seqs()?.len() as u64,
            disk_bytes: self.inner.log.size_on_disk()?,
        })
    }
}

impl Inner {
    /// Folds one execution from its own events (for executions no longer
    /// live). `None` when it does not exist.
    pub(super) fn load(
        &self,
        id: ExecutionId,
    ) -> Result<Option<BackgroundExecution>, StorageError> {
        self.fold_execution(id, self.log.execution_seqs(&id)?, |_| true)
    }

    /// [`Inner::load`] for a command that would change it, with whether it
    /// is archived (the command decides, after its tenant check, to refuse
    /// it).
    pub(super) fn load_to_change(
        &self,
        id: ExecutionId,
    ) -> Result<Option<(BackgroundExecution, bool)>, CommandError> {
        let live = self.log.execution_seqs(&id)?;
        let known = live.len();
        let seqs = with_archived(&*self.log, &id, live)?;
        let archived = seqs.len() > known;
        Ok(self
            .fold_execution(id, seqs, |_| true)?
            .map(|e| (e, archived)))
    }

    /// The seqs of one execution's events, live, settled or archived, in
    /// order.
    pub(super) fn execution_seqs(&self, id: &ExecutionId) -> Result<Vec<u64>, StorageError> {
        let live = self.core().projection.seqs(id).map(<[u64]>::to_vec);
        // Read after the projection: an execution that settles in between
        // has its index entry written by then.
        let seqs = union(self.log.execution_seqs(id)?, &live.unwrap_or_default());
        with_archived(&*self.log, id, seqs)
    }

    pub(super) fn fold_execution(
        &self,
        id: ExecutionId,
        seqs: Vec<u64>,
        mut keep: impl FnMut(&Event) -> bool,
    ) -> Result<Option<BackgroundExecution>, StorageError> {
        let mut state = None;
        for seq in seqs {
            let event = read_event(&*self.log, seq)?;
            if event.execution_id != id {
                return Err(StorageError::corrupt(
                    seq,
                    format!("index entry of {id} names another execution's event"),
                ));
            }
            if !keep(&event) {
                break;
            }
            machine::apply(&mut state, &event).map_err(illegal(seq))?;
        }
        Ok(state)
    }
}
