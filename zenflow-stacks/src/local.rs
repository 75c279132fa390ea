//! The embedded default stack: everything under `.zenflow/` in the project.

use crate::{LocalOrchestrator, ObjectArtifactStore, SqliteMetadataStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zenflow_core::{Error, Result, Stack};

/// The folder, under the project root, that holds the local stack's stores.
pub const STATE_DIR: &str = ".zenflow";

/// The project root: `$ZENFLOW_PROJECT_ROOT` if set; otherwise the nearest
/// folder, from the current one upwards, that holds `zenflow.toml` or a
/// `.zenflow` folder; otherwise the root of the enclosing git checkout;
/// otherwise the current folder.
pub fn project_root() -> Result<PathBuf> {
    if let Some(root) = std::env::var_os("ZENFLOW_PROJECT_ROOT").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(root));
    }
    let cwd = std::env::current_dir()
        .map_err(|e| Error::usage(format!("cannot read the current folder: {e}; set ZENFLOW_PROJECT_ROOT")))?;
    if let Some(dir) = cwd.ancestors().find(|d| d.join("zenflow.toml").is_file() || d.join(STATE_DIR).is_dir()) {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = cwd.ancestors().find(|d| d.join(".git").exists()) {
        return Ok(dir.to_path_buf());
    }
    Ok(cwd)
}

/// The `local` stack of the current project (see [`project_root`]), as
/// `zenflow.toml` declares it, or the embedded default.
pub fn local_stack() -> Result<Stack> {
    crate::config::Stacks::load(&project_root()?)?.open("local")
}

/// The `local` stack rooted at `root`: artifacts in `root/.zenflow/artifacts`,
/// metadata in `root/.zenflow/zenflow.db`, steps on local threads.
pub fn local_stack_at(root: impl AsRef<Path>) -> Result<Stack> {
    let root = root.as_ref();
    let state = root.join(STATE_DIR);
    let artifacts = ObjectArtifactStore::local(state.join("artifacts"))?;
    let metadata = SqliteMetadataStore::open(state.join("zenflow.db"))?;
    Ok(Stack::new("local", Arc::new(LocalOrchestrator::default()), Arc::new(artifacts), Arc::new(metadata))
        .with_project_root(root)
        .with_ci(ci_from_env()))
}

/// A stack whose stores live in memory only (an in-memory SQLite database
/// and an in-memory artifact store), running steps on `parallelism` local
/// threads: for examples, experiments and tests; everything is gone when
/// the last handle to it is dropped.
pub fn memory_stack(parallelism: usize) -> Result<Stack> {
    let metadata = SqliteMetadataStore::in_memory()?;
    Ok(Stack::new(
        "memory",
        Arc::new(LocalOrchestrator::new(parallelism)),
        Arc::new(ObjectArtifactStore::memory()),
        Arc::new(metadata),
    )
    .with_ci(ci_from_env()))
}

/// The CI job or user this process runs as, from its environment: whom the
/// stacks built here make registry changes for.
pub fn ci_from_env() -> zenflow_core::registry::CiContext {
    zenflow_core::registry::CiContext::from_env(|k| std::env::var(k).ok())
}
