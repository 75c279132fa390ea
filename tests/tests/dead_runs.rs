//! Runs whose process is killed (`kill -9`, as the OOM killer does): the
//! next command on the machine shows them failed at once, and a crash drill
//! kills a run at random points, checking each time that the store is whole
//! and that a re-run serves every step that had completed from the cache.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use zenflow::metadata::StepStatus;
use zenflow::stacks::config::Stacks;
use zenflow::RunStatus;
use zenflow_tests::project::{code, stderr, stdout, Project};

const WORKER: &str = env!("CARGO_BIN_EXE_worker");

/// The worker's drill pipeline (a chain of slow steps).
fn drill(p: &Project, args: &[&str]) -> Command {
    let mut c = p.cmd(args);
    c.env("ZENFLOW_WORKER_PIPELINE", "drill");
    c
}

fn status_of(p: &Project, name: &str) -> Option<RunStatus> {
    let stack = Stacks::load(p.dir()).unwrap().open("local").unwrap();
    stack.get_run(name).unwrap().map(|r| r.status)
}

#[test]
fn a_run_killed_with_sigkill_shows_as_failed_at_once() {
    let p = Project::new(WORKER);
    let mut child = drill(&p, &["run", "-q", "--set", "ms=300", "--run-name", "doomed"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while status_of(&p, "doomed") != Some(RunStatus::Running) {
        assert!(Instant::now() < deadline, "the run never showed as running");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(400));
    child.kill().unwrap(); // SIGKILL: no handler, no cleanup
    child.wait().unwrap();

    // Right after, not three minutes later.
    let listed = drill(&p, &["runs", "list"]).output().unwrap();
    assert_eq!(code(&listed), 0, "{}", stderr(&listed));
    let line = stdout(&listed).lines().find(|l| l.starts_with("doomed")).map(String::from).unwrap_or_default();
    assert!(line.contains("failed"), "runs list: {}", stdout(&listed));
    let shown = stdout(&drill(&p, &["runs", "show", "doomed"]).output().unwrap());
    assert!(shown.contains("stopped without finishing (killed or crashed)"), "{shown}");
    // Its running step is closed too; the lock file is gone.
    let stack = Stacks::load(p.dir()).unwrap().open("local").unwrap();
    let run = stack.get_run("doomed").unwrap().unwrap();
    let steps = stack.step_runs(&run.id).unwrap();
    assert!(steps.iter().all(|s| s.status != StepStatus::Running), "{steps:?}");
    for s in steps.iter().filter(|s| s.status == StepStatus::Failed) {
        assert_eq!(s.error.as_deref(), Some(zenflow::metadata::DEAD_STEP_ERROR));
    }
    assert_eq!(std::fs::read_dir(p.path(".zenflow/runs")).unwrap().count(), 0);

    // A live run is not touched by the same look.
    let mut live = drill(&p, &["run", "-q", "--set", "ms=300", "--set", "seed=9", "--run-name", "alive"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while status_of(&p, "alive") != Some(RunStatus::Running) {
        assert!(Instant::now() < deadline + Duration::from_secs(30), "the live run never showed as running");
        std::thread::sleep(Duration::from_millis(20));
    }
    let listed = stdout(&drill(&p, &["runs", "list"]).output().unwrap());
    assert!(listed.lines().any(|l| l.starts_with("alive") && l.contains("running")), "{listed}");
    assert!(live.wait().unwrap().success());
    assert_eq!(status_of(&p, "alive"), Some(RunStatus::Completed));
}

#[test]
fn crash_drill_the_store_stays_whole_and_every_completed_step_is_cached() {
    let p = Project::new(WORKER);
    let seed = std::env::var("ZENFLOW_DRILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("crash drill seed {seed} (ZENFLOW_DRILL_SEED={seed} replays it)");
    let mut killed_mid_run = 0;
    for i in 0..20u64 {
        let name = format!("drill-{i}");
        let set_seed = format!("seed={i}");
        let mut child = drill(&p, &["run", "-q", "--set", &set_seed, "--set", "ms=80", "--run-name", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Anywhere from process start to past the end of the run (a
        // multiplicative hash of the seed and the round: replayable).
        let spread = seed.wrapping_add(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
        std::thread::sleep(Duration::from_millis(20 + spread % 900));
        let _ = child.kill();
        let ended = child.wait().unwrap();

        // The store is whole: SQLite's own check, every recorded artifact
        // is there and intact.
        let db = rusqlite::Connection::open(p.path(".zenflow/zenflow.db")).unwrap();
        let check: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok", "kill {i} (seed {seed})");
        drop(db);
        let stack = Stacks::load(p.dir()).unwrap().open("local").unwrap();
        let versions = stack.block_on(stack.metadata().artifact_versions(None, 100_000)).unwrap();
        for v in versions.iter().filter(|v| v.inline.is_none()) {
            let bytes = stack.block_on(zenflow::artifact_store::read_version(stack.artifacts().as_ref(), v));
            assert!(bytes.is_ok(), "kill {i}: artifact {} is recorded but not readable", v.uri);
        }

        // `runs list` shows nothing running, and what had completed is
        // served from the cache by a re-run.
        let listed = stdout(&drill(&p, &["runs", "list", "--limit", "100"]).output().unwrap());
        assert!(!listed.lines().any(|l| l.contains(" running ")), "kill {i}: {listed}");
        let completed: BTreeSet<String> = match stack.get_run(&name).unwrap() {
            None => BTreeSet::new(), // killed before it was recorded
            Some(run) => {
                if run.status == RunStatus::Failed {
                    killed_mid_run += 1;
                }
                stack
                    .step_runs(&run.id)
                    .unwrap()
                    .into_iter()
                    .filter(|s| s.status.is_success())
                    .map(|s| s.invocation)
                    .collect()
            }
        };
        let again = format!("{name}-again");
        let o = drill(&p, &["run", "-q", "--set", &set_seed, "--set", "ms=80", "--run-name", &again])
            .args(["--json", "again.json"])
            .output()
            .unwrap();
        assert_eq!(code(&o), 0, "kill {i} ({ended}): {}", stderr(&o));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p.path("again.json")).unwrap()).unwrap();
        for step in report["steps"].as_array().unwrap() {
            let id = step["id"].as_str().unwrap();
            if completed.contains(id) {
                assert_eq!(step["status"], "cached", "kill {i} (seed {seed}): `{id}` had completed");
            }
        }
    }
    // Most kills land mid-run (the runs take about half the window).
    assert!(killed_mid_run >= 5, "only {killed_mid_run} of 20 kills landed mid-run (seed {seed})");
}

/// One thread serves the heartbeats of every run of the process: each run
/// beats at its own pace, a failing beat does not stop the next, and a
/// run's beats stop when its guard is dropped.
#[test]
fn heartbeats_beat_until_dropped_and_survive_failing_beats() {
    use std::sync::Arc;
    use zenflow::conformance::metadata::new_run;
    use zenflow::metadata::MetadataStore;
    use zenflow::stacks::SqliteMetadataStore;
    use zenflow::testing::faults::{Faults, FaultyMetadata, Rule};

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = |faults: &Faults| -> Arc<dyn MetadataStore> {
        Arc::new(FaultyMetadata::new(SqliteMetadataStore::in_memory().unwrap(), faults.clone()))
    };
    let (a, b) = (Faults::new(), Faults::new().with(Rule::on("heartbeat").times(3).fail("the database is away")));
    let (store_a, store_b) = (store(&a), store(&b));
    let (run_a, run_b) = (new_run("beats", "beats-a"), new_run("beats", "beats-b"));
    rt.block_on(async {
        store_a.create_run(&run_a).await.unwrap();
        store_b.create_run(&run_b).await.unwrap();
    });
    let beat_a = zenflow::run::liveness::heartbeat::start(store_a, &run_a.id, Duration::from_millis(20));
    let beat_b = zenflow::run::liveness::heartbeat::start(store_b, &run_b.id, Duration::from_millis(20));
    let until = |faults: &Faults, n: u64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while faults.calls("heartbeat") < n {
            assert!(Instant::now() < deadline, "only {} heartbeats", faults.calls("heartbeat"));
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    until(&a, 5);
    until(&b, 6); // three failed, and it went on
    assert_eq!(b.injected().len(), 3, "{:?}", b.injected());

    drop(beat_a);
    // A beat under way may still land: wait until none has for a while.
    let mut stopped_at = a.calls("heartbeat");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "a dropped heartbeat went on beating");
        std::thread::sleep(Duration::from_millis(100));
        let now = a.calls("heartbeat");
        if now == stopped_at {
            break;
        }
        stopped_at = now;
    }
    let b_then = b.calls("heartbeat");
    until(&b, b_then + 5);
    assert_eq!(a.calls("heartbeat"), stopped_at, "a dropped heartbeat went on beating");
    drop(beat_b);
}

/// A run whose final status cannot be written (its database went away just
/// then) leaves its lock behind: the next command on the machine, with the
/// database back, shows the run failed at once, not minutes later.
#[test]
fn a_run_whose_end_cannot_be_recorded_is_closed_by_the_next_command() {
    use std::sync::Arc;
    use zenflow::prelude::*;
    use zenflow::stacks::{LocalOrchestrator, ObjectArtifactStore, SqliteMetadataStore};
    use zenflow::testing::faults::{Faults, FaultyMetadata, Rule};

    #[step(cache = false)]
    fn one() -> i64 {
        1
    }

    #[pipeline]
    fn single() {
        one();
    }

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(".zenflow/zenflow.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let stack = |faults: Faults| {
        zenflow::Stack::new(
            "local",
            Arc::new(LocalOrchestrator::new(1)),
            Arc::new(ObjectArtifactStore::local(dir.path().join(".zenflow/artifacts")).unwrap()),
            Arc::new(FaultyMetadata::new(SqliteMetadataStore::open(&db).unwrap(), faults)),
        )
        .with_project_root(dir.path())
    };
    let away = Faults::new().with(Rule::on("set_run_status").fail("connection refused (simulated)"));
    let options = zenflow::RunOptions { run_name: Some("cut".into()), ..Default::default() };
    let err = single.run_with(&stack(away), &(), options);
    assert!(err.is_err(), "the run cannot say it ended");
    assert_eq!(std::fs::read_dir(dir.path().join(".zenflow/runs")).unwrap().count(), 1, "its lock file stays");

    let back = stack(Faults::new());
    assert_eq!(back.get_run("cut").unwrap().unwrap().status, RunStatus::Running);
    let closed = back.block_on(back.close_stale_runs()).unwrap();
    let run = back.get_run("cut").unwrap().unwrap();
    assert_eq!((closed, run.status), (vec![run.id.clone()], RunStatus::Failed));
    assert_eq!(std::fs::read_dir(dir.path().join(".zenflow/runs")).unwrap().count(), 0, "and is gone once closed");
}
