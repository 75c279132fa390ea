//! A stack: the named set of components a pipeline runs on.

pub mod stores;

pub use stores::{BlockingError, Stores, DEFAULT_INLINE_LIMIT};

use crate::artifact_store::{self, ArtifactStore};
use crate::error::{Error, Result};
use crate::materializer::{self, Encoded, Materialize, Materializer};
use crate::metadata::{ArtifactVersion, MetadataStore, RunRecord, RunStatus, StepRunRecord};
use crate::orchestrator::Orchestrator;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

/// An orchestrator, an artifact store and a metadata store under one name.
///
/// Cheap to clone. A stack is its [`Stores`] (it dereferences to them:
/// `stack.metadata()`, `stack.registry()`) with an orchestrator. The
/// blocking methods (`get_run`, `load`, and `Pipeline::run`) drive a
/// runtime owned by the stack; from async code use the components directly
/// or `Pipeline::run_async`.
#[derive(Clone)]
pub struct Stack {
    inner: Arc<Inner>,
}

struct Inner {
    stores: Stores,
    orchestrator: Arc<dyn Orchestrator>,
    /// When this stack last closed the runs whose process died.
    stale_checked: std::sync::Mutex<Option<std::time::Instant>>,
}

impl std::ops::Deref for Stack {
    type Target = Stores;

    fn deref(&self) -> &Stores {
        &self.inner.stores
    }
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("name", &self.name())
            .field("orchestrator", &self.inner.orchestrator)
            .field("artifacts", &self.artifacts().url())
            .field("metadata", &self.metadata().url())
            .finish()
    }
}

impl Stack {
    /// Assembles a stack from its components.
    pub fn new(
        name: impl Into<String>,
        orchestrator: Arc<dyn Orchestrator>,
        artifacts: Arc<dyn ArtifactStore>,
        metadata: Arc<dyn MetadataStore>,
    ) -> Self {
        Stack::of(Stores::new(name, artifacts, metadata), orchestrator)
    }

    /// A stack of `stores` and `orchestrator`.
    pub fn of(stores: Stores, orchestrator: Arc<dyn Orchestrator>) -> Self {
        Stack { inner: Arc::new(Inner { stores, orchestrator, stale_checked: std::sync::Mutex::new(None) }) }
    }

    /// The stack with its stores `edit`ed (see [`Stores::with_ci`] and the
    /// other `with_` methods; they have a runtime of their own).
    fn with_stores(self, edit: impl FnOnce(Stores) -> Stores) -> Self {
        Stack::of(edit(self.inner.stores.clone()), self.inner.orchestrator.clone())
    }

    /// Sets the project root (used to record the git commit of each run).
    pub fn with_project_root(self, root: impl Into<PathBuf>) -> Self {
        self.with_stores(|s| s.with_project_root(root))
    }

    /// Protects `aliases` of every model ([`Stores::with_protected_aliases`]).
    pub fn with_protected_aliases(self, aliases: Vec<String>) -> Self {
        self.with_stores(|s| s.with_protected_aliases(aliases))
    }

    /// Keeps small step outputs inline ([`Stores::with_inline_limit`]).
    pub fn with_inline_limit(self, bytes: usize) -> Self {
        self.with_stores(|s| s.with_inline_limit(bytes))
    }

    /// Keeps `value` with the stack ([`Stores::with_extension`]).
    pub fn with_extension<T: std::any::Any + Send + Sync>(self, value: T) -> Self {
        self.with_stores(|s| s.with_extension(value))
    }

    /// Makes registry changes on behalf of `ci` ([`Stores::with_ci`]).
    pub fn with_ci(self, ci: crate::registry::CiContext) -> Self {
        self.with_stores(|s| s.with_ci(ci))
    }

    /// The stack's stores and settings: what a run keeps of it.
    pub fn stores(&self) -> &Stores {
        &self.inner.stores
    }

    /// The orchestrator.
    pub fn orchestrator(&self) -> &Arc<dyn Orchestrator> {
        &self.inner.orchestrator
    }

    /// Runs a fallible future to completion on the stack's runtime: its
    /// error, or the runtime's (a call from async code), as an [`Error`].
    /// [`Stores::block_on`] gives the future's own result back unconverted.
    pub fn block_on<T, E>(&self, future: impl Future<Output = std::result::Result<T, E>>) -> Result<T>
    where
        Error: From<E>,
    {
        Ok(self.inner.stores.block_on(future)??)
    }

    /// Marks runs whose process died as failed: at once for a run driven
    /// from this project on this machine whose process no longer holds its
    /// lock ([`crate::run::liveness::lock`]), else when its heartbeat lapsed (see
    /// [`MetadataStore::fail_stale_runs`]); at most once per
    /// [`HEARTBEAT_INTERVAL`](crate::metadata::HEARTBEAT_INTERVAL) per stack:
    /// a run is taken for dead only after several missed heartbeats, so
    /// looking more often finds nothing new. Returns the ids of the runs marked.
    pub async fn close_stale_runs(&self) -> Result<Vec<String>> {
        let now = std::time::Instant::now();
        {
            let mut checked = self.inner.stale_checked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if checked.is_some_and(|t| now.duration_since(t) < crate::metadata::HEARTBEAT_INTERVAL) {
                return Ok(Vec::new());
            }
            *checked = Some(now);
        }
        let mut marked = Vec::new();
        if let Some(root) = self.project_root() {
            for id in crate::run::liveness::lock::abandoned(root) {
                let Some(run) = self.metadata().get_run(&id).await? else {
                    continue; // a run of another stack of this project: left for a command on it
                };
                if run.status == RunStatus::Running {
                    self.fail_dead_run(&id).await?;
                    marked.push(id.clone());
                }
                crate::run::liveness::lock::forget(root, &id);
            }
        }
        marked.extend(self.metadata().fail_stale_runs(crate::metadata::STALE_AFTER).await?);
        Ok(marked)
    }

    /// Fails run `id`, whose process died, and its step runs that were
    /// still running (they died with it).
    async fn fail_dead_run(&self, id: &str) -> Result<()> {
        use crate::metadata::{StepRunWrite, StepStatus};
        for mut step in self.metadata().step_runs(id).await?.into_iter().filter(|s| s.status == StepStatus::Running) {
            step.status = StepStatus::Failed;
            step.error = Some(crate::metadata::DEAD_STEP_ERROR.into());
            step.ended_at = Some(crate::metadata::now());
            self.metadata().write_step_run(&StepRunWrite { step_run: step, new_outputs: Vec::new() }).await?;
        }
        let ended = Some(crate::metadata::now());
        self.metadata()
            .set_run_status(id, RunStatus::Failed, Some(crate::run::liveness::lock::DEAD_ERROR), ended)
            .await?;
        Ok(())
    }

    /// A run by id or name.
    pub fn get_run(&self, id_or_name: &str) -> Result<Option<RunRecord>> {
        self.block_on(self.metadata().get_run(id_or_name))
    }

    /// Runs, newest first, optionally of one pipeline.
    pub fn list_runs(&self, pipeline: Option<&str>, limit: usize) -> Result<Vec<RunRecord>> {
        self.block_on(self.metadata().list_runs(pipeline, limit))
    }

    /// The step runs of a run.
    pub fn step_runs(&self, run_id: &str) -> Result<Vec<StepRunRecord>> {
        self.block_on(self.metadata().step_runs(run_id))
    }

    /// The artifact version `reference` names: a version id, `name@N`
    /// (version N of artifact `name`, e.g. `training.train.model@3`) or
    /// `name@latest`.
    pub fn artifact_version(&self, reference: &str) -> Result<ArtifactVersion> {
        self.block_on(self.artifact_version_async(reference))
    }

    /// Async form of [`Stack::artifact_version`].
    pub async fn artifact_version_async(&self, reference: &str) -> Result<ArtifactVersion> {
        let metadata = self.metadata();
        let Some((name, version)) = reference.rsplit_once('@') else {
            return metadata.artifact_version(reference).await?.ok_or_else(|| {
                Error::NotFound(format!(
                    "no artifact version `{reference}` in {} (name one by id, `name@N` or `name@latest`)",
                    metadata.url()
                ))
            });
        };
        let number = match version {
            "latest" => None,
            n => Some(n.parse::<i64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                Error::usage(format_args!(
                    "`{reference}`: after `@` comes a version number (1, 2, ...) or `latest`, not `{n}`"
                ))
            })?),
        };
        if let Some(found) = metadata.artifact_version_named(name, number).await? {
            return Ok(found);
        }
        let latest = match number {
            Some(_) => metadata.artifact_version_named(name, None).await?,
            None => None,
        };
        Err(Error::NotFound(match latest {
            Some(latest) => format!("artifact `{name}` has no version {version}; its latest is {}", latest.version),
            None => format!(
                "no artifact named `{name}` in {} (names are `<pipeline>.<step>.<output>`: `artifacts list` shows them)",
                metadata.url()
            ),
        }))
    }

    /// Loads an artifact version as a `T`, verifying its content hash.
    pub fn load<T: Materialize>(&self, version: &ArtifactVersion) -> Result<T> {
        self.block_on(self.load_async(version))
    }

    /// Async form of [`Stack::load`].
    pub async fn load_async<T: Materialize>(&self, version: &ArtifactVersion) -> Result<T> {
        load_version(self, version).await
    }
}

/// Loads `version` from the artifact store of `stores` as a `T`, verifying
/// its content hash; refuses a version another materializer wrote.
pub(crate) async fn load_version<T: Materialize>(stores: &Stores, version: &ArtifactVersion) -> Result<T> {
    if version.materializer != T::Materializer::ID {
        return Err(Error::usage(format_args!(
            "artifact {} v{} holds a `{}` written by {}; it cannot be loaded as `{}`",
            version.name,
            version.version,
            version.type_name,
            version.materializer,
            std::any::type_name::<T>()
        )));
    }
    let bytes = artifact_store::read_version(stores.artifacts().as_ref(), version).await?;
    Ok(materializer::decode::<T>(Encoded { format: version.format.clone(), bytes })?)
}
