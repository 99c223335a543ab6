//! The tenants' fair shares: `GET /v1/shares` lists them (a tenant key its
//! own), `PUT /v1/tenants/{tenant}/share` sets one and `DELETE` puts it
//! back to weight 1 and no limit (admin keys only: the shares are the
//! operator's).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::Json;
use execution_ledger::{CommandError, TenantShare};
use serde::Serialize;

use crate::backend::ShareOf;

use super::{admin_only, authorize, blocking, body_json, parse_tenant, ApiResult, Shared};

#[derive(Serialize)]
pub(super) struct Shares {
    shares: Vec<ShareOf>,
}

/// `GET /v1/shares`: the shares set, in tenant order.
pub(super) async fn list(
    State(state): State<Shared>,
    headers: HeaderMap,
) -> ApiResult<Json<Shares>> {
    let ledger = authorize(&state, &headers)?.ledger(&state);
    let shares = blocking(move || {
        let shares = ledger.tenant_shares()?;
        Ok::<_, execution_ledger::StorageError>(
            shares
                .into_iter()
                .map(|(t, share)| ShareOf::new(&ledger, t, share))
                .collect(),
        )
    })
    .await
    .map_err(CommandError::Storage)?;
    Ok(Json(Shares { shares }))
}

/// `PUT /v1/tenants/{tenant}/share`: `{"weight": N, "limit": N}`, each
/// taking its default when left out.
pub(super) async fn set(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath(tenant): UrlPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<ShareOf>> {
    admin_only(&state, &headers)?;
    let tenant = parse_tenant(&tenant)?;
    let share: TenantShare = body_json(body, false)?.expect("an empty body is refused");
    let now = state.ledger.set_tenant_share(&tenant, Some(share)).await?;
    Ok(Json(ShareOf::new(&state.ledger, tenant, now)))
}

/// `DELETE /v1/tenants/{tenant}/share`: back to weight 1 and no limit.
pub(super) async fn reset(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath(tenant): UrlPath<String>,
) -> ApiResult<Json<ShareOf>> {
    admin_only(&state, &headers)?;
    let tenant = parse_tenant(&tenant)?;
    let now = state.ledger.set_tenant_share(&tenant, None).await?;
    Ok(Json(ShareOf::new(&state.ledger, tenant, now)))
}
