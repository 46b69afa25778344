//! HttpReceiver: what happens to an AS2 POST before any actor opens it. The web server (in the
//! node crate) hands over the headers and body; [`accept`] reads the AS2 headers, finds the
//! station and partner (unknown parties are refused: no MDN is signed for them), stores the raw
//! request, and returns the first typed message for the MimeUnwrapper.

use crate::{ActorError, NodeContext};
use edinode_proto::envelope::{Inbound, ReplyRoute, Security, Unwrap};
use edinode_proto::headers::As2Request;
use edinode_proto::mime::Header;
use edinode_proto::unwrap;

/// Why a request is refused before processing; each maps to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    BadRequest(String),
    #[error("unknown AS2-To {0}: no such station")]
    UnknownStation(String),
    #[error("unknown AS2-From {from} for station {to}")]
    UnknownPartner { from: String, to: String },
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

impl Refusal {
    pub fn http_status(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::UnknownStation(_) | Refusal::UnknownPartner { .. } => 403,
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

/// An accepted request.
pub struct Accepted {
    pub id: String,
    pub first: Unwrap,
    pub answer: Answer,
}

/// Serialize the raw request as an HTTP capture (headers, blank line, body), for the record.
pub fn raw_capture(headers: &[Header], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 1024);
    for h in headers {
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Accept an AS2 request. `reply_queue` is this node's reply queue for synchronous MDNs.
pub async fn accept(cx: &NodeContext, headers: Vec<Header>, body: &[u8], reply_queue: &str, now_ms: i64) -> Result<Accepted, Refusal> {
    let request = As2Request::from_headers(&headers).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    if body.is_empty() {
        return Err(Refusal::BadRequest("empty body".into()));
    }
    let station = cx.directory.station_by_as2(&request.as2_to).ok_or_else(|| Refusal::UnknownStation(request.as2_to.clone()))?;
    let partner = cx
        .directory
        .partner(&request.as2_to, &request.as2_from)
        .ok_or_else(|| Refusal::UnknownPartner { from: request.as2_from.clone(), to: request.as2_to.clone() })?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let raw_key = format!("raw/{id}");
    // The raw request as an HTTP capture, written in pieces: a large body is never copied.
    let head = raw_capture(&headers, b"");
    cx.blobs.put_parts(&raw_key, &[&head, body]).await.map_err(Refusal::Unavailable)?;
    let raw_len = head.len() + body.len();
    let answer = match &request.mdn {
        Some(m) if m.async_url.is_none() => Answer::SyncMdn,
        _ => Answer::Immediate,
    };
    let reply = (answer == Answer::SyncMdn).then(|| ReplyRoute { queue: reply_queue.to_string(), correlation: id.clone() });
    let ctx = Inbound {
        id: id.clone(),
        received_at_ms: now_ms,
        station: station.name.clone(),
        partner: partner.name.clone(),
        request,
        reply,
        security: Security::default(),
        raw_key,
        raw_len: raw_len as u64,
        trace: vec![],
    };
    let entity_head = unwrap::entity_from_http(&headers, b"");
    let entity = cx.blob_parts(&ctx, "layer0", &[&entity_head, body]).await.map_err(|e| match e {
        ActorError::Transient(m) | ActorError::Permanent(m) => Refusal::Unavailable(m),
    })?;
    cx.annotate(
        &id,
        &[
            ("direction", "inbound".to_string()),
            ("station", ctx.station.clone()),
            ("partner", ctx.partner.clone()),
            ("message_id", ctx.request.message_id.clone()),
            ("size", body.len().to_string()),
            ("received_at", now_ms.to_string()),
        ],
    )
    .await;
    cx.status(&id, "received", &format!("{} bytes from {}", body.len(), ctx.request.as2_from)).await;
    Ok(Accepted { id, first: Unwrap { ctx, entity }, answer })
}
