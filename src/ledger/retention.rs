//! Retention policies: per tenant, how long a settled execution keeps its
//! payloads, and the pass that redacts those kept longer ([`Ledger::retain`]).
//!
//! A policy is JSON (a file the operator keeps: `retention.json` in the data
//! directory, or one named on the command line):
//!
//! ```json
//! {
//!   "tenants": {
//!     "acme": { "redactAfter": "30d" },
//!     "globex": { "redactAfter": "7d", "hold": "litigation 2026-44" }
//!   },
//!   "default": { "redactAfter": "90d" }
//! }
//! ```
//!
//! `redactAfter` is a whole number of seconds, minutes, hours or days
//! (`45s`, `90m`, `12h`, `30d`) after the execution settled. `hold` puts
//! the whole tenant under legal hold for the policy: the pass redacts none
//! of its executions while it is set (as none under a hold of its own), and
//! says how many it kept for that reason. Redactions the pass makes are
//! events like any other (`by` names the policy), so the log tells which
//! were made by policy and when.

use std::collections::BTreeMap;

use chrono::TimeDelta;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Ledger;
use crate::error::{CommandError, ErrorKind, StorageError};
use crate::execution::TenantId;

/// How long each tenant's settled executions keep their payloads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct RetentionPolicy {
    /// By tenant.
    #[serde(default)]
    pub tenants: BTreeMap<TenantId, TenantRetention>,
    /// For the tenants not named (none, when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
        deserialize_with = "span_in"
    )]
    pub redact_after: Option<TimeDelta>,
    /// A legal hold on the whole tenant, and why: the policy redacts none
    /// of its executions while it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
}

impl RetentionPolicy {
    /// The policy in `json`.
    ///
    /// # Errors
    ///
    /// `Invalid`, naming the field and what it takes (unknown fields are
    /// refused).
    pub fn from_json(json: &[u8]) -> Result<RetentionPolicy, CommandError> {
        serde_json::from_slice(json)
            .map_err(|e| CommandError::invalid(format!("retention policy: {e}")))
    }

    /// What applies to `tenant`.
    pub fn for_tenant(&self, tenant: &TenantId) -> Option<&TenantRetention> {
        self.tenants.get(tenant).or(self.default.as_ref())
    }
}

impl TenantRetention {
    /// Keeps payloads `after` past settling.
    pub fn redact_after(after: TimeDelta) -> Self {
        TenantRetention {
            redact_after: Some(after),
            hold: None,
        }
    }
}

/// A span as a policy writes it: `45s`, `90m`, `12h`, `30d`.
fn parse_span(text: &str) -> Result<TimeDelta, String> {
    let bad = || {
        format!(
            "redactAfter: {text:?} is not a span; it takes a whole number and a unit: 45s, 90m, 12h, 30d"
        )
    };
    let unit = text.chars().last().ok_or_else(bad)?;
    let n: i64 = text[..text.len() - unit.len_utf8()]
        .parse()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(bad)?;
    let seconds = match unit {
        's' => Some(n),
        'm' => n.checked_mul(60),
        'h' => n.checked_mul(3600),
        'd' => n.checked_mul(86_400),
        _ => None,
    };
    seconds.and_then(TimeDelta::try_seconds).ok_or_else(bad)
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

fn span_in<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TimeDelta>, D::Error> {
    let text = String::deserialize(d)?;
    parse_span(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
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
}

impl Ledger {
    /// Applies `policy` as of the ledger's clock: redacts the payloads of
    /// every settled execution (of this handle's tenant, when scoped) that
    /// settled longer ago than its tenant's `redactAfter`, unless it or its
    /// tenant is under legal hold. With `dry_run`, only counts. `progress`
    /// is told the report so far after each execution looked at.
    ///
    /// The pass reads the list of settled executions from the newest
    /// submission down to the oldest that can be due, and each of those
    /// executions' events: its cost follows the settled executions old
    /// enough to be due, redacted or not.
    ///
    /// # Errors
    ///
    /// `Storage` for damaged data or a failed write; a redaction the state
    /// machine refuses meanwhile (held or redacted by someone else since)
    /// is counted, not an error.
    pub fn retain(
        &self,
        policy: &RetentionPolicy,
        dry_run: bool,
        mut progress: impl FnMut(&RetentionReport),
    ) -> Result<RetentionReport, CommandError> {
        let mut report = RetentionReport {
            dry_run,
            ..RetentionReport::default()
        };
        let Ok(scope) = self.within(None) else {
            return Ok(report);
        };
        let now = self.now();
        let cutoff = |tenant: &TenantId| {
            let rule = policy.for_tenant(tenant)?;
            Some((now - rule.redact_after?, rule.hold.is_some()))
        };
        // The newest submission that can be due: the latest cutoff.
        let latest = policy
            .tenants
            .values()
            .chain(&policy.default)
            .filter_map(|r| r.redact_after)
            .map(|after| now - after)
            .max();
        if latest.is_none() {
            return Ok(report);
        }
        for line in self.inner.log.listed_before(u64::MAX) {
            let line = line?;
            if scope.is_some_and(|t| *t != line.tenant) {
                continue;
            }
            let Some((before, tenant_held)) = cutoff(&line.tenant) else {
                continue;
            };
            // Settled after it was submitted: not due yet.
            if line.queued_at > before {
                continue;
            }
            let execution = self.inner.load(line.id)?.ok_or_else(|| {
                StorageError::new(
                    ErrorKind::Corrupt,
                    format!(
                        "the list of settled executions names {}, which has no events",
                        line.id
                    ),
                )
            })?;
            report.examined += 1;
            let settled = execution.completed_at.unwrap_or(execution.queued_at);
            if execution.redacted_at.is_some() {
                report.already += 1;
            } else if settled <= before {
                report.due += 1;
                if execution.legal_hold || tenant_held {
                    report.held += 1;
                } else if !dry_run {
                    let after = policy
                        .for_tenant(&line.tenant)
                        .and_then(|r| r.redact_after)
                        .map_or_else(String::new, span_text);
                    let reason = format!("retention policy: payloads kept {after} after settling");
                    match self
                        .redact(line.id, reason, Some("retention policy".into()))
                        .wait()
                    {
                        Ok(_) => report.redacted += 1,
                        // Held, or redacted, since it was read.
                        Err(CommandError::Transition(_)) => report.held += 1,
                        Err(e) => return Err(e),
                    }
                }
            }
            progress(&report);
        }
        Ok(report)
    }
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
        ] {
            let err = RetentionPolicy::from_json(json.as_bytes()).unwrap_err();
            assert!(err.to_string().contains(names), "{json}: {err}");
        }
        assert_eq!(span_text(TimeDelta::hours(36)), "36h");
        assert_eq!(span_text(TimeDelta::seconds(0)), "0s");
    }
}
