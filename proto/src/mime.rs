//! A byte-exact view of MIME entities: headers (unfolded for reading, raw for hashing), the body
//! as a slice of the input, and multipart bodies split into slices of the input.
//!
//! Nothing here re-serializes: every slice points into the bytes as received, so MIC and
//! signature checks hash exactly what the partner sent (the classic AS2 interop bugs come from
//! re-serializing). Leaf parts are decoded with mail-parser (transfer encodings, RFC 2231
//! filenames).

use crate::error::MimeError;

/// Limits that keep hostile input bounded.
#[derive(Debug, Clone, Copy)]
pub struct MimeLimits {
    /// Maximum size of one entity's header block.
    pub max_header_bytes: usize,
    /// Maximum number of header fields in one entity.
    pub max_headers: usize,
    /// Maximum number of parts in one multipart.
    pub max_parts: usize,
}

impl Default for MimeLimits {
    fn default() -> Self {
        MimeLimits { max_header_bytes: 64 * 1024, max_headers: 200, max_parts: 1000 }
    }
}

/// One header field, unfolded, with the name as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// A MIME entity as a view over the received bytes.
#[derive(Debug, Clone)]
pub struct Entity<'a> {
    /// The whole entity: headers, separator and body, as received.
    pub raw: &'a [u8],
    pub headers: Vec<Header>,
    /// The body (after the blank line), as received.
    pub body: &'a [u8],
}

/// Find the end of the header block: returns (header_len, body_start).
pub(crate) fn header_end(raw: &[u8]) -> Option<(usize, usize)> {
    // An entity may have no headers at all: it then starts with the blank line.
    if raw.starts_with(b"\r\n") {
        return Some((0, 2));
    }
    if raw.starts_with(b"\n") {
        return Some((0, 1));
    }
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\n' {
            if raw.get(i + 1) == Some(&b'\n') {
                return Some((i + 1, i + 2));
            }
            if raw.get(i + 1) == Some(&b'\r') && raw.get(i + 2) == Some(&b'\n') {
                return Some((i + 1, i + 3));
            }
        }
        i += 1;
    }
    None
}

/// Parse a header block (folded lines allowed) into fields.
pub(crate) fn parse_header_block(block: &[u8], limits: &MimeLimits) -> Result<Vec<Header>, MimeError> {
    if block.len() > limits.max_header_bytes {
        return Err(MimeError::HeaderTooLarge(limits.max_header_bytes));
    }
    let text = String::from_utf8_lossy(block);
    let mut headers: Vec<Header> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            // Folded continuation of the previous field.
            match headers.last_mut() {
                Some(h) => {
                    h.value.push(' ');
                    h.value.push_str(line.trim());
                }
                None => return Err(MimeError::BadHeader("continuation line before any field".into())),
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(MimeError::BadHeader(format!("line without a colon: {:.60}", line)));
        };
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(MimeError::BadHeader(format!("invalid field name: {:.60}", name)));
        }
        if headers.len() >= limits.max_headers {
            return Err(MimeError::HeaderTooLarge(limits.max_header_bytes));
        }
        headers.push(Header { name: name.to_string(), value: value.trim().to_string() });
    }
    Ok(headers)
}

pub fn get<'h>(headers: &'h [Header], name: &str) -> Option<&'h str> {
    headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
}

impl<'a> Entity<'a> {
    /// Parse an entity (headers, blank line, body).
    pub fn parse(raw: &'a [u8], limits: &MimeLimits) -> Result<Entity<'a>, MimeError> {
        let (hlen, body_start) = match header_end(raw) {
            Some(v) => v,
            None => {
                // Headers only, no body.
                if raw.len() > limits.max_header_bytes {
                    return Err(MimeError::HeaderTooLarge(limits.max_header_bytes));
                }
                (raw.len(), raw.len())
            }
        };
        let headers = parse_header_block(&raw[..hlen], limits)?;
        Ok(Entity { raw, headers, body: &raw[body_start..] })
    }

    /// An entity whose headers come from elsewhere (the HTTP request) and whose body is `body`.
    pub fn with_headers(headers: Vec<Header>, body: &'a [u8]) -> Entity<'a> {
        Entity { raw: body, headers, body }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        get(&self.headers, name)
    }

    pub fn content_type(&self) -> ContentType {
        ContentType::parse(self.header("content-type").unwrap_or("text/plain"))
    }

    /// Content-Transfer-Encoding, lower-cased; a missing one means binary.
    pub(crate) fn transfer_encoding(&self) -> String {
        self.header("content-transfer-encoding").unwrap_or("binary").trim().to_ascii_lowercase()
    }

    /// The body with its transfer encoding removed.
    pub fn decoded_body(&self) -> Result<Vec<u8>, MimeError> {
        decode_transfer(self.body, &self.transfer_encoding())
    }

    /// The body with its transfer encoding removed, borrowed when nothing needs decoding (a
    /// large binary layer is then not copied).
    pub(crate) fn decoded_body_ref(&self) -> Result<std::borrow::Cow<'a, [u8]>, MimeError> {
        match self.transfer_encoding().as_str() {
            "binary" | "8bit" | "7bit" | "" => Ok(std::borrow::Cow::Borrowed(self.body)),
            other => decode_transfer(self.body, other).map(std::borrow::Cow::Owned),
        }
    }

    /// The filename from Content-Disposition (or Content-Type name=), if any.
    pub fn filename(&self) -> Option<String> {
        let from_disp = self.header("content-disposition").and_then(|v| {
            let cd = ContentType::parse(&format!("x/x; {}", v.split_once(';').map(|(_, p)| p).unwrap_or("")));
            cd.param("filename").map(str::to_string).or_else(|| rfc2231(&cd, "filename"))
        });
        from_disp.or_else(|| self.content_type().param("name").map(str::to_string)).and_then(|f| sanitize_filename(&f))
    }
}

/// RFC 2231 `filename*=utf-8''name%20x` (single segment).
fn rfc2231(ct: &ContentType, name: &str) -> Option<String> {
    let v = ct.param(&format!("{name}*"))?;
    let enc = v.splitn(3, '\'').nth(2).unwrap_or(v);
    let mut out = Vec::new();
    let b = enc.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(x) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Keep only the last path component and printable characters: a partner's filename must never
/// escape the inbox directory.
pub fn sanitize_filename(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = base
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if matches!(c, ':' | '*' | '?' | '"' | '<' | '>' | '|') { '_' } else { c })
        .collect();
    let clean = clean.trim().trim_start_matches('.').to_string();
    if clean.is_empty() || clean.len() > 255 { None } else { Some(clean) }
}

/// Undo a Content-Transfer-Encoding.
pub(crate) fn decode_transfer(body: &[u8], cte: &str) -> Result<Vec<u8>, MimeError> {
    match cte {
        "base64" => {
            let cleaned: Vec<u8> = body.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(&cleaned)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(cleaned.strip_suffix(b"=").unwrap_or(&cleaned)))
                .map_err(|e| MimeError::BadEncoding(format!("base64: {e}")))
        }
        "quoted-printable" => mail_parser::decoders::quoted_printable::quoted_printable_decode(body)
            .ok_or_else(|| MimeError::BadEncoding("quoted-printable".into())),
        "binary" | "8bit" | "7bit" | "" => Ok(body.to_vec()),
        other => Err(MimeError::BadEncoding(format!("unknown Content-Transfer-Encoding {other}"))),
    }
}

/// A parsed Content-Type (or any `value; k=v; k="v"` header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    /// `type/subtype`, lower-cased.
    pub mime: String,
    /// Parameters with lower-cased names, values unquoted.
    pub params: Vec<(String, String)>,
}

impl ContentType {
    pub fn parse(value: &str) -> ContentType {
        let mut parts = split_params(value).into_iter();
        let mime = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let params = parts
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                let v = v.trim();
                let v = if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
                    v[1..v.len() - 1].replace("\\\"", "\"")
                } else {
                    v.to_string()
                };
                Some((k.trim().to_ascii_lowercase(), v))
            })
            .collect();
        ContentType { mime, params }
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn is(&self, mime: &str) -> bool {
        self.mime == mime
    }
}

/// Split on `;` outside quotes.
fn split_params(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => {
                cur.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ';' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Split a multipart body into its parts, each a slice of the input. A part's slice excludes the
/// line break that precedes the next delimiter (RFC 2046: it belongs to the delimiter).
pub fn split_multipart<'a>(body: &'a [u8], boundary: &str, limits: &MimeLimits) -> Result<Vec<&'a [u8]>, MimeError> {
    if boundary.is_empty() || boundary.len() > 200 {
        return Err(MimeError::BadMultipart("missing or invalid boundary".into()));
    }
    let delim = format!("--{boundary}");
    let d = delim.as_bytes();
    // Positions of delimiter lines: at the start of the body or after a line break.
    let mut starts: Vec<(usize, usize)> = Vec::new(); // (line_start_incl_preceding_break, after_delim)
    let mut i = 0;
    let mut closed = false;
    while let Some(pos) = find(&body[i..], d).map(|p| p + i) {
        let at_line_start = pos == 0 || body[pos - 1] == b'\n';
        if !at_line_start {
            i = pos + 1;
            continue;
        }
        let before = if pos >= 2 && body[pos - 2] == b'\r' {
            pos - 2
        } else {
            pos.saturating_sub(1)
        };
        let after = pos + d.len();
        let is_close = body[after..].starts_with(b"--");
        // The rest of the delimiter line (transport padding) up to and including the line break.
        let mut j = if is_close { after + 2 } else { after };
        while j < body.len() && (body[j] == b' ' || body[j] == b'\t') {
            j += 1;
        }
        if !is_close {
            if body[j..].starts_with(b"\r\n") {
                j += 2;
            } else if body[j..].starts_with(b"\n") {
                j += 1;
            } else {
                // "--boundaryX": a longer token, not our delimiter.
                i = pos + 1;
                continue;
            }
        }
        starts.push((before, j));
        if starts.len() > limits.max_parts + 1 {
            return Err(MimeError::BadMultipart(format!("more than {} parts", limits.max_parts)));
        }
        if is_close {
            closed = true;
            break;
        }
        i = j;
    }
    if starts.len() < 2 {
        return Err(MimeError::BadMultipart("no parts found for the boundary".into()));
    }
    let mut parts = Vec::with_capacity(starts.len() - 1);
    for w in starts.windows(2) {
        let (from, to) = (w[0].1, w[1].0);
        if from > to {
            return Err(MimeError::BadMultipart("empty part".into()));
        }
        parts.push(&body[from..to]);
    }
    if !closed {
        // Tolerated: some senders omit the close delimiter. The last part is everything after it.
        if let Some(&(_, last)) = starts.last() {
            let mut end = body.len();
            while end > last && (body[end - 1] == b'\n' || body[end - 1] == b'\r') {
                end -= 1;
            }
            parts.push(&body[last..end]);
        }
    }
    Ok(parts)
}

/// The first occurrence of `needle` in `hay` (None for an empty needle).
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    memchr::memmem::find(hay, needle)
}

/// Where the body starts when `raw` begins with a header block: one or more fields, each a name,
/// a colon and a value without control characters (folded lines allowed), every line ending in
/// CRLF or LF, then a blank line, all within `limits`. None otherwise.
///
/// This is how a decrypted, decompressed or signed content is told to be a MIME entity, whatever
/// header comes first (`Date:`, `Message-ID:`, `Content-Type:`...). RFC 5322 allows any printable
/// character but the colon in a field name; real mail and MIME headers only use letters, digits,
/// `-` and `_`, and the narrower rule keeps bare documents from passing for headers: EDIFACT
/// segments (`UNB+UNOA:2+...`), X12 (`ISA*00*...`), XML, JSON.
pub(crate) fn header_block_end(raw: &[u8], limits: &MimeLimits) -> Option<usize> {
    let window = &raw[..raw.len().min(limits.max_header_bytes.saturating_add(2))];
    let mut pos = 0;
    let mut fields = 0usize;
    while pos < window.len() {
        let end = pos + window[pos..].iter().position(|&b| b == b'\n')?;
        let line = &window[pos..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let next = end + 1;
        let value_ok = |v: &[u8]| v.iter().all(|&b| b == b'\t' || b >= 0x20 && b != 0x7f);
        match line.first() {
            None => return (fields > 0).then_some(next),
            Some(b' ' | b'\t') => {
                if fields == 0 || !value_ok(line) {
                    return None;
                }
            }
            Some(_) => {
                let colon = line.iter().position(|&b| b == b':')?;
                let name = &line[..colon];
                // Obsolete syntax (RFC 5322 4.5.8) allows blanks before the colon.
                let name = &name[..name.len() - name.iter().rev().take_while(|&&b| b == b' ' || b == b'\t').count()];
                let name_ok = name.first().is_some_and(u8::is_ascii_alphanumeric)
                    && name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !name_ok || !value_ok(&line[colon + 1..]) {
                    return None;
                }
                fields += 1;
                if fields > limits.max_headers {
                    return None;
                }
            }
        }
        pos = next;
    }
    None
}

/// Canonicalize text to CRLF line endings (RFC 5751 3.1.1), leaving existing CRLFs alone.
pub fn canonicalize_crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 32);
    let mut prev = 0u8;
    for &b in data {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_headers_unfold() {
        let raw = b"Content-Type: multipart/signed;\r\n\tboundary=\"abc\"; micalg=sha-256\r\nX: y\r\n\r\nbody";
        let e = Entity::parse(raw, &MimeLimits::default()).unwrap();
        let ct = e.content_type();
        assert_eq!(ct.mime, "multipart/signed");
        assert_eq!(ct.param("boundary"), Some("abc"));
        assert_eq!(ct.param("micalg"), Some("sha-256"));
        assert_eq!(e.body, b"body");
        assert_eq!(e.transfer_encoding(), "binary");
    }

    #[test]
    fn multipart_parts_are_exact_slices() {
        let body = b"preamble\r\n--b\r\nA: 1\r\n\r\nfirst\r\n\r\n--b\r\nB: 2\r\n\r\nsecond\r\n--b--\r\nepilogue";
        let parts = split_multipart(body, "b", &MimeLimits::default()).unwrap();
        assert_eq!(parts, vec![&b"A: 1\r\n\r\nfirst\r\n"[..], &b"B: 2\r\n\r\nsecond"[..]]);
    }

    #[test]
    fn multipart_ignores_longer_tokens_and_lf_only() {
        let body = b"--b\nA: 1\n\n--bx not a delimiter\n--b--\n";
        let parts = split_multipart(body, "b", &MimeLimits::default()).unwrap();
        assert_eq!(parts, vec![&b"A: 1\n\n--bx not a delimiter"[..]]);
    }

    #[test]
    fn garbage_multipart_is_an_error() {
        assert!(split_multipart(b"nothing here", "b", &MimeLimits::default()).is_err());
        assert!(split_multipart(b"--b--", "b", &MimeLimits::default()).is_err());
        assert!(split_multipart(b"", "", &MimeLimits::default()).is_err());
    }

    #[test]
    fn filenames_are_sanitized() {
        let raw = b"Content-Disposition: attachment; filename=\"../../etc/passwd\"\r\n\r\nx";
        let e = Entity::parse(raw, &MimeLimits::default()).unwrap();
        assert_eq!(e.filename().as_deref(), Some("passwd"));
        let raw = b"Content-Disposition: attachment; filename*=utf-8''order%201.edi\r\n\r\nx";
        let e = Entity::parse(raw, &MimeLimits::default()).unwrap();
        assert_eq!(e.filename().as_deref(), Some("order 1.edi"));
        assert_eq!(sanitize_filename(".."), None);
    }

    #[test]
    fn header_blocks_are_recognised_by_syntax() {
        let l = MimeLimits::default();
        // Any first header, CRLF or LF, folded lines, blanks before the colon.
        for raw in [
            &b"Date: Thu, 01 Jan 2026\r\nContent-Type: multipart/signed;\r\n\tboundary=x\r\n\r\nbody"[..],
            b"Message-ID: <a@b>\nX_Custom : 1\n\nbody",
            b"Content-Type: text/plain\r\n\nbody",
        ] {
            assert_eq!(header_block_end(raw, &l), Some(raw.len() - 4), "{}", String::from_utf8_lossy(raw));
        }
        // Bare documents are not entities.
        for bare in [
            &b"UNB+UNOA:2+SENDER:14+RECEIVER:14+140407:0910+5'\nUNH+1+ORDERS:D:96A:UN'\n\n"[..],
            b"ISA*00*          *00*          *ZZ*S*ZZ*R*261121*1200*U*00401*1*0*P*:~\n\n",
            b"<?xml version=\"1.0\"?>\n\n<a/>",
            b"{\"a\": 1}\n\n",
            b"\r\nno header before the blank line",
            b"Content-Type: text/plain\r\nno blank line ends this",
            b"Content-Type: text/plain\r\nbinary\x01: x\r\n\r\n",
            b"Content-Type: text/plain\x00\r\n\r\n",
            b" folded first: x\r\n\r\n",
            b"",
        ] {
            assert_eq!(header_block_end(bare, &l), None, "{}", String::from_utf8_lossy(bare));
        }
        // Bounded by the limits.
        let small = MimeLimits { max_header_bytes: 16, ..l };
        assert_eq!(header_block_end(b"X-Long-Header: 0123456789\r\n\r\nbody", &small), None);
        let few = MimeLimits { max_headers: 1, ..l };
        assert_eq!(header_block_end(b"A: 1\r\nB: 2\r\n\r\n", &few), None);
    }

    #[test]
    fn crlf_canonicalization() {
        assert_eq!(canonicalize_crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
    }

    #[test]
    fn header_limits_hold() {
        let big = vec![b'a'; 70 * 1024];
        let mut raw = b"X: ".to_vec();
        raw.extend_from_slice(&big);
        raw.extend_from_slice(b"\r\n\r\nbody");
        assert!(matches!(Entity::parse(&raw, &MimeLimits::default()), Err(MimeError::HeaderTooLarge(_))));
    }
}
