//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};

use execution_ledger::{EventKind, ExecutionId, Ledger};

/// Checks the invariants over the whole log; returns the terminal event
/// count of every execution.
pub fn check_log(ledger: &Ledger, cycle: u64) -> HashMap<ExecutionId, u32> {
    let mut running: HashSet<ExecutionId> = HashSet::new();
    let mut terminal: HashMap<ExecutionId, u32> = HashMap::new();
    for event in ledger.events(1, None) {
        let event = event.unwrap();
        let id = event.execution_id;
        match &event.kind {
            EventKind::Queued(_) => {
                terminal.insert(id, 0);
            }
            EventKind::Started { .. } => {
                assert!(
                    running.insert(id),
                    "cycle {cycle}: {id} started twice without ending (seq {})",
                    event.seq
                );
            }
            EventKind::RetryScheduled { .. } => {
                running.remove(&id);
            }
            EventKind::Recovered { outcome, .. } => {
                running.remove(&id);
                if outcome.is_terminal() {
                    *terminal.get_mut(&id).unwrap() += 1;
                }
            }
            EventKind::Completed { .. }
            | EventKind::Failed { .. }
            | EventKind::TimedOut { .. }
            | EventKind::Cancelled { .. } => {
                running.remove(&id);
                *terminal.get_mut(&id).unwrap() += 1;
            }
            _ => {}
        }
        assert!(
            terminal[&id] <= 1,
            "cycle {cycle}: {id} ended twice (seq {})",
            event.seq
        );
    }
    terminal
}

/// A small deterministic generator (xorshift), so a failing run can be
/// repeated from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
