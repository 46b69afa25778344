//! What a handler hands back: [`Out`] (publish, reply, dead-letter, status, drop blobs) and
//! [`event`] (an outcome on `edinode.events`).

use crate::{queues, ActorError};
use edinode_proto::envelope;
use serde::Serialize;

/// What a handler asks the runner to do once it returns.
#[derive(Debug, Clone)]
pub enum Out {
    /// Publish to a durable work queue (with a publisher confirm).
    Send { queue: &'static str, body: Vec<u8> },
    /// Publish to a durable work queue now, for delivery after `delay` (a retry that waits in
    /// the broker or spool, not in a consumer slot).
    SendLater { queue: &'static str, body: Vec<u8>, delay: std::time::Duration },
    /// Publish a synchronous reply to a node's reply queue (not durable).
    Reply { queue: String, body: Vec<u8> },
    /// Move the input itself to the dead-letter queue with this reason (it cannot be handled
    /// as given: an expected outcome, not a failure to retry).
    Dead { reason: String },
    /// Publish to an exchange for consumers outside edinode. `message_id` (the AMQP property) is
    /// stable for the same effect however often its input is redelivered, so consumers can
    /// deduplicate on it.
    Publish { exchange: &'static str, routing_key: String, message_id: String, headers: Vec<(String, String)>, body: Vec<u8> },
    /// Record a status of a message together with the stage's "handled" marker, after the other
    /// outputs are published (one state round trip per stage). For milestones nobody waits on;
    /// a status a caller may read as soon as it sees an effect is written with
    /// [`crate::NodeContext::status`] before the effect.
    Status { id: String, status: &'static str, detail: String },
    /// Delete these blobs (`prefix/` removes everything under it) once the other outputs are
    /// published and the input is recorded as handled: a redelivery of the input before that
    /// point still finds what it reads.
    DropBlobs { prefixes: Vec<String>, keys: Vec<String> },
}

impl Out {
    pub fn send<T: Serialize>(queue: &'static str, v: &T) -> Result<Out, ActorError> {
        Ok(Out::Send { queue, body: envelope::encode(v).map_err(ActorError::Permanent)? })
    }
}

/// Publish an event on `edinode.events` (routing key = kind).
pub fn event(kind: &str, id: &str, station: &str, partner: &str, message_id: &str, detail: &str) -> Out {
    let ev = edinode_proto::envelope::Event {
        kind: kind.to_string(),
        id: id.to_string(),
        station: station.to_string(),
        partner: partner.to_string(),
        message_id: message_id.to_string(),
        detail: detail.to_string(),
        at_ms: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0),
    };
    // Stable for the same event: what happened to what, never when.
    let digest = openssl::sha::sha256(format!("{kind}\n{id}\n{station}\n{partner}\n{message_id}\n{detail}").as_bytes());
    Out::Publish {
        exchange: queues::EVENTS_EXCHANGE,
        routing_key: kind.to_string(),
        message_id: format!("{kind}:{}", hex::encode(&digest[..16])),
        headers: vec![("kind".into(), kind.into()), ("station".into(), station.into()), ("partner".into(), partner.into()), ("message-id".into(), message_id.into())],
        body: serde_json::to_vec(&ev).unwrap_or_default(),
    }
}
