//! The storage error: what failed, on which snapshot or path, and why.

use std::io;
use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("snapshot {0:?} does not exist")]
    NotFound(String),
    #[error("snapshot {0:?} already exists")]
    Exists(String),
    #[error("snapshot {key:?}: {reason}")]
    Invalid { key: String, reason: String },
    /// A layer that is malformed or hostile; nothing of it stays visible.
    #[error("layer: {0}")]
    Layer(String),
    #[error("layer digest mismatch: expected {expected}, got {actual}")]
    Digest { expected: String, actual: String },
    #[error("{op} {path}: {source}")]
    Path {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{op}: {source}")]
    Sys {
        op: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
    /// The driver's space is (nearly) used up; says how much is left and what to do.
    #[error("{0}")]
    NoSpace(String),
}

impl Error {
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
