//! edinode-actors: one file per actor. Each actor is a handler over one typed input from
//! `edinode_proto::envelope`; it returns what should happen next ([`Out`]) and the node's runner
//! (in the `edinode` crate) publishes those outputs durably before it acknowledges the input.
//!
//! - [`mime_unwrapper`]: classifies the current entity and routes it; decompresses; finishes.
//! - [`decryptor`]: opens EnvelopedData / AuthEnvelopedData.
//! - [`verifier`]: checks signatures against the partner's certificates, computes the MIC.
//! - [`mdn_sender`]: builds (and signs) the MDN, replies synchronously or queues it for the
//!   [`mdn_poster`], which POSTs asynchronous MDNs where the partner's configuration allows.
//! - [`deliverer`]: writes documents to the inbox and publishes them on `edinode.inbound`.
//! - [`outbound_intake`], [`as4_submitter`]: documents and user messages that enterprise
//!   systems put on `edinode.outbound` and `edinode.as4.submit`.
//! - [`runtime`]: the actix side: supervised stage actors and the CPU pool (SyncArbiter).
//!
//! The HTTP receiver lives in the node crate (it needs the web server); its logic that is not
//! HTTP plumbing is in [`http_receiver`].
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod as2_sender;
pub mod as4_submitter;
pub mod decryptor;
pub mod deliverer;
pub mod files;
pub mod http_receiver;
pub mod mdn_poster;
pub mod mdn_sender;
pub mod metrics;
pub mod mime_unwrapper;
pub mod outbound_intake;
pub mod pull_sender;
pub mod runtime;
pub mod streamed;
pub mod s3_outbox;
pub mod verifier;

use edinode_proto::envelope::{self, Blob, Inbound};
use edinode_proto::error::ProcessingError;
use edinode_proto::stream::Codec;
use edinode_proto::mime::MimeLimits;
use edinode_proto::profile::Directory;
use serde::Serialize;
use std::sync::Arc;

/// Queue names, one per actor input.
pub mod queues {
    pub const MIME_UNWRAPPER: &str = "edinode.mime_unwrapper";
    pub const DECRYPTOR: &str = "edinode.decryptor";
    pub const VERIFIER: &str = "edinode.verifier";
    pub const MDN_SENDER: &str = "edinode.mdn_sender";
    /// Built asynchronous MDNs waiting to be POSTed (own queue and concurrency).
    pub const MDN_POST: &str = "edinode.mdn_post";
    pub const DELIVERER: &str = "edinode.deliverer";
    pub const DEAD: &str = "edinode.dead";
    pub const AS2_SENDER: &str = "edinode.as2_sender";
    /// Where enterprise systems put documents to send (body = document, headers say where).
    pub const OUTBOUND: &str = "edinode.outbound";
    /// Exchange for outcomes and notifications.
    pub const EVENTS_EXCHANGE: &str = "edinode.events";
    /// Exchange where delivered documents are published for the enterprise bus.
    pub const INBOUND_EXCHANGE: &str = "edinode.inbound";
}

/// A failure of an actor's handler.
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    /// Worth retrying (storage, broker or network hiccup).
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying will not help; the input goes to the dead-letter queue.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// What a handler asks the runner to do once it returns.
#[derive(Debug, Clone)]
pub enum Out {
    /// Publish to a durable work queue (with a publisher confirm).
    Send { queue: &'static str, body: Vec<u8> },
    /// Publish to a durable work queue now, for delivery after `delay` (a retry that waits in
    /// the broker or spool, not in a consumer slot).
    SendLater { queue: &'static str, body: Vec<u8>, delay: std::time::Duration },
    /// Publish a synchronous reply to a node's reply queue (not durable).
    Reply { queue: String, body: Vec<u8> },
    /// Move the input itself to the dead-letter queue with this reason (it cannot be handled
    /// as given: an expected outcome, not a failure to retry).
    Dead { reason: String },
    /// Publish to an exchange for consumers outside edinode. `message_id` (the AMQP property) is
    /// stable for the same effect however often its input is redelivered, so consumers can
    /// deduplicate on it.
    Publish { exchange: &'static str, routing_key: String, message_id: String, headers: Vec<(String, String)>, body: Vec<u8> },
    /// Record a status of a message together with the stage's "handled" marker, after the other
    /// outputs are published (one state round trip per stage). For milestones nobody waits on;
    /// a status a caller may read as soon as it sees an effect is written with
    /// [`NodeContext::status`] before the effect.
    Status { id: String, status: &'static str, detail: String },
    /// Delete these blobs (`prefix/` removes everything under it) once the other outputs are
    /// published and the input is recorded as handled: a redelivery of the input before that
    /// point still finds what it reads.
    DropBlobs { prefixes: Vec<String>, keys: Vec<String> },
}

impl Out {
    pub fn send<T: Serialize>(queue: &'static str, v: &T) -> Result<Out, ActorError> {
        Ok(Out::Send { queue, body: envelope::encode(v).map_err(ActorError::Permanent)? })
    }
}

/// A blob written piece by piece (a request body as it arrives). Nothing is visible under the
/// key until [`BlobWriter::finish`]; a writer dropped unfinished leaves nothing behind.
#[async_trait::async_trait]
pub trait BlobWriter: Send {
    async fn write(&mut self, data: &[u8]) -> Result<(), String>;
    /// Make the blob durable and visible under its key; returns its length.
    async fn finish(self: Box<Self>) -> Result<u64, String>;
}

/// The fallback writer: collects in memory, stores on finish.
struct CollectingWriter<'a, S: BlobStore + ?Sized> {
    store: &'a S,
    key: String,
    data: Vec<u8>,
}

#[async_trait::async_trait]
impl<S: BlobStore + ?Sized> BlobWriter for CollectingWriter<'_, S> {
    async fn write(&mut self, data: &[u8]) -> Result<(), String> {
        self.data.extend_from_slice(data);
        Ok(())
    }
    async fn finish(self: Box<Self>) -> Result<u64, String> {
        self.store.put(&self.key, &self.data).await?;
        Ok(self.data.len() as u64)
    }
}

/// A blob read piece by piece (a large message streams through a stage).
#[async_trait::async_trait]
pub trait BlobReader: Send {
    /// The next piece (about [`edinode_proto::stream::CHUNK`] bytes), or None at the end.
    async fn next(&mut self) -> Result<Option<Vec<u8>>, String>;
}

/// The fallback reader: the whole blob, handed out in pieces.
struct WholeReader(std::collections::VecDeque<Vec<u8>>);

#[async_trait::async_trait]
impl BlobReader for WholeReader {
    async fn next(&mut self) -> Result<Option<Vec<u8>>, String> {
        Ok(self.0.pop_front())
    }
}

/// Shared blob storage for raw requests and large bodies (a directory, later S3).
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync {
    /// Start writing a blob piece by piece (stores that can stream override this).
    async fn writer<'a>(&'a self, key: &str) -> Result<Box<dyn BlobWriter + 'a>, String> {
        Ok(Box::new(CollectingWriter { store: self, key: key.to_string(), data: Vec::new() }))
    }
    /// Read a blob piece by piece (stores that can stream override this).
    async fn reader<'a>(&'a self, key: &str) -> Result<Box<dyn BlobReader + 'a>, String> {
        let data = self.get(key).await?;
        Ok(Box::new(WholeReader(data.chunks(edinode_proto::stream::CHUNK).map(<[u8]>::to_vec).collect())))
    }
    async fn put(&self, key: &str, data: &[u8]) -> Result<(), String>;
    /// Store the concatenation of `parts` without building it in memory first.
    async fn put_parts(&self, key: &str, parts: &[&[u8]]) -> Result<(), String> {
        self.put(key, &parts.concat()).await
    }
    async fn get(&self, key: &str) -> Result<Vec<u8>, String>;
    async fn delete(&self, key: &str) -> Result<(), String>;
    /// Delete every blob whose key starts with `prefix` (the working copies of one message).
    async fn delete_prefix(&self, prefix: &str) -> Result<(), String>;
    /// A cheap request proving the store answers (for /readyz).
    async fn ping(&self) -> Result<(), String> {
        Ok(())
    }
    /// Delete the blobs under `prefix` last written before `before_ms` (unix ms); returns how
    /// many (retention and orphan sweeping).
    async fn delete_older(&self, _prefix: &str, _before_ms: i64) -> Result<usize, String> {
        Ok(0)
    }
}

/// An object in a station's bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub last_modified_ms: i64,
    pub etag: String,
}

/// Why a bucket operation failed, as far as callers decide differently. Each variant carries a
/// sentence naming the operation and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// The key does not exist (NoSuchKey, 404).
    #[error("{0}")]
    NotFound(String),
    /// The bucket's policy refused the operation (403): trying again will not help until the
    /// policy changes.
    #[error("{0}")]
    Denied(String),
    /// Anything else (network, 5xx, a missing bucket): worth trying again later.
    #[error("{0}")]
    Other(String),
}

/// A station's own bucket (S3 or compatible).
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync {
    async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), ObjectError>;
    /// Store a file's content (a large document, streamed by stores that can).
    async fn put_file(&self, key: &str, path: &std::path::Path) -> Result<(), ObjectError> {
        let data = tokio::fs::read(path).await.map_err(|e| ObjectError::Other(format!("read {}: {e}", path.display())))?;
        self.put(key, data).await
    }
    async fn get(&self, key: &str) -> Result<Vec<u8>, ObjectError>;
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ObjectError>;
    /// Deleting a missing key succeeds.
    async fn delete(&self, key: &str) -> Result<(), ObjectError>;
    async fn copy(&self, from: &str, to: &str) -> Result<(), ObjectError>;
    /// A cheap listing of `prefix` proving the bucket answers (for /readyz).
    async fn ping(&self, prefix: &str) -> Result<(), ObjectError>;
}

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

/// The outcome of claiming (partner, Message-ID) for a reception.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First time we see it.
    New,
    /// Our own earlier attempt at the same reception (a retry): not a duplicate.
    Own,
    /// Another reception already had it.
    Duplicate { first: String },
}

/// Whether the state store keeps what it holds when its server restarts. Duplicate detection,
/// queued AS4 messages, message status, MDN deadlines and pick-up leases all live there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persistence {
    /// Every write is logged (Redis AOF, the embedded append-only file).
    Logged,
    /// Periodic snapshots only (Redis RDB, `save` rules given): writes since the last snapshot
    /// are lost.
    Snapshots(String),
    /// Nothing survives a restart.
    Volatile,
    /// Could not be read (CONFIG refused, as on some managed Redis services), with why.
    Unknown(String),
}

impl Persistence {
    /// True when logged, false when not, None when unknown.
    pub fn durable(&self) -> Option<bool> {
        match self {
            Persistence::Logged => Some(true),
            Persistence::Snapshots(_) | Persistence::Volatile => Some(false),
            Persistence::Unknown(_) => None,
        }
    }

    /// A short name: `logged`, `snapshots`, `none`, `unknown`.
    pub fn name(&self) -> &'static str {
        match self {
            Persistence::Logged => "logged",
            Persistence::Snapshots(_) => "snapshots",
            Persistence::Volatile => "none",
            Persistence::Unknown(_) => "unknown",
        }
    }

    /// What a restart of the state store's server costs, as a sentence; None when logged.
    pub fn at_risk(&self) -> Option<String> {
        const WHAT: &str = "queued AS4 messages not yet pulled are lost, duplicate detection forgets every Message-ID (a partner's resend is delivered again), and message status, MDN deadlines and S3 pick-up leases are lost";
        match self {
            Persistence::Logged => None,
            Persistence::Snapshots(rules) => Some(format!("state is only snapshotted (save {rules}): on a restart, for everything since the last snapshot, {WHAT}")),
            Persistence::Volatile => Some(format!("state is not persisted (no AOF, no snapshots): on a restart {WHAT}")),
            Persistence::Unknown(why) => Some(format!("state persistence could not be read ({why}); unless the server logs every write (AOF), on a restart {WHAT}")),
        }
    }
}

/// A status record of a message (see [`StateStore::record`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRecord {
    pub id: String,
    pub status: String,
    pub detail: String,
}

/// Shared state: duplicates, message status, delivery names (Redis, or local files).
#[async_trait::async_trait]
pub trait StateStore: Send + Sync {
    /// Claim (station, partner, message id) for reception `id`, kept for `ttl_secs`.
    async fn claim(&self, key: &str, id: &str, ttl_secs: u64) -> Result<Claim, String>;
    /// Append a status record for a message.
    async fn record(&self, id: &str, status: &str, detail: &str) -> Result<(), String>;
    /// The status history of a message, oldest first: (unix ms, status, detail).
    async fn history(&self, id: &str) -> Result<Vec<(i64, String, String)>, String>;
    /// Set `key` to `value` if absent; returns the value now stored.
    async fn set_once(&self, key: &str, value: &str, ttl_secs: u64) -> Result<String, String>;
    /// Add fields to a message's summary (direction, station, partner, message_id, size, ...);
    /// a `received_at` field (unix ms) puts it in the time index.
    async fn annotate(&self, id: &str, fields: &[(&str, String)]) -> Result<(), String>;
    /// A message's summary fields (with `status`), if known.
    async fn summary(&self, id: &str) -> Result<Option<std::collections::BTreeMap<String, String>>, String>;
    /// The value of a plain key, if set.
    async fn get(&self, key: &str) -> Result<Option<String>, String>;
    /// Delete a plain key.
    async fn delete(&self, key: &str) -> Result<(), String>;
    /// Schedule `member` in the time set `set` at `at_ms` (replaces an earlier schedule).
    async fn schedule(&self, set: &str, member: &str, at_ms: i64) -> Result<(), String>;
    /// Members of `set` due at or before `now_ms`, earliest first.
    async fn due(&self, set: &str, now_ms: i64, limit: usize) -> Result<Vec<String>, String>;
    /// Remove `member` from `set`.
    async fn unschedule(&self, set: &str, member: &str) -> Result<(), String>;
    /// True when the store answers.
    async fn ping(&self) -> bool {
        true
    }
    /// Whether what the store holds survives a restart of its server.
    async fn persistence(&self) -> Persistence {
        Persistence::Logged
    }
    /// Message ids received in [since, until] (unix ms), newest first, at most `limit`.
    async fn list(&self, since_ms: i64, until_ms: i64, limit: usize) -> Result<Vec<String>, String>;
    /// [`StateStore::annotate`] and then [`StateStore::record`], in one round trip (or one log
    /// write) where the store can.
    async fn annotate_and_record(&self, id: &str, fields: &[(&str, String)], status: &str, detail: &str) -> Result<(), String> {
        self.annotate(id, fields).await?;
        self.record(id, status, detail).await
    }
    /// What a stage leaves when it is done with an input: status records, then `done` (a key
    /// set to a value if absent, with its TTL). One round trip (or one log write) where the store
    /// can; the records land before the key.
    async fn settle(&self, records: &[StatusRecord], done: Option<(&str, &str, u64)>) -> Result<(), String> {
        for r in records {
            self.record(&r.id, &r.status, &r.detail).await?;
        }
        if let Some((key, value, ttl)) = done {
            self.set_once(key, value, ttl).await?;
        }
        Ok(())
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
            max_decompressed: 512 * 1024 * 1024,
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
            Blob::Stored { key, .. } => self.blobs.get(key).await.map_err(ActorError::Transient),
        }
    }

    /// Whether a blob is large enough to stream through a stage instead of being loaded.
    pub fn streams(&self, blob: &Blob) -> bool {
        matches!(blob, Blob::Stored { len, .. } if *len > self.limits.stream_threshold as u64)
    }

    /// A blob read piece by piece.
    pub async fn reader(&self, blob: &Blob) -> Result<Box<dyn BlobReader + '_>, ActorError> {
        match blob {
            Blob::Inline(b) => Ok(Box::new(WholeReader(b.chunks(edinode_proto::stream::CHUNK).map(<[u8]>::to_vec).collect()))),
            Blob::Stored { key, .. } => self.blobs.reader(key).await.map_err(ActorError::Transient),
        }
    }

    /// The first `n` bytes of a blob (what classifying it needs).
    pub async fn head(&self, blob: &Blob, n: usize) -> Result<Vec<u8>, ActorError> {
        let mut r = self.reader(blob).await?;
        let mut out = Vec::new();
        while out.len() < n {
            match r.next().await.map_err(ActorError::Transient)? {
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
    pub async fn stream_through<C: Codec + 'static>(&self, ctx: &Inbound, input: &Blob, hint: &str, codec: C) -> Result<Result<(C, Blob), ProcessingError>, ActorError> {
        let key = format!("work/{}/{hint}", ctx.id);
        let mut reader = self.reader(input).await?;
        let mut writer = self.blobs.writer(&key).await.map_err(ActorError::Transient)?;
        let mut codec = codec;
        let mut ended = false;
        loop {
            let chunk = if codec.pending() {
                Some(Vec::new())
            } else if ended {
                break;
            } else {
                reader.next().await.map_err(ActorError::Transient)?
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
                Ok(out) => writer.write(&out).await.map_err(ActorError::Transient)?,
                Err(e) => return Ok(Err(e)),
            }
        }
        let len = writer.finish().await.map_err(ActorError::Transient)?;
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
        self.blobs.put(&key, &data).await.map_err(ActorError::Transient)?;
        Ok(Blob::Stored { key, len: data.len() as u64 })
    }

    /// Like [`NodeContext::blob`] for bytes given in pieces (large ones are never joined).
    pub async fn blob_parts(&self, ctx: &Inbound, hint: &str, parts: &[&[u8]]) -> Result<Blob, ActorError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len <= self.limits.inline_threshold {
            return Ok(Blob::Inline(parts.concat()));
        }
        let key = format!("work/{}/{}", ctx.id, hint);
        self.blobs.put_parts(&key, parts).await.map_err(ActorError::Transient)?;
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
    pub async fn annotate_and_status(&self, id: &str, fields: &[(&str, String)], status: &str, detail: &str) {
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
    pub async fn settle(&self, records: &[StatusRecord], done: (&str, &str, u64)) -> Result<(), String> {
        self.tracked("status", || self.state.settle(records, Some(done))).await
    }

    /// Run a tracking write, retried after each of [`TRACKING_RETRIES`]; a write that still
    /// fails is counted under `kind` and its last error returned.
    async fn tracked<'a, F, Fut>(&self, kind: &str, write: F) -> Result<(), String>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), String>> + 'a,
    {
        let mut last = String::new();
        for wait in TRACKING_RETRIES {
            match write().await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        }
        self.metrics.state_write_failures.with_label_values(&[kind]).inc();
        Err(last)
    }
}

/// The rank of a status in a message's life; the summary shows the highest reached (history
/// keeps everything). Milestones such as `decrypted` or `mdn-sent` have no rank.
pub fn lifecycle_rank(status: &str) -> Option<u8> {
    Some(match status {
        "received" | "queued" => 0,
        "sending" | "processed" => 1,
        "sent" | "delivered" => 2,
        "failed" => 3,
        _ => return None,
    })
}

/// Publish an event on `edinode.events` (routing key = kind).
pub fn event(kind: &str, id: &str, station: &str, partner: &str, message_id: &str, detail: &str) -> Out {
    let ev = edinode_proto::envelope::Event {
        kind: kind.to_string(),
        id: id.to_string(),
        station: station.to_string(),
        partner: partner.to_string(),
        message_id: message_id.to_string(),
        detail: detail.to_string(),
        at_ms: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0),
    };
    // Stable for the same event: what happened to what, never when.
    let digest = openssl::sha::sha256(format!("{kind}\n{id}\n{station}\n{partner}\n{message_id}\n{detail}").as_bytes());
    Out::Publish {
        exchange: queues::EVENTS_EXCHANGE,
        routing_key: kind.to_string(),
        message_id: format!("{kind}:{}", hex::encode(&digest[..16])),
        headers: vec![("kind".into(), kind.into()), ("station".into(), station.into()), ("partner".into(), partner.into()), ("message-id".into(), message_id.into())],
        body: serde_json::to_vec(&ev).unwrap_or_default(),
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

/// An actor: a name, a typed input, and a handler.
#[async_trait::async_trait]
pub trait Actor: Send + Sync + 'static {
    /// The actor's name as used in `--actors` and metrics.
    const NAME: &'static str;
    /// The queue it consumes.
    const QUEUE: &'static str;
    type Input: serde::de::DeserializeOwned + Send;
    async fn handle(&self, cx: &NodeContext, input: Self::Input) -> Result<Vec<Out>, ActorError>;
    /// Read an input from a queue message: a typed envelope by default; stages fed by systems
    /// outside edinode read the body and headers as those systems write them.
    fn decode(body: &[u8], _headers: &[(String, String)]) -> Result<Self::Input, String> {
        envelope::decode(body)
    }
}
