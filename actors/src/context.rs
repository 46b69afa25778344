//! [`NodeContext`]: everything an actor may use (directory, storage, limits, HTTP client,
//! metrics, CPU pool), the [`DirectorySlot`] a reload swaps, the station buckets, and the
//! tracking writes (summary, status, a stage's settle) retried briefly.

use crate::{metrics, runtime, ActorError, BlobReader, BlobStore, ObjectError, ObjectStore, StateStore, StatusRecord, StorageError};
use edinode_proto::envelope::{Blob, Inbound};
use edinode_proto::error::ProcessingError;
use edinode_proto::stream::Codec;
use edinode_proto::mime::MimeLimits;
use edinode_proto::profile::Directory;
use std::sync::Arc;

/// How received files are named under `inbox/` so names never collide (`"subfolder"` or
/// `"prefix"` in the configuration; anything else is refused when it loads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FolderStructure {
    /// `inbox/<message>/<file>`
    Subfolder,
    /// `inbox/<message>_<file>`
    Prefix,
}

/// A station's S3 integration, enabled after its access check passed.
#[derive(Clone)]
pub struct StationBucket {
    pub store: Arc<dyn ObjectStore>,
    pub inbound: bool,
    pub outbound: bool,
    pub folders: FolderStructure,
    /// A file is picked up once it is at least this old.
    pub pickup_age_ms: i64,
    /// A subdirectory goes once nothing in it changed for this long.
    pub steady_ms: i64,
    pub poll_ms: u64,
}

impl StationBucket {
    /// A cheap request proving the bucket answers with only the grants this integration uses:
    /// a listing of `AS2/send/<station>/` when outbound is on, else the delete of a missing key
    /// under `as2gateway/<station>/` (inbound needs no s3:ListBucket).
    pub async fn ready(&self, station_as2: &str) -> Result<(), ObjectError> {
        if self.outbound {
            self.store.ping(&format!("AS2/send/{station_as2}/")).await
        } else {
            self.store.delete(&format!("as2gateway/{station_as2}/.edinode-readiness-probe")).await
        }
    }
}

/// Limits and thresholds.
#[derive(Debug, Clone)]
pub struct Limits {
    pub mime: MimeLimits,
    pub max_depth: u8,
    pub max_decompressed: usize,
    /// Bodies larger than this travel as blob references.
    pub inline_threshold: usize,
    /// Stored entities larger than this stream through the stages instead of being loaded.
    pub stream_threshold: usize,
    pub duplicate_ttl_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            mime: MimeLimits::default(),
            max_depth: 8,
            max_decompressed: 4 * 1024 * 1024 * 1024,
            inline_threshold: 1024 * 1024,
            stream_threshold: 8 * 1024 * 1024,
            duplicate_ttl_secs: 30 * 24 * 3600,
        }
    }
}

/// Waits (ms) after each failed tracking write before the next try: about 1.5 s in all, so a
/// short Redis hiccup loses no status while an outage does not hold a stage for long.
const TRACKING_RETRIES: [u64; 4] = [50, 200, 400, 800];

/// Everything an actor may use, handed over at start: no globals.
#[derive(Clone)]
pub struct NodeContext {
    pub node_id: String,
    /// The stations and partners this work runs with: a snapshot of [`NodeContext::directories`]
    /// taken when a stage starts an input ([`NodeContext::current`]), kept to its end.
    pub directory: Arc<Directory>,
    /// The directory in force; a configuration reload replaces it whole.
    pub directories: DirectorySlot,
    pub blobs: Arc<dyn BlobStore>,
    pub state: Arc<dyn StateStore>,
    pub limits: Limits,
    pub http: reqwest::Client,
    /// Root of the inbox (`<inbox>/<station>/<partner>/`).
    pub inbox: std::path::PathBuf,
    pub reporting_ua: String,
    /// Async MDN POST attempts before giving up.
    pub mdn_post_attempts: u32,
    pub metrics: Arc<metrics::Metrics>,
    /// S3 integrations by station name.
    pub buckets: Arc<std::collections::HashMap<String, StationBucket>>,
    /// Sync inbox files and their directory entries before a delivery counts as done.
    pub fsync: bool,
    /// Where CPU-bound work runs (a SyncArbiter of workers sized from the cores).
    pub cpu: runtime::CpuPool,
}

/// The directory in force, shared by every copy of a node's context. A reload swaps in a new
/// directory whole; work already started keeps the snapshot it took.
#[derive(Clone, Default)]
pub struct DirectorySlot(Arc<std::sync::RwLock<Arc<Directory>>>);

impl DirectorySlot {
    pub fn new(d: Arc<Directory>) -> DirectorySlot {
        DirectorySlot(Arc::new(std::sync::RwLock::new(d)))
    }
    /// The directory in force now.
    pub fn current(&self) -> Arc<Directory> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
    /// Put a new directory in force (for work that starts from now on).
    pub fn replace(&self, d: Arc<Directory>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = d;
    }
}

impl NodeContext {
    /// This context with the directory in force now; a stage takes one per input.
    pub fn current(&self) -> NodeContext {
        NodeContext { directory: self.directories.current(), ..self.clone() }
    }

    /// Load a blob's bytes.
    pub async fn load(&self, blob: &Blob) -> Result<Vec<u8>, ActorError> {
        match blob {
            Blob::Inline(b) => Ok(b.clone()),
            Blob::Stored { key, .. } => self.blobs.get(key).await.map_err(ActorError::from),
        }
    }

    /// Whether a blob is large enough to stream through a stage instead of being loaded.
    pub fn streams(&self, blob: &Blob) -> bool {
        matches!(blob, Blob::Stored { len, .. } if *len > self.limits.stream_threshold as u64)
    }

    /// The bytes of a blob a stage handles in memory; `None` when it is large enough to be
    /// streamed through the stage instead.
    pub async fn small(&self, blob: &Blob) -> Result<Option<Vec<u8>>, ActorError> {
        if self.streams(blob) {
            return Ok(None);
        }
        self.load(blob).await.map(Some)
    }

    /// A blob read piece by piece.
    pub async fn reader(&self, blob: &Blob) -> Result<Box<dyn BlobReader + '_>, ActorError> {
        match blob {
            Blob::Inline(b) => Ok(Box::new(crate::ports::WholeReader::new(b))),
            Blob::Stored { key, .. } => Ok(self.blobs.reader(key).await?),
        }
    }

    /// The first `n` bytes of a blob (what classifying it needs).
    pub async fn head(&self, blob: &Blob, n: usize) -> Result<Vec<u8>, ActorError> {
        let mut r = self.reader(blob).await?;
        let mut out = Vec::new();
        while out.len() < n {
            match r.next().await? {
                Some(c) => out.extend_from_slice(&c),
                None => break,
            }
        }
        out.truncate(n);
        Ok(out)
    }

    /// Stream `input` through `codec` on the CPU pool into the blob `work/<id>/<hint>`, a piece
    /// at a time: memory stays at a few pieces whatever the size. `Ok(Err(e))`: the codec
    /// refused the content (nothing is stored); the codec comes back for what it learnt (a MIC).
    pub(crate) async fn stream_through<C: Codec + 'static>(&self, ctx: &Inbound, input: &Blob, hint: &str, codec: C) -> Result<Result<(C, Blob), ProcessingError>, ActorError> {
        let key = format!("work/{}/{hint}", ctx.id);
        let mut reader = self.reader(input).await?;
        let mut writer = self.blobs.writer(&key).await?;
        let mut codec = codec;
        let mut ended = false;
        loop {
            let chunk = if codec.pending() {
                Some(Vec::new())
            } else if ended {
                break;
            } else {
                reader.next().await?
            };
            ended |= chunk.is_none();
            let (c, result) = self
                .cpu
                .run(move || {
                    let mut out = Vec::new();
                    let r = match chunk {
                        Some(d) => codec.push(&d, &mut out),
                        None => codec.finish(&mut out),
                    };
                    (codec, r.map(|()| out))
                })
                .await?;
            codec = c;
            match result {
                Ok(out) => writer.write(&out).await?,
                Err(e) => return Ok(Err(e)),
            }
        }
        let len = writer.finish().await?;
        let from = match input {
            Blob::Inline(b) => b.len() as u64,
            Blob::Stored { len, .. } => *len,
        };
        tracing::info!(message = "Large layer streamed.", id = %ctx.id, layer = hint, from_bytes = from, to_bytes = len);
        Ok(Ok((codec, Blob::Stored { key, len })))
    }

    /// Keep bytes inline when small, else store them under a key derived from `hint`.
    pub async fn blob(&self, ctx: &Inbound, hint: &str, data: Vec<u8>) -> Result<Blob, ActorError> {
        if data.len() <= self.limits.inline_threshold {
            return Ok(Blob::Inline(data));
        }
        let key = format!("work/{}/{}", ctx.id, hint);
        self.blobs.put(&key, &data).await.map_err(ActorError::from)?;
        Ok(Blob::Stored { key, len: data.len() as u64 })
    }

    /// Like [`NodeContext::blob`] for bytes given in pieces (large ones are never joined).
    pub(crate) async fn blob_parts(&self, ctx: &Inbound, hint: &str, parts: &[&[u8]]) -> Result<Blob, ActorError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len <= self.limits.inline_threshold {
            return Ok(Blob::Inline(parts.concat()));
        }
        let key = format!("work/{}/{}", ctx.id, hint);
        self.blobs.put_parts(&key, parts).await.map_err(ActorError::from)?;
        Ok(Blob::Stored { key, len: len as u64 })
    }

    /// Add summary fields; retried briefly, then logged and counted (never failing the stage).
    pub async fn annotate(&self, id: &str, fields: &[(&str, String)]) {
        if let Err(error) = self.tracked("summary", || self.state.annotate(id, fields)).await {
            tracing::warn!(message = "Failed to record message summary.", %error, id);
        }
    }

    /// Add summary fields and record a status together; retried briefly, then logged and
    /// counted (never failing the stage).
    pub(crate) async fn annotate_and_status(&self, id: &str, fields: &[(&str, String)], status: &str, detail: &str) {
        if let Err(error) = self.tracked("status", || self.state.annotate_and_record(id, fields, status, detail)).await {
            tracing::warn!(message = "Failed to record message summary and status.", %error, id, status);
        }
    }

    /// Record a status; retried briefly, then logged and counted (never failing the stage).
    pub async fn status(&self, id: &str, status: &str, detail: &str) {
        if let Err(error) = self.tracked("status", || self.state.record(id, status, detail)).await {
            tracing::warn!(message = "Failed to record message status.", %error, id, status);
        }
    }

    /// A stage's statuses and its "handled" marker ([`StateStore::settle`]), retried like any
    /// tracking write; the last error when it could not be written (counted).
    pub async fn settle(&self, records: &[StatusRecord], done: (&str, &str, u64)) -> Result<(), StorageError> {
        self.tracked("status", || self.state.settle(records, Some(done))).await
    }

    /// Run a tracking write, tried again after each of [`TRACKING_RETRIES`] while the store is
    /// unavailable; a write that still fails (or cannot succeed) is counted under `kind` and its
    /// last error returned.
    async fn tracked<'a, F, Fut>(&self, kind: &str, write: F) -> Result<(), StorageError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), StorageError>> + 'a,
    {
        let mut tries = TRACKING_RETRIES.iter();
        loop {
            let e = match write().await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            match tries.next() {
                Some(&wait) if e.is_transient() => tokio::time::sleep(std::time::Duration::from_millis(wait)).await,
                _ => {
                    self.metrics.state_write_failures.with_label_values(&[kind]).inc();
                    return Err(e);
                }
            }
        }
    }
}

/// Record a message's identity on the current span (the runner declares these fields).
pub fn describe(ctx: &Inbound) {
    let span = tracing::Span::current();
    span.record("message_id", ctx.request.message_id.as_str());
    span.record("station", ctx.station.as_str());
    span.record("partner", ctx.partner.as_str());
    span.record("direction", "inbound");
    span.record("size", ctx.raw_len);
}
