//! The edinode node: CLI, configuration, transport (RabbitMQ and embedded), storage adapters and
//! the wiring of actors.
//!
//! - [`config`]: settings and the directory of stations and partners.
//! - [`transport`]: durable queues (RabbitMQ or the embedded spool) and reply routing.
//! - [`storage`]: blob store and state store adapters (Redis or local).
//! - [`runner`]: runs an actor on its queue: ack after outputs are durable, retries, dead letters.
//! - [`http`]: the partner-facing listener.
//! - [`as4`]: AS4 pulling: `POST /as4`, `POST /api/as4/submit` and `edinode.as4.submit`.
//! - [`telemetry`]: logs, OpenTelemetry traces and trace-context propagation.
//! - [`node`]: wiring: the node context, the transport and the actors.

pub mod as4;
pub mod config;
pub mod http;
pub mod intake;
pub mod node;
pub mod runner;
pub mod storage;
pub mod telemetry;
pub mod transport;
