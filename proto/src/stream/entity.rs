//! An entity read as a stream: the header block first (bounded), then the body with its
//! transfer encoding removed; and [`AsEntity`], which gives bare content a header block.

use super::Codec;
use crate::error::ProcessingError;
use crate::mime::{self, ContentType, Header, MimeLimits};

/// Reads the header block, then hands out the decoded body.
pub(crate) struct BodyReader {
    limits: MimeLimits,
    head: Vec<u8>,
    headers: Option<Vec<Header>>,
    decoder: Transfer,
}

enum Transfer {
    Identity,
    Base64(Base64),
}

impl BodyReader {
    pub fn new(limits: MimeLimits) -> BodyReader {
        BodyReader { limits, head: Vec::new(), headers: None, decoder: Transfer::Identity }
    }

    /// The header fields, once the header block has been read.
    pub fn headers(&self) -> Option<&[Header]> {
        self.headers.as_deref()
    }

    pub fn content_type(&self) -> Option<ContentType> {
        self.headers.as_ref().map(|h| ContentType::parse(mime::get(h, "content-type").unwrap_or("text/plain")))
    }

    fn body(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), ProcessingError> {
        match &mut self.decoder {
            Transfer::Identity => out.extend_from_slice(input),
            Transfer::Base64(b) => b.push(input, out)?,
        }
        Ok(())
    }
}

impl Codec for BodyReader {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), ProcessingError> {
        if self.headers.is_some() {
            return self.body(input, out);
        }
        self.head.extend_from_slice(input);
        let Some((header_len, body_start)) = mime::header_end(&self.head) else {
            if self.head.len() > self.limits.max_header_bytes {
                return Err(ProcessingError::Unexpected(format!("header block over {} bytes", self.limits.max_header_bytes)));
            }
            return Ok(());
        };
        if header_len > self.limits.max_header_bytes {
            return Err(ProcessingError::Unexpected(format!("header block over {} bytes", self.limits.max_header_bytes)));
        }
        let headers = mime::parse_header_block(&self.head[..header_len], &self.limits)?;
        let cte = mime::get(&headers, "content-transfer-encoding").unwrap_or("binary").trim().to_ascii_lowercase();
        self.decoder = match cte.as_str() {
            "binary" | "8bit" | "7bit" | "" => Transfer::Identity,
            "base64" => Transfer::Base64(Base64::default()),
            other => return Err(ProcessingError::Unexpected(format!("transfer encoding {other} is not supported for a large message"))),
        };
        self.headers = Some(headers);
        let rest = self.head.split_off(body_start);
        self.head = Vec::new();
        self.body(&rest, out)
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), ProcessingError> {
        if self.headers.is_none() {
            return Err(ProcessingError::Unexpected("the entity ended inside its header block".into()));
        }
        match &mut self.decoder {
            Transfer::Identity => Ok(()),
            Transfer::Base64(b) => b.finish(out),
        }
    }
}

/// Base64 across chunk edges: whitespace skipped, four characters at a time, padding only at
/// the end (a missing one tolerated).
#[derive(Default)]
pub struct Base64 {
    pending: Vec<u8>,
    ended: bool,
}

impl Base64 {
    fn decode(quads: &[u8], out: &mut Vec<u8>) -> Result<(), ProcessingError> {
        use base64::engine::{general_purpose::GeneralPurpose, DecodePaddingMode, GeneralPurposeConfig};
        use base64::Engine;
        const LENIENT: GeneralPurpose = GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent).with_decode_allow_trailing_bits(true),
        );
        LENIENT.decode_vec(quads, out).map_err(|e| ProcessingError::Unexpected(format!("bad base64: {e}")))
    }
}

impl Codec for Base64 {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), ProcessingError> {
        self.pending.extend(input.iter().copied().filter(|b| !b.is_ascii_whitespace()));
        if self.ended && !self.pending.is_empty() {
            return Err(ProcessingError::Unexpected("bad base64: data after the padding".into()));
        }
        // Keep the last (possibly padded) quad back until more arrives or the input ends.
        let whole = self.pending.len().saturating_sub(1) / 4 * 4;
        if whole == 0 {
            return Ok(());
        }
        let rest = self.pending.split_off(whole);
        let quads = std::mem::replace(&mut self.pending, rest);
        if quads.contains(&b'=') {
            return Err(ProcessingError::Unexpected("bad base64: padding inside the data".into()));
        }
        Self::decode(&quads, out)
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), ProcessingError> {
        let quads = std::mem::take(&mut self.pending);
        self.ended = true;
        if quads.is_empty() {
            return Ok(());
        }
        Self::decode(&quads, out)
    }
}

/// Content as decrypted or decompressed becomes the next entity: kept as it is when it starts
/// with a header block, else given `Content-Type: application/octet-stream` (the rule of
/// [`crate::unwrap::as_entity`], decided on the first `max_header_bytes`).
pub(crate) struct AsEntity {
    limits: MimeLimits,
    deciding: Option<Vec<u8>>,
}

impl AsEntity {
    pub fn new(limits: MimeLimits) -> AsEntity {
        AsEntity { limits, deciding: Some(Vec::new()) }
    }

    fn decide(&mut self, out: &mut Vec<u8>) {
        if let Some(head) = self.deciding.take() {
            out.extend_from_slice(&crate::unwrap::as_entity(head, &self.limits));
        }
    }
}

impl Codec for AsEntity {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), ProcessingError> {
        match &mut self.deciding {
            Some(head) => {
                head.extend_from_slice(input);
                if head.len() > self.limits.max_header_bytes + 2 {
                    self.decide(out);
                }
            }
            None => out.extend_from_slice(input),
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), ProcessingError> {
        self.decide(out);
        Ok(())
    }
}
