//! `/v1/pauses`: work held in the queue. `GET` lists the pauses in force
//! (or at `atSeq`/`atTime`; a tenant key those that hold its work),
//! `POST /v1/pauses` pauses a scope and `POST /v1/pauses/resume` resumes
//! one (a tenant key its own work only), each recorded with who asked.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use execution_ledger::{Pause, PauseScope};
use serde::{Deserialize, Serialize};

use super::{
    asked_by, authorize, blocking, body_json, ApiError, ApiQuery, ApiResult, AtQuery, Shared,
};

#[derive(Serialize)]
pub(super) struct Pauses {
    pauses: Vec<Pause>,
}

/// The body of a pause or a resume.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct PauseBody {
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    callable_name: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    by: Option<String>,
}

/// `GET /v1/pauses[?atSeq=N|atTime=T]`: the pauses in force, by scope.
pub(super) async fn list(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<AtQuery>,
) -> ApiResult<Json<Pauses>> {
    let ledger = authorize(&state, &headers)?.ledger(&state);
    let at = q.at()?;
    let pauses = blocking(move || match at {
        None => Ok(ledger.pauses()),
        Some(at) => ledger.pauses_at(at),
    })
    .await?;
    Ok(Json(Pauses { pauses }))
}

/// `POST /v1/pauses`: 201 with the pause.
pub(super) async fn pause(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Pause>)> {
    let p = change(state, headers, body, true).await?;
    Ok((StatusCode::CREATED, Json(p)))
}

/// `POST /v1/pauses/resume`: the pause it ended.
pub(super) async fn resume(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Pause>> {
    Ok(Json(change(state, headers, body, false).await?))
}

async fn change(
    state: Shared,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    pause: bool,
) -> ApiResult<Pause> {
    let who = authorize(&state, &headers)?;
    let ledger = who.ledger(&state);
    let body: PauseBody = body_json(body, false)?.expect("an empty body is refused");
    let tenant = body
        .tenant_id
        .map(|t| t.parse())
        .transpose()
        .map_err(|e: execution_ledger::ParseIdError| ApiError::bad(format!("tenantId: {e}")))?;
    let scope = PauseScope::new(tenant, body.callable_name);
    let by = asked_by(&who, body.by);
    Ok(match pause {
        true => ledger.pause(scope, body.reason, by).await?,
        false => ledger.resume(scope, body.reason, by).await?,
    })
}
