//! Public error types: one per kind of operation, and one umbrella.
//!
//! - [`StorageError`]: a fail-stop problem with the ledger's storage (I/O,
//!   damaged data at seq N, a lost suffix, a directory in use), with a
//!   [`kind`](StorageError::kind) and, where it applies, the
//!   [`seq`](StorageError::seq) where it was found. Opening, `verify`,
//!   `flush`, `stats` and reading the log return it.
//! - [`CommandError`]: why a command (or a read of one execution) was not
//!   carried out — not found, refused by the state machine, invalid input,
//!   an idempotency conflict — or [`CommandError::Storage`].
//! - [`Error`]: either of them, for a caller who handles them alike; each
//!   converts into it with `?`.
//!
//! Smaller ones: [`TransitionError`] (an illegal
//! transition) and [`ParseIdError`](crate::ParseIdError) (a malformed id).

use std::fmt;

use crate::ids::{ExecutionId, TenantId};
use crate::machine::TransitionError;

/// What kind of fail-stop problem a [`StorageError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The operating system refused a read, write or sync.
    Io,
    /// Stored data is damaged or was altered: a record that does not decode,
    /// a broken hash link, a gap in the seqs, an illegal transition in the
    /// log. [`StorageError::seq`] says where.
    Corrupt,
    /// The log ends before the last seq known to be durable (the checkpoint):
    /// acknowledged events were lost.
    LostSuffix,
    /// The checkpoint beside a non-empty log is missing or damaged, so a
    /// lost tail of the log cannot be detected. Opening with
    /// [`LedgerBuilder::accept_tail`](crate::LedgerBuilder::accept_tail)
    /// accepts the log as it is.
    Checkpoint,
    /// A record written by a format version this build does not read.
    UnsupportedVersion,
    /// Another process holds the data directory.
    Locked,
    /// The data directory cannot be used (not a directory, not writable).
    BadDirectory,
    /// There is no ledger in the directory, and the ledger was opened
    /// without creating one
    /// ([`LedgerBuilder::create(false)`](crate::LedgerBuilder::create)).
    NoLedger,
    /// An earlier write or sync failed; the ledger refuses further writes.
    Poisoned,
    /// The database server cannot be reached, or refused a statement.
    Database,
}

/// A fail-stop problem: I/O, damaged data, a lost suffix, a directory in use.
#[derive(Debug)]
pub struct StorageError {
    kind: ErrorKind,
    seq: Option<u64>,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl StorageError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        StorageError {
            kind,
            seq: None,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn corrupt(seq: u64, message: impl Into<String>) -> Self {
        StorageError::new(ErrorKind::Corrupt, message).at_seq(seq)
    }

    pub(crate) fn at_seq(mut self, seq: u64) -> Self {
        self.seq = Some(seq);
        self
    }

    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        let context = context.into();
        StorageError::new(ErrorKind::Io, format!("{context}: {source}")).with_source(source)
    }

    /// The same error with `context` before its message ("context: message").
    pub(crate) fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The same error without its source, for answering every command of
    /// a group that shared one failed sync.
    pub(crate) fn duplicate(&self) -> Self {
        StorageError {
            kind: self.kind,
            seq: self.seq,
            message: self.message.clone(),
            source: None,
        }
    }

    /// What kind of problem it is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The seq where the problem was found, when it concerns one.
    pub fn seq(&self) -> Option<u64> {
        self.seq
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            Some(seq) if self.kind == ErrorKind::Corrupt => {
                write!(f, "damaged log at seq {seq}: {}", self.message)
            }
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Why a ledger command (or a read of one execution) was not carried out.
/// Nothing was appended, except with `Storage`: the storage failed, maybe
/// after the command's events were written (the ledger then refuses
/// further writes until it is opened again, which tells what is in the
/// log).
#[derive(Debug)]
#[non_exhaustive]
pub enum CommandError {
    /// No such execution (or it belongs to another tenant).
    NotFound(ExecutionId),
    /// The state machine refused the transition.
    Transition(TransitionError),
    /// The input is malformed or out of range; the message names the field.
    Invalid(String),
    /// The idempotency key was used before for a different submission.
    IdempotencyConflict {
        /// The key.
        key: String,
        /// The execution the key names: the first submission's.
        execution: ExecutionId,
    },
    /// The storage engine does not offer this (yet); the message says what.
    Unsupported(String),
    /// The execution is archived: its history is read from the archive's
    /// segments, which do not change, so no command changes it.
    Archived(ExecutionId),
    /// The tenant has no schedule of this name.
    NoSchedule {
        /// The tenant.
        tenant: TenantId,
        /// The name asked for.
        name: String,
    },
    /// The schedule is not in a state the command takes (a name taken
    /// already, a pause of a paused one); the message says which.
    ScheduleConflict(String),
    /// The pause is not in a state the command takes (a pause of what is
    /// paused already, a resume of what is not); the message says which.
    PauseConflict(String),
    /// A fail-stop problem with the storage.
    Storage(StorageError),
}

impl CommandError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        CommandError::Invalid(message.into())
    }

    /// The storage problem of a command that meets no other (recovering
    /// abandoned executions has no input to refuse and no execution to
    /// miss).
    pub(crate) fn into_storage(self) -> StorageError {
        match self {
            CommandError::Storage(e) => e,
            other => StorageError::new(ErrorKind::Io, other.to_string()),
        }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::NotFound(id) => write!(f, "{id} not found"),
            CommandError::Archived(id) => write!(
                f,
                "{id} is archived: its history is kept in the archive, which does not change"
            ),
            CommandError::Transition(e) => e.fmt(f),
            CommandError::Invalid(m)
            | CommandError::Unsupported(m)
            | CommandError::ScheduleConflict(m)
            | CommandError::PauseConflict(m) => f.write_str(m),
            CommandError::NoSchedule { tenant, name } => {
                write!(f, "tenant {tenant} has no schedule {name:?}")
            }
            CommandError::IdempotencyConflict { key, execution } => write!(
                f,
                "idempotency key {key:?} was used for {execution} with a different submission"
            ),
            CommandError::Storage(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for CommandError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CommandError::Transition(e) => Some(e),
            CommandError::Storage(e) => Some(e),
            _ => None,
        }
    }
}

impl From<StorageError> for CommandError {
    fn from(e: StorageError) -> Self {
        CommandError::Storage(e)
    }
}

impl From<TransitionError> for CommandError {
    fn from(e: TransitionError) -> Self {
        CommandError::Transition(e)
    }
}

/// Any error of the ledger: a command's or the storage's.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A command (or a read of one execution) was not carried out.
    Command(CommandError),
    /// A fail-stop problem with the storage.
    Storage(StorageError),
}

impl Error {
    /// The storage problem behind the error, if it is one (directly or as
    /// a command's).
    pub fn storage(&self) -> Option<&StorageError> {
        match self {
            Error::Storage(e) | Error::Command(CommandError::Storage(e)) => Some(e),
            Error::Command(_) => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Command(e) => e.fmt(f),
            Error::Storage(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Command(e) => e.source(),
            Error::Storage(e) => e.source(),
        }
    }
}

impl From<CommandError> for Error {
    fn from(e: CommandError) -> Self {
        Error::Command(e)
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        Error::Storage(e)
    }
}

impl From<TransitionError> for Error {
    fn from(e: TransitionError) -> Self {
        Error::Command(e.into())
    }
}
