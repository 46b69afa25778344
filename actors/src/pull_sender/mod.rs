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

use crate::{NodeContext, StorageError};
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


mod authz;
mod mpc_store;
mod submission;
#[cfg(test)]
mod tests;

use authz::AuthorizationFile;
pub use submission::{Properties, Submission, SubmittedPart};
use mpc_store::{done_key, queue_set, short_hash, sub_key, um_key};

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

impl Reply {
    /// 503: the message store did not answer; the partner tries again.
    fn unavailable() -> Reply {
        Reply { status: 503, content_type: Some("text/plain; charset=utf-8".into()), body: b"the message store is unavailable; please retry\n".to_vec(), outcome: "unavailable" }
    }
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
        let unavailable = |e: StorageError| SubmitError::Unavailable(e.to_string());
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
                Reply::unavailable()
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
}

// ---------------------------------------------------------------------------------------------
// Ids and time
// ---------------------------------------------------------------------------------------------

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

/// xsd:dateTime in UTC with milliseconds, e.g. `2024-05-01T12:00:00.000Z` (empty outside
/// the years 0000 to 9999).
pub fn xsd_datetime(unix_ms: i64) -> String {
    const XSD: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000).ok().and_then(|t| t.format(XSD).ok()).unwrap_or_default()
}
