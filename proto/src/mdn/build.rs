//! Building MDNs (RFC 3798 / RFC 4130 section 7.4): multipart/report with a human-readable part
//! and a message/disposition-notification part, optionally wrapped in multipart/signed.
//!
//! Inputs that vary (our Message-ID, the boundaries, the date) come in as arguments so builds are
//! reproducible. Header values are never folded.

use super::Mic;
use crate::alg::{DigestAlg, MicSpelling};
use crate::error::Disposition;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

/// What goes into one MDN.
#[derive(Debug, Clone)]
pub struct MdnContent<'a> {
    pub reporting_ua: &'a str,
    /// Our AS2 id (the original message's AS2-To).
    pub station: &'a str,
    /// The partner's AS2 id (the original AS2-From).
    pub partner: &'a str,
    pub original_message_id: &'a str,
    pub mic: Option<&'a Mic>,
    pub disposition: &'a Disposition,
    /// Human-readable explanation (the failure reason, or a confirmation).
    pub text: &'a str,
    pub spelling: MicSpelling,
}

/// Per-build values that would otherwise be random or read from the clock.
#[derive(Debug, Clone)]
pub struct MdnIds<'a> {
    /// Our Message-ID for the MDN, with angle brackets.
    pub message_id: &'a str,
    pub report_boundary: &'a str,
    pub signed_boundary: &'a str,
    /// RFC 2822 date.
    pub date: &'a str,
}

/// How to sign, when a signed receipt is requested.
pub struct MdnSigner<'a> {
    pub key: &'a PKey<Private>,
    pub cert: &'a X509,
    pub digest: DigestAlg,
    pub opts: crate::cms::SignOptions,
}

/// An MDN ready to send: HTTP headers and body.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BuiltMdn {
    pub headers: Vec<(String, String)>,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    pub message_id: String,
}

fn report(content: &MdnContent<'_>, boundary: &str) -> Vec<u8> {
    let mut notif = String::new();
    notif.push_str(&format!("Reporting-UA: {}\r\n", one_line(content.reporting_ua)));
    notif.push_str(&format!("Original-Recipient: rfc822; {}\r\n", one_line(content.station)));
    notif.push_str(&format!("Final-Recipient: rfc822; {}\r\n", one_line(content.station)));
    notif.push_str(&format!("Original-Message-ID: {}\r\n", one_line(content.original_message_id)));
    if let Some(mic) = content.mic {
        notif.push_str(&format!("Received-Content-MIC: {}, {}\r\n", mic.digest, mic.alg.name(content.spelling)));
    }
    notif.push_str(&format!("Disposition: {}\r\n", content.disposition.field_value()));
    let mut out = String::new();
    out.push_str(&format!("--{boundary}\r\n"));
    out.push_str("Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n");
    out.push_str(&one_line(content.text));
    out.push_str("\r\n");
    out.push_str(&format!("--{boundary}\r\n"));
    out.push_str("Content-Type: message/disposition-notification\r\nContent-Transfer-Encoding: 7bit\r\n\r\n");
    out.push_str(&notif);
    out.push_str(&format!("\r\n--{boundary}--\r\n"));
    out.into_bytes()
}

/// Keep a value on one line of printable ASCII (a partner's id may be hostile).
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii() && !c.is_ascii_control() { c } else { ' ' }).collect()
}

fn report_content_type(boundary: &str) -> String {
    format!("multipart/report; report-type=disposition-notification; boundary=\"{boundary}\"")
}

/// Build an MDN; signed when `signer` is given.
pub fn build(content: &MdnContent<'_>, ids: &MdnIds<'_>, signer: Option<&MdnSigner<'_>>) -> Result<BuiltMdn, crate::cms::CmsError> {
    let report_body = report(content, ids.report_boundary);
    let mut headers = vec![
        ("AS2-Version".to_string(), "1.2".to_string()),
        ("AS2-From".to_string(), quote_name(content.station)),
        ("AS2-To".to_string(), quote_name(content.partner)),
        ("Message-ID".to_string(), ids.message_id.to_string()),
        ("Date".to_string(), ids.date.to_string()),
        ("Subject".to_string(), "Message Disposition Notification".to_string()),
        ("MIME-Version".to_string(), "1.0".to_string()),
    ];
    let body = match signer {
        None => {
            headers.push(("Content-Type".into(), report_content_type(ids.report_boundary)));
            report_body
        }
        Some(s) => {
            let mut signed_part = format!("Content-Type: {}\r\n\r\n", report_content_type(ids.report_boundary)).into_bytes();
            signed_part.extend_from_slice(&report_body);
            let sig = crate::cms::sign_detached(&signed_part, s.key, s.cert, s.digest, &s.opts)?;
            let b = ids.signed_boundary;
            let mut body = Vec::with_capacity(signed_part.len() + sig.len() * 2);
            body.extend_from_slice(format!("--{b}\r\n").as_bytes());
            body.extend_from_slice(&signed_part);
            body.extend_from_slice(format!("\r\n--{b}\r\n").as_bytes());
            body.extend_from_slice(
                b"Content-Type: application/pkcs7-signature; name=smime.p7s; smime-type=signed-data\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=smime.p7s\r\n\r\n",
            );
            body.extend_from_slice(&base64_lines(&sig));
            body.extend_from_slice(format!("--{b}--\r\n").as_bytes());
            headers.push((
                "Content-Type".into(),
                format!(
                    "multipart/signed; protocol=\"application/pkcs7-signature\"; micalg={}; boundary=\"{b}\"",
                    s.digest.name(content.spelling)
                ),
            ));
            body
        }
    };
    Ok(BuiltMdn { headers, body, message_id: ids.message_id.to_string() })
}

/// Quote an AS2 name when it contains characters that need it.
pub(crate) fn quote_name(name: &str) -> String {
    if name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@!#$%&'*+/=?^`{|}~".contains(&b)) {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// Base64 with 76-character lines, CRLF-terminated.
pub fn base64_lines(data: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = Vec::with_capacity(b.len() + b.len() / 38 + 2);
    for chunk in b.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_mdn_has_the_fields() {
        let mic = Mic { digest: "abc=".into(), alg: DigestAlg::Sha256 };
        let d = Disposition::Processed;
        let c = MdnContent {
            reporting_ua: "edinode",
            station: "edinode",
            partner: "Acme Corp",
            original_message_id: "<m1@x>",
            mic: Some(&mic),
            disposition: &d,
            text: "ok",
            spelling: MicSpelling::Rfc5751,
        };
        let ids = MdnIds { message_id: "<mdn1@edinode>", report_boundary: "R", signed_boundary: "S", date: "Sat, 21 Nov 2026 00:00:00 +0000" };
        let m = build(&c, &ids, None).unwrap();
        let body = String::from_utf8(m.body).unwrap();
        assert!(body.contains("Original-Message-ID: <m1@x>\r\n"));
        assert!(body.contains("Received-Content-MIC: abc=, sha-256\r\n"));
        assert!(body.contains("Disposition: automatic-action/MDN-sent-automatically; processed\r\n"));
        assert!(body.ends_with("--R--\r\n"));
        assert!(m.headers.iter().any(|(k, v)| k == "AS2-To" && v == "\"Acme Corp\""));
        assert!(m.headers.iter().all(|(_, v)| !v.contains('\n')));
    }

    #[test]
    fn hostile_values_stay_on_one_line() {
        assert_eq!(one_line("a\r\nDisposition: x"), "a  Disposition: x");
    }
}
