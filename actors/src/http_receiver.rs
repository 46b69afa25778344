//! HttpReceiver: what happens to an AS2 POST before any actor opens it, in the order a
//! hostile sender cannot change:
//! 1. [`identify`]: the AS2 headers alone (each routing header exactly once) name a known
//!    station and partner, and the asynchronous MDN address the partner asked for is one its
//!    configuration allows. Nothing is read, stored or allocated for a sender before this.
//! 2. The web server (node crate) reads the body as it arrives, bounded in size and time, into
//!    memory up to the inline threshold and beyond it straight into one blob ([`BodySink`]).
//! 3. [`accept`] stores the raw capture (without credentials) and returns the first typed message
//!    for the MimeUnwrapper.

use crate::{ActorError, BlobWriter, NodeContext, Out, StorageError};
use edinode_proto::envelope::{Blob, Inbound, ReplyRoute, Security, Unwrap};
use edinode_proto::headers::As2Request;
use edinode_proto::mime::Header;
use edinode_proto::unwrap;

/// Why a request is refused before processing; each maps to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    BadRequest(String),
    /// Unknown station or unknown partner: one answer for both, so a caller cannot probe
    /// which AS2 ids exist.
    #[error("this AS2-From/AS2-To pair is not accepted here")]
    NotAccepted,
    #[error("the body exceeds the limit of {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Timeout(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

impl From<StorageError> for Refusal {
    fn from(e: StorageError) -> Refusal {
        Refusal::Unavailable(e.to_string())
    }
}

/// What fails before a request is accepted is storing it (or encoding its first hand-over).
impl From<ActorError> for Refusal {
    fn from(e: ActorError) -> Refusal {
        match e {
            ActorError::Transient(m) | ActorError::Permanent(m) => Refusal::Unavailable(m),
        }
    }
}

impl Refusal {
    pub fn http_status(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::NotAccepted => 403,
            Refusal::TooLarge(_) => 413,
            Refusal::Timeout(_) => 408,
            Refusal::Unavailable(_) => 503,
        }
    }
}

/// How the HTTP exchange will be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Wait for the MDN on the reply route.
    SyncMdn,
    /// 200 at once: an async MDN follows, or none was asked.
    Immediate,
}

/// A request whose sender and recipient are known to us (not yet proven: signatures come later).
#[derive(Debug, Clone)]
pub struct Identified {
    /// Our id for this reception.
    pub id: String,
    pub request: As2Request,
    /// Station and partner names (configuration keys).
    pub station: String,
    pub partner: String,
}

/// An accepted request.
pub struct Accepted {
    pub id: String,
    pub message_id: String,
    /// The first stage's input: an [`Out::Send`].
    pub first: Out,
    pub answer: Answer,
}

/// Raw requests up to this size travel with the message ([`Inbound::raw`]) instead of as a
/// blob of their own.
pub(crate) const RAW_INLINE_MAX: u64 = 64 * 1024;

/// Request headers never kept in a capture: credentials of the caller or of a proxy.
const SECRET_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

/// Serialize the request head as an HTTP capture (headers, blank line), without credentials.
pub(crate) fn raw_capture_head(headers: &[Header]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    for h in headers.iter().filter(|h| !SECRET_HEADERS.iter().any(|s| h.name.eq_ignore_ascii_case(s))) {
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Step 1: read the AS2 headers and find station and partner, from the headers alone.
pub fn identify(cx: &NodeContext, headers: &[Header]) -> Result<Identified, Refusal> {
    let request = As2Request::from_headers(headers).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    let Some(station) = cx.directory.station_by_as2(&request.as2_to) else {
        tracing::warn!(message = "AS2 request for an unknown station refused.", as2_to = %request.as2_to, as2_from = %request.as2_from);
        return Err(Refusal::NotAccepted);
    };
    let Some(partner) = cx.directory.partner(&request.as2_to, &request.as2_from) else {
        tracing::warn!(message = "AS2 request from an unknown partner refused.", as2_to = %request.as2_to, as2_from = %request.as2_from);
        return Err(Refusal::NotAccepted);
    };
    if let Some(url) = request.mdn.as_ref().and_then(|m| m.async_url.as_deref()) {
        // Checked before the body is read: an asynchronous MDN (even an error MDN for a message
        // that will fail authentication) only ever goes where the partner's configuration says.
        partner.mdn_urls.check(url).map_err(|e| Refusal::BadRequest(format!("Receipt-Delivery-Option refused: {e}")))?;
    }
    Ok(Identified { id: uuid::Uuid::new_v4().simple().to_string(), request, station: station.name.clone(), partner: partner.name.clone() })
}

/// The blob key of a reception's first entity when its body is too large to travel inline.
pub fn layer0_key(id: &str) -> String {
    format!("work/{id}/layer0")
}

/// Step 2: where a body goes as it arrives. Up to the inline threshold it stays in memory;
/// past it, the first entity (entity headers, then the body) is streamed into one blob.
pub struct BodySink<'a> {
    cx: &'a NodeContext,
    key: String,
    entity_head: Vec<u8>,
    max: usize,
    buf: Vec<u8>,
    writer: Option<Box<dyn BlobWriter + 'a>>,
    len: usize,
}

/// A body read completely.
pub enum ReceivedBody {
    Inline(Vec<u8>),
    /// The first entity (entity headers + body) is in the blob store under `key`.
    Stored { key: String, entity_len: u64, body_len: u64 },
}

impl ReceivedBody {
    pub fn len(&self) -> u64 {
        match self {
            ReceivedBody::Inline(b) => b.len() as u64,
            ReceivedBody::Stored { body_len, .. } => *body_len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a> BodySink<'a> {
    pub fn new(cx: &'a NodeContext, ident: &Identified, headers: &[Header], max_body: usize) -> BodySink<'a> {
        BodySink {
            cx,
            key: layer0_key(&ident.id),
            entity_head: unwrap::entity_from_http(headers, b""),
            max: max_body,
            buf: Vec::new(),
            writer: None,
            len: 0,
        }
    }

    /// Take the next chunk of the body.
    pub async fn push(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        self.len += chunk.len();
        if self.len > self.max {
            return Err(Refusal::TooLarge(self.max));
        }
        if let Some(w) = self.writer.as_mut() {
            return w.write(chunk).await.map_err(Refusal::from);
        }
        self.buf.extend_from_slice(chunk);
        if self.buf.len() > self.cx.limits.inline_threshold {
            let mut w = self.cx.blobs.writer(&self.key).await.map_err(Refusal::from)?;
            w.write(&self.entity_head).await.map_err(Refusal::from)?;
            w.write(&std::mem::take(&mut self.buf)).await.map_err(Refusal::from)?;
            self.writer = Some(w);
        }
        Ok(())
    }

    /// The body is complete.
    pub async fn finish(self) -> Result<ReceivedBody, Refusal> {
        match self.writer {
            None => Ok(ReceivedBody::Inline(self.buf)),
            Some(w) => {
                let entity_len = w.finish().await.map_err(Refusal::from)?;
                Ok(ReceivedBody::Stored { key: self.key, entity_len, body_len: self.len as u64 })
            }
        }
    }
}

/// Step 3: accept an identified request with its complete body. `reply_queue` is this node's
/// reply queue for synchronous MDNs.
pub async fn accept(cx: &NodeContext, ident: Identified, headers: &[Header], body: ReceivedBody, reply_queue: &str, now_ms: i64) -> Result<Accepted, Refusal> {
    if body.is_empty() {
        return Err(Refusal::BadRequest("empty body".into()));
    }
    let Identified { id, request, station, partner } = ident;
    let raw_key = format!("raw/{id}");
    let head = raw_capture_head(headers);
    let body_len = body.len();
    let raw_len = head.len() as u64 + body_len;
    let answer = match &request.mdn {
        Some(m) if m.async_url.is_none() => Answer::SyncMdn,
        _ => Answer::Immediate,
    };
    let reply = (answer == Answer::SyncMdn).then(|| ReplyRoute { queue: reply_queue.to_string(), correlation: id.clone() });
    let mut ctx = Inbound {
        id: id.clone(),
        received_at_ms: now_ms,
        station,
        partner,
        request,
        reply,
        security: Security::default(),
        raw_key,
        raw_len,
        trace: vec![],
        raw: None,
    };
    let entity = match body {
        ReceivedBody::Inline(body) => {
            // The capture holds the whole request; the first entity travels in the queue, and
            // a small capture too (stored only if the message fails).
            if raw_len <= RAW_INLINE_MAX {
                ctx.raw = Some([head.as_slice(), &body].concat());
            } else {
                cx.blobs.put_parts(&ctx.raw_key, &[&head, &body]).await.map_err(Refusal::from)?;
            }
            let entity_head = unwrap::entity_from_http(headers, b"");
            cx.blob_parts(&ctx, "layer0", &[&entity_head, &body]).await.map_err(Refusal::from)?
        }
        ReceivedBody::Stored { key, entity_len, .. } => {
            // The body was written once, as the first entity; the capture keeps the head and
            // says where the body is.
            let note = format!("[body: {body_len} bytes, stored as the entity {key}]\r\n");
            cx.blobs.put_parts(&ctx.raw_key, &[&head, note.as_bytes()]).await.map_err(Refusal::from)?;
            Blob::Stored { key, len: entity_len }
        }
    };
    cx.annotate_and_status(
        &id,
        &[
            ("direction", "inbound".to_string()),
            ("station", ctx.station.clone()),
            ("partner", ctx.partner.clone()),
            ("message_id", ctx.request.message_id.clone()),
            ("size", body_len.to_string()),
            ("received_at", now_ms.to_string()),
        ],
        "received",
        &format!("{} bytes from {}", body_len, ctx.request.as2_from),
    )
    .await;
    crate::describe(&ctx);
    let message_id = ctx.request.message_id.clone();
    // A first entity in the request says in its head what it is: straight to its stage.
    let step = match &entity {
        Blob::Inline(bytes) => unwrap::classify(bytes, &cx.limits.mime).ok(),
        Blob::Stored { .. } => None,
    };
    let first = match step {
        Some(step) => crate::mime_unwrapper::hand_off(ctx, entity, &step),
        None => Out::send(crate::queues::MIME_UNWRAPPER, &Unwrap { ctx, entity }),
    }
    .map_err(Refusal::from)?;
    Ok(Accepted { id, message_id, first, answer })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_never_keep_credentials() {
        let hs: Vec<Header> = [("AS2-From", "a"), ("Authorization", "Basic c2VjcmV0"), ("cookie", "s=1"), ("Proxy-Authorization", "x"), ("Content-Type", "text/plain")]
            .iter()
            .map(|(n, v)| Header { name: n.to_string(), value: v.to_string() })
            .collect();
        let head = String::from_utf8(raw_capture_head(&hs)).unwrap();
        assert_eq!(head, "AS2-From: a\r\nContent-Type: text/plain\r\n\r\n");
    }
}
