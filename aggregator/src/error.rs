//! Errors, classified the way an operator needs them (as Arroyo does):
//!
//! * **user** — a broken `.sql` file, schema or flag: fix the input; retrying is useless;
//! * **external** — a store or source that is down or refuses: retry with backoff;
//! * **internal** — a bug of ours: report it.
//!
//! Every message names the file, URI or offset it is about.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    User,
    External,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error {
    pub fn user(message: impl Into<String>) -> Self {
        Error { kind: ErrorKind::User, message: message.into() }
    }
    pub fn external(message: impl Into<String>) -> Self {
        Error { kind: ErrorKind::External, message: message.into() }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Error { kind: ErrorKind::Internal, message: message.into() }
    }
    /// Whether waiting and trying again can help.
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::External
    }
    /// The same error with `context` in front of the message.
    pub fn context(self, context: impl fmt::Display) -> Self {
        Error { kind: self.kind, message: format!("{context}: {}", self.message) }
    }
}

impl Error {
    /// This error inside a DataFusionError, for an operator run as a plan node; it
    /// comes back out unchanged (see the `From` below).
    pub fn into_datafusion(self) -> datafusion::error::DataFusionError {
        datafusion::error::DataFusionError::External(Box::new(self))
    }
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        // One of ours that went through a plan node: as it was.
        if let datafusion::error::DataFusionError::External(inner) = e.find_root()
            && let Some(ours) = inner.downcast_ref::<Error>()
        {
            return Error { kind: ours.kind, message: ours.message.clone() };
        }
        Error::internal(e.to_string())
    }
}

impl From<datafusion::arrow::error::ArrowError> for Error {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        Error::internal(e.to_string())
    }
}

impl From<store::StoreError> for Error {
    fn from(e: store::StoreError) -> Self {
        Error::external(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
