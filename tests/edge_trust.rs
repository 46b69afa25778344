//! Trust at the edge, against the running node: nothing costly or outward-facing happens before
//! the sender is known, asynchronous MDNs go only where the partner's configuration allows,
//! bodies are bounded in size and time, and no delivered document ever replaces another.
//! The listeners standing in for MDN endpoints are our own sockets on 127.0.0.1.

use crate::common::build::*;
use crate::common::*;
use edinode_proto::alg::DigestAlg;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A listener that counts connections and never answers (holds them open): an MDN tarpit.
fn tarpit() -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            h.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    (url, hits)
}

/// POST with the given headers (duplicates kept) and body; (status, body text).
fn post(url: &str, headers: &[(String, String)], body: Vec<u8>) -> (u16, String) {
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let mut req = client.post(url);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let r = req.body(body).send().unwrap();
    let st = r.status().as_u16();
    (st, r.text().unwrap_or_default())
}

fn plain_message(name: &str, body: &[u8]) -> Vec<u8> {
    entity("application/edi-x12", name, body)
}

/// A station "edinode" and a partner "acme" whose configuration is `partner_extra`; `extra`
/// lines go into the tables they name (`("[http]", "max_body_bytes = 1")`), new tables at the end.
fn setup(dir: &Path, partner_extra: &str, extra: &[(&str, &str)]) -> (Identity, Identity, std::path::PathBuf) {
    let station = identity(dir, "station");
    let partner = identity(dir, "partner");
    let mut b = ConfigBuilder::new(dir);
    for (table, line) in extra {
        let header = format!("{table}\n");
        if b.text.contains(&header) {
            b.text = b.text.replace(&header, &format!("{header}{line}\n"));
        } else {
            b.text.push_str(&format!("\n{header}{line}\n"));
        }
    }
    let cfg = b
        .station("edinode", "edinode", &station)
        .raw(&format!("\n[partners.acme]\nas2_id = \"acme\"\nstation = \"edinode\"\nverify_certs = [\"{}\"]\n{partner_extra}\n", partner.cert_pem.display()))
        .write(dir);
    (station, partner, cfg)
}

/// [`setup`], then the node.
fn start(dir: &Path, partner_extra: &str, extra: &[(&str, &str)]) -> NodeProc {
    let (_, _, cfg) = setup(dir, partner_extra, extra);
    start_node(&cfg, dir, &[], &[])
}

fn history(node: &NodeProc, token: &str) -> Vec<serde_json::Value> {
    let admin = node.admin_url.clone().unwrap();
    let client = reqwest::blocking::Client::new();
    let list: serde_json::Value = serde_json::from_str(&client.get(format!("{admin}/api/messages")).bearer_auth(token).send().unwrap().text().unwrap()).unwrap();
    let mut out = Vec::new();
    for m in list["messages"].as_array().cloned().unwrap_or_default() {
        let id = m["id"].as_str().unwrap();
        let v: serde_json::Value = serde_json::from_str(&client.get(format!("{admin}/api/messages/{id}")).bearer_auth(token).send().unwrap().text().unwrap()).unwrap();
        out.push(v);
    }
    out
}

#[test]
fn async_mdn_to_an_address_the_partner_did_not_agree_is_refused_before_anything_is_done() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, hits) = tarpit();
    // The partner's own URL is elsewhere: by default only its host may receive MDNs.
    let node = start(tmp.path(), "url = \"https://as2.acme.example/as2\"", &[]);
    // Unsigned, unencrypted, only claiming to be acme, asking for an MDN at our tarpit.
    let (mut hs, body) = request("acme", "edinode", "<ssrf-1@attacker>", Some("unsigned"), &plain_message("x.edi", b"ISA*ssrf~"));
    hs.push(("Receipt-Delivery-Option".into(), format!("{url}/steal")));
    let (st, text) = post(&node.as2_url(), &hs, body);
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("Receipt-Delivery-Option"), "{text}");
    // Refused before anything was queued: once the node is idle, no POST of an MDN can follow.
    node.wait_idle();
    assert_eq!(hits.load(Ordering::SeqCst), 0, "no connection to an address the partner did not agree");
    assert!(std::fs::read_dir(tmp.path().join("var/blobs/raw")).map(|d| d.count()).unwrap_or(0) == 0, "nothing stored for the refused request");
}

#[test]
fn a_host_name_that_resolves_to_loopback_gets_no_mdn_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, hits) = tarpit();
    let port = url.rsplit(':').next().unwrap().to_string();
    // The allow-list names a host (not an address) that resolves to loopback.
    let node = start(tmp.path(), "async_mdn_urls = [\"http://localhost:*/\"]", &[("[admin]", "token = \"t0ken\"")]);
    let (mut hs, body) = request("acme", "edinode", "<ssrf-2@attacker>", Some("unsigned"), &plain_message("x.edi", b"ISA*ssrf~"));
    hs.push(("Receipt-Delivery-Option".into(), format!("http://localhost:{port}/mdn")));
    let (st, _) = post(&node.as2_url(), &hs, body);
    assert_eq!(st, 200);
    let withheld = wait_for(20, "the MDN to be withheld", || {
        let h = history(&node, "t0ken");
        let text = serde_json::to_string(&h).unwrap();
        text.contains("mdn-withheld").then_some(text)
    });
    assert!(withheld.contains("internal address"), "{withheld}");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[test]
fn stuck_async_mdn_endpoints_do_not_delay_a_synchronous_mdn() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, hits) = tarpit();
    let (station, partner, cfg) = setup(tmp.path(), LOOPBACK_MDN_URLS, &[("[mdn]", "async_post_timeout_secs = 60")]);
    let node = start_node(&cfg, tmp.path(), &[], &[]);
    for i in 0..40 {
        let (mut hs, body) = request("acme", "edinode", &format!("<tarpit-{i}@test>"), Some("unsigned"), &plain_message(&format!("t{i}.edi"), b"ISA*tarpit~"));
        hs.push(("Receipt-Delivery-Option".into(), format!("{url}/mdn/{i}")));
        let (st, text) = post(&node.as2_url(), &hs, body);
        assert_eq!(st, 200, "{text}");
    }
    wait_for(30, "the MdnPoster to be stuck in the tarpit", || (hits.load(Ordering::SeqCst) >= 16).then_some(()));
    // A legitimate signed + encrypted message with a signed synchronous MDN.
    let doc = entity("application/edi-x12", "real.edi", b"ISA*real~");
    let msg = encrypted(&signed(&doc, &partner.key, &partner.cert, DigestAlg::Sha256), &station.cert);
    let (hs, body) = request("acme", "edinode", "<legit-1@test>", Some("signed"), &msg);
    let started = Instant::now();
    let (st, text) = post(&node.as2_url(), &hs, body);
    let took = started.elapsed();
    assert_eq!(st, 200, "{text}");
    assert!(text.contains("processed"), "{text}");
    println!("synchronous MDN with 40 stuck asynchronous MDN POSTs: {} ms", took.as_millis());
    assert!(took < Duration::from_secs(5), "sync MDN took {took:?}");
}

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Send a request head and then up to `len` body bytes; returns the status line read (empty if
/// the server closed without one).
fn raw_post(addr: &str, head: &str, len: usize) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b'A'; 64 * 1024];
    let mut sent = 0;
    while sent < len {
        if s.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_string()
}

#[test]
fn large_bodies_from_unknown_senders_are_refused_without_being_read() {
    let tmp = tempfile::tempdir().unwrap();
    let node = start(tmp.path(), "", &[]);
    let addr = node.addr();
    let before = peak_rss(node.child.id());
    let len = 400 * 1024 * 1024;
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let head = format!(
                    "POST /as2 HTTP/1.1\r\nHost: x\r\nAS2-Version: 1.2\r\nAS2-From: mallory{i}\r\nAS2-To: edinode\r\nMessage-ID: <big-{i}@x>\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\n\r\n"
                );
                raw_post(&addr, &head, len)
            })
        })
        .collect();
    for t in threads {
        let status = t.join().unwrap();
        assert!(status.is_empty() || status.contains(" 403 "), "unexpected answer {status:?}");
    }
    let after = peak_rss(node.child.id());
    println!("node peak RSS before {} MiB, after 6 x 400 MiB from unknown senders {} MiB", before >> 20, after >> 20);
    assert!(after < 256 << 20, "peak RSS {} MiB", after >> 20);
    // The same 403 for an unknown station and an unknown partner: nothing to probe.
    let (hs, body) = request("acme", "nobody", "<p-1@x>", None, &plain_message("x.edi", b"x"));
    let (st1, t1) = post(&node.as2_url(), &hs, body);
    let (hs, body) = request("mallory", "edinode", "<p-2@x>", None, &plain_message("x.edi", b"x"));
    let (st2, t2) = post(&node.as2_url(), &hs, body);
    assert_eq!((st1, st2), (403, 403));
    assert_eq!(t1, t2);
    assert!(!t1.contains("mallory") && !t1.contains("nobody"), "{t1}");
}

#[test]
fn a_body_over_the_limit_is_refused_and_nothing_is_left_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let node = start(tmp.path(), "", &[("[http]", "max_body_bytes = 3000000")]);
    let addr = node.addr();
    // Declared too large: refused before any byte of the body.
    let head = "POST /as2 HTTP/1.1\r\nHost: x\r\nAS2-From: acme\r\nAS2-To: edinode\r\nMessage-ID: <l-1@x>\r\nContent-Type: application/edi-x12\r\nContent-Length: 5000000\r\n\r\n";
    assert!(raw_post(&addr, head, 0).contains(" 413 "));
    // Chunked, growing past the limit: refused as it passes it; its partial blob is removed.
    let head = "POST /as2 HTTP/1.1\r\nHost: x\r\nAS2-From: acme\r\nAS2-To: edinode\r\nMessage-ID: <l-2@x>\r\nContent-Type: application/edi-x12\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b'B'; 100_000];
    for _ in 0..40 {
        if s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).and_then(|_| s.write_all(&chunk)).and_then(|_| s.write_all(b"\r\n")).is_err() {
            break;
        }
    }
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap_or(0);
    assert!(String::from_utf8_lossy(&buf[..n]).contains(" 413 "), "{}", String::from_utf8_lossy(&buf[..n]));
    wait_until(10, "the partial blob removed", || {
        let leftovers: Vec<_> = walk(&tmp.path().join("var/blobs"));
        if leftovers.is_empty() { Ok(()) } else { Err(format!("blobs left: {leftovers:?}")) }
    });
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn a_stalled_body_is_answered_408_and_closed_within_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let node = start(tmp.path(), "", &[("[http]", "body_idle_timeout_secs = 2")]);
    let addr = node.addr();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let started = Instant::now();
    s.write_all(b"POST /as2 HTTP/1.1\r\nHost: x\r\nAS2-From: acme\r\nAS2-To: edinode\r\nMessage-ID: <stall@x>\r\nContent-Type: application/edi-x12\r\nContent-Length: 1000\r\n\r\nISA*stall").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("connection neither answered nor closed: {e}"),
        }
    }
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(10), "closed after {took:?}");
}

#[test]
fn repeated_routing_headers_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let node = start(tmp.path(), "", &[]);
    for name in ["AS2-To", "AS2-From", "Message-ID"] {
        let (mut hs, body) = request("acme", "edinode", "<dup-1@x>", None, &plain_message("x.edi", b"ISA*dup~"));
        hs.push((name.into(), if name == "Message-ID" { "<dup-2@x>".into() } else { "other".into() }));
        let (st, text) = post(&node.as2_url(), &hs, body);
        assert_eq!(st, 400, "{name}: {text}");
        assert!(text.contains(name), "{text}");
    }
    assert!(delivered(&tmp.path().join("inbox"), "edinode", "acme").is_empty());
}

#[test]
fn captures_keep_no_credentials_and_fsync_mode_delivers() {
    let tmp = tempfile::tempdir().unwrap();
    let node = start(tmp.path(), "policy = { require_signed = true }", &[("[spool]", "fsync = true")]);
    // Unsigned where a signature is required: fails, and its raw capture is kept for the record.
    let (mut hs, body) = request("acme", "edinode", "<cred-1@x>", Some("unsigned"), &plain_message("x.edi", b"ISA*cred~"));
    hs.push(("Authorization".into(), "Basic c2VjcmV0OnBhc3N3b3Jk".into()));
    hs.push(("Cookie".into(), "session=abcdef".into()));
    let (st, text) = post(&node.as2_url(), &hs, body);
    assert_eq!(st, 200, "{text}");
    assert!(text.contains("insufficient-message-security") || text.contains("authentication-failed"), "{text}");
    let raws = walk(&tmp.path().join("var/blobs/raw"));
    assert!(!raws.is_empty());
    for r in raws {
        let t = String::from_utf8_lossy(&std::fs::read(&r).unwrap()).to_string();
        assert!(t.contains("AS2-From") || t.contains("as2-from"), "{t}");
        assert!(!t.contains("c2VjcmV0") && !t.to_ascii_lowercase().contains("authorization") && !t.contains("abcdef"), "{t}");
    }
    // The log never shows it either.
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(!log.contains("c2VjcmV0"));
}

#[test]
fn fsync_mode_delivers_large_and_small_documents() {
    let tmp = tempfile::tempdir().unwrap();
    let (station, partner, cfg) = setup(tmp.path(), "", &[("[spool]", "fsync = true")]);
    let node = start_node(&cfg, tmp.path(), &[], &[]);
    for (i, size) in [10usize, 3 << 20].into_iter().enumerate() {
        let data: Vec<u8> = (0..size).map(|b| (b % 251) as u8).collect();
        let doc = entity("application/octet-stream", &format!("f{i}.bin"), &data);
        let msg = encrypted(&signed(&doc, &partner.key, &partner.cert, DigestAlg::Sha256), &station.cert);
        let (hs, body) = request("acme", "edinode", &format!("<fs-{i}@x>"), Some("signed"), &msg);
        let (st, text) = post(&node.as2_url(), &hs, body);
        assert_eq!(st, 200, "{text}");
        assert!(text.contains("processed"), "{text}");
        let files = wait_for(20, "the delivery", || {
            let d = delivered(&tmp.path().join("inbox"), "edinode", "acme");
            d.iter().any(|(n, _)| n == &format!("f{i}.bin")).then_some(d)
        });
        assert_eq!(files.iter().find(|(n, _)| n == &format!("f{i}.bin")).unwrap().1, data);
    }
    // No temporary file is left among the delivered ones, nor in the blob store's temp folder.
    assert!(walk(&tmp.path().join("inbox/edinode")).iter().all(|p| !p.to_string_lossy().contains(".part")));
    assert!(walk(&tmp.path().join("var/blobs/.tmp")).is_empty());
}

/// Two worker processes over RabbitMQ and Redis deliver 64 documents that all carry the same
/// file name: 64 files, none replaced.
#[test]
fn rabbit_two_workers_never_overwrite_a_document() {
    purge_queues();
    let p = pair("station", "partner");
    let cfg = p.rabbit_config(&unique("edinode-trust-"), "");
    let tmp = &p.dir;
    let front = start_node(&cfg, tmp.path(), &["--actors=http_receiver,mime_unwrapper,decryptor,verifier,mdn_sender"], &[("EDINODE__NODE__ID", "front")]);
    let _w1 = start_node(&cfg, tmp.path(), &["--actors=deliverer"], &[("EDINODE__NODE__ID", "w1")]);
    let _w2 = start_node(&cfg, tmp.path(), &["--actors=deliverer"], &[("EDINODE__NODE__ID", "w2")]);
    let url = front.as2_url();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let url = url.clone();
            std::thread::spawn(move || {
                for i in (t..64).step_by(4) {
                    let (hs, body) = request("acme", "edinode", &format!("<same-{i}@x>"), None, &plain_message("same.edi", format!("ISA*{i:04}~").as_bytes()));
                    let (st, text) = post(&url, &hs, body);
                    assert_eq!(st, 200, "{text}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    wait_for(60, "64 delivered files", || (delivered(&tmp.path().join("inbox"), "edinode", "acme").len() >= 64).then_some(()));
    wait_rabbit_idle();
    let files = delivered(&tmp.path().join("inbox"), "edinode", "acme");
    assert_eq!(files.len(), 64, "{:?}", files.iter().map(|f| &f.0).collect::<Vec<_>>());
    let contents: std::collections::HashSet<_> = files.iter().map(|(_, c)| c.clone()).collect();
    assert_eq!(contents.len(), 64, "every document kept, none replaced");
    assert!(files.iter().all(|(n, _)| n.ends_with("same.edi")));
    assert!(files.iter().any(|(n, _)| n == "same.edi"));
}

#[test]
fn many_slow_connections_do_not_lock_out_a_partner() {
    let tmp = tempfile::tempdir().unwrap();
    let node = start(tmp.path(), "", &[("[http]", "header_timeout_secs = 2")]);
    let addr = node.addr();
    // 400 connections that start a request head and never finish it (slowloris).
    let mut slow: Vec<TcpStream> = (0..400)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"POST /as2 HTTP/1.1\r\nHost: x\r\nAS2-From: acme\r\n").unwrap();
            s
        })
        .collect();
    // A partner still gets through at once.
    let (hs, body) = request("acme", "edinode", "<slow-1@x>", None, &plain_message("ok.edi", b"ISA*ok~"));
    let started = Instant::now();
    let (st, text) = post(&node.as2_url(), &hs, body);
    assert_eq!(st, 200, "{text}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    // The slow ones are closed once their head timeout (2 s) passes: each read waits for its
    // connection's end, all of them within one deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut closed = 0;
    for s in slow.iter_mut() {
        s.set_read_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)))).unwrap();
        let mut b = [0u8; 512];
        // Whatever the server said (a 408), then end of stream or a reset: closed. A read that
        // times out: still open.
        loop {
            match s.read(&mut b) {
                Ok(0) => {
                    closed += 1;
                    break;
                }
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
                Err(_) => {
                    closed += 1;
                    break;
                }
            }
        }
    }
    assert_eq!(closed, slow.len(), "every slow connection is closed by the server");
}
