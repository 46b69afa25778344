//! Operations: one OpenTelemetry trace per message across processes and actors (received by an
//! in-test OTLP/HTTP receiver), Prometheus metrics that move, /readyz following RabbitMQ, and the
//! tracking API behind its bearer token. Uses the shared RabbitMQ: runs serially.

use crate::common::build::*;
use crate::common::*;
use edinode_proto::alg::DigestAlg;
use prost::Message;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};


static SERIAL: Mutex<()> = Mutex::new(());

/// (trace id hex, span name, service.name) of every span received.
type Spans = Arc<Mutex<Vec<(String, String, String)>>>;

fn otlp_receiver() -> (String, Spans) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    let spans: Spans = Arc::new(Mutex::new(Vec::new()));
    let s2 = spans.clone();
    let l = listen(move |r, _| {
        if let Ok(req) = ExportTraceServiceRequest::decode(r.body.as_slice()) {
            for rs in req.resource_spans {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                    .and_then(|a| a.value.as_ref())
                    .map(|v| format!("{:?}", v.value))
                    .unwrap_or_default();
                for ss in rs.scope_spans {
                    for sp in ss.spans {
                        s2.lock().unwrap().push((hex::encode(&sp.trace_id), sp.name.clone(), service.clone()));
                    }
                }
            }
        }
        (200, vec![("Content-Type".into(), "application/x-protobuf".into())], vec![])
    });
    (l.base, spans)
}

struct Env {
    dir: tempfile::TempDir,
    station: Identity,
    partner: Identity,
    cfg: std::path::PathBuf,
}

fn env(rabbit: bool, extra: &str) -> Env {
    purge_queues();
    let dir = tempfile::tempdir().unwrap();
    let station = identity(dir.path(), "station");
    let partner = identity(dir.path(), "partner");
    let mut b = ConfigBuilder::new(dir.path());
    if rabbit {
        b = b.rabbit(&unique("edinode-ops-"));
    }
    let cfg = b.raw(extra).station("edinode", "edinode", &station).partner("acme", "acme", "edinode", &[&partner.cert_pem], "").write(dir.path());
    Env { dir, station, partner, cfg }
}

fn send(e: &Env, url: &str, mid: &str, mdn: Option<&str>) -> (u16, String) {
    let msg = encrypted(&signed(&entity("application/edi-x12", &format!("{}.edi", mid.trim_matches(['<', '>'])), b"ISA*OPS~"), &e.partner.key, &e.partner.cert, DigestAlg::Sha256), &e.station.cert);
    let (hs, body) = request("acme", "edinode", mid, mdn, &msg);
    let (st, _, b) = post_capture(url, &hs, body);
    (st, String::from_utf8_lossy(&b).to_string())
}

#[test]
fn one_trace_spans_both_processes_and_every_actor() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (endpoint, spans) = otlp_receiver();
    let e = env(true, "");
    let otel = |name: &'static str| -> Vec<(&'static str, String)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
            ("OTEL_SERVICE_NAME", name.into()),
        ]
    };
    let ea = otel("edinode-a");
    let eb = otel("edinode-b");
    let ea: Vec<(&str, &str)> = ea.iter().map(|(k, v)| (*k, v.as_str())).chain([("EDINODE__NODE__ID", "a")]).collect();
    let eb: Vec<(&str, &str)> = eb.iter().map(|(k, v)| (*k, v.as_str())).chain([("EDINODE__NODE__ID", "b")]).collect();
    let a = start_node(&e.cfg, e.dir.path(), &["--actors=http_receiver,mime_unwrapper,mdn_sender,deliverer"], &ea);
    let _b = start_node(&e.cfg, e.dir.path(), &["--actors=decryptor,verifier"], &eb);
    let (st, text) = send(&e, &a.as2_url(), "<traced-1@test>", Some("signed"));
    assert_eq!(st, 200, "{text}");
    // Signed + encrypted: each layer goes straight to the stage that opens it; the MimeUnwrapper
    // is not a hop of this message.
    let want: HashSet<&str> = ["http_receiver", "decryptor", "verifier", "mdn_sender", "deliverer"].into();
    let (trace, names, services) = wait_for(30, "spans of every actor in one trace", || {
        let s = spans.lock().unwrap().clone();
        let root = s.iter().find(|(_, n, _)| n == "http_receiver")?.0.clone();
        let in_trace: Vec<_> = s.iter().filter(|(t, _, _)| *t == root).collect();
        let names: HashSet<String> = in_trace.iter().map(|(_, n, _)| n.clone()).collect();
        let services: HashSet<String> = in_trace.iter().map(|(_, _, sv)| sv.clone()).collect();
        want.iter().all(|w| names.contains(*w)).then_some((root, names, services))
    });
    assert!(services.iter().any(|s| s.contains("edinode-a")) && services.iter().any(|s| s.contains("edinode-b")), "spans from both processes: {services:?}");
    let traces: HashSet<String> = spans.lock().unwrap().iter().filter(|(_, n, _)| want.contains(n.as_str())).map(|(t, _, _)| t.clone()).collect();
    assert_eq!(traces.len(), 1, "one message, one trace (got {traces:?}, names {names:?}, trace {trace})");
    assert!(!names.contains("mime_unwrapper"), "no detour through the MimeUnwrapper: {names:?}");
}

fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let c = reqwest::blocking::Client::new();
    let mut r = c.get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().unwrap();
    (resp.status().as_u16(), resp.text().unwrap())
}

#[test]
fn metrics_move_and_the_tracking_api_needs_its_token() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let e = env(false, "");
    let node = start_node(&e.cfg, e.dir.path(), &[], &[("EDINODE__ADMIN__LISTEN", ""), ("EDINODE__ADMIN__TOKEN", "t0ken-for-tests")]);
    let m = |p: &str| format!("{}{p}", node.url);
    let (_, before) = get(&m("/metrics"), None);
    assert_eq!(metric(&before, "edinode_messages_total", &[("outcome", "processed")]), 0.0);
    for i in 0..3 {
        assert_eq!(send(&e, &node.as2_url(), &format!("<met-{i}@test>"), Some("signed")).0, 200);
    }
    // A failing one: signed by a stranger.
    let rogue = identity(e.dir.path(), "rogue");
    let (hs, body) = request("acme", "edinode", "<met-bad@test>", Some("plain"), &signed(&entity("text/plain", "x.txt", b"x"), &rogue.key, &rogue.cert, DigestAlg::Sha256));
    assert_eq!(post_capture(&node.as2_url(), &hs, body).0, 200);
    let (_, after) = get(&m("/metrics"), None);
    assert_eq!(metric(&after, "edinode_messages_total", &[("direction", "inbound"), ("station", "edinode"), ("partner", "acme"), ("outcome", "processed")]), 3.0, "{after}");
    assert_eq!(metric(&after, "edinode_messages_total", &[("outcome", "authentication-failed")]), 1.0);
    assert!(metric(&after, "edinode_stage_seconds_count", &[("actor", "decryptor")]) >= 3.0);
    assert!(metric(&after, "edinode_stage_seconds_count", &[("actor", "verifier")]) >= 4.0);
    assert!(metric(&after, "edinode_http_requests_total", &[("route", "/as2"), ("status", "200")]) >= 4.0);
    assert!(!after.contains("met-0@test"), "no message ids in metric labels");

    // Tracking API: 401 without or with a wrong token.
    assert_eq!(get(&m("/api/messages"), None).0, 401);
    assert_eq!(get(&m("/api/messages"), Some("wrong")).0, 401);
    let (st, list) = get(&m("/api/messages?partner=acme&direction=inbound"), Some("t0ken-for-tests"));
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    let msgs = v["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 4, "{list}");
    let bad = msgs.iter().find(|m| m["message_id"] == "<met-bad@test>").unwrap();
    assert_eq!(bad["status"], "failed");
    let good = msgs.iter().find(|m| m["message_id"] == "<met-0@test>").unwrap();
    let id = good["id"].as_str().unwrap();
    let (st, one) = get(&m(&format!("/api/messages/{id}")), Some("t0ken-for-tests"));
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(&one).unwrap();
    let statuses: Vec<&str> = v["history"].as_array().unwrap().iter().map(|h| h["status"].as_str().unwrap()).collect();
    for s in ["received", "decrypted", "verified", "processed", "mdn-sent", "delivered"] {
        assert!(statuses.contains(&s), "{s} in {statuses:?}");
    }
    assert_eq!(get(&m("/api/messages?status=failed"), Some("t0ken-for-tests")).1.matches("\"id\"").count(), 1);
    // The same through the CLI.
    let cli = |args: &[&str], token: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_edinode"))
            .arg("--config")
            .arg(&e.cfg)
            .arg("messages")
            .arg("--url")
            .arg(&node.url)
            .args(args)
            .env("EDINODE__ADMIN__TOKEN", token)
            .output()
            .unwrap()
    };
    let out = cli(&["show", id], "t0ken-for-tests");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"delivered\""));
    let out = cli(&["list", "--status", "failed"], "t0ken-for-tests");
    assert!(String::from_utf8_lossy(&out.stdout).contains("met-bad@test"));
    assert!(!cli(&["list"], "nope").status.success(), "a wrong token is refused");
    assert_eq!(get(&m("/api/messages/nope"), Some("t0ken-for-tests")).0, 404);
}

#[test]
fn admin_api_is_disabled_without_a_token_and_separate_by_default() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let e = env(false, "");
    // Default: admin on its own listener; partner listener has no /api and no /metrics.
    let node = start_node(&e.cfg, e.dir.path(), &[], &[("EDINODE__ADMIN__LISTEN", "127.0.0.1:0")]);
    assert_eq!(get(&format!("{}/api/messages", node.url), None).0, 404);
    assert_eq!(get(&format!("{}/metrics", node.url), None).0, 404);
    assert_eq!(get(&format!("{}/healthz", node.url), None).0, 200);
    drop(node);
    // On the partner listener with no token: still 401 for everything under /api.
    let node = start_node(&e.cfg, e.dir.path(), &[], &[("EDINODE__ADMIN__LISTEN", "")]);
    assert_eq!(get(&format!("{}/api/messages", node.url), Some("")).0, 401);
    assert_eq!(get(&format!("{}/api/messages", node.url), None).0, 401);
}

#[test]
fn readyz_follows_rabbitmq_and_queued_work_survives() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let e = env(true, "");
    // Only the receiver runs: accepted work waits in RabbitMQ.
    let front = start_node(&e.cfg, e.dir.path(), &["--actors=http_receiver"], &[("EDINODE__ADMIN__LISTEN", ""), ("EDINODE__NODE__ID", "front")]);
    assert_eq!(get(&format!("{}/readyz", front.url), None).0, 200);
    let (st, _) = send(&e, &front.as2_url(), "<queued-1@test>", None);
    assert_eq!(st, 200, "accepted and durable (no MDN asked)");
    assert!(std::process::Command::new("rabbitmqctl").arg("stop_app").status().unwrap().success());
    let down = wait_for(20, "/readyz to turn unready", || {
        let (st, body) = get(&format!("{}/readyz", front.url), None);
        (st == 503).then_some(body)
    });
    assert!(down.contains("\"broker\":false"), "{down}");
    assert!(std::process::Command::new("rabbitmqctl").arg("start_app").status().unwrap().success());
    wait_for(30, "/readyz to be ready again", || (get(&format!("{}/readyz", front.url), None).0 == 200).then_some(()));
    // The queued message is still there: a worker node processes and delivers it.
    let worker = start_node(&e.cfg, e.dir.path(), &["--actors=mime_unwrapper,decryptor,verifier,mdn_sender,deliverer"], &[("EDINODE__NODE__ID", "worker")]);
    wait_for(30, &format!("the queued message delivered (worker log: {})", worker.log.display()), || (!delivered(&e.dir.path().join("inbox"), "edinode", "acme").is_empty()).then_some(()));
}

#[test]
fn a_process_without_the_http_receiver_serves_probes_and_metrics_and_logs_plain_text() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let e = env(true, "");
    let worker = start_node(&e.cfg, e.dir.path(), &["--actors=decryptor,verifier"], &[("EDINODE__NODE__ID", "probed-worker")]);
    let admin = worker.admin_url.clone().expect("the worker's admin listener");
    assert_eq!(get(&format!("{admin}/healthz"), None), (200, "ok\n".to_string()));
    let (st, ready) = get(&format!("{admin}/readyz"), None);
    assert_eq!(st, 200, "{ready}");
    assert!(ready.contains("\"broker\":true"), "{ready}");
    let (st, metrics) = get(&format!("{admin}/metrics"), None);
    assert_eq!(st, 200);
    assert!(metrics.contains("edinode_queue_depth{queue=\"edinode.decryptor\"}"), "{metrics}");
    // The partner routes are not served by a worker.
    assert_eq!(reqwest::blocking::Client::new().post(format!("{admin}/as2")).body("x").send().unwrap().status().as_u16(), 404);
    // Without admin.listen, the probes are on http.listen.
    let bare = start_node(&e.cfg, e.dir.path(), &["--actors=deliverer"], &[("EDINODE__NODE__ID", "bare-worker"), ("EDINODE__ADMIN__LISTEN", "")]);
    assert_eq!(get(&format!("{}/healthz", bare.url), None).0, 200);
    assert_eq!(get(&format!("{}/metrics", bare.url), None).0, 200);
    // Logs written to a file carry no terminal colour codes.
    drop((worker, bare));
    for log in std::fs::read_dir(e.dir.path()).unwrap().flatten().map(|f| f.path()).filter(|p| p.extension().is_some_and(|x| x == "log")) {
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("Node started."), "{text}");
        assert!(!text.contains('\u{1b}'), "colour codes in {}: {text:?}", log.display());
    }
}
