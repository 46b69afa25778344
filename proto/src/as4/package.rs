//! SOAP with attachments: splitting a received `multipart/related` body into the SOAP envelope
//! and its attachments, and assembling the one we send.
//!
//! Splitting reuses the byte-exact MIME views of [`crate::mime`]; parts are transfer-decoded
//! (AS4 senders use binary, some base64) because attachment digests cover the decoded content.

use crate::mime::{ContentType, Entity, MimeLimits};

use super::{As4Error, BuildError, Limits};

/// A received attachment, transfer-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Without angle brackets.
    pub content_id: String,
    /// The Content-Type header value as received (`application/octet-stream` when absent).
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// A received AS4 HTTP body, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub envelope: Vec<u8>,
    pub attachments: Vec<Attachment>,
}

/// Splits a received body by its HTTP Content-Type: `application/soap+xml` is the envelope
/// itself; `multipart/related` has the envelope in the part named by `start` (or the first part).
pub fn split(content_type: &str, body: &[u8], limits: &Limits) -> Result<Received, As4Error> {
    if body.len() > limits.max_bytes {
        return Err(As4Error::TooLarge { limit: limits.max_bytes });
    }
    let ct = ContentType::parse(content_type);
    match ct.mime.as_str() {
        // text/xml and application/xml are SOAP 1.1 or mislabelled: the envelope check decides.
        "application/soap+xml" | "text/xml" | "application/xml" | "" => {
            return Ok(Received { envelope: body.to_vec(), attachments: Vec::new() });
        }
        "multipart/related" => {}
        other => return Err(As4Error::Mime(format!("unexpected content type {other}"))),
    }
    let boundary = ct
        .param("boundary")
        .ok_or_else(|| As4Error::Mime("multipart/related without boundary".into()))?;
    let mlimits = MimeLimits { max_parts: limits.max_parts, ..MimeLimits::default() };
    let raw_parts = crate::mime::split_multipart(body, boundary, &mlimits)
        .map_err(|e| As4Error::Mime(e.to_string()))?;
    let start = ct.param("start").map(strip_angle);
    let mut root: Option<Vec<u8>> = None;
    let mut attachments = Vec::new();
    for (i, raw) in raw_parts.into_iter().enumerate() {
        let e = Entity::parse(raw, &mlimits).map_err(|e| As4Error::Mime(e.to_string()))?;
        let cid = e.header("Content-ID").map(strip_angle).unwrap_or_default().to_string();
        let bytes = e.decoded_body().map_err(|e| As4Error::Mime(e.to_string()))?;
        let is_root = match start {
            Some(s) => s == cid,
            None => i == 0,
        };
        if is_root && root.is_none() {
            root = Some(bytes);
        } else {
            if cid.is_empty() {
                return Err(As4Error::Mime("attachment without Content-ID".into()));
            }
            if attachments.iter().any(|a: &Attachment| a.content_id == cid) {
                return Err(As4Error::Mime(format!("Content-ID {cid} used twice")));
            }
            let content_type =
                e.header("Content-Type").unwrap_or("application/octet-stream").trim().to_string();
            attachments.push(Attachment { content_id: cid, content_type, bytes });
        }
    }
    let envelope = root.ok_or_else(|| As4Error::Mime("no root part (start)".into()))?;
    Ok(Received { envelope, attachments })
}

fn strip_angle(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('<').and_then(|s| s.strip_suffix('>')).unwrap_or(s)
}

/// One attachment to send.
pub(crate) struct OutPart<'a> {
    pub content_id: &'a str,
    pub content_type: &'a str,
    pub bytes: &'a [u8],
}

/// `v` has 1 to `max` characters, each an ASCII letter or digit or one of `extra`.
fn is_token(v: &str, max: usize, extra: &str) -> bool {
    !v.is_empty() && v.len() <= max && v.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}

/// Checks a Content-ID we generate: it must be usable verbatim in `<...>` and in a `cid:` URL.
pub(crate) fn check_content_id(what: &'static str, cid: &str) -> Result<(), BuildError> {
    if is_token(cid, 250, "-._~@!$'*+=^/:") {
        return Ok(());
    }
    Err(BuildError::Invalid { what, reason: format!("{cid:?}: use letters, digits and -._~@!$'*+=^/: only") })
}

/// Checks a MIME boundary (RFC 2046 bchars without space, 1 to 70 characters).
pub(crate) fn check_boundary(b: &str) -> Result<(), BuildError> {
    if is_token(b, 70, "'()+_,-./:=?") {
        return Ok(());
    }
    Err(BuildError::Invalid { what: "boundary", reason: format!("{b:?} is not a MIME boundary") })
}

/// Checks a Content-Type value we write into a part header.
pub(crate) fn check_header_value(what: &'static str, v: &str) -> Result<(), BuildError> {
    if v.is_empty() || v.chars().any(|c| c.is_ascii_control() || !c.is_ascii()) {
        return Err(BuildError::Invalid { what, reason: format!("{v:?} is not a header value") });
    }
    Ok(())
}

/// Assembles `multipart/related; type="application/soap+xml"` with the envelope as root part
/// and the attachments after it, all with binary transfer encoding. Returns the HTTP
/// Content-Type value and the body.
pub(crate) fn assemble(
    boundary: &str,
    root_content_id: &str,
    envelope: &[u8],
    parts: &[OutPart],
) -> Result<(String, Vec<u8>), BuildError> {
    check_boundary(boundary)?;
    check_content_id("root content id", root_content_id)?;
    let delim = format!("--{boundary}");
    let contains = |hay: &[u8]| crate::mime::find(hay, delim.as_bytes()).is_some();
    if contains(envelope) || parts.iter().any(|p| contains(p.bytes)) {
        return Err(BuildError::BoundaryInContent);
    }
    let total = envelope.len() + parts.iter().map(|p| p.bytes.len() + 200).sum::<usize>() + 400;
    let mut body = Vec::with_capacity(total);
    let mut part = |ct: &str, cid: &str, bytes: &[u8]| {
        body.extend_from_slice(
            format!(
                "{delim}\r\nContent-Type: {ct}\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <{cid}>\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    };
    part("application/soap+xml; charset=UTF-8", root_content_id, envelope);
    for p in parts {
        check_content_id("attachment content id", p.content_id)?;
        check_header_value("attachment content type", p.content_type)?;
        part(p.content_type, p.content_id, p.bytes);
    }
    body.extend_from_slice(format!("{delim}--\r\n").as_bytes());
    let content_type = format!(
        "multipart/related; boundary=\"{boundary}\"; type=\"application/soap+xml\"; start=\"<{root_content_id}>\""
    );
    Ok((content_type, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assemble_then_split() {
        let parts = [
            OutPart { content_id: "a@x", content_type: "application/xml", bytes: b"<a/>" },
            OutPart { content_id: "b@x", content_type: "application/octet-stream", bytes: b"\x00\x01\r\n\xff" },
        ];
        let (ct, body) = assemble("b-1", "root@x", b"<env/>", &parts).unwrap();
        assert!(ct.starts_with("multipart/related; boundary=\"b-1\"; type=\"application/soap+xml\""));
        let r = split(&ct, &body, &Limits::default()).unwrap();
        assert_eq!(r.envelope, b"<env/>");
        assert_eq!(r.attachments.len(), 2);
        assert_eq!(r.attachments[0].content_id, "a@x");
        assert_eq!(r.attachments[1].bytes, b"\x00\x01\r\n\xff");
        assert_eq!(r.attachments[1].content_type, "application/octet-stream");
    }

    #[test]
    fn boundary_collisions_and_bad_ids_are_refused() {
        let parts = [OutPart { content_id: "a", content_type: "text/plain", bytes: b"x\r\n--b-1\r\n" }];
        assert_eq!(assemble("b-1", "r", b"<e/>", &parts).unwrap_err(), BuildError::BoundaryInContent);
        assert!(assemble("b 1", "r", b"<e/>", &[]).is_err());
        assert!(assemble("b", "r>", b"<e/>", &[]).is_err());
        let bad_ct = [OutPart { content_id: "a", content_type: "text/plain\r\nX: y", bytes: b"" }];
        assert!(assemble("b", "r", b"<e/>", &bad_ct).is_err());
    }

    #[test]
    fn plain_soap_and_bad_types() {
        let r = split("application/soap+xml; charset=UTF-8", b"<e/>", &Limits::default()).unwrap();
        assert_eq!(r.envelope, b"<e/>");
        assert!(matches!(split("image/png", b"x", &Limits::default()), Err(As4Error::Mime(_))));
        assert!(matches!(split("multipart/related", b"x", &Limits::default()), Err(As4Error::Mime(_))));
        assert!(matches!(
            split("multipart/related; boundary=zz", b"garbage", &Limits::default()),
            Err(As4Error::Mime(_))
        ));
    }
}
