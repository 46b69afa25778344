//! The embedded transport: each queue is a directory of spool files, one file per message,
//! written before `publish` returns and removed when the message is acknowledged. Unacknowledged
//! files are fed again on start, so a node survives kill -9 (and, with `fsync`, power loss).
//! It serves one process: it cannot scale out (use RabbitMQ for that).

use super::{Acker, Delivery, Publish, Transport};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::mpsc;

pub struct LocalTransport {
    dir: PathBuf,
    fsync: bool,
    seq: AtomicU64,
    queues: Mutex<HashMap<String, mpsc::Sender<Delivery>>>,
    pending: Mutex<HashMap<String, mpsc::Receiver<Delivery>>>,
    replies: Mutex<HashMap<String, mpsc::Sender<Vec<u8>>>>,
}

struct FileAcker {
    path: PathBuf,
    tx: Option<(mpsc::Sender<Delivery>, Vec<u8>, u32)>,
}

#[async_trait::async_trait]
impl Acker for FileAcker {
    async fn ack(self: Box<Self>) -> anyhow::Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
    async fn requeue(self: Box<Self>) -> anyhow::Result<()> {
        let this = *self;
        if let Some((tx, body, attempt)) = this.tx {
            let again = Delivery { body: body.clone(), attempt, trace: vec![], headers: vec![], acker: Box::new(FileAcker { path: this.path, tx: Some((tx.clone(), body, attempt)) }) };
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let _ = tx.send(again).await;
        }
        Ok(())
    }
}

const CAPACITY: usize = 100_000;

impl LocalTransport {
    pub fn open(dir: &Path, fsync: bool) -> anyhow::Result<LocalTransport> {
        std::fs::create_dir_all(dir)?;
        Ok(LocalTransport {
            dir: dir.to_path_buf(),
            fsync,
            seq: AtomicU64::new(0),
            queues: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            replies: Mutex::new(HashMap::new()),
        })
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

    fn file_name(&self, attempt: u32) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0);
        format!("{:020}-{:010}-{}.msg", now, self.seq.fetch_add(1, Ordering::Relaxed), attempt)
    }
}

fn attempt_of(name: &str) -> u32 {
    name.trim_end_matches(".msg").rsplit('-').next().and_then(|a| a.parse().ok()).unwrap_or(0)
}

#[async_trait::async_trait]
impl Transport for LocalTransport {
    async fn publish(&self, p: Publish<'_>) -> anyhow::Result<()> {
        let qdir = self.dir.join(p.queue);
        let path = qdir.join(self.file_name(p.attempt));
        let body = p.body.to_vec();
        {
            // Inline, not through the blocking pool: a small spool file is cheaper to write than
            // a thread hand-off (fsync, when asked, is the slow part either way).
            use std::io::Write;
            if !qdir.is_dir() {
                std::fs::create_dir_all(&qdir)?;
            }
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            if self.fsync {
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &path)?;
        }
        if let Some(reason) = p.reason {
            // Dead letters are kept as files with their reason beside them; nobody consumes them here.
            tokio::fs::write(path.with_extension("reason"), format!("{} (from {}, {} attempts)", reason, p.origin.unwrap_or("?"), p.attempt)).await?;
            return Ok(());
        }
        let tx = self.sender(p.queue);
        let d = Delivery { body: body.clone(), attempt: p.attempt, trace: p.trace.to_vec(), headers: vec![], acker: Box::new(FileAcker { path, tx: Some((tx.clone(), body, p.attempt)) }) };
        tx.send(d).await.map_err(|_| anyhow::anyhow!("local queue {} closed", p.queue))
    }

    async fn reply(&self, queue: &str, body: &[u8]) -> anyhow::Result<()> {
        let tx = self.replies.lock().unwrap_or_else(|p| p.into_inner()).get(queue).cloned();
        if let Some(tx) = tx {
            let _ = tx.send(body.to_vec()).await;
        }
        Ok(())
    }

    async fn publish_exchange(&self, _exchange: &str, _rk: &str, _headers: &[(String, String)], _body: &[u8]) -> anyhow::Result<()> {
        // No bus in embedded mode: documents are in the inbox directory.
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
        // Feed what was left from a previous run, oldest first.
        let qdir = self.dir.join(queue);
        tokio::fs::create_dir_all(&qdir).await?;
        let mut names = Vec::new();
        let mut rd = tokio::fs::read_dir(&qdir).await?;
        while let Some(e) = rd.next_entry().await? {
            let n = e.file_name().to_string_lossy().to_string();
            if n.ends_with(".msg") {
                names.push(n);
            } else if n.ends_with(".tmp") {
                let _ = tokio::fs::remove_file(e.path()).await;
            }
        }
        names.sort();
        if !names.is_empty() {
            tracing::info!(message = "Recovering spooled messages.", queue, count = names.len());
        }
        for n in names {
            let path = qdir.join(&n);
            let body = tokio::fs::read(&path).await?;
            let attempt = attempt_of(&n);
            let d = Delivery { body: body.clone(), attempt, trace: vec![], headers: vec![], acker: Box::new(FileAcker { path, tx: Some((tx.clone(), body, attempt)) }) };
            tx.send(d).await.map_err(|_| anyhow::anyhow!("queue closed"))?;
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
        let mut rd = tokio::fs::read_dir(self.dir.join(queue)).await.ok()?;
        let mut n = 0;
        while let Ok(Some(e)) = rd.next_entry().await {
            if e.file_name().to_string_lossy().ends_with(".msg") {
                n += 1;
            }
        }
        Some(n)
    }

    async fn ready(&self) -> bool {
        self.dir.is_dir()
    }

    async fn replay_dead(&self, id: Option<&str>) -> anyhow::Result<usize> {
        let dead = self.dir.join(edinode_actors::queues::DEAD);
        let mut n = 0;
        let Ok(mut rd) = tokio::fs::read_dir(&dead).await else { return Ok(0) };
        let mut names = Vec::new();
        while let Some(e) = rd.next_entry().await? {
            let name = e.file_name().to_string_lossy().to_string();
            if name.ends_with(".msg") {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            let path = dead.join(&name);
            let body = tokio::fs::read(&path).await?;
            if !id.is_none_or(|i| crate::transport::contains(&body, i.as_bytes())) {
                continue;
            }
            let reason = tokio::fs::read_to_string(path.with_extension("reason")).await.unwrap_or_default();
            // "<reason> (from <queue>, <n> attempts)"
            let Some(queue) = reason.rsplit_once("(from ").and_then(|(_, r)| r.split(',').next()).map(str::to_string) else { continue };
            self.publish(Publish { queue: &queue, body: &body, attempt: 0, reason: None, origin: None, trace: &[] }).await?;
            let _ = tokio::fs::remove_file(&path).await;
            let _ = tokio::fs::remove_file(path.with_extension("reason")).await;
            n += 1;
        }
        Ok(n)
    }
}
