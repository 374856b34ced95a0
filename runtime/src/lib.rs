//! berth-runtime: an OCI runtime (runtime-spec 1.2, Linux) as a library, with the
//! runc-compatible `berth-runtime` CLI built on the same API.
//!
//! ```no_run
//! use berth_runtime::{CreateOptions, Runtime};
//! let rt = Runtime::new("/run/berth-runtime");
//! let opts = CreateOptions { bundle: "/path/to/bundle".into(), ..Default::default() };
//! let c = rt.create("web1", &opts)?;   // init waits before the user program
//! c.start()?;                           // runs it
//! rt.load("web1")?.kill(libc::SIGTERM, false)?;
//! rt.load("web1")?.delete(true)?;
//! # Ok::<(), berth_runtime::Error>(())
//! ```
//!
//! The library knows nothing of images, registries or networks: it takes a bundle and gives a
//! container, so another engine can embed it as it is.
//!
//! **Threads.** `create`, `create_for_run` and `exec` fork. Call them from a single-threaded
//! process (the CLI is one); a multi-threaded engine should run the CLI or keep a
//! single-threaded helper process for them.

pub mod bundle;
pub mod capabilities;
pub mod cgroups;
mod container;
pub mod error;
pub mod features;
pub mod hooks;
pub mod namespaces;
mod net_devices;
mod process;
pub mod rootfs;
pub mod seccomp;
pub mod signals;
pub mod spec_template;
pub mod state;
mod sys;
pub mod terminal;
pub mod trace;

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

pub use container::{
    Container, CreateOptions, Created, ExecOptions, ExecProcess, OCI_VERSION, OciState,
};
pub use error::{Error, Result};
pub use process::wait::{self, ExitStatus};
pub use state::Status;

use error::Context;
use state::Record;

/// A state root: the directory holding one subdirectory per container.
#[derive(Clone, Debug)]
pub struct Runtime {
    root: PathBuf,
}

impl Runtime {
    /// Where containers are kept unless `--root` says otherwise.
    pub const DEFAULT_ROOT: &'static str = "/run/berth-runtime";

    /// The default state root for this process: [`Runtime::DEFAULT_ROOT`] for root; for an
    /// unprivileged user `$XDG_RUNTIME_DIR/berth-runtime`, as runc does.
    pub fn default_root() -> PathBuf {
        if !rustix::process::geteuid().is_root() {
            if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
                return PathBuf::from(dir).join("berth-runtime");
            }
        }
        PathBuf::from(Self::DEFAULT_ROOT)
    }

    pub fn new(root: impl Into<PathBuf>) -> Runtime {
        Runtime { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Loads a container's record. An unknown id is `Error::NotFound`.
    pub fn load(&self, id: &str) -> Result<Container> {
        validate_id(id)?;
        let dir = self.root.join(id);
        let record = Record::load(&dir, id)?;
        Ok(Container { dir, record })
    }

    /// Every container under the root, sorted by id. Directories without a record (a create
    /// that was killed before writing one) are skipped.
    pub fn list(&self) -> Result<Vec<Container>> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).at("list", &self.root),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.at("list", &self.root)?;
            let Some(id) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            match self.load(&id) {
                Ok(c) => out.push(c),
                Err(Error::NotFound(_)) | Err(Error::InvalidId { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.id().cmp(b.id()));
        Ok(out)
    }

    /// Removes what is left of a container whose record was never written (a killed
    /// `create`), as `delete --force` does for runc.
    pub fn remove_leftovers(&self, id: &str) -> Result<()> {
        validate_id(id)?;
        let dir = self.root.join(id);
        // The cgroup plan is written before the cgroup is made, so even a create killed at
        // that point leaves nothing behind.
        for plan in [state::CREATING, state::OLD_CGROUP_FILE] {
            if let Ok(bytes) = fs::read(dir.join(plan)) {
                if let Ok(cgroup) = serde_json::from_slice::<cgroups::Cgroup>(&bytes) {
                    cgroup.remove()?;
                }
            }
        }
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).at("remove", &dir),
        }
    }

    /// Compiled seccomp programs, by content (ids cannot begin with a dot, so no container
    /// directory can be called this).
    pub(crate) fn seccomp_cache(&self) -> PathBuf {
        self.root.join(".seccomp-cache")
    }

    /// Makes the container's state directory; an existing one means the id is taken.
    pub(crate) fn make_container_dir(&self, id: &str) -> Result<PathBuf> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .at("create state root", &self.root)?;
        let dir = self.root.join(id);
        // 0711: the init, already running as the container's user, must reach the exec FIFO.
        match fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(Error::AlreadyExists(id.to_string()))
            }
            Err(e) => Err(e).at("create state directory", &dir),
        }
    }
}

/// The library forks (clone3) in `create` and `exec`: a copy of one thread of a multi-threaded
/// process may inherit a lock held by another forever. Refuse instead of hanging later.
pub(crate) fn ensure_single_threaded() -> Result<()> {
    let stat = sys::read_pseudo_to_string("/proc/self/stat").at("read", "/proc/self/stat")?;
    let threads: u64 = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_ascii_whitespace().nth(17))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    if threads > 1 {
        return Err(Error::Unsupported(format!(
            "berth-runtime forks: call create/exec from a single-threaded process (this one has {threads} threads)"
        )));
    }
    Ok(())
}

/// Container ids name directories and cgroups: letters, digits and `_ + - .`, not `.`/`..`.
pub fn validate_id(id: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() {
        return bad("empty");
    }
    if id.len() > 1024 {
        return bad("longer than 1024 bytes");
    }
    if id.starts_with('.') {
        return bad("may not begin with a dot");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'))
    {
        return bad("only letters, digits and _ + - . are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "web-1", "x_y.z+1", "0123456789abcdef"] {
            validate_id(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", "é"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unknown_container_does_not_exist() {
        let dir = tempfile::tempdir().unwrap();
        let rt = Runtime::new(dir.path());
        let e = rt.load("nope").unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        assert!(rt.list().unwrap().is_empty());
    }

    #[test]
    fn ids_are_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let rt = Runtime::new(dir.path().join("root"));
        rt.make_container_dir("c1").unwrap();
        assert!(matches!(
            rt.make_container_dir("c1"),
            Err(Error::AlreadyExists(_))
        ));
    }
}
