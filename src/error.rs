//! Public error types.
//!
//! Two kinds, kept apart. Outcomes a caller expects and handles are small
//! dedicated types: [`TransitionError`](crate::TransitionError) (an illegal
//! transition), [`ParseIdError`](crate::ParseIdError) (a malformed id), and the variants of
//! [`LedgerError`] other than `Fatal`. Fail-stop problems (I/O, damaged data at
//! seq N, a lost suffix, a directory in use) go through one opaque [`Error`]
//! with a [`kind`](Error::kind) and, where it applies, the
//! [`seq`](Error::seq) where the problem was found.

use std::fmt;

use crate::ids::ExecutionId;
use crate::machine::TransitionError;

/// What kind of fail-stop problem an [`Error`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The operating system refused a read, write or sync.
    Io,
    /// Stored data is damaged or was altered: a record that does not decode,
    /// a broken hash link, a gap in the seqs, an illegal transition in the
    /// log. [`Error::seq`] says where.
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
}

/// A fail-stop problem: I/O, damaged data, a lost suffix, a directory in use.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    seq: Option<u64>,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            seq: None,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn corrupt(seq: u64, message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Corrupt, message).at_seq(seq)
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
        Error::new(ErrorKind::Io, format!("{context}: {source}")).with_source(source)
    }

    /// The same error with `context` before its message ("context: message").
    pub(crate) fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The same error without its source, for answering every command of
    /// a group that shared one failed sync.
    pub(crate) fn duplicate(&self) -> Self {
        Error {
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

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            Some(seq) if self.kind == ErrorKind::Corrupt => {
                write!(f, "damaged log at seq {seq}: {}", self.message)
            }
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Why a ledger command was not carried out. Nothing was appended.
#[derive(Debug)]
#[non_exhaustive]
pub enum LedgerError {
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
    /// A fail-stop problem with the storage.
    Fatal(Error),
}

impl LedgerError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        LedgerError::Invalid(message.into())
    }
}

impl fmt::Display for LedgerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerError::NotFound(id) => write!(f, "{id} not found"),
            LedgerError::Transition(e) => e.fmt(f),
            LedgerError::Invalid(m) => f.write_str(m),
            LedgerError::IdempotencyConflict { key, execution } => write!(
                f,
                "idempotency key {key:?} was used for {execution} with a different submission"
            ),
            LedgerError::Fatal(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for LedgerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LedgerError::Transition(e) => Some(e),
            LedgerError::Fatal(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Error> for LedgerError {
    fn from(e: Error) -> Self {
        LedgerError::Fatal(e)
    }
}

impl From<TransitionError> for LedgerError {
    fn from(e: TransitionError) -> Self {
        LedgerError::Transition(e)
    }
}
