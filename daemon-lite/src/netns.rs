//! Network namespaces the daemon makes for its containers (DESIGN §1: the container joins a
//! namespace that is ready, rather than the runtime making one): a namespace bound to a file
//! under the exec root, its loopback brought up by the network driver, handed to the runtime
//! by path, and dropped by unmounting the file once the container is gone.

use std::fs::File;
use std::io;
use std::path::Path;

use crate::records;

/// Makes a new network namespace and binds it to `path`.
pub fn create(path: &Path) -> io::Result<()> {
    File::create(path).map_err(|e| records::at(e, "create", path))?;
    let target = path.to_path_buf();
    // A namespace is per thread: unshare in a thread of its own, which then ends, leaving the
    // namespace held by the bind mount alone.
    let made = std::thread::spawn(move || -> io::Result<()> {
        // SAFETY: CLONE_NEWNET only moves this thread to a new network namespace; it does not
        // unshare the descriptor table or anything else Rust relies on.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
            .map_err(|e| io::Error::new(e.kind(), format!("unshare(CLONE_NEWNET): {e}")))?;
        rustix::mount::mount_bind("/proc/thread-self/ns/net", &target)
            .map_err(|e| records::at(e.into(), "bind the network namespace to", &target))
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")));
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Drops the namespace bound at `path` (the kernel frees it, and its links, once nothing else
/// holds it). A link to a pool's namespace drops that namespace and the link.
pub fn remove(path: &Path) {
    if let Ok(target) = std::fs::read_link(path) {
        let _ = rustix::mount::unmount(&target, rustix::mount::UnmountFlags::DETACH);
        let _ = std::fs::remove_file(&target);
        let _ = std::fs::remove_file(path);
        return;
    }
    let _ = rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH);
    let _ = std::fs::remove_file(path);
}

pub fn open(path: &Path) -> io::Result<File> {
    File::open(path).map_err(|e| records::at(e, "open", path))
}

/// Network namespaces made ahead of the containers that will take them (DESIGN §1): a start
/// takes one (its loopback already up) instead of spending ~1 ms making it, and a thread of
/// the pool makes the next one meanwhile. A taken namespace stays bound where the pool made it;
/// the container's bundle links to it, and [`remove`] follows the link.
pub struct Pool {
    dir: std::path::PathBuf,
    ready: std::sync::Mutex<Vec<std::path::PathBuf>>,
    size: usize,
    filling: std::sync::atomic::AtomicBool,
}

impl Pool {
    /// A pool of `size` namespaces under `dir`. Entries of an earlier daemon that no
    /// container in `in_use` holds are dropped.
    pub fn open(
        dir: &Path,
        size: usize,
        in_use: &std::collections::HashSet<std::path::PathBuf>,
    ) -> io::Result<Pool> {
        std::fs::create_dir_all(dir).map_err(|e| records::at(e, "mkdir", dir))?;
        for entry in std::fs::read_dir(dir)?.flatten() {
            let path = entry.path();
            if !in_use.contains(&path) {
                let _ = rustix::mount::unmount(&path, rustix::mount::UnmountFlags::DETACH);
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(Pool {
            dir: dir.to_path_buf(),
            ready: std::sync::Mutex::new(Vec::new()),
            size,
            filling: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// A ready namespace, if there is one.
    pub fn take(&self) -> Option<std::path::PathBuf> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// Makes namespaces until the pool is full, in a thread of its own (one at a time).
    pub fn refill(self: &std::sync::Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.size == 0 || self.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = self.clone();
        std::thread::spawn(move || {
            loop {
                if pool.ready.lock().unwrap_or_else(|p| p.into_inner()).len() >= pool.size {
                    break;
                }
                let path = match crate::names::new_id() {
                    Ok(id) => pool.dir.join(&id[..16]),
                    Err(_) => break,
                };
                match create(&path).and_then(|()| loopback_up(&path)) {
                    Ok(()) => pool
                        .ready
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(path),
                    Err(e) => {
                        tracing::warn!("network namespace pool: {e}");
                        remove(&path);
                        break;
                    }
                }
            }
            pool.filling.store(false, Ordering::Release);
        });
    }

    /// Drops the namespaces still waiting (daemon shutdown).
    pub fn drain(&self) {
        for path in std::mem::take(&mut *self.ready.lock().unwrap_or_else(|p| p.into_inner())) {
            remove(&path);
        }
    }
}

/// Brings the namespace's loopback up (berth-network's `none` driver does exactly that).
pub fn loopback_up(path: &Path) -> io::Result<()> {
    use berth_network::NetworkDriver;
    use std::os::fd::AsFd;
    let ns = open(path)?;
    let network = berth_network::NoneDriver
        .create(&berth_network::NetworkSpec {
            id: "none".into(),
            name: "none".into(),
            ..Default::default()
        })
        .map_err(|e| io::Error::other(e.to_string()))?;
    berth_network::NoneDriver
        .join(
            &network,
            &berth_network::EndpointRequest {
                id: "loopback",
                netns: ns.as_fd(),
                ifname: "lo",
                static_ips: &[],
                default_route: false,
            },
        )
        .map(|_| ())
        .map_err(|e| io::Error::other(format!("loopback up in {}: {e}", path.display())))
}
