//! CompressedData (RFC 3274) inflated as it streams, the output limit applied as it goes.

use super::enveloped::{element_at, header_at, need};
use super::octets::{OctetStream, Outer};
use super::Codec;
use crate::cms::ber::{self, Header, TAG_INTEGER, TAG_OID, TAG_SEQUENCE};
use crate::error::ProcessingError;
use flate2::{Decompress, FlushDecompress, Status};

/// The most output one call produces.
const OUT_STEP: usize = 4 << 20;

const OID_COMPRESSED: &str = "1.2.840.113549.1.9.16.1.9";
const OID_ZLIB: &str = "1.2.840.113549.1.9.16.3.8";

fn err(m: impl std::fmt::Display) -> ProcessingError {
    ProcessingError::Decompression(m.to_string())
}

fn expect(h: &Header, class: u8, tag: u32, what: &str) -> Result<(), ProcessingError> {
    if h.class == class && h.constructed && h.tag == tag { Ok(()) } else { Err(err(format!("{what}: unexpected element (class {} tag {})", h.class, h.tag))) }
}

/// Where the eContent OCTET STRING starts.
fn parse_head(buf: &[u8]) -> Result<Option<usize>, ProcessingError> {
    let ci = need!(header_at(buf, 0), buf);
    expect(&ci, 0, TAG_SEQUENCE, "ContentInfo")?;
    let (oid, mut pos) = need!(element_at(buf, ci.header_len, 1), buf);
    if !oid.is_universal(false, TAG_OID) || ber::oid_to_string(oid.content).map_err(err)? != OID_COMPRESSED {
        return Err(err("expected compressed-data"));
    }
    let explicit = need!(header_at(buf, pos), buf);
    expect(&explicit, 2, 0, "ContentInfo.content")?;
    pos += explicit.header_len;
    let cd = need!(header_at(buf, pos), buf);
    expect(&cd, 0, TAG_SEQUENCE, "CompressedData")?;
    pos += cd.header_len;
    let (version, next) = need!(element_at(buf, pos, 3), buf);
    if !version.is_universal(false, TAG_INTEGER) {
        return Err(err("CompressedData.version is not an INTEGER"));
    }
    let (alg, next) = need!(element_at(buf, next, 3), buf);
    let alg_oid = alg.children(4).require("compressionAlgorithm").map_err(|e| err(e.to_string()))?;
    if ber::oid_to_string(alg_oid.content).map_err(err)? != OID_ZLIB {
        return Err(err("compression other than zlib"));
    }
    let eci = need!(header_at(buf, next), buf);
    expect(&eci, 0, TAG_SEQUENCE, "EncapsulatedContentInfo")?;
    pos = next + eci.header_len;
    pos = need!(element_at(buf, pos, 4), buf).1; // eContentType
    let explicit = need!(header_at(buf, pos), buf);
    expect(&explicit, 2, 0, "eContent")?;
    Ok(Some(pos + explicit.header_len))
}

enum State {
    Head(Vec<u8>),
    Body { octets: OctetStream, zlib: Box<Decompress>, ended: bool },
}

/// The streaming decompressor; output beyond `limit` bytes in all is an error.
pub(crate) struct Decompressor {
    limit: u64,
    state: State,
    backlog: Vec<u8>,
}

impl Decompressor {
    pub fn new(limit: u64) -> Decompressor {
        Decompressor { limit, state: State::Head(Vec::new()), backlog: Vec::new() }
    }

    fn body(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), ProcessingError> {
        let State::Body { octets, zlib, ended } = &mut self.state else { return Ok(()) };
        octets.push(input, &mut self.backlog).map_err(err)?;
        // At most OUT_STEP of output per call (a small input may inflate a thousandfold): the
        // rest of the input waits in the backlog ([`Codec::pending`]).
        let mut used = 0;
        let start = out.len();
        while used < self.backlog.len() && !*ended && out.len() - start < OUT_STEP {
            let at = out.len();
            out.resize(at + 256 * 1024, 0);
            let (i0, o0) = (zlib.total_in(), zlib.total_out());
            let status = zlib.decompress(&self.backlog[used..], &mut out[at..], FlushDecompress::None).map_err(|e| err(format!("bad zlib data: {e}")))?;
            out.truncate(at + (zlib.total_out() - o0) as usize);
            used += (zlib.total_in() - i0) as usize;
            if zlib.total_out() > self.limit {
                return Err(ProcessingError::Decompression(format!("decompressed data exceeds the limit of {} bytes", self.limit)));
            }
            if status == Status::StreamEnd {
                *ended = true;
            }
        }
        self.backlog.drain(..used);
        if *ended {
            self.backlog.clear();
        }
        Ok(())
    }
}

impl Codec for Decompressor {
    fn pending(&self) -> bool {
        !self.backlog.is_empty()
    }

    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), ProcessingError> {
        let State::Head(buf) = &mut self.state else { return self.body(input, out) };
        buf.extend_from_slice(input);
        let Some(at) = parse_head(buf)? else { return Ok(()) };
        let rest = buf.split_off(at);
        self.state = State::Body { octets: OctetStream::new(Outer::OctetString), zlib: Box::new(Decompress::new(true)), ended: false };
        self.body(&rest, out)
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), ProcessingError> {
        while self.pending() {
            self.body(&[], out)?;
        }
        // Whatever zlib holds back.
        if let State::Body { zlib, ended: false, .. } = &mut self.state {
            loop {
                let at = out.len();
                out.resize(at + 256 * 1024, 0);
                let o0 = zlib.total_out();
                let status = zlib.decompress(&[], &mut out[at..], FlushDecompress::Finish).map_err(|e| err(format!("bad zlib data: {e}")))?;
                let produced = (zlib.total_out() - o0) as usize;
                out.truncate(at + produced);
                if zlib.total_out() > self.limit {
                    return Err(ProcessingError::Decompression(format!("decompressed data exceeds the limit of {} bytes", self.limit)));
                }
                if status == Status::StreamEnd {
                    break;
                }
                if produced == 0 {
                    return Err(err("the zlib stream is truncated"));
                }
            }
        }
        match &self.state {
            State::Head(_) => Err(err("the message ended before its compressed content")),
            State::Body { octets, .. } => octets.finish().map_err(err),
        }
    }
}
