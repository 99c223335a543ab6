//! Imports: a ledger built from an export (`export.rs`), record for
//! record.
//!
//! Each record is stored as the export holds it — the same bytes, so the
//! same hashes and links: the imported ledger's chain is the exporter's,
//! and a head kept from the one verifies against the other. Its events
//! go through the state machine as they are appended, exactly as the
//! ledger's own do, so the projection, the indexes and the list of
//! settled executions are built as if the work had been done here.
//! Payloads stay as the export holds them: a redacted record stays
//! redacted (its digests, and so its hash, unchanged).

use std::collections::HashSet;
use std::io::{BufRead, Seek, SeekFrom};

use serde::{Deserialize, Serialize};

use super::export::{verify_export, Checked, Lines};
use super::replay::InOrder;
use super::report::{head_of, Head};
use super::Ledger;
use crate::error::{CommandError, StorageError};
use crate::event::{Entry, Event};

/// The error for an import that another writer raced.
fn elsewhere() -> CommandError {
    CommandError::invalid("another process appended to the ledger during the import")
}

/// Records appended at a time, at most.
const BATCH: usize = 512;

/// What [`Ledger::import`] built.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Imported {
    /// Events imported: every line of the export.
    pub events: u64,
    /// Executions they belong to.
    pub executions: u64,
    /// The ledger's head after the import: the export's last seq and its
    /// hash.
    pub head: Head,
    /// The head kept elsewhere that the export was found to reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaches: Option<Head>,
}

impl Ledger {
    /// Builds this ledger, which must hold no events, from `export` (the
    /// lines of [`Ledger::export`]): checks the whole export first
    /// ([`verify_export`], against `kept` when given: a head kept
    /// elsewhere), then reads it again and appends each record as the
    /// export holds it, each event checked by the state machine as the
    /// ledger's own are. The head it ends at is the export's.
    ///
    /// # Errors
    ///
    /// `Invalid` when the ledger holds events, or the handle is scoped to
    /// a tenant (an export is every tenant's); what [`verify_export`]
    /// finds wrong with the export, with nothing appended; `Storage`
    /// `Corrupt` at the seq of an event the state machine refuses, dated
    /// before the one before it or queuing an execution again, or of a
    /// line that changed between the two readings, with the records
    /// before it appended; `Storage`.
    pub fn import<R: BufRead + Seek>(
        &self,
        mut export: R,
        kept: Option<&Head>,
    ) -> Result<Imported, CommandError> {
        if self.scope.is_some() {
            return Err(CommandError::invalid(
                "tenant: a handle scoped to a tenant cannot import (an export is every tenant's)",
            ));
        }
        let verified = verify_export(&mut export, kept)?;
        export
            .seek(SeekFrom::Start(0))
            .map_err(|e| StorageError::io("reading the export again", e))?;
        let mut core = self.core();
        if core.head.0 != 0 {
            return Err(CommandError::invalid(format!(
                "the ledger holds {} events: an export is imported into a new ledger",
                core.head.0
            )));
        }
        let mut lines = Lines::new(export);
        let mut batch: Vec<Checked> = Vec::with_capacity(BATCH);
        let mut in_batch = HashSet::new();
        let mut in_order = InOrder::default();
        loop {
            let next = lines.next().transpose()?;
            // A batch holds one event per execution (each is checked
            // against the projection as it stands), and a control entry
            // is appended alone.
            let full = next.as_ref().is_none_or(|c| match &c.entry {
                Entry::Event(e) => batch.len() == BATCH || in_batch.contains(&e.execution_id),
                Entry::Control(_) => true,
            });
            if full && !batch.is_empty() {
                let records: Vec<&[u8]> = batch.iter().map(|c| c.record.as_slice()).collect();
                let events: Vec<Event> = batch
                    .iter()
                    .filter_map(|c| c.entry.event().cloned())
                    .collect();
                let appended = self
                    .inner
                    .append_events(&mut core, events, &records)
                    .map_err(|e| match e {
                        CommandError::Transition(t) => {
                            let seq = batch
                                .iter()
                                .filter_map(|c| c.entry.event())
                                .find(|e| e.execution_id == t.execution)
                                .map_or(core.head.0 + 1, |e| e.seq);
                            StorageError::corrupt(
                                seq,
                                format!("the state machine refuses the export's event: {t}"),
                            )
                            .into()
                        }
                        e => e,
                    })?;
                if appended.is_none() {
                    return Err(elsewhere());
                }
                batch.clear();
                in_batch.clear();
            }
            let Some(checked) = next else { break };
            let seq = checked.entry.seq();
            in_order.check(seq, &checked.entry)?;
            let event = match &checked.entry {
                Entry::Event(event) => event,
                Entry::Control(control) => {
                    let appended = self
                        .inner
                        .append_control(&mut core, control, Some(&checked.record))
                        .map_err(|e| match e {
                            CommandError::PauseConflict(m) => StorageError::corrupt(
                                seq,
                                format!("the export's control entry is refused: {m}"),
                            )
                            .into(),
                            e => e,
                        })?;
                    if appended.is_none() {
                        return Err(elsewhere());
                    }
                    continue;
                }
            };
            in_batch.insert(event.execution_id);
            batch.push(checked);
        }
        if (core.head.0, core.head.1) != lines.end() || core.head.0 != verified.head.seq {
            return Err(StorageError::corrupt(
                core.head.0 + 1,
                format!(
                    "the export changed while it was imported: it ended at seq {} when checked, at seq {} when read again",
                    verified.head.seq,
                    lines.end().0
                ),
            )
            .into());
        }
        let head = head_of(&core.head);
        drop(core);
        self.flush()?;
        Ok(Imported {
            events: verified.events,
            executions: verified.executions,
            head,
            reaches: verified.reaches,
        })
    }
}
