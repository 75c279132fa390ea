//! The step entrypoint contract, driven as an orchestrator drives it:
//! `<binary> step-entrypoint --run R --step S --attempt N`, one process per
//! attempt, against a run planned with `run --pending`.

use std::time::{Duration, Instant};
use zenflow::metadata::StepStatus;
use zenflow_tests::project::{code, stderr, stdout, Project};

const WORKER: &str = env!("CARGO_BIN_EXE_worker");

/// A project with a pending run of the worker's pipeline; its id.
fn planned(set: &[&str]) -> (Project, String) {
    let p = Project::new(WORKER);
    let mut args = vec!["run", "--pending"];
    for s in set {
        args.extend(["--set", s]);
    }
    let o = p.run(&args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("pending run "))
        .and_then(|l| l.split(['(', ')']).nth(1))
        .unwrap_or_else(|| panic!("no planned run in {out}"))
        .to_string();
    (p, id)
}

fn entrypoint(p: &Project, run: &str, step: &str, attempt: u32) -> std::process::Output {
    p.run(&["step-entrypoint", "--run", run, "--step", step, "--attempt", &attempt.to_string()])
}

fn records(p: &Project, run: &str, step: &str) -> Vec<zenflow::metadata::StepRunRecord> {
    let stack = zenflow::local_stack_at(p.dir()).unwrap();
    stack.step_runs(run).unwrap().into_iter().filter(|r| r.invocation == step).collect()
}

fn run_status(p: &Project, run: &str) -> zenflow::RunStatus {
    zenflow::local_stack_at(p.dir()).unwrap().get_run(run).unwrap().unwrap().status
}

#[test]
fn a_completed_step_is_not_run_again_and_its_output_and_logs_are_kept() {
    let (p, run) = planned(&[]);
    let o = entrypoint(&p, &run, "hello", 1);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // What the step printed still reaches the process's own streams ...
    assert!(stdout(&o).contains("to stdout from hello"), "{}", stdout(&o));
    assert!(stderr(&o).contains("to stderr, attempt 1"), "{}", stderr(&o));
    // ... and is kept with its step run, with its `tracing` event.
    let r = records(&p, &run, "hello");
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status, StepStatus::Completed);
    for line in ["[stdout] to stdout from hello", "[stderr] to stderr, attempt 1", "an event attempt=1"] {
        assert!(r[0].logs.iter().any(|l| l == line), "{line:?} not in {:?}", r[0].logs);
    }
    assert!(!r[0].logs.iter().any(|l| l.contains("[zenflow] hello")), "zenflow's own lines stay out: {:?}", r[0].logs);
    assert_eq!(run_status(&p, &run), zenflow::RunStatus::Running, "the pending run started; other steps remain");

    let again = entrypoint(&p, &run, "hello", 1);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert!(stderr(&again).contains("hello: completed already done"), "{}", stderr(&again));
    assert!(!stdout(&again).contains("to stdout"), "the step did not run again");
    assert_eq!(records(&p, &run, "hello").len(), 1, "nothing new was recorded");
}

#[test]
fn a_step_running_in_a_live_process_is_refused_and_a_dead_one_is_taken_over() {
    let (p, run) = planned(&["slow_ms=4000"]);
    assert_eq!(code(&entrypoint(&p, &run, "hello", 1)), 0);
    let mut first = p.cmd(&["step-entrypoint", "--run", &run, "--step", "slow", "--attempt", "1"]).spawn().unwrap();
    // Wait for its "running" record (it commits within the group-commit window).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !records(&p, &run, "slow").iter().any(|r| r.status == StepStatus::Running) {
        assert!(Instant::now() < deadline, "the first attempt never recorded itself as running");
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = entrypoint(&p, &run, "slow", 1);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let msg = stderr(&o);
    assert!(msg.contains(&format!("step `slow` is being run by attempt 1 (process {}", first.id())), "{msg}");
    assert!(msg.contains("run attempt 2 to take over"), "{msg}");

    // The first process dies without recording anything more.
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(records(&p, &run, "slow").last().unwrap().status, StepStatus::Running, "it left its record");
    let o = entrypoint(&p, &run, "slow", 1);
    assert_eq!(code(&o), 0, "a process that is gone does not hold the step: {}", stderr(&o));
    assert_eq!(records(&p, &run, "slow").last().unwrap().status, StepStatus::Completed);
}

#[test]
fn the_entrypoint_enforces_the_timeout_itself() {
    let (p, run) = planned(&[]);
    let started = Instant::now();
    let o = entrypoint(&p, &run, "timed", 1);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(20), "a step asleep for a minute ends at its 300 ms limit");
    let r = records(&p, &run, "timed");
    assert_eq!(r.last().unwrap().status, StepStatus::Failed);
    assert!(
        r.last().unwrap().error.as_deref().unwrap_or("").contains("did not finish within its timeout of 300ms"),
        "{r:?}"
    );
}

#[test]
fn each_attempt_is_one_process_and_retries_follow_the_policy() {
    let (p, run) = planned(&[]);
    let o = entrypoint(&p, &run, "flaky", 1);
    assert_eq!(code(&o), 1, "a failed attempt with a retry left exits 1: {}", stderr(&o));
    assert!(stderr(&o).contains("the first attempt fails"), "{}", stderr(&o));
    let o = entrypoint(&p, &run, "flaky", 2);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = records(&p, &run, "flaky");
    let attempts: Vec<(StepStatus, u32)> = r.iter().map(|r| (r.status, r.attempts)).collect();
    assert_eq!(attempts, [(StepStatus::Failed, 1), (StepStatus::Completed, 2)]);
    let o = entrypoint(&p, &run, "flaky", 3);
    assert_eq!(code(&o), 0, "done is done, whatever the attempt: {}", stderr(&o));

    let o = entrypoint(&p, &run, "fails", 2);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("step `fails` allows 1 attempt(s) (retries = 0); there is no attempt 2"),
        "{}",
        stderr(&o)
    );
    assert!(records(&p, &run, "fails").is_empty(), "a refused attempt records nothing");
}

#[test]
fn bad_requests_exit_2_and_record_nothing() {
    let (p, run) = planned(&[]);
    let cases: &[(&[&str], &str)] = &[
        (&["--run", "no-such-run", "--step", "hello"], "does not exist"),
        (
            &["--run", &run, "--step", "nope"],
            "has no step `nope`; its steps are: hello, slow, timed, flaky, fails, after_fails",
        ),
        (&["--run", &run, "--step", "slow"], "step `slow` needs step `hello`, which has not completed"),
        (&["--run", &run, "--step", "hello", "--attempt", "0"], "there is no attempt 0"),
    ];
    for (args, message) in cases {
        let mut all = vec!["step-entrypoint"];
        all.extend_from_slice(args);
        let o = p.run(&all);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(message), "{args:?}: {}", stderr(&o));
    }
    let stack = zenflow::local_stack_at(p.dir()).unwrap();
    assert!(stack.step_runs(&run).unwrap().is_empty(), "nothing was recorded");
    assert_eq!(stack.get_run(&run).unwrap().unwrap().status, zenflow::RunStatus::Pending);
}

#[test]
fn code_that_differs_from_the_plan_is_a_permanent_failure() {
    let (p, run) = planned(&[]);
    // The plan says `hello` had other code (a worker built from another commit).
    let db = rusqlite::Connection::open(p.path(".zenflow/zenflow.db")).unwrap();
    let plan: String = db.query_row("SELECT plan FROM runs WHERE id = ?1", [&run], |r| r.get(0)).unwrap();
    let mut plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    plan["steps"][0]["code_hash"] = "0123456789abcdef".into();
    db.execute("UPDATE runs SET plan = ?1 WHERE id = ?2", rusqlite::params![plan.to_string(), run]).unwrap();
    drop(db);
    let o = entrypoint(&p, &run, "hello", 1);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("is not the one run"), "{}", stderr(&o));
    let r = records(&p, &run, "hello");
    assert_eq!(r.last().unwrap().status, StepStatus::Failed);
    assert_eq!(r.last().unwrap().metadata["zenflow.permanent"], true);
}

#[test]
fn the_worker_of_the_last_step_closes_the_run_and_records_what_a_failure_blocked() {
    let (p, run) = planned(&["slow_ms=1"]);
    for (step, attempt, want) in
        [("hello", 1, 0), ("slow", 1, 0), ("timed", 1, 1), ("flaky", 1, 1), ("flaky", 2, 0), ("fails", 1, 1)]
    {
        let o = entrypoint(&p, &run, step, attempt);
        assert_eq!(code(&o), want, "{step} attempt {attempt}: {}", stderr(&o));
        let closing = stderr(&o).contains("[zenflow] run ");
        assert_eq!(closing, step == "fails", "only the last step closes the run: {step}: {}", stderr(&o));
    }
    assert_eq!(run_status(&p, &run), zenflow::RunStatus::Failed);
    let blocked = records(&p, &run, "after_fails");
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0].status, StepStatus::Skipped);
    let stack = zenflow::local_stack_at(p.dir()).unwrap();
    let error = stack.get_run(&run).unwrap().unwrap().error.unwrap_or_default();
    assert!(error.starts_with("step `timed` failed: "), "{error}");
}
