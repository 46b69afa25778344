//! [`build`](super::build) for documents too large to hold: the same layers, headers and MIC,
//! with the documents' bytes left where the node keeps them.
//!
//! Sans-IO like the rest of the crate. The builder says what to read next ([`BuildStep::Pass`]:
//! pieces of bytes it built and of sources; the documents are sources `0..n`); the node feeds
//! those bytes to [`StreamBuilder::push`] a chunk at a time, keeps what `push` and `finish`
//! produce when the pass `stores` (that output is the next source, numbered in order after the
//! documents), and calls [`StreamBuilder::finish`]. [`BuildStep::Done`] describes the body to send
//! as pieces again, with its length for Content-Length.
//!
//! The passes, each only when the agreement asks for its layer:
//! - several documents: their bytes are scanned for a multipart/related boundary that occurs in
//!   none of them;
//! - compression (before or after signing): the entity is deflated into a new source; the DER
//!   around it is written once its length is known (definite lengths, as `build` writes them);
//! - signing: the entity is hashed once (OpenSSL signs at the end, the MIC is taken on the
//!   way) and scanned for the multipart/signed boundary; the signature is small and kept here;
//! - encryption: the entity goes through OpenSSL into a new source, an EnvelopedData (or
//!   AuthEnvelopedData) in indefinite-length BER with the content in chunks;
//! - an unsigned message that is not encrypted takes one more pass for its MIC.
//!
//! An unsigned message takes one more pass over its payload entity for the MICs over the other
//! bases receivers return (`build`'s `mic_alternatives`, the same ones).

use std::collections::BTreeSet;

use flate2::{Compress, FlushCompress, Status};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use super::entity::{document_headers, header_block, related_headers};
use super::layers::{compressed_headers, enveloped_headers, signed_delimiters, signed_headers};
use super::validate::invalid;
use super::{checked, http_headers, sign_options, Compression, OutboundError, OutboundIds, OutboundOptions};
use crate::alg::{ContentCipher, DigestAlg};
use crate::cms::{self, CmsError, DetachedSigner, Encryptor};
use crate::mdn::Mic;
use crate::mime::ContentType;
use crate::stream::pipeline::MicHasher;
use crate::unwrap::mic::{AltMic, MicBasis};

/// A document the node holds (source number = its position).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDocument {
    pub filename: String,
    pub content_type: String,
    pub len: u64,
}

/// Part of an entity: bytes built here, or all of a source's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Bytes(Vec<u8>),
    Source(usize),
}

/// A message ready to send, its body in pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamBuilt {
    /// As [`super::Built::headers`].
    pub headers: Vec<(String, String)>,
    pub body: Vec<Piece>,
    /// The body's length in bytes.
    pub len: u64,
    pub mic: Mic,
    /// As [`super::Built::mic_alternatives`]: for an unsigned message, the MICs over the other
    /// bases receivers return.
    pub mic_alternatives: Vec<AltMic>,
    pub message_id: String,
}

/// What the node does next.
#[derive(Debug)]
pub enum BuildStep {
    /// Read these pieces in order through `push`, then call `finish`; when `stores`, what they
    /// produce is the next source.
    Pass { pieces: Vec<Piece>, stores: bool },
    Done(StreamBuilt),
}

#[derive(Clone)]
struct Entity {
    headers: Vec<(&'static str, String)>,
    body: Vec<Piece>,
}

impl Entity {
    fn pieces(&self) -> Vec<Piece> {
        let mut p = vec![Piece::Bytes(header_block(&self.headers, 0))];
        p.extend(self.body.iter().cloned());
        p
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Payload,
    PayloadMics,
    CompressBeforeSigning,
    Sign,
    CompressAfterSigning,
    Encrypt,
    Mic,
    Done,
}

enum Running {
    Idle,
    Scan(BoundaryScan),
    Deflate(Box<Compress>),
    Sign { signer: DetachedSigner, digest: DigestAlg, mic: MicHasher, scan: BoundaryScan },
    Encrypt { enc: Encryptor, cipher: ContentCipher, taps: Vec<Tap> },
    Taps(Vec<Tap>),
}

/// Builds one message pass by pass (see the module documentation).
pub struct StreamBuilder {
    from: String,
    to: String,
    opts: OutboundOptions,
    signing: Option<(DigestAlg, PKey<Private>, X509)>,
    encryption: Option<(ContentCipher, X509)>,
    message_id: String,
    seed: String,
    date: String,
    subject: String,
    docs: Vec<StreamDocument>,
    /// The length of every source so far.
    lens: Vec<u64>,
    stage: Stage,
    running: Running,
    /// Bytes the running pass produced.
    produced: u64,
    current: Option<Entity>,
    mic: Option<Mic>,
    /// An unsigned message's digests per MIC basis (in each algorithm of [`Self::mic_algs`]).
    bases: Vec<(MicBasis, Vec<Mic>)>,
}

fn hash_err(e: crate::error::ProcessingError) -> OutboundError {
    OutboundError::Cms(CmsError::Openssl(e.to_string()))
}

impl StreamBuilder {
    /// Checks everything `build` checks, before any byte is read.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        from_as2: &str,
        to_as2: &str,
        docs: Vec<StreamDocument>,
        opts: &OutboundOptions,
        signer: Option<(&PKey<Private>, &X509)>,
        recipient: Option<&X509>,
        ids: &OutboundIds<'_>,
        subject: &str,
    ) -> Result<StreamBuilder, OutboundError> {
        let (signing, encryption) = checked(from_as2, to_as2, opts, signer, recipient, ids)?;
        if docs.is_empty() {
            return Err(OutboundError::NoDocuments);
        }
        for d in &docs {
            document_headers(&d.filename, &d.content_type)?;
        }
        Ok(StreamBuilder {
            from: from_as2.to_string(),
            to: to_as2.to_string(),
            opts: opts.clone(),
            signing: signing.map(|(d, k, c)| (d, k.clone(), c.clone())),
            encryption: encryption.map(|(c, x)| (c, x.clone())),
            message_id: ids.message_id.to_string(),
            seed: ids.boundary_seed.to_string(),
            date: ids.date.to_string(),
            subject: subject.to_string(),
            lens: docs.iter().map(|d| d.len).collect(),
            docs,
            stage: Stage::Payload,
            running: Running::Idle,
            produced: 0,
            current: None,
            mic: None,
            bases: Vec::new(),
        })
    }

    /// The next pass, or the message. Call first, then after the `finish` of each pass.
    pub fn next_step(&mut self) -> Result<BuildStep, OutboundError> {
        if !matches!(self.running, Running::Idle) {
            return Err(invalid("stream", "the running pass is not finished"));
        }
        self.produced = 0;
        loop {
            let stage = self.stage;
            match stage {
                Stage::Payload => {
                    self.stage = Stage::PayloadMics;
                    if self.docs.len() > 1 {
                        self.running = Running::Scan(BoundaryScan::new("Rel", &self.seed));
                        let pieces = (0..self.docs.len()).map(Piece::Source).collect();
                        return Ok(BuildStep::Pass { pieces, stores: false });
                    }
                    let d = &self.docs[0];
                    self.current = Some(Entity { headers: document_headers(&d.filename, &d.content_type)?, body: vec![Piece::Source(0)] });
                }
                Stage::PayloadMics => {
                    self.stage = Stage::CompressBeforeSigning;
                    if self.signing.is_none() {
                        // The bases other receivers use for an unsigned message: the payload
                        // entity (as is, and with CRLF line ends when it is text), the document.
                        let entity = self.entity()?;
                        let head = header_block(&entity.headers, 0).len() as u64;
                        let text = self.docs.len() == 1 && ContentType::parse(&self.docs[0].content_type).mime.starts_with("text/");
                        let mut taps = vec![self.tap(MicBasis::PayloadEntity, 0, false)?];
                        if text {
                            taps.push(self.tap(MicBasis::PayloadEntityCrlf, 0, true)?);
                        }
                        if self.docs.len() == 1 {
                            taps.push(self.tap(MicBasis::Document, head, false)?);
                        }
                        let pieces = entity.pieces();
                        self.running = Running::Taps(taps);
                        return Ok(BuildStep::Pass { pieces, stores: false });
                    }
                }
                Stage::CompressBeforeSigning | Stage::CompressAfterSigning => {
                    let (when, next) = if stage == Stage::CompressBeforeSigning { (Compression::BeforeSigning, Stage::Sign) } else { (Compression::AfterSigning, Stage::Encrypt) };
                    self.stage = next;
                    if self.opts.compression == when {
                        self.running = Running::Deflate(Box::new(Compress::new(flate2::Compression::default(), true)));
                        return Ok(BuildStep::Pass { pieces: self.entity()?.pieces(), stores: true });
                    }
                }
                Stage::Sign => {
                    self.stage = Stage::CompressAfterSigning;
                    if let Some((digest, key, cert)) = &self.signing {
                        let signer = DetachedSigner::new(key, cert, *digest, &sign_options(&self.opts))?;
                        let mic = MicHasher::new(*digest).map_err(hash_err)?;
                        self.running = Running::Sign { signer, digest: *digest, mic, scan: BoundaryScan::new("Sig", &self.seed) };
                        return Ok(BuildStep::Pass { pieces: self.entity()?.pieces(), stores: false });
                    }
                }
                Stage::Encrypt => {
                    self.stage = Stage::Mic;
                    if let Some((cipher, cert)) = &self.encryption {
                        let enc = Encryptor::new(cert, *cipher, self.opts.key_transport)?;
                        // Unsigned: the MIC is over the entity we encrypt.
                        let taps = if self.mic.is_none() { vec![self.tap(MicBasis::Rfc4130, 0, false)?] } else { Vec::new() };
                        self.running = Running::Encrypt { enc, cipher: *cipher, taps };
                        return Ok(BuildStep::Pass { pieces: self.entity()?.pieces(), stores: true });
                    }
                }
                Stage::Mic => {
                    self.stage = Stage::Done;
                    if self.mic.is_none() {
                        // Unsigned and not encrypted: the MIC is over the body we send; the
                        // entity as sent, headers included, is another receivers' basis.
                        let entity = self.entity()?;
                        let head = header_block(&entity.headers, 0).len() as u64;
                        let pieces = entity.pieces();
                        self.running = Running::Taps(vec![self.tap(MicBasis::Rfc4130, head, false)?, self.tap(MicBasis::SentEntity, 0, false)?]);
                        return Ok(BuildStep::Pass { pieces, stores: false });
                    }
                }
                Stage::Done => return self.done().map(BuildStep::Done),
            }
        }
    }

    /// Bytes of the running pass; what the pass produces is appended to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), OutboundError> {
        let before = out.len();
        match &mut self.running {
            Running::Idle => return Err(invalid("stream", "no pass is running")),
            Running::Scan(s) => s.push(input),
            Running::Deflate(z) => deflate(z, input, out, false)?,
            Running::Sign { signer, mic, scan, .. } => {
                signer.update(input)?;
                mic.update(input).map_err(hash_err)?;
                scan.push(input);
            }
            Running::Encrypt { enc, taps, .. } => {
                for t in taps.iter_mut() {
                    t.feed(input)?;
                }
                enc.push(input, out)?;
            }
            Running::Taps(taps) => {
                for t in taps.iter_mut() {
                    t.feed(input)?;
                }
            }
        }
        self.produced += (out.len() - before) as u64;
        Ok(())
    }

    /// The running pass's input ended: its last output is appended to `out`.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), OutboundError> {
        let before = out.len();
        match std::mem::replace(&mut self.running, Running::Idle) {
            Running::Idle => return Err(invalid("stream", "no pass is running")),
            Running::Scan(mut s) => {
                s.finish();
                let b = s.choose()?;
                let mut body = Vec::new();
                for (i, d) in self.docs.iter().enumerate() {
                    let mut head = format!("--{b}\r\n").into_bytes();
                    head.extend_from_slice(&header_block(&document_headers(&d.filename, &d.content_type)?, 0));
                    body.push(Piece::Bytes(head));
                    body.push(Piece::Source(i));
                    body.push(Piece::Bytes(b"\r\n".to_vec()));
                }
                body.push(Piece::Bytes(format!("--{b}--\r\n").into_bytes()));
                self.current = Some(Entity { headers: related_headers(&b, &self.docs[0].content_type), body });
            }
            Running::Deflate(mut z) => {
                deflate(&mut z, &[], out, true)?;
                let len = self.produced + (out.len() - before) as u64;
                let source = self.stored(len);
                self.current = Some(Entity { headers: compressed_headers(), body: vec![Piece::Bytes(cms::compressed_prefix(len)), Piece::Source(source)] });
            }
            Running::Sign { signer, digest, mut mic, mut scan } => {
                scan.finish();
                let b = scan.choose()?;
                let sig = signer.finish()?;
                self.mic = Some(mic.mic().map_err(hash_err)?);
                let inner = self.current.take().ok_or_else(|| invalid("stream", "nothing to sign"))?;
                let (open, close) = signed_delimiters(&b, &sig);
                let mut body = vec![Piece::Bytes(open)];
                body.extend(inner.pieces());
                body.push(Piece::Bytes(close));
                self.current = Some(Entity { headers: signed_headers(&b, digest), body });
            }
            Running::Encrypt { mut enc, cipher, taps } => {
                enc.finish(out)?;
                let len = self.produced + (out.len() - before) as u64;
                let source = self.stored(len);
                self.tapped(taps)?;
                self.current = Some(Entity { headers: enveloped_headers(cipher), body: vec![Piece::Source(source)] });
            }
            Running::Taps(taps) => self.tapped(taps)?,
        }
        Ok(())
    }

    fn stored(&mut self, len: u64) -> usize {
        self.lens.push(len);
        self.lens.len() - 1
    }

    fn entity(&self) -> Result<&Entity, OutboundError> {
        self.current.as_ref().ok_or_else(|| invalid("stream", "no payload entity"))
    }

    fn unsigned_mic_alg(&self) -> DigestAlg {
        self.opts.mdn.signed().unwrap_or(self.opts.mic_alg_when_unsigned)
    }

    /// The algorithms an unsigned message's MICs are taken in: the expected one, then sha1
    /// and sha256 (as `unwrap::mic::expected_unsigned` lists them).
    fn mic_algs(&self) -> Vec<DigestAlg> {
        let mut algs = vec![self.unsigned_mic_alg()];
        for a in [DigestAlg::Sha1, DigestAlg::Sha256] {
            if !algs.contains(&a) {
                algs.push(a);
            }
        }
        algs
    }

    fn tap(&self, basis: MicBasis, skip: u64, crlf: bool) -> Result<Tap, OutboundError> {
        let hashers = self.mic_algs().into_iter().map(MicHasher::new).collect::<Result<_, _>>().map_err(hash_err)?;
        Ok(Tap { basis, skip, crlf, prev: 0, hashers })
    }

    /// A pass's taps are complete: the RFC 4130 one is the MIC, all are bases.
    fn tapped(&mut self, taps: Vec<Tap>) -> Result<(), OutboundError> {
        for mut t in taps {
            let mics = t.hashers.iter_mut().map(|h| h.mic()).collect::<Result<Vec<_>, _>>().map_err(hash_err)?;
            if t.basis == MicBasis::Rfc4130 {
                self.mic = mics.first().cloned();
            }
            self.bases.push((t.basis, mics));
        }
        Ok(())
    }

    /// [`unwrap::mic::expected_unsigned`]'s alternatives from the digests the passes took.
    fn alternatives(&self) -> Vec<AltMic> {
        let order = [MicBasis::Rfc4130, MicBasis::PayloadEntity, MicBasis::PayloadEntityCrlf, MicBasis::Document, MicBasis::SentEntity];
        let alg = self.unsigned_mic_alg();
        let requested = self.opts.mdn.signed().is_some();
        let mut seen: Vec<&Vec<Mic>> = Vec::new();
        let mut out = Vec::new();
        for basis in order {
            let Some((_, mics)) = self.bases.iter().find(|(b, _)| *b == basis) else { continue };
            // Two bases over the same bytes are one.
            if seen.contains(&mics) {
                continue;
            }
            seen.push(mics);
            for m in mics {
                if basis == MicBasis::Rfc4130 && m.alg == alg {
                    continue;
                }
                out.push(AltMic { basis, mic: m.clone(), standard: basis == MicBasis::Rfc4130 && !requested });
            }
        }
        out
    }

    fn done(&mut self) -> Result<StreamBuilt, OutboundError> {
        let current = self.current.take().ok_or_else(|| invalid("stream", "already built"))?;
        let mic = self.mic.take().ok_or_else(|| invalid("stream", "no MIC"))?;
        let ids = OutboundIds { message_id: &self.message_id, boundary_seed: &self.seed, date: &self.date };
        let mut headers = http_headers(&self.from, &self.opts, &ids, &self.subject, &self.to, &mic)?;
        headers.extend(current.headers.into_iter().map(|(n, v)| (n.to_string(), v)));
        let len = current
            .body
            .iter()
            .map(|p| match p {
                Piece::Bytes(b) => b.len() as u64,
                Piece::Source(i) => self.lens[*i],
            })
            .sum();
        let mic_alternatives = if self.signing.is_none() { self.alternatives() } else { Vec::new() };
        Ok(StreamBuilt { headers, body: current.body, len, mic, mic_alternatives, message_id: self.message_id.clone() })
    }
}

/// Digests of one MIC basis, in several algorithms, over the pass's bytes after the first
/// `skip` (a header block), with bare LFs made CRLF when `crlf` (as `mime::canonicalize_crlf`).
struct Tap {
    basis: MicBasis,
    skip: u64,
    crlf: bool,
    /// The last byte fed (CRLF canonicalization across chunk edges).
    prev: u8,
    hashers: Vec<MicHasher>,
}

impl Tap {
    fn feed(&mut self, input: &[u8]) -> Result<(), OutboundError> {
        let skipped = (self.skip.min(input.len() as u64)) as usize;
        self.skip -= skipped as u64;
        let input = &input[skipped..];
        if input.is_empty() {
            return Ok(());
        }
        let canonical;
        let bytes = if self.crlf {
            let mut out = Vec::with_capacity(input.len() + input.len() / 32);
            for &b in input {
                if b == b'\n' && self.prev != b'\r' {
                    out.push(b'\r');
                }
                out.push(b);
                self.prev = b;
            }
            canonical = out;
            &canonical[..]
        } else {
            input
        };
        for h in &mut self.hashers {
            h.update(bytes).map_err(hash_err)?;
        }
        Ok(())
    }
}

/// Deflates `input` into `out` (all of it; `end`: and the end of the zlib stream).
fn deflate(z: &mut Compress, mut input: &[u8], out: &mut Vec<u8>, end: bool) -> Result<(), OutboundError> {
    let flush = if end { FlushCompress::Finish } else { FlushCompress::None };
    loop {
        if out.capacity() - out.len() < 16 * 1024 {
            out.reserve(64 * 1024);
        }
        let before = z.total_in();
        let status = z.compress_vec(input, out, flush).map_err(|e| OutboundError::Cms(CmsError::Openssl(format!("zlib: {e}"))))?;
        input = &input[(z.total_in() - before) as usize..];
        let finished = if end { status == Status::StreamEnd } else { input.is_empty() };
        if finished {
            return Ok(());
        }
    }
}

/// How many bytes after an occurrence of the boundary prefix are kept: enough for `.999`.
const FOLLOW: usize = 8;
/// Distinct continuations kept before the scan gives up (content built to defeat it).
const MAX_FOLLOWERS: usize = 4096;

/// Finds, across chunk edges, every place the base delimiter `------=_{kind}_{seed}` occurs
/// and what follows it, so that the first boundary of the `build` sequence (base, base.1,
/// base.2, ...) that occurs nowhere can be chosen after one pass.
struct BoundaryScan {
    base: String,
    pattern: Vec<u8>,
    carry: Vec<u8>,
    followers: BTreeSet<Vec<u8>>,
    overflow: bool,
}

impl BoundaryScan {
    fn new(kind: &str, seed: &str) -> BoundaryScan {
        let base = format!("----=_{kind}_{seed}");
        let pattern = format!("--{base}").into_bytes();
        BoundaryScan { base, pattern, carry: Vec::new(), followers: BTreeSet::new(), overflow: false }
    }

    fn keep(&self) -> usize {
        self.pattern.len() + FOLLOW - 1
    }

    fn note(&mut self, follower: &[u8]) {
        if self.followers.len() >= MAX_FOLLOWERS {
            self.overflow = true;
        } else {
            self.followers.insert(follower.to_vec());
        }
    }

    /// Occurrences starting before `settled` (global to carry + input) have all their follower
    /// bytes at hand and are noted now; later ones are in the new carry and noted next time.
    fn push(&mut self, input: &[u8]) {
        let (keep, pl) = (self.keep(), self.pattern.len());
        let total = self.carry.len() + input.len();
        let settled = total.saturating_sub(keep);
        let carried = self.carry.len();
        // Occurrences that start in the carry (they may end in the input).
        let mut edge = std::mem::take(&mut self.carry);
        edge.extend_from_slice(&input[..input.len().min(keep)]);
        let finder = memchr::memmem::Finder::new(&self.pattern).into_owned();
        for p in finder.find_iter(&edge) {
            if p >= carried || p >= settled {
                break;
            }
            let follower = edge[p + pl..(p + pl + FOLLOW).min(edge.len())].to_vec();
            self.note(&follower);
        }
        for q in finder.find_iter(input) {
            if carried + q >= settled {
                break;
            }
            self.note(&input[q + pl..q + pl + FOLLOW]);
        }
        self.carry = if input.len() >= keep {
            input[input.len() - keep..].to_vec()
        } else {
            edge[edge.len().saturating_sub(keep)..].to_vec()
        };
    }

    fn finish(&mut self) {
        let pl = self.pattern.len();
        let window = std::mem::take(&mut self.carry);
        let found: Vec<usize> = memchr::memmem::find_iter(&window, &self.pattern).collect();
        for p in found {
            self.note(&window[p + pl..(p + pl + FOLLOW).min(window.len())]);
        }
    }

    fn choose(&self) -> Result<String, OutboundError> {
        if !self.overflow {
            for n in 0..1000u32 {
                let suffix = if n == 0 { String::new() } else { format!(".{n}") };
                if !self.followers.iter().any(|f| f.starts_with(suffix.as_bytes())) {
                    return Ok(format!("{}{suffix}", self.base));
                }
            }
        }
        Err(invalid("boundary_seed", "every boundary derived from it occurs in the content"))
    }
}

#[cfg(test)]
mod tests {
    use super::BoundaryScan;

    fn scan(chunks: &[&[u8]]) -> String {
        let mut s = BoundaryScan::new("Rel", "s");
        for c in chunks {
            s.push(c);
        }
        s.finish();
        s.choose().unwrap()
    }

    #[test]
    fn boundary_scan_chooses_as_build_does_across_chunk_edges() {
        let content: &[u8] = b"a\r\n------=_Rel_s\r\nxx------=_Rel_s.1z------=_Rel_s.10";
        for cut in 1..content.len() {
            let (a, b) = content.split_at(cut);
            assert_eq!(scan(&[a, b]), "----=_Rel_s.2", "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = content.chunks(1).collect();
        assert_eq!(scan(&bytes), "----=_Rel_s.2");
        assert_eq!(scan(&[b"nothing here"]), "----=_Rel_s");
        assert_eq!(scan(&[b"ends with ------=_Rel_s"]), "----=_Rel_s.1");
    }
}
