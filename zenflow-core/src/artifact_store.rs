//! The artifact store: content-addressed bytes.
//!
//! Every artifact is stored under a key derived from its content hash, so
//! identical bytes are stored once and a key never changes meaning. A `put`
//! is atomic (an object is visible only when complete) and idempotent.
//! Readers verify the hash ([`get_verified`]), so a corrupted object is
//! reported, never silently used.

use crate::hash::{ContentHash, HashWriter, HashingWriter};
use crate::materializer::StreamFn;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, StreamExt};
use std::fmt;

/// Bytes as a stream of chunks, for objects too large to hold in memory.
pub type ByteStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// Writes an object's bytes into the sink it is given, for
/// [`ArtifactStore::put_writer`]. An error aborts the put.
pub type WriteFn = Box<dyn FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + Send>;

/// Why the artifact store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No object exists for the hash.
    #[error(
        "artifact {uri} is missing from the artifact store; re-run the pipeline to produce it again \
             (a cached step whose artifact is gone re-executes)"
    )]
    NotFound {
        /// Where it was expected.
        uri: String,
    },
    /// The object is not in this store, and its record says another store
    /// wrote it.
    #[error(
        "artifact {uri} is not in this stack's artifact store ({store}): another artifact store wrote it. Stacks \
         that share a metadata store must share their artifact store too (their runs read each other's \
         artifacts: cached outputs, registered model versions); give them one artifact store URL"
    )]
    InAnotherStore {
        /// Where its record says it is.
        uri: String,
        /// This stack's store (its URL).
        store: String,
    },
    /// The object's bytes do not match its content hash.
    #[error(
        "artifact {uri} is corrupted: its content hash is {actual}, expected {expected}; \
             delete the object and re-run the pipeline to write it again"
    )]
    Corrupted {
        /// Where it is.
        uri: String,
        /// The hash it should have.
        expected: ContentHash,
        /// The hash of the bytes found.
        actual: ContentHash,
    },
    /// The store's bucket does not exist.
    #[error("artifact store {store}: the bucket `{bucket}` does not exist; create it, or fix the stack's artifact_store URL")]
    NoSuchBucket {
        /// The store (its URL).
        store: String,
        /// The bucket.
        bucket: String,
    },
    /// The store refused the credentials, or they lack a permission.
    #[error(
        "artifact store {store}: access denied ({code}): check the access key and secret (a wrong one is \
         refused too), and that they may list the bucket `{bucket}` (s3:ListBucket) and read and write \
         objects in it (s3:GetObject, s3:PutObject)"
    )]
    AccessDenied {
        /// The store (its URL).
        store: String,
        /// The bucket.
        bucket: String,
        /// What the server said: its error code when it gave one (e.g.
        /// `SignatureDoesNotMatch`), else the HTTP status.
        code: String,
    },
    /// The store could not be reached or failed.
    #[error("artifact store {store} failed: {message}")]
    Backend {
        /// Description of the store (its URL).
        store: String,
        /// What went wrong.
        message: String,
    },
}

/// Where an object lies in an artifact store ([`ArtifactStore::list`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shelf {
    /// Where objects are written and read.
    Live,
    /// Where `gc` moves an object no artifact version has; reads still
    /// find it there, until `gc` empties it (see [`ArtifactStore::trash`]).
    Trash,
}

/// An object in an artifact store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    /// Its content hash (its key).
    pub hash: ContentHash,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written ([`Shelf::Live`]) or moved to the trash
    /// ([`Shelf::Trash`]).
    pub since: crate::time::Timestamp,
}

/// Content-addressed storage for artifact bytes.
///
/// Deleting objects safely while runs write is two-phase: an object no
/// artifact version has is first moved to the trash ([`ArtifactStore::trash`]),
/// where reads still find it, and deleted from there only later
/// ([`ArtifactStore::purge`]). A run that reused the object's bytes just
/// before it was moved (a `put` of identical content finds it there and
/// writes nothing) records its artifact version within moments, so the
/// later purge sees it in use and [`ArtifactStore::restore`]s it instead.
///
/// Implementations run the conformance suite in `zenflow_core::conformance`.
#[async_trait]
pub trait ArtifactStore: Send + Sync + fmt::Debug + 'static {
    /// The store's URL, e.g. `file:///project/.zenflow/artifacts`.
    fn url(&self) -> String;

    /// The URI under which the object with this hash is (or would be) stored.
    fn uri(&self, hash: &ContentHash) -> String;

    /// Stores `bytes` under `hash`. Atomic and idempotent: storing the same
    /// hash twice keeps one object. The caller guarantees `hash` is the bytes'
    /// content hash.
    async fn put(&self, hash: &ContentHash, bytes: Bytes) -> Result<(), StoreError>;

    /// Reads the object's bytes, without verifying them (see [`get_verified`]);
    /// from the trash when it is there.
    async fn get(&self, hash: &ContentHash) -> Result<Bytes, StoreError>;

    /// Whether an object exists for `hash`.
    async fn exists(&self, hash: &ContentHash) -> Result<bool, StoreError>;

    /// Deletes the object; deleting a missing object is not an error.
    async fn delete(&self, hash: &ContentHash) -> Result<(), StoreError>;

    /// The objects on `shelf`, in no particular order.
    async fn list(&self, shelf: Shelf) -> Result<Vec<StoredObject>, StoreError>;

    /// Moves the object to the trash: [`ArtifactStore::exists`] no longer
    /// sees it and a `put` of its bytes writes them again, but reads still
    /// find it. Trashing a missing object is not an error.
    async fn trash(&self, hash: &ContentHash) -> Result<(), StoreError>;

    /// Moves a trashed object back; when the object was written again
    /// meanwhile, drops the trash copy. Restoring what is not in the trash
    /// is not an error.
    async fn restore(&self, hash: &ContentHash) -> Result<(), StoreError>;

    /// Deletes the object's trash copy; the live object, if any, stays.
    /// Purging what is not in the trash is not an error.
    async fn purge(&self, hash: &ContentHash) -> Result<(), StoreError>;

    /// The metadata store recorded as this store's owner (its
    /// [`store_id`](crate::metadata::MetadataStore::store_id)): the one
    /// whose records say what the objects are for. With `claim`, records
    /// that one first if none is; the owner recorded before is returned
    /// either way.
    async fn owner(&self, claim: Option<&str>) -> Result<Option<String>, StoreError>;

    /// Stores the `len` bytes of `stream` under `hash` without holding them
    /// all in memory (backends override the default, which collects them).
    /// Same promises as [`ArtifactStore::put`]: atomic, idempotent. An object
    /// already under `hash` is kept only if it has `len` bytes (a truncated
    /// one is replaced); a stream of another length fails and stores nothing.
    async fn put_stream(&self, hash: &ContentHash, len: u64, mut stream: ByteStream) -> Result<(), StoreError> {
        let mut all = BytesMut::new();
        while let Some(chunk) = stream.next().await {
            all.extend_from_slice(&chunk?);
        }
        check_streamed_len(&self.url(), len, all.len() as u64)?;
        self.put(hash, all.freeze()).await
    }

    /// Stores under `hash` the `len` bytes that `write` produces, without
    /// holding them all in memory: a large artifact encoded straight from its
    /// value. Same promises as [`ArtifactStore::put`]; if `write` fails,
    /// nothing is stored. The default streams the bytes to
    /// [`ArtifactStore::put_stream`] in chunks ([`put_written`]); a local
    /// store overrides it to write the file directly.
    async fn put_writer(&self, hash: &ContentHash, len: u64, write: WriteFn) -> Result<(), StoreError> {
        put_written(self, hash, len, write).await
    }

    /// Stores what `write` writes under the content hash of those bytes, and
    /// returns that hash and the length: a large artifact encoded straight
    /// from its value, named by its content. The default hashes in a first
    /// pass and stores in a second ([`put_in_two_passes`]), refusing bytes
    /// that differ from the first pass; a local store overrides it to hash
    /// as it writes, in one pass. If `write` fails, nothing is stored.
    async fn put_hashed(&self, write: StreamFn) -> Result<(ContentHash, u64), StoreError> {
        put_in_two_passes(self, write).await
    }

    /// Reads the object as a stream of chunks, without verifying it (see
    /// [`get_verified_stream`]); from the trash when it is there. Backends override the default, which reads
    /// the whole object first.
    async fn get_stream(&self, hash: &ContentHash) -> Result<ByteStream, StoreError> {
        let bytes = self.get(hash).await?;
        Ok(futures::stream::once(async move { Ok(bytes) }).boxed())
    }
}

/// [`ArtifactStore::put_hashed`] for stores that need the key before the
/// bytes: a first pass of `write` computes the hash and length, a second
/// stores the bytes through [`ArtifactStore::put_writer`], checked to be the
/// bytes of the first pass (an object is stored under the hash of its
/// content, or not at all).
pub async fn put_in_two_passes<S: ArtifactStore + ?Sized>(
    store: &S,
    write: StreamFn,
) -> Result<(ContentHash, u64), StoreError> {
    let first = write.clone();
    let hashed = tokio::task::spawn_blocking(move || {
        let mut hasher = HashWriter::default();
        first(&mut hasher).map(|()| hasher.finish())
    })
    .await;
    let failed = |message: String| StoreError::Backend { store: store.url(), message };
    let (hash, len) = match hashed {
        Ok(Ok(hashed)) => hashed,
        Ok(Err(e)) => return Err(failed(format!("writing failed: {e}"))),
        Err(e) => return Err(failed(format!("writing failed: {e}"))),
    };
    store.put_writer(&hash, len, checked_write(write, hash, len)).await?;
    Ok((hash, len))
}

/// `write`, checked to write exactly `len` bytes hashing to `hash`: the
/// write fails (and with it the put) if not.
pub fn checked_write(write: StreamFn, hash: ContentHash, len: u64) -> WriteFn {
    Box::new(move |out: &mut dyn std::io::Write| {
        let mut tee = HashingWriter::new(out);
        write(&mut tee)?;
        let (written, written_len) = tee.finish();
        if (written, written_len) != (hash, len) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the encoder wrote {written_len} bytes hashing to {} on its second pass, but {len} bytes \
                     hashing to {} on its first; a materializer's `save_to` must write the same bytes every time",
                    written.short(),
                    hash.short()
                ),
            ));
        }
        Ok(())
    })
}

/// The error of a stream that did not have the length it was put with.
pub fn check_streamed_len(store: &str, expected: u64, streamed: u64) -> Result<(), StoreError> {
    if expected == streamed {
        return Ok(());
    }
    Err(StoreError::Backend {
        store: store.to_string(),
        message: format!("the stream had {streamed} bytes, not the {expected} it was put with: nothing was stored"),
    })
}

/// [`ArtifactStore::put_writer`] through [`ArtifactStore::put_stream`]: `write`
/// runs on a blocking thread and hands over 8 MiB chunks (at most two in
/// flight), so memory stays bounded whatever the size.
pub async fn put_written<S: ArtifactStore + ?Sized>(
    store: &S,
    hash: &ContentHash,
    len: u64,
    write: WriteFn,
) -> Result<(), StoreError> {
    const CHUNK: usize = 8 << 20;
    struct Chunks {
        tx: tokio::sync::mpsc::Sender<Result<Bytes, StoreError>>,
        buf: Vec<u8>,
    }
    impl std::io::Write for Chunks {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            let n = data.len().min(CHUNK - self.buf.len());
            self.buf.extend_from_slice(&data[..n]);
            if self.buf.len() == CHUNK {
                self.flush()?;
            }
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            if self.buf.is_empty() {
                return Ok(());
            }
            let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
            self.tx
                .blocking_send(Ok(chunk))
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the store stopped reading"))
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let uri = store.uri(hash);
    let producer = tokio::task::spawn_blocking(move || {
        let mut sink = Chunks { tx: tx.clone(), buf: Vec::with_capacity(CHUNK.min(len as usize)) };
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            write(&mut sink).and_then(|()| std::io::Write::flush(&mut sink))
        }));
        let failed = match written {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(panic) => format!("it panicked: {}", crate::panic::message(panic)),
        };
        // Every unfinished write ends the stream in an error (never early),
        // so the store abandons the upload instead of keeping a short object.
        let _ = tx.blocking_send(Err(StoreError::Backend { store: uri, message: format!("writing failed: {failed}") }));
    });
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed();
    let stored = store.put_stream(hash, len, stream).await;
    let _ = producer.await;
    stored
}

/// Reads an object as a stream, hashing as it goes: the last item is an
/// error if the bytes did not match `hash`, so a consumer must only trust
/// what it received once the stream ended without error.
pub async fn get_verified_stream(store: &dyn ArtifactStore, hash: &ContentHash) -> Result<ByteStream, StoreError> {
    let inner = store.get_stream(hash).await?;
    let expected = *hash;
    let uri = store.uri(hash);
    let state = (inner, blake3::Hasher::new(), false);
    Ok(futures::stream::unfold(state, move |(mut inner, mut hasher, done)| {
        let uri = uri.clone();
        async move {
            if done {
                return None;
            }
            match inner.next().await {
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    Some((Ok(chunk), (inner, hasher, false)))
                }
                Some(Err(e)) => Some((Err(e), (inner, hasher, true))),
                None => {
                    let actual = ContentHash::from_bytes(*hasher.finalize().as_bytes());
                    if actual == expected {
                        None
                    } else {
                        Some((Err(StoreError::Corrupted { uri, expected, actual }), (inner, hasher, true)))
                    }
                }
            }
        }
    })
    .boxed())
}

/// Reads an object and checks its bytes against `hash`.
pub async fn get_verified(store: &dyn ArtifactStore, hash: &ContentHash) -> Result<Bytes, StoreError> {
    let bytes = store.get(hash).await?;
    let actual = ContentHash::of(&bytes);
    if actual != *hash {
        return Err(StoreError::Corrupted { uri: store.uri(hash), expected: *hash, actual });
    }
    Ok(bytes)
}

/// Why [`export_version`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the artifact failed (it is missing, or its bytes do not
    /// match its content hash).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Writes the bytes of artifact `version` to the file `path`, verified
/// against its content hash as they stream: the file appears whole, or not
/// at all (it is written beside `path` and renamed when every byte
/// matched). Returns how many bytes it wrote.
pub async fn export_version(
    store: &dyn ArtifactStore,
    version: &crate::metadata::record::ArtifactVersion,
    path: &std::path::Path,
) -> Result<u64, ExportError> {
    use std::io::Write;
    let fail = |source: std::io::Error| ExportError::Write { path: path.to_path_buf(), source };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("export");
    let tmp = path.with_file_name(format!(".{name}.zenflow-partial"));
    let mut stream = match &version.inline {
        // A small artifact kept in the record: verified in one piece.
        Some(_) => {
            let bytes = read_version(store, version).await?;
            futures::stream::once(async move { Ok(bytes) }).boxed()
        }
        None => get_verified_stream(store, &version.content_hash).await?,
    };
    let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(fail)?);
    let mut written = 0u64;
    let result: Result<(), ExportError> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            file.write_all(&chunk).map_err(fail)?;
            written += chunk.len() as u64;
        }
        file.flush().map_err(fail)
    }
    .await;
    drop(file);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(fail)?;
    Ok(written)
}

/// The bytes of an artifact version, verified against its content hash:
/// from the record itself for small inline artifacts, else from the store.
pub async fn read_version(
    store: &dyn ArtifactStore,
    version: &crate::metadata::record::ArtifactVersion,
) -> Result<Bytes, StoreError> {
    match &version.inline {
        Some(bytes) => {
            let actual = ContentHash::of(bytes);
            if actual != version.content_hash {
                return Err(StoreError::Corrupted { uri: version.uri.clone(), expected: version.content_hash, actual });
            }
            Ok(bytes.clone())
        }
        None => match get_verified(store, &version.content_hash).await {
            Err(StoreError::NotFound { uri }) if !version.uri.is_empty() && version.uri != uri => {
                Err(StoreError::InAnotherStore { uri: version.uri.clone(), store: store.url() })
            }
            other => other,
        },
    }
}

/// Artifacts up to this size are read back and hashed before a cache hit
/// reuses them; larger ones are checked for presence only (reading them on
/// every hit would cost more than most steps).
pub const VERIFY_ON_HIT: u64 = 8 << 20;

/// Whether a cache hit may reuse an artifact version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Usable {
    /// Its bytes are there (and, up to [`VERIFY_ON_HIT`], hash right).
    Yes,
    /// Its bytes are gone from the store.
    Gone,
    /// Its bytes are there but damaged: what [`StoreError::Corrupted`] says.
    Corrupted(String),
}

/// Whether a cache hit may reuse `version`: inline bytes and objects up to
/// [`VERIFY_ON_HIT`] are verified against the content hash, larger objects
/// must exist. A damaged object is then replaced by the step that runs
/// again (the store rewrites an object that is not intact). A read that
/// fails for another reason (the store is unreachable) leaves the verdict
/// to presence, as for a large object: the step that reads the bytes
/// reports that error.
pub async fn version_usable(
    store: &dyn ArtifactStore,
    version: &crate::metadata::record::ArtifactVersion,
) -> Result<Usable, StoreError> {
    if version.inline.is_none() && version.metadata.size > VERIFY_ON_HIT {
        return Ok(if store.exists(&version.content_hash).await? { Usable::Yes } else { Usable::Gone });
    }
    match read_version(store, version).await {
        Ok(_) => Ok(Usable::Yes),
        Err(StoreError::NotFound { .. } | StoreError::InAnotherStore { .. }) => Ok(Usable::Gone),
        Err(e @ StoreError::Corrupted { .. }) => Ok(Usable::Corrupted(e.to_string())),
        Err(_) => Ok(if store.exists(&version.content_hash).await? { Usable::Yes } else { Usable::Gone }),
    }
}

/// The object key of a hash: `<aa>/<hash>`, fanned out so no folder grows huge.
pub fn object_key(hash: &ContentHash) -> String {
    let hex = hash.to_hex();
    format!("{}/{}", &hex[..2], hex)
}
