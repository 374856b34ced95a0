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
/// holds it).
pub fn remove(path: &Path) {
    let _ = rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH);
    let _ = std::fs::remove_file(path);
}

pub fn open(path: &Path) -> io::Result<File> {
    File::open(path).map_err(|e| records::at(e, "open", path))
}
