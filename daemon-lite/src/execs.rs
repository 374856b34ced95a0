//! `exec`: extra processes in a running container. Each runs under a monitor of its own (the
//! runtime forks, so the multi-threaded daemon never does), which holds its stdio and records
//! its exit code like a container's.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::api::error::{ApiError, ApiResult};
use crate::api::fields::Fields;
use crate::containers::lifecycle;
use crate::containers::{Handle, Status, spec};
use crate::daemon::Daemon;
use crate::monitor::{self, Exit, Report};
use crate::records;

/// One exec instance, from create until its container goes away.
pub struct Exec {
    pub id: String,
    pub container_id: String,
    /// The create request (Cmd, Env, User, WorkingDir, Tty, Attach* …).
    pub config: Value,
    state: Mutex<ExecState>,
    done: watch::Sender<bool>,
}

#[derive(Clone, Default)]
struct ExecState {
    started: bool,
    running: bool,
    pid: i32,
    exit_code: Option<i32>,
}

impl Exec {
    fn state(&self) -> std::sync::MutexGuard<'_, ExecState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `GET /exec/{id}/json`.
    pub fn inspect(&self) -> Value {
        let s = self.state().clone();
        let args = self.config.list("Cmd");
        json!({
            "ID": self.id,
            "Running": s.running,
            "ExitCode": s.exit_code,
            "ProcessConfig": {
                "tty": self.config.bool("Tty"),
                "entrypoint": args.first().cloned().unwrap_or_default(),
                "arguments": args.get(1..).unwrap_or(&[]),
                "privileged": self.config.bool("Privileged"),
                "user": self.config.opt_str("User").unwrap_or(""),
            },
            "OpenStdin": self.config.bool("AttachStdin"),
            "OpenStderr": self.config.bool("AttachStderr"),
            "OpenStdout": self.config.bool("AttachStdout"),
            "CanRemove": false,
            "ContainerID": self.container_id,
            "DetachKeys": "",
            "Pid": s.pid,
        })
    }

    /// Waits until the process has exited.
    pub async fn wait(&self) {
        let mut rx = self.done.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }
}

#[derive(Default)]
pub struct Execs {
    by_id: Mutex<HashMap<String, Arc<Exec>>>,
}

impl Execs {
    pub fn get(&self, id: &str) -> Option<Arc<Exec>> {
        self.by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Forgets the execs of a removed container.
    pub fn forget_container(&self, container_id: &str) {
        self.by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, e| e.container_id != container_id);
    }
}

/// `POST /containers/{id}/exec`.
pub fn create(d: &Daemon, h: &Handle, config: Value) -> ApiResult<String> {
    if h.status() != Status::Running {
        return Err(ApiError::conflict(format!(
            "Container {} is not running",
            h.id
        )));
    }
    if config.list("Cmd").is_empty() {
        return Err(ApiError::bad_request("No exec command specified"));
    }
    let id = crate::names::new_id()?;
    let exec = Arc::new(Exec {
        id: id.clone(),
        container_id: h.id.clone(),
        config,
        state: Mutex::new(ExecState::default()),
        done: watch::channel(false).0,
    });
    d.execs
        .by_id
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.clone(), exec);
    Ok(id)
}

/// The process to run: the container's own (capabilities, rlimits, no-new-privileges), with the
/// exec's command, environment, user, directory and terminal.
fn process(d: &Daemon, h: &Handle, exec: &Exec) -> ApiResult<Value> {
    let bundle = d.config.bundle_dir(&h.id);
    let spec: Value = records::read_json(&bundle.join("config.json"))?;
    let mut p = spec["process"].clone();
    let c = &exec.config;
    p["args"] = json!(c.list("Cmd"));
    let mut env: Vec<String> = p["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str().map(str::to_string))
        .collect();
    for e in c.list("Env").into_iter().filter(|e| e.contains('=')) {
        let key = e.split('=').next().unwrap_or("").to_string();
        env.retain(|x| x.split('=').next() != Some(key.as_str()));
        env.push(e);
    }
    p["env"] = json!(env);
    if let Some(dir) = c.opt_str("WorkingDir") {
        p["cwd"] = json!(dir);
    }
    if let Some(user) = c.opt_str("User") {
        p["user"] = spec::resolve_user(&bundle.join("rootfs"), user, &[])?;
    }
    p["terminal"] = json!(c.bool("Tty"));
    if c.bool("Privileged") {
        let all = spec::capabilities(&json!({"Privileged": true}))?;
        p["capabilities"] = json!({"bounding": all, "effective": all, "permitted": all});
    }
    Ok(p)
}

/// `POST /exec/{id}/start`: spawns the exec's monitor with `attached` (the client's connection,
/// unless detached) and returns once the process runs.
pub async fn start(
    d: &Arc<Daemon>,
    exec: &Arc<Exec>,
    attached: Option<OwnedFd>,
    console_size: Option<(u16, u16)>,
) -> ApiResult<()> {
    {
        let mut s = exec.state();
        if s.started {
            return Err(ApiError::conflict(format!(
                "Error: Exec command {} has already run",
                exec.id
            )));
        }
        s.started = true;
    }
    let h = d
        .containers
        .find(&exec.container_id)
        .ok_or_else(|| ApiError::no_such_container(&exec.container_id))?;
    if h.status() != Status::Running {
        return Err(ApiError::conflict(format!(
            "Container {} is not running",
            h.id
        )));
    }
    let dir = d.config.exec_root.join("exec").join(&exec.id);
    std::fs::create_dir_all(&dir).map_err(|e| records::at(e, "mkdir", &dir))?;
    let c = &exec.config;
    let config = monitor::Config {
        id: h.id.clone(),
        runtime_root: d.config.runtime_root(),
        bundle: d.config.bundle_dir(&h.id),
        log_path: None,
        log_rotation: Default::default(),
        tty: c.bool("Tty"),
        open_stdin: c.bool("AttachStdin"),
        stdin_once: true,
        exec: Some(process(d, &h, exec)?),
        console_size,
        attached: u32::from(attached.is_some()),
    };
    lifecycle::write_plain(&dir.join(monitor::CONFIG_FILE), &config)?;
    let socket = d
        .config
        .exec_root
        .join("m")
        .join(format!("x{}", crate::names::short(&exec.id)));
    let (d2, dir2, socket2) = (d.clone(), dir.clone(), socket.clone());
    let (process_monitor, report) = tokio::task::spawn_blocking(move || {
        lifecycle::launch_monitor(&d2, &dir2, &socket2, attached.into_iter().collect())
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    match report {
        Report::Running { pid } => {
            {
                let mut s = exec.state();
                s.running = true;
                s.pid = pid;
            }
            let attrs = lifecycle::event_attributes(&h.record());
            let command = c.list("Cmd").join(" ");
            let mut start_attrs = attrs.clone();
            start_attrs.insert("execID".into(), exec.id.clone());
            d.events.publish(
                "container",
                &format!("exec_start: {command}"),
                &h.id,
                start_attrs,
            );
            let (d, exec) = (d.clone(), exec.clone());
            tokio::spawn(async move {
                if let Some(pidfd) = berth_runtime::wait::pidfd_open(process_monitor.pid) {
                    // SAFETY: the AsyncFd owns the pidfd, so it cannot be closed while registered.
                    let registered = unsafe {
                        tokio::io::unix::AsyncFd::register_with_interest(
                            pidfd,
                            tokio::io::Interest::READABLE,
                        )
                    };
                    if let Ok(fd) = registered {
                        let _ = fd.readable().await;
                    }
                }
                let pid = process_monitor.pid;
                let _ = tokio::task::spawn_blocking(move || berth_runtime::wait::reap(pid)).await;
                let code = Exit::read(&dir).map_or(255, |e| e.exit_code);
                let _ = std::fs::remove_dir_all(&dir);
                let _ = std::fs::remove_file(&socket);
                {
                    let mut s = exec.state();
                    s.running = false;
                    s.exit_code = Some(code);
                }
                // send_replace: `send` drops the value when nobody is subscribed yet, and the
                // attach side may subscribe only after a fast process has already exited.
                exec.done.send_replace(true);
                let mut attrs = attrs;
                attrs.insert("execID".into(), exec.id.clone());
                attrs.insert("exitCode".into(), code.to_string());
                d.events
                    .publish("container", "exec_die", &exec.container_id, attrs);
            });
            Ok(())
        }
        Report::Failed(text) => {
            let pid = process_monitor.pid;
            let _ = tokio::task::spawn_blocking(move || berth_runtime::wait::reap(pid)).await;
            let _ = std::fs::remove_dir_all(&dir);
            let _ = std::fs::remove_file(&socket);
            let text = text
                .replace("Permission denied (os error 13)", "permission denied")
                .replace(
                    "No such file or directory (os error 2)",
                    "no such file or directory",
                );
            let code = if text.contains("not found") || text.contains("no such file") {
                127
            } else {
                126
            };
            {
                let mut s = exec.state();
                s.exit_code = Some(code);
            }
            exec.done.send_replace(true);
            Err(ApiError::bad_request(format!(
                "OCI runtime exec failed: {text}: unknown"
            )))
        }
    }
}
