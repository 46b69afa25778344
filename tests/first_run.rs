//! First run as the README's quick start does it: `edinode init` writes a configuration that
//! checks out, `serve` runs it, `edinode send --partner loopback FILE` sends a file to the node
//! itself and reports the MDN; the file lands in the inbox and the MDN is stored. A node without
//! any station says what to do.

use crate::common::*;
use std::process::Command;

fn edinode() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edinode"))
}

#[test]
fn init_serve_send_delivers_to_the_inbox_and_reports_the_mdn() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let port = free_port();
    let out = edinode().args(["init", dir.to_str().unwrap(), "--port", &port.to_string()]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("send --partner loopback"), "init says what to do next: {stdout}");
    let config = dir.join("edinode.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.lines().filter(|l| l.starts_with('#')).count() >= 10, "the configuration is commented");
    // Secrets readable by the owner only.
    use std::os::unix::fs::PermissionsExt;
    for f in [&config, &dir.join("keys/station.key.pem")] {
        assert_eq!(std::fs::metadata(f).unwrap().permissions().mode() & 0o077, 0, "{} is private", f.display());
    }
    // A second init does not overwrite it.
    let again = edinode().args(["init", dir.to_str().unwrap()]).output().unwrap();
    assert!(!again.status.success());
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);

    let check = edinode().arg("--config").arg(&config).arg("check-config").output().unwrap();
    let check_out = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{check_out}{}", String::from_utf8_lossy(&check.stderr));
    assert!(check_out.contains("1 station(s), 1 partner(s)"), "{check_out}");
    assert!(!check_out.contains("warning"), "a fresh certificate is not expiring: {check_out}");

    let node = start_node(&config, &dir, &[], &[]);
    assert_eq!(node.url, format!("http://127.0.0.1:{port}"));
    let doc = tmp.path().join("order.edi");
    std::fs::write(&doc, b"ISA*00*first-run~\r\n").unwrap();
    let sent = edinode().arg("--config").arg(&config).args(["send", "--partner", "loopback", "--wait", "60"]).arg(&doc).output().unwrap();
    let sent_out = String::from_utf8_lossy(&sent.stdout);
    assert!(sent.status.success(), "{sent_out}{}", String::from_utf8_lossy(&sent.stderr));
    assert!(sent_out.contains("sent: delivered; MDN verified"), "send prints the outcome of the MDN: {sent_out}");
    // The node answered its own message before its Deliverer was done.
    node.wait_idle();
    let delivered = delivered(&dir.join("inbox"), "demo", "loopback");
    assert_eq!(delivered, vec![("order.edi".to_string(), b"ISA*00*first-run~\r\n".to_vec())]);
    // The MDN is kept with the message (the console and the API download it from there).
    let id = sent_out.split("(id ").nth(1).and_then(|r| r.split(')').next()).unwrap();
    let mdn = std::fs::read(dir.join(format!("var/blobs/receipts/{id}.mdn"))).unwrap();
    assert!(String::from_utf8_lossy(&mdn).to_ascii_lowercase().contains("multipart/report"), "the stored receipt is the MDN");

    // An unknown partner: a clear refusal, not a hang.
    let bad = edinode().arg("--config").arg(&config).args(["send", "--partner", "nobody"]).arg(&doc).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no partner named nobody"));
}

#[test]
fn serve_without_a_station_says_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = ConfigBuilder::new(tmp.path()).write(tmp.path());
    let node = start_node(&cfg, tmp.path(), &[], &[]);
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(log.contains("no station is configured"), "{log}");
    assert!(log.contains("edinode init edinode-demo") && log.contains("send --partner loopback"), "{log}");
    // It still runs (the README's first command starts a node).
    let r = reqwest::blocking::get(format!("{}/healthz", node.url)).unwrap();
    assert_eq!(r.status(), 200);
}
