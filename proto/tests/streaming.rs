//! The streaming codecs (edinode_proto::stream) against the in-memory unwrapping: every
//! sign/encrypt/compress combination, cut into chunks of every awkward size, opens to the same
//! entities, documents and MIC; and broken input fails as it does in memory.

use edinode_proto::alg::{ContentCipher, DigestAlg, KeyTransport};
use edinode_proto::headers::As2Request;
use edinode_proto::mdn::Mic;
use edinode_proto::mime::{self, MimeLimits};
use edinode_proto::outbound::*;
use edinode_proto::stream::pipeline::{BodyMic, DecompressEntity, DecryptEntity, Documents};
use edinode_proto::stream::signed::SignedSplit;
use edinode_proto::stream::Codec;
use edinode_proto::testing::{alice, bob, carol};
use edinode_proto::unwrap::{self, Step};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

mod common;

const IDS: OutboundIds<'static> = OutboundIds { message_id: "<20260101.1@edinode>", boundary_seed: "seed42", date: "Thu, 01 Jan 2026 00:00:00 +0000" };

fn docs(big: bool) -> Vec<Document> {
    let mut bin: Vec<u8> = (0..=255u8).cycle().take(if big { 3 << 20 } else { 3000 }).collect();
    bin.extend_from_slice(b"\r\n------=_Rel_seed42\r\n------=_Sig_seed42--\r\n\n\r");
    vec![
        Document { filename: "a.edi".into(), content_type: "application/EDIFACT".into(), data: b"UNA:+.? 'UNB+UNOC:3+X+Y'\nUNZ+1+5'\n".to_vec() },
        Document { filename: "image.bin".into(), content_type: "application/octet-stream".into(), data: bin },
    ]
}

fn run(codec: &mut dyn Codec, input: &[u8], chunk: usize) -> Result<Vec<u8>, edinode_proto::error::ProcessingError> {
    edinode_proto::stream::run_all(codec, input, chunk)
}

struct Opened {
    docs: Vec<(Option<String>, String, Vec<u8>)>,
    mic: Mic,
    steps: Vec<Step>,
}

/// The in-memory way ([`common::open_in_memory`], sha1 for unsigned messages).
fn in_memory(entity: Vec<u8>, keys: &[(PKey<Private>, X509)], trusted: &[X509], requested: Option<DigestAlg>) -> Opened {
    let (docs, mic, steps) = common::open_in_memory(entity, keys, trusted, requested, DigestAlg::Sha1);
    Opened { docs: docs.into_iter().map(|d| (d.filename, d.content_type, d.data)).collect(), mic, steps }
}

/// The streaming way, `chunk` bytes at a time (classification from the entity's head only).
fn streamed(entity: Vec<u8>, keys: &[(PKey<Private>, X509)], trusted: &[X509], requested: Option<DigestAlg>, chunk: usize) -> Opened {
    let limits = MimeLimits::default();
    let mut entity = entity;
    let mut mic: Option<Mic> = None;
    let mut signed = false;
    let mut depth = 0;
    let mut steps = Vec::new();
    let unsigned = requested.unwrap_or(DigestAlg::Sha1);
    loop {
        let head = &entity[..entity.len().min(64 * 1024)];
        let step = unwrap::classify(head, &limits).unwrap();
        steps.push(step.clone());
        let mic_due = (depth == 0 && mic.is_none()).then_some(unsigned);
        let body_mic = |e: &[u8]| {
            mic_due.map(|a| {
                let mut m = BodyMic::new(a).unwrap();
                for c in e.chunks(chunk) {
                    m.update(c).unwrap();
                }
                m.mic().unwrap()
            })
        };
        match step {
            Step::Decrypt => {
                let mut d = DecryptEntity::new(keys.to_vec(), mic_due, limits).unwrap();
                entity = run(&mut d, &entity, chunk).unwrap();
                if let Some(m) = d.mic().unwrap() {
                    mic = Some(m);
                }
            }
            Step::Verify => {
                let ct = mime::Entity::parse(&entity, &limits).unwrap().content_type();
                let algs: Vec<DigestAlg> = SignedSplit::declared_alg(&ct).into_iter().chain(requested).collect();
                let mut s = SignedSplit::new(&algs, limits).unwrap();
                let inner = run(&mut s, &entity, chunk).unwrap();
                let mut parts = s.into_parts().unwrap();
                let sig = parts.signature(&limits).unwrap();
                for a in parts.missing(&sig).unwrap() {
                    parts.add_digest(a, openssl::hash::hash(a.message_digest(), &inner).unwrap().to_vec());
                }
                let v = parts.verify(&sig, trusted, requested).unwrap();
                if !signed {
                    mic = Some(v.mic);
                    signed = true;
                }
                entity = unwrap::as_entity(inner, &limits);
            }
            Step::Decompress => {
                mic = body_mic(&entity).or(mic);
                let mut d = DecompressEntity::new(1 << 30, None, limits).unwrap();
                entity = run(&mut d, &entity, chunk).unwrap();
            }
            Step::Payload => {
                mic = body_mic(&entity).or(mic);
                break;
            }
        }
        depth += 1;
    }
    let mut d = Documents::new(limits);
    let mut pieces = Vec::new();
    for c in entity.chunks(chunk) {
        d.push(c, &mut pieces).unwrap();
    }
    d.finish(&mut pieces).unwrap();
    let mut docs: Vec<(Option<String>, String, Vec<u8>)> = d.heads().iter().map(|h| (h.filename.clone(), h.content_type.clone(), Vec::new())).collect();
    for (i, p) in pieces {
        docs[i].2.extend_from_slice(&p);
    }
    Opened { docs, mic: mic.unwrap(), steps }
}

/// `docs` built as alice sends them to bob.
fn alice_to_bob(docs: &[Document], opts: &OutboundOptions) -> Built {
    let (akey, acert) = alice();
    build("alice", "bob", docs, opts, Some((akey, acert)), Some(&bob().1), &IDS, "s").unwrap()
}

/// What bob, receiving from alice, holds: his key to decrypt and her certificate to verify.
fn bob_receiving() -> ([(PKey<Private>, X509); 1], [X509; 1]) {
    let (bkey, bcert) = bob();
    ([(bkey.clone(), bcert.clone())], [alice().1.clone()])
}

fn entity_of(built: &Built) -> (Vec<u8>, Option<DigestAlg>) {
    let headers: Vec<mime::Header> = built.headers.iter().map(|(n, v)| mime::Header { name: n.clone(), value: v.clone() }).collect();
    let request = As2Request::from_headers(&headers).unwrap();
    (unwrap::entity_from_http(&headers, &built.body), request.mdn.as_ref().and_then(|m| m.preferred_micalg()))
}

#[test]
fn streaming_opens_every_combination_like_the_in_memory_path() {
    let (keys, trusted) = bob_receiving();
    let mut checked = 0;
    for opts in layerings() {
        let (sign, encrypt, compression, kt) = (opts.sign, opts.encrypt, opts.compression, opts.key_transport);
        let built = alice_to_bob(&docs(false), &opts);
        let (entity, requested) = entity_of(&built);
        let want = in_memory(entity.clone(), &keys, &trusted, requested);
        // Byte by byte once per layering (slow in a debug build), then awkward sizes.
        let bytewise = kt == KeyTransport::RsaPkcs1v15 && encrypt != Some(ContentCipher::Des3) && sign != Some(DigestAlg::Sha1);
        let sizes: &[usize] = if bytewise { &[1, 7, 1000, 1 << 20] } else { &[3, 64, 1 << 20] };
        for &chunk in sizes {
            let got = streamed(entity.clone(), &keys, &trusted, requested, chunk);
            let what = format!("sign {sign:?} encrypt {encrypt:?} {compression:?} {kt:?} chunk {chunk}");
            assert_eq!(got.steps, want.steps, "{what}");
            assert_eq!(got.mic, want.mic, "{what}");
            assert_eq!(got.docs, want.docs, "{what}");
            assert_eq!(got.mic, built.mic, "{what}: the MIC the sender expects");
            checked += 1;
        }
    }
    assert!(checked > 150, "{checked}");
}

/// Every layering: no signature, sha256 or sha1; no encryption, AES-256-CBC, 3DES or
/// AES-128-GCM (PKCS#1 v1.5 and OAEP); no compression, before or after signing. A signed
/// synchronous MDN is asked for.
fn layerings() -> Vec<OutboundOptions> {
    let mut out = Vec::new();
    for sign in [None, Some(DigestAlg::Sha256), Some(DigestAlg::Sha1)] {
        for encrypt in [None, Some(ContentCipher::Aes256Cbc), Some(ContentCipher::Des3), Some(ContentCipher::Aes128Gcm)] {
            for compression in [Compression::None, Compression::BeforeSigning, Compression::AfterSigning] {
                for kt in [KeyTransport::RsaPkcs1v15, KeyTransport::RsaOaep] {
                    if encrypt.is_none() && kt == KeyTransport::RsaOaep {
                        continue;
                    }
                    out.push(OutboundOptions { sign, encrypt, compression, key_transport: kt, mdn: MdnRequest::Sync { signed: Some(DigestAlg::Sha256) }, ..Default::default() });
                }
            }
        }
    }
    out
}

#[test]
fn streaming_a_few_mib_in_mib_chunks_matches() {
    let (keys, trusted) = bob_receiving();
    let opts = OutboundOptions { sign: Some(DigestAlg::Sha256), encrypt: Some(ContentCipher::Aes256Cbc), compression: Compression::BeforeSigning, mdn: MdnRequest::Sync { signed: Some(DigestAlg::Sha256) }, ..Default::default() };
    let built = alice_to_bob(&docs(true), &opts);
    let (entity, requested) = entity_of(&built);
    let want = in_memory(entity.clone(), &keys, &trusted, requested);
    for chunk in [4093, 1 << 20] {
        let got = streamed(entity.clone(), &keys, &trusted, requested, chunk);
        assert_eq!(got.docs, want.docs);
        assert_eq!(got.mic, built.mic);
    }
}

fn built(opts: &OutboundOptions) -> (Vec<u8>, Option<DigestAlg>) {
    entity_of(&alice_to_bob(&docs(false), opts))
}

#[test]
fn streaming_refuses_what_the_in_memory_path_refuses() {
    let limits = MimeLimits::default();
    let (bkey, bcert) = bob();
    let (ckey, ccert) = carol();
    // Encrypted for bob, opened with carol's key: no RecipientInfo names her.
    let (entity, _) = built(&OutboundOptions { encrypt: Some(ContentCipher::Aes256Cbc), ..Default::default() });
    let mut d = DecryptEntity::new(vec![(ckey.clone(), ccert.clone())], None, limits).unwrap();
    let e = run(&mut d, &entity, 4096).unwrap_err();
    assert!(e.to_string().contains("no RecipientInfo"), "{e}");
    // Truncated: a CBC stream cut short fails at the end, never yields a result.
    let mut d = DecryptEntity::new(vec![(bkey.clone(), bcert.clone())], None, limits).unwrap();
    let e = run(&mut d, &entity[..entity.len() - 40], 4096).unwrap_err();
    assert!(matches!(e, edinode_proto::error::ProcessingError::Decryption(_)), "{e}");
    // GCM with one content byte flipped: the tag check fails.
    let (entity, _) = built(&OutboundOptions { encrypt: Some(ContentCipher::Aes128Gcm), ..Default::default() });
    let mut bad = entity.clone();
    let n = bad.len();
    bad[n - 200] ^= 1;
    let mut d = DecryptEntity::new(vec![(bkey.clone(), bcert.clone())], None, limits).unwrap();
    assert!(run(&mut d, &bad, 4096).is_err());
    // Signed by alice, checked against carol: unknown signer; content altered: integrity.
    let (entity, requested) = built(&OutboundOptions { sign: Some(DigestAlg::Sha256), ..Default::default() });
    let check = |entity: &[u8], trusted: &[X509]| {
        let mut s = SignedSplit::new(&[DigestAlg::Sha256], limits).unwrap();
        run(&mut s, entity, 100).unwrap();
        let parts = s.into_parts().unwrap();
        let sig = parts.signature(&limits).unwrap();
        parts.verify(&sig, trusted, requested).map(|_| ())
    };
    let e = check(&entity, std::slice::from_ref(ccert)).unwrap_err();
    assert!(matches!(e, edinode_proto::error::ProcessingError::Authentication(_)), "{e}");
    let mut altered = entity.clone();
    let at = mime::find(&altered, b"UNZ+1+5").unwrap();
    altered[at] = b'V';
    let e = check(&altered, &[alice().1.clone()]).unwrap_err();
    assert!(matches!(e, edinode_proto::error::ProcessingError::Integrity(_)), "{e}");
    assert!(check(&entity, &[alice().1.clone()]).is_ok());
}

#[test]
fn streaming_decompression_stops_at_the_limit_with_bounded_output_per_call() {
    let limits = MimeLimits::default();
    // 64 MiB of zeros compress to about 64 KiB.
    let zeros = vec![0u8; 64 << 20];
    let der = edinode_proto::cms::compress(&zeros).unwrap();
    let mut entity = b"Content-Type: application/pkcs7-mime; smime-type=compressed-data\r\nContent-Transfer-Encoding: binary\r\n\r\n".to_vec();
    entity.extend_from_slice(&der);
    let mut d = DecompressEntity::new(1 << 20, None, limits).unwrap();
    let e = run(&mut d, &entity, 1 << 20).unwrap_err();
    assert!(e.to_string().contains("exceeds the limit"), "{e}");
    // Within a generous limit: no single call hands out more than a few MiB.
    let mut d = DecompressEntity::new(1 << 30, None, limits).unwrap();
    let mut out = Vec::new();
    let mut total = 0usize;
    let mut most = 0usize;
    for c in entity.chunks(1 << 20) {
        d.push(c, &mut out).unwrap();
        most = most.max(out.len());
        total += out.len();
        out.clear();
        while d.pending() {
            d.push(&[], &mut out).unwrap();
            most = most.max(out.len());
            total += out.len();
            out.clear();
        }
    }
    d.finish(&mut out).unwrap();
    most = most.max(out.len());
    total += out.len();
    assert!(most <= 5 << 20, "one call produced {most} bytes");
    assert!(total >= 64 << 20, "{total}");
}

/// The captured Mendelson messages (BER, indefinite lengths, chunked OCTET STRINGs) open the
/// same way streamed as in memory.
#[test]
#[ignore = "needs the third-party captures in ../shared/fixtures (EDINODE_FIXTURES)"]
fn streaming_opens_the_mendelson_captures() {
    let dir = std::env::var("EDINODE_FIXTURES").unwrap_or_else(|_| "../../shared/fixtures".into());
    let dir = std::path::Path::new(&dir).join("as2");
    let pem = |n: &str| std::fs::read(dir.join(n)).unwrap();
    let key = PKey::private_key_from_pem_passphrase(&pem("cert_test.pem"), b"test").unwrap();
    let cert = X509::from_pem(&pem("cert_test_public.pem")).unwrap();
    let theirs = X509::from_pem(&pem("cert_mecas2_public.pem")).unwrap();
    let keys = [(key, cert)];
    // mecas2_signed.as2 lost its CRs on the way: only the in-memory path tries the CRLF forms.
    for name in ["mecas2_compressed.as2", "mecas2_encrypted.as2", "mecas2_signed_encrypted.as2", "mecas2_compressed_signed_encrypted.as2"] {
        let raw = std::fs::read(dir.join(name)).unwrap();
        // The capture is the HTTP request: headers, blank line, body.
        let limits = MimeLimits::default();
        let e = mime::Entity::parse(&raw, &limits).unwrap();
        let request = As2Request::from_headers(&e.headers).unwrap();
        let requested = request.mdn.as_ref().and_then(|m| m.preferred_micalg());
        let entity = unwrap::entity_from_http(&e.headers, e.body);
        let want = in_memory(entity.clone(), &keys, std::slice::from_ref(&theirs), requested);
        for chunk in [1, 5, 4096] {
            let got = streamed(entity.clone(), &keys, std::slice::from_ref(&theirs), requested, chunk);
            assert_eq!(got.docs, want.docs, "{name} chunk {chunk}");
            assert_eq!(got.mic, want.mic, "{name} chunk {chunk}");
        }
    }
}

/// Builds with [`StreamBuilder`], the documents read `chunk` bytes at a time as a node reads
/// its blobs, and returns the message as [`build`] would (body joined).
fn stream_build(docs: &[Document], opts: &OutboundOptions, ids: &OutboundIds<'_>, chunk: usize) -> (Built, StreamBuilt) {
    let (akey, acert) = alice();
    let (_, bcert) = bob();
    let meta = docs.iter().map(|d| StreamDocument { filename: d.filename.clone(), content_type: d.content_type.clone(), len: d.data.len() as u64 }).collect();
    let mut b = StreamBuilder::new("alice", "bob", meta, opts, Some((akey, acert)), Some(bcert), ids, "s").unwrap();
    let mut sources: Vec<Vec<u8>> = docs.iter().map(|d| d.data.clone()).collect();
    let read = |pieces: &[Piece], sources: &[Vec<u8>]| -> Vec<u8> {
        pieces.iter().flat_map(|p| match p {
            Piece::Bytes(b) => b.clone(),
            Piece::Source(i) => sources[*i].clone(),
        }).collect()
    };
    let built = loop {
        match b.next_step().unwrap() {
            BuildStep::Pass { pieces, stores } => {
                let mut out = Vec::new();
                for c in read(&pieces, &sources).chunks(chunk) {
                    b.push(c, &mut out).unwrap();
                }
                b.finish(&mut out).unwrap();
                if stores {
                    sources.push(out);
                } else {
                    assert!(out.is_empty(), "a pass that stores nothing produces nothing");
                }
            }
            BuildStep::Done(built) => break built,
        }
    };
    let body = read(&built.body, &sources);
    assert_eq!(body.len() as u64, built.len, "the announced length");
    let joined = Built { headers: built.headers.clone(), body, mic: built.mic.clone(), mic_alternatives: built.mic_alternatives.clone(), message_id: built.message_id.clone() };
    (joined, built)
}

#[test]
fn streamed_outbound_every_combination_opens_to_the_documents_and_the_mic() {
    let (keys, trusted) = bob_receiving();
    let one = vec![docs(false).remove(1)];
    let mut checked = 0;
    for layering in layerings() {
        let (sign, encrypt, compression, kt) = (layering.sign, layering.encrypt, layering.compression, layering.key_transport);
        // Several documents with a signed MDN asked for; one binary and one text document
        // (bare LFs, some already CRLF: the CRLF basis differs) without an MDN.
        let text = vec![Document { filename: "notes.txt".into(), content_type: "text/plain; charset=utf-8".into(), data: b"line one\nline two\r\nline three\n\n".to_vec() }];
        for (n, (mdn, docs)) in [(MdnRequest::Sync { signed: Some(DigestAlg::Sha256) }, docs(false)), (MdnRequest::None, one.clone()), (MdnRequest::None, text)].into_iter().enumerate() {
            let opts = OutboundOptions { mdn, ..layering.clone() };
            let want = alice_to_bob(&docs, &opts);
            for chunk in [3, 1000, 1 << 20] {
                let (got, _) = stream_build(&docs, &opts, &IDS, chunk);
                let what = format!("sign {sign:?} encrypt {encrypt:?} {compression:?} {kt:?} mdn {n} chunk {chunk}");
                let names = |b: &Built| b.headers.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
                assert_eq!(names(&got), names(&want), "{what}");
                if sign.is_none() && encrypt.is_none() {
                    // Nothing random in it: the very bytes `build` makes.
                    assert_eq!(got.headers, want.headers, "{what}");
                    assert!(got.body == want.body, "{what}: body differs");
                }
                let (entity, requested) = entity_of(&got);
                let opened = in_memory(entity.clone(), &keys, &trusted, requested);
                let sent: Vec<_> = docs.iter().map(|d| (Some(d.filename.clone()), mime::ContentType::parse(&d.content_type).mime.to_ascii_lowercase(), d.data.clone())).collect();
                let lower: Vec<_> = opened.docs.iter().map(|(f, t, d)| (f.clone(), t.to_ascii_lowercase(), d.clone())).collect();
                assert!(lower == sent, "{what}: the documents differ");
                assert_eq!(opened.mic, got.mic, "{what}: the MIC the receiver returns");
                if sign.is_some() {
                    assert_eq!(got.mic.alg, want.mic.alg, "{what}");
                } else {
                    // Unsigned: what the MICs cover is the same bytes as `build`'s (what is
                    // encrypted is not random), and so are the other receivers' bases.
                    assert_eq!(got.mic, want.mic, "{what}");
                }
                assert_eq!(got.mic_alternatives, want.mic_alternatives, "{what}");
                if chunk == 1000 {
                    let s = streamed(entity, &keys, &trusted, requested, 4096);
                    assert!(s.docs == opened.docs, "{what}: the streaming receiver opens other documents");
                    assert_eq!(s.mic, got.mic, "{what}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 400, "{checked}");
}

#[test]
fn streamed_outbound_chooses_the_boundaries_build_chooses() {
    // Content that holds the first-choice boundaries, cut so they span chunk edges.
    let mut d = docs(false);
    d[0].data.extend_from_slice(b"\r\n------=_Rel_seed42.1 and ------=_Sig_seed42\r\n");
    for compression in [Compression::None, Compression::AfterSigning] {
        let opts = OutboundOptions { sign: Some(DigestAlg::Sha256), compression, ..Default::default() };
        let (akey, acert) = alice();
        let want = build("alice", "bob", &d, &opts, Some((akey, acert)), None, &IDS, "s").unwrap();
        for chunk in [1, 5, 17, 4096] {
            let (got, _) = stream_build(&d, &opts, &IDS, chunk);
            let ct = |b: &Built| b.headers.iter().find(|(n, _)| n == "Content-Type").unwrap().1.clone();
            assert_eq!(ct(&got), ct(&want), "chunk {chunk}");
            let rel = |b: &Built| String::from_utf8_lossy(&b.body).lines().find(|l| l.contains("multipart/related")).map(str::to_string);
            assert_eq!(rel(&got), rel(&want), "chunk {chunk}");
        }
    }
}

#[test]
fn streamed_outbound_refuses_what_build_refuses() {
    let (akey, acert) = alice();
    let meta = |ct: &str| vec![StreamDocument { filename: "a".into(), content_type: ct.into(), len: 1 }];
    let opts = OutboundOptions { sign: Some(DigestAlg::Sha256), ..Default::default() };
    let new = |docs, opts: &OutboundOptions, signer| StreamBuilder::new("alice", "bob", docs, opts, signer, None, &IDS, "s").err().map(|e| e.to_string());
    assert!(new(meta("multipart/mixed"), &opts, Some((akey, acert))).unwrap().contains("cannot be sent"));
    assert!(new(Vec::new(), &opts, Some((akey, acert))).unwrap().contains("no documents"));
    assert!(new(meta("text/plain"), &opts, None).unwrap().contains("no signing key"));
    let enc = OutboundOptions { encrypt: Some(ContentCipher::Aes256Cbc), ..Default::default() };
    assert!(new(meta("text/plain"), &enc, None).unwrap().contains("no recipient"));
    let mut b = StreamBuilder::new("alice", "bob", meta("text/plain"), &opts, Some((akey, acert)), None, &IDS, "s").unwrap();
    assert!(b.push(b"x", &mut Vec::new()).is_err(), "no pass runs before next()");
    assert!(matches!(b.next_step().unwrap(), BuildStep::Pass { .. }));
    assert!(b.next_step().is_err(), "a pass must be finished first");
}

#[test]
fn streaming_verifies_a_signature_without_signed_attributes() {
    use base64::Engine;
    let limits = MimeLimits::default();
    let (akey, acert) = alice();
    let content = b"Content-Type: application/edi-x12\r\nContent-Disposition: attachment; filename=\"u.edi\"\r\n\r\nISA*UNATTRIBUTED~\r\nIEA*1~\r\n".to_vec();
    let opts = edinode_proto::cms::SignOptions { signed_attributes: false, ..Default::default() };
    let sig = edinode_proto::cms::sign_detached(&content, akey, acert, DigestAlg::Sha256, &opts).unwrap();
    let signed = |content: &[u8]| {
        let mut e = b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"u1\"\r\n\r\n--u1\r\n".to_vec();
        e.extend_from_slice(content);
        e.extend_from_slice(b"\r\n--u1\r\nContent-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n\r\n");
        e.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(&sig).as_bytes());
        e.extend_from_slice(b"\r\n--u1--\r\n");
        e
    };
    let trusted = [acert.clone()];
    let want = in_memory(signed(&content), &[], &trusted, Some(DigestAlg::Sha256));
    for chunk in [1, 7, 4096] {
        let got = streamed(signed(&content), &[], &trusted, Some(DigestAlg::Sha256), chunk);
        assert_eq!((got.docs.clone(), got.mic.clone(), got.steps.clone()), (want.docs.clone(), want.mic.clone(), want.steps.clone()), "chunk {chunk}");
    }
    // The content altered, or checked against someone else's certificate: refused.
    let check = |entity: &[u8], trusted: &[X509]| {
        let mut s = SignedSplit::new(&[DigestAlg::Sha256], limits).unwrap();
        run(&mut s, entity, 100).unwrap();
        let parts = s.into_parts().unwrap();
        let sig = parts.signature(&limits).unwrap();
        parts.verify(&sig, trusted, Some(DigestAlg::Sha256)).map(|_| ())
    };
    let mut altered = content.clone();
    let at = mime::find(&altered, b"IEA*1").unwrap();
    altered[at] = b'J';
    assert!(check(&signed(&altered), &trusted).is_err(), "altered content");
    assert!(check(&signed(&content), &[carol().1.clone()]).is_err(), "unknown signer");
    assert!(check(&signed(&content), &trusted).is_ok());
}
