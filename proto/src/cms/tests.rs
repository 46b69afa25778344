use super::compressed::inflate_bounded;
use super::*;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::pkey::PKey;
use openssl::x509::X509;

use crate::alg::{ContentCipher, DigestAlg, KeyTransport, SignaturePadding};

use crate::testing::{alice, bob, Identity};

const CIPHERS: [ContentCipher; 6] = [
    ContentCipher::Des3,
    ContentCipher::Aes128Cbc,
    ContentCipher::Aes192Cbc,
    ContentCipher::Aes256Cbc,
    ContentCipher::Aes128Gcm,
    ContentCipher::Aes256Gcm,
];

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle, 0).is_some()
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    crate::mime::find(hay.get(from..)?, needle).map(|i| i + from)
}

/// `data` signed by alice, detached: sha256, default options.
fn signed_by_alice(data: &[u8]) -> Vec<u8> {
    let (key, cert) = alice();
    sign_detached(data, key, cert, DigestAlg::Sha256, &SignOptions::default()).unwrap()
}

const PROTECTION_OID_DER: &[u8] = &[
    0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x34,
];

// ---- encryption ----

#[test]
fn cms_encrypt_decrypt_round_trip_all_ciphers_and_key_transports() {
    let (key, cert) = alice();
    let data = b"UNB+UNOA:2+SENDER+RECEIVER'\r\nbinary \x00\xff\n".repeat(50);
    for cipher in CIPHERS {
        for kt in [KeyTransport::RsaPkcs1v15, KeyTransport::RsaOaep] {
            let der = encrypt(&data, cert, cipher, kt).unwrap();
            let expect_kind = match cipher {
                ContentCipher::Aes128Gcm | ContentCipher::Aes256Gcm => CmsKind::AuthEnveloped,
                _ => CmsKind::Enveloped,
            };
            assert_eq!(kind(&der).unwrap(), expect_kind, "{cipher:?} {kt:?}");
            // rsaesOaep 1.2.840.113549.1.1.7 present exactly when asked for.
            let oaep = [
                0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x07,
            ];
            assert_eq!(
                contains(&der, &oaep),
                kt == KeyTransport::RsaOaep,
                "{cipher:?} {kt:?}"
            );
            let plain = decrypt(&der, &[(key.clone(), cert.clone())]).unwrap();
            assert_eq!(plain, data, "{cipher:?} {kt:?}");
        }
    }
}

#[test]
fn cms_decrypt_wrong_key_fails_and_right_key_is_picked() {
    let (akey, acert) = alice();
    let (bkey, bcert) = bob();
    for kt in [KeyTransport::RsaPkcs1v15, KeyTransport::RsaOaep] {
        let der = encrypt(b"hello", acert, ContentCipher::Aes128Cbc, kt).unwrap();
        let err = decrypt(&der, &[(bkey.clone(), bcert.clone())]).unwrap_err();
        assert!(matches!(err, CmsError::Decrypt(_)), "{err:?}");
        // Right key second in the list.
        let plain = decrypt(
            &der,
            &[(bkey.clone(), bcert.clone()), (akey.clone(), acert.clone())],
        )
        .unwrap();
        assert_eq!(plain, b"hello");
        // The right cert with a wrong key also fails cleanly.
        let err = decrypt(&der, &[(bkey.clone(), acert.clone())]).unwrap_err();
        assert!(matches!(err, CmsError::Decrypt(_)), "{err:?}");
    }
    assert!(matches!(
        decrypt(b"\x30\x03\x02\x01", &[]),
        Err(CmsError::Malformed(_))
    ));
    assert!(matches!(
        decrypt(&signed_by_alice(b"x"), &[]),
        Err(CmsError::Unsupported(_))
    ));
}

// ---- signatures ----

#[test]
fn cms_sign_verify_round_trip_every_digest_and_padding() {
    let (key, cert) = alice();
    let data = b"Content-Type: application/EDI-Consent\r\n\r\nUNB+UNOA\n\r\n\x00\xff".to_vec();
    for digest in DigestAlg::ALL {
        for padding in [SignaturePadding::Pkcs1v15, SignaturePadding::Pss] {
            for signed_attributes in [true, false] {
                let opts = SignOptions {
                    padding,
                    signed_attributes,
                    ..Default::default()
                };
                let ctx = format!("{digest:?} {padding:?} attrs={signed_attributes}");
                if digest == DigestAlg::Md5 && padding == SignaturePadding::Pss {
                    let err = sign_detached(&data, key, cert, digest, &opts).unwrap_err();
                    assert!(matches!(err, CmsError::Unsupported(_)), "{ctx}: {err:?}");
                    continue;
                }
                let sig = sign_detached(&data, key, cert, digest, &opts)
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                assert_eq!(kind(&sig).unwrap(), CmsKind::Signed);
                // The digest OID is in the output.
                let oid_der = openssl::asn1::Asn1Object::from_str(digest.oid()).unwrap();
                assert!(contains(&sig, oid_der.as_slice()), "{ctx}");
                let v = verify_detached(&sig, &data, std::slice::from_ref(cert))
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                assert_eq!(v.digest, digest, "{ctx}");
                assert_eq!(v.padding, padding, "{ctx}");
                assert_eq!(v.signer.to_der().unwrap(), cert.to_der().unwrap());

                let mut tampered = data.clone();
                tampered[3] ^= 1;
                let err =
                    verify_detached(&sig, &tampered, std::slice::from_ref(cert)).unwrap_err();
                // With signed attributes the altered content is told from a bad signature.
                if signed_attributes {
                    assert!(matches!(err, CmsError::ContentAltered(_)), "{ctx}: {err:?}");
                } else {
                    assert!(matches!(err, CmsError::SignatureInvalid(_)), "{ctx}: {err:?}");
                }
                // Hashed exactly as given: a CRLF-normalised copy does not verify.
                let lf: Vec<u8> = data.iter().copied().filter(|b| *b != b'\r').collect();
                assert!(verify_detached(&sig, &lf, std::slice::from_ref(cert)).is_err());
            }
        }
    }
}

#[test]
fn cms_verify_rejects_untrusted_signer() {
    let (akey, acert) = alice();
    let (_, bcert) = bob();
    let sig = signed_by_alice(b"data");
    // alice's certificate is inside the CMS, but only bob is trusted.
    let err = verify_detached(&sig, b"data", std::slice::from_ref(bcert)).unwrap_err();
    assert!(matches!(err, CmsError::UnknownSigner(_)), "{err:?}");
    let err = verify_detached(&sig, b"data", &[]).unwrap_err();
    assert!(matches!(err, CmsError::UnknownSigner(_)), "{err:?}");
    // Found among several.
    let v = verify_detached(&sig, b"data", &[bcert.clone(), acert.clone()]).unwrap();
    assert_eq!(v.signer.to_der().unwrap(), acert.to_der().unwrap());
    // Without the certificate in the CMS, the trusted list still identifies the signer.
    let opts = SignOptions {
        include_cert: false,
        ..Default::default()
    };
    let sig = sign_detached(b"data", akey, acert, DigestAlg::Sha1, &opts).unwrap();
    assert!(!contains(&sig, &acert.to_der().unwrap()));
    let v = verify_detached(&sig, b"data", std::slice::from_ref(acert)).unwrap();
    assert_eq!(v.digest, DigestAlg::Sha1);
}

/// RFC 6211: the attribute repeats the SignerInfo's digestAlgorithm and, as [1] IMPLICIT,
/// its signatureAlgorithm (checked with the independent RustCrypto decoder).
fn check_algorithm_protection(sig: &[u8]) {
    use ::cms::content_info::ContentInfo;
    use ::cms::signed_data::SignedData;
    use ::der::{Decode, Encode};
    let ci = ContentInfo::from_der(sig).unwrap();
    let sd: SignedData = ci.content.decode_as().unwrap();
    let si = sd.signer_infos.0.iter().next().unwrap();
    let attrs = si.signed_attrs.as_ref().unwrap();
    let attr = attrs
        .iter()
        .find(|a| a.oid.to_string() == OID_ALG_PROTECTION)
        .expect("CMSAlgorithmProtection attribute");
    assert_eq!(attr.values.len(), 1);
    let value = attr.values.iter().next().unwrap().to_der().unwrap();
    let mut sig_alg = si.signature_algorithm.to_der().unwrap();
    sig_alg[0] = 0xA1;
    let expected = der::tlv(0x30, &[si.digest_alg.to_der().unwrap(), sig_alg].concat());
    assert_eq!(value, expected);
}

#[test]
fn cms_algorithm_protection_absent_unless_asked() {
    let (key, cert) = alice();
    for padding in [SignaturePadding::Pkcs1v15, SignaturePadding::Pss] {
        for digest in [DigestAlg::Sha1, DigestAlg::Sha256, DigestAlg::Sha512] {
            let off = SignOptions {
                padding,
                ..Default::default()
            };
            let sig = sign_detached(b"payload", key, cert, digest, &off).unwrap();
            assert!(
                !contains(&sig, PROTECTION_OID_DER),
                "{padding:?} {digest:?}"
            );
            verify_detached(&sig, b"payload", std::slice::from_ref(cert)).unwrap();

            let on = SignOptions {
                padding,
                algorithm_protection: true,
                ..Default::default()
            };
            let sig = sign_detached(b"payload", key, cert, digest, &on).unwrap();
            let at = find(&sig, PROTECTION_OID_DER, 0).expect("attribute present");
            assert!(
                find(&sig, PROTECTION_OID_DER, at + 1).is_none(),
                "only once"
            );
            check_algorithm_protection(&sig);
            let v = verify_detached(&sig, b"payload", std::slice::from_ref(cert)).unwrap();
            assert_eq!((v.digest, v.padding), (digest, padding));
            assert!(verify_detached(&sig, b"payloaD", std::slice::from_ref(cert)).is_err());
        }
    }
    // Without signed attributes there is nowhere to put it.
    let opts = SignOptions {
        signed_attributes: false,
        algorithm_protection: true,
        ..Default::default()
    };
    let sig = sign_detached(b"payload", key, cert, DigestAlg::Sha256, &opts).unwrap();
    assert!(!contains(&sig, PROTECTION_OID_DER));
}

#[test]
fn cms_verify_embedded_returns_content() {
    let (key, cert) = alice();
    let data = b"opaque signed content\r\n";
    let cms = CmsContentInfo::sign(Some(cert), Some(key), None, Some(data), CMSOptions::BINARY)
        .unwrap();
    let der = cms.to_der().unwrap();
    let (content, v) = verify_embedded(&der, std::slice::from_ref(cert)).unwrap();
    assert_eq!(content, data);
    assert_eq!(v.digest, DigestAlg::Sha256);
    let (_, bcert) = bob();
    assert!(matches!(
        verify_embedded(&der, std::slice::from_ref(bcert)),
        Err(CmsError::UnknownSigner(_))
    ));
    // A detached signature has no content to return.
    let sig = signed_by_alice(data);
    assert!(matches!(
        verify_embedded(&sig, std::slice::from_ref(cert)),
        Err(CmsError::Malformed(_))
    ));
}

// ---- compression ----

#[test]
fn cms_compress_round_trip_and_structure() {
    let data = b"UNA:+.? 'UNB+UNOA:2+X'\r\n".repeat(1000);
    let z = compress(&data).unwrap();
    assert!(z.len() < data.len() / 10);
    assert_eq!(kind(&z).unwrap(), CmsKind::Compressed);
    assert_eq!(decompress(&z, data.len()).unwrap(), data);
    assert!(matches!(
        decompress(&z, data.len() - 1),
        Err(CmsError::TooLarge { .. })
    ));
    assert_eq!(decompress(&compress(b"").unwrap(), 0).unwrap(), b"");

    // The RustCrypto `cms` crate reads it as DER CompressedData v0 / zlib / id-data.
    use ::cms::compressed_data::CompressedData;
    use ::cms::content_info::ContentInfo;
    use ::der::{Decode, Encode};
    let ci = ContentInfo::from_der(&z).unwrap();
    assert_eq!(ci.content_type.to_string(), OID_COMPRESSED);
    let cd: CompressedData = ci.content.decode_as().unwrap();
    assert_eq!(cd.version, ::cms::content_info::CmsVersion::V0);
    assert_eq!(cd.compression_alg.oid.to_string(), "1.2.840.113549.1.9.16.3.8"); // id-alg-zlibCompress
    assert!(cd.compression_alg.parameters.is_none());
    assert_eq!(cd.encap_content_info.econtent_type.to_string(), OID_DATA);
    assert_eq!(ci.to_der().unwrap(), z);
}

#[test]
fn cms_decompress_ber_indefinite_and_chunked() {
    use std::io::Write;
    let data = b"chunked BER content ".repeat(200);
    let mut enc = ZlibEncoder::new(Vec::new(), Compression::default());
    enc.write_all(&data).unwrap();
    let z = enc.finish().unwrap();
    let oid = |b: &[u8]| der::tlv(0x06, b);
    // Nested constructed OCTET STRING: 24 80 { 04 .. , 24 80 { 04 .. } 00 00 , 04 .. } 00 00
    let (a, rest) = z.split_at(z.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    let mut octets = vec![0x24, 0x80];
    octets.extend(der::tlv(0x04, a));
    octets.extend([0x24, 0x80]);
    octets.extend(der::tlv(0x04, b));
    octets.extend([0, 0]);
    octets.extend(der::tlv(0x04, c));
    octets.extend([0, 0]);
    let indef = |tag: u8, parts: &[&[u8]]| {
        let mut v = vec![tag, 0x80];
        for p in parts {
            v.extend_from_slice(p);
        }
        v.extend([0, 0]);
        v
    };
    let econtent = indef(0xA0, &[&octets]);
    let encap = indef(0x30, &[&oid(DER_OID_DATA), &econtent]);
    let alg = der::tlv(0x30, &oid(DER_OID_ZLIB));
    let cd = indef(0x30, &[&[0x02, 0x01, 0x00], &alg, &encap]);
    let ci = indef(0x30, &[&oid(DER_OID_COMPRESSED), &indef(0xA0, &[&cd])]);
    assert_eq!(kind(&ci).unwrap(), CmsKind::Compressed);
    assert_eq!(decompress(&ci, 1 << 20).unwrap(), data);
    // Every truncation fails cleanly.
    for i in 0..ci.len() {
        assert!(decompress(&ci[..i], 1 << 20).is_err(), "prefix {i}");
    }
}

#[test]
fn cms_decompress_zlib_bomb_is_bounded() {
    use std::io::Write;
    const MIB: usize = 1 << 20;
    let zeros = vec![0u8; MIB];
    let mut enc = ZlibEncoder::new(Vec::new(), Compression::best());
    for _ in 0..100 {
        enc.write_all(&zeros).unwrap();
    }
    let z = enc.finish().unwrap();
    assert!(z.len() < 200 * 1024, "bomb is small: {}", z.len());
    let econtent = der::tlv(0xA0, &der::tlv(0x04, &z));
    let encap = der::tlv(0x30, &[der::tlv(0x06, DER_OID_DATA), econtent].concat());
    let alg = der::tlv(0x30, &der::tlv(0x06, DER_OID_ZLIB));
    let cd = der::tlv(0x30, &[der::tlv(0x02, &[0]), alg, encap].concat());
    let ci = der::tlv(
        0x30,
        &[der::tlv(0x06, DER_OID_COMPRESSED), der::tlv(0xA0, &cd)].concat(),
    );
    let limit = 10 * MIB;
    match decompress(&ci, limit) {
        Err(CmsError::TooLarge { limit: l }) => assert_eq!(l, limit),
        other => panic!("expected TooLarge, got {:?}", other.map(|v| v.len())),
    }
    // The output buffer never grew past the limit.
    let mut out = Vec::new();
    assert!(matches!(
        inflate_bounded(&z, limit, &mut out),
        Err(CmsError::TooLarge { .. })
    ));
    assert!(out.capacity() <= limit, "capacity {}", out.capacity());
    assert!(out.len() <= limit);
}

#[test]
fn cms_unknown_digest_in_digest_algorithms_is_refused_before_openssl() {
    // OpenSSL 3.0 leaks in CMS_verify when a digestAlgorithms entry cannot be set up.
    let (_, cert) = alice();
    let trusted = std::slice::from_ref(cert);
    let sig = signed_by_alice(b"x");
    assert!(verify_detached(&sig, b"x", trusted).is_ok());
    let sha256 = [0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
    let at = find(&sig, &sha256, 0).unwrap();
    let mut bad = sig.clone();
    bad[at + 8] = 0xfe;
    assert!(matches!(verify_detached(&bad, b"x", trusted), Err(CmsError::Unsupported(m)) if m.contains("digest")));
}

#[test]
fn cms_garbage_never_panics() {
    let (key, cert) = alice();
    let trusted = std::slice::from_ref(cert);
    let keys = [(key.clone(), cert.clone())];
    let valid_z = compress(&b"some payload ".repeat(100)).unwrap();
    let valid_sig = signed_by_alice(b"x");
    let valid_env = encrypt(
        b"x",
        cert,
        ContentCipher::Aes128Cbc,
        KeyTransport::RsaPkcs1v15,
    )
    .unwrap();
    let mut inputs: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x30],
        vec![0x30, 0x80],
        vec![0x30, 0x80, 0x00],
        vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
        vec![0x30, 0x89, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        vec![0x30, 0xff],
        vec![0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00],
        vec![0x04, 0x80, 0x00, 0x00],
        vec![0x06, 0x00],
        vec![0x30, 0x02, 0x06, 0x00],
        [0x30u8, 0x80].repeat(5000),
        [0x24u8, 0x80].repeat(5000),
    ];
    // Pseudo-random bytes (xorshift), and mutations of valid blobs.
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for len in [1usize, 2, 3, 7, 16, 64, 300, 4096] {
        for _ in 0..20 {
            let mut v: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
            if len > 2 && rnd() % 2 == 0 {
                v[0] = 0x30;
                v[1] = 0x80;
            }
            inputs.push(v);
        }
    }
    for blob in [&valid_z, &valid_sig, &valid_env] {
        for i in (0..blob.len()).step_by(7) {
            inputs.push(blob[..i].to_vec());
        }
        for _ in 0..200 {
            let mut v = blob.clone();
            let i = (rnd() as usize) % v.len();
            v[i] = rnd() as u8;
            inputs.push(v);
        }
    }
    for input in &inputs {
        let _ = kind(input);
        let _ = decompress(input, 1 << 20);
        let _ = decrypt(input, &keys);
        let _ = verify_detached(input, b"x", trusted);
        let _ = verify_embedded(input, trusted);
    }
    // Truncated prefixes of a valid compressed blob are errors, never successes.
    for i in 0..valid_z.len() {
        assert!(decompress(&valid_z[..i], 1 << 20).is_err(), "prefix {i}");
    }
}

// ---- third-party fixtures (Mendelson AS2, via pyas2lib's test suite) ----

fn fixture(name: &str) -> Vec<u8> {
    crate::testing::fixture("as2", name)
}

/// The HTTP body: everything after the first blank line.
fn http_body(raw: &[u8]) -> &[u8] {
    let crlf = find(raw, b"\n\r\n", 0).map(|i| i + 3);
    let lf = find(raw, b"\n\n", 0).map(|i| i + 2);
    let start = match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).expect("no blank line after the HTTP headers"),
    };
    &raw[start..]
}

fn test_identity() -> Identity {
    let pem = fixture("cert_test.pem");
    let key = PKey::private_key_from_pem_passphrase(&pem, b"test").unwrap();
    let cert = X509::from_pem(&pem).unwrap();
    (key, cert)
}

#[test]
#[ignore = "needs ../shared/fixtures (third-party captures); .ci/run runs it when present"]
fn cms_fixture_mendelson_encrypted_decrypts_to_payload() {
    let raw = fixture("mecas2_encrypted.as2");
    let body = http_body(&raw);
    assert_eq!(&body[..2], &[0x30, 0x80], "BER body");
    assert_eq!(kind(body).unwrap(), CmsKind::Enveloped);
    let (key, cert) = test_identity();
    // The right key second: the first one must simply not match.
    let (akey, acert) = alice();
    let plain = decrypt(body, &[(akey.clone(), acert.clone()), (key, cert)]).unwrap();
    assert_eq!(plain, fixture("payload.txt"));
    assert!(matches!(
        decrypt(body, &[(akey.clone(), acert.clone())]),
        Err(CmsError::Decrypt(_))
    ));
}

#[test]
#[ignore = "needs ../shared/fixtures (third-party captures); .ci/run runs it when present"]
fn cms_fixture_mendelson_compressed_decompresses() {
    let raw = fixture("mecas2_compressed.as2");
    let name = find(&raw, b"smime.p7z", 0).expect("p7z part");
    let headers_end = find(&raw, b"\r\n\r\n", name).expect("part headers end") + 4;
    let start = find(&raw, &[0x30, 0x80], headers_end).expect("BER start");
    assert_eq!(start, headers_end);
    let end = find(&raw, b"\r\n------=_Part", start).expect("next boundary");
    let part = &raw[start..end];
    assert_eq!(kind(part).unwrap(), CmsKind::Compressed);
    let entity = decompress(part, 1 << 20).unwrap();
    let payload = fixture("payload.txt");
    let text = String::from_utf8_lossy(&entity).replace("\r\n", "\n");
    let payload = String::from_utf8_lossy(&payload).replace("\r\n", "\n");
    assert!(text.contains(payload.trim_end()), "entity:\n{text}");
    assert!(
        text.to_ascii_lowercase().contains("content-type:"),
        "a MIME entity"
    );
    assert!(matches!(
        decompress(part, 100),
        Err(CmsError::TooLarge { limit: 100 })
    ));
}

#[test]
#[ignore = "needs ../shared/fixtures (third-party captures); .ci/run runs it when present"]
fn cms_fixture_mendelson_signed_verifies() {
    let raw = fixture("mecas2_signed.as2");
    let boundary = b"------=_Part_211_306083396.1641304626706";
    let b1 = find(&raw, boundary, 0).expect("first boundary");
    let first_start = find(&raw, b"\n", b1).expect("boundary line end") + 1;
    let b2 = find(&raw, boundary, first_start).expect("second boundary");
    // The part ends before the line break preceding the next boundary.
    let mut first_end = b2 - 1;
    if raw[first_end - 1] == b'\r' {
        first_end -= 1;
    }
    let first = &raw[first_start..first_end];
    let sig_headers_end = find(&raw, b"\n\n", b2)
        .map(|i| i + 2)
        .or_else(|| find(&raw, b"\r\n\r\n", b2).map(|i| i + 4))
        .expect("signature part headers");
    let b3 = find(&raw, boundary, sig_headers_end).expect("closing boundary");
    let b64: Vec<u8> = raw[sig_headers_end..b3]
        .iter()
        .copied()
        .filter(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/' || *c == b'=')
        .collect();
    use base64::Engine;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(&b64)
        .unwrap();
    assert_eq!(kind(&sig).unwrap(), CmsKind::Signed);

    let mecas2 = X509::from_pem(&fixture("cert_mecas2_public.pem")).unwrap();
    let trusted = std::slice::from_ref(&mecas2);
    // The capture turned every CRLF into LF. Mendelson signed the part with CRLF header
    // lines and the binary body untouched (the payload has bare LFs), so restore the
    // header line ends only; the data itself is then hashed as given.
    assert!(verify_detached(&sig, first, trusted).is_err());
    let split = find(first, b"\n\n", 0).expect("part headers end");
    let mut signed = Vec::with_capacity(first.len() + 16);
    for &c in &first[..split] {
        if c == b'\n' {
            signed.push(b'\r');
        }
        signed.push(c);
    }
    signed.extend_from_slice(b"\r\n\r\n");
    signed.extend_from_slice(&first[split + 2..]);
    assert!(signed.ends_with(b"UNZ+1+5'\n"), "body keeps its final LF");
    let v = verify_detached(&sig, &signed, trusted).unwrap();
    assert_eq!(v.digest, DigestAlg::Sha256);
    assert_eq!(v.padding, SignaturePadding::Pkcs1v15);
    // Someone else's certificate: unknown signer, even though mecas2's cert is inside.
    let (_, acert) = alice();
    assert!(matches!(
        verify_detached(&sig, first, std::slice::from_ref(acert)),
        Err(CmsError::UnknownSigner(_))
    ));
}
