//! The runtime's error type: every variant says what failed and on what.

use std::io;
use std::path::{Path, PathBuf};

use crate::state::Status;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `state`, `kill` … of an unknown container. The text "does not exist" is matched by podman.
    #[error("container \"{0}\" does not exist")]
    NotFound(String),

    #[error("container \"{0}\" already exists")]
    AlreadyExists(String),

    #[error("invalid container id {id:?}: {reason}")]
    InvalidId { id: String, reason: &'static str },

    /// A config.json (or process.json) that cannot be used; `field` is the JSON path.
    #[error("{file}: {field}: {reason}")]
    InvalidConfig {
        file: String,
        field: String,
        reason: String,
    },

    /// The container is in a status the operation cannot work on.
    #[error("container \"{id}\" is {status}: cannot {action}")]
    WrongStatus {
        id: String,
        status: Status,
        action: &'static str,
    },

    /// A filesystem operation on a named path failed.
    #[error("{op} {}: {source}", path.display())]
    Path {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A system call (or a step made of a few of them) failed.
    #[error("{op}: {source}")]
    Sys {
        op: String,
        #[source]
        source: io::Error,
    },

    /// The container's init (or exec'd process) failed before running the user program; the
    /// message comes from inside the child and names the step.
    #[error("{0}")]
    Child(String),

    /// Asked for something this build or this kernel does not do.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl Error {
    pub(crate) fn config(file: &str, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            file: file.to_string(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn sys(op: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Error::Sys {
            op: op.into(),
            source: source.into(),
        }
    }

    /// The OS error behind this error, if there is one (used to pick exit codes and retries).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Path { source, .. } | Error::Sys { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Attaches the operation and path (or a description) to an I/O-ish error.
pub(crate) trait Context<T> {
    fn at(self, op: &'static str, path: impl AsRef<Path>) -> Result<T>;
    fn op(self, op: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<io::Error>> Context<T> for std::result::Result<T, E> {
    fn at(self, op: &'static str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::Path {
            op,
            path: path.as_ref().to_path_buf(),
            source: e.into(),
        })
    }

    fn op(self, op: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Sys {
            op: op(),
            source: e.into(),
        })
    }
}
