//! edinode-proto: every byte format the node speaks, without IO.
//!
//! - [`alg`]: digest, cipher and key-transport names, parsed once.
//! - [`mime`]: byte-exact MIME entity views and multipart splitting.
//! - [`headers`]: the AS2 request headers as typed values.
//! - [`cms`]: CMS layers: encrypt/decrypt, sign/verify, compress/decompress.
//! - [`unwrap`]: one unwrapping step at a time, the MIC, and the delivered documents.
//! - [`outbound`]: building an outbound AS2 message and the MIC its MDN has to return.
//! - [`mdn`]: MDNs: building ours, parsing a partner's, judging it against what we sent.
//! - [`error`]: error types and the one table mapping failures to dispositions.
//! - [`profile`]: stations and partners with their keys loaded.
//! - [`envelope`]: the typed messages that travel between actors.
//! - [`as4`]: AS4 (ebMS 3.0) signals, user messages and WS-Security for the pull sender.
//! - `fuzzing` and `testing` (hidden): fuzz entry points, and keys for tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

/// `TryFrom<String>` (for serde's `try_from`) of an enum that a configuration names by a word:
/// `from_words!(Compression: "none" | "" => None, "before" => BeforeSigning, ...)`. Any case;
/// another value is refused with the first word of each variant.
macro_rules! from_words {
    ($t:ident: $($word:literal $(| $alias:literal)* => $v:ident),+) => {
        impl TryFrom<String> for $t {
            type Error = String;

            fn try_from(v: String) -> Result<$t, String> {
                $(if v.eq_ignore_ascii_case($word) $(|| v.eq_ignore_ascii_case($alias))* {
                    return Ok($t::$v);
                })+
                let words = [$($word),+];
                let (last, rest) = words.split_last().unwrap_or((&"", &[]));
                Err(format!("{v}: expected {} or {last}", rest.join(", ")))
            }
        }
    };
}

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
pub mod stream;
pub mod unwrap;
