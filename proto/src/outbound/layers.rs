//! The security layers around an entity: compressed-data, multipart/signed and
//! (auth)enveloped-data, and the boundaries that never occur in what they delimit.

use openssl::x509::X509;

use super::entity::Entity;
use super::validate::invalid;
use super::{OutboundError, SPELLING};
use crate::alg::{ContentCipher, DigestAlg, KeyTransport};
use crate::cms;
use crate::mdn::base64_lines;
use crate::mime;

pub(super) fn compressed(entity: &[u8]) -> Result<Entity, OutboundError> {
    Ok(Entity {
        headers: compressed_headers(),
        body: cms::compress(entity)?,
    })
}

pub(super) fn compressed_headers() -> Vec<(&'static str, String)> {
    vec![
        (
            "Content-Type",
            "application/pkcs7-mime; smime-type=compressed-data; name=smime.p7z".into(),
        ),
        ("Content-Transfer-Encoding", "binary".into()),
        (
            "Content-Disposition",
            "attachment; filename=\"smime.p7z\"".into(),
        ),
    ]
}

pub(super) fn multipart_signed(
    content: &[u8],
    sig: &[u8],
    digest: DigestAlg,
    seed: &str,
) -> Result<Entity, OutboundError> {
    let b = boundary("Sig", seed, &[content])?;
    let (open, close) = signed_delimiters(&b, sig);
    let mut body = Vec::with_capacity(open.len() + content.len() + close.len());
    body.extend_from_slice(&open);
    body.extend_from_slice(content);
    body.extend_from_slice(&close);
    Ok(Entity {
        headers: signed_headers(&b, digest),
        body,
    })
}

/// What comes before the signed content in a multipart/signed body, and what comes after it
/// (the signature part and the closing delimiter).
pub(super) fn signed_delimiters(b: &str, sig: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let open = format!("--{b}\r\n").into_bytes();
    let sig_b64 = base64_lines(sig);
    let mut close = Vec::with_capacity(sig_b64.len() + 2 * b.len() + 256);
    close.extend_from_slice(format!("\r\n--{b}\r\n").as_bytes());
    close.extend_from_slice(
        b"Content-Type: application/pkcs7-signature; name=smime.p7s; smime-type=signed-data\r\n\
          Content-Transfer-Encoding: base64\r\n\
          Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n",
    );
    // base64_lines ends with CRLF: that line break belongs to the closing delimiter.
    close.extend_from_slice(&sig_b64);
    close.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    (open, close)
}

pub(super) fn signed_headers(b: &str, digest: DigestAlg) -> Vec<(&'static str, String)> {
    vec![(
        "Content-Type",
        format!(
            "multipart/signed; protocol=\"application/pkcs7-signature\"; micalg={}; boundary=\"{b}\"",
            digest.name(SPELLING)
        ),
    )]
}

pub(super) fn enveloped(
    entity: &[u8],
    recipient: &X509,
    cipher: ContentCipher,
    kt: KeyTransport,
) -> Result<Entity, OutboundError> {
    Ok(Entity {
        headers: enveloped_headers(cipher),
        body: cms::encrypt(entity, recipient, cipher, kt)?,
    })
}

pub(super) fn enveloped_headers(cipher: ContentCipher) -> Vec<(&'static str, String)> {
    // AES-GCM makes an AuthEnvelopedData, named as RFC 8551 names it.
    let smime_type = match cipher {
        ContentCipher::Aes128Gcm | ContentCipher::Aes256Gcm => "authEnveloped-data",
        _ => "enveloped-data",
    };
    vec![
        (
            "Content-Type",
            format!("application/pkcs7-mime; smime-type={smime_type}; name=smime.p7m"),
        ),
        ("Content-Transfer-Encoding", "binary".into()),
        (
            "Content-Disposition",
            "attachment; filename=\"smime.p7m\"".into(),
        ),
    ]
}

/// A boundary derived from the seed that occurs nowhere in `contents` (so it cannot be
/// mistaken for a delimiter line); `.1`, `.2`, ... are appended until that holds.
pub(crate) fn boundary(
    kind: &str,
    seed: &str,
    contents: &[&[u8]],
) -> Result<String, OutboundError> {
    let base = format!("----=_{kind}_{seed}");
    for n in 0..1000u32 {
        let b = if n == 0 {
            base.clone()
        } else {
            format!("{base}.{n}")
        };
        let delim = format!("--{b}");
        if contents
            .iter()
            .all(|c| mime::find(c, delim.as_bytes()).is_none())
        {
            return Ok(b);
        }
    }
    Err(invalid(
        "boundary_seed",
        "every boundary derived from it occurs in the content",
    ))
}

#[cfg(test)]
mod tests {
    use super::boundary;

    #[test]
    fn outbound_boundary_avoids_the_content() {
        assert_eq!(boundary("Rel", "s", &[b"--x"]).unwrap(), "----=_Rel_s");
        assert_eq!(
            boundary("Rel", "s", &[b"a\r\n------=_Rel_s\r\n------=_Rel_s.1"]).unwrap(),
            "----=_Rel_s.2"
        );
    }
}
