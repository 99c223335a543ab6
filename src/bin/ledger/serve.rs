//! `ledger serve`: the runtime's workers plus a JSON HTTP API over the
//! running ledger, with API keys mapped to tenants.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path as UrlPath, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use execution_ledger::{
    At, BackgroundExecution, CommandError, Cursor, ExecutionId, Ledger, ListFilter, ListPage,
    Runtime, Submission, TenantId,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::backend::{Retention, Served, SERVE_FILE};
use crate::cli::{Cli, Usage};
use crate::decode::{self, RefusedKind};

mod console;
mod metrics;
mod pauses;
mod schedules;
mod shares;
mod worker_protocol;

/// The largest request body accepted, in bytes (413 above).
pub(crate) const MAX_BODY_BYTES: usize = 512 * 1024;
/// The longest `wait` of a result long-poll.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Who a request acts as.
#[derive(Clone, Debug, PartialEq)]
enum Who {
    Admin,
    Tenant(TenantId),
}

impl Who {
    /// The ledger as this caller sees it: a tenant key's is scoped to its
    /// tenant, so commands and reads of one execution find only that
    /// tenant's executions (another's is not found), and the queue is
    /// that tenant's.
    fn ledger(&self, state: &AppState) -> Ledger {
        match self {
            Who::Admin => state.ledger.clone(),
            Who::Tenant(t) => state.ledger.tenant(t.clone()),
        }
    }
}

/// Whether the caller whose ledger is `ledger` is shown a record of
/// `tenant`'s in what spans the whole log (the event stream, diff): the
/// ledger answers those whole, so a tenant key's view is filtered here.
fn shows(ledger: &Ledger, tenant: &TenantId) -> bool {
    ledger.scope().is_none_or(|t| t == tenant)
}

#[derive(Deserialize)]
struct KeysFile {
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
struct KeyEntry {
    #[serde(default)]
    tenant: Option<TenantId>,
    #[serde(default)]
    admin: bool,
    sha256: String,
}

/// API keys by the hex SHA-256 of the key.
pub(crate) struct Keys(HashMap<String, Who>);

impl Keys {
    fn load(path: &Path) -> Result<Keys> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the keys file {}", path.display()))?;
        // What is wrong with the file is a wrong --keys: a usage error.
        let refuse = |what: String| Usage(format!("{}: {what}", path.display()));
        let file: KeysFile =
            decode::json(text.as_bytes(), "the file").map_err(|e| refuse(e.message))?;
        if file.keys.is_empty() {
            bail!(refuse(
                "no keys: a keys file names at least one key (a tenant's or an admin's)".into()
            ));
        }
        let mut keys = HashMap::new();
        for (i, k) in file.keys.into_iter().enumerate() {
            let who = match (k.admin, k.tenant) {
                (true, None) => Who::Admin,
                (false, Some(t)) => Who::Tenant(t),
                _ => bail!(refuse(format!(
                    "key {} must have either a tenant or \"admin\": true",
                    i + 1
                ))),
            };
            let hash = k.sha256.to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!(refuse(format!(
                    "key {} has no valid sha256 (64 hex digits)",
                    i + 1
                )));
            }
            keys.insert(hash, who);
        }
        Ok(Keys(keys))
    }
}

struct AppState {
    ledger: Ledger,
    runtime: Arc<Runtime>,
    keys: Option<Keys>,
    stopping: AtomicBool,
    http: metrics::Http,
}

type Shared = Arc<AppState>;

/// An error as the API answers it: `{"error": {"code", "message"}}`.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid", message)
    }

    fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

impl From<decode::Refused> for ApiError {
    fn from(r: decode::Refused) -> Self {
        match r.kind {
            RefusedKind::Unknown => ApiError::bad(r.message),
            RefusedKind::Syntax | RefusedKind::Field => {
                ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", r.message)
            }
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        let message = e.to_string();
        match e {
            CommandError::NotFound(_) | CommandError::NoSchedule { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
            }
            CommandError::ScheduleConflict(_) | CommandError::PauseConflict(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            CommandError::Transition(_) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            CommandError::Archived(_) => ApiError::new(StatusCode::CONFLICT, "archived", message),
            CommandError::IdempotencyConflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, "idempotency_conflict", message)
            }
            CommandError::Invalid(_) => ApiError::bad(message),
            CommandError::Unsupported(_) => {
                ApiError::new(StatusCode::NOT_IMPLEMENTED, "not_implemented", message)
            }
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Runs a ledger call on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("a ledger call does not panic")
}

fn authorize(state: &AppState, headers: &HeaderMap) -> ApiResult<Who> {
    if state.stopping.load(Ordering::SeqCst) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        ));
    }
    caller(state, headers)
}

/// Who a request acts as, by its key, also while the server stops: a
/// worker's answer for a running attempt is taken during the grace, as an
/// in-process attempt's is.
fn caller(state: &AppState, headers: &HeaderMap) -> ApiResult<Who> {
    let Some(keys) = &state.keys else {
        return Ok(Who::Admin);
    };
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing Authorization: Bearer KEY",
            )
        })?;
    // The scheme is case-insensitive (RFC 7235).
    let key = header
        .trim_start()
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the Authorization header must be Bearer KEY",
            )
        })?;
    let hash = Sha256::digest(key.as_bytes());
    let hex = hash.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    keys.0
        .get(&hex)
        .cloned()
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown API key"))
}

/// What spans every tenant (the whole log, its head, its figures) is for
/// admin keys only.
fn admin_only(state: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    match authorize(state, headers)? {
        Who::Admin => Ok(()),
        Who::Tenant(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this endpoint spans every tenant: it takes an admin key",
        )),
    }
}

/// A body as bytes, refused when it is too large or cannot be read.
fn body_bytes(body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is over {MAX_BODY_BYTES} bytes"),
            )
        } else {
            ApiError::bad("the body could not be read")
        }
    })
}

/// A JSON body as `T`, refusing fields `T` does not know; `None` for an
/// empty body when `allow_empty`.
fn body_json<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    allow_empty: bool,
) -> ApiResult<Option<T>> {
    let bytes = body_bytes(body)?;
    if bytes.is_empty() && allow_empty {
        return Ok(None);
    }
    Ok(Some(decode::json(&bytes, "the body")?))
}

/// A body that takes no fields: empty, or `{}`.
#[derive(Deserialize, Default)]
struct NoFields {}

/// A query string as `T`, refusing keys `T` does not know, with messages
/// that name the key.
struct ApiQuery<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        Ok(ApiQuery(
            decode::query(query).map_err(|r| ApiError::bad(r.message))?,
        ))
    }
}

fn parse_id(id: &str) -> ApiResult<ExecutionId> {
    id.parse()
        .map_err(|e: execution_ledger::ParseIdError| ApiError::bad(e.to_string()))
}

async fn submit(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let who = authorize(&state, &headers)?;
    // A submission and its tenant. The submission is what the `queued`
    // event records, so it is read from the body less `tenantId`, which
    // lets every other field it does not know be refused.
    let mut body = decode::json_object(&body_bytes(body)?, "the body")?;
    let tenant = body
        .as_object_mut()
        .and_then(|fields| fields.remove("tenantId"))
        .unwrap_or_default();
    let tenant_id: Option<TenantId> = decode::value_at(&tenant, "tenantId")?;
    let submission: Submission = decode::value(&body)?;
    let tenant = submitting_for(&who, tenant_id)?;
    let submitted = state.runtime.submit_detached(&tenant, submission).await?;
    let status = if submitted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let record = submitted.execution;
    Ok((status, Json(record)).into_response())
}

/// The tenant a submit is for: the one an admin key names, a tenant key's
/// own.
fn submitting_for(who: &Who, named: Option<TenantId>) -> ApiResult<TenantId> {
    match (who, named) {
        (Who::Admin, Some(t)) => Ok(t),
        (Who::Admin, None) => Err(ApiError::bad(
            "tenantId is missing: an admin key submits for the tenant it names",
        )),
        (Who::Tenant(t), None) => Ok(t.clone()),
        (Who::Tenant(t), Some(other)) if &other == t => Ok(other),
        (Who::Tenant(_), Some(_)) => Err(ApiError::bad("tenantId must be the key's own tenant")),
    }
}

/// The body of a batch submit.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchBody {
    executions: Vec<serde_json::Value>,
    tenant_id: Option<TenantId>,
}

/// `POST /v1/executions/batch`: one tenant's submissions, appended as one
/// group (one sync) or refused whole, the first bad one named by its index.
async fn submit_batch(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let who = authorize(&state, &headers)?;
    let body = decode::json_object(&body_bytes(body)?, "the body")?;
    let batch: BatchBody = decode::value(&body)?;
    let tenant = submitting_for(&who, batch.tenant_id)?;
    let submissions = batch
        .executions
        .iter()
        .enumerate()
        .map(|(i, item)| decode::value_at::<Submission>(item, &format!("executions[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let submitted = state
        .runtime
        .submit_many_detached(&tenant, submissions)
        .await?;
    let status = if submitted.iter().any(|s| s.created) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let records: Vec<_> = submitted.into_iter().map(|s| s.execution).collect();
    Ok((status, Json(serde_json::json!({ "executions": records }))).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AtQuery {
    at_seq: Option<u64>,
    at_time: Option<String>,
}

impl AtQuery {
    fn at(&self) -> ApiResult<Option<At>> {
        match (self.at_seq, &self.at_time) {
            (Some(_), Some(_)) => Err(ApiError::bad("give atSeq or atTime, not both")),
            (Some(seq), None) => Ok(Some(At::Seq(seq))),
            (None, Some(t)) => DateTime::parse_from_rfc3339(t)
                .map(|t| Some(At::Time(t.with_timezone(&Utc))))
                .map_err(|e| ApiError::bad(format!("atTime is not an RFC 3339 time ({e}): {t:?}"))),
            (None, None) => Ok(None),
        }
    }
}

/// One execution, now or at a point in the log, as `ledger` (the
/// caller's) finds it.
async fn find(ledger: &Ledger, id: ExecutionId, at: Option<At>) -> ApiResult<BackgroundExecution> {
    let ledger = ledger.clone();
    Ok(match at {
        None => blocking(move || ledger.get(id)).await?,
        Some(at) => blocking(move || ledger.execution_at(id, at))
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    crate::backend::not_yet(id, at),
                )
            })?,
    })
}

async fn show(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    ApiQuery(q): ApiQuery<AtQuery>,
) -> ApiResult<Json<BackgroundExecution>> {
    let ledger = authorize(&state, &headers)?.ledger(&state);
    let id = parse_id(&id)?;
    Ok(Json(find(&ledger, id, q.at()?).await?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    status: Option<String>,
    tenant_id: Option<String>,
    callable_name: Option<String>,
    since: Option<String>,
    until: Option<String>,
    id: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

impl ListQuery {
    fn filter(&self) -> ApiResult<(ListFilter, Option<Cursor>, usize)> {
        let bad = |e: execution_ledger::ParseIdError| ApiError::bad(e.to_string());
        let time = |name: &str, t: &Option<String>| -> ApiResult<Option<DateTime<Utc>>> {
            t.as_deref()
                .map(|t| {
                    DateTime::parse_from_rfc3339(t)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|e| {
                            ApiError::bad(format!("{name} is not an RFC 3339 time ({e}): {t:?}"))
                        })
                })
                .transpose()
        };
        let mut filter = ListFilter::new();
        if let Some(statuses) = &self.status {
            filter.statuses = statuses
                .split(',')
                .map(|s| {
                    s.parse().map_err(|_| {
                        ApiError::bad(format!(
                            "status takes one or more of {}, comma-separated: {:?}",
                            crate::output::statuses(),
                            crate::output::clip(s, 60)
                        ))
                    })
                })
                .collect::<ApiResult<_>>()?;
        }
        filter.tenant = self
            .tenant_id
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(bad)?;
        filter.callable = self.callable_name.clone();
        filter.since = time("since", &self.since)?;
        filter.until = time("until", &self.until)?;
        filter.id = self.id.as_deref().map(parse_id).transpose()?;
        let cursor = self
            .cursor
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(bad)?;
        Ok((filter, cursor, self.limit.unwrap_or(ListPage::DEFAULT_LEN)))
    }
}

/// A page of executions as the API answers it.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct PageBody {
    executions: Vec<BackgroundExecution>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// A page of executions, newest submission first, with the cursor of the
/// next page when one can follow.
async fn list(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<PageBody>> {
    let ledger = authorize(&state, &headers)?.ledger(&state);
    let (filter, cursor, limit) = q.filter()?;
    let page = blocking(move || ledger.list(&filter, cursor, limit)).await?;
    Ok(Json(PageBody {
        executions: page.executions,
        next_cursor: page.next.map(|c| c.to_string()),
    }))
}

/// Every execution live at a point of the log (now, without one).
async fn live(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<AtQuery>,
) -> ApiResult<Json<Vec<BackgroundExecution>>> {
    let ledger = authorize(&state, &headers)?.ledger(&state);
    let at = q.at()?;
    Ok(Json(
        blocking(move || match at {
            Some(at) => ledger.live_at(at),
            None => Ok(ledger.live()),
        })
        .await?,
    ))
}

async fn history(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Vec<execution_ledger::Event>>> {
    let ledger = authorize(&state, &headers)?.ledger(&state);
    let id = parse_id(&id)?;
    Ok(Json(blocking(move || ledger.history(id)).await?))
}

#[derive(Deserialize, Default)]
struct CancelBody {
    #[serde(default)]
    reason: Option<String>,
}

async fn cancel(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<BackgroundExecution>> {
    let ledger = authorize(&state, &headers)?.ledger(&state);
    let id = parse_id(&id)?;
    let body: CancelBody = body_json(body, true)?.unwrap_or_default();
    // The runtime (which tells a running attempt to stop) acts on the
    // whole ledger: the caller's finds the execution first.
    find(&ledger, id, None).await?;
    Ok(Json(state.runtime.cancel(id, body.reason).await?))
}

/// The body of a redaction or legal hold request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionBody {
    reason: String,
    #[serde(default)]
    by: Option<String>,
}

async fn redact(
    state: State<Shared>,
    headers: HeaderMap,
    id: UrlPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<BackgroundExecution>> {
    retain(state, headers, id, body, Retention::Redact).await
}

async fn hold(
    state: State<Shared>,
    headers: HeaderMap,
    id: UrlPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<BackgroundExecution>> {
    retain(state, headers, id, body, Retention::Hold).await
}

async fn release_hold(
    state: State<Shared>,
    headers: HeaderMap,
    id: UrlPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<BackgroundExecution>> {
    retain(state, headers, id, body, Retention::ReleaseHold).await
}

async fn hold_tenant(
    state: State<Shared>,
    headers: HeaderMap,
    tenant: UrlPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<execution_ledger::TenantHold>> {
    retain_tenant(state, headers, tenant, body, Retention::Hold).await
}

async fn release_tenant_hold(
    state: State<Shared>,
    headers: HeaderMap,
    tenant: UrlPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<execution_ledger::TenantHold>> {
    retain_tenant(state, headers, tenant, body, Retention::ReleaseHold).await
}

/// Puts a whole tenant under legal hold, or releases its hold (admin
/// only: a tenant does not release its own), recorded as asked by
/// `api:admin`, or by the `by` given via it.
async fn retain_tenant(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath(tenant): UrlPath<String>,
    body: Result<Bytes, BytesRejection>,
    what: Retention,
) -> ApiResult<Json<execution_ledger::TenantHold>> {
    admin_only(&state, &headers)?;
    let tenant = parse_tenant(&tenant)?;
    let body: RetentionBody = body_json(body, false)?.expect("an empty body is refused");
    let by = Some(match body.by {
        Some(by) if !by.trim().is_empty() => format!("{by} (via api:admin)"),
        Some(blank) => blank,
        None => "api:admin".to_owned(),
    });
    let done = match what {
        Retention::ReleaseHold => state.ledger.release_tenant_hold(&tenant, body.reason, by),
        _ => state.ledger.hold_tenant(&tenant, body.reason, by),
    }
    .await;
    Ok(Json(done?))
}

/// A tenant named in a path.
fn parse_tenant(tenant: &str) -> ApiResult<TenantId> {
    tenant
        .parse()
        .map_err(|e: execution_ledger::ParseIdError| ApiError::bad(format!("tenant: {e}")))
}

/// The tenants under legal hold (admin only).
async fn tenant_holds(
    State(state): State<Shared>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    admin_only(&state, &headers)?;
    let shared = state.clone();
    let holds = blocking(move || shared.ledger.tenant_holds())
        .await
        .map_err(CommandError::Storage)?;
    Ok(Json(serde_json::json!({ "holds": holds })))
}

/// Redacts, holds or releases the hold of one execution of the caller's,
/// recorded as asked by the caller (`api:admin`, or `api:` and its
/// tenant), or by the `by` given via the caller.
async fn retain(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Result<Bytes, BytesRejection>,
    what: Retention,
) -> ApiResult<Json<BackgroundExecution>> {
    let who = authorize(&state, &headers)?;
    let ledger = who.ledger(&state);
    let id = parse_id(&id)?;
    let body: RetentionBody = body_json(body, false)?.expect("an empty body is refused");
    let by = asked_by(&who, body.by);
    let reason = body.reason;
    let done = match what {
        Retention::Redact => ledger.redact(id, reason, by).await,
        Retention::Hold => ledger.hold(id, reason, by).await,
        Retention::ReleaseHold => ledger.release_hold(id, reason, by).await,
    };
    Ok(Json(done?))
}

/// Who a command records as asking: the caller is always named
/// (`api:admin`, or `api:` and its tenant); a `by` of its own says for whom
/// it asks.
fn asked_by(who: &Who, by: Option<String>) -> Option<String> {
    let caller = match who {
        Who::Admin => "api:admin".to_owned(),
        Who::Tenant(t) => format!("api:{t}"),
    };
    Some(match by {
        Some(by) if !by.trim().is_empty() => format!("{by} (via {caller})"),
        // Refused by the command's checks, which name the field.
        Some(blank) => blank,
        None => caller,
    })
}

/// The body of a retry by hand of one execution (all optional).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    attempts: Option<u32>,
}

impl RetryBody {
    fn retry(self, who: &Who) -> execution_ledger::Retry {
        let mut retry = execution_ledger::Retry::new();
        if let Some(reason) = self.reason {
            retry = retry.reason(reason);
        }
        if let Some(by) = asked_by(who, self.by) {
            retry = retry.by(by);
        }
        if let Some(n) = self.attempts {
            retry = retry.attempts(n);
        }
        retry
    }
}

/// Retries a failed, timed-out or cancelled execution by hand: 201 with
/// the new run.
async fn retry(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<BackgroundExecution>)> {
    let who = authorize(&state, &headers)?;
    let ledger = who.ledger(&state);
    let id = parse_id(&id)?;
    let body: RetryBody = body_json(body, true)?.unwrap_or_default();
    let new = ledger.retry(id, body.retry(&who)).await?;
    Ok((StatusCode::CREATED, Json(new)))
}

/// The body of a bulk retry: the filter (as `GET /v1/executions` takes
/// it), the retry, and whether only to count.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RetryAllBody {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    callable_name: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    attempts: Option<u32>,
}

/// Retries by hand every execution of the caller's that passes a filter
/// and can be retried (or with `dryRun`, counts them).
async fn retry_all(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<execution_ledger::RetryReport>> {
    let who = authorize(&state, &headers)?;
    let ledger = who.ledger(&state);
    let body: RetryAllBody = body_json(body, false)?.expect("an empty body is refused");
    let (filter, ..) = ListQuery {
        status: body.status,
        tenant_id: body.tenant_id,
        callable_name: body.callable_name,
        since: body.since,
        until: body.until,
        id: None,
        limit: None,
        cursor: None,
    }
    .filter()?;
    let dry_run = body.dry_run;
    let retry = RetryBody {
        reason: body.reason,
        by: body.by,
        attempts: body.attempts,
    }
    .retry(&who);
    let report = blocking(move || ledger.retry_matching(&filter, &retry, dry_run)).await?;
    Ok(Json(report))
}

async fn release(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<BackgroundExecution>> {
    let ledger = authorize(&state, &headers)?.ledger(&state);
    let id = parse_id(&id)?;
    let _: Option<NoFields> = body_json(body, true)?;
    // As for cancel: the runtime (which wakes a worker) acts on the whole
    // ledger.
    find(&ledger, id, None).await?;
    Ok(Json(state.runtime.release(id).await?))
}

#[derive(Deserialize)]
struct WaitQuery {
    wait: Option<String>,
}

/// `30s`, `500ms`, or a number of seconds; at most [`MAX_WAIT`].
fn parse_wait(s: &str) -> ApiResult<Duration> {
    let bad = || ApiError::bad(format!("wait must be like 30s or 500ms, not {s:?}"));
    let d = if let Some(ms) = s.strip_suffix("ms") {
        Duration::from_millis(ms.parse().map_err(|_| bad())?)
    } else {
        let secs: f64 = s
            .strip_suffix('s')
            .unwrap_or(s)
            .parse()
            .map_err(|_| bad())?;
        if !(secs.is_finite() && secs >= 0.0) {
            return Err(bad());
        }
        // Longer than any Duration is longer than MAX_WAIT too.
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    };
    if d > MAX_WAIT {
        return Err(ApiError::bad(format!(
            "wait: at most {}s, not {s:?}",
            MAX_WAIT.as_secs()
        )));
    }
    Ok(d)
}

async fn result(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> ApiResult<Response> {
    let ledger = authorize(&state, &headers)?.ledger(&state);
    let id = parse_id(&id)?;
    let wait = q
        .wait
        .as_deref()
        .map(parse_wait)
        .transpose()?
        .unwrap_or(Duration::ZERO);
    let now = find(&ledger, id, None).await?;
    if now.is_finished() {
        return Ok((StatusCode::OK, Json(now)).into_response());
    }
    match tokio::time::timeout(wait, state.runtime.result(id)).await {
        Ok(Ok(Some(done))) => Ok((StatusCode::OK, Json(done)).into_response()),
        Ok(Err(e)) => Err(e.into()),
        // Not finished yet (or the server is stopping): 202 with the record as it is.
        Ok(Ok(None)) | Err(_) => {
            Ok((StatusCode::ACCEPTED, Json(find(&ledger, id, None).await?)).into_response())
        }
    }
}

async fn queue(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<AtQuery>,
) -> ApiResult<Json<Vec<BackgroundExecution>>> {
    let ledger = authorize(&state, &headers)?.ledger(&state);
    let at = q.at()?;
    let records = blocking(move || match at {
        None => Ok(ledger.queue(None)),
        Some(at) => ledger.queue_at(at, None).map(|(queue, _)| queue),
    })
    .await?;
    Ok(Json(records))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DiffQuery {
    from_seq: Option<u64>,
    to_seq: Option<u64>,
}

async fn diff(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<DiffQuery>,
) -> ApiResult<Json<Vec<execution_ledger::Change>>> {
    let ledger = authorize(&state, &headers)?.ledger(&state);
    let (Some(from), Some(to)) = (q.from_seq, q.to_seq) else {
        return Err(ApiError::bad("diff needs fromSeq and toSeq"));
    };
    let changes = {
        let ledger = ledger.clone();
        blocking(move || ledger.diff(At::Seq(from), At::Seq(to))).await?
    };
    Ok(Json(
        changes
            .into_iter()
            .filter(|c| shows(&ledger, &c.tenant_id))
            .collect(),
    ))
}

async fn head(
    State(state): State<Shared>,
    headers: HeaderMap,
) -> ApiResult<Json<execution_ledger::Head>> {
    admin_only(&state, &headers)?;
    Ok(Json(state.ledger.head()))
}

/// `GET /v1/stats[?tenantId=T]`: every tenant's figures, or one's.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatsQuery {
    tenant_id: Option<TenantId>,
}

async fn stats(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> ApiResult<Json<execution_ledger::Stats>> {
    admin_only(&state, &headers)?;
    let ledger = match q.tenant_id {
        Some(t) => state.ledger.tenant(t),
        None => state.ledger.clone(),
    };
    let stats = blocking(move || ledger.stats()).await;
    Ok(Json(stats.map_err(ApiError::internal)?))
}

/// The whole log checked; 200 with the verdict whether it is intact or
/// not, as `ledger verify --json` prints it.
async fn verify(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<crate::backend::Verdict>> {
    admin_only(&state, &headers)?;
    let _: Option<NoFields> = body_json(body, true)?;
    let ledger = state.ledger.clone();
    let verdict = blocking(move || ledger.verify()).await;
    Ok(Json(verdict.into()))
}

async fn reindex(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<execution_ledger::IndexRebuild>> {
    admin_only(&state, &headers)?;
    let _: Option<NoFields> = body_json(body, true)?;
    let ledger = state.ledger.clone();
    let done = blocking(move || ledger.rebuild_index()).await;
    Ok(Json(done.map_err(ApiError::internal)?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicyBody {
    policy: execution_ledger::RetentionPolicy,
    #[serde(default)]
    dry_run: bool,
}

/// Applies a retention policy now (admin only).
async fn retention(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<execution_ledger::RetentionReport>> {
    admin_only(&state, &headers)?;
    let body: PolicyBody = body_json(body, false)?.expect("an empty body is refused");
    let shared = state.clone();
    let done = blocking(move || {
        // A pass stops when the server does (what it did is kept).
        shared.ledger.retain(&body.policy, body.dry_run, |_| {
            if shared.stopping.load(Ordering::Relaxed) {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
    })
    .await;
    Ok(Json(done?))
}

/// A retention policy applied in the background.
pub(crate) struct Retaining {
    stop: Arc<AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Retaining {
    /// Applies `policy` now and then every `every`; a pass that redacted
    /// anything, or failed, says so on stderr.
    pub(crate) fn start(
        ledger: Ledger,
        policy: execution_ledger::RetentionPolicy,
        every: Duration,
    ) -> Result<Retaining> {
        if !ledger.redacts() {
            return Err(Usage(
                "--retention: redaction is not available on this storage engine".into(),
            )
            .into());
        }
        let policy = Arc::new(policy);
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(tokio::sync::Notify::new());
        let (stopping, woken) = (stop.clone(), wake.clone());
        let task = tokio::spawn(async move {
            let mut last = false;
            loop {
                let (l, p, stop) = (ledger.clone(), policy.clone(), stopping.clone());
                let pass = tokio::task::spawn_blocking(move || {
                    l.retain(&p, false, |_| {
                        if stop.load(Ordering::Relaxed) {
                            std::ops::ControlFlow::Break(())
                        } else {
                            std::ops::ControlFlow::Continue(())
                        }
                    })
                });
                let line = match pass.await {
                    Ok(Ok(r)) if r.redacted > 0 => {
                        Some(format!("retention: {}", crate::output::retention(&r)))
                    }
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(format!("retention pass failed: {e}")),
                    Err(e) => Some(format!("retention pass failed: {e}")),
                };
                if let Some(line) = line {
                    let _ = writeln_stderr(&line);
                }
                if last || stopping.load(Ordering::Relaxed) {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    // Stopped, or asked for a last pass.
                    () = woken.notified() => last = true,
                }
            }
        });
        Ok(Retaining { stop, wake, task })
    }

    /// Stops it, and waits: a pass under way ends after the execution it
    /// is at (and the redactions it has in flight).
    pub(crate) async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.notify_one();
        let _ = self.task.await;
    }

    /// Ends it with one more whole pass (after the one under way, if any),
    /// and waits for it.
    pub(crate) async fn finish(self) {
        self.wake.notify_one();
        let _ = self.task.await;
    }
}

/// The log up to the head as it is now, as the lines of an export
/// (each event with its record and hashes), streamed: a
/// failure while reading ends the response early, as an error the client
/// sees, not as a short export.
async fn export(State(state): State<Shared>, headers: HeaderMap) -> ApiResult<Response> {
    admin_only(&state, &headers)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(64);
    let ledger = state.ledger.clone();
    tokio::task::spawn_blocking(move || {
        let head = ledger.head().seq;
        let mut chunk = Vec::with_capacity(64 * 1024);
        for exported in ledger.export(Some(head)) {
            match exported.map(|e| e.line) {
                Ok(line) => {
                    chunk.extend_from_slice(&line);
                    chunk.push(b'\n');
                }
                Err(e) => {
                    tracing::error!(error = %e, "the export stopped");
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                    return;
                }
            }
            if chunk.len() >= 60 * 1024
                && tx
                    .blocking_send(Ok(Bytes::from(std::mem::take(&mut chunk))))
                    .is_err()
            {
                return;
            }
        }
        if !chunk.is_empty() {
            let _ = tx.blocking_send(Ok(Bytes::from(chunk)));
        }
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventsQuery {
    from_seq: Option<u64>,
    /// End the stream after this seq (default: follow for ever).
    to_seq: Option<u64>,
}

/// The event stream: `retry:` first, then each event (`id:` its seq,
/// `event:` its type, `data:` the event), and with `toSeq`, after the
/// events through it, an `end` event (`id:` and `lastSeq` = toSeq). A
/// request that starts past `toSeq` (a client reconnecting after the end)
/// is 204 No Content, which ends an EventSource's reconnecting.
async fn events(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<Response> {
    /// How long a client waits before it reconnects.
    const RETRY: Duration = Duration::from_secs(1);
    let ledger = authorize(&state, &headers)?.ledger(&state);
    // A reconnecting client resumes after the last event it saw.
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| ApiError::bad(format!("Last-Event-ID must be a seq, not {v:?}")))
        })
        .transpose()?;
    // A reversed range asked for is refused; a resume past the end is 204.
    if let (None, Some(from), Some(to)) = (resume, q.from_seq, q.to_seq) {
        Ledger::check_range(from, to)?;
    }
    let from = resume.map_or(q.from_seq.unwrap_or(1), |seq| seq.saturating_add(1));
    if q.to_seq.is_some_and(|to| from > to) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<SseEvent>(256);
    let app = state.clone();
    tokio::task::spawn_blocking(move || {
        let mut sub = ledger.subscribe(from);
        let to = q.to_seq.unwrap_or(u64::MAX);
        while sub.next_seq() <= to && !app.stopping.load(Ordering::SeqCst) && !tx.is_closed() {
            match sub.next_timeout(Duration::from_millis(250)) {
                Ok(Some(event)) if shows(&ledger, &event.tenant_id) => {
                    let data = serde_json::to_string(&event).expect("events serialize");
                    let sse = SseEvent::default()
                        .id(event.seq.to_string())
                        .event(event.kind.name())
                        .data(data);
                    if tx.blocking_send(sse).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "the event stream stopped");
                    return;
                }
            }
        }
        if sub.next_seq() > to && q.to_seq.is_some() {
            let end = SseEvent::default()
                .id(to.to_string())
                .event("end")
                .data(serde_json::json!({ "lastSeq": to }).to_string());
            let _ = tx.blocking_send(end);
        }
    });
    let retry =
        futures_util::stream::once(async { Ok::<_, Infallible>(SseEvent::default().retry(RETRY)) });
    let stream =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    let stream = futures_util::StreamExt::chain(retry, stream);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

async fn healthz(State(state): State<Shared>) -> Response {
    if state.stopping.load(Ordering::SeqCst) {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        )
        .into_response();
    }
    // No head here: it counts every tenant's events, and health checks carry no key.
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// This API's OpenAPI document, `openapi.json` beside this file; it takes
/// no key.
async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

async fn fallback() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed here"),
    )
}

/// Any error answered without the JSON shape (a rejection of the request
/// before a handler ran) gets it, with a message that shows no internals.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (code, message) = match status {
        StatusCode::BAD_REQUEST => ("invalid", "the request is not valid"),
        StatusCode::PAYLOAD_TOO_LARGE => ("too_large", "the body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "the body is not JSON"),
        s if s.is_client_error() => ("invalid", "the request was refused"),
        _ => ("internal", "the server failed"),
    };
    let mut fixed = ApiError::new(status, code, message).into_response();
    // The route the request matched, for the request counters.
    if let Some(route) = response.extensions().get::<axum::extract::MatchedPath>() {
        fixed.extensions_mut().insert(route.clone());
    }
    if let Some(allow) = response.headers().get(axum::http::header::ALLOW) {
        fixed
            .headers_mut()
            .insert(axum::http::header::ALLOW, allow.clone());
    }
    fixed
}

fn router(state: Shared) -> Router {
    Router::new()
        .route("/v1/executions", post(submit).get(list))
        .route("/v1/live", get(live))
        .route("/v1/executions/batch", post(submit_batch))
        .route("/v1/executions/{id}", get(show))
        .route("/v1/executions/{id}/events", get(history))
        .route("/v1/executions/{id}/cancel", post(cancel))
        .route("/v1/executions/{id}/redact", post(redact))
        .route("/v1/executions/{id}/hold", post(hold))
        .route("/v1/executions/{id}/release-hold", post(release_hold))
        .route("/v1/executions/{id}/retry", post(retry))
        .route("/v1/executions/retry", post(retry_all))
        .route("/v1/tenants/{tenant}/hold", post(hold_tenant))
        .route(
            "/v1/tenants/{tenant}/release-hold",
            post(release_tenant_hold),
        )
        .route("/v1/holds", get(tenant_holds))
        .route("/v1/shares", get(shares::list))
        .route("/v1/pauses", get(pauses::list).post(pauses::pause))
        .route("/v1/pauses/resume", post(pauses::resume))
        .route(
            "/v1/tenants/{tenant}/share",
            put(shares::set).delete(shares::reset),
        )
        .route("/v1/schedules", get(schedules::list).post(schedules::add))
        .route("/v1/schedules/{name}", delete(schedules::remove))
        .route("/v1/schedules/{name}/pause", post(schedules::pause))
        .route("/v1/schedules/{name}/resume", post(schedules::resume))
        .route("/v1/executions/{id}/release", post(release))
        .route("/v1/executions/{id}/result", get(result))
        .route(
            "/v1/executions/{id}/attempts/{n}/heartbeat",
            post(worker_protocol::heartbeat),
        )
        .route(
            "/v1/executions/{id}/attempts/{n}/complete",
            post(worker_protocol::complete),
        )
        .route(
            "/v1/executions/{id}/attempts/{n}/fail",
            post(worker_protocol::fail),
        )
        .route("/v1/workers/claim", post(worker_protocol::claim))
        .route("/v1/workers/shutdown", post(worker_protocol::shutdown))
        .route("/v1/workers", get(worker_protocol::workers))
        .route("/v1/queue", get(queue))
        .route("/v1/diff", get(diff))
        .route("/v1/head", get(head))
        .route("/v1/events", get(events))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/v1/stats", get(stats))
        .route("/v1/verify", post(verify))
        .route("/v1/export", get(export))
        .route("/v1/reindex", post(reindex))
        .route("/v1/retention", post(retention))
        .route("/v1/openapi.json", get(openapi))
        .merge(console::routes())
        .route_layer(axum::middleware::from_fn(metrics::tag))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_response(json_errors))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count,
        ))
        .with_state(state)
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C), naming the signal: how `run`
/// and `serve` are told to stop. The handlers are in place once this
/// returns, so a signal that comes before the future is awaited is not lost
/// (nor kills the process). Call it within the tokio runtime.
pub(crate) fn stop_signal() -> Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}

/// The line `run` and `serve` print when a stop signal comes.
pub(crate) fn stopping(signal: &str, grace: Duration) -> String {
    format!(
        "stopping on {signal}: no new work; running attempts have {} s to finish",
        grace.as_secs()
    )
}

/// Serves `ledger` from this process on 127.0.0.1 (an ephemeral port),
/// with no keys and a runtime without callables, until
/// [`InProcess::stop`]. For `ledger bench`.
pub(crate) async fn serve_in_process(ledger: Ledger) -> Result<InProcess> {
    let runtime = Runtime::builder(ledger.clone()).workers(1).start().await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let state = Arc::new(AppState {
        ledger,
        runtime: Arc::new(runtime),
        keys: None,
        stopping: AtomicBool::new(false),
        http: metrics::Http::default(),
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router(state.clone()))
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
        // The runtime (its lease sweeper holds the ledger) stops before the
        // ledger is closed.
        let _ = state.runtime.shutdown(Duration::from_secs(1)).await;
    });
    Ok(InProcess { url, stop, task })
}

/// The API served in process by [`serve_in_process`].
pub(crate) struct InProcess {
    /// Where it listens, as `http://ADDR`.
    pub(crate) url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl InProcess {
    /// Stops serving and stops its runtime; returns once both are done.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// The HTTP API served from this process, from a listener it bound, with
/// its address in the data directory's `serve.json` so that the other
/// `ledger` commands reach the ledger through it.
pub(crate) struct Serving {
    /// Where it listens, as `http://ADDR`.
    pub(crate) url: String,
    served: Option<PathBuf>,
    state: Shared,
    drain: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Serving {
    /// Serves `ledger` and `runtime` on `listen` (keys, when given, map
    /// bearer keys to tenants; without them every request acts as admin),
    /// and writes `serve.json` in the data directory (a ledger in a
    /// database needs no server to be reached: every process opens it).
    pub(crate) async fn start(
        data_dir: Option<&Path>,
        ledger: Ledger,
        runtime: Arc<Runtime>,
        listen: SocketAddr,
        keys: Option<Keys>,
    ) -> Result<Serving> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let url = format!("http://{}", listener.local_addr()?);
        let served = data_dir.map(|dir| dir.join(SERVE_FILE));
        if let Some(served) = &served {
            std::fs::write(
                served,
                serde_json::to_vec(&Served {
                    url: url.clone(),
                    pid: std::process::id(),
                })?,
            )
            .with_context(|| format!("cannot write {}", served.display()))?;
        }
        let state = Arc::new(AppState {
            ledger,
            runtime,
            keys,
            stopping: AtomicBool::new(false),
            http: metrics::Http::default(),
        });
        let app = router(state.clone());
        let (drain, drained) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = drained.await;
                })
                .await
        });
        Ok(Serving {
            url,
            served,
            state,
            drain,
            task,
        })
    }

    /// Resolves if the server stops on its own (it should not), with why.
    pub(crate) async fn ended(&mut self) -> anyhow::Error {
        match (&mut self.task).await {
            Ok(Err(e)) => anyhow::Error::new(e).context("the server stopped"),
            Err(e) => anyhow::Error::new(e).context("the server stopped"),
            Ok(Ok(())) => anyhow::anyhow!("the server stopped on its own"),
        }
    }

    /// Stops: new requests get 503, the runtime stops claiming and gives
    /// running attempts `grace` to finish while the requests in flight
    /// drain, what they appended is made durable, and `serve.json` goes.
    pub(crate) async fn stop(self, grace: Duration) -> Result<()> {
        let state = self.state;
        state.stopping.store(true, Ordering::SeqCst);
        // The runtime stops while the requests in flight drain, not after:
        // its shutdown answers open result long-polls and claims at once,
        // and event streams end on `stopping`.
        let _ = self.drain.send(());
        let (stopped, ended) = tokio::join!(state.runtime.shutdown(grace), self.task);
        ended??;
        stopped?;
        let ledger = state.ledger.clone();
        tokio::task::spawn_blocking(move || ledger.flush()).await??;
        if let Some(served) = &self.served {
            let _ = std::fs::remove_file(served);
        }
        Ok(())
    }
}

/// How `ledger serve` and `ledger run` start their runtime.
pub(crate) struct RuntimeOptions {
    workers: usize,
    lease: Option<Duration>,
    secrets: Option<crate::secrets::Watched>,
}

impl RuntimeOptions {
    /// The options as given, the callback secrets read (a bad file is a
    /// usage error).
    pub(crate) fn new(
        workers: u16,
        lease_ms: Option<u64>,
        callback_secrets: &Option<PathBuf>,
    ) -> Result<RuntimeOptions> {
        Ok(RuntimeOptions {
            workers: workers.into(),
            lease: lease_ms.map(Duration::from_millis),
            secrets: callback_secrets
                .as_deref()
                .map(crate::secrets::Watched::load)
                .transpose()?,
        })
    }

    /// The runtime: the built-in callables on the workers, named
    /// `{what}-{pid}-{n}`, under the lease when given, signing callbacks
    /// with the secrets when given. Call within a tokio runtime.
    pub(crate) fn builder(&self, ledger: &Ledger, what: &str) -> execution_ledger::RuntimeBuilder {
        let mut builder = Runtime::builder(ledger.clone())
            .workers(self.workers)
            .worker_name(format!("{what}-{}", std::process::id()))
            .register_builtins();
        if let Some(lease) = self.lease {
            builder = builder.lease(lease);
        }
        if let Some(secrets) = &self.secrets {
            builder = builder.callback_secrets(secrets.follow());
        }
        builder
    }
}

pub(crate) fn run(
    cli: &Cli,
    listen: SocketAddr,
    options: RuntimeOptions,
    grace: Duration,
    keys: Option<PathBuf>,
    retention: Option<(execution_ledger::RetentionPolicy, Duration)>,
) -> Result<()> {
    if keys.is_none() && !listen.ip().is_loopback() {
        return Err(Usage(format!(
            "--listen {listen} needs --keys: without keys every request acts as admin, so serve listens on loopback only"
        ))
        .into());
    }
    let keys = keys.as_deref().map(Keys::load).transpose()?;
    let ledger = crate::backend::open(cli)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let stop = stop_signal()?;
        // Refused (an engine that cannot redact) before anything starts.
        let retaining = retention
            .map(|(policy, every)| Retaining::start(ledger.clone(), policy, every))
            .transpose()?;
        let runtime = options.builder(&ledger, "serve").start().await?;
        // Where the ledger is, without a database URL's password.
        let place = ledger.path().display().to_string();
        let mut serving =
            Serving::start(cli.dir(), ledger, Arc::new(runtime), listen, keys).await?;
        let _ = writeln_stderr(&format!("serving {} on {}", place, serving.url));
        let signal = tokio::select! {
            signal = stop => signal,
            err = serving.ended() => return Err(err),
        };
        let _ = writeln_stderr(&stopping(signal, grace));
        if let Some(retaining) = retaining {
            retaining.stop().await;
        }
        serving.stop(grace).await
    })
}

fn writeln_stderr(line: &str) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(std::io::stderr(), "{line}")
}
