//! Entry points of the cargo-fuzz targets in `fuzz/` and of the corpus replay test
//! (`tests/fuzz_corpus.rs`). Not an API.
//!
//! Each function takes arbitrary bytes and runs one family of readers the way the node runs
//! them on what a partner sends: the AS2 request headers, MIME entities, the CMS layers
//! (classify, decrypt, verify, decompress), MDNs, and what is POSTed to `/as4`. Results are
//! dropped; a few invariants are asserted. None of them may panic, hang or allocate without
//! bound, whatever the input.
//!
//! Where a key is needed, a fixed RSA key pair is used ([`FUZZ_KEY_PEM`]): it is public, lives
//! only here, and lets the seed corpus carry messages that really decrypt and verify, so that
//! the fuzzer reaches the layers behind them.

use std::sync::OnceLock;

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use crate::alg::{ContentCipher, DigestAlg, KeyTransport, MicSpelling, SignaturePadding};
use crate::as4::{self, signal, signals, user_message, wssec};
use crate::error::Disposition;
use crate::headers::{As2Request, parse_as2_name};
use crate::mdn::{self, Mic};
use crate::mime::{self, ContentType, Entity, Header, MimeLimits};
use crate::unwrap::{self, Step};
use crate::{cms, outbound};

/// A throwaway RSA-2048 key: public knowledge, for fuzzing and its tests only. Never configure
/// it anywhere.
pub const FUZZ_KEY_PEM: &str = r"-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDvR8AdmhGbYPLz
/b+QVqHRiWpcopJ+jULYFWes5BejWElFVnIKOlB6Wi0/rvut3wnM3CzgSeRzBIzL
iKS9e1/3yOYIYDCFKhRjcRLcaYsiCVVJ8//Im1zUYJETohON1jebKVAin7TTrKMN
7VLlBxkW9yRVJQijhc+llYwtwF5LjwnY9Il7uUwVd1ebXqz/geSYqb4GJob2QIWo
uOPquxNKRRC0IMg2lCCbGhJhQK2gqVM9SNcz098cicExX6H+nIOopQJmIXawBXA+
RdBPVmEKo8p/LVH7SD7lC28tUgsbsGFC+684bjZ7AeD0Uj7ZZ7JmM7aPE6zK3Dfm
3qzxYuQXAgMBAAECggEAW3QwhP/kd98rrL7Q72F1MsmTOfm3BSCHqmAwAoAhWsC9
LH+4UZltNf5uafc+4XssWzzR+B2175IPICHHWVak3OdPqGbfVJ47MbC/lTfPwkAP
9ZaJLkrXRaLtADSDxcPY9/hn1Pv2mKrUnVeWRcwbNlBadiKT9TAJJ9ALRldOkxDI
639svq0MOA0GElgC7vthJrF8FSM8koH3RKbAzPhZeaU6H2rFrHFj7lWkncNbCSU8
CKWOuc0Kg2So6amIhGkVEqhJjMPeywB5bfryw4x+G/GCxJ4ARQMd/vDxVhImx2LV
Nr1AR+PXLaYJlnE0+eIW5dABu8bm5xKT4pfuCa6y0QKBgQD7MlOOU+KKa37hwmeP
DCvQLvYLBuTNl/5wDrWJUgxOv2yUBGC9REkyEjdmqsR4g1NErmLBYG5NsWKpkCJy
l8DpXN0Lhua3Tv2jj/9wGHnt2bco5sCZuEn6OBv/VV7AA8ubI9CH836S3FeGlmEW
RzW6H+CXB3jy1C1wnRnJoSiX8QKBgQDz2xcvY9Af6yHDkCVN4hoSFPr+CEhyYvgg
3j90QHsmvOL8TJr32Q2nJP4iAyWhHHRXr0u4l/vxx7cM763sC9s8JoPCBd9uAy5V
3Ir5663NsP9JNxR0U/xFJ8ByYhTL7a7lsjy6Dhk4HndsZ+DNSzXXJFQJkulhCHSv
/ALDv0sEhwKBgQCbLrkN2Wa/iq8k+zuM1MEQaKKZp1WcaYTHZ17hCa4OzBVgz9+P
rWrmovhU1bRwmvjLGkxqGI+sMaS5ChEt5/BGepcYMuu/XO42qJPuhUB2HyUXAI8F
qCMTkKxDLlNNnkqfeh2uj0+nnLX5sFckMzPO2zidNQGUSl4UDwnKVWRFkQKBgQCj
J0rz4gw1ztPgTGkpGsXmozLrFA+kuKLbGtfJp/q9iFM2CusEOKzxz8ZYa1KZ4LfW
kupOryFaOw02EoaDD8u3Cu3MurEqoeY2fEBfxlea73leOwPscOSwQFB6NzVC29vQ
wtfug9BLw9aTKU03DcMQFrZDUY/j5AxuUmZnIW3HsQKBgGOKibWmWyLzN9VyUegV
5m5wjxzzztihKFxdc132IZlgFCPlxTOCl60CvV+jsPTDN7duLGADq3ohS0G1d1JV
0BYUisFwaUIhLhrBpOuPHQzJhoOf68XBltZPSowaOfSx/qQVODwFuQj/ANYTWvN/
JpGwwgxU+RqZOQoAsOUyocxu
-----END PRIVATE KEY-----
";

/// The self-signed certificate of [`FUZZ_KEY_PEM`] (CN "edinode fuzzing (public test key)").
pub const FUZZ_CERT_PEM: &str = r"-----BEGIN CERTIFICATE-----
MIIDKTCCAhGgAwIBAgICEJIwDQYJKoZIhvcNAQELBQAwLDEqMCgGA1UEAwwhZWRp
bm9kZSBmdXp6aW5nIChwdWJsaWMgdGVzdCBrZXkpMCAXDTI2MTIwMTE0MTA0MloY
DzIxMjYxMTA3MTQxMDQyWjAsMSowKAYDVQQDDCFlZGlub2RlIGZ1enppbmcgKHB1
YmxpYyB0ZXN0IGtleSkwggEiMA0GCSqGSIb3DQEBAQUAA4IBDwAwggEKAoIBAQDv
R8AdmhGbYPLz/b+QVqHRiWpcopJ+jULYFWes5BejWElFVnIKOlB6Wi0/rvut3wnM
3CzgSeRzBIzLiKS9e1/3yOYIYDCFKhRjcRLcaYsiCVVJ8//Im1zUYJETohON1jeb
KVAin7TTrKMN7VLlBxkW9yRVJQijhc+llYwtwF5LjwnY9Il7uUwVd1ebXqz/geSY
qb4GJob2QIWouOPquxNKRRC0IMg2lCCbGhJhQK2gqVM9SNcz098cicExX6H+nIOo
pQJmIXawBXA+RdBPVmEKo8p/LVH7SD7lC28tUgsbsGFC+684bjZ7AeD0Uj7ZZ7Jm
M7aPE6zK3Dfm3qzxYuQXAgMBAAGjUzBRMB0GA1UdDgQWBBS8vDx1wQL+chFTsLb/
HHGo2aSgKTAfBgNVHSMEGDAWgBS8vDx1wQL+chFTsLb/HHGo2aSgKTAPBgNVHRMB
Af8EBTADAQH/MA0GCSqGSIb3DQEBCwUAA4IBAQBuj26VMuglbuKTR+VfQdemOv9a
41W/j4sjfqn2YybeSAjzsrncBx+uIKj8rDp5m8cwLJS2NqUMFvPihprnCe3wUskR
LUv5f5JkznYwhXNe7BOGUVlII2tSXF8HsHiaopTpV5KqjcUwW38bYFGYfeCv6iqp
ZolGcXtxT0d8w6O3hIzvZWlYGTPB5RfqA0P/tLr5HeQLek/hIJewvsF5+7WUVfSs
OhLRfuPvYmHFursrotia5UJft2hM/kXmHVC9GWkjp9rspZmXQOolXHkYFypYAZft
f5Z4ridyGxWOGRY29V04GqrnqZi3AqntXFjHybxDCU110J9GUK2HM6pzqyp/
-----END CERTIFICATE-----
";

/// The most a fuzzed decompression may produce (the node's own limit is far larger; the
/// bound is what is tested, not its size).
const MAX_DECOMPRESSED: usize = 1 << 20;

/// How many layers the unwrap loop opens at most (the unwrapper's default depth limit).
const MAX_LAYERS: usize = 8;

struct Identity {
    key: PKey<Private>,
    cert: X509,
}

fn identity() -> Option<&'static Identity> {
    static ID: OnceLock<Option<Identity>> = OnceLock::new();
    ID.get_or_init(|| {
        let key = PKey::private_key_from_pem(FUZZ_KEY_PEM.as_bytes()).ok()?;
        let cert = X509::from_pem(FUZZ_CERT_PEM.as_bytes()).ok()?;
        Some(Identity { key, cert })
    })
    .as_ref()
}

fn keys() -> Vec<(PKey<Private>, X509)> {
    identity().map(|i| vec![(i.key.clone(), i.cert.clone())]).unwrap_or_default()
}

fn trusted() -> Vec<X509> {
    identity().map(|i| vec![i.cert.clone()]).unwrap_or_default()
}

/// Splits at the first blank line (CRLF or LF): (header block, body). Without one, all of it
/// is the header block.
fn split_head(data: &[u8]) -> (&[u8], &[u8]) {
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'\n' {
            if data.get(i + 1) == Some(&b'\n') {
                return (&data[..i], &data[i + 2..]);
            }
            if data.get(i + 1) == Some(&b'\r') && data.get(i + 2) == Some(&b'\n') {
                return (&data[..i], &data[i + 3..]);
            }
        }
        i += 1;
    }
    (data, &[])
}

/// `Name: value` lines as an HTTP server hands them over (one field a line, no folding);
/// lines without a colon are dropped.
fn http_headers(block: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(block)
        .split('\n')
        .filter_map(|line| {
            let (n, v) = line.split_once(':')?;
            Some((n.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn first_line(data: &[u8]) -> (String, &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(p) => (String::from_utf8_lossy(&data[..p]).trim().to_string(), &data[p + 1..]),
        None => (String::from_utf8_lossy(data).trim().to_string(), &[]),
    }
}

// ---------------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------------

/// The AS2 request headers (`Name: value` lines, then a blank line and the body): typed
/// [`As2Request`], then the first entity built from them and its classification, as the HTTP
/// receiver does.
pub fn as2_headers(data: &[u8]) {
    let (head, body) = split_head(data);
    let headers: Vec<Header> =
        http_headers(head).into_iter().map(|(name, value)| Header { name, value }).collect();
    if let Ok(r) = As2Request::from_headers(&headers) {
        for name in [&r.as2_from, &r.as2_to] {
            assert!((1..=128).contains(&name.len()), "AS2 name length {}", name.len());
            assert!(name.bytes().all(|b| (0x20..=0x7e).contains(&b)), "AS2 name {name:?}");
        }
        assert!(!r.message_id.is_empty() && r.message_id.len() <= 998);
        let _ = r.bare_message_id();
        if let Some(m) = &r.mdn {
            let _ = m.preferred_micalg();
        }
    }
    for h in &headers {
        let _ = parse_as2_name(&h.value);
    }
    let limits = MimeLimits::default();
    let entity = unwrap::entity_from_http(&headers, body);
    let _ = unwrap::classify(&entity, &limits);
}

/// MIME entities: headers, Content-Type parameters, transfer decoding, filenames, multipart
/// splitting (nested a few levels), and the payload's documents.
pub fn mime(data: &[u8]) {
    let limits = MimeLimits::default();
    mime_entity(data, &limits, 0);
    let (line, _) = first_line(data);
    let ct = ContentType::parse(&line);
    let _ = ct.param("boundary");
    if let Some(b) = ct.param("boundary") {
        let _ = mime::split_multipart(data, b, &limits);
    }
    let _ = unwrap::documents(data, &limits);
    let _ = unwrap::mic::content_mic(data, DigestAlg::Sha256, &limits);
    let c = mime::canonicalize_crlf(data);
    assert!(!c.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r') && c.first() != Some(&b'\n'));
    let _ = unwrap::as_entity(data.to_vec(), &limits);
}

fn mime_entity(raw: &[u8], limits: &MimeLimits, depth: usize) {
    let Ok(e) = Entity::parse(raw, limits) else { return };
    assert!(raw.ends_with(e.body) && e.headers.len() <= limits.max_headers);
    let ct = e.content_type();
    let _ = e.transfer_encoding();
    let _ = e.decoded_body();
    let _ = e.decoded_body_ref();
    if let Some(f) = e.filename() {
        assert!(!f.is_empty() && f.len() <= 255, "filename {f:?}");
        assert!(!f.contains(['/', '\\']) && !f.starts_with('.'), "filename {f:?}");
        assert!(!f.chars().any(char::is_control), "filename {f:?}");
    }
    if ct.mime.starts_with("multipart/")
        && depth < 4
        && let Ok(parts) = mime::split_multipart(e.body, ct.param("boundary").unwrap_or(""), limits)
    {
        assert!(parts.len() <= limits.max_parts + 1);
        for p in parts {
            mime_entity(p, limits, depth + 1);
        }
    }
}

/// The CMS layers: the readers on raw DER/BER (content type, decompression, decryption and
/// signature checks with the fixed key), then the input as a MIME entity unwrapped layer by
/// layer as the unwrapper, decryptor and verifier actors do.
pub fn cms(data: &[u8]) {
    let keys = keys();
    let trusted = trusted();
    let _ = cms::kind(data);
    if let Ok(out) = cms::decompress(data, MAX_DECOMPRESSED) {
        assert!(out.len() <= MAX_DECOMPRESSED);
    }
    let _ = cms::decrypt(data, &keys);
    let _ = cms::verify_embedded(data, &trusted);
    let _ = cms::verify_detached(data, b"fuzz", &trusted);

    let limits = MimeLimits::default();
    let mut bytes = data.to_vec();
    for _ in 0..MAX_LAYERS {
        let next = match unwrap::classify(&bytes, &limits) {
            Ok(Step::Decrypt) => unwrap::decrypt_owned(bytes, &keys, &limits),
            Ok(Step::Verify) => unwrap::verify(&bytes, &trusted, Some(DigestAlg::Sha256), &limits).map(|v| v.inner),
            Ok(Step::Decompress) => {
                let out = unwrap::decompress(&bytes, MAX_DECOMPRESSED, &limits);
                if let Ok(o) = &out {
                    // The limit holds for the content; as_entity may add a short header.
                    assert!(o.len() <= MAX_DECOMPRESSED + 64);
                }
                out
            }
            Ok(Step::Payload) => {
                let _ = unwrap::documents(&bytes, &limits);
                let _ = unwrap::mic::content_mic(&bytes, DigestAlg::Sha1, &limits);
                return;
            }
            Err(_) => return,
        };
        match next {
            Ok(b) => bytes = b,
            Err(e) => {
                let _ = e.disposition();
                return;
            }
        }
    }
}

/// MDNs: the whole input as a MIME entity (no HTTP Content-Type), and again as HTTP headers
/// plus body; signatures are checked against the fixed key.
pub fn mdn(data: &[u8]) {
    let limits = MimeLimits::default();
    let trusted = trusted();
    let whole = mdn::parse(&[], data, &trusted, &limits);
    check(&whole);
    let (head, body) = split_head(data);
    let headers = http_headers(head);
    if !headers.is_empty() {
        let split = mdn::parse(&headers, body, &trusted, &limits);
        check(&split);
    }
}

fn check(parsed: &Result<mdn::ParsedMdn, mdn::MdnError>) {
    match parsed {
        Ok(p) => {
            let _ = p.answers("<fuzz@edinode>");
            assert!(p.text.len() <= 4096 + 3);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fn fuzz_mic() -> Mic {
    unwrap::compute_mic(b"Content-Type: text/plain\r\n\r\nfuzz", DigestAlg::Sha256)
}

/// What a partner POSTs to `/as4`: the first line is the HTTP Content-Type, the rest the body.
/// Parsed as the pull sender does (signals, WS-Security), with its error answer built; read as
/// a pull response too; and any well-formed document canonicalized.
pub fn as4(data: &[u8]) {
    let limits = as4::Limits::default();
    let (content_type, body) = first_line(data);
    match signal::parse(&content_type, body, &limits) {
        Ok(inc) => {
            let _ = inc.message_id();
            let _ = inc.settled_message_ids();
            if let Some(s) = &inc.signed {
                assert_eq!(s.thumbprint.len(), 40);
            }
            if let Some(p) = &inc.pull {
                let d = signals::ErrorDetail::not_authorized(&p.mpc);
                let _ = signals::error(Some(&p.message_id), &d, &reply_ids());
            }
        }
        Err(e) => {
            let _ = e.answer();
            if let Some(d) = signals::ErrorDetail::for_inbound(&e) {
                let _ = signals::error(e.ref_to_message_id.as_deref(), &d, &reply_ids());
            }
        }
    }
    let _ = user_message::parse_pulled(&content_type, body, &limits);
    // The canonicalizer over any well-formed document (in the node it only sees what a
    // signature references). roxmltree directly: the bounded reader is private to `as4`.
    let text = std::str::from_utf8(body).ok().filter(|t| t.len() <= limits.max_bytes);
    let opts = roxmltree::ParsingOptions { allow_dtd: false, nodes_limit: limits.max_nodes, ..Default::default() };
    if let Some(doc) = text.and_then(|t| roxmltree::Document::parse_with_options(t, opts).ok()) {
        for with_comments in [false, true] {
            let opts = as4::c14n::ExcC14n { with_comments, inclusive_prefixes: vec!["#default".into()] };
            let mut out = Vec::new();
            let _ = as4::c14n::canonicalize_document(&doc, &opts, &mut out);
        }
    }
}

fn reply_ids() -> signals::SignalIds {
    signals::SignalIds { message_id: "reply@edinode".into(), timestamp: "2026-01-01T00:00:00.000Z".into() }
}

// ---------------------------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------------------------

/// One fuzz target: its name and entry function.
pub(crate) type Target = (&'static str, fn(&[u8]));

/// One seed input: (target, name, bytes).
pub(crate) type Seed = (&'static str, String, Vec<u8>);

/// The fuzz targets, by name (the `fuzz/fuzz_targets/<name>.rs` files and corpus folders).
pub const TARGETS: [Target; 5] =
    [("as2_headers", as2_headers), ("mime", mime), ("cms", cms), ("mdn", mdn), ("as4", as4)];

/// Valid inputs for each target, built with this crate's own writers (and the fixed key):
/// the starting corpus.
pub fn seeds() -> Result<Vec<Seed>, String> {
    let id = identity().ok_or("the fixed fuzzing key does not load")?;
    let mut out: Vec<Seed> = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| out.push((target, name.to_string(), bytes));

    // AS2 request headers.
    add(
        "as2_headers",
        "full",
        b"AS2-Version: 1.2\r\nAS2-From: \"Acme Corp\"\r\nAS2-To: edinode\r\nMessage-ID: <abc@host>\r\nSubject: orders\r\nDisposition-Notification-To: mailto:x@y\r\nDisposition-Notification-Options: signed-receipt-protocol=optional, pkcs7-signature; signed-receipt-micalg=optional, sha3-256, SHA-384, sha1\r\nReceipt-Delivery-Option: https://partner/mdn?x=1\r\nEDIINT-Features: multiple-attachments, CEM\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\nContent-Transfer-Encoding: binary\r\n\r\n0\x80".to_vec(),
    );
    add("as2_headers", "minimal", b"AS2-From: a\nAS2-To: b\nMessage-ID: <x>\nDisposition-Notification-To: x\n\nbody".to_vec());
    add(
        "as2_headers",
        "escaped_names",
        b"as2-from: \"a \\\"quoted\\\" name\"\r\nas2-to: \"\"\r\nmessage-id: <>\r\nas2-version: 1.1\r\nContent-Type: multipart/signed; boundary=x\r\n\r\n".to_vec(),
    );

    // MIME entities.
    add(
        "mime",
        "folded",
        b"Content-Type: multipart/signed;\r\n\tboundary=\"abc\"; micalg=sha-256\r\nX: y\r\n\r\n--abc\r\nContent-Type: text/plain\r\n\r\nhello\r\n--abc\r\nContent-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHAqCAMIACAQE=\r\n--abc--\r\n".to_vec(),
    );
    add(
        "mime",
        "related",
        b"Content-Type: multipart/related; boundary=\"B\"; type=\"application/edi-x12\"\r\n\r\npreamble\r\n--B\r\nContent-Type: application/edi-x12\r\nContent-Disposition: attachment; filename=\"../a.edi\"\r\n\r\nISA*00\r\n--B\r\nContent-Type: application/xml; name=b.xml\r\nContent-Transfer-Encoding: base64\r\n\r\nPHg+PC94Pg==\r\n--B\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\nContent-Disposition: attachment; filename*=utf-8''order%201.edi\r\n\r\nline=3Dend=\r\nsoft\r\n--B--\r\nepilogue".to_vec(),
    );
    add(
        "mime",
        "nested_lf",
        b"Content-Type: multipart/mixed; boundary=o\n\n--o\nContent-Type: multipart/related; boundary=\"i\"\n\n--i\nContent-Type: text/plain\n\na\n--i--\n--ox not a delimiter\n--o\n\nno headers\n--o--\n".to_vec(),
    );

    // CMS: AS2 messages as the HTTP receiver hands them on (content headers + body), in every
    // layer order, encrypted for and signed with the fixed key.
    let doc = outbound::Document {
        filename: "order.edi".into(),
        content_type: "application/edi-x12".into(),
        data: b"ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       ~".to_vec(),
    };
    let docs2 = [
        doc.clone(),
        outbound::Document { filename: String::new(), content_type: "text/plain; charset=utf-8".into(), data: b"line one\nline two\n".to_vec() },
    ];
    type Combo = (&'static str, Option<DigestAlg>, bool, Option<ContentCipher>, KeyTransport, outbound::Compression, bool);
    let combos: [Combo; 8] = [
        ("plain", None, false, None, KeyTransport::RsaPkcs1v15, outbound::Compression::None, false),
        ("signed", Some(DigestAlg::Sha256), false, None, KeyTransport::RsaPkcs1v15, outbound::Compression::None, false),
        ("signed_pss_two_docs", Some(DigestAlg::Sha512), true, None, KeyTransport::RsaPkcs1v15, outbound::Compression::None, true),
        ("encrypted_3des", None, false, Some(ContentCipher::Des3), KeyTransport::RsaPkcs1v15, outbound::Compression::None, false),
        ("signed_encrypted_gcm_oaep", Some(DigestAlg::Sha1), false, Some(ContentCipher::Aes256Gcm), KeyTransport::RsaOaep, outbound::Compression::None, false),
        ("compressed", None, false, None, KeyTransport::RsaPkcs1v15, outbound::Compression::BeforeSigning, false),
        ("compressed_signed_encrypted", Some(DigestAlg::Sha256), false, Some(ContentCipher::Aes128Cbc), KeyTransport::RsaPkcs1v15, outbound::Compression::BeforeSigning, false),
        ("signed_then_compressed", Some(DigestAlg::Sha384), false, None, KeyTransport::RsaPkcs1v15, outbound::Compression::AfterSigning, false),
    ];
    for (name, sign, pss, encrypt, key_transport, compression, two) in combos {
        let opts = outbound::OutboundOptions {
            sign,
            pss,
            encrypt,
            key_transport,
            compression,
            mdn: outbound::MdnRequest::Sync { signed: Some(DigestAlg::Sha256) },
            ..Default::default()
        };
        let ids = outbound::OutboundIds { message_id: "<seed@edinode>", boundary_seed: "seed", date: "Thu, 01 Jan 2026 00:00:00 +0000" };
        let docs: &[outbound::Document] = if two { &docs2 } else { std::slice::from_ref(&doc) };
        let built = outbound::build("fuzz-from", "fuzz-to", docs, &opts, Some((&id.key, &id.cert)), Some(&id.cert), &ids, "seed")
            .map_err(|e| format!("seed {name}: {e}"))?;
        let headers: Vec<Header> = built.headers.iter().map(|(n, v)| Header { name: n.clone(), value: v.clone() }).collect();
        add("cms", name, unwrap::entity_from_http(&headers, &built.body));
        if name == "signed" {
            let mut http = Vec::new();
            for (n, v) in &built.headers {
                http.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
            }
            http.extend_from_slice(b"\r\n");
            http.extend_from_slice(&built.body);
            add("as2_headers", "signed_request", http);
        }
    }
    // Bare CMS: compressed (DER, and BER with indefinite lengths and a chunked OCTET STRING),
    // enveloped, detached and embedded signed data.
    let e = |err: cms::CmsError| err.to_string();
    add("cms", "der_compressed", cms::compress(b"some payload some payload some payload").map_err(e)?);
    add("cms", "ber_compressed", ber_compressed(b"chunked payload"));
    add("cms", "der_enveloped", cms::encrypt(b"fuzz", &id.cert, ContentCipher::Aes128Cbc, KeyTransport::RsaPkcs1v15).map_err(e)?);
    let detached_opts = cms::SignOptions { padding: SignaturePadding::Pkcs1v15, signed_attributes: false, algorithm_protection: false, include_cert: true };
    add("cms", "der_detached_no_attrs", cms::sign_detached(b"fuzz", &id.key, &id.cert, DigestAlg::Sha256, &detached_opts).map_err(e)?);
    let embedded = embedded_signed(b"Content-Type: text/plain\r\n\r\nfuzz", id)?;
    add("cms", "der_embedded", embedded.clone());
    let mut opaque = b"Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    opaque.extend_from_slice(&mdn::base64_lines(&embedded));
    add("cms", "opaque_signed", opaque);
    let mut untyped = b"Content-Type: application/x-pkcs7-mime\r\n\r\n".to_vec();
    untyped.extend_from_slice(&ber_compressed(b"Content-Type: text/plain\r\n\r\ninner"));
    add("cms", "untyped_compressed", untyped);

    // MDNs: unsigned and signed (with the fixed key), over the fixed MIC.
    let mic = fuzz_mic();
    let dispositions = [
        ("processed", Disposition::Processed),
        ("warning", Disposition::Warning("duplicate-document".into())),
        ("error", Disposition::Error("decryption-failed".into())),
    ];
    for (i, (name, disposition)) in dispositions.iter().enumerate() {
        let content = mdn::MdnContent {
            reporting_ua: "fuzz UA",
            station: "fuzz-to",
            partner: "fuzz-from",
            original_message_id: "<fuzz@edinode>",
            mic: Some(&mic),
            disposition,
            text: "The message was received.",
            spelling: [MicSpelling::Rfc5751, MicSpelling::Compact, MicSpelling::Hyphenated][i],
        };
        let ids = mdn::MdnIds { message_id: "<mdn@partner>", report_boundary: "rb", signed_boundary: "sb", date: "Thu, 01 Jan 2026 00:00:00 +0000" };
        for signed in [false, true] {
            let signer = mdn::MdnSigner { key: &id.key, cert: &id.cert, digest: DigestAlg::Sha256, opts: cms::SignOptions::default() };
            let built = mdn::build(&content, &ids, signed.then_some(&signer)).map_err(e)?;
            let mut http = Vec::new();
            for (n, v) in &built.headers {
                http.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
            }
            http.extend_from_slice(b"\r\n");
            http.extend_from_slice(&built.body);
            add("mdn", &format!("{name}{}", if signed { "_signed" } else { "" }), http);
        }
    }
    add(
        "mdn",
        "lenient",
        b"Content-Type: multipart/report; report-type=disposition-notification; boundary=x\n\n--x\n\nthanks\n--x\n\nreporting-ua: x\nORIGINAL-MESSAGE-ID: <fuzz@edinode>\nFinal-Recipient: rfc822; \"fuzz to\"\nDisposition: automatic-action/MDN-sent-automatically;\n processed\nReceived-Content-MIC: abc= , \"SHA-256\"\n--x--\n".to_vec(),
    );
    let report = b"Content-Type: multipart/report; report-type=disposition-notification; boundary=r\r\n\r\n--r\r\nContent-Type: message/disposition-notification\r\n\r\nOriginal-Message-ID: <fuzz@edinode>\r\nDisposition: automatic-action/MDN-sent-automatically; failed/failure: unsupported\r\n--r--\r\n";
    let mut opaque_mdn = b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    opaque_mdn.extend_from_slice(&mdn::base64_lines(&embedded_signed(report, id)?));
    add("mdn", "opaque_signed", opaque_mdn);

    // AS4: signals (plain and signed with the fixed key) and a signed pull response with
    // attachments.
    let key = wssec::SigningKey { key: id.key.clone(), cert: id.cert.clone() };
    let sec = wssec::SecurityIds { messaging_id: "_m".into(), body_id: "_b".into(), bst_id: "_t".into() };
    let sids = |n: &str| signals::SignalIds { message_id: format!("{n}@partner"), timestamp: "2026-01-01T00:00:00Z".into() };
    let b = |err: as4::BuildError| err.to_string();
    let soap = |body: Vec<u8>| {
        let mut v = format!("{}\n", signals::SOAP_CONTENT_TYPE).into_bytes();
        v.extend_from_slice(&body);
        v
    };
    let pull = signals::Signal::PullRequest { mpc: Some("urn:fuzz:mpc".into()) };
    add("as4", "pull", soap(signals::build(&[(signals::Signal::PullRequest { mpc: None }, sids("p"))], None).map_err(b)?));
    add("as4", "pull_signed", soap(signals::build(&[(pull.clone(), sids("ps"))], Some((&key, &sec))).map_err(b)?));
    let receipt = signals::Signal::Receipt { ref_to_message_id: "um@edinode".into(), references: Vec::new() };
    let error = signals::Signal::Error {
        ref_to_message_id: Some("um2@edinode".into()),
        errors: vec![signals::ErrorDetail::new(as4::EbmsCode::DeliveryFailure).with_description("no")],
    };
    add(
        "as4",
        "bundle_signed",
        soap(signals::build(&[(receipt, sids("r")), (error, sids("e")), (pull, sids("pb"))], Some((&key, &sec))).map_err(b)?),
    );
    let um = user_message::UserMessage {
        message_id: "um@edinode".into(),
        timestamp: "2026-01-01T00:00:00Z".into(),
        ref_to_message_id: None,
        mpc: "urn:fuzz:mpc".into(),
        from: user_message::Party { party_id: "from".into(), party_type: Some("urn:t".into()), role: "http://r/initiator".into() },
        to: user_message::Party { party_id: "to".into(), party_type: None, role: "http://r/responder".into() },
        service: user_message::Service { value: "urn:s".into(), service_type: None },
        action: "a".into(),
        conversation_id: "c".into(),
        agreement_ref: None,
        properties: vec![user_message::Property { name: "k".into(), value: "v".into() }],
        parts: vec![
            user_message::Part { content_id: "xml@p".into(), mime_type: "application/xml".into(), bytes: b"<?xml version=\"1.0\"?>\n<a xmlns=\"urn:a\" b=\"1\"><!-- c --><x:c xmlns:x=\"urn:x\">t&amp;</x:c></a>".to_vec(), properties: vec![] },
            user_message::Part { content_id: "txt@p".into(), mime_type: "text/plain".into(), bytes: b"one\ntwo\r\n".to_vec(), properties: vec![] },
        ],
    };
    let rids = user_message::ResponseIds { boundary: "MIMEBoundary_fuzz".into(), root_content_id: "root@edinode".into(), security: sec.clone() };
    let resp = user_message::build_pull_response(&um, &key, &rids).map_err(b)?;
    let mut v = format!("{}\n", resp.content_type).into_bytes();
    v.extend_from_slice(&resp.body);
    add("as4", "pull_response", v);
    add(
        "as4",
        "soap11_comments",
        b"text/xml\n\xEF\xBB\xBF<?xml version=\"1.0\"?><!-- x --><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><![CDATA[<a>]]></s:Body></s:Envelope>".to_vec(),
    );
    Ok(out)
}

/// A BER ContentInfo(compressed-data) with indefinite lengths and the zlib stream in two
/// OCTET STRING chunks, as BouncyCastle writes it.
fn ber_compressed(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let z = match enc.write_all(data) {
        Ok(()) => enc.finish().unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let (a, b) = z.split_at(z.len() / 2);
    let mut v = vec![0x30, 0x80, 0x06, 0x0B, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x10, 0x01, 0x09, 0xA0, 0x80];
    v.extend_from_slice(&[0x30, 0x80, 0x02, 0x01, 0x00]);
    v.extend_from_slice(&[0x30, 0x0D, 0x06, 0x0B, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x10, 0x03, 0x08]);
    v.extend_from_slice(&[0x30, 0x80, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x01, 0xA0, 0x80, 0x24, 0x80]);
    for chunk in [a, b] {
        v.push(0x04);
        v.push(chunk.len() as u8);
        v.extend_from_slice(chunk);
    }
    v.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    v
}

/// A DER SignedData with embedded content (opaque signing), signed with the fixed key.
fn embedded_signed(content: &[u8], id: &Identity) -> Result<Vec<u8>, String> {
    let cms = CmsContentInfo::sign(Some(&id.cert), Some(&id.key), None, Some(content), CMSOptions::BINARY)
        .map_err(|e| e.to_string())?;
    cms.to_der().map_err(|e| e.to_string())
}
