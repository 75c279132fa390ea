//! The subprocess orchestrator: the orchestrator conformance suite, and
//! steps that crash, hang, print, retry and time out in their own
//! processes while the rest of the run goes on.

use std::sync::Mutex;
use zenflow::metadata::{StepRunRecord, StepStatus};
use zenflow::stacks::config::Stacks;
use zenflow::{Error, Pipeline as _, RunStatus, Stack};
use zenflow_tests::project::{code, stderr, Project};
use zenflow_tests::records::latest;

const WORKER: &str = env!("CARGO_BIN_EXE_worker");

/// A project whose `sub` stack runs steps as children of `program`, on
/// SQLite and files in the project.
fn project(program: &str, extra: &str) -> Project {
    let p = Project::new(WORKER);
    std::fs::write(
        p.path("zenflow.toml"),
        format!(
            "[stacks.sub]\norchestrator = {{ kind = \"subprocess\", parallelism = 4, program = {program:?} }}\n\
             artifact_store = \"file://.zenflow/artifacts\"\nmetadata_store = \"sqlite://.zenflow/zenflow.db\"\n{extra}"
        ),
    )
    .unwrap();
    p
}

fn open(p: &Project, stack: &str) -> Stack {
    Stacks::load(p.dir()).unwrap().open(stack).unwrap()
}

/// The latest run's step records by invocation.
fn latest_records(p: &Project) -> (zenflow::metadata::RunRecord, Vec<StepRunRecord>) {
    let stack = open(p, "sub");
    let run = stack.list_runs(None, 1).unwrap().remove(0);
    let records = stack.step_runs(&run.id).unwrap();
    (run, records)
}

#[test]
fn subprocess_orchestrator_conforms() {
    let projects = Mutex::new(Vec::new());
    zenflow::conformance::orchestrator::run_all(|| {
        let p = project(WORKER, "");
        let stack = open(&p, "sub");
        assert_eq!(stack.orchestrator().name(), "subprocess");
        projects.lock().unwrap().push(p);
        stack
    });
}

#[test]
fn an_unchanged_rerun_starts_no_process() {
    let p = project(WORKER, "");
    let stack = open(&p, "sub");
    let shape = zenflow::conformance::orchestrator::Shape { width: 2, fail_on: -1 };
    zenflow::conformance::orchestrator::conformance_pipeline.run(&stack, &shape).unwrap();
    let again = zenflow::conformance::orchestrator::conformance_pipeline.run(&stack, &shape).unwrap();
    assert_eq!(again.cached().len(), again.plan().steps.len(), "{}", again.summary());
    for r in stack.step_runs(again.id()).unwrap() {
        assert_eq!(r.status, StepStatus::Cached);
        assert!(!r.metadata.contains_key("zenflow.worker"), "served by this process, not a worker: {r:?}");
    }
}

/// After each attempt the driver reads the records of the steps it
/// launched, not the whole run's: a run's bookkeeping grows with its
/// steps, not with their square.
#[test]
fn the_driver_reads_only_the_records_of_the_steps_it_launched() {
    use zenflow::testing::faults::{Faults, FaultyMetadata};
    let p = project(WORKER, "");
    let plain = open(&p, "sub");
    let faults = Faults::new();
    let db = zenflow::stacks::SqliteMetadataStore::open(p.path(".zenflow/zenflow.db")).unwrap();
    let metadata = std::sync::Arc::new(FaultyMetadata::new(db, faults.clone()));
    let stack =
        Stack::new("sub", plain.orchestrator().clone(), plain.artifacts().clone(), metadata).with_project_root(p.dir());
    let shape = zenflow::conformance::orchestrator::Shape { width: 4, fail_on: -1 };
    let run = zenflow::conformance::orchestrator::conformance_pipeline.run(&stack, &shape).unwrap();
    let steps = run.plan().steps.len() as u64;
    assert_eq!(run.executed().len() as u64, steps, "{}", run.summary());
    assert_eq!(faults.calls("step_runs"), 0, "no read of the whole run");
    assert_eq!(faults.calls("latest_step_run"), steps, "one read per launched step");
    zenflow_tests::records::assert_records_as_stored(&stack, &run);
}

#[test]
fn fused_chains_run_in_one_process_and_each_step_keeps_its_record() {
    let p = project(WORKER, "");
    let stack = open(&p, "sub");
    let fused = zenflow::stacks::orchestrator::SubprocessOrchestrator::new(
        zenflow::stacks::orchestrator::Subprocess::new(WORKER, p.dir()),
        2,
    )
    .with_fused_chains(true);
    let stack = Stack::new("sub", std::sync::Arc::new(fused), stack.artifacts().clone(), stack.metadata().clone())
        .with_project_root(p.dir());
    zenflow::conformance::orchestrator::every_step_runs_after_its_inputs(&stack);
    let run = stack.list_runs(None, 1).unwrap().remove(0);
    let records = stack.step_runs(&run.id).unwrap();
    // add -> check -> add of each branch ran in one process.
    let pid = |id: &str| latest(&records, id).metadata["zenflow.worker"]["pid"].as_u64().unwrap();
    assert_eq!(pid("zf_conformance_add"), pid("zf_conformance_check"));
    assert_eq!(pid("zf_conformance_check"), pid("zf_conformance_add_2"));
    assert_ne!(pid("zf_conformance_add"), pid("zf_conformance_add_3"), "another branch, another process");
}

#[test]
fn a_crashing_step_fails_alone_with_its_signal_named() {
    let p = project(WORKER, "");
    for (how, named) in [
        ("abort", "signal 6 (SIGABRT"),
        ("segfault", "signal 11 (SIGSEGV"),
        ("kill", "signal 9 (SIGKILL: killed from outside; the kernel's out-of-memory (OOM) killer"),
    ] {
        let o = p.run(&["run", "--stack", "sub", "--set", &format!("crash={how}"), "--set", "slow_ms=10"]);
        assert_eq!(code(&o), 1, "a failed step fails the run: {}", stderr(&o));
        let (run, records) = latest_records(&p);
        assert_eq!(run.status, RunStatus::Failed);
        let crash = latest(&records, "crash");
        assert_eq!(crash.status, StepStatus::Failed);
        let error = crash.error.as_deref().unwrap();
        assert!(error.contains("died without recording a result") && error.contains(named), "{how}: {error}");
        // What it printed before it died is kept with the failure (SIGKILL
        // gives no chance to pass on what the step's capture still held).
        if how != "kill" {
            assert!(crash.logs.iter().any(|l| l == &format!("[stderr] about to {how}")), "{how}: {:?}", crash.logs);
        }
        assert_eq!(records.iter().filter(|r| r.invocation == "crash").count(), 1, "its running record was closed");
        // The rest of the run went on as on the local orchestrator.
        for ok in ["hello", "slow", "flaky"] {
            assert!(latest(&records, ok).status.is_success(), "{how}: {ok} {:?}", latest(&records, ok));
        }
        assert_eq!(latest(&records, "after_fails").status, StepStatus::Skipped);
    }
}

#[test]
fn a_step_that_hangs_past_its_timeout_is_killed_and_recorded_as_timed_out() {
    let p = project(WORKER, "");
    let started = std::time::Instant::now();
    let o = p.run(&["run", "--stack", "sub", "--set", "crash=stop", "--set", "slow_ms=10"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let elapsed = started.elapsed();
    let (_, records) = latest_records(&p);
    let crash = latest(&records, "crash");
    assert_eq!(crash.status, StepStatus::Failed);
    let error = crash.error.as_deref().unwrap();
    assert!(error.starts_with("timed out: `crash` did not stop within 5.2s"), "{error}");
    assert!(elapsed < std::time::Duration::from_secs(30), "killed at its deadline, not later: {elapsed:?}");
    // The entrypoint's own timeout, for a step that does stop.
    let timed = latest(&records, "timed");
    assert_eq!(timed.status, StepStatus::Failed);
    assert!(timed.error.as_deref().unwrap().contains("did not finish within its timeout of 300ms"), "{timed:?}");
}

#[test]
fn each_step_keeps_its_stdout_stderr_and_retries_run_as_new_processes() {
    let p = project(WORKER, "");
    let o = p.run(&["run", "--stack", "sub", "--set", "slow_ms=10"]);
    assert_eq!(code(&o), 1, "`fails` fails the run: {}", stderr(&o));
    let (_, records) = latest_records(&p);
    let hello = latest(&records, "hello");
    for line in ["[stdout] to stdout from hello", "[stderr] to stderr, attempt 1", "an event attempt=1"] {
        assert!(hello.logs.iter().any(|l| l == line), "{line:?} not in {:?}", hello.logs);
    }
    // The child's output still reaches the terminal of the run.
    assert!(zenflow_tests::project::stdout(&o).contains("to stdout from hello"));
    // `flaky` failed once, in one process, and succeeded in another.
    let flaky: Vec<&StepRunRecord> = records.iter().filter(|r| r.invocation == "flaky").collect();
    assert_eq!(flaky.len(), 2, "{flaky:?}");
    assert_eq!((flaky[0].status, flaky[0].attempts), (StepStatus::Failed, 1));
    assert_eq!((flaky[1].status, flaky[1].attempts), (StepStatus::Completed, 2));
    let pid = |r: &StepRunRecord| r.metadata["zenflow.worker"]["pid"].as_u64().unwrap();
    assert_ne!(pid(flaky[0]), pid(flaky[1]));
    let fails = latest(&records, "fails");
    assert_eq!(fails.error.as_deref(), Some("this step always fails"));
    assert_eq!(records.iter().filter(|r| r.invocation == "fails").count(), 1, "no retries: it has none");
}

#[test]
fn a_program_that_does_not_exist_fails_every_step_once_with_the_reason() {
    let p = project("/nonexistent/pipeline-binary", "");
    let o = p.run(&["run", "--stack", "sub", "--set", "slow_ms=10"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let (_, records) = latest_records(&p);
    let hello = latest(&records, "hello");
    assert!(
        hello.error.as_deref().unwrap().contains("cannot start `/nonexistent/pipeline-binary`"),
        "{:?}",
        hello.error
    );
    // `flaky` has a retry, but this would fail the same way.
    assert_eq!(records.iter().filter(|r| r.invocation == "flaky").count(), 1);
    assert_eq!(latest(&records, "slow").status, StepStatus::Skipped);
}

#[test]
fn stores_other_processes_cannot_open_are_refused_before_anything_runs() {
    let p = project(WORKER, "[stacks.mem]\norchestrator = { kind = \"subprocess\" }\nartifact_store = \"memory://\"\nmetadata_store = \"sqlite::memory:\"\n");
    let stack = open(&p, "mem");
    let err = zenflow::conformance::orchestrator::conformance_pipeline
        .run(&stack, &zenflow::conformance::orchestrator::Shape { width: 1, fail_on: -1 })
        .unwrap_err();
    let Error::RunFailed(failed) = &err else { panic!("expected a failed run, got {err:?}") };
    let message = failed.0.record().error.clone().unwrap_or_default();
    assert!(message.contains("cannot see the in-memory metadata store `sqlite::memory:`"), "{message}");
    assert!(failed.0.steps().is_empty(), "nothing ran: {}", failed.0.summary());
    assert_eq!(stack.get_run(failed.0.id()).unwrap().unwrap().status, RunStatus::Failed, "not left running");
}

#[test]
fn orchestrator_settings_are_checked_against_their_kind() {
    let p = project(WORKER, "[stacks.wrong]\norchestrator = { kind = \"subprocess\", address = \"http://x\" }\nartifact_store = \"memory://\"\nmetadata_store = \"sqlite::memory:\"\n[stacks.zero]\norchestrator = { kind = \"subprocess\", parallelism = 0 }\nartifact_store = \"memory://\"\nmetadata_store = \"sqlite::memory:\"\n[stacks.k8s]\norchestrator = \"kubernetes\"\nartifact_store = \"memory://\"\nmetadata_store = \"sqlite::memory:\"\n");
    let stacks = Stacks::load(p.dir()).unwrap();
    let e = stacks.config("wrong").unwrap_err().to_string();
    assert!(
        e.contains("`address` is not a setting of the subprocess orchestrator (it takes: parallelism, program)"),
        "{e}"
    );
    let e = stacks.config("zero").unwrap_err().to_string();
    assert!(e.contains("`parallelism` must be at least 1"), "{e}");
    let e = stacks.config("k8s").unwrap_err().to_string();
    assert!(e.contains("unknown orchestrator `kubernetes`; use \"local\", \"subprocess\" or \"ray\""), "{e}");
}
