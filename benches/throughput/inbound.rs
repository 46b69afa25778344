//! Receiving: the same signed + encrypted message posted by 16 concurrent senders to the node
//! (embedded, or over RabbitMQ + Redis) and to django-pyas2, each answer a signed synchronous
//! MDN that must be positive and carry the message's MIC. Runs of the receivers alternate
//! (E R D E R D ...) so slow drift on the shared machine hits all of them; each row reports the
//! median run by msg/s. The table also gives each receiver's CPU per message against the RSA
//! floor and checks the goals of issue 12.

use crate::common::*;
use crate::django::Gunicorn;
use crate::floor::RsaFloor;
use crate::load::*;
use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Embedded,
    Rabbit,
    Django,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Embedded => "edinode embedded (spool + local state)",
            Mode::Rabbit => "edinode RabbitMQ + Redis",
            Mode::Django => "django-pyas2 1.2.3, gunicorn 2 sync workers, sqlite",
        }
    }
}

#[derive(Clone)]
pub struct RunResult {
    pub done: usize,
    pub failures: usize,
    pub samples: Vec<String>,
    pub msg_per_s: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    /// The receiver's CPU per message: the node, or gunicorn's master and workers.
    pub node_cpu_ms: f64,
    /// The kernel's part of node_cpu_ms (stime).
    pub node_sys_ms: f64,
    pub client_cpu_ms: f64,
    /// RabbitMQ (beam.smp) + redis-server CPU per message, RabbitMQ mode only.
    pub broker_cpu_ms: Option<f64>,
    pub elapsed: f64,
    pub log_problems: (usize, Vec<String>),
    /// How the server ended, if it did before the end of the run.
    pub node_died: Option<String>,
    /// The load average (1 min) when the measured phase started and when it ended.
    pub load: (f64, f64),
}

/// One receiver row: the median run, every run's msg/s, the failures of all runs.
pub struct Row {
    pub mode: Mode,
    pub median: RunResult,
    pub all: Vec<RunResult>,
}

/// The server under load.
enum Server {
    Node(Node),
    Django(Gunicorn),
}

impl Server {
    fn url(&self) -> String {
        match self {
            Server::Node(n) => format!("{}/as2", n.url),
            Server::Django(g) => format!("{}/pyas2/as2receive", g.url),
        }
    }
    /// (user, system) CPU ticks of the server's processes.
    fn cpu(&self) -> (u64, u64) {
        match self {
            Server::Node(n) => cpu_split(&n.pid().to_string()).unwrap_or((0, 0)),
            Server::Django(g) => g.cpu(),
        }
    }
    fn exit_description(&mut self) -> Option<String> {
        match self {
            Server::Node(n) => n.exit_description(),
            Server::Django(g) => g.exit_description(),
        }
    }
    fn log_problems(&self, n: usize) -> (usize, Vec<String>) {
        match self {
            Server::Node(node) => node.log_problems(n),
            Server::Django(g) => g.log_problems(n),
        }
    }
}

/// Messages and warm-up per run: django gets fewer (it does about 50 msg/s).
fn counts(cx: &Ctx, mode: Mode) -> (usize, usize) {
    match mode {
        Mode::Django => (env_usize("BENCH_DJANGO_MESSAGES", 600), env_usize("BENCH_DJANGO_WARMUP", 50)),
        _ => (cx.s.messages, cx.s.warmup),
    }
}

/// One run in a fresh server with a fresh data directory. The directory is removed only when
/// the bench ends: deleting thousands of files just before the next run makes that run's file
/// creation slower on some file systems (ext4 without a journal skips recently freed inodes),
/// which would penalise whichever run comes next.
fn run_once(cx: &mut Ctx, mode: Mode, run: usize, venv: Option<&std::path::Path>) -> Result<RunResult, String> {
    let dir = cx.tempdir("edinode-bench-")?;
    let (messages, warmup) = counts(cx, mode);
    let s = &cx.s;
    let prefix = format!("edinode-bench-{:08x}:", rand_u32());
    let mut server = match (mode, venv) {
        (Mode::Django, Some(venv)) => Server::Django(Gunicorn::start(venv, &dir, &cx.keys)?),
        (Mode::Django, None) => return Err("no django-pyas2 venv".into()),
        _ => {
            if mode == Mode::Rabbit {
                purge_queues();
            }
            let config = write_config(&dir, &cx.keys, (mode == Mode::Rabbit).then_some(prefix.as_str()), 120);
            Server::Node(start_node(&cx.bin, &config, &dir)?)
        }
    };
    let url = server.url();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(150))
        .pool_max_idle_per_host(s.concurrency * 2)
        .build()
        .map_err(|e| e.to_string())?;
    let tag = format!("{:08x}", rand_u32());
    let warm = cx.rt.block_on(load(&client, &url, &cx.msg, warmup, s.concurrency, s.max / 3, &format!("{tag}w")));
    if warm.failures.count > 0 {
        eprintln!("  warm-up: {} of {} failed, e.g. {:?}", warm.failures.count, warm.done, warm.failures.samples.first());
    }
    let broker_pids = if mode == Mode::Rabbit { pids_named(&["beam.smp", "redis-server"]) } else { vec![] };
    let me = std::process::id().to_string();
    let load0 = loadavg().0;
    let (n0, c0, b0) = (server.cpu(), cpu_ticks(&me).unwrap_or(0), sum_ticks(&broker_pids));
    let mut phase = cx.rt.block_on(load(&client, &url, &cx.msg, messages, s.concurrency, s.max, &format!("{tag}m")));
    let (n1, c1, b1) = (server.cpu(), cpu_ticks(&me).unwrap_or(0), sum_ticks(&broker_pids));
    let load1 = loadavg().0;
    let node_died = server.exit_description();
    let log_problems = server.log_problems(5);
    drop(server);
    if mode == Mode::Rabbit {
        redis_cleanup(&prefix);
    }
    phase.latencies.sort();
    let done = phase.done.max(1) as f64;
    let per_msg = |ticks: u64| ticks as f64 * 1000.0 / s.tck / done;
    let r = RunResult {
        done: phase.done,
        failures: phase.failures.count,
        samples: phase.failures.samples,
        msg_per_s: phase.done as f64 / phase.elapsed.as_secs_f64(),
        p50: percentile(&phase.latencies, 50.0),
        p99: percentile(&phase.latencies, 99.0),
        max: phase.latencies.last().map(|d| d.as_secs_f64() * 1000.0).unwrap_or(f64::NAN),
        node_cpu_ms: per_msg((n1.0 + n1.1).saturating_sub(n0.0 + n0.1)),
        node_sys_ms: per_msg(n1.1.saturating_sub(n0.1)),
        client_cpu_ms: per_msg(c1.saturating_sub(c0)),
        broker_cpu_ms: (mode == Mode::Rabbit).then(|| per_msg(b1.saturating_sub(b0))),
        elapsed: phase.elapsed.as_secs_f64(),
        log_problems,
        node_died,
        load: (load0, load1),
    };
    eprintln!(
        "  {} run {run}: {} msgs in {:.1} s = {:.0} msg/s, {} failed, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, server {:.2} CPU-ms/msg ({:.2} in the kernel), client {:.2} CPU-ms/msg{}; load {:.2} -> {:.2}",
        mode.label(),
        r.done,
        r.elapsed,
        r.msg_per_s,
        r.failures,
        r.p50,
        r.p99,
        r.max,
        r.node_cpu_ms,
        r.node_sys_ms,
        r.client_cpu_ms,
        r.broker_cpu_ms.map(|b| format!(", broker+redis {b:.2} CPU-ms/msg")).unwrap_or_default(),
        load0,
        load1
    );
    for f in &r.samples {
        eprintln!("    failure: {f}");
    }
    if let Some(how) = &r.node_died {
        eprintln!("    the server ended during the run: {how}");
    }
    if r.log_problems.0 > 0 {
        eprintln!("    server log: {} WARN/ERROR lines, first: ", r.log_problems.0);
        for l in &r.log_problems.1 {
            eprintln!("      {l}");
        }
    }
    Ok(r)
}

/// Runs the receivers `modes` (alternating), `repeats` runs each.
pub fn bench(cx: &mut Ctx, modes: &[Mode]) -> Vec<Row> {
    let mut run_modes = Vec::new();
    let mut venv = None;
    for &m in modes {
        match m {
            Mode::Rabbit if !(tcp_up("127.0.0.1:5672") && tcp_up("127.0.0.1:6379")) => {
                cx.fail("RabbitMQ + Redis: skipped, 127.0.0.1:5672 or 127.0.0.1:6379 does not answer".into());
                continue;
            }
            Mode::Django => match crate::django::venv() {
                Ok(v) => venv = Some(v),
                Err(e) => {
                    cx.fail(format!("django-pyas2: skipped, {e}"));
                    continue;
                }
            },
            _ => {}
        }
        run_modes.push(m);
    }
    for &m in &run_modes {
        let (n, w) = counts(cx, m);
        eprintln!("{}: {w} warm-up + {n} measured messages per run, {} senders", m.label(), cx.s.concurrency);
    }
    let mut runs: Vec<Vec<RunResult>> = run_modes.iter().map(|_| Vec::new()).collect();
    for i in 1..=cx.repeats {
        for (k, &mode) in run_modes.iter().enumerate() {
            match run_once(cx, mode, i, venv.as_deref()) {
                Ok(r) => runs[k].push(r),
                Err(e) => cx.fail(format!("{} run {i}: {e}", mode.label())),
            }
        }
    }
    run_modes
        .into_iter()
        .zip(runs)
        .filter_map(|(mode, all)| {
            // The median of the runs without failures (a run that failed measures something else).
            let median = median_run(&all, |r| r.failures == 0 && r.node_died.is_none(), |r| r.msg_per_s)?;
            Some(Row { mode, median, all })
        })
        .collect()
}

fn fmt_opt(v: Option<f64>, digits: usize, suffix: &str) -> String {
    v.filter(|v| v.is_finite()).map(|v| format!("{v:.digits$}{suffix}")).unwrap_or_else(|| "-".into())
}

pub fn print(cx: &Ctx, rows: &[Row], floor: Option<&RsaFloor>) {
    if rows.is_empty() && floor.is_none() {
        return;
    }
    let django = rows.iter().find(|r| r.mode == Mode::Django).map(|r| r.median.msg_per_s);
    let (n, w) = counts(cx, Mode::Embedded);
    let (dn, dw) = counts(cx, Mode::Django);
    println!();
    println!(
        "Receiving: {} B X12 payload ({} B body), {SECURITY}; {} concurrent senders, one load generator for every receiver; per run {w} warm-up + {n} measured messages for edinode, {dw} + {dn} for django-pyas2 (fewer: it is an order of magnitude slower, and its runs stay short); runs of the receivers alternate; each row is the median run by msg/s of {} runs, every run's msg/s listed; `http.workers = 2` for the node, `--workers 2` (sync) for gunicorn, django-pyas2 on sqlite in WAL mode with immediate transactions (benches/django/benchsite.py; with Django's sqlite defaults about a fifth of its answers at 16 senders are HTTP 500 \"database is locked\"). Server CPU = the node's process, or gunicorn's master and workers; broker+Redis = beam.smp + redis-server.",
        cx.payload_bytes,
        cx.msg.body.len(),
        cx.s.concurrency,
        cx.repeats
    );
    println!();
    println!("| Receiver | msg/s | p50 ms | p99 ms | server CPU ms/msg | x RSA floor | broker+Redis CPU ms/msg | speedup vs django-pyas2 | msg/s of all runs | failures (median run; all runs) | load 1 min at start / end of each run |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|");
    for row in rows {
        let r = &row.median;
        let all: Vec<String> = row.all.iter().map(|x| format!("{:.0}", x.msg_per_s)).collect();
        let loads: Vec<String> = row.all.iter().map(|x| format!("{:.1}/{:.1}", x.load.0, x.load.1)).collect();
        let total_failures: usize = row.all.iter().map(|x| x.failures).sum();
        println!(
            "| {} | {:.0} | {:.1} | {:.1} | {:.2} | {} | {} | {} | {} | {} / {}; {} | {} |",
            row.mode.label(),
            r.msg_per_s,
            r.p50,
            r.p99,
            r.node_cpu_ms,
            fmt_opt(floor.map(|f| r.node_cpu_ms / f.ms), 1, "x"),
            fmt_opt(r.broker_cpu_ms, 2, ""),
            fmt_opt(django.map(|d| r.msg_per_s / d), 1, "x"),
            all.join(", "),
            r.failures,
            r.done,
            total_failures,
            loads.join(", ")
        );
    }
    if let Some(f) = floor {
        println!(
            "| RSA floor (2 RSA-2048 private ops, 1 thread, median of {}) | at most {:.0} per CPU | - | - | {:.3} | 1.0x | - | - | - | - | - |",
            f.iters,
            1000.0 / f.ms,
            f.ms
        );
    }
    print_goals(rows, floor);
}

/// The goals of issue 12, each PASS, FAIL or "n/a" (what it needs did not run).
fn print_goals(rows: &[Row], floor: Option<&RsaFloor>) {
    let get = |m: Mode| rows.iter().find(|r| r.mode == m).map(|r| &r.median);
    let (e, q, d) = (get(Mode::Embedded), get(Mode::Rabbit), get(Mode::Django));
    let verdict = |v: Option<(bool, String)>| match v {
        Some((true, s)) => format!("PASS ({s})"),
        Some((false, s)) => format!("FAIL ({s})"),
        None => "n/a (not measured in this run)".to_string(),
    };
    let goals = [
        ("embedded msg/s >= 20x django-pyas2", e.zip(d).map(|(e, d)| (e.msg_per_s >= 20.0 * d.msg_per_s, format!("{:.1}x", e.msg_per_s / d.msg_per_s)))),
        ("embedded node CPU <= 2.5x RSA floor", e.zip(floor).map(|(e, f)| (e.node_cpu_ms <= 2.5 * f.ms, format!("{:.1}x: {:.2} ms vs {:.3} ms", e.node_cpu_ms / f.ms, e.node_cpu_ms, f.ms)))),
        ("embedded p99 < 25 ms at 16 senders", e.map(|e| (e.p99 < 25.0, format!("{:.1} ms", e.p99)))),
        ("RabbitMQ msg/s >= 10x django-pyas2", q.zip(d).map(|(q, d)| (q.msg_per_s >= 10.0 * d.msg_per_s, format!("{:.1}x", q.msg_per_s / d.msg_per_s)))),
        ("RabbitMQ broker+Redis CPU <= 1.0 ms/msg", q.and_then(|q| q.broker_cpu_ms).map(|b| (b <= 1.0, format!("{b:.2} ms")))),
    ];
    println!();
    println!("Goals of issue 12 (median runs above):");
    println!();
    for (goal, v) in goals {
        println!("- {goal}: {}", verdict(v));
    }
}
