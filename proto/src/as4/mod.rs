//! AS4 (OASIS ebMS 3.0 + AS4 profile) for the pull sender, without IO.
//!
//! What lives where:
//! - [`signal`]: parsing what a partner POSTs to `/as4` (a SOAP 1.2 envelope, plain or as
//!   SOAP-with-attachments): PullRequest, Receipt and Error signals, and the verified signer.
//! - [`wssec`]: WS-Security XML signatures: verification (BinarySecurityToken or X509Data keys,
//!   exclusive C14N, RSA-SHA1/256/384/512, SwA attachment references, signature-wrapping checks)
//!   and the signing used by our responses.
//! - [`c14n`]: Exclusive XML Canonicalization 1.0 over a parsed document.
//! - [`authz`]: the pull authorization map (`config/Security/pull_authorizationmap.xml`).
//! - [`user_message`]: the queued [`user_message::UserMessage`] and the signed
//!   multipart/related pull response that carries it.
//! - [`signals`]: building Error, Receipt and PullRequest signals.
//! - [`package`]: multipart/related (SOAP with attachments) splitting and assembly.
//!
//! Nothing here reads the clock, draws random numbers or does IO: message ids, timestamps,
//! wsu:Ids and MIME boundaries come in as arguments ([`signals::SignalIds`],
//! [`wssec::SecurityIds`], [`user_message::ResponseIds`]).
//!
//! Every parser takes [`Limits`] and checks the raw bytes before an XML parser sees them:
//! size, nesting depth, and no DTD at all (a DOCTYPE or ENTITY declaration is rejected, so
//! entity expansion and external entities cannot happen).
//!
//! Failures of inbound processing are [`InboundError`]s; the one table that maps them to an
//! ebMS error code or an HTTP 400 is [`As4Error::answer`].

pub mod authz;
pub mod c14n;
pub mod package;
pub mod signal;
pub mod signals;
pub mod user_message;
pub mod wssec;
mod xml;

use serde::{Deserialize, Serialize};

/// XML namespaces used by AS4.
pub mod ns {
    pub(crate) const SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";
    pub(crate) const SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
    pub const EB: &str = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/";
    pub const WSSE: &str =
        "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
    pub const WSU: &str =
        "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
    pub const DS: &str = "http://www.w3.org/2000/09/xmldsig#";
    pub const XML: &str = "http://www.w3.org/XML/1998/namespace";
    pub(crate) const EBBP: &str = "http://docs.oasis-open.org/ebxml-bp/ebbp-signals-2.0";
}

/// The MPC a PullRequest without `mpc` attribute pulls from.
pub const DEFAULT_MPC: &str =
    "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/defaultMPC";

/// Bounds applied to every inbound document before and while parsing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum size of the HTTP body (and of the SOAP part of a multipart body).
    pub max_bytes: usize,
    /// Maximum element nesting depth.
    pub max_depth: usize,
    /// Maximum number of XML nodes (elements, texts, comments, PIs).
    pub max_nodes: u32,
    /// Maximum number of MIME parts in a SOAP-with-attachments body.
    pub max_parts: usize,
}

impl Default for Limits {
    /// Generous for signals (a PullRequest is under 4 KiB, a signed Receipt with
    /// non-repudiation information under 64 KiB), small enough to keep a hostile body cheap.
    fn default() -> Self {
        Limits { max_bytes: 1024 * 1024, max_depth: 64, max_nodes: 20_000, max_parts: 32 }
    }
}

/// ebMS 3.0 error codes (ebMS 3.0 Core 6.7 and the AS4 profile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EbmsCode {
    /// EBMS:0001
    ValueNotRecognized,
    /// EBMS:0002
    FeatureNotSupported,
    /// EBMS:0003
    ValueInconsistent,
    /// EBMS:0004
    Other,
    /// EBMS:0005
    ConnectionFailure,
    /// EBMS:0006
    EmptyMessagePartitionChannel,
    /// EBMS:0007
    MimeInconsistency,
    /// EBMS:0008
    FeatureNotSupportedUnpackaging,
    /// EBMS:0009
    InvalidHeader,
    /// EBMS:0010
    ProcessingModeMismatch,
    /// EBMS:0011
    ExternalPayloadError,
    /// EBMS:0101
    FailedAuthentication,
    /// EBMS:0102
    FailedDecryption,
    /// EBMS:0103
    PolicyNoncompliance,
    /// EBMS:0201
    DysfunctionalReliability,
    /// EBMS:0202
    DeliveryFailure,
    /// EBMS:0301
    MissingReceipt,
    /// EBMS:0302
    InvalidReceipt,
    /// EBMS:0303
    DecompressionFailure,
}

/// `eb:Error/@severity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Failure,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Failure => "failure",
        }
    }

    /// Lenient: case-insensitive, surrounding whitespace ignored.
    pub fn parse(s: &str) -> Option<Severity> {
        match s.trim().to_ascii_lowercase().as_str() {
            "warning" => Some(Severity::Warning),
            "failure" => Some(Severity::Failure),
            _ => None,
        }
    }
}

impl EbmsCode {
    pub const ALL: [EbmsCode; 19] = [
        EbmsCode::ValueNotRecognized,
        EbmsCode::FeatureNotSupported,
        EbmsCode::ValueInconsistent,
        EbmsCode::Other,
        EbmsCode::ConnectionFailure,
        EbmsCode::EmptyMessagePartitionChannel,
        EbmsCode::MimeInconsistency,
        EbmsCode::FeatureNotSupportedUnpackaging,
        EbmsCode::InvalidHeader,
        EbmsCode::ProcessingModeMismatch,
        EbmsCode::ExternalPayloadError,
        EbmsCode::FailedAuthentication,
        EbmsCode::FailedDecryption,
        EbmsCode::PolicyNoncompliance,
        EbmsCode::DysfunctionalReliability,
        EbmsCode::DeliveryFailure,
        EbmsCode::MissingReceipt,
        EbmsCode::InvalidReceipt,
        EbmsCode::DecompressionFailure,
    ];

    /// The table of ebMS 3.0 Core 6.7.1-6.7.3 and AS4 5.2.3:
    /// (errorCode, shortDescription, category, default severity, origin).
    fn row(self) -> (&'static str, &'static str, &'static str, Severity, &'static str) {
        use EbmsCode::*;
        use Severity::*;
        match self {
            ValueNotRecognized => ("EBMS:0001", "ValueNotRecognized", "Content", Failure, "ebMS"),
            FeatureNotSupported => ("EBMS:0002", "FeatureNotSupported", "Content", Warning, "ebMS"),
            ValueInconsistent => ("EBMS:0003", "ValueInconsistent", "Content", Failure, "ebMS"),
            Other => ("EBMS:0004", "Other", "Content", Failure, "ebMS"),
            ConnectionFailure => ("EBMS:0005", "ConnectionFailure", "Communication", Failure, "ebMS"),
            EmptyMessagePartitionChannel => {
                ("EBMS:0006", "EmptyMessagePartitionChannel", "Communication", Warning, "ebMS")
            }
            MimeInconsistency => ("EBMS:0007", "MimeInconsistency", "Unpackaging", Failure, "ebMS"),
            FeatureNotSupportedUnpackaging => {
                ("EBMS:0008", "FeatureNotSupported", "Unpackaging", Failure, "ebMS")
            }
            InvalidHeader => ("EBMS:0009", "InvalidHeader", "Unpackaging", Failure, "ebMS"),
            ProcessingModeMismatch => {
                ("EBMS:0010", "ProcessingModeMismatch", "Processing", Failure, "ebMS")
            }
            ExternalPayloadError => ("EBMS:0011", "ExternalPayloadError", "Content", Failure, "ebMS"),
            FailedAuthentication => {
                ("EBMS:0101", "FailedAuthentication", "Processing", Failure, "security")
            }
            FailedDecryption => ("EBMS:0102", "FailedDecryption", "Processing", Failure, "security"),
            PolicyNoncompliance => {
                ("EBMS:0103", "PolicyNoncompliance", "Processing", Failure, "security")
            }
            DysfunctionalReliability => {
                ("EBMS:0201", "DysfunctionalReliability", "Processing", Failure, "reliability")
            }
            DeliveryFailure => ("EBMS:0202", "DeliveryFailure", "Communication", Failure, "reliability"),
            MissingReceipt => ("EBMS:0301", "MissingReceipt", "Communication", Failure, "ebMS"),
            InvalidReceipt => ("EBMS:0302", "InvalidReceipt", "Communication", Failure, "ebMS"),
            DecompressionFailure => {
                ("EBMS:0303", "DecompressionFailure", "Communication", Failure, "ebMS")
            }
        }
    }

    /// `EBMS:0004` etc.
    pub fn code(self) -> &'static str {
        self.row().0
    }

    /// The standard shortDescription (`EmptyMessagePartitionChannel`, ...).
    pub fn short_description(self) -> &'static str {
        self.row().1
    }

    /// `Content`, `Communication`, `Unpackaging` or `Processing`.
    pub(crate) fn category(self) -> &'static str {
        self.row().2
    }

    pub(crate) fn default_severity(self) -> Severity {
        self.row().3
    }

    /// `ebMS`, `security` or `reliability`.
    pub fn origin(self) -> &'static str {
        self.row().4
    }

    /// From an `errorCode` attribute (`EBMS:0301`; case-insensitive, whitespace ignored).
    pub fn parse(code: &str) -> Option<EbmsCode> {
        let c = code.trim();
        EbmsCode::ALL.into_iter().find(|e| e.code().eq_ignore_ascii_case(c))
    }
}

/// What went wrong with an inbound AS4 message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum As4Error {
    #[error("body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("XML nested deeper than {limit} elements")]
    TooDeep { limit: usize },
    #[error("too many XML nodes (limit {limit})")]
    TooManyNodes { limit: u32 },
    #[error("DTDs and entity declarations are not accepted")]
    Dtd,
    #[error("not well-formed XML: {0}")]
    Malformed(String),
    #[error("not a SOAP 1.2 envelope: {0}")]
    NotSoap(String),
    #[error("bad MIME packaging: {0}")]
    Mime(String),
    #[error("invalid ebMS header: {0}")]
    InvalidHeader(String),
    #[error("value not recognized: {0}")]
    ValueNotRecognized(String),
    #[error("value inconsistent: {0}")]
    ValueInconsistent(String),
    #[error("not supported: {0}")]
    NotSupported(String),
    #[error("signature verification failed: {0}")]
    FailedAuthentication(String),
}

/// How an inbound failure is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// HTTP 400 with the error's text as reason: there is no usable ebMS header to answer to.
    BadRequest,
    /// An ebMS Error signal with this code (failure severity).
    Ebms(EbmsCode),
}

impl As4Error {
    /// The one table mapping inbound failures to answers.
    pub fn answer(&self) -> Answer {
        use As4Error::*;
        match self {
            TooLarge { .. } | TooDeep { .. } | TooManyNodes { .. } | Dtd | Malformed(_)
            | NotSoap(_) => Answer::BadRequest,
            Mime(_) => Answer::Ebms(EbmsCode::MimeInconsistency),
            InvalidHeader(_) => Answer::Ebms(EbmsCode::InvalidHeader),
            ValueNotRecognized(_) => Answer::Ebms(EbmsCode::ValueNotRecognized),
            ValueInconsistent(_) => Answer::Ebms(EbmsCode::ValueInconsistent),
            NotSupported(_) => Answer::Ebms(EbmsCode::ProcessingModeMismatch),
            FailedAuthentication(_) => Answer::Ebms(EbmsCode::FailedAuthentication),
        }
    }
}

/// An inbound failure, with the id of the message it concerns when the header got that far
/// (to be used as RefToMessageId / refToMessageInError of the answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct InboundError {
    pub error: As4Error,
    pub ref_to_message_id: Option<String>,
}

impl InboundError {
    pub fn answer(&self) -> Answer {
        self.error.answer()
    }
}

impl From<As4Error> for InboundError {
    fn from(error: As4Error) -> Self {
        InboundError { error, ref_to_message_id: None }
    }
}

/// Why building an outbound message failed (bad input from our own side: ids, strings).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("the MIME boundary occurs in the content")]
    BoundaryInContent,
    #[error("cannot canonicalize XML attachment {content_id}: {reason}")]
    AttachmentCanonicalization { content_id: String, reason: String },
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("internal: {0}")]
    Internal(String),
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::wssec::SigningKey;

    /// The AS4.NET signed PullRequest (see shared/fixtures/README.md).
    pub fn fixture(name: &str) -> Vec<u8> {
        crate::testing::fixture("as4", name)
    }

    /// A throwaway self-signed RSA key and certificate.
    pub fn signing_key(cn: &str) -> SigningKey {
        let (key, cert) = crate::testing::self_signed(cn, 7).unwrap();
        SigningKey { key, cert }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test per row of the ebMS code table.
    macro_rules! row {
        ($name:ident, $c:expr, $code:expr, $short:expr, $cat:expr, $sev:expr) => {
            #[test]
            fn $name() {
                assert_eq!($c.code(), $code);
                assert_eq!($c.short_description(), $short);
                assert_eq!($c.category(), $cat);
                assert_eq!($c.default_severity(), $sev);
                assert_eq!(EbmsCode::parse($code), Some($c));
            }
        };
    }
    use Severity::{Failure, Warning};
    row!(code_0001, EbmsCode::ValueNotRecognized, "EBMS:0001", "ValueNotRecognized", "Content", Failure);
    row!(code_0002, EbmsCode::FeatureNotSupported, "EBMS:0002", "FeatureNotSupported", "Content", Warning);
    row!(code_0003, EbmsCode::ValueInconsistent, "EBMS:0003", "ValueInconsistent", "Content", Failure);
    row!(code_0004, EbmsCode::Other, "EBMS:0004", "Other", "Content", Failure);
    row!(code_0005, EbmsCode::ConnectionFailure, "EBMS:0005", "ConnectionFailure", "Communication", Failure);
    row!(code_0006, EbmsCode::EmptyMessagePartitionChannel, "EBMS:0006", "EmptyMessagePartitionChannel", "Communication", Warning);
    row!(code_0007, EbmsCode::MimeInconsistency, "EBMS:0007", "MimeInconsistency", "Unpackaging", Failure);
    row!(code_0008, EbmsCode::FeatureNotSupportedUnpackaging, "EBMS:0008", "FeatureNotSupported", "Unpackaging", Failure);
    row!(code_0009, EbmsCode::InvalidHeader, "EBMS:0009", "InvalidHeader", "Unpackaging", Failure);
    row!(code_0010, EbmsCode::ProcessingModeMismatch, "EBMS:0010", "ProcessingModeMismatch", "Processing", Failure);
    row!(code_0011, EbmsCode::ExternalPayloadError, "EBMS:0011", "ExternalPayloadError", "Content", Failure);
    row!(code_0101, EbmsCode::FailedAuthentication, "EBMS:0101", "FailedAuthentication", "Processing", Failure);
    row!(code_0102, EbmsCode::FailedDecryption, "EBMS:0102", "FailedDecryption", "Processing", Failure);
    row!(code_0103, EbmsCode::PolicyNoncompliance, "EBMS:0103", "PolicyNoncompliance", "Processing", Failure);
    row!(code_0201, EbmsCode::DysfunctionalReliability, "EBMS:0201", "DysfunctionalReliability", "Processing", Failure);
    row!(code_0202, EbmsCode::DeliveryFailure, "EBMS:0202", "DeliveryFailure", "Communication", Failure);
    row!(code_0301, EbmsCode::MissingReceipt, "EBMS:0301", "MissingReceipt", "Communication", Failure);
    row!(code_0302, EbmsCode::InvalidReceipt, "EBMS:0302", "InvalidReceipt", "Communication", Failure);
    row!(code_0303, EbmsCode::DecompressionFailure, "EBMS:0303", "DecompressionFailure", "Communication", Failure);

    #[test]
    fn codes_parse_leniently() {
        assert_eq!(EbmsCode::parse(" ebms:0006 "), Some(EbmsCode::EmptyMessagePartitionChannel));
        assert_eq!(EbmsCode::parse("EBMS:9999"), None);
        assert_eq!(Severity::parse("Warning"), Some(Severity::Warning));
        assert_eq!(Severity::parse("fatal"), None);
    }

    // The rows of the answer table.
    #[test]
    fn xml_level_failures_are_bad_requests() {
        for e in [
            As4Error::TooLarge { limit: 1 },
            As4Error::TooDeep { limit: 1 },
            As4Error::TooManyNodes { limit: 1 },
            As4Error::Dtd,
            As4Error::Malformed("x".into()),
            As4Error::NotSoap("x".into()),
        ] {
            assert_eq!(e.answer(), Answer::BadRequest, "{e}");
        }
    }

    #[test]
    fn other_failures_are_their_ebms_codes() {
        for (e, code) in [
            (As4Error::Mime("x".into()), EbmsCode::MimeInconsistency),
            (As4Error::InvalidHeader("x".into()), EbmsCode::InvalidHeader),
            (As4Error::ValueNotRecognized("x".into()), EbmsCode::ValueNotRecognized),
            (As4Error::ValueInconsistent("x".into()), EbmsCode::ValueInconsistent),
            (As4Error::NotSupported("x".into()), EbmsCode::ProcessingModeMismatch),
            (As4Error::FailedAuthentication("x".into()), EbmsCode::FailedAuthentication),
        ] {
            assert_eq!(e.answer(), Answer::Ebms(code), "{e}");
        }
    }
}
