//! The user message waiting on an MPC, and the pull response that carries it.
//!
//! [`UserMessage`] is what the node queues (serde, e.g. MessagePack on a per-MPC queue).
//! [`build_pull_response`] turns it into the HTTP answer to an authorized PullRequest:
//! `multipart/related; type="application/soap+xml"` with the SOAP envelope first and every
//! payload as an attachment (binary, referenced by `eb:PartInfo href="cid:..."`), signed with
//! our key: WS-Security BinarySecurityToken, RSA-SHA256, exclusive C14N, SHA-256 references to
//! eb:Messaging, the Body and each attachment (SwA Attachment-Content-Signature-Transform).
//!
//! [`parse_pulled`] reads such a response back (what a pulling MSH does): for tests and a
//! future pull client.

use roxmltree::Node;
use serde::{Deserialize, Serialize};

use super::package::{self, OutPart};
use super::signals::{SignalIds, body_element, message_info, messaging_open};
use super::wssec::{self, AttachmentDigest, SecurityIds, SignPart, SignatureInfo, SigningKey};
use super::xml::{self, attr, is, leaf, only_child};
use super::{As4Error, BuildError, InboundError, Limits, ns};

/// The part property that names a payload's MIME type (AS4 profile / eDelivery).
pub(crate) const MIME_TYPE_PROPERTY: &str = "MimeType";

/// `eb:From` / `eb:To`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    pub party_id: String,
    /// `PartyId/@type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub party_type: Option<String>,
    pub role: String,
}

/// `eb:Service`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub value: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<String>,
}

/// `eb:Property`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Property {
    pub name: String,
    pub value: String,
}

/// One payload, sent as an attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// Without angle brackets; letters, digits and `-._~@!$'*+=^/:` (usable verbatim in
    /// `cid:` URLs).
    pub content_id: String,
    pub mime_type: String,
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    /// eb:PartProperties. A `MimeType` property with `mime_type` is added when absent.
    #[serde(default)]
    pub properties: Vec<Property>,
}

/// A user message submitted for pulling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserMessage {
    pub message_id: String,
    /// xsd:dateTime (RFC 3339, UTC) given by the caller at submission.
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_to_message_id: Option<String>,
    pub mpc: String,
    pub from: Party,
    pub to: Party,
    pub service: Service,
    pub action: String,
    pub conversation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement_ref: Option<String>,
    #[serde(default)]
    pub properties: Vec<Property>,
    #[serde(default)]
    pub parts: Vec<Part>,
}

/// The ids of one pull response (all given by the caller).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseIds {
    /// MIME boundary of the multipart/related body.
    pub boundary: String,
    /// Content-ID of the SOAP part (the `start` parameter), without angle brackets.
    pub root_content_id: String,
    pub security: SecurityIds,
}

/// Options of [`build_pull_response_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResponseOptions {
    /// How attachment digests are computed (SwA profile by default; raw for AS4.NET peers).
    pub attachment_digest: AttachmentDigest,
}

/// An HTTP response body and its Content-Type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpBody {
    pub content_type: String,
    pub body: Vec<u8>,
}

/// The signed pull response carrying `um` (see the module doc).
pub fn build_pull_response(um: &UserMessage, signer: &SigningKey, ids: &ResponseIds) -> Result<HttpBody, BuildError> {
    build_pull_response_with(um, signer, ids, &ResponseOptions::default())
}

/// [`build_pull_response`] with options.
pub fn build_pull_response_with(
    um: &UserMessage,
    signer: &SigningKey,
    ids: &ResponseIds,
    opts: &ResponseOptions,
) -> Result<HttpBody, BuildError> {
    let messaging = messaging(um, Some(&ids.security.messaging_id))?;
    let body = body_element(Some(&ids.security.body_id));
    let sign_parts: Vec<SignPart> = um
        .parts
        .iter()
        .map(|p| SignPart { content_id: &p.content_id, content_type: &p.mime_type, bytes: &p.bytes })
        .collect();
    let env = wssec::sign_envelope(signer, &ids.security, &messaging, &body, &sign_parts, opts.attachment_digest)?;
    let out_parts: Vec<OutPart> = um
        .parts
        .iter()
        .map(|p| OutPart { content_id: &p.content_id, content_type: &p.mime_type, bytes: &p.bytes })
        .collect();
    let (content_type, body) = package::assemble(&ids.boundary, &ids.root_content_id, env.as_bytes(), &out_parts)?;
    Ok(HttpBody { content_type, body })
}

fn required(what: &'static str, v: &str) -> Result<(), BuildError> {
    if v.trim().is_empty() {
        return Err(BuildError::Invalid { what, reason: "empty".into() });
    }
    xml::check_chars(what, v)
}

fn party(out: &mut String, tag: &str, p: &Party) -> Result<(), BuildError> {
    required("party id", &p.party_id)?;
    required("role", &p.role)?;
    out.push_str("<eb:");
    out.push_str(tag);
    out.push('>');
    match &p.party_type {
        Some(t) => {
            required("party type", t)?;
            leaf(out, "eb:PartyId", &[("type", t)], &p.party_id);
        }
        None => leaf(out, "eb:PartyId", &[], &p.party_id),
    }
    leaf(out, "eb:Role", &[], &p.role);
    out.push_str("</eb:");
    out.push_str(tag);
    out.push('>');
    Ok(())
}

fn properties(out: &mut String, wrapper: &str, props: &[Property], first: Option<(&str, &str)>) -> Result<(), BuildError> {
    if props.is_empty() && first.is_none() {
        return Ok(());
    }
    out.push_str("<eb:");
    out.push_str(wrapper);
    out.push('>');
    let all = first.into_iter().chain(props.iter().map(|p| (p.name.as_str(), p.value.as_str())));
    for (name, value) in all {
        required("property name", name)?;
        xml::check_chars("property value", value)?;
        leaf(out, "eb:Property", &[("name", name)], value);
    }
    out.push_str("</eb:");
    out.push_str(wrapper);
    out.push('>');
    Ok(())
}

/// eb:Messaging/eb:UserMessage in canonical form.
fn messaging(um: &UserMessage, id: Option<&str>) -> Result<String, BuildError> {
    required("mpc", &um.mpc)?;
    required("service", &um.service.value)?;
    required("action", &um.action)?;
    required("conversation id", &um.conversation_id)?;
    let mut m = String::with_capacity(2048);
    messaging_open(&mut m, id);
    m.push_str("<eb:UserMessage");
    attr(&mut m, "mpc", &um.mpc);
    m.push('>');
    let info = SignalIds { message_id: um.message_id.clone(), timestamp: um.timestamp.clone() };
    message_info(&mut m, &info, um.ref_to_message_id.as_deref())?;
    m.push_str("<eb:PartyInfo>");
    party(&mut m, "From", &um.from)?;
    party(&mut m, "To", &um.to)?;
    m.push_str("</eb:PartyInfo><eb:CollaborationInfo>");
    if let Some(a) = &um.agreement_ref {
        required("agreement ref", a)?;
        leaf(&mut m, "eb:AgreementRef", &[], a);
    }
    match &um.service.service_type {
        Some(t) => {
            required("service type", t)?;
            leaf(&mut m, "eb:Service", &[("type", t)], &um.service.value);
        }
        None => leaf(&mut m, "eb:Service", &[], &um.service.value),
    }
    leaf(&mut m, "eb:Action", &[], &um.action);
    leaf(&mut m, "eb:ConversationId", &[], &um.conversation_id);
    m.push_str("</eb:CollaborationInfo>");
    properties(&mut m, "MessageProperties", &um.properties, None)?;
    if !um.parts.is_empty() {
        m.push_str("<eb:PayloadInfo>");
        for (i, p) in um.parts.iter().enumerate() {
            package::check_content_id("part content id", &p.content_id)?;
            package::check_header_value("part mime type", &p.mime_type)?;
            if um.parts[..i].iter().any(|q| q.content_id == p.content_id) {
                return Err(BuildError::Invalid { what: "part content id", reason: format!("{} used twice", p.content_id) });
            }
            m.push_str("<eb:PartInfo");
            attr(&mut m, "href", &format!("cid:{}", p.content_id));
            m.push('>');
            let has_mime = p.properties.iter().any(|q| q.name == MIME_TYPE_PROPERTY);
            let first = (!has_mime).then_some((MIME_TYPE_PROPERTY, p.mime_type.as_str()));
            properties(&mut m, "PartProperties", &p.properties, first)?;
            m.push_str("</eb:PartInfo>");
        }
        m.push_str("</eb:PayloadInfo>");
    }
    m.push_str("</eb:UserMessage></eb:Messaging>");
    Ok(m)
}

// ---------------------------------------------------------------------------------------------
// Reading a pulled user message back
// ---------------------------------------------------------------------------------------------

/// Parses and verifies a pull response carrying a user message. Part properties come back
/// without the `MimeType` property (it is [`Part::mime_type`]).
pub fn parse_pulled(
    content_type: &str,
    body: &[u8],
    limits: &Limits,
) -> Result<(UserMessage, Option<SignatureInfo>), InboundError> {
    let received = package::split(content_type, body, limits)?;
    let doc = xml::parse(&received.envelope, limits)?;
    let soap = wssec::soap(&doc)?;
    let messaging = soap.messaging.ok_or_else(|| As4Error::InvalidHeader("no eb:Messaging header".into()))?;
    let um_node = only_child(messaging, ns::EB, "UserMessage")?
        .ok_or_else(|| As4Error::InvalidHeader("no eb:UserMessage".into()))?;
    let mut um = read_user_message(um_node, &received.attachments)?;
    let signed = wssec::verify_parsed(&doc, &soap, &received.attachments)
        .map_err(|error| InboundError { error, ref_to_message_id: Some(um.message_id.clone()) })?;
    um.parts.iter_mut().for_each(|p| p.properties.retain(|q| q.name != MIME_TYPE_PROPERTY));
    Ok((um, signed))
}

fn child<'a, 'i>(n: Node<'a, 'i>, local: &'static str) -> Result<Node<'a, 'i>, As4Error> {
    only_child(n, ns::EB, local)?.ok_or_else(|| As4Error::InvalidHeader(format!("missing eb:{local}")))
}

fn read_party(n: Node) -> Result<Party, As4Error> {
    let id = child(n, "PartyId")?;
    Ok(Party {
        party_id: xml::text(id),
        party_type: id.attribute("type").map(str::to_string),
        role: xml::text(child(n, "Role")?),
    })
}

fn read_properties(n: Option<Node>) -> Vec<Property> {
    n.map(|n| {
        n.children()
            .filter(|c| is(*c, ns::EB, "Property"))
            .map(|c| Property { name: c.attribute("name").unwrap_or_default().to_string(), value: xml::text(c) })
            .collect()
    })
    .unwrap_or_default()
}

fn read_user_message(n: Node, attachments: &[package::Attachment]) -> Result<UserMessage, As4Error> {
    let info = child(n, "MessageInfo")?;
    let parties = child(n, "PartyInfo")?;
    let collab = child(n, "CollaborationInfo")?;
    let service = child(collab, "Service")?;
    let mut parts = Vec::new();
    if let Some(pi) = only_child(n, ns::EB, "PayloadInfo")? {
        for p in pi.children().filter(|c| is(*c, ns::EB, "PartInfo")) {
            let href = p.attribute("href").unwrap_or_default();
            let cid = href
                .strip_prefix("cid:")
                .ok_or_else(|| As4Error::NotSupported(format!("payload {href:?} is not an attachment")))?;
            let a = attachments
                .iter()
                .find(|a| a.content_id == cid)
                .ok_or_else(|| As4Error::Mime(format!("no attachment for {href}")))?;
            let properties = read_properties(only_child(p, ns::EB, "PartProperties")?);
            let mime_type = properties
                .iter()
                .find(|q| q.name == MIME_TYPE_PROPERTY)
                .map(|q| q.value.clone())
                .unwrap_or_else(|| a.content_type.clone());
            parts.push(Part { content_id: cid.to_string(), mime_type, bytes: a.bytes.clone(), properties });
        }
    }
    let text_of = |parent: Node, local: &'static str| -> Result<String, As4Error> { Ok(xml::text(child(parent, local)?)) };
    Ok(UserMessage {
        message_id: text_of(info, "MessageId")?,
        timestamp: text_of(info, "Timestamp")?,
        ref_to_message_id: only_child(info, ns::EB, "RefToMessageId")?.map(xml::text),
        mpc: n.attribute("mpc").unwrap_or(super::DEFAULT_MPC).to_string(),
        from: read_party(child(parties, "From")?)?,
        to: read_party(child(parties, "To")?)?,
        service: Service { value: xml::text(service), service_type: service.attribute("type").map(str::to_string) },
        action: text_of(collab, "Action")?,
        conversation_id: text_of(collab, "ConversationId")?,
        agreement_ref: only_child(collab, ns::EB, "AgreementRef")?.map(xml::text),
        properties: read_properties(only_child(n, ns::EB, "MessageProperties")?),
        parts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::as4::testutil;
    use crate::as4::wssec::verify;

    fn sample() -> UserMessage {
        UserMessage {
            message_id: "um-1@edinode".into(),
            timestamp: "2024-05-01T12:00:00Z".into(),
            ref_to_message_id: None,
            mpc: "urn:mpc:orders".into(),
            from: Party { party_id: "sender".into(), party_type: Some("urn:oasis:names:tc:ebcore:partyid-type:unregistered".into()), role: "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/initiator".into() },
            to: Party { party_id: "receiver".into(), party_type: None, role: "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/responder".into() },
            service: Service { value: "urn:service".into(), service_type: Some("urn:types".into()) },
            action: "Deliver".into(),
            conversation_id: "conv & 1".into(),
            agreement_ref: Some("urn:agreement".into()),
            properties: vec![
                Property { name: "originalSender".into(), value: "urn:a <x>".into() },
                Property { name: "finalRecipient".into(), value: "urn:b\"q\"".into() },
            ],
            parts: vec![
                Part {
                    content_id: "invoice@edinode".into(),
                    mime_type: "application/xml".into(),
                    bytes: b"<?xml version=\"1.0\"?>\n<Invoice  xmlns=\"urn:inv\" b='2' a='1'>\n  <!-- c --><Id>1</Id>\n</Invoice>\n".to_vec(),
                    properties: vec![Property { name: "CharacterSet".into(), value: "utf-8".into() }],
                },
                Part { content_id: "scan@edinode".into(), mime_type: "application/octet-stream".into(), bytes: (0u8..=255).cycle().take(5000).collect(), properties: vec![] },
                Part { content_id: "note@edinode".into(), mime_type: "text/plain".into(), bytes: b"line1\nline2\n".to_vec(), properties: vec![] },
            ],
        }
    }

    fn ids() -> ResponseIds {
        ResponseIds {
            boundary: "MIMEBoundary_1234".into(),
            root_content_id: "root@edinode".into(),
            security: SecurityIds { messaging_id: "messaging-1".into(), body_id: "body-1".into(), bst_id: "bst-1".into() },
        }
    }

    #[test]
    fn pull_response_verifies_and_round_trips() {
        let key = testutil::signing_key("edinode");
        let um = sample();
        let resp = build_pull_response(&um, &key, &ids()).unwrap();
        assert!(resp.content_type.starts_with("multipart/related;"));
        assert!(resp.content_type.contains("type=\"application/soap+xml\""));
        assert!(resp.content_type.contains("start=\"<root@edinode>\""));
        let (back, signed) = parse_pulled(&resp.content_type, &resp.body, &Limits::default()).unwrap();
        assert_eq!(back, um);
        let signed = signed.unwrap();
        assert_eq!(signed.thumbprint, wssec::thumbprint(&key.cert.to_der().unwrap()));
        assert_eq!(signed.references.len(), 5);
        assert_eq!(signed.references[2].uri, "cid:invoice@edinode");

        let received = package::split(&resp.content_type, &resp.body, &Limits::default()).unwrap();
        let env = String::from_utf8(received.envelope.clone()).unwrap();
        assert!(env.contains("<eb:PartInfo href=\"cid:invoice@edinode\"><eb:PartProperties><eb:Property name=\"MimeType\">application/xml</eb:Property>"));
        assert!(env.contains("Attachment-Content-Signature-Transform"));
        assert!(env.contains("<eb:UserMessage mpc=\"urn:mpc:orders\">"));

        // A changed attachment byte, a missing attachment, a changed header byte: all fail.
        let mut changed = received.attachments.clone();
        changed[1].bytes[10] ^= 1;
        assert!(verify(&received.envelope, &changed, &Limits::default()).is_err());
        assert!(verify(&received.envelope, &received.attachments[..2], &Limits::default()).is_err());
        let t = env.replacen("Deliver", "Delivex", 1);
        assert!(verify(t.as_bytes(), &received.attachments, &Limits::default()).is_err());
        // An extra, unsigned attachment is refused.
        let mut extra = received.attachments.clone();
        extra.push(package::Attachment { content_id: "x@y".into(), content_type: "text/plain".into(), bytes: b"x".to_vec() });
        assert!(verify(&received.envelope, &extra, &Limits::default()).is_err());
    }

    #[test]
    fn raw_attachment_digests_also_verify() {
        let key = testutil::signing_key("edinode");
        let opts = ResponseOptions { attachment_digest: AttachmentDigest::Raw };
        let resp = build_pull_response_with(&sample(), &key, &ids(), &opts).unwrap();
        assert!(parse_pulled(&resp.content_type, &resp.body, &Limits::default()).is_ok());
    }

    #[test]
    fn no_parts_is_still_multipart_with_two_references() {
        let key = testutil::signing_key("edinode");
        let um = UserMessage { parts: vec![], properties: vec![], agreement_ref: None, ..sample() };
        let resp = build_pull_response(&um, &key, &ids()).unwrap();
        let (back, signed) = parse_pulled(&resp.content_type, &resp.body, &Limits::default()).unwrap();
        assert_eq!(back, um);
        assert_eq!(signed.unwrap().references.len(), 2);
    }

    #[test]
    fn serde_round_trip() {
        let um = sample();
        let packed = rmp_serde::to_vec_named(&um).unwrap();
        let back: UserMessage = rmp_serde::from_slice(&packed).unwrap();
        assert_eq!(back, um);
    }

    #[test]
    fn invalid_input_is_refused() {
        let key = testutil::signing_key("edinode");
        let mut um = sample();
        um.action = String::new();
        assert!(build_pull_response(&um, &key, &ids()).is_err());
        let mut um = sample();
        um.parts[1].content_id = "invoice@edinode".into();
        assert!(build_pull_response(&um, &key, &ids()).is_err());
        let mut um = sample();
        um.parts[0].content_id = "a b".into();
        assert!(build_pull_response(&um, &key, &ids()).is_err());
        let mut um = sample();
        um.properties[0].value = "\u{7}".into();
        assert!(build_pull_response(&um, &key, &ids()).is_err());
        let mut um = sample();
        um.parts[0].bytes = b"<!DOCTYPE x><x/>".to_vec();
        assert!(matches!(build_pull_response(&um, &key, &ids()), Err(BuildError::AttachmentCanonicalization { .. })));
        let mut bad = ids();
        bad.boundary = "MIME".into();
        let mut um = sample();
        um.parts[2].bytes = b"x\r\n--MIME\r\n".to_vec();
        assert_eq!(build_pull_response(&um, &key, &bad).unwrap_err(), BuildError::BoundaryInContent);
    }
}
