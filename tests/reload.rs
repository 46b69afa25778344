//! Configuration reload without a restart: a partner's changed URL applies to the next message
//! while the message already being sent finishes with the configuration it started with; a
//! bad configuration is refused with the reason in the log and the one in force stays; a new
//! partner can be used at once; SIGHUP reloads too.

use crate::common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

const TOKEN: &str = "reload-test-token";

fn config(dir: &std::path::Path, ours: &Identity, partners: &[(&str, &str)]) -> String {
    let mut c = ConfigBuilder::new(dir).station("st", "reload-st", ours);
    for (name, url) in partners {
        c = c.raw(&format!("\n[partners.{name}]\nas2_id = \"reload-{name}\"\nstation = \"st\"\nurl = \"{url}\"\n[partners.{name}.outbound]\nsign = \"none\"\nmdn = \"none\"\nattempts = 1\n"));
    }
    c.text
}

/// How many times the log says `what`.
fn count(node: &NodeProc, what: &str) -> usize {
    std::fs::read_to_string(&node.log).unwrap_or_default().matches(what).count()
}

fn wait_status(admin: &str, id: &str, want: &str) -> serde_json::Value {
    wait_for(30, &format!("{id} {want}"), || {
        let m = admin_message(admin, TOKEN, id);
        (m["summary"]["status"] == want).then_some(m)
    })
}

#[test]
fn a_good_change_applies_a_bad_one_is_refused_and_in_flight_work_keeps_its_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ours = identity(dir, "reload-station");
    // Partner A holds each request until released; partner B answers at once.
    let (arrived_tx, arrived) = mpsc::channel::<()>();
    let (release, release_rx) = mpsc::channel::<()>();
    let (arrived_tx, release_rx) = (Mutex::new(arrived_tx), Mutex::new(release_rx));
    let url_a = http_listener(move |_, _| {
        let _ = arrived_tx.lock().unwrap().send(());
        let _ = release_rx.lock().unwrap().recv();
        (200, vec![], b"ok".to_vec())
    });
    let hits_b = Arc::new(AtomicUsize::new(0));
    let h = hits_b.clone();
    let url_b = http_listener(move |_, _| {
        h.fetch_add(1, Ordering::SeqCst);
        (200, vec![], b"ok".to_vec())
    });
    let path = dir.join("edinode.toml");
    std::fs::write(&path, config(dir, &ours, &[("p", &url_a)])).unwrap();
    let node = start_node(&path, dir, &[], &[("EDINODE__ADMIN__TOKEN", TOKEN)]);
    let admin = node.admin_url.clone().unwrap();

    // Message 1 is being sent to A ...
    let (first, _) = admin_send(&admin, TOKEN, "st", "p", &[("one.txt", "text/plain", b"one".to_vec())]);
    arrived.recv_timeout(std::time::Duration::from_secs(30)).expect("message 1 reached partner A");
    // ... when the partner's URL changes to B.
    std::fs::write(&path, config(dir, &ours, &[("p", &url_b)])).unwrap();
    wait_for(15, "the reload", || (count(&node, "Configuration reloaded.") >= 1).then_some(()));
    release.send(()).unwrap();
    let m1 = wait_status(&admin, &first, "sent");
    assert!(history(&m1).iter().any(|(s, d)| s == "sending" && d.contains(&url_a)), "message 1 went to A: {m1}");
    assert_eq!(hits_b.load(Ordering::SeqCst), 0, "nothing of message 1 went to B");

    // The next message goes to B.
    let (second, _) = admin_send(&admin, TOKEN, "st", "p", &[("two.txt", "text/plain", b"two".to_vec())]);
    let m2 = wait_status(&admin, &second, "sent");
    assert!(history(&m2).iter().any(|(s, d)| s == "sending" && d.contains(&url_b)), "{m2}");
    assert_eq!(hits_b.load(Ordering::SeqCst), 1);

    // A bad configuration (a certificate file that does not exist) is refused with the reason;
    // B stays in force.
    let bad = config(dir, &ours, &[("p", &url_a)]).replace("url = ", &format!("verify_certs = [\"{}/missing.pem\"]\nurl = ", dir.display()));
    std::fs::write(&path, bad).unwrap();
    wait_for(15, "the refusal", || (count(&node, "Configuration reload refused; the configuration in force stays.") >= 1).then_some(()));
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(log.contains("partners.p.verify_certs[0]") && log.contains("missing.pem"), "the reason is logged: {log}");
    let (third, _) = admin_send(&admin, TOKEN, "st", "p", &[("three.txt", "text/plain", b"three".to_vec())]);
    wait_status(&admin, &third, "sent");
    assert_eq!(hits_b.load(Ordering::SeqCst), 2, "the old configuration stayed in force");

    // A new partner is usable as soon as the file names it.
    std::fs::write(&path, config(dir, &ours, &[("p", &url_b), ("q", &url_b)])).unwrap();
    wait_for(15, "the second reload", || (count(&node, "Configuration reloaded.") >= 2).then_some(()));
    let (fourth, _) = admin_send(&admin, TOKEN, "st", "q", &[("four.txt", "text/plain", b"four".to_vec())]);
    wait_status(&admin, &fourth, "sent");
    assert_eq!(hits_b.load(Ordering::SeqCst), 3);

    // SIGHUP reloads (the file unchanged).
    let pid = node.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    wait_for(15, "the SIGHUP reload", || (count(&node, "trigger=\"SIGHUP\"") >= 1).then_some(()));
    assert!(node_alive(&node), "SIGHUP does not stop the node");
}

fn node_alive(node: &NodeProc) -> bool {
    reqwest::blocking::get(format!("{}/healthz", node.url)).map(|r| r.status() == 200).unwrap_or(false)
}
