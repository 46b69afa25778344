//! AS4 pulls (pulls mode): one embedded node whose station signs pull responses, an
//! authorization map that allows the bench's certificate on one MPC. The bench queues the user
//! messages first (POST /api/as4/submit, 10 KiB payload each), signs every PullRequest before the
//! clock starts, then pulls them back from concurrent pullers. No receipts are sent (each pull
//! takes a fresh lease), so a pull is: verify the PullRequest's signature, check the map, claim
//! the oldest message, load it, build and sign the multipart response.

use crate::common::*;
use crate::load::*;
use crate::outbound::{ADMIN_TOKEN, print_problems};
use openssl::hash::MessageDigest;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const PULL_MPC: &str = "urn:edinode:bench:pulls";

#[derive(Clone)]
pub struct PullRun {
    pub pulls_per_s: f64,
    pub pulled: usize,
    pub failures: usize,
    pub samples: Vec<String>,
    pub p50: f64,
    pub p99: f64,
    pub node_cpu_ms: f64,
    pub client_cpu_ms: f64,
    pub submit_per_s: f64,
    pub body_bytes: usize,
    pub died: Option<String>,
}

pub fn write_pull_config(dir: &Path, keys: &Keys) -> PathBuf {
    let tp = hex::encode_upper(openssl::hash::hash(MessageDigest::sha1(), &keys.client.cert.to_der().expect("der")).expect("sha1"));
    let map = dir.join("pull_authorizationmap.xml");
    std::fs::write(&map, format!("<PullRequestAuthorizationMap><AuthorizationEntry mpc=\"{PULL_MPC}\" certificatethumprint=\"{tp}\" allowed=\"true\"/></PullRequestAuthorizationMap>\n")).expect("write map");
    let t = format!(
        "[node]\ndata_dir = \"{d}/var\"\ninbox = \"{d}/inbox\"\n\n[http]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[admin]\nlisten = \"\"\ntoken = \"{ADMIN_TOKEN}\"\n\n[as4]\nauthorization_map = \"{m}\"\nreceipt_timeout_secs = 3600\n\n[stations.main]\nas2_id = \"edinode\"\nsigning = {{ key = \"{k}\", cert = \"{c}\" }}\n",
        d = dir.display(),
        m = map.display(),
        k = keys.station.key_pem.display(),
        c = keys.station.cert_pem.display()
    );
    let p = dir.join("edinode.toml");
    std::fs::write(&p, t).expect("write config");
    p
}

/// POSTs `bodies[i]` for every i from `concurrency` tasks; `check` judges each answer.
pub async fn post_all(client: &reqwest::Client, url: &str, bodies: Arc<Vec<(String, Vec<u8>)>>, concurrency: usize, max: Duration, check: fn(u16, &str, &[u8]) -> Option<String>) -> Phase {
    let (client, url) = (client.clone(), url.to_string());
    let n = bodies.len();
    drive(n, concurrency, max, move |i| client.post(&url).bearer_auth(ADMIN_TOKEN).header("Content-Type", bodies[i].0.as_str()).body(bodies[i].1.clone()), check).await
}

pub fn check_submitted(status: u16, _ct: &str, body: &[u8]) -> Option<String> {
    (status != 202).then(|| format!("HTTP {status}: {}", String::from_utf8_lossy(body).chars().take(300).collect::<String>()))
}

pub fn check_pulled(status: u16, ct: &str, body: &[u8]) -> Option<String> {
    if status == 200 && ct.starts_with("multipart/related") {
        return None;
    }
    let text = String::from_utf8_lossy(body);
    let code = text.split("errorCode=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("");
    Some(format!("HTTP {status} {ct} {code}: {}", text.chars().take(200).collect::<String>()))
}

pub fn run_pulls_once(cx: &Ctx, n: usize, payload_bytes: usize, run: usize, dir: &Path) -> Result<PullRun, String> {
    use edinode_proto::as4::signals::{self, Signal, SignalIds};
    use edinode_proto::as4::wssec::{SecurityIds, SigningKey};
    let (rt, keys, s, warmup) = (&cx.rt, &cx.keys, &cx.s, cx.s.warmup);
    let cfg = write_pull_config(dir, keys);
    let mut node = start_node(&cx.bin, &cfg, dir)?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(s.concurrency).build().map_err(|e| e.to_string())?;
    let total = n + warmup;
    let data = openssl::base64::encode_block(&x12_payload(payload_bytes));
    let tag = format!("{:08x}", rand_u32());
    // One more than pulled: the probe below takes one.
    let submissions: Vec<(String, Vec<u8>)> = (0..=total)
        .map(|i| {
            let sub = serde_json::json!({
                "message_id": format!("bench-{tag}-{i}@edinode"), "mpc": PULL_MPC,
                "from": {"party_id": "edinode", "role": "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/initiator"},
                "to": {"party_id": "bench", "role": "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/responder"},
                "service": {"value": "urn:bench"}, "action": "Deliver",
                "parts": [{"mime_type": "application/edi-x12", "data_base64": data}],
            });
            ("application/json".to_string(), sub.to_string().into_bytes())
        })
        .collect();
    let sub = rt.block_on(post_all(&client, &format!("{}/api/as4/submit", node.url), Arc::new(submissions), s.concurrency, s.max * 2, check_submitted));
    if sub.failures.count > 0 {
        return Err(format!("{} of {} submissions failed, e.g. {:?}", sub.failures.count, sub.done, sub.failures.samples.first()));
    }
    // Every PullRequest signed up front: the client's RSA work stays out of the measurement.
    let key = SigningKey { key: keys.client.key.clone(), cert: keys.client.cert.clone() };
    let sign = |i: usize| -> Result<(String, Vec<u8>), String> {
        let ids = SignalIds { message_id: format!("pull-{tag}-{i}@bench"), timestamp: "2026-01-01T00:00:00.000Z".into() };
        let sec = SecurityIds { messaging_id: format!("m-{i}"), body_id: format!("b-{i}"), bst_id: format!("t-{i}") };
        let body = signals::build(&[(Signal::PullRequest { mpc: Some(PULL_MPC.into()) }, ids)], Some((&key, &sec))).map_err(|e| e.to_string())?;
        Ok((signals::SOAP_CONTENT_TYPE.to_string(), body))
    };
    let warm: Vec<_> = (0..warmup).map(sign).collect::<Result<_, _>>()?;
    let measured: Vec<_> = (warmup..total).map(sign).collect::<Result<_, _>>()?;
    let url = format!("{}/as4", node.url);
    // One answer checked the way a partner would: signature, digests, payload.
    let probe = rt.block_on(async { client.post(&url).header("Content-Type", signals::SOAP_CONTENT_TYPE).body(sign(total)?.1).send().await.map_err(|e| e.to_string()) })?;
    let ct = probe.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = rt.block_on(probe.bytes()).map_err(|e| e.to_string())?;
    let limits = edinode_proto::as4::Limits { max_bytes: 64 << 20, ..Default::default() };
    let (um, signer) = edinode_proto::as4::user_message::parse_pulled(&ct, &body, &limits).map_err(|e| format!("the pull response does not verify: {e}"))?;
    if signer.is_none() || um.parts.first().map(|p| p.bytes.len()) != Some(payload_bytes) {
        return Err("the pull response is unsigned or lost its payload".into());
    }
    let warm = rt.block_on(post_all(&client, &url, Arc::new(warm), s.concurrency, s.max / 3, check_pulled));
    if warm.failures.count > 0 {
        eprintln!("  warm-up: {} of {} failed, e.g. {:?}", warm.failures.count, warm.done, warm.failures.samples.first());
    }
    let pid = node.pid().to_string();
    let me = std::process::id().to_string();
    let (n0, c0) = (cpu_ticks(&pid).unwrap_or(0), cpu_ticks(&me).unwrap_or(0));
    let mut phase = rt.block_on(post_all(&client, &url, Arc::new(measured), s.concurrency, s.max, check_pulled));
    let (n1, c1) = (cpu_ticks(&pid).unwrap_or(0), cpu_ticks(&me).unwrap_or(0));
    let died = node.exit_description();
    node.kill();
    phase.latencies.sort();
    let ok = phase.done.saturating_sub(phase.failures.count);
    let per = |ticks: u64| ticks as f64 * 1000.0 / s.tck / phase.done.max(1) as f64;
    let r = PullRun {
        pulls_per_s: ok as f64 / phase.elapsed.as_secs_f64(),
        pulled: ok,
        failures: phase.failures.count,
        samples: phase.failures.samples,
        p50: percentile(&phase.latencies, 50.0),
        p99: percentile(&phase.latencies, 99.0),
        node_cpu_ms: per(n1.saturating_sub(n0)),
        client_cpu_ms: per(c1.saturating_sub(c0)),
        submit_per_s: sub.done as f64 / sub.elapsed.as_secs_f64(),
        body_bytes: body.len(),
        died,
    };
    eprintln!(
        "  pulls run {run}: {} pulled in {:.1} s = {:.0} pulls/s, {} failed, p50 {:.1} ms, p99 {:.1} ms, node {:.2} CPU-ms/pull, client {:.2} CPU-ms/pull; submit {:.0} msg/s",
        r.pulled,
        phase.elapsed.as_secs_f64(),
        r.pulls_per_s,
        r.failures,
        r.p50,
        r.p99,
        r.node_cpu_ms,
        r.client_cpu_ms,
        r.submit_per_s
    );
    print_problems("failure", &r.samples, &r.died, &[]);
    Ok(r)
}

/// The pulls mode: fresh node per run, the median run by pulls/s and all runs.
pub fn bench(cx: &mut Ctx) -> Option<(PullRun, Vec<PullRun>)> {
    let n = env_usize("BENCH_PULLS", 2000);
    let payload = env_usize("BENCH_PULL_PAYLOAD_BYTES", 10 * 1024);
    if n == 0 {
        return None;
    }
    eprintln!("pulls: {n} signed PullRequests per run, {payload} B payloads, {} pullers, {} warm-up", cx.s.concurrency, cx.s.warmup);
    let rs = cx.repeat("pulls", |cx, i| {
        let dir = cx.tempdir("edinode-bench-pulls-")?;
        run_pulls_once(cx, n, payload, i, &dir)
    });
    let median = median_run(&rs, |r| r.failures == 0 && r.died.is_none(), |r| r.pulls_per_s)?;
    Some((median, rs))
}

pub fn print(cx: &Ctx, (r, all): &(PullRun, Vec<PullRun>)) {
    let all_rates: Vec<String> = all.iter().map(|r| format!("{:.0}", r.pulls_per_s)).collect();
    let all_failed: usize = all.iter().map(|r| r.failures).sum();
    println!();
    println!(
        "AS4 pulls: one embedded node (`http.workers = 2`) answers {} signed PullRequests (RSA 2048, SHA-256, signed by the bench before the clock starts) per run from {} concurrent pullers on one MPC, each answered with a queued user message of {} B ({} B multipart/related on the wire) signed by the node (BinarySecurityToken, RSA-SHA256, SwA attachment digest); no receipts; the messages were queued before through POST /api/as4/submit; one response per run verified as a partner would; median of {} runs by pulls/s.",
        r.pulled + r.failures,
        cx.s.concurrency,
        env_usize("BENCH_PULL_PAYLOAD_BYTES", 10 * 1024),
        r.body_bytes,
        cx.repeats
    );
    println!();
    println!("| Mode | pulls/s | p50 ms | p99 ms | node CPU-ms/pull | client CPU-ms/pull | submit msg/s | failures (median run; all runs) | pulls/s of all runs |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    println!(
        "| pulls (signed PullRequest -> signed user message) | {:.0} | {:.1} | {:.1} | {:.2} | {:.2} | {:.0} | {}; {} | {} |",
        r.pulls_per_s, r.p50, r.p99, r.node_cpu_ms, r.client_cpu_ms, r.submit_per_s, r.failures, all_failed, all_rates.join(", ")
    );
}
