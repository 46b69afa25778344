//! S3BlobStore (the `[blobs] backend = "s3"` store) against an in-process S3 server (s3s-fs):
//! small blobs are one PutObject, large ones stream as multipart uploads that are visible only
//! once finished and aborted when the writer is dropped unfinished; delete_prefix removes a
//! message's working copies and nothing beside them.

use crate::common::s3server;
use crate::common::wait_for_async;

use edinode::storage::blob_s3::S3BlobStore;
use edinode_actors::BlobStore;
use s3server::{Policy, TestS3};

const MIB: usize = 1024 * 1024;

async fn setup() -> (TestS3, S3BlobStore) {
    let s3 = TestS3::start(vec![("blobs", "blobs-secret", Policy::full())]).await;
    let store = S3BlobStore::new(&s3.settings("blobs"), "edinode").await.unwrap().with_part_size(5 * MIB);
    (s3, store)
}

/// Files s3s-fs keeps for multipart uploads in progress (`.upload_id-*` in its root).
fn uploads_in_progress(s3: &TestS3) -> usize {
    std::fs::read_dir(s3.dir.path()).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with(".upload_id-")).count()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn small_blobs_round_trip_under_the_prefix() {
    let (s3, store) = setup().await;
    store.put_parts("raw/abc", &[b"AS2-From: a\r\n\r\n", b"body"]).await.unwrap();
    assert_eq!(std::fs::read(s3.path("edinode/raw/abc")).unwrap(), b"AS2-From: a\r\n\r\nbody");
    assert_eq!(store.get("raw/abc").await.unwrap(), b"AS2-From: a\r\n\r\nbody");
    store.delete("raw/abc").await.unwrap();
    store.delete("raw/abc").await.unwrap();
    let missing = store.get("raw/abc").await.unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
    let missing = missing.to_string();
    assert!(missing.contains("edinode/raw/abc") && missing.contains("no such key"), "{missing}");
    assert!(store.put("../escape", b"x").await.is_err());
    assert_eq!(uploads_in_progress(&s3), 0, "no multipart upload for a small blob");
}

#[tokio::test]
async fn a_large_blob_streams_as_a_multipart_upload_visible_once_finished() {
    let (s3, store) = setup().await;
    let data = pattern(12 * MIB + 12345);
    let mut w = store.writer("work/m1/layer0").await.unwrap();
    for chunk in data.chunks(64 * 1024) {
        w.write(chunk).await.unwrap();
    }
    // Two parts are up, the third is in the buffer: nothing under the key yet.
    assert!(uploads_in_progress(&s3) > 0, "parts went up while writing");
    assert!(!s3.path("edinode/work/m1/layer0").exists());
    assert_eq!(w.finish().await.unwrap(), data.len() as u64);
    assert_eq!(store.get("work/m1/layer0").await.unwrap(), data);
    assert_eq!(uploads_in_progress(&s3), 0);

    // put_parts of a large blob goes the same way.
    store.put_parts("work/m1/decrypted", &[&data[..MIB], &data[MIB..]]).await.unwrap();
    assert_eq!(store.get("work/m1/decrypted").await.unwrap(), data);
}

#[tokio::test]
async fn a_writer_dropped_unfinished_leaves_nothing_behind() {
    let (s3, store) = setup().await;
    let mut w = store.writer("work/cut/layer0").await.unwrap();
    w.write(&pattern(11 * MIB)).await.unwrap();
    assert!(uploads_in_progress(&s3) > 0);
    drop(w);
    // The abort runs on the runtime.
    wait_for_async(10, "the upload aborted", || async { (uploads_in_progress(&s3) == 0).then_some(()) }).await;
    assert!(!s3.path("edinode/work/cut/layer0").exists());
    assert!(store.get("work/cut/layer0").await.is_err());

    // A small writer dropped unfinished never created anything.
    let mut w = store.writer("work/cut/small").await.unwrap();
    w.write(b"partial").await.unwrap();
    drop(w);
    assert!(store.get("work/cut/small").await.is_err());
}

#[tokio::test]
async fn delete_prefix_removes_one_message_and_nothing_else() {
    let (s3, store) = setup().await;
    for k in ["work/m1/layer0", "work/m1/layer1", "work/m1/a/b", "work/m10/layer0", "raw/m1"] {
        store.put(k, k.as_bytes()).await.unwrap();
    }
    store.delete_prefix("work/m1/").await.unwrap();
    for k in ["work/m1/layer0", "work/m1/layer1", "work/m1/a/b"] {
        assert!(store.get(k).await.is_err(), "{k} deleted");
    }
    for k in ["work/m10/layer0", "raw/m1"] {
        assert_eq!(store.get(k).await.unwrap(), k.as_bytes(), "{k} kept");
    }
    // Nothing there: fine.
    store.delete_prefix("work/none/").await.unwrap();
    // Many keys: more than one DeleteObjects batch is not needed here, but several keys at once.
    for i in 0..30 {
        store.put(&format!("work/many/{i}"), b"x").await.unwrap();
    }
    store.delete_prefix("work/many").await.unwrap();
    assert!(!s3.path("edinode/work/many/0").exists() && !s3.path("edinode/work/many/29").exists());
}

#[tokio::test]
async fn delete_older_removes_only_blobs_past_the_age_under_the_prefix() {
    let (s3, store) = setup().await;
    for k in ["work/old/layer0", "work/new/layer0", "raw/old"] {
        store.put(k, b"x").await.unwrap();
    }
    // s3s-fs lists a file's mtime as LastModified.
    let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(30 * 3600);
    for k in ["edinode/work/old/layer0", "edinode/raw/old"] {
        std::fs::File::options().write(true).open(s3.path(k)).unwrap().set_modified(day_ago).unwrap();
    }
    let cutoff = edinode::storage::now_ms() - 24 * 3600 * 1000;
    assert_eq!(store.delete_older("work/", cutoff).await.unwrap(), 1);
    assert!(store.get("work/old/layer0").await.is_err());
    assert!(store.get("work/new/layer0").await.is_ok());
    assert!(store.get("raw/old").await.is_ok(), "another prefix is left alone");
}
