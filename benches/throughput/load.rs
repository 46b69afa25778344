//! The load generator: concurrent senders, the check of each answer, percentiles.

use crate::common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Failures {
    pub count: usize,
    pub samples: Vec<String>,
}

impl Failures {
    pub fn add(&mut self, what: String) {
        self.count += 1;
        if self.samples.len() < 5 {
            self.samples.push(what);
        }
    }
}

/// Why a response is not a positive signed MDN (None when it is one).
pub fn check_response(status: u16, content_type: &str, body: &[u8], mic: &str) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let snippet = || text.chars().take(300).collect::<String>().replace("\r\n", " | ");
    if status != 200 {
        return Some(format!("HTTP {status}: {}", snippet()));
    }
    if !content_type.to_ascii_lowercase().starts_with("multipart/signed") {
        return Some(format!("Content-Type {content_type}: {}", snippet()));
    }
    let disp = text.lines().find(|l| l.to_ascii_lowercase().starts_with("disposition:")).unwrap_or("");
    if !disp.trim_end().ends_with("; processed") {
        return Some(format!("not processed: {disp:?}"));
    }
    if !text.contains(mic) {
        return Some(format!("MIC {mic} not in the MDN: {}", snippet()));
    }
    None
}

pub struct Phase {
    pub done: usize,
    pub failures: Failures,
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

/// Issues `count` requests from `concurrency` tasks (none after `max` wall time): request i is
/// `make(i)`, and `check(status, content type, body)` says why an answer is wrong, if it is.
pub async fn drive<M, C>(count: usize, concurrency: usize, max: Duration, make: M, check: C) -> Phase
where
    M: Fn(usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
    C: Fn(u16, &str, &[u8]) -> Option<String> + Send + Sync + 'static,
{
    let (make, check) = (Arc::new(make), Arc::new(check));
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Failures::default()));
    let start = Instant::now();
    let deadline = start + max;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (make, check, next, failures) = (make.clone(), check.clone(), next.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(count / concurrency + 1);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || Instant::now() > deadline {
                    break;
                }
                let request = make(i);
                let t0 = Instant::now();
                let problem = match request.send().await {
                    Err(e) => Some(format!("request error: {e}")),
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                        match resp.bytes().await {
                            Err(e) => Some(format!("reading the response: {e}")),
                            Ok(b) => check(status, &ct, &b),
                        }
                    }
                };
                lat.push(t0.elapsed());
                if let Some(p) = problem {
                    failures.lock().unwrap().add(p);
                }
            }
            lat
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    for t in tasks {
        latencies.extend(t.await.expect("sender task"));
    }
    let elapsed = start.elapsed();
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    Phase { done: latencies.len(), failures, latencies, elapsed }
}

/// The AS2 request of the receiving modes, with Message-ID `<bench-{tag}-{i}@bench.client>`.
pub fn as2_request(client: &reqwest::Client, url: &str, body: bytes::Bytes, tag: &str, i: usize) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("AS2-Version", "1.2")
        .header("AS2-From", "bench")
        .header("AS2-To", "edinode")
        .header("Message-ID", format!("<bench-{tag}-{i}@bench.client>"))
        .header("Disposition-Notification-To", "bench@bench.client")
        .header("Disposition-Notification-Options", DN_OPTIONS)
        .header("Content-Type", "application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m")
        .body(body)
}

/// Sends `count` copies of `msg` (each with its own Message-ID) and checks every MDN.
pub async fn load(client: &reqwest::Client, url: &str, msg: &As2Message, count: usize, concurrency: usize, max: Duration, tag: &str) -> Phase {
    let (client, url, body, mic, tag) = (client.clone(), url.to_string(), msg.body.clone(), msg.mic.clone(), tag.to_string());
    drive(count, concurrency, max, move |i| as2_request(&client, &url, body.clone(), &tag, i), move |st, ct, b| check_response(st, ct, b, &mic)).await
}

pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[idx.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

pub fn pct_f64(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[idx.clamp(1, sorted.len()) - 1]
}
