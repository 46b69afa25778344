//! Acceptance 5, over the machine's real RabbitMQ and Redis: two node processes share the work;
//! a node killed with SIGKILL and a RabbitMQ restart mid-run lose nothing that got a positive
//! MDN, and deliver it exactly once. These tests share the broker's queues, so they run one at a
//! time (a lock here for `cargo test`, a nextest test group for CI).

use crate::common::build::*;
use crate::common::*;
use edinode_proto::alg::DigestAlg;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

struct Cluster {
    dir: tempfile::TempDir,
    station: Identity,
    partner: Identity,
    cfg: std::path::PathBuf,
    prefix: String,
}

fn cluster() -> Cluster {
    purge_queues();
    let dir = tempfile::tempdir().unwrap();
    let station = identity(dir.path(), "station");
    let partner = identity(dir.path(), "partner");
    let prefix = unique("edinode-test-");
    let cfg = ConfigBuilder::new(dir.path())
        .rabbit(&prefix)
        .station("edinode", "edinode", &station)
        .partner("acme", "acme", "edinode", &[&partner.cert_pem], "require_signed = true\nrequire_encrypted = true")
        .write(dir.path());
    Cluster { dir, station, partner, cfg, prefix }
}

fn node(c: &Cluster, id: &str, actors: Option<&str>) -> NodeProc {
    let mut extra = vec![];
    let a;
    if let Some(x) = actors {
        a = format!("--actors={x}");
        extra.push(a.as_str());
    }
    start_node(&c.cfg, c.dir.path(), &extra, &[("EDINODE__NODE__ID", id)])
}

/// Build one signed+encrypted message body (sent many times with different Message-IDs).
fn message(c: &Cluster, n: usize) -> Vec<u8> {
    let doc = entity("application/edi-x12", &format!("msg-{n}.edi"), format!("ISA*00*{n:06}~\r\nGS*PO~\r\n").as_bytes());
    encrypted(&signed(&doc, &c.partner.key, &c.partner.cert, DigestAlg::Sha256), &c.station.cert)
}

/// Send messages 0..n from `threads` threads to `url`; returns n -> positive MDN received.
fn send_all(c: &Cluster, url: &str, n: usize, threads: usize, pause: Duration) -> HashMap<usize, bool> {
    let results = Arc::new(Mutex::new(HashMap::new()));
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new((0..n).map(|i| message(c, i)).collect());
    let mut hs = Vec::new();
    for t in 0..threads {
        let (results, bodies, url) = (results.clone(), bodies.clone(), url.to_string());
        hs.push(std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(90)).build().unwrap();
            for i in (t..n).step_by(threads) {
                let (headers, body) = request("acme", "edinode", &format!("<rabbit-{i}@test>"), Some("signed"), &bodies[i]);
                let mut req = client.post(&url);
                for (k, v) in &headers {
                    req = req.header(k.as_str(), v.as_str());
                }
                let ok = match req.body(body).send() {
                    Ok(r) => {
                        let st = r.status().as_u16();
                        let text = String::from_utf8_lossy(&r.bytes().unwrap_or_default()).to_string();
                        st == 200 && text.contains("MDN-sent-automatically; processed\r\n")
                    }
                    Err(_) => false,
                };
                results.lock().unwrap().insert(i, ok);
                std::thread::sleep(pause);
            }
        }));
    }
    for h in hs {
        h.join().unwrap();
    }
    Arc::try_unwrap(results).unwrap().into_inner().unwrap()
}

/// Every message with a positive MDN is in the inbox exactly once.
fn assert_delivered_once(inbox: &Path, results: &HashMap<usize, bool>) {
    let positive: Vec<usize> = results.iter().filter(|(_, ok)| **ok).map(|(i, _)| *i).collect();
    assert!(!positive.is_empty(), "no message got a positive MDN at all");
    wait_for(60, "deliveries", || {
        let files: Vec<String> = delivered(inbox, "edinode", "acme").into_iter().map(|f| f.0).collect();
        positive.iter().all(|i| files.iter().any(|f| f.ends_with(&format!("msg-{i}.edi")))).then_some(())
    });
    // Let stragglers (redeliveries) land before counting.
    std::thread::sleep(Duration::from_secs(2));
    let files: Vec<String> = delivered(inbox, "edinode", "acme").into_iter().map(|f| f.0).collect();
    for i in positive {
        let copies = files.iter().filter(|f| f.ends_with(&format!("msg-{i}.edi"))).count();
        assert_eq!(copies, 1, "message {i} delivered {copies} times: {files:?}");
    }
}

#[test]
fn two_nodes_share_the_work() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = cluster();
    let a = node(&c, "node-a", None);
    let _b = node(&c, "node-b", Some("decryptor,verifier"));
    let results = send_all(&c, &a.as2_url(), 80, 8, Duration::from_millis(0));
    assert!(results.values().all(|ok| *ok), "every message gets a positive MDN: {results:?}");
    assert_delivered_once(&c.dir.path().join("inbox"), &results);
    let by = work_by_node(&c.prefix);
    assert_eq!(by.values().sum::<usize>(), 80, "{by:?}");
    assert!(by.get("node-a").copied().unwrap_or(0) > 0 && by.get("node-b").copied().unwrap_or(0) > 0, "both nodes decrypted: {by:?}");
}

#[test]
fn a_node_killed_with_sigkill_loses_nothing() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = cluster();
    let front = node(&c, "front", Some("http_receiver,mime_unwrapper,mdn_sender"));
    let mut worker = node(&c, "worker-1", Some("decryptor,verifier,deliverer,mime_unwrapper"));
    let url = front.as2_url();
    let answered = Arc::new(Mutex::new(HashMap::new()));
    let sender = {
        let bodies: Vec<Vec<u8>> = (0..120).map(|i| message(&c, i)).collect();
        let url = url.clone();
        let results = answered.clone();
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(90)).build().unwrap();
            let mut hs = Vec::new();
            let bodies = Arc::new(bodies);
            for t in 0..6 {
                let (client, results, bodies, url) = (client.clone(), results.clone(), bodies.clone(), url.clone());
                hs.push(std::thread::spawn(move || {
                    for i in (t..120).step_by(6) {
                        let (headers, body) = request("acme", "edinode", &format!("<kill-{i}@test>"), Some("signed"), &bodies[i]);
                        let mut req = client.post(&url);
                        for (k, v) in &headers {
                            req = req.header(k.as_str(), v.as_str());
                        }
                        let ok = req.body(body).send().ok().map(|r| {
                            let st = r.status().as_u16();
                            st == 200 && String::from_utf8_lossy(&r.bytes().unwrap_or_default()).contains("MDN-sent-automatically; processed\r\n")
                        });
                        results.lock().unwrap().insert(i, ok.unwrap_or(false));
                        std::thread::sleep(Duration::from_millis(40));
                    }
                }));
            }
            for h in hs {
                h.join().unwrap();
            }
            results.lock().unwrap().clone()
        })
    };
    // Killed mid-run, whatever the speed: once a fifth of the messages are answered.
    wait_for(60, "the first answers", || (answered.lock().unwrap().len() >= 24).then_some(()));
    worker.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    let _worker2 = node(&c, "worker-2", Some("decryptor,verifier,deliverer,mime_unwrapper"));
    let results: HashMap<usize, bool> = sender.join().unwrap();
    let positive = results.values().filter(|v| **v).count();
    assert!(positive >= 100, "only {positive} of 120 got a positive MDN");
    assert_delivered_once(&c.dir.path().join("inbox"), &results);
    let by = work_by_node(&c.prefix);
    assert!(by.contains_key("worker-1") && by.contains_key("worker-2"), "work before and after the kill: {by:?}");
}

#[test]
fn a_rabbitmq_restart_loses_nothing() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = cluster();
    let a = node(&c, "solo", None);
    let url = a.as2_url();
    let bodies: Vec<Vec<u8>> = (0..150).map(|i| message(&c, i)).collect();
    let sender = std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(90)).build().unwrap();
        let mut results = HashMap::new();
        for (i, b) in bodies.iter().enumerate() {
            let (headers, body) = request("acme", "edinode", &format!("<restart-{i}@test>"), Some("signed"), b);
            let mut req = client.post(&url);
            for (k, v) in &headers {
                req = req.header(k.as_str(), v.as_str());
            }
            let ok = req.body(body).send().ok().map(|r| {
                let st = r.status().as_u16();
                st == 200 && String::from_utf8_lossy(&r.bytes().unwrap_or_default()).contains("MDN-sent-automatically; processed\r\n")
            });
            results.insert(i, ok.unwrap_or(false));
            std::thread::sleep(Duration::from_millis(25));
        }
        results
    });
    std::thread::sleep(Duration::from_millis(800));
    let st = std::process::Command::new("rabbitmqctl").args(["stop_app"]).status().unwrap();
    assert!(st.success());
    std::thread::sleep(Duration::from_millis(1500));
    let st = std::process::Command::new("rabbitmqctl").args(["start_app"]).status().unwrap();
    assert!(st.success());
    let results = sender.join().unwrap();
    let positive = results.values().filter(|v| **v).count();
    let after: Vec<usize> = (120..150).filter(|i| results[i]).collect();
    assert!(after.len() >= 25, "the node recovers after the restart: {} of the last 30 processed", after.len());
    eprintln!("{positive} of 150 got a positive MDN across the restart");
    assert_delivered_once(&c.dir.path().join("inbox"), &results);
}

#[test]
fn documents_are_published_on_the_inbound_exchange_with_headers() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = cluster();
    let a = node(&c, "bus", None);
    // An enterprise consumer: a queue bound to edinode.inbound.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let qname = unique("enterprise-");
    let (conn, ch) = rt.block_on(async {
        use lapin::options::*;
        let conn = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default()).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.exchange_declare("edinode.inbound".into(), lapin::ExchangeKind::Topic, ExchangeDeclareOptions { durable: true, ..Default::default() }, Default::default()).await.unwrap();
        ch.queue_declare(qname.as_str().into(), QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() }, Default::default()).await.unwrap();
        ch.queue_bind(qname.as_str().into(), "edinode.inbound".into(), "#".into(), Default::default(), Default::default()).await.unwrap();
        (conn, ch)
    });
    let results = send_all(&c, &a.as2_url(), 3, 1, Duration::from_millis(0));
    assert!(results.values().all(|v| *v));
    let got = rt.block_on(async {
        let mut got = Vec::new();
        for _ in 0..100 {
            if let Some(d) = ch.basic_get(qname.as_str().into(), Default::default()).await.unwrap() {
                got.push(d);
                if got.len() == 3 {
                    break;
                }
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        got
    });
    drop(conn);
    assert_eq!(got.len(), 3);
    // Every document carries a stable AMQP message_id a consumer can deduplicate on.
    let ids: std::collections::HashSet<String> = got.iter().map(|d| d.delivery.properties.message_id().clone().expect("message_id").to_string()).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    for d in got {
        let h = d.delivery.properties.headers().clone().unwrap();
        let s = |k: &str| match h.inner().get(k) {
            Some(lapin::types::AMQPValue::LongString(v)) => String::from_utf8_lossy(v.as_bytes()).to_string(),
            other => panic!("header {k}: {other:?}"),
        };
        assert_eq!(s("as2-from"), "acme");
        assert_eq!(s("as2-to"), "edinode");
        assert!(s("message-id").starts_with("<rabbit-"));
        let n: usize = s("message-id").trim_start_matches("<rabbit-").trim_end_matches("@test>").parse().unwrap();
        assert_eq!(s("filename"), format!("msg-{n}.edi"));
        assert_eq!(s("content-type"), "application/edi-x12");
        assert_eq!(d.delivery.data, format!("ISA*00*{n:06}~\r\nGS*PO~\r\n").into_bytes());
    }
}

#[test]
fn a_stage_that_keeps_failing_dead_letters_with_reason_and_attempts() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = cluster();
    // The inbox is a file, not a directory: the Deliverer cannot write, every attempt fails.
    let blocked = c.dir.path().join("blocked-inbox");
    std::fs::write(&blocked, b"not a directory").unwrap();
    let a = start_node(
        &c.cfg,
        c.dir.path(),
        &[],
        &[("EDINODE__NODE__ID", "dlq"), ("EDINODE__NODE__INBOX", blocked.to_str().unwrap()), ("EDINODE__RABBITMQ__MAX_ATTEMPTS", "3"), ("EDINODE__ADMIN__TOKEN", "dlq-token")],
    );
    let results = send_all(&c, &a.as2_url(), 1, 1, Duration::from_millis(0));
    assert!(results[&0], "the MDN is positive: the document is durable in the deliverer's queue");
    // GET /api/dead lists it in place (twice: listing takes nothing away).
    let list = || -> serde_json::Value {
        let r = reqwest::blocking::Client::new().get(format!("{}/api/dead", a.admin_url.as_ref().unwrap())).bearer_auth("dlq-token").send().unwrap();
        serde_json::from_str(&r.text().unwrap()).unwrap()
    };
    let listed = wait_for(10, "the dead letter listed", || list()["dead_letters"].as_array().filter(|d| !d.is_empty()).cloned());
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["queue"], "edinode.deliverer");
    assert_eq!(listed[0]["attempts"], 3);
    assert!(listed[0]["reason"].as_str().unwrap().contains("blocked-inbox") && listed[0]["id"].is_string(), "{listed:?}");
    assert_eq!(list()["dead_letters"].as_array().unwrap().len(), 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let d = rt.block_on(async {
        let conn = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default()).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        for _ in 0..100 {
            if let Some(d) = ch.basic_get("edinode.dead".into(), lapin::options::BasicGetOptions { no_ack: true }).await.unwrap() {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("nothing dead-lettered");
    });
    let h = d.delivery.properties.headers().clone().unwrap();
    let reason = match h.inner().get("x-edinode-reason") {
        Some(lapin::types::AMQPValue::LongString(v)) => String::from_utf8_lossy(v.as_bytes()).to_string(),
        other => panic!("{other:?}"),
    };
    assert!(reason.contains("blocked-inbox"), "{reason}");
    assert_eq!(h.inner().get("x-edinode-attempt"), Some(&lapin::types::AMQPValue::LongUInt(3)));
    match h.inner().get("x-edinode-queue") {
        Some(lapin::types::AMQPValue::LongString(v)) => assert_eq!(v.as_bytes(), b"edinode.deliverer"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn documents_put_on_edinode_outbound_are_sent_and_bad_ones_dead_lettered() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    purge_queues();
    // Receiver: a second node (station acme) that delivers what it gets.
    let tmp = tempfile::tempdir().unwrap();
    let (ds, dr) = (tmp.path().join("s"), tmp.path().join("r"));
    std::fs::create_dir_all(&ds).unwrap();
    std::fs::create_dir_all(&dr).unwrap();
    let s_id = identity(&ds, "sender");
    let r_id = identity(&dr, "receiver");
    let rcfg = ConfigBuilder::new(&dr).station("acme", "acme", &r_id).partner("edinode", "edinode", "acme", &[&s_id.cert_pem], "").write(&dr);
    let receiver = start_node(&rcfg, &dr, &[], &[]);
    let prefix = unique("edinode-out-");
    let scfg = ConfigBuilder::new(&ds)
        .rabbit(&prefix)
        .station("edinode", "edinode", &s_id)
        .raw(&format!(
            "\n[partners.acme]\nas2_id = \"acme\"\nstation = \"edinode\"\nverify_certs = [\"{c}\"]\nencryption_cert = \"{c}\"\nurl = \"{u}\"\n",
            c = r_id.cert_pem.display(),
            u = receiver.as2_url()
        ))
        .write(&ds);
    let _sender = start_node(&scfg, &ds, &[], &[("EDINODE__NODE__ID", "out")]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // An enterprise consumer of edinode.events.
    let events_q = unique("events-");
    let (_econn, ech) = rt.block_on(async {
        use lapin::options::*;
        let conn = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default()).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.exchange_declare("edinode.events".into(), lapin::ExchangeKind::Topic, ExchangeDeclareOptions { durable: true, ..Default::default() }, Default::default()).await.unwrap();
        ch.queue_declare(events_q.as_str().into(), QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() }, Default::default()).await.unwrap();
        ch.queue_bind(events_q.as_str().into(), "edinode.events".into(), "#".into(), Default::default(), Default::default()).await.unwrap();
        (conn, ch)
    });
    rt.block_on(async {
        use lapin::options::*;
        use lapin::types::{AMQPValue, FieldTable, LongString};
        let conn = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default()).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        for (i, partner) in ["acme", "acme", "nobody"].iter().enumerate() {
            let mut h = FieldTable::default();
            for (k, v) in [("station", "edinode"), ("partner", partner), ("filename", &format!("bus-{i}.edi")), ("content-type", "application/edi-x12"), ("message-id", &format!("bus-{i}@erp"))] {
                h.insert(k.into(), AMQPValue::LongString(LongString::from(v.as_bytes().to_vec())));
            }
            ch.basic_publish("".into(), "edinode.outbound".into(), BasicPublishOptions::default(), format!("ISA*BUS{i}~").as_bytes(), lapin::BasicProperties::default().with_headers(h).with_delivery_mode(2))
                .await
                .unwrap()
                .await
                .unwrap();
        }
        // The same message id again: idempotent, not sent twice.
        let mut h = FieldTable::default();
        for (k, v) in [("station", "edinode"), ("partner", "acme"), ("filename", "bus-0.edi"), ("message-id", "bus-0@erp")] {
            h.insert(k.into(), AMQPValue::LongString(LongString::from(v.as_bytes().to_vec())));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        ch.basic_publish("".into(), "edinode.outbound".into(), BasicPublishOptions::default(), b"ISA*BUS0~", lapin::BasicProperties::default().with_headers(h)).await.unwrap().await.unwrap();
    });
    let files = wait_for(30, "two documents at the receiver", || {
        let d = delivered(&dr.join("inbox"), "acme", "edinode");
        (d.len() >= 2).then_some(d)
    });
    std::thread::sleep(Duration::from_secs(3));
    let files2 = delivered(&dr.join("inbox"), "acme", "edinode");
    assert_eq!(files2.len(), 2, "sent once each: {files2:?}");
    assert_eq!(files[0], ("bus-0.edi".to_string(), b"ISA*BUS0~".to_vec()));
    // The unknown partner's document is dead-lettered with the reason.
    let reason = rt.block_on(async {
        let conn = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default()).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        for _ in 0..50 {
            if let Some(d) = ch.basic_get("edinode.dead".into(), lapin::options::BasicGetOptions { no_ack: true }).await.unwrap() {
                let h = d.delivery.properties.headers().clone().unwrap();
                if let Some(lapin::types::AMQPValue::LongString(v)) = h.inner().get("x-edinode-reason") {
                    return String::from_utf8_lossy(v.as_bytes()).to_string();
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        String::new()
    });
    assert!(reason.contains("unknown partner nobody"), "{reason}");
    // Outcomes on edinode.events: two deliveries (with their MDN verified) and one rejection.
    let kinds = rt.block_on(async {
        let mut kinds = Vec::new();
        for _ in 0..50 {
            match ech.basic_get(events_q.as_str().into(), lapin::options::BasicGetOptions { no_ack: true }).await.unwrap() {
                Some(d) => {
                    let v: serde_json::Value = serde_json::from_slice(&d.delivery.data).unwrap();
                    kinds.push((v["kind"].as_str().unwrap().to_string(), v["message_id"].as_str().unwrap().to_string()));
                }
                None if kinds.len() >= 3 => break,
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        kinds
    });
    assert!(kinds.contains(&("outbound.delivered".to_string(), "<bus-0@erp>".to_string())), "{kinds:?}");
    assert!(kinds.contains(&("outbound.delivered".to_string(), "<bus-1@erp>".to_string())), "{kinds:?}");
    assert!(kinds.iter().any(|(k, m)| k == "outbound.rejected" && m == "bus-2@erp"), "{kinds:?}");
}

/// The fault-injection scenario: three processes, workers killed with SIGKILL five times and a
/// RabbitMQ restart during 1500 messages. Nothing with a positive MDN is lost or delivered twice,
/// every document on edinode.inbound carries a stable message_id (distinct ids = documents),
/// every MDN has its own Message-ID, and the tracking status of every delivered message is
/// "delivered". (A Redis restart is not part of it here: other tests on this machine use the
/// same Redis at the same time.)
#[test]
fn fault_injection_loses_nothing_and_repeats_no_effect() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = cluster();
    let n = 1500;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let qname = unique("fault-");
    let (conn, ch) = rt.block_on(async {
        use lapin::options::*;
        let conn = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default()).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.exchange_declare("edinode.inbound".into(), lapin::ExchangeKind::Topic, ExchangeDeclareOptions { durable: true, ..Default::default() }, Default::default()).await.unwrap();
        // Durable, so the broker restart keeps what it holds; deleted at the end.
        ch.queue_declare(qname.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, Default::default()).await.unwrap();
        ch.queue_bind(qname.as_str().into(), "edinode.inbound".into(), "#".into(), Default::default(), Default::default()).await.unwrap();
        (conn, ch)
    });
    drop((ch, conn));
    let front = node(&c, "front", Some("http_receiver,mime_unwrapper,mdn_sender"));
    let workers = "decryptor,verifier,deliverer,mime_unwrapper";
    let mut w = [node(&c, "w-0", Some(workers)), node(&c, "w-1", Some(workers))];
    let url = front.as2_url();
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new((0..n).map(|i| message(&c, i)).collect());
    let results = Arc::new(Mutex::new(HashMap::new()));
    let mdn_ids = Arc::new(Mutex::new(Vec::new()));
    let senders: Vec<_> = (0..8)
        .map(|t| {
            let (bodies, results, mdn_ids, url) = (bodies.clone(), results.clone(), mdn_ids.clone(), url.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(90)).build().unwrap();
                for i in (t..n).step_by(8) {
                    let (headers, body) = request("acme", "edinode", &format!("<fault-{i}@test>"), Some("signed"), &bodies[i]);
                    let mut req = client.post(&url);
                    for (k, v) in &headers {
                        req = req.header(k.as_str(), v.as_str());
                    }
                    let ok = req.body(body).send().ok().and_then(|r| {
                        let st = r.status().as_u16();
                        // The MDN's own Message-ID travels as an HTTP header of the answer.
                        let mdn_id = r.headers().get("message-id").map(|v| v.to_str().unwrap_or("").to_string());
                        let text = String::from_utf8_lossy(&r.bytes().unwrap_or_default()).to_string();
                        (st == 200 && text.contains("MDN-sent-automatically; processed\r\n")).then_some(mdn_id)
                    });
                    if let Some(id) = &ok {
                        mdn_ids.lock().unwrap().push(id.clone().expect("an MDN carries its Message-ID"));
                    }
                    results.lock().unwrap().insert(i, ok.is_some());
                }
            })
        })
        .collect();
    // Five kills of a worker, a replacement each time, and a broker restart in between.
    for k in 0..5 {
        std::thread::sleep(Duration::from_millis(1200));
        w[k % 2].kill9();
        std::thread::sleep(Duration::from_millis(300));
        w[k % 2] = node(&c, &format!("w-{}", k + 2), Some(workers));
        if k == 2 {
            assert!(std::process::Command::new("rabbitmqctl").args(["stop_app"]).status().unwrap().success());
            std::thread::sleep(Duration::from_millis(1500));
            assert!(std::process::Command::new("rabbitmqctl").args(["start_app"]).status().unwrap().success());
        }
    }
    for s in senders {
        s.join().unwrap();
    }
    let results = Arc::try_unwrap(results).unwrap().into_inner().unwrap();
    let positive = results.values().filter(|v| **v).count();
    eprintln!("{positive} of {n} got a positive MDN through 5 kills and a broker restart");
    assert!(positive >= n * 9 / 10, "only {positive} of {n}");
    assert_delivered_once(&c.dir.path().join("inbox"), &results);
    // edinode.inbound: distinct message ids = delivered documents.
    let delivered_docs = delivered(&c.dir.path().join("inbox"), "edinode", "acme").len();
    let (published, distinct) = rt.block_on(async {
        let conn = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default()).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        let mut ids = std::collections::HashSet::new();
        let mut count = 0;
        let mut idle = 0;
        while idle < 20 {
            match ch.basic_get(qname.as_str().into(), lapin::options::BasicGetOptions { no_ack: true }).await.unwrap() {
                Some(m) => {
                    idle = 0;
                    count += 1;
                    ids.insert(m.delivery.properties.message_id().clone().expect("message_id on every publication").to_string());
                }
                None => {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let _ = ch.queue_delete(qname.as_str().into(), Default::default()).await;
        (count, ids.len())
    });
    eprintln!("edinode.inbound: {published} publications, {distinct} distinct message ids, {delivered_docs} documents delivered");
    assert_eq!(distinct, delivered_docs, "one message id per document");
    // One MDN Message-ID per reception.
    let ids = mdn_ids.lock().unwrap();
    let unique_ids: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique_ids.len(), ids.len(), "an MDN Message-ID was used twice");
    // Tracking: every delivered reception reads "delivered".
    assert_tracked_delivered(&c.prefix, positive);
}

/// Every reception whose history has "delivered" reads "delivered" in its summary, and there are
/// at least `at_least` of them.
fn assert_tracked_delivered(prefix: &str, at_least: usize) {
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut con = client.get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:status:*")).query(&mut con).unwrap();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for k in keys {
        let items: Vec<String> = redis::cmd("LRANGE").arg(&k).arg(0).arg(-1).query(&mut con).unwrap();
        if items.iter().any(|i| i.contains("\"status\":\"delivered\"")) {
            checked += 1;
            let id = k.rsplit(':').next().unwrap();
            let status: Option<String> = redis::cmd("HGET").arg(format!("{prefix}:msg:{id}")).arg("status").query(&mut con).unwrap();
            if status.as_deref() != Some("delivered") {
                wrong.push((id.to_string(), status));
            }
        }
    }
    assert!(checked >= at_least, "{checked} delivered receptions tracked for {at_least} positive MDNs");
    assert!(wrong.is_empty(), "status not delivered: {wrong:?}");
}

/// Restart the machine's Redis with AOF on: switch AOF on, let it write, shut down, start again
/// with the same settings plus AOF, and wait until it answers.
fn restart_redis_with_aof() {
    let cli = |args: &[&str]| std::process::Command::new("redis-cli").args(args).output().map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
    assert!(cli(&["CONFIG", "SET", "appendonly", "yes"]).contains("OK"));
    wait_for(30, "the AOF rewrite", || {
        let info = cli(&["INFO", "persistence"]);
        (info.contains("aof_enabled:1") && info.contains("aof_rewrite_in_progress:0") && !info.contains("aof_rewrite_scheduled:1")).then_some(())
    });
    let _ = cli(&["SHUTDOWN"]);
    wait_for(20, "Redis to stop", || (!cli(&["PING"]).contains("PONG")).then_some(()));
    let mut cmd = std::process::Command::new("redis-server");
    if Path::new("/etc/redis/redis.conf").exists() {
        cmd.args(["/etc/redis/redis.conf", "--appendonly", "yes"]);
    } else {
        cmd.args(["--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379", "--save", "", "--appendonly", "yes", "--dir", "/var/lib/redis"]);
    }
    // The daemon outlives this test: it must not keep descriptors it inherited (a lock file
    // held by whoever runs the tests would stay locked while Redis runs).
    // SAFETY: close_range is async-signal-safe and touches nothing but descriptors.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::close_range(3, libc::c_uint::MAX, 0);
            Ok(())
        });
    }
    let st = cmd.status().unwrap();
    assert!(st.success(), "redis-server did not start again");
    wait_for(30, "Redis to answer again", || cli(&["PING"]).contains("PONG").then_some(()));
}

/// A Redis restart (with AOF) in the middle of a run: nothing is lost or delivered twice, and
/// duplicate detection still knows every message afterwards.
#[test]
fn a_redis_restart_with_aof_loses_nothing_and_keeps_duplicate_detection() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = cluster();
    let front = node(&c, "front", Some("http_receiver,mime_unwrapper,mdn_sender"));
    let _w = node(&c, "w-redis", Some("decryptor,verifier,deliverer,mime_unwrapper"));
    let url = front.as2_url();
    let sender = {
        let (url, bodies) = (url.clone(), Arc::new((0..300).map(|i| message(&c, i)).collect::<Vec<_>>()));
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(90)).build().unwrap();
            let mut results = HashMap::new();
            for (i, b) in bodies.iter().enumerate() {
                let (headers, body) = request("acme", "edinode", &format!("<redis-{i}@test>"), Some("signed"), b);
                let mut req = client.post(&url);
                for (k, v) in &headers {
                    req = req.header(k.as_str(), v.as_str());
                }
                let ok = req.body(body).send().ok().map(|r| r.status().as_u16() == 200 && String::from_utf8_lossy(&r.bytes().unwrap_or_default()).contains("MDN-sent-automatically; processed\r\n"));
                results.insert(i, ok.unwrap_or(false));
                std::thread::sleep(Duration::from_millis(10));
            }
            results
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    restart_redis_with_aof();
    let results = sender.join().unwrap();
    let positive = results.values().filter(|v| **v).count();
    eprintln!("{positive} of 300 got a positive MDN across a Redis restart");
    assert!(positive >= 250, "only {positive} of 300");
    assert_delivered_once(&c.dir.path().join("inbox"), &results);
    // Resends of messages from before the restart are still recognised.
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    for i in (0..40).filter(|i| results[i]) {
        let (headers, body) = request("acme", "edinode", &format!("<redis-{i}@test>"), Some("signed"), &message(&c, i));
        let mut req = client.post(&url);
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let text = String::from_utf8_lossy(&req.body(body).send().unwrap().bytes().unwrap()).to_string();
        assert!(text.contains("duplicate-document"), "resend of {i} not recognised: {text}");
    }
    assert_delivered_once(&c.dir.path().join("inbox"), &results);
    assert_tracked_delivered(&c.prefix, positive);
    // Leave the machine's Redis as the machine starts it (no AOF): later tests and benchmarks
    // measure what they expect.
    let _ = std::process::Command::new("redis-cli").args(["CONFIG", "SET", "appendonly", "no"]).status();
}
