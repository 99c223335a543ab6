//! `state_machine`: arbitrary bytes read as a script of commands over a few
//! executions of three tenants, each turned into an event and offered to
//! `Projection::apply` (and, per execution, to `execution_ledger::apply`).
//!
//! After every command: a refused event changed nothing; a finished
//! execution took nothing but bookkeeping; `queued_at <= started_at <=
//! completed_at` (and a release between the first two); `attempt <= max
//! attempts`; the queue holds exactly the runnable queued executions,
//! highest priority first, each tenant's in priority-then-order order (how
//! tenants take turns within a priority is `tests/model.rs`'s to check, by
//! its reference model of the fair-share rule). At the end, a fresh fold of
//! the accepted events is the live projection.
//!
//! A script is a sequence of commands: an opcode byte (taken modulo
//! [`OPS`]) and the argument bytes listed beside each opcode below. A
//! script that ends early reads zeros. Every byte string is a valid script.
//!
//! Argument bytes:
//! - `target`: the execution aimed at, `n`-th submitted (mod one more than
//!   the count; the extra value is an id never submitted);
//! - `attempt`: which attempt the event names, relative to the current one
//!   ([`CURRENT`], [`PREVIOUS`], [`NEXT`]; `4k + 3` names attempt `k`);
//! - `modifier`: `0` plain; `8k + 1` sent with another tenant; `8k + 2`
//!   dated `k × 50 ms + 1 µs` before the clock.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use execution_ledger::{
    after_failure, after_loss, after_timeout, apply, check, is_settled, BackgroundExecution,
    BackgroundExecutionMode as Mode, BackgroundExecutionStatus as Status, Event, EventKind,
    ExecutionError, ExecutionId, Projection, RecoveryReason, Refusal, RetryConfig, Submission,
    TargetBindingConfig, TenantId,
};
use serde_json::{json, Value};

use super::checks::{
    assert_live_is_unsettled, assert_names, assert_placed, assert_refolds, assert_times_in_order,
};

/// `[step]`: the clock moves on `step × 50 ms` (from 240: `step - 239` hours).
pub const ADVANCE: u8 = 0;
/// `[tenant, priority, flags, attempts, delays, run_at]`: a new execution.
/// `flags`: bits 0-1 the mode (0 fire and forget, 1 silent, else deferred),
/// bit 2 a target binding, bit 3 a callback URL, bit 4 a retry policy of
/// `attempts % 5` attempts and the back-off `delays` picks, bit 5 a run-at
/// time `run_at` (as `i8`) × 100 ms from now. `priority`: 0, 50, 255 or
/// itself, by its value mod 4.
pub const SUBMIT: u8 = 1;
/// `[tenant]`: a worker claims the next runnable execution (of tenant
/// `tenant % 4`; 3 is any tenant).
pub const CLAIM: u8 = 2;
/// `[target, output, modifier]`: the current attempt completed.
pub const COMPLETE: u8 = 3;
/// `[target, modifier]`: the current attempt failed (a retry or `failed`,
/// by the policy).
pub const FAIL: u8 = 4;
/// `[target, modifier]`: the current attempt timed out (a retry or
/// `timed_out`, by the policy).
pub const TIMEOUT: u8 = 5;
/// `[target, modifier]`: the running attempt was lost with its process.
pub const RECOVER: u8 = 6;
/// `[target, kind, attempt, extra, modifier]`: an event of any attempt,
/// bypassing the policy: `kind % 6` is started, completed, failed,
/// timed_out, retry_scheduled (not before `extra` as `i8` × 100 ms from
/// now) or recovered (with status `extra % 6` as its outcome).
pub const RAW: u8 = 7;
/// `[target, modifier]`: cancel.
pub const CANCEL: u8 = 8;
/// `[target, modifier]`: release a deferred execution.
pub const RELEASE: u8 = 9;
/// `[target, failed, modifier]`: the target binding was applied (failed
/// when `failed` is odd).
pub const BIND: u8 = 10;
/// `[target, failed, attempt, modifier]`: a callback delivery (failed when
/// `failed` is odd).
pub const CALLBACK: u8 = 11;
/// `[target]`: a `queued` event for an execution that exists.
pub const RESUBMIT: u8 = 12;
/// The number of opcodes.
pub const OPS: u8 = 13;

/// An `attempt` byte: the current attempt (for a start: the next one).
pub const CURRENT: u8 = 0;
/// An `attempt` byte: the one before the current.
pub const PREVIOUS: u8 = 1;
/// An `attempt` byte: the one after the current.
pub const NEXT: u8 = 2;

/// A `modifier` byte: sent with a tenant other than the execution's.
pub const OTHER_TENANT: u8 = 1;
/// A `modifier` byte: dated 1 µs before the clock.
pub const BACKDATED: u8 = 2;

/// Commands read from one input at most (keeps every run short).
const MAX_COMMANDS: usize = 256;
/// Executions submitted at most ("a few").
const MAX_EXECUTIONS: usize = 8;

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];

fn tenant(i: u8) -> TenantId {
    TENANTS[usize::from(i) % TENANTS.len()]
        .parse()
        .expect("a valid tenant id")
}

/// The id of the `n`-th submitted execution (from 1), or of one never
/// submitted (`n == 0`).
fn id(n: usize) -> ExecutionId {
    let mut b = [0u8; 16];
    b[6] = 0x70;
    b[8..].copy_from_slice(&(n as u64).to_be_bytes());
    ExecutionId::from_bytes(b)
}

/// Runs the script in `data`; panics when an invariant does not hold.
pub fn state_machine(data: &[u8]) {
    let mut script = Script(data.iter());
    let mut h = Harness::new();
    for _ in 0..MAX_COMMANDS {
        let Some(&op) = script.0.next() else { break };
        h.step(op % OPS, &mut script);
        h.check_invariants();
    }
    h.finish();
}

struct Script<'a>(std::slice::Iter<'a, u8>);

impl Script<'_> {
    /// The next argument byte; zero once the input is used up.
    fn arg(&mut self) -> u8 {
        self.0.next().copied().unwrap_or(0)
    }
}

/// The attempt an `attempt` byte names, relative to `current`.
fn relative(current: u32, b: u8) -> u32 {
    match b % 4 {
        0 => current,
        1 => current.saturating_sub(1),
        2 => current + 1,
        _ => u32::from(b / 4),
    }
}

fn output(b: u8) -> Value {
    match b % 6 {
        0 => Value::Null,
        1 => json!(b),
        2 => json!("done"),
        3 => json!({"score": 30.366074329203574, "items": [1, "two", null]}),
        4 => json!(-1.25),
        _ => json!([]),
    }
}

struct Harness {
    now: DateTime<Utc>,
    /// The seq of the last accepted event.
    seq: u64,
    /// Submitted executions, in submission order.
    ids: Vec<ExecutionId>,
    proj: Projection,
    /// Every execution folded on its own with `apply`, settled ones too.
    states: BTreeMap<ExecutionId, BackgroundExecution>,
    /// Queue order keys, kept here by the rule of the projection's docs:
    /// the seq of the event that last put the execution in line.
    order: BTreeMap<ExecutionId, u64>,
    /// The accepted events.
    events: Vec<Event>,
}

impl Harness {
    fn new() -> Self {
        Harness {
            now: "2026-01-01T00:00:00Z".parse().expect("a valid time"),
            seq: 0,
            ids: Vec::new(),
            proj: Projection::new(),
            states: BTreeMap::new(),
            order: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    fn event(&self, id: ExecutionId, tenant_id: TenantId, kind: EventKind) -> Event {
        Event {
            seq: self.seq + 1,
            at: self.now,
            execution_id: id,
            tenant_id,
            kind,
        }
    }

    /// The submitted execution a `target` byte names, if it names one.
    fn target(&self, b: u8) -> Option<ExecutionId> {
        self.ids.get(usize::from(b) % (self.ids.len() + 1)).copied()
    }

    fn step(&mut self, op: u8, s: &mut Script<'_>) {
        match op {
            ADVANCE => {
                let b = s.arg();
                self.now += if b < 240 {
                    Duration::milliseconds(i64::from(b) * 50)
                } else {
                    Duration::hours(i64::from(b - 239))
                };
            }
            SUBMIT => self.submit(s),
            CLAIM => self.claim(s.arg()),
            RESUBMIT => {
                if let Some(id) = self.target(s.arg()) {
                    let home = self.states[&id].tenant_id.clone();
                    let kind = EventKind::Queued(Box::new(Submission::new("echo")));
                    self.offer(self.event(id, home, kind), Some(false));
                }
            }
            _ => self.aimed(op, s),
        }
    }

    fn submit(&mut self, s: &mut Script<'_>) {
        let [t, priority, flags, attempts, delays, run_at] = [0; 6].map(|_| s.arg());
        if self.ids.len() >= MAX_EXECUTIONS {
            return;
        }
        let mut sub = Submission::new("echo");
        let config = &mut sub.config;
        config.mode = match flags % 4 {
            0 => Mode::FireAndForget,
            1 => Mode::Silent,
            _ => Mode::Deferred,
        };
        config.priority = match priority % 4 {
            0 => 0,
            1 => 50,
            2 => 255,
            _ => priority,
        };
        if flags & 4 != 0 {
            config.target_binding = Some(TargetBindingConfig {
                target: "var:x".into(),
                path: None,
            });
        }
        if flags & 8 != 0 {
            config.callback_url = Some("https://example.com/callback".into());
        }
        if flags & 16 != 0 {
            let pick = |shift: u8| usize::from((delays >> shift) & 3);
            config.retry = Some(RetryConfig {
                max_attempts: u32::from(attempts % 5),
                initial_delay_ms: [0, 250, 1_000, u64::MAX][pick(0)],
                backoff_multiplier: [1.0, 1.5, 2.0, 3.0][pick(2)],
                max_delay_ms: [500, 2_000, 10_000, 100_000_000_000_000_000][pick(4)],
            });
        }
        if flags & 32 != 0 {
            sub.run_at = Some(self.now + Duration::milliseconds(i64::from(run_at as i8) * 100));
        }
        let id = id(self.ids.len() + 1);
        self.ids.push(id);
        let ev = self.event(id, tenant(t), EventKind::Queued(Box::new(sub)));
        self.offer(ev, Some(true));
    }

    /// A worker claims the next runnable execution, as the ledger does:
    /// the first of the queue (of its tenant's, for a tenant's worker).
    fn claim(&mut self, b: u8) {
        let only = (b % 4 < 3).then(|| tenant(b % 4));
        let expected = match &only {
            Some(t) => self.runnable(Some(t)).first().copied(),
            None => self.view().0.first().copied(),
        };
        let next = self
            .proj
            .next_runnable(self.now, only.as_ref())
            .map(|e| (e.execution_id, e.attempt, e.tenant_id.clone()));
        assert_eq!(next.as_ref().map(|n| n.0), expected, "next runnable");
        if let Some((id, attempt, tenant_id)) = next {
            let kind = EventKind::Started {
                attempt: attempt + 1,
                worker: Some("worker-1".into()),
                lease_ms: None,
            };
            self.offer(self.event(id, tenant_id, kind), Some(true));
        }
    }

    fn aimed(&mut self, op: u8, s: &mut Script<'_>) {
        let target = self.target(s.arg());
        let st = target.and_then(|id| self.states.get(&id)).cloned();
        let attempt = st.as_ref().map_or(1, |e| e.attempt);
        let running = st.as_ref().filter(|e| e.status == Status::Running);
        let error = || ExecutionError::new("boom", "it broke");
        // Whether the machine must accept the event as sent: what the policy
        // makes of a running attempt, or a cancel of unfinished work.
        let mut must_accept = match op {
            COMPLETE | FAIL | TIMEOUT | RECOVER => running.is_some(),
            CANCEL => st.as_ref().is_some_and(|e| !e.status.is_terminal()),
            _ => false,
        };
        let kind = match op {
            COMPLETE => EventKind::Completed {
                attempt,
                output: output(s.arg()),
            },
            FAIL => running.map_or(
                EventKind::Failed {
                    attempt,
                    error: error(),
                },
                |e| after_failure(e, error(), self.now),
            ),
            TIMEOUT => running.map_or(EventKind::TimedOut { attempt }, |e| {
                after_timeout(e, self.now)
            }),
            RECOVER => running.map_or(
                EventKind::Recovered {
                    attempt,
                    outcome: Status::Queued,
                    reason: Some(RecoveryReason::LeaseExpired),
                },
                |e| after_loss(e, RecoveryReason::LeaseExpired),
            ),
            RAW => {
                let (kind, a, extra) = (s.arg(), s.arg(), s.arg());
                let attempt = relative(attempt, a);
                match kind % 6 {
                    0 => EventKind::Started {
                        attempt: relative(st.as_ref().map_or(0, |e| e.attempt) + 1, a),
                        worker: None,
                        lease_ms: Some(u64::from(extra) * 100),
                    },
                    1 => EventKind::Completed {
                        attempt,
                        output: output(extra),
                    },
                    2 => EventKind::Failed {
                        attempt,
                        error: error(),
                    },
                    3 => EventKind::TimedOut { attempt },
                    4 => EventKind::RetryScheduled {
                        attempt,
                        error: error(),
                        not_before: self.now + Duration::milliseconds(i64::from(extra as i8) * 100),
                    },
                    _ => EventKind::Recovered {
                        attempt,
                        outcome: [
                            Status::Queued,
                            Status::Failed,
                            Status::Running,
                            Status::Completed,
                            Status::Cancelled,
                            Status::Timeout,
                        ][usize::from(extra % 6)],
                        reason: None,
                    },
                }
            }
            CANCEL => EventKind::Cancelled { reason: None },
            RELEASE => EventKind::Released,
            BIND => EventKind::TargetBindingApplied {
                target: "var:x".into(),
                error: (s.arg() % 2 == 1).then(error),
            },
            CALLBACK => {
                let failed = s.arg() % 2 == 1;
                let current = st.as_ref().map_or(1, |e| e.callback_attempts + 1);
                let attempt = relative(current, s.arg());
                if failed {
                    EventKind::CallbackFailed {
                        attempt,
                        status_code: Some(503),
                        error: "unavailable".into(),
                    }
                } else {
                    EventKind::CallbackDelivered {
                        attempt,
                        status_code: 200,
                    }
                }
            }
            _ => unreachable!("opcode {op}"),
        };
        let modifier = s.arg();
        let home = st
            .as_ref()
            .map_or_else(|| tenant(0), |e| e.tenant_id.clone());
        let (tenant_id, wrong_tenant) = if modifier % 8 == OTHER_TENANT {
            let other = (0..3).map(tenant).find(|t| *t != home).expect("3 tenants");
            (other, true)
        } else {
            (home, false)
        };
        let id = target.unwrap_or_else(|| id(0));
        let mut ev = self.event(id, tenant_id, kind);
        if modifier % 8 == BACKDATED {
            ev.at -=
                Duration::milliseconds(i64::from(modifier / 8) * 50) + Duration::microseconds(1);
            must_accept = false;
        }
        let must = if target.is_none() || wrong_tenant {
            Some(false)
        } else {
            must_accept.then_some(true)
        };
        self.offer(ev, must);
    }

    /// Offers `ev` to the projection and to the per-execution fold; `must`
    /// is the verdict the command dictates, when it does.
    fn offer(&mut self, ev: Event, must: Option<bool>) {
        let id = ev.execution_id;
        let prior = self.states.get(&id).cloned();
        let machine = check(prior.as_ref(), &ev);
        if let Some(must) = must {
            assert_eq!(
                machine.is_ok(),
                must,
                "{machine:?}: {ev:?}\nstate: {prior:?}"
            );
        }
        let settled = prior.as_ref().is_some_and(is_settled);
        if settled {
            assert!(machine.is_err(), "a settled execution took {ev:?}");
            assert!(self.proj.get(&id).is_none(), "settled but live: {id}");
            if matches!(ev.kind, EventKind::Queued(_)) {
                // The projection forgets settled executions; refusing a
                // reused id is the job of the index of all executions.
                return;
            }
        }
        let before = self.proj.clone();
        let view_before = self.view();
        let checked = self.proj.check(&ev);
        match self.proj.apply(&ev) {
            Ok(left) => {
                assert_eq!(checked, Ok(()), "check refused what apply accepted");
                assert_eq!(machine, Ok(()), "the projection accepted {ev:?}");
                let prior_state = prior.clone();
                let mut st = prior;
                apply(&mut st, &ev).expect("the per-execution fold accepts it too");
                let st = st.expect("an accepted event leaves a state");
                if let Some(p) = prior_state.filter(|p| p.status.is_terminal()) {
                    only_bookkeeping(&p, &st, &ev);
                }
                if matches!(
                    ev.kind,
                    EventKind::Queued(_)
                        | EventKind::Released
                        | EventKind::RetryScheduled { .. }
                        | EventKind::Recovered { .. }
                ) {
                    self.order.insert(id, ev.seq);
                }
                self.seq = ev.seq;
                assert_eq!(self.proj.seq(), ev.seq);
                assert_placed(&self.proj, left, &st);
                self.states.insert(id, st);
                self.events.push(ev);
            }
            Err(err) => {
                assert_eq!(Err(err.clone()), checked, "check and apply differ");
                if settled {
                    assert_eq!(err.refusal, Refusal::Unknown);
                } else {
                    assert_eq!(Err(err.clone()), machine, "projection and machine differ");
                }
                assert_names(&err, &ev);
                // A refused event changes nothing.
                assert!(
                    self.proj.same_as(&before),
                    "a refusal changed the projection: {:?}",
                    self.proj.difference(&before)
                );
                assert_eq!(self.view(), view_before, "a refusal changed the queue");
                let mut st = prior.clone();
                assert!(apply(&mut st, &ev).is_err());
                assert_eq!(st, prior, "a refusal changed the state");
            }
        }
    }

    /// What the projection shows at the clock: the queue, the waiting
    /// executions and the counts.
    fn view(&self) -> (Vec<ExecutionId>, Vec<ExecutionId>, String) {
        let ids = |v: Vec<&BackgroundExecution>| v.iter().map(|e| e.execution_id).collect();
        (
            ids(self.proj.queue(self.now, None)),
            ids(self.proj.waiting(self.now, None)),
            format!("{:?}", self.proj.counts()),
        )
    }

    /// The runnable executions (of `only`): queued, not held, due; higher
    /// priority first, then lower order key (one tenant's claim order).
    fn runnable(&self, only: Option<&TenantId>) -> Vec<ExecutionId> {
        let mut v: Vec<(Reverse<u8>, u64, ExecutionId)> = self
            .states
            .values()
            .filter(|e| {
                e.status == Status::Queued
                    && !e.is_held()
                    && e.not_before.is_none_or(|t| t <= self.now)
                    && only.is_none_or(|t| &e.tenant_id == t)
            })
            .map(|e| {
                let id = e.execution_id;
                (Reverse(e.config.priority), self.order[&id], id)
            })
            .collect();
        v.sort();
        v.into_iter().map(|(_, _, id)| id).collect()
    }

    fn check_invariants(&mut self) {
        assert_eq!(self.proj.seq(), self.seq);
        for e in self.states.values() {
            assert_times_in_order(e);
        }

        assert_live_is_unsettled(&self.proj, &self.states);

        // The queue: exactly the runnable queued executions, highest
        // priority first (no tenant has a limit here), each tenant's in
        // priority-then-order order.
        let (queue, waiting, _) = self.view();
        let mut sorted = queue.clone();
        sorted.sort();
        let mut runnable = self.runnable(None);
        runnable.sort();
        assert_eq!(sorted, runnable, "queue at {}", self.now);
        let priorities: Vec<Reverse<u8>> = queue
            .iter()
            .map(|id| Reverse(self.states[id].config.priority))
            .collect();
        assert!(priorities.is_sorted(), "queue out of priority order");
        for t in 0..3 {
            let t = tenant(t);
            let of_t: Vec<ExecutionId> = queue
                .iter()
                .copied()
                .filter(|id| self.states[id].tenant_id == t)
                .collect();
            assert_eq!(of_t, self.runnable(Some(&t)), "{t}'s part of the queue");
        }
        for t in 0..3 {
            let t = tenant(t);
            let of_t: Vec<ExecutionId> = self
                .proj
                .queue(self.now, Some(&t))
                .iter()
                .map(|e| e.execution_id)
                .collect();
            let expected = self.runnable(Some(&t));
            assert_eq!(of_t, expected, "queue of {t}");
            let first = self.proj.next_runnable(self.now, Some(&t));
            assert_eq!(first.map(|e| e.execution_id), expected.first().copied());
        }
        let first = self.proj.next_runnable(self.now, None);
        assert_eq!(first.map(|e| e.execution_id), queue.first().copied());
        // Waiting: the queued executions that are not runnable.
        let queued: BTreeSet<ExecutionId> = self
            .states
            .values()
            .filter(|e| e.status == Status::Queued)
            .map(|e| e.execution_id)
            .collect();
        let not_runnable: BTreeSet<ExecutionId> = queued
            .difference(&queue.iter().copied().collect())
            .copied()
            .collect();
        assert_eq!(
            waiting.iter().copied().collect::<BTreeSet<_>>(),
            not_runnable
        );
        assert_eq!(waiting.len(), not_runnable.len(), "waiting lists one twice");

        let counts = self.proj.counts();
        let count =
            |f: &dyn Fn(&BackgroundExecution) -> bool| self.proj.live().filter(|e| f(e)).count();
        assert_eq!(counts.queued, queued.len());
        assert_eq!(counts.held, count(&|e| e.is_held()));
        assert_eq!(counts.running, count(&|e| e.status == Status::Running));
        assert_eq!(counts.finishing, count(&|e| e.status.is_terminal()));
    }

    /// A fresh fold of the accepted events is the live projection, and the
    /// per-execution folds are the states.
    fn finish(&self) {
        for (i, e) in self.events.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1, "seqs are gap-free from 1");
        }
        assert_refolds(&self.events, &self.proj, &self.states);
    }
}

/// After a terminal status only bookkeeping is accepted, and it changes only
/// the bookkeeping fields.
fn only_bookkeeping(prior: &BackgroundExecution, after: &BackgroundExecution, ev: &Event) {
    assert!(
        ev.kind.is_bookkeeping(),
        "accepted {} after {}",
        ev.kind.name(),
        prior.status
    );
    let mut same = after.clone();
    same.target_binding_applied = prior.target_binding_applied;
    same.target_binding_error = prior.target_binding_error.clone();
    same.callback_attempts = prior.callback_attempts;
    same.callback_delivered = prior.callback_delivered;
    assert_eq!(
        &same,
        prior,
        "{} changed more than bookkeeping",
        ev.kind.name()
    );
}
