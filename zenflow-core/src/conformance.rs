//! Conformance suites that every [`ArtifactStore`] and [`MetadataStore`](crate::metadata::MetadataStore)
//! implementation runs, as `object_store` does with its integration module.
//!
//! Each function panics with a message naming the broken promise. A backend's
//! test module calls [`artifact_store::run_all`] / [`metadata::run_all`]
//! with a fresh, empty store.

use crate::artifact_store::ArtifactStore;

/// The artifact store suite.
pub mod artifact_store {
    use super::*;
    use crate::artifact_store::{get_verified, StoreError};
    use crate::hash::ContentHash;
    use bytes::Bytes;
    use std::sync::Arc;

    /// Runs every artifact store check (with a 64 MiB large object).
    pub async fn run_all(store: Arc<dyn ArtifactStore>) {
        round_trip(store.as_ref()).await;
        idempotent_put(store.as_ref()).await;
        missing_object(store.as_ref()).await;
        corrupted_object(store.as_ref()).await;
        trash(store.as_ref()).await;
        owner(store.as_ref()).await;
        large_object(store.as_ref(), 64 << 20).await;
        streamed_object(store.as_ref(), 256 << 20).await;
        written_object(store.as_ref(), 20 << 20).await;
        hashed_object(store.as_ref(), 20 << 20).await;
        concurrent_writers(store.clone(), 8).await;
    }

    /// `put_hashed` stores what its writer writes under the hash of those
    /// bytes, which it returns, idempotently; a failing writer stores
    /// nothing; a writer that writes other bytes each time is refused or
    /// stored under the hash of what was stored, never under another.
    pub async fn hashed_object(store: &dyn ArtifactStore, size: usize) {
        use crate::materializer::StreamFn;
        let data: Bytes = chunks(size).flat_map(|c| c.to_vec()).map(|b| b.rotate_left(3)).collect::<Vec<u8>>().into();
        let writer = |data: Bytes| -> StreamFn {
            std::sync::Arc::new(move |out| {
                for piece in data.chunks(5 << 20) {
                    out.write_all(piece)?;
                }
                Ok(())
            })
        };
        let (hash, len) = store.put_hashed(writer(data.clone())).await.unwrap();
        assert_eq!((hash, len), (ContentHash::of(&data), size as u64), "named by the hash of its bytes");
        assert_eq!(get_verified(store, &hash).await.unwrap(), data);
        assert_eq!(store.put_hashed(writer(data.clone())).await.unwrap(), (hash, len), "idempotent");

        let other: Bytes = data.iter().map(|b| b ^ 0x33).collect::<Vec<u8>>().into();
        let half = other.slice(..size / 2);
        let failing: StreamFn = std::sync::Arc::new(move |out| {
            out.write_all(&half)?;
            Err(std::io::Error::other("encoder out of memory"))
        });
        let err = store.put_hashed(failing).await.unwrap_err();
        assert!(err.to_string().contains("encoder out of memory"), "{err}");
        assert!(!store.exists(&ContentHash::of(&other.slice(..size / 2))).await.unwrap(), "nothing stored");

        let calls = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(0));
        let counter = calls.clone();
        let unstable: StreamFn = std::sync::Arc::new(move |out| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            out.write_all(&vec![n; 1 << 20])
        });
        if let Ok((hash, _)) = store.put_hashed(unstable).await {
            assert!(get_verified(store, &hash).await.is_ok(), "stored under the hash of what was stored");
        }
    }

    /// `put_writer` stores exactly what its writer writes, in uneven pieces,
    /// idempotently; a writer that fails or panics halfway stores nothing
    /// and its error is reported.
    pub async fn written_object(store: &dyn ArtifactStore, size: usize) {
        use crate::artifact_store::WriteFn;
        let data: Bytes = chunks(size).flat_map(|c| c.to_vec()).collect::<Vec<u8>>().into();
        let hash = ContentHash::of(&data);
        let writer = |data: Bytes| -> WriteFn {
            Box::new(move |out| {
                for piece in data.chunks(3 << 20) {
                    out.write_all(piece)?;
                }
                Ok(())
            })
        };
        store.put_writer(&hash, size as u64, writer(data.clone())).await.unwrap();
        assert_eq!(get_verified(store, &hash).await.unwrap(), data, "what the writer wrote is stored");
        store.put_writer(&hash, size as u64, writer(data.clone())).await.expect("a second write of the same object");
        assert_eq!(get_verified(store, &hash).await.unwrap(), data);

        let other: Bytes = data.iter().map(|b| b ^ 0x5a).collect::<Vec<u8>>().into();
        let other_hash = ContentHash::of(&other);
        let half = other.slice(..size / 2);
        let failing: WriteFn = Box::new(move |out| {
            out.write_all(&half)?;
            Err(std::io::Error::other("the disk is on fire"))
        });
        let err = store.put_writer(&other_hash, size as u64, failing).await.unwrap_err();
        assert!(err.to_string().contains("the disk is on fire"), "the writer's error is reported: {err}");
        assert!(!store.exists(&other_hash).await.unwrap(), "a failed write stores nothing");
        let half = other.slice(..size / 2);
        let panicking: WriteFn = Box::new(move |out| {
            out.write_all(&half)?;
            panic!("the encoder broke");
        });
        assert!(
            store.put_writer(&other_hash, size as u64, panicking).await.is_err(),
            "a panicking writer fails the put"
        );
        assert!(!store.exists(&other_hash).await.unwrap(), "a panicked write stores nothing");
    }

    /// Deterministic pseudo-random chunks: `size` bytes, never all in memory.
    fn chunks(size: usize) -> impl Iterator<Item = Bytes> {
        const CHUNK: usize = 4 << 20;
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        (0..size.div_ceil(CHUNK)).map(move |i| {
            let len = CHUNK.min(size - i * CHUNK);
            let mut chunk = Vec::with_capacity(len);
            while chunk.len() < len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.extend_from_slice(&state.to_le_bytes()[..8.min(len - chunk.len())]);
            }
            Bytes::from(chunk)
        })
    }

    /// An object of `size` bytes is written from a stream and read back as
    /// a stream, chunk by chunk, verified by its hash; a tampered stream
    /// read fails at its end.
    pub async fn streamed_object(store: &dyn ArtifactStore, size: usize) {
        use crate::artifact_store::get_verified_stream;
        use futures::StreamExt;
        let mut hasher = blake3::Hasher::new();
        for c in chunks(size) {
            hasher.update(&c);
        }
        let hash = ContentHash::from_bytes(*hasher.finalize().as_bytes());
        let stream = futures::stream::iter(chunks(size).map(Ok)).boxed();
        store.put_stream(&hash, size as u64, stream).await.expect("streamed put");
        assert!(store.exists(&hash).await.unwrap());
        let mut read = get_verified_stream(store, &hash).await.unwrap();
        let mut total = 0usize;
        while let Some(chunk) = read.next().await {
            total += chunk.expect("a verified chunk").len();
        }
        assert_eq!(total, size, "every byte comes back");
        // A second streamed put of the same content is a no-op that succeeds.
        store.put_stream(&hash, size as u64, futures::stream::iter(chunks(size).map(Ok)).boxed()).await.unwrap();
        store.delete(&hash).await.unwrap();

        // A truncated object under the right key (an upload cut short by
        // hand, a broken copy) does not pass for the real one: replaced.
        // (A smaller object, still of several chunks.)
        let size = size.min(9 << 20);
        let all: Vec<u8> = chunks(size).flat_map(|c| c.to_vec()).collect();
        let hash = ContentHash::of(&all);
        let stream = || futures::stream::iter(chunks(size).map(Ok)).boxed();
        store.put(&hash, Bytes::copy_from_slice(&all[..size / 2])).await.unwrap();
        store.put_stream(&hash, size as u64, stream()).await.unwrap();
        assert_eq!(get_verified(store, &hash).await.unwrap().len(), size, "the truncated object was replaced");
        store.delete(&hash).await.unwrap();

        // A stream shorter than announced stores nothing.
        let short = futures::stream::iter(chunks(size).take(1).map(Ok)).boxed();
        let err = store.put_stream(&hash, size as u64, short).await.expect_err("a short stream fails");
        assert!(err.to_string().contains("nothing was stored"), "{err}");
        assert!(!store.exists(&hash).await.unwrap(), "nothing half-written is visible");

        let claimed = ContentHash::of(b"claimed");
        store.put(&claimed, Bytes::from_static(b"other bytes")).await.unwrap();
        let mut read = get_verified_stream(store, &claimed).await.unwrap();
        let mut last = None;
        while let Some(item) = read.next().await {
            last = Some(item);
        }
        assert!(matches!(last, Some(Err(StoreError::Corrupted { .. }))), "the stream ends in an error: {last:?}");
        store.delete(&claimed).await.unwrap();
    }

    /// Bytes put under their hash read back identical, and `exists` agrees.
    pub async fn round_trip(store: &dyn ArtifactStore) {
        for payload in [Bytes::new(), Bytes::from_static(b"hello artifact"), Bytes::from(vec![0u8; 70_000])] {
            let hash = ContentHash::of(&payload);
            assert!(!store.exists(&hash).await.unwrap(), "a fresh store must not hold {hash}");
            store.put(&hash, payload.clone()).await.unwrap();
            assert!(store.exists(&hash).await.unwrap(), "exists() after put()");
            assert_eq!(get_verified(store, &hash).await.unwrap(), payload, "bytes must round-trip");
            assert!(store.uri(&hash).contains(&hash.to_hex()), "the uri names the hash");
        }
    }

    /// Putting the same content twice keeps one object and does not fail.
    pub async fn idempotent_put(store: &dyn ArtifactStore) {
        let payload = Bytes::from_static(b"same bytes twice");
        let hash = ContentHash::of(&payload);
        store.put(&hash, payload.clone()).await.unwrap();
        store.put(&hash, payload.clone()).await.expect("a second put of the same content must succeed");
        assert_eq!(store.get(&hash).await.unwrap(), payload);
    }

    /// A missing object is `NotFound` (naming its uri), not a crash; deleting it is fine.
    pub async fn missing_object(store: &dyn ArtifactStore) {
        let hash = ContentHash::of(b"never stored");
        match store.get(&hash).await {
            Err(StoreError::NotFound { uri }) => assert_eq!(uri, store.uri(&hash)),
            other => panic!("get of a missing object must be NotFound, got {other:?}"),
        }
        assert!(!store.exists(&hash).await.unwrap());
        store.delete(&hash).await.expect("deleting a missing object is not an error");
        let payload = Bytes::from_static(b"delete me");
        let hash = ContentHash::of(&payload);
        store.put(&hash, payload).await.unwrap();
        store.delete(&hash).await.unwrap();
        assert!(!store.exists(&hash).await.unwrap(), "deleted objects are gone");
    }

    /// `list` shows each shelf's objects with their size and date; a
    /// trashed object is no longer live (`exists`, `list`) but still
    /// read; `restore` brings it back (or drops the copy when it was
    /// written again); `purge` deletes it. Each is fine on what is not there.
    pub async fn trash(store: &dyn ArtifactStore) {
        use crate::artifact_store::Shelf;
        let payload = Bytes::from(vec![7u8; 40_000]);
        let hash = ContentHash::of(&payload);
        let before = crate::time::now() - 5_000_000;
        store.put(&hash, payload.clone()).await.unwrap();
        let on = |shelf| async move { store.list(shelf).await.unwrap().into_iter().find(|o| o.hash == hash) };
        let live = on(Shelf::Live).await.expect("a stored object is listed live");
        assert_eq!(live.size, 40_000);
        assert!(live.since >= before && live.since <= crate::time::now() + 5_000_000, "dated when written: {live:?}");
        assert!(on(Shelf::Trash).await.is_none());

        // Older than a second (S3 dates objects to the second): a move that
        // kept the written date would show.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        store.trash(&hash).await.unwrap();
        assert!(!store.exists(&hash).await.unwrap(), "a trashed object is not live");
        assert!(on(Shelf::Live).await.is_none());
        let trashed = on(Shelf::Trash).await.expect("listed in the trash");
        assert_eq!(trashed.size, 40_000);
        assert!(trashed.since >= live.since + 1_000_000, "dated when trashed: {trashed:?} {live:?}");
        assert_eq!(get_verified(store, &hash).await.unwrap(), payload, "a trashed object is still read");
        store.restore(&hash).await.unwrap();
        assert!(store.exists(&hash).await.unwrap(), "restored");
        assert!(on(Shelf::Trash).await.is_none(), "restoring empties its place in the trash");

        store.trash(&hash).await.unwrap();
        store.put(&hash, payload.clone()).await.unwrap();
        assert!(store.exists(&hash).await.unwrap(), "a put after the trash writes the object again");
        store.restore(&hash).await.unwrap();
        assert!(on(Shelf::Trash).await.is_none(), "restoring a rewritten object drops its trash copy");
        assert_eq!(get_verified(store, &hash).await.unwrap(), payload);

        store.trash(&hash).await.unwrap();
        store.purge(&hash).await.unwrap();
        assert!(matches!(store.get(&hash).await, Err(StoreError::NotFound { .. })), "purged objects are gone");
        assert!(on(Shelf::Trash).await.is_none() && on(Shelf::Live).await.is_none());
        store.trash(&hash).await.expect("trashing a missing object is not an error");
        store.restore(&hash).await.expect("restoring what is not in the trash is not an error");
        store.purge(&hash).await.expect("purging what is not in the trash is not an error");
        assert!(!store.exists(&hash).await.unwrap());
    }

    /// The first claim of a store's owner stays; the owner is no object.
    pub async fn owner(store: &dyn ArtifactStore) {
        let objects = || async { store.list(crate::artifact_store::Shelf::Live).await.unwrap().len() };
        let before = objects().await;
        assert_eq!(store.owner(None).await.unwrap(), None, "a fresh store has no owner");
        assert_eq!(store.owner(Some("first")).await.unwrap(), None, "nobody owned it before the claim");
        assert_eq!(store.owner(Some("second")).await.unwrap().as_deref(), Some("first"), "the first claim stays");
        assert_eq!(store.owner(None).await.unwrap().as_deref(), Some("first"));
        assert_eq!(objects().await, before, "the owner's record is not an object");
    }

    /// Bytes that do not match their hash are reported as corrupted by `get_verified`.
    pub async fn corrupted_object(store: &dyn ArtifactStore) {
        let claimed = ContentHash::of(b"the original bytes");
        store.put(&claimed, Bytes::from_static(b"tampered bytes")).await.unwrap();
        match get_verified(store, &claimed).await {
            Err(StoreError::Corrupted { expected, actual, uri }) => {
                assert_eq!(expected, claimed);
                assert_eq!(actual, ContentHash::of(b"tampered bytes"));
                assert_eq!(uri, store.uri(&claimed));
            }
            other => panic!("a hash mismatch must be reported as Corrupted, got {other:?}"),
        }
        store.delete(&claimed).await.unwrap();
    }

    /// A large object round-trips intact.
    pub async fn large_object(store: &dyn ArtifactStore, size: usize) {
        let payload: Bytes = (0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
        let hash = ContentHash::of(&payload);
        store.put(&hash, payload.clone()).await.unwrap();
        let back = get_verified(store, &hash).await.unwrap();
        assert_eq!(back.len(), size);
        assert!(back == payload, "large object bytes differ");
    }

    /// Concurrent writers, some writing the same content, lose nothing.
    pub async fn concurrent_writers(store: Arc<dyn ArtifactStore>, writers: usize) {
        let mut tasks = Vec::new();
        for w in 0..writers {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..20 {
                    // Half the objects are shared between writers.
                    let payload =
                        Bytes::from(if i % 2 == 0 { format!("shared {i}") } else { format!("writer {w} obj {i}") });
                    let hash = ContentHash::of(&payload);
                    store.put(&hash, payload).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.expect("a writer task panicked");
        }
        for w in 0..writers {
            for i in 0..20 {
                let payload = if i % 2 == 0 { format!("shared {i}") } else { format!("writer {w} obj {i}") };
                let hash = ContentHash::of(payload.as_bytes());
                assert_eq!(get_verified(store.as_ref(), &hash).await.unwrap(), payload.as_bytes());
            }
        }
    }
}

/// The metadata store suite.
pub mod metadata {
    use crate::hash::ContentHash;
    use crate::materializer::ArtifactMetadata;
    use crate::metadata::*;
    use crate::plan::{OutputRef, Plan, PlanInput, PlanOutput, PlanStep, PLAN_FORMAT};
    use crate::step::StepOptions;
    use std::sync::Arc;

    /// Runs every metadata store check. `open` gives a new handle to the same
    /// (initially empty) store each time it is called, like another process would.
    pub async fn run_all(open: impl Fn() -> Arc<dyn MetadataStore>) {
        let store = open();
        records_round_trip(store.as_ref()).await;
        cache_lookup(store.as_ref()).await;
        latest_step_run(store.as_ref()).await;
        runs_with_id_prefix(store.as_ref()).await;
        bad_references(store.as_ref()).await;
        deleting_runs(store.as_ref()).await;
        deleting_keeps_cache_entries_and_evidence(store.as_ref()).await;
        deleting_frees_what_only_deleted_runs_used(store.as_ref()).await;
        stale_runs(store.as_ref()).await;
        concurrent_writers(&open, 8).await;
        writes_reach_other_handles(&open).await;
        store_identity(&open).await;
    }

    /// A store's identity is the same through every handle, every time.
    pub async fn store_identity(open: &impl Fn() -> Arc<dyn MetadataStore>) {
        let (one, other) = (open(), open());
        let id = one.store_id().await.unwrap();
        assert!(!id.is_empty());
        assert_eq!(one.store_id().await.unwrap(), id, "stable");
        assert_eq!(other.store_id().await.unwrap(), id, "the same through another handle");
    }

    /// What one handle writes reaches another (as another process would
    /// read it): at once after `flush` or `set_run_status`, within a few
    /// seconds with no further call, and after the handle is dropped. A
    /// write that fails loses none of the writes made before it.
    pub async fn writes_reach_other_handles(open: &impl Fn() -> Arc<dyn MetadataStore>) {
        let writer = open();
        let reader = open();
        let run = writer.create_run(&new_run("handoff", "handoff-run")).await.unwrap();
        let first = step_write(&run.id, "load", StepStatus::Completed);
        writer.write_step_run(&first).await.unwrap();
        // A failing write in the middle (a step run of a run that does not exist).
        let err = writer.write_step_run(&step_write("no-such-run", "x", StepStatus::Completed)).await;
        assert!(matches!(err, Err(MetadataError::NotFound(_))), "a step run of an unknown run is refused: {err:?}");
        writer.flush().await.unwrap();
        let seen = reader.step_runs(&run.id).await.unwrap();
        assert_eq!(seen.len(), 1, "after flush, another handle sees the step run written before the failed write");
        assert_eq!(seen[0].id, first.step_run.id);

        // No further call: the store commits on its own.
        let second = step_write(&run.id, "train", StepStatus::Completed);
        writer.write_step_run(&second).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let n = reader.step_runs(&run.id).await.unwrap().len();
            if n == 2 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "a write was not visible to another handle after 5 s");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }

        // A step that is still running shows as running, with no further call.
        let slow = step_write(&run.id, "slow", StepStatus::Running);
        writer.write_step_run(&slow).await.unwrap();
        let seen_running = || async {
            reader
                .step_runs(&run.id)
                .await
                .unwrap()
                .iter()
                .any(|s| s.id == slow.step_run.id && s.status == StepStatus::Running)
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !seen_running().await {
            assert!(std::time::Instant::now() < deadline, "a running step was not visible to another handle after 5 s");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let mut done = slow.clone();
        done.step_run.status = StepStatus::Completed;
        done.step_run.ended_at = Some(now());
        writer.write_step_run(&done).await.unwrap();
        writer.flush().await.unwrap();
        let slow_runs: Vec<StepRunRecord> =
            reader.step_runs(&run.id).await.unwrap().into_iter().filter(|s| s.invocation == "slow").collect();
        assert_eq!(slow_runs.len(), 1, "the final record replaces the running one");
        assert_eq!(slow_runs[0].status, StepStatus::Completed);

        // Finishing the run makes it visible at once, and dropping loses nothing.
        writer.set_run_status(&run.id, RunStatus::Completed, None, Some(now())).await.unwrap();
        assert_eq!(reader.get_run(&run.id).await.unwrap().unwrap().status, RunStatus::Completed);
        let third = step_write(&run.id, "evaluate", StepStatus::Completed);
        writer.write_step_run(&third).await.unwrap();
        drop(writer);
        // Committed on drop, or within the window by the store's own committer.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let ids: Vec<String> = reader.step_runs(&run.id).await.unwrap().into_iter().map(|s| s.id).collect();
            if ids.contains(&third.step_run.id) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "a dropped handle's last write was lost");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Runs whose process died (no heartbeat) are failed, with their running
    /// step runs; live and finished runs are left alone.
    pub async fn stale_runs(store: &dyn MetadataStore) {
        let hour = 3_600_000_000;
        let mut dead = new_run("stale", "stale-dead");
        dead.started_at = now() - 2 * hour;
        store.create_run(&dead).await.unwrap();
        store.write_step_run(&step_write(&dead.id, "train", StepStatus::Running)).await.unwrap();
        let mut alive = new_run("stale", "stale-alive");
        alive.started_at = now() - 2 * hour;
        store.create_run(&alive).await.unwrap();
        store.flush().await.unwrap(); // see `heartbeat`: the run must be committed
        store.heartbeat(&alive.id, now()).await.unwrap();
        let mut done = new_run("stale", "stale-done");
        done.started_at = now() - 2 * hour;
        store.create_run(&done).await.unwrap();
        store.set_run_status(&done.id, RunStatus::Completed, None, Some(now() - hour)).await.unwrap();

        let window = std::time::Duration::from_secs(3600);
        let marked = store.fail_stale_runs(window).await.unwrap();
        assert_eq!(marked, vec![dead.id.clone()]);
        let run = store.get_run(&dead.id).await.unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(run.error.as_deref(), Some(STALE_ERROR));
        assert!(run.ended_at.is_some());
        let steps = store.step_runs(&dead.id).await.unwrap();
        assert_eq!(steps[0].status, StepStatus::Failed, "its running step is closed too");
        assert_eq!(store.get_run(&alive.id).await.unwrap().unwrap().status, RunStatus::Running);
        assert_eq!(store.get_run(&done.id).await.unwrap().unwrap().status, RunStatus::Completed);
        assert!(store.fail_stale_runs(window).await.unwrap().is_empty(), "idempotent");
    }

    fn plan(pipeline: &str) -> Plan {
        let out = |name: &str| PlanOutput {
            name: name.into(),
            type_name: "i64".into(),
            materializer: "zenflow.serde".into(),
            materializer_version: 1,
        };
        Plan {
            format: PLAN_FORMAT,
            pipeline: pipeline.into(),
            config: serde_json::json!({"n": 1}),
            steps: vec![
                PlanStep {
                    id: "load".into(),
                    step: "load".into(),
                    code_hash: "c1".into(),
                    code_items: Default::default(),
                    version: None,
                    params: Default::default(),
                    inputs: vec![],
                    after: vec![],
                    outputs: vec![out("output")],
                    options: StepOptions::default(),
                },
                PlanStep {
                    id: "train".into(),
                    step: "train".into(),
                    code_hash: "c2".into(),
                    code_items: Default::default(),
                    version: None,
                    params: Default::default(),
                    inputs: vec![PlanInput {
                        name: "data".into(),
                        from: vec![OutputRef { step: "load".into(), output: "output".into() }],
                        list: false,
                        model: None,
                    }],
                    after: vec![],
                    outputs: vec![out("output")],
                    options: StepOptions::default(),
                },
            ],
            outputs: vec![OutputRef { step: "train".into(), output: "output".into() }],
            build: Default::default(),
            no_cache: false,
        }
    }

    /// A run's heartbeat goes on while its steps block every worker thread
    /// of the runtime that runs them (as an `async` step that calls
    /// blocking code does): another handle judging heartbeats meanwhile
    /// leaves the run alone, and fails one with no heartbeat started the
    /// same moment. Call it outside any runtime: it makes its own, as a
    /// process running a pipeline and one judging it would.
    pub fn heartbeats_outlive_starved_steps(open: impl Fn() -> Arc<dyn MetadataStore>) {
        use std::time::Duration;
        const WORKERS: usize = 2;
        let beat = Duration::from_millis(50);
        let stale_after = Duration::from_millis(600);
        let steps = tokio::runtime::Builder::new_multi_thread().worker_threads(WORKERS).enable_all().build().unwrap();
        let store = open();
        let alive = new_run("starved", "starved-alive");
        let silent = new_run("starved", "starved-silent");
        let heartbeat = steps.block_on(async {
            store.create_run(&alive).await.unwrap();
            store.create_run(&silent).await.unwrap();
            store.flush().await.unwrap();
            // Started on the steps' runtime, as a run starts it.
            crate::run::liveness::heartbeat::start(store.clone(), &alive.id, beat)
        });
        // Every worker blocks, and this thread knows when they all do.
        let blocked = Arc::new(std::sync::Barrier::new(WORKERS + 1));
        let blocking = stale_after * 3;
        for _ in 0..WORKERS {
            let blocked = blocked.clone();
            steps.spawn(async move {
                blocked.wait();
                std::thread::sleep(blocking);
            });
        }
        blocked.wait();
        std::thread::sleep(stale_after + 10 * beat);

        let judge = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let other = open();
        let failed = judge.block_on(other.fail_stale_runs(stale_after)).unwrap();
        assert_eq!(failed, vec![silent.id.clone()], "only the run without a heartbeat is taken for dead");
        let status = |id: &str| judge.block_on(other.get_run(id)).unwrap().unwrap().status;
        assert_eq!(status(&alive.id), RunStatus::Running);
        assert_eq!(status(&silent.id), RunStatus::Failed);
        drop(heartbeat);
        steps.shutdown_timeout(blocking);
    }

    /// A fresh run named `name` of pipeline `pipeline`.
    pub fn new_run(pipeline: &str, name: &str) -> NewRun {
        NewRun {
            id: uuid::Uuid::now_v7().to_string(),
            pipeline: pipeline.into(),
            name: name.into(),
            stack: "test".into(),
            status: RunStatus::Running,
            plan: plan(pipeline),
            git_commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            git_branch: Some("feature/conformance".into()),
            ci_job_url: Some("https://ci.example/job/7".into()),
            started_at: now(),
        }
    }

    /// A write of a fresh step run of `run` (no outputs, inputs or logs).
    pub fn step_write(run: &str, invocation: &str, status: StepStatus) -> StepRunWrite {
        StepRunWrite {
            step_run: StepRunRecord::empty(new_id(), run, invocation, invocation, status, now()),
            new_outputs: vec![],
        }
    }

    /// A new artifact `<pipeline>.<invocation>.output` with `content`'s hash.
    pub fn artifact(pipeline: &str, invocation: &str, content: &[u8]) -> NewArtifact {
        NewArtifact {
            output: "output".into(),
            name: format!("{pipeline}.{invocation}.output"),
            uri: format!("memory:///{}", ContentHash::of(content)),
            content_hash: ContentHash::of(content),
            type_name: "i64".into(),
            materializer: "zenflow.serde".into(),
            materializer_version: 1,
            format: "json".into(),
            metadata: ArtifactMetadata { size: content.len() as u64, summary: Some("42".into()), ..Default::default() },
            inline: None,
        }
    }

    /// Runs, step runs (every status), artifact versions, metadata and
    /// lineage are stored and read back exactly.
    pub async fn records_round_trip(store: &dyn MetadataStore) {
        let (load, train, v1) = first_run(store).await;
        second_run(store, &load, &train, &v1).await;
    }

    /// A first run: `load` completes with an output, metadata, logs and
    /// checks; `train` consumes the output and fails; `report` is skipped.
    async fn first_run(store: &dyn MetadataStore) -> (StepRunWrite, StepRunWrite, ArtifactVersion) {
        let new = new_run("conformance", "conformance-run-1");
        let run = store.create_run(&new).await.unwrap();
        assert_eq!(run.status, RunStatus::Running);
        assert_eq!(run.plan().unwrap(), new.plan, "the plan round-trips");
        assert_eq!(store.get_run(&new.id).await.unwrap().as_ref(), Some(&run), "by id");
        assert_eq!(store.get_run(&new.name).await.unwrap().as_ref(), Some(&run), "by name");
        assert!(store.get_run("no-such-run").await.unwrap().is_none());

        // load: running, then completed with an output, metadata and logs.
        let mut load = step_write(&run.id, "load", StepStatus::Running);
        load.step_run.cache_key = Some("key-load".into());
        assert!(store.write_step_run(&load).await.unwrap().is_empty(), "no outputs while running");
        let rec = &store.step_runs(&run.id).await.unwrap()[0];
        assert_eq!(rec.status, StepStatus::Running);
        assert_eq!(rec.invocation, "load");
        load.step_run.status = StepStatus::Completed;
        load.step_run.ended_at = Some(now());
        load.step_run.attempts = 1;
        load.step_run.logs = vec!["loaded 3 rows".into()];
        load.step_run.metadata.insert("rows".into(), serde_json::json!(3));
        load.step_run.checks = vec![
            crate::check::Check::at_least("rows_min", 3.0, 1.0),
            crate::check::Check::fail("no_nulls", "2 nulls in column x"),
        ];
        load.new_outputs = vec![artifact("conformance", "load", b"42")];
        let outputs = store.write_step_run(&load).await.unwrap();
        let rec = store.step_runs(&run.id).await.unwrap().remove(0);
        assert_eq!(rec.outputs, outputs, "write_step_run returns the outputs as stored");
        assert_eq!(rec.status, StepStatus::Completed);
        assert_eq!(rec.logs, load.step_run.logs);
        assert_eq!(rec.metadata.get("rows"), Some(&serde_json::json!(3)));
        assert_eq!(rec.checks, load.step_run.checks, "checks round-trip in order");
        assert_eq!(store.step_run(&load.step_run.id).await.unwrap().as_ref(), Some(&rec), "by id");
        assert!(store.step_run("no-such-step-run").await.unwrap().is_none());
        assert_eq!(rec.outputs.len(), 1);
        let v1 = rec.outputs[0].artifact.clone();
        assert_eq!(v1.version, 1);
        assert_eq!(v1.content_hash, ContentHash::of(b"42"));
        assert_eq!(v1.producer_step_run, load.step_run.id);
        assert_eq!(v1.metadata.summary.as_deref(), Some("42"));
        assert_eq!(store.artifact_version(&v1.id).await.unwrap().as_ref(), Some(&v1));

        // train consumes load's output and fails.
        let mut train = step_write(&run.id, "train", StepStatus::Failed);
        train.step_run.error = Some("boom".into());
        train.step_run.ended_at = Some(now());
        train.step_run.attempts = 3;
        train.step_run.inputs = vec![InputLink { input: "data".into(), position: 0, artifact_version: v1.id.clone() }];
        store.write_step_run(&train).await.unwrap();
        let skipped = step_write(&run.id, "report", StepStatus::Skipped);
        store.write_step_run(&skipped).await.unwrap();
        store.set_run_status(&run.id, RunStatus::Failed, Some("step `train` failed"), Some(now())).await.unwrap();

        let got = store.get_run(&run.id).await.unwrap().unwrap();
        assert_eq!(got.status, RunStatus::Failed);
        assert_eq!(got.error.as_deref(), Some("step `train` failed"));
        assert!(got.ended_at.is_some());
        let steps = store.step_runs(&run.id).await.unwrap();
        let statuses: Vec<_> = steps.iter().map(|s| (s.invocation.as_str(), s.status)).collect();
        assert_eq!(
            statuses,
            vec![("load", StepStatus::Completed), ("train", StepStatus::Failed), ("report", StepStatus::Skipped)]
        );
        assert_eq!(steps[1].error.as_deref(), Some("boom"));
        assert_eq!(steps[1].attempts, 3);
        assert_eq!(steps[1].inputs, train.step_run.inputs);
        (load, train, v1)
    }

    /// A second run: `load` cached (linking `v1`), a new version of the same
    /// artifact inline; then lineage and the listings of both runs.
    async fn second_run(store: &dyn MetadataStore, load: &StepRunWrite, train: &StepRunWrite, v1: &ArtifactVersion) {
        let v1 = v1.clone();
        // A second run: load cached (linking v1), train produces a new version.
        let new2 = new_run("conformance", "conformance-run-2");
        let run2 = store.create_run(&new2).await.unwrap();
        let mut cached = step_write(&run2.id, "load", StepStatus::Cached);
        cached.step_run.original_step_run = Some(load.step_run.id.clone());
        cached.step_run.outputs = vec![OutputLink { output: "output".into(), artifact: v1.clone() }];
        store.write_step_run(&cached).await.unwrap();
        let rec = store.step_runs(&run2.id).await.unwrap().remove(0);
        assert_eq!(rec.outputs[0].artifact, v1, "a cached step run points at the original version");
        assert_eq!(rec.original_step_run.as_deref(), Some(load.step_run.id.as_str()));
        let mut again = step_write(&run2.id, "load2", StepStatus::Completed);
        let mut small = artifact("conformance", "load", b"43");
        small.inline = Some(bytes::Bytes::from_static(b"43"));
        again.new_outputs = vec![small];
        let v2 = store.write_step_run(&again).await.unwrap()[0].artifact.clone();
        assert_eq!(v2.version, 2, "versions count up per artifact name");
        let stored = store.artifact_version(&v2.id).await.unwrap().unwrap();
        assert_eq!(stored.inline.as_deref(), Some(&b"43"[..]), "inline bytes round-trip");
        assert_eq!(stored, v2);
        assert!(store.artifact_version(&v1.id).await.unwrap().unwrap().inline.is_none());
        let versions = store.artifact_versions(Some("conformance.load.output"), 10).await.unwrap();
        assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), vec![2, 1], "newest first");
        let named = |version| store.artifact_version_named("conformance.load.output", version);
        assert_eq!(named(Some(1)).await.unwrap().as_ref(), Some(&v1), "by name and number");
        assert_eq!(named(None).await.unwrap().map(|v| v.id), Some(v2.id.clone()), "the latest");
        assert_eq!(named(Some(3)).await.unwrap(), None, "no such number");
        assert_eq!(store.artifact_version_named("no.such.name", None).await.unwrap(), None, "no such name");

        let lineage = store.lineage(&v1.id).await.unwrap();
        assert_eq!(lineage.producer.as_ref().map(|p| p.id.as_str()), Some(load.step_run.id.as_str()));
        assert_eq!(
            lineage.consumers.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            vec![train.step_run.id.as_str()]
        );

        let runs = store.list_runs(Some("conformance"), 10).await.unwrap();
        assert_eq!(
            runs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["conformance-run-2", "conformance-run-1"]
        );
        assert_eq!(store.list_runs(Some("conformance"), 1).await.unwrap().len(), 1, "limit");
        assert!(store.list_runs(Some("other-pipeline"), 10).await.unwrap().is_empty());
    }

    /// `find_cached` returns the latest completed step run with the key and its outputs.
    pub async fn cache_lookup(store: &dyn MetadataStore) {
        let run = store.create_run(&new_run("cache", "cache-run")).await.unwrap();
        assert!(store.find_cached("key-x").await.unwrap().is_none());
        let mut failed = step_write(&run.id, "a", StepStatus::Failed);
        failed.step_run.cache_key = Some("key-x".into());
        store.write_step_run(&failed).await.unwrap();
        assert!(store.find_cached("key-x").await.unwrap().is_none(), "failed step runs never serve the cache");
        let mut ok = step_write(&run.id, "a", StepStatus::Completed);
        ok.step_run.cache_key = Some("key-x".into());
        ok.step_run.ended_at = Some(now());
        ok.new_outputs = vec![artifact("cache", "a", b"1")];
        store.write_step_run(&ok).await.unwrap();
        let hit = store.find_cached("key-x").await.unwrap().expect("a completed step run is a hit");
        assert_eq!(hit.step_run, ok.step_run.id);
        assert_eq!(
            (hit.run_id.as_str(), Some(hit.ended_at)),
            (run.id.as_str(), ok.step_run.ended_at),
            "where and when"
        );
        assert_eq!(hit.outputs.len(), 1);
        assert_eq!(hit.outputs[0].artifact.content_hash, ContentHash::of(b"1"));
    }

    /// `latest_step_run` gives the record `latest_record` picks from the
    /// run's step runs, whole: the last attempt of a retried step (also
    /// when two attempts started in the same microsecond), with its
    /// outputs and checks; nothing for a step or run with no record.
    pub async fn latest_step_run(store: &dyn MetadataStore) {
        let run = store.create_run(&new_run("latest", "latest-run")).await.unwrap();
        let other = store.create_run(&new_run("latest", "latest-other")).await.unwrap();
        let mut first = step_write(&run.id, "train", StepStatus::Running);
        store.write_step_run(&first).await.unwrap();
        first.step_run.status = StepStatus::Failed;
        first.step_run.error = Some("attempt 1 failed".into());
        first.step_run.ended_at = Some(now());
        store.write_step_run(&first).await.unwrap();
        let mut second = step_write(&run.id, "train", StepStatus::Completed);
        second.step_run.started_at = first.step_run.started_at;
        second.step_run.attempts = 2;
        second.step_run.ended_at = Some(now());
        second.step_run.checks = vec![crate::check::Check::at_least("accuracy", 0.9, 0.8)];
        second.new_outputs = vec![artifact("latest", "train", b"2")];
        store.write_step_run(&second).await.unwrap();
        store.write_step_run(&step_write(&run.id, "load", StepStatus::Completed)).await.unwrap();
        store.write_step_run(&step_write(&other.id, "train", StepStatus::Failed)).await.unwrap();
        store.flush().await.unwrap();

        let all = store.step_runs(&run.id).await.unwrap();
        for invocation in ["train", "load", "evaluate"] {
            let latest = store.latest_step_run(&run.id, invocation).await.unwrap();
            assert_eq!(latest.as_ref(), latest_record(&all, invocation), "{invocation}");
        }
        let train = store.latest_step_run(&run.id, "train").await.unwrap().expect("train has records");
        // UUIDv7s made later in a process sort later.
        assert!(first.step_run.id < second.step_run.id);
        assert_eq!(train.id, second.step_run.id, "same start: the later attempt by id");
        assert_eq!((train.attempts, train.outputs.len()), (2, 1), "with its outputs");
        assert_eq!(train.checks, second.step_run.checks, "and its checks");
        assert_eq!(store.latest_step_run("no-such-run", "train").await.unwrap(), None);
    }

    /// `runs_with_id_prefix` finds runs by the start of their id, newest
    /// first, as the default does: one run by its own prefix, both by
    /// their common one (up to the limit), and nothing for an empty prefix,
    /// a wildcard, upper case or a prefix no id has.
    pub async fn runs_with_id_prefix(store: &dyn MetadataStore) {
        let older = store.create_run(&new_run("prefixes", "prefix-older")).await.unwrap();
        let mut newer = new_run("prefixes", "prefix-newer");
        newer.started_at = older.started_at + 1;
        let newer = store.create_run(&newer).await.unwrap();
        // Other checks' runs may share a prefix: only these two are looked at.
        let names = |runs: Vec<RunRecord>| {
            runs.into_iter().map(|r| r.name).filter(|n| n.starts_with("prefix-")).collect::<Vec<_>>()
        };
        let find =
            |prefix: String, limit| async move { names(store.runs_with_id_prefix(&prefix, limit).await.unwrap()) };
        let common: String =
            older.id.chars().zip(newer.id.chars()).take_while(|(a, b)| a == b).map(|(a, _)| a).collect();
        let own = |id: &str| id[..common.len() + 1].to_string();
        assert_eq!(find(own(&older.id), 1000).await, ["prefix-older"]);
        assert_eq!(find(own(&newer.id), 1000).await, ["prefix-newer"]);
        assert_eq!(find(older.id.clone(), 10).await, ["prefix-older"], "a whole id is a prefix of itself");
        if !common.is_empty() {
            assert_eq!(find(common.clone(), 1000).await, ["prefix-newer", "prefix-older"], "newest first");
            assert_eq!(store.runs_with_id_prefix(&common, 1).await.unwrap().len(), 1, "the limit");
        }
        let upper = older.id.to_uppercase();
        for nothing in ["", "%", "_", "0%", "ffffffff-ffff"].into_iter().chain((upper != older.id).then_some(&*upper)) {
            assert!(store.runs_with_id_prefix(nothing, 10).await.unwrap().is_empty(), "{nothing:?}");
        }
    }

    /// Bad references are refused with their exact error, naming the thing
    /// missing, and change nothing: a duplicate run name, an unknown run,
    /// an unknown artifact version linked as an input or an output, and
    /// lookups of unknown runs, step runs and artifacts.
    pub async fn bad_references(store: &dyn MetadataStore) {
        let first = new_run("dupes", "same-name");
        store.create_run(&first).await.unwrap();
        let err = store.create_run(&new_run("dupes", "same-name")).await.unwrap_err();
        assert!(matches!(&err, MetadataError::RunNameTaken(n) if n == "same-name"), "{err}");
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(store.list_runs(Some("dupes"), 10).await.unwrap().len(), 1, "the duplicate left nothing");
        // A finished run leaves no step "running"; a run set running gets a heartbeat.
        store.write_step_run(&step_write(&first.id, "orphan", StepStatus::Running)).await.unwrap();
        store.set_run_status(&first.id, RunStatus::Running, None, None).await.unwrap();
        assert_eq!(store.fail_stale_runs(std::time::Duration::from_secs(60)).await.unwrap(), Vec::<String>::new());
        store.set_run_status(&first.id, RunStatus::Failed, Some("x"), Some(now())).await.unwrap();
        let orphan = store.step_runs(&first.id).await.unwrap().remove(0);
        assert_eq!(orphan.status, StepStatus::Failed);

        // Unknown runs.
        let err = store.set_run_status("no-such-run", RunStatus::Completed, None, Some(now())).await.unwrap_err();
        assert!(matches!(&err, MetadataError::NotFound(what) if what.contains("no-such-run")), "{err}");
        let err = store.write_step_run(&step_write("no-such-run", "x", StepStatus::Completed)).await.unwrap_err();
        assert!(matches!(&err, MetadataError::NotFound(what) if what.contains("no-such-run")), "{err}");
        assert!(store.get_run("no-such-run").await.unwrap().is_none());
        assert!(store.step_runs("no-such-run").await.unwrap().is_empty());

        // Unknown artifact versions, linked as an input and as an output.
        let run = store.create_run(&new_run("dupes", "links")).await.unwrap();
        let mut input = step_write(&run.id, "reads", StepStatus::Completed);
        input.step_run.inputs =
            vec![InputLink { input: "data".into(), position: 0, artifact_version: "no-such-version".into() }];
        let err = store.write_step_run(&input).await.unwrap_err();
        assert!(matches!(&err, MetadataError::NotFound(what) if what.contains("no-such-version")), "{err}");
        let mut output = step_write(&run.id, "cached", StepStatus::Cached);
        let mut ghost = artifact("dupes", "ghost", b"g").to_version("no-such-version".into(), 1, "x", &run.id, now());
        ghost.inline = None;
        output.step_run.outputs = vec![OutputLink { output: "output".into(), artifact: ghost }];
        let err = store.write_step_run(&output).await.unwrap_err();
        // A cache hit on a version that is not there (any more): deleted since the lookup.
        assert!(matches!(&err, MetadataError::ArtifactGone(id) if id == "no-such-version"), "{err}");
        assert!(store.step_runs(&run.id).await.unwrap().is_empty(), "a refused write leaves nothing");
        // The run is not harmed: it goes on and finishes.
        store.write_step_run(&step_write(&run.id, "fine", StepStatus::Completed)).await.unwrap();
        store.set_run_status(&run.id, RunStatus::Completed, None, Some(now())).await.unwrap();
        assert_eq!(store.step_runs(&run.id).await.unwrap().len(), 1);

        // Unknown step runs and artifacts.
        assert!(store.step_run("no-such-step-run").await.unwrap().is_none());
        assert!(store.artifact_version("no-such-artifact").await.unwrap().is_none());
        let err = store.lineage("no-such-artifact").await.unwrap_err();
        assert!(matches!(&err, MetadataError::NotFound(what) if what.contains("no-such-artifact")), "{err}");
        assert!(store.find_cached("no-such-key").await.unwrap().is_none());
    }

    /// A completed step run of `run` with one new output holding `content`,
    /// reading `inputs`; returns its write and the output.
    async fn produce(
        store: &dyn MetadataStore,
        run: &str,
        invocation: &str,
        content: &[u8],
        inputs: &[&ArtifactVersion],
    ) -> (StepRunWrite, ArtifactVersion) {
        let mut w = step_write(run, invocation, StepStatus::Completed);
        w.step_run.cache_key = Some(format!("key-{run}-{invocation}"));
        w.step_run.ended_at = Some(now());
        w.step_run.inputs = inputs
            .iter()
            .enumerate()
            .map(|(i, v)| InputLink { input: "in".into(), position: i as u32, artifact_version: v.id.clone() })
            .collect();
        w.step_run.metadata.insert("rows".into(), serde_json::json!(3));
        w.step_run.checks = vec![crate::check::Check::at_least("rows_min", 3.0, 1.0)];
        w.new_outputs = vec![artifact("deletion", invocation, content)];
        let out = store.write_step_run(&w).await.unwrap().remove(0).artifact;
        (w, out)
    }

    /// A cached step run of `run` linking `version`, as a cache hit does.
    fn cached(run: &str, invocation: &str, original: &StepRunWrite, version: &ArtifactVersion) -> StepRunWrite {
        let mut w = step_write(run, invocation, StepStatus::Cached);
        w.step_run.original_step_run = Some(original.step_run.id.clone());
        w.step_run.outputs = vec![OutputLink { output: "output".into(), artifact: version.clone() }];
        w
    }

    /// Deleting a run: a running one is refused, an unknown one is not
    /// found; a dry run changes nothing; the run leaves every lookup and
    /// its name is free; what a remaining run or a model version uses
    /// stays (and keeps serving the cache), with its lineage; the rest
    /// goes; a cache hit on what went is `ArtifactGone`.
    pub async fn deleting_runs(store: &dyn MetadataStore) {
        let a = store.create_run(&new_run("deletion", "deletion-a")).await.unwrap();
        let (load, data) = produce(store, &a.id, "load", b"deletion data", &[]).await;
        let (train, model) = produce(store, &a.id, "train", b"deletion model", &[&data]).await;
        let (_, summary) = produce(store, &a.id, "summary", b"deletion summary", &[&model]).await;
        store.set_run_status(&a.id, RunStatus::Completed, None, Some(now())).await.unwrap();
        let b = store.create_run(&new_run("deletion", "deletion-b")).await.unwrap();
        store.write_step_run(&cached(&b.id, "load", &load, &data)).await.unwrap();
        // The model version is registered by a run of its own, so that `a`
        // is not its evidence (see `deleting_keeps_cache_entries_and_evidence`).
        let registrar = store.create_run(&new_run("deletion", "deletion-registrar")).await.unwrap();
        store.set_run_status(&registrar.id, RunStatus::Completed, None, Some(now())).await.unwrap();
        let held = store.registry().is_some();
        if let Some(registry) = store.registry() {
            registry.register(&super::registry::version_of("deletion-model", &registrar.id, &model)).await.unwrap();
        }
        store.flush().await.unwrap();

        let err = store.delete_run(&b.id, false).await.unwrap_err();
        assert!(
            matches!(&err, MetadataError::RunActive { run, status: RunStatus::Running } if run == "deletion-b"),
            "{err:?}"
        );
        assert!(store.get_run(&b.id).await.unwrap().is_some(), "a refused deletion deletes nothing");
        let err = store.delete_run("no-such-run", false).await.unwrap_err();
        assert!(matches!(&err, MetadataError::NotFound(what) if what.contains("no-such-run")), "{err:?}");

        let dry = store.delete_run(&a.id, true).await.unwrap();
        // `load` stays (b uses it); `train` too when the model version holds its output.
        let (gone, kept) = if held { (vec![summary.clone()], 2) } else { (vec![model.clone(), summary.clone()], 1) };
        assert_eq!(dry.artifacts, gone, "only what nothing uses would go");
        assert_eq!((dry.step_runs, dry.kept_step_runs), (3 - kept, kept));
        assert!(store.get_run(&a.id).await.unwrap().is_some(), "a dry run changes nothing");
        assert!(store.artifact_version(&summary.id).await.unwrap().is_some(), "a dry run changes nothing");
        assert_eq!(store.step_runs(&a.id).await.unwrap().len(), 3);

        let deleted = store.delete_run(&a.id, false).await.unwrap();
        assert_eq!(deleted, dry, "the deletion does what its dry run said");
        assert!(store.get_run(&a.id).await.unwrap().is_none(), "by id");
        assert!(store.get_run("deletion-a").await.unwrap().is_none(), "by name");
        let names: Vec<String> =
            store.list_runs(Some("deletion"), 10).await.unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["deletion-registrar", "deletion-b"]);
        assert!(store.runs_with_id_prefix(&a.id[..13], 10).await.unwrap().iter().all(|r| r.id != a.id));
        assert!(store.artifact_version(&summary.id).await.unwrap().is_none(), "unused: gone");
        assert_eq!(store.artifact_version(&data.id).await.unwrap().as_ref(), Some(&data), "a remaining run uses it");
        let hit = store.find_cached(load.step_run.cache_key.as_deref().unwrap()).await.unwrap();
        assert_eq!(hit.map(|h| h.step_run), Some(load.step_run.id.clone()), "a used step run still serves the cache");
        if held {
            assert!(store.artifact_version(&model.id).await.unwrap().is_some(), "a model version holds it");
            let lineage = store.lineage(&model.id).await.unwrap();
            assert_eq!(lineage.producer.map(|p| p.id), Some(train.step_run.id.clone()), "with its lineage");
        }
        let hashes = store.content_hashes().await.unwrap();
        assert_eq!(hashes.get(&data.content_hash), Some(&1));
        assert_eq!(hashes.get(&summary.content_hash), None, "no version has the deleted one's hash");
        store.create_run(&new_run("deletion", "deletion-a")).await.expect("a deleted run's name is free");
        let err = store.delete_run(&a.id, false).await.unwrap_err();
        assert!(matches!(err, MetadataError::NotFound(_)), "deleted once: {err:?}");

        let c = store.create_run(&new_run("deletion", "deletion-c")).await.unwrap();
        let err = store.write_step_run(&cached(&c.id, "summary", &load, &summary)).await.unwrap_err();
        assert!(matches!(&err, MetadataError::ArtifactGone(id) if *id == summary.id), "{err:?}");
        assert!(store.step_runs(&c.id).await.unwrap().is_empty(), "a refused write leaves nothing");
    }

    /// A step run a remaining run was served from stays, even with no
    /// output (a cache entry, and the checks the cached step reports); so
    /// does every step run of a run a model version names (the evidence its
    /// protected aliases are judged by).
    pub async fn deleting_keeps_cache_entries_and_evidence(store: &dyn MetadataStore) {
        let g = store.create_run(&new_run("deletion", "deletion-g")).await.unwrap();
        let mut notify = step_write(&g.id, "notify", StepStatus::Completed);
        notify.step_run.cache_key = Some("key-deletion-notify".into());
        notify.step_run.ended_at = Some(now());
        notify.step_run.checks = vec![crate::check::Check::fail("latency", "too slow")];
        store.write_step_run(&notify).await.unwrap();
        store.set_run_status(&g.id, RunStatus::Completed, None, Some(now())).await.unwrap();
        let h = store.create_run(&new_run("deletion", "deletion-h")).await.unwrap();
        let mut served = step_write(&h.id, "notify", StepStatus::Cached);
        served.step_run.original_step_run = Some(notify.step_run.id.clone());
        store.write_step_run(&served).await.unwrap();
        store.set_run_status(&h.id, RunStatus::Completed, None, Some(now())).await.unwrap();
        let deleted = store.delete_run(&g.id, false).await.unwrap();
        assert_eq!((deleted.step_runs, deleted.artifacts.len()), (0, 0), "{deleted:?}");
        let hit = store.find_cached("key-deletion-notify").await.unwrap().map(|h| h.step_run);
        assert_eq!(hit, Some(notify.step_run.id.clone()), "the cache entry h was served from stays");
        let kept = store.step_run(&notify.step_run.id).await.unwrap().expect("kept");
        assert_eq!(kept.checks, notify.step_run.checks, "with the checks h reports");

        let Some(registry) = store.registry() else { return };
        // The evidence run's `prepare` came from an earlier run's cache,
        // and that earlier run is deleted first.
        let earlier = store.create_run(&new_run("deletion", "deletion-earlier")).await.unwrap();
        let (prepare, prepared) = produce(store, &earlier.id, "prepare", b"deletion prepared", &[]).await;
        store.set_run_status(&earlier.id, RunStatus::Completed, None, Some(now())).await.unwrap();
        let m = store.create_run(&new_run("deletion", "deletion-m")).await.unwrap();
        store.write_step_run(&cached(&m.id, "prepare", &prepare, &prepared)).await.unwrap();
        let (_, weights) = produce(store, &m.id, "fit", b"deletion weights", &[]).await;
        let mut evaluate = step_write(&m.id, "evaluate", StepStatus::Completed);
        evaluate.step_run.checks = vec![crate::check::Check::fail("accuracy_min", "0.4 is below 0.9")];
        store.write_step_run(&evaluate).await.unwrap();
        store.set_run_status(&m.id, RunStatus::Completed, None, Some(now())).await.unwrap();
        registry.register(&super::registry::version_of("deletion-evidence", &m.id, &weights)).await.unwrap();
        store.delete_run(&earlier.id, false).await.unwrap();
        let deleted = store.delete_run(&m.id, false).await.unwrap();
        assert_eq!((deleted.step_runs, deleted.artifacts.len()), (0, 0), "{deleted:?}");
        let records = store.step_runs(&m.id).await.unwrap();
        assert_eq!(records.len(), 3, "the run a model version names keeps every step run");
        assert!(store.artifact_version(&prepared.id).await.unwrap().is_some(), "and what its cached step links");
        assert!(records.iter().any(|r| r.checks == evaluate.step_run.checks), "and its failed check");
    }

    /// A step run a deleted run keeps because a remaining run uses its
    /// output goes once that run is deleted too, with the kept run.
    pub async fn deleting_frees_what_only_deleted_runs_used(store: &dyn MetadataStore) {
        let e = store.create_run(&new_run("deletion", "deletion-e")).await.unwrap();
        let (load, data) = produce(store, &e.id, "load-e", b"deletion e", &[]).await;
        store.set_run_status(&e.id, RunStatus::Completed, None, Some(now())).await.unwrap();
        let f = store.create_run(&new_run("deletion", "deletion-f")).await.unwrap();
        store.write_step_run(&cached(&f.id, "load-e", &load, &data)).await.unwrap();
        store.set_run_status(&f.id, RunStatus::Failed, Some("x"), Some(now())).await.unwrap();

        let first = store.delete_run(&e.id, false).await.unwrap();
        assert!(first.artifacts.is_empty(), "run f uses it: {first:?}");
        let second = store.delete_run(&f.id, false).await.unwrap();
        assert_eq!(second.artifacts, vec![data.clone()], "nothing uses it any more");
        assert_eq!(second.step_runs, 2, "f's cached step run and e's kept one");
        assert!(store.artifact_version(&data.id).await.unwrap().is_none());
        assert!(store.find_cached(load.step_run.cache_key.as_deref().unwrap()).await.unwrap().is_none());
        assert!(store.step_run(&load.step_run.id).await.unwrap().is_none());
    }

    /// The error a store must give for a database whose schema is newer
    /// than this build (version `found`): the exact variant, naming both
    /// versions and the fix. Each store's own tests open such a database
    /// (how to make one differs) and hand the error here.
    pub fn assert_newer_schema(err: &MetadataError, found: i64) {
        match err {
            MetadataError::NewerSchema { found: f, supported, .. } => {
                assert_eq!(*f, found, "{err}");
                assert!(*supported < found, "{err}");
            }
            other => panic!("a newer schema must be NewerSchema, got {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains("upgrade zenflow") && message.contains("left unchanged"), "{message}");
    }

    /// The error a store must give for a database of another application
    /// whose contents include `mentions` (a table name): the exact variant,
    /// naming what was found and the fix.
    pub fn assert_not_zenflow(err: &MetadataError, mentions: &str) {
        assert!(matches!(err, MetadataError::NotZenflow { .. }), "expected NotZenflow, got {err:?}");
        let message = err.to_string();
        assert!(message.contains(mentions), "the error names what was found: {message}");
        assert!(message.contains("point the stack at another database"), "{message}");
    }

    /// Several handles writing at once (each its own connection, as separate
    /// processes would have) lose no record.
    pub async fn concurrent_writers(open: &impl Fn() -> Arc<dyn MetadataStore>, writers: usize) {
        let per_writer = 25;
        let mut handles = Vec::new();
        for w in 0..writers {
            let store = open();
            handles.push(std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    let run = store.create_run(&new_run("concurrent", &format!("concurrent-{w}"))).await.unwrap();
                    for i in 0..per_writer {
                        let mut s = step_write(&run.id, &format!("step{i}"), StepStatus::Completed);
                        s.new_outputs = vec![artifact("concurrent", "shared", format!("{w}/{i}").as_bytes())];
                        store.write_step_run(&s).await.unwrap();
                    }
                    store.set_run_status(&run.id, RunStatus::Completed, None, Some(now())).await.unwrap();
                    run.id
                })
            }));
        }
        let ids: Vec<String> = handles.into_iter().map(|h| h.join().expect("a writer panicked")).collect();
        let store = open();
        for id in &ids {
            assert_eq!(store.step_runs(id).await.unwrap().len(), per_writer, "step runs of {id}");
        }
        let versions = store.artifact_versions(Some("concurrent.shared.output"), 10_000).await.unwrap();
        assert_eq!(versions.len(), writers * per_writer, "every artifact version is recorded");
        let mut numbers: Vec<i64> = versions.iter().map(|v| v.version).collect();
        numbers.sort_unstable();
        assert_eq!(numbers, (1..=(writers * per_writer) as i64).collect::<Vec<_>>(), "versions are unique and dense");
    }
}

/// The model registry suite, for every store whose
/// [`MetadataStore::registry`](crate::metadata::MetadataStore::registry) is one.
pub mod registry {
    use super::metadata::{artifact, new_run, step_write};
    use crate::hash::ContentHash;
    use crate::metadata::*;
    use crate::registry::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    /// Runs every registry check. `open` gives a new handle to the same
    /// (initially empty) store each time, as another process would.
    pub async fn run_all(open: impl Fn() -> Arc<dyn MetadataStore>) {
        let store = open();
        versions_and_dedup(store.as_ref()).await;
        promotion_is_compare_and_swap(store.as_ref()).await;
        history_and_rollback(store.as_ref()).await;
        protected_aliases(store.as_ref()).await;
        protection_is_kept_by_the_registry(store.as_ref()).await;
        bad_input(store.as_ref()).await;
        racing_promotions(&open, 8).await;
        racing_registrations(&open, 8).await;
    }

    fn registry(store: &dyn MetadataStore) -> &dyn ModelRegistry {
        store.registry().expect("this store keeps a model registry")
    }

    /// Records `n` artifact versions (distinct bytes unless `same`) in a new
    /// run of pipeline `pipeline`; returns the run id and the versions.
    pub async fn artifacts(store: &dyn MetadataStore, pipeline: &str, n: usize) -> (String, Vec<ArtifactVersion>) {
        let run = store.create_run(&new_run(pipeline, &format!("{pipeline}-{}", new_id()))).await.unwrap();
        let mut out = Vec::new();
        for i in 0..n {
            let mut w = step_write(&run.id, &format!("train{i}"), StepStatus::Completed);
            w.new_outputs =
                vec![artifact(pipeline, &format!("train{i}"), format!("{pipeline} model {i} {}", run.id).as_bytes())];
            out.push(store.write_step_run(&w).await.unwrap().remove(0).artifact);
        }
        store.flush().await.unwrap();
        (run.id, out)
    }

    /// A version to register for `artifact`.
    pub fn version_of(model: &str, run: &str, artifact: &ArtifactVersion) -> NewModelVersion {
        NewModelVersion {
            model: model.into(),
            artifact_version: artifact.id.clone(),
            content_hash: artifact.content_hash,
            run_id: Some(run.into()),
            step_run: Some(artifact.producer_step_run.clone()),
            git_commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            code_hashes: BTreeMap::from([("train".into(), "c0de".into())]),
            data_hashes: vec![DataHash { input: "data".into(), content_hash: ContentHash::of(b"training data") }],
            metrics: BTreeMap::from([("accuracy".into(), 0.93)]),
            tags: BTreeMap::from([("owner".into(), "ml-team".into())]),
            samples: vec![Sample {
                request: serde_json::json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}]}),
                expected: serde_json::json!([1]),
            }],
        }
    }

    /// Who the conformance suite acts as.
    fn actor() -> crate::registry::CiContext {
        crate::registry::CiContext { actor: "conformance".into(), job_url: None, branch: None }
    }

    fn promotion(model: &str, alias: &str, to: Option<i64>, expect: Expect) -> Promotion {
        Promotion {
            model: model.into(),
            alias: alias.into(),
            to,
            expect,
            actor: "conformance".into(),
            reason: None,
            run_id: None,
            ci_job_url: Some("https://ci.example/job/1".into()),
            force: false,
            protected: false,
            kind: EventKind::Promote,
        }
    }

    /// Versions are numbered per model, record what they were given, and
    /// identical bytes are one version.
    pub async fn versions_and_dedup(store: &dyn MetadataStore) {
        let reg = registry(store);
        let (run, arts) = artifacts(store, "dedup", 2).await;
        let v1 = reg.register(&version_of("dedup-model", &run, &arts[0])).await.unwrap();
        assert_eq!(v1.version, 1);
        let expected = version_of("dedup-model", &run, &arts[0]);
        assert_eq!(
            (&v1.artifact_version, &v1.content_hash, &v1.run_id, &v1.git_commit),
            (&expected.artifact_version, &expected.content_hash, &expected.run_id, &expected.git_commit)
        );
        assert_eq!((&v1.code_hashes, &v1.data_hashes), (&expected.code_hashes, &expected.data_hashes));
        assert_eq!((&v1.metrics, &v1.tags, &v1.samples), (&expected.metrics, &expected.tags, &expected.samples));
        let again = reg.register(&version_of("dedup-model", &run, &arts[0])).await.unwrap();
        assert_eq!(again, v1, "registering identical bytes returns the version that has them");
        let v2 = reg.register(&version_of("dedup-model", &run, &arts[1])).await.unwrap();
        assert_eq!(v2.version, 2);
        // The same bytes are version 1 of another model too: numbers are per model.
        assert_eq!(reg.register(&version_of("other-model", &run, &arts[1])).await.unwrap().version, 1);
        let versions = reg.versions("dedup-model").await.unwrap();
        assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), [2, 1], "newest first");
        assert_eq!(reg.version("dedup-model", 1).await.unwrap().as_ref(), Some(&v1));
        assert!(reg.version("dedup-model", 9).await.unwrap().is_none());
        let model = reg.model("dedup-model").await.unwrap().expect("registering created the model");
        assert_eq!(model.description, "");
        let tags = BTreeMap::from([("team".to_string(), "vision".to_string())]);
        let described = reg.describe_model("dedup-model", "a tumour classifier", &tags).await.unwrap();
        assert_eq!((described.description.as_str(), &described.tags), ("a tumour classifier", &tags));
        assert_eq!(described.created_at, model.created_at);
        let names: Vec<String> = reg.models().await.unwrap().into_iter().map(|m| m.name).collect();
        assert!(names.contains(&"dedup-model".to_string()) && names.contains(&"other-model".to_string()));
    }

    /// An alias moves only from the holder expected; a retry of a finished
    /// promotion is a no-op; at most one version holds an alias.
    pub async fn promotion_is_compare_and_swap(store: &dyn MetadataStore) {
        let reg = registry(store);
        let (run, arts) = artifacts(store, "cas", 3).await;
        for a in &arts {
            reg.register(&version_of("cas-model", &run, a)).await.unwrap();
        }
        assert!(reg.resolve("cas-model", PRODUCTION).await.unwrap().is_none());
        let first = reg.promote(&promotion("cas-model", PRODUCTION, Some(1), Expect::Nobody)).await.unwrap();
        let Promoted::Moved(event) = first else { panic!("the first promotion moves the alias: {first:?}") };
        assert_eq!((event.from, event.to, event.seq, event.kind), (None, Some(1), 1, EventKind::Promote));
        assert_eq!(event.ci_job_url.as_deref(), Some("https://ci.example/job/1"));
        assert_eq!(
            reg.promote(&promotion("cas-model", PRODUCTION, Some(1), Expect::Nobody)).await.unwrap(),
            Promoted::AlreadyHeld,
            "a retry of a finished promotion changes nothing"
        );
        // A stale expectation: the conflict names the holder and since when.
        let err = reg.promote(&promotion("cas-model", PRODUCTION, Some(2), Expect::Nobody)).await.unwrap_err();
        match &err {
            RegistryError::Conflict { holder: Some((1, since)), expected: Expect::Nobody, .. } => {
                assert_eq!(*since, event.at)
            }
            other => panic!("expected a conflict naming v1, got {other:?}"),
        }
        assert!(err.to_string().contains("held by v1 since"), "{err}");
        let err = reg.promote(&promotion("cas-model", PRODUCTION, Some(3), Expect::Version(2))).await.unwrap_err();
        assert!(matches!(err, RegistryError::Conflict { holder: Some((1, _)), .. }), "{err}");
        reg.promote(&promotion("cas-model", PRODUCTION, Some(2), Expect::Version(1))).await.unwrap();
        reg.promote(&promotion("cas-model", STAGING, Some(3), Expect::Nobody)).await.unwrap();
        reg.promote(&promotion("cas-model", "champion", Some(2), Expect::Nobody)).await.unwrap();
        let versions = reg.versions("cas-model").await.unwrap();
        let held: Vec<(i64, Vec<String>)> = versions.iter().map(|v| (v.version, v.aliases.clone())).collect();
        assert_eq!(
            held,
            [(3, vec!["staging".to_string()]), (2, vec!["champion".into(), "production".into()]), (1, vec![])],
            "each alias on one version only"
        );
        assert_eq!(reg.resolve("cas-model", PRODUCTION).await.unwrap().map(|v| v.version), Some(2));
        let aliases: Vec<(String, i64)> =
            reg.aliases("cas-model").await.unwrap().into_iter().map(|h| (h.alias, h.version)).collect();
        assert_eq!(aliases, [("champion".into(), 2), ("production".into(), 2), ("staging".into(), 3)]);
        // Taking an alias off every version.
        reg.promote(&promotion("cas-model", "champion", None, Expect::Version(2))).await.unwrap();
        assert!(reg.resolve("cas-model", "champion").await.unwrap().is_none());
    }

    /// The event log is linear and newest first; it answers who held an
    /// alias at a time; a rollback is a compare-and-swap back, itself an event.
    pub async fn history_and_rollback(store: &dyn MetadataStore) {
        let reg = registry(store);
        let (run, arts) = artifacts(store, "hist", 3).await;
        for a in &arts {
            reg.register(&version_of("hist-model", &run, a)).await.unwrap();
        }
        let err = rollback(reg, "hist-model", PRODUCTION, promotion("", "", None, Expect::Nobody)).await.unwrap_err();
        assert!(matches!(err, RegistryError::NothingToRollBack { .. }), "{err}");
        let mut times = Vec::new();
        for (to, expect) in [(1, Expect::Nobody), (2, Expect::Version(1)), (3, Expect::Version(2))] {
            let Promoted::Moved(e) = reg.promote(&promotion("hist-model", PRODUCTION, Some(to), expect)).await.unwrap()
            else {
                panic!("moved")
            };
            times.push(e.at);
            // Distinct times, so that holder_at can tell them apart.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        reg.promote(&promotion("hist-model", STAGING, Some(3), Expect::Nobody)).await.unwrap();
        let all = reg.history("hist-model", None, 100).await.unwrap();
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 3, 2, 1], "linear, newest first");
        let prod = reg.history("hist-model", Some(PRODUCTION), 100).await.unwrap();
        assert_eq!(
            prod.iter().map(|e| (e.from, e.to)).collect::<Vec<_>>(),
            [(Some(2), Some(3)), (Some(1), Some(2)), (None, Some(1))]
        );
        assert_eq!(reg.history("hist-model", None, 2).await.unwrap().len(), 2, "limit");
        assert_eq!(reg.holder_at("hist-model", PRODUCTION, times[0] - 1).await.unwrap(), None, "before the first");
        assert_eq!(reg.holder_at("hist-model", PRODUCTION, times[0]).await.unwrap(), Some(1));
        assert_eq!(reg.holder_at("hist-model", PRODUCTION, times[1] + 1).await.unwrap(), Some(2));
        assert_eq!(reg.holder_at("hist-model", PRODUCTION, now()).await.unwrap(), Some(3));
        let mut why = promotion("", "", None, Expect::Nobody);
        why.reason = Some("v3 fails on real traffic".into());
        let Promoted::Moved(back) = rollback(reg, "hist-model", PRODUCTION, why).await.unwrap() else {
            panic!("moved")
        };
        assert_eq!((back.from, back.to, back.kind), (Some(3), Some(2), EventKind::Rollback));
        assert_eq!(back.reason.as_deref(), Some("v3 fails on real traffic"));
        assert_eq!(reg.resolve("hist-model", PRODUCTION).await.unwrap().map(|v| v.version), Some(2));
        assert_eq!(reg.history("hist-model", None, 1).await.unwrap()[0], back, "the rollback is an event");
    }

    /// A protected alias moves only with a run whose quality gate passed,
    /// or forced with a reason, which the log records.
    pub async fn protected_aliases(store: &dyn MetadataStore) {
        let reg = registry(store);
        let (good_run, arts) = artifacts(store, "prot", 2).await;
        for a in &arts {
            reg.register(&version_of("prot-model", &good_run, a)).await.unwrap();
        }
        let (bad_run, _) = artifacts(store, "prot-bad", 0).await;
        let mut appraisal = step_write(&bad_run, "appraise", StepStatus::Completed);
        appraisal.step_run.checks = vec![crate::check::Check::fail("accuracy", "worse than production")];
        store.write_step_run(&appraisal).await.unwrap();
        store.flush().await.unwrap();
        let protected = |run: Option<&str>| Promotion {
            protected: true,
            run_id: run.map(str::to_string),
            ..promotion("prot-model", PRODUCTION, Some(1), Expect::Nobody)
        };
        let err = reg.promote(&protected(None)).await.unwrap_err();
        assert!(matches!(err, RegistryError::Protected { .. }) && err.to_string().contains("--force"), "{err}");
        let err = reg.promote(&protected(Some(&bad_run))).await.unwrap_err();
        assert!(matches!(&err, RegistryError::Protected { why, .. } if why.contains("appraise.accuracy")), "{err}");
        let err = reg.promote(&protected(Some("no-such-run"))).await.unwrap_err();
        assert!(matches!(&err, RegistryError::Protected { why, .. } if why.contains("no-such-run")), "{err}");
        assert!(reg.resolve("prot-model", PRODUCTION).await.unwrap().is_none(), "refusals change nothing");
        let Promoted::Moved(ok) = reg.promote(&protected(Some(&good_run))).await.unwrap() else { panic!("moved") };
        assert!(!ok.forced);
        let forced_without_reason =
            Promotion { force: true, to: Some(2), expect: Expect::Version(1), ..protected(None) };
        let err = reg.promote(&forced_without_reason).await.unwrap_err();
        assert!(matches!(err, RegistryError::ReasonRequired { .. }), "{err}");
        let forced = Promotion { reason: Some("hotfix, approved by on-call".into()), ..forced_without_reason };
        let Promoted::Moved(e) = reg.promote(&forced).await.unwrap() else { panic!("moved") };
        assert!(e.forced && e.reason.as_deref() == Some("hotfix, approved by on-call"), "{e:?}");
        assert_eq!(reg.history("prot-model", Some(PRODUCTION), 1).await.unwrap()[0], e);
    }

    /// A run that output the bytes of one version, and records its checks.
    async fn version_with_run(store: &dyn MetadataStore, model: &str, failed_check: bool) -> (String, i64) {
        let (run, arts) = artifacts(store, &format!("{model}-run"), 1).await;
        if failed_check {
            let mut appraisal = step_write(&run, "appraise", StepStatus::Completed);
            appraisal.step_run.checks = vec![crate::check::Check::fail("accuracy", "worse than production")];
            store.write_step_run(&appraisal).await.unwrap();
            store.flush().await.unwrap();
        }
        let v = registry(store).register(&version_of(model, &run, &arts[0])).await.unwrap();
        (run, v.version)
    }

    /// Protection kept by the registry holds for every client, even one
    /// that does not declare it (another stack on the same store): a
    /// protected alias moves only to a version whose own evidence passed:
    /// the run that produced its bytes, with no failed check. Citing any
    /// other run, or rolling back onto a version that never passed, is
    /// refused with what is missing; `force` with a reason still moves it.
    pub async fn protection_is_kept_by_the_registry(store: &dyn MetadataStore) {
        let reg = registry(store);
        let m = "kept-model";
        let change = |protect: bool, reason: Option<&str>| Protection {
            reason: reason.map(str::to_string),
            actor: "conformance".into(),
            ..Protection::new(m, PRODUCTION, protect, &actor())
        };
        // Protecting a model with no version yet declares the model.
        let event = reg.set_protection(&change(true, Some("the gate guards production"))).await.unwrap();
        let event = event.expect("protecting changes something");
        assert_eq!((event.kind, event.from, event.to), (EventKind::Protect, None, None));
        assert_eq!(reg.set_protection(&change(true, None)).await.unwrap(), None, "protecting twice changes nothing");
        assert_eq!(reg.protections(Some(m)).await.unwrap(), [(m.to_string(), PRODUCTION.to_string())]);
        let (good, v1) = version_with_run(store, m, false).await;
        let (bad, v2) = version_with_run(store, m, true).await;
        let (other_green, v3) = version_with_run(store, m, false).await;
        // The client does not declare the alias protected (a staging stack).
        let cite = |to: i64, expect: Expect, run: Option<&str>| Promotion {
            run_id: run.map(str::to_string),
            ..promotion(m, PRODUCTION, Some(to), expect)
        };
        let refused = |err: RegistryError, says: &str| {
            assert!(matches!(&err, RegistryError::Protected { why, .. } if why.contains(says)), "{says}: {err}");
        };
        refused(reg.promote(&cite(v1, Expect::Nobody, None)).await.unwrap_err(), "no run was given");
        refused(reg.promote(&cite(v2, Expect::Nobody, Some(&other_green))).await.unwrap_err(), "is no evidence for v2");
        refused(reg.promote(&cite(v2, Expect::Nobody, Some(&bad))).await.unwrap_err(), "appraise.accuracy");
        assert!(reg.resolve(m, PRODUCTION).await.unwrap().is_none(), "refusals change nothing");
        assert!(matches!(reg.promote(&cite(v1, Expect::Nobody, Some(&good))).await.unwrap(), Promoted::Moved(_)));
        let forced =
            Promotion { force: true, reason: Some("incident 7".into()), ..cite(v2, Expect::Version(v1), None) };
        let Promoted::Moved(e) = reg.promote(&forced).await.unwrap() else { panic!("a forced move moves") };
        assert!(e.forced && e.reason.as_deref() == Some("incident 7"), "{e:?}");
        reg.promote(&cite(v3, Expect::Version(v2), Some(&other_green))).await.unwrap();
        // Back onto v2, whose own run failed a check: refused; forced: moves.
        let back = promotion("", "", None, Expect::Nobody);
        refused(rollback(reg, m, PRODUCTION, back.clone()).await.unwrap_err(), "appraise.accuracy");
        assert_eq!(reg.resolve(m, PRODUCTION).await.unwrap().map(|v| v.version), Some(v3));
        let forced_back = Promotion { force: true, reason: Some("v3 misbehaves".into()), ..back.clone() };
        rollback(reg, m, PRODUCTION, forced_back).await.unwrap();
        assert_eq!(reg.resolve(m, PRODUCTION).await.unwrap().map(|v| v.version), Some(v2));
        // Protection events move nothing: holders and rollbacks skip them.
        assert_eq!(reg.holder_at(m, PRODUCTION, now()).await.unwrap(), Some(v2));
        let err = reg.set_protection(&change(false, None)).await.unwrap_err();
        assert!(matches!(err, RegistryError::UnprotectReasonRequired { .. }), "{err}");
        let lifted = reg.set_protection(&change(false, Some("retiring the model"))).await.unwrap().expect("lifted");
        assert_eq!((lifted.kind, lifted.reason.as_deref()), (EventKind::Unprotect, Some("retiring the model")));
        assert_eq!(reg.holder_at(m, PRODUCTION, now()).await.unwrap(), Some(v2));
        assert!(reg.protections(Some(m)).await.unwrap().is_empty());
        assert!(matches!(reg.promote(&cite(v1, Expect::Version(v2), None)).await.unwrap(), Promoted::Moved(_)));
        let kinds: Vec<EventKind> = reg.history(m, None, 20).await.unwrap().iter().map(|e| e.kind).collect();
        use EventKind::*;
        assert_eq!(kinds, [Promote, Unprotect, Rollback, Promote, Promote, Promote, Protect], "newest first");
        let diff = compare_protection(reg, &[PRODUCTION.to_string()]).await.unwrap();
        assert!(diff.unprotected.contains(&(m.to_string(), PRODUCTION.to_string())), "{diff:?}");
    }

    /// Bad names, unknown models and versions: exact errors, nothing changed.
    pub async fn bad_input(store: &dyn MetadataStore) {
        let reg = registry(store);
        let (run, arts) = artifacts(store, "bad", 1).await;
        reg.register(&version_of("bad-model", &run, &arts[0])).await.unwrap();
        for alias in ["", "Production", "prod uction", &"x".repeat(65)] {
            let err = reg.promote(&promotion("bad-model", alias, Some(1), Expect::Nobody)).await.unwrap_err();
            assert!(matches!(err, RegistryError::InvalidName { what: "alias", .. }), "{alias:?}: {err}");
            let err = reg.set_protection(&Protection::new("bad-model", alias, true, &actor())).await.unwrap_err();
            assert!(matches!(err, RegistryError::InvalidName { what: "alias", .. }), "{alias:?}: {err}");
        }
        let err = reg.set_protection(&Protection::new("-bad", PRODUCTION, true, &actor())).await.unwrap_err();
        assert!(matches!(err, RegistryError::InvalidName { what: "model", .. }), "{err}");
        assert!(reg.protections(None).await.unwrap().iter().all(|(m, _)| m != "bad-model" && m != "-bad"));
        let err = reg.promote(&promotion("no-such-model", PRODUCTION, Some(1), Expect::Nobody)).await.unwrap_err();
        assert!(
            matches!(&err, RegistryError::UnknownModel { known, .. } if known.contains(&"bad-model".to_string())),
            "{err}"
        );
        let err = reg.promote(&promotion("bad-model", PRODUCTION, Some(7), Expect::Nobody)).await.unwrap_err();
        assert!(matches!(&err, RegistryError::UnknownVersion { version: 7, known, .. } if known == &[1]), "{err}");
        assert!(err.to_string().contains("its versions: 1"), "{err}");
        assert!(reg.history("bad-model", None, 10).await.unwrap().is_empty(), "nothing was recorded");
        assert!(matches!(reg.versions("no-such-model").await.unwrap_err(), RegistryError::UnknownModel { .. }));
        assert!(matches!(
            reg.resolve("no-such-model", PRODUCTION).await.unwrap_err(),
            RegistryError::UnknownModel { .. }
        ));
        let mut ghost = version_of("bad-model", &run, &arts[0]);
        ghost.artifact_version = "no-such-artifact".into();
        ghost.content_hash = ContentHash::of(b"ghost");
        let err = reg.register(&ghost).await.unwrap_err();
        assert!(
            matches!(&err, RegistryError::Store(MetadataError::NotFound(w)) if w.contains("no-such-artifact")),
            "{err}"
        );
        let err = reg.register(&version_of("-bad name", &run, &arts[0])).await.unwrap_err();
        assert!(matches!(err, RegistryError::InvalidName { what: "model", .. }), "{err}");
        assert_eq!(reg.versions("bad-model").await.unwrap().len(), 1);
    }

    /// Many handles promote different versions with the same expectation at
    /// once: exactly one wins, every other gets the conflict naming the
    /// winner, and the event log is linear.
    pub async fn racing_promotions(open: &impl Fn() -> Arc<dyn MetadataStore>, racers: usize) {
        let store = open();
        let (run, arts) = artifacts(store.as_ref(), "race", racers).await;
        for a in &arts {
            registry(store.as_ref()).register(&version_of("race-model", &run, a)).await.unwrap();
        }
        let outcomes = race(open, racers, |store, i| async move {
            let p = promotion("race-model", PRODUCTION, Some(i as i64 + 1), Expect::Nobody);
            registry(store.as_ref()).promote(&p).await
        })
        .await;
        let winners: Vec<i64> = outcomes
            .iter()
            .filter_map(|o| match o {
                Ok(Promoted::Moved(e)) => e.to,
                _ => None,
            })
            .collect();
        assert_eq!(winners.len(), 1, "exactly one promotion wins: {outcomes:?}");
        for o in &outcomes {
            match o {
                Ok(Promoted::Moved(_)) => {}
                Err(RegistryError::Conflict { holder: Some((v, _)), .. }) => assert_eq!(*v, winners[0]),
                other => panic!("a loser gets the conflict naming the winner, got {other:?}"),
            }
        }
        let log = registry(store.as_ref()).history("race-model", None, 100).await.unwrap();
        assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), [1], "one event: {log:?}");
        assert_eq!(
            registry(store.as_ref()).resolve("race-model", PRODUCTION).await.unwrap().map(|v| v.version),
            Some(winners[0])
        );
    }

    /// Many handles register at once, half of them the same bytes: one
    /// version per distinct content, numbers unique and dense.
    pub async fn racing_registrations(open: &impl Fn() -> Arc<dyn MetadataStore>, racers: usize) {
        let store = open();
        let (run, arts) = artifacts(store.as_ref(), "reg-race", racers).await;
        let arts = Arc::new(arts);
        let outcomes = race(open, racers, move |store, i| {
            let arts = arts.clone();
            let run = run.clone();
            async move {
                // Even racers all register the first artifact.
                let a = if i % 2 == 0 { &arts[0] } else { &arts[i] };
                registry(store.as_ref()).register(&version_of("reg-race-model", &run, a)).await
            }
        })
        .await;
        let versions: Vec<i64> = outcomes.iter().map(|o| o.as_ref().expect("a registration").version).collect();
        let firsts: Vec<i64> = versions.iter().step_by(2).copied().collect();
        assert!(firsts.windows(2).all(|w| w[0] == w[1]), "identical bytes are one version: {versions:?}");
        let mut numbers = registry(store.as_ref())
            .versions("reg-race-model")
            .await
            .unwrap()
            .into_iter()
            .map(|v| v.version)
            .collect::<Vec<_>>();
        numbers.sort_unstable();
        assert_eq!(numbers, (1..=(1 + racers / 2) as i64).collect::<Vec<_>>(), "unique and dense");
    }

    /// Runs `racers` copies of `f` at once, each on its own handle and thread.
    async fn race<T, F, Fut>(open: &impl Fn() -> Arc<dyn MetadataStore>, racers: usize, f: F) -> Vec<T>
    where
        T: Send + 'static,
        F: Fn(Arc<dyn MetadataStore>, usize) -> Fut + Send + Sync + Clone + 'static,
        Fut: std::future::Future<Output = T>,
    {
        let start = Arc::new(std::sync::Barrier::new(racers));
        let handles: Vec<_> = (0..racers)
            .map(|i| {
                let (store, f, start) = (open(), f.clone(), start.clone());
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    start.wait();
                    let out = rt.block_on(f(store.clone(), i));
                    rt.block_on(store.flush()).unwrap();
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a racer panicked")).collect()
    }
}
