//! Callables by name, and what a callable sees of its execution.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use crate::execution::{ExecutionError, ExecutionId, TenantId};

/// What a callable returns: an output, or why it failed.
pub type CallResult = Result<serde_json::Value, ExecutionError>;

/// A boxed callable future.
pub type CallFuture = Pin<Box<dyn Future<Output = CallResult> + Send + 'static>>;

pub(crate) type Callable = Arc<dyn Fn(Option<String>, CallContext) -> CallFuture + Send + Sync>;

/// Callables by name.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    callables: HashMap<String, Callable>,
}

impl Registry {
    pub(crate) fn register<F, Fut>(&mut self, name: &str, f: F)
    where
        F: Fn(Option<String>, CallContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CallResult> + Send + 'static,
    {
        let f = Arc::new(move |input, ctx| Box::pin(f(input, ctx)) as CallFuture);
        self.callables.insert(name.to_owned(), f);
    }

    pub(crate) fn get(&self, name: &str) -> Option<Callable> {
        self.callables.get(name).cloned()
    }

    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<_> = self.callables.keys().cloned().collect();
        names.sort();
        names
    }
}

/// A progress message from a running callable.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// The execution it concerns.
    pub execution_id: ExecutionId,
    /// The attempt that emitted it.
    pub attempt: u32,
    /// What the callable reported.
    pub value: serde_json::Value,
}

/// What a running callable knows of its execution: who it is, whether it
/// was cancelled, and a way to report progress.
#[derive(Clone, Debug)]
pub struct CallContext {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The attempt running, from 1.
    pub attempt: u32,
    /// Its context map.
    pub context: HashMap<String, String>,
    pub(crate) cancelled: watch::Receiver<bool>,
    pub(crate) progress: Option<broadcast::Sender<Progress>>,
}

impl CallContext {
    /// Whether the execution was cancelled (the callable should stop).
    pub fn is_cancelled(&self) -> bool {
        *self.cancelled.borrow()
    }

    /// Resolves when the execution is cancelled.
    pub async fn cancelled(&mut self) {
        while !*self.cancelled.borrow_and_update() {
            if self.cancelled.changed().await.is_err() {
                // The runtime dropped the attempt: nobody will cancel it any more.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Reports progress to the execution's subscribers. Silent executions
    /// have none: the call does nothing.
    pub fn progress(&self, value: serde_json::Value) {
        if let Some(tx) = &self.progress {
            let _ = tx.send(Progress {
                execution_id: self.execution_id,
                attempt: self.attempt,
                value,
            });
        }
    }
}
