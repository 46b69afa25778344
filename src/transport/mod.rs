//! Transport: durable work queues between actors, reply routing for synchronous MDNs, and the
//! exchange for the enterprise bus. Two implementations: [`rabbit::RabbitTransport`] (RabbitMQ,
//! for any number of nodes) and [`local::LocalTransport`] (embedded: a spool directory, one node).

pub mod events_log;
pub mod local;
pub mod rabbit;

use tokio::sync::mpsc;

/// A received work item; it must be acknowledged (done) or rejected (requeue).
pub struct Delivery {
    pub body: Vec<u8>,
    /// How many times it was already retried.
    pub attempt: u32,
    pub trace: Vec<(String, String)>,
    /// String headers of the message (RabbitMQ), for inputs that are not typed envelopes.
    pub headers: Vec<(String, String)>,
    /// It may have been handled before (the broker redelivered it, or the spool replayed it).
    pub redelivered: bool,
    pub acker: Box<dyn Acker>,
}

#[async_trait::async_trait]
pub trait Acker: Send + Sync {
    async fn ack(self: Box<Self>) -> anyhow::Result<()>;
    async fn requeue(self: Box<Self>) -> anyhow::Result<()>;
}

/// A message to publish.
pub struct Publish<'a> {
    pub queue: &'a str,
    pub body: &'a [u8],
    pub attempt: u32,
    /// Why it is being dead-lettered, for the dead-letter queue.
    pub reason: Option<&'a str>,
    pub origin: Option<&'a str>,
    /// W3C trace context (traceparent, tracestate) to carry along.
    pub trace: &'a [(String, String)],
}

#[async_trait::async_trait]
pub trait Transport: Send + Sync {
    /// Publish durably; returns once the broker (or disk) has it.
    async fn publish(&self, p: Publish<'_>) -> anyhow::Result<()>;
    /// Publish durably now for delivery after `delay`: the wait happens in the broker (a
    /// per-delay holding queue whose messages expire back into `p.queue`) or the spool, never
    /// in a consumer slot.
    async fn publish_delayed(&self, p: Publish<'_>, delay: std::time::Duration) -> anyhow::Result<()>;
    /// Send a synchronous reply to a node's reply queue.
    async fn reply(&self, queue: &str, body: &[u8]) -> anyhow::Result<()>;
    /// Publish on an exchange for consumers outside edinode.
    async fn publish_exchange(&self, exchange: &str, routing_key: &str, message_id: &str, headers: &[(String, String)], body: &[u8]) -> anyhow::Result<()>;
    /// Consume a work queue, at most `prefetch` unacknowledged at a time.
    async fn consume(&self, queue: &str, prefetch: u16) -> anyhow::Result<mpsc::Receiver<Delivery>>;
    /// This node's reply queue and the replies arriving on it.
    async fn reply_queue(&self, node_id: &str) -> anyhow::Result<(String, mpsc::Receiver<Vec<u8>>)>;
    /// Messages waiting in a queue, when the transport can tell.
    async fn depth(&self, queue: &str) -> Option<u64>;
    /// True when the broker answers.
    async fn ready(&self) -> bool;
    /// Move dead letters back to the queue they came from; only those whose body mentions
    /// `id` when given. Returns how many.
    async fn replay_dead(&self, id: Option<&str>) -> anyhow::Result<usize>;
    /// The dead letters, oldest first (at most `limit`), left where they are.
    async fn dead_letters(&self, limit: usize) -> anyhow::Result<Vec<DeadLetter>>;
}

/// A dead-lettered input, as listed (the admin API and the console).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    /// The queue it came from.
    pub queue: String,
    pub reason: String,
    pub attempts: u32,
    /// The internal message id, when the input is a typed envelope that carries one.
    pub id: Option<String>,
    pub size: usize,
}

impl DeadLetter {
    pub fn new(queue: String, reason: String, attempts: u32, body: &[u8]) -> DeadLetter {
        DeadLetter { queue, reason, attempts, id: envelope_id(body), size: body.len() }
    }
}

/// The message id of an envelope: `id` (a Send) or `ctx.id` (every inbound stage's input).
fn envelope_id(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Ctx {
        id: String,
    }
    #[derive(serde::Deserialize)]
    struct AnyEnvelope {
        id: Option<String>,
        ctx: Option<Ctx>,
    }
    let e: AnyEnvelope = edinode_proto::envelope::decode(body).ok()?;
    e.id.or(e.ctx.map(|c| c.id))
}

/// Whether `hay` contains `needle`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && edinode_proto::mime::find(hay, needle).is_some()
}
