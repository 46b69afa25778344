//! OutboundIntake: turns what an enterprise system puts on the `edinode.outbound` queue (body =
//! the document; headers station, partner, filename, content-type, and optionally message-id
//! for idempotency) into the same typed [`Send`] the API and the S3 outbox produce.

use crate::{event, queues, Actor, Binding, ActorError, NodeContext, Out};
use edinode_proto::envelope::{Blob, Payload, Send};

/// A document as an enterprise system put it on `edinode.outbound`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct QueuedDocument {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The OutboundIntake stage: a valid document becomes a Send for the As2Sender; one that is not
/// sendable as given is dead-lettered with the reason and reported as `outbound.rejected`.
pub struct OutboundIntake;

impl Actor for OutboundIntake {
    const BINDING: Binding = Binding::new("outbound_intake", queues::OUTBOUND);
    type Input = QueuedDocument;

    fn decode(body: &[u8], headers: &[(String, String)]) -> Result<QueuedDocument, String> {
        Ok(QueuedDocument { headers: headers.to_vec(), body: body.to_vec() })
    }

    async fn handle(&self, cx: &NodeContext, d: QueuedDocument) -> Result<Vec<Out>, ActorError> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.as_millis() as i64).unwrap_or(0);
        match to_send(cx, &d.headers, d.body, now).await? {
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
/// `Ok(Err(reason))`: the document cannot be sent as given; `Err`: the stores failed (try again).
pub(crate) async fn to_send(cx: &NodeContext, headers: &[(String, String)], body: Vec<u8>, now_ms: i64) -> Result<Result<Send, String>, ActorError> {
    Ok(match checked_send(cx, headers, body, now_ms).await {
        Ok(send) => Ok(send),
        Err(Refused::Reason(r)) => Err(r),
        Err(Refused::Failed(e)) => return Err(e),
    })
}

/// Why [`checked_send`] made no Send.
enum Refused {
    Reason(String),
    Failed(ActorError),
}

impl From<String> for Refused {
    fn from(r: String) -> Refused {
        Refused::Reason(r)
    }
}

impl From<&str> for Refused {
    fn from(r: &str) -> Refused {
        Refused::Reason(r.to_string())
    }
}

async fn checked_send(cx: &NodeContext, headers: &[(String, String)], body: Vec<u8>, now_ms: i64) -> Result<Send, Refused> {
    let get = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.trim().to_string()).filter(|v| !v.is_empty());
    let station = get("station").ok_or("missing header station")?;
    let partner = get("partner").ok_or("missing header partner")?;
    let (p, st) = cx.directory.partner_by_name(&partner).ok_or_else(|| format!("unknown partner {partner}"))?;
    if st.name != station {
        return Err(format!("partner {partner} belongs to station {}, not {station}", st.name).into());
    }
    let _ = p;
    let filename = get("filename").and_then(|f| edinode_proto::mime::sanitize_filename(&f)).ok_or("missing or invalid header filename")?;
    let content_type = get("content-type").unwrap_or_else(|| "application/octet-stream".into());
    if let Some(claim) = get("claim-check") {
        // The document waits in the node's blob store; the queue carries its key.
        let claim = claim_key(&claim)?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        // A claim that is not there is refused; a store that fails is tried again.
        let failed = |e: crate::StorageError| if e.is_not_found() { Refused::Reason(format!("claim-check {claim}: {e}")) } else { Refused::Failed(e.into()) };
        let mut reader = cx.blobs.reader(&claim).await.map_err(failed)?;
        let data = copy_document(cx, &id, 0, reader.as_mut()).await.map_err(failed)?;
        if data.is_empty() {
            return Err("empty document".into());
        }
        let doc = Payload { filename, content_type, data };
        return Ok(send_of(cx, id, &station, &partner, get("message-id"), vec![doc], "queue", now_ms));
    }
    if body.is_empty() {
        return Err("empty document".into());
    }
    new_send(cx, &station, &partner, get("message-id"), vec![(filename, content_type, body)], "queue", now_ms).await.map_err(Refused::Failed)
}

/// Where claim-checked documents wait in the node's blob store (`claim-check` header values
/// name keys below it).
pub(crate) const CLAIMS_PREFIX: &str = "claims/";

/// A `claim-check` value as a blob key: only below [`CLAIMS_PREFIX`], no climbing out of it.
fn claim_key(v: &str) -> Result<String, String> {
    let ok = v.starts_with(CLAIMS_PREFIX) && v.len() > CLAIMS_PREFIX.len() && v.len() <= 512 && !v.split('/').any(|s| s == ".." || s == ".") && !v.contains('\\') && v.bytes().all(|b| b.is_ascii_graphic());
    if ok { Ok(v.to_string()) } else { Err(format!("claim-check {v:.80}: expected a key below {CLAIMS_PREFIX}")) }
}

/// Build a Send for documents; `message_id` (idempotency key) is generated when absent.
pub(crate) async fn new_send(cx: &NodeContext, station: &str, partner: &str, message_id: Option<String>, docs: Vec<(String, String, Vec<u8>)>, source: &str, now_ms: i64) -> Result<Send, ActorError> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut documents = Vec::with_capacity(docs.len());
    for (i, (filename, content_type, data)) in docs.into_iter().enumerate() {
        let blob = if data.len() <= cx.limits.inline_threshold {
            Blob::Inline(data)
        } else {
            let key = format!("outbound/{id}/doc{i}");
            cx.blobs.put(&key, &data).await?;
            Blob::Stored { key, len: data.len() as u64 }
        };
        documents.push(Payload { filename, content_type, data: blob });
    }
    Ok(send_of(cx, id, station, partner, message_id, documents, source, now_ms))
}

/// What a multipart/form-data request (`POST /api/send`) carried: its small fields, and its
/// files stored as they arrived.
pub struct Form {
    pub fields: std::collections::BTreeMap<String, String>,
    pub files: Vec<Payload>,
}

/// The most a form field (station, partner, message_id) may hold.
const MAX_FIELD: usize = 4096;

/// Reads a multipart/form-data body as it arrives: each file part goes to
/// `outbound/<id>/doc<n>` (kept inline when it stays under `limits.inline_threshold_bytes`),
/// so a document of any size takes a few chunks of memory. The caller authenticates first.
pub struct FormIntake<'a> {
    cx: &'a NodeContext,
    id: String,
    parts: edinode_proto::stream::pipeline::Documents,
    fields: std::collections::BTreeMap<String, String>,
    files: Vec<Payload>,
    /// The file part being read: its part number and where its bytes go.
    current: Option<(usize, DocSink<'a>)>,
    received: u64,
    max: u64,
}

/// Where a document's bytes go as they arrive: memory while they stay under
/// `limits.inline_threshold_bytes` (the Send carries them inline), else the blob `key`.
pub(crate) struct DocSink<'a> {
    cx: &'a NodeContext,
    key: String,
    state: SinkState<'a>,
}

enum SinkState<'a> {
    Memory(Vec<u8>),
    Blob(Box<dyn crate::BlobWriter + 'a>),
}

impl<'a> DocSink<'a> {
    pub fn new(cx: &'a NodeContext, key: String) -> DocSink<'a> {
        DocSink { cx, key, state: SinkState::Memory(Vec::new()) }
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), crate::StorageError> {
        match &mut self.state {
            SinkState::Memory(buf) if buf.len() + bytes.len() <= self.cx.limits.inline_threshold => buf.extend_from_slice(bytes),
            SinkState::Memory(buf) => {
                let mut w = self.cx.blobs.writer(&self.key).await?;
                w.write(buf).await?;
                w.write(bytes).await?;
                self.state = SinkState::Blob(w);
            }
            SinkState::Blob(w) => w.write(bytes).await?,
        }
        Ok(())
    }

    pub async fn finish(self) -> Result<Blob, crate::StorageError> {
        Ok(match self.state {
            SinkState::Memory(buf) => Blob::Inline(buf),
            SinkState::Blob(w) => Blob::Stored { len: w.finish().await?, key: self.key },
        })
    }
}

/// Copy everything `reader` yields into the Send's document `n` of `id`.
pub(crate) async fn copy_document(cx: &NodeContext, id: &str, n: usize, reader: &mut dyn crate::BlobReader) -> Result<Blob, crate::StorageError> {
    let mut sink = DocSink::new(cx, format!("outbound/{id}/doc{n}"));
    while let Some(chunk) = reader.next().await? {
        sink.write(&chunk).await?;
    }
    sink.finish().await
}

/// Why a form was refused.
#[derive(Debug, thiserror::Error)]
pub enum FormError {
    #[error("the request is larger than {0} bytes")]
    TooLarge(u64),
    #[error("{0}")]
    Malformed(String),
    #[error(transparent)]
    Storage(#[from] crate::StorageError),
}

impl<'a> FormIntake<'a> {
    /// `id`: the Send the files are for; `max`: the most the body may take.
    pub fn new(cx: &'a NodeContext, id: &str, boundary: &str, max: u64) -> Result<FormIntake<'a>, FormError> {
        if boundary.is_empty() || boundary.contains('"') {
            return Err(FormError::Malformed("missing or invalid boundary".into()));
        }
        let mut parts = edinode_proto::stream::pipeline::Documents::new(cx.limits.mime);
        // The form's parts are read as the parts of a multipart entity with this header.
        let head = format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n");
        parts.push(head.as_bytes(), &mut Vec::new()).map_err(|e| FormError::Malformed(e.to_string()))?;
        Ok(FormIntake { cx, id: id.to_string(), parts, fields: Default::default(), files: Vec::new(), current: None, received: 0, max })
    }

    pub async fn push(&mut self, chunk: &[u8]) -> Result<(), FormError> {
        self.received += chunk.len() as u64;
        if self.received > self.max {
            return Err(FormError::TooLarge(self.max));
        }
        let mut out = Vec::new();
        self.parts.push(chunk, &mut out).map_err(|e| FormError::Malformed(e.to_string()))?;
        self.route(out).await
    }

    pub async fn finish(mut self) -> Result<Form, FormError> {
        let mut out = Vec::new();
        self.parts.finish(&mut out).map_err(|e| FormError::Malformed(e.to_string()))?;
        self.route(out).await?;
        self.close().await?;
        Ok(Form { fields: self.fields, files: self.files })
    }

    async fn route(&mut self, out: Vec<(usize, Vec<u8>)>) -> Result<(), FormError> {
        for (n, bytes) in out {
            let Some(head) = self.parts.heads().get(n).cloned() else { continue };
            let Some(filename) = head.filename.clone() else {
                let name = head.name.clone().unwrap_or_default();
                let value = self.fields.entry(name).or_default();
                if value.len() + bytes.len() > MAX_FIELD {
                    return Err(FormError::Malformed(format!("a form field is over {MAX_FIELD} bytes")));
                }
                value.push_str(&String::from_utf8_lossy(&bytes));
                continue;
            };
            if self.current.as_ref().is_none_or(|(i, _)| *i != n) {
                self.close().await?;
                let key = format!("outbound/{}/doc{}", self.id, self.files.len());
                // The type as the client wrote it (a charset stays); none given: octet-stream.
                let content_type = head.content_type_field.clone().unwrap_or_else(|| "application/octet-stream".into());
                self.files.push(Payload { filename, content_type, data: Blob::Inline(Vec::new()) });
                self.current = Some((n, DocSink::new(self.cx, key)));
            }
            if let Some((_, sink)) = self.current.as_mut() {
                sink.write(&bytes).await?;
            }
        }
        Ok(())
    }

    /// The file being read is complete.
    async fn close(&mut self) -> Result<(), FormError> {
        let Some((_, sink)) = self.current.take() else { return Ok(()) };
        let data = sink.finish().await?;
        if let Some(last) = self.files.last_mut() {
            last.data = data;
        }
        Ok(())
    }
}

/// A Send for documents already stored (or inline) under `id`.
#[allow(clippy::too_many_arguments)]
pub fn send_of(cx: &NodeContext, id: String, station: &str, partner: &str, message_id: Option<String>, documents: Vec<Payload>, source: &str, now_ms: i64) -> Send {
    let message_id = match message_id {
        Some(m) if m.starts_with('<') => m,
        Some(m) => format!("<{m}>"),
        None => format!("<{id}@{}>", cx.node_id),
    };
    Send { id, station: station.to_string(), partner: partner.to_string(), message_id, documents, created_at_ms: now_ms, source: source.to_string(), attempt: 0 }
}
