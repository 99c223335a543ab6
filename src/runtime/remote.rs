//! Workers elsewhere: the runtime's side of the worker protocol. A remote
//! worker claims under a lease (long-polling until work comes), heartbeats
//! while its attempt runs, and completes or fails it by attempt number; the
//! runtime records each step in the ledger and does what follows a
//! transition as for its own workers (result waiters, progress streams,
//! bindings, callbacks). Its lease sweeper ends attempts whose leases ran
//! out or that outlived their timeouts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};

use super::{blocking, lock, Progress, Runtime, Shared};
use crate::command::Claim;
use crate::error::CommandError;
use crate::execution::{BackgroundExecution, ExecutionError, ExecutionId, TenantId};
use crate::lease::Heartbeat;

/// How long a shutdown said while none of the worker's claims waited holds
/// for its next claim (the longest a claim may wait).
const SAID_FOR: Duration = Duration::from_secs(60);

/// A worker elsewhere, as its claims name it: the scope of the key it
/// claims with (a tenant, or `None` for an admin key) and its name.
type WorkerKey = (Option<TenantId>, String);

/// The claims of one worker elsewhere that wait, and its shutdown.
#[derive(Debug)]
pub(super) struct Shutdown {
    /// Claims of it waiting now.
    waiting: usize,
    /// Tells them it shut down.
    tell: watch::Sender<bool>,
    /// When it said so while none of its claims waited.
    said: Option<Instant>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            waiting: 0,
            tell: watch::channel(false).0,
            said: None,
        }
    }
}

/// The shutdowns of workers elsewhere, by worker.
pub(super) type Shutdowns = std::collections::HashMap<WorkerKey, Shutdown>;

/// One claim of a worker, waiting: counted while it lives.
struct Waiting<'a> {
    shared: &'a Shared,
    key: WorkerKey,
    told: watch::Receiver<bool>,
}

impl<'a> Waiting<'a> {
    /// Counts a claim of `key` in; `None` when the worker said it shut down
    /// before the claim came (the saying is used up).
    fn enter(shared: &'a Shared, key: WorkerKey) -> Option<Waiting<'a>> {
        let mut all = lock(&shared.shutdowns);
        let w = all.entry(key.clone()).or_default();
        if let Some(said) = w.said.take() {
            if said.elapsed() < SAID_FOR {
                if w.waiting == 0 {
                    all.remove(&key);
                }
                return None;
            }
        }
        w.waiting += 1;
        let told = w.tell.subscribe();
        Some(Waiting { shared, key, told })
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut all = lock(&self.shared.shutdowns);
        if let Some(w) = all.get_mut(&self.key) {
            w.waiting -= 1;
            if w.waiting == 0 && w.said.is_none() {
                all.remove(&self.key);
            }
        }
    }
}

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
        // Refused as it is, whatever the claim would then find.
        claim.validate()?;
        let shared = &self.shared;
        let ledger = match tenant.clone() {
            Some(t) => shared.ledger.tenant(t),
            None => shared.ledger.clone(),
        };
        // Entered before the first claim: a shutdown said while it is
        // decided ends the wait that follows, and one said before this
        // claim came (from the same worker, on another connection) ends it
        // at once.
        let told = match claim.worker_name() {
            None => None,
            Some(name) => match Waiting::enter(shared, (tenant.clone(), name.to_owned())) {
                Some(waiting) => Some(waiting),
                None => return Ok(Vec::new()),
            },
        };
        let shut_down = || {
            if let Some(name) = claim.worker_name() {
                ledger.worker_stopped(name);
            }
        };
        let deadline = tokio::time::Instant::now() + wait;
        let mut stop = shared.shutdown.subscribe();
        let mut told_rx = told.as_ref().map(|w| w.told.clone());
        loop {
            if shared.stopping() {
                return Ok(Vec::new());
            }
            if told_rx.as_ref().is_some_and(|t| *t.borrow()) {
                shut_down();
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
            let shutdown = async {
                match told_rx.as_mut() {
                    Some(t) => {
                        let _ = t.wait_for(|t| *t).await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = shutdown => {}
                _ = stop.wait_for(|s| *s) => {}
                () = &mut woken => {}
                () = tokio::time::sleep(nap) => {}
            }
        }
    }

    /// Answers at once, with nothing, the claims that `worker` waits on
    /// (those it made with a key of the same scope: `tenant`'s, or an
    /// admin key's for `None`): what a worker elsewhere says when it shuts down, so that
    /// no attempt is claimed for it that it would no longer read (and that
    /// would wait for its lease to run out). When none of its claims waits
    /// yet (the shutdown overtook a claim on another connection), its next
    /// claim within a minute (the longest a claim may wait) is answered at
    /// once instead. Claims after that are served as usual. The worker no
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
        {
            let mut all = lock(&shared.shutdowns);
            let now = std::time::Instant::now();
            all.retain(|_, w| w.waiting > 0 || w.said.is_some_and(|t| now - t < SAID_FOR));
            let w = all.entry((tenant.clone(), worker.to_owned())).or_default();
            if w.waiting > 0 {
                // Every claim waiting now is told; later ones get a fresh
                // channel.
                let _ = std::mem::take(&mut w.tell).send(true);
            } else {
                w.said = Some(now);
            }
        }
        match &tenant {
            Some(t) => shared.ledger.tenant(t.clone()).worker_stopped(worker),
            None => shared.ledger.worker_stopped(worker),
        }
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
