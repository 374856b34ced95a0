//! OCI hooks: programs run at fixed points of a container's life with its state on stdin.
//!
//! | hooks | run by | namespaces | when |
//! |---|---|---|---|
//! | prestart, createRuntime | the runtime | the runtime's | after the namespaces and cgroup exist, before the init continues |
//! | createContainer | the init | the container's | after the mounts, before pivot_root |
//! | startContainer | the init | the container's | after `start`, before the user program |
//! | poststart | the runtime | the runtime's | after the user program started (failures are warnings) |
//! | poststop | the runtime | the runtime's | after the container was deleted (failures are warnings) |

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Hooks, Spec};

use crate::error::{Error, Result};

/// The hook points, named as in config.json.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookPoint {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl HookPoint {
    pub fn name(self) -> &'static str {
        match self {
            HookPoint::Prestart => "prestart",
            HookPoint::CreateRuntime => "createRuntime",
            HookPoint::CreateContainer => "createContainer",
            HookPoint::StartContainer => "startContainer",
            HookPoint::Poststart => "poststart",
            HookPoint::Poststop => "poststop",
        }
    }

    #[allow(deprecated)] // prestart is deprecated in the spec, still honoured
    fn list(self, hooks: &Hooks) -> &[Hook] {
        let list = match self {
            HookPoint::Prestart => hooks.prestart(),
            HookPoint::CreateRuntime => hooks.create_runtime(),
            HookPoint::CreateContainer => hooks.create_container(),
            HookPoint::StartContainer => hooks.start_container(),
            HookPoint::Poststart => hooks.poststart(),
            HookPoint::Poststop => hooks.poststop(),
        };
        list.as_deref().unwrap_or_default()
    }
}

/// The hooks of `spec` at `point`.
pub fn at(spec: &Spec, point: HookPoint) -> &[Hook] {
    spec.hooks()
        .as_ref()
        .map(|h| point.list(h))
        .unwrap_or_default()
}

pub fn any(spec: &Spec, points: &[HookPoint]) -> bool {
    points.iter().any(|p| !at(spec, *p).is_empty())
}

/// Runs the hooks at `point` one after another; the first failure stops them.
pub fn run(spec: &Spec, point: HookPoint, state: &serde_json::Value) -> Result<()> {
    let hooks = at(spec, point);
    if hooks.is_empty() {
        return Ok(());
    }
    let input = serde_json::to_vec(state).map_err(|e| Error::sys("encode state for hooks", e))?;
    for (i, hook) in hooks.iter().enumerate() {
        run_one(hook, &input).map_err(|why| {
            Error::Child(format!(
                "hooks.{}[{i}] ({}): {why}",
                point.name(),
                hook.path().display()
            ))
        })?;
    }
    Ok(())
}

/// Runs the hooks at `point`, logging failures instead of returning them (poststart, poststop).
pub fn run_logged(spec: &Spec, point: HookPoint, state: &serde_json::Value) {
    if let Err(e) = run(spec, point, state) {
        log::warn!("{e}");
    }
}

fn run_one(hook: &Hook, input: &[u8]) -> std::result::Result<(), String> {
    let args = hook.args().as_deref().unwrap_or_default();
    let mut cmd = Command::new(hook.path());
    if let Some(arg0) = args.first() {
        cmd.arg0(arg0);
    }
    cmd.args(args.iter().skip(1))
        .env_clear()
        .envs(
            hook.env()
                .iter()
                .flatten()
                .filter_map(|kv| kv.split_once('=')),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("start: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its state is not an error.
        let _ = stdin.write_all(input);
    }
    let timeout = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Duration::from_secs(t as u64));
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(format!("wait: {e}")),
        }
        if timeout.is_some_and(|t| start.elapsed() >= t) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "timed out after {}s",
                timeout.unwrap_or_default().as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    if status.success() {
        return Ok(());
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    Err(format!("{status}: {}", err.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(hooks: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({"ociVersion": "1.2.1", "hooks": hooks})).unwrap()
    }

    #[test]
    fn state_reaches_stdin_and_env_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let s = spec(serde_json::json!({"createRuntime": [{
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("cat > {0}; echo \" $FOO $HOME\" >> {0}", out.display())],
            "env": ["FOO=bar"]
        }]}));
        run(
            &s,
            HookPoint::CreateRuntime,
            &serde_json::json!({"id": "c1"}),
        )
        .unwrap();
        // HOME is not passed on: the environment is exactly the hook's.
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"id\":\"c1\"} bar \n"
        );
    }

    #[test]
    fn failures_and_timeouts_name_the_hook() {
        let s = spec(serde_json::json!({"createContainer": [
            {"path": "/bin/true"},
            {"path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 3"]}
        ]}));
        let e = run(&s, HookPoint::CreateContainer, &serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("hooks.createContainer[1]") && e.contains("nope"),
            "{e}"
        );
        let s = spec(
            serde_json::json!({"poststart": [{"path": "/bin/sleep", "args": ["sleep", "5"], "timeout": 1}]}),
        );
        let started = Instant::now();
        let e = run(&s, HookPoint::Poststart, &serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("timed out after 1s"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
