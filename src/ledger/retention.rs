//! Retention policies: per tenant, how long a settled execution keeps its
//! payloads and how long it stays in the live log, and the pass that
//! redacts and archives what is due ([`Ledger::retain`]).
//!
//! A policy is JSON (a file the operator keeps: `retention.json` in the data
//! directory, or one named on the command line):
//!
//! ```json
//! {
//!   "tenants": {
//!     "acme": { "redactAfter": "30d", "archiveAfter": "90d" },
//!     "globex": { "redactAfter": "7d", "hold": "litigation 2026-44" }
//!   },
//!   "default": { "redactAfter": "90d" }
//! }
//! ```
//!
//! `redactAfter` is a whole number of seconds, minutes, hours or days
//! (`45s`, `90m`, `12h`, `30d`) after the execution settled.
//! `archiveAfter`, as long or longer, moves settled executions into the
//! archive ([`super::archive`]): the pass archives the oldest part of the
//! log up to the first execution that is not due (its tenant archives
//! none, it is live, held, not redacted yet, or settled too recently). `hold` puts
//! the whole tenant under legal hold for the policy: the pass redacts none
//! of its executions while it is set (as none under a hold of its own), and
//! says how many it kept for that reason. A tenant's hold that binds every
//! redaction, a policy's or one asked by hand, is the ledger's
//! ([`Ledger::hold_tenant`]): kept beside the log, and asked by each
//! redaction as it is appended. Redactions the pass makes are
//! events like any other (`by` names the policy), so the log tells which
//! were made by policy and when.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use chrono::TimeDelta;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Command, Ledger};
use crate::error::{CommandError, ErrorKind, StorageError};
use crate::execution::TenantId;
use crate::machine::Refusal;
use crate::store::{Beside, Store};

/// How long each tenant's settled executions keep their payloads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct RetentionPolicy {
    /// By tenant.
    #[serde(default)]
    pub tenants: BTreeMap<TenantId, TenantRetention>,
    /// For the tenants not named, and what a tenant's own leaves out
    /// (none, when absent).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub default: Option<TenantRetention>,
}

/// One tenant's retention.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct TenantRetention {
    /// Payloads are redacted this long after the execution settled (kept,
    /// when absent).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "span_out",
        deserialize_with = "redact_span_in"
    )]
    pub redact_after: Option<TimeDelta>,
    /// Settled executions move into the archive this long after settling
    /// (kept in the live log, when absent); at least `redact_after`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "span_out",
        deserialize_with = "archive_span_in"
    )]
    pub archive_after: Option<TimeDelta>,
    /// A legal hold on the whole tenant, and why (at most 4,096
    /// characters): the policy redacts none of its executions while it is
    /// set.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "why"
    )]
    pub hold: Option<String>,
}

/// A field that may be left out but is not `null`.
fn some<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Why a tenant is held: a string of at most 4,096 characters.
fn why<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let why = String::deserialize(d)?;
    if why.chars().count() > 4096 {
        return Err(serde::de::Error::custom(
            "hold: longer than 4096 characters",
        ));
    }
    Ok(Some(why))
}

impl RetentionPolicy {
    /// The policy in `json`.
    ///
    /// # Errors
    ///
    /// `Invalid`, naming the field and what it takes (unknown fields are
    /// refused).
    pub fn from_json(json: &[u8]) -> Result<RetentionPolicy, CommandError> {
        let policy: RetentionPolicy = serde_json::from_slice(json)
            .map_err(|e| CommandError::invalid(format!("retention policy: {e}")))?;
        policy.validate()?;
        Ok(policy)
    }

    /// Refuses a rule that archives before it redacts (archived executions
    /// no longer change).
    ///
    /// # Errors
    ///
    /// `Invalid`, naming the tenant.
    pub fn validate(&self) -> Result<(), CommandError> {
        let named = self.tenants.keys().map(|t| (Some(t), self.for_tenant(t)));
        for (tenant, rule) in named.chain([(None, self.default.clone())]) {
            let Some(rule) = rule else { continue };
            if let (Some(redact), Some(archive)) = (rule.redact_after, rule.archive_after) {
                if archive < redact {
                    let whose = tenant.map_or("the default".to_owned(), |t| format!("tenant {t}"));
                    return Err(CommandError::invalid(format!(
                        "retention policy: archiveAfter ({}) of {whose} is shorter than its redactAfter ({}); archived executions can no longer be redacted",
                        span_text(archive),
                        span_text(redact)
                    )));
                }
            }
        }
        Ok(())
    }

    /// What applies to `tenant`: its own entry, what it leaves out taken
    /// from the default.
    pub fn for_tenant(&self, tenant: &TenantId) -> Option<TenantRetention> {
        let default = self.default.as_ref();
        match self.tenants.get(tenant) {
            Some(own) => Some(TenantRetention {
                redact_after: own.redact_after.or(default.and_then(|d| d.redact_after)),
                archive_after: own.archive_after.or(default.and_then(|d| d.archive_after)),
                hold: own.hold.clone(),
            }),
            None => default.cloned(),
        }
    }

    /// The policy as it applies to `tenant` alone (for a pass scoped to it
    /// that runs elsewhere).
    pub fn only(&self, tenant: &TenantId) -> RetentionPolicy {
        RetentionPolicy {
            tenants: self
                .for_tenant(tenant)
                .map(|rule| (tenant.clone(), rule))
                .into_iter()
                .collect(),
            default: None,
        }
    }
}

impl TenantRetention {
    /// Keeps payloads `after` past settling.
    pub fn redact_after(after: TimeDelta) -> Self {
        TenantRetention {
            redact_after: Some(after),
            archive_after: None,
            hold: None,
        }
    }

    /// Moves settled executions into the archive `after` past settling.
    pub fn archive_after(mut self, after: TimeDelta) -> Self {
        self.archive_after = Some(after);
        self
    }
}

/// A span as a policy writes it: `45s`, `90m`, `12h`, `30d` (`field`
/// names it in the error).
fn parse_span(field: &str, text: &str) -> Result<TimeDelta, String> {
    let bad = || {
        format!(
            "{field}: {text:?} is not a span; it takes a whole number and a unit: 45s, 90m, 12h, 30d (at most 999999999s, 9999999m, 999999h or 99999d)"
        )
    };
    let unit = text.chars().last().ok_or_else(bad)?;
    let digits = &text[..text.len() - unit.len_utf8()];
    // At most 999999999s, 9999999m, 999999h, 99999d: up to 273 years.
    let (most, seconds) = match unit {
        's' => (9, 1),
        'm' => (7, 60),
        'h' => (6, 3600),
        'd' => (5, 86_400),
        _ => return Err(bad()),
    };
    if digits.is_empty() || digits.len() > most || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: i64 = digits.parse().map_err(|_| bad())?;
    TimeDelta::try_seconds(n * seconds).ok_or_else(bad)
}

/// A span as a policy writes it: the largest unit that divides it.
fn span_text(span: TimeDelta) -> String {
    let s = span.num_seconds();
    match s {
        _ if s != 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        _ if s != 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        _ if s != 0 && s % 60 == 0 => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

fn span_in<'de, D: Deserializer<'de>>(field: &str, d: D) -> Result<Option<TimeDelta>, D::Error> {
    let text = String::deserialize(d)?;
    parse_span(field, &text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn redact_span_in<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TimeDelta>, D::Error> {
    span_in("redactAfter", d)
}

fn archive_span_in<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TimeDelta>, D::Error> {
    span_in("archiveAfter", d)
}

fn span_out<S: Serializer>(span: &Option<TimeDelta>, s: S) -> Result<S::Ok, S::Error> {
    match span {
        Some(span) => s.serialize_str(&span_text(*span)),
        None => s.serialize_none(),
    }
}

/// What a retention pass did (or, in a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RetentionReport {
    /// Whether it changed nothing (a dry run).
    pub dry_run: bool,
    /// Settled executions of tenants with a redaction policy, submitted
    /// long enough ago to be due, that it looked at.
    pub examined: u64,
    /// Of those, the ones due for redaction and not redacted before.
    pub due: u64,
    /// Redacted by this pass (none in a dry run).
    pub redacted: u64,
    /// Due, but kept: under legal hold, of their own or their tenant's.
    pub held: u64,
    /// Redacted before.
    pub already: u64,
    /// Due, but recorded before payloads could be redacted (record format
    /// 1): kept.
    pub unredactable: u64,
    /// Whether it stopped before the end, as asked.
    pub stopped: bool,
    /// What archiving did, when the policy archives (none when no tenant's
    /// rule has `archiveAfter`, on a handle scoped to a tenant, or when the
    /// pass stopped before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<super::ArchiveReport>,
}

/// A legal hold on a whole tenant: none of its executions is redacted
/// (by hand or by a policy) or archived while it is set. Kept beside the
/// log, not in it: the tenant has no history of its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct TenantHold {
    /// The tenant held.
    pub tenant: TenantId,
    /// Why.
    pub reason: String,
    /// Who asked, when named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// When it was put (the ledger's clock).
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Redactions a pass has in flight at once: they share the combiner's
/// rounds, and each round's sync.
const IN_FLIGHT: usize = 256;

impl Ledger {
    /// Puts `tenant` under legal hold: none of its executions, those
    /// submitted later included, is redacted or archived until the hold
    /// is released, whatever a policy says. Decided with the ledger held,
    /// so that no redaction of the tenant's is appended after it is
    /// answered; on PostgreSQL, in the transaction that holds the log's
    /// end, so other processes' redactions wait for it too.
    ///
    /// # Errors
    ///
    /// `Invalid` for an empty reason, a handle scoped to a tenant (a hold
    /// is the operator's), or a tenant held already; `Storage`.
    pub fn hold_tenant(
        &self,
        tenant: &TenantId,
        reason: impl Into<String>,
        by: Option<String>,
    ) -> Command<TenantHold> {
        let (tenant, reason) = (tenant.clone(), reason.into());
        let checked = crate::command::check_reason(&reason, by.as_deref());
        self.tenant_hold_command(tenant.clone(), checked, move |held, now| {
            if let Some(held) = held {
                return Err(CommandError::invalid(format!(
                    "tenant: {tenant} is under legal hold already ({})",
                    held.reason
                )));
            }
            Ok(Some(TenantHold {
                tenant,
                reason,
                by,
                at: now,
            }))
        })
    }

    /// Releases `tenant`'s legal hold; answers the hold released.
    ///
    /// # Errors
    ///
    /// `Invalid` for an empty reason, a handle scoped to a tenant, or a
    /// tenant not held; `Storage`.
    pub fn release_tenant_hold(
        &self,
        tenant: &TenantId,
        reason: impl Into<String>,
        by: Option<String>,
    ) -> Command<TenantHold> {
        let (tenant, reason) = (tenant.clone(), reason.into());
        let checked = crate::command::check_reason(&reason, by.as_deref());
        self.tenant_hold_command(tenant.clone(), checked, move |held, _| {
            let held = held.ok_or_else(|| {
                CommandError::invalid(format!("tenant: {tenant} is not under legal hold"))
            })?;
            tracing::info!(%tenant, reason, by, held = held.reason, "released a tenant's legal hold");
            Ok(None)
        })
    }

    /// Puts or lifts a tenant's hold as `decide` says from the hold it has
    /// (answering the new one, or the one lifted), once its reason and who
    /// asks are `checked`.
    fn tenant_hold_command(
        &self,
        tenant: TenantId,
        checked: Result<(), CommandError>,
        decide: impl FnOnce(
                Option<TenantHold>,
                chrono::DateTime<chrono::Utc>,
            ) -> Result<Option<TenantHold>, CommandError>
            + Send
            + 'static,
    ) -> Command<TenantHold> {
        let checked = checked.and_then(|()| match self.scope {
            Some(_) => Err(CommandError::invalid(
                "tenant: a handle scoped to a tenant cannot hold or release tenants",
            )),
            None => Ok(()),
        });
        if let Err(e) = checked {
            return Command::refused(&self.inner, e);
        }
        Command::new(&self.inner, move |inner, core| {
            inner.refresh(core);
            let now = inner.tick(core);
            let held = tenant_hold(&*inner.log, &tenant)?;
            let put = decide(held.clone(), now)?;
            let json = put
                .as_ref()
                .map(|h| serde_json::to_vec(h).expect("a hold serializes"));
            inner
                .log
                .put_beside(Beside::TenantHold, tenant.as_str(), json.as_deref())?;
            let answer = put.or(held).expect("decided on a hold");
            // Answered once the group that holds it commits.
            Ok((answer, core.head.0))
        })
    }

    /// The tenants under legal hold, in name order.
    ///
    /// # Errors
    ///
    /// `Storage` for a hold that cannot be read.
    pub fn tenant_holds(&self) -> Result<Vec<TenantHold>, StorageError> {
        let holds = tenant_holds(&*self.inner.log)?;
        Ok(match self.scope.as_ref() {
            Some(scope) => holds.into_iter().filter(|h| h.tenant == *scope).collect(),
            None => holds,
        })
    }

    /// Whether its storage engine can redact (both can).
    pub fn redacts(&self) -> bool {
        self.inner.log.strips_payloads()
    }

    /// Applies `policy` as of the ledger's clock: redacts the payloads of
    /// every settled execution (of this handle's tenant, when scoped) that
    /// settled longer ago than its tenant's `redactAfter`, unless it or its
    /// tenant is under legal hold. With `dry_run`, only counts. `progress`
    /// is told the report so far after each execution looked at, and stops
    /// the pass by breaking.
    ///
    /// The pass reads the list of settled executions from the newest
    /// submission down to the oldest, and the events of each one
    /// submitted long enough ago to be due: its cost follows those,
    /// redacted or not. Its redactions are carried out a few hundred at a
    /// time, which share their syncs.
    ///
    /// # Errors
    ///
    /// `Unsupported` when the engine cannot redact (and it is no dry run);
    /// `Storage` for damaged data, a failed write, or a list of settled
    /// executions left incomplete (`ledger reindex` builds it). A
    /// redaction the state machine refuses meanwhile (held or redacted by
    /// someone else since) is counted, not an error.
    pub fn retain(
        &self,
        policy: &RetentionPolicy,
        dry_run: bool,
        mut progress: impl FnMut(&RetentionReport) -> ControlFlow<()>,
    ) -> Result<RetentionReport, CommandError> {
        policy.validate()?;
        let mut report = RetentionReport {
            dry_run,
            ..RetentionReport::default()
        };
        let Ok(scope) = self.within(None) else {
            return Ok(report);
        };
        if !dry_run && !self.inner.log.strips_payloads() {
            return Err(CommandError::Unsupported(
                "redaction is not available on this storage engine".into(),
            ));
        }
        if !self.inner.log.list_complete()? {
            return Err(StorageError::new(
                ErrorKind::Corrupt,
                "the list of settled executions is incomplete (its rebuild when the ledger opened failed): run `ledger reindex`, then apply the policy again",
            )
            .into());
        }
        let archives = policy
            .tenants
            .values()
            .chain(policy.default.as_ref())
            .any(|rule| rule.archive_after.is_some());
        // Refused before anything is done.
        if archives && scope.is_none() && self.inner.log.archive_dir().is_none() {
            return Err(super::archive::no_archive());
        }
        let now = self.now();
        // Tenants held beside the log, as the pass starts (each redaction
        // asks again as it is appended).
        let held_tenants: std::collections::HashSet<TenantId> = tenant_holds(&*self.inner.log)?
            .into_iter()
            .map(|h| h.tenant)
            .collect();
        // Settled at or before this is due (none, for a span before time).
        let cutoff = |tenant: &TenantId| {
            let rule = policy.for_tenant(tenant)?;
            let after = rule.redact_after?;
            Some((
                now.checked_sub_signed(after),
                rule.hold.is_some() || held_tenants.contains(tenant),
                span_text(after),
            ))
        };
        let mut in_flight = Vec::new();
        for line in self.inner.log.listed_before(u64::MAX) {
            let line = line?;
            if scope.is_some_and(|t| *t != line.tenant) {
                continue;
            }
            let Some((before, tenant_held, span)) = cutoff(&line.tenant) else {
                continue;
            };
            // Settled after it was submitted: not due yet.
            let Some(before) = before.filter(|before| line.queued_at <= *before) else {
                continue;
            };
            // When it settled: its last event but redactions and holds.
            let mut settled = line.queued_at;
            let seqs = self.inner.execution_seqs(&line.id)?;
            let execution = self
                .inner
                .fold_execution(line.id, seqs, |e| {
                    if !e.kind.follows_settling() {
                        settled = e.at;
                    }
                    true
                })?
                .ok_or_else(|| {
                    StorageError::new(
                        ErrorKind::Corrupt,
                        format!(
                            "the list of settled executions names {}, which has no events",
                            line.id
                        ),
                    )
                })?;
            report.examined += 1;
            if execution.redacted_at.is_some() {
                report.already += 1;
            } else if settled <= before {
                report.due += 1;
                if execution.legal_hold || tenant_held {
                    report.held += 1;
                } else if !dry_run {
                    let reason = format!("retention policy: payloads kept {span} after settling");
                    in_flight.push(
                        self.redact(line.id, reason, Some("retention policy".into()))
                            .spawn(),
                    );
                    if in_flight.len() == IN_FLIGHT {
                        settle(&mut in_flight, &mut report)?;
                    }
                }
            }
            if progress(&report).is_break() {
                report.stopped = true;
                break;
            }
        }
        settle(&mut in_flight, &mut report)?;
        if archives && scope.is_none() && !report.stopped {
            let cutoff = |tenant: &TenantId| {
                let after = policy.for_tenant(tenant)?.archive_after?;
                now.checked_sub_signed(after)
            };
            let rule = |tenant: &TenantId| policy.for_tenant(tenant);
            let held = |tenant: &TenantId| {
                held_tenants.contains(tenant) || rule(tenant).is_some_and(|r| r.hold.is_some())
            };
            let redacts =
                |tenant: &TenantId| rule(tenant).is_some_and(|r| r.redact_after.is_some());
            let due = super::archive::Due {
                cutoff: &cutoff,
                held: &held,
                redacts: &redacts,
            };
            report.archive = Some(self.archive_due(&due, dry_run)?);
        }
        Ok(report)
    }
}

/// Waits for the redactions in flight and counts what became of each.
fn settle(
    in_flight: &mut Vec<crate::ledger::Pending<crate::execution::BackgroundExecution>>,
    report: &mut RetentionReport,
) -> Result<(), CommandError> {
    let mut failed = None;
    for pending in in_flight.drain(..) {
        match pending.wait() {
            Ok(_) => report.redacted += 1,
            // Redacted, or held, since it was read.
            Err(CommandError::Transition(t)) if t.refusal == Refusal::AlreadyRedacted => {
                report.already += 1;
            }
            Err(CommandError::Transition(_)) => report.held += 1,
            // Recorded in format 1.
            Err(CommandError::Invalid(_)) => report.unredactable += 1,
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    failed.map_or(Ok(()), Err)
}

/// The tenants under legal hold that `log` keeps.
pub(super) fn tenant_holds(log: &dyn Store) -> Result<Vec<TenantHold>, StorageError> {
    log.beside(Beside::TenantHold)?
        .into_iter()
        .map(|(tenant, json)| {
            serde_json::from_slice(&json).map_err(|e| {
                StorageError::new(
                    ErrorKind::Corrupt,
                    format!("the legal hold of tenant {tenant} is damaged: {e}"),
                )
            })
        })
        .collect()
}

/// `tenant`'s legal hold, if it is under one. The one place that tells:
/// redactions ([`super::Inner`]'s appends), retention passes and archiving
/// ask here.
pub(super) fn tenant_hold(
    log: &dyn Store,
    tenant: &TenantId,
) -> Result<Option<TenantHold>, StorageError> {
    Ok(tenant_holds(log)?.into_iter().find(|h| h.tenant == *tenant))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_reads_its_spans_and_refuses_what_it_does_not_know() {
        let p = RetentionPolicy::from_json(
            br#"{"tenants": {"acme": {"redactAfter": "30d"}, "globex": {"hold": "audit"}},
                 "default": {"redactAfter": "90m"}}"#,
        )
        .unwrap();
        let acme: TenantId = "acme".parse().unwrap();
        let other: TenantId = "initech".parse().unwrap();
        assert_eq!(
            p.for_tenant(&acme).unwrap().redact_after,
            Some(TimeDelta::days(30))
        );
        // A tenant's entry takes what it leaves out from the default.
        let globex: TenantId = "globex".parse().unwrap();
        let held = p.for_tenant(&globex).unwrap();
        assert_eq!(
            (held.redact_after, held.hold.as_deref()),
            (Some(TimeDelta::minutes(90)), Some("audit"))
        );
        assert_eq!(p.only(&globex).tenants.len(), 1);
        assert_eq!(p.only(&globex).default, None);
        assert_eq!(
            p.for_tenant(&other).unwrap().redact_after,
            Some(TimeDelta::minutes(90))
        );
        let back = serde_json::to_string(&p).unwrap();
        assert_eq!(RetentionPolicy::from_json(back.as_bytes()).unwrap(), p);
        for (json, names) in [
            (
                r#"{"tenants": {"acme": {"redactAftr": "1d"}}}"#,
                "redactAftr",
            ),
            (
                r#"{"tenants": {"acme": {"redactAfter": "1w"}}}"#,
                "redactAfter",
            ),
            (
                r#"{"tenants": {"acme": {"redactAfter": "-1d"}}}"#,
                "redactAfter",
            ),
            (r#"{"tenants": {"a b": {}}}"#, "tenant"),
            (r#"{"tenant": {}}"#, "tenant"),
            (r#"{"default": null}"#, "null"),
            (r#"{"default": {"hold": null}}"#, "null"),
            (r#"{"default": {"redactAfter": "+5d"}}"#, "redactAfter"),
            (r#"{"default": {"redactAfter": "100000d"}}"#, "redactAfter"),
            (
                r#"{"default": {"redactAfter": "10000000m"}}"#,
                "redactAfter",
            ),
        ] {
            let err = RetentionPolicy::from_json(json.as_bytes()).unwrap_err();
            assert!(err.to_string().contains(names), "{json}: {err}");
        }
        let long = format!(r#"{{"default": {{"hold": "{}"}}}}"#, "x".repeat(4097));
        let err = RetentionPolicy::from_json(long.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("hold"), "{err}");
        assert_eq!(span_text(TimeDelta::hours(36)), "36h");
        assert_eq!(span_text(TimeDelta::seconds(0)), "0s");
    }
}
