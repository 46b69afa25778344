//! The partner-facing HTTP listener (actix-web): POST /as2 runs the HttpReceiver, then answers
//! with the synchronous MDN when one was asked for (routed back through the reply queue, from
//! whichever node produced it), or 200 at once once the raw message is durable.

use crate::transport::{Publish, Transport};
use actix_web::{web, HttpRequest, HttpResponse};
use edinode_actors::http_receiver::{self, Answer};
use edinode_actors::{queues, NodeContext};
use edinode_proto::envelope::Reply;
use edinode_proto::mime::Header;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

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
}

fn text(status: u16, msg: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::BAD_REQUEST))
        .content_type("text/plain; charset=utf-8")
        .body(format!("{msg}\n"))
}

pub async fn as2(req: HttpRequest, body: web::Bytes, st: web::Data<HttpState>) -> HttpResponse {
    let headers: Vec<Header> = req
        .headers()
        .iter()
        .map(|(n, v)| Header { name: n.as_str().to_string(), value: String::from_utf8_lossy(v.as_bytes()).trim().to_string() })
        .collect();
    let accepted = match http_receiver::accept(&st.cx, headers, &body, &st.reply_queue, crate::storage::now_ms()).await {
        Ok(a) => a,
        Err(r) => {
            tracing::warn!(message = "AS2 request refused.", reason = %r, status = r.http_status());
            return text(r.http_status(), &r.to_string());
        }
    };
    let id = accepted.id.clone();
    let waiter = (accepted.answer == Answer::SyncMdn).then(|| st.waiters.register(&id));
    let body = match edinode_proto::envelope::encode(&accepted.first) {
        Ok(b) => b,
        Err(e) => return text(500, &e),
    };
    if let Err(error) = st.transport.publish(Publish { queue: queues::MIME_UNWRAPPER, body: &body, attempt: 0, reason: None, origin: None }).await {
        st.waiters.forget(&id);
        tracing::error!(message = "Could not queue a received message.", %error, id);
        st.cx.status(&id, "failed", &format!("not queued: {error}")).await;
        return text(503, "the message could not be queued; please retry");
    }
    let Some(rx) = waiter else {
        return text(200, &format!("Message {} received.", accepted.first.ctx.request.message_id));
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
            st.cx.status(&id, "mdn-timeout", "synchronous MDN not ready in time").await;
            text(504, "the MDN was not ready in time; the message is kept and will be processed")
        }
    }
}

pub async fn healthz() -> HttpResponse {
    text(200, "ok")
}
