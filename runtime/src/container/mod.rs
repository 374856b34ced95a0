//! A container as the verbs see it: its persisted record plus its state directory. One file per
//! verb: `create`, `start`, `kill`, `delete`, `exec`, `pause` (and resume), `ps`, `update`,
//! `events` (and stats).

mod create;
mod delete;
mod events;
mod exec;
mod kill;
mod pause;
mod ps;
mod start;
mod update;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::state::{Record, Status};

pub use create::{CreateOptions, Created};
pub use exec::{ExecOptions, ExecProcess};

/// A container known to the runtime.
#[derive(Debug)]
pub struct Container {
    pub(crate) dir: PathBuf,
    pub(crate) record: Record,
}

/// The state document of the OCI runtime spec, plus the fields runc adds (`rootfs`, `created`,
/// `owner`), which tools read too.
#[derive(Clone, Debug, Serialize)]
pub struct OciState {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The runtime-spec version this runtime implements.
pub const OCI_VERSION: &str = "1.2.1";

impl Container {
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// Host pid of the container's init.
    pub fn pid(&self) -> i32 {
        self.record.pid
    }

    pub fn bundle(&self) -> &Path {
        &self.record.bundle
    }

    pub fn record(&self) -> &Record {
        &self.record
    }

    /// Where compiled seccomp programs are cached: beside the containers, in the state root.
    pub(crate) fn seccomp_cache(&self) -> PathBuf {
        self.dir
            .parent()
            .unwrap_or(&self.dir)
            .join(".seccomp-cache")
    }

    /// The directory holding the container's state.
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    pub fn status(&self) -> Status {
        self.record.status(&self.dir)
    }

    pub fn oci_state(&self) -> OciState {
        let status = self.status();
        OciState {
            oci_version: OCI_VERSION.to_string(),
            id: self.record.id.clone(),
            // A stopped container has no process; runc reports 0 as well.
            pid: if status == Status::Stopped {
                0
            } else {
                self.record.pid
            },
            status,
            bundle: self.record.bundle.clone(),
            rootfs: self.record.rootfs.clone(),
            created: self.record.created.clone(),
            owner: user_name(self.record.owner_uid),
            annotations: self.record.annotations.clone(),
        }
    }
}

/// Name of a host user from /etc/passwd, or the number.
pub(crate) fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                let id: u32 = f.nth(1)?.parse().ok()?;
                (id == uid).then(|| name.to_string())
            })
        })
        .unwrap_or_else(|| format!("#{uid}"))
}
