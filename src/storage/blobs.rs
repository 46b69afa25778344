//! The `[blobs]` section: which [`BlobStore`] holds the node's blobs, a directory
//! ([`FsBlobStore`]) or an S3-compatible bucket ([`S3BlobStore`]).

use super::blob_s3::S3BlobStore;
use super::s3::S3Settings;
use super::FsBlobStore;
use crate::config::Secret;
use edinode_actors::BlobStore;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobBackend {
    /// A directory: one node, or nodes that share it (NFS, one machine).
    Fs,
    /// An S3-compatible bucket: nodes share no disk.
    S3,
}

/// Where raw captures, claim-checked bodies, working copies of layers, receipts, outbound
/// documents and AS4 payloads are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobSettings {
    /// `fs` or `s3`.
    pub backend: BlobBackend,
    /// fs: the directory; empty: `<node.data_dir>/blobs`.
    pub dir: PathBuf,
    /// s3: the bucket (the node's own, never a station's bucket).
    pub bucket: String,
    /// s3: prefix of every key (e.g. `edinode/`), so one bucket can serve several deployments.
    pub prefix: String,
    /// s3: the bucket's region.
    pub region: String,
    /// s3: URL of an S3-compatible server (path-style addressing); empty: AWS.
    pub endpoint: String,
    /// s3: static access key; empty (with `secret_key`): the default AWS credential chain.
    pub access_key: String,
    /// s3: static secret key, set together with `access_key`.
    pub secret_key: Secret,
    /// Raw captures kept after a failure, receipts (MDNs) and outbound documents (needed to
    /// resend) are deleted this many days after they were written; 0 keeps them.
    pub retention_days: u64,
    /// Working copies (`work/`) of messages that never reached an outcome (dead-lettered, or
    /// a process killed mid-way) are deleted this many hours after they were written; 0 keeps
    /// them.
    pub orphan_hours: u64,
}

impl BlobSettings {
    /// The S3 settings of the blob bucket; an error names the key that is wrong.
    pub fn s3(&self) -> Result<S3Settings, String> {
        if self.bucket.is_empty() {
            return Err("blobs.bucket: backend = \"s3\" needs a bucket".into());
        }
        let keys = match (self.access_key.is_empty(), self.secret_key.expose().is_empty()) {
            (true, true) => (None, None),
            (false, false) => (Some(self.access_key.clone()), Some(self.secret_key.expose().to_string())),
            _ => return Err("blobs.access_key: access_key and secret_key go together (both empty: the default AWS credential chain)".into()),
        };
        Ok(S3Settings {
            bucket: self.bucket.clone(),
            region: self.region.clone(),
            endpoint: (!self.endpoint.is_empty()).then(|| self.endpoint.clone()),
            access_key: keys.0,
            secret_key: keys.1,
        })
    }

    /// Checks that need no network (for `check-config`).
    pub fn validate(&self) -> Result<(), String> {
        match self.backend {
            BlobBackend::Fs => Ok(()),
            BlobBackend::S3 => self.s3().map(|_| ()),
        }
    }

    /// A sentence naming where blobs go (for logs and `check-config`).
    pub fn describe(&self, data_dir: &Path) -> String {
        match self.backend {
            BlobBackend::Fs => format!("directory {}", self.fs_dir(data_dir).display()),
            BlobBackend::S3 => format!(
                "S3 bucket {} prefix {:?} at {}",
                self.bucket,
                self.prefix,
                if self.endpoint.is_empty() { format!("AWS {}", self.region) } else { self.endpoint.clone() }
            ),
        }
    }

    fn fs_dir(&self, data_dir: &Path) -> PathBuf {
        if self.dir.as_os_str().is_empty() { data_dir.join("blobs") } else { self.dir.clone() }
    }
}

/// Open the configured blob store.
pub async fn open(s: &BlobSettings, data_dir: &Path, fsync: bool) -> anyhow::Result<Arc<dyn BlobStore>> {
    let store: Arc<dyn BlobStore> = match s.backend {
        BlobBackend::Fs => Arc::new(FsBlobStore::new(&s.fs_dir(data_dir), fsync)?),
        BlobBackend::S3 => Arc::new(S3BlobStore::new(&s.s3().map_err(anyhow::Error::msg)?, &s.prefix).await?),
    };
    tracing::info!(message = "Blob store opened.", blobs = %s.describe(data_dir));
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The s3 defaults with `toml` lines over them.
    fn settings(toml: &str) -> BlobSettings {
        let base = "backend = \"s3\"\ndir = \"\"\nbucket = \"b\"\nprefix = \"p/\"\nregion = \"r\"\nendpoint = \"\"\naccess_key = \"\"\nsecret_key = \"\"\nretention_days = 30\norphan_hours = 24\n";
        config::Config::builder()
            .add_source(config::File::from_str(base, config::FileFormat::Toml))
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap()
    }

    #[test]
    fn s3_needs_a_bucket_and_both_keys_or_none() {
        assert!(settings("").s3().is_ok_and(|s| s.access_key.is_none() && s.endpoint.is_none()));
        assert!(settings("bucket = \"\"").validate().unwrap_err().starts_with("blobs.bucket"));
        assert!(settings("access_key = \"ak\"").validate().unwrap_err().starts_with("blobs.access_key"));
        let s = settings("access_key = \"ak\"\nsecret_key = \"sk\"\nendpoint = \"http://127.0.0.1:9000\"").s3().unwrap();
        assert_eq!((s.access_key.as_deref(), s.secret_key.as_deref(), s.endpoint.as_deref()), (Some("ak"), Some("sk"), Some("http://127.0.0.1:9000")));
    }

    #[test]
    fn the_secret_key_is_never_printed() {
        let s = settings("access_key = \"ak\"\nsecret_key = \"very-secret\"");
        assert!(!format!("{s:?}").contains("very-secret"));
    }
}
