//! Judging a partner's MDN against the message we sent: delivered, failed, or refused (the MDN
//! settles nothing), one [`Refusal`] per reason.

use super::{Mic, MdnError, ParsedMdn};
use crate::error::Disposition;
use crate::mime;
use crate::unwrap::mic::{AltMic, MicBasis};

/// What the sender of the original message should conclude from an MDN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MdnVerdict {
    /// Processed (or processed with a warning, e.g. duplicate-document), trustworthy, and the
    /// MIC matches: the message is delivered. `mic_note`: the MIC is one of an unsigned
    /// message's accepted non-RFC forms, and which (for the message's status).
    Delivered { mic_note: Option<String> },
    /// A trustworthy MDN in which the partner reports a failure: the message failed.
    Failed(Disposition),
    /// The MDN settles nothing: it is recorded on the message with the reason, and the message
    /// keeps waiting for its MDN (asynchronous) or fails with that reason (synchronous).
    Refused(Refusal),
}

/// Why an MDN cannot settle the message it claims to answer. One row per reason, each with
/// its unit test (`mdn_judge_*`). The text (Display) may go back to whoever posted the MDN, so
/// it never tells our MIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not readable as an MDN.
    Malformed(String),
    /// The signature does not verify against the partner's certificates (altered, or signed by
    /// someone else).
    SignatureInvalid(String),
    /// A signed MDN was asked for (or is required) and this one is not signed. `claims` is the
    /// disposition it states, which nobody vouches for.
    Unsigned { claims: Disposition },
    /// It answers another Message-ID (as sent, angle brackets kept).
    OtherMessage { answers: String },
    /// Positive, for a message we signed, without a Received-Content-MIC.
    MicMissing,
    /// The partner computed another MIC: what it received is not what we sent. `got` is the
    /// Received-Content-MIC field as sent.
    MicMismatch { expected: Mic, got: String },
    /// The MIC of an unsigned message is over another basis than RFC 4130 section 7.3.1 names
    /// (or in another algorithm than asked), and the agreement is strict (`strict_mic`).
    MicNotRfc { basis: MicBasis },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Malformed(r) => write!(f, "unreadable MDN: {r}"),
            Refusal::SignatureInvalid(r) => write!(f, "MDN signature invalid: {r}"),
            Refusal::Unsigned { claims } => write!(
                f,
                "the MDN is not signed but a signed MDN was requested (it claims {})",
                claims.field_value()
            ),
            Refusal::OtherMessage { answers } => {
                write!(f, "the MDN answers another message: {answers}")
            }
            Refusal::MicMissing => write!(
                f,
                "the MDN has no Received-Content-MIC for a signed message"
            ),
            Refusal::MicMismatch { got, .. } => write!(
                f,
                "MIC mismatch: the MDN says {got}, not the MIC of what we sent"
            ),
            Refusal::MicNotRfc { basis } => write!(
                f,
                "MIC mismatch: the MDN's MIC is over {} (or in another algorithm than asked), not as RFC 4130 section 7.3.1 says, and strict_mic is on",
                basis.describe()
            ),
        }
    }
}

/// The message an MDN has to answer, and what we asked of that MDN.
#[derive(Debug, Clone, Copy)]
pub struct Awaited<'a> {
    /// Our Message-ID (angle brackets optional).
    pub message_id: &'a str,
    /// The MIC we computed over what we sent.
    pub mic: &'a Mic,
    /// We signed the message: a positive MDN must carry a Received-Content-MIC.
    pub message_signed: bool,
    /// Only a signed MDN may settle the message: we asked for one, or the agreement requires
    /// one whatever we asked.
    pub mdn_signed: bool,
    /// For an unsigned message, the MICs over the bases other receivers use
    /// ([`crate::outbound::Built::mic_alternatives`]).
    pub alternatives: &'a [AltMic],
    /// Accept only the RFC 4130 MIC (and the RFC basis in an algorithm the receiver was free to
    /// choose).
    pub strict_mic: bool,
}

/// The digest part of a Received-Content-MIC equals ours: as strings (trimmed), or as bytes once
/// decoded (line breaks or padding differences).
fn mic_matches(raw: &str, expected: &Mic) -> bool {
    let got = raw.split_once(',').map(|(d, _)| d).unwrap_or(raw).trim();
    if got == expected.digest.trim() {
        return true;
    }
    match (
        mime::decode_transfer(got.as_bytes(), "base64"),
        mime::decode_transfer(expected.digest.trim().as_bytes(), "base64"),
    ) {
        (Ok(a), Ok(b)) => !a.is_empty() && a == b,
        _ => false,
    }
}

/// Judge a parsed MDN against the message we sent.
///
/// Order: an unreadable or badly signed MDN first, then a missing signature when one is
/// required (whatever the MDN claims, positive or negative: an unsigned "failed" from a
/// stranger must not fail the message either), then the message it answers, then the
/// disposition, then the MIC.
///
/// A missing Original-Message-ID is tolerated: a synchronous MDN is the answer to our own
/// request, and an asynchronous one is only ever matched to a message through that field.
///
/// A positive MDN without Received-Content-MIC is delivered only for a message we did not
/// sign: pyas2lib returns no MIC for unsigned messages, while RFC 4130 (section 7.3.1) makes
/// the MIC the proof of what a signed message's receiver got.
///
/// For an unsigned message, a MIC that is not the expected one but one of `alternatives` is
/// delivered with a note (`standard` ones without), or refused when the agreement is strict.
pub fn judge(parsed: Result<&ParsedMdn, &MdnError>, awaited: &Awaited<'_>) -> MdnVerdict {
    let refused = MdnVerdict::Refused;
    let p = match parsed {
        Ok(p) => p,
        Err(MdnError::SignatureInvalid { reason, .. }) => {
            return refused(Refusal::SignatureInvalid(reason.clone()));
        }
        Err(e) => return refused(Refusal::Malformed(e.to_string())),
    };
    if awaited.mdn_signed && !p.signed {
        return refused(Refusal::Unsigned {
            claims: p.disposition.clone(),
        });
    }
    if let Some(answers) = &p.original_message_id
        && !p.answers(awaited.message_id)
    {
        return refused(Refusal::OtherMessage {
            answers: answers.clone(),
        });
    }
    if !p.disposition.is_positive() {
        return MdnVerdict::Failed(p.disposition.clone());
    }
    let delivered = |mic_note| MdnVerdict::Delivered { mic_note };
    match &p.mic_raw {
        Some(raw) if mic_matches(raw, awaited.mic) => delivered(None),
        Some(raw) => match awaited.alternatives.iter().find(|a| mic_matches(raw, &a.mic)) {
            Some(a) if a.standard || !awaited.strict_mic => delivered(a.note(awaited.mic)),
            Some(a) => refused(Refusal::MicNotRfc { basis: a.basis }),
            None => refused(Refusal::MicMismatch {
                expected: awaited.mic.clone(),
                got: raw.clone(),
            }),
        },
        None if awaited.message_signed => refused(Refusal::MicMissing),
        None => delivered(None),
    }
}
