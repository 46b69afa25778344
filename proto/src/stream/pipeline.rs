//! The layers as the node opens them: an entity in, the next entity (or the documents) out.

use super::compressed::Decompressor;
use super::entity::{AsEntity, BodyReader};
use super::enveloped::Decrypt;
use super::multipart::{Event, Splitter};
use super::Codec;
use crate::alg::DigestAlg;
use crate::error::ProcessingError;
use crate::mdn::Mic;
use crate::mime::{self, ContentType, Entity, Header, MimeLimits};
use openssl::hash::Hasher;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

/// A running digest that ends as a MIC.
pub(crate) struct MicHasher {
    alg: DigestAlg,
    h: Hasher,
}

impl MicHasher {
    pub fn new(alg: DigestAlg) -> Result<MicHasher, ProcessingError> {
        Ok(MicHasher { alg, h: Hasher::new(alg.message_digest()).map_err(|e| ProcessingError::Unexpected(e.to_string()))? })
    }

    pub fn update(&mut self, d: &[u8]) -> Result<(), ProcessingError> {
        self.h.update(d).map_err(|e| ProcessingError::Unexpected(e.to_string()))
    }

    pub fn mic(&mut self) -> Result<Mic, ProcessingError> {
        use base64::Engine;
        let d = self.h.finish().map_err(|e| ProcessingError::Unexpected(e.to_string()))?;
        Ok(Mic { digest: base64::engine::general_purpose::STANDARD.encode(d), alg: self.alg })
    }
}

/// The inner codec of an entity layer: body decoded, opened, then made the next entity.
struct Layer<C: Codec> {
    body: BodyReader,
    inner: C,
    /// A MIC over what `inner` produced (an encrypted, unsigned message's).
    mic: Option<MicHasher>,
    wrap: AsEntity,
    a: Vec<u8>,
    b: Vec<u8>,
}

impl<C: Codec> Layer<C> {
    fn new(inner: C, mic: Option<DigestAlg>, limits: MimeLimits) -> Result<Layer<C>, ProcessingError> {
        Ok(Layer { body: BodyReader::new(limits), inner, mic: mic.map(MicHasher::new).transpose()?, wrap: AsEntity::new(limits), a: Vec::new(), b: Vec::new() })
    }

    fn pass(&mut self, out: &mut Vec<u8>) -> Result<(), ProcessingError> {
        if let Some(m) = &mut self.mic {
            m.update(&self.b)?;
        }
        self.wrap.push(&self.b, out)
    }
}

impl<C: Codec> Codec for Layer<C> {
    fn pending(&self) -> bool {
        self.inner.pending()
    }

    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), ProcessingError> {
        self.a.clear();
        self.b.clear();
        self.body.push(input, &mut self.a)?;
        self.inner.push(&self.a, &mut self.b)?;
        self.pass(out)
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), ProcessingError> {
        self.a.clear();
        self.b.clear();
        self.body.finish(&mut self.a)?;
        self.inner.push(&self.a, &mut self.b)?;
        self.pass(out)?;
        loop {
            self.b.clear();
            if !self.inner.pending() {
                break;
            }
            self.inner.push(&[], &mut self.b)?;
            self.pass(out)?;
        }
        self.b.clear();
        self.inner.finish(&mut self.b)?;
        self.pass(out)?;
        self.wrap.finish(out)
    }
}

/// An encrypted entity opened as it streams ([`crate::unwrap::decrypt_layer`]'s streaming twin).
pub struct DecryptEntity(Layer<Decrypt>);

impl DecryptEntity {
    /// `mic`: take the MIC over the content as decrypted in this algorithm.
    pub fn new(keys: Vec<(PKey<Private>, X509)>, mic: Option<DigestAlg>, limits: MimeLimits) -> Result<DecryptEntity, ProcessingError> {
        Ok(DecryptEntity(Layer::new(Decrypt::new(keys), mic, limits)?))
    }

    /// After `finish`: the MIC asked for.
    pub fn mic(&mut self) -> Result<Option<Mic>, ProcessingError> {
        self.0.mic.as_mut().map(MicHasher::mic).transpose()
    }
}

/// A compressed entity opened as it streams; more than `max_output` bytes is an error.
pub struct DecompressEntity(Layer<Decompressor>, Option<BodyMic>);

impl DecompressEntity {
    /// `mic`: the MIC over the compressed body as received (an unsigned, unencrypted message's).
    pub fn new(max_output: u64, mic: Option<DigestAlg>, limits: MimeLimits) -> Result<DecompressEntity, ProcessingError> {
        Ok(DecompressEntity(Layer::new(Decompressor::new(max_output), None, limits)?, mic.map(BodyMic::new).transpose()?))
    }

    /// After `finish`: the MIC asked for.
    pub fn mic(&mut self) -> Result<Option<Mic>, ProcessingError> {
        self.1.as_mut().map(BodyMic::mic).transpose()
    }
}

impl Codec for DecompressEntity {
    fn pending(&self) -> bool {
        self.0.pending()
    }
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), ProcessingError> {
        if let Some(m) = &mut self.1 {
            m.update(input)?;
        }
        self.0.push(input, out)
    }
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), ProcessingError> {
        self.0.finish(out)
    }
}

impl Codec for DecryptEntity {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), ProcessingError> {
        self.0.push(input, out)
    }
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), ProcessingError> {
        self.0.finish(out)
    }
}

/// One document of the payload entity, as far as its headers tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentHead {
    pub filename: Option<String>,
    pub content_type: String,
    /// The Content-Disposition `name` (a form field's name in multipart/form-data).
    pub name: Option<String>,
    /// The Content-Type field as written, parameters included (None: the part has none).
    pub content_type_field: Option<String>,
}

fn head_of(headers: &[Header]) -> DocumentHead {
    let e = Entity::with_headers(headers.to_vec(), &[]);
    let name = e.header("content-disposition").and_then(|v| {
        let cd = ContentType::parse(&format!("x/x; {}", v.split_once(';').map(|(_, p)| p).unwrap_or("")));
        cd.param("name").map(str::to_string)
    });
    let content_type_field = e.header("content-type").map(|v| v.trim().to_string());
    DocumentHead { filename: e.filename(), content_type: e.content_type().mime, name, content_type_field }
}

/// The payload entity split into its documents as it streams ([`crate::unwrap::documents`]'s
/// streaming twin): one, or each part of a multipart/related or multipart/mixed. The decoded
/// bytes of document `i` come out as `(i, bytes)` pieces, in order.
pub struct Documents {
    limits: MimeLimits,
    top: BodyReader,
    splitter: Option<Splitter>,
    single: bool,
    /// The part being read: its header and body reader.
    part: Option<(usize, BodyReader)>,
    heads: Vec<DocumentHead>,
    body: Vec<u8>,
}

impl Documents {
    pub fn new(limits: MimeLimits) -> Documents {
        Documents { limits, top: BodyReader::new(limits), splitter: None, single: false, part: None, heads: Vec::new(), body: Vec::new() }
    }

    /// The documents whose headers have been read, in order.
    pub fn heads(&self) -> &[DocumentHead] {
        &self.heads
    }

    fn decide(&mut self) -> Result<bool, ProcessingError> {
        if self.single || self.splitter.is_some() {
            return Ok(true);
        }
        let Some(headers) = self.top.headers() else { return Ok(false) };
        let ct = ContentType::parse(mime::get(headers, "content-type").unwrap_or("text/plain"));
        if ct.is("multipart/related") || ct.is("multipart/mixed") {
            self.splitter = Some(Splitter::new(ct.param("boundary").unwrap_or(""), &self.limits)?);
        } else if ct.mime.starts_with("multipart/") && !ct.is("multipart/report") {
            return Err(ProcessingError::Unexpected(format!("unsupported payload type {}", ct.mime)));
        } else {
            self.heads.push(head_of(headers));
            self.single = true;
        }
        Ok(true)
    }

    fn parts(&mut self, body: &[u8], end: bool, out: &mut Vec<(usize, Vec<u8>)>) -> Result<(), ProcessingError> {
        if self.single {
            if !body.is_empty() {
                out.push((0, body.to_vec()));
            }
            return Ok(());
        }
        let Some(splitter) = self.splitter.as_mut() else { return Ok(()) };
        let (limits, part, heads) = (self.limits, &mut self.part, &mut self.heads);
        let mut on = |ev: Event<'_>| -> Result<(), ProcessingError> {
            let n = match ev {
                Event::Data(n, _) | Event::End(n) => n,
            };
            if part.as_ref().is_none_or(|(i, _)| *i != n) {
                *part = Some((n, BodyReader::new(limits)));
            }
            let Some((_, reader)) = part.as_mut() else { return Ok(()) };
            let known = reader.headers().is_some();
            let mut data = Vec::new();
            match ev {
                Event::Data(_, d) => reader.push(d, &mut data)?,
                Event::End(_) => reader.finish(&mut data)?,
            }
            if !known && let Some(h) = reader.headers() {
                let head = head_of(h);
                if head.content_type.starts_with("multipart/") {
                    return Err(ProcessingError::Unexpected("nested multipart inside multipart/related".into()));
                }
                if head.content_type.contains("pkcs7") {
                    return Err(ProcessingError::Unexpected(format!("a {} part inside multipart/related", head.content_type)));
                }
                heads.push(head);
            }
            if !data.is_empty() {
                out.push((n, data));
            }
            Ok(())
        };
        if end { splitter.finish(&mut on) } else { splitter.push(body, &mut on) }
    }

    /// Feed the payload entity; decoded document bytes are appended to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<(usize, Vec<u8>)>) -> Result<(), ProcessingError> {
        let mut body = std::mem::take(&mut self.body);
        body.clear();
        self.top.push(input, &mut body)?;
        let r = if self.decide()? { self.parts(&body, false, out) } else { Ok(()) };
        self.body = body;
        r
    }

    pub fn finish(&mut self, out: &mut Vec<(usize, Vec<u8>)>) -> Result<(), ProcessingError> {
        let mut body = Vec::new();
        self.top.finish(&mut body)?;
        if !self.decide()? {
            return Err(ProcessingError::Unexpected("the payload ended in its header block".into()));
        }
        self.parts(&body, false, out)?;
        if !self.single {
            self.parts(&[], true, out)?;
        }
        if self.heads.is_empty() {
            return Err(ProcessingError::Unexpected("multipart/related without documents".into()));
        }
        Ok(())
    }
}

/// The MIC over an entity's body as received (the first entity of an unsigned, unencrypted
/// message: [`crate::unwrap::mic::content_mic`] as it streams).
pub struct BodyMic {
    head: Option<Vec<u8>>,
    h: MicHasher,
}

impl BodyMic {
    pub fn new(alg: DigestAlg) -> Result<BodyMic, ProcessingError> {
        Ok(BodyMic { head: Some(Vec::new()), h: MicHasher::new(alg)? })
    }

    pub fn update(&mut self, input: &[u8]) -> Result<(), ProcessingError> {
        let Some(head) = self.head.as_mut() else { return self.h.update(input) };
        head.extend_from_slice(input);
        if let Some((_, body_start)) = mime::header_end(head) {
            let rest = head.split_off(body_start);
            self.head = None;
            self.h.update(&rest)?;
        } else if head.len() > mime::MimeLimits::default().max_header_bytes + 2 {
            // Not a header block after all: the whole entity, as content_mic does.
            let all = std::mem::take(head);
            self.head = None;
            self.h.update(&all)?;
        }
        Ok(())
    }

    pub fn mic(&mut self) -> Result<Mic, ProcessingError> {
        if let Some(all) = self.head.take() {
            // No header block: the whole entity, as content_mic does.
            self.h.update(&all)?;
        }
        self.h.mic()
    }
}
