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
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use execution_ledger::{
    At, BackgroundExecution, ExecutionId, Ledger, LedgerError, Runtime, Submission, TenantId,
    BUCKETS_US,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Cli;

/// The largest request body accepted, in bytes (413 above).
pub(crate) const MAX_BODY_BYTES: usize = 512 * 1024;
/// The longest `wait` of a result long-poll.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// The file in the data directory that names a serving process.
pub(crate) const SERVE_FILE: &str = "serve.json";

/// What `serve.json` holds while a ledger is served.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Served {
    pub(crate) url: String,
    pub(crate) pid: u32,
}

/// Who a request acts as.
#[derive(Clone, Debug, PartialEq)]
enum Who {
    Admin,
    Tenant(TenantId),
}

impl Who {
    fn scope(&self) -> Option<&TenantId> {
        match self {
            Who::Admin => None,
            Who::Tenant(t) => Some(t),
        }
    }

    fn sees(&self, tenant: &TenantId) -> bool {
        self.scope().is_none_or(|t| t == tenant)
    }
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
struct Keys(HashMap<String, Who>);

impl Keys {
    fn load(path: &Path) -> Result<Keys> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the keys file {}", path.display()))?;
        let file: KeysFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid keys file", path.display()))?;
        let mut keys = HashMap::new();
        for (i, k) in file.keys.into_iter().enumerate() {
            let who = match (k.admin, k.tenant) {
                (true, None) => Who::Admin,
                (false, Some(t)) => Who::Tenant(t),
                _ => bail!(
                    "{}: key {} must have either a tenant or \"admin\": true",
                    path.display(),
                    i + 1
                ),
            };
            let hash = k.sha256.to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!(
                    "{}: key {} has no valid sha256 (64 hex digits)",
                    path.display(),
                    i + 1
                );
            }
            keys.insert(hash, who);
        }
        Ok(Keys(keys))
    }
}

struct AppState {
    ledger: Ledger,
    runtime: Runtime,
    keys: Option<Keys>,
    stopping: AtomicBool,
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
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        let message = e.to_string();
        match e {
            LedgerError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            LedgerError::Transition(_) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            LedgerError::Invalid(_) => ApiError::bad(message),
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

fn not_found(id: ExecutionId) -> ApiError {
    LedgerError::NotFound(id).into()
}

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
    let key = header.strip_prefix("Bearer ").ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the Authorization header must be Bearer KEY",
        )
    })?;
    let hash = Sha256::digest(key.trim().as_bytes());
    let hex = hash.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    keys.0
        .get(&hex)
        .cloned()
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown API key"))
}

fn body_json<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    allow_empty: bool,
) -> ApiResult<Option<T>> {
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is over {MAX_BODY_BYTES} bytes"),
            )
        } else {
            ApiError::bad(r.body_text())
        }
    })?;
    if bytes.is_empty() && allow_empty {
        return Ok(None);
    }
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid: {e}"),
        )
    })
}

fn parse_id(id: &str) -> ApiResult<ExecutionId> {
    id.parse()
        .map_err(|e: execution_ledger::ParseIdError| ApiError::bad(e.to_string()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubmitBody {
    #[serde(flatten)]
    submission: Submission,
    #[serde(default)]
    tenant_id: Option<TenantId>,
}

async fn submit(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let who = authorize(&state, &headers)?;
    let body: SubmitBody = body_json(body, false)?.expect("a body");
    let tenant = match (&who, body.tenant_id) {
        (Who::Admin, Some(t)) => t,
        (Who::Admin, None) => return Err(ApiError::bad("an admin submit needs tenantId")),
        (Who::Tenant(t), None) => t.clone(),
        (Who::Tenant(t), Some(other)) if &other == t => other,
        (Who::Tenant(_), Some(_)) => {
            return Err(ApiError::bad("tenantId must be the key's own tenant"))
        }
    };
    let submitted = state
        .runtime
        .submit_detached(&tenant, body.submission)
        .await?;
    let status = if submitted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let record = submitted.execution;
    Ok((status, Json(record)).into_response())
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

async fn scoped_get(
    state: &AppState,
    who: &Who,
    id: ExecutionId,
    at: Option<At>,
) -> ApiResult<BackgroundExecution> {
    let ledger = state.ledger.clone();
    let found = match at {
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
    };
    if !who.sees(&found.tenant_id) {
        return Err(not_found(id));
    }
    Ok(found)
}

async fn show(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<AtQuery>,
) -> ApiResult<Json<BackgroundExecution>> {
    let who = authorize(&state, &headers)?;
    let id = parse_id(&id)?;
    Ok(Json(scoped_get(&state, &who, id, q.at()?).await?))
}

async fn history(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Vec<execution_ledger::Event>>> {
    let who = authorize(&state, &headers)?;
    let id = parse_id(&id)?;
    let ledger = state.ledger.clone();
    let events = blocking(move || ledger.history(id)).await?;
    if events.first().is_some_and(|e| !who.sees(&e.tenant_id)) {
        return Err(not_found(id));
    }
    Ok(Json(events))
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
    let who = authorize(&state, &headers)?;
    let id = parse_id(&id)?;
    let body: CancelBody = body_json(body, true)?.unwrap_or_default();
    scoped_get(&state, &who, id, None).await?;
    Ok(Json(state.runtime.cancel(id, body.reason).await?))
}

async fn release(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<BackgroundExecution>> {
    let who = authorize(&state, &headers)?;
    let id = parse_id(&id)?;
    scoped_get(&state, &who, id, None).await?;
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
        Duration::from_secs_f64(secs)
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
    Query(q): Query<WaitQuery>,
) -> ApiResult<Response> {
    let who = authorize(&state, &headers)?;
    let id = parse_id(&id)?;
    let wait = q
        .wait
        .as_deref()
        .map(parse_wait)
        .transpose()?
        .unwrap_or(Duration::ZERO);
    let now = scoped_get(&state, &who, id, None).await?;
    if now.is_finished() {
        return Ok((StatusCode::OK, Json(now)).into_response());
    }
    match tokio::time::timeout(wait, state.runtime.result(id)).await {
        Ok(Ok(Some(done))) => Ok((StatusCode::OK, Json(done)).into_response()),
        Ok(Err(e)) => Err(e.into()),
        // Not finished yet (or the server is stopping): 202 with the record as it is.
        Ok(Ok(None)) | Err(_) => Ok((
            StatusCode::ACCEPTED,
            Json(scoped_get(&state, &who, id, None).await?),
        )
            .into_response()),
    }
}

async fn queue(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<AtQuery>,
) -> ApiResult<Json<Vec<BackgroundExecution>>> {
    let who = authorize(&state, &headers)?;
    let at = q.at()?;
    let ledger = state.ledger.clone();
    let scope = who.scope().cloned();
    let records = blocking(move || match at {
        None => Ok(ledger.queue(scope.as_ref())),
        Some(at) => ledger.queue_at(at, scope.as_ref()).map(|(queue, _)| queue),
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
    Query(q): Query<DiffQuery>,
) -> ApiResult<Json<Vec<execution_ledger::Change>>> {
    let who = authorize(&state, &headers)?;
    let (Some(from), Some(to)) = (q.from_seq, q.to_seq) else {
        return Err(ApiError::bad("diff needs fromSeq and toSeq"));
    };
    let ledger = state.ledger.clone();
    let changes = blocking(move || ledger.diff(At::Seq(from), At::Seq(to))).await?;
    Ok(Json(
        changes
            .into_iter()
            .filter(|c| who.sees(&c.tenant_id))
            .collect(),
    ))
}

async fn head(
    State(state): State<Shared>,
    headers: HeaderMap,
) -> ApiResult<Json<execution_ledger::Head>> {
    authorize(&state, &headers)?;
    Ok(Json(state.ledger.head()))
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
    Query(q): Query<EventsQuery>,
) -> ApiResult<Response> {
    /// How long a client waits before it reconnects.
    const RETRY: Duration = Duration::from_secs(1);
    let who = authorize(&state, &headers)?;
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
    let from = resume.map_or(q.from_seq.unwrap_or(1), |seq| seq.saturating_add(1));
    if q.to_seq.is_some_and(|to| from > to) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<SseEvent>(256);
    let ledger = state.ledger.clone();
    let app = state.clone();
    tokio::task::spawn_blocking(move || {
        let mut sub = ledger.subscribe(from);
        let to = q.to_seq.unwrap_or(u64::MAX);
        while sub.next_seq() <= to && !app.stopping.load(Ordering::SeqCst) && !tx.is_closed() {
            match sub.next_timeout(Duration::from_millis(250)) {
                Ok(Some(event)) if who.sees(&event.tenant_id) => {
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
    Json(serde_json::json!({ "status": "ok", "head": state.ledger.head().seq })).into_response()
}

async fn metrics(State(state): State<Shared>, headers: HeaderMap) -> ApiResult<Response> {
    authorize(&state, &headers)?;
    let c = state.ledger.counts();
    let m = state.ledger.metrics();
    let mut out = String::new();
    let _ = writeln!(out, "# HELP ledger_head_seq The last seq of the log.\n# TYPE ledger_head_seq gauge\nledger_head_seq {}", state.ledger.head().seq);
    let _ = writeln!(out, "# HELP ledger_live_executions Live executions by where they are.\n# TYPE ledger_live_executions gauge");
    for (status, n) in [
        ("queued", c.queued),
        ("waiting", c.waiting),
        ("held", c.held),
        ("running", c.running),
        ("finishing", c.finishing),
    ] {
        let _ = writeln!(out, "ledger_live_executions{{status=\"{status}\"}} {n}");
    }
    let _ = writeln!(out, "# HELP ledger_queue_depth Executions runnable now.\n# TYPE ledger_queue_depth gauge\nledger_queue_depth {}", c.queued - c.waiting - c.held);
    let _ = writeln!(out, "# HELP ledger_claims_total Executions claimed since start.\n# TYPE ledger_claims_total counter\nledger_claims_total {}", m.claims);
    for (name, help, h) in [
        (
            "ledger_append_seconds",
            "Time to append a batch of events to sled.",
            &m.append_latency,
        ),
        (
            "ledger_sync_seconds",
            "Time of one sync (flush, fdatasync, checkpoint).",
            &m.sync_latency,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in BUCKETS_US.iter().zip(&h.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{}\"}} {count}",
                *bound as f64 / 1e6
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
            h.count,
            h.sum_us as f64 / 1e6,
            h.count
        );
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response())
}

async fn fallback() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

fn router(state: Shared) -> Router {
    Router::new()
        .route("/v1/executions", post(submit))
        .route("/v1/executions/{id}", get(show))
        .route("/v1/executions/{id}/events", get(history))
        .route("/v1/executions/{id}/cancel", post(cancel))
        .route("/v1/executions/{id}/release", post(release))
        .route("/v1/executions/{id}/result", get(result))
        .route("/v1/queue", get(queue))
        .route("/v1/diff", get(diff))
        .route("/v1/head", get(head))
        .route("/v1/events", get(events))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
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
/// with one worker and no keys, until the returned sender is dropped or
/// fired. For `ledger bench`.
pub(crate) async fn serve_in_process(
    ledger: Ledger,
) -> Result<(String, tokio::sync::oneshot::Sender<()>)> {
    let runtime = Runtime::builder(ledger.clone()).workers(1).start().await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let state = Arc::new(AppState {
        ledger,
        runtime,
        keys: None,
        stopping: AtomicBool::new(false),
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(state))
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    Ok((url, stop))
}

pub(crate) fn run(
    cli: &Cli,
    listen: SocketAddr,
    workers: usize,
    grace: Duration,
    keys: Option<PathBuf>,
) -> Result<()> {
    if keys.is_none() && !listen.ip().is_loopback() {
        return Err(crate::Usage(format!(
            "--listen {listen} needs --keys: without keys every request acts as admin, so serve listens on loopback only"
        ))
        .into());
    }
    let keys = keys.as_deref().map(Keys::load).transpose()?;
    let ledger = crate::open(&cli.data_dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let stop = stop_signal()?;
        let runtime = Runtime::builder(ledger.clone())
            .workers(workers)
            .worker_name(format!("serve-{}", std::process::id()))
            .register_builtins()
            .start()
            .await?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let url = format!("http://{addr}");
        let served = cli.data_dir.join(SERVE_FILE);
        std::fs::write(
            &served,
            serde_json::to_vec(&Served {
                url: url.clone(),
                pid: std::process::id(),
            })?,
        )
        .with_context(|| format!("cannot write {}", served.display()))?;
        let _ = writeln_stderr(&format!("serving {} on {url}", cli.data_dir.display()));
        let state = Arc::new(AppState {
            ledger: ledger.clone(),
            runtime,
            keys,
            stopping: AtomicBool::new(false),
        });
        let app = router(state.clone());
        let (drain, drained) = tokio::sync::oneshot::channel::<()>();
        let mut serving = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = drained.await;
                })
                .await
        });
        let signal = tokio::select! {
            signal = stop => signal,
            ended = &mut serving => {
                ended??;
                anyhow::bail!("the server stopped on its own");
            }
        };
        state.stopping.store(true, Ordering::SeqCst);
        let _ = writeln_stderr(&stopping(signal, grace));
        // The runtime stops while the requests in flight drain, not after:
        // its shutdown answers open result long-polls at once (202, the
        // record as it is), and event streams end on `stopping`.
        let _ = drain.send(());
        let (stopped, ended) = tokio::join!(state.runtime.shutdown(grace), serving);
        ended??;
        stopped?;
        // What the drained requests appended is durable too.
        let ledger = state.ledger.clone();
        tokio::task::spawn_blocking(move || ledger.flush()).await??;
        let _ = std::fs::remove_file(&served);
        anyhow::Ok(())
    })
}

fn writeln_stderr(line: &str) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(std::io::stderr(), "{line}")
}
