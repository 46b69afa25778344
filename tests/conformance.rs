//! Conformance (issue 9, AS2): what independent peers found, each end to end against a real
//! node: the RFC 4130 section 7.3.1 MIC of unsigned messages both ways (and the algorithm a
//! signed-receipt-micalg asks for), decrypted entities that start with any header, the order
//! of a message's status history when its asynchronous MDN overtakes the POST, and the size of
//! documents the admin API accepts.

mod common;
use common::build::*;
use common::*;
use edinode_proto::alg::DigestAlg;
use edinode_proto::mdn_parse::{self, ParsedMdn};
use edinode_proto::mime::MimeLimits;
use std::time::Duration;

const TOKEN: &str = "conformance-token";

/// POST /api/send with one document of `size` bytes; returns the HTTP status.
fn send_status(admin: &str, size: usize) -> u16 {
    let b = "form-boundary-9";
    let mut body = Vec::with_capacity(size + 512);
    for (k, v) in [("station", "edinode"), ("partner", "acme")] {
        body.extend_from_slice(format!("--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").as_bytes());
    }
    body.extend_from_slice(format!("--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.edi\"\r\nContent-Type: application/edi-x12\r\n\r\n").as_bytes());
    body.extend(std::iter::repeat_n(b'X', size));
    body.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
        .post(format!("{admin}/api/send"))
        .bearer_auth(TOKEN)
        .header("Content-Type", format!("multipart/form-data; boundary={b}"))
        .body(body)
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[test]
fn admin_send_accepts_documents_up_to_max_send_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let me = identity(tmp.path(), "edinode");
    let acme = identity(tmp.path(), "acme");
    let url = http_listener(|_, _| (200, vec![], vec![]));
    let cfg = ConfigBuilder::new(tmp.path())
        .station("edinode", "edinode", &me)
        .raw(&format!(
            "\n[partners.acme]\nas2_id = \"acme\"\nstation = \"edinode\"\nverify_certs = [\"{}\"]\nurl = \"{url}\"\n[partners.acme.outbound]\nmdn = \"none\"\n",
            acme.cert_pem.display()
        ))
        .write(tmp.path());
    // The default (128 MiB): 300 KiB (above actix's 256 KiB default) and 5 MiB are accepted.
    let node = start_node(&cfg, tmp.path(), &[], &[("EDINODE__ADMIN__TOKEN", TOKEN)]);
    let admin = node.admin_url.clone().expect("a separate admin listener");
    assert_eq!(send_status(&admin, 300 * 1024), 202);
    assert_eq!(send_status(&admin, 5 * 1024 * 1024), 202);
    drop(node);
    // A configured limit holds: below it 202, above it 413.
    let node = start_node(&cfg, tmp.path(), &[], &[("EDINODE__ADMIN__TOKEN", TOKEN), ("EDINODE__ADMIN__MAX_SEND_BYTES", "400000")]);
    let admin = node.admin_url.clone().unwrap();
    assert_eq!(send_status(&admin, 300 * 1024), 202);
    assert_eq!(send_status(&admin, 500 * 1024), 413);
}

/// A node with station `edinode` and partner `acme` (its signatures verified with `acme`'s
/// certificate); `policy` goes into `[partners.acme.policy]`.
fn inbound_node(dir: &std::path::Path, policy: &str) -> (NodeProc, Identity, Identity) {
    let station = identity(dir, "station");
    let partner = identity(dir, "partner");
    let cfg = ConfigBuilder::new(dir).station("edinode", "edinode", &station).partner("acme", "acme", "edinode", &[&partner.cert_pem], policy).write(dir);
    (start_node(&cfg, dir, &[], &[]), station, partner)
}

/// POST a message and read the synchronous MDN (signed by the station when asked).
fn post_for_mdn(node: &NodeProc, station: &Identity, hs: &[(String, String)], body: Vec<u8>) -> ParsedMdn {
    let (st, mhs, mdn) = post_capture(&node.as2_url(), hs, body);
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&mdn));
    mdn_parse::parse(&mhs, &mdn, std::slice::from_ref(&station.cert), &MimeLimits::default()).unwrap()
}

#[test]
fn signed_encrypted_whose_signed_entity_starts_with_date_is_verified_and_unwrapped() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, station, partner) = inbound_node(tmp.path(), "require_signed = true");
    let payload = entity("application/edi-x12", "po.edi", b"ISA*00*DATE-FIRST~\r\n");
    // As the TypeScript library sends it: the multipart/signed entity starts with Date and
    // MIME-Version before its Content-Type.
    let mut signed_entity = b"Date: Sat, 21 Nov 2026 12:00:00 GMT\r\nMIME-Version: 1.0\r\n".to_vec();
    signed_entity.extend_from_slice(&signed(&payload, &partner.key, &partner.cert, DigestAlg::Sha256));
    let msg = encrypted(&signed_entity, &station.cert);
    let (hs, body) = request("acme", "edinode", "<date-first-1@test>", Some("signed"), &msg);
    let mdn = post_for_mdn(&node, &station, &hs, body);
    assert_eq!(mdn.disposition_raw.to_ascii_lowercase().replace(' ', ""), "automatic-action/mdn-sent-automatically;processed", "{}", mdn.text);
    // Verified: the MIC is the signed-message MIC, over the signed payload entity.
    assert_eq!(mdn.received_mic, Some(edinode_proto::unwrap::compute_mic(&payload, DigestAlg::Sha256)));
    let files = wait_for(10, "the delivery", || Some(delivered(&tmp.path().join("inbox"), "edinode", "acme")).filter(|d| !d.is_empty()));
    assert_eq!(files, vec![("po.edi".to_string(), b"ISA*00*DATE-FIRST~\r\n".to_vec())], "the document, not the signed entity");
}

#[test]
fn history_stays_in_order_when_the_async_mdn_overtakes_the_post() {
    use edinode_proto::error::Disposition;
    use std::sync::{Arc, Mutex};
    let tmp = tempfile::tempdir().unwrap();
    let me = identity(tmp.path(), "edinode");
    let acme = identity(tmp.path(), "acme");
    // The partner posts its asynchronous MDN, and has it settled, before it answers the POST.
    let node_url = Arc::new(Mutex::new(String::new()));
    let target = node_url.clone();
    let url = http_listener(move |hs, _| {
        let mid = hs.iter().find(|(k, _)| k.eq_ignore_ascii_case("message-id")).map(|(_, v)| v.clone()).unwrap_or_default();
        let (mhs, mbody) = build_mdn("acme", "edinode", &mid, &Disposition::Processed, None, None);
        let (st, _, answer) = post_capture(&target.lock().unwrap(), &mhs, mbody);
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&answer));
        (200, vec![], vec![])
    });
    let cfg = ConfigBuilder::new(tmp.path())
        .station("edinode", "edinode", &me)
        .raw(&format!(
            "\n[partners.acme]\nas2_id = \"acme\"\nstation = \"edinode\"\nverify_certs = [\"{}\"]\nurl = \"{url}\"\n[partners.acme.outbound]\nsign = \"none\"\nmdn = \"async\"\nmdn_signed = false\nasync_mdn_url = \"http://127.0.0.1:9/as2\"\n",
            acme.cert_pem.display()
        ))
        .write(tmp.path());
    let node = start_node(&cfg, tmp.path(), &[], &[("EDINODE__ADMIN__LISTEN", ""), ("EDINODE__ADMIN__TOKEN", TOKEN)]);
    *node_url.lock().unwrap() = node.as2_url();
    let (id, _) = admin_send(&node.url, TOKEN, "edinode", "acme", &[("a.edi", "application/edi-x12", b"ISA*FAST~".to_vec())]);
    let m = wait_for(30, "sent", || Some(admin_message(&node.url, TOKEN, &id)).filter(|m| m["summary"]["status"] == "sent"));
    // Let the sender finish its POST, then read the whole history.
    std::thread::sleep(Duration::from_millis(500));
    let statuses: Vec<String> = history(&admin_message(&node.url, TOKEN, &id)).into_iter().map(|(s, _)| s).collect();
    let at = |s: &str| statuses.iter().position(|x| x == s).unwrap_or_else(|| panic!("no {s} in {statuses:?} ({m})"));
    assert!(at("queued") < at("sending") && at("sending") < at("awaiting-mdn") && at("awaiting-mdn") < at("sent"), "{statuses:?}");
    assert_eq!(statuses.last().map(String::as_str), Some("sent"), "nothing after the outcome: {statuses:?}");
}
