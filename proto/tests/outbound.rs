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

/// What edinode's inbound side makes of a built message: the loop of
/// actors/src/mime_unwrapper.rs (and the Verifier / Decryptor it routes to), with the MIC
/// rule of the actors (`Security`). `unsigned_default` stands in for the actor's fallback
/// algorithm.
struct Received {
    pub docs: Vec<unwrap::Document>,
    pub mic: Mic,
    pub steps: Vec<Step>,
}

fn receive(
    built: &Built,
    keys: &[(PKey<Private>, X509)],
    trusted: &[X509],
    unsigned_default: DigestAlg,
) -> Received {
    let limits = MimeLimits::default();
    let headers = http_headers(built);
    let request = As2Request::from_headers(&headers).expect("valid AS2 headers");
    let requested = request.mdn.as_ref().and_then(|m| m.preferred_micalg());
    let unsigned_alg = requested.unwrap_or(unsigned_default);
    let mut entity = unwrap::entity_from_http(&headers, &built.body);
    let mut security = edinode_proto::envelope::Security::default();
    let mut steps = Vec::new();
    for _ in 0..10 {
        let step = unwrap::classify(&entity, &limits).unwrap();
        steps.push(step.clone());
        let mic_due = security.unsigned_mic_due().then_some(unsigned_alg);
        match step {
            Step::Decrypt => {
                let d = unwrap::decrypt_layer(entity, keys, mic_due, &limits).unwrap();
                security.mic = d.mic.or(security.mic);
                entity = d.entity;
            }
            Step::Verify => {
                let v = unwrap::verify(&entity, trusted, requested, &limits).unwrap();
                security.signed_by(v.signer_thumbprint.clone(), v.mic.clone());
                entity = v.inner;
            }
            Step::Decompress => {
                let mic = mic_due.map(|a| unwrap::mic::content_mic(&entity, a, &limits));
                security.mic = mic.or(security.mic);
                entity = unwrap::decompress(&entity, 1 << 24, &limits).unwrap();
            }
            Step::Payload => {
                let mic = mic_due.map(|a| unwrap::mic::content_mic(&entity, a, &limits));
                security.mic = mic.or(security.mic);
                break;
            }
        }
        security.depth += 1;
    }
    assert_eq!(steps.last(), Some(&Step::Payload), "unwrapped to a payload");
    Received {
        docs: unwrap::documents(&entity, &limits).unwrap(),
        mic: security.mic.expect("the outermost layer sets the MIC"),
        steps,
    }
}

fn header<'a>(built: &'a Built, name: &str) -> Option<&'a str> {
    built
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[test]
fn outbound_every_combination_unwraps_to_the_documents_and_the_mic() {
    let (akey, acert) = alice();
    let (bkey, bcert) = bob();
    let keys = [(bkey.clone(), bcert.clone())];
    let trusted = [acert.clone()];
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
                    let got = receive(&built, &keys, &trusted, DigestAlg::Sha1);
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
    assert_eq!(header(&built, "AS2-From"), Some("edinode"));
    assert_eq!(header(&built, "AS2-To"), Some("\"Acme Corp\""));
    assert_eq!(header(&built, "AS2-Version"), Some("1.2"));
    assert_eq!(header(&built, "Message-ID"), Some(IDS.message_id));
    assert_eq!(header(&built, "Date"), Some(IDS.date));
    assert_eq!(header(&built, "MIME-Version"), Some("1.0"));
    assert_eq!(
        header(&built, "EDIINT-Features"),
        Some("multiple-attachments")
    );
    assert_eq!(
        header(&built, "Disposition-Notification-To"),
        Some("mailto:as2@edinode.example")
    );
    assert_eq!(
        header(&built, "Disposition-Notification-Options"),
        Some(
            "signed-receipt-protocol=optional, pkcs7-signature; signed-receipt-micalg=optional, sha-256"
        )
    );
    assert_eq!(
        header(&built, "Receipt-Delivery-Option"),
        Some("https://edinode.example/mdn")
    );
    assert_eq!(
        header(&built, "Content-Type"),
        Some("application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m")
    );
    assert_eq!(header(&built, "Content-Transfer-Encoding"), Some("binary"));
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
    let (bkey, bcert) = bob();
    let got = receive(
        &built,
        &[(bkey.clone(), bcert.clone())],
        std::slice::from_ref(acert),
        DigestAlg::Sha1,
    );
    assert_eq!(
        got.steps,
        vec![Step::Decrypt, Step::Verify, Step::Decompress, Step::Payload]
    );
    assert_eq!(got.mic, built.mic);
}

#[test]
fn outbound_unsigned_single_document_travels_in_the_http_headers() {
    let opts = OutboundOptions {
        mdn: MdnRequest::Sync { signed: None },
        ..Default::default()
    };
    let built = build("edinode", "acme", &one_doc(), &opts, None, None, &IDS, "").unwrap();
    assert_eq!(header(&built, "Content-Type"), Some("application/edi-x12"));
    assert_eq!(header(&built, "Content-Transfer-Encoding"), Some("binary"));
    assert_eq!(
        header(&built, "Content-Disposition"),
        Some("attachment; filename=\"order 1.edi\"")
    );
    assert_eq!(
        header(&built, "Disposition-Notification-To"),
        Some("edinode")
    );
    assert_eq!(header(&built, "Disposition-Notification-Options"), None);
    assert_eq!(header(&built, "Subject"), None);
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
            let built =
                build("edinode", "acme", &docs, &opts, None, Some(bcert), &IDS, "x").unwrap();
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
    let (akey, acert) = alice();
    // Asked for sha512 receipts but signing with sha1: we ask for sha1, the digest pyas2lib
    // and Mendelson will use whatever we ask.
    let opts = OutboundOptions {
        sign: Some(DigestAlg::Sha1),
        mdn: MdnRequest::Sync {
            signed: Some(DigestAlg::Sha512),
        },
        ..Default::default()
    };
    let built = build(
        "edinode",
        "acme",
        &one_doc(),
        &opts,
        Some((akey, acert)),
        None,
        &IDS,
        "x",
    )
    .unwrap();
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
    assert_eq!(
        receive(
            &built,
            &[],
            std::slice::from_ref(acert),
            DigestAlg::Sha1,
        )
        .mic,
        built.mic
    );
}

#[test]
fn outbound_pss_protection_and_oaep_unwrap() {
    let (akey, acert) = alice();
    let (bkey, bcert) = bob();
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
    let built = build(
        "edinode",
        "acme",
        &three_docs(),
        &opts,
        Some((akey, acert)),
        Some(bcert),
        &IDS,
        "x",
    )
    .unwrap();
    assert_eq!(
        header(&built, "Content-Type"),
        Some("application/pkcs7-mime; smime-type=authEnveloped-data; name=smime.p7m")
    );
    let got = receive(
        &built,
        &[(bkey.clone(), bcert.clone())],
        std::slice::from_ref(acert),
        DigestAlg::Sha1,
    );
    assert_eq!(
        got.steps,
        vec![Step::Decrypt, Step::Decompress, Step::Verify, Step::Payload]
    );
    assert_eq!(got.mic, built.mic);
    assert_eq!(got.docs.len(), 3);
}

#[test]
fn outbound_is_reproducible_without_cms() {
    let opts = OutboundOptions {
        compression: Compression::BeforeSigning,
        ..Default::default()
    };
    let a = build(
        "edinode",
        "acme",
        &three_docs(),
        &opts,
        None,
        None,
        &IDS,
        "x",
    )
    .unwrap();
    let b = build(
        "edinode",
        "acme",
        &three_docs(),
        &opts,
        None,
        None,
        &IDS,
        "x",
    )
    .unwrap();
    assert_eq!(a, b);
}

#[test]
fn outbound_boundaries_avoid_the_content() {
    let docs = three_docs();
    let built = build(
        "edinode",
        "acme",
        &docs,
        &OutboundOptions::default(),
        None,
        None,
        &IDS,
        "x",
    )
    .unwrap();
    let ct = ContentType::parse(header(&built, "Content-Type").unwrap());
    assert_eq!(ct.mime, "multipart/related");
    // The binary document contains "--" + the first choice, so the second one is used.
    assert_eq!(ct.param("boundary"), Some("----=_Rel_seed42.1"));
    assert_eq!(ct.param("type"), Some("application/edifact"));
}

#[test]
fn outbound_rejects_bad_input() {
    let (akey, acert) = alice();
    let opts = OutboundOptions::default();
    let doc = one_doc();
    fn b(
        from: &str,
        to: &str,
        docs: &[Document],
        opts: &OutboundOptions,
        ids: &OutboundIds<'_>,
        signer: Option<(&PKey<Private>, &X509)>,
    ) -> Result<Built, OutboundError> {
        build(from, to, docs, opts, signer, None, ids, "s")
    }
    assert!(matches!(
        b("edinode", "acme", &[], &opts, &IDS, None),
        Err(OutboundError::NoDocuments)
    ));
    assert!(matches!(
        b("", "acme", &doc, &opts, &IDS, None),
        Err(OutboundError::Invalid {
            field: "AS2-From",
            ..
        })
    ));
    assert!(matches!(
        b("edinode", "ac\r\nme", &doc, &opts, &IDS, None),
        Err(OutboundError::Invalid {
            field: "AS2-To",
            ..
        })
    ));
    let bad_id = OutboundIds {
        message_id: "no-brackets@x",
        ..IDS
    };
    assert!(matches!(
        b("edinode", "acme", &doc, &opts, &bad_id, None),
        Err(OutboundError::Invalid {
            field: "Message-ID",
            ..
        })
    ));
    let bad_seed = OutboundIds {
        boundary_seed: "a b",
        ..IDS
    };
    assert!(matches!(
        b("edinode", "acme", &doc, &opts, &bad_seed, None),
        Err(OutboundError::Invalid {
            field: "boundary_seed",
            ..
        })
    ));
    let bad_date = OutboundIds {
        date: "Thu\r\nX: y",
        ..IDS
    };
    assert!(b("edinode", "acme", &doc, &opts, &bad_date, None).is_err());
    let signing = OutboundOptions {
        sign: Some(DigestAlg::Sha256),
        ..Default::default()
    };
    assert!(matches!(
        b("edinode", "acme", &doc, &signing, &IDS, None),
        Err(OutboundError::MissingSigner)
    ));
    let encrypting = OutboundOptions {
        encrypt: Some(ContentCipher::Aes128Cbc),
        ..Default::default()
    };
    assert!(matches!(
        b(
            "edinode",
            "acme",
            &doc,
            &encrypting,
            &IDS,
            Some((akey, acert))
        ),
        Err(OutboundError::MissingRecipient)
    ));
    for ct in [
        "multipart/related; boundary=x",
        "application/pkcs7-mime",
        "edi",
        "text/plain\r\nX: y",
        "",
    ] {
        let d = vec![Document {
            filename: "a".into(),
            content_type: ct.into(),
            data: vec![],
        }];
        assert!(
            b("edinode", "acme", &d, &opts, &IDS, None).is_err(),
            "{ct:?}"
        );
    }
    let d = vec![Document {
        filename: "a\nb".into(),
        content_type: "text/plain".into(),
        data: vec![],
    }];
    assert!(b("edinode", "acme", &d, &opts, &IDS, None).is_err());
    let bad_url = OutboundOptions {
        mdn: MdnRequest::Async {
            url: "ftp://x".into(),
            signed: None,
        },
        ..Default::default()
    };
    assert!(matches!(
        b("edinode", "acme", &doc, &bad_url, &IDS, None),
        Err(OutboundError::Invalid {
            field: "Receipt-Delivery-Option",
            ..
        })
    ));
}
