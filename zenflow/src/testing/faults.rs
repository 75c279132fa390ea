//! Fault injection for the store traits: [`FaultyMetadata`] and
//! [`FaultyArtifacts`] delegate every call to a real store, and the
//! [`Faults`] they share decide which calls fail, wait, return corrupted
//! bytes, or crash the process.
//!
//! ```
//! use std::sync::Arc;
//! use zenflow::stacks::{LocalOrchestrator, ObjectArtifactStore, SqliteMetadataStore};
//! use zenflow::testing::faults::{Faults, FaultyArtifacts, FaultyMetadata, Rule};
//!
//! // The second artifact written fails, as a full disk would.
//! let faults = Faults::new().with(Rule::on("put").nth(2).fail("disk full (simulated)"));
//! let stack = zenflow::Stack::new(
//!     "faulty",
//!     Arc::new(LocalOrchestrator::new(1)),
//!     Arc::new(FaultyArtifacts::new(ObjectArtifactStore::memory(), faults.clone())),
//!     Arc::new(FaultyMetadata::new(SqliteMetadataStore::in_memory().unwrap(), faults.clone())),
//! );
//! # let _ = stack;
//! ```
//!
//! Operation names are the trait methods' (`write_step_run`, `put`, `get`,
//! `get_stream`, ...); `"*"` matches every call of a store.

use crate::artifact_store::{ByteStream, Shelf, StoreError, StoredObject, WriteFn};
use crate::materializer::StreamFn;
use crate::metadata::*;
use crate::ContentHash;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// What a rule does to the call it picks.
#[derive(Clone, Debug)]
pub enum Effect {
    /// The call fails with this message (a backend error).
    Fail(String),
    /// The call waits this long first, then runs.
    Delay(Duration),
    /// A read returns the bytes with one flipped (a corrupted object); on
    /// other calls it does nothing.
    Corrupt,
    /// The process aborts at the call (a `kill -9` at a chosen point).
    Crash,
}

/// What a rule sees of a call.
pub struct Call<'a> {
    /// The operation (the trait method's name).
    pub op: &'static str,
    /// The how-many-th call of this operation it is (from 1).
    pub n: u64,
    /// For `write_step_run`: the record being written.
    pub step_run: Option<&'a StepRunRecord>,
    /// For artifact calls: the object's hash.
    pub hash: Option<&'a ContentHash>,
}

type Predicate = Arc<dyn Fn(&Call<'_>) -> bool + Send + Sync>;

/// Which calls get an [`Effect`]: an operation, optionally only its n-th
/// call, only calls a predicate accepts, and how many times in all.
#[derive(Clone)]
pub struct Rule {
    op: &'static str,
    nth: Option<u64>,
    when: Option<Predicate>,
    times: Option<u64>,
    effect: Effect,
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rule").field("op", &self.op).field("nth", &self.nth).field("effect", &self.effect).finish()
    }
}

impl Rule {
    /// A rule for operation `op` (`"*"`: every operation); it fails the
    /// call unless another effect is set.
    pub fn on(op: &'static str) -> Self {
        Rule { op, nth: None, when: None, times: None, effect: Effect::Fail("injected fault".into()) }
    }

    /// Only the `n`-th call of the operation (from 1).
    pub fn nth(mut self, n: u64) -> Self {
        self.nth = Some(n);
        self
    }

    /// Only calls `predicate` accepts.
    pub fn when(mut self, predicate: impl Fn(&Call<'_>) -> bool + Send + Sync + 'static) -> Self {
        self.when = Some(Arc::new(predicate));
        self
    }

    /// At most `n` calls in all.
    pub fn times(mut self, n: u64) -> Self {
        self.times = Some(n);
        self
    }

    /// The call fails with `message`.
    pub fn fail(mut self, message: impl Into<String>) -> Self {
        self.effect = Effect::Fail(message.into());
        self
    }

    /// The call waits `delay` first.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.effect = Effect::Delay(delay);
        self
    }

    /// A read returns corrupted bytes.
    pub fn corrupt(mut self) -> Self {
        self.effect = Effect::Corrupt;
        self
    }

    /// The process aborts at the call.
    pub fn crash(mut self) -> Self {
        self.effect = Effect::Crash;
        self
    }
}

#[derive(Default)]
struct State {
    rules: Vec<(Rule, u64)>,
    calls: BTreeMap<&'static str, u64>,
    injected: Vec<String>,
}

/// The rules shared by the faulty stores of a stack, and what they did.
/// Cloning shares them.
#[derive(Clone, Default)]
pub struct Faults(Arc<Mutex<State>>);

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("Faults").field("rules", &s.rules.len()).field("injected", &s.injected).finish()
    }
}

impl Faults {
    /// No rules: every call passes through.
    pub fn new() -> Self {
        Faults::default()
    }

    /// Adds `rule`.
    pub fn with(self, rule: Rule) -> Self {
        self.lock().rules.push((rule, 0));
        self
    }

    /// Drops every rule (what a "next run, the fault gone" test wants).
    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// How many calls of `op` the stores saw.
    pub fn calls(&self, op: &str) -> u64 {
        self.lock().calls.get(op).copied().unwrap_or(0)
    }

    /// What was injected, in order (`op #n: effect`).
    pub fn injected(&self) -> Vec<String> {
        self.lock().injected.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The effect for this call, counting it.
    fn decide(&self, op: &'static str, step_run: Option<&StepRunRecord>, hash: Option<&ContentHash>) -> Option<Effect> {
        let mut s = self.lock();
        let n = {
            let c = s.calls.entry(op).or_insert(0);
            *c += 1;
            *c
        };
        let call = Call { op, n, step_run, hash };
        let picked = s.rules.iter_mut().find(|(r, used)| {
            (r.op == "*" || r.op == op)
                && r.nth.is_none_or(|k| k == n)
                && r.times.is_none_or(|t| *used < t)
                && r.when.as_ref().is_none_or(|p| p(&call))
        });
        let effect = picked.map(|(r, used)| {
            *used += 1;
            r.effect.clone()
        })?;
        s.injected.push(format!("{op} #{n}: {effect:?}"));
        drop(s);
        if let Effect::Crash = effect {
            // What a kill -9 does: no unwinding, no destructors, no flush.
            std::process::abort();
        }
        Some(effect)
    }

    /// Applies the effect before a call; `Err` for a failure.
    async fn before(
        &self,
        op: &'static str,
        step_run: Option<&StepRunRecord>,
        hash: Option<&ContentHash>,
    ) -> Result<bool, String> {
        match self.decide(op, step_run, hash) {
            Some(Effect::Fail(m)) => Err(m),
            Some(Effect::Delay(d)) => {
                tokio::time::sleep(d).await;
                Ok(false)
            }
            Some(Effect::Corrupt) => Ok(true),
            Some(Effect::Crash) | None => Ok(false),
        }
    }
}

/// A metadata store whose calls [`Faults`] may fail, delay or crash.
#[derive(Debug)]
pub struct FaultyMetadata<S> {
    inner: S,
    faults: Faults,
}

impl<S> FaultyMetadata<S> {
    /// `inner`, with `faults`.
    pub fn new(inner: S, faults: Faults) -> Self {
        FaultyMetadata { inner, faults }
    }
}

impl<S: MetadataStore> FaultyMetadata<S> {
    async fn check(&self, op: &'static str, step_run: Option<&StepRunRecord>) -> Result<(), MetadataError> {
        self.faults
            .before(op, step_run, None)
            .await
            .map(|_| ())
            .map_err(|message| MetadataError::Backend { location: self.inner.url(), message })
    }
}

#[async_trait::async_trait]
impl<S: MetadataStore> MetadataStore for FaultyMetadata<S> {
    fn url(&self) -> String {
        self.inner.url()
    }
    async fn create_run(&self, run: &NewRun) -> Result<RunRecord, MetadataError> {
        self.check("create_run", None).await?;
        self.inner.create_run(run).await
    }
    async fn set_run_status(
        &self,
        run_id: &str,
        status: RunStatus,
        error: Option<&str>,
        ended_at: Option<Timestamp>,
    ) -> Result<(), MetadataError> {
        self.check("set_run_status", None).await?;
        self.inner.set_run_status(run_id, status, error, ended_at).await
    }
    async fn heartbeat(&self, run_id: &str, at: Timestamp) -> Result<(), MetadataError> {
        self.check("heartbeat", None).await?;
        self.inner.heartbeat(run_id, at).await
    }
    async fn fail_stale_runs(&self, stale_after: Duration) -> Result<Vec<String>, MetadataError> {
        self.check("fail_stale_runs", None).await?;
        self.inner.fail_stale_runs(stale_after).await
    }
    async fn write_step_run(&self, write: &StepRunWrite) -> Result<Vec<OutputLink>, MetadataError> {
        self.check("write_step_run", Some(&write.step_run)).await?;
        self.inner.write_step_run(write).await
    }
    async fn flush(&self) -> Result<(), MetadataError> {
        self.check("flush", None).await?;
        self.inner.flush().await
    }
    async fn find_cached(&self, cache_key: &str) -> Result<Option<CacheHit>, MetadataError> {
        self.check("find_cached", None).await?;
        self.inner.find_cached(cache_key).await
    }
    async fn get_run(&self, id_or_name: &str) -> Result<Option<RunRecord>, MetadataError> {
        self.check("get_run", None).await?;
        self.inner.get_run(id_or_name).await
    }
    async fn list_runs(&self, pipeline: Option<&str>, limit: usize) -> Result<Vec<RunRecord>, MetadataError> {
        self.check("list_runs", None).await?;
        self.inner.list_runs(pipeline, limit).await
    }
    async fn runs_with_id_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<RunRecord>, MetadataError> {
        self.check("runs_with_id_prefix", None).await?;
        self.inner.runs_with_id_prefix(prefix, limit).await
    }
    async fn step_runs(&self, run_id: &str) -> Result<Vec<StepRunRecord>, MetadataError> {
        self.check("step_runs", None).await?;
        self.inner.step_runs(run_id).await
    }
    async fn latest_step_run(&self, run_id: &str, invocation: &str) -> Result<Option<StepRunRecord>, MetadataError> {
        self.check("latest_step_run", None).await?;
        self.inner.latest_step_run(run_id, invocation).await
    }
    async fn step_run(&self, id: &str) -> Result<Option<StepRunRecord>, MetadataError> {
        self.check("step_run", None).await?;
        self.inner.step_run(id).await
    }
    async fn artifact_version(&self, id: &str) -> Result<Option<ArtifactVersion>, MetadataError> {
        self.check("artifact_version", None).await?;
        self.inner.artifact_version(id).await
    }
    async fn artifact_versions(&self, name: Option<&str>, limit: usize) -> Result<Vec<ArtifactVersion>, MetadataError> {
        self.check("artifact_versions", None).await?;
        self.inner.artifact_versions(name, limit).await
    }
    async fn artifact_version_named(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<ArtifactVersion>, MetadataError> {
        self.check("artifact_version_named", None).await?;
        self.inner.artifact_version_named(name, version).await
    }
    async fn lineage(&self, artifact_version: &str) -> Result<Lineage, MetadataError> {
        self.check("lineage", None).await?;
        self.inner.lineage(artifact_version).await
    }
    async fn delete_run(&self, run_id: &str, dry_run: bool) -> Result<Deletion, MetadataError> {
        self.check("delete_run", None).await?;
        self.inner.delete_run(run_id, dry_run).await
    }
    async fn store_id(&self) -> Result<String, MetadataError> {
        self.check("store_id", None).await?;
        self.inner.store_id().await
    }
    async fn content_hashes(&self) -> Result<std::collections::HashMap<ContentHash, u64>, MetadataError> {
        self.check("content_hashes", None).await?;
        self.inner.content_hashes().await
    }
    /// A failing `registry` rule makes this a store that keeps no registry.
    fn registry(&self) -> Option<&dyn crate::registry::ModelRegistry> {
        match self.faults.decide("registry", None, None) {
            Some(Effect::Fail(_)) => None,
            _ => self.inner.registry(),
        }
    }
}

/// An artifact store whose calls [`Faults`] may fail, delay, corrupt or
/// crash.
#[derive(Debug)]
pub struct FaultyArtifacts<S> {
    inner: S,
    faults: Faults,
}

impl<S> FaultyArtifacts<S> {
    /// `inner`, with `faults`.
    pub fn new(inner: S, faults: Faults) -> Self {
        FaultyArtifacts { inner, faults }
    }
}

impl<S: crate::ext::ArtifactStore> FaultyArtifacts<S> {
    /// Whether to corrupt what the call reads; `Err` for a failure.
    async fn check(&self, op: &'static str, hash: Option<&ContentHash>) -> Result<bool, StoreError> {
        self.faults
            .before(op, None, hash)
            .await
            .map_err(|message| StoreError::Backend { store: self.inner.url(), message })
    }
}

/// `bytes` with its first byte flipped (or one added to an empty object).
fn corrupted(bytes: Bytes) -> Bytes {
    let mut v = bytes.to_vec();
    match v.first_mut() {
        Some(b) => *b ^= 0xFF,
        None => v.push(0),
    }
    Bytes::from(v)
}

#[async_trait::async_trait]
impl<S: crate::ext::ArtifactStore> crate::ext::ArtifactStore for FaultyArtifacts<S> {
    fn url(&self) -> String {
        self.inner.url()
    }
    fn uri(&self, hash: &ContentHash) -> String {
        self.inner.uri(hash)
    }
    async fn put(&self, hash: &ContentHash, bytes: Bytes) -> Result<(), StoreError> {
        self.check("put", Some(hash)).await?;
        self.inner.put(hash, bytes).await
    }
    async fn get(&self, hash: &ContentHash) -> Result<Bytes, StoreError> {
        let corrupt = self.check("get", Some(hash)).await?;
        let bytes = self.inner.get(hash).await?;
        Ok(if corrupt { corrupted(bytes) } else { bytes })
    }
    async fn exists(&self, hash: &ContentHash) -> Result<bool, StoreError> {
        self.check("exists", Some(hash)).await?;
        self.inner.exists(hash).await
    }
    async fn delete(&self, hash: &ContentHash) -> Result<(), StoreError> {
        self.check("delete", Some(hash)).await?;
        self.inner.delete(hash).await
    }
    async fn list(&self, shelf: Shelf) -> Result<Vec<StoredObject>, StoreError> {
        self.check("list", None).await?;
        self.inner.list(shelf).await
    }
    async fn trash(&self, hash: &ContentHash) -> Result<(), StoreError> {
        self.check("trash", Some(hash)).await?;
        self.inner.trash(hash).await
    }
    async fn restore(&self, hash: &ContentHash) -> Result<(), StoreError> {
        self.check("restore", Some(hash)).await?;
        self.inner.restore(hash).await
    }
    async fn purge(&self, hash: &ContentHash) -> Result<(), StoreError> {
        self.check("purge", Some(hash)).await?;
        self.inner.purge(hash).await
    }
    async fn owner(&self, claim: Option<&str>) -> Result<Option<String>, StoreError> {
        self.check("owner", None).await?;
        self.inner.owner(claim).await
    }
    async fn put_stream(&self, hash: &ContentHash, len: u64, stream: ByteStream) -> Result<(), StoreError> {
        self.check("put_stream", Some(hash)).await?;
        self.inner.put_stream(hash, len, stream).await
    }
    async fn put_writer(&self, hash: &ContentHash, len: u64, write: WriteFn) -> Result<(), StoreError> {
        self.check("put_writer", Some(hash)).await?;
        self.inner.put_writer(hash, len, write).await
    }
    async fn put_hashed(&self, write: StreamFn) -> Result<(ContentHash, u64), StoreError> {
        self.check("put_hashed", None).await?;
        self.inner.put_hashed(write).await
    }
    async fn get_stream(&self, hash: &ContentHash) -> Result<ByteStream, StoreError> {
        use futures::StreamExt;
        let corrupt = self.check("get_stream", Some(hash)).await?;
        let stream = self.inner.get_stream(hash).await?;
        if !corrupt {
            return Ok(stream);
        }
        // The first chunk flipped: a verified read fails at its end.
        let mut first = true;
        Ok(stream
            .map(move |chunk| {
                let chunk = chunk?;
                Ok(if std::mem::take(&mut first) { corrupted(chunk) } else { chunk })
            })
            .boxed())
    }
}
