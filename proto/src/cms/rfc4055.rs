//! RSASSA-PSS and RSAES-OAEP AlgorithmIdentifiers written without parameters (pyas2lib writes
//! both so): OpenSSL refuses them ("invalid pss parameters", a failed decryption), so the
//! parameters are supplied before OpenSSL reads the structure.
//!
//! - RSAES-OAEP (a KeyTransRecipientInfo's keyEncryptionAlgorithm): the RFC 4055 defaults,
//!   SHA-1, MGF1 with SHA-1 and an empty label, written as the empty RSAES-OAEP-params.
//! - RSASSA-PSS (a SignerInfo's signatureAlgorithm): RFC 4055's defaults are SHA-1, MGF1 with
//!   SHA-1 and a 20-byte salt, but CMS (RFC 4056) and OpenSSL require the PSS hash to be the
//!   SignerInfo's digestAlgorithm, and pyas2lib signs with that digest and oscrypto's salt
//!   length. So the parameters are the digestAlgorithm (for SHA-1: exactly the defaults), MGF1
//!   with it, and the salt length the signature itself shows under the signer's public key
//!   (RFC 8017 9.1.2 decoding; 20 for SHA-1, the hash length otherwise, when it cannot be read).
//!
//! Only these fields are rewritten; every enclosing definite length is re-encoded, indefinite
//! lengths stay indefinite, and nothing else changes (the signature covers the signed
//! attributes or the content, never the SignerInfo's algorithm fields).

use super::{ber, der, CmsError, OID_AUTH_ENVELOPED, OID_ENVELOPED, OID_RSASSA_PSS, OID_SIGNED};
use crate::alg::DigestAlg;
use openssl::x509::X509;

const OID_RSAES_OAEP: &str = "1.2.840.113549.1.1.7";
const OID_MGF1: &str = "1.2.840.113549.1.1.8";

/// One element: its encoding as received and its parsed view.
struct Element<'a> {
    raw: &'a [u8],
    tlv: ber::Tlv<'a>,
}

fn elements(content: &[u8], depth: usize) -> Result<Vec<Element<'_>>, CmsError> {
    let mut out = Vec::new();
    let mut rest = content;
    while !rest.is_empty() {
        let (tlv, after) = ber::read(rest, depth).map_err(CmsError::Malformed)?;
        out.push(Element { raw: &rest[..rest.len() - after.len()], tlv });
        rest = after;
    }
    Ok(out)
}

/// The element with new content: same identifier, same length form (indefinite stays so).
fn rebuild(e: &Element<'_>, content: &[u8]) -> Result<Vec<u8>, CmsError> {
    let h = ber::read_header(e.raw).map_err(CmsError::Malformed)?;
    if h.tag >= 31 {
        return Err(CmsError::Unsupported("high tag number on a rewritten element".into()));
    }
    let id = (h.class << 6) | (u8::from(h.constructed) << 5) | h.tag as u8;
    Ok(match h.len {
        Some(_) => der::tlv(id, content),
        None => {
            let mut out = Vec::with_capacity(content.len() + 4);
            out.extend_from_slice(&[id, 0x80]);
            out.extend_from_slice(content);
            out.extend_from_slice(&[0, 0]);
            out
        }
    })
}

/// `elements` with `replaced` ones swapped in, re-encoded as the content of `parent`; None when
/// nothing was replaced.
fn splice(parent: &Element<'_>, children: &[Element<'_>], replaced: Vec<(usize, Vec<u8>)>) -> Result<Option<Vec<u8>>, CmsError> {
    if replaced.is_empty() {
        return Ok(None);
    }
    let mut content = Vec::with_capacity(parent.tlv.content.len() + 64);
    for (i, c) in children.iter().enumerate() {
        match replaced.iter().find(|(j, _)| *j == i) {
            Some((_, new)) => content.extend_from_slice(new),
            None => content.extend_from_slice(c.raw),
        }
    }
    rebuild(parent, &content).map(Some)
}

fn oid_of(e: &Element<'_>) -> Option<String> {
    e.tlv.is_universal(false, ber::TAG_OID).then(|| ber::oid_to_string(e.tlv.content).ok()).flatten()
}

/// The DER of an OID given in dotted form.
fn oid_der(dotted: &str) -> Vec<u8> {
    let arcs: Vec<u64> = dotted.split('.').filter_map(|a| a.parse().ok()).collect();
    let mut body = Vec::new();
    let first = arcs.first().copied().unwrap_or(0) * 40 + arcs.get(1).copied().unwrap_or(0);
    for arc in std::iter::once(first).chain(arcs.iter().skip(2).copied()) {
        let mut bytes = vec![(arc & 0x7f) as u8];
        let mut v = arc >> 7;
        while v > 0 {
            bytes.push(0x80 | (v & 0x7f) as u8);
            v >>= 7;
        }
        bytes.reverse();
        body.extend_from_slice(&bytes);
    }
    der::tlv(0x06, &body)
}

fn integer_der(v: usize) -> Vec<u8> {
    let mut bytes: Vec<u8> = v.to_be_bytes().iter().copied().skip_while(|b| *b == 0).collect();
    if bytes.first().is_none_or(|b| b & 0x80 != 0) {
        bytes.insert(0, 0);
    }
    der::tlv(0x02, &bytes)
}

/// RSASSA-PSS-params for `digest` and `salt`, fields at their default left out (DER).
fn pss_params(digest: DigestAlg, salt: usize) -> Vec<u8> {
    let mut fields = Vec::new();
    if digest != DigestAlg::Sha1 {
        let hash = der::tlv(0x30, &oid_der(digest.oid()));
        fields.extend(der::tlv(0xA0, &hash));
        let mut mgf = oid_der(OID_MGF1);
        mgf.extend(hash);
        fields.extend(der::tlv(0xA1, &der::tlv(0x30, &mgf)));
    }
    if salt != 20 {
        fields.extend(der::tlv(0xA2, &integer_der(salt)));
    }
    der::tlv(0x30, &fields)
}

/// An AlgorithmIdentifier of `oid` whose parameters are absent (or NULL), with `params`.
fn with_params(alg: &Element<'_>, oid: &str, params: impl FnOnce() -> Vec<u8>) -> Result<Option<Vec<u8>>, CmsError> {
    if !alg.tlv.is_universal(true, ber::TAG_SEQUENCE) {
        return Ok(None);
    }
    let kids = elements(alg.tlv.content, 7)?;
    let bare = match kids.as_slice() {
        [o] => oid_of(o).as_deref() == Some(oid),
        [o, p] => oid_of(o).as_deref() == Some(oid) && p.tlv.is_universal(false, 5) && p.tlv.content.is_empty(),
        _ => false,
    };
    if !bare {
        return Ok(None);
    }
    let mut content = kids[0].raw.to_vec();
    content.extend(params());
    rebuild(alg, &content).map(Some)
}

/// The salt length of an RSASSA-PSS `signature` made with `digest` under `cert`'s RSA key
/// (EMSA-PSS decoding, RFC 8017 9.1.2); None when it does not decode under that key.
pub(super) fn pss_salt_length(signature: &[u8], cert: &X509, digest: DigestAlg) -> Option<usize> {
    let rsa = cert.public_key().ok()?.rsa().ok()?;
    let mod_bits = rsa.n().num_bits() as usize;
    let mut buf = vec![0u8; rsa.size() as usize];
    let n = rsa.public_decrypt(signature, &mut buf, openssl::rsa::Padding::NONE).ok()?;
    let em_bits = mod_bits.checked_sub(1)?;
    let em_len = em_bits.div_ceil(8);
    let em = buf.get(n.checked_sub(em_len)?..n)?;
    let h_len = digest.message_digest().size();
    if em.last() != Some(&0xBC) || em_len < h_len + 2 {
        return None;
    }
    let (masked_db, h) = (&em[..em_len - h_len - 1], &em[em_len - h_len - 1..em_len - 1]);
    // MGF1 (RFC 8017 B.2.1).
    let mut mask = Vec::with_capacity(masked_db.len() + h_len);
    let mut counter: u32 = 0;
    while mask.len() < masked_db.len() {
        let mut seed = h.to_vec();
        seed.extend_from_slice(&counter.to_be_bytes());
        mask.extend_from_slice(&openssl::hash::hash(digest.message_digest(), &seed).ok()?);
        counter += 1;
    }
    let mut db: Vec<u8> = masked_db.iter().zip(&mask).map(|(a, b)| a ^ b).collect();
    if let Some(first) = db.first_mut() {
        *first &= 0xFF >> (8 * em_len - em_bits);
    }
    let sep = db.iter().position(|&b| b != 0)?;
    (db[sep] == 0x01).then(|| db.len() - sep - 1)
}

/// `der` with the missing RSASSA-PSS and RSAES-OAEP parameters supplied, or None when none is
/// missing. `salt` gives the salt length of a PSS signature made with a digest (None: unknown).
pub(super) fn supply_params(der: &[u8], salt: impl Fn(&[u8], DigestAlg) -> Option<usize>) -> Result<Option<Vec<u8>>, CmsError> {
    rewrite(der, &|field, alg| match field {
        Field::Signature { digest, signature } => {
            let default_salt = if digest == DigestAlg::Sha1 { 20 } else { digest.message_digest().size() };
            with_params(alg, OID_RSASSA_PSS, || pss_params(digest, salt(signature, digest).unwrap_or(default_salt)))
        }
        // All defaults: the empty SEQUENCE.
        Field::KeyTransport => with_params(alg, OID_RSAES_OAEP, || vec![0x30, 0x00]),
    })
}

/// Which AlgorithmIdentifier [`rewrite`] hands over.
enum Field<'a> {
    /// A SignerInfo's signatureAlgorithm, with its digestAlgorithm and signature value.
    Signature { digest: DigestAlg, signature: &'a [u8] },
    /// A KeyTransRecipientInfo's keyEncryptionAlgorithm.
    KeyTransport,
}

type Rewriter<'f> = dyn Fn(Field<'_>, &Element<'_>) -> Result<Option<Vec<u8>>, CmsError> + 'f;

/// `der` with the signature and key-transport AlgorithmIdentifiers `f` rewrites; None when it
/// rewrites none.
fn rewrite(der: &[u8], f: &Rewriter<'_>) -> Result<Option<Vec<u8>>, CmsError> {
    let (ci_tlv, rest) = ber::read(der, 0).map_err(CmsError::Malformed)?;
    let ci = Element { raw: &der[..der.len() - rest.len()], tlv: ci_tlv };
    let ci_kids = elements(ci.tlv.content, 1)?;
    let [kind, explicit] = ci_kids.as_slice() else { return Ok(None) };
    let kind = oid_of(kind).unwrap_or_default();
    let inner_kids = elements(explicit.tlv.content, 2)?;
    let [body] = inner_kids.as_slice() else { return Ok(None) };
    let fields = elements(body.tlv.content, 3)?;
    let replaced = match kind.as_str() {
        OID_SIGNED => signer_infos(&fields, f)?,
        OID_ENVELOPED | OID_AUTH_ENVELOPED => recipient_infos(&fields, f)?,
        _ => vec![],
    };
    let Some(body) = splice(body, &fields, replaced)? else { return Ok(None) };
    let Some(explicit) = splice(explicit, &inner_kids, vec![(0, body)])? else { return Ok(None) };
    let mut out = splice(&ci, &ci_kids, vec![(1, explicit)])?;
    if let Some(o) = out.as_mut() {
        o.extend_from_slice(rest);
    }
    Ok(out)
}

/// SignedData: the signerInfos SET is its last field.
fn signer_infos(fields: &[Element<'_>], f: &Rewriter<'_>) -> Result<Vec<(usize, Vec<u8>)>, CmsError> {
    let Some((at, set)) = fields.iter().enumerate().rev().find(|(_, e)| e.tlv.is_universal(true, ber::TAG_SET)) else { return Ok(vec![]) };
    let infos = elements(set.tlv.content, 4)?;
    let mut changed = Vec::new();
    for (i, si) in infos.iter().enumerate() {
        // version, sid, digestAlgorithm, [0] signedAttrs OPTIONAL, signatureAlgorithm, signature
        let fs = elements(si.tlv.content, 5)?;
        let at_sig = if fs.get(3).is_some_and(|e| e.tlv.is_context(true, 0)) { 4 } else { 3 };
        let (Some(digest_alg), Some(sig_alg), Some(signature)) = (fs.get(2), fs.get(at_sig), fs.get(at_sig + 1)) else { continue };
        let digest = elements(digest_alg.tlv.content, 6)?.first().and_then(oid_of).and_then(|o| DigestAlg::from_oid(&o));
        // PSS with MD5 does not exist; such a signer is left to fail as it is.
        let Some(digest) = digest.filter(|d| *d != DigestAlg::Md5) else { continue };
        let mut pieces = Vec::new();
        ber::collect_octets(&signature.tlv, 6, &mut pieces).map_err(CmsError::Malformed)?;
        let signature = pieces.concat();
        if let Some(new_alg) = f(Field::Signature { digest, signature: &signature }, sig_alg)?
            && let Some(new_si) = splice(si, &fs, vec![(at_sig, new_alg)])?
        {
            changed.push((i, new_si));
        }
    }
    Ok(splice(set, &infos, changed)?.map(|s| vec![(at, s)]).unwrap_or_default())
}

/// EnvelopedData / AuthEnvelopedData: the recipientInfos SET follows the version and an
/// optional [0] originatorInfo.
fn recipient_infos(fields: &[Element<'_>], f: &Rewriter<'_>) -> Result<Vec<(usize, Vec<u8>)>, CmsError> {
    let at = if fields.get(1).is_some_and(|e| e.tlv.is_context(true, 0)) { 2 } else { 1 };
    let Some(set) = fields.get(at).filter(|e| e.tlv.is_universal(true, ber::TAG_SET)) else { return Ok(vec![]) };
    let infos = elements(set.tlv.content, 4)?;
    let mut changed = Vec::new();
    for (i, ri) in infos.iter().enumerate() {
        // KeyTransRecipientInfo (a SEQUENCE; the other kinds are tagged): version, rid,
        // keyEncryptionAlgorithm, encryptedKey.
        if !ri.tlv.is_universal(true, ber::TAG_SEQUENCE) {
            continue;
        }
        let fs = elements(ri.tlv.content, 5)?;
        let Some(alg) = fs.get(2) else { continue };
        if let Some(new_alg) = f(Field::KeyTransport, alg)?
            && let Some(new_ri) = splice(ri, &fs, vec![(2, new_alg)])?
        {
            changed.push((i, new_ri));
        }
    }
    Ok(splice(set, &infos, changed)?.map(|s| vec![(at, s)]).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alg::{ContentCipher, KeyTransport, SignaturePadding};
    use crate::cms::{self, SignOptions};
    use crate::testing::{alice, bob};
    use openssl::cms::{CMSOptions, CmsContentInfo};

    /// What pyas2lib writes: the PSS and OAEP identifiers without parameters.
    fn strip_params(der: &[u8]) -> Vec<u8> {
        rewrite(der, &|_, alg| {
            let kids = elements(alg.tlv.content, 7)?;
            match kids.as_slice() {
                [o, _] if matches!(oid_of(o).as_deref(), Some(OID_RSASSA_PSS | OID_RSAES_OAEP)) => rebuild(alg, o.raw).map(Some),
                _ => Ok(None),
            }
        })
        .unwrap()
        .expect("parameters to strip")
    }

    #[test]
    fn rfc4055_pss_without_parameters_verifies() {
        let (akey, acert) = alice();
        let data = b"Content-Type: application/edi-x12\r\n\r\nISA*PSS~";
        for digest in [DigestAlg::Sha1, DigestAlg::Sha256, DigestAlg::Sha512] {
            let opts = SignOptions { padding: SignaturePadding::Pss, ..SignOptions::default() };
            let sig = cms::sign_detached(data, akey, acert, digest, &opts).unwrap();
            assert_eq!(supply_params(&sig, |_, _| None).unwrap(), None, "explicit parameters are left alone");
            let raw = strip_params(&sig);
            // OpenSSL alone refuses it...
            let mut certs = openssl::stack::Stack::new().unwrap();
            certs.push(acert.clone()).unwrap();
            let flags = CMSOptions::BINARY | CMSOptions::NOINTERN | CMSOptions::NO_SIGNER_CERT_VERIFY;
            let mut plain = CmsContentInfo::from_der(&raw).unwrap();
            assert!(plain.verify(Some(&certs), None, Some(data), None, flags).is_err(), "{digest:?}");
            // ...we supply the parameters, with the salt the signature shows.
            let v = cms::verify_detached(&raw, data, std::slice::from_ref(acert)).unwrap();
            assert_eq!((v.digest, v.padding), (digest, SignaturePadding::Pss));
            assert!(matches!(cms::verify_detached(&raw, b"altered", std::slice::from_ref(acert)), Err(CmsError::ContentAltered(_))));
            // The salt reads back under the signer's key only.
            let salts = std::cell::RefCell::new(Vec::new());
            let _ = rewrite(&raw, &|field, _| {
                if let Field::Signature { digest, signature } = field {
                    salts.borrow_mut().push((pss_salt_length(signature, acert, digest), pss_salt_length(signature, &bob().1, digest)));
                }
                Ok(None)
            });
            let salts = salts.into_inner();
            assert!(matches!(salts.as_slice(), [(Some(n), None)] if *n <= 512 - 2), "{digest:?}: {salts:?}");
        }
    }

    #[test]
    fn rfc4055_oaep_without_parameters_decrypts() {
        let (bkey, bcert) = bob();
        let data = b"Content-Type: text/plain\r\n\r\nOAEP";
        for cipher in [ContentCipher::Aes128Cbc, ContentCipher::Aes256Gcm] {
            let der = cms::encrypt(data, bcert, cipher, KeyTransport::RsaOaep).unwrap();
            let raw = strip_params(&der);
            assert_ne!(raw, der);
            let keys = [(bkey.clone(), bcert.clone())];
            // OpenSSL alone unwraps a wrong key and fails, or (when the random bytes it decrypts
            // with happen to end in valid CBC padding, about 1 in 256) returns noise.
            let alone = CmsContentInfo::from_der(&raw).unwrap().decrypt(bkey, bcert);
            assert!(alone.map_or(true, |d| d != data), "OpenSSL alone cannot open it");
            assert_eq!(cms::decrypt(&raw, &keys).unwrap(), data, "{cipher:?}");
            assert_eq!(cms::decrypt_owned(raw, &keys).unwrap(), data, "{cipher:?}");
        }
    }

    #[test]
    fn rfc4055_der_helpers() {
        assert_eq!(oid_der(OID_MGF1), [0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x08]);
        assert_eq!(oid_der("2.16.840.1.101.3.4.2.1"), [0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01]);
        assert_eq!(integer_der(20), [0x02, 0x01, 20]);
        assert_eq!(integer_der(222), [0x02, 0x02, 0x00, 222]);
        assert_eq!(integer_der(0), [0x02, 0x01, 0x00]);
        // SHA-1 with a 20-byte salt: every field at its default.
        assert_eq!(pss_params(DigestAlg::Sha1, 20), [0x30, 0x00]);
        assert_eq!(pss_params(DigestAlg::Sha1, 222), [0x30, 0x06, 0xA2, 0x04, 0x02, 0x02, 0x00, 222]);
    }
}
