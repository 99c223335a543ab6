//! Retrying by hand over a filter: which executions a bulk retry takes, and
//! what it did. Each retry is its own command ([`Ledger::retry`]), so one
//! refused because the execution changed meanwhile (another operator
//! retried it first) leaves the others be.

use serde::{Deserialize, Serialize};

use super::list::{Cursor, ListFilter, ListPage};
use super::Ledger;
use crate::command::Retry;
use crate::error::CommandError;
use crate::execution::{BackgroundExecution, ExecutionId};
use crate::machine::RETRYABLE;

/// What a bulk retry found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RetryReport {
    /// Whether it only counted (nothing was appended).
    pub dry_run: bool,
    /// Executions that passed the filter and could be retried: ended
    /// failed, timed out or cancelled, not retried before, not redacted.
    pub matched: usize,
    /// Each one retried, with its new run, oldest submission first.
    pub retried: Vec<Rerun>,
    /// Each one that passed the filter but was refused when its turn came
    /// (it changed meanwhile), with why.
    pub refused: Vec<RetryRefused>,
}

/// One execution a bulk retry ran again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Rerun {
    /// The execution retried.
    pub execution_id: ExecutionId,
    /// Its new run (absent in a dry run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_execution_id: Option<ExecutionId>,
}

/// One execution a bulk retry could not run again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RetryRefused {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Why it was refused.
    pub reason: String,
}

/// Retries a bulk retry keeps queued at once.
const IN_FLIGHT: usize = 1024;

/// Whether a retry by hand would take `e` now (the state machine's rule;
/// it has the last word again when the retry is appended).
fn retryable(e: &BackgroundExecution) -> bool {
    crate::machine::retry_refusal(e).is_none()
}

impl Ledger {
    /// Retries by hand every execution that passes `filter` (within this
    /// handle's scope) and can be retried: ended failed, timed out or
    /// cancelled (those of `filter.statuses`, when it names some), not
    /// retried before, not redacted. Oldest submission first, each as
    /// [`retry`](Self::retry) does it. With `dry_run`, only counts them and
    /// appends nothing.
    ///
    /// # Errors
    ///
    /// `Invalid` for a status in the filter that is not retried (queued,
    /// running, completed) or a bad [`Retry`]; `Storage`. A refusal of one
    /// execution is in the report, not an error.
    pub fn retry_matching(
        &self,
        filter: &ListFilter,
        retry: &Retry,
        dry_run: bool,
    ) -> Result<RetryReport, CommandError> {
        if let Some(s) = filter.statuses.iter().find(|s| !RETRYABLE.contains(s)) {
            return Err(CommandError::invalid(format!(
                "status: {s} executions are not retried (failed, timeout or cancelled are)"
            )));
        }
        retry.validate()?;
        let mut filter = filter.clone();
        if filter.statuses.is_empty() {
            filter.statuses = RETRYABLE.to_vec();
        }
        let mut found = Vec::new();
        let mut cursor: Option<Cursor> = None;
        loop {
            let page = self.list(&filter, cursor, ListPage::MAX_LEN)?;
            found.extend(
                page.executions
                    .iter()
                    .filter(|e| retryable(e))
                    .map(|e| e.execution_id),
            );
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        // Listed newest first; retried in submission order.
        found.reverse();
        let mut report = RetryReport {
            dry_run,
            matched: found.len(),
            ..RetryReport::default()
        };
        if dry_run {
            report.retried = found
                .into_iter()
                .map(|id| Rerun {
                    execution_id: id,
                    new_execution_id: None,
                })
                .collect();
            return Ok(report);
        }
        // Queued a chunk at a time, in order, so that the writer commits
        // them in groups (one sync for many) rather than one by one.
        for chunk in found.chunks(IN_FLIGHT) {
            let pending: Vec<_> = chunk
                .iter()
                .map(|&id| (id, self.retry(id, retry.clone()).spawn()))
                .collect();
            for (id, answer) in pending {
                match answer.wait() {
                    Ok(new) => report.retried.push(Rerun {
                        execution_id: id,
                        new_execution_id: Some(new.execution_id),
                    }),
                    Err(CommandError::Transition(refused)) => report.refused.push(RetryRefused {
                        execution_id: id,
                        reason: refused.refusal.to_string(),
                    }),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(report)
    }
}
