//! Result callbacks: a finished deferred execution's record POSTed as JSON
//! to its `callbackUrl`, retried with back-off, every attempt recorded.

use std::time::Duration;

use crate::execution::BackgroundExecution;

/// One delivery attempt: `Ok(status)` for a 2xx answer, otherwise the
/// status (when there was an answer) and what went wrong.
pub(crate) async fn deliver(
    client: &reqwest::Client,
    url: &str,
    execution: &BackgroundExecution,
    timeout: Duration,
) -> Result<u16, (Option<u16>, String)> {
    let response = client
        .post(url)
        .timeout(timeout)
        .json(execution)
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
