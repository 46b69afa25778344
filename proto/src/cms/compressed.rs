//! Compressed data (RFC 3274): zlib inside a CompressedData, inflated under a hard limit.

use flate2::write::ZlibEncoder;
use flate2::{Compression, Decompress, FlushDecompress, Status};

use super::{der, ffi, kind, parse, CmsError, CmsKind, DER_OID_COMPRESSED, DER_OID_DATA, DER_OID_ZLIB};

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
    let mut out = compressed_prefix(z.len() as u64);
    out.extend_from_slice(&z);
    Ok(out)
}

/// Everything of a DER CompressedData ContentInfo before its zlib stream of `z_len` bytes (the
/// zlib stream is the end of the structure: a large one is written after this as it is).
pub(crate) fn compressed_prefix(z_len: u64) -> Vec<u8> {
    // Innermost out: the eContent OCTET STRING, [0], the encapsulated content info, the
    // CompressedData, [0], the ContentInfo. Each header counts what follows it.
    let mut prefix = der::header(0x04, z_len);
    let wrap = |tag: u8, before: &[u8], prefix: &mut Vec<u8>| {
        let inner = before.len() as u64 + prefix.len() as u64 + z_len;
        let mut head = der::header(tag, inner);
        head.extend_from_slice(before);
        head.append(prefix);
        *prefix = head;
    };
    wrap(0xA0, &[], &mut prefix);
    wrap(0x30, &der::tlv(0x06, DER_OID_DATA), &mut prefix);
    let alg = der::tlv(0x30, &der::tlv(0x06, DER_OID_ZLIB));
    wrap(0x30, &[der::tlv(0x02, &[0x00]), alg].concat(), &mut prefix);
    wrap(0xA0, &[], &mut prefix);
    wrap(0x30, &der::tlv(0x06, DER_OID_COMPRESSED), &mut prefix);
    prefix
}

/// Opens a ContentInfo(id-ct-compressedData), DER or BER (indefinite lengths, chunked OCTET
/// STRINGs: OpenSSL reads the structure, it only lacks the zlib step), and inflates it. Output
/// over `limit` bytes fails with [`CmsError::TooLarge`] without ever holding more than `limit`
/// bytes.
///
/// The compressionAlgorithm is not read (OpenSSL has no accessor for it): RFC 3274 defines
/// only id-alg-zlibCompress, and anything that is not a zlib stream fails to inflate.
pub fn decompress(ber: &[u8], limit: usize) -> Result<Vec<u8>, CmsError> {
    match kind(ber)? {
        CmsKind::Compressed => {}
        other => {
            return Err(CmsError::Unsupported(format!(
                "expected compressed-data, got {other:?}"
            )));
        }
    }
    let cms = parse(ber)?;
    let z = ffi::embedded_content(&cms)
        .ok_or_else(|| CmsError::Malformed("compressed-data has no eContent".into()))?;
    let mut out = Vec::new();
    inflate_bounded(z, limit, &mut out)?;
    Ok(out)
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
