//! Result callbacks: a finished deferred execution's record POSTed as JSON
//! to its `callbackUrl`, signed when the runtime has secrets, retried with
//! back-off, every attempt recorded.

use std::time::Duration;

use crate::execution::BackgroundExecution;
use crate::signing::{CallbackSecrets, ATTEMPT_HEADER, IDEMPOTENCY_HEADER, SIGNATURE_HEADER};

/// What callbacks say they come from.
const USER_AGENT: &str = concat!("execution-ledger/", env!("CARGO_PKG_VERSION"));

/// One delivery attempt: `Ok(status)` for a 2xx answer, otherwise the
/// status (when there was an answer) and what went wrong.
///
/// The body is the execution's JSON, sent as the bytes that were signed;
/// the headers name the sender, the execution (the id a receiver
/// de-duplicates on, the same on every attempt), the attempt, and — with
/// `secrets` — the signature. With `secrets` but none for the execution's
/// tenant, nothing is sent.
pub(crate) async fn deliver(
    client: &reqwest::Client,
    url: &str,
    execution: &BackgroundExecution,
    attempt: u32,
    secrets: Option<&CallbackSecrets>,
    timeout: Duration,
) -> Result<u16, (Option<u16>, String)> {
    let body = serde_json::to_vec(execution).map_err(|e| (None, e.to_string()))?;
    let mut request = client
        .post(url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::USER_AGENT, USER_AGENT)
        .header(IDEMPOTENCY_HEADER, execution.execution_id.to_string())
        .header(ATTEMPT_HEADER, attempt.to_string());
    if let Some(secrets) = secrets {
        let tenant = &execution.tenant_id;
        let Some(signature) = secrets.sign(tenant, chrono::Utc::now(), &body) else {
            return Err((
                None,
                format!("no callback secret for tenant {tenant}: a callback is not sent unsigned"),
            ));
        };
        request = request.header(SIGNATURE_HEADER, signature);
    }
    let response = request
        .body(body)
        .send()
        .await
        .map_err(|e| (None, describe(&e)))?;
    let status = response.status();
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err((
            Some(status.as_u16()),
            format!("the receiver answered {status}"),
        ))
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "the receiver did not answer in time".to_owned()
    } else if e.is_connect() {
        "cannot connect to the receiver".to_owned()
    } else {
        let mut s = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(inner) = source {
            s.push_str(": ");
            s.push_str(&inner.to_string());
            source = inner.source();
        }
        s
    }
}

/// The wait before delivery attempt `attempt` (2 and on).
pub(crate) fn backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1 << attempt.saturating_sub(2).min(10))
}
