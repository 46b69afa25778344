//! More of the inbound issue's acceptance: multiple attachments, asynchronous MDNs (query string
//! kept, retried after a failure), the embedded node surviving kill -9, configuration checks.

use crate::common::build::*;
use crate::common::*;
use edinode_proto::alg::DigestAlg;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn setup(dir: &std::path::Path) -> (Identity, Identity, std::path::PathBuf) {
    let station = identity(dir, "station");
    let partner = identity(dir, "partner");
    let cfg = ConfigBuilder::new(dir).station("edinode", "edinode", &station).partner("acme", "acme", "edinode", &[&partner.cert_pem], "").write(dir);
    (station, partner, cfg)
}

#[test]
fn multiple_attachments_are_delivered_as_separate_files_with_their_names() {
    let tmp = tempfile::tempdir().unwrap();
    let (station, partner, cfg) = setup(tmp.path());
    let node = start_node(&cfg, tmp.path(), &[], &[]);
    let docs: Vec<(&str, &str, Vec<u8>)> = vec![
        ("invoice.edi", "application/edi-x12", b"ISA*00*INVOICE~\r\n".to_vec()),
        ("order.xml", "application/xml", b"<order id=\"1\"/>".to_vec()),
        ("scan.pdf", "application/pdf", (0..=255u8).cycle().take(5000).collect()),
    ];
    let b = "related-boundary-42";
    let mut related = format!("Content-Type: multipart/related; boundary=\"{b}\"; type=\"application/edi-x12\"\r\n\r\n").into_bytes();
    for (name, ct, data) in &docs {
        related.extend_from_slice(format!("--{b}\r\n").as_bytes());
        related.extend_from_slice(&entity(ct, name, data));
        related.extend_from_slice(b"\r\n");
    }
    related.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    let msg = encrypted(&compressed(&signed(&related, &partner.key, &partner.cert, DigestAlg::Sha256)), &station.cert);
    let (mut hs, body) = request("acme", "edinode", "<multi-1@test>", Some("signed"), &msg);
    hs.push(("EDIINT-Features".into(), "multiple-attachments, CEM".into()));
    let (st, _, mdn) = post_capture(&node.as2_url(), &hs, body);
    assert_eq!(st, 200);
    assert!(String::from_utf8_lossy(&mdn).contains("processed\r\n"));
    let files = wait_for(10, "three files", || {
        let d = delivered(&tmp.path().join("inbox"), "edinode", "acme");
        (d.len() == 3).then_some(d)
    });
    for (name, _, data) in &docs {
        let f = files.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name} missing: {:?}", files.iter().map(|f| &f.0).collect::<Vec<_>>()));
        assert_eq!(&f.1, data, "{name} byte-exact");
    }
}

#[test]
fn async_mdn_is_posted_with_its_query_string_and_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let (station, partner, cfg) = setup(tmp.path());
    let node = start_node(&cfg, tmp.path(), &[], &[]);
    // An MDN endpoint that fails the first time.
    let mdn = listen(|_, n| (if n == 0 { 500 } else { 200 }, vec![], vec![]));
    let msg = encrypted(&signed(&entity("application/edi-x12", "a.edi", b"ISA~"), &partner.key, &partner.cert, DigestAlg::Sha256), &station.cert);
    let (mut hs, body) = request("acme", "edinode", "<async-1@test>", Some("signed"), &msg);
    hs.push(("Receipt-Delivery-Option".into(), mdn.url("/as2/mdn?partner=acme&x=1")));
    let (st, _, resp) = post_capture(&node.as2_url(), &hs, body);
    assert_eq!(st, 200, "async: 2xx at once");
    assert!(!String::from_utf8_lossy(&resp).contains("Disposition:"), "no MDN in the HTTP response");
    let got = wait_for(30, "the async MDN after a retry", || {
        let g = mdn.requests.lock().unwrap();
        (g.len() >= 2).then(|| g.clone())
    });
    assert_eq!((got[0].method.as_str(), got[0].target.as_str()), ("POST", "/as2/mdn?partner=acme&x=1"));
    assert_eq!(got[1].target, got[0].target, "retried at the same URL");
    let text = String::from_utf8_lossy(&got[1].body);
    assert!(text.contains("application/pkcs7-signature") && text.contains("Original-Message-ID: <async-1@test>") && text.contains("processed\r\n"), "{text}");
}

#[test]
fn embedded_node_survives_kill9_and_delivers_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (station, partner, cfg) = setup(tmp.path());
    let mut node = start_node(&cfg, tmp.path(), &[], &[]);
    let url = node.as2_url();
    let total = 60;
    let bodies: Vec<Vec<u8>> = (0..total)
        .map(|i| encrypted(&signed(&entity("application/edi-x12", &format!("k-{i}.edi"), format!("ISA*{i}~").as_bytes()), &partner.key, &partner.cert, DigestAlg::Sha256), &station.cert))
        .collect();
    let results = Arc::new(Mutex::new(Vec::new()));
    let r2 = results.clone();
    let sender = std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        for (i, b) in bodies.iter().enumerate() {
            let (hs, body) = request("acme", "edinode", &format!("<k-{i}@test>"), Some("signed"), b);
            let mut req = client.post(&url);
            for (k, v) in &hs {
                req = req.header(k.as_str(), v.as_str());
            }
            let ok = req.body(body).send().ok().is_some_and(|r| r.status().as_u16() == 200 && String::from_utf8_lossy(&r.bytes().unwrap_or_default()).contains("processed\r\n"));
            r2.lock().unwrap().push((i, ok));
            // Pacing, not waiting: spreads the sends so the kill lands mid-run.
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    // Killed mid-run, whatever the speed: once a few messages are answered.
    wait_for(30, "the first answers", || (results.lock().unwrap().iter().filter(|(_, ok)| *ok).count() >= 5).then_some(()));
    node.kill9();
    sender.join().unwrap();
    let node2 = start_node(&cfg, tmp.path(), &[], &[]);
    let positive: Vec<usize> = results.lock().unwrap().iter().filter(|(_, ok)| *ok).map(|(i, _)| *i).collect();
    assert!(!positive.is_empty(), "some messages were processed before the kill");
    assert!(positive.len() < total, "the kill happened mid-run");
    let inbox = tmp.path().join("inbox");
    wait_for(20, "recovered deliveries", || {
        let names: Vec<String> = delivered(&inbox, "edinode", "acme").into_iter().map(|f| f.0).collect();
        positive.iter().all(|i| names.contains(&format!("k-{i}.edi"))).then_some(())
    });
    node2.wait_idle();
    let names: Vec<String> = delivered(&inbox, "edinode", "acme").into_iter().map(|f| f.0).collect();
    for i in &positive {
        assert_eq!(names.iter().filter(|n| n.ends_with(&format!("k-{i}.edi"))).count(), 1, "k-{i} exactly once: {names:?}");
    }
    // A resend of an already processed message after the restart is still a duplicate.
    let i = positive[0];
    let b = encrypted(&signed(&entity("application/edi-x12", &format!("k-{i}.edi"), format!("ISA*{i}~").as_bytes()), &partner.key, &partner.cert, DigestAlg::Sha256), &station.cert);
    let (hs, body) = request("acme", "edinode", &format!("<k-{i}@test>"), Some("signed"), &b);
    let (_, _, mdn) = post_capture(&node2.as2_url(), &hs, body);
    assert!(String::from_utf8_lossy(&mdn).contains("duplicate-document"));
}

fn check_config(cfg: &std::path::Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edinode")).arg("--config").arg(cfg).arg("check-config").output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn check_config_accepts_good_and_names_file_key_and_reason_for_bad() {
    let tmp = tempfile::tempdir().unwrap();
    let (_s, _p, cfg) = setup(tmp.path());
    let (ok, out) = check_config(&cfg);
    assert!(ok, "{out}");
    assert!(out.contains("1 station(s), 1 partner(s)"));
    // A missing certificate file.
    let text = std::fs::read_to_string(&cfg).unwrap().replace("partner.cert.pem", "nope.pem");
    std::fs::write(&cfg, text).unwrap();
    let (ok, out) = check_config(&cfg);
    assert!(!ok);
    assert!(out.contains("edinode.toml") && out.contains("partners.acme.verify_certs[0]") && out.contains("nope.pem"), "{out}");
    // A partner pointing at an unknown station; an unknown key.
    std::fs::write(&cfg, ConfigBuilder::new(tmp.path()).raw("[partners.x]\nas2_id = \"x\"\nstation = \"ghost\"\n").text).unwrap();
    let (ok, out) = check_config(&cfg);
    assert!(!ok && out.contains("partners.x.station") && out.contains("ghost"), "{out}");
    std::fs::write(&cfg, ConfigBuilder::new(tmp.path()).raw("[limits]\nmax_depht = 3\n").text).unwrap();
    let (ok, out) = check_config(&cfg);
    assert!(!ok && out.contains("max_depht"), "{out}");
    // The serve command refuses the same way.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edinode")).arg("--config").arg(&cfg).arg("serve").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_depht"));
}

#[test]
fn pkcs12_station_keys_load() {
    let tmp = tempfile::tempdir().unwrap();
    let station = identity(tmp.path(), "station");
    let partner = identity(tmp.path(), "partner");
    let p12 = openssl::pkcs12::Pkcs12::builder().name("station").pkey(&station.key).cert(&station.cert).build2("s3cret").unwrap();
    let p12_path = tmp.path().join("station.p12");
    std::fs::write(&p12_path, p12.to_der().unwrap()).unwrap();
    let cfg = ConfigBuilder::new(tmp.path())
        .raw(&format!("\n[stations.edinode]\nas2_id = \"edinode\"\nsigning = {{ pkcs12 = \"{}\", password = \"s3cret\" }}\n", p12_path.display()))
        .partner("acme", "acme", "edinode", &[&partner.cert_pem], "")
        .write(tmp.path());
    let (ok, out) = check_config(&cfg);
    assert!(ok, "{out}");
    let node = start_node(&cfg, tmp.path(), &[], &[]);
    let msg = encrypted(&entity("application/edi-x12", "p.edi", b"ISA~"), &station.cert);
    let (hs, body) = request("acme", "edinode", "<p12@test>", Some("plain"), &msg);
    let (st, _, mdn) = post_capture(&node.as2_url(), &hs, body);
    assert_eq!(st, 200);
    assert!(String::from_utf8_lossy(&mdn).contains("processed\r\n"));
    // Wrong password: refused with the reason.
    let text = std::fs::read_to_string(&cfg).unwrap().replace("s3cret", "wrong");
    std::fs::write(&cfg, text).unwrap();
    let (ok, out) = check_config(&cfg);
    assert!(!ok && out.contains("stations.edinode.signing.pkcs12"), "{out}");
}
