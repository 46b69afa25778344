//! What a partner POSTs to the pull sender's `/as4`: a SOAP 1.2 envelope whose `eb:Messaging`
//! holds signal messages: a PullRequest, and/or Receipts and Errors about user messages we
//! sent (bundled with the next PullRequest or on their own).
//!
//! [`parse`] takes the HTTP Content-Type and body (plain SOAP or SOAP with attachments),
//! applies the [`Limits`], reads the header, then verifies the WS-Security signature if there is
//! one. The result is an [`Incoming`]; a failure is an [`InboundError`] that says how to answer
//! ([`As4Error::answer`]) and, once the header was readable, which message id to refer to.
//!
//! UserMessages pushed to this endpoint are refused (no push P-Mode here): EBMS:0010.

use roxmltree::Node;
use serde::{Deserialize, Serialize};

use super::package::{self, Attachment};
use super::wssec::{self, SignatureInfo};
use super::xml::{self, is, only_child};
use super::{As4Error, DEFAULT_MPC, EbmsCode, InboundError, Limits, Severity, ns};

/// A parsed, signature-checked inbound AS4 message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incoming {
    pub pull: Option<PullRequest>,
    pub receipts: Vec<ReceiptIn>,
    pub errors: Vec<EbmsErrorIn>,
    /// The verified signer; `None` for an unsigned message.
    pub signed: Option<SignatureInfo>,
}

impl Incoming {
    /// The id to refer to when answering: the PullRequest's, else the first signal's.
    pub fn message_id(&self) -> Option<&str> {
        self.pull
            .as_ref()
            .map(|p| p.message_id.as_str())
            .or_else(|| self.receipts.first().map(|r| r.message_id.as_str()))
            .or_else(|| self.errors.first().map(|e| e.signal_message_id.as_str()))
    }

    /// The user message ids this message settles (by Receipt or by Error), in order, deduplicated.
    pub(crate) fn settled_message_ids(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let ids = self
            .receipts
            .iter()
            .map(|r| r.ref_to_message_id.as_str())
            .chain(self.errors.iter().filter_map(|e| e.ref_to_message_id.as_deref()));
        for id in ids {
            if !out.contains(&id) {
                out.push(id);
            }
        }
        out
    }
}

/// `eb:SignalMessage/eb:PullRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    pub message_id: String,
    /// As sent (xsd:dateTime).
    pub timestamp: String,
    /// The `mpc` attribute, or [`DEFAULT_MPC`] when absent or empty.
    pub mpc: String,
}

/// `eb:SignalMessage/eb:Receipt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptIn {
    pub message_id: String,
    pub timestamp: String,
    /// The user message this receipt acknowledges.
    pub ref_to_message_id: String,
}

/// One `eb:Error` of an error signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EbmsErrorIn {
    /// The MessageId of the SignalMessage that carries the error.
    pub signal_message_id: String,
    /// `refToMessageInError`, else the signal's RefToMessageId.
    pub ref_to_message_id: Option<String>,
    /// The errorCode as sent (`EBMS:0301`).
    pub code: String,
    /// The code when it is a standard one.
    pub known: Option<EbmsCode>,
    /// `failure` when absent or not recognized.
    pub severity: Severity,
    pub short_description: Option<String>,
    pub description: Option<String>,
}

/// Parses an HTTP request body by its Content-Type (see the module doc).
pub fn parse(content_type: &str, body: &[u8], limits: &Limits) -> Result<Incoming, InboundError> {
    let received = package::split(content_type, body, limits)?;
    parse_envelope(&received.envelope, &received.attachments, limits)
}

/// Parses a SOAP envelope received with these attachments.
pub(crate) fn parse_envelope(
    envelope: &[u8],
    attachments: &[Attachment],
    limits: &Limits,
) -> Result<Incoming, InboundError> {
    let doc = xml::parse(envelope, limits)?;
    let soap = wssec::soap(&doc)?;
    let messaging =
        soap.messaging.ok_or_else(|| As4Error::InvalidHeader("no eb:Messaging header".into()))?;

    let mut incoming = Incoming { pull: None, receipts: Vec::new(), errors: Vec::new(), signed: None };
    for child in messaging.children().filter(|n| n.is_element()) {
        if is(child, ns::EB, "SignalMessage") {
            signal_message(child, &mut incoming).map_err(|error| InboundError {
                error,
                ref_to_message_id: incoming_id(child),
            })?;
        } else if is(child, ns::EB, "UserMessage") {
            return Err(InboundError {
                error: As4Error::NotSupported("this endpoint does not accept UserMessages".into()),
                ref_to_message_id: incoming_id(child),
            });
        } else if child.tag_name().namespace() == Some(ns::EB) {
            return Err(InboundError {
                error: As4Error::ValueNotRecognized(format!("eb:{}", child.tag_name().name())),
                ref_to_message_id: None,
            });
        }
        // Elements of other namespaces are extensions (xsd:any ##other): ignored.
    }
    if incoming.pull.is_none() && incoming.receipts.is_empty() && incoming.errors.is_empty() {
        return Err(As4Error::InvalidHeader("eb:Messaging holds no signal message".into()).into());
    }
    let ref_to = incoming.message_id().map(str::to_string);
    incoming.signed = wssec::verify_parsed(&doc, &soap, attachments)
        .map_err(|error| InboundError { error, ref_to_message_id: ref_to })?;
    Ok(incoming)
}

/// MessageInfo/MessageId of a UserMessage or SignalMessage, if readable.
fn incoming_id(message: Node) -> Option<String> {
    let info = message.children().find(|n| is(*n, ns::EB, "MessageInfo"))?;
    let id = info.children().find(|n| is(*n, ns::EB, "MessageId"))?;
    Some(xml::text(id)).filter(|s| !s.is_empty())
}

fn required_text(parent: Node, local: &'static str) -> Result<String, As4Error> {
    let n = only_child(parent, ns::EB, local)?
        .ok_or_else(|| As4Error::InvalidHeader(format!("missing eb:{local}")))?;
    let t = xml::text(n);
    if t.is_empty() {
        return Err(As4Error::InvalidHeader(format!("empty eb:{local}")));
    }
    Ok(t)
}

fn signal_message(sm: Node, incoming: &mut Incoming) -> Result<(), As4Error> {
    let info = only_child(sm, ns::EB, "MessageInfo")?
        .ok_or_else(|| As4Error::InvalidHeader("SignalMessage without MessageInfo".into()))?;
    let message_id = required_text(info, "MessageId")?;
    let timestamp = required_text(info, "Timestamp")?;
    let ref_to = only_child(info, ns::EB, "RefToMessageId")?.map(xml::text).filter(|s| !s.is_empty());

    let body: Vec<Node> = sm
        .children()
        .filter(|n| n.is_element() && n.tag_name().namespace() == Some(ns::EB))
        .filter(|n| !is(*n, ns::EB, "MessageInfo"))
        .collect();
    match body.as_slice() {
        [p] if is(*p, ns::EB, "PullRequest") => {
            if incoming.pull.is_some() {
                return Err(As4Error::InvalidHeader("more than one PullRequest".into()));
            }
            let mpc = p.attribute("mpc").map(str::trim).filter(|m| !m.is_empty()).unwrap_or(DEFAULT_MPC);
            incoming.pull = Some(PullRequest { message_id, timestamp, mpc: mpc.to_string() });
        }
        [r] if is(*r, ns::EB, "Receipt") => {
            let ref_to = ref_to.ok_or_else(|| As4Error::InvalidHeader("Receipt without RefToMessageId".into()))?;
            incoming.receipts.push(ReceiptIn { message_id, timestamp, ref_to_message_id: ref_to });
        }
        errors if !errors.is_empty() && errors.iter().all(|e| is(*e, ns::EB, "Error")) => {
            for e in errors {
                let code = e
                    .attribute("errorCode")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| As4Error::InvalidHeader("eb:Error without errorCode".into()))?;
                let description = e
                    .children()
                    .find(|n| is(*n, ns::EB, "Description"))
                    .map(xml::text)
                    .filter(|s| !s.is_empty());
                incoming.errors.push(EbmsErrorIn {
                    signal_message_id: message_id.clone(),
                    ref_to_message_id: e
                        .attribute("refToMessageInError")
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .or_else(|| ref_to.clone()),
                    code: code.to_string(),
                    known: EbmsCode::parse(code),
                    severity: e.attribute("severity").and_then(Severity::parse).unwrap_or(Severity::Failure),
                    short_description: e.attribute("shortDescription").map(str::to_string),
                    description,
                });
            }
        }
        [] => return Err(As4Error::InvalidHeader("SignalMessage without PullRequest, Receipt or Error".into())),
        [other, ..] => {
            return Err(As4Error::ValueNotRecognized(format!(
                "unexpected eb:{} in SignalMessage",
                other.tag_name().name()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::as4::{Answer, testutil};

    const EB: &str = ns::EB;

    fn envelope(messaging_inner: &str) -> String {
        format!(
            "<?xml version=\"1.0\"?><S:Envelope xmlns:S=\"{}\"><S:Header><eb:Messaging xmlns:eb=\"{EB}\">{messaging_inner}</eb:Messaging></S:Header><S:Body/></S:Envelope>",
            ns::SOAP12
        )
    }

    fn signal(id: &str, ref_to: Option<&str>, inner: &str) -> String {
        let r = ref_to.map(|r| format!("<eb:RefToMessageId>{r}</eb:RefToMessageId>")).unwrap_or_default();
        format!("<eb:SignalMessage><eb:MessageInfo><eb:Timestamp>2024-01-01T00:00:00Z</eb:Timestamp><eb:MessageId>{id}</eb:MessageId>{r}</eb:MessageInfo>{inner}</eb:SignalMessage>")
    }

    fn parse_soap(xml: &str) -> Result<Incoming, InboundError> {
        parse("application/soap+xml; charset=utf-8", xml.as_bytes(), &Limits::default())
    }

    #[test]
    #[ignore = "needs ../shared/fixtures (third-party captures); .ci/run runs it when present"]
    fn as4net_fixture() {
        let bytes = testutil::fixture("as4net_signed_pullrequest.xml");
        let inc = parse("application/soap+xml", &bytes, &Limits::default()).unwrap();
        let pull = inc.pull.as_ref().unwrap();
        assert_eq!(pull.mpc, "http://example.holodeckb2b.org/mpc/2");
        assert_eq!(pull.message_id, "5be59681-51f1-4889-86d6-8d38e8294436@10.124.29.152");
        assert_eq!(pull.timestamp, "2017-06-12T11:50:36.0562182Z");
        assert_eq!(inc.signed.as_ref().unwrap().thumbprint, "5E320E3A1DDAC6606E12816B2744AE1EE2EE7BF5");
        assert_eq!(inc.message_id(), Some(pull.message_id.as_str()));
    }

    #[test]
    #[ignore = "needs ../shared/fixtures (third-party captures); .ci/run runs it when present"]
    fn tampered_fixture_is_failed_authentication_with_ref() {
        let text = String::from_utf8(testutil::fixture("as4net_signed_pullrequest.xml")).unwrap();
        let t = text.replacen("mpc/2", "mpc/9", 1);
        let e = parse_soap(&t).unwrap_err();
        assert_eq!(e.answer(), Answer::Ebms(EbmsCode::FailedAuthentication));
        assert_eq!(e.ref_to_message_id.as_deref(), Some("5be59681-51f1-4889-86d6-8d38e8294436@10.124.29.152"));
    }

    #[test]
    fn unsigned_pull_without_mpc_is_default_mpc() {
        let inc = parse_soap(&envelope(&signal("p1", None, "<eb:PullRequest/>"))).unwrap();
        assert_eq!(inc.pull.unwrap().mpc, DEFAULT_MPC);
        assert!(inc.signed.is_none());
        let inc = parse_soap(&envelope(&signal("p1", None, "<eb:PullRequest mpc=\" \"/>"))).unwrap();
        assert_eq!(inc.pull.unwrap().mpc, DEFAULT_MPC);
    }

    #[test]
    fn bundle_of_pull_receipt_and_error() {
        let xml = envelope(&format!(
            "{}{}{}",
            signal("p1", None, "<eb:PullRequest mpc=\"urn:mpc:a\"/>"),
            signal("r1", Some("um-1"), "<eb:Receipt><x:Anything xmlns:x=\"urn:x\"/></eb:Receipt>"),
            signal(
                "e1",
                Some("um-2"),
                "<eb:Error errorCode=\"EBMS:0303\" severity=\"failure\" shortDescription=\"DecompressionFailure\"><eb:Description xml:lang=\"en\">bad gzip</eb:Description></eb:Error><eb:Error errorCode=\"X:1\" refToMessageInError=\"um-3\" severity=\"odd\"/>"
            ),
        ));
        let inc = parse_soap(&xml).unwrap();
        assert_eq!(inc.pull.as_ref().unwrap().mpc, "urn:mpc:a");
        assert_eq!(inc.receipts, vec![ReceiptIn {
            message_id: "r1".into(),
            timestamp: "2024-01-01T00:00:00Z".into(),
            ref_to_message_id: "um-1".into()
        }]);
        assert_eq!(inc.errors.len(), 2);
        assert_eq!(inc.errors[0].known, Some(EbmsCode::DecompressionFailure));
        assert_eq!(inc.errors[0].description.as_deref(), Some("bad gzip"));
        assert_eq!(inc.errors[1].ref_to_message_id.as_deref(), Some("um-3"));
        assert_eq!(inc.errors[1].known, None);
        assert_eq!(inc.errors[1].severity, Severity::Failure);
        assert_eq!(inc.settled_message_ids(), vec!["um-1", "um-2", "um-3"]);
        assert_eq!(inc.message_id(), Some("p1"));
    }

    #[test]
    #[ignore = "needs ../shared/fixtures (third-party captures); .ci/run runs it when present"]
    fn pull_request_packaged_as_soap_with_attachments() {
        let bytes = testutil::fixture("as4net_signed_pullrequest.xml");
        let (ct, body) = package::assemble("bnd", "soap@x", &bytes, &[]).unwrap();
        let inc = parse(&ct, &body, &Limits::default()).unwrap();
        assert_eq!(inc.signed.unwrap().thumbprint, "5E320E3A1DDAC6606E12816B2744AE1EE2EE7BF5");
        // An attachment the signature does not cover is refused.
        let extra = [package::OutPart { content_id: "x@y", content_type: "text/plain", bytes: b"x" }];
        let (ct, body) = package::assemble("bnd", "soap@x", &bytes, &extra).unwrap();
        let e = parse(&ct, &body, &Limits::default()).unwrap_err();
        assert_eq!(e.answer(), Answer::Ebms(EbmsCode::FailedAuthentication));
    }

    #[test]
    fn receipt_alone() {
        let inc = parse_soap(&envelope(&signal("r1", Some("um-1"), "<eb:Receipt/>"))).unwrap();
        assert!(inc.pull.is_none());
        assert_eq!(inc.settled_message_ids(), vec!["um-1"]);
        assert_eq!(inc.message_id(), Some("r1"));
    }

    #[test]
    fn header_errors_map_to_ebms_codes() {
        let cases: Vec<(String, Answer, Option<&str>)> = vec![
            (envelope(""), Answer::Ebms(EbmsCode::InvalidHeader), None),
            (envelope(&signal("r1", None, "<eb:Receipt/>")), Answer::Ebms(EbmsCode::InvalidHeader), Some("r1")),
            (envelope(&signal("s1", None, "")), Answer::Ebms(EbmsCode::InvalidHeader), Some("s1")),
            (envelope(&signal("s1", None, "<eb:Bogus/>")), Answer::Ebms(EbmsCode::ValueNotRecognized), Some("s1")),
            (envelope(&signal("s1", None, "<eb:Error severity=\"failure\"/>")), Answer::Ebms(EbmsCode::InvalidHeader), Some("s1")),
            (
                envelope("<eb:SignalMessage><eb:MessageInfo><eb:Timestamp>t</eb:Timestamp></eb:MessageInfo><eb:PullRequest/></eb:SignalMessage>"),
                Answer::Ebms(EbmsCode::InvalidHeader),
                None,
            ),
            (
                envelope(&format!("{}{}", signal("a", None, "<eb:PullRequest/>"), signal("b", None, "<eb:PullRequest/>"))),
                Answer::Ebms(EbmsCode::InvalidHeader),
                Some("b"),
            ),
            (
                envelope("<eb:UserMessage><eb:MessageInfo><eb:Timestamp>t</eb:Timestamp><eb:MessageId>u1</eb:MessageId></eb:MessageInfo></eb:UserMessage>"),
                Answer::Ebms(EbmsCode::ProcessingModeMismatch),
                Some("u1"),
            ),
            (
                format!("<S:Envelope xmlns:S=\"{}\"><S:Body/></S:Envelope>", ns::SOAP12),
                Answer::Ebms(EbmsCode::InvalidHeader),
                None,
            ),
        ];
        for (xml, answer, ref_to) in cases {
            let e = parse_soap(&xml).unwrap_err();
            assert_eq!(e.answer(), answer, "{xml}: {e}");
            assert_eq!(e.ref_to_message_id.as_deref(), ref_to, "{xml}");
        }
    }

    #[test]
    fn hostile_and_malformed_bodies_are_bad_requests() {
        let deep = format!("<S:Envelope xmlns:S=\"{}\">{}", ns::SOAP12, "<a>".repeat(10_000))
            + &"</a>".repeat(10_000)
            + "</S:Envelope>";
        let dtd = format!(
            "<!DOCTYPE S:Envelope [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{}",
            envelope(&signal("p", None, "<eb:PullRequest mpc=\"&x;\"/>"))
        );
        let soap11 = "<S:Envelope xmlns:S=\"http://schemas.xmlsoap.org/soap/envelope/\"><S:Body/></S:Envelope>";
        let huge = " ".repeat(Limits::default().max_bytes + 1);
        for bad in [deep.as_str(), dtd.as_str(), "garbage", "", "<a/>", soap11, "<S:Envelope xmlns:S=\"urn:x\"/>", huge.as_str()] {
            let e = parse_soap(bad).unwrap_err();
            assert_eq!(e.answer(), Answer::BadRequest, "{}: {e}", &bad[..bad.len().min(60)]);
        }
        // Random bytes never panic.
        let mut seed = 0x1234_5678u32;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    b"<>/=\"' :aeS!-?[]&;x"[(seed % 19) as usize]
                })
                .collect();
            let _ = parse("application/soap+xml", &bytes, &Limits::default());
            let _ = parse("multipart/related; boundary=x", &bytes, &Limits::default());
        }
    }
}
