//! The one error type of the client and the exit status each kind maps to.

use std::fmt;

/// Everything a command can fail with. `Display` is what the user sees on stderr.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The socket is missing or refuses connections.
    #[error("Cannot connect to the berth daemon at {host}. Is berthd running?")]
    Connect { host: String },
    /// The daemon answered with a status >= 400; `message` is its `{"message": …}`.
    #[error("Error response from daemon: {message}")]
    Daemon { status: u16, message: String },
    /// The HTTP exchange broke half-way (connection reset, malformed response).
    #[error("error during connect: {0}")]
    Http(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The daemon sent something this client cannot decode.
    #[error("error decoding response from daemon: {0}")]
    Decode(String),
    /// Bad flags or arguments, caught before talking to the daemon.
    #[error("{0}")]
    Usage(String),
    /// Any other failure with a ready-made message (e.g. an error line in a pull stream).
    #[error("{0}")]
    Message(String),
    /// Wraps another error and overrides its exit status (run/create use 125, 126, 127).
    #[error("{source}")]
    WithStatus {
        code: i32,
        #[source]
        source: Box<CliError>,
    },
}

impl CliError {
    /// The process exit status for this error, as the docker CLI would use.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::WithStatus { code, .. } => *code,
            CliError::Usage(_) => 125,
            _ => 1,
        }
    }

    /// Gives this error the exit status `code` unless it already carries one.
    pub fn with_status(self, code: i32) -> CliError {
        match self {
            CliError::WithStatus { .. } => self,
            other => CliError::WithStatus {
                code,
                source: Box::new(other),
            },
        }
    }

    /// True when the daemon answered 404 (no such container/image/network/volume).
    pub fn is_not_found(&self) -> bool {
        match self {
            CliError::Daemon { status, .. } => *status == 404,
            CliError::WithStatus { source, .. } => source.is_not_found(),
            _ => false,
        }
    }

    pub fn message(text: impl fmt::Display) -> CliError {
        CliError::Message(text.to_string())
    }
}

impl From<serde_json::Error> for CliError {
    fn from(err: serde_json::Error) -> Self {
        CliError::Decode(err.to_string())
    }
}

/// Maps the text of an error from `start` to docker's exit status: 127 when the command
/// does not exist, 126 when it cannot be executed, 125 for every other failure.
pub fn start_failure_status(message: &str) -> i32 {
    let lower = message.to_ascii_lowercase();
    if lower.contains("executable file not found")
        || lower.contains("no such file or directory")
        || lower.contains("command not found")
    {
        127
    } else if lower.contains("permission denied") || lower.contains("is a directory") {
        126
    } else {
        125
    }
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_error_prints_like_docker() {
        let err = CliError::Daemon {
            status: 404,
            message: "No such container: web".into(),
        };
        assert_eq!(
            err.to_string(),
            "Error response from daemon: No such container: web"
        );
        assert_eq!(err.exit_code(), 1);
        assert!(err.is_not_found());
    }

    #[test]
    fn connect_error_names_the_host() {
        let err = CliError::Connect {
            host: "unix:///run/berth/berth.sock".into(),
        };
        assert_eq!(
            err.to_string(),
            "Cannot connect to the berth daemon at unix:///run/berth/berth.sock. Is berthd running?"
        );
    }

    #[test]
    fn with_status_keeps_message_and_first_status() {
        let err = CliError::Daemon {
            status: 500,
            message: "boom".into(),
        }
        .with_status(125);
        assert_eq!(err.exit_code(), 125);
        assert_eq!(err.to_string(), "Error response from daemon: boom");
        assert_eq!(err.with_status(1).exit_code(), 125);
    }

    #[test]
    fn start_failures_map_to_126_and_127() {
        assert_eq!(
            start_failure_status(r#"exec: "nope": executable file not found in $PATH"#),
            127
        );
        assert_eq!(start_failure_status("exec /etc: permission denied"), 126);
        assert_eq!(start_failure_status("cgroup setup failed"), 125);
    }
}
