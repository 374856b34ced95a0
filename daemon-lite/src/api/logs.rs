//! `GET /containers/{id}/logs`: the json-file log, filtered (streams, since, until, tail),
//! framed as Docker frames it (8-byte headers without a tty), and followed while the container
//! runs.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Response, StatusCode};
use tokio::sync::mpsc;

use super::body::{self, Body};
use super::containers::find;
use super::error::{ApiError, ApiResult};
use super::fields::Fields;
use super::query::{Query, parse_time};
use crate::containers::{Handle, Status};
use crate::daemon::Daemon;
use crate::json_log::{self, Entry, Stream};

/// How the client wants entries.
#[derive(Clone, Copy)]
pub struct Shape {
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    pub timestamps: bool,
    pub since: Option<u128>,
    pub until: Option<u128>,
}

impl Shape {
    fn wants(&self, e: &Entry) -> bool {
        let stream_ok = match e.stream {
            Stream::Stdout => self.stdout,
            Stream::Stderr => self.stderr,
        };
        if !stream_ok {
            return false;
        }
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let t = humantime::parse_rfc3339(&e.time)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t <= u)
    }

    /// One entry as it goes on the wire.
    pub fn encode(&self, e: &Entry) -> Bytes {
        let mut payload = Vec::with_capacity(e.log.len() + 40);
        if self.timestamps {
            payload.extend_from_slice(e.time.as_bytes());
            payload.push(b' ');
        }
        payload.extend_from_slice(e.log.as_bytes());
        if self.tty {
            return Bytes::from(payload);
        }
        let mut framed = Vec::with_capacity(payload.len() + 8);
        framed.push(e.stream.frame_byte());
        framed.extend_from_slice(&[0, 0, 0]);
        framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        framed.extend_from_slice(&payload);
        Bytes::from(framed)
    }
}

pub fn content_type(tty: bool) -> &'static str {
    if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    }
}

pub async fn logs(d: &Arc<Daemon>, id: &str, q: &Query) -> ApiResult<Response<Body>> {
    let h = find(d, id)?;
    let record = h.snapshot();
    let shape = Shape {
        stdout: q.flag("stdout"),
        stderr: q.flag("stderr"),
        tty: record.config.bool("Tty"),
        timestamps: q.flag("timestamps"),
        since: q
            .get("since")
            .filter(|s| !s.is_empty() && *s != "0")
            .map(parse_time)
            .transpose()?,
        until: q
            .get("until")
            .filter(|s| !s.is_empty() && *s != "0")
            .map(parse_time)
            .transpose()?,
    };
    if !shape.stdout && !shape.stderr {
        return Err(ApiError::bad_request(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let Some(path) = record.log_path.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "configured logging driver does not support reading",
        ));
    };
    let tail = match q.get("tail").unwrap_or("all") {
        "all" | "" => None,
        n => Some(
            n.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid tail {n:?}")))?,
        ),
    };
    let max_files = crate::containers::lifecycle::log_rotation(&record.host_config).max_files;
    let follow = q.flag("follow");
    let (tx, body) = body::channel(32);
    std::thread::spawn(move || {
        let _ = send_log(&h, &path, max_files, shape, tail, follow, &tx);
    });
    Ok(Response::builder()
        .header("Content-Type", content_type(shape.tty))
        .body(body)
        .unwrap_or_else(|_| Response::new(body::empty())))
}

/// Where a follower is in the live file.
struct Cursor {
    offset: u64,
    inode: u64,
}

/// Reads the live file from the cursor; entries and the new cursor. After a rotation the rest
/// of the old file (now `.1`) is read first.
fn read_new(path: &Path, cursor: &mut Cursor, out: &mut Vec<Entry>) -> std::io::Result<()> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.ino() != cursor.inode {
        let old = json_log::rotated(path, 1);
        if std::fs::metadata(&old).is_ok_and(|m| m.ino() == cursor.inode) {
            let mut f = File::open(&old)?;
            f.seek(SeekFrom::Start(cursor.offset))?;
            json_log::read_from(BufReader::new(f), out)?;
        }
        cursor.inode = meta.ino();
        cursor.offset = 0;
    } else if meta.len() < cursor.offset {
        // Truncated (max-file=1 rotation).
        cursor.offset = 0;
    }
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(cursor.offset))?;
    cursor.offset += json_log::read_from(BufReader::new(f), out)?;
    Ok(())
}

fn send_log(
    h: &Handle,
    path: &PathBuf,
    max_files: u32,
    shape: Shape,
    tail: Option<usize>,
    follow: bool,
    tx: &mpsc::Sender<Bytes>,
) -> Result<(), ()> {
    let mut entries = Vec::new();
    for n in (1..max_files.max(1)).rev() {
        if let Ok(f) = File::open(json_log::rotated(path, n)) {
            let _ = json_log::read_from(BufReader::new(f), &mut entries);
        }
    }
    let mut cursor = Cursor {
        offset: 0,
        inode: std::fs::metadata(path).map_or(0, |m| m.ino()),
    };
    let _ = read_new(path, &mut cursor, &mut entries);
    entries.retain(|e| shape.wants(e));
    let skip = tail.map_or(0, |t| entries.len().saturating_sub(t));
    for e in &entries[skip..] {
        tx.blocking_send(shape.encode(e)).map_err(|_| ())?;
    }
    if !follow {
        return Ok(());
    }
    let lifecycle = h.watch();
    loop {
        let running = matches!(
            h.status(),
            Status::Running | Status::Restarting | Status::Created
        ) && !lifecycle.borrow().removed;
        let mut fresh = Vec::new();
        let _ = read_new(path, &mut cursor, &mut fresh);
        for e in fresh.iter().filter(|e| shape.wants(e)) {
            tx.blocking_send(shape.encode(e)).map_err(|_| ())?;
        }
        if shape.until.is_some_and(|u| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
                > u
        }) {
            return Ok(());
        }
        if !running && fresh.is_empty() {
            return Ok(());
        }
        if tx.is_closed() {
            return Err(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_stream_and_length() {
        let e = Entry {
            log: "hi\n".into(),
            stream: Stream::Stderr,
            time: "2026-01-01T00:00:00.000000001Z".into(),
        };
        let shape = Shape {
            stdout: true,
            stderr: true,
            tty: false,
            timestamps: true,
            since: None,
            until: None,
        };
        let b = shape.encode(&e);
        assert_eq!(&b[..4], &[2, 0, 0, 0]);
        let len = u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as usize;
        assert_eq!(&b[8..], format!("{} hi\n", e.time).as_bytes());
        assert_eq!(len, b.len() - 8);
        let raw = Shape {
            tty: true,
            timestamps: false,
            ..shape
        }
        .encode(&e);
        assert_eq!(&raw[..], b"hi\n");
        let only_out = Shape {
            stderr: false,
            ..shape
        };
        assert!(!only_out.wants(&e));
        let late = Shape {
            since: Some(u128::MAX),
            ..shape
        };
        assert!(!late.wants(&e));
    }
}
