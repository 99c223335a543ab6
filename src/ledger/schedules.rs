//! Schedules kept beside the log (added, paused, resumed, removed under the
//! ledger's lock: on PostgreSQL in the transaction that holds the log's end,
//! so two processes never decide from the same stale copy), and fired into
//! it: each firing is a submission under the slot's idempotency key.

use chrono::{DateTime, Utc};

use super::{Command, Inner, Ledger};
use crate::error::{CommandError, ErrorKind, StorageError};
use crate::ids::TenantId;
use crate::schedule::{self, Cron, Fired, LastFired, NewSchedule, Schedule, ScheduleSlot};
use crate::store::{Beside, Store};

/// Every schedule the engine keeps, in tenant and name order.
fn kept(log: &dyn Store) -> Result<Vec<Schedule>, StorageError> {
    log.beside(Beside::Schedule)?
        .into_iter()
        .map(|(key, json)| {
            serde_json::from_slice(&json).map_err(|e| {
                StorageError::new(
                    ErrorKind::Corrupt,
                    format!("the schedule {key} is damaged: {e}"),
                )
            })
        })
        .collect()
}

fn find(log: &dyn Store, tenant: &TenantId, name: &str) -> Result<Option<Schedule>, StorageError> {
    Ok(kept(log)?
        .into_iter()
        .find(|s| s.tenant_id == *tenant && s.name == name))
}

fn put(log: &dyn Store, s: &Schedule) -> Result<(), StorageError> {
    let json = serde_json::to_vec(s).expect("a schedule serializes");
    log.put_beside(
        Beside::Schedule,
        &Schedule::place(&s.tenant_id, &s.name),
        Some(&json),
    )
}

fn not_found(tenant: &TenantId, name: &str) -> CommandError {
    CommandError::NoSchedule {
        tenant: tenant.clone(),
        name: name.to_owned(),
    }
}

impl Ledger {
    /// The tenant a schedule command is for: the handle's, or `tenant`
    /// when unscoped (and the two must agree when both are given).
    fn schedule_tenant(&self, tenant: Option<&TenantId>) -> Result<TenantId, CommandError> {
        match (self.scope(), tenant) {
            (Some(scope), Some(t)) if scope != t => Err(CommandError::invalid(format!(
                "tenant: this handle is {scope}'s, not {t}'s"
            ))),
            (Some(scope), _) => Ok(scope.clone()),
            (None, Some(t)) => Ok(t.clone()),
            (None, None) => Err(CommandError::invalid(
                "tenant: a schedule is one tenant's; name it",
            )),
        }
    }

    /// Adds a schedule for `tenant` (the handle's, when scoped). Its first
    /// slot is the first after now: nothing before it fires.
    ///
    /// # Errors
    ///
    /// `Invalid` for a bad name, cron expression, time zone or submission
    /// (one with an idempotency key, a run-at time or a retry link: the
    /// schedule sets those), or a name the tenant has already; `Storage`.
    pub fn add_schedule(&self, tenant: Option<&TenantId>, new: NewSchedule) -> Command<Schedule> {
        let checked = self.schedule_tenant(tenant).and_then(|tenant| {
            schedule::check_name(&new.name)?;
            Cron::parse(&new.cron, &new.timezone)?;
            crate::command::check_by(new.by.as_deref())?;
            let s = &new.submission;
            if s.idempotency_key.is_some() || s.run_at.is_some() {
                return Err(CommandError::invalid(
                    "submission: a schedule's submission has no idempotencyKey or runAt (each firing sets its own)",
                ));
            }
            crate::command::validate_submission(s)?;
            crate::command::submitted_links(s)?;
            Ok(tenant)
        });
        let tenant = match checked {
            Ok(t) => t,
            Err(e) => return Command::refused(&self.inner, e),
        };
        Command::new(&self.inner, move |inner, core| {
            inner.refresh(core);
            let now = inner.tick(core);
            if find(&*inner.log, &tenant, &new.name)?.is_some() {
                return Err(CommandError::ScheduleConflict(format!(
                    "name: tenant {tenant} has a schedule {:?} already",
                    new.name
                )));
            }
            let s = Schedule {
                name: new.name,
                tenant_id: tenant,
                cron: new.cron,
                timezone: new.timezone,
                submission: new.submission,
                missed: new.missed,
                paused: false,
                created_at: now,
                by: new.by,
                cursor: now,
                last_fired: None,
            };
            put(&*inner.log, &s)?;
            tracing::info!(tenant = %s.tenant_id, name = s.name, cron = s.cron, "added a schedule");
            Ok((s, core.head.0))
        })
    }

    /// The schedules (the handle's tenant's, when scoped), in tenant and
    /// name order.
    ///
    /// # Errors
    ///
    /// `Storage` for one that cannot be read.
    pub fn schedules(&self) -> Result<Vec<Schedule>, StorageError> {
        Ok(kept(&*self.inner.log)?
            .into_iter()
            .filter(|s| self.sees(&s.tenant_id))
            .collect())
    }

    /// Removes a schedule; answers it as it was. Its executions stay.
    ///
    /// # Errors
    ///
    /// `Invalid` when the tenant has no schedule of that name; `Storage`.
    pub fn remove_schedule(&self, tenant: Option<&TenantId>, name: &str) -> Command<Schedule> {
        self.change_schedule(tenant, name, |_, _| Ok(None))
    }

    /// Pauses a schedule: no slot fires until it is resumed, and those that
    /// pass meanwhile are skipped.
    ///
    /// # Errors
    ///
    /// `Invalid` when there is no such schedule, or it is paused already;
    /// `Storage`.
    pub fn pause_schedule(&self, tenant: Option<&TenantId>, name: &str) -> Command<Schedule> {
        self.change_schedule(tenant, name, |mut s, _| {
            if s.paused {
                return Err(CommandError::ScheduleConflict(format!(
                    "schedule {:?} is paused already",
                    s.name
                )));
            }
            s.paused = true;
            Ok(Some(s))
        })
    }

    /// Resumes a paused schedule from now: the slots that passed while it
    /// was paused do not fire.
    ///
    /// # Errors
    ///
    /// `Invalid` when there is no such schedule, or it is not paused;
    /// `Storage`.
    pub fn resume_schedule(&self, tenant: Option<&TenantId>, name: &str) -> Command<Schedule> {
        self.change_schedule(tenant, name, |mut s, now| {
            if !s.paused {
                return Err(CommandError::ScheduleConflict(format!(
                    "schedule {:?} is not paused",
                    s.name
                )));
            }
            s.paused = false;
            s.cursor = s.cursor.max(now);
            Ok(Some(s))
        })
    }

    /// Changes one schedule as `change` says from what is kept (`None`:
    /// removed), deciding with the ledger held.
    fn change_schedule(
        &self,
        tenant: Option<&TenantId>,
        name: &str,
        change: impl FnOnce(Schedule, DateTime<Utc>) -> Result<Option<Schedule>, CommandError>
            + Send
            + 'static,
    ) -> Command<Schedule> {
        let tenant = match self.schedule_tenant(tenant) {
            Ok(t) => t,
            Err(e) => return Command::refused(&self.inner, e),
        };
        let name = name.to_owned();
        Command::new(&self.inner, move |inner, core| {
            inner.refresh(core);
            let now = inner.tick(core);
            let s = find(&*inner.log, &tenant, &name)?.ok_or_else(|| not_found(&tenant, &name))?;
            let answer = match change(s.clone(), now)? {
                Some(changed) => {
                    put(&*inner.log, &changed)?;
                    changed
                }
                None => {
                    inner.log.put_beside(
                        Beside::Schedule,
                        &Schedule::place(&tenant, &name),
                        None,
                    )?;
                    s
                }
            };
            Ok((answer, core.head.0))
        })
    }

    /// Fires what is due as of the ledger's clock: for each schedule not
    /// paused (the handle's tenant's, when scoped) whose cursor is behind
    /// its newest slot, submits the execution of each due slot at most
    /// [`crate::GRACE`] old, oldest first — once, whoever asks and however
    /// often: the slot's idempotency key names one execution — and of the
    /// older ones what its policy says, then moves the cursor to the newest.
    /// Answers one [`Fired`] per slot fired, or one per schedule that only
    /// skipped. The runtime calls this every second.
    ///
    /// # Errors
    ///
    /// `Storage`; a submission refused (`Invalid`) stops this call, and
    /// the cursor of its schedule stays.
    pub fn fire_schedules(&self) -> Result<Vec<Fired>, CommandError> {
        let now = self.now();
        let mut out = Vec::new();
        for s in self.schedules()? {
            if s.paused {
                continue;
            }
            let cron = Cron::parse(&s.cron, &s.timezone)?;
            let Some(due) = cron.due(s.cursor, now, s.missed) else {
                continue;
            };
            if due.missed > 0 {
                tracing::warn!(tenant = %s.tenant_id, name = s.name, missed = due.missed, "a schedule missed slots while nothing ran it");
            }
            for &(slot, missed) in &due.fire {
                let mut submission = s.submission.clone();
                submission.idempotency_key = Some(s.key(slot));
                submission.schedule = Some(ScheduleSlot {
                    name: s.name.clone(),
                    slot,
                    missed,
                });
                // Checked when the schedule was added; the link to it is
                // the ledger's to set.
                crate::command::validate_submission(&submission)?;
                let op = crate::command::Op::Submit(s.tenant_id.clone(), Box::new(submission));
                let submitted = self.run_checked(op, super::write::Outcome::submitted);
                let (execution, created) = match submitted.wait() {
                    Ok(done) => (done.execution.execution_id, done.created),
                    // Fired elsewhere from an older copy (another
                    // cursor, another count of missed slots): filled.
                    Err(CommandError::IdempotencyConflict { execution, .. }) => (execution, false),
                    Err(e) => return Err(e),
                };
                self.advance(&s, slot, Some(execution))?;
                out.push(Fired {
                    name: s.name.clone(),
                    tenant_id: s.tenant_id.clone(),
                    slot,
                    execution_id: Some(execution),
                    created,
                    missed,
                });
            }
            // Past the slots skipped, when nothing fired after them.
            self.advance(&s, due.cursor, None)?;
            if due.fire.is_empty() {
                out.push(Fired {
                    name: s.name,
                    tenant_id: s.tenant_id,
                    slot: due.cursor,
                    execution_id: None,
                    created: false,
                    missed: due.missed,
                });
            }
        }
        Ok(out)
    }

    /// Moves `s`'s cursor to `slot` (never back), recording what filled it.
    fn advance(
        &self,
        s: &Schedule,
        slot: DateTime<Utc>,
        execution: Option<crate::ids::ExecutionId>,
    ) -> Result<(), CommandError> {
        let (tenant, name) = (s.tenant_id.clone(), s.name.clone());
        Command::new(&self.inner, move |inner: &Inner, core| {
            inner.refresh(core);
            // Removed, or moved on by another process meanwhile: as it is.
            if let Some(mut s) = find(&*inner.log, &tenant, &name)? {
                if s.cursor < slot {
                    s.cursor = slot;
                    if let Some(execution_id) = execution {
                        s.last_fired = Some(LastFired { slot, execution_id });
                    }
                    put(&*inner.log, &s)?;
                }
            }
            Ok(((), core.head.0))
        })
        .wait()
    }
}
