//! Containers as the daemon keeps them: a record on disk per container (config, host config,
//! state), an in-memory registry with name and id-prefix lookup, and watchers that wake `wait`
//! callers. The verbs (create, start, stop, kill, remove …) are in [`lifecycle`]; the OCI spec
//! is made by [`spec`].

pub mod lifecycle;
pub mod spec;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use crate::records;

/// Docker's container statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }
}

/// The monitor process holding a running container, identified by pid and start time so a
/// reused pid is never taken for it after a daemon restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorProcess {
    pub pid: i32,
    pub start_time: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    pub status: Status,
    pub pid: i32,
    pub exit_code: i32,
    pub error: String,
    pub oom_killed: bool,
    pub started_at: String,
    pub finished_at: String,
    pub monitor: Option<MonitorProcess>,
}

/// Docker's zero time, which `StartedAt`/`FinishedAt` show before the event.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

impl Default for State {
    fn default() -> Self {
        State {
            status: Status::Created,
            pid: 0,
            exit_code: 0,
            error: String::new(),
            oom_killed: false,
            started_at: ZERO_TIME.into(),
            finished_at: ZERO_TIME.into(),
            monitor: None,
        }
    }
}

/// One container's record, as stored in `<root>/containers/<id>/container.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub name: String,
    pub created: String,
    /// The image as the client named it.
    pub image: String,
    pub image_id: String,
    /// The create request's `Config` (without `HostConfig`), returned by inspect.
    pub config: Value,
    pub host_config: Value,
    /// The storage snapshot holding the container's writable layer.
    pub snapshot: String,
    pub log_path: Option<PathBuf>,
    pub state: State,
    #[serde(default)]
    pub restart_count: u32,
    /// Docker's `Mounts` of inspect, filled at start.
    #[serde(default)]
    pub mount_points: Vec<Value>,
    /// Set by `stop`, so restart policies leave the container alone until it is started again.
    #[serde(default)]
    pub manually_stopped: bool,
    /// The networks the container is on, by name, with their endpoints while it runs.
    #[serde(default)]
    pub networks: std::collections::BTreeMap<String, crate::networks::Attachment>,
    /// Ports published while it runs (`-p`), with the host ports they got.
    #[serde(default)]
    pub published: Vec<crate::ports::Published>,
}

/// What `wait` watches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lifecycle {
    pub running: bool,
    /// How many exits have been seen (`next-exit` waits for this to grow).
    pub exits: u64,
    pub removed: bool,
    pub exit_code: i32,
}

/// A container in memory.
pub struct Handle {
    pub id: String,
    record: Mutex<Record>,
    /// Serializes the verbs that change the container (start, stop, remove …).
    pub op: tokio::sync::Mutex<()>,
    lifecycle: watch::Sender<Lifecycle>,
    /// Attach connections made before start, handed to the monitor when it is spawned.
    pending_attach: Mutex<Vec<OwnedFd>>,
    /// Records are written here.
    dir: PathBuf,
}

impl Handle {
    fn new(record: Record, dir: PathBuf) -> Handle {
        let lifecycle = Lifecycle {
            running: matches!(record.state.status, Status::Running | Status::Paused),
            exits: 0,
            removed: false,
            exit_code: record.state.exit_code,
        };
        Handle {
            id: record.id.clone(),
            record: Mutex::new(record),
            op: tokio::sync::Mutex::new(()),
            lifecycle: watch::channel(lifecycle).0,
            pending_attach: Mutex::new(Vec::new()),
            dir,
        }
    }

    pub fn record(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> Record {
        self.record().clone()
    }

    /// Changes the record and writes it (atomically) before anyone can see the change.
    pub fn update(&self, change: impl FnOnce(&mut Record)) -> std::io::Result<()> {
        let mut record = self.record();
        let mut next = record.clone();
        change(&mut next);
        records::write_json(&self.dir.join("container.json"), &next)?;
        *record = next;
        Ok(())
    }

    pub fn status(&self) -> Status {
        self.record().state.status
    }

    pub fn name(&self) -> String {
        self.record().name.clone()
    }

    pub fn watch(&self) -> watch::Receiver<Lifecycle> {
        self.lifecycle.subscribe()
    }

    pub fn notify(&self, change: impl FnOnce(&mut Lifecycle)) {
        self.lifecycle.send_modify(change);
    }

    pub fn add_pending_attach(&self, fd: OwnedFd) {
        self.pending_attach
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(fd);
    }

    pub fn take_pending_attach(&self) -> Vec<OwnedFd> {
        std::mem::take(
            &mut *self
                .pending_attach
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// `<root>/containers/<id>`: the record and the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Every container of the daemon.
pub struct Containers {
    dir: PathBuf,
    by_id: RwLock<HashMap<String, Arc<Handle>>>,
}

impl Containers {
    /// Loads the records under `dir` (a record that does not parse is reported and skipped).
    pub fn open(dir: &Path) -> std::io::Result<Containers> {
        std::fs::create_dir_all(dir).map_err(|e| records::at(e, "mkdir", dir))?;
        let mut by_id = HashMap::new();
        for entry in std::fs::read_dir(dir).map_err(|e| records::at(e, "read", dir))? {
            let path = entry?.path();
            let file = path.join("container.json");
            if !file.exists() {
                continue;
            }
            match records::read_json::<Record>(&file) {
                Ok(r) => {
                    by_id.insert(r.id.clone(), Arc::new(Handle::new(r, path)));
                }
                Err(e) => tracing::error!("skipping container record: {e}"),
            }
        }
        Ok(Containers {
            dir: dir.to_path_buf(),
            by_id: RwLock::new(by_id),
        })
    }

    /// Registers a new container (its name checked under the same lock) and writes its record.
    pub fn insert(&self, record: Record) -> Result<Arc<Handle>, InsertError> {
        let mut by_id = self.by_id.write().unwrap_or_else(|p| p.into_inner());
        if let Some(other) = by_id.values().find(|h| h.name() == record.name) {
            return Err(InsertError::NameInUse(other.id.clone()));
        }
        let dir = self.dir.join(&record.id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| InsertError::Io(records::at(e, "mkdir", &dir)))?;
        records::write_json(&dir.join("container.json"), &record).map_err(InsertError::Io)?;
        let handle = Arc::new(Handle::new(record, dir));
        by_id.insert(handle.id.clone(), handle.clone());
        Ok(handle)
    }

    /// Renames under the registry lock, so two renames cannot take one name.
    pub fn rename(&self, handle: &Handle, name: &str) -> Result<(), InsertError> {
        let by_id = self.by_id.write().unwrap_or_else(|p| p.into_inner());
        if let Some(other) = by_id
            .values()
            .find(|h| h.name() == name && h.id != handle.id)
        {
            return Err(InsertError::NameInUse(other.id.clone()));
        }
        handle
            .update(|r| r.name = name.to_string())
            .map_err(InsertError::Io)
    }

    pub fn remove(&self, id: &str) {
        self.by_id
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// By full id, by name (with or without the leading `/`), or by a unique id prefix.
    pub fn find(&self, key: &str) -> Option<Arc<Handle>> {
        let by_id = self.by_id.read().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = by_id.get(key) {
            return Some(h.clone());
        }
        let name = key.strip_prefix('/').unwrap_or(key);
        if let Some(h) = by_id.values().find(|h| h.name() == name) {
            return Some(h.clone());
        }
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let mut found = by_id.values().filter(|h| h.id.starts_with(key));
        match (found.next(), found.next()) {
            (Some(one), None) => Some(one.clone()),
            _ => None,
        }
    }

    pub fn all(&self) -> Vec<Arc<Handle>> {
        let mut all: Vec<Arc<Handle>> = self
            .by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        // Newest first, as `docker ps` lists them.
        all.sort_by_key(|h| std::cmp::Reverse(h.record().created.clone()));
        all
    }
}

#[derive(Debug)]
pub enum InsertError {
    NameInUse(String),
    Io(std::io::Error),
}
