//! A small, bounded BER reader: definite and indefinite lengths, low and high tag numbers.
//! Recursion happens only to find the end of indefinite-length elements, and never deeper than
//! [`ber::MAX_DEPTH`]; a definite length is never trusted beyond the bytes actually present.

pub(crate) const MAX_DEPTH: usize = 24;
pub(crate) const TAG_INTEGER: u32 = 2;
pub(crate) const TAG_OCTET_STRING: u32 = 4;
pub(crate) const TAG_OID: u32 = 6;
pub(crate) const TAG_SEQUENCE: u32 = 16;
pub(crate) const TAG_SET: u32 = 17;

/// An element's identifier and length, as read from its header.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub class: u8,
    pub constructed: bool,
    pub tag: u32,
    /// `None` for an indefinite length.
    pub len: Option<usize>,
    pub header_len: usize,
}

impl Header {
    pub(crate) fn is_universal(&self, constructed: bool, tag: u32) -> bool {
        self.class == 0 && self.constructed == constructed && self.tag == tag
    }
}

/// A complete element; `content` excludes the end-of-contents octets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tlv<'a> {
    pub class: u8,
    pub constructed: bool,
    pub tag: u32,
    pub content: &'a [u8],
}

impl<'a> Tlv<'a> {
    pub(crate) fn is_universal(&self, constructed: bool, tag: u32) -> bool {
        self.class == 0 && self.constructed == constructed && self.tag == tag
    }

    pub(crate) fn is_context(&self, constructed: bool, tag: u32) -> bool {
        self.class == 2 && self.constructed == constructed && self.tag == tag
    }

    /// The elements inside a constructed element, read at `depth`.
    pub fn children(&self, depth: usize) -> Children<'a> {
        Children {
            rest: self.content,
            depth,
        }
    }
}

pub(crate) struct Children<'a> {
    rest: &'a [u8],
    depth: usize,
}

impl<'a> Children<'a> {
    pub fn next(&mut self) -> Result<Option<Tlv<'a>>, String> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let (tlv, rest) = read(self.rest, self.depth)?;
        self.rest = rest;
        Ok(Some(tlv))
    }

    /// The next element, which must be there.
    pub fn require(&mut self, what: &str) -> Result<Tlv<'a>, super::CmsError> {
        self.next()
            .map_err(super::CmsError::Malformed)?
            .ok_or_else(|| super::CmsError::Malformed(format!("{what} missing")))
    }
}

pub(crate) fn read_header(input: &[u8]) -> Result<Header, String> {
    let h = read_header_prefix(input)?.ok_or("truncated header")?;
    if let Some(n) = h.len
        && n > input.len().saturating_sub(h.header_len)
    {
        return Err("length beyond input".into());
    }
    Ok(h)
}

/// The header at the start of `input`, which may hold only a prefix of the element (a stream
/// read so far): `None` when the header itself is not complete yet. The length is not checked
/// against the input.
pub(crate) fn read_header_prefix(input: &[u8]) -> Result<Option<Header>, String> {
    let mut pos = 0usize;
    let mut byte = || -> Option<u8> {
        let b = *input.get(pos)?;
        pos += 1;
        Some(b)
    };
    let Some(b0) = byte() else { return Ok(None) };
    let class = b0 >> 6;
    let constructed = b0 & 0x20 != 0;
    let mut tag = u32::from(b0 & 0x1f);
    if tag == 0x1f {
        tag = 0;
        let mut n = 0;
        loop {
            let Some(b) = byte() else { return Ok(None) };
            n += 1;
            if n > 4 {
                return Err("tag number too large".into());
            }
            tag = (tag << 7) | u32::from(b & 0x7f);
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    let Some(lb) = byte() else { return Ok(None) };
    let len = match lb {
        0..=0x7f => Some(usize::from(lb)),
        0x80 => {
            if !constructed {
                return Err("indefinite length on a primitive element".into());
            }
            None
        }
        0xff => return Err("reserved length octet".into()),
        _ => {
            let n = usize::from(lb & 0x7f);
            if n > 8 {
                return Err("length too large".into());
            }
            let mut v: u64 = 0;
            for _ in 0..n {
                let Some(b) = byte() else { return Ok(None) };
                v = (v << 8) | u64::from(b);
            }
            Some(usize::try_from(v).map_err(|_| "length too large".to_string())?)
        }
    };
    let header_len = pos;
    Ok(Some(Header {
        class,
        constructed,
        tag,
        len,
        header_len,
    }))
}

/// Reads one complete element from the start of `input`; returns it and what follows.
pub fn read(input: &[u8], depth: usize) -> Result<(Tlv<'_>, &[u8]), String> {
    if depth > MAX_DEPTH {
        return Err("nesting too deep".into());
    }
    let h = read_header(input)?;
    let rest = input.get(h.header_len..).ok_or("truncated")?;
    let (content, after) = match h.len {
        Some(n) => {
            if n > rest.len() {
                return Err("length beyond input".into());
            }
            rest.split_at(n)
        }
        None => {
            // Indefinite: children up to the end-of-contents octets 00 00.
            let mut cur = rest;
            loop {
                if let [0, 0, after @ ..] = cur {
                    let used = rest.len() - cur.len();
                    break (&rest[..used], after);
                }
                if cur.is_empty() {
                    return Err("missing end-of-contents".into());
                }
                let (_, next) = read(cur, depth + 1)?;
                cur = next;
            }
        }
    };
    Ok((
        Tlv {
            class: h.class,
            constructed: h.constructed,
            tag: h.tag,
            content,
        },
        after,
    ))
}

/// Collects the pieces of an OCTET STRING, primitive or constructed (chunked, nested).
pub(crate) fn collect_octets<'a>(
    tlv: &Tlv<'a>,
    depth: usize,
    out: &mut Vec<&'a [u8]>,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err("nesting too deep".into());
    }
    if tlv.class != 0 || tlv.tag != TAG_OCTET_STRING {
        return Err("expected an OCTET STRING".into());
    }
    if !tlv.constructed {
        out.push(tlv.content);
        return Ok(());
    }
    let mut children = tlv.children(depth + 1);
    while let Some(child) = children.next()? {
        collect_octets(&child, depth + 1, out)?;
    }
    Ok(())
}

/// Dotted form of an OID's content octets.
pub(crate) fn oid_to_string(bytes: &[u8]) -> Result<String, String> {
    if bytes.is_empty() || bytes.len() > 128 {
        return Err("bad OID length".into());
    }
    if bytes.last().is_some_and(|b| b & 0x80 != 0) {
        return Err("truncated OID".into());
    }
    let mut arcs: Vec<u64> = Vec::new();
    let mut v: u64 = 0;
    for &b in bytes {
        if v > (u64::MAX >> 7) {
            return Err("OID arc too large".into());
        }
        v = (v << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            arcs.push(v);
            v = 0;
        }
    }
    let mut s = String::new();
    for (i, arc) in arcs.iter().enumerate() {
        if i == 0 {
            let (a, b) = match *arc {
                x if x < 40 => (0, x),
                x if x < 80 => (1, x - 40),
                x => (2, x - 80),
            };
            s.push_str(&format!("{a}.{b}"));
        } else {
            s.push_str(&format!(".{arc}"));
        }
    }
    Ok(s)
}
