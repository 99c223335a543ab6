//! Pausing and resuming work (`pause.rs`): each a control entry appended
//! to the log under the ledger's lock (on PostgreSQL in the group that
//! holds the log's end), folded into the projection that claims and
//! listings read.

use super::{At, Command, Ledger};
use crate::command::{check_by, check_reason};
use crate::error::CommandError;
use crate::event::{Control, ControlKind};
use crate::execution::BackgroundExecution;
use crate::pause::{Pause, PauseScope};

impl Ledger {
    /// Pauses the work of `scope`: from the next claim on, none takes it;
    /// it stays queued, in order, and listed with this pause. Attempts
    /// already running finish. Recorded as a `paused` entry, with who
    /// asked (`by`) and why. Answers the pause.
    ///
    /// On a handle scoped to a tenant, the scope is that tenant's work (of
    /// `scope`'s callable, when it names one).
    ///
    /// # Errors
    ///
    /// `Invalid` for a scope that names neither a tenant nor a callable,
    /// another tenant than the handle's, or a reason or `by` that is empty
    /// or too long; `PauseConflict` when the scope is paused already;
    /// `Storage`.
    pub fn pause(
        &self,
        scope: PauseScope,
        reason: Option<String>,
        by: Option<String>,
    ) -> Command<Pause> {
        self.control(scope, reason, by, true)
    }

    /// Resumes the paused work of `scope` (exactly the scope a pause
    /// named): claims take it again, in the order it would have had.
    /// Recorded as a `resumed` entry. Answers the pause it ended.
    ///
    /// # Errors
    ///
    /// As [`pause`](Self::pause); `PauseConflict` when the scope is not
    /// paused.
    pub fn resume(
        &self,
        scope: PauseScope,
        reason: Option<String>,
        by: Option<String>,
    ) -> Command<Pause> {
        self.control(scope, reason, by, false)
    }

    /// The scope a command of this handle is for: `scope`, of the handle's
    /// tenant when it is scoped to one.
    fn pause_scope(&self, mut scope: PauseScope) -> Result<PauseScope, CommandError> {
        if let Some(own) = self.scope() {
            match &scope.tenant_id {
                Some(t) if t != own => {
                    return Err(CommandError::invalid(format!(
                        "tenantId: this handle is {own}'s, not {t}'s"
                    )))
                }
                _ => scope.tenant_id = Some(own.clone()),
            }
        }
        scope.check()?;
        Ok(scope)
    }

    fn control(
        &self,
        scope: PauseScope,
        reason: Option<String>,
        by: Option<String>,
        pause: bool,
    ) -> Command<Pause> {
        let checked = self.pause_scope(scope).and_then(|scope| {
            if let Some(r) = &reason {
                check_reason(r, by.as_deref())?;
            }
            check_by(by.as_deref())?;
            Ok(scope)
        });
        let scope = match checked {
            Ok(scope) => scope,
            Err(e) => return Command::refused(&self.inner, e),
        };
        Command::new(&self.inner, move |inner, core| loop {
            inner.refresh(core);
            let (scope, by, reason) = (scope.clone(), by.clone(), reason.clone());
            let kind = match pause {
                true => ControlKind::Paused { scope, by, reason },
                false => ControlKind::Resumed { scope, by, reason },
            };
            let control = Control {
                seq: core.head.0 + 1,
                at: inner.tick(core),
                kind,
            };
            if let Some(p) = inner.append_control(core, &control, None)? {
                tracing::info!(seq = control.seq, scope = %p.scope, "{}", control.kind.name());
                // Answered once it is durable.
                return Ok((p, control.seq));
            }
        })
    }

    /// The pauses in force, by scope; on a handle scoped to a tenant, those
    /// that hold its work (its own, and those of a callable of every
    /// tenant).
    pub fn pauses(&self) -> Vec<Pause> {
        let core = self.core();
        core.projection
            .pauses()
            .filter(|p| self.sees_pause(p))
            .cloned()
            .collect()
    }

    /// [`pauses`](Self::pauses) as they were at `at`.
    ///
    /// # Errors
    ///
    /// `Invalid` for a point beyond the head or archived; `Storage`.
    pub fn pauses_at(&self, at: At) -> Result<Vec<Pause>, CommandError> {
        let projection = self.projection_at(at)?;
        Ok(projection
            .pauses()
            .filter(|p| self.sees_pause(p))
            .cloned()
            .collect())
    }

    /// The pause that holds `execution` now (queued work of a paused
    /// scope), if any.
    pub fn held_by(&self, execution: &BackgroundExecution) -> Option<Pause> {
        self.core().projection.held_by(execution).cloned()
    }

    /// Whether a pause concerns this handle's work.
    fn sees_pause(&self, p: &Pause) -> bool {
        p.scope.tenant_id.as_ref().is_none_or(|t| self.sees(t))
    }
}
