//! Loops that are not queue-of-envelopes actors: the OutboundIntake on `edinode.outbound`
//! (documents with routing headers from an enterprise bus) and the MDN deadline monitor.

use crate::runner::publish_outs;
use crate::transport::{Publish, Transport};
use edinode_actors::{as2_sender, event, outbound_intake, queues, NodeContext};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub async fn run(cx: NodeContext, t: Arc<dyn Transport>, mut rx: mpsc::Receiver<crate::transport::Delivery>) {
    while let Some(d) = rx.recv().await {
        let outcome = match outbound_intake::to_send(&cx, &d.headers, d.body.clone(), crate::storage::now_ms()).await {
            Ok(send) => match as2_sender::submit(&cx, &send).await {
                Ok(out) => publish_outs(t.as_ref(), vec![out]).await.map_err(|e| (true, e.to_string())),
                Err(e) => Err((true, e.to_string())),
            },
            Err(reason) => Err((false, reason)),
        };
        let ok = match outcome {
            Ok(()) => true,
            Err((true, error)) => {
                tracing::warn!(message = "Could not queue an outbound document; will retry.", %error);
                tokio::time::sleep(Duration::from_secs(1)).await;
                false
            }
            Err((false, reason)) => {
                // Not sendable as given: dead-letter it with the reason and tell the owner.
                tracing::warn!(message = "Outbound document refused.", %reason);
                let get = |n: &str| d.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone()).unwrap_or_default();
                let ev = event("outbound.rejected", "", &get("station"), &get("partner"), &get("message-id"), &reason);
                let _ = publish_outs(t.as_ref(), vec![ev]).await;
                cx.metrics.dead_letters.with_label_values(&["outbound_intake"]).inc();
                t.publish(Publish { queue: queues::DEAD, body: &d.body, attempt: d.attempt + 1, reason: Some(&reason), origin: Some(queues::OUTBOUND), trace: &[] }).await.is_ok()
            }
        };
        let r = if ok { d.acker.ack().await } else { d.acker.requeue().await };
        if let Err(error) = r {
            tracing::warn!(message = "Failed to settle an outbound delivery.", %error);
        }
    }
}

pub async fn monitor_mdn_deadlines(cx: NodeContext, t: Arc<dyn Transport>) {
    loop {
        match as2_sender::expire_mdn_deadlines(&cx).await {
            Ok(outs) if !outs.is_empty() => {
                if let Err(error) = publish_outs(t.as_ref(), outs).await {
                    tracing::warn!(message = "Could not publish MDN deadline outcomes.", %error);
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(message = "MDN deadline check failed.", %error),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn poll_s3_outbox(cx: NodeContext, t: Arc<dyn Transport>, station: String, bucket: edinode_actors::StationBucket) {
    loop {
        match edinode_actors::s3_outbox::poll(&cx, &station, &bucket, crate::storage::now_ms()).await {
            Ok(outs) if !outs.is_empty() => {
                if let Err(error) = publish_outs(t.as_ref(), outs).await {
                    tracing::warn!(message = "Could not publish S3 outbox work.", %error, station = %station);
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(message = "S3 outbox poll failed.", %error, station = %station),
        }
        tokio::time::sleep(Duration::from_millis(bucket.poll_ms)).await;
    }
}
