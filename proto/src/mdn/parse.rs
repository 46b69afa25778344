//! Reading a partner's MDN (RFC 3798 / RFC 4130 section 7.4), synchronous (the HTTP response) or
//! asynchronous (an HTTP POST to us), and judging it against the message we sent.
//!
//! A signed MDN (multipart/signed) is verified over its first part as received against any of
//! the partner's certificates (several during a rollover); the multipart/report inside is then
//! read leniently, because every product writes it a little differently: field names in any
//! case, folded lines, blank lines between field groups, `Final-Recipient` without
//! `Original-Recipient`, `Received-Content-MIC: <base64>,<alg>` with any algorithm spelling and
//! with or without the space.

use crate::alg::DigestAlg;
use crate::cms::{self, CmsError};
use crate::error::Disposition;
use super::Mic;
use crate::mime::{self, Entity, MimeLimits};
use crate::unwrap;
use openssl::x509::X509;

/// How much of the human-readable part we keep.
const MAX_TEXT: usize = 4096;

/// What an MDN says.
#[derive(Debug, Clone)]
pub struct ParsedMdn {
    /// Original-Message-ID as sent (angle brackets kept).
    pub original_message_id: Option<String>,
    pub disposition: Disposition,
    /// The Disposition field as sent.
    pub disposition_raw: String,
    /// Received-Content-MIC, when its algorithm is one we know (any spelling).
    pub received_mic: Option<Mic>,
    /// Received-Content-MIC as sent.
    pub mic_raw: Option<String>,
    /// The MDN was signed and the signature verified.
    pub signed: bool,
    /// The trusted certificate that verified the signature.
    pub signer: Option<X509>,
    pub reporting_ua: Option<String>,
    /// The address of Original-Recipient, or of Final-Recipient when Original-Recipient is
    /// missing (it is optional in RFC 3798); without the `rfc822;` address type.
    pub original_recipient: Option<String>,
    /// The address of Final-Recipient, without the address type.
    pub final_recipient: Option<String>,
    /// The human-readable part, truncated to a few KiB.
    pub text: String,
}

impl ParsedMdn {
    /// Whether this MDN answers `message_id` (angle brackets and surrounding space ignored).
    pub fn answers(&self, message_id: &str) -> bool {
        let bare = |s: &str| {
            s.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .trim()
                .to_string()
        };
        self.original_message_id
            .as_deref()
            .is_some_and(|m| bare(m) == bare(message_id))
    }
}

/// Why an MDN could not be read or trusted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MdnError {
    /// Neither a multipart/report nor a signed one.
    #[error("not an MDN: {0}")]
    NotAnMdn(String),
    #[error("malformed MDN: {0}")]
    Malformed(String),
    /// The signature did not verify against any trusted certificate. `unverified` is what the
    /// MDN claims (when readable), for correlating and logging only: never act on it.
    #[error("MDN signature invalid: {reason}")]
    SignatureInvalid {
        reason: String,
        unverified: Option<Box<ParsedMdn>>,
    },
}

/// Parse an MDN from its HTTP headers (at least Content-Type) and body. When the headers carry
/// no Content-Type, the body is taken as a whole MIME entity (headers included).
pub fn parse(
    headers: &[(String, String)],
    body: &[u8],
    trusted: &[X509],
    limits: &MimeLimits,
) -> Result<ParsedMdn, MdnError> {
    let hdrs: Vec<mime::Header> = headers
        .iter()
        .map(|(n, v)| mime::Header {
            name: n.trim().to_string(),
            value: v.trim().to_string(),
        })
        .collect();
    let top = if mime::get(&hdrs, "content-type").is_some() {
        Entity::with_headers(hdrs, body)
    } else {
        Entity::parse(body, limits).map_err(|e| MdnError::Malformed(e.to_string()))?
    };
    let ct = top.content_type();
    if ct.is("multipart/report") {
        return read_report(&top, limits);
    }
    if ct.is("multipart/signed") {
        let boundary = ct
            .param("boundary")
            .ok_or_else(|| MdnError::Malformed("multipart/signed without a boundary".into()))?;
        let parts = mime::split_multipart(top.body, boundary, limits)
            .map_err(|e| MdnError::Malformed(e.to_string()))?;
        let [signed_part, sig_part, ..] = parts.as_slice() else {
            return Err(MdnError::Malformed(format!(
                "multipart/signed with {} part(s)",
                parts.len()
            )));
        };
        let sig_entity =
            Entity::parse(sig_part, limits).map_err(|e| MdnError::Malformed(e.to_string()))?;
        let sig_ct = sig_entity.content_type();
        if !(sig_ct.is("application/pkcs7-signature") || sig_ct.is("application/x-pkcs7-signature"))
        {
            return Err(MdnError::Malformed(format!(
                "unsupported signature type {}",
                sig_ct.mime
            )));
        }
        let sig = sig_entity
            .decoded_body()
            .map_err(|e| MdnError::Malformed(format!("signature part: {e}")))?;
        return match verify(&sig, signed_part, trusted, limits) {
            Ok((content, verified)) => {
                let mut mdn = read_report_entity(&content, limits)?;
                mdn.signed = true;
                mdn.signer = Some(verified.signer);
                Ok(mdn)
            }
            Err(reason) => Err(MdnError::SignatureInvalid {
                reason,
                unverified: read_report_entity(signed_part, limits).ok().map(Box::new),
            }),
        };
    }
    if ct.is("application/pkcs7-mime") || ct.is("application/x-pkcs7-mime") {
        // Opaque signed MDN (rare): the report is inside the SignedData.
        let der = top
            .decoded_body()
            .map_err(|e| MdnError::Malformed(e.to_string()))?;
        if trusted.is_empty() {
            return Err(MdnError::SignatureInvalid {
                reason: "no certificate configured to verify the partner's MDNs".into(),
                unverified: None,
            });
        }
        return match cms::verify_embedded(&der, trusted) {
            Ok((content, verified)) => {
                let mut mdn = read_report_entity(&content, limits)?;
                mdn.signed = true;
                mdn.signer = Some(verified.signer);
                Ok(mdn)
            }
            Err(CmsError::Malformed(m)) | Err(CmsError::Unsupported(m)) => Err(MdnError::NotAnMdn(
                format!("pkcs7-mime that is not signed data: {m}"),
            )),
            Err(e) => Err(MdnError::SignatureInvalid {
                reason: e.to_string(),
                unverified: None,
            }),
        };
    }
    Err(MdnError::NotAnMdn(format!(
        "content type {}",
        if ct.mime.is_empty() {
            "missing"
        } else {
            &ct.mime
        }
    )))
}

/// Verify over the first part as received (with the line-end tolerance of
/// [`unwrap::verify_detached_entity`]). Returns the bytes that verified.
fn verify(
    sig: &[u8],
    signed: &[u8],
    trusted: &[X509],
    limits: &MimeLimits,
) -> Result<(Vec<u8>, cms::Verified), String> {
    if trusted.is_empty() {
        return Err("no certificate configured to verify the partner's MDNs".into());
    }
    unwrap::verify_detached_entity(sig, signed, trusted, limits).map_err(|e| e.to_string())
}

fn read_report_entity(raw: &[u8], limits: &MimeLimits) -> Result<ParsedMdn, MdnError> {
    let e = Entity::parse(raw, limits).map_err(|e| MdnError::Malformed(e.to_string()))?;
    if !e.content_type().is("multipart/report") {
        return Err(MdnError::NotAnMdn(format!(
            "signed content is {}, not multipart/report",
            e.content_type().mime
        )));
    }
    read_report(&e, limits)
}

/// Read a multipart/report: the human-readable part and the disposition notification.
fn read_report(report: &Entity<'_>, limits: &MimeLimits) -> Result<ParsedMdn, MdnError> {
    let ct = report.content_type();
    let boundary = ct
        .param("boundary")
        .ok_or_else(|| MdnError::Malformed("multipart/report without a boundary".into()))?;
    let parts = mime::split_multipart(report.body, boundary, limits)
        .map_err(|e| MdnError::Malformed(e.to_string()))?;
    let mut text: Option<String> = None;
    let mut notification: Option<Vec<u8>> = None;
    let mut untyped: Vec<Vec<u8>> = Vec::new();
    for p in parts {
        let Ok(pe) = Entity::parse(p, limits) else {
            continue;
        };
        let pct = pe.content_type();
        let Ok(body) = pe.decoded_body() else {
            continue;
        };
        if pct.is("message/disposition-notification") {
            if notification.is_none() {
                notification = Some(body);
            }
        } else if pct.mime.starts_with("text/") {
            if text.is_none() {
                text = Some(truncate(String::from_utf8_lossy(&body).trim()));
            }
            untyped.push(body);
        }
    }
    // Some products leave out the part's Content-Type: take the first part that has a
    // Disposition field.
    let notification = notification
        .or_else(|| {
            untyped.into_iter().find(|b| {
                fields(&String::from_utf8_lossy(b))
                    .iter()
                    .any(|(n, _)| n == "disposition")
            })
        })
        .ok_or_else(|| MdnError::Malformed("no message/disposition-notification part".into()))?;
    if notification.len() > limits.max_header_bytes {
        return Err(MdnError::Malformed(format!(
            "disposition notification larger than {} bytes",
            limits.max_header_bytes
        )));
    }
    let fields = fields(&String::from_utf8_lossy(&notification));
    if fields.len() > limits.max_headers {
        return Err(MdnError::Malformed(format!(
            "more than {} disposition notification fields",
            limits.max_headers
        )));
    }
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };

    let disposition_raw =
        field("disposition").ok_or_else(|| MdnError::Malformed("no Disposition field".into()))?;
    // An unknown disposition type (denied, deleted, ...) is a failure all the same.
    let disposition = Disposition::parse(&disposition_raw).unwrap_or_else(|| {
        Disposition::Failed(format!("unrecognized disposition: {disposition_raw}"))
    });
    let mic_raw = field("received-content-mic");
    let received_mic = mic_raw.as_deref().and_then(parse_mic);
    let final_recipient = field("final-recipient").map(|v| address(&v));
    let original_recipient = field("original-recipient")
        .map(|v| address(&v))
        .or_else(|| final_recipient.clone());
    Ok(ParsedMdn {
        original_message_id: field("original-message-id"),
        disposition,
        disposition_raw,
        received_mic,
        mic_raw,
        signed: false,
        signer: None,
        reporting_ua: field("reporting-ua"),
        original_recipient,
        final_recipient,
        text: text.unwrap_or_default(),
    })
}

/// The fields of a message/disposition-notification body: names lower-cased, folded lines
/// joined, blank lines (between the per-message and per-recipient groups) and lines without a
/// colon skipped.
fn fields(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut folding = false;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            folding = false;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if folding && let Some((_, v)) = out.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
                *v = v.trim().to_string();
            }
            continue;
        }
        match line.split_once(':') {
            Some((name, value)) => {
                out.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
                folding = true;
            }
            None => folding = false,
        }
    }
    out
}

/// `rfc822; name` -> `name` (unquoted when quoted); a value without an address type as is.
fn address(v: &str) -> String {
    let a = v.split_once(';').map(|(_, a)| a).unwrap_or(v).trim();
    crate::headers::parse_as2_name(a).unwrap_or_else(|| a.to_string())
}

/// `base64, alg`, `base64,alg`, `base64 , "SHA-256"`.
fn parse_mic(raw: &str) -> Option<Mic> {
    let (digest, alg) = raw.split_once(',')?;
    // A folded value may have split the base64.
    let digest: String = digest.chars().filter(|c| !c.is_whitespace()).collect();
    if digest.is_empty() {
        return None;
    }
    Some(Mic {
        digest,
        alg: DigestAlg::parse(alg)?,
    })
}

fn truncate(s: &str) -> String {
    if s.len() <= MAX_TEXT {
        return s.to_string();
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
