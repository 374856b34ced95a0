//! `delete`: removes a stopped (or, forced, a running) container: its processes, cgroup and
//! state directory.

use std::time::Duration;

use super::Container;
use crate::error::{Context, Error, Result};
use crate::process::wait;
use crate::state::Status;
use crate::trace;

/// How long `delete` waits for killed processes to be gone.
const KILL_WAIT: Duration = Duration::from_secs(10);

impl Container {
    pub fn delete(self, force: bool) -> Result<()> {
        let status = self.status();
        match status {
            Status::Stopped => {}
            // Never started: nothing of the user's ran yet, deleting it is always fine (runc
            // agrees, and containerd relies on it to clean up after a failed start).
            Status::Created => self.kill_and_wait()?,
            Status::Running | Status::Paused | Status::Creating if force => self.kill_and_wait()?,
            _ => {
                return Err(Error::WrongStatus {
                    id: self.id().to_string(),
                    status,
                    action: "delete (use --force)",
                });
            }
        }
        trace::mark("delete: init gone");
        // Without a pid namespace of its own, the init's children may outlive it.
        if !self.record.owns_pid_namespace {
            self.signal_all(libc::SIGKILL)?;
        }
        self.record.cgroup.remove()?;
        trace::mark("delete: cgroup removed");
        // A config that no longer parses must not keep the container from going away.
        let spec = if self.record.may_have_late_hooks() {
            self.record
                .spec()
                .inspect_err(|e| log::warn!("poststop hooks: {e}"))
                .ok()
        } else {
            None
        };
        if let Some(spec) = spec {
            if crate::hooks::any(&spec, &[crate::hooks::HookPoint::Poststop]) {
                let mut state = serde_json::to_value(self.oci_state())
                    .map_err(|e| Error::sys("encode state", e))?;
                state["status"] = "stopped".into();
                crate::hooks::run_logged(&spec, crate::hooks::HookPoint::Poststop, &state);
            }
        }
        remove_state_dir(&self.dir)?;
        trace::mark("delete: done");
        log::debug!("container {}: deleted ({status})", self.id());
        Ok(())
    }

    fn kill_and_wait(&self) -> Result<()> {
        let Some(pidfd) = self.live_pidfd() else {
            return Ok(());
        };
        if self.record.cgroup.is_frozen() {
            self.record.cgroup.set_frozen(false)?;
        }
        match wait::signal(self.pid(), Some(&pidfd), libc::SIGKILL) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
            Err(e) => return Err(e).op(|| format!("kill container {}", self.id())),
        }
        if !wait::wait_exit(&pidfd, KILL_WAIT) {
            return Err(Error::Child(format!(
                "container {}: init (pid {}) did not die within {KILL_WAIT:?} of SIGKILL",
                self.id(),
                self.pid()
            )));
        }
        Ok(())
    }
}

/// Removes the state directory: its known files, then the directory; anything unexpected in it
/// (a stale temp file) falls back to a full recursive removal.
fn remove_state_dir(dir: &std::path::Path) -> Result<()> {
    for file in [
        crate::state::STATE_FILE,
        crate::state::EXEC_FIFO,
        crate::state::CREATING,
        crate::state::OLD_CGROUP_FILE,
    ] {
        match std::fs::remove_file(dir.join(file)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).at("remove", dir.join(file)),
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(_) => std::fs::remove_dir_all(dir).at("remove state of container", dir),
    }
}
