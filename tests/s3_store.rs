//! S3Store against an in-process S3 server (s3s-fs) whose access keys carry emulated IAM policies.

use crate::common::s3server;

use edinode::storage::s3::{S3Error, S3Store};
use s3server::{Grant, Policy, TestS3};

const INBOUND: &str = "as2gateway/EDINODE_ST/";
const OUTBOUND: &str = "AS2/send/EDINODE_ST/";

async fn server() -> TestS3 {
    TestS3::start(vec![
        ("admin", "admin-secret", Policy::full()),
        ("gateway", "gateway-secret", Policy::least_privilege()),
        ("gateway-404", "gateway-404-secret", Policy::least_privilege().missing_keys_not_found()),
    ])
    .await
}

async fn store(s3: &TestS3, access_key: &str) -> S3Store {
    S3Store::new(&s3.settings(access_key)).await.unwrap()
}

/// Every file s3s-fs holds in the bucket, as keys.
fn keys_on_disk(s3: &TestS3) -> Vec<String> {
    fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), root, out);
            } else {
                out.push(e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let root = s3.path("");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out.sort();
    out
}

#[tokio::test]
async fn put_get_list_copy_delete_round_trip() {
    let s3 = server().await;
    let store = store(&s3, "admin").await;
    let before = edinode::storage::now_ms();

    store.put("AS2/send/ST 1/PARTNER/order 1+2.edi", b"UNA:+.? '".to_vec()).await.unwrap();
    store.put("AS2/send/ST 1/PARTNER/batch/b.edi", vec![0u8; 3000]).await.unwrap();
    assert_eq!(std::fs::read(s3.path("AS2/send/ST 1/PARTNER/order 1+2.edi")).unwrap(), b"UNA:+.? '");
    assert_eq!(store.get("AS2/send/ST 1/PARTNER/order 1+2.edi").await.unwrap(), b"UNA:+.? '");

    let listed = store.list("AS2/send/ST 1/").await.unwrap();
    let keys: Vec<(&str, u64)> = listed.iter().map(|o| (o.key.as_str(), o.size)).collect();
    assert_eq!(keys, [("AS2/send/ST 1/PARTNER/batch/b.edi", 3000), ("AS2/send/ST 1/PARTNER/order 1+2.edi", 9)]);
    for o in &listed {
        // s3s-fs lists mtimes in milliseconds; allow for a coarse filesystem clock.
        assert!(o.last_modified_ms >= before - 2000 && o.last_modified_ms <= edinode::storage::now_ms() + 2000, "{o:?}");
    }
    assert!(store.list("AS2/send/nobody/").await.unwrap().is_empty());

    // The move of a file that could not be queued: copy, then delete the original.
    store.copy("AS2/send/ST 1/PARTNER/order 1+2.edi", "as2gateway/ST 1/PARTNER/failed/20260101T000000Z/order 1+2.edi").await.unwrap();
    store.delete("AS2/send/ST 1/PARTNER/order 1+2.edi").await.unwrap();
    assert_eq!(store.get("as2gateway/ST 1/PARTNER/failed/20260101T000000Z/order 1+2.edi").await.unwrap(), b"UNA:+.? '");
    assert_eq!(store.get("AS2/send/ST 1/PARTNER/order 1+2.edi").await, Err(S3Error::NotFound));
    assert_eq!(store.copy("AS2/send/none", "as2gateway/none").await, Err(S3Error::NotFound));
    // Deleting what is not there succeeds, as on S3.
    store.delete("AS2/send/ST 1/PARTNER/order 1+2.edi").await.unwrap();
}

#[tokio::test]
async fn list_follows_continuation_tokens() {
    let s3 = server().await;
    // Written behind the server's back: s3s-fs lists files as they are on disk.
    let dir = s3.path("AS2/send/ST/P");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..1234 {
        std::fs::write(dir.join(format!("f{i:05}")), b"x").unwrap();
    }
    let listed = store(&s3, "admin").await.list("AS2/send/ST/").await.unwrap();
    assert_eq!(listed.len(), 1234);
    assert!(listed.windows(2).all(|w| w[0].key < w[1].key));
    assert_eq!(listed[1233].key, "AS2/send/ST/P/f01233");
}

#[tokio::test]
async fn errors_are_classified() {
    let s3 = server().await;
    let mut settings = s3.settings("admin");
    settings.secret_key = Some("wrong".into());
    let bad_secret = S3Store::new(&settings).await.unwrap();
    match bad_secret.get("x").await {
        Err(S3Error::AccessDenied(d)) => assert!(d.contains("SignatureDoesNotMatch"), "{d}"),
        other => panic!("{other:?}"),
    }
    let mut settings = s3.settings("admin");
    settings.bucket = "no-such-bucket".into();
    let no_bucket = S3Store::new(&settings).await.unwrap();
    // (s3s-fs answers GetObject in a missing bucket with NoSuchKey; listing says NoSuchBucket.)
    match no_bucket.list("x").await {
        Err(S3Error::Other(d)) => assert!(d.contains("NoSuchBucket"), "{d}"),
        other => panic!("a missing bucket is not a missing key: {other:?}"),
    }
    let mut settings = s3.settings("admin");
    settings.secret_key = None;
    assert!(S3Store::new(&settings).await.is_err(), "access key without secret");
}

#[tokio::test]
async fn check_passes_with_full_rights() {
    let s3 = server().await;
    store(&s3, "admin").await.check(INBOUND, Some(OUTBOUND)).await.unwrap();
    assert!(keys_on_disk(&s3).is_empty(), "probe left behind: {:?}", keys_on_disk(&s3));
}

#[tokio::test]
async fn check_passes_with_least_privilege() {
    let s3 = server().await;
    // On AWS only an existing object proves GetObject under this policy (a missing key answers
    // 403), so the check reads one when the outbound prefix holds any.
    store(&s3, "admin").await.put(&format!("{OUTBOUND}PARTNER/waiting.edi"), b"payload".to_vec()).await.unwrap();
    store(&s3, "gateway").await.check(INBOUND, Some(OUTBOUND)).await.unwrap();
    assert_eq!(keys_on_disk(&s3), [format!("{OUTBOUND}PARTNER/waiting.edi")]);
}

#[tokio::test]
async fn check_passes_with_least_privilege_on_an_empty_outbound_when_missing_keys_answer_404() {
    let s3 = server().await;
    store(&s3, "gateway-404").await.check(INBOUND, Some(OUTBOUND)).await.unwrap();
    assert!(keys_on_disk(&s3).is_empty());
}

/// With nothing under the outbound prefix, AWS answers the missing-key GetObject probe with 403
/// under the guide's policy; the check cannot tell that from a missing grant, so it passes with
/// a warning (the guide's own policy must work) and the first pick-up proves GetObject.
#[tokio::test]
async fn check_with_least_privilege_on_an_empty_outbound_passes_with_a_warning_as_on_aws() {
    let s3 = server().await;
    let warnings = store(&s3, "gateway").await.check(INBOUND, Some(OUTBOUND)).await.unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("s3:GetObject") && warnings[0].contains("could not be verified"), "{warnings:?}");
}

#[tokio::test]
async fn check_names_each_missing_permission() {
    let cases = [
        (Grant::PutInbound, "PutObject", "s3:PutObject", INBOUND),
        (Grant::DeleteInbound, "DeleteObject", "s3:DeleteObject", INBOUND),
        (Grant::ListOutbound, "ListObjectsV2", "s3:ListBucket", OUTBOUND),
        (Grant::GetOutbound, "GetObject", "s3:GetObject", OUTBOUND),
        (Grant::DeleteOutbound, "DeleteObject", "s3:DeleteObject", OUTBOUND),
    ];
    for (grant, operation, permission, prefix) in cases {
        for missing_keys_404 in [false, true] {
            let mut policy = Policy::least_privilege_without(grant);
            if missing_keys_404 {
                policy = policy.missing_keys_not_found();
            }
            let s3 = TestS3::start(vec![("admin", "admin-secret", Policy::full()), ("user", "user-secret", policy)]).await;
            if !missing_keys_404 {
                store(&s3, "admin").await.put(&format!("{OUTBOUND}PARTNER/waiting.edi"), b"payload".to_vec()).await.unwrap();
            }
            let r = store(&s3, "user").await.check(INBOUND, Some(OUTBOUND)).await;
            if grant == Grant::GetOutbound && missing_keys_404 {
                // Nothing to read: a denied probe is only a warning (see above); with a file
                // present (the other mode) the denial is proven and the check fails.
                assert!(!r.unwrap().is_empty());
                continue;
            }
            let f = r.unwrap_err();
            let case = format!("without {grant:?}, 404s {missing_keys_404}: {f}");
            assert_eq!((f.operation, f.permission, f.denied), (operation, permission, true), "{case}");
            assert!(f.key_or_prefix.starts_with(prefix), "{case}");
            assert!(f.to_string().starts_with(&format!("{permission} denied for {operation} on {prefix}")), "{case}");
            assert!(f.detail.contains("AccessDenied"), "{case}");
            if grant == Grant::DeleteInbound {
                assert!(f.detail.contains("left in the bucket"), "{case}");
            }
        }
    }
}

#[tokio::test]
async fn least_privilege_is_enforced() {
    let s3 = server().await;
    let gw = store(&s3, "gateway").await;
    let admin = store(&s3, "admin").await;

    // No PutObject under AS2/send/, no GetObject under as2gateway/.
    assert!(matches!(gw.put(&format!("{OUTBOUND}P/x.edi"), b"x".to_vec()).await, Err(S3Error::AccessDenied(_))));
    assert!(!s3.path(&format!("{OUTBOUND}P/x.edi")).exists());
    gw.put(&format!("{INBOUND}P/inbox/in.edi"), b"in".to_vec()).await.unwrap();
    assert!(matches!(gw.get(&format!("{INBOUND}P/inbox/in.edi")).await, Err(S3Error::AccessDenied(_))));
    assert_eq!(admin.get(&format!("{INBOUND}P/inbox/in.edi")).await.unwrap(), b"in");

    // Listing only under AS2/send/.
    assert!(gw.list(OUTBOUND).await.unwrap().is_empty());
    assert!(matches!(gw.list(INBOUND).await, Err(S3Error::AccessDenied(_))));
    assert!(matches!(gw.list("").await, Err(S3Error::AccessDenied(_))));

    // Reading and removing what the customer uploaded; moving it to failed/ by copy.
    admin.put(&format!("{OUTBOUND}P/out.edi"), b"out".to_vec()).await.unwrap();
    assert_eq!(gw.list(OUTBOUND).await.unwrap().len(), 1);
    assert_eq!(gw.get(&format!("{OUTBOUND}P/out.edi")).await.unwrap(), b"out");
    gw.copy(&format!("{OUTBOUND}P/out.edi"), &format!("{INBOUND}P/failed/t/out.edi")).await.unwrap();
    assert!(matches!(gw.copy(&format!("{INBOUND}P/failed/t/out.edi"), &format!("{OUTBOUND}P/back.edi")).await, Err(S3Error::AccessDenied(_))));
    gw.delete(&format!("{OUTBOUND}P/out.edi")).await.unwrap();
    assert_eq!(admin.get(&format!("{INBOUND}P/failed/t/out.edi")).await.unwrap(), b"out");

    // AWS semantics for a missing key without an unconditional s3:ListBucket: 403, not 404.
    assert!(matches!(gw.get(&format!("{OUTBOUND}P/out.edi")).await, Err(S3Error::AccessDenied(_))));
    assert_eq!(store(&s3, "gateway-404").await.get(&format!("{OUTBOUND}P/out.edi")).await, Err(S3Error::NotFound));
}
