//! Counters and histograms of a ledger, for `/metrics`: how fast it
//! appends, and what became of the work — outcomes by tenant and callable,
//! queue waits and run times by callable — as this process recorded them.
//!
//! Labels are bounded: at most [`MAX_SERIES`] tenant and callable pairs (and
//! callables) get series of their own; the rest are counted under
//! [`OTHER`]. No execution id is ever a label.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::event::{Event, EventKind};
use crate::execution::{BackgroundExecution, BackgroundExecutionStatus};

/// Upper bounds of the latency histogram buckets, in microseconds.
pub const BUCKETS_US: [u64; 12] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];

/// Upper bounds of the queue-wait and run-time buckets, in microseconds
/// (1 ms to 1 h).
pub const WORK_BUCKETS_US: [u64; 16] = [
    1_000,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
    3_600_000_000,
];

/// The most label values of one kind that get series of their own.
pub const MAX_SERIES: usize = 1_000;

/// The label value the rest are counted under.
pub const OTHER: &str = "_other";

/// A histogram with fixed buckets, updated without locks.
#[derive(Debug)]
pub(crate) struct Histogram {
    bounds: &'static [u64],
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new(&BUCKETS_US)
    }
}

impl Histogram {
    fn new(bounds: &'static [u64]) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    pub(crate) fn record(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        if let Some(i) = self.bounds.iter().position(|b| us <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    fn read(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let buckets = self
            .buckets
            .iter()
            .map(|b| {
                cumulative += b.load(Ordering::Relaxed);
                cumulative
            })
            .collect();
        HistogramSnapshot {
            bounds_us: self.bounds.to_vec(),
            buckets,
            count: self.count.load(Ordering::Relaxed),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// A histogram as read: cumulative counts per bucket bound (a count above
/// the last bound is only in `count`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct HistogramSnapshot {
    /// The buckets' upper bounds, in microseconds ([`BUCKETS_US`] or
    /// [`WORK_BUCKETS_US`]).
    pub bounds_us: Vec<u64>,
    /// Cumulative counts, one per bucket bound.
    pub buckets: Vec<u64>,
    /// Observations.
    pub count: u64,
    /// Their sum, in microseconds.
    pub sum_us: u64,
}

/// What became of work, as `/metrics` counts it (`ledger_outcomes_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// An execution ended completed.
    Completed,
    /// An execution ended failed (no attempt left, or not retryable).
    Failed,
    /// An execution ended with its last attempt timed out.
    Timeout,
    /// An execution was cancelled.
    Cancelled,
    /// An attempt ended and the execution waits to run again (its retry
    /// policy).
    Retried,
    /// An ended execution was retried by hand (a new execution runs it).
    RetriedByHand,
    /// An attempt was ended by recovery: its process stopped, or its lease
    /// ran out.
    Recovered,
}

impl Outcome {
    /// Its name, as the `outcome` label has it.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Failed => "failed",
            Outcome::Timeout => "timeout",
            Outcome::Cancelled => "cancelled",
            Outcome::Retried => "retried",
            Outcome::RetriedByHand => "retried_by_hand",
            Outcome::Recovered => "recovered",
        }
    }
}

/// What an execution was before an event, as the counters need it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Before {
    status: BackgroundExecutionStatus,
    started_at: Option<DateTime<Utc>>,
    /// When it became runnable: its submission, release or back-off end.
    runnable_since: DateTime<Utc>,
}

impl Before {
    pub(crate) fn of(e: &BackgroundExecution) -> Before {
        let runnable_since = [e.released_at, e.not_before]
            .into_iter()
            .flatten()
            .fold(e.queued_at, DateTime::max);
        Before {
            status: e.status,
            started_at: e.started_at,
            runnable_since,
        }
    }
}

/// How many outcomes there are.
const OUTCOMES: usize = 7;

/// Every outcome, in label order.
const ALL_OUTCOMES: [Outcome; OUTCOMES] = [
    Outcome::Completed,
    Outcome::Failed,
    Outcome::Timeout,
    Outcome::Cancelled,
    Outcome::Retried,
    Outcome::RetriedByHand,
    Outcome::Recovered,
];

/// Series under bounded labels.
#[derive(Debug, Default)]
struct Work {
    /// Counts by tenant, then callable, then outcome (looked up by `&str`:
    /// a known pair costs no allocation on the append path).
    outcomes: HashMap<String, HashMap<String, [u64; OUTCOMES]>>,
    /// The pairs with series of their own.
    pairs: usize,
    queue_wait: HashMap<String, Arc<Histogram>>,
    run_time: HashMap<String, Arc<Histogram>>,
}

impl Work {
    fn count(&mut self, outcome: Outcome, tenant: &str, callable: &str) {
        let i = ALL_OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .expect("every outcome is listed");
        if let Some(n) = self
            .outcomes
            .get_mut(tenant)
            .and_then(|c| c.get_mut(callable))
        {
            n[i] += 1;
            return;
        }
        let (tenant, callable) = if self.pairs < MAX_SERIES {
            self.pairs += 1;
            (tenant, callable)
        } else {
            (OTHER, OTHER)
        };
        self.outcomes
            .entry(tenant.to_owned())
            .or_default()
            .entry(callable.to_owned())
            .or_default()[i] += 1;
    }
}

/// The histogram of `callable` in `by`, made when it is among the first
/// [`MAX_SERIES`], else the one of [`OTHER`].
fn of_callable(by: &mut HashMap<String, Arc<Histogram>>, callable: &str) -> Arc<Histogram> {
    if let Some(h) = by.get(callable) {
        return h.clone();
    }
    let name = if by.len() < MAX_SERIES {
        callable
    } else {
        OTHER
    };
    by.entry(name.to_owned())
        .or_insert_with(|| Arc::new(Histogram::new(&WORK_BUCKETS_US)))
        .clone()
}

fn elapsed(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or_default()
}

/// The ledger's counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) append: Histogram,
    pub(crate) sync: Histogram,
    pub(crate) claims: AtomicU64,
    work: Mutex<Work>,
}

impl Counters {
    pub(crate) fn read(&self) -> Metrics {
        let work = self.work.lock().unwrap_or_else(|p| p.into_inner());
        let mut outcomes: Vec<OutcomeCount> = Vec::new();
        for (tenant, by_callable) in &work.outcomes {
            for (callable, counts) in by_callable {
                for (outcome, n) in ALL_OUTCOMES.iter().zip(counts).filter(|(_, n)| **n > 0) {
                    outcomes.push(OutcomeCount {
                        outcome: *outcome,
                        tenant: tenant.clone(),
                        callable: callable.clone(),
                        count: *n,
                    });
                }
            }
        }
        outcomes.sort_by(|a, b| {
            (a.outcome, &a.tenant, &a.callable).cmp(&(b.outcome, &b.tenant, &b.callable))
        });
        let read = |by: &HashMap<String, Arc<Histogram>>| {
            let mut out: Vec<(String, HistogramSnapshot)> =
                by.iter().map(|(c, h)| (c.clone(), h.read())).collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        };
        Metrics {
            append_latency: self.append.read(),
            sync_latency: self.sync.read(),
            claims: self.claims.load(Ordering::Relaxed),
            outcomes,
            queue_wait: read(&work.queue_wait),
            run_time: read(&work.run_time),
        }
    }

    /// Counts what `event`, appended by this process, did to an execution:
    /// `before` it (none when it was not live) and `after`.
    pub(crate) fn observe(
        &self,
        before: Option<Before>,
        event: &Event,
        after: &BackgroundExecution,
    ) {
        let outcome = match (&event.kind, before.map(|b| b.status)) {
            (EventKind::RetryScheduled { .. }, _) => Some(Outcome::Retried),
            (EventKind::Retried { .. }, _) => Some(Outcome::RetriedByHand),
            (EventKind::Recovered { .. }, _) => Some(Outcome::Recovered),
            _ => None,
        };
        let ended = before.is_some_and(|b| !b.status.is_terminal()) && after.status.is_terminal();
        let started = matches!(event.kind, EventKind::Started { .. });
        let ran = before.is_some_and(|b| b.status == BackgroundExecutionStatus::Running)
            && after.status != BackgroundExecutionStatus::Running;
        if outcome.is_none() && !ended && !started && !ran {
            return;
        }
        let (tenant, callable) = (after.tenant_id.as_str(), after.callable_name.as_str());
        let mut work = self.work.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(outcome) = outcome {
            work.count(outcome, tenant, callable);
        }
        if ended {
            let outcome = match after.status {
                BackgroundExecutionStatus::Completed => Outcome::Completed,
                BackgroundExecutionStatus::Failed => Outcome::Failed,
                BackgroundExecutionStatus::Timeout => Outcome::Timeout,
                _ => Outcome::Cancelled,
            };
            work.count(outcome, tenant, callable);
        }
        if let Some(b) = before {
            if started {
                let h = of_callable(&mut work.queue_wait, callable);
                h.record(elapsed(b.runnable_since, event.at));
            }
            if let (true, Some(from)) = (ran, b.started_at) {
                let h = of_callable(&mut work.run_time, callable);
                h.record(elapsed(from, event.at));
            }
        }
    }
}

/// How many times one outcome happened to one tenant's executions of one
/// callable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct OutcomeCount {
    /// What happened.
    pub outcome: Outcome,
    /// The tenant ([`OTHER`] past [`MAX_SERIES`] pairs).
    pub tenant: String,
    /// The callable ([`OTHER`] past [`MAX_SERIES`] pairs).
    pub callable: String,
    /// How many times.
    pub count: u64,
}

/// Counters since the ledger was opened, of what this process appended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Metrics {
    /// Time to append a batch of events (sled: before syncing;
    /// PostgreSQL: the statement that appends and commits).
    pub append_latency: HistogramSnapshot,
    /// Time of one sync (sled flush, fdatasync, checkpoint), shared by the
    /// appends of a group (PostgreSQL: the commit, one per append).
    pub sync_latency: HistogramSnapshot,
    /// Executions claimed.
    pub claims: u64,
    /// What became of the work this process recorded, by outcome, tenant
    /// and callable, in that order.
    pub outcomes: Vec<OutcomeCount>,
    /// From runnable (submitted, released, back-off over) to started, by
    /// callable.
    pub queue_wait: Vec<(String, HistogramSnapshot)>,
    /// From started to the end of the attempt, by callable.
    pub run_time: Vec<(String, HistogramSnapshot)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execution::BackgroundExecutionConfig;

    /// `e` as running since `at`, and the event that completes it then.
    fn completed(
        tenant: &str,
        callable: &str,
        at: DateTime<Utc>,
    ) -> (Before, Event, BackgroundExecution) {
        let mut e = BackgroundExecution::new(
            tenant.parse().unwrap(),
            callable,
            BackgroundExecutionConfig::default(),
        );
        e.status = BackgroundExecutionStatus::Running;
        e.started_at = Some(at);
        let before = Before::of(&e);
        let event = Event {
            seq: 1,
            at: at + chrono::Duration::milliseconds(30),
            execution_id: e.execution_id,
            tenant_id: e.tenant_id.clone(),
            kind: EventKind::Completed {
                attempt: 1,
                output: serde_json::Value::Null,
            },
        };
        e.status = BackgroundExecutionStatus::Completed;
        (before, event, e)
    }

    #[test]
    fn labels_past_the_bound_are_counted_under_other() {
        let counters = Counters::default();
        let at = Utc::now();
        for i in 0..MAX_SERIES + 5 {
            let (before, event, after) = completed("acme", &format!("c{i}"), at);
            counters.observe(Some(before), &event, &after);
        }
        // A pair seen before the bound keeps its own series after it.
        let (before, event, after) = completed("acme", "c0", at);
        counters.observe(Some(before), &event, &after);
        let m = counters.read();
        assert_eq!(m.outcomes.len(), MAX_SERIES + 1);
        let count = |callable: &str| {
            m.outcomes
                .iter()
                .find(|o| o.callable == callable)
                .map(|o| (o.tenant.as_str(), o.count))
        };
        assert_eq!(count("c0"), Some(("acme", 2)));
        assert_eq!(count(OTHER), Some((OTHER, 5)));
        assert_eq!(m.run_time.len(), MAX_SERIES + 1);
        let other = &m.run_time.iter().find(|(c, _)| c == OTHER).unwrap().1;
        assert_eq!(other.count, 5);
        // 30 ms each: in the 50 ms bucket, not the 25 ms one.
        assert_eq!(
            other.buckets[WORK_BUCKETS_US.iter().position(|b| *b == 25_000).unwrap()],
            0
        );
        assert_eq!(
            other.buckets[WORK_BUCKETS_US.iter().position(|b| *b == 50_000).unwrap()],
            5
        );
        assert_eq!(
            m.outcomes.iter().map(|o| o.count).sum::<u64>(),
            MAX_SERIES as u64 + 6
        );
    }
}
