//! Signed data: detached and embedded signatures, made with an explicit digest and padding,
//! verified against a list of trusted certificates.

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::pkey::{PKey, Private};
use openssl::error::ErrorStack;
use openssl::stack::Stack;
use openssl::x509::X509;

use super::{ber, ffi, kind, openssl_err, parse, rfc4055, CmsError, CmsKind, OID_PKCS1_PREFIX, OID_RSASSA_PSS};
use crate::alg::{DigestAlg, SignaturePadding};

/// How [`sign_detached`] builds the SignerInfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignOptions {
    pub padding: SignaturePadding,
    /// Signed attributes (contentType, signingTime, messageDigest, SMIMECapabilities).
    pub signed_attributes: bool,
    /// The RFC 6211 CMSAlgorithmProtection signed attribute (only with signed attributes).
    /// Off by default: IBM Sterling B2Bi rejects signatures carrying it.
    pub algorithm_protection: bool,
    /// Put the signer's certificate into the SignedData.
    pub include_cert: bool,
}

impl Default for SignOptions {
    fn default() -> Self {
        SignOptions {
            padding: SignaturePadding::Pkcs1v15,
            signed_attributes: true,
            algorithm_protection: false,
            include_cert: true,
        }
    }
}

/// What a verified signature was made with, and by whom (one of the trusted certificates).
#[derive(Debug, Clone)]
pub struct Verified {
    pub digest: DigestAlg,
    pub signer: X509,
    pub padding: SignaturePadding,
}

/// Signs `data` (binary, as given) into a detached DER SignedData with exactly `digest`.
pub fn sign_detached(
    data: &[u8],
    key: &PKey<Private>,
    cert: &X509,
    digest: DigestAlg,
    opts: &SignOptions,
) -> Result<Vec<u8>, CmsError> {
    let mut signer = DetachedSigner::new(key, cert, digest, opts)?;
    signer.update(data)?;
    signer.finish()
}

/// A detached signature over content that arrives in pieces ([`sign_detached`] for content
/// too large to hold): the same SignedData, the content hashed as it passes.
pub(crate) struct DetachedSigner(super::stream::ContentStream);

impl DetachedSigner {
    pub fn new(key: &PKey<Private>, cert: &X509, digest: DigestAlg, opts: &SignOptions) -> Result<DetachedSigner, CmsError> {
        if opts.padding == SignaturePadding::Pss && digest == DigestAlg::Md5 {
            // RFC 4055 defines RSASSA-PSS parameters for SHA-1 and SHA-2 only; OpenSSL cannot
            // encode an MD5 PSS AlgorithmIdentifier.
            return Err(CmsError::Unsupported("RSASSA-PSS with MD5".into()));
        }
        let protection = if opts.algorithm_protection && opts.signed_attributes {
            // The attribute has to repeat the SignerInfo's digestAlgorithm and
            // signatureAlgorithm byte for byte, and OpenSSL only fills in the latter (for PSS:
            // with its parameters) while finishing. So sign once to learn both (they do not
            // depend on the content: a signature over nothing), then sign for real with it.
            let probe = prepare(key, cert, digest, opts, None)?;
            ffi::finalize(&probe, &[], ffi::CMS_BINARY)?;
            Some(ffi::algorithm_protection_value(&probe)?)
        } else {
            None
        };
        let cms = prepare(key, cert, digest, opts, protection.as_deref())?;
        Ok(DetachedSigner(super::stream::ContentStream::digest(cms)?))
    }

    pub fn update(&mut self, data: &[u8]) -> Result<(), CmsError> {
        self.0.write(data, &mut Vec::new())
    }

    /// The DER SignedData.
    pub fn finish(mut self) -> Result<Vec<u8>, CmsError> {
        self.0.finish(&mut Vec::new())?;
        self.0.cms().to_der().map_err(openssl_err)
    }
}

/// A SignedData with its SignerInfo set up, waiting for its content (CMS_PARTIAL).
fn prepare(
    key: &PKey<Private>,
    cert: &X509,
    digest: DigestAlg,
    opts: &SignOptions,
    protection: Option<&[u8]>,
) -> Result<CmsContentInfo, CmsError> {
    let mut flags = CMSOptions::PARTIAL | CMSOptions::DETACHED | CMSOptions::BINARY;
    if !opts.signed_attributes {
        flags |= CMSOptions::NOATTR;
    }
    let cms =
        CmsContentInfo::sign::<Private>(None, None, None, None, flags).map_err(openssl_err)?;

    let mut signer_flags = ffi::CMS_BINARY;
    if !opts.signed_attributes {
        signer_flags |= ffi::CMS_NOATTR;
    }
    if !opts.include_cert {
        signer_flags |= ffi::CMS_NOCERTS;
    }
    if opts.padding == SignaturePadding::Pss {
        signer_flags |= ffi::CMS_KEY_PARAM;
    }
    let si = ffi::add_signer(&cms, cert, key, digest, signer_flags)?;
    if opts.padding == SignaturePadding::Pss {
        si.set_pss()?;
    }
    if opts.signed_attributes {
        si.remove_algorithm_protection()?;
        if let Some(value) = protection {
            si.add_algorithm_protection(value)?;
        }
    }
    Ok(cms)
}

/// Verifies a detached signature over `data` (hashed exactly as given). The signer must be one
/// of `trusted` (matched by the SignerInfo's issuer+serial or subject key identifier; a
/// certificate carried only inside the CMS is never used). No chain or validity-period checks.
pub(crate) fn verify_detached(sig: &[u8], data: &[u8], trusted: &[X509]) -> Result<Verified, CmsError> {
    verify_inner(sig, Some(data), trusted).map(|(_, v)| v)
}

/// Verifies an opaque (embedded-content) SignedData and returns its content.
pub(crate) fn verify_embedded(der: &[u8], trusted: &[X509]) -> Result<(Vec<u8>, Verified), CmsError> {
    verify_inner(der, None, trusted)
}

/// A parsed signature, its signers checked against `trusted`.
struct Checked {
    cms: CmsContentInfo,
    verified: Verified,
    all_attributed: bool,
    certs: Stack<X509>,
}

fn check_signers(sig: &[u8], trusted: &[X509]) -> Result<Checked, CmsError> {
    match kind(sig)? {
        CmsKind::Signed => {}
        other => {
            return Err(CmsError::Unsupported(format!(
                "expected signed-data, got {other:?}"
            )));
        }
    }
    // RSASSA-PSS without parameters (pyas2lib): the digestAlgorithm's, with the salt the
    // signature shows under a trusted key.
    let fixed = rfc4055::supply_params(sig, |s, d| trusted.iter().find_map(|c| rfc4055::pss_salt_length(s, c, d)))?;
    let sig = fixed.as_deref().unwrap_or(sig);
    check_digest_algorithms(sig)?;
    let cms = parse(sig)?;
    let infos = ffi::signer_infos(&cms)?;
    let mut first: Option<Verified> = None;
    let all_attributed = !infos.is_empty() && infos.iter().all(|si| si.has_signed_attributes());
    for si in &infos {
        let (digest_oid, sig_oid) = si.algorithms()?;
        let digest = DigestAlg::from_oid(&digest_oid).ok_or_else(|| {
            CmsError::Unsupported(format!("signature digest algorithm {digest_oid}"))
        })?;
        let padding = if sig_oid == OID_RSASSA_PSS {
            SignaturePadding::Pss
        } else if sig_oid.starts_with(OID_PKCS1_PREFIX) {
            SignaturePadding::Pkcs1v15
        } else {
            return Err(CmsError::Unsupported(format!(
                "signature algorithm {sig_oid}"
            )));
        };
        let signer = trusted
            .iter()
            .find(|t| si.matches(t))
            .ok_or_else(|| CmsError::UnknownSigner(si.describe_id()))?;
        if first.is_none() {
            first = Some(Verified {
                digest,
                signer: signer.clone(),
                padding,
            });
        }
    }
    drop(infos);
    let verified =
        first.ok_or_else(|| CmsError::Malformed("signed-data has no SignerInfo".into()))?;
    let mut certs = Stack::new().map_err(openssl_err)?;
    for t in trusted {
        certs.push(t.clone()).map_err(openssl_err)?;
    }
    Ok(Checked { cms, verified, all_attributed, certs })
}

// NOINTERN: look the signer up only in `trusted`; NO_SIGNER_CERT_VERIFY: partner certificates
// are pinned, no chain building and no expiry check.
const VERIFY_FLAGS: CMSOptions = CMSOptions::BINARY.union(CMSOptions::NOINTERN).union(CMSOptions::NO_SIGNER_CERT_VERIFY);

fn verify_inner(
    sig: &[u8],
    detached: Option<&[u8]>,
    trusted: &[X509],
) -> Result<(Vec<u8>, Verified), CmsError> {
    let Checked { mut cms, verified, all_attributed, certs } = check_signers(sig, trusted)?;
    if detached.is_none() && !ffi::has_embedded_content(&cms) {
        return Err(CmsError::Malformed(
            "signed-data has no embedded content (detached signature)".into(),
        ));
    }
    let flags = VERIFY_FLAGS;
    let mut content = Vec::new();
    let out = if detached.is_none() {
        Some(&mut content)
    } else {
        None
    };
    if let Err(e) = cms.verify(Some(&certs), None, detached, out, flags) {
        // With signed attributes, tell an altered content (the signature over the attributes
        // still holds, the messageDigest does not) from a bad signature.
        if all_attributed && detached.is_some() {
            let _ = ErrorStack::get();
            let attrs_only = flags | CMSOptions::NO_CONTENT_VERIFY;
            if cms.verify(Some(&certs), None, detached, None, attrs_only).is_ok() {
                return Err(CmsError::ContentAltered(format!(
                    "content digest mismatch: the signed content was altered ({e})"
                )));
            }
        }
        return Err(CmsError::SignatureInvalid(e.to_string()));
    }
    Ok((content, verified))
}

/// The digest algorithms of a signature's SignerInfos (what a streamed content must be hashed
/// with for [`verify_detached_digests`]).
pub(crate) fn signer_digests(sig: &[u8]) -> Result<Vec<DigestAlg>, CmsError> {
    let fixed = rfc4055::supply_params(sig, |_, _| None)?;
    let cms = parse(fixed.as_deref().unwrap_or(sig))?;
    let mut out = Vec::new();
    for si in ffi::signer_infos(&cms)? {
        let (d, _) = si.algorithms()?;
        let d = DigestAlg::from_oid(&d).ok_or_else(|| CmsError::Unsupported(format!("signature digest algorithm {d}")))?;
        if !out.contains(&d) {
            out.push(d);
        }
    }
    Ok(out)
}

/// Verifies a detached signature over a content that was hashed as it streamed past:
/// `digests` holds the content's digest in each of [`signer_digests`]. The signature over the
/// signed attributes is checked by OpenSSL; each SignerInfo's messageDigest must equal the
/// content's digest. A signature without signed attributes is over the content's digest
/// itself: checked against `digests` with the signer's key (RSA PKCS#1 v1.5; RSASSA-PSS
/// without signed attributes is Unsupported here).
pub(crate) fn verify_detached_digests(sig: &[u8], digests: &[(DigestAlg, Vec<u8>)], trusted: &[X509]) -> Result<Verified, CmsError> {
    let Checked { mut cms, verified, all_attributed, certs } = check_signers(sig, trusted)?;
    let ours = |alg: DigestAlg| digests.iter().find(|(a, _)| *a == alg).map(|(_, v)| v).ok_or_else(|| CmsError::Unsupported(format!("the content was not hashed with {alg:?}")));
    if !all_attributed {
        for si in ffi::signer_infos(&cms)? {
            let (d, s) = si.algorithms()?;
            if si.has_signed_attributes() || s == OID_RSASSA_PSS {
                return Err(CmsError::Unsupported("over a large (streamed) message: RSASSA-PSS without signed attributes, or signers with and without them".into()));
            }
            let alg = DigestAlg::from_oid(&d).ok_or_else(|| CmsError::Unsupported(format!("signature digest algorithm {d}")))?;
            let cert = trusted.iter().find(|t| si.matches(t)).ok_or_else(|| CmsError::UnknownSigner(si.describe_id()))?;
            let key = cert.public_key().map_err(openssl_err)?;
            let md = openssl::md::Md::from_nid(alg.message_digest().type_()).ok_or_else(|| CmsError::Unsupported(format!("digest {alg:?}")))?;
            let mut ctx = openssl::pkey_ctx::PkeyCtx::new(&key).map_err(openssl_err)?;
            ctx.verify_init().map_err(openssl_err)?;
            ctx.set_rsa_padding(openssl::rsa::Padding::PKCS1).map_err(openssl_err)?;
            ctx.set_signature_md(md).map_err(openssl_err)?;
            if !ctx.verify(ours(alg)?, &si.signature()).unwrap_or(false) {
                let _ = ErrorStack::get();
                return Err(CmsError::SignatureInvalid("the signature does not match the content".into()));
            }
        }
        return Ok(verified);
    }
    cms.verify(Some(&certs), None, Some(&[]), None, VERIFY_FLAGS | CMSOptions::NO_CONTENT_VERIFY)
        .map_err(|e| CmsError::SignatureInvalid(e.to_string()))?;
    for si in ffi::signer_infos(&cms)? {
        let (d, _) = si.algorithms()?;
        let alg = DigestAlg::from_oid(&d).ok_or_else(|| CmsError::Unsupported(format!("signature digest algorithm {d}")))?;
        let ours = ours(alg)?;
        let theirs = si.message_digest().ok_or_else(|| CmsError::Malformed("a SignerInfo without a messageDigest attribute".into()))?;
        if ours.len() != theirs.len() || !openssl::memcmp::eq(ours, &theirs) {
            return Err(CmsError::ContentAltered("content digest mismatch: the signed content was altered".into()));
        }
    }
    Ok(verified)
}

/// SignedData.digestAlgorithms must be non-empty and hold only digests we know: OpenSSL 3.0's
/// CMS_verify leaks the BIO it wraps detached content in when it cannot set up a digest for
/// every entry (CMS_dataInit fails), so such a signature is refused before it gets there.
fn check_digest_algorithms(der: &[u8]) -> Result<(), CmsError> {
    use ber::{TAG_INTEGER, TAG_OID, TAG_SEQUENCE, TAG_SET};
    let m = CmsError::Malformed;
    let (ci, _) = ber::read(der, 0).map_err(m)?;
    let mut it = ci.children(1);
    it.require("ContentInfo.contentType")?;
    let explicit = it.require("ContentInfo.content")?;
    let sd = explicit.children(2).require("SignedData")?;
    if !sd.is_universal(true, TAG_SEQUENCE) {
        return Err(m("SignedData is not a SEQUENCE".into()));
    }
    let mut it = sd.children(3);
    if !it.require("SignedData.version")?.is_universal(false, TAG_INTEGER) {
        return Err(m("SignedData.version is not an INTEGER".into()));
    }
    let set = it.require("SignedData.digestAlgorithms")?;
    if !set.is_universal(true, TAG_SET) {
        return Err(m("SignedData.digestAlgorithms is not a SET".into()));
    }
    let mut algs = set.children(4);
    let mut n = 0;
    while let Some(alg) = algs.next().map_err(m)? {
        let oid = alg.children(5).require("digestAlgorithm.algorithm")?;
        if !alg.is_universal(true, TAG_SEQUENCE) || !oid.is_universal(false, TAG_OID) {
            return Err(m("malformed digestAlgorithm".into()));
        }
        let oid = ber::oid_to_string(oid.content).map_err(m)?;
        if DigestAlg::from_oid(&oid).is_none() {
            return Err(CmsError::Unsupported(format!("signature digest algorithm {oid}")));
        }
        n += 1;
    }
    if n == 0 {
        return Err(m("SignedData.digestAlgorithms is empty".into()));
    }
    Ok(())
}
