//! The command surface: each command of the ledger builds an [`Op`] and
//! returns its [`Command`] handle, carried out by `wait()`, `.await` or
//! `spawn()`. A handle scoped to a tenant carries the scope into the
//! command.

use super::write::Outcome;
use super::writer::Command;
use super::{Ledger, Submitted};
use crate::command::{Action, Claim, Op, Retry};
use crate::error::CommandError;
use crate::event::Submission;
use crate::execution::{BackgroundExecution, ExecutionError, ExecutionId, TenantId};

impl Outcome {
    pub(super) fn submitted(self) -> Submitted {
        match self {
            Outcome::Submitted(s) => s,
            _ => unreachable!("a submit answers with a submission"),
        }
    }

    fn submitted_many(self) -> Vec<Submitted> {
        match self {
            Outcome::SubmittedMany(s) => s,
            _ => unreachable!("a batch submit answers with its submissions"),
        }
    }

    fn claimed(self) -> Option<BackgroundExecution> {
        self.claimed_all().into_iter().next()
    }

    fn claimed_all(self) -> Vec<BackgroundExecution> {
        match self {
            Outcome::Claimed(c) => c,
            _ => unreachable!("a claim answers with a claim"),
        }
    }

    fn execution(self) -> BackgroundExecution {
        match self {
            Outcome::Execution(e) => e,
            _ => unreachable!("a command on one execution answers with it"),
        }
    }

    fn recovered(self) -> Vec<BackgroundExecution> {
        match self {
            Outcome::Recovered(r) => r,
            _ => unreachable!("recovering answers with the recovered"),
        }
    }
}

impl Ledger {
    /// The handle of `op`: refused at once when its input is out of range,
    /// else carried out (within this handle's scope) when waited for.
    fn run<R: Send + 'static>(&self, op: Op, answer: fn(Outcome) -> R) -> Command<R> {
        if let Err(e) = op.validate() {
            return Command::refused(&self.inner, e);
        }
        self.run_checked(op, answer)
    }

    /// [`Ledger::run`] for an op the ledger made and checked itself (a
    /// schedule's firing, which carries its link to the schedule).
    pub(super) fn run_checked<R: Send + 'static>(
        &self,
        op: Op,
        answer: fn(Outcome) -> R,
    ) -> Command<R> {
        let scope = self.scope.clone();
        Command::new(&self.inner, move |inner, core| {
            let (outcome, seq) = inner.carry_out(core, scope.as_ref(), &op)?;
            Ok((answer(outcome), seq))
        })
    }

    /// The refusal of a submit for a tenant this handle is not scoped to.
    fn foreign<R: Send + 'static>(&self, tenant: &TenantId) -> Command<R> {
        let scope = self.scope.as_ref().map_or("", |s| s.as_str());
        Command::refused(
            &self.inner,
            CommandError::invalid(format!(
                "tenant: this handle submits for tenant {scope} only, not {tenant}"
            )),
        )
    }

    fn on(&self, id: ExecutionId, action: Action) -> Command<BackgroundExecution> {
        self.run(Op::On(id, action), Outcome::execution)
    }

    /// Submits a new execution for `tenant`. With an idempotency key that
    /// the tenant used before for the same submission, answers that
    /// execution and appends nothing.
    ///
    /// # Errors
    ///
    /// `Invalid` for out-of-range input (see the `MAX_*` limits), or a
    /// tenant other than this handle's scope; `IdempotencyConflict` when the
    /// key was used for another submission; `Storage`.
    pub fn submit(&self, tenant: &TenantId, submission: Submission) -> Command<Submitted> {
        if !self.sees(tenant) {
            return self.foreign(tenant);
        }
        self.run(
            Op::Submit(tenant.clone(), Box::new(submission)),
            Outcome::submitted,
        )
    }

    /// Submits several executions for `tenant` as one group: all are
    /// appended, with one sync, or none. Each idempotency key is honoured
    /// as by [`submit`](Self::submit) (an execution the tenant submitted
    /// before under it is answered, not appended). Answers in the order of
    /// `submissions`; at most [`MAX_BATCH`](crate::MAX_BATCH).
    ///
    /// # Errors
    ///
    /// As [`submit`](Self::submit), for the whole batch: `Invalid` naming
    /// the first bad submission by its index (`executions[3]: …`), also for
    /// an idempotency key used twice in the batch or more than
    /// [`MAX_BATCH`](crate::MAX_BATCH) submissions; nothing is appended.
    pub fn submit_many(
        &self,
        tenant: &TenantId,
        submissions: Vec<Submission>,
    ) -> Command<Vec<Submitted>> {
        if !self.sees(tenant) {
            return self.foreign(tenant);
        }
        self.run(
            Op::SubmitMany(tenant.clone(), submissions),
            Outcome::submitted_many,
        )
    }

    /// Claims the next runnable execution (priority, then the tenant whose
    /// turn it is by its fair share, then queue order: `fair.rs`; of
    /// this handle's tenant when scoped): starts its next attempt and
    /// answers it (`attempt` is the fencing token to complete or fail it
    /// with). `None` when nothing is runnable.
    ///
    /// # Errors
    ///
    /// `Storage`.
    pub fn claim(&self, worker: Option<&str>) -> Command<Option<BackgroundExecution>> {
        let claim = match worker {
            Some(w) => Claim::new().worker(w),
            None => Claim::new(),
        };
        self.run(Op::Claim(self.leased_if_shared(claim)), Outcome::claimed)
    }

    /// `claim`, under [`DEFAULT_LEASE`](crate::DEFAULT_LEASE) when it
    /// names no lease and other processes share the log: they can tell
    /// only from its lease that the process running an attempt stopped.
    fn leased_if_shared(&self, mut claim: Claim) -> Claim {
        if claim.lease.is_none() && self.inner.log.shared() {
            claim.lease = Some(crate::lease::DEFAULT_LEASE);
        }
        claim
    }

    /// Claims what `claim` asks for: up to its `max` runnable executions of
    /// its callables (priority, then the tenants in turn by their fair
    /// shares, then queue order; of this handle's tenant
    /// when scoped), starting their next attempts as one group, each under
    /// the claim's lease when it names one. Answers them, running; empty
    /// when nothing is runnable. A leased claim's worker counts as live for
    /// its callables (see [`Ledger::callables_without_worker`]).
    ///
    /// # Errors
    ///
    /// `Invalid` (naming the field) when `max` or the lease is out of
    /// range; `Storage`.
    pub fn claim_with(&self, claim: Claim) -> Command<Vec<BackgroundExecution>> {
        let claim = self.leased_if_shared(claim);
        // A leased claim comes from a worker elsewhere, live from now on;
        // an in-process runtime says so once, when it starts.
        if let (Some(worker), Some(lease)) = (&claim.worker, claim.lease) {
            if Op::Claim(claim.clone()).validate().is_ok() {
                let back_by = self.now() + chrono::Duration::from_std(lease).unwrap_or_default();
                self.saw_worker(worker, claim.callables.as_deref(), back_by);
            }
        }
        self.run(Op::Claim(claim), Outcome::claimed_all)
    }

    /// Completes attempt `attempt` of a running execution with `output`.
    ///
    /// # Errors
    ///
    /// `NotFound`; `Transition` when it is not running or `attempt` is not
    /// its current attempt; `Invalid` for an output over the limit; `Storage`.
    pub fn complete(
        &self,
        id: ExecutionId,
        attempt: u32,
        output: serde_json::Value,
    ) -> Command<BackgroundExecution> {
        self.on(id, Action::Complete { attempt, output })
    }

    /// Fails attempt `attempt`: a retry after the policy's back-off while
    /// attempts remain, `failed` after the last.
    ///
    /// # Errors
    ///
    /// As [`complete`](Self::complete).
    pub fn fail(
        &self,
        id: ExecutionId,
        attempt: u32,
        error: ExecutionError,
    ) -> Command<BackgroundExecution> {
        let retry = true;
        self.on(
            id,
            Action::Fail {
                attempt,
                error,
                retry,
            },
        )
    }

    /// Fails attempt `attempt` for good, with no retry whatever the policy.
    ///
    /// # Errors
    ///
    /// As [`complete`](Self::complete).
    pub fn fail_permanently(
        &self,
        id: ExecutionId,
        attempt: u32,
        error: ExecutionError,
    ) -> Command<BackgroundExecution> {
        let retry = false;
        self.on(
            id,
            Action::Fail {
                attempt,
                error,
                retry,
            },
        )
    }

    /// Records that attempt `attempt` outlived its timeout: a retry while
    /// attempts remain, `timeout` after the last.
    ///
    /// # Errors
    ///
    /// As [`complete`](Self::complete).
    pub fn time_out(&self, id: ExecutionId, attempt: u32) -> Command<BackgroundExecution> {
        self.on(id, Action::TimeOut { attempt })
    }

    /// Cancels a queued or running execution.
    ///
    /// # Errors
    ///
    /// `NotFound`; `Transition` when it is finished; `Storage`.
    pub fn cancel(&self, id: ExecutionId, reason: Option<String>) -> Command<BackgroundExecution> {
        self.on(id, Action::Cancel { reason })
    }

    /// Redacts a settled execution's payloads: records a `redacted` event
    /// (`by` whom, why) and, in the same write, removes its input, output,
    /// context and metadata values, error messages and reasons from its
    /// records, which read `"[redacted]"` from then on (time travel
    /// included). Statuses, times, attempts, workers and the hash chain
    /// stay, and [`verify`](Self::verify) still passes.
    ///
    /// # Errors
    ///
    /// `NotFound`; `Transition` when it is not settled, under legal hold
    /// or redacted already; `Invalid` for an empty reason, or an execution
    /// recorded before payloads could be redacted (format 1); `Storage`.
    pub fn redact(
        &self,
        id: ExecutionId,
        reason: impl Into<String>,
        by: Option<String>,
    ) -> Command<BackgroundExecution> {
        self.on(
            id,
            Action::Redact {
                by,
                reason: reason.into(),
            },
        )
    }

    /// Puts an execution (in any status) under legal hold: it cannot be
    /// redacted until the hold is released.
    ///
    /// # Errors
    ///
    /// `NotFound`; `Transition` when it is held already; `Invalid` for an
    /// empty reason; `Storage`.
    pub fn hold(
        &self,
        id: ExecutionId,
        reason: impl Into<String>,
        by: Option<String>,
    ) -> Command<BackgroundExecution> {
        self.on(
            id,
            Action::Hold {
                by,
                reason: reason.into(),
            },
        )
    }

    /// Releases an execution's legal hold.
    ///
    /// # Errors
    ///
    /// `NotFound`; `Transition` when it is not held; `Invalid` for an
    /// empty reason; `Storage`.
    pub fn release_hold(
        &self,
        id: ExecutionId,
        reason: impl Into<String>,
        by: Option<String>,
    ) -> Command<BackgroundExecution> {
        self.on(
            id,
            Action::ReleaseHold {
                by,
                reason: reason.into(),
            },
        )
    }

    /// Runs a failed, timed-out or cancelled execution again: records a
    /// `retried` event on it (who asked, why, the attempts the new run
    /// gets) and, in the same write, submits the new run, a new execution
    /// with the same callable, input, context and configuration whose
    /// `retryOf` names this one. Answers the new run. The execution itself
    /// keeps the status it ended with, and names the new run
    /// (`retriedAs`).
    ///
    /// # Errors
    ///
    /// `NotFound`; `Transition` when it is not failed, timed out or
    /// cancelled, was retried already (the refusal names the new run) or
    /// redacted; `Archived`; `Invalid` for attempts out of range or an
    /// empty reason; `Storage`.
    pub fn retry(&self, id: ExecutionId, retry: Retry) -> Command<BackgroundExecution> {
        self.on(id, Action::Retry(retry))
    }

    /// Releases a held deferred execution: it becomes runnable now.
    ///
    /// # Errors
    ///
    /// `NotFound`; `Transition` when it is not deferred, already released,
    /// or not queued; `Storage`.
    pub fn release(&self, id: ExecutionId) -> Command<BackgroundExecution> {
        self.on(id, Action::Release)
    }

    /// Records the outcome of binding a completed execution's output to its
    /// target (`error` when it failed).
    ///
    /// # Errors
    ///
    /// `NotFound`; `Transition` when no binding is pending; `Storage`.
    pub fn record_binding(
        &self,
        id: ExecutionId,
        error: Option<ExecutionError>,
    ) -> Command<BackgroundExecution> {
        self.on(id, Action::RecordBinding { error })
    }

    /// Records one callback delivery attempt: `Ok(status)` when the
    /// receiver accepted it, `Err((status, error))` when it did not.
    ///
    /// # Errors
    ///
    /// `NotFound`; `Transition` when no callback is pending; `Storage`.
    pub fn record_callback(
        &self,
        id: ExecutionId,
        outcome: Result<u16, (Option<u16>, String)>,
    ) -> Command<BackgroundExecution> {
        self.on(id, Action::RecordCallback { outcome })
    }

    /// Records every execution left `running` without a lease (by a
    /// process that stopped; of this handle's tenant when scoped) as
    /// recovered, reason `process_stopped`: back to queued while attempts
    /// remain, failed otherwise. Answers them as they are now. Call it once
    /// on start-up, before claiming. Leased attempts are left to their
    /// leases (on a ledger many processes share every attempt is leased, so
    /// this finds only what a process left without one).
    ///
    /// # Errors
    ///
    /// `Storage`.
    pub fn recover_abandoned(&self) -> Command<Vec<BackgroundExecution>> {
        self.run(Op::RecoverAbandoned, Outcome::recovered)
    }

    /// Ends every leased attempt whose lease ran out (`recovered`, reason
    /// `lease_expired`, then the retry policy's outcome) or that outlived
    /// its execution's timeout (`timed_out` or a retry), of this handle's
    /// tenant when scoped. Answers them as they are now. Whoever serves
    /// remote workers calls it periodically (the runtime does).
    ///
    /// # Errors
    ///
    /// `Storage`.
    pub fn expire_leases(&self) -> Command<Vec<BackgroundExecution>> {
        self.run(Op::ExpireLeases, Outcome::recovered)
    }
}
