//! The pull authorization map (`config/Security/pull_authorizationmap.xml`): which signing
//! certificates (by SHA-1 thumbprint) may pull from which MPC.
//!
//! Two spellings of the file are read, namespace-agnostically:
//! - the documented one: `<PullRequestAuthorizationMap><AuthorizationEntry mpc=".."
//!   certificatethumprint=".." allowed="true"/></PullRequestAuthorizationMap>` (sic: "thumprint");
//! - the one AS4.NET ships: `<PullRequestAuthorizationMap><AuthorizationEntries
//!   xmlns="eu:edelivery:as4"><Authorization mpc=".." certificatethumbprint=".."
//!   allowed="true"/></AuthorizationEntries></PullRequestAuthorizationMap>`.
//!
//! Rules ([`AuthorizationMap::decide`]):
//! - an empty map authorizes every PullRequest, signed or not;
//! - otherwise an unsigned PullRequest is denied;
//! - a signed one is allowed when at least one entry has its MPC and thumbprint and every such
//!   entry says `allowed="true"` (an explicit `false` wins).
//!
//! AS4.NET differs in one case: it also allows any PullRequest for an MPC that has no entry at
//! all while other MPCs have entries. We follow the documented rule (deny), which fails closed.
//!
//! Thumbprints compare case-insensitively, ignoring spaces, colons and the invisible marks that
//! Windows' certificate dialog copies along (U+200E, U+200F, U+FEFF). MPCs compare exactly.

use serde::{Deserialize, Serialize};

use super::{As4Error, Limits};

/// One `AuthorizationEntry` / `Authorization`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationEntry {
    pub mpc: String,
    /// Normalized: upper-case hex digits only.
    pub thumbprint: String,
    pub allowed: bool,
}

/// The parsed map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationMap {
    pub entries: Vec<AuthorizationEntry>,
}

/// The outcome for one PullRequest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    Allowed,
    Denied,
}

/// Normalizes a thumbprint for comparison (see the module doc).
pub(crate) fn normalize_thumbprint(t: &str) -> String {
    t.chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, ':' | '\u{200E}' | '\u{200F}' | '\u{FEFF}'))
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

impl AuthorizationMap {
    /// Parses the file's bytes (either spelling). Entries without an `mpc` or thumbprint, or
    /// with an `allowed` value other than true/false/1/0, are errors: a typo in an access rule
    /// should stop the node, not silently change who can pull.
    pub fn parse(bytes: &[u8]) -> Result<AuthorizationMap, As4Error> {
        let limits = Limits { max_bytes: 4 * 1024 * 1024, max_depth: 16, max_nodes: 1_000_000, max_parts: 0 };
        let doc = super::xml::parse(bytes, &limits)?;
        let mut entries = Vec::new();
        for n in doc.descendants().filter(|n| n.is_element()) {
            if !matches!(n.tag_name().name(), "AuthorizationEntry" | "Authorization") {
                continue;
            }
            let attr = |name: &str| {
                n.attributes().find(|a| a.name().eq_ignore_ascii_case(name)).map(|a| a.value().trim())
            };
            let mpc = attr("mpc").filter(|m| !m.is_empty()).ok_or_else(|| {
                As4Error::ValueNotRecognized(format!("{} without mpc", n.tag_name().name()))
            })?;
            let thumbprint = attr("certificatethumbprint")
                .or_else(|| attr("certificatethumprint"))
                .map(normalize_thumbprint)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| As4Error::ValueNotRecognized(format!("entry for {mpc} without certificate thumbprint")))?;
            let allowed = match attr("allowed").map(|a| a.to_ascii_lowercase()).as_deref() {
                Some("true") | Some("1") => true,
                Some("false") | Some("0") => false,
                other => {
                    return Err(As4Error::ValueNotRecognized(format!(
                        "entry for {mpc}: allowed={other:?} (expected true or false)"
                    )));
                }
            };
            entries.push(AuthorizationEntry { mpc: mpc.to_string(), thumbprint, allowed });
        }
        Ok(AuthorizationMap { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Decides a PullRequest for `mpc` (the default MPC's URI when the request named none),
    /// signed by the certificate with this thumbprint (`None`: unsigned).
    pub fn decide(&self, mpc: &str, thumbprint: Option<&str>) -> Decision {
        if self.entries.is_empty() {
            return Decision::Allowed;
        }
        let Some(t) = thumbprint else {
            return Decision::Denied;
        };
        let t = normalize_thumbprint(t);
        let mut matching = self.entries.iter().filter(|e| e.mpc == mpc && e.thumbprint == t).peekable();
        if matching.peek().is_none() {
            return Decision::Denied;
        }
        if matching.all(|e| e.allowed) { Decision::Allowed } else { Decision::Denied }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::as4::DEFAULT_MPC;

    const T: &str = "5E320E3A1DDAC6606E12816B2744AE1EE2EE7BF5";

    const DOCUMENTED: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<PullRequestAuthorizationMap>
    <AuthorizationEntry mpc="my-pullrequest-mpc" certificatethumprint="5e320e3a1ddac6606e12816b2744ae1ee2ee7bf5" allowed="true" />
    <AuthorizationEntry mpc="http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/defaultMPC" certificatethumprint="AAAA" allowed="true" />
</PullRequestAuthorizationMap>"#;

    const AS4NET: &str = r#"<?xml version="1.0"?>
<PullRequestAuthorizationMap xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <AuthorizationEntries xmlns="eu:edelivery:as4">
    <!-- Define PullRequest-Authorization entries like this:
    <Authorization mpc="mpc1" certificatethumbprint="abcdefgh" allowed="true" />
    -->
    <Authorization mpc="componenttest-mpc" certificatethumbprint="5e320e3a1ddac6606e12816b2744ae1ee2ee7bf5" allowed="true" />
    <Authorization mpc="blocked-mpc" certificatethumbprint="5E320E3A1DDAC6606E12816B2744AE1EE2EE7BF5" allowed="false" />
  </AuthorizationEntries>
</PullRequestAuthorizationMap>"#;

    #[test]
    fn documented_form() {
        let m = AuthorizationMap::parse(DOCUMENTED.as_bytes()).unwrap();
        assert_eq!(m.entries.len(), 2);
        assert_eq!(m.decide("my-pullrequest-mpc", Some(T)), Decision::Allowed);
        assert_eq!(m.decide("my-pullrequest-mpc", Some(&T.to_lowercase())), Decision::Allowed);
        assert_eq!(m.decide("my-pullrequest-mpc", Some("AAAA")), Decision::Denied);
        assert_eq!(m.decide("other-mpc", Some(T)), Decision::Denied);
        assert_eq!(m.decide(DEFAULT_MPC, Some("aaaa")), Decision::Allowed);
        assert_eq!(m.decide(DEFAULT_MPC, Some(T)), Decision::Denied);
    }

    #[test]
    fn as4net_form_comment_is_not_an_entry() {
        let m = AuthorizationMap::parse(AS4NET.as_bytes()).unwrap();
        assert_eq!(m.entries.len(), 2);
        assert_eq!(m.decide("componenttest-mpc", Some(T)), Decision::Allowed);
        assert_eq!(m.decide("mpc1", Some("ABCDEFGH")), Decision::Denied);
        assert_eq!(m.decide("blocked-mpc", Some(T)), Decision::Denied);
    }

    #[test]
    fn unsigned_is_allowed_only_with_an_empty_map() {
        let empty = AuthorizationMap::parse(b"<PullRequestAuthorizationMap/>").unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.decide("any", None), Decision::Allowed);
        assert_eq!(empty.decide(DEFAULT_MPC, Some(T)), Decision::Allowed);
        let m = AuthorizationMap::parse(AS4NET.as_bytes()).unwrap();
        assert_eq!(m.decide("componenttest-mpc", None), Decision::Denied);
        // The shipped AS4.NET default: an empty AuthorizationEntries element.
        let shipped = AuthorizationMap::parse(br#"<PullRequestAuthorizationMap><AuthorizationEntries xmlns="eu:edelivery:as4"/></PullRequestAuthorizationMap>"#).unwrap();
        assert_eq!(shipped.decide("x", None), Decision::Allowed);
    }

    #[test]
    fn false_wins_over_true() {
        let xml = format!(
            r#"<m><AuthorizationEntry mpc="a" certificatethumprint="{T}" allowed="true"/><AuthorizationEntry mpc="a" certificatethumprint="{}" allowed="false"/></m>"#,
            T.to_lowercase()
        );
        let m = AuthorizationMap::parse(xml.as_bytes()).unwrap();
        assert_eq!(m.decide("a", Some(T)), Decision::Denied);
    }

    #[test]
    fn thumbprints_normalize() {
        assert_eq!(normalize_thumbprint("\u{200E}5e 32:0e"), "5E320E");
        let m = AuthorizationMap::parse(br#"<m><Authorization mpc="a" certificatethumbprint="5e 32 0e" allowed="TRUE"/></m>"#).unwrap();
        assert_eq!(m.decide("a", Some("5E320E")), Decision::Allowed);
    }

    #[test]
    fn bad_files_are_errors() {
        for bad in [
            &br#"<m><Authorization certificatethumbprint="a" allowed="true"/></m>"#[..],
            br#"<m><Authorization mpc="a" allowed="true"/></m>"#,
            br#"<m><Authorization mpc="a" certificatethumbprint="a" allowed="yes"/></m>"#,
            br#"<m><Authorization mpc="a" certificatethumbprint="a"/></m>"#,
            br#"<!DOCTYPE m><m/>"#,
            b"not xml",
        ] {
            assert!(AuthorizationMap::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
