//! Time travel: one execution or the whole projection at a point of the
//! log, and what changed between two points.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::replay::{read_entry, read_event, replay};
use super::report::{At, Change};
use super::Ledger;
use crate::error::{CommandError, ErrorKind, StorageError};
use crate::execution::{BackgroundExecution, ExecutionId, TenantId};
use crate::projection::Projection;

impl Ledger {
    /// The seq a point in the log stands for: `Seq(n)` itself (checked
    /// against the head), `Time(t)` the last event at or before `t`.
    ///
    /// # Errors
    ///
    /// `Invalid` for a seq beyond the head; `Storage`.
    pub fn resolve(&self, at: At) -> Result<u64, CommandError> {
        let head = self.core().head.0;
        match at {
            At::Seq(n) if n > head => Err(CommandError::invalid(format!(
                "seq {n} is beyond the head (seq {head})"
            ))),
            At::Seq(n) => Ok(n),
            At::Time(t) => {
                // Events are dated non-decreasingly: binary search by seq.
                let (mut lo, mut hi) = (0u64, head);
                while lo < hi {
                    let mid = lo + (hi - lo).div_ceil(2);
                    if read_entry(&*self.inner.log, mid)?.at() <= t {
                        lo = mid;
                    } else {
                        hi = mid - 1;
                    }
                }
                Ok(lo)
            }
        }
    }

    /// One execution as it was at a point in the log; `None` when it did not
    /// exist yet.
    ///
    /// # Errors
    ///
    /// `NotFound` when it never existed; `Invalid` for a seq beyond the head;
    /// `Storage`.
    pub fn execution_at(
        &self,
        id: ExecutionId,
        at: At,
    ) -> Result<Option<BackgroundExecution>, CommandError> {
        let seq = self.resolve(at)?;
        let seqs = self.inner.execution_seqs(&id)?;
        let Some(&first) = seqs.first() else {
            return Err(CommandError::NotFound(id));
        };
        // Whose it is, from its first event: another tenant's execution is
        // not found, whether or not it existed yet at `at`.
        if self.scope.is_some() && !self.sees(&read_event(&*self.inner.log, first)?.tenant_id) {
            return Err(CommandError::NotFound(id));
        }
        Ok(self
            .inner
            .fold_execution(id, seqs, |event| event.seq <= seq)?)
    }

    /// Every live execution and the queue as they were at a point in the
    /// log: the nearest snapshot at or below it, then the events after.
    ///
    /// # Errors
    ///
    /// `Invalid` for a seq beyond the head or before the live log's base
    /// (archived); `Storage` for damaged data.
    pub fn projection_at(&self, at: At) -> Result<Projection, CommandError> {
        let seq = self.resolve(at)?;
        let base = self.inner.log.base().0;
        if seq < base {
            return Err(CommandError::invalid(format!(
                "seq {seq} is archived: the whole ledger is replayed from seq {base} on (one execution's history reads the archive)"
            )));
        }
        let mut past = replay(&*self.inner.log, seq, true, u64::MAX, &mut |_, _| {})?.0;
        // Weights and limits are configuration: the past is ordered by
        // those set now.
        past.set_shares(self.core().projection.shares());
        Ok(past)
    }

    /// The queue as it was at a point in the log: the executions runnable
    /// then, in claim order, and how many more were queued but not runnable
    /// (held, or waiting for a back-off or run-at time). "Then" is the time
    /// of the point: `Time(t)` itself, `Seq(n)` the time of event `n`.
    ///
    /// # Errors
    ///
    /// `Invalid` for a seq beyond the head; `Storage` for damaged data.
    pub fn queue_at(
        &self,
        at: At,
        tenant: Option<&TenantId>,
    ) -> Result<(Vec<BackgroundExecution>, usize), CommandError> {
        let Ok(tenant) = self.within(tenant) else {
            self.resolve(at)?;
            return Ok((Vec::new(), 0));
        };
        let projection = self.projection_at(at)?;
        let then = match at {
            At::Time(t) => t,
            At::Seq(0) => DateTime::<Utc>::MIN_UTC,
            At::Seq(n) => read_entry(&*self.inner.log, n)?.at(),
        };
        let queue = projection
            .queue(then, tenant)
            .into_iter()
            .cloned()
            .collect();
        Ok((queue, projection.waiting(then, tenant).len()))
    }

    /// Refuses a range of the log whose first seq is after its last, in
    /// the words [`diff`](Self::diff) uses.
    ///
    /// # Errors
    ///
    /// `Invalid` when `from` is after `to`.
    pub fn check_range(from: u64, to: u64) -> Result<(), CommandError> {
        if from > to {
            return Err(CommandError::invalid(format!(
                "the first point (seq {from}) is after the second (seq {to})"
            )));
        }
        Ok(())
    }

    /// Which executions changed between two points of the log, and how.
    ///
    /// # Errors
    ///
    /// `Invalid` when `from` is after `to` or beyond the head; `Storage`.
    pub fn diff(&self, from: At, to: At) -> Result<Vec<Change>, CommandError> {
        let (a, b) = (self.resolve(from)?, self.resolve(to)?);
        Self::check_range(a, b)?;
        let base = self.inner.log.base().0;
        if a < base {
            return Err(CommandError::invalid(format!(
                "seq {a} is archived: a diff starts at seq {base} or later"
            )));
        }
        let mut touched: BTreeMap<ExecutionId, Vec<(u64, String)>> = BTreeMap::new();
        for event in self.events(a + 1, Some(b)) {
            let event = event?;
            touched
                .entry(event.execution_id)
                .or_default()
                .push((event.seq, event.kind.name().to_owned()));
        }
        let mut changes = Vec::with_capacity(touched.len());
        for (id, events) in touched {
            let seqs = self.inner.execution_seqs(&id)?;
            let before = self
                .inner
                .fold_execution(id, seqs.clone(), |e| e.seq <= a)?;
            let after = self
                .inner
                .fold_execution(id, seqs, |e| e.seq <= b)?
                .ok_or_else(|| {
                    StorageError::new(ErrorKind::Corrupt, format!("{id} has events but no state"))
                })?;
            changes.push(Change {
                execution_id: id,
                tenant_id: after.tenant_id,
                before: before.map(|e| e.status),
                after: after.status,
                events,
            });
        }
        Ok(changes)
    }
}
