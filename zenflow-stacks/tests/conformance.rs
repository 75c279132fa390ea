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

#[test]
fn sqlite_heartbeats_outlive_starved_steps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zenflow.db");
    conformance::metadata::heartbeats_outlive_starved_steps(|| -> Arc<dyn MetadataStore> {
        Arc::new(SqliteMetadataStore::open(&path).unwrap())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_memory_store_conforms_single_handle() {
    // An in-memory database is private to its connection, so every "handle"
    // here is the same store.
    let store: Arc<dyn MetadataStore> = Arc::new(SqliteMetadataStore::in_memory().unwrap());
    conformance::metadata::records_round_trip(store.as_ref()).await;
    conformance::metadata::cache_lookup(store.as_ref()).await;
    conformance::metadata::latest_step_run(store.as_ref()).await;
    conformance::metadata::runs_with_id_prefix(store.as_ref()).await;
    conformance::metadata::bad_references(store.as_ref()).await;
    conformance::metadata::stale_runs(store.as_ref()).await;
    conformance::metadata::concurrent_writers(&|| store.clone(), 8).await;
}

/// A local write that fails or panics halfway leaves no file behind, and a
/// successful one leaves only the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_streamed_writes_leave_no_staging_files() {
    use zenflow_core::artifact_store::WriteFn;
    use zenflow_core::ContentHash;
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectArtifactStore::local(dir.path()).unwrap();
    let files = || -> Vec<String> {
        let mut all = Vec::new();
        let mut stack = vec![dir.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    all.push(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
        all
    };
    let data = vec![9u8; 1 << 20];
    let hash = ContentHash::of(&data);
    let failing: WriteFn = Box::new(|out| {
        out.write_all(&[9u8; 1000])?;
        Err(std::io::Error::other("no space left"))
    });
    assert!(store.put_writer(&hash, data.len() as u64, failing).await.is_err());
    let panicking: WriteFn = Box::new(|out| {
        out.write_all(&[9u8; 1000])?;
        panic!("encoder bug")
    });
    let err = store.put_writer(&hash, data.len() as u64, panicking).await.unwrap_err();
    assert!(err.to_string().contains("encoder bug"), "{err}");
    assert!(files().is_empty(), "left behind: {:?}", files());
    // The same for writes named by their hash once written.
    let failing: zenflow_core::materializer::StreamFn = std::sync::Arc::new(|out| {
        out.write_all(&[9u8; 1000])?;
        Err(std::io::Error::other("no space left"))
    });
    assert!(store.put_hashed(failing).await.is_err());
    let panicking: zenflow_core::materializer::StreamFn = std::sync::Arc::new(|out| {
        out.write_all(&[9u8; 1000])?;
        panic!("encoder bug")
    });
    assert!(store.put_hashed(panicking).await.is_err());
    assert!(files().is_empty(), "left behind: {:?}", files());
    let ok: WriteFn = Box::new(move |out| out.write_all(&data));
    store.put_writer(&hash, 1 << 20, ok).await.unwrap();
    assert_eq!(files(), vec![hash.to_hex()]);
}

/// Staging files that a process which died while writing left behind are
/// removed when the store is next opened; one written to lately (maybe by a
/// process writing right now) and files that are not staging files stay.
#[test]
fn opening_a_local_store_removes_abandoned_staging_files() {
    use std::time::{Duration, SystemTime};
    let dir = tempfile::tempdir().unwrap();
    let staging = dir.path().join(".staging");
    std::fs::create_dir_all(&staging).unwrap();
    let (old, fresh, other) = (staging.join(".a.partial"), staging.join(".b.partial"), staging.join("notes.txt"));
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    for (path, modified) in [(&old, Some(two_hours_ago)), (&fresh, None), (&other, Some(two_hours_ago))] {
        std::fs::write(path, b"half an artifact").unwrap();
        if let Some(t) = modified {
            std::fs::File::options().write(true).open(path).unwrap().set_modified(t).unwrap();
        }
    }
    ObjectArtifactStore::local(dir.path()).unwrap();
    assert!(!old.exists(), "an abandoned staging file was kept");
    assert!(fresh.exists(), "a staging file written to lately was removed");
    assert!(other.exists(), "a file that is not a staging file was removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_store_is_a_conforming_model_registry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zenflow.db");
    conformance::registry::run_all(|| -> Arc<dyn MetadataStore> {
        Arc::new(SqliteMetadataStore::open(&path).unwrap())
    })
    .await;
}
