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
    let p = pair("station", "partner");
    let prefix = unique("edinode-test-");
    let cfg = p.rabbit_config(&prefix, "require_signed = true\nrequire_encrypted = true");
    let Pair { dir, station, partner } = p;
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

/// One POST of message `body` as `<{tag}-{i}@test>` asking for a signed MDN: the MDN's own
/// Message-ID (an HTTP header of the answer) when the MDN is positive.
fn post_message(client: &reqwest::blocking::Client, url: &str, tag: &str, i: usize, body: &[u8]) -> Option<Option<String>> {
    let (headers, body) = request("acme", "edinode", &format!("<{tag}-{i}@test>"), Some("signed"), body);
    let mut req = client.post(url);
    for (k, v) in &headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let r = req.body(body).send().ok()?;
    let st = r.status().as_u16();
    let mdn_id = r.headers().get("message-id").map(|v| v.to_str().unwrap_or("").to_string());
    let text = String::from_utf8_lossy(&r.bytes().unwrap_or_default()).to_string();
    (st == 200 && text.contains("MDN-sent-automatically; processed\r\n")).then_some(mdn_id)
}

/// Messages 0..n sent in the background from `threads` threads, with what came back so far.
struct Load {
    /// n -> positive MDN received.
    results: Arc<Mutex<HashMap<usize, bool>>>,
    /// The Message-IDs of the positive MDNs.
    mdn_ids: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Starts sending messages 0..n (`<{tag}-{i}@test>`) to `url` from `threads` threads, each
/// pausing `pause` after every message (pacing, so that a fault lands mid-run).
fn load(c: &Cluster, url: &str, tag: &str, n: usize, threads: usize, pause: Duration) -> Load {
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new((0..n).map(|i| message(c, i)).collect());
    let (results, mdn_ids) = (Arc::new(Mutex::new(HashMap::new())), Arc::new(Mutex::new(Vec::new())));
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(90)).build().unwrap();
    let threads = (0..threads)
        .map(|t| {
            let (client, bodies, results, mdn_ids, url, tag) = (client.clone(), bodies.clone(), results.clone(), mdn_ids.clone(), url.to_string(), tag.to_string());
            std::thread::spawn(move || {
                for i in (t..n).step_by(threads) {
                    let ok = post_message(&client, &url, &tag, i, &bodies[i]);
                    if let Some(id) = &ok {
                        mdn_ids.lock().unwrap().push(id.clone().expect("an MDN carries its Message-ID"));
                    }
                    results.lock().unwrap().insert(i, ok.is_some());
                    // Pacing, not waiting for anything.
                    std::thread::sleep(pause);
                }
            })
        })
        .collect();
    Load { results, mdn_ids, threads }
}

impl Load {
    /// Waits until `at_least` messages got an answer (positive or not).
    fn wait_answered(&self, at_least: usize) {
        wait_for(120, &format!("{at_least} answers"), || (self.results.lock().unwrap().len() >= at_least).then_some(()));
    }
    /// Waits for every message; n -> positive MDN received, and the MDNs' Message-IDs.
    fn join(self) -> (HashMap<usize, bool>, Vec<String>) {
        for t in self.threads {
            t.join().unwrap();
        }
        let results = self.results.lock().unwrap().clone();
        let ids = self.mdn_ids.lock().unwrap().clone();
        (results, ids)
    }
}

/// Send messages 0..n from `threads` threads to `url`; returns n -> positive MDN received.
fn send_all(c: &Cluster, url: &str, n: usize, threads: usize) -> HashMap<usize, bool> {
    load(c, url, "rabbit", n, threads, Duration::ZERO).join().0
}

/// Every message with a positive MDN is in the inbox exactly once.
fn assert_delivered_once(inbox: &Path, results: &HashMap<usize, bool>) {
    let positive: Vec<usize> = results.iter().filter(|(_, ok)| **ok).map(|(i, _)| *i).collect();
    assert!(!positive.is_empty(), "no message got a positive MDN at all");
    wait_for(60, "deliveries", || {
        let files: Vec<String> = delivered(inbox, "edinode", "acme").into_iter().map(|f| f.0).collect();
        positive.iter().all(|i| files.iter().any(|f| f.ends_with(&format!("msg-{i}.edi")))).then_some(())
    });
    // Stragglers (redeliveries) land before counting: nothing is left in the broker.
    wait_rabbit_idle();
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
    let results = send_all(&c, &a.as2_url(), 80, 8);
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
    let sending = load(&c, &front.as2_url(), "kill", 120, 6, Duration::from_millis(40));
    // Killed mid-run, whatever the speed: once a fifth of the messages are answered.
    sending.wait_answered(24);
    worker.kill9();
    // Replaced once the broker has noticed (its deliveries are back in the queues).
    wait_rabbit_consumers("edinode.decryptor", 0);
    let _worker2 = node(&c, "worker-2", Some("decryptor,verifier,deliverer,mime_unwrapper"));
    let (results, _) = sending.join();
    let positive = results.values().filter(|v| **v).count();
    assert!(positive >= 100, "only {positive} of 120 got a positive MDN");
    assert_delivered_once(&c.dir.path().join("inbox"), &results);
    let by = work_by_node(&c.prefix);
    assert!(by.contains_key("worker-1") && by.contains_key("worker-2"), "work before and after the kill: {by:?}");
}

/// Stops RabbitMQ, waits until `node` reports it unreachable (/readyz), starts it again.
fn broker_outage(node: &NodeProc) {
    assert!(std::process::Command::new("rabbitmqctl").args(["stop_app"]).status().unwrap().success());
    wait_for(30, "the node to notice the broker is down", || (reqwest::blocking::get(format!("{}/readyz", node.url)).map(|r| r.status().as_u16()).unwrap_or(0) == 503).then_some(()));
    assert!(std::process::Command::new("rabbitmqctl").args(["start_app"]).status().unwrap().success());
}

#[test]
fn a_rabbitmq_restart_loses_nothing() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = cluster();
    let a = node(&c, "solo", None);
    let sending = load(&c, &a.as2_url(), "restart", 150, 1, Duration::from_millis(25));
    sending.wait_answered(20);
    broker_outage(&a);
    let (results, _) = sending.join();
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
    let (conn, ch) = rt.block_on(bound_queue("edinode.inbound", &qname, false));
    let results = send_all(&c, &a.as2_url(), 3, 1);
    assert!(results.values().all(|v| *v));
    let got = rt.block_on(async {
        let mut got = Vec::new();
        while got.len() < 3 {
            got.push(next_message(&ch, &qname, 10).await);
        }
        got
    });
    drop(conn);
    // Every document carries a stable AMQP message_id a consumer can deduplicate on.
    let ids: std::collections::HashSet<String> = got.iter().map(|d| d.delivery.properties.message_id().clone().expect("message_id").to_string()).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    for d in got {
        let s = |k: &str| amqp_header(&d, k);
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
    let results = send_all(&c, &a.as2_url(), 1, 1);
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
    let d = rt.block_on(async { next_message(&amqp_channel().await.1, "edinode.dead", 10).await });
    let reason = amqp_header(&d, "x-edinode-reason");
    assert!(reason.contains("blocked-inbox"), "{reason}");
    let h = d.delivery.properties.headers().clone().unwrap();
    assert_eq!(h.inner().get("x-edinode-attempt"), Some(&lapin::types::AMQPValue::LongUInt(3)));
    assert_eq!(amqp_header(&d, "x-edinode-queue"), "edinode.deliverer");
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
    let (_econn, ech) = rt.block_on(bound_queue("edinode.events", &events_q, false));
    let (_conn, ch) = rt.block_on(amqp_channel());
    rt.block_on(ch.confirm_select(Default::default())).unwrap();
    // Publishes a document on edinode.outbound with the given headers.
    let publish = |body: &[u8], headers: &[(&str, &str)]| {
        use lapin::types::{AMQPValue, FieldTable, LongString};
        let mut h = FieldTable::default();
        for (k, v) in headers {
            h.insert((*k).into(), AMQPValue::LongString(LongString::from(v.as_bytes().to_vec())));
        }
        let props = lapin::BasicProperties::default().with_headers(h).with_delivery_mode(2);
        rt.block_on(async { ch.basic_publish("".into(), "edinode.outbound".into(), Default::default(), body, props).await.unwrap().await.unwrap() });
    };
    for (i, partner) in ["acme", "acme", "nobody"].iter().enumerate() {
        publish(format!("ISA*BUS{i}~").as_bytes(), &[("station", "edinode"), ("partner", partner), ("filename", &format!("bus-{i}.edi")), ("content-type", "application/edi-x12"), ("message-id", &format!("bus-{i}@erp"))]);
    }
    let files = wait_for(30, "two documents at the receiver", || {
        let d = delivered(&dr.join("inbox"), "acme", "edinode");
        (d.len() >= 2).then_some(d)
    });
    assert_eq!(files[0], ("bus-0.edi".to_string(), b"ISA*BUS0~".to_vec()));
    // The same message id again, once the first was sent: idempotent, not sent twice.
    publish(b"ISA*BUS0~", &[("station", "edinode"), ("partner", "acme"), ("filename", "bus-0.edi"), ("message-id", "bus-0@erp")]);
    wait_rabbit_idle();
    receiver.wait_idle();
    let files2 = delivered(&dr.join("inbox"), "acme", "edinode");
    assert_eq!(files2.len(), 2, "sent once each: {files2:?}");
    // The unknown partner's document is dead-lettered with the reason.
    let dead = rt.block_on(next_message(&ch, "edinode.dead", 10));
    let reason = amqp_header(&dead, "x-edinode-reason");
    assert!(reason.contains("unknown partner nobody"), "{reason}");
    // Outcomes on edinode.events: two deliveries (with their MDN verified) and one rejection.
    let kinds = rt.block_on(async {
        let kind = |d: lapin::message::BasicGetMessage| {
            let v: serde_json::Value = serde_json::from_slice(&d.delivery.data).unwrap();
            (v["kind"].as_str().unwrap().to_string(), v["message_id"].as_str().unwrap().to_string())
        };
        let mut kinds = Vec::new();
        while kinds.len() < 3 {
            kinds.push(kind(next_message(&ech, &events_q, 10).await));
        }
        // And whatever else is there.
        while let Some(d) = ech.basic_get(events_q.as_str().into(), lapin::options::BasicGetOptions { no_ack: true }).await.unwrap() {
            kinds.push(kind(d));
        }
        kinds
    });
    assert!(kinds.contains(&("outbound.delivered".to_string(), "<bus-0@erp>".to_string())), "{kinds:?}");
    assert!(kinds.contains(&("outbound.delivered".to_string(), "<bus-1@erp>".to_string())), "{kinds:?}");
    assert!(kinds.iter().any(|(k, m)| k == "outbound.rejected" && m == "bus-2@erp"), "{kinds:?}");

    // Claim-checked: the document waits in the sender's blob store (fs here: var/blobs) and the
    // queue carries its key. 24 MiB is over the stream threshold: built as it streams.
    let big: Vec<u8> = (0..24u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let claims = ds.join("var/blobs/claims");
    std::fs::create_dir_all(&claims).unwrap();
    std::fs::write(claims.join("big.edi"), &big).unwrap();
    publish(b"", &[("station", "edinode"), ("partner", "acme"), ("filename", "big.edi"), ("claim-check", "claims/big.edi"), ("message-id", "bus-big@erp")]);
    // Outside claims/, and a claim that is not there: refused with the reason.
    publish(b"", &[("station", "edinode"), ("partner", "acme"), ("filename", "x.edi"), ("claim-check", "claims/../edinode.toml")]);
    publish(b"", &[("station", "edinode"), ("partner", "acme"), ("filename", "y.edi"), ("claim-check", "claims/missing.edi")]);
    let got = wait_for(120, "the claim-checked document at the receiver", || {
        let d = dr.join("inbox/acme/edinode/big.edi");
        std::fs::metadata(&d).ok().filter(|m| m.len() == big.len() as u64).map(|_| std::fs::read(&d).unwrap())
    });
    assert!(got == big, "delivered byte-exact");
    let log = std::fs::read_to_string(&_sender.log).unwrap_or_default();
    assert!(log.contains("Large outbound layer streamed"), "the sender streamed the claim-checked document");
    let reasons: Vec<String> = (0..2).map(|_| amqp_header(&rt.block_on(next_message(&ch, "edinode.dead", 20)), "x-edinode-reason")).collect();
    assert!(reasons.iter().any(|r| r.contains("expected a key below claims/")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("claims/missing.edi")), "{reasons:?}");
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
    // Durable, so the broker restart keeps what it holds; deleted at the end.
    drop(rt.block_on(bound_queue("edinode.inbound", &qname, true)));
    let front = node(&c, "front", Some("http_receiver,mime_unwrapper,mdn_sender"));
    let workers = "decryptor,verifier,deliverer,mime_unwrapper";
    let mut w = [node(&c, "w-0", Some(workers)), node(&c, "w-1", Some(workers))];
    let sending = load(&c, &front.as2_url(), "fault", n, 8, Duration::ZERO);
    // Five kills of a worker spread over the run, a replacement each time (once the broker
    // noticed the kill), and a broker restart in between.
    for k in 0..5 {
        sending.wait_answered((k + 1) * n / 7);
        w[k % 2].kill9();
        wait_rabbit_consumers("edinode.decryptor", 1);
        w[k % 2] = node(&c, &format!("w-{}", k + 2), Some(workers));
        if k == 2 {
            broker_outage(&front);
        }
    }
    let (results, ids) = sending.join();
    let positive = results.values().filter(|v| **v).count();
    eprintln!("{positive} of {n} got a positive MDN through 5 kills and a broker restart");
    assert!(positive >= n * 9 / 10, "only {positive} of {n}");
    assert_delivered_once(&c.dir.path().join("inbox"), &results);
    // edinode.inbound: distinct message ids = delivered documents.
    let delivered_docs = delivered(&c.dir.path().join("inbox"), "edinode", "acme").len();
    let (published, distinct) = rt.block_on(async {
        let (_conn, ch) = amqp_channel().await;
        let mut ids = std::collections::HashSet::new();
        let mut count = 0;
        // Every publication is in the queue: the deliverers published before they acknowledged,
        // and the broker is idle (assert_delivered_once).
        while let Some(m) = ch.basic_get(qname.as_str().into(), lapin::options::BasicGetOptions { no_ack: true }).await.unwrap() {
            count += 1;
            ids.insert(m.delivery.properties.message_id().clone().expect("message_id on every publication").to_string());
        }
        let _ = ch.queue_delete(qname.as_str().into(), Default::default()).await;
        (count, ids.len())
    });
    eprintln!("edinode.inbound: {published} publications, {distinct} distinct message ids, {delivered_docs} documents delivered");
    assert_eq!(distinct, delivered_docs, "one message id per document");
    // One MDN Message-ID per reception.
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
    let sending = load(&c, &url, "redis", 300, 1, Duration::from_millis(10));
    sending.wait_answered(40);
    restart_redis_with_aof();
    let (results, _) = sending.join();
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
