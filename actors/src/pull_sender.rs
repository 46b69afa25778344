//! PullSender: the AS4 Pull Send Agent. User messages submitted for pulling wait on their MPC;
//! a partner's PullRequest (POST /as4) gets the oldest one of its MPC, signed with our station's
//! key, when the pull authorization map allows the PullRequest's signer on that MPC. A pulled
//! message stays leased until a Receipt or an Error that references it settles it; when the
//! lease runs out (`receipt_timeout`) the message is offered again, before newer ones.
//!
//! Store layout (works the same over Redis and the embedded local state):
//! - `as4/um/<sha256(message id)>` (blob): the [`UserMessage`], MessagePack;
//! - `as4:q:<mpc hash>` (time set): queued message ids, scored by submission time (ms × 1000
//!   plus a sequence number, so submissions within one millisecond keep their order);
//! - `as4:inflight:<mpc hash>` (time set): pulled message ids, scored by lease deadline;
//! - `as4:lease:<id>` (key with TTL = receipt timeout): who holds the lease. Claimed with
//!   `set_once`, so two pulls (on one node or several) never hand out the same message at once;
//! - `as4:sub:<id>` = MPC: the message was submitted and is not settled (MPC of a receipt);
//! - `as4:done:<id>` = outcome: settled by a Receipt or an Error (kept as long as duplicate
//!   claims, `limits.duplicate_retention_days`: a resubmitted id is refused meanwhile);
//! - `as4:pull:<hash(mpc, pull id)>` = message id (TTL = receipt timeout): a repeated
//!   PullRequest id gets the same message again instead of a second one.
//!
//! Order: the FIFO is the order in which submissions were stored. Several nodes consuming
//! `edinode.as4.submit` store in parallel, so messages published close together may swap.
//! Durability is that of the blob store and the state store (over Redis: its persistence
//! settings; a Redis without AOF/RDB loses the queues when it restarts).
//!
//! Authorization ([`AuthorizationFile`]): the map file is re-read when its modification time
//! or size changes, checked at most once a second. A missing or unreadable file denies every
//! PullRequest (fail closed); a file that does not parse stops the node at start and, later,
//! keeps the last good map (an editor saving in two steps must not open or close the door).
//! Receipts and Errors settle a message only when their signer may pull from its MPC.
//!
//! Answers: ebMS signals (the pulled user message, EBMS:0006 empty, EBMS:0004 not authorized,
//! EBMS:0101 failed authentication, other header errors) go out with HTTP 200, as AS4 MSHs
//! answer signals on the back-channel; a body that is not a SOAP envelope at all (garbage, a
//! DTD, too large or too deep) gets HTTP 400 with the reason; a store failure gets 503 (the
//! puller retries). Error signals are signed like the user messages when a station signs.

use crate::NodeContext;
use edinode_proto::as4::authz::{AuthorizationMap, Decision};
use edinode_proto::as4::signal::{self, Incoming};
use edinode_proto::as4::signals::{self, ErrorDetail, Signal, SignalIds};
use edinode_proto::as4::user_message::{self, Party, Property, ResponseIds, ResponseOptions, Service, UserMessage};
use edinode_proto::as4::wssec::{AttachmentDigest, SecurityIds, SigningKey};
use edinode_proto::as4::{InboundError, Limits, Severity, DEFAULT_MPC};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Where enterprise systems put user messages to be pulled (body = JSON [`Submission`]).
pub const SUBMIT_QUEUE: &str = "edinode.as4.submit";

/// How long the submission marker of a waiting message is kept (no message waits that long).
const MARKER_TTL_SECS: u64 = 10 * 365 * 24 * 3600;
/// Candidates looked at per pull before answering "empty".
const SCAN: usize = 16;

// ---------------------------------------------------------------------------------------------
// Input: a submission (POST /api/as4/submit and the edinode.as4.submit queue)
// ---------------------------------------------------------------------------------------------

/// A user message to be pulled, as JSON.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    /// The MPC to wait on; default: the ebMS default MPC.
    #[serde(default)]
    pub mpc: Option<String>,
    pub from: Party,
    pub to: Party,
    pub service: Service,
    pub action: String,
    /// Default: a new UUID.
    #[serde(default)]
    pub conversation_id: Option<String>,
    #[serde(default)]
    pub agreement_ref: Option<String>,
    #[serde(default)]
    pub ref_to_message_id: Option<String>,
    /// eb:MessageProperties: `{"name": "value"}` (sent in name order) or `[{"name", "value"}]`.
    #[serde(default)]
    pub properties: Properties,
    /// Default: `<uuid>@edinode`.
    #[serde(default)]
    pub message_id: Option<String>,
    pub parts: Vec<SubmittedPart>,
}

/// One payload of a [`Submission`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmittedPart {
    /// Default: `part<n>.<hash of the message id>@edinode`.
    #[serde(default)]
    pub content_id: Option<String>,
    /// Default: application/octet-stream.
    #[serde(default)]
    pub mime_type: Option<String>,
    pub data_base64: String,
    #[serde(default)]
    pub properties: Properties,
}

/// Properties as a JSON object or as a list of `{"name", "value"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Properties {
    Map(BTreeMap<String, String>),
    List(Vec<Property>),
}

impl Default for Properties {
    fn default() -> Self {
        Properties::List(Vec::new())
    }
}

impl Properties {
    fn into_vec(self) -> Vec<Property> {
        match self {
            Properties::Map(m) => m.into_iter().map(|(name, value)| Property { name, value }).collect(),
            Properties::List(l) => l,
        }
    }
}

fn check_message_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 255 || !id.chars().all(|c| c.is_ascii_graphic() && c != '<' && c != '>') {
        return Err(format!("message_id {id:?}: 1 to 255 printable ASCII characters without spaces or angle brackets"));
    }
    Ok(())
}

impl Submission {
    /// Read a submission (the JSON of `POST /api/as4/submit` and `edinode.as4.submit`); an error
    /// names the field at fault, e.g. `parts[0].data_base64: missing field` or
    /// `from.role: invalid type: integer `1`, expected a string`.
    pub fn from_json(body: &[u8]) -> Result<Submission, String> {
        let mut de = serde_json::Deserializer::from_slice(body);
        serde_path_to_error::deserialize(&mut de)
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                // Where the document itself is broken (not JSON, or an unknown field at the top),
                // serde's message already says it; otherwise lead with the field.
                if path == "." { format!("not a submission: {inner}") } else { format!("not a submission: {path}: {inner}") }
            })
            .and_then(|s: Submission| de.end().map(|()| s).map_err(|e| format!("not a submission: {e}")))
    }

    /// The user message to queue, stamped `now_ms`.
    pub fn into_user_message(self, now_ms: i64) -> Result<UserMessage, String> {
        let message_id = self.message_id.unwrap_or_else(|| format!("{}@edinode", uuid::Uuid::new_v4()));
        check_message_id(&message_id)?;
        let tag = &short_hash(&message_id)[..12];
        let mut parts = Vec::with_capacity(self.parts.len());
        for (i, p) in self.parts.into_iter().enumerate() {
            let compact: String = p.data_base64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            let bytes = openssl::base64::decode_block(&compact).map_err(|_| format!("parts[{i}].data_base64 is not base64"))?;
            parts.push(user_message::Part {
                content_id: p.content_id.unwrap_or_else(|| format!("part{}.{tag}@edinode", i + 1)),
                mime_type: p.mime_type.unwrap_or_else(|| "application/octet-stream".into()),
                bytes,
                properties: p.properties.into_vec(),
            });
        }
        Ok(UserMessage {
            message_id,
            timestamp: xsd_datetime(now_ms),
            ref_to_message_id: self.ref_to_message_id,
            mpc: self.mpc.map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).unwrap_or_else(|| DEFAULT_MPC.to_string()),
            from: self.from,
            to: self.to,
            service: self.service,
            action: self.action,
            conversation_id: self.conversation_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            agreement_ref: self.agreement_ref,
            properties: self.properties.into_vec(),
            parts,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The actor
// ---------------------------------------------------------------------------------------------

/// The PullSender's settings (from `[as4]`).
#[derive(Debug, Clone)]
pub struct PullSenderConfig {
    /// The pull authorization map file.
    pub authorization_map: PathBuf,
    /// Lease of a pulled message: not settled within this time, it is offered again.
    pub receipt_timeout: Duration,
    /// How attachment digests are computed in pull responses.
    pub attachment_digest: AttachmentDigest,
    /// Bounds on what partners POST to /as4.
    pub limits: Limits,
}

/// Why a submission was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Not a valid user message; resubmitting it will not help.
    #[error("invalid submission: {0}")]
    Invalid(String),
    /// This message id was submitted before.
    #[error("message {0} was already submitted")]
    Duplicate(String),
    /// Storage is unavailable, or no station signs pull responses.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// A queued submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub message_id: String,
    pub mpc: String,
}

/// The HTTP answer to a POST on /as4.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// What happened, for the span and metrics (`pulled`, `re-offered`, `empty`, ...).
    pub outcome: &'static str,
}

/// How a Receipt or an Error settles a user message.
#[derive(Debug, Clone)]
enum Settlement {
    Receipt { signal_id: String },
    Error { code: String, severity: Severity, description: String },
}

pub struct PullSender {
    config: PullSenderConfig,
    /// The station whose key signs our answers, and the key.
    signer: Option<(String, SigningKey)>,
    authz: AuthorizationFile,
    /// Prefix of our lease tokens: unique per process.
    token: String,
    seq: AtomicU64,
}

impl PullSender {
    /// `signer`: the station name and its signing key; without one, pulls are refused and
    /// nothing can be submitted. Fails when the authorization map exists but does not parse.
    pub fn new(config: PullSenderConfig, signer: Option<(String, SigningKey)>, node_id: &str) -> Result<PullSender, String> {
        let authz = AuthorizationFile::open(&config.authorization_map)?;
        Ok(PullSender { config, signer, authz, token: format!("{node_id}/{}", uuid::Uuid::new_v4().simple()), seq: AtomicU64::new(0) })
    }

    pub fn can_sign(&self) -> bool {
        self.signer.is_some()
    }

    fn station(&self) -> &str {
        self.signer.as_ref().map(|(s, _)| s.as_str()).unwrap_or("")
    }

    fn timeout_ms(&self) -> i64 {
        self.config.receipt_timeout.as_millis().min(i64::MAX as u128) as i64
    }

    fn timeout_secs(&self) -> u64 {
        self.config.receipt_timeout.as_secs().max(1)
    }

    fn count(&self, cx: &NodeContext, partner: &str, outcome: &str) {
        cx.metrics.messages.with_label_values(&["as4", self.station(), partner, outcome]).inc();
    }

    /// Queues a user message on its MPC. The blob is written first and the submission
    /// marker last, so a submission interrupted half-way is completed by its redelivery.
    pub async fn submit(&self, cx: &NodeContext, s: Submission, now_ms: i64) -> Result<Submitted, SubmitError> {
        let Some((_, key)) = &self.signer else {
            return Err(SubmitError::Unavailable("no station signs AS4 pull responses (set as4.station)".into()));
        };
        let um = s.into_user_message(now_ms).map_err(SubmitError::Invalid)?;
        // A message that cannot be built would block the head of its MPC at pull time.
        user_message::build_pull_response_with(&um, key, &response_ids(), &self.options()).map_err(|e| SubmitError::Invalid(e.to_string()))?;
        let id = um.message_id.clone();
        let unavailable = SubmitError::Unavailable;
        if cx.state.get(&sub_key(&id)).await.map_err(unavailable)?.is_some() || cx.state.get(&done_key(&id)).await.map_err(unavailable)?.is_some() {
            return Err(SubmitError::Duplicate(id));
        }
        let bytes = edinode_proto::envelope::encode(&um).map_err(SubmitError::Invalid)?;
        cx.blobs.put(&um_key(&id), &bytes).await.map_err(unavailable)?;
        let h = short_hash(&um.mpc);
        let score = now_ms.saturating_mul(1000) + (self.seq.fetch_add(1, Ordering::Relaxed) % 1000) as i64;
        cx.state.schedule(&queue_set(&h), &id, score).await.map_err(unavailable)?;
        cx.state.set_once(&sub_key(&id), &um.mpc, MARKER_TTL_SECS).await.map_err(unavailable)?;
        let size: usize = um.parts.iter().map(|p| p.bytes.len()).sum();
        cx.annotate(
            &id,
            &[
                ("direction", "as4".into()),
                ("message_id", id.clone()),
                ("station", self.station().to_string()),
                ("partner", um.to.party_id.clone()),
                ("from", um.from.party_id.clone()),
                ("mpc", um.mpc.clone()),
                ("service", um.service.value.clone()),
                ("action", um.action.clone()),
                ("size", size.to_string()),
                ("received_at", now_ms.to_string()),
            ],
        )
        .await;
        cx.status(&id, "queued", &format!("waiting on MPC {}", um.mpc)).await;
        self.count(cx, &um.to.party_id, "queued");
        tracing::info!(message = "User message queued for pulling.", message_id = %id, mpc = %um.mpc, size);
        Ok(Submitted { message_id: id, mpc: um.mpc })
    }

    fn options(&self) -> ResponseOptions {
        ResponseOptions { attachment_digest: self.config.attachment_digest }
    }

    /// Answers what a partner POSTed to /as4 (see the module doc).
    pub async fn handle(&self, cx: &NodeContext, content_type: &str, body: &[u8], now_ms: i64) -> Reply {
        // Parsing includes the XML signature check: CPU work, on the CPU pool.
        let (ct, bytes, limits) = (content_type.to_string(), body.to_vec(), self.config.limits);
        let parsed = match cx.cpu.run(move || signal::parse(&ct, &bytes, &limits)).await {
            Ok(p) => p,
            Err(error) => {
                tracing::error!(message = "Could not read a PullRequest.", %error);
                return Reply { status: 500, content_type: None, body: b"internal error".to_vec(), outcome: "error" };
            }
        };
        let incoming = match parsed {
            Ok(i) => i,
            Err(e) => return self.refuse(cx, &e, now_ms),
        };
        let signer = incoming.signed.as_ref().map(|s| s.thumbprint.clone());
        let span = tracing::Span::current();
        if let Some(id) = incoming.message_id() {
            span.record("message_id", id);
        }
        let map = self.authz.current();
        if let Err(reply) = self.settle_all(cx, &incoming, signer.as_deref(), &map).await {
            return reply;
        }
        let Some(pull) = &incoming.pull else {
            return Reply { status: 200, content_type: None, body: Vec::new(), outcome: "settled" };
        };
        let allowed = match &map {
            Ok(m) => m.decide(&pull.mpc, signer.as_deref()) == Decision::Allowed,
            Err(_) => false,
        };
        if !allowed {
            tracing::warn!(message = "PullRequest not authorized.", mpc = %pull.mpc, signer = signer.as_deref().unwrap_or("(unsigned)"), pull_id = %pull.message_id);
            self.count(cx, "", "unauthorized");
            return self.error_reply(Some(&pull.message_id), ErrorDetail::not_authorized(&pull.mpc), now_ms, "unauthorized");
        }
        if self.signer.is_none() {
            tracing::error!(message = "PullRequest refused: no station signs AS4 pull responses (set as4.station).");
            let d = ErrorDetail::new(edinode_proto::as4::EbmsCode::Other).with_description("The sending MSH has no signing key configured.");
            return self.error_reply(Some(&pull.message_id), d, now_ms, "no-signing-key");
        }
        match self.pull(cx, &pull.mpc, &pull.message_id, now_ms).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                self.count(cx, "", "empty");
                self.error_reply(Some(&pull.message_id), ErrorDetail::empty_mpc(&pull.mpc), now_ms, "empty")
            }
            Err(error) => {
                tracing::error!(message = "Pull failed: the store is unavailable.", %error, mpc = %pull.mpc);
                Reply { status: 503, content_type: Some("text/plain; charset=utf-8".into()), body: b"the message store is unavailable; please retry\n".to_vec(), outcome: "unavailable" }
            }
        }
    }

    /// The answer to a message that could not be parsed or whose signature failed.
    fn refuse(&self, cx: &NodeContext, e: &InboundError, now_ms: i64) -> Reply {
        tracing::warn!(message = "AS4 request refused.", error = %e, ref_to = e.ref_to_message_id.as_deref().unwrap_or(""));
        let outcome = if matches!(e.error, edinode_proto::as4::As4Error::FailedAuthentication(_)) { "failed-authentication" } else { "refused" };
        self.count(cx, "", outcome);
        match ErrorDetail::for_inbound(e) {
            Some(d) => self.error_reply(e.ref_to_message_id.as_deref(), d, now_ms, outcome),
            None => Reply { status: 400, content_type: Some("text/plain; charset=utf-8".into()), body: format!("{e}\n").into_bytes(), outcome: "bad-request" },
        }
    }

    fn error_reply(&self, ref_to: Option<&str>, detail: ErrorDetail, now_ms: i64, outcome: &'static str) -> Reply {
        let ids = SignalIds { message_id: new_message_id(), timestamp: xsd_datetime(now_ms) };
        let sec = security_ids();
        let signing = self.signer.as_ref().map(|(_, k)| (k, &sec));
        let s = Signal::Error { ref_to_message_id: ref_to.map(str::to_string), errors: vec![detail.clone()] };
        // Signing only fails on our own bad input; then the unsigned signal still says it.
        let built = signals::build(&[(s, ids.clone())], signing).or_else(|_| signals::error(ref_to, &detail, &ids));
        match built {
            Ok(body) => Reply { status: 200, content_type: Some(signals::SOAP_CONTENT_TYPE.into()), body, outcome },
            Err(e) => Reply { status: 500, content_type: Some("text/plain; charset=utf-8".into()), body: format!("cannot build the ebMS error: {e}\n").into_bytes(), outcome },
        }
    }

    /// Settles the user messages the bundled Receipts and Errors reference.
    async fn settle_all(&self, cx: &NodeContext, incoming: &Incoming, signer: Option<&str>, map: &Result<Arc<AuthorizationMap>, String>) -> Result<(), Reply> {
        let mut todo: Vec<(&str, Settlement)> = Vec::new();
        for r in &incoming.receipts {
            todo.push((&r.ref_to_message_id, Settlement::Receipt { signal_id: r.message_id.clone() }));
        }
        for e in &incoming.errors {
            if let Some(id) = &e.ref_to_message_id {
                let description = e.description.clone().or_else(|| e.short_description.clone()).unwrap_or_default();
                todo.push((id, Settlement::Error { code: e.code.clone(), severity: e.severity, description }));
            }
        }
        for (id, how) in todo {
            if let Err(error) = self.settle(cx, id, how, signer, map).await {
                tracing::error!(message = "Could not settle a user message: the store is unavailable.", %error, message_id = id);
                return Err(Reply { status: 503, content_type: Some("text/plain; charset=utf-8".into()), body: b"the message store is unavailable; please retry\n".to_vec(), outcome: "unavailable" });
            }
        }
        Ok(())
    }

    async fn settle(&self, cx: &NodeContext, id: &str, how: Settlement, signer: Option<&str>, map: &Result<Arc<AuthorizationMap>, String>) -> Result<(), String> {
        let Some(mpc) = cx.state.get(&sub_key(id)).await? else {
            tracing::info!(message = "Receipt or Error for a message we do not know or settled before; ignored.", message_id = id);
            return Ok(());
        };
        let allowed = map.as_ref().map(|m| m.decide(&mpc, signer) == Decision::Allowed).unwrap_or(false);
        if !allowed {
            tracing::warn!(message = "Receipt or Error from a party not authorized on the message's MPC; ignored.", message_id = id, mpc = %mpc, signer = signer.unwrap_or("(unsigned)"));
            return Ok(());
        }
        let (status, detail) = match &how {
            Settlement::Receipt { signal_id } => ("receipted", format!("receipt {signal_id}")),
            Settlement::Error { code, severity, description } => {
                (if *severity == Severity::Failure { "failed" } else { "error-warning" }, format!("{code} ({}): {description}", severity.as_str()))
            }
        };
        let mark = format!("{status} {}", uuid::Uuid::new_v4().simple());
        let first = cx.state.set_once(&done_key(id), &mark, cx.limits.duplicate_ttl_secs).await? == mark;
        if !first {
            tracing::debug!(message = "Message already settled.", message_id = id);
        }
        let h = short_hash(&mpc);
        cx.state.unschedule(&inflight_set(&h), id).await?;
        cx.state.unschedule(&queue_set(&h), id).await?;
        cx.state.delete(&lease_key(id)).await?;
        cx.blobs.delete(&um_key(id)).await?;
        // Last: until here a repeated Receipt redoes the steps above.
        cx.state.delete(&sub_key(id)).await?;
        if first {
            cx.status(id, status, &detail).await;
            cx.annotate(id, &[("status", status.to_string()), ("reason", if status == "receipted" { String::new() } else { detail.clone() })]).await;
            let partner = cx.state.summary(id).await.ok().flatten().and_then(|m| m.get("partner").cloned()).unwrap_or_default();
            self.count(cx, &partner, status);
            tracing::info!(message = "User message settled.", message_id = id, status, detail = %detail);
        }
        Ok(())
    }

    /// The pull response for the oldest message of `mpc` (an expired lease first), or None.
    async fn pull(&self, cx: &NodeContext, mpc: &str, pull_id: &str, now_ms: i64) -> Result<Option<Reply>, String> {
        let Some((_, key)) = &self.signer else { return Ok(None) };
        let pull_key = format!("as4:pull:{}", short_hash(&format!("{mpc}\n{pull_id}")));
        // A repeated PullRequest (its answer was lost) gets the message it already got.
        if let Some(id) = cx.state.get(&pull_key).await?
            && cx.state.get(&done_key(&id)).await?.is_none()
            && let Some(um) = self.load(cx, &id).await
            && let Some(r) = self.respond(cx, &um, key, "pulled-again").await
        {
            tracing::info!(message = "Repeated PullRequest answered with the same user message.", pull_id, message_id = %id);
            return Ok(Some(r));
        }
        for _ in 0..SCAN {
            let Some((id, reoffer)) = self.take(cx, mpc, now_ms).await? else { return Ok(None) };
            let Some(um) = self.load(cx, &id).await else {
                // Not readable now: it stays leased and comes back after the timeout.
                continue;
            };
            let outcome = if reoffer { "re-offered" } else { "pulled" };
            let Some(reply) = self.respond(cx, &um, key, outcome).await else {
                self.fail(cx, &id, mpc, "the pull response cannot be built").await?;
                continue;
            };
            cx.state.set_once(&pull_key, &id, self.timeout_secs()).await?;
            let detail = format!("by PullRequest {pull_id}; receipt due within {} s", self.timeout_secs());
            cx.status(&id, outcome, &detail).await;
            // The summary's status follows the AS4 life (the lifecycle ranks know AS2's words).
            cx.annotate(&id, &[("status", outcome.to_string())]).await;
            self.count(cx, &um.to.party_id, outcome);
            tracing::info!(message = "User message pulled.", message_id = %id, mpc, pull_id, reoffer);
            return Ok(Some(reply));
        }
        Ok(None)
    }

    /// Claims the next message of `mpc`: an expired lease first, else the oldest queued one.
    /// Returns (message id, whether it is offered again).
    async fn take(&self, cx: &NodeContext, mpc: &str, now_ms: i64) -> Result<Option<(String, bool)>, String> {
        let h = short_hash(mpc);
        let (inflight, queue) = (inflight_set(&h), queue_set(&h));
        for (set, reoffer, upto) in [(&inflight, true, now_ms), (&queue, false, i64::MAX)] {
            for id in cx.state.due(set, upto, SCAN).await? {
                if cx.state.get(&done_key(&id)).await?.is_some() {
                    // Settled by another request while we looked.
                    cx.state.unschedule(&inflight, &id).await?;
                    cx.state.unschedule(&queue, &id).await?;
                    continue;
                }
                let token = format!("{}/{}", self.token, self.seq.fetch_add(1, Ordering::Relaxed));
                if cx.state.set_once(&lease_key(&id), &token, self.timeout_secs()).await? != token {
                    continue; // leased by someone else right now
                }
                cx.state.schedule(&inflight, &id, now_ms.saturating_add(self.timeout_ms())).await?;
                if !reoffer {
                    cx.state.unschedule(&queue, &id).await?;
                }
                return Ok(Some((id, reoffer)));
            }
        }
        Ok(None)
    }

    async fn load(&self, cx: &NodeContext, id: &str) -> Option<UserMessage> {
        let bytes = match cx.blobs.get(&um_key(id)).await {
            Ok(b) => b,
            Err(error) => {
                tracing::warn!(message = "Queued user message not readable; it will be offered again later.", %error, message_id = id);
                return None;
            }
        };
        match edinode_proto::envelope::decode::<UserMessage>(&bytes) {
            Ok(um) => Some(um),
            Err(error) => {
                tracing::error!(message = "Queued user message is corrupt.", %error, message_id = id);
                None
            }
        }
    }

    async fn respond(&self, cx: &NodeContext, um: &UserMessage, key: &SigningKey, outcome: &'static str) -> Option<Reply> {
        // Signing (WS-Security, attachment digests) is CPU work: on the CPU pool.
        let (m, k, options) = (um.clone(), key.clone(), self.options());
        let built = match cx.cpu.run(move || user_message::build_pull_response_with(&m, &k, &response_ids(), &options)).await {
            Ok(b) => b,
            Err(error) => {
                tracing::error!(message = "Cannot build the pull response.", %error, message_id = %um.message_id);
                return None;
            }
        };
        match built {
            Ok(b) => {
                cx.metrics.bytes.with_label_values(&["as4"]).inc_by(b.body.len() as u64);
                Some(Reply { status: 200, content_type: Some(b.content_type), body: b.body, outcome })
            }
            Err(error) => {
                tracing::error!(message = "Cannot build the pull response.", %error, message_id = %um.message_id);
                None
            }
        }
    }

    /// Takes a message that can never be sent off its MPC.
    async fn fail(&self, cx: &NodeContext, id: &str, mpc: &str, reason: &str) -> Result<(), String> {
        cx.state.set_once(&done_key(id), "failed", cx.limits.duplicate_ttl_secs).await?;
        let h = short_hash(mpc);
        cx.state.unschedule(&inflight_set(&h), id).await?;
        cx.state.unschedule(&queue_set(&h), id).await?;
        cx.status(id, "failed", reason).await;
        self.count(cx, "", "failed");
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The authorization map file
// ---------------------------------------------------------------------------------------------

/// The pull authorization map, re-read when its file changes (see the module doc).
pub struct AuthorizationFile {
    path: PathBuf,
    inner: Mutex<AuthzState>,
}

struct AuthzState {
    /// Err: no usable map (missing or unreadable file): deny.
    map: Result<Arc<AuthorizationMap>, String>,
    /// (modified, len) of the file the map came from.
    stamp: Option<(SystemTime, u64)>,
    checked: Instant,
}

/// How often the file's metadata is looked at.
const AUTHZ_CHECK_EVERY: Duration = Duration::from_secs(1);

fn stamp(path: &Path) -> Result<(SystemTime, u64), String> {
    let m = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
}

fn read_map(path: &Path) -> Result<AuthorizationMap, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    AuthorizationMap::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

impl AuthorizationFile {
    /// Loads the map. A file that is there but does not parse is an error; a missing file
    /// is not (every PullRequest is denied until it appears).
    pub fn open(path: &Path) -> Result<AuthorizationFile, String> {
        let (map, st) = match stamp(path) {
            Ok(st) => (Ok(Arc::new(read_map(path)?)), Some(st)),
            Err(e) => {
                tracing::warn!(message = "Pull authorization map not found; every PullRequest is denied until it exists.", error = %e);
                (Err(e), None)
            }
        };
        if let Ok(m) = &map {
            tracing::info!(message = "Pull authorization map loaded.", path = %path.display(), entries = m.entries.len());
        }
        Ok(AuthorizationFile { path: path.to_path_buf(), inner: Mutex::new(AuthzState { map, stamp: st, checked: Instant::now() }) })
    }

    /// The map in force, reloading the file if it changed.
    pub fn current(&self) -> Result<Arc<AuthorizationMap>, String> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.checked.elapsed() < AUTHZ_CHECK_EVERY {
            return g.map.clone();
        }
        g.checked = Instant::now();
        match stamp(&self.path) {
            Ok(st) if Some(st) == g.stamp => {}
            Ok(st) => match read_map(&self.path) {
                Ok(m) => {
                    tracing::info!(message = "Pull authorization map reloaded.", path = %self.path.display(), entries = m.entries.len());
                    g.map = Ok(Arc::new(m));
                    g.stamp = Some(st);
                }
                Err(error) if g.map.is_ok() => {
                    // Keep the last good map; try again when the file changes once more.
                    tracing::error!(message = "Pull authorization map not reloaded; keeping the previous one.", %error);
                    g.stamp = Some(st);
                }
                Err(error) => {
                    tracing::error!(message = "Pull authorization map unusable; every PullRequest is denied.", %error);
                    g.map = Err(error);
                    g.stamp = Some(st);
                }
            },
            Err(error) => {
                if g.stamp.is_some() || g.map.is_ok() {
                    tracing::error!(message = "Pull authorization map gone; every PullRequest is denied.", %error);
                }
                g.map = Err(error);
                g.stamp = None;
            }
        }
        g.map.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Names, ids and time
// ---------------------------------------------------------------------------------------------

/// Hex of the first 16 bytes of SHA-256: fixed-length, key-safe names for MPCs and ids.
fn short_hash(s: &str) -> String {
    hex::encode(&openssl::sha::sha256(s.as_bytes())[..16])
}

fn um_key(id: &str) -> String {
    format!("as4/um/{}", hex::encode(openssl::sha::sha256(id.as_bytes())))
}

fn queue_set(mpc_hash: &str) -> String {
    format!("as4:q:{mpc_hash}")
}

fn inflight_set(mpc_hash: &str) -> String {
    format!("as4:inflight:{mpc_hash}")
}

fn lease_key(id: &str) -> String {
    format!("as4:lease:{id}")
}

fn sub_key(id: &str) -> String {
    format!("as4:sub:{id}")
}

fn done_key(id: &str) -> String {
    format!("as4:done:{id}")
}

fn new_message_id() -> String {
    format!("{}@edinode", uuid::Uuid::new_v4())
}

fn security_ids() -> SecurityIds {
    let u = uuid::Uuid::new_v4();
    SecurityIds { messaging_id: format!("messaging-{u}"), body_id: format!("body-{u}"), bst_id: format!("bst-{u}") }
}

fn response_ids() -> ResponseIds {
    let u = uuid::Uuid::new_v4().simple();
    ResponseIds { boundary: format!("MIMEBoundary_{u}"), root_content_id: format!("soap.{u}@edinode"), security: security_ids() }
}

/// xsd:dateTime in UTC with milliseconds, e.g. `2024-05-01T12:00:00.000Z`.
pub fn xsd_datetime(unix_ms: i64) -> String {
    let (secs, ms) = (unix_ms.div_euclid(1000), unix_ms.rem_euclid(1000));
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z", sod / 3600, sod % 3600 / 60, sod % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlobStore, Claim, StateStore};
    use edinode_proto::as4::user_message::parse_pulled;
    use edinode_proto::as4::wssec;
    use edinode_proto::as4::EbmsCode;
    use std::collections::HashMap;
    use std::sync::atomic::AtomicI64;

    /// The store's clock, moved by the test.
    #[derive(Default)]
    struct Clock(AtomicI64);

    #[derive(Default)]
    struct MemState {
        clock: Arc<Clock>,
        keys: Mutex<HashMap<String, (String, i64)>>,
        sets: Mutex<HashMap<String, HashMap<String, i64>>>,
    }

    impl MemState {
        fn now(&self) -> i64 {
            self.clock.0.load(Ordering::SeqCst)
        }
    }

    #[async_trait::async_trait]
    impl StateStore for MemState {
        async fn claim(&self, _key: &str, _id: &str, _ttl: u64) -> Result<Claim, String> {
            Ok(Claim::New)
        }
        async fn record(&self, _id: &str, _status: &str, _detail: &str) -> Result<(), String> {
            Ok(())
        }
        async fn history(&self, _id: &str) -> Result<Vec<(i64, String, String)>, String> {
            Ok(vec![])
        }
        async fn set_once(&self, key: &str, value: &str, ttl: u64) -> Result<String, String> {
            let now = self.now();
            let mut g = self.keys.lock().unwrap();
            if let Some((v, exp)) = g.get(key)
                && *exp > now
            {
                return Ok(v.clone());
            }
            g.insert(key.into(), (value.into(), now + ttl as i64 * 1000));
            Ok(value.into())
        }
        async fn annotate(&self, _id: &str, _f: &[(&str, String)]) -> Result<(), String> {
            Ok(())
        }
        async fn summary(&self, _id: &str) -> Result<Option<BTreeMap<String, String>>, String> {
            Ok(None)
        }
        async fn get(&self, key: &str) -> Result<Option<String>, String> {
            let now = self.now();
            Ok(self.keys.lock().unwrap().get(key).filter(|(_, e)| *e > now).map(|(v, _)| v.clone()))
        }
        async fn delete(&self, key: &str) -> Result<(), String> {
            self.keys.lock().unwrap().remove(key);
            Ok(())
        }
        async fn schedule(&self, set: &str, member: &str, at: i64) -> Result<(), String> {
            self.sets.lock().unwrap().entry(set.into()).or_default().insert(member.into(), at);
            Ok(())
        }
        async fn due(&self, set: &str, now: i64, limit: usize) -> Result<Vec<String>, String> {
            let g = self.sets.lock().unwrap();
            let mut v: Vec<(i64, String)> = g.get(set).map(|m| m.iter().filter(|(_, a)| **a <= now).map(|(k, a)| (*a, k.clone())).collect()).unwrap_or_default();
            v.sort();
            Ok(v.into_iter().take(limit).map(|(_, k)| k).collect())
        }
        async fn unschedule(&self, set: &str, member: &str) -> Result<(), String> {
            self.sets.lock().unwrap().entry(set.into()).or_default().remove(member);
            Ok(())
        }
        async fn list(&self, _s: i64, _u: i64, _l: usize) -> Result<Vec<String>, String> {
            Ok(vec![])
        }
    }

    #[derive(Default)]
    struct MemBlobs(Mutex<HashMap<String, Vec<u8>>>);

    #[async_trait::async_trait]
    impl BlobStore for MemBlobs {
        async fn put(&self, key: &str, data: &[u8]) -> Result<(), String> {
            self.0.lock().unwrap().insert(key.into(), data.to_vec());
            Ok(())
        }
        async fn get(&self, key: &str) -> Result<Vec<u8>, String> {
            self.0.lock().unwrap().get(key).cloned().ok_or_else(|| format!("no blob {key}"))
        }
        async fn delete(&self, key: &str) -> Result<(), String> {
            self.0.lock().unwrap().remove(key);
            Ok(())
        }
        async fn delete_prefix(&self, prefix: &str) -> Result<(), String> {
            self.0.lock().unwrap().retain(|k, _| !k.starts_with(prefix));
            Ok(())
        }
    }

    fn key(cn: &str) -> SigningKey {
        use openssl::{asn1::Asn1Time, bn::BigNum, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509::X509NameBuilder, x509::X509};
        let k = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut n = X509NameBuilder::new().unwrap();
        n.append_entry_by_text("CN", cn).unwrap();
        let n = n.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap()).unwrap();
        b.set_subject_name(&n).unwrap();
        b.set_issuer_name(&n).unwrap();
        b.set_pubkey(&k).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(2).unwrap()).unwrap();
        b.sign(&k, MessageDigest::sha256()).unwrap();
        SigningKey { key: k, cert: b.build() }
    }

    fn tp(k: &SigningKey) -> String {
        wssec::thumbprint(&k.cert.to_der().unwrap())
    }

    struct Fixture {
        _dir: tempfile_free::Dir,
        map: PathBuf,
        cx: NodeContext,
        clock: Arc<Clock>,
        ps: PullSender,
        node: SigningKey,
    }

    /// A temp dir without the tempfile crate (not a dependency of this crate).
    mod tempfile_free {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                let p = std::env::temp_dir().join(format!("edinode-pull-{}", uuid::Uuid::new_v4().simple()));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn fixture(map_xml: &str) -> Fixture {
        let dir = tempfile_free::Dir::new();
        let map = dir.0.join("map.xml");
        std::fs::write(&map, map_xml).unwrap();
        let clock = Arc::new(Clock(AtomicI64::new(1_700_000_000_000)));
        let state = MemState { clock: clock.clone(), ..Default::default() };
        let cx = NodeContext {
            node_id: "test".into(),
            directory: Arc::new(Default::default()),
            directories: Default::default(),
            blobs: Arc::new(MemBlobs::default()),
            state: Arc::new(state),
            limits: crate::Limits::default(),
            http: reqwest::Client::new(),
            inbox: dir.0.join("inbox"),
            reporting_ua: "t".into(),
            mdn_post_attempts: 1,
            metrics: Arc::new(crate::metrics::Metrics::new()),
            buckets: Default::default(),
            fsync: false,
            cpu: Default::default(),
        };
        let node = key("node");
        let config = PullSenderConfig {
            authorization_map: map.clone(),
            receipt_timeout: Duration::from_secs(2),
            attachment_digest: AttachmentDigest::SwaProfile,
            limits: Limits::default(),
        };
        let ps = PullSender::new(config, Some(("st".into(), node.clone())), "test").unwrap();
        Fixture { _dir: dir, map, cx, clock, ps, node }
    }

    impl Fixture {
        fn now(&self) -> i64 {
            self.clock.0.load(Ordering::SeqCst)
        }
        fn advance(&self, ms: i64) {
            self.clock.0.fetch_add(ms, Ordering::SeqCst);
        }
        async fn submit(&self, id: &str, mpc: Option<&str>) -> Result<Submitted, SubmitError> {
            let json = serde_json::json!({
                "message_id": id,
                "mpc": mpc,
                "from": {"party_id": "us", "role": "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/initiator"},
                "to": {"party_id": "them", "party_type": "urn:t", "role": "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/responder"},
                "service": {"value": "urn:svc", "type": "urn:types"},
                "action": "Deliver",
                "properties": {"originalSender": "urn:a", "finalRecipient": "urn:b"},
                "parts": [{"mime_type": "application/xml", "data_base64": openssl::base64::encode_block(format!("<doc id='{id}'/>").as_bytes())}],
            });
            let s: Submission = serde_json::from_value(json).unwrap();
            let now = self.now();
            self.advance(1);
            self.ps.submit(&self.cx, s, now).await
        }
        /// POSTs a PullRequest (signed by `by` if given) with bundled signals.
        async fn post(&self, pull: Option<(&str, Option<&str>)>, receipts: &[&str], by: Option<&SigningKey>) -> Reply {
            let mut sigs = Vec::new();
            if let Some((id, mpc)) = pull {
                sigs.push((Signal::PullRequest { mpc: mpc.map(str::to_string) }, SignalIds { message_id: id.into(), timestamp: "2024-01-01T00:00:00Z".into() }));
            }
            for r in receipts {
                sigs.push((
                    Signal::Receipt { ref_to_message_id: r.to_string(), references: vec![] },
                    SignalIds { message_id: format!("rcpt-{r}"), timestamp: "2024-01-01T00:00:00Z".into() },
                ));
            }
            let sec = security_ids();
            let body = signals::build(&sigs, by.map(|k| (k, &sec))).unwrap();
            self.ps.handle(&self.cx, signals::SOAP_CONTENT_TYPE, &body, self.now()).await
        }
    }

    /// The pulled message id, or the error code.
    fn what(r: &Reply) -> String {
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let ct = r.content_type.clone().unwrap();
        if ct.starts_with("multipart/related") {
            let (um, signed) = parse_pulled(&ct, &r.body, &Limits { max_bytes: 1 << 24, ..Limits::default() }).unwrap();
            assert!(signed.is_some());
            return um.message_id;
        }
        let inc = signal::parse(&ct, &r.body, &Limits::default()).unwrap();
        inc.errors[0].code.clone()
    }

    const EMPTY: &str = "<PullRequestAuthorizationMap/>";

    #[tokio::test]
    async fn oldest_first_per_mpc_and_empty() {
        let f = fixture(EMPTY);
        f.submit("a1@t", Some("urn:a")).await.unwrap();
        f.submit("b1@t", Some("urn:b")).await.unwrap();
        f.submit("a2@t", Some("urn:a")).await.unwrap();
        f.submit("d1@t", None).await.unwrap();
        assert_eq!(what(&f.post(Some(("p1", Some("urn:a"))), &[], None).await), "a1@t");
        assert_eq!(what(&f.post(Some(("p2", Some("urn:a"))), &["a1@t"], None).await), "a2@t");
        assert_eq!(what(&f.post(Some(("p3", Some("urn:b"))), &["a2@t"], None).await), "b1@t");
        assert_eq!(what(&f.post(Some(("p4", None)), &[], None).await), "d1@t");
        let r = f.post(Some(("p5", Some("urn:a"))), &[], None).await;
        assert_eq!(what(&r), "EBMS:0006");
        let inc = signal::parse(r.content_type.as_deref().unwrap(), &r.body, &Limits::default()).unwrap();
        assert_eq!(inc.errors[0].severity, Severity::Warning);
        assert_eq!(inc.errors[0].ref_to_message_id.as_deref(), Some("p5"));
        // Error answers are signed by the node too.
        assert_eq!(inc.signed.unwrap().thumbprint, tp(&f.node));
    }

    #[tokio::test]
    async fn lease_expires_and_the_message_comes_back_first() {
        let f = fixture(EMPTY);
        f.submit("m1@t", None).await.unwrap();
        f.submit("m2@t", None).await.unwrap();
        assert_eq!(what(&f.post(Some(("p1", None)), &[], None).await), "m1@t");
        assert_eq!(what(&f.post(Some(("p2", None)), &[], None).await), "m2@t");
        let r = f.post(None, &["m2@t"], None).await;
        assert_eq!((r.status, r.body.len(), r.outcome), (200, 0, "settled"));
        f.advance(1500);
        assert_eq!(what(&f.post(Some(("p3", None)), &[], None).await), "EBMS:0006");
        f.advance(600);
        assert_eq!(what(&f.post(Some(("p4", None)), &[], None).await), "m1@t");
        // m2 was receipted, so it never comes back; m1 neither once receipted.
        f.advance(2100);
        assert_eq!(what(&f.post(Some(("p5", None)), &["m1@t"], None).await), "EBMS:0006");
        f.advance(2100);
        assert_eq!(what(&f.post(Some(("p6", None)), &[], None).await), "EBMS:0006");
    }

    #[tokio::test]
    async fn repeated_pull_request_gets_the_same_message() {
        let f = fixture(EMPTY);
        f.submit("m1@t", None).await.unwrap();
        f.submit("m2@t", None).await.unwrap();
        assert_eq!(what(&f.post(Some(("p1", None)), &[], None).await), "m1@t");
        assert_eq!(what(&f.post(Some(("p1", None)), &[], None).await), "m1@t");
        assert_eq!(what(&f.post(Some(("p2", None)), &[], None).await), "m2@t");
        // Once settled, the repeated id is a new pull.
        assert_eq!(what(&f.post(Some(("p1", None)), &["m1@t", "m2@t"], None).await), "EBMS:0006");
    }

    #[tokio::test]
    async fn authorization_map_signed_unsigned_and_reload() {
        let puller = key("puller");
        let stranger = key("stranger");
        let map = format!(r#"<PullRequestAuthorizationMap><AuthorizationEntry mpc="urn:a" certificatethumprint="{}" allowed="true"/></PullRequestAuthorizationMap>"#, tp(&puller).to_lowercase());
        let f = fixture(&map);
        f.submit("a1@t", Some("urn:a")).await.unwrap();
        assert_eq!(what(&f.post(Some(("p1", Some("urn:a"))), &[], None).await), "EBMS:0004");
        assert_eq!(what(&f.post(Some(("p2", Some("urn:a"))), &[], Some(&stranger)).await), "EBMS:0004");
        assert_eq!(what(&f.post(Some(("p3", Some("urn:b"))), &[], Some(&puller)).await), "EBMS:0004");
        // Still queued after the refusals.
        assert_eq!(what(&f.post(Some(("p4", Some("urn:a"))), &[], Some(&puller)).await), "a1@t");
        // A stranger's receipt does not settle it.
        f.post(None, &["a1@t"], Some(&stranger)).await;
        f.advance(2100);
        assert_eq!(what(&f.post(Some(("p5", Some("urn:a"))), &[], Some(&puller)).await), "a1@t");
        // The map is reloaded when the file changes: now empty, unsigned pulls are allowed.
        std::fs::write(&f.map, EMPTY).unwrap();
        std::thread::sleep(AUTHZ_CHECK_EVERY + Duration::from_millis(100));
        f.submit("a2@t", Some("urn:a")).await.unwrap();
        assert_eq!(what(&f.post(Some(("p6", Some("urn:a"))), &["a1@t"], None).await), "a2@t");
        // A broken file keeps the last good map; a missing one denies everything.
        std::fs::write(&f.map, "<oops").unwrap();
        std::thread::sleep(AUTHZ_CHECK_EVERY + Duration::from_millis(100));
        assert_eq!(what(&f.post(Some(("p7", Some("urn:a"))), &["a2@t"], None).await), "EBMS:0006");
        std::fs::remove_file(&f.map).unwrap();
        std::thread::sleep(AUTHZ_CHECK_EVERY + Duration::from_millis(100));
        assert_eq!(what(&f.post(Some(("p8", Some("urn:a"))), &[], None).await), "EBMS:0004");
    }

    #[tokio::test]
    async fn bad_requests_and_bad_signatures() {
        let f = fixture(EMPTY);
        let r = f.ps.handle(&f.cx, "application/soap+xml", b"<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><x>&e;</x>", f.now()).await;
        assert_eq!(r.status, 400);
        assert!(String::from_utf8_lossy(&r.body).contains("DTD"));
        let r = f.ps.handle(&f.cx, "application/soap+xml", b"garbage", f.now()).await;
        assert_eq!(r.status, 400);
        let puller = key("p");
        let sec = security_ids();
        let body = signals::build(&[(Signal::PullRequest { mpc: None }, SignalIds { message_id: "p1".into(), timestamp: "t".into() })], Some((&puller, &sec))).unwrap();
        let bad = String::from_utf8(body).unwrap().replacen("<eb:MessageId>p1<", "<eb:MessageId>p2<", 1);
        let r = f.ps.handle(&f.cx, signals::SOAP_CONTENT_TYPE, bad.as_bytes(), f.now()).await;
        assert_eq!(what(&r), "EBMS:0101");
        assert_eq!(r.outcome, "failed-authentication");
    }

    #[tokio::test]
    async fn submissions_are_checked() {
        let f = fixture(EMPTY);
        f.submit("x@t", None).await.unwrap();
        assert_eq!(f.submit("x@t", None).await, Err(SubmitError::Duplicate("x@t".into())));
        assert!(matches!(f.submit("has space", None).await, Err(SubmitError::Invalid(_))));
        let s: Submission = serde_json::from_value(serde_json::json!({
            "from": {"party_id": "a", "role": "r"}, "to": {"party_id": "b", "role": "r"},
            "service": {"value": "s"}, "action": "a",
            "parts": [{"content_id": "bad id", "data_base64": "AAAA"}]
        }))
        .unwrap();
        assert!(matches!(f.ps.submit(&f.cx, s, f.now()).await, Err(SubmitError::Invalid(_))));
        let s: Submission = serde_json::from_value(serde_json::json!({
            "from": {"party_id": "a", "role": "r"}, "to": {"party_id": "b", "role": "r"},
            "service": {"value": "s"}, "action": "a", "parts": [{"data_base64": "not base64!"}]
        }))
        .unwrap();
        assert!(matches!(f.ps.submit(&f.cx, s, f.now()).await, Err(SubmitError::Invalid(_))));
        let unknown = serde_json::from_value::<Submission>(serde_json::json!({
            "from": {"party_id": "a", "role": "r"}, "to": {"party_id": "b", "role": "r"},
            "service": {"value": "s"}, "action": "a", "parts": [], "colour": "blue"
        }));
        assert!(unknown.is_err());
    }

    #[tokio::test]
    async fn an_error_signal_settles_too() {
        let f = fixture(EMPTY);
        f.submit("m1@t", None).await.unwrap();
        assert_eq!(what(&f.post(Some(("p1", None)), &[], None).await), "m1@t");
        let e = Signal::Error { ref_to_message_id: Some("m1@t".into()), errors: vec![ErrorDetail::new(EbmsCode::DeliveryFailure)] };
        let body = signals::build(&[(e, SignalIds { message_id: "e1".into(), timestamp: "t".into() })], None).unwrap();
        let r = f.ps.handle(&f.cx, signals::SOAP_CONTENT_TYPE, &body, f.now()).await;
        assert_eq!((r.status, r.body.len(), r.outcome), (200, 0, "settled"));
        f.advance(2100);
        assert_eq!(what(&f.post(Some(("p2", None)), &[], None).await), "EBMS:0006");
        // A settled id cannot be queued again (while duplicates are remembered).
        assert_eq!(f.submit("m1@t", None).await, Err(SubmitError::Duplicate("m1@t".into())));
    }

    #[test]
    fn datetimes() {
        assert_eq!(xsd_datetime(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(xsd_datetime(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(xsd_datetime(1_714_564_800_000), "2024-05-01T12:00:00.000Z");
    }
}
