//! One large message (large mode): 100 MiB of random bytes, signed + encrypted like the others,
//! through an embedded node, for the node's peak RSS.

use crate::common::*;
use crate::load::*;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub struct LargeResult {
    pub payload_mib: f64,
    pub body_mib: f64,
    pub secs: f64,
    pub hwm_mib: f64,
    pub base_mib: f64,
    pub node_cpu_s: f64,
    /// `openssl cms -decrypt` then `openssl cms -verify` on the same message, seconds.
    pub openssl_s: Option<f64>,
    pub problem: Option<String>,
}

/// Runs one OpenSSL command; false (and why, on stderr) when it fails.
fn step(cmd: &mut std::process::Command, what: &str) -> bool {
    match cmd.output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            eprintln!("  openssl {what} failed: {}", String::from_utf8_lossy(&o.stderr).lines().take(3).collect::<Vec<_>>().join(" | "));
            false
        }
        Err(e) => {
            eprintln!("  openssl {what}: {e}");
            false
        }
    }
}

/// The OpenSSL command line on the same message: decrypt, then verify the signed entity it
/// gives (what the issue measures the node against). None when a step fails.
fn openssl_cli(dir: &std::path::Path, body: &[u8], keys: &Keys) -> Option<f64> {
    use std::process::Command;
    let der = dir.join("body.der");
    let dec = dir.join("decrypted.eml");
    std::fs::write(&der, body).ok()?;
    let t = Instant::now();
    if !step(
        Command::new("openssl").args(["cms", "-decrypt", "-binary", "-inform", "DER", "-in"]).arg(&der).arg("-recip").arg(&keys.station.cert_pem).arg("-inkey").arg(&keys.station.key_pem).arg("-out").arg(&dec),
        "cms -decrypt",
    ) {
        return None;
    }
    let decrypt_s = t.elapsed().as_secs_f64();
    // The CLI's S/MIME reader rewrites line ends inside a binary signed part (its
    // multipart/signed verification fails on random bytes), so the verify step gets the part
    // and the signature as files, split here (not timed: it favours the CLI).
    let (content, sig) = (dir.join("content.bin"), dir.join("sig.der"));
    {
        let limits = edinode_proto::mime::MimeLimits::default();
        let raw = std::fs::read(&dec).ok()?;
        let e = edinode_proto::mime::Entity::parse(&raw, &limits).ok()?;
        let ct = e.content_type();
        let parts = edinode_proto::mime::split_multipart(e.body, ct.param("boundary").unwrap_or(""), &limits).ok()?;
        std::fs::write(&content, parts.first()?).ok()?;
        let sig_entity = edinode_proto::mime::Entity::parse(parts.get(1)?, &limits).ok()?;
        std::fs::write(&sig, sig_entity.decoded_body().ok()?).ok()?;
    }
    let t = Instant::now();
    let ok = step(
        Command::new("openssl").args(["cms", "-verify", "-binary", "-noverify", "-inform", "DER", "-in"]).arg(&sig).arg("-content").arg(&content).arg("-certfile").arg(&keys.client.cert_pem).args(["-out", "/dev/null"]),
        "cms -verify",
    );
    let secs = decrypt_s + t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&content);
    let _ = std::fs::remove_file(&sig);
    let _ = std::fs::remove_file(&der);
    let _ = std::fs::remove_file(&dec);
    ok.then_some(secs)
}

pub fn run_large(cx: &Ctx, mib: usize) -> Result<LargeResult, String> {
    let (rt, bin, keys, tck) = (&cx.rt, &cx.bin, &cx.keys, cx.s.tck);
    let t = Instant::now();
    let mut payload = vec![0u8; mib * 1024 * 1024];
    for chunk in payload.chunks_mut(1 << 20) {
        openssl::rand::rand_bytes(chunk).map_err(|e| e.to_string())?;
    }
    let msg = build_message(payload, keys);
    eprintln!("  built the {mib} MiB message ({} bytes on the wire) in {:.1} s", msg.body.len(), t.elapsed().as_secs_f64());
    let dir = tempfile::Builder::new().prefix("edinode-bench-large-").tempdir().map_err(|e| e.to_string())?;
    let openssl_s = openssl_cli(dir.path(), &msg.body, keys);
    eprintln!("  openssl cms -decrypt + -verify: {openssl_s:?} s");
    let config = write_config(dir.path(), keys, None, 600);
    let mut node = start_node(bin, &config, dir.path())?;
    let pid = node.pid();
    let base = status_kib(pid, "VmHWM:").unwrap_or(0);
    let n0 = cpu_ticks(&pid.to_string()).unwrap_or(0);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(900)).build().map_err(|e| e.to_string())?;
    let url = format!("{}/as2", node.url);
    let t0 = Instant::now();
    // VmRSS every 10 ms, to see when the peak happens.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Some(kib) = status_kib(pid, "VmRSS:") {
                    samples.push((t0.elapsed().as_secs_f64(), kib));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            samples
        })
    };
    let tag = format!("large-{:08x}", rand_u32());
    let phase = rt.block_on(load(&client, &url, &msg, 1, 1, Duration::from_secs(900), &tag));
    let problem = phase.failures.samples.into_iter().next();
    let secs = t0.elapsed().as_secs_f64();
    let hwm = status_kib(pid, "VmHWM:").unwrap_or(0);
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap_or_default();
    if let Some(peak) = samples.iter().max_by_key(|s| s.1) {
        let step = (secs / 12.0).max(0.05);
        let mut line = String::new();
        let mut next = 0.0;
        for (t, kib) in &samples {
            if *t >= next {
                line.push_str(&format!(" {t:.2}s:{}M", kib / 1024));
                next = t + step;
            }
        }
        eprintln!("  node VmRSS over time (request sent at 0 s, answered at {secs:.2} s):{line}");
        eprintln!("  sampled peak {} MiB at {:.2} s", peak.1 / 1024, peak.0);
    }
    let n1 = cpu_ticks(&pid.to_string()).unwrap_or(0);
    let ended = node.exit_description();
    if std::env::var_os("BENCH_NODE_LOG").is_some() {
        eprintln!("  node log:\n{}", std::fs::read_to_string(&node.log).unwrap_or_default());
    }
    let (nbad, bad) = node.log_problems(5);
    node.kill();
    let mut problem = problem;
    if let Some(how) = ended {
        problem = Some(format!("{} (the node ended: {how}; VmHWM is the last value read)", problem.unwrap_or_default()));
    }
    if problem.is_some() && nbad > 0 {
        eprintln!("    node log: {nbad} WARN/ERROR lines, first: {bad:#?}");
    }
    Ok(LargeResult {
        payload_mib: msg.payload_len as f64 / 1048576.0,
        body_mib: msg.body.len() as f64 / 1048576.0,
        secs,
        hwm_mib: hwm as f64 / 1024.0,
        base_mib: base as f64 / 1024.0,
        node_cpu_s: n1.saturating_sub(n0) as f64 / tck,
        openssl_s,
        problem,
    })
}

/// Sending one large document: node A takes it through POST /api/send, builds the message as
/// it streams (sign sha256, encrypt aes256-cbc) and POSTs it to node B, which answers a signed
/// synchronous MDN; timed from the submit to A's `sent` record. OpenSSL CLI = `openssl cms
/// -sign` (detached) then `openssl cms -encrypt` of the same payload, as files.
pub fn run_large_out(cx: &mut Ctx, pk: &crate::outbound::PairKeys, mib: usize) -> Result<LargeResult, String> {
    use crate::outbound::{send_form, write_pair_config, ADMIN_TOKEN, FORM_BOUNDARY};
    let mut payload = vec![0u8; mib * 1024 * 1024];
    for chunk in payload.chunks_mut(1 << 20) {
        openssl::rand::rand_bytes(chunk).map_err(|e| e.to_string())?;
    }
    let (pa, pb) = (cx.tempdir("edinode-bench-large-a-")?, cx.tempdir("edinode-bench-large-b-")?);
    let file = pa.join("payload.bin");
    std::fs::write(&file, &payload).map_err(|e| e.to_string())?;
    let openssl_s = openssl_sign_encrypt(&pa, &file, pk);
    eprintln!("  openssl cms -sign + -encrypt: {openssl_s:?} s");
    let _ = std::fs::remove_file(&file);
    let patient = |p: &std::path::Path| -> Result<(), String> {
        let t = std::fs::read_to_string(p).map_err(|e| e.to_string())?.replace("sync_mdn_timeout_secs = 120", "sync_mdn_timeout_secs = 1800").replace("require_signed_mdn = true\n", "require_signed_mdn = true\ntimeout_secs = 1800\n");
        std::fs::write(p, t).map_err(|e| e.to_string())
    };
    let cb = write_pair_config(&pb, "beta", &pk.beta, "alpha", &pk.alpha, None, "");
    patient(&cb)?;
    let mut b = start_node(&cx.bin, &cb, &pb)?;
    let ca = write_pair_config(&pa, "alpha", &pk.alpha, "beta", &pk.beta, Some(&format!("{}/as2", b.url)), "");
    patient(&ca)?;
    let mut a = start_node(&cx.bin, &ca, &pa)?;
    let pid = a.pid();
    let base = status_kib(pid, "VmHWM:").unwrap_or(0);
    let n0 = cpu_ticks(&pid.to_string()).unwrap_or(0);
    let form = send_form("alpha", "beta", "large.bin", &payload);
    drop(payload);
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(1800)).build().map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let resp = client.post(format!("{}/api/send", a.url)).bearer_auth(ADMIN_TOKEN).header("Content-Type", format!("multipart/form-data; boundary={FORM_BOUNDARY}")).body(form).send().map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_slice(&resp.bytes().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let id = v["id"].as_str().ok_or(format!("no id: {v}"))?.to_string();
    let mut problem = None;
    loop {
        let got = client.get(format!("{}/api/messages/{id}", a.url)).bearer_auth(ADMIN_TOKEN).send().and_then(|r| r.bytes()).map_err(|e| e.to_string())?;
        let m: serde_json::Value = serde_json::from_slice(&got).map_err(|e| e.to_string())?;
        match m["summary"]["status"].as_str() {
            Some("sent") => break,
            Some("failed") => {
                problem = Some(format!("failed: {}", m["summary"]["reason"]));
                break;
            }
            _ if t0.elapsed() > Duration::from_secs(1800) => {
                problem = Some("not sent within 30 min".into());
                break;
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let hwm = status_kib(pid, "VmHWM:").unwrap_or(0);
    let n1 = cpu_ticks(&pid.to_string()).unwrap_or(0);
    let (nbad, bad) = a.log_problems(5);
    if problem.is_some() && nbad > 0 {
        eprintln!("    node A log: {nbad} WARN/ERROR lines, first: {bad:#?}");
    }
    a.kill();
    b.kill();
    Ok(LargeResult {
        payload_mib: mib as f64,
        body_mib: 0.0,
        secs,
        hwm_mib: hwm as f64 / 1024.0,
        base_mib: base as f64 / 1024.0,
        node_cpu_s: n1.saturating_sub(n0) as f64 / cx.s.tck,
        openssl_s,
        problem,
    })
}

fn openssl_sign_encrypt(dir: &std::path::Path, payload: &std::path::Path, pk: &crate::outbound::PairKeys) -> Option<f64> {
    use std::process::Command;
    let (sig, enc) = (dir.join("cli.p7s"), dir.join("cli.p7m"));
    let t = Instant::now();
    let ok = step(Command::new("openssl").args(["cms", "-sign", "-binary", "-md", "sha256", "-outform", "DER", "-in"]).arg(payload).arg("-signer").arg(&pk.alpha.cert_pem).arg("-inkey").arg(&pk.alpha.key_pem).arg("-out").arg(&sig), "cms -sign")
        && step(Command::new("openssl").args(["cms", "-encrypt", "-binary", "-aes256", "-outform", "DER", "-in"]).arg(payload).arg("-out").arg(&enc).arg(&pk.beta.cert_pem), "cms -encrypt");
    let secs = t.elapsed().as_secs_f64();
    let _ = (std::fs::remove_file(&sig), std::fs::remove_file(&enc));
    ok.then_some(secs)
}

/// One run per size in BENCH_LARGE_MIB (MiB, comma-separated; 0 or empty skips), as `what`;
/// a run that fails is counted and left out.
fn each_size(cx: &mut Ctx, what: &str, mut run: impl FnMut(&mut Ctx, usize) -> Result<LargeResult, String>) -> Vec<LargeResult> {
    let sizes: Vec<usize> = std::env::var("BENCH_LARGE_MIB").unwrap_or_else(|_| "100".into()).split(',').filter_map(|v| v.trim().parse().ok()).filter(|&m| m > 0).collect();
    let mut out = Vec::new();
    for mib in sizes {
        eprintln!("{what}: {mib} MiB, embedded mode");
        if let Ok(r) = run(cx, mib).map_err(|e| cx.fail(format!("{what}: {e}"))) {
            out.push(r);
        }
    }
    out
}

/// The receiving side, one message per size of BENCH_LARGE_MIB.
pub fn bench(cx: &mut Ctx) -> Vec<LargeResult> {
    each_size(cx, "large message", |cx, mib| run_large(cx, mib))
}

/// The sending side, sizes as in [`bench`] (BENCH_LARGE_OUT=0 skips it).
pub fn bench_out(cx: &mut Ctx) -> Vec<LargeResult> {
    if std::env::var("BENCH_LARGE_OUT").is_ok_and(|v| v == "0") {
        return Vec::new();
    }
    let pk = crate::outbound::PairKeys { alpha: identity(&cx.keydir, "alpha"), beta: identity(&cx.keydir, "beta") };
    each_size(cx, "large message sent", |cx, mib| run_large_out(cx, &pk, mib))
}

pub fn print_out(all: &[LargeResult]) {
    print_table(
        all,
        "Large messages sent: random-bytes document through POST /api/send on node A, signed sha256 + encrypted aes256-cbc as it streams, POSTed to node B with a signed synchronous MDN; time from the submit to A's `sent`; RSS and CPU of node A; OpenSSL CLI = `openssl cms -sign` (detached) then `openssl cms -encrypt` of the same payload.",
        &["Payload", "Time s", "OpenSSL CLI s", "Time / CLI", "Node A peak RSS (VmHWM) MiB", "Peak RSS / payload", "Node A RSS before MiB", "Node A CPU s", "Result"],
        |l| vec![format!("{:.0} MiB", l.payload_mib)],
        "sent, MDN verified",
    );
}

pub fn print(all: &[LargeResult]) {
    print_table(
        all,
        "Large messages: random-bytes payload, signed sha256 + encrypted as above, signed synchronous MDN, embedded mode; OpenSSL CLI = `openssl cms -decrypt` then `openssl cms -verify` on the same message.",
        &["Payload", "Body on the wire", "Time s", "OpenSSL CLI s", "Time / CLI", "Node peak RSS (VmHWM) MiB", "Peak RSS / payload", "Node RSS before MiB", "Node CPU s", "Result"],
        |l| vec![format!("{:.0} MiB", l.payload_mib), format!("{:.1} MiB", l.body_mib)],
        "processed, MIC matches",
    );
}

/// A markdown table of `all` under `intro`: the `first` cells of a row, then the columns both
/// sides share, from the time to the result (`ok` when there was no problem). Nothing when
/// `all` is empty.
fn print_table(all: &[LargeResult], intro: &str, head: &[&str], first: impl Fn(&LargeResult) -> Vec<String>, ok: &str) {
    if all.is_empty() {
        return;
    }
    println!();
    println!("{intro}");
    println!();
    println!("| {} |", head.join(" | "));
    println!("|{}---|", "---:|".repeat(head.len() - 1));
    for l in all {
        let cli = l.openssl_s.map_or("failed".to_string(), |s| format!("{s:.1}"));
        let ratio = l.openssl_s.map_or("-".to_string(), |s| format!("{:.2}x", l.secs / s));
        let mut cells = first(l);
        cells.extend([
            format!("{:.1}", l.secs),
            cli,
            ratio,
            format!("{:.0}", l.hwm_mib),
            format!("{:.3}x", l.hwm_mib / l.payload_mib),
            format!("{:.0}", l.base_mib),
            format!("{:.1}", l.node_cpu_s),
            l.problem.clone().unwrap_or_else(|| ok.into()),
        ]);
        println!("| {} |", cells.join(" | "));
    }
}
