//! Building outbound AS2 messages (edinode_proto::outbound) and unwrapping them the way
//! edinode's inbound side does: every sign/encrypt/compress combination comes back as the
//! documents and the MIC, the layers and headers are in the order receivers expect, and bad
//! input is refused.

use edinode_proto::alg::{ContentCipher, DigestAlg, KeyTransport};
use edinode_proto::headers::As2Request;
use edinode_proto::mdn::Mic;
use edinode_proto::mime::{self, ContentType, MimeLimits};
use edinode_proto::outbound::*;
use edinode_proto::testing::{alice, bob};
use edinode_proto::unwrap::{self, Step};
use edinode_proto::cms;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

mod common;

const IDS: OutboundIds<'static> = OutboundIds {
    message_id: "<20260101.1@edinode>",
    boundary_seed: "seed42",
    date: "Thu, 01 Jan 2026 00:00:00 +0000",
};

fn one_doc() -> Vec<Document> {
    vec![Document {
        filename: "order 1.edi".into(),
        content_type: "application/edi-x12".into(),
        data:
            b"ISA*00*          *00*          *ZZ*SENDER~\r\nGS*PO*S*R~\r\nIEA*1*000000001~\r\n"
                .to_vec(),
    }]
}

fn three_docs() -> Vec<Document> {
    // Binary bytes, including a line that looks like our own first-choice boundary.
    let mut bin: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    bin.extend_from_slice(b"\r\n------=_Rel_seed42\r\n------=_Sig_seed42--\r\n\n\r");
    vec![
        Document {
            filename: "a.edi".into(),
            content_type: "application/EDIFACT".into(),
            data: b"UNA:+.? 'UNB+UNOC:3+X+Y'\nUNZ+1+5'\n".to_vec(),
        },
        Document {
            filename: "notes \u{fc}.txt".into(),
            content_type: "text/plain; charset=utf-8".into(),
            data: "line one\nline two \u{fc}\n".as_bytes().to_vec(),
        },
        Document {
            filename: "image.bin".into(),
            content_type: "application/octet-stream".into(),
            data: bin,
        },
    ]
}

fn http_headers(built: &Built) -> Vec<mime::Header> {
    built
        .headers
        .iter()
        .map(|(n, v)| mime::Header {
            name: n.clone(),
            value: v.clone(),
        })
        .collect()
}

/// What edinode's inbound side makes of a built message ([`common::open_in_memory`]).
struct Received {
    pub docs: Vec<unwrap::Document>,
    pub mic: Mic,
    pub steps: Vec<Step>,
}

fn receive(built: &Built, keys: &[(PKey<Private>, X509)], trusted: &[X509], unsigned_default: DigestAlg) -> Received {
    let headers = http_headers(built);
    let request = As2Request::from_headers(&headers).expect("valid AS2 headers");
    let requested = request.mdn.as_ref().and_then(|m| m.preferred_micalg());
    let entity = unwrap::entity_from_http(&headers, &built.body);
    let (docs, mic, steps) = common::open_in_memory(entity, keys, trusted, requested, unsigned_default);
    Received { docs, mic, steps }
}

fn header<'a>(built: &'a Built, name: &str) -> Option<&'a str> {
    built
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn assert_headers(built: &Built, expected: &[(&str, Option<&str>)]) {
    for (name, value) in expected {
        assert_eq!(header(built, name), *value, "{name}");
    }
}

/// `build` from edinode to acme (subject "x"), signed by alice and encrypted for bob where
/// `opts` asks for it.
fn build_for_acme(docs: &[Document], opts: &OutboundOptions) -> Built {
    let (akey, acert) = alice();
    let (_, bcert) = bob();
    build("edinode", "acme", docs, opts, Some((akey, acert)), Some(bcert), &IDS, "x").unwrap()
}

/// `receive` as bob, trusting alice's signature.
fn receive_as_bob(built: &Built) -> Received {
    let (bkey, bcert) = bob();
    let (_, acert) = alice();
    receive(built, &[(bkey.clone(), bcert.clone())], std::slice::from_ref(acert), DigestAlg::Sha1)
}

/// `receive_as_bob`, checking the layers opened and the MIC.
fn receive_through(built: &Built, steps: &[Step]) -> Received {
    let got = receive_as_bob(built);
    assert_eq!(got.steps, steps);
    assert_eq!(got.mic, built.mic);
    got
}

#[test]
fn outbound_every_combination_unwraps_to_the_documents_and_the_mic() {
    let (akey, acert) = alice();
    let (_, bcert) = bob();
    let signs = [
        None,
        Some(DigestAlg::Sha1),
        Some(DigestAlg::Sha256),
        Some(DigestAlg::Sha512),
    ];
    let ciphers = [
        None,
        Some(ContentCipher::Des3),
        Some(ContentCipher::Aes128Cbc),
        Some(ContentCipher::Aes256Cbc),
        Some(ContentCipher::Aes256Gcm),
    ];
    let compressions = [
        Compression::None,
        Compression::BeforeSigning,
        Compression::AfterSigning,
    ];
    let mdns = [
        MdnRequest::None,
        MdnRequest::Sync { signed: None },
        MdnRequest::Sync {
            signed: Some(DigestAlg::Sha256),
        },
        MdnRequest::Async {
            url: "https://edinode.example/as2/mdn".into(),
            signed: Some(DigestAlg::Sha384),
        },
    ];
    let doc_sets = [one_doc(), three_docs()];
    let mut n = 0;
    for sign in signs {
        for cipher in ciphers {
            for compression in compressions {
                for docs in &doc_sets {
                    let mdn = mdns[n % mdns.len()].clone();
                    n += 1;
                    let opts = OutboundOptions {
                        sign,
                        encrypt: cipher,
                        compression,
                        mdn: mdn.clone(),
                        // The MIC algorithm edinode's inbound actor falls back to.
                        mic_alg_when_unsigned: DigestAlg::Sha1,
                        ..Default::default()
                    };
                    let case = format!(
                        "sign {sign:?} encrypt {cipher:?} {compression:?} {} docs {mdn:?}",
                        docs.len()
                    );
                    let built = build(
                        "edinode",
                        "Acme Corp",
                        docs,
                        &opts,
                        Some((akey, acert)),
                        Some(bcert),
                        &IDS,
                        "Purchase order",
                    )
                    .unwrap();
                    assert!(
                        built
                            .headers
                            .iter()
                            .all(|(n, v)| !n.eq_ignore_ascii_case("content-length")
                                && !v.contains(['\r', '\n'])),
                        "{case}"
                    );
                    let got = receive_as_bob(&built);
                    assert_eq!(got.docs.len(), docs.len(), "{case}");
                    for (d, r) in docs.iter().zip(&got.docs) {
                        assert_eq!(r.data, d.data, "{case}: {}", d.filename);
                        assert_eq!(r.filename.as_deref(), Some(d.filename.as_str()), "{case}");
                        assert_eq!(
                            r.content_type,
                            ContentType::parse(&d.content_type).mime,
                            "{case}"
                        );
                    }
                    assert_eq!(got.mic, built.mic, "{case}");
                    let expected_alg = sign.or(mdn.signed()).unwrap_or(DigestAlg::Sha1);
                    assert_eq!(built.mic.alg, expected_alg, "{case}");
                    let layers = got.steps.len() - 1;
                    let want = sign.is_some() as usize
                        + cipher.is_some() as usize
                        + (compression != Compression::None) as usize;
                    assert_eq!(layers, want, "{case}: {:?}", got.steps);
                }
            }
        }
    }
    assert_eq!(n, 4 * 5 * 3 * 2);
}

#[test]
fn outbound_layer_order_and_headers() {
    let (akey, acert) = alice();
    let (_, bcert) = bob();
    let opts = OutboundOptions {
        sign: Some(DigestAlg::Sha256),
        encrypt: Some(ContentCipher::Aes128Cbc),
        compression: Compression::BeforeSigning,
        mdn: MdnRequest::Async {
            url: "https://edinode.example/mdn".into(),
            signed: Some(DigestAlg::Sha256),
        },
        disposition_notification_to: Some("mailto:as2@edinode.example".into()),
        ..Default::default()
    };
    let built = build(
        "edinode",
        "Acme Corp",
        &three_docs(),
        &opts,
        Some((akey, acert)),
        Some(bcert),
        &IDS,
        "Bestellung f\u{fc}r M\u{fc}nchen",
    )
    .unwrap();
    assert_headers(
        &built,
        &[
            ("AS2-From", Some("edinode")),
            ("AS2-To", Some("\"Acme Corp\"")),
            ("AS2-Version", Some("1.2")),
            ("Message-ID", Some(IDS.message_id)),
            ("Date", Some(IDS.date)),
            ("MIME-Version", Some("1.0")),
            ("EDIINT-Features", Some("multiple-attachments")),
            ("Disposition-Notification-To", Some("mailto:as2@edinode.example")),
            (
                "Disposition-Notification-Options",
                Some("signed-receipt-protocol=optional, pkcs7-signature; signed-receipt-micalg=optional, sha-256"),
            ),
            ("Receipt-Delivery-Option", Some("https://edinode.example/mdn")),
            ("Content-Type", Some("application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m")),
            ("Content-Transfer-Encoding", Some("binary")),
        ],
    );
    let subject = header(&built, "Subject").unwrap();
    assert!(
        subject.starts_with("=?utf-8?B?") && subject.is_ascii(),
        "{subject}"
    );
    assert_eq!(built.message_id, IDS.message_id);
    assert_eq!(cms::kind(&built.body).unwrap(), cms::CmsKind::Enveloped);

    // The headers parse as an AS2 request asking for a signed async MDN with sha-256.
    let req = As2Request::from_headers(&http_headers(&built)).unwrap();
    assert_eq!(req.as2_to, "Acme Corp");
    let mdn = req.mdn.unwrap();
    assert!(mdn.signed);
    assert_eq!(mdn.preferred_micalg(), Some(DigestAlg::Sha256));
    assert_eq!(
        mdn.async_url.as_deref(),
        Some("https://edinode.example/mdn")
    );

    // Inside: encrypted > signed > compressed > multipart/related.
    receive_through(&built, &[Step::Decrypt, Step::Verify, Step::Decompress, Step::Payload]);
}

#[test]
fn outbound_unsigned_single_document_travels_in_the_http_headers() {
    let opts = OutboundOptions {
        mdn: MdnRequest::Sync { signed: None },
        ..Default::default()
    };
    let built = build("edinode", "acme", &one_doc(), &opts, None, None, &IDS, "").unwrap();
    assert_headers(
        &built,
        &[
            ("Content-Type", Some("application/edi-x12")),
            ("Content-Transfer-Encoding", Some("binary")),
            ("Content-Disposition", Some("attachment; filename=\"order 1.edi\"")),
            ("Disposition-Notification-To", Some("edinode")),
            ("Disposition-Notification-Options", None),
            ("Subject", None),
        ],
    );
    assert_eq!(built.body, one_doc()[0].data);
    // No micalg requested: the configured algorithm (default sha1, what edinode's inbound
    // side uses when none is named), over the content without headers (RFC 4130 7.3.1).
    assert_eq!(built.mic, unwrap::compute_mic(&one_doc()[0].data, DigestAlg::Sha1));
    let got = receive(&built, &[], &[], DigestAlg::Sha1);
    assert_eq!(got.mic, built.mic);
    // Another configured algorithm; the receiver chose: the RFC basis in sha1 is standard.
    let opts = OutboundOptions {
        mic_alg_when_unsigned: DigestAlg::Sha256,
        ..opts
    };
    let built = build("edinode", "acme", &one_doc(), &opts, None, None, &IDS, "").unwrap();
    assert_eq!(built.mic, unwrap::compute_mic(&one_doc()[0].data, DigestAlg::Sha256));
    let sha1 = unwrap::compute_mic(&one_doc()[0].data, DigestAlg::Sha1);
    assert!(built.mic_alternatives.iter().any(|a| a.standard && a.mic == sha1));
}

/// RFC 4130 section 7.3.1 for every unsigned shape, with the requested algorithm; the
/// non-RFC bases are alternatives; edinode's receiving side computes the same MIC.
#[test]
fn outbound_unsigned_mic_follows_rfc4130() {
    use edinode_proto::unwrap::mic::MicBasis;
    let docs = vec![Document {
        filename: "x.txt".into(),
        content_type: "text/plain".into(),
        data: b"a\nb\n".to_vec(),
    }];
    let payload = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: binary\r\nContent-Disposition: attachment; filename=\"x.txt\"\r\n\r\na\nb\n";
    let (bkey, bcert) = bob();
    let keys = [(bkey.clone(), bcert.clone())];
    for encrypt in [None, Some(ContentCipher::Aes256Cbc)] {
        for compression in [Compression::None, Compression::BeforeSigning] {
            let case = format!("encrypt {encrypt:?} {compression:?}");
            let opts = OutboundOptions {
                encrypt,
                compression,
                mdn: MdnRequest::Sync {
                    signed: Some(DigestAlg::Sha384),
                },
                ..Default::default()
            };
            let built = build_for_acme(&docs, &opts);
            let rfc_bytes = match encrypt {
                // The decrypted entity as decrypted: compressed, the compressed entity.
                Some(_) => cms::decrypt(&built.body, &keys).unwrap(),
                // The content without headers: the body as sent.
                None => built.body.clone(),
            };
            if encrypt.is_some() && compression == Compression::None {
                assert_eq!(rfc_bytes, payload, "{case}");
            }
            if compression != Compression::None {
                let compressed = match encrypt {
                    Some(_) => unwrap::classify(&rfc_bytes, &MimeLimits::default()).unwrap() == Step::Decompress,
                    None => cms::kind(&rfc_bytes).unwrap() == cms::CmsKind::Compressed,
                };
                assert!(compressed, "{case}: the compressed data, not its output");
            }
            // The requested algorithm (bullet 2), over the RFC bytes.
            assert_eq!(
                built.mic,
                unwrap::compute_mic(&rfc_bytes, DigestAlg::Sha384),
                "{case}"
            );
            assert_eq!(receive(&built, &keys, &[], DigestAlg::Sha1).mic, built.mic, "{case}");
            assert_eq!(receive(&built, &keys, &[], DigestAlg::Sha1).docs[0].data, b"a\nb\n");
            // The bases other products return are known, in the usual algorithms.
            let alt = |basis: MicBasis, bytes: &[u8], alg: DigestAlg| {
                built.mic_alternatives.iter().any(|a| {
                    a.basis == basis && !a.standard && a.mic == unwrap::compute_mic(bytes, alg)
                })
            };
            if compression != Compression::None || encrypt.is_none() {
                assert!(alt(MicBasis::PayloadEntity, payload, DigestAlg::Sha1), "{case}");
            }
            assert!(alt(MicBasis::PayloadEntityCrlf, &mime::canonicalize_crlf(payload), DigestAlg::Sha384), "{case}");
            assert!(alt(MicBasis::Rfc4130, &rfc_bytes, DigestAlg::Sha256), "{case}");
            if compression != Compression::None {
                assert!(alt(MicBasis::Document, b"a\nb\n", DigestAlg::Sha256), "{case}");
            }
        }
    }
}

#[test]
fn outbound_signed_mic_uses_the_signing_digest_and_advertises_it() {
    // Asked for sha512 receipts but signing with sha1: we ask for sha1, the digest pyas2lib
    // and Mendelson will use whatever we ask.
    let opts = OutboundOptions {
        sign: Some(DigestAlg::Sha1),
        mdn: MdnRequest::Sync {
            signed: Some(DigestAlg::Sha512),
        },
        ..Default::default()
    };
    let built = build_for_acme(&one_doc(), &opts);
    assert_eq!(built.mic.alg, DigestAlg::Sha1);
    assert!(
        header(&built, "Disposition-Notification-Options")
            .unwrap()
            .ends_with("signed-receipt-micalg=optional, sha1")
    );
    assert!(
        header(&built, "Content-Type")
            .unwrap()
            .contains("micalg=sha1;")
    );
    // The MIC is over the signed entity: the first part, exactly.
    let ct = ContentType::parse(header(&built, "Content-Type").unwrap());
    let parts = mime::split_multipart(
        &built.body,
        ct.param("boundary").unwrap(),
        &MimeLimits::default(),
    )
    .unwrap();
    assert_eq!(built.mic, unwrap::compute_mic(parts[0], DigestAlg::Sha1));
    let doc = &one_doc()[0];
    let mut entity = b"Content-Type: application/edi-x12\r\nContent-Transfer-Encoding: binary\r\nContent-Disposition: attachment; filename=\"order 1.edi\"\r\n\r\n".to_vec();
    entity.extend_from_slice(&doc.data);
    assert_eq!(parts[0], &entity[..]);
    assert_eq!(receive_as_bob(&built).mic, built.mic);
}

#[test]
fn outbound_pss_protection_and_oaep_unwrap() {
    let opts = OutboundOptions {
        sign: Some(DigestAlg::Sha256),
        pss: true,
        algorithm_protection: true,
        encrypt: Some(ContentCipher::Aes128Gcm),
        key_transport: KeyTransport::RsaOaep,
        compression: Compression::AfterSigning,
        mdn: MdnRequest::Sync {
            signed: Some(DigestAlg::Sha256),
        },
        ..Default::default()
    };
    let built = build_for_acme(&three_docs(), &opts);
    assert_eq!(
        header(&built, "Content-Type"),
        Some("application/pkcs7-mime; smime-type=authEnveloped-data; name=smime.p7m")
    );
    let got = receive_through(&built, &[Step::Decrypt, Step::Decompress, Step::Verify, Step::Payload]);
    assert_eq!(got.docs.len(), 3);
}

#[test]
fn outbound_is_reproducible_without_cms() {
    let opts = OutboundOptions {
        compression: Compression::BeforeSigning,
        ..Default::default()
    };
    assert_eq!(build_for_acme(&three_docs(), &opts), build_for_acme(&three_docs(), &opts));
}

#[test]
fn outbound_boundaries_avoid_the_content() {
    let docs = three_docs();
    let built = build_for_acme(&docs, &OutboundOptions::default());
    let ct = ContentType::parse(header(&built, "Content-Type").unwrap());
    assert_eq!(ct.mime, "multipart/related");
    // The binary document contains "--" + the first choice, so the second one is used.
    assert_eq!(ct.param("boundary"), Some("----=_Rel_seed42.1"));
    assert_eq!(ct.param("type"), Some("application/edifact"));
}

#[test]
fn outbound_rejects_bad_input() {
    let (akey, acert) = alice();
    let one = |filename: &str, content_type: &str| {
        vec![Document {
            filename: filename.into(),
            content_type: content_type.into(),
            data: vec![],
        }]
    };
    let plain = OutboundOptions::default();
    let signing = OutboundOptions {
        sign: Some(DigestAlg::Sha256),
        ..Default::default()
    };
    let encrypting = OutboundOptions {
        encrypt: Some(ContentCipher::Aes128Cbc),
        ..Default::default()
    };
    let bad_url = OutboundOptions {
        mdn: MdnRequest::Async {
            url: "ftp://x".into(),
            signed: None,
        },
        ..Default::default()
    };
    let bad_id = OutboundIds {
        message_id: "no-brackets@x",
        ..IDS
    };
    let bad_seed = OutboundIds {
        boundary_seed: "a b",
        ..IDS
    };
    let bad_date = OutboundIds {
        date: "Thu\r\nX: y",
        ..IDS
    };
    // (AS2-From, AS2-To, documents, options, ids, with a signer, the error: "" for any)
    let mut cases = vec![
        ("edinode", "acme", vec![], &plain, &IDS, false, "no documents"),
        ("", "acme", one_doc(), &plain, &IDS, false, "invalid AS2-From"),
        ("edinode", "ac\r\nme", one_doc(), &plain, &IDS, false, "invalid AS2-To"),
        ("edinode", "acme", one_doc(), &plain, &bad_id, false, "invalid Message-ID"),
        ("edinode", "acme", one_doc(), &plain, &bad_seed, false, "invalid boundary_seed"),
        ("edinode", "acme", one_doc(), &plain, &bad_date, false, ""),
        ("edinode", "acme", one_doc(), &signing, &IDS, false, "missing signer"),
        ("edinode", "acme", one_doc(), &encrypting, &IDS, true, "missing recipient"),
        ("edinode", "acme", one("a\nb", "text/plain"), &plain, &IDS, false, ""),
        ("edinode", "acme", one_doc(), &bad_url, &IDS, false, "invalid Receipt-Delivery-Option"),
    ];
    for ct in [
        "multipart/related; boundary=x",
        "application/pkcs7-mime",
        "edi",
        "text/plain\r\nX: y",
        "",
    ] {
        cases.push(("edinode", "acme", one("a", ct), &plain, &IDS, false, ""));
    }
    for (n, (from, to, docs, opts, ids, signed, expected)) in cases.into_iter().enumerate() {
        let signer = signed.then_some((akey, acert));
        let case = format!("case {n}: {from:?} {to:?} {docs:?} {ids:?}");
        let err = match build(from, to, &docs, opts, signer, None, ids, "s") {
            Ok(_) => panic!("{case}: built"),
            Err(e) => e,
        };
        let kind = match &err {
            OutboundError::NoDocuments => "no documents".to_string(),
            OutboundError::MissingSigner => "missing signer".to_string(),
            OutboundError::MissingRecipient => "missing recipient".to_string(),
            OutboundError::Invalid { field, .. } => format!("invalid {field}"),
            other => other.to_string(),
        };
        assert!(expected.is_empty() || kind == expected, "{case}: {err}");
    }
}
