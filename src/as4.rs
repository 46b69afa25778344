//! AS4 pulling, wired to HTTP and the bus (the logic is the PullSender in
//! [`edinode_actors::pull_sender`]):
//! - `POST /as4` on the partner listener: PullRequests, Receipts and Errors;
//! - `POST /api/as4/submit` on the admin API (bearer token): queue a user message (JSON);
//! - the consumer of `edinode.as4.submit` (same JSON): acked once the message is stored,
//!   dead-lettered with the reason when it is not a valid submission.
//!
//! These run wherever the HTTP listener runs (the `http_receiver` actor). Handlers hand their
//! work to the node's multi-threaded runtime: actix workers are single-threaded runtimes, and
//! signing, verifying and storing should not hold them.

use crate::config::Settings;
use crate::http::text;
use crate::transport::Transport;
use actix_web::{web, HttpRequest, HttpResponse};
use edinode_actors::pull_sender::{PullSender, PullSenderConfig, Reply, Submission, SubmitError, SUBMIT_QUEUE};
use edinode_actors::NodeContext;
use edinode_proto::as4::wssec::SigningKey;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// What the AS4 routes share; constructed once per node ([`As4State::start`]).
pub struct As4State {
    pub sender: Arc<PullSender>,
    cx: NodeContext,
    /// The node's multi-threaded runtime.
    rt: tokio::runtime::Handle,
    admin_token: Option<String>,
    max_request_bytes: usize,
    max_submit_bytes: usize,
}

impl As4State {
    /// Builds the PullSender (signing station, authorization map) and starts consuming
    /// `edinode.as4.submit`. Must be called on the node's runtime.
    pub async fn start(cx: &NodeContext, transport: Arc<dyn Transport>, settings: &Settings) -> anyhow::Result<As4State> {
        let s = &settings.as4;
        let station = match s.station.as_str() {
            "" if cx.directory.stations.len() == 1 => cx.directory.stations.values().next(),
            "" => None,
            name => Some(cx.directory.stations.get(name).ok_or_else(|| anyhow::anyhow!("as4.station: no station named {name}"))?),
        };
        let signer = station.map(|st| (st.name.clone(), SigningKey { key: st.signing_key.clone(), cert: st.signing_cert.clone() }));
        if signer.is_none() && !cx.directory.stations.is_empty() {
            tracing::warn!(message = "AS4 pulling is off: several stations and none named in as4.station.");
        }
        let config = PullSenderConfig {
            authorization_map: authorization_map_path(s),
            receipt_timeout: Duration::from_secs(s.receipt_timeout_secs.max(1)),
            attachment_digest: s.attachment_digest,
            limits: edinode_proto::as4::Limits { max_bytes: s.max_request_bytes, ..Default::default() },
        };
        let sender = Arc::new(PullSender::new(config, signer, &cx.node_id).map_err(|e| anyhow::anyhow!("as4.authorization_map: {e}"))?);
        if sender.can_sign() {
            let rx = transport.consume(SUBMIT_QUEUE, settings.rabbitmq.prefetch).await?;
            let retry = crate::runner::RetryPolicy { max_attempts: settings.rabbitmq.max_attempts.max(1), base: Duration::from_millis(settings.rabbitmq.retry_base_ms) };
            let submitter = edinode_actors::as4_submitter::As4Submitter { sender: sender.clone() };
            // One at a time: an MPC is first in, first out in the order submissions were queued.
            crate::runner::spawn(submitter, cx.clone(), transport, rx, 1, retry);
        }
        Ok(As4State {
            sender,
            cx: cx.clone(),
            rt: tokio::runtime::Handle::current(),
            admin_token: (!settings.admin.token.is_empty()).then(|| settings.admin.token.clone()),
            max_request_bytes: s.max_request_bytes,
            max_submit_bytes: s.max_submit_bytes,
        })
    }
}

/// The pull authorization map as the node opens it: a relative `as4.authorization_map` is
/// resolved against the working directory the node runs in, like every other path in the
/// configuration (keys, certificates, data_dir, inbox).
pub fn authorization_map_path(s: &crate::config::As4Settings) -> std::path::PathBuf {
    if s.authorization_map.is_absolute() {
        return s.authorization_map.clone();
    }
    std::env::current_dir().map(|d| d.join(&s.authorization_map)).unwrap_or_else(|_| s.authorization_map.clone())
}

/// `check-config` for `[as4]`: the signing station as the node picks it, and the authorization
/// map at the path the node opens. Ok: notes to print (a missing map is a warning: the node
/// runs and refuses every PullRequest until the file exists); Err: what the node would refuse.
pub fn check_config(settings: &Settings, directory: &edinode_proto::profile::Directory) -> Result<Vec<String>, String> {
    let s = &settings.as4;
    let mut notes = Vec::new();
    match s.station.as_str() {
        "" if directory.stations.len() == 1 => {}
        "" if directory.stations.is_empty() => notes.push("as4: no station, so AS4 pulling is off".to_string()),
        "" => notes.push("warning: as4.station is empty and there are several stations: AS4 pulling is off".to_string()),
        name if directory.stations.contains_key(name) => {}
        name => return Err(format!("as4.station: no station named {name}")),
    }
    let path = authorization_map_path(s);
    match std::fs::read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => notes.push(format!(
            "warning: as4.authorization_map: {} does not exist (a relative path is resolved against the working directory): every PullRequest is refused (EBMS:0004) until it does",
            path.display()
        )),
        Err(e) => return Err(format!("as4.authorization_map: cannot read {}: {e}", path.display())),
        Ok(bytes) => match edinode_proto::as4::authz::AuthorizationMap::parse(&bytes) {
            Ok(m) => notes.push(format!("as4.authorization_map: {} ({} entries)", path.display(), m.entries.len())),
            Err(e) => return Err(format!("as4.authorization_map: {}: {e}", path.display())),
        },
    }
    Ok(notes)
}

/// `POST /as4`, for the partner-facing App.
pub fn partner_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/as4", web::post().to(as4));
}

/// `POST /api/as4/submit`, for the admin App.
pub fn admin_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/as4/submit", web::post().to(submit));
}

/// Reads a request body of at most `limit` bytes (413 beyond).
async fn read_body(req: &HttpRequest, mut payload: web::Payload, limit: usize) -> Result<bytes::Bytes, HttpResponse> {
    let too_large = || text(413, &format!("the body is larger than {limit} bytes"));
    let declared = req.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = bytes::BytesMut::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| text(400, &format!("cannot read the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn response(r: Reply) -> HttpResponse {
    let mut b = HttpResponse::build(actix_web::http::StatusCode::from_u16(r.status).unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR));
    if let Some(ct) = r.content_type {
        b.content_type(ct);
    }
    b.body(r.body)
}

async fn as4(req: HttpRequest, payload: web::Payload, st: web::Data<As4State>) -> HttpResponse {
    let span = tracing::info_span!(
        "pull_sender",
        otel.name = "pull_sender",
        otel.kind = "server",
        actor = "pull_sender",
        node = %st.cx.node_id,
        http.status_code = tracing::field::Empty,
        message_id = tracing::field::Empty,
        direction = "as4",
        size = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let trace_in: Vec<(String, String)> =
        req.headers().iter().map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).to_string())).collect();
    crate::telemetry::set_parent(&span, &trace_in);
    let resp = async {
        let body = match read_body(&req, payload, st.max_request_bytes).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let span = tracing::Span::current();
        span.record("size", body.len());
        st.cx.metrics.bytes.with_label_values(&["as4"]).inc_by(body.len() as u64);
        let ct = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let (sender, cx) = (st.sender.clone(), st.cx.current());
        let work = async move { sender.handle(&cx, &ct, &body, crate::storage::now_ms()).await }.instrument(span.clone());
        match st.rt.spawn(work).await {
            Ok(reply) => {
                span.record("outcome", reply.outcome);
                response(reply)
            }
            Err(e) => text(500, &format!("internal error: {e}")),
        }
    }
    .instrument(span.clone())
    .await;
    span.record("http.status_code", resp.status().as_u16());
    st.cx.metrics.http_requests.with_label_values(&["/as4", resp.status().as_str()]).inc();
    resp
}

/// The admin bearer token, compared in constant time (as the rest of the admin API).
fn authorized(req: &HttpRequest, token: Option<&str>) -> bool {
    crate::http::bearer_ok(req, token)
}

/// POST /api/as4/submit: a JSON [`Submission`]; 202 with the message id once it is queued.
async fn submit(req: HttpRequest, payload: web::Payload, st: web::Data<As4State>) -> HttpResponse {
    if !authorized(&req, st.admin_token.as_deref()) {
        return HttpResponse::Unauthorized().insert_header(("WWW-Authenticate", "Bearer")).json(serde_json::json!({"error": "a valid bearer token is required"}));
    }
    let body = match read_body(&req, payload, st.max_submit_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (sender, cx) = (st.sender.clone(), st.cx.current());
    let work = async move {
        let s = Submission::from_json(&body).map_err(SubmitError::Invalid)?;
        sender.submit(&cx, s, crate::storage::now_ms()).await
    };
    let resp = match st.rt.spawn(work.in_current_span()).await {
        Ok(Ok(s)) => HttpResponse::Accepted().json(serde_json::json!({"message_id": s.message_id, "mpc": s.mpc})),
        Ok(Err(SubmitError::Invalid(e))) => HttpResponse::BadRequest().json(serde_json::json!({"error": e})),
        Ok(Err(SubmitError::Duplicate(id))) => HttpResponse::Conflict().json(serde_json::json!({"error": "already submitted", "message_id": id})),
        Ok(Err(SubmitError::Unavailable(e))) => HttpResponse::ServiceUnavailable().json(serde_json::json!({"error": e})),
        Err(e) => HttpResponse::InternalServerError().json(serde_json::json!({"error": e.to_string()})),
    };
    st.cx.metrics.http_requests.with_label_values(&["/api/as4/submit", resp.status().as_str()]).inc();
    resp
}

