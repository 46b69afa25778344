//! The content octets of one BER OCTET STRING as they arrive: primitive, or constructed from
//! chunks (nested, definite or indefinite length), which is how streaming encoders (OpenSSL's
//! `-stream`, BouncyCastle) write a large content. What follows the element is kept, bounded,
//! as the trailer (an AES-GCM tag lives there).

use crate::cms::ber::{self, MAX_DEPTH, TAG_OCTET_STRING};

/// How much of what follows the element is kept.
const MAX_TRAILER: usize = 64 * 1024;

/// Which identifier the outer element carries: `[0] IMPLICIT OCTET STRING` in
/// EncryptedContentInfo, a plain OCTET STRING in EncapsulatedContentInfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outer {
    ContextZero,
    OctetString,
}

pub(crate) struct OctetStream {
    outer: Outer,
    header: Vec<u8>,
    /// The open constructed elements, innermost last: content bytes left (None: indefinite).
    frames: Vec<Option<u64>>,
    /// Bytes left of the primitive chunk being read.
    chunk_left: u64,
    started: bool,
    done: bool,
    trailer: Vec<u8>,
}

impl OctetStream {
    pub fn new(outer: Outer) -> OctetStream {
        OctetStream { outer, header: Vec::new(), frames: Vec::new(), chunk_left: 0, started: false, done: false, trailer: Vec::new() }
    }

    /// What followed the element (at most 64 KiB of it).
    pub fn trailer(&self) -> &[u8] {
        &self.trailer
    }

    /// `n` bytes of the element were read: every definite enclosing element has that much less.
    fn consumed(&mut self, n: u64) -> Result<(), String> {
        for left in self.frames.iter_mut().flatten() {
            *left = left.checked_sub(n).ok_or("a chunk runs past its enclosing element")?;
        }
        Ok(())
    }

    /// Close finished definite elements; the stream is done when the outermost closed.
    fn close_finished(&mut self) {
        while self.chunk_left == 0 && matches!(self.frames.last(), Some(Some(0))) {
            self.frames.pop();
        }
        if self.started && self.chunk_left == 0 && self.frames.is_empty() {
            self.done = true;
        }
    }

    fn element(&mut self, h: ber::Header) -> Result<(), String> {
        let eoc = h.class == 0 && h.tag == 0 && !h.constructed && h.len == Some(0);
        if !self.started {
            let ok = match self.outer {
                Outer::ContextZero => h.class == 2 && h.tag == 0,
                Outer::OctetString => h.class == 0 && h.tag == TAG_OCTET_STRING,
            };
            if !ok {
                return Err(format!("expected the content OCTET STRING, found class {} tag {}", h.class, h.tag));
            }
            self.started = true;
        } else if eoc {
            return match self.frames.pop() {
                Some(None) => Ok(()),
                _ => Err("end-of-contents inside a definite-length element".into()),
            };
        } else if !(h.class == 0 && h.tag == TAG_OCTET_STRING) {
            return Err(format!("a chunk of class {} tag {} inside an OCTET STRING", h.class, h.tag));
        }
        if h.constructed {
            if self.frames.len() >= MAX_DEPTH {
                return Err("OCTET STRING chunks nested too deep".into());
            }
            self.frames.push(h.len.map(|n| n as u64));
        } else {
            self.chunk_left = h.len.ok_or("indefinite primitive")? as u64;
        }
        Ok(())
    }

    /// Feed bytes; the content octets go to `out`.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        while !input.is_empty() {
            if self.done {
                let room = MAX_TRAILER.saturating_sub(self.trailer.len());
                self.trailer.extend_from_slice(&input[..input.len().min(room)]);
                return Ok(());
            }
            if self.chunk_left > 0 {
                let n = input.len().min(usize::try_from(self.chunk_left).unwrap_or(usize::MAX));
                out.extend_from_slice(&input[..n]);
                self.chunk_left -= n as u64;
                self.consumed(n as u64)?;
                input = &input[n..];
                self.close_finished();
                continue;
            }
            // A header, one byte at a time (headers are a few bytes; chunks are large).
            self.header.push(input[0]);
            input = &input[1..];
            if self.header.len() > 16 {
                return Err("BER header too long".into());
            }
            if let Some(h) = ber::read_header_prefix(&self.header)? {
                let n = self.header.len() as u64;
                self.header.clear();
                // The header's bytes belong to the enclosing elements, not to itself.
                self.consumed(n)?;
                self.element(h)?;
                self.close_finished();
            }
        }
        Ok(())
    }

    /// The input ended: the element must be complete.
    pub fn finish(&self) -> Result<(), String> {
        if self.done { Ok(()) } else { Err("the content ended early (truncated message)".into()) }
    }
}
