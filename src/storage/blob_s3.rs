//! [`S3BlobStore`]: the node's blobs (raw captures, claim-checked bodies, working copies of
//! unwrapped layers, receipts, outbound documents, AS4 payloads) in an S3-compatible bucket, so
//! nodes on separate hosts share no directory. Keys are the blob keys under a configured prefix
//! (`<prefix>raw/<id>`, `<prefix>work/<id>/layer0`, ...).
//!
//! Writes stream: [`S3BlobStore::writer`] buffers up to one part (8 MiB by default); a blob that
//! ends within it is one PutObject, a larger one a multipart upload whose parts go up as they
//! fill, so a 400 MiB body never sits in memory. Nothing is visible under the key before
//! `finish` (S3 shows a multipart object only once completed); a writer dropped unfinished
//! aborts its upload, so the bucket keeps no orphaned parts (a process killed mid-upload leaves
//! them to the bucket's `AbortIncompleteMultipartUpload` lifecycle rule, see README).
//!
//! The client is built exactly as for a station's own bucket ([`S3Store`]: custom endpoint with
//! path-style addressing, static keys or the default AWS chain).

use super::s3::{map_err, S3Error, S3Settings, S3Store};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use edinode_actors::{BlobReader, BlobStore, BlobWriter, StorageError, StorageErrorKind};

/// Part size of multipart uploads (S3's minimum is 5 MiB for all parts but the last).
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;

/// DeleteObjects takes at most this many keys a request.
const DELETE_BATCH: usize = 1000;

pub struct S3BlobStore {
    store: S3Store,
    prefix: String,
    part_size: usize,
}

impl S3BlobStore {
    /// A store for the blobs under `prefix` (empty, or ending in `/`) of the bucket in `s`.
    pub async fn new(s: &S3Settings, prefix: &str) -> anyhow::Result<S3BlobStore> {
        let prefix = match prefix.trim_start_matches('/') {
            "" => String::new(),
            p if p.ends_with('/') => p.to_string(),
            p => format!("{p}/"),
        };
        Ok(S3BlobStore { store: S3Store::new(s).await?, prefix, part_size: DEFAULT_PART_SIZE })
    }

    /// Parts of this size (at least 5 MiB, S3's minimum): a smaller blob is one PutObject.
    pub fn with_part_size(mut self, bytes: usize) -> S3BlobStore {
        self.part_size = bytes.max(5 * 1024 * 1024);
        self
    }

    pub fn bucket(&self) -> &str {
        self.store.bucket()
    }

    /// The object key of a blob key.
    fn object(&self, key: &str) -> Result<String, StorageError> {
        super::check_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    /// Delete these objects (full keys), a batch a request; a missing key counts as deleted.
    async fn delete_objects(&self, keys: &[String]) -> Result<(), StorageError> {
        for batch in keys.chunks(DELETE_BATCH) {
            let objects = batch.iter().map(|k| ObjectIdentifier::builder().key(k).build()).collect::<Result<Vec<_>, _>>().map_err(|e| StorageError::invalid("DeleteObjects").with_source(e))?;
            let delete = Delete::builder().set_objects(Some(objects)).quiet(true).build().map_err(|e| StorageError::invalid("DeleteObjects").with_source(e))?;
            let out = self
                .store
                .client()
                .delete_objects()
                .bucket(self.store.bucket())
                .delete(delete)
                .send()
                .await
                .map_err(|e| described("DeleteObjects", &format!("({} keys from {})", batch.len(), batch[0]), map_err(e)))?;
            if let Some(e) = out.errors().first() {
                return Err(StorageError::new(
                    StorageErrorKind::Unavailable,
                    format!("DeleteObjects: {} of {} keys not deleted; first {}: {} {}", out.errors().len(), batch.len(), e.key().unwrap_or_default(), e.code().unwrap_or_default(), e.message().unwrap_or_default()),
                ));
            }
        }
        Ok(())
    }

}

/// A multipart upload in progress.
struct Upload {
    id: String,
    parts: Vec<CompletedPart>,
}

/// Buffers one part; becomes a multipart upload when the blob outgrows it.
struct S3BlobWriter {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    part_size: usize,
    buf: Vec<u8>,
    upload: Option<Upload>,
    len: u64,
}

impl S3BlobWriter {
    /// Send the first `part_size` bytes of the buffer as the next part.
    async fn send_part(&mut self) -> Result<(), StorageError> {
        if self.upload.is_none() {
            let out = self
                .client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .send()
                .await
                .map_err(|e| described("CreateMultipartUpload", &self.key, map_err(e)))?;
            let id = out.upload_id().ok_or_else(|| StorageError::new(StorageErrorKind::Unavailable, format!("CreateMultipartUpload {}: no upload id in the answer", self.key)))?;
            self.upload = Some(Upload { id: id.to_string(), parts: Vec::new() });
        }
        let rest = if self.buf.len() > self.part_size { self.buf.split_off(self.part_size) } else { Vec::new() };
        let part = std::mem::replace(&mut self.buf, rest);
        let Some(upload) = self.upload.as_mut() else { return Err(StorageError::invalid("multipart upload missing")) };
        let number = upload.parts.len() as i32 + 1;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&upload.id)
            .part_number(number)
            .body(ByteStream::from(part))
            .send()
            .await
            .map_err(|e| described("UploadPart", &format!("{} #{number}", self.key), map_err(e)))?;
        upload.parts.push(CompletedPart::builder().part_number(number).set_e_tag(out.e_tag().map(str::to_string)).build());
        Ok(())
    }

    async fn complete(&mut self) -> Result<(), StorageError> {
        if !self.buf.is_empty() {
            self.send_part().await?;
        }
        let Some(upload) = self.upload.as_ref() else { return Err(StorageError::invalid("multipart upload missing")) };
        let parts = CompletedMultipartUpload::builder().set_parts(Some(upload.parts.clone())).build();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&upload.id)
            .multipart_upload(parts)
            .send()
            .await
            .map_err(|e| described("CompleteMultipartUpload", &self.key, map_err(e)))?;
        self.upload = None;
        Ok(())
    }
}

impl Drop for S3BlobWriter {
    fn drop(&mut self) {
        // Unfinished (cut short, or failed): abort the upload so its parts are not kept (and
        // billed) in the bucket. Fire and forget; the bucket's lifecycle rule is the backstop.
        let Some(upload) = self.upload.take() else { return };
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let (client, bucket, key) = (self.client.clone(), self.bucket.clone(), self.key.clone());
        rt.spawn(async move {
            if let Err(e) = client.abort_multipart_upload().bucket(&bucket).key(&key).upload_id(&upload.id).send().await {
                tracing::warn!(message = "Failed to abort an unfinished multipart upload.", key, error = %map_err(e));
            }
        });
    }
}

#[async_trait::async_trait]
impl BlobWriter for S3BlobWriter {
    async fn write(&mut self, data: &[u8]) -> Result<(), StorageError> {
        self.buf.extend_from_slice(data);
        self.len += data.len() as u64;
        while self.buf.len() >= self.part_size {
            self.send_part().await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64, StorageError> {
        if self.upload.is_some() {
            // On failure, dropping `self` aborts the upload.
            self.complete().await?;
        } else {
            let body = std::mem::take(&mut self.buf);
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| described("PutObject", &self.key, map_err(e)))?;
        }
        Ok(self.len)
    }
}

/// An S3 error as a storage error naming the operation and key: NoSuchKey is
/// [`StorageErrorKind::NotFound`]; anything else, a refusal included (a policy or a clock
/// fixed later), is worth trying again.
fn described(op: &str, key: &str, e: S3Error) -> StorageError {
    let kind = if e == S3Error::NotFound { StorageErrorKind::NotFound } else { StorageErrorKind::Unavailable };
    StorageError::new(kind, format!("{op} {key}")).with_source(e)
}

/// An object's body read as it arrives, handed out in pieces of about a CHUNK.
/// A GetObject body read a piece at a time (the node's blobs, and the station buckets' files).
pub(crate) struct S3BlobReader {
    pub(crate) body: ByteStream,
    pub(crate) key: String,
}

#[async_trait::async_trait]
impl BlobReader for S3BlobReader {
    async fn next(&mut self) -> Result<Option<Vec<u8>>, StorageError> {
        let mut buf = Vec::new();
        while buf.len() < edinode_proto::stream::CHUNK {
            match self.body.next().await {
                Some(Ok(b)) => buf.extend_from_slice(&b),
                Some(Err(e)) => return Err(StorageError::unavailable(format!("GetObject {}: reading the body", self.key), e)),
                None => break,
            }
        }
        Ok((!buf.is_empty()).then_some(buf))
    }
}

#[async_trait::async_trait]
impl BlobStore for S3BlobStore {
    async fn reader<'a>(&'a self, key: &str) -> Result<Box<dyn BlobReader + 'a>, StorageError> {
        let object = self.object(key)?;
        let out = self.store.client().get_object().bucket(self.store.bucket()).key(&object).send().await.map_err(|e| described("GetObject", &object, map_err(e)))?;
        Ok(Box::new(S3BlobReader { body: out.body, key: object }))
    }

    async fn writer<'a>(&'a self, key: &str) -> Result<Box<dyn BlobWriter + 'a>, StorageError> {
        Ok(Box::new(S3BlobWriter {
            client: self.store.client().clone(),
            bucket: self.store.bucket().to_string(),
            key: self.object(key)?,
            part_size: self.part_size,
            buf: Vec::new(),
            upload: None,
            len: 0,
        }))
    }

    async fn put(&self, key: &str, data: &[u8]) -> Result<(), StorageError> {
        self.put_parts(key, &[data]).await
    }

    async fn put_parts(&self, key: &str, parts: &[&[u8]]) -> Result<(), StorageError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len <= self.part_size {
            let object = self.object(key)?;
            return self.store.put(&object, parts.concat()).await.map_err(|e| described("PutObject", &object, e));
        }
        // Large: a part at a time, never the whole blob joined in memory.
        let mut w = self.writer(key).await?;
        for p in parts {
            w.write(p).await?;
        }
        w.finish().await.map(|_| ())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        let object = self.object(key)?;
        self.store.get(&object).await.map_err(|e| described("GetObject", &object, e))
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let object = self.object(key)?;
        self.store.delete(&object).await.map_err(|e| described("DeleteObject", &object, e))
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        // `work/<id>/`: the trailing slash keeps `work/<id>0/` out.
        let prefix = format!("{}/", prefix.trim_end_matches('/'));
        let full = self.object(&prefix[..prefix.len() - 1]).map(|o| format!("{o}/"))?;
        let listed = self.store.list(&full).await.map_err(|e| described("ListObjectsV2", &full, e))?;
        let keys: Vec<String> = listed.into_iter().map(|o| o.key).collect();
        self.delete_objects(&keys).await
    }

    async fn delete_older(&self, prefix: &str, before_ms: i64) -> Result<usize, StorageError> {
        super::check_key(prefix.trim_end_matches('/'))?;
        let full = format!("{}{prefix}", self.prefix);
        let listed = self.store.list(&full).await.map_err(|e| described("ListObjectsV2", &full, e))?;
        let old: Vec<String> = listed.into_iter().filter(|o| o.last_modified_ms < before_ms).map(|o| o.key).collect();
        self.delete_objects(&old).await?;
        Ok(old.len())
    }

    async fn ping(&self) -> Result<(), StorageError> {
        let c = self.store.client();
        c.list_objects_v2().bucket(self.store.bucket()).prefix(&self.prefix).max_keys(1).send().await.map(|_| ()).map_err(|e| described("ListObjectsV2", &self.prefix, map_err(e)))
    }
}
