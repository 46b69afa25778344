//! The S3 integration against a real S3-protocol server started by the test (s3s-fs over a temp
//! directory, with the seed's least-privilege policy emulated per access key): the access check
//! (CLI), inbound paths including test/, the 15 s / steady-state pick-up rules (with short
//! timings), the failed/ move, exactly-once pick-up by two polling nodes, and a node that dies
//! between queueing and deleting. RabbitMQ/Redis tests run serially (nextest group).

use crate::common::s3server;

use crate::common::build::*;
use crate::common::*;
use s3server::{Grant, Policy, TestS3};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

static SERIAL: Mutex<()> = Mutex::new(());

fn s3_section(s3: &TestS3, user: &str, secret: &str, extra: &str) -> String {
    format!(
        "[stations.edinode.s3]\nbucket = \"{}\"\nendpoint = \"{}\"\naccess_key = \"{user}\"\nsecret_key = \"{secret}\"\npickup_age_secs = 1.0\nsteady_secs = 2.0\npoll_secs = 0.2\n{extra}\n",
        s3.bucket, s3.endpoint
    )
}

/// What the partner received.
type Received = Arc<Mutex<Vec<Request>>>;

/// A partner that accepts every POST (no MDN asked) and records it.
fn partner_server() -> (String, Received) {
    let l = listen(|_, _| (200, vec![], vec![]));
    (l.url("/as2"), l.requests)
}

fn setup() -> Pair {
    pair("station", "partner")
}

fn config(s: &Pair, s3: &TestS3, user: &str, secret: &str, s3extra: &str, partner_url: &str, rabbit: Option<&str>) -> std::path::PathBuf {
    let mut b = ConfigBuilder::new(s.dir.path());
    if let Some(prefix) = rabbit {
        b = b.rabbit(prefix);
    }
    b.station("edinode", "edinode", &s.station)
        .raw(&s3_section(s3, user, secret, s3extra))
        .raw(&format!(
            "\n[partners.acme]\nas2_id = \"acme\"\nstation = \"edinode\"\nverify_certs = [\"{c}\"]\nurl = \"{partner_url}\"\n[partners.acme.outbound]\nmdn = \"none\"\nencrypt = \"none\"\n\n[partners.tester]\nas2_id = \"tester\"\nstation = \"edinode\"\nverify_certs = [\"{c}\"]\ntest = true\nurl = \"{partner_url}\"\n[partners.tester.outbound]\nmdn = \"none\"\nencrypt = \"none\"\n",
            c = s.partner.cert_pem.display()
        ))
        .write(s.dir.path())
}

fn put_file(s3: &TestS3, key: &str, data: &[u8]) {
    let p = s3.path(key);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// Puts `key` as if it had been uploaded at `at`: s3s-fs lists a file's mtime as the object's
/// LastModified. The file is dated beside the bucket and renamed in, so no listing sees it with
/// another date.
fn put_file_at(s3: &TestS3, key: &str, data: &[u8], at: SystemTime) {
    let staged = s3.dir.path().join(unique("put-"));
    std::fs::write(&staged, data).unwrap();
    std::fs::File::options().write(true).open(&staged).unwrap().set_modified(at).unwrap();
    let p = s3.path(key);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::rename(&staged, p).unwrap();
}

fn exists(s3: &TestS3, key: &str) -> bool {
    s3.path(key).exists()
}

fn find_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(d: &Path, root: &Path, out: &mut Vec<String>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, root, out);
                } else {
                    out.push(p.strip_prefix(root).unwrap().to_string_lossy().to_string());
                }
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// An embedded node with outbound pick-up on, as "gateway" under the least-privilege policy,
/// sending to a partner that records what it gets. Fields drop in order: the node first.
struct Outbox {
    node: NodeProc,
    got: Received,
    s: Pair,
    s3: TestS3,
    _rt: tokio::runtime::Runtime,
}

fn outbox() -> Outbox {
    let rt = rt();
    let s3 = rt.block_on(TestS3::start(vec![("gateway", "gw-secret", Policy::least_privilege())]));
    let s = setup();
    let (url, got) = partner_server();
    let cfg = config(&s, &s3, "gateway", "gw-secret", "outbound = true", &url, None);
    let node = start_node(&cfg, s.dir.path(), &[], &[]);
    Outbox { node, got, s, s3, _rt: rt }
}

/// `edinode s3 check` with this user and S3 section: (passed, output).
fn s3_check(s: &Pair, s3: &TestS3, user: &str, secret: &str, extra: &str) -> (bool, String) {
    let cfg = config(s, s3, user, secret, extra, "http://127.0.0.1:9/as2", None);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edinode")).arg("--config").arg(&cfg).args(["s3", "check", "--station", "edinode"]).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn access_check_passes_under_least_privilege_and_names_a_missing_permission() {
    let rt = rt();
    let s3 = rt.block_on(TestS3::start(vec![
        ("gateway", "gw-secret", Policy::least_privilege()),
        ("noput", "np-secret", Policy::least_privilege_without(Grant::PutInbound)),
        ("nolist", "nl-secret", Policy::least_privilege_without(Grant::ListOutbound)),
    ]));
    let s = setup();
    let run = |user: &str, secret: &str| s3_check(&s, &s3, user, secret, "outbound = true");
    let (ok, out) = run("gateway", "gw-secret");
    assert!(ok, "{out}");
    assert!(out.contains("S3 access check passed"));
    assert!(find_under(&s3.dir.path().join(&s3.bucket)).is_empty(), "the check cleaned up");
    let (ok, out) = run("noput", "np-secret");
    assert!(!ok && out.contains("s3:PutObject") && out.contains("PutObject on as2gateway/edinode/"), "{out}");
    let (ok, out) = run("nolist", "nl-secret");
    assert!(!ok && out.contains("s3:ListBucket") && out.contains("AS2/send/edinode/"), "{out}");
    // A node whose check fails refuses the integration (and says why) but still runs.
    let cfg = config(&s, &s3, "noput", "np-secret", "", "http://127.0.0.1:9/as2", None);
    let node = start_node(&cfg, s.dir.path(), &[], &[]);
    let msg = encrypted(&entity("application/edi-x12", "in.edi", b"ISA~"), &s.station.cert);
    let (hs, body) = request("acme", "edinode", "<s3-refused@test>", Some("plain"), &msg);
    assert_eq!(post_capture(&node.as2_url(), &hs, body).0, 200);
    let log = wait_for(10, "the refusal in the log", || {
        let l = std::fs::read_to_string(&node.log).unwrap_or_default();
        l.contains("S3 integration refused").then_some(l)
    });
    assert!(log.contains("s3:PutObject"), "{log}");
    // /readyz says so: unready, the station false, and why.
    let r = reqwest::blocking::get(format!("{}/readyz", node.url)).unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let v: serde_json::Value = serde_json::from_str(&r.text().unwrap()).unwrap();
    assert_eq!(v["s3"]["edinode"], serde_json::Value::Bool(false), "{v}");
    assert!(v["s3_refused"]["edinode"].as_str().unwrap().contains("s3:PutObject denied"), "{v}");
}

/// Events the embedded node wrote to `<data_dir>/events.jsonl`.
fn events(s: &Pair) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(s.dir.path().join("var/events.jsonl")).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn s3_failed(s: &Pair) -> Vec<String> {
    events(s).iter().filter(|e| e["kind"] == "s3.failed").map(|e| e["detail"].as_str().unwrap().to_string()).collect()
}

fn count(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log).unwrap_or_default().matches(needle).count()
}

#[test]
fn a_file_that_can_be_neither_read_nor_moved_is_reported_once_as_it_is() {
    let rt = rt();
    // "noget" lacks s3:GetObject under AS2/send/ (it passes the check while the outbox is empty:
    // a warning); "nocopy" may not write failed/ (only the access-check probe).
    let nocopy = Grant::ALL
        .into_iter()
        .filter(|g| *g != Grant::PutInbound)
        .fold(Policy::none(), |p, g| p.with(g))
        .allow(s3server::Action::PutObject, "as2gateway/edinode/.edinode-access-check-");
    let s3 = rt.block_on(TestS3::start(vec![("noget", "ng-secret", Policy::least_privilege_without(Grant::GetOutbound)), ("nocopy", "nc-secret", nocopy)]));
    let s = setup();
    let (url, got) = partner_server();

    let cfg = config(&s, &s3, "noget", "ng-secret", "outbound = true", &url, None);
    let node = start_node(&cfg, s.dir.path(), &[], &[]);
    // Uploaded two seconds ago, so that an upload now falls in a later second (see below).
    put_file_at(&s3, "AS2/send/edinode/acme/secret.edi", b"ISA*SECRET~", SystemTime::now() - Duration::from_secs(2));
    wait_for(10, "the report", || (!s3_failed(&s).is_empty()).then_some(()));
    // Ten more polls: nothing new.
    s3.wait_listings(10);
    let failed = s3_failed(&s);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("AS2/send/edinode/acme/secret.edi") && failed[0].contains("GetObject") && failed[0].contains("left in place"), "{failed:?}");
    assert!(!failed[0].contains("; moved to"), "{failed:?}");
    assert_eq!(count(&node.log, "could not be queued nor moved to failed/"), 1);
    assert_eq!(count(&node.log, "moved to failed/."), 0);
    assert!(exists(&s3, "AS2/send/edinode/acme/secret.edi"), "left in place");
    assert!(find_under(&s3.dir.path().join(&s3.bucket).join("as2gateway")).is_empty(), "nothing claimed to be under failed/");
    // A new upload of the file is a new attempt, reported again. Listings carry no ETag and
    // show whole seconds: the upload is told from the first by its later second.
    put_file(&s3, "AS2/send/edinode/acme/secret.edi", b"ISA*SECRET2~");
    wait_for(10, "the second report", || (s3_failed(&s).len() == 2).then_some(()));
    drop(node);

    // A failed copy to failed/ is an error, not a move.
    let cfg = config(&s, &s3, "nocopy", "nc-secret", "outbound = true", &url, None);
    std::fs::remove_file(s3.path("AS2/send/edinode/acme/secret.edi")).unwrap();
    let node = start_node(&cfg, s.dir.path(), &[], &[]);
    put_file(&s3, "AS2/send/edinode/nobody/x.edi", b"ISA*X~");
    wait_for(10, "the report", || (s3_failed(&s).len() == 3).then_some(()));
    s3.wait_listings(10);
    let failed = s3_failed(&s);
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(failed[2].contains("no partner nobody") && failed[2].contains("not moved to failed/") && failed[2].contains("CopyObject"), "{failed:?}");
    assert_eq!(count(&node.log, "could not be queued nor moved to failed/"), 1);
    assert!(exists(&s3, "AS2/send/edinode/nobody/x.edi"), "left in place");
    assert!(got.lock().unwrap().is_empty());
}

#[test]
fn nothing_is_picked_up_before_the_pickup_age_has_really_passed() {
    let Outbox { got, s3, .. } = &outbox();
    // Written 0.9 s into a second: the listing (whole seconds, as AWS) shows it 0.9 s older
    // than it is. Each file is dated at the next three such moments, up to 3 s from now, so
    // nothing waits for the clock to reach them.
    let now = SystemTime::now();
    let into_second = Duration::from_nanos(now.duration_since(UNIX_EPOCH).unwrap().subsec_nanos().into());
    let late = now - into_second + Duration::from_millis(900);
    let late = if late > now { late } else { late + Duration::from_secs(1) };
    let mut written = Vec::new();
    for i in 0..3 {
        let key = format!("AS2/send/edinode/acme/late{i}.edi");
        let at = late + Duration::from_secs(i);
        put_file_at(s3, &key, b"ISA*LATE~", at);
        written.push((key, at));
    }
    wait_for(15, "all three sent", || (got.lock().unwrap().len() == 3).then_some(()));
    for (key, at) in written {
        let (_, read_at) = s3.reads().into_iter().find(|(k, _)| *k == key).expect("read");
        let age = read_at.duration_since(at).unwrap_or_default();
        assert!(age >= Duration::from_secs(1), "{key} read {age:?} after it was written (pickup_age_secs = 1)");
    }
}

#[test]
fn inbound_files_land_under_as2gateway_with_test_level_and_outbox_rules_hold() {
    let Outbox { node, got, s, s3, _rt } = outbox();
    // Inbound: production and test partners.
    for (from, mid) in [("acme", "<in-1@test>"), ("tester", "<in-2@test>")] {
        let msg = encrypted(&entity("application/edi-x12", "order.edi", format!("ISA*{from}~").as_bytes()), &s.station.cert);
        let (hs, body) = request(from, "edinode", mid, Some("plain"), &msg);
        assert_eq!(post_capture(&node.as2_url(), &hs, body).0, 200);
    }
    wait_for(10, "inbound objects", || (exists(&s3, "as2gateway/edinode/acme/inbox/in-1@test/order.edi") && exists(&s3, "as2gateway/edinode/tester/test/inbox/in-2@test/order.edi")).then_some(()));
    assert_eq!(std::fs::read(s3.path("as2gateway/edinode/acme/inbox/in-1@test/order.edi")).unwrap(), b"ISA*acme~");

    // Outbound: a file is not picked up before it is pickup_age old, then once.
    put_file(&s3, "AS2/send/edinode/acme/po1.edi", b"ISA*PO1~");
    let put = std::time::Instant::now();
    s3.wait_listings(3);
    // Only meaningful while it is younger than pickup_age_secs (1 s).
    if put.elapsed() < Duration::from_millis(900) {
        assert!(exists(&s3, "AS2/send/edinode/acme/po1.edi"), "too young to be picked up");
        assert!(got.lock().unwrap().is_empty());
    }
    wait_for(10, "pick-up", || (!exists(&s3, "AS2/send/edinode/acme/po1.edi")).then_some(()));
    wait_for(10, "the partner got it", || (got.lock().unwrap().len() == 1).then_some(()));
    assert!(got.lock().unwrap()[0].body.windows(8).any(|w| w == b"ISA*PO1~"));

    // A subdirectory goes as one message once steady for steady_secs (2 s here). a.edi was
    // uploaded 1.2 s ago: past pickup_age_secs, alone it would go.
    put_file_at(&s3, "AS2/send/edinode/acme/batch1/a.edi", b"ISA*A~", SystemTime::now() - Duration::from_millis(1200));
    put_file(&s3, "AS2/send/edinode/acme/batch1/b.xml", b"<b/>");
    let put = std::time::Instant::now();
    s3.wait_listings(3);
    // Only meaningful while b.xml is younger than steady_secs (2 s).
    if put.elapsed() < Duration::from_millis(1900) {
        assert!(exists(&s3, "AS2/send/edinode/acme/batch1/a.edi"), "b.xml is new: not steady yet");
    }
    wait_for(10, "the batch picked up", || (!exists(&s3, "AS2/send/edinode/acme/batch1/a.edi") && !exists(&s3, "AS2/send/edinode/acme/batch1/b.xml")).then_some(()));
    wait_for(10, "one multi-attachment message", || (got.lock().unwrap().len() == 2).then_some(()));
    let r = got.lock().unwrap()[1].clone();
    assert!(r.header("ediint-features").is_some_and(|v| v.contains("multiple-attachments")));
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.contains("multipart/related") && text.contains("ISA*A~") && text.contains("<b/>"), "{text}");

    // Test partners send from <partner>/test/.
    put_file(&s3, "AS2/send/edinode/tester/test/t.edi", b"ISA*TEST~");
    wait_for(10, "the test partner's file", || (got.lock().unwrap().len() == 3).then_some(()));

    // A file that cannot be queued (no such partner) moves to failed/<time>/ and is reported.
    put_file(&s3, "AS2/send/edinode/nobody/x.edi", b"ISA*X~");
    wait_for(10, "the failed/ move", || {
        let all = find_under(&s3.dir.path().join(&s3.bucket).join("as2gateway/edinode/nobody"));
        all.iter().any(|k| k.starts_with("failed/") && k.ends_with("/x.edi")).then_some(())
    });
    wait_for(10, "the source removed", || (!exists(&s3, "AS2/send/edinode/nobody/x.edi")).then_some(()));
    assert!(std::fs::read_to_string(&node.log).unwrap().contains("moved to failed/"));
    assert_eq!(got.lock().unwrap().len(), 3, "nothing else was sent");
    // /readyz covers the configured bucket: ready now, unready once the S3 server is gone.
    let ready = reqwest::blocking::get(format!("{}/readyz", node.url)).unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    assert!(ready.text().unwrap().contains("\"s3\":{\"edinode\":true}"));
    drop(s3);
    wait_for(15, "/readyz to turn unready without S3", || (reqwest::blocking::get(format!("{}/readyz", node.url)).unwrap().status().as_u16() == 503).then_some(()));
}

/// RabbitMQ mode with outbound pick-up on (the queues purged): a configuration for "gateway"
/// under the least-privilege policy; "nodelete" lacks DeleteObject under AS2/send/.
struct RabbitOutbox {
    got: Received,
    s: Pair,
    s3: TestS3,
    prefix: String,
    cfg: std::path::PathBuf,
    _rt: tokio::runtime::Runtime,
}

fn rabbit_outbox() -> RabbitOutbox {
    purge_queues();
    let rt = rt();
    let s3 = rt.block_on(TestS3::start(vec![
        ("gateway", "gw-secret", Policy::least_privilege()),
        ("nodelete", "nd-secret", Policy::least_privilege_without(Grant::DeleteOutbound)),
    ]));
    let s = setup();
    let (url, got) = partner_server();
    let prefix = unique("edinode-s3-");
    let cfg = config(&s, &s3, "gateway", "gw-secret", "outbound = true", &url, Some(&prefix));
    RabbitOutbox { got, s, s3, prefix, cfg, _rt: rt }
}

#[test]
fn two_polling_nodes_send_each_file_once_and_a_crash_before_delete_does_not_resend() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let RabbitOutbox { got, s, s3, cfg, _rt, .. } = rabbit_outbox();
    let _a = start_node(&cfg, s.dir.path(), &[], &[("EDINODE__NODE__ID", "poll-a")]);
    let _b = start_node(&cfg, s.dir.path(), &["--actors=s3_outbox,as2_sender"], &[("EDINODE__NODE__ID", "poll-b")]);
    for i in 0..12 {
        put_file(&s3, &format!("AS2/send/edinode/acme/f{i}.edi"), format!("ISA*F{i}~").as_bytes());
    }
    wait_for(30, "all twelve sent", || (got.lock().unwrap().len() >= 12).then_some(()));
    // Both pollers have looked again and nothing is left in the broker to send.
    s3.wait_listings(4);
    wait_rabbit_idle();
    let bodies: Vec<String> = got.lock().unwrap().iter().map(|r| String::from_utf8_lossy(&r.body).to_string()).collect();
    assert_eq!(bodies.len(), 12, "each file exactly once");
    for i in 0..12 {
        assert_eq!(bodies.iter().filter(|b| b.contains(&format!("ISA*F{i}~"))).count(), 1, "f{i}");
    }
}

#[test]
fn a_node_that_dies_between_queueing_and_deleting_does_not_send_twice() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // The first node may not delete under AS2/send/ (its deletes fail as a crash would leave
    // them undone); it is then killed, and a healthy node takes over the bucket. The access
    // check would refuse "nodelete": the configuration is for "gateway", the credentials are
    // swapped by environment for the crashing node only.
    let RabbitOutbox { got, s, s3, prefix, cfg, _rt } = rabbit_outbox();
    put_file(&s3, "AS2/send/edinode/acme/once.edi", b"ISA*ONCE~");
    let mut a = start_node(&cfg, s.dir.path(), &[], &[("EDINODE__NODE__ID", "crashy"), ("EDINODE__STATIONS__EDINODE__S3__ACCESS_KEY", "nodelete"), ("EDINODE__STATIONS__EDINODE__S3__SECRET_KEY", "nd-secret")]);
    let _ = &mut a;
    // nodelete fails the access check (DeleteObject under AS2/send/), so it never polls: that
    // is the refusal working. Queue-then-crash is emulated directly instead: mark the batch as
    // queued in Redis the way the outbox does before deleting, then start a healthy node.
    a.kill9();
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut con = client.get_connection().unwrap();
    let listing = std::fs::metadata(s3.path("AS2/send/edinode/acme/once.edi")).unwrap();
    // Listed as AWS lists it: whole seconds.
    let mtime = listing.modified().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 / 1000 * 1000;
    let batch = edinode_actors::s3_outbox::Batch {
        partner_as2: "acme".into(),
        base: "AS2/send/edinode/acme/".into(),
        files: vec![edinode_actors::ObjectInfo { key: "AS2/send/edinode/acme/once.edi".into(), size: 9, last_modified_ms: mtime, etag: String::new() }],
        sub: None,
        test: false,
        misplaced: None,
    };
    let mid = edinode_actors::s3_outbox::batch_message_id("AS2/send/edinode/", &batch, "x");
    let _: () = redis::cmd("SET").arg(format!("{prefix}:s3queued:{mid}")).arg("earlier").query(&mut con).unwrap();
    let _b = start_node(&cfg, s.dir.path(), &[], &[("EDINODE__NODE__ID", "healthy")]);
    wait_for(15, "the file deleted", || (!exists(&s3, "AS2/send/edinode/acme/once.edi")).then_some(()));
    // A batch is queued before its files are deleted: had it been queued again, it would still
    // be in the broker or already sent.
    wait_rabbit_idle();
    assert!(got.lock().unwrap().is_empty(), "already queued before the crash: deleted, not sent again");
}

#[test]
fn a_file_in_the_wrong_place_for_its_partner_is_reported_and_moved_to_failed() {
    let Outbox { node, got, s, s3, .. } = &outbox();
    // "tester" is a test partner (files under tester/test/), "acme" a production one.
    put_file(s3, "AS2/send/edinode/tester/oops.edi", b"ISA*OOPS~");
    put_file(s3, "AS2/send/edinode/acme/test/x.edi", b"ISA*X~");
    wait_for(10, "two reports", || (s3_failed(s).len() == 2).then_some(()));
    let failed = s3_failed(s).join("\n");
    assert!(failed.contains("tester is a test partner: its files go under AS2/send/edinode/tester/test/"), "{failed}");
    assert!(failed.contains("acme is not a test partner"), "{failed}");
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(log.contains("tester is a test partner"), "{log}");
    let moved = find_under(&s3.dir.path().join(&s3.bucket).join("as2gateway/edinode"));
    assert!(moved.iter().any(|k| k.starts_with("tester/test/failed/") && k.ends_with("/oops.edi")), "{moved:?}");
    assert!(moved.iter().any(|k| k.starts_with("acme/failed/") && k.ends_with("/test/x.edi")), "{moved:?}");
    assert!(!exists(s3, "AS2/send/edinode/tester/oops.edi") && !exists(s3, "AS2/send/edinode/acme/test/x.edi"));
    s3.wait_listings(3);
    node.wait_idle();
    assert!(got.lock().unwrap().is_empty(), "nothing sent");
    assert_eq!(s3_failed(s).len(), 2);
}

#[test]
fn without_outbound_the_inbound_grants_are_enough() {
    let rt = rt();
    let inbound_only = Policy::none().with(Grant::PutInbound).with(Grant::DeleteInbound);
    let s3 = rt.block_on(TestS3::start(vec![("inonly", "in-secret", inbound_only)]));
    let s = setup();
    let run = |extra: &str| s3_check(&s, &s3, "inonly", "in-secret", extra);
    let (ok, out) = run("outbound = false");
    assert!(ok, "{out}");
    let (ok, out) = run("outbound = true");
    assert!(!ok && out.contains("s3:ListBucket"), "{out}");
    let cfg = config(&s, &s3, "inonly", "in-secret", "outbound = false", "http://127.0.0.1:9/as2", None);
    let node = start_node(&cfg, s.dir.path(), &[], &[]);
    let msg = encrypted(&entity("application/edi-x12", "in.edi", b"ISA*IN~"), &s.station.cert);
    let (hs, body) = request("acme", "edinode", "<in-only@test>", Some("plain"), &msg);
    assert_eq!(post_capture(&node.as2_url(), &hs, body).0, 200);
    wait_for(10, "the inbound object", || exists(&s3, "as2gateway/edinode/acme/inbox/in-only@test/in.edi").then_some(()));
    let r = reqwest::blocking::get(format!("{}/readyz", node.url)).unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = serde_json::from_str(&r.text().unwrap()).unwrap();
    assert_eq!(v["s3"]["edinode"], serde_json::Value::Bool(true), "{v}");
    assert!(!std::fs::read_to_string(&node.log).unwrap().contains("S3 integration refused"));
}

#[test]
fn a_large_file_in_the_outbox_is_sent_as_it_streams() {
    let Outbox { node, got, s: _s, s3, _rt } = outbox();
    // 48 MiB: read whole, it would take the node over the 96 MiB bound of tests/large.rs.
    let big: Vec<u8> = (0..48u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    put_file(&s3, "AS2/send/edinode/acme/big.edi", &big);
    wait_for(300, "the partner got it", || (got.lock().unwrap().len() == 1).then_some(()));
    let r = got.lock().unwrap()[0].clone();
    // The document follows the first header block of the body (its entity's, signed or not).
    let start = r.body.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(r.header("content-length").map(|v| v.trim().to_string()), Some(r.body.len().to_string()), "sent with its length");
    assert!(r.body.len() >= start + big.len() && r.body[start..start + big.len()] == big[..], "the document arrived byte-exact");
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.child.id())).unwrap();
    let peak: u64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap();
    assert!(peak < 96 * 1024, "node peak RSS {peak} KiB");
    wait_for(10, "the source removed", || (!exists(&s3, "AS2/send/edinode/acme/big.edi")).then_some(()));
}
