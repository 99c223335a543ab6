//! Workers elsewhere: the runtime's side of the worker protocol. A remote
//! worker claims under a lease (long-polling until work comes), heartbeats
//! while its attempt runs, and completes or fails it by attempt number; the
//! runtime records each step in the ledger and does what follows a
//! transition as for its own workers (result waiters, progress streams,
//! bindings, callbacks). Its lease sweeper ends attempts whose leases ran
//! out or that outlived their timeouts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use super::{blocking, lock, Progress, Runtime, Shared};
use crate::command::Claim;
use crate::error::CommandError;
use crate::execution::{BackgroundExecution, ExecutionError, ExecutionId, TenantId};
use crate::lease::Heartbeat;

impl Runtime {
    /// Claims what `claim` asks for (of `tenant`'s executions only, when
    /// given), waiting up to `wait` for work to come when none is runnable
    /// now (empty when none came, or the runtime is stopping). The claimed
    /// attempts run elsewhere: the runtime leaves them to their worker and
    /// their lease.
    ///
    /// # Errors
    ///
    /// As [`Ledger::claim_with`](crate::Ledger::claim_with).
    pub async fn claim_remote(
        &self,
        tenant: Option<TenantId>,
        claim: Claim,
        wait: Duration,
    ) -> Result<Vec<BackgroundExecution>, CommandError> {
        let shared = &self.shared;
        // Subscribed before the first claim: a shutdown said while it is
        // decided ends the wait that follows.
        let mut shut = shared.shutting_down.subscribe();
        let ledger = match tenant.clone() {
            Some(t) => shared.ledger.tenant(t),
            None => shared.ledger.clone(),
        };
        let deadline = tokio::time::Instant::now() + wait;
        let mut stop = shared.shutdown.subscribe();
        loop {
            if shared.stopping() {
                return Ok(Vec::new());
            }
            // Armed before the claim: a submit between the claim and the
            // wait is not missed.
            let woken = shared.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let claimed = ledger.claim_with(claim.clone()).await?;
            if !claimed.is_empty() {
                for e in claimed.iter().filter(|e| !e.is_silent()) {
                    lock(&shared.progress)
                        .entry(e.execution_id)
                        .or_insert_with(|| broadcast::channel(256).0);
                }
                return Ok(claimed);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(claimed);
            }
            let ledger = &shared.ledger;
            let due = ledger
                .next_due()
                .and_then(|due| (due - ledger.now()).to_std().ok())
                .unwrap_or(shared.idle_poll);
            let nap = (deadline - now).min(shared.idle_poll).min(due);
            tokio::select! {
                () = &mut woken => {}
                () = tokio::time::sleep(nap) => {}
                _ = stop.wait_for(|s| *s) => {}
                said = shut.recv() => match said {
                    Ok((scope, name)) if scope == tenant && claim.worker_name() == Some(name.as_str()) => {
                        return Ok(claimed);
                    }
                    Ok(_) => {}
                    // Too many at once to tell whether this worker's was
                    // among them: an empty answer is safe (it claims again).
                    Err(_) => return Ok(claimed),
                },
            }
        }
    }

    /// Answers at once (with nothing) the claims that `worker`, of
    /// `tenant`'s scope when given, waits on: what a worker elsewhere says
    /// when it shuts down, so that no attempt is claimed for it that it
    /// would no longer read (and that would wait for its lease to run
    /// out). What its waiting claims took before this is theirs to run;
    /// claims it makes afterwards are served as usual. The worker no
    /// longer counts as live for the callables it claimed.
    ///
    /// # Errors
    ///
    /// [`CommandError::Invalid`] when `worker` is not a worker's name.
    pub fn worker_shutting_down(
        &self,
        tenant: Option<TenantId>,
        worker: &str,
    ) -> Result<(), CommandError> {
        crate::command::check_worker(worker)?;
        let shared = &self.shared;
        match &tenant {
            Some(t) => shared.ledger.tenant(t.clone()).worker_stopped(worker),
            None => shared.ledger.worker_stopped(worker),
        }
        // No claim waiting: nobody to tell.
        let _ = shared.shutting_down.send((tenant, worker.to_owned()));
        Ok(())
    }

    /// A heartbeat of a remote attempt: extends its lease (see
    /// [`Ledger::heartbeat`](crate::Ledger::heartbeat)) and passes
    /// `progress` on to the execution's progress stream when it is not
    /// silent.
    ///
    /// # Errors
    ///
    /// As [`Ledger::heartbeat`](crate::Ledger::heartbeat).
    pub async fn heartbeat(
        &self,
        id: ExecutionId,
        attempt: u32,
        extend: Option<Duration>,
        progress: Option<serde_json::Value>,
    ) -> Result<Heartbeat, CommandError> {
        let ledger = self.shared.ledger.clone();
        let beat = blocking(move || ledger.heartbeat(id, attempt, extend)).await?;
        if let (Some(value), false) = (progress, beat.cancel_requested) {
            if let Some(tx) = lock(&self.shared.progress).get(&id) {
                let _ = tx.send(Progress {
                    execution_id: id,
                    attempt,
                    value,
                });
            }
        }
        Ok(beat)
    }

    /// Completes a remote attempt with its output. A repeat of the same
    /// answer is answered as the first time.
    ///
    /// # Errors
    ///
    /// As [`Ledger::complete`](crate::Ledger::complete).
    pub async fn complete_attempt(
        &self,
        id: ExecutionId,
        attempt: u32,
        output: serde_json::Value,
    ) -> Result<BackgroundExecution, CommandError> {
        let e = self.shared.ledger.complete(id, attempt, output).await?;
        self.shared.after(e.clone());
        Ok(e)
    }

    /// Fails a remote attempt: retried by the policy when `retryable`, else
    /// for good. A repeat of the same answer is answered as the first time.
    ///
    /// # Errors
    ///
    /// As [`Ledger::fail`](crate::Ledger::fail).
    pub async fn fail_attempt(
        &self,
        id: ExecutionId,
        attempt: u32,
        error: ExecutionError,
        retryable: bool,
    ) -> Result<BackgroundExecution, CommandError> {
        let ledger = &self.shared.ledger;
        let e = if retryable {
            ledger.fail(id, attempt, error).await?
        } else {
            ledger.fail_permanently(id, attempt, error).await?
        };
        self.shared.after(e.clone());
        Ok(e)
    }
}

/// Wakes the workers when other processes sharing the log append (a
/// submit or release through another process is work for this one), and
/// answers whoever here waits for an execution another process finished.
pub(super) async fn follow_others(shared: Arc<Shared>) {
    let mut seen = shared.ledger.head().seq;
    while !shared.stopping() {
        let ledger = shared.ledger.clone();
        let now = blocking(move || ledger.wait_appended(seen, Duration::from_secs(1))).await;
        if now > seen {
            seen = now;
            shared.wake.notify_waiters();
            let (ledger, awaited) = (shared.ledger.clone(), shared.awaited());
            if !awaited.is_empty() {
                let finished: Vec<BackgroundExecution> = blocking(move || {
                    awaited
                        .into_iter()
                        .filter_map(|id| ledger.get(id).ok())
                        .filter(BackgroundExecution::is_finished)
                        .collect()
                })
                .await;
                for e in &finished {
                    shared.answer_waiters(e);
                }
            }
        }
    }
}

/// Ends leased attempts whose leases ran out or that outlived their
/// timeouts, as they come due, until the runtime stops.
pub(super) async fn sweep_leases(shared: Arc<Shared>) {
    let mut stop = shared.shutdown.subscribe();
    while !shared.stopping() {
        match shared.ledger.expire_leases().await {
            Ok(ended) => {
                for e in ended {
                    tracing::info!(execution = %e.execution_id, attempt = e.attempt, status = %e.status, "a leased attempt ended: its lease ran out or it timed out");
                    shared.after(e);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot expire leases"),
        }
        let ledger = &shared.ledger;
        let nap = ledger
            .next_lease_expiry()
            .and_then(|at| (at - ledger.now()).to_std().ok())
            .map_or(shared.idle_poll, |d| d.min(shared.idle_poll));
        tokio::select! {
            () = tokio::time::sleep(nap) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }
}
