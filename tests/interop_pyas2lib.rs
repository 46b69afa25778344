//! Acceptance 1: pyas2lib (PyPI, a separate Python process) sends every combination of sign x
//! encrypt x compress x MDN mode to a real node; every MDN must verify in pyas2lib with a
//! matching MIC, and every payload must be delivered byte-exact, exactly once.

use crate::common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const SIGNS: [Option<&str>; 5] = [None, Some("sha1"), Some("sha256"), Some("sha384"), Some("sha512")];
const ENCRYPTS: [Option<&str>; 5] = [None, Some("3des"), Some("aes128"), Some("aes192"), Some("aes256")];
const COMPRESS: [Option<&str>; 3] = [None, Some("before"), Some("after")];
const MDNS: [&str; 4] = ["none", "sync", "sync-signed", "async-signed"];

fn setup() -> Pair {
    pair("edinode", "pyas2peer")
}

fn config(p: &Pair) -> ConfigBuilder {
    ConfigBuilder::new(p.dir.path()).station("edinode", "edinode", &p.station).partner(
        "pyas2peer",
        "pyas2peer",
        "edinode",
        &[&p.partner.cert_pem],
        "",
    )
}

#[allow(clippy::too_many_arguments)]
fn case(p: &Pair, url: &str, id: &str, payload: &Path, sign: Option<&str>, encrypt: Option<&str>, compress: Option<&str>, mdn: &str) -> Value {
    json!({
        "id": id, "url": url, "as2_from": "pyas2peer", "as2_to": "edinode",
        "payload_path": payload, "content_type": "application/edi-x12", "filename": format!("{id}.edi"),
        "our_key_pem": p.partner.key_pem, "our_cert_pem": p.partner.cert_pem, "partner_cert_pem": p.station.cert_pem,
        "sign": sign, "encrypt": encrypt, "compress": compress, "mdn": mdn, "mdn_digest": sign.unwrap_or("sha256"),
        "async_timeout": 60,
    })
}

/// Run a batch through as2peer.py send-batch; returns result lines by id.
pub fn send_batch(cases: &[Value]) -> std::collections::HashMap<String, Value> {
    let py = python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/as2peer.py");
    let mut child = Command::new(py).arg(script).arg("send-batch").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for c in cases {
            writeln!(stdin, "{c}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "as2peer failed");
    let mut results = std::collections::HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        results.insert(v["id"].as_str().unwrap().to_string(), v);
    }
    results
}

fn check(results: &std::collections::HashMap<String, Value>, cases: &[Value], inbox: &Path, payloads: &std::collections::HashMap<String, Vec<u8>>) {
    let mut failures = Vec::new();
    for c in cases {
        let id = c["id"].as_str().unwrap();
        let r = &results[id];
        let mdn = c["mdn"].as_str().unwrap();
        let mut bad = Vec::new();
        if r["http_status"] != json!(200) {
            bad.push(format!("http {}", r["http_status"]));
        }
        if !r["error"].is_null() {
            bad.push(format!("error {}", r["error"]));
        }
        if mdn != "none" {
            if r["mdn_status"] != json!("processed") {
                bad.push(format!("mdn {} {}", r["mdn_status"], r["mdn_detail"]));
            }
            if mdn.ends_with("signed") {
                if r["mdn_signature_ok"] != json!(true) {
                    bad.push("MDN signature".into());
                }
                if !c["sign"].is_null() && r["mic_ok"] != json!(true) {
                    bad.push(format!("MIC {} vs {}", r["mic_received"], r["mic_expected"]));
                }
            }
        }
        let file = inbox.join("edinode/pyas2peer").join(format!("{id}.edi"));
        match std::fs::read(&file) {
            Ok(data) if &data == payloads.get(id).unwrap() => {}
            Ok(data) => bad.push(format!("payload differs ({} bytes)", data.len())),
            Err(_) => bad.push("not delivered".into()),
        }
        if !bad.is_empty() {
            failures.push(format!("{id}: {}", bad.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    // Exactly once: no extra files.
    let n = std::fs::read_dir(inbox.join("edinode/pyas2peer")).unwrap().count();
    assert_eq!(n, cases.len(), "every payload delivered exactly once");
}

fn wait_delivered(inbox: &Path, n: usize) {
    wait_for(60, "all deliveries", || {
        let c = std::fs::read_dir(inbox.join("edinode/pyas2peer")).map(|r| r.count()).unwrap_or(0);
        (c >= n).then_some(())
    });
}

#[test]
fn full_matrix_1k_text_embedded() {
    let p = setup();
    let cfg = config(&p).write(p.dir.path());
    let node = start_node(&cfg, p.dir.path(), &[], &[]);
    let payload = p.dir.path().join("payload.edi");
    let text: String = (0..20).map(|i| format!("ISA*00*          *00*          *ZZ*SENDER{i:04}*ZZ*RECEIVER*261121*1200*U*00401*{i:09}*0*P*>~\r\n")).collect();
    // CRLF lines: pyas2lib canonicalizes text to CRLF before sending, so a CRLF text payload is
    // what it really sends and must arrive byte-exact (LF/CR/NUL survival is the binary test's).
    std::fs::write(&payload, &text.as_bytes()[..1024]).unwrap();
    let mut cases = Vec::new();
    let mut payloads = std::collections::HashMap::new();
    for (si, s) in SIGNS.iter().enumerate() {
        for (ei, e) in ENCRYPTS.iter().enumerate() {
            for (ci, c) in COMPRESS.iter().enumerate() {
                for m in MDNS {
                    let id = format!("m{si}{ei}{ci}-{m}");
                    cases.push(case(&p, &node.as2_url(), &id, &payload, *s, *e, *c, m));
                    payloads.insert(id, text.as_bytes()[..1024].to_vec());
                }
            }
        }
    }
    // The extra algorithms: RSASSA-PSS, RSA-OAEP, MD5.
    let mut extra = vec![
        ("pss", Some("sha256"), Some("aes128"), None, "sync-signed"),
        ("pss-after", Some("sha512"), Some("aes256"), Some("after"), "async-signed"),
        ("oaep", Some("sha256"), Some("aes256"), None, "sync-signed"),
        ("oaep-3des", None, Some("3des"), Some("before"), "sync"),
        ("md5", Some("md5"), Some("3des"), None, "sync-signed"),
        // pyas2lib's own PSS and OAEP identifiers, without parameters (RFC 4055 defaults; PSS
        // with the digest pyas2lib really used and the salt the signature shows).
        ("pss-raw-sha1", Some("sha1"), None, None, "sync-signed"),
        ("pss-raw-sha256", Some("sha256"), Some("aes128"), Some("before"), "sync-signed"),
        ("oaep-raw", Some("sha512"), Some("aes256"), None, "async-signed"),
        ("oaep-raw-unsigned", None, Some("3des"), None, "sync"),
    ];
    for (id, s, e, c, m) in extra.drain(..) {
        let mut v = case(&p, &node.as2_url(), id, &payload, s, e, c, m);
        if id.starts_with("pss") {
            v["pss"] = json!(true);
        }
        if id.starts_with("oaep") {
            v["oaep"] = json!(true);
        }
        if id.contains("-raw") {
            v["pss_params"] = json!("absent");
            v["oaep_params"] = json!("absent");
        }
        if id == "md5" {
            v["mdn_digest"] = json!("md5");
        }
        cases.push(v);
        payloads.insert(id.to_string(), text.as_bytes()[..1024].to_vec());
    }
    let results = send_batch(&cases);
    wait_delivered(&node.dir.join("inbox"), cases.len());
    check(&results, &cases, &node.dir.join("inbox"), &payloads);
}

#[test]
fn binary_and_10mib_payloads_embedded() {
    let p = setup();
    let cfg = config(&p).write(p.dir.path());
    let node = start_node(&cfg, p.dir.path(), &[], &[]);
    // Binary with CR, LF, CRLF, lone CR and NUL bytes.
    let mut bin = Vec::new();
    for i in 0..4096u32 {
        bin.extend_from_slice(&[(i % 256) as u8, b'\r', b'\n', 0, b'\n', b'\r', b'x']);
    }
    let binp = p.dir.path().join("payload.bin");
    std::fs::write(&binp, &bin).unwrap();
    // 10 MiB of pseudo-random, poorly compressible bytes.
    let mut big = vec![0u8; 10 * 1024 * 1024];
    openssl::rand::rand_bytes(&mut big).unwrap();
    let bigp = p.dir.path().join("payload.big");
    std::fs::write(&bigp, &big).unwrap();
    let mut cases = Vec::new();
    let mut payloads = std::collections::HashMap::new();
    // Binary: every sign x encrypt, compression and MDN mode rotating.
    for (si, s) in SIGNS.iter().enumerate() {
        for (ei, e) in ENCRYPTS.iter().enumerate() {
            let c = COMPRESS[(si + ei) % 3];
            let m = MDNS[(si + 2 * ei) % 4];
            let id = format!("bin{si}{ei}");
            let mut v = case(&p, &node.as2_url(), &id, &binp, *s, *e, c, m);
            v["content_type"] = json!("application/octet-stream");
            cases.push(v);
            payloads.insert(id, bin.clone());
        }
    }
    // 10 MiB: each compression mode, each MDN mode, signed and encrypted.
    for (i, (s, e, c, m)) in [
        (Some("sha256"), Some("aes256"), None, "sync-signed"),
        (Some("sha1"), Some("3des"), Some("before"), "sync"),
        (Some("sha512"), Some("aes128"), Some("after"), "async-signed"),
        (None, None, None, "none"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("big{i}");
        let mut v = case(&p, &node.as2_url(), &id, &bigp, s, e, c, m);
        v["content_type"] = json!("application/octet-stream");
        cases.push(v);
        payloads.insert(id, big.clone());
    }
    let results = send_batch(&cases);
    wait_delivered(&node.dir.join("inbox"), cases.len());
    check(&results, &cases, &node.dir.join("inbox"), &payloads);
    // The 10 MiB messages are over limits.stream_threshold_bytes (8 MiB): pyas2lib's layers
    // went through the streaming codecs, not the in-memory path.
    let log = std::fs::read_to_string(&node.log).unwrap_or_default();
    for layer in ["decrypted", "signed"] {
        assert!(log.contains("Large layer streamed") && (0..3).any(|d| log.contains(&format!("stream-{d}-{layer}"))), "no streamed {layer} layer in the node log");
    }
}
