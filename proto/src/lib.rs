//! edinode-proto: every byte format the node speaks, without IO.
//!
//! - [`alg`]: digest, cipher and key-transport names, parsed once.
//! - [`mime`]: byte-exact MIME entity views and multipart splitting.
//! - [`headers`]: the AS2 request headers as typed values.
//! - [`cms`]: CMS layers: encrypt/decrypt, sign/verify, compress/decompress.
//! - [`unwrap`]: one unwrapping step at a time, the MIC, and the delivered documents.
//! - [`mdn`]: building MDNs.
//! - [`error`]: error types and the one table mapping failures to dispositions.
//! - [`profile`]: stations and partners with their keys loaded.
//! - [`envelope`]: the typed messages that travel between actors.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod alg;
pub mod as4;
pub mod cms;
pub mod envelope;
pub mod error;
#[doc(hidden)] pub mod fuzzing;
pub mod headers;
pub mod mdn;
pub mod mime;
pub mod outbound;
pub mod profile;
#[doc(hidden)] pub mod testing;
pub mod unwrap;
