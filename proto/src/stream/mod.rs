//! Streaming codecs for large messages: each layer is opened as its bytes arrive, in bounded
//! memory, whatever the size of the message.
//!
//! Sans-IO like the rest of the crate: a codec takes input chunks (`push`) and appends what it
//! produces to an output buffer; `finish` says the input ended. The node reads a blob chunk by
//! chunk, feeds the codec on the CPU pool, and writes the output to the next blob. Nothing a
//! codec produces is trusted before `finish` returned Ok (an AES-GCM tag, a CBC padding, a
//! signature's messageDigest are checked there); the node hands the output on only then.
//!
//! - [`entity`]: an entity's header block, then its body with the transfer encoding removed;
//!   and decrypted or decompressed content given a header block when it has none.
//! - [`octets`]: the content octets of a BER OCTET STRING (primitive or chunked, definite or
//!   indefinite length) as they arrive.
//! - [`enveloped`]: EnvelopedData / AuthEnvelopedData decryption (key transport by OpenSSL,
//!   content through an OpenSSL Crypter).
//! - [`compressed`]: CompressedData, inflated with the output limit applied as it goes.
//! - [`multipart`]: a multipart body split into parts across chunk edges.
//! - [`signed`]: multipart/signed: the signed part passed on and hashed, the signature kept.

pub mod compressed;
pub mod entity;
pub mod enveloped;
pub mod multipart;
pub mod octets;
pub mod pipeline;
pub mod signed;

use crate::error::ProcessingError;

/// How much a node reads from a blob at a time.
pub const CHUNK: usize = 1 << 20;

/// The most a CMS structure's leading part (everything before its content octets: the
/// RecipientInfos, algorithm parameters) may take.
pub(crate) const MAX_CMS_HEAD: usize = 1 << 20;

/// One streaming step: input in, output appended.
pub trait Codec: Send {
    /// Input is held back to keep one call's output bounded: call `push(&[])` again (after
    /// taking the output) until this is false.
    fn pending(&self) -> bool {
        false
    }
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), ProcessingError>;
    /// The input ended: flush, and check what can only be checked at the end.
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), ProcessingError>;
}

/// Run a codec over a whole input, `chunk` bytes at a time (tests, and small inputs).
pub fn run_all(codec: &mut dyn Codec, input: &[u8], chunk: usize) -> Result<Vec<u8>, ProcessingError> {
    let mut out = Vec::new();
    for c in input.chunks(chunk.max(1)) {
        codec.push(c, &mut out)?;
        while codec.pending() {
            codec.push(&[], &mut out)?;
        }
    }
    codec.finish(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
