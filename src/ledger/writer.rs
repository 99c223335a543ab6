//! How writes reach the log: commands are queued and carried out in groups
//! (flat combining), then made durable together (group commit).
//!
//! ```text
//! caller ──push──▶ queue ──▶ combiner: for each command, under the core
//!                            lock: decide, check, append, fold
//!                            │
//!                            └─ then, outside it: one sync for the group,
//!                               and every command of the group answered
//! ```
//!
//! Whoever pushes a command while no one is combining becomes the combiner:
//! a blocking caller does it on its own thread, an async caller hands it to
//! one of the ledger's two helper threads. Everyone else just waits for their answer, so a command
//! costs one hand-off, not a contended lock plus a wait for the disk. The
//! combiner gives up the role before it syncs, so the next group is
//! appended while this one is synced.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::{lock, Core, Inner};
use crate::error::{CommandError, ErrorKind, StorageError};

/// The most commands one combiner carries out before it syncs what it has:
/// bounds how long the first of a long stream waits for its answer.
const MAX_GROUP: usize = 4096;

/// A queued command: runs once, with the core locked, and returns how to
/// answer once the seq it names is durable (`None`: already answered).
pub(super) type Job = Box<dyn FnOnce(&Inner, &mut Core) -> Option<Finish> + Send>;

/// The rest of a command that was carried out: it is answered once `seq`
/// is durable.
pub(super) struct Finish {
    seq: u64,
    answer: Box<dyn FnOnce(Result<(), StorageError>) + Send>,
}

/// A ledger command, ready to be carried out; every command of
/// [`Ledger`](super::Ledger) returns one. Carry it out in one of three ways:
///
/// - [`wait`](Command::wait) blocks until its answer arrives (the calling
///   thread may carry out other callers' commands meanwhile);
/// - `.await` it: it is [`IntoFuture`](std::future::IntoFuture), queued
///   without blocking when it becomes a future (`into_future`, which
///   `.await` calls), and any executor can poll it (it needs no tokio
///   runtime);
/// - [`spawn`](Command::spawn) queues it now and returns its answer as a
///   [`Pending`] future, which may be dropped: the command is carried out
///   either way.
///
/// Input the command refuses (out of range, see the `MAX_*` limits) is
/// refused by each of these, and nothing is appended. A command dropped
/// before any of them is not carried out.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// use execution_ledger::{Ledger, Submission};
///
/// let ledger = Ledger::open(dir.path())?;
/// let acme = "acme".parse()?;
/// let submitted = ledger.submit(&acme, Submission::new("echo")).wait()?;
/// let claimed = ledger.claim(Some("worker-1")).wait()?.expect("runnable");
/// let pending = ledger.complete(claimed.execution_id, claimed.attempt, "done".into()).spawn();
/// # let _ = submitted;
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let done = pending.await?;
/// # Ok::<_, execution_ledger::CommandError>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a command is carried out only by wait(), .await or spawn()"]
pub struct Command<R> {
    inner: Arc<Inner>,
    job: Result<Job, CommandError>,
    reply: Pending<R>,
}

impl<R: Send + 'static> Command<R> {
    /// A command: `op` decides, checks and appends, returning its answer
    /// and the seq that must be durable before it is given (0: none).
    pub(super) fn new(
        inner: &Arc<Inner>,
        op: impl FnOnce(&Inner, &mut Core) -> Result<(R, u64), CommandError> + Send + 'static,
    ) -> Self {
        let slot = Arc::new(Mutex::new(Slot::default()));
        let sender = Sender(Some(slot.clone()));
        let job: Job = Box::new(move |inner, core| match op(inner, core) {
            Err(e) => {
                sender.send(Err(e));
                None
            }
            Ok((r, seq)) => Some(Finish {
                seq,
                answer: Box::new(move |synced| sender.send(synced.map(|()| r).map_err(Into::into))),
            }),
        });
        Command {
            inner: inner.clone(),
            job: Ok(job),
            reply: Pending { slot },
        }
    }

    /// A command refused before it was queued.
    pub(super) fn refused(inner: &Arc<Inner>, error: CommandError) -> Self {
        Command {
            inner: inner.clone(),
            job: Err(error),
            reply: Pending {
                slot: Arc::new(Mutex::new(Slot::default())),
            },
        }
    }

    /// Carries out the command and returns its answer, once its events
    /// are as durable as the ledger promises; blocks (the calling thread
    /// may carry out other commands and sync the log meanwhile). On an
    /// async runtime's worker thread, `.await` the command instead.
    ///
    /// # Errors
    ///
    /// Those of the command that made it (each command's own section).
    pub fn wait(self) -> Result<R, CommandError> {
        let job = self.job?;
        if push(&self.inner, job) {
            combine(&self.inner);
        }
        self.reply.wait()
    }

    /// Queues the command without blocking; its answer is the returned
    /// future. The command is carried out whether or not it is awaited.
    pub fn spawn(self) -> Pending<R> {
        let job = match self.job {
            Ok(job) => job,
            Err(e) => {
                lock(&self.reply.slot).value = Some(Err(e));
                return self.reply;
            }
        };
        if push(&self.inner, job) {
            combine_elsewhere(&self.inner);
        }
        self.reply
    }

    /// Carries out this command and then `next` as one: in order, in one
    /// hold of the ledger, with one wait for durability; answers both (the
    /// second is carried out whatever the first answers). The runtime's
    /// workers record an attempt's end and claim their next execution so:
    /// one hand-off and one sync a job instead of two.
    pub(crate) async fn together<S: Send + 'static>(
        self,
        next: Command<S>,
    ) -> (Result<R, CommandError>, Result<S, CommandError>) {
        debug_assert!(Arc::ptr_eq(&self.inner, &next.inner), "one ledger");
        let (first, second) = match (self.job, next.job) {
            (Ok(first), Ok(second)) => (first, second),
            (first, second) => {
                let (inner, reply) = (self.inner, self.reply);
                let first = Command {
                    inner,
                    job: first,
                    reply,
                }
                .await;
                let (inner, reply) = (next.inner, next.reply);
                return (
                    first,
                    Command {
                        inner,
                        job: second,
                        reply,
                    }
                    .await,
                );
            }
        };
        let job: Job = Box::new(move |inner, core| {
            // Each on its own: a panic in one leaves the other's answer.
            let mut alone = |job: Job| {
                std::panic::catch_unwind(AssertUnwindSafe(|| job(inner, core))).unwrap_or_else(
                    |_| {
                        core.poisoned = true;
                        None
                    },
                )
            };
            let a = alone(first);
            let b = alone(second);
            match (a, b) {
                (Some(a), Some(b)) => Some(Finish {
                    seq: a.seq.max(b.seq),
                    answer: Box::new(move |synced| {
                        (a.answer)(synced.as_ref().map(|_| ()).map_err(|e| e.duplicate()));
                        (b.answer)(synced);
                    }),
                }),
                (a, b) => a.or(b),
            }
        });
        let both = Command {
            inner: self.inner,
            job: Ok(job),
            reply: self.reply,
        };
        let first = both.await;
        (first, next.reply.await)
    }
}

impl<R: Send + 'static> std::future::IntoFuture for Command<R> {
    type Output = Result<R, CommandError>;
    type IntoFuture = Pending<R>;

    fn into_future(self) -> Pending<R> {
        self.spawn()
    }
}

impl<R> std::fmt::Debug for Command<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Command").finish_non_exhaustive()
    }
}

/// The combiner's state: the commands waiting, whether a thread is
/// carrying them out, and the helper threads that do it for async callers.
#[derive(Default)]
pub(super) struct Combiner {
    /// Commands waiting for a combiner.
    jobs: Mutex<Vec<Job>>,
    /// Whether a thread is combining.
    combining: AtomicBool,
    /// Signals the helper threads that combine for async callers.
    helpers: std::sync::OnceLock<Mutex<std::sync::mpsc::Sender<()>>>,
}

/// Shared by every clone of one `Ledger`: when the last clone is dropped,
/// waits until no command is queued, no one combines and no thread but the
/// dropping one holds the ledger (a helper finishing a sync), so that
/// dropping the last handle closes the ledger — and frees its directory —
/// before it returns, with every command that was issued carried out.
pub(super) struct LastHandle(std::sync::Weak<Inner>);

impl LastHandle {
    pub(super) fn new(inner: &Arc<Inner>) -> Self {
        LastHandle(Arc::downgrade(inner))
    }
}

impl Drop for LastHandle {
    fn drop(&mut self) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        // Two: this upgrade and the dropping handle's own.
        while inner.combiner.combining.load(Ordering::Acquire)
            || !lock(&inner.combiner.jobs).is_empty()
            || Arc::strong_count(&inner) > 2
        {
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
    }
}

/// Queues `job`; true when the caller became the combiner.
fn push(inner: &Inner, job: Job) -> bool {
    lock(&inner.combiner.jobs).push(job);
    take_role(inner)
}

fn take_role(inner: &Inner) -> bool {
    inner
        .combiner
        .combining
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

/// Combines on a helper thread, for a caller that took the role but must
/// not block (an async caller) or must go on to sync its own group.
///
/// Two helpers per ledger, started on first use, so that one can combine
/// while the other waits for a sync. They hold the ledger weakly and end
/// when it is dropped (the channel closes). Not tokio's blocking pool: it
/// stops taking work while a runtime shuts down, and a role taken with no
/// one to carry it out would stall every later command.
fn combine_elsewhere(inner: &Arc<Inner>) {
    let helpers = inner.combiner.helpers.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..2 {
            let (rx, weak) = (rx.clone(), Arc::downgrade(inner));
            let spawned = std::thread::Builder::new()
                .name(format!("ledger-combiner-{n}"))
                .spawn(move || loop {
                    let signal = lock(&rx).recv();
                    match (signal, weak.upgrade()) {
                        (Ok(()), Some(inner)) => combine(&inner),
                        _ => return,
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a combiner thread");
            }
        }
        Mutex::new(tx)
    });
    if lock(helpers).send(()).is_err() {
        // No helper could start: combine here rather than stall.
        combine(inner);
    }
}

/// Runs as the combiner: carries out queued commands until none is left
/// (or a group is full), gives up the role, syncs and answers the group;
/// takes the role again if commands arrived meanwhile and no one else has.
fn combine(inner: &Arc<Inner>) {
    loop {
        let mut finishes = Vec::new();
        let mut ran = 0;
        let mut grouped = false;
        let mut unsealed = None;
        loop {
            let jobs = std::mem::take(&mut *lock(&inner.combiner.jobs));
            if jobs.is_empty() {
                break;
            }
            ran += jobs.len();
            let mut core = inner.core();
            if !grouped {
                grouped = true;
                inner.begin_group(&mut core);
            }
            // What this hold appends is written when it ends, together.
            inner.log.open_block();
            for job in jobs {
                match std::panic::catch_unwind(AssertUnwindSafe(|| job(inner, &mut core))) {
                    Ok(Some(finish)) => finishes.push(finish),
                    Ok(None) => {}
                    // Its answer is dropped unsent: the caller learns of it.
                    Err(_) => core.poisoned = true,
                }
            }
            // Before the next holder of the core finds in the projection
            // what the log does not have yet.
            if let Err(e) = inner.log.seal() {
                tracing::error!(error = %e, "cannot write a block of records");
                // The projection follows the records written, and writes
                // stop.
                inner.reload(&mut core);
                core.poisoned = true;
                unsealed.get_or_insert(e);
            }
            drop(core);
            if ran >= MAX_GROUP {
                break;
            }
        }
        // A shared log's group commits here, before the next group may
        // lock the log's end.
        let failed = if grouped { inner.end_group() } else { None };
        let failed = unsealed.or(failed);
        inner.combiner.combining.store(false, Ordering::Release);
        // Commands pushed while this thread held the role found it taken:
        // if any are queued now, someone must combine them before this
        // group's sync ends, so that they join the next sync.
        let handed_on = !lock(&inner.combiner.jobs).is_empty() && take_role(inner);
        if handed_on {
            combine_elsewhere(inner);
        }
        if let Some(seq) = finishes.iter().map(|f| f.seq).max() {
            let synced = match failed {
                Some(e) => Err(e),
                None => inner.log.wait_durable(seq),
            };
            for finish in finishes {
                let result = match &synced {
                    Ok(()) => Ok(()),
                    Err(e) => Err(e.duplicate()),
                };
                (finish.answer)(result);
            }
        }
        if handed_on || lock(&inner.combiner.jobs).is_empty() || !take_role(inner) {
            return;
        }
    }
}

struct Slot<R> {
    value: Option<Result<R, CommandError>>,
    /// The sender went away without answering (the command panicked).
    dropped: bool,
    waker: Option<Waker>,
    thread: Option<std::thread::Thread>,
}

impl<R> Default for Slot<R> {
    fn default() -> Self {
        Slot {
            value: None,
            dropped: false,
            waker: None,
            thread: None,
        }
    }
}

struct Sender<R>(Option<Arc<Mutex<Slot<R>>>>);

impl<R> Sender<R> {
    fn send(mut self, value: Result<R, CommandError>) {
        if let Some(slot) = self.0.take() {
            let mut s = lock(&slot);
            s.value = Some(value);
            wake(&mut s);
        }
    }
}

impl<R> Drop for Sender<R> {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            let mut s = lock(&slot);
            s.dropped = true;
            wake(&mut s);
        }
    }
}

fn wake<R>(s: &mut Slot<R>) {
    if let Some(w) = s.waker.take() {
        w.wake();
    }
    if let Some(t) = s.thread.take() {
        t.unpark();
    }
}

fn take<R>(s: &mut Slot<R>) -> Option<Result<R, CommandError>> {
    if let Some(v) = s.value.take() {
        return Some(v);
    }
    s.dropped.then(|| {
        Err(StorageError::new(
            ErrorKind::Poisoned,
            "a ledger command panicked; reopen the ledger",
        )
        .into())
    })
}

/// The answer to a ledger command that was queued without blocking
/// ([`Command::spawn`], or awaiting a [`Command`]): a future of its result,
/// ready once the command's events are as durable as the ledger promises.
///
/// The command is carried out whether or not the future is awaited or
/// dropped, and dropping the last `Ledger` handle waits for it. Any executor
/// can poll it; it needs no tokio runtime.
#[must_use = "the command is carried out either way; its answer is here"]
pub struct Pending<R> {
    slot: Arc<Mutex<Slot<R>>>,
}

impl<R> std::fmt::Debug for Pending<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

impl<R> Pending<R> {
    /// Blocks until the answer arrives.
    pub(super) fn wait(self) -> Result<R, CommandError> {
        loop {
            let mut s = lock(&self.slot);
            if let Some(v) = take(&mut s) {
                return v;
            }
            s.thread = Some(std::thread::current());
            drop(s);
            // A spurious wake just loops back.
            std::thread::park();
        }
    }
}

impl<R> Future for Pending<R> {
    type Output = Result<R, CommandError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = lock(&self.slot);
        match take(&mut s) {
            Some(v) => Poll::Ready(v),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
