//! An S3 server inside the test process: s3s-fs serves a temp directory over the real S3 protocol
//! (SigV4 checked against static keys), and [`Policy`] emulates the IAM policy of each access key,
//! answering refused requests with a real `AccessDenied` (HTTP 403).
//!
//! The emulation follows how AWS evaluates the actions S3Store uses:
//! - PutObject (and the multipart upload calls): `s3:PutObject` on the key;
//! - GetObject, HeadObject: `s3:GetObject` on the key. A missing key answers 403 instead of 404
//!   unless the policy grants `s3:ListBucket` without a prefix condition, as AWS does; turn that
//!   off with [`Policy::missing_keys_not_found`] to act like an S3-compatible server that always
//!   answers 404;
//! - DeleteObject: `s3:DeleteObject` on the key; DeleteObjects: the same for every key (AWS would
//!   answer per key inside a 200; here the whole request is refused);
//! - ListObjects(V2): `s3:ListBucket`, whose grants carry the `s3:prefix` condition
//!   (`StringLike "<prefix>*"`; an empty prefix is an unconditional grant);
//! - CopyObject: `s3:GetObject` on the source and `s3:PutObject` on the destination;
//! - anything else, or another bucket: refused unless [`Policy::full`].
//!
//! s3s-fs stores an object at `<dir>/<bucket>/<key>`; its LastModified is the file's mtime. s3s-fs
//! lists it with millisecond precision; [`AwsLike`] truncates listings to whole seconds, as AWS
//! and moto list them, so code that reads ages from a listing meets AWS's rounding here. Every
//! GetObject is recorded with the time it was served ([`TestS3::reads`]). Listings carry no
//! ETag, and deleting the last object of a "folder" leaves the empty directory behind (it is
//! never listed).
#![allow(dead_code)]

use edinode::storage::s3::S3Settings;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::SimpleAuth;
use s3s::dto::{CopyObjectInput, CopySource, DeleteObjectsInput, ListObjectsInput, ListObjectsV2Input};
use s3s::path::S3Path;
use s3s::service::S3ServiceBuilder;
use s3s::{S3Request, S3Result, s3_error};
use s3s::dto::{GetObjectInput, GetObjectOutput, ListObjectsOutput, ListObjectsV2Output};
use s3s::{S3, S3Response};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tempfile::TempDir;

/// The IAM actions the emulation knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    PutObject,
    GetObject,
    DeleteObject,
    ListBucket,
}

impl Action {
    pub fn iam(self) -> &'static str {
        match self {
            Action::PutObject => "s3:PutObject",
            Action::GetObject => "s3:GetObject",
            Action::DeleteObject => "s3:DeleteObject",
            Action::ListBucket => "s3:ListBucket",
        }
    }
}

/// The five grants of the least-privilege policy of the S3 integration guide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// `s3:PutObject` on `<bucket>/as2gateway/*`.
    PutInbound,
    /// `s3:DeleteObject` on `<bucket>/as2gateway/*`.
    DeleteInbound,
    /// `s3:ListBucket` on `<bucket>` with `s3:prefix` like `AS2/send/*`.
    ListOutbound,
    /// `s3:GetObject` on `<bucket>/AS2/send/*`.
    GetOutbound,
    /// `s3:DeleteObject` on `<bucket>/AS2/send/*`.
    DeleteOutbound,
}

impl Grant {
    pub const ALL: [Grant; 5] = [Grant::PutInbound, Grant::DeleteInbound, Grant::ListOutbound, Grant::GetOutbound, Grant::DeleteOutbound];

    fn rule(self) -> (Action, &'static str) {
        match self {
            Grant::PutInbound => (Action::PutObject, "as2gateway/"),
            Grant::DeleteInbound => (Action::DeleteObject, "as2gateway/"),
            Grant::ListOutbound => (Action::ListBucket, "AS2/send/"),
            Grant::GetOutbound => (Action::GetObject, "AS2/send/"),
            Grant::DeleteOutbound => (Action::DeleteObject, "AS2/send/"),
        }
    }
}

/// What one access key may do in the test bucket.
#[derive(Clone, Debug)]
pub struct Policy {
    full: bool,
    /// (action, key prefix); for ListBucket the prefix the request's `prefix` must start with.
    rules: Vec<(Action, String)>,
    missing_key_needs_list: bool,
}

impl Policy {
    /// Everything (AmazonS3FullAccess).
    pub fn full() -> Policy {
        Policy { full: true, rules: Vec::new(), missing_key_needs_list: true }
    }

    /// Nothing; add with [`Policy::allow`].
    pub fn none() -> Policy {
        Policy { full: false, rules: Vec::new(), missing_key_needs_list: true }
    }

    /// Exactly the policy of the integration guide.
    pub fn least_privilege() -> Policy {
        Grant::ALL.into_iter().fold(Policy::none(), |p, g| p.with(g))
    }

    /// The guide's policy minus one grant.
    pub fn least_privilege_without(missing: Grant) -> Policy {
        Grant::ALL.into_iter().filter(|g| *g != missing).fold(Policy::none(), |p, g| p.with(g))
    }

    pub fn with(self, grant: Grant) -> Policy {
        let (action, prefix) = grant.rule();
        self.allow(action, prefix)
    }

    /// Allow `action` on keys starting with `prefix` (ListBucket: on listings whose prefix starts
    /// with it; "" grants ListBucket without condition).
    pub fn allow(mut self, action: Action, prefix: &str) -> Policy {
        self.rules.push((action, prefix.to_string()));
        self
    }

    /// Answer 404 for a missing key the caller may read, whatever its ListBucket grants
    /// (MinIO, s3s, moto), instead of AWS's 403.
    pub fn missing_keys_not_found(mut self) -> Policy {
        self.missing_key_needs_list = false;
        self
    }

    pub fn allows(&self, action: Action, key_or_prefix: &str) -> bool {
        self.full || self.rules.iter().any(|(a, p)| *a == action && key_or_prefix.starts_with(p.as_str()))
    }

    fn may_learn_missing_keys(&self) -> bool {
        self.full || !self.missing_key_needs_list || self.rules.iter().any(|(a, p)| *a == Action::ListBucket && p.is_empty())
    }
}

/// The in-process S3 server; stops when dropped.
pub struct TestS3 {
    pub endpoint: String,
    pub bucket: String,
    pub dir: TempDir,
    pub region: String,
    users: Vec<(String, String)>,
    server: tokio::task::JoinHandle<()>,
    reads: Arc<Mutex<Vec<(String, SystemTime)>>>,
    listings: Arc<AtomicUsize>,
}

impl TestS3 {
    /// Serves bucket `edinode-test` (created empty) to the given (access key, secret, policy).
    pub async fn start(users: Vec<(&str, &str, Policy)>) -> TestS3 {
        let dir = tempfile::tempdir().expect("temp dir");
        let bucket = "edinode-test".to_string();
        std::fs::create_dir_all(dir.path().join(&bucket)).expect("bucket dir");

        let mut auth = SimpleAuth::new();
        let mut policies = HashMap::new();
        for (ak, sk, policy) in &users {
            auth.register(ak.to_string(), sk.to_string().into());
            policies.insert(ak.to_string(), policy.clone());
        }
        let access = PolicyAccess { bucket: bucket.clone(), root: dir.path().to_path_buf(), policies: Arc::new(policies) };

        let fs = s3s_fs::FileSystem::new(dir.path()).expect("s3s-fs");
        let reads = Arc::new(Mutex::new(Vec::new()));
        let listings = Arc::new(AtomicUsize::new(0));
        let mut builder = S3ServiceBuilder::new(AwsLike { fs, reads: reads.clone(), listings: listings.clone() });
        builder.set_auth(auth);
        builder.set_access(access);
        let service = builder.build();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let server = tokio::spawn(async move {
            let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else { continue };
                // Without it, Nagle on this side meets the client's delayed ACK: ~40 ms stalls.
                let _ = socket.set_nodelay(true);
                let conn = http.serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone()).into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });

        TestS3 {
            endpoint: format!("http://{addr}"),
            bucket,
            dir,
            region: "us-east-1".to_string(),
            users: users.iter().map(|(ak, sk, _)| (ak.to_string(), sk.to_string())).collect(),
            server,
            reads,
            listings,
        }
    }

    /// Where s3s-fs keeps the object `key`.
    pub fn path(&self, key: &str) -> PathBuf {
        self.dir.path().join(&self.bucket).join(key)
    }

    /// Settings for S3Store as the user with `access_key`.
    pub fn settings(&self, access_key: &str) -> S3Settings {
        let secret = self.users.iter().find(|(ak, _)| ak == access_key).map(|(_, sk)| sk.clone()).expect("unknown access key");
        S3Settings {
            bucket: self.bucket.clone(),
            region: self.region.clone(),
            endpoint: Some(self.endpoint.clone()),
            access_key: Some(access_key.to_string()),
            secret_key: Some(secret),
        }
    }
}

impl TestS3 {
    /// Successful GetObjects so far: (key, when the server answered).
    pub fn reads(&self) -> Vec<(String, SystemTime)> {
        self.reads.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until the server has answered `n` more listings: the pollers' next rounds, after
    /// which whatever they would have done with what is in the bucket now is done.
    pub fn wait_listings(&self, n: usize) {
        let until = self.listings.load(Ordering::SeqCst) + n;
        super::wait_for(30, &format!("{n} more listings of the bucket"), || (self.listings.load(Ordering::SeqCst) >= until).then_some(()));
    }
}

/// s3s-fs with AWS's whole-second LastModified in listings; records GetObjects, counts listings.
struct AwsLike {
    fs: s3s_fs::FileSystem,
    reads: Arc<Mutex<Vec<(String, SystemTime)>>>,
    listings: Arc<AtomicUsize>,
}

impl AwsLike {
    /// A listing as AWS answers it: LastModified in whole seconds. Counted.
    fn listed(&self, contents: &mut Option<Vec<s3s::dto::Object>>) {
        self.listings.fetch_add(1, Ordering::SeqCst);
        for o in contents.iter_mut().flatten() {
            if let Some(ts) = o.last_modified.take() {
                let odt: time::OffsetDateTime = ts.into();
                o.last_modified = Some(odt.replace_nanosecond(0).unwrap_or(odt).into());
            }
        }
    }
}

/// `impl S3 for AwsLike`: each `call(Input) -> Output` goes to s3s-fs as it is; the methods in
/// braces are AwsLike's own.
macro_rules! s3_over_fs {
    ($($call:ident($input:ident) -> $output:ident;)* { $($own:tt)* }) => {
        #[async_trait::async_trait]
        impl S3 for AwsLike {
            $(
                async fn $call(&self, req: S3Request<s3s::dto::$input>) -> S3Result<S3Response<s3s::dto::$output>> {
                    self.fs.$call(req).await
                }
            )*
            $($own)*
        }
    };
}

s3_over_fs! {
    create_bucket(CreateBucketInput) -> CreateBucketOutput;
    head_bucket(HeadBucketInput) -> HeadBucketOutput;
    put_object(PutObjectInput) -> PutObjectOutput;
    head_object(HeadObjectInput) -> HeadObjectOutput;
    delete_object(DeleteObjectInput) -> DeleteObjectOutput;
    delete_objects(DeleteObjectsInput) -> DeleteObjectsOutput;
    copy_object(CopyObjectInput) -> CopyObjectOutput;
    create_multipart_upload(CreateMultipartUploadInput) -> CreateMultipartUploadOutput;
    upload_part(UploadPartInput) -> UploadPartOutput;
    complete_multipart_upload(CompleteMultipartUploadInput) -> CompleteMultipartUploadOutput;
    abort_multipart_upload(AbortMultipartUploadInput) -> AbortMultipartUploadOutput;
    {
        async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
            let key = req.input.key.clone();
            let out = self.fs.get_object(req).await?;
            self.reads.lock().unwrap_or_else(|p| p.into_inner()).push((key, SystemTime::now()));
            Ok(out)
        }
        async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
            let mut out = self.fs.list_objects(req).await?;
            self.listed(&mut out.output.contents);
            Ok(out)
        }
        async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
            let mut out = self.fs.list_objects_v2(req).await?;
            self.listed(&mut out.output.contents);
            Ok(out)
        }
    }
}

impl Drop for TestS3 {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct PolicyAccess {
    bucket: String,
    root: PathBuf,
    policies: Arc<HashMap<String, Policy>>,
}

fn denied(what: std::fmt::Arguments<'_>) -> s3s::S3Error {
    s3_error!(AccessDenied, "{what}")
}

impl PolicyAccess {
    fn policy(&self, credentials: Option<&s3s::auth::Credentials>) -> S3Result<&Policy> {
        let Some(c) = credentials else { return Err(s3_error!(AccessDenied, "Signature is required")) };
        self.policies.get(&c.access_key).ok_or_else(|| s3_error!(AccessDenied, "No policy for {}", c.access_key))
    }

    fn require(&self, policy: &Policy, action: Action, bucket: &str, key: &str) -> S3Result<()> {
        if policy.full || (bucket == self.bucket && policy.allows(action, key)) {
            Ok(())
        } else {
            Err(denied(format_args!("not authorized to perform: {} on resource: arn:aws:s3:::{bucket}/{key}", action.iam())))
        }
    }

    fn require_list(&self, policy: &Policy, bucket: &str, prefix: Option<&str>) -> S3Result<()> {
        let ok = policy.full
            || (bucket == self.bucket
                && policy.rules.iter().any(|(a, p)| *a == Action::ListBucket && (p.is_empty() || prefix.is_some_and(|x| x.starts_with(p.as_str())))));
        if ok {
            Ok(())
        } else {
            Err(denied(format_args!("not authorized to perform: s3:ListBucket on resource: arn:aws:s3:::{bucket} with s3:prefix {prefix:?}")))
        }
    }
}

#[async_trait::async_trait]
impl S3Access for PolicyAccess {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let policy = self.policy(cx.credentials())?;
        if policy.full {
            return Ok(());
        }
        let op = cx.s3_op().name();
        match (op, cx.s3_path()) {
            ("PutObject" | "CreateMultipartUpload" | "UploadPart" | "CompleteMultipartUpload", S3Path::Object { bucket, key }) => {
                self.require(policy, Action::PutObject, bucket, key)
            }
            ("GetObject" | "HeadObject", S3Path::Object { bucket, key }) => {
                self.require(policy, Action::GetObject, bucket, key)?;
                if !policy.may_learn_missing_keys() && !self.root.join(&**bucket).join(&**key).is_file() {
                    return Err(denied(format_args!("missing key {key} and no s3:ListBucket on arn:aws:s3:::{bucket}")));
                }
                Ok(())
            }
            ("DeleteObject", S3Path::Object { bucket, key }) => self.require(policy, Action::DeleteObject, bucket, key),
            // Decided below, where the typed input is at hand.
            ("ListObjectsV2" | "ListObjects" | "DeleteObjects", S3Path::Bucket { .. }) => Ok(()),
            ("CopyObject", S3Path::Object { .. }) => Ok(()),
            _ => Err(denied(format_args!("{op} is not granted by this policy"))),
        }
    }

    async fn list_objects_v2(&self, req: &mut S3Request<ListObjectsV2Input>) -> S3Result<()> {
        let policy = self.policy(req.credentials.as_ref())?;
        self.require_list(policy, &req.input.bucket, req.input.prefix.as_deref())
    }

    async fn list_objects(&self, req: &mut S3Request<ListObjectsInput>) -> S3Result<()> {
        let policy = self.policy(req.credentials.as_ref())?;
        self.require_list(policy, &req.input.bucket, req.input.prefix.as_deref())
    }

    async fn copy_object(&self, req: &mut S3Request<CopyObjectInput>) -> S3Result<()> {
        let policy = self.policy(req.credentials.as_ref())?;
        match &req.input.copy_source {
            CopySource::Bucket { bucket, key, .. } => self.require(policy, Action::GetObject, bucket, key)?,
            _ => return Err(denied(format_args!("copy source kind not emulated"))),
        }
        self.require(policy, Action::PutObject, &req.input.bucket, &req.input.key)
    }

    async fn delete_objects(&self, req: &mut S3Request<DeleteObjectsInput>) -> S3Result<()> {
        let policy = self.policy(req.credentials.as_ref())?;
        for o in &req.input.delete.objects {
            self.require(policy, Action::DeleteObject, &req.input.bucket, &o.key)?;
        }
        Ok(())
    }
}
