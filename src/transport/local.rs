//! The embedded transport. Each queue is an append-only log of segment files: a publish appends
//! one record (and, with `fsync`, syncs it) before it returns; an acknowledgement appends the
//! record's sequence number to the segment's `.acks` file; a segment is deleted once every
//! record in it is acknowledged. On start, unacknowledged records are fed again, so a node
//! survives kill -9 (and, with `fsync`, power loss). Appending to a few open files instead of
//! creating a file per message keeps file-system metadata work off the hot path.
//!
//! Dead letters are kept one file per message with their reason beside them (`.reason`).
//! It serves one process: it cannot scale out (use RabbitMQ for that).

use super::{Acker, Delivery, Publish, Transport};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

const CAPACITY: usize = 100_000;
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

/// One queue's log.
struct QueueLog {
    dir: PathBuf,
    fsync: bool,
    inner: Mutex<LogState>,
}

struct LogState {
    /// The segment being appended to: number, file, size.
    current: Option<(u64, std::fs::File, u64)>,
    next_segment: u64,
    /// Unacknowledged records per segment.
    outstanding: HashMap<u64, usize>,
    /// Open `.acks` files per segment.
    acks: HashMap<u64, std::fs::File>,
}

impl QueueLog {
    fn seg_path(&self, seg: u64) -> PathBuf {
        self.dir.join(format!("{seg:016}.log"))
    }

    fn append(&self, seq: u64, attempt: u32, body: &[u8]) -> std::io::Result<u64> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let rotate = g.current.as_ref().is_none_or(|(_, _, size)| *size >= SEGMENT_BYTES);
        if rotate {
            let seg = g.next_segment;
            g.next_segment += 1;
            let f = std::fs::OpenOptions::new().create(true).append(true).open(self.seg_path(seg))?;
            if let Some((old, _, _)) = g.current.take() {
                // A rotated-out segment with nothing outstanding can go now.
                if g.outstanding.get(&old).copied().unwrap_or(0) == 0 {
                    remove_segment(&self.dir, old, &mut g);
                }
            }
            g.current = Some((seg, f, 0));
        }
        let mut rec = Vec::with_capacity(body.len() + 16);
        rec.extend_from_slice(&(body.len() as u32).to_le_bytes());
        rec.extend_from_slice(&attempt.to_le_bytes());
        rec.extend_from_slice(&seq.to_le_bytes());
        rec.extend_from_slice(body);
        let (seg, f, size) = g.current.as_mut().ok_or_else(|| std::io::Error::other("no segment"))?;
        f.write_all(&rec)?;
        if self.fsync {
            f.sync_data()?;
        }
        *size += rec.len() as u64;
        let seg = *seg;
        *g.outstanding.entry(seg).or_insert(0) += 1;
        Ok(seg)
    }

    fn ack(&self, seg: u64, seq: u64) -> std::io::Result<()> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let left = {
            let n = g.outstanding.entry(seg).or_insert(1);
            *n = n.saturating_sub(1);
            *n
        };
        let is_current = g.current.as_ref().is_some_and(|(c, _, _)| *c == seg);
        if left == 0 && !is_current {
            remove_segment(&self.dir, seg, &mut g);
            return Ok(());
        }
        if let std::collections::hash_map::Entry::Vacant(e) = g.acks.entry(seg) {
            e.insert(std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("{seg:016}.acks")))?);
        }
        if let Some(f) = g.acks.get_mut(&seg) {
            f.write_all(&seq.to_le_bytes())?;
            if self.fsync {
                f.sync_data()?;
            }
        }
        Ok(())
    }
}

fn remove_segment(dir: &Path, seg: u64, g: &mut LogState) {
    g.outstanding.remove(&seg);
    g.acks.remove(&seg);
    let _ = std::fs::remove_file(dir.join(format!("{seg:016}.log")));
    let _ = std::fs::remove_file(dir.join(format!("{seg:016}.acks")));
}

struct LogAcker {
    log: Arc<QueueLog>,
    seg: u64,
    seq: u64,
    requeue: Option<(mpsc::Sender<Delivery>, Vec<u8>, u32)>,
}

#[async_trait::async_trait]
impl Acker for LogAcker {
    async fn ack(self: Box<Self>) -> anyhow::Result<()> {
        Ok(self.log.ack(self.seg, self.seq)?)
    }
    async fn requeue(self: Box<Self>) -> anyhow::Result<()> {
        let this = *self;
        if let Some((tx, body, attempt)) = this.requeue.clone() {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let again = Delivery { body: body.clone(), attempt, trace: vec![], headers: vec![], redelivered: true, acker: Box::new(this) };
            let _ = tx.send(again).await;
        }
        Ok(())
    }
}

pub struct LocalTransport {
    dir: PathBuf,
    fsync: bool,
    seq: AtomicU64,
    logs: Mutex<HashMap<String, Arc<QueueLog>>>,
    queues: Mutex<HashMap<String, mpsc::Sender<Delivery>>>,
    pending: Mutex<HashMap<String, mpsc::Receiver<Delivery>>>,
    replies: Mutex<HashMap<String, mpsc::Sender<Vec<u8>>>>,
    /// Where `edinode.events` goes without a broker.
    events: Option<super::events_log::EventsLog>,
}

impl LocalTransport {
    pub fn open(dir: &Path, fsync: bool) -> anyhow::Result<LocalTransport> {
        std::fs::create_dir_all(dir)?;
        Ok(LocalTransport {
            dir: dir.to_path_buf(),
            fsync,
            seq: AtomicU64::new(now_micros()),
            logs: Mutex::new(HashMap::new()),
            queues: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            replies: Mutex::new(HashMap::new()),
            events: None,
        })
    }

    /// Write what would go to `edinode.events` to this file (one JSON event a line).
    pub fn with_events_log(mut self, path: &Path) -> LocalTransport {
        self.events = Some(super::events_log::EventsLog::new(path));
        self
    }

    fn sender(&self, queue: &str) -> mpsc::Sender<Delivery> {
        let mut qs = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = qs.get(queue) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(CAPACITY);
        qs.insert(queue.to_string(), tx.clone());
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(queue.to_string(), rx);
        tx
    }

    /// The queue's log; on first use, the segment numbers continue after those on disk.
    fn log(&self, queue: &str) -> anyhow::Result<Arc<QueueLog>> {
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = logs.get(queue) {
            return Ok(l.clone());
        }
        let dir = self.dir.join(queue);
        std::fs::create_dir_all(&dir)?;
        let mut next = 0;
        for e in std::fs::read_dir(&dir)?.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if let Some(num) = n.strip_suffix(".log").and_then(|s| s.parse::<u64>().ok()) {
                next = next.max(num + 1);
            }
        }
        let l = Arc::new(QueueLog { dir, fsync: self.fsync, inner: Mutex::new(LogState { current: None, next_segment: next, outstanding: HashMap::new(), acks: HashMap::new() }) });
        logs.insert(queue.to_string(), l.clone());
        Ok(l)
    }

    /// Append a work message to its queue's log; returns the delivery to hand to the consumer.
    fn append(&self, p: &Publish<'_>) -> anyhow::Result<(mpsc::Sender<Delivery>, Delivery)> {
        let log = self.log(p.queue)?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        // Inline, not through the blocking pool: one small append is cheaper than a hand-off.
        let seg = log.append(seq, p.attempt, p.body)?;
        let tx = self.sender(p.queue);
        let body = p.body.to_vec();
        let d = Delivery {
            body: body.clone(),
            attempt: p.attempt,
            trace: p.trace.to_vec(),
            headers: vec![],
            redelivered: false,
            acker: Box::new(LogAcker { log, seg, seq, requeue: Some((tx.clone(), body, p.attempt)) }),
        };
        Ok((tx, d))
    }

    fn dead_file_name(&self, attempt: u32) -> String {
        format!("{:020}-{:010}-{}.msg", now_micros(), self.seq.fetch_add(1, Ordering::Relaxed), attempt)
    }
}

fn now_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Read one segment: its unacknowledged records as (seq, attempt, body). A torn last record
/// (kill -9 mid-append) is ignored: its publish never returned.
fn read_segment(path: &Path, acks: &std::collections::HashSet<u64>) -> std::io::Result<Vec<(u64, u32, Vec<u8>)>> {
    let mut data = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut data)?;
    let mut out = Vec::new();
    let mut i = 0;
    while i + 16 <= data.len() {
        let len = u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]) as usize;
        let attempt = u32::from_le_bytes([data[i + 4], data[i + 5], data[i + 6], data[i + 7]]);
        let mut s = [0u8; 8];
        s.copy_from_slice(&data[i + 8..i + 16]);
        let seq = u64::from_le_bytes(s);
        let end = i + 16 + len;
        if end > data.len() {
            break;
        }
        if !acks.contains(&seq) {
            out.push((seq, attempt, data[i + 16..end].to_vec()));
        }
        i = end;
    }
    Ok(out)
}

#[async_trait::async_trait]
impl Transport for LocalTransport {
    async fn publish(&self, p: Publish<'_>) -> anyhow::Result<()> {
        if let Some(reason) = p.reason {
            // Dead letters: a file each, with the reason beside it; nobody consumes them here.
            let qdir = self.dir.join(p.queue);
            std::fs::create_dir_all(&qdir)?;
            let path = qdir.join(self.dead_file_name(p.attempt));
            std::fs::write(&path, p.body)?;
            std::fs::write(path.with_extension("reason"), format!("{} (from {}, {} attempts)", reason, p.origin.unwrap_or("?"), p.attempt))?;
            return Ok(());
        }
        let (tx, d) = self.append(&p)?;
        tx.send(d).await.map_err(|_| anyhow::anyhow!("local queue {} closed", p.queue))
    }

    async fn publish_delayed(&self, p: Publish<'_>, delay: std::time::Duration) -> anyhow::Result<()> {
        // In the log now (so it survives kill -9: a restart feeds it at once), handed to the
        // consumer after the delay.
        let (tx, d) = self.append(&p)?;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(d).await;
        });
        Ok(())
    }

    async fn reply(&self, queue: &str, body: &[u8]) -> anyhow::Result<()> {
        let tx = self.replies.lock().unwrap_or_else(|p| p.into_inner()).get(queue).cloned();
        if let Some(tx) = tx {
            let _ = tx.send(body.to_vec()).await;
        }
        Ok(())
    }

    async fn publish_exchange(&self, exchange: &str, _rk: &str, _message_id: &str, _headers: &[(String, String)], body: &[u8]) -> anyhow::Result<()> {
        // No bus in embedded mode: documents are in the inbox directory, events in the events log.
        if let Some(log) = self.events.as_ref().filter(|_| exchange == edinode_actors::queues::EVENTS_EXCHANGE)
            && let Err(error) = log.append(body)
        {
            tracing::warn!(message = "Could not write an event to the events log.", %error);
        }
        Ok(())
    }

    async fn consume(&self, queue: &str, _prefetch: u16) -> anyhow::Result<mpsc::Receiver<Delivery>> {
        let tx = self.sender(queue);
        let rx = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(queue)
            .ok_or_else(|| anyhow::anyhow!("queue {queue} is already consumed"))?;
        // Feed what was left from a previous run, oldest segment first.
        let log = self.log(queue)?;
        let mut segs: Vec<u64> = std::fs::read_dir(&log.dir)?
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".log").and_then(|s| s.parse().ok()))
            .collect();
        segs.sort();
        let mut recovered = 0;
        for seg in segs {
            if log.inner.lock().unwrap_or_else(|p| p.into_inner()).current.as_ref().is_some_and(|(c, _, _)| *c == seg) {
                continue;
            }
            let mut acks = std::collections::HashSet::new();
            if let Ok(b) = std::fs::read(log.dir.join(format!("{seg:016}.acks"))) {
                for c in b.chunks_exact(8) {
                    let mut s = [0u8; 8];
                    s.copy_from_slice(c);
                    acks.insert(u64::from_le_bytes(s));
                }
            }
            let records = read_segment(&log.seg_path(seg), &acks)?;
            if records.is_empty() {
                let mut g = log.inner.lock().unwrap_or_else(|p| p.into_inner());
                remove_segment(&log.dir, seg, &mut g);
                continue;
            }
            log.inner.lock().unwrap_or_else(|p| p.into_inner()).outstanding.insert(seg, records.len());
            for (seq, attempt, body) in records {
                recovered += 1;
                let d = Delivery { body: body.clone(), attempt, trace: vec![], headers: vec![], redelivered: true, acker: Box::new(LogAcker { log: log.clone(), seg, seq, requeue: Some((tx.clone(), body, attempt)) }) };
                tx.send(d).await.map_err(|_| anyhow::anyhow!("queue closed"))?;
            }
        }
        if recovered > 0 {
            tracing::info!(message = "Recovering spooled messages.", queue, count = recovered);
        }
        Ok(rx)
    }

    async fn reply_queue(&self, node_id: &str) -> anyhow::Result<(String, mpsc::Receiver<Vec<u8>>)> {
        let name = format!("edinode.reply.{node_id}");
        let (tx, rx) = mpsc::channel(10_000);
        self.replies.lock().unwrap_or_else(|p| p.into_inner()).insert(name.clone(), tx);
        Ok((name, rx))
    }

    async fn depth(&self, queue: &str) -> Option<u64> {
        if queue == edinode_actors::queues::DEAD {
            let rd = std::fs::read_dir(self.dir.join(queue)).ok()?;
            return Some(rd.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".msg")).count() as u64);
        }
        let logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        let l = logs.get(queue)?;
        let n: usize = l.inner.lock().unwrap_or_else(|p| p.into_inner()).outstanding.values().sum();
        Some(n as u64)
    }

    async fn ready(&self) -> bool {
        self.dir.is_dir()
    }

    async fn replay_dead(&self, id: Option<&str>) -> anyhow::Result<usize> {
        let dead = self.dir.join(edinode_actors::queues::DEAD);
        let mut n = 0;
        let Ok(rd) = std::fs::read_dir(&dead) else { return Ok(0) };
        let mut names: Vec<String> = rd.flatten().map(|e| e.file_name().to_string_lossy().to_string()).filter(|n| n.ends_with(".msg")).collect();
        names.sort();
        for name in names {
            let path = dead.join(&name);
            let body = std::fs::read(&path)?;
            if !id.is_none_or(|i| crate::transport::contains(&body, i.as_bytes())) {
                continue;
            }
            let reason = std::fs::read_to_string(path.with_extension("reason")).unwrap_or_default();
            // "<reason> (from <queue>, <n> attempts)"
            let Some(queue) = reason.rsplit_once("(from ").and_then(|(_, r)| r.split(',').next()).map(str::to_string) else { continue };
            self.publish(Publish { queue: &queue, body: &body, attempt: 0, reason: None, origin: None, trace: &[] }).await?;
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(path.with_extension("reason"));
            n += 1;
        }
        Ok(n)
    }

    async fn dead_letters(&self, limit: usize) -> anyhow::Result<Vec<super::DeadLetter>> {
        let dead = self.dir.join(edinode_actors::queues::DEAD);
        let Ok(rd) = std::fs::read_dir(&dead) else { return Ok(vec![]) };
        let mut names: Vec<String> = rd.flatten().map(|e| e.file_name().to_string_lossy().to_string()).filter(|n| n.ends_with(".msg")).collect();
        names.sort();
        let mut out = Vec::new();
        for name in names.into_iter().take(limit) {
            let path = dead.join(&name);
            let Ok(body) = std::fs::read(&path) else { continue };
            // "<reason> (from <queue>, <n> attempts)"
            let text = std::fs::read_to_string(path.with_extension("reason")).unwrap_or_default();
            let (reason, tail) = text.rsplit_once(" (from ").unwrap_or((text.as_str(), ""));
            let (queue, attempts) = tail.trim_end_matches(" attempts)").split_once(", ").unwrap_or((tail, "0"));
            out.push(super::DeadLetter::new(queue.to_string(), reason.to_string(), attempts.parse().unwrap_or(0), &body));
        }
        Ok(out)
    }
}
