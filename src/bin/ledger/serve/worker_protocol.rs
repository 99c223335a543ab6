//! The worker protocol: workers in any language claim under a lease
//! (long-polling), heartbeat, and complete or fail by attempt number.
//!
//! ```text
//! POST /v1/workers/claim                                {worker, callables, max?, waitMs?, leaseMs?}
//! POST /v1/workers/shutdown                             {worker}: its waiting claims answer at once
//! POST /v1/executions/{id}/attempts/{n}/heartbeat       {leaseMs?, progress?}
//! POST /v1/executions/{id}/attempts/{n}/complete        {output}
//! POST /v1/executions/{id}/attempts/{n}/fail            {error: {code, message}, retryable?}
//! GET  /v1/workers                                      callables no live worker runs
//! ```
//!
//! An answer for any attempt but the running one is `409 stale_attempt`,
//! naming the current attempt and status; an identical repeat of a
//! complete or fail is answered `200` as the first time.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use execution_ledger::{
    BackgroundExecution, Claim, CommandError, ExecutionError, ExecutionId, Heartbeat, Ledger,
    Refusal, DEFAULT_LEASE,
};
use serde::{Deserialize, Serialize};

use super::{
    authorize, blocking, body_json, caller, find, parse_id, ApiError, ApiResult, Shared, MAX_WAIT,
};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimBody {
    worker: String,
    callables: Vec<String>,
    #[serde(default)]
    max: Option<usize>,
    #[serde(default)]
    wait_ms: Option<u64>,
    #[serde(default)]
    lease_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ShutdownBody {
    worker: String,
}

#[derive(Serialize)]
pub(super) struct ShutdownAnswer {
    worker: String,
}

/// `POST /v1/workers/shutdown`: a worker that stops says so first; its
/// claims still waiting (in this process) answer at once with nothing, so
/// no attempt is claimed for a worker that would no longer read the
/// answer (see [`Runtime::worker_shutting_down`](execution_ledger::Runtime::worker_shutting_down)).
pub(super) async fn shutdown(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<ShutdownAnswer>> {
    let ledger = authorize(&state, &headers)?.ledger(&state);
    let body: ShutdownBody = body_json(body, false)?.expect("a body is required");
    state
        .runtime
        .worker_shutting_down(ledger.scope().cloned(), &body.worker)?;
    Ok(Json(ShutdownAnswer {
        worker: body.worker,
    }))
}

/// One claimed attempt: the execution record, and until when its lease
/// holds.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Attempt {
    #[serde(flatten)]
    execution: BackgroundExecution,
    lease_until: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
pub(super) struct Attempts {
    attempts: Vec<Attempt>,
}

pub(super) async fn claim(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Attempts>> {
    let ledger = authorize(&state, &headers)?.ledger(&state);
    let body: ClaimBody = body_json(body, false)?.expect("a body is required");
    let wait = Duration::from_millis(body.wait_ms.unwrap_or(0));
    if wait > MAX_WAIT {
        return Err(ApiError::bad(format!(
            "waitMs: at most {}, not {}",
            MAX_WAIT.as_millis(),
            wait.as_millis()
        )));
    }
    let lease = body.lease_ms.map_or(DEFAULT_LEASE, Duration::from_millis);
    let claim = Claim::new()
        .worker(body.worker)
        .callables(body.callables)
        .max(body.max.unwrap_or(1))
        .lease(lease);
    let claimed = state
        .runtime
        .claim_remote(ledger.scope().cloned(), claim, wait)
        .await?;
    let attempts = claimed
        .into_iter()
        .map(|execution| Attempt {
            lease_until: ledger.lease(execution.execution_id).map(|l| l.until),
            execution,
        })
        .collect();
    Ok(Json(Attempts { attempts }))
}

/// `{id}` and `{n}` of an attempt's path.
fn attempt_of(id: &str, n: &str) -> ApiResult<(ExecutionId, u32)> {
    let id = parse_id(id)?;
    let n = n.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
        ApiError::bad(format!("attempt must be a whole number from 1, not {n:?}"))
    })?;
    Ok((id, n))
}

/// A refused answer of attempt `n`: `409 stale_attempt` when the refusal is
/// that `n` is not the running attempt, naming the one that is and the
/// status; the error as it is otherwise.
async fn refused(ledger: &Ledger, id: ExecutionId, n: u32, e: CommandError) -> ApiError {
    let CommandError::Transition(t) = &e else {
        return e.into();
    };
    if !matches!(
        t.refusal,
        Refusal::StaleAttempt { .. } | Refusal::Status(_) | Refusal::NotLeased
    ) {
        return e.into();
    }
    match find(ledger, id, None).await {
        Ok(_) if matches!(t.refusal, Refusal::NotLeased) => ApiError::new(
            StatusCode::CONFLICT,
            "stale_attempt",
            format!(
                "attempt {n} of {id} is held without a lease by the process running it: it takes no heartbeat"
            ),
        ),
        Ok(now) => ApiError::new(
            StatusCode::CONFLICT,
            "stale_attempt",
            format!(
                "attempt {n} of {id} is not the running attempt: the execution is {} at attempt {}",
                now.status, now.attempt
            ),
        ),
        Err(other) => other,
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct HeartbeatBody {
    #[serde(default)]
    lease_ms: Option<u64>,
    #[serde(default)]
    progress: Option<serde_json::Value>,
}

pub(super) async fn heartbeat(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath((id, n)): UrlPath<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Heartbeat>> {
    let ledger = caller(&state, &headers)?.ledger(&state);
    let (id, n) = attempt_of(&id, &n)?;
    let body: HeartbeatBody = body_json(body, true)?.unwrap_or_default();
    find(&ledger, id, None).await?;
    let extend = body.lease_ms.map(Duration::from_millis);
    match state.runtime.heartbeat(id, n, extend, body.progress).await {
        Ok(beat) => Ok(Json(beat)),
        Err(e) => Err(refused(&ledger, id, n, e).await),
    }
}

#[derive(Deserialize)]
struct CompleteBody {
    output: serde_json::Value,
}

pub(super) async fn complete(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath((id, n)): UrlPath<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<BackgroundExecution>> {
    let ledger = caller(&state, &headers)?.ledger(&state);
    let (id, n) = attempt_of(&id, &n)?;
    let body: CompleteBody = body_json(body, false)?.expect("a body is required");
    find(&ledger, id, None).await?;
    match state.runtime.complete_attempt(id, n, body.output).await {
        Ok(e) => Ok(Json(e)),
        Err(e) => Err(refused(&ledger, id, n, e).await),
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
    #[serde(default)]
    details: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct FailBody {
    error: ErrorBody,
    #[serde(default = "retryable")]
    retryable: bool,
}

fn retryable() -> bool {
    true
}

pub(super) async fn fail(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath((id, n)): UrlPath<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<BackgroundExecution>> {
    let ledger = caller(&state, &headers)?.ledger(&state);
    let (id, n) = attempt_of(&id, &n)?;
    let body: FailBody = body_json(body, false)?.expect("a body is required");
    let ErrorBody {
        code,
        message,
        details,
    } = body.error;
    let mut error = ExecutionError::new(code, message);
    error.details = details;
    find(&ledger, id, None).await?;
    match state
        .runtime
        .fail_attempt(id, n, error, body.retryable)
        .await
    {
        Ok(e) => Ok(Json(e)),
        Err(e) => Err(refused(&ledger, id, n, e).await),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WorkersView {
    callables_without_worker: Vec<String>,
    leased_attempts: usize,
}

pub(super) async fn workers(
    State(state): State<Shared>,
    headers: HeaderMap,
) -> ApiResult<Json<WorkersView>> {
    let ledger = authorize(&state, &headers)?.ledger(&state);
    let view = blocking(move || WorkersView {
        callables_without_worker: ledger.callables_without_worker(),
        leased_attempts: ledger.leased(),
    })
    .await;
    Ok(Json(view))
}
