//! Compressed data (RFC 3274): zlib inside a CompressedData, inflated under a hard limit.

use flate2::write::ZlibEncoder;
use flate2::{Compression, Decompress, FlushDecompress, Status};

use super::{ber, der, CmsError, DER_OID_COMPRESSED, DER_OID_DATA, DER_OID_ZLIB, OID_COMPRESSED, OID_ZLIB};

/// Builds a DER ContentInfo(id-ct-compressedData) / CompressedData v0 with id-alg-zlibCompress
/// around an id-data eContent.
pub fn compress(data: &[u8]) -> Result<Vec<u8>, CmsError> {
    use std::io::Write;
    let mut enc = ZlibEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data)
        .map_err(|e| CmsError::Openssl(format!("zlib: {e}")))?;
    let z = enc
        .finish()
        .map_err(|e| CmsError::Openssl(format!("zlib: {e}")))?;

    let econtent = der::tlv(0xA0, &der::tlv(0x04, &z));
    let encap = der::tlv(0x30, &[der::tlv(0x06, DER_OID_DATA), econtent].concat());
    let alg = der::tlv(0x30, &der::tlv(0x06, DER_OID_ZLIB));
    let version = der::tlv(0x02, &[0x00]);
    let compressed = der::tlv(0x30, &[version, alg, encap].concat());
    let content = der::tlv(0xA0, &compressed);
    Ok(der::tlv(
        0x30,
        &[der::tlv(0x06, DER_OID_COMPRESSED), content].concat(),
    ))
}

/// Opens a ContentInfo(id-ct-compressedData), DER or BER (indefinite lengths, chunked OCTET
/// STRINGs), and inflates it. Output over `limit` bytes fails with [`CmsError::TooLarge`]
/// without ever holding more than `limit` bytes.
pub fn decompress(ber: &[u8], limit: usize) -> Result<Vec<u8>, CmsError> {
    let chunks = compressed_payload(ber)?;
    let input: std::borrow::Cow<'_, [u8]> = match chunks.as_slice() {
        [one] => std::borrow::Cow::Borrowed(one),
        many => std::borrow::Cow::Owned(many.concat()),
    };
    let mut out = Vec::new();
    inflate_bounded(&input, limit, &mut out)?;
    Ok(out)
}

/// Walks ContentInfo / CompressedData / EncapsulatedContentInfo down to the eContent and
/// returns its (possibly chunked) bytes.
fn compressed_payload(input: &[u8]) -> Result<Vec<&[u8]>, CmsError> {
    use ber::{TAG_INTEGER, TAG_OID, TAG_SEQUENCE};
    let m = CmsError::Malformed;

    let (ci, _) = ber::read(input, 0).map_err(m)?;
    if !ci.is_universal(true, TAG_SEQUENCE) {
        return Err(m("ContentInfo is not a SEQUENCE".into()));
    }
    let mut it = ci.children(1);
    let ct = it.require("ContentInfo.contentType")?;
    if !ct.is_universal(false, TAG_OID) {
        return Err(m("ContentInfo.contentType is not an OID".into()));
    }
    let ct = ber::oid_to_string(ct.content).map_err(m)?;
    if ct != OID_COMPRESSED {
        return Err(CmsError::Unsupported(format!(
            "expected compressed-data, got {ct}"
        )));
    }
    let explicit = it.require("ContentInfo.content")?;
    if !explicit.is_context(true, 0) {
        return Err(m("ContentInfo.content is not [0]".into()));
    }

    let mut it = explicit.children(2);
    let cd = it.require("CompressedData")?;
    if !cd.is_universal(true, TAG_SEQUENCE) {
        return Err(m("CompressedData is not a SEQUENCE".into()));
    }
    let mut it = cd.children(3);
    let version = it.require("CompressedData.version")?;
    if !version.is_universal(false, TAG_INTEGER) {
        return Err(m("CompressedData.version is not an INTEGER".into()));
    }
    let alg = it.require("CompressedData.compressionAlgorithm")?;
    if !alg.is_universal(true, TAG_SEQUENCE) {
        return Err(m("compressionAlgorithm is not a SEQUENCE".into()));
    }
    let alg_oid = alg.children(4).require("compressionAlgorithm.algorithm")?;
    if !alg_oid.is_universal(false, TAG_OID) {
        return Err(m("compressionAlgorithm.algorithm is not an OID".into()));
    }
    let alg_oid = ber::oid_to_string(alg_oid.content).map_err(m)?;
    if alg_oid != OID_ZLIB {
        return Err(CmsError::Decompress(format!(
            "unsupported compression algorithm {alg_oid}"
        )));
    }
    let encap = it.require("CompressedData.encapContentInfo")?;
    if !encap.is_universal(true, TAG_SEQUENCE) {
        return Err(m("encapContentInfo is not a SEQUENCE".into()));
    }
    let mut it = encap.children(4);
    let ect = it.require("encapContentInfo.eContentType")?;
    if !ect.is_universal(false, TAG_OID) {
        return Err(m("eContentType is not an OID".into()));
    }
    let econtent = it
        .next()
        .map_err(m)?
        .ok_or_else(|| m("compressed-data has no eContent".into()))?;
    if !econtent.is_context(true, 0) {
        return Err(m("eContent is not [0]".into()));
    }
    let octets = econtent.children(5).require("eContent OCTET STRING")?;
    let mut chunks = Vec::new();
    ber::collect_octets(&octets, 5, &mut chunks).map_err(m)?;
    Ok(chunks)
}

/// Inflates a zlib stream into `out`, which never grows beyond `limit` bytes (its capacity
/// included). The stream must be complete (truncation is an error).
pub(super) fn inflate_bounded(input: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), CmsError> {
    let mut z = Decompress::new(true);
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let start = usize::try_from(z.total_in()).unwrap_or(usize::MAX);
        let rest = input
            .get(start..)
            .ok_or_else(|| CmsError::Decompress("inflater overran its input".into()))?;
        let (in_before, out_before) = (z.total_in(), z.total_out());
        let status = z
            .decompress(rest, &mut buf, FlushDecompress::None)
            .map_err(|e| CmsError::Decompress(format!("bad zlib data: {e}")))?;
        let produced = usize::try_from(z.total_out().saturating_sub(out_before))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let consumed = z.total_in().saturating_sub(in_before);
        if produced > 0 {
            let new_len = out
                .len()
                .checked_add(produced)
                .filter(|n| *n <= limit)
                .ok_or(CmsError::TooLarge { limit })?;
            if out.capacity() < new_len {
                // Grow geometrically, but never past the limit.
                let target = out.capacity().saturating_mul(2).max(new_len).min(limit);
                out.reserve_exact(target - out.len());
            }
            out.extend_from_slice(buf.get(..produced).unwrap_or_default());
        }
        match status {
            Status::StreamEnd => return Ok(()),
            Status::Ok | Status::BufError if produced == 0 && consumed == 0 => {
                return Err(CmsError::Decompress("truncated zlib stream".into()));
            }
            Status::Ok | Status::BufError => {}
        }
    }
}
