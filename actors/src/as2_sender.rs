//! As2Sender: builds a message for a partner (compress, sign, encrypt per agreement), POSTs it,
//! and settles it from the MDN: a synchronous MDN is verified at once (signature against any of
//! the partner's certificates, Received-Content-MIC against the MIC we computed); for an
//! asynchronous one the expected MIC waits in the state store until the MDN arrives at the
//! HttpReceiver ([`settle_async_mdn`]) or its deadline passes ([`expire_mdn_deadlines`]).
//! Transport errors and 5xx are retried with backoff; every outcome is a status record and an
//! event on `edinode.events`; the signed MDN is kept as the receipt.
//!
//! For an unsigned message, receivers differ on what the MIC covers: an MDN whose MIC is over
//! one of the other bases products use (`unwrap::mic`) delivers the message with a note in its
//! status, unless the agreement says `strict_mic`.
//!
//! An MDN that cannot be trusted (unsigned when we asked for a signed one, a bad signature, a
//! wrong or missing MIC, another message's) settles nothing: it is recorded on the message as
//! `mdn-refused` with the reason. A refused asynchronous MDN leaves the message waiting for a
//! good one until its deadline; a refused synchronous one fails the message with that reason.

use crate::{event, queues, Actor, Binding, ActorError, NodeContext, Out, StorageError};
use edinode_proto::envelope::{self, Send};
use edinode_proto::mdn::{self, Awaited, MdnVerdict, Mic, Refusal};
use edinode_proto::outbound::{self, Document, MdnRequest, OutboundIds};
use edinode_proto::profile::{HttpProfile, OnMdnTimeout, Partner};
use edinode_proto::unwrap::mic::AltMic;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The time set of asynchronous MDN deadlines.
pub(crate) const MDN_DEADLINES: &str = "mdn-deadlines";

/// What we remember while an asynchronous MDN is outstanding.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AwaitingMdn {
    pub id: String,
    pub station: String,
    pub partner: String,
    pub message_id: String,
    pub mic: Mic,
    /// For an unsigned message, the MICs over the bases other receivers use.
    #[serde(default)]
    pub mic_alternatives: Vec<AltMic>,
    pub deadline_ms: i64,
    /// We signed the message (a positive MDN must carry its MIC). Missing in records written
    /// before it existed: assumed, the stricter reading.
    #[serde(default = "strict")]
    pub message_signed: bool,
    /// Only a signed MDN settles it (we asked for one, or the agreement requires one).
    #[serde(default = "strict")]
    pub mdn_signed: bool,
}

fn strict() -> bool {
    true
}

/// Whether only a signed MDN may settle a message to `partner`: we ask for one, or the
/// agreement requires one whatever we ask (`require_signed_mdn`).
fn signed_mdn_required(partner: &Partner) -> bool {
    let asked = match &partner.outbound.options.mdn {
        MdnRequest::None => false,
        MdnRequest::Sync { signed } | MdnRequest::Async { signed, .. } => signed.is_some(),
    };
    asked || partner.outbound.require_signed_mdn
}

/// Key of the first refused asynchronous MDN of a message, told when its deadline passes.
fn refused_key(message_id: &str) -> String {
    format!("mdnrefused:{}", bare(message_id))
}

/// Claim the outcome of an awaited MDN: of racing MDNs and the deadline monitor, on any node,
/// exactly one concludes the message (a delivered message is never failed by a late timeout).
async fn claim_outcome(cx: &NodeContext, wait: &AwaitingMdn) -> Result<bool, StorageError> {
    let token = format!("{}/{}", cx.node_id, uuid::Uuid::new_v4());
    let key = format!("mdnoutcome:{}:{}", bare(&wait.message_id), wait.deadline_ms);
    let ttl = (wait.deadline_ms - now_ms()).max(0) as u64 / 1000 + 24 * 3600;
    Ok(cx.state.set_once(&key, &token, ttl).await? == token)
}

/// A message ready to POST.
struct Message {
    headers: Vec<(String, String)>,
    mic: Mic,
    mic_alternatives: Vec<AltMic>,
    body: Body,
}

enum Body {
    Whole(Vec<u8>),
    /// Documents over the stream threshold: pieces read from blobs as they are sent.
    Streamed(crate::outbound_stream::Streamed),
}

#[derive(Default)]
pub struct As2Sender {
    clients: Mutex<HashMap<String, reqwest::Client>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn bare(mid: &str) -> &str {
    mid.trim().trim_start_matches('<').trim_end_matches('>')
}

/// Key under which the Send of a transmission is kept (for retries and resends).
pub fn send_key(id: &str) -> String {
    format!("outbound/{id}/send")
}

/// An HTTP client for a partner's agreement (its CA, our client certificate, timeouts).
/// The HTTP client for a partner: its TLS settings, its time limit, and no redirects (a message
/// goes only to the configured URL).
pub(crate) fn client_for(http: &HttpProfile) -> Result<reqwest::Client, String> {
    crate::mdn_poster::client_builder(http, Duration::from_secs(http.timeout_secs))?.build().map_err(|e| e.to_string())
}

impl As2Sender {
    fn client(&self, partner: &Partner) -> Result<reqwest::Client, String> {
        let mut g = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = g.get(&partner.name) {
            return Ok(c.clone());
        }
        let c = client_for(&partner.outbound.http)?;
        g.insert(partner.name.clone(), c.clone());
        Ok(c)
    }
}

/// The outcome of one transmission, recorded and announced.
async fn conclude(cx: &NodeContext, s: &Send, ok: bool, detail: &str, receipt: Option<&[u8]>) -> Vec<Out> {
    if let Some(r) = receipt {
        let key = format!("receipts/{}.mdn", s.id);
        if cx.blobs.put(&key, r).await.is_ok() {
            cx.annotate(&s.id, &[("receipt", key)]).await;
        }
    }
    let status = if ok { "sent" } else { "failed" };
    cx.status(&s.id, status, detail).await;
    cx.annotate(&s.id, &[("reason", if ok { String::new() } else { detail.to_string() })]).await;
    cx.metrics.messages.with_label_values(&["outbound", &s.station, &s.partner, if ok { "delivered" } else { "failed" }]).inc();
    if !ok {
        tracing::warn!(message = "Outbound message failed.", id = %s.id, partner = %s.partner, reason = detail);
        tracing::Span::current().record("error", detail);
    }
    vec![event(if ok { "outbound.delivered" } else { "outbound.failed" }, &s.id, &s.station, &s.partner, &s.message_id, detail)]
}

/// Record an MDN that settles nothing on the message it claims to answer, and announce it.
async fn refuse(cx: &NodeContext, s: &Send, r: &Refusal) -> Out {
    let reason = r.to_string();
    tracing::warn!(message = "Refused an MDN.", id = %s.id, partner = %s.partner, %reason);
    cx.status(&s.id, "mdn-refused", &reason).await;
    event("outbound.mdn_refused", &s.id, &s.station, &s.partner, &s.message_id, &reason)
}

/// An MDN as received: its HTTP headers, a blank line, its body.
fn raw_mdn(headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut raw = Vec::new();
    for (k, v) in headers {
        raw.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    raw.extend_from_slice(body);
    raw
}

/// Conclude a message from an MDN that can be trusted, kept as its receipt.
async fn settle(cx: &NodeContext, s: &Send, verdict: &MdnVerdict, receipt: &[u8]) -> Vec<Out> {
    match verdict {
        MdnVerdict::Delivered { mic_note: None } => conclude(cx, s, true, "delivered; MDN verified", Some(receipt)).await,
        MdnVerdict::Delivered { mic_note: Some(note) } => {
            tracing::info!(message = "MDN accepted with a MIC that is not RFC 4130's.", id = %s.id, partner = %s.partner, %note);
            conclude(cx, s, true, &format!("delivered; MDN verified; note: {note}"), Some(receipt)).await
        }
        MdnVerdict::Failed(d) => conclude(cx, s, false, &format!("partner reports {}", d.field_value()), Some(receipt)).await,
        MdnVerdict::Refused(r) => conclude(cx, s, false, &r.to_string(), None).await,
    }
}

impl Actor for As2Sender {
    const BINDING: Binding = Binding::new("as2_sender", queues::AS2_SENDER);
    type Input = Send;

    async fn handle(&self, cx: &NodeContext, s: Send) -> Result<Vec<Out>, ActorError> {
        let span = tracing::Span::current();
        span.record("message_id", s.message_id.as_str());
        span.record("station", s.station.as_str());
        span.record("partner", s.partner.as_str());
        span.record("direction", "outbound");
        let Some((partner, station)) = cx.directory.partner_by_name(&s.partner) else {
            return Ok(conclude(cx, &s, false, &format!("unknown partner {}", s.partner), None).await);
        };
        // Idempotency: a Message-ID already delivered is not sent again.
        let done_key = format!("outdone:{}:{}", partner.as2_id, bare(&s.message_id));
        if let Ok(Some(first)) = cx.state.get(&done_key).await {
            cx.status(&s.id, "sent", &format!("already delivered as {first}")).await;
            return Ok(vec![]);
        }
        let Some(url) = partner.url.clone() else {
            return Ok(conclude(cx, &s, false, "the partner has no URL", None).await);
        };
        let size: u64 = s.documents.iter().map(|d| d.data.len()).sum();
        span.record("size", size);
        let built = if crate::outbound_stream::streams(cx, &s) {
            match crate::outbound_stream::build(cx, &s, partner, station).await? {
                Ok(m) => Message { headers: m.built.headers.clone(), mic: m.built.mic.clone(), mic_alternatives: m.built.mic_alternatives.clone(), body: Body::Streamed(m) },
                Err(e) => return Ok(conclude(cx, &s, false, &format!("cannot build the message: {e}"), None).await),
            }
        } else {
            let mut docs = Vec::with_capacity(s.documents.len());
            for d in &s.documents {
                let data = cx.load(&d.data).await?;
                docs.push(Document { filename: d.filename.clone(), content_type: d.content_type.clone(), data });
            }
            let (p2, st2, mid, seed) = (partner.clone(), station.clone(), s.message_id.clone(), s.id.clone());
            let built = cx.cpu.run(move || {
                let date = httpdate::fmt_http_date(std::time::SystemTime::now());
                let ids = OutboundIds { message_id: &mid, boundary_seed: &seed, date: &date };
                outbound::build(
                    &st2.as2_id,
                    &p2.as2_id,
                    &docs,
                    &p2.outbound.options,
                    Some((&st2.signing_key, &st2.signing_cert)),
                    p2.encryption_cert.as_ref(),
                    &ids,
                    "AS2 message",
                )
            })
            .await?;
            match built {
                Ok(b) => Message { headers: b.headers, mic: b.mic, mic_alternatives: b.mic_alternatives, body: Body::Whole(b.body) },
                Err(e) => return Ok(conclude(cx, &s, false, &format!("cannot build the message: {e}"), None).await),
            }
        };
        cx.annotate(&s.id, &[("mic", format!("{}, {}", built.mic.digest, built.mic.alg.name(Default::default()))), ("url", url.clone())]).await;
        cx.status(&s.id, "sending", &format!("attempt {} to {}", s.attempt + 1, url)).await;
        if matches!(partner.outbound.options.mdn, MdnRequest::Async { .. }) {
            // Registered before the POST: a fast partner's MDN may arrive before it returns.
            let deadline_ms = now_ms() + (partner.outbound.mdn_deadline_secs as i64) * 1000;
            let wait = AwaitingMdn {
                id: s.id.clone(),
                station: s.station.clone(),
                partner: s.partner.clone(),
                message_id: s.message_id.clone(),
                mic: built.mic.clone(),
                mic_alternatives: built.mic_alternatives.clone(),
                deadline_ms,
                message_signed: partner.outbound.options.sign.is_some(),
                mdn_signed: signed_mdn_required(partner),
            };
            let key = format!("mdnwait:{}", bare(&s.message_id));
            let v = serde_json::to_string(&wait).map_err(|e| ActorError::Permanent(e.to_string()))?;
            cx.state.delete(&key).await?;
            cx.state.delete(&refused_key(&s.message_id)).await?;
            cx.state.set_once(&key, &v, partner.outbound.mdn_deadline_secs.max(1) * 4).await?;
            cx.state.schedule(MDN_DEADLINES, bare(&s.message_id), deadline_ms).await?;
            // Recorded before the POST too: the MDN may settle the message (and record `sent`)
            // before the POST returns, and the history must still read in order.
            cx.status(&s.id, "awaiting-mdn", &format!("MDN due within {} s of the POST to {url}", partner.outbound.mdn_deadline_secs)).await;
        }
        let client = self.client(partner).map_err(ActorError::Permanent)?;
        let mut req = client.post(&url);
        for (k, v) in &built.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some((u, p)) = &partner.outbound.http.basic_auth {
            req = req.basic_auth(u, Some(p));
        }
        let chunked = partner.outbound.http.chunked;
        let sent = match built.body {
            Body::Whole(body) => {
                let req = if chunked {
                    // A stream body goes out with Transfer-Encoding: chunked and no Content-Length.
                    let stream = futures::stream::once(async move { Ok::<Vec<u8>, std::io::Error>(body) });
                    req.body(reqwest::Body::wrap_stream(stream))
                } else {
                    req.body(body)
                };
                req.send().await
            }
            Body::Streamed(m) => {
                let (tx, stream) = crate::outbound_stream::body();
                // Without the header a stream body goes out chunked.
                let req = if chunked { req } else { req.header("Content-Length", m.built.len) };
                let (sent, ()) = tokio::join!(req.body(stream).send(), crate::outbound_stream::feed(cx, &m, tx));
                crate::outbound_stream::drop_layers(cx, &m).await;
                sent
            }
        };
        let retry = |why: String| -> Result<Vec<Out>, ActorError> { Err(ActorError::Transient(why)) };
        let resp = match sent {
            Ok(r) => r,
            Err(e) => return self.again(cx, &s, partner, format!("POST {url} failed: {e}"), retry).await,
        };
        let code = resp.status();
        let headers: Vec<(String, String)> = resp.headers().iter().map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).to_string())).collect();
        let rbody = match resp.bytes().await {
            Ok(b) => b.to_vec(),
            Err(e) => return self.again(cx, &s, partner, format!("reading the answer of {url} failed: {e}"), retry).await,
        };
        if code.is_server_error() || code.as_u16() == 429 || code.as_u16() == 408 {
            return self.again(cx, &s, partner, format!("{url} answered {code}"), retry).await;
        }
        if !code.is_success() {
            return Ok(conclude(cx, &s, false, &format!("{url} refused the message: {code} {}", String::from_utf8_lossy(&rbody[..rbody.len().min(200)])), None).await);
        }
        match &partner.outbound.options.mdn {
            MdnRequest::None => {
                let _ = cx.state.set_once(&done_key, &s.id, 90 * 24 * 3600).await;
                Ok(conclude(cx, &s, true, &format!("accepted by {url} ({code}); no MDN requested"), None).await)
            }
            MdnRequest::Sync { .. } => {
                let parsed = mdn::parse(&headers, &rbody, &partner.verify_certs, &cx.limits.mime);
                let awaited = Awaited {
                    message_id: &s.message_id,
                    mic: &built.mic,
                    message_signed: partner.outbound.options.sign.is_some(),
                    mdn_signed: signed_mdn_required(partner),
                    alternatives: &built.mic_alternatives,
                    strict_mic: partner.outbound.strict_mic,
                };
                match mdn::judge(parsed.as_ref(), &awaited) {
                    MdnVerdict::Refused(r) => {
                        // The partner answered, but nothing in the answer can be trusted. Sending
                        // again would only give the partner a duplicate: the message fails.
                        let mut outs = vec![refuse(cx, &s, &r).await];
                        outs.extend(conclude(cx, &s, false, &r.to_string(), None).await);
                        Ok(outs)
                    }
                    verdict => {
                        if matches!(verdict, MdnVerdict::Delivered { .. }) {
                            let _ = cx.state.set_once(&done_key, &s.id, 90 * 24 * 3600).await;
                        }
                        Ok(settle(cx, &s, &verdict, &raw_mdn(&headers, &rbody)).await)
                    }
                }
            }
            MdnRequest::Async { .. } => {
                // `awaiting-mdn` is in the history already; the MDN may even have settled it.
                tracing::info!(message = "Message accepted; its MDN comes later.", id = %s.id, partner = %s.partner, %code);
                Ok(vec![])
            }
        }
    }
}

impl As2Sender {
    /// Retry later, or fail for good after the partner's attempts.
    async fn again(&self, cx: &NodeContext, s: &Send, partner: &Partner, why: String, _retry: impl Fn(String) -> Result<Vec<Out>, ActorError>) -> Result<Vec<Out>, ActorError> {
        let attempts = partner.outbound.attempts;
        if s.attempt + 1 >= attempts {
            return Ok(conclude(cx, s, false, &format!("{why} (gave up after {attempts} attempts)"), None).await);
        }
        tracing::warn!(message = "Partner unreachable; will retry.", partner = %s.partner, attempt = s.attempt + 1, reason = %why);
        cx.metrics.retries.with_label_values(&["as2_sender"]).inc();
        cx.status(&s.id, "retrying", &why).await;
        let delay = Duration::from_millis(partner.outbound.retry_base_ms.saturating_mul(1 << s.attempt.min(8))).min(Duration::from_secs(300));
        let mut next = s.clone();
        next.attempt += 1;
        // The wait happens in the broker (or spool), not in this consumer slot.
        let body = envelope::encode(&next).map_err(ActorError::Permanent)?;
        Ok(vec![Out::SendLater { queue: queues::AS2_SENDER, body, delay }])
    }
}

/// Does this request look like an MDN rather than a message?
pub fn looks_like_mdn(content_type: &str, body: &[u8]) -> bool {
    let ct = content_type.to_ascii_lowercase();
    if ct.starts_with("multipart/report") {
        return true;
    }
    if ct.starts_with("multipart/signed") {
        let head = &body[..body.len().min(4096)];
        let text = String::from_utf8_lossy(head).to_ascii_lowercase();
        return text.contains("multipart/report") && text.contains("disposition-notification");
    }
    false
}

/// Why an asynchronous MDN settled nothing.
#[derive(Debug, thiserror::Error)]
pub enum MdnNotSettled {
    /// Refused (unknown partner, unreadable, nobody waits for it, a refused verdict): the
    /// reason for a 4xx answer.
    #[error("{0}")]
    Refused(String),
    /// The state store failed: the partner should post it again.
    #[error("{0}")]
    Unavailable(#[from] StorageError),
}

impl From<String> for MdnNotSettled {
    fn from(reason: String) -> MdnNotSettled {
        MdnNotSettled::Refused(reason)
    }
}

impl From<&str> for MdnNotSettled {
    fn from(reason: &str) -> MdnNotSettled {
        MdnNotSettled::Refused(reason.to_string())
    }
}

/// Settle an asynchronous MDN that arrived at the HttpReceiver. Returns the outputs (events)
/// or why the MDN settles nothing. A refused MDN that names a message waiting for its MDN is
/// recorded on that message, which keeps waiting.
pub async fn settle_async_mdn(cx: &NodeContext, headers: &[(String, String)], body: &[u8]) -> Result<Vec<Out>, MdnNotSettled> {
    let get = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.as_str());
    let from = get("as2-from").map(|v| edinode_proto::headers::parse_as2_name(v).unwrap_or_default()).unwrap_or_default();
    let to = get("as2-to").map(|v| edinode_proto::headers::parse_as2_name(v).unwrap_or_default()).unwrap_or_default();
    let claimed = cx.directory.partner(&to, &from).ok_or_else(|| format!("MDN from unknown partner {from} to {to}"))?;
    let mut parsed = mdn::parse(headers, body, &claimed.verify_certs, &cx.limits.mime);
    let original = match &parsed {
        Ok(p) => p.original_message_id.clone(),
        Err(mdn::MdnError::SignatureInvalid { unverified: Some(p), .. }) => p.original_message_id.clone(),
        Err(e) => return Err(format!("unreadable MDN: {e}").into()),
    }
    .ok_or("the MDN has no Original-Message-ID")?;
    let key = format!("mdnwait:{}", bare(&original));
    let wait: AwaitingMdn = match cx.state.get(&key).await? {
        Some(v) => serde_json::from_str(&v).map_err(|e| StorageError::invalid(format!("{key}: unreadable record")).with_source(e))?,
        None => return Err(format!("no message {original} is waiting for an MDN").into()),
    };
    // Trust comes from the message we sent, not from the AS2 headers of whoever posts: the MDN
    // must verify against the certificates of the partner the message went to.
    let (partner, _) = cx.directory.partner_by_name(&wait.partner).ok_or_else(|| format!("partner {} of message {original} is no longer configured", wait.partner))?;
    if partner.name != claimed.name {
        parsed = mdn::parse(headers, body, &partner.verify_certs, &cx.limits.mime);
    }
    let awaited = Awaited {
        message_id: &wait.message_id,
        mic: &wait.mic,
        message_signed: wait.message_signed,
        mdn_signed: wait.mdn_signed || partner.outbound.require_signed_mdn,
        alternatives: &wait.mic_alternatives,
        strict_mic: partner.outbound.strict_mic,
    };
    let verdict = mdn::judge(parsed.as_ref(), &awaited);
    if !matches!(verdict, MdnVerdict::Refused(_)) && !claim_outcome(cx, &wait).await? {
        return Err(format!("message {original} is already settled").into());
    }
    let s = Send { id: wait.id, station: wait.station, partner: wait.partner, message_id: wait.message_id, documents: vec![], created_at_ms: 0, source: String::new(), attempt: 0 };
    if let MdnVerdict::Refused(r) = &verdict {
        // The HttpReceiver answers an error, so the event is not published: the status record
        // is what stays.
        let _ = refuse(cx, &s, r).await;
        let ttl = (wait.deadline_ms - now_ms()).max(0) as u64 / 1000 + 3600;
        let _ = cx.state.set_once(&refused_key(&original), &r.to_string(), ttl).await;
        // The reason never includes our MIC: the poster may be anyone.
        return Err(format!("MDN refused: {r}").into());
    }
    let _ = cx.state.unschedule(MDN_DEADLINES, bare(&original)).await;
    let _ = cx.state.delete(&key).await;
    let _ = cx.state.delete(&refused_key(&original)).await;
    if matches!(verdict, MdnVerdict::Delivered { .. }) {
        let _ = cx.state.set_once(&format!("outdone:{}:{}", partner.as2_id, bare(&original)), &s.id, 90 * 24 * 3600).await;
    }
    Ok(settle(cx, &s, &verdict, &raw_mdn(headers, body)).await)
}

/// Past-deadline asynchronous MDNs: fail or resend per partner policy. Safe with several nodes:
/// each deadline is claimed once.
pub async fn expire_mdn_deadlines(cx: &NodeContext) -> Result<Vec<Out>, ActorError> {
    let mut outs = Vec::new();
    for mid in cx.state.due(MDN_DEADLINES, now_ms(), 100).await? {
        let key = format!("mdnwait:{mid}");
        let Some(v) = cx.state.get(&key).await? else {
            let _ = cx.state.unschedule(MDN_DEADLINES, &mid).await;
            continue;
        };
        let wait: AwaitingMdn = serde_json::from_str(&v).map_err(|e| StorageError::invalid(format!("{key}: unreadable record")).with_source(e))?;
        if !claim_outcome(cx, &wait).await? {
            continue;
        }
        cx.metrics.mdn_timeouts.inc();
        let _ = cx.state.unschedule(MDN_DEADLINES, &mid).await;
        let _ = cx.state.delete(&key).await;
        // Refused MDNs are in the history; the first is told with the outcome.
        let refused = cx.state.get(&refused_key(&mid)).await.ok().flatten().map(|r| format!(" (an MDN was refused: {r})")).unwrap_or_default();
        let _ = cx.state.delete(&refused_key(&mid)).await;
        let policy = cx.directory.partner_by_name(&wait.partner).map(|(p, _)| p.outbound.on_mdn_timeout).unwrap_or_default();
        let stored = cx.blobs.get(&send_key(&wait.id)).await.ok().and_then(|b| envelope::decode::<Send>(&b).ok());
        match (policy, stored) {
            (OnMdnTimeout::Resend, Some(mut s)) => {
                s.attempt = 0;
                cx.status(&wait.id, "resent", &format!("no MDN before the deadline{refused}; sending again")).await;
                outs.push(Out::send(queues::AS2_SENDER, &s)?);
            }
            _ => {
                let s = Send { id: wait.id, station: wait.station, partner: wait.partner, message_id: wait.message_id, documents: vec![], created_at_ms: 0, source: String::new(), attempt: 0 };
                outs.extend(conclude(cx, &s, false, &format!("no MDN before the deadline{refused}"), None).await);
            }
        }
    }
    Ok(outs)
}

/// Accept documents for sending: keep the Send (for retries and resends) and queue it.
pub async fn submit(cx: &NodeContext, s: &Send) -> Result<Out, ActorError> {
    let body = envelope::encode(s).map_err(ActorError::Permanent)?;
    cx.blobs.put(&send_key(&s.id), &body).await?;
    cx.annotate_and_status(
        &s.id,
        &[
            ("direction", "outbound".to_string()),
            ("station", s.station.clone()),
            ("partner", s.partner.clone()),
            ("message_id", s.message_id.clone()),
            ("source", s.source.clone()),
            ("received_at", s.created_at_ms.to_string()),
            ("size", s.documents.iter().map(|d| d.data.len()).sum::<u64>().to_string()),
        ],
        "queued",
        &format!("from {}", s.source),
    )
    .await;
    Ok(Out::Send { queue: queues::AS2_SENDER, body })
}
