//! The typed messages that travel between actors (over RabbitMQ or the embedded spool).
//!
//! Each actor's input is one of these; they are encoded with MessagePack. Large bodies travel as
//! [`Blob::Stored`] references to the blob store instead of inline bytes.

use crate::error::Disposition;
use crate::headers::As2Request;
use crate::mdn::{BuiltMdn, Mic};
use serde::{Deserialize, Serialize};

/// Bytes carried inline, or a reference to the blob store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Blob {
    Inline(#[serde(with = "serde_bytes")] Vec<u8>),
    Stored { key: String, len: u64 },
}

impl Blob {
    pub fn len(&self) -> u64 {
        match self {
            Blob::Inline(b) => b.len() as u64,
            Blob::Stored { len, .. } => *len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a synchronous MDN must be sent back: the queue of the node holding the HTTP request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyRoute {
    pub queue: String,
    pub correlation: String,
}

/// What the layers of a message proved so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    pub encrypted: bool,
    pub compressed: bool,
    /// SHA-1 thumbprint of the partner certificate that signed, once verified.
    pub signer: Option<String>,
    /// The MIC to return (RFC 4130 section 7.3.1, see `unwrap::mic`): over the signed content
    /// (set by the Verifier); for an unsigned message, over the decrypted entity (set by the
    /// Decryptor) or the content (set by the MimeUnwrapper).
    pub mic: Option<Mic>,
    /// Layers opened so far (a bound on nesting).
    pub depth: u8,
}

impl Security {
    /// Whether an unsigned message's MIC is taken at the layer about to be opened: the
    /// outermost one (the decrypted entity of an encrypted message, the content of one that
    /// is not). A signature found later replaces it ([`Security::signed_by`]).
    pub fn unsigned_mic_due(&self) -> bool {
        self.depth == 0 && self.mic.is_none()
    }

    /// Record a verified signature: the MIC of the first (outermost) signature is the message's.
    pub fn signed_by(&mut self, thumbprint: String, mic: Mic) {
        if self.signer.is_none() {
            self.mic = Some(mic);
        }
        self.signer = Some(thumbprint);
    }
}

/// Context every inbound stage carries along.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbound {
    /// Our internal id for this reception.
    pub id: String,
    pub received_at_ms: i64,
    pub station: String,
    pub partner: String,
    pub request: As2Request,
    pub reply: Option<ReplyRoute>,
    pub security: Security,
    /// Key of the raw request in the blob store (where it is, or goes if the message fails).
    pub raw_key: String,
    pub raw_len: u64,
    /// W3C trace context and other propagated fields.
    pub trace: Vec<(String, String)>,
    /// A small raw request travels here instead of as a blob: no file is written and removed
    /// for each message that succeeds; it is stored under `raw_key` only if the message fails.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub raw: Option<Vec<u8>>,
}

/// Input of the MimeUnwrapper: the current entity to classify.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unwrap {
    pub ctx: Inbound,
    pub entity: Blob,
}

/// Input of the Decryptor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decrypt {
    pub ctx: Inbound,
    pub entity: Blob,
}

/// Input of the Verifier.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verify {
    pub ctx: Inbound,
    pub entity: Blob,
}

/// One document to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    pub filename: String,
    pub content_type: String,
    pub data: Blob,
}

/// Input of the MdnSender: how processing ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Conclude {
    pub ctx: Inbound,
    pub disposition: Disposition,
    /// Why, for errors (also the MDN's human-readable text).
    pub reason: Option<String>,
}

/// Input of the Deliverer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deliver {
    pub ctx: Inbound,
    pub payloads: Vec<Payload>,
}

/// A synchronous answer for the node that holds the HTTP request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub correlation: String,
    pub status: u16,
    pub mdn: Option<BuiltMdn>,
}

/// Input of the MdnSender's asynchronous delivery (POST to Receipt-Delivery-Option).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AsyncMdn {
    pub ctx: Inbound,
    pub url: String,
    pub mdn: BuiltMdn,
}

/// Input of the As2Sender: documents to send to a partner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Send {
    /// Our internal id for this transmission.
    pub id: String,
    /// Station and partner configuration names.
    pub station: String,
    pub partner: String,
    /// The Message-ID to use (with angle brackets); stable across retries and resends.
    pub message_id: String,
    pub documents: Vec<Payload>,
    pub created_at_ms: i64,
    /// Where it came from: api, queue, s3.
    pub source: String,
    /// Attempts made so far (transport errors, 5xx).
    pub attempt: u32,
}

/// An event for the enterprise bus (`edinode.events`): outcomes of outbound messages and
/// notifications for station owners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: String,
    pub id: String,
    pub station: String,
    pub partner: String,
    pub message_id: String,
    pub detail: String,
    pub at_ms: i64,
}

/// Encode any envelope.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    rmp_serde::to_vec_named(v).map_err(|e| e.to_string())
}

/// Decode any envelope.
pub fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, String> {
    rmp_serde::from_slice(b).map_err(|e| e.to_string())
}
