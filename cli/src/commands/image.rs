//! Image commands: `images`, `pull`, `push`, `rmi`, `tag`, `save`, `load`, `import`,
//! `history`, `image prune`.

use std::io::Write;

use clap::{Args, Subcommand};
use hyper::Method;
use hyper::header::HeaderValue;
use serde_json::Value;

use crate::client::{Client, Query, build, empty_body, reader_body};
use crate::commands::container::prune_report;
use crate::commands::{
    confirm, copy_body_to, filters_json, output_target, print_out, render_progress, segment,
};
use crate::error::{CliError, Result};
use crate::format::{ListFormat, ellipsis, short_id};
use crate::units::{human_size_precision, now_unix, time_ago};

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Show all images (default hides intermediate images)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only show image IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Show digests
    #[arg(long)]
    pub digests: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Filter output based on conditions provided
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
    /// Only images of this repository (REPOSITORY[:TAG])
    pub repository: Option<String>,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Suppress verbose output
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    pub platform: Option<String>,
    /// Download all tagged images in the repository
    #[arg(short = 'a', long = "all-tags")]
    pub all_tags: bool,
    pub image: String,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Suppress verbose output
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Push all tags of an image to the repository
    #[arg(short = 'a', long = "all-tags")]
    pub all_tags: bool,
    pub image: String,
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Force removal of the image
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Do not delete untagged parents
    #[arg(long = "no-prune")]
    pub no_prune: bool,
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}

#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Read from tar archive file, instead of STDIN
    #[arg(short = 'i', long)]
    pub input: Option<String>,
    /// Suppress the load output
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Apply Dockerfile instruction to the created image
    #[arg(short = 'c', long)]
    pub change: Vec<String>,
    /// Set commit message for imported image
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    pub platform: Option<String>,
    /// A tar file, `-` for STDIN, or a URL
    pub file: String,
    pub reference: Option<String>,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Print sizes and dates in human readable format
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub human: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Only show image IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
    pub image: String,
}

#[derive(Args, Debug)]
pub struct ImagePruneArgs {
    /// Remove all unused images, not just dangling ones
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Provide filter values (e.g. "until=<timestamp>")
    #[arg(long = "filter")]
    pub filter: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// List images
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Download an image from a registry
    Pull(PullArgs),
    /// Upload an image to a registry
    Push(PushArgs),
    /// Remove one or more images
    #[command(alias = "rmi", alias = "remove")]
    Rm(RmiArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(TagArgs),
    /// Save one or more images to a tar archive
    Save(SaveArgs),
    /// Load an image from a tar archive or STDIN
    Load(LoadArgs),
    /// Import the contents from a tarball to create a filesystem image
    Import(ImportArgs),
    /// Show the history of an image
    History(HistoryArgs),
    /// Display detailed information on one or more images
    Inspect(crate::commands::system::InspectArgs),
    /// Remove unused images
    Prune(ImagePruneArgs),
}

pub async fn image_command(client: &mut Client, command: ImageCommand) -> Result<i32> {
    match command {
        ImageCommand::Ls(args) => images(client, args).await,
        ImageCommand::Pull(args) => pull(client, args).await,
        ImageCommand::Push(args) => push(client, args).await,
        ImageCommand::Rm(args) => rmi(client, args).await,
        ImageCommand::Tag(args) => tag(client, args).await,
        ImageCommand::Save(args) => save(client, args).await,
        ImageCommand::Load(args) => load(client, args).await,
        ImageCommand::Import(args) => import(client, args).await,
        ImageCommand::History(args) => history(client, args).await,
        ImageCommand::Inspect(mut args) => {
            args.kind = Some("image".into());
            crate::commands::system::inspect(client, args).await
        }
        ImageCommand::Prune(args) => prune(client, args).await,
    }
}

/// `name[:tag]` / `name@digest` → (repository, tag or digest); the tag defaults to latest.
pub fn split_reference(reference: &str) -> (String, String) {
    if let Some((name, digest)) = reference.split_once('@') {
        return (name.to_string(), digest.to_string());
    }
    let last_slash = reference.rfind('/').map(|i| i + 1).unwrap_or(0);
    match reference[last_slash..].rfind(':') {
        Some(colon) => {
            let at = last_slash + colon;
            (reference[..at].to_string(), reference[at + 1..].to_string())
        }
        None => (reference.to_string(), "latest".to_string()),
    }
}

/// The fully qualified name docker prints after a pull: `docker.io/library/busybox:latest`.
pub fn normalized_reference(reference: &str) -> String {
    let (repository, tag) = split_reference(reference);
    let first = repository.split('/').next().unwrap_or_default();
    let has_registry = repository.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost");
    let repository = if has_registry {
        repository
    } else if repository.contains('/') {
        format!("docker.io/{repository}")
    } else {
        format!("docker.io/library/{repository}")
    };
    let separator = if tag.starts_with("sha256:") { '@' } else { ':' };
    format!("{repository}{separator}{tag}")
}

/// POST /images/create?fromImage=…&tag=…, rendering the progress to `out`.
pub async fn pull_image(
    client: &mut Client,
    image: &str,
    platform: Option<&str>,
    out: &mut dyn Write,
    terminal: bool,
) -> Result<()> {
    let (repository, tag) = split_reference(image);
    let path = Query::new("/images/create")
        .param("fromImage", &repository)
        .param("tag", &tag)
        .opt("platform", platform)
        .build();
    let mut request = build(Method::POST, &path, empty_body(), None)?;
    request
        .headers_mut()
        .insert("X-Registry-Auth", registry_auth(image)?);
    let response = client.send(request).await?;
    render_progress(&mut response.into_body(), out, terminal).await?;
    Ok(())
}

/// The credentials stored for `image`'s registry, as the header the daemon reads (`{}`
/// without: the daemon requires the header on push).
fn registry_auth(image: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(&crate::credentials::header_for(image))
        .map_err(|e| CliError::Message(format!("credentials for {image}: {e}")))
}

pub async fn pull(client: &mut Client, args: PullArgs) -> Result<i32> {
    let terminal = crate::tty::stdout_is_terminal();
    if args.all_tags {
        let path = Query::new("/images/create")
            .param("fromImage", &args.image)
            .opt("platform", args.platform.as_deref())
            .build();
        let mut request = build(Method::POST, &path, empty_body(), None)?;
        request
            .headers_mut()
            .insert("X-Registry-Auth", registry_auth(&args.image)?);
        let response = client.send(request).await?;
        render_progress(&mut response.into_body(), std::io::stdout(), terminal).await?;
        return Ok(0);
    }
    if args.quiet {
        pull_image(
            client,
            &args.image,
            args.platform.as_deref(),
            &mut std::io::sink(),
            false,
        )
        .await?;
    } else {
        pull_image(
            client,
            &args.image,
            args.platform.as_deref(),
            &mut std::io::stdout(),
            terminal,
        )
        .await?;
    }
    print_out(&format!("{}\n", normalized_reference(&args.image)))?;
    Ok(0)
}

pub async fn push(client: &mut Client, args: PushArgs) -> Result<i32> {
    let (repository, tag) = split_reference(&args.image);
    let path = Query::new(&format!("/images/{}/push", segment(&repository)))
        .opt("tag", (!args.all_tags).then_some(tag))
        .build();
    let mut request = build(Method::POST, &path, empty_body(), None)?;
    request
        .headers_mut()
        .insert("X-Registry-Auth", registry_auth(&args.image)?);
    let response = client.send(request).await?;
    let terminal = crate::tty::stdout_is_terminal();
    if args.quiet {
        render_progress(&mut response.into_body(), std::io::sink(), false).await?;
        print_out(&format!("{}\n", args.image))?;
    } else {
        render_progress(&mut response.into_body(), std::io::stdout(), terminal).await?;
    }
    Ok(0)
}

pub async fn rmi(client: &mut Client, args: RmiArgs) -> Result<i32> {
    let (force, no_prune) = (args.force, args.no_prune);
    crate::commands::for_each_name(client, &args.images, async |client, name| {
        let path = Query::new(&format!("/images/{}", segment(name)))
            .flag("force", force)
            .flag("noprune", no_prune)
            .build();
        let response = client.delete(&path).await?;
        let deleted: Vec<Value> = crate::client::decode_json(response).await?;
        let lines: Vec<String> = deleted
            .iter()
            .flat_map(|entry| {
                let untagged = entry["Untagged"].as_str().map(|t| format!("Untagged: {t}"));
                let deleted = entry["Deleted"].as_str().map(|d| format!("Deleted: {d}"));
                untagged.into_iter().chain(deleted)
            })
            .collect();
        Ok((!lines.is_empty()).then(|| lines.join("\n")))
    })
    .await
}

pub async fn tag(client: &mut Client, args: TagArgs) -> Result<i32> {
    let (repository, tag) = split_reference(&args.target);
    let path = Query::new(&format!("/images/{}/tag", segment(&args.source)))
        .param("repo", repository)
        .param("tag", tag)
        .build();
    client.post_discard(&path, None).await?;
    Ok(0)
}

pub async fn save(client: &mut Client, args: SaveArgs) -> Result<i32> {
    let mut out = output_target(args.output.as_deref())?;
    let mut query = Query::new("/images/get");
    for image in &args.images {
        query = query.param("names", image);
    }
    let response = client.get(&query.build()).await?;
    copy_body_to(&mut response.into_body(), &mut out).await?;
    Ok(0)
}

pub async fn load(client: &mut Client, args: LoadArgs) -> Result<i32> {
    let body = match &args.input {
        Some(path) => reader_body(std::fs::File::open(path)?),
        None => {
            if crate::tty::stdin_is_terminal() {
                return Err(CliError::Usage(
                    "requested load from stdin, but stdin is empty (use -i to read from a file)"
                        .into(),
                ));
            }
            reader_body(std::io::stdin())
        }
    };
    let path = Query::new("/images/load").flag("quiet", args.quiet).build();
    let response = client
        .send(build(Method::POST, &path, body, Some("application/x-tar"))?)
        .await?;
    let terminal = crate::tty::stdout_is_terminal();
    render_progress(
        &mut response.into_body(),
        std::io::stdout(),
        terminal && !args.quiet,
    )
    .await?;
    Ok(0)
}

pub async fn import(client: &mut Client, args: ImportArgs) -> Result<i32> {
    let (repository, tag) = match &args.reference {
        Some(reference) => {
            let (repository, tag) = split_reference(reference);
            (Some(repository), Some(tag))
        }
        None => (None, None),
    };
    let is_url = args.file.contains("://");
    let mut query = Query::new("/images/create")
        .param("fromSrc", if is_url { args.file.as_str() } else { "-" })
        .opt("repo", repository)
        .opt("tag", tag)
        .opt("message", args.message.as_deref())
        .opt("platform", args.platform.as_deref());
    for change in &args.change {
        query = query.param("changes", change);
    }
    let body = if is_url {
        empty_body()
    } else if args.file == "-" {
        reader_body(std::io::stdin())
    } else {
        reader_body(std::fs::File::open(&args.file)?)
    };
    let response = client
        .send(build(
            Method::POST,
            &query.build(),
            body,
            Some("application/x-tar"),
        )?)
        .await?;
    render_progress(&mut response.into_body(), std::io::stdout(), false).await?;
    Ok(0)
}

const IMAGES_TABLE: &str = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}";
const IMAGES_HEADERS: &[(&str, &str)] = &[
    ("Repository", "REPOSITORY"),
    ("Tag", "TAG"),
    ("ID", "IMAGE ID"),
    ("Digest", "DIGEST"),
    ("CreatedSince", "CREATED"),
    ("CreatedAt", "CREATED AT"),
    ("Size", "SIZE"),
    ("Containers", "CONTAINERS"),
    ("SharedSize", "SHARED SIZE"),
    ("UniqueSize", "UNIQUE SIZE"),
    ("VirtualSize", "VIRTUAL SIZE"),
];

pub async fn images(client: &mut Client, args: ImagesArgs) -> Result<i32> {
    let mut filters = args.filter.clone();
    if let Some(repository) = &args.repository {
        filters.push(format!("reference={repository}"));
    }
    let path = Query::new("/images/json")
        .flag("all", args.all)
        .flag("digests", args.digests)
        .opt("filters", filters_json(&filters)?)
        .build();
    let list: Vec<Value> = client.get_json(&path).await?;
    let now = now_unix();
    let rows: Vec<Value> = list
        .iter()
        .flat_map(|image| image_rows(image, !args.no_trunc, now))
        .collect();
    if args.quiet {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = String::new();
        for row in &rows {
            let id = row["ID"].as_str().unwrap_or_default().to_string();
            if seen.insert(id.clone()) {
                out.push_str(&id);
                out.push('\n');
            }
        }
        print_out(&out)?;
        return Ok(0);
    }
    let default = if args.digests {
        "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    } else {
        IMAGES_TABLE
    };
    let format = ListFormat::parse(args.format.as_deref(), default)?;
    print_out(&format.render(&rows, IMAGES_HEADERS)?)?;
    Ok(0)
}

/// Docker's image rows: one per tag, `<none>` for untagged images.
pub fn image_rows(image: &Value, truncate: bool, now: i64) -> Vec<Value> {
    let id = image["Id"].as_str().unwrap_or_default();
    let id = if truncate {
        short_id(id)
    } else {
        id.to_string()
    };
    let created = image["Created"].as_i64().unwrap_or(0);
    let size = human_size_precision(image["Size"].as_f64().unwrap_or(0.0), 3);
    let digest = image["RepoDigests"]
        .as_array()
        .and_then(|d| d.first())
        .and_then(Value::as_str)
        .and_then(|d| d.split_once('@'))
        .map(|(_, digest)| digest.to_string())
        .unwrap_or_else(|| "<none>".into());
    let tags: Vec<&str> = image["RepoTags"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "<none>:<none>")
                .collect()
        })
        .unwrap_or_default();
    let make = |repository: &str, tag: &str| {
        serde_json::json!({
            "Repository": repository,
            "Tag": tag,
            "ID": id,
            "Digest": digest,
            "CreatedSince": time_ago(created, now),
            "CreatedAt": crate::commands::container::go_time(created),
            "Size": size,
            "Containers": image["Containers"].as_i64().map(|c| c.to_string()).unwrap_or_else(|| "N/A".into()),
            "SharedSize": image["SharedSize"].as_i64().filter(|s| *s >= 0).map(|s| human_size_precision(s as f64, 3)).unwrap_or_else(|| "N/A".into()),
            "UniqueSize": "N/A",
            "VirtualSize": size,
        })
    };
    if tags.is_empty() {
        return vec![make("<none>", "<none>")];
    }
    tags.iter()
        .map(|tagged| {
            let (repository, tag) = split_reference(tagged);
            make(&repository, &tag)
        })
        .collect()
}

const HISTORY_TABLE: &str =
    "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}";

pub async fn history(client: &mut Client, args: HistoryArgs) -> Result<i32> {
    let entries: Vec<Value> = client
        .get_json(&format!("/images/{}/history", segment(&args.image)))
        .await?;
    let now = now_unix();
    let rows: Vec<Value> = entries
        .iter()
        .map(|entry| {
            let id = entry["Id"].as_str().unwrap_or("<missing>");
            let id = if id == "<missing>" || !args.no_trunc && id.is_empty() {
                "<missing>".to_string()
            } else if args.no_trunc {
                id.to_string()
            } else {
                short_id(id)
            };
            let created = entry["Created"].as_i64().unwrap_or(0);
            let created_by = entry["CreatedBy"].as_str().unwrap_or_default().replace('\t', " ");
            let size = entry["Size"].as_i64().unwrap_or(0);
            serde_json::json!({
                "ID": id,
                "CreatedSince": if args.human { time_ago(created, now) } else { crate::commands::container::go_time(created) },
                "CreatedAt": crate::commands::container::go_time(created),
                "CreatedBy": if args.no_trunc { created_by } else { ellipsis(&created_by, 45) },
                "Size": if args.human { human_size_precision(size as f64, 3) } else { size.to_string() },
                "Comment": entry["Comment"].as_str().unwrap_or_default(),
            })
        })
        .collect();
    let format = if args.quiet {
        "{{.ID}}"
    } else {
        args.format.as_deref().unwrap_or(HISTORY_TABLE)
    };
    let headers = [
        ("ID", "IMAGE"),
        ("CreatedSince", "CREATED"),
        ("CreatedAt", "CREATED AT"),
        ("CreatedBy", "CREATED BY"),
        ("Size", "SIZE"),
        ("Comment", "COMMENT"),
    ];
    print_out(&ListFormat::parse(Some(format), HISTORY_TABLE)?.render(&rows, &headers)?)?;
    Ok(0)
}

pub async fn prune(client: &mut Client, args: ImagePruneArgs) -> Result<i32> {
    let warning = if args.all {
        "WARNING! This will remove all images without at least one container associated to them."
    } else {
        "WARNING! This will remove all dangling images."
    };
    if !args.force && !confirm(&format!("{warning}\nAre you sure you want to continue?")) {
        return Ok(0);
    }
    let mut filters = args.filter.clone();
    filters.push(format!("dangling={}", !args.all));
    let path = Query::new("/images/prune")
        .opt("filters", filters_json(&filters)?)
        .build();
    let report: Value = client.post_json(&path, None).await?;
    let mut lines = Vec::new();
    for entry in report["ImagesDeleted"].as_array().into_iter().flatten() {
        if let Some(untagged) = entry["Untagged"].as_str() {
            lines.push(Value::String(format!("untagged: {untagged}")));
        }
        if let Some(deleted) = entry["Deleted"].as_str() {
            lines.push(Value::String(format!("deleted: {deleted}")));
        }
    }
    print_out(&prune_report(
        "Deleted Images:",
        &Value::Array(lines),
        &report["SpaceReclaimed"],
    ))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references() {
        assert_eq!(
            split_reference("busybox"),
            ("busybox".into(), "latest".into())
        );
        assert_eq!(
            split_reference("busybox:1.36"),
            ("busybox".into(), "1.36".into())
        );
        assert_eq!(
            split_reference("localhost:5000/x/y"),
            ("localhost:5000/x/y".into(), "latest".into())
        );
        assert_eq!(
            split_reference("localhost:5000/x:2"),
            ("localhost:5000/x".into(), "2".into())
        );
        assert_eq!(
            split_reference("x@sha256:ab"),
            ("x".into(), "sha256:ab".into())
        );
        assert_eq!(
            normalized_reference("busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(normalized_reference("me/app:1"), "docker.io/me/app:1");
        assert_eq!(
            normalized_reference("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
    }

    #[test]
    fn image_table() {
        let image = json!({"Id": "sha256:0123456789abcdef", "RepoTags": ["busybox:latest", "busybox:1"], "Created": 0, "Size": 4_260_000});
        let untagged = json!({"Id": "sha256:fedcba9876543210", "RepoTags": [], "Created": 0, "Size": 1_500_000});
        let rows: Vec<Value> = [image, untagged]
            .iter()
            .flat_map(|i| image_rows(i, true, 3 * 86400))
            .collect();
        let out = ListFormat::parse(None, IMAGES_TABLE)
            .expect("valid")
            .render(&rows, IMAGES_HEADERS)
            .expect("renders");
        assert_eq!(
            out,
            "REPOSITORY   TAG       IMAGE ID       CREATED      SIZE\n\
             busybox      latest    0123456789ab   3 days ago   4.26MB\n\
             busybox      1         0123456789ab   3 days ago   4.26MB\n\
             <none>       <none>    fedcba987654   3 days ago   1.5MB\n"
        );
    }
}
