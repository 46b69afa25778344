//! Shared state in Redis: duplicate claims (`SET NX EX`), status history lists, name claims.

use edinode_actors::{Persistence, StateStore, StorageError};
use redis::AsyncCommands;

const STATUS_TTL_SECS: i64 = 30 * 24 * 3600;

/// Append a status record and move the summary's status forward only, in one atomic step (two
/// processes recording at once can no longer put an earlier stage's status over a final one).
/// KEYS: history list, summary hash. ARGV: entry, status, rank (-1: a milestone), now, ttl.
const RECORD_STATUS: &str = r#"
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('HSET', KEYS[2], 'updated_at', ARGV[4])
local rank = tonumber(ARGV[3])
if rank >= 0 then
  local current = tonumber(redis.call('HGET', KEYS[2], 'rank') or '-1')
  if rank >= current then
    redis.call('HSET', KEYS[2], 'status', ARGV[2], 'rank', rank)
  end
end
redis.call('EXPIRE', KEYS[2], ARGV[5])
return 1
"#;

/// A stage's records and its "handled" marker in one call: each record as [`RECORD_STATUS`]
/// does, then `SET done value NX EX ttl`.
/// KEYS: per record its history list and summary hash, then the done key (if any).
/// ARGV: done?, done ttl, now, ttl, done value, then per record: entry, status, rank.
const SETTLE: &str = r#"
local n = (#KEYS - tonumber(ARGV[1])) / 2
for i = 0, n - 1 do
  local hist, summary = KEYS[1 + i * 2], KEYS[2 + i * 2]
  local entry, status, rank = ARGV[6 + i * 3], ARGV[7 + i * 3], tonumber(ARGV[8 + i * 3])
  redis.call('RPUSH', hist, entry)
  redis.call('EXPIRE', hist, ARGV[4])
  redis.call('HSET', summary, 'updated_at', ARGV[3])
  if rank >= 0 then
    local current = tonumber(redis.call('HGET', summary, 'rank') or '-1')
    if rank >= current then
      redis.call('HSET', summary, 'status', status, 'rank', rank)
    end
  end
  redis.call('EXPIRE', summary, ARGV[4])
end
if ARGV[1] == '1' then
  redis.call('SET', KEYS[#KEYS], ARGV[5], 'NX', 'EX', ARGV[2])
end
return 1
"#;

pub struct RedisState {
    conn: redis::aio::ConnectionManager,
    prefix: String,
}

impl RedisState {
    /// Connect; warns at once when Redis does not log its writes (see [`Persistence`]).
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<RedisState> {
        let client = redis::Client::open(url)?;
        let conn = redis::aio::ConnectionManager::new(client).await?;
        let state = RedisState { conn, prefix: prefix.to_string() };
        let persistence = state.persistence().await;
        if let Some(risk) = persistence.at_risk() {
            tracing::warn!(
                message = "REDIS IS NOT DURABLE: turn on AOF (appendonly yes) before production traffic.",
                persistence = persistence.name(),
                at_risk = %risk,
            );
        }
        Ok(state)
    }

    /// Read `appendonly` and `save` with CONFIG GET.
    async fn read_persistence(&self) -> Result<Persistence, String> {
        let mut c = self.conn.clone();
        let mut get = async |name: &str| -> Result<String, String> {
            let m: std::collections::HashMap<String, String> = redis::cmd("CONFIG").arg("GET").arg(name).query_async(&mut c).await.map_err(|e| format!("CONFIG GET {name}: {e}"))?;
            m.get(name).cloned().ok_or_else(|| format!("CONFIG GET {name}: no value (CONFIG renamed or restricted?)"))
        };
        if get("appendonly").await?.eq_ignore_ascii_case("yes") {
            return Ok(Persistence::Logged);
        }
        let save = get("save").await?;
        Ok(if save.trim().is_empty() { Persistence::Volatile } else { Persistence::Snapshots(save.trim().to_string()) })
    }

    fn key(&self, k: &str) -> String {
        format!("{}{}", self.prefix, k)
    }

    /// Summary fields of a message (and its place in the time index) as pipeline commands.
    fn annotate_pipe(&self, id: &str, fields: &[(&str, String)]) -> redis::Pipeline {
        let k = self.key(&format!("msg:{id}"));
        let mut p = redis::pipe();
        for (f, v) in fields {
            p.hset(&k, *f, v).ignore();
            if *f == "received_at" {
                p.zadd(self.key("index"), id, v.parse::<i64>().unwrap_or(0)).ignore();
            }
        }
        p.expire(&k, STATUS_TTL_SECS).ignore();
        p
    }

}

#[async_trait::async_trait]
impl StateStore for RedisState {
    async fn record(&self, id: &str, status: &str, detail: &str) -> Result<(), StorageError> {
        let mut c = self.conn.clone();
        let now = crate::storage::now_ms();
        let entry = serde_json::json!({"at": now, "status": status, "detail": detail}).to_string();
        let rank = edinode_actors::lifecycle_rank(status).map(i64::from).unwrap_or(-1);
        redis::Script::new(RECORD_STATUS)
            .key(self.key(&format!("status:{id}")))
            .key(self.key(&format!("msg:{id}")))
            .arg(entry)
            .arg(status)
            .arg(rank)
            .arg(now)
            .arg(STATUS_TTL_SECS)
            .invoke_async::<i64>(&mut c)
            .await
            .map(|_| ())
            .map_err(failed("record status of", id))
    }

    async fn settle(&self, records: &[edinode_actors::StatusRecord], done: Option<(&str, &str, u64)>) -> Result<(), StorageError> {
        if records.is_empty() && done.is_none() {
            return Ok(());
        }
        let mut c = self.conn.clone();
        let now = crate::storage::now_ms();
        let script = redis::Script::new(SETTLE);
        let mut inv = script.prepare_invoke();
        inv.arg(if done.is_some() { "1" } else { "0" }).arg(done.map(|(_, _, ttl)| ttl.max(1)).unwrap_or(1)).arg(now).arg(STATUS_TTL_SECS).arg(done.map(|(_, v, _)| v).unwrap_or(""));
        for r in records {
            inv.key(self.key(&format!("status:{}", r.id))).key(self.key(&format!("msg:{}", r.id)));
            let entry = serde_json::json!({"at": now, "status": r.status, "detail": r.detail}).to_string();
            inv.arg(entry).arg(&r.status).arg(edinode_actors::lifecycle_rank(&r.status).map(i64::from).unwrap_or(-1));
        }
        if let Some((key, _, _)) = done {
            inv.key(self.key(key));
        }
        inv.invoke_async::<i64>(&mut c).await.map(|_| ()).map_err(failed("settle", done.map(|(k, _, _)| k).unwrap_or("")))
    }

    async fn history(&self, id: &str) -> Result<Vec<(i64, String, String)>, StorageError> {
        let mut c = self.conn.clone();
        let items: Vec<String> = c.lrange(self.key(&format!("status:{id}")), 0, -1).await.map_err(failed("history of", id))?;
        Ok(items
            .iter()
            .filter_map(|s| serde_json::from_str::<serde_json::Value>(s).ok())
            .map(|v| {
                (
                    v["at"].as_i64().unwrap_or(0),
                    v["status"].as_str().unwrap_or("").to_string(),
                    v["detail"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect())
    }

    async fn set_once(&self, key: &str, value: &str, ttl_secs: u64) -> Result<String, StorageError> {
        let mut c = self.conn.clone();
        let k = self.key(key);
        let set: Option<String> = redis::cmd("SET")
            .arg(&k)
            .arg(value)
            .arg("NX")
            .arg("EX")
            .arg(ttl_secs.max(1))
            .query_async(&mut c)
            .await
            .map_err(failed("SET NX", key))?;
        if set.is_some() {
            return Ok(value.to_string());
        }
        let existing: Option<String> = c.get(&k).await.map_err(failed("SET NX", key))?;
        Ok(existing.unwrap_or_else(|| value.to_string()))
    }

    async fn ping(&self) -> bool {
        let mut c = self.conn.clone();
        matches!(tokio::time::timeout(std::time::Duration::from_secs(2), redis::cmd("PING").query_async::<String>(&mut c)).await, Ok(Ok(_)))
    }

    async fn persistence(&self) -> Persistence {
        match tokio::time::timeout(std::time::Duration::from_secs(2), self.read_persistence()).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => Persistence::Unknown(e),
            Err(_) => Persistence::Unknown("CONFIG GET timed out".into()),
        }
    }

    async fn annotate(&self, id: &str, fields: &[(&str, String)]) -> Result<(), StorageError> {
        let mut c = self.conn.clone();
        self.annotate_pipe(id, fields).query_async::<()>(&mut c).await.map_err(failed("annotate", id))
    }

    async fn annotate_and_record(&self, id: &str, fields: &[(&str, String)], status: &str, detail: &str) -> Result<(), StorageError> {
        let mut c = self.conn.clone();
        let now = crate::storage::now_ms();
        let entry = serde_json::json!({"at": now, "status": status, "detail": detail}).to_string();
        let rank = edinode_actors::lifecycle_rank(status).map(i64::from).unwrap_or(-1);
        let mut p = self.annotate_pipe(id, fields);
        // EVAL with the source (a few hundred bytes): no NOSCRIPT round trip inside a pipeline.
        p.cmd("EVAL").arg(RECORD_STATUS).arg(2).arg(self.key(&format!("status:{id}"))).arg(self.key(&format!("msg:{id}"))).arg(entry).arg(status).arg(rank).arg(now).arg(STATUS_TTL_SECS).ignore();
        p.query_async::<()>(&mut c).await.map_err(failed("annotate and record", id))
    }

    async fn summary(&self, id: &str) -> Result<Option<std::collections::BTreeMap<String, String>>, StorageError> {
        let mut c = self.conn.clone();
        let m: std::collections::BTreeMap<String, String> = c.hgetall(self.key(&format!("msg:{id}"))).await.map_err(failed("summary of", id))?;
        Ok(if m.is_empty() { None } else { Some(m) })
    }

    async fn list(&self, since_ms: i64, until_ms: i64, limit: usize) -> Result<Vec<String>, StorageError> {
        let mut c = self.conn.clone();
        redis::cmd("ZRANGE")
            .arg(self.key("index"))
            .arg(until_ms)
            .arg(since_ms)
            .arg("BYSCORE")
            .arg("REV")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut c)
            .await
            .map_err(failed("ZRANGE", "index"))
    }

    async fn get(&self, key: &str) -> Result<Option<String>, StorageError> {
        let mut c = self.conn.clone();
        c.get(self.key(key)).await.map_err(failed("GET", key))
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let mut c = self.conn.clone();
        c.del::<_, ()>(self.key(key)).await.map_err(failed("DEL", key))
    }

    async fn schedule(&self, set: &str, member: &str, at_ms: i64) -> Result<(), StorageError> {
        let mut c = self.conn.clone();
        c.zadd::<_, _, _, ()>(self.key(set), member, at_ms).await.map_err(failed("ZADD", set))
    }

    async fn due(&self, set: &str, now_ms: i64, limit: usize) -> Result<Vec<String>, StorageError> {
        let mut c = self.conn.clone();
        redis::cmd("ZRANGE").arg(self.key(set)).arg("-inf").arg(now_ms).arg("BYSCORE").arg("LIMIT").arg(0).arg(limit).query_async(&mut c).await.map_err(failed("ZRANGE", set))
    }

    async fn unschedule(&self, set: &str, member: &str) -> Result<(), StorageError> {
        let mut c = self.conn.clone();
        c.zrem::<_, _, ()>(self.key(set), member).await.map_err(failed("ZREM", set))
    }
}

/// A Redis error as a storage error naming the operation and key: a server or connection that
/// failed, worth trying again.
fn failed<'a>(op: &'a str, key: &'a str) -> impl FnOnce(redis::RedisError) -> StorageError + 'a {
    move |e| StorageError::unavailable(format!("Redis {op} {key}"), e)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stage's statuses and its marker in one script: the same rules as one record at a time.
    #[tokio::test]
    async fn settle_records_and_marks_done_in_one_script() {
        let prefix = format!("edinode-settle-{}:", uuid::Uuid::new_v4().simple());
        let a = RedisState::connect("redis://127.0.0.1:6379/", &prefix).await.unwrap();
        crate::storage::check_settle(&a, "r").await;
        let mut c = a.conn.clone();
        let keys: Vec<String> = c.keys(format!("{prefix}*")).await.unwrap();
        let _: () = c.del(keys).await.unwrap();
    }

    /// Two processes (two connections) record the statuses of the same messages at once, in
    /// either order: the summary always ends at the highest-ranked status.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_status_records_end_at_the_final_status() {
        let prefix = format!("edinode-race-{}:", uuid::Uuid::new_v4().simple());
        let a = std::sync::Arc::new(RedisState::connect("redis://127.0.0.1:6379/", &prefix).await.unwrap());
        let b = std::sync::Arc::new(RedisState::connect("redis://127.0.0.1:6379/", &prefix).await.unwrap());
        let ids: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
        let mut tasks = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let (a, b, id) = (a.clone(), b.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                let (first, second) = if i % 2 == 0 { (a, b) } else { (b, a) };
                let x = tokio::spawn({
                    let id = id.clone();
                    async move { first.record(&id, "delivered", "by the deliverer").await }
                });
                let y = tokio::spawn({
                    let id = id.clone();
                    async move { second.record(&id, "processed", "by the MDN sender").await }
                });
                x.await.unwrap().unwrap();
                y.await.unwrap().unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for id in &ids {
            let s = a.summary(id).await.unwrap().unwrap();
            assert_eq!(s.get("status").map(String::as_str), Some("delivered"), "{id}");
            assert_eq!(a.history(id).await.unwrap().len(), 2);
        }
        let mut c = a.conn.clone();
        let keys: Vec<String> = c.keys(format!("{prefix}*")).await.unwrap();
        if !keys.is_empty() {
            let _: () = c.del(keys).await.unwrap();
        }
    }
}
