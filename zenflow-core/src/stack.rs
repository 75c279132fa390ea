//! A stack: the named set of components a pipeline runs on.

use crate::artifact_store::{self, ArtifactStore};
use crate::error::{Error, Result};
use crate::materializer::{self, Encoded, Materialize, Materializer};
use crate::metadata::{ArtifactVersion, MetadataStore, RunRecord, RunStatus, StepRunRecord};
use crate::orchestrator::Orchestrator;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// An orchestrator, an artifact store and a metadata store under one name.
///
/// Cheap to clone. The blocking methods (`get_run`, `load`, and
/// `Pipeline::run`) drive a runtime owned by the stack; from async code use
/// the components directly or `Pipeline::run_async`.
#[derive(Clone)]
pub struct Stack {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    artifacts: Arc<dyn ArtifactStore>,
    metadata: Arc<dyn MetadataStore>,
    orchestrator: Arc<dyn Orchestrator>,
    project_root: Option<PathBuf>,
    inline_limit: usize,
    /// Aliases that move only with a run whose quality gate passed.
    protected_aliases: Vec<String>,
    /// The model server that deployments on this stack drive.
    deployer: Option<Deployer>,
    /// On whose behalf registry changes are made.
    ci: crate::registry::CiContext,
    runtime: OnceLock<tokio::runtime::Runtime>,
    /// When this stack last closed the runs whose process died.
    stale_checked: std::sync::Mutex<Option<std::time::Instant>>,
}

/// A stack's deployer: the model server it deploys to, and the admin
/// token of that server.
#[derive(Clone, PartialEq, Eq)]
pub struct Deployer {
    /// The server's base URL (`http://127.0.0.1:8080`).
    pub url: String,
    /// Its admin token (from the environment; never printed).
    pub token: String,
    /// How long a deployment waits for the server to load and serve a version.
    pub wait: std::time::Duration,
}

impl std::fmt::Debug for Deployer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployer")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("wait", &self.wait)
            .finish()
    }
}

/// Artifacts up to this size are kept in the metadata store's record of the
/// step run instead of the artifact store: one synced write per step
/// instead of two (see [`Stack::with_inline_limit`]).
pub const DEFAULT_INLINE_LIMIT: usize = 16 * 1024;

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Stores that group writes commit them on the runtime, which
            // stops now: make them durable first. (Not from inside async
            // code, where blocking would panic; there the runtime goes on.)
            if tokio::runtime::Handle::try_current().is_err() {
                if let Err(e) = rt.block_on(self.metadata.flush()) {
                    tracing::error!("the last writes to the metadata store could not be committed: {e}");
                }
            }
            // The last handle may be dropped inside async code, where a
            // blocking runtime shutdown would panic.
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("name", &self.inner.name)
            .field("orchestrator", &self.inner.orchestrator)
            .field("artifacts", &self.inner.artifacts.url())
            .field("metadata", &self.inner.metadata.url())
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
        Stack {
            inner: Arc::new(Inner {
                name: name.into(),
                artifacts,
                metadata,
                orchestrator,
                project_root: None,
                inline_limit: DEFAULT_INLINE_LIMIT,
                protected_aliases: Vec::new(),
                deployer: None,
                ci: crate::registry::CiContext::unknown(),
                runtime: OnceLock::new(),
                stale_checked: std::sync::Mutex::new(None),
            }),
        }
    }

    /// Sets the project root (used to record the git commit of each run).
    pub fn with_project_root(self, root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        self.rebuilt(|i| i.project_root = Some(root))
    }

    /// Protects `aliases` of every model: they move only with a run whose
    /// quality gate passed, or forced with a reason (`protected_aliases` in
    /// a stack of `zenflow.toml`).
    pub fn with_protected_aliases(self, aliases: Vec<String>) -> Self {
        self.rebuilt(|i| i.protected_aliases = aliases)
    }

    /// Whether `alias` is protected on this stack.
    pub fn is_protected(&self, alias: &str) -> bool {
        self.inner.protected_aliases.iter().any(|a| a == alias)
    }

    /// The model registry kept by the metadata store.
    pub fn registry(&self) -> std::result::Result<&dyn crate::registry::ModelRegistry, crate::registry::RegistryError> {
        self.metadata()
            .registry()
            .ok_or_else(|| crate::registry::RegistryError::Unavailable { store: self.metadata().url() })
    }

    /// A promotion of `alias` of `model` to `to`, expecting `expect` to hold
    /// it, as this stack protects the alias, on behalf of [`Stack::ci`].
    pub fn promotion(
        &self,
        model: &str,
        alias: &str,
        to: Option<i64>,
        expect: crate::registry::Expect,
    ) -> crate::registry::Promotion {
        crate::registry::Promotion {
            protected: self.is_protected(alias),
            ..crate::registry::Promotion::new(model, alias, to, expect, &self.inner.ci)
        }
    }

    /// Keeps step outputs of at most `bytes` bytes in the metadata store
    /// instead of the artifact store (default [`DEFAULT_INLINE_LIMIT`]; 0
    /// puts every artifact in the artifact store).
    pub fn with_inline_limit(self, bytes: usize) -> Self {
        self.rebuilt(|i| i.inline_limit = bytes)
    }

    /// Deployments on this stack drive the model server `deployer`
    /// (`[stacks.NAME.deployer]` in `zenflow.toml`).
    pub fn with_deployer(self, deployer: Deployer) -> Self {
        self.rebuilt(|i| i.deployer = Some(deployer))
    }

    /// Makes registry changes on behalf of `ci` (a CI job, or the user this
    /// process runs as; see [`CiContext::from_env`](crate::registry::CiContext::from_env)).
    pub fn with_ci(self, ci: crate::registry::CiContext) -> Self {
        self.rebuilt(|i| i.ci = ci)
    }

    /// On whose behalf this stack makes registry changes.
    pub fn ci(&self) -> &crate::registry::CiContext {
        &self.inner.ci
    }

    /// The model server deployments on this stack drive, if it has one.
    pub fn deployer(&self) -> Option<&Deployer> {
        self.inner.deployer.as_ref()
    }

    /// A new stack with this one's components and settings, `edit`ed
    /// (and a runtime of its own).
    fn rebuilt(&self, edit: impl FnOnce(&mut Inner)) -> Self {
        let i = &self.inner;
        let mut inner = Inner {
            name: i.name.clone(),
            artifacts: i.artifacts.clone(),
            metadata: i.metadata.clone(),
            orchestrator: i.orchestrator.clone(),
            project_root: i.project_root.clone(),
            inline_limit: i.inline_limit,
            protected_aliases: i.protected_aliases.clone(),
            deployer: i.deployer.clone(),
            ci: i.ci.clone(),
            runtime: OnceLock::new(),
            stale_checked: std::sync::Mutex::new(None),
        };
        edit(&mut inner);
        Stack { inner: Arc::new(inner) }
    }

    /// The largest artifact kept inline in the metadata store.
    pub fn inline_limit(&self) -> usize {
        self.inner.inline_limit
    }

    /// The stack's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The artifact store.
    pub fn artifacts(&self) -> &Arc<dyn ArtifactStore> {
        &self.inner.artifacts
    }

    /// The metadata store.
    pub fn metadata(&self) -> &Arc<dyn MetadataStore> {
        &self.inner.metadata
    }

    /// The orchestrator.
    pub fn orchestrator(&self) -> &Arc<dyn Orchestrator> {
        &self.inner.orchestrator
    }

    /// The project root, if set.
    pub fn project_root(&self) -> Option<&Path> {
        self.inner.project_root.as_deref()
    }

    /// Runs a future to completion on the stack's runtime.
    pub fn block_on<F: Future>(&self, future: F) -> Result<F::Output> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::usage(
                "a blocking zenflow call was made from async code; use the async API \
                 (`Pipeline::run_async`, `stack.metadata()`) there instead",
            ));
        }
        let rt = match self.inner.runtime.get() {
            Some(rt) => rt,
            None => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .thread_name("zenflow")
                    .build()
                    .map_err(Error::Runtime)?;
                // Another thread may have won the race; either runtime works.
                let _ = self.inner.runtime.set(rt);
                self.inner.runtime.get().ok_or_else(|| Error::usage("runtime vanished"))?
            }
        };
        Ok(rt.block_on(future))
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
        Ok(self.block_on(self.metadata().get_run(id_or_name))??)
    }

    /// A recorded run by id or name, or `"latest"` (the newest run in the
    /// store), as the result a fresh run gives (untyped: a pipeline's
    /// [`Pipeline::reopen`](crate::Pipeline::reopen) gives it typed).
    pub fn run_result(&self, id_or_name: &str) -> Result<crate::run::result::RunResult> {
        let run = if id_or_name == "latest" {
            self.list_runs(None, 1)?.into_iter().next()
        } else {
            self.get_run(id_or_name)?
        };
        let run = run.ok_or_else(|| Error::NotFound(format!("no run `{id_or_name}` in {}", self.metadata().url())))?;
        self.block_on(crate::run::result::RunResult::load(self, run))?
    }

    /// The most recent run of `pipeline`.
    pub fn latest_run(&self, pipeline: &str) -> Result<Option<RunRecord>> {
        Ok(self.block_on(self.metadata().list_runs(Some(pipeline), 1))??.into_iter().next())
    }

    /// Runs, newest first, optionally of one pipeline.
    pub fn list_runs(&self, pipeline: Option<&str>, limit: usize) -> Result<Vec<RunRecord>> {
        Ok(self.block_on(self.metadata().list_runs(pipeline, limit))??)
    }

    /// The step runs of a run.
    pub fn step_runs(&self, run_id: &str) -> Result<Vec<StepRunRecord>> {
        Ok(self.block_on(self.metadata().step_runs(run_id))??)
    }

    /// The artifact version `reference` names: a version id, `name@N`
    /// (version N of artifact `name`, e.g. `training.train.model@3`) or
    /// `name@latest`.
    pub fn artifact_version(&self, reference: &str) -> Result<ArtifactVersion> {
        self.block_on(self.artifact_version_async(reference))?
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
        self.block_on(self.load_async(version))?
    }

    /// Async form of [`Stack::load`].
    pub async fn load_async<T: Materialize>(&self, version: &ArtifactVersion) -> Result<T> {
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
        let bytes = artifact_store::read_version(self.artifacts().as_ref(), version).await?;
        Ok(materializer::decode::<T>(Encoded { format: version.format.clone(), bytes })?)
    }
}
