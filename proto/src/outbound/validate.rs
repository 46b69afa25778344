//! Checks on what the caller hands in (identifiers, header values, URLs): anything that
//! would break a header line or the AS2 grammar is refused before a byte is written.

use super::OutboundError;

pub(super) fn invalid(field: &'static str, reason: impl Into<String>) -> OutboundError {
    OutboundError::Invalid {
        field,
        reason: reason.into(),
    }
}

pub(super) fn check_seed(seed: &str) -> Result<(), OutboundError> {
    let ok = (1..=50).contains(&seed.len())
        && seed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"'()+_,-./:=?".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "boundary_seed",
            "must be 1 to 50 of A-Z a-z 0-9 '()+_,-./:=?",
        ))
    }
}

pub(super) fn check_as2_name(field: &'static str, name: &str) -> Result<(), OutboundError> {
    let n = name.chars().count();
    if (1..=128).contains(&n) && name.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        Ok(())
    } else {
        Err(invalid(
            field,
            "must be 1 to 128 printable ASCII characters",
        ))
    }
}

pub(super) fn check_message_id(id: &str) -> Result<(), OutboundError> {
    let ok = id.len() > 2
        && id.len() <= 998
        && id.starts_with('<')
        && id.ends_with('>')
        && id.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "Message-ID",
            "must be <...> of printable ASCII without spaces",
        ))
    }
}

/// A header value: one line of printable ASCII (empty allowed or not).
pub(super) fn check_line(field: &'static str, v: &str, empty_ok: bool) -> Result<(), OutboundError> {
    if (!empty_ok && v.trim().is_empty())
        || v.len() > 998
        || !v.bytes().all(|b| (0x20..=0x7e).contains(&b))
    {
        return Err(invalid(
            field,
            format!(
                "{:.60} is not one line of printable ASCII",
                v.escape_debug()
            ),
        ));
    }
    Ok(())
}

pub(super) fn check_url(url: &str) -> Result<(), OutboundError> {
    let l = url.to_ascii_lowercase();
    if !(l.starts_with("http://") || l.starts_with("https://"))
        || !url.bytes().all(|b| b.is_ascii_graphic())
        || url.len() > 2000
    {
        return Err(invalid(
            "Receipt-Delivery-Option",
            format!("{:.80} is not an http(s) URL", url.escape_debug()),
        ));
    }
    Ok(())
}
