//! Pauses: work held in the queue — a callable's, a tenant's, or one
//! tenant's callable's — and let go again, recorded in the log as control
//! entries (`paused`, `resumed`; `event.rs`) that belong to no execution.
//!
//! While a pause is in force its work stays queued, in submission order,
//! and is listed (after what claims take, with the pause that holds it);
//! no claim takes it. Attempts already running finish as usual. What may
//! be paused and resumed, and what a pause holds, is decided here and
//! nowhere else: the projection folds the entries through
//! [`Pauses::apply`], and claims and listings ask [`Pauses::holding`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::CommandError;
use crate::event::{Control, ControlKind};
use crate::ids::TenantId;

/// The longest callable name a scope takes, as a submission's.
const MAX_CALLABLE: usize = 256;

/// What a pause holds: one callable's work (of every tenant), one
/// tenant's work (of every callable), or one tenant's work of one
/// callable.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PauseScope {
    /// Only this tenant's work (every tenant's, when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<TenantId>,
    /// Only this callable's work (every callable's, when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callable_name: Option<String>,
}

impl PauseScope {
    /// The scope of `tenant`'s work (when given) of `callable` (when
    /// given).
    pub fn new(tenant: Option<TenantId>, callable: Option<String>) -> Self {
        PauseScope {
            tenant_id: tenant,
            callable_name: callable,
        }
    }

    /// Checks that the scope names a tenant or a callable, or both (a
    /// pause of everything is not one: stop the workers).
    ///
    /// # Errors
    ///
    /// `Invalid`, naming the field.
    pub fn check(&self) -> Result<(), CommandError> {
        match &self.callable_name {
            None if self.tenant_id.is_none() => Err(CommandError::invalid(
                "callableName: a pause names a callable, a tenant, or both",
            )),
            Some(c) if c.is_empty() || c.len() > MAX_CALLABLE => {
                Err(CommandError::invalid(format!(
                    "callableName: takes 1 to {MAX_CALLABLE} bytes, not {}",
                    c.len()
                )))
            }
            _ => Ok(()),
        }
    }

    /// Whether work of `tenant` and `callable` is in the scope.
    pub fn holds(&self, tenant: &TenantId, callable: &str) -> bool {
        self.tenant_id.as_ref().is_none_or(|t| t == tenant)
            && self.callable_name.as_deref().is_none_or(|c| c == callable)
    }

    /// Whether the scope is all of `tenant`'s work.
    fn is_tenant(&self, tenant: &TenantId) -> bool {
        self.callable_name.is_none() && self.tenant_id.as_ref() == Some(tenant)
    }
}

impl std::fmt::Display for PauseScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.tenant_id, &self.callable_name) {
            (Some(t), Some(c)) => write!(f, "tenant {t}'s callable {c}"),
            (Some(t), None) => write!(f, "tenant {t}"),
            (None, Some(c)) => write!(f, "callable {c}"),
            (None, None) => f.write_str("nothing"),
        }
    }
}

/// A pause in force: what it holds, since when, who asked and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Pause {
    /// What it holds.
    #[serde(flatten)]
    pub scope: PauseScope,
    /// The seq of its `paused` entry.
    pub since_seq: u64,
    /// When it was recorded.
    pub since: DateTime<Utc>,
    /// Who asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Why, when they said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The pauses in force, by scope: the projection's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pauses(BTreeMap<PauseScope, Pause>);

impl Pauses {
    /// Checks `control` against the pauses in force: a pause of what is
    /// paused already, or a resume of what is not, is refused.
    ///
    /// # Errors
    ///
    /// `PauseConflict`, saying which.
    pub(crate) fn check(&self, control: &Control) -> Result<(), CommandError> {
        match &control.kind {
            ControlKind::Paused { scope, .. } => match self.0.get(scope) {
                Some(p) => Err(CommandError::PauseConflict(format!(
                    "{scope} is paused already (since seq {})",
                    p.since_seq
                ))),
                None => Ok(()),
            },
            ControlKind::Resumed { scope, .. } => match self.0.contains_key(scope) {
                true => Ok(()),
                false => Err(CommandError::PauseConflict(format!(
                    "{scope} is not paused"
                ))),
            },
        }
    }

    /// Folds `control` in; answers the pause it began or ended.
    ///
    /// # Errors
    ///
    /// As [`check`](Self::check); nothing changes.
    pub(crate) fn apply(&mut self, control: &Control) -> Result<Pause, CommandError> {
        self.check(control)?;
        Ok(match &control.kind {
            ControlKind::Paused { scope, by, reason } => {
                let pause = Pause {
                    scope: scope.clone(),
                    since_seq: control.seq,
                    since: control.at,
                    by: by.clone(),
                    reason: reason.clone(),
                };
                self.0.insert(scope.clone(), pause.clone());
                pause
            }
            ControlKind::Resumed { scope, .. } => {
                self.0.remove(scope).expect("checked: it is paused")
            }
        })
    }

    /// The pause that holds work of `tenant` and `callable`, if any (the
    /// earliest, when several do).
    pub(crate) fn holding(&self, tenant: &TenantId, callable: &str) -> Option<&Pause> {
        self.0
            .values()
            .filter(|p| p.scope.holds(tenant, callable))
            .min_by_key(|p| p.since_seq)
    }

    /// Whether all of `tenant`'s work is held.
    pub(crate) fn holds_tenant(&self, tenant: &TenantId) -> bool {
        self.0.keys().any(|s| s.is_tenant(tenant))
    }

    /// Whether any pause holds part of a tenant's work by callable (claims
    /// then look at each execution's callable).
    pub(crate) fn by_callable(&self) -> bool {
        self.0.keys().any(|s| s.callable_name.is_some())
    }

    /// The pauses in force, by scope.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Pause> + '_ {
        self.0.values()
    }

    /// Pauses as a snapshot keeps them.
    pub(crate) fn kept(&self) -> Vec<Pause> {
        self.0.values().cloned().collect()
    }

    /// Pauses from a snapshot.
    pub(crate) fn restore(kept: Vec<Pause>) -> Self {
        Pauses(kept.into_iter().map(|p| (p.scope.clone(), p)).collect())
    }

    /// How these differ from `other`, if they do (for messages).
    pub(crate) fn difference(&self, other: &Pauses) -> Option<String> {
        (self != other).then(|| {
            let names = |p: &Pauses| p.0.keys().map(|s| s.to_string()).collect::<Vec<_>>();
            format!("pauses {:?} against {:?}", names(self), names(other))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> TenantId {
        name.parse().unwrap()
    }

    fn entry(seq: u64, kind: ControlKind) -> Control {
        Control {
            seq,
            at: Utc::now(),
            kind,
        }
    }

    fn paused(scope: &PauseScope, seq: u64) -> Control {
        entry(
            seq,
            ControlKind::Paused {
                scope: scope.clone(),
                by: Some("ops".into()),
                reason: Some("downstream outage".into()),
            },
        )
    }

    fn resumed(scope: &PauseScope, seq: u64) -> Control {
        entry(
            seq,
            ControlKind::Resumed {
                scope: scope.clone(),
                by: None,
                reason: None,
            },
        )
    }

    #[test]
    fn a_scope_names_a_callable_a_tenant_or_both() {
        assert!(PauseScope::new(None, Some("resize".into())).check().is_ok());
        assert!(PauseScope::new(Some(t("acme")), None).check().is_ok());
        let none = PauseScope::new(None, None).check().unwrap_err().to_string();
        assert_eq!(
            none,
            "callableName: a pause names a callable, a tenant, or both"
        );
        let empty = PauseScope::new(None, Some(String::new())).check();
        assert_eq!(
            empty.unwrap_err().to_string(),
            "callableName: takes 1 to 256 bytes, not 0"
        );
        let both = PauseScope::new(Some(t("acme")), Some("resize".into()));
        assert!(both.holds(&t("acme"), "resize"));
        assert!(!both.holds(&t("acme"), "mail") && !both.holds(&t("globex"), "resize"));
    }

    #[test]
    fn a_pause_holds_its_scope_until_resumed_and_is_not_taken_twice() {
        let callable = PauseScope::new(None, Some("resize".into()));
        let tenant = PauseScope::new(Some(t("acme")), None);
        let mut pauses = Pauses::default();
        pauses.apply(&paused(&callable, 3)).unwrap();
        assert_eq!(
            pauses.holding(&t("globex"), "resize").map(|p| p.since_seq),
            Some(3)
        );
        assert!(pauses.holding(&t("globex"), "mail").is_none());
        assert!(pauses.by_callable() && !pauses.holds_tenant(&t("acme")));
        let again = pauses.apply(&paused(&callable, 4)).unwrap_err();
        assert_eq!(
            again.to_string(),
            "callable resize is paused already (since seq 3)"
        );
        pauses.apply(&paused(&tenant, 5)).unwrap();
        assert!(pauses.holds_tenant(&t("acme")));
        // The earliest of the pauses that hold it.
        assert_eq!(
            pauses.holding(&t("acme"), "resize").map(|p| p.since_seq),
            Some(3)
        );
        let ended = pauses.apply(&resumed(&callable, 6)).unwrap();
        assert_eq!(ended.reason.as_deref(), Some("downstream outage"));
        assert_eq!(
            pauses.holding(&t("acme"), "resize").map(|p| p.since_seq),
            Some(5)
        );
        let not = pauses.apply(&resumed(&callable, 7)).unwrap_err();
        assert_eq!(not.to_string(), "callable resize is not paused");
        let kept = Pauses::restore(pauses.kept());
        assert_eq!(kept, pauses);
        assert!(kept.difference(&pauses).is_none());
        assert!(Pauses::default().difference(&pauses).is_some());
    }
}
