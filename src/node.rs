//! Wiring: builds the NodeContext from settings, picks the transport and state store (RabbitMQ
//! and Redis, or the embedded spool and local state), starts the selected actors and the HTTP
//! listener.

use crate::config::{self, Settings};
use crate::http::{self, HttpState, Waiters};
use crate::runner::{self, RetryPolicy};
use crate::storage::{LocalState, RedisState};
use crate::transport::{local::LocalTransport, rabbit::RabbitTransport, Transport};
use actix_web::{web, App, HttpServer};
use edinode_actors::{Actor, Limits, NodeContext, StateStore};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The most an admin request body read whole may take (128 MiB).
const BUFFERED_ADMIN_BODY: usize = 128 << 20;

/// A started node.
pub struct Node {
    pub cx: NodeContext,
    pub transport: Arc<dyn Transport>,
    pub settings: Settings,
    /// Stations whose S3 integration was refused at start-up, with the reason.
    pub s3_refused: Arc<BTreeMap<String, String>>,
    /// The certificates of the directory in force (replaced by a reload).
    pub certs: crate::certs::Inventory,
    /// The configuration file, read again on reload.
    pub config_file: Option<std::path::PathBuf>,
}

fn node_id(s: &Settings) -> String {
    if !s.node.id.is_empty() {
        return s.node.id.clone();
    }
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "edinode".into());
    format!("{}-{}", host, std::process::id())
}

/// CPU workers: as configured, or one per core.
fn cpu_workers(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// The S3 settings of a station.
pub fn s3_settings(c: &crate::config::S3Config) -> crate::storage::s3::S3Settings {
    crate::storage::s3::S3Settings {
        bucket: c.bucket.clone(),
        region: c.region.clone(),
        endpoint: c.endpoint.clone(),
        access_key: c.access_key.clone(),
        secret_key: c.secret_key.as_ref().map(|k| k.expose().to_string()),
    }
}

/// Run a station's S3 access check: Ok(warnings) or the failure naming operation and permission.
pub async fn s3_check(station_as2: &str, c: &crate::config::S3Config) -> anyhow::Result<(crate::storage::s3::S3Store, Vec<String>)> {
    let store = crate::storage::s3::S3Store::new(&s3_settings(c)).await?;
    // Without outbound pick-up the integration only writes under as2gateway/: prove only that.
    let outbound = c.outbound.then(|| format!("AS2/send/{station_as2}/"));
    let warnings = store.check(&format!("as2gateway/{station_as2}/"), outbound.as_deref()).await.map_err(|f| anyhow::anyhow!("{f}"))?;
    Ok((store, warnings))
}

/// Stations whose S3 integration passed its access check at start-up, and those refused with
/// the reason (logged with the operation and permission that failed, shown by /readyz).
async fn buckets(settings: &Settings) -> (std::collections::HashMap<String, edinode_actors::StationBucket>, BTreeMap<String, String>) {
    let mut out = std::collections::HashMap::new();
    let mut refused = BTreeMap::new();
    for (name, st) in &settings.stations {
        let Some(c) = &st.s3 else { continue };
        match s3_check(&st.as2_id, c).await {
            Ok((store, warnings)) => {
                for w in warnings {
                    tracing::warn!(message = "S3 access check warning.", station = %name, warning = %w);
                }
                tracing::info!(message = "S3 integration enabled.", station = %name, bucket = %c.bucket, inbound = c.inbound, outbound = c.outbound);
                out.insert(
                    name.clone(),
                    edinode_actors::StationBucket {
                        store: Arc::new(store),
                        inbound: c.inbound,
                        outbound: c.outbound,
                        folders: c.folder_structure,
                        pickup_age_ms: (c.pickup_age_secs * 1000.0) as i64,
                        steady_ms: (c.steady_secs * 1000.0) as i64,
                        poll_ms: (c.poll_secs * 1000.0).max(50.0) as u64,
                    },
                );
            }
            Err(error) => {
                tracing::error!(message = "S3 integration refused: the access check failed.", station = %name, bucket = %c.bucket, %error);
                refused.insert(name.clone(), format!("{error:#}"));
            }
        }
    }
    (out, refused)
}

/// Build the node from `settings`, loaded from the file `config_file` (None: defaults and
/// environment only).
pub async fn build(settings: Settings, src: &str, config_file: Option<std::path::PathBuf>) -> anyhow::Result<Node> {
    let checked = crate::reload::check(&settings, src).map_err(anyhow::Error::msg)?;
    crate::reload::log_warnings(&checked.warnings);
    let directory = checked.directory;
    let data = settings.node.data_dir.clone();
    let fsync = settings.spool.fsync;
    // Temporary inbox files of deliveries cut short (kill -9); younger ones may be another
    // node's write in progress.
    let swept = edinode_actors::files::sweep_temp(&edinode_actors::files::inbox_temp_dir(&settings.node.inbox), Duration::from_secs(3600));
    if swept > 0 {
        tracing::info!(message = "Removed temporary inbox files left by an interrupted delivery.", count = swept);
    }
    let blobs = crate::storage::blobs::open(&settings.blobs, &data, fsync).await?;
    let state: Arc<dyn StateStore> = if settings.redis.url.is_empty() {
        Arc::new(LocalState::open(&data.join("state.jsonl"), fsync)?)
    } else {
        Arc::new(RedisState::connect(&settings.redis.url, &settings.redis.prefix).await?)
    };
    let transport: Arc<dyn Transport> = if settings.rabbitmq.url.is_empty() {
        Arc::new(LocalTransport::open(&data.join("spool"), settings.spool.fsync)?.with_events_log(&data.join("events.jsonl")))
    } else {
        Arc::new(RabbitTransport::connect(&settings.rabbitmq.url).await?)
    };
    let l = &settings.limits;
    let limits = Limits {
        mime: edinode_proto::mime::MimeLimits { max_header_bytes: l.max_header_bytes, ..Default::default() },
        max_depth: l.max_mime_depth,
        max_decompressed: l.max_decompressed_bytes,
        inline_threshold: l.inline_threshold_bytes,
        stream_threshold: l.stream_threshold_bytes,
        duplicate_ttl_secs: l.duplicate_retention_days * 24 * 3600,
    };
    let (enabled, s3_refused) = buckets(&settings).await;
    let directory = Arc::new(directory);
    let cx = NodeContext {
        node_id: node_id(&settings),
        directories: edinode_actors::DirectorySlot::new(directory.clone()),
        directory,
        blobs,
        state,
        limits,
        // Outbound calls go only where configuration points: never follow a redirect.
        http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?,
        inbox: settings.node.inbox.clone(),
        reporting_ua: settings.node.reporting_ua.clone(),
        mdn_post_attempts: settings.mdn.async_post_attempts,
        metrics: Arc::new(edinode_actors::metrics::Metrics::new()),
        buckets: Arc::new(enabled),
        fsync,
        cpu: edinode_actors::runtime::CpuPool::start(cpu_workers(settings.node.cpu_workers)),
    };
    Ok(Node { cx, transport, settings, s3_refused: Arc::new(s3_refused), certs: crate::certs::Inventory::new(checked.certs), config_file })
}

/// Raise the open-file limit to its hard maximum and fit the connection limit under it: each
/// connection holds a descriptor, and RabbitMQ, Redis, the spool and blob files need some too.
/// Returns the per-worker connection limit to use (warns when it had to be lowered).
fn fd_budget(workers: usize, wanted_per_worker: usize) -> usize {
    const RESERVED: u64 = 256;
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return wanted_per_worker;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    let needed = (workers * wanted_per_worker) as u64 + RESERVED;
    if lim.rlim_cur >= needed {
        return wanted_per_worker;
    }
    let fit = (lim.rlim_cur.saturating_sub(RESERVED) / workers as u64).max(16) as usize;
    tracing::warn!(
        message = "The open-file limit is too low for the configured connections; lowering http.max_connections.",
        nofile = lim.rlim_cur,
        needed,
        max_connections_per_worker = fit,
        hint = "raise it (ulimit -n, LimitNOFILE=) to workers x max_connections + 256",
    );
    fit
}

/// The HTTPS listener's TLS setup; with a client CA, partners must present a certificate it
/// issued.
fn tls_acceptor(h: &crate::config::HttpSettings) -> anyhow::Result<openssl::ssl::SslAcceptorBuilder> {
    use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod, SslVerifyMode};
    let (Some(cert), Some(key)) = (&h.tls_cert, &h.tls_key) else {
        anyhow::bail!("tls_listen needs tls_cert and tls_key");
    };
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
    b.set_private_key_file(key, SslFiletype::PEM)?;
    b.set_certificate_chain_file(cert)?;
    if let Some(ca) = &h.tls_client_ca {
        b.set_ca_file(ca)?;
        b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    }
    Ok(b)
}

/// Starts a consumer whose queue is open.
type Start = Box<dyn FnOnce() -> tokio::task::JoinHandle<()> + Send>;

impl Node {
    /// Open `actor`'s queue if it is selected (the embedded spool replays here); the returned
    /// start runs it.
    async fn consumer<A: Actor>(&self, selected: &dyn Fn(&str) -> bool, actor: A, prefetch: u16, retry: RetryPolicy) -> anyhow::Result<Option<Start>> {
        if !selected(A::BINDING.name) {
            return Ok(None);
        }
        let rx = self.transport.consume(A::BINDING.queue, prefetch).await?;
        let (cx, t) = (self.cx.clone(), self.transport.clone());
        Ok(Some(Box::new(move || runner::spawn(actor, cx, t, rx, usize::from(prefetch), retry))))
    }

    /// Start the selected actors; returns once they consume. Then serve HTTP if selected.
    pub async fn run(self) -> anyhow::Result<()> {
        let actors = config::actors(&self.settings.node.actors).map_err(anyhow::Error::msg)?;
        let retry = RetryPolicy { max_attempts: self.settings.rabbitmq.max_attempts.max(1), base: Duration::from_millis(self.settings.rabbitmq.retry_base_ms) };
        let prefetch = self.settings.rabbitmq.prefetch;
        // The MdnPoster goes with the MdnSender unless chosen on its own.
        let has = |n: &str| actors.iter().any(|a| a == n) || (n == "mdn_poster" && actors.iter().any(|a| a == "mdn_sender"));
        // Open every consumer first (the embedded spool replays here), then start processing.
        let mut pending = Vec::new();
        macro_rules! consumer {
            ($actor:expr) => {
                consumer!($actor, prefetch, retry)
            };
            ($actor:expr, $prefetch:expr, $retry:expr) => {
                if let Some(start) = self.consumer(&has, $actor, $prefetch, $retry.clone()).await? {
                    pending.push(start);
                }
            };
        }
        let m = &self.settings.mdn;
        let mdn_retry = RetryPolicy { max_attempts: m.async_post_attempts.max(1), base: Duration::from_millis(m.async_retry_base_ms) };
        let mdn_poster = edinode_actors::mdn_poster::MdnPoster { timeout: Duration::from_secs(m.async_post_timeout_secs.max(1)) };
        use edinode_actors::*;
        consumer!(mime_unwrapper::MimeUnwrapper);
        consumer!(decryptor::Decryptor);
        consumer!(verifier::Verifier);
        consumer!(mdn_sender::MdnSender);
        consumer!(mdn_poster, m.async_post_concurrency.max(1), mdn_retry);
        consumer!(deliverer::Deliverer);
        consumer!(as2_sender::As2Sender::default());
        consumer!(outbound_intake::OutboundIntake);
        if has("s3_outbox") {
            for (station, bucket) in self.cx.buckets.iter().filter(|(_, b)| b.outbound) {
                let (cx, t, station, bucket) = (self.cx.clone(), self.transport.clone(), station.clone(), bucket.clone());
                pending.push(Box::new(move || tokio::spawn(crate::intake::poll_s3_outbox(cx, t, station, bucket))) as Start);
            }
        }
        if has("mdn_monitor") {
            let (cx, t) = (self.cx.clone(), self.transport.clone());
            pending.push(Box::new(move || tokio::spawn(crate::intake::monitor_mdn_deadlines(cx, t))));
        }
        let handles: Vec<_> = pending.into_iter().map(|f| f()).collect();
        tokio::spawn(crate::storage::sweep::run(self.cx.clone(), self.settings.blobs.clone()));
        let reloader = crate::reload::Reloader { file: self.config_file.clone(), directories: self.cx.directories.clone(), certs: self.certs.clone(), started: self.settings.clone() };
        tokio::spawn(reloader.run());
        tracing::info!(message = "Node started.", node = %self.cx.node_id, actors = %actors.join(","), mode = if self.settings.rabbitmq.url.is_empty() { "embedded" } else { "rabbitmq" });
        if has("http_receiver") {
            self.serve_http().await?;
        } else {
            // No partner listener, but every process can still be probed and scraped: the admin
            // listener (admin.listen, else http.listen) serves /healthz, /readyz, /metrics and
            // the tracking API while the actors run.
            let listen = if self.settings.admin.listen.is_empty() { &self.settings.http.listen } else { &self.settings.admin.listen };
            let state = self.http_state(String::new(), Arc::new(Waiters::default()));
            let admin_server = self.admin_server(state, None, listen)?;
            println!("edinode ready");
            admin_server.await?;
            drop(handles);
        }
        Ok(())
    }

    /// What the HTTP handlers share.
    fn http_state(&self, reply_queue: String, waiters: Arc<Waiters>) -> web::Data<HttpState> {
        let admin = &self.settings.admin;
        web::Data::new(HttpState {
            cx: self.cx.clone(),
            transport: self.transport.clone(),
            waiters,
            reply_queue,
            sync_timeout: Duration::from_secs(self.settings.http.sync_mdn_timeout_secs),
            admin_token: (!admin.token.is_empty()).then(|| admin.token.clone()),
            redis_configured: !self.settings.redis.url.is_empty(),
            s3_refused: self.s3_refused.clone(),
            certs: self.certs.clone(),
            limits: http::HttpLimits {
                max_body: self.settings.http.max_body_bytes,
                max_send: self.settings.admin.max_send_bytes,
                body_idle: Duration::from_secs(self.settings.http.body_idle_timeout_secs.max(1)),
                body_total: Duration::from_secs(self.settings.http.body_timeout_secs.max(1)),
            },
        })
    }

    /// The admin listener on `listen`: /healthz, /readyz, /metrics, the tracking API, and the
    /// AS4 submit API when this process runs AS4. Prints its address for tests and scripts.
    fn admin_server(&self, state: web::Data<HttpState>, as4: Option<web::Data<crate::as4::As4State>>, listen: &str) -> anyhow::Result<actix_web::dev::Server> {
        let max_send = self.settings.admin.max_send_bytes;
        // The console only on a listener of its own: never where partners connect.
        let console = !self.settings.admin.listen.is_empty();
        let sessions = web::Data::new(crate::console::auth::Sessions::default());
        let admin_server = HttpServer::new(move || {
            let app = App::new()
                .app_data(state.clone())
                // Bodies read whole (the AS4 submit API, JSON); /api/send streams up to max_send.
                .app_data(web::PayloadConfig::new(max_send.min(BUFFERED_ADMIN_BODY)))
                .route("/healthz", web::get().to(http::healthz))
                .route("/readyz", web::get().to(http::readyz))
                .route("/metrics", web::get().to(http::metrics))
                .configure(http::admin_routes);
            let app = if console { app.app_data(sessions.clone()).configure(crate::console::routes) } else { app };
            match &as4 {
                Some(a) => app.app_data(a.clone()).configure(crate::as4::admin_routes),
                None => app,
            }
        })
        .workers(1)
        .bind(listen)
        .map_err(|e| anyhow::anyhow!("admin listener {listen}: {e} (each process on a host needs its own admin.listen, e.g. EDINODE__ADMIN__LISTEN)"))?;
        for a in admin_server.addrs() {
            println!("edinode admin listening on http://{a}");
        }
        Ok(admin_server.run())
    }

    async fn serve_http(&self) -> anyhow::Result<()> {
        let (reply_queue, mut replies) = self.transport.reply_queue(&self.cx.node_id).await?;
        let waiters = Arc::new(Waiters::default());
        let w2 = waiters.clone();
        tokio::spawn(async move {
            while let Some(b) = replies.recv().await {
                match edinode_proto::envelope::decode(&b) {
                    Ok(r) => w2.complete(r),
                    Err(error) => tracing::warn!(message = "Undecodable reply.", %error),
                }
            }
        });
        let admin = &self.settings.admin;
        let state = self.http_state(reply_queue, waiters);
        let max_body = self.settings.http.max_body_bytes;
        let h = &self.settings.http;
        let workers = h.workers.max(1);
        let max_connections = fd_budget(workers, h.max_connections);
        let listen = self.settings.http.listen.clone();
        let admin_on_partner_listener = admin.listen.is_empty();
        let as4 = web::Data::new(crate::as4::As4State::start(&self.cx, self.transport.clone(), &self.settings).await?);
        let (st2, as4_2) = (state.clone(), as4.clone());
        let server = HttpServer::new(move || {
            let app = App::new()
                .app_data(web::Data::new(http::PartnerListener))
                .app_data(st2.clone())
                .app_data(as4_2.clone())
                .configure(crate::as4::partner_routes)
                .app_data(web::PayloadConfig::new(max_body))
                .route("/as2", web::post().to(http::as2))
                .route("/healthz", web::get().to(http::healthz))
                .route("/readyz", web::get().to(http::readyz));
            if admin_on_partner_listener { app.configure(http::admin_routes).configure(crate::as4::admin_routes).route("/metrics", web::get().to(http::metrics)) } else { app }
        })
        .workers(workers)
        .max_connection_rate(256)
        .max_connections(max_connections)
        .client_request_timeout(Duration::from_secs(h.header_timeout_secs.max(1)))
        .client_disconnect_timeout(Duration::from_secs(2))
        .keep_alive(Duration::from_secs(h.keep_alive_secs.max(1)))
        .bind(&listen)?;
        for a in server.addrs() {
            // Tests and scripts read this line to find the port when listening on :0.
            println!("edinode listening on http://{a}");
        }
        let server = if self.settings.http.tls_listen.is_empty() {
            server
        } else {
            let acceptor = tls_acceptor(&self.settings.http).map_err(|e| anyhow::anyhow!("http.tls: {e}"))?;
            let s = server.bind_openssl(&self.settings.http.tls_listen, acceptor)?;
            for a in s.addrs().into_iter().skip(1) {
                println!("edinode tls listening on https://{a}");
            }
            s
        };
        let server = server.run();
        if admin_on_partner_listener {
            println!("edinode ready");
            server.await?;
            return Ok(());
        }
        let admin_server = self.admin_server(state.clone(), Some(as4.clone()), &admin.listen)?;
        println!("edinode ready");
        let (a, b) = futures::future::join(server, admin_server).await;
        a?;
        b?;
        Ok(())
    }
}
