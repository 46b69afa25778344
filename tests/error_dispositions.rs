//! Acceptance 4 and "bad input": each error disposition is reached by a message that deserves
//! it, HTTP-level problems get the right status, and nothing bad is delivered.

use crate::common::build::*;
use crate::common::*;
use edinode_proto::alg::DigestAlg;

struct Env {
    dir: tempfile::TempDir,
    #[allow(dead_code)]
    station: Identity,
    partner: Identity,
    node: NodeProc,
}

fn env(policy: &str, extra: &str) -> Env {
    env_with(policy, extra, &[])
}

fn env_with(policy: &str, extra: &str, vars: &[(&str, &str)]) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let station = identity(dir.path(), "station");
    let partner = identity(dir.path(), "partner");
    let cfg = ConfigBuilder::new(dir.path())
        .raw(extra)
        .station("edinode", "edinode", &station)
        .partner("acme", "acme", "edinode", &[&partner.cert_pem], policy)
        .write(dir.path());
    let node = start_node(&cfg, dir.path(), &[], vars);
    Env { dir, station, partner, node }
}

fn send(e: &Env, entity: &[u8], mdn: Option<&str>) -> (u16, String) {
    let (hs, body) = request("acme", "edinode", &format!("<{}@test>", unique("m")), mdn, entity);
    let (st, _, b) = post_capture(&e.node.as2_url(), &hs, body);
    (st, String::from_utf8_lossy(&b).to_string())
}

fn assert_error(text: &str, modifier: &str) {
    assert!(text.contains(&format!("Disposition: automatic-action/MDN-sent-automatically; processed/error: {modifier}\r\n")), "expected {modifier}: {text}");
}

/// Sends `entity`; the MDN (in the HTTP answer) is `processed/error: <modifier>`.
fn refused(e: &Env, entity: &[u8], mdn: Option<&str>, modifier: &str) -> String {
    let (st, text) = send(e, entity, mdn);
    assert_eq!(st, 200);
    assert_error(&text, modifier);
    text
}

fn nothing_delivered(e: &Env) {
    e.node.wait_idle();
    assert!(delivered(&e.dir.path().join("inbox"), "edinode", "acme").is_empty(), "nothing may be delivered");
}

fn doc() -> Vec<u8> {
    entity("application/edi-x12", "order.edi", b"ISA*00*TEST~\nGS*PO~\n")
}

#[test]
fn encrypted_for_someone_else_is_decryption_failed() {
    let e = env("", "");
    let other = identity(e.dir.path(), "other");
    refused(&e, &encrypted(&doc(), &other.cert), Some("plain"), "decryption-failed");
    nothing_delivered(&e);
}

#[test]
fn garbage_enveloped_data_is_decryption_failed() {
    let e = env("", "");
    refused(&e, b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\n\x30\x80garbage", Some("plain"), "decryption-failed");
}

#[test]
fn signed_by_an_unknown_key_is_authentication_failed() {
    let e = env("", "");
    let rogue = identity(e.dir.path(), "rogue");
    let text = refused(&e, &signed(&doc(), &rogue.key, &rogue.cert, DigestAlg::Sha256), Some("signed"), "authentication-failed");
    // A signed MDN was asked for, but the sender is not proven: we do not sign for it.
    assert!(!text.contains("application/pkcs7-signature"), "no signature for an unproven sender: {text}");
    nothing_delivered(&e);
}

#[test]
fn altered_content_is_integrity_check_failed() {
    let e = env("", "");
    let mut msg = signed(&doc(), &e.partner.key, &e.partner.cert, DigestAlg::Sha256);
    let pos = msg.windows(6).position(|w| w == b"GS*PO~").unwrap();
    msg[pos + 3] = b'X';
    refused(&e, &msg, Some("plain"), "integrity-check-failed");
    nothing_delivered(&e);
}

#[test]
fn bad_zlib_is_decompression_failed() {
    let e = env("", "");
    let mut msg = compressed(&doc());
    let n = msg.len();
    for b in &mut msg[n - 12..n - 2] {
        *b ^= 0x5a;
    }
    refused(&e, &msg, Some("plain"), "decompression-failed");
    nothing_delivered(&e);
}

#[test]
fn compression_bomb_is_decompression_failed_without_exhausting_memory() {
    let e = env("", "[limits]\nmax_decompressed_bytes = 1048576\n");
    let zeros = entity("application/octet-stream", "zeros.bin", &vec![0u8; 64 * 1024 * 1024]);
    let msg = compressed(&zeros);
    assert!(msg.len() < 200 * 1024, "the bomb is small on the wire");
    refused(&e, &msg, Some("plain"), "decompression-failed");
    let status = std::fs::read_to_string(format!("/proc/{}/status", e.node.child.id())).unwrap();
    let hwm_kb: u64 = status.lines().find(|l| l.starts_with("VmHWM")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(hwm_kb < 60 * 1024, "peak RSS {hwm_kb} kB: the 64 MiB bomb must not be inflated");
    nothing_delivered(&e);
}

#[test]
fn unsigned_when_signing_is_required_is_insufficient_message_security() {
    let e = env("require_signed = true", "");
    refused(&e, &doc(), Some("plain"), "insufficient-message-security");
    nothing_delivered(&e);
}

#[test]
fn an_unproven_sender_gets_no_signature_from_us_even_when_it_asks() {
    let e = env("require_signed = true", "");
    let text = refused(&e, &doc(), Some("signed"), "insufficient-message-security");
    assert!(!text.contains("application/pkcs7-signature"), "{text}");
    // The same partner, signed as agreed: a signed MDN.
    let (st, text) = send(&e, &signed(&doc(), &e.partner.key, &e.partner.cert, DigestAlg::Sha256), Some("signed"));
    assert_eq!(st, 200);
    assert!(text.contains("application/pkcs7-signature") && text.contains("processed"), "{text}");
}

#[test]
fn unaccepted_digest_is_insufficient_message_security() {
    let e = env("accepted_digests = [\"sha-256\"]", "");
    refused(&e, &signed(&doc(), &e.partner.key, &e.partner.cert, DigestAlg::Sha1), Some("plain"), "insufficient-message-security");
}

#[test]
fn malformed_mime_is_unexpected_processing_error() {
    let e = env("", "");
    refused(&e, b"Content-Type: multipart/related; boundary=\"nope\"\r\n\r\nno parts at all", Some("plain"), "unexpected-processing-error");
    nothing_delivered(&e);
}

#[test]
fn too_deep_nesting_is_unexpected_processing_error() {
    let e = env("", "");
    let mut m = doc();
    for _ in 0..12 {
        m = compressed(&m);
    }
    let text = refused(&e, &m, Some("plain"), "unexpected-processing-error");
    assert!(text.contains("nested layers"), "{text}");
}

#[test]
fn a_resent_message_is_a_duplicate_and_delivered_once() {
    let e = env("", "");
    let msg = signed(&doc(), &e.partner.key, &e.partner.cert, DigestAlg::Sha256);
    let (hs, body) = request("acme", "edinode", "<dup-1@test>", Some("signed"), &msg);
    let (st1, _, b1) = post_capture(&e.node.as2_url(), &hs, body.clone());
    let (st2, _, b2) = post_capture(&e.node.as2_url(), &hs, body);
    assert_eq!((st1, st2), (200, 200));
    let (t1, t2) = (String::from_utf8_lossy(&b1), String::from_utf8_lossy(&b2));
    assert!(t1.contains("MDN-sent-automatically; processed\r\n"), "{t1}");
    assert!(t2.contains("processed/warning: duplicate-document"), "{t2}");
    e.node.wait_idle();
    assert_eq!(delivered(&e.dir.path().join("inbox"), "edinode", "acme").len(), 1);
}

#[test]
fn http_level_refusals_have_the_right_status_and_no_mdn() {
    let e = env_with("", "", &[("EDINODE__HTTP__MAX_BODY_BYTES", "100000")]);
    let url = e.node.as2_url();
    let d = doc();
    // Missing AS2-From.
    let (mut hs, body) = request("acme", "edinode", "<x1@test>", Some("plain"), &d);
    hs.retain(|(k, _)| k != "AS2-From");
    let (st, _, b) = post_capture(&url, &hs, body);
    assert_eq!(st, 400);
    assert!(String::from_utf8_lossy(&b).contains("AS2-From"));
    // Invalid AS2-To (too long).
    let (hs, body) = request("acme", &"x".repeat(200), "<x2@test>", Some("plain"), &d);
    assert_eq!(post_capture(&url, &hs, body).0, 400);
    // Unknown station and unknown partner: refused, never an MDN.
    let (hs, body) = request("acme", "someone-else", "<x3@test>", Some("signed"), &d);
    let (st, hs2, _) = post_capture(&url, &hs, body);
    assert_eq!(st, 403);
    assert!(!hs2.iter().any(|(k, v)| k == "content-type" && v.contains("multipart")));
    let (hs, body) = request("stranger", "edinode", "<x4@test>", Some("signed"), &d);
    assert_eq!(post_capture(&url, &hs, body).0, 403);
    // Body over the limit.
    let big = entity("application/octet-stream", "big.bin", &vec![7u8; 200_000]);
    let (hs, body) = request("acme", "edinode", "<x5@test>", None, &big);
    assert_eq!(post_capture(&url, &hs, body).0, 413);
    // Empty body.
    let (hs, _) = request("acme", "edinode", "<x6@test>", None, &d);
    assert_eq!(post_capture(&url, &hs, Vec::new()).0, 400);
    // The node is still alive and still delivers.
    let (hs, body) = request("acme", "edinode", "<x7@test>", Some("plain"), &d);
    let (st, _, b) = post_capture(&url, &hs, body);
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
}

#[test]
fn raw_request_is_kept_for_failures() {
    let e = env("require_signed = true", "");
    refused(&e, &doc(), Some("plain"), "insufficient-message-security");
    let raw_dir = e.dir.path().join("var/blobs/raw");
    let kept: Vec<_> = std::fs::read_dir(&raw_dir).unwrap().flatten().collect();
    assert_eq!(kept.len(), 1, "the failed message's raw request is kept");
    let raw = std::fs::read(kept[0].path()).unwrap();
    assert!(String::from_utf8_lossy(&raw).contains("ISA*00*TEST~"));
}
