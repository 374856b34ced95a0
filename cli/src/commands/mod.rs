//! The commands, one file per object kind, and the few helpers they share.

pub mod container;
pub mod exec;
pub mod image;
pub mod login;
pub mod network;
pub mod run;
pub mod system;
pub mod volume;

use std::io::Write;

use hyper::body::Incoming;
use serde_json::Value;

use crate::client::{Client, next_chunk, percent_encode};
use crate::error::{CliError, Result};
use crate::progress::ProgressRenderer;
use crate::units::now_unix;

/// Writes to stdout; unlike `print!` it reports a closed pipe instead of panicking.
pub fn print_out(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Writes to stderr, ignoring failures: there is nowhere left to report them.
pub fn print_err(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// Inspect JSON as docker prints it: an array, four-space indent.
pub fn pretty_json(value: &Value) -> Result<String> {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    serde::Serialize::serialize(value, &mut serializer)?;
    Ok(String::from_utf8_lossy(&out).into_owned() + "\n")
}

/// A path segment naming a container, image, network or volume.
pub fn segment(name: &str) -> String {
    percent_encode(name)
}

/// Asks a yes/no question on the terminal; anything but y/yes is no.
pub fn confirm(question: &str) -> bool {
    print_err(&format!("{question} [y/N] "));
    let mut answer = String::new();
    if std::io::stdin().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Renders a JSON-lines progress stream (pull, push, load, import) to `out`.
pub async fn render_progress<W: Write>(
    body: &mut Incoming,
    out: W,
    terminal: bool,
) -> Result<Vec<Value>> {
    let width = if terminal { crate::tty::width() } else { 0 };
    let mut renderer = ProgressRenderer::new(out, terminal, width);
    while let Some(chunk) = next_chunk(body).await? {
        renderer.feed(&chunk, now_unix())?;
    }
    renderer.finish(now_unix())?;
    Ok(renderer.aux)
}

/// Copies a streamed body to a file or stdout.
pub async fn copy_body_to(body: &mut Incoming, out: &mut dyn Write) -> Result<()> {
    while let Some(chunk) = next_chunk(body).await? {
        out.write_all(&chunk)?;
    }
    out.flush()?;
    Ok(())
}

/// Runs `action` on each name, printing the name on success and errors as they come;
/// the status is 1 if any failed (as docker's stop/rm/kill do).
pub async fn for_each_name<F>(client: &mut Client, names: &[String], mut action: F) -> Result<i32>
where
    F: AsyncFnMut(&mut Client, &str) -> Result<Option<String>>,
{
    let mut failed = false;
    for name in names {
        match action(client, name).await {
            Ok(Some(printed)) => print_out(&format!("{printed}\n"))?,
            Ok(None) => {}
            Err(err @ CliError::Connect { .. }) => return Err(err),
            Err(err) => {
                print_err(&format!("{err}\n"));
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// The `output file or stdout` choice of save/export; refuses to dump a tar on a terminal.
/// `inspect` of objects of one kind: each name's JSON from `path_of(name)`, printed together
/// (or through `format`), then Docker's "No such …" line for each name not found.
pub async fn inspect_each(
    client: &mut Client,
    names: &[String],
    format: Option<&str>,
    what: &str,
    path_of: impl Fn(&str) -> String,
) -> Result<i32> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for name in names {
        match client.get_json::<Value>(&path_of(name)).await {
            Ok(object) => found.push(object),
            Err(err) if err.is_not_found() => {
                missing.push(format!("Error: No such {what}: {name}"))
            }
            Err(err) => return Err(err),
        }
    }
    system::print_inspected(&found, format, &missing)
}

pub fn output_target(path: Option<&str>) -> Result<Box<dyn Write>> {
    match path {
        Some(path) if path != "-" => Ok(Box::new(std::io::BufWriter::new(std::fs::File::create(
            path,
        )?))),
        _ => {
            if crate::tty::stdout_is_terminal() {
                return Err(CliError::Usage(
                    "cowardly refusing to save to a terminal. Use the -o flag or redirect".into(),
                ));
            }
            Ok(Box::new(std::io::stdout()))
        }
    }
}

/// Reads the common `--filter key=value` flags into the API's `filters` JSON.
pub fn filters_json(filters: &[String]) -> Result<Option<String>> {
    if filters.is_empty() {
        return Ok(None);
    }
    let mut map = serde_json::Map::new();
    for filter in filters {
        let (key, value) = filter.split_once('=').ok_or_else(|| {
            CliError::Usage(format!(
                "bad format of filter (expected name=value): {filter}"
            ))
        })?;
        let entry = map
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(values) = entry {
            values.insert(value.to_string(), Value::Bool(true));
        }
    }
    Ok(Some(Value::Object(map).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_api_json() {
        let json = filters_json(&[
            "status=exited".into(),
            "label=a=b".into(),
            "status=created".into(),
        ])
        .expect("valid")
        .expect("some");
        assert_eq!(
            json,
            r#"{"label":{"a=b":true},"status":{"created":true,"exited":true}}"#
        );
        assert!(filters_json(&["nonsense".into()]).is_err());
        assert_eq!(filters_json(&[]).expect("valid"), None);
    }

    #[test]
    fn inspect_json_uses_four_spaces() {
        let text = pretty_json(&serde_json::json!([{"Id": "x"}])).expect("serializes");
        assert_eq!(text, "[\n    {\n        \"Id\": \"x\"\n    }\n]\n");
    }
}
