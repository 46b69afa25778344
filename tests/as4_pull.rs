//! AS4 pulling, end to end: the node in embedded mode answers a third-party AS4 client
//! (tests/peers/as4client.py: lxml + xmlsec + cryptography, a separate Python process) that
//! sends signed and unsigned PullRequests, Receipts and hostile bodies, and verifies the node's
//! signed responses and attachment digests itself. Also: the AS4.NET sample PullRequest, the
//! receipt timeout, a kill -9 restart, and the submit API.

use crate::common::*;
use edinode_proto::as4::signals::{self, ErrorDetail, Signal, SignalIds};
use edinode_proto::as4::wssec::{SecurityIds, SigningKey};
use edinode_proto::as4::{EbmsCode, DEFAULT_MPC};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const TOKEN: &str = "as4-t0ken";
const FIXTURE_TP: &str = "5E320E3A1DDAC6606E12816B2744AE1EE2EE7BF5";
const FIXTURE_MPC: &str = "http://example.holodeckb2b.org/mpc/2";
const FIXTURE_PULL_ID: &str = "5be59681-51f1-4889-86d6-8d38e8294436@10.124.29.152";

/// The venv with the AS4 client.
fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| peer_python("as4"))
}

/// Runs one as4client.py command; returns its JSON line.
fn client(cmd: &str, case: &Value) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/as4client.py");
    let mut child = Command::new(python()).arg(script).arg(cmd).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(case.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_else(|| panic!("as4client {cmd}: no output; stderr: {}", String::from_utf8_lossy(&out.stderr)));
    let v: Value = serde_json::from_str(line).unwrap();
    assert!(v["error"].is_null(), "as4client {cmd} failed: {v}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    v
}

fn thumbprint(id: &Identity) -> String {
    hex::encode_upper(openssl::hash::hash(openssl::hash::MessageDigest::sha1(), &id.cert.to_der().unwrap()).unwrap())
}

fn map_xml(entries: &[(&str, &str)]) -> String {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<PullRequestAuthorizationMap>\n");
    for (mpc, tp) in entries {
        s.push_str(&format!("  <AuthorizationEntry mpc=\"{mpc}\" certificatethumprint=\"{tp}\" allowed=\"true\" />\n"));
    }
    s.push_str("</PullRequestAuthorizationMap>\n");
    s
}

/// Writes the map, then waits until `in_force` (a look that changes nothing) says the node
/// uses it: the node looks at the file at most once a second, on a request.
fn rewrite_map(path: &Path, xml: &str, what: &str, mut in_force: impl FnMut() -> bool) {
    std::fs::write(path, xml).unwrap();
    wait_for(30, what, || in_force().then_some(()));
}

struct Env {
    dir: tempfile::TempDir,
    node_id: Identity,
    puller: Identity,
    stranger: Identity,
    map: PathBuf,
    cfg: PathBuf,
}

fn env(timeout_secs: u64) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let node_id = identity(dir.path(), "as4node");
    let puller = identity(dir.path(), "puller");
    let stranger = identity(dir.path(), "stranger");
    let map = dir.path().join("pull_authorizationmap.xml");
    let cfg = ConfigBuilder::new(dir.path())
        .station("st", "AS4NODE", &node_id)
        .raw(&format!("\n[as4]\nstation = \"st\"\nauthorization_map = \"{}\"\nreceipt_timeout_secs = {timeout_secs}\n", map.display()))
        .write(dir.path());
    Env { dir, node_id, puller, stranger, map, cfg }
}

impl Env {
    fn start(&self) -> NodeProc {
        start_node(&self.cfg, self.dir.path(), &[], &[("EDINODE__ADMIN__LISTEN", ""), ("EDINODE__ADMIN__TOKEN", TOKEN)])
    }

    /// A PullRequest case for as4client.py; `who` None: unsigned.
    fn pull(&self, node: &NodeProc, mpc: Option<&str>, who: Option<&Identity>, extra: Value) -> Value {
        let mut case = json!({
            "url": format!("{}/as4", node.url),
            "mpc": mpc,
            "sign": who.is_some(),
            "server_cert_pem": self.node_id.cert_pem,
        });
        if let Some(w) = who {
            case["key_pem"] = json!(w.key_pem);
            case["cert_pem"] = json!(w.cert_pem);
        }
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            case[k] = v;
        }
        client("pull", &case)
    }
}

fn um_id(r: &Value) -> String {
    assert_eq!(r["kind"], "user_message", "{r}");
    r["user_message"]["message_id"].as_str().unwrap().to_string()
}

fn error_code(r: &Value) -> String {
    assert_eq!(r["kind"], "error", "{r}");
    r["error_code"].as_str().unwrap().to_string()
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

fn submit(node: &NodeProc, body: &Value) -> (u16, Value) {
    let r = http().post(format!("{}/api/as4/submit", node.url)).bearer_auth(TOKEN).header("content-type", "application/json").body(body.to_string()).send().unwrap();
    let st = r.status().as_u16();
    (st, serde_json::from_slice(&r.bytes().unwrap()).unwrap_or(Value::Null))
}

fn b64(data: &[u8]) -> String {
    openssl::base64::encode_block(data)
}

/// A submission with one small payload.
fn simple(id: &str, mpc: Option<&str>) -> Value {
    json!({
        "message_id": id,
        "mpc": mpc,
        "from": {"party_id": "org:edinode", "role": "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/initiator"},
        "to": {"party_id": "org:puller", "role": "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/responder"},
        "service": {"value": "urn:svc:test"},
        "action": "urn:act:deliver",
        "parts": [{"mime_type": "application/octet-stream", "data_base64": b64(format!("payload of {id}").as_bytes())}],
    })
}

fn queue(node: &NodeProc, body: &Value) {
    let (st, v) = submit(node, body);
    assert_eq!(st, 202, "{v}");
}

fn admin_get(node: &NodeProc, path: &str) -> Value {
    serde_json::from_slice(&http().get(format!("{}{path}", node.url)).bearer_auth(TOKEN).send().unwrap().bytes().unwrap()).unwrap()
}

fn statuses(node: &NodeProc, id: &str) -> Vec<String> {
    let v = admin_get(node, &format!("/api/messages/{id}"));
    v["history"].as_array().map(|h| h.iter().map(|e| e["status"].as_str().unwrap_or("").to_string()).collect()).unwrap_or_default()
}

/// Pulls on `mpc` (signed by the puller, with `receipts`) until a user message is offered again
/// after its lease ran out, and returns the answer. Every answer before it must be the
/// empty-MPC warning, and it must come no sooner than `lease` after `leased`: an instant taken
/// before the pull that leased it (the lease starts while the node answers that pull, so time
/// since then is never shorter than the lease has run).
fn wait_reoffered(e: &Env, node: &NodeProc, mpc: Option<&str>, receipts: &[&str], leased: Instant, lease: Duration) -> Value {
    let r = wait_until(60, "a user message offered again after its lease ran out", || {
        let r = e.pull(node, mpc, Some(&e.puller), json!({"receipts": receipts}));
        if r["kind"] == "user_message" {
            return Ok(r);
        }
        assert_eq!(error_code(&r), "EBMS:0006", "nothing but the leased message is queued");
        Err(r.to_string())
    });
    assert!(leased.elapsed() >= lease, "{} offered again {:?} after it was leased for {lease:?}", um_id(&r), leased.elapsed());
    r
}

fn raw(node: &NodeProc, body: &str, content_type: &str) -> Value {
    client("raw", &json!({"url": format!("{}/as4", node.url), "body": body, "content_type": content_type}))
}

/// Acceptance 1: signed and unsigned PullRequests from the third-party client.
#[test]
fn third_party_client_pulls_oldest_first_per_mpc_under_the_authorization_map() {
    let e = env(300);
    let tp = thumbprint(&e.puller);
    std::fs::write(&e.map, map_xml(&[("urn:mpc:a", &tp.to_lowercase()), ("urn:mpc:b", &tp), (DEFAULT_MPC, &tp)])).unwrap();
    let node = e.start();

    // Payloads whose SwA digests differ from a raw digest: XML canonicalized, text CRLF'd.
    let binary: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).chain(*b"\r\n--\r\n\r").collect();
    let xml = b"<?xml version='1.0'?>\n<inv:Invoice xmlns:inv='urn:x' b='2'  a='1'><inv:Line>1</inv:Line>\n<inv:Empty/></inv:Invoice>\n".to_vec();
    let text = b"line one\nline two\r\nline three\n".to_vec();
    let mut full = simple("a1@test", Some("urn:mpc:a"));
    full["from"]["party_type"] = json!("urn:oasis:names:tc:ebcore:partyid-type:unregistered");
    full["service"]["type"] = json!("urn:types");
    full["conversation_id"] = json!("conv-42");
    full["agreement_ref"] = json!("urn:agreement:1");
    full["properties"] = json!({"originalSender": "urn:C1", "finalRecipient": "urn:C4"});
    full["parts"] = json!([
        {"content_id": "bin@test", "mime_type": "application/octet-stream", "data_base64": b64(&binary)},
        {"content_id": "xml@test", "mime_type": "application/xml", "data_base64": b64(&xml), "properties": {"CharacterSet": "utf-8"}},
        {"mime_type": "text/plain", "data_base64": b64(&text)},
    ]);
    queue(&node, &full);
    queue(&node, &simple("b1@test", Some("urn:mpc:b")));
    queue(&node, &simple("a2@test", Some("urn:mpc:a")));
    queue(&node, &simple("d1@test", None));
    queue(&node, &simple("b2@test", Some("urn:mpc:b")));

    // Not authorized: a stranger's signature, or unsigned while the map has entries.
    let r = e.pull(&node, Some("urn:mpc:a"), Some(&e.stranger), json!({"message_id": "pr-stranger@test"}));
    assert_eq!(error_code(&r), "EBMS:0004");
    assert_eq!(r["severity"], "failure");
    assert_eq!(r["ref_to_message_id"], "pr-stranger@test");
    assert!(r["description"].as_str().unwrap().contains("not authorized"), "{r}");
    let r = e.pull(&node, Some("urn:mpc:a"), None, json!({}));
    assert_eq!(error_code(&r), "EBMS:0004");
    let r = e.pull(&node, Some("urn:mpc:c"), Some(&e.puller), json!({}));
    assert_eq!(error_code(&r), "EBMS:0004", "no entry for this MPC");

    // Authorized: the oldest of the MPC, signed by the node, digests verified by the client.
    let r = e.pull(&node, Some("urn:mpc:a"), Some(&e.puller), json!({}));
    assert_eq!(um_id(&r), "a1@test");
    assert_eq!(r["http_status"], 200);
    assert_eq!(r["signature_verified"], true, "{}", r["signature_detail"]);
    assert_eq!(r["attachment_digests_ok"], true, "{}", r["references"]);
    assert_eq!(r["signer_thumbprint"], thumbprint(&e.node_id).as_str());
    assert!(r["xmlsec_check"].as_str().unwrap_or("").starts_with("ok"), "{}", r["xmlsec_check"]);
    let um = &r["user_message"];
    assert_eq!(um["mpc"], "urn:mpc:a");
    assert_eq!(um["from_party"], "org:edinode");
    assert_eq!(um["to_party"], "org:puller");
    assert_eq!(um["service"], "urn:svc:test");
    assert_eq!(um["action"], "urn:act:deliver");
    assert_eq!(um["conversation_id"], "conv-42");
    assert_eq!(um["agreement_ref"], "urn:agreement:1");
    assert_eq!(um["properties"]["finalRecipient"], "urn:C4");
    let parts = um["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    for (p, (want, mime)) in parts.iter().zip([(&binary, "application/octet-stream"), (&xml, "application/xml"), (&text, "text/plain")]) {
        assert_eq!(openssl::base64::decode_block(p["content_b64"].as_str().unwrap()).unwrap(), *want, "{}", p["href"]);
        assert_eq!(p["mime_type"], mime);
    }
    assert_eq!(parts[0]["href"], "cid:bin@test");
    assert_eq!(parts[1]["properties"]["CharacterSet"], "utf-8");
    let swa: Vec<(bool, bool)> = r["references"].as_array().unwrap().iter().filter(|x| x["uri"].as_str().unwrap().starts_with("cid:")).map(|x| (x["ok"] == true, x["raw_ok"] == true)).collect();
    assert_eq!(swa, vec![(true, true), (true, false), (true, false)], "SwA 1.1 digests: binary raw, XML and text canonicalized");

    // Oldest first per MPC, receipts bundled with the next PullRequest.
    let r = e.pull(&node, Some("urn:mpc:b"), Some(&e.puller), json!({"receipts": ["a1@test"]}));
    assert_eq!(um_id(&r), "b1@test");
    let r = e.pull(&node, Some("urn:mpc:a"), Some(&e.puller), json!({"receipts": ["b1@test"]}));
    assert_eq!(um_id(&r), "a2@test");
    let r = e.pull(&node, None, Some(&e.puller), json!({}));
    assert_eq!(um_id(&r), "d1@test");
    assert!(r["user_message"]["mpc"].as_str().unwrap().ends_with("defaultMPC"));
    let r = e.pull(&node, Some("urn:mpc:b"), Some(&e.puller), json!({}));
    assert_eq!(um_id(&r), "b2@test");

    // Empty: EBMS:0006 warning referencing the PullRequest, itself signed by the node.
    let r = e.pull(&node, Some("urn:mpc:a"), Some(&e.puller), json!({"message_id": "pr-empty@test", "receipts": ["a2@test", "d1@test", "b2@test"]}));
    assert_eq!(error_code(&r), "EBMS:0006");
    assert_eq!(r["severity"], "warning");
    assert_eq!(r["ref_to_message_id"], "pr-empty@test");
    assert_eq!(r["signature_verified"], true);
    for id in ["a1@test", "b1@test", "a2@test", "d1@test", "b2@test"] {
        let h = statuses(&node, id);
        assert!(h.contains(&"queued".to_string()) && h.contains(&"pulled".to_string()) && h.contains(&"receipted".to_string()), "{id}: {h:?}");
    }

    // Tampered PullRequests: EBMS:0101, and nothing is handed out.
    queue(&node, &simple("a3@test", Some("urn:mpc:a")));
    for tamper in ["signature", "messaging"] {
        let r = e.pull(&node, Some("urn:mpc:a"), Some(&e.puller), json!({"tamper": tamper, "message_id": format!("pr-t-{tamper}@test")}));
        assert_eq!(error_code(&r), "EBMS:0101", "tamper={tamper}");
        assert_eq!(r["severity"], "failure");
        assert_eq!(r["ref_to_message_id"], format!("pr-t-{tamper}@test").as_str());
    }
    // A tampered receipt settles nothing either.
    let r = e.pull(&node, Some("urn:mpc:a"), Some(&e.puller), json!({}));
    assert_eq!(um_id(&r), "a3@test");
    let rc = client("receipt", &json!({"url": format!("{}/as4", node.url), "ref_to_message_id": "a3@test", "sign": true, "tamper": "signature", "key_pem": e.puller.key_pem, "cert_pem": e.puller.cert_pem}));
    assert_eq!(error_code(&rc), "EBMS:0101");
    assert!(!statuses(&node, "a3@test").contains(&"receipted".to_string()));

    // Hostile and malformed bodies.
    let bomb = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;\">]><s12:Envelope xmlns:s12=\"http://www.w3.org/2003/05/soap-envelope\"><s12:Body>&lol2;</s12:Body></s12:Envelope>";
    let r = raw(&node, bomb, "application/soap+xml");
    assert_eq!(r["http_status"], 400, "{r}");
    let xxe = "<?xml version=\"1.0\"?><!DOCTYPE e [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><e>&x;</e>";
    assert_eq!(raw(&node, xxe, "application/soap+xml")["http_status"], 400);
    assert_eq!(raw(&node, "not xml at all", "application/soap+xml")["http_status"], 400);
    let deep = format!("<s12:Envelope xmlns:s12=\"http://www.w3.org/2003/05/soap-envelope\">{}{}</s12:Envelope>", "<a>".repeat(5000), "</a>".repeat(5000));
    assert_eq!(raw(&node, &deep, "application/soap+xml")["http_status"], 400);
    let no_messaging = "<s12:Envelope xmlns:s12=\"http://www.w3.org/2003/05/soap-envelope\"><s12:Header/><s12:Body/></s12:Envelope>";
    let r = raw(&node, no_messaging, "application/soap+xml");
    assert_eq!((r["http_status"].as_u64(), error_code(&r).as_str()), (Some(200), "EBMS:0009"));
    assert_eq!(error_code(&raw(&node, "whatever", "text/plain")), "EBMS:0007");
    let huge = http().post(format!("{}/as4", node.url)).header("content-type", "application/soap+xml").body(vec![b' '; 2 * 1024 * 1024]).send().unwrap();
    assert_eq!(huge.status().as_u16(), 413);

    // The map is reloaded when it changes; an empty map lets unsigned PullRequests in.
    // (Until then the unsigned receipt for a3 is not authorized, and ignored.)
    rewrite_map(&e.map, &map_xml(&[]), "a3 receipted by an unsigned receipt once the map is empty", || {
        error_code(&e.pull(&node, Some("urn:mpc:a"), None, json!({"receipts": ["a3@test"]}))) == "EBMS:0006"
    });
    queue(&node, &simple("u1@test", Some("urn:mpc:unsigned")));
    let r = e.pull(&node, Some("urn:mpc:unsigned"), None, json!({}));
    assert_eq!(um_id(&r), "u1@test");
    assert_eq!(r["signature_verified"], true, "the response is signed even for an unsigned PullRequest");

    let metrics = http().get(format!("{}/metrics", node.url)).send().unwrap().text().unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("edinode_messages_total{") && l.contains("direction=\"as4\"") && l.contains("outcome=\"pulled\"")), "{metrics}");
}

/// Acceptance 2: the AS4.NET sample PullRequest is treated as signed by its thumbprint.
#[test]
#[ignore = "needs ../shared/fixtures (third-party captures); .ci/run runs it when present"]
fn as4net_pull_request_is_signed_by_its_thumbprint() {
    let fixture = fixtures().join("as4/as4net_signed_pullrequest.xml");
    let body = std::fs::read_to_string(&fixture).unwrap_or_else(|e| panic!("{}: {e}", fixture.display()));
    let e = env(300);
    let tp = thumbprint(&e.puller);
    // Lower case in the map: thumbprints compare case-insensitively.
    std::fs::write(&e.map, map_xml(&[(FIXTURE_MPC, &FIXTURE_TP.to_lowercase()), (FIXTURE_MPC, &tp)])).unwrap();
    let node = e.start();

    // Allowed and empty: EBMS:0006 (not 0004), answering the fixture's MessageId.
    let r = raw(&node, &body, "application/soap+xml; charset=utf-8");
    assert_eq!(error_code(&r), "EBMS:0006", "{r}");
    assert_eq!(r["ref_to_message_id"], FIXTURE_PULL_ID);

    // With messages queued the fixture pulls the oldest; the same PullRequest id again gets the
    // same message (its answer may have been lost), not a second one.
    queue(&node, &simple("f1@test", Some(FIXTURE_MPC)));
    queue(&node, &simple("f2@test", Some(FIXTURE_MPC)));
    let r = raw(&node, &body, "application/soap+xml");
    assert_eq!(um_id(&r), "f1@test");
    assert_eq!(r["signature_verified"], true);
    let r = raw(&node, &body, "application/soap+xml");
    assert_eq!(um_id(&r), "f1@test", "repeated PullRequest id");
    let r = e.pull(&node, Some(FIXTURE_MPC), Some(&e.puller), json!({"receipts": ["f1@test"]}));
    assert_eq!(um_id(&r), "f2@test");

    // Tampered: EBMS:0101.
    let r = raw(&node, &body.replacen("mpc/2", "mpc/9", 1), "application/soap+xml");
    assert_eq!(error_code(&r), "EBMS:0101");

    // The map no longer allows that thumbprint on the MPC: EBMS:0004.
    // (Nothing is offered on the MPC meanwhile: f2 is leased.)
    rewrite_map(&e.map, &map_xml(&[("urn:other", FIXTURE_TP), (FIXTURE_MPC, &tp)]), "the fixture's thumbprint refused", || error_code(&raw(&node, &body, "application/soap+xml")) == "EBMS:0004");
    queue(&node, &simple("f3@test", Some(FIXTURE_MPC)));
    let r = raw(&node, &body, "application/soap+xml");
    assert_eq!(error_code(&r), "EBMS:0004");
    assert_eq!(r["ref_to_message_id"], FIXTURE_PULL_ID);
    // ... and f3 is still there for an authorized puller (after f2's lease).
    let r = e.pull(&node, Some(FIXTURE_MPC), Some(&e.puller), json!({"receipts": ["f2@test"]}));
    assert_eq!(um_id(&r), "f3@test");
}

/// An Error signal about a user message, signed by `by` (the client has no command for it).
fn post_error(node: &NodeProc, by: &Identity, ref_to: &str) -> u16 {
    let key = SigningKey { key: by.key.clone(), cert: by.cert.clone() };
    let sec = SecurityIds { messaging_id: "m-1".into(), body_id: "b-1".into(), bst_id: "t-1".into() };
    let s = Signal::Error { ref_to_message_id: Some(ref_to.into()), errors: vec![ErrorDetail::new(EbmsCode::DeliveryFailure).with_description("could not deliver")] };
    let body = signals::build(&[(s, SignalIds { message_id: unique("err-") + "@test", timestamp: "2024-05-01T12:00:00.000Z".into() })], Some((&key, &sec))).unwrap();
    let r = http().post(format!("{}/as4", node.url)).header("content-type", signals::SOAP_CONTENT_TYPE).body(body).send().unwrap();
    let st = r.status().as_u16();
    assert!(r.bytes().unwrap().is_empty());
    st
}

/// Acceptance 3 (timeout): an unreceipted message comes back, a settled one never does.
#[test]
fn unreceipted_message_is_offered_again_settled_ones_never() {
    // A receipt timeout of 4 s: the pulls before it (a Python process each) fit in it on a
    // busy machine.
    let lease = Duration::from_secs(4);
    let e = env(lease.as_secs());
    let tp = thumbprint(&e.puller);
    std::fs::write(&e.map, map_xml(&[("urn:mpc:r", &tp)])).unwrap();
    let node = e.start();
    let mpc = Some("urn:mpc:r");
    for id in ["m1@test", "m2@test", "m3@test"] {
        queue(&node, &simple(id, mpc));
    }
    // Taken before the pull: m1's lease starts while the node answers it, so time since this
    // instant is never shorter than the lease has run (after the answer, it can be, by the
    // answer's latency).
    let pulled_m1 = Instant::now();
    let r = e.pull(&node, mpc, Some(&e.puller), json!({}));
    assert_eq!(um_id(&r), "m1@test");
    assert_eq!(um_id(&e.pull(&node, mpc, Some(&e.puller), json!({}))), "m2@test");
    // A Receipt on its own: 200, empty body.
    let rc = client("receipt", &json!({"url": format!("{}/as4", node.url), "ref_to_message_id": "m2@test", "sign": true, "key_pem": e.puller.key_pem, "cert_pem": e.puller.cert_pem}));
    assert_eq!((rc["http_status"].as_u64(), rc["body_length"].as_u64()), (Some(200), Some(0)), "{rc}");
    assert_eq!(um_id(&e.pull(&node, mpc, Some(&e.puller), json!({}))), "m3@test");
    // An Error signal settles too.
    assert_eq!(post_error(&node, &e.puller, "m3@test"), 200);
    // A stranger's receipt for m1 is ignored (not authorized on its MPC).
    client("receipt", &json!({"url": format!("{}/as4", node.url), "ref_to_message_id": "m1@test", "sign": true, "key_pem": e.stranger.key_pem, "cert_pem": e.stranger.cert_pem}));
    // Nothing else is queued: pulling changes nothing until m1 comes back.
    let r = wait_reoffered(&e, &node, mpc, &[], pulled_m1, lease);
    assert_eq!(um_id(&r), "m1@test", "m1 offered again after the receipt timeout");
    assert_eq!(r["signature_verified"], true);
    let r = e.pull(&node, mpc, Some(&e.puller), json!({"receipts": ["m1@test"]}));
    assert_eq!(error_code(&r), "EBMS:0006");
    // m1, settled, must not come back once its second lease would have run out. m4, leased
    // after that one began and never receipted, tells when: once m4 is offered again, m1's
    // lease has run out too, and m1 (due first) would have come before it.
    queue(&node, &simple("m4@test", mpc));
    let pulled_m4 = Instant::now();
    assert_eq!(um_id(&e.pull(&node, mpc, Some(&e.puller), json!({}))), "m4@test");
    let r = wait_reoffered(&e, &node, mpc, &[], pulled_m4, lease);
    assert_eq!(um_id(&r), "m4@test", "settled messages never come back");
    let r = e.pull(&node, mpc, Some(&e.puller), json!({"receipts": ["m4@test"]}));
    assert_eq!(error_code(&r), "EBMS:0006", "settled messages never come back");

    let h1 = statuses(&node, "m1@test");
    assert_eq!(h1.iter().filter(|s| s.as_str() != "queued").cloned().collect::<Vec<_>>(), vec!["pulled", "re-offered", "receipted"], "{h1:?}");
    assert!(statuses(&node, "m2@test").contains(&"receipted".to_string()));
    assert!(statuses(&node, "m3@test").contains(&"failed".to_string()));
    let summary = admin_get(&node, "/api/messages/m3@test");
    assert_eq!(summary["summary"]["direction"], "as4");
    assert!(summary["summary"]["reason"].as_str().unwrap().contains("EBMS:0202"), "{summary}");
}

/// Acceptance 3 (restart): kill -9 loses no queued or pulled-but-unreceipted user message.
#[test]
fn restart_loses_no_queued_user_message() {
    let lease = Duration::from_secs(2);
    let e = env(lease.as_secs());
    let tp = thumbprint(&e.puller);
    std::fs::write(&e.map, map_xml(&[("urn:mpc:k", &tp), ("urn:mpc:clock", &tp)])).unwrap();
    let mut node = e.start();
    let (mpc, clock) = (Some("urn:mpc:k"), Some("urn:mpc:clock"));
    for id in ["k1@test", "k2@test", "k3@test"] {
        queue(&node, &simple(id, mpc));
    }
    queue(&node, &simple("c1@test", clock));
    assert_eq!(um_id(&e.pull(&node, mpc, Some(&e.puller), json!({}))), "k1@test");
    // c1, leased on another MPC after k1, tells when k1's lease has run out: when c1 has
    // come back. (Pulling on k1's MPC before that would take k2.)
    let pulled_c1 = Instant::now();
    assert_eq!(um_id(&e.pull(&node, clock, Some(&e.puller), json!({}))), "c1@test");
    queue(&node, &simple("k4@test", mpc));
    node.kill9();
    let node = e.start();
    assert_eq!(um_id(&wait_reoffered(&e, &node, clock, &[], pulled_c1, lease)), "c1@test");
    let mut got = Vec::new();
    let mut receipts: Vec<String> = Vec::new();
    loop {
        let r = e.pull(&node, mpc, Some(&e.puller), json!({"receipts": receipts}));
        if r["kind"] == "error" {
            assert_eq!(error_code(&r), "EBMS:0006");
            break;
        }
        let id = um_id(&r);
        receipts = vec![id.clone()];
        got.push(id);
        assert!(got.len() <= 4, "{got:?}");
    }
    assert_eq!(got, vec!["k1@test", "k2@test", "k3@test", "k4@test"], "the expired lease first, then oldest first");
}

/// The submit API: bearer token, validation, duplicates.
#[test]
fn submit_api_checks_token_input_and_duplicates() {
    let e = env(300);
    std::fs::write(&e.map, map_xml(&[])).unwrap();
    let node = e.start();
    let url = format!("{}/api/as4/submit", node.url);
    assert_eq!(http().post(&url).body(simple("s1@test", None).to_string()).send().unwrap().status().as_u16(), 401);
    assert_eq!(http().post(&url).bearer_auth("wrong").body(simple("s1@test", None).to_string()).send().unwrap().status().as_u16(), 401);
    let (st, v) = submit(&node, &simple("s1@test", None));
    assert_eq!((st, v["message_id"].as_str()), (202, Some("s1@test")));
    assert_eq!(v["mpc"], DEFAULT_MPC);
    assert_eq!(submit(&node, &simple("s1@test", None)).0, 409);
    let mut bad = simple("s2@test", None);
    bad["parts"][0]["data_base64"] = json!("***");
    assert_eq!(submit(&node, &bad).0, 400);
    let mut bad = simple("s2@test", None);
    bad["action"] = json!("");
    let (st, v) = submit(&node, &bad);
    assert_eq!(st, 400);
    assert!(v["error"].as_str().unwrap().contains("action"), "{v}");
    let r = http().post(&url).bearer_auth(TOKEN).header("content-type", "application/json").body("{not json").send().unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // A bad field is named, however deep.
    let named = |change: &dyn Fn(&mut Value), field: &str| {
        let mut bad = simple("s3@test", None);
        change(&mut bad);
        let (st, v) = submit(&node, &bad);
        assert_eq!(st, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains(field), "{field} in {v}");
    };
    named(&|b| b["from"]["role"] = json!(1), "from.role: invalid type: integer `1`, expected a string");
    named(&|b| drop(b["parts"][0].as_object_mut().unwrap().remove("data_base64")), "parts[0]: missing field `data_base64`");
    named(&|b| b["parts"][0]["data_base64"] = json!("***"), "parts[0].data_base64");
    named(&|b| b["service"]["value"] = json!(["x"]), "service.value");
    named(&|b| b["colour"] = json!("blue"), "unknown field `colour`");
    // Generated ids.
    let mut anon = simple("x", None);
    anon.as_object_mut().unwrap().remove("message_id");
    let (st, v) = submit(&node, &anon);
    assert_eq!(st, 202);
    assert!(v["message_id"].as_str().unwrap().ends_with("@edinode"));
    // Unsigned pulls work with an empty map.
    assert_eq!(um_id(&e.pull(&node, None, None, json!({}))), "s1@test");
}

/// RabbitMQ + Redis mode: submissions arrive on `edinode.as4.submit`; two nodes share the
/// per-MPC FIFO and the leases in Redis; both restart (kill -9) without losing anything; an
/// invalid submission is dead-lettered with its reason. Shares the broker's queues: runs in
/// the serial `rabbit` nextest group.
#[test]
fn rabbit_mode_submit_queue_two_nodes_and_restart() {
    purge_queues();
    let _ = Command::new("rabbitmqctl").args(["purge_queue", "edinode.as4.submit"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    let e = env(2);
    let prefix = unique("edinode-as4-");
    // Two restarts of two nodes fit in it on a busy machine.
    let lease = Duration::from_secs(10);
    let cfg = ConfigBuilder::new(e.dir.path())
        .rabbit(&prefix)
        .station("st", "AS4NODE", &e.node_id)
        .raw(&format!("\n[as4]\nauthorization_map = \"{}\"\nreceipt_timeout_secs = {}\n", e.map.display(), lease.as_secs()))
        .write(e.dir.path());
    std::fs::write(&e.map, map_xml(&[("urn:mpc:q", &thumbprint(&e.puller))])).unwrap();
    let start = |id: &str| start_node(&cfg, e.dir.path(), &[], &[("EDINODE__ADMIN__LISTEN", ""), ("EDINODE__ADMIN__TOKEN", TOKEN), ("EDINODE__NODE__ID", id)]);
    // One consumer while submitting: with several, RabbitMQ spreads the submissions over the
    // nodes and each stores what it got, so the FIFO order is only the order of storing.
    let mut a = start("as4a");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let dead = rt.block_on(async {
        use lapin::options::*;
        let (_conn, ch) = amqp_channel().await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        ch.queue_declare("edinode.as4.submit".into(), QueueDeclareOptions { durable: true, ..Default::default() }, Default::default()).await.unwrap();
        let mut bodies: Vec<Vec<u8>> = ["q1@test", "q2@test", "q3@test"].iter().map(|id| simple(id, Some("urn:mpc:q")).to_string().into_bytes()).collect();
        bodies.insert(1, b"{\"mpc\": \"urn:mpc:q\"}".to_vec());
        for body in &bodies {
            let props = lapin::BasicProperties::default().with_delivery_mode(2);
            ch.basic_publish("".into(), "edinode.as4.submit".into(), BasicPublishOptions::default(), body, props).await.unwrap().await.unwrap();
        }
        next_message(&ch, "edinode.dead", 10).await
    });
    let header = |k: &str| amqp_header(&dead, k);
    assert!(header("x-edinode-reason").contains("not a submission"), "{}", header("x-edinode-reason"));
    assert_eq!(header("x-edinode-queue"), "edinode.as4.submit");
    wait_for(30, "q3 queued", || statuses(&a, "q3@test").contains(&"queued".to_string()).then_some(()));
    let mut b = start("as4b");

    let mpc = Some("urn:mpc:q");
    let pulled_q1 = Instant::now();
    assert_eq!(um_id(&e.pull(&a, mpc, Some(&e.puller), json!({}))), "q1@test");
    assert_eq!(um_id(&e.pull(&b, mpc, Some(&e.puller), json!({}))), "q2@test", "the other node hands out the next one, not q1 again");
    a.kill9();
    b.kill9();
    let (a, b) = (start("as4a"), start("as4b"));
    // Settle q2 through node a; q3 is next, then q1 after its lease ran out.
    assert_eq!(um_id(&e.pull(&a, mpc, Some(&e.puller), json!({"receipts": ["q2@test"]}))), "q3@test");
    // q1 comes back once its lease ran out, not before.
    assert_eq!(um_id(&wait_reoffered(&e, &b, mpc, &["q3@test"], pulled_q1, lease)), "q1@test");
    assert_eq!(error_code(&e.pull(&a, mpc, Some(&e.puller), json!({"receipts": ["q1@test"]}))), "EBMS:0006");
    for id in ["q1@test", "q2@test", "q3@test"] {
        assert!(statuses(&b, id).contains(&"receipted".to_string()), "{id}");
    }
    // Best effort: leave the shared Redis as we found it.
    let script = "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end";
    let _ = Command::new("redis-cli").args(["EVAL", script, "0", &format!("{prefix}:*")]).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

#[test]
fn check_config_checks_the_as4_section_where_the_node_opens_it() {
    let dir = tempfile::tempdir().unwrap();
    let station = identity(dir.path(), "station");
    let cfg = ConfigBuilder::new(dir.path()).station("main", "edinode", &station).raw("\n[as4]\nauthorization_map = \"maps/pull.xml\"\n").write(dir.path());
    let check = |cwd: &Path, env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_edinode"));
        c.arg("--config").arg(&cfg).arg("check-config").current_dir(cwd);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    // Relative to the working directory, as the node resolves it; missing is said, not fatal.
    let map = dir.path().join("maps/pull.xml");
    let (code, out) = check(dir.path(), &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("as4.authorization_map: {} does not exist", map.display())), "{out}");
    std::fs::create_dir_all(map.parent().unwrap()).unwrap();
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/Security/pull_authorizationmap.xml"), &map).unwrap();
    let (code, out) = check(dir.path(), &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("as4.authorization_map: {} (1 entries)", map.display())) && !out.contains("does not exist"), "{out}");
    // Started elsewhere, the node would look elsewhere: so does the check.
    let other = tempfile::tempdir().unwrap();
    let (_, out) = check(other.path(), &[]);
    assert!(out.contains(&format!("{} does not exist", other.path().join("maps/pull.xml").display())), "{out}");
    // What the node would refuse is refused.
    std::fs::write(&map, "<not-a-map").unwrap();
    let (code, out) = check(dir.path(), &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains(&format!("as4.authorization_map: {}", map.display())), "{out}");
    let (code, out) = check(dir.path(), &[("EDINODE__AS4__STATION", "nope")]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("as4.station: no station named nope"), "{out}");
}
