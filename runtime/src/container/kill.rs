//! `kill`: a signal to the container's init, or with `all` to every process in its cgroup.

use super::Container;
use crate::error::{Context, Error, Result};
use crate::process::wait;
use crate::state::Status;

impl Container {
    pub fn kill(&self, signal: i32, all: bool) -> Result<()> {
        let status = self.status();
        log::debug!(
            "container {}: signal {signal} to {} ({status})",
            self.id(),
            if all { "every process" } else { "the init" }
        );
        if all {
            // Also for a stopped container: without a pid namespace, its other processes
            // outlive the init, and this is how callers clean them up.
            return self.signal_all(signal);
        }
        if status == Status::Stopped {
            return Err(Error::WrongStatus {
                id: self.id().to_string(),
                status,
                action: "kill",
            });
        }
        // Only through a pidfd that pins our init: a pid alone may name a stranger by now.
        let Some(pidfd) = self.live_pidfd() else {
            return Err(Error::WrongStatus {
                id: self.id().to_string(),
                status: Status::Stopped,
                action: "kill",
            });
        };
        match wait::signal(self.pid(), Some(&pidfd), signal) {
            Ok(()) => Ok(()),
            // It exited between the status check and the signal: nothing left to signal.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(e).op(|| {
                format!(
                    "kill container {} (pid {}) with signal {signal}",
                    self.id(),
                    self.pid()
                )
            }),
        }
    }

    /// Signals every process in the container's cgroup. The cgroup is frozen meanwhile so no
    /// process can fork past the list; a frozen container is thawed after a SIGKILL so the
    /// kill takes effect.
    pub(crate) fn signal_all(&self, signal: i32) -> Result<()> {
        let cgroup = &self.record.cgroup;
        let was_frozen = cgroup.is_frozen();
        let freeze = !was_frozen && cgroup.set_frozen(true).is_ok();
        let result = self.signal_listed(signal);
        if freeze || (was_frozen && signal == libc::SIGKILL) {
            cgroup.set_frozen(false)?;
        }
        result
    }

    fn signal_listed(&self, signal: i32) -> Result<()> {
        // Without a cgroup (rootless) that is the init: its pid namespace ends with it.
        for pid in self.processes()? {
            match wait::signal(pid, None, signal) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => {
                    return Err(e).op(|| {
                        format!(
                            "kill pid {pid} of container {} with signal {signal}",
                            self.id()
                        )
                    });
                }
            }
        }
        Ok(())
    }

    /// A pidfd for the init, only if the process behind the pid is still our init.
    pub(crate) fn live_pidfd(&self) -> Option<std::os::fd::OwnedFd> {
        let fd = wait::pidfd_open(self.pid())?;
        // Checked after opening: from now on the pidfd pins this exact process.
        let stat = crate::state::process_stat(self.pid())?;
        (stat.start_time == self.record.init_start_time).then_some(fd)
    }
}
