//! The blob sweeper: what the stages do not remove when a message reaches its outcome goes
//! here, by age. Working copies (`work/`) of messages that never reached an outcome go after
//! `[blobs] orphan_hours`; raw captures kept after a failure (`raw/`), receipts (`receipts/`)
//! and outbound documents (`outbound/`) after `retention_days`. AS4 messages waiting to be
//! pulled (`as4/`) are never swept. Every node runs the loop; each hour one node (whoever
//! claims the hour in the state store first) sweeps, so a bucket is listed once an hour.

use super::blobs::BlobSettings;
use edinode_actors::{BlobStore, NodeContext, StateStore, StorageError};
use std::time::Duration;

const HOUR_MS: i64 = 3600 * 1000;

/// Blob key prefixes to sweep and the age (ms) past which their blobs go.
pub fn plan(s: &BlobSettings) -> Vec<(&'static str, i64)> {
    let mut plan = Vec::new();
    if s.orphan_hours > 0 {
        plan.push(("work/", s.orphan_hours as i64 * HOUR_MS));
    }
    if s.retention_days > 0 {
        let age = s.retention_days as i64 * 24 * HOUR_MS;
        plan.extend([("raw/", age), ("receipts/", age), ("outbound/", age)]);
    }
    plan
}

/// Sweep at `now_ms` if this node claims the current hour; None when another node has it.
pub async fn sweep_once(blobs: &dyn BlobStore, state: &dyn StateStore, node_id: &str, plan: &[(&'static str, i64)], now_ms: i64) -> Result<Option<Vec<(&'static str, usize)>>, StorageError> {
    let hour = now_ms / HOUR_MS;
    if state.set_once(&format!("blobsweep:{hour}"), node_id, 2 * 3600).await? != node_id {
        return Ok(None);
    }
    let mut removed = Vec::new();
    for (prefix, age) in plan {
        removed.push((*prefix, blobs.delete_older(prefix, now_ms - age).await?));
    }
    Ok(Some(removed))
}

/// The sweeper loop of a node (checks every five minutes; sweeps at most once an hour).
pub async fn run(cx: NodeContext, s: BlobSettings) {
    let plan = plan(&s);
    if plan.is_empty() {
        return;
    }
    loop {
        match sweep_once(&*cx.blobs, &*cx.state, &cx.node_id, &plan, super::now_ms()).await {
            Ok(Some(removed)) if removed.iter().any(|(_, n)| *n > 0) => {
                tracing::info!(message = "Swept blobs past their retention.", removed = ?removed);
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(message = "Failed to sweep blobs; trying again later.", %error),
        }
        tokio::time::sleep(Duration::from_secs(300)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{FsBlobStore, LocalState};

    fn age(path: &std::path::Path, hours: u64) {
        let t = std::time::SystemTime::now() - Duration::from_secs(hours * 3600);
        std::fs::File::options().write(true).open(path).unwrap().set_modified(t).unwrap();
    }

    #[tokio::test]
    async fn old_blobs_go_by_prefix_and_one_node_sweeps_an_hour() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = FsBlobStore::new(&dir.path().join("blobs"), false).unwrap();
        let state = LocalState::open(&dir.path().join("state.jsonl"), false).unwrap();
        for k in ["work/old/layer0", "work/new/layer0", "raw/failed", "raw/recent", "receipts/a.mdn", "outbound/x/send", "as4/um/abc"] {
            blobs.put(k, b"x").await.unwrap();
        }
        age(&dir.path().join("blobs/work/old/layer0"), 30);
        age(&dir.path().join("blobs/raw/failed"), 24 * 31);
        age(&dir.path().join("blobs/receipts/a.mdn"), 24 * 31);
        age(&dir.path().join("blobs/outbound/x/send"), 24 * 31);
        age(&dir.path().join("blobs/as4/um/abc"), 24 * 365);
        let s: BlobSettings = serde_json::from_value(serde_json::json!({
            "backend": "fs", "dir": "", "bucket": "", "prefix": "", "region": "", "endpoint": "", "access_key": "", "secret_key": "",
            "retention_days": 30, "orphan_hours": 24
        }))
        .unwrap();
        // A folder just made for a blob about to be written (nothing old in it) stays.
        std::fs::create_dir_all(dir.path().join("blobs/outbound/fresh")).unwrap();
        let now = crate::storage::now_ms();
        let removed = sweep_once(&blobs, &state, "node-a", &plan(&s), now).await.unwrap().unwrap();
        assert_eq!(removed, [("work/", 1), ("raw/", 1), ("receipts/", 1), ("outbound/", 1)]);
        for gone in ["work/old/layer0", "raw/failed", "receipts/a.mdn", "outbound/x/send"] {
            assert!(blobs.get(gone).await.is_err(), "{gone} swept");
        }
        for kept in ["work/new/layer0", "raw/recent", "as4/um/abc"] {
            assert!(blobs.get(kept).await.is_ok(), "{kept} kept");
        }
        assert!(!dir.path().join("blobs/work/old").exists(), "emptied folders go too");
        assert!(dir.path().join("blobs/outbound/fresh").exists(), "a new, empty folder is left to its writer");
        // Another node in the same hour leaves it to the first.
        assert_eq!(sweep_once(&blobs, &state, "node-b", &plan(&s), now).await.unwrap(), None);
    }
}
