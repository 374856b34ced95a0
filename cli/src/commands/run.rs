//! `run`, `create`, `start` and `attach`: the commands that create containers or join
//! their stdio. The run sequence is the docker CLI's: create (pulling on a missing image),
//! attach and wait before start so no output and no exit is missed, then start.

use clap::{ArgAction, Args};
use hyper::Method;
use serde_json::Value;

use crate::client::{Client, Query, Upgraded, build, empty_body, next_chunk, read_body};
use crate::commands::image::{pull_image, split_reference};
use crate::commands::{print_err, print_out, segment};
use crate::container_config::{ContainerOptions, ProcessEnvironment};
use crate::error::{CliError, Result, start_failure_status};
use crate::stream::{pump, spawn_stdin_reader};
use crate::tty::{RawTerminal, stdin_is_terminal, stdout_is_terminal, window_size};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Run container in background and print container ID
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Automatically remove the container and its associated anonymous volumes when it exits
    #[arg(long)]
    pub rm: bool,
    #[command(flatten)]
    pub options: ContainerOptions,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Automatically remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    #[command(flatten)]
    pub options: ContainerOptions,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals
    #[arg(short = 'a', long)]
    pub attach: bool,
    /// Attach container's STDIN
    #[arg(short = 'i', long)]
    pub interactive: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not attach STDIN
    #[arg(long = "no-stdin")]
    pub no_stdin: bool,
    /// Proxy all received signals to the process (accepted for compatibility)
    #[arg(long = "sig-proxy", action = ArgAction::Set, default_value_t = true)]
    pub sig_proxy: bool,
    pub container: String,
}

pub async fn run(client: &mut Client, args: RunArgs) -> Result<i32> {
    let options = &args.options;
    let mut body = options
        .create_body(args.detach, args.rm, &ProcessEnvironment)
        .map_err(|e| CliError::Usage(e).with_status(125))?;
    set_console_size(&mut body, options.tty);
    let attach_stdin = options.attach_stdin() && !args.detach;
    if !args.detach && options.tty && attach_stdin && !stdin_is_terminal() {
        return Err(CliError::message("the input device is not a TTY").with_status(1));
    }
    let id = create_container(client, options, &body)
        .await
        .map_err(|e| e.with_status(125))?;
    if args.detach {
        start_container(client, &id).await?;
        print_out(&format!("{id}\n"))?;
        return Ok(0);
    }
    let attach_stdout = body["AttachStdout"].as_bool().unwrap_or(true);
    let attach_stderr = body["AttachStderr"].as_bool().unwrap_or(true);
    let session = if attach_stdin || attach_stdout || attach_stderr {
        let path = Query::new(&format!("/containers/{}/attach", segment(&id)))
            .flag("stream", true)
            .flag("stdin", attach_stdin)
            .flag("stdout", attach_stdout)
            .flag("stderr", attach_stderr)
            .build();
        Some(
            client
                .hijack(&path, None)
                .await
                .map_err(|e| e.with_status(125))?,
        )
    } else {
        None
    };
    // Registered before start: with condition=next-exit an exit right after start is
    // still reported, and with --rm `removed` waits for the daemon's cleanup.
    let condition = if args.rm { "removed" } else { "next-exit" };
    let wait_path = Query::new(&format!("/containers/{}/wait", segment(&id)))
        .param("condition", condition)
        .build();
    let wait = client
        .send_detached(build(Method::POST, &wait_path, empty_body(), None)?)
        .await
        .map_err(|e| e.with_status(125))?;

    let raw_terminal = if options.tty && attach_stdin && stdin_is_terminal() {
        Some(RawTerminal::enable()?)
    } else {
        None
    };
    if let Err(err) = start_container(client, &id).await {
        drop(raw_terminal);
        return Err(err);
    }
    let stdin = if attach_stdin {
        Some(spawn_stdin_reader())
    } else {
        None
    };
    let stream_result = match session {
        Some(connection) => {
            run_session(client, &id, connection, options.tty, stdin, "containers").await
        }
        None => Ok(()),
    };
    drop(raw_terminal);
    stream_result?;
    let status = read_body(wait).await?;
    let status: Value = serde_json::from_slice(&status)?;
    if let Some(message) = status
        .pointer("/Error/Message")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
    {
        print_err(&format!("{message}\n"));
    }
    Ok(status["StatusCode"].as_i64().unwrap_or(125) as i32)
}

pub async fn create(client: &mut Client, args: CreateArgs) -> Result<i32> {
    let mut body = args
        .options
        .create_body(false, args.rm, &ProcessEnvironment)
        .map_err(|e| CliError::Usage(e).with_status(125))?;
    set_console_size(&mut body, args.options.tty);
    let id = create_container(client, &args.options, &body)
        .await
        .map_err(|e| e.with_status(125))?;
    print_out(&format!("{id}\n"))?;
    Ok(0)
}

/// HostConfig.ConsoleSize gives a tty container the terminal's size from its first
/// instruction; the resize after start would race with a command that reads it at once.
fn set_console_size(body: &mut Value, tty: bool) {
    if !tty || !stdout_is_terminal() {
        return;
    }
    if let (Some((rows, cols)), Some(host)) = (window_size(), body.get_mut("HostConfig")) {
        host["ConsoleSize"] = serde_json::json!([rows, cols]);
    }
}

/// POST /containers/create, pulling the image once when the daemon does not have it.
pub async fn create_container(
    client: &mut Client,
    options: &ContainerOptions,
    body: &Value,
) -> Result<String> {
    let path = Query::new("/containers/create")
        .opt("name", options.name.as_deref())
        .opt("platform", options.platform.as_deref())
        .build();
    let terminal = crate::tty::stdout_is_terminal();
    if options.pull == "always" {
        pull_image(
            client,
            &options.image,
            options.platform.as_deref(),
            &mut std::io::stderr(),
            terminal,
        )
        .await?;
    }
    let created: Value = match client.post_json(&path, Some(body)).await {
        Ok(created) => created,
        Err(err) if err.is_not_found() && options.pull == "missing" => {
            let (repository, tag) = split_reference(&options.image);
            let separator = if tag.starts_with("sha256:") { '@' } else { ':' };
            print_err(&format!(
                "Unable to find image '{repository}{separator}{tag}' locally\n"
            ));
            pull_image(
                client,
                &options.image,
                options.platform.as_deref(),
                &mut std::io::stderr(),
                terminal,
            )
            .await?;
            client.post_json(&path, Some(body)).await?
        }
        Err(err) => return Err(err),
    };
    if let Some(warnings) = created["Warnings"].as_array() {
        for warning in warnings.iter().filter_map(Value::as_str) {
            print_err(&format!("WARNING: {warning}\n"));
        }
    }
    created["Id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| CliError::Decode("create response has no Id".into()))
}

/// Starts a container, mapping failures to docker's run statuses (126, 127, 125).
async fn start_container(client: &mut Client, id: &str) -> Result<()> {
    let path = format!("/containers/{}/start", segment(id));
    client.post_discard(&path, None).await.map_err(|err| {
        let status = start_failure_status(&err.to_string());
        err.with_status(status)
    })
}

/// Pumps a hijacked session while forwarding terminal size changes (tty containers).
/// `kind` is `containers` or `exec`, the resize endpoint's collection.
pub async fn run_session(
    client: &mut Client,
    id: &str,
    connection: Upgraded,
    tty: bool,
    stdin: Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>,
    kind: &str,
) -> Result<()> {
    let track_size = tty && stdout_is_terminal();
    if track_size {
        resize(client, kind, id).await;
    }
    let session = pump(connection, tty, stdin);
    tokio::pin!(session);
    let mut window_changes = if track_size {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok()
    } else {
        None
    };
    loop {
        let changed = async {
            match window_changes.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = &mut session => return result,
            Some(()) = changed => resize(client, kind, id).await,
        }
    }
}

/// Sends the local terminal size; failures are ignored (the container may be gone).
async fn resize(client: &mut Client, kind: &str, id: &str) {
    if let Some((rows, cols)) = window_size() {
        let path = Query::new(&format!("/{kind}/{}/resize", segment(id)))
            .param("h", rows.to_string())
            .param("w", cols.to_string())
            .build();
        let _ = client.post_discard(&path, None).await;
    }
}

pub async fn start(client: &mut Client, args: StartArgs) -> Result<i32> {
    if !args.attach && !args.interactive {
        return crate::commands::for_each_name(client, &args.containers, async |client, name| {
            client
                .post_discard(&format!("/containers/{}/start", segment(name)), None)
                .await?;
            Ok(Some(name.to_string()))
        })
        .await;
    }
    if args.containers.len() > 1 {
        return Err(CliError::Usage(
            "you cannot start and attach multiple containers at once".into(),
        ));
    }
    let name = &args.containers[0];
    let info: Value = client
        .get_json(&format!("/containers/{}/json", segment(name)))
        .await?;
    let id = info["Id"].as_str().unwrap_or(name).to_string();
    let tty = info
        .pointer("/Config/Tty")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let open_stdin = info
        .pointer("/Config/OpenStdin")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let attach_stdin = args.interactive && open_stdin;
    let path = Query::new(&format!("/containers/{}/attach", segment(&id)))
        .flag("stream", true)
        .flag("stdin", attach_stdin)
        .flag("stdout", true)
        .flag("stderr", true)
        .build();
    let connection = client.hijack(&path, None).await?;
    let wait_path = format!("/containers/{}/wait?condition=next-exit", segment(&id));
    let wait = client
        .send_detached(build(Method::POST, &wait_path, empty_body(), None)?)
        .await?;
    let raw_terminal = if tty && attach_stdin && stdin_is_terminal() {
        Some(RawTerminal::enable()?)
    } else {
        None
    };
    if let Err(err) = client
        .post_discard(&format!("/containers/{}/start", segment(&id)), None)
        .await
    {
        drop(raw_terminal);
        return Err(err);
    }
    let stdin = if attach_stdin {
        Some(spawn_stdin_reader())
    } else {
        None
    };
    let result = run_session(client, &id, connection, tty, stdin, "containers").await;
    drop(raw_terminal);
    result?;
    exit_status(wait).await
}

pub async fn attach(client: &mut Client, args: AttachArgs) -> Result<i32> {
    let info: Value = client
        .get_json(&format!("/containers/{}/json", segment(&args.container)))
        .await?;
    let id = info["Id"].as_str().unwrap_or(&args.container).to_string();
    if !info
        .pointer("/State/Running")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        return Err(CliError::Usage(
            "You cannot attach to a stopped container, start it first".into(),
        )
        .with_status(1));
    }
    let tty = info
        .pointer("/Config/Tty")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let attach_stdin = !args.no_stdin
        && info
            .pointer("/Config/OpenStdin")
            .and_then(Value::as_bool)
            .unwrap_or(false);
    if tty && attach_stdin && !stdin_is_terminal() {
        return Err(CliError::message("the input device is not a TTY").with_status(1));
    }
    let path = Query::new(&format!("/containers/{}/attach", segment(&id)))
        .flag("stream", true)
        .flag("stdin", attach_stdin)
        .flag("stdout", true)
        .flag("stderr", true)
        .build();
    let connection = client.hijack(&path, None).await?;
    let raw_terminal = if tty && attach_stdin {
        Some(RawTerminal::enable()?)
    } else {
        None
    };
    let stdin = if attach_stdin {
        Some(spawn_stdin_reader())
    } else {
        None
    };
    let result = run_session(client, &id, connection, tty, stdin, "containers").await;
    drop(raw_terminal);
    result?;
    // The container may still be running (stream closed by the daemon); report its code
    // when it has one, as docker attach does.
    let info: Value = client
        .get_json(&format!("/containers/{}/json", segment(&id)))
        .await?;
    Ok(info
        .pointer("/State/ExitCode")
        .and_then(Value::as_i64)
        .unwrap_or(0) as i32)
}

/// Reads a wait response's `StatusCode`.
async fn exit_status(wait: hyper::Response<hyper::body::Incoming>) -> Result<i32> {
    let mut body = wait.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = next_chunk(&mut body).await? {
        bytes.extend_from_slice(&chunk);
    }
    let status: Value = serde_json::from_slice(&bytes)?;
    Ok(status["StatusCode"].as_i64().unwrap_or(0) as i32)
}
