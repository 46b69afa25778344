//! End-to-end throughput of the node: `cargo bench --bench throughput`.
//!
//! Receiving (inbound.rs): the release `edinode` binary with a generated station/partner
//! configuration gets one pre-built AS2 message (1 KiB X12, signed sha-256, encrypted aes256-cbc
//! to RSA 2048 with PKCS#1 v1.5 key transport, signed synchronous MDN with sha-256 requested)
//! over and over from 16 concurrent senders, with a fresh Message-ID per request. The client
//! does no per-request crypto: every request reuses the same body. Every answer must be a
//! positive signed MDN carrying the message's MIC. Receivers, their runs alternating so drift
//! on the shared machine hits all of them, the median run by msg/s reported:
//! - embedded: the node with its local spool and state;
//! - rabbitmq: the node over RabbitMQ + Redis (amqp://guest:guest@127.0.0.1:5672/%2f,
//!   redis://127.0.0.1:6379/);
//! - django: django-pyas2 1.2.3 under gunicorn (2 sync workers, sqlite), the Python baseline
//!   of issue 12, configured with the same keys (django.rs, benches/django/).
//!
//! Floors (floor.rs), single thread in the bench process:
//! - floor: the CPU of the two RSA-2048 private-key operations the message needs (decrypt the
//!   content-encryption key, sign the MDN), median of many iterations; the receiving table
//!   gives each receiver's server CPU per message as a multiple of it;
//! - proto: the edinode_proto steps for the same message (classify, decrypt, verify, signed
//!   MDN).
//!
//! Then one large message (large.rs: 100 MiB of random bytes, same security) through embedded
//! mode, for the node's peak RSS (VmHWM).
//!
//! Then sending (two embedded nodes, A = station "alpha" whose partner is B = station "beta" at
//! B's /as2; sign sha256, encrypt aes256-cbc, signed synchronous MDN required):
//! - outbound (outbound.rs): 1 KiB documents submitted to A's POST /api/send from the
//!   concurrent senders, timed from the first submit to the last `sent` record on A;
//! - s3 (s3.rs): A's station has an S3 outbox on an in-process s3s-fs server
//!   (tests/common/s3server.rs) with pickup_age_secs = 0 and poll_secs = 0.2; files are dropped under AS2/send/alpha/beta/
//!   at once and timed from each file's write to its queueing and to its `sent` record.
//!
//! Then AS4 pulling (pulls.rs): one embedded node answers signed PullRequests (signed by the
//! bench before the clock starts) with queued 10 KiB user messages it signs.
//!
//! Environment knobs (defaults in brackets):
//! - BENCH_MODES [proto,floor,embedded,rabbitmq,django,large,outbound,s3,pulls];
//! - BENCH_MESSAGES [3000] measured messages per run, BENCH_WARMUP [200],
//!   BENCH_CONCURRENCY [16], BENCH_REPEATS [3], BENCH_PAYLOAD_BYTES [1024];
//! - BENCH_DJANGO_MESSAGES [600] and BENCH_DJANGO_WARMUP [50] for django (about 50 msg/s);
//!   BENCH_DJANGO_VENV [$CARGO_TARGET_DIR/bench-django-venv], made by benches/django/setup.sh;
//! - BENCH_FLOOR_ITERS [2000] iterations of the RSA floor;
//! - BENCH_LARGE_MIB [100] sizes in MiB, comma-separated, e.g. 100,1024 (0 skips the large message);
//!   each size is received (large.rs) and then sent from node A to node B (BENCH_LARGE_OUT=0 skips
//!   the sending);
//! - BENCH_OUTBOUND_MESSAGES [1000] measured documents per outbound run (after
//!   BENCH_OUTBOUND_WARMUP [50]), BENCH_S3_FILES [200] files per s3 run;
//! - BENCH_PULLS [2000] measured PullRequests per pulls run (after BENCH_WARMUP),
//!   BENCH_PULL_PAYLOAD_BYTES [10240];
//! - BENCH_MAX_SECS [60]: a measured phase stops issuing requests after this long and reports
//!   what it got (warm-up gets a third of it);
//! - EDINODE_BIN: the node binary (default: the one cargo built for this bench);
//! - BENCH_NODE_LOG: print the node's log after the large message;
//! - TMPDIR: where node data goes (spool, blobs, inbox); `TMPDIR=/dev/shm` measures the node
//!   without the disk's file system.
//!
//! The node's own log level follows RUST_LOG when set (node default otherwise); its log is kept
//! in the run's temporary directory and failures print its warnings.

mod common;
mod django;
mod floor;
mod inbound;
mod large;
mod load;
mod outbound;
mod pulls;
mod s3;
/// The integration tests' helpers: keys and certificates, the in-process S3 server.
#[path = "../../tests/common/mod.rs"]
mod testkit;

use common::*;
use std::time::{Duration, Instant};

const DEFAULT_MODES: &str = "proto,floor,embedded,rabbitmq,django,large,outbound,s3,pulls";

fn main() {
    // `cargo bench` passes "--bench"; there is nothing to filter, so arguments are ignored.
    let total = Instant::now();
    let s = Settings {
        messages: env_usize("BENCH_MESSAGES", 3000),
        warmup: env_usize("BENCH_WARMUP", 200),
        concurrency: env_usize("BENCH_CONCURRENCY", 16).max(1),
        max: Duration::from_secs(env_usize("BENCH_MAX_SECS", 60) as u64),
        tck: clk_tck(),
    };
    let modes = std::env::var("BENCH_MODES").unwrap_or_else(|_| DEFAULT_MODES.into());
    let want = |m: &str| modes.split(',').any(|x| x.trim() == m);
    let load_start = loadavg();
    let bin = locate_binary();
    let keydir = tempfile::Builder::new().prefix("edinode-bench-keys-").tempdir().expect("tempdir");
    let keys = Keys { station: identity(keydir.path(), "edinode"), client: identity(keydir.path(), "bench") };
    let payload_bytes = env_usize("BENCH_PAYLOAD_BYTES", 1024);
    let msg = build_message(x12_payload(payload_bytes), &keys);
    let mut cx = Ctx {
        rt: tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"),
        bin,
        keydir: keydir.path().to_path_buf(),
        keys,
        msg,
        s,
        repeats: env_usize("BENCH_REPEATS", 3).max(1),
        payload_bytes,
        keep: Vec::new(),
        errors: Vec::new(),
    };
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let fs = describe_fs(&std::env::temp_dir());
    eprintln!(
        "edinode throughput: {} ({cpus} CPUs), node data under {} on {fs}, {} B payload -> {} B body ({SECURITY}), {} senders, {} warm-up + {} measured messages per run, {} runs per mode; load average {load_start}",
        cx.bin.display(),
        std::env::temp_dir().display(),
        cx.payload_bytes,
        cx.msg.body.len(),
        cx.s.concurrency,
        cx.s.warmup,
        cx.s.messages,
        cx.repeats
    );

    let costs = if want("proto") { floor::proto_costs(&cx.keys, &cx.msg) } else { vec![] };
    let rsa = want("floor").then(|| floor::rsa_floor(&cx.keys, env_usize("BENCH_FLOOR_ITERS", 2000)));
    let receivers: Vec<inbound::Mode> = [("embedded", inbound::Mode::Embedded), ("rabbitmq", inbound::Mode::Rabbit), ("django", inbound::Mode::Django)]
        .into_iter()
        .filter(|(name, _)| want(name))
        .map(|(_, m)| m)
        .collect();
    let received = inbound::bench(&mut cx, &receivers);
    let large = if want("large") { large::bench(&mut cx) } else { Vec::new() };
    let large_out = if want("large") { large::bench_out(&mut cx) } else { Vec::new() };
    let pk = (want("outbound") || want("s3")).then(|| outbound::PairKeys { alpha: identity(&cx.keydir, "alpha"), beta: identity(&cx.keydir, "beta") });
    let sent = match &pk {
        Some(pk) if want("outbound") => outbound::bench(&mut cx, pk),
        _ => None,
    };
    let s3_results = match &pk {
        Some(pk) if want("s3") => s3::bench(&mut cx, pk),
        _ => None,
    };
    let pulled = if want("pulls") { pulls::bench(&mut cx) } else { None };
    let load_end = loadavg();

    // The report, in Markdown (each table only for the modes that ran).
    println!();
    println!("Machine: {cpus} CPUs shared by the client, the servers and the broker; load average at the start {load_start}, at the end {load_end}; node data on {fs}.");
    inbound::print(&cx, &received, rsa.as_ref());
    floor::print(&costs, rsa.as_ref());
    large::print(&large);
    large::print_out(&large_out);
    if let Some(o) = &sent {
        outbound::print(&cx, o);
    }
    if let Some(r) = &s3_results {
        s3::print(&cx, r);
    }
    if let Some(p) = &pulled {
        pulls::print(&cx, p);
    }
    if !cx.errors.is_empty() {
        println!();
        for e in &cx.errors {
            println!("- {e}");
        }
    }
    println!();
    drop(cx);
    eprintln!("total bench time {:.0} s", total.elapsed().as_secs_f64());
}
