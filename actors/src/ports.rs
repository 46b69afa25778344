//! The ports actors use for storage: [`BlobStore`] (raw requests, large bodies, working
//! copies), [`StateStore`] (duplicates, status, leases, schedules) and [`ObjectStore`] (a
//! station's own bucket). The node crate implements them (a directory or S3; Redis or a local
//! append-only file).

use std::error::Error as StdError;

/// What a caller can do about a failed storage operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageErrorKind {
    /// The blob or key does not exist (a missing file, NoSuchKey).
    NotFound,
    /// The store did not answer or failed on its side (I/O, network, server, a refusal a
    /// policy change fixes): worth trying again.
    Unavailable,
    /// The request or what is stored cannot be used (an invalid key, an unreadable record):
    /// trying again gives the same answer.
    Invalid,
}

/// A failed storage operation: its kind, what was tried (operation and key), and the error of
/// the layer below when there is one. Displays as `what: source`.
#[derive(Debug)]
pub struct StorageError {
    kind: StorageErrorKind,
    what: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl StorageError {
    pub fn new(kind: StorageErrorKind, what: impl Into<String>) -> StorageError {
        StorageError { kind, what: what.into(), source: None }
    }

    /// The store failed (worth trying again) doing `what`.
    pub fn unavailable(what: impl Into<String>, source: impl Into<Box<dyn StdError + Send + Sync>>) -> StorageError {
        StorageError::new(StorageErrorKind::Unavailable, what).with_source(source)
    }

    /// An invalid request or an unusable stored value.
    pub fn invalid(what: impl Into<String>) -> StorageError {
        StorageError::new(StorageErrorKind::Invalid, what)
    }

    /// A file-system error doing `what`: a missing file is [`StorageErrorKind::NotFound`],
    /// anything else [`StorageErrorKind::Unavailable`].
    pub fn io(what: impl Into<String>, e: std::io::Error) -> StorageError {
        let kind = if e.kind() == std::io::ErrorKind::NotFound { StorageErrorKind::NotFound } else { StorageErrorKind::Unavailable };
        StorageError::new(kind, what).with_source(e)
    }

    pub fn with_source(mut self, source: impl Into<Box<dyn StdError + Send + Sync>>) -> StorageError {
        self.source = Some(source.into());
        self
    }

    pub fn kind(&self) -> StorageErrorKind {
        self.kind
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == StorageErrorKind::NotFound
    }

    /// Whether trying again later may succeed.
    pub(crate) fn is_transient(&self) -> bool {
        self.kind == StorageErrorKind::Unavailable
    }
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(s) => write!(f, "{}: {s}", self.what),
            None => f.write_str(&self.what),
        }
    }
}

impl StdError for StorageError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn StdError + 'static))
    }
}

/// A blob written piece by piece (a request body as it arrives). Nothing is visible under the
/// key until [`BlobWriter::finish`]; a writer dropped unfinished leaves nothing behind.
#[async_trait::async_trait]
pub trait BlobWriter: Send {
    async fn write(&mut self, data: &[u8]) -> Result<(), StorageError>;
    /// Make the blob durable and visible under its key; returns its length.
    async fn finish(self: Box<Self>) -> Result<u64, StorageError>;
}

/// The fallback writer: collects in memory, stores on finish.
struct CollectingWriter<'a, S: BlobStore + ?Sized> {
    store: &'a S,
    key: String,
    data: Vec<u8>,
}

#[async_trait::async_trait]
impl<S: BlobStore + ?Sized> BlobWriter for CollectingWriter<'_, S> {
    async fn write(&mut self, data: &[u8]) -> Result<(), StorageError> {
        self.data.extend_from_slice(data);
        Ok(())
    }
    async fn finish(self: Box<Self>) -> Result<u64, StorageError> {
        self.store.put(&self.key, &self.data).await?;
        Ok(self.data.len() as u64)
    }
}

/// A blob read piece by piece (a large message streams through a stage).
#[async_trait::async_trait]
pub trait BlobReader: Send {
    /// The next piece (about [`edinode_proto::stream::CHUNK`] bytes), or None at the end.
    async fn next(&mut self) -> Result<Option<Vec<u8>>, StorageError>;
}

/// The fallback reader: bytes at hand, handed out in pieces.
pub(crate) struct WholeReader(pub(crate) std::collections::VecDeque<Vec<u8>>);

impl WholeReader {
    pub(crate) fn new(data: &[u8]) -> WholeReader {
        WholeReader(data.chunks(edinode_proto::stream::CHUNK).map(<[u8]>::to_vec).collect())
    }
}

#[async_trait::async_trait]
impl BlobReader for WholeReader {
    async fn next(&mut self) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.0.pop_front())
    }
}

/// Shared blob storage for raw requests and large bodies (a directory, later S3).
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync {
    /// Start writing a blob piece by piece (stores that can stream override this).
    async fn writer<'a>(&'a self, key: &str) -> Result<Box<dyn BlobWriter + 'a>, StorageError> {
        Ok(Box::new(CollectingWriter { store: self, key: key.to_string(), data: Vec::new() }))
    }
    /// Read a blob piece by piece (stores that can stream override this).
    async fn reader<'a>(&'a self, key: &str) -> Result<Box<dyn BlobReader + 'a>, StorageError> {
        let data = self.get(key).await?;
        Ok(Box::new(WholeReader::new(&data)))
    }
    async fn put(&self, key: &str, data: &[u8]) -> Result<(), StorageError>;
    /// Store the concatenation of `parts` without building it in memory first.
    async fn put_parts(&self, key: &str, parts: &[&[u8]]) -> Result<(), StorageError> {
        self.put(key, &parts.concat()).await
    }
    async fn get(&self, key: &str) -> Result<Vec<u8>, StorageError>;
    async fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// Delete every blob whose key starts with `prefix` (the working copies of one message).
    async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError>;
    /// A cheap request proving the store answers (for /readyz).
    async fn ping(&self) -> Result<(), StorageError> {
        Ok(())
    }
    /// Delete the blobs under `prefix` last written before `before_ms` (unix ms); returns how
    /// many (retention and orphan sweeping).
    async fn delete_older(&self, _prefix: &str, _before_ms: i64) -> Result<usize, StorageError> {
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
    /// An object read a piece at a time, for a large document (stores that can stream do; the
    /// default reads it whole).
    async fn reader<'a>(&'a self, key: &str) -> Result<Box<dyn BlobReader + 'a>, ObjectError> {
        Ok(Box::new(WholeReader::new(&self.get(key).await?)))
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ObjectError>;
    /// Deleting a missing key succeeds.
    async fn delete(&self, key: &str) -> Result<(), ObjectError>;
    async fn copy(&self, from: &str, to: &str) -> Result<(), ObjectError>;
    /// A cheap listing of `prefix` proving the bucket answers (for /readyz).
    async fn ping(&self, prefix: &str) -> Result<(), ObjectError>;
}

/// The outcome of claiming (partner, Message-ID) for a reception.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First time we see it, or our own earlier attempt at the same reception (a retry).
    New,
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
    async fn claim(&self, key: &str, id: &str, ttl_secs: u64) -> Result<Claim, StorageError> {
        let stored = self.set_once(key, id, ttl_secs).await?;
        Ok(if stored == id { Claim::New } else { Claim::Duplicate { first: stored } })
    }
    /// Append a status record for a message.
    async fn record(&self, id: &str, status: &str, detail: &str) -> Result<(), StorageError>;
    /// The status history of a message, oldest first: (unix ms, status, detail).
    async fn history(&self, id: &str) -> Result<Vec<(i64, String, String)>, StorageError>;
    /// Set `key` to `value` if absent; returns the value now stored.
    async fn set_once(&self, key: &str, value: &str, ttl_secs: u64) -> Result<String, StorageError>;
    /// Add fields to a message's summary (direction, station, partner, message_id, size, ...);
    /// a `received_at` field (unix ms) puts it in the time index.
    async fn annotate(&self, id: &str, fields: &[(&str, String)]) -> Result<(), StorageError>;
    /// A message's summary fields (with `status`), if known.
    async fn summary(&self, id: &str) -> Result<Option<std::collections::BTreeMap<String, String>>, StorageError>;
    /// The value of a plain key, if set.
    async fn get(&self, key: &str) -> Result<Option<String>, StorageError>;
    /// Delete a plain key.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// Schedule `member` in the time set `set` at `at_ms` (replaces an earlier schedule).
    async fn schedule(&self, set: &str, member: &str, at_ms: i64) -> Result<(), StorageError>;
    /// Members of `set` due at or before `now_ms`, earliest first.
    async fn due(&self, set: &str, now_ms: i64, limit: usize) -> Result<Vec<String>, StorageError>;
    /// Remove `member` from `set`.
    async fn unschedule(&self, set: &str, member: &str) -> Result<(), StorageError>;
    /// True when the store answers.
    async fn ping(&self) -> bool {
        true
    }
    /// Whether what the store holds survives a restart of its server.
    async fn persistence(&self) -> Persistence {
        Persistence::Logged
    }
    /// Message ids received in [since, until] (unix ms), newest first, at most `limit`.
    async fn list(&self, since_ms: i64, until_ms: i64, limit: usize) -> Result<Vec<String>, StorageError>;
    /// [`StateStore::annotate`] and then [`StateStore::record`], in one round trip (or one log
    /// write) where the store can.
    async fn annotate_and_record(&self, id: &str, fields: &[(&str, String)], status: &str, detail: &str) -> Result<(), StorageError> {
        self.annotate(id, fields).await?;
        self.record(id, status, detail).await
    }
    /// What a stage leaves when it is done with an input: status records, then `done` (a key
    /// set to a value if absent, with its TTL). One round trip (or one log write) where the store
    /// can; the records land before the key.
    async fn settle(&self, records: &[StatusRecord], done: Option<(&str, &str, u64)>) -> Result<(), StorageError> {
        for r in records {
            self.record(&r.id, &r.status, &r.detail).await?;
        }
        if let Some((key, value, ttl)) = done {
            self.set_once(key, value, ttl).await?;
        }
        Ok(())
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
