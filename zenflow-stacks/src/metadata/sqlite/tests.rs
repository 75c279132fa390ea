use super::*;
use std::time::Instant;
use zenflow_core::conformance::metadata::{artifact, new_run, step_write};

fn step_run(run_id: &str, invocation: &str) -> StepRunWrite {
    step_write(run_id, invocation, StepStatus::Completed)
}

/// A step-run write that fails half-way (here: a trigger refuses its
/// artifact version, as a full disk could) leaves no half of it: the batch
/// is rolled back, the error says so, the run whose records it took is
/// refused from then on and closed as failed, and other runs go on.
#[tokio::test]
async fn a_write_failing_half_way_rolls_its_batch_back() {
    let store = SqliteMetadataStore::in_memory().unwrap();
    let run = store.create_run(&new_run("p", "r")).await.unwrap();
    store.flush().await.unwrap();
    store
        .shared
        .lock()
        .conn
        .execute_batch(
            "CREATE TEMP TRIGGER refuse BEFORE INSERT ON artifact_versions \
             BEGIN SELECT RAISE(ABORT, 'disk full (simulated)'); END;",
        )
        .unwrap();
    let earlier = step_run(&run.id, "earlier");
    store.write_step_run(&earlier).await.unwrap();
    let mut half = step_run(&run.id, "half");
    half.new_outputs = vec![artifact("p", "half", b"1")];
    let err = store.write_step_run(&half).await.unwrap_err();
    assert!(err.to_string().contains("disk full (simulated)"), "{err}");
    assert!(err.to_string().contains("rolled back"), "{err}");
    assert!(store.step_runs(&run.id).await.unwrap().is_empty(), "neither half a record nor the batch is kept");
    store.shared.lock().conn.execute_batch("DROP TRIGGER refuse").unwrap();

    // The run lost `earlier`: its writes are refused, naming why.
    let err = store.write_step_run(&step_run(&run.id, "later")).await.unwrap_err();
    assert!(
        matches!(&err, MetadataError::Backend { message, .. } if message.contains("were lost") && message.contains("disk full")),
        "{err}"
    );
    let err = store.set_run_status(&run.id, RunStatus::Completed, None, Some(now())).await.unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    let record = store.get_run(&run.id).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Failed, "closing a run that lost records fails it");
    assert!(record.error.as_deref().unwrap_or("").contains("disk full"), "{record:?}");
    let steps = store.step_runs(&run.id).await.unwrap();
    assert_eq!(
        steps.iter().map(|s| (s.invocation.as_str(), s.status)).collect::<Vec<_>>(),
        [("earlier", StepStatus::Failed)]
    );

    // Another run is not affected.
    let other = store.create_run(&new_run("p", "other")).await.unwrap();
    store.write_step_run(&half_of(&other.id)).await.unwrap();
    store.set_run_status(&other.id, RunStatus::Completed, None, Some(now())).await.unwrap();
    assert_eq!(store.step_runs(&other.id).await.unwrap().len(), 1);
}

fn half_of(run: &str) -> StepRunWrite {
    let mut half = step_run(run, "half");
    half.new_outputs = vec![artifact("p", "half", b"1")];
    half
}

/// A cache lookup is one statement that searches one index, in that
/// index's order: no scan of the step runs, no visit of the table, no sort.
#[test]
fn the_cache_lookup_reads_its_index_only() {
    let store = SqliteMetadataStore::in_memory().unwrap();
    let state = store.shared.lock();
    let plan: Vec<String> = state
        .conn
        .prepare(&format!("EXPLAIN QUERY PLAN {}", q::CACHE_HIT))
        .unwrap()
        .query_map(["k"], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(plan.iter().any(|l| l.contains("USING COVERING INDEX step_runs_cache_hits")), "{plan:?}");
    assert!(!plan.iter().any(|l| l.contains("TEMP B-TREE")), "{plan:?}");
    // The one-row subquery is the only thing scanned.
    let scans: Vec<&String> = plan.iter().filter(|l| l.starts_with("SCAN")).collect();
    assert!(scans.iter().all(|l| l.as_str() == "SCAN hit"), "{plan:?}");
}

/// A batch whose commit fails is rolled back. The writes it lost were
/// already reported as done, so the run they belong to is failed: its next
/// write is refused with the reason, closing it records it (and the step
/// whose record was lost) as failed, and other calls are not affected.
#[tokio::test]
async fn a_failed_commit_fails_the_runs_it_lost() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteMetadataStore::open(dir.path().join("z.db")).unwrap();
    let run = store.create_run(&new_run("p", "r")).await.unwrap();
    let bystander = store.create_run(&new_run("p", "bystander")).await.unwrap();
    store.flush().await.unwrap();
    store.write_step_run(&step_run(&run.id, "good")).await.unwrap();
    // A row that breaks a foreign key, checked at commit only: the
    // commit of the batch fails (as a full disk would make it fail).
    {
        let state = store.shared.lock();
        state.conn.pragma_update(None, "defer_foreign_keys", "ON").unwrap();
        state
            .conn
            .execute(
                "INSERT INTO step_run_inputs (step_run_id, input, position, artifact_version_id) \
                 VALUES ('no-such-step-run', 'x', 0, 'no-such-version')",
                [],
            )
            .unwrap();
    }
    // The committer thread commits the batch within the window, and fails.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !store.shared.lock().lost.has(&run.id) {
        assert!(Instant::now() < deadline, "the batch was not committed within 5 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    // Reads and other runs are not affected.
    assert!(store.step_runs(&run.id).await.unwrap().is_empty(), "nothing of the failed batch was kept");
    assert_eq!(store.get_run(&bystander.id).await.unwrap().unwrap().status, RunStatus::Running);
    store.write_step_run(&step_run(&bystander.id, "fine")).await.unwrap();
    store.set_run_status(&bystander.id, RunStatus::Completed, None, Some(now())).await.unwrap();
    // The run that lost a record: refused, then recorded failed.
    let err = store.write_step_run(&step_run(&run.id, "again")).await.unwrap_err();
    assert!(err.to_string().contains("were lost") && err.to_string().contains("FOREIGN KEY"), "{err}");
    let err = store.set_run_status(&run.id, RunStatus::Completed, None, Some(now())).await.unwrap_err();
    assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
    drop(store);
    let again = SqliteMetadataStore::open(dir.path().join("z.db")).unwrap();
    let record = again.get_run(&run.id).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    let steps = again.step_runs(&run.id).await.unwrap();
    assert_eq!(
        steps.iter().map(|s| (s.invocation.as_str(), s.status)).collect::<Vec<_>>(),
        [("good", StepStatus::Failed)]
    );
    assert!(steps[0].error.as_deref().unwrap_or("").contains("were lost"), "{steps:?}");
    assert_eq!(again.step_runs(&bystander.id).await.unwrap().len(), 1);
    assert_eq!(again.get_run(&bystander.id).await.unwrap().unwrap().status, RunStatus::Completed);
}

/// A read issued while a commit waits for the disk returns without
/// waiting for it: the sync runs outside the connection's lock, and reads
/// that need no uncommitted write go through their own connection. (With
/// the sync inside the lock, this read waited for the whole sync.)
#[test]
fn a_read_during_a_slow_commit_does_not_wait_for_it() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteMetadataStore::open(dir.path().join("z.db")).unwrap());
    let run = rt.block_on(store.create_run(&new_run("p", "r"))).unwrap();
    rt.block_on(store.flush()).unwrap();
    const SYNC: Duration = Duration::from_millis(1500);
    *store.shared.sync_delay.lock().unwrap() = SYNC;
    rt.block_on(store.write_step_run(&step_run(&run.id, "a"))).unwrap();
    let flushing = {
        let store = store.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(store.flush()).unwrap();
            started.elapsed()
        })
    };
    // Wait until the commit is done and its sync under way.
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.shared.committed.load(Ordering::Acquire) < 2 {
        assert!(Instant::now() < deadline, "the flush did not commit");
        std::thread::sleep(Duration::from_millis(1));
    }
    let started = Instant::now();
    let steps = rt.block_on(store.step_runs(&run.id)).unwrap();
    let read_took = started.elapsed();
    assert_eq!(steps.len(), 1, "the read sees the committed batch");
    // Writes of the next batch do not wait either.
    let started = Instant::now();
    rt.block_on(store.write_step_run(&step_run(&run.id, "b"))).unwrap();
    let write_took = started.elapsed();
    let flush_took = flushing.join().unwrap();
    assert!(flush_took >= SYNC, "the flush returns only once its sync has: {flush_took:?}");
    assert!(read_took < SYNC / 3, "the read waited {read_took:?} for a sync of {SYNC:?}");
    assert!(write_took < SYNC / 3, "the write waited {write_took:?} for a sync of {SYNC:?}");
}

/// A WAL past the checkpoint limit is copied into the database and
/// starts over: its file stays at the limit however much is written
/// (it grew without end while checkpoints ran beside an open batch).
#[tokio::test]
async fn the_wal_starts_over_once_past_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteMetadataStore::open(dir.path().join("z.db")).unwrap();
    let run = store.create_run(&new_run("p", "r")).await.unwrap();
    let limit = CHECKPOINT_AFTER_PAGES * 4096;
    let wal = || std::fs::metadata(dir.path().join("z.db-wal")).unwrap().len();
    let mut largest = 0;
    for i in 0..12 {
        let mut big = step_run(&run.id, &format!("big{i}"));
        big.step_run.logs = vec!["x".repeat(1 << 20)];
        store.write_step_run(&big).await.unwrap();
        store.flush().await.unwrap();
        largest = largest.max(wal());
    }
    for i in 0..20 {
        store.write_step_run(&step_run(&run.id, &format!("small{i}"))).await.unwrap();
        store.flush().await.unwrap();
    }
    // Never more than the limit and one 1 MiB batch; cut back after.
    assert!(largest < limit + (2 << 20), "12 MiB of commits grew the WAL to {largest} bytes");
    assert!(wal() <= limit, "the WAL did not start over: {} bytes", wal());
    drop(store);
    let again = SqliteMetadataStore::open(dir.path().join("z.db")).unwrap();
    assert_eq!(again.step_runs(&run.id).await.unwrap().len(), 32);
}
