//! The runtime: tokio workers that claim executions in priority order and
//! run their callables, with timeouts, retries, cancellation, progress
//! streams, target bindings and result callbacks — each step recorded in the
//! ledger before it counts.
//!
//! Commands go to the ledger without blocking (awaited: a synced append
//! waits for the disk on the ledger's own thread, not on a worker); reads that
//! may touch the disk run on tokio's blocking pool.

mod callback;
mod registry;
mod remote;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{broadcast, oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tracing::Instrument;

pub use registry::{CallContext, CallFuture, CallResult, Progress};

use crate::command::Claim;
use crate::error::{CommandError, StorageError};
use crate::event::Submission;
use crate::execution::{bound_output, BackgroundExecution, ExecutionError, ExecutionId, TenantId};
use crate::ledger::Ledger;
use crate::machine::{awaits_binding, awaits_callback};
use crate::signing::CallbackSecrets;
use registry::Registry;

/// A boxed binder future.
pub type BindFuture = Pin<Box<dyn Future<Output = Result<(), ExecutionError>> + Send + 'static>>;

/// Where completed outputs go: a binder handles the targets of one scheme
/// (the part of `target` before `:`).
pub trait Binder: Send + Sync + 'static {
    /// Binds `value` (the output, or the part the binding's path names) to
    /// `target` for `execution`.
    fn bind(
        &self,
        target: &str,
        value: serde_json::Value,
        execution: &BackgroundExecution,
    ) -> BindFuture;
}

/// The built-in binder for `var:` targets: the ledger itself keeps the
/// bound value, readable with [`Ledger::bound_value`].
struct LedgerBinder;

impl Binder for LedgerBinder {
    fn bind(&self, _: &str, _: serde_json::Value, _: &BackgroundExecution) -> BindFuture {
        Box::pin(async { Ok(()) })
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a runtime is started: callables, binders, workers, timings.
pub struct RuntimeBuilder {
    ledger: Ledger,
    registry: Registry,
    binders: HashMap<String, Arc<dyn Binder>>,
    workers: usize,
    worker_name: String,
    idle_poll: Duration,
    callback_timeout: Duration,
    callback_backoff: Duration,
    callback_secrets: Option<CallbackSecrets>,
    lease: Option<Duration>,
    schedule_every: Option<Duration>,
}

impl std::fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("callables", &self.registry.names())
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl RuntimeBuilder {
    /// Registers an async callable under `name`: it gets the execution's
    /// input and a [`CallContext`], and returns an output or an error.
    pub fn register<F, Fut>(mut self, name: &str, f: F) -> Self
    where
        F: Fn(Option<String>, CallContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CallResult> + Send + 'static,
    {
        self.registry.register(name, f);
        self
    }

    /// Registers the callables `echo` (output: the input as a JSON string),
    /// `sleep` (input: milliseconds; stops when cancelled) and `fail` (fails
    /// with the input as its message).
    pub fn register_builtins(self) -> Self {
        self.register("echo", |input, _| async move {
            Ok(input.map_or(serde_json::Value::Null, serde_json::Value::String))
        })
        .register("sleep", |input, mut ctx| async move {
            let ms: u64 = input.as_deref().unwrap_or("0").trim().parse().map_err(|_| {
                let given = input.as_deref().unwrap_or_default();
                ExecutionError::new(
                    "bad_input",
                    format!("input: sleep takes a whole number of milliseconds, not {given:?}"),
                )
            })?;
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(ms)) => Ok(serde_json::json!({ "sleptMs": ms })),
                () = ctx.cancelled() => Err(ExecutionError::new("cancelled", "cancelled while sleeping")),
            }
        })
        .register("fail", |input, _| async move {
            Err(ExecutionError::new("failed", input.unwrap_or_else(|| "failed on purpose".into())))
        })
    }

    /// Registers a binder for the targets of `scheme` (`var` is built in).
    pub fn binder(mut self, scheme: &str, binder: impl Binder) -> Self {
        self.binders.insert(scheme.to_owned(), Arc::new(binder));
        self
    }

    /// How many executions run at once (default 4).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// The name workers record in `started` events (default `worker`).
    pub fn worker_name(mut self, name: impl Into<String>) -> Self {
        self.worker_name = name.into();
        self
    }

    /// Holds each attempt the workers run under a lease of `lease`, renewed
    /// every third of it while the attempt runs: if this process stops,
    /// others sharing its ledger take its attempts back once their leases
    /// run out. Unset: unleased on a ledger one process owns (recovered
    /// when it is next opened), [`DEFAULT_LEASE`](crate::DEFAULT_LEASE) on a
    /// ledger many processes share.
    ///
    /// # Errors
    ///
    /// [`start`](Self::start) refuses a lease out of
    /// [`MIN_LEASE`](crate::MIN_LEASE)–[`MAX_LEASE`](crate::MAX_LEASE).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// The longest an idle worker waits before looking at the queue again
    /// (default 250 ms; submits and releases through the runtime wake it at
    /// once).
    pub fn idle_poll(mut self, every: Duration) -> Self {
        self.idle_poll = every;
        self
    }

    /// How long one callback delivery may take (default 10 s), and the wait
    /// before the second delivery attempt, doubled for each one after
    /// (default 500 ms).
    pub fn callbacks(mut self, timeout: Duration, backoff: Duration) -> Self {
        self.callback_timeout = timeout;
        self.callback_backoff = backoff;
        self
    }

    /// How often due schedules are fired ([`Ledger::fire_schedules`]):
    /// every second by default; `None` fires none (another process, or
    /// the caller, does).
    pub fn schedules(mut self, every: Option<Duration>) -> Self {
        self.schedule_every = every;
        self
    }

    /// Signs every callback with its tenant's secrets (see
    /// [`CallbackSecrets`]): a `Ledger-Signature` header over the timestamp
    /// and the body. The handle stays shared: secrets replaced through it
    /// later sign the deliveries after. A tenant with no secret (and no
    /// default) gets no unsigned delivery: the attempt is recorded as
    /// failed, saying so. Without this, callbacks are sent unsigned.
    pub fn callback_secrets(mut self, secrets: CallbackSecrets) -> Self {
        self.callback_secrets = Some(secrets);
        self
    }

    /// Recovers what a stopped process left running without a lease
    /// ([`Ledger::recover_abandoned`]), resumes pending bindings and
    /// callbacks, and starts the workers — which claim only the registered
    /// callables (none without any) — and the lease sweeper, which ends
    /// leased attempts of workers elsewhere when their leases run out
    /// ([`Ledger::expire_leases`]). Call from within a tokio runtime.
    ///
    /// # Errors
    ///
    /// A [`StorageError`] when recovery cannot be recorded.
    pub async fn start(self) -> Result<Runtime, StorageError> {
        if let Some(lease) = self.lease {
            crate::lease::check_length(lease).map_err(CommandError::into_storage)?;
        }
        let recovered = self
            .ledger
            .recover_abandoned()
            .await
            .map_err(CommandError::into_storage)?;
        for e in &recovered {
            tracing::info!(execution = %e.execution_id, attempt = e.attempt, status = %e.status, "recovered an execution left running");
        }
        let (shutdown, _) = watch::channel(false);
        let mut binders = self.binders;
        binders
            .entry("var".to_owned())
            .or_insert_with(|| Arc::new(LedgerBinder));
        let shared = Arc::new(Shared {
            ledger: self.ledger,
            registry: self.registry,
            binders,
            client: reqwest::Client::new(),
            wake: Notify::new(),
            shutdown,
            running: Mutex::new(HashMap::new()),
            waiters: Mutex::new(HashMap::new()),
            progress: Mutex::new(HashMap::new()),
            bookkeeping: AtomicUsize::new(0),
            settling: Mutex::new(HashSet::new()),
            shutdowns: Mutex::new(remote::Shutdowns::new()),
            idle_poll: self.idle_poll,
            callback_timeout: self.callback_timeout,
            callback_backoff: self.callback_backoff,
            callback_secrets: self.callback_secrets,
        });
        // Workers claim only what this process runs; with nothing
        // registered there is nothing to claim.
        let callables = shared.registry.names();
        let local = if callables.is_empty() {
            0
        } else {
            self.workers
        };
        let mut workers: Vec<JoinHandle<()>> = (0..local)
            .map(|n| {
                let shared = shared.clone();
                let name = format!("{}-{n}", self.worker_name);
                let mut claim = Claim::new().worker(name).callables(callables.clone());
                if let Some(lease) = self.lease {
                    claim = claim.lease(lease);
                }
                tokio::spawn(async move { worker(shared, claim).await })
            })
            .collect();
        if local > 0 {
            shared.ledger.worker_started(&self.worker_name, &callables);
        }
        workers.push(tokio::spawn(remote::sweep_leases(shared.clone())));
        if shared.ledger.shared() {
            workers.push(tokio::spawn(remote::follow_others(shared.clone())));
        }
        if let Some(every) = self.schedule_every {
            workers.push(tokio::spawn(fire_schedules(shared.clone(), every)));
        }
        let ledger = shared.ledger.clone();
        let pending = blocking(move || ledger.live()).await;
        for e in pending {
            if awaits_binding(&e) || awaits_callback(&e) {
                shared.spawn_settle(e);
            }
        }
        Ok(Runtime {
            shared,
            workers: Mutex::new(workers),
            name: self.worker_name,
        })
    }
}

struct Shared {
    ledger: Ledger,
    registry: Registry,
    binders: HashMap<String, Arc<dyn Binder>>,
    client: reqwest::Client,
    wake: Notify,
    shutdown: watch::Sender<bool>,
    running: Mutex<HashMap<ExecutionId, watch::Sender<bool>>>,
    waiters: Mutex<HashMap<ExecutionId, Vec<oneshot::Sender<BackgroundExecution>>>>,
    progress: Mutex<HashMap<ExecutionId, broadcast::Sender<Progress>>>,
    bookkeeping: AtomicUsize,
    /// Executions being settled (by one task each).
    settling: Mutex<HashSet<ExecutionId>>,
    /// The waiting claims of workers elsewhere, and their shutdowns.
    shutdowns: Mutex<remote::Shutdowns>,
    idle_poll: Duration,
    callback_timeout: Duration,
    callback_backoff: Duration,
    callback_secrets: Option<CallbackSecrets>,
}

/// Fires due schedules every `every` until the runtime stops; wakes the
/// workers when a firing submitted work.
async fn fire_schedules(shared: Arc<Shared>, every: Duration) {
    let mut stop = shared.shutdown.subscribe();
    while !shared.stopping() {
        let ledger = shared.ledger.clone();
        match blocking(move || ledger.fire_schedules()).await {
            Ok(fired) => {
                for f in &fired {
                    if let Some(id) = f.execution_id.filter(|_| f.created) {
                        tracing::info!(schedule = f.name, tenant = %f.tenant_id, slot = %f.slot, execution = %id, "a schedule fired");
                    }
                }
                if fired.iter().any(|f| f.created) {
                    shared.wake.notify_waiters();
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot fire schedules"),
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }
}

/// Aborts the task when dropped: an attempt never outlives its worker.
struct AbortOnDrop<T>(JoinHandle<T>);

/// How long a timed-out or cancelled attempt waits for its callable's
/// future to be dropped.
const ABORT_WAIT: Duration = Duration::from_secs(5);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum Outcome {
    Output(serde_json::Value),
    Error(ExecutionError),
    TimedOut,
    Cancelled,
    /// The attempt's lease could not be kept: another process recovered
    /// it, and its answer would be refused.
    Lost,
}

impl Shared {
    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// What follows a transition: waiters and progress streams learn of a
    /// finished execution; bindings and callbacks are started; idle workers
    /// look again when something became queued.
    fn after(self: &Arc<Self>, e: BackgroundExecution) {
        if !e.is_finished() {
            self.wake.notify_waiters();
            return;
        }
        self.answer_waiters(&e);
        if awaits_binding(&e) || awaits_callback(&e) {
            self.spawn_settle(e);
        }
    }

    /// Answers whoever waits for `e`, finished (here or, on a shared log,
    /// by another process).
    fn answer_waiters(&self, e: &BackgroundExecution) {
        lock(&self.progress).remove(&e.execution_id);
        if let Some(waiters) = lock(&self.waiters).remove(&e.execution_id) {
            for w in waiters {
                let _ = w.send(e.clone());
            }
        }
    }

    /// The executions someone here waits for.
    fn awaited(&self) -> Vec<ExecutionId> {
        lock(&self.waiters).keys().copied().collect()
    }

    /// Settles `e` (binding, callback) in a task of its own — one per
    /// execution at a time: a repeated answer (a worker's retry after a lost
    /// response) must not bind or call back twice.
    fn spawn_settle(self: &Arc<Self>, e: BackgroundExecution) {
        let id = e.execution_id;
        if !lock(&self.settling).insert(id) {
            return;
        }
        self.bookkeeping.fetch_add(1, Ordering::SeqCst);
        let shared = self.clone();
        let span = tracing::info_span!("settle", execution = %id);
        tokio::spawn(
            async move {
                // As the ledger has it now: `e` may be from before a settle
                // that ended while this one was being started (a repeated
                // answer read its execution while the callback was still
                // pending), which must not call back again.
                let ledger = shared.ledger.clone();
                let now = match blocking(move || ledger.get(id)).await {
                    Ok(now) => Ok(now),
                    Err(CommandError::NotFound(_)) => Ok(e),
                    Err(err) => Err(err),
                };
                if let Err(err) = match now {
                    Ok(e) => shared.settle(e).await,
                    Err(err) => Err(err),
                } {
                    tracing::error!(error = %err, "cannot record a binding or callback");
                }
                lock(&shared.settling).remove(&id);
                shared.bookkeeping.fetch_sub(1, Ordering::SeqCst);
            }
            .instrument(span),
        );
    }

    /// Applies the target binding, then delivers the callback, recording
    /// each step.
    async fn settle(&self, mut e: BackgroundExecution) -> Result<(), CommandError> {
        let id = e.execution_id;
        if awaits_binding(&e) {
            let binding = e
                .config
                .target_binding
                .clone()
                .expect("a binding is pending");
            let result = match (self.binders.get(binding.scheme()), bound_output(&e)) {
                (None, _) => Err(ExecutionError::new(
                    "unknown_binder",
                    format!("no binder handles {:?} targets", binding.scheme()),
                )),
                (Some(_), None) => Err(ExecutionError::new(
                    "nothing_to_bind",
                    format!(
                        "the output has no value at {:?}",
                        binding.path.unwrap_or_default()
                    ),
                )),
                (Some(binder), Some(value)) => {
                    binder.bind(&binding.target, value.clone(), &e).await
                }
            };
            e = self.ledger.record_binding(id, result.err()).await?;
        }
        let mut stop = self.shutdown.subscribe();
        while awaits_callback(&e) {
            let attempt = e.callback_attempts + 1;
            if attempt > 1 {
                tokio::select! {
                    () = tokio::time::sleep(callback::backoff(self.callback_backoff, attempt)) => {}
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                }
            }
            let url = e
                .config
                .callback_url
                .clone()
                .expect("a callback is pending");
            let outcome = callback::deliver(
                &self.client,
                &url,
                &e,
                attempt,
                self.callback_secrets.as_ref(),
                self.callback_timeout,
            )
            .await;
            if let Err((_, why)) = &outcome {
                tracing::warn!(attempt, %url, why, "callback delivery failed");
            }
            e = self.ledger.record_callback(id, outcome).await?;
        }
        Ok(())
    }

    /// Runs an attempt; returns the command that records how it ended
    /// (`None`: nothing to record).
    async fn run_attempt(
        self: &Arc<Self>,
        e: BackgroundExecution,
    ) -> Option<crate::Command<BackgroundExecution>> {
        let (id, attempt) = (e.execution_id, e.attempt);
        let outcome = match self.registry.get(&e.callable_name) {
            // Claims name the registered callables only; kept for safety.
            None => Outcome::Error(ExecutionError::new(
                "unknown_callable",
                format!("no callable named {:?} is registered", e.callable_name),
            )),
            Some(callable) => {
                let (cancel_tx, cancel_rx) = watch::channel(false);
                lock(&self.running).insert(id, cancel_tx);
                let progress = (!e.is_silent()).then(|| {
                    lock(&self.progress)
                        .entry(id)
                        .or_insert_with(|| broadcast::channel(256).0)
                        .clone()
                });
                let ctx = CallContext {
                    execution_id: id,
                    tenant_id: e.tenant_id.clone(),
                    attempt,
                    context: e.context.clone().unwrap_or_default(),
                    cancelled: cancel_rx.clone(),
                    progress,
                };
                let mut task = AbortOnDrop(tokio::spawn(callable(e.input.clone(), ctx)));
                let mut cancelled = cancel_rx;
                let timeout = Duration::from_millis(e.config.timeout_ms);
                let keep = keep_lease(self.ledger.clone(), id, attempt);
                let (outcome, joined) = tokio::select! {
                    joined = &mut task.0 => (match joined {
                        Ok(Ok(output)) => Outcome::Output(output),
                        Ok(Err(error)) => Outcome::Error(error),
                        Err(join) if join.is_panic() => Outcome::Error(ExecutionError::new(
                            "panicked",
                            panic_message(join.into_panic()),
                        )),
                        Err(_) => Outcome::Cancelled,
                    }, true),
                    () = tokio::time::sleep(timeout) => (Outcome::TimedOut, false),
                    _ = cancelled.wait_for(|c| *c) => (Outcome::Cancelled, false),
                    lost = keep => (lost, false),
                };
                if !joined {
                    // The attempt is over only once its callable is gone:
                    // abort it and wait until its future is dropped (a
                    // callable stuck in a blocking call is left after 5 s).
                    task.0.abort();
                    let _ = tokio::time::timeout(ABORT_WAIT, &mut task.0).await;
                }
                drop(task);
                lock(&self.running).remove(&id);
                outcome
            }
        };
        let ledger = &self.ledger;
        let unknown = matches!(&outcome, Outcome::Error(err) if err.code == "unknown_callable");
        match outcome {
            // The cancellation was recorded by whoever cancelled.
            Outcome::Cancelled => None,
            Outcome::Lost => {
                tracing::warn!("the attempt's lease was lost; its answer is not recorded");
                None
            }
            Outcome::Output(output) => Some(ledger.complete(id, attempt, output)),
            Outcome::Error(error) if unknown => Some(ledger.fail_permanently(id, attempt, error)),
            Outcome::Error(error) => Some(ledger.fail(id, attempt, error)),
            Outcome::TimedOut => Some(ledger.time_out(id, attempt)),
        }
    }

    /// What recording an attempt's end answered.
    fn recorded(self: &Arc<Self>, recorded: Result<BackgroundExecution, CommandError>) {
        match recorded {
            Ok(after) => {
                tracing::info!(status = %after.status, "attempt ended");
                self.after(after);
            }
            Err(CommandError::Transition(refused)) => {
                tracing::info!(%refused, "the attempt's answer was refused")
            }
            Err(other) => tracing::error!(error = %other, "cannot record the attempt's end"),
        }
    }
}

/// Keeps the lease of a leased in-process attempt (on a ledger other
/// processes share, every attempt is leased) with a heartbeat every third
/// of it; returns when it cannot: cancelled while it ran, or recovered by
/// another process. Never returns for an unleased attempt.
async fn keep_lease(ledger: Ledger, id: ExecutionId, attempt: u32) -> Outcome {
    let Some(every) = ledger
        .lease(id)
        .filter(|l| l.attempt == attempt)
        .map(|l| Duration::from_millis(l.lease_ms) / 3)
    else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(every).await;
        let ledger = ledger.clone();
        match blocking(move || ledger.heartbeat(id, attempt, None)).await {
            Ok(beat) if beat.cancel_requested => return Outcome::Cancelled,
            Ok(_) => {}
            Err(CommandError::Transition(_)) => return Outcome::Lost,
            Err(e) => tracing::warn!(error = %e, "cannot renew the attempt's lease"),
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".to_owned());
    format!("the callable panicked: {what}")
}

/// A worker: claims, runs, records the end of the attempt together with
/// its next claim (one command), and waits for work when there is none.
/// What it claimed it runs, stopping or not.
async fn worker(shared: Arc<Shared>, claim: Claim) {
    let mut stop = shared.shutdown.subscribe();
    let mut next: Option<BackgroundExecution> = None;
    loop {
        let claimed = match next.take() {
            Some(e) => Ok(Some(e)),
            None if shared.stopping() => return,
            None => shared
                .ledger
                .claim_with(claim.clone())
                .await
                .map(|mut c| c.pop()),
        };
        match claimed {
            Ok(Some(e)) => {
                let span = tracing::info_span!(
                    "attempt",
                    execution = %e.execution_id,
                    tenant = %e.tenant_id,
                    callable = %e.callable_name,
                    attempt = e.attempt,
                );
                let attempt = async {
                    tracing::info!("attempt started");
                    let record = shared.run_attempt(e).await?;
                    if shared.stopping() {
                        shared.recorded(record.await);
                        return None;
                    }
                    let (recorded, claimed) = record
                        .together(shared.ledger.claim_with(claim.clone()))
                        .await;
                    shared.recorded(recorded);
                    match claimed {
                        Ok(mut claimed) => claimed.pop(),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot claim");
                            None
                        }
                    }
                };
                next = attempt.instrument(span).await;
            }
            Ok(None) => {
                let ledger = &shared.ledger;
                let wait = ledger
                    .next_due()
                    .and_then(|due| (due - ledger.now()).to_std().ok())
                    .map_or(shared.idle_poll, |d| d.min(shared.idle_poll));
                tokio::select! {
                    () = shared.wake.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot claim");
                tokio::select! {
                    () = tokio::time::sleep(shared.idle_poll) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            }
        }
    }
}

/// Queued executions an idle runtime leaves for later (see
/// [`Runtime::idle_within`]): those waiting for a retry or run-at time past
/// the horizon.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduledLater {
    /// How many.
    pub count: usize,
    /// The earliest time one of them becomes runnable.
    pub earliest: Option<chrono::DateTime<chrono::Utc>>,
    /// Runnable executions left queued because no live worker runs their
    /// callables.
    pub unclaimed: usize,
    /// Those callables, sorted.
    pub unclaimed_callables: Vec<String>,
}

/// A handle on a submitted execution: its id, and its final record once it
/// finishes.
#[derive(Debug)]
pub struct ExecutionHandle {
    id: ExecutionId,
    created: bool,
    rx: oneshot::Receiver<BackgroundExecution>,
}

impl ExecutionHandle {
    /// The execution's id.
    pub fn id(&self) -> ExecutionId {
        self.id
    }

    /// Whether the submit created it (false on an idempotency hit).
    pub fn created(&self) -> bool {
        self.created
    }

    /// The execution once it is finished; `None` when the runtime's
    /// [`shutdown`](Runtime::shutdown) began first (an attempt running then
    /// may still finish within the grace: read it from the ledger).
    pub async fn result(self) -> Option<BackgroundExecution> {
        self.rx.await.ok()
    }
}

/// The running runtime. Dropping it without [`shutdown`](Self::shutdown)
/// leaves its workers running until the tokio runtime ends.
pub struct Runtime {
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// The name its workers' names start with.
    name: String,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// A builder for a runtime over `ledger`.
    pub fn builder(ledger: Ledger) -> RuntimeBuilder {
        RuntimeBuilder {
            ledger,
            registry: Registry::default(),
            binders: HashMap::new(),
            workers: 4,
            worker_name: "worker".to_owned(),
            idle_poll: Duration::from_millis(250),
            lease: None,
            callback_timeout: Duration::from_secs(10),
            callback_backoff: Duration::from_millis(500),
            callback_secrets: None,
            schedule_every: Some(Duration::from_secs(1)),
        }
    }

    /// The ledger it runs.
    pub fn ledger(&self) -> &Ledger {
        &self.shared.ledger
    }

    /// Submits an execution and wakes a worker. The handle resolves when it
    /// finishes (for `silent` executions, the caller's way to the result).
    ///
    /// # Errors
    ///
    /// As [`Ledger::submit`].
    pub async fn submit(
        &self,
        tenant: &TenantId,
        submission: Submission,
    ) -> Result<ExecutionHandle, CommandError> {
        let submitted = self.shared.ledger.submit(tenant, submission).await?;
        let id = submitted.execution.execution_id;
        let rx = self.watch(id).await?;
        self.shared.wake.notify_one();
        Ok(ExecutionHandle {
            id,
            created: submitted.created,
            rx,
        })
    }

    /// Submits an execution and wakes a worker, without a handle to await
    /// it: the submitted record (new, or the idempotency key's) at once.
    ///
    /// # Errors
    ///
    /// As [`Ledger::submit`].
    pub async fn submit_detached(
        &self,
        tenant: &TenantId,
        submission: Submission,
    ) -> Result<crate::ledger::Submitted, CommandError> {
        let submitted = self.shared.ledger.submit(tenant, submission).await?;
        self.shared.wake.notify_one();
        Ok(submitted)
    }

    /// Submits several executions as one group ([`Ledger::submit_many`])
    /// and wakes the workers, without handles to await them.
    ///
    /// # Errors
    ///
    /// As [`Ledger::submit_many`].
    pub async fn submit_many_detached(
        &self,
        tenant: &TenantId,
        submissions: Vec<Submission>,
    ) -> Result<Vec<crate::ledger::Submitted>, CommandError> {
        let submitted = self.shared.ledger.submit_many(tenant, submissions).await?;
        self.shared.wake.notify_waiters();
        Ok(submitted)
    }

    async fn watch(
        &self,
        id: ExecutionId,
    ) -> Result<oneshot::Receiver<BackgroundExecution>, CommandError> {
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.waiters).entry(id).or_default().push(tx);
        // It may have finished before the waiter was in place.
        let ledger = self.shared.ledger.clone();
        let now = match ledger.get_live(id) {
            Some(live) => live,
            None => blocking(move || ledger.get(id)).await?,
        };
        if now.is_finished() {
            if let Some(waiters) = lock(&self.shared.waiters).remove(&id) {
                for w in waiters {
                    let _ = w.send(now.clone());
                }
            }
        } else if self.shared.stopping() {
            // Shut down before the waiter was in place: answered as at shutdown.
            lock(&self.shared.waiters).remove(&id);
        }
        Ok(rx)
    }

    /// Waits for an execution to finish and returns it.
    ///
    /// # Errors
    ///
    /// `NotFound`; `Storage`. `Ok(None)` when the runtime's
    /// [`shutdown`](Self::shutdown) began first.
    pub async fn result(
        &self,
        id: ExecutionId,
    ) -> Result<Option<BackgroundExecution>, CommandError> {
        Ok(self.watch(id).await?.await.ok())
    }

    /// Cancels an execution; a running attempt is told to stop and dropped.
    ///
    /// # Errors
    ///
    /// As [`Ledger::cancel`].
    pub async fn cancel(
        &self,
        id: ExecutionId,
        reason: Option<String>,
    ) -> Result<BackgroundExecution, CommandError> {
        let e = self.shared.ledger.cancel(id, reason).await?;
        if let Some(tx) = lock(&self.shared.running).get(&id) {
            let _ = tx.send(true);
        }
        self.shared.after(e.clone());
        Ok(e)
    }

    /// Releases a held deferred execution and wakes a worker.
    ///
    /// # Errors
    ///
    /// As [`Ledger::release`].
    pub async fn release(&self, id: ExecutionId) -> Result<BackgroundExecution, CommandError> {
        let e = self.shared.ledger.release(id).await?;
        self.shared.wake.notify_one();
        Ok(e)
    }

    /// Progress reported by a non-silent execution's callable, from now on.
    /// `None` for a silent execution, or one that is finished or unknown.
    pub async fn progress(&self, id: ExecutionId) -> Option<broadcast::Receiver<Progress>> {
        let ledger = self.shared.ledger.clone();
        let e = blocking(move || ledger.get(id)).await.ok()?;
        if e.is_silent() || e.is_finished() {
            return None;
        }
        Some(
            lock(&self.shared.progress)
                .entry(id)
                .or_insert_with(|| broadcast::channel(256).0)
                .subscribe(),
        )
    }

    /// Whether nothing is left to do now: nothing runnable, running,
    /// waiting for a retry or run-at time, or awaiting its binding or
    /// callback. Held deferred executions do not count.
    pub fn is_idle(&self) -> bool {
        self.idle_within(Duration::MAX).is_some()
    }

    /// Whether nothing is left to do within `horizon`: nothing runnable,
    /// running or awaiting its binding or callback, and nothing waiting for
    /// a retry or run-at time that comes within `horizon` from now. `Some`
    /// with what waits past the horizon, `None` while there is work to do
    /// or wait for. Held deferred executions do not count.
    pub fn idle_within(&self, horizon: Duration) -> Option<ScheduledLater> {
        let ledger = &self.shared.ledger;
        // The earliest due time before the counts: whatever becomes
        // runnable between the two reads is then in the counts.
        let earliest = ledger.next_due();
        let c = ledger.counts();
        let due_soon = earliest.is_some_and(|t| {
            (t - ledger.now())
                .to_std()
                .map_or(true, |ahead| ahead <= horizon)
        });
        // Runnable work nobody here or elsewhere runs is left queued.
        let (unclaimed_callables, unclaimed) = ledger.without_worker(true);
        let idle = !due_soon
            && c.queued == c.held + c.waiting + unclaimed
            && c.running == 0
            && c.finishing == 0
            && self.shared.bookkeeping.load(Ordering::SeqCst) == 0
            && lock(&self.shared.running).is_empty();
        idle.then_some(ScheduledLater {
            count: c.waiting,
            earliest,
            unclaimed,
            unclaimed_callables,
        })
    }

    /// Resolves once [`is_idle`](Self::is_idle) holds.
    pub async fn wait_idle(&self) {
        self.wait_idle_within(Duration::MAX).await;
    }

    /// Resolves once [`idle_within`](Self::idle_within) `horizon` holds,
    /// with what waits past it.
    pub async fn wait_idle_within(&self, horizon: Duration) -> ScheduledLater {
        loop {
            if let Some(later) = self.idle_within(horizon) {
                return later;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops claiming, answers every [`result`](Self::result) and
    /// [`ExecutionHandle::result`] still waiting with `None` at once, lets
    /// running attempts finish within `grace`, then
    /// drops what is still running and makes the ledger durable. A dropped
    /// attempt is not recorded: it stays `running` in the log until the
    /// next [`RuntimeBuilder::start`] on this ledger records it `recovered`
    /// (queued again while attempts remain, failed otherwise) — or, when
    /// it is leased (always on a ledger many processes share), whichever
    /// process finds its lease run out.
    ///
    /// # Errors
    ///
    /// A [`StorageError`] when the final flush fails.
    pub async fn shutdown(&self, grace: Duration) -> Result<(), StorageError> {
        let _ = self.shared.shutdown.send(true);
        self.shared.ledger.worker_stopped(&self.name);
        self.shared.wake.notify_waiters();
        // Whoever awaits a result hears at once that none will come from here.
        lock(&self.shared.waiters).clear();
        let workers: Vec<_> = std::mem::take(&mut *lock(&self.workers));
        let aborts: Vec<_> = workers.iter().map(JoinHandle::abort_handle).collect();
        let all = futures_join(workers);
        if tokio::time::timeout(grace, all).await.is_err() {
            let left = lock(&self.shared.running).len();
            tracing::warn!(
                left,
                "attempts still running after the grace period are dropped; they stay running in the log until the next start recovers them"
            );
            for a in aborts {
                a.abort();
            }
        }
        let ledger = self.shared.ledger.clone();
        blocking(move || ledger.flush()).await?;
        Ok(())
    }
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}
