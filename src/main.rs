//! `edinode`: run the node (`serve`), check a configuration (`check-config`), write a first one
//! (`init`), and, through a running node's admin API, send files (`send`), track, resend and replay
//! messages (`messages`); `s3 check` tries a station's bucket integration.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "edinode", version, about = "AS2/AS4 message gateway node")]
struct Cli {
    /// Configuration file (TOML); EDINODE__SECTION__KEY variables override it.
    #[arg(long, global = true, env = "EDINODE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the node (all actors unless --actors says otherwise).
    Serve {
        /// Comma-separated actors (default: node.actors, "all"): http_receiver (the partner
        /// listener, with AS4 pulling), mime_unwrapper, decryptor, verifier, mdn_sender,
        /// mdn_poster (runs with mdn_sender unless chosen alone), deliverer, as2_sender,
        /// outbound_intake, mdn_monitor (asynchronous MDN deadlines), s3_outbox (station bucket
        /// pick-up).
        #[arg(long)]
        actors: Option<String>,
        /// Listen address (overrides http.listen).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Check the configuration and the key files it names.
    CheckConfig,
    /// Write a first configuration in DIR (default: edinode-demo): a station with a new key pair
    /// and certificate, and a loopback partner (the node itself).
    Init {
        dir: Option<PathBuf>,
        /// Port of the partner listener; the admin listener gets the next one.
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// Send files to a partner through a running node (admin API, token: admin.token) and wait
    /// for the outcome (the MDN).
    Send {
        #[arg(long)]
        partner: String,
        /// Station to send from (default: the partner's station).
        #[arg(long)]
        station: Option<String>,
        /// Seconds to wait for the outcome.
        #[arg(long, default_value_t = 120)]
        wait: u64,
        /// Admin API base URL (default: from admin.listen, or http.listen when that is empty).
        #[arg(long)]
        url: Option<String>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Track messages through the admin API of a running node (token: admin.token).
    Messages {
        #[command(subcommand)]
        cmd: MessagesCmd,
        /// Admin API base URL (default: from admin.listen, or http.listen when that is empty).
        #[arg(long)]
        url: Option<String>,
    },
    /// S3 integration tools.
    S3 {
        #[command(subcommand)]
        cmd: S3Cmd,
    },
}

#[derive(Subcommand)]
enum MessagesCmd {
    /// List messages, newest first.
    List {
        #[arg(long)]
        station: Option<String>,
        #[arg(long)]
        partner: Option<String>,
        #[arg(long)]
        direction: Option<String>,
        #[arg(long)]
        status: Option<String>,
        /// Unix ms.
        #[arg(long)]
        since: Option<i64>,
        #[arg(long)]
        until: Option<i64>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one message: summary, status history, MDN.
    Show { id: String },
    /// Send a failed outbound message again.
    Resend { id: String },
    /// Put dead-lettered work back on its queue (all, or one message's).
    Replay {
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(Subcommand)]
enum S3Cmd {
    /// Perform the operations the station's S3 integration needs and clean up after.
    Check {
        #[arg(long)]
        station: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Cmd::Init { dir, port }) = &cli.cmd {
        return init(dir.as_deref(), *port);
    }
    let (mut settings, src) = match edinode::config::load(cli.config.as_deref()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("edinode: configuration refused: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match cli.cmd.unwrap_or(Cmd::Serve { actors: None, listen: None }) {
        Cmd::Init { .. } => std::process::ExitCode::SUCCESS,
        Cmd::Send { partner, station, wait, url, files } => {
            let Some(p) = settings.partners.get(&partner) else {
                eprintln!("edinode: no partner named {partner} in {src} (partners: {})", settings.partners.keys().cloned().collect::<Vec<_>>().join(", "));
                return std::process::ExitCode::from(2);
            };
            let station = station.unwrap_or_else(|| p.station.clone());
            let base = url.unwrap_or_else(|| edinode::init::admin_url(&settings));
            let r = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(anyhow::Error::from).and_then(|rt| {
                rt.block_on(edinode::init::send(&base, &settings.admin.token, &station, &partner, &files, std::time::Duration::from_secs(wait)))
            });
            match r {
                Ok(true) => std::process::ExitCode::SUCCESS,
                Ok(false) => std::process::ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("edinode: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Cmd::CheckConfig => match edinode::reload::check(&settings, &src).and_then(|c| {
            c.warnings.iter().for_each(|w| println!("{w}"));
            edinode::config::actors(&settings.node.actors).map(|_| c.directory)
        }).and_then(|d| {
            // [as4]: the station and the authorization map at the path the node opens.
            let notes = edinode::as4::check_config(&settings, &d).map_err(|e| format!("{src}: {e}"))?;
            notes.iter().for_each(|n| println!("{n}"));
            Ok(d)
        }) {
            Ok(d) => match edinode::storage::report::backing_services(&settings) {
                Ok(lines) => {
                    println!("configuration OK: {} station(s), {} partner(s)", d.stations.len(), d.partners.len());
                    lines.iter().for_each(|l| println!("{l}"));
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("edinode: configuration refused: {src}: {e}");
                    std::process::ExitCode::from(2)
                }
            },
            Err(e) => {
                eprintln!("edinode: configuration refused: {e}");
                std::process::ExitCode::from(2)
            }
        },
        Cmd::Messages { cmd, url } => {
            let base = url.unwrap_or_else(|| edinode::init::admin_url(&settings));
            let token = settings.admin.token.clone();
            let (method, path) = match &cmd {
                MessagesCmd::List { station, partner, direction, status, since, until, limit } => {
                    let mut q = vec![format!("limit={limit}")];
                    for (k, v) in [("station", station), ("partner", partner), ("direction", direction), ("status", status)] {
                        if let Some(v) = v {
                            q.push(format!("{k}={v}"));
                        }
                    }
                    for (k, v) in [("since", since), ("until", until)] {
                        if let Some(v) = v {
                            q.push(format!("{k}={v}"));
                        }
                    }
                    ("GET", format!("/api/messages?{}", q.join("&")))
                }
                MessagesCmd::Show { id } => ("GET", format!("/api/messages/{id}")),
                MessagesCmd::Resend { id } => ("POST", format!("/api/messages/{id}/resend")),
                MessagesCmd::Replay { id } => ("POST", format!("/api/dead/replay{}", id.as_ref().map(|i| format!("?id={i}")).unwrap_or_default())),
            };
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("edinode: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            let r = rt.block_on(async {
                let c = reqwest::Client::new();
                let req = if method == "GET" { c.get(format!("{base}{path}")) } else { c.post(format!("{base}{path}")) };
                let resp = req.bearer_auth(&token).send().await?;
                let status = resp.status();
                Ok::<_, reqwest::Error>((status, resp.text().await?))
            });
            match r {
                Ok((status, body)) => {
                    let pretty = serde_json::from_str::<serde_json::Value>(&body).ok().and_then(|v| serde_json::to_string_pretty(&v).ok()).unwrap_or(body);
                    println!("{pretty}");
                    if status.is_success() { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE }
                }
                Err(e) => {
                    eprintln!("edinode: admin API at {base} not reachable: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Cmd::S3 { cmd: S3Cmd::Check { station } } => {
            let Some(st) = settings.stations.get(&station) else {
                eprintln!("edinode: no station named {station}");
                return std::process::ExitCode::from(2);
            };
            let Some(c) = st.s3.clone() else {
                eprintln!("edinode: station {station} has no [stations.{station}.s3] section");
                return std::process::ExitCode::from(2);
            };
            let as2 = st.as2_id.clone();
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("edinode: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match rt.block_on(edinode::node::s3_check(&as2, &c)) {
                Ok((_, warnings)) => {
                    for w in warnings {
                        println!("warning: {w}");
                    }
                    println!("S3 access check passed for station {station} (bucket {})", c.bucket);
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("edinode: S3 access check failed for station {station}: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Cmd::Serve { actors, listen } => {
            if let Some(a) = actors {
                settings.node.actors = a;
            }
            if let Some(l) = listen {
                settings.http.listen = l;
            }
            if settings.stations.is_empty() {
                eprintln!("{}", NO_STATION);
            }
            // An actix System (actors, supervisors, the CPU SyncArbiter) on tokio's multi-threaded
            // runtime, where the stage handlers and all IO run.
            let system = actix_rt::System::with_tokio_rt(|| {
                tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap_or_else(|e| {
                    eprintln!("edinode: cannot start runtime: {e}");
                    std::process::exit(1)
                })
            });
            let r = system.block_on(async move {
                // The OTLP exporter needs the runtime; it flushes when `telemetry` drops.
                let telemetry = edinode::telemetry::init();
                let node = edinode::node::build(settings, &src, cli.config).await?;
                let r = node.run().await;
                telemetry.flush();
                r
            });
            match r {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("edinode: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

const NO_STATION: &str = "edinode: no station is configured, so this node can neither receive nor send AS2 messages.
  Write a first configuration (a station with a new key pair, and a loopback partner):
      edinode init edinode-demo
  then run the node with it:
      edinode --config edinode-demo/edinode.toml serve
  and send a first file from another terminal:
      edinode --config edinode-demo/edinode.toml send --partner loopback FILE
  (from the sources: cargo run --release -- init edinode-demo, and so on)";

/// `edinode init`: write the configuration and say what to do next.
fn init(dir: Option<&std::path::Path>, port: u16) -> std::process::ExitCode {
    let dir = dir.unwrap_or(std::path::Path::new("edinode-demo"));
    match edinode::init::init(dir, port) {
        Ok(w) => {
            let c = w.config.display();
            println!("wrote {c}");
            println!("  station demo (AS2 id {}): key {}, certificate {}", edinode::init::DEMO_AS2_ID, w.key.display(), w.cert.display());
            println!("  partner loopback: the node itself, at http://127.0.0.1:{port}/as2");
            println!("next:");
            println!("  edinode --config {c} serve");
            println!("  edinode --config {c} send --partner loopback FILE    (in another terminal)");
            println!("  the file lands in {}/demo/loopback/; the console is at http://127.0.0.1:{}/console (token: admin.token in {c})", w.inbox.display(), port.wrapping_add(1));
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("edinode: init: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
