//! What `check-config` says about the backing services: where blobs go (refusing an unusable
//! `[blobs]` section) and, when Redis answers, whether it keeps its data across a restart.

use super::{blobs, RedisState};
use crate::config::Settings;
use edinode_actors::{BlobStore, StateStore};
use std::time::Duration;

/// Lines to print; Err names the setting that makes the configuration unusable.
pub fn backing_services(s: &Settings) -> Result<Vec<String>, String> {
    s.blobs.validate()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    Ok(rt.block_on(async {
        let mut lines = Vec::new();
        let blobs = s.blobs.describe(&s.node.data_dir);
        if s.blobs.backend == blobs::BlobBackend::S3 {
            let answer = match tokio::time::timeout(Duration::from_secs(5), async {
                let store = super::blob_s3::S3BlobStore::new(&s.blobs.s3()?, &s.blobs.prefix).await.map_err(|e| e.to_string())?;
                store.ping().await.map_err(|e| e.to_string())
            })
            .await
            {
                Ok(Ok(())) => "answers".to_string(),
                Ok(Err(e)) => format!("not reachable now: {e}"),
                Err(_) => "not reachable now: no answer within 5 s".to_string(),
            };
            lines.push(format!("blobs: {blobs} ({answer})"));
        } else {
            lines.push(format!("blobs: {blobs}"));
        }
        if s.redis.url.is_empty() {
            lines.push("state: embedded (append-only file under node.data_dir)".into());
            return lines;
        }
        match tokio::time::timeout(Duration::from_secs(3), RedisState::connect(&s.redis.url, &s.redis.prefix)).await {
            Ok(Ok(redis)) => {
                let p = redis.persistence().await;
                match p.at_risk() {
                    None => lines.push("redis: persistence logged (AOF): state survives a Redis restart".into()),
                    Some(risk) => lines.push(format!("warning: redis: persistence {}: {risk}; turn on AOF (appendonly yes)", p.name())),
                }
            }
            Ok(Err(e)) => lines.push(format!("redis: not reachable now ({e}); persistence not checked")),
            Err(_) => lines.push("redis: not reachable now (no answer within 3 s); persistence not checked".into()),
        }
        lines
    }))
}
