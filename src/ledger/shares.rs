//! Tenants' fair shares (`fair.rs`): weights and concurrency limits, kept
//! beside the log, set under the ledger's lock (on PostgreSQL in the
//! transaction that holds the log's end) and read into the projection,
//! which orders the queue by them. On a log other processes share, each
//! process reads them again at most a second after another set them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Command, Core, Inner, Ledger};
use crate::error::{CommandError, ErrorKind, StorageError};
use crate::fair::{Shares, TenantShare};
use crate::ids::TenantId;
use crate::store::{Beside, Store};

/// How long a process sharing the log orders by the shares it last read.
const REREAD: Duration = Duration::from_secs(1);

/// The shares `log` keeps, in tenant order.
pub(super) fn kept(log: &dyn Store) -> Result<Vec<(TenantId, TenantShare)>, StorageError> {
    log.beside(Beside::TenantShare)?
        .into_iter()
        .map(|(tenant, json)| {
            let damaged = |e: &dyn std::fmt::Display| {
                StorageError::new(
                    ErrorKind::Corrupt,
                    format!("the share of tenant {tenant} is damaged: {e}"),
                )
            };
            let t: TenantId = tenant.parse().map_err(|e| damaged(&e))?;
            let share: TenantShare = serde_json::from_slice(&json).map_err(|e| damaged(&e))?;
            Ok((t, share))
        })
        .collect()
}

/// The shares `log` keeps, for the projection.
pub(super) fn read(log: &dyn Store) -> Result<Arc<Shares>, StorageError> {
    Ok(Arc::new(Shares::new(kept(log)?)))
}

impl Inner {
    /// On a log other processes share, reads the shares again when they
    /// were read more than [`REREAD`] ago (a failed read keeps the old).
    pub(super) fn reread_shares(&self, core: &mut Core) {
        if !self.log.shared() || core.shares_read.elapsed() < REREAD {
            return;
        }
        core.shares_read = Instant::now();
        match read(&*self.log) {
            Ok(shares) => core.projection.set_shares(shares),
            Err(e) => tracing::warn!(error = %e, "cannot read the tenants' shares"),
        }
    }
}

impl Ledger {
    /// Sets `tenant`'s share of the workers (`None`: back to weight 1 and
    /// no limit); claims follow it from the next one on. Answers the share
    /// now in force.
    ///
    /// # Errors
    ///
    /// `Invalid` for a weight outside 1 to [`crate::MAX_WEIGHT`], a limit
    /// of 0, or a handle scoped to a tenant (shares are the operator's);
    /// `Storage`.
    pub fn set_tenant_share(
        &self,
        tenant: &TenantId,
        share: Option<TenantShare>,
    ) -> Command<TenantShare> {
        let checked = share
            .as_ref()
            .map_or(Ok(()), TenantShare::check)
            .and_then(|()| match self.scope {
                Some(_) => Err(CommandError::invalid(
                    "tenant: a handle scoped to a tenant cannot set shares",
                )),
                None => Ok(()),
            });
        if let Err(e) = checked {
            return Command::refused(&self.inner, e);
        }
        let tenant = tenant.clone();
        Command::new(&self.inner, move |inner, core| {
            inner.refresh(core);
            let json = share
                .as_ref()
                .filter(|s| **s != TenantShare::default())
                .map(|s| serde_json::to_vec(s).expect("a share serializes"));
            // The others, as committed (the put is committed with the group).
            let mut shares: Vec<(TenantId, TenantShare)> = kept(&*inner.log)?
                .into_iter()
                .filter(|(t, _)| *t != tenant)
                .collect();
            inner
                .log
                .put_beside(Beside::TenantShare, tenant.as_str(), json.as_deref())?;
            let now = share.unwrap_or_default();
            shares.push((tenant.clone(), now));
            core.projection.set_shares(Arc::new(Shares::new(shares)));
            core.shares_read = Instant::now();
            tracing::info!(%tenant, weight = now.weight, limit = now.limit, "set a tenant's share");
            // Answered once the group that holds it commits.
            Ok((now, core.head.0))
        })
    }

    /// The shares set for tenants, in tenant order (a tenant not listed
    /// has weight 1 and no limit); a handle scoped to a tenant sees its
    /// own only.
    ///
    /// # Errors
    ///
    /// `Storage` for a share that cannot be read.
    pub fn tenant_shares(&self) -> Result<Vec<(TenantId, TenantShare)>, StorageError> {
        let shares = kept(&*self.inner.log)?;
        Ok(match self.scope.as_ref() {
            Some(scope) => shares.into_iter().filter(|(t, _)| t == scope).collect(),
            None => shares,
        })
    }
}
