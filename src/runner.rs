//! The runner: consumes an actor's queue, calls its handler, publishes the outputs durably and
//! only then acknowledges. Transient failures are retried with exponential backoff (a delayed
//! republish: no consumer slot waits out a backoff); after
//! `max_attempts`, or on a permanent failure, the input goes to `edinode.dead` with the reason
//! and the attempt count.

use crate::transport::{Delivery, Publish, Transport};
use edinode_actors::{queues, Actor, ActorError, NodeContext, Out};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tracing::Instrument;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
}

impl RetryPolicy {
    pub fn delay(&self, attempt: u32) -> Duration {
        let d = self.base.saturating_mul(1u32 << attempt.min(10));
        d.min(Duration::from_secs(300))
    }
}

/// Publish a handler's outputs, carrying the current span's trace context.
pub async fn publish_outs(t: &dyn Transport, outs: Vec<Out>) -> anyhow::Result<()> {
    let trace = crate::telemetry::inject(&tracing::Span::current());
    for o in outs {
        match o {
            Out::Send { queue, body } => t.publish(Publish { queue, body: &body, attempt: 0, reason: None, origin: None, trace: &trace }).await?,
            Out::Reply { queue, body } => {
                if let Err(error) = t.reply(&queue, &body).await {
                    tracing::warn!(message = "Failed to route a synchronous reply.", %error, queue);
                }
            }
            Out::Publish { exchange, routing_key, headers, body } => t.publish_exchange(exchange, &routing_key, &headers, &body).await?,
        }
    }
    Ok(())
}

async fn dead_letter(t: &dyn Transport, cx: &NodeContext, actor: &str, queue: &str, d: &Delivery, reason: &str) -> anyhow::Result<()> {
    tracing::error!(message = "Message dead-lettered.", queue, attempts = d.attempt + 1, reason);
    tracing::Span::current().record("error", reason);
    cx.metrics.dead_letters.with_label_values(&[actor]).inc();
    t.publish(Publish { queue: queues::DEAD, body: &d.body, attempt: d.attempt + 1, reason: Some(reason), origin: Some(queue), trace: &d.trace }).await
}

async fn process<A: Actor>(actor: &A, cx: &NodeContext, t: &dyn Transport, retry: &RetryPolicy, d: Delivery) {
    let span = tracing::info_span!(
        "actor",
        otel.name = A::NAME,
        actor = A::NAME,
        node = %cx.node_id,
        attempt = d.attempt,
        message_id = tracing::field::Empty,
        station = tracing::field::Empty,
        partner = tracing::field::Empty,
        direction = tracing::field::Empty,
        size = tracing::field::Empty,
        disposition = tracing::field::Empty,
        error = tracing::field::Empty,
    );
    crate::telemetry::set_parent(&span, &d.trace);
    process_in_span(actor, cx, t, retry, d).instrument(span).await
}

async fn process_in_span<A: Actor>(actor: &A, cx: &NodeContext, t: &dyn Transport, retry: &RetryPolicy, d: Delivery) {
    let started = std::time::Instant::now();
    let input: A::Input = match edinode_proto::envelope::decode(&d.body) {
        Ok(i) => i,
        Err(e) => {
            let r = dead_letter(t, cx, A::NAME, A::QUEUE, &d, &format!("undecodable message: {e}")).await;
            finish(d, r.is_ok()).await;
            return;
        }
    };
    let result = actor.handle(cx, input).await;
    let ok = match result {
        Ok(outs) => match publish_outs(t, outs).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(message = "Failed to publish an actor's output; will retry.", actor = A::NAME, %error);
                false
            }
        },
        Err(ActorError::Transient(reason)) if d.attempt + 1 < retry.max_attempts => {
            tracing::warn!(message = "Transient failure; retrying.", actor = A::NAME, attempt = d.attempt + 1, %reason);
            cx.metrics.retries.with_label_values(&[A::NAME]).inc();
            // The wait happens in the broker or spool: this slot is free for the next delivery.
            let again = Publish { queue: A::QUEUE, body: &d.body, attempt: d.attempt + 1, reason: None, origin: None, trace: &d.trace };
            t.publish_delayed(again, retry.delay(d.attempt)).await.is_ok()
        }
        Err(ActorError::Transient(reason)) | Err(ActorError::Permanent(reason)) => dead_letter(t, cx, A::NAME, A::QUEUE, &d, &reason).await.is_ok(),
    };
    cx.metrics.stage_seconds.with_label_values(&[A::NAME]).observe(started.elapsed().as_secs_f64());
    tracing::debug!(message = "Handled.", actor = A::NAME, ok, ms = started.elapsed().as_millis() as u64);
    finish(d, ok).await;
}

async fn finish(d: Delivery, ok: bool) {
    let r = if ok { d.acker.ack().await } else { d.acker.requeue().await };
    if let Err(error) = r {
        tracing::warn!(message = "Failed to settle a delivery; the broker will redeliver it.", %error);
    }
}

/// Run an actor on the deliveries of its queue with up to `concurrency` in flight.
pub fn spawn<A: Actor>(actor: A, cx: NodeContext, t: Arc<dyn Transport>, mut rx: mpsc::Receiver<Delivery>, concurrency: usize, retry: RetryPolicy) -> tokio::task::JoinHandle<()> {
    let actor = Arc::new(actor);
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    tokio::spawn(async move {
        while let Some(d) = rx.recv().await {
            let Ok(permit) = sem.clone().acquire_owned().await else { return };
            let (actor, cx, t, retry) = (actor.clone(), cx.clone(), t.clone(), retry.clone());
            tokio::spawn(async move {
                process(actor.as_ref(), &cx, t.as_ref(), &retry, d).await;
                drop(permit);
            });
        }
    })
}
