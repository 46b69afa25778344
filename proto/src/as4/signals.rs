//! Building signal messages: the pull sender's Error answers (EBMS:0004 not authorized,
//! EBMS:0006 empty MPC, EBMS:0101 failed authentication, ...), and Receipts and PullRequests
//! (what a pulling partner sends: for tests and clients).
//!
//! Several signals can be bundled in one eb:Messaging ([`build`]); an envelope can be signed
//! with our key (WS-Security, as the pull response is).
//!
//! The eb:Messaging and Body elements are written in exclusive-C14N form so that signing can
//! digest them as written (see [`super::wssec`]).

use serde::{Deserialize, Serialize};

use super::wssec::{self, SecurityIds, SigningKey, VerifiedReference};
use super::xml::{self, attr, leaf};
use super::{Answer, BuildError, EbmsCode, InboundError, Severity, ns};

/// The Content-Type of a plain SOAP 1.2 response.
pub const SOAP_CONTENT_TYPE: &str = "application/soap+xml; charset=UTF-8";

/// MessageInfo of a signal we build: given by the caller (proto draws no ids, reads no clock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalIds {
    pub message_id: String,
    /// xsd:dateTime, UTC, e.g. `2024-05-01T12:00:00.000Z`.
    pub timestamp: String,
}

/// One eb:Error to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: EbmsCode,
    pub severity: Severity,
    pub short_description: String,
    pub description: Option<String>,
}

impl ErrorDetail {
    /// The code with its standard severity and short description.
    pub fn new(code: EbmsCode) -> ErrorDetail {
        ErrorDetail {
            code,
            severity: code.default_severity(),
            short_description: code.short_description().to_string(),
            description: None,
        }
    }

    pub fn with_description(mut self, d: impl Into<String>) -> ErrorDetail {
        self.description = Some(d.into());
        self
    }

    /// EBMS:0004 failure: the authorization map denies this pull.
    pub fn not_authorized(mpc: &str) -> ErrorDetail {
        ErrorDetail::new(EbmsCode::Other)
            .with_description(format!("The receiver is not authorized to pull messages for this MPC: {mpc}"))
    }

    /// EBMS:0006 warning: nothing queued on the MPC.
    pub fn empty_mpc(mpc: &str) -> ErrorDetail {
        ErrorDetail::new(EbmsCode::EmptyMessagePartitionChannel)
            .with_description(format!("There is no message available for pulling from this MPC: {mpc}"))
    }

    /// The answer to an inbound failure that is answered with an ebMS error (failure
    /// severity, the failure's text as description); `None` when it is answered with HTTP 400.
    pub fn for_inbound(e: &InboundError) -> Option<ErrorDetail> {
        match e.answer() {
            Answer::Ebms(code) => Some(ErrorDetail {
                severity: Severity::Failure,
                ..ErrorDetail::new(code).with_description(e.error.to_string())
            }),
            Answer::BadRequest => None,
        }
    }
}

/// A signal to put into eb:Messaging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Signal {
    PullRequest {
        /// `None`: the default MPC, by omitting the attribute.
        mpc: Option<String>,
    },
    Receipt {
        ref_to_message_id: String,
        /// Echoed as ebbp:NonRepudiationInformation (the references of the signed user
        /// message, from [`wssec::SignatureInfo::references`]); may be empty.
        references: Vec<VerifiedReference>,
    },
    Error {
        ref_to_message_id: Option<String>,
        errors: Vec<ErrorDetail>,
    },
}

/// Builds a SOAP envelope holding these signals, each with its own MessageInfo; signed when
/// `signing` is given.
pub fn build(
    signals: &[(Signal, SignalIds)],
    signing: Option<(&SigningKey, &SecurityIds)>,
) -> Result<Vec<u8>, BuildError> {
    if signals.is_empty() {
        return Err(BuildError::Invalid { what: "signals", reason: "nothing to send".into() });
    }
    let sec = signing.map(|(_, ids)| ids);
    let mut m = String::new();
    messaging_open(&mut m, sec.map(|s| s.messaging_id.as_str()));
    for (signal, ids) in signals {
        m.push_str("<eb:SignalMessage>");
        let ref_to = match signal {
            Signal::Receipt { ref_to_message_id, .. } => Some(ref_to_message_id.as_str()),
            Signal::Error { ref_to_message_id, .. } => ref_to_message_id.as_deref(),
            Signal::PullRequest { .. } => None,
        };
        message_info(&mut m, ids, ref_to)?;
        match signal {
            Signal::PullRequest { mpc } => {
                m.push_str("<eb:PullRequest");
                if let Some(mpc) = mpc {
                    nonempty("mpc", mpc)?;
                    attr(&mut m, "mpc", mpc);
                }
                m.push_str("></eb:PullRequest>");
            }
            Signal::Receipt { references, .. } => {
                m.push_str("<eb:Receipt><ebbp:NonRepudiationInformation");
                attr(&mut m, "xmlns:ebbp", ns::EBBP);
                m.push('>');
                for r in references {
                    xml::check_chars("reference", &r.uri)?;
                    xml::check_chars("reference", &r.digest_method)?;
                    xml::check_chars("reference", &r.digest_value)?;
                    m.push_str("<ebbp:MessagePartNRInformation><ds:Reference");
                    attr(&mut m, "xmlns:ds", ns::DS);
                    attr(&mut m, "URI", &r.uri);
                    m.push_str("><ds:DigestMethod");
                    attr(&mut m, "Algorithm", &r.digest_method);
                    m.push_str("></ds:DigestMethod>");
                    leaf(&mut m, "ds:DigestValue", &[], &r.digest_value);
                    m.push_str("</ds:Reference></ebbp:MessagePartNRInformation>");
                }
                m.push_str("</ebbp:NonRepudiationInformation></eb:Receipt>");
            }
            Signal::Error { ref_to_message_id, errors } => {
                if errors.is_empty() {
                    return Err(BuildError::Invalid { what: "error signal", reason: "no eb:Error".into() });
                }
                for e in errors {
                    xml::check_chars("short description", &e.short_description)?;
                    // Attributes in C14N order (all unqualified: by name).
                    m.push_str("<eb:Error");
                    attr(&mut m, "category", e.code.category());
                    attr(&mut m, "errorCode", e.code.code());
                    attr(&mut m, "origin", e.code.origin());
                    if let Some(r) = ref_to_message_id {
                        attr(&mut m, "refToMessageInError", r);
                    }
                    attr(&mut m, "severity", e.severity.as_str());
                    attr(&mut m, "shortDescription", &e.short_description);
                    m.push('>');
                    if let Some(d) = &e.description {
                        xml::check_chars("description", d)?;
                        leaf(&mut m, "eb:Description", &[("xml:lang", "en")], d);
                    }
                    m.push_str("</eb:Error>");
                }
            }
        }
        m.push_str("</eb:SignalMessage>");
    }
    m.push_str("</eb:Messaging>");
    let body = body_element(sec.map(|s| s.body_id.as_str()));
    let env = match signing {
        Some((key, ids)) => {
            wssec::sign_envelope(key, ids, &m, &body, &[], wssec::AttachmentDigest::default())?
        }
        None => wssec::envelope(&[&m], &body),
    };
    Ok(env.into_bytes())
}

/// An unsigned Error signal about `ref_to` (the PullRequest or message in error).
pub fn error(ref_to: Option<&str>, detail: &ErrorDetail, ids: &SignalIds) -> Result<Vec<u8>, BuildError> {
    let s = Signal::Error { ref_to_message_id: ref_to.map(str::to_string), errors: vec![detail.clone()] };
    build(&[(s, ids.clone())], None)
}

/// An unsigned Receipt for the user message `ref_to`.
pub fn receipt(ref_to: &str, ids: &SignalIds) -> Result<Vec<u8>, BuildError> {
    let s = Signal::Receipt { ref_to_message_id: ref_to.to_string(), references: Vec::new() };
    build(&[(s, ids.clone())], None)
}

// ---------------------------------------------------------------------------------------------
// Shared with user_message: eb:Messaging and Body in canonical form
// ---------------------------------------------------------------------------------------------

fn nonempty(what: &'static str, v: &str) -> Result<(), BuildError> {
    if v.trim().is_empty() {
        return Err(BuildError::Invalid { what, reason: "empty".into() });
    }
    xml::check_chars(what, v)
}

/// `<eb:Messaging ...>` with its namespace declarations and attributes in C14N order.
pub(crate) fn messaging_open(out: &mut String, id: Option<&str>) {
    out.push_str("<eb:Messaging");
    attr(out, "xmlns:eb", ns::EB);
    attr(out, "xmlns:s12", ns::SOAP12);
    if let Some(id) = id {
        attr(out, "xmlns:wsu", ns::WSU);
        // wsu's URI (http://docs...) sorts before SOAP 1.2's (http://www...).
        attr(out, "wsu:Id", id);
    }
    attr(out, "s12:mustUnderstand", "true");
    out.push('>');
}

/// An empty SOAP Body, with a wsu:Id when signed.
pub(crate) fn body_element(id: Option<&str>) -> String {
    let mut b = String::from("<s12:Body");
    attr(&mut b, "xmlns:s12", ns::SOAP12);
    if let Some(id) = id {
        attr(&mut b, "xmlns:wsu", ns::WSU);
        attr(&mut b, "wsu:Id", id);
    }
    b.push_str("></s12:Body>");
    b
}

pub(crate) fn message_info(out: &mut String, ids: &SignalIds, ref_to: Option<&str>) -> Result<(), BuildError> {
    nonempty("message id", &ids.message_id)?;
    nonempty("timestamp", &ids.timestamp)?;
    out.push_str("<eb:MessageInfo>");
    leaf(out, "eb:Timestamp", &[], &ids.timestamp);
    leaf(out, "eb:MessageId", &[], &ids.message_id);
    if let Some(r) = ref_to {
        nonempty("ref to message id", r)?;
        leaf(out, "eb:RefToMessageId", &[], r);
    }
    out.push_str("</eb:MessageInfo>");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unsigned PullRequest (`None`: the default MPC).
    fn pull_request(mpc: Option<&str>, ids: &SignalIds) -> Result<Vec<u8>, BuildError> {
        build(&[(Signal::PullRequest { mpc: mpc.map(str::to_string) }, ids.clone())], None)
    }
    use crate::as4::signal::{self, Incoming};
    use crate::as4::{DEFAULT_MPC, Limits, testutil};

    fn ids(id: &str) -> SignalIds {
        SignalIds { message_id: id.into(), timestamp: "2024-05-01T12:00:00.000Z".into() }
    }

    fn reparse(bytes: &[u8]) -> Incoming {
        signal::parse(SOAP_CONTENT_TYPE, bytes, &Limits::default()).unwrap()
    }

    #[test]
    fn empty_mpc_error_is_a_warning_referencing_the_pull_request() {
        let b = error(Some("pull-1"), &ErrorDetail::empty_mpc(DEFAULT_MPC), &ids("err-1")).unwrap();
        let text = String::from_utf8(b.clone()).unwrap();
        assert!(text.contains("errorCode=\"EBMS:0006\""));
        assert!(text.contains("severity=\"warning\""));
        assert!(text.contains("shortDescription=\"EmptyMessagePartitionChannel\""));
        assert!(text.contains("<eb:RefToMessageId>pull-1</eb:RefToMessageId>"));
        let inc = reparse(&b);
        assert_eq!(inc.errors.len(), 1);
        assert_eq!(inc.errors[0].known, Some(EbmsCode::EmptyMessagePartitionChannel));
        assert_eq!(inc.errors[0].severity, Severity::Warning);
        assert_eq!(inc.errors[0].ref_to_message_id.as_deref(), Some("pull-1"));
        assert_eq!(inc.errors[0].signal_message_id, "err-1");
    }

    #[test]
    fn not_authorized_and_failed_authentication() {
        let b = error(Some("p"), &ErrorDetail::not_authorized("urn:mpc"), &ids("e")).unwrap();
        let inc = reparse(&b);
        assert_eq!(inc.errors[0].known, Some(EbmsCode::Other));
        assert_eq!(inc.errors[0].severity, Severity::Failure);
        assert!(inc.errors[0].description.as_deref().unwrap().contains("not authorized"));
        let b = error(None, &ErrorDetail::new(EbmsCode::FailedAuthentication), &ids("e")).unwrap();
        let inc = reparse(&b);
        assert_eq!(inc.errors[0].known, Some(EbmsCode::FailedAuthentication));
        assert_eq!(inc.errors[0].ref_to_message_id, None);
    }

    #[test]
    fn receipt_and_pull_request_round_trip() {
        let inc = reparse(&receipt("um-1", &ids("r-1")).unwrap());
        assert_eq!(inc.settled_message_ids(), vec!["um-1"]);
        let inc = reparse(&pull_request(None, &ids("p-1")).unwrap());
        assert_eq!(inc.pull.unwrap().mpc, DEFAULT_MPC);
        let inc = reparse(&pull_request(Some("urn:a&b"), &ids("p-1")).unwrap());
        assert_eq!(inc.pull.unwrap().mpc, "urn:a&b");
    }

    #[test]
    fn signed_bundle_verifies_and_names_the_signer() {
        let key = testutil::signing_key("partner");
        let sec = SecurityIds { messaging_id: "m-1".into(), body_id: "b-1".into(), bst_id: "t-1".into() };
        let refs = vec![VerifiedReference {
            uri: "#x".into(),
            digest_method: "http://www.w3.org/2001/04/xmlenc#sha256".into(),
            digest_value: "AAAA".into(),
        }];
        let b = build(
            &[
                (Signal::PullRequest { mpc: Some("urn:mpc:1".into()) }, ids("p-1")),
                (Signal::Receipt { ref_to_message_id: "um-1".into(), references: refs }, ids("r-1")),
                (
                    Signal::Error {
                        ref_to_message_id: Some("um-2".into()),
                        errors: vec![ErrorDetail::new(EbmsCode::DeliveryFailure).with_description("x < y & \"z\"\r\n")],
                    },
                    ids("e-1"),
                ),
            ],
            Some((&key, &sec)),
        )
        .unwrap();
        let inc = reparse(&b);
        let der = key.cert.to_der().unwrap();
        assert_eq!(inc.signed.as_ref().unwrap().thumbprint, wssec::thumbprint(&der));
        assert_eq!(inc.pull.as_ref().unwrap().mpc, "urn:mpc:1");
        assert_eq!(inc.settled_message_ids(), vec!["um-1", "um-2"]);
        assert_eq!(inc.errors[0].description.as_deref(), Some("x < y & \"z\""));
        // One changed byte inside eb:Messaging breaks it.
        let t = String::from_utf8(b).unwrap().replacen("urn:mpc:1", "urn:mpc:2", 1);
        let e = signal::parse(SOAP_CONTENT_TYPE, t.as_bytes(), &Limits::default()).unwrap_err();
        assert_eq!(e.answer(), Answer::Ebms(EbmsCode::FailedAuthentication));
        assert_eq!(e.ref_to_message_id.as_deref(), Some("p-1"));
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(error(None, &ErrorDetail::new(EbmsCode::Other), &ids("")).is_err());
        assert!(error(None, &ErrorDetail::new(EbmsCode::Other).with_description("\u{0}"), &ids("a")).is_err());
        assert!(build(&[], None).is_err());
        let key = testutil::signing_key("k");
        let bad = SecurityIds { messaging_id: "1x".into(), body_id: "b".into(), bst_id: "t".into() };
        assert!(build(&[(Signal::PullRequest { mpc: None }, ids("p"))], Some((&key, &bad))).is_err());
    }
}
