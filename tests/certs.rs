//! Certificates that never expire by surprise: check-config and start-up warn about one that
//! expires within 30 days, a station whose signing certificate has expired is refused with a
//! clear message, and /metrics exports `edinode_certificate_expiry_seconds{kind,owner}` for
//! every certificate of the configuration.

use crate::common::*;
use std::process::Command;

/// A certificate valid until `days` from now (negative: expired that long ago).
fn cert_until(dir: &std::path::Path, cn: &str, days: i64) -> Identity {
    // An hour more, so the whole days left are `days` however long the test takes.
    identity_valid(dir, cn, unix_now() - 400 * 86_400, unix_now() + days * 86_400 + 3600)
}

#[test]
fn expiring_certificates_are_warned_about_and_exported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ours = identity(dir, "certs-station");
    let theirs = cert_until(dir, "certs-partner-soon", 10);
    let cfg = ConfigBuilder::new(dir).station("st", "certs-st", &ours).partner("p", "certs-p", "st", &[&theirs.cert_pem], "").write(dir);

    let check = Command::new(env!("CARGO_BIN_EXE_edinode")).arg("--config").arg(&cfg).arg("check-config").output().unwrap();
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "expiring is a warning, not a refusal: {out}{}", String::from_utf8_lossy(&check.stderr));
    let warning = out.lines().find(|l| l.starts_with("warning: partners.p.verify_certs[0]")).unwrap_or_else(|| panic!("no warning: {out}"));
    assert!(warning.contains("CN=certs-partner-soon") && warning.contains("expires in 10 day(s)"), "{warning}");
    assert_eq!(out.matches("warning:").count(), 1, "only the expiring certificate: {out}");

    let node = start_node(&cfg, dir, &[], &[]);
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(log.contains("Certificate expires soon.") && log.contains("partners.p.verify_certs[0]"), "start-up warns: {log}");

    let metrics = reqwest::blocking::get(format!("{}/metrics", node.admin_url.as_ref().unwrap())).unwrap().text().unwrap();
    let value = |kind: &str, owner: &str| -> i64 {
        let prefix = format!("edinode_certificate_expiry_seconds{{kind=\"{kind}\",owner=\"{owner}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(prefix.as_str())).unwrap_or_else(|| panic!("no {prefix} in {metrics}")).parse().unwrap()
    };
    let soon = value("partner_verify", "p");
    assert!((10 * 86_400 + 3600 - 120..=10 * 86_400 + 3600).contains(&soon), "{soon}");
    let station = value("station_signing", "st");
    assert!((364 * 86_400..=365 * 86_400).contains(&station), "{station}");
}

#[test]
fn an_expired_signing_certificate_is_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let expired = cert_until(dir, "certs-expired", -2);
    let cfg = ConfigBuilder::new(dir).station("old", "certs-old", &expired).write(dir);

    let check = Command::new(env!("CARGO_BIN_EXE_edinode")).arg("--config").arg(&cfg).arg("check-config").output().unwrap();
    let err = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(2), "{err}");
    assert!(err.contains("stations.old.signing: the signing certificate (CN=certs-expired") && err.contains("expired on"), "{err}");

    // The node does not start with it, and says why.
    let serve = Command::new(env!("CARGO_BIN_EXE_edinode")).arg("--config").arg(&cfg).arg("serve").current_dir(dir).output().unwrap();
    let err = String::from_utf8_lossy(&serve.stderr);
    assert!(!serve.status.success());
    assert!(err.contains("stations.old.signing") && err.contains("cannot sign"), "{err}");
    assert!(!String::from_utf8_lossy(&serve.stdout).contains("edinode ready"));
}
