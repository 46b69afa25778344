//! S3Outbox: polls `AS2/send/<station>/<partner>/` (with `test/` after the partner for test
//! partners) in the station's own bucket, as AS2 Gateway does:
//! - a file is picked up once its last modification is at least `pickup_age` old (15 s), queued
//!   as one new message, then deleted from the bucket;
//! - files under `<partner>/<sub>/` go together as one multi-attachment message once the
//!   subdirectory had no new or changed file for `steady` (2 min);
//! - a file that cannot be queued moves to `as2gateway/<station>/<partner>/[test/]failed/<time>/`
//!   and the station owner is told (an `s3.failed` event and a log line); so does a file in the
//!   wrong place for its partner (a test partner's file outside `test/`, or `test/` under a
//!   production partner);
//! - a file that can be neither queued nor moved (the keys lack s3:GetObject, or PutObject for
//!   failed/) is reported once, as it is, and left in place; the failure is remembered in the
//!   state store under the batch's Message-ID (keys, ETags, modification times), so polling does
//!   not repeat it, and a re-uploaded file is tried afresh.
//!
//! AWS lists LastModified in whole seconds (truncated), so a whole-second time is taken as the
//! end of that second: nothing is picked up before `pickup_age` has really passed.
//!
//! With several nodes polling, a Redis lease per (key, ETag) lets one node take each file, and
//! the Message-ID is derived from the bucket, key and ETag: a crash between queueing and
//! deleting re-finds the file, sees that Message-ID already queued, and only deletes it.

use crate::{as2_sender, event, outbound_intake, ActorError, NodeContext, ObjectError, ObjectInfo, Out, StationBucket};
use std::collections::BTreeMap;
use edinode_proto::envelope::Payload;

/// How long a batch that could be neither queued nor moved stays remembered (a changed file is a
/// new batch at once).
const FAILED_TTL_SECS: u64 = 30 * 24 * 3600;

/// One unit of pick-up: a single file, or a subdirectory's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub partner_as2: String,
    /// The prefix the batch lives under (for the failed/ move): `AS2/send/<st>/<p>/[test/]`.
    pub base: String,
    pub files: Vec<ObjectInfo>,
    /// Subdirectory name, for multi-file batches.
    pub sub: Option<String>,
    /// The partner is a test partner (its failed/ folder is under `test/`).
    pub test: bool,
    /// Why this file is in the wrong place for its partner; such a batch is reported and moved
    /// to failed/, never sent.
    pub misplaced: Option<String>,
}

/// The latest moment an object listed with `last_modified_ms` may have been written: a
/// whole-second time (AWS truncates to seconds) stands for any moment of that second.
pub(crate) fn modified_by(last_modified_ms: i64) -> i64 {
    if last_modified_ms % 1000 == 0 { last_modified_ms + 999 } else { last_modified_ms }
}

/// Group a listing of `AS2/send/<station>/` into batches that are ripe at `now_ms`.
/// `test_partner(as2_id)` says whether a partner of this station is a test partner (`None`:
/// no such partner; its files are grouped as a production partner's and fail when taken).
pub(crate) fn ripe_batches(station_as2: &str, listing: &[ObjectInfo], test_partner: impl Fn(&str) -> Option<bool>, now_ms: i64, pickup_age_ms: i64, steady_ms: i64) -> Vec<Batch> {
    let root = format!("AS2/send/{station_as2}/");
    let mut singles = Vec::new();
    let mut subs: BTreeMap<(String, String, String), Vec<ObjectInfo>> = BTreeMap::new();
    let mut tests: BTreeMap<String, bool> = BTreeMap::new();
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
        let test = test_partner(&partner) == Some(true);
        tests.insert(partner.clone(), test);
        let mut base = format!("{root}{partner}/");
        let under_test = parts.first() == Some(&"test") && parts.len() >= 2;
        let misplaced = match (test, under_test, test_partner(&partner).is_some()) {
            (true, false, _) => Some(format!("{partner} is a test partner: its files go under {root}{partner}/test/")),
            (false, true, true) => Some(format!("{partner} is not a test partner: test/ is only for test partners; its files go under {root}{partner}/")),
            _ => None,
        };
        if misplaced.is_some() {
            // Reported one file at a time, once it is as old as a single file must be.
            singles.push(Batch { partner_as2: partner, base, files: vec![o.clone()], sub: None, test, misplaced });
            continue;
        }
        if test {
            parts.remove(0);
            base.push_str("test/");
        }
        match parts.len() {
            1 => singles.push(Batch { partner_as2: partner, base, files: vec![o.clone()], sub: None, test, misplaced: None }),
            _ => {
                let sub = parts[0].to_string();
                subs.entry((partner, base, sub)).or_default().push(o.clone());
            }
        }
    }
    let mut out: Vec<Batch> = singles.into_iter().filter(|b| now_ms - modified_by(b.files[0].last_modified_ms) >= pickup_age_ms).collect();
    for ((partner, base, sub), files) in subs {
        let newest = files.iter().map(|f| modified_by(f.last_modified_ms)).max().unwrap_or(now_ms);
        if now_ms - newest >= steady_ms {
            let test = tests.get(&partner).copied().unwrap_or(false);
            out.push(Batch { partner_as2: partner, base, files, sub: Some(sub), test, misplaced: None });
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

/// Why a batch was not queued.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NotTaken {
    /// Worth trying at the next poll (network, storage, broker).
    Transient(String),
    /// Will not work as it is (unknown partner, unreadable file, misplaced): report and move it.
    Refused(String),
    /// The file went away since the listing (another node, the customer).
    Gone,
}

fn from_object(e: ObjectError) -> NotTaken {
    match e {
        ObjectError::NotFound(_) => NotTaken::Gone,
        ObjectError::Denied(d) => NotTaken::Refused(d),
        ObjectError::Other(d) => NotTaken::Transient(d),
    }
}

fn from_actor(e: ActorError) -> NotTaken {
    match e {
        ActorError::Transient(d) => NotTaken::Transient(d),
        ActorError::Permanent(d) => NotTaken::Refused(d),
    }
}

/// Where a refused batch ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Moved {
    /// Under failed/ and deleted from AS2/send/.
    ToFailed(String),
    /// Copied to failed/, but the originals could not be deleted (reason).
    CopiedNotDeleted(String, String),
    /// Not copied (reason): left in place.
    LeftInPlace(String),
    /// A transient failure: try again at the next poll.
    Retry(String),
}

/// Poll one station's outbox once; returns what to publish.
/// Publishes outputs durably (the node's transport, with confirms) and says whether it did.
pub(crate) type Publisher<'a> = &'a (dyn Fn(Vec<Out>) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> + Sync);

/// One poll of a station's outbox. A batch is published through `publish` before it is marked
/// queued and its files deleted, so a broker that refuses it leaves the files where they are.
/// Returns the outputs left to publish (events).
pub async fn poll(cx: &NodeContext, station_name: &str, bucket: &StationBucket, now_ms: i64, publish: Publisher<'_>) -> Result<Vec<Out>, String> {
    let Some(station) = cx.directory.stations.get(station_name) else { return Ok(vec![]) };
    let root = format!("AS2/send/{}/", station.as2_id);
    let listing = bucket.store.list(&root).await.map_err(|e| e.to_string())?;
    let partners: BTreeMap<&str, bool> = cx.directory.partners.values().filter(|p| p.station == station_name).map(|p| (p.as2_id.as_str(), p.test)).collect();
    let mut outs = Vec::new();
    for b in ripe_batches(&station.as2_id, &listing, |p| partners.get(p).copied(), now_ms, bucket.pickup_age_ms, bucket.steady_ms) {
        let mid = batch_message_id(&root, &b, &cx.node_id);
        // Reported before, as it is: not again until it changes (a new ETag or time is a new id).
        let failed_key = format!("s3failed:{mid}");
        if cx.state.get(&failed_key).await.map_err(|e| e.to_string())?.is_some() {
            continue;
        }
        // A lease per batch (several nodes poll the same bucket).
        let lease = format!("s3lease:{station_name}:{mid}");
        if cx.state.set_once(&lease, &cx.node_id, 120).await.map_err(|e| e.to_string())? != cx.node_id {
            continue;
        }
        let taken = match &b.misplaced {
            Some(why) => Err(NotTaken::Refused(why.clone())),
            None => take(cx, station_name, bucket, &b, &mid, now_ms, publish).await,
        };
        let keys = b.files.iter().map(|f| f.key.as_str()).collect::<Vec<_>>().join(", ");
        match taken {
            Ok(mut o) => outs.append(&mut o),
            Err(NotTaken::Gone) => {}
            Err(NotTaken::Transient(reason)) => {
                tracing::warn!(message = "S3 outbox file not queued; will try again at the next poll.", station = station_name, partner = %b.partner_as2, files = %keys, %reason);
            }
            Err(NotTaken::Refused(reason)) => {
                let failed = format!("as2gateway/{}/{}/{}failed/{}/", station.as2_id, b.partner_as2, if b.test { "test/" } else { "" }, now_ms);
                let (detail, remember) = match move_to_failed(bucket, &b, &failed).await {
                    Moved::ToFailed(to) => {
                        tracing::warn!(message = "S3 outbox file could not be queued; moved to failed/.", station = station_name, partner = %b.partner_as2, files = %keys, %reason, to = %to);
                        (format!("{reason}; moved to {to}"), false)
                    }
                    Moved::CopiedNotDeleted(to, error) => {
                        tracing::error!(message = "S3 outbox file could not be queued; copied to failed/ but not removed from the outbox (reported once).", station = station_name, partner = %b.partner_as2, files = %keys, %reason, to = %to, %error);
                        (format!("{reason}; copied to {to}, but not removed from the outbox: {error}"), true)
                    }
                    Moved::LeftInPlace(error) => {
                        tracing::error!(message = "S3 outbox file could not be queued nor moved to failed/; left in place (reported once).", station = station_name, partner = %b.partner_as2, files = %keys, %reason, %error);
                        (format!("{reason}; not moved to failed/ ({error}); left in place"), true)
                    }
                    Moved::Retry(error) => {
                        tracing::warn!(message = "S3 outbox file could not be queued; moving it to failed/ failed for now, will try again.", station = station_name, partner = %b.partner_as2, files = %keys, %reason, %error);
                        let _ = cx.state.delete(&lease).await;
                        continue;
                    }
                };
                if remember {
                    // Before the event: a crash in between reports nothing rather than twice.
                    cx.state.set_once(&failed_key, &detail, FAILED_TTL_SECS).await.map_err(|e| e.to_string())?;
                }
                outs.push(event("s3.failed", "", station_name, &b.partner_as2, &mid, &format!("{keys}: {detail}")));
            }
        }
        let _ = cx.state.delete(&lease).await;
    }
    Ok(outs)
}

/// Copy a refused batch under `failed` (keeping its path below the partner), then delete the
/// originals. A copy that fails removes the copies already made.
async fn move_to_failed(bucket: &StationBucket, b: &Batch, failed: &str) -> Moved {
    let mut copied: Vec<String> = Vec::new();
    for f in &b.files {
        let rel = f.key.strip_prefix(&b.base).unwrap_or(&f.key);
        let to = format!("{failed}{rel}");
        if let Err(e) = bucket.store.copy(&f.key, &to).await {
            for c in &copied {
                let _ = bucket.store.delete(c).await;
            }
            return match e {
                ObjectError::Other(d) => Moved::Retry(d),
                // NotFound: the source went away meanwhile; say so rather than claim a move.
                ObjectError::Denied(d) | ObjectError::NotFound(d) => Moved::LeftInPlace(d),
            };
        }
        copied.push(to);
    }
    let mut undeleted = Vec::new();
    for f in &b.files {
        if let Err(e) = bucket.store.delete(&f.key).await {
            undeleted.push(e.to_string());
        }
    }
    if undeleted.is_empty() { Moved::ToFailed(failed.to_string()) } else { Moved::CopiedNotDeleted(failed.to_string(), undeleted.join("; ")) }
}

/// Queue a batch (once) and delete its files.
async fn take(cx: &NodeContext, station_name: &str, bucket: &StationBucket, b: &Batch, mid: &str, now_ms: i64, publish: Publisher<'_>) -> Result<Vec<Out>, NotTaken> {
    let partner = cx
        .directory
        .partners
        .values()
        .find(|p| p.station == station_name && p.as2_id == b.partner_as2)
        .ok_or_else(|| NotTaken::Refused(format!("no partner {} for station {station_name}", b.partner_as2)))?;
    let queued_key = format!("s3queued:{mid}");
    if cx.state.get(&queued_key).await.map_err(|e| NotTaken::Transient(e.to_string()))?.is_none() {
        // Each file is copied as it is read: a large document never sits in memory.
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut docs = Vec::new();
        for (n, f) in b.files.iter().enumerate() {
            let mut reader = bucket.store.reader(&f.key).await.map_err(from_object)?;
            let data = outbound_intake::copy_document(cx, &id, n, reader.as_mut()).await.map_err(|e| if e.is_not_found() { NotTaken::Gone } else { NotTaken::Transient(e.to_string()) })?;
            docs.push(Payload { filename: file_name(&f.key), content_type: guess_type(&f.key).to_string(), data });
        }
        let send = outbound_intake::send_of(cx, id, station_name, &partner.name, Some(mid.to_string()), docs, "s3", now_ms);
        // Durably queued before anything says so: a refused publish leaves the files in place
        // (tried again at the next poll).
        publish(vec![as2_sender::submit(cx, &send).await.map_err(from_actor)?]).await.map_err(NotTaken::Transient)?;
        // Recorded before the files are deleted: a crash in between finds the batch again
        // and only deletes it.
        cx.state.set_once(&queued_key, &send.id, 30 * 24 * 3600).await.map_err(|e| NotTaken::Transient(e.to_string()))?;
        tracing::info!(message = "S3 outbox batch queued.", station = station_name, partner = %partner.name, files = b.files.len(), id = %send.id);
    }
    for f in &b.files {
        // Queued already: a file that cannot be deleted is found again and only deleted then.
        if let Err(error) = bucket.store.delete(&f.key).await {
            tracing::warn!(message = "S3 outbox file queued but not deleted; will retry the delete.", key = %f.key, %error);
        }
    }
    Ok(Vec::new())
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

    fn mode(p: &str) -> Option<bool> {
        match p {
            "P" => Some(false),
            "T" => Some(true),
            _ => None,
        }
    }

    fn keys(b: &[Batch]) -> Vec<Vec<&str>> {
        b.iter().map(|b| b.files.iter().map(|f| f.key.as_str()).collect()).collect()
    }

    #[test]
    fn single_files_wait_for_the_pickup_age_and_subdirectories_for_steady_state() {
        let now = 1_000_001;
        let l = vec![
            o("AS2/send/ST/P/old.edi", now - 16_000),
            o("AS2/send/ST/P/young.edi", now - 5_000),
            o("AS2/send/ST/P/batch/a.edi", now - 200_000),
            o("AS2/send/ST/P/batch/b.edi", now - 130_000),
            o("AS2/send/ST/P/busy/a.edi", now - 200_000),
            o("AS2/send/ST/P/busy/b.edi", now - 60_000),
            o("AS2/send/ST/T/test/t.edi", now - 20_000),
            o("AS2/send/ST/loose.edi", now - 20_000),
        ];
        let b = ripe_batches("ST", &l, mode, now, 15_000, 120_000);
        assert_eq!(keys(&b), vec![vec!["AS2/send/ST/P/old.edi"], vec!["AS2/send/ST/T/test/t.edi"], vec!["AS2/send/ST/P/batch/a.edi", "AS2/send/ST/P/batch/b.edi"]]);
        assert_eq!(b[1].base, "AS2/send/ST/T/test/");
        assert!(b[1].test && !b[0].test);
        assert_eq!(b[2].sub.as_deref(), Some("batch"));
        assert!(b.iter().all(|b| b.misplaced.is_none()));
    }

    #[test]
    fn whole_second_times_count_from_the_end_of_their_second() {
        // Written at 10.900 s, listed by AWS as 10 s: 1 s of age is reached at 11.900 s only.
        let l = vec![o("AS2/send/ST/P/a.edi", 10_000)];
        assert!(ripe_batches("ST", &l, mode, 10_999, 1_000, 0).is_empty());
        assert!(ripe_batches("ST", &l, mode, 11_998, 1_000, 0).is_empty());
        assert_eq!(ripe_batches("ST", &l, mode, 11_999, 1_000, 0).len(), 1);
        // Millisecond times (s3s-fs, MinIO) are taken as they are.
        let l = vec![o("AS2/send/ST/P/a.edi", 10_900)];
        assert!(ripe_batches("ST", &l, mode, 11_899, 1_000, 0).is_empty());
        assert_eq!(ripe_batches("ST", &l, mode, 11_900, 1_000, 0).len(), 1);
        // The same for a subdirectory's steady time.
        let l = vec![o("AS2/send/ST/P/sub/a.edi", 10_000), o("AS2/send/ST/P/sub/b.edi", 9_500)];
        assert!(ripe_batches("ST", &l, mode, 11_998, 0, 1_000).is_empty());
        assert_eq!(ripe_batches("ST", &l, mode, 11_999, 0, 1_000).len(), 1);
    }

    #[test]
    fn files_in_the_wrong_place_for_their_partner_are_batches_marked_misplaced() {
        let now = 100_001;
        let l = vec![o("AS2/send/ST/T/not-test.edi", 1), o("AS2/send/ST/T/sub/x.edi", 1), o("AS2/send/ST/P/test/p.edi", 1), o("AS2/send/ST/U/test/u.edi", 1)];
        let b = ripe_batches("ST", &l, mode, now, 15_000, 15_000);
        assert_eq!(keys(&b), vec![vec!["AS2/send/ST/T/not-test.edi"], vec!["AS2/send/ST/T/sub/x.edi"], vec!["AS2/send/ST/P/test/p.edi"], vec!["AS2/send/ST/U/test/u.edi"]]);
        assert!(b[0].misplaced.as_deref().unwrap().contains("T is a test partner"), "{:?}", b[0].misplaced);
        assert!(b[0].test && b[1].test);
        assert!(b[2].misplaced.as_deref().unwrap().contains("P is not a test partner"));
        // An unknown partner is not judged here: it fails when taken.
        assert_eq!((b[3].misplaced.as_ref(), b[3].sub.as_deref()), (None, Some("test")));
    }

    #[test]
    fn message_ids_follow_key_and_etag() {
        let b1 = Batch { partner_as2: "P".into(), base: "x/".into(), files: vec![o("k", 1)], sub: None, test: false, misplaced: None };
        let mut b2 = b1.clone();
        assert_eq!(batch_message_id("r", &b1, "n1"), batch_message_id("r", &b2, "n2"));
        b2.files[0].etag = "other".into();
        assert_ne!(batch_message_id("r", &b1, "n"), batch_message_id("r", &b2, "n"));
    }
}
