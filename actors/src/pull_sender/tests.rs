use super::*;
use crate::{BlobStore, StateStore, StorageErrorKind};
use edinode_proto::as4::user_message::parse_pulled;
use edinode_proto::as4::wssec;
use edinode_proto::as4::EbmsCode;
use std::collections::HashMap;
use std::sync::atomic::AtomicI64;

/// The store's clock, moved by the test.
#[derive(Default)]
struct Clock(AtomicI64);

#[derive(Default)]
struct MemState {
    clock: Arc<Clock>,
    keys: Mutex<HashMap<String, (String, i64)>>,
    sets: Mutex<HashMap<String, HashMap<String, i64>>>,
}

impl MemState {
    fn now(&self) -> i64 {
        self.clock.0.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl StateStore for MemState {
    async fn record(&self, _id: &str, _status: &str, _detail: &str) -> Result<(), StorageError> {
        Ok(())
    }
    async fn history(&self, _id: &str) -> Result<Vec<(i64, String, String)>, StorageError> {
        Ok(vec![])
    }
    async fn set_once(&self, key: &str, value: &str, ttl: u64) -> Result<String, StorageError> {
        let now = self.now();
        let mut g = self.keys.lock().unwrap();
        if let Some((v, exp)) = g.get(key)
            && *exp > now
        {
            return Ok(v.clone());
        }
        g.insert(key.into(), (value.into(), now + ttl as i64 * 1000));
        Ok(value.into())
    }
    async fn annotate(&self, _id: &str, _f: &[(&str, String)]) -> Result<(), StorageError> {
        Ok(())
    }
    async fn summary(&self, _id: &str) -> Result<Option<BTreeMap<String, String>>, StorageError> {
        Ok(None)
    }
    async fn get(&self, key: &str) -> Result<Option<String>, StorageError> {
        let now = self.now();
        Ok(self.keys.lock().unwrap().get(key).filter(|(_, e)| *e > now).map(|(v, _)| v.clone()))
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.keys.lock().unwrap().remove(key);
        Ok(())
    }
    async fn schedule(&self, set: &str, member: &str, at: i64) -> Result<(), StorageError> {
        self.sets.lock().unwrap().entry(set.into()).or_default().insert(member.into(), at);
        Ok(())
    }
    async fn due(&self, set: &str, now: i64, limit: usize) -> Result<Vec<String>, StorageError> {
        let g = self.sets.lock().unwrap();
        let mut v: Vec<(i64, String)> = g.get(set).map(|m| m.iter().filter(|(_, a)| **a <= now).map(|(k, a)| (*a, k.clone())).collect()).unwrap_or_default();
        v.sort();
        Ok(v.into_iter().take(limit).map(|(_, k)| k).collect())
    }
    async fn unschedule(&self, set: &str, member: &str) -> Result<(), StorageError> {
        self.sets.lock().unwrap().entry(set.into()).or_default().remove(member);
        Ok(())
    }
    async fn list(&self, _s: i64, _u: i64, _l: usize) -> Result<Vec<String>, StorageError> {
        Ok(vec![])
    }
}

#[derive(Default)]
struct MemBlobs(Mutex<HashMap<String, Vec<u8>>>);

#[async_trait::async_trait]
impl BlobStore for MemBlobs {
    async fn put(&self, key: &str, data: &[u8]) -> Result<(), StorageError> {
        self.0.lock().unwrap().insert(key.into(), data.to_vec());
        Ok(())
    }
    async fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        self.0.lock().unwrap().get(key).cloned().ok_or_else(|| StorageError::new(StorageErrorKind::NotFound, format!("no blob {key}")))
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.0.lock().unwrap().remove(key);
        Ok(())
    }
    async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        self.0.lock().unwrap().retain(|k, _| !k.starts_with(prefix));
        Ok(())
    }
}

fn key(cn: &str) -> SigningKey {
    let (key, cert) = edinode_proto::testing::self_signed(cn, 1).unwrap();
    SigningKey { key, cert }
}

fn tp(k: &SigningKey) -> String {
    wssec::thumbprint(&k.cert.to_der().unwrap())
}

struct Fixture {
    _dir: tempfile_free::Dir,
    map: PathBuf,
    cx: NodeContext,
    clock: Arc<Clock>,
    ps: PullSender,
    node: SigningKey,
}

/// A temp dir without the tempfile crate (not a dependency of this crate).
mod tempfile_free {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            let p = std::env::temp_dir().join(format!("edinode-pull-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn fixture(map_xml: &str) -> Fixture {
    let dir = tempfile_free::Dir::new();
    let map = dir.0.join("map.xml");
    std::fs::write(&map, map_xml).unwrap();
    let clock = Arc::new(Clock(AtomicI64::new(1_700_000_000_000)));
    let state = MemState { clock: clock.clone(), ..Default::default() };
    let cx = NodeContext {
        node_id: "test".into(),
        directory: Arc::new(Default::default()),
        directories: Default::default(),
        blobs: Arc::new(MemBlobs::default()),
        state: Arc::new(state),
        limits: crate::Limits::default(),
        http: reqwest::Client::new(),
        inbox: dir.0.join("inbox"),
        reporting_ua: "t".into(),
        mdn_post_attempts: 1,
        metrics: Arc::new(crate::metrics::Metrics::new()),
        buckets: Default::default(),
        fsync: false,
        cpu: Default::default(),
    };
    let node = key("node");
    let config = PullSenderConfig {
        authorization_map: map.clone(),
        receipt_timeout: Duration::from_secs(2),
        attachment_digest: AttachmentDigest::SwaProfile,
        limits: Limits::default(),
    };
    let ps = PullSender::new(config, Some(("st".into(), node.clone())), "test").unwrap();
    Fixture { _dir: dir, map, cx, clock, ps, node }
}

impl Fixture {
    fn now(&self) -> i64 {
        self.clock.0.load(Ordering::SeqCst)
    }
    fn advance(&self, ms: i64) {
        self.clock.0.fetch_add(ms, Ordering::SeqCst);
    }
    async fn submit(&self, id: &str, mpc: Option<&str>) -> Result<Submitted, SubmitError> {
        let json = serde_json::json!({
            "message_id": id,
            "mpc": mpc,
            "from": {"party_id": "us", "role": "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/initiator"},
            "to": {"party_id": "them", "party_type": "urn:t", "role": "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/responder"},
            "service": {"value": "urn:svc", "type": "urn:types"},
            "action": "Deliver",
            "properties": {"originalSender": "urn:a", "finalRecipient": "urn:b"},
            "parts": [{"mime_type": "application/xml", "data_base64": openssl::base64::encode_block(format!("<doc id='{id}'/>").as_bytes())}],
        });
        let s: Submission = serde_json::from_value(json).unwrap();
        let now = self.now();
        self.advance(1);
        self.ps.submit(&self.cx, s, now).await
    }
    /// POSTs a PullRequest (signed by `by` if given) with bundled signals.
    async fn post(&self, pull: Option<(&str, Option<&str>)>, receipts: &[&str], by: Option<&SigningKey>) -> Reply {
        let mut sigs = Vec::new();
        if let Some((id, mpc)) = pull {
            sigs.push((Signal::PullRequest { mpc: mpc.map(str::to_string) }, SignalIds { message_id: id.into(), timestamp: "2024-01-01T00:00:00Z".into() }));
        }
        for r in receipts {
            sigs.push((
                Signal::Receipt { ref_to_message_id: r.to_string(), references: vec![] },
                SignalIds { message_id: format!("rcpt-{r}"), timestamp: "2024-01-01T00:00:00Z".into() },
            ));
        }
        let sec = security_ids();
        let body = signals::build(&sigs, by.map(|k| (k, &sec))).unwrap();
        self.ps.handle(&self.cx, signals::SOAP_CONTENT_TYPE, &body, self.now()).await
    }
    /// PullRequest `pull_id` on `mpc` (see [`Fixture::post`]): what it got (see [`what`]).
    async fn pull(&self, pull_id: &str, mpc: Option<&str>, receipts: &[&str], by: Option<&SigningKey>) -> String {
        what(&self.post(Some((pull_id, mpc)), receipts, by).await)
    }
}

/// A fixture with an empty map (anyone may pull) and `ids` queued, in order, on the default MPC.
async fn queued(ids: &[&str]) -> Fixture {
    let f = fixture(EMPTY);
    for id in ids {
        f.submit(id, None).await.unwrap();
    }
    f
}

/// The pulled message id, or the error code.
fn what(r: &Reply) -> String {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let ct = r.content_type.clone().unwrap();
    if ct.starts_with("multipart/related") {
        let (um, signed) = parse_pulled(&ct, &r.body, &Limits { max_bytes: 1 << 24, ..Limits::default() }).unwrap();
        assert!(signed.is_some());
        return um.message_id;
    }
    let inc = signal::parse(&ct, &r.body, &Limits::default()).unwrap();
    inc.errors[0].code.clone()
}

const EMPTY: &str = "<PullRequestAuthorizationMap/>";

#[tokio::test]
async fn oldest_first_per_mpc_and_empty() {
    let f = fixture(EMPTY);
    f.submit("a1@t", Some("urn:a")).await.unwrap();
    f.submit("b1@t", Some("urn:b")).await.unwrap();
    f.submit("a2@t", Some("urn:a")).await.unwrap();
    f.submit("d1@t", None).await.unwrap();
    assert_eq!(f.pull("p1", Some("urn:a"), &[], None).await, "a1@t");
    assert_eq!(f.pull("p2", Some("urn:a"), &["a1@t"], None).await, "a2@t");
    assert_eq!(f.pull("p3", Some("urn:b"), &["a2@t"], None).await, "b1@t");
    assert_eq!(f.pull("p4", None, &[], None).await, "d1@t");
    let r = f.post(Some(("p5", Some("urn:a"))), &[], None).await;
    assert_eq!(what(&r), "EBMS:0006");
    let inc = signal::parse(r.content_type.as_deref().unwrap(), &r.body, &Limits::default()).unwrap();
    assert_eq!(inc.errors[0].severity, Severity::Warning);
    assert_eq!(inc.errors[0].ref_to_message_id.as_deref(), Some("p5"));
    // Error answers are signed by the node too.
    assert_eq!(inc.signed.unwrap().thumbprint, tp(&f.node));
}

#[tokio::test]
async fn lease_expires_and_the_message_comes_back_first() {
    let f = queued(&["m1@t", "m2@t"]).await;
    assert_eq!(f.pull("p1", None, &[], None).await, "m1@t");
    assert_eq!(f.pull("p2", None, &[], None).await, "m2@t");
    let r = f.post(None, &["m2@t"], None).await;
    assert_eq!((r.status, r.body.len(), r.outcome), (200, 0, "settled"));
    f.advance(1500);
    assert_eq!(f.pull("p3", None, &[], None).await, "EBMS:0006");
    f.advance(600);
    assert_eq!(f.pull("p4", None, &[], None).await, "m1@t");
    // m2 was receipted, so it never comes back; m1 neither once receipted.
    f.advance(2100);
    assert_eq!(f.pull("p5", None, &["m1@t"], None).await, "EBMS:0006");
    f.advance(2100);
    assert_eq!(f.pull("p6", None, &[], None).await, "EBMS:0006");
}

#[tokio::test]
async fn repeated_pull_request_gets_the_same_message() {
    let f = queued(&["m1@t", "m2@t"]).await;
    assert_eq!(f.pull("p1", None, &[], None).await, "m1@t");
    assert_eq!(f.pull("p1", None, &[], None).await, "m1@t");
    assert_eq!(f.pull("p2", None, &[], None).await, "m2@t");
    // Once settled, the repeated id is a new pull.
    assert_eq!(f.pull("p1", None, &["m1@t", "m2@t"], None).await, "EBMS:0006");
}

#[tokio::test]
async fn authorization_map_signed_unsigned_and_reload() {
    let puller = key("puller");
    let stranger = key("stranger");
    let map = format!(r#"<PullRequestAuthorizationMap><AuthorizationEntry mpc="urn:a" certificatethumprint="{}" allowed="true"/></PullRequestAuthorizationMap>"#, tp(&puller).to_lowercase());
    let f = fixture(&map);
    f.submit("a1@t", Some("urn:a")).await.unwrap();
    assert_eq!(f.pull("p1", Some("urn:a"), &[], None).await, "EBMS:0004");
    assert_eq!(f.pull("p2", Some("urn:a"), &[], Some(&stranger)).await, "EBMS:0004");
    assert_eq!(f.pull("p3", Some("urn:b"), &[], Some(&puller)).await, "EBMS:0004");
    // Still queued after the refusals.
    assert_eq!(f.pull("p4", Some("urn:a"), &[], Some(&puller)).await, "a1@t");
    // A stranger's receipt does not settle it.
    f.post(None, &["a1@t"], Some(&stranger)).await;
    f.advance(2100);
    assert_eq!(f.pull("p5", Some("urn:a"), &[], Some(&puller)).await, "a1@t");
    // The map is reloaded when the file changes: now empty, unsigned pulls are allowed.
    std::fs::write(&f.map, EMPTY).unwrap();
    f.ps.authz.look_again();
    f.submit("a2@t", Some("urn:a")).await.unwrap();
    assert_eq!(f.pull("p6", Some("urn:a"), &["a1@t"], None).await, "a2@t");
    // A broken file keeps the last good map; a missing one denies everything.
    std::fs::write(&f.map, "<oops").unwrap();
    f.ps.authz.look_again();
    assert_eq!(f.pull("p7", Some("urn:a"), &["a2@t"], None).await, "EBMS:0006");
    std::fs::remove_file(&f.map).unwrap();
    f.ps.authz.look_again();
    assert_eq!(f.pull("p8", Some("urn:a"), &[], None).await, "EBMS:0004");
}

#[tokio::test]
async fn bad_requests_and_bad_signatures() {
    let f = fixture(EMPTY);
    let r = f.ps.handle(&f.cx, "application/soap+xml", b"<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><x>&e;</x>", f.now()).await;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("DTD"));
    let r = f.ps.handle(&f.cx, "application/soap+xml", b"garbage", f.now()).await;
    assert_eq!(r.status, 400);
    let puller = key("p");
    let sec = security_ids();
    let body = signals::build(&[(Signal::PullRequest { mpc: None }, SignalIds { message_id: "p1".into(), timestamp: "t".into() })], Some((&puller, &sec))).unwrap();
    let bad = String::from_utf8(body).unwrap().replacen("<eb:MessageId>p1<", "<eb:MessageId>p2<", 1);
    let r = f.ps.handle(&f.cx, signals::SOAP_CONTENT_TYPE, bad.as_bytes(), f.now()).await;
    assert_eq!(what(&r), "EBMS:0101");
    assert_eq!(r.outcome, "failed-authentication");
}

#[tokio::test]
async fn submissions_are_checked() {
    let f = fixture(EMPTY);
    f.submit("x@t", None).await.unwrap();
    assert_eq!(f.submit("x@t", None).await, Err(SubmitError::Duplicate("x@t".into())));
    assert!(matches!(f.submit("has space", None).await, Err(SubmitError::Invalid(_))));
    let s: Submission = serde_json::from_value(serde_json::json!({
        "from": {"party_id": "a", "role": "r"}, "to": {"party_id": "b", "role": "r"},
        "service": {"value": "s"}, "action": "a",
        "parts": [{"content_id": "bad id", "data_base64": "AAAA"}]
    }))
    .unwrap();
    assert!(matches!(f.ps.submit(&f.cx, s, f.now()).await, Err(SubmitError::Invalid(_))));
    let s: Submission = serde_json::from_value(serde_json::json!({
        "from": {"party_id": "a", "role": "r"}, "to": {"party_id": "b", "role": "r"},
        "service": {"value": "s"}, "action": "a", "parts": [{"data_base64": "not base64!"}]
    }))
    .unwrap();
    assert!(matches!(f.ps.submit(&f.cx, s, f.now()).await, Err(SubmitError::Invalid(_))));
    let unknown = serde_json::from_value::<Submission>(serde_json::json!({
        "from": {"party_id": "a", "role": "r"}, "to": {"party_id": "b", "role": "r"},
        "service": {"value": "s"}, "action": "a", "parts": [], "colour": "blue"
    }));
    assert!(unknown.is_err());
}

#[tokio::test]
async fn an_error_signal_settles_too() {
    let f = queued(&["m1@t"]).await;
    assert_eq!(f.pull("p1", None, &[], None).await, "m1@t");
    let e = Signal::Error { ref_to_message_id: Some("m1@t".into()), errors: vec![ErrorDetail::new(EbmsCode::DeliveryFailure)] };
    let body = signals::build(&[(e, SignalIds { message_id: "e1".into(), timestamp: "t".into() })], None).unwrap();
    let r = f.ps.handle(&f.cx, signals::SOAP_CONTENT_TYPE, &body, f.now()).await;
    assert_eq!((r.status, r.body.len(), r.outcome), (200, 0, "settled"));
    f.advance(2100);
    assert_eq!(f.pull("p2", None, &[], None).await, "EBMS:0006");
    // A settled id cannot be queued again (while duplicates are remembered).
    assert_eq!(f.submit("m1@t", None).await, Err(SubmitError::Duplicate("m1@t".into())));
}

#[test]
fn datetimes() {
    assert_eq!(xsd_datetime(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(xsd_datetime(951_782_400_123), "2000-02-29T00:00:00.123Z");
    assert_eq!(xsd_datetime(1_714_564_800_000), "2024-05-01T12:00:00.000Z");
}
