//! The artifact store on top of `object_store`.

use async_trait::async_trait;
use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::sync::Arc;
use zenflow_core::artifact_store::{object_key, ArtifactStore, StoreError};
use zenflow_core::ContentHash;

/// Existing objects up to this size are re-read and verified when the same
/// content is written again; larger ones are checked by size only.
const VERIFY_LIMIT: usize = 8 << 20;

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
}

impl ObjectArtifactStore {
    /// Wraps any `object_store` backend; `url` describes it in messages and records.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path, url: impl Into<String>) -> Self {
        ObjectArtifactStore { store, prefix, url: url.into() }
    }

    /// A store in a local folder, created if missing. Writes are durable: the
    /// file and its folder are synced before `put` returns, as the metadata
    /// store's records that point at them are.
    pub fn local(dir: impl AsRef<std::path::Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        let backend = |message: String| StoreError::Backend { store: format!("file://{}", dir.display()), message };
        std::fs::create_dir_all(dir).map_err(|e| {
            backend(format!("cannot create the artifact folder: {e}; check the path and its permissions"))
        })?;
        let dir = dir.canonicalize().map_err(|e| backend(e.to_string()))?;
        let fs = LocalFileSystem::new_with_prefix(&dir).map_err(|e| backend(e.to_string()))?.with_fsync(true);
        Ok(ObjectArtifactStore::new(Arc::new(fs), Path::default(), format!("file://{}", dir.display())))
    }

    /// A store in memory (tests, throwaway runs).
    pub fn memory() -> Self {
        ObjectArtifactStore::new(Arc::new(InMemory::new()), Path::default(), "memory://")
    }

    fn location(&self, hash: &ContentHash) -> Path {
        let key = object_key(hash);
        if self.prefix.as_ref().is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
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

    fn err(&self, e: object_store::Error) -> StoreError {
        StoreError::Backend { store: self.url.clone(), message: e.to_string() }
    }
}

#[async_trait]
impl ArtifactStore for ObjectArtifactStore {
    fn url(&self) -> String {
        self.url.clone()
    }

    fn uri(&self, hash: &ContentHash) -> String {
        format!("{}/{}", self.url.trim_end_matches('/'), self.location(hash))
    }

    async fn put(&self, hash: &ContentHash, bytes: Bytes) -> Result<(), StoreError> {
        let location = self.location(hash);
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

    async fn get(&self, hash: &ContentHash) -> Result<Bytes, StoreError> {
        let result = match self.store.get(&self.location(hash)).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Err(StoreError::NotFound { uri: self.uri(hash) }),
            Err(e) => return Err(self.err(e)),
        };
        result.bytes().await.map_err(|e| self.err(e))
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
}
