//! Prometheus metrics, low-cardinality by design: labels are stations, partners, actors,
//! queues and outcomes, never message ids.

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

pub struct Metrics {
    pub registry: Registry,
    /// Messages by direction, station, partner and outcome.
    pub messages: IntCounterVec,
    /// Time an actor spent on one input.
    pub stage_seconds: HistogramVec,
    /// Inputs retried after a transient failure, by actor.
    pub retries: IntCounterVec,
    /// Inputs sent to the dead-letter queue, by actor.
    pub dead_letters: IntCounterVec,
    /// Synchronous MDNs that were not ready in time.
    pub mdn_timeouts: IntCounter,
    /// HTTP requests by route and status.
    pub http_requests: IntCounterVec,
    /// Messages waiting per queue (refreshed on scrape).
    pub queue_depth: IntGaugeVec,
    /// Bytes received by direction.
    pub bytes: IntCounterVec,
    /// Tracking writes (status, summary) that failed after their retries, by kind.
    pub state_write_failures: IntCounterVec,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    let _ = r.register(Box::new(c.clone()));
    c
}

impl Metrics {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let stage_seconds = HistogramVec::new(
            HistogramOpts::new("edinode_stage_seconds", "Time an actor spent handling one input").buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["actor"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let _ = registry.register(Box::new(stage_seconds.clone()));
        let mdn_timeouts = IntCounter::new("edinode_mdn_timeouts_total", "Synchronous MDNs not ready in time").unwrap_or_else(|e| panic!("{e}"));
        let _ = registry.register(Box::new(mdn_timeouts.clone()));
        let queue_depth = IntGaugeVec::new(Opts::new("edinode_queue_depth", "Messages waiting in a queue"), &["queue"]).unwrap_or_else(|e| panic!("{e}"));
        let _ = registry.register(Box::new(queue_depth.clone()));
        Metrics {
            messages: counter(&registry, "edinode_messages_total", "Messages by direction, station, partner and outcome", &["direction", "station", "partner", "outcome"]),
            retries: counter(&registry, "edinode_retries_total", "Inputs retried after a transient failure", &["actor"]),
            dead_letters: counter(&registry, "edinode_dead_letters_total", "Inputs sent to the dead-letter queue", &["actor"]),
            http_requests: counter(&registry, "edinode_http_requests_total", "HTTP requests by route and status", &["route", "status"]),
            bytes: counter(&registry, "edinode_bytes_total", "Message bytes by direction", &["direction"]),
            state_write_failures: counter(&registry, "edinode_state_write_failures_total", "Tracking writes lost after retries", &["kind"]),
            registry,
            stage_seconds,
            mdn_timeouts,
            queue_depth,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = String::new();
        let enc = prometheus::TextEncoder::new();
        let _ = enc.encode_utf8(&self.registry.gather(), &mut buf);
        buf
    }
}
