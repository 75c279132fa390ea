//! PostgreSQL going away under a running pipeline, as a crash or a
//! restart takes it: an outage shorter than the stack's retry window is
//! ridden out and loses nothing; a longer one fails the run, and the next
//! command shows it failed at once, not minutes later.
//!
//! Needs the service tier's PostgreSQL and its control script
//! (`.ci/services.sh`: `ZENFLOW_TEST_POSTGRES_CTL`). Every test stops the
//! server, so they take turns, and none runs beside the other service tests.

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;
use zenflow::conformance::metadata::{artifact, new_run, step_write};
use zenflow::metadata::{MetadataStore, StepStatus};
use zenflow::stacks::metadata::PostgresMetadataStore;
use zenflow::RunStatus;
use zenflow_tests::project::{code, stderr, stdout, Project};
use zenflow_tests::services::{env, fresh_database, runtime};

const WORKER: &str = env!("CARGO_BIN_EXE_worker");

/// The server, one test at a time.
static SERVER: Mutex<()> = Mutex::new(());

/// Runs the control script: `stop` (as a crash: `pg_ctl -m immediate`) or `start`.
fn ctl(what: &str) {
    let status = Command::new(env("ZENFLOW_TEST_POSTGRES_CTL")).arg(what).status().expect("the control script runs");
    assert!(status.success(), "`ctl {what}` failed");
}

/// Starts the server again after `down`, from another thread.
fn start_after(down: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(down);
        ctl("start");
    })
}

/// A project whose stack `pg` records in database `db` (with
/// `retry_timeout` when given) and keeps artifacts in the project.
fn project(db: &str, retry_timeout: Option<&str>) -> Project {
    let p = Project::new(WORKER);
    let retry = retry_timeout.map(|t| format!("retry_timeout = \"{t}\"\n")).unwrap_or_default();
    std::fs::write(
        p.path("zenflow.toml"),
        format!(
            "[stacks.pg]\nartifact_store = \"file://.zenflow/artifacts\"\n\n\
             [stacks.pg.metadata_store]\nurl = \"{db}\"\n{retry}"
        ),
    )
    .unwrap();
    p
}

/// The drill (seed, then six slow tick/tock pairs: 13 steps) on stack `pg`.
fn drill(p: &Project, args: &[&str]) -> Command {
    let mut c = p.cmd(&[&["run", "-q", "--stack", "pg"], args].concat());
    c.env("ZENFLOW_WORKER_PIPELINE", "drill").stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// What `runs list` prints for the drill's runs on stack `pg`.
fn runs_list(p: &Project) -> String {
    let out = p.cmd(&["runs", "list", "--stack", "pg"]).env("ZENFLOW_WORKER_PIPELINE", "drill").output().unwrap();
    stdout(&out)
}

/// The statuses of run `name`'s steps, as recorded.
fn statuses(store: &PostgresMetadataStore, rt: &tokio::runtime::Runtime, name: &str) -> (RunStatus, Vec<StepStatus>) {
    rt.block_on(async {
        let run = store.get_run(name).await.unwrap().unwrap_or_else(|| panic!("run `{name}` is recorded"));
        let steps = store.step_runs(&run.id).await.unwrap();
        (run.status, steps.iter().map(|s| s.status).collect())
    })
}

#[test]
#[ignore = "needs PostgreSQL on 127.0.0.1 with its control script: run `bash .ci/run`"]
fn a_crash_and_restart_of_the_database_within_the_window_is_ridden_out() {
    let _server = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let db = fresh_database(&rt);
    let p = project(&db, None);
    let child = drill(&p, &["--set", "ms=300", "--run-name", "through"]).spawn().unwrap();
    // Mid-run, between the steps' records: down for two seconds.
    std::thread::sleep(Duration::from_millis(900));
    ctl("stop");
    let back = start_after(Duration::from_secs(2));
    let out = child.wait_with_output().unwrap();
    back.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "the run rides out the outage: {}", String::from_utf8_lossy(&out.stderr));
    let store = PostgresMetadataStore::open(&db, None).unwrap();
    let (status, steps) = statuses(&store, &rt, "through");
    assert_eq!(status, RunStatus::Completed);
    assert_eq!(steps, vec![StepStatus::Completed; 13], "every step's result is recorded");
    // Every result is usable: the same run again is served from the cache.
    let again = drill(&p, &["--set", "ms=300", "--run-name", "again"]).output().unwrap();
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert_eq!(statuses(&store, &rt, "again").1, vec![StepStatus::Cached; 13]);
}

#[test]
#[ignore = "needs PostgreSQL on 127.0.0.1 with its control script: run `bash .ci/run`"]
fn an_outage_past_the_window_fails_the_run_and_the_next_command_shows_it_at_once() {
    let _server = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let db = fresh_database(&rt);
    let p = project(&db, Some("1s"));
    let child = drill(&p, &["--set", "ms=300", "--run-name", "past", "--json", "past.json"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(900));
    ctl("stop");
    let out = child.wait_with_output();
    ctl("start");
    let out = out.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // The error names the store (never its password) and how long it tried.
    assert!(err.contains("did not come back within 1s ("), "{err}");
    assert!(err.contains("postgres:***@127.0.0.1"), "{err}");
    // The JSON report says what the steps did, from the run's own memory.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.path("past.json")).unwrap()).unwrap();
    assert_eq!(report["status"], "error", "{report}");
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps[0]["id"], "seed_of", "{report}");
    assert!(steps.iter().filter(|s| s["status"] == "completed").count() >= 2, "{report}");
    assert!(steps.iter().all(|s| s["status"] != "running"), "{report}");
    // Its end could not be recorded; the next command closes it, at once:
    // not after the three minutes a silent heartbeat takes.
    let listed = runs_list(&p);
    let line = listed.lines().find(|l| l.contains("past")).unwrap_or_else(|| panic!("{listed}\n{err}"));
    assert!(line.contains("failed"), "{listed}");
    let store = PostgresMetadataStore::open(&db, None).unwrap();
    let (status, steps) = statuses(&store, &rt, "past");
    assert_eq!(status, RunStatus::Failed);
    assert!(!steps.contains(&StepStatus::Running), "no step is left running: {steps:?}");
    assert!(steps.contains(&StepStatus::Completed), "the steps before the outage are kept: {steps:?}");
}

#[test]
#[ignore = "needs PostgreSQL on 127.0.0.1 with its control script: run `bash .ci/run`"]
fn a_result_recorded_while_the_database_restarts_is_kept_as_reported() {
    let _server = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let db = fresh_database(&rt);
    // A long commit window: the first result waits, uncommitted, in the
    // batch the crash takes.
    let store = PostgresMetadataStore::open(&db, Some(2)).unwrap().with_commit_window(Duration::from_secs(60));
    let (run, first) = rt.block_on(async {
        let run = store.create_run(&new_run("outage", "outage-run")).await.unwrap();
        let mut w = step_write(&run.id, "first", StepStatus::Completed);
        w.new_outputs.push(artifact("outage", "first", b"1"));
        let first = store.write_step_run(&w).await.unwrap();
        (run, first)
    });
    ctl("stop");
    let back = start_after(Duration::from_millis(1500));
    let second = rt.block_on(async {
        // Reported while the server is down: it waits for it.
        let mut w = step_write(&run.id, "second", StepStatus::Completed);
        w.new_outputs.push(artifact("outage", "second", b"2"));
        let second = store.write_step_run(&w).await.unwrap();
        store.set_run_status(&run.id, RunStatus::Completed, None, Some(zenflow::testing::now())).await.unwrap();
        second
    });
    back.join().unwrap();
    let other = PostgresMetadataStore::open(&db, None).unwrap();
    let (status, steps) = statuses(&other, &rt, "outage-run");
    assert_eq!((status, steps), (RunStatus::Completed, vec![StepStatus::Completed; 2]));
    for link in first.iter().chain(&second) {
        let stored = rt.block_on(other.artifact_version(&link.artifact.id)).unwrap().expect("the version is kept");
        assert_eq!((stored.name.as_str(), stored.version), (link.artifact.name.as_str(), link.artifact.version));
    }
}

/// The crash drill's database points: PostgreSQL crashes at a point of the
/// run that moves from round to round (before the run is recorded, between
/// steps, while a result is written, after the end) and stays down for less
/// or more than the retry window. Whatever the point, the run either
/// completes or fails, no step is left running, and a re-run serves every
/// step that had completed from the cache (a hit reads and verifies its
/// artifact).
#[test]
#[ignore = "needs PostgreSQL on 127.0.0.1 with its control script: run `bash .ci/run`"]
fn outage_drill_no_point_of_a_crash_loses_a_completed_step() {
    let _server = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let db = fresh_database(&rt);
    let p = project(&db, Some("1500ms"));
    let store = PostgresMetadataStore::open(&db, None).unwrap();
    let (mut rode_out, mut failed) = (0, 0);
    for i in 0..6u64 {
        let (name, seed) = (format!("drill-{i}"), format!("seed={i}"));
        let child = drill(&p, &["--set", &seed, "--set", "ms=150", "--run-name", &name]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(100 + 300 * i));
        ctl("stop");
        // Within the window on even rounds, past it on odd ones.
        let back = start_after(Duration::from_millis(if i % 2 == 0 { 400 } else { 2800 }));
        let out = child.wait_with_output().unwrap();
        back.join().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => rode_out += 1,
            Some(1) => failed += 1,
            other => panic!("round {i}: exit {other:?}: {err}"),
        }
        // The next command closes a run whose end was not recorded.
        let listed = runs_list(&p);
        assert!(!listed.lines().any(|l| l.contains(" running ")), "round {i}: {listed}");
        let completed: Vec<String> = rt.block_on(async {
            let Some(run) = store.get_run(&name).await.unwrap() else { return Vec::new() };
            let steps = store.step_runs(&run.id).await.unwrap();
            assert!(steps.iter().all(|s| s.status != StepStatus::Running), "round {i}: {steps:?}");
            if out.status.success() {
                assert_eq!((run.status, steps.len()), (RunStatus::Completed, 13), "round {i}");
            }
            steps.into_iter().filter(|s| s.status.is_success()).map(|s| s.invocation).collect()
        });
        let again = drill(&p, &["--set", &seed, "--set", "ms=150", "--json", "again.json"]).output().unwrap();
        assert_eq!(code(&again), 0, "round {i}: {}", stderr(&again));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p.path("again.json")).unwrap()).unwrap();
        for step in report["steps"].as_array().unwrap() {
            let id = step["id"].as_str().unwrap();
            if completed.iter().any(|c| c == id) {
                assert_eq!(step["status"], "cached", "round {i}: `{id}` had completed");
            }
        }
    }
    eprintln!("outage drill: {rode_out} run(s) rode out the crash, {failed} failed past the window");
    assert!(failed >= 1, "no outage outlasted the window mid-run");
}
