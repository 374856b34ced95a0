//! The monitor: one small process per running container that holds its stdio and learns its
//! exit status, so berthd can die (`kill -9` included) and come back without the container
//! noticing. What the daemon and the monitor say to each other lives here; the monitor's own
//! loop is in [`process`].
//!
//! ```text
//! berthd ──spawn──> berth-monitor <state dir>      (setsid; fds 3 = report pipe,
//!                      │                             4 = listening socket, 5.. = attached)
//!                      ├─ runtime create_for_run + start (library calls, single-threaded)
//!                      ├─ writes "ok <pid>\n" or "error <text>\n" on fd 3, closes it
//!                      ├─ poll: container stdout/stderr (or pty) → json-file log + attached
//!                      │        clients; client bytes → container stdin; new clients
//!                      └─ on exit: drain, delete the runtime container, write exit.json, exit
//! ```
//! A client (the daemon's `attach`) connects to the socket and sends one JSON line, an
//! [`Request`]; after an `Attach` the connection carries Docker's stream format (8-byte frame
//! headers, or raw with a tty) out and raw stdin bytes in.

pub mod process;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::json_log::Rotation;

/// The file in a container's state directory the daemon writes before spawning the monitor.
pub const CONFIG_FILE: &str = "monitor.json";
/// Written (atomically) by the monitor once the container has exited and is deleted.
pub const EXIT_FILE: &str = "exit.json";
/// The descriptor numbers the monitor is handed.
pub const REPORT_FD: i32 = 3;
pub const LISTEN_FD: i32 = 4;
pub const FIRST_ATTACHED_FD: i32 = 5;

/// Everything the monitor needs to run one container.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    pub id: String,
    /// The runtime's state root.
    pub runtime_root: PathBuf,
    pub bundle: PathBuf,
    /// The json-file log, or none (`--log-driver none`).
    pub log_path: Option<PathBuf>,
    #[serde(default)]
    pub log_rotation: Rotation,
    pub tty: bool,
    pub open_stdin: bool,
    /// Close the container's stdin when the (first) client attached to it goes away.
    pub stdin_once: bool,
    /// Run this OCI process in the (running) container `id` instead of creating it: `exec`.
    #[serde(default)]
    pub exec: Option<serde_json::Value>,
    /// The terminal's size (rows, columns) before the container starts.
    #[serde(default)]
    pub console_size: Option<(u16, u16)>,
    /// How many attached clients were handed over at fds 5…
    #[serde(default)]
    pub attached: u32,
}

/// What a client asks for in the first line of a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Request {
    /// Stream output (the selected streams) out, and stdin in if `stdin`.
    Attach(AttachStreams),
    /// Set the terminal size.
    Resize { height: u16, width: u16 },
}

/// Which streams an attached client takes part in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachStreams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// How the container ended, as the monitor saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// The shell convention: the code, or 128 + signal.
    pub exit_code: i32,
    pub finished_at: String,
    pub oom_killed: bool,
    /// Set when the container never ran (its process could not be started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Exit {
    pub fn read(state_dir: &Path) -> Option<Exit> {
        let bytes = std::fs::read(state_dir.join(EXIT_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// What the monitor reports on its report pipe once the container is running (or not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    Running { pid: i32 },
    Failed(String),
}

impl Report {
    pub fn encode(&self) -> String {
        match self {
            Report::Running { pid } => format!("ok {pid}\n"),
            Report::Failed(text) => format!("error {}\n", text.replace('\n', " ")),
        }
    }

    /// Parses what the monitor wrote; an empty report means it died before saying anything.
    pub fn decode(text: &str) -> Report {
        let line = text.lines().next().unwrap_or("");
        if let Some(pid) = line.strip_prefix("ok ").and_then(|p| p.trim().parse().ok()) {
            return Report::Running { pid };
        }
        match line.strip_prefix("error ") {
            Some(e) => Report::Failed(e.to_string()),
            None if line.is_empty() => {
                Report::Failed("the container monitor exited before starting it".into())
            }
            None => Report::Failed(format!("unexpected monitor report {line:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        for r in [
            Report::Running { pid: 42 },
            Report::Failed("exec: \"nope\": no such file".into()),
        ] {
            assert_eq!(Report::decode(&r.encode()), r);
        }
        assert!(matches!(Report::decode(""), Report::Failed(_)));
        assert_eq!(
            Report::decode(&Report::Failed("a\nb".into()).encode()),
            Report::Failed("a b".into())
        );
    }

    #[test]
    fn requests_are_one_json_line() {
        let r = Request::Attach(AttachStreams {
            stdin: true,
            stdout: true,
            stderr: false,
        });
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains('\n'));
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        let resize: Request =
            serde_json::from_str(r#"{"resize":{"height":24,"width":80}}"#).unwrap();
        assert_eq!(
            resize,
            Request::Resize {
                height: 24,
                width: 80
            }
        );
    }
}
