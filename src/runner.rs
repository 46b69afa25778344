//! The runner: consumes an actor's queue, calls its handler, publishes the outputs durably and
//! only then acknowledges. Transient failures are retried with exponential backoff (a delayed
//! republish: no consumer slot waits out a backoff); after
//! `max_attempts`, or on a permanent failure, the input goes to `edinode.dead` with the reason
//! and the attempt count.

use crate::transport::{Delivery, Publish, Transport};
use actix::Addr;
use edinode_actors::runtime::{Stage, Work};
use edinode_actors::{queues, Actor, ActorError, NodeContext, Out, StatusRecord};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tracing::Instrument;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
}

impl RetryPolicy {
    pub fn delay(&self, attempt: u32) -> Duration {
        let d = self.base.saturating_mul(1u32 << attempt.min(10));
        d.min(Duration::from_secs(300))
    }
}

/// Publish a handler's outputs, carrying the current span's trace context. They go out at
/// once and their publisher confirms are awaited together (the outputs of one input are
/// independent of each other: different queues, consumers that do not wait on one another).
pub async fn publish_outs(t: &dyn Transport, outs: Vec<Out>) -> anyhow::Result<()> {
    let trace = crate::telemetry::inject(&tracing::Span::current());
    let trace = &trace;
    let sends = outs.into_iter().map(|o| async move {
        match o {
            Out::Send { queue, body } => t.publish(Publish { queue, body: &body, attempt: 0, reason: None, origin: None, trace }).await,
            Out::SendLater { queue, body, delay } => t.publish_delayed(Publish { queue, body: &body, attempt: 0, reason: None, origin: None, trace }, delay).await,
            Out::Reply { queue, body } => {
                if let Err(error) = t.reply(&queue, &body).await {
                    tracing::warn!(message = "Failed to route a synchronous reply.", %error, queue);
                }
                Ok(())
            }
            Out::Publish { exchange, routing_key, message_id, headers, body } => t.publish_exchange(exchange, &routing_key, &message_id, &headers, &body).await,
            Out::Dead { reason } => anyhow::bail!("dead-lettering needs the input ({reason})"),
            Out::DropBlobs { .. } | Out::Status { .. } => anyhow::bail!("dropping blobs and settling statuses need a stage's runner"),
        }
    });
    futures::future::try_join_all(sends).await.map(|_| ())
}

/// Publish a handler's outputs; an [`Out::Dead`] moves the input itself to the dead-letter queue.
/// Returns the [`Out::DropBlobs`] and [`Out::Status`] for when the input is recorded as handled.
async fn publish_with_dead(cx: &NodeContext, t: &dyn Transport, actor: &str, queue: &str, d: &Delivery, outs: Vec<Out>) -> anyhow::Result<Vec<Out>> {
    let (drops, outs): (Vec<Out>, Vec<Out>) = outs.into_iter().partition(|o| matches!(o, Out::DropBlobs { .. } | Out::Status { .. }));
    let (dead, outs): (Vec<Out>, Vec<Out>) = outs.into_iter().partition(|o| matches!(o, Out::Dead { .. }));
    publish_outs(t, outs).await?;
    for o in dead {
        if let Out::Dead { reason } = o {
            dead_letter(t, cx, actor, queue, d, &reason).await?;
        }
    }
    Ok(drops)
}

/// The done marker's value: the blobs to drop once the input is handled (JSON `[prefixes, keys]`,
/// "1" when none), so a redelivery that finds the marker drops them too (a crash between
/// writing the marker and dropping the blobs leaves nothing behind).
fn drops_value(drops: &[Out]) -> String {
    let (mut prefixes, mut keys) = (Vec::new(), Vec::new());
    for o in drops {
        if let Out::DropBlobs { prefixes: p, keys: k } = o {
            prefixes.extend(p.iter().cloned());
            keys.extend(k.iter().cloned());
        }
    }
    if prefixes.is_empty() && keys.is_empty() { "1".into() } else { serde_json::json!([prefixes, keys]).to_string() }
}

/// The blobs a done marker's value names ([`drops_value`]); none for "1" or anything else.
fn drops_of(value: &str) -> Vec<Out> {
    match serde_json::from_str::<(Vec<String>, Vec<String>)>(value) {
        Ok((prefixes, keys)) => vec![Out::DropBlobs { prefixes, keys }],
        Err(_) => Vec::new(),
    }
}

/// Best effort: a blob left behind is removed by the sweeper.
async fn drop_blobs(cx: &NodeContext, drops: Vec<Out>) {
    for o in drops {
        if let Out::DropBlobs { prefixes, keys } = o {
            for p in prefixes {
                if let Err(error) = cx.blobs.delete_prefix(&p).await {
                    tracing::warn!(message = "Could not remove working blobs; the sweeper will.", prefix = %p, %error);
                }
            }
            for k in keys {
                if let Err(error) = cx.blobs.delete(&k).await {
                    tracing::warn!(message = "Could not remove a blob; the sweeper will.", key = %k, %error);
                }
            }
        }
    }
}

async fn dead_letter(t: &dyn Transport, cx: &NodeContext, actor: &str, queue: &str, d: &Delivery, reason: &str) -> anyhow::Result<()> {
    tracing::error!(message = "Message dead-lettered.", queue, attempts = d.attempt + 1, reason);
    tracing::Span::current().record("error", reason);
    cx.metrics.dead_letters.with_label_values(&[actor]).inc();
    t.publish(Publish { queue: queues::DEAD, body: &d.body, attempt: d.attempt + 1, reason: Some(reason), origin: Some(queue), trace: &d.trace }).await
}

async fn process<A: Actor>(actor: &Addr<Stage<A>>, cx: &NodeContext, t: &dyn Transport, retry: &RetryPolicy, d: Delivery) {
    let span = tracing::info_span!(
        "actor",
        otel.name = A::BINDING.name,
        actor = A::BINDING.name,
        node = %cx.node_id,
        attempt = d.attempt,
        message_id = tracing::field::Empty,
        station = tracing::field::Empty,
        partner = tracing::field::Empty,
        direction = tracing::field::Empty,
        size = tracing::field::Empty,
        disposition = tracing::field::Empty,
        error = tracing::field::Empty,
    );
    crate::telemetry::set_parent(&span, &d.trace);
    process_in_span(actor, cx, t, retry, d).instrument(span).await
}

/// The state key that says a stage finished an input (its outputs are published).
fn done_key(actor: &str, d: &Delivery) -> String {
    // Headers too: inputs from outside systems (a document and its routing headers) may share
    // a body.
    let mut h = openssl::sha::Sha256::new();
    h.update(&d.body);
    for (k, v) in &d.headers {
        h.update(k.as_bytes());
        h.update(b"\0");
        h.update(v.as_bytes());
        h.update(b"\0");
    }
    format!("done:{actor}:{}", hex::encode(&h.finish()[..16]))
}

/// How long a stage remembers the inputs it finished (longer than any redelivery takes).
const DONE_TTL_SECS: u64 = 7 * 24 * 3600;

async fn process_in_span<A: Actor>(actor: &Addr<Stage<A>>, cx: &NodeContext, t: &dyn Transport, retry: &RetryPolicy, d: Delivery) {
    let started = std::time::Instant::now();
    let done = done_key(A::BINDING.name, &d);
    if d.redelivered {
        // Handled before and its outputs published, but the acknowledgement was lost (a crash,
        // a broker restart): do not start a second chain or repeat an effect.
        if let Ok(Some(value)) = cx.state.get(&done).await {
            tracing::info!(message = "Redelivered input already handled; acknowledging it.", actor = A::BINDING.name);
            drop_blobs(cx, drops_of(&value)).await;
            finish(d, true).await;
            return;
        }
    }
    let input: A::Input = match A::decode(&d.body, &d.headers) {
        Ok(i) => i,
        Err(e) => {
            let r = dead_letter(t, cx, A::BINDING.name, A::BINDING.queue, &d, &format!("undecodable message: {e}")).await;
            finish(d, r.is_ok()).await;
            return;
        }
    };
    // To the stage's actor (bounded mailbox: waiting here is backpressure); a panic comes back
    // as a transient failure and the supervisor restarts the actor.
    let result = match actor.send(Work { input, span: tracing::Span::current() }).await {
        Ok(r) => r,
        Err(e) => Err(ActorError::Transient(format!("{} unavailable: {e}", A::BINDING.name))),
    };
    let ok = match result {
        Ok(outs) => match publish_with_dead(cx, t, A::BINDING.name, A::BINDING.queue, &d, outs).await {
            Ok(after) => {
                let (records, drops): (Vec<Out>, Vec<Out>) = after.into_iter().partition(|o| matches!(o, Out::Status { .. }));
                let records: Vec<StatusRecord> = records
                    .into_iter()
                    .filter_map(|o| match o {
                        Out::Status { id, status, detail } => Some(StatusRecord { id, status: status.to_string(), detail }),
                        _ => None,
                    })
                    .collect();
                match cx.settle(&records, (&done, &drops_value(&drops), DONE_TTL_SECS)).await {
                    Ok(()) => drop_blobs(cx, drops).await,
                    Err(error) => tracing::warn!(message = "Could not record a finished input and its statuses; a redelivery would repeat it.", actor = A::BINDING.name, %error),
                }
                true
            }
            Err(error) => {
                tracing::warn!(message = "Failed to publish an actor's output; will retry.", actor = A::BINDING.name, %error);
                false
            }
        },
        Err(ActorError::Transient(reason)) if d.attempt + 1 < retry.max_attempts => {
            tracing::warn!(message = "Transient failure; retrying.", actor = A::BINDING.name, attempt = d.attempt + 1, %reason);
            cx.metrics.retries.with_label_values(&[A::BINDING.name]).inc();
            // The wait happens in the broker or spool: this slot is free for the next delivery.
            let again = Publish { queue: A::BINDING.queue, body: &d.body, attempt: d.attempt + 1, reason: None, origin: None, trace: &d.trace };
            t.publish_delayed(again, retry.delay(d.attempt)).await.is_ok()
        }
        Err(ActorError::Transient(reason)) | Err(ActorError::Permanent(reason)) => dead_letter(t, cx, A::BINDING.name, A::BINDING.queue, &d, &reason).await.is_ok(),
    };
    cx.metrics.stage_seconds.with_label_values(&[A::BINDING.name]).observe(started.elapsed().as_secs_f64());
    tracing::debug!(message = "Handled.", actor = A::BINDING.name, ok, ms = started.elapsed().as_millis() as u64);
    finish(d, ok).await;
}

async fn finish(d: Delivery, ok: bool) {
    let r = if ok { d.acker.ack().await } else { d.acker.requeue().await };
    if let Err(error) = r {
        tracing::warn!(message = "Failed to settle a delivery; the broker will redeliver it.", %error);
    }
}

/// Run an actor on the deliveries of its queue with up to `concurrency` in flight.
pub fn spawn<A: Actor>(actor: A, cx: NodeContext, t: Arc<dyn Transport>, mut rx: mpsc::Receiver<Delivery>, concurrency: usize, retry: RetryPolicy) -> tokio::task::JoinHandle<()> {
    let actor = Stage::start(Arc::new(actor), cx.clone(), concurrency, tokio::runtime::Handle::current());
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    tokio::spawn(async move {
        while let Some(d) = rx.recv().await {
            let Ok(permit) = sem.clone().acquire_owned().await else { return };
            let (actor, cx, t, retry) = (actor.clone(), cx.clone(), t.clone(), retry.clone());
            tokio::spawn(async move {
                process(&actor, &cx, t.as_ref(), &retry, d).await;
                drop(permit);
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use edinode_actors::Binding;

    #[test]
    fn the_done_marker_names_the_blobs_a_redelivery_still_drops() {
        let drops = [Out::DropBlobs { prefixes: vec!["work/a/".into()], keys: vec!["raw/a".into()] }, Out::DropBlobs { prefixes: vec![], keys: vec!["raw/b".into()] }];
        let v = drops_value(&drops);
        match drops_of(&v).as_slice() {
            [Out::DropBlobs { prefixes, keys }] => {
                assert_eq!(prefixes, &["work/a/"]);
                assert_eq!(keys, &["raw/a", "raw/b"]);
            }
            other => panic!("{} outputs", other.len()),
        }
        assert_eq!(drops_value(&[]), "1");
        assert!(drops_of("1").is_empty(), "markers written before this change name nothing");
    }
    use crate::storage::{FsBlobStore, LocalState};
    use crate::transport::local::LocalTransport;
    use std::sync::Mutex;

    /// A stage whose handler panics on inputs starting with "panic".
    struct Flaky {
        seen: Arc<Mutex<Vec<String>>>,
    }

    impl Actor for Flaky {
        const BINDING: Binding = Binding::new("flaky", "test.flaky");
        type Input = String;

        async fn handle(&self, _cx: &NodeContext, input: String) -> Result<Vec<Out>, ActorError> {
            if input.starts_with("panic") {
                panic!("boom on {input}");
            }
            self.seen.lock().unwrap().push(input);
            Ok(vec![])
        }
    }

    fn context(dir: &std::path::Path) -> NodeContext {
        NodeContext {
            node_id: "test".into(),
            directory: Default::default(),
            directories: Default::default(),
            blobs: Arc::new(FsBlobStore::new(&dir.join("blobs"), false).unwrap()),
            state: Arc::new(LocalState::open(&dir.join("state.jsonl"), false).unwrap()),
            limits: Default::default(),
            http: reqwest::Client::new(),
            inbox: dir.join("inbox"),
            reporting_ua: "test".into(),
            mdn_post_attempts: 1,
            metrics: Arc::new(edinode_actors::metrics::Metrics::new()),
            buckets: Default::default(),
            fsync: false,
            cpu: Default::default(),
        }
    }

    /// Counts its inputs and publishes one event per input.
    struct Counting {
        handled: Arc<Mutex<usize>>,
    }

    impl Actor for Counting {
        const BINDING: Binding = Binding::new("counting", "test.counting");
        type Input = String;

        async fn handle(&self, _cx: &NodeContext, input: String) -> Result<Vec<Out>, ActorError> {
            *self.handled.lock().unwrap() += 1;
            Ok(vec![edinode_actors::event("test.done", &input, "s", "p", "<m>", "")])
        }
    }

    struct NoAck(Arc<Mutex<Vec<&'static str>>>);

    #[async_trait::async_trait]
    impl crate::transport::Acker for NoAck {
        async fn ack(self: Box<Self>) -> anyhow::Result<()> {
            self.0.lock().unwrap().push("ack");
            Ok(())
        }
        async fn requeue(self: Box<Self>) -> anyhow::Result<()> {
            self.0.lock().unwrap().push("requeue");
            Ok(())
        }
    }

    #[test]
    fn a_redelivered_input_whose_outputs_were_published_is_not_handled_again() {
        let system = actix_rt::System::with_tokio_rt(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap());
        system.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let t = LocalTransport::open(&dir.path().join("spool"), false).unwrap();
            let cx = context(dir.path());
            let handled = Arc::new(Mutex::new(0));
            let stage = Stage::start(Arc::new(Counting { handled: handled.clone() }), cx.clone(), 4, tokio::runtime::Handle::current());
            let settled = Arc::new(Mutex::new(Vec::new()));
            let body = edinode_proto::envelope::encode(&"input-1".to_string()).unwrap();
            let delivery = |redelivered| Delivery { body: body.clone(), attempt: 0, trace: vec![], headers: vec![], redelivered, acker: Box::new(NoAck(settled.clone())) };
            let retry = RetryPolicy { max_attempts: 3, base: Duration::from_millis(10) };
            process(&stage, &cx, &t, &retry, delivery(false)).await;
            // The broker lost the acknowledgement and delivers it again, flagged as redelivered.
            process(&stage, &cx, &t, &retry, delivery(true)).await;
            assert_eq!(*handled.lock().unwrap(), 1, "handled once");
            assert_eq!(*settled.lock().unwrap(), vec!["ack", "ack"]);
            // A fresh publication of the same input (a dead-letter replay) is handled again.
            process(&stage, &cx, &t, &retry, delivery(false)).await;
            assert_eq!(*handled.lock().unwrap(), 2);
        });
    }

    #[test]
    fn a_panicking_handler_is_retried_dead_lettered_with_its_message_and_the_slot_comes_back() {
        let system = actix_rt::System::with_tokio_rt(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap());
        system.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let t: Arc<dyn Transport> = Arc::new(LocalTransport::open(&dir.path().join("spool"), false).unwrap());
            let seen = Arc::new(Mutex::new(Vec::new()));
            let rx = t.consume(Flaky::BINDING.queue, 1).await.unwrap();
            // One slot only: had the panic lost it, nothing after it would run.
            spawn(Flaky { seen: seen.clone() }, context(dir.path()), t.clone(), rx, 1, RetryPolicy { max_attempts: 3, base: Duration::from_millis(20) });
            for input in ["panic-1", "ok-1", "ok-2"] {
                let body = edinode_proto::envelope::encode(&input.to_string()).unwrap();
                t.publish(Publish { queue: Flaky::BINDING.queue, body: &body, attempt: 0, reason: None, origin: None, trace: &[] }).await.unwrap();
            }
            let dead = dir.path().join("spool").join(queues::DEAD);
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            let reason = loop {
                let reasons: Vec<String> = std::fs::read_dir(&dead)
                    .map(|rd| rd.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "reason")).map(|e| std::fs::read_to_string(e.path()).unwrap()).collect())
                    .unwrap_or_default();
                if let Some(r) = reasons.first() {
                    break r.clone();
                }
                assert!(std::time::Instant::now() < deadline, "no dead letter; seen {:?}", seen.lock().unwrap());
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert!(reason.contains("panic in flaky: boom on panic-1"), "{reason}");
            assert!(reason.contains("3 attempts"), "{reason}");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while seen.lock().unwrap().len() < 2 {
                assert!(std::time::Instant::now() < deadline, "the slot did not come back: {:?}", seen.lock().unwrap());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(*seen.lock().unwrap(), vec!["ok-1".to_string(), "ok-2".to_string()]);
        });
    }
}
