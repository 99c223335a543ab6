//! Listing executions, newest submission first, a page at a time.
//!
//! Live executions come from the projection; settled ones from the list
//! the engine keeps of them by the seq of their first event (written with
//! the event that settles each), which holds what the filters need, so a
//! page is read without decoding the records it skips. A page examines at
//! most [`ListPage::SCAN`] settled lines: a filter that matches little returns a
//! short page with a cursor to go on from, instead of a scan of history.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use std::collections::HashSet;

use super::report::{At, StatusCounts};
use super::Ledger;
use crate::error::{CommandError, ErrorKind, StorageError};
use crate::execution::{BackgroundExecution, BackgroundExecutionStatus, ExecutionId, TenantId};

/// Which executions a listing returns (every field optional: all of them
/// must match).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ListFilter {
    /// Only these statuses (any, when empty).
    pub statuses: Vec<BackgroundExecutionStatus>,
    /// Only this tenant's.
    pub tenant: Option<TenantId>,
    /// Only this callable's.
    pub callable: Option<String>,
    /// Only those submitted at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only those submitted before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only this execution.
    pub id: Option<ExecutionId>,
}

impl ListFilter {
    /// A filter that lets every execution through.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether an execution with these fields passes (the tenant is checked
    /// by the caller, within the handle's scope).
    fn passes(
        &self,
        callable: &str,
        status: BackgroundExecutionStatus,
        queued_at: DateTime<Utc>,
    ) -> bool {
        (self.statuses.is_empty() || self.statuses.contains(&status))
            && self.callable.as_deref().is_none_or(|c| c == callable)
            && self.since.is_none_or(|t| queued_at >= t)
            && self.until.is_none_or(|t| queued_at < t)
    }

    /// Whether a settled execution may pass: no status asked for, or a
    /// final one.
    fn wants_settled(&self) -> bool {
        self.statuses.is_empty() || self.statuses.iter().any(|s| s.is_terminal())
    }
}

/// Where the next page starts: before the submission it names. Its text
/// form is opaque to clients (pass back what a page gave).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor(u64);

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Cursor {
    type Err = crate::ids::ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Digits only, as pages write it (no sign, no leading zero).
        Some(s)
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0'))
            .and_then(|s| s.parse::<u64>().ok())
            .map(Cursor)
            .ok_or_else(|| crate::ids::ParseIdError::new("cursor", s))
    }
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ListPage {
    /// The executions, newest submission first.
    pub executions: Vec<BackgroundExecution>,
    /// Where the next page starts; `None` when nothing more can follow.
    pub next: Option<Cursor>,
}

/// An execution a page holds, before the settled ones are read.
enum Found {
    Live(Box<BackgroundExecution>),
    Settled(ExecutionId),
}

impl ListPage {
    /// The most executions a page holds.
    pub const MAX_LEN: usize = 1_000;

    /// How many a page holds when the caller does not say.
    pub const DEFAULT_LEN: usize = 50;

    /// Settled executions a page examines at most.
    pub const SCAN: usize = 10_000;
}

impl Ledger {
    /// A page of executions that pass `filter`, newest submission first,
    /// `limit` at most (1 to [`ListPage::MAX_LEN`]), starting after `cursor` (from
    /// the newest, when `None`). Pages follow each other without a gap or a
    /// repeat while executions are submitted and settle: each is placed by
    /// its submission, which does not move. A page may hold fewer than
    /// `limit` and still have a next one (at most [`ListPage::SCAN`] settled
    /// executions are examined per page).
    ///
    /// # Errors
    ///
    /// `Invalid` for a limit out of range; `Storage` for damaged data.
    pub fn list(
        &self,
        filter: &ListFilter,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<ListPage, CommandError> {
        if !(1..=ListPage::MAX_LEN).contains(&limit) {
            return Err(CommandError::invalid(format!(
                "limit must be 1 to {}, not {limit}",
                ListPage::MAX_LEN
            )));
        }
        let empty = ListPage {
            executions: Vec::new(),
            next: None,
        };
        let Ok(tenant) = self.within(filter.tenant.as_ref()) else {
            return Ok(empty);
        };
        let sees = |t: &TenantId| tenant.is_none_or(|want| want == t);
        if let Some(id) = filter.id {
            return Ok(match self.get(id) {
                Ok(e)
                    if sees(&e.tenant_id)
                        && cursor.is_none()
                        && filter.passes(&e.callable_name, e.status, e.queued_at) =>
                {
                    ListPage {
                        executions: vec![e],
                        next: None,
                    }
                }
                Ok(_) | Err(CommandError::NotFound(_)) => empty,
                Err(e) => return Err(e),
            });
        }
        let mut before = cursor.map_or(u64::MAX, |c| c.0);
        if let Some(until) = filter.until {
            // Submissions before `until` are at or before its seq.
            before = before.min(self.resolve(At::Time(until))?.saturating_add(1));
        }
        let passes = |t: &TenantId, callable: &str, status, at| {
            sees(t) && filter.passes(callable, status, at)
        };
        // Live ones (of any status: a finishing one is completed, failed…
        // with its callback pending): the newest `limit + 1` that pass.
        // Only submissions up to the head they are read at: on a log other
        // processes append to, the list of settled executions can be ahead
        // of it, and one submitted after it and still live would be in
        // neither source.
        let mut found: Vec<(u64, Found)> = {
            let core = self.core();
            before = before.min(core.head.0.saturating_add(1));
            let mut live: Vec<(u64, &BackgroundExecution)> = core
                .projection
                .live_submitted()
                .filter(|(seq, e)| {
                    *seq < before && passes(&e.tenant_id, &e.callable_name, e.status, e.queued_at)
                })
                .collect();
            live.sort_unstable_by_key(|(seq, _)| std::cmp::Reverse(*seq));
            live.truncate(limit + 1);
            live.into_iter()
                .map(|(seq, e)| (seq, Found::Live(Box::new(e.clone()))))
                .collect()
        };
        // Settled ones, read after the live ones: one that settled in
        // between is in both (kept once, as settled); none is in neither.
        let (mut exhausted, mut floor) = (true, 0);
        if filter.wants_settled() {
            let mut matched = 0;
            for (examined, line) in self.inner.log.listed_before(before).enumerate() {
                let line = line?;
                if filter.since.is_some_and(|t| line.queued_at < t) {
                    break;
                }
                if examined == ListPage::SCAN || matched > limit {
                    (exhausted, floor) = (false, line.seq + 1);
                    break;
                }
                if passes(&line.tenant, &line.callable, line.status, line.queued_at) {
                    matched += 1;
                    found
                        .retain(|(_, f)| !matches!(f, Found::Live(e) if e.execution_id == line.id));
                    found.push((line.seq, Found::Settled(line.id)));
                }
            }
        }
        // Everything at or above the floor was examined.
        found.retain(|(seq, _)| *seq >= floor);
        found.sort_unstable_by_key(|(seq, _)| std::cmp::Reverse(*seq));
        let next = if found.len() > limit {
            found.truncate(limit);
            found.last().map(|(seq, _)| Cursor(*seq))
        } else if !exhausted {
            Some(Cursor(floor))
        } else {
            None
        };
        // Only the settled executions the page keeps are read.
        let mut executions = Vec::with_capacity(found.len());
        for (_, f) in found {
            executions.push(match f {
                Found::Live(e) => *e,
                Found::Settled(id) => self.inner.load(id)?.ok_or_else(|| {
                    StorageError::new(
                        ErrorKind::Corrupt,
                        format!("the list of settled executions names {id}, which has no events"),
                    )
                })?,
            });
        }
        Ok(ListPage { executions, next })
    }

    /// Every execution in the handle's scope by status: the live ones from
    /// the projection, then the settled ones from the engine's list of
    /// them, read without the projection's lock. One that settles in
    /// between is counted once, as it was when live; one submitted after is
    /// not counted.
    pub(super) fn status_counts(&self) -> Result<StatusCounts, StorageError> {
        let mut counts = StatusCounts::default();
        let (head, live) = {
            let core = self.core();
            let live: HashSet<ExecutionId> = core
                .projection
                .live()
                .filter(|e| self.sees(&e.tenant_id))
                .map(|e| {
                    counts.add(e.status);
                    e.execution_id
                })
                .collect();
            (core.head.0, live)
        };
        for line in self.inner.log.listed_before(head.saturating_add(1)) {
            let line = line?;
            if self.sees(&line.tenant) && !live.contains(&line.id) {
                counts.add(line.status);
            }
        }
        Ok(counts)
    }

    /// Every execution live at a point of the log (queued, waiting, held,
    /// running, or finished with its bookkeeping pending), in id order (as
    /// [`live`](Self::live): ids sort by creation time).
    ///
    /// # Errors
    ///
    /// `Invalid` for a seq beyond the head; `Storage` for damaged data.
    pub fn live_at(&self, at: At) -> Result<Vec<BackgroundExecution>, CommandError> {
        let projection = self.projection_at(at)?;
        let mut live: Vec<_> = projection
            .live()
            .filter(|e| self.sees(&e.tenant_id))
            .cloned()
            .collect();
        live.sort_by_key(|e| e.execution_id);
        Ok(live)
    }
}
