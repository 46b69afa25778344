//! What `[partners.X.policy]` and `[partners.X.outbound]` accept, and that a refusal names the
//! file, the key and the reason.

use super::outbound::outbound_profile;
use super::*;
use edinode_proto::alg::{ContentCipher, DigestAlg, MicSpelling, SignaturePadding};
use edinode_proto::outbound::{Compression, MdnMode, MdnRequest};
use edinode_proto::profile::{OnMdnTimeout, OutboundProfile};

/// The settings of the defaults and `text` as the file.
fn with(text: &str) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("edinode.toml");
    std::fs::write(&f, text).unwrap();
    load(Some(&f)).map(|(s, _)| s)
}

/// A partner `p` with these `[partners.p.policy]` and `[partners.p.outbound]` lines.
fn partner(policy: &str, outbound: &str) -> String {
    format!("[partners.p]\nas2_id = \"p\"\nstation = \"st\"\n[partners.p.policy]\n{policy}\n[partners.p.outbound]\n{outbound}\n")
}

fn outbound(lines: &str) -> OutboundConfig {
    with(&partner("", lines)).unwrap().partners.remove("p").unwrap().outbound
}

/// The refusal of these outbound lines, which must name the file.
fn refused(policy: &str, outbound: &str) -> ConfigError {
    let e = with(&partner(policy, outbound)).expect_err("must be refused");
    assert!(e.to_string().contains("edinode.toml"), "{e}");
    e
}

fn resolved(o: &OutboundConfig, has_enc_cert: bool, public_url: &str) -> Result<OutboundProfile, ConfigError> {
    outbound_profile("edinode.toml", "partners.p", o, has_enc_cert, public_url)
}

#[test]
fn the_example_configuration_loads() {
    let (s, _) = load(Some(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml"))).unwrap();
    let p = &s.partners["globex"].policy;
    assert!(p.require_signed && p.require_encrypted);
    assert_eq!(p.accepted_digests, [DigestAlg::Sha256, DigestAlg::Sha384, DigestAlg::Sha512]);
    assert_eq!((p.mic_spelling, p.mdn_padding, p.algorithm_protection), (MicSpelling::Rfc5751, SignaturePadding::Pkcs1v15, false));
}

#[test]
fn policy_keys_are_read_into_the_policy() {
    let policy = "require_signed = true\naccepted_digests = [\"SHA-256\", \"sha1\"]\naccepted_ciphers = [\"3des\", \"AES256-GCM\"]\nmic_spelling = \"compact\"\npss = true\nbinary_mic = true\nalgorithm_protection = true";
    let p = with(&partner(policy, "")).unwrap().partners["p"].policy.clone();
    assert!(p.require_signed && !p.require_encrypted && p.algorithm_protection);
    assert_eq!(p.accepted_digests, [DigestAlg::Sha256, DigestAlg::Sha1]);
    assert_eq!(p.accepted_ciphers, [ContentCipher::Des3, ContentCipher::Aes256Gcm]);
    assert_eq!((p.mic_spelling, p.mdn_padding), (MicSpelling::Compact, SignaturePadding::Pss));
    // Without the section: the defaults.
    let s = with("[partners.p]\nas2_id = \"p\"\nstation = \"st\"\n").unwrap();
    let p = &s.partners["p"].policy;
    assert!(!p.require_signed && p.accepted_digests.is_empty() && p.accepted_ciphers.is_empty());
    assert_eq!((p.mic_spelling, p.mdn_padding), (MicSpelling::Rfc5751, SignaturePadding::Pkcs1v15));
}

#[test]
fn a_bad_policy_value_is_refused_with_its_key_and_the_accepted_values() {
    let e = refused("accepted_digests = [\"sha-256\", \"sha3-256\"]", "");
    assert_eq!(e.key, "partners.p.policy.accepted_digests[1]");
    assert!(e.reason.contains("sha3-256") && e.reason.contains("sha512"), "{e}");
    let e = refused("accepted_ciphers = [\"rc2\"]", "");
    assert_eq!(e.key, "partners.p.policy.accepted_ciphers[0]");
    assert!(e.reason.contains("rc2") && e.reason.contains("aes256-cbc"), "{e}");
    let e = refused("mic_spelling = \"short\"", "");
    assert_eq!(e.key, "partners.p.policy.mic_spelling");
    assert!(e.reason.contains("short") && e.reason.contains("hyphenated"), "{e}");
    let e = refused("pss = \"maybe\"", "");
    assert_eq!(e.key, "partners.p.policy.pss");
    let e = refused("requre_signed = true", "");
    assert_eq!(e.key, "partners.p.policy");
    assert!(e.reason.contains("requre_signed"), "{e}");
}

#[test]
fn outbound_keys_take_every_spelling_they_took_as_strings() {
    let o = outbound("");
    assert_eq!((o.sign, o.encrypt, o.compress, o.mdn, o.on_mdn_timeout), (Some(DigestAlg::Sha256), None, Compression::None, MdnMode::Sync, OnMdnTimeout::Fail));
    assert_eq!(outbound("sign = \"SHA-512\"").sign, Some(DigestAlg::Sha512));
    assert_eq!(outbound("sign = \"None\"").sign, None);
    assert_eq!(outbound("sign = \"\"").sign, None);
    assert_eq!(outbound("encrypt = \"none\"").encrypt, Some(None));
    assert_eq!(outbound("encrypt = \"AES128-CBC\"").encrypt, Some(Some(ContentCipher::Aes128Cbc)));
    assert_eq!(outbound("encrypt = \"3des\"").encrypt, Some(Some(ContentCipher::Des3)));
    assert_eq!(outbound("compress = \"before\"").compress, Compression::BeforeSigning);
    assert_eq!(outbound("compress = \"After\"").compress, Compression::AfterSigning);
    assert_eq!(outbound("compress = \"\"").compress, Compression::None);
    assert_eq!(outbound("mdn = \"ASYNC\"").mdn, MdnMode::Async);
    assert_eq!(outbound("mdn = \"none\"").mdn, MdnMode::None);
    assert_eq!(outbound("on_mdn_timeout = \"resend\"").on_mdn_timeout, OnMdnTimeout::Resend);
}

#[test]
fn a_bad_outbound_value_is_refused_with_its_key_and_the_accepted_values() {
    for (line, key, words) in [
        ("sign = \"sha3\"", "sign", &["sha3", "sha256", "none"][..]),
        ("encrypt = \"rc4\"", "encrypt", &["rc4", "aes256-gcm", "none"]),
        ("compress = \"later\"", "compress", &["later", "none, before or after"]),
        ("mdn = \"maybe\"", "mdn", &["maybe", "none, sync or async"]),
        ("on_mdn_timeout = \"retry\"", "on_mdn_timeout", &["retry", "fail", "resend"]),
        ("attempts = \"many\"", "attempts", &["many"]),
    ] {
        let e = refused("", line);
        assert_eq!(e.key, format!("partners.p.outbound.{key}"), "{e}");
        assert!(words.iter().all(|w| e.reason.contains(w)), "{e}");
    }
    let e = refused("", "encrpyt = \"none\"");
    assert_eq!(e.key, "partners.p.outbound");
    assert!(e.reason.contains("encrpyt"), "{e}");
}

#[test]
fn outbound_defaults_follow_the_encryption_certificate_and_the_mdn_keys() {
    let o = resolved(&outbound(""), true, "").unwrap();
    assert_eq!((o.options.sign, o.options.encrypt), (Some(DigestAlg::Sha256), Some(ContentCipher::Aes256Cbc)));
    assert_eq!(o.options.mdn, MdnRequest::Sync { signed: Some(DigestAlg::Sha256) });
    assert_eq!((o.attempts, o.http.timeout_secs, o.on_mdn_timeout), (6, 60, OnMdnTimeout::Fail));
    assert_eq!(resolved(&outbound(""), false, "").unwrap().options.encrypt, None);
    assert_eq!(resolved(&outbound("encrypt = \"none\""), true, "").unwrap().options.encrypt, None);
    // An unsigned message asks for its signed MDN with SHA-256.
    let o = resolved(&outbound("sign = \"none\"\nmdn = \"async\""), false, "https://us.example/as2").unwrap();
    assert_eq!(o.options.mdn, MdnRequest::Async { url: "https://us.example/as2".into(), signed: Some(DigestAlg::Sha256) });
    let o = resolved(&outbound("sign = \"sha384\"\nmdn_signed = false\nattempts = 0\ntimeout_secs = 0"), false, "").unwrap();
    assert_eq!(o.options.mdn, MdnRequest::Sync { signed: None });
    assert_eq!((o.attempts, o.http.timeout_secs), (1, 1));
}

#[test]
fn outbound_keys_that_go_together_are_checked_together() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("client.pem");
    std::fs::write(&pem, "pem").unwrap();
    for (lines, enc_cert, key, words) in [
        ("encrypt = \"aes128-cbc\"".to_string(), false, "encrypt", "encryption_cert"),
        ("mdn = \"async\"".into(), true, "async_mdn_url", "public URL"),
        ("basic_auth_password = \"pw\"".into(), true, "basic_auth_user", "without a user"),
        (format!("client_cert = \"{}\"", pem.display()), true, "client_cert", "go together"),
        ("ca_cert = \"/nonexistent/ca.pem\"".into(), true, "ca_cert", "/nonexistent/ca.pem"),
    ] {
        let e = resolved(&outbound(&lines), enc_cert, "").expect_err(&lines);
        assert_eq!(e.key, format!("partners.p.outbound.{key}"), "{e}");
        assert!(e.to_string().contains("edinode.toml") && e.reason.contains(words), "{e}");
    }
    let o = resolved(&outbound(&format!("client_cert = \"{p}\"\nclient_key = \"{p}\"\nbasic_auth_user = \"u\"", p = pem.display())), true, "").unwrap();
    assert_eq!(o.http.client_identity_pem.as_deref(), Some(&b"pem\npem"[..]));
    assert_eq!(o.http.basic_auth, Some(("u".into(), String::new())));
}
