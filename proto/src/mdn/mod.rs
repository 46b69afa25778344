//! MDNs (RFC 3798 / RFC 4130 section 7.4), both ways.
//!
//! - [`build`](mod@build): the MDNs we return: a multipart/report with a human-readable part and
//!   a message/disposition-notification part, optionally wrapped in multipart/signed.
//! - [`parse`](mod@parse): a partner's MDN, synchronous (the HTTP response) or asynchronous (an
//!   HTTP POST to us), signature checked, report read leniently.
//! - [`judge`](mod@judge): what a parsed MDN means for the message we sent.

use crate::alg::DigestAlg;

pub mod build;
pub mod judge;
pub mod parse;
#[cfg(test)]
mod tests;

pub use build::{base64_lines, build, BuiltMdn, MdnContent, MdnIds, MdnSigner};
pub(crate) use build::quote_name;
pub use judge::{judge, Awaited, MdnVerdict, Refusal};
pub use parse::{parse, MdnError, ParsedMdn};

/// A MIC as reported in Received-Content-MIC.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mic {
    /// Base64 digest.
    pub digest: String,
    pub alg: DigestAlg,
}
