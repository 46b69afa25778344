//! Conformance (issue 9, AS2): what independent peers found, each end to end against a real
//! node: the RFC 4130 section 7.3.1 MIC of unsigned messages both ways (and the algorithm a
//! signed-receipt-micalg asks for), decrypted entities that start with any header, the order
//! of a message's status history when its asynchronous MDN overtakes the POST, and the size of
//! documents the admin API accepts.

use crate::common::build::*;
use crate::common::*;
use edinode_proto::alg::DigestAlg;
use edinode_proto::mdn::{self, ParsedMdn};
use edinode_proto::mime::MimeLimits;

const TOKEN: &str = "conformance-token";

/// POST /api/send with one document of `size` bytes; returns the HTTP status.
fn send_status(admin: &str, size: usize) -> u16 {
    let mut form = SendForm::new("form-boundary-9", "edinode", "acme");
    form.file("big.edi", "application/edi-x12", &vec![b'X'; size]);
    post_send_form(admin, TOKEN, form).0
}

#[test]
fn admin_send_accepts_documents_up_to_max_send_bytes() {
    let p = pair("edinode", "acme");
    let dir = p.dir.path();
    let url = http_listener(|_, _| (200, vec![], vec![]));
    let cfg = ConfigBuilder::new(dir)
        .station("edinode", "edinode", &p.station)
        .acme_at(&p.partner.cert_pem, &url, "mdn = \"none\"")
        .write(dir);
    // The default (128 MiB): 300 KiB (above actix's 256 KiB default) and 5 MiB are accepted.
    let node = start_node(&cfg, dir, &[], &[("EDINODE__ADMIN__TOKEN", TOKEN)]);
    let admin = node.admin_url.clone().expect("a separate admin listener");
    assert_eq!(send_status(&admin, 300 * 1024), 202);
    assert_eq!(send_status(&admin, 5 * 1024 * 1024), 202);
    drop(node);
    // A configured limit holds: below it 202, above it 413.
    let node = start_node(&cfg, dir, &[], &[("EDINODE__ADMIN__TOKEN", TOKEN), ("EDINODE__ADMIN__MAX_SEND_BYTES", "400000")]);
    let admin = node.admin_url.clone().unwrap();
    assert_eq!(send_status(&admin, 300 * 1024), 202);
    assert_eq!(send_status(&admin, 500 * 1024), 413);
}

/// A node in a fresh folder with station `edinode` and partner `acme` (its signatures verified
/// with the partner's certificate); `policy` goes into `[partners.acme.policy]`.
fn inbound_node(policy: &str) -> (Pair, NodeProc) {
    let p = pair("station", "partner");
    let node = start_node(&p.config(policy), p.dir.path(), &[], &[]);
    (p, node)
}

/// POST a message and read the synchronous MDN (signed by the station when asked).
fn post_for_mdn(node: &NodeProc, station: &Identity, hs: &[(String, String)], body: Vec<u8>) -> ParsedMdn {
    let (st, mhs, mdn) = post_capture(&node.as2_url(), hs, body);
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&mdn));
    mdn::parse(&mhs, &mdn, std::slice::from_ref(&station.cert), &MimeLimits::default()).unwrap()
}

#[test]
fn signed_encrypted_whose_signed_entity_starts_with_date_is_verified_and_unwrapped() {
    let (p, node) = inbound_node("require_signed = true");
    let (station, partner) = (&p.station, &p.partner);
    let payload = entity("application/edi-x12", "po.edi", b"ISA*00*DATE-FIRST~\r\n");
    // As the TypeScript library sends it: the multipart/signed entity starts with Date and
    // MIME-Version before its Content-Type.
    let mut signed_entity = b"Date: Sat, 21 Nov 2026 12:00:00 GMT\r\nMIME-Version: 1.0\r\n".to_vec();
    signed_entity.extend_from_slice(&signed(&payload, &partner.key, &partner.cert, DigestAlg::Sha256));
    let msg = encrypted(&signed_entity, &station.cert);
    let (hs, body) = request("acme", "edinode", "<date-first-1@test>", Some("signed"), &msg);
    let mdn = post_for_mdn(&node, station, &hs, body);
    assert_eq!(mdn.disposition_raw.to_ascii_lowercase().replace(' ', ""), "automatic-action/mdn-sent-automatically;processed", "{}", mdn.text);
    // Verified: the MIC is the signed-message MIC, over the signed payload entity.
    assert_eq!(mdn.received_mic, Some(edinode_proto::unwrap::compute_mic(&payload, DigestAlg::Sha256)));
    let files = wait_for(10, "the delivery", || Some(delivered(&p.dir.path().join("inbox"), "edinode", "acme")).filter(|d| !d.is_empty()));
    assert_eq!(files, vec![("po.edi".to_string(), b"ISA*00*DATE-FIRST~\r\n".to_vec())], "the document, not the signed entity");
}

#[test]
fn history_stays_in_order_when_the_async_mdn_overtakes_the_post() {
    use edinode_proto::error::Disposition;
    use std::sync::{Arc, Mutex};
    let p = pair("edinode", "acme");
    let dir = p.dir.path();
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
    let cfg = ConfigBuilder::new(dir)
        .station("edinode", "edinode", &p.station)
        .acme_at(&p.partner.cert_pem, &url, "sign = \"none\"\nmdn = \"async\"\nmdn_signed = false\nasync_mdn_url = \"http://127.0.0.1:9/as2\"")
        .write(dir);
    let node = start_node(&cfg, dir, &[], &[("EDINODE__ADMIN__LISTEN", ""), ("EDINODE__ADMIN__TOKEN", TOKEN)]);
    *node_url.lock().unwrap() = node.as2_url();
    let (id, _) = admin_send(&node.url, TOKEN, "edinode", "acme", &[("a.edi", "application/edi-x12", b"ISA*FAST~".to_vec())]);
    let m = wait_for(30, "sent", || Some(admin_message(&node.url, TOKEN, &id)).filter(|m| m["summary"]["status"] == "sent"));
    // The sender finishes its POST after the MDN arrived: wait for its record, then for the
    // node to be idle (nothing more can be written), then read the whole history.
    wait_until(30, "awaiting-mdn in the history", || {
        let statuses: Vec<String> = history(&admin_message(&node.url, TOKEN, &id)).into_iter().map(|(s, _)| s).collect();
        if statuses.iter().any(|s| s == "awaiting-mdn") { Ok(()) } else { Err(format!("{statuses:?}")) }
    });
    node.wait_idle();
    let statuses: Vec<String> = history(&admin_message(&node.url, TOKEN, &id)).into_iter().map(|(s, _)| s).collect();
    let at = |s: &str| statuses.iter().position(|x| x == s).unwrap_or_else(|| panic!("no {s} in {statuses:?} ({m})"));
    assert!(at("queued") < at("sending") && at("sending") < at("awaiting-mdn") && at("awaiting-mdn") < at("sent"), "{statuses:?}");
    assert_eq!(statuses.last().map(String::as_str), Some("sent"), "nothing after the outcome: {statuses:?}");
}

/// RFC 4130 section 7.3.1, receiving: the MIC of every unsigned shape, in the requested
/// algorithm (sha1 when none is asked for).
#[test]
fn unsigned_messages_get_the_rfc4130_mic() {
    use edinode_proto::unwrap::compute_mic;
    let (p, node) = inbound_node("");
    let station = &p.station;
    let edi = entity("application/edi-x12", "po.edi", b"ISA*00*UNSIGNED~\r\n");
    let text = entity("text/plain", "note.txt", b"line one\nline two\n");
    let zipped = compressed(&edi);
    let bare = b"UNB+UNOA:2+SENDER:14+RECEIVER:14+140407:0910+5++++1+EANCOM'\nUNH+1+ORDERS:D:96A:UN:EAN008'\n".to_vec();
    let body_of = |e: &[u8]| to_http(e).1;
    // (case, top-level entity, signed MDN asked for (sha-256), the bytes the MIC covers)
    let cases: Vec<(&str, Vec<u8>, bool, Vec<u8>)> = vec![
        ("plain", edi.clone(), false, body_of(&edi)),
        ("plain, sha-256 asked for", edi.clone(), true, body_of(&edi)),
        ("plain text with LF, as received", text.clone(), false, b"line one\nline two\n".to_vec()),
        ("compressed: the compressed data", zipped.clone(), true, body_of(&zipped)),
        ("encrypted: the decrypted entity", encrypted(&edi, &station.cert), false, edi.clone()),
        ("encrypted, compressed: the compressed entity", encrypted(&zipped, &station.cert), true, zipped.clone()),
        ("encrypted bare content (Mendelson)", encrypted(&bare, &station.cert), true, bare.clone()),
    ];
    for (i, (case, msg, signed_mdn, covered)) in cases.into_iter().enumerate() {
        let (hs, body) = request("acme", "edinode", &format!("<rfc-mic-{i}@test>"), Some(if signed_mdn { "signed" } else { "unsigned" }), &msg);
        let mdn = post_for_mdn(&node, station, &hs, body);
        assert!(mdn.disposition.is_positive(), "{case}: {} {}", mdn.disposition_raw, mdn.text);
        assert_eq!(mdn.signed, signed_mdn, "{case}");
        let alg = if signed_mdn { DigestAlg::Sha256 } else { DigestAlg::Sha1 };
        assert_eq!(mdn.received_mic, Some(compute_mic(&covered, alg)), "{case}");
    }
    let files = wait_for(10, "the deliveries", || Some(delivered(&p.dir.path().join("inbox"), "edinode", "acme")).filter(|d| d.len() == 7));
    assert!(files.iter().any(|(_, d)| d == &bare), "the bare content is delivered as is");
}

/// What a fake receiver of our unsigned messages hashes.
#[derive(Clone, Copy)]
enum Basis {
    /// RFC 4130 section 7.3.1, in the requested algorithm (sha256 when none is asked for).
    Rfc,
    /// The payload entity with its headers after decompression (edinode before issue 9), sha1.
    DecompressedEntity,
}

/// A partner that opens our message as an RFC 4130 receiver would and answers a signed MDN
/// whose MIC is over `basis`.
fn mic_partner(acme: &Identity, basis: Basis) -> String {
    use edinode_proto::unwrap::{self, compute_mic, Step};
    let acme = acme.clone();
    http_listener(move |hs, body| {
        let l = MimeLimits::default();
        let get = |n: &str| hs.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone()).unwrap_or_default();
        let headers: Vec<edinode_proto::mime::Header> = hs.iter().map(|(k, v)| edinode_proto::mime::Header { name: k.clone(), value: v.clone() }).collect();
        let mut e = unwrap::entity_from_http(&headers, body);
        let mut rfc = None;
        loop {
            match unwrap::classify(&e, &l).unwrap() {
                Step::Decrypt => {
                    e = edinode_proto::cms::decrypt(&to_http(&e).1, &[(acme.key.clone(), acme.cert.clone())]).unwrap();
                    rfc.get_or_insert(e.clone());
                }
                Step::Decompress => {
                    rfc.get_or_insert(to_http(&e).1);
                    e = unwrap::decompress(&e, 1 << 24, &l).unwrap();
                }
                Step::Payload => break,
                Step::Verify => panic!("the message was to be unsigned"),
            }
        }
        let rfc = rfc.unwrap_or_else(|| body.to_vec());
        let asked = get("disposition-notification-options").rsplit(',').next().and_then(DigestAlg::parse);
        let mic = match basis {
            Basis::Rfc => compute_mic(&rfc, asked.unwrap_or(DigestAlg::Sha256)),
            Basis::DecompressedEntity => compute_mic(&e, DigestAlg::Sha1),
        };
        let d = edinode_proto::error::Disposition::Processed;
        let (mhs, mbody) = build_mdn("acme", "edinode", &get("message-id"), &d, Some(&mic), Some(&acme));
        (200, mhs, mbody)
    })
}

/// RFC 4130 section 7.3.1, sending: unsigned messages settle with a receiver that follows it;
/// a receiver that hashes another basis is accepted with a note, or refused under strict_mic.
#[test]
fn unsigned_messages_settle_by_the_rfc4130_mic_and_note_other_bases() {
    let p = pair("edinode", "acme");
    let rfc = mic_partner(&p.partner, Basis::Rfc);
    let other = mic_partner(&p.partner, Basis::DecompressedEntity);
    // (case, partner url, outbound settings, outcome, note expected)
    let cases = [
        ("encrypted, compressed, sha-256 asked for", &rfc, "encrypt = \"aes256-cbc\"\ncompress = \"before\"", "sent", false),
        ("encrypted", &rfc, "encrypt = \"3des\"", "sent", false),
        ("compressed", &rfc, "encrypt = \"none\"\ncompress = \"before\"", "sent", false),
        ("plain, unsigned MDN: no algorithm asked for", &rfc, "encrypt = \"none\"\nmdn_signed = false", "sent", false),
        ("decompressed entity, sha1", &other, "encrypt = \"aes128-cbc\"\ncompress = \"before\"", "sent", true),
        ("decompressed entity, strict", &other, "encrypt = \"aes128-cbc\"\ncompress = \"before\"\nstrict_mic = true", "failed", false),
    ];
    let dir = p.dir.path();
    let mut cfg = ConfigBuilder::new(dir);
    for (i, (_, url, outbound, _, _)) in cases.iter().enumerate() {
        cfg = cfg.station(&format!("st{i}"), &format!("edinode{i}"), &p.station).raw(&format!(
            "\n[partners.p{i}]\nas2_id = \"acme\"\nstation = \"st{i}\"\nverify_certs = [\"{c}\"]\nencryption_cert = \"{c}\"\nurl = \"{url}\"\n[partners.p{i}.outbound]\nsign = \"none\"\nmdn = \"sync\"\nattempts = 1\n{outbound}\n",
            c = p.partner.cert_pem.display()
        ));
    }
    let node = start_node(&cfg.write(dir), dir, &[], &[("EDINODE__ADMIN__LISTEN", ""), ("EDINODE__ADMIN__TOKEN", TOKEN)]);
    let sent: Vec<String> = (0..cases.len()).map(|i| admin_send(&node.url, TOKEN, &format!("st{i}"), &format!("p{i}"), &[("po.edi", "application/edi-x12", format!("ISA*{i}~\r\n").into_bytes())]).0).collect();
    let mut failures = Vec::new();
    for ((case, _, _, outcome, note), id) in cases.iter().zip(&sent) {
        let m = wait_for(30, "an outcome", || Some(admin_message(&node.url, TOKEN, id)).filter(|m| matches!(m["summary"]["status"].as_str(), Some("sent" | "failed"))));
        let last = history(&m).last().cloned().unwrap_or_default();
        let ok = m["summary"]["status"] == *outcome
            && match (*outcome, *note) {
                ("sent", false) => last.1 == "delivered; MDN verified",
                ("sent", true) => last.1.contains("note: the partner's MIC is over the payload entity") && last.1.contains("sha1"),
                _ => last.1.contains("strict_mic"),
            };
        if !ok {
            failures.push(format!("{case}: {} {last:?}", m["summary"]["status"]));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // The algorithm asked for is the one expected.
    let m = admin_message(&node.url, TOKEN, &sent[0]);
    assert!(m["summary"]["mic"].as_str().unwrap().ends_with("sha-256"), "{m}");
    let m = admin_message(&node.url, TOKEN, &sent[3]);
    assert!(m["summary"]["mic"].as_str().unwrap().ends_with("sha1"), "{m}");
}
