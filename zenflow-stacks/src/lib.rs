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
pub mod config;
pub mod local;
pub mod metadata;
pub mod orchestrator;

pub use artifact_store::{Durability, ObjectArtifactStore};
pub use local::{local_stack, local_stack_at, project_root};
pub use metadata::SqliteMetadataStore;
pub use orchestrator::LocalOrchestrator;
