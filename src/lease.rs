//! Leases: which worker holds a running attempt, and until when; and which
//! workers are live, for the callables they run.
//!
//! A `started` event with a `leaseMs` begins a lease; heartbeats extend it
//! in memory and are not events (the attempt number is the fencing token,
//! so a lease only decides *when* a silent worker's attempt counts as lost,
//! never whether an answer is accepted). When a lease runs out, the ledger
//! records `recovered` (reason `lease_expired`) and the retry policy's
//! outcome. Any event that ends the attempt ends its lease.
//!
//! A ledger opened again gives each running leased attempt a full lease
//! from the time it opened (at least what its `started` event granted): a
//! worker that outlived the process serving it keeps its attempt by
//! heartbeating the next one.
//!
//! The rules of a heartbeat ([`Leases::renew`]) are here and nowhere else.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::CommandError;
use crate::event::{Event, EventKind};
use crate::execution::TenantId;
use crate::execution::{BackgroundExecution, BackgroundExecutionStatus, ExecutionId};
use crate::machine::Refusal;

/// The shortest lease a claim may ask for.
pub const MIN_LEASE: Duration = Duration::from_millis(100);
/// The longest lease a claim or heartbeat may ask for.
pub const MAX_LEASE: Duration = Duration::from_secs(3600);
/// The lease a claim gets when it names none.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// The most executions one claim takes.
pub const MAX_CLAIM: usize = 100;

/// A running attempt's lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Lease {
    /// The attempt it holds.
    pub attempt: u32,
    /// The worker that holds it, as its claim named it.
    pub worker: Option<String>,
    /// When it runs out unless a heartbeat extends it.
    pub until: DateTime<Utc>,
    /// How long each heartbeat extends it by default, in milliseconds.
    pub lease_ms: u64,
}

/// What a heartbeat answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Heartbeat {
    /// When the lease runs out now.
    pub lease_until: DateTime<Utc>,
    /// Whether the execution was cancelled while the attempt ran: the
    /// worker should stop it (its answer will be refused).
    pub cancel_requested: bool,
}

/// The leases of the running attempts, by execution.
#[derive(Clone, Debug, Default)]
pub(crate) struct Leases {
    held: HashMap<ExecutionId, Lease>,
}

pub(crate) use crate::machine::later_by as after;

/// Refuses a lease length out of [`MIN_LEASE`]–[`MAX_LEASE`]: the one
/// check of it, for claims and heartbeats.
pub(crate) fn check_length(lease: Duration) -> Result<(), CommandError> {
    if (MIN_LEASE..=MAX_LEASE).contains(&lease) {
        return Ok(());
    }
    Err(CommandError::invalid(format!(
        "leaseMs must be {}-{} (milliseconds), not {}",
        MIN_LEASE.as_millis(),
        MAX_LEASE.as_millis(),
        lease.as_millis()
    )))
}

impl Leases {
    /// Follows an applied event: a leased start begins a lease; whatever
    /// ends the attempt ends it.
    pub(crate) fn follow(&mut self, event: &Event) {
        match &event.kind {
            EventKind::Started {
                attempt,
                worker,
                lease_ms: Some(ms),
            } => {
                self.held.insert(
                    event.execution_id,
                    Lease {
                        attempt: *attempt,
                        worker: worker.clone(),
                        until: after(event.at, *ms),
                        lease_ms: *ms,
                    },
                );
            }
            EventKind::Queued(_) | EventKind::Released => {}
            kind if kind.is_bookkeeping() => {}
            _ => {
                self.held.remove(&event.execution_id);
            }
        }
    }

    /// The lease of a running attempt found when the ledger opened: its
    /// `started` event's, and at least a full lease from `opened`.
    pub(crate) fn reopen(&mut self, started: &Event, opened: DateTime<Utc>) {
        self.follow(started);
        if let Some(lease) = self.held.get_mut(&started.execution_id) {
            lease.until = lease.until.max(after(opened, lease.lease_ms));
        }
    }

    /// The lease of `id`'s running attempt, if it is leased.
    pub(crate) fn get(&self, id: &ExecutionId) -> Option<&Lease> {
        self.held.get(id)
    }

    /// How many attempts are leased.
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    /// All leased executions.
    pub(crate) fn ids(&self) -> impl Iterator<Item = ExecutionId> + '_ {
        self.held.keys().copied()
    }

    /// The leased executions whose leases ran out by `now`.
    pub(crate) fn due(&self, now: DateTime<Utc>) -> Vec<ExecutionId> {
        self.held
            .iter()
            .filter(|(_, l)| l.until <= now)
            .map(|(id, _)| *id)
            .collect()
    }

    /// A renewal of `attempt` of `id` heard elsewhere (through another
    /// process sharing the log): extends its lease to `until`, never
    /// shortens it; a renewal of another attempt changes nothing.
    pub(crate) fn renewed(&mut self, id: &ExecutionId, attempt: u32, until: DateTime<Utc>) {
        if let Some(lease) = self.held.get_mut(id).filter(|l| l.attempt == attempt) {
            lease.until = lease.until.max(until);
        }
    }

    /// The earliest time a lease runs out.
    pub(crate) fn next_expiry(&self) -> Option<DateTime<Utc>> {
        self.held.values().map(|l| l.until).min()
    }

    /// A heartbeat of `attempt` of `current` at `now`: extends the lease
    /// by `extend` (the lease's own length when `None`) while the attempt
    /// runs; says so when the execution was cancelled during the attempt.
    ///
    /// # Errors
    ///
    /// The refusal when `attempt` is not the running one: another attempt
    /// is current ([`Refusal::StaleAttempt`]), or the execution is no longer
    /// running ([`Refusal::Status`]), or the attempt is held without a lease
    /// by the process that runs it ([`Refusal::NotLeased`]).
    pub(crate) fn renew(
        &mut self,
        current: &BackgroundExecution,
        attempt: u32,
        extend: Option<Duration>,
        now: DateTime<Utc>,
    ) -> Result<Heartbeat, Refusal> {
        if current.attempt != attempt {
            return Err(Refusal::StaleAttempt {
                given: attempt,
                current: current.attempt,
            });
        }
        match current.status {
            BackgroundExecutionStatus::Running => {
                let lease = self
                    .held
                    .get_mut(&current.execution_id)
                    .filter(|l| l.attempt == attempt)
                    .ok_or(Refusal::NotLeased)?;
                let ms = extend.map_or(lease.lease_ms, |d| {
                    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
                });
                lease.until = lease.until.max(after(now, ms));
                Ok(Heartbeat {
                    lease_until: lease.until,
                    cancel_requested: false,
                })
            }
            // Cancelled while the attempt ran (a cancel of a queued
            // execution leaves no started attempt with this number open).
            BackgroundExecutionStatus::Cancelled if current.started_at.is_some() => Ok(Heartbeat {
                lease_until: now,
                cancel_requested: true,
            }),
            status => Err(Refusal::Status(status)),
        }
    }
}

/// A worker as the ledger last heard from it.
#[derive(Clone, Debug)]
struct Seen {
    callables: Option<Vec<String>>,
    until: DateTime<Utc>,
}

/// Live workers and the callables they run, by the tenant they claim for
/// (`None`: any tenant's work, an admin's or an unscoped runtime's) and
/// name: a worker is live from a claim until a little past the time it
/// said it would claim again or heartbeat by, and for as long as an
/// in-process runtime runs.
#[derive(Debug, Default)]
pub(crate) struct Workers {
    seen: HashMap<(Option<TenantId>, String), Seen>,
}

/// How long past its next expected call a worker counts as live.
pub(crate) const WORKER_SLACK: Duration = Duration::from_secs(10);

fn slack(until: DateTime<Utc>) -> DateTime<Utc> {
    after(until, WORKER_SLACK.as_millis() as u64)
}

impl Workers {
    /// `worker`, claiming for `scope`, runs `callables` (`None`: any) and
    /// will be back by `until`.
    pub(crate) fn saw(
        &mut self,
        scope: Option<&TenantId>,
        worker: &str,
        callables: Option<&[String]>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) {
        self.prune(now);
        let until = slack(until);
        let seen = self
            .seen
            .entry((scope.cloned(), worker.to_owned()))
            .or_insert(Seen {
                callables: None,
                until,
            });
        seen.callables = callables.map(<[String]>::to_vec);
        seen.until = seen.until.max(until);
    }

    /// `worker`, known from a claim for `tenant`'s work, was heard from and
    /// will be back by `until`.
    pub(crate) fn heard(&mut self, tenant: &TenantId, worker: &str, until: DateTime<Utc>) {
        for scope in [Some(tenant.clone()), None] {
            if let Some(seen) = self.seen.get_mut(&(scope, worker.to_owned())) {
                seen.until = seen.until.max(slack(until));
            }
        }
    }

    /// `worker` (claiming for `scope`) is no longer live.
    pub(crate) fn gone(&mut self, scope: Option<&TenantId>, worker: &str) {
        self.seen.remove(&(scope.cloned(), worker.to_owned()));
    }

    /// Whether a live worker at `now` runs `callable` for `tenant`.
    pub(crate) fn runs(&self, tenant: &TenantId, callable: &str, now: DateTime<Utc>) -> bool {
        self.seen.iter().any(|((scope, _), s)| {
            scope.as_ref().is_none_or(|t| t == tenant)
                && s.until > now
                && s.callables
                    .as_ref()
                    .is_none_or(|c| c.iter().any(|c| c == callable))
        })
    }

    /// Forgets workers not live at `now`.
    pub(crate) fn prune(&mut self, now: DateTime<Utc>) {
        self.seen.retain(|_, s| s.until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Submission;
    use crate::machine::apply;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::milliseconds(ms)
    }

    fn event(id: ExecutionId, seq: u64, ms: i64, kind: EventKind) -> Event {
        Event {
            seq,
            at: at(ms),
            execution_id: id,
            tenant_id: "acme".parse().unwrap(),
            kind,
        }
    }

    fn started(leases: &mut Leases, lease_ms: Option<u64>) -> Option<BackgroundExecution> {
        let id = ExecutionId::new();
        let mut state = None;
        for e in [
            event(id, 1, 0, EventKind::Queued(Box::new(Submission::new("w")))),
            event(
                id,
                2,
                1_000,
                EventKind::Started {
                    attempt: 1,
                    worker: Some("w-1".into()),
                    lease_ms,
                },
            ),
        ] {
            apply(&mut state, &e).unwrap();
            leases.follow(&e);
        }
        state
    }

    #[test]
    fn a_heartbeat_extends_the_running_attempts_lease_and_never_shortens_it() {
        let mut leases = Leases::default();
        let e = started(&mut leases, Some(5_000)).unwrap();
        assert_eq!(leases.get(&e.execution_id).unwrap().until, at(6_000));
        let beat = leases.renew(&e, 1, None, at(3_000)).unwrap();
        assert_eq!(beat.lease_until, at(8_000));
        assert!(!beat.cancel_requested);
        // A shorter extension does not take back what was granted.
        let beat = leases
            .renew(&e, 1, Some(Duration::from_millis(100)), at(3_500))
            .unwrap();
        assert_eq!(beat.lease_until, at(8_000));
        assert_eq!(leases.next_expiry(), Some(at(8_000)));
    }

    #[test]
    fn a_heartbeat_of_another_attempt_or_an_unleased_one_is_refused() {
        let mut leases = Leases::default();
        let e = started(&mut leases, Some(5_000)).unwrap();
        assert_eq!(
            leases.renew(&e, 2, None, at(2_000)),
            Err(Refusal::StaleAttempt {
                given: 2,
                current: 1
            })
        );
        let unleased = started(&mut leases, None).unwrap();
        assert_eq!(
            leases.renew(&unleased, 1, None, at(2_000)),
            Err(Refusal::NotLeased)
        );
    }

    #[test]
    fn a_cancel_during_the_attempt_is_told_at_the_next_heartbeat_and_ends_the_lease() {
        let mut leases = Leases::default();
        let mut state = started(&mut leases, Some(5_000));
        let id = state.as_ref().unwrap().execution_id;
        let cancel = event(id, 3, 2_000, EventKind::Cancelled { reason: None });
        apply(&mut state, &cancel).unwrap();
        leases.follow(&cancel);
        assert!(leases.get(&id).is_none());
        let beat = leases
            .renew(state.as_ref().unwrap(), 1, None, at(2_500))
            .unwrap();
        assert!(beat.cancel_requested);
    }

    #[test]
    fn a_reopened_ledger_gives_running_leases_a_full_lease_from_when_it_opened() {
        let mut leases = Leases::default();
        let id = ExecutionId::new();
        let start = event(
            id,
            2,
            1_000,
            EventKind::Started {
                attempt: 1,
                worker: None,
                lease_ms: Some(5_000),
            },
        );
        leases.reopen(&start, at(60_000));
        assert_eq!(leases.get(&id).unwrap().until, at(65_000));
    }

    #[test]
    fn a_worker_is_live_for_its_callables_and_tenant_until_a_little_past_its_next_call() {
        let mut workers = Workers::default();
        let (acme, globex): (TenantId, TenantId) =
            ("acme".parse().unwrap(), "globex".parse().unwrap());
        workers.saw(None, "w-1", Some(&["resize".to_owned()]), at(1_000), at(0));
        assert!(workers.runs(&acme, "resize", at(1_000)));
        assert!(!workers.runs(&acme, "crop", at(1_000)));
        let gone = at(1_000) + chrono::Duration::from_std(WORKER_SLACK).unwrap();
        assert!(!workers.runs(&acme, "resize", gone));
        // A tenant's worker runs that tenant's work only.
        workers.saw(
            Some(&globex),
            "w-2",
            Some(&["crop".to_owned()]),
            at(1_000),
            at(0),
        );
        assert!(workers.runs(&globex, "crop", at(1_000)));
        assert!(!workers.runs(&acme, "crop", at(1_000)));
        workers.saw(None, "any", None, at(1_000), at(0));
        assert!(workers.runs(&acme, "crop", at(1_000)));
        workers.gone(None, "any");
        assert!(!workers.runs(&acme, "crop", at(1_000)));
    }
}
