//! Leases and live workers, as the ledger holds them now: heartbeats (not
//! events), the lease of a running attempt, and which callables no live
//! worker runs. The rules are in `lease.rs`.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{lock, Core, Ledger};
use crate::error::CommandError;
use crate::execution::{BackgroundExecutionStatus, ExecutionId, TenantId};
use crate::lease::{self, Heartbeat, Lease, Leases};
use crate::machine::TransitionError;

impl Ledger {
    /// A heartbeat of attempt `attempt` of `id` from the worker running it:
    /// extends its lease to `extend` from now (the claim's lease length
    /// when `None`; a lease is never shortened). Not an event: nothing is
    /// appended. Answers when the lease runs out now, and whether the
    /// execution was cancelled while the attempt ran (the worker should
    /// stop; its answer will be refused).
    ///
    /// # Errors
    ///
    /// `NotFound` (also another tenant's on a scoped handle); `Invalid`
    /// when `extend` is out of range; `Transition` with
    /// [`Refusal::StaleAttempt`](crate::Refusal::StaleAttempt) when another
    /// attempt is current, [`Refusal::Status`](crate::Refusal::Status) when
    /// the execution no longer runs (recovered, timed out, finished), and
    /// [`Refusal::NotLeased`](crate::Refusal::NotLeased) for an attempt its
    /// own process holds without a lease.
    pub fn heartbeat(
        &self,
        id: ExecutionId,
        attempt: u32,
        extend: Option<Duration>,
    ) -> Result<Heartbeat, CommandError> {
        if let Some(d) = extend {
            lease::check_length(d)?;
        }
        let refused = |refusal| {
            CommandError::Transition(TransitionError {
                execution: id,
                command: "heartbeat",
                event: "heartbeat",
                refusal,
            })
        };
        {
            // Decided on the log as it is: another process may have started
            // (or ended) the attempt a moment ago.
            let latest = self.inner.log.head_now()?;
            let mut core = self.core();
            if let Some(seq) = latest {
                self.inner.refresh_to(&mut core, seq);
            }
            let now = self.inner.tick(&core);
            let Core {
                projection, leases, ..
            } = &mut *core;
            if let Some(e) = projection.get(&id) {
                if !self.sees(&e.tenant_id) {
                    return Err(CommandError::NotFound(id));
                }
                let beat = leases.renew(e, attempt, extend, now).map_err(refused)?;
                let worker = leases.get(&id).and_then(|l| l.worker.clone());
                let tenant = e.tenant_id.clone();
                drop(core);
                // Other processes sharing the log hear of it from there.
                self.inner.log.renew_lease(&id, attempt, beat.lease_until)?;
                if let Some(worker) = worker {
                    lock(&self.inner.workers).heard(&tenant, &worker, beat.lease_until);
                }
                return Ok(beat);
            }
        }
        // Not live: settled, so no lease is held; only a cancel during the
        // attempt answers.
        let e = self.get(id)?;
        let now = self.now();
        Leases::default()
            .renew(&e, attempt, extend, now)
            .map_err(refused)
    }

    /// The lease of `id`'s running attempt, when it is held under one.
    pub fn lease(&self, id: ExecutionId) -> Option<Lease> {
        let core = self.core();
        core.projection
            .get(&id)
            .filter(|e| self.sees(&e.tenant_id))
            .and(core.leases.get(&id).cloned())
    }

    /// How many running attempts (of this handle's tenant when scoped) are
    /// held under leases.
    pub fn leased(&self) -> usize {
        let core = self.core();
        match &self.scope {
            None => core.leases.len(),
            Some(_) => core
                .leases
                .ids()
                .filter(|id| {
                    core.projection
                        .get(id)
                        .is_some_and(|e| self.sees(&e.tenant_id))
                })
                .count(),
        }
    }

    /// The callables of queued executions (of this handle's tenant when
    /// scoped) that no live worker runs, sorted: they wait until a worker
    /// that runs them claims. A worker is live from its claim until a
    /// little past when its lease or long-poll said it would be back; an
    /// in-process runtime, while it runs.
    pub fn callables_without_worker(&self) -> Vec<String> {
        self.without_worker(false).0
    }

    /// The callables of queued executions (runnable now only, when
    /// `runnable`) that no live worker runs for their tenants, and how many
    /// such executions there are.
    pub(crate) fn without_worker(&self, runnable: bool) -> (Vec<String>, usize) {
        let queued: Vec<(TenantId, String)> = if runnable {
            self.queue(None)
                .into_iter()
                .map(|e| (e.tenant_id, e.callable_name))
                .collect()
        } else {
            let core = self.core();
            core.projection
                .live()
                .filter(|e| e.status == BackgroundExecutionStatus::Queued)
                .filter(|e| self.sees(&e.tenant_id))
                .map(|e| (e.tenant_id.clone(), e.callable_name.clone()))
                .collect()
        };
        let now = self.now();
        let mut workers = lock(&self.inner.workers);
        workers.prune(now);
        let idle: Vec<_> = queued
            .into_iter()
            .filter(|(t, c)| !workers.runs(t, c, now))
            .collect();
        let count = idle.len();
        let names: BTreeSet<String> = idle.into_iter().map(|(_, c)| c).collect();
        (names.into_iter().collect(), count)
    }

    /// `worker` (an in-process runtime's) runs `callables` until
    /// [`Ledger::worker_stopped`].
    pub(crate) fn worker_started(&self, worker: &str, callables: &[String]) {
        let now = self.now();
        lock(&self.inner.workers).saw(
            self.scope(),
            worker,
            Some(callables),
            DateTime::<Utc>::MAX_UTC,
            now,
        );
    }

    /// `worker` no longer runs anything.
    pub(crate) fn worker_stopped(&self, worker: &str) {
        lock(&self.inner.workers).gone(self.scope(), worker);
    }

    /// `worker`, claiming on this handle, runs `callables` and will be back
    /// by `back_by`.
    pub(crate) fn saw_worker(
        &self,
        worker: &str,
        callables: Option<&[String]>,
        back_by: DateTime<Utc>,
    ) {
        let now = self.now();
        lock(&self.inner.workers).saw(self.scope(), worker, callables, back_by, now);
    }

    /// The earliest time a lease runs out.
    pub(crate) fn next_lease_expiry(&self) -> Option<DateTime<Utc>> {
        self.core().leases.next_expiry()
    }
}
