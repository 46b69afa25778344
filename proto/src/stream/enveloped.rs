//! EnvelopedData (RFC 5652 section 6) and AuthEnvelopedData (RFC 5083) decrypted as they
//! stream. The leading part (RecipientInfos, the content-encryption algorithm) is small and read
//! whole; the content-encryption key is unwrapped with the station's RSA key (PKCS#1 v1.5 or
//! OAEP, by OpenSSL); the encrypted content then runs through an OpenSSL Crypter chunk by chunk.
//! A CBC padding and a GCM tag are checked in `finish`.

use super::octets::{OctetStream, Outer};
use super::{Codec, MAX_CMS_HEAD};
use crate::alg::DigestAlg;
use crate::cms::ber::{self, Header, Tlv, TAG_INTEGER, TAG_OCTET_STRING, TAG_OID, TAG_SEQUENCE, TAG_SET};
use crate::error::ProcessingError;
use openssl::pkey::{PKey, Private};
use openssl::symm::{Cipher, Crypter, Mode};
use openssl::x509::X509;

const OID_ENVELOPED: &str = "1.2.840.113549.1.7.3";
const OID_AUTH_ENVELOPED: &str = "1.2.840.113549.1.9.16.1.23";
const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_RSAES_OAEP: &str = "1.2.840.113549.1.1.7";
const OID_MGF1: &str = "1.2.840.113549.1.1.8";

fn err(m: impl std::fmt::Display) -> ProcessingError {
    ProcessingError::Decryption(m.to_string())
}

/// The element header at `pos`, or None when it has not fully arrived.
pub(super) fn header_at(buf: &[u8], pos: usize) -> Result<Option<Header>, ProcessingError> {
    ber::read_header_prefix(buf.get(pos..).unwrap_or(&[])).map_err(err)
}

/// The whole element at `pos` and the position after it, or None when it has not arrived yet.
pub(super) fn element_at(buf: &[u8], pos: usize, depth: usize) -> Result<Option<(Tlv<'_>, usize)>, ProcessingError> {
    let Some(h) = header_at(buf, pos)? else { return Ok(None) };
    if let Some(n) = h.len
        && pos + h.header_len + n > buf.len()
    {
        return Ok(None);
    }
    match ber::read(&buf[pos..], depth) {
        Ok((tlv, rest)) => Ok(Some((tlv, buf.len() - rest.len()))),
        // An indefinite-length element may just not have ended yet.
        Err(_) if h.len.is_none() => Ok(None),
        Err(e) => Err(err(e)),
    }
}

/// Waits for more input (None) unless the leading part is already over its limit.
pub(super) fn more(buf: &[u8]) -> Result<Option<std::convert::Infallible>, ProcessingError> {
    if buf.len() > MAX_CMS_HEAD {
        return Err(err(format!("the CMS structure's leading part is over {MAX_CMS_HEAD} bytes or malformed")));
    }
    Ok(None)
}

macro_rules! need {
    ($e:expr, $buf:expr) => {
        match $e? {
            Some(v) => v,
            None => return super::enveloped::more($buf).map(|_| None),
        }
    };
}
pub(super) use need;

fn expect(h: &Header, class: u8, constructed: bool, tag: u32, what: &str) -> Result<(), ProcessingError> {
    if h.class == class && h.constructed == constructed && h.tag == tag {
        Ok(())
    } else {
        Err(err(format!("{what}: unexpected element (class {} tag {})", h.class, h.tag)))
    }
}

/// The leading part of an EnvelopedData.
struct Head {
    auth: bool,
    recipient_infos: Vec<u8>,
    cipher_oid: String,
    cipher_params: Vec<u8>,
    /// Where the encrypted content's element starts.
    content_at: usize,
}

fn parse_head(buf: &[u8]) -> Result<Option<Head>, ProcessingError> {
    let ci = need!(header_at(buf, 0), buf);
    expect(&ci, 0, true, TAG_SEQUENCE, "ContentInfo")?;
    let (oid, mut pos) = need!(element_at(buf, ci.header_len, 1), buf);
    if !oid.is_universal(false, TAG_OID) {
        return Err(err("ContentInfo.contentType is not an OID"));
    }
    let auth = match ber::oid_to_string(oid.content).map_err(err)?.as_str() {
        OID_ENVELOPED => false,
        OID_AUTH_ENVELOPED => true,
        other => return Err(err(format!("expected enveloped-data, got {other}"))),
    };
    let explicit = need!(header_at(buf, pos), buf);
    expect(&explicit, 2, true, 0, "ContentInfo.content")?;
    pos += explicit.header_len;
    let ed = need!(header_at(buf, pos), buf);
    expect(&ed, 0, true, TAG_SEQUENCE, "EnvelopedData")?;
    pos += ed.header_len;
    let (version, next) = need!(element_at(buf, pos, 3), buf);
    if !version.is_universal(false, TAG_INTEGER) {
        return Err(err("EnvelopedData.version is not an INTEGER"));
    }
    pos = next;
    let h = need!(header_at(buf, pos), buf);
    if h.class == 2 && h.tag == 0 {
        // originatorInfo: certificates and CRLs we do not need.
        pos = need!(element_at(buf, pos, 3), buf).1;
    }
    let (ris, next) = need!(element_at(buf, pos, 3), buf);
    if !ris.is_universal(true, TAG_SET) {
        return Err(err("recipientInfos is not a SET"));
    }
    let recipient_infos = ris.content.to_vec();
    pos = next;
    let eci = need!(header_at(buf, pos), buf);
    expect(&eci, 0, true, TAG_SEQUENCE, "EncryptedContentInfo")?;
    pos += eci.header_len;
    pos = need!(element_at(buf, pos, 4), buf).1; // contentType
    let (alg, next) = need!(element_at(buf, pos, 4), buf);
    let mut it = alg.children(5);
    let alg_oid = it.require("contentEncryptionAlgorithm").map_err(|e| err(e.to_string()))?;
    if !alg_oid.is_universal(false, TAG_OID) {
        return Err(err("contentEncryptionAlgorithm is not an OID"));
    }
    let cipher_oid = ber::oid_to_string(alg_oid.content).map_err(err)?;
    let cipher_params = it.next().map_err(err)?.map(|p| raw_tlv(&p)).unwrap_or_default();
    let content = need!(header_at(buf, next), buf);
    if !(content.class == 2 && content.tag == 0) {
        return Err(err("the encrypted content is missing (detached encrypted content is not supported)"));
    }
    Ok(Some(Head { auth, recipient_infos, cipher_oid, cipher_params, content_at: next }))
}

/// An element written back with a definite length (for parameters read by children()).
fn raw_tlv(t: &Tlv<'_>) -> Vec<u8> {
    let mut out = vec![(t.class << 6) | if t.constructed { 0x20 } else { 0 } | (t.tag.min(30) as u8)];
    let n = t.content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(t.content);
    out
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|&&x| x == 0).count();
    &b[n..]
}

/// Whether a RecipientIdentifier names `cert`.
fn names(rid: &Tlv<'_>, cert: &X509) -> bool {
    if rid.is_context(false, 0) {
        return cert.subject_key_id().is_some_and(|ski| ski.as_slice() == rid.content);
    }
    if !rid.is_universal(true, TAG_SEQUENCE) {
        return false;
    }
    let mut it = rid.children(6);
    let (Ok(Some(issuer)), Ok(Some(serial))) = (it.next(), it.next()) else { return false };
    let Ok(der) = cert.issuer_name().to_der() else { return false };
    let Ok((ours, _)) = ber::read(&der, 0) else { return false };
    let Ok(our_serial) = cert.serial_number().to_bn().map(|b| b.to_vec()) else { return false };
    ours.content == issuer.content && strip_zeros(&our_serial) == strip_zeros(serial.content)
}

fn md_of(alg: &Tlv<'_>) -> Result<DigestAlg, ProcessingError> {
    let oid = alg.children(9).require("hash algorithm").map_err(|e| err(e.to_string()))?;
    let oid = ber::oid_to_string(oid.content).map_err(err)?;
    DigestAlg::from_oid(&oid).ok_or_else(|| err(format!("OAEP hash {oid} is not supported")))
}

fn openssl_md(d: DigestAlg) -> Result<&'static openssl::md::MdRef, ProcessingError> {
    openssl::md::Md::from_nid(d.message_digest().type_()).ok_or_else(|| err(format!("digest {d:?} unavailable")))
}

/// The content-encryption key from a KeyTransRecipientInfo's encryptedKey.
fn unwrap_key(key: &PKey<Private>, alg: &Tlv<'_>, encrypted: &[u8]) -> Result<Vec<u8>, ProcessingError> {
    use openssl::rsa::Padding;
    let mut it = alg.children(7);
    let oid = it.require("keyEncryptionAlgorithm").map_err(|e| err(e.to_string()))?;
    let oid = ber::oid_to_string(oid.content).map_err(err)?;
    let mut ctx = openssl::pkey_ctx::PkeyCtx::new(key).map_err(err)?;
    ctx.decrypt_init().map_err(err)?;
    match oid.as_str() {
        OID_RSA => ctx.set_rsa_padding(Padding::PKCS1).map_err(err)?,
        OID_RSAES_OAEP => {
            // RSAES-OAEP-params (RFC 4055): [0] hash, [1] mask generation, both sha1 by default.
            let (mut hash, mut mgf) = (DigestAlg::Sha1, DigestAlg::Sha1);
            if let Some(params) = it.next().map_err(err)?
                && params.is_universal(true, TAG_SEQUENCE)
            {
                let mut fields = params.children(8);
                while let Some(f) = fields.next().map_err(err)? {
                    let inner = f.children(8).next().map_err(err)?;
                    match (f.tag, inner) {
                        (0, Some(a)) => hash = md_of(&a)?,
                        (1, Some(a)) => {
                            let mut m = a.children(9);
                            let mgf_oid = m.require("mask generation").map_err(|e| err(e.to_string()))?;
                            if ber::oid_to_string(mgf_oid.content).map_err(err)? != OID_MGF1 {
                                return Err(err("OAEP mask generation other than MGF1"));
                            }
                            if let Some(h) = m.next().map_err(err)? {
                                mgf = md_of(&h)?;
                            }
                        }
                        _ => {}
                    }
                }
            }
            ctx.set_rsa_padding(Padding::PKCS1_OAEP).map_err(err)?;
            ctx.set_rsa_oaep_md(openssl_md(hash)?).map_err(err)?;
            ctx.set_rsa_mgf1_md(openssl_md(mgf)?).map_err(err)?;
        }
        other => return Err(err(format!("key transport {other} is not supported"))),
    }
    let mut cek = Vec::new();
    ctx.decrypt_to_vec(encrypted, &mut cek).map_err(|e| err(format!("the content-encryption key does not open: {e}")))?;
    Ok(cek)
}

/// The content-encryption key: from the RecipientInfo that names one of our certificates.
fn content_key(recipient_infos: &[u8], keys: &[(PKey<Private>, X509)]) -> Result<Vec<u8>, ProcessingError> {
    let set = Tlv { class: 0, constructed: true, tag: TAG_SET, content: recipient_infos };
    let mut ris = set.children(4);
    let mut failures = Vec::new();
    while let Some(ri) = ris.next().map_err(err)? {
        if !ri.is_universal(true, TAG_SEQUENCE) {
            continue; // not a KeyTransRecipientInfo (key agreement, KEK, password)
        }
        let mut f = ri.children(5);
        let (Some(_version), Some(rid), Some(alg), Some(ek)) = (f.next().map_err(err)?, f.next().map_err(err)?, f.next().map_err(err)?, f.next().map_err(err)?) else {
            return Err(err("truncated KeyTransRecipientInfo"));
        };
        if !ek.is_universal(false, TAG_OCTET_STRING) {
            return Err(err("encryptedKey is not an OCTET STRING"));
        }
        for (key, cert) in keys.iter().filter(|(_, c)| names(&rid, c)) {
            match unwrap_key(key, &alg, ek.content) {
                Ok(cek) => return Ok(cek),
                Err(e) => failures.push(format!("[{}] {e}", crate::cms::subject_string(cert))),
            }
        }
    }
    if failures.is_empty() {
        return Err(err("no RecipientInfo names one of this station's certificates"));
    }
    Err(err(failures.join("; ")))
}

/// The cipher and IV (or nonce and tag length) of a contentEncryptionAlgorithm.
fn content_cipher(oid: &str, params: &[u8]) -> Result<(Cipher, Vec<u8>, usize), ProcessingError> {
    let cipher = match oid {
        "1.2.840.113549.3.7" => Cipher::des_ede3_cbc(),
        "2.16.840.1.101.3.4.1.2" => Cipher::aes_128_cbc(),
        "2.16.840.1.101.3.4.1.22" => Cipher::aes_192_cbc(),
        "2.16.840.1.101.3.4.1.42" => Cipher::aes_256_cbc(),
        "2.16.840.1.101.3.4.1.6" => Cipher::aes_128_gcm(),
        "2.16.840.1.101.3.4.1.26" => Cipher::aes_192_gcm(),
        "2.16.840.1.101.3.4.1.46" => Cipher::aes_256_gcm(),
        other => return Err(err(format!("content encryption {other} is not supported"))),
    };
    let (p, _) = ber::read(params, 6).map_err(|e| err(format!("content encryption parameters: {e}")))?;
    if p.is_universal(false, TAG_OCTET_STRING) {
        return Ok((cipher, p.content.to_vec(), 0));
    }
    // GCMParameters: nonce, ICV length (12 by default).
    if p.is_universal(true, TAG_SEQUENCE) {
        let mut it = p.children(7);
        let nonce = it.require("GCM nonce").map_err(|e| err(e.to_string()))?;
        let icv = match it.next().map_err(err)? {
            Some(n) if n.is_universal(false, TAG_INTEGER) && n.content.len() == 1 => usize::from(n.content[0]),
            Some(_) => return Err(err("bad GCM ICV length")),
            None => 12,
        };
        return Ok((cipher, nonce.content.to_vec(), icv));
    }
    Err(err("content encryption parameters are neither an IV nor GCM parameters"))
}

enum State {
    Head(Vec<u8>),
    Body { octets: OctetStream, crypter: Box<Crypter>, block: usize, auth: Option<usize> },
    Done,
}

/// The streaming decryptor.
pub struct Decrypt {
    keys: Vec<(PKey<Private>, X509)>,
    state: State,
    scratch: Vec<u8>,
}

impl Decrypt {
    pub fn new(keys: Vec<(PKey<Private>, X509)>) -> Decrypt {
        Decrypt { keys, state: State::Head(Vec::new()), scratch: Vec::new() }
    }

    fn body(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), ProcessingError> {
        let State::Body { octets, crypter, block, .. } = &mut self.state else { return Ok(()) };
        self.scratch.clear();
        octets.push(input, &mut self.scratch).map_err(err)?;
        if self.scratch.is_empty() {
            return Ok(());
        }
        let at = out.len();
        out.resize(at + self.scratch.len() + *block, 0);
        let n = crypter.update(&self.scratch, &mut out[at..]).map_err(err)?;
        out.truncate(at + n);
        Ok(())
    }
}

impl Codec for Decrypt {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), ProcessingError> {
        let State::Head(buf) = &mut self.state else {
            return self.body(input, out);
        };
        buf.extend_from_slice(input);
        let Some(head) = parse_head(buf)? else { return Ok(()) };
        if self.keys.is_empty() {
            return Err(err("no decryption key configured for this station"));
        }
        let cek = content_key(&head.recipient_infos, &self.keys)?;
        let (cipher, iv, icv) = content_cipher(&head.cipher_oid, &head.cipher_params)?;
        if cek.len() != cipher.key_len() {
            return Err(err(format!("the content-encryption key has {} bytes, the cipher takes {}", cek.len(), cipher.key_len())));
        }
        let mut crypter = Crypter::new(cipher, Mode::Decrypt, &cek, Some(&iv)).map_err(err)?;
        crypter.pad(!head.auth);
        let rest = buf.split_off(head.content_at);
        self.state = State::Body { octets: OctetStream::new(Outer::ContextZero), crypter: Box::new(crypter), block: cipher.block_size(), auth: head.auth.then_some(icv) };
        self.body(&rest, out)
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), ProcessingError> {
        let state = std::mem::replace(&mut self.state, State::Done);
        let State::Body { octets, mut crypter, block, auth } = state else {
            return Err(err("the message ended before its encrypted content"));
        };
        octets.finish().map_err(err)?;
        if let Some(icv) = auth {
            crypter.set_tag(&gcm_tag(octets.trailer(), icv)?).map_err(err)?;
        }
        let at = out.len();
        out.resize(at + 2 * block, 0);
        let n = crypter.finalize(&mut out[at..]).map_err(|e| {
            if auth.is_some() { err(format!("the authentication tag does not match: the content was altered ({e})")) } else { err(format!("bad padding: wrong key or altered content ({e})")) }
        })?;
        out.truncate(at + n);
        Ok(())
    }
}

/// AuthEnvelopedData after the content: [end-of-contents], authAttrs [1] (not supported), mac.
fn gcm_tag(trailer: &[u8], icv: usize) -> Result<Vec<u8>, ProcessingError> {
    let mut rest = trailer;
    loop {
        if let [0, 0, after @ ..] = rest {
            rest = after;
            continue;
        }
        let (t, after) = ber::read(rest, 1).map_err(|e| err(format!("AuthEnvelopedData after the content: {e}")))?;
        if t.class == 2 && t.tag == 1 {
            return Err(err("authenticated attributes are not supported"));
        }
        if t.is_universal(false, TAG_OCTET_STRING) {
            if t.content.len() != icv {
                return Err(err(format!("the mac has {} bytes, {icv} expected", t.content.len())));
            }
            return Ok(t.content.to_vec());
        }
        rest = after;
    }
}
