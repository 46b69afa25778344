//! The AS2 request: HTTP headers read once into typed values (RFC 4130 sections 6 and 7).

use crate::alg::DigestAlg;
use crate::error::RequestError;
use crate::mime::{get, Header};
use serde::{Deserialize, Serialize};

/// What the sender asked for in the way of an MDN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MdnRequest {
    /// Disposition-Notification-To (ignored for routing, kept for the record).
    pub notification_to: String,
    /// Receipt-Delivery-Option: the URL of an asynchronous MDN; None means synchronous.
    pub async_url: Option<String>,
    /// A signed receipt was requested (signed-receipt-protocol=...pkcs7-signature).
    pub signed: bool,
    /// signed-receipt-micalg values as sent, in the sender's order of preference.
    pub micalgs: Vec<String>,
}

impl MdnRequest {
    /// The first requested MIC algorithm we support, left to right.
    pub fn preferred_micalg(&self) -> Option<DigestAlg> {
        self.micalgs.iter().find_map(|m| DigestAlg::parse(m))
    }
}

/// The AS2 headers of one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct As2Request {
    pub as2_version: Option<String>,
    pub as2_from: String,
    pub as2_to: String,
    /// Message-ID as sent (angle brackets included when present).
    pub message_id: String,
    pub subject: Option<String>,
    pub mdn: Option<MdnRequest>,
    /// EDIINT-Features, lower-cased tokens.
    pub features: Vec<String>,
}

/// Validate and unquote an AS2 name (AS2-From, AS2-To): 1 to 128 printable ASCII characters,
/// quoted or not; case is kept (AS2 names are case-sensitive).
pub fn parse_as2_name(raw: &str) -> Option<String> {
    let t = raw.trim();
    let name = if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') {
        let inner = &t[1..t.len() - 1];
        let mut out = String::with_capacity(inner.len());
        let mut esc = false;
        for c in inner.chars() {
            if esc {
                out.push(c);
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else {
                out.push(c);
            }
        }
        out
    } else {
        if t.contains(' ') || t.contains('"') {
            return None;
        }
        t.to_string()
    };
    let n = name.chars().count();
    if !(1..=128).contains(&n) || !name.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return None;
    }
    Some(name)
}

/// Parse `signed-receipt-protocol=optional, pkcs7-signature; signed-receipt-micalg=optional, sha256, sha1`.
fn parse_dn_options(v: &str) -> (bool, Vec<String>) {
    let mut signed = false;
    let mut micalgs = Vec::new();
    for param in v.split(';') {
        let Some((name, rest)) = param.split_once('=') else { continue };
        let values: Vec<String> = rest.split(',').map(|s| s.trim().trim_matches('"').to_string()).collect();
        // The first value is the importance (required/optional); tolerate its absence.
        let values: Vec<String> = match values.first().map(|s| s.to_ascii_lowercase()) {
            Some(ref i) if i == "required" || i == "optional" => values[1..].to_vec(),
            _ => values,
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "signed-receipt-protocol" => {
                signed = values.iter().any(|p| {
                    let p = p.to_ascii_lowercase();
                    p == "pkcs7-signature" || p == "pcks7-signature"
                })
            }
            "signed-receipt-micalg" => micalgs = values.into_iter().filter(|s| !s.is_empty()).collect(),
            _ => {}
        }
    }
    (signed, micalgs)
}

/// Headers that decide who sent a message, to whom, and where answers go: each must appear at
/// most once, or a reader could pick one copy and a checker another.
pub(crate) const SINGLE_HEADERS: [&str; 7] = [
    "AS2-From",
    "AS2-To",
    "Message-ID",
    "Content-Type",
    "Disposition-Notification-To",
    "Disposition-Notification-Options",
    "Receipt-Delivery-Option",
];

/// The first of [`SINGLE_HEADERS`] that appears more than once.
pub(crate) fn repeated_header(headers: &[Header]) -> Option<&'static str> {
    SINGLE_HEADERS.into_iter().find(|n| headers.iter().filter(|h| h.name.eq_ignore_ascii_case(n)).nth(1).is_some())
}

impl As2Request {
    pub fn from_headers(headers: &[Header]) -> Result<As2Request, RequestError> {
        if let Some(n) = repeated_header(headers) {
            return Err(RequestError::Repeated(n));
        }
        let from = get(headers, "as2-from").ok_or(RequestError::Missing("AS2-From"))?;
        let to = get(headers, "as2-to").ok_or(RequestError::Missing("AS2-To"))?;
        let as2_from = parse_as2_name(from)
            .ok_or_else(|| RequestError::Invalid("AS2-From", "must be 1 to 128 printable ASCII characters".into()))?;
        let as2_to = parse_as2_name(to)
            .ok_or_else(|| RequestError::Invalid("AS2-To", "must be 1 to 128 printable ASCII characters".into()))?;
        let message_id = get(headers, "message-id").ok_or(RequestError::Missing("Message-ID"))?.trim().to_string();
        if message_id.is_empty()
            || message_id.len() > 998
            || !message_id.bytes().all(|b| (0x20..=0x7e).contains(&b))
            || message_id == "<>"
        {
            return Err(RequestError::Invalid("Message-ID", "must be 1 to 998 printable ASCII characters".into()));
        }
        let as2_version = get(headers, "as2-version").map(|s| s.trim().to_string());
        if let Some(v) = &as2_version {
            let ok = v.split('.').count() == 2 && v.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            if !ok {
                return Err(RequestError::Invalid("AS2-Version", format!("{v:.20} is not a version number")));
            }
        }
        let mdn = match get(headers, "disposition-notification-to") {
            None => None,
            Some(to) => {
                let (signed, micalgs) =
                    get(headers, "disposition-notification-options").map(parse_dn_options).unwrap_or((false, vec![]));
                let async_url = get(headers, "receipt-delivery-option").map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
                if let Some(u) = &async_url {
                    let l = u.to_ascii_lowercase();
                    if !(l.starts_with("http://") || l.starts_with("https://")) {
                        return Err(RequestError::Invalid("Receipt-Delivery-Option", "only http and https URLs are supported".into()));
                    }
                }
                Some(MdnRequest { notification_to: to.to_string(), async_url, signed, micalgs })
            }
        };
        let features = get(headers, "ediint-features")
            .map(|f| f.split(',').map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        Ok(As2Request {
            as2_version,
            as2_from,
            as2_to,
            message_id,
            subject: get(headers, "subject").map(str::to_string),
            mdn,
            features,
        })
    }

    /// The Message-ID without angle brackets, for keys and file names.
    pub fn bare_message_id(&self) -> &str {
        self.message_id.trim().trim_start_matches('<').trim_end_matches('>')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<Header> {
        pairs.iter().map(|(n, v)| Header { name: n.to_string(), value: v.to_string() }).collect()
    }

    #[test]
    fn parses_a_full_request() {
        let r = As2Request::from_headers(&h(&[
            ("AS2-Version", "1.2"),
            ("as2-from", "\"Acme Corp\""),
            ("AS2-To", "edinode"),
            ("Message-ID", "<abc@host>"),
            ("Disposition-Notification-To", "mailto:x@y"),
            ("Disposition-Notification-Options", "signed-receipt-protocol=optional, pkcs7-signature; signed-receipt-micalg=optional, sha3-256, SHA-384, sha1"),
            ("Receipt-Delivery-Option", "https://partner/mdn?x=1"),
            ("EDIINT-Features", "multiple-attachments, CEM"),
        ]))
        .unwrap();
        assert_eq!(r.as2_from, "Acme Corp");
        assert_eq!(r.as2_to, "edinode");
        assert_eq!(r.bare_message_id(), "abc@host");
        let mdn = r.mdn.unwrap();
        assert!(mdn.signed);
        assert_eq!(mdn.preferred_micalg(), Some(DigestAlg::Sha384));
        assert_eq!(mdn.async_url.as_deref(), Some("https://partner/mdn?x=1"));
        assert_eq!(r.features, vec!["multiple-attachments", "cem"]);
    }

    #[test]
    fn missing_and_invalid_headers_are_named() {
        assert_eq!(As2Request::from_headers(&h(&[("AS2-To", "a"), ("Message-ID", "<x>")])), Err(RequestError::Missing("AS2-From")));
        let long = "x".repeat(129);
        assert!(matches!(
            As2Request::from_headers(&h(&[("AS2-From", &long), ("AS2-To", "a"), ("Message-ID", "<x>")])),
            Err(RequestError::Invalid("AS2-From", _))
        ));
        assert!(matches!(
            As2Request::from_headers(&h(&[("AS2-From", "a b"), ("AS2-To", "a"), ("Message-ID", "<x>")])),
            Err(RequestError::Invalid("AS2-From", _))
        ));
        assert_eq!(As2Request::from_headers(&h(&[("AS2-From", "a"), ("AS2-To", "b")])), Err(RequestError::Missing("Message-ID")));
    }

    #[test]
    fn repeated_routing_headers_are_refused() {
        for name in SINGLE_HEADERS {
            let mut hs = h(&[("AS2-From", "a"), ("AS2-To", "b"), ("Message-ID", "<x>"), ("Content-Type", "text/plain")]);
            hs.push(Header { name: name.to_ascii_lowercase(), value: "other".into() });
            if !["AS2-From", "AS2-To", "Message-ID", "Content-Type"].contains(&name) {
                hs.push(Header { name: name.to_string(), value: "again".into() });
            }
            assert_eq!(As2Request::from_headers(&hs), Err(RequestError::Repeated(name)), "{name}");
        }
    }

    #[test]
    fn names_are_case_sensitive_and_unsigned_mdn_is_sync() {
        let r = As2Request::from_headers(&h(&[
            ("AS2-From", "MeCAS2"),
            ("AS2-To", "b"),
            ("Message-ID", "<x>"),
            ("Disposition-Notification-To", "x"),
        ]))
        .unwrap();
        assert_eq!(r.as2_from, "MeCAS2");
        let mdn = r.mdn.unwrap();
        assert!(!mdn.signed && mdn.async_url.is_none());
    }
}
