//! The MIME entities we write: the payload (one document, or several in a multipart/related),
//! each document's header fields, and the header values that need encoding.

use super::layers::boundary;
use super::validate::{check_line, invalid};
use super::{Document, OutboundError};
use crate::mime::ContentType;

/// A MIME entity we write: header fields in order, then the body.
pub(super) struct Entity {
    pub(super) headers: Vec<(&'static str, String)>,
    pub(super) body: Vec<u8>,
}

impl Entity {
    pub(super) fn to_bytes(&self) -> Vec<u8> {
        let mut out = header_block(&self.headers, self.body.len());
        out.extend_from_slice(&self.body);
        out
    }
}

/// The header fields and the blank line after them (room reserved for `body` more bytes).
pub(super) fn header_block(headers: &[(&'static str, String)], body: usize) -> Vec<u8> {
    let head: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    let mut out = Vec::with_capacity(head + 2 + body);
    for (n, v) in headers {
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// One document as its own entity, or several as a multipart/related.
pub(super) fn payload_entity(docs: &[Document], seed: &str) -> Result<Entity, OutboundError> {
    let first = docs.first().ok_or(OutboundError::NoDocuments)?;
    if docs.len() == 1 {
        return document_entity(first);
    }
    let parts: Vec<Vec<u8>> = docs
        .iter()
        .map(|d| document_entity(d).map(|e| e.to_bytes()))
        .collect::<Result<_, _>>()?;
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let b = boundary("Rel", seed, &refs)?;
    let mut body = Vec::with_capacity(
        parts.iter().map(|p| p.len() + b.len() + 8).sum::<usize>() + b.len() + 8,
    );
    for p in &parts {
        body.extend_from_slice(format!("--{b}\r\n").as_bytes());
        body.extend_from_slice(p);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    Ok(Entity {
        headers: related_headers(&b, &first.content_type),
        body,
    })
}

/// The header of a multipart/related whose root (first) part has `root_type`.
pub(super) fn related_headers(b: &str, root_type: &str) -> Vec<(&'static str, String)> {
    let root_type = ContentType::parse(root_type).mime;
    vec![(
        "Content-Type",
        format!("multipart/related; boundary=\"{b}\"; type=\"{root_type}\""),
    )]
}

pub(super) fn document_entity(doc: &Document) -> Result<Entity, OutboundError> {
    Ok(Entity {
        headers: document_headers(&doc.filename, &doc.content_type)?,
        body: doc.data.clone(),
    })
}

/// A document's header fields, its type and name checked.
pub(super) fn document_headers(filename: &str, content_type: &str) -> Result<Vec<(&'static str, String)>, OutboundError> {
    check_line("document content type", content_type, false)?;
    let ct = ContentType::parse(content_type);
    let well_formed = ct.mime.split_once('/').is_some_and(|(t, s)| {
        let token = |x: &str| {
            !x.is_empty()
                && x.bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
        };
        token(t) && token(s)
    });
    if !well_formed {
        return Err(invalid(
            "document content type",
            format!("{content_type:.60} is not a type/subtype"),
        ));
    }
    // The receiver would take these for a MIME structure or a security layer, not a document.
    if ct.mime.starts_with("multipart/")
        || ct.mime.ends_with("pkcs7-mime")
        || ct.mime.ends_with("pkcs7-signature")
    {
        return Err(invalid(
            "document content type",
            format!("{} cannot be sent as a document", ct.mime),
        ));
    }
    let mut headers = vec![
        ("Content-Type", content_type.trim().to_string()),
        ("Content-Transfer-Encoding", "binary".to_string()),
    ];
    if !filename.is_empty() {
        headers.push((
            "Content-Disposition",
            format!("attachment; {}", filename_param(filename)?),
        ));
    }
    Ok(headers)
}

/// `filename="name"` for plain printable ASCII, else RFC 2231 `filename*=utf-8''name`.
pub(super) fn filename_param(name: &str) -> Result<String, OutboundError> {
    if name.chars().any(char::is_control) || name.len() > 255 {
        return Err(invalid(
            "document filename",
            "control characters or longer than 255 bytes",
        ));
    }
    if name
        .bytes()
        .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\')
    {
        return Ok(format!("filename=\"{name}\""));
    }
    let mut enc = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(format!("filename*=utf-8''{enc}"))
}

/// Control characters become spaces; non-ASCII text goes into RFC 2047 encoded words on the
/// same line (we never fold).
pub(super) fn encode_subject(subject: &str) -> String {
    let clean: String = subject
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let clean = clean.trim();
    if clean.is_ascii() {
        return clean.to_string();
    }
    use base64::Engine;
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in clean.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(chunk);
    }
    words
        .iter()
        .map(|w| {
            format!(
                "=?utf-8?B?{}?=",
                base64::engine::general_purpose::STANDARD.encode(w.as_bytes())
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::{encode_subject, filename_param};

    #[test]
    fn outbound_filenames_and_subjects_are_encoded() {
        assert_eq!(filename_param("a b.edi").unwrap(), "filename=\"a b.edi\"");
        assert_eq!(
            filename_param("x\"y.edi").unwrap(),
            "filename*=utf-8''x%22y.edi"
        );
        assert_eq!(
            filename_param("\u{fc}.txt").unwrap(),
            "filename*=utf-8''%C3%BC.txt"
        );
        assert_eq!(encode_subject(" plain\r\nsubject "), "plain  subject");
        let long = "\u{e9}".repeat(60);
        let enc = encode_subject(&long);
        assert!(
            enc.split(' ')
                .all(|w| w.len() <= 75 && w.starts_with("=?utf-8?B?")),
            "{enc}"
        );
    }
}
