//! The artifact store on top of `object_store`.

use async_trait::async_trait;
use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::sync::Arc;

use futures::StreamExt;
use zenflow_core::artifact_store::{
    object_key, put_in_two_passes, put_written, ArtifactStore, ByteStream, Shelf, StoreError, StoredObject, WriteFn,
};
use zenflow_core::hash::HashingWriter;
use zenflow_core::materializer::StreamFn;
use zenflow_core::ContentHash;

/// How hard a local store works to make each write survive a power failure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Every write is on disk before it returns (the default).
    #[default]
    Full,
    /// Writes survive a process crash, but the newest may be lost on power
    /// failure or an OS crash. Faster; opt in knowingly.
    Relaxed,
}

/// Existing objects up to this size are re-read and verified when the same
/// content is written again; larger ones are checked by size only.
const VERIFY_LIMIT: usize = 8 << 20;

/// The folder under a store's prefix that holds its trash
/// ([`ArtifactStore::trash`]), laid out as the store is.
const TRASH: &str = "trash";

/// The object under a store's prefix naming the metadata store that owns it
/// ([`ArtifactStore::owner`]).
const OWNER: &str = "zenflow-owner";

/// The folder of a local store where streamed writes are staged before they
/// are renamed into place.
const STAGING: &str = ".staging";

/// A staging file not written to for this long was left by a process that
/// died while writing: opening the store removes it.
const STAGING_ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// Content-addressed artifacts in an `object_store` backend: the object for a
/// hash lives at `<prefix>/<aa>/<hash>`.
///
/// Writes use `PutMode::Create`, so an object is written once and never
/// replaced; the local backend writes to a temporary file and renames it into
/// place, so a crash never leaves a partial object under the final name.
#[derive(Debug, Clone)]
pub struct ObjectArtifactStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
    /// Whether the backend supports create-if-absent puts (local, memory);
    /// for the others an existence check comes first.
    conditional_put: bool,
    /// For bucket stores: the bucket, checked to exist before the first write
    /// (some S3-compatible servers create a missing bucket on write instead
    /// of refusing it).
    bucket: Option<(String, Arc<tokio::sync::OnceCell<()>>)>,
    /// For a local folder: the folder and how hard writes work to be durable
    /// (streamed writes go to the file directly).
    local: Option<(std::path::PathBuf, Durability)>,
}

/// Objects above this size are uploaded in parts (S3 multipart upload),
/// visible only once every part is in.
const MULTIPART_THRESHOLD: usize = 64 << 20;
const PART_SIZE: usize = 16 << 20;

impl ObjectArtifactStore {
    /// Wraps any `object_store` backend; `url` describes it in messages and records.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path, url: impl Into<String>) -> Self {
        ObjectArtifactStore { store, prefix, url: url.into(), conditional_put: true, bucket: None, local: None }
    }

    /// A store in an S3 bucket (AWS or an S3-compatible server), under the
    /// prefix of `s3://bucket/prefix`. Credentials not given in the config
    /// come from the usual `AWS_*` environment variables. Transient errors are
    /// retried with backoff by `object_store`, as `retries`, `retry_timeout`
    /// and `retry_backoff` say.
    #[cfg(feature = "s3")]
    pub fn s3(config: &crate::config::ArtifactStoreConfig) -> Result<Self, StoreError> {
        use object_store::aws::AmazonS3Builder;
        crate::install_crypto_provider();
        let backend = |message: String| StoreError::Backend { store: config.url.clone(), message };
        let rest = config.url.strip_prefix("s3://").ok_or_else(|| backend("not an s3:// URL".into()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(backend("the URL names no bucket; use s3://BUCKET/PREFIX".into()));
        }
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(region) = config.region.as_deref().filter(|r| !r.is_empty()) {
            b = b.with_region(region);
        }
        if let Some(endpoint) = config.endpoint.as_deref().filter(|e| !e.is_empty()) {
            b = b.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
        }
        if let Some(k) = config.access_key_id.as_deref().filter(|k| !k.is_empty()) {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = config.secret_access_key.as_deref().filter(|k| !k.is_empty()) {
            b = b.with_secret_access_key(k);
        }
        if let Some(t) = config.session_token.as_deref().filter(|t| !t.is_empty()) {
            b = b.with_token(t);
        }
        if config.allow_http.unwrap_or(false) {
            b = b.with_allow_http(true);
        }
        let (timeout, backoff) = config.retry_durations().map_err(backend)?;
        if config.retries.is_some() || timeout.is_some() || backoff.is_some() {
            let mut retry = object_store::RetryConfig::default();
            if let Some(n) = config.retries {
                retry.max_retries = n as usize;
            }
            if let Some(t) = timeout {
                retry.retry_timeout = t;
            }
            if let Some(first) = backoff {
                retry.backoff = object_store::BackoffConfig { init_backoff: first, ..retry.backoff };
            }
            b = b.with_retry(retry);
        }
        let store = b.build().map_err(|e| backend(e.to_string()))?;
        let url = format!("s3://{bucket}/{}", prefix.trim_matches('/'));
        Ok(ObjectArtifactStore {
            store: Arc::new(store),
            prefix: Path::from(prefix.trim_matches('/')),
            url: url.trim_end_matches('/').to_string(),
            conditional_put: false,
            local: None,
            bucket: Some((bucket.to_string(), Arc::default())),
        })
    }

    /// A store in a local folder, created if missing. Writes are durable: the
    /// file and its folder are synced before `put` returns, as the metadata
    /// store's records that point at them are.
    pub fn local(dir: impl AsRef<std::path::Path>) -> Result<Self, StoreError> {
        Self::local_with(dir, Durability::Full)
    }

    /// [`ObjectArtifactStore::local`] with a chosen durability:
    /// [`Durability::Relaxed`] skips the syncs (objects survive a process
    /// crash; the newest may be lost on power failure or an OS crash).
    pub fn local_with(dir: impl AsRef<std::path::Path>, durability: Durability) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        let backend = |message: String| StoreError::Backend { store: format!("file://{}", dir.display()), message };
        std::fs::create_dir_all(dir).map_err(|e| {
            backend(format!("cannot create the artifact folder: {e}; check the path and its permissions"))
        })?;
        let dir = dir.canonicalize().map_err(|e| backend(e.to_string()))?;
        remove_abandoned_staging(&dir.join(STAGING), STAGING_ABANDONED_AFTER);
        let fs = LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| backend(e.to_string()))?
            .with_fsync(durability == Durability::Full);
        let url = format!("file://{}", dir.display());
        Ok(ObjectArtifactStore {
            local: Some((dir, durability)),
            ..ObjectArtifactStore::new(Arc::new(fs), Path::default(), url)
        })
    }

    /// A store in a local folder, to read only: neither the folder nor its
    /// staging area is created or cleaned. A folder that does not exist
    /// holds nothing.
    pub fn local_read_only(dir: impl AsRef<std::path::Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        let url = format!("file://{}", dir.display());
        if !dir.exists() {
            return Ok(ObjectArtifactStore::new(Arc::new(InMemory::new()), Path::default(), url));
        }
        let backend = |message: String| StoreError::Backend { store: url.clone(), message };
        let dir = dir.canonicalize().map_err(|e| backend(e.to_string()))?;
        let fs = LocalFileSystem::new_with_prefix(&dir).map_err(|e| backend(e.to_string()))?;
        Ok(ObjectArtifactStore::new(Arc::new(fs), Path::default(), format!("file://{}", dir.display())))
    }

    /// A store in memory (tests, throwaway runs).
    pub fn memory() -> Self {
        ObjectArtifactStore::new(Arc::new(InMemory::new()), Path::default(), "memory://")
    }

    fn location(&self, hash: &ContentHash) -> Path {
        self.under(&object_key(hash))
    }

    /// Where the object's trash copy is: `<prefix>/trash/<aa>/<hash>`.
    fn trash_location(&self, hash: &ContentHash) -> Path {
        self.under(&format!("{TRASH}/{}", object_key(hash)))
    }

    /// `key` under the store's prefix.
    fn under(&self, key: &str) -> Path {
        if self.prefix.as_ref().is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
    }

    /// Reads `hash` from the trash after it was not found live: a run may
    /// have recorded it just as `gc` moved it there.
    async fn get_trashed(&self, hash: &ContentHash) -> Result<object_store::GetResult, StoreError> {
        match self.store.get(&self.trash_location(hash)).await {
            Ok(r) => Ok(r),
            Err(object_store::Error::NotFound { .. }) => Err(StoreError::NotFound { uri: self.uri(hash) }),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Moves an object; a missing source is not an error. A local move
    /// dates the object anew, as a copy in a bucket is: its date then says
    /// when it moved.
    async fn relocate(&self, from: &Path, to: &Path) -> Result<(), StoreError> {
        match self.store.rename(from, to).await {
            Ok(()) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(self.err(e)),
        }
        if let Some((root, _)) = &self.local {
            let path = root.join(to.as_ref());
            let touched = std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            touched.map_err(|e| StoreError::Backend { store: self.url.clone(), message: e.to_string() })?;
        }
        Ok(())
    }

    /// Fails with a clear error when the store's bucket does not exist.
    async fn ensure_bucket(&self) -> Result<(), StoreError> {
        let Some((bucket, checked)) = &self.bucket else { return Ok(()) };
        checked
            .get_or_try_init(|| async {
                // A list needs s3:ListBucket, which the store needs anyway:
                // without it S3 answers 403 for a missing object, not 404.
                match self.store.list_with_delimiter(Some(&self.prefix)).await {
                    Ok(_) => Ok(()),
                    // A 404 of a list is the bucket's, whatever the body says.
                    Err(object_store::Error::NotFound { .. }) => {
                        Err(StoreError::NoSuchBucket { store: self.url.clone(), bucket: bucket.clone() })
                    }
                    Err(e) => Err(self.err(e)),
                }
            })
            .await
            .map(|_| ())
    }

    /// Uploads (replacing) an object: in one request, or in parts when large.
    async fn upload(&self, location: &Path, bytes: Bytes) -> Result<(), StoreError> {
        if bytes.len() <= MULTIPART_THRESHOLD {
            let opts = PutOptions { mode: PutMode::Overwrite, ..Default::default() };
            self.store.put_opts(location, PutPayload::from_bytes(bytes), opts).await.map_err(|e| self.err(e))?;
            return Ok(());
        }
        let upload = self.store.put_multipart(location).await.map_err(|e| self.err(e))?;
        let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        for chunk in bytes.chunks(PART_SIZE) {
            if let Err(e) = writer.wait_for_capacity(4).await {
                let _ = writer.abort().await; // no orphaned upload left behind
                return Err(self.err(e));
            }
            writer.write(chunk);
        }
        // Only `finish` makes the object visible; on error it aborts the upload.
        writer.finish().await.map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Whether the stored object for `hash` has `len` bytes and, up to
    /// [`VERIFY_LIMIT`], hashes to `hash`.
    async fn intact(&self, location: &Path, hash: &ContentHash, len: usize) -> Result<bool, StoreError> {
        let meta = match self.store.head(location).await {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(self.err(e)),
        };
        if meta.size != len as u64 {
            return Ok(false);
        }
        if len > VERIFY_LIMIT {
            return Ok(true);
        }
        let stored = self.store.get(location).await.map_err(|e| self.err(e))?.bytes().await.map_err(|e| self.err(e))?;
        Ok(ContentHash::of(&stored) == *hash)
    }

    /// An `object_store` error as a store error: for S3, by the error code
    /// the server sent (object_store reports many as `Generic`), so that a
    /// missing bucket and refused credentials are told apart.
    fn err(&self, e: object_store::Error) -> StoreError {
        let text = e.to_string();
        if let Some((bucket, _)) = &self.bucket {
            let (store, bucket) = (self.url.clone(), bucket.clone());
            let code = s3_error_code(&text);
            match code.as_deref() {
                Some("NoSuchBucket") => return StoreError::NoSuchBucket { store, bucket },
                Some(
                    c @ ("AccessDenied"
                    | "SignatureDoesNotMatch"
                    | "InvalidAccessKeyId"
                    | "ExpiredToken"
                    | "InvalidToken"
                    | "AllAccessDisabled"
                    | "AccountProblem"),
                ) => return StoreError::AccessDenied { store, bucket, code: c.to_string() },
                _ => {}
            }
            let status = match e {
                object_store::Error::PermissionDenied { .. } => Some("HTTP 403"),
                object_store::Error::Unauthenticated { .. } => Some("HTTP 401"),
                _ if text.contains("403 Forbidden") => Some("HTTP 403"),
                _ => None,
            };
            if let Some(status) = status {
                return StoreError::AccessDenied { store, bucket, code: code.unwrap_or_else(|| status.into()) };
            }
        }
        StoreError::Backend { store: self.url.clone(), message: text }
    }
}

/// The `<Code>` of an S3 error body quoted in `text` (`AccessDenied`,
/// `SignatureDoesNotMatch`, `InvalidAccessKeyId`, ...).
fn s3_error_code(text: &str) -> Option<String> {
    let start = text.find("<Code>")? + "<Code>".len();
    let len = text[start..].find("</Code>")?;
    let code = &text[start..start + len];
    (!code.is_empty() && code.len() <= 64 && code.chars().all(|c| c.is_ascii_alphanumeric())).then(|| code.to_string())
}

#[async_trait]
impl ArtifactStore for ObjectArtifactStore {
    fn url(&self) -> String {
        self.url.clone()
    }

    fn uri(&self, hash: &ContentHash) -> String {
        // The URL names the prefix already (`s3://bucket/prefix`).
        format!("{}/{}", self.url.trim_end_matches('/'), object_key(hash))
    }

    async fn put(&self, hash: &ContentHash, bytes: Bytes) -> Result<(), StoreError> {
        let location = self.location(hash);
        // Content addressed: an intact object already there is these bytes
        // (a re-run that produced the same output), and is not written again.
        if !self.conditional_put {
            self.ensure_bucket().await?;
            if self.intact(&location, hash, bytes.len()).await? {
                return Ok(());
            }
            return self.upload(&location, bytes).await;
        }
        if bytes.len() > VERIFY_LIMIT && self.intact(&location, hash, bytes.len()).await? {
            return Ok(());
        }
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.store.put_opts(&location, PutPayload::from_bytes(bytes.clone()), opts).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                // The object is normally these very bytes. Check that it is
                // whole (and, when small, intact) and replace it if not, so
                // that re-running its producer repairs a damaged object.
                if self.intact(&location, hash, bytes.len()).await? {
                    return Ok(());
                }
                tracing::warn!("replacing damaged artifact {}", self.uri(hash));
                let opts = PutOptions { mode: PutMode::Overwrite, ..Default::default() };
                self.store.put_opts(&location, PutPayload::from_bytes(bytes), opts).await.map_err(|e| self.err(e))?;
                Ok(())
            }
            Err(e) => Err(self.err(e)),
        }
    }

    async fn put_writer(&self, hash: &ContentHash, len: u64, write: WriteFn) -> Result<(), StoreError> {
        let Some((root, durability)) = self.local.clone() else {
            return put_written(self, hash, len, write).await;
        };
        let location = self.location(hash);
        if self.intact(&location, hash, usize::try_from(len).unwrap_or(usize::MAX)).await? {
            return Ok(());
        }
        // Straight into a staging file beside the object, then renamed into
        // place: the same layout and promises as `put`, with no copy of the
        // bytes in memory.
        let path = root.join(location.as_ref());
        let written = tokio::task::spawn_blocking(move || {
            let staging = write_staging(&root.join(STAGING), durability, write)?;
            publish(&staging, &path, durability)
        })
        .await;
        match written {
            Ok(result) => result.map_err(|e| StoreError::Backend { store: self.url.clone(), message: e.to_string() }),
            Err(e) => Err(StoreError::Backend { store: self.url.clone(), message: format!("writing failed: {e}") }),
        }
    }

    async fn put_hashed(&self, write: StreamFn) -> Result<(ContentHash, u64), StoreError> {
        let Some((root, durability)) = self.local.clone() else {
            return put_in_two_passes(self, write).await;
        };
        // One pass: hashed as it is written to a staging file, which is then
        // named by that hash.
        let me = self.clone();
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<(ContentHash, u64)> {
            let mut hashed = None;
            let staging = write_staging(&root.join(STAGING), durability, |out| {
                let mut tee = HashingWriter::new(out);
                write(&mut tee)?;
                hashed = Some(tee.finish());
                Ok(())
            })?;
            let (hash, len) = hashed.ok_or_else(|| std::io::Error::other("the writer did not finish"))?;
            let path = root.join(me.location(&hash).as_ref());
            if std::fs::metadata(&path).is_ok_and(|m| m.len() == len) {
                // Stored already (content addressed: the same bytes).
                let _ = std::fs::remove_file(&staging);
            } else {
                publish(&staging, &path, durability)?;
            }
            Ok((hash, len))
        })
        .await;
        match written {
            Ok(result) => result.map_err(|e| StoreError::Backend { store: self.url.clone(), message: e.to_string() }),
            Err(e) => Err(StoreError::Backend { store: self.url.clone(), message: format!("writing failed: {e}") }),
        }
    }

    async fn get(&self, hash: &ContentHash) -> Result<Bytes, StoreError> {
        let result = match self.store.get(&self.location(hash)).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => self.get_trashed(hash).await?,
            Err(e) => return Err(self.err(e)),
        };
        result.bytes().await.map_err(|e| self.err(e))
    }

    async fn put_stream(&self, hash: &ContentHash, len: u64, mut stream: ByteStream) -> Result<(), StoreError> {
        let location = self.location(hash);
        self.ensure_bucket().await?;
        // Content addressed: an intact object already there is these bytes
        // (one of another size is not: a truncated copy is replaced).
        if self.intact(&location, hash, usize::try_from(len).unwrap_or(usize::MAX)).await? {
            return Ok(());
        }
        // Parts go to a staging upload (a temporary file locally, a multipart
        // upload on S3); the object appears only when `finish` completes it.
        let upload = self.store.put_multipart(&location).await.map_err(|e| self.err(e))?;
        let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut streamed = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(e);
                }
            };
            if let Err(e) = writer.wait_for_capacity(4).await {
                let _ = writer.abort().await;
                return Err(self.err(e));
            }
            streamed += chunk.len() as u64;
            writer.put(chunk);
        }
        // Only `finish` makes the object visible: a stream of the wrong
        // length is abandoned before it.
        if let Err(e) = zenflow_core::artifact_store::check_streamed_len(&self.url, len, streamed) {
            let _ = writer.abort().await;
            return Err(e);
        }
        writer.finish().await.map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn get_stream(&self, hash: &ContentHash) -> Result<ByteStream, StoreError> {
        let result = match self.store.get(&self.location(hash)).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => self.get_trashed(hash).await?,
            Err(e) => return Err(self.err(e)),
        };
        let me = self.clone();
        Ok(result.into_stream().map(move |c| c.map_err(|e| me.err(e))).boxed())
    }

    async fn exists(&self, hash: &ContentHash) -> Result<bool, StoreError> {
        match self.store.head(&self.location(hash)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn delete(&self, hash: &ContentHash) -> Result<(), StoreError> {
        match self.store.delete(&self.location(hash)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn list(&self, shelf: Shelf) -> Result<Vec<StoredObject>, StoreError> {
        let root = match shelf {
            Shelf::Live => self.prefix.clone(),
            Shelf::Trash => self.under(TRASH),
        };
        let items = self.store.list(Some(&root)).collect::<Vec<_>>().await;
        let listed: Vec<object_store::ObjectMeta> =
            items.into_iter().filter_map(|m| self.listed(m)).collect::<Result<_, _>>()?;
        Ok(listed
            .into_iter()
            .filter_map(|meta| {
                let hash = object_hash(root.as_ref(), meta.location.as_ref())?;
                let since = meta.last_modified.timestamp_micros();
                Some(StoredObject { hash, size: meta.size, since })
            })
            .collect())
    }

    async fn trash(&self, hash: &ContentHash) -> Result<(), StoreError> {
        self.relocate(&self.location(hash), &self.trash_location(hash)).await
    }

    async fn restore(&self, hash: &ContentHash) -> Result<(), StoreError> {
        if self.exists(hash).await? {
            return self.purge(hash).await;
        }
        self.relocate(&self.trash_location(hash), &self.location(hash)).await
    }

    async fn purge(&self, hash: &ContentHash) -> Result<(), StoreError> {
        match self.store.delete(&self.trash_location(hash)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn owner(&self, claim: Option<&str>) -> Result<Option<String>, StoreError> {
        let location = self.under(OWNER);
        let recorded = match self.store.get(&location).await {
            Ok(r) => Some(r.bytes().await.map_err(|e| self.err(e))?),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(self.err(e)),
        };
        let recorded = recorded.map(|b| String::from_utf8_lossy(&b).trim().to_string());
        let (Some(claim), None) = (claim, &recorded) else { return Ok(recorded) };
        if !self.conditional_put {
            self.ensure_bucket().await?;
        }
        // Create only: of two first claims at once, one wins, and both read it back.
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        let payload = PutPayload::from(claim.as_bytes().to_vec());
        match self.store.put_opts(&location, payload, opts).await {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => return Box::pin(self.owner(None)).await,
            Err(object_store::Error::NotImplemented { .. }) => {
                self.store
                    .put(&location, PutPayload::from(claim.as_bytes().to_vec()))
                    .await
                    .map_err(|e| self.err(e))?;
            }
            Err(e) => return Err(self.err(e)),
        }
        Ok(None)
    }
}

impl ObjectArtifactStore {
    /// A listed object's metadata; a listing error, or nothing for a
    /// missing folder (an empty local store, a bucket with no prefix yet).
    fn listed(
        &self,
        item: object_store::Result<object_store::ObjectMeta>,
    ) -> Option<Result<object_store::ObjectMeta, StoreError>> {
        match item {
            Ok(meta) => Some(Ok(meta)),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => Some(Err(self.err(e))),
        }
    }
}

/// The hash of the object at `location` directly under `root` as
/// `<aa>/<hash>`; `None` for anything else there (the trash, staging
/// files, another tool's files).
fn object_hash(root: &str, location: &str) -> Option<ContentHash> {
    let rest = if root.is_empty() { location } else { location.strip_prefix(root)?.strip_prefix('/')? };
    let (fan, hex) = rest.split_once('/')?;
    if hex.len() != 64 || !hex.starts_with(fan) || fan.len() != 2 {
        return None;
    }
    ContentHash::from_hex(hex).ok()
}

/// Writes what `write` writes to a new staging file in `dir`, synced with
/// [`Durability::Full`]. Returns its path; a failed or panicking write
/// leaves nothing behind.
fn write_staging(
    dir: &std::path::Path,
    durability: Durability,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> std::io::Result<std::path::PathBuf> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let staging = dir.join(format!(".{}.partial", uuid::Uuid::now_v7().simple()));
    let result = (|| {
        let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&staging)?);
        // A panicking writer must not leave the staging file behind either.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write(&mut file))).map_err(|panic| {
            let message = zenflow_core::panic::message(panic);
            std::io::Error::other(format!("writing panicked: {message}"))
        })??;
        file.flush()?;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        if durability == Durability::Full {
            file.sync_all()?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(staging),
        Err(e) => {
            let _ = std::fs::remove_file(&staging);
            Err(e)
        }
    }
}

/// Removes the staging files in `dir` that nobody has written to for
/// `after`: what processes that died while writing left behind. Only logged
/// when it cannot (the store works without it).
fn remove_abandoned_staging(dir: &std::path::Path, after: std::time::Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let staged = path.extension().is_some_and(|e| e == "partial");
        let abandoned = entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().is_ok_and(|a| a > after));
        if staged && abandoned {
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!("removed {}, left by a write that never finished", path.display()),
                Err(e) => tracing::warn!("cannot remove the abandoned staging file {}: {e}", path.display()),
            }
        }
    }
}

/// Renames a staging file to `path` (replacing it: same content) and syncs
/// the folder with [`Durability::Full`]; the staging file is removed if that fails.
fn publish(staging: &std::path::Path, path: &std::path::Path, durability: Durability) -> std::io::Result<()> {
    let dir = path.parent().ok_or_else(|| std::io::Error::other(format!("{} has no folder", path.display())))?;
    let result = std::fs::create_dir_all(dir).and_then(|()| std::fs::rename(staging, path)).and_then(|()| {
        if durability == Durability::Full {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    });
    if result.is_err() {
        let _ = std::fs::remove_file(staging);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::s3_error_code;

    #[test]
    fn the_s3_error_code_is_read_from_the_quoted_body_only_when_it_is_one() {
        let body = "403 Forbidden: <?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code></Error>";
        assert_eq!(s3_error_code(body).as_deref(), Some("SignatureDoesNotMatch"));
        assert_eq!(s3_error_code("no body"), None);
        assert_eq!(s3_error_code("<Code></Code>"), None);
        assert_eq!(s3_error_code("<Code>not a code</Code>"), None);
        assert_eq!(s3_error_code("<Code>Unclosed"), None);
        assert_eq!(s3_error_code(&format!("<Code>{}</Code>", "A".repeat(65))), None);
    }
}
