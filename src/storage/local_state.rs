//! State for the embedded mode: in memory, persisted to an append-only JSON-lines file that is
//! replayed on start (so duplicates are still recognised after kill -9). One process only.

use edinode_actors::{StateStore, StorageError};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

#[derive(Default)]
struct Inner {
    keys: HashMap<String, (String, i64)>,
    status: HashMap<String, Vec<(i64, String, String)>>,
    summaries: HashMap<String, std::collections::BTreeMap<String, String>>,
    schedules: HashMap<String, HashMap<String, i64>>,
}

fn apply_status(e: &mut std::collections::BTreeMap<String, String>, status: &str, at: i64) {
    e.insert("updated_at".into(), at.to_string());
    if let Some(rank) = edinode_actors::lifecycle_rank(status)
        && e.get("status").and_then(|s| edinode_actors::lifecycle_rank(s)).is_none_or(|r| rank >= r)
    {
        e.insert("status".into(), status.to_string());
    }
}

pub struct LocalState {
    inner: Mutex<Inner>,
    log: Mutex<std::fs::File>,
    /// Sync each appended record (spool.fsync): state survives power loss, not only kill -9.
    fsync: bool,
}

impl LocalState {
    pub fn open(path: &Path, fsync: bool) -> anyhow::Result<LocalState> {
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p)?;
        }
        let mut inner = Inner::default();
        if let Ok(text) = std::fs::read_to_string(path) {
            let now = crate::storage::now_ms();
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
                match v["t"].as_str() {
                    Some("k") => {
                        let exp = v["exp"].as_i64().unwrap_or(0);
                        if exp > now {
                            let k = v["k"].as_str().unwrap_or("").to_string();
                            inner.keys.entry(k).or_insert((v["v"].as_str().unwrap_or("").to_string(), exp));
                        }
                    }
                    Some("m") => {
                        let id = v["id"].as_str().unwrap_or("").to_string();
                        let e = inner.summaries.entry(id).or_default();
                        if let Some(o) = v["f"].as_object() {
                            for (k, val) in o {
                                e.insert(k.clone(), val.as_str().unwrap_or("").to_string());
                            }
                        }
                    }
                    Some("z") => {
                        let set = v["set"].as_str().unwrap_or("").to_string();
                        let m = v["m"].as_str().unwrap_or("").to_string();
                        match v["at"].as_i64() {
                            Some(at) => {
                                inner.schedules.entry(set).or_default().insert(m, at);
                            }
                            None => {
                                inner.schedules.entry(set).or_default().remove(&m);
                            }
                        }
                    }
                    Some("d") => {
                        inner.keys.remove(v["k"].as_str().unwrap_or(""));
                    }
                    Some("s") => {
                        let e = inner.summaries.entry(v["id"].as_str().unwrap_or("").to_string()).or_default();
                        apply_status(e, v["status"].as_str().unwrap_or(""), v["at"].as_i64().unwrap_or(0));
                        inner.status.entry(v["id"].as_str().unwrap_or("").to_string()).or_default().push((
                        v["at"].as_i64().unwrap_or(0),
                        v["status"].as_str().unwrap_or("").to_string(),
                        v["detail"].as_str().unwrap_or("").to_string(),
                        ));
                    }
                    _ => {}
                }
            }
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        if fsync && let Some(d) = path.parent() {
            edinode_actors::files::sync_dir(d)?;
        }
        Ok(LocalState { inner: Mutex::new(inner), log: Mutex::new(log), fsync })
    }

    fn append(&self, v: serde_json::Value) -> Result<(), StorageError> {
        self.append_all(&[v])
    }

    /// Set summary fields in memory; returns the log entry that replays it.
    fn apply_fields(&self, id: &str, fields: &[(&str, String)]) -> serde_json::Value {
        let mut obj = serde_json::Map::new();
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let e = g.summaries.entry(id.to_string()).or_default();
        for (k, v) in fields {
            e.insert(k.to_string(), v.clone());
            obj.insert(k.to_string(), serde_json::Value::String(v.clone()));
        }
        serde_json::json!({"t": "m", "id": id, "f": obj})
    }

    /// Several entries in one write (and one sync).
    fn append_all(&self, vs: &[serde_json::Value]) -> Result<(), StorageError> {
        let mut f = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let mut lines = String::new();
        for v in vs {
            lines.push_str(&v.to_string());
            lines.push('\n');
        }
        f.write_all(lines.as_bytes()).map_err(|e| StorageError::io("append to the state log", e))?;
        if self.fsync {
            f.sync_data().map_err(|e| StorageError::io("sync the state log", e))?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl StateStore for LocalState {
    async fn record(&self, id: &str, status: &str, detail: &str) -> Result<(), StorageError> {
        let at = crate::storage::now_ms();
        {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            g.status.entry(id.to_string()).or_default().push((at, status.to_string(), detail.to_string()));
            let e = g.summaries.entry(id.to_string()).or_default();
            apply_status(e, status, at);
        }
        self.append(serde_json::json!({"t": "s", "id": id, "at": at, "status": status, "detail": detail}))
    }

    async fn settle(&self, records: &[edinode_actors::StatusRecord], done: Option<(&str, &str, u64)>) -> Result<(), StorageError> {
        let at = crate::storage::now_ms();
        let mut entries = Vec::with_capacity(records.len() + 1);
        {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            for r in records {
                g.status.entry(r.id.clone()).or_default().push((at, r.status.clone(), r.detail.clone()));
                apply_status(g.summaries.entry(r.id.clone()).or_default(), &r.status, at);
                entries.push(serde_json::json!({"t": "s", "id": r.id, "at": at, "status": r.status, "detail": r.detail}));
            }
            if let Some((key, value, ttl)) = done {
                let live = g.keys.get(key).is_some_and(|(_, e)| *e > at);
                if !live {
                    let exp = at + (ttl as i64) * 1000;
                    g.keys.insert(key.to_string(), (value.to_string(), exp));
                    entries.push(serde_json::json!({"t": "k", "k": key, "v": value, "exp": exp}));
                }
            }
        }
        if entries.is_empty() {
            return Ok(());
        }
        self.append_all(&entries)
    }

    async fn history(&self, id: &str) -> Result<Vec<(i64, String, String)>, StorageError> {
        Ok(self.inner.lock().unwrap_or_else(|p| p.into_inner()).status.get(id).cloned().unwrap_or_default())
    }

    async fn set_once(&self, key: &str, value: &str, ttl_secs: u64) -> Result<String, StorageError> {
        let now = crate::storage::now_ms();
        let exp = now + (ttl_secs as i64) * 1000;
        {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((v, e)) = g.keys.get(key)
                && *e > now
            {
                return Ok(v.clone());
            }
            g.keys.insert(key.to_string(), (value.to_string(), exp));
        }
        self.append(serde_json::json!({"t": "k", "k": key, "v": value, "exp": exp}))?;
        Ok(value.to_string())
    }

    async fn annotate(&self, id: &str, fields: &[(&str, String)]) -> Result<(), StorageError> {
        let entry = self.apply_fields(id, fields);
        self.append(entry)
    }

    async fn annotate_and_record(&self, id: &str, fields: &[(&str, String)], status: &str, detail: &str) -> Result<(), StorageError> {
        let fields = self.apply_fields(id, fields);
        let at = crate::storage::now_ms();
        {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            g.status.entry(id.to_string()).or_default().push((at, status.to_string(), detail.to_string()));
            apply_status(g.summaries.entry(id.to_string()).or_default(), status, at);
        }
        self.append_all(&[fields, serde_json::json!({"t": "s", "id": id, "at": at, "status": status, "detail": detail})])
    }

    async fn summary(&self, id: &str) -> Result<Option<std::collections::BTreeMap<String, String>>, StorageError> {
        Ok(self.inner.lock().unwrap_or_else(|p| p.into_inner()).summaries.get(id).cloned())
    }

    async fn list(&self, since_ms: i64, until_ms: i64, limit: usize) -> Result<Vec<String>, StorageError> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<(i64, String)> = g
            .summaries
            .iter()
            .filter_map(|(id, m)| m.get("received_at").and_then(|r| r.parse::<i64>().ok()).map(|t| (t, id.clone())))
            .filter(|(t, _)| *t >= since_ms && *t <= until_ms)
            .collect();
        v.sort_by(|a, b| b.cmp(a));
        Ok(v.into_iter().take(limit).map(|(_, id)| id).collect())
    }

    async fn get(&self, key: &str) -> Result<Option<String>, StorageError> {
        let now = crate::storage::now_ms();
        Ok(self.inner.lock().unwrap_or_else(|p| p.into_inner()).keys.get(key).filter(|(_, e)| *e > now).map(|(v, _)| v.clone()))
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).keys.remove(key);
        self.append(serde_json::json!({"t": "d", "k": key}))
    }

    async fn schedule(&self, set: &str, member: &str, at_ms: i64) -> Result<(), StorageError> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).schedules.entry(set.to_string()).or_default().insert(member.to_string(), at_ms);
        self.append(serde_json::json!({"t": "z", "set": set, "m": member, "at": at_ms}))
    }

    async fn due(&self, set: &str, now_ms: i64, limit: usize) -> Result<Vec<String>, StorageError> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<(i64, String)> = g.schedules.get(set).map(|m| m.iter().filter(|(_, at)| **at <= now_ms).map(|(k, at)| (*at, k.clone())).collect()).unwrap_or_default();
        v.sort();
        Ok(v.into_iter().take(limit).map(|(_, k)| k).collect())
    }

    async fn unschedule(&self, set: &str, member: &str) -> Result<(), StorageError> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).schedules.entry(set.to_string()).or_default().remove(member);
        self.append(serde_json::json!({"t": "z", "set": set, "m": member, "at": null}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settle_writes_records_and_marker_in_one_append_that_a_restart_replays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.log");
        let st = LocalState::open(&path, true).unwrap();
        crate::storage::check_settle(&st, "l").await;
        drop(st);
        let again = LocalState::open(&path, true).unwrap();
        assert_eq!(again.get("done:l").await.unwrap().as_deref(), Some("1"));
        assert_eq!(again.history("l-m2").await.unwrap().len(), 2);
        assert_eq!(again.summary("l-m1").await.unwrap().unwrap().get("status").map(String::as_str), Some("delivered"));
    }
}
