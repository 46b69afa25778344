//! Error types of the protocol layer and the one table that maps them to AS2 dispositions.

use serde::{Deserialize, Serialize};

/// A MIME entity could not be read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MimeError {
    #[error("header block larger than {0} bytes or too many fields")]
    HeaderTooLarge(usize),
    #[error("malformed header: {0}")]
    BadHeader(String),
    #[error("malformed multipart: {0}")]
    BadMultipart(String),
    #[error("bad transfer encoding: {0}")]
    BadEncoding(String),
}

/// Why the AS2 HTTP request itself is unacceptable (answered with HTTP 400, no MDN).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("missing header {0}")]
    Missing(&'static str),
    #[error("invalid header {0}: {1}")]
    Invalid(&'static str, String),
    #[error("header {0} appears more than once")]
    Repeated(&'static str),
}

/// A processing failure that is answered with an error MDN. One variant per disposition modifier.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProcessingError {
    #[error("decryption failed: {0}")]
    Decryption(String),
    #[error("authentication failed: {0}")]
    Authentication(String),
    #[error("integrity check failed: {0}")]
    Integrity(String),
    #[error("decompression failed: {0}")]
    Decompression(String),
    #[error("insufficient message security: {0}")]
    InsufficientSecurity(String),
    #[error("unexpected processing error: {0}")]
    Unexpected(String),
}

/// The disposition of a processed message, as written in an MDN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Disposition {
    Processed,
    /// processed/warning: <modifier>
    Warning(String),
    /// processed/error: <modifier>
    Error(String),
    /// failed/failure: <modifier> (used for unsupported formats)
    Failed(String),
}

impl Disposition {
    pub const DUPLICATE: &'static str = "duplicate-document";

    /// The value of the Disposition field's disposition-type part.
    pub fn field_value(&self) -> String {
        match self {
            Disposition::Processed => "automatic-action/MDN-sent-automatically; processed".into(),
            Disposition::Warning(m) => format!("automatic-action/MDN-sent-automatically; processed/warning: {m}"),
            Disposition::Error(m) => format!("automatic-action/MDN-sent-automatically; processed/error: {m}"),
            Disposition::Failed(m) => format!("automatic-action/MDN-sent-automatically; failed/failure: {m}"),
        }
    }

    /// True when the partner may consider the message delivered.
    pub fn is_positive(&self) -> bool {
        matches!(self, Disposition::Processed | Disposition::Warning(_))
    }

    /// Parse a Disposition field leniently (case, whitespace).
    pub fn parse(value: &str) -> Option<Disposition> {
        let v = value.trim();
        let after = v.split_once(';').map(|(_, r)| r).unwrap_or(v).trim();
        let lower = after.to_ascii_lowercase();
        let (kind, modifier) = match lower.split_once(':') {
            Some((k, m)) => (k.trim().to_string(), m.trim().to_string()),
            None => (lower.trim().to_string(), String::new()),
        };
        let kind: String = kind.chars().filter(|c| !c.is_whitespace()).collect();
        Some(match kind.as_str() {
            "processed" => Disposition::Processed,
            "processed/warning" => Disposition::Warning(modifier),
            "processed/error" => Disposition::Error(modifier),
            k if k.starts_with("failed") => Disposition::Failed(modifier),
            _ => return None,
        })
    }
}

impl ProcessingError {
    /// The one mapping from failures to dispositions.
    pub fn disposition(&self) -> Disposition {
        let m = match self {
            ProcessingError::Decryption(_) => "decryption-failed",
            ProcessingError::Authentication(_) => "authentication-failed",
            ProcessingError::Integrity(_) => "integrity-check-failed",
            ProcessingError::Decompression(_) => "decompression-failed",
            ProcessingError::InsufficientSecurity(_) => "insufficient-message-security",
            ProcessingError::Unexpected(_) => "unexpected-processing-error",
        };
        Disposition::Error(m.into())
    }
}

impl From<MimeError> for ProcessingError {
    fn from(e: MimeError) -> Self {
        ProcessingError::Unexpected(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modifier(e: ProcessingError) -> String {
        match e.disposition() {
            Disposition::Error(m) => m,
            other => panic!("not an error disposition: {other:?}"),
        }
    }

    #[test]
    fn each_failure_maps_to_its_modifier() {
        for (e, m) in [
            (ProcessingError::Decryption("x".into()), "decryption-failed"),
            (ProcessingError::Authentication("x".into()), "authentication-failed"),
            (ProcessingError::Integrity("x".into()), "integrity-check-failed"),
            (ProcessingError::Decompression("x".into()), "decompression-failed"),
            // A policy failure.
            (ProcessingError::InsufficientSecurity("x".into()), "insufficient-message-security"),
            // Anything else.
            (ProcessingError::Unexpected("x".into()), "unexpected-processing-error"),
            (MimeError::BadMultipart("x".into()).into(), "unexpected-processing-error"),
        ] {
            assert_eq!(modifier(e), m);
        }
    }
    #[test]
    fn duplicate_is_a_positive_warning() {
        let d = Disposition::Warning(Disposition::DUPLICATE.into());
        assert!(d.is_positive());
        assert_eq!(d.field_value(), "automatic-action/MDN-sent-automatically; processed/warning: duplicate-document");
    }
    #[test]
    fn dispositions_parse_leniently() {
        assert_eq!(Disposition::parse("automatic-action/MDN-sent-automatically; Processed"), Some(Disposition::Processed));
        assert_eq!(
            Disposition::parse(" automatic-action/MDN-sent-automatically;processed / Error : authentication-failed "),
            Some(Disposition::Error("authentication-failed".into()))
        );
        assert_eq!(Disposition::parse("garbage"), None);
    }
}
