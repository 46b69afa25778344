//! `edinode`: run the node, check a configuration.

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
        /// Comma-separated actors: http_receiver, mime_unwrapper, decryptor, verifier, mdn_sender, deliverer.
        #[arg(long)]
        actors: Option<String>,
        /// Listen address (overrides http.listen).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Check the configuration and the key files it names.
    CheckConfig,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,actix_server=warn,lapin=warn".into());
    if std::env::var("EDINODE_LOG_FORMAT").as_deref() == Ok("json") {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    let (mut settings, src) = match edinode::config::load(cli.config.as_deref()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("edinode: configuration refused: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match cli.cmd.unwrap_or(Cmd::Serve { actors: None, listen: None }) {
        Cmd::CheckConfig => match edinode::config::directory(&settings, &src).map_err(|e| e.to_string()).and_then(|d| {
            edinode::config::actors(&settings.node.actors).map(|_| d)
        }) {
            Ok(d) => {
                println!("configuration OK: {} station(s), {} partner(s)", d.stations.len(), d.partners.len());
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("edinode: configuration refused: {e}");
                std::process::ExitCode::from(2)
            }
        },
        Cmd::Serve { actors, listen } => {
            if let Some(a) = actors {
                settings.node.actors = a;
            }
            if let Some(l) = listen {
                settings.http.listen = l;
            }
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("edinode: cannot start runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            let r = rt.block_on(async move {
                let node = edinode::node::build(settings, &src).await?;
                node.run().await
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
