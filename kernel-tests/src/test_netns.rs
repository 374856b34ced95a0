//! A named network namespace for a test or bench, deleted (with what is left in it) on drop.
//! Tests put their links there, never in the host's namespace.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use crate::harness::{Runtime, unique};

/// Makes `cmd` start in the named network namespace (its mount namespace stays the caller's).
/// The returned file must outlive the spawn.
pub fn enter_on_spawn(name: &str, cmd: &mut Command) -> fs::File {
    let ns = fs::File::open(format!("/run/netns/{name}")).expect("open netns");
    let raw = ns.as_raw_fd();
    // SAFETY: only setns (async-signal-safe) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(raw, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    ns
}

/// A named network namespace, deleted on drop (with whatever devices are left in it).
pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    pub fn create() -> TestNetns {
        let name = unique("berth-nd");
        ip(&["netns", "add", &name]);
        TestNetns { name }
    }

    /// `ip -n NS args…`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Runs `f` on a thread inside this namespace (the caller's thread stays where it is).
    pub fn inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = self.file();
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on this thread only, with a descriptor that outlives the call.
                let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("thread in the namespace")
        })
    }

    /// The names of the links in this namespace.
    pub fn links(&self) -> Vec<String> {
        self.ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    /// The namespace, opened (for setns, or to hand to a network driver).
    pub fn file(&self) -> fs::File {
        fs::File::open(format!("/run/netns/{}", self.name)).expect("open netns")
    }

    /// Makes `cmd` start in this network namespace (its mount namespace stays the caller's).
    /// The returned file must outlive the spawn.
    pub fn enter_on_spawn(&self, cmd: &mut Command) -> fs::File {
        enter_on_spawn(&self.name, cmd)
    }

    /// `berth-runtime args…` run inside this namespace.
    pub fn runtime(&self, rt: &Runtime, args: &[&str]) -> (i32, String, String) {
        let mut cmd = rt.command(args);
        let ns = self.enter_on_spawn(&mut cmd);
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        drop(ns);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
