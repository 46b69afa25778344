//! S3Outbox: polls `AS2/send/<station>/<partner>/` (with `test/` after the partner for test
//! partners) in the station's own bucket, as AS2 Gateway does:
//! - a file is picked up once its last modification is at least `pickup_age` old (15 s), queued
//!   as one new message, then deleted from the bucket;
//! - files under `<partner>/<sub>/` go together as one multi-attachment message once the
//!   subdirectory had no new or changed file for `steady` (2 min);
//! - a file that cannot be queued moves to `as2gateway/<station>/<partner>/failed/<time>/` and
//!   the station owner is told (an event on `edinode.events` and a log line).
//!
//! With several nodes polling, a Redis lease per (key, ETag) lets one node take each file, and
//! the Message-ID is derived from the bucket, key and ETag: a crash between queueing and
//! deleting re-finds the file, sees that Message-ID already queued, and only deletes it.

use crate::{as2_sender, event, outbound_intake, ActorError, NodeContext, ObjectInfo, Out, StationBucket};
use std::collections::BTreeMap;

/// One unit of pick-up: a single file, or a subdirectory's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub partner_as2: String,
    /// The prefix the batch lives under (for the failed/ move): `AS2/send/<st>/<p>/[test/]`.
    pub base: String,
    pub files: Vec<ObjectInfo>,
    /// Subdirectory name, for multi-file batches.
    pub sub: Option<String>,
}

/// Group a listing of `AS2/send/<station>/` into batches that are ripe at `now_ms`.
pub fn ripe_batches(station_as2: &str, listing: &[ObjectInfo], test_partners: &[String], now_ms: i64, pickup_age_ms: i64, steady_ms: i64) -> Vec<Batch> {
    let root = format!("AS2/send/{station_as2}/");
    let mut singles = Vec::new();
    let mut subs: BTreeMap<(String, String, String), Vec<ObjectInfo>> = BTreeMap::new();
    for o in listing {
        let Some(rest) = o.key.strip_prefix(&root) else { continue };
        if rest.ends_with('/') || o.key.contains("/.edinode-access-check-") {
            continue;
        }
        let mut parts: Vec<&str> = rest.split('/').collect();
        if parts.len() < 2 {
            continue; // a file directly under the station: no partner
        }
        let partner = parts.remove(0).to_string();
        let mut base = format!("{root}{partner}/");
        if test_partners.contains(&partner) {
            if parts.first() != Some(&"test") || parts.len() < 2 {
                continue; // test partners send from <partner>/test/
            }
            parts.remove(0);
            base.push_str("test/");
        }
        match parts.len() {
            1 => singles.push(Batch { partner_as2: partner, base, files: vec![o.clone()], sub: None }),
            _ => {
                let sub = parts[0].to_string();
                subs.entry((partner, base, sub)).or_default().push(o.clone());
            }
        }
    }
    let mut out: Vec<Batch> = singles.into_iter().filter(|b| now_ms - b.files[0].last_modified_ms >= pickup_age_ms).collect();
    for ((partner, base, sub), files) in subs {
        let newest = files.iter().map(|f| f.last_modified_ms).max().unwrap_or(now_ms);
        if now_ms - newest >= steady_ms {
            out.push(Batch { partner_as2: partner, base, files, sub: Some(sub) });
        }
    }
    out
}

/// The Message-ID for a batch: stable for the same objects (key + ETag), so a re-found batch is
/// recognised.
pub fn batch_message_id(bucket_id: &str, b: &Batch, node: &str) -> String {
    let mut h = openssl::sha::Sha256::new();
    h.update(bucket_id.as_bytes());
    for f in &b.files {
        h.update(f.key.as_bytes());
        h.update(b"\0");
        h.update(f.etag.as_bytes());
        h.update(b"\0");
        h.update(f.last_modified_ms.to_string().as_bytes());
        h.update(b"\0");
    }
    let _ = node;
    format!("<s3-{}@edinode>", hex::encode(&h.finish()[..16]))
}

fn file_name(key: &str) -> String {
    key.rsplit('/').next().unwrap_or(key).to_string()
}

/// Poll one station's outbox once; returns what to publish.
pub async fn poll(cx: &NodeContext, station_name: &str, bucket: &StationBucket, now_ms: i64) -> Result<Vec<Out>, String> {
    let Some(station) = cx.directory.stations.get(station_name) else { return Ok(vec![]) };
    let root = format!("AS2/send/{}/", station.as2_id);
    let listing = bucket.store.list(&root).await?;
    let partners: Vec<_> = cx.directory.partners.values().filter(|p| p.station == station_name).collect();
    let test_partners: Vec<String> = partners.iter().filter(|p| p.test).map(|p| p.as2_id.clone()).collect();
    let mut outs = Vec::new();
    for b in ripe_batches(&station.as2_id, &listing, &test_partners, now_ms, bucket.pickup_age_ms, bucket.steady_ms) {
        let mid = batch_message_id(&root, &b, &cx.node_id);
        // A lease per batch (several nodes poll the same bucket).
        let lease = format!("s3lease:{station_name}:{mid}");
        if cx.state.set_once(&lease, &cx.node_id, 120).await? != cx.node_id {
            continue;
        }
        match take(cx, station_name, bucket, &b, &mid, now_ms).await {
            Ok(mut o) => outs.append(&mut o),
            Err(reason) => {
                tracing::warn!(message = "S3 outbox file could not be queued; moved to failed/.", station = station_name, partner = %b.partner_as2, %reason);
                let failed = format!("as2gateway/{}/{}/{}failed/{}/", station.as2_id, b.partner_as2, if b.base.ends_with("test/") { "test/" } else { "" }, now_ms);
                for f in &b.files {
                    let rel = f.key.strip_prefix(&b.base).unwrap_or(&f.key);
                    if bucket.store.copy(&f.key, &format!("{failed}{rel}")).await.is_ok() {
                        let _ = bucket.store.delete(&f.key).await;
                    }
                }
                outs.push(event("s3.failed", "", station_name, &b.partner_as2, &mid, &format!("{reason}; moved to {failed}")));
            }
        }
        let _ = cx.state.delete(&lease).await;
    }
    Ok(outs)
}

/// Queue a batch (once) and delete its files.
async fn take(cx: &NodeContext, station_name: &str, bucket: &StationBucket, b: &Batch, mid: &str, now_ms: i64) -> Result<Vec<Out>, String> {
    let partner = cx
        .directory
        .partners
        .values()
        .find(|p| p.station == station_name && p.as2_id == b.partner_as2)
        .ok_or_else(|| format!("no partner {} for station {station_name}", b.partner_as2))?;
    let mut outs = Vec::new();
    let queued_key = format!("s3queued:{mid}");
    if cx.state.get(&queued_key).await?.is_none() {
        let mut docs = Vec::new();
        for f in &b.files {
            let data = bucket.store.get(&f.key).await?;
            docs.push((file_name(&f.key), guess_type(&f.key).to_string(), data));
        }
        let send = outbound_intake::new_send(cx, station_name, &partner.name, Some(mid.to_string()), docs, "s3", now_ms).await.map_err(|e: ActorError| e.to_string())?;
        outs.push(as2_sender::submit(cx, &send).await.map_err(|e| e.to_string())?);
        // Recorded before the files are deleted: a crash in between finds the batch again
        // and only deletes it.
        cx.state.set_once(&queued_key, &send.id, 30 * 24 * 3600).await?;
        tracing::info!(message = "S3 outbox batch queued.", station = station_name, partner = %partner.name, files = b.files.len(), id = %send.id);
    }
    for f in &b.files {
        // Queued already: a file that cannot be deleted is found again and only deleted then.
        if let Err(error) = bucket.store.delete(&f.key).await {
            tracing::warn!(message = "S3 outbox file queued but not deleted; will retry the delete.", key = %f.key, %error);
        }
    }
    Ok(outs)
}

fn guess_type(key: &str) -> &'static str {
    let k = key.to_ascii_lowercase();
    if k.ends_with(".edi") || k.ends_with(".x12") {
        "application/edi-x12"
    } else if k.ends_with(".edifact") || k.ends_with(".edf") {
        "application/edifact"
    } else if k.ends_with(".xml") {
        "application/xml"
    } else if k.ends_with(".pdf") {
        "application/pdf"
    } else if k.ends_with(".txt") || k.ends_with(".csv") {
        "text/plain"
    } else {
        "application/octet-stream"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(key: &str, t: i64) -> ObjectInfo {
        ObjectInfo { key: key.into(), size: 1, last_modified_ms: t, etag: "e".into() }
    }

    #[test]
    fn single_files_wait_for_the_pickup_age_and_subdirectories_for_steady_state() {
        let now = 1_000_000;
        let l = vec![
            o("AS2/send/ST/P/old.edi", now - 16_000),
            o("AS2/send/ST/P/young.edi", now - 5_000),
            o("AS2/send/ST/P/batch/a.edi", now - 200_000),
            o("AS2/send/ST/P/batch/b.edi", now - 130_000),
            o("AS2/send/ST/P/busy/a.edi", now - 200_000),
            o("AS2/send/ST/P/busy/b.edi", now - 60_000),
            o("AS2/send/ST/T/test/t.edi", now - 20_000),
            o("AS2/send/ST/T/not-test.edi", now - 20_000),
            o("AS2/send/ST/loose.edi", now - 20_000),
        ];
        let b = ripe_batches("ST", &l, &["T".to_string()], now, 15_000, 120_000);
        let keys: Vec<Vec<&str>> = b.iter().map(|b| b.files.iter().map(|f| f.key.as_str()).collect()).collect();
        assert_eq!(keys, vec![vec!["AS2/send/ST/P/old.edi"], vec!["AS2/send/ST/T/test/t.edi"], vec!["AS2/send/ST/P/batch/a.edi", "AS2/send/ST/P/batch/b.edi"]]);
        assert_eq!(b[1].base, "AS2/send/ST/T/test/");
        assert_eq!(b[2].sub.as_deref(), Some("batch"));
    }

    #[test]
    fn message_ids_follow_key_and_etag() {
        let b1 = Batch { partner_as2: "P".into(), base: "x/".into(), files: vec![o("k", 1)], sub: None };
        let mut b2 = b1.clone();
        assert_eq!(batch_message_id("r", &b1, "n1"), batch_message_id("r", &b2, "n2"));
        b2.files[0].etag = "other".into();
        assert_ne!(batch_message_id("r", &b1, "n"), batch_message_id("r", &b2, "n"));
    }
}
