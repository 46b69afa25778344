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
//! - [`s3_outbox`]: picks up files to send from a station's own bucket.
//! - [`as2_sender`]: builds, POSTs and settles outbound AS2 messages (synchronous and
//!   asynchronous MDNs, their deadlines).
//! - [`pull_sender`]: the AS4 pull send agent (queues per MPC, leases, receipts).
//! - [`runtime`]: the actix side: supervised stage actors and the CPU pool (SyncArbiter).
//! - [`files`]: durable file writes shared by the stages that write files; [`metrics`]: the
//!   Prometheus metrics.
//!
//! Shared by every actor (re-exported here): `context` ([`NodeContext`], [`DirectorySlot`],
//! [`StationBucket`], the retried tracking writes), `ports` (the storage traits [`BlobStore`],
//! [`StateStore`], [`ObjectStore`] and their errors) and `outputs` ([`Out`], [`event`]).
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
mod outbound_stream;
pub mod pull_sender;
pub mod runtime;
pub mod s3_outbox;
pub mod streamed;
pub mod verifier;

mod context;
mod outputs;
mod ports;

pub use context::{describe, DirectorySlot, FolderStructure, Limits, NodeContext, StationBucket};
pub use outputs::{event, Out};
pub use ports::{lifecycle_rank, BlobReader, BlobStore, BlobWriter, Claim, ObjectError, ObjectInfo, ObjectStore, Persistence, StateStore, StatusRecord, StorageError, StorageErrorKind};

use edinode_proto::envelope;

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

impl From<StorageError> for ActorError {
    /// A store that failed is worth retrying; an invalid key or record is not, nor a blob that
    /// is gone (every blob a message names was written before the message was published, so
    /// a missing one does not come back).
    fn from(e: StorageError) -> ActorError {
        match e.kind() {
            StorageErrorKind::Unavailable => ActorError::Transient(e.to_string()),
            StorageErrorKind::NotFound | StorageErrorKind::Invalid => ActorError::Permanent(e.to_string()),
        }
    }
}

/// Where an actor sits in the node: its name (in `node.actors`, metrics and logs) and the queue
/// it consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    pub name: &'static str,
    pub queue: &'static str,
}

impl Binding {
    pub const fn new(name: &'static str, queue: &'static str) -> Binding {
        Binding { name, queue }
    }
}

/// An actor: where it is bound, a typed input, and a handler. The handler's future is `Send` so
/// the runner can run it on the IO runtime; implementations write `async fn handle`.
pub trait Actor: Send + Sync + 'static {
    const BINDING: Binding;
    type Input: serde::de::DeserializeOwned + Send;
    fn handle(&self, cx: &NodeContext, input: Self::Input) -> impl std::future::Future<Output = Result<Vec<Out>, ActorError>> + Send;
    /// Read an input from a queue message: a typed envelope by default; stages fed by systems
    /// outside edinode read the body and headers as those systems write them.
    fn decode(body: &[u8], _headers: &[(String, String)]) -> Result<Self::Input, String> {
        envelope::decode(body)
    }
}
