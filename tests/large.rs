//! Large messages stream through the node in bounded memory (issue 13): a message far above
//! `limits.stream_threshold_bytes` is received, decrypted, verified, decompressed and delivered
//! byte-exact, answered with a signed MDN carrying the right MIC, while the node's peak RSS stays
//! under 96 MiB. CI runs 64 MiB (all layers) and 24 MiB per single layer and for two
//! attachments; `EDINODE_LARGE_MIB` raises the size, and the ignored `one_gib` test runs 1 GiB.

use crate::common::*;
use edinode_proto::alg::DigestAlg;
use openssl::hash::{hash, MessageDigest};

/// The bound the issue sets for the node's peak RSS, whatever the message size.
const RSS_BOUND_KIB: u64 = 96 * 1024;

/// Deterministic, somewhat compressible document bytes (EDI-like lines with a counter and
/// a stretch of noise).
fn document(size: usize, seed: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    let mut n = 0u64;
    while out.len() < size {
        out.extend_from_slice(format!("LIN*{n}*BP*{seed}-PART-{:08}~\r\n", n * 7).as_bytes());
        for _ in 0..24 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            out.push((x & 0xff) as u8);
        }
        n += 1;
    }
    out.truncate(size);
    out
}

/// The node's peak resident set (VmHWM) in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap()
}

struct Layers {
    sign: bool,
    compress: bool,
    encrypt: bool,
}

/// EnvelopedData with AES-256-CBC, as the message is encrypted.
fn encrypted_aes256(inner: &[u8], to: &openssl::x509::X509) -> Vec<u8> {
    use edinode_proto::alg::{ContentCipher, KeyTransport};
    let der = edinode_proto::cms::encrypt(inner, to, ContentCipher::Aes256Cbc, KeyTransport::RsaPkcs1v15).unwrap();
    let mut out = b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\nContent-Transfer-Encoding: binary\r\n\r\n".to_vec();
    out.extend_from_slice(&der);
    out
}

fn b64(d: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(d)
}

/// Send one message of `docs` with `layers` to a fresh embedded node; check delivery, MDN, RSS.
fn round_trip(docs: &[(&str, Vec<u8>)], layers: Layers) -> u64 {
    let tmp = tempfile::tempdir().unwrap();
    let station = identity(tmp.path(), "station");
    let partner = identity(tmp.path(), "partner");
    let cfg = ConfigBuilder::new(tmp.path())
        .station("st", "STATION", &station)
        .partner("pa", "PARTNER", "st", &[&partner.cert_pem], "")
        .raw("\n[limits]\nmax_header_bytes = 65536\nmax_mime_depth = 8\nmax_decompressed_bytes = 4294967296\ninline_threshold_bytes = 1048576\nstream_threshold_bytes = 8388608\nduplicate_retention_days = 30\n")
        .write(tmp.path());
    // A debug build on a busy machine takes minutes for 1 GiB: the synchronous MDN may wait.
    let cfg_text = std::fs::read_to_string(&cfg).unwrap().replace("[http]\n", "[http]\nmax_body_bytes = 4294967296\n").replace("sync_mdn_timeout_secs = 60", "sync_mdn_timeout_secs = 1800");
    std::fs::write(&cfg, cfg_text).unwrap();
    let node = start_node(&cfg, tmp.path(), &[], &[]);

    // The payload entity: one document, or a multipart/related of several.
    let mut entity = if docs.len() == 1 {
        build::entity("application/edi-x12", docs[0].0, &docs[0].1)
    } else {
        let b = "large-rel-boundary";
        let mut e = format!("Content-Type: multipart/related; boundary=\"{b}\"; type=\"application/edi-x12\"\r\n\r\n").into_bytes();
        for (name, data) in docs {
            e.extend_from_slice(format!("--{b}\r\n").as_bytes());
            e.extend_from_slice(&build::entity("application/edi-x12", name, data));
            e.extend_from_slice(b"\r\n");
        }
        e.extend_from_slice(format!("--{b}--\r\n").as_bytes());
        e
    };
    if layers.compress {
        entity = build::compressed(&entity);
    }
    // The MIC the MDN must return: over the signed entity (signed), the decrypted entity
    // (encrypted only) or the body as sent (neither).
    let mut mic = None;
    if layers.sign {
        mic = Some(b64(&hash(MessageDigest::sha256(), &entity).unwrap()));
        entity = build::signed(&entity, &partner.key, &partner.cert, DigestAlg::Sha256);
    }
    if layers.encrypt {
        if mic.is_none() {
            mic = Some(b64(&hash(MessageDigest::sha256(), &entity).unwrap()));
        }
        entity = encrypted_aes256(&entity, &station.cert);
    }
    let (headers, body) = build::request("PARTNER", "STATION", "<large-1@partner>", Some("signed"), &entity);
    if mic.is_none() {
        mic = Some(b64(&hash(MessageDigest::sha256(), &body).unwrap()));
    }
    drop(entity);
    let (status, mdn_headers, mdn) = post_capture_within(&node.as2_url(), &headers, body, std::time::Duration::from_secs(1800));
    let text = String::from_utf8_lossy(&mdn).to_string();
    assert_eq!(status, 200, "{text}");
    let ct = mdn_headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.as_str()).unwrap_or("");
    assert!(ct.starts_with("multipart/signed"), "a signed MDN: {ct}");
    assert!(text.contains("Disposition: automatic-action/MDN-sent-automatically; processed\r\n"), "{text}");
    assert!(text.contains(&format!("Received-Content-MIC: {}, sha-256", mic.unwrap())), "{text}");

    let files = wait_for(600, "delivery", || {
        let d = delivered_names(&tmp.path().join("inbox"), "st", "pa");
        (d.len() == docs.len()).then_some(d)
    });
    for (name, data) in docs {
        let path = files.iter().find(|p| p.file_name().is_some_and(|f| f == *name)).unwrap_or_else(|| panic!("{name} not delivered: {files:?}"));
        assert_eq!(std::fs::metadata(path).unwrap().len(), data.len() as u64, "{name}");
        assert!(std::fs::read(path).unwrap() == *data, "{name} delivered byte-exact");
    }
    let rss = peak_rss_kib(node.child.id());
    let log = std::fs::read_to_string(&node.log).unwrap_or_default();
    assert!(log.contains("Large layer streamed") || !layers.sign && !layers.encrypt && !layers.compress, "the layers streamed: {log}");
    assert!(rss < RSS_BOUND_KIB, "node peak RSS {rss} KiB over the {RSS_BOUND_KIB} KiB bound");
    eprintln!("large message: node peak RSS {rss} KiB");
    rss
}

/// Paths of the files delivered under `inbox/<station>/<partner>/` (not read: they are large).
fn delivered_names(inbox: &std::path::Path, station: &str, partner: &str) -> Vec<std::path::PathBuf> {
    let Ok(rd) = std::fs::read_dir(inbox.join(station).join(partner)) else { return Vec::new() };
    rd.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect()
}

fn size_mib(default: usize) -> usize {
    std::env::var("EDINODE_LARGE_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn signed_compressed_encrypted_streams_in_bounded_memory() {
    let n = size_mib(64) << 20;
    round_trip(&[("big.edi", document(n, 1))], Layers { sign: true, compress: true, encrypt: true });
}

#[test]
fn signed_only_streams() {
    round_trip(&[("signed.edi", document(24 << 20, 2))], Layers { sign: true, compress: false, encrypt: false });
}

#[test]
fn encrypted_only_streams() {
    round_trip(&[("encrypted.edi", document(24 << 20, 3))], Layers { sign: false, compress: false, encrypt: true });
}

#[test]
fn compressed_only_streams() {
    round_trip(&[("compressed.edi", document(24 << 20, 4))], Layers { sign: false, compress: true, encrypt: false });
}

#[test]
fn two_attachments_stream() {
    round_trip(&[("first.edi", document(12 << 20, 5)), ("second.edi", document(10 << 20, 6))], Layers { sign: true, compress: false, encrypt: true });
}

#[test]
#[ignore = "1 GiB: minutes and about 6 GiB in the test process; run by hand with --run-ignored only -E 'test(one_gib)'"]
fn one_gib() {
    round_trip(&[("gib.edi", document(1 << 30, 7))], Layers { sign: true, compress: true, encrypt: true });
}

const LARGE_LIMITS: &str = "\n[limits]\nmax_header_bytes = 65536\nmax_mime_depth = 8\nmax_decompressed_bytes = 4294967296\ninline_threshold_bytes = 1048576\nstream_threshold_bytes = 8388608\nduplicate_retention_days = 30\n";
const ADMIN_TOKEN: &str = "large-token";

/// The config of a node for large messages: big bodies and a patient synchronous MDN.
fn large_config(cfg: ConfigBuilder, dir: &std::path::Path) -> std::path::PathBuf {
    let path = cfg.raw(LARGE_LIMITS).write(dir);
    let text = std::fs::read_to_string(&path).unwrap().replace("[http]\n", "[http]\nmax_body_bytes = 4294967296\n").replace("sync_mdn_timeout_secs = 60", "sync_mdn_timeout_secs = 1800");
    std::fs::write(&path, text).unwrap();
    path
}

/// Send `docs` from one node to another with `outbound` (the `[partners.beta.outbound]`
/// lines): the sender takes them through /api/send, builds the message as it streams and
/// POSTs it; the receiver delivers them byte-exact; the sender settles the message from the
/// signed MDN. Returns both nodes' peak RSS (KiB), each under the bound.
fn send_large(docs: &[(&str, Vec<u8>)], outbound: &str) -> (u64, u64) {
    let tmp = tempfile::tempdir().unwrap();
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    let (alpha, beta) = (identity(&da, "alpha"), identity(&db, "beta"));
    let cb = large_config(ConfigBuilder::new(&db).station("beta", "beta", &beta).partner("alpha", "alpha", "beta", &[&alpha.cert_pem], ""), &db);
    let nb = start_node(&cb, &db, &[], &[]);
    let ca = large_config(
        ConfigBuilder::new(&da).station("alpha", "alpha", &alpha).raw(&format!(
            "\n[partners.beta]\nas2_id = \"beta\"\nstation = \"alpha\"\nverify_certs = [\"{c}\"]\nencryption_cert = \"{c}\"\nurl = \"{url}\"\n[partners.beta.outbound]\n{outbound}\ntimeout_secs = 1800\nrequire_signed_mdn = true\n",
            c = beta.cert_pem.display(),
            url = nb.as2_url(),
        )),
        &da,
    );
    let na = start_node(&ca, &da, &[], &[("EDINODE__ADMIN__LISTEN", ""), ("EDINODE__ADMIN__TOKEN", ADMIN_TOKEN)]);
    let form: Vec<(&str, &str, Vec<u8>)> = docs.iter().map(|(n, d)| (*n, "application/edi-x12", d.clone())).collect();
    let (id, _) = admin_send(&na.url, ADMIN_TOKEN, "alpha", "beta", &form);
    drop(form);
    let m = wait_until(1800, &format!("message {id} to finish"), || {
        let m = admin_message(&na.url, ADMIN_TOKEN, &id);
        if matches!(m["summary"]["status"].as_str(), Some("sent") | Some("failed")) { Ok(m) } else { Err(m.to_string()) }
    });
    let log_a = std::fs::read_to_string(&na.log).unwrap_or_default();
    assert_eq!(m["summary"]["status"], "sent", "{m}\n{log_a}");
    let files = wait_for(600, "delivery", || {
        let d = delivered_names(&db.join("inbox"), "beta", "alpha");
        (d.len() == docs.len()).then_some(d)
    });
    for (name, data) in docs {
        let path = files.iter().find(|p| p.file_name().is_some_and(|f| f == *name)).unwrap_or_else(|| panic!("{name} not delivered: {files:?}"));
        assert_eq!(std::fs::metadata(path).unwrap().len(), data.len() as u64, "{name}");
        assert!(std::fs::read(path).unwrap() == *data, "{name} delivered byte-exact");
    }
    assert!(log_a.contains("Large outbound layer streamed") || !outbound.contains("encrypt") && !outbound.contains("compress"), "the sender streamed its layers");
    let (ra, rb) = (peak_rss_kib(na.child.id()), peak_rss_kib(nb.child.id()));
    assert!(ra < RSS_BOUND_KIB, "sender peak RSS {ra} KiB over the {RSS_BOUND_KIB} KiB bound");
    assert!(rb < RSS_BOUND_KIB, "receiver peak RSS {rb} KiB over the {RSS_BOUND_KIB} KiB bound");
    eprintln!("large outbound message: sender peak RSS {ra} KiB, receiver {rb} KiB");
    (ra, rb)
}

const ALL_LAYERS: &str = "sign = \"sha256\"\nencrypt = \"aes256-cbc\"\ncompress = \"before\"\nmdn = \"sync\"\nmdn_signed = true";

#[test]
fn outbound_signed_compressed_encrypted_streams_in_bounded_memory() {
    let n = size_mib(64) << 20;
    send_large(&[("out.edi", document(n, 8))], ALL_LAYERS);
}

#[test]
fn outbound_two_attachments_signed_only_stream() {
    send_large(&[("one.edi", document(12 << 20, 9)), ("two.edi", document(10 << 20, 10))], "sign = \"sha256\"\nencrypt = \"none\"\ncompress = \"after\"\nmdn = \"sync\"\nmdn_signed = true");
}

#[test]
#[ignore = "1 GiB out: minutes and about 3 GiB in the test process; run by hand with --run-ignored only -E 'test(outbound_one_gib)'"]
fn outbound_one_gib() {
    send_large(&[("gib-out.edi", document(1 << 30, 11))], ALL_LAYERS);
}
