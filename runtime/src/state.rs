//! A container's persisted record under the state root, and how its status is derived from the
//! kernel rather than stored (a record never says "running" about a process that is gone).

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::cgroups::Cgroup;
use crate::error::{Context, Error, Result};
use crate::namespaces::NamespaceKind;

pub(crate) const STATE_FILE: &str = "state.json";
/// The FIFO the waiting init opens for writing; `start` opens it for reading. Present exactly
/// while the container is `created`.
pub(crate) const EXEC_FIFO: &str = "exec.fifo";
/// Written before the container's cgroup is made, holding its plan, and present until the init
/// reports ready: the container is `creating` meanwhile, and `start` and `exec` refuse it
/// (before the record exists the container is not there at all), and `delete --force` of a
/// killed create reads the plan to remove the cgroup (`Runtime::remove_leftovers`). One file
/// for both: where the state root is on a disk filesystem rather than tmpfs (this VM's /run
/// is ext4 without a journal, ~0.1 ms per inode) every inode made and removed costs.
pub(crate) const CREATING: &str = "creating";
/// Where earlier builds kept the cgroup plan: read and removed in state directories they left.
pub(crate) const OLD_CGROUP_FILE: &str = "cgroup.json";

/// The OCI lifecycle states (plus `paused`, which runc reports too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// What `create` leaves behind for the other verbs. Serialized as `state.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// Host pid of the container's init.
    pub pid: i32,
    /// Start time of `pid` in clock ticks since boot (/proc/PID/stat field 22): tells our init
    /// from an unrelated process that reused the pid.
    pub init_start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339 creation time.
    pub created: String,
    pub owner_uid: u32,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub cgroup: Cgroup,
    /// Namespaces the container has of its own (created or joined), which `exec` must enter.
    pub namespaces: Vec<NamespaceKind>,
    /// The container's pid namespace was made for it: when its init dies, the kernel kills
    /// every other process in it, so nothing can outlive the init.
    #[serde(default)]
    pub owns_pid_namespace: bool,
    /// The config the container was created from, as written: `exec` takes its defaults from
    /// it, `update` records new limits in it, hooks read it. Parsed only when asked for
    /// ([`Record::spec`]): a `start` or `delete` that parsed it spent ~0.15 ms on it for nothing.
    pub(crate) spec: Box<RawValue>,
    /// Whether the config has poststart or poststop hooks, which `start` and `delete` run
    /// (absent from records written before it was kept: then the config is looked at).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) late_hooks: Option<bool>,
}

impl Record {
    /// The container's config.
    pub fn spec(&self) -> Result<Spec> {
        serde_json::from_str(self.spec.get()).map_err(|e| Error::Sys {
            op: format!(
                "parse the config kept in the state of container {}",
                self.id
            ),
            source: e.into(),
        })
    }

    /// Replaces the config kept in the record.
    pub(crate) fn set_spec(&mut self, spec: &Spec) -> Result<()> {
        self.spec = encode_spec(spec)?;
        self.late_hooks = Some(has_late_hooks(spec));
        Ok(())
    }

    /// Whether `start` or `delete` may have hooks to run (then they parse the config).
    pub(crate) fn may_have_late_hooks(&self) -> bool {
        self.late_hooks != Some(false)
    }

    pub(crate) fn load(dir: &Path, id: &str) -> Result<Record> {
        let path = dir.join(STATE_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.to_string()));
            }
            Err(e) => return Err(e).at("read", &path),
        };
        serde_json::from_slice(&bytes).map_err(|e| Error::Sys {
            op: format!("parse {}", path.display()),
            source: e.into(),
        })
    }

    pub(crate) fn save(&self, dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec(self).map_err(|e| Error::sys("encode state", e))?;
        write_atomic(&dir.join(STATE_FILE), &bytes)
    }

    /// The status as the kernel sees it now.
    pub fn status(&self, dir: &Path) -> Status {
        match process_stat(self.pid) {
            Some(stat) if stat.start_time == self.init_start_time && !stat.is_dead() => {
                if dir.join(CREATING).exists() {
                    Status::Creating
                } else if dir.join(EXEC_FIFO).exists() {
                    Status::Created
                } else if self.cgroup.is_frozen() {
                    Status::Paused
                } else {
                    Status::Running
                }
            }
            _ => Status::Stopped,
        }
    }
}

/// The two fields of /proc/PID/stat the runtime needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProcessStat {
    pub state: u8,
    pub start_time: u64,
}

impl ProcessStat {
    /// A zombie has exited; only its parent's wait is missing.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }
}

pub(crate) fn process_stat(pid: i32) -> Option<ProcessStat> {
    let text = crate::sys::read_pseudo_file(Path::new(&format!("/proc/{pid}/stat"))).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &[u8]) -> Option<ProcessStat> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&text[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.bytes().next()?;
    // Field 3 is the state; starttime is field 22, i.e. 19 further on.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(ProcessStat { state, start_time })
}

/// Replaces `path` with `bytes` so a reader sees the old or the new content, never a mix, even
/// if the writer is killed midway: temp file, then rename. No fsync: the runtime's state
/// describes processes, which do not survive a reboot either; it belongs in a run directory
/// (tmpfs), and a crash of the machine makes it moot. (An fsync pair cost ~1 ms per container
/// on a disk-backed root.)
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let write = || -> std::io::Result<()> {
        // 0600: the record holds the whole config, environment (secrets) included.
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?
            .write_all(bytes)?;
        fs::rename(&tmp, path)
    };
    write()
        .inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
        .at("write", path)
}

/// RFC 3339 UTC time with nanoseconds, as runc prints in `state`.
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// A config as the record keeps it.
pub(crate) fn encode_spec(spec: &Spec) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(spec).map_err(|e| Error::sys("encode config for the state", e))
}

/// The config has hooks that `start` (poststart) or `delete` (poststop) run.
pub(crate) fn has_late_hooks(spec: &Spec) -> bool {
    crate::hooks::any(
        spec,
        &[
            crate::hooks::HookPoint::Poststart,
            crate::hooks::HookPoint::Poststop,
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_hostile_comm() {
        let line =
            b"1234 (a) b) (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10";
        let st = parse_stat(line).unwrap();
        assert_eq!(st.state, b'S');
        assert_eq!(st.start_time, 98765);
        assert!(!st.is_dead());
    }

    #[test]
    fn zombie_is_dead() {
        let line = b"7 (sh) Z 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55 0 0";
        assert!(parse_stat(line).unwrap().is_dead());
    }

    #[test]
    fn truncated_stat_is_none() {
        assert!(parse_stat(b"7 (sh) S 1 2").is_none());
        assert!(parse_stat(b"garbage").is_none());
    }

    #[test]
    fn own_process_is_alive() {
        let st = process_stat(std::process::id() as i32).unwrap();
        assert!(!st.is_dead());
        assert!(st.start_time > 0);
    }

    #[test]
    fn atomic_write_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn the_config_is_parsed_only_when_asked_for() {
        let mut spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "hooks": {"poststop": [{"path": "/bin/true"}]}
        }))
        .unwrap();
        let record = |spec: &Spec, late_hooks| Record {
            id: "c".into(),
            pid: 1,
            init_start_time: 1,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: now_rfc3339(),
            owner_uid: 0,
            annotations: BTreeMap::new(),
            cgroup: Cgroup::default(),
            namespaces: Vec::new(),
            owns_pid_namespace: true,
            spec: encode_spec(spec).unwrap(),
            late_hooks,
        };
        let with_hooks = record(&spec, Some(has_late_hooks(&spec)));
        assert!(with_hooks.may_have_late_hooks());
        let back: Record =
            serde_json::from_slice(&serde_json::to_vec(&with_hooks).unwrap()).unwrap();
        assert_eq!(back.spec().unwrap(), spec);

        spec.set_hooks(None);
        assert!(!record(&spec, Some(has_late_hooks(&spec))).may_have_late_hooks());
        // A record written before `late_hooks` was kept: the config is looked at.
        let mut old = serde_json::to_value(record(&spec, None)).unwrap();
        assert!(old.get("late_hooks").is_none());
        old.as_object_mut().unwrap().remove("late_hooks");
        let old: Record = serde_json::from_value(old).unwrap();
        assert!(old.may_have_late_hooks());
        assert_eq!(old.spec().unwrap(), spec);
    }
}
