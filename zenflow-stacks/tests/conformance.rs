//! Every store implementation runs the shared conformance suites.

use std::sync::Arc;
use zenflow_core::conformance;
use zenflow_core::{ArtifactStore, MetadataStore};
use zenflow_stacks::{ObjectArtifactStore, SqliteMetadataStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_artifact_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ArtifactStore> = Arc::new(ObjectArtifactStore::local(dir.path().join("artifacts")).unwrap());
    conformance::artifact_store::run_all(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_artifact_store_conforms() {
    conformance::artifact_store::run_all(Arc::new(ObjectArtifactStore::memory())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zenflow.db");
    conformance::metadata::run_all(|| -> Arc<dyn MetadataStore> {
        Arc::new(SqliteMetadataStore::open(&path).unwrap())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_memory_store_conforms_single_handle() {
    // An in-memory database is private to its connection, so every "handle"
    // here is the same store.
    let store: Arc<dyn MetadataStore> = Arc::new(SqliteMetadataStore::in_memory().unwrap());
    conformance::metadata::records_round_trip(store.as_ref()).await;
    conformance::metadata::cache_lookup(store.as_ref()).await;
    conformance::metadata::bad_references(store.as_ref()).await;
    conformance::metadata::stale_runs(store.as_ref()).await;
    conformance::metadata::concurrent_writers(&|| store.clone(), 8).await;
}
