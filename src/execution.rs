//! The domain model: executions, their configuration and the in-memory
//! priority queue. The identifiers are defined in `ids` and named from here
//! too.
//!
//! The names and the JSON shape are a wire contract with services written in
//! other languages: structs are camelCase, enum values snake_case, optional
//! fields are omitted when absent, and a document of the original shape (with
//! none of the fields this crate added) still deserializes.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use crate::ids::ParseIdError;
pub(crate) use crate::ids::{ExecutionId, TenantId, TriggerId};
use crate::queue::PriorityQueue;

/// How an execution relates to its caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackgroundExecutionMode {
    /// Submit returns the id at once; no streaming events.
    #[default]
    FireAndForget,
    /// The caller can await the result; no streaming events.
    Silent,
    /// Held out of the runnable queue until released (or its run-at time
    /// passes); the result is POSTed to `callbackUrl` when it ends.
    Deferred,
}

/// Where an execution is in its lifecycle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackgroundExecutionStatus {
    /// Waiting to run (possibly held, or waiting for a retry back-off).
    #[default]
    Queued,
    /// An attempt is running.
    Running,
    /// Finished with an output.
    Completed,
    /// Finished with an error, with no attempts left.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
    /// Its last attempt ran past `timeoutMs`.
    Timeout,
}

impl BackgroundExecutionStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [BackgroundExecutionStatus; 6] = [
        Self::Queued,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
        Self::Timeout,
    ];

    /// Whether the status is final: completed, failed, cancelled or timeout.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }

    /// The status as its snake_case name (`queued`, `running`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Timeout => "timeout",
        }
    }
}

impl fmt::Display for BackgroundExecutionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BackgroundExecutionStatus {
    type Err = crate::ids::ParseIdError;

    /// A status by its name (`queued`, `running`, `completed`, `failed`,
    /// `cancelled`, `timeout`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| crate::ids::ParseIdError::new("status", s))
    }
}

impl fmt::Display for BackgroundExecutionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::FireAndForget => "fire_and_forget",
            Self::Silent => "silent",
            Self::Deferred => "deferred",
        })
    }
}

impl FromStr for BackgroundExecutionMode {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fire_and_forget" => Ok(Self::FireAndForget),
            "silent" => Ok(Self::Silent),
            "deferred" => Ok(Self::Deferred),
            _ => Err(ParseIdError::new("mode", s)),
        }
    }
}

/// How failed attempts are retried.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RetryConfig {
    /// Attempts in all, counting the first one (at least 1).
    pub max_attempts: u32,
    /// The wait before the second attempt, in milliseconds.
    pub initial_delay_ms: u64,
    /// Each further wait is the previous one times this.
    pub backoff_multiplier: f64,
    /// No wait is longer than this, in milliseconds.
    pub max_delay_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            initial_delay_ms: 1_000,
            backoff_multiplier: 2.0,
            max_delay_ms: 60_000,
        }
    }
}

impl RetryConfig {
    /// The wait before the attempt after `failed_attempt` (1-based), in
    /// milliseconds: `initialDelayMs × backoffMultiplier^(failed_attempt-1)`,
    /// at most `maxDelayMs`.
    pub fn delay_ms(&self, failed_attempt: u32) -> u64 {
        let exp = failed_attempt.saturating_sub(1).min(64) as i32;
        let multiplier = if self.backoff_multiplier.is_finite() && self.backoff_multiplier >= 1.0 {
            self.backoff_multiplier
        } else {
            1.0
        };
        let delay = self.initial_delay_ms as f64 * multiplier.powi(exp);
        if delay.is_finite() && delay < self.max_delay_ms as f64 {
            delay as u64
        } else {
            self.max_delay_ms
        }
    }
}

/// Where a completed execution's output is bound: a target such as
/// `var:summary`, and optionally a JSON pointer into the output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetBindingConfig {
    /// The target, `scheme:name` (e.g. `var:summary`).
    pub target: String,
    /// A JSON pointer (RFC 6901) into the output; the whole output when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl TargetBindingConfig {
    /// The part of the target before the first `:` (the binder's scheme).
    pub fn scheme(&self) -> &str {
        self.target.split(':').next().unwrap_or("")
    }
}

/// How an execution runs: mode, priority, timeout, binding, callback, retries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BackgroundExecutionConfig {
    /// How the execution relates to its caller.
    pub mode: BackgroundExecutionMode,
    /// Higher runs first; equal priorities run in submission order.
    pub priority: u8,
    /// How long one attempt may run, in milliseconds.
    pub timeout_ms: u64,
    /// Where the output is bound on completion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_binding: Option<TargetBindingConfig>,
    /// Where a deferred execution's record is POSTed when it ends. Only
    /// deferred executions call back: a submission of another mode with a
    /// callback URL is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// How failed attempts are retried; one attempt only when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryConfig>,
}

impl BackgroundExecutionConfig {
    /// The default priority.
    pub const DEFAULT_PRIORITY: u8 = 50;
    /// The default timeout of one attempt, in milliseconds.
    pub const DEFAULT_TIMEOUT_MS: u64 = 300_000;

    /// Attempts in all: `retry.maxAttempts` (at least 1), or 1 without retry.
    pub fn max_attempts(&self) -> u32 {
        self.retry.as_ref().map_or(1, |r| r.max_attempts.max(1))
    }
}

impl Default for BackgroundExecutionConfig {
    fn default() -> Self {
        BackgroundExecutionConfig {
            mode: BackgroundExecutionMode::default(),
            priority: Self::DEFAULT_PRIORITY,
            timeout_ms: Self::DEFAULT_TIMEOUT_MS,
            target_binding: None,
            callback_url: None,
            retry: None,
        }
    }
}

/// Why an execution (or one attempt of it) did not succeed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionError {
    /// A short machine-readable code, e.g. `timeout` or `unknown_callable`.
    pub code: String,
    /// A human-readable message.
    pub message: String,
    /// Structured details, when the callable gave any.
    #[serde(
        default,
        deserialize_with = "present_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub details: Option<serde_json::Value>,
}

impl ExecutionError {
    /// An error with a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ExecutionError {
            code: code.into(),
            message: message.into(),
            details: None,
        }
    }
}

impl fmt::Display for ExecutionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ExecutionError {}

/// How a callable is invoked by its caller.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum SpawnMode {
    /// Run in the caller's own flow.
    #[default]
    Inline,
    /// Run as a child; in the background when `background` is set.
    Child {
        /// Whether the child runs as a background execution.
        background: bool,
        /// Whether the child shares the parent's inbox.
        #[serde(default)]
        inherit_inbox: bool,
        /// Names of the policies the child runs under.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        policies: Option<Vec<String>>,
    },
}

/// A JSON value that is present, `null` included, is `Some`: an absent
/// field is `None` (by `#[serde(default)]`), so `Some(Value::Null)` (a
/// callable that returned `null`) survives a round trip.
fn present_value<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(deserializer).map(Some)
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One execution of a named callable: its specification and where it is in
/// its lifecycle.
///
/// Its state in a ledger is always the fold of its events through the state
/// machine; the lifecycle methods here (`start`, `complete`, …) mutate a
/// value held by the caller and do not consult or record anything.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackgroundExecution {
    /// The execution's id.
    pub execution_id: ExecutionId,
    /// The tenant it belongs to.
    pub tenant_id: TenantId,
    /// The name of the callable it runs.
    pub callable_name: String,
    /// The input handed to the callable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Key-value context handed to the callable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<HashMap<String, String>>,
    /// How it runs.
    #[serde(default)]
    pub config: BackgroundExecutionConfig,
    /// Where it is in its lifecycle.
    #[serde(default)]
    pub status: BackgroundExecutionStatus,
    /// When it was submitted.
    pub queued_at: DateTime<Utc>,
    /// When its latest attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// The callable's output, once completed.
    #[serde(
        default,
        deserialize_with = "present_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub output: Option<serde_json::Value>,
    /// The error of the latest failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ExecutionError>,
    /// Whether the output was bound to its target.
    #[serde(default)]
    pub target_binding_applied: bool,
    /// The trigger that started it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_id: Option<TriggerId>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<HashMap<String, serde_json::Value>>,

    // Fields beyond the original model: optional, with defaults.
    /// Attempts started so far (0 before the first).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    /// Not runnable before this time (a retry back-off or a deferred run-at).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// When a deferred execution was released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<DateTime<Utc>>,
    /// The caller's idempotency key, unique per tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Callback deliveries tried so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub callback_attempts: u32,
    /// Whether the callback was delivered.
    #[serde(default, skip_serializing_if = "is_false")]
    pub callback_delivered: bool,
    /// Why binding the output to its target failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_binding_error: Option<ExecutionError>,
    /// When its payloads were redacted (they read `"[redacted]"` since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacted_at: Option<DateTime<Utc>>,
    /// Whether it is under legal hold: its payloads cannot be redacted,
    /// nor its history archived, until the hold is released.
    #[serde(default, skip_serializing_if = "is_false")]
    pub legal_hold: bool,
    /// The execution this one runs again, when an operator retried that
    /// one by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<ExecutionId>,
    /// The schedule and the slot it fills, when a schedule fired it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<crate::schedule::ScheduleSlot>,
    /// The execution that runs this one again, once an operator retried it
    /// by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried_as: Option<ExecutionId>,
}

impl BackgroundExecution {
    /// Replaces each payload it holds (input, output, context and metadata
    /// values, error messages and details) with `"[redacted]"`: the
    /// execution as its redacted records fold, and more: it also blanks
    /// the error messages the state machine writes itself (timeouts, lost
    /// attempts), which no record holds as a payload. (The record format
    /// names the payload fields of events, `store::record::slots`.)
    pub(crate) fn redact_payloads(&mut self) {
        use crate::store::record::REDACTED;
        let text = || REDACTED.to_string();
        let value = || serde_json::Value::String(REDACTED.into());
        if let Some(input) = &mut self.input {
            *input = text();
        }
        for v in self.context.iter_mut().flat_map(|m| m.values_mut()) {
            *v = text();
        }
        for v in self.metadata.iter_mut().flat_map(|m| m.values_mut()) {
            *v = value();
        }
        if let Some(output) = &mut self.output {
            *output = value();
        }
        for error in [&mut self.error, &mut self.target_binding_error]
            .into_iter()
            .flatten()
        {
            error.message = text();
            if let Some(details) = &mut error.details {
                *details = value();
            }
        }
    }

    /// A new queued execution of `callable_name` for `tenant_id`.
    pub fn new(
        tenant_id: TenantId,
        callable_name: impl Into<String>,
        config: BackgroundExecutionConfig,
    ) -> Self {
        BackgroundExecution {
            execution_id: ExecutionId::new(),
            tenant_id,
            callable_name: callable_name.into(),
            input: None,
            context: None,
            config,
            status: BackgroundExecutionStatus::Queued,
            queued_at: Utc::now(),
            started_at: None,
            completed_at: None,
            output: None,
            error: None,
            target_binding_applied: false,
            trigger_id: None,
            metadata: None,
            attempt: 0,
            not_before: None,
            released_at: None,
            idempotency_key: None,
            callback_attempts: 0,
            callback_delivered: false,
            target_binding_error: None,
            redacted_at: None,
            legal_hold: false,
            retry_of: None,
            schedule: None,
            retried_as: None,
        }
    }

    /// An execution started by a trigger: silent, with the trigger's binding
    /// and retry policy.
    pub fn from_trigger(
        tenant_id: TenantId,
        trigger_id: TriggerId,
        callable_name: impl Into<String>,
        input: Option<String>,
        context: Option<HashMap<String, String>>,
        target_binding: Option<TargetBindingConfig>,
        retry: Option<RetryConfig>,
    ) -> Self {
        let config = BackgroundExecutionConfig {
            mode: BackgroundExecutionMode::Silent,
            target_binding,
            retry,
            ..BackgroundExecutionConfig::default()
        };
        let mut execution = Self::new(tenant_id, callable_name, config);
        execution.trigger_id = Some(trigger_id);
        execution.input = input;
        execution.context = context;
        execution
    }

    /// An execution for a spawn mode that runs in the background; `None`
    /// when the spawn mode runs inline.
    pub fn from_spawn_mode(
        spawn_mode: &SpawnMode,
        tenant_id: TenantId,
        callable_name: impl Into<String>,
        input: Option<String>,
        context: Option<HashMap<String, String>>,
    ) -> Option<Self> {
        if !Self::should_run_background(spawn_mode) {
            return None;
        }
        // A background child is fire-and-forget: nobody waits for it.
        let config = BackgroundExecutionConfig {
            mode: BackgroundExecutionMode::FireAndForget,
            ..BackgroundExecutionConfig::default()
        };
        let mut execution = Self::new(tenant_id, callable_name, config);
        execution.input = input;
        execution.context = context;
        Some(execution)
    }

    /// Whether a spawn mode runs its callable in the background.
    pub fn should_run_background(spawn_mode: &SpawnMode) -> bool {
        matches!(
            spawn_mode,
            SpawnMode::Child {
                background: true,
                ..
            }
        )
    }

    /// Marks it running, now.
    pub fn start(&mut self) {
        self.status = BackgroundExecutionStatus::Running;
        self.started_at = Some(Utc::now());
    }

    /// Marks it completed with `output`, now.
    pub fn complete(&mut self, output: serde_json::Value) {
        self.status = BackgroundExecutionStatus::Completed;
        self.output = Some(output);
        self.completed_at = Some(Utc::now());
    }

    /// Marks it failed with `error`, now.
    pub fn fail(&mut self, error: ExecutionError) {
        self.status = BackgroundExecutionStatus::Failed;
        self.error = Some(error);
        self.completed_at = Some(Utc::now());
    }

    /// Marks it cancelled, now.
    pub fn cancel(&mut self) {
        self.status = BackgroundExecutionStatus::Cancelled;
        self.completed_at = Some(Utc::now());
    }

    /// Marks it timed out, now.
    pub fn timeout(&mut self) {
        self.status = BackgroundExecutionStatus::Timeout;
        self.error = Some(ExecutionError::new(
            "timeout",
            format!("execution timed out after {}ms", self.config.timeout_ms),
        ));
        self.completed_at = Some(Utc::now());
    }

    /// Whether it reached a terminal status.
    pub fn is_finished(&self) -> bool {
        self.status.is_terminal()
    }

    /// Whether it completed.
    pub fn is_success(&self) -> bool {
        self.status == BackgroundExecutionStatus::Completed
    }

    /// Milliseconds from the latest start to the end, once both are known.
    pub fn duration_ms(&self) -> Option<i64> {
        match (self.started_at, self.completed_at) {
            (Some(start), Some(end)) => Some((end - start).num_milliseconds()),
            _ => None,
        }
    }

    /// Whether it streams no progress events: true for `fire_and_forget`
    /// and `silent`; only `deferred` executions stream.
    pub fn is_silent(&self) -> bool {
        matches!(
            self.config.mode,
            BackgroundExecutionMode::Silent | BackgroundExecutionMode::FireAndForget
        )
    }

    /// Whether its caller waits for the result: true for `silent` only.
    /// (A `deferred` execution's result goes to its callback instead; see
    /// [`calls_back`](Self::calls_back).)
    pub fn requires_result(&self) -> bool {
        self.config.mode == BackgroundExecutionMode::Silent
    }

    /// Whether its record is POSTed to `callbackUrl` when it ends: a
    /// `deferred` execution with a callback URL. Only deferred executions
    /// call back; a submission of another mode with a callback URL is
    /// refused.
    pub fn calls_back(&self) -> bool {
        self.config.mode == BackgroundExecutionMode::Deferred && self.config.callback_url.is_some()
    }

    /// Whether a deferred execution is still held: queued, never started,
    /// not released and with no run-at time of its own.
    pub fn is_held(&self) -> bool {
        self.config.mode == BackgroundExecutionMode::Deferred
            && self.attempt == 0
            && self.released_at.is_none()
            && self.not_before.is_none()
            && self.status == BackgroundExecutionStatus::Queued
    }
}

/// The part of a completed execution's output its target binding names:
/// the whole output, or the value at the binding's JSON pointer. `None`
/// without an output, a binding, or a value at the pointer.
pub fn bound_output(execution: &BackgroundExecution) -> Option<&serde_json::Value> {
    let output = execution.output.as_ref()?;
    match execution.config.target_binding.as_ref()?.path.as_deref() {
        None | Some("") => Some(output),
        Some(pointer) => output.pointer(pointer),
    }
}

/// A priority queue of executions: higher priority first, submission order
/// within a priority; O(log n) per operation.
#[derive(Clone, Debug, Default)]
pub struct BackgroundExecutionQueue {
    queue: PriorityQueue<BackgroundExecution>,
    next: u64,
}

impl BackgroundExecutionQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an execution behind those of its priority already queued.
    pub fn enqueue(&mut self, execution: BackgroundExecution) {
        self.next += 1;
        let (id, priority) = (execution.execution_id, execution.config.priority);
        self.queue.push(id, priority, self.next, execution);
    }

    /// Removes and returns the next execution to run.
    pub fn dequeue(&mut self) -> Option<BackgroundExecution> {
        self.queue.pop().map(|(_, execution)| execution)
    }

    /// The next execution to run, left in the queue.
    pub fn peek(&self) -> Option<&BackgroundExecution> {
        self.queue.peek().map(|(_, execution)| execution)
    }

    /// How many executions are queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The queued ids in dequeue order.
    pub fn execution_ids(&self) -> Vec<ExecutionId> {
        self.queue.ids().collect()
    }
}
