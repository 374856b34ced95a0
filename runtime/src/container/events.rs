//! `events`: resource usage (now, or every interval) and OOM notifications, as runc prints them.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use serde_json::json;

use super::Container;
use crate::cgroups::Stats;
use crate::error::{Context, Error, Result};
use crate::state::Status;

impl Container {
    pub fn stats(&self) -> Stats {
        self.record.cgroup.stats()
    }

    /// How many processes the kernel has killed in this container's cgroup for want of memory
    /// (`oom_kill` of memory.oom_control on v1, of memory.events on v2); 0 without a memory
    /// controller. Read it before `delete`, which removes the cgroup.
    pub fn oom_kills(&self) -> u64 {
        match self.record.cgroup.dir_for("memory") {
            Some(dir) if dir.unified => oom_kills(&dir.path.join("memory.events")),
            Some(dir) => oom_kills(&dir.path.join("memory.oom_control")),
            None => 0,
        }
    }

    /// Writes one JSON event per line to `out` until the container stops: `oom` when the
    /// kernel killed something for memory, `stats` every `interval`.
    pub fn events(&self, interval: Duration, out: &mut dyn Write) -> Result<()> {
        let status = self.status();
        if status == Status::Stopped {
            return Err(Error::WrongStatus {
                id: self.id().to_string(),
                status,
                action: "watch events",
            });
        }
        let pidfd = self.live_pidfd();
        let oom = OomWatch::new(self)?;
        let mut next_stats = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_stats {
                emit(
                    out,
                    json!({"type": "stats", "id": self.id(), "data": self.stats()}),
                )?;
                next_stats = now + interval;
            }
            let left = next_stats.saturating_duration_since(Instant::now());
            let mut fds = Vec::new();
            if let Some(p) = &pidfd {
                fds.push(PollFd::new(p, PollFlags::IN));
            }
            if let Some(o) = &oom {
                fds.push(PollFd::from_borrowed_fd(o.fd.as_fd(), PollFlags::IN));
            }
            let ts = rustix::event::Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: i64::from(left.subsec_nanos()),
            };
            match rustix::event::poll(&mut fds, Some(&ts)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e).op(|| "poll for events".to_string()),
            }
            let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
            drop(fds);
            let mut i = 0;
            if pidfd.is_some() {
                if ready[0] {
                    return Ok(());
                }
                i = 1;
            }
            if let Some(o) = &oom {
                if ready.get(i) == Some(&true) && o.fired()? {
                    emit(out, json!({"type": "oom", "id": self.id()}))?;
                }
            }
            if pidfd.is_none() && self.status() == Status::Stopped {
                return Ok(());
            }
        }
    }
}

fn emit(out: &mut dyn Write, v: serde_json::Value) -> Result<()> {
    writeln!(out, "{v}")
        .and_then(|()| out.flush())
        .op(|| "write event".to_string())
}

/// Notification of OOM kills: an eventfd registered on memory.oom_control (v1), or inotify on
/// memory.events, whose oom_kill counter grows (v2).
struct OomWatch {
    fd: OwnedFd,
    v2_events: Option<(std::path::PathBuf, std::cell::Cell<u64>)>,
}

impl OomWatch {
    fn new(c: &Container) -> Result<Option<OomWatch>> {
        let Some(dir) = c.record.cgroup.dir_for("memory") else {
            return Ok(None);
        };
        if dir.unified {
            let events = dir.path.join("memory.events");
            let fd = rustix::fs::inotify::init(rustix::fs::inotify::CreateFlags::CLOEXEC)
                .op(|| "inotify_init".to_string())?;
            rustix::fs::inotify::add_watch(&fd, &events, rustix::fs::inotify::WatchFlags::MODIFY)
                .at("inotify watch", &events)?;
            let count = oom_kills(&events);
            return Ok(Some(OomWatch {
                fd,
                v2_events: Some((events, std::cell::Cell::new(count))),
            }));
        }
        // SAFETY: eventfd with valid flags returns a new descriptor or -1.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(std::io::Error::last_os_error()).op(|| "eventfd".to_string());
        }
        // SAFETY: eventfd returned a fresh descriptor nothing else owns.
        let efd = unsafe { OwnedFd::from_raw_fd(efd) };
        let control = std::fs::File::open(dir.path.join("memory.oom_control"))
            .at("open", dir.path.join("memory.oom_control"))?;
        let line = format!("{} {}", efd.as_raw_fd(), control.as_raw_fd());
        std::fs::write(dir.path.join("cgroup.event_control"), &line).at(
            "register OOM eventfd",
            dir.path.join("cgroup.event_control"),
        )?;
        // The registration holds its own reference to memory.oom_control.
        drop(control);
        Ok(Some(OomWatch {
            fd: efd,
            v2_events: None,
        }))
    }

    /// Consumes the notification; whether it was an OOM kill.
    fn fired(&self) -> Result<bool> {
        let mut buf = [0u8; 4096];
        let _ = rustix::io::read(&self.fd, &mut buf);
        match &self.v2_events {
            None => Ok(true),
            Some((path, seen)) => {
                let now = oom_kills(path);
                let grew = now > seen.get();
                seen.set(now);
                Ok(grew)
            }
        }
    }
}

fn oom_kills(events: &std::path::Path) -> u64 {
    crate::sys::read_pseudo_to_string(events)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
        .unwrap_or(0)
}
