//! What a stack holds besides its orchestrator: its stores, its model
//! registry, on whose behalf it acts, what other layers keep with it, and the runtime its
//! blocking calls drive. What a step runner, a step's context and a run's
//! result keep of the stack they run on.

use crate::artifact_store::ArtifactStore;
use crate::metadata::MetadataStore;
use crate::registry::{CiContext, Expect, ModelRegistry, Promotion, RegistryError};
use std::any::Any;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// A stack's artifact store and metadata store (with its model registry),
/// and its settings. Cheap to clone.
#[derive(Clone)]
pub struct Stores {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    artifacts: Arc<dyn ArtifactStore>,
    metadata: Arc<dyn MetadataStore>,
    project_root: Option<PathBuf>,
    inline_limit: usize,
    /// Aliases that move only with a run whose quality gate passed.
    protected_aliases: Vec<String>,
    /// What layers above this crate keep with the stack (the model server
    /// deployments drive, say), one value per type.
    extensions: Vec<Arc<dyn Any + Send + Sync>>,
    /// On whose behalf registry changes are made.
    ci: CiContext,
    runtime: OnceLock<tokio::runtime::Runtime>,
    /// Set once [`crate::gc::claim_artifacts`] found the artifact store ours.
    claimed: tokio::sync::OnceCell<()>,
}

/// Artifacts up to this size are kept in the metadata store's record of the
/// step run instead of the artifact store: one synced write per step
/// instead of two (see [`Stores::with_inline_limit`]).
pub const DEFAULT_INLINE_LIMIT: usize = 16 * 1024;

/// Why a blocking call could not run.
#[derive(Debug, thiserror::Error)]
pub enum BlockingError {
    /// It was made from async code, where blocking would stall the runtime.
    #[error(
        "a blocking zenflow call was made from async code; use the async API \
         (`Pipeline::run_async`, `stack.metadata()`) there instead"
    )]
    InAsync,
    /// The runtime could not start.
    #[error("cannot start zenflow's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

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

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("name", &self.inner.name)
            .field("artifacts", &self.inner.artifacts.url())
            .field("metadata", &self.inner.metadata.url())
            .finish()
    }
}

impl Stores {
    /// The stores of stack `name`, with default settings.
    pub fn new(name: impl Into<String>, artifacts: Arc<dyn ArtifactStore>, metadata: Arc<dyn MetadataStore>) -> Self {
        Stores {
            inner: Arc::new(Inner {
                name: name.into(),
                artifacts,
                metadata,
                project_root: None,
                inline_limit: DEFAULT_INLINE_LIMIT,
                protected_aliases: Vec::new(),
                extensions: Vec::new(),
                ci: CiContext::unknown(),
                runtime: OnceLock::new(),
                claimed: tokio::sync::OnceCell::new(),
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

    /// Keeps step outputs of at most `bytes` bytes in the metadata store
    /// instead of the artifact store (default [`DEFAULT_INLINE_LIMIT`]; 0
    /// puts every artifact in the artifact store).
    pub fn with_inline_limit(self, bytes: usize) -> Self {
        self.rebuilt(|i| i.inline_limit = bytes)
    }

    /// Keeps `value` with the stack, replacing a value of the same type:
    /// for what a layer above this crate configures per stack (the
    /// `zenflow` crate's deployer, from `[stacks.NAME.deployer]`).
    pub fn with_extension<T: Any + Send + Sync>(self, value: T) -> Self {
        self.rebuilt(|i| {
            i.extensions.retain(|e| !e.is::<T>());
            i.extensions.push(Arc::new(value));
        })
    }

    /// Makes registry changes on behalf of `ci` (a CI job, or the user this
    /// process runs as; see [`CiContext::from_env`]).
    pub fn with_ci(self, ci: CiContext) -> Self {
        self.rebuilt(|i| i.ci = ci)
    }

    /// These stores and settings, `edit`ed (with a runtime of their own).
    fn rebuilt(&self, edit: impl FnOnce(&mut Inner)) -> Self {
        let i = &self.inner;
        let mut inner = Inner {
            name: i.name.clone(),
            artifacts: i.artifacts.clone(),
            metadata: i.metadata.clone(),
            project_root: i.project_root.clone(),
            inline_limit: i.inline_limit,
            protected_aliases: i.protected_aliases.clone(),
            extensions: i.extensions.clone(),
            ci: i.ci.clone(),
            runtime: OnceLock::new(),
            claimed: tokio::sync::OnceCell::new(),
        };
        edit(&mut inner);
        Stores { inner: Arc::new(inner) }
    }

    /// Set once [`crate::gc::claim_artifacts`] found the artifact store
    /// this metadata store's: checked once per stores.
    pub(crate) fn artifacts_claimed(&self) -> &tokio::sync::OnceCell<()> {
        &self.inner.claimed
    }

    /// Whether `alias` is protected on this stack.
    pub fn is_protected(&self, alias: &str) -> bool {
        self.inner.protected_aliases.iter().any(|a| a == alias)
    }

    /// The model registry kept by the metadata store.
    pub fn registry(&self) -> Result<&dyn ModelRegistry, RegistryError> {
        self.metadata().registry().ok_or_else(|| RegistryError::Unavailable { store: self.metadata().url() })
    }

    /// A promotion of `alias` of `model` to `to`, expecting `expect` to hold
    /// it, as this stack protects the alias, on behalf of [`Stores::ci`].
    pub fn promotion(&self, model: &str, alias: &str, to: Option<i64>, expect: Expect) -> Promotion {
        Promotion { protected: self.is_protected(alias), ..Promotion::new(model, alias, to, expect, &self.inner.ci) }
    }

    /// On whose behalf this stack makes registry changes.
    pub fn ci(&self) -> &CiContext {
        &self.inner.ci
    }

    /// The value of type `T` kept with the stack ([`Stores::with_extension`]).
    pub fn extension<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.inner.extensions.iter().find_map(|e| e.downcast_ref::<T>())
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

    /// The project root, if set.
    pub fn project_root(&self) -> Option<&Path> {
        self.inner.project_root.as_deref()
    }

    /// Runs a future to completion on the stack's runtime (started on first
    /// use); refused from async code.
    pub fn block_on<F: Future>(&self, future: F) -> Result<F::Output, BlockingError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(BlockingError::InAsync);
        }
        let rt = match self.inner.runtime.get() {
            Some(rt) => rt,
            None => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .thread_name("zenflow")
                    .build()
                    .map_err(BlockingError::Runtime)?;
                // Another thread may have won the race; either runtime works.
                let _ = self.inner.runtime.set(rt);
                self.inner.runtime.get().unwrap_or_else(|| unreachable!("set just above"))
            }
        };
        Ok(rt.block_on(future))
    }
}
