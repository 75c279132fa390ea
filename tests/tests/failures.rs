//! Failing, retried, panicking and timed-out steps on the local stack.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;
use zenflow::metadata::{RunStatus, StepStatus};
use zenflow::prelude::*;
use zenflow::{Error, RunResult, StepRunner};

static BROKEN: AtomicBool = AtomicBool::new(true);
static FLAKY_ATTEMPTS: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug)]
struct TrainingDiverged(f64);

impl std::fmt::Display for TrainingDiverged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "training diverged: loss is {}", self.0)
    }
}

impl std::error::Error for TrainingDiverged {}

#[step]
fn base(#[param] n: i64) -> i64 {
    n
}

#[step]
fn fragile(x: i64) -> Result<i64, TrainingDiverged> {
    if BROKEN.load(SeqCst) {
        Err(TrainingDiverged(f64::INFINITY))
    } else {
        Ok(x * 10)
    }
}

#[step]
fn plus_one(x: i64) -> i64 {
    x + 1
}

#[step(retries = 3, retry_backoff = "1ms")]
fn flaky(x: i64, ctx: &StepContext) -> Result<i64, String> {
    FLAKY_ATTEMPTS.fetch_add(1, SeqCst);
    if ctx.attempt() < 3 {
        return Err(format!("transient failure on attempt {}", ctx.attempt()));
    }
    Ok(x)
}

#[step(retries = 1, retry_backoff = "1ms")]
fn always_fails(_x: i64) -> Result<i64, String> {
    Err("the database is down".into())
}

#[step]
fn panics(x: i64) -> i64 {
    if x >= 0 {
        panic!("index out of range: {x}");
    }
    x
}

#[step(timeout = "100ms")]
async fn slow_async(x: i64) -> i64 {
    tokio::time::sleep(Duration::from_secs(30)).await;
    x
}

#[step(timeout = "100ms")]
fn slow_sync(x: i64) -> i64 {
    std::thread::sleep(Duration::from_millis(600));
    x
}

#[pipeline]
fn two_branches(n: &i64) {
    let b = base(*n);
    let bad = fragile(b);
    plus_one(bad);
    let good = plus_one(b);
    plus_one(good);
}

#[pipeline]
fn retried() {
    let b = base(11);
    flaky(b);
}

#[pipeline]
fn exhausted() {
    let b = base(12);
    let f = always_fails(b);
    plus_one(f);
}

#[pipeline]
fn panicking() {
    let b = base(13);
    let p = panics(b);
    plus_one(p);
}

#[pipeline]
fn healthy() {
    let b = base(15);
    plus_one(b);
}

#[pipeline]
fn timing_out() {
    let b = base(14);
    slow_async(b);
    slow_sync(b);
}

fn stack() -> (tempfile::TempDir, zenflow::Stack) {
    let dir = tempfile::tempdir().unwrap();
    let stack = zenflow::local_stack_at(dir.path()).unwrap();
    (dir, stack)
}

fn failed_run(result: zenflow::Result<RunResult>) -> RunResult {
    match result {
        Err(Error::RunFailed(f)) => *f.0,
        Err(other) => panic!("expected a failed run, got the error {other}"),
        Ok(run) => panic!("expected a failed run, got {}", run.summary()),
    }
}

fn statuses(run: &RunResult) -> Vec<(&str, StepStatus)> {
    run.steps().iter().map(|s| (s.invocation.as_str(), s.status)).collect()
}

/// One test, because it flips the global switch that breaks `fragile`.
#[test]
fn a_failed_step_skips_its_dependents_keeps_everything_else_and_the_next_run_resumes() {
    let (_dir, stack) = stack();
    BROKEN.store(true, SeqCst);
    let err = two_branches.run(&stack, &5).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("step `fragile` failed: training diverged: loss is inf")
            && message.contains("1 dependent step(s) skipped")
            && message.contains("resume from cache"),
        "{message}"
    );
    let run = failed_run(Err(err));
    let mut got = statuses(&run);
    got.sort();
    assert_eq!(
        got,
        [
            ("base", StepStatus::Completed),
            ("fragile", StepStatus::Failed),
            ("plus_one", StepStatus::Skipped),
            ("plus_one_2", StepStatus::Completed),
            ("plus_one_3", StepStatus::Completed),
        ],
        "the independent branch finishes"
    );
    assert_eq!(run.output::<i64>("plus_one_3", "output").unwrap(), 7);

    // Recorded in the metadata store.
    let record = stack.get_run(run.id()).unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    assert!(record.error.unwrap().contains("training diverged"));
    let steps = stack.step_runs(run.id()).unwrap();
    let fragile = steps.iter().find(|s| s.invocation == "fragile").unwrap();
    assert_eq!(fragile.error.as_deref(), Some("training diverged: loss is inf"));
    assert!(fragile.outputs.is_empty());
    let skipped = steps.iter().find(|s| s.invocation == "plus_one").unwrap();
    assert_eq!(skipped.error.as_deref(), Some("skipped because upstream step `fragile` failed"));

    // Fixed: only the failed step and what it feeds run again.
    BROKEN.store(false, SeqCst);
    let run = two_branches.run(&stack, &5).unwrap();
    assert_eq!(
        statuses(&run),
        [
            ("base", StepStatus::Cached),
            ("fragile", StepStatus::Completed),
            ("plus_one", StepStatus::Completed),
            ("plus_one_2", StepStatus::Cached),
            ("plus_one_3", StepStatus::Cached),
        ]
    );
    assert_eq!(run.output::<i64>("plus_one", "output").unwrap(), 51);

    // The step runner also runs one step of an existing run by id: what a
    // distributed worker does. Re-run `fragile` of the first (failed) run.
    let runner = stack.block_on(StepRunner::attach(stack.clone(), record.id.as_str(), Default::default()));
    let runner = runner.unwrap().unwrap();
    let pos = runner.position("fragile").unwrap();
    let result = stack.block_on(runner.run_step(pos)).unwrap().unwrap();
    assert_eq!(result.status, StepStatus::Cached, "the fixed step's result is in the cache now");
    let pos = runner.position("plus_one").unwrap();
    let result = stack.block_on(runner.run_step(pos)).unwrap().unwrap();
    assert_eq!(result.status, StepStatus::Cached);
    let err = runner.position("nope").unwrap_err().to_string();
    assert!(err.contains("has no step `nope`") && err.contains("fragile"), "{err}");
}

#[test]
fn a_worker_refuses_a_step_whose_code_differs_from_the_plan() {
    let (_dir, stack) = stack();
    // A run planned by another build: same steps, but `plus_one` had other code.
    let mut plan = healthy.plan(&()).unwrap();
    plan.steps[1].code_hash = "0".repeat(64);
    let run = stack
        .block_on(stack.metadata().create_run(&zenflow::metadata::NewRun {
            id: zenflow::metadata::new_id(),
            pipeline: plan.pipeline.clone(),
            name: "planned-elsewhere".into(),
            stack: "local".into(),
            status: RunStatus::Pending,
            plan,
            git_commit: None,
            started_at: zenflow::metadata::now(),
        }))
        .unwrap()
        .unwrap();
    let runner = stack.block_on(StepRunner::attach(stack.clone(), &run.id, Default::default())).unwrap().unwrap();
    let base = stack.block_on(runner.run_step(0)).unwrap().unwrap();
    assert_eq!(base.status, StepStatus::Completed, "unchanged steps run");
    let changed = stack.block_on(runner.run_step(1)).unwrap().unwrap();
    assert_eq!(changed.status, StepStatus::Failed);
    let error = changed.error.clone().unwrap();
    assert!(
        error.contains("is not the one run `planned-elsewhere` was planned with") && error.contains("its code changed"),
        "{error}"
    );
}

#[test]
fn retries_rerun_a_failed_attempt_with_backoff() {
    let (_dir, stack) = stack();
    let run = retried.run(&stack, &()).unwrap();
    let flaky = run.step("flaky").unwrap();
    assert_eq!(flaky.status, StepStatus::Completed);
    assert_eq!(flaky.attempts, 3);
    assert_eq!(FLAKY_ATTEMPTS.load(SeqCst), 3);
    let logs = &stack.step_runs(run.id()).unwrap()[1].logs;
    assert!(logs[0].starts_with("attempt 1 of 4 failed: transient failure on attempt 1; retrying in"), "{logs:?}");
    assert!(logs[1].starts_with("attempt 2 of 4 failed"), "{logs:?}");
}

#[test]
fn a_step_that_keeps_failing_gives_up_after_its_retries() {
    let (_dir, stack) = stack();
    let run = failed_run(exhausted.run(&stack, &()));
    let step = run.step("always_fails").unwrap();
    assert_eq!(step.status, StepStatus::Failed);
    assert_eq!(step.attempts, 2);
    assert_eq!(step.error.as_deref(), Some("failed after 2 attempts: the database is down"));
    assert_eq!(run.step("plus_one").unwrap().status, StepStatus::Skipped);
}

#[test]
fn a_panic_is_that_steps_failure() {
    let (_dir, stack) = stack();
    let run = failed_run(panicking.run(&stack, &()));
    let step = run.step("panics").unwrap();
    assert_eq!(step.status, StepStatus::Failed);
    assert_eq!(step.error.as_deref(), Some("the step panicked: index out of range: 13"));
    assert_eq!(run.step("plus_one").unwrap().status, StepStatus::Skipped);
    // The stack is still usable.
    assert_eq!(healthy.run(&stack, &()).unwrap().output::<i64>("plus_one", "output").unwrap(), 16);
}

#[test]
fn a_step_over_its_timeout_fails() {
    let (_dir, stack) = stack();
    let started = std::time::Instant::now();
    let run = failed_run(timing_out.run(&stack, &()));
    assert!(started.elapsed() < Duration::from_secs(20), "the async step was not cancelled");
    for id in ["slow_async", "slow_sync"] {
        let step = run.step(id).unwrap();
        assert_eq!(step.status, StepStatus::Failed, "{id}");
        assert!(step.error.as_deref().unwrap().contains("did not finish within its timeout of 100ms"), "{step:?}");
    }
}
