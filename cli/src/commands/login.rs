//! `login` and `logout`: credentials checked by the daemon (`POST /auth`), kept in Docker's
//! config.json by [`crate::credentials`].

use std::io::BufRead;

use clap::Args;
use hyper::Method;
use serde_json::json;

use crate::client::{Client, build, json_body};
use crate::commands::print_out;
use crate::credentials;
use crate::error::{CliError, Result};

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Username
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password (visible to other users in the process list: prefer --password-stdin)
    #[arg(short = 'p', long)]
    pub password: Option<String>,
    /// Take the password from stdin
    #[arg(long = "password-stdin")]
    pub password_stdin: bool,
    /// The registry (default: Docker Hub)
    pub server: Option<String>,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// The registry (default: Docker Hub)
    pub server: Option<String>,
}

fn read_line(prompt: &str) -> Result<String> {
    if !prompt.is_empty() {
        eprint!("{prompt}");
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

pub async fn login(client: &mut Client, args: LoginArgs) -> Result<i32> {
    let key = credentials::server_key(args.server.as_deref());
    if args.password.is_some() && args.password_stdin {
        return Err(CliError::Usage(
            "--password and --password-stdin are mutually exclusive".into(),
        ));
    }
    let username = match args.username {
        Some(u) => u,
        None if args.password_stdin => {
            return Err(CliError::Usage(
                "must provide --username with --password-stdin".into(),
            ));
        }
        None => read_line("Username: ")?,
    };
    let password = match args.password {
        Some(p) => p,
        None if args.password_stdin => read_line("")?,
        None => {
            let _echo_off = crate::tty::EchoOff::stdin();
            let p = read_line("Password: ")?;
            eprintln!();
            p
        }
    };
    if username.is_empty() || password.is_empty() {
        return Err(CliError::Usage(
            "a username and a password are required".into(),
        ));
    }
    let body = json!({"username": username, "password": password, "serveraddress": key});
    let request = build(
        Method::POST,
        "/auth",
        json_body(&body),
        Some("application/json"),
    )?;
    client.send(request).await?;
    credentials::store(&key, &username, &password)?;
    print_out("Login Succeeded\n")?;
    Ok(0)
}

pub async fn logout(args: LogoutArgs) -> Result<i32> {
    let key = credentials::server_key(args.server.as_deref());
    if credentials::remove(&key)? {
        print_out(&format!("Removing login credentials for {key}\n"))?;
    } else {
        print_out(&format!("Not logged in to {key}\n"))?;
    }
    Ok(0)
}
