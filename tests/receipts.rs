//! Receipts we can trust: an MDN settles an outbound message only when it is signed as asked,
//! by the partner the message went to, for that message, with its MIC. Every other MDN is
//! refused, answered with a 4xx, and recorded on the message, which keeps waiting (async) or
//! fails with the reason (sync); it never becomes delivered.

use crate::common::*;
use edinode_proto::alg::DigestAlg;
use edinode_proto::error::Disposition;
use edinode_proto::mdn::Mic;

const TOKEN: &str = "receipts-test-token";

/// A node in `p`'s folder with station `edinode` (`p`'s station key) and partner `acme`
/// (trusted: `p`'s partner certificate) at `url`; `more`: further config.
fn node(p: &Pair, url: &str, outbound: &str, more: &str) -> NodeProc {
    let dir = p.dir.path();
    let cfg = ConfigBuilder::new(dir)
        .station("edinode", "edinode", &p.station)
        .raw(more)
        .acme_at(&p.partner.cert_pem, url, &format!("encrypt = \"none\"\n{outbound}"))
        .write(dir);
    start_node(&cfg, dir, &[], &[("EDINODE__ADMIN__LISTEN", ""), ("EDINODE__ADMIN__TOKEN", TOKEN)])
}

/// The MIC the node computed for message `id` (its summary's `mic` field, "digest, alg").
fn our_mic(admin: &str, id: &str) -> Mic {
    let m = admin_message(admin, TOKEN, id);
    let raw = m["summary"]["mic"].as_str().unwrap_or_else(|| panic!("no MIC in {m}")).to_string();
    let (digest, alg) = raw.split_once(',').unwrap();
    Mic { digest: digest.trim().to_string(), alg: DigestAlg::parse(alg).unwrap() }
}

/// POST an MDN to the node's /as2; returns (status, answer text).
fn post_mdn(node: &NodeProc, mdn: (Vec<(String, String)>, Vec<u8>)) -> (u16, String) {
    let (st, _, body) = post_capture(&node.as2_url(), &mdn.0, mdn.1);
    (st, String::from_utf8_lossy(&body).to_string())
}

fn refusals(m: &serde_json::Value) -> Vec<String> {
    history(m).into_iter().filter(|(s, _)| s == "mdn-refused").map(|(_, d)| d).collect()
}

#[test]
fn an_async_mdn_settles_the_message_only_when_it_can_be_trusted() {
    let p = pair("me", "acme");
    let acme = &p.partner;
    let rogue = identity(p.dir.path(), "rogue");
    // Another partner of ours, with a certificate we trust for it (and only for it).
    let other = identity(p.dir.path(), "other");
    let more = format!("\n[partners.other]\nas2_id = \"other\"\nstation = \"edinode\"\nverify_certs = [\"{}\"]\n", other.cert_pem.display());
    // The partner accepts the message (200, no MDN); the MDNs come from this test.
    let url = http_listener(|_, _| (200, vec![], Vec::new()));
    let node = node(&p, &url, "mdn = \"async\"\nasync_mdn_url = \"http://127.0.0.1:9/as2\"\nmdn_deadline_secs = 600", &more);
    let (id, mid) = admin_send(&node.url, TOKEN, "edinode", "acme", &[("a.edi", "application/edi-x12", b"ISA*RECEIPTS~".to_vec())]);
    wait_for(30, "awaiting-mdn", || history(&admin_message(&node.url, TOKEN, &id)).iter().any(|(s, _)| s == "awaiting-mdn").then_some(()));
    let mic = our_mic(&node.url, &id);
    let wrong = Mic { digest: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(), alg: DigestAlg::Sha256 };
    let processed = Disposition::Processed;
    let failed = Disposition::Error("authentication-failed".into());
    let mdn = |d: &Disposition, mic: Option<&Mic>, signer: Option<&Identity>| build_mdn("acme", "edinode", &mid, d, mic, signer);

    let refused = [
        ("unsigned, positive, no MIC", mdn(&processed, None, None), "not signed"),
        ("unsigned, negative", mdn(&failed, None, None), "not signed"),
        ("signed by acme, wrong MIC", mdn(&processed, Some(&wrong), Some(acme)), "MIC mismatch"),
        ("signed by acme, no MIC", mdn(&processed, None, Some(acme)), "no Received-Content-MIC"),
        ("signed by an unknown key", mdn(&processed, Some(&mic), Some(&rogue)), "signature invalid"),
        ("from another partner, signed by it", build_mdn("other", "edinode", &mid, &processed, Some(&mic), Some(&other)), "signature invalid"),
    ];
    for (i, (case, m, reason)) in refused.into_iter().enumerate() {
        let (st, text) = post_mdn(&node, m);
        assert!((400..500).contains(&st), "{case}: answered {st} {text}");
        assert!(text.contains(reason), "{case}: the poster is told why: {text}");
        assert!(!text.contains(&mic.digest), "{case}: our MIC is never told: {text}");
        let m = admin_message(&node.url, TOKEN, &id);
        let status = m["summary"]["status"].as_str().unwrap_or_default();
        assert!(status != "sent" && status != "failed", "{case}: the message is settled ({status}): {m}");
        let r = refusals(&m);
        assert_eq!(r.len(), i + 1, "{case}: each refused MDN is recorded once: {r:?}");
        assert!(r[i].contains(reason), "{case}: the history tells why: {r:?}");
    }

    // The partner's signed MDN with our MIC: delivered, kept as the receipt.
    let (st, text) = post_mdn(&node, mdn(&processed, Some(&mic), Some(acme)));
    assert_eq!(st, 200, "{text}");
    let m = wait_for(30, "delivered", || {
        let m = admin_message(&node.url, TOKEN, &id);
        (m["summary"]["status"] == "sent").then_some(m)
    });
    assert!(history(&m).iter().any(|(s, d)| s == "sent" && d.contains("MDN verified")), "{m}");
    assert!(m["summary"]["receipt"].is_string(), "{m}");
    // It is settled for good: a replay (or a late refused MDN) changes nothing.
    let (st, _) = post_mdn(&node, mdn(&processed, Some(&mic), Some(acme)));
    assert!((400..500).contains(&st));
    let (st, _) = post_mdn(&node, mdn(&failed, None, None));
    assert!((400..500).contains(&st));
    assert_eq!(admin_message(&node.url, TOKEN, &id)["summary"]["status"], "sent");
}

#[test]
fn a_refused_async_mdn_is_told_when_the_deadline_passes() {
    let p = pair("me", "acme");
    let url = http_listener(|_, _| (200, vec![], Vec::new()));
    let node = node(&p, &url, "mdn = \"async\"\nasync_mdn_url = \"http://127.0.0.1:9/as2\"\nmdn_deadline_secs = 3", "");
    let (id, mid) = admin_send(&node.url, TOKEN, "edinode", "acme", &[("a.edi", "application/edi-x12", b"ISA~".to_vec())]);
    wait_for(30, "awaiting-mdn", || history(&admin_message(&node.url, TOKEN, &id)).iter().any(|(s, _)| s == "awaiting-mdn").then_some(()));
    let (st, text) = post_mdn(&node, build_mdn("acme", "edinode", &mid, &Disposition::Processed, None, None));
    assert!((400..500).contains(&st), "{st} {text}");
    let m = wait_for(30, "the deadline", || {
        let m = admin_message(&node.url, TOKEN, &id);
        (m["summary"]["status"] == "failed").then_some(m)
    });
    let reason = m["summary"]["reason"].as_str().unwrap();
    assert!(reason.contains("no MDN before the deadline") && reason.contains("not signed"), "{m}");
}

#[test]
fn an_unsigned_sync_mdn_is_not_a_receipt_when_a_signed_one_was_asked_for() {
    let p = pair("me", "acme");
    // The partner answers at once with an unsigned MDN that is right in every other way: our
    // Message-ID, processed, the MIC of the signed entity it received.
    let computed = std::sync::Arc::new(std::sync::Mutex::new(None::<Mic>));
    let seen = computed.clone();
    let url = http_listener(move |h, body| {
        let get = |n: &str| h.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone()).unwrap();
        let limits = edinode_proto::mime::MimeLimits::default();
        let ct = edinode_proto::mime::ContentType::parse(&get("content-type"));
        let parts = edinode_proto::mime::split_multipart(body, ct.param("boundary").unwrap(), &limits).unwrap();
        let mic = edinode_proto::unwrap::compute_mic(parts[0], DigestAlg::Sha256);
        *seen.lock().unwrap() = Some(mic.clone());
        let (hs, b) = build_mdn("acme", "edinode", &get("message-id"), &Disposition::Processed, Some(&mic), None);
        (200, hs, b)
    });
    let node = node(&p, &url, "mdn = \"sync\"\nattempts = 1", "");
    let (id, _) = admin_send(&node.url, TOKEN, "edinode", "acme", &[("a.edi", "application/edi-x12", b"ISA~".to_vec())]);
    let m = wait_for(30, "an outcome", || {
        let m = admin_message(&node.url, TOKEN, &id);
        matches!(m["summary"]["status"].as_str(), Some("sent" | "failed")).then_some(m)
    });
    assert_eq!(m["summary"]["status"], "failed", "{m}");
    assert!(m["summary"]["reason"].as_str().unwrap().contains("not signed"), "{m}");
    assert!(refusals(&m).iter().any(|r| r.contains("not signed")), "{m}");
    assert!(m["summary"]["receipt"].is_null(), "a refused MDN is no receipt: {m}");
    // The MDN was refused for its missing signature alone: its MIC was ours.
    assert_eq!(computed.lock().unwrap().clone(), Some(our_mic(&node.url, &id)));
}
