//! Storage adapters: [`FsBlobStore`] (raw requests and large bodies in a directory shared by the
//! nodes), [`RedisState`] (duplicates, status, claims in Redis) and [`LocalState`] (the same in
//! one process, persisted to an append-only file, for the embedded mode).

mod local_state;
mod redis_state;
pub mod s3;

pub use local_state::LocalState;
pub use redis_state::RedisState;

use edinode_actors::BlobStore;
use std::path::{Path, PathBuf};

pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    pub fn new(root: &Path) -> std::io::Result<FsBlobStore> {
        std::fs::create_dir_all(root)?;
        Ok(FsBlobStore { root: root.to_path_buf() })
    }

    fn path(&self, key: &str) -> Result<PathBuf, String> {
        if key.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(format!("invalid blob key {key}"));
        }
        Ok(self.root.join(key))
    }
}

#[async_trait::async_trait]
impl BlobStore for FsBlobStore {
    async fn put(&self, key: &str, data: &[u8]) -> Result<(), String> {
        self.put_parts(key, &[data]).await
    }

    async fn put_parts(&self, key: &str, parts: &[&[u8]]) -> Result<(), String> {
        use std::io::Write;
        let path = self.path(key)?;
        // Written inline: a small file costs less than a hand-off to the blocking pool, and the
        // HTTP workers run on single-threaded runtimes where block_in_place is not allowed.
        (|| -> Result<(), String> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp).map_err(|e| format!("write {}: {e}", tmp.display()))?;
            for p in parts {
                f.write_all(p).map_err(|e| format!("write {}: {e}", tmp.display()))?;
            }
            std::fs::rename(&tmp, &path).map_err(|e| e.to_string())
        })()
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, String> {
        let path = self.path(key)?;
        tokio::fs::read(&path).await.map_err(|e| format!("read {}: {e}", path.display()))
    }

    async fn delete(&self, key: &str) -> Result<(), String> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), String> {
        let dir = self.path(prefix.trim_end_matches('/'))?;
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
