//! HTTP: the partner-facing listener (POST /as2, /healthz, /readyz) and the admin listener
//! (/metrics, the tracking API under /api, bearer token required). POST /as2 runs the
//! HttpReceiver, then answers with the synchronous MDN when one was asked for (routed back
//! through the reply queue, from whichever node produced it), or 200 at once once the raw
//! message is durable.

use crate::transport::{Publish, Transport};
use actix_web::{web, HttpRequest, HttpResponse};
use edinode_actors::http_receiver::{self, Answer, ReceivedBody, Refusal};
use edinode_actors::as2_sender::{self, MdnNotSettled};
use edinode_actors::{queues, NodeContext, Out};
use edinode_proto::envelope::Reply;
use edinode_proto::mime::Header;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::Instrument;

/// Requests waiting for their synchronous MDN, by correlation id.
#[derive(Default)]
pub struct Waiters(Mutex<HashMap<String, oneshot::Sender<Reply>>>);

impl Waiters {
    fn register(&self, id: &str) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_string(), tx);
        rx
    }
    fn forget(&self, id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
    /// Hand a reply to its waiting request, if it is still waiting.
    pub fn complete(&self, reply: Reply) {
        let tx = self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&reply.correlation);
        if let Some(tx) = tx {
            let _ = tx.send(reply);
        }
    }
}

pub struct HttpState {
    pub cx: NodeContext,
    pub transport: Arc<dyn Transport>,
    pub waiters: Arc<Waiters>,
    pub reply_queue: String,
    pub sync_timeout: Duration,
    /// Bearer token of the admin API; None disables it.
    pub admin_token: Option<String>,
    /// Redis (or local state) liveness for /readyz.
    pub redis_configured: bool,
    /// Stations whose S3 integration was refused at start-up, with the reason (for /readyz).
    pub s3_refused: Arc<std::collections::BTreeMap<String, String>>,
    /// Certificates of the directory in force.
    pub certs: crate::certs::Inventory,
    pub limits: HttpLimits,
}

/// Bounds on a partner's request body.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_body: usize,
    /// The most a POST /api/send may carry (`admin.max_send_bytes`).
    pub max_send: usize,
    /// No body byte for this long: 408.
    pub body_idle: Duration,
    /// The whole body within this time: else 408.
    pub body_total: Duration,
}

pub fn text(status: u16, msg: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::BAD_REQUEST))
        .content_type("text/plain; charset=utf-8")
        .body(format!("{msg}\n"))
}

pub async fn as2(req: HttpRequest, payload: web::Payload, st: web::Data<HttpState>) -> HttpResponse {
    let headers: Vec<Header> = req
        .headers()
        .iter()
        .map(|(n, v)| Header { name: n.as_str().to_string(), value: String::from_utf8_lossy(v.as_bytes()).trim().to_string() })
        .collect();
    let span = tracing::info_span!(
        "http_receiver",
        otel.name = "http_receiver",
        otel.kind = "server",
        actor = "http_receiver",
        node = %st.cx.node_id,
        http.status_code = tracing::field::Empty,
        message_id = tracing::field::Empty,
        station = tracing::field::Empty,
        partner = tracing::field::Empty,
        direction = "inbound",
        size = tracing::field::Empty,
        error = tracing::field::Empty,
    );
    let trace_in: Vec<(String, String)> = headers.iter().map(|h| (h.name.clone(), h.value.clone())).collect();
    crate::telemetry::set_parent(&span, &trace_in);
    let resp = receive(headers, payload, st.clone()).instrument(span.clone()).await;
    span.record("http.status_code", resp.status().as_u16());
    st.cx.metrics.http_requests.with_label_values(&["/as2", resp.status().as_str()]).inc();
    resp
}

/// Answer a refusal; the connection is closed when the body was not read to its end.
fn refuse(r: &Refusal) -> HttpResponse {
    tracing::warn!(message = "AS2 request refused.", reason = %r, status = r.http_status());
    tracing::Span::current().record("error", r.to_string().as_str());
    text(r.http_status(), &r.to_string())
}

/// Read a request body as it arrives into `sink`: no byte for `idle` or not complete within
/// `total` is a timeout; a body beyond the limit is refused as soon as it passes it.
async fn read_body(mut payload: web::Payload, mut sink: http_receiver::BodySink<'_>, idle: Duration, total: Duration) -> Result<ReceivedBody, Refusal> {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + total;
    loop {
        let wait = idle.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(wait, payload.next()).await {
            Err(_) if tokio::time::Instant::now() >= deadline => return Err(Refusal::Timeout(format!("the body was not complete within {} s", total.as_secs()))),
            Err(_) => return Err(Refusal::Timeout(format!("no body data for {} s", idle.as_secs()))),
            Ok(None) => return sink.finish().await,
            Ok(Some(Err(e))) => return Err(Refusal::BadRequest(format!("unreadable body: {e}"))),
            Ok(Some(Ok(chunk))) => sink.push(&chunk).await?,
        }
    }
}

async fn receive(headers: Vec<Header>, payload: web::Payload, st: web::Data<HttpState>) -> HttpResponse {
    // One directory for the whole request, even if a reload lands meanwhile.
    let cx = st.cx.current();
    // Who is calling, from the headers alone: nothing is read or stored for an unknown sender.
    let ident = match http_receiver::identify(&cx, &headers) {
        Ok(i) => i,
        Err(r) => return refuse(&r),
    };
    let span = tracing::Span::current();
    span.record("message_id", ident.request.message_id.as_str());
    span.record("station", ident.station.as_str());
    span.record("partner", ident.partner.as_str());
    let declared = edinode_proto::mime::get(&headers, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > st.limits.max_body as u64) {
        return refuse(&Refusal::TooLarge(st.limits.max_body));
    }
    let sink = http_receiver::BodySink::new(&cx, &ident, &headers, st.limits.max_body);
    let body = match read_body(payload, sink, st.limits.body_idle, st.limits.body_total).await {
        Ok(b) => b,
        Err(r) => return refuse(&r),
    };
    span.record("size", body.len());
    st.cx.metrics.bytes.with_label_values(&["inbound"]).inc_by(body.len());
    let ct = edinode_proto::mime::get(&headers, "content-type").unwrap_or("");
    if let ReceivedBody::Inline(b) = &body {
        if as2_sender::looks_like_mdn(ct, b) {
            // An asynchronous MDN for a message we sent, from a partner we know.
            let pairs: Vec<(String, String)> = headers.iter().map(|h| (h.name.clone(), h.value.clone())).collect();
            return match as2_sender::settle_async_mdn(&cx, &pairs, b).await {
                Ok(outs) => match crate::runner::publish_outs(st.transport.as_ref(), outs).await {
                    Ok(()) => text(200, "MDN received"),
                    Err(e) => text(503, &format!("MDN could not be recorded: {e}")),
                },
                Err(MdnNotSettled::Refused(reason)) => {
                    tracing::warn!(message = "Asynchronous MDN refused.", %reason);
                    text(400, &reason)
                }
                Err(MdnNotSettled::Unavailable(error)) => {
                    tracing::warn!(message = "Asynchronous MDN not settled: the state store is unavailable.", %error);
                    text(503, "the MDN could not be recorded; please retry")
                }
            };
        }
    } else if ct.to_ascii_lowercase().starts_with("multipart/report") {
        let _ = st.cx.blobs.delete(&http_receiver::layer0_key(&ident.id)).await;
        return refuse(&Refusal::TooLarge(st.cx.limits.inline_threshold));
    }
    let accepted = match http_receiver::accept(&cx, ident, &headers, body, &st.reply_queue, crate::storage::now_ms()).await {
        Ok(a) => a,
        Err(r) => return refuse(&r),
    };
    let id = accepted.id.clone();
    let waiter = (accepted.answer == Answer::SyncMdn).then(|| st.waiters.register(&id));
    let Out::Send { queue, body } = accepted.first else {
        return text(500, "the first stage's input is not a queue message");
    };
    let trace = crate::telemetry::inject(&tracing::Span::current());
    if let Err(error) = st.transport.publish(Publish { queue, body: &body, attempt: 0, reason: None, origin: None, trace: &trace }).await {
        st.waiters.forget(&id);
        tracing::error!(message = "Could not queue a received message.", %error, id);
        // Not final: if the publish did reach the broker (a lost confirm), the chain still runs
        // and its statuses take over; a partner that retries is recognised as a duplicate.
        st.cx.status(&id, "not-queued", &format!("answered 503: {error}")).await;
        return text(503, "the message could not be queued; please retry");
    }
    drop(body);
    let Some(rx) = waiter else {
        return text(200, &format!("Message {} received.", accepted.message_id));
    };
    match tokio::time::timeout(st.sync_timeout, rx).await {
        Ok(Ok(reply)) => match reply.mdn {
            Some(mdn) => {
                let mut r = HttpResponse::Ok();
                for (k, v) in &mdn.headers {
                    r.insert_header((k.as_str(), v.as_str()));
                }
                r.body(mdn.body)
            }
            None => text(reply.status, "processed"),
        },
        _ => {
            st.waiters.forget(&id);
            st.cx.metrics.mdn_timeouts.inc();
            st.cx.status(&id, "mdn-timeout", "synchronous MDN not ready in time").await;
            text(504, "the MDN was not ready in time; the message is kept and will be processed")
        }
    }
}

pub async fn healthz() -> HttpResponse {
    text(200, "ok")
}

/// Ready when the broker (or spool) and the state store answer, and every configured S3
/// integration is enabled and its bucket answers. `s3` maps each station with an S3 section to
/// true or false; `s3_refused` gives the reason of each integration refused at start-up.
pub async fn readyz(st: web::Data<HttpState>) -> HttpResponse {
    let broker = st.transport.ready().await;
    let state = st.cx.state.ping().await;
    let mut buckets = serde_json::Map::new();
    for (station, b) in st.cx.buckets.iter() {
        let as2 = st.cx.directories.current().stations.get(station).map(|s| s.as2_id.clone()).unwrap_or_default();
        let ok = matches!(tokio::time::timeout(Duration::from_secs(3), b.ready(&as2)).await, Ok(Ok(())));
        buckets.insert(station.clone(), serde_json::Value::Bool(ok));
    }
    for station in st.s3_refused.keys() {
        buckets.insert(station.clone(), serde_json::Value::Bool(false));
    }
    let s3 = buckets.values().all(|v| v == &serde_json::Value::Bool(true));
    let blobs = matches!(tokio::time::timeout(Duration::from_secs(3), st.cx.blobs.ping()).await, Ok(Ok(())));
    let ready = broker && state && blobs && s3;
    let mut body = serde_json::json!({"ready": ready, "broker": broker, "state": state, "blobs": blobs, "s3": buckets});
    if state {
        // Reported, not a readiness condition: a node on a volatile Redis still works, at a risk.
        let p = st.cx.state.persistence().await;
        body["state_durable"] = serde_json::json!(p.durable());
        body["state_persistence"] = serde_json::json!(p.name());
        if let Some(risk) = p.at_risk() {
            body["state_at_risk"] = serde_json::json!(risk);
        }
    }
    if !st.s3_refused.is_empty() {
        body["s3_refused"] = serde_json::json!(*st.s3_refused);
    }
    if ready { HttpResponse::Ok().json(body) } else { HttpResponse::ServiceUnavailable().json(body) }
}

pub async fn metrics(st: web::Data<HttpState>) -> HttpResponse {
    for q in [queues::MIME_UNWRAPPER, queues::DECRYPTOR, queues::VERIFIER, queues::MDN_SENDER, queues::MDN_POST, queues::DELIVERER, queues::OUTBOUND, queues::AS2_SENDER, queues::DEAD] {
        if let Some(n) = st.transport.depth(q).await {
            st.cx.metrics.queue_depth.with_label_values(&[q]).set(n as i64);
        }
    }
    let mut body = st.cx.metrics.render();
    body.push_str(&st.certs.render_metric(crate::certs::now()));
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(body)
}

fn authorized(req: &HttpRequest, st: &HttpState) -> bool {
    bearer_ok(req, st.admin_token.as_deref())
}

/// Marks the partner-facing listener's app: admin routes served there (when `admin.listen` is
/// empty) answer loopback callers only, never a partner.
#[derive(Debug, Clone, Copy)]
pub struct PartnerListener;

/// The request carries `Authorization: Bearer <token>` (compared in constant time); no token
/// configured means no access; on the partner listener, only a loopback caller may use it.
pub fn bearer_ok(req: &HttpRequest, token: Option<&str>) -> bool {
    let Some(token) = token else { return false };
    if req.app_data::<web::Data<PartnerListener>>().is_some() && !req.peer_addr().is_some_and(|a| a.ip().is_loopback()) {
        return false;
    }
    let Some(h) = req.headers().get("authorization").and_then(|v| v.to_str().ok()) else { return false };
    let Some(given) = h.strip_prefix("Bearer ").map(str::trim) else { return false };
    token_eq(given, token)
}

/// `given` is the admin token, compared in constant time.
pub fn token_eq(given: &str, token: &str) -> bool {
    !token.is_empty() && given.len() == token.len() && given.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized().insert_header(("WWW-Authenticate", "Bearer")).json(serde_json::json!({"error": "a valid bearer token is required"}))
}

#[derive(serde::Deserialize)]
pub struct ListQuery {
    station: Option<String>,
    partner: Option<String>,
    direction: Option<String>,
    status: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    limit: Option<usize>,
    offset: Option<usize>,
}

impl ListQuery {
    fn filter(&self) -> crate::tracking::Filter {
        let ListQuery { station, partner, direction, status, since, until, .. } = self;
        crate::tracking::Filter { station: station.clone(), partner: partner.clone(), direction: direction.clone(), status: status.clone(), since: *since, until: *until }
    }
}

pub async fn list_messages(req: HttpRequest, q: web::Query<ListQuery>, st: web::Data<HttpState>) -> HttpResponse {
    if !authorized(&req, &st) {
        return unauthorized();
    }
    let limit = q.limit.unwrap_or(100).min(1000);
    match crate::tracking::find(&st.cx, &q.filter(), q.offset.unwrap_or(0), limit).await {
        Ok((rows, more)) => {
            let out: Vec<_> = rows
                .into_iter()
                .map(|(id, m)| {
                    let mut v = serde_json::to_value(&m).unwrap_or_default();
                    v["id"] = serde_json::Value::String(id);
                    v
                })
                .collect();
            HttpResponse::Ok().json(serde_json::json!({"messages": out, "more": more}))
        }
        Err(e) => HttpResponse::ServiceUnavailable().json(serde_json::json!({"error": e.to_string()})),
    }
}

pub async fn get_message(req: HttpRequest, path: web::Path<String>, st: web::Data<HttpState>) -> HttpResponse {
    if !authorized(&req, &st) {
        return unauthorized();
    }
    let id = path.into_inner();
    match crate::tracking::message(&st.cx, &id).await {
        Ok(Some((summary, history))) => {
            let history: Vec<_> = history.into_iter().map(|(at, status, detail)| serde_json::json!({"at": at, "status": status, "detail": detail})).collect();
            HttpResponse::Ok().json(serde_json::json!({"id": id, "summary": summary, "history": history}))
        }
        Ok(None) => HttpResponse::NotFound().json(serde_json::json!({"error": "no such message"})),
        Err(e) => HttpResponse::ServiceUnavailable().json(serde_json::json!({"error": e.to_string()})),
    }
}

/// GET /api/dead: the dead letters, oldest first (`limit`, default 100).
pub async fn list_dead(req: HttpRequest, q: web::Query<ListQuery>, st: web::Data<HttpState>) -> HttpResponse {
    if !authorized(&req, &st) {
        return unauthorized();
    }
    match st.transport.dead_letters(q.limit.unwrap_or(100).min(10_000)).await {
        Ok(d) => HttpResponse::Ok().json(serde_json::json!({"dead_letters": d})),
        Err(e) => HttpResponse::ServiceUnavailable().json(serde_json::json!({"error": e.to_string()})),
    }
}

#[derive(serde::Deserialize)]
pub struct ReplayQuery {
    id: Option<String>,
}

/// Move dead-lettered work back to the queue it came from (all of it, or one message's).
pub async fn replay_dead(req: HttpRequest, q: web::Query<ReplayQuery>, st: web::Data<HttpState>) -> HttpResponse {
    if !authorized(&req, &st) {
        return unauthorized();
    }
    match st.transport.replay_dead(q.id.as_deref()).await {
        Ok(n) => {
            tracing::info!(message = "Dead letters replayed.", count = n);
            HttpResponse::Ok().json(serde_json::json!({"replayed": n}))
        }
        Err(e) => HttpResponse::ServiceUnavailable().json(serde_json::json!({"error": e.to_string()})),
    }
}

/// POST /api/send: multipart/form-data with fields `station`, `partner`, optional
/// `message_id`, and one or more file parts (each with a filename).
pub async fn send(req: HttpRequest, mut body: web::Payload, st: web::Data<HttpState>) -> HttpResponse {
    use edinode_actors::outbound_intake::{FormError, FormIntake};
    use futures::StreamExt;
    if !authorized(&req, &st) {
        return unauthorized();
    }
    let bad = |m: &str| HttpResponse::BadRequest().json(serde_json::json!({"error": m}));
    let ct = edinode_proto::mime::ContentType::parse(req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or(""));
    if !ct.is("multipart/form-data") {
        return bad("expected multipart/form-data");
    }
    // Read as it arrives: files go to the blob store a chunk at a time, whatever their size.
    let cx = st.cx.current();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let refused = |e: FormError| match e {
        FormError::TooLarge(_) => HttpResponse::PayloadTooLarge().json(serde_json::json!({"error": e.to_string()})),
        FormError::Malformed(m) => bad(&m),
        FormError::Storage(e) => HttpResponse::ServiceUnavailable().json(serde_json::json!({"error": e.to_string()})),
    };
    // Whatever refuses the form, the files it stored go with it.
    let checked = async {
        let read = async {
            let mut form = FormIntake::new(&cx, &id, ct.param("boundary").unwrap_or(""), st.limits.max_send as u64)?;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| FormError::Malformed(format!("reading the request: {e}")))?;
                form.push(&chunk).await?;
            }
            form.finish().await
        };
        let form = read.await.map_err(refused)?;
        let field = |n: &str| form.fields.get(n).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let (Some(station), Some(partner)) = (field("station"), field("partner")) else {
            return Err(bad("station and partner are required"));
        };
        let pair_known = matches!(cx.directory.partner_by_name(&partner), Some((_, s)) if s.name == station);
        if form.files.is_empty() || !pair_known {
            return Err(bad(if pair_known { "at least one file is required" } else { "unknown station/partner pair" }));
        }
        let message_id = field("message_id");
        Ok((form.files, station, partner, message_id))
    };
    let (files, station, partner, message_id) = match checked.await {
        Ok(v) => v,
        Err(response) => {
            let _ = cx.blobs.delete_prefix(&format!("outbound/{id}/")).await;
            return response;
        }
    };
    let send = edinode_actors::outbound_intake::send_of(&cx, id, &station, &partner, message_id, files, "api", crate::storage::now_ms());
    let out = match edinode_actors::as2_sender::submit(&cx, &send).await {
        Ok(o) => o,
        Err(e) => return HttpResponse::ServiceUnavailable().json(serde_json::json!({"error": e.to_string()})),
    };
    match crate::runner::publish_outs(st.transport.as_ref(), vec![out]).await {
        Ok(()) => HttpResponse::Accepted().json(serde_json::json!({"id": send.id, "message_id": send.message_id})),
        Err(e) => HttpResponse::ServiceUnavailable().json(serde_json::json!({"error": e.to_string()})),
    }
}

/// POST /api/messages/{id}/resend: send a failed outbound message again (same Message-ID).
pub async fn resend(req: HttpRequest, path: web::Path<String>, st: web::Data<HttpState>) -> HttpResponse {
    use crate::tracking::ResendError;
    if !authorized(&req, &st) {
        return unauthorized();
    }
    let id = path.into_inner();
    match crate::tracking::resend(&st.cx, st.transport.as_ref(), &id, "by the admin API").await {
        Ok(message_id) => HttpResponse::Accepted().json(serde_json::json!({"id": id, "message_id": message_id})),
        Err(e) => {
            let status = match e {
                ResendError::NotFound => actix_web::http::StatusCode::NOT_FOUND,
                ResendError::Unreadable => actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                ResendError::AlreadySent => actix_web::http::StatusCode::CONFLICT,
                ResendError::Unavailable(_) => actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            };
            HttpResponse::build(status).json(serde_json::json!({"error": e.to_string()}))
        }
    }
}

/// Routes of the admin API (bearer token).
pub fn admin_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/messages", web::get().to(list_messages))
        .route("/api/messages/{id}", web::get().to(get_message))
        .route("/api/messages/{id}/resend", web::post().to(resend))
        .route("/api/send", web::post().to(send))
        .route("/api/dead", web::get().to(list_dead))
        .route("/api/dead/replay", web::post().to(replay_dead));
}
