//! [`S3Store`]: the customer's own S3 bucket ("bring your own bucket"), the integration point for
//! received files (written under `as2gateway/<station>/<partner>/inbox/`) and for files to send
//! (picked up from `AS2/send/<station>/<partner>/`).
//!
//! The customer grants a least-privilege policy: PutObject+DeleteObject on `as2gateway/*`,
//! ListBucket only with `s3:prefix` `AS2/send/*`, GetObject+DeleteObject on `AS2/send/*`.
//! [`S3Store::check`] proves exactly those permissions before the integration is enabled, and
//! names the one that is missing.
//!
//! S3 answers a GetObject of a missing key with 403 (not 404) when the caller has no
//! `s3:ListBucket` on the bucket that applies to the request; the policy above only grants it for
//! requests carrying `s3:prefix`, so on AWS a missing key under `AS2/send/` reads as
//! [`S3Error::AccessDenied`]. [`S3Store::check`] therefore reads an existing outbound object when
//! there is one (see there).

use aws_sdk_s3::config::{Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use std::fmt;

/// Where the bucket is and how to sign requests to it.
#[derive(Clone)]
pub struct S3Settings {
    /// The plain bucket name, without `s3://`.
    pub bucket: String,
    /// The bucket's region, e.g. `eu-west-1`.
    pub region: String,
    /// Endpoint of an S3-compatible server (`http://127.0.0.1:9000`); path-style addressing is
    /// used when set. `None`: AWS.
    pub endpoint: Option<String>,
    /// Static access key; `None` (with `secret_key`): the default AWS credential chain.
    pub access_key: Option<String>,
    /// Static secret key, set together with `access_key`.
    pub secret_key: Option<String>,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret key is never printed.
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// One object of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// Milliseconds since the Unix epoch. AWS keeps whole seconds; s3s-fs milliseconds.
    pub last_modified_ms: i64,
    /// As the server sent it (quotes included); empty when the server sends none (s3s-fs does not
    /// in listings).
    pub etag: String,
}

/// What an S3 call can end in, as far as callers decide differently.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum S3Error {
    /// NoSuchKey / 404. A missing bucket is [`S3Error::Other`].
    #[error("no such key")]
    NotFound,
    /// AccessDenied or any other 403 (bad signature, unknown access key, clock skew): the error
    /// code and message.
    #[error("access denied: {0}")]
    AccessDenied(String),
    #[error("{0}")]
    Other(String),
}

/// The first step of [`S3Store::check`] that did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckFailure {
    /// The S3 operation, e.g. `PutObject`.
    pub operation: &'static str,
    /// The IAM permission it needs, e.g. `s3:PutObject`.
    pub permission: &'static str,
    /// The key (object operations) or prefix (ListObjectsV2) it was tried on.
    pub key_or_prefix: String,
    /// The server's answer.
    pub detail: String,
    /// Whether the server refused (403); false for any other failure (network, missing bucket).
    pub denied: bool,
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.denied {
            write!(f, "{} denied for {} on {}: {}", self.permission, self.operation, self.key_or_prefix, self.detail)
        } else {
            write!(f, "{} on {} failed (needs {}): {}", self.operation, self.key_or_prefix, self.permission, self.detail)
        }
    }
}

impl std::error::Error for CheckFailure {}

pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Store {
    pub async fn new(s: &S3Settings) -> anyhow::Result<S3Store> {
        if s.bucket.is_empty() || s.bucket.contains('/') {
            anyhow::bail!("invalid S3 bucket name {:?} (the plain name, without s3://)", s.bucket);
        }
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).region(Region::new(s.region.clone()));
        match (&s.access_key, &s.secret_key) {
            (Some(ak), Some(sk)) => loader = loader.credentials_provider(Credentials::new(ak, sk, None, None, "edinode-config")),
            (None, None) => {}
            _ => anyhow::bail!("S3 access_key and secret_key must be set together"),
        }
        let shared = loader.load().await;
        let mut config = aws_sdk_s3::config::Builder::from(&shared);
        if let Some(endpoint) = &s.endpoint {
            // S3-compatible servers often reject the SDK's default aws-chunked upload with CRC
            // trailers; send checksums only where the API requires them.
            config = config
                .endpoint_url(endpoint)
                .force_path_style(true)
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        Ok(S3Store { client: aws_sdk_s3::Client::from_conf(config.build()), bucket: s.bucket.clone() })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The SDK client, for calls this type does not wrap (the blob store's multipart uploads).
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    pub async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), S3Error> {
        self.client.put_object().bucket(&self.bucket).key(key).body(ByteStream::from(data)).send().await.map_err(map_err)?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>, S3Error> {
        let out = self.client.get_object().bucket(&self.bucket).key(key).send().await.map_err(map_err)?;
        let body = out.body.collect().await.map_err(|e| S3Error::Other(format!("reading {key}: {e}")))?;
        Ok(body.into_bytes().to_vec())
    }

    /// Deleting a missing key succeeds (S3 answers 204 either way).
    pub async fn delete(&self, key: &str) -> Result<(), S3Error> {
        self.client.delete_object().bucket(&self.bucket).key(key).send().await.map_err(map_err)?;
        Ok(())
    }

    /// Every object under `prefix`, following continuation tokens, in key order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, S3Error> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(map_err)?;
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                out.push(ObjectInfo {
                    key: key.to_string(),
                    size: o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                    last_modified_ms: o.last_modified().and_then(|t| t.to_millis().ok()).unwrap_or(0),
                    etag: o.e_tag().unwrap_or_default().to_string(),
                });
            }
            let next = page.next_continuation_token().filter(|_| page.is_truncated() == Some(true)).map(str::to_string);
            // A server that repeats its token (or sends none) would loop forever.
            if next.is_none() || next == token {
                break;
            }
            token = next;
        }
        Ok(out)
    }

    /// Server-side copy within the bucket (AWS checks GetObject on `from`, PutObject on `to`).
    pub async fn copy(&self, from: &str, to: &str) -> Result<(), S3Error> {
        let source = format!("{}/{}", self.bucket, encode_key(from));
        self.client.copy_object().bucket(&self.bucket).key(to).copy_source(source).send().await.map_err(map_err)?;
        Ok(())
    }

    /// Proves the permissions the integration uses, with the calls it makes, leaving nothing
    /// behind, under the least-privilege policy:
    ///
    /// 1. PutObject of a probe `<inbound_prefix>.edinode-access-check-<random>`,
    /// 2. DeleteObject of it,
    /// 3. ListObjectsV2 with prefix `outbound_prefix`,
    /// 4. GetObject: of the first object that listing returned, when there is one (the body is
    ///    not read); otherwise of a probe key under `outbound_prefix` that does not exist, where
    ///    NoSuchKey counts as allowed. The policy grants no PutObject there, so no probe object
    ///    can be created. On AWS that missing-key probe answers 403 unless the caller also has a
    ///    ListBucket that applies without `s3:prefix`, which the least-privilege policy does not
    ///    grant (the failure's detail says so).
    /// 5. DeleteObject of the missing probe key under `outbound_prefix` (204 when allowed).
    ///
    /// `inbound_prefix` is like `as2gateway/<station>/`, `outbound_prefix` like
    /// `AS2/send/<station>/`; `None` when outbound pick-up is off: then only steps 1 and 2 run,
    /// so a key with just the inbound grants (PutObject and DeleteObject on `as2gateway/*`)
    /// passes.
    pub async fn check(&self, inbound_prefix: &str, outbound_prefix: Option<&str>) -> Result<Vec<String>, CheckFailure> {
        let mut warnings = Vec::new();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let inbound_probe = format!("{inbound_prefix}.edinode-access-check-{nonce}");

        let body = b"edinode access check; safe to delete\n".to_vec();
        self.put(&inbound_probe, body).await.map_err(|e| failure("PutObject", "s3:PutObject", &inbound_probe, e))?;
        self.delete(&inbound_probe).await.map_err(|e| {
            let mut f = failure("DeleteObject", "s3:DeleteObject", &inbound_probe, e);
            f.detail.push_str(" (the probe object is left in the bucket)");
            f
        })?;
        let Some(outbound_prefix) = outbound_prefix else { return Ok(warnings) };
        let outbound_probe = format!("{outbound_prefix}.edinode-access-check-{nonce}");

        let listed = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(outbound_prefix)
            .max_keys(10)
            .send()
            .await
            .map_err(|e| failure("ListObjectsV2", "s3:ListBucket", outbound_prefix, map_err(e)))?;
        let existing = listed.contents().iter().filter_map(|o| o.key()).find(|k| !k.ends_with('/')).map(str::to_string);

        let mut read = false;
        if let Some(key) = existing {
            match self.client.get_object().bucket(&self.bucket).key(&key).send().await.map_err(map_err) {
                // Dropping the output closes the body unread.
                Ok(_) => read = true,
                // Picked up and removed since the listing: fall back to the probe.
                Err(S3Error::NotFound) => {}
                Err(e) => return Err(failure("GetObject", "s3:GetObject", &key, e)),
            }
        }
        if !read {
            match self.client.get_object().bucket(&self.bucket).key(&outbound_probe).send().await.map_err(map_err) {
                Ok(_) | Err(S3Error::NotFound) => {}
                // Under the seed's least-privilege policy AWS answers 403 for a missing key (the
                // ListBucket grant has an s3:prefix condition), so with nothing to read yet a
                // 403 here cannot prove a missing grant: accept it with a warning; the first
                // pick-up proves GetObject (and a denial then is reported with the file).
                Err(S3Error::AccessDenied(d)) => warnings.push(format!(
                    "s3:GetObject on {outbound_prefix} could not be verified: nothing to read there yet and the probe of a missing key was denied ({d}); it is proven by the first pick-up"
                )),
                Err(e) => {
                    let denied = matches!(e, S3Error::AccessDenied(_));
                    let mut f = failure("GetObject", "s3:GetObject", &outbound_probe, e);
                    if denied {
                        f.detail.push_str(
                            " (the key does not exist; S3 also answers 403 for a missing key when s3:ListBucket is granted only with an s3:prefix condition)",
                        );
                    }
                    return Err(f);
                }
            }
        }

        self.delete(&outbound_probe).await.map_err(|e| failure("DeleteObject", "s3:DeleteObject", &outbound_probe, e))?;
        Ok(warnings)
    }
}

fn failure(operation: &'static str, permission: &'static str, key_or_prefix: &str, error: S3Error) -> CheckFailure {
    let (denied, detail) = match error {
        S3Error::AccessDenied(d) => (true, d),
        S3Error::NotFound => (false, "NoSuchKey".to_string()),
        S3Error::Other(d) => (false, d),
    };
    CheckFailure { operation, permission, key_or_prefix: key_or_prefix.to_string(), detail, denied }
}

/// Classifies by the service's error code first, the HTTP status second.
pub(crate) fn map_err<E>(err: SdkError<E>) -> S3Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().unwrap_or_default().to_string();
    let message = err.message().unwrap_or_default().to_string();
    let described = if message.is_empty() { code.clone() } else { format!("{code}: {message}") };
    match (code.as_str(), status) {
        ("NoSuchKey" | "NotFound", _) => S3Error::NotFound,
        ("AccessDenied", _) | (_, Some(403)) => S3Error::AccessDenied(if described.is_empty() { "HTTP 403".into() } else { described }),
        ("", Some(404)) => S3Error::NotFound,
        _ => S3Error::Other(DisplayErrorContext(&err).to_string()),
    }
}

/// `x-amz-copy-source` wants the key URL-encoded; `/` stays as is.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The node-side error as the actors see it: the operation and key, and whether it was refused.
fn object_error(what: String, e: S3Error) -> edinode_actors::ObjectError {
    use edinode_actors::ObjectError;
    match e {
        S3Error::NotFound => ObjectError::NotFound(format!("{what}: no such key")),
        S3Error::AccessDenied(d) => ObjectError::Denied(format!("{what}: access denied: {d}")),
        S3Error::Other(d) => ObjectError::Other(format!("{what}: {d}")),
    }
}

#[async_trait::async_trait]
impl edinode_actors::ObjectStore for S3Store {
    async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), edinode_actors::ObjectError> {
        S3Store::put(self, key, data).await.map_err(|e| object_error(format!("PutObject {key}"), e))
    }
    async fn put_file(&self, key: &str, path: &std::path::Path) -> Result<(), edinode_actors::ObjectError> {
        // One PUT streamed from the file (up to 5 GiB): the same single s3:PutObject the
        // least-privilege policy allows for small documents.
        let body = ByteStream::from_path(path).await.map_err(|e| edinode_actors::ObjectError::Other(format!("read {}: {e}", path.display())))?;
        self.client.put_object().bucket(&self.bucket).key(key).body(body).send().await.map_err(|e| object_error(format!("PutObject {key}"), map_err(e)))?;
        Ok(())
    }
    async fn get(&self, key: &str) -> Result<Vec<u8>, edinode_actors::ObjectError> {
        S3Store::get(self, key).await.map_err(|e| object_error(format!("GetObject {key}"), e))
    }
    async fn reader<'a>(&'a self, key: &str) -> Result<Box<dyn edinode_actors::BlobReader + 'a>, edinode_actors::ObjectError> {
        let out = self.client.get_object().bucket(&self.bucket).key(key).send().await.map_err(|e| object_error(format!("GetObject {key}"), map_err(e)))?;
        Ok(Box::new(super::blob_s3::S3BlobReader { body: out.body, key: key.to_string() }))
    }
    async fn list(&self, prefix: &str) -> Result<Vec<edinode_actors::ObjectInfo>, edinode_actors::ObjectError> {
        Ok(S3Store::list(self, prefix)
            .await
            .map_err(|e| object_error(format!("ListObjectsV2 {prefix}"), e))?
            .into_iter()
            .map(|o| edinode_actors::ObjectInfo { key: o.key, size: o.size, last_modified_ms: o.last_modified_ms, etag: o.etag })
            .collect())
    }
    async fn delete(&self, key: &str) -> Result<(), edinode_actors::ObjectError> {
        S3Store::delete(self, key).await.map_err(|e| object_error(format!("DeleteObject {key}"), e))
    }
    async fn copy(&self, from: &str, to: &str) -> Result<(), edinode_actors::ObjectError> {
        S3Store::copy(self, from, to).await.map_err(|e| object_error(format!("CopyObject {from} -> {to}"), e))
    }
    async fn ping(&self, prefix: &str) -> Result<(), edinode_actors::ObjectError> {
        self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).max_keys(1).send().await.map(|_| ()).map_err(|e| object_error(format!("ListObjectsV2 {prefix}"), map_err(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_keys_are_percent_encoded() {
        assert_eq!(encode_key("AS2/send/st 1/p+ä.edi"), "AS2/send/st%201/p%2B%C3%A4.edi");
    }

    #[test]
    fn check_failure_reads_as_a_sentence() {
        let f = failure("PutObject", "s3:PutObject", "as2gateway/x/.probe", S3Error::AccessDenied("AccessDenied: no".into()));
        assert_eq!(f.to_string(), "s3:PutObject denied for PutObject on as2gateway/x/.probe: AccessDenied: no");
        let f = failure("ListObjectsV2", "s3:ListBucket", "AS2/send/x/", S3Error::Other("NoSuchBucket".into()));
        assert_eq!(f.to_string(), "ListObjectsV2 on AS2/send/x/ failed (needs s3:ListBucket): NoSuchBucket");
    }
}
