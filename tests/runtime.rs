//! The actor runtime under load, against the running node: CPU-bound work (here a 400 MiB
//! decompression) runs on the CPU pool, so partners' HTTP requests and other messages keep
//! flowing while it runs.

use crate::common::build::*;
use crate::common::*;
use edinode_proto::alg::DigestAlg;
use std::time::{Duration, Instant};

#[test]
fn http_and_small_messages_stay_responsive_during_a_400_mib_decompression() {
    let tmp = tempfile::tempdir().unwrap();
    let station = identity(tmp.path(), "station");
    let partner = identity(tmp.path(), "partner");
    let mut b = ConfigBuilder::new(tmp.path());
    b.text = b.text.replace("[node]\n", "[node]\ncpu_workers = 2\n");
    let cfg = b.station("edinode", "edinode", &station).partner("acme", "acme", "edinode", &[&partner.cert_pem], "").write(tmp.path());
    let node = start_node(&cfg, tmp.path(), &[], &[]);
    let size = 400 << 20;
    let big = compressed(&entity("application/octet-stream", "big.bin", &vec![0u8; size]));
    let url = node.as2_url();
    let (hs, body) = request("acme", "edinode", "<big-1@x>", None, &big);
    let (st, _, _) = post_capture(&url, &hs, body);
    assert_eq!(st, 200);
    // While the node inflates 400 MiB: /healthz and signed + encrypted messages with a signed
    // synchronous MDN.
    let health = format!("{}/healthz", node.url);
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let mut worst_health = Duration::ZERO;
    let mut worst_message = Duration::ZERO;
    let mut i = 0;
    let started = Instant::now();
    loop {
        let t = Instant::now();
        assert_eq!(client.get(&health).send().unwrap().status().as_u16(), 200);
        worst_health = worst_health.max(t.elapsed());
        let doc = entity("application/edi-x12", &format!("small{i}.edi"), b"ISA*small~");
        let msg = encrypted(&signed(&doc, &partner.key, &partner.cert, DigestAlg::Sha256), &station.cert);
        let (hs, body) = request("acme", "edinode", &format!("<small-{i}@x>"), Some("signed"), &msg);
        let t = Instant::now();
        let (st, _, mdn) = post_capture(&url, &hs, body);
        assert_eq!(st, 200);
        assert!(String::from_utf8_lossy(&mdn).contains("processed"));
        worst_message = worst_message.max(t.elapsed());
        i += 1;
        let done = delivered(&tmp.path().join("inbox"), "edinode", "acme").iter().any(|(n, d)| n == "big.bin" && d.len() == size);
        if done {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the large message was not delivered");
    }
    println!("during a 400 MiB decompression: {i} small messages, worst /healthz {} ms, worst signed sync MDN {} ms", worst_health.as_millis(), worst_message.as_millis());
    assert!(i >= 2, "the decompression ended before the probes could overlap it");
    assert!(worst_health < Duration::from_secs(1), "healthz took {worst_health:?}");
    assert!(worst_message < Duration::from_secs(3), "a small message took {worst_message:?}");
}
