//! RabbitMQ transport (lapin): durable queues, persistent messages, publisher confirms, a
//! dead-letter queue, per-node reply queues, and reconnection after a broker restart.

use super::{Acker, Delivery, Publish, Transport};
use futures::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::time::Duration;
use tokio::sync::{mpsc, Mutex};

pub const ATTEMPT_HEADER: &str = "x-edinode-attempt";

pub struct RabbitTransport {
    url: String,
    publisher: Mutex<Option<(Connection, Channel)>>,
    declared: Mutex<std::collections::HashSet<String>>,
}

struct RabbitAcker {
    delivery: lapin::message::Delivery,
}

#[async_trait::async_trait]
impl Acker for RabbitAcker {
    async fn ack(self: Box<Self>) -> anyhow::Result<()> {
        self.delivery.ack(BasicAckOptions::default()).await?;
        Ok(())
    }
    async fn requeue(self: Box<Self>) -> anyhow::Result<()> {
        self.delivery.nack(BasicNackOptions { requeue: true, multiple: false }).await?;
        Ok(())
    }
}

/// One consumer connection: deliveries go to `tx` until the stream fails (an error, to
/// reconnect) or the receiver is gone (`Ok`).
async fn consume_session(url: &str, queue: &str, prefetch: u16, tx: &mpsc::Sender<Delivery>) -> anyhow::Result<()> {
    let conn = connect(url).await?;
    let ch = conn.create_channel().await?;
    declare_queue(&ch, queue).await?;
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut consumer = ch.basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
    while let Some(d) = consumer.next().await {
        let d = d?;
        let headers = d.properties.headers().clone().unwrap_or_default();
        let attempt = int_header(&headers, ATTEMPT_HEADER).unwrap_or(0);
        let mut trace = Vec::new();
        for k in ["traceparent", "tracestate"] {
            if let Some(v) = str_header(&headers, k) {
                trace.push((k.to_string(), v));
            }
        }
        let mut strings: Vec<(String, String)> = headers.inner().keys().filter_map(|k| str_header(&headers, k.as_str()).map(|v| (k.as_str().to_string(), v))).collect();
        if let Some(ct) = d.properties.content_type() {
            strings.push(("content-type".into(), ct.as_str().to_string()));
        }
        let body = d.data.clone();
        let redelivered = d.redelivered;
        if tx.send(Delivery { body, attempt, trace, headers: strings, redelivered, acker: Box::new(RabbitAcker { delivery: d }) }).await.is_err() {
            return Ok(());
        }
    }
    anyhow::bail!("consumer stream ended")
}

/// One connection of a node's reply queue (exclusive, auto-deleted, no acks); `ready` is
/// signalled once the first consumer is in place.
async fn reply_session(url: &str, q: &str, tx: &mpsc::Sender<Vec<u8>>, ready: &mut Option<tokio::sync::oneshot::Sender<()>>) -> anyhow::Result<()> {
    let conn = connect(url).await?;
    let ch = conn.create_channel().await?;
    ch.queue_declare(q.into(), QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() }, FieldTable::default()).await?;
    let mut consumer = ch
        .basic_consume(q.into(), "".into(), BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default())
        .await?;
    if let Some(r) = ready.take() {
        let _ = r.send(());
    }
    while let Some(d) = consumer.next().await {
        let d = d?;
        if tx.send(d.data).await.is_err() {
            return Ok(());
        }
    }
    anyhow::bail!("reply consumer ended")
}

/// After a consumer session ended: `false` when the receiver is gone (stop), else logs why
/// and waits a moment before the caller reconnects.
async fn reconnect_after<T>(tx: &mpsc::Sender<T>, result: anyhow::Result<()>, lost: &str, queue: &str) -> bool {
    if tx.is_closed() {
        return false;
    }
    if let Err(error) = result {
        tracing::warn!(message = lost, queue = %queue, %error);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    true
}

fn str_header(t: &FieldTable, name: &str) -> Option<String> {
    match t.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

fn int_header(t: &FieldTable, name: &str) -> Option<u32> {
    match t.inner().get(name)? {
        AMQPValue::LongUInt(v) => Some(*v),
        AMQPValue::LongInt(v) => u32::try_from(*v).ok(),
        AMQPValue::LongLongInt(v) => u32::try_from(*v).ok(),
        AMQPValue::ShortInt(v) => u32::try_from(*v).ok(),
        AMQPValue::ShortShortUInt(v) => Some(u32::from(*v)),
        AMQPValue::ShortUInt(v) => Some(u32::from(*v)),
        _ => None,
    }
}

async fn connect(url: &str) -> anyhow::Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name("edinode".into());
    Ok(Connection::connect(url, props).await?)
}

async fn declare_queue(ch: &Channel, name: &str) -> anyhow::Result<()> {
    ch.queue_declare(name.into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default()).await?;
    Ok(())
}

impl RabbitTransport {
    pub async fn connect(url: &str) -> anyhow::Result<RabbitTransport> {
        let t = RabbitTransport { url: url.to_string(), publisher: Mutex::new(None), declared: Mutex::new(Default::default()) };
        // A node that starts while the broker is (re)starting waits for it rather than exiting.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match t.channel().await {
                Ok(_) => return Ok(t),
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::warn!(message = "RabbitMQ not reachable yet; retrying.", error = %e);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The publishing channel (confirm mode), reconnecting if the broker went away.
    async fn channel(&self) -> anyhow::Result<Channel> {
        let mut g = self.publisher.lock().await;
        if let Some((conn, ch)) = g.as_ref()
            && conn.status().connected()
            && ch.status().connected()
        {
            return Ok(ch.clone());
        }
        *g = None;
        self.declared.lock().await.clear();
        let conn = connect(&self.url).await?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        for exchange in [edinode_actors::queues::EVENTS_EXCHANGE, edinode_actors::queues::INBOUND_EXCHANGE] {
            ch.exchange_declare(
                exchange.into(),
                lapin::ExchangeKind::Topic,
                ExchangeDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        }
        // The dead-letter queue exists from the start, so operators (and tools) can watch it.
        declare_queue(&ch, edinode_actors::queues::DEAD).await?;
        *g = Some((conn, ch.clone()));
        Ok(ch)
    }

    async fn ensure_queue(&self, ch: &Channel, name: &str) -> anyhow::Result<()> {
        if self.declared.lock().await.contains(name) {
            return Ok(());
        }
        declare_queue(ch, name).await?;
        self.declared.lock().await.insert(name.to_string());
        Ok(())
    }

    async fn publish_once(&self, exchange: &str, rk: &str, body: &[u8], props: BasicProperties, route: &Route) -> anyhow::Result<()> {
        let ch = self.channel().await?;
        match route {
            Route::Queue => self.ensure_queue(&ch, rk).await?,
            Route::Holding(args) => {
                if !self.declared.lock().await.contains(rk) {
                    ch.queue_declare(rk.into(), QueueDeclareOptions { durable: true, ..Default::default() }, args.clone()).await?;
                    self.declared.lock().await.insert(rk.to_string());
                }
            }
            Route::Exchange => {}
        }
        let mandatory = !matches!(route, Route::Exchange);
        let confirm = ch
            .basic_publish(exchange.into(), rk.into(), BasicPublishOptions { mandatory, ..Default::default() }, body, props)
            .await?
            .await?;
        if confirm.is_nack() {
            anyhow::bail!("broker refused the message for {rk}");
        }
        if let Some(ret) = confirm.take_message() {
            anyhow::bail!("message for {rk} was returned unroutable: {:?}", ret.reply_text);
        }
        Ok(())
    }

    /// Publish with a few quick retries across reconnects.
    async fn publish_retry(&self, exchange: &str, rk: &str, body: &[u8], props: BasicProperties, route: Route) -> anyhow::Result<()> {
        let mut last = None;
        for i in 0..5u64 {
            match self.publish_once(exchange, rk, body, props.clone(), &route).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100 * (1 << i))).await;
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("publish failed")))
    }
}

/// Where a publish goes: a work queue (declared durable, must be routable), a delay holding
/// queue (declared with these arguments, must be routable), or an exchange.
enum Route {
    Queue,
    Holding(FieldTable),
    Exchange,
}

/// The holding queue for messages bound to `queue` after `delay_ms`.
pub fn delay_queue(queue: &str, delay_ms: u64) -> String {
    format!("edinode.delay.{queue}.{delay_ms}ms")
}

fn work_props(p: &Publish<'_>) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(p.attempt));
    if let Some(r) = p.reason {
        headers.insert("x-edinode-reason".into(), AMQPValue::LongString(LongString::from(r.as_bytes().to_vec())));
    }
    for (k, v) in p.trace {
        headers.insert(ShortString::from(k.as_str()), AMQPValue::LongString(LongString::from(v.as_bytes().to_vec())));
    }
    if let Some(o) = p.origin {
        headers.insert("x-edinode-queue".into(), AMQPValue::LongString(LongString::from(o.as_bytes().to_vec())));
    }
    BasicProperties::default().with_delivery_mode(2).with_headers(headers)
}

#[async_trait::async_trait]
impl Transport for RabbitTransport {
    async fn publish(&self, p: Publish<'_>) -> anyhow::Result<()> {
        let props = work_props(&p);
        self.publish_retry("", p.queue, p.body, props, Route::Queue).await
    }

    async fn publish_delayed(&self, p: Publish<'_>, delay: Duration) -> anyhow::Result<()> {
        // Whole seconds above 10 s keep the number of holding queues small.
        let ms = match delay.as_millis() as u64 {
            ms if ms > 10_000 => ms.div_ceil(1000) * 1000,
            ms => ms.max(1),
        };
        let holding = delay_queue(p.queue, ms);
        // The work queue must exist when the first message expires into it.
        let ch = self.channel().await?;
        self.ensure_queue(&ch, p.queue).await?;
        let mut args = FieldTable::default();
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ms as i64));
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(LongString::from(Vec::new())));
        args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(LongString::from(p.queue.as_bytes().to_vec())));
        let props = work_props(&p);
        self.publish_retry("", &holding, p.body, props, Route::Holding(args)).await
    }

    async fn reply(&self, queue: &str, body: &[u8]) -> anyhow::Result<()> {
        let ch = self.channel().await?;
        ch.basic_publish("".into(), queue.into(), BasicPublishOptions::default(), body, BasicProperties::default()).await?.await?;
        Ok(())
    }

    async fn publish_exchange(&self, exchange: &str, rk: &str, message_id: &str, headers: &[(String, String)], body: &[u8]) -> anyhow::Result<()> {
        let mut t = FieldTable::default();
        for (k, v) in headers {
            t.insert(ShortString::from(k.as_str()), AMQPValue::LongString(LongString::from(v.as_bytes().to_vec())));
        }
        let ct = headers.iter().find(|(k, _)| k == "content-type").map(|(_, v)| v.clone()).unwrap_or_default();
        let props = BasicProperties::default().with_delivery_mode(2).with_headers(t).with_content_type(ct.into()).with_message_id(message_id.into());
        self.publish_retry(exchange, rk, body, props, Route::Exchange).await
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> anyhow::Result<mpsc::Receiver<Delivery>> {
        let (tx, rx) = mpsc::channel(usize::from(prefetch.max(1)));
        let url = self.url.clone();
        let queue = queue.to_string();
        // Declare now so publishers find the queue even before the first delivery.
        let ch = self.channel().await?;
        self.ensure_queue(&ch, &queue).await?;
        tokio::spawn(async move {
            loop {
                let result = consume_session(&url, &queue, prefetch, &tx).await;
                if !reconnect_after(&tx, result, "RabbitMQ consumer lost; reconnecting.", &queue).await {
                    return;
                }
            }
        });
        Ok(rx)
    }

    async fn reply_queue(&self, node_id: &str) -> anyhow::Result<(String, mpsc::Receiver<Vec<u8>>)> {
        let name = format!("edinode.reply.{node_id}");
        let (tx, rx) = mpsc::channel(10_000);
        let url = self.url.clone();
        let q = name.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let mut ready_tx = Some(ready_tx);
        tokio::spawn(async move {
            loop {
                let result = reply_session(&url, &q, &tx, &mut ready_tx).await;
                if !reconnect_after(&tx, result, "Reply queue lost; reconnecting.", &q).await {
                    return;
                }
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(10), ready_rx).await;
        Ok((name, rx))
    }

    async fn depth(&self, queue: &str) -> Option<u64> {
        // A passive declare of a missing queue closes its channel: use a throwaway one.
        let ch = {
            let g = self.publisher.lock().await;
            let (conn, _) = g.as_ref()?;
            conn.create_channel().await.ok()?
        };
        let q = ch
            .queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
            .await
            .ok()?;
        let _ = ch.close(200, "done".into()).await;
        Some(u64::from(q.message_count()))
    }

    async fn ready(&self) -> bool {
        match tokio::time::timeout(Duration::from_secs(3), self.channel()).await {
            Ok(Ok(ch)) => ch.status().connected(),
            _ => false,
        }
    }

    async fn replay_dead(&self, id: Option<&str>) -> anyhow::Result<usize> {
        // A private channel: basic.get of everything, republish the chosen, ack all taken;
        // the others are rejected back to the dead-letter queue when the channel closes.
        let conn = connect(&self.url).await?;
        let ch = conn.create_channel().await?;
        let mut n = 0;
        let mut keep = Vec::new();
        while let Some(m) = ch.basic_get(edinode_actors::queues::DEAD.into(), BasicGetOptions::default()).await? {
            let d = m.delivery;
            let headers = d.properties.headers().clone().unwrap_or_default();
            let origin = str_header(&headers, "x-edinode-queue");
            let wanted = id.is_none_or(|i| crate::transport::contains(&d.data, i.as_bytes()));
            match (origin, wanted) {
                (Some(q), true) => {
                    self.publish(Publish { queue: &q, body: &d.data, attempt: 0, reason: None, origin: None, trace: &[] }).await?;
                    d.ack(BasicAckOptions::default()).await?;
                    n += 1;
                }
                _ => keep.push(d),
            }
            if n + keep.len() > 100_000 {
                break;
            }
        }
        for d in keep {
            d.nack(BasicNackOptions { requeue: true, multiple: false }).await?;
        }
        let _ = ch.close(200, "done".into()).await;
        let _ = conn.close(200, "done".into()).await;
        Ok(n)
    }

    async fn dead_letters(&self, limit: usize) -> anyhow::Result<Vec<super::DeadLetter>> {
        // A private channel: basic.get up to `limit`, then close it unacknowledged: every one
        // goes back to the queue, in order.
        let conn = connect(&self.url).await?;
        let ch = conn.create_channel().await?;
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(m) = ch.basic_get(edinode_actors::queues::DEAD.into(), BasicGetOptions::default()).await? else { break };
            let d = m.delivery;
            let headers = d.properties.headers().clone().unwrap_or_default();
            let queue = str_header(&headers, "x-edinode-queue").unwrap_or_default();
            let reason = str_header(&headers, "x-edinode-reason").unwrap_or_default();
            out.push(super::DeadLetter::new(queue, reason, int_header(&headers, ATTEMPT_HEADER).unwrap_or(0), &d.data));
        }
        let _ = ch.close(200, "done".into()).await;
        let _ = conn.close(200, "done".into()).await;
        Ok(out)
    }
}
