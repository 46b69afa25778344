//! A node on a Redis that does not persist says so: a warning at start-up, `state_durable: false`
//! with what is at risk in /readyz, and a warning line in `check-config`; on a Redis with AOF it
//! reports `state_durable: true`. Each test starts its own redis-server (never reconfigures the
//! machine's).

use crate::common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A private redis-server on a free port with these persistence arguments; killed on drop.
struct Redis {
    child: Child,
    url: String,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis(dir: &Path, persistence: &[&str]) -> Redis {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let data = dir.join(format!("redis-{port}"));
    std::fs::create_dir_all(&data).unwrap();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--dir"])
        .arg(&data)
        .args(persistence)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server on PATH");
    let url = format!("redis://127.0.0.1:{port}/");
    let client = redis::Client::open(url.as_str()).unwrap();
    wait_for(10, "the private redis-server", || client.get_connection().ok().and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok()));
    Redis { child, url }
}

fn config(dir: &Path, redis: &Redis) -> std::path::PathBuf {
    ConfigBuilder::new(dir).raw(&format!("\n[redis]\nurl = \"{}\"\nprefix = \"{}:\"\n", redis.url, unique("durability-"))).write(dir)
}

fn readyz(node: &NodeProc) -> serde_json::Value {
    let url = node.admin_url.as_ref().unwrap();
    serde_json::from_str(&reqwest::blocking::get(format!("{url}/readyz")).unwrap().text().unwrap()).unwrap()
}

fn check_config(cfg: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_edinode")).arg("--config").arg(cfg).arg("check-config").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_redis_without_persistence_is_reported_with_what_is_at_risk() {
    let dir = tempfile::tempdir().unwrap();
    let r = redis(dir.path(), &["--appendonly", "no", "--save", ""]);
    let cfg = config(dir.path(), &r);
    let node = start_node(&cfg, dir.path(), &[], &[]);
    let body = readyz(&node);
    assert_eq!(body["ready"], true, "{body}");
    assert_eq!(body["blobs"], true, "the blob store answers: {body}");
    assert_eq!(body["state_durable"], false, "{body}");
    assert_eq!(body["state_persistence"], "none");
    let risk = body["state_at_risk"].as_str().unwrap();
    assert!(risk.contains("queued AS4 messages") && risk.contains("duplicate detection"), "{risk}");
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(log.contains("REDIS IS NOT DURABLE"), "start-up warning in the log: {log}");
    let out = check_config(&cfg);
    assert!(out.contains("warning: redis: persistence none") && out.contains("duplicate detection"), "{out}");
}

#[test]
fn snapshots_only_are_not_durable_and_aof_is() {
    let dir = tempfile::tempdir().unwrap();
    let rdb = redis(dir.path(), &["--appendonly", "no", "--save", "3600 1"]);
    let out = check_config(&config(dir.path(), &rdb));
    assert!(out.contains("warning: redis: persistence snapshots") && out.contains("save 3600 1"), "{out}");

    let aof = redis(dir.path(), &["--appendonly", "yes", "--save", ""]);
    let cfg = config(dir.path(), &aof);
    let node = start_node(&cfg, dir.path(), &[], &[]);
    let body = readyz(&node);
    assert_eq!(body["state_durable"], true, "{body}");
    assert_eq!(body["state_persistence"], "logged");
    assert!(body.get("state_at_risk").is_none(), "{body}");
    assert!(!std::fs::read_to_string(&node.log).unwrap().contains("REDIS IS NOT DURABLE"));
    assert!(check_config(&cfg).contains("redis: persistence logged (AOF)"));
}
