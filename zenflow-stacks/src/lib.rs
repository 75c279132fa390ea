//! Concrete zenflow stack components.
//!
//! - [`artifact_store::ObjectArtifactStore`]: content-addressed artifacts on any
//!   `object_store` backend (local folder, memory).
//! - [`metadata::SqliteMetadataStore`]: the embedded metadata store.
//! - [`orchestrator::LocalOrchestrator`]: runs steps on this machine, in parallel.
//! - [`local`]: the embedded default stack (`.zenflow/` under the project root).
//! - [`config`]: named stacks declared in `zenflow.toml`.
//!
//! Features: `postgres` (the PostgreSQL metadata store), `s3` (the S3 artifact store).

#![warn(missing_docs)]

pub mod artifact_store;
pub mod check;
pub mod config;
pub mod local;
pub mod metadata;
pub mod orchestrator;

pub use artifact_store::{Durability, ObjectArtifactStore};
pub use local::{local_stack, local_stack_at, project_root};
pub use metadata::SqliteMetadataStore;
pub use orchestrator::LocalOrchestrator;

/// rustls needs a process-wide crypto provider; zenflow uses ring (already
/// in the tree for the GitHub client).
#[cfg(any(feature = "s3", feature = "ray"))]
pub(crate) fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Another library may have installed one already: that is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
