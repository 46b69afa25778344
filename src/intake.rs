//! Loops that consume no queue: the MDN deadline monitor and the S3 outbox pollers.

use crate::runner::publish_outs;
use crate::transport::Transport;
use edinode_actors::{as2_sender, NodeContext};
use std::sync::Arc;
use std::time::Duration;

pub async fn monitor_mdn_deadlines(cx: NodeContext, t: Arc<dyn Transport>) {
    loop {
        match as2_sender::expire_mdn_deadlines(&cx.current()).await {
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
        let publish = |outs: Vec<edinode_actors::Out>| -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
            let t = t.clone();
            Box::pin(async move { publish_outs(t.as_ref(), outs).await.map_err(|e| e.to_string()) })
        };
        match edinode_actors::s3_outbox::poll(&cx.current(), &station, &bucket, crate::storage::now_ms(), &publish).await {
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
