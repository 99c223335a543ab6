//! `GET /metrics`: the Prometheus text format (0.0.4) — the ledger's head
//! and queue, what became of the work (outcomes by tenant and callable,
//! queue waits and run times by callable), worker leases alive, append and
//! sync latency, and the HTTP requests this server answered by route and
//! status. Labels are bounded: routes are the API's templates, never paths
//! with ids in them.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use execution_ledger::HistogramSnapshot;

use super::{admin_only, ApiResult, Shared};

/// The requests answered, by (method, route, status).
#[derive(Default)]
pub(super) struct Http {
    requests: Mutex<HashMap<(String, String, u16), u64>>,
}

/// What a request that matched no route is counted under.
const UNMATCHED: &str = "unmatched";

/// Puts the route a request matched on its response, for [`count`] (the
/// route is known only once the router matched it).
pub(super) async fn tag(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(route);
    }
    response
}

/// Counts each request once it is answered, under the route it matched.
pub(super) async fn count(State(state): State<Shared>, request: Request, next: Next) -> Response {
    use axum::http::Method;
    // Methods beyond these are one label value, not one each.
    let method = match *request.method() {
        Method::GET
        | Method::POST
        | Method::PUT
        | Method::DELETE
        | Method::PATCH
        | Method::HEAD
        | Method::OPTIONS => request.method().as_str().to_owned(),
        _ => "other".to_owned(),
    };
    let response = next.run(request).await;
    let route = response
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let key = (method, route, response.status().as_u16());
    *state
        .http
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default() += 1;
    response
}

/// A label value as the text format writes it.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One histogram's lines, under `labels` (`""` or `key="value",`).
fn histogram(out: &mut String, name: &str, labels: &str, h: &HistogramSnapshot) {
    for (bound, count) in h.bounds_us.iter().zip(&h.buckets) {
        let le = *bound as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {count}");
    }
    let plain = labels.trim_end_matches(',');
    let braces = |s: &str| {
        if s.is_empty() {
            String::new()
        } else {
            format!("{{{s}}}")
        }
    };
    let _ = writeln!(
        out,
        "{name}_bucket{{{labels}le=\"+Inf\"}} {}\n{name}_sum{} {}\n{name}_count{} {}",
        h.count,
        braces(plain),
        h.sum_us as f64 / 1e6,
        braces(plain),
        h.count
    );
}

pub(super) async fn metrics(
    State(state): State<Shared>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    admin_only(&state, &headers)?;
    let c = state.ledger.counts();
    let m = state.ledger.metrics();
    let mut out = String::new();
    family(
        &mut out,
        "ledger_head_seq",
        "gauge",
        "The last seq of the log.",
    );
    let _ = writeln!(out, "ledger_head_seq {}", state.ledger.head().seq);
    family(
        &mut out,
        "ledger_live_executions",
        "gauge",
        "Live executions by where they are.",
    );
    for (status, n) in [
        ("queued", c.queued),
        ("waiting", c.waiting),
        ("held", c.held),
        ("running", c.running),
        ("finishing", c.finishing),
    ] {
        let _ = writeln!(out, "ledger_live_executions{{status=\"{status}\"}} {n}");
    }
    family(
        &mut out,
        "ledger_queue_depth",
        "gauge",
        "Executions runnable now.",
    );
    let _ = writeln!(out, "ledger_queue_depth {}", c.queued - c.waiting - c.held);
    family(
        &mut out,
        "ledger_leases_alive",
        "gauge",
        "Attempts running under a worker's lease that has not run out.",
    );
    let _ = writeln!(out, "ledger_leases_alive {}", state.ledger.leased());
    family(
        &mut out,
        "ledger_claims_total",
        "counter",
        "Executions claimed since start.",
    );
    let _ = writeln!(out, "ledger_claims_total {}", m.claims);
    family(
        &mut out,
        "ledger_outcomes_total",
        "counter",
        "What became of the work this process recorded: executions ended (completed, failed, timeout, cancelled), attempts to run again (retried), ended executions retried by hand (retried_by_hand), attempts ended by recovery (recovered).",
    );
    for o in &m.outcomes {
        let _ = writeln!(
            out,
            "ledger_outcomes_total{{outcome=\"{}\",tenant=\"{}\",callable=\"{}\"}} {}",
            o.outcome.name(),
            label(&o.tenant),
            label(&o.callable),
            o.count
        );
    }
    for (name, help, by) in [
        (
            "ledger_queue_wait_seconds",
            "From runnable (submitted, released, back-off over) to started, by callable.",
            &m.queue_wait,
        ),
        (
            "ledger_run_seconds",
            "From started to the end of the attempt, by callable.",
            &m.run_time,
        ),
    ] {
        family(&mut out, name, "histogram", help);
        for (callable, h) in by {
            histogram(
                &mut out,
                name,
                &format!("callable=\"{}\",", label(callable)),
                h,
            );
        }
    }
    for (name, help, h) in [
        (
            "ledger_append_seconds",
            "Time to append a batch of events.",
            &m.append_latency,
        ),
        (
            "ledger_sync_seconds",
            "Time of one sync (flush, fdatasync, checkpoint, commit).",
            &m.sync_latency,
        ),
    ] {
        family(&mut out, name, "histogram", help);
        histogram(&mut out, name, "", h);
    }
    family(
        &mut out,
        "ledger_http_requests_total",
        "counter",
        "HTTP requests answered, by method, route and status.",
    );
    let mut requests: Vec<_> = state
        .http
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, n)| (k.clone(), *n))
        .collect();
    requests.sort();
    for ((method, route, status), n) in requests {
        let _ = writeln!(
            out,
            "ledger_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
            label(&route)
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
