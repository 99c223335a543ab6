//! One behaviour, two engines, as a property: random sequences of ledger
//! commands (submits of several priorities, retry policies and modes;
//! claims, completions, failures, timeouts, cancels, releases; lease
//! expiry; the clock moving) are carried out on a ledger of the backend
//! under test (`LEDGER_TEST_BACKEND`) and on the reference, a ledger on
//! sled, each with its own clock moved alike. Every answer must be the
//! same (executions matched by the order they were submitted in), and so
//! must the logs, event by event; each ledger's projection must equal a
//! fresh fold of its log, and its log must verify.
//!
//! `PROPTEST_CASES` sets the cases (32 by default).

use std::collections::HashMap;
use std::time::Duration;

use execution_ledger::{
    BackgroundExecution, BackgroundExecutionMode, Claim, CommandError, Event, ExecutionError,
    ExecutionId, Ledger, RetryConfig, Submission, TenantId,
};
use proptest::prelude::*;

mod common;
use common::TestClock;

#[derive(Clone, Debug)]
enum Cmd {
    Submit {
        priority: u8,
        attempts: u32,
        deferred: bool,
    },
    Claim {
        leased: bool,
    },
    Complete(usize),
    Fail(usize),
    TimeOut(usize),
    Cancel(usize),
    Release(usize),
    ExpireLeases,
    Advance(u32),
}

fn cmd() -> impl Strategy<Value = Cmd> {
    prop_oneof![
        3 => (0u8..3, 1u32..4, proptest::bool::weighted(0.2)).prop_map(|(p, attempts, deferred)| Cmd::Submit {
            priority: [10, 50, 90][p as usize],
            attempts,
            deferred,
        }),
        3 => any::<bool>().prop_map(|leased| Cmd::Claim { leased }),
        2 => any::<usize>().prop_map(Cmd::Complete),
        2 => any::<usize>().prop_map(Cmd::Fail),
        1 => any::<usize>().prop_map(Cmd::TimeOut),
        1 => any::<usize>().prop_map(Cmd::Cancel),
        1 => any::<usize>().prop_map(Cmd::Release),
        1 => Just(Cmd::ExpireLeases),
        2 => (1u32..3_000).prop_map(Cmd::Advance),
    ]
}

/// A ledger, its clock, and its executions in the order they were
/// submitted.
struct Side {
    ledger: Ledger,
    clock: TestClock,
    ids: Vec<ExecutionId>,
    _store: common::postgres::TestStore,
}

impl Side {
    fn open(store: common::postgres::TestStore) -> Side {
        let clock = TestClock::new();
        let ledger = Ledger::builder(store.path())
            .clock(clock.clone())
            .open()
            .unwrap();
        Side {
            ledger,
            clock,
            ids: Vec::new(),
            _store: store,
        }
    }

    /// The position of each execution, for comparing across ledgers.
    fn index(&self) -> HashMap<ExecutionId, usize> {
        self.ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i))
            .collect()
    }

    /// The `k`th (modulo) execution, if there is one.
    fn pick(&self, k: usize) -> Option<ExecutionId> {
        (!self.ids.is_empty()).then(|| self.ids[k % self.ids.len()])
    }

    /// Carries out `cmd`; returns its answer, ids replaced by positions.
    fn apply(&mut self, cmd: &Cmd) -> String {
        let acme: TenantId = "acme".parse().unwrap();
        let l = &self.ledger;
        let answer: Result<Vec<BackgroundExecution>, CommandError> = match cmd {
            Cmd::Submit {
                priority,
                attempts,
                deferred,
            } => {
                let mut s = Submission::new("job");
                s.config.priority = *priority;
                s.config.retry = Some(RetryConfig {
                    max_attempts: *attempts,
                    initial_delay_ms: 500,
                    ..RetryConfig::default()
                });
                if *deferred {
                    s.config.mode = BackgroundExecutionMode::Deferred;
                }
                l.submit(&acme, s).wait().map(|s| {
                    self.ids.push(s.execution.execution_id);
                    vec![s.execution]
                })
            }
            // Both ledgers lease alike: a claim on a shared log is leased
            // anyway, so the property compares leased claims.
            Cmd::Claim { leased } => {
                let lease = if *leased { 1_000 } else { 30_000 };
                l.claim_with(Claim::new().worker("w").lease(Duration::from_millis(lease)))
                    .wait()
            }
            Cmd::Complete(k) | Cmd::Fail(k) | Cmd::TimeOut(k) => match self.pick(*k) {
                None => Ok(Vec::new()),
                Some(id) => {
                    let attempt = l.get(id).unwrap().attempt;
                    match cmd {
                        Cmd::Complete(_) => l.complete(id, attempt, serde_json::json!("ok")).wait(),
                        Cmd::Fail(_) => l
                            .fail(id, attempt, ExecutionError::new("boom", "failed"))
                            .wait(),
                        _ => l.time_out(id, attempt).wait(),
                    }
                    .map(|e| vec![e])
                }
            },
            Cmd::Cancel(k) => match self.pick(*k) {
                None => Ok(Vec::new()),
                Some(id) => l.cancel(id, Some("test".into())).wait().map(|e| vec![e]),
            },
            Cmd::Release(k) => match self.pick(*k) {
                None => Ok(Vec::new()),
                Some(id) => l.release(id).wait().map(|e| vec![e]),
            },
            Cmd::ExpireLeases => l.expire_leases().wait(),
            Cmd::Advance(ms) => {
                self.clock.advance_ms(i64::from(*ms));
                Ok(Vec::new())
            }
        };
        let index = self.index();
        match answer {
            Ok(list) => list
                .iter()
                .map(|e| format!("{}:{}:{}", index[&e.execution_id], e.status, e.attempt))
                .collect::<Vec<_>>()
                .join(","),
            Err(CommandError::Transition(t)) => format!("refused {} {}", t.command, t.refusal),
            Err(other) => format!("error {other}"),
        }
    }

    /// The log, ids replaced by positions.
    fn log(&self) -> Vec<String> {
        let index = self.index();
        self.ledger
            .events(1, None)
            .map(|e| {
                let e: Event = e.unwrap();
                let mut v = serde_json::to_value(&e).unwrap();
                v["executionId"] = serde_json::json!(index[&e.execution_id]);
                v.to_string()
            })
            .collect()
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(32),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_backend_answers_and_logs_as_the_reference_does(cmds in proptest::collection::vec(cmd(), 1..60)) {
        let mut reference = Side::open(common::postgres::store_on(common::Backend::Sled));
        let mut tested = Side::open(common::store());
        for (i, cmd) in cmds.iter().enumerate() {
            let want = reference.apply(cmd);
            let got = tested.apply(cmd);
            prop_assert_eq!(&got, &want, "command {} ({:?})", i, cmd);
        }
        prop_assert_eq!(tested.log(), reference.log());
        for side in [&reference, &tested] {
            side.ledger.check_projection().unwrap();
            side.ledger.verify().unwrap();
        }
    }
}
