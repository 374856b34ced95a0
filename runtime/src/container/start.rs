//! `start`: releases a created container's init through the exec FIFO.

use rustix::event::{PollFd, PollFlags};
use rustix::fs::{Mode, OFlags};

use super::Container;
use crate::error::{Context, Error, Result};
use crate::process::wait;
use crate::state::{EXEC_FIFO, Status};

impl Container {
    /// Returns once the init has been released (it is about to exec the user program).
    pub fn start(&self) -> Result<()> {
        let status = self.status();
        if status != Status::Created {
            return Err(Error::WrongStatus {
                id: self.id().to_string(),
                status,
                action: "start",
            });
        }
        let path = self.dir.join(EXEC_FIFO);
        // Non-blocking: opening never waits, and a dead init is noticed through its pidfd
        // instead of hanging here forever.
        let fifo = rustix::fs::open(
            &path,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .at("open", &path)?;
        let gone = || {
            Error::Child(format!(
                "container \"{}\": init exited before it was started",
                self.id()
            ))
        };
        let pidfd = wait::pidfd_open(self.pid()).ok_or_else(gone)?;
        // poststart hooks run after the user program is executed (not merely released).
        let wait_for_exec = self.record.may_have_late_hooks()
            && crate::hooks::any(&self.record.spec()?, &[crate::hooks::HookPoint::Poststart]);
        let mut released = false;
        loop {
            let mut fds = [
                PollFd::new(&fifo, PollFlags::IN),
                PollFd::new(&pidfd, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e).at("poll", &path),
            }
            let fifo_ready = !fds[0].revents().is_empty();
            let init_gone = !fds[1].revents().is_empty();
            if fifo_ready {
                let mut byte = [0u8; 1];
                match rustix::io::read(&fifo, &mut byte) {
                    Ok(1) if !wait_for_exec => break,
                    // Released; now the init runs its startContainer hooks and execs, which
                    // closes its (close-on-exec) end: end-of-file.
                    Ok(1) => released = true,
                    Ok(0) if released => break,
                    Ok(_) => {
                        return Err(Error::Child(format!(
                            "container \"{}\" was started by someone else",
                            self.id()
                        )));
                    }
                    Err(rustix::io::Errno::AGAIN) => {}
                    Err(e) => return Err(e).at("read", &path),
                }
            } else if init_gone {
                if released {
                    // It exec'd and is gone already, or died in a startContainer hook.
                    break;
                }
                return Err(gone());
            }
        }
        std::fs::remove_file(&path).at("remove", &path)?;
        log::debug!("container {}: started (init pid {})", self.id(), self.pid());
        self.after_start();
        Ok(())
    }
}

impl Container {
    /// poststart hooks: the user program runs; a failing hook is reported, not fatal.
    pub(crate) fn after_start(&self) {
        if !self.record.may_have_late_hooks() {
            return;
        }
        let spec = match self.record.spec() {
            Ok(spec) => spec,
            Err(e) => return log::warn!("poststart hooks: {e}"),
        };
        let spec = &spec;
        if crate::hooks::any(spec, &[crate::hooks::HookPoint::Poststart]) {
            match serde_json::to_value(self.oci_state()) {
                Ok(state) => {
                    crate::hooks::run_logged(spec, crate::hooks::HookPoint::Poststart, &state)
                }
                Err(e) => log::warn!("poststart hooks: encode state: {e}"),
            }
        }
    }
}
