//! The web console in real Chromium (Debian's `chromium`, driven by playwright-core from npm;
//! `.ci/run` installs both): sign-in with the admin token (a wrong or missing one gets the login
//! page), a message sent in this test listed, opened and resent, a dead letter listed and
//! replayed, an expiring certificate highlighted, a POST without the CSRF token refused.
//! Screenshots of the main pages go to `target/console-screenshots/` for review. Also: the
//! console is never served on the partner listener. Embedded mode (no RabbitMQ or Redis).

use crate::common::*;
use std::path::{Path, PathBuf};

const TOKEN: &str = "console-test-token-3f9a";
const CHROMIUM: &str = "/usr/bin/chromium";

/// playwright-core, where `.ci/run` installs it (or EDINODE_PLAYWRIGHT_CORE).
fn playwright_core() -> PathBuf {
    std::env::var_os("EDINODE_PLAYWRIGHT_CORE").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/npm/node_modules/playwright-core"))
}

/// What is missing to drive a browser, if anything. In CI (`CI` set) a missing piece fails the
/// test; elsewhere the test is skipped with the reason.
fn browser_missing() -> Option<String> {
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).exists() {
        missing.push(format!("{CHROMIUM} (apt-get install -y chromium)"));
    }
    if !playwright_core().join("package.json").exists() {
        missing.push(format!("{} (npm install --prefix target/npm playwright-core)", playwright_core().display()));
    }
    if std::process::Command::new("node").arg("--version").output().is_err() {
        missing.push("node".into());
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

#[test]
fn the_console_in_chromium() {
    if let Some(missing) = browser_missing() {
        assert!(!in_ci(), "the browser test cannot run in CI: missing {missing} (.ci/run installs them)");
        eprintln!("SKIPPED the_console_in_chromium: missing {missing}; .ci/run installs them");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ours = identity(dir, "console-station");
    let now = unix_now();
    let soon = identity_valid(dir, "console-soon", now - 86_400, now + 10 * 86_400 + 3600);
    let port = free_port();
    let closed = free_port();
    let mut cfg = ConfigBuilder::new(dir).station("st", "console-st", &ours);
    cfg.text = cfg.text.replacen("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""), 1).replace("retry_base_ms = 100\n", "retry_base_ms = 100\nmax_attempts = 1\n");
    let (c, s) = (ours.cert_pem.display(), soon.cert_pem.display());
    // lp: the node itself (a message goes round); down: nobody listens (the send fails).
    let cfg = cfg.raw(&format!(
        "\n[partners.lp]\nas2_id = \"console-st\"\nstation = \"st\"\nverify_certs = [\"{c}\"]\nencryption_cert = \"{c}\"\nurl = \"http://127.0.0.1:{port}/as2\"\n\
         \n[partners.down]\nas2_id = \"console-down\"\nstation = \"st\"\nverify_certs = [\"{s}\"]\nurl = \"http://127.0.0.1:{closed}/as2\"\n[partners.down.outbound]\nsign = \"none\"\nmdn = \"none\"\nattempts = 1\n"
    ));
    let path = cfg.write(dir);
    // Deliveries to station st fail until the test removes this file (a dead letter to replay).
    std::fs::create_dir_all(dir.join("inbox")).unwrap();
    std::fs::write(dir.join("inbox/st"), b"in the way").unwrap();
    let node = start_node(&path, dir, &[], &[("EDINODE__ADMIN__TOKEN", TOKEN)]);
    let admin = node.admin_url.clone().unwrap();

    // The console is not on the partner listener, whoever asks.
    let partner_side = reqwest::blocking::get(format!("{}/console/login", node.url)).unwrap();
    assert_eq!(partner_side.status(), 404, "no console on the partner listener");

    let (failed, _) = admin_send(&admin, TOKEN, "st", "down", &[("order.edi", "application/edi-x12", b"ISA*00*console~".to_vec())]);
    wait_for(30, "the send to nobody to fail", || (admin_message(&admin, TOKEN, &failed)["summary"]["status"] == "failed").then_some(()));
    let (looped, _) = admin_send(&admin, TOKEN, "st", "lp", &[("invoice.xml", "application/xml", b"<invoice/>".to_vec())]);
    wait_for(30, "the MDN of the loopback message", || (admin_message(&admin, TOKEN, &looped)["summary"]["status"] == "sent").then_some(()));
    let dead_id = wait_for(30, "a dead letter", || {
        let v: serde_json::Value = serde_json::from_str(&reqwest::blocking::Client::new().get(format!("{admin}/api/dead")).bearer_auth(TOKEN).send().unwrap().text().unwrap()).unwrap();
        v["dead_letters"].as_array().and_then(|d| d.first()).and_then(|d| d["id"].as_str()).map(str::to_string)
    });
    std::fs::remove_file(dir.join("inbox/st")).unwrap();
    // An AS4 user message waiting to be pulled on its MPC.
    let um = serde_json::json!({
        "message_id": "console-um-1@test", "mpc": "urn:mpc:console",
        "from": {"party_id": "org:edinode", "role": "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/initiator"},
        "to": {"party_id": "org:puller", "role": "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/responder"},
        "service": {"value": "urn:svc:test"}, "action": "urn:act:deliver",
        "parts": [{"mime_type": "text/plain", "data_base64": openssl::base64::encode_block(b"pull me")}],
    });
    let r = reqwest::blocking::Client::new().post(format!("{admin}/api/as4/submit")).bearer_auth(TOKEN).header("content-type", "application/json").body(um.to_string()).send().unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().unwrap());

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    let out = std::process::Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/console.cjs"))
        .env("BASE", &admin)
        .env("TOKEN", TOKEN)
        .env("FAILED_ID", &failed)
        .env("DEAD_ID", &dead_id)
        .env("SENT_ID", &looped)
        .env("SHOTS", &shots)
        .env("CHROMIUM", CHROMIUM)
        .env("PLAYWRIGHT_CORE", playwright_core())
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "browser checks failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
    eprintln!("{stdout}");

    // What the clicks did, seen from the node.
    let m = admin_message(&admin, TOKEN, &failed);
    assert!(history(&m).iter().any(|(s, d)| s == "resent" && d == "from the console"), "{m}");
    let got = wait_for(30, "the replayed delivery", || Some(delivered(&dir.join("inbox"), "st", "lp")).filter(|d| !d.is_empty()));
    assert_eq!(got, vec![("invoice.xml".to_string(), b"<invoice/>".to_vec())]);
    for name in ["login", "messages", "message", "dead", "partners", "queues", "summary"] {
        let f = shots.join(format!("{name}.png"));
        assert!(std::fs::metadata(&f).map(|m| m.len() > 5_000).unwrap_or(false), "screenshot {}", f.display());
    }
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(!log.contains(TOKEN), "the admin token is never logged");
}
