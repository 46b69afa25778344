//! The edinode node: CLI, configuration, transport (RabbitMQ and embedded), storage adapters and
//! the wiring of actors.
//!
//! - [`config`]: settings and the directory of stations and partners.
//! - [`transport`]: durable queues (RabbitMQ or the embedded spool) and reply routing.
//! - [`storage`]: blob store and state store adapters (Redis or local).
//! - [`runner`]: runs an actor on its queue: ack after outputs are durable, retries, dead letters.
//! - [`http`]: the partner-facing and admin listeners.
//! - [`as4`]: AS4 pulling: `POST /as4`, `POST /api/as4/submit` and `edinode.as4.submit`.
//! - [`intake`]: loops that consume no queue: MDN deadlines, S3 outbox pollers.
//! - [`telemetry`]: logs, OpenTelemetry traces and trace-context propagation.
//! - [`node`]: wiring: the node context, the transport and the actors.
//! - [`certs`]: the certificates of the configuration: expiry warnings, refusal, metric.
//! - [`reload`]: stations, partners and certificates reloaded on SIGHUP or a file change.
//! - [`tracking`]: what the admin API and the console show and do (messages, dead letters, resend).
//! - [`console`]: the web console on the admin listener.
//! - [`init`]: `edinode init` (a first configuration) and `edinode send`.

pub mod as4;
pub mod certs;
pub mod config;
pub mod console;
pub mod http;
pub mod intake;
pub mod init;
pub mod node;
pub mod reload;
pub mod runner;
pub mod storage;
pub mod telemetry;
pub mod tracking;
pub mod transport;
