//! Network namespaces the daemon makes for its containers (DESIGN §1: the container joins a
//! namespace that is ready, rather than the runtime making one): a namespace bound to a file
//! under the exec root, its loopback brought up by the network driver, handed to the runtime
//! by path, and dropped by unmounting the file once the container is gone.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use berth_network::Prepared;

use crate::networks::Warmer;
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
/// the pool makes the next one meanwhile. Some are readied for the default network too (a
/// [`Warmer`]'s veth on its bridge with the datapath's programs), so a container on it only
/// gets its address, route and map entries. A taken namespace stays bound where the pool made
/// it; the container's bundle links to it, and [`remove`] follows the link.
pub struct Pool {
    dir: PathBuf,
    ready: Mutex<Ready>,
    size: usize,
    filling: AtomicBool,
    /// Set by [`Pool::drain`]: nothing more is made or kept.
    closed: AtomicBool,
}

#[derive(Default)]
struct Ready {
    /// Loopback up, nothing else.
    plain: Vec<PathBuf>,
    /// Readied for `warmer`'s network.
    warm: Vec<(PathBuf, Prepared)>,
    warmer: Option<Warmer>,
}

/// A namespace taken from the pool, with what was readied in it for the network asked for.
pub struct Taken {
    pub path: PathBuf,
    pub prepared: Option<Prepared>,
}

impl Pool {
    /// A pool of `size` namespaces (and as many readied for the default network) under `dir`.
    /// Entries of an earlier daemon that no container in `in_use` holds are dropped.
    pub fn open(dir: &Path, size: usize, in_use: &HashSet<PathBuf>) -> io::Result<Pool> {
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
            ready: Mutex::new(Ready::default()),
            size,
            filling: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        })
    }

    fn ready(&self) -> std::sync::MutexGuard<'_, Ready> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A ready namespace, readied for `network_id` if there is one such.
    pub fn take(&self, network_id: Option<&str>) -> Option<Taken> {
        let mut ready = self.ready();
        let readied_for = ready.warmer.as_ref().map(|w| w.network_id());
        if network_id.is_some() && network_id == readied_for {
            if let Some((path, prepared)) = ready.warm.pop() {
                return Some(Taken {
                    path,
                    prepared: Some(prepared),
                });
            }
        }
        ready.plain.pop().map(|path| Taken {
            path,
            prepared: None,
        })
    }

    /// Makes namespaces until the pool is full, in a thread of its own (one at a time); with
    /// `warmer`, readied ones for its network too (those of another network are dropped).
    pub fn refill(self: &Arc<Self>, warmer: Option<Warmer>) {
        if self.size == 0 || self.closed.load(Ordering::Acquire) {
            return;
        }
        let stale = {
            let mut ready = self.ready();
            let same = match (&ready.warmer, &warmer) {
                (Some(old), Some(new)) => old.network_id() == new.network_id(),
                (None, None) => true,
                _ => false,
            };
            if same {
                Vec::new()
            } else {
                let old = std::mem::replace(&mut ready.warmer, warmer);
                let stale = std::mem::take(&mut ready.warm);
                stale.into_iter().map(|w| (old.clone(), w)).collect()
            }
        };
        for (warmer, (path, prepared)) in stale {
            if let Some(w) = warmer {
                w.discard(prepared);
            }
            remove(&path);
        }
        if self.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = self.clone();
        std::thread::spawn(move || {
            loop {
                let filled = pool.fill();
                pool.filling.store(false, Ordering::Release);
                if let Err(e) = filled {
                    tracing::warn!("network namespace pool: {e}");
                    break;
                }
                // A take while this thread was finishing found it busy: go on for it.
                if pool.closed.load(Ordering::Acquire)
                    || !pool.short()
                    || pool.filling.swap(true, Ordering::AcqRel)
                {
                    break;
                }
            }
        });
    }

    /// Whether the pool has fewer namespaces than it keeps.
    fn short(&self) -> bool {
        let ready = self.ready();
        ready.plain.len() < self.size || (ready.warmer.is_some() && ready.warm.len() < self.size)
    }

    fn fill(&self) -> io::Result<()> {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Ok(());
            }
            let (plain, warm, warmer) = {
                let ready = self.ready();
                (ready.plain.len(), ready.warm.len(), ready.warmer.clone())
            };
            // Plain ones first: every start can use those.
            let warmer = match warmer {
                _ if plain < self.size => None,
                Some(w) if warm < self.size => Some(w),
                _ => return Ok(()),
            };
            let key = &crate::names::new_id()?[..16];
            let path = self.dir.join(key);
            let made = create(&path).and_then(|()| match &warmer {
                None => loopback_up(&path).map(|()| None),
                Some(w) => {
                    let ns = open(&path)?;
                    w.prepare(ns.as_fd(), key)
                        .map(Some)
                        .map_err(|e| io::Error::other(format!("ready {}: {e}", path.display())))
                }
            });
            let closed = || self.closed.load(Ordering::Acquire);
            match made {
                Ok(None) if !closed() => self.ready().plain.push(path),
                Ok(None) => remove(&path),
                Ok(Some(prepared)) => {
                    let mut ready = self.ready();
                    // The warmer may have changed meanwhile (or the pool closed): keep only
                    // what it would make.
                    if !closed()
                        && ready.warmer.as_ref().map(|w| w.network_id())
                            == Some(prepared.network_id())
                    {
                        ready.warm.push((path, prepared));
                    } else {
                        drop(ready);
                        if let Some(w) = warmer {
                            w.discard(prepared);
                        }
                        remove(&path);
                    }
                }
                Err(e) => {
                    remove(&path);
                    return Err(e);
                }
            }
        }
    }

    /// Drops the namespaces still waiting (daemon shutdown), after the thread making more
    /// (if one runs) has stopped.
    pub fn drain(&self) {
        self.closed.store(true, Ordering::Release);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.filling.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let (plain, warm, warmer) = {
            let mut ready = self.ready();
            (
                std::mem::take(&mut ready.plain),
                std::mem::take(&mut ready.warm),
                ready.warmer.clone(),
            )
        };
        for path in plain {
            remove(&path);
        }
        for (path, prepared) in warm {
            if let Some(w) = &warmer {
                w.discard(prepared);
            }
            remove(&path);
        }
    }
}

/// Brings the namespace's loopback up (berth-network's `none` driver does exactly that).
pub fn loopback_up(path: &Path) -> io::Result<()> {
    use berth_network::NetworkDriver;
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
