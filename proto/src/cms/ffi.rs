//! OpenSSL FFI: what the `openssl` crate does not wrap (RSA-OAEP key transport, an explicit
//! signing digest, RSASSA-PSS, attribute editing). Every raw pointer handed out by OpenSSL here
//! is either owned by a guard that frees it, or borrowed from a CmsContentInfo that outlives its
//! use (the wrappers carry that lifetime).
#![allow(non_camel_case_types)]
use std::ffi::{c_char, c_int, c_uint, c_void};
use std::marker::PhantomData;
use std::ptr;

use foreign_types_shared::{ForeignType, ForeignTypeRef};
use openssl::cms::CmsContentInfo;
use openssl::pkey::{PKey, Private};
use openssl::error::ErrorStack;
use openssl::x509::{X509, X509NameRef};

use super::{der, last_openssl_error, name_to_string, CmsError, OID_ALG_PROTECTION};
use crate::alg::DigestAlg;
use openssl_sys::{
    ASN1_OBJECT, ASN1_OCTET_STRING, BIO, CMS_ContentInfo, EVP_MD, EVP_PKEY, EVP_PKEY_CTX,
    OPENSSL_STACK, X509 as RawX509, X509_ALGOR, X509_ATTRIBUTE, X509_NAME,
};

pub const CMS_NOCERTS: c_uint = openssl_sys::CMS_NOCERTS;
pub const CMS_BINARY: c_uint = openssl_sys::CMS_BINARY;
pub const CMS_NOATTR: c_uint = openssl_sys::CMS_NOATTR;
pub const CMS_KEY_PARAM: c_uint = openssl_sys::CMS_KEY_PARAM;
/// pkcs9 messageDigest.
const OID_MESSAGE_DIGEST: &str = "1.2.840.113549.1.9.4";
/// RSA_PSS_SALTLEN_DIGEST: salt as long as the digest (RFC 4055's recommendation).
const RSA_PSS_SALTLEN_DIGEST: c_int = -1;

pub enum CMS_SignerInfo {}
pub enum CMS_RecipientInfo {}

// SAFETY (declarations): signatures as in OpenSSL 3.0's <openssl/cms.h> / <openssl/x509.h>.
unsafe extern "C" {
    fn CMS_final(
        cms: *mut CMS_ContentInfo,
        data: *mut BIO,
        dcont: *mut BIO,
        flags: c_uint,
    ) -> c_int;
    fn CMS_add1_recipient_cert(
        cms: *mut CMS_ContentInfo,
        recip: *mut RawX509,
        flags: c_uint,
    ) -> *mut CMS_RecipientInfo;
    fn CMS_RecipientInfo_get0_pkey_ctx(ri: *mut CMS_RecipientInfo) -> *mut EVP_PKEY_CTX;
    fn CMS_add1_signer(
        cms: *mut CMS_ContentInfo,
        signer: *mut RawX509,
        pk: *mut EVP_PKEY,
        md: *const EVP_MD,
        flags: c_uint,
    ) -> *mut CMS_SignerInfo;
    fn CMS_SignerInfo_get0_pkey_ctx(si: *mut CMS_SignerInfo) -> *mut EVP_PKEY_CTX;
    fn CMS_get0_SignerInfos(cms: *mut CMS_ContentInfo) -> *mut OPENSSL_STACK;
    fn CMS_SignerInfo_cert_cmp(si: *mut CMS_SignerInfo, cert: *mut RawX509) -> c_int;
    fn CMS_SignerInfo_get0_algs(
        si: *mut CMS_SignerInfo,
        pk: *mut *mut EVP_PKEY,
        signer: *mut *mut RawX509,
        pdig: *mut *mut X509_ALGOR,
        psig: *mut *mut X509_ALGOR,
    );
    fn CMS_SignerInfo_get0_signer_id(
        si: *mut CMS_SignerInfo,
        keyid: *mut *mut ASN1_OCTET_STRING,
        issuer: *mut *mut X509_NAME,
        sno: *mut *mut openssl_sys::ASN1_INTEGER,
    ) -> c_int;
    fn CMS_signed_get_attr_by_OBJ(
        si: *const CMS_SignerInfo,
        obj: *const ASN1_OBJECT,
        lastpos: c_int,
    ) -> c_int;
    fn CMS_signed_delete_attr(si: *mut CMS_SignerInfo, loc: c_int) -> *mut X509_ATTRIBUTE;
    fn CMS_signed_get_attr_count(si: *const CMS_SignerInfo) -> c_int;
    fn CMS_SignerInfo_get0_signature(si: *mut CMS_SignerInfo) -> *mut ASN1_OCTET_STRING;
    fn CMS_signed_get0_data_by_OBJ(si: *mut CMS_SignerInfo, oid: *const ASN1_OBJECT, lastpos: c_int, type_: c_int) -> *mut c_void;
    fn CMS_signed_add1_attr_by_OBJ(
        si: *mut CMS_SignerInfo,
        obj: *const ASN1_OBJECT,
        type_: c_int,
        bytes: *const c_void,
        len: c_int,
    ) -> c_int;
    fn CMS_get0_content(cms: *mut CMS_ContentInfo) -> *mut *mut ASN1_OCTET_STRING;
    fn i2d_X509_ALGOR(a: *const X509_ALGOR, out: *mut *mut u8) -> c_int;
}

/// A read-only memory BIO over borrowed bytes, freed on drop.
struct MemBioIn<'a> {
    ptr: *mut BIO,
    _data: PhantomData<&'a [u8]>,
}

impl<'a> MemBioIn<'a> {
    fn new(data: &'a [u8]) -> Result<Self, CmsError> {
        let len = c_int::try_from(data.len())
            .map_err(|_| CmsError::Unsupported("content over 2 GiB".into()))?;
        // SAFETY: the BIO reads `len` bytes at `data`, which outlive it ('a).
        let ptr = unsafe { openssl_sys::BIO_new_mem_buf(data.as_ptr().cast(), len) };
        if ptr.is_null() {
            return Err(last_openssl_error("BIO_new_mem_buf"));
        }
        Ok(MemBioIn {
            ptr,
            _data: PhantomData,
        })
    }
}

impl Drop for MemBioIn<'_> {
    fn drop(&mut self) {
        // SAFETY: we own the BIO.
        unsafe { openssl_sys::BIO_free_all(self.ptr) }
    }
}

/// A copy of an ASN1_STRING's bytes.
///
/// # Safety
/// `s` must point to a live ASN1_STRING.
unsafe fn string_bytes(s: *const openssl_sys::ASN1_STRING) -> Vec<u8> {
    // SAFETY: the caller guarantees `s`; length and data are read together and copied.
    unsafe {
        let len = usize::try_from(openssl_sys::ASN1_STRING_length(s)).unwrap_or(0);
        let data = openssl_sys::ASN1_STRING_get0_data(s);
        if data.is_null() { Vec::new() } else { std::slice::from_raw_parts(data, len).to_vec() }
    }
}

/// An owned ASN1_OBJECT.
struct Obj(*mut ASN1_OBJECT);

impl Obj {
    fn from_dotted(oid: &str) -> Result<Obj, CmsError> {
        let c = std::ffi::CString::new(oid)
            .map_err(|_| CmsError::Openssl("OID with NUL".into()))?;
        // SAFETY: NUL-terminated string; no_name=1 parses numeric form only.
        let p = unsafe { openssl_sys::OBJ_txt2obj(c.as_ptr(), 1) };
        if p.is_null() {
            return Err(last_openssl_error("OBJ_txt2obj"));
        }
        Ok(Obj(p))
    }
}

impl Drop for Obj {
    fn drop(&mut self) {
        // SAFETY: we own the object (OBJ_txt2obj returns a new one).
        unsafe { openssl_sys::ASN1_OBJECT_free(self.0) }
    }
}

fn obj_to_string(obj: *const ASN1_OBJECT) -> Option<String> {
    if obj.is_null() {
        return None;
    }
    let mut buf = [0 as c_char; 128];
    // SAFETY: buf is writable for its length; OpenSSL NUL-terminates within it.
    let n = unsafe { openssl_sys::OBJ_obj2txt(buf.as_mut_ptr(), buf.len() as c_int, obj, 1) };
    if n <= 0 || n as usize >= buf.len() {
        return None;
    }
    // SAFETY: NUL-terminated by OBJ_obj2txt.
    let s = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(s.to_string_lossy().into_owned())
}

fn algor_oid(alg: *mut X509_ALGOR) -> Option<String> {
    if alg.is_null() {
        return None;
    }
    let mut obj: *const ASN1_OBJECT = ptr::null();
    // SAFETY: alg is a live X509_ALGOR; we only ask for the object pointer.
    unsafe { openssl_sys::X509_ALGOR_get0(&mut obj, ptr::null_mut(), ptr::null_mut(), alg) };
    obj_to_string(obj)
}

fn algor_der(alg: *mut X509_ALGOR) -> Result<Vec<u8>, CmsError> {
    if alg.is_null() {
        return Err(CmsError::Openssl("missing AlgorithmIdentifier".into()));
    }
    // SAFETY: two-pass i2d into a buffer of the reported size.
    unsafe {
        let len = i2d_X509_ALGOR(alg, ptr::null_mut());
        let n = usize::try_from(len).map_err(|_| last_openssl_error("i2d_X509_ALGOR"))?;
        let mut buf = vec![0u8; n];
        let mut p = buf.as_mut_ptr();
        if i2d_X509_ALGOR(alg, &mut p) != len {
            return Err(last_openssl_error("i2d_X509_ALGOR"));
        }
        Ok(buf)
    }
}

/// Runs CMS_final over `data` (a CMS built with CMS_PARTIAL).
pub fn finalize(cms: &CmsContentInfo, data: &[u8], flags: c_uint) -> Result<(), CmsError> {
    let bio = MemBioIn::new(data)?;
    // SAFETY: cms and bio are live; CMS_final does not take ownership of either.
    let ok = unsafe { CMS_final(cms.as_ptr(), bio.ptr, ptr::null_mut(), flags) };
    if ok <= 0 {
        return Err(last_openssl_error("CMS_final"));
    }
    Ok(())
}

/// Adds `recipient` as a KeyTransRecipientInfo with the key's default padding (PKCS#1 v1.5).
pub fn add_recipient(cms: &CmsContentInfo, recipient: &X509) -> Result<(), CmsError> {
    // SAFETY: cms is live; the cert is up-referenced by OpenSSL, not consumed.
    let ri = unsafe { CMS_add1_recipient_cert(cms.as_ptr(), recipient.as_ptr(), 0) };
    if ri.is_null() {
        return Err(last_openssl_error("CMS_add1_recipient_cert"));
    }
    Ok(())
}

/// Adds `recipient` as an RSA-OAEP KeyTransRecipientInfo (SHA-1 / MGF1-SHA-1, the OAEP
/// defaults every AS2 product reads).
pub fn add_oaep_recipient(cms: &CmsContentInfo, recipient: &X509) -> Result<(), CmsError> {
    // SAFETY: the RecipientInfo and its pkey ctx belong to cms, which is live; the cert is
    // up-referenced by OpenSSL, not consumed.
    unsafe {
        let ri = CMS_add1_recipient_cert(cms.as_ptr(), recipient.as_ptr(), CMS_KEY_PARAM);
        if ri.is_null() {
            return Err(last_openssl_error("CMS_add1_recipient_cert"));
        }
        let pctx = CMS_RecipientInfo_get0_pkey_ctx(ri);
        if pctx.is_null() {
            return Err(last_openssl_error("CMS_RecipientInfo_get0_pkey_ctx"));
        }
        if openssl_sys::EVP_PKEY_CTX_set_rsa_padding(pctx, openssl_sys::RSA_PKCS1_OAEP_PADDING)
            <= 0
        {
            return Err(last_openssl_error("EVP_PKEY_CTX_set_rsa_padding(OAEP)"));
        }
    }
    Ok(())
}

/// A SignerInfo borrowed from a CmsContentInfo.
pub struct SignerInfo<'a> {
    ptr: *mut CMS_SignerInfo,
    _cms: PhantomData<&'a CmsContentInfo>,
}

pub fn add_signer<'a>(
    cms: &'a CmsContentInfo,
    cert: &X509,
    key: &PKey<Private>,
    digest: DigestAlg,
    flags: c_uint,
) -> Result<SignerInfo<'a>, CmsError> {
    let md = digest.message_digest();
    // SAFETY: all pointers live; OpenSSL up-references cert and key.
    let si = unsafe {
        CMS_add1_signer(
            cms.as_ptr(),
            cert.as_ptr(),
            key.as_ptr(),
            md.as_ptr(),
            flags,
        )
    };
    if si.is_null() {
        return Err(last_openssl_error("CMS_add1_signer"));
    }
    Ok(SignerInfo {
        ptr: si,
        _cms: PhantomData,
    })
}

pub fn signer_infos(cms: &CmsContentInfo) -> Result<Vec<SignerInfo<'_>>, CmsError> {
    // SAFETY: the stack and its elements belong to cms; indices are bounded by sk_num.
    unsafe {
        let sk = CMS_get0_SignerInfos(cms.as_ptr());
        if sk.is_null() {
            return Err(CmsError::Malformed(format!(
                "no SignerInfos: {}",
                ErrorStack::get()
            )));
        }
        let n = openssl_sys::OPENSSL_sk_num(sk);
        let mut out = Vec::new();
        for i in 0..n.max(0) {
            let p = openssl_sys::OPENSSL_sk_value(sk, i) as *mut CMS_SignerInfo;
            if !p.is_null() {
                out.push(SignerInfo {
                    ptr: p,
                    _cms: PhantomData,
                });
            }
        }
        Ok(out)
    }
}

pub fn has_embedded_content(cms: &CmsContentInfo) -> bool {
    embedded_content(cms).is_some()
}

/// The eContent OCTET STRING of a parsed SignedData or CompressedData (OpenSSL joins a chunked
/// BER one), borrowed from `cms`; None when it is absent (a detached signature).
pub fn embedded_content(cms: &CmsContentInfo) -> Option<&[u8]> {
    // SAFETY: CMS_get0_content returns a pointer into cms (or NULL); the OCTET STRING it points
    // to lives as long as cms, which the returned slice borrows. Its data pointer and length
    // come from OpenSSL's ASN1_STRING accessors.
    unsafe {
        let pos = CMS_get0_content(cms.as_ptr());
        if pos.is_null() || (*pos).is_null() {
            let _ = ErrorStack::get();
            return None;
        }
        let octets = (*pos).cast::<openssl_sys::ASN1_STRING>();
        let len = usize::try_from(openssl_sys::ASN1_STRING_length(octets)).unwrap_or(0);
        let data = openssl_sys::ASN1_STRING_get0_data(octets);
        if data.is_null() || len == 0 {
            return Some(&[]);
        }
        Some(std::slice::from_raw_parts(data, len))
    }
}

impl SignerInfo<'_> {
    /// RSASSA-PSS with a digest-length salt and MGF1 over the signing digest.
    pub fn set_pss(&self) -> Result<(), CmsError> {
        // SAFETY: the pkey ctx belongs to the SignerInfo (present with CMS_KEY_PARAM).
        unsafe {
            let pctx = CMS_SignerInfo_get0_pkey_ctx(self.ptr);
            if pctx.is_null() {
                return Err(last_openssl_error("CMS_SignerInfo_get0_pkey_ctx"));
            }
            if openssl_sys::EVP_PKEY_CTX_set_rsa_padding(
                pctx,
                openssl_sys::RSA_PKCS1_PSS_PADDING,
            ) <= 0
            {
                return Err(last_openssl_error("EVP_PKEY_CTX_set_rsa_padding(PSS)"));
            }
            if openssl_sys::EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) <= 0
            {
                return Err(last_openssl_error("EVP_PKEY_CTX_set_rsa_pss_saltlen"));
            }
        }
        Ok(())
    }

    /// Whether the SignerInfo carries signed attributes (then the signature covers them and
    /// the content is bound through the messageDigest attribute).
    pub fn has_signed_attributes(&self) -> bool {
        // SAFETY: read-only query on a live SignerInfo.
        unsafe { CMS_signed_get_attr_count(self.ptr) > 0 }
    }

    /// The messageDigest signed attribute's value (None without one).
    pub fn message_digest(&self) -> Option<Vec<u8>> {
        let oid = Obj::from_dotted(OID_MESSAGE_DIGEST).ok()?;
        // SAFETY: a read of a signed attribute of a live SignerInfo; lastpos -3 asks for exactly
        // one such attribute with one value, of type OCTET STRING (4). The string belongs to the
        // SignerInfo and is copied before it could go away.
        unsafe {
            let v = CMS_signed_get0_data_by_OBJ(self.ptr, oid.0, -3, 4);
            if v.is_null() {
                let _ = ErrorStack::get();
                return None;
            }
            Some(string_bytes(v.cast()))
        }
    }

    /// The signature value.
    pub fn signature(&self) -> Vec<u8> {
        // SAFETY: the OCTET STRING belongs to the live SignerInfo and is copied at once.
        unsafe {
            let v = CMS_SignerInfo_get0_signature(self.ptr);
            if v.is_null() { Vec::new() } else { string_bytes(v.cast()) }
        }
    }

    /// Deletes every CMSAlgorithmProtection signed attribute.
    pub fn remove_algorithm_protection(&self) -> Result<(), CmsError> {
        let obj = Obj::from_dotted(OID_ALG_PROTECTION)?;
        // SAFETY: attributes belong to the SignerInfo; a deleted one is handed to us and
        // freed here.
        unsafe {
            loop {
                let loc = CMS_signed_get_attr_by_OBJ(self.ptr, obj.0, -1);
                if loc < 0 {
                    break;
                }
                let attr = CMS_signed_delete_attr(self.ptr, loc);
                if attr.is_null() {
                    return Err(last_openssl_error("CMS_signed_delete_attr"));
                }
                openssl_sys::X509_ATTRIBUTE_free(attr);
            }
        }
        // A failed lookup may queue an error; don't leave it for the next caller.
        let _ = ErrorStack::get();
        Ok(())
    }

    /// Adds a CMSAlgorithmProtection attribute whose value is the DER `value`.
    pub fn add_algorithm_protection(&self, value: &[u8]) -> Result<(), CmsError> {
        let obj = Obj::from_dotted(OID_ALG_PROTECTION)?;
        let len = c_int::try_from(value.len())
            .map_err(|_| CmsError::Openssl("attribute too long".into()))?;
        // SAFETY: OpenSSL copies `len` bytes of the SEQUENCE encoding.
        let ok = unsafe {
            CMS_signed_add1_attr_by_OBJ(
                self.ptr,
                obj.0,
                openssl_sys::V_ASN1_SEQUENCE,
                value.as_ptr().cast(),
                len,
            )
        };
        if ok <= 0 {
            return Err(last_openssl_error("CMS_signed_add1_attr_by_OBJ"));
        }
        Ok(())
    }

    fn algs(&self) -> (*mut X509_ALGOR, *mut X509_ALGOR) {
        let mut dig: *mut X509_ALGOR = ptr::null_mut();
        let mut sig: *mut X509_ALGOR = ptr::null_mut();
        // SAFETY: out-pointers into the SignerInfo, which is live.
        unsafe {
            CMS_SignerInfo_get0_algs(
                self.ptr,
                ptr::null_mut(),
                ptr::null_mut(),
                &mut dig,
                &mut sig,
            )
        };
        (dig, sig)
    }

    /// (digestAlgorithm, signatureAlgorithm) as dotted OIDs.
    pub fn algorithms(&self) -> Result<(String, String), CmsError> {
        let (dig, sig) = self.algs();
        let d = algor_oid(dig)
            .ok_or_else(|| CmsError::Malformed("SignerInfo.digestAlgorithm".into()))?;
        let s = algor_oid(sig)
            .ok_or_else(|| CmsError::Malformed("SignerInfo.signatureAlgorithm".into()))?;
        Ok((d, s))
    }

    /// Whether the SignerInfo's sid (issuer+serial or subject key id) names `cert`.
    pub fn matches(&self, cert: &X509) -> bool {
        // SAFETY: both live; the comparison does not retain either.
        let r = unsafe { CMS_SignerInfo_cert_cmp(self.ptr, cert.as_ptr()) };
        if r != 0 {
            // SKID comparison against a cert without SKID may queue an error.
            let _ = ErrorStack::get();
        }
        r == 0
    }

    /// The sid, for error messages.
    pub fn describe_id(&self) -> String {
        let mut keyid: *mut ASN1_OCTET_STRING = ptr::null_mut();
        let mut issuer: *mut X509_NAME = ptr::null_mut();
        let mut serial: *mut openssl_sys::ASN1_INTEGER = ptr::null_mut();
        // SAFETY: out-pointers into the SignerInfo; the borrowed refs do not outlive it.
        unsafe {
            if CMS_SignerInfo_get0_signer_id(self.ptr, &mut keyid, &mut issuer, &mut serial)
                <= 0
            {
                let _ = ErrorStack::get();
                return "unidentified signer".into();
            }
            if !issuer.is_null() && !serial.is_null() {
                let name = X509NameRef::from_ptr(issuer);
                let serial = openssl::asn1::Asn1IntegerRef::from_ptr(serial)
                    .to_bn()
                    .ok()
                    .and_then(|b| b.to_hex_str().ok().map(|s| s.to_string()))
                    .unwrap_or_else(|| "?".into());
                return format!("issuer [{}] serial {serial}", name_to_string(name));
            }
            if !keyid.is_null() {
                let data = openssl::asn1::Asn1StringRef::from_ptr(keyid.cast()).as_slice();
                let hex: String = data.iter().map(|b| format!("{b:02X}")).collect();
                return format!("subject key id {hex}");
            }
        }
        "unidentified signer".into()
    }
}

/// The RFC 6211 CMSAlgorithmProtection value for the (single) signer of `cms`:
/// SEQUENCE { digestAlgorithm, signatureAlgorithm [1] IMPLICIT AlgorithmIdentifier }.
pub fn algorithm_protection_value(cms: &CmsContentInfo) -> Result<Vec<u8>, CmsError> {
    let infos = signer_infos(cms)?;
    let si = infos
        .first()
        .ok_or_else(|| CmsError::Openssl("no SignerInfo after signing".into()))?;
    let (dig, sig) = si.algs();
    let dig = algor_der(dig)?;
    let mut sig = algor_der(sig)?;
    match sig.first_mut() {
        Some(t) if *t == 0x30 => *t = 0xA1,
        _ => {
            return Err(CmsError::Openssl(
                "unexpected signatureAlgorithm encoding".into(),
            ));
        }
    }
    Ok(der::tlv(0x30, &[dig, sig].concat()))
}
