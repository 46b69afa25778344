//! OutboundIntake: turns what an enterprise system puts on the `edinode.outbound` queue (body =
//! the document; headers station, partner, filename, content-type, and optionally message-id
//! for idempotency) into the same typed [`Send`] the API and the S3 outbox produce.

use crate::{event, queues, Actor, ActorError, NodeContext, Out};
use edinode_proto::envelope::{Payload, Send};

/// A document as an enterprise system put it on `edinode.outbound`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct QueuedDocument {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The OutboundIntake stage: a valid document becomes a Send for the As2Sender; one that is not
/// sendable as given is dead-lettered with the reason and reported as `outbound.rejected`.
pub struct OutboundIntake;

#[async_trait::async_trait]
impl Actor for OutboundIntake {
    const NAME: &'static str = "outbound_intake";
    const QUEUE: &'static str = queues::OUTBOUND;
    type Input = QueuedDocument;

    fn decode(body: &[u8], headers: &[(String, String)]) -> Result<QueuedDocument, String> {
        Ok(QueuedDocument { headers: headers.to_vec(), body: body.to_vec() })
    }

    async fn handle(&self, cx: &NodeContext, d: QueuedDocument) -> Result<Vec<Out>, ActorError> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.as_millis() as i64).unwrap_or(0);
        match to_send(cx, &d.headers, d.body, now).await {
            Ok(send) => Ok(vec![crate::as2_sender::submit(cx, &send).await?]),
            Err(reason) => {
                tracing::warn!(message = "Outbound document refused.", %reason);
                let get = |n: &str| d.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone()).unwrap_or_default();
                Ok(vec![event("outbound.rejected", "", &get("station"), &get("partner"), &get("message-id"), &reason), Out::Dead { reason }])
            }
        }
    }
}

/// Validate the headers and build the Send (documents kept inline or in the blob store).
pub async fn to_send(cx: &NodeContext, headers: &[(String, String)], body: Vec<u8>, now_ms: i64) -> Result<Send, String> {
    let get = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.trim().to_string()).filter(|v| !v.is_empty());
    let station = get("station").ok_or("missing header station")?;
    let partner = get("partner").ok_or("missing header partner")?;
    let (p, st) = cx.directory.partner_by_name(&partner).ok_or_else(|| format!("unknown partner {partner}"))?;
    if st.name != station {
        return Err(format!("partner {partner} belongs to station {}, not {station}", st.name));
    }
    let _ = p;
    let filename = get("filename").and_then(|f| edinode_proto::mime::sanitize_filename(&f)).ok_or("missing or invalid header filename")?;
    let content_type = get("content-type").unwrap_or_else(|| "application/octet-stream".into());
    if body.is_empty() {
        return Err("empty document".into());
    }
    new_send(cx, &station, &partner, get("message-id"), vec![(filename, content_type, body)], "queue", now_ms).await.map_err(|e| e.to_string())
}

/// Build a Send for documents; `message_id` (idempotency key) is generated when absent.
pub async fn new_send(cx: &NodeContext, station: &str, partner: &str, message_id: Option<String>, docs: Vec<(String, String, Vec<u8>)>, source: &str, now_ms: i64) -> Result<Send, ActorError> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let message_id = match message_id {
        Some(m) if m.starts_with('<') => m,
        Some(m) => format!("<{m}>"),
        None => format!("<{id}@{}>", cx.node_id),
    };
    let mut documents = Vec::with_capacity(docs.len());
    for (i, (filename, content_type, data)) in docs.into_iter().enumerate() {
        let blob = if data.len() <= cx.limits.inline_threshold {
            edinode_proto::envelope::Blob::Inline(data)
        } else {
            let key = format!("outbound/{id}/doc{i}");
            cx.blobs.put(&key, &data).await?;
            edinode_proto::envelope::Blob::Stored { key, len: data.len() as u64 }
        };
        documents.push(Payload { filename, content_type, data: blob });
    }
    Ok(Send { id, station: station.to_string(), partner: partner.to_string(), message_id, documents, created_at_ms: now_ms, source: source.to_string(), attempt: 0 })
}
