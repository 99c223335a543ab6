//! `/v1/schedules`: a tenant's recurring submissions — list, add, pause,
//! resume, remove. A tenant key reaches its own tenant's; an admin key names
//! the tenant (`tenantId`, in the body or the query), or lists every one's.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use execution_ledger::{Missed, NewSchedule, Schedule, Submission, TenantId};
use serde::{Deserialize, Serialize};

use crate::backend::ScheduleChange as Change;

use super::{
    authorize, blocking, body_json, submitting_for, ApiError, ApiQuery, ApiResult, Shared, Who,
};

/// `?tenantId=T`: whose schedule (an admin key names it).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TenantQuery {
    tenant_id: Option<TenantId>,
}

#[derive(Serialize)]
pub(super) struct Schedules {
    schedules: Vec<Schedule>,
}

/// `GET /v1/schedules[?tenantId=T]`.
pub(super) async fn list(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<Schedules>> {
    let who = authorize(&state, &headers)?;
    let ledger = match (&who, q.tenant_id) {
        (Who::Admin, None) => state.ledger.clone(),
        (Who::Admin, Some(t)) => state.ledger.tenant(t),
        // A tenant key names only its own tenant.
        (Who::Tenant(_), named) => state.ledger.tenant(submitting_for(&who, named)?),
    };
    let schedules = blocking(move || ledger.schedules())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(Schedules { schedules }))
}

/// The body of `POST /v1/schedules`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AddBody {
    name: String,
    cron: String,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    missed: Option<Missed>,
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    tenant_id: Option<TenantId>,
    submission: Submission,
}

/// `POST /v1/schedules`: 201 with the schedule.
pub(super) async fn add(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Schedule>)> {
    let who = authorize(&state, &headers)?;
    let body: AddBody = body_json(body, false)?.expect("a body is required");
    let tenant = submitting_for(&who, body.tenant_id)?;
    let mut new = NewSchedule::new(body.name, body.cron, body.submission)
        .missed(body.missed.unwrap_or_default());
    if let Some(tz) = body.timezone {
        new = new.timezone(tz);
    }
    if let Some(by) = body.by {
        new = new.by(by);
    }
    let added = state.ledger.add_schedule(Some(&tenant), new).await?;
    Ok((StatusCode::CREATED, Json(added)))
}

async fn change(
    state: Shared,
    headers: HeaderMap,
    name: String,
    tenant: Option<TenantId>,
    change: Change,
) -> ApiResult<Json<Schedule>> {
    let who = authorize(&state, &headers)?;
    let tenant = submitting_for(&who, tenant)?;
    Ok(Json(change.on(&state.ledger, &tenant, &name).await?))
}

/// `DELETE /v1/schedules/{name}[?tenantId=T]`: the schedule removed.
pub(super) async fn remove(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<Schedule>> {
    change(state, headers, name, q.tenant_id, Change::Remove).await
}

/// `POST /v1/schedules/{name}/pause[?tenantId=T]`.
pub(super) async fn pause(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<Schedule>> {
    change(state, headers, name, q.tenant_id, Change::Pause).await
}

/// `POST /v1/schedules/{name}/resume[?tenantId=T]`.
pub(super) async fn resume(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<Schedule>> {
    change(state, headers, name, q.tenant_id, Change::Resume).await
}
