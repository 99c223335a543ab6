//! Schedules: recurring submissions on a cron expression in a time zone.
//!
//! Each firing is an execution whose `queued` event names the schedule and
//! the slot it fills ([`ScheduleSlot`]), under the idempotency key
//! `schedule:NAME:SLOT` — the ledger's own guarantee that one key names one
//! execution per tenant is what keeps a slot from firing twice, across
//! restarts and across processes sharing a database.
//!
//! A schedule keeps a cursor: the latest slot it handled. Slots after it are
//! due; each due slot at most [`GRACE`] old fires, oldest first. Older ones
//! were missed (nothing ran the schedule then): [`Missed::Skip`] fires none
//! of them, [`Missed::Once`] fires the newest of them once, to catch up.
//! Either way the firing after them says how many were missed.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::CommandError;
use crate::event::Submission;
use crate::ids::{ExecutionId, TenantId};

/// How late a slot may be handled and still fire under [`Missed::Skip`].
pub const GRACE: Duration = Duration::from_secs(60);

/// The most slots counted as missed at once (more read as this many).
pub const MAX_MISSED_COUNTED: u64 = 10_000;

/// What becomes of slots that passed while nothing ran the schedule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// They are skipped: the next slot fires on time.
    #[default]
    Skip,
    /// The newest of them fires once, as soon as the schedule runs again.
    Once,
}

impl Missed {
    /// Its name, as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Missed::Skip => "skip",
            Missed::Once => "once",
        }
    }
}

impl FromStr for Missed {
    type Err = CommandError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "skip" => Ok(Missed::Skip),
            "once" => Ok(Missed::Once),
            _ => Err(CommandError::invalid(format!(
                "missed must be skip or once, not {s:?}"
            ))),
        }
    }
}

/// The slot an execution fills: recorded in its `queued` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleSlot {
    /// The schedule's name.
    pub name: String,
    /// The slot (UTC).
    pub slot: DateTime<Utc>,
    /// Slots before it that passed without firing.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub missed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A schedule, as the ledger keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct Schedule {
    /// Its name, unique within its tenant.
    pub name: String,
    /// The tenant its executions are for.
    pub tenant_id: TenantId,
    /// The cron expression: 5 fields (minute hour day month weekday), or 6
    /// with seconds first.
    pub cron: String,
    /// The IANA time zone the expression is read in (`UTC`,
    /// `Europe/Paris`…).
    pub timezone: String,
    /// What each firing submits.
    pub submission: Submission,
    /// What becomes of slots missed while nothing ran it.
    #[serde(default)]
    pub missed: Missed,
    /// Paused: no slot fires, and those that pass meanwhile are skipped.
    #[serde(default)]
    pub paused: bool,
    /// When it was added.
    pub created_at: DateTime<Utc>,
    /// Who added it, when named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The latest slot it handled (fired, or skipped): later ones are due.
    pub cursor: DateTime<Utc>,
    /// The last execution it fired, and for which slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fired: Option<LastFired>,
}

/// The last firing of a schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LastFired {
    /// The slot.
    pub slot: DateTime<Utc>,
    /// The execution that fills it.
    pub execution_id: ExecutionId,
}

/// A schedule to add: its name, cron expression and submission, with a
/// time zone (UTC unless given), a policy for missed slots and who asks.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct NewSchedule {
    /// Its name: 1 to 128 ASCII letters, digits and `._:-`.
    pub name: String,
    /// The cron expression.
    pub cron: String,
    /// The IANA time zone.
    pub timezone: String,
    /// What each firing submits (no idempotency key or run-at time: the
    /// schedule sets them).
    pub submission: Submission,
    /// What becomes of missed slots.
    pub missed: Missed,
    /// Who asks.
    pub by: Option<String>,
}

impl NewSchedule {
    /// A schedule named `name` that submits `submission` on `cron`, in UTC,
    /// skipping missed slots.
    pub fn new(name: impl Into<String>, cron: impl Into<String>, submission: Submission) -> Self {
        NewSchedule {
            name: name.into(),
            cron: cron.into(),
            timezone: "UTC".to_owned(),
            submission,
            missed: Missed::Skip,
            by: None,
        }
    }

    /// Reads the expression in `timezone` (an IANA name).
    pub fn timezone(mut self, timezone: impl Into<String>) -> Self {
        self.timezone = timezone.into();
        self
    }

    /// What becomes of missed slots.
    pub fn missed(mut self, missed: Missed) -> Self {
        self.missed = missed;
        self
    }

    /// Who asks.
    pub fn by(mut self, by: impl Into<String>) -> Self {
        self.by = Some(by.into());
        self
    }
}

/// What a tick found due for one schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Due {
    /// The slots that fire, oldest first, each with how many slots before
    /// it passed without firing.
    pub(crate) fire: Vec<(DateTime<Utc>, u64)>,
    /// The newest due slot: the cursor moves to it.
    pub(crate) cursor: DateTime<Utc>,
    /// Slots passed without firing in all.
    pub(crate) missed: u64,
}

/// One schedule's firing, or its skip, by [`crate::Ledger::fire_schedules`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Fired {
    /// The schedule.
    pub name: String,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The slot handled.
    pub slot: DateTime<Utc>,
    /// The execution that fills it (`None`: skipped, missed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<ExecutionId>,
    /// Whether this call submitted it (`false`: another process, or an
    /// earlier call, did).
    pub created: bool,
    /// Slots passed without firing.
    pub missed: u64,
}

/// `t` without its fraction of a second.
fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// A parsed cron expression and its zone.
pub(crate) struct Cron {
    cron: croner::Cron,
    zone: chrono_tz::Tz,
}

impl Cron {
    /// Parses `cron` in `timezone`; the message names the field.
    pub(crate) fn parse(cron: &str, timezone: &str) -> Result<Cron, CommandError> {
        let parsed = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(cron)
            .map_err(|e| {
                CommandError::invalid(format!("cron: {cron:?} is not a cron expression ({e})"))
            })?;
        let zone: chrono_tz::Tz = timezone.parse().map_err(|_| {
            CommandError::invalid(format!(
                "timezone: {timezone:?} is not an IANA time zone (such as UTC or Europe/Paris)"
            ))
        })?;
        let parsed = Cron { cron: parsed, zone };
        // One that never comes (30 February) is refused now, not at a tick.
        parsed.next_after(Utc::now()).ok_or_else(|| {
            CommandError::invalid(format!("cron: {cron:?} names no time that comes"))
        })?;
        Ok(parsed)
    }

    /// The first slot after `t`.
    pub(crate) fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Slots are whole seconds: the search starts from `t`'s second
        // (which is not after `t`), and the fraction is not carried over.
        self.cron
            .find_next_occurrence(&whole_second(t).with_timezone(&self.zone), false)
            .ok()
            .map(|d| whole_second(d.with_timezone(&Utc)))
    }

    /// The latest slot at or before `t`.
    fn latest_at(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&whole_second(t).with_timezone(&self.zone), true)
            .ok()
            .map(|d| whole_second(d.with_timezone(&Utc)))
    }

    /// What is due at `now` for a schedule whose cursor is `cursor`.
    pub(crate) fn due(
        &self,
        cursor: DateTime<Utc>,
        now: DateTime<Utc>,
        missed: Missed,
    ) -> Option<Due> {
        let newest = self.latest_at(now).filter(|s| *s > cursor)?;
        // Late: more than GRACE before now (strictly before the edge).
        let edge = now - chrono::Duration::from_std(GRACE).expect("a minute is a duration");
        let newest_late = self
            .latest_at(edge - chrono::Duration::nanoseconds(1))
            .filter(|s| *s > cursor && *s < edge);
        let late = match newest_late {
            None => 0,
            Some(last) => {
                let (mut n, mut t) = (0, cursor);
                while let Some(next) = self.next_after(t).filter(|s| *s <= last) {
                    n += 1;
                    if n == MAX_MISSED_COUNTED {
                        break;
                    }
                    t = next;
                }
                n
            }
        };
        let mut fire = Vec::new();
        let mut before = late;
        if let (Missed::Once, Some(last)) = (missed, newest_late) {
            fire.push((last, late - 1));
            before = 0;
        }
        // On time: every slot after the late ones, to now.
        let mut t = newest_late.unwrap_or(cursor);
        while let Some(next) = self.next_after(t).filter(|s| *s <= now) {
            fire.push((next, before));
            before = 0;
            t = next;
        }
        let missed = match (missed, newest_late) {
            (Missed::Once, Some(_)) => late - 1,
            _ => late,
        };
        Some(Due {
            fire,
            cursor: newest,
            missed,
        })
    }
}

impl Schedule {
    /// The next `n` slots after `after`.
    ///
    /// # Errors
    /// `Invalid` when the expression or zone kept is not one (a schedule
    /// added through the ledger always is).
    pub fn next_slots(
        &self,
        after: DateTime<Utc>,
        n: usize,
    ) -> Result<Vec<DateTime<Utc>>, CommandError> {
        let cron = Cron::parse(&self.cron, &self.timezone)?;
        let mut out = Vec::with_capacity(n);
        let mut t = after;
        while out.len() < n {
            let Some(next) = cron.next_after(t) else {
                break;
            };
            out.push(next);
            t = next;
        }
        Ok(out)
    }

    /// The idempotency key of the firing of `slot`.
    pub(crate) fn key(&self, slot: DateTime<Utc>) -> String {
        format!(
            "schedule:{}:{}",
            self.name,
            slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }

    /// Where the engine keeps it: `TENANT/NAME`.
    pub(crate) fn place(tenant: &TenantId, name: &str) -> String {
        format!("{tenant}/{name}")
    }
}

/// Refuses a name that is not 1 to 128 ASCII letters, digits and `._:-`.
pub(crate) fn check_name(name: &str) -> Result<(), CommandError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(CommandError::invalid(format!(
            "name: {name:?} is not a schedule name (1-128 ASCII letters, digits and ._:-)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn due_slots_fire_on_time_and_missed_ones_follow_the_policy() {
        let cron = Cron::parse("*/5 * * * *", "UTC").unwrap();
        let cursor = at("2026-12-04T10:00:00Z");
        let due = |now: &str, policy| cron.due(cursor, at(now), policy);
        assert_eq!(due("2026-12-04T10:04:59Z", Missed::Skip), None);
        let d = due("2026-12-04T10:05:01Z", Missed::Skip).unwrap();
        assert_eq!(
            (d.fire, d.cursor, d.missed),
            (
                vec![(at("2026-12-04T10:05:00Z"), 0)],
                at("2026-12-04T10:05:00Z"),
                0
            )
        );
        // Down from 10:03 to 10:15:30: 10:05 and 10:10 missed, 10:15 on time.
        let d = due("2026-12-04T10:15:30Z", Missed::Skip).unwrap();
        assert_eq!(
            (d.fire, d.missed),
            (vec![(at("2026-12-04T10:15:00Z"), 2)], 2)
        );
        // Down past 10:15's grace: all three missed, or the newest caught up.
        let d = due("2026-12-04T10:16:30Z", Missed::Skip).unwrap();
        assert_eq!(
            (d.fire, d.cursor, d.missed),
            (vec![], at("2026-12-04T10:15:00Z"), 3)
        );
        let d = due("2026-12-04T10:16:30Z", Missed::Once).unwrap();
        assert_eq!(
            (d.fire, d.missed),
            (vec![(at("2026-12-04T10:15:00Z"), 2)], 2)
        );
        // Every slot within the grace fires, not only the newest: a tick
        // that comes late by two slots of a per-second schedule fires both.
        let every = Cron::parse("* * * * * *", "UTC").unwrap();
        let d = every
            .due(
                at("2026-12-04T10:00:00.4Z"),
                at("2026-12-04T10:00:02.6Z"),
                Missed::Skip,
            )
            .unwrap();
        assert_eq!(
            d.fire,
            vec![
                (at("2026-12-04T10:00:01Z"), 0),
                (at("2026-12-04T10:00:02Z"), 0)
            ]
        );
        // Once: the newest late slot, then the ones on time.
        let d = every
            .due(
                at("2026-12-04T10:00:00Z"),
                at("2026-12-04T10:01:01.5Z"),
                Missed::Once,
            )
            .unwrap();
        assert_eq!(
            d.fire.first(),
            Some(&(at("2026-12-04T10:00:01Z"), 0)),
            "10:00:01 is 60.5 s old: late"
        );
        assert_eq!(
            d.fire.len(),
            1 + 60,
            "the catch-up, then 10:00:02 to 10:01:01"
        );
        assert_eq!(d.missed, 0);
    }

    #[test]
    fn expressions_are_read_in_their_zone_and_bad_ones_name_the_field() {
        // 09:00 in Paris is 08:00 UTC in winter.
        let cron = Cron::parse("0 9 * * *", "Europe/Paris").unwrap();
        assert_eq!(
            cron.next_after(at("2026-12-04T07:00:00Z")),
            Some(at("2026-12-04T08:00:00Z"))
        );
        // With seconds: every 10 s.
        let cron = Cron::parse("*/10 * * * * *", "UTC").unwrap();
        assert_eq!(
            cron.next_after(at("2026-12-04T07:00:01Z")),
            Some(at("2026-12-04T07:00:10Z"))
        );
        // Slots are whole seconds, whatever the fraction of the time they
        // are looked for from.
        assert_eq!(
            cron.next_after(at("2026-12-04T07:00:09.75Z")),
            Some(at("2026-12-04T07:00:10Z"))
        );
        assert_eq!(
            cron.next_after(at("2026-12-04T07:00:10.25Z")),
            Some(at("2026-12-04T07:00:20Z"))
        );
        let due = cron
            .due(
                at("2026-12-04T07:00:00.5Z"),
                at("2026-12-04T07:00:10.3Z"),
                Missed::Skip,
            )
            .unwrap();
        assert_eq!(
            (due.fire, due.missed),
            (vec![(at("2026-12-04T07:00:10Z"), 0)], 0)
        );
        for (cron, tz, says) in [
            ("*/5 * * *", "UTC", "cron: "),
            ("61 * * * *", "UTC", "cron: "),
            ("* * * * *", "Mars/Olympus", "timezone: "),
            ("0 0 30 2 *", "UTC", "cron: "),
        ] {
            let e = Cron::parse(cron, tz).err().unwrap().to_string();
            assert!(e.contains(says), "{cron} {tz}: {e}");
        }
        assert!(check_name("nightly-report.v2").is_ok());
        assert!(check_name("a/b").is_err() && check_name("").is_err());
    }
}
