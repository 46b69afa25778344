//! Storage adapters: [`FsBlobStore`] (raw requests and large bodies in a directory) or
//! [`blob_s3::S3BlobStore`] (the same in an S3-compatible bucket, for nodes that share no disk),
//! chosen by [`blobs::BlobSettings`]; [`RedisState`] (duplicates, status, claims in Redis) and
//! [`LocalState`] (the same in one process, persisted to an append-only file, for the embedded
//! mode). Each maps its own failures to [`edinode_actors::StorageError`] once.
//!
//! Also: [`s3`] (a station's own bucket and its access check), [`sweep`] (blobs past their
//! retention), [`report`] (what `check-config` says about these services).

pub mod blob_s3;
pub mod blobs;
mod local_state;
mod redis_state;
pub mod report;
pub mod s3;
pub mod sweep;

pub use local_state::LocalState;
pub use redis_state::RedisState;

use edinode_actors::{files, BlobReader, BlobStore, BlobWriter, StorageError};
use std::path::{Path, PathBuf};

pub struct FsBlobStore {
    root: PathBuf,
    /// Sync each blob and its directory entry before a write returns.
    fsync: bool,
}

impl FsBlobStore {
    pub fn new(root: &Path, fsync: bool) -> std::io::Result<FsBlobStore> {
        std::fs::create_dir_all(root.join(".tmp"))?;
        // Temporary files of writes cut short by kill -9 (a new process has none in flight).
        files::sweep_temp(&root.join(".tmp"), std::time::Duration::from_secs(3600));
        Ok(FsBlobStore { root: root.to_path_buf(), fsync })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    /// A new temporary file under `.tmp/` (outside every key's folder).
    fn temp(&self) -> PathBuf {
        self.root.join(".tmp").join(files::temp_name("blob-"))
    }

    /// Move a finished temporary file to its key (replacing: a key has one writer).
    fn publish(&self, tmp: &Path, path: &Path) -> Result<(), StorageError> {
        let parent = path.parent().ok_or_else(|| StorageError::invalid("blob key without a folder"))?;
        let mut tries = 0;
        loop {
            std::fs::create_dir_all(parent).map_err(|e| StorageError::io(format!("create {}", parent.display()), e))?;
            match std::fs::rename(tmp, path) {
                // The folder was removed between the two calls (a sweep emptying it): once more.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries == 0 && tmp.exists() => tries += 1,
                r => break r.map_err(|e| StorageError::io(format!("rename to {}", path.display()), e))?,
            }
        }
        if self.fsync {
            files::sync_dir(parent).map_err(|e| StorageError::io(format!("sync {}", parent.display()), e))?;
        }
        Ok(())
    }
}

/// A blob being written to a temporary file; renamed to its key on finish, removed if dropped.
struct FsBlobWriter<'a> {
    store: &'a FsBlobStore,
    file: Option<std::fs::File>,
    tmp: PathBuf,
    path: PathBuf,
    len: u64,
}

impl Drop for FsBlobWriter<'_> {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[async_trait::async_trait]
impl BlobWriter for FsBlobWriter<'_> {
    async fn write(&mut self, data: &[u8]) -> Result<(), StorageError> {
        use std::io::Write;
        let f = self.file.as_mut().ok_or_else(|| StorageError::invalid("blob already finished"))?;
        // Inline: the HTTP workers hand over chunks of at most tens of KiB.
        f.write_all(data).map_err(|e| StorageError::io(format!("write {}", self.tmp.display()), e))?;
        self.len += data.len() as u64;
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64, StorageError> {
        let f = self.file.take().ok_or_else(|| StorageError::invalid("blob already finished"))?;
        if self.store.fsync {
            f.sync_data().map_err(|e| StorageError::io(format!("sync {}", self.tmp.display()), e))?;
        }
        drop(f);
        if let Err(e) = self.store.publish(&self.tmp, &self.path) {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(e);
        }
        Ok(self.len)
    }
}

/// A blob file read a piece at a time.
struct FsBlobReader {
    file: tokio::fs::File,
    path: PathBuf,
}

#[async_trait::async_trait]
impl BlobReader for FsBlobReader {
    async fn next(&mut self) -> Result<Option<Vec<u8>>, StorageError> {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; edinode_proto::stream::CHUNK];
        let mut n = 0;
        while n < buf.len() {
            let got = self.file.read(&mut buf[n..]).await.map_err(|e| StorageError::io(format!("read {}", self.path.display()), e))?;
            if got == 0 {
                break;
            }
            n += got;
        }
        buf.truncate(n);
        Ok((n > 0).then_some(buf))
    }
}

#[async_trait::async_trait]
impl BlobStore for FsBlobStore {
    async fn reader<'a>(&'a self, key: &str) -> Result<Box<dyn BlobReader + 'a>, StorageError> {
        let path = self.path(key)?;
        let file = tokio::fs::File::open(&path).await.map_err(|e| StorageError::io(format!("open {}", path.display()), e))?;
        Ok(Box::new(FsBlobReader { file, path }))
    }

    async fn writer<'a>(&'a self, key: &str) -> Result<Box<dyn BlobWriter + 'a>, StorageError> {
        let path = self.path(key)?;
        let tmp = self.temp();
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(|e| StorageError::io(format!("create {}", tmp.display()), e))?;
        Ok(Box::new(FsBlobWriter { store: self, file: Some(file), tmp, path, len: 0 }))
    }

    async fn put(&self, key: &str, data: &[u8]) -> Result<(), StorageError> {
        self.put_parts(key, &[data]).await
    }

    async fn put_parts(&self, key: &str, parts: &[&[u8]]) -> Result<(), StorageError> {
        let path = self.path(key)?;
        // Written inline: a small file costs less than a hand-off to the blocking pool, and the
        // HTTP workers run on single-threaded runtimes where block_in_place is not allowed.
        let tmp = self.temp();
        files::write_new(&tmp, parts, self.fsync).map_err(|e| StorageError::io(format!("write {}", tmp.display()), e))?;
        let r = self.publish(&tmp, &path);
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        r
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        let path = self.path(key)?;
        tokio::fs::read(&path).await.map_err(|e| StorageError::io(format!("read {}", path.display()), e))
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key)?;
        gone(tokio::fs::remove_file(&path).await, || format!("remove {}", path.display()))
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        let dir = self.path(prefix.trim_end_matches('/'))?;
        gone(tokio::fs::remove_dir_all(&dir).await, || format!("remove {}", dir.display()))
    }

    async fn delete_older(&self, prefix: &str, before_ms: i64) -> Result<usize, StorageError> {
        let dir = self.path(prefix.trim_end_matches('/'))?;
        let before = std::time::UNIX_EPOCH + std::time::Duration::from_millis(before_ms.max(0) as u64);
        let what = format!("sweep {}", dir.display());
        tokio::task::spawn_blocking(move || files::remove_older(&dir, before))
            .await
            .map_err(|e| StorageError::unavailable(what.clone(), e))?
            .map_err(|e| StorageError::io(what, e))
    }
}

/// A removal's outcome: what was not there counts as removed.
fn gone(r: std::io::Result<()>, what: impl FnOnce() -> String) -> Result<(), StorageError> {
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StorageError::io(what(), e)),
        _ => Ok(()),
    }
}

/// A blob key is `/`-separated names, none empty or starting with a dot (the same keys work in a
/// directory and in a bucket; `.tmp/` stays the directory store's own).
pub(crate) fn check_key(key: &str) -> Result<(), StorageError> {
    if key.split('/').any(|c| c.is_empty() || c == "." || c == ".." || c.starts_with('.')) {
        return Err(StorageError::invalid(format!("invalid blob key {key}")));
    }
    Ok(())
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// What every state store's [`edinode_actors::StateStore::settle`] must do: records land with
/// the status rank rules of `record`, and the "handled" marker is set once.
#[cfg(test)]
pub(crate) async fn check_settle(store: &dyn edinode_actors::StateStore, tag: &str) {
    use edinode_actors::StatusRecord;
    let (m1, m2, done) = (format!("{tag}-m1"), format!("{tag}-m2"), format!("done:{tag}"));
    let rec = |id: &str, status: &str| StatusRecord { id: id.to_string(), status: status.to_string(), detail: format!("{status} detail") };
    store.record(&m1, "delivered", "first").await.unwrap();
    store.settle(&[rec(&m1, "processed"), rec(&m2, "decrypted"), rec(&m2, "delivered")], Some((&done, "1", 60))).await.unwrap();
    let s1 = store.summary(&m1).await.unwrap().unwrap();
    assert_eq!(s1.get("status").map(String::as_str), Some("delivered"), "a lower rank does not move the summary back");
    assert_eq!(store.history(&m1).await.unwrap().len(), 2);
    let h2: Vec<String> = store.history(&m2).await.unwrap().into_iter().map(|(_, s, _)| s).collect();
    assert_eq!(h2, ["decrypted", "delivered"], "records in order");
    assert_eq!(store.summary(&m2).await.unwrap().unwrap().get("status").map(String::as_str), Some("delivered"));
    assert_eq!(store.get(&done).await.unwrap().as_deref(), Some("1"));
    // Summary fields and a first status together.
    let m3 = format!("{tag}-m3");
    store.annotate_and_record(&m3, &[("direction", "inbound".into()), ("received_at", "1700000000000".into())], "received", "10 bytes").await.unwrap();
    let s3 = store.summary(&m3).await.unwrap().unwrap();
    assert_eq!((s3.get("direction").map(String::as_str), s3.get("status").map(String::as_str)), (Some("inbound"), Some("received")));
    assert!(store.list(1_699_999_999_000, 1_700_000_001_000, 10).await.unwrap().contains(&m3), "in the time index");
    // Only the marker, already set: nothing changes.
    store.settle(&[], Some((&done, "2", 60))).await.unwrap();
    assert_eq!(store.get(&done).await.unwrap().as_deref(), Some("1"));
    assert_eq!(store.history(&m2).await.unwrap().len(), 2);
}
