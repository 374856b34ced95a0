//! `exec`: create an exec instance, start it on a hijacked connection, then read its exit
//! code from `GET /exec/{id}/json`.

use clap::Args;
use serde_json::{Value, json};

use crate::client::Client;
use crate::commands::run::run_session;
use crate::commands::segment;
use crate::error::{CliError, Result};
use crate::stream::spawn_stdin_reader;
use crate::tty::{RawTerminal, stdin_is_terminal};

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Detached mode: run command in the background
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Username or UID (format: "<name|uid>[:<group|gid>]")
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// Give extended privileges to the command
    #[arg(long)]
    pub privileged: bool,
    pub container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

impl ExecArgs {
    /// The body of `POST /containers/{id}/exec`.
    pub fn create_body(&self) -> Value {
        let attach = !self.detach;
        let mut body = json!({
            "AttachStdin": self.interactive && attach,
            "AttachStdout": attach,
            "AttachStderr": attach,
            "Tty": self.tty,
            "Cmd": self.command,
            "Privileged": self.privileged,
        });
        let env: Vec<&String> = self.env.iter().filter(|e| e.contains('=')).collect();
        if !env.is_empty() {
            body["Env"] = json!(env);
        }
        if let Some(user) = &self.user {
            body["User"] = json!(user);
        }
        if let Some(workdir) = &self.workdir {
            body["WorkingDir"] = json!(workdir);
        }
        body
    }
}

pub async fn exec(client: &mut Client, args: ExecArgs) -> Result<i32> {
    let attach_stdin = args.interactive && !args.detach;
    if args.tty && attach_stdin && !stdin_is_terminal() {
        return Err(CliError::message("the input device is not a TTY"));
    }
    let mut body = args.create_body();
    // The initial size travels with the request so the command never sees a 0x0 terminal.
    let console_size = if args.tty {
        crate::tty::window_size()
    } else {
        None
    };
    if let Some((rows, cols)) = console_size {
        body["ConsoleSize"] = json!([rows, cols]);
    }
    let created: Value = client
        .post_json(
            &format!("/containers/{}/exec", segment(&args.container)),
            Some(&body),
        )
        .await?;
    let exec_id = created["Id"]
        .as_str()
        .ok_or_else(|| CliError::Decode("exec create response has no Id".into()))?
        .to_string();
    let start_path = format!("/exec/{}/start", segment(&exec_id));
    if args.detach {
        client
            .post_discard(&start_path, Some(&json!({"Detach": true, "Tty": args.tty})))
            .await?;
        return Ok(0);
    }
    let mut start_body = json!({"Detach": false, "Tty": args.tty});
    if let Some((rows, cols)) = console_size {
        start_body["ConsoleSize"] = json!([rows, cols]);
    }
    let connection = client.hijack(&start_path, Some(&start_body)).await?;
    let raw_terminal = if args.tty && attach_stdin {
        Some(RawTerminal::enable()?)
    } else {
        None
    };
    let stdin = if attach_stdin {
        Some(spawn_stdin_reader())
    } else {
        None
    };
    let result = run_session(client, &exec_id, connection, args.tty, stdin, "exec").await;
    drop(raw_terminal);
    result?;
    // The stream can end a moment before the daemon records the exit; poll briefly.
    let inspect_path = format!("/exec/{}/json", segment(&exec_id));
    let mut inspect: Value = client.get_json(&inspect_path).await?;
    for _ in 0..100 {
        if inspect["Running"].as_bool() != Some(true) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        inspect = client.get_json(&inspect_path).await?;
    }
    Ok(inspect["ExitCode"].as_i64().unwrap_or(0) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        args: ExecArgs,
    }

    #[test]
    fn exec_body() {
        let harness = Harness::try_parse_from([
            "exec", "-it", "-e", "A=1", "-u", "nobody", "web", "sh", "-c", "ls -l",
        ])
        .expect("parses");
        let body = harness.args.create_body();
        assert_eq!(body["Cmd"], json!(["sh", "-c", "ls -l"]));
        assert_eq!(body["AttachStdin"], true);
        assert_eq!(body["Tty"], true);
        assert_eq!(body["Env"], json!(["A=1"]));
        assert_eq!(body["User"], "nobody");
        let detached =
            Harness::try_parse_from(["exec", "-d", "-i", "web", "true"]).expect("parses");
        assert_eq!(detached.args.create_body()["AttachStdout"], false);
        assert_eq!(detached.args.create_body()["AttachStdin"], false);
    }
}
