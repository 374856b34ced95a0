//! Layer downloads: several at once (like dockerd's `max-concurrent-downloads`, 3), each into
//! the content store's ingest for its digest, resumed with an HTTP `Range` request where an
//! earlier attempt (this pull's, or one a daemon crash cut) stopped. The layer apply reads the
//! same bytes while they arrive ([`Arrival`]), so the first layer is being unpacked while the
//! next ones are still downloading, and nothing is read twice from the network.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::StatusCode;
use serde_json::json;
use tokio::sync::Semaphore;

use super::client::{Registry, RegistryError};
use super::pull::{Progress, short};
use crate::images::content::ContentStore;

/// Attempts per blob within one pull; each resumes where the last one stopped.
const ATTEMPTS: u32 = 3;

/// How much of a blob has arrived, shared by its download and the apply reading it.
#[derive(Default)]
pub struct Arrival {
    state: Mutex<ArrivalState>,
    changed: Condvar,
}

#[derive(Default)]
struct ArrivalState {
    /// The bytes so far (the ingest, or the blob when it was already there).
    source: Option<Arc<File>>,
    available: u64,
    /// `Some` once the download ended: how.
    end: Option<Result<(), String>>,
}

impl Arrival {
    fn update(&self, f: impl FnOnce(&mut ArrivalState)) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
        self.changed.notify_all();
    }

    /// A reader of the blob from its first byte, blocking until bytes arrive (use it off the
    /// async threads).
    pub fn reader(self: &Arc<Self>) -> ArrivalReader {
        ArrivalReader {
            arrival: self.clone(),
            position: 0,
        }
    }
}

pub struct ArrivalReader {
    arrival: Arc<Arrival>,
    position: u64,
}

impl Read for ArrivalReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut s = self.arrival.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(file) = s.source.clone().filter(|_| self.position < s.available) {
                let want = buf.len().min((s.available - self.position) as usize);
                drop(s);
                let n = file.read_at(&mut buf[..want], self.position)?;
                self.position += n as u64;
                return Ok(n);
            }
            match &s.end {
                Some(Ok(())) => return Ok(0),
                Some(Err(e)) => return Err(std::io::Error::other(e.clone())),
                None => {
                    s = self
                        .arrival
                        .changed
                        .wait(s)
                        .unwrap_or_else(|p| p.into_inner())
                }
            }
        }
    }
}

/// What one download is asked for.
pub struct BlobRequest {
    pub path: String,
    pub digest: String,
    pub size: u64,
}

/// Fetches the blob into the content store (unless it is there), publishing its bytes to
/// `arrival` as they are written. Retries broken transfers, resuming each time.
pub async fn download(
    registry: Arc<Registry>,
    content: Arc<ContentStore>,
    limit: Arc<Semaphore>,
    blob: BlobRequest,
    arrival: Arc<Arrival>,
    progress: Progress,
) -> Result<(), RegistryError> {
    let result = download_inner(&registry, &content, &limit, &blob, &arrival, &progress).await;
    arrival.update(|s| {
        s.end = Some(
            result
                .as_ref()
                .map(|_| ())
                .map_err(|e| format!("download of {}: {e}", blob.digest)),
        )
    });
    result
}

async fn download_inner(
    registry: &Registry,
    content: &Arc<ContentStore>,
    limit: &Semaphore,
    blob: &BlobRequest,
    arrival: &Arrival,
    progress: &Progress,
) -> Result<(), RegistryError> {
    let id = short(&blob.digest);
    let failed = |what: &str, e: std::io::Error| {
        RegistryError::Failed(format!("{what} of blob {}: {e}", blob.digest))
    };
    let lock = content.ingest_lock(&blob.digest);
    let _writer = lock.lock().await;
    if let Some(path) = content.path(&blob.digest).filter(|p| p.exists()) {
        // Another pull brought it meanwhile.
        let file = File::open(&path).map_err(|e| failed("open", e))?;
        let len = file.metadata().map_err(|e| failed("stat", e))?.len();
        arrival.update(|s| {
            s.source = Some(Arc::new(file));
            s.available = len;
        });
        return Ok(());
    }
    let _slot = limit
        .acquire()
        .await
        .map_err(|e| RegistryError::Failed(e.to_string()))?;
    let (c, d) = (content.clone(), blob.digest.clone());
    let mut ingest = tokio::task::spawn_blocking(move || c.ingest(&d))
        .await
        .map_err(|e| RegistryError::Failed(e.to_string()))?
        .map_err(|e| failed("open the ingest", e))?;
    let reading = File::open(ingest.path()).map_err(|e| failed("open", e))?;
    let resumed_at = ingest.size();
    arrival.update(|s| {
        s.source = Some(Arc::new(reading));
        s.available = resumed_at;
    });
    let mut attempt = 0;
    loop {
        attempt += 1;
        match fetch_into(registry, blob, &mut ingest, arrival, progress, &id).await {
            Ok(()) => break,
            Err(RegistryError::Transport(e)) if attempt < ATTEMPTS => {
                let wait = Duration::from_millis(250 << attempt);
                progress
                    .status(
                        Some(&id),
                        &format!("Retrying in {} ms ({e})", wait.as_millis()),
                    )
                    .await;
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e),
        }
    }
    progress.status(Some(&id), "Verifying Checksum").await;
    let (c, d) = (content.clone(), blob.digest.clone());
    tokio::task::spawn_blocking(move || ingest.commit(&c, &d))
        .await
        .map_err(|e| RegistryError::Failed(e.to_string()))?
        .map_err(|e| failed("store", e))?;
    progress.status(Some(&id), "Download complete").await;
    Ok(())
}

/// One attempt: the rest of the blob from where the ingest stands.
async fn fetch_into(
    registry: &Registry,
    blob: &BlobRequest,
    ingest: &mut crate::images::content::Ingest,
    arrival: &Arrival,
    progress: &Progress,
    id: &str,
) -> Result<(), RegistryError> {
    let offset = ingest.size();
    if blob.size > 0 && offset >= blob.size {
        return Ok(());
    }
    let headers = if offset > 0 {
        vec![("Range", format!("bytes={offset}-"))]
    } else {
        vec![]
    };
    let resp = registry
        .get_with(
            &format!("/v2/{}/blobs/{}", blob.path, blob.digest),
            &headers,
        )
        .await?;
    // A registry that ignores the range sends the whole blob: skip what the ingest has.
    let mut skip = if resp.status() == StatusCode::PARTIAL_CONTENT {
        0
    } else {
        offset
    };
    let mut body = resp.into_body();
    let mut last_report = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            RegistryError::Transport(format!(
                "download of {} cut short at byte {}: {e}",
                blob.digest,
                ingest.size()
            ))
        })?;
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        if skip > 0 {
            let n = data.len().min(skip as usize);
            skip -= n as u64;
            data = data.slice(n..);
        }
        if data.is_empty() {
            continue;
        }
        // Page-cache writes of one frame (≤ 64 KiB): shorter than a hop to the blocking pool.
        ingest
            .append(&data)
            .map_err(|e| RegistryError::Failed(format!("write blob {}: {e}", blob.digest)))?;
        let current = ingest.size();
        arrival.update(|s| s.available = current);
        if current - last_report >= 512 * 1024 || current == blob.size {
            last_report = current;
            progress
                .send(json!({"status": "Downloading", "id": id,
                             "progressDetail": {"current": current, "total": blob.size}}))
                .await;
        }
    }
    if blob.size > 0 && ingest.size() < blob.size {
        return Err(RegistryError::Transport(format!(
            "download of {} ended at byte {} of {}",
            blob.digest,
            ingest.size(),
            blob.size
        )));
    }
    Ok(())
}
